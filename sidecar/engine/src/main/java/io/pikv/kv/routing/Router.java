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

    RoutingDecision route(double[] logits, ExpertShardMap map);
}
