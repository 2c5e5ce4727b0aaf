package io.pikv.kv.routing;

import io.pikv.kv.ExpertShardMap;

/**
 * Top-k of {@code logit_e − λ·ln(1 + miss_e)}: experts that have been missing recently lose to ones whose shard is
 * already warm.
 *
 * <p>{@code miss_e} is the count of misses recorded for expert {@code e} ({@link #recordMiss}), decayed by
 * {@code exp(−1/window)} per routed token, so a miss {@code window} tokens ago weighs {@code 1/e}. Where the misses
 * come from is the caller's choice: the gateway and the replay record a cold shard (an expert that made the token
 * reach one more shard).
 *
 * <p>The experts are chosen one at a time, highest adjusted score first. The penalty applies only to an expert that
 * would open a shard the token does not reach yet: the token's first expert (it has to go somewhere) and an expert on
 * a shard the token's chosen experts already touch cost no extra shard, so their score is their logit.
 *
 * <p>With {@code nullRatio ρ > 0} the router may also drop experts: a null expert (as in AdaMoE's null experts) scores
 * {@code max logit + ln ρ}, i.e. a gate weight of {@code ρ} times the token's strongest expert, and lives on no shard.
 * An expert that would open a new shard and scores at or below it is not chosen, and the token keeps fewer than k
 * experts; a plain top-k expert on a shard the token already reaches is never dropped, since dropping it saves no
 * shard, and an expert outside the plain top-k is chosen in place of a dropped one only if it beats the null expert. An
 * expert outside the plain top-k never keeps a slot that an unchosen, stronger top-k expert could take without the
 * token reaching another shard — on the expert's own shard, or on one the other picks reach unless a pick that came
 * into the expert's shard after it (free because of it) would be left alone there: that would cost gate mass and save
 * no shard; the weakest such pick gives its slot back first. Equal scores go to a plain top-k expert, then to an
 * expert on a shard already reached. This
 * is what a replayed log that holds only each token's top-k can exercise: the router keeps or drops those experts, it
 * cannot pick others. With {@code ρ = 0} the router only reorders and replaces within the routable experts, and with
 * {@code λ = 0} as well it is the plain top-k.
 *
 * <p>Not thread-safe: one router per routing thread (the miss counts are its state).
 */
public final class CacheAwareRouter implements Router {
    private final int k;
    private final double lambda;
    private final int window;
    private final double nullRatio;
    private final double decay;
    /** Miss counts below this are taken as none (see {@link #routed}). */
    static final double MISS_FLOOR = 1e-30;
    private final double[] miss;

    /**
     * @param experts   number of experts (the size of the miss table)
     * @param k         experts per token at most
     * @param lambda    weight of the miss penalty, {@code >= 0}
     * @param window    tokens over which miss counts decay by {@code 1/e}, {@code >= 1}
     * @param nullRatio gate weight of the null expert relative to the token's strongest expert, in {@code [0, 1)};
     *                  0 disables dropping
     */
    public CacheAwareRouter(int experts, int k, double lambda, int window, double nullRatio) {
        Gate.checkK(k);
        if (experts < 1) {
            throw new IllegalArgumentException("experts must be >= 1, got " + experts);
        }
        if (!(lambda >= 0) || Double.isInfinite(lambda)) {
            throw new IllegalArgumentException("lambda must be a finite number >= 0, got " + lambda);
        }
        if (window < 1) {
            throw new IllegalArgumentException("window must be >= 1 token, got " + window);
        }
        if (!(nullRatio >= 0 && nullRatio < 1)) {
            throw new IllegalArgumentException("nullRatio must be in [0, 1), got " + nullRatio);
        }
        this.k = k;
        this.lambda = lambda;
        this.window = window;
        this.nullRatio = nullRatio;
        this.decay = Math.exp(-1.0 / window);
        this.miss = new double[experts];
    }

    public int k() {
        return k;
    }

    public double lambda() {
        return lambda;
    }

    public int window() {
        return window;
    }

    public double nullRatio() {
        return nullRatio;
    }

    /** Counts one miss for {@code expert} (what the caller counts as one: the gateway and the replay, a cold shard). */
    public void recordMiss(int expert) {
        checkExpert(expert);
        miss[expert] += 1;
    }

    /** The decayed miss count of {@code expert} as the next token will see it before its own decay step. */
    public double missCount(int expert) {
        checkExpert(expert);
        return miss[expert];
    }

    /** Decays every miss count by one token's step (what {@link #route} does after deciding). */
    @Override
    public void routed() {
        for (int e = 0; e < miss.length; e++) {
            miss[e] = decayed(e);
        }
    }

    /**
     * The miss count of {@code expert} after one more token's decay. A count this small weighs nothing
     * (λ·ln(1 + 1e-30)); flushed to 0 rather than decayed through subnormal doubles, which x86 multiplies far more
     * slowly, for tens of windows after its last miss.
     */
    private double decayed(int expert) {
        return miss[expert] < MISS_FLOOR ? 0 : miss[expert] * decay;
    }

    /** The token's experts, scored with the miss counts decayed by this token's step, which {@link #routed} keeps. */
    @Override
    public RoutingDecision decide(double[] logits, ExpertShardMap map) {
        Gate.check(logits, map);
        if (map.experts() != miss.length) {
            throw new IllegalArgumentException("the shard map names " + map.experts()
                    + " experts but this router counts misses for " + miss.length);
        }
        int[] plain = Gate.topK(logits, k);
        // The null expert scores the top logit + ln ρ; compared as a difference from the top logit, so that ln ρ is
        // not rounded away next to a logit of 1e17.
        double top = logits[plain[0]];
        double nullOverTop = nullRatio == 0 ? Double.NEGATIVE_INFINITY : Math.log(nullRatio);
        boolean[] inPlain = new boolean[logits.length];
        for (int e : plain) {
            inPlain[e] = true;
        }
        boolean[] chosen = new boolean[logits.length];
        boolean[] touched = new boolean[map.shards()];
        int[] picks = new int[plain.length];
        int n = 0;
        while (n < picks.length) {
            // The best expert the null expert does not beat. It beats no plain top-k expert on a shard the token
            // already reaches (dropping that one would save no shard), and every other expert that scores below it:
            // a slot the null expert wins stays empty rather than going to a weaker expert outside the top-k.
            int best = -1;
            double bestScore = Double.NEGATIVE_INFINITY;
            for (int e = 0; e < logits.length; e++) {
                if (chosen[e] || logits[e] == Double.NEGATIVE_INFINITY) {
                    continue;
                }
                boolean free = n == 0 || touched[map.shardOf(e)];
                double penalty = free ? 0 : lambda * Math.log1p(decayed(e));
                double score = logits[e] - penalty;
                // With no null expert (ρ = 0) nothing is dropped, even where a huge λ takes a score to -∞.
                if (((free && inPlain[e]) || nullRatio == 0 || (logits[e] - top) - penalty > nullOverTop)
                        && (best < 0 || score > bestScore
                        || (score == bestScore && tieGoesTo(e, best, touched, inPlain, map)))) {
                    best = e;
                    bestScore = score;
                }
            }
            if (best < 0) {
                break;
            }
            chosen[best] = true;
            touched[map.shardOf(best)] = true;
            picks[n++] = best;
        }
        // The penalty is per expert, the cost it stands for per shard: an expert outside the plain top-k may hold a
        // slot that an unchosen top-k expert could take without reaching any shard the others do not reach — a slot
        // the top-k expert lost to its misses before its shard was reached. Such a slot goes back to the strongest
        // such top-k expert on the expert's own shard, or on a shard another pick reaches unless that would leave a
        // pick alone on the expert's shard that came into it free after the expert: no more shards, more of the
        // gate's mass. Repeated until no slot changes (each change adds a top-k expert, so at most k times).
        // Each round gives back the slot of the weakest pick that can give one (the most mass won).
        boolean changed = true;
        while (changed) {
            changed = false;
            int outSlot = -1;
            int outBack = -1;
            for (int i = 1; i < n; i++) {
                int e = picks[i];
                if (inPlain[e]) {
                    continue;
                }
                int back = -1;
                for (int p : plain) {
                    // A top-k expert takes back the slot of one outside the top-k it ties with, too (top-k wins ties).
                    if (chosen[p] || !(logits[p] >= logits[e]) || (back >= 0 && logits[p] <= logits[back])) {
                        continue;
                    }
                    int shard = map.shardOf(p);
                    boolean sameShard = shard == map.shardOf(e);
                    boolean reached = false;
                    boolean sharedBefore = false; // another pick was on the expert's shard before it came
                    boolean cameAfter = false; // a later pick came into the expert's shard, free because of it
                    for (int j = 0; j < n; j++) {
                        if (j != i) {
                            reached |= map.shardOf(picks[j]) == shard;
                            if (map.shardOf(picks[j]) == map.shardOf(e)) {
                                sharedBefore |= j < i;
                                cameAfter |= j > i;
                            }
                        }
                    }
                    // A top-k expert on a shard another pick reaches costs no shard: it takes the slot back unless a
                    // pick came into the expert's shard after it, free only because of it, and would be left alone
                    // there (a pick sharing the shard from before keeps it reached either way).
                    if (sameShard || (reached && !(cameAfter && !sharedBefore))) {
                        back = p;
                    }
                }
                if (back >= 0 && (outSlot < 0 || logits[e] < logits[picks[outSlot]])) {
                    outSlot = i;
                    outBack = back;
                }
            }
            if (outSlot >= 0) {
                chosen[picks[outSlot]] = false;
                chosen[outBack] = true;
                if (map.shardOf(outBack) == map.shardOf(picks[outSlot])) {
                    picks[outSlot] = outBack; // in the expert's place: it reaches the expert's shard as the expert did
                } else {
                    // On a shard another pick reached first: it comes after every pick, in the order of choice (the
                    // decision's order, by which a step's misses go to the experts that opened the shards).
                    System.arraycopy(picks, outSlot + 1, picks, outSlot, n - outSlot - 1);
                    picks[n - 1] = outBack;
                }
                changed = true;
            }
        }
        return Gate.decision(java.util.Arrays.copyOf(picks, n), plain, Gate.probabilities(logits), map);
    }

    /**
     * Of two experts with equal scores: a plain top-k one over one outside it (so that without penalty and null
     * expert the choice is the plain top-k, in its order); of two outside it, the one on a shard the token already
     * reaches (an equal choice that reaches no new shard); else the first scanned, the lower id.
     */
    private static boolean tieGoesTo(int e, int best, boolean[] touched, boolean[] inPlain, ExpertShardMap map) {
        if (inPlain[e] != inPlain[best]) {
            return inPlain[e];
        }
        return !inPlain[e] && touched[map.shardOf(e)] && !touched[map.shardOf(best)];
    }

    private void checkExpert(int expert) {
        if (expert < 0 || expert >= miss.length) {
            throw new IllegalArgumentException("expert " + expert + " is outside [0, " + miss.length + ")");
        }
    }
}
