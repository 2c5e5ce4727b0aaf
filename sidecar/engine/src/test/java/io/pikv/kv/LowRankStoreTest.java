package io.pikv.kv;

import io.pikv.kv.compression.LowRankBases;
import io.pikv.kv.compression.LowRankBases.Grouping;
import io.pikv.kv.compression.LowRankFitter;
import org.junit.jupiter.api.Test;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/** Low-rank pages: fitting, projection on append, attention read in coefficient space, bytes, eviction. */
class LowRankStoreTest {
    private static final ModelShape SHAPE = new ModelShape(2, 8, 2, 32, 6, 2);

    /** Entries whose keys and values (per head) lie in a {@code rank}-dimensional affine subspace. */
    private static List<Reference.Entry> lowRankEntries(ModelShape shape, int n, int rank, Random rnd) {
        int d = shape.headDim();
        int heads = shape.kvHeads();
        float[][] wk = new float[heads][], wv = new float[heads][], mk = new float[heads][], mv = new float[heads][];
        for (int h = 0; h < heads; h++) {
            wk[h] = Reference.gaussian(d * rank, rnd, 1f);
            wv[h] = Reference.gaussian(d * rank, rnd, 1f);
            mk[h] = Reference.gaussian(d, rnd, 2f);
            mv[h] = Reference.gaussian(d, rnd, 1f);
        }
        List<Reference.Entry> out = new ArrayList<>();
        for (int t = 0; t < n; t++) {
            float[] k = new float[shape.kvWidth()];
            float[] v = new float[shape.kvWidth()];
            for (int h = 0; h < heads; h++) {
                float[] zk = Reference.gaussian(rank, rnd, 1f);
                float[] zv = Reference.gaussian(rank, rnd, 1f);
                for (int i = 0; i < d; i++) {
                    double a = mk[h][i];
                    double b = mv[h][i];
                    for (int j = 0; j < rank; j++) {
                        a += wk[h][i * rank + j] * zk[j];
                        b += wv[h][i * rank + j] * zv[j];
                    }
                    k[h * d + i] = (float) a;
                    v[h * d + i] = (float) b;
                }
            }
            out.add(new Reference.Entry(t, rnd.nextInt(shape.experts()), k, v));
        }
        return out;
    }

    private static LowRankBases fit(ModelShape shape, List<Reference.Entry> entries, Grouping grouping, int minTokens,
                                    int rk, int rv) {
        LowRankFitter fitter = new LowRankFitter(shape, grouping, minTokens);
        for (int layer = 0; layer < shape.layers(); layer++) {
            for (Reference.Entry e : entries) {
                fitter.observe(layer, e.expert(), e.k(), e.v());
            }
        }
        return fitter.fit(rk, rv);
    }

    /** The entries as the bases reconstruct them: {@code μ + Bᵀ B (x − μ)} per head. */
    private static List<Reference.Entry> reconstructed(LowRankBases bases, int layer, List<Reference.Entry> entries) {
        return reconstructed(bases, layer, entries, false);
    }

    /** The entries as the bases reconstruct them; {@code half}: from coefficients rounded to fp16, as fp16 pages hold. */
    private static List<Reference.Entry> reconstructed(LowRankBases bases, int layer, List<Reference.Entry> entries,
                                                       boolean half) {
        int d = bases.headDim();
        List<Reference.Entry> out = new ArrayList<>();
        float[] kc = new float[bases.kvHeads() * bases.keyRank()];
        float[] vc = new float[bases.kvHeads() * bases.valueRank()];
        for (Reference.Entry e : entries) {
            bases.project(layer, e.expert(), e.k(), e.v(), kc, vc);
            if (half) {
                for (float[] c : new float[][] {kc, vc}) {
                    for (int i = 0; i < c.length; i++) {
                        c[i] = io.pikv.kv.Fp16.toFloat(io.pikv.kv.Fp16.fromFloat(c[i]));
                    }
                }
            }
            int g = bases.group(layer, e.expert());
            float[] k = new float[e.k().length];
            float[] v = new float[e.v().length];
            for (int h = 0; h < bases.kvHeads(); h++) {
                for (int i = 0; i < d; i++) {
                    double a = bases.keyMean(layer, g, h, i);
                    for (int j = 0; j < bases.keyRank(); j++) {
                        a += (double) kc[h * bases.keyRank() + j] * bases.keyBasis(layer, g, h, j, i);
                    }
                    double b = bases.valueMean(layer, g, h, i);
                    for (int j = 0; j < bases.valueRank(); j++) {
                        b += (double) vc[h * bases.valueRank() + j] * bases.valueBasis(layer, g, h, j, i);
                    }
                    k[h * d + i] = (float) a;
                    v[h * d + i] = (float) b;
                }
            }
            out.add(new Reference.Entry(e.position(), e.expert(), k, v));
        }
        return out;
    }

    private static KvStore store(LowRankBases bases, StorageType type, int shards, int buckets) {
        return new KvStore(KvStoreConfig.builder(SHAPE).storageType(type).pageTokens(16).shards(shards)
                .buckets(buckets).threads(2).lowRank(bases).build());
    }

    @Test
    void dataOfTheFittedRankComesBackExactly() {
        Random rnd = new Random(21);
        List<Reference.Entry> entries = lowRankEntries(SHAPE, 300, 8, rnd);
        for (Grouping grouping : Grouping.values()) {
            LowRankBases bases = fit(SHAPE, entries, grouping, 40, 8, 8);
            for (LowRankBases.Fit f : bases.fits()) {
                assertThat(f.keyRetained()).isGreaterThan(1 - 1e-9);
                assertThat(f.valueRetained()).isGreaterThan(1 - 1e-9);
            }
            try (KvStore store = store(bases, StorageType.FP32, 2, 4)) {
                long seq = store.createSequence();
                Reference.load(store, seq, 1, entries);
                for (int trial = 0; trial < 3; trial++) {
                    float[] q = Reference.gaussian(SHAPE.queryWidth(), rnd, 1f + trial);
                    AttentionResult r = store.attend(seq, 1, q, AttentionScope.all(), true);
                    assertThat(Reference.relativeError(r.output(), Reference.attend(SHAPE, q, entries)))
                            .as("%s trial %d", grouping, trial).isLessThanOrEqualTo(1e-4);
                    assertThat(r.visited()).isEqualTo(entries.size());
                    double[] w = Reference.weights(SHAPE, q, entries, 5);
                    int[] pos = r.positions();
                    for (int j = 0; j < pos.length; j++) {
                        assertThat((double) r.weight(5, j)).isCloseTo(w[pos[j]], org.assertj.core.data.Offset.offset(1e-4));
                    }
                }
            }
        }
    }

    @Test
    void attentionIsExactOverTheReconstructedEntriesForEveryCoefficientType() {
        Random rnd = new Random(4);
        // Full-rank data, rank-6 keys and rank-10 values: lossy, but the kernel must equal attention over exactly
        // what the bases reconstruct from the coefficients the pages hold (fp32, or rounded to fp16). int8 pages
        // scale their coefficients per page (keys per channel, values per token), which the reference does not
        // redo: those are held to the int8 tolerance of plain pages.
        List<Reference.Entry> entries = Reference.randomEntries(SHAPE, 211, rnd);
        for (Grouping grouping : Grouping.values()) {
            LowRankBases bases = fit(SHAPE, entries, grouping, 30, 8, 12);
            for (StorageType type : StorageType.values()) {
                List<Reference.Entry> expected = reconstructed(bases, 0, entries, type == StorageType.FP16);
                double tolerance = type == StorageType.INT8 ? AttentionAccuracyTest.INT8_TOLERANCE : 1e-5;
                try (KvStore store = store(bases, type, 3, 2)) {
                    long seq = store.createSequence();
                    Reference.load(store, seq, 0, entries);
                    float[] q = Reference.gaussian(SHAPE.queryWidth(), rnd, 2f);
                    AttentionResult r = store.attend(seq, 0, q);
                    assertThat(r.visited()).isEqualTo(entries.size());
                    assertThat(Reference.relativeError(r.output(), Reference.attend(SHAPE, q, expected)))
                            .as("%s %s", grouping, type).isLessThanOrEqualTo(tolerance);
                    // Sparse scope: only experts 1 and 4.
                    List<Reference.Entry> scoped = new ArrayList<>(expected);
                    scoped.removeIf(e -> e.expert() != 1 && e.expert() != 4);
                    AttentionResult s = store.attend(seq, 0, q, AttentionScope.experts(1, 4), false);
                    assertThat(s.visited()).isEqualTo(scoped.size());
                    assertThat(Reference.relativeError(s.output(), Reference.attend(SHAPE, q, scoped)))
                            .isLessThanOrEqualTo(tolerance);
                }
            }
        }
    }

    @Test
    void anOutlierDirectionKeepsAFarEntryThatPrincipalComponentsDrop() {
        // Rank-5 structure plus small noise everywhere; entry 0 (a sink-like key) has no structured part and sits 20
        // units off along a direction that carries no other variance: too little variance (400 / 400 = 1 per entry)
        // for a principal component next to the structured ones (~32 each).
        ModelShape shape = new ModelShape(1, 2, 1, 32, 2, 1);
        Random rnd = new Random(40);
        List<Reference.Entry> structured = lowRankEntries(shape, 401, 5, rnd);
        float[] mean = structured.get(400).k(); // an entry's structured part averages out; use the mean instead
        java.util.Arrays.fill(mean, 0f);
        for (Reference.Entry e : structured.subList(0, 400)) {
            for (int i = 0; i < 32; i++) {
                mean[i] += e.k()[i] / 400;
            }
        }
        float[] off = Reference.gaussian(32, rnd, 1f);
        double norm = 0;
        for (float x : off) {
            norm += x * x;
        }
        List<Reference.Entry> entries = new ArrayList<>();
        for (Reference.Entry e : structured.subList(0, 400)) {
            float[] k = e.position() == 0 ? mean.clone() : e.k().clone();
            float[] noise = Reference.gaussian(32, rnd, 0.05f);
            for (int i = 0; i < 32; i++) {
                k[i] += noise[i] + (e.position() == 0 ? (float) (20 * off[i] / Math.sqrt(norm)) : 0f);
            }
            entries.add(new Reference.Entry(e.position(), 0, k, e.v()));
        }
        double[] error = new double[2];
        for (int o = 0; o < 2; o++) {
            LowRankFitter fitter = new LowRankFitter(shape, Grouping.SHARED, 1);
            for (Reference.Entry e : entries) {
                fitter.observe(0, 0, e.k(), e.v());
            }
            LowRankBases bases = fitter.fit(5, 4, o);
            assertThat(bases.fits().get(0).keyRetained()).isGreaterThan(o == 0 ? 0.95 : 0.9);
            float[] k = reconstructed(bases, 0, entries.subList(0, 1)).get(0).k();
            for (int i = 0; i < 32; i++) {
                error[o] += Math.pow(k[i] - entries.get(0).k()[i], 2);
            }
            error[o] = Math.sqrt(error[o]);
        }
        assertThat(error[0]).isGreaterThan(18);
        assertThat(error[1]).isLessThan(1);
    }

    @Test
    void expertBasesOnlyForExpertsWithEnoughTokens() {
        Random rnd = new Random(8);
        List<Reference.Entry> entries = new ArrayList<>();
        // 60 entries of expert 2, 25 of expert 3, 5 of expert 0; none of the others.
        int[] experts = new int[90];
        Arrays.fill(experts, 0, 60, 2);
        Arrays.fill(experts, 60, 85, 3);
        List<Reference.Entry> raw = Reference.randomEntries(SHAPE, 90, rnd);
        for (int t = 0; t < 90; t++) {
            entries.add(new Reference.Entry(t, experts[t], raw.get(t).k(), raw.get(t).v()));
        }
        LowRankBases bases = fit(SHAPE, entries, Grouping.EXPERT, 20, 4, 4);
        for (int layer = 0; layer < 2; layer++) {
            assertThat(bases.groups(layer)).isEqualTo(3);
            assertThat(bases.group(layer, 2)).isEqualTo(1);
            assertThat(bases.group(layer, 3)).isEqualTo(2);
            assertThat(bases.group(layer, 0)).isZero();
            assertThat(bases.group(layer, 5)).isZero();
        }
        assertThat(bases.fits()).hasSize(2 * 3 * SHAPE.kvHeads());
        assertThat(bases.fits().stream().filter(f -> f.layer() == 0 && f.head() == 1).map(LowRankBases.Fit::tokens))
                .containsExactly(90, 60, 25);
        assertThat(bases.fits().stream().filter(f -> f.group() == 2).map(LowRankBases.Fit::expert).distinct())
                .containsExactly(3);
        // Float32 means and rows per (layer, group, head): (1 + 4) + (1 + 4) rows of 32.
        assertThat(bases.bytes()).isEqualTo(2L * 3 * SHAPE.kvHeads() * 10 * 32 * 4);
        // However low minExpertTokens is set, an expert gets its own basis only with more entries than the rank:
        // expert 0's 5 entries span 4 directions, too few for a rank-8 basis, while 25 and 60 are enough.
        LowRankBases low = fit(SHAPE, entries, Grouping.EXPERT, 1, 8, 8);
        assertThat(low.group(0, 0)).isZero();
        assertThat(low.groups(0)).isEqualTo(3);
    }

    @Test
    void pagesHoldCoefficientsAndTheStoreCountsThem() {
        Random rnd = new Random(12);
        List<Reference.Entry> entries = lowRankEntries(SHAPE, 64, 4, rnd);
        LowRankBases bases = fit(SHAPE, entries, Grouping.SHARED, 1, 8, 16);
        try (KvStore store = new KvStore(KvStoreConfig.builder(SHAPE).storageType(StorageType.FP16).pageTokens(16)
                .buckets(1).threads(1).lowRank(bases).build())) {
            KvLayout layout = store.shards().get(0).layout();
            assertThat(layout.projected()).isTrue();
            assertThat(layout.pageBytes()).isEqualTo(2 * 16 * (8 + 16) * 2);
            long seq = store.createSequence();
            Reference.load(store, seq, 0, entries);
            assertThat(store.bytesInUse()).isEqualTo(4L * layout.pageBytes());
            assertThat(store.projectionBytes()).isEqualTo(bases.bytes())
                    .isEqualTo(2L * SHAPE.kvHeads() * ((1 + 8) + (1 + 16)) * 32 * 4);
            KvLayout plain = new KvLayout(2, 32, 16, StorageType.FP16);
            assertThat((double) plain.pageBytes() / layout.pageBytes()).isEqualTo(64.0 / 24);
        }
    }

    @Test
    void fp16CoefficientsBoundTheStoreNotTheRawEntries() {
        // Every key has a component of 70,000 (beyond fp16) in dimension 0: the mean carries it, the coefficients
        // stay small, so an fp16 low-rank store takes the entries; a plain fp16 store refuses them.
        Random rnd = new Random(13);
        List<Reference.Entry> entries = lowRankEntries(SHAPE, 64, 4, rnd);
        for (Reference.Entry e : entries) {
            e.k()[0] += 70_000f;
        }
        LowRankBases bases = fit(SHAPE, entries, Grouping.SHARED, 1, 8, 16);
        try (KvStore store = new KvStore(KvStoreConfig.builder(SHAPE).storageType(StorageType.FP16).pageTokens(16)
                .buckets(1).threads(1).lowRank(bases).build());
             KvStore plain = new KvStore(KvStoreConfig.builder(SHAPE).storageType(StorageType.FP16).pageTokens(16)
                     .buckets(1).threads(1).build())) {
            long seq = store.createSequence();
            Reference.load(store, seq, 0, entries);
            assertThat(store.residentPositions(seq, 0)).hasSize(entries.size());
            long p = plain.createSequence();
            Reference.Entry first = entries.get(0);
            assertThatThrownBy(() -> plain.append(p, 0, first.expert(), first.k(), first.v()))
                    .hasMessageContaining("within ±65504 for fp16 storage");
        }
    }

    @Test
    void theBatchCheckRefusesCoefficientsBeyondTheStorageTypeAsTheAppendDoes() {
        Random rnd = new Random(14);
        List<Reference.Entry> entries = lowRankEntries(SHAPE, 64, 4, rnd);
        LowRankBases bases = fit(SHAPE, entries, Grouping.SHARED, 1, 8, 16);
        try (KvStore store = new KvStore(KvStoreConfig.builder(SHAPE).storageType(StorageType.FP16).pageTokens(16)
                .buckets(1).threads(1).lowRank(bases).build())) {
            long seq = store.createSequence();
            Reference.Entry e = entries.get(0);
            float[] loud = e.k().clone();
            for (int i = 0; i < loud.length; i++) {
                loud[i] *= 1e5f; // finite and within ±2^50, but its coefficients are beyond ±65504
            }
            KvShard shard = store.shards().get(0);
            assertThatThrownBy(() -> shard.checkAppend(seq, 0, 0, e.expert(), loud, e.v()))
                    .hasMessageContaining("outside the range of FP16 storage");
            assertThatThrownBy(() -> shard.append(seq, 0, 0, e.expert(), loud, e.v()))
                    .hasMessageContaining("outside the range of FP16 storage");
            shard.checkAppend(seq, 0, 0, e.expert(), e.k(), e.v()); // the entry itself is fine
        }
    }

    @Test
    void evictionMovesCoefficientsAndKeepsAttentionRight() {
        Random rnd = new Random(30);
        List<Reference.Entry> entries = lowRankEntries(SHAPE, 150, 6, rnd);
        LowRankBases bases = fit(SHAPE, entries, Grouping.SHARED, 1, 8, 8);
        for (StorageType type : new StorageType[] {StorageType.FP32, StorageType.INT8}) {
            try (KvStore store = store(bases, type, 2, 2)) {
                long seq = store.createSequence();
                Reference.load(store, seq, 0, entries);
                int[] victims = {0, 7, 8, 9, 50, 149, 77};
                assertThat(store.evict(seq, 0, victims)).isEqualTo(victims.length);
                List<Reference.Entry> kept = new ArrayList<>(entries);
                kept.removeIf(e -> Arrays.stream(victims).anyMatch(v -> v == e.position()));
                float[] q = Reference.gaussian(SHAPE.queryWidth(), rnd, 1.5f);
                AttentionResult r = store.attend(seq, 0, q, AttentionScope.all(), true);
                assertThat(r.visited()).isEqualTo(kept.size());
                assertThat(Reference.relativeError(r.output(), Reference.attend(SHAPE, q, kept)))
                        .isLessThanOrEqualTo(type == StorageType.FP32 ? 1e-4 : AttentionAccuracyTest.INT8_TOLERANCE);
            }
        }
    }

    @Test
    void mismatchedBasesAndEmptyCalibrationAreRejected() {
        Random rnd = new Random(1);
        List<Reference.Entry> entries = Reference.randomEntries(SHAPE, 40, rnd);
        LowRankBases bases = fit(SHAPE, entries, Grouping.SHARED, 1, 4, 4);
        ModelShape other = new ModelShape(2, 8, 2, 32, 7, 2);
        assertThatThrownBy(() -> KvStoreConfig.builder(other).lowRank(bases).build())
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("do not match");
        assertThatThrownBy(() -> KvStoreConfig.builder(SHAPE).lowRank(bases).kernel("vector").build())
                .isInstanceOf(IllegalArgumentException.class).hasMessage("kernel vector cannot serve low-rank pages, "
                        + "which attend through the low-rank kernel; use auto or scalar");
        LowRankFitter fitter = new LowRankFitter(SHAPE, Grouping.SHARED, 1);
        fitter.observe(0, 0, entries.get(0).k(), entries.get(0).v());
        assertThatThrownBy(() -> fitter.fit(4, 4)).isInstanceOf(IllegalStateException.class)
                .hasMessage("no calibration entries were observed for layer 1");
        assertThat(fitter.observed(0)).as("a refused fit keeps what was observed").isEqualTo(1);
        float[] bad = entries.get(1).k().clone();
        bad[3] = Float.NaN;
        assertThatThrownBy(() -> fitter.observe(1, 0, bad, entries.get(1).v()))
                .hasMessage("K[head 0][3] is NaN: values must be finite");
        float[] far = entries.get(1).v().clone();
        far[1] = 1e31f; // finite, but a mean this far out would overflow a query's product with it
        assertThatThrownBy(() -> fitter.observe(1, 0, entries.get(1).k(), far))
                .hasMessage("V[head 0][1] is 1.0E31: values must be finite and within ±2^50 (about 1.1e15)");
        assertThat(fitter.observed(1)).isZero();
        fitter.observe(1, 0, entries.get(1).k(), entries.get(1).v());
        // One entry a layer spans no direction: even rank 1 would be an arbitrary axis.
        assertThatThrownBy(() -> fitter.fit(1, 1)).isInstanceOf(IllegalStateException.class)
                .hasMessage("1 calibration entries were observed for layer 0, too few for a basis of rank 1: observe "
                        + "at least 2");
        fitter.observe(0, 0, entries.get(2).k(), entries.get(2).v());
        fitter.observe(1, 0, entries.get(3).k(), entries.get(3).v());
        assertThat(fitter.fit(1, 1).layers()).isEqualTo(2);
        assertThat(fitter.observed(0)).as("released after the fit").isZero();
        assertThatThrownBy(() -> new LowRankFitter(SHAPE, Grouping.SHARED, 1).fit(33, 4))
                .hasMessageContaining("ranks must be in [1, headDim = 32]");
        LowRankFitter full = new LowRankFitter(SHAPE, Grouping.SHARED, 1);
        full.observe(0, 0, entries.get(1).k(), entries.get(1).v());
        assertThatThrownBy(() -> full.fit(32, 32)).hasMessageContaining("that is a plain store");
        assertThat(full.observed(0)).as("kept for another fit").isEqualTo(1);
        assertThatThrownBy(() -> new KvLayout(2, 32, 16, StorageType.FP16, 3, 8))
                .hasMessageContaining("rank × pageTokens to be a multiple of 32");
    }

    /** Rows j, k of the key or value basis of (layer 0, group 0, head 0): their dot product. */
    private static double dot(LowRankBases b, boolean keys, int j, int k) {
        double c = 0;
        for (int i = 0; i < b.headDim(); i++) {
            c += keys ? (double) b.keyBasis(0, 0, 0, j, i) * b.keyBasis(0, 0, 0, k, i)
                    : (double) b.valueBasis(0, 0, 0, j, i) * b.valueBasis(0, 0, 0, k, i);
        }
        return c;
    }

    @Test
    void basesStayOrthonormalWhenTheDataSpanLessThanTheRank() {
        ModelShape shape = new ModelShape(1, 2, 1, 8, 2, 1);
        Random rnd = new Random(7);
        // Four samples (three directions around their mean) for rank 3 with two outlier directions; and many samples
        // whose channels 3..7 are always zero.
        LowRankFitter few = gaussianFitter(shape, rnd, 3);
        // Three span only two: a basis of rank 3 would be an arbitrary axis reported as keeping all of the variance.
        org.assertj.core.api.Assertions.assertThatThrownBy(() -> few.fit(3, 3, 2))
                .isInstanceOf(IllegalStateException.class)
                .hasMessage("3 calibration entries were observed for layer 0, too few for a basis of rank 3: observe "
                        + "at least 4");
        few.observe(0, 0, Reference.gaussian(8, rnd, 1f), Reference.gaussian(8, rnd, 1f));
        LowRankFitter flat = new LowRankFitter(shape, Grouping.SHARED, 1);
        for (int t = 0; t < 200; t++) {
            float[] k = Reference.gaussian(8, rnd, 1f);
            float[] v = Reference.gaussian(8, rnd, 1f);
            for (int i = 3; i < 8; i++) {
                k[i] = 0;
                v[i] = 0;
            }
            flat.observe(0, 0, k, v);
        }
        for (LowRankBases b : List.of(few.fit(3, 3, 2), flat.fit(5, 5, 2))) {
            for (boolean keys : new boolean[] {true, false}) {
                int rank = keys ? b.keyRank() : b.valueRank();
                for (int j = 0; j < rank; j++) {
                    for (int k = 0; k < rank; k++) {
                        assertThat(dot(b, keys, j, k)).as("rows %d, %d", j, k).isCloseTo(j == k ? 1 : 0,
                                org.assertj.core.data.Offset.offset(1e-5));
                    }
                }
            }
            for (LowRankBases.Fit fit : b.fits()) {
                assertThat(fit.keyRetained()).isLessThanOrEqualTo(1 + 1e-6);
                assertThat(fit.valueRetained()).isLessThanOrEqualTo(1 + 1e-6);
            }
        }
    }

    /** More outlier directions than the smaller rank cannot all be kept in that basis: refused, the observations kept. */
    @Test
    void moreOutlierDirectionsThanARankAreRefusedAndTheObservationsKept() {
        ModelShape shape = new ModelShape(1, 2, 1, 8, 2, 1);
        Random rnd = new Random(11);
        LowRankFitter fitter = gaussianFitter(shape, rnd, 40);
        org.assertj.core.api.Assertions.assertThatThrownBy(() -> fitter.fit(4, 6, 5))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessage("outlierDirections must be at most the smaller rank (4), got 5");
        assertThat(fitter.observed(0)).isEqualTo(40);
        LowRankBases b = fitter.fit(4, 6, 4);
        assertThat(b.keyRank()).isEqualTo(4);
        assertThat(b.valueRank()).isEqualTo(6);
    }

    /** A shared-basis fitter of layer 0 of an 8-dim one-head shape, given {@code n} Gaussian keys and values. */
    private static LowRankFitter gaussianFitter(ModelShape shape, Random rnd, int n) {
        LowRankFitter fitter = new LowRankFitter(shape, Grouping.SHARED, 1);
        for (int t = 0; t < n; t++) {
            fitter.observe(0, 0, Reference.gaussian(8, rnd, 1f), Reference.gaussian(8, rnd, 1f));
        }
        return fitter;
    }
}
