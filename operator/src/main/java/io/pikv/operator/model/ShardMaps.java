package io.pikv.operator.model;

import io.pikv.kv.ExpertShardMap;

/**
 * The expert→shard map a reconcile gives the shards, and the epoch of the control state it travels in. The map is
 * kept while the expert and shard counts match (the control loop may have rebalanced it). When the shard count
 * changes, only the experts that must move do: scaling down moves the removed shards' experts to the remaining
 * shards with the fewest, scaling up moves experts from the shards with the most to each new one until it holds
 * ⌊experts / shards⌋. The epoch goes above every epoch handed out before whenever anything of the
 * control state changes (the map, or the policy, its parameters or the budget beside it), because a shard only
 * accepts a newer epoch and refuses a different state under the epoch it runs.
 */
public final class ShardMaps {

    private ShardMaps() {
    }

    /**
     * @param current     the map the shards have now (from the ConfigMap), or null
     * @param knownEpoch  the highest epoch recorded in status, or -1 (a deleted ConfigMap must not reset epochs)
     * @param restChanged whether the policy, its parameters or the budget differ from the current control state's
     */
    public static ExpertShardMap next(ExpertShardMap current, long knownEpoch, int experts, int shards,
                                      boolean restChanged) {
        boolean sameShape = current != null && current.experts() == experts && current.shards() == shards;
        if (sameShape && current.epoch() >= knownEpoch && !restChanged) {
            return current;
        }
        long epoch = Math.max(current == null ? -1 : current.epoch(), knownEpoch) + 1;
        int[] assignment;
        if (sameShape) {
            assignment = current.assignment();
        } else if (current != null && current.experts() == experts) {
            assignment = resize(current.assignment(), current.shards(), shards);
        } else {
            assignment = ExpertShardMap.roundRobin(experts, shards).assignment();
        }
        return new ExpertShardMap(epoch, shards, assignment);
    }

    /** {@link #next} for a control state whose policy, parameters and budget are unchanged. */
    public static ExpertShardMap next(ExpertShardMap current, long knownEpoch, int experts, int shards) {
        return next(current, knownEpoch, experts, shards, false);
    }

    /**
     * {@code assignment} (experts over {@code from} shards) for {@code to} shards, moving only what must move: scaling
     * down, each expert of a removed shard goes to the remaining shard with the fewest experts; scaling up, each new
     * shard takes experts from the shard with the most until it holds ⌊experts / to⌋. Every other expert stays where
     * it is (a map the control loop balanced by load stays so). Deterministic: ties go to the lower shard, and the
     * highest-numbered expert of a shard moves first.
     */
    static int[] resize(int[] assignment, int from, int to) {
        int experts = assignment.length;
        int[] out = assignment.clone();
        int[] count = new int[Math.max(from, to)];
        for (int s : out) {
            count[s]++;
        }
        for (int e = 0; e < experts; e++) {
            if (out[e] >= to) {
                count[out[e]]--;
                out[e] = fewest(count, to);
                count[out[e]]++;
            }
        }
        for (int s = from; s < to; s++) {
            while (count[s] < experts / to) {
                int most = 0;
                for (int t = 1; t < to; t++) {
                    if (count[t] > count[most]) {
                        most = t;
                    }
                }
                int e = experts - 1;
                while (out[e] != most) {
                    e--;
                }
                out[e] = s;
                count[most]--;
                count[s]++;
            }
        }
        return out;
    }

    private static int fewest(int[] count, int shards) {
        int least = 0;
        for (int s = 1; s < shards; s++) {
            if (count[s] < count[least]) {
                least = s;
            }
        }
        return least;
    }
}
