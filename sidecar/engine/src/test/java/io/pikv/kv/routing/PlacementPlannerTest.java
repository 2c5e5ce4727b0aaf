package io.pikv.kv.routing;

import io.pikv.kv.ExpertShardMap;
import org.junit.jupiter.api.Test;

import java.util.Random;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.assertj.core.data.Offset.offset;

class PlacementPlannerTest {

    private static double[][] co(int experts, double[]... pairs) {
        double[][] c = new double[experts][experts];
        for (double[] p : pairs) {
            c[(int) p[0]][(int) p[1]] = p[2];
            c[(int) p[1]][(int) p[0]] = p[2];
        }
        return c;
    }

    @Test
    void coLocatesExpertsThatFireTogether() {
        // 0 and 1 fire together, 2 and 3 fire together; round-robin splits both pairs. The optimum keeps each pair on
        // one shard (one swap, two experts moved): only the (0, 2) count of 1 of 21 is still cut.
        double[][] c = co(4, new double[] {0, 1, 10}, new double[] {2, 3, 10}, new double[] {0, 2, 1});
        ExpertShardMap current = new ExpertShardMap(5, 2, new int[] {0, 1, 0, 1});
        PlacementPlan plan = new PlacementPlanner(new PlacementPlanner.Config(0.1, 0.5, 0.01))
                .plan(new double[] {1, 1, 1, 1}, c, current);
        assertThat(plan.map()).isEqualTo(new ExpertShardMap(6, 2, new int[] {1, 1, 0, 0}));
        assertThat(plan.moves()).containsExactly(new PlacementPlan.Move(0, 0, 1), new PlacementPlan.Move(3, 1, 0));
        assertThat(plan.maxOverMeanBefore()).isEqualTo(1.0);
        assertThat(plan.maxOverMean()).isEqualTo(1.0);
        assertThat(plan.cutBefore()).isCloseTo(20 / 21.0, offset(1e-15));
        assertThat(plan.cut()).isCloseTo(1 / 21.0, offset(1e-15));
        assertThat(plan.gain()).isCloseTo(19 / 21.0, offset(1e-15));
        assertThat(plan.movedFraction()).isEqualTo(0.5);
        assertThat(plan.reason()).isEmpty();
    }

    /** Counts near the largest double (their sum over pairs still finite) co-locate as small ones do. */
    @Test
    void coActivationNearTheLargestDoubleStillCoLocates() {
        double[][] c = co(4, new double[] {0, 1, 1e308});
        PlacementPlan plan = new PlacementPlanner(new PlacementPlanner.Config(0.1, 0.5, 0.01))
                .plan(new double[] {1, 1, 1, 1}, c, new ExpertShardMap(0, 2, new int[] {0, 1, 0, 1}));
        assertThat(plan.changed()).as(plan.reason()).isTrue();
        assertThat(plan.cut()).isZero();
        assertThat(plan.map().shardOf(0)).isEqualTo(plan.map().shardOf(1));
    }

    /** Loads so small that their mean underflows: max/mean stays the finite share it is. */
    @Test
    void tinyLoadsGiveAFiniteMaxOverMean() {
        assertThat(PlacementPlanner.maxOverMean(new double[] {Double.MIN_VALUE, 0, 0, 0}, new int[] {0, 1, 2, 3}, 4))
                .isEqualTo(4.0);
    }

    @Test
    void balancesLoadWithTheSwapThatLevelsThePair() {
        // Shards hold 7 and 3; swapping 4 for 2 levels them at 5 and 5.
        PlacementPlan plan = new PlacementPlanner(new PlacementPlanner.Config(0.0, 1.0, 0.0))
                .plan(new double[] {4, 3, 2, 1}, new double[4][4], new ExpertShardMap(0, 2, new int[] {0, 0, 1, 1}));
        assertThat(plan.map().assignment()).containsExactly(1, 0, 0, 1);
        assertThat(plan.moves()).containsExactly(new PlacementPlan.Move(0, 0, 1), new PlacementPlan.Move(2, 1, 0));
        assertThat(plan.maxOverMeanBefore()).isCloseTo(1.4, offset(1e-15));
        assertThat(plan.maxOverMean()).isEqualTo(1.0);
        assertThat(plan.gain()).isCloseTo(0.4, offset(1e-15));
    }

    @Test
    void coLocationThatCostsMoreBalanceThanItSavesInCutIsNotKept() {
        // 2 shards, loads 3 1 6 5 on 0 0 0 1: balance moves expert 0 over (max/mean 1.333 -> 1.067, cut 0.5 -> 0.714,
        // gain 0.052); co-location would then swap 0 and 1 (cut 0.643, max/mean 1.2), a net loss of 0.062.
        double[][] co = new double[4][4];
        co[0][1] = co[1][0] = 5;
        co[0][3] = co[3][0] = 2;
        co[1][2] = co[2][1] = 2;
        co[1][3] = co[3][1] = 5;
        PlacementPlan plan = new PlacementPlanner(new PlacementPlanner.Config(0.2, 0.25, 0.01))
                .plan(new double[] {3, 1, 6, 5}, co, new ExpertShardMap(0, 2, new int[] {0, 0, 0, 1}));
        assertThat(plan.changed()).isTrue();
        assertThat(plan.map().assignment()).containsExactly(1, 0, 0, 1);
        assertThat(plan.maxOverMean()).isCloseTo(16.0 / 15, offset(1e-12));
        assertThat(plan.cut()).isCloseTo(10.0 / 14, offset(1e-12));
        assertThat(plan.gain()).isCloseTo((4.0 / 3 - 1 + 0.5) - (16.0 / 15 - 1 + 10.0 / 14), offset(1e-12));
    }

    @Test
    void aMapAtTheLastEpochIsKeptWithItsReason() {
        PlacementPlan plan = new PlacementPlanner(new PlacementPlanner.Config(0.0, 1.0, 0.0))
                .plan(new double[] {4, 3, 2, 1}, new double[4][4],
                        new ExpertShardMap(Long.MAX_VALUE, 2, new int[] {0, 0, 1, 1}));
        assertThat(plan.changed()).isFalse();
        assertThat(plan.map().epoch()).isEqualTo(Long.MAX_VALUE);
        assertThat(plan.reason()).contains("epoch is at its maximum");
    }

    /**
     * The cap is the floor of the fraction as written: 30 co-firing pairs, each split by round-robin over 2 shards, so
     * every move (two per swap) helps. 0.1 of 60 allows 6, 0.09999999999 of 60 only 5, 0.29 of 100 (28.999999999999996
     * as a double product) 29.
     */
    @Test
    void theMoveCapIsTheFloorOfTheFractionAsWritten() {
        for (double[] fractionAndCap : new double[][] {{0.1, 6}, {0.09999999999, 5}, {0.29, 29}}) {
            int experts = fractionAndCap[0] == 0.29 ? 100 : 60;
            double[][] pairs = new double[experts / 2][];
            for (int i = 0; i < experts / 2; i++) {
                pairs[i] = new double[] {2 * i, 2 * i + 1, 10};
            }
            double[] load = new double[experts];
            java.util.Arrays.fill(load, 1);
            PlacementPlan plan = new PlacementPlanner(new PlacementPlanner.Config(0.1, fractionAndCap[0], 0))
                    .plan(load, co(experts, pairs), ExpertShardMap.roundRobin(experts, 2));
            assertThat(plan.moves()).as("fraction %s", fractionAndCap[0]).hasSize((int) fractionAndCap[1]);
        }
    }

    @Test
    void theMoveCapHoldsEvenWhenMoreMovesWouldHelp() {
        // The pairing above needs two moves; a cap of one expert leaves no move that keeps the load within slack.
        double[][] c = co(4, new double[] {0, 1, 10}, new double[] {2, 3, 10});
        ExpertShardMap current = ExpertShardMap.roundRobin(4, 2);
        PlacementPlan plan = new PlacementPlanner(new PlacementPlanner.Config(0.1, 0.25, 0.0))
                .plan(new double[] {1, 1, 1, 1}, c, current);
        assertThat(plan.changed()).isFalse();
        assertThat(plan.map()).isSameAs(current);
        assertThat(plan.reason()).isEqualTo("no move within the balance slack and the move cap lowers the predicted "
                + "max/mean or the co-activation cut");
        assertThat(new PlacementPlanner(new PlacementPlanner.Config(0.1, 0.2, 0.0)).plan(new double[] {1, 1, 1, 1}, c,
                current).reason()).isEqualTo("the move cap (0.2 of 4 experts) allows no move");

        Random rnd = new Random(3);
        for (int trial = 0; trial < 20; trial++) {
            int experts = 20 + rnd.nextInt(20);
            double[] load = new double[experts];
            double[][] m = new double[experts][experts];
            for (int a = 0; a < experts; a++) {
                load[a] = rnd.nextInt(100);
                for (int b = 0; b < a; b++) {
                    m[a][b] = m[b][a] = rnd.nextInt(4) == 0 ? rnd.nextInt(50) : 0;
                }
            }
            ExpertShardMap map = ExpertShardMap.roundRobin(experts, 4);
            PlacementPlan p = new PlacementPlanner(new PlacementPlanner.Config(0.05, 0.1, 0.0)).plan(load, m, map);
            int moved = 0;
            for (int e = 0; e < experts; e++) {
                moved += p.map().shardOf(e) != map.shardOf(e) ? 1 : 0;
            }
            assertThat(moved).isEqualTo(p.moves().size()).isLessThanOrEqualTo(experts / 10);
            assertThat(p.maxOverMean()).isCloseTo(PlacementPlanner.maxOverMean(load, p.map().assignment(), 4),
                    offset(1e-12));
            assertThat(p.cut()).isCloseTo(PlacementPlanner.cut(m, p.map().assignment()), offset(1e-12));
        }
    }

    @Test
    void aGainBelowTheThresholdMovesNothingAndSaysWhy() {
        // Moving expert 0 next to expert 1 uncuts 1 of 101 co-activations (gain 1/101 < 0.01) at equal balance
        // (expert 4 keeps shard 0 from being emptied).
        double[][] c = co(5, new double[] {0, 1, 1}, new double[] {2, 3, 100});
        ExpertShardMap current = new ExpertShardMap(2, 3, new int[] {0, 1, 2, 2, 0});
        double[] load = {1, 1, 1, 1, 1};
        PlacementPlan noop = new PlacementPlanner(new PlacementPlanner.Config(1.0, 0.25, 0.01)).plan(load, c, current);
        assertThat(noop.changed()).isFalse();
        assertThat(noop.map()).isSameAs(current);
        assertThat(noop.gain()).isCloseTo(1 / 101.0, offset(1e-15));
        assertThat(noop.maxOverMean()).isEqualTo(noop.maxOverMeanBefore()).isCloseTo(1.2, offset(1e-15));
        assertThat(noop.cut()).isEqualTo(noop.cutBefore()).isCloseTo(1 / 101.0, offset(1e-15));
        assertThat(noop.reason()).isEqualTo("the best plan found (1 move) gains 0.009901, below the threshold 0.01");
        PlacementPlan applied = new PlacementPlanner(new PlacementPlanner.Config(1.0, 0.25, 0.005)).plan(load, c,
                current);
        assertThat(applied.moves()).containsExactly(new PlacementPlan.Move(0, 0, 1));
        assertThat(applied.cut()).isZero();
        assertThat(applied.map().epoch()).isEqualTo(3);
    }

    @Test
    void noPlanLeavesAShardWithoutExperts() {
        // Co-locating 3 with 4 and 2 with 0 would take shard 0's experts away (both of them, through a move and a
        // swap); an empty shard serves nothing, so a shard's last expert stays.
        double[][] c = co(6, new double[] {3, 4, 1}, new double[] {2, 0, 1});
        double[] load = {1, 0, 1, 1, 1, 0};
        ExpertShardMap rr = ExpertShardMap.roundRobin(6, 3);
        PlacementPlan p = new PlacementPlanner(new PlacementPlanner.Config(0.1, 0.5, 0.01)).plan(load, c, rr);
        int[] experts = new int[3];
        for (int e = 0; e < 6; e++) {
            experts[p.map().shardOf(e)]++;
        }
        assertThat(experts).doesNotContain(0);
        Random rnd = new Random(17);
        for (int trial = 0; trial < 300; trial++) {
            int n = 3 + rnd.nextInt(18);
            int shards = 2 + rnd.nextInt(Math.min(7, n - 1));
            double[] l = new double[n];
            double[][] m = new double[n][n];
            for (int a = 0; a < n; a++) {
                l[a] = rnd.nextInt(3);
                for (int b = 0; b < a; b++) {
                    m[a][b] = m[b][a] = rnd.nextInt(4) == 0 ? rnd.nextInt(5) : 0;
                }
            }
            PlacementPlan q = new PlacementPlanner(new PlacementPlanner.Config(0.1, 0.5, 0.01))
                    .plan(l, m, ExpertShardMap.roundRobin(n, shards));
            int[] count = new int[shards];
            for (int e = 0; e < n; e++) {
                count[q.map().shardOf(e)]++;
            }
            assertThat(count).as("trial %d: %d experts on %d shards", trial, n, shards).doesNotContain(0);
        }
    }

    @Test
    void plansAreDeterministic() {
        Random rnd = new Random(5);
        int experts = 60;
        double[] load = new double[experts];
        double[][] m = new double[experts][experts];
        for (int a = 0; a < experts; a++) {
            load[a] = 1 + rnd.nextInt(3);
            for (int b = 0; b < a; b++) {
                m[a][b] = m[b][a] = rnd.nextInt(3);
            }
        }
        ExpertShardMap map = ExpertShardMap.roundRobin(experts, 16);
        PlacementPlan first = new PlacementPlanner(PlacementPlanner.DEFAULTS).plan(load, m, map);
        PlacementPlan second = new PlacementPlanner(PlacementPlanner.DEFAULTS).plan(load.clone(), m, map);
        assertThat(first.changed()).isTrue();
        assertThat(second).isEqualTo(first);
    }

    @Test
    void badInputIsRejectedWithItsReason() {
        PlacementPlanner planner = new PlacementPlanner(PlacementPlanner.DEFAULTS);
        ExpertShardMap map = ExpertShardMap.roundRobin(3, 2);
        double[][] ok = new double[3][3];
        assertThatThrownBy(() -> planner.plan(new double[2], ok, map))
                .hasMessage("load has 2 entries but the shard map names 3 experts");
        assertThatThrownBy(() -> planner.plan(new double[] {1, -1, 0}, ok, map))
                .hasMessage("load of expert 1 is -1.0; loads must be finite and >= 0");
        // Each finite, their sum not: the mean and max/mean would be NaN, and a NaN gain must not pass as a plan.
        assertThatThrownBy(() -> planner.plan(new double[] {1e308, 1e308, 1e308}, ok, map))
                .hasMessage("the loads sum beyond the largest double; scale them down");
        assertThatThrownBy(() -> planner.plan(new double[] {1, 2, 3},
                new double[][] {{0, 1e308, 1e308}, {1e308, 0, 0}, {1e308, 0, 0}}, map))
                .hasMessage("the co-activation counts sum beyond the largest double; scale them down");
        // Counted once per pair, as the cut counts them: a matrix whose pairs sum to the largest double is taken.
        assertThat(planner.plan(new double[] {1, 2, 3}, new double[][] {{0, 1e308, 0}, {1e308, 0, 0}, {0, 0, 0}},
                map).map().experts()).isEqualTo(3);
        assertThatThrownBy(() -> planner.plan(null, ok, map)).hasMessage("load is required");
        assertThatThrownBy(() -> planner.plan(new double[3], null, map))
                .hasMessage("coActivation is required (zeros for none)");
        assertThatThrownBy(() -> planner.plan(new double[3], new double[2][3], map))
                .hasMessage("coActivation has 2 rows but the shard map names 3 experts");
        assertThatThrownBy(() -> planner.plan(new double[3], new double[][] {{0, 0, 0}, {0, 0}, {0, 0, 0}}, map))
                .hasMessage("coActivation must be 3 × 3; row 1 has 2 entries");
        assertThatThrownBy(() -> planner.plan(new double[3], new double[][] {{0, 1, 0}, {2, 0, 0}, {0, 0, 0}}, map))
                .hasMessage("coActivation is not symmetric: [0][1] = 1.0 but [1][0] = 2.0");
        assertThatThrownBy(() -> planner.plan(new double[3], new double[][] {{0, 0, 0}, {0, 0, Double.NaN},
                {0, Double.NaN, 0}}, map)).hasMessage("coActivation[1][2] is NaN; counts must be finite and >= 0");
        assertThatThrownBy(() -> new PlacementPlanner.Config(-0.1, 0.1, 0))
                .hasMessage("balanceSlack must be a finite number >= 0, got -0.1");
        assertThatThrownBy(() -> new PlacementPlanner.Config(0.1, 1.5, 0))
                .hasMessage("maxMovedFraction must be in [0, 1], got 1.5");
        assertThatThrownBy(() -> new PlacementPlanner.Config(0.1, 0.1, Double.NaN))
                .hasMessage("minGain must be a finite number >= 0, got NaN");
        PlacementPlan idle = planner.plan(new double[3], ok, map);
        assertThat(idle.changed()).isFalse();
        assertThat(idle.reason()).isEqualTo("no expert has any load yet");
    }
}
