package io.pikv.kv;

import java.util.Arrays;

/** One shard's state for one (sequence, layer): its buckets, where each position lives, per-expert counts. */
final class LayerState {
    /** Positions per leaf of the index, and leaves per middle node (both 2^8). */
    private static final int BITS = 8;
    private static final int FAN = 1 << BITS;
    private static final int MASK = FAN - 1;

    /** The sequence whose layer this is. */
    final long sequence;
    final Segment[] buckets;
    /**
     * Position → {@code pageId · pageTokens + slot}, or negative when not resident on this shard (−1 never stored,
     * discarded or withdrawn, {@link #markEvicted} evicted): a three-level radix index
     * (root → middle nodes of 256 leaves → leaves of 256 positions) whose nodes are allocated as positions are
     * stored, so a single entry at position 2^24 − 1 costs three small arrays, not a 64 MiB table. The root grows to
     * the highest middle node in use. A leaf that holds no resident entry and lies wholly more than {@link #HORIZON}
     * positions below the highest position stored is freed, with its markers: the index of a long sequence under
     * eviction stays within its resident leaves plus the horizon's, instead of 4 bytes for every position it ever
     * stored. Past the horizon an evicted position thus reads as never stored: storing it again does not take back
     * its miss, and withdrawing it counts nothing. Undo and re-store happen to the positions of one request, which
     * the horizon covers up to 131,072 positions (a longer request undone after evictions leaves phantom misses).
     */
    private int[][][] root = new int[1][][];
    /** Positions below the highest stored beyond which empty leaves are freed (512 leaves, 512 KiB of index). */
    static final int HORIZON = 512 * FAN;
    /** The highest position stored so far, −1 before any. */
    private int highest = -1;
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
        int top = position >>> (2 * BITS);
        if (top >= root.length || root[top] == null) {
            return -1;
        }
        int[] leaf = root[top][(position >>> BITS) & MASK];
        return leaf == null ? -1 : leaf[position & MASK];
    }

    /** Allocates the index nodes for {@code position}: before anything else changes, so a failure here changes nothing. */
    void reserve(int position) {
        int top = position >>> (2 * BITS);
        if (top >= root.length) {
            root = Arrays.copyOf(root, top + 1);
        }
        int[][] middle = root[top];
        if (middle == null) {
            middle = new int[FAN][];
            root[top] = middle;
        }
        int at = (position >>> BITS) & MASK;
        if (middle[at] == null) {
            int[] leaf = new int[FAN];
            Arrays.fill(leaf, -1);
            middle[at] = leaf;
        }
    }

    void setLocation(int position, int value) {
        reserve(position);
        root[position >>> (2 * BITS)][(position >>> BITS) & MASK][position & MASK] = value;
        if (position > highest) {
            int before = highest < 0 ? -1 : lastLeafPast(highest);
            highest = position;
            // Leaves that just fell past the horizon: free those already empty (others go with their last entry).
            for (int leaf = Math.max(0, before + 1); leaf <= lastLeafPast(highest); leaf++) {
                release(leaf);
            }
        }
    }

    /** Marks a resident position as no longer resident, or an evicted one as never stored. */
    void clearLocation(int position) {
        root[position >>> (2 * BITS)][(position >>> BITS) & MASK][position & MASK] = -1;
        left(position);
    }

    /** The last leaf wholly more than {@link #HORIZON} positions below {@code high} (negative: none). */
    private static int lastLeafPast(int high) {
        int t = high - HORIZON; // leaf L ends below t when (L + 1) · 256 <= t
        return t < 0 ? -1 : (t >> BITS) - 1;
    }

    /** A position stopped being resident: its leaf goes if it is past the horizon and holds no resident entry. */
    private void left(int position) {
        if ((position >>> BITS) <= lastLeafPast(highest)) {
            release(position >>> BITS);
        }
    }

    /** Frees leaf {@code leaf} (positions {@code leaf · 256 …}) when it holds no resident entry. */
    private void release(int leaf) {
        int top = leaf >>> BITS;
        if (top >= root.length || root[top] == null) {
            return;
        }
        int[][] middle = root[top];
        int[] cells = middle[leaf & MASK];
        if (cells == null) {
            return;
        }
        for (int c : cells) {
            if (c >= 0) {
                return;
            }
        }
        middle[leaf & MASK] = null;
        for (int[] other : middle) {
            if (other != null) {
                return;
            }
        }
        root[top] = null;
    }

    /** Leaves allocated now (for tests of the index's memory). */
    int leaves() {
        int n = 0;
        for (int[][] middle : root) {
            for (int m = 0; middle != null && m < FAN; m++) {
                n += middle[m] == null ? 0 : 1;
            }
        }
        return n;
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
        root[position >>> (2 * BITS)][(position >>> BITS) & MASK][position & MASK] =
                -2 - (expert + (prior + 1) * EXPERT_SPAN);
        left(position);
    }

    /**
     * Marks {@code position} evicted as {@code expert} again because a withdrawal took back the re-store that had
     * replaced that eviction: the eviction stands, and a later withdrawal of the position (taken back before) neither
     * counts it nor clears it.
     */
    void markPutBack(int position, int expert) {
        root[position >>> (2 * BITS)][(position >>> BITS) & MASK][position & MASK] = -2 - (expert + PUT_BACK);
        left(position);
    }

    /** Values an expert id takes in an eviction marker. */
    private static final int EXPERT_SPAN = ModelShape.MAX_EXPERTS;
    /** Added to a marker that a withdrawal put back ({@link #markPutBack}); above every expert and prior pair. */
    private static final int PUT_BACK = 1 << 25;

    /** The expert an evicted position's location names ({@link #markEvicted}), or -1 for any other location. */
    static int evictedExpertOf(int location) {
        return location <= -2 ? ((-2 - location) % PUT_BACK) % EXPERT_SPAN : -1;
    }

    /** The expert an evicted position had been evicted as before a re-store (then evicted again), or -1. */
    static int priorEvictionOf(int location) {
        return location <= -2 ? ((-2 - location) % PUT_BACK) / EXPERT_SPAN - 1 : -1;
    }

    /** Whether an eviction marker was put back by a withdrawal ({@link #markPutBack}). */
    static boolean putBack(int location) {
        return location <= -2 && -2 - location >= PUT_BACK;
    }

    /** Up to {@code out.length} resident positions, ascending, into {@code out}; returns how many. */
    int positions(int[] out) {
        int n = 0;
        for (int top = 0; top < root.length && n < out.length; top++) {
            int[][] middle = root[top];
            for (int m = 0; middle != null && m < FAN && n < out.length; m++) {
                int[] leaf = middle[m];
                for (int i = 0; leaf != null && i < FAN && n < out.length; i++) {
                    if (leaf[i] >= 0) {
                        out[n++] = (top << (2 * BITS)) | (m << BITS) | i;
                    }
                }
            }
        }
        return n;
    }
}
