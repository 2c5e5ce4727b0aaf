package io.pikv.operator.status;

import io.fabric8.kubernetes.api.model.Condition;
import io.fabric8.kubernetes.api.model.apps.StatefulSet;
import io.fabric8.kubernetes.api.model.apps.StatefulSetStatusBuilder;
import io.pikv.api.v1alpha1.PiKVCluster;
import io.pikv.api.v1alpha1.PiKVClusterStatus;
import io.pikv.operator.TestClusters;
import io.pikv.operator.model.OperatorSettings;
import io.pikv.operator.model.PiKVClusterValidator;
import io.pikv.operator.model.ShardCluster;
import org.junit.jupiter.api.Test;

import java.util.List;

import static org.assertj.core.api.Assertions.assertThat;

class StatusAggregatorTest {
    static final String T0 = "2026-01-01T00:00:00Z";
    static final String T1 = "2026-01-01T00:01:00Z";
    static final String T2 = "2026-01-01T00:02:00Z";

    private final PiKVCluster cluster = TestClusters.small("demo", "ns");
    private final ShardCluster model = ShardCluster.fromCrd(cluster, cluster.getSpec(), null, -1,
            OperatorSettings.DEFAULTS);
    private static final PiKVClusterValidator.Result VALID = new PiKVClusterValidator.Result(List.of());

    private StatefulSet sts(int replicas, int ready) {
        StatefulSet sts = model.generateStatefulSet();
        sts.getMetadata().setGeneration(1L);
        sts.setStatus(new StatefulSetStatusBuilder().withObservedGeneration(1L).withReplicas(replicas)
                .withReadyReplicas(ready).withUpdatedReplicas(replicas).withCurrentRevision("r1")
                .withUpdateRevision("r1").build());
        return sts;
    }

    /** A validation that found one violation. */
    private static PiKVClusterValidator.Result invalid(String field, String message) {
        return new PiKVClusterValidator.Result(List.of(new PiKVClusterValidator.Violation(field, message)));
    }

    private PiKVClusterStatus next(PiKVClusterStatus prev, StatefulSet sts, String now) {
        return StatusAggregator.next(prev, new StatusAggregator.Snapshot("demo", 1, VALID, model, 1, "{}", sts,
                List.of(), now));
    }

    private static Condition condition(PiKVClusterStatus s, String type) {
        return Conditions.find(s.getConditions(), type);
    }

    @Test
    void readyWhenEveryShardIsReady() {
        PiKVClusterStatus s = next(null, sts(2, 2), T0);
        assertThat(condition(s, "Ready").getStatus()).isEqualTo("True");
        assertThat(condition(s, "Ready").getReason()).isEqualTo("AllShardsReady");
        assertThat(condition(s, "Progressing").getStatus()).isEqualTo("False");
        assertThat(condition(s, "Degraded").getStatus()).isEqualTo("False");
        // kstatus's view (Flux, Argo CD): nothing reconciling, nothing stalled.
        assertThat(condition(s, "Reconciling").getStatus()).isEqualTo("False");
        assertThat(condition(s, "Stalled").getStatus()).isEqualTo("False");
        assertThat(s.getDesiredShards()).isEqualTo(2);
        assertThat(s.getReadyShards()).isEqualTo(2);
        assertThat(s.getShards()).isEqualTo(2);
        assertThat(s.getSelector()).isEqualTo("app.kubernetes.io/name=pikv,app.kubernetes.io/instance=demo,"
                + "app.kubernetes.io/component=shard");
        assertThat(s.getActivePolicy()).isEqualTo("lru");
        assertThat(s.getShardMapEpoch()).isZero();
        assertThat(s.getConfigHash()).isEqualTo(model.configHash());
        assertThat(s.getObservedGeneration()).isEqualTo(1);
    }

    /** A ready cluster that loses a pod, its control state unchanged: Rebalancing stays false and says no more. */
    @Test
    void rebalancingSaysNothingUntrueWhenAPodIsLost() {
        PiKVClusterStatus ready = next(null, sts(2, 2), T0);
        assertThat(condition(ready, "Rebalancing").getMessage()).startsWith("All 2 shards are ready; shard map epoch ");
        PiKVClusterStatus lost = next(ready, sts(2, 1), T1);
        assertThat(condition(lost, "Ready").getStatus()).isEqualTo("False");
        assertThat(condition(lost, "Rebalancing").getStatus()).isEqualTo("False");
        assertThat(condition(lost, "Rebalancing").getMessage())
                .startsWith("The control state has not changed while shards are not ready; shard map epoch ");
    }

    @Test
    void progressingUntilTheShardsAddedByAScaleAreReady() {
        PiKVClusterStatus before = next(null, sts(2, 2), T0);
        before.setDesiredShards(1); // the spec asked for one shard before
        // The StatefulSet already counts both pods as created and updated; one is not ready yet.
        PiKVClusterStatus s = next(before, sts(2, 1), T1);
        assertThat(condition(s, "Progressing").getStatus()).isEqualTo("True");
        assertThat(condition(s, "Progressing").getReason()).isEqualTo("Scaling");
        assertThat(condition(s, "Progressing").getMessage()).isEqualTo("1 of 2 shard pods ready after scaling to 2.");
        assertThat(condition(s, "Ready").getStatus()).isEqualTo("False");
        // Still scaling on the next look (the desired count no longer differs), done once the pod is ready.
        PiKVClusterStatus still = next(s, sts(2, 1), T2);
        assertThat(condition(still, "Progressing").getReason()).isEqualTo("Scaling");
        PiKVClusterStatus done = next(still, sts(2, 2), T2);
        assertThat(condition(done, "Progressing").getStatus()).isEqualTo("False");
        assertThat(condition(done, "Progressing").getReason()).isEqualTo("Stable");
        assertThat(condition(done, "Ready").getStatus()).isEqualTo("True");
        // A pod that fails later, with no scale, is not "Scaling": the cluster recovers, and kstatus tools read it as
        // in progress (not as current) until the pod is ready again.
        PiKVClusterStatus failing = next(done, sts(2, 1), T2);
        assertThat(condition(failing, "Progressing").getStatus()).isEqualTo("True");
        assertThat(condition(failing, "Progressing").getReason()).isEqualTo("Recovering");
        assertThat(condition(failing, "Progressing").getMessage()).startsWith("1 of 2 shard pods ready; waiting for "
                + "the others to be ready again");
        assertThat(condition(failing, "Reconciling").getStatus()).isEqualTo("True");
        assertThat(condition(failing, "Ready").getMessage()).isEqualTo("1/2 shards ready.");
        PiKVClusterStatus back = next(failing, sts(2, 2), T2);
        assertThat(condition(back, "Progressing").getReason()).isEqualTo("Stable");
        assertThat(condition(back, "Reconciling").getStatus()).isEqualTo("False");
        assertThat(condition(back, "Ready").getStatus()).isEqualTo("True");
    }

    /** The StatefulSet scaled by hand (kubectl scale sts) and set back by the operator: 3 pods, 2 desired. */
    @Test
    void podsBeyondTheDesiredCountAreSaidToBeRemoved() {
        Condition progressing = condition(next(next(null, sts(2, 2), T0), sts(3, 3), T1), "Progressing");
        assertThat(progressing).extracting(Condition::getReason, Condition::getMessage).containsExactly("Recovering",
                "3 shard pods exist, 2 desired; waiting for the StatefulSet to remove the extra ones (its replica "
                        + "count was changed by hand; the operator set it back).");
    }

    /**
     * A pod deleted or evicted from a ready cluster: the StatefulSet counts it neither as existing nor as updated until
     * it makes it again. Recovering throughout, never a rollout or a scale.
     */
    @Test
    void aLostPodIsRecoveringUntilItIsMadeAgainAndReady() {
        PiKVClusterStatus ready = next(null, sts(2, 2), T0);
        PiKVClusterStatus gone = next(ready, sts(1, 1), T1);
        assertThat(condition(gone, "Progressing").getReason()).isEqualTo("Recovering");
        assertThat(condition(gone, "Progressing").getMessage()).isEqualTo("1 shard pods exist, 2 desired; waiting for "
                + "the StatefulSet to make the missing ones again.");
        assertThat(condition(gone, "Reconciling").getStatus()).isEqualTo("True");
        PiKVClusterStatus stillGone = next(gone, sts(1, 1), T1);
        assertThat(condition(stillGone, "Progressing").getReason()).isEqualTo("Recovering");
        PiKVClusterStatus madeAgain = next(stillGone, sts(2, 1), T2);
        assertThat(condition(madeAgain, "Progressing").getReason()).isEqualTo("Recovering");
        assertThat(condition(madeAgain, "Progressing").getMessage()).startsWith("1 of 2 shard pods ready; waiting");
        PiKVClusterStatus back = next(madeAgain, sts(2, 2), T2);
        assertThat(condition(back, "Progressing").getReason()).isEqualTo("Stable");
        assertThat(condition(back, "Ready").getStatus()).isEqualTo("True");
        // A rollout (revisions that differ) with a pod missing is still a rollout.
        StatefulSet rolling = sts(1, 1);
        rolling.getStatus().setUpdateRevision("r2");
        rolling.getStatus().setUpdatedReplicas(0);
        assertThat(condition(next(ready, rolling, T1), "Progressing").getReason()).isEqualTo("RollingOut");
    }

    @Test
    void aScaleSeenFirstAsARolloutIsScalingUntilTheNewPodsAreReady() {
        PiKVCluster four = TestClusters.small("demo", "ns");
        four.getSpec().setShards(4);
        ShardCluster model4 = ShardCluster.fromCrd(four, four.getSpec(), null, -1, OperatorSettings.DEFAULTS);
        java.util.function.BiFunction<PiKVClusterStatus, StatefulSet, PiKVClusterStatus> next4 = (prev, sts) ->
                StatusAggregator.next(prev, new StatusAggregator.Snapshot("demo", 2, VALID, model4, 2, "{}", sts,
                        List.of(), T2));
        // A StatefulSet of the four-shard model at generation 2, as its controller has observed it.
        java.util.function.BiFunction<Long, Integer, StatefulSet> at2 = (observed, replicas) -> {
            StatefulSet sts = model4.generateStatefulSet();
            sts.getMetadata().setGeneration(2L);
            sts.setStatus(new StatefulSetStatusBuilder().withObservedGeneration(observed).withReplicas(replicas)
                    .withReadyReplicas(2).withUpdatedReplicas(replicas).withCurrentRevision("r1")
                    .withUpdateRevision("r1").build());
            return sts;
        };
        PiKVClusterStatus two = next(null, sts(2, 2), T0);
        // The reconcile that scaled reads the StatefulSet back with its new replica count not yet observed.
        PiKVClusterStatus rolling = next4.apply(two, at2.apply(1L, 2));
        assertThat(condition(rolling, "Progressing").getReason()).isEqualTo("RollingOut");
        assertThat(rolling.getDesiredShards()).isEqualTo(4);
        // Next look: four pods made and updated, two ready. Still a scale, and kstatus tools still see it reconciling.
        StatefulSet made = at2.apply(2L, 4);
        PiKVClusterStatus scaling = next4.apply(rolling, made);
        assertThat(condition(scaling, "Progressing").getStatus()).isEqualTo("True");
        assertThat(condition(scaling, "Progressing").getReason()).isEqualTo("Scaling");
        assertThat(condition(scaling, "Reconciling").getStatus()).isEqualTo("True");
        made.getStatus().setReadyReplicas(4);
        PiKVClusterStatus done = next4.apply(scaling, made);
        assertThat(condition(done, "Progressing").getReason()).isEqualTo("Stable");
        assertThat(condition(done, "Ready").getStatus()).isEqualTo("True");
    }

    /** A rollout stuck at its first pod: 1 of 2 updated, revisions differ, 1 ready. */
    private StatefulSet stuck() {
        StatefulSet sts = sts(2, 1);
        sts.getStatus().setUpdatedReplicas(1);
        sts.getStatus().setUpdateRevision("r2");
        return sts;
    }

    private static final java.time.Duration DEADLINE = java.time.Duration.ofMinutes(10);

    private PiKVClusterStatus at(PiKVClusterStatus prev, StatefulSet sts, String now) {
        return StatusAggregator.next(prev, new StatusAggregator.Snapshot("demo", 1, VALID, model, 1, "{}", sts,
                List.of(), now), DEADLINE);
    }

    private static String minute(int m) {
        return String.format("2026-01-01T%02d:%02d:00Z", m / 60, m % 60);
    }

    @Test
    void noProgressPastTheDeadlineDegradesTheClusterUntilItProgresses() {
        PiKVClusterStatus started = at(null, stuck(), T0);
        assertThat(condition(started, "Progressing").getReason()).isEqualTo("RollingOut");
        assertThat(started.getUpdatedShards()).isEqualTo(1);
        assertThat(started.getLastProgressTime()).isEqualTo(T0);
        // A pod lost is not progress: the clock keeps running.
        StatefulSet lost = stuck();
        lost.getStatus().setReadyReplicas(0);
        assertThat(at(started, lost, minute(5)).getLastProgressTime()).isEqualTo(T0);
        PiKVClusterStatus nine = at(started, stuck(), minute(9));
        assertThat(condition(nine, "Degraded").getStatus()).isEqualTo("False");
        // Ten minutes without a pod created, updated or ready: Degraded, saying since when and where to look.
        PiKVClusterStatus ten = at(nine, stuck(), minute(10));
        Condition degraded = condition(ten, "Degraded");
        assertThat(degraded.getStatus()).isEqualTo("True");
        assertThat(degraded.getReason()).isEqualTo("ProgressDeadlineExceeded");
        assertThat(degraded.getMessage()).startsWith("1 of 2 shard pods run config " + model.configHash() + ".")
                .contains("since 2026-01-01T00:00:00Z (progress deadline 10m)",
                        "kubectl describe pods -l app.kubernetes.io/name=pikv,app.kubernetes.io/instance=demo");
        assertThat(condition(ten, "Progressing").getReason()).isEqualTo("RollingOut");
        // kstatus reads the first true one of Reconciling and Stalled: stalled, so not reconciling.
        assertThat(condition(ten, "Reconciling").getStatus()).isEqualTo("False");
        assertThat(condition(ten, "Stalled").getStatus()).isEqualTo("True");
        assertThat(condition(nine, "Reconciling").getStatus()).isEqualTo("True");
        assertThat(condition(ten, "Stalled").getReason()).isEqualTo("ProgressDeadlineExceeded");
        assertThat(condition(nine, "Stalled").getStatus()).isEqualTo("False");
        // Looking again later changes nothing (no status write per reconcile).
        assertThat(StatusAggregator.changed(ten, at(ten, stuck(), minute(30)))).isFalse();
        // A pod updated is progress: the clock restarts.
        StatefulSet moved = stuck();
        moved.getStatus().setUpdatedReplicas(2);
        PiKVClusterStatus progressed = at(ten, moved, minute(31));
        assertThat(condition(progressed, "Degraded").getStatus()).isEqualTo("False");
        assertThat(progressed.getLastProgressTime()).isEqualTo(minute(31));
        // Finished: Ready, not Degraded.
        PiKVClusterStatus done = at(ten, sts(2, 2), minute(32));
        assertThat(condition(done, "Degraded").getStatus()).isEqualTo("False");
        assertThat(condition(done, "Ready").getStatus()).isEqualTo("True");
        // No deadline (null or zero): never.
        assertThat(condition(next(nine, stuck(), minute(300)), "Degraded").getStatus()).isEqualTo("False");
        assertThat(condition(StatusAggregator.next(nine, new StatusAggregator.Snapshot("demo", 1, VALID, model, 1,
                "{}", stuck(), List.of(), minute(300)), java.time.Duration.ZERO), "Degraded").getStatus())
                .isEqualTo("False");
    }

    @Test
    void aNewClusterWhosePodsNeverBecomeReadyPassesTheDeadline() {
        // Pods created in parallel count as updated at once, but a cluster is created when they are ready: Creating
        // (and Reconciling, which kstatus tools read) go on until then.
        PiKVClusterStatus creating = at(null, null, T0);
        assertThat(condition(creating, "Progressing").getReason()).isEqualTo("Creating");
        PiKVClusterStatus created = at(creating, sts(2, 0), "2026-01-01T00:00:20Z");
        assertThat(condition(created, "Progressing").getStatus()).isEqualTo("True");
        assertThat(condition(created, "Progressing").getReason()).isEqualTo("Creating");
        assertThat(condition(created, "Progressing").getMessage()).isEqualTo("0 of 2 shard pods ready.");
        assertThat(condition(created, "Reconciling").getStatus()).isEqualTo("True");
        assertThat(condition(created, "Ready").getStatus()).isEqualTo("False");
        // As a real create goes: the first look already finds the StatefulSet just made, with no status yet.
        StatefulSet fresh = model.generateStatefulSet();
        fresh.getMetadata().setGeneration(1L);
        PiKVClusterStatus made = at(null, fresh, T0);
        assertThat(condition(made, "Progressing").getReason()).isEqualTo("RollingOut");
        PiKVClusterStatus starting = at(made, sts(2, 0), "2026-01-01T00:00:20Z");
        assertThat(condition(starting, "Progressing").getReason()).isEqualTo("Creating");
        assertThat(condition(starting, "Progressing").getMessage()).isEqualTo("0 of 2 shard pods ready.");
        assertThat(created.getLastProgressTime()).isEqualTo("2026-01-01T00:00:20Z");
        assertThat(condition(at(created, sts(2, 0), minute(10)), "Degraded").getStatus()).isEqualTo("False");
        PiKVClusterStatus later = at(created, sts(2, 0), minute(11));
        assertThat(condition(later, "Degraded").getReason()).isEqualTo("ProgressDeadlineExceeded");
        assertThat(condition(later, "Degraded").getMessage()).startsWith("0 of 2 shard pods ready. No shard pod has been")
                .endsWith("see the shard pods' events and logs (kubectl describe pods -l "
                        + "app.kubernetes.io/name=pikv,app.kubernetes.io/instance=demo,app.kubernetes.io/component=shard), "
                        + "e.g. for an image that cannot "
                        + "be pulled, a container that does not start or become ready, or no node with room.");
        // Pods the StatefulSet could not create (a quota, an admission webhook): their reason is in its events.
        PiKVClusterStatus none = at(creating, sts(0, 0), "2026-01-01T00:00:20Z");
        PiKVClusterStatus refused = at(none, sts(0, 0), minute(11));
        assertThat(condition(refused, "Degraded").getReason()).isEqualTo("ProgressDeadlineExceeded");
        assertThat(condition(refused, "Degraded").getMessage()).contains("fewer shard pods exist than desired (0 of 2): "
                + "see the StatefulSet's events (kubectl describe statefulset demo-shard)");
    }

    @Test
    void aPodLostLongAfterTheClusterBecameReadyStartsTheClockThen() {
        PiKVClusterStatus ready = at(null, sts(2, 2), T0);
        assertThat(condition(ready, "Ready").getStatus()).isEqualTo("True");
        assertThat(ready.getLastProgressTime()).isEqualTo(T0);
        // An hour later a shard restarts: not past any deadline yet, the clock starts now.
        PiKVClusterStatus lost = at(ready, sts(2, 1), minute(60));
        assertThat(condition(lost, "Ready").getStatus()).isEqualTo("False");
        assertThat(condition(lost, "Degraded").getStatus()).isEqualTo("False");
        assertThat(lost.getLastProgressTime()).isEqualTo(minute(60));
        assertThat(condition(at(lost, sts(2, 1), minute(69)), "Degraded").getStatus()).isEqualTo("False");
        // Still short ten minutes later: past the deadline.
        assertThat(condition(at(lost, sts(2, 1), minute(70)), "Degraded").getReason())
                .isEqualTo("ProgressDeadlineExceeded");
        // Back to ready in time: nothing to report.
        assertThat(condition(at(lost, sts(2, 2), minute(65)), "Ready").getStatus()).isEqualTo("True");
    }

    @Test
    void aSlowRolloutThatKeepsProgressingIsNotDegraded() {
        PiKVClusterStatus s = null;
        for (int m = 0; m <= 24; m++) {
            StatefulSet sts = stuck();
            sts.getSpec().setReplicas(40);
            sts.getStatus().setReplicas(40);
            sts.getStatus().setReadyReplicas(39);
            sts.getStatus().setUpdatedReplicas(1 + m / 2); // a pod every two minutes
            s = at(s, sts, minute(m));
            assertThat(condition(s, "Degraded").getStatus()).as("minute %d", m).isEqualTo("False");
        }
        assertThat(condition(s, "Progressing").getReason()).isEqualTo("RollingOut");
    }

    @Test
    void anUnreadableLastValidSpecKeepsWhatStatusKnowsOfTheRunningShards() {
        PiKVClusterStatus before = next(null, sts(2, 2), T0);
        before.setLastValidSpec("{\"model\": {\"dtype\": \"fp8\"}}"); // e.g. written by another operator version
        PiKVClusterValidator.Result invalid = invalid("spec.shards", "is 0: at least 1");
        PiKVClusterStatus s = StatusAggregator.next(before, new StatusAggregator.Snapshot("demo", 2, invalid, null,
                -1, null, sts(2, 2), List.of(), T1));
        assertThat(condition(s, "Degraded").getStatus()).isEqualTo("True");
        assertThat(condition(s, "Degraded").getMessage()).contains("Generation 2 is invalid: spec.shards: is 0",
                "last valid spec (generation 1) could not be read back", "keep running as they are");
        assertThat(condition(s, "Ready").getMessage()).contains("could not be read back");
        assertThat(s.getLastValidSpec()).isEqualTo(before.getLastValidSpec());
        assertThat(s.getLastValidGeneration()).isEqualTo(1);
        assertThat(s.getConfigHash()).isEqualTo(model.configHash());
        assertThat(s.getDesiredShards()).isEqualTo(2);
    }

    @Test
    void aLastValidSpecThatFailsTodaysChecksIsSaidWithWhatItFails() {
        PiKVClusterStatus before = next(null, sts(2, 2), T0);
        PiKVClusterValidator.Result invalid = invalid("spec.shards", "is 0: at least 1");
        PiKVClusterStatus s = StatusAggregator.next(before, new StatusAggregator.Snapshot("demo", 2, invalid, null,
                -1, null, sts(2, 2), List.of(), T1, "spec.sidecar.resources: memory 320Mi leaves less than 512Mi"));
        assertThat(condition(s, "Degraded").getMessage()).isEqualTo("Generation 2 is invalid: spec.shards: is 0: at "
                + "least 1. The last valid spec (generation 1) fails this operator version's checks "
                + "(spec.sidecar.resources: memory 320Mi leaves less than 512Mi), so the shard pods keep running as "
                + "they are, unmanaged, until the spec is valid again.");
        assertThat(condition(s, "Ready").getMessage()).isEqualTo("The last valid spec fails this operator's checks; "
                + "the shards are not managed until the spec is valid.");
        assertThat(s.getLastValidSpec()).isEqualTo(before.getLastValidSpec());
        assertThat(s.getConfigHash()).isEqualTo(model.configHash());
    }

    @Test
    void afterAFailedReconcileReadinessFollowsTheShardsOnlyWhereTheyAreManaged() {
        PiKVClusterStatus ready = next(null, sts(2, 2), T0);
        assertThat(condition(ready, "Ready").getStatus()).isEqualTo("True");
        StatusAggregator.refreshShards(ready, sts(2, 1), T1);
        assertThat(condition(ready, "Ready").getStatus()).isEqualTo("False");
        assertThat(condition(ready, "Ready").getMessage()).isEqualTo("1/2 shards ready.");
        assertThat(ready.getReadyShards()).isEqualTo(1);
        StatusAggregator.refreshShards(ready, sts(2, 2), T1);
        assertThat(condition(ready, "Ready").getStatus()).isEqualTo("True");

        // Unmanaged (no valid spec runs): the pods' readiness does not make the cluster Ready; the counts follow.
        PiKVClusterStatus before = next(null, sts(2, 2), T0);
        before.setLastValidSpec("{\"model\": {\"dtype\": \"fp8\"}}");
        PiKVClusterValidator.Result invalid = invalid("spec.shards", "is 0: at least 1");
        PiKVClusterStatus unmanaged = StatusAggregator.next(before, new StatusAggregator.Snapshot("demo", 2, invalid,
                null, -1, null, sts(2, 1), List.of(), T1));
        StatusAggregator.refreshShards(unmanaged, sts(2, 2), T1);
        assertThat(condition(unmanaged, "Ready").getStatus()).isEqualTo("False");
        assertThat(condition(unmanaged, "Ready").getReason()).isEqualTo("NoValidSpec");
        assertThat(unmanaged.getReadyShards()).isEqualTo(2);
    }

    @Test
    void aPodLostWhileReconcilesFailStartsTheProgressClockThen() {
        // Ready for long (its clock at T0); a failed reconcile's status sees a pod lost at T1: the clock starts there,
        // so the next reconcile that gets through (T2) is one minute in, not past the deadline counted from T0.
        PiKVClusterStatus ready = next(null, sts(2, 2), T0);
        StatusAggregator.refreshShards(ready, sts(2, 1), T1);
        assertThat(ready.getLastProgressTime()).isEqualTo(T1);
        PiKVClusterStatus s = StatusAggregator.next(ready, new StatusAggregator.Snapshot("demo", 1, VALID, model, 1,
                "{}", sts(2, 1), List.of(), "2026-01-01T00:10:30Z"), DEADLINE);
        assertThat(condition(s, "Degraded").getReason()).isEqualTo("SpecValid");
        // A failed reconcile's look that changes nothing keeps the clock.
        StatusAggregator.refreshShards(s, sts(2, 1), "2026-01-01T00:11:00Z");
        assertThat(s.getLastProgressTime()).isEqualTo(T1);
    }

    @Test
    void aFailedReconcilesLookLeavesReadyToTheNextReconcileWhileARolloutIsSaidUnderWay() {
        PiKVClusterStatus rolling = next(null, stuck(), T0);
        assertThat(condition(rolling, "Progressing").getReason()).isEqualTo("RollingOut");
        StatusAggregator.refreshShards(rolling, sts(2, 2), T1); // rolled out meanwhile, but reconciles fail
        assertThat(condition(rolling, "Ready").getStatus()).as("not beside Progressing RollingOut").isEqualTo("False");
        assertThat(rolling.getReadyShards()).isEqualTo(2);
        assertThat(condition(next(rolling, sts(2, 2), T2), "Ready").getStatus()).isEqualTo("True");
    }

    @Test
    void podsCountAsUpdatedOnlyOnceTheStatefulSetSawItsTemplate() {
        StatefulSet changed = sts(2, 2);
        changed.getMetadata().setGeneration(2L); // a new template its controller has not observed yet
        PiKVClusterStatus s = next(null, changed, T0);
        assertThat(s.getUpdatedShards()).isZero();
        assertThat(condition(s, "Progressing").getReason()).isEqualTo("RollingOut");
        assertThat(condition(s, "Progressing").getMessage()).startsWith("0 of 2 shard pods run config ");
    }

    @Test
    void progressingWhileCreatingOrRollingOut() {
        PiKVClusterStatus creating = next(null, null, T0);
        assertThat(condition(creating, "Progressing").getReason()).isEqualTo("Creating");
        assertThat(condition(creating, "Ready").getStatus()).isEqualTo("False");
        StatefulSet rolling = sts(2, 1);
        rolling.getStatus().setUpdatedReplicas(1);
        rolling.getStatus().setUpdateRevision("r2");
        PiKVClusterStatus s = next(null, rolling, T0);
        assertThat(condition(s, "Progressing").getReason()).isEqualTo("RollingOut");
        assertThat(condition(s, "Progressing").getMessage()).isEqualTo("1 of 2 shard pods run config "
                + model.configHash() + ".");
        assertThat(condition(s, "Ready").getMessage()).isEqualTo("1/2 shards ready.");
        assertThat(condition(s, "Rebalancing").getStatus()).isEqualTo("True");
    }

    @Test
    void unchangedObservationsGiveAnEqualStatusAndKeepTransitionTimes() {
        PiKVClusterStatus first = next(null, sts(2, 2), T0);
        PiKVClusterStatus again = next(first, sts(2, 2), T1);
        assertThat(StatusAggregator.changed(first, again)).isFalse();
        assertThat(condition(again, "Ready").getLastTransitionTime()).isEqualTo(T0);
        // A flip moves the transition time of that condition only.
        PiKVClusterStatus degraded = next(again, sts(2, 1), T2);
        assertThat(StatusAggregator.changed(again, degraded)).isTrue();
        assertThat(condition(degraded, "Ready").getLastTransitionTime()).isEqualTo(T2);
        assertThat(condition(degraded, "Degraded").getLastTransitionTime()).isEqualTo(T0);
        // Same status, new message: the message changes, the time does not.
        PiKVClusterStatus fewer = next(degraded, sts(2, 0), T2.replace("02", "03"));
        assertThat(condition(fewer, "Ready").getMessage()).isEqualTo("0/2 shards ready.");
        assertThat(condition(fewer, "Ready").getLastTransitionTime()).isEqualTo(T2);
    }

    @Test
    void invalidSpecDegradesAndKeepsTheRunningSpec() {
        PiKVClusterStatus running = next(null, sts(2, 2), T0);
        PiKVClusterValidator.Result invalid = invalid("spec.model.topK", "is 9 but spec.model.experts is 8");
        PiKVClusterStatus s = StatusAggregator.next(running, new StatusAggregator.Snapshot("demo", 2, invalid, model,
                1, "{}", sts(2, 2), List.of(), T1));
        Condition degraded = condition(s, "Degraded");
        assertThat(degraded.getStatus()).isEqualTo("True");
        // A kstatus tool sees the rejected generation as failed, not as applied.
        assertThat(condition(s, "Stalled").getStatus()).isEqualTo("True");
        assertThat(condition(s, "Stalled").getReason()).isEqualTo("SpecInvalid");
        assertThat(condition(s, "Stalled").getObservedGeneration()).isEqualTo(2);
        assertThat(degraded.getReason()).isEqualTo("SpecInvalid");
        assertThat(degraded.getMessage()).isEqualTo("Generation 2 is invalid: spec.model.topK: is 9 but "
                + "spec.model.experts is 8. The shards keep running the spec of generation 1.");
        assertThat(condition(s, "Ready").getStatus()).isEqualTo("True");
        assertThat(s.getLastValidGeneration()).isEqualTo(1);
        assertThat(s.getObservedGeneration()).isEqualTo(2);
        // Ready, Progressing and Rebalancing describe what runs (generation 1), Degraded the resource's generation 2.
        assertThat(degraded.getObservedGeneration()).isEqualTo(2);
        for (String type : List.of("Ready", "Progressing", "Rebalancing")) {
            assertThat(condition(s, type).getObservedGeneration()).as(type).isEqualTo(1);
        }

        PiKVClusterStatus never = StatusAggregator.next(null, new StatusAggregator.Snapshot("demo", 1, invalid, null,
                -1, null, null, List.of(), T1));
        assertThat(condition(never, "Ready").getReason()).isEqualTo("NoValidSpec");
        assertThat(condition(never, "Degraded").getMessage()).endsWith("No valid spec has been applied yet, so no "
                + "shards run.");
        assertThat(never.getLastValidSpec()).isNull();
    }

    @Test
    void conditionsKeepTheirOrderAndOthers() {
        List<Condition> c = Conditions.set(List.of(), "A", true, "R", "m", 1, T0);
        c = Conditions.set(c, "B", false, "R", "m", 1, T0);
        c = Conditions.set(c, "A", true, "R2", "m2", 2, T1);
        assertThat(c).extracting(Condition::getType).containsExactly("A", "B");
        assertThat(c.get(0).getLastTransitionTime()).isEqualTo(T0);
        assertThat(c.get(0).getReason()).isEqualTo("R2");
        assertThat(c.get(0).getObservedGeneration()).isEqualTo(2);
        assertThat(Conditions.set(c, "A", false, "R", "m", 2, T2).get(0).getLastTransitionTime()).isEqualTo(T2);
    }
}
