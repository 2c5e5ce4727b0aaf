package io.pikv.kv.compute;

import io.pikv.kv.KvLayout;
import io.pikv.kv.Page;
import io.pikv.kv.StorageType;

/**
 * Plain-Java kernel that reads fp32 and fp16 elements straight from the off-heap page (int8 pages: each head's bytes
 * copied into scratch first). Used where the Vector API module is absent, and as the second opinion the tests compare
 * the vector kernel with.
 */
public final class ScalarKernel implements AttentionKernel {

    @Override
    public String name() {
        return "scalar";
    }

    @Override
    public boolean supports(KvLayout layout) {
        return !layout.projected(); // low-rank pages: LowRankKernel
    }

    @Override
    public void foldPage(Page page, float[] bias, float[] query, int qHeads, AttentionAccumulator acc,
                         KernelScratch scratch, float[] logits, int logitsStride, int logitsOffset) {
        KvLayout layout = page.layout();
        if (layout.type() == StorageType.INT8) {
            foldInt8(page, bias, query, qHeads, acc, scratch, logits, logitsStride, logitsOffset);
            return;
        }
        int count = page.count();
        int dim = layout.headDim();
        int group = qHeads / layout.kvHeads();
        float[] s = scratch.ensure(0, count, 0).scores;
        for (int qh = 0; qh < qHeads; qh++) {
            int h = qh / group;
            float pageMax = Float.NEGATIVE_INFINITY;
            for (int t = 0; t < count; t++) {
                float logit = Float.NEGATIVE_INFINITY;
                if (bias[t] == 0f) {
                    float dot = 0f;
                    for (int i = 0; i < dim; i++) {
                        dot += query[qh * dim + i] * page.get(layout.keyIndex(h, i, t));
                    }
                    logit = dot;
                    pageMax = Math.max(pageMax, dot);
                }
                s[t] = logit;
                if (logits != null) {
                    logits[qh * logitsStride + logitsOffset + t] = logit;
                }
            }
            if (pageMax == Float.NEGATIVE_INFINITY) {
                continue;
            }
            float newMax = Math.max(acc.m[qh], pageMax);
            float rescale = (float) Math.exp(acc.m[qh] - newMax);
            float sum = 0f;
            int base = qh * dim;
            if (rescale != 1f) {
                for (int i = 0; i < dim; i++) {
                    acc.o[base + i] *= rescale;
                }
            }
            for (int t = 0; t < count; t++) {
                if (s[t] == Float.NEGATIVE_INFINITY) {
                    continue;
                }
                float p = (float) Math.exp(s[t] - newMax);
                sum += p;
                for (int i = 0; i < dim; i++) {
                    acc.o[base + i] += p * page.get(layout.valueIndex(h, t, i));
                }
            }
            acc.l[qh] = acc.l[qh] * rescale + sum;
            acc.m[qh] = newMax;
        }
    }

    /**
     * int8 pages, read without widening the page: a head's key scales fold into the query ({@code q_i · ks_i}) and
     * a token's value scale into its probability ({@code p_t · vs_t}), so the loops multiply bytes directly.
     */
    private static void foldInt8(Page page, float[] bias, float[] query, int qHeads, AttentionAccumulator acc,
                                 KernelScratch scratch, float[] logits, int logitsStride, int logitsOffset) {
        KvLayout layout = page.layout();
        int count = page.count();
        int dim = layout.headDim();
        int tokens = layout.pageTokens();
        int group = qHeads / layout.kvHeads();
        scratch.ensure(0, tokens, 0).ensureInt8(2 * dim * tokens, 3 * dim + tokens);
        float[] s = scratch.scores;
        byte[] kv = scratch.bytes;          // K [dim][tokens] then V [tokens][dim] of one head
        float[] aux = scratch.aux;          // key scales [dim], scaled query [dim], value scales [tokens], row [dim]
        int qs = dim;
        int vs = 2 * dim;
        for (int h = 0; h < layout.kvHeads(); h++) {
            page.readBytes(layout.keyIndex(h, 0, 0), kv, 0, dim * tokens);
            page.readBytes(layout.valueIndex(h, 0, 0), kv, dim * tokens, tokens * dim);
            for (int i = 0; i < dim; i++) {
                aux[i] = page.keyScale(h, i);
            }
            for (int t = 0; t < count; t++) {
                aux[vs + t] = page.valueScale(h, t);
            }
            for (int g = 0; g < group; g++) {
                int qh = h * group + g;
                for (int i = 0; i < dim; i++) {
                    aux[qs + i] = query[qh * dim + i] * aux[i];
                }
                java.util.Arrays.fill(s, 0, count, 0f);
                for (int i = 0; i < dim; i++) {
                    float qi = aux[qs + i];
                    int row = i * tokens;
                    for (int t = 0; t < count; t++) {
                        s[t] += qi * kv[row + t];
                    }
                }
                float pageMax = Float.NEGATIVE_INFINITY;
                for (int t = 0; t < count; t++) {
                    if (bias[t] != 0f) {
                        s[t] = Float.NEGATIVE_INFINITY;
                    }
                    pageMax = Math.max(pageMax, s[t]);
                    if (logits != null) {
                        logits[qh * logitsStride + logitsOffset + t] = s[t];
                    }
                }
                if (pageMax == Float.NEGATIVE_INFINITY) {
                    continue;
                }
                float newMax = Math.max(acc.m[qh], pageMax);
                float rescale = (float) Math.exp(acc.m[qh] - newMax);
                int base = qh * dim;
                if (rescale != 1f) {
                    for (int i = 0; i < dim; i++) {
                        acc.o[base + i] *= rescale;
                    }
                }
                float sum = 0f;
                for (int t = 0; t < count; t++) {
                    if (s[t] == Float.NEGATIVE_INFINITY) {
                        continue;
                    }
                    float p = (float) Math.exp(s[t] - newMax);
                    sum += p;
                    float pv = p * aux[vs + t];
                    int row = dim * tokens + t * dim;
                    for (int i = 0; i < dim; i++) {
                        acc.o[base + i] += pv * kv[row + i];
                    }
                }
                acc.l[qh] = acc.l[qh] * rescale + sum;
                acc.m[qh] = newMax;
            }
        }
    }
}
