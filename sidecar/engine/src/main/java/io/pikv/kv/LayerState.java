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
     * Position → {@code pageId · pageTokens + slot}, or negative when not resident on this shard (−1 never stored or
     * discarded, {@link #markEvicted} evicted, {@link #WITHDRAWN} taken back): a three-level radix index
     * (root → middle nodes of 256 leaves → leaves of 256 positions) whose nodes are allocated as positions are
     * stored, so its memory follows the positions held rather than the highest one (a single entry at position
     * 2^24 − 1 costs three small arrays, not a 64 MiB table). The root grows to the highest middle node in use.
     */
    private int[][][] root = new int[1][][];
    final int[] residentPerExpert;
    final int[] evictedPerExpert;
    /**
     * Resident positions stored again after an eviction, with the expert they were evicted as: withdrawing one puts its
     * eviction back (the append that re-stored it did not happen). Made on first use; bounded by the resident entries.
     */
    java.util.Map<Integer, Integer> restoredAfterEviction;
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

    /** The location of a position stored and then withdrawn: not resident, and free to be stored again. */
    static final int WITHDRAWN = Integer.MIN_VALUE;

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
    }

    /** Marks a resident position as no longer resident, or an evicted one as never stored. */
    void clearLocation(int position) {
        root[position >>> (2 * BITS)][(position >>> BITS) & MASK][position & MASK] = -1;
    }

    /**
     * Marks a resident position as evicted, remembering its expert: a lookup counts it as a miss of that expert until
     * the position is stored again or withdrawn. Any negative location is not resident.
     */
    void markEvicted(int position, int expert) {
        root[position >>> (2 * BITS)][(position >>> BITS) & MASK][position & MASK] = -2 - expert;
    }

    /** Marks a position as taken back ({@link #WITHDRAWN}): a later withdrawal of it counts it as taken back too. */
    void markWithdrawn(int position) {
        root[position >>> (2 * BITS)][(position >>> BITS) & MASK][position & MASK] = WITHDRAWN;
    }

    /** The expert an evicted position's location names ({@link #markEvicted}), or -1 for any other location. */
    static int evictedExpertOf(int location) {
        return location <= -2 && location != WITHDRAWN ? -2 - location : -1;
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
