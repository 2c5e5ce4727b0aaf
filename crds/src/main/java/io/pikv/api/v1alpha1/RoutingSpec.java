package io.pikv.api.v1alpha1;

import com.fasterxml.jackson.annotation.JsonInclude;
import com.fasterxml.jackson.annotation.JsonPropertyDescription;
import com.fasterxml.jackson.annotation.JsonPropertyOrder;
import io.fabric8.generator.annotation.Default;
import io.fabric8.generator.annotation.Max;
import io.fabric8.generator.annotation.Min;

/** How gateways route tokens to experts (and so to shards). */
@JsonInclude(JsonInclude.Include.NON_NULL)
@JsonPropertyOrder({"strategy", "lambda", "window"})
public class RoutingSpec {

    @Default("hash")
    @JsonPropertyDescription("hash: plain top-k of the gate; cache-aware: top-k of logit - lambda*log(1 + misses), "
            + "a miss being an expert that made a token reach one more shard, and a weak expert on a shard the token "
            + "does not reach yet may be dropped (null ratio 0.15): fewer shards per token at the cost of some gate "
            + "mass.")
    private RoutingStrategy strategy = RoutingStrategy.HASH;

    @Default("0.1")
    @Min(0)
    @Max(10)
    @JsonPropertyDescription("Cache-aware routing: weight lambda of the miss penalty (0: no penalty; weak "
            + "experts on shards the token does not reach yet are still dropped).")
    private Double lambda = 0.1;

    @Default("512")
    @Min(1)
    @Max(1048576)
    @JsonPropertyDescription("Cache-aware routing: tokens over which an expert's miss count decays.")
    private Integer window = 512;

    public RoutingStrategy getStrategy() {
        return strategy;
    }

    public void setStrategy(RoutingStrategy strategy) {
        this.strategy = strategy;
    }

    public Double getLambda() {
        return lambda;
    }

    public void setLambda(Double lambda) {
        this.lambda = lambda;
    }

    public Integer getWindow() {
        return window;
    }

    public void setWindow(Integer window) {
        this.window = window;
    }
}
