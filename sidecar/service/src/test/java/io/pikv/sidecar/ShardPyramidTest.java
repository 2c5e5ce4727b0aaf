package io.pikv.sidecar;

import io.pikv.kv.AttentionResult;
import io.pikv.kv.ModelShape;
import io.pikv.kv.PartialAttention;
import io.pikv.kv.StorageType;
import io.pikv.kv.compression.PyramidBudget;
import io.pikv.sidecar.wire.Wire;
import org.junit.jupiter.api.Test;

import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.Random;
import java.util.TreeSet;
import java.util.stream.IntStream;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/** PyramidKV budgets on a shard: after an attention, each layer keeps its share, chosen by the attention it got. */
class ShardPyramidTest {
    private static final ModelShape SHAPE = new ModelShape(2, 4, 2, 16, 4, 2);

    private static float[] gaussian(int n, Random rnd, double scale) {
        float[] x = new float[n];
        for (int i = 0; i < n; i++) {
            x[i] = (float) (scale * rnd.nextGaussian());
        }
        return x;
    }

    private static void append(ShardNode node, long seq, int layer, int n, Random rnd) {
        for (int t = 0; t < n; t++) {
            node.append(seq, new Wire.AppendRequest(layer, new Wire.AppendRequest.Entry[] {new Wire.AppendRequest.Entry(
                    Wire.NEXT_POSITION, t % SHAPE.experts(), gaussian(SHAPE.kvWidth(), rnd, 1),
                    gaussian(SHAPE.kvWidth(), rnd, 1))}));
        }
    }

    /** Sinks, the recent window, then the highest weight (the more recent on ties), up to the budget. */
    private static int[] expectedKept(AttentionResult r, int budget, int sinks, int window) {
        int[] positions = r.positions();
        Integer[] order = IntStream.range(0, positions.length).boxed().toArray(Integer[]::new);
        java.util.Arrays.sort(order, Comparator.comparingInt(j -> positions[j]));
        TreeSet<Integer> kept = new TreeSet<>();
        List<Integer> rest = new ArrayList<>();
        for (int i = 0; i < order.length; i++) {
            int p = positions[order[i]];
            if (p < sinks || i >= order.length - window) {
                kept.add(p);
            } else {
                rest.add(order[i]);
            }
        }
        rest.sort(Comparator.comparingDouble((Integer j) -> -r.meanWeight(j)).thenComparing(j -> -positions[j]));
        for (int i = 0; kept.size() < budget && i < rest.size(); i++) {
            kept.add(positions[rest.get(i)]);
        }
        return kept.stream().mapToInt(Integer::intValue).toArray();
    }

    @Test
    void eachLayerKeepsItsShareAfterAttention() {
        // 2 layers, 64 entries each, budget 0.5 with beta 4: an average of 32, the last layer 8, the first 56.
        ShardPyramid pyramid = new ShardPyramid(2, 0.5, 4, 1, 2);
        assertThat(pyramid.layerBudget(0, 64)).isEqualTo(56);
        assertThat(pyramid.layerBudget(1, 64)).isEqualTo(8);
        Random rnd = new Random(11);
        try (ShardNode node = new ShardNode(0, SHAPE, StorageType.FP32, 16, 2, 1L << 20, ShardPolicy.of("oldest-page"),
                1, pyramid)) {
            long seq = node.create(null);
            for (int layer = 0; layer < 2; layer++) {
                append(node, seq, layer, 64, rnd);
            }
            // Nothing is evicted before an attention scored the entries.
            assertThat(node.resident(seq, 0)).isEqualTo(64);
            for (int layer = 0; layer < 2; layer++) {
                float[] q = gaussian(SHAPE.queryWidth(), rnd, 2);
                PartialAttention partial = node.attend(seq, new Wire.AttendRequest(layer, new int[0], q));
                AttentionResult weighted = partial.finish();
                assertThat(weighted.hasWeights()).as("weights asked for although oldest-page reads none").isTrue();
                assertThat(weighted.positions()).hasSize(64); // the answer is over every entry before the eviction
                int budget = layer == 0 ? 56 : 8;
                assertThat(node.residentPositions(seq, layer))
                        .containsExactly(expectedKept(weighted, budget, 1, 2));
            }
            assertThat(node.stats().evictions()).isEqualTo(8 + 56);
            // One more entry: the budget follows the entries stored (65 → an average of 33), evicted ones included.
            append(node, seq, 1, 1, rnd);
            node.attend(seq, new Wire.AttendRequest(1, new int[0], gaussian(SHAPE.queryWidth(), rnd, 2)));
            int budget = PyramidBudget.layerBudget(2, 1, 65, 0.5, 4, 3);
            assertThat(node.resident(seq, 1)).isEqualTo(budget);
            assertThat(node.residentPositions(seq, 1)).contains(0, 63, 64);
            // A withdrawn entry no longer counts as stored.
            node.withdraw(seq, 1, new int[] {64});
            append(node, seq, 1, 1, rnd);
            node.attend(seq, new Wire.AttendRequest(1, new int[0], gaussian(SHAPE.queryWidth(), rnd, 2)));
            assertThat(node.resident(seq, 1)).isEqualTo(budget);
        }
    }

    @Test
    void aTokenPolicyStopsTrackingWhatThePyramidEvicted() {
        // lru tracks every token; the pyramid's victims must leave its tracking, or a full store would ask the
        // policy for them again and evict nothing.
        ShardPyramid pyramid = new ShardPyramid(2, 0.25, 1, 0, 4);
        Random rnd = new Random(5);
        // 8 pages of 16 tokens of 2 heads × 16 fp32 (4 KiB with K and V): room for 128 entries in one bucket.
        ShardPolicy lru = ShardPolicy.of("lru");
        try (ShardNode node = new ShardNode(0, SHAPE, StorageType.FP32, 16, 1, 8L * 16 * 2 * 2 * 16 * 4, lru, 1,
                pyramid)) {
            long seq = node.create(null);
            append(node, seq, 0, 64, rnd);
            assertThat(lru.tracked(seq, 0)).isEqualTo(64);
            node.attend(seq, new Wire.AttendRequest(0, new int[0], gaussian(SHAPE.queryWidth(), rnd, 1)));
            assertThat(node.resident(seq, 0)).isEqualTo(16);
            assertThat(lru.tracked(seq, 0)).isEqualTo(16);
            // Many more entries than the byte budget holds: the lru policy evicts what it still tracks.
            append(node, seq, 0, 400, rnd);
            assertThat(node.resident(seq, 0)).isLessThanOrEqualTo(128);
            assertThat(node.residentPositions(seq, 0)).contains(463);
        }
    }

    @Test
    void closingASequenceDropsItsScores() {
        ShardPyramid pyramid = new ShardPyramid(2, 0.5, 2, 0, 0);
        Random rnd = new Random(3);
        try (ShardNode node = new ShardNode(0, SHAPE, StorageType.FP32, 16, 1, 1L << 20, ShardPolicy.of("oldest-page"),
                1, pyramid)) {
            long seq = node.create(7L);
            append(node, seq, 1, 10, rnd);
            node.attend(seq, new Wire.AttendRequest(1, new int[0], gaussian(SHAPE.queryWidth(), rnd, 1)));
            assertThat(pyramid.score(seq, 1, 9)).isPositive();
            node.close(seq);
            assertThat(pyramid.score(seq, 1, 9)).isZero();
            // The same id again starts from nothing: the budget counts only the new entries (2 → the last layer
            // keeps none; the 10 old ones would have left it 3).
            node.create(7L);
            append(node, seq, 1, 2, rnd);
            node.attend(seq, new Wire.AttendRequest(1, new int[0], gaussian(SHAPE.queryWidth(), rnd, 1)));
            assertThat(pyramid.layerBudget(1, 2)).isZero();
            assertThat(pyramid.layerBudget(1, 12)).isEqualTo(3);
            assertThat(node.resident(seq, 1)).isZero();
        }
    }

    @Test
    void badSettingsAreRefusedWithTheirName() {
        assertThatThrownBy(() -> new ShardPyramid(2, 0, 20, 4, 32)).hasMessageContaining("budget")
                .hasMessageContaining("(0, 1]");
        assertThatThrownBy(() -> new ShardPyramid(2, 1.5, 20, 4, 32)).hasMessageContaining("(0, 1]");
        assertThatThrownBy(() -> new ShardPyramid(2, Double.NaN, 20, 4, 32)).hasMessageContaining("(0, 1]");
        assertThatThrownBy(() -> new ShardPyramid(2, 0.5, 0.5, 4, 32)).hasMessageContaining("beta");
        assertThatThrownBy(() -> new ShardPyramid(2, 0.5, Double.POSITIVE_INFINITY, 4, 32))
                .hasMessageContaining("beta");
        assertThatThrownBy(() -> new ShardPyramid(2, 0.5, 20, -1, 32)).hasMessageContaining("sinks and window");
        assertThatThrownBy(() -> new ShardPyramid(2, 0.5, 20, 4, -2)).hasMessageContaining("sinks and window");
    }
}
