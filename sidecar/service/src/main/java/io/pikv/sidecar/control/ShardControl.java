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
 * records ({@link ControlState}) of its own cluster whose epoch is newer than the one applied; older epochs, repeats of
 * the applied record and other clusters are ignored, so replays and duplicates are harmless. A different record with
 * the applied epoch is a conflict: applied (the later record is the one the compacted topic keeps, so every shard
 * ends on it, restarted or not), logged and counted.
 *
 * <p>Each record is the whole state, read against the configuration only (the topic is compacted, so a record must
 * not depend on the ones before it): a missing policy means the configured policy with its configured parameters, a
 * budget of 0 or less the configured budget. A record is checked whole before any of it applies — schema version,
 * shard map, policy name and parameters, a budget of at least one page — and refused whole when any part is wrong.
 * What depends on the running shard is applied as far as it goes and said in {@link State#warnings()}: a smaller budget
 * is applied before the policy (it evicts through the policy in charge, which knows the tokens, until the pages in use
 * fit), a larger one after it, and one the
 * shard cannot take now — below what is in use under {@code reject}, or above its page memory — keeps the budget in
 * force next to the desired one. A map applied by hand ({@link #applyMap}, source {@code manual}) changes only the
 * map; a control record with the same epoch replaces it. Thread-safe.
 */
public final class ShardControl {
    private static final Logger LOG = Logger.getLogger(ShardControl.class);

    /** What became of a control record. */
    public enum Outcome {
        APPLIED,
        /** Epoch older than the applied one, or the applied record again. */
        STALE,
        /** A record other than the applied one with the same epoch: applied (the later one wins), warned of. */
        CONFLICT,
        OTHER_CLUSTER,
        INVALID
    }

    /**
     * The state in effect.
     *
     * @param epoch              epoch of the control record applied, -1 before any
     * @param source             {@code config} (no record applied yet), {@code control} (a control record) or
     *                           {@code manual} (a map applied by hand over the last of those)
     * @param shardMap           the expert→shard map served at {@code /v1/shard-map} (epoch 0 while from config)
     * @param policy             the eviction policy that runs
     * @param requestedPolicy    the policy the last applied record asked for (the configured one before)
     * @param parameters         the policy parameters the last applied record carried
     * @param desiredBudgetBytes the budget asked for
     * @param budgetBytes        the budget the shard enforces
     * @param warnings           what of the applied state is not in effect, and why
     * @param lastRejected       the last record refused (invalid) and why, or null
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
    /** What a record without a policy or a budget asks for: the configured policy, parameters and budget. */
    private final String configuredPolicy;
    private final Map<String, Double> configuredParameters;
    private final long configuredBudget;
    private volatile State state;
    /** The control record in effect (null before any), to tell a repeat from a conflict. */
    private ControlState applied;
    /** The warning of the budget the record in effect asked for and the shard could not take, or null. */
    private String budgetWarning;

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

        /** Why {@code bytes} can never be this shard's budget (whatever it holds), or empty. */
        default Optional<String> check(long bytes) {
            return Optional.empty();
        }

        /** The budget control sets in a sidecar of {@code role}: a shard's own ({@link #of}), a gateway's shards'. */
        static Budget forRole(io.pikv.sidecar.Role role, ShardNode shard, long configured) {
            return role == io.pikv.sidecar.Role.gateway ? ofShards(configured) : of(shard);
        }

        /**
         * A gateway's: it holds no KV pages, so a budget is for its shards to check and take (against their own page
         * size and memory); this one only keeps the budget the record in effect asked for, starting at
         * {@code configured}.
         */
        static Budget ofShards(long configured) {
            return new Budget() {
                private volatile long asked = configured;

                @Override
                public long enforced() {
                    return asked;
                }

                @Override
                public Optional<String> check(long bytes) {
                    return Optional.empty();
                }

                @Override
                public Optional<String> resize(long bytes) {
                    asked = bytes;
                    return Optional.empty();
                }
            };
        }

        /** The budget of {@code shard}: {@link ShardNode#resizeBudget}, its refusals as reasons. */
        static Budget of(ShardNode shard) {
            return new Budget() {
                @Override
                public long enforced() {
                    return shard.budgetBytes();
                }

                @Override
                public Optional<String> check(long bytes) {
                    if (bytes < shard.pageBytes()) {
                        return Optional.of("a budget of " + bytes + " bytes is below one page of " + shard.pageBytes()
                                + " bytes");
                    }
                    // Whole pages, as the store counts them (and as the configured budget is checked): a remainder
                    // below one page beyond the last addressable one is no page more.
                    long ceiling = (long) shard.layout().maxPages() * shard.pageBytes();
                    return bytes / shard.pageBytes() > shard.layout().maxPages() ? Optional.of("a budget of " + bytes
                            + " bytes is more pages than the " + shard.layout().maxPages() + " this shard can address ("
                            + ceiling + " bytes)") : Optional.empty();
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
        this.configuredPolicy = policy.activePolicy();
        this.configuredParameters = policy.activeParameters();
        this.configuredBudget = budget.enforced();
        this.state = new State(-1, "config", initialMap, configuredPolicy, configuredPolicy, configuredParameters,
                configuredBudget, configuredBudget, List.of(), null, Instant.now());
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

    /**
     * Runs {@code read} while no record can apply (a record's map, policy, budget and epoch change together under this
     * object's lock), so what it reads of them is all from before or all from after one record.
     */
    public synchronized <T> T consistent(java.util.function.Supplier<T> read) {
        return read.get();
    }

    /** The applied epoch, -1 before any control record. */
    public long epoch() {
        return state.epoch();
    }

    /**
     * Applies a shard map by hand (source {@code manual}): only the map and its epoch change; the policy, its
     * parameters, the budget and their warnings stay as the last record left them. The epoch must be newer than the
     * map in effect (the configured map's is 0), else {@link Outcome#STALE}. A map that cannot apply throws
     * IllegalArgumentException with the reason and changes nothing, {@code lastRejected} included (that tells of
     * control records; the caller of this method gets its own answer).
     */
    public synchronized Outcome applyMap(long epoch, List<Integer> shardOfExpert, int shards) {
        State current = state;
        if (epoch <= Math.max(current.epoch(), current.shardMap().epoch())) {
            return Outcome.STALE;
        }
        ExpertShardMap map;
        try {
            map = shardMap(epoch, shardOfExpert, shards);
            routing.accept(map);
        } catch (IllegalArgumentException e) {
            LOG.warnf("control: refused a shard map by hand at epoch %d: %s", epoch, e.getMessage());
            throw new IllegalArgumentException("epoch " + epoch + " (by hand): " + e.getMessage(), e);
        }
        List<String> warnings = new ArrayList<>(current.warnings());
        warnings.removeIf(w -> w.startsWith(OUTSIDE_MAP));
        outside(map).ifPresent(warnings::add);
        state = new State(epoch, "manual", map, current.policy(), current.requestedPolicy(), current.parameters(),
                current.desiredBudgetBytes(), current.budgetBytes(), List.copyOf(warnings), current.lastRejected(),
                Instant.now());
        LOG.infof("control: applied a shard map by hand at epoch %d: %d shards", epoch, map.shards());
        return Outcome.APPLIED;
    }

    /** What a record asks for, checked: the map, the policy and its parameters, the desired budget. */
    private record Checked(ExpertShardMap map, String requested, Map<String, Double> parameters, long desired) {
    }

    /**
     * Why the record could not apply by its own content (version, map, policy, parameters, budget), or empty; the
     * gateway's routing, which takes the map last, is not asked. Changes nothing.
     */
    public synchronized Optional<String> problem(ControlState record) {
        try {
            check(record);
            return Optional.empty();
        } catch (IllegalArgumentException e) {
            return Optional.of(e.getMessage());
        }
    }

    private Checked check(ControlState record) {
        if (record.version() != ControlState.VERSION) {
            throw new IllegalArgumentException("schema version " + record.version() + " is not one this sidecar "
                    + "reads (version " + ControlState.VERSION + ")");
        }
        ExpertShardMap map = shardMap(record.epoch(), record.shardOfExpert(), record.shards());
        String requested;
        Map<String, Double> parameters;
        if (record.policy() == null || record.policy().isBlank()) {
            if (record.parameters() != null && !record.parameters().isEmpty()) {
                throw new IllegalArgumentException("parameters " + record.parameters().keySet() + " without a "
                        + "policy (a record without one runs the configured " + configuredPolicy + ")");
            }
            requested = configuredPolicy;
            parameters = configuredParameters;
        } else {
            requested = record.policy();
            parameters = record.parameters() == null ? Map.of() : new TreeMap<>(record.parameters());
            ShardPolicy.check(requested, parameters);
        }
        long desired = record.budgetBytes() > 0 ? record.budgetBytes() : configuredBudget;
        Optional<String> unusable = budget.check(desired);
        if (unusable.isPresent()) {
            throw new IllegalArgumentException(unusable.get());
        }
        return new Checked(map, requested, parameters, desired);
    }

    public synchronized Outcome apply(ControlState record) {
        if (!cluster.equals(record.cluster())) {
            return Outcome.OTHER_CLUSTER;
        }
        State current = state;
        if (record.epoch() >= 0 && record.epoch() < current.epoch()) {
            return Outcome.STALE;
        }
        boolean conflict = false;
        if (record.epoch() >= 0 && record.epoch() == current.epoch() && !current.source().equals("manual")) {
            if (record.equals(applied)) {
                return Outcome.STALE;
            }
            // A producer changed the record without raising the epoch. The later record is the one compaction keeps,
            // so it is what a restarted or added shard reads: applied here too, or shards would run different states
            // under one epoch.
            conflict = true;
        }
        // Everything the record asks for is checked before any of it applies.
        ExpertShardMap map;
        String requested;
        Map<String, Double> parameters;
        long desired;
        try {
            Checked checked = check(record);
            map = checked.map();
            requested = checked.requested();
            parameters = checked.parameters();
            desired = checked.desired();
            routing.accept(map); // last: the first thing that changes (a gateway routes by it from now on)
        } catch (IllegalArgumentException e) {
            reject(current, "epoch " + record.epoch() + ": " + e.getMessage());
            return Outcome.INVALID;
        }
        List<String> warnings = new ArrayList<>();
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
        budgetWarning = budgetRefused.orElse(null);
        long effective = budget.enforced();
        outside(map).ifPresent(warnings::add);
        applied = record;
        state = new State(record.epoch(), "control", map, policy.activePolicy(), requested, Map.copyOf(parameters),
                desired, effective, List.copyOf(warnings), current.lastRejected(), Instant.now());
        LOG.infof("control: applied epoch %d: %d shards, policy %s, budget %d bytes desired / %d enforced%s",
                record.epoch(), map.shards(), policy.activePolicy(), desired, effective,
                warnings.isEmpty() ? "" : " (" + warnings.size() + " warning(s))");
        if (conflict) {
            LOG.warnf("control: epoch %d came again with a different record; applied the later one, as compaction "
                    + "keeps it (the operator raises the epoch for every change: a second writer to %s?)",
                    record.epoch(), "the control topic");
            return Outcome.CONFLICT;
        }
        return Outcome.APPLIED;
    }

    /**
     * Tries again the budget the record in effect asked for and the shard could not take then (pages in use under
     * {@code reject}, which evicts nothing, until sequences close; or direct memory): called now and then, so the
     * shard takes it once it can instead of at the next record. Returns whether it now enforces it.
     */
    public synchronized boolean retryBudget() {
        State current = state;
        String warning = budgetWarning;
        if (warning == null || current.desiredBudgetBytes() == budget.enforced()) {
            return false;
        }
        if (budget.resize(current.desiredBudgetBytes()).isPresent()) {
            return false; // still not: the warning stays as it was
        }
        List<String> warnings = new ArrayList<>(current.warnings());
        warnings.remove(warning);
        budgetWarning = null;
        state = new State(current.epoch(), current.source(), current.shardMap(), current.policy(),
                current.requestedPolicy(), current.parameters(), current.desiredBudgetBytes(), budget.enforced(),
                List.copyOf(warnings), current.lastRejected(), current.appliedAt());
        LOG.infof("control: epoch %d: the budget of %d bytes refused when the record applied is in force now",
                current.epoch(), current.desiredBudgetBytes());
        return true;
    }

    private static final String OUTSIDE_MAP = "this shard (";

    /** The warning for a shard the map leaves out, if it does. */
    private Optional<String> outside(ExpertShardMap map) {
        return shardId >= map.shards()
                ? Optional.of(OUTSIDE_MAP + shardId + ") is outside the map's " + map.shards() + " shards: it owns no expert")
                : Optional.empty();
    }

    /**
     * A record of this cluster that could not even be read as a control state (not JSON of its shape, a fraction
     * where a whole number goes, another cluster named than keyed): nothing applies, and {@code lastRejected} says
     * why, as for a record read but refused.
     */
    public synchronized void unreadable(String reason) {
        reject(state, reason);
    }

    /** Keeps the state in effect and records why a record was refused. */
    private void reject(State current, String reason) {
        LOG.warnf("control: refused %s (kept epoch %d)", reason, current.epoch());
        state = new State(current.epoch(), current.source(), current.shardMap(), current.policy(),
                current.requestedPolicy(), current.parameters(), current.desiredBudgetBytes(), current.budgetBytes(),
                current.warnings(), reason, current.appliedAt());
    }

    private ExpertShardMap shardMap(long epoch, List<Integer> assignment, int shards) {
        if (epoch < 0) {
            throw new IllegalArgumentException("epoch must be >= 0, got " + epoch);
        }
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
        return new ExpertShardMap(epoch, shards, shardOf);
    }
}
