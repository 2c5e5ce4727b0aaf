package io.pikv.sidecar.api;

import org.junit.jupiter.api.Test;

import java.util.List;

import static org.assertj.core.api.Assertions.assertThat;

/** Which Accept headers the binary step and attention routes answer with octets (else 406). */
class AcceptHeaderTest {
    @Test
    void octetsUnlessNoRangeTakesThemOrTheOnlyOneThatDoesWeighsZero() {
        assertThat(BinaryRoutes.acceptsOctets(List.of())).isTrue();
        assertThat(BinaryRoutes.acceptsOctets(List.of("application/octet-stream"))).isTrue();
        assertThat(BinaryRoutes.acceptsOctets(List.of("application/json, */*;q=0.1"))).isTrue();
        assertThat(BinaryRoutes.acceptsOctets(List.of("application/*"))).isTrue();
        assertThat(BinaryRoutes.acceptsOctets(List.of("application/json"))).isFalse();
        // q=0 means "not acceptable" (RFC 9110).
        assertThat(BinaryRoutes.acceptsOctets(List.of("application/octet-stream;q=0, application/json"))).isFalse();
        assertThat(BinaryRoutes.acceptsOctets(List.of("*/*; q=0.0"))).isFalse();
        assertThat(BinaryRoutes.acceptsOctets(List.of("application/octet-stream;q=0.5"))).isTrue();
        // The most specific matching range decides: a refused octet-stream is not rescued by */*, nor the reverse.
        assertThat(BinaryRoutes.acceptsOctets(List.of("application/octet-stream;q=0, */*"))).isFalse();
        assertThat(BinaryRoutes.acceptsOctets(List.of("*/*;q=0", "application/octet-stream"))).isTrue();
        assertThat(BinaryRoutes.acceptsOctets(List.of("application/*;q=0, */*"))).isFalse();
    }
}
