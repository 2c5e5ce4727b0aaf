package io.pikv.kv.cache;

import java.util.HashMap;

/** Least-recently-used block cache: a hash map over an intrusive doubly linked list, O(1) per access. */
public final class LruBlockCache implements BlockCache {
    private final int capacity;
    private final HashMap<Long, Node> index;
    private final Node head = new Node(0); // sentinel: head.next is the most recent

    public LruBlockCache(int capacity) {
        if (capacity < 1) {
            throw new IllegalArgumentException("capacity must be >= 1 block, got " + capacity);
        }
        this.capacity = capacity;
        this.index = new HashMap<>(Math.min(capacity, 1 << 20) * 2);
        head.prev = head;
        head.next = head;
    }

    @Override
    public String name() {
        return "lru";
    }

    @Override
    public int capacity() {
        return capacity;
    }

    @Override
    public int size() {
        return index.size();
    }

    @Override
    public boolean contains(long block) {
        return index.containsKey(block);
    }

    @Override
    public void access(long block) {
        Node node = index.get(block);
        if (node != null) {
            unlink(node);
        } else {
            if (index.size() == capacity) {
                Node victim = head.prev;
                unlink(victim);
                index.remove(victim.block);
            }
            node = new Node(block);
            index.put(block, node);
        }
        node.next = head.next;
        node.prev = head;
        head.next.prev = node;
        head.next = node;
    }

    private static void unlink(Node node) {
        node.prev.next = node.next;
        node.next.prev = node.prev;
    }

    private static final class Node {
        final long block;
        Node prev;
        Node next;

        Node(long block) {
            this.block = block;
        }
    }
}
