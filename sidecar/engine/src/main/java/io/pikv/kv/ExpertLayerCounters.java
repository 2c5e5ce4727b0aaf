package io.pikv.kv;

/**
 * Counters of one (shard, expert, layer). A lookup is one entry that an attention call wanted (placed on this
 * shard, primary expert in scope): a hit when it was resident, a miss when it had been evicted.
 */
public record ExpertLayerCounters(int expert, int layer, long lookups, long hits, long misses, long evictions,
                                  long bytesResident) {
}
