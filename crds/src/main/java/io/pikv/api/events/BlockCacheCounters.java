package io.pikv.api.events;

import com.fasterxml.jackson.annotation.JsonIgnoreProperties;

/**
 * One shard's prefix block cache ({@code /v1/blocks}) over one telemetry window: counters are per window, sizes at
 * its end.
 *
 * @param policy        the policy that evicted at the end of the window: a policy name, or for the adaptive policy
 *                      {@code adaptive/<active candidate>}
 * @param lookups       block lookups ({@code GET /v1/blocks/{hash}}) in the window
 * @param hits          of those, found
 * @param evictions     blocks evicted in the window
 * @param bytes         payload bytes held at the end of the window
 * @param capacityBytes the cache's capacity in payload bytes
 */
@JsonIgnoreProperties(ignoreUnknown = true) // a field added within version 1 reads as before
public record BlockCacheCounters(String policy, long lookups, long hits, long evictions, long bytes,
                                 long capacityBytes) {
}
