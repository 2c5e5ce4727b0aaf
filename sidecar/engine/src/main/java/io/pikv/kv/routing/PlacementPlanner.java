package io.pikv.kv.routing;

import io.pikv.kv.ExpertShardMap;

import java.util.ArrayList;
import java.util.List;
import java.util.Locale;

/**
 * Plans a new expert→shard map from per-expert loads and expert co-activation: keeps the max/mean shard load low and
 * puts experts that serve the same tokens on the same shard, so a token reaches fewer shards. Pure and deterministic.
 *
 * <p>Two local searches from the current map, both limited to moving at most {@code maxMovedFraction} of the experts
 * away from their current shard (an expert moved and moved back costs nothing):
 * <ol>
 *   <li><b>balance</b>: while the most loaded shard is above {@code (1 + balanceSlack)·mean}, apply the move or swap
 *       out of it that leaves the lower pair maximum (ties: less co-activation cut, then fewer moved experts);</li>
 *   <li><b>co-location</b>: apply the move or swap that removes the most co-activation from the cut while no shard
 *       exceeds {@code max((1 + balanceSlack)·mean, max after step 1)}, until none removes any.</li>
 * </ol>
 * Co-location judges moves by the cut alone, so the plan is the better of the two states by
 * {@code (max/mean − 1) + cut}: after step 1, or after step 2.
 * The co-activation <em>cut</em> is the share of co-activation counts between experts on different shards: a pair
 * that fires together on split shards sends the token to one more shard. The plan is applied only when it lowers
 * {@code (max/mean − 1) + cut} by at least {@code minGain}: re-sharding moves KV entries, so a small predicted gain is
 * not worth it.
 */
public final class PlacementPlanner {

    /**
     * @param balanceSlack     predicted max/mean shard load the plan aims at, minus one ({@code >= 0})
     * @param maxMovedFraction most experts one plan may move, as a fraction of all experts (in [0, 1])
     * @param minGain          smallest drop of {@code (max/mean − 1) + cut} worth applying ({@code >= 0})
     */
    public record Config(double balanceSlack, double maxMovedFraction, double minGain) {
        public Config {
            if (!(balanceSlack >= 0) || Double.isInfinite(balanceSlack)) {
                throw new IllegalArgumentException("balanceSlack must be a finite number >= 0, got " + balanceSlack);
            }
            if (!(maxMovedFraction >= 0 && maxMovedFraction <= 1)) {
                throw new IllegalArgumentException("maxMovedFraction must be in [0, 1], got " + maxMovedFraction);
            }
            if (!(minGain >= 0) || Double.isInfinite(minGain)) {
                throw new IllegalArgumentException("minGain must be a finite number >= 0, got " + minGain);
            }
        }
    }

    /** Aim at max/mean 1.10, move at most 10 % of the experts, act on a gain of 0.01 or more. */
    public static final Config DEFAULTS = new Config(0.10, 0.10, 0.01);

    private final Config config;

    public PlacementPlanner(Config config) {
        if (config == null) {
            throw new IllegalArgumentException("a planner needs its config (PlacementPlanner.DEFAULTS for the defaults)");
        }
        this.config = config;
    }

    public Config config() {
        return config;
    }

    /**
     * @param load         per expert, what it served (tokens or any additive measure), finite and {@code >= 0}
     * @param coActivation experts × experts, how often two experts served the same token; symmetric, finite,
     *                     {@code >= 0}; the diagonal is ignored
     * @param current      the map in force
     */
    public PlacementPlan plan(double[] load, double[][] coActivation, ExpertShardMap current) {
        if (current == null) {
            throw new IllegalArgumentException("the current shard map is required");
        }
        int experts = current.experts();
        int shards = current.shards();
        double[][] co = checkedCoActivation(coActivation, experts);
        checkLoad(load, experts);
        int[] from = current.assignment();
        double before = maxOverMean(load, from, shards);
        double cutBefore = cut(co, from);
        // The floor of the fraction as written (0.57 of 100 is 57, where the double product is 56.99999999999999),
        // never more: a slack on the product gave 0.09999999999 of 60 experts 6 moves.
        int budget = java.math.BigDecimal.valueOf(config.maxMovedFraction())
                .multiply(java.math.BigDecimal.valueOf(experts))
                .setScale(0, java.math.RoundingMode.FLOOR).intValueExact();
        double total = 0;
        for (double l : load) {
            total += l;
        }
        if (total == 0) {
            return noop(current, before, cutBefore, 0, "no expert has any load yet");
        }
        if (budget == 0) {
            return noop(current, before, cutBefore, 0, "the move cap (" + config.maxMovedFraction() + " of " + experts
                    + " experts) allows no move");
        }
        Search s = new Search(load, co, from, shards, budget, total / shards);
        s.balance(config.balanceSlack());
        int[] balanced = s.assign.clone();
        s.coLocate(config.balanceSlack());
        int[] chosen = s.assign;
        double after = maxOverMean(load, chosen, shards);
        double cutAfter = cut(co, chosen);
        // Co-location picks by cut alone and may raise max/mean by more than it saves: keep the better of the two.
        double balancedAfter = maxOverMean(load, balanced, shards);
        double balancedCut = cut(co, balanced);
        boolean coLocationDropped = balancedAfter + balancedCut < after + cutAfter;
        if (coLocationDropped) {
            chosen = balanced;
            after = balancedAfter;
            cutAfter = balancedCut;
        }
        List<PlacementPlan.Move> moves = new ArrayList<>();
        for (int e = 0; e < experts; e++) {
            if (chosen[e] != from[e]) {
                moves.add(new PlacementPlan.Move(e, from[e], chosen[e]));
            }
        }
        double gain = (before - 1 + cutBefore) - (after - 1 + cutAfter);
        if (moves.isEmpty()) {
            return noop(current, before, cutBefore, 0, coLocationDropped
                    ? "balancing found no move, and co-location's moves would raise the predicted max/mean by more "
                    + "than they lower the co-activation cut"
                    : "no move within the balance slack and the move cap lowers the predicted max/mean or the "
                    + "co-activation cut");
        }
        if (!(gain >= config.minGain())) { // NaN too: never a plan on figures that are not numbers
            return noop(current, before, cutBefore, gain, String.format(Locale.ROOT,
                    "the best plan found (%d %s) gains %.4g, below the threshold %s", moves.size(),
                    moves.size() == 1 ? "move" : "moves", gain, config.minGain()));
        }
        if (current.epoch() == Long.MAX_VALUE) {
            return noop(current, before, cutBefore, gain, "the shard map's epoch is at its maximum: no later map can "
                    + "be published");
        }
        return new PlacementPlan(new ExpertShardMap(current.epoch() + 1, shards, chosen), moves, before, after,
                cutBefore, cutAfter, gain, "");
    }

    /** Max over mean of the per-shard sums of {@code load} under {@code assign}; 1 when there is no load. */
    public static double maxOverMean(double[] load, int[] assign, int shards) {
        if (shards < 1 || load.length != assign.length) {
            throw new IllegalArgumentException("need at least one shard and a load per expert, got " + shards
                    + " shards, " + load.length + " loads and " + assign.length + " experts");
        }
        checkAssignment(assign, shards);
        double[] perShard = new double[shards];
        double total = 0;
        for (int e = 0; e < assign.length; e++) {
            perShard[assign[e]] += load[e];
            total += load[e];
        }
        if (total == 0) {
            return 1;
        }
        double max = 0;
        for (double l : perShard) {
            max = Math.max(max, l);
        }
        return max / total * shards; // not max / (total / shards): a mean of tiny loads underflows to 0
    }

    /** Share of co-activation between experts on different shards; 0 when there is none. */
    public static double cut(double[][] coActivation, int[] assign) {
        if (coActivation.length != assign.length) {
            throw new IllegalArgumentException("co-activation has " + coActivation.length + " rows for "
                    + assign.length + " experts");
        }
        for (int a = 0; a < assign.length; a++) {
            if (coActivation[a] == null || coActivation[a].length < a) {
                throw new IllegalArgumentException("co-activation row " + a + " is shorter than " + a);
            }
        }
        double total = 0;
        double split = 0;
        for (int a = 0; a < assign.length; a++) {
            for (int b = 0; b < a; b++) {
                total += coActivation[a][b];
                if (assign[a] != assign[b]) {
                    split += coActivation[a][b];
                }
            }
        }
        return total == 0 ? 0 : split / total;
    }

    private static PlacementPlan noop(ExpertShardMap current, double before, double cutBefore, double gain,
            String reason) {
        return new PlacementPlan(current, List.of(), before, before, cutBefore, cutBefore, gain, reason);
    }

    private static void checkAssignment(int[] assign, int shards) {
        for (int e = 0; e < assign.length; e++) {
            if (assign[e] < 0 || assign[e] >= shards) {
                throw new IllegalArgumentException("expert " + e + " is on shard " + assign[e] + ", outside [0, "
                        + shards + ")");
            }
        }
    }

    private static void checkLoad(double[] load, int experts) {
        if (load == null) {
            throw new IllegalArgumentException("load is required");
        }
        if (load.length != experts) {
            throw new IllegalArgumentException("load has " + load.length + " entries but the shard map names "
                    + experts + " experts");
        }
        double sum = 0;
        for (int e = 0; e < experts; e++) {
            if (!(load[e] >= 0) || Double.isInfinite(load[e])) {
                throw new IllegalArgumentException("load of expert " + e + " is " + load[e]
                        + "; loads must be finite and >= 0");
            }
            sum += load[e];
        }
        if (Double.isInfinite(sum)) { // each finite, but no mean or max/mean can be had of them
            throw new IllegalArgumentException("the loads sum beyond the largest double; scale them down");
        }
    }

    /** A copy with a zero diagonal, after checking shape, values and symmetry. */
    private static double[][] checkedCoActivation(double[][] co, int experts) {
        if (co == null) {
            throw new IllegalArgumentException("coActivation is required (zeros for none)");
        }
        if (co.length != experts) {
            throw new IllegalArgumentException("coActivation has " + co.length + " rows but the shard map names "
                    + experts + " experts");
        }
        double[][] copy = new double[experts][];
        for (int a = 0; a < experts; a++) {
            if (co[a] == null || co[a].length != experts) {
                throw new IllegalArgumentException("coActivation must be " + experts + " × " + experts + "; row " + a
                        + " has " + (co[a] == null ? 0 : co[a].length) + " entries");
            }
            copy[a] = co[a].clone();
            copy[a][a] = 0;
        }
        for (int a = 0; a < experts; a++) {
            for (int b = 0; b < experts; b++) {
                if (a != b && (!(co[a][b] >= 0) || Double.isInfinite(co[a][b]))) {
                    throw new IllegalArgumentException("coActivation[" + a + "][" + b + "] is " + co[a][b]
                            + "; counts must be finite and >= 0");
                }
                if (co[a][b] != co[b][a] && a != b) {
                    throw new IllegalArgumentException("coActivation is not symmetric: [" + a + "][" + b + "] = "
                            + co[a][b] + " but [" + b + "][" + a + "] = " + co[b][a]);
                }
            }
        }
        double sum = 0; // over each pair once, as the cut counts them
        for (int a = 0; a < experts; a++) {
            for (int b = 0; b < a; b++) {
                sum += copy[a][b];
            }
        }
        if (Double.isInfinite(sum)) {
            throw new IllegalArgumentException("the co-activation counts sum beyond the largest double; scale them "
                    + "down");
        }
        return copy;
    }

    /** The mutable state of one plan: assignment, shard loads, and each expert's co-activation with each shard. */
    private static final class Search {
        private final double[] load;
        private final double[][] co;
        private final int[] origin;
        private final int[] assign;
        private final double[] shardLoad;
        /** Experts on each shard: a move never takes a shard's last one (an empty shard serves nothing). */
        private final int[] shardExperts;
        /** conn[e][s]: co-activation of expert e with the experts on shard s (itself excluded). */
        private final double[][] conn;
        private final int budget;
        private final double mean;
        private final double loadTol;
        private final double gainTol;
        private int moved;

        Search(double[] load, double[][] co, int[] origin, int shards, int budget, double mean) {
            this.load = load;
            this.co = co;
            this.origin = origin;
            this.assign = origin.clone();
            this.budget = budget;
            this.mean = mean;
            shardLoad = new double[shards];
            shardExperts = new int[shards];
            conn = new double[load.length][shards];
            double coTotal = 0;
            for (int e = 0; e < load.length; e++) {
                shardLoad[assign[e]] += load[e];
                shardExperts[assign[e]]++;
                for (int f = 0; f < load.length; f++) {
                    conn[e][assign[f]] += co[e][f];
                    if (f < e) {
                        coTotal += co[e][f]; // each pair once, as the input check summed them: finite
                    }
                }
            }
            loadTol = 1e-12 * mean * shards;
            gainTol = 1e-12 * Math.max(coTotal, 1e-300);
        }

        /** Change of the moved-expert count if {@code e} goes to {@code to}. */
        private int movedDelta(int e, int to) {
            return (assign[e] == origin[e] ? 1 : 0) - (to == origin[e] ? 1 : 0);
        }

        private void move(int e, int to) {
            int fromShard = assign[e];
            moved += movedDelta(e, to);
            shardLoad[fromShard] -= load[e];
            shardLoad[to] += load[e];
            shardExperts[fromShard]--;
            shardExperts[to]++;
            assign[e] = to;
            for (int g = 0; g < load.length; g++) {
                conn[g][fromShard] -= co[g][e];
                conn[g][to] += co[g][e];
            }
        }

        private double moveGain(int e, int to) {
            return conn[e][to] - conn[e][assign[e]];
        }

        private double swapGain(int e, int f) {
            int s = assign[e];
            int t = assign[f];
            return conn[e][t] - co[e][f] - conn[e][s] + conn[f][s] - co[f][e] - conn[f][t];
        }

        void balance(double slack) {
            while (true) {
                int s = 0;
                for (int i = 1; i < shardLoad.length; i++) {
                    if (shardLoad[i] > shardLoad[s]) {
                        s = i;
                    }
                }
                if (shardLoad[s] <= (1 + slack) * mean + loadTol) {
                    return;
                }
                // Best candidate so far: pair maximum, cut gain, added moves; f < 0 means a plain move.
                int bestE = -1;
                int bestT = -1;
                int bestF = -1;
                double bestMax = shardLoad[s] - loadTol;
                double bestGain = 0;
                int bestCost = 0;
                for (int e = 0; e < load.length; e++) {
                    if (assign[e] != s) {
                        continue;
                    }
                    for (int t = 0; t < shardLoad.length; t++) {
                        if (t == s) {
                            continue;
                        }
                        int cost = movedDelta(e, t);
                        double pairMax = Math.max(shardLoad[s] - load[e], shardLoad[t] + load[e]);
                        if (shardExperts[s] > 1 && moved + cost <= budget && better(pairMax, moveGain(e, t), cost,
                                bestMax, bestGain, bestCost, bestE < 0)) {
                            bestE = e;
                            bestT = t;
                            bestF = -1;
                            bestMax = pairMax;
                            bestGain = moveGain(e, t);
                            bestCost = cost;
                        }
                        for (int f = 0; f < load.length; f++) {
                            if (assign[f] != t || load[f] >= load[e]) {
                                continue;
                            }
                            int swapCost = cost + movedDelta(f, s);
                            double delta = load[e] - load[f];
                            double swapMax = Math.max(shardLoad[s] - delta, shardLoad[t] + delta);
                            double gain = swapGain(e, f);
                            if (moved + swapCost <= budget && better(swapMax, gain, swapCost, bestMax, bestGain,
                                    bestCost, bestE < 0)) {
                                bestE = e;
                                bestT = t;
                                bestF = f;
                                bestMax = swapMax;
                                bestGain = gain;
                                bestCost = swapCost;
                            }
                        }
                    }
                }
                if (bestE < 0) {
                    return;
                }
                move(bestE, bestT);
                if (bestF >= 0) {
                    move(bestF, s);
                }
            }
        }

        private boolean better(double max, double gain, int cost, double bestMax, double bestGain, int bestCost,
                boolean none) {
            if (none) {
                return max < bestMax;
            }
            if (max < bestMax - loadTol) {
                return true;
            }
            if (max > bestMax + loadTol) {
                return false;
            }
            if (gain > bestGain + gainTol) {
                return true;
            }
            return gain >= bestGain - gainTol && cost < bestCost;
        }

        void coLocate(double slack) {
            double cap = (1 + slack) * mean;
            for (double l : shardLoad) {
                cap = Math.max(cap, l);
            }
            cap += loadTol;
            while (true) {
                int bestE = -1;
                int bestT = -1;
                int bestF = -1;
                double bestGain = gainTol;
                int bestCost = Integer.MAX_VALUE;
                for (int e = 0; e < load.length; e++) {
                    if (shardExperts[assign[e]] == 1) {
                        continue; // its shard's last expert: moving it would leave that shard empty
                    }
                    for (int t = 0; t < shardLoad.length; t++) {
                        if (t == assign[e] || shardLoad[t] + load[e] > cap) {
                            continue;
                        }
                        int cost = movedDelta(e, t);
                        double gain = moveGain(e, t);
                        if (moved + cost <= budget && betterGain(gain, cost, bestGain, bestCost)) {
                            bestE = e;
                            bestT = t;
                            bestF = -1;
                            bestGain = gain;
                            bestCost = cost;
                        }
                    }
                }
                for (int e = 0; e < load.length; e++) {
                    for (int f = e + 1; f < load.length; f++) {
                        int s = assign[e];
                        int t = assign[f];
                        if (s == t || shardLoad[t] - load[f] + load[e] > cap
                                || shardLoad[s] - load[e] + load[f] > cap) {
                            continue;
                        }
                        int cost = movedDelta(e, t) + movedDelta(f, s);
                        double gain = swapGain(e, f);
                        if (moved + cost <= budget && betterGain(gain, cost, bestGain, bestCost)) {
                            bestE = e;
                            bestT = t;
                            bestF = f;
                            bestGain = gain;
                            bestCost = cost;
                        }
                    }
                }
                if (bestE < 0) {
                    return;
                }
                int s = assign[bestE];
                move(bestE, bestT);
                if (bestF >= 0) {
                    move(bestF, s);
                }
            }
        }

        private boolean betterGain(double gain, int cost, double bestGain, int bestCost) {
            if (bestCost == Integer.MAX_VALUE) {
                return gain > bestGain;
            }
            return gain > bestGain + gainTol || (gain >= bestGain - gainTol && cost < bestCost);
        }
    }
}
