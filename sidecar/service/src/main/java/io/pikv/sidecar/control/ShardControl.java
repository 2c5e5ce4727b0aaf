package io.pikv.sidecar.control;

import io.pikv.api.events.ControlState;
import io.pikv.kv.ExpertShardMap;
import io.pikv.sidecar.ShardPolicy;
import org.jboss.logging.Logger;

import java.time.Instant;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.TreeMap;
import java.util.function.LongSupplier;

/**
 * The desired state this sidecar runs: the expert→shard map with its epoch, the eviction policy and its
 * parameters, the budget. It starts from the configuration (source {@code config}, no epoch) and takes control
 * records ({@link ControlState}) of its own cluster whose epoch is newer than the one applied; older or equal
 * epochs and other clusters are ignored, so replays and duplicates are harmless.
 *
 * <p>A record is applied whole or not at all when its shard map is invalid. Parts this sidecar cannot honour are
 * applied as far as they go and said so in {@link State#warnings()}: an unknown policy keeps the current one; the
 * budget is fixed when the engine's shard is built, so a different budget is kept as the desired one next to the
 * effective one (it takes effect when the pod restarts with it). Thread-safe.
 */
public final class ShardControl {
    private static final Logger LOG = Logger.getLogger(ShardControl.class);

    /** What became of a control record. */
    public enum Outcome {
        APPLIED,
        /** Epoch not newer than the applied one. */
        STALE,
        OTHER_CLUSTER,
        INVALID
    }

    /**
     * The state in effect.
     *
     * @param epoch              epoch of the control record applied, -1 before any
     * @param source             {@code config} (no record applied yet) or {@code control}
     * @param shardMap           the expert→shard map served at {@code /v1/shard-map} (epoch 0 while from config)
     * @param policy             the eviction policy that runs
     * @param requestedPolicy    the policy the last applied record asked for (the configured one before)
     * @param parameters         the policy parameters the last applied record carried
     * @param desiredBudgetBytes the budget asked for
     * @param budgetBytes        the budget the shard enforces
     * @param warnings           what of the applied state is not in effect, and why
     * @param lastRejected       the last record rejected as invalid and why, or null
     * @param appliedAt          when the state was set
     */
    public record State(long epoch, String source, ExpertShardMap shardMap, String policy, String requestedPolicy,
                        Map<String, Double> parameters, long desiredBudgetBytes, long budgetBytes,
                        List<String> warnings, String lastRejected, Instant appliedAt) {
    }

    private final String cluster;
    private final int shardId;
    private final int experts;
    private final ShardPolicy policy;
    private final LongSupplier effectiveBudget;
    private final java.util.function.Consumer<ExpertShardMap> routing;
    private volatile State state;

    /**
     * @param initialMap      the map served until the operator publishes one
     * @param effectiveBudget the budget the shard enforces now
     * @param routing         takes each newly applied map (a gateway routes by it); an IllegalArgumentException from
     *                        it rejects the record as invalid
     */
    public ShardControl(String cluster, int shardId, ExpertShardMap initialMap, ShardPolicy policy,
                        long configuredBudgetBytes, LongSupplier effectiveBudget,
                        java.util.function.Consumer<ExpertShardMap> routing) {
        this.cluster = cluster;
        this.shardId = shardId;
        this.experts = initialMap.experts();
        this.policy = policy;
        this.effectiveBudget = effectiveBudget;
        this.routing = routing;
        this.state = new State(-1, "config", initialMap, policy.activePolicy(), policy.activePolicy(), Map.of(),
                configuredBudgetBytes, effectiveBudget.getAsLong(), List.of(), null, Instant.now());
    }

    /** A shard's control: applied maps are only served (a shard routes nothing). */
    public ShardControl(String cluster, int shardId, ExpertShardMap initialMap, ShardPolicy policy,
                        long configuredBudgetBytes, LongSupplier effectiveBudget) {
        this(cluster, shardId, initialMap, policy, configuredBudgetBytes, effectiveBudget, map -> {
        });
    }

    public String cluster() {
        return cluster;
    }

    public State state() {
        return state;
    }

    /** The applied epoch, -1 before any control record. */
    public long epoch() {
        return state.epoch();
    }

    public synchronized Outcome apply(ControlState record) {
        if (!cluster.equals(record.cluster())) {
            return Outcome.OTHER_CLUSTER;
        }
        State current = state;
        if (record.epoch() <= current.epoch()) {
            return Outcome.STALE;
        }
        ExpertShardMap map;
        try {
            map = shardMap(record);
            routing.accept(map);
        } catch (IllegalArgumentException e) {
            String reason = "epoch " + record.epoch() + ": " + e.getMessage();
            LOG.warnf("control: rejected the record of epoch %d (kept epoch %d): %s", record.epoch(), current.epoch(),
                    e.getMessage());
            state = new State(current.epoch(), current.source(), current.shardMap(), current.policy(),
                    current.requestedPolicy(), current.parameters(), current.desiredBudgetBytes(),
                    current.budgetBytes(), current.warnings(), reason, current.appliedAt());
            return Outcome.INVALID;
        }
        List<String> warnings = new ArrayList<>();
        String requested = record.policy() == null || record.policy().isBlank() ? policy.activePolicy() : record.policy();
        Map<String, Double> parameters = record.parameters() == null ? Map.of() : new TreeMap<>(record.parameters());
        Optional<String> refused = policy.use(requested, parameters);
        refused.ifPresent(reason -> {
            warnings.add(reason);
            LOG.warnf("control: epoch %d: %s", record.epoch(), reason);
        });
        long effective = effectiveBudget.getAsLong();
        long desired = record.budgetBytes() > 0 ? record.budgetBytes() : current.desiredBudgetBytes();
        if (desired != effective) {
            warnings.add("budget " + desired + " bytes is desired but " + effective + " bytes are enforced: a shard's "
                    + "budget is fixed when it is built; it takes effect when the sidecar restarts with "
                    + "pikv.store.budget-bytes=" + desired);
        }
        if (shardId >= map.shards()) {
            warnings.add("this shard (" + shardId + ") is outside the map's " + map.shards() + " shards: it owns no expert");
        }
        state = new State(record.epoch(), "control", map, policy.activePolicy(), requested, Map.copyOf(parameters),
                desired, effective, List.copyOf(warnings), current.lastRejected(), Instant.now());
        LOG.infof("control: applied epoch %d: %d shards, policy %s, budget %d bytes desired / %d enforced%s",
                record.epoch(), map.shards(), policy.activePolicy(), desired, effective,
                warnings.isEmpty() ? "" : " (" + warnings.size() + " warning(s))");
        return Outcome.APPLIED;
    }

    private ExpertShardMap shardMap(ControlState record) {
        if (record.epoch() < 0) {
            throw new IllegalArgumentException("epoch must be >= 0, got " + record.epoch());
        }
        List<Integer> assignment = record.shardOfExpert();
        if (assignment == null || assignment.size() != experts) {
            throw new IllegalArgumentException("the shard map names " + (assignment == null ? 0 : assignment.size())
                    + " experts, the model has " + experts);
        }
        int[] shardOf = new int[experts];
        for (int e = 0; e < experts; e++) {
            Integer s = assignment.get(e);
            if (s == null) {
                throw new IllegalArgumentException("expert " + e + " has no shard");
            }
            shardOf[e] = s;
        }
        return new ExpertShardMap(record.epoch(), record.shards(), shardOf);
    }
}
