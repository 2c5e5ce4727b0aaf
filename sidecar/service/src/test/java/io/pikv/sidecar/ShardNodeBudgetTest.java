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
    void aHeapTooSmallForAFullBudgetsBookkeepingIsSaidAtStartUp() {
        // fp32, one KV head of 16: 128 bytes an entry; 1 MiB of pages hold 8,192 entries, 1.5 MiB of bookkeeping,
        // which with the 256 MiB every shard needs besides fits a heap of 257.5 MiB. (The operator sizes heaps as
        // the bookkeeping plus at least that much, so its shards never warn.)
        try (ShardNode node = new ShardNode(0, SHAPE, StorageType.FP32, 16, 1, 1 << 20, ShardPolicy.of("lru"))) {
            long enough = (256L << 20) + (3L << 19);
            assertThat(Sidecar.warnIfTheHeapIsShort(node, enough)).isNull();
            assertThat(Sidecar.warnIfTheHeapIsShort(node, enough - 1)).isEqualTo("the budget's pages hold up to "
                    + "8192 entries, whose bookkeeping under a token eviction policy takes about 1 MiB of heap, which "
                    + "leaves less than 256 MiB of the heap's maximum of 257 MiB for everything else: a full shard may "
                    + "run out of heap; raise -Xmx (or lower pikv.store.budget-bytes)");
        }
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
