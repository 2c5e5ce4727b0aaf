package io.pikv.kv;

/**
 * Asked by a shard for room when an append needs a page and the pool is at its budget. It is called with the
 * shard's write lock held and frees pages through the {@link EvictionContext}; freeing nothing rejects the append
 * with {@link KvBudgetExceededException}. Scheduling policies (LRU, H2O, …) plug in here.
 */
@FunctionalInterface
public interface EvictionHook {

    void makeRoom(EvictionContext context);

    /**
     * The entry of (sequence, layer) at {@code position} left the shard as an eviction, whoever evicted it (this hook,
     * {@code KvStore.evict}, a budget resize), so that a hook that tracks what is resident never counts it again.
     * Called with the shard's write lock held: it must not call back into the shard. It is called for the evictions
     * this hook makes from {@link #makeRoom} too, while makeRoom runs, so it must tolerate hearing of an entry it is
     * evicting itself. Closing a sequence is not eviction and is not told here. Nothing by default.
     */
    default void evicted(long sequence, int layer, int position) {
    }

    /**
     * The sequence was closed ({@code KvStore.closeSequence}, once every shard dropped it): its entries are gone
     * without being evicted, and a hook that tracks entries drops its bookkeeping of them, which would otherwise stay
     * and be offered as victims no shard holds. Called with no shard lock held. Nothing by default.
     */
    default void sequenceClosed(long sequence) {
    }

    /**
     * The entry of (sequence, layer) at {@code position} was taken back ({@code KvStore.withdrawLast}) as if never
     * appended: that position will hold another token, so a hook that tracks entries forgets this one without keeping
     * any history of it. Called with no shard lock held. Nothing by default.
     */
    default void withdrawn(long sequence, int layer, int position) {
    }

    /** Evicts the page allocated longest ago (the default). */
    EvictionHook OLDEST_PAGE_FIRST = ctx -> {
        Page oldest = ctx.oldestPage();
        if (oldest != null) {
            ctx.evictPage(oldest);
        }
    };

    /** Never evicts: a full store rejects appends. */
    EvictionHook REJECT = ctx -> {
    };
}
