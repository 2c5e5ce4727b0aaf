package io.pikv.sidecar;

import io.pikv.kv.ModelShape;
import io.pikv.kv.StorageType;
import io.pikv.kv.UnknownSequenceException;
import io.pikv.sidecar.wire.Wire;
import org.junit.jupiter.api.Test;

import java.util.Random;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/** A refused append changes nothing on the shard, not even through the evictions that storing it would cause. */
class ShardNodeAppendTest {
    /** One KV head of dim 16, fp32, 16-token pages: 2,048 bytes a page; a budget of 2 pages. */
    static final ModelShape SHAPE = new ModelShape(1, 2, 1, 16, 4, 2);

    static Wire.AppendRequest.Entry entry(int position, int expert, Random rnd) {
        float[] k = new float[SHAPE.kvWidth()];
        float[] v = new float[SHAPE.kvWidth()];
        for (int i = 0; i < k.length; i++) {
            k[i] = (float) rnd.nextGaussian();
            v[i] = (float) rnd.nextGaussian();
        }
        return new Wire.AppendRequest.Entry(position, expert, k, v);
    }

    static Wire.AppendRequest request(Wire.AppendRequest.Entry... entries) {
        return new Wire.AppendRequest(0, entries);
    }

    @Test
    void aBatchWithABadEntryEvictsNothingToMakeRoomForTheGoodOnes() {
        Random rnd = new Random(5);
        try (ShardNode node = new ShardNode(0, SHAPE, StorageType.FP32, 16, 1, 2 * 2048,
                ShardPolicy.of("oldest-page"))) {
            long full = node.create(null);
            for (int p = 0; p < 32; p++) {
                node.append(full, request(entry(Wire.NEXT_POSITION, p % 4, rnd)));
            }
            assertThat(node.resident(full, 0)).isEqualTo(32); // two full pages: the budget
            long other = node.create(null);
            long evictionsBefore = node.stats().evictions();

            // Storing entry 0 would evict the oldest page; entry 1 is refused, so neither may happen.
            assertThatThrownBy(() -> node.append(other, request(entry(Wire.NEXT_POSITION, 0, rnd),
                    entry(Wire.NEXT_POSITION, 9, rnd))))
                    .isInstanceOf(IllegalArgumentException.class)
                    .hasMessageContaining("entry 1: expert 9 is out of range")
                    .hasMessageContaining("no entry of the request was stored");
            float[] nan = new float[SHAPE.kvWidth()];
            nan[3] = Float.NaN;
            assertThatThrownBy(() -> node.append(other, request(entry(0, 1, rnd),
                    new Wire.AppendRequest.Entry(1, 1, nan, nan))))
                    .hasMessageContaining("entry 1: K[head 0][3] is NaN");
            assertThatThrownBy(() -> node.append(other, request(entry(0, 1, rnd), entry(1 << 24, 1, rnd))))
                    .hasMessageContaining("entry 1: position must be in [0, 16777215]");
            assertThatThrownBy(() -> node.append(other, request(entry(5, 1, rnd), entry(Wire.NEXT_POSITION, 2, rnd),
                    entry(6, 3, rnd))))
                    .hasMessage("position 6 appears twice in the request (no entry of the request was stored)");

            assertThat(node.resident(full, 0)).isEqualTo(32);
            assertThat(node.resident(other, 0)).isZero();
            assertThat(node.lengths(other)).containsExactly(0);
            assertThat(node.stats().evictions()).isEqualTo(evictionsBefore);

            // A good batch then evicts as it must.
            node.append(other, request(entry(Wire.NEXT_POSITION, 0, rnd), entry(Wire.NEXT_POSITION, 1, rnd)));
            assertThat(node.resident(other, 0)).isEqualTo(2);
            assertThat(node.stats().evictions()).isEqualTo(evictionsBefore + 16);
        }
    }

    @Test
    void aClosedSequenceTakesNoEntries() {
        Random rnd = new Random(6);
        try (ShardNode node = new ShardNode(0, SHAPE, StorageType.FP32, 16, 1, 4 * 2048, ShardPolicy.of("lru"))) {
            long seq = node.create(7L);
            node.append(seq, request(entry(Wire.NEXT_POSITION, 0, rnd)));
            node.close(seq);
            assertThatThrownBy(() -> node.append(seq, request(entry(Wire.NEXT_POSITION, 0, rnd))))
                    .isInstanceOf(UnknownSequenceException.class);
            // The id can be used again, and the new sequence starts empty.
            assertThat(node.create(7L)).isEqualTo(7L);
            assertThat(node.resident(7L, 0)).isZero();
            assertThat(node.stats().bytesInUse()).isZero();
        }
    }
}
