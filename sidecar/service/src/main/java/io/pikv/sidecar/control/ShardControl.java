package io.pikv.sidecar.control;

import io.pikv.api.events.ControlState;
import io.pikv.kv.ExpertShardMap;
import io.pikv.kv.KvBudgetExceededException;
import io.pikv.sidecar.ShardNode;
import io.pikv.sidecar.ShardPolicy;
import org.jboss.logging.Logger;

import java.time.Instant;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.TreeMap;

/**
 * The desired state this sidecar runs: the expert→shard map with its epoch, the eviction policy and its
 * parameters, the budget. It starts from the configuration (source {@code config}, no epoch) and takes control
 * records ({@link ControlState}) of its own cluster whose epoch is newer than the one applied; older or equal
 * epochs and other clusters are ignored, so replays and duplicates are harmless.
 *
 * <p>A record is applied whole or not at all when its shard map is invalid. Parts this sidecar cannot honour are
 * applied as far as they go and said so in {@link State#warnings()}: an unknown policy keeps the current one; a
 * budget is applied to the running shard after the policy (a smaller one evicts through that policy until the pages
 * in use fit), and one the shard cannot take — below one page, or below what is in use under {@code reject} — keeps
 * the budget in force next to the desired one. Thread-safe.
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
    private final Budget budget;
    private final java.util.function.Consumer<ExpertShardMap> routing;
    private volatile State state;

    /** The shard's byte budget, as control reads and sets it. */
    public interface Budget {
        /** The budget the shard enforces now. */
        long enforced();

        /**
         * Sets the budget the shard enforces.
         *
         * @return why it could not, the budget in force then unchanged; empty when it now enforces {@code bytes}
         */
        Optional<String> resize(long bytes);

        /** The budget of {@code shard}: {@link ShardNode#resizeBudget}, its refusals as reasons. */
        static Budget of(ShardNode shard) {
            return new Budget() {
                @Override
                public long enforced() {
                    return shard.budgetBytes();
                }

                @Override
                public Optional<String> resize(long bytes) {
                    long before = shard.budgetBytes();
                    try {
                        int evicted = shard.resizeBudget(bytes);
                        LOG.infof("control: budget %d -> %d bytes (%d pages evicted to fit)", before, bytes, evicted);
                        return Optional.empty();
                    } catch (IllegalArgumentException | KvBudgetExceededException e) {
                        return Optional.of("budget " + bytes + " bytes not applied, " + before + " bytes stay in force: "
                                + e.getMessage());
                    } catch (RuntimeException e) {
                        LOG.errorf(e, "control: the shard failed to take a budget of %d bytes", bytes);
                        return Optional.of("budget " + bytes + " bytes not applied, " + shard.budgetBytes()
                                + " bytes stay in force: the shard failed (" + e + ")");
                    }
                }
            };
        }
    }

    /**
     * @param initialMap the map served until the operator publishes one
     * @param budget     the shard's budget, which records may change
     * @param routing    takes each newly applied map (a gateway routes by it); an IllegalArgumentException from it
     *                   rejects the record as invalid
     */
    public ShardControl(String cluster, int shardId, ExpertShardMap initialMap, ShardPolicy policy, Budget budget,
                        java.util.function.Consumer<ExpertShardMap> routing) {
        this.cluster = cluster;
        this.shardId = shardId;
        this.experts = initialMap.experts();
        this.policy = policy;
        this.budget = budget;
        this.routing = routing;
        long configured = budget.enforced();
        this.state = new State(-1, "config", initialMap, policy.activePolicy(), policy.activePolicy(), Map.of(),
                configured, configured, List.of(), null, Instant.now());
    }

    /** A shard's control: applied maps are only served (a shard routes nothing). */
    public ShardControl(String cluster, int shardId, ExpertShardMap initialMap, ShardPolicy policy, Budget budget) {
        this(cluster, shardId, initialMap, policy, budget, map -> {
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

    /**
     * Applies a record that changes only the shard map: the policy in charge and its parameters go in as they are,
     * read under the same lock as the apply, so a record applied meanwhile is not undone.
     */
    public synchronized Outcome applyMap(long epoch, List<Integer> shardOfExpert, int shards) {
        return apply(new ControlState(ControlState.VERSION, cluster, epoch, shardOfExpert, shards,
                policy.activePolicy(), policy.activeParameters(), 0));
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
            if (record.parameters() != null) {
                ShardPolicy.requireFinite(record.parameters()); // before anything of the record applies
            }
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
        long desired = record.budgetBytes() > 0 ? record.budgetBytes() : current.desiredBudgetBytes();
        // A smaller budget first, through the policy in charge: it knows the tokens (a policy switched to has tracked
        // nothing yet). A larger one, or a shrink that policy refused, after the switch.
        Optional<String> budgetRefused = desired < budget.enforced() ? budget.resize(desired) : Optional.empty();
        Optional<String> refused = policy.use(requested, parameters);
        refused.ifPresent(reason -> {
            warnings.add(reason);
            LOG.warnf("control: epoch %d: %s", record.epoch(), reason);
        });
        if (desired != budget.enforced()) {
            budgetRefused = budget.resize(desired);
        }
        budgetRefused.ifPresent(reason -> {
            warnings.add(reason);
            LOG.warnf("control: epoch %d: %s", record.epoch(), reason);
        });
        long effective = budget.enforced();
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
