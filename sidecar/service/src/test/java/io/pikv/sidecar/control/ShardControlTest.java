package io.pikv.sidecar.control;

import io.pikv.api.events.ControlState;
import io.pikv.kv.ExpertShardMap;
import io.pikv.sidecar.ShardPolicy;
import org.junit.jupiter.api.Test;

import java.util.List;
import java.util.Map;

import static org.assertj.core.api.Assertions.assertThat;

/** Which control records a shard applies, and what it says about the parts it cannot honour. */
class ShardControlTest {
    final ShardPolicy policy = ShardPolicy.of("reject");
    final ShardControl control = new ShardControl("c1", 1, ExpertShardMap.roundRobin(4, 1), policy, 4096, () -> 4096);

    static ControlState state(String cluster, long epoch, List<Integer> map, int shards, String policy, long budget) {
        return new ControlState(ControlState.VERSION, cluster, epoch, map, shards, policy, Map.of(), budget);
    }

    @Test
    void startsFromTheConfiguration() {
        ShardControl.State s = control.state();
        assertThat(s.epoch()).isEqualTo(-1);
        assertThat(s.source()).isEqualTo("config");
        assertThat(s.shardMap()).isEqualTo(ExpertShardMap.roundRobin(4, 1));
        assertThat(s.policy()).isEqualTo("reject");
        assertThat(s.desiredBudgetBytes()).isEqualTo(4096);
        assertThat(s.warnings()).isEmpty();
    }

    @Test
    void newerEpochsApplyOlderAndOtherClustersDoNot() {
        assertThat(control.apply(state("c1", 0, List.of(0, 1, 0, 1), 2, "oldest-page", 4096)))
                .isEqualTo(ShardControl.Outcome.APPLIED);
        assertThat(control.state().shardMap()).isEqualTo(new ExpertShardMap(0, 2, new int[] {0, 1, 0, 1}));
        assertThat(control.state().source()).isEqualTo("control");
        assertThat(policy.activePolicy()).isEqualTo("oldest-page");
        assertThat(control.state().warnings()).isEmpty();

        assertThat(control.apply(state("c1", 3, List.of(1, 1, 0, 0), 2, "reject", 4096)))
                .isEqualTo(ShardControl.Outcome.APPLIED);
        assertThat(control.apply(state("c1", 3, List.of(0, 0, 0, 0), 2, "oldest-page", 4096)))
                .isEqualTo(ShardControl.Outcome.STALE);
        assertThat(control.apply(state("c1", 2, List.of(0, 0, 0, 0), 2, "oldest-page", 4096)))
                .isEqualTo(ShardControl.Outcome.STALE);
        assertThat(control.apply(state("c2", 9, List.of(0, 0, 0, 0), 1, "oldest-page", 4096)))
                .isEqualTo(ShardControl.Outcome.OTHER_CLUSTER);
        assertThat(control.epoch()).isEqualTo(3);
        assertThat(control.state().shardMap().assignment()).containsExactly(1, 1, 0, 0);
        assertThat(policy.activePolicy()).isEqualTo("reject");
    }

    @Test
    void anInvalidMapRejectsTheWholeRecord() {
        control.apply(state("c1", 1, List.of(0, 0, 0, 0), 1, "reject", 4096));
        assertThat(control.apply(state("c1", 2, List.of(0, 1, 0), 2, "oldest-page", 4096)))
                .isEqualTo(ShardControl.Outcome.INVALID);
        assertThat(control.apply(state("c1", 3, List.of(0, 5, 0, 0), 2, "oldest-page", 4096)))
                .isEqualTo(ShardControl.Outcome.INVALID);
        assertThat(control.epoch()).isEqualTo(1);
        assertThat(policy.activePolicy()).isEqualTo("reject");
        assertThat(control.state().lastRejected()).isEqualTo("epoch 3: expert 1 is mapped to shard 5, outside [0, 2)");
        // A valid record with a newer epoch still applies.
        assertThat(control.apply(state("c1", 2, List.of(0, 1, 0, 1), 2, null, 0)))
                .isEqualTo(ShardControl.Outcome.APPLIED);
        assertThat(control.state().desiredBudgetBytes()).isEqualTo(4096); // 0: unchanged
        assertThat(control.state().policy()).isEqualTo("reject"); // null: unchanged
    }

    @Test
    void whatCannotRunIsKeptAndSaid() {
        policy.use("oldest-page");
        assertThat(control.apply(new ControlState(1, "c1", 5, List.of(0, 0, 0, 0), 1, "lru-9000",
                Map.of("alpha", 0.5), 8192))).isEqualTo(ShardControl.Outcome.APPLIED);
        ShardControl.State s = control.state();
        assertThat(s.epoch()).isEqualTo(5);
        assertThat(s.policy()).isEqualTo("oldest-page");
        assertThat(s.requestedPolicy()).isEqualTo("lru-9000");
        assertThat(s.parameters()).containsEntry("alpha", 0.5);
        assertThat(s.desiredBudgetBytes()).isEqualTo(8192);
        assertThat(s.budgetBytes()).isEqualTo(4096);
        assertThat(s.warnings()).containsExactly(
                "unknown eviction policy 'lru-9000' (this sidecar knows h2o, lrfu, lru, oldest-page, reject, streaming,"
                        + " utility); keeping oldest-page",
                "budget 8192 bytes is desired but 4096 bytes are enforced: a shard's budget is fixed when it is built;"
                        + " it takes effect when the sidecar restarts with pikv.store.budget-bytes=8192",
                "this shard (1) is outside the map's 1 shards: it owns no expert");
    }

    @Test
    void tokenPoliciesTakeTheirParametersAndRefuseOthers() {
        assertThat(control.apply(new ControlState(1, "c1", 6, List.of(0, 0, 0, 1), 2, "h2o",
                Map.of("sinks", 2.0, "window", 16.0), 4096))).isEqualTo(ShardControl.Outcome.APPLIED);
        assertThat(policy.activePolicy()).isEqualTo("h2o");
        assertThat(policy.wantsAttention()).isTrue();
        assertThat(control.state().warnings()).isEmpty();
        assertThat(control.apply(new ControlState(1, "c1", 7, List.of(0, 0, 0, 1), 2, "streaming",
                Map.of("sinks", 1.5), 4096))).isEqualTo(ShardControl.Outcome.APPLIED);
        assertThat(policy.activePolicy()).isEqualTo("h2o");
        assertThat(control.state().warnings()).containsExactly(
                "parameter sinks must be a whole number >= 0, got 1.5; keeping h2o");
        assertThat(control.apply(new ControlState(1, "c1", 8, List.of(0, 0, 0, 1), 2, "lru",
                Map.of("window", 4.0), 4096))).isEqualTo(ShardControl.Outcome.APPLIED);
        assertThat(control.state().warnings()).containsExactly(
                "policy lru has no parameter 'window' (it takes none); keeping h2o");
    }
}
