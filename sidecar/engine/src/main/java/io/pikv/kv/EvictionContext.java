package io.pikv.kv;

/** What an {@link EvictionHook} may see and do inside a shard that needs room. */
public interface EvictionContext {

    int shardId();

    /** The live page allocated longest ago, or null when none is in use. */
    Page oldestPage();

    /** Evicts every entry of {@code page} and frees it. */
    void evictPage(Page page);

    /** Evicts the resident entries at these positions of (sequence, layer); returns how many were resident. */
    int evictTokens(long sequence, int layer, int[] positions);

    PagePool pool();
}
