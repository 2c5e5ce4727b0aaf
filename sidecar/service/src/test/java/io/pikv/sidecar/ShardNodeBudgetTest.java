package io.pikv.sidecar;

import io.pikv.kv.ModelShape;
import io.pikv.kv.StorageType;
import org.junit.jupiter.api.Test;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/** A budget that grows at runtime stays within the direct memory the JVM may give pages. */
class ShardNodeBudgetTest {
    /** One KV head of dim 16, fp32, 16-token pages: 2,048 bytes a page. */
    static final ModelShape SHAPE = new ModelShape(1, 2, 1, 16, 4, 2);

    @Test
    void growthAboveThePageMemoryLimitIsRefusedAndChangesNothing() {
        try (ShardNode node = new ShardNode(0, SHAPE, StorageType.FP32, 16, 1, 2 * 2048, ShardPolicy.of("lru"))) {
            assertThatThrownBy(() -> node.resizeBudget(4 * 2048, 3 * 2048))
                    .isInstanceOf(IllegalArgumentException.class)
                    .hasMessage("a budget of 8192 bytes exceeds the 6144 bytes of direct memory this JVM may give "
                            + "pages (-XX:MaxDirectMemorySize less 64 MiB for the server's own buffers); it takes "
                            + "effect when the shard restarts with it");
            assertThat(node.budgetBytes()).isEqualTo(2 * 2048);

            node.resizeBudget(3 * 2048, 3 * 2048); // up to the limit
            assertThat(node.budgetBytes()).isEqualTo(3 * 2048);
            node.resizeBudget(2048, 0); // a shrink needs no memory
            assertThat(node.budgetBytes()).isEqualTo(2048);
        }
    }

    @Test
    void aCutWaitsForTheBatchOfAppendsUnderWay() throws Exception {
        // A batch checks its room against the budget before its first entry and holds the policy to its last (what
        // append does): a cut in between would make it evict its own earlier entries, so the cut waits.
        ShardPolicy policy = ShardPolicy.of("oldest-page");
        try (ShardNode node = new ShardNode(0, SHAPE, StorageType.FP32, 16, 1, 4 * 2048, policy)) {
            java.util.concurrent.CompletableFuture<Integer> cut = new java.util.concurrent.CompletableFuture<>();
            Thread cutter = new Thread(() -> cut.complete(node.resizeBudget(2048)), "cut");
            try (ShardPolicy.Hold batch = policy.holdSwitches()) {
                cutter.start();
                // Parked on the policy's lock (not merely not started yet): the cut is held back by the batch.
                org.awaitility.Awaitility.await().atMost(java.time.Duration.ofSeconds(10))
                        .until(() -> cutter.getState() == Thread.State.WAITING);
                assertThat(cut).isNotDone();
                assertThat(node.budgetBytes()).isEqualTo(4 * 2048);
                assertThatThrownBy(() -> node.resizeBudget(3 * 2048)).as("from inside the batch: refused, not a hang")
                        .isInstanceOf(IllegalStateException.class).hasMessageContaining("would wait for itself");
            }
            assertThat(cut.get(5, java.util.concurrent.TimeUnit.SECONDS)).isZero();
            assertThat(node.budgetBytes()).isEqualTo(2048);
        }
    }

    @Test
    void aHeapTooSmallForWhatTheSidecarMayHoldIsSaidAtStartUp() {
        // fp32, one KV head of 16: 128 bytes an entry; 1 MiB of pages hold 8,192 entries, 1.5 MiB of bookkeeping;
        // with 64 MiB of blocks, 8 MiB of request body and the server's 128 MiB: a heap of 201.5 MiB. (The operator
        // sizes heaps so that its shards never warn: blocks a quarter and bodies an eighth of the heap beside the
        // bookkeeping, which is at least 256 MiB.)
        long blocks = 64L << 20;
        long body = 8L << 20;
        try (ShardNode node = new ShardNode(0, SHAPE, StorageType.FP32, 16, 1, 1 << 20, ShardPolicy.of("lru"))) {
            long enough = (200L << 20) + (3L << 19);
            assertThat(Sidecar.warnIfTheHeapIsShort(node, 0, blocks, body, enough)).isNull();
            assertThat(Sidecar.warnIfTheHeapIsShort(node, 0, blocks, body, enough - 1)).isEqualTo("the heap's maximum of "
                    + "201 MiB is below what this sidecar may hold on it, about 201 MiB: the bookkeeping of the 8192 "
                    + "entries the budget's pages hold under a token eviction policy (1 MiB, pikv.store.budget-bytes), "
                    + "64 MiB of block cache (pikv.blocks.capacity-bytes), a request body of up to 8 MiB "
                    + "(pikv.api.max-body-bytes) and 128 MiB for the server; a full sidecar may run out of heap: raise "
                    + "-Xmx or lower those settings");
            // An lrfu history of 1,048,576 evictions: 96 MiB more.
            long history = (1L << 20) * io.pikv.kv.scheduling.Lrfu.HEAP_PER_HISTORY_BYTES;
            assertThat(Sidecar.warnIfTheHeapIsShort(node, history, blocks, body, enough + history)).isNull();
            assertThat(Sidecar.warnIfTheHeapIsShort(node, history, blocks, body, enough)).contains("the lrfu history of "
                    + "up to 96 MiB (historyLimit in pikv.store.eviction-parameters), 64 MiB of block cache");
        }
        // A gateway: no bookkeeping of its own.
        assertThat(Sidecar.warnIfTheHeapIsShort(null, 0, blocks, body, 200L << 20)).isNull();
        assertThat(Sidecar.warnIfTheHeapIsShort(null, 0, blocks, body, (200L << 20) - 1)).startsWith("the heap's "
                + "maximum of 199 MiB is below what this sidecar may hold on it, about 200 MiB: 64 MiB of block cache");
        // A block cache that could never fit is refused.
        assertThatThrownBy(() -> Sidecar.checkTheBlocksFit(8L << 30, body, 2L << 30))
                .isInstanceOf(IllegalArgumentException.class).hasMessage("the block cache (8192 MiB) and a request "
                        + "body (8 MiB, pikv.api.max-body-bytes) do not fit in the heap's maximum of 2048 MiB; lower it "
                        + "or raise -Xmx");
        Sidecar.checkTheBlocksFit(blocks, body, 2L << 30);
        // A capacity meant as "no limit" does not wrap past either check.
        assertThatThrownBy(() -> Sidecar.checkTheBlocksFit(Long.MAX_VALUE, body, 2L << 30))
                .isInstanceOf(IllegalArgumentException.class);
        assertThat(Sidecar.warnIfTheHeapIsShort(null, 0, Long.MAX_VALUE, body, 2L << 30))
                .startsWith("the heap's maximum of 2048 MiB is below what this sidecar may hold on it");
    }

    @Test
    void theLimitComesFromTheJvm() {
        assertThat(ShardNode.maxDirectMemory()).isPositive();
        try (ShardNode node = new ShardNode(0, SHAPE, StorageType.FP32, 16, 1, 2 * 2048, ShardPolicy.of("lru"))) {
            long tooMuch = ShardNode.maxDirectMemory();
            assertThatThrownBy(() -> node.resizeBudget(tooMuch)).isInstanceOf(IllegalArgumentException.class)
                    .hasMessageContaining("exceeds the " + (tooMuch - ShardNode.SERVER_DIRECT_MEMORY) + " bytes");
            assertThat(node.budgetBytes()).isEqualTo(2 * 2048);
        }
    }
}
