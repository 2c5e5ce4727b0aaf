package io.pikv.kv.routing;

import io.pikv.kv.ExpertShardMap;

/** Plain top-k of the gate: the baseline every other router is measured against. Stateless. */
public final class HashRouter implements Router {
    private final int k;

    public HashRouter(int k) {
        Gate.checkK(k);
        this.k = k;
    }

    public int k() {
        return k;
    }

    @Override
    public RoutingDecision decide(double[] logits, ExpertShardMap map) {
        Gate.check(logits, map);
        int[] top = Gate.topK(logits, k);
        return Gate.decision(top, top, Gate.probabilities(logits), map);
    }
}
