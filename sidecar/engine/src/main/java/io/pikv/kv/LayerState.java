package io.pikv.kv;

import java.util.Arrays;

/** One shard's state for one (sequence, layer): its buckets, where each position lives, per-expert counts. */
final class LayerState {
    /** The sequence whose layer this is. */
    final long sequence;
    final Segment[] buckets;
    /**
     * Position → {@code pageId · pageTokens + slot} for a resident entry, or an eviction marker ({@link #markEvicted},
     * {@link #markDiscarded}, ≤ −2); a position not held reads as −1 (never stored, or withdrawn). A hash map of the positions held
     * ({@link PositionMap}): its cost follows the number of entries, not their spread, so positions far apart (a shard
     * of many holds every few dozenth position of a sequence; a client may store at any position up to 2^24 − 1) cost
     * what dense ones do. Eviction markers of positions more than {@link #HORIZON} below the highest position stored
     * are dropped once more than {@link #MARKER_LIMIT} markers are held: the index of a long sequence under eviction
     * stays within its resident entries plus two horizons' markers. Past the horizon an evicted position may thus read
     * as never stored: storing it again does not take back its miss, and withdrawing it counts nothing. Undo and
     * re-store happen to the positions of one request, which the horizon covers up to 131,072 positions (a longer
     * request undone after evictions leaves phantom misses).
     */
    private final PositionMap index = new PositionMap();
    /** Positions below the highest stored whose eviction markers may be dropped. */
    static final int HORIZON = 1 << 17;
    /** Markers held at most before those past the horizon are dropped (amortized: each drop leaves at most half). */
    static final int MARKER_LIMIT = 2 * HORIZON;
    /** The highest position stored so far, −1 before any. */
    private int highest = -1;
    /** Eviction markers in {@link #index}. */
    private int markers;
    final int[] residentPerExpert;
    final int[] evictedPerExpert;
    /**
     * Resident positions stored again after an eviction, with the expert they were evicted as: withdrawing one puts its
     * eviction back (the append that re-stored it did not happen). Made on first use; bounded by the resident entries.
     * A primitive map: an eviction looks each evicted position up in it, which must not allocate.
     */
    io.pikv.kv.scheduling.LongIntMap restoredAfterEviction;
    int resident;

    LayerState(long sequence, int layer, int buckets, int experts) {
        this.sequence = sequence;
        this.buckets = new Segment[buckets];
        for (int b = 0; b < buckets; b++) {
            this.buckets[b] = new Segment(this, layer);
        }
        this.residentPerExpert = new int[experts];
        this.evictedPerExpert = new int[experts];
    }

    int location(int position) {
        if (position < 0 || position > KvShard.MAX_POSITION) {
            return -1;
        }
        return index.get(position); // MISSING is −1
    }

    /**
     * Makes room in the index for {@code position}: before anything else changes, so a failure here (memory) changes
     * nothing. Markers past the horizon are dropped here too, when there are too many.
     */
    void reserve(int position) {
        if (index.get(position) != PositionMap.MISSING) {
            return; // held: a new value replaces the old in place
        }
        if (markers > MARKER_LIMIT) {
            // Below the horizon of the highest position stored so far, not of this one: the append may still fail
            // (the growth below), and must then leave every marker it found.
            int floor = highest - HORIZON;
            markers -= index.retain((p, location) -> location > -2 || p >= floor);
        }
        index.reserve();
    }

    void setLocation(int position, int value) {
        reserve(position);
        if (index.get(position) <= -2) {
            markers--;
        }
        index.put(position, value);
        highest = Math.max(highest, position);
    }

    /** Marks a resident position as no longer resident, or an evicted one as never stored. */
    void clearLocation(int position) {
        if (index.remove(position) <= -2) {
            markers--;
        }
    }

    /** Positions the index holds now, resident or evicted (for tests of the index's memory). */
    int indexed() {
        return index.size();
    }

    /** Slots the index has allocated now (for tests of the index's memory). */
    int indexCapacity() {
        return index.capacity();
    }

    /** Sets an eviction marker in place of {@code position}'s location (held: nothing is allocated). */
    private void mark(int position, int marker) {
        if (index.get(position) > -2) {
            markers++;
        }
        index.put(position, marker);
    }

    /**
     * Marks a resident position as evicted, remembering its expert: a lookup counts it as a miss of that expert until
     * the position is stored again or withdrawn. Any negative location is not resident.
     */
    void markEvicted(int position, int expert) {
        markEvicted(position, expert, -1);
    }

    /**
     * Marks {@code position} evicted as {@code expert}; {@code prior} is the expert it had been evicted as before it was
     * stored again (−1: none), so that withdrawing that re-store puts the earlier eviction back. Both fit one marker:
     * experts take 12 bits ({@link ModelShape#MAX_EXPERTS}).
     */
    void markEvicted(int position, int expert, int prior) {
        mark(position, -2 - (expert + (prior + 1) * EXPERT_SPAN));
    }

    /**
     * Marks {@code position} evicted as {@code expert} again because a withdrawal took back the re-store that had
     * replaced that eviction: the eviction stands, and a later withdrawal of the position (taken back before) neither
     * counts it nor clears it.
     */
    void markPutBack(int position, int expert) {
        mark(position, -2 - (expert + PUT_BACK));
    }

    /**
     * Marks {@code position} discarded (evicted by a compression's choice, {@code KvShard.discard}): no miss of any
     * expert, but a withdrawal of the entry still finds it taken and counts it (then clears it).
     */
    void markDiscarded(int position) {
        mark(position, -2 - DISCARDED);
    }

    /** Values an expert id takes in an eviction marker. */
    private static final int EXPERT_SPAN = ModelShape.MAX_EXPERTS;
    /** Added to a marker that a withdrawal put back ({@link #markPutBack}); above every expert and prior pair. */
    private static final int PUT_BACK = 1 << 25;
    /** The marker of a discarded position ({@link #markDiscarded}); above every other marker. */
    private static final int DISCARDED = 1 << 26;

    /**
     * The expert an evicted position's location names ({@link #markEvicted}), or -1 for any other location (a
     * discarded one included: it is no miss).
     */
    static int evictedExpertOf(int location) {
        return location <= -2 && !discarded(location) ? ((-2 - location) % PUT_BACK) % EXPERT_SPAN : -1;
    }

    /** The expert an evicted position had been evicted as before a re-store (then evicted again), or -1. */
    static int priorEvictionOf(int location) {
        return location <= -2 && !discarded(location) ? ((-2 - location) % PUT_BACK) / EXPERT_SPAN - 1 : -1;
    }

    /** Whether an eviction marker was put back by a withdrawal ({@link #markPutBack}). */
    static boolean putBack(int location) {
        return location <= -2 && -2 - location >= PUT_BACK && !discarded(location);
    }

    /** Whether a location is a discarded position's marker ({@link #markDiscarded}). */
    static boolean discarded(int location) {
        return location == -2 - DISCARDED;
    }

    /** The resident positions, ascending, into {@code out} (of at least {@link #resident} ints); returns how many. */
    int positions(int[] out) {
        int[] n = {0};
        index.forEach((position, location) -> {
            if (location >= 0) {
                out[n[0]++] = position;
            }
            return true;
        });
        Arrays.sort(out, 0, n[0]);
        return n[0];
    }
}
