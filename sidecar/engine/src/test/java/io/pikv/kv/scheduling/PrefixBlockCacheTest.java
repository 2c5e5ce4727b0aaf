package io.pikv.kv.scheduling;

import org.junit.jupiter.api.Test;

import java.util.List;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/** Each policy on handmade request streams: exact hits and exactly which blocks are evicted. */
class PrefixBlockCacheTest {

    private static long[] r(long... blocks) {
        return blocks;
    }

    private static PrefixBlockCache replay(EvictionPolicy policy, int capacity, long... singleBlockRequests) {
        PrefixBlockCache cache = new PrefixBlockCache(capacity, policy);
        for (long b : singleBlockRequests) {
            cache.access(b);
        }
        return cache;
    }

    @Test
    void reuseStopsAtTheFirstMissingBlockAndEvictionIsLeafFirst() {
        // Capacity 4, LRU. Only leaves (blocks no resident block follows) and blocks of finished requests may go.
        // r1 [1,2,3]    hits 0                                   -> 1-2-3
        // r2 [1,2,4]    hits 2 (1, 2)                            -> 1-2-{3,4}
        // r3 [5,2,3]    hits 0: 5 is missing. Inserting 5 evicts leaf 3 (older than leaf 4; 1 and 2 have
        //               children); inserting 3 evicts 4 (5 and 2 are in use)  -> 1-2-3, 5
        // r4 [1,2]      hits 2
        // r5 [5,3,1,2]  hits 4
        List<long[]> requests = List.of(r(1, 2, 3), r(1, 2, 4), r(5, 2, 3), r(1, 2), r(5, 3, 1, 2));
        PrefixReplay.Result result = PrefixReplay.replay(requests, new PrefixBlockCache(4, new Lru()));
        assertThat(result.lookups()).isEqualTo(15);
        assertThat(result.hits()).isEqualTo(8);
        assertThat(result.hitRate()).isEqualTo(8.0 / 15);
        assertThat(result.requests()).isEqualTo(5);
        assertThat(result.policy()).isEqualTo("lru");
    }

    @Test
    void lruEvictsTheLeastRecentlyUsed() {
        PrefixBlockCache c = replay(new Lru(), 2, 1, 2, 1, 3);
        assertThat(c.contains(1)).isTrue();
        assertThat(c.contains(2)).isFalse();
        assertThat(c.contains(3)).isTrue();
        assertThat(c.size()).isEqualTo(2);
        assertThat(c.lookups()).isEqualTo(4);
        assertThatThrownBy(() -> new PrefixBlockCache(0, new Lru())).hasMessageContaining("capacity must be >= 1");
    }

    @Test
    void aRequestLongerThanTheCacheKeepsItsHeadAndSkipsTheRest() {
        PrefixBlockCache c = new PrefixBlockCache(2, new Lru());
        assertThat(c.request(r(1, 2, 3, 4))).isZero();
        // 1 and 2 are in use while the request runs, so 3 has no room and 4 would be unreachable without it.
        assertThat(c.contains(1) && c.contains(2)).isTrue();
        assertThat(c.contains(3) || c.contains(4)).isFalse();
        assertThat(c.request(r(1, 2, 3, 4))).isEqualTo(2);
        // Leaf 2 goes first, then 1 becomes a leaf and goes.
        assertThat(c.request(r(7, 8))).isZero();
        assertThat(c.contains(7) && c.contains(8)).isTrue();
        assertThat(c.size()).isEqualTo(2);
    }

    @Test
    void streamingLlmKeepsTheSinksUntilOnlySinksAreLeft() {
        // Capacity 3, one sink (a prompt's first block). r1 [1], r2 [2,3]: leaves are 1 (a sink) and 3.
        PrefixBlockCache streaming = new PrefixBlockCache(3, new StreamingLlm(1, 0));
        PrefixBlockCache lru = new PrefixBlockCache(3, new Lru());
        for (PrefixBlockCache c : List.of(streaming, lru)) {
            c.request(r(1));
            c.request(r(2, 3));
            c.request(r(4));
        }
        // LRU evicts the older leaf, sink 1; StreamingLLM evicts 3.
        assertThat(lru.contains(1)).isFalse();
        assertThat(lru.contains(3)).isTrue();
        assertThat(streaming.contains(1)).isTrue();
        assertThat(streaming.contains(3)).isFalse();
        // Now every candidate (1, 2, 4) is a sink: the least recently used sink, 1, goes.
        streaming.request(r(5));
        assertThat(streaming.contains(1)).isFalse();
        assertThat(streaming.contains(2) && streaming.contains(4) && streaming.contains(5)).isTrue();
    }

    @Test
    void heavyHitterEvictsTheLeastUsedOutsideItsRecentWindow() {
        // 1 is used three times (clock 1-3), 2 once (clock 4); inserting 3 (clock 5) needs room.
        assertThat(replay(new HeavyHitter(0, 0), 2, 1, 1, 1, 2, 3).contains(2)).isFalse();
        // With a window of 2 ticks, 2 (age 1) is protected and 1 (age 2) is not: heavy 1 goes.
        PrefixBlockCache windowed = replay(new HeavyHitter(0, 2), 2, 1, 1, 1, 2, 3);
        assertThat(windowed.contains(1)).isFalse();
        assertThat(windowed.contains(2)).isTrue();
        assertThat(windowed.name()).isEqualTo("h2o");
    }

    @Test
    void utilityWeighsFrequencyAgainstRecency() {
        // u = uses + lastAccess/τ. 1: two uses, last at 2; 2: one use, last at 3.
        // τ = 2:   u(1) = 2 + 1 = 3,  u(2) = 1 + 1.5 = 2.5 -> 2 goes
        // τ = 0.5: u(1) = 2 + 4 = 6,  u(2) = 1 + 6 = 7     -> 1 goes
        assertThat(replay(new Utility(0, 1, 1, 2), 2, 1, 1, 2, 3).contains(2)).isFalse();
        assertThat(replay(new Utility(0, 1, 1, 0.5), 2, 1, 1, 2, 3).contains(1)).isFalse();
        // Attention weight alone: for blocks each use adds one, so it ranks as frequency does.
        assertThat(replay(new Utility(1, 0, 0, 1), 2, 1, 1, 2, 3).contains(2)).isFalse();
    }

    @Test
    void utilityWeightsThatCouldMakeAScoreInfiniteAreRefused() {
        for (double[] w : new double[][] {{1e13, 1, 1, 1}, {1, 1, 1e13, 1}, {0, 1, 1, 1e-300}, {0, -1e308, 1, 1e-8},
            {1, 2e12, 1, 1024}}) {
            assertThatThrownBy(() -> new Utility(w[0], w[1], w[2], w[3])).isInstanceOf(IllegalArgumentException.class)
                    .hasMessageContaining("only their ratios matter");
        }
        assertThat(new Utility(1e12, -1e12, 0, 1).name()).isEqualTo("utility");
        // No recency weight over a scale so small that the clock divided by it would overflow: frequency ranks alone.
        assertThat(replay(new Utility(0, 0, 1, Double.MIN_VALUE), 2, 1, 1, 1, 2, 3).contains(2)).isFalse();
    }

    @Test
    void anAdaptivePolicyServesOnlyACacheOfItsCapacity() {
        Adaptive tenBlocks = new Adaptive(10, java.util.List.of(new Lru(), new Lrfu(1, 8, true)), 100, 0.01);
        assertThatThrownBy(() -> new PrefixBlockCache(100, tenBlocks)).isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("built for 10 blocks cannot serve a cache of 100");
        assertThat(new PrefixBlockCache(10, tenBlocks).name()).isEqualTo("adaptive");
    }

    @Test
    void lrfuRemembersEvictedBlocks() {
        // Half-life 10^6 ticks: CRF is about the use count. Capacity 3: 7 ×2, 8 ×3, 9 ×2, then 12 evicts 7
        // (CRF 2, older than 9). 7 comes back: with history its CRF is about 3, so the next newcomers evict 12
        // and then 9; without history 7 restarts at 1 and is the one evicted.
        long[] stream = {7, 7, 8, 8, 8, 9, 9, 12, 7, 13};
        PrefixBlockCache remembering = replay(new Lrfu(1e6, 8, false), 3, stream);
        PrefixBlockCache forgetting = replay(new Lrfu(1e6, 0, false), 3, stream);
        assertThat(remembering.contains(7)).isTrue();
        assertThat(remembering.contains(9)).isFalse();
        assertThat(forgetting.contains(7)).isFalse();
        assertThat(forgetting.contains(9)).isTrue();
    }

    @Test
    void lrfuHistoryGrowsWithTheEvictionsUpToItsLimit() {
        // As lrfuRemembersEvictedBlocks, with 3,000 one-use blocks between 7's eviction and its return (each evicts
        // the one before it): a history of 5,000 still holds 7 (its ring grew past its first 1,024 slots), one of
        // 1,000 has dropped it. The largest limit, 2^29 (what the history's index holds), costs nothing up front.
        long[] stream = new long[3010];
        long[] head = {7, 7, 8, 8, 8, 9, 9, 12};
        System.arraycopy(head, 0, stream, 0, head.length);
        for (int i = 0; i < 3000; i++) {
            stream[head.length + i] = 1000 + i;
        }
        stream[3008] = 7;
        stream[3009] = 13;
        assertThatThrownBy(() -> new Lrfu(1e6, Lrfu.MAX_HISTORY + 1, false))
                .hasMessageContaining("historyLimit in [0, 536870912]");
        for (int limit : new int[] {5000, Lrfu.MAX_HISTORY}) {
            PrefixBlockCache remembering = replay(new Lrfu(1e6, limit, false), 3, stream);
            assertThat(remembering.contains(7)).as("limit %d", limit).isTrue();
            assertThat(remembering.contains(9)).as("limit %d", limit).isFalse();
        }
        PrefixBlockCache forgetting = replay(new Lrfu(1e6, 1000, false), 3, stream);
        assertThat(forgetting.contains(7)).isFalse();
        assertThat(forgetting.contains(9)).isTrue();
    }

    @Test
    void withdrawingAnIdNoPolicyRanksSaysSo() {
        for (EvictionPolicy p : new EvictionPolicy[] {new Lru(), new Lrfu(1, 8, true), new HeavyHitter(1, 2)}) {
            assertThatThrownBy(() -> p.withdraw(new Entries(16), 10_000)).as(p.name())
                    .isInstanceOf(IllegalStateException.class).hasMessageContaining("entry 10000 is not ranked");
        }
    }

    @Test
    void lrfuEvictsANewPartialTailBlockFirst() {
        // Half-life 1 tick: recency dominates. 2 is used at clock 2 and 4 (CRF 1.25), tail 4 comes in at 7.
        // Plain LRFU evicts 2 (score log2 1.25 + 4 < 7); tail-first evicts 4, which no follow-up would reuse.
        // Tail-first is a tier, not a score offset: it holds when a tiny half-life makes the scores huge (1e-9: the
        // clock over the half-life is about 7e9).
        for (double halfLife : new double[] {1, 1e-9}) {
            for (boolean tailFirst : new boolean[] {false, true}) {
                PrefixBlockCache c = new PrefixBlockCache(4, new Lrfu(halfLife, 8, tailFirst));
                c.request(r(1, 2));
                c.request(r(1, 2));
                c.request(r(1, 3, 4));
                c.request(r(5));
                assertThat(c.contains(2)).as("halfLife=%s tailFirst=%s", halfLife, tailFirst).isEqualTo(tailFirst);
                assertThat(c.contains(4)).as("halfLife=%s tailFirst=%s", halfLife, tailFirst).isEqualTo(!tailFirst);
            }
        }
    }
}
