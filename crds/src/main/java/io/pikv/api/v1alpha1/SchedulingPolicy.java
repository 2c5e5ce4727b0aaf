package io.pikv.api.v1alpha1;

import com.fasterxml.jackson.annotation.JsonProperty;

/** Eviction policies by the names the engine knows ({@code io.pikv.kv.scheduling.BlockPolicies.NAMES}). */
public enum SchedulingPolicy {
    /** Least recently used. */
    @JsonProperty("lru")
    LRU("lru"),
    /** StreamingLLM: attention sinks plus a recent window. */
    @JsonProperty("streaming")
    STREAMING("streaming"),
    /** H2O: heavy hitters by accumulated attention plus a recent window. */
    @JsonProperty("h2o")
    H2O("h2o"),
    /** PiKV's utility score over attention, recency and frequency. */
    @JsonProperty("utility")
    UTILITY("utility"),
    /** Least recently/frequently used with history. */
    @JsonProperty("lrfu")
    LRFU("lrfu"),
    /** Ghost copies of the other policies on the live stream; switches to the one that would hit most. */
    @JsonProperty("adaptive")
    ADAPTIVE("adaptive");

    private final String value;

    SchedulingPolicy(String value) {
        this.value = value;
    }

    /** The engine's name for the policy. */
    public String value() {
        return value;
    }
}
