package io.pikv.sidecar.telemetry;

import io.pikv.api.events.BlockCacheCounters;
import io.pikv.api.events.CacheEvents;
import io.pikv.api.events.ExpertCounters;
import io.pikv.kv.AttentionScope;
import io.pikv.kv.EvictionHook;
import io.pikv.kv.KvLayout;
import io.pikv.kv.KvShard;
import io.pikv.kv.ModelShape;
import io.pikv.kv.StorageType;
import io.pikv.kv.compute.Kernels;
import io.pikv.sidecar.BlockStore;
import org.junit.jupiter.api.Test;

import java.util.Random;

import static org.assertj.core.api.Assertions.assertThat;

/** Window records from a real engine shard: counters are window deltas summed over layers, bytes at the end. */
class TelemetryWindowTest {
    static final ModelShape SHAPE = new ModelShape(2, 4, 2, 16, 4, 2);
    static final KvLayout LAYOUT = new KvLayout(2, 16, 16, StorageType.FP16);
    final Random rnd = new Random(7);
    final KvShard shard = new KvShard(3, SHAPE, LAYOUT, 1, 1 << 20, EvictionHook.REJECT, Kernels.select(LAYOUT));
    final BlockStore blocks = new BlockStore(300, "adaptive");

    @Test
    void countersAreWindowDeltasAndBytesTheEndValue() {
        TelemetryWindow window = new TelemetryWindow("c1", 3, 4, "p", shard.stats(), blocks.stats(), 1000);
        long entry = LAYOUT.entryBytes();

        // Window 1: 5 entries on layer 0 (experts 1,1,1,2,2), 2 on layer 1 (expert 1); attend layer 0 once.
        int[] experts = {1, 1, 1, 2, 2};
        for (int p = 0; p < experts.length; p++) {
            append(0, p, experts[p]);
        }
        append(1, 0, 1);
        append(1, 1, 1);
        attend(0);
        // Blocks of 100 bytes, three fit: 4 lookups, 1 hit; the fourth put evicts one.
        blocks.put(0xa, new byte[100]);
        blocks.get(0xa);
        blocks.get(0xb);
        blocks.put(0xb, new byte[100]);
        blocks.get(0xc);
        blocks.put(0xc, new byte[100]);
        blocks.get(0xd);
        blocks.put(0xd, new byte[100]);
        CacheEvents w1 = window.close(shard.stats(), blocks.stats(), 2000, "reject", 7);
        assertThat(w1.sequence()).isZero();
        assertThat(w1.windowStartMs()).isEqualTo(1000);
        assertThat(w1.windowEndMs()).isEqualTo(2000);
        assertThat(CacheEvents.key(w1.cluster(), w1.shard())).isEqualTo("c1/3");
        assertThat(w1.policy()).isEqualTo("reject");
        assertThat(w1.epoch()).isEqualTo(7);
        assertThat(w1.ghostHitRates()).containsOnlyKeys("lru", "h2o", "utility", "lrfu")
                .containsEntry("lru", 0.25);
        assertThat(w1.blocks()).isEqualTo(new BlockCacheCounters("adaptive/lru", 4, 1, 1, 300, 300));
        assertThat(w1.budgetBytes()).isEqualTo(1 << 20);
        assertThat(w1.bytesResident()).isEqualTo(2L * LAYOUT.pageBytes()); // one page per layer
        assertThat(w1.experts()).containsExactly(
                new ExpertCounters(0, 0, 0, 0, 0, 0),
                new ExpertCounters(1, 3, 3, 0, 0, 5 * entry),
                new ExpertCounters(2, 2, 2, 0, 0, 2 * entry),
                new ExpertCounters(3, 0, 0, 0, 0, 0));

        // Window 2: two expert-1 entries of layer 0 evicted, attend layer 0 again: they are misses now.
        shard.evict(1, 0, new int[] {0, 1});
        attend(0);
        blocks.get(0xd);
        CacheEvents w2 = window.close(shard.stats(), blocks.stats(), 3000, "reject", 7);
        assertThat(w2.sequence()).isEqualTo(1);
        assertThat(w2.windowStartMs()).isEqualTo(2000);
        assertThat(w2.experts().get(1)).isEqualTo(new ExpertCounters(1, 3, 1, 2, 2, 3 * entry));
        assertThat(w2.experts().get(2)).isEqualTo(new ExpertCounters(2, 2, 2, 0, 0, 2 * entry));
        assertThat(w2.lookups()).isEqualTo(5);
        assertThat(w2.hits()).isEqualTo(3);
        assertThat(w2.blocks()).isEqualTo(new BlockCacheCounters("adaptive/lru", 1, 1, 0, 300, 300));
        assertThat(w2.ghostHitRates()).containsEntry("lru", 0.4);

        // Window 3: nothing happened.
        CacheEvents w3 = window.close(shard.stats(), blocks.stats(), 4000, "reject", 7);
        assertThat(w3.sequence()).isEqualTo(2);
        assertThat(w3.experts()).allSatisfy(e -> {
            assertThat(e.lookups()).isZero();
            assertThat(e.evictions()).isZero();
        });
        assertThat(w3.experts().get(1).bytesResident()).isEqualTo(3 * entry);
        assertThat(window.closed()).isEqualTo(3);
    }

    private void append(int layer, int position, int expert) {
        shard.append(1, layer, position, expert, gaussian(SHAPE.kvWidth()), gaussian(SHAPE.kvWidth()));
    }

    private void attend(int layer) {
        shard.attendPartial(1, layer, gaussian(SHAPE.qHeads() * SHAPE.headDim()), AttentionScope.all(), false);
    }

    private float[] gaussian(int n) {
        float[] x = new float[n];
        for (int i = 0; i < n; i++) {
            x[i] = (float) rnd.nextGaussian();
        }
        return x;
    }
}
