package io.pikv.kv;

import io.pikv.kv.compute.AttentionAccumulator;
import io.pikv.kv.compute.KernelScratch;
import io.pikv.kv.compute.ScalarKernel;
import org.junit.jupiter.api.Test;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/** The int8 page format: quantization bounds, requantization on a wider key, exact arithmetic, eviction, bytes. */
class Int8PageTest {

    private static final KvLayout LAYOUT = new KvLayout(2, 16, 8, StorageType.INT8);

    private static Page page(KvLayout layout, List<float[][]> tokens) {
        Page page = new Page(0, layout);
        for (float[][] kv : tokens) {
            page.writeEntry(page.count, kv[0], 0, kv[1], 0);
            page.count++;
        }
        return page;
    }

    private static List<float[][]> tokens(KvLayout layout, int n, Random rnd) {
        int width = layout.kvHeads() * layout.headDim();
        List<float[][]> out = new ArrayList<>();
        for (int t = 0; t < n; t++) {
            // Growing magnitudes force channel scales to widen while the page fills.
            out.add(new float[][] {Reference.gaussian(width, rnd, 1f + t), Reference.gaussian(width, rnd, 1f)});
        }
        return out;
    }

    @Test
    void elementsStayWithinHalfAStepOfEveryScaleTheyHad() {
        List<float[][]> tokens = tokens(LAYOUT, 8, new Random(7));
        int dim = LAYOUT.headDim();
        int channels = LAYOUT.kvHeads() * dim;
        // scaleAfter[t][c]: key scale of channel c after token t was written.
        float[][] scaleAfter = new float[tokens.size()][channels];
        Page page = new Page(0, LAYOUT);
        for (int t = 0; t < tokens.size(); t++) {
            page.writeEntry(t, tokens.get(t)[0], 0, tokens.get(t)[1], 0);
            page.count++;
            for (int c = 0; c < channels; c++) {
                scaleAfter[t][c] = page.keyScale(c / dim, c % dim);
            }
        }
        int requantized = 0;
        for (int t = 0; t < tokens.size(); t++) {
            for (int h = 0; h < LAYOUT.kvHeads(); h++) {
                for (int i = 0; i < dim; i++) {
                    int c = h * dim + i;
                    // A key written at t is rounded once per distinct scale its channel has from t on.
                    double bound = 0;
                    for (int u = t; u < tokens.size(); u++) {
                        if (u == t || scaleAfter[u][c] != scaleAfter[u - 1][c]) {
                            bound += 0.5 * scaleAfter[u][c];
                            requantized += u > t ? 1 : 0;
                        }
                    }
                    float k = tokens.get(t)[0][c];
                    float v = tokens.get(t)[1][c];
                    assertThat((double) Math.abs(page.get(LAYOUT.keyIndex(h, i, t)) - k)).isLessThanOrEqualTo(bound * 1.0001);
                    assertThat(Math.abs(page.get(LAYOUT.valueIndex(h, t, i)) - v))
                            .isLessThanOrEqualTo(page.valueScale(h, t) * 0.5001f);
                }
            }
        }
        assertThat(requantized).as("requantizations exercised").isGreaterThan(100);
    }

    @Test
    void aWiderKeyRequantizesItsChannel() {
        KvLayout layout = new KvLayout(1, 4, 4, StorageType.INT8);
        Page page = page(layout, List.of(
                new float[][] {{1f, 0f, -0.5f, 0f}, {1f, 2f, 3f, 4f}},
                new float[][] {{2f, 0f, 0.25f, 0f}, {0f, 0f, 0f, 0f}}));
        // Channel 0: scale 1/127 (byte 127), then 2/127: the first byte becomes round(63.5) = 64.
        assertThat(page.keyScale(0, 0)).isEqualTo(2f / 127);
        assertThat(page.get(layout.keyIndex(0, 0, 0))).isEqualTo(64 * (2f / 127));
        assertThat(page.get(layout.keyIndex(0, 0, 1))).isEqualTo(2f);
        // Channel 2 keeps its scale (0.25 fits): -0.5 stays exact.
        assertThat(page.get(layout.keyIndex(0, 2, 0))).isEqualTo(-0.5f);
        assertThat(page.get(layout.keyIndex(0, 1, 1))).isZero();
        // Values per token: an all-zero row has scale 0 and reads back zeros.
        assertThat(page.valueScale(0, 0)).isEqualTo(4f / 127);
        assertThat(page.valueScale(0, 1)).isZero();
        assertThat(page.get(layout.valueIndex(0, 0, 3))).isEqualTo(4f);
    }

    @Test
    void kernelArithmeticIsExactAgainstTheStoredValues() {
        exactAgainstStoredValues(LAYOUT, tokens(LAYOUT, 7, new Random(3)), new ScalarKernel());
    }

    @Test
    void vectorKernelArithmeticIsExactAgainstTheStoredValuesPaddingIncluded() {
        // 20 of 32 slots filled and a bias of 0 on the empty ones too: the kernel visits slots below the count only.
        KvLayout layout = new KvLayout(2, 16, 32, StorageType.INT8);
        io.pikv.kv.compute.AttentionKernel vector = io.pikv.kv.compute.Kernels.select(layout, "auto");
        // Expected unless the build says this JVM runs without the module (by default, outside Maven too).
        boolean expectVector = Boolean.parseBoolean(System.getProperty("pikv.expect.vector", "true"));
        org.junit.jupiter.api.Assumptions.assumeTrue(expectVector, "this JVM runs without the Vector API module");
        assertThat(vector.name()).as("the Vector API kernel takes this layout").startsWith("vector");
        // Keys of one scale (not growing): the empty slots' logit of 0 is then near the largest, where counting it
        // would show.
        Random rnd = new Random(3);
        List<float[][]> tokens = new ArrayList<>();
        for (int t = 0; t < 20; t++) {
            tokens.add(new float[][] {Reference.gaussian(32, rnd, 1f), Reference.gaussian(32, rnd, 1f)});
        }
        exactAgainstStoredValues(layout, tokens, vector);
    }

    private static void exactAgainstStoredValues(KvLayout layout, List<float[][]> tokens,
                                                 io.pikv.kv.compute.AttentionKernel kernel) {
        ModelShape shape = new ModelShape(1, 6, 2, 16, 4, 2);
        Random rnd = new Random(4);
        Page page = page(layout, tokens);
        List<Reference.Entry> stored = new ArrayList<>();
        for (int t = 0; t < page.count; t++) {
            float[] k = new float[shape.kvWidth()];
            float[] v = new float[shape.kvWidth()];
            for (int h = 0; h < 2; h++) {
                for (int i = 0; i < 16; i++) {
                    k[h * 16 + i] = page.get(layout.keyIndex(h, i, t));
                    v[h * 16 + i] = page.get(layout.valueIndex(h, t, i));
                }
            }
            stored.add(new Reference.Entry(t, 0, k, v));
        }
        float[] q = Reference.gaussian(shape.queryWidth(), rnd, 2f);
        float[] bias = new float[layout.pageTokens()];
        bias[3] = Float.NEGATIVE_INFINITY; // skipped slot
        AttentionAccumulator acc = new AttentionAccumulator(shape.qHeads(), shape.headDim());
        kernel.foldPage(page, bias, shape.scaledQuery(q), shape.qHeads(), acc, KernelScratch.get(), null, 0, 0);
        float[] out = new float[acc.o.length];
        for (int qh = 0; qh < shape.qHeads(); qh++) {
            for (int i = 0; i < 16; i++) {
                out[qh * 16 + i] = acc.o[qh * 16 + i] / acc.l[qh];
            }
        }
        List<Reference.Entry> visited = new ArrayList<>(stored);
        visited.remove(3);
        assertThat(Reference.relativeError(out, Reference.attend(shape, q, visited))).isLessThanOrEqualTo(1e-5);
    }

    @Test
    void evictingTokensMovesInt8EntriesAndKeepsAttentionRight() {
        ModelShape shape = new ModelShape(1, 4, 2, 16, 4, 2);
        Random rnd = new Random(11);
        List<Reference.Entry> entries = Reference.randomEntries(shape, 40, rnd);
        try (KvStore store = new KvStore(KvStoreConfig.builder(shape).storageType(StorageType.INT8).pageTokens(8)
                .buckets(1).threads(1).build())) {
            long seq = store.createSequence();
            Reference.load(store, seq, 0, entries);
            assertThat(store.evict(seq, 0, new int[] {3, 10, 39})).isEqualTo(3);
            List<Reference.Entry> kept = new ArrayList<>(entries);
            kept.removeIf(e -> e.position() == 3 || e.position() == 10 || e.position() == 39);
            float[] q = Reference.gaussian(shape.queryWidth(), rnd, 1f);
            AttentionResult result = store.attend(seq, 0, q, AttentionScope.all(), true);
            assertThat(result.visited()).isEqualTo(37);
            int[] positions = result.positions().clone();
            Arrays.sort(positions);
            assertThat(positions).containsExactly(kept.stream().mapToInt(Reference.Entry::position).toArray());
            assertThat(Reference.relativeError(result.output(), Reference.attend(shape, q, kept)))
                    .isLessThanOrEqualTo(AttentionAccuracyTest.INT8_TOLERANCE);
        }
    }

    /** Pages whose bytes do not divide by their tokens: the experts' bytes never add up to more than the pages. */
    @Test
    void theExpertsBytesStayWithinThePagesTheyFill() {
        ModelShape shape = new ModelShape(1, 1, 1, 12, 4, 1); // int8 page of 32: 768 + 4 × (12 + 32) = 944 bytes
        Random rnd = new Random(12);
        try (KvStore store = new KvStore(KvStoreConfig.builder(shape).storageType(StorageType.INT8).pageTokens(32)
                .buckets(1).threads(1).build())) {
            assertThat(store.config().layout().pageBytes()).isEqualTo(944);
            long seq = store.createSequence();
            Reference.load(store, seq, 0, Reference.randomEntries(shape, 32, rnd));
            ShardStats stats = store.stats().get(0);
            long experts = stats.counters().stream().mapToLong(ExpertLayerCounters::bytesResident).sum();
            // 32 entries × 30 (each share rounded up) would be 960: more than the one page they fill.
            assertThat(stats.bytesInUse()).isEqualTo(944);
            assertThat(experts).isBetween(944L - shape.experts(), 944L);
        }
    }

    @Test
    void pagesAreAboutHalfTheSizeOfFp16() {
        KvLayout int8 = new KvLayout(8, 128, 32, StorageType.INT8);
        KvLayout fp16 = new KvLayout(8, 128, 32, StorageType.FP16);
        assertThat(int8.pageBytes()).isEqualTo(2 * 8 * 128 * 32 + 4 * 8 * (128 + 32));
        assertThat((double) fp16.pageBytes() / int8.pageBytes()).isBetween(1.85, 1.86);
        assertThat(int8.entryBytes()).isEqualTo((int8.pageBytes() + 31) / 32);
        assertThatThrownBy(() -> new KvLayout(1, 6, 8, StorageType.INT8))
                .hasMessageContaining("int8 pages need headDim to be a multiple of 4");
    }
}
