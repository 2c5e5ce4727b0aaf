package io.pikv.operator.controller;

import io.pikv.api.v1alpha1.PiKVCluster;
import io.pikv.api.v1alpha1.PiKVClusterStatus;
import io.pikv.operator.TestClusters;
import org.junit.jupiter.api.Test;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/** Which status a reconcile starts from while its own write is on its way back through the watch. */
class WrittenStatusesTest {

    private static PiKVClusterStatus status(long observedGeneration, int desiredShards) {
        PiKVClusterStatus s = new PiKVClusterStatus();
        s.setObservedGeneration(observedGeneration);
        s.setDesiredShards(desiredShards);
        return s;
    }

    private static PiKVCluster cluster(String uid, PiKVClusterStatus cached) {
        PiKVCluster c = TestClusters.small("c-" + uid, "ns");
        c.getMetadata().setUid(uid);
        c.setStatus(cached);
        return c;
    }

    @Test
    void withoutAWriteTheInformersCopyIsCurrent() {
        WrittenStatuses w = new WrittenStatuses(8);
        PiKVClusterStatus cached = status(3, 2);
        assertThat(w.current(cluster("a", cached))).isSameAs(cached);
        assertThat(w.current(cluster("a", null))).isNull();
    }

    @Test
    void aWriteOfALaterGenerationWinsUntilTheInformerShowsIt() {
        WrittenStatuses w = new WrittenStatuses(8);
        PiKVClusterStatus wrote = status(4, 3);
        w.remember(cluster("a", status(3, 2)), wrote);

        assertThat(w.current(cluster("a", status(3, 2)))).as("stale informer copy").isSameAs(wrote);
        assertThat(w.current(cluster("a", null))).as("first write not back yet").isSameAs(wrote);
        assertThat(w.current(cluster("b", status(3, 2))).getDesiredShards()).as("another cluster").isEqualTo(2);

        PiKVClusterStatus caughtUp = status(4, 3);
        assertThat(w.current(cluster("a", caughtUp))).isSameAs(caughtUp);
        assertThat(w.size()).as("forgotten once caught up").isZero();
        PiKVClusterStatus later = status(5, 4);
        assertThat(w.current(cluster("a", later))).isSameAs(later);
    }

    @Test
    void aDeletedClustersWriteIsForgottenWhenTheSdkIsDoneWithIt() {
        WrittenStatuses w = new WrittenStatuses(8);
        w.remember(cluster("a", null), status(4, 3)); // cluster c-a in ns
        w.remember(cluster("b", null), status(2, 1)); // cluster c-b in ns
        w.forget("other", "c-a");
        assertThat(w.size()).as("another namespace's cluster of that name").isEqualTo(2);
        w.forget("ns", "c-a");
        assertThat(w.size()).isEqualTo(1);
        assertThat(w.current(cluster("b", null)).getDesiredShards()).isEqualTo(1);
    }

    @Test
    void theInformersCopyOfALaterGenerationWins() {
        WrittenStatuses w = new WrittenStatuses(8);
        w.remember(cluster("a", null), status(4, 3));
        PiKVClusterStatus newer = status(6, 5);
        assertThat(w.current(cluster("a", newer))).isSameAs(newer);
        assertThat(w.size()).isZero();
    }

    @Test
    void aSecondWriteOfTheSameGenerationWinsUntilTheInformerShowsIt() {
        // Generation 4 was written with 3 shards, then again (readiness changed, or a failed reconcile) with 4; the
        // informer still shows the first write.
        WrittenStatuses w = new WrittenStatuses(8);
        w.remember(cluster("a", null), status(4, 3));
        PiKVClusterStatus second = status(4, 4);
        w.remember(cluster("a", status(4, 3)), second);
        assertThat(w.current(cluster("a", status(4, 3)))).as("stale copy of the same generation").isSameAs(second);
        PiKVClusterStatus shown = status(4, 4);
        assertThat(w.current(cluster("a", shown))).isSameAs(shown);
        assertThat(w.size()).isZero();
    }

    @Test
    void clustersWithoutUidAreNotRememberedAndTheBoundHolds() {
        WrittenStatuses w = new WrittenStatuses(2);
        PiKVCluster noUid = TestClusters.small("x", "ns");
        noUid.getMetadata().setUid(null);
        w.remember(noUid, status(1, 1));
        assertThat(w.size()).isZero();

        w.remember(cluster("a", null), status(1, 1));
        w.remember(cluster("b", null), status(1, 1));
        w.remember(cluster("a", null), status(2, 1)); // a is now the newest
        w.remember(cluster("c", null), status(1, 1)); // b, the oldest, goes
        assertThat(w.size()).isEqualTo(2);
        assertThat(w.current(cluster("b", null))).isNull();
        assertThat(w.current(cluster("a", null)).getObservedGeneration()).isEqualTo(2);
        assertThatThrownBy(() -> new WrittenStatuses(0)).isInstanceOf(IllegalArgumentException.class);
    }
}
