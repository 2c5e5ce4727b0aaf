package io.pikv.cli;

import io.pikv.kv.scheduling.Adaptive;
import io.pikv.kv.scheduling.Belady;
import io.pikv.kv.scheduling.BlockPolicies;
import io.pikv.kv.scheduling.PrefixBlockCache;
import io.pikv.kv.scheduling.PrefixReplay;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

import java.io.PrintWriter;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Callable;

/**
 * {@code ./pikv bench cache}: replays a Mooncake trace through a prefix block cache under each eviction policy and
 * Belady's offline optimum, at several capacities.
 */
@Command(name = "cache", mixinStandardHelpOptions = true,
        description = "Replay a Mooncake-format request trace through a block cache with prefix semantics under "
                + "each eviction policy and Belady's MIN, and report the hit rate (hits / block lookups) per "
                + "policy and capacity, with its ratio to Belady's.")
public final class CacheBench implements Callable<Integer> {

    @Option(names = "--trace", required = true, paramLabel = "FILE",
            description = "Mooncake-format trace (JSON lines with timestamp and hash_ids).")
    Path trace;

    @Option(names = "--capacity", required = true, split = ",", paramLabel = "N[,N...]",
            description = "Cache capacities in blocks.")
    List<Integer> capacities;

    @Option(names = "--policies", split = ",", paramLabel = "P[,P...]",
            description = "Policies to replay (default: all of lru, streaming, h2o, utility, lrfu, adaptive); "
                    + "belady is always reported.")
    List<String> policies;

    @Option(names = "--json", paramLabel = "FILE", converter = BenchReport.JsonFile.class,
            description = "Also write the figures as JSON.")
    Path json;

    @picocli.CommandLine.Spec
    picocli.CommandLine.Model.CommandSpec spec;

    @Override
    public Integer call() {
        BenchReport.notEmpty(capacities, "--capacity");
        BenchReport.notEmpty(policies, "--policies");
        BenchReport.notAnInput(json, Main.input(trace));
        for (int c : capacities) {
            if (c < 1 || c > 100_000_000) {
                throw new Main.UsageException("--capacity values must be block counts in [1, 100000000], got " + c
                        + ".");
            }
        }
        BenchReport.distinct(capacities, "--capacity", "the capacity");
        List<String> names = policies == null ? BlockPolicies.NAMES : policies;
        BenchReport.distinct(names, "--policies", "the policy");
        for (String name : names) {
            if (name.equals("belady")) {
                throw new Main.UsageException("belady is always reported; --policies names the others: "
                        + String.join(", ", BlockPolicies.NAMES) + ".");
            }
            if (!BlockPolicies.NAMES.contains(name)) {
                throw new Main.UsageException("unknown policy '" + name + "' in --policies; known: "
                        + String.join(", ", BlockPolicies.NAMES) + ".");
            }
        }
        long start = System.nanoTime();
        List<long[]> requests = MooncakeTrace.read(Main.input(trace));
        BenchReport report = new BenchReport("cache replay: " + trace.getFileName() + ", " + requests.size()
                + " requests, prefix semantics");
        List<Map<String, Object>> results = new ArrayList<>();
        List<Map<String, Object>> adaptive = new ArrayList<>();
        long lookups = 0;
        for (int capacity : capacities) {
            PrefixReplay.Result optimum = Belady.replay(requests, capacity);
            lookups = optimum.lookups();
            for (String name : names) {
                PrefixBlockCache cache = new PrefixBlockCache(capacity, BlockPolicies.create(name, capacity));
                results.add(row(PrefixReplay.replay(requests, cache), optimum));
                if (cache.policy() instanceof Adaptive a) {
                    Map<String, Object> row = new LinkedHashMap<>();
                    row.put("capacity", capacity);
                    row.put("active", a.active());
                    row.put("switches", a.switches());
                    a.ghostHitRates().forEach((policy, rate) -> row.put("ghost_" + policy, BenchReport.round(rate, 4)));
                    adaptive.add(row);
                }
            }
            results.add(row(optimum, optimum));
        }
        report.put("trace", trace.toString());
        report.put("requests", requests.size());
        report.put("lookups", lookups);
        report.put("elapsed_s", BenchReport.round((System.nanoTime() - start) / 1e9, 3));
        report.put("results", results);
        if (!adaptive.isEmpty()) {
            report.put("adaptive", adaptive);
        }
        PrintWriter out = spec.commandLine().getOut();
        report.print(out);
        if (json != null) {
            report.writeJson(json);
        }
        return 0;
    }

    private static Map<String, Object> row(PrefixReplay.Result r, PrefixReplay.Result optimum) {
        Map<String, Object> row = new LinkedHashMap<>();
        row.put("policy", r.policy());
        row.put("capacity", r.capacity());
        row.put("hit_rate", BenchReport.round(r.hitRate(), 5));
        row.put("ratio_to_belady", optimum.hits() == 0 ? null : BenchReport.round((double) r.hits() / optimum.hits(), 4));
        row.put("hits", r.hits());
        return row;
    }
}
