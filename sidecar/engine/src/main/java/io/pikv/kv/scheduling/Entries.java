package io.pikv.kv.scheduling;

import java.util.Arrays;

/**
 * The resident entries of one cache, with the features eviction policies rank them by. An entry is a token of a
 * (sequence, layer) or a prefix block; each has a dense id, reused after it leaves, under which policies keep their
 * own state in arrays.
 *
 * <p>Features, as the two containers fill them:
 * <ul>
 *   <li>{@link #position}: the token's position, or the block's depth in its request (0 = first block);</li>
 *   <li>{@link #lastAccess}: the clock when it was last used. The clock is the token count of the sequence for
 *       tokens (a token is "used" when appended: under full attention every resident token is read at every step,
 *       so recency means generation order), and the lookup count for blocks;</li>
 *   <li>{@link #accesses}: uses since it became resident (tokens: its append plus every step that gave it at least
 *       its uniform share of attention);</li>
 *   <li>{@link #mass}: attention weight accumulated while resident (blocks: one per use, the first included);</li>
 *   <li>{@link #parent}, {@link #children}: the block before it in its request and how many resident blocks follow
 *       it (tokens: none);</li>
 *   <li>{@link #tail}: a block that was the last of its request when it came in and has not been used since: the
 *       prompt's partial last block, whose hash changes when a follow-up prompt extends it.</li>
 * </ul>
 */
public final class Entries {
    private final LongIntMap index;
    private long now;
    private int size;
    private int highWater;
    private int[] free = new int[16];
    private int freeCount;
    private long[] key;
    private int[] position;
    private long[] inserted;
    private long[] lastAccess;
    int[] accesses; // package-private for tests of the count's bound
    private double[] mass;
    private int[] parent;
    private int[] children;
    private boolean[] tail;

    public Entries(int expected) {
        int cap = Math.max(16, expected);
        index = new LongIntMap(cap);
        key = new long[cap];
        position = new int[cap];
        inserted = new long[cap];
        lastAccess = new long[cap];
        accesses = new int[cap];
        mass = new double[cap];
        parent = new int[cap];
        children = new int[cap];
        tail = new boolean[cap];
    }

    /** The clock: lookups (blocks) or the newest position (tokens). */
    public long now() {
        return now;
    }

    void setNow(long clock) {
        now = clock;
    }

    public int size() {
        return size;
    }

    /** One more than the largest id handed out so far: policies size their arrays by it. */
    public int idLimit() {
        return highWater;
    }

    /** The id of the resident entry with this key, or -1. */
    public int id(long k) {
        return index.get(k);
    }

    public long key(int id) {
        return key[id];
    }

    public int position(int id) {
        return position[id];
    }

    public long inserted(int id) {
        return inserted[id];
    }

    public long lastAccess(int id) {
        return lastAccess[id];
    }

    public int accesses(int id) {
        return accesses[id];
    }

    public double mass(int id) {
        return mass[id];
    }

    /** The parent's id, or -1. */
    public int parent(int id) {
        return parent[id];
    }

    public int children(int id) {
        return children[id];
    }

    public boolean tail(int id) {
        return tail[id];
    }

    /** Makes {@code k} resident, used now, and returns its id. */
    int add(long k, int pos, int parentId, boolean isTail, double initialMass) {
        int id;
        if (freeCount > 0) {
            id = free[--freeCount];
        } else {
            if (highWater == key.length) {
                grow();
            }
            id = highWater++;
        }
        index.put(k, id);
        key[id] = k;
        position[id] = pos;
        inserted[id] = now;
        lastAccess[id] = now;
        accesses[id] = 1;
        mass[id] = initialMass;
        parent[id] = parentId;
        children[id] = 0;
        tail[id] = isTail;
        if (parentId >= 0) {
            children[parentId]++;
        }
        size++;
        return id;
    }

    /** Records a use now. */
    void touch(int id, double addedMass) {
        lastAccess[id] = now;
        countUse(id);
        mass[id] += addedMass;
        tail[id] = false;
    }

    /** Adds attention weight; {@code heavy} counts the step as a use (recency stays generation order). */
    void attend(int id, double weight, boolean heavy) {
        mass[id] += weight;
        if (heavy) {
            countUse(id);
        }
    }

    /** One more use; the count stops at Integer.MAX_VALUE (years of a hot block's hits) rather than wrapping. */
    private void countUse(int id) {
        if (accesses[id] != Integer.MAX_VALUE) {
            accesses[id]++;
        }
    }

    /** Removes the entry; returns its parent's id (whose child count drops), or -1. */
    int remove(int id) {
        index.remove(key[id]);
        int p = parent[id];
        if (p >= 0) {
            children[p]--;
        }
        parent[id] = -1;
        if (freeCount == free.length) {
            free = Arrays.copyOf(free, free.length * 2);
        }
        free[freeCount++] = id;
        size--;
        return p;
    }

    private void grow() {
        int cap = key.length * 2;
        key = Arrays.copyOf(key, cap);
        position = Arrays.copyOf(position, cap);
        inserted = Arrays.copyOf(inserted, cap);
        lastAccess = Arrays.copyOf(lastAccess, cap);
        accesses = Arrays.copyOf(accesses, cap);
        mass = Arrays.copyOf(mass, cap);
        parent = Arrays.copyOf(parent, cap);
        children = Arrays.copyOf(children, cap);
        tail = Arrays.copyOf(tail, cap);
    }
}
