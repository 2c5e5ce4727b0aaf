package io.pikv.kv;

import java.util.concurrent.ThreadLocalRandom;
import java.util.concurrent.atomic.AtomicReferenceArray;
import java.util.function.Consumer;

/**
 * A map from {@code long} keys to objects whose lookups allocate nothing and take no lock: the store's and the shards'
 * sequence tables, read on every append and attention call. A boxed {@code Map<Long, …>} costs a {@code Long} per
 * lookup for keys outside the JDK's small-value cache (sequence ids of 128 and above), which the JIT does not remove.
 *
 * <p>Open addressing with linear probing over an array of immutable entries. Writes ({@link #put}, {@link #remove}) are
 * serialised on the map; a lookup reads the table and its slots without a lock and sees every write that completed
 * before it began (the slots are read and written with volatile semantics, the entries' fields are final). A removal
 * leaves a marker in the slot, so that probe runs of other keys stay unbroken for lookups running meanwhile; markers
 * are reused by later insertions and dropped when the table is rebuilt (which is built whole, then published).
 */
final class LongKeyMap<V> {
    private static final class Entry<V> {
        final long key;
        final V value;

        Entry(long key, V value) {
            this.key = key;
            this.value = value;
        }
    }

    private static final Entry<Object> REMOVED = new Entry<>(0, null);

    private volatile AtomicReferenceArray<Entry<V>> table;
    /** Live entries, and slots not empty (live entries and removal markers); guarded by this. */
    private int size;
    private int occupied;
    /**
     * Keys are mixed with a seed of this map's own before the murmur3 finaliser: a shard's sequence ids come from its
     * clients, and with an unseeded hash ids picked to collide would make every lookup walk one long run.
     */
    private final long seed = ThreadLocalRandom.current().nextLong();

    LongKeyMap() {
        table = new AtomicReferenceArray<>(16);
    }

    private int mix(long key) {
        long h = key ^ seed;
        h = (h ^ (h >>> 33)) * 0xFF51AFD7ED558CCDL;
        h = (h ^ (h >>> 33)) * 0xC4CEB9FE1A85EC53L;
        return (int) (h ^ (h >>> 33));
    }

    /** The value of {@code key}, or null. */
    V get(long key) {
        AtomicReferenceArray<Entry<V>> t = table;
        int mask = t.length() - 1;
        // At most three quarters of the slots are ever occupied, so every probe run ends at an empty slot.
        for (int i = mix(key) & mask; ; i = (i + 1) & mask) {
            Entry<V> e = t.get(i);
            if (e == null) {
                return null;
            }
            if (e.key == key && e != REMOVED) {
                return e.value;
            }
        }
    }

    boolean containsKey(long key) {
        return get(key) != null;
    }

    /** Maps {@code key} to {@code value} (not null); returns the value it replaced, or null. */
    synchronized V put(long key, V value) {
        if (value == null) {
            throw new IllegalArgumentException("null values are not held");
        }
        AtomicReferenceArray<Entry<V>> t = table;
        int mask = t.length() - 1;
        int reuse = -1;
        int i = mix(key) & mask;
        for (; ; i = (i + 1) & mask) {
            Entry<V> e = t.get(i);
            if (e == null) {
                break;
            }
            if (e == REMOVED) {
                if (reuse < 0) {
                    reuse = i;
                }
            } else if (e.key == key) {
                t.set(i, new Entry<>(key, value));
                return e.value;
            }
        }
        Entry<V> entry = new Entry<>(key, value);
        if (reuse >= 0) {
            t.set(reuse, entry); // an insertion into a marker's slot: no slot more occupied
            size++;
            return null;
        }
        if ((occupied + 1) * 4L > t.length() * 3L) {
            t = rebuilt(size + 1);
            table = t;
            occupied = size;
            mask = t.length() - 1;
            for (i = mix(key) & mask; t.get(i) != null; i = (i + 1) & mask) {
                // the first empty slot of its run: the new table holds no markers
            }
        }
        t.set(i, entry);
        size++;
        occupied++;
        return null;
    }

    /** Removes {@code key}; returns its value, or null when it was not held. */
    synchronized V remove(long key) {
        AtomicReferenceArray<Entry<V>> t = table;
        int mask = t.length() - 1;
        for (int i = mix(key) & mask; ; i = (i + 1) & mask) {
            Entry<V> e = t.get(i);
            if (e == null) {
                return null;
            }
            if (e.key == key && e != REMOVED) {
                t.set(i, removed());
                size--;
                return e.value;
            }
        }
    }

    /**
     * A table holding this map's live entries with room for {@code live} of them at half load or less; built whole
     * before it replaces the current one, so that a failure to allocate it changes nothing.
     */
    private AtomicReferenceArray<Entry<V>> rebuilt(int live) {
        int cap = 16;
        while (cap < live * 2L) {
            cap <<= 1;
        }
        AtomicReferenceArray<Entry<V>> old = table;
        AtomicReferenceArray<Entry<V>> next = new AtomicReferenceArray<>(cap);
        int mask = cap - 1;
        for (int j = 0; j < old.length(); j++) {
            Entry<V> e = old.get(j);
            if (e == null || e == REMOVED) {
                continue;
            }
            int i = mix(e.key) & mask;
            while (next.get(i) != null) {
                i = (i + 1) & mask;
            }
            next.set(i, e);
        }
        return next;
    }

    @SuppressWarnings("unchecked")
    private static <V> Entry<V> removed() {
        return (Entry<V>) (Entry<?>) REMOVED;
    }

    /** Live entries. */
    synchronized int size() {
        return size;
    }

    /** Slots of the current table (tests: markers do not make it grow without bound). */
    int capacity() {
        return table.length();
    }

    /**
     * Calls {@code action} with every value held throughout the call; values put or removed meanwhile may or may not be
     * seen. Callers that need one state of the map hold the lock that serialises its writers.
     */
    void forEachValue(Consumer<? super V> action) {
        AtomicReferenceArray<Entry<V>> t = table;
        for (int i = 0; i < t.length(); i++) {
            Entry<V> e = t.get(i);
            if (e != null && e != REMOVED) {
                action.accept(e.value);
            }
        }
    }
}
