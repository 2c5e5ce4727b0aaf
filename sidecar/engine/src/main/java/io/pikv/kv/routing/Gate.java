package io.pikv.kv.routing;

import io.pikv.kv.ExpertShardMap;

/** What both routers share: input checks, the plain top-k, gate probabilities, and the decision's accounting. */
final class Gate {
    private Gate() {
    }

    static void check(double[] logits, ExpertShardMap map) {
        if (logits.length != map.experts()) {
            throw new IllegalArgumentException("logits has " + logits.length + " entries but the shard map names "
                    + map.experts() + " experts");
        }
        boolean any = false;
        for (int e = 0; e < logits.length; e++) {
            double l = logits[e];
            if (Double.isNaN(l) || l == Double.POSITIVE_INFINITY) {
                throw new IllegalArgumentException("logit of expert " + e + " is " + l
                        + "; logits must be finite or -Infinity (not routable)");
            }
            any |= l != Double.NEGATIVE_INFINITY;
        }
        if (!any) {
            throw new IllegalArgumentException("no expert has a finite logit");
        }
    }

    static void checkK(int k) {
        if (k < 1) {
            throw new IllegalArgumentException("k must be >= 1, got " + k);
        }
    }

    /** The {@code k} routable experts with the highest logits (fewer if fewer are routable), ties to the lower id. */
    static int[] topK(double[] logits, int k) {
        int[] top = new int[Math.min(k, logits.length)];
        int n = 0;
        boolean[] taken = new boolean[logits.length];
        for (; n < top.length; n++) {
            int best = -1;
            for (int e = 0; e < logits.length; e++) {
                if (!taken[e] && logits[e] != Double.NEGATIVE_INFINITY && (best < 0 || logits[e] > logits[best])) {
                    best = e;
                }
            }
            if (best < 0) {
                break;
            }
            taken[best] = true;
            top[n] = best;
        }
        return n == top.length ? top : java.util.Arrays.copyOf(top, n);
    }

    /** Softmax over the routable experts (stable: shifted by the maximum logit). */
    static double[] probabilities(double[] logits) {
        double max = Double.NEGATIVE_INFINITY;
        for (double l : logits) {
            max = Math.max(max, l);
        }
        double[] p = new double[logits.length];
        double sum = 0;
        for (int e = 0; e < logits.length; e++) {
            p[e] = logits[e] == Double.NEGATIVE_INFINITY ? 0 : Math.exp(logits[e] - max);
            sum += p[e];
        }
        for (int e = 0; e < p.length; e++) {
            p[e] /= sum;
        }
        return p;
    }

    static int distinctShards(int[] experts, ExpertShardMap map) {
        int count = 0;
        for (int i = 0; i < experts.length; i++) {
            int s = map.shardOf(experts[i]);
            boolean seen = false;
            for (int j = 0; j < i && !seen; j++) {
                seen = map.shardOf(experts[j]) == s;
            }
            if (!seen) {
                count++;
            }
        }
        return count;
    }

    static RoutingDecision decision(int[] chosen, int[] plain, double[] p, ExpertShardMap map) {
        double[] weights = new double[chosen.length];
        for (int i = 0; i < chosen.length; i++) {
            weights[i] = p[chosen[i]];
        }
        double plainMass = 0;
        double moved = 0;
        for (int e : plain) {
            plainMass += p[e];
            boolean kept = false;
            for (int c : chosen) {
                kept |= c == e;
            }
            if (!kept) {
                moved += p[e];
            }
        }
        return new RoutingDecision(chosen, weights, plain, moved, moved / plainMass, distinctShards(chosen, map),
                map.epoch());
    }
}
