package io.pikv.sidecar.kafka;

import org.junit.jupiter.api.Test;

import java.util.Map;

import static org.assertj.core.api.Assertions.assertThat;

/** Kafka settings that can never make a client stop the start; a broker name not resolving yet does not. */
class KafkaClientsTest {

    @Test
    void settingsThatCannotMakeAClientAreSaidAndUnresolvedNamesAreNot() {
        assertThat(KafkaClients.unusable(Map.of("bootstrap.servers", "127.0.0.1:9092"))).isNull();
        assertThat(KafkaClients.unusable(Map.of("bootstrap.servers", "no-such-broker.invalid:9092"))).isNull();
        assertThat(KafkaClients.unusable(Map.of("bootstrap.servers", "kafka-0.kafka")))
                .contains("kafka-0.kafka");
        assertThat(KafkaClients.unusable(Map.of("bootstrap.servers", "kafka:99999"))).isNotNull();
        assertThat(KafkaClients.unusable(Map.of("bootstrap.servers", "127.0.0.1:9092", "security.protocol", "SASL_SSL",
                "sasl.mechanism", "SCRAM-SHA-512"))).containsIgnoringCase("jaas");
        assertThat(KafkaClients.unusable(Map.of("bootstrap.servers", "127.0.0.1:9092", "security.protocol", "TLS")))
                .contains("TLS");
    }
}
