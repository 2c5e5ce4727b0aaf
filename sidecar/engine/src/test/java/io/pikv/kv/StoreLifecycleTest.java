package io.pikv.kv;

import io.pikv.kv.compute.Kernels;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import org.junit.jupiter.api.Test;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/**
 * A closed store refuses work in one clear sentence; the eviction context refuses bad arguments and use outside the
 * hook's call; a device that cannot take a page change is let go and the shard stays whole.
 */
class StoreLifecycleTest {
    private static final ModelShape SHAPE = new ModelShape(2, 4, 2, 16, 4, 2);

    @Test
    void aClosedStoreRefusesWorkWithOneSentence() {
        Random rnd = new Random(3);
        // Two threads and two shards: attention would go through the stopped pool (RejectedExecutionException before).
        KvStore store = new KvStore(KvStoreConfig.builder(SHAPE).pageTokens(16).shards(2).buckets(2).threads(2).build());
        long seq = store.createSequence();
        Reference.load(store, seq, 0, Reference.randomEntries(SHAPE, 40, rnd));
        float[] q = Reference.gaussian(SHAPE.queryWidth(), rnd, 1f);
        float[] k = Reference.gaussian(SHAPE.kvWidth(), rnd, 1f);
        store.close();
        assertThatThrownBy(() -> store.attend(seq, 0, q)).isInstanceOf(IllegalStateException.class)
                .hasMessage("the store is closed");
        assertThatThrownBy(() -> store.append(seq, 0, 1, k, k)).isInstanceOf(IllegalStateException.class)
                .hasMessage("the store is closed");
        assertThatThrownBy(() -> store.evict(seq, 0, new int[] {0})).isInstanceOf(IllegalStateException.class);
        assertThatThrownBy(store::createSequence).isInstanceOf(IllegalStateException.class);
        // What it held is still described truthfully, and closing a sequence still frees its pages.
        assertThat(store.length(seq, 0)).isEqualTo(40);
        assertThat(store.resident(seq, 0)).isEqualTo(40);
        store.closeSequence(seq);
        assertThat(store.bytesInUse()).isZero();
    }

    @Test
    void theEvictionContextRefusesBadArgumentsAndUseOutsideTheHook() {
        KvLayout layout = new KvLayout(SHAPE.kvHeads(), SHAPE.headDim(), 16, StorageType.FP32);
        KvLayout otherLayout = new KvLayout(SHAPE.kvHeads(), SHAPE.headDim(), 16, StorageType.FP32);
        Page foreign = new PagePool(otherLayout, 1L << 20).allocate(); // a page of another pool, id 0
        Page unknown = new Page(4096, otherLayout); // an id this shard's pool never made
        List<Throwable> refusals = new ArrayList<>();
        EvictionContext[] kept = new EvictionContext[1];
        EvictionHook hook = ctx -> {
            kept[0] = ctx;
            for (Runnable bad : List.<Runnable>of(() -> ctx.evictTokens(1, 7, new int[] {0}),
                    () -> ctx.evictTokens(1, 0, new int[] {-1}), () -> ctx.evictPage(foreign),
                    () -> ctx.evictPage(unknown), () -> ctx.evictPage(null))) {
                try {
                    bad.run();
                } catch (RuntimeException e) {
                    refusals.add(e);
                }
            }
            EvictionHook.OLDEST_PAGE_FIRST.makeRoom(ctx);
        };
        KvShard shard = new KvShard(0, SHAPE, layout, 1, 2L * layout.pageBytes(), hook, Kernels.select(layout));
        Random rnd = new Random(5);
        for (int p = 0; p < 33; p++) { // the 33rd entry needs a third page: the hook runs once
            shard.append(1, 0, p, 0, Reference.gaussian(SHAPE.kvWidth(), rnd, 1f),
                    Reference.gaussian(SHAPE.kvWidth(), rnd, 1f));
        }
        assertThat(refusals).hasSize(5).allSatisfy(e -> assertThat(e).isInstanceOf(IllegalArgumentException.class));
        assertThat(refusals.get(0)).hasMessageContaining("layer");
        assertThat(refusals.get(1)).hasMessageContaining("positions must be in [0, ");
        assertThat(refusals.get(2)).hasMessage("page 0 is not live on shard 0");
        assertThat(refusals.get(3)).hasMessage("page 4096 is not live on shard 0");
        assertThat(refusals.get(4)).hasMessage("page null is not live on shard 0");
        assertThat(shard.stats().pagesInUse()).isEqualTo(2);
        assertThat(shard.resident(1, 0)).isEqualTo(17); // one page of 16 evicted, the 33rd stored
        // Kept and called later, outside the append that held the write lock: refused, nothing changes.
        assertThatThrownBy(() -> kept[0].evictPage(kept[0].oldestPage())).isInstanceOf(IllegalStateException.class)
                .hasMessageContaining("only inside the eviction hook's makeRoom call");
        assertThatThrownBy(() -> kept[0].evictTokens(1, 0, new int[] {16})).isInstanceOf(IllegalStateException.class);
        assertThat(shard.resident(1, 0)).isEqualTo(17);
    }

    /** Also inside a later call that holds the write lock on the same thread (a hook's evicted, say): refused. */
    @Test
    void aKeptEvictionContextIsRefusedInsideLaterLockedCalls() {
        KvLayout layout = new KvLayout(SHAPE.kvHeads(), SHAPE.headDim(), 16, StorageType.FP32);
        EvictionContext[] kept = new EvictionContext[1];
        List<Throwable> refusals = new ArrayList<>();
        boolean[] armed = {false};
        EvictionHook hook = new EvictionHook() {
            @Override
            public void makeRoom(EvictionContext ctx) {
                kept[0] = ctx;
                OLDEST_PAGE_FIRST.makeRoom(ctx);
            }

            @Override
            public void evicted(long sequence, int layer, int position) {
                if (armed[0]) {
                    try {
                        kept[0].evictPage(kept[0].oldestPage());
                    } catch (RuntimeException e) {
                        refusals.add(e);
                    }
                }
            }
        };
        KvShard shard = new KvShard(0, SHAPE, layout, 1, 2L * layout.pageBytes(), hook, Kernels.select(layout));
        Random rnd = new Random(7);
        for (int p = 0; p < 33; p++) { // the hook runs once, and keeps its context
            shard.append(1, 0, p, 0, Reference.gaussian(SHAPE.kvWidth(), rnd, 1f),
                    Reference.gaussian(SHAPE.kvWidth(), rnd, 1f));
        }
        assertThat(shard.resident(1, 0)).isEqualTo(17);
        armed[0] = true;
        assertThat(shard.evict(1, 0, new int[] {20})).isEqualTo(1);
        assertThat(refusals).singleElement().isInstanceOf(IllegalStateException.class);
        assertThat(shard.resident(1, 0)).isEqualTo(16); // the one evicted by the call, no page more
    }
}
