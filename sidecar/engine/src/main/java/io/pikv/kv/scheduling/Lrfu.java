package io.pikv.kv.scheduling;

import java.util.Arrays;

/**
 * LRFU (Lee et al., 2001) with a history, leaf-first through its container: ranks by the combined recency and
 * frequency value {@code CRF = Σ_k 2^{−(now − t_k)/halfLife}} over the entry's past uses {@code t_k}, and evicts
 * the lowest. Because every CRF decays at the same rate, comparing {@code log2 CRF(t_last) + t_last/halfLife} orders
 * entries exactly as their current CRF does, without re-ranking as the clock moves.
 *
 * <p>Evicted entries leave their CRF in a bounded history, so a block evicted after one use and requested again
 * comes back with the value of two uses: on the Mooncake conversation trace, where three in four blocks are never
 * used twice, that is what separates the conversation context worth keeping from one-off prompts. A prompt's
 * partial last block ({@link Entries#tail}) is evicted before anything else: a follow-up prompt that extends it
 * hashes it anew, so it is almost never reused (0.8% of them on that trace). That rule is the {@code tailFirst}
 * knob.
 */
public final class Lrfu extends RankedPolicy {
    private final double halfLife;
    /**
     * The half-life the arithmetic uses: at least {@link #MIN_HALF_LIFE}, below which {@code at / halfLife} could
     * overflow to infinity and tie every score (the order then falls to the tie-breaks, not to the last use).
     */
    private final double decayHalfLife;
    /**
     * Below a thousandth of a tick every earlier use weighs less than 2^-1000 against a new one, which a double does not
     * hold next to 1: any smaller half-life gives exactly the same CRFs and order.
     */
    static final double MIN_HALF_LIFE = 1e-3;
    private final int historyLimit;
    private final boolean tailFirst;
    private double[] crf = new double[16];
    private long[] at = new long[16];
    // History of evicted entries: a ring of the last historyLimit evictions, indexed by key.
    private LongIntMap historyIndex;
    // Grown as evictions arrive (up to historyLimit), so a large limit costs only what the stream fills.
    private long[] historyKey;
    private double[] historyCrf;
    private long[] historyAt;
    private int historyNext;
    private int historyCount;

    /** Most evicted entries remembered: what the history's index map holds (2^29). */
    public static final int MAX_HISTORY = 1 << 29;

    /**
     * Heap a full history takes per remembered eviction, for sizing: 24 bytes in the ring (key, CRF, time), 26 to 52
     * in the index (13-byte slots, at most half of them used), and room for the copies a growth step makes.
     */
    public static final long HEAP_PER_HISTORY_BYTES = 96;

    /**
     * @param halfLife     clock ticks over which a use loses half its weight
     * @param historyLimit evicted entries whose CRF is remembered (0: none)
     * @param tailFirst    evict partial tail blocks ({@link Entries#tail}) before anything else
     */
    public Lrfu(double halfLife, int historyLimit, boolean tailFirst) {
        this(halfLife, historyLimit, tailFirst, null);
    }

    /**
     * A prototype whose copies ({@link #fresh}) remember at most {@code historyLimit} evicted entries together, not
     * each: what token retention needs, which ranks every (sequence, layer) with a copy of its own, so that the
     * history's heap ({@link #HEAP_PER_HISTORY_BYTES} each) is bounded per store, whatever the sequences. A copy
     * takes slots from the shared count as it remembers more, wraps over its own oldest when none are left, and
     * gives its slots back when it is {@link #retired()} (its sequence closed).
     */
    public static Lrfu sharedHistory(double halfLife, int historyLimit, boolean tailFirst) {
        return new Lrfu(halfLife, historyLimit, tailFirst, new java.util.concurrent.atomic.AtomicLong(historyLimit));
    }

    private Lrfu(double halfLife, int historyLimit, boolean tailFirst, java.util.concurrent.atomic.AtomicLong shared) {
        super(0, 0);
        if (!(halfLife > 0) || historyLimit < 0 || historyLimit > MAX_HISTORY) {
            throw new IllegalArgumentException("halfLife must be > 0 and historyLimit in [0, " + MAX_HISTORY + "], got "
                    + halfLife + " and " + historyLimit);
        }
        this.halfLife = halfLife;
        this.decayHalfLife = Math.max(halfLife, MIN_HALF_LIFE);
        this.historyLimit = historyLimit;
        this.tailFirst = tailFirst;
        this.shared = shared;
        // Grown as evictions come: a copy that never evicts (most of a store's) costs next to nothing.
        this.historyIndex = new LongIntMap(16);
        this.historyKey = NO_KEYS;
        this.historyCrf = NO_CRFS;
        this.historyAt = NO_KEYS;
    }

    /** Slots the copies of a {@link #sharedHistory} prototype may still take, or null: each copy has its own limit. */
    private final java.util.concurrent.atomic.AtomicLong shared;

    /** Takes one slot of the shared count; false when none is left. */
    private boolean takeShared() {
        long left;
        do {
            left = shared.get();
            if (left <= 0) {
                return false;
            }
        } while (!shared.compareAndSet(left, left - 1));
        return true;
    }

    /** Slots of the history in use (for tests). */
    int historySlots() {
        return historyCount;
    }

    /** Gives a shared history's slots back: this copy ranks nothing any more, and remembers nothing. */
    @Override
    public void retired() {
        LongIntMap empty = new LongIntMap(16); // made first: a failure to make it changes nothing
        if (shared != null && historyCount > 0) {
            shared.addAndGet(historyCount);
        }
        historyCount = 0;
        historyNext = 0;
        historyIndex = empty;
        historyKey = NO_KEYS;
        historyCrf = NO_CRFS;
        historyAt = NO_KEYS;
    }

    private static final long[] NO_KEYS = new long[0];
    private static final double[] NO_CRFS = new double[0];

    public double halfLife() {
        return halfLife;
    }

    public int historyLimit() {
        return historyLimit;
    }

    public boolean tailFirst() {
        return tailFirst;
    }

    @Override
    public String name() {
        return "lrfu";
    }

    @Override
    public void accessed(Entries entries, int id) {
        if (id >= crf.length) {
            int n = Math.max(crf.length * 2, id + 1);
            crf = Arrays.copyOf(crf, n);
            at = Arrays.copyOf(at, n);
        }
        long now = entries.now();
        double previous = 0;
        long previousAt = now;
        if (entries.accesses(id) == 1) {
            int h = historyIndex.remove(entries.key(id));
            if (h >= 0) {
                previous = historyCrf[h];
                previousAt = historyAt[h];
            }
        } else {
            previous = crf[id];
            previousAt = at[id];
        }
        // Both are decayed to the later of the two times: a use dated before the remembered one (a token learnt of
        // late, dated by its position, or a clock that went back with a withdrawn append) adds its own decayed
        // weight and leaves the remembered CRF where it is, so a use never lowers a score.
        long t = Math.max(now, previousAt);
        crf[id] = Math.pow(2, -(t - now) / decayHalfLife) + previous * Math.pow(2, -(t - previousAt) / decayHalfLife);
        at[id] = t;
    }

    @Override
    protected double score(Entries entries, int id) {
        return Math.log(crf[id]) / Math.log(2) + at[id] / decayHalfLife;
    }

    @Override
    protected boolean evictFirst(Entries entries, int id) {
        return tailFirst && entries.tail(id);
    }

    @Override
    public void evicted(Entries entries, int id) {
        if (historyLimit == 0) {
            return;
        }
        int h = historyNext;
        // A new slot while filling (the ring is the first historyCount slots) and within the limit, its own and the
        // shared one's; else the oldest of the slots it has is overwritten (none: nothing is remembered).
        if (h == historyCount && historyCount < historyLimit && (shared == null || takeShared())) {
            historyCount++;
            if (h == historyKey.length) {
                // From 4 slots, doubling: a copy that remembers a few (most of a shard's) takes little more.
                int n = (int) Math.min(historyLimit, Math.max(4L, 2L * h));
                historyKey = Arrays.copyOf(historyKey, n);
                historyCrf = Arrays.copyOf(historyCrf, n);
                historyAt = Arrays.copyOf(historyAt, n);
            }
        } else {
            if (historyCount == 0) {
                return;
            }
            if (h >= historyCount) {
                h = 0;
            }
            long old = historyKey[h];
            if (historyIndex.get(old) == h) {
                historyIndex.remove(old);
            }
        }
        long k = entries.key(id);
        historyKey[h] = k;
        historyCrf[h] = crf[id];
        historyAt[h] = at[id];
        historyIndex.put(k, h);
        historyNext = h + 1;
    }

    /** Drops the remembered CRF of {@code key} (its ring slot stays, and is overwritten in turn). */
    @Override
    public void forget(long key) {
        historyIndex.remove(key);
    }

    @Override
    public EvictionPolicy fresh() {
        return new Lrfu(halfLife, historyLimit, tailFirst, shared);
    }
}
