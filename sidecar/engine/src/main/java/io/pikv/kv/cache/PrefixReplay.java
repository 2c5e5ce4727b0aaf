package io.pikv.kv.cache;

import java.util.List;

/**
 * Replays requests through a block cache with prefix semantics: a request reuses only the leading run of its
 * blocks that are cached (the first miss ends reuse, as prefix caching in an inference server does), and every
 * block it touches is then inserted or refreshed, in prompt order.
 */
public final class PrefixReplay {
    private PrefixReplay() {
    }

    /** Lookups (every block of every request) and hits (blocks inside each request's cached leading run). */
    public record Result(String policy, int capacity, long requests, long lookups, long hits) {
        public double hitRate() {
            return lookups == 0 ? 0 : (double) hits / lookups;
        }
    }

    public static Result replay(List<long[]> requests, BlockCache cache) {
        long lookups = 0;
        long hits = 0;
        for (long[] blocks : requests) {
            int run = 0;
            while (run < blocks.length && cache.contains(blocks[run])) {
                run++;
            }
            hits += run;
            lookups += blocks.length;
            for (long block : blocks) {
                cache.access(block);
            }
        }
        return new Result(cache.name(), cache.capacity(), requests.size(), lookups, hits);
    }
}
