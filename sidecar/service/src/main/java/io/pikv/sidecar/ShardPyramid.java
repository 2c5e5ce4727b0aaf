package io.pikv.sidecar;

import io.pikv.kv.AttentionResult;
import io.pikv.kv.compression.PyramidBudget;

/**
 * PyramidKV budgets on a shard ({@code pikv.store.pyramid.*}, docs/compression.md): each (sequence, layer) keeps at
 * most its layer's share of the entries the shard was given for it — the linear schedule of
 * {@link PyramidBudget#layerBudget} around {@code budget ×} those entries, shrinking with depth — and which entries
 * stay is {@link PyramidBudget}'s choice: the {@code sinks} first positions, the {@code window} most recent, then the
 * most attention received. Budgets are enforced after each attention over the (sequence, layer), whose weights are
 * the evidence. Independent of the eviction policy, which still decides what goes when the byte budget is full.
 */
public final class ShardPyramid {
    private final int layers;
    private final double budget;
    private final double beta;
    private final int minimum;
    private final PyramidBudget scores;

    /**
     * @param budget share of the entries kept on average over the layers, in (0, 1]
     * @param beta   the last layer keeps {@code 1/beta} of the average (PyramidKV's β, at least 1)
     * @param sinks  leading positions always kept
     * @param window most recent positions always kept
     */
    public ShardPyramid(int layers, double budget, double beta, int sinks, int window) {
        if (!(budget > 0 && budget <= 1)) {
            throw new IllegalArgumentException("pyramid budget is the fraction of tokens kept, in (0, 1], got " + budget);
        }
        if (!(beta >= 1) || Double.isInfinite(beta)) {
            throw new IllegalArgumentException("pyramid beta must be a finite number >= 1, got " + beta);
        }
        if (sinks < 0 || window < 0 || (long) sinks + window > Integer.MAX_VALUE) {
            throw new IllegalArgumentException("pyramid sinks and window must be >= 0 tokens, got " + sinks + " and "
                    + window);
        }
        this.layers = layers;
        this.budget = budget;
        this.beta = beta;
        this.minimum = sinks + window;
        int[] floor = new int[layers];
        java.util.Arrays.fill(floor, Math.max(1, minimum));
        this.scores = new PyramidBudget(floor, sinks, window); // budgets are given per call
    }

    public double budget() {
        return budget;
    }

    public double beta() {
        return beta;
    }

    public int sinks() {
        return scores.sinks();
    }

    public int window() {
        return scores.window();
    }

    /** The most entries {@code layer} of a (sequence, layer) keeps after {@code stored} entries were stored. */
    public int layerBudget(int layer, int stored) {
        return PyramidBudget.layerBudget(layers, layer, stored, budget, beta, minimum);
    }

    /** Adds the weights of an attention over (sequence, layer) to its entries' scores. */
    public void observe(long sequence, int layer, AttentionResult weighted) {
        scores.observe(sequence, layer, weighted);
    }

    /**
     * The positions to evict from {@code resident} (ascending) so that (sequence, layer) meets its budget after
     * {@code stored} entries; none when within it.
     */
    public int[] victims(long sequence, int layer, int stored, int[] resident) {
        return scores.victims(sequence, layer, resident, layerBudget(layer, stored));
    }

    /** The attention a position of (sequence, layer) accumulated (0 when never observed). */
    public float score(long sequence, int layer, int position) {
        return scores.score(sequence, layer, position);
    }

    /** Drops the scores of a closed sequence. */
    public void closed(long sequence) {
        scores.forget(sequence);
    }

    @Override
    public String toString() {
        return "pyramid(budget " + budget + ", beta " + beta + ", sinks " + sinks() + ", window " + window() + ")";
    }
}
