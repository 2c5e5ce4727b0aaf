package io.pikv.kv.routing;

import java.util.Arrays;

/**
 * The experts one token was routed to, and what that cost against the plain top-k of the gate.
 *
 * @param experts           the chosen experts, in the order the router chose them (may be fewer than k when a router
 *                          drops an expert)
 * @param weights           the gate probability of each chosen expert (softmax over all experts with a logit)
 * @param plainTopK         the top-k of the gate logits, highest first (ties to the lower expert id)
 * @param massMoved         gate probability of the plain top-k experts that were not chosen
 * @param massMovedFraction {@code massMoved} over the gate probability of the whole plain top-k
 * @param shards            how many distinct shards the chosen experts live on
 * @param epoch             the epoch of the expert→shard map the decision used
 */
public record RoutingDecision(int[] experts, double[] weights, int[] plainTopK, double massMoved,
        double massMovedFraction, int shards, long epoch) {

    public RoutingDecision {
        experts = experts.clone();
        weights = weights.clone();
        plainTopK = plainTopK.clone();
    }

    @Override
    public int[] experts() {
        return experts.clone();
    }

    @Override
    public double[] weights() {
        return weights.clone();
    }

    @Override
    public int[] plainTopK() {
        return plainTopK.clone();
    }

    @Override
    public boolean equals(Object o) {
        return o instanceof RoutingDecision d && Arrays.equals(d.experts, experts) && Arrays.equals(d.weights, weights)
                && Arrays.equals(d.plainTopK, plainTopK) && d.massMoved == massMoved
                && d.massMovedFraction == massMovedFraction && d.shards == shards && d.epoch == epoch;
    }

    @Override
    public int hashCode() {
        return Arrays.hashCode(experts) * 31 + Long.hashCode(epoch);
    }

    @Override
    public String toString() {
        return "RoutingDecision{experts=" + Arrays.toString(experts) + ", plainTopK=" + Arrays.toString(plainTopK)
                + ", massMovedFraction=" + massMovedFraction + ", shards=" + shards + ", epoch=" + epoch + "}";
    }
}
