package io.pikv.kv.compression;

import io.pikv.kv.ModelShape;
import io.pikv.kv.compression.LowRankBases.Fit;
import io.pikv.kv.compression.LowRankBases.Grouping;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

/**
 * Fits {@link LowRankBases} on observed keys and values: principal components (eigenvectors of the covariance
 * around the mean, {@link SymmetricEigen}) per (layer, basis group, KV head).
 *
 * <p>Fitting is an explicit step: feed calibration entries with {@link #observe}, then call {@link #fit}; the
 * result reports, per basis, how many entries it saw and the fraction of variance its rank keeps. With
 * {@link Grouping#EXPERT}, an expert gets its own basis only when it had at least {@code minExpertTokens} entries in
 * the layer, and more than the larger rank (fewer cannot pin down a rank-r subspace); its entries otherwise use the
 * layer's shared basis.
 * Observations are kept as float copies until {@link #fit} (the calibration set's size); not thread-safe.
 *
 * <p>Outlier directions: principal components minimise the total squared error, so a rare entry far from the rest
 * — an attention sink's key, which every query attends to — can be almost entirely discarded although its error
 * matters most. {@link #fit(int, int, int)} can reserve {@code o} of the {@code r} directions for the largest
 * residuals left by the top {@code r − o} components, which it keeps (greedily: the entry with the largest residual
 * gives one direction, then residuals are updated). This is the
 * basis-form of what KV quantizers do for outliers (KVQuant keeps them sparse and dense-precision, ShadowKV keeps
 * outlier chunks whole).
 */
public final class LowRankFitter {
    private final ModelShape shape;
    private final Grouping grouping;
    private final int minExpertTokens;
    private final float[][] keys;
    private final float[][] values;
    private final int[][] expertOf;
    private final int[] count;

    public LowRankFitter(ModelShape shape, Grouping grouping, int minExpertTokens) {
        if (minExpertTokens < 1) {
            throw new IllegalArgumentException("minExpertTokens must be >= 1, got " + minExpertTokens);
        }
        this.shape = shape;
        this.grouping = grouping;
        this.minExpertTokens = minExpertTokens;
        int layers = shape.layers();
        this.keys = new float[layers][0];
        this.values = new float[layers][0];
        this.expertOf = new int[layers][0];
        this.count = new int[layers];
    }

    /** Records one calibration entry of {@code layer}: K and V are {@code kvHeads × headDim}, head-major. */
    public void observe(int layer, int expert, float[] k, float[] v) {
        if (layer < 0 || layer >= shape.layers()) {
            throw new IllegalArgumentException("layer " + layer + " is out of range [0, " + shape.layers() + ")");
        }
        if (expert < 0 || expert >= shape.experts()) {
            throw new IllegalArgumentException("expert " + expert + " is out of range [0, " + shape.experts() + ")");
        }
        int w = shape.kvWidth();
        // The range the store takes: a mean beyond it could overflow the query's product with it to infinity.
        shape.checkKv("K", k);
        shape.checkKv("V", v);
        int n = count[layer];
        if ((long) (n + 1) * w > Integer.MAX_VALUE - 8) {
            throw new IllegalArgumentException("too many calibration entries for layer " + layer);
        }
        if ((n + 1) * w > keys[layer].length) {
            int grown = (int) Math.max((n + 1L) * w, Math.min(Integer.MAX_VALUE - 8L, keys[layer].length * 2L));
            // All three made before any is replaced: a copy refused for want of heap leaves the layer as it was.
            float[] k2 = Arrays.copyOf(keys[layer], grown);
            float[] v2 = Arrays.copyOf(values[layer], grown);
            int[] e2 = Arrays.copyOf(expertOf[layer], grown / w);
            keys[layer] = k2;
            values[layer] = v2;
            expertOf[layer] = e2;
        }
        System.arraycopy(k, 0, keys[layer], n * w, w);
        System.arraycopy(v, 0, values[layer], n * w, w);
        expertOf[layer][n] = expert;
        count[layer] = n + 1;
    }

    /** Entries observed for {@code layer}. */
    public int observed(int layer) {
        return count[layer];
    }

    /**
     * Fits bases of {@code keyRank} and {@code valueRank} for every layer and releases the observations.
     *
     * @throws IllegalArgumentException when a rank is outside [1, headDim] or both are headDim
     * @throws IllegalStateException when a layer has no observations
     */
    public LowRankBases fit(int keyRank, int valueRank) {
        return fit(keyRank, valueRank, 0);
    }

    /**
     * Fits bases of {@code keyRank} and {@code valueRank}, each with up to {@code outlierDirections} directions kept
     * for the entries with the largest residuals, for every layer, and releases the observations.
     *
     * @throws IllegalArgumentException when a rank is outside [1, headDim], both are headDim, or
     *                                  {@code outlierDirections} is negative or above the smaller rank
     * @throws IllegalStateException when a layer has no observations, or no more than the larger rank (a basis
     *                               of more directions than its entries span would be arbitrary)
     */
    public LowRankBases fit(int keyRank, int valueRank, int outlierDirections) {
        if (outlierDirections < 0) {
            throw new IllegalArgumentException("outlierDirections must be >= 0, got " + outlierDirections);
        }
        int d = shape.headDim();
        if (keyRank < 1 || keyRank > d || valueRank < 1 || valueRank > d) {
            throw new IllegalArgumentException("ranks must be in [1, headDim = " + d + "], got " + keyRank + " and "
                    + valueRank);
        }
        if (outlierDirections > Math.min(keyRank, valueRank)) {
            // A basis keeps its top r - o principal directions beside the o outlier ones (as many outlier directions
            // as the rank keep none): more than the rank cannot be kept at all.
            throw new IllegalArgumentException("outlierDirections must be at most the smaller rank ("
                    + Math.min(keyRank, valueRank) + "), got " + outlierDirections);
        }
        if (keyRank == d && valueRank == d) {
            // Such pages would have a plain page's layout while holding coefficients: kernels that read plain pages
            // (the device's, a shard built with a plain kernel) could not tell them apart.
            throw new IllegalArgumentException("ranks " + d + " and " + d + " keep every dimension of keys and values: "
                    + "that is a plain store (build it without low-rank bases)");
        }
        int layers = shape.layers();
        int heads = shape.kvHeads();
        int stride = (1 + keyRank) * d + (1 + valueRank) * d;
        int[][] groupOf = new int[layers][shape.experts()];
        float[][] layerData = new float[layers][];
        List<Fit> fits = new ArrayList<>();
        // A basis needs more entries than its rank: n entries span n - 1 directions around their mean, and the rest of
        // a basis fitted on fewer would be arbitrary axes, reported as keeping all of the variance.
        int needed = Math.max(keyRank, valueRank) + 1;
        for (int l = 0; l < layers; l++) {
            if (count[l] == 0) {
                // Before any layer is fitted: a refused fit keeps every observation, so more can be added and retried.
                throw new IllegalStateException("no calibration entries were observed for layer " + l);
            }
        }
        for (int l = 0; l < layers; l++) {
            if (count[l] < needed) {
                throw new IllegalStateException(count[l] + " calibration entries were observed for layer " + l
                        + ", too few for a basis of rank " + (needed - 1) + ": observe at least " + needed);
            }
        }
        for (int l = 0; l < layers; l++) {
            int n = count[l];
            // Group 0: the layer's shared basis over every entry; then one per expert with enough entries.
            List<int[]> members = new ArrayList<>();
            List<Integer> owners = new ArrayList<>();
            members.add(range(n));
            owners.add(-1);
            if (grouping == Grouping.EXPERT) {
                int[] perExpert = new int[shape.experts()];
                for (int t = 0; t < n; t++) {
                    perExpert[expertOf[l][t]]++;
                }
                // Its own basis needs more entries than its rank: n entries span n - 1 directions around their mean,
                // and the rest of a basis fitted on fewer would be arbitrary axes, reported as keeping everything.
                int enough = Math.max(minExpertTokens, Math.max(keyRank, valueRank) + 1);
                for (int e = 0; e < shape.experts(); e++) {
                    if (perExpert[e] >= enough) {
                        groupOf[l][e] = members.size();
                        owners.add(e);
                        int[] idx = new int[perExpert[e]];
                        int j = 0;
                        for (int t = 0; t < n; t++) {
                            if (expertOf[l][t] == e) {
                                idx[j++] = t;
                            }
                        }
                        members.add(idx);
                    }
                }
            }
            long floats = (long) members.size() * heads * stride;
            LowRankBases.checkLayerSize(l, floats); // before the int sizes below could wrap
            float[] out = new float[(int) floats];
            for (int g = 0; g < members.size(); g++) {
                for (int h = 0; h < heads; h++) {
                    int base = (g * heads + h) * stride;
                    double kept = principal(keys[l], members.get(g), h, keyRank, outlierDirections, out, base);
                    double keptV = principal(values[l], members.get(g), h, valueRank, outlierDirections, out,
                            base + (1 + keyRank) * d);
                    fits.add(new Fit(l, g, owners.get(g), h, members.get(g).length, kept, keptV));
                }
            }
            layerData[l] = out;
        }
        // The bases first (their off-heap memory may be refused): the observations are released only once the fit
        // has its result, so that a fit that fails keeps what was observed.
        LowRankBases bases = new LowRankBases(grouping, layers, heads, d, shape.experts(), keyRank, valueRank, groupOf,
                layerData, fits);
        for (int l = 0; l < layers; l++) {
            keys[l] = new float[0];
            values[l] = new float[0];
            expertOf[l] = new int[0];
            count[l] = 0;
        }
        return bases;
    }

    private static int[] range(int n) {
        int[] r = new int[n];
        for (int i = 0; i < n; i++) {
            r[i] = i;
        }
        return r;
    }

    /**
     * Writes the mean of head {@code h} over the tokens {@code idx} of {@code data} at {@code out[at..]}, then
     * {@code rank} orthonormal rows: up to {@code outliers} outlier directions and the leading principal directions;
     * returns the fraction of the variance (around the mean) they keep.
     */
    private double principal(float[] data, int[] idx, int h, int rank, int outliers, float[] out, int at) {
        int d = shape.headDim();
        int w = shape.kvWidth();
        double[] mean = new double[d];
        for (int t : idx) {
            for (int i = 0; i < d; i++) {
                mean[i] += data[t * w + h * d + i];
            }
        }
        for (int i = 0; i < d; i++) {
            mean[i] /= idx.length;
        }
        double[][] cov = new double[d][d];
        double[] x = new double[d];
        for (int t : idx) {
            for (int i = 0; i < d; i++) {
                x[i] = data[t * w + h * d + i] - mean[i];
            }
            for (int i = 0; i < d; i++) {
                double xi = x[i];
                double[] row = cov[i];
                for (int j = i; j < d; j++) {
                    row[j] += xi * x[j];
                }
            }
        }
        for (int i = 0; i < d; i++) {
            for (int j = 0; j < i; j++) {
                cov[i][j] = cov[j][i];
            }
        }
        SymmetricEigen eig = SymmetricEigen.of(cov);
        // Outlier directions first, then principal directions in order, each made orthogonal to the rows before it
        // (Gram-Schmidt, twice for rounding) and kept only when something of it is left: the rows stay orthonormal
        // even when fewer outlier directions were found than asked, or when data span fewer dimensions than the rank.
        List<double[]> rows = new ArrayList<>();
        List<double[]> candidates = new ArrayList<>(outlierDirections(data, idx, h, mean, eig, rank,
                outliers));
        for (int j = 0; j < d; j++) {
            candidates.add(eig.vector(j));
        }
        for (double[] c : candidates) {
            if (rows.size() == rank) {
                break;
            }
            double[] u = c.clone();
            for (int pass = 0; pass < 2; pass++) {
                for (double[] r : rows) {
                    project(u, r);
                }
            }
            double norm = Math.sqrt(dot(u, u));
            if (norm > 1e-6) { // candidates are unit vectors: a remainder this small lies in the rows' span
                for (int i = 0; i < d; i++) {
                    u[i] /= norm;
                }
                rows.add(u);
            }
        }
        for (int i = 0; i < d; i++) {
            out[at + i] = (float) mean[i];
        }
        for (int j = 0; j < rank; j++) {
            for (int i = 0; i < d; i++) {
                out[at + (1 + j) * d + i] = (float) rows.get(j)[i];
            }
        }
        double total = 0;
        double kept = 0;
        for (int t : idx) {
            for (int i = 0; i < d; i++) {
                x[i] = data[t * w + h * d + i] - mean[i];
                total += x[i] * x[i];
            }
            for (double[] u : rows) {
                double c = 0;
                for (int i = 0; i < d; i++) {
                    c += u[i] * x[i];
                }
                kept += c * c;
            }
        }
        return total == 0 ? 1 : kept / total;
    }

    /**
     * Greedy outlier directions: residuals against the top {@code rank − count} principal components (those the
     * basis keeps), then repeatedly the largest remaining residual (normalised) and the residuals with it projected
     * out.
     */
    private List<double[]> outlierDirections(float[] data, int[] idx, int h, double[] mean, SymmetricEigen eig,
                                             int rank, int count) {
        List<double[]> found = new ArrayList<>();
        if (count == 0) {
            return found;
        }
        int d = shape.headDim();
        int w = shape.kvWidth();
        double[][] top = new double[rank - count][];
        for (int j = 0; j < top.length; j++) {
            top[j] = eig.vector(j);
        }
        double[][] residual = new double[idx.length][d];
        for (int n = 0; n < idx.length; n++) {
            double[] r = residual[n];
            for (int i = 0; i < d; i++) {
                r[i] = data[idx[n] * w + h * d + i] - mean[i];
            }
            for (double[] p : top) {
                project(r, p);
            }
        }
        // Residuals at rounding level are no directions: stop below this share of the largest squared deviation.
        double largest = 0;
        for (int n = 0; n < idx.length; n++) {
            double norm = 0;
            for (int i = 0; i < d; i++) {
                double v = data[idx[n] * w + h * d + i] - mean[i];
                norm += v * v;
            }
            largest = Math.max(largest, norm);
        }
        double floor = 1e-20 * largest;
        for (int k = 0; k < count; k++) {
            int best = -1;
            double bestNorm = floor;
            for (int n = 0; n < idx.length; n++) {
                double norm = 0;
                for (double v : residual[n]) {
                    norm += v * v;
                }
                if (norm > bestNorm) {
                    bestNorm = norm;
                    best = n;
                }
            }
            if (best < 0) {
                break;
            }
            double[] u = residual[best].clone();
            double len = Math.sqrt(bestNorm);
            for (int i = 0; i < d; i++) {
                u[i] /= len;
            }
            found.add(u);
            for (double[] r : residual) {
                project(r, u);
            }
        }
        return found;
    }

    private static double dot(double[] a, double[] b) {
        double c = 0;
        for (int i = 0; i < a.length; i++) {
            c += a[i] * b[i];
        }
        return c;
    }

    /** Removes from {@code r} its component along the unit vector {@code u}. */
    private static void project(double[] r, double[] u) {
        double c = 0;
        for (int i = 0; i < r.length; i++) {
            c += r[i] * u[i];
        }
        for (int i = 0; i < r.length; i++) {
            r[i] -= c * u[i];
        }
    }
}
