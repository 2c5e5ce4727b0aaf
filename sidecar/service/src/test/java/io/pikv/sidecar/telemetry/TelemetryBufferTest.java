package io.pikv.sidecar.telemetry;

import io.pikv.api.events.CacheEvents;
import org.junit.jupiter.api.Test;

import java.util.List;
import java.util.Map;

import static org.assertj.core.api.Assertions.assertThat;

class TelemetryBufferTest {

    static CacheEvents record(long sequence) {
        return new CacheEvents(CacheEvents.VERSION, "c", 0, "p", sequence, 0, 1, "reject", -1, Map.of(), 1, 0, 0,
                List.of(), null);
    }

    @Test
    void beyondItsBoundTheOldestGoAndAreCounted() throws Exception {
        TelemetryBuffer buffer = new TelemetryBuffer(3);
        for (int s = 0; s < 5; s++) {
            buffer.add(record(s));
        }
        assertThat(buffer.depth()).isEqualTo(3);
        assertThat(buffer.dropped()).isEqualTo(2);
        assertThat(buffer.unreported()).isEqualTo(2);
        assertThat(buffer.take(0).sequence()).isEqualTo(2);

        // Sent but not acknowledged: back in front, unless newer records filled the buffer meanwhile.
        CacheEvents inFlight = buffer.take(0);
        buffer.putBack(inFlight);
        assertThat(buffer.take(0).sequence()).isEqualTo(3);
        buffer.add(record(5));
        buffer.add(record(6));
        buffer.putBack(record(3));
        assertThat(buffer.dropped()).isEqualTo(3);
        assertThat(buffer.depth()).isEqualTo(3);

        // A published record reports the drops it carried; later drops stay unreported.
        buffer.reported(2);
        assertThat(buffer.unreported()).isEqualTo(1);
        assertThat(buffer.take(0).sequence()).isEqualTo(4);
        assertThat(buffer.take(0).sequence()).isEqualTo(5);
        assertThat(buffer.take(0).sequence()).isEqualTo(6);
        assertThat(buffer.take(10)).isNull();
    }
}
