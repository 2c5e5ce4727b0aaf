package io.pikv.kv;

import java.util.Arrays;

/**
 * Which shard owns each expert, versioned by an epoch.
 *
 * <p>The operator owns this map and may replace it at run time (rebalancing); a store only accepts a map with a
 * newer epoch. Immutable.
 */
public final class ExpertShardMap {
    private final long epoch;
    private final int shards;
    private final int[] shardOfExpert;

    public ExpertShardMap(long epoch, int shards, int[] shardOfExpert) {
        if (epoch < 0) {
            throw new IllegalArgumentException("epoch must be >= 0, got " + epoch);
        }
        if (shards < 1) {
            throw new IllegalArgumentException("shards must be >= 1, got " + shards);
        }
        if (shardOfExpert == null) {
            throw new IllegalArgumentException("the map's shard of each expert is missing");
        }
        if (shardOfExpert.length == 0) {
            throw new IllegalArgumentException("the map must name a shard for at least one expert");
        }
        for (int e = 0; e < shardOfExpert.length; e++) {
            if (shardOfExpert[e] < 0 || shardOfExpert[e] >= shards) {
                throw new IllegalArgumentException("expert " + e + " is mapped to shard " + shardOfExpert[e]
                        + ", outside [0, " + shards + ")");
            }
        }
        this.epoch = epoch;
        this.shards = shards;
        this.shardOfExpert = shardOfExpert.clone();
    }

    /** Expert {@code e} on shard {@code e mod shards}, epoch 0. */
    public static ExpertShardMap roundRobin(int experts, int shards) {
        int[] map = new int[experts];
        for (int e = 0; e < experts; e++) {
            map[e] = e % shards;
        }
        return new ExpertShardMap(0, shards, map);
    }

    public long epoch() {
        return epoch;
    }

    public int shards() {
        return shards;
    }

    public int experts() {
        return shardOfExpert.length;
    }

    public int shardOf(int expert) {
        return shardOfExpert[expert];
    }

    /** A copy of the assignment. */
    public int[] assignment() {
        return shardOfExpert.clone();
    }

    /** The same map with {@code expert} moved to {@code shard} and the epoch advanced by one. */
    public ExpertShardMap withMove(int expert, int shard) {
        if (expert < 0 || expert >= shardOfExpert.length) {
            throw new IllegalArgumentException("expert " + expert + " is outside [0, " + shardOfExpert.length + ")");
        }
        if (epoch == Long.MAX_VALUE) {
            throw new IllegalStateException("the shard map's epoch is at its maximum (" + epoch + "): no later map");
        }
        int[] next = shardOfExpert.clone();
        next[expert] = shard;
        return new ExpertShardMap(epoch + 1, shards, next);
    }

    @Override
    public boolean equals(Object o) {
        return o instanceof ExpertShardMap m && m.epoch == epoch && m.shards == shards
                && Arrays.equals(m.shardOfExpert, shardOfExpert);
    }

    @Override
    public int hashCode() {
        return Long.hashCode(epoch) * 31 + Arrays.hashCode(shardOfExpert);
    }

    @Override
    public String toString() {
        return "ExpertShardMap{epoch=" + epoch + ", shards=" + shards + ", " + Arrays.toString(shardOfExpert) + "}";
    }
}
