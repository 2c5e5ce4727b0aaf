package io.pikv.kv.scheduling;

import java.util.List;

/** Replays requests (each its blocks in prompt order) through a block cache and counts prefix hits. */
public final class PrefixReplay {
    private PrefixReplay() {
    }

    /** Lookups (every block of every request) and hits (blocks inside each request's resident leading run). */
    public record Result(String policy, int capacity, long requests, long lookups, long hits) {
        public double hitRate() {
            return lookups == 0 ? 0 : (double) hits / lookups;
        }
    }

    public static Result replay(List<long[]> requests, BlockCache cache) {
        long lookups = 0;
        long hits = 0;
        for (long[] blocks : requests) {
            hits += cache.request(blocks);
            lookups += blocks.length;
        }
        return new Result(cache.name(), cache.capacity(), requests.size(), lookups, hits);
    }
}
