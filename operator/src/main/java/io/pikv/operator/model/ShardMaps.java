package io.pikv.operator.model;

import io.pikv.kv.ExpertShardMap;

/**
 * The expert→shard map a reconcile gives the shards. The map is kept while the expert and shard counts match (the
 * control loop may have rebalanced it); otherwise it is laid out anew, round-robin, with an epoch above every epoch
 * handed out before, because a shard only accepts a map with a newer epoch.
 */
public final class ShardMaps {

    private ShardMaps() {
    }

    /**
     * @param current    the map the shards have now (from the ConfigMap), or null
     * @param knownEpoch the highest epoch recorded in status, or -1 (a deleted ConfigMap must not reset epochs)
     */
    public static ExpertShardMap next(ExpertShardMap current, long knownEpoch, int experts, int shards) {
        if (current != null && current.experts() == experts && current.shards() == shards
                && current.epoch() >= knownEpoch) {
            return current;
        }
        long epoch = Math.max(current == null ? -1 : current.epoch(), knownEpoch) + 1;
        int[] assignment = ExpertShardMap.roundRobin(experts, shards).assignment();
        return new ExpertShardMap(epoch, shards, assignment);
    }
}
