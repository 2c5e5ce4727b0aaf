package io.pikv.cli;

import io.pikv.kv.cache.LruBlockCache;
import io.pikv.kv.cache.PrefixReplay;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

import java.io.PrintWriter;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Callable;

/** {@code ./pikv bench cache}: replays a Mooncake trace through a prefix block cache at several capacities. */
@Command(name = "cache", mixinStandardHelpOptions = true,
        description = "Replay a Mooncake-format request trace through a block cache with prefix semantics "
                + "and report the hit rate (hits / block lookups) per capacity.")
public final class CacheBench implements Callable<Integer> {

    @Option(names = "--trace", required = true, paramLabel = "FILE",
            description = "Mooncake-format trace (JSON lines with timestamp and hash_ids).")
    Path trace;

    @Option(names = "--capacity", required = true, split = ",", paramLabel = "N[,N...]",
            description = "Cache capacities in blocks.")
    List<Integer> capacities;

    @Option(names = "--json", paramLabel = "FILE", description = "Also write the figures as JSON.")
    Path json;

    @picocli.CommandLine.Spec
    picocli.CommandLine.Model.CommandSpec spec;

    @Override
    public Integer call() {
        for (int c : capacities) {
            if (c < 1) {
                throw new Main.UsageException("--capacity values must be positive block counts, got " + c + ".");
            }
        }
        long start = System.nanoTime();
        List<long[]> requests = MooncakeTrace.read(trace);
        BenchReport report = new BenchReport("cache replay: " + trace.getFileName() + ", " + requests.size()
                + " requests, prefix semantics");
        List<Map<String, Object>> results = new ArrayList<>();
        long lookups = 0;
        for (int capacity : capacities) {
            PrefixReplay.Result r = PrefixReplay.replay(requests, new LruBlockCache(capacity));
            lookups = r.lookups();
            Map<String, Object> row = new LinkedHashMap<>();
            row.put("policy", r.policy());
            row.put("capacity", capacity);
            row.put("hit_rate", BenchReport.round(r.hitRate(), 5));
            row.put("hits", r.hits());
            results.add(row);
        }
        report.put("trace", trace.toString());
        report.put("requests", requests.size());
        report.put("lookups", lookups);
        report.put("elapsed_s", BenchReport.round((System.nanoTime() - start) / 1e9, 3));
        report.put("results", results);
        PrintWriter out = spec.commandLine().getOut();
        report.print(out);
        if (json != null) {
            report.writeJson(json);
        }
        return 0;
    }
}
