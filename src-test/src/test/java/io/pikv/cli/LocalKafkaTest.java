package io.pikv.cli;

import org.junit.jupiter.api.Test;

import static org.assertj.core.api.Assertions.assertThat;

/** The playground's embedded broker: a broker that asks the JVM to halt is recorded as stopped, not obeyed or lost. */
class LocalKafkaTest {

    @Test
    void aBrokerThatAsksToHaltIsRecordedAsStopped() {
        try (LocalKafka kafka = LocalKafka.start()) {
            assertThat(kafka.failure()).isNull();
            // What a fatal fault in the broker does (a failed log directory): the JVM goes on, the failure is kept
            // for the playground's watch to say.
            org.apache.kafka.common.utils.Exit.halt(1, "the log directory failed");
            assertThat(kafka.failure()).isEqualTo("it asked to halt (1): the log directory failed");
        }
    }

    @Test
    void aFatalFaultIsRecordedAsStopped() {
        try (LocalKafka kafka = LocalKafka.start()) {
            assertThat(kafka.failure()).isNull();
            kafka.faults().handleFault("publishing metadata", new IllegalStateException("broken log"));
            assertThat(kafka.failure()).startsWith("a fatal fault: ").contains("publishing metadata");
        }
    }
}
