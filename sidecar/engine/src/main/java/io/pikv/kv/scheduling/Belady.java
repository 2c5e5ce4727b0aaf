package io.pikv.kv.scheduling;

import java.util.Arrays;
import java.util.List;

/**
 * Belady's MIN, the offline optimum: on a miss with the cache full, it drops whichever of the resident blocks and
 * the missing one is next used farthest in the future (the missing block then is not inserted).
 *
 * <p>Hits are counted as for every policy, with prefix semantics (the resident leading run of each request). On a
 * prefix stream this is also MIN's count of plain per-block hits: every request that uses a block uses its parent
 * just before it, so a parent's next use never comes after its child's, MIN never keeps a child without its
 * parent, and every resident block of a request lies inside its leading run. MIN maximises plain hits, and prefix
 * hits never exceed plain hits, so no policy can score more prefix hits than this. A stream whose ids do not chain
 * (a block that follows different blocks in different requests) is refused: there this count is not an optimum.
 */
public final class Belady {
    private static final long NEVER = Long.MAX_VALUE;

    private Belady() {
    }

    public static PrefixReplay.Result replay(List<long[]> requests, int capacity) {
        if (capacity < 1) {
            throw new IllegalArgumentException("capacity must be >= 1 block, got " + capacity);
        }
        long total = 0;
        for (long[] r : requests) {
            total += r.length;
        }
        if (total > Integer.MAX_VALUE - 8) {
            throw new IllegalArgumentException("the requests hold " + total + " block lookups, more than Belady's "
                    + "replay takes at once (" + (Integer.MAX_VALUE - 8) + ")");
        }
        int n = (int) total;
        // Dense ids, then each lookup's next use of the same block.
        LongIntMap ids = new LongIntMap(1024);
        int[] stream = new int[n];
        int[] parent = new int[Math.min(n, 1024)]; // each dense id's predecessor in its requests (-1: first block)
        long[] original = new long[parent.length];
        int[] lastRequest = new int[parent.length]; // the request each dense id was last seen in
        int k = 0;
        int request = 0;
        for (long[] r : requests) {
            request++;
            int before = -1;
            for (long b : r) {
                int id = ids.get(b);
                if (id < 0) {
                    id = ids.size();
                    ids.put(b, id);
                    if (id == parent.length) {
                        parent = Arrays.copyOf(parent, Math.min(n, 2 * parent.length));
                        original = Arrays.copyOf(original, parent.length);
                        lastRequest = Arrays.copyOf(lastRequest, parent.length);
                    }
                    parent[id] = before;
                    original[id] = b;
                } else if (lastRequest[id] == request) {
                    throw new IllegalArgumentException("block " + b + " comes twice in one request: ids must chain as"
                            + " prefix hashes do (each names its whole prefix) for Belady's count to be the optimum");
                } else if (parent[id] != before) {
                    throw new IllegalArgumentException("block " + b + " follows "
                            + (parent[id] < 0 ? "nothing" : "block " + original[parent[id]]) + " in one request and "
                            + (before < 0 ? "nothing" : "block " + original[before]) + " in another: ids must chain"
                            + " as prefix hashes do for Belady's count to be the optimum");
                }
                stream[k++] = id;
                lastRequest[id] = request;
                before = id;
            }
        }
        int distinct = ids.size();
        long[] nextUse = new long[n];
        long[] seenAt = new long[distinct];
        Arrays.fill(seenAt, NEVER);
        for (int i = n - 1; i >= 0; i--) {
            nextUse[i] = seenAt[stream[i]];
            seenAt[stream[i]] = i;
        }
        // Resident blocks by their current next use, in a max-heap with lazy deletion.
        long[] resident = seenAt; // reused: -1 when absent, else the resident block's current next use
        Arrays.fill(resident, -1);
        LazyMaxHeap heap = new LazyMaxHeap(Math.min(n, capacity * 2 + 16));
        int size = 0;
        long hits = 0;
        long lookups = 0;
        int i = 0;
        for (long[] r : requests) {
            int run = 0;
            while (run < r.length && resident[stream[i + run]] >= 0) {
                run++;
            }
            hits += run;
            lookups += r.length;
            for (int j = 0; j < r.length; j++, i++) {
                int b = stream[i];
                long next = nextUse[i];
                if (resident[b] >= 0) {
                    resident[b] = next;
                    heap.push(next, b);
                    continue;
                }
                if (size == capacity) {
                    while (resident[heap.topId()] != heap.topKey()) {
                        heap.pop();
                    }
                    if (heap.topKey() <= next) {
                        continue; // the missing block is needed last: leave it out
                    }
                    resident[heap.topId()] = -1;
                    heap.pop();
                    size--;
                }
                resident[b] = next;
                heap.push(next, b);
                size++;
            }
        }
        return new PrefixReplay.Result("belady", capacity, requests.size(), lookups, hits);
    }

    /** Max-heap of (key, id) pairs; stale pairs are skipped by the caller. */
    private static final class LazyMaxHeap {
        private long[] keys;
        private int[] ids;
        private int size;

        LazyMaxHeap(int capacity) {
            keys = new long[Math.max(16, capacity)];
            ids = new int[keys.length];
        }

        long topKey() {
            return keys[0];
        }

        int topId() {
            return ids[0];
        }

        void push(long key, int id) {
            if (size == keys.length) {
                keys = Arrays.copyOf(keys, size * 2);
                ids = Arrays.copyOf(ids, size * 2);
            }
            int i = size++;
            while (i > 0) {
                int p = (i - 1) >>> 1;
                if (keys[p] >= key) {
                    break;
                }
                keys[i] = keys[p];
                ids[i] = ids[p];
                i = p;
            }
            keys[i] = key;
            ids[i] = id;
        }

        void pop() {
            long key = keys[--size];
            int id = ids[size];
            int i = 0;
            while (true) {
                int l = 2 * i + 1;
                if (l >= size) {
                    break;
                }
                int c = l + 1 < size && keys[l + 1] > keys[l] ? l + 1 : l;
                if (keys[c] <= key) {
                    break;
                }
                keys[i] = keys[c];
                ids[i] = ids[c];
                i = c;
            }
            keys[i] = key;
            ids[i] = id;
        }
    }
}
