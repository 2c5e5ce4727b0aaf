package io.pikv.kv;

/**
 * Asked by a shard for room when an append needs a page and the pool is at its budget. It is called with the
 * shard's write lock held and frees pages through the {@link EvictionContext}; freeing nothing rejects the append
 * with {@link KvBudgetExceededException}. Scheduling policies (LRU, H2O, …) plug in here.
 */
@FunctionalInterface
public interface EvictionHook {

    void makeRoom(EvictionContext context);

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
