package io.pikv.kv;

import java.util.Arrays;
import java.util.List;

/**
 * Attention over a subset of the entries, in mergeable form: per query head the max logit {@code m}, the sum of
 * exponentials {@code l = Σ e^(s−m)} and the weighted value sum {@code o = Σ e^(s−m)·V}.
 *
 * <p>Partials over disjoint subsets merge exactly with the log-sum-exp rule
 * {@code M = max(m₁,m₂)}, {@code l = l₁e^(m₁−M) + l₂e^(m₂−M)}, {@code o = o₁e^(m₁−M) + o₂e^(m₂−M)}, so the
 * attention over any split of the entries equals the attention over all of them; {@code o / l} is the output.
 * This is what a shard returns, in-process or over the wire. Optionally it carries the visited entries'
 * positions and logits so that final weights can be computed after the merge.
 */
public final class PartialAttention {
    private final int qHeads;
    private final int headDim;
    private final double[] max;
    private final double[] sumExp;
    private final double[] weightedV;
    private final int visited;
    private final int[] positions;
    private final float[] logits;

    /**
     * @param positions visited entries' positions, or null when weights were not asked for
     * @param logits    {@code [qHeads][positions.length]} head-major logits, or null
     */
    public PartialAttention(int qHeads, int headDim, double[] max, double[] sumExp, double[] weightedV, int visited,
                            int[] positions, float[] logits) {
        if (max.length != qHeads || sumExp.length != qHeads || weightedV.length != qHeads * headDim) {
            throw new IllegalArgumentException("partial arrays do not match " + qHeads + " heads of dim " + headDim);
        }
        if ((positions == null) != (logits == null)
                || (positions != null && logits.length != (long) qHeads * positions.length)) {
            throw new IllegalArgumentException("positions and logits must both be present with qHeads × n logits");
        }
        this.qHeads = qHeads;
        this.headDim = headDim;
        this.max = max;
        this.sumExp = sumExp;
        this.weightedV = weightedV;
        this.visited = visited;
        this.positions = positions;
        this.logits = logits;
    }

    /** The partial of no entries: max −∞, sums zero. */
    public static PartialAttention empty(int qHeads, int headDim, boolean withWeights) {
        double[] m = new double[qHeads];
        Arrays.fill(m, Double.NEGATIVE_INFINITY);
        return new PartialAttention(qHeads, headDim, m, new double[qHeads], new double[qHeads * headDim], 0,
                withWeights ? new int[0] : null, withWeights ? new float[0] : null);
    }

    public int qHeads() {
        return qHeads;
    }

    public int headDim() {
        return headDim;
    }

    /** Running max logit of head {@code h}. */
    public double max(int h) {
        return max[h];
    }

    /** Σ e^(s − max) of head {@code h}. */
    public double sumExp(int h) {
        return sumExp[h];
    }

    /** Σ e^(s − max)·V of head {@code h}, element {@code i}. */
    public double weightedV(int h, int i) {
        return weightedV[h * headDim + i];
    }

    /** Entries visited. */
    public int visited() {
        return visited;
    }

    public boolean hasWeights() {
        return positions != null;
    }

    /** Merges partials over disjoint entry sets (the log-sum-exp rule). */
    public static PartialAttention merge(List<PartialAttention> parts) {
        if (parts.isEmpty()) {
            throw new IllegalArgumentException("nothing to merge");
        }
        PartialAttention first = parts.get(0);
        int heads = first.qHeads;
        int dim = first.headDim;
        boolean weights = first.hasWeights();
        double[] m = new double[heads];
        double[] l = new double[heads];
        double[] o = new double[heads * dim];
        Arrays.fill(m, Double.NEGATIVE_INFINITY);
        int visited = 0;
        int n = 0;
        for (PartialAttention p : parts) {
            if (p.qHeads != heads || p.headDim != dim || p.hasWeights() != weights) {
                throw new IllegalArgumentException("partials of different shapes cannot be merged");
            }
            visited += p.visited;
            n += weights ? p.positions.length : 0;
            for (int h = 0; h < heads; h++) {
                if (p.max[h] == Double.NEGATIVE_INFINITY || p.sumExp[h] == 0) {
                    // Nothing visited for this head (a running max with no mass, e.g. from a peer, is nothing
                    // too: taken as the max it would wipe out the other parts' mass).
                    continue;
                }
                double next = Math.max(m[h], p.max[h]);
                double a = Math.exp(m[h] - next);
                double b = Math.exp(p.max[h] - next);
                l[h] = l[h] * a + p.sumExp[h] * b;
                for (int i = 0; i < dim; i++) {
                    o[h * dim + i] = o[h * dim + i] * a + p.weightedV[h * dim + i] * b;
                }
                m[h] = next;
            }
        }
        int[] pos = null;
        float[] lg = null;
        if (weights) {
            if ((long) heads * n > Integer.MAX_VALUE - 8) {
                throw new IllegalArgumentException("merged attention weights for " + n + " entries of " + heads
                        + " query heads exceed one array; attend without weights or over fewer entries");
            }
            pos = new int[n];
            lg = new float[heads * n];
            int at = 0;
            for (PartialAttention p : parts) {
                int k = p.positions.length;
                System.arraycopy(p.positions, 0, pos, at, k);
                for (int h = 0; h < heads; h++) {
                    if (p.max[h] == Double.NEGATIVE_INFINITY || p.sumExp[h] == 0) {
                        // A head the merge left out above (no mass) has no weight on its entries either: its logits,
                        // against the merged max and sum, could read as weights above 1 or as NaN.
                        Arrays.fill(lg, h * n + at, h * n + at + k, Float.NEGATIVE_INFINITY);
                    } else {
                        System.arraycopy(p.logits, h * k, lg, h * n + at, k);
                    }
                }
                at += k;
            }
        }
        return new PartialAttention(heads, dim, m, l, o, visited, pos, lg);
    }

    /** The attention output {@code o / l} per head, and the visited entries' weights when they were collected. */
    public AttentionResult finish() {
        float[] out = new float[qHeads * headDim];
        for (int h = 0; h < qHeads; h++) {
            if (sumExp[h] == 0) {
                continue; // nothing visited: the output is defined as zero
            }
            double inv = 1.0 / sumExp[h];
            for (int i = 0; i < headDim; i++) {
                out[h * headDim + i] = (float) (weightedV[h * headDim + i] * inv);
            }
        }
        if (positions == null) {
            return new AttentionResult(qHeads, headDim, out, visited, null, null);
        }
        int n = positions.length;
        float[] w = new float[qHeads * n];
        for (int h = 0; h < qHeads; h++) {
            for (int j = 0; j < n; j++) {
                float s = logits[h * n + j];
                w[h * n + j] = s == Float.NEGATIVE_INFINITY ? 0f : (float) (Math.exp(s - max[h]) / sumExp[h]);
            }
        }
        return new AttentionResult(qHeads, headDim, out, visited, positions.clone(), w);
    }
}
