package io.pikv.kv;

import java.util.List;

/**
 * A snapshot of one shard: its pool and the non-zero per-(expert, layer) counters.
 *
 * @param bytesInUse     bytes of pages in use (what the budget bounds)
 * @param bytesAllocated off-heap bytes the pool holds (in use plus free-listed pages), never above the budget once a
 *                       shrink ({@link KvShard#resizeBudget}) has returned
 * @param entries        resident entries
 */
public record ShardStats(int shard, long budgetBytes, long bytesInUse, long bytesAllocated, int pagesInUse,
                         int maxPages, long entries, List<ExpertLayerCounters> counters) {

    public long lookups() {
        return counters.stream().mapToLong(ExpertLayerCounters::lookups).sum();
    }

    public long hits() {
        return counters.stream().mapToLong(ExpertLayerCounters::hits).sum();
    }

    public long misses() {
        return counters.stream().mapToLong(ExpertLayerCounters::misses).sum();
    }

    public long evictions() {
        return counters.stream().mapToLong(ExpertLayerCounters::evictions).sum();
    }
}
