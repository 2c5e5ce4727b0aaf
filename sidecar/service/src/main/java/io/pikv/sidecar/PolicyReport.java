package io.pikv.sidecar;

/**
 * What a shard says about its KV eviction policy, for telemetry and stats: the policy in charge. (Ghost hit rates
 * come from the block cache, {@link BlockStore.Stats#ghostHitRates()}: attention looks up every entry of a
 * sequence, so a token policy's ghost would count the same hits as any other.)
 */
public interface PolicyReport {

    /** The name of the policy that evicts now (a name {@code pikv.store.eviction} and control records use). */
    String activePolicy();
}
