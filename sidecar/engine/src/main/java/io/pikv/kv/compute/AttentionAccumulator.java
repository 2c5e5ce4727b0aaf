package io.pikv.kv.compute;

import java.util.Arrays;

/**
 * Running online-softmax state of one worker over the pages it visits: per query head the running max {@code m},
 * the sum of exponentials {@code l} relative to {@code m}, and the weighted V sum {@code o} relative to {@code m}.
 * Kernels fold pages into it; the shard turns it into a {@link io.pikv.kv.PartialAttention}.
 */
public final class AttentionAccumulator {
    public final int qHeads;
    public final int headDim;
    public final float[] m;
    public final float[] l;
    public final float[] o;
    /** Per-call state of a kernel that folds in another space (see {@link AttentionKernel#begin}); null otherwise. */
    public Object kernelState;

    public AttentionAccumulator(int qHeads, int headDim) {
        this.qHeads = qHeads;
        this.headDim = headDim;
        this.m = new float[qHeads];
        this.l = new float[qHeads];
        this.o = new float[qHeads * headDim];
        reset();
    }

    /** Back to the empty state (max −∞, nothing summed). */
    public void reset() {
        Arrays.fill(m, Float.NEGATIVE_INFINITY);
        Arrays.fill(l, 0f);
        Arrays.fill(o, 0f);
        kernelState = null;
    }
}
