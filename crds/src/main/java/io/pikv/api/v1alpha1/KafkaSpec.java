package io.pikv.api.v1alpha1;

import com.fasterxml.jackson.annotation.JsonInclude;
import com.fasterxml.jackson.annotation.JsonPropertyDescription;
import com.fasterxml.jackson.annotation.JsonPropertyOrder;
import io.fabric8.generator.annotation.Pattern;
import io.fabric8.generator.annotation.Required;

/** Where the shards publish telemetry and read control state. */
@JsonInclude(JsonInclude.Include.NON_NULL)
@JsonPropertyOrder({"bootstrapServers", "topics", "credentialsSecret"})
public class KafkaSpec {

    @Required
    @Pattern("^\\s*[^\\s,]+(\\s*,\\s*[^\\s,]+)*\\s*$")
    @JsonPropertyDescription("Kafka bootstrap servers, host:port[,host:port...] (spaces around the commas are "
            + "allowed).")
    private String bootstrapServers;

    @JsonPropertyDescription("Topic names.")
    private KafkaTopics topics = new KafkaTopics();

    @JsonPropertyDescription("A Secret in the cluster's namespace whose keys are Kafka client settings as "
            + "environment variables (e.g. KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_MECHANISM, KAFKA_SASL_JAAS_CONFIG); "
            + "passed to the shards by reference, never copied.")
    private SecretRef credentialsSecret;

    public String getBootstrapServers() {
        return bootstrapServers;
    }

    public void setBootstrapServers(String bootstrapServers) {
        this.bootstrapServers = bootstrapServers;
    }

    public KafkaTopics getTopics() {
        return topics;
    }

    public void setTopics(KafkaTopics topics) {
        this.topics = topics;
    }

    public SecretRef getCredentialsSecret() {
        return credentialsSecret;
    }

    public void setCredentialsSecret(SecretRef credentialsSecret) {
        this.credentialsSecret = credentialsSecret;
    }
}
