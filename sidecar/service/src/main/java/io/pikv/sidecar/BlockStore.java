package io.pikv.sidecar;

import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * Prefix blocks for cross-request reuse: opaque payloads (a block's KV, as the model server packs it) named by the
 * hash of the block's token prefix, within a byte capacity; the least recently used block goes first. Thread-safe.
 */
public final class BlockStore {
    private final long capacityBytes;
    private final LinkedHashMap<Long, byte[]> blocks = new LinkedHashMap<>(1024, 0.75f, true);
    private long bytes;
    private long hits;
    private long misses;
    private long evictions;

    public BlockStore(long capacityBytes) {
        if (capacityBytes < 1) {
            throw new IllegalArgumentException("the block capacity must be >= 1 byte, got " + capacityBytes);
        }
        this.capacityBytes = capacityBytes;
    }

    /** Parses a block hash: 1 to 16 hex digits (an unsigned 64-bit value). */
    public static long parseHash(String text) {
        if (text == null || text.isEmpty() || text.length() > 16 || !text.chars().allMatch(c -> Character.digit(c, 16) >= 0)) {
            throw new IllegalArgumentException("a block hash is 1 to 16 hex digits, got '" + text + "'");
        }
        return Long.parseUnsignedLong(text, 16);
    }

    /** Stores or replaces a block; evicts the least recently used ones to make room. */
    public synchronized void put(long hash, byte[] payload) {
        if (payload.length == 0) {
            throw new IllegalArgumentException("a block payload must not be empty");
        }
        if (payload.length > capacityBytes) {
            throw new BlockTooLargeException(payload.length, capacityBytes);
        }
        byte[] old = blocks.remove(hash);
        if (old != null) {
            bytes -= old.length;
        }
        Iterator<Map.Entry<Long, byte[]>> oldest = blocks.entrySet().iterator();
        while (bytes + payload.length > capacityBytes) {
            bytes -= oldest.next().getValue().length;
            oldest.remove();
            evictions++;
        }
        blocks.put(hash, payload);
        bytes += payload.length;
    }

    /** The block, or null (counted as a miss). */
    public synchronized byte[] get(long hash) {
        byte[] payload = blocks.get(hash);
        if (payload == null) {
            misses++;
        } else {
            hits++;
        }
        return payload;
    }

    public synchronized Stats stats() {
        return new Stats(blocks.size(), bytes, capacityBytes, hits, misses, evictions);
    }

    /** Block cache figures: blocks and bytes held, capacity, lookups that hit and missed, evictions. */
    public record Stats(int blocks, long bytes, long capacityBytes, long hits, long misses, long evictions) {
    }

    /** A block larger than the whole capacity. */
    public static final class BlockTooLargeException extends RuntimeException {
        public BlockTooLargeException(long size, long capacity) {
            super("a block of " + size + " bytes exceeds the block cache capacity of " + capacity + " bytes");
        }
    }
}
