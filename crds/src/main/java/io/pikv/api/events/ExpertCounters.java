package io.pikv.api.events;

import com.fasterxml.jackson.annotation.JsonIgnoreProperties;

/**
 * One expert's counters on one shard for one telemetry window (summed over layers).
 *
 * @param expert        expert id
 * @param lookups       entries of this expert that attention asked for
 * @param hits          of those, resident
 * @param misses        of those, evicted earlier
 * @param evictions     entries of this expert evicted in the window
 * @param bytesResident bytes of this expert's entries held at the end of the window
 */
@JsonIgnoreProperties(ignoreUnknown = true) // a field added within version 1 reads as before
public record ExpertCounters(int expert, long lookups, long hits, long misses, long evictions, long bytesResident) {
}
