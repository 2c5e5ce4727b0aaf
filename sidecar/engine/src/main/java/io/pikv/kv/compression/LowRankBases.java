package io.pikv.kv.compression;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.FloatBuffer;
import java.util.List;

/**
 * Fitted low-rank bases of a model's keys and values (PiKV's LoRA-style KV module): per (layer, basis group, KV
 * head) a key mean {@code μ_K ∈ R^d} and {@code keyRank} orthonormal rows {@code B_K}, and the same for values.
 * An entry is stored as its coefficients {@code c = B (x − μ)} and read as {@code μ + Bᵀ c}.
 *
 * <p>Groups: with {@link Grouping#SHARED} one basis per (layer, head) serves every expert; with
 * {@link Grouping#EXPERT} each expert that had enough calibration tokens has its own basis per (layer, head), and
 * the others fall back to the layer's shared basis (group 0). The bases live off-heap in float32; {@link #bytes()}
 * is what they occupy, and it counts toward the memory a low-rank store uses. Built by {@link LowRankFitter};
 * immutable and safe to share between shards and threads.
 */
public final class LowRankBases {

    /** Which entries share a basis. */
    public enum Grouping {
        /** One basis per (layer, KV head), for all experts. */
        SHARED,
        /** One basis per (layer, expert, KV head); experts with too few calibration tokens use the shared one. */
        EXPERT;

        /** Parses {@code shared} or {@code expert} (case-insensitive). */
        public static Grouping parse(String text) {
            for (Grouping g : values()) {
                if (g.name().equalsIgnoreCase(text)) {
                    return g;
                }
            }
            throw new IllegalArgumentException("unknown basis grouping '" + text + "': use shared or expert");
        }
    }

    /**
     * What one fitted basis captured on its calibration data.
     *
     * @param group          0 for the layer's shared basis, else 1 + its index among the layer's expert bases
     * @param expert         the expert of an expert basis, −1 for the shared one
     * @param tokens         calibration entries it was fitted on
     * @param keyRetained    fraction of the keys' variance (around their mean) the key basis keeps
     * @param valueRetained  the same for values
     */
    public record Fit(int layer, int group, int expert, int head, int tokens, double keyRetained,
                      double valueRetained) {
    }

    private final Grouping grouping;
    private final int layers;
    private final int kvHeads;
    private final int headDim;
    private final int experts;
    private final int keyRank;
    private final int valueRank;
    /** groupOf[layer][expert]: the basis group an entry of this expert uses. */
    private final int[][] groupOf;
    private final int[] groups;
    private final FloatBuffer[] data;
    private final long bytes;
    private final List<Fit> fits;

    /** Refuses a layer's bases of {@code floats} floats that one buffer cannot hold. */
    static void checkLayerSize(int layer, long floats) {
        if (floats * Float.BYTES > Integer.MAX_VALUE) {
            throw new IllegalArgumentException("layer " + layer + "'s bases take " + floats * Float.BYTES
                    + " bytes, more than one buffer holds (2 GiB): fit fewer groups or lower ranks");
        }
    }

    LowRankBases(Grouping grouping, int layers, int kvHeads, int headDim, int experts, int keyRank, int valueRank,
                 int[][] groupOf, float[][] layerData, List<Fit> fits) {
        this.grouping = grouping;
        this.layers = layers;
        this.kvHeads = kvHeads;
        this.headDim = headDim;
        this.experts = experts;
        this.keyRank = keyRank;
        this.valueRank = valueRank;
        this.groupOf = groupOf;
        this.groups = new int[layers];
        this.data = new FloatBuffer[layers];
        long total = 0;
        for (int l = 0; l < layers; l++) {
            float[] src = layerData[l];
            checkLayerSize(l, src.length);
            groups[l] = src.length / (kvHeads * stride());
            ByteBuffer buf = ByteBuffer.allocateDirect(src.length * Float.BYTES).order(ByteOrder.LITTLE_ENDIAN);
            FloatBuffer fb = buf.asFloatBuffer();
            fb.put(0, src, 0, src.length);
            data[l] = fb;
            total += buf.capacity();
        }
        this.bytes = total;
        this.fits = List.copyOf(fits);
    }

    /** Floats of one (group, head): key mean, key basis, value mean, value basis. */
    private int stride() {
        return (1 + keyRank) * headDim + (1 + valueRank) * headDim;
    }

    public Grouping grouping() {
        return grouping;
    }

    public int layers() {
        return layers;
    }

    public int kvHeads() {
        return kvHeads;
    }

    public int headDim() {
        return headDim;
    }

    public int experts() {
        return experts;
    }

    /** Coefficients stored per key (per token and head). */
    public int keyRank() {
        return keyRank;
    }

    /** Coefficients stored per value (per token and head). */
    public int valueRank() {
        return valueRank;
    }

    /** Basis groups of {@code layer} (1 for shared grouping). */
    public int groups(int layer) {
        return groups[layer];
    }

    /** The basis group an entry of {@code expert} in {@code layer} is projected with. */
    public int group(int layer, int expert) {
        return groupOf[layer][expert];
    }

    /** Off-heap bytes of all bases (means included). */
    public long bytes() {
        return bytes;
    }

    /** What each basis captured on its calibration data, in (layer, group, head) order. */
    public List<Fit> fits() {
        return fits;
    }

    private int base(int group, int head) {
        return (group * kvHeads + head) * stride();
    }

    /** Key mean element {@code i} of (layer, group, head). */
    public float keyMean(int layer, int group, int head, int i) {
        return data[layer].get(base(group, head) + i);
    }

    /** Element {@code i} of key basis row {@code j} of (layer, group, head). */
    public float keyBasis(int layer, int group, int head, int j, int i) {
        return data[layer].get(base(group, head) + (1 + j) * headDim + i);
    }

    /** Value mean element {@code i} of (layer, group, head). */
    public float valueMean(int layer, int group, int head, int i) {
        return data[layer].get(base(group, head) + (1 + keyRank) * headDim + i);
    }

    /** Element {@code i} of value basis row {@code j} of (layer, group, head). */
    public float valueBasis(int layer, int group, int head, int j, int i) {
        return data[layer].get(base(group, head) + (2 + keyRank + j) * headDim + i);
    }

    /**
     * Coefficients of one entry of {@code expert} in {@code layer}: {@code k} and {@code v} are
     * {@code kvHeads × headDim} head-major; {@code kc} receives {@code kvHeads × keyRank} and {@code vc}
     * {@code kvHeads × valueRank} coefficients, head-major.
     */
    public void project(int layer, int expert, float[] k, float[] v, float[] kc, float[] vc) {
        int g = group(layer, expert);
        FloatBuffer f = data[layer];
        int d = headDim;
        for (int h = 0; h < kvHeads; h++) {
            int b = base(g, h);
            for (int j = 0; j < keyRank; j++) {
                kc[h * keyRank + j] = dotCentered(f, b + (1 + j) * d, b, k, h * d, d);
            }
            int vb = b + (1 + keyRank) * d;
            for (int j = 0; j < valueRank; j++) {
                vc[h * valueRank + j] = dotCentered(f, vb + (1 + j) * d, vb, v, h * d, d);
            }
        }
    }

    /** {@code Σ_i row[i] · (x[i] − mean[i])} in double. */
    private static float dotCentered(FloatBuffer f, int row, int mean, float[] x, int xOffset, int d) {
        double s = 0;
        for (int i = 0; i < d; i++) {
            s += (double) f.get(row + i) * ((double) x[xOffset + i] - f.get(mean + i));
        }
        return (float) s;
    }
}
