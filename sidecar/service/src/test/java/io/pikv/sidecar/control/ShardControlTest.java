package io.pikv.sidecar.control;

import io.pikv.api.events.ControlState;
import io.pikv.kv.ExpertShardMap;
import io.pikv.kv.ModelShape;
import io.pikv.kv.StorageType;
import io.pikv.sidecar.ShardNode;
import io.pikv.sidecar.ShardPolicy;
import io.pikv.sidecar.wire.Wire;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

import java.util.List;
import java.util.Map;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/** Which control records a shard applies, and what it says about the parts it cannot honour. */
class ShardControlTest {
    /** One KV head of dim 16, fp32, 16-token pages: 2,048 bytes a page; the budget starts at two pages. */
    static final ModelShape SHAPE = new ModelShape(1, 2, 1, 16, 4, 2);
    final ShardPolicy policy = ShardPolicy.of("reject");
    final ShardNode node = new ShardNode(1, SHAPE, StorageType.FP32, 16, 1, 4096, policy);
    final ShardControl control = new ShardControl("c1", 1, ExpertShardMap.roundRobin(4, 1), policy,
            ShardControl.Budget.of(node));

    @AfterEach
    void closeNode() {
        node.close();
    }

    /** Appends {@code n} entries (positions 0..n-1) to a new sequence; returns it. */
    long fill(int n) {
        long seq = node.create(null);
        Wire.AppendRequest.Entry[] entries = new Wire.AppendRequest.Entry[n];
        for (int t = 0; t < n; t++) {
            float[] kv = new float[SHAPE.kvWidth()];
            java.util.Arrays.fill(kv, t);
            entries[t] = new Wire.AppendRequest.Entry(t, t % 4, kv, kv);
        }
        node.append(seq, new Wire.AppendRequest(0, entries));
        return seq;
    }

    @Test
    void aMapAppliedByHandChangesOnlyTheMap() {
        ShardPolicy h2o = ShardPolicy.of("h2o", Map.of("window", 128.0));
        ShardControl c = new ShardControl("c1", 1, ExpertShardMap.roundRobin(4, 1), h2o, ShardControl.Budget.of(node));
        assertThat(c.apply(state("c1", 2, List.of(0, 0, 0, 0), 1, "reject", 8192)))
                .isEqualTo(ShardControl.Outcome.APPLIED);
        assertThat(c.state().warnings()).containsExactly("this shard (1) is outside the map's 1 shards: it owns no expert");

        assertThat(c.applyMap(3, List.of(1, 0, 1, 0), 2)).isEqualTo(ShardControl.Outcome.APPLIED);
        ShardControl.State s = c.state();
        assertThat(s.source()).isEqualTo("manual");
        assertThat(s.shardMap()).isEqualTo(new ExpertShardMap(3, 2, new int[] {1, 0, 1, 0}));
        assertThat(s.policy()).isEqualTo("reject");
        assertThat(s.desiredBudgetBytes()).isEqualTo(8192);
        assertThat(node.budgetBytes()).isEqualTo(8192);
        assertThat(s.warnings()).as("the new map holds shard 1").isEmpty();
        assertThat(c.applyMap(3, List.of(0, 0, 0, 0), 1)).isEqualTo(ShardControl.Outcome.STALE);

        // The operator's record of the same epoch replaces the hand-applied map; a repeat of it is then stale.
        ControlState operator = state("c1", 3, List.of(0, 1, 0, 1), 2, "h2o", 4096);
        assertThat(c.apply(operator)).isEqualTo(ShardControl.Outcome.APPLIED);
        assertThat(c.state().source()).isEqualTo("control");
        assertThat(c.state().shardMap().assignment()).containsExactly(0, 1, 0, 1);
        assertThat(h2o.activeParameters()).containsEntry("window", 64.0);
        assertThat(c.apply(operator)).isEqualTo(ShardControl.Outcome.STALE);
    }

    @Test
    void aGatewayRefusesAMapForAnotherNumberOfShardsByRecordOrByHand() {
        // A gateway of two shards routes by every map control applies: one for three shards cannot apply, whether
        // it comes as a record (invalid: said in lastRejected, nothing changes) or by hand (the caller's refusal).
        List<io.pikv.sidecar.client.SidecarClient> clients = List.of(
                new io.pikv.sidecar.client.SidecarClient(java.net.URI.create("http://127.0.0.1:1"), SHAPE,
                        java.time.Duration.ofSeconds(1), java.time.Duration.ofSeconds(1)),
                new io.pikv.sidecar.client.SidecarClient(java.net.URI.create("http://127.0.0.1:2"), SHAPE,
                        java.time.Duration.ofSeconds(1), java.time.Duration.ofSeconds(1)));
        io.pikv.sidecar.Gateway gateway = new io.pikv.sidecar.Gateway(SHAPE, clients,
                () -> new io.pikv.kv.routing.HashRouter(SHAPE.topK()));
        try {
            // What a sidecar of each role gets: a shard checks a budget against its pages, a gateway leaves it to them.
            assertThat(ShardControl.Budget.forRole(io.pikv.sidecar.Role.shard, node, 4096).check(100)).isPresent();
            assertThat(ShardControl.Budget.forRole(io.pikv.sidecar.Role.gateway, node, 4096).check(100)).isEmpty();
            ShardControl c = new ShardControl("c1", 0, gateway.shardMap(), ShardPolicy.of("lru", Map.of()),
                    ShardControl.Budget.forRole(io.pikv.sidecar.Role.gateway, node, 4096), gateway::applyShardMap);
            assertThat(c.apply(state("c1", 5, List.of(0, 1, 2, 0), 3, "lru", 0)))
                    .isEqualTo(ShardControl.Outcome.INVALID);
            assertThat(c.state().lastRejected()).contains("epoch 5: the shard map has 3 shards and 4 experts; this "
                    + "gateway has 2 shards and the model 4 experts");
            assertThat(c.state().epoch()).isEqualTo(-1);
            assertThat(gateway.shardMap()).isEqualTo(ExpertShardMap.roundRobin(4, 2));
            assertThatThrownBy(() -> c.applyMap(6, List.of(0, 1, 2, 0), 3))
                    .isInstanceOf(IllegalArgumentException.class)
                    .hasMessage("epoch 6 (by hand): the shard map has 3 shards and 4 experts; this gateway has 2 "
                            + "shards and the model 4 experts");
            assertThat(gateway.shardMap()).isEqualTo(ExpertShardMap.roundRobin(4, 2));
            // One for its two shards applies, and the gateway routes by it.
            assertThat(c.apply(state("c1", 7, List.of(1, 1, 0, 0), 2, "lru", 0)))
                    .isEqualTo(ShardControl.Outcome.APPLIED);
            assertThat(gateway.shardMap()).isEqualTo(new ExpertShardMap(7, 2, new int[] {1, 1, 0, 0}));
            // A budget is for the shards to check against their pages: the gateway, which holds none, takes the map
            // of a record whose budget is below a page (a shard refuses that record whole, with its own reason).
            assertThat(c.apply(state("c1", 8, List.of(0, 0, 1, 1), 2, "lru", 100)))
                    .isEqualTo(ShardControl.Outcome.APPLIED);
            assertThat(gateway.shardMap()).isEqualTo(new ExpertShardMap(8, 2, new int[] {0, 0, 1, 1}));
            assertThat(c.state().desiredBudgetBytes()).isEqualTo(100);
            assertThat(c.state().budgetBytes()).isEqualTo(100);
            assertThat(c.state().warnings()).isEmpty();
        } finally {
            gateway.shutdown();
        }
    }

    @Test
    void aMapByHandMustBeNewerThanTheServedOneAndItsRefusalIsOnlyTheCallersAnswer() {
        ShardPolicy lru = ShardPolicy.of("lru", Map.of());
        ShardControl c = new ShardControl("c1", 0, ExpertShardMap.roundRobin(4, 1), lru, ShardControl.Budget.of(node));
        // Before any record the configured map is served with epoch 0: a map by hand at epoch 0 is not newer.
        assertThat(c.state().shardMap().epoch()).isZero();
        assertThat(c.applyMap(0, List.of(0, 0, 0, 0), 1)).isEqualTo(ShardControl.Outcome.STALE);
        assertThat(c.state().source()).isEqualTo("config");

        assertThat(c.apply(state("c1", 2, List.of(0, 0, 0), 1, "lru", 8192))).isEqualTo(ShardControl.Outcome.INVALID);
        String refusedRecord = c.state().lastRejected();
        assertThat(refusedRecord).contains("epoch 2");
        assertThatThrownBy(() -> c.applyMap(5, List.of(0, 0, 0, 7), 1)).isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("epoch 5 (by hand)");
        assertThat(c.state().lastRejected()).as("a record's refusal stays on show").isEqualTo(refusedRecord);
        assertThat(c.state().source()).isEqualTo("config");
        assertThat(c.applyMap(1, List.of(0, 0, 0, 0), 1)).isEqualTo(ShardControl.Outcome.APPLIED);
    }

    @Test
    void aRecordWithoutPolicyOrBudgetRunsTheConfiguredOnes() {
        // Each record is the whole state: what it leaves out is the configuration's, not what ran before it (a
        // compacted topic may have dropped the record that set that).
        ShardPolicy h2o = ShardPolicy.of("h2o", Map.of("window", 128.0));
        ShardControl c = new ShardControl("c1", 1, ExpertShardMap.roundRobin(4, 1), h2o, ShardControl.Budget.of(node));
        assertThat(c.apply(state("c1", 1, List.of(0, 1, 0, 1), 2, "lru", 8192))).isEqualTo(ShardControl.Outcome.APPLIED);
        assertThat(h2o.activePolicy()).isEqualTo("lru");
        assertThat(node.budgetBytes()).isEqualTo(8192);

        assertThat(c.apply(state("c1", 2, List.of(1, 0, 1, 0), 2, null, 0))).isEqualTo(ShardControl.Outcome.APPLIED);
        ShardControl.State s = c.state();
        assertThat(s.policy()).isEqualTo("h2o");
        assertThat(s.requestedPolicy()).isEqualTo("h2o");
        assertThat(s.parameters()).containsEntry("window", 128.0).containsEntry("sinks", 4.0);
        assertThat(h2o.activeParameters()).containsEntry("window", 128.0);
        assertThat(s.desiredBudgetBytes()).isEqualTo(4096);
        assertThat(node.budgetBytes()).isEqualTo(4096);

        // Parameters without a policy name say nothing this sidecar can run: refused.
        assertThat(c.apply(new ControlState(ControlState.VERSION, "c1", 3, List.of(1, 0, 1, 0), 2, " ",
                Map.of("window", 8.0), 0))).isEqualTo(ShardControl.Outcome.INVALID);
        assertThat(c.state().lastRejected()).isEqualTo(
                "epoch 3: parameters [window] without a policy (a record without one runs the configured h2o)");
    }

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
        assertThat(control.apply(state("c1", 3, List.of(1, 1, 0, 0), 2, "reject", 4096)))
                .as("the applied record again").isEqualTo(ShardControl.Outcome.STALE);
        // Another record with the applied epoch: the later one wins, as it is the one a compacted topic keeps for a
        // shard that starts later (it would otherwise run another state under the same epoch).
        assertThat(control.apply(state("c1", 3, List.of(0, 0, 0, 0), 2, "oldest-page", 4096)))
                .as("another record with the applied epoch").isEqualTo(ShardControl.Outcome.CONFLICT);
        assertThat(control.state().shardMap().assignment()).containsExactly(0, 0, 0, 0);
        assertThat(policy.activePolicy()).isEqualTo("oldest-page");
        assertThat(control.state().lastRejected()).isNull();
        assertThat(control.apply(state("c1", 3, List.of(0, 0, 0, 0), 2, "oldest-page", 4096)))
                .as("the later record again").isEqualTo(ShardControl.Outcome.STALE);
        assertThat(control.apply(state("c1", 3, List.of(0, 1, 0), 2, "reject", 4096)))
                .as("an invalid record under the applied epoch").isEqualTo(ShardControl.Outcome.INVALID);
        assertThat(control.apply(state("c1", 2, List.of(1, 1, 1, 1), 2, "reject", 4096)))
                .isEqualTo(ShardControl.Outcome.STALE);
        assertThat(control.apply(state("c2", 9, List.of(1, 1, 1, 1), 1, "reject", 4096)))
                .isEqualTo(ShardControl.Outcome.OTHER_CLUSTER);
        assertThat(control.epoch()).isEqualTo(3);
        assertThat(control.state().shardMap().assignment()).containsExactly(0, 0, 0, 0);
        assertThat(policy.activePolicy()).isEqualTo("oldest-page");
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
        assertThat(control.apply(state("c1", 2, List.of(0, 1, 0, 1), 2, "oldest-page", 8192)))
                .isEqualTo(ShardControl.Outcome.APPLIED);
        assertThat(control.state().policy()).isEqualTo("oldest-page");
    }

    @Test
    void aRecordThisSidecarCannotRunIsRefusedWhole() {
        assertThat(control.apply(state("c1", 1, List.of(0, 1, 0, 1), 2, "oldest-page", 8192)))
                .isEqualTo(ShardControl.Outcome.APPLIED);
        long seq = fill(3 * 16);
        ShardControl.State before = control.state();
        record Bad(ControlState record, String reason) {
        }
        long ceiling = (long) node.layout().maxPages() * node.pageBytes(); // a record above it is refused, not retried
        List<Bad> bad = List.of(
                new Bad(new ControlState(1, "c1", 5, List.of(0, 0, 0, 0), 1, "lru-9000", Map.of("alpha", 0.5), 4096),
                        "epoch 5: unknown eviction policy 'lru-9000' (this sidecar knows h2o, lrfu, lru, oldest-page, "
                                + "reject, streaming, utility)"),
                new Bad(new ControlState(2, "c1", 5, List.of(0, 0, 0, 0), 1, "reject", Map.of(), 4096),
                        "epoch 5: schema version 2 is not one this sidecar reads (version 1)"),
                new Bad(new ControlState(1, "c1", 5, List.of(0, 0, 0, 0), 1, "streaming", Map.of("sinks", 1.5), 4096),
                        "epoch 5: parameter sinks must be a whole number >= 0, got 1.5"),
                new Bad(new ControlState(1, "c1", 5, List.of(0, 0, 0, 0), 1, "h2o", Map.of("window", -1.0), 4096),
                        "epoch 5: parameter window must be a whole number >= 0, got -1.0"),
                new Bad(new ControlState(1, "c1", 5, List.of(0, 0, 0, 0), 1, "lru", Map.of("window", 4.0), 4096),
                        "epoch 5: policy lru has no parameter 'window' (it takes none)"),
                new Bad(new ControlState(1, "c1", 5, List.of(0, 0, 0, 0), 1, "reject", Map.of(), 100),
                        "epoch 5: a budget of 100 bytes is below one page of 2048 bytes"),
                new Bad(new ControlState(1, "c1", 5, List.of(0, 0, 0, 0), 1, "reject", Map.of(),
                        ceiling + node.pageBytes()), "epoch 5: a budget of " + (ceiling + node.pageBytes())
                        + " bytes is more pages than the " + node.layout().maxPages() + " this shard can address ("
                        + ceiling + " bytes)"),
                new Bad(new ControlState(1, "c1", -2, List.of(0, 0, 0, 0), 1, "reject", Map.of(), 4096),
                        "epoch -2: epoch must be >= 0, got -2"));
        // Whole pages, as the configured budget is read: less than a page beyond the ceiling is no page more.
        assertThat(ShardControl.Budget.of(node).check(ceiling + node.pageBytes() - 1)).isEmpty();
        for (Bad b : bad) {
            assertThat(control.apply(b.record())).as(b.reason()).isEqualTo(ShardControl.Outcome.INVALID);
            ShardControl.State s = control.state();
            assertThat(s.lastRejected()).isEqualTo(b.reason());
            assertThat(s.epoch()).isEqualTo(1);
            assertThat(s.shardMap()).isEqualTo(before.shardMap());
            assertThat(s.policy()).isEqualTo("oldest-page");
            assertThat(policy.activePolicy()).isEqualTo("oldest-page");
            assertThat(s.budgetBytes()).isEqualTo(8192);
            assertThat(node.budgetBytes()).isEqualTo(8192);
            assertThat(node.resident(seq, 0)).isEqualTo(48);
        }
        // The refused epoch is still free: a valid record with it applies.
        assertThat(control.apply(state("c1", 5, List.of(0, 0, 0, 0), 1, "reject", 8192)))
                .isEqualTo(ShardControl.Outcome.APPLIED);
        assertThat(control.state().warnings()).containsExactly(
                "this shard (1) is outside the map's 1 shards: it owns no expert");
    }

    @Test
    void aSmallerBudgetEvictsThroughTheRecordsPolicyUntilThePagesInUseFit() {
        // oldest-page evicts whole pages, the oldest first, one at a time.
        shrinkFromFourPages("oldest-page", 1);
    }

    @Test
    void aTokenPolicyShrinksToTheNewBudgetNotBelowIt() {
        // LRU evicts the oldest tokens, and only until two pages are in use (a hook makes room for one more page
        // under the pool's limit, so the limit is one page higher while it runs).
        shrinkFromFourPages("lru", 2);
    }

    /** Fills four pages under {@code policy}, shrinks the budget to {@code pages}: the newest tokens stay. */
    private void shrinkFromFourPages(String policy, int pages) {
        control.apply(state("c1", 1, List.of(0, 1, 0, 1), 2, policy, 4 * 2048));
        long seq = fill(4 * 16);
        assertThat(node.stats().pagesInUse()).isEqualTo(4);

        assertThat(control.apply(state("c1", 2, List.of(0, 1, 0, 1), 2, policy, pages * 2048L)))
                .isEqualTo(ShardControl.Outcome.APPLIED);
        ShardControl.State s = control.state();
        assertThat(s.budgetBytes()).isEqualTo(pages * 2048L);
        assertThat(s.desiredBudgetBytes()).isEqualTo(pages * 2048L);
        assertThat(s.warnings()).isEmpty();
        assertThat(node.budgetBytes()).isEqualTo(pages * 2048L);
        assertThat(node.stats().pagesInUse()).isEqualTo(pages);
        assertThat(node.residentPositions(seq, 0)).containsExactlyInAnyOrder(
                java.util.stream.IntStream.range(64 - pages * 16, 64).toArray());
    }

    @Test
    void aShrinkEvictsThroughTheTokensThePolicyTracked() {
        // streaming keeps 16 sinks and a window of 16: shrinking four pages to two drops the middle, tokens 16..47.
        // The record repeats the policy and its parameters, so the policy keeps what it tracked.
        ControlState streaming = new ControlState(ControlState.VERSION, "c1", 1, List.of(0, 1, 0, 1), 2, "streaming",
                Map.of("sinks", 16.0, "window", 16.0), 4 * 2048);
        control.apply(streaming);
        long seq = fill(4 * 16);
        assertThat(control.apply(new ControlState(ControlState.VERSION, "c1", 2, List.of(0, 1, 0, 1), 2, "streaming",
                Map.of("sinks", 16.0, "window", 16.0), 2 * 2048))).isEqualTo(ShardControl.Outcome.APPLIED);
        assertThat(control.state().warnings()).isEmpty();
        assertThat(node.residentPositions(seq, 0)).containsExactlyInAnyOrder(java.util.stream.IntStream
                .concat(java.util.stream.IntStream.range(0, 16), java.util.stream.IntStream.range(48, 64)).toArray());

        // A record that switches policy and shrinks: the shrink goes through the policy in charge (it knows the
        // tokens; the new one has tracked nothing), then lru takes over.
        assertThat(control.apply(state("c1", 3, List.of(0, 1, 0, 1), 2, "lru", 2048)))
                .isEqualTo(ShardControl.Outcome.APPLIED);
        assertThat(control.state().warnings()).isEmpty();
        assertThat(policy.activePolicy()).isEqualTo("lru");
        assertThat(node.residentPositions(seq, 0)).as("the window goes first, the sinks last")
                .containsExactlyInAnyOrder(java.util.stream.IntStream.range(0, 16).toArray());
    }

    @Test
    void aBudgetTheShardCannotTakeKeepsTheOneInForceAndSaysWhy() {
        control.apply(state("c1", 1, List.of(0, 1, 0, 1), 2, "reject", 3 * 2048));
        long seq = fill(3 * 16);

        // reject evicts nothing, so the pages in use cannot shrink to one page.
        assertThat(control.apply(state("c1", 2, List.of(0, 1, 0, 1), 2, "reject", 2048)))
                .isEqualTo(ShardControl.Outcome.APPLIED);
        ShardControl.State s = control.state();
        assertThat(s.desiredBudgetBytes()).isEqualTo(2048);
        assertThat(s.budgetBytes()).isEqualTo(3 * 2048);
        assertThat(s.warnings()).containsExactly("budget 2048 bytes not applied, 6144 bytes stay in force: shard 1 "
                + "cannot shrink to 2048 bytes: 3 pages of 2048 bytes are in use and the eviction policy freed nothing;"
                + " the budget stays at 6144 bytes");
        assertThat(node.resident(seq, 0)).isEqualTo(48);

        // Tried again now and then: not while the pages are in use, and once they are free the shard takes it.
        assertThat(control.retryBudget()).isFalse();
        assertThat(control.state().budgetBytes()).isEqualTo(3 * 2048);
        node.close(seq);
        assertThat(control.retryBudget()).isTrue();
        assertThat(control.state().budgetBytes()).isEqualTo(2048);
        assertThat(node.budgetBytes()).isEqualTo(2048);
        assertThat(control.state().warnings()).isEmpty();
        assertThat(control.state().epoch()).isEqualTo(2);
        assertThat(control.retryBudget()).isFalse(); // nothing left to try
    }

    @Test
    void tokenPoliciesTakeTheirParameters() {
        assertThat(control.apply(new ControlState(1, "c1", 6, List.of(0, 0, 0, 1), 2, "h2o",
                Map.of("sinks", 2.0, "window", 16.0), 4096))).isEqualTo(ShardControl.Outcome.APPLIED);
        assertThat(policy.activePolicy()).isEqualTo("h2o");
        assertThat(policy.activeParameters()).containsEntry("sinks", 2.0).containsEntry("window", 16.0);
        assertThat(policy.wantsAttention()).isTrue();
        assertThat(control.state().warnings()).isEmpty();
    }
}
