package io.pikv.kv.routing;

import io.pikv.kv.ExpertShardMap;

/**
 * Chooses the experts of one token from its gate logits.
 *
 * <p>{@code logits[e]} is the gate logit of expert {@code e} for every expert of {@code map}; an expert whose logit is
 * {@link Double#NEGATIVE_INFINITY} cannot be chosen (a replayed log that holds only each token's top-k gives the
 * others no logit). One call routes one token.
 */
public interface Router {

    /** Routes one token: {@link #decide}, then {@link #routed}. */
    default RoutingDecision route(double[] logits, ExpertShardMap map) {
        RoutingDecision decision = decide(logits, map);
        routed();
        return decision;
    }

    /**
     * The decision {@link #route} would make for this token now, changing nothing: for a caller that may not go
     * through with the token (a step refused after routing), which calls {@link #routed} once it has.
     */
    RoutingDecision decide(double[] logits, ExpertShardMap map);

    /** A token decided by {@link #decide} was routed: the state a token moves on (a stateless router has none). */
    default void routed() {
    }
}
