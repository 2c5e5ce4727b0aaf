package io.pikv.kv;

import java.util.Arrays;

/**
 * Open-addressing map from positions (non-negative ints) to ints other than {@link #MISSING}: linear probing,
 * backward-shift deletion, at most three quarters full. Two int arrays, so an entry costs 8 bytes a slot, 10.7 to 21
 * bytes a key whatever the positions' spread (a table indexed by position, or a radix of fixed leaves, pays for the
 * gaps between sparse positions: a kilobyte a key at worst). Growth happens only in {@link #reserve}; replacing the
 * value of a present key and removing one never allocate. Not thread-safe.
 */
final class PositionMap {
    /** What {@link #get} answers for a key not held; never a value. */
    static final int MISSING = -1;
    private static final int EMPTY = -1;
    private static final int MIN_CAPACITY = 16;

    private int[] keys;
    private int[] values;
    private int size;
    private int mask;

    PositionMap() {
        alloc(MIN_CAPACITY);
    }

    private void alloc(int capacity) {
        int[] k = new int[capacity];
        int[] v = new int[capacity];
        Arrays.fill(k, EMPTY);
        keys = k;
        values = v;
        mask = capacity - 1;
    }

    private static int slot(int key, int mask) {
        int h = key * 0x9E3779B9;
        return (h ^ (h >>> 16)) & mask;
    }

    int size() {
        return size;
    }

    /** Slots now allocated (for tests of the index's memory). */
    int capacity() {
        return keys.length;
    }

    int get(int key) {
        for (int i = slot(key, mask); ; i = (i + 1) & mask) {
            int k = keys[i];
            if (k == key) {
                return values[i];
            }
            if (k == EMPTY) {
                return MISSING;
            }
        }
    }

    /** Makes room for one more key, so that a following {@link #put} of a new key allocates nothing. */
    void reserve() {
        if ((size + 1) * 4L > keys.length * 3L) {
            rehash(keys.length * 2);
        }
    }

    /** Sets {@code key}'s value; a new key must have had room {@link #reserve reserved}. */
    void put(int key, int value) {
        if (key < 0 || value == MISSING) {
            throw new IllegalArgumentException("key " + key + ", value " + value);
        }
        for (int i = slot(key, mask); ; i = (i + 1) & mask) {
            int k = keys[i];
            if (k == key) {
                values[i] = value;
                return;
            }
            if (k == EMPTY) {
                if ((size + 1) * 4L > keys.length * 3L) {
                    throw new IllegalStateException("no room reserved for key " + key);
                }
                keys[i] = key;
                values[i] = value;
                size++;
                return;
            }
        }
    }

    /** Removes {@code key}; returns its value, or {@link #MISSING}. */
    int remove(int key) {
        int i = slot(key, mask);
        while (keys[i] != key) {
            if (keys[i] == EMPTY) {
                return MISSING;
            }
            i = (i + 1) & mask;
        }
        int removed = values[i];
        removeAt(i);
        return removed;
    }

    /** Empties slot {@code i} (held) by a backward shift: later keys of its probe run move into the gap. */
    private void removeAt(int i) {
        // Backward shift: later keys of the probe run move into the gap, so no tombstone is left.
        for (int gap = i, j = (i + 1) & mask; ; j = (j + 1) & mask) {
            int k = keys[j];
            if (k == EMPTY) {
                keys[gap] = EMPTY;
                break;
            }
            int home = slot(k, mask);
            // Move k into the gap if its home is not cyclically within (gap, j].
            if (((j - home) & mask) >= ((j - gap) & mask)) {
                keys[gap] = k;
                values[gap] = values[j];
                gap = j;
            }
        }
        size--;
    }

    /** A filter on the entries for {@link #retain}. */
    @FunctionalInterface
    interface EntryFilter {
        boolean keep(int key, int value);
    }

    /**
     * Keeps the entries {@code filter} keeps; returns how many went. In place (allocating nothing) unless the tables
     * would then be more than four times as large as the kept entries need: those are rebuilt smaller.
     */
    int retain(EntryFilter filter) {
        int kept = 0;
        for (int i = 0; i < keys.length; i++) {
            if (keys[i] != EMPTY && filter.keep(keys[i], values[i])) {
                kept++;
            }
        }
        int gone = size - kept;
        if (gone == 0) {
            return 0;
        }
        int capacity = MIN_CAPACITY;
        while ((kept + 1) * 4L > capacity * 3L) {
            capacity *= 2;
        }
        if (keys.length <= 4 * capacity) {
            // One lap from just after an empty slot (a probe run never wraps past it): a removal shifts later keys of
            // the run back into the gap, so the slot is looked at again; nothing moves to a slot already passed.
            int start = 0;
            while (keys[start] != EMPTY) {
                start++;
            }
            for (int n = 1, i = (start + 1) & mask; n < keys.length; n++) {
                while (keys[i] != EMPTY && !filter.keep(keys[i], values[i])) {
                    removeAt(i);
                }
                i = (i + 1) & mask;
            }
            return gone;
        }
        int[] oldKeys = keys;
        int[] oldValues = values;
        alloc(capacity);
        size = 0;
        for (int i = 0; i < oldKeys.length; i++) {
            if (oldKeys[i] != EMPTY && filter.keep(oldKeys[i], oldValues[i])) {
                insertNew(oldKeys[i], oldValues[i]);
            }
        }
        return gone;
    }

    /** Calls {@code action} for every entry, in no particular order; the action must not change the map. */
    void forEach(EntryFilter action) {
        for (int i = 0; i < keys.length; i++) {
            if (keys[i] != EMPTY) {
                action.keep(keys[i], values[i]);
            }
        }
    }

    private void rehash(int capacity) {
        int[] oldKeys = keys;
        int[] oldValues = values;
        alloc(capacity);
        size = 0;
        for (int i = 0; i < oldKeys.length; i++) {
            if (oldKeys[i] != EMPTY) {
                insertNew(oldKeys[i], oldValues[i]);
            }
        }
    }

    private void insertNew(int key, int value) {
        int i = slot(key, mask);
        while (keys[i] != EMPTY) {
            i = (i + 1) & mask;
        }
        keys[i] = key;
        values[i] = value;
        size++;
    }
}
