package io.pikv.kv.scheduling;

import java.util.Arrays;

/**
 * Indexed binary min-heap over entry ids, keyed by a double per id; equal keys put the least recently used first,
 * then the deeper position (a later token, a deeper block), then the lower id, so every order is deterministic.
 */
final class IdHeap {
    private int[] heap = new int[16];
    private int[] slot = new int[16]; // id -> index in heap, -1 when absent
    private double[] key = new double[16];
    private int size;

    IdHeap() {
        Arrays.fill(slot, -1);
    }

    int size() {
        return size;
    }

    boolean contains(int id) {
        return id >= 0 && id < slot.length && slot[id] >= 0;
    }

    int min() {
        return size == 0 ? -1 : heap[0];
    }

    double key(int id) {
        return key[id];
    }

    void add(Entries e, int id, double k) {
        ensure(id);
        if (slot[id] >= 0) {
            throw new IllegalStateException("entry " + id + " is already ranked");
        }
        if (size == heap.length) {
            heap = Arrays.copyOf(heap, size * 2);
        }
        key[id] = k;
        heap[size] = id;
        slot[id] = size;
        size++;
        up(e, size - 1);
    }

    void remove(Entries e, int id) {
        int i = id >= 0 && id < slot.length ? slot[id] : -1;
        if (i < 0) {
            throw new IllegalStateException("entry " + id + " is not ranked");
        }
        slot[id] = -1;
        size--;
        if (i < size) {
            int moved = heap[size];
            heap[i] = moved;
            slot[moved] = i;
            up(e, i);
            if (slot[moved] == i) {
                down(e, i);
            }
        }
    }

    private void ensure(int id) {
        if (id >= slot.length) {
            int n = Math.max(slot.length * 2, id + 1);
            int old = slot.length;
            slot = Arrays.copyOf(slot, n);
            Arrays.fill(slot, old, n, -1);
            key = Arrays.copyOf(key, n);
        }
    }

    private boolean less(Entries e, int a, int b) {
        if (key[a] != key[b]) {
            return key[a] < key[b];
        }
        long la = e.lastAccess(a);
        long lb = e.lastAccess(b);
        if (la != lb) {
            return la < lb;
        }
        int pa = e.position(a);
        int pb = e.position(b);
        if (pa != pb) {
            return pa > pb;
        }
        return a < b;
    }

    private void up(Entries e, int i) {
        int id = heap[i];
        while (i > 0) {
            int p = (i - 1) >>> 1;
            if (!less(e, id, heap[p])) {
                break;
            }
            heap[i] = heap[p];
            slot[heap[i]] = i;
            i = p;
        }
        heap[i] = id;
        slot[id] = i;
    }

    private void down(Entries e, int i) {
        int id = heap[i];
        while (true) {
            int l = 2 * i + 1;
            if (l >= size) {
                break;
            }
            int c = l + 1 < size && less(e, heap[l + 1], heap[l]) ? l + 1 : l;
            if (!less(e, heap[c], id)) {
                break;
            }
            heap[i] = heap[c];
            slot[heap[i]] = i;
            i = c;
        }
        heap[i] = id;
        slot[id] = i;
    }
}
