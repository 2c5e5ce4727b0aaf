package io.pikv.kv.cache;

/**
 * A cache of prefix blocks (one block = a fixed run of prompt tokens, named by the hash of its content) with a
 * capacity in blocks. Eviction policies implement it.
 */
public interface BlockCache {

    /** Policy name as benchmarks report it. */
    String name();

    int capacity();

    int size();

    /** Whether the block is resident, without changing any state. */
    boolean contains(long block);

    /** Inserts the block, or refreshes it when resident; evicts when full. */
    void access(long block);
}
