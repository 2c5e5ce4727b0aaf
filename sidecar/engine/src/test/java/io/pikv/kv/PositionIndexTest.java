package io.pikv.kv;

import io.pikv.kv.compute.Kernels;
import org.junit.jupiter.api.Test;

import java.lang.management.ManagementFactory;
import java.util.Random;

import static org.assertj.core.api.Assertions.assertThat;

/** A shard's position index costs memory for the positions it holds, not for the highest one. */
class PositionIndexTest {
    private static final ModelShape SHAPE = new ModelShape(1, 4, 2, 32, 8, 2);
    private static final KvLayout LAYOUT = new KvLayout(2, 32, 16, StorageType.FP32);

    private static KvShard shard() {
        return new KvShard(0, SHAPE, LAYOUT, 1, 64L * LAYOUT.pageBytes(), EvictionHook.OLDEST_PAGE_FIRST,
                Kernels.select(LAYOUT));
    }

    private static long allocatedBytes() {
        return ((com.sun.management.ThreadMXBean) ManagementFactory.getThreadMXBean()).getCurrentThreadAllocatedBytes();
    }

    @Test
    void aLongSequenceUnderEvictionKeepsALeanIndex() {
        Random rnd = new Random(5);
        KvShard shard = shard(); // 64 pages of 16 tokens: the newest 1,024 entries stay
        float[] k = Reference.gaussian(SHAPE.kvWidth(), rnd, 1f);
        int n = 600_000;
        for (int p = 0; p < n; p++) {
            shard.append(1, 0, p, p % SHAPE.experts(), k, k);
        }
        assertThat(shard.resident(1, 0)).isEqualTo(1024);
        // The resident entries and at most two horizons' eviction markers behind them, not every position stored.
        assertThat(shard.indexed(1, 0)).isBetween(1024 + LayerState.HORIZON / 2, 1024 + LayerState.MARKER_LIMIT + 1);
        assertThat(shard.indexCapacity(1, 0)).isLessThanOrEqualTo(4 * (1024 + LayerState.MARKER_LIMIT + 1));
        assertThat(shard.residentPositions(1, 0)).hasSize(1024).startsWith(n - 1024).endsWith(n - 1);
        assertThat(shard.stats().evictions()).isEqualTo(n - 1024);
        // Every evicted entry is still a miss of an attention: the counts per expert survive the freed leaves.
        float[] q = Reference.gaussian(SHAPE.queryWidth(), rnd, 1f);
        shard.attendPartial(1, 0, q, AttentionScope.all(), false, null, 1);
        assertThat(shard.stats().misses()).isEqualTo(n - 1024);
        assertThat(shard.stats().hits()).isEqualTo(1024);
        // Recent evictions keep their markers: withdrawing one inside the horizon takes it back (no miss left).
        assertThat(shard.withdraw(1, 0, new int[] {n - 1025})).isEqualTo(1);
        shard.attendPartial(1, 0, q, AttentionScope.all(), false, null, 1);
        assertThat(shard.stats().misses()).isEqualTo(2L * (n - 1024) - 1);
        // One far behind reads as never stored, and can be stored again.
        assertThat(shard.withdraw(1, 0, new int[] {5})).isZero();
        shard.append(1, 0, 5, 1, k, k); // (its page takes the oldest page's place)
        assertThat(shard.residentPositions(1, 0)).contains(5).hasSize(1024 - 16 + 1);
        // Past the horizon its eviction is no longer known, so its miss stays beside its hit (as documented); the
        // 16 entries of the page that made room are misses now.
        long misses = shard.stats().misses();
        long hits = shard.stats().hits();
        shard.attendPartial(1, 0, q, AttentionScope.all(), false, null, 1);
        assertThat(shard.stats().misses() - misses).isEqualTo(n - 1025 + 16);
        assertThat(shard.stats().hits() - hits).isEqualTo(1024 - 16 + 1);
    }

    @Test
    void aLargeRequestUndoneAfterEvictionsIsTakenBackWhole() {
        Random rnd = new Random(8);
        KvShard shard = shard(); // room for 1,024 entries: most of the request is evicted while it is stored
        float[] k = Reference.gaussian(SHAPE.kvWidth(), rnd, 1f);
        int n = 40_000;
        int[] all = new int[n];
        for (int p = 0; p < n; p++) {
            shard.append(1, 0, p, p % SHAPE.experts(), k, k);
            all[p] = p;
        }
        // The undo of the whole request (a gateway's, after another shard refused its part): every entry counts.
        assertThat(shard.withdraw(1, 0, all)).isEqualTo(n);
        assertThat(shard.resident(1, 0)).isZero();
        shard.append(1, 0, n, 0, k, k);
        shard.attendPartial(1, 0, Reference.gaussian(SHAPE.queryWidth(), rnd, 1f), AttentionScope.all(), false);
        assertThat(shard.stats().misses()).as("no miss left of the request that did not happen").isZero();
    }

    @Test
    void anEntryAtTheLastPositionAllocatesLittle() {
        Random rnd = new Random(3);
        KvShard shard = shard();
        {
            float[] k = Reference.gaussian(SHAPE.kvWidth(), rnd, 1f);
            float[] v = Reference.gaussian(SHAPE.kvWidth(), rnd, 1f);
            shard.append(1, 0, 0, 1, k, v); // first page and sequence state out of the way
            long before = allocatedBytes();
            shard.append(1, 0, KvShard.MAX_POSITION, 2, k, v);
            long allocated = allocatedBytes() - before;
            // A dense table up to 2^24 - 1 would be 64 MiB; the index's nodes are a few KB.
            assertThat(allocated).isLessThan(64 * 1024);
            assertThat(shard.residentPositions(1, 0)).containsExactly(0, KvShard.MAX_POSITION);
        }
    }

    /**
     * Positions far apart (one in 256: a client's explicit positions, or a shard of many holding every few dozenth
     * position of a sequence) cost what dense ones do: about 8 to 21 bytes each, not a kilobyte.
     */
    @Test
    void sparsePositionsCostNoMoreIndexThanDenseOnes() {
        Random rnd = new Random(6);
        KvShard shard = new KvShard(0, SHAPE, LAYOUT, 1, 4096L * LAYOUT.pageBytes(), EvictionHook.OLDEST_PAGE_FIRST,
                Kernels.select(LAYOUT));
        float[] k = Reference.gaussian(SHAPE.kvWidth(), rnd, 1f);
        int n = 20_000;
        shard.append(1, 0, 0, 0, k, k);
        shard.append(2, 0, 0, 0, k, k);
        long before = allocatedBytes();
        for (int i = 1; i < n; i++) {
            shard.append(1, 0, i * 256, i % SHAPE.experts(), k, k);
        }
        long sparse = allocatedBytes() - before;
        before = allocatedBytes();
        for (int i = 1; i < n; i++) {
            shard.append(2, 0, i, i % SHAPE.experts(), k, k);
        }
        long dense = allocatedBytes() - before;
        assertThat(shard.indexCapacity(1, 0)).isEqualTo(shard.indexCapacity(2, 0)).isLessThanOrEqualTo(32_768);
        // Everything the appends allocated (index growth, pages' bookkeeping): the same for both, and far below the
        // 20 MB that a 1 KB leaf per sparse position cost.
        assertThat(sparse).isLessThan(dense + 64 * 1024).isLessThan(2L << 20);
        assertThat(shard.residentPositions(1, 0)).hasSize(n).startsWith(0, 256, 512).endsWith((n - 1) * 256);
    }

    /** A step attends only while its own token is resident: gone (evicted meanwhile), nothing is read or counted. */
    @Test
    void anAttentionThatMustHoldAnEntryAnswersNullWithoutIt() {
        Random rnd = new Random(7);
        KvShard shard = shard();
        float[] k = Reference.gaussian(SHAPE.kvWidth(), rnd, 1f);
        for (int p = 0; p < 40; p++) {
            shard.append(3, 0, p, p % SHAPE.experts(), k, k);
        }
        float[] q = Reference.gaussian(SHAPE.queryWidth(), rnd, 1f);
        PartialAttention held = shard.attendPartial(3, 0, q, AttentionScope.all(), false, null, 1, 39);
        assertThat(held).isNotNull();
        long lookups = shard.stats().lookups();
        assertThat(shard.evict(3, 0, new int[] {39})).isEqualTo(1);
        assertThat(shard.attendPartial(3, 0, q, AttentionScope.all(), false, null, 1, 39)).isNull();
        assertThat(shard.attendPartial(3, 0, q, AttentionScope.all(), false, null, 1, 1000)).isNull();
        assertThat(shard.attendPartial(4, 0, q, AttentionScope.all(), false, null, 1, 0)).as("no such sequence").isNull();
        assertThat(shard.stats().lookups()).isEqualTo(lookups);
        assertThat(shard.notResident(3, 0, new int[] {38, 39, 40, 0})).containsExactly(39, 40);
    }

    @Test
    void sparsePositionsAreFoundMovedAndRemovedLikeDenseOnes() {
        Random rnd = new Random(4);
        int[] positions = {0, 1, 255, 256, 65535, 65536, 70000, 1 << 20, KvShard.MAX_POSITION - 1, KvShard.MAX_POSITION};
        KvShard shard = shard();
        {
            for (int p : positions) {
                shard.append(7, 0, p, rnd.nextInt(SHAPE.experts()), Reference.gaussian(SHAPE.kvWidth(), rnd, 1f),
                        Reference.gaussian(SHAPE.kvWidth(), rnd, 1f));
            }
            assertThat(shard.residentPositions(7, 0)).containsExactly(positions);
            // Removing entries moves others into their slots; each must still be found at its position.
            assertThat(shard.withdraw(7, 0, new int[] {1, 65536, KvShard.MAX_POSITION - 1})).isEqualTo(3);
            assertThat(shard.residentPositions(7, 0))
                    .containsExactly(0, 255, 256, 65535, 70000, 1 << 20, KvShard.MAX_POSITION);
            assertThat(shard.withdraw(7, 0, new int[] {1, 65536})).isZero();
            assertThat(shard.withdraw(7, 0, new int[] {2, 3})).as("never stored").isZero();
            assertThat(shard.evict(7, 0, new int[] {KvShard.MAX_POSITION, 0, 2})).isEqualTo(2);
            assertThat(shard.residentPositions(7, 0)).containsExactly(255, 256, 65535, 70000, 1 << 20);
            assertThat(shard.resident(7, 0)).isEqualTo(5);
        }
    }
}
