package io.pikv.sidecar.kafka;

import org.junit.jupiter.api.Test;

import java.time.Duration;
import java.util.Map;

import static org.assertj.core.api.Assertions.assertThat;

/** Kafka settings that can never make a client stop the start; a broker name not resolving yet does not. */
class KafkaClientsTest {

    @Test
    void settingsThatCannotMakeAClientAreSaidAndUnresolvedNamesAreNot() {
        assertThat(unusable(Map.of("bootstrap.servers", "127.0.0.1:9092"))).isNull();
        assertThat(unusable(Map.of("bootstrap.servers", "no-such-broker.invalid:9092"))).isNull();
        assertThat(unusable(Map.of("bootstrap.servers", "kafka-0.kafka")))
                .contains("kafka-0.kafka");
        assertThat(unusable(Map.of("bootstrap.servers", "kafka:99999"))).isNotNull();
        assertThat(unusable(Map.of("bootstrap.servers", "127.0.0.1:9092", "security.protocol", "SASL_SSL",
                "sasl.mechanism", "SCRAM-SHA-512"))).containsIgnoringCase("jaas");
        assertThat(unusable(Map.of("bootstrap.servers", "127.0.0.1:9092", "security.protocol", "TLS")))
                .contains("TLS");
        // What the idempotent telemetry producer cannot take is said too, and only when telemetry is on.
        Map<String, Object> noRetries = Map.of("bootstrap.servers", "127.0.0.1:9092", "retries", "0");
        assertThat(KafkaClients.unusable(noRetries, true, Duration.ofSeconds(10)))
                .containsIgnoringCase("idempoten");
        assertThat(KafkaClients.unusable(noRetries, false, Duration.ofSeconds(10))).isNull();
        assertThat(KafkaClients.unusable(Map.of("bootstrap.servers", "127.0.0.1:9092", "compression.type", "zip"),
                true, Duration.ofSeconds(10))).contains("compression.type");
    }

    /** With both clients enabled. */
    private static String unusable(Map<String, Object> settings) {
        return KafkaClients.unusable(settings, true, Duration.ofSeconds(10));
    }
}
