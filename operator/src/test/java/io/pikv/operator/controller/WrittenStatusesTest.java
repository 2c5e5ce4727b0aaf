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
        w.remember(cluster("a", status(3, 2)), wrote, null);

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
        w.remember(cluster("a", null), status(4, 3), null); // cluster c-a in ns
        w.remember(cluster("b", null), status(2, 1), null); // cluster c-b in ns
        w.forget("other", "c-a");
        assertThat(w.size()).as("another namespace's cluster of that name").isEqualTo(2);
        w.forget("ns", "c-a");
        assertThat(w.size()).isEqualTo(1);
        assertThat(w.current(cluster("b", null)).getDesiredShards()).isEqualTo(1);
    }

    @Test
    void theInformersCopyOfALaterGenerationWins() {
        WrittenStatuses w = new WrittenStatuses(8);
        w.remember(cluster("a", null), status(4, 3), null);
        PiKVClusterStatus newer = status(6, 5);
        assertThat(w.current(cluster("a", newer))).isSameAs(newer);
        assertThat(w.size()).isZero();
    }

    @Test
    void aSecondWriteOfTheSameGenerationWinsUntilTheInformerShowsIt() {
        // Generation 4 was written with 3 shards, then again (readiness changed, or a failed reconcile) with 4; the
        // informer still shows the first write.
        WrittenStatuses w = new WrittenStatuses(8);
        w.remember(cluster("a", null), status(4, 3), null);
        PiKVClusterStatus second = status(4, 4);
        w.remember(cluster("a", status(4, 3)), second, null);
        assertThat(w.current(cluster("a", status(4, 3)))).as("stale copy of the same generation").isSameAs(second);
        PiKVClusterStatus shown = status(4, 4);
        assertThat(w.current(cluster("a", shown))).isSameAs(shown);
        assertThat(w.size()).isZero();
    }

    private static PiKVCluster copy(String version, long generation, PiKVClusterStatus cached) {
        PiKVCluster c = cluster("a", cached);
        c.getMetadata().setResourceVersion(version);
        c.getMetadata().setGeneration(generation);
        return c;
    }

    @Test
    void aStatusChangedByHandAfterTheWriteIsTheCurrentOne() {
        // Written from version 10, twice (making 11, then 12): copies of 10 and 11 are from before the last write.
        WrittenStatuses w = new WrittenStatuses(8);
        w.remember(copy("10", 4, status(3, 2)), status(4, 3), "11");
        PiKVClusterStatus second = status(4, 4);
        w.remember(copy("10", 4, status(3, 2)), second, "12");
        assertThat(w.current(copy("10", 4, status(3, 2)))).as("from before the writes").isSameAs(second);
        assertThat(w.current(copy("11", 4, status(4, 3)))).as("the first write").isSameAs(second);
        // A spec change made before the write (a later generation, an unknown version) does not replace it.
        assertThat(w.current(copy("9x", 5, status(3, 2)))).as("a spec change queued").isSameAs(second);
        // Version 13 of the same generation came after the write: its status was cleared or edited by someone else.
        assertThat(w.current(copy("13", 4, null))).as("status cleared by hand").isNull();
        assertThat(w.size()).isZero();
        w.remember(copy("13", 4, null), second, "14");
        PiKVClusterStatus edited = status(4, 9);
        assertThat(w.current(copy("15", 4, edited))).as("status edited by hand").isSameAs(edited);
    }

    /**
     * A label or annotation edited between the copy a reconcile read (version 99) and its status write (101) makes a
     * version the operator never saw (100) with the status from before the write: that copy is from before the write,
     * not a status edited by hand, so the written status stays current (its decisions are not told again).
     */
    @Test
    void aMetadataEditRacingTheWriteIsNotTakenForAStatusEditedByHand() {
        WrittenStatuses w = new WrittenStatuses(8);
        PiKVClusterStatus before = status(4, 3);
        PiKVClusterStatus wrote = status(4, 4);
        w.remember(copy("99", 4, before), wrote, "101");
        assertThat(w.current(copy("100", 4, status(4, 3)))).as("labels edited meanwhile").isSameAs(wrote);
        // A status that differs from everything before the write is still someone else's edit.
        PiKVClusterStatus edited = status(4, 9);
        assertThat(w.current(copy("102", 4, edited))).isSameAs(edited);
    }

    /** A status cleared by hand twice is found cleared both times: the first clearing is no status of the operator's. */
    @Test
    void aStatusClearedAgainAfterItWasWrittenAnewIsFoundClearedAgain() {
        WrittenStatuses w = new WrittenStatuses(8);
        PiKVClusterStatus wrote = status(4, 3);
        w.remember(copy("10", 4, status(4, 2)), wrote, "11");
        assertThat(w.current(copy("12", 4, null))).as("cleared by hand").isNull();
        w.remember(copy("12", 4, null), wrote, "13"); // written anew, from the cleared copy
        assertThat(w.current(copy("14", 4, null))).as("cleared by hand again").isNull();
    }

    @Test
    void clustersWithoutUidAreNotRememberedAndTheBoundHolds() {
        WrittenStatuses w = new WrittenStatuses(2);
        PiKVCluster noUid = TestClusters.small("x", "ns");
        noUid.getMetadata().setUid(null);
        w.remember(noUid, status(1, 1), null);
        assertThat(w.size()).isZero();

        w.remember(cluster("a", null), status(1, 1), null);
        w.remember(cluster("b", null), status(1, 1), null);
        w.remember(cluster("a", null), status(2, 1), null); // a is now the newest
        w.remember(cluster("c", null), status(1, 1), null); // b, the oldest, goes
        assertThat(w.size()).isEqualTo(2);
        assertThat(w.current(cluster("b", null))).isNull();
        assertThat(w.current(cluster("a", null)).getObservedGeneration()).isEqualTo(2);
        assertThatThrownBy(() -> new WrittenStatuses(0)).isInstanceOf(IllegalArgumentException.class);
    }
}
