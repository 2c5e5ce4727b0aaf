package io.pikv.kv.routing;

import org.junit.jupiter.api.Test;

import java.util.ArrayList;
import java.util.List;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.assertj.core.data.Offset.offset;

class RoutingReplayTest {

    private static final RoutingReplay.Settings SETTINGS = new RoutingReplay.Settings(2, 2,
            new PlacementPlanner.Config(0.1, 0.5, 0.01), 0.1, 0.15);

    /** Experts 0 and 1 always fire together, and so do 2 and 3; round-robin on two shards splits both pairs. */
    private static List<RoutingReplay.Token> pairs(int windows) {
        List<RoutingReplay.Token> log = new ArrayList<>();
        for (int w = 0; w < windows; w++) {
            log.add(new RoutingReplay.Token(new int[] {0, 1}, new double[] {0.95, 0.05}));
            log.add(new RoutingReplay.Token(new int[] {2, 3}, new double[] {0.6, 0.4}));
        }
        return log;
    }

    @Test
    void planningFromTheFirstWindowCoLocatesThePairs() {
        RoutingReplay.Result r = RoutingReplay.replay(pairs(3), 4, SETTINGS);
        assertThat(r.topK()).isEqualTo(2);
        assertThat(r.tokensUnscored()).isZero();
        assertThat(r.windows()).hasSize(3);

        RoutingReplay.Window first = r.windows().get(0);
        assertThat(first.moved()).isZero();
        assertThat(first.planNote()).isEqualTo("no history yet");
        assertThat(first.fanoutHash()).isEqualTo(2.0);
        assertThat(first.fanoutPlanned()).isEqualTo(2.0);
        // Expert 1 (0.05 < 0.15 × 0.95) would open a second shard: dropped. Expert 3 (0.4) is kept.
        assertThat(first.fanoutCacheAware()).isEqualTo(1.5);
        assertThat(first.gateMassMoved()).isCloseTo(0.025, offset(1e-15));

        RoutingReplay.Window second = r.windows().get(1);
        assertThat(second.moved()).isEqualTo(2);
        assertThat(second.epoch()).isEqualTo(1);
        assertThat(second.fanoutHash()).isEqualTo(2.0);
        assertThat(second.fanoutPlanned()).isEqualTo(1.0);
        assertThat(second.fanoutCacheAware()).isEqualTo(1.0);
        assertThat(second.gateMassMoved()).isZero();
        assertThat(second.plannedMaxOverMean()).isEqualTo(1.0);

        RoutingReplay.Window third = r.windows().get(2);
        assertThat(third.moved()).isZero();
        assertThat(third.epoch()).isEqualTo(1);
        assertThat(third.planNote()).startsWith("no move within");

        assertThat(r.movedFractionMax()).isEqualTo(0.5);
        assertThat(r.fanoutHash()).isEqualTo(2.0);
        assertThat(r.fanoutPlanned()).isEqualTo(1.0);
        assertThat(r.fanoutCacheAware()).isEqualTo(1.0);
        assertThat(r.gateMassMoved()).isZero();
        assertThat(r.roundRobinMaxOverMeanP95()).isEqualTo(1.0);
        assertThat(r.plannedMaxOverMeanP95()).isEqualTo(1.0);
        assertThat(r.fanoutHindsight()).isEqualTo(1.0);
    }

    @Test
    void shardLoadIsActivationsPerShardAndATailShorterThanAWindowIsNotScored() {
        // Window of 2 tokens: expert 0 twice and expert 2 twice; round-robin puts 0 and 2 on shard 0, so 4 of 4.
        List<RoutingReplay.Token> log = new ArrayList<>();
        for (int i = 0; i < 5; i++) {
            log.add(new RoutingReplay.Token(new int[] {i % 2 == 0 ? 0 : 2}, new double[] {1}));
        }
        RoutingReplay.Result r = RoutingReplay.replay(log, 4, SETTINGS);
        assertThat(r.tokensUnscored()).isEqualTo(1);
        assertThat(r.windows().get(0).roundRobinMaxOverMean()).isEqualTo(2.0);
        // The plan moves expert 2 (or 0) to the idle shard: both shards carry 2.
        assertThat(r.windows().get(1).plannedMaxOverMean()).isEqualTo(1.0);
        assertThat(r.windows().get(1).moved()).isEqualTo(1);
        assertThat(r.fanoutCacheAware()).isEqualTo(1.0);
    }

    @Test
    void aLogShorterThanTwoWindowsIsRejected() {
        assertThatThrownBy(() -> RoutingReplay.replay(pairs(1), 4, new RoutingReplay.Settings(2, 3,
                PlacementPlanner.DEFAULTS, 0, 0))).hasMessage("the log holds 2 tokens: fewer than two windows of 3 "
                + "(the first window only gathers statistics to plan from)");
        assertThatThrownBy(() -> RoutingReplay.replay(pairs(2), 3, SETTINGS)).hasMessage("expert 3 is outside [0, 3)");
        assertThatThrownBy(() -> new RoutingReplay.Token(new int[] {1}, new double[] {0}))
                .hasMessage("gate weights must be finite and > 0, got 0.0");
    }

    @Test
    void percentileInterpolatesBetweenOrderStatistics() {
        assertThat(RoutingReplay.percentile(new double[] {5, 1, 4, 2, 3}, 0.95)).isCloseTo(4.8, offset(1e-12));
        assertThat(RoutingReplay.percentile(new double[] {7}, 0.95)).isEqualTo(7.0);
        assertThat(RoutingReplay.percentile(new double[] {1, 3}, 0.5)).isEqualTo(2.0);
    }
}
