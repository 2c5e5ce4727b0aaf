package io.pikv.kv;

/**
 * The shape of the model whose KV a store holds.
 *
 * @param layers   transformer layers (each has its own KV)
 * @param qHeads   query heads; a multiple of {@code kvHeads} (grouped-query attention)
 * @param kvHeads  key/value heads
 * @param headDim  dimension of one head
 * @param experts  routed experts per MoE layer
 * @param topK     experts each token is routed to
 */
public record ModelShape(int layers, int qHeads, int kvHeads, int headDim, int experts, int topK) {

    /** Upper bounds that keep every derived size inside an int and catch typos early. */
    public static final int MAX_LAYERS = 1024;
    public static final int MAX_HEADS = 1024;
    public static final int MAX_HEAD_DIM = 1024;
    public static final int MAX_EXPERTS = 4096;
    /**
     * Largest magnitude of a query, key or value element: 2^50 (about 1.1e15), far beyond any activation. A logit of
     * {@link #MAX_HEAD_DIM} such products stays below 2^110, so no dot product can overflow to infinity (which would
     * turn the softmax, and every later answer over that sequence, into NaN).
     */
    public static final float MAX_ABS_VALUE = 0x1p50f;

    public ModelShape {
        check(layers, 1, MAX_LAYERS, "layers");
        check(kvHeads, 1, MAX_HEADS, "kvHeads");
        check(qHeads, 1, MAX_HEADS, "qHeads");
        check(headDim, 1, MAX_HEAD_DIM, "headDim");
        check(experts, 1, MAX_EXPERTS, "experts");
        check(topK, 1, experts, "topK");
        if (qHeads % kvHeads != 0) {
            throw new IllegalArgumentException("qHeads (" + qHeads + ") must be a multiple of kvHeads (" + kvHeads
                    + ") for grouped-query attention");
        }
    }

    private static void check(int value, int min, int max, String name) {
        if (value < min || value > max) {
            throw new IllegalArgumentException(name + " must be in [" + min + ", " + max + "], got " + value);
        }
    }

    /** Query heads per KV head. */
    public int groupSize() {
        return qHeads / kvHeads;
    }

    /** Floats in one token's K (or V) for one layer: {@code kvHeads × headDim}. */
    public int kvWidth() {
        return kvHeads * headDim;
    }

    /** Floats in one query: {@code qHeads × headDim}. */
    public int queryWidth() {
        return qHeads * headDim;
    }

    /**
     * Checks a query ({@code qHeads × headDim} finite floats within {@link #MAX_ABS_VALUE}, head-major) and returns a
     * copy scaled by
     * {@code 1/√headDim}, the form every attention kernel takes.
     */
    public float[] scaledQuery(float[] query) {
        checkQuery(query);
        float scale = (float) (1.0 / Math.sqrt(headDim));
        float[] scaled = new float[query.length];
        for (int i = 0; i < query.length; i++) {
            scaled[i] = query[i] * scale;
        }
        return scaled;
    }

    /**
     * @throws IllegalArgumentException unless {@code query} is {@code qHeads × headDim} finite floats within
     *                                  {@link #MAX_ABS_VALUE}: what attention takes (a caller that stores something
     *                                  first checks the query before it does)
     */
    public void checkQuery(float[] query) {
        if (query == null || query.length != queryWidth()) {
            throw new IllegalArgumentException("query must hold qHeads × headDim = " + queryWidth()
                    + " floats, got " + (query == null ? "none" : query.length));
        }
        for (int i = 0; i < query.length; i++) {
            if (!(Math.abs(query[i]) <= MAX_ABS_VALUE)) {
                throw new IllegalArgumentException("query[" + i + "] is " + query[i] + ": values must be finite"
                        + (Float.isFinite(query[i]) ? " and within ±2^50 (about 1.1e15)" : ""));
            }
        }
    }

    /**
     * @throws IllegalArgumentException unless {@code values} are one token's keys or values: {@code kvHeads × headDim}
     *                                  finite floats within {@link #MAX_ABS_VALUE}, what every page type stores (fp16
     *                                  pages take a narrower range, which their store checks)
     */
    public void checkKv(String name, float[] values) {
        if (values == null || values.length != kvWidth()) {
            throw new IllegalArgumentException(name + " must hold kvHeads × headDim = " + kvWidth() + " floats, got "
                    + (values == null ? "none" : values.length));
        }
        for (int i = 0; i < values.length; i++) {
            if (!(Math.abs(values[i]) <= MAX_ABS_VALUE)) {
                throw new IllegalArgumentException(name + "[head " + (i / headDim) + "][" + (i % headDim) + "] is "
                        + values[i] + ": values must be finite" + (Float.isFinite(values[i])
                        ? " and within ±2^50 (about 1.1e15)" : ""));
            }
        }
    }

    /** @throws IllegalArgumentException naming the model's range when {@code layer} is not one of its layers */
    public void checkLayer(int layer) {
        if (layer < 0 || layer >= layers) {
            throw new IllegalArgumentException("layer " + layer + " is out of range: the model has " + layers
                    + " layers (0.." + (layers - 1) + ")");
        }
    }

    /** @throws IllegalArgumentException naming the model's range when {@code expert} is not one of its experts */
    public void checkExpert(int expert) {
        if (expert < 0 || expert >= experts) {
            throw new IllegalArgumentException("expert " + expert + " is out of range: the model has " + experts
                    + " experts (0.." + (experts - 1) + ")");
        }
    }
}
