package io.pikv.kv.scheduling;

/**
 * Open-addressing map from long keys to non-negative ints (linear probing, backward-shift deletion), so that a
 * lookup on the replay path allocates nothing: a boxed {@code HashMap<Long, …>} costs a key object per block. Also the
 * sidecar's per-position scores of pyramid budgets (float bits of non-negative scores are non-negative ints).
 * Not thread-safe.
 */
public final class LongIntMap {
    private static final int MISSING = -1;
    private long[] keys;
    private int[] values;
    private boolean[] used;
    private int size;
    private int mask;

    public LongIntMap(int expected) {
        // Sized up front for at most 2^29 entries (the most it holds), then grown as entries arrive.
        int cap = Integer.highestOneBit(Math.max(4, Math.min(expected, 1 << 29) * 2 - 1)) << 1;
        alloc(cap);
    }

    /** New empty tables of {@code cap} slots; all allocated before any is replaced, so a failure changes nothing. */
    private void alloc(int cap) {
        long[] k = new long[cap];
        int[] v = new int[cap];
        boolean[] u = new boolean[cap];
        keys = k;
        values = v;
        used = u;
        mask = cap - 1;
    }

    /**
     * Keys are mixed with a seed of this map's own before the murmur3 finaliser (every bit of the key reaches the
     * slot's bits): the sidecar's block store is keyed by its clients' hashes, and with an unseeded hash a client could
     * pick keys that all probe one cluster of slots (a lookup then costs O(n), where HashMap's trees would stay
     * O(log n)). No result depends on the slot order: nothing iterates the map.
     */
    private final long seed = java.util.concurrent.ThreadLocalRandom.current().nextLong();

    private int mix(long key) {
        long h = key ^ seed;
        h = (h ^ (h >>> 33)) * 0xFF51AFD7ED558CCDL;
        h = (h ^ (h >>> 33)) * 0xC4CEB9FE1A85EC53L;
        return (int) (h ^ (h >>> 33));
    }

    /** The slot {@code key} probes first (for tests). */
    int home(long key) {
        return mix(key) & mask;
    }

    public int size() {
        return size;
    }

    /** The value of {@code key}, or -1 when absent. */
    public int get(long key) {
        int i = mix(key) & mask;
        while (used[i]) {
            if (keys[i] == key) {
                return values[i];
            }
            i = (i + 1) & mask;
        }
        return MISSING;
    }

    public void put(long key, int value) {
        if (value < 0) {
            throw new IllegalArgumentException("values must be >= 0, got " + value);
        }
        if ((size + 1) * 2 > keys.length && get(key) < 0) { // an update of a key held needs no room
            grow();
        }
        int i = mix(key) & mask;
        while (used[i]) {
            if (keys[i] == key) {
                values[i] = value;
                return;
            }
            i = (i + 1) & mask;
        }
        used[i] = true;
        keys[i] = key;
        values[i] = value;
        size++;
    }

    /** Removes {@code key}; returns its value, or -1 when absent. */
    public int remove(long key) {
        int i = mix(key) & mask;
        while (used[i]) {
            if (keys[i] == key) {
                int value = values[i];
                shiftBack(i);
                size--;
                return value;
            }
            i = (i + 1) & mask;
        }
        return MISSING;
    }

    private void shiftBack(int hole) {
        int i = hole;
        while (true) {
            i = (i + 1) & mask;
            if (!used[i]) {
                break;
            }
            int home = mix(keys[i]) & mask;
            // Move the entry at i into the hole when the hole lies on its probe path (cyclically from home to i).
            boolean onPath = hole <= i ? home <= hole || home > i : home <= hole && home > i;
            if (onPath) {
                keys[hole] = keys[i];
                values[hole] = values[i];
                hole = i;
            }
        }
        used[hole] = false;
    }

    private void grow() {
        if (keys.length >= 1 << 30) {
            throw new IllegalStateException("a map of more than 2^29 entries is not supported");
        }
        long[] oldKeys = keys;
        int[] oldValues = values;
        boolean[] oldUsed = used;
        alloc(keys.length * 2);
        size = 0;
        for (int i = 0; i < oldKeys.length; i++) {
            if (oldUsed[i]) {
                put(oldKeys[i], oldValues[i]);
            }
        }
    }
}
