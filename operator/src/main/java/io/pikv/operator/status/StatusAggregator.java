package io.pikv.operator.status;

import io.fabric8.kubernetes.api.model.Condition;
import io.fabric8.kubernetes.api.model.apps.StatefulSet;
import io.fabric8.kubernetes.api.model.apps.StatefulSetStatus;
import io.pikv.api.v1alpha1.Decision;
import io.pikv.api.v1alpha1.PiKVClusterStatus;
import io.pikv.operator.model.PiKVClusterResources;
import io.pikv.operator.model.PiKVClusterValidator;
import io.pikv.operator.model.ShardCluster;

import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.List;
import java.util.Objects;

/**
 * Computes the next status from the previous one and what a reconcile saw; pure, so the same inputs give an equal
 * status (timestamps included) and an unchanged cluster costs no status write.
 */
public final class StatusAggregator {

    private StatusAggregator() {
    }

    /**
     * What one reconcile knows.
     *
     * @param name              the cluster's name
     * @param generation        the resource's metadata.generation
     * @param validation        the verdict on the current spec
     * @param running           the model of the spec being run (the current one when valid, else the last valid one),
     *                          or null when no spec was ever valid
     * @param runningGeneration the generation of that spec
     * @param runningSpecJson   that spec as JSON
     * @param statefulSet       the shard StatefulSet as last observed, or null
     * @param decisions         decisions taken in this reconcile, in order (the last becomes status.lastDecision)
     * @param now               the reconcile's time, RFC 3339
     */
    public record Snapshot(String name, long generation, PiKVClusterValidator.Result validation, ShardCluster running,
                           long runningGeneration, String runningSpecJson, StatefulSet statefulSet,
                           List<Decision> decisions, String now, String lastValidRefused) {

        /** A snapshot whose last valid spec, if any, was read back and passes this operator's checks. */
        public Snapshot(String name, long generation, PiKVClusterValidator.Result validation, ShardCluster running,
                        long runningGeneration, String runningSpecJson, StatefulSet statefulSet,
                        List<Decision> decisions, String now) {
            this(name, generation, validation, running, runningGeneration, runningSpecJson, statefulSet, decisions,
                    now, null);
        }
    }

    /** {@link #next(PiKVClusterStatus, Snapshot, Duration)} without a progress deadline. */
    public static PiKVClusterStatus next(PiKVClusterStatus previous, Snapshot s) {
        return next(previous, s, null);
    }

    /**
     * @param progressDeadline how long the running spec's shards may go without all being ready and without any
     *                         progress ({@code lastProgressTime}: a new config or shard count, or more pods that
     *                         exist, are updated or are ready) before the cluster is {@code Degraded} with reason
     *                         {@code ProgressDeadlineExceeded}; null, zero or negative: no deadline
     */
    public static PiKVClusterStatus next(PiKVClusterStatus previous, Snapshot s, Duration progressDeadline) {
        PiKVClusterStatus prev = previous == null ? new PiKVClusterStatus() : previous;
        PiKVClusterStatus next = new PiKVClusterStatus();
        next.setObservedGeneration(s.generation());
        next.setSelector(PiKVClusterResources.selector(s.name()));
        next.setHitRate(prev.getHitRate());
        next.setLastDecision(s.decisions().isEmpty() ? prev.getLastDecision()
                : s.decisions().get(s.decisions().size() - 1));

        setCounts(next, s.statefulSet());
        int exist = next.getShards();
        int ready = next.getReadyShards();
        int updated = next.getUpdatedShards();

        List<Condition> c = new ArrayList<>(prev.getConditions() == null ? List.of() : prev.getConditions());
        long g = s.generation();
        String now = s.now();
        // A last valid spec in status that could not be read back (e.g. written by another operator version): its
        // shards run on, unmanaged, and what status knows of them is kept for when the spec is valid again.
        boolean unreadable = s.running() == null && prev.getLastValidSpec() != null;
        // A valid spec's Degraded is set below, once it is known whether its rollout is past the progress deadline.
        if (!s.validation().valid()) {
            c = Conditions.set(c, PiKVClusterStatus.DEGRADED, true, Reasons.SPEC_INVALID,
                    invalidMessage(g, s.validation(), s.running() != null, s.runningGeneration(), prev,
                            s.lastValidRefused()), g, now);
        }

        if (s.running() == null) {
            if (s.validation().valid()) {
                c = Conditions.set(c, PiKVClusterStatus.DEGRADED, false, Reasons.SPEC_VALID, "The spec is valid.", g,
                        now);
            }
            c = Conditions.set(c, PiKVClusterStatus.PROGRESSING, false, Reasons.NO_VALID_SPEC,
                    "Nothing to roll out until the spec is valid.", g, now);
            c = Conditions.set(c, PiKVClusterStatus.READY, false, Reasons.NO_VALID_SPEC, unreadable
                    ? "The last valid spec " + (s.lastValidRefused() == null ? "could not be read back"
                    : "fails this operator's checks") + "; the shards are not managed until the spec is valid."
                    : "No valid spec has been applied.", g, now);
            c = Conditions.set(c, PiKVClusterStatus.REBALANCING, false, Reasons.SHARD_MAP_SETTLED,
                    unreadable ? "The shard map is not managed until the spec is valid." : "No shard map yet.", g,
                    now);
            next.setConditions(kstatus(c, g, now));
            next.setShardMapEpoch(prev.getShardMapEpoch());
            next.setLastRebalance(prev.getLastRebalance());
            next.setActivePolicy(prev.getActivePolicy());
            next.setLastValidGeneration(prev.getLastValidGeneration());
            next.setLastValidSpec(prev.getLastValidSpec());
            next.setConfigHash(prev.getConfigHash());
            next.setDesiredShards(prev.getDesiredShards());
            next.setLastProgressTime(prev.getLastProgressTime());
            return next;
        }

        ShardCluster run = s.running();
        int desired = run.shards();
        next.setDesiredShards(desired);
        next.setActivePolicy(run.activePolicy().value());
        next.setConfigHash(run.configHash());
        // Progress: a new config or shard count, or more pods created, updated or ready (a count that falls — a pod
        // lost — is not progress). A cluster that was all ready and no longer is starts the clock too: the deadline
        // measures how long it has been short since then, not since its last pod became ready (maybe days ago).
        boolean wasAllReady = prev.getReadyShards() != null && prev.getDesiredShards() != null
                && prev.getReadyShards() >= prev.getDesiredShards() && prev.getDesiredShards() > 0;
        boolean progressed = prev.getLastProgressTime() == null || !Objects.equals(prev.getConfigHash(), run.configHash())
                || !Objects.equals(prev.getDesiredShards(), desired) || grew(prev.getShards(), exist)
                || grew(prev.getUpdatedShards(), updated) || grew(prev.getReadyShards(), ready)
                || wasAllReady && ready < desired;
        next.setLastProgressTime(progressed ? now : prev.getLastProgressTime());
        next.setLastValidGeneration(s.runningGeneration());
        next.setLastValidSpec(s.runningSpecJson());
        long epoch = run.shardMap().epoch();
        boolean newMap = prev.getShardMapEpoch() == null || prev.getShardMapEpoch() != epoch;
        next.setShardMapEpoch(epoch);
        next.setLastRebalance(newMap ? now : prev.getLastRebalance());

        String progressReason;
        String progressMessage;
        if (s.statefulSet() == null) {
            progressReason = Reasons.CREATING;
            progressMessage = "Creating the shard StatefulSet.";
        } else if (podsLost(s.statefulSet(), prev, desired, run.configHash())) {
            // Pods deleted or evicted with nothing of the spec changed: the StatefulSet leaves them out of its updated
            // count too, so this is no rollout (its replica count and template are those every pod ran).
            progressReason = Reasons.RECOVERING;
            progressMessage = missing(exist, desired);
        } else if (!rolledOut(s.statefulSet())) {
            progressReason = Reasons.ROLLING_OUT;
            progressMessage = updated + " of " + desired + " shard pods run config " + run.configHash() + ".";
        } else if (exist != desired) {
            // A scale under way (the desired count changed, or the last look saw one going), else pods lost: the
            // StatefulSet makes them again.
            boolean scale = !Objects.equals(prev.getDesiredShards(), desired) || scaling(prev)
                    || progressingFor(prev, Reasons.ROLLING_OUT);
            progressReason = scale ? Reasons.SCALING : Reasons.RECOVERING;
            progressMessage = scale ? exist + " shard pods exist, " + desired + " desired." : missing(exist, desired);
        } else if (ready < desired && (progressingFor(prev, Reasons.CREATING)
                || prev.getShards() != null && prev.getShards() == 0 && Objects.equals(prev.getDesiredShards(), desired)
                && prev.getReadyShards() != null && prev.getReadyShards() == 0)) {
            // A new cluster is created when its pods are ready, not when the StatefulSet has made them (the first look
            // may have seen the StatefulSet just made, with no pods yet: RollingOut, 0 of them).
            progressReason = Reasons.CREATING;
            progressMessage = ready + " of " + desired + " shard pods ready.";
        } else if (ready < desired && (!Objects.equals(prev.getDesiredShards(), desired) || scaling(prev)
                || prev.getShards() != null && prev.getShards() < desired && !progressingFor(prev, Reasons.RECOVERING))) {
            // The StatefulSet counts new pods as soon as they are created: a scale is done when they are ready. Fewer
            // pods at the last look than desired now is a scale too, also when that look saw the StatefulSet's new
            // replica count not rolled out yet (RollingOut) and so already took the new desired count (a pod deleted
            // and made again reads the same way).
            progressReason = Reasons.SCALING;
            progressMessage = ready + " of " + desired + " shard pods ready after scaling to " + desired + ".";
        } else if (ready < desired) {
            // Nothing of the spec changed, yet shards are not ready: a pod restarted, was deleted (its replacement not
            // ready yet) or fails its readiness probe. The cluster is on its way back, not stable: kstatus tools read
            // Reconciling, and the progress deadline runs from when it was last all ready.
            progressReason = Reasons.RECOVERING;
            progressMessage = ready + " of " + desired + " shard pods ready; waiting for the others to be ready again "
                    + "(a pod restarted or fails its readiness probe).";
        } else {
            progressReason = null;
            progressMessage = null;
        }
        // Progressing, Ready and Rebalancing describe the spec that runs: its generation, which is older than the
        // resource's while a newer one is invalid (Degraded carries that one).
        long rg = s.runningGeneration();
        boolean progressing = progressReason != null;
        c = progressing
                ? Conditions.set(c, PiKVClusterStatus.PROGRESSING, true, progressReason, progressMessage, rg, now)
                : Conditions.set(c, PiKVClusterStatus.PROGRESSING, false, Reasons.STABLE,
                "All " + desired + " shard pods run config " + run.configHash() + ".", rg, now);
        boolean allReady = !progressing && ready == desired;
        String readyMessage = ready + "/" + desired + " shards ready.";
        c = allReady
                ? Conditions.set(c, PiKVClusterStatus.READY, true, Reasons.ALL_SHARDS_READY, readyMessage, rg, now)
                : Conditions.set(c, PiKVClusterStatus.READY, false, Reasons.SHARDS_NOT_READY, readyMessage, rg, now);
        if (s.validation().valid()) {
            if (!allReady && pastDeadline(next.getLastProgressTime(), progressDeadline, now)) {
                c = Conditions.set(c, PiKVClusterStatus.DEGRADED, true, Reasons.PROGRESS_DEADLINE_EXCEEDED,
                        (progressing ? progressMessage : readyMessage) + " No shard pod has been created, updated or "
                                + "become ready since " + next.getLastProgressTime() + " (progress deadline "
                                + progressDeadline.toString().substring(2).toLowerCase(java.util.Locale.ROOT)
                                + "): " + (exist < desired
                                ? "fewer shard pods exist than desired (" + exist + " of " + desired + "): see the "
                                + "StatefulSet's events (kubectl describe statefulset "
                                + PiKVClusterResources.shardStatefulSetName(s.name()) + "), e.g. for a quota, a "
                                + "LimitRange or an admission webhook that refuses the pods; and the shard pods' "
                                + "events and logs (kubectl describe pods -l " + PiKVClusterResources.selector(s.name())
                                + ")."
                                : "see the shard pods' events and logs (kubectl describe pods -l "
                                + PiKVClusterResources.selector(s.name()) + "), e.g. for an image that cannot be "
                                + "pulled, a container that does not start or become ready, or no node with room."),
                        g, now);
            } else {
                c = Conditions.set(c, PiKVClusterStatus.DEGRADED, false, Reasons.SPEC_VALID, "The spec is valid.", g,
                        now);
            }
        }
        boolean rebalancing = !allReady && (newMap || Conditions.isTrue(c, PiKVClusterStatus.REBALANCING));
        c = rebalancing
                ? Conditions.set(c, PiKVClusterStatus.REBALANCING, true, Reasons.SHARD_MAP_CHANGED,
                "Control state epoch " + epoch + " (the shard map of " + run.shardMap().experts() + " experts over "
                        + desired + " shards, policy " + run.activePolicy().value() + ", " + run.budgetBytes()
                        + " bytes per shard); waiting for all shards to be ready.", rg, now)
                : Conditions.set(c, PiKVClusterStatus.REBALANCING, false, Reasons.SHARD_MAP_SETTLED,
                (allReady ? "All " + desired + " shards are ready" : "The control state has not changed while "
                        + "shards are not ready") + "; shard map epoch " + epoch + " is the desired map (in the "
                        + "ConfigMap's control state), not yet published to the shards: they run the map they were "
                        + "started with until control records carry it.", rg, now);
        next.setConditions(kstatus(c, g, now));
        return next;
    }

    /**
     * The conditions kstatus-based tools (Flux, kpt, cli-utils) read: {@code Reconciling} restates {@code Progressing},
     * {@code Stalled} a {@code Degraded} that needs a person — an invalid spec or the progress deadline, not a
     * reconcile failure the operator retries. Without them such a tool takes a rejected spec whose generation the
     * operator observed for applied.
     */
    private static List<Condition> kstatus(List<Condition> c, long g, String now) {
        Condition p = Conditions.find(c, PiKVClusterStatus.PROGRESSING);
        Condition d = Conditions.find(c, PiKVClusterStatus.DEGRADED);
        boolean stalled = d != null && Conditions.TRUE.equals(d.getStatus())
                && (Reasons.SPEC_INVALID.equals(d.getReason()) || Reasons.PROGRESS_DEADLINE_EXCEEDED.equals(d.getReason()));
        // kstatus stops at the first of the two that is true: a stalled cluster is not reconciling (Flux's rule).
        boolean reconciling = !stalled && p != null && Conditions.TRUE.equals(p.getStatus());
        List<Condition> out = Conditions.set(c, PiKVClusterStatus.RECONCILING, reconciling,
                stalled ? Reasons.STALLED : p == null ? Reasons.STABLE : p.getReason(),
                stalled ? "Stalled: waits for a person." : p == null ? "" : p.getMessage(), g, now);
        return Conditions.set(out, PiKVClusterStatus.STALLED, stalled,
                stalled ? d.getReason() : Reasons.NOT_STALLED,
                stalled ? d.getMessage() : "Nothing waits for a person.", g, now);
    }

    /**
     * A reconcile stopped before it applied anything, by objects of the cluster's names that are not its own
     * ({@code message} says which and what to do): {@code Degraded} and {@code Stalled} say it (a person must act),
     * {@code Reconciling} is false as kstatus wants beside a stall, and a cluster with no {@code Ready} yet gets it
     * false for the same reason; the rest stays as it was.
     */
    public static void nameTaken(PiKVClusterStatus status, String message, long generation, String now) {
        List<Condition> c = status.getConditions();
        c = Conditions.set(c, PiKVClusterStatus.DEGRADED, true, Reasons.NAME_TAKEN, message, generation, now);
        c = Conditions.set(c, PiKVClusterStatus.STALLED, true, Reasons.NAME_TAKEN, message, generation, now);
        c = Conditions.set(c, PiKVClusterStatus.RECONCILING, false, Reasons.STALLED, "Stalled: waits for a person.",
                generation, now);
        if (Conditions.find(c, PiKVClusterStatus.READY) == null) {
            c = Conditions.set(c, PiKVClusterStatus.READY, false, Reasons.NAME_TAKEN, "No shards run: " + message,
                    generation, now);
        }
        status.setConditions(c);
        status.setObservedGeneration(generation);
    }

    /** The Degraded message (and Warning event) for an invalid spec: what is wrong and what keeps running. */
    public static String invalidMessage(long generation, PiKVClusterValidator.Result validation, boolean running,
                                        long runningGeneration, PiKVClusterStatus prev, String lastValidRefused) {
        if (!running && prev.getLastValidSpec() != null && lastValidRefused != null) {
            // Written by an operator version with other rules (an upgrade): rendering it now could roll the shards
            // into settings they refuse, so they are left as they are.
            return "Generation " + generation + " is invalid: " + validation.summary() + ". The last valid spec "
                    + "(generation " + prev.getLastValidGeneration() + ") fails this operator version's checks ("
                    + lastValidRefused + "), so the shard pods keep running as they are, unmanaged, until the spec is "
                    + "valid again.";
        }
        if (!running && prev.getLastValidSpec() != null) {
            // A last valid spec in status that could not be read back: its shards run on, unmanaged.
            return "Generation " + generation + " is invalid: " + validation.summary() + ". The last valid spec "
                    + "(generation " + prev.getLastValidGeneration() + ") could not be read back from status, so "
                    + "the shard pods keep running as they are, unmanaged, until the spec is valid again.";
        }
        return "Generation " + generation + " is invalid: " + validation.summary() + ". " + (running
                ? "The shards keep running the spec of generation " + runningGeneration + "."
                : "No valid spec has been applied yet, so no shards run.");
    }

    /**
     * After a failed reconcile, whose own status was never built: the shard counts and {@code Ready} from the
     * StatefulSet as the informer has it now, so that pods lost while reconciles fail are not reported ready. The rest
     * of {@code status} stays as the last reconcile that got through left it; {@code Ready} keeps that reconcile's
     * generation (the spec that runs). Without a desired count (nothing applied yet), or while no valid spec runs (the
     * shards are not managed), only the counts change.
     */
    public static void refreshShards(PiKVClusterStatus status, StatefulSet statefulSet, String now) {
        Integer wasShards = status.getShards();
        Integer wasUpdated = status.getUpdatedShards();
        Integer wasReady = status.getReadyShards();
        setCounts(status, statefulSet);
        int exist = status.getShards();
        int ready = status.getReadyShards();
        Integer desired = status.getDesiredShards();
        // The progress clock follows the counts it is written with, as a reconcile's does: else the next reconcile
        // compares with counts it never judged, and a pod lost (or made ready) meanwhile is no change to it — a
        // cluster ready for days then looks past its deadline the moment it loses a pod during failing reconciles.
        if (desired != null && status.getLastProgressTime() != null) {
            boolean wasAllReady = wasReady != null && wasReady >= desired && desired > 0;
            if (grew(wasShards, exist) || grew(wasUpdated, status.getUpdatedShards()) || grew(wasReady, ready)
                    || wasAllReady && ready < desired) {
                status.setLastProgressTime(now);
            }
        }
        Condition was = Conditions.find(status.getConditions(), PiKVClusterStatus.READY);
        if (desired == null || was == null || Reasons.NO_VALID_SPEC.equals(was.getReason())) {
            return; // nothing applied, or shards left unmanaged: Ready says why, whatever the pods do
        }
        long rg = was.getObservedGeneration() == null ? -1 : was.getObservedGeneration();
        boolean allReady = statefulSet != null && rolledOut(statefulSet) && exist == desired && ready == desired;
        if (allReady && Conditions.isTrue(status.getConditions(), PiKVClusterStatus.PROGRESSING)) {
            // Progressing (and Rebalancing) stay as the last reconcile left them: Ready turns true with them, at the
            // next reconcile that gets through, not beside a rollout still said to be under way.
            return;
        }
        String message = ready + "/" + desired + " shards ready.";
        status.setConditions(allReady
                ? Conditions.set(status.getConditions(), PiKVClusterStatus.READY, true, Reasons.ALL_SHARDS_READY,
                message, rg, now)
                : Conditions.set(status.getConditions(), PiKVClusterStatus.READY, false, Reasons.SHARDS_NOT_READY,
                message, rg, now));
    }

    /** The shard pods that exist, are ready and run the latest template, as the StatefulSet counts them (0 without). */
    private static void setCounts(PiKVClusterStatus status, StatefulSet statefulSet) {
        StatefulSetStatus sts = statefulSet == null ? null : statefulSet.getStatus();
        status.setShards(sts == null || sts.getReplicas() == null ? 0 : sts.getReplicas());
        status.setReadyShards(sts == null || sts.getReadyReplicas() == null ? 0 : sts.getReadyReplicas());
        // Updated means on the latest template only once the StatefulSet controller has seen that template: before,
        // its count is of the revision before (right after a config change, every pod would count as updated).
        Long generation = statefulSet == null ? null : statefulSet.getMetadata().getGeneration();
        boolean seen = generation == null || sts != null && sts.getObservedGeneration() != null
                && sts.getObservedGeneration() >= generation;
        status.setUpdatedShards(sts == null || sts.getUpdatedReplicas() == null || !seen ? 0 : sts.getUpdatedReplicas());
    }

    private static String missing(int exist, int desired) {
        return exist + " shard pods exist, " + desired + " desired; waiting for the StatefulSet to "
                + (exist < desired ? "make the missing ones again." : "remove the extra ones (its replica count was "
                + "changed by hand; the operator set it back).");
    }

    /**
     * Whether pods of an unchanged cluster are missing: fewer exist than desired, every one that does runs the current
     * template (the StatefulSet controller has seen it, its revisions agree), and the last look saw them all (or was
     * already recovering) with the same shard count and config.
     */
    static boolean podsLost(StatefulSet sts, PiKVClusterStatus prev, int desired, String configHash) {
        StatefulSetStatus st = sts.getStatus();
        if (st == null || st.getObservedGeneration() == null || st.getUpdateRevision() == null
                || !st.getUpdateRevision().equals(st.getCurrentRevision())) {
            return false;
        }
        Long generation = sts.getMetadata().getGeneration();
        int exist = st.getReplicas() == null ? 0 : st.getReplicas();
        int updated = st.getUpdatedReplicas() == null ? 0 : st.getUpdatedReplicas();
        return (generation == null || st.getObservedGeneration() >= generation) && exist < desired && updated >= exist
                && Objects.equals(prev.getDesiredShards(), desired) && Objects.equals(prev.getConfigHash(), configHash)
                && (prev.getShards() != null && prev.getShards() >= desired || progressingFor(prev, Reasons.RECOVERING));
    }

    /** Whether the StatefulSet controller has rolled out the latest template to every replica. */
    static boolean rolledOut(StatefulSet sts) {
        StatefulSetStatus st = sts.getStatus();
        if (st == null || st.getObservedGeneration() == null) {
            return false;
        }
        Long generation = sts.getMetadata().getGeneration();
        if (generation != null && st.getObservedGeneration() < generation) {
            return false;
        }
        int replicas = sts.getSpec() == null || sts.getSpec().getReplicas() == null ? 1 : sts.getSpec().getReplicas();
        int updated = st.getUpdatedReplicas() == null ? 0 : st.getUpdatedReplicas();
        return updated >= replicas && (st.getUpdateRevision() == null
                || st.getUpdateRevision().equals(st.getCurrentRevision()));
    }

    private static boolean grew(Integer before, int now) {
        return before == null || now > before;
    }

    /** Whether {@code deadline} (when positive) has passed since {@code since}; false when a time does not parse. */
    private static boolean pastDeadline(String since, Duration deadline, String now) {
        if (deadline == null || deadline.isZero() || deadline.isNegative()) {
            return false;
        }
        Instant from = instant(since);
        Instant at = instant(now);
        return from != null && at != null && Duration.between(from, at).compareTo(deadline) >= 0;
    }

    private static Instant instant(String rfc3339) {
        if (rfc3339 == null) {
            return null;
        }
        try {
            return Instant.parse(rfc3339);
        } catch (java.time.format.DateTimeParseException e) {
            return null; // a hand-edited time: no deadline rather than a failed reconcile
        }
    }

    /** Whether the previous status said a scale was in progress. */
    private static boolean scaling(PiKVClusterStatus prev) {
        return progressingFor(prev, Reasons.SCALING);
    }

    /** Whether the previous status was progressing for {@code reason}. */
    private static boolean progressingFor(PiKVClusterStatus prev, String reason) {
        Condition p = Conditions.find(prev.getConditions(), PiKVClusterStatus.PROGRESSING);
        return p != null && Conditions.TRUE.equals(p.getStatus()) && reason.equals(p.getReason());
    }

    /** Whether two statuses differ (both are built with preserved timestamps, so equal JSON means no change). */
    public static boolean changed(PiKVClusterStatus a, PiKVClusterStatus b) {
        return !StatusJson.tree(a).equals(StatusJson.tree(b));
    }
}
