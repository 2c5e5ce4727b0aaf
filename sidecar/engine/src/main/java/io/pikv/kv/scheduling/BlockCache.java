package io.pikv.kv.scheduling;

/**
 * A cache of prefix blocks (one block = a fixed run of prompt tokens, named by the hash of its content and of every
 * block before it) with a capacity in blocks.
 */
public interface BlockCache {

    /** Policy name as benchmarks report it. */
    String name();

    int capacity();

    int size();

    /** Whether the block is resident, without changing any state. */
    boolean contains(long block);

    /**
     * Serves one request, its blocks in prompt order, with prefix semantics: the request reuses the leading run of
     * its blocks that are resident (the first missing block ends reuse, as prefix caching in an inference server
     * does), then every block is used, in order, and the missing ones are inserted.
     *
     * @return the hits: the length of the resident leading run
     */
    int request(long[] blocks);

    /** A request of one block. */
    default void access(long block) {
        request(new long[] {block});
    }
}
