package io.pikv.api.events;

import com.fasterxml.jackson.annotation.JsonIgnoreProperties;

import java.util.List;
import java.util.Map;

/**
 * One shard's cache telemetry for one window, published as JSON to {@code pikv.cache-events} with key
 * {@link #key(String, int)}. Counters are per window (not cumulative); {@code bytesResident} is the value at the end
 * of the window.
 *
 * @param version        schema version ({@link #VERSION})
 * @param cluster        the PiKVCluster the shard belongs to
 * @param shard          shard index
 * @param producerId     identifies one producer incarnation (a restarted sidecar gets a new one)
 * @param sequence       per-producer record number, from 0, so a consumer can drop duplicates and see gaps
 * @param windowStartMs  window start, epoch milliseconds
 * @param windowEndMs    window end, epoch milliseconds
 * @param policy         the eviction policy that ran at the end of the window
 * @param epoch          the epoch of the shard map the shard ran at the end of the window: a control record's or a
 *                       map's applied by hand (-1: none applied yet, the shard runs its configured state)
 * @param ghostHitRates  hit rate (0..1) each candidate of the block cache's adaptive policy would have had on this
 *                       shard's block lookups (ghost copies, smoothed over the policy's evidence windows); empty when
 *                       the block cache runs a fixed policy. The KV eviction policies keep no ghosts: attention looks
 *                       up every entry of a sequence, so a ghost's hit count would not tell them apart
 * @param budgetBytes    the byte budget the shard enforces
 * @param bytesResident  bytes of KV pages in use at the end of the window (what the budget bounds; at least the sum
 *                       of the experts' entry bytes, the rest being partly filled pages)
 * @param dropped        records this producer dropped (beyond its buffer while Kafka was unreachable, refused by
 *                       Kafka for good, or failed to serialise) between the last record it published and this
 *                       record's first try: the sequence numbers skipped just before this one (drops while this
 *                       record was retried are carried by the records after it)
 * @param experts        per-expert counters of the window, one per expert of the model, by expert id
 * @param blocks         the prefix block cache over the window (null from producers that predate it)
 */
@JsonIgnoreProperties(ignoreUnknown = true)
public record CacheEvents(int version, String cluster, int shard, String producerId, long sequence,
                          long windowStartMs, long windowEndMs, String policy, long epoch,
                          Map<String, Double> ghostHitRates, long budgetBytes, long bytesResident, long dropped,
                          List<ExpertCounters> experts, BlockCacheCounters blocks) {

    public static final int VERSION = 1;

    /** The record key: {@code <cluster>/<shard>}. */
    public static String key(String cluster, int shard) {
        return cluster + "/" + shard;
    }

    /** The same record reporting {@code dropped} records dropped before it. */
    public CacheEvents withDropped(long dropped) {
        return new CacheEvents(version, cluster, shard, producerId, sequence, windowStartMs, windowEndMs, policy, epoch,
                ghostHitRates, budgetBytes, bytesResident, dropped, experts, blocks);
    }

    /** Lookups of the window over all experts. */
    public long lookups() {
        return experts.stream().mapToLong(ExpertCounters::lookups).sum();
    }

    /** Hits of the window over all experts. */
    public long hits() {
        return experts.stream().mapToLong(ExpertCounters::hits).sum();
    }
}
