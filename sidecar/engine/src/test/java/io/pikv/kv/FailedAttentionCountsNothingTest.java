package io.pikv.kv;

import io.pikv.kv.compute.Kernels;
import org.junit.jupiter.api.Test;

import java.util.List;
import java.util.Random;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/** An attention call that fails looks nothing up: the shard's lookups, hits and misses stay as they were. */
class FailedAttentionCountsNothingTest {
    private static final ModelShape SHAPE = new ModelShape(1, 4, 2, 32, 8, 2);
    private static final KvLayout LAYOUT = new KvLayout(2, 32, 16, StorageType.FP32);

    @Test
    void aFailedAttentionCountsNoLookup() {
        KvShard shard = new KvShard(0, SHAPE, LAYOUT, 1, 64L * LAYOUT.pageBytes(), EvictionHook.OLDEST_PAGE_FIRST,
                Kernels.select(LAYOUT));
        Random rnd = new Random(2);
        float[] k = Reference.gaussian(SHAPE.kvWidth(), rnd, 1f);
        for (int p = 0; p < 20; p++) {
            shard.append(1, 0, p, p % SHAPE.experts(), k, k);
        }
        float[] q = Reference.gaussian(SHAPE.queryWidth(), rnd, 1f);
        shard.attendPartial(1, 0, q, AttentionScope.all(), false);
        assertThat(shard.stats().lookups()).isEqualTo(20);
        shard.useDevice(new DeviceAttention() {
            @Override
            public boolean supports(KvLayout layout) {
                return true;
            }

            @Override
            public void pageChanged(Page page) {
            }

            @Override
            public PartialAttention attend(List<Page> pages, float[] query) {
                throw new IllegalStateException("device lost");
            }

            @Override
            public String describe() {
                return "failing device";
            }

            @Override
            public void close() {
            }
        });
        assertThatThrownBy(() -> shard.attendPartial(1, 0, q, AttentionScope.all(), false)).hasMessage("device lost");
        assertThat(shard.stats().lookups()).isEqualTo(20);
        assertThat(shard.stats().hits()).isEqualTo(20);
        shard.useDevice(null);
        shard.attendPartial(1, 0, q, AttentionScope.all(), false);
        assertThat(shard.stats().lookups()).isEqualTo(40);
    }
}
