package io.pikv.kv.scheduling;

import java.util.Arrays;

/**
 * A block cache with prefix semantics whose victims an {@link EvictionPolicy} chooses, among the blocks that prefix
 * reuse allows to go:
 * <ul>
 *   <li><b>leaf first</b>: a block whose successor (the next block of a request it served) is resident is not a
 *       candidate, as in a radix-tree prefix cache: evicting it would strand its successors, which a later request
 *       could no longer reach;</li>
 *   <li><b>in use</b>: the blocks of the request being served are not candidates until it is done. When no
 *       candidate is left (a request longer than the cache), the rest of the request's missing blocks are not
 *       inserted.</li>
 * </ul>
 * A block's parent is the block before it in the request that inserted it.
 */
public final class PrefixBlockCache implements BlockCache {
    private final int capacity;
    private final EvictionPolicy policy;
    private final Entries entries;
    private boolean[] candidate = new boolean[16];
    private int[] inUse = new int[64];
    private long[] servedBy = new long[16];
    private long requestCount;
    private long clock;

    public PrefixBlockCache(int capacity, EvictionPolicy policy) {
        if (capacity < 1) {
            throw new IllegalArgumentException("capacity must be >= 1 block, got " + capacity);
        }
        if (policy instanceof Adaptive a && a.capacity() != capacity) {
            throw new IllegalArgumentException("an adaptive policy built for " + a.capacity() + " blocks cannot serve "
                    + "a cache of " + capacity + ": its ghosts would compare the candidates at another capacity");
        }
        this.capacity = capacity;
        this.policy = policy;
        this.entries = new Entries(Math.min(capacity, 1 << 12)); // grows with use: a ghost holds only what it saw
    }

    @Override
    public String name() {
        return policy.name();
    }

    public EvictionPolicy policy() {
        return policy;
    }

    @Override
    public int capacity() {
        return capacity;
    }

    @Override
    public int size() {
        return entries.size();
    }

    @Override
    public boolean contains(long block) {
        return entries.id(block) >= 0;
    }

    /** Lookups served so far (the clock policies see). */
    public long lookups() {
        return clock;
    }

    /**
     * A lookup of one block that inserts nothing (a cache whose caller stores blocks separately, {@link #store}):
     * a resident block is used as by a one-block request; a missing one changes nothing.
     *
     * @return whether it was resident
     */
    public boolean lookup(long block) {
        if (policy instanceof Adaptive adaptive) {
            adaptive.observeLookup(block); // its ghosts take it as a lookup, as BlockIndex tells them
        }
        if (entries.id(block) < 0) {
            return false;
        }
        serve(new long[] {block});
        return true;
    }

    /** Stores one block, or uses it when it is resident: a one-block request whose hit is not counted. */
    public void store(long block) {
        if (policy instanceof Adaptive adaptive) {
            adaptive.observeStore(block);
        }
        serve(new long[] {block});
    }

    @Override
    public int request(long[] blocks) {
        policy.observe(blocks);
        return serve(blocks);
    }

    /** Serves a request the policy has observed (or, for {@link #lookup} and {@link #store}, been told of). */
    private int serve(long[] blocks) {
        requestCount++;
        int run = 0;
        while (run < blocks.length && entries.id(blocks[run]) >= 0) {
            run++;
        }
        if (inUse.length < blocks.length) {
            inUse = new int[Math.max(blocks.length, inUse.length * 2)];
        }
        int used = 0;
        int parent = -1;
        for (int i = 0; i < blocks.length; i++) {
            entries.setNow(++clock);
            int id = entries.id(blocks[i]);
            if (id >= 0) {
                if (candidate[id]) {
                    policy.withdraw(entries, id);
                    candidate[id] = false;
                }
                if (servedBy[id] != requestCount) {
                    entries.touch(id, 1);
                    policy.accessed(entries, id);
                    servedBy[id] = requestCount;
                    inUse[used++] = id;
                }
                parent = id;
                continue;
            }
            if (i > 0 && parent < 0) {
                continue; // its predecessor could not be inserted: it would be unreachable
            }
            if (entries.size() == capacity && !evictOne()) {
                parent = -1;
                continue;
            }
            id = entries.add(blocks[i], i, parent, i == blocks.length - 1, 1);
            track(id);
            policy.accessed(entries, id);
            servedBy[id] = requestCount;
            inUse[used++] = id;
            parent = id;
        }
        for (int k = 0; k < used; k++) {
            int id = inUse[k];
            if (entries.children(id) == 0) {
                policy.offer(entries, id);
                candidate[id] = true;
            }
        }
        return run;
    }

    private boolean evictOne() {
        int victim = policy.victim(entries);
        if (victim < 0) {
            return false;
        }
        policy.withdraw(entries, victim);
        candidate[victim] = false;
        policy.evicted(entries, victim);
        int p = entries.remove(victim);
        if (p >= 0 && entries.children(p) == 0 && servedBy[p] != requestCount) {
            policy.offer(entries, p);
            candidate[p] = true;
        }
        return true;
    }

    private void track(int id) {
        if (id >= candidate.length) {
            int n = Math.max(candidate.length * 2, id + 1);
            candidate = Arrays.copyOf(candidate, n);
            servedBy = Arrays.copyOf(servedBy, n);
        }
        candidate[id] = false;
        servedBy[id] = 0;
    }
}
