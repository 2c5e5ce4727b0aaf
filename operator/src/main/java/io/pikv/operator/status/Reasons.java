package io.pikv.operator.status;

/** Condition reasons and event reasons: CamelCase constants, one place. */
public final class Reasons {
    // Ready
    public static final String ALL_SHARDS_READY = "AllShardsReady";
    public static final String SHARDS_NOT_READY = "ShardsNotReady";
    public static final String NO_VALID_SPEC = "NoValidSpec";
    // Progressing
    public static final String CREATING = "Creating";
    public static final String ROLLING_OUT = "RollingOut";
    public static final String SCALING = "Scaling";
    public static final String RECOVERING = "Recovering";
    public static final String STABLE = "Stable";
    // Degraded
    public static final String SPEC_VALID = "SpecValid";
    public static final String SPEC_INVALID = "SpecInvalid";
    public static final String RECONCILE_FAILED = "ReconcileFailed";
    public static final String PROGRESS_DEADLINE_EXCEEDED = "ProgressDeadlineExceeded";
    public static final String NAME_TAKEN = "NameTaken";
    // Stalled
    public static final String NOT_STALLED = "NotStalled";
    public static final String STALLED = "Stalled";
    // Rebalancing
    public static final String SHARD_MAP_CHANGED = "ShardMapChanged";
    public static final String SHARD_MAP_SETTLED = "ShardMapSettled";
    // Decisions (event reasons, status.lastDecision.reason)
    public static final String SPEC_APPLIED = "SpecApplied";
    public static final String SPEC_REJECTED = "SpecRejected";
    public static final String SCALED = "Scaled";
    public static final String CONFIG_CHANGED = "ConfigChanged";
    public static final String REBALANCED = "Rebalanced";

    private Reasons() {
    }
}
