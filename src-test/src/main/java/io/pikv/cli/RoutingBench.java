package io.pikv.cli;

import io.pikv.kv.routing.PlacementPlanner;
import io.pikv.kv.routing.RoutingReplay;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

import java.io.PrintWriter;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Callable;

/** {@code ./pikv bench routing}: replays an expert-routing log in windows through placement planning and routing. */
@Command(name = "routing", mixinStandardHelpOptions = true,
        description = "Replay an MoE expert-routing log (vLLM-MoE-Logger format) in windows: shard load under "
                + "round-robin and re-planned placement, experts moved, shards per token under hash and "
                + "cache-aware routing, and the gate mass cache-aware routing moved.")
public final class RoutingBench implements Callable<Integer> {

    @Option(names = "--trace", required = true, paramLabel = "FILE", description = "Routing log (JSON lines).")
    Path trace;

    @Option(names = "--shards", required = true, paramLabel = "N", description = "Shards to place experts on.")
    int shards;

    @Option(names = "--window", defaultValue = "512", paramLabel = "TOKENS",
            description = "Tokens per window (re-plan and measure once per window; default ${DEFAULT-VALUE}).")
    int window;

    @Option(names = "--skip", defaultValue = "8448", paramLabel = "N",
            description = "Leading route records to drop: vLLM's warm-up on dummy tokens (default ${DEFAULT-VALUE}, "
                    + "as the data README says).")
    int skip;

    @Option(names = "--experts", paramLabel = "N",
            description = "Number of experts (default: the highest expert id among the replayed "
                    + "tokens plus one; pass the model's count where an expert may never fire).")
    Integer experts;

    @Option(names = "--lambda", defaultValue = "0.1", paramLabel = "X",
            description = "Cache-aware routing: weight of the miss penalty (default ${DEFAULT-VALUE}).")
    double lambda;

    @Option(names = "--null-ratio", defaultValue = "0.15", paramLabel = "X",
            description = "Cache-aware routing: weight of the null expert relative to the token's strongest expert; "
                    + "0 never drops an expert (default ${DEFAULT-VALUE}).")
    double nullRatio;

    @Option(names = "--balance-slack", defaultValue = "0.1", paramLabel = "X",
            description = "Planner: predicted max/mean shard load to aim at, minus one (default ${DEFAULT-VALUE}).")
    double balanceSlack;

    @Option(names = "--max-moved", defaultValue = "0.1", paramLabel = "FRACTION",
            description = "Planner: most experts one plan may move, as a fraction (default ${DEFAULT-VALUE}).")
    double maxMoved;

    @Option(names = "--min-gain", defaultValue = "0.01", paramLabel = "X",
            description = "Planner: smallest predicted gain worth a re-plan (default ${DEFAULT-VALUE}).")
    double minGain;

    @Option(names = "--json", paramLabel = "FILE", converter = BenchReport.JsonFile.class,
            description = "Also write the figures as JSON.")
    Path json;

    @picocli.CommandLine.Spec
    picocli.CommandLine.Model.CommandSpec spec;

    @Override
    public Integer call() {
        BenchReport.notAnInput(json, Main.input(trace));
        if (shards < 1 || shards > 4096) {
            throw new Main.UsageException("--shards must be in [1, 4096], got " + shards + ".");
        }
        if (window < 1) {
            throw new Main.UsageException("--window must be at least 1 token, got " + window + ".");
        }
        if (skip < 0) {
            throw new Main.UsageException("--skip must not be negative, got " + skip + ".");
        }
        // The engine checks these too, under its own names; here they are refused under the flags' names.
        if (!(lambda >= 0) || !Double.isFinite(lambda)) {
            throw new Main.UsageException("--lambda must be a finite number >= 0, got " + lambda + ".");
        }
        if (!(nullRatio >= 0 && nullRatio < 1)) {
            throw new Main.UsageException("--null-ratio must be in [0, 1), got " + nullRatio + ".");
        }
        if (!(balanceSlack >= 0) || !Double.isFinite(balanceSlack)) {
            throw new Main.UsageException("--balance-slack must be a finite number >= 0, got " + balanceSlack + ".");
        }
        if (!(maxMoved >= 0 && maxMoved <= 1)) {
            throw new Main.UsageException("--max-moved must be a fraction in [0, 1], got " + maxMoved + ".");
        }
        if (!(minGain >= 0) || !Double.isFinite(minGain)) {
            throw new Main.UsageException("--min-gain must be a finite number >= 0, got " + minGain + ".");
        }
        long start = System.nanoTime();
        QwenRoutingLog.Log log = QwenRoutingLog.read(Main.input(trace), skip);
        int n = experts != null ? experts : log.experts();
        if (n > QwenRoutingLog.MAX_EXPERTS) {
            throw new Main.UsageException("--experts must be at most " + QwenRoutingLog.MAX_EXPERTS + ", got " + n
                    + ".");
        }
        if (n < log.experts()) {
            throw new Main.UsageException("--experts " + n + " is too few: the log names expert "
                    + (log.experts() - 1) + ".");
        }
        if (shards > n) {
            throw new Main.UsageException("--shards " + shards + " is more than the " + n + " experts: some shards "
                    + "would hold none.");
        }
        RoutingReplay.Result r;
        try {
            r = RoutingReplay.replay(log.tokens(), n, new RoutingReplay.Settings(shards, window,
                    new PlacementPlanner.Config(balanceSlack, maxMoved, minGain), lambda, nullRatio));
        } catch (IllegalArgumentException e) {
            throw new Main.UsageException(e.getMessage() + ".");
        }
        BenchReport report = new BenchReport("routing replay: " + trace.getFileName() + ", " + r.tokens()
                + " tokens after " + log.skipped() + " warm-up records, " + n + " experts, top-" + r.topK() + ", "
                + shards + " shards, windows of " + window + " tokens");
        report.put("trace", trace.toString());
        report.put("shards", shards);
        report.put("experts", n);
        report.put("top_k", r.topK());
        report.put("window", window);
        report.put("windows", r.windows().size());
        report.put("tokens", r.tokens());
        report.put("tokens_unscored", r.tokensUnscored());
        report.put("round_robin_max_over_mean_p95", round(r.roundRobinMaxOverMeanP95()));
        report.put("planned_max_over_mean_p95", round(r.plannedMaxOverMeanP95()));
        report.put("hindsight_max_over_mean_p95", round(r.hindsightMaxOverMeanP95()));
        report.put("moved_fraction_max", round(r.movedFractionMax()));
        report.put("fanout_hash", round(r.fanoutHash()));
        report.put("fanout_planned", round(r.fanoutPlanned()));
        report.put("fanout_cache_aware", round(r.fanoutCacheAware()));
        report.put("fanout_hindsight", round(r.fanoutHindsight()));
        report.put("fanout_reduction", round(1 - r.fanoutCacheAware() / r.fanoutHash()));
        report.put("gate_mass_moved", round(r.gateMassMoved()));
        // The settings as given (exact decimals), so the table prints them as the JSON has them.
        report.put("lambda", java.math.BigDecimal.valueOf(lambda));
        report.put("null_ratio", java.math.BigDecimal.valueOf(nullRatio));
        report.put("balance_slack", java.math.BigDecimal.valueOf(balanceSlack));
        report.put("max_moved", java.math.BigDecimal.valueOf(maxMoved));
        report.put("min_gain", java.math.BigDecimal.valueOf(minGain));
        report.put("elapsed_s", BenchReport.round((System.nanoTime() - start) / 1e9, 3));
        List<Map<String, Object>> rows = new ArrayList<>();
        for (RoutingReplay.Window w : r.windows()) {
            Map<String, Object> row = new LinkedHashMap<>();
            row.put("window", w.index());
            row.put("rr_max_over_mean", round(w.roundRobinMaxOverMean()));
            row.put("planned_max_over_mean", round(w.plannedMaxOverMean()));
            row.put("moved", w.moved());
            row.put("epoch", w.epoch());
            row.put("fanout_hash", round(w.fanoutHash()));
            row.put("fanout_planned", round(w.fanoutPlanned()));
            row.put("fanout_cache_aware", round(w.fanoutCacheAware()));
            row.put("gate_mass_moved", round(w.gateMassMoved()));
            row.put("plan_note", w.planNote().isEmpty() ? "-" : w.planNote());
            rows.add(row);
        }
        report.put("per_window", rows);
        PrintWriter out = spec.commandLine().getOut();
        report.print(out);
        if (json != null) {
            report.writeJson(json);
        }
        return 0;
    }

    private static double round(double v) {
        return BenchReport.round(v, 4);
    }
}
