package io.pikv.cli;

import io.pikv.kv.KvStore;
import io.pikv.kv.KvStoreConfig;
import io.pikv.kv.ModelShape;
import io.pikv.kv.StorageType;
import io.pikv.kv.routing.HashRouter;
import io.pikv.kv.ExpertShardMap;
import io.pikv.sidecar.client.SidecarClient;
import io.pikv.sidecar.wire.Wire;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

import java.io.IOException;
import java.io.PrintWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;
import java.util.concurrent.Callable;
import java.util.concurrent.CompletableFuture;

/**
 * {@code ./pikv bench service}: decode steps through a gateway and its shards over loopback HTTP (each a child JVM
 * of the packaged sidecar) against the same steps on the engine in this process, with the same shards and routing;
 * and the cost of telemetry: the same steps through a second gateway and shards that publish their windows to a
 * local Kafka broker, step by step alternating with the first.
 */
@Command(name = "service", mixinStandardHelpOptions = true,
        description = "Decode steps per second and latency through gateway -> shards over loopback HTTP, against the "
                + "engine in process on the same shapes and context.")
public final class ServiceBench implements Callable<Integer> {

    @Option(names = "--context", defaultValue = "32768", description = "Tokens already in the sequence (default ${DEFAULT-VALUE}).")
    int context;

    @Option(names = "--shards", defaultValue = "2", description = "Shard processes behind the gateway (default ${DEFAULT-VALUE}).")
    int shards;

    @Option(names = "--steps", defaultValue = "300", description = "Timed steps per path, alternating the paths step by step "
            + "(default ${DEFAULT-VALUE}: enough for a p99 that is not the largest step).")
    int steps;

    @Option(names = "--warmup", defaultValue = "2000", description = "Steps through every path on a second, "
            + "256-token sequence before timing, so that each process runs its request handling compiled rather than "
            + "interpreted (default ${DEFAULT-VALUE}).")
    int warmup;

    @Option(names = "--q-heads", defaultValue = "32", description = "Query heads (default ${DEFAULT-VALUE}).")
    int qHeads;

    @Option(names = "--kv-heads", defaultValue = "8", description = "KV heads (default ${DEFAULT-VALUE}).")
    int kvHeads;

    @Option(names = "--head-dim", defaultValue = "128", description = "Head dimension (default ${DEFAULT-VALUE}).")
    int headDim;

    @Option(names = "--experts", defaultValue = "60", description = "Routed experts (default ${DEFAULT-VALUE}).")
    int experts;

    @Option(names = "--top-k", defaultValue = "4", description = "Experts per token (default ${DEFAULT-VALUE}).")
    int topK;

    @Option(names = "--json", paramLabel = "FILE", converter = BenchReport.JsonFile.class,
            description = "Also write the figures as JSON.")
    Path json;

    @picocli.CommandLine.Spec
    picocli.CommandLine.Model.CommandSpec spec;

    private static final int ROUNDS = 3;
    private static final int PAGE_TOKENS = 32;
    /**
     * Buckets of every shard, in process and in the shard processes alike: an attention splits over them, so a shard
     * runs at most this many attention threads and the store in process at most this many per shard.
     */
    private static final int BUCKETS = 8;

    @Option(names = "--shard-threads", paramLabel = "N", description = "Attention threads per shard process "
            + "(default: the processors divided among the shards, at least 1).")
    Integer shardThreads;

    @Option(names = "--no-telemetry", description = "Skip the telemetry run (a second gateway and shards "
            + "publishing to a local Kafka broker).")
    boolean noTelemetry;

    /** One gateway and its shards, as child processes. */
    private record Cluster(List<SidecarProcess> processes, SidecarClient client, long sequence) {
    }

    /** The gateways' clients of this run. */
    private final List<SidecarClient> clients = new ArrayList<>();

    /** Longest context the bench fills (its shards hold it in fp16 within their budgets). */
    private static final int MAX_CONTEXT = 1 << 20;
    /** Reads the processes' /q/metrics (not on the timed path). */
    private static final java.net.http.HttpClient METRICS_HTTP = java.net.http.HttpClient.newHttpClient();
    /** Tokens of the short sequence the warm-up steps run on. */
    private static final int WARM_CONTEXT = 256;

    @Override
    public Integer call() {
        Main.within("--context", context, 1, MAX_CONTEXT, "");
        Main.within("--shards", shards, 1, 16, "");
        Main.within("--steps", steps, ROUNDS, 100_000, "");
        Main.within("--warmup", warmup, 0, 100_000, "");
        if (shardThreads != null) {
            Main.within("--shard-threads", shardThreads, 1, BUCKETS, " (a shard splits an attention over its " + BUCKETS
                    + " buckets, one thread each at most)");
        }
        Main.within("--q-heads", qHeads, 1, ModelShape.MAX_HEADS, "");
        Main.within("--kv-heads", kvHeads, 1, ModelShape.MAX_HEADS, "");
        Main.within("--head-dim", headDim, 1, ModelShape.MAX_HEAD_DIM, "");
        Main.within("--experts", experts, 1, ModelShape.MAX_EXPERTS, "");
        Main.within("--top-k", topK, 1, experts, " (at most the experts)");
        if (qHeads % kvHeads != 0) {
            throw new Main.UsageException("--q-heads " + qHeads + " must be a multiple of --kv-heads " + kvHeads + ".");
        }
        ModelShape shape;
        try {
            shape = new ModelShape(1, qHeads, kvHeads, headDim, experts, topK);
        } catch (IllegalArgumentException e) {
            throw new Main.UsageException("bad model shape (--q-heads, --kv-heads, --head-dim, --experts, --top-k): "
                    + e.getMessage() + ".");
        }
        if (shards > experts) {
            throw new Main.UsageException("--shards " + shards + " is more than the " + experts + " experts: some "
                    + "shards would hold none (and the others more than their budget).");
        }
        long entryBytes = 4L * shape.kvWidth();  // fp16 K and V
        long budget = Math.max(64L << 20, 2 * (context + steps * 3L + WARM_CONTEXT + warmup + 1024) * entryBytes / shards
                + (8L << 20));
        long room = Math.max(0, io.pikv.kv.DirectMemory.limit() - (256L << 20));
        if (budget * shards > room) {
            throw new Main.UsageException("--context " + context + " needs " + (budget * shards >> 20) + " MiB of KV "
                    + "pages in process, more than the " + (room >> 20) + " MiB of direct memory this JVM may use; use a "
                    + "shorter context or raise the heap (PIKV_JAVA_OPTS=-Xmx…).");
        }
        Path root = SidecarProcess.projectRoot();
        Path jar = SidecarProcess.appJar(root);
        // A directory of this run's own: two runs at once never write to each other's logs.
        Path logs;
        try {
            Files.createDirectories(root.resolve("src-test/target"));
            logs = Files.createTempDirectory(root.resolve("src-test/target"), "bench-service-");
        } catch (IOException e) {
            throw new Main.RunFailure("cannot create the log directory under " + root.resolve("src-test/target")
                    + ": " + e.getMessage(), e);
        }
        PrintWriter out = spec.commandLine().getOut();
        boolean finished = false;
        List<SidecarProcess> all = new ArrayList<>();
        LocalKafka kafka = null;
        // Both sides use the machine's processors: the store in process on one thread per processor, the shard
        // processes on their share of them (as shard pods on their own nodes would use theirs), so that neither side
        // runs more attention threads than there are processors.
        int processors = Runtime.getRuntime().availableProcessors();
        try (KvStore local = new KvStore(KvStoreConfig.builder(shape).storageType(StorageType.FP16).pageTokens(PAGE_TOKENS)
                .shards(shards).buckets(BUCKETS).threads(processors).budgetBytes(budget * shards).build())) {
            out.println("starting " + shards + " shard(s) and a gateway" + (noTelemetry ? "" : ", twice (telemetry off "
                    + "and on, with a local Kafka broker)") + "; logs in " + logs + " ...");
            out.flush();
            Cluster plain = start(jar, shape, budget, logs, "", Map.of(), all);
            Cluster published = null;
            if (!noTelemetry) {
                kafka = LocalKafka.start().closeOnExit(); // Ctrl-C leaves no broker directory behind
                published = start(jar, shape, budget, logs, "telemetry-", Map.of(
                        "kafka.bootstrap.servers", kafka.bootstrapServers(), "pikv.telemetry.enabled", "true",
                        "pikv.cluster", "bench"), all);
            }
            SplittableRandom rnd = new SplittableRandom(7);
            long inProcess = local.createSequence();
            fill(shape, published == null ? List.of(plain) : List.of(plain, published), local, inProcess, context, rnd);

            HashRouter router = new HashRouter(topK);
            ExpertShardMap map = ExpertShardMap.roundRobin(experts, shards);
            warmUp(shape, plain, published, local, router, map, rnd, out);
            // Then the long sequence's own first steps (its pages, connections), then the timed steps, alternating
            // the paths step by step.
            for (int i = 0; i < 10; i++) {
                Wire.StepRequest step = step(shape, rnd);
                plain.client().step(plain.sequence(), step);
                if (published != null) {
                    published.client().step(published.sequence(), step);
                }
                localStep(local, inProcess, step, router, map);
            }
            double[] httpMs = new double[steps];
            double[] localMs = new double[steps];
            double[] telemetryMs = new double[steps];
            long recordsBefore = kafka == null ? 0 : kafka.records(LocalKafka.TELEMETRY_TOPIC);
            Map<String, double[]> timersBefore = timers(plain);
            long telemetryCpuBefore = published == null ? -1 : telemetryCpu(published);
            long wallStart = System.nanoTime();
            for (int i = 0; i < steps; i++) {
                Wire.StepRequest step = step(shape, rnd);
                // With telemetry, the two clusters swap places every step (plain, in process, published; then
                // published, in process, plain): each HTTP path follows the in-process step (which leaves the caches
                // cold and both cores just released) as often as it follows its own previous step, so neither
                // cluster's figure carries the order. Before, the published cluster always came right after the
                // in-process step, and measured 3-9 % slower for it.
                boolean swapped = published != null && i % 2 == 1;
                if (swapped) {
                    telemetryMs[i] = timedStep(published, step);
                } else {
                    httpMs[i] = timedStep(plain, step);
                }
                long t1 = System.nanoTime();
                localStep(local, inProcess, step, router, map);
                localMs[i] = (System.nanoTime() - t1) / 1e6;
                if (swapped) {
                    httpMs[i] = timedStep(plain, step);
                } else if (published != null) {
                    telemetryMs[i] = timedStep(published, step);
                }
            }
            long telemetryCpuAfter = published == null ? -1 : telemetryCpu(published);
            double wallS = (System.nanoTime() - wallStart) / 1e9;
            Map<String, double[]> timersAfter = timers(plain);
            double httpRate = steps / (sum(httpMs) / 1e3);
            double localRate = steps / (sum(localMs) / 1e3);
            Arrays.sort(httpMs);
            Arrays.sort(localMs);
            BenchReport report = new BenchReport("service: " + shards + " shard process(es) behind a gateway, loopback "
                    + "HTTP, vs the engine in process; " + shape + ", context " + context + " tokens, fp16");
            report.put("context", context);
            report.put("shards", shards);
            report.put("steps", steps);
            report.put("warmup_steps", warmup);
            report.put("shard_threads", threadsOfShard(0)); // the first shard's (the others' at most as many)
            report.put("shard_threads_total", shardThreadsTotal());
            report.put("inprocess_threads", Math.min(processors, shards * BUCKETS)); // one per (shard, bucket) at most
            report.put("inprocess_steps_per_s", BenchReport.round(localRate, 4));
            report.put("http_steps_per_s", BenchReport.round(httpRate, 4));
            report.put("http_overhead_ratio", BenchReport.round(localRate / httpRate, 4));
            // The ratio of medians beside the ratio of means: the HTTP path's heavier tail weighs less in it.
            report.put("http_overhead_ratio_p50", BenchReport.round(percentile(httpMs, 0.50)
                    / percentile(localMs, 0.50), 4));
            report.put("p50_ms", BenchReport.round(percentile(httpMs, 0.50), 4));
            report.put("p99_ms", BenchReport.round(percentile(httpMs, 0.99), 4));
            report.put("inprocess_p50_ms", BenchReport.round(percentile(localMs, 0.50), 4));
            report.put("inprocess_p99_ms", BenchReport.round(percentile(localMs, 0.99), 4));
            // Where the HTTP time goes: each process's own time per call (pikv_request_seconds), from /q/metrics.
            report.put("gateway_step_ms", meanMs(timersBefore, timersAfter, "gateway step"));
            report.put("shard_step_ms", meanMs(timersBefore, timersAfter, "shard step"));
            Double otherShards = meanMs(timersBefore, timersAfter, "shard attention");
            if (otherShards != null) {
                report.put("shard_attention_ms", otherShards); // absent with one shard: no other shard attends
            }
            if (published != null) {
                double telemetryRate = steps / (sum(telemetryMs) / 1e3);
                long records = kafka.records(LocalKafka.TELEMETRY_TOPIC) - recordsBefore;
                report.put("http_telemetry_steps_per_s", BenchReport.round(telemetryRate, 4));
                report.put("telemetry_cost", BenchReport.round(1 - telemetryRate / httpRate, 4));
                report.put("telemetry_records", records);
                report.put("telemetry_records_per_s", BenchReport.round(records / wallS, 4));
                // The direct measure: the publishing threads' CPU time as a share of the processors' time over the
                // timed steps. On shards that keep every processor busy this is the share of their throughput that
                // telemetry takes.
                report.put("telemetry_cpu_share", telemetryCpuBefore < 0 || telemetryCpuAfter < 0 ? null
                        : BenchReport.round((telemetryCpuAfter - telemetryCpuBefore) / 1e9 / (wallS * processors), 4));
            }
            report.print(out);
            if (json != null) {
                report.writeJson(json);
            }
            finished = true;
            return 0;
        } catch (Main.UsageException e) {
            throw e;
        } catch (RuntimeException e) {
            if (Main.shuttingDown()) {
                finished = true; // interrupted (Ctrl-C): no failure to tell, and its logs go as a finished run's do
                throw new Main.RunFailure("interrupted", e);
            }
            throw failure(e, logs, all);
        } finally {
            SidecarProcess.closeAll(all);
            clients.forEach(SidecarClient::close);
            if (kafka != null) {
                try {
                    kafka.close();
                } catch (Main.RunFailure e) {
                    out.println("(" + e.getMessage() + ")"); // after the figures or the failure, not instead of them
                }
            }
            if (finished) {
                // A run that worked leaves nothing behind; a failed one keeps its logs, named in its error.
                String kept = DirTree.delete(logs);
                if (kept != null) {
                    out.println("(could not remove " + logs + ": " + kept + ")");
                }
            }
        }
    }

    /** A failed run said with where its logs are kept (and, for a failure mid-run, the processes' log tails). */
    private static Main.RunFailure failure(RuntimeException failure, Path logs, List<SidecarProcess> all) {
        if (failure instanceof Main.RunFailure e) {
            // A process or the broker that did not start: its own words (with its log's tail), and where the logs are.
            return new Main.RunFailure(e.getMessage() + " (logs kept in " + logs + ")", e);
        }
        // A sidecar (or the store in process, or the broker) failed mid-run, or answered something malformed: said
        // with the processes' logs, exit 1.
        StringBuilder tails = new StringBuilder();
        for (SidecarProcess p : all) {
            tails.append("\n--- ").append(p.name()).append(" ---\n").append(p.tail());
        }
        return new Main.RunFailure("the run failed: " + failure.getMessage() + " (logs kept in " + logs + ")" + tails,
                failure);
    }

    /**
     * Attention threads of shard process {@code s}: {@code --shard-threads}, else the processors divided among the
     * shards, the remainder to the first ones, so that together they run as many as the store in process (at least
     * one each: more shards than processors run more, said as {@code shard_threads_total}; at most one per bucket,
     * as the store in process).
     */
    private int threadsOfShard(int s) {
        if (shardThreads != null) {
            return shardThreads;
        }
        int processors = Runtime.getRuntime().availableProcessors();
        return Math.min(BUCKETS, Math.max(1, processors / shards + (s < processors % shards ? 1 : 0)));
    }

    /** The attention threads of all shard processes together. */
    private int shardThreadsTotal() {
        int total = 0;
        for (int s = 0; s < shards; s++) {
            total += threadsOfShard(s);
        }
        return total;
    }

    /** One step through {@code cluster}'s gateway; returns its milliseconds. */
    private static double timedStep(Cluster cluster, Wire.StepRequest step) {
        long t0 = System.nanoTime();
        cluster.client().step(cluster.sequence(), step);
        return (System.nanoTime() - t0) / 1e6;
    }

    /** Starts the shards and then their gateway, with {@code extra} settings on each, and opens a sequence. */
    private Cluster start(Path jar, ModelShape shape, long budget, Path logs, String prefix, Map<String, String> extra,
                          List<SidecarProcess> all) {
        List<CompletableFuture<SidecarProcess>> starting = new ArrayList<>();
        for (int s = 0; s < shards; s++) {
            Map<String, String> settings = settings(shape, "shard", budget);
            settings.putAll(extra);
            settings.put("pikv.shard-id", String.valueOf(s));
            settings.put("pikv.store.attention-threads", String.valueOf(threadsOfShard(s)));
            // The store in process attends on the CPU: so do the shards, also on a machine with a GPU.
            settings.put("pikv.compute", "cpu");
            String name = prefix + "shard-" + s;
            starting.add(CompletableFuture.supplyAsync(() -> SidecarProcess.start(jar, name, settings, logs,
                    Duration.ofSeconds(120))));
        }
        List<SidecarProcess> processes = new ArrayList<>();
        List<String> urls = new ArrayList<>();
        RuntimeException failed = null;
        for (CompletableFuture<SidecarProcess> f : starting) {
            try {
                SidecarProcess p = f.join();
                processes.add(p);
                all.add(p); // stopped by the caller, also when another shard failed to start
                urls.add(p.uri().toString());
            } catch (java.util.concurrent.CompletionException e) {
                if (failed == null) {
                    failed = e.getCause() instanceof RuntimeException r ? r : e;
                }
            }
        }
        if (failed != null) {
            throw failed;
        }
        Map<String, String> g = settings(shape, "gateway", budget);
        g.putAll(extra);
        g.put("pikv.gateway.shards", String.join(",", urls));
        SidecarProcess gateway = SidecarProcess.start(jar, prefix + "gateway", g, logs, Duration.ofSeconds(120));
        processes.add(gateway);
        all.add(gateway);
        SidecarClient client = new SidecarClient(gateway.uri(), shape);
        clients.add(client); // closed by the caller with the processes
        return new Cluster(processes, client, client.createSequence(null));
    }

    /**
     * Nanoseconds on a CPU of the telemetry threads of the cluster's shard processes (the window, the sender and the
     * Kafka producer's network thread), from Linux's per-thread {@code /proc/<pid>/task/<tid>/schedstat} (its first
     * field, in nanoseconds, unlike the 10 ms ticks of {@code stat}); -1 where it is not there.
     */
    private static long telemetryCpu(Cluster cluster) {
        if (!java.nio.file.Files.exists(Path.of("/proc/self/schedstat"))) {
            return -1; // not Linux, or a kernel without scheduler statistics
        }
        long nanos = 0;
        for (SidecarProcess p : cluster.processes()) {
            if (p.name().endsWith("gateway")) {
                continue; // gateways publish no telemetry
            }
            Path tasks = Path.of("/proc", String.valueOf(p.pid()), "task");
            try (java.util.stream.Stream<Path> threads = java.nio.file.Files.list(tasks)) {
                for (Path t : (Iterable<Path>) threads::iterator) {
                    String name;
                    String schedstat;
                    try {
                        name = java.nio.file.Files.readString(t.resolve("comm")).strip();
                        if (!name.startsWith("pikv-telemetry") && !name.startsWith("kafka-producer")) {
                            continue;
                        }
                        schedstat = java.nio.file.Files.readString(t.resolve("schedstat")).strip();
                    } catch (java.nio.file.NoSuchFileException e) {
                        continue; // the thread ended
                    }
                    nanos += Long.parseLong(schedstat.substring(0, schedstat.indexOf(' ')));
                }
            } catch (java.io.IOException | RuntimeException e) {
                return -1;
            }
        }
        return nanos;
    }

    /** Per "role op": the sum of seconds and the count of pikv_request_seconds over the cluster's processes. */
    private static Map<String, double[]> timers(Cluster cluster) {
        Map<String, double[]> out = new HashMap<>();
        for (SidecarProcess p : cluster.processes()) {
            String text;
            try {
                text = METRICS_HTTP.send(java.net.http.HttpRequest.newBuilder(p.uri().resolve("/q/metrics")).build(),
                        java.net.http.HttpResponse.BodyHandlers.ofString()).body();
            } catch (java.io.IOException e) {
                throw new Main.RunFailure("cannot read the metrics of " + p.uri(), e);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new IllegalStateException("interrupted", e);
            }
            for (String line : text.split("\n")) {
                boolean sum = line.startsWith("pikv_request_seconds_sum{");
                if (!sum && !line.startsWith("pikv_request_seconds_count{")) {
                    continue;
                }
                String key = label(line, "role") + " " + label(line, "op");
                double value = Double.parseDouble(line.substring(line.lastIndexOf(' ') + 1));
                out.computeIfAbsent(key, k -> new double[2])[sum ? 0 : 1] += value;
            }
        }
        return out;
    }

    private static String label(String line, String name) {
        int i = line.indexOf(name + "=\"");
        if (i < 0) {
            return "";
        }
        int from = i + name.length() + 2;
        return line.substring(from, line.indexOf('"', from));
    }

    /** Mean milliseconds per call of one timer between two readings, or null when it was not called. */
    private static Double meanMs(Map<String, double[]> before, Map<String, double[]> after, String key) {
        double[] a = after.getOrDefault(key, new double[2]);
        double[] b = before.getOrDefault(key, new double[2]);
        double calls = a[1] - b[1];
        return calls <= 0 ? null : BenchReport.round((a[0] - b[0]) * 1000 / calls, 4);
    }

    private static double sum(double[] x) {
        double s = 0;
        for (double v : x) {
            s += v;
        }
        return s;
    }

    /** A sidecar's settings for {@code shape} and {@code role}: telemetry and control off, warnings only. */
    static Map<String, String> settings(ModelShape shape, String role, long budget) {
        Map<String, String> s = new HashMap<>();
        s.put("pikv.role", role);
        s.put("pikv.model.layers", String.valueOf(shape.layers()));
        s.put("pikv.model.q-heads", String.valueOf(shape.qHeads()));
        s.put("pikv.model.kv-heads", String.valueOf(shape.kvHeads()));
        s.put("pikv.model.head-dim", String.valueOf(shape.headDim()));
        s.put("pikv.model.experts", String.valueOf(shape.experts()));
        s.put("pikv.model.top-k", String.valueOf(shape.topK()));
        s.put("pikv.store.page-tokens", String.valueOf(PAGE_TOKENS));
        s.put("pikv.store.buckets", String.valueOf(BUCKETS));
        s.put("pikv.store.budget-bytes", String.valueOf(budget));
        s.put("quarkus.log.level", "WARN");
        s.put("pikv.telemetry.enabled", "false");
        s.put("pikv.control.enabled", "false");
        s.put("quarkus.log.category.\"org.apache.kafka\".level", "ERROR");
        return s;
    }

    /** {@code tokens} entries appended through each gateway (in chunks) and to the local store. */
    private void fill(ModelShape shape, List<Cluster> clusters, KvStore local, long inProcess, int tokens,
                      SplittableRandom rnd) {
        int chunk = Math.max(1, (16 << 20) / (8 + 8 * shape.kvWidth()));
        for (int start = 0; start < tokens; start += chunk) {
            int n = Math.min(chunk, tokens - start);
            Wire.AppendRequest.Entry[] entries = new Wire.AppendRequest.Entry[n];
            for (int i = 0; i < n; i++) {
                int expert = rnd.nextInt(experts);
                float[] k = gaussian(shape.kvWidth(), rnd);
                float[] v = gaussian(shape.kvWidth(), rnd);
                entries[i] = new Wire.AppendRequest.Entry(Wire.NEXT_POSITION, expert, k, v);
                local.append(inProcess, 0, expert, k, v);
            }
            Wire.AppendRequest request = new Wire.AppendRequest(0, entries);
            for (Cluster c : clusters) {
                c.client().append(c.sequence(), request);
            }
        }
    }

    /**
     * JIT warm-up: a service handles a step in code that C2 compiles only after thousands of calls, which the timed
     * steps alone (tens per second) would not give it. The warm-up runs on its own short sequence, closed afterwards.
     */
    private void warmUp(ModelShape shape, Cluster plain, Cluster published, KvStore local, HashRouter router,
                        ExpertShardMap map, SplittableRandom rnd, PrintWriter out) {
        if (warmup == 0) {
            return;
        }
        out.println("warming up: " + warmup + " steps on a " + WARM_CONTEXT + "-token sequence through each path ...");
        out.flush();
        List<Cluster> warm = new ArrayList<>();
        for (Cluster c : published == null ? List.of(plain) : List.of(plain, published)) {
            warm.add(new Cluster(c.processes(), c.client(), c.client().createSequence(null)));
        }
        long localWarm = local.createSequence();
        fill(shape, warm, local, localWarm, WARM_CONTEXT, rnd);
        for (int i = 0; i < warmup; i++) {
            Wire.StepRequest step = step(shape, rnd);
            for (Cluster c : warm) {
                c.client().step(c.sequence(), step);
            }
            localStep(local, localWarm, step, router, map);
            if (i % 500 == 0) {
                timers(plain); // the metrics read around the timed steps: compiled now, not while they run
            }
        }
        for (Cluster c : warm) {
            c.client().closeSequence(c.sequence());
        }
        local.closeSequence(localWarm);
    }

    /** The in-process step: route with plain top-k, append to the primary expert's shard, attend over all. */
    private static void localStep(KvStore store, long sequence, Wire.StepRequest step, HashRouter router,
                                  ExpertShardMap map) {
        double[] logits = new double[step.logits().length];
        for (int i = 0; i < logits.length; i++) {
            logits[i] = step.logits()[i];
        }
        int[] chosen = router.route(logits, map).experts();
        store.append(sequence, step.layer(), chosen[0], step.k(), step.v());
        store.attend(sequence, step.layer(), step.query());
    }

    private static Wire.StepRequest step(ModelShape shape, SplittableRandom rnd) {
        return new Wire.StepRequest(0, Wire.GATE_LOGITS, Wire.SCOPE_ALL, gaussian(shape.experts(), rnd), null,
                gaussian(shape.queryWidth(), rnd), gaussian(shape.kvWidth(), rnd), gaussian(shape.kvWidth(), rnd));
    }

    static float[] gaussian(int n, SplittableRandom rnd) {
        float[] x = new float[n];
        for (int i = 0; i < n; i++) {
            // Box-Muller from two uniforms; SplittableRandom has no nextGaussian on JDK 17.
            double u = rnd.nextDouble(1e-12, 1.0);
            double v = rnd.nextDouble();
            x[i] = (float) (Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v));
        }
        return x;
    }

    private static double percentile(double[] sorted, double p) {
        int i = (int) Math.ceil(p * sorted.length) - 1;
        return sorted[Math.max(0, Math.min(sorted.length - 1, i))];
    }
}
