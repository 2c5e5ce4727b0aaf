package io.pikv.kv.scheduling;

import io.pikv.kv.AttentionResult;
import io.pikv.kv.AttentionScope;
import io.pikv.kv.KvStore;
import io.pikv.kv.KvStoreConfig;
import io.pikv.kv.ModelShape;
import io.pikv.kv.StorageType;
import org.junit.jupiter.api.Test;

import java.util.Arrays;
import java.util.stream.IntStream;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/** Which positions each policy evicts, on handmade attention weights, and H2O through a real store. */
class TokenRetentionTest {
    private static final long SEQ = 7;
    // Exact binary fractions, so sums and ties are exact.
    private static final float[] WEIGHTS = {0.125f, 0.5f, 0.0625f, 0.25f, 0.125f, 0.0625f};

    private static TokenRetention sixTokens(EvictionPolicy policy) {
        TokenRetention r = new TokenRetention(policy);
        for (int p = 0; p < 6; p++) {
            r.appended(SEQ, 0, p);
        }
        r.attended(SEQ, 0, new int[] {0, 1, 2, 3, 4, 5}, WEIGHTS);
        return r;
    }

    @Test
    void streamingLlmKeepsSinksAndTheRecentWindow() {
        TokenRetention r = new TokenRetention(new StreamingLlm(2, 3));
        for (int p = 0; p < 10; p++) {
            r.appended(SEQ, 0, p);
        }
        // Sinks 0, 1 and the window 7, 8, 9 stay; the oldest of the rest go first.
        assertThat(r.evict(SEQ, 0, 4)).containsExactly(2, 3, 4, 5);
        assertThat(r.tracked(SEQ, 0)).isEqualTo(6);
        // Then the window shrinks, oldest first, and the sinks go last.
        assertThat(r.evict(SEQ, 0, 6)).containsExactly(6, 7, 8, 9, 0, 1);
    }

    @Test
    void heavyHitterKeepsTheMostAttendedOutsideTheWindow() {
        TokenRetention r = sixTokens(new HeavyHitter(0, 2));
        // Window: 4, 5. Mass: 0 → .125, 1 → .5, 2 → .0625, 3 → .25.
        assertThat(r.evict(SEQ, 0, 2)).containsExactly(2, 0);
        assertThat(r.evict(SEQ, 0, 3)).containsExactly(3, 1, 4);
        // Attention accumulates over steps: a second step makes 5 the heaviest, but it is in the window anyway.
        TokenRetention again = sixTokens(new HeavyHitter(0, 0));
        again.attended(SEQ, 0, new int[] {0, 2}, new float[] {0.5f, 0.0625f});
        assertThat(again.evict(SEQ, 0, 3)).containsExactly(5, 2, 4);
    }

    @Test
    void lrfuWithATinyHalfLifeStillEvictsByLastUse() {
        // Token 1 is used again by the step after the sixth append (clock 5). With a half-life so short that each use
        // counts alone, it ranks as a use at 5 (on a tie with token 5, the older append first); with a half-life of one
        // tick its earlier use still adds a sixteenth, so it outranks token 5. Below about 1e-303 ticks at / halfLife
        // overflowed to infinity for every token and the order fell to generation order (0, 1, 2, ...).
        for (double halfLife : new double[] {1.0, 1e-3, 1e-306, 1e-320, Double.MIN_VALUE}) {
            TokenRetention r = new TokenRetention(new Lrfu(halfLife, 0, false));
            for (int p = 0; p < 6; p++) {
                r.appended(SEQ, 0, p);
            }
            r.attended(SEQ, 0, new int[] {1}, new float[] {1f});
            for (int p = 6; p < 10; p++) {
                r.appended(SEQ, 0, p);
            }
            assertThat(r.evict(SEQ, 0, 10)).as("half-life %s", halfLife).containsExactly(halfLife == 1.0
                    ? new int[] {0, 2, 3, 4, 5, 1, 6, 7, 8, 9} : new int[] {0, 2, 3, 4, 1, 5, 6, 7, 8, 9});
        }
    }

    /**
     * A use dated before the one LRFU remembers (here: the clock went back with the newest token withdrawn, while the
     * others' last heavy step was dated at the old clock) adds to the score and never lowers it. Half-life one tick:
     * token 0, used at 9 and again at 8, holds a CRF of 1 + 2^-9 + 1/2 at 9; token 1, used at 1 and 9, 1 + 2^-8, so
     * token 1 goes first. Decaying the remembered CRF from 9 back to 8 instead ranked token 0 below token 1.
     */
    @Test
    void lrfuUseDatedBeforeTheRememberedOneNeverLowersTheScore() {
        TokenRetention r = new TokenRetention(new Lrfu(1, 0, false));
        for (int p = 0; p < 10; p++) {
            r.appended(SEQ, 0, p);
        }
        float[] tenth = new float[10];
        Arrays.fill(tenth, 0.1f);
        r.attended(SEQ, 0, IntStream.range(0, 10).toArray(), tenth); // every token heavy at clock 9
        r.withdrawn(SEQ, 0, new int[] {9}); // the clock goes back to 8
        float[] first = new float[9];
        first[0] = 1f;
        r.attended(SEQ, 0, IntStream.range(0, 9).toArray(), first); // token 0 used again, at 8
        assertThat(r.evict(SEQ, 0, 2)).containsExactly(1, 2);
    }

    /**
     * LRFU remembers an evicted token's uses (a position stored again after its eviction comes back with them), not a
     * withdrawn one's: a different token later stored at a withdrawn position starts anew.
     */
    /** LRFU with history over tokens 0 and 1 (two uses each) and 2 (six uses). */
    private static TokenRetention lrfuWithAHeavyToken2() {
        TokenRetention r = new TokenRetention(new Lrfu(1e9, 16, false));
        r.appended(SEQ, 0, 0);
        r.appended(SEQ, 0, 1);
        r.attended(SEQ, 0, new int[] {0, 1}, new float[] {.5f, .5f}); // 0 and 1: two uses each
        r.appended(SEQ, 0, 2);
        for (int i = 0; i < 5; i++) {
            r.attended(SEQ, 0, new int[] {2}, new float[] {1f}); // 2: six uses
        }
        return r;
    }

    @Test
    void lrfuKeepsHistoryOfEvictedTokensOnlyNotOfWithdrawnOnes() {
        for (boolean withdrawn : new boolean[] {true, false}) {
            TokenRetention r = lrfuWithAHeavyToken2();
            if (withdrawn) {
                r.withdrawn(SEQ, 0, new int[] {2});
            } else {
                r.forget(SEQ, 0, new int[] {2});
            }
            r.appended(SEQ, 0, 2);
            assertThat(r.evict(SEQ, 0, 1)).as(withdrawn ? "withdrawn" : "evicted").containsExactly(withdrawn ? 2 : 0);
        }
    }

    /** The same for a token evicted first and taken back afterwards (a withdrawal of an entry already evicted). */
    @Test
    void lrfuForgetsATokenTakenBackAfterItsEviction() {
        for (boolean withdrawn : new boolean[] {true, false}) {
            TokenRetention r = lrfuWithAHeavyToken2();
            r.forget(SEQ, 0, new int[] {2}); // evicted: its six uses remembered
            if (withdrawn) {
                r.withdrawn(SEQ, 0, new int[] {2}); // then taken back: forgotten
            }
            r.appended(SEQ, 0, 2);
            assertThat(r.evict(SEQ, 0, 1)).as(withdrawn ? "withdrawn" : "evicted").containsExactly(withdrawn ? 2 : 0);
        }
    }

    @Test
    void aSharedLrfuHistoryRemembersAtMostItsLimitOverEverySequenceAndLayer() {
        // A history of 5 for the whole retention: two sequences of two layers evict 4 tokens each (16 in all).
        TokenRetention r = new TokenRetention(Lrfu.sharedHistory(1024, 5, false));
        for (long seq : new long[] {1, 2}) {
            for (int layer = 0; layer < 2; layer++) {
                for (int p = 0; p < 6; p++) {
                    r.appended(seq, layer, p);
                }
                assertThat(r.evict(seq, layer, 4)).hasSize(4);
            }
        }
        // The first copy took 4 slots, the second the last one; the others remember nothing.
        assertThat(slots(r, 1, 0)).isEqualTo(4);
        assertThat(slots(r, 1, 1)).isEqualTo(1);
        assertThat(slots(r, 2, 0) + slots(r, 2, 1)).isZero();
        // A copy at its slots wraps over its own oldest: sequence 1, layer 1 keeps its one slot.
        r.appended(1, 1, 6);
        assertThat(r.evict(1, 1, 1)).hasSize(1);
        assertThat(slots(r, 1, 1)).isEqualTo(1);
        // Sequence 1 closed: its 5 slots go back, and sequence 2 remembers again, up to the limit.
        r.drop(1);
        for (int p = 6; p < 16; p++) {
            r.appended(2, 0, p);
        }
        assertThat(r.evict(2, 0, 8)).hasSize(8);
        assertThat(slots(r, 2, 0)).isEqualTo(5);
        // Each copy of a prototype without a shared history has its own limit, as before.
        TokenRetention own = new TokenRetention(new Lrfu(1024, 3, false));
        for (long seq : new long[] {1, 2}) {
            for (int p = 0; p < 6; p++) {
                own.appended(seq, 0, p);
            }
            own.evict(seq, 0, 5);
        }
        assertThat(slots(own, 1, 0)).isEqualTo(3);
        assertThat(slots(own, 2, 0)).isEqualTo(3);
    }

    private static int slots(TokenRetention r, long sequence, int layer) {
        EvictionPolicy p = r.policyOf(sequence, layer);
        return p == null ? 0 : ((Lrfu) p).historySlots();
    }

    @Test
    void forgettingTheNewestTokensGivesTheWindowBackToTheTokensNowNewest() {
        // Window 2: after 6 and 7 are appended and withdrawn, 4 and 5 are the newest again and protected; the least
        // attended of the rest (all 0.25; the oldest first) goes.
        TokenRetention r = new TokenRetention(new HeavyHitter(0, 2));
        for (int p = 0; p < 6; p++) {
            r.appended(SEQ, 0, p);
        }
        r.attended(SEQ, 0, new int[] {0, 1, 2, 3}, new float[] {.25f, .25f, .25f, .25f});
        r.appended(SEQ, 0, 6);
        r.appended(SEQ, 0, 7);
        r.forget(SEQ, 0, new int[] {6, 7});
        assertThat(r.evict(SEQ, 0, 1)).containsExactly(0);
        // LRU: positions stored again after a withdrawal keep generation order.
        TokenRetention lru = new TokenRetention(new Lru());
        for (int p = 0; p < 6; p++) {
            lru.appended(SEQ, 0, p);
        }
        lru.forget(SEQ, 0, new int[] {4, 5});
        lru.appended(SEQ, 0, 4);
        lru.appended(SEQ, 0, 5);
        assertThat(lru.evict(SEQ, 0, 6)).containsExactly(0, 1, 2, 3, 4, 5);
    }

    @Test
    void weightsThatAreNotFiniteOrNegativeAddNothing() {
        TokenRetention r = sixTokens(new HeavyHitter(0, 0));
        for (float bad : new float[] {Float.NaN, Float.POSITIVE_INFINITY, -0.25f}) {
            assertThatThrownBy(() -> r.attended(SEQ, 0, new int[] {2, 0}, new float[] {1f, bad}))
                    .hasMessage("the weight of position 0 is " + bad + ": attention weights are finite and >= 0");
        }
        // Position 2 got nothing of the refused calls either: the order is that of the first step.
        assertThat(r.evict(SEQ, 0, 6)).containsExactly(2, 5, 0, 4, 3, 1);
    }

    @Test
    void utilityAddsAttentionRecencyAndFrequency() {
        // u = mass + position/8: 0 → .125, 1 → .625, 2 → .3125, 3 → .625, 4 → .625, 5 → .6875; the ties of
        // 1, 3, 4 go oldest first.
        assertThat(sixTokens(new Utility(1, 1, 0, 8)).evict(SEQ, 0, 5)).containsExactly(0, 2, 1, 3, 4);
        // Frequency alone: a step counts for tokens given at least the uniform share 1/6, here 1 (.5) and 3 (.25).
        assertThat(sixTokens(new Utility(0, 0, 1, 1)).evict(SEQ, 0, 4)).containsExactly(0, 2, 4, 5);
        // Exactly the uniform share in float (1f/25 = 0.0399999991 < 1/25) counts as a use: the 25 attended tokens
        // have two uses, the one appended after them one, and it goes first.
        TokenRetention uniform = new TokenRetention(new Utility(0, 0, 1, 1));
        for (int p = 0; p < 25; p++) {
            uniform.appended(SEQ, 0, p);
        }
        float[] share = new float[25];
        Arrays.fill(share, 1f / 25);
        uniform.attended(SEQ, 0, IntStream.range(0, 25).toArray(), share);
        uniform.appended(SEQ, 0, 25);
        assertThat(uniform.evict(SEQ, 0, 1)).containsExactly(25);
    }

    @Test
    void lruEvictsInGenerationOrder() {
        assertThat(sixTokens(new Lru()).evict(SEQ, 0, 3)).containsExactly(0, 1, 2);
    }

    @Test
    void tracksEachLayerOnItsOwnAndForgets() {
        TokenRetention r = new TokenRetention(new Lru());
        r.appended(SEQ, 0, 0);
        r.appended(SEQ, 0, 1);
        r.appended(SEQ, 1, 0);
        r.appended(SEQ + 1, 0, 0);
        r.forget(SEQ, 0, new int[] {0, 5});
        assertThat(r.tracked(SEQ, 0)).isEqualTo(1);
        assertThat(r.evict(SEQ, 0, 3)).containsExactly(1);
        r.drop(SEQ);
        assertThat(r.tracked(SEQ, 1)).isZero();
        assertThat(r.tracked(SEQ + 1, 0)).isEqualTo(1);
        // Reported again (its first entry left the store unseen): tracked once, anew.
        r.appended(SEQ + 1, 0, 0);
        assertThat(r.tracked(SEQ + 1, 0)).isEqualTo(1);
    }

    @Test
    void heavyHitterThroughTheStoreKeepsTheHeavyTokens() {
        // One shard, one bucket, fp32, 16-token pages and a budget of two pages. Keys are zero except at positions
        // 12 and 20, which align with the query (logit 4 against 0), so every step gives them most of the weight.
        ModelShape shape = new ModelShape(1, 4, 2, 16, 4, 2);
        int[] heavy = {12, 20};
        assertThat(storeRun(shape, new HeavyHitter(0, 8), heavy))
                // Appending 32 needs a page. Window 24..31 stays; outside it the non-heavy tokens have less mass
                // the newer they are (fewer steps attended them), so the 16 newest non-heavy ones go, which empties
                // a page: 23..13, 11..6.
                .containsExactly(IntStream.concat(IntStream.of(0, 1, 2, 3, 4, 5, 12, 20), IntStream.rangeClosed(24, 32))
                        .toArray());
        // LRU (generation order) frees the page with the 16 oldest tokens, heavy 12 among them.
        assertThat(storeRun(shape, new Lru(), heavy)).containsExactly(IntStream.rangeClosed(16, 32).toArray());
    }

    private static int[] storeRun(ModelShape shape, EvictionPolicy policy, int[] heavy) {
        TokenRetention retention = new TokenRetention(policy);
        KvStoreConfig config = KvStoreConfig.builder(shape).storageType(StorageType.FP32).pageTokens(16).shards(1)
                .buckets(1).threads(1).budgetBytes(2L * 2 * shape.kvWidth() * 16 * 4)
                .eviction(retention.evictionHook()).build();
        float[] q = new float[shape.queryWidth()];
        Arrays.fill(q, 1f);
        float[] zero = new float[shape.kvWidth()];
        float[] aligned = new float[shape.kvWidth()];
        Arrays.fill(aligned, 1f);
        try (KvStore store = new KvStore(config)) {
            long seq = store.createSequence();
            for (int p = 0; p <= 32; p++) {
                int next = p;
                boolean isHeavy = Arrays.stream(heavy).anyMatch(h -> h == next);
                int position = store.append(seq, 0, 0, isHeavy ? aligned : zero, zero);
                assertThat(position).isEqualTo(p);
                retention.appended(seq, 0, position);
                AttentionResult result = store.attend(seq, 0, q, AttentionScope.all(), true);
                retention.attended(seq, 0, result);
            }
            assertThat(retention.tracked(seq, 0)).isEqualTo(store.resident(seq, 0));
            int[] resident = store.attend(seq, 0, q, AttentionScope.all(), true).positions();
            Arrays.sort(resident);
            // Evicted by the store's caller, not the hook: no longer tracked either.
            int tracked = retention.tracked(seq, 0);
            assertThat(store.evict(seq, 0, new int[] {resident[resident.length - 1]})).isEqualTo(1);
            assertThat(retention.tracked(seq, 0)).isEqualTo(tracked - 1).isEqualTo(store.resident(seq, 0));
            // Closed through the store: the hook is told and tracks none of it (else its entries, held by no shard,
            // would be offered as victims at every page another sequence needs).
            store.closeSequence(seq);
            assertThat(retention.tracked(seq, 0)).isZero();
            return resident;
        }
    }
}
