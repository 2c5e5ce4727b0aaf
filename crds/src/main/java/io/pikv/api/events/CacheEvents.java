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
 * @param policy         the active eviction policy
 * @param ghostHitRates  hit rate each candidate policy would have had on this shard's stream (ghost copies)
 * @param budgetBytes    the shard's byte budget
 * @param bytesResident  bytes of KV held at the end of the window
 * @param dropped        records this producer dropped (buffer full while Kafka was unreachable) since the last
 *                       record it published
 * @param experts        per-expert counters of the window
 */
@JsonIgnoreProperties(ignoreUnknown = true)
public record CacheEvents(int version, String cluster, int shard, String producerId, long sequence,
                          long windowStartMs, long windowEndMs, String policy, Map<String, Double> ghostHitRates,
                          long budgetBytes, long bytesResident, long dropped, List<ExpertCounters> experts) {

    public static final int VERSION = 1;

    /** The record key: {@code <cluster>/<shard>}. */
    public static String key(String cluster, int shard) {
        return cluster + "/" + shard;
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
