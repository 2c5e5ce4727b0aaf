package io.pikv.kv.compute;

/**
 * Per-thread working memory of a kernel: the page tile staged from off-heap memory and the page's scores.
 * Grown on demand, reused across calls, so a decode step allocates nothing per page or per token.
 */
public final class KernelScratch {
    private static final ThreadLocal<KernelScratch> LOCAL = ThreadLocal.withInitial(KernelScratch::new);

    public float[] tile = new float[0];
    public int[] halfWords = new int[0];
    public float[] scores = new float[0];
    public float[] bias = new float[0];
    /** int8 pages: one head's K and V bytes, and its scales with the scaled query. */
    public byte[] bytes = new byte[0];
    public float[] aux = new float[0];

    /** The calling thread's scratch. */
    public static KernelScratch get() {
        return LOCAL.get();
    }

    /** Ensures the int8 buffers hold at least the given number of elements. */
    public KernelScratch ensureInt8(int byteElems, int auxElems) {
        if (bytes.length < byteElems) {
            bytes = new byte[byteElems];
        }
        if (aux.length < auxElems) {
            aux = new float[auxElems];
        }
        return this;
    }

    /** Ensures each buffer holds at least the given number of elements. */
    public KernelScratch ensure(int tileElems, int scoreElems, int biasElems) {
        if (tile.length < tileElems) {
            tile = new float[tileElems];
            halfWords = new int[(tileElems + 31) / 2];
        }
        if (scores.length < scoreElems) {
            scores = new float[scoreElems];
        }
        if (bias.length < biasElems) {
            bias = new float[biasElems];
        }
        return this;
    }
}
