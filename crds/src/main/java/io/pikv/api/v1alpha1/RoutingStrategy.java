package io.pikv.api.v1alpha1;

import com.fasterxml.jackson.annotation.JsonProperty;

/** How a gateway routes tokens to experts (the sidecar's {@code pikv.gateway.routing}). */
public enum RoutingStrategy {
    /** Plain top-k of the gate logits. */
    @JsonProperty("hash")
    HASH("hash"),
    /** Top-k of {@code logit − λ·log(1 + misses)}: prefers shards the token already reaches (docs/routing.md). */
    @JsonProperty("cache-aware")
    CACHE_AWARE("cache-aware");

    private final String value;

    RoutingStrategy(String value) {
        this.value = value;
    }

    public String value() {
        return value;
    }
}
