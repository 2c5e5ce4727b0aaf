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
    void theRecordBeingSentStillCountsAsWaiting() throws Exception {
        TelemetryBuffer buffer = new TelemetryBuffer(2);
        buffer.add(record(0));
        buffer.add(record(1));
        CacheEvents sending = buffer.take(0);
        assertThat(buffer.depth()).isEqualTo(2);
        buffer.putBack(sending); // a try failed: back in the queue, counted once
        assertThat(buffer.depth()).isEqualTo(2);
        buffer.take(0);
        buffer.sent();
        assertThat(buffer.depth()).isEqualTo(1);
        buffer.drop(buffer.take(0));
        assertThat(buffer.depth()).isZero();
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

        // Sent but not acknowledged: back in front. When newer records filled the buffer meanwhile, the oldest of
        // those goes instead (never sent), and the record put back (perhaps already in Kafka) is sent again.
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
        assertThat(buffer.take(0).sequence()).isEqualTo(3);
        assertThat(buffer.take(0).sequence()).isEqualTo(5);
        assertThat(buffer.take(0).sequence()).isEqualTo(6);
        assertThat(buffer.take(10)).isNull();
    }

    @Test
    void aRecordReportsTheDropsBeforeItNotThoseWhileItIsSent() throws Exception {
        TelemetryBuffer buffer = new TelemetryBuffer(3);
        for (int s = 0; s < 4; s++) {
            buffer.add(record(s)); // 0 dropped
        }
        assertThat(buffer.take(0).sequence()).isEqualTo(1);
        // While 1 is being sent, two more windows close: the buffer fills again and 2 (never sent) is dropped.
        buffer.add(record(4));
        buffer.add(record(5));
        assertThat(buffer.dropped()).isEqualTo(2);
        // 1 reports the one drop before it (0); 2's drop is the gap before 3, the next record taken.
        assertThat(buffer.unreportedAtTake()).isEqualTo(1);
        buffer.reported(1);
        assertThat(buffer.take(0).sequence()).isEqualTo(3);
        assertThat(buffer.unreportedAtTake()).isEqualTo(1);
    }

    @Test
    void aRecordPutBackAfterATryIsNotTheOneNewRecordsPushOut() throws Exception {
        TelemetryBuffer buffer = new TelemetryBuffer(2);
        buffer.add(record(0));
        CacheEvents tried = buffer.take(0);
        buffer.add(record(1));
        buffer.putBack(tried);           // [0, 1], 0 perhaps already in Kafka
        buffer.add(record(2));           // full: 1 goes, never sent
        buffer.add(record(3));           // full: 2 goes
        assertThat(buffer.dropped()).isEqualTo(2);
        assertThat(buffer.take(0).sequence()).isZero();
        assertThat(buffer.take(0).sequence()).isEqualTo(3);
        buffer.add(record(4));
        buffer.add(record(5));
        buffer.add(record(6));           // nothing put back now: the oldest, 4, goes
        assertThat(buffer.take(0).sequence()).isEqualTo(5);

        // With room for one, a record put back would make every newer one the drop: two at least.
        org.assertj.core.api.Assertions.assertThatThrownBy(() -> new TelemetryBuffer(1))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("at least two records");
        TelemetryBuffer two = new TelemetryBuffer(2);
        two.add(record(0));
        two.putBack(two.take(0));
        two.add(record(1));
        two.add(record(2));              // full: 1 goes, never sent; the tried 0 and the newest stay
        assertThat(two.dropped()).isEqualTo(1);
        assertThat(two.take(0).sequence()).isZero();
        assertThat(two.take(0).sequence()).isEqualTo(2);
    }
}
