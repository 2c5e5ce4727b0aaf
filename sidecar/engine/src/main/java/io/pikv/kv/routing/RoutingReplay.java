package io.pikv.kv.routing;

import io.pikv.kv.ExpertShardMap;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

/**
 * Replays a routing log in windows of tokens and measures placement and routing on it.
 *
 * <p>Per window: the max/mean shard load (expert activations per shard) under round-robin placement and under the
 * placement re-planned at the start of the window from all earlier windows' statistics; the experts that plan moved;
 * the mean number of distinct shards a token reaches (round-robin placement with {@link HashRouter}, planned placement
 * with {@link HashRouter}, planned placement with {@link CacheAwareRouter}); and the mean fraction of each token's
 * top-k gate weight the cache-aware router moved.
 *
 * <p>The log holds each token's top-k only, so routing can keep or drop those experts, not pick others: the replay
 * gives the logged experts their log gate weight as logit and every other expert none. The miss signal fed to the
 * cache-aware router is a cold shard: after each token, every chosen expert but the first whose shard none of the
 * token's earlier chosen experts touched counts one miss (the token had to reach one more shard for it), so a token's
 * misses are its shards minus one.
 *
 * <p>Summary figures cover the windows that had history to plan from (all but the first); a trailing part shorter
 * than a window is not scored. The hindsight figures place experts with every whole window's statistics (the first
 * included, the trailing part left out) and no move
 * cap, shown as a reference: balanced on their average, it is no bound on any one window (online plans beat
 * its per-window p95 in some runs).
 */
public final class RoutingReplay {

    /** One routed token of the log: its top-k experts, highest gate weight first, and their gate weights. */
    public record Token(int[] experts, double[] weights) {
        public Token {
            if (experts.length == 0 || experts.length != weights.length) {
                throw new IllegalArgumentException("a token needs as many gate weights as experts, and at least one; "
                        + "got " + experts.length + " experts and " + weights.length + " weights");
            }
            for (double w : weights) {
                if (!(w > 0) || Double.isInfinite(w)) {
                    throw new IllegalArgumentException("gate weights must be finite and > 0, got " + w);
                }
            }
            experts = experts.clone();
            weights = weights.clone();
        }

        @Override
        public int[] experts() {
            return experts.clone();
        }

        @Override
        public double[] weights() {
            return weights.clone();
        }
    }

    /**
     * @param shards    shards to place experts on
     * @param window    tokens per window: placement is re-planned and figures are taken once per window; the
     *                  cache-aware router's miss counts decay over the same number of tokens
     * @param planner   placement planner settings
     * @param lambda    the cache-aware router's miss weight
     * @param nullRatio the cache-aware router's null-expert weight relative to the token's strongest expert
     */
    public record Settings(int shards, int window, PlacementPlanner.Config planner, double lambda, double nullRatio) {
        public Settings {
            if (shards < 1) {
                throw new IllegalArgumentException("shards must be >= 1, got " + shards);
            }
            if (window < 1) {
                throw new IllegalArgumentException("window must be >= 1 token, got " + window);
            }
        }
    }

    /** Figures of one window; {@code moved} experts were moved by the plan made at its start. */
    public record Window(int index, int tokens, double roundRobinMaxOverMean, double plannedMaxOverMean, int moved,
            long epoch, double fanoutHash, double fanoutPlanned, double fanoutCacheAware, double gateMassMoved,
            String planNote) {
    }

    /** Per-window figures and their summary over the windows with history. */
    public record Result(int experts, int topK, int tokens, int tokensUnscored, List<Window> windows,
            double roundRobinMaxOverMeanP95, double plannedMaxOverMeanP95, double movedFractionMax,
            double fanoutHash, double fanoutPlanned, double fanoutCacheAware, double gateMassMoved,
            double hindsightMaxOverMeanP95, double fanoutHindsight) {
        public Result {
            windows = List.copyOf(windows);
        }
    }

    private RoutingReplay() {
    }

    public static Result replay(List<Token> log, int experts, Settings settings) {
        int windows = log.size() / settings.window();
        if (windows < 2) {
            throw new IllegalArgumentException("the log holds " + log.size() + " tokens: fewer than two windows of "
                    + settings.window() + " (the first window only gathers statistics to plan from)");
        }
        int topK = 0;
        for (Token t : log) {
            topK = Math.max(topK, t.experts.length);
            for (int e : t.experts) {
                if (e < 0 || e >= experts) {
                    throw new IllegalArgumentException("expert " + e + " is outside [0, " + experts + ")");
                }
            }
        }
        int shards = settings.shards();
        ExpertShardMap roundRobin = ExpertShardMap.roundRobin(experts, shards);
        ExpertShardMap planned = roundRobin;
        PlacementPlanner planner = new PlacementPlanner(settings.planner());
        HashRouter hash = new HashRouter(topK);
        CacheAwareRouter cacheAware = new CacheAwareRouter(experts, topK, settings.lambda(), settings.window(),
                settings.nullRatio());
        ExpertStatistics history = new ExpertStatistics(experts);
        ExpertStatistics all = new ExpertStatistics(experts);
        for (int i = 0; i < windows * settings.window(); i++) {
            all.add(log.get(i).experts);
        }
        ExpertShardMap hindsight = new PlacementPlanner(new PlacementPlanner.Config(
                settings.planner().balanceSlack(), 1.0, 0.0)).plan(all.load(), all.coActivation(), roundRobin).map();

        List<Window> rows = new ArrayList<>();
        double[] hindsightMaxOverMean = new double[windows];
        double hindsightFanout = 0;
        double[] logits = new double[experts];
        for (int w = 0; w < windows; w++) {
            int moved = 0;
            String note = "no history yet";
            if (w > 0) {
                PlacementPlan plan = planner.plan(history.load(), history.coActivation(), planned);
                planned = plan.map();
                moved = plan.moves().size();
                note = plan.changed() ? "" : plan.reason();
            }
            double[] windowLoad = new double[experts];
            double fanHash = 0;
            double fanPlanned = 0;
            double fanCacheAware = 0;
            double massMoved = 0;
            for (int i = w * settings.window(); i < (w + 1) * settings.window(); i++) {
                Token token = log.get(i);
                Arrays.fill(logits, Double.NEGATIVE_INFINITY);
                for (int j = 0; j < token.experts.length; j++) {
                    logits[token.experts[j]] = Math.log(token.weights[j]);
                    windowLoad[token.experts[j]] += 1;
                }
                fanHash += hash.route(logits, roundRobin).shards();
                fanPlanned += hash.route(logits, planned).shards();
                int reference = hash.route(logits, hindsight).shards();
                if (w > 0) {
                    hindsightFanout += reference;
                }
                RoutingDecision d = cacheAware.route(logits, planned);
                fanCacheAware += d.shards();
                massMoved += d.massMovedFraction();
                recordColdShards(cacheAware, d.experts(), planned);
                history.add(token.experts);
            }
            int n = settings.window();
            hindsightMaxOverMean[w] = PlacementPlanner.maxOverMean(windowLoad, hindsight.assignment(), shards);
            rows.add(new Window(w, n, PlacementPlanner.maxOverMean(windowLoad, roundRobin.assignment(), shards),
                    PlacementPlanner.maxOverMean(windowLoad, planned.assignment(), shards), moved, planned.epoch(),
                    fanHash / n, fanPlanned / n, fanCacheAware / n, massMoved / n, note));
        }
        List<Window> scored = rows.subList(1, rows.size());
        double movedMax = 0;
        for (Window r : scored) {
            movedMax = Math.max(movedMax, (double) r.moved() / experts);
        }
        return new Result(experts, topK, log.size(), log.size() - windows * settings.window(), rows,
                percentile(scored.stream().mapToDouble(Window::roundRobinMaxOverMean).toArray(), 0.95),
                percentile(scored.stream().mapToDouble(Window::plannedMaxOverMean).toArray(), 0.95), movedMax,
                scored.stream().mapToDouble(Window::fanoutHash).average().orElseThrow(),
                scored.stream().mapToDouble(Window::fanoutPlanned).average().orElseThrow(),
                scored.stream().mapToDouble(Window::fanoutCacheAware).average().orElseThrow(),
                scored.stream().mapToDouble(Window::gateMassMoved).average().orElseThrow(),
                percentile(Arrays.copyOfRange(hindsightMaxOverMean, 1, windows), 0.95),
                hindsightFanout / ((double) (windows - 1) * settings.window()));
    }

    /** Every chosen expert after the first whose shard the token's earlier chosen experts did not touch. */
    static void recordColdShards(CacheAwareRouter router, int[] chosen, ExpertShardMap map) {
        for (int i = 1; i < chosen.length; i++) {
            boolean warm = false;
            for (int j = 0; j < i && !warm; j++) {
                warm = map.shardOf(chosen[j]) == map.shardOf(chosen[i]);
            }
            if (!warm) {
                router.recordMiss(chosen[i]);
            }
        }
    }

    /** Linear interpolation between order statistics (NumPy's default); {@code q} in [0, 1]. */
    public static double percentile(double[] values, double q) {
        if (values.length == 0) {
            throw new IllegalArgumentException("no values to take a percentile of");
        }
        if (!(q >= 0 && q <= 1)) {
            throw new IllegalArgumentException("the percentile's q must be in [0, 1], got " + q);
        }
        double[] v = values.clone();
        Arrays.sort(v);
        double h = (v.length - 1) * q;
        int lo = (int) Math.floor(h);
        int hi = Math.min(lo + 1, v.length - 1);
        return v[lo] + (h - lo) * (v[hi] - v[lo]);
    }
}
