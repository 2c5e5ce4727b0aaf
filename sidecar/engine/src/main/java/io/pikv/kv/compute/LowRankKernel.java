package io.pikv.kv.compute;

import io.pikv.kv.KvLayout;
import io.pikv.kv.Page;
import io.pikv.kv.compression.LowRankBases;

import java.util.Arrays;

/**
 * Attention over low-rank pages, read in coefficient space: no key or value is ever reconstructed.
 *
 * <p>With a key stored as {@code k ≈ μ_K + B_Kᵀ c} the logit is {@code q·k = q·μ_K + (B_K q)·c}: the query is
 * projected once per (query head, basis) and each token then costs {@code keyRank} multiply-adds. Values are
 * accumulated as coefficients, {@code Σ p_t c_t}, and expanded once per (query head, basis) when the call
 * finishes: {@code o = μ_V Σ p_t + B_Vᵀ Σ p_t c_t}. Each basis keeps its own online-softmax state (max, sum,
 * coefficient sum), so entries of different experts (different bases) can share a page; {@link #finish} merges the
 * states with the log-sum-exp rule. A page's coefficients are decoded per head into the scratch tile (fp16 widened,
 * int8 scaled), never more than one page at a time.
 */
public final class LowRankKernel implements AttentionKernel {
    private final LowRankBases bases;

    public LowRankKernel(LowRankBases bases) {
        this.bases = bases;
    }

    @Override
    public String name() {
        return "lowrank-" + bases.grouping().name().toLowerCase() + "-k" + bases.keyRank() + "v" + bases.valueRank();
    }

    @Override
    public boolean supports(KvLayout layout) {
        return layout.keyWidth() == bases.keyRank() && layout.valueWidth() == bases.valueRank()
                && layout.kvHeads() == bases.kvHeads() && layout.headDim() == bases.headDim();
    }

    /** Per-call state: projected queries and online-softmax state per (query head, basis group). */
    private static final class State {
        final int layer;
        final int groups;
        final float[][] projected;
        final float[] m;
        final float[] l;
        final float[][] coefficients;

        State(int layer, int qHeads, int groups) {
            this.layer = layer;
            this.groups = groups;
            this.projected = new float[qHeads * groups][];
            this.m = new float[qHeads * groups];
            this.l = new float[qHeads * groups];
            this.coefficients = new float[qHeads * groups][];
            Arrays.fill(m, Float.NEGATIVE_INFINITY);
        }
    }

    @Override
    public void begin(AttentionAccumulator acc, int layer) {
        acc.kernelState = new State(layer, acc.qHeads, bases.groups(layer));
    }

    @Override
    public void foldPage(Page page, float[] bias, float[] query, int qHeads, AttentionAccumulator acc,
                         KernelScratch scratch, float[] logits, int logitsStride, int logitsOffset) {
        if (!(acc.kernelState instanceof State st)) {
            throw new IllegalStateException("the low-rank kernel folds pages only between begin and finish");
        }
        KvLayout layout = page.layout();
        int count = page.count();
        int tokens = layout.pageTokens();
        int rk = layout.keyWidth();
        int rv = layout.valueWidth();
        int heads = layout.kvHeads();
        int group = qHeads / heads;
        float[] tile = scratch.ensure(rk * tokens + tokens * rv, 0, 0).tile;
        int vAt = rk * tokens;
        for (int h = 0; h < heads; h++) {
            for (int j = 0; j < rk; j++) {
                for (int t = 0; t < count; t++) {
                    tile[j * tokens + t] = page.get(layout.keyIndex(h, j, t));
                }
            }
            for (int t = 0; t < count; t++) {
                for (int j = 0; j < rv; j++) {
                    tile[vAt + t * rv + j] = page.get(layout.valueIndex(h, t, j));
                }
            }
            for (int t = 0; t < count; t++) {
                if (bias[t] != 0f) {
                    if (logits != null) {
                        for (int gi = 0; gi < group; gi++) {
                            logits[(h * group + gi) * logitsStride + logitsOffset + t] = Float.NEGATIVE_INFINITY;
                        }
                    }
                    continue;
                }
                int g = bases.group(st.layer, page.expertAt(t));
                for (int gi = 0; gi < group; gi++) {
                    int qh = h * group + gi;
                    int cell = qh * st.groups + g;
                    float[] qp = st.projected[cell];
                    if (qp == null) {
                        qp = project(st.layer, g, h, query, qh * bases.headDim());
                        st.projected[cell] = qp;
                        st.coefficients[cell] = new float[rv];
                    }
                    float s = qp[rk];
                    for (int j = 0; j < rk; j++) {
                        s += qp[j] * tile[j * tokens + t];
                    }
                    if (logits != null) {
                        logits[qh * logitsStride + logitsOffset + t] = s;
                    }
                    if (s == Float.NEGATIVE_INFINITY) {
                        continue; // no weight (and e^(−∞ − (−∞)) would be NaN while the cell has seen nothing)
                    }
                    float[] c = st.coefficients[cell];
                    if (s > st.m[cell]) {
                        float rescale = st.m[cell] == Float.NEGATIVE_INFINITY ? 0f : (float) Math.exp(st.m[cell] - s);
                        st.l[cell] *= rescale;
                        for (int j = 0; j < rv; j++) {
                            c[j] *= rescale;
                        }
                        st.m[cell] = s;
                    }
                    float p = (float) Math.exp(s - st.m[cell]);
                    st.l[cell] += p;
                    int row = vAt + t * rv;
                    for (int j = 0; j < rv; j++) {
                        c[j] += p * tile[row + j];
                    }
                }
            }
        }
    }

    /** {@code [B_K q (keyRank floats), q·μ_K]} for the scaled query head at {@code qOffset}. */
    private float[] project(int layer, int g, int h, float[] query, int qOffset) {
        int d = bases.headDim();
        int rk = bases.keyRank();
        float[] out = new float[rk + 1];
        for (int j = 0; j < rk; j++) {
            double s = 0;
            for (int i = 0; i < d; i++) {
                s += (double) bases.keyBasis(layer, g, h, j, i) * query[qOffset + i];
            }
            out[j] = (float) s;
        }
        double s = 0;
        for (int i = 0; i < d; i++) {
            s += (double) bases.keyMean(layer, g, h, i) * query[qOffset + i];
        }
        out[rk] = (float) s;
        return out;
    }

    @Override
    public void finish(AttentionAccumulator acc) {
        if (!(acc.kernelState instanceof State st)) {
            return;
        }
        int d = bases.headDim();
        int rv = bases.valueRank();
        int group = acc.qHeads / bases.kvHeads();
        double[] row = new double[d];
        for (int qh = 0; qh < acc.qHeads; qh++) {
            int h = qh / group;
            float max = Float.NEGATIVE_INFINITY;
            for (int g = 0; g < st.groups; g++) {
                max = Math.max(max, st.m[qh * st.groups + g]);
            }
            if (max == Float.NEGATIVE_INFINITY) {
                continue; // nothing visited: acc stays empty for this head
            }
            Arrays.fill(row, 0);
            double sum = 0;
            for (int g = 0; g < st.groups; g++) {
                int cell = qh * st.groups + g;
                if (st.m[cell] == Float.NEGATIVE_INFINITY) {
                    continue;
                }
                double w = Math.exp(st.m[cell] - max);
                double lg = st.l[cell] * w;
                sum += lg;
                float[] c = st.coefficients[cell];
                for (int i = 0; i < d; i++) {
                    double x = bases.valueMean(st.layer, g, h, i) * lg;
                    for (int j = 0; j < rv; j++) {
                        x += w * c[j] * bases.valueBasis(st.layer, g, h, j, i);
                    }
                    row[i] += x;
                }
            }
            acc.m[qh] = max;
            acc.l[qh] = (float) sum;
            for (int i = 0; i < d; i++) {
                acc.o[qh * d + i] = (float) row[i];
            }
        }
        acc.kernelState = null;
    }
}
