package io.pikv.sidecar.telemetry;

import io.pikv.api.events.BlockCacheCounters;
import io.pikv.api.events.CacheEvents;
import io.pikv.api.events.ExpertCounters;
import io.pikv.kv.ExpertLayerCounters;
import io.pikv.kv.ShardStats;
import io.pikv.sidecar.BlockStore;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;

/**
 * Turns a shard's cumulative statistics (its KV shard's and its block cache's) into one {@link CacheEvents} record
 * per window: counters are the difference between the snapshots at the window's ends, summed over layers; bytes are
 * the values at the end, and so are the block cache's policy and ghost hit rates.
 * Sequence numbers count from 0 per window closer (per producer incarnation). Not thread-safe: one closer per
 * publisher, called under its lock.
 */
public final class TelemetryWindow {
    private final String cluster;
    private final int shard;
    private final int experts;
    private final String producerId;
    private ShardStats previous;
    private BlockStore.Stats previousBlocks;
    private long startMs;
    private volatile long nextSequence;

    /**
     * @param initial       the statistics at the start of the first window
     * @param initialBlocks the block cache's at the same moment
     * @param startMs       the start of the first window, epoch milliseconds
     */
    public TelemetryWindow(String cluster, int shard, int experts, String producerId, ShardStats initial,
                           BlockStore.Stats initialBlocks, long startMs) {
        this.cluster = cluster;
        this.shard = shard;
        this.experts = experts;
        this.producerId = producerId;
        this.previous = initial;
        this.previousBlocks = initialBlocks;
        this.startMs = startMs;
    }

    /**
     * Ends the window at {@code nowMs} with statistics {@code now} and {@code blocks}; the next window starts there.
     *
     * @param policy the KV eviction policy running
     */
    public CacheEvents close(ShardStats now, BlockStore.Stats blocks, long nowMs, String policy, long epoch) {
        BlockCacheCounters blockCounters = new BlockCacheCounters(blocks.policy(),
                blocks.lookups() - previousBlocks.lookups(), blocks.hits() - previousBlocks.hits(),
                blocks.evictions() - previousBlocks.evictions(), blocks.bytes(), blocks.capacityBytes());
        // The deltas first: a window that cannot be closed must not use up a sequence number (a gap reads as a drop).
        var deltas = deltas(previous, now, experts);
        CacheEvents record = new CacheEvents(CacheEvents.VERSION, cluster, shard, producerId, nextSequence, startMs,
                nowMs, policy, epoch, Map.copyOf(blocks.ghostHitRates()), now.budgetBytes(), now.bytesInUse(), 0,
                deltas, blockCounters);
        nextSequence++;
        previous = now;
        previousBlocks = blocks;
        startMs = nowMs;
        return record;
    }

    /** Records closed so far. */
    public long closed() {
        return nextSequence;
    }

    /** Per-expert counters between two cumulative snapshots, one per expert of the model. */
    static List<ExpertCounters> deltas(ShardStats before, ShardStats after, int experts) {
        long[][] b = perExpert(before, experts);
        long[][] a = perExpert(after, experts);
        List<ExpertCounters> out = new ArrayList<>(experts);
        for (int e = 0; e < experts; e++) {
            out.add(new ExpertCounters(e, a[0][e] - b[0][e], a[1][e] - b[1][e], a[2][e] - b[2][e],
                    a[3][e] - b[3][e], a[4][e]));
        }
        return out;
    }

    /** Lookups, hits, misses, evictions, bytes resident per expert, summed over layers. */
    private static long[][] perExpert(ShardStats stats, int experts) {
        long[][] sums = new long[5][experts];
        for (ExpertLayerCounters c : stats.counters()) {
            sums[0][c.expert()] += c.lookups();
            sums[1][c.expert()] += c.hits();
            sums[2][c.expert()] += c.misses();
            sums[3][c.expert()] += c.evictions();
            sums[4][c.expert()] += c.bytesResident();
        }
        return sums;
    }
}
