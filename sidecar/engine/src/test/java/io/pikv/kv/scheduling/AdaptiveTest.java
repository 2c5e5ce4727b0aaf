package io.pikv.kv.scheduling;

import org.junit.jupiter.api.Test;

import java.util.List;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.assertj.core.api.Assertions.within;

/** Ghost evaluation and switching with hysteresis, on a stream worked out by hand. */
class AdaptiveTest {
    // Capacity 2, single-block requests. LRU's ghost hits 2 in each window of 5 lookups; H2O's (least used goes)
    // hits 2 in the first window and 3 in the second, because it keeps block 1 through the one-off blocks:
    //   lookups 1-5:  1 1 1 2 3   LRU: miss hit hit miss miss(evicts 1)     H2O: same hits, 3 evicts 2
    //   lookups 6-10: 1 4 1 5 1   LRU: miss miss hit miss hit              H2O: hit miss hit miss hit
    private static final long[] STREAM = {1, 1, 1, 2, 3, 1, 4, 1, 5, 1};

    private static Adaptive adaptive(double margin) {
        return new Adaptive(2, List.of(new Lru(), new HeavyHitter(0, 0)), 5, margin);
    }

    private static PrefixBlockCache serve(Adaptive policy, long... blocks) {
        PrefixBlockCache cache = new PrefixBlockCache(2, policy);
        for (long b : blocks) {
            cache.access(b);
        }
        return cache;
    }

    /** In token retention nothing feeds the ghosts: each (sequence, layer)'s copy must not carry their tables. */
    @Test
    void ghostsAreMadeOnlyOnceABlockIsObserved() {
        TokenRetention retention = new TokenRetention(new Adaptive(4096, List.of(new Lru(), new HeavyHitter(0, 0)),
                4096, 0.01));
        for (long s = 0; s < 3; s++) {
            retention.appended(s, 0, 0);
            retention.appended(s, 0, 1);
        }
        assertThat(retention.evict(1, 0, 1)).containsExactly(0);
        for (long s = 0; s < 3; s++) {
            assertThat(retention.policyOf(s, 0)).isInstanceOfSatisfying(Adaptive.class,
                    a -> assertThat(a.ghostsMade()).isFalse());
        }
        Adaptive blocks = adaptive(0.1);
        assertThat(blocks.ghostsMade()).isFalse();
        serve(blocks, 1, 2);
        assertThat(blocks.ghostsMade()).isTrue();
        // A copy (what each retention track gets) starts without them, whatever the original has seen.
        assertThat(((Adaptive) blocks.fresh()).ghostsMade()).isFalse();
    }

    @Test
    void switchesWhenAGhostBeatsTheActivePolicyByTheMargin() {
        Adaptive policy = adaptive(0.1);
        PrefixBlockCache cache = serve(policy, java.util.Arrays.copyOf(STREAM, 5));
        // Window 1: a tie (2 of 5 each), no switch.
        assertThat(policy.active()).isEqualTo("lru");
        assertThat(policy.ghostHitRates()).containsExactly(java.util.Map.entry("lru", 0.4),
                java.util.Map.entry("h2o", 0.4));
        for (int i = 5; i < STREAM.length; i++) {
            cache.access(STREAM[i]);
        }
        // Window 2, smoothed: LRU 2/2 + 2 = 3, H2O 2/2 + 3 = 4 hits over 5/2 + 5 = 7.5 lookups: H2O is better by
        // 1/7.5 = 0.133 >= 0.1, so it takes over.
        assertThat(policy.ghostHitRates().get("lru")).isCloseTo(0.4, within(1e-12));
        assertThat(policy.ghostHitRates().get("h2o")).isCloseTo(4 / 7.5, within(1e-12));
        assertThat(policy.active()).isEqualTo("h2o");
        assertThat(policy.switches()).isEqualTo(1);
        // The live cache (1 and 5 resident) now evicts the least used: 6 and 7 replace 5 and 6, 1 stays. LRU
        // would have evicted 1 at 7.
        cache.access(6);
        cache.access(7);
        assertThat(cache.contains(1)).isTrue();
        assertThat(cache.contains(7)).isTrue();
    }

    @Test
    void midWindowRatesWeighTheClosedWindowsAsTheirEndWill() {
        Adaptive policy = adaptive(0.1);
        serve(policy, 1, 1, 1, 2, 3, 1, 4, 1); // window 1 (2 of 5 each), then 1 4 1 of window 2
        // LRU hit the second 1 (1 hit), H2O both (2); the closed window counts half, as when this one ends.
        assertThat(policy.ghostHitRates().get("lru")).isCloseTo((2 / 2.0 + 1) / (5 / 2.0 + 3), within(1e-12));
        assertThat(policy.ghostHitRates().get("h2o")).isCloseTo((2 / 2.0 + 2) / (5 / 2.0 + 3), within(1e-12));
    }

    @Test
    void aCacheOfSeparateLookupsAndStoresTellsItsGhostsAsBlockIndexDoes() {
        // Lookups are the evidence (a miss counted too, inserting nothing); a store is none.
        Adaptive policy = new Adaptive(2, List.of(new Lru(), new HeavyHitter(0, 0)), 100, 0.1);
        PrefixBlockCache cache = new PrefixBlockCache(2, policy);
        cache.store(1);
        assertThat(cache.lookup(7)).isFalse();
        assertThat(cache.lookup(7)).isFalse();
        assertThat(cache.lookup(1)).isTrue();
        assertThat(policy.ghostHitRates()).containsExactly(java.util.Map.entry("lru", 1 / 3.0),
                java.util.Map.entry("h2o", 1 / 3.0));
    }

    @Test
    void switchesBackToAnEarlierCandidateOnThisWindowsEvidence() {
        Adaptive policy = adaptive(0.1);
        PrefixBlockCache cache = serve(policy, STREAM);
        assertThat(policy.active()).isEqualTo("h2o");
        // Window 3: 8 9 8 9 10. LRU's ghost hits the second 8 and 9 (2); H2O's keeps block 1 and misses all five.
        // Smoothed: LRU 3/2 + 2 = 3.5, H2O 4/2 + 0 = 2 over 7.5/2 + 5 = 8.75 lookups: LRU better by 0.171 >= 0.1.
        // (Against H2O's evidence before this window, 4, LRU's 3.5 would not even look better.)
        for (long b : new long[] {8, 9, 8, 9, 10}) {
            cache.access(b);
        }
        assertThat(policy.ghostHitRates().get("lru")).isCloseTo(3.5 / 8.75, within(1e-12));
        assertThat(policy.ghostHitRates().get("h2o")).isCloseTo(2 / 8.75, within(1e-12));
        assertThat(policy.active()).isEqualTo("lru");
        assertThat(policy.switches()).isEqualTo(2);
    }

    @Test
    void staysWhenTheGainIsBelowTheMargin() {
        Adaptive policy = adaptive(0.2);
        PrefixBlockCache cache = serve(policy, STREAM);
        assertThat(policy.active()).isEqualTo("lru");
        assertThat(policy.switches()).isZero();
        cache.access(6);
        cache.access(7);
        assertThat(cache.contains(1)).isFalse();
    }

    @Test
    void rejectsDuplicateOrNestedCandidates() {
        assertThatThrownBy(() -> new Adaptive(2, List.of(new Lru(), new Lru()), 5, 0.1))
                .hasMessageContaining("'lru' appears twice");
        assertThatThrownBy(() -> new Adaptive(2, List.of(adaptive(0.1)), 5, 0.1))
                .hasMessageContaining("cannot be a candidate");
        assertThat(adaptive(0.1).fresh()).isInstanceOf(Adaptive.class);
    }
}
