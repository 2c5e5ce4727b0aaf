package io.pikv.sidecar.kafka;

import org.apache.kafka.common.KafkaException;
import org.junit.jupiter.api.Test;

import java.time.Duration;

import static org.assertj.core.api.Assertions.assertThat;
import static org.junit.jupiter.api.Assertions.assertTimeoutPreemptively;

/** How a Kafka failure is said in one line. */
class KafkaLinkTest {

    @Test
    void theInnermostKafkaFailureIsSaid() {
        Exception e = new IllegalStateException("wrapped", new KafkaException("outer",
                new org.apache.kafka.common.errors.TimeoutException("no answer", new java.io.IOException("reset"))));
        assertThat(KafkaLink.describe(e)).isEqualTo("TimeoutException: no answer");
        assertThat(KafkaLink.describe(new java.io.IOException("refused"))).isEqualTo("IOException: refused");
    }

    @Test
    void aCauseChainThatLoopsBackEnds() {
        KafkaException a = new KafkaException("a");
        IllegalStateException b = new IllegalStateException("b");
        a.initCause(b);
        b.initCause(a); // allowed: only a cause of itself is refused
        String said = assertTimeoutPreemptively(Duration.ofSeconds(5), () -> KafkaLink.describe(a));
        assertThat(said).isEqualTo("KafkaException: a");
    }
}
