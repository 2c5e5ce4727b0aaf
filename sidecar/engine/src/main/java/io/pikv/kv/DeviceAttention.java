package io.pikv.kv;

import java.util.List;

/**
 * Attention for a {@link KvShard} on another device (a GPU): it keeps device copies of the shard's pages and attends
 * over them. The shard stays the owner of every entry (appends, evictions and compaction happen on its host pages)
 * and tells the device which pages changed; the device brings its copies up to date before it attends.
 */
public interface DeviceAttention extends AutoCloseable {
    /** Whether pages of this layout can be attended on the device. */
    boolean supports(KvLayout layout);

    /** The bytes of this host page changed (an entry written or moved into it): its device copy is stale. */
    void pageChanged(Page page);

    /**
     * This shard's partial attention over these pages (each holding at least one entry) for {@code query} (unscaled),
     * or null when the device cannot take them now (e.g. its memory is full): the shard then attends on the CPU. The
     * caller holds the shard's lock, so the host pages do not change meanwhile.
     */
    PartialAttention attend(List<Page> pages, float[] query);

    /** A description for logs, e.g. the device's name. */
    String describe();

    /**
     * Whether the device failed for good (an error it cannot recover from): every call then answers null, so the
     * shard attends on the CPU, and what reports where attention runs must say so. False by default.
     */
    default boolean failed() {
        return false;
    }

    @Override
    void close();
}
