package io.pikv.kv.compression;

import io.pikv.kv.AttentionResult;
import io.pikv.kv.EvictionContext;
import io.pikv.kv.EvictionHook;
import io.pikv.kv.KvShard;
import io.pikv.kv.KvStore;
import io.pikv.kv.Page;
import io.pikv.kv.scheduling.TokenRetention;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.BitSet;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/**
 * PyramidKV's layer-wise token budgets (Cai et al. 2024, arXiv 2406.02069) with an H2O-style choice of which tokens
 * fill them: each (sequence, layer) keeps at most {@code budget(layer)} entries, and budgets shrink with depth
 * because attention in deeper layers concentrates on fewer tokens.
 *
 * <p>Which entries stay: the {@code sinks} first positions (attention sinks, StreamingLLM), the {@code window}
 * most recent resident positions, and then the highest accumulated attention — the mean weight over query heads
 * that {@link #observe} added from attention results (H2O's heavy hitters; PyramidKV scores with the attention of an
 * observation window of recent queries, which is what observing those queries' results gives). Ties go to the more
 * recent position. Selection is per token for all heads at once, because the store evicts whole entries.
 *
 * <p>Or through an engine eviction policy ({@link #PyramidBudget(int[], TokenRetention)}): the budgets still say how
 * many entries each layer keeps, and the policy — LRU, StreamingLLM, H2O, utility, LRFU, any
 * {@link io.pikv.kv.scheduling.EvictionPolicy} in a {@link TokenRetention} — says which go. The budget tells the
 * retention of every position its attention results visit and of every eviction, so the policy ranks what the layer
 * holds.
 *
 * <p>Applied two ways: {@link #enforce} evicts every layer of a sequence down to its budget through
 * {@link KvStore#evict} (after prefill, or after each decode step); as an {@link EvictionHook}, when a shard's pool is
 * full, it evicts over-budget entries of the most over-budget (sequence, layer) it knows of through
 * {@link EvictionContext#evictTokens} (through a policy, only until a page is free: the layer's excess counts entries
 * other shards may hold), and falls back to the oldest page when nothing is over budget. Thread-safe. It calls into
 * the store under its own lock only as the store's hook, which the store calls holding its lock already (the order is
 * always the store's lock, this one, the retention's); {@link #enforce} calls the store without it.
 */
public final class PyramidBudget implements EvictionHook {
    private final int[] budgets;
    private final int sinks;
    private final int window;
    private final Map<Long, Scores[]> sequences = new HashMap<>();
    /** The policy that chooses which entries go, or null: PyramidKV's own choice (sinks, window, attention). */
    private final TokenRetention chooser;

    /** Accumulated attention per position of one (sequence, layer), and what this policy knows is resident. */
    private static final class Scores {
        float[] score = new float[64];
        final BitSet seen = new BitSet();
        final BitSet evicted = new BitSet();

        void add(int position, float w) {
            if (position >= score.length) {
                score = Arrays.copyOf(score, Math.max(score.length * 2, position + 1));
            }
            score[position] += w;
            seen.set(position);
            // An evicted position stays evicted here even when a result shows it: the result may predate the
            // eviction (another thread's), and a KvStore stores a position again only after withdrawLast, which
            // clears it here first (withdrawn).
        }

        float get(int position) {
            return position < score.length ? score[position] : 0f;
        }
    }

    /**
     * @param budgets per-layer token budgets, each at least {@code sinks + window}
     * @param sinks   leading positions always kept
     * @param window  most recent resident positions always kept
     */
    public PyramidBudget(int[] budgets, int sinks, int window) {
        this(budgets, sinks, window, null);
    }

    /**
     * Per-layer budgets whose victims {@code chooser}'s eviction policy picks (its own sinks and window included).
     *
     * @param chooser a retention of its own (not shared with another hook): this budget reports to it what it
     *                observes and every eviction it hears of
     */
    public PyramidBudget(int[] budgets, TokenRetention chooser) {
        this(budgets, 0, 0, java.util.Objects.requireNonNull(chooser, "chooser"));
    }

    private PyramidBudget(int[] budgets, int sinks, int window, TokenRetention chooser) {
        if (sinks < 0 || window < 0) {
            throw new IllegalArgumentException("sinks and window must be >= 0, got " + sinks + " and " + window);
        }
        if (budgets.length == 0) {
            throw new IllegalArgumentException("budgets must name at least one layer");
        }
        for (int l = 0; l < budgets.length; l++) {
            if (budgets[l] < (long) sinks + window || budgets[l] < 1) {
                throw new IllegalArgumentException("layer " + l + " budget " + budgets[l] + " is below sinks + window = "
                        + ((long) sinks + window) + " (and must be >= 1)");
            }
        }
        this.budgets = budgets.clone();
        this.sinks = sinks;
        this.window = window;
        this.chooser = chooser;
    }

    /**
     * PyramidKV's schedule: budgets fall linearly from layer 0 to the last layer, the last layer gets
     * {@code average / beta} (but at least {@code minimum}), layer 0 gets {@code 2·average − last}, and the budgets
     * sum to exactly {@code layers × average} (rounding goes to the layers with the largest fractions).
     */
    public static int[] linear(int layers, int average, double beta, int minimum) {
        if (layers < 1 || average < 1 || !(beta >= 1) || Double.isInfinite(beta) || minimum < 0) {
            throw new IllegalArgumentException("need layers >= 1, average >= 1, a finite beta >= 1 and minimum >= 0, "
                    + "got " + layers + ", " + average + ", " + beta + ", " + minimum);
        }
        if (average < minimum) {
            throw new IllegalArgumentException("an average budget of " + average + " tokens is below the minimum of "
                    + minimum + " every layer keeps (sinks + window)");
        }
        checkAverage(average);
        if (layers == 1) {
            return new int[] {average};
        }
        double top = Math.max(average / beta, Math.max(minimum, 1)); // every layer keeps one at least
        double bottom = 2.0 * average - top;
        double[] real = new double[layers];
        int[] out = new int[layers];
        long sum = 0;
        for (int l = 0; l < layers; l++) {
            real[l] = bottom - (bottom - top) * l / (layers - 1);
            out[l] = (int) Math.floor(real[l] + 1e-9);
            sum += out[l];
        }
        long left = (long) layers * average - sum;
        Integer[] order = new Integer[layers];
        for (int l = 0; l < layers; l++) {
            order[l] = l;
        }
        Arrays.sort(order, (a, b) -> Double.compare(real[b] - out[b], real[a] - out[a]));
        for (int i = 0; i < left; i++) {
            out[order[i % layers]]++;
        }
        return out;
    }

    /** Refuses an average beyond the positions a layer can hold (the first layer's budget would pass an int's). */
    private static void checkAverage(long average) {
        if (average > KvShard.MAX_POSITION + 1L) {
            throw new IllegalArgumentException("an average budget of " + average + " tokens is more than the "
                    + (KvShard.MAX_POSITION + 1) + " positions a layer can hold");
        }
    }

    /**
     * The budget of {@code layer} when every layer of the (sequence, layer) has had {@code stored} entries: the
     * {@link #linear} schedule around an average of {@code fraction · stored} tokens (rounded up, at least
     * {@code minimum}), for budgets that follow a growing context instead of a fixed prompt (a shard that keeps a
     * fraction of what it was given).
     *
     * @param fraction share of the entries kept on average over the layers, in (0, 1]
     */
    public static int layerBudget(int layers, int layer, int stored, double fraction, double beta, int minimum) {
        if (!(fraction > 0 && fraction <= 1)) {
            throw new IllegalArgumentException("the fraction of tokens kept must be in (0, 1], got " + fraction);
        }
        if (layer < 0 || layer >= layers) {
            throw new IllegalArgumentException("layer " + layer + " is not one of " + layers + " layers");
        }
        if (stored < 0) {
            throw new IllegalArgumentException("stored entries must be >= 0, got " + stored);
        }
        // The product's rounding (0.07 × 100 is 7.000000000000001) is forgiven within a few ulps, not a fixed 1e-9,
        // which also cut a fraction given just above a whole count (0.5000000001 of 2 kept 1).
        double kept = fraction * stored;
        int average = (int) Math.max(Math.max(minimum, 1), Math.ceil(kept - 4 * Math.ulp(kept)));
        if (!(beta >= 1) || Double.isInfinite(beta) || minimum < 0) {
            throw new IllegalArgumentException("need a finite beta >= 1 and minimum >= 0, got " + beta + " and "
                    + minimum);
        }
        checkAverage(average);
        if (layers == 1) {
            return average;
        }
        // linear(...)[layer] without its arrays (this runs after every attention of a shard with pyramid budgets):
        // the layer's floor, plus one when its fraction ranks among the `left` largest (ties: the lower layer first,
        // as linear's stable sort orders them).
        double top = Math.max(average / beta, Math.max(minimum, 1)); // every layer keeps one at least
        double bottom = 2.0 * average - top;
        long sum = 0;
        double real = 0;
        int floor = 0;
        for (int l = 0; l < layers; l++) {
            double r = bottom - (bottom - top) * l / (layers - 1);
            int f = (int) Math.floor(r + 1e-9);
            sum += f;
            if (l == layer) {
                real = r;
                floor = f;
            }
        }
        long left = (long) layers * average - sum;
        double fraction0 = real - floor;
        int rank = 0;
        for (int l = 0; l < layers && rank < left; l++) {
            double r = bottom - (bottom - top) * l / (layers - 1);
            double frac = r - (int) Math.floor(r + 1e-9);
            if (frac > fraction0 || frac == fraction0 && l < layer) {
                rank++;
            }
        }
        return floor + (rank < left ? 1 : 0);
    }

    public int budget(int layer) {
        checkLayer(layer);
        return budgets[layer];
    }

    private void checkLayer(int layer) {
        if (layer < 0 || layer >= budgets.length) {
            throw new IllegalArgumentException("layer " + layer + " is out of range [0, " + budgets.length + ")");
        }
    }

    public int[] budgets() {
        return budgets.clone();
    }

    public int sinks() {
        return sinks;
    }

    public int window() {
        return window;
    }

    /** Sequences forgotten lately (closed), the last {@link #CLOSED_KEPT}: see {@link #observe}. */
    private final java.util.Set<Long> closed = java.util.Collections.newSetFromMap(
            new java.util.LinkedHashMap<>(16, 0.75f, false) {
                @Override
                protected boolean removeEldestEntry(java.util.Map.Entry<Long, Boolean> eldest) {
                    return size() > CLOSED_KEPT;
                }
            });
    static final int CLOSED_KEPT = 4096;

    /**
     * Adds each visited entry's mean weight over query heads to its score (needs a result with weights). A result of
     * a sequence closed since it was computed (an attention that raced the close) is dropped: taken, it would make the
     * sequence's scores anew, and they would never be forgotten (a store never reuses an id).
     */
    public synchronized void observe(long sequence, int layer, AttentionResult result) {
        if (closed.contains(sequence)) {
            return;
        }
        Scores s = scores(sequence, layer);
        int[] positions = result.positions();
        for (int j = 0; j < positions.length; j++) {
            s.add(positions[j], result.meanWeight(j));
        }
        if (chooser != null) {
            // Known to the policy in position (generation) order; then their attention, for the policies ranking by it.
            // Not the positions evicted since the result was computed: tracked again, the policy would offer them
            // for good, and they are no longer here to evict.
            chooser.track(sequence, layer, s.evicted.isEmpty() ? positions
                    : java.util.Arrays.stream(positions).filter(p -> !s.evicted.get(p)).toArray());
            chooser.attended(sequence, layer, result);
        }
    }

    /** Accumulated attention of a position (0 when never observed). */
    public synchronized float score(long sequence, int layer, int position) {
        checkLayer(layer);
        Scores[] layers = sequences.get(sequence);
        return layers == null || layers[layer] == null ? 0f : layers[layer].get(position);
    }

    /**
     * As the store's hook: an entry evicted by any path (this policy, {@code KvStore.evict}, a budget resize) no longer
     * counts as resident, so a layer never looks over budget for entries it no longer holds.
     */
    @Override
    public synchronized void evicted(long sequence, int layer, int position) {
        if (layer < budgets.length && !closed.contains(sequence)) {
            // Kept also before the layer's first result: that result may show the position, which must not then
            // count as resident.
            scores(sequence, layer).evicted.set(position);
            if (chooser != null) {
                chooser.forget(sequence, layer, new int[] {position});
            }
        }
    }

    /**
     * As the store's hook: an entry taken back ({@code KvStore.withdrawLast}) is forgotten whole, its score and its
     * eviction too, so that the token stored at its position later starts anew.
     */
    @Override
    public synchronized void withdrawn(long sequence, int layer, int position) {
        if (layer < budgets.length && !closed.contains(sequence)) {
            Scores s = scoresOrNull(sequence, layer);
            if (s != null) {
                if (position < s.score.length) {
                    s.score[position] = 0f;
                }
                s.seen.clear(position);
                s.evicted.clear(position);
            }
            if (chooser != null) {
                chooser.withdrawn(sequence, layer, new int[] {position});
            }
        }
    }

    /** The positions of (sequence, layer) this policy counts as resident: observed and not known to be evicted. */
    public synchronized int[] knownResident(long sequence, int layer) {
        Scores s = scoresOrNull(sequence, layer);
        return s == null ? new int[0] : known(s);
    }

    /** Drops what is known of a closed sequence; its id must not come back (later results of it are dropped). */
    public synchronized void forget(long sequence) {
        closed.add(sequence);
        sequences.remove(sequence);
        if (chooser != null) {
            chooser.drop(sequence);
        }
    }

    /** As the store's hook: a closed sequence is forgotten ({@link #forget}). */
    @Override
    public void sequenceClosed(long sequence) {
        forget(sequence);
    }

    /**
     * The positions to evict from {@code resident} (ascending positions of one (sequence, layer)) to meet the layer's
     * budget: none when within it, else the lowest-scored ones outside the sinks and the recent window — or, through
     * an eviction policy, the policy's victims, which it then no longer tracks: the caller evicts them.
     */
    public synchronized int[] victims(long sequence, int layer, int[] resident) {
        if (closed.contains(sequence)) {
            return new int[0]; // closed meanwhile: nothing of it is tracked again
        }
        return choose(sequence, layer, scoresOrNull(sequence, layer), budgets[layer], resident);
    }

    /**
     * The victims bringing {@code resident} down to {@code budget}: PyramidKV's choice, or the chooser's, which stops
     * tracking them (the caller evicts them).
     */
    private int[] choose(long sequence, int layer, Scores s, int budget, int[] resident) {
        if (chooser == null) {
            return select(resident, budget, sinks, window, p -> s == null ? 0f : s.get(p));
        }
        int excess = resident.length - budget;
        if (excess <= 0) {
            return new int[0];
        }
        // Residents the policy has not heard of yet (never in an observed result) are told of first; a position it
        // tracks that is not resident (evicted without this budget hearing of it) is not a victim.
        chooser.track(sequence, layer, resident);
        int[] sortedResident = resident.clone();
        Arrays.sort(sortedResident);
        int[] out = chooser.evict(sequence, layer, excess, p -> Arrays.binarySearch(sortedResident, p) >= 0);
        Arrays.sort(out);
        return out;
    }

    /**
     * PyramidKV's choice: the positions to evict from {@code resident} (ascending positions of one (sequence, layer))
     * to bring it down to {@code budget} — the lowest-scored outside the first {@code sinks} positions and the
     * {@code window} most recent, the oldest first on equal scores — ascending; none when within the budget.
     *
     * @param score each position's accumulated attention (>= 0)
     */
    public static int[] select(int[] resident, int budget, int sinks, int window, PositionScore score) {
        if (sinks < 0 || window < 0) {
            throw new IllegalArgumentException("sinks and window must be >= 0, got " + sinks + " and " + window);
        }
        int excess = resident.length - budget;
        if (excess <= 0) {
            return new int[0];
        }
        int recentFrom = resident.length - window; // resident[recentFrom..] is the window
        long[] ranked = new long[Math.max(0, recentFrom)];
        int n = 0;
        for (int i = 0; i < recentFrom; i++) {
            int p = resident[i];
            if (p >= sinks) {
                // Scores are >= 0, so their bits order as the floats do; then the position (the oldest first).
                ranked[n++] = ((long) Float.floatToIntBits(Math.max(score.of(p), 0f)) << 32) | p;
            }
        }
        java.util.Arrays.sort(ranked, 0, n);
        int[] out = new int[Math.min(excess, n)];
        for (int i = 0; i < out.length; i++) {
            out[i] = (int) ranked[i];
        }
        Arrays.sort(out);
        return out;
    }

    /** A position's accumulated attention. */
    @FunctionalInterface
    public interface PositionScore {
        float of(int position);
    }

    /** Evicts every layer of {@code sequence} in {@code store} down to its budget; returns the entries evicted. */
    public int enforce(KvStore store, long sequence) {
        int layers = store.shape().layers();
        if (layers > budgets.length) {
            throw new IllegalArgumentException("the store has " + layers + " layers but budgets cover " + budgets.length
                    + ": every layer needs a budget");
        }
        int evicted = 0;
        // As the store's hook it hears of each eviction itself (of those the store made: a victim taken back meanwhile,
        // by another thread's withdrawLast, is neither evicted nor to be marked so); else it marks its victims.
        boolean told = store.config().eviction() == this;
        for (int layer = 0; layer < layers; layer++) {
            int[] victims = victims(sequence, layer, store.residentPositions(sequence, layer));
            if (victims.length > 0) {
                evicted += store.evict(sequence, layer, victims);
                if (!told) {
                    markEvicted(sequence, layer, victims);
                }
            }
        }
        return evicted;
    }

    private synchronized void markEvicted(long sequence, int layer, int[] positions) {
        if (closed.contains(sequence)) {
            return;
        }
        Scores s = scores(sequence, layer);
        for (int p : positions) {
            s.evicted.set(p);
        }
    }

    /**
     * Frees room in a full shard: evicts over-budget entries of the (sequence, layer) most over its budget by what this
     * policy has observed (seen and not evicted), until the shard frees a page; the oldest page when nothing it knows of
     * is over budget.
     */
    @Override
    public void makeRoom(EvictionContext ctx) {
        int pagesBefore = ctx.pool().pagesInUse();
        List<long[]> tried = new ArrayList<>();
        while (ctx.pool().pagesInUse() >= pagesBefore) {
            long[] pick;
            int[] victims;
            synchronized (this) {
                pick = mostOverBudget(tried);
                if (pick == null) {
                    break;
                }
                tried.add(pick);
                Scores s = sequences.get(pick[0])[(int) pick[1]];
                if (chooser != null) {
                    // The policy's victims, each evicted as it is picked; one this shard does not hold (it lives on
                    // another shard) stays a candidate. Under this lock (the store's lock is held already: the order
                    // is store, this, the retention, as everywhere).
                    long sequence = pick[0];
                    int layer = (int) pick[1];
                    int[] known = known(s);
                    chooser.track(sequence, layer, known);
                    int[] gone = chooser.evict(sequence, layer, known.length - budgets[layer],
                            p -> ctx.evictTokens(sequence, layer, new int[] {p}) > 0,
                            () -> ctx.pool().pagesInUse() < pagesBefore); // a page is free: enough
                    markEvicted(sequence, layer, gone);
                    continue;
                }
                victims = choose(pick[0], (int) pick[1], s, budgets[(int) pick[1]], known(s));
            }
            for (int p : victims) {
                if (ctx.evictTokens(pick[0], (int) pick[1], new int[] {p}) > 0) {
                    markEvicted(pick[0], (int) pick[1], new int[] {p});
                }
            }
        }
        if (ctx.pool().pagesInUse() >= pagesBefore) {
            Page oldest = ctx.oldestPage();
            if (oldest != null) {
                // What the page holds is evicted too: it must not count as known-resident later (a layer would then
                // look over budget and lose tokens it may keep).
                long sequence = oldest.sequence();
                int layer = oldest.layer();
                int[] positions = new int[oldest.count()];
                for (int slot = 0; slot < positions.length; slot++) {
                    positions[slot] = oldest.positionAt(slot);
                }
                ctx.evictPage(oldest);
                if (layer < budgets.length) {
                    markEvicted(sequence, layer, positions);
                }
            }
        }
    }

    /** {sequence, layer} with the largest excess of known-resident entries over its budget, not yet tried. */
    private long[] mostOverBudget(List<long[]> tried) {
        long[] best = null;
        int bestExcess = 0;
        for (Map.Entry<Long, Scores[]> e : sequences.entrySet()) {
            Scores[] layers = e.getValue();
            for (int l = 0; l < layers.length; l++) {
                if (layers[l] == null) {
                    continue;
                }
                long seq = e.getKey();
                int layer = l;
                if (tried.stream().anyMatch(t -> t[0] == seq && t[1] == layer)) {
                    continue;
                }
                int excess = known(layers[l]).length - budgets[l];
                if (excess > bestExcess) {
                    bestExcess = excess;
                    best = new long[] {seq, layer};
                }
            }
        }
        return best;
    }

    private static int[] known(Scores s) {
        BitSet live = (BitSet) s.seen.clone();
        live.andNot(s.evicted);
        return live.stream().toArray();
    }

    private Scores scores(long sequence, int layer) {
        if (layer < 0 || layer >= budgets.length) {
            throw new IllegalArgumentException("layer " + layer + " has no budget (budgets cover " + budgets.length
                    + " layers)");
        }
        Scores[] layers = sequences.computeIfAbsent(sequence, k -> new Scores[budgets.length]);
        if (layers[layer] == null) {
            layers[layer] = new Scores();
        }
        return layers[layer];
    }

    private Scores scoresOrNull(long sequence, int layer) {
        if (layer < 0 || layer >= budgets.length) {
            throw new IllegalArgumentException("layer " + layer + " has no budget (budgets cover " + budgets.length
                    + " layers)");
        }
        Scores[] layers = sequences.get(sequence);
        return layers == null ? null : layers[layer];
    }
}
