package io.pikv.sidecar;

import org.junit.jupiter.api.Test;

import java.util.concurrent.atomic.AtomicInteger;

import static org.assertj.core.api.Assertions.assertThat;

/** One snapshot per scrape: renewed by a series read twice (the next scrape) or by age, never inside a scrape. */
class MetricSnapshotsTest {
    @Test
    void everySeriesOfAScrapeReadsOneSnapshotWhateverTheTimeBetweenThem() {
        SidecarMetrics.Snapshots<Integer> snapshots = new SidecarMetrics.Snapshots<>();
        AtomicInteger taken = new AtomicInteger();
        long ms = 1_000_000L;
        // A scrape whose series are read 0, 90 and 150 ms after its first: one snapshot (a 100 ms expiry split it).
        assertThat(snapshots.get(0, taken::incrementAndGet, 0)).isEqualTo(1);
        assertThat(snapshots.get(1, taken::incrementAndGet, 90 * ms)).isEqualTo(1);
        assertThat(snapshots.get(2, taken::incrementAndGet, 150 * ms)).isEqualTo(1);
        // The next scrape, 20 ms later: a new snapshot at its first series, read by the rest of it.
        assertThat(snapshots.get(0, taken::incrementAndGet, 170 * ms)).isEqualTo(2);
        assertThat(snapshots.get(1, taken::incrementAndGet, 171 * ms)).isEqualTo(2);
        assertThat(snapshots.get(2, taken::incrementAndGet, 172 * ms)).isEqualTo(2);
        // A scrape of series 1 only; much later, series 2 (unread since) does not get that old snapshot.
        assertThat(snapshots.get(1, taken::incrementAndGet, 200 * ms)).isEqualTo(3);
        assertThat(snapshots.get(2, taken::incrementAndGet, 200 * ms + SidecarMetrics.Snapshots.MAX_AGE_NANOS + 1))
                .isEqualTo(4);
        assertThat(snapshots.get(63, taken::incrementAndGet, 200 * ms + SidecarMetrics.Snapshots.MAX_AGE_NANOS + 2))
                .isEqualTo(4);
        assertThat(taken.get()).isEqualTo(4);
    }
}
