package io.pikv.kv.scheduling;

import java.util.Map;

/**
 * The bookkeeping of a cache of independent blocks (no prefix links between them) whose victims an
 * {@link EvictionPolicy} chooses. It holds keys only: the caller keeps the payloads and decides when to evict (a
 * byte budget, say), and the index says which block goes. Every block that is not being evicted is a candidate.
 *
 * <p>An {@link Adaptive} policy sees every lookup first and every store once the live index made it
 * ({@link Adaptive#observeLookup}, {@link Adaptive#observeStore}), so its ghosts go through the same operations, in
 * the same order (clock tick, evictions, insertion), as the live index. While the live index holds what the active candidate chose (no switch
 * yet) and evicts when it holds more than the ghosts' capacity in blocks, the active candidate's ghost hits exactly
 * when the live index does. A block is stored as a tail ({@link Entries#tail}) until it is used again, as a
 * one-block request stores it. Not thread-safe.
 */
public final class BlockIndex {
    private final EvictionPolicy policy;
    private final Entries entries;
    private long clock;

    /**
     * @param policy   ranks the blocks (a fresh instance: it serves this index only)
     * @param expected blocks to size the tables for at first; they grow beyond it
     */
    public BlockIndex(EvictionPolicy policy, int expected) {
        this.policy = policy;
        this.entries = new Entries(expected);
    }

    public EvictionPolicy policy() {
        return policy;
    }

    /** The policy that evicts now: the policy's name, or for {@link Adaptive} {@code adaptive/<active candidate>}. */
    public String activePolicy() {
        return policy instanceof Adaptive a ? a.name() + "/" + a.active() : policy.name();
    }

    /** Each candidate's ghost hit rate when the policy is {@link Adaptive}, else empty. */
    public Map<String, Double> ghostHitRates() {
        return policy instanceof Adaptive a ? a.ghostHitRates() : Map.of();
    }

    public int size() {
        return entries.size();
    }

    public boolean contains(long key) {
        return entries.id(key) >= 0;
    }

    /** A lookup: shown to the policy's ghosts, then, when the block is resident, counted as a use. */
    public boolean lookup(long key) {
        if (policy instanceof Adaptive a) {
            a.observeLookup(key);
        }
        int id = entries.id(key);
        if (id < 0) {
            return false;
        }
        use(id);
        return true;
    }

    /** Stores {@code key} as used now, or refreshes it when it is already resident; nothing needs room. */
    public void put(long key) {
        put(key, () -> {
        });
    }

    /**
     * Stores {@code key} as used now, or refreshes it when it is already resident. After the clock ticks and before
     * the block is (re)inserted, {@code makeRoom} may call {@link #evict()} as often as the caller's budget needs;
     * a resident {@code key} is not a candidate meanwhile, so it is never its own victim. When {@code makeRoom}
     * throws, nothing is stored or refreshed and a resident {@code key} stays as it was; evictions it made before it
     * threw stand, and the adaptive policy's ghosts, which are told of a put only once it happened, never see them:
     * a caller whose room-making can fail after evicting builds the index anew then ({@code BlockStore} does).
     */
    public void put(long key, Runnable makeRoom) {
        entries.setNow(++clock);
        int id = entries.id(key);
        if (id >= 0) {
            policy.withdraw(entries, id);
        }
        try {
            makeRoom.run();
        } catch (RuntimeException | Error e) {
            // The put did not happen: the clock goes back, so it stays in step with the ghosts, which never saw it;
            // then the block is a candidate again (not refreshed), ranked at that clock: the index stays consistent.
            entries.setNow(--clock);
            if (id >= 0) {
                policy.offer(entries, id);
            }
            throw e;
        }
        if (id >= 0) {
            entries.touch(id, 1);
        } else {
            id = entries.add(key, 0, -1, true, 1);
        }
        if (policy instanceof Adaptive a) {
            a.observeStore(key); // the ghosts store it too, once the live store did
        }
        policy.accessed(entries, id);
        policy.offer(entries, id);
    }

    /**
     * Evicts the block the policy ranks lowest.
     *
     * @return its key
     * @throws IllegalStateException when the index is empty
     */
    public long evict() {
        int victim = policy.victim(entries);
        if (victim < 0) {
            throw new IllegalStateException("no block to evict (" + entries.size() + " resident)");
        }
        long key = entries.key(victim);
        policy.withdraw(entries, victim);
        policy.evicted(entries, victim);
        entries.remove(victim);
        return key;
    }

    private void use(int id) {
        policy.withdraw(entries, id);
        entries.setNow(++clock);
        entries.touch(id, 1);
        policy.accessed(entries, id);
        policy.offer(entries, id);
    }
}
