package io.pikv.kv.compute;

import io.pikv.kv.KvLayout;
import io.pikv.kv.Page;

/**
 * Plain-Java kernel that reads every element straight from the off-heap page. Used where the Vector API module is
 * absent, and as the second opinion the tests compare the vector kernel with.
 */
public final class ScalarKernel implements AttentionKernel {

    @Override
    public String name() {
        return "scalar";
    }

    @Override
    public boolean supports(KvLayout layout) {
        return true;
    }

    @Override
    public void foldPage(Page page, float[] bias, float[] query, int qHeads, AttentionAccumulator acc,
                         KernelScratch scratch, float[] logits, int logitsStride, int logitsOffset) {
        KvLayout layout = page.layout();
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
}
