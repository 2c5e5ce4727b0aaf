package io.pikv.kv.routing;

import io.pikv.kv.ExpertShardMap;
import org.junit.jupiter.api.Test;

import java.util.Random;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.assertj.core.data.Offset.offset;

class RoutersTest {
    private static final double NONE = Double.NEGATIVE_INFINITY;

    private static double[] ln(double... p) {
        double[] l = new double[p.length];
        for (int i = 0; i < p.length; i++) {
            l[i] = p[i] == 0 ? NONE : Math.log(p[i]);
        }
        return l;
    }

    /** Expert e on shard e: every expert opens its own shard. */
    private static ExpertShardMap ownShards(int experts) {
        return ExpertShardMap.roundRobin(experts, experts);
    }

    /** The null expert's ln ρ holds beside logits of 1e17: an expert as strong as the top one is kept. */
    @Test
    void theNullExpertComparesByTheGapToTheTopLogitAtAnyScale() {
        ExpertShardMap map = ExpertShardMap.roundRobin(2, 2);
        RoutingDecision d = new CacheAwareRouter(2, 2, 0.1, 1, 0.15).route(new double[] {1e17, 1e17}, map);
        assertThat(d.experts()).containsExactlyInAnyOrder(0, 1);
        assertThat(d.massMovedFraction()).isZero();
    }

    @Test
    void hashRouterIsThePlainTopKWithTiesToTheLowerId() {
        ExpertShardMap map = new ExpertShardMap(7, 3, new int[] {0, 1, 2, 0, 1, 2});
        RoutingDecision d = new HashRouter(3).route(new double[] {1, 3, 2, 3, NONE, 0}, map);
        assertThat(d.experts()).containsExactly(1, 3, 2);
        assertThat(d.plainTopK()).containsExactly(1, 3, 2);
        assertThat(d.shards()).isEqualTo(3);
        assertThat(d.epoch()).isEqualTo(7);
        assertThat(d.massMoved()).isZero();
        assertThat(d.massMovedFraction()).isZero();
        double z = Math.exp(1) + 2 * Math.exp(3) + Math.exp(2) + Math.exp(0);
        assertThat(d.weights()).containsExactly(new double[] {Math.exp(3) / z, Math.exp(3) / z, Math.exp(2) / z},
                offset(1e-15));
        // Experts 0 and 3 share shard 0.
        assertThat(new HashRouter(2).route(new double[] {5, 0, 0, 4, NONE, NONE}, map).shards()).isEqualTo(1);
    }

    @Test
    void aWeakerExpertNeverKeepsASlotOnAShardATopKExpertOfItCouldTake() {
        // Experts 1 and 2 share shard 1; expert 1 (top-2) has missed nine times, expert 2 (outside it) never. The
        // penalty made expert 2 win the second slot, yet the token reaches shard 1 either way: the slot goes to 1.
        CacheAwareRouter router = new CacheAwareRouter(3, 2, 1.0, Integer.MAX_VALUE, 0.0);
        for (int i = 0; i < 9; i++) {
            router.recordMiss(1);
        }
        ExpertShardMap map = new ExpertShardMap(0, 2, new int[] {0, 1, 1});
        RoutingDecision d = router.route(ln(0.5, 0.3, 0.2), map);
        assertThat(d.experts()).containsExactly(0, 1);
        assertThat(d.shards()).isEqualTo(2);
        assertThat(d.massMoved()).isZero();
        // The same when expert 2's gate weight ties expert 1's exactly (common with bf16 or fp16 logits).
        RoutingDecision tie = router.route(ln(0.5, 0.25, 0.25), map);
        assertThat(tie.experts()).containsExactly(0, 1);
        assertThat(tie.massMoved()).isZero();
        // With no null expert nothing is dropped, however large λ is (λ·ln(1 + misses) past the double range).
        CacheAwareRouter huge = new CacheAwareRouter(2, 2, 1e308, 1_000_000, 0.0);
        for (int i = 0; i < 10; i++) {
            huge.recordMiss(1);
        }
        RoutingDecision all = huge.route(new double[] {0, -0.1}, new ExpertShardMap(0, 2, new int[] {0, 1}));
        assertThat(all.experts()).containsExactly(0, 1);
        assertThat(all.massMoved()).isZero();
        // A top-k expert that lost its slot before its shard was reached takes back the slot of a weaker expert
        // outside the top-k once another pick reaches that shard: 0, 1, 2 on shards 0, 2, 2 (2 shards) rather than
        // 0, 3, 1 on shards 0, 1, 2.
        CacheAwareRouter late = new CacheAwareRouter(4, 3, 1.0, Integer.MAX_VALUE, 0.0);
        late.recordMiss(1);
        for (int i = 0; i < 9; i++) {
            late.recordMiss(2);
        }
        RoutingDecision d3 = late.route(ln(0.4, 0.25, 0.2, 0.15), new ExpertShardMap(0, 3, new int[] {0, 2, 2, 1}));
        assertThat(d3.experts()).containsExactly(0, 1, 2); // 2 after 1, which reached shard 2 first
        assertThat(d3.shards()).isEqualTo(2);
        assertThat(d3.massMoved()).isZero();
        // A slot given back on a shard another pick reached comes last, so that the step's miss for that shard goes
        // to the pick that opened it: greedy 0, 1, 2 on shards 0, 1, 2 (top-k expert 3 on shard 2 has missed 100
        // times); 3 takes 1's slot back and the order is 0, 2, 3 — not 0, 3, 2, which charged shard 2's miss to 3.
        CacheAwareRouter order = new CacheAwareRouter(5, 3, 1.0, Integer.MAX_VALUE, 0.0);
        for (int i = 0; i < 100; i++) {
            order.recordMiss(3);
        }
        order.recordMiss(2);
        RoutingDecision d7 = order.route(new double[] {3, 1.5, 1.8, 2.0, 1.0},
                new ExpertShardMap(0, 4, new int[] {0, 1, 2, 2, 3}));
        assertThat(d7.experts()).containsExactly(0, 2, 3);
        assertThat(d7.shards()).isEqualTo(2);
        assertThat(d7.massMoved()).isZero();
        // A swap never leaves a pick alone on a shard it came into free. Greedy gives 0, 4, 5, 6 on shards 0, 1, 1,
        // 2; 1 for 4 would leave 5 (penalised far below the null expert) alone on shard 1, so 4 stays; 1 for 6, on
        // shard 2 itself, keeps the same shards with more mass.
        CacheAwareRouter keep = new CacheAwareRouter(7, 4, 1.0, Integer.MAX_VALUE, 0.3);
        for (int i = 0; i < 100; i++) {
            keep.recordMiss(1);
            keep.recordMiss(2);
            keep.recordMiss(3);
            keep.recordMiss(5);
        }
        RoutingDecision d4 = keep.route(ln(.25, .15, .14, .13, .12, .11, .10),
                new ExpertShardMap(0, 4, new int[] {0, 2, 3, 3, 1, 1, 2}));
        assertThat(d4.experts()).containsExactly(0, 4, 5, 1);
        assertThat(d4.shards()).isEqualTo(3);
        // A pick that shares the expert's shard from before keeps it reached: 0, 3, 1 on shards 0, 0, 1 (3 is free on
        // shard 0, 1 is penalised but beats the null expert); top-k expert 2 on shard 1 takes 3's slot back: the same
        // 2 shards, the plain top-k's mass.
        CacheAwareRouter shared = new CacheAwareRouter(4, 3, 1.0, 1_000_000, 0.0);
        for (int i = 0; i < 4; i++) {
            shared.recordMiss(1);
            shared.recordMiss(2);
        }
        RoutingDecision d5 = shared.route(new double[] {3, 2, 1.5, 1}, new ExpertShardMap(0, 2, new int[] {0, 1, 1, 0}));
        assertThat(d5.experts()).containsExactlyInAnyOrder(0, 1, 2);
        assertThat(d5.shards()).isEqualTo(2);
        assertThat(d5.massMoved()).isZero();
        // Equal logits: an expert outside the top-k on a shard already reached before one on a new shard.
        CacheAwareRouter ties = new CacheAwareRouter(60, 4, 0.1, 512, 0.15);
        for (int e = 1; e < 4; e++) {
            ties.recordMiss(e);
        }
        RoutingDecision d6 = ties.route(new double[60], ExpertShardMap.roundRobin(60, 16));
        assertThat(d6.shards()).isEqualTo(1);
        // Random gates: no chosen expert outside the plain top-k could give its slot to a stronger unchosen top-k
        // expert on its own shard, or on a shard the other picks reach when no other pick shares its shard; and no
        // pick after the first is alone on its shard unless it beat the null expert with its penalty.
        Random rnd = new Random(5);
        ExpertShardMap four = ExpertShardMap.roundRobin(16, 4);
        CacheAwareRouter r = new CacheAwareRouter(16, 4, 0.5, 64, 0.1);
        for (int t = 0; t < 5000; t++) {
            double[] logits = new double[16];
            for (int e = 0; e < 16; e++) {
                logits[e] = rnd.nextGaussian() * 2;
            }
            if (rnd.nextInt(3) == 0) {
                r.recordMiss(rnd.nextInt(16));
            }
            RoutingDecision cd = r.route(logits, four);
            java.util.Set<Integer> chosen = new java.util.HashSet<>();
            for (int e : cd.experts()) {
                chosen.add(e);
            }
            java.util.Set<Integer> plain = new java.util.HashSet<>();
            for (int e : cd.plainTopK()) {
                plain.add(e);
            }
            int[] picks = cd.experts();
            for (int i = 0; i < picks.length; i++) {
                int e = picks[i];
                boolean eShared = false;
                for (int j = 0; j < picks.length; j++) {
                    eShared |= j != i && four.shardOf(picks[j]) == four.shardOf(e);
                }
                for (int p : cd.plainTopK()) {
                    boolean reached = false;
                    for (int j = 0; j < picks.length; j++) {
                        reached |= j != i && four.shardOf(picks[j]) == four.shardOf(p);
                    }
                    boolean couldSwap = four.shardOf(p) == four.shardOf(e) || (reached && !eShared);
                    assertThat(plain.contains(e) || chosen.contains(p) || !couldSwap || !(logits[p] > logits[e]))
                            .as("token %d: %d chosen over top-k %d", t, e, p).isTrue();
                }
            }
        }
    }

    @Test
    void hashRouterChoosesOnlyRoutableExperts() {
        RoutingDecision d = new HashRouter(4).route(ln(0, 0.7, 0, 0.3), ownShards(4));
        assertThat(d.experts()).containsExactly(1, 3);
        assertThat(d.weights()).containsExactly(new double[] {0.7, 0.3}, offset(1e-15));
    }

    @Test
    void withoutPenaltyOrNullExpertTheCacheAwareRouterIsThePlainTopK() {
        Random rnd = new Random(11);
        ExpertShardMap map = ExpertShardMap.roundRobin(12, 4);
        CacheAwareRouter router = new CacheAwareRouter(12, 3, 0.0, 8, 0.0);
        HashRouter hash = new HashRouter(3);
        for (int i = 0; i < 200; i++) {
            double[] logits = new double[12];
            for (int e = 0; e < 12; e++) {
                logits[e] = rnd.nextInt(5) == 0 ? NONE : Math.round(rnd.nextGaussian() * 4) / 2.0;
            }
            logits[rnd.nextInt(12)] = 1;
            router.recordMiss(rnd.nextInt(12));
            RoutingDecision plain = hash.route(logits, map);
            RoutingDecision d = router.route(logits, map);
            assertThat(d.experts()).containsExactly(plain.experts());
            assertThat(d.massMoved()).isZero();
        }
    }

    @Test
    void missCountsDecayByOneOverEPerWindow() {
        CacheAwareRouter router = new CacheAwareRouter(3, 2, 1.0, 4, 0.0);
        router.recordMiss(2);
        router.recordMiss(2);
        assertThat(router.missCount(2)).isEqualTo(2.0);
        for (int i = 0; i < 4; i++) {
            router.route(ln(0.5, 0.3, 0.2), ownShards(3));
        }
        assertThat(router.missCount(2)).isCloseTo(2 / Math.E, offset(1e-15));
        assertThat(router.missCount(0)).isZero();
        // A count that has decayed below 1e-30 (4 × 70 tokens here: 2·e^-70 < 1e-30) is none at all, not a subnormal.
        for (int i = 0; i < 4 * 70; i++) {
            router.route(ln(0.5, 0.3, 0.2), ownShards(3));
        }
        assertThat(router.missCount(2)).isEqualTo(0.0);
    }

    @Test
    void decidingChangesNothingUntilTheTokenIsRouted() {
        // Two routers fed the same tokens, one through route, one through decide (asked twice) then routed: the same
        // decisions and the same counts, and a decision never followed by routed leaves the counts as they were.
        Random rnd = new Random(17);
        ExpertShardMap map = new ExpertShardMap(0, 3, new int[] {0, 1, 2, 0, 1, 2, 0, 1});
        CacheAwareRouter viaRoute = new CacheAwareRouter(8, 3, 0.5, 5, 0.3);
        CacheAwareRouter viaDecide = new CacheAwareRouter(8, 3, 0.5, 5, 0.3);
        for (int t = 0; t < 200; t++) {
            double[] logits = new double[8];
            for (int e = 0; e < 8; e++) {
                logits[e] = rnd.nextGaussian();
            }
            RoutingDecision a = viaRoute.route(logits, map);
            RoutingDecision b = viaDecide.decide(logits, map);
            assertThat(viaDecide.decide(logits, map).experts()).containsExactly(b.experts());
            if (t % 3 == 2) { // a token decided and then not routed (its step refused): nothing changes
                RoutingDecision again = viaDecide.decide(logits, map);
                assertThat(again.experts()).containsExactly(b.experts());
            }
            viaDecide.routed();
            assertThat(b.experts()).containsExactly(a.experts());
            assertThat(b.massMoved()).isEqualTo(a.massMoved());
            for (int i = 1; i < a.experts().length; i++) {
                viaRoute.recordMiss(a.experts()[i]);
                viaDecide.recordMiss(a.experts()[i]);
            }
            for (int e = 0; e < 8; e++) {
                assertThat(viaDecide.missCount(e)).isEqualTo(viaRoute.missCount(e));
            }
        }
        double[] counts = new double[8];
        for (int e = 0; e < 8; e++) {
            counts[e] = viaDecide.missCount(e);
        }
        viaDecide.decide(new double[] {1, 0, 0, 0, 0, 0, 0, 0}, map);
        for (int e = 0; e < 8; e++) {
            assertThat(viaDecide.missCount(e)).isEqualTo(counts[e]);
        }
    }

    @Test
    void nullExpertDropsACheapExpertOnAColdShardAndReportsTheMassMoved() {
        // Null expert at 0.2 × 0.5 = 0.1: expert 3 (0.05) would open a shard of its own, so it is dropped.
        CacheAwareRouter router = new CacheAwareRouter(4, 4, 0.0, 100, 0.2);
        RoutingDecision d = router.route(ln(0.5, 0.3, 0.15, 0.05), ownShards(4));
        assertThat(d.experts()).containsExactly(0, 1, 2);
        assertThat(d.plainTopK()).containsExactly(0, 1, 2, 3);
        assertThat(d.massMoved()).isCloseTo(0.05, offset(1e-15));
        assertThat(d.massMovedFraction()).isCloseTo(0.05, offset(1e-15));
        assertThat(d.shards()).isEqualTo(3);
        // On expert 0's shard it costs nothing, so it stays.
        ExpertShardMap shared = new ExpertShardMap(0, 4, new int[] {0, 1, 2, 0});
        RoutingDecision kept = router.route(ln(0.5, 0.3, 0.15, 0.05), shared);
        assertThat(kept.experts()).containsExactly(0, 1, 2, 3);
        assertThat(kept.massMoved()).isZero();
        assertThat(kept.shards()).isEqualTo(3);
    }

    @Test
    void aSlotTheNullExpertWinsStaysEmptyWithTheFullGate() {
        // The whole gate is known (a gateway passes every logit): top-2 of three is {0, 1}; null expert at
        // 0.2 × 0.8 = 0.16. Expert 1 (0.15) would open shard 1: dropped. Expert 2 sits on expert 0's shard but scores
        // 0.05, below the null expert, and is outside the top-k: it does not take the slot.
        ExpertShardMap map = new ExpertShardMap(0, 2, new int[] {0, 1, 0});
        RoutingDecision d = new CacheAwareRouter(3, 2, 0.0, 100, 0.2).route(ln(0.80, 0.15, 0.05), map);
        assertThat(d.experts()).containsExactly(0);
        assertThat(d.massMoved()).isCloseTo(0.15, offset(1e-15));
        // One above the null expert does take it: 0.17 on expert 0's shard replaces expert 1 (0.18, cold shard, which
        // the null expert at 0.2 × 0.65 = 0.13 does not beat, but a miss penalty does).
        CacheAwareRouter penalised = new CacheAwareRouter(3, 2, 1.0, Integer.MAX_VALUE, 0.2);
        penalised.recordMiss(1);
        RoutingDecision r = penalised.route(ln(0.65, 0.18, 0.17), map);
        assertThat(r.experts()).containsExactly(0, 2);
        assertThat(r.shards()).isEqualTo(1);
    }

    @Test
    void missPenaltyPushesAnExpertBelowTheNullExpertOnlyWhenItsShardIsCold() {
        CacheAwareRouter router = new CacheAwareRouter(4, 4, 1.0, Integer.MAX_VALUE, 0.2);
        for (int i = 0; i < 9; i++) {
            router.recordMiss(2);
        }
        // Gate probabilities 0.5, 0.3, 0.15, 0.05; null expert at 0.1. Expert 2 scores as 0.15 / (1 + 9) = 0.015:
        // dropped, and so is expert 3 (0.05, no misses but below the null expert).
        RoutingDecision d = router.route(ln(0.4, 0.24, 0.12, 0.04), ownShards(4));
        assertThat(d.experts()).containsExactly(0, 1);
        assertThat(d.massMovedFraction()).isCloseTo(0.2, offset(1e-12));
        assertThat(d.massMoved()).isCloseTo(0.2, offset(1e-12));
        // Expert 2 next to expert 1: no shard to save, so the penalty does not apply.
        ExpertShardMap nextToOne = new ExpertShardMap(0, 4, new int[] {0, 1, 1, 3});
        RoutingDecision warm = router.route(ln(0.4, 0.24, 0.12, 0.04), nextToOne);
        assertThat(warm.experts()).containsExactly(0, 1, 2);
        assertThat(warm.shards()).isEqualTo(2);
    }

    @Test
    void aPenalisedExpertIsReplacedByOneOnAWarmShard() {
        // Replacement only (no null expert): the top-2 of four, expert 1 missing a lot and on a cold shard.
        CacheAwareRouter router = new CacheAwareRouter(4, 2, 1.0, Integer.MAX_VALUE, 0.0);
        for (int i = 0; i < 9; i++) {
            router.recordMiss(1);
        }
        ExpertShardMap map = new ExpertShardMap(3, 2, new int[] {0, 1, 0, 1});
        RoutingDecision d = router.route(ln(0.4, 0.3, 0.2, 0.1), map);
        assertThat(d.plainTopK()).containsExactly(0, 1);
        assertThat(d.experts()).containsExactly(0, 2);
        assertThat(d.shards()).isEqualTo(1);
        assertThat(d.massMoved()).isCloseTo(0.3, offset(1e-12));
        assertThat(d.massMovedFraction()).isCloseTo(0.3 / 0.7, offset(1e-12));
        assertThat(d.epoch()).isEqualTo(3);
    }

    @Test
    void theFirstExpertIsNeverDropped() {
        CacheAwareRouter router = new CacheAwareRouter(2, 2, 5.0, Integer.MAX_VALUE, 0.9);
        for (int i = 0; i < 1000; i++) {
            router.recordMiss(0);
        }
        assertThat(router.route(ln(0.6, 0.4), ownShards(2)).experts()).containsExactly(0);
    }

    @Test
    void badInputIsRejectedWithItsReason() {
        ExpertShardMap map = ownShards(3);
        assertThatThrownBy(() -> new HashRouter(0)).hasMessage("k must be >= 1, got 0");
        assertThatThrownBy(() -> new HashRouter(2).route(new double[] {1, 2}, map))
                .hasMessage("logits has 2 entries but the shard map names 3 experts");
        assertThatThrownBy(() -> new HashRouter(2).route(new double[] {1, Double.NaN, 0}, map))
                .hasMessage("logit of expert 1 is NaN; logits must be finite or -Infinity (not routable)");
        assertThatThrownBy(() -> new HashRouter(2).route(new double[] {NONE, NONE, NONE}, map))
                .hasMessage("no expert has a finite logit");
        assertThatThrownBy(() -> new CacheAwareRouter(3, 2, -1, 4, 0)).hasMessageContaining("lambda must be");
        assertThatThrownBy(() -> new CacheAwareRouter(3, 2, 0, 0, 0)).hasMessage("window must be >= 1 token, got 0");
        assertThatThrownBy(() -> new CacheAwareRouter(3, 2, 0, 4, 1.0))
                .hasMessage("nullRatio must be in [0, 1), got 1.0");
        assertThatThrownBy(() -> new CacheAwareRouter(3, 2, 0, 4, 0).recordMiss(3))
                .hasMessage("expert 3 is outside [0, 3)");
        assertThatThrownBy(() -> new CacheAwareRouter(4, 2, 0, 4, 0).route(new double[] {1, 2, 3}, map))
                .hasMessage("the shard map names 3 experts but this router counts misses for 4");
    }
}
