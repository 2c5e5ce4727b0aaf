package io.pikv.cli;

import java.util.SplittableRandom;

/**
 * Keys, values and queries of a long context that imitate what the literature reports of real models; each choice
 * and its source is explained in {@code docs/compression.md}. Per layer and KV head:
 *
 * <ul>
 *   <li>a latent state per token that is locally correlated (AR(1), {@link #RHO}: neighbouring tokens' KV are close,
 *       CacheGen), mixed by a fixed random orthonormal basis with a power-law spectrum: steep for keys
 *       ({@link #KEY_DECAY}, keys are low-rank before RoPE, Loki/ShadowKV) and flatter for values
 *       ({@link #VALUE_DECAY}, values are not, ShadowKV); values also share a mean direction (anisotropy,
 *       {@link #VALUE_MEAN_SHARE});</li>
 *   <li>a few key channels with a large constant offset ({@link #OUTLIER_CHANNELS}, KIVI/KVQuant);</li>
 *   <li>an attention sink: the first token's key carries a large component along a direction every query shares and
 *       no other key has, in the lowest RoPE frequencies so that it does not rotate away, and its value is small
 *       (StreamingLLM, massive activations); the sink's share of attention is near zero in the first layer and larger
 *       deeper;</li>
 *   <li>queries built from the same latent state as the keys at their position (both are projections of one hidden
 *       state), so attention favours recent tokens, plus a fixed component every query shares, so the same tokens
 *       stay heavy hitters from query to query ({@link #PERSISTENT_SHARE}; H2O, SnapKV); the logit spread grows with
 *       depth, so deeper layers attend to fewer tokens (PyramidKV);</li>
 *   <li>RoPE applied to keys and queries (Qwen1.5's base 10⁶, rotate-half layout); the store holds post-RoPE keys as
 *       inference engines do.</li>
 * </ul>
 * Deterministic: the model part (bases, outliers, sink and shared directions, head mixing) comes from the model seed
 * and the layer; the tokens from the sequence seed.
 */
final class SyntheticKv {
    static final double ROPE_BASE = 1_000_000;
    /** AR(1) coefficient of the latent state from one token to the next. */
    static final double RHO = 0.8;
    /** Key latent scales fall as (j+1)^−0.75 (variance as j^−1.5). */
    static final double KEY_DECAY = 0.75;
    /** Value latent scales fall as (j+1)^−0.5 (variance as j^−1). */
    static final double VALUE_DECAY = 0.5;
    /** Outlier channels drawn per head, with replacement (a channel drawn twice keeps its last offset). */
    static final int OUTLIER_CHANNELS = 4;
    /** Outlier offsets are 6–12 times the typical channel's standard deviation (which is 1). */
    static final double OUTLIER_MIN = 6;
    static final double OUTLIER_MAX = 12;
    /**
     * The sink key's component along the sink direction (a typical key has norm √headDim before its outlier channels,
     * about 21 with them at head dim 128).
     */
    static final double SINK_KEY = 16;
    /**
     * Share of the values' energy in a fixed mean direction per head (representations are anisotropic: two tokens'
     * values have an average cosine of about this much).
     */
    static final double VALUE_MEAN_SHARE = 0.2;
    /** The sink token's value is scaled by this. */
    static final double SINK_VALUE = 0.1;
    /** The sink direction lives in this many lowest-frequency RoPE pairs. */
    static final int SINK_PAIRS = 16;
    /** Spread (relative) of each query head's weighting of the key latent around its KV head's. */
    static final double HEAD_MIX = 0.5;
    static final double QUERY_NOISE = 0.1;
    /** Share of the content logits' variance that is the same for every query (persistent heavy hitters). */
    static final double PERSISTENT_SHARE = 0.8;
    /** The persistent query direction lives in this many lowest-frequency RoPE pairs (next to the sink's). */
    static final int PERSISTENT_PAIRS = 32;

    private final int layers;
    private final int qHeads;
    private final int kvHeads;
    private final int dim;
    private final long modelSeed;
    private final double[] keyScale;
    private final double[] valueScale;

    /** One layer's tensors: {@code [token][kvHeads·dim]} keys and values, {@code [query][qHeads·dim]} queries. */
    record Layer(float[][] keys, float[][] values, float[][] observation, float[][] decode, double logitStd,
                 double sinkTarget) {
    }

    SyntheticKv(int layers, int qHeads, int kvHeads, int dim, long modelSeed) {
        if (dim % 2 != 0 || dim < 2 * SINK_PAIRS) {
            throw new IllegalArgumentException("the generator needs an even head dim of at least " + 2 * SINK_PAIRS
                    + ", got " + dim);
        }
        this.layers = layers;
        this.qHeads = qHeads;
        this.kvHeads = kvHeads;
        this.dim = dim;
        this.modelSeed = modelSeed;
        this.keyScale = spectrum(dim, KEY_DECAY);
        this.valueScale = spectrum(dim, VALUE_DECAY);
    }

    /** Scales {@code (j+1)^−decay}, normalised so that the mean channel variance is 1. */
    private static double[] spectrum(int d, double decay) {
        double[] s = new double[d];
        double sum = 0;
        for (int j = 0; j < d; j++) {
            s[j] = Math.pow(j + 1, -decay);
            sum += s[j] * s[j];
        }
        double norm = Math.sqrt(sum / d);
        for (int j = 0; j < d; j++) {
            s[j] /= norm;
        }
        return s;
    }

    /** Depth of {@code layer} in [0, 1]. */
    double depth(int layer) {
        return layers == 1 ? 0 : (double) layer / (layers - 1);
    }

    /** Standard deviation of the content part of the logits in {@code layer}: 1 in the first layer, 2 in the last. */
    double logitStd(int layer) {
        return 1 + depth(layer);
    }

    /** Share of attention the sink is built to get in {@code layer}: 0.02 in the first, then 0.3 + 0.4 · depth (0.36 in
     * layer 1 of 8, rising to 0.7). */
    double sinkTarget(int layer) {
        return layer == 0 ? 0.02 : 0.3 + 0.4 * depth(layer);
    }

    /** The fixed (model) part of one layer. */
    private final class Model {
        final double[][][] keyBasis = new double[kvHeads][][];
        final double[][][] valueBasis = new double[kvHeads][][];
        final double[][] outliers = new double[kvHeads][dim];
        final double[][] valueMean = new double[kvHeads][dim];
        final double[][] sink = new double[kvHeads][dim];
        /** Unit direction, per KV head, of the query component every query shares besides the sink's. */
        final double[][] persistent = new double[kvHeads][dim];
        /** Standard deviation of an ordinary key's pre-RoPE projection on {@link #persistent}. */
        final double[] persistentStd = new double[kvHeads];
        final double[][] mix = new double[qHeads][dim];

        Model(int layer) {
            SplittableRandom rnd = new SplittableRandom(modelSeed * 1_000_003L + layer);
            for (int h = 0; h < kvHeads; h++) {
                for (int n = 0; n < OUTLIER_CHANNELS; n++) {
                    int c = rnd.nextInt(dim);
                    double m = OUTLIER_MIN + (OUTLIER_MAX - OUTLIER_MIN) * rnd.nextDouble();
                    outliers[h][c] = rnd.nextBoolean() ? m : -m;
                }
                double norm = 0;
                int half = dim / 2;
                for (int i = half - SINK_PAIRS; i < half; i++) {
                    sink[h][i] = gaussian(rnd);
                    sink[h][i + half] = gaussian(rnd);
                    norm += sink[h][i] * sink[h][i] + sink[h][i + half] * sink[h][i + half];
                }
                for (int i = 0; i < dim; i++) {
                    sink[h][i] /= Math.sqrt(norm);
                }
                // The sink direction is reserved for the sink: the key latent spans its orthogonal complement, so
                // ordinary keys do not vary along the direction every query shares (their logits would otherwise
                // swing with the query's large sink component).
                keyBasis[h] = orthonormal(rnd, sink[h]);
                valueBasis[h] = orthonormal(rnd, null);
                // |mean|² / (|mean|² + d) = VALUE_MEAN_SHARE, the deviations having unit variance per channel.
                double meanNorm = Math.sqrt(VALUE_MEAN_SHARE / (1 - VALUE_MEAN_SHARE) * dim);
                double mn = 0;
                for (int i = 0; i < dim; i++) {
                    valueMean[h][i] = gaussian(rnd);
                    mn += valueMean[h][i] * valueMean[h][i];
                }
                for (int i = 0; i < dim; i++) {
                    valueMean[h][i] *= meanNorm / Math.sqrt(mn);
                }
                double[] p = persistent[h];
                for (int i = Math.max(0, half - PERSISTENT_PAIRS); i < half; i++) {
                    p[i] = gaussian(rnd);
                    p[i + half] = gaussian(rnd);
                }
                double dot = 0;
                for (int i = 0; i < dim; i++) {
                    dot += p[i] * sink[h][i];
                }
                double len = 0;
                for (int i = 0; i < dim; i++) {
                    p[i] -= dot * sink[h][i];
                    len += p[i] * p[i];
                }
                for (int i = 0; i < dim; i++) {
                    p[i] /= Math.sqrt(len);
                }
                // Var(p·k) = Σ_j (σ_j · p·u_j)² for the key latent k = Σ_j σ_j z_j u_j.
                double var = 0;
                for (int j = 0; j < dim; j++) {
                    double c = 0;
                    for (int i = 0; i < dim; i++) {
                        c += p[i] * keyBasis[h][i][j];
                    }
                    var += Math.pow(keyScale[j] * c, 2);
                }
                persistentStd[h] = Math.sqrt(var);
            }
            for (int qh = 0; qh < qHeads; qh++) {
                for (int j = 0; j < dim; j++) {
                    mix[qh][j] = 1 + HEAD_MIX * gaussian(rnd);
                }
            }
        }

        /**
         * A random orthonormal basis as columns ({@code basis[i][j]} is element i of direction j); with
         * {@code excluded} (a unit vector) every direction is orthogonal to it and the last column is zero.
         */
        private double[][] orthonormal(SplittableRandom rnd, double[] excluded) {
            double[][] cols = new double[dim + 1][];
            int first = 0;
            if (excluded != null) {
                cols[0] = excluded.clone();
                first = 1;
            }
            for (int j = first; j < dim; j++) {
                double[] v = new double[dim];
                cols[j] = v;
                for (int i = 0; i < dim; i++) {
                    v[i] = gaussian(rnd);
                }
                for (int pass = 0; pass < 2; pass++) {
                    for (int k = 0; k < j; k++) {
                        double dot = 0;
                        for (int i = 0; i < dim; i++) {
                            dot += v[i] * cols[k][i];
                        }
                        for (int i = 0; i < dim; i++) {
                            v[i] -= dot * cols[k][i];
                        }
                    }
                }
                double n = 0;
                for (double x : v) {
                    n += x * x;
                }
                n = Math.sqrt(n);
                for (int i = 0; i < dim; i++) {
                    v[i] /= n;
                }
            }
            double[][] basis = new double[dim][dim];
            for (int i = 0; i < dim; i++) {
                for (int j = 0; j + first < dim; j++) {
                    basis[i][j] = cols[j + first][i];
                }
            }
            return basis;
        }
    }

    /**
     * Generates one layer of one sequence: {@code tokens} keys and values, the queries of the last {@code window}
     * context positions (an observation window) and of the {@code decode} positions that follow the context.
     */
    Layer layer(int layer, int tokens, int window, int decode, long sequenceSeed) {
        Model model = new Model(layer);
        SplittableRandom rnd = new SplittableRandom(sequenceSeed * 7_919L + layer * 104_729L + 17);
        int group = qHeads / kvHeads;
        int width = kvHeads * dim;
        double lambda = logitStd(layer);
        double sinkMass = sinkTarget(layer);
        // Content logits q·k/√d have standard deviation ≈ lambda for unrelated tokens.
        double s4 = 0;
        for (double s : keyScale) {
            s4 += Math.pow(s, 4);
        }
        // Content logits q·k/√d of unrelated tokens have standard deviation ≈ lambda: a part that changes with the
        // query's own latent state and a part that every query shares (its projection on a fixed direction).
        double changing = lambda * Math.sqrt(1 - PERSISTENT_SHARE);
        double gain = changing * Math.sqrt(dim) / Math.sqrt(s4 * (1 + HEAD_MIX * HEAD_MIX));
        double shared = lambda * Math.sqrt(PERSISTENT_SHARE) * Math.sqrt(dim);
        // The sink's logit lead over a typical token so that it gets about sinkMass of the attention.
        double lead = Math.log(sinkMass / (1 - sinkMass)) + Math.log(tokens) + lambda * lambda / 2;
        double sinkQuery = lead * Math.sqrt(dim) / SINK_KEY;

        float[][] keys = new float[tokens][width];
        float[][] values = new float[tokens][width];
        float[][] observation = new float[window][qHeads * dim];
        float[][] decodeQ = new float[decode][qHeads * dim];
        double[][] zk = new double[kvHeads][dim];
        double[][] zv = new double[kvHeads][dim];
        for (int h = 0; h < kvHeads; h++) {
            for (int j = 0; j < dim; j++) {
                zk[h][j] = gaussian(rnd);
                zv[h][j] = gaussian(rnd);
            }
        }
        double innovation = Math.sqrt(1 - RHO * RHO);
        double[] x = new double[dim];
        double[] latent = new double[dim];
        for (int t = 0; t < tokens + decode; t++) {
            if (t > 0) {
                for (int h = 0; h < kvHeads; h++) {
                    for (int j = 0; j < dim; j++) {
                        zk[h][j] = RHO * zk[h][j] + innovation * gaussian(rnd);
                        zv[h][j] = RHO * zv[h][j] + innovation * gaussian(rnd);
                    }
                }
            }
            for (int h = 0; h < kvHeads; h++) {
                if (t < tokens) {
                    for (int j = 0; j < dim; j++) {
                        latent[j] = keyScale[j] * zk[h][j];
                    }
                    mix(model.keyBasis[h], latent, x);
                    for (int i = 0; i < dim; i++) {
                        x[i] += model.outliers[h][i] + (t == 0 ? SINK_KEY * model.sink[h][i] : 0);
                    }
                    rope(x, t);
                    store(x, keys[t], h * dim);
                    for (int j = 0; j < dim; j++) {
                        latent[j] = valueScale[j] * zv[h][j];
                    }
                    mix(model.valueBasis[h], latent, x);
                    for (int i = 0; i < dim; i++) {
                        x[i] = (x[i] + model.valueMean[h][i]) * (t == 0 ? SINK_VALUE : 1);
                    }
                    store(x, values[t], h * dim);
                }
                float[] q = t >= tokens ? decodeQ[t - tokens] : t >= tokens - window ? observation[t - tokens + window]
                        : null;
                if (q == null) {
                    continue;
                }
                for (int g = 0; g < group; g++) {
                    int qh = h * group + g;
                    for (int j = 0; j < dim; j++) {
                        latent[j] = gain * keyScale[j] * model.mix[qh][j] * zk[h][j];
                    }
                    mix(model.keyBasis[h], latent, x);
                    double persist = shared / model.persistentStd[h];
                    for (int i = 0; i < dim; i++) {
                        x[i] += sinkQuery * model.sink[h][i] + persist * model.persistent[h][i]
                                + QUERY_NOISE * gaussian(rnd);
                    }
                    rope(x, t);
                    store(x, q, qh * dim);
                }
            }
        }
        return new Layer(keys, values, observation, decodeQ, lambda, sinkMass);
    }

    private void mix(double[][] basis, double[] latent, double[] out) {
        for (int i = 0; i < dim; i++) {
            double s = 0;
            double[] row = basis[i];
            for (int j = 0; j < dim; j++) {
                s += row[j] * latent[j];
            }
            out[i] = s;
        }
    }

    /** Rotary position embedding at {@code position}, rotate-half layout: pair (i, i + d/2) turns by position·θ_i. */
    private void rope(double[] x, int position) {
        int half = dim / 2;
        for (int i = 0; i < half; i++) {
            double angle = position * Math.pow(ROPE_BASE, -2.0 * i / dim);
            double c = Math.cos(angle);
            double s = Math.sin(angle);
            double a = x[i];
            double b = x[i + half];
            x[i] = a * c - b * s;
            x[i + half] = b * c + a * s;
        }
    }

    private static void store(double[] x, float[] out, int offset) {
        for (int i = 0; i < x.length; i++) {
            out[offset + i] = (float) x[i];
        }
    }

    private static double gaussian(SplittableRandom rnd) {
        // Box–Muller; SplittableRandom has no nextGaussian on JDK 17.
        double u = 1 - rnd.nextDouble();
        double v = rnd.nextDouble();
        return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
    }
}
