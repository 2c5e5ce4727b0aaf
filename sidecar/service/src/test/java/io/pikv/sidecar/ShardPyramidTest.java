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
import java.util.HashMap;
import java.util.List;
import java.util.Map;
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

    private static Wire.AppendRequest.Entry entry(Random rnd) {
        return new Wire.AppendRequest.Entry(Wire.NEXT_POSITION, rnd.nextInt(SHAPE.experts()),
                gaussian(SHAPE.kvWidth(), rnd, 1), gaussian(SHAPE.kvWidth(), rnd, 1));
    }

    private static void append(ShardNode node, long seq, int layer, int n, Random rnd) {
        for (int t = 0; t < n; t++) {
            node.append(seq, new Wire.AppendRequest(layer, new Wire.AppendRequest.Entry[] {entry(rnd)}));
        }
    }

    private static AttentionResult attend(ShardNode node, long seq, int layer, Random rnd) {
        PartialAttention partial = node.attend(seq, new Wire.AttendRequest(layer, new int[0],
                gaussian(SHAPE.queryWidth(), rnd, 2)));
        return partial.finish();
    }

    /** Sinks, the recent window, then the highest accumulated weight (the more recent on ties), up to the budget. */
    private static int[] expectedKept(int[] resident, Map<Integer, Float> score, int budget, int sinks, int window) {
        TreeSet<Integer> kept = new TreeSet<>();
        List<Integer> rest = new ArrayList<>();
        for (int i = 0; i < resident.length; i++) {
            if (resident[i] < sinks || i >= resident.length - window) {
                kept.add(resident[i]);
            } else {
                rest.add(resident[i]);
            }
        }
        rest.sort(Comparator.comparingDouble((Integer p) -> -score.getOrDefault(p, 0f)).thenComparing(p -> -p));
        for (int i = 0; kept.size() < budget && i < rest.size(); i++) {
            kept.add(rest.get(i));
        }
        return kept.stream().mapToInt(Integer::intValue).toArray();
    }

    private static void accumulate(Map<Integer, Float> score, AttentionResult r) {
        for (int j = 0; j < r.positions().length; j++) {
            score.merge(r.positions()[j], r.meanWeight(j), Float::sum);
        }
    }

    @Test
    void eachLayerKeepsItsShareOnceAPageOver() {
        // 2 layers, 128 entries each, budget 0.25 with beta 4: an average of 32, the last layer 8, the first 56.
        ShardPyramid pyramid = new ShardPyramid(2, 0.25, 4, 1, 2);
        assertThat(pyramid.layerBudget(0, 128)).isEqualTo(56);
        assertThat(pyramid.layerBudget(1, 128)).isEqualTo(8);
        Random rnd = new Random(11);
        try (ShardNode node = new ShardNode(0, SHAPE, StorageType.FP32, 16, 2, 1L << 20, ShardPolicy.of("oldest-page"),
                1, pyramid)) {
            long seq = node.create(null);
            List<Map<Integer, Float>> scores = List.of(new HashMap<>(), new HashMap<>());
            for (int layer = 0; layer < 2; layer++) {
                append(node, seq, layer, 128, rnd);
            }
            // Nothing is evicted before an attention scored the entries.
            assertThat(node.resident(seq, 0)).isEqualTo(128);
            for (int layer = 0; layer < 2; layer++) {
                AttentionResult weighted = attend(node, seq, layer, rnd);
                assertThat(weighted.hasWeights()).as("weights asked for although oldest-page reads none").isTrue();
                assertThat(weighted.positions()).hasSize(128); // the answer is over every entry before the eviction
                accumulate(scores.get(layer), weighted);
                assertThat(node.residentPositions(seq, layer)).containsExactly(expectedKept(
                        IntStream.range(0, 128).toArray(), scores.get(layer), layer == 0 ? 56 : 8, 1, 2));
            }
            assertThat(node.stats().evictions()).isEqualTo(72 + 120);
            attend(node, seq, 0, rnd);
            // Evictions, not misses: the later attention over layer 0 finds all it should hold.
            assertThat(node.stats().misses()).isZero();
            // Up to a page (16 entries) over the budget, nothing goes: the selection runs once per page of entries.
            append(node, seq, 1, 10, rnd);
            accumulate(scores.get(1), attend(node, seq, 1, rnd));
            assertThat(node.resident(seq, 1)).isEqualTo(18);
            // Beyond it, the layer goes back to its budget, which follows the entries stored (148, evicted included).
            append(node, seq, 1, 10, rnd);
            int[] before = node.residentPositions(seq, 1);
            accumulate(scores.get(1), attend(node, seq, 1, rnd));
            int budget = PyramidBudget.layerBudget(2, 1, 148, 0.25, 4, 3);
            assertThat(node.stored(seq, 1)).isEqualTo(148);
            assertThat(node.residentPositions(seq, 1)).containsExactly(expectedKept(before, scores.get(1), budget, 1,
                    2));
            assertThat(node.residentPositions(seq, 1)).contains(0, 146, 147);
            // Scores of the evicted entries are gone with them.
            for (int p = 0; p < 148; p++) {
                int position = p;
                boolean resident = IntStream.of(node.residentPositions(seq, 1)).anyMatch(r -> r == position);
                assertThat(pyramid.score(seq, 1, p) > 0).as("position %d", p).isEqualTo(resident);
            }
        }
    }

    @Test
    void storedCountsWhatWasStoredAndNotWhatWasTakenBack() {
        ShardPyramid pyramid = new ShardPyramid(2, 0.25, 4, 1, 2);
        Random rnd = new Random(2);
        try (ShardNode node = new ShardNode(0, SHAPE, StorageType.FP32, 16, 2, 1L << 20, ShardPolicy.of("oldest-page"),
                1, pyramid)) {
            long seq = node.create(null);
            append(node, seq, 0, 64, rnd);
            attend(node, seq, 0, rnd); // 64 > 28 + 16: down to 28
            assertThat(node.resident(seq, 0)).isEqualTo(28);
            assertThat(node.stored(seq, 0)).isEqualTo(64);
            int[] resident = node.residentPositions(seq, 0);
            int evicted = IntStream.range(0, 64).filter(p -> IntStream.of(resident).noneMatch(r -> r == p))
                    .findFirst().orElseThrow();
            // Withdrawing two resident entries takes them out of the count (and their scores), and one the pyramid
            // dropped too: found taken, as an evicted one is.
            assertThat(pyramid.score(seq, 0, resident[5])).isPositive();
            assertThat(node.withdraw(seq, 0, new int[] {resident[5], resident[6], evicted})).isEqualTo(3);
            assertThat(node.stored(seq, 0)).isEqualTo(61);
            assertThat(pyramid.score(seq, 0, resident[5])).isZero();
            // A request refused half-way stores nothing and counts nothing.
            Wire.AppendRequest.Entry bad = new Wire.AppendRequest.Entry(Wire.NEXT_POSITION, 0,
                    new float[SHAPE.kvWidth()], new float[] {Float.NaN});
            assertThatThrownBy(() -> node.append(seq, new Wire.AppendRequest(0, new Wire.AppendRequest.Entry[] {
                entry(rnd), bad}))).isInstanceOf(IllegalArgumentException.class);
            assertThat(node.stored(seq, 0)).isEqualTo(61);
            assertThat(node.resident(seq, 0)).isEqualTo(26);
        }
    }

    @Test
    void aTokenPolicyStopsTrackingWhatThePyramidEvicted() {
        // lru tracks every token; the pyramid's victims must leave its tracking, or a full store would ask the
        // policy for them again.
        ShardPyramid pyramid = new ShardPyramid(2, 0.25, 1, 0, 4);
        Random rnd = new Random(5);
        ShardPolicy lru = ShardPolicy.of("lru");
        // 8 pages of 16 tokens of 2 heads × 16 fp32 (4 KiB with K and V): room for 128 entries in one bucket.
        try (ShardNode node = new ShardNode(0, SHAPE, StorageType.FP32, 16, 1, 8L * 16 * 2 * 2 * 16 * 4, lru, 1,
                pyramid)) {
            long seq = node.create(null);
            append(node, seq, 0, 64, rnd);
            assertThat(lru.tracked(seq, 0)).isEqualTo(64);
            attend(node, seq, 0, rnd);
            assertThat(node.resident(seq, 0)).isEqualTo(16);
            assertThat(lru.tracked(seq, 0)).isEqualTo(16);
            // Many more entries than the byte budget holds: the lru policy evicts what it still tracks; the pyramid's
            // scores of what lru evicted are pruned once they outnumber the resident entries by far.
            append(node, seq, 0, 400, rnd);
            assertThat(node.resident(seq, 0)).isLessThanOrEqualTo(128);
            assertThat(node.residentPositions(seq, 0)).contains(463);
            // Every attention scores up to 128 resident entries that lru later evicts: 1,000 positions were scored.
            for (int round = 0; round < 10; round++) {
                attend(node, seq, 0, rnd);
                append(node, seq, 0, 100, rnd);
            }
            attend(node, seq, 0, rnd);
            assertThat(pyramid.scored(seq, 0)).isBetween(1, 2 * 128 + 64);
        }
    }

    @Test
    void closingASequenceDropsItsScoresAndCount() {
        ShardPyramid pyramid = new ShardPyramid(2, 0.5, 2, 0, 1);
        Random rnd = new Random(3);
        try (ShardNode node = new ShardNode(0, SHAPE, StorageType.FP32, 16, 1, 1L << 20, ShardPolicy.of("oldest-page"),
                1, pyramid)) {
            long seq = node.create(7L);
            append(node, seq, 1, 10, rnd);
            attend(node, seq, 1, rnd);
            assertThat(pyramid.score(seq, 1, 9)).isPositive();
            node.close(seq);
            assertThat(pyramid.score(seq, 1, 9)).isZero();
            assertThat(pyramid.scored(seq, 1)).isZero();
            node.create(7L);
            assertThat(node.stored(seq, 1)).isZero();
        }
    }

    @Test
    void scoreMapMatchesAHashMap() {
        Random rnd = new Random(9);
        for (int round = 0; round < 20; round++) {
            ShardPyramid.Scores s = new ShardPyramid.Scores();
            Map<Integer, Float> reference = new HashMap<>();
            int range = 1 + rnd.nextInt(round < 10 ? 64 : 1 << 24);
            for (int op = 0; op < 5000; op++) {
                int p = rnd.nextInt(range);
                if (rnd.nextInt(3) == 0) {
                    s.remove(p);
                    reference.remove(p);
                } else {
                    float w = rnd.nextFloat();
                    s.add(p, w);
                    reference.merge(p, w, Float::sum);
                }
                if (op % 250 == 0) {
                    assertThat(s.size()).isEqualTo(reference.size());
                    for (int q = 0; q < Math.min(range, 200); q++) {
                        assertThat(s.get(q)).isEqualTo(reference.getOrDefault(q, 0f));
                    }
                    reference.forEach((key, value) -> assertThat(s.get(key)).isEqualTo(value));
                }
            }
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
        assertThatThrownBy(() -> new ShardPyramid(2, 0.5, 20, -1, 32)).hasMessageContaining("sinks must be >= 0");
        assertThatThrownBy(() -> new ShardPyramid(2, 0.5, 20, 4, 0)).hasMessageContaining("window >= 1");
        assertThatThrownBy(() -> new ShardPyramid(2, 0.5, 20, Integer.MAX_VALUE, 1)).hasMessageContaining("together");
        // Past the positions a layer holds: every layer budget would be refused, so every weighted attention would.
        assertThatThrownBy(() -> new ShardPyramid(2, 0.5, 20, 4, 20_000_000))
                .hasMessageContaining("together at most the 16777216 positions a layer can hold");
        assertThat(new ShardPyramid(2, 0.5, 20, 4, (1 << 24) - 4).layerBudget(0, 100)).as("at the limit")
                .isEqualTo(1 << 24);
        assertThatThrownBy(() -> new ShardPyramid(0, 0.5, 20, 4, 32)).hasMessageContaining("at least one layer");
    }
}
