package io.pikv.sidecar;

import io.pikv.kv.AttentionResult;
import io.pikv.kv.compression.PyramidBudget;
import io.pikv.kv.scheduling.LongIntMap;

import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;

/**
 * PyramidKV budgets on a shard ({@code pikv.store.pyramid.*}, docs/compression.md): each (sequence, layer) keeps at
 * most its layer's share of the entries the shard was given for it — the linear schedule of
 * {@link PyramidBudget#layerBudget} around {@code budget ×} those entries, shrinking with depth — and which entries
 * stay is PyramidKV's (and {@link PyramidBudget}'s) choice: the {@code sinks} first positions, the {@code window}
 * most recent, then the most attention received. Independent of the eviction policy, which still decides what goes
 * when the byte budget is full.
 *
 * <p>Scores are kept per resident position in the engine's primitive map (positions of a shard are sparse: a gateway
 * spreads a sequence's positions over its shards). Calls for one sequence must be serialized by the caller
 * (the shard's per-sequence lock); calls for different sequences may run at once.
 */
public final class ShardPyramid {
    public static final double DEFAULT_BETA = 20;
    public static final int DEFAULT_SINKS = 4;
    public static final int DEFAULT_WINDOW = 32;
    private final int layers;
    private final double budget;
    private final double beta;
    private final int sinks;
    private final int window;
    private final Map<Long, Scores[]> sequences = new ConcurrentHashMap<>();

    /**
     * @param budget share of the entries kept on average over the layers, in (0, 1]
     * @param beta   the last layer keeps {@code 1/beta} of the average (PyramidKV's β, at least 1)
     * @param sinks  leading positions always kept
     * @param window most recent positions always kept, at least 1 (a step's own token is never evicted by it)
     */
    public ShardPyramid(int layers, double budget, double beta, int sinks, int window) {
        if (layers < 1) {
            throw new IllegalArgumentException("pyramid budgets need at least one layer, got " + layers);
        }
        if (!(budget > 0 && budget <= 1)) {
            throw new IllegalArgumentException("pyramid budget is the fraction of tokens kept, in (0, 1], got " + budget);
        }
        if (!(beta >= 1) || Double.isInfinite(beta)) {
            throw new IllegalArgumentException("pyramid beta must be a finite number >= 1, got " + beta);
        }
        if (sinks < 0 || window < 1 || (long) sinks + window > io.pikv.kv.KvShard.MAX_POSITION + 1L) {
            throw new IllegalArgumentException("pyramid sinks must be >= 0 and window >= 1 tokens (the window keeps a "
                    + "step's own token), together at most the " + (io.pikv.kv.KvShard.MAX_POSITION + 1)
                    + " positions a layer can hold, got " + sinks + " and " + window);
        }
        this.layers = layers;
        this.budget = budget;
        this.beta = beta;
        this.sinks = sinks;
        this.window = window;
    }

    public double budget() {
        return budget;
    }

    public double beta() {
        return beta;
    }

    public int sinks() {
        return sinks;
    }

    public int window() {
        return window;
    }

    /** The most entries {@code layer} of a (sequence, layer) keeps after {@code stored} entries were stored. */
    public int layerBudget(int layer, int stored) {
        return PyramidBudget.layerBudget(layers, layer, stored, budget, beta, sinks + window);
    }

    /** Adds each visited entry's mean weight over query heads to its score (a result with weights). */
    public void observe(long sequence, int layer, AttentionResult weighted) {
        Scores s = scores(sequence, layer, true);
        int[] positions = weighted.positions();
        for (int j = 0; j < positions.length; j++) {
            s.add(positions[j], weighted.meanWeight(j));
        }
    }

    /** The attention a position of (sequence, layer) accumulated (0 when never observed). */
    public float score(long sequence, int layer, int position) {
        Scores s = scores(sequence, layer, false);
        return s == null ? 0f : s.get(position);
    }

    /** Positions of (sequence, layer) with a score. */
    int scored(long sequence, int layer) {
        Scores s = scores(sequence, layer, false);
        return s == null ? 0 : s.size();
    }

    /**
     * The positions to evict from {@code resident} (the resident positions of (sequence, layer), ascending) to bring
     * it down to {@code budget}: the lowest-scored outside the sinks and the recent window (the oldest on ties),
     * ascending; none when within the budget.
     */
    public int[] victims(long sequence, int layer, int budget, int[] resident) {
        Scores s = scores(sequence, layer, false);
        return PyramidBudget.select(resident, budget, sinks, window, p -> s == null ? 0f : s.get(p));
    }

    /** These positions left (sequence, layer) (evicted or withdrawn): their scores go. */
    public void removed(long sequence, int layer, int[] positions) {
        Scores s = scores(sequence, layer, false);
        if (s != null) {
            for (int p : positions) {
                s.remove(p);
            }
        }
    }

    /**
     * Keeps the scores of {@code resident} positions only (entries evicted another way, by the eviction policy or a
     * budget resize, leave scores behind) once they outnumber the resident entries by far.
     */
    public void prune(long sequence, int layer, int residentCount, java.util.function.Supplier<int[]> resident) {
        Scores s = scores(sequence, layer, false);
        if (s == null || s.size() <= 2L * residentCount + 64) {
            return;
        }
        Scores kept = new Scores();
        for (int p : resident.get()) {
            float score = s.get(p);
            if (score != 0f) {
                kept.add(p, score);
            }
        }
        sequences.get(sequence)[layer] = kept;
    }

    /** Drops the scores of a closed sequence. */
    public void closed(long sequence) {
        sequences.remove(sequence);
    }

    private Scores scores(long sequence, int layer, boolean create) {
        if (layer < 0 || layer >= layers) {
            throw new IllegalArgumentException("layer " + layer + " is not one of " + layers + " layers");
        }
        Scores[] perLayer = create ? sequences.computeIfAbsent(sequence, k -> new Scores[layers])
                : sequences.get(sequence);
        if (perLayer == null) {
            return null;
        }
        if (perLayer[layer] == null && create) {
            perLayer[layer] = new Scores();
        }
        return perLayer[layer];
    }

    @Override
    public String toString() {
        return "pyramid(budget " + budget + ", beta " + beta + ", sinks " + sinks + ", window " + window + ")";
    }

    /** Position → accumulated attention, as float bits in the engine's primitive map (scores are >= 0). */
    static final class Scores {
        private final LongIntMap map = new LongIntMap(64);

        int size() {
            return map.size();
        }

        float get(int position) {
            int bits = map.get(position);
            return bits < 0 ? 0f : Float.intBitsToFloat(bits);
        }

        void add(int position, float w) {
            map.put(position, Float.floatToIntBits(Math.max(0f, get(position) + w))); // +0, never -0 (negative bits)
        }

        void remove(int position) {
            map.remove(position);
        }
    }
}
