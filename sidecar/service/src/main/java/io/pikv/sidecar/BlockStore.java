package io.pikv.sidecar;

import io.pikv.kv.scheduling.BlockIndex;
import io.pikv.kv.scheduling.BlockPolicies;
import org.jboss.logging.Logger;

import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Prefix blocks for cross-request reuse: opaque payloads (a block's KV, as the model server packs it) named by the
 * hash of the block's token prefix, within a byte capacity. Which block goes when a new one needs room is the choice
 * of an engine block policy ({@link BlockPolicies}): {@code lru}, {@code h2o}, {@code utility}, {@code lrfu}, or
 * {@code adaptive}, which runs ghost copies of those four on the lookups and stores and follows the one that would
 * have hit most. ({@code streaming} is left out: its sinks are a request's first blocks, and blocks stored one by
 * one have no request.) The policies count blocks, so the store also holds at most a number of blocks: the byte
 * capacity over the block size (a model server's blocks have one size), at most {@link #MAX_BLOCKS}. The size is the
 * first block's, then the typical size of the last {@link #SIZE_SAMPLES} blocks stored (the mean of the middle half of
 * their sizes) whenever it moves by a factor of two or more either way: one stray block does not move it, and a mix
 * of sizes is counted by its mean, which a median would flip between; the policies' history then restarts with the
 * residents, least recently used first. Thread-safe.
 */
public final class BlockStore {
    private static final Logger LOG = Logger.getLogger(BlockStore.class);
    /** Policies the store runs. */
    public static final List<String> POLICIES = List.of("lru", "h2o", "utility", "lrfu", "adaptive");
    /** The most blocks the store holds, whatever their size: bounds the policies' bookkeeping. */
    public static final int MAX_BLOCKS = 16_384;
    /** Recent block sizes the count follows (the mean of their middle half). */
    static final int SIZE_SAMPLES = 64;

    private final long capacityBytes;
    private final String policy;
    /**
     * Resident payloads, least recently stored or read first. Insertion-ordered, moved to the end by hand on a store
     * or a hit, so that a HEAD can read a length without changing the order.
     */
    private final Map<Long, byte[]> payloads = new LinkedHashMap<>();
    /** The sizes of the last blocks stored (a ring), for the count's block size. */
    private final int[] sizes = new int[SIZE_SAMPLES];
    private long stored;
    /** Created at the first put, when the block size is known. */
    private BlockIndex index;
    private int capacityBlocks;
    /** The block size the count was computed from. */
    private int sizingBytes;
    private long bytes;
    private long hits;
    private long misses;
    private long evictions;

    /**
     * @param capacityBytes payload bytes the store may hold
     * @param policy        a block policy name ({@link BlockPolicies#NAMES})
     */
    public BlockStore(long capacityBytes, String policy) {
        if (capacityBytes < 1) {
            throw new IllegalArgumentException("the block capacity must be >= 1 byte, got " + capacityBytes);
        }
        if (!POLICIES.contains(policy)) {
            throw new IllegalArgumentException("unknown block policy '" + policy + "' (known: "
                    + String.join(", ", POLICIES) + ")");
        }
        this.capacityBytes = capacityBytes;
        this.policy = policy;
    }

    /** Parses a block hash: 1 to 16 hex digits (an unsigned 64-bit value). */
    public static long parseHash(String text) {
        if (text == null || text.isEmpty() || text.length() > 16 || !text.chars().allMatch(BlockStore::isHexDigit)) {
            throw new IllegalArgumentException("a block hash is 1 to 16 hex digits, got '" + text + "'");
        }
        return Long.parseUnsignedLong(text, 16);
    }

    /** Sizes the policies for blocks of {@code blockBytes}: a fresh index of capacity ÷ size blocks, at most MAX_BLOCKS. */
    private void sizeFor(int blockBytes) {
        long fit = capacityBytes / blockBytes;
        int blocks = (int) Math.min(MAX_BLOCKS, fit);
        // Built before anything changes: an index that cannot be made (memory) leaves the cache sized as it was, so
        // that a later store tries the new size again.
        BlockIndex next = new BlockIndex(policy.equals("adaptive")
                ? BlockPolicies.adaptive(blocks, POLICIES.subList(0, POLICIES.size() - 1))
                : BlockPolicies.create(policy, blocks), Math.min(blocks, 4096));
        index = next;
        capacityBlocks = blocks;
        sizingBytes = blockBytes;
        if (fit > MAX_BLOCKS) {
            LOG.warnf("block cache: blocks of %d bytes, capacity %d bytes: at most %d blocks are kept (%d bytes of"
                    + " the capacity); larger blocks or a smaller pikv.blocks.capacity-bytes use it whole",
                    blockBytes, capacityBytes, MAX_BLOCKS, (long) MAX_BLOCKS * blockBytes);
        } else {
            LOG.infof("block cache: blocks of %d bytes, %d fit in %d bytes; policy %s", blockBytes, capacityBlocks,
                    capacityBytes, policy);
        }
    }

    private static boolean isHexDigit(int c) {
        return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
    }

    /** Stores or replaces a block; evicts the blocks the policy ranks lowest to make room. */
    public synchronized void put(long hash, byte[] payload) {
        if (payload.length == 0) {
            throw new IllegalArgumentException("a block payload must not be empty");
        }
        if (payload.length > capacityBytes) {
            throw new BlockTooLargeException(payload.length, capacityBytes);
        }
        sizes[(int) (stored++ % SIZE_SAMPLES)] = payload.length;
        if (index == null) {
            sizeFor(payload.length);
        } else {
            int typical = typicalSize();
            if ((typical <= sizingBytes / 2 || typical >= 2L * sizingBytes)
                    && (int) Math.min(MAX_BLOCKS, capacityBytes / typical) == capacityBlocks) {
                // Another size, the same count of blocks (both at the block limit): nothing to rebuild, and the
                // policy keeps its history.
                sizingBytes = typical;
            } else if (typical <= sizingBytes / 2 || typical >= 2L * sizingBytes) {
                int before = capacityBlocks;
                int beforeBytes = sizingBytes;
                sizeFor(typical);
                if (capacityBlocks != before) {
                    LOG.warnf("block cache: blocks are now of about %d bytes (typical of the last %d), against the %d"
                            + " bytes the cache was sized for: up to %d blocks instead of %d (the policy's history"
                            + " restarts)", typical, Math.min(stored, SIZE_SAMPLES), beforeBytes, capacityBlocks,
                            before);
                }
                try {
                    for (long resident : payloads.keySet()) {
                        index.put(resident); // least recently used first, so the policy's recency order carries over
                    }
                } catch (RuntimeException | Error e) {
                    // Half re-added (memory): blocks the index lacks could be neither read nor evicted.
                    LOG.warnf(e, "block cache: re-sizing the index failed; it is rebuilt");
                    rebuildOrEmpty(e);
                    throw e;
                }
            }
        }
        int others = payloads.size();
        byte[] old = payloads.remove(hash);
        payloads.put(hash, payload);
        long oldLength = old == null ? 0 : old.length;
        if (old != null) {
            others--;
        }
        int othersBefore = others;
        boolean[] roomMade = {false};
        try {
            index.put(hash, () -> {
                // From here the index may change (an eviction that failed half-way, memory): a failure rebuilds it.
                roomMade[0] = true;
                // The block itself is not a candidate here; others go until its payload fits (and, after a smaller
                // count, until the count is kept). With no other block left the loop has ended: the payload alone
                // is within the capacity.
                int count = othersBefore;
                while (bytes - oldLength + payload.length > capacityBytes || count >= capacityBlocks) {
                    bytes -= payloads.remove(index.evict()).length;
                    count--;
                    evictions++;
                }
            });
        } catch (RuntimeException | Error e) {
            // Nothing stored: the payload map goes back to what the index holds.
            if (old != null) {
                payloads.put(hash, old);
            } else {
                payloads.remove(hash);
            }
            if (roomMade[0]) {
                // It failed making room or inserting the key (memory): the index may hold an eviction or the key
                // half-made. Built again from the
                // payloads, in their order (the policy's history restarts), so the two agree; if that fails too
                // (still no memory), the cache empties rather than keep blocks nothing could read or evict.
                LOG.warnf(e, "block cache: storing a block failed after room was made; the index is rebuilt");
                rebuildOrEmpty(e);
            }
            throw e;
        }
        bytes += payload.length - oldLength;
    }

    /**
     * Builds the index again from the payloads, in their order (the policy's history restarts), so that the two agree;
     * if that fails too (still no memory), empties the cache rather than keep blocks nothing could read or evict.
     */
    private void rebuildOrEmpty(Throwable cause) {
        try {
            sizeFor(sizingBytes);
            for (long resident : payloads.keySet()) {
                index.put(resident);
            }
        } catch (RuntimeException | Error rebuilding) {
            cause.addSuppressed(rebuilding);
            payloads.clear();
            bytes = 0;
            index = null;
        }
    }

    /**
     * The typical recent block size: the mean of the middle half of the recent sizes (the interquartile mean), so
     * that strays at either end do not count and a mix of sizes counts by its mean — the size that says how many
     * blocks fit — rather than by a median, which flips between the sizes of an even mix. Of three sizes the middle
     * one, so that a stray first block is outvoted by the next two; of two, the size the cache has (the first's): two
     * disagree, and neither outvotes the other (a stray second block must not move it either).
     */
    private int typicalSize() {
        int n = (int) Math.min(stored, SIZE_SAMPLES);
        if (n == 2) {
            return sizingBytes;
        }
        int[] recent = java.util.Arrays.copyOf(sizes, n);
        java.util.Arrays.sort(recent);
        if (n < 4) {
            return recent[n / 2];
        }
        int from = n / 4;
        int to = n - n / 4;
        long sum = 0;
        for (int i = from; i < to; i++) {
            sum += recent[i];
        }
        return (int) Math.max(1, Math.round((double) sum / (to - from)));
    }

    /**
     * The length of a cached block, or -1: no lookup is counted, the policy hears nothing and no order changes (an
     * HTTP HEAD, which only asks).
     */
    public synchronized int peekLength(long hash) {
        byte[] payload = payloads.get(hash);
        return payload == null ? -1 : payload.length;
    }

    /** The block, or null (counted as a miss). */
    public synchronized byte[] get(long hash) {
        if (index == null || !index.lookup(hash)) {
            misses++;
            return null;
        }
        byte[] payload = payloads.remove(hash);
        if (payload == null) {
            misses++; // the index and the payloads disagree (cannot happen but through a failed rebuild): no hit
            return null;
        }
        hits++;
        payloads.put(hash, payload); // most recently used now
        return payload;
    }

    public synchronized Stats stats() {
        // Before the first put no policy exists yet; report the one that will evict first.
        String active = index != null ? index.activePolicy()
                : policy.equals("adaptive") ? "adaptive/" + POLICIES.get(0) : policy;
        return new Stats(payloads.size(), bytes, capacityBytes, capacityBlocks, hits, misses, evictions, active,
                index == null ? Map.of() : index.ghostHitRates());
    }

    /**
     * Block cache figures: blocks and bytes held, capacity in bytes and (0 before the first put) in blocks, lookups
     * that hit and missed, evictions, the policy that evicts now ({@code adaptive/<candidate>} for the adaptive one),
     * and with the adaptive policy each candidate's ghost hit rate (smoothed over its evidence windows).
     */
    public record Stats(int blocks, long bytes, long capacityBytes, int capacityBlocks, long hits, long misses,
                        long evictions, String policy, Map<String, Double> ghostHitRates) {
        public long lookups() {
            return hits + misses;
        }
    }

    /** A block larger than the whole capacity. */
    public static final class BlockTooLargeException extends RuntimeException {
        public BlockTooLargeException(long size, long capacity) {
            super("a block of " + size + " bytes exceeds the block cache capacity of " + capacity + " bytes");
        }
    }
}
