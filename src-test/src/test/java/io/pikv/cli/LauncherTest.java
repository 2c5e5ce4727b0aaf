package io.pikv.cli;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.PrintWriter;
import java.io.StringWriter;
import java.nio.file.Files;
import java.nio.file.Path;

import static org.assertj.core.api.Assertions.assertThat;

/** The launcher's commands: help, usage errors (exit 2, one sentence), and the benches' tables and JSON. */
class LauncherTest {

    private record Run(int code, String out, String err) {
    }

    private static Run run(String... args) {
        StringWriter out = new StringWriter();
        StringWriter err = new StringWriter();
        int code = Main.run(args, new PrintWriter(out, true), new PrintWriter(err, true));
        return new Run(code, out.toString(), err.toString());
    }

    /** Sidecar children run the settings they are given: no shell variable or JVM option of the caller's applies. */
    @Test
    void sidecarChildrenTakeNoSettingsFromTheCallersEnvironment(@TempDir Path dir) {
        for (String v : new String[] {"PIKV_STORE_DTYPE", "QUARKUS_HTTP_PORT", "JAVA_TOOL_OPTIONS", "JDK_JAVA_OPTIONS",
                "_JAVA_OPTIONS"}) {
            assertThat(SidecarProcess.overridesSettings(v)).as(v).isTrue();
        }
        for (String v : new String[] {"PATH", "HOME", "JAVA_HOME", "TZ"}) {
            assertThat(SidecarProcess.overridesSettings(v)).as(v).isFalse();
        }
        // The builder a child starts from: in its log directory, without such variables whatever this JVM has.
        ProcessBuilder b = SidecarProcess.builder(java.util.List.of("java", "-version"), dir, dir.resolve("child.log"));
        assertThat(b.directory()).isEqualTo(dir.toAbsolutePath().toFile());
        assertThat(b.environment().keySet()).noneMatch(SidecarProcess::overridesSettings);
        assertThat(b.environment()).containsKey("PATH");
        assertThat(b.redirectOutput().file()).isEqualTo(dir.resolve("child.log").toFile());
    }

    @Test
    void helpListsEveryCommand() {
        Run top = run("--help");
        assertThat(top.code()).isZero();
        assertThat(top.out()).contains("bench", "playground");
        assertThat(run("playground", "--help").out()).contains("--shards", "--port", "--budget-mib", "--policy",
                "--steps-per-second", "--duration", "--no-operator");
        Run bench = run("bench", "--help");
        assertThat(bench.code()).isZero();
        assertThat(bench.out()).contains("attention", "cache", "compression", "routing", "service", "operator");
        assertThat(run("bench", "operator", "--help").out()).contains("--clusters", "--rounds", "--warmup", "--json");
        assertThat(run("bench", "compression", "--help").out()).contains("--keys", "--values", "--queries",
                "--routing", "--methods", "--json");
        assertThat(run("bench", "cache", "--help").out()).contains("--trace", "--capacity", "--policies", "--json");
        assertThat(run("bench", "routing", "--help").out()).contains("--trace", "--shards", "--window", "--json");
        assertThat(run("bench", "cache", "--version").out()).contains("pikv 0.1.0");
        assertThat(run("gpu-check", "-V").out()).contains("pikv 0.1.0");
        // Bounds before anything is asked of a device (or said of its absence): exit 2, one sentence.
        Run huge = run("gpu-check", "--iterations", "2000000000");
        assertThat(huge.code()).isEqualTo(2);
        assertThat(huge.err()).contains("--iterations must be in [1, 100000], got 2000000000.");
        assertThat(run("gpu-check", "--contexts", "32768,2147483647").err())
                .contains("--contexts values must be token counts in [1, 4194304], got 2147483647.");
        assertThat(run("bench", "service", "--help").out()).contains("--context", "--shards", "--steps", "--warmup",
                "--shard-threads", "--json");
        assertThat(run("bench", "attention", "--help").out()).contains("--context", "--q-heads", "--kv-heads",
                "--head-dim", "--json");
    }

    @Test
    void usageErrorsAreOneSentenceAndExitTwo() {
        // Each case with what its sentence must say: refused for its own reason, not for another one.
        Object[][] cases = {
                {new String[] {}, "name a command: playground, bench or gpu-check"},
                {new String[] {"frobnicate"}, "unknown command or argument 'frobnicate' (see 'pikv --help')"},
                {new String[] {"bench", "nope"}, "unknown command or argument 'nope' (see 'pikv bench --help')"},
                {new String[] {"bench"}, "name a benchmark: attention, cache, compression, routing, service or operator"},
                {new String[] {"bench", "compression", "--methods", ","}, "--methods needs at least one value."},
                {new String[] {"gpu-check", "--contexts", ","}, "--contexts needs at least one value."},
                {new String[] {"gpu-check", "--contexts", "4096,4096"}, "--contexts names the context 4096 twice."},
                {new String[] {"bench", "attention", "--context", "many"}, "'--context': 'many' is not an int"},
                {new String[] {"bench", "cache", "--capacity", "10"}, "Missing required option: '--trace=FILE'"},
                {new String[] {"bench", "cache", "--trace", "/no/such/file.jsonl", "--capacity", "10"},
                        "trace file /no/such/file.jsonl does not exist or is not a file"},
                {new String[] {"bench", "attention", "--q-heads", "6", "--kv-heads", "4", "--no-numpy"},
                        "qHeads (6) must be a multiple of kvHeads (4)"},
                {new String[] {"bench", "attention", "--dtype", "int4", "--no-numpy"},
                        "unknown storage type 'int4': use fp32, fp16 or int8."},
                {new String[] {"bench", "routing", "--trace", "/no/such/file.jsonl", "--shards", "4"},
                        "trace file /no/such/file.jsonl does not exist or is not a file"},
                {new String[] {"bench", "routing", "--shards", "4"}, "Missing required option: '--trace=FILE'"},
                {new String[] {"bench", "service", "--shards", "0"}, "--shards must be in [1, 16], got 0."},
                {new String[] {"bench", "service", "--q-heads", "6", "--kv-heads", "4"},
                        "--q-heads 6 must be a multiple of --kv-heads 4."},
                {new String[] {"bench", "service", "--warmup", "-1"}, "--warmup must be in [0, 100000], got -1."},
                {new String[] {"bench", "service", "--steps", "2"}, "--steps must be in [3, 100000], got 2."},
                {new String[] {"bench", "service", "--shard-threads", "9"}, "--shard-threads must be in [1, 8] (a "
                        + "shard splits an attention over its 8 buckets, one thread each at most), got 9."},
                {new String[] {"bench", "service", "--top-k", "61"}, "--top-k must be in [1, 60] (at most the "
                        + "experts), got 61."},
                {new String[] {"bench", "operator", "--clusters", "0"}, "--clusters must be in [1, 2000], got 0."},
                {new String[] {"bench", "operator", "--rounds", "0"}, "--rounds must be in [1, 1000], got 0."},
                {new String[] {"bench", "operator", "--warmup", "100000"}, "--warmup must be in [0, 1000], got 100000."},
                {new String[] {"bench", "cache", "--trace", "pom.xml", "--capacity", "10", "--policies", "lru,clock"},
                        "unknown policy 'clock' in --policies; known: lru, streaming, h2o, utility, lrfu, adaptive."},
                {new String[] {"bench", "cache", "--trace", "pom.xml", "--capacity", "10", "--json",
                        "pom.xml/out.json"}, "'pom.xml/out.json' cannot be created"},
                {new String[] {"playground", "--shards", "0"}, "--shards must be in [1, 8]"},
                {new String[] {"playground", "--policy", "clock"}, "unknown --policy 'clock'; known: lru,"},
                {new String[] {"playground", "--budget-mib", "300"}, "--budget-mib in [1, 256]"},
                {new String[] {"playground", "--port", "-1"}, "--port in [0, 65535]"}};
        for (Object[] c : cases) {
            String[] args = (String[]) c[0];
            Run r = run(args);
            assertThat(r.code()).as(String.join(" ", args)).isEqualTo(2);
            assertThat(r.err().strip()).as(String.join(" ", args)).startsWith("pikv: ").doesNotContain("\n")
                    .doesNotContain("Exception").contains((String) c[1]);
        }
        assertThat(run("bench", "cache", "--trace", "pom.xml", "--capacity", "10", "--json", "pom.xml/out.json").err())
                .contains("is not a writable directory");
    }

    @Test
    void aTraceThatStartsWithAByteOrderMarkIsRead(@TempDir Path dir) throws Exception {
        Path trace = dir.resolve("bom.jsonl");
        Files.writeString(trace, "\uFEFF{\"timestamp\": 0, \"input_length\": 1500, \"output_length\": 10, "
                + "\"hash_ids\": [0, 1, 2]}\n{\"timestamp\": 5, \"input_length\": 1600, \"output_length\": 10, "
                + "\"hash_ids\": [0, 1, 3]}\n");
        Run r = run("bench", "cache", "--trace", trace.toString(), "--capacity", "4", "--json",
                dir.resolve("out.json").toString());
        assertThat(r.code()).as(r.err()).isZero();
        assertThat(new ObjectMapper().readTree(dir.resolve("out.json").toFile()).get("lookups").asInt()).isEqualTo(6);
    }

    @Test
    void thePlaygroundRunsACluster() throws Exception {
        // Run until it has shown what is checked below (on a loaded machine that takes a varying time), then stopped
        // as a signal stops it; --duration caps it should it never get there.
        StringWriter outText = new StringWriter();
        StringWriter errText = new StringWriter();
        java.util.concurrent.CompletableFuture<Integer> running = java.util.concurrent.CompletableFuture.supplyAsync(
                () -> Main.run(new String[] {"playground", "--port", "0", "--duration", "180", "--steps-per-second",
                        "200"}, new PrintWriter(outText, true), new PrintWriter(errText, true)));
        org.awaitility.Awaitility.await().atMost(java.time.Duration.ofSeconds(200)).pollInterval(
                java.time.Duration.ofSeconds(1)).until(() -> running.isDone() || playgroundShown(outText.toString()));
        boolean stopped = Playground.stopRunning();
        Run r = new Run(running.get(120, java.util.concurrent.TimeUnit.SECONDS), outText.toString(), errText.toString());
        assertThat(r.code()).as(r.err()).isZero();
        assertThat(stopped).as("stopped once shown, not by --duration:\n" + r.out()).isTrue();
        assertThat(r.out()).contains("PiKV playground (cluster 'playground/playground')", "  gateway  http://127.0.0.1:",
                "  shard-0  http://127.0.0.1:", "  shard-1  http://127.0.0.1:", "1 MiB of KV pages, policy h2o",
                "curl -s http://127.0.0.1:", "demo: sequence ", "playground: stopping");
        assertThat(Playground.stopRunning()).as("none runs any more").isFalse();
        // The demo outgrew the budgets within the run: some window of some shard evicted.
        assertThat(r.out().lines().filter(l -> l.contains(" telemetry: shard "))
                .anyMatch(l -> l.matches(".* hits, [1-9][0-9,]* evicted, .*"))).as(r.out()).isTrue();
        // The operator reconciled the playground's PiKVCluster in the mock API server, up to Ready.
        assertThat(r.out()).contains("operator: PiKVCluster playground/playground created in the mock API server",
                "operator: status: Ready=True (AllShardsReady), Progressing=False (Stable), Degraded=False "
                        + "(SpecValid); 2/2 shards ready");
        // Both shards published telemetry of the demo's steps: lookups counted in some window of each.
        for (int shard = 0; shard < 2; shard++) {
            String prefix = " telemetry: shard " + shard + ": ";
            assertThat(r.out().lines().filter(l -> l.contains(prefix)).anyMatch(l -> !l.contains(prefix + "0 lookups")))
                    .as("shard %d saw lookups", shard).isTrue();
        }
        // A port something holds (here the test) is refused in a sentence, before anything starts.
        try (java.net.ServerSocket held = new java.net.ServerSocket(0, 1, java.net.InetAddress.getLoopbackAddress())) {
            Run second = run("playground", "--port", String.valueOf(held.getLocalPort()));
            assertThat(second.code()).isEqualTo(2);
            assertThat(second.err()).contains("port " + held.getLocalPort() + " on 127.0.0.1 cannot be bound (",
                    "another playground?", "pass --port 0 for a free one.");
        }
    }

    /** The playground's output holds what {@link #thePlaygroundRunsACluster} checks of a running cluster. */
    private static boolean playgroundShown(String out) {
        boolean evicted = out.lines().filter(l -> l.contains(" telemetry: shard "))
                .anyMatch(l -> l.matches(".* hits, [1-9][0-9,]* evicted, .*"));
        boolean ready = out.contains("operator: status: Ready=True (AllShardsReady)");
        boolean bothLooked = true;
        for (int shard = 0; shard < 2; shard++) {
            String prefix = " telemetry: shard " + shard + ": ";
            bothLooked &= out.lines().filter(l -> l.contains(prefix)).anyMatch(l -> !l.contains(prefix + "0 lookups"));
        }
        return evicted && ready && bothLooked;
    }

    @Test
    void operatorBenchReportsReconcileLatencies(@TempDir Path dir) throws Exception {
        Path built = SidecarProcess.projectRoot().resolve("operator/target/test-classpath.txt");
        assertThat(built).as("the operator module's test class path (the reactor builds it before this module; run"
                + " this module with -am)").isRegularFile();
        Path json = dir.resolve("operator.json");
        Run r = run("bench", "operator", "--clusters", "3", "--rounds", "1", "--warmup", "0", "--json",
                json.toString());
        assertThat(r.code()).as(r.err()).isZero();
        assertThat(r.out()).contains("p50_ms", "p99_ms", "reconcile_p99_ms");
        JsonNode n = new ObjectMapper().readTree(json.toFile());
        assertThat(n.get("clusters").asInt()).isEqualTo(3);
        assertThat(n.get("updates").asInt()).isEqualTo(3);
        assertThat(n.get("p50_ms").asDouble()).isPositive().isLessThanOrEqualTo(n.get("p99_ms").asDouble());
        assertThat(n.get("reconciles").asInt()).isGreaterThanOrEqualTo(3);
    }

    @Test
    void thePlaygroundKeepsTheLogsOfItsLatestRunsOnly(@TempDir Path target) throws Exception {
        for (int i = 0; i < 7; i++) {
            Path d = Files.createDirectories(target.resolve("playground-" + i));
            Files.writeString(d.resolve("shard-0.log"), "run " + i);
            Files.setLastModifiedTime(d, java.nio.file.attribute.FileTime.fromMillis(1_000_000L * (i + 1)));
        }
        Files.createDirectories(target.resolve("bench-service-1"));
        Files.writeString(target.resolve("playground-notes.txt"), "a file, not a run's directory");
        // playground-1 is a run still going (a long one: its directory's time is old); playground-2's run ended.
        var running = Playground.holdLogs(target.resolve("playground-1"));
        Playground.release(Playground.holdLogs(target.resolve("playground-2")));
        for (int i = 1; i <= 2; i++) {
            Files.setLastModifiedTime(target.resolve("playground-" + i),
                    java.nio.file.attribute.FileTime.fromMillis(1_000_000L * (i + 1)));
        }
        try {
            assertThat(running).isNotNull();
            assertThat(Playground.running(target.resolve("playground-1"))).isTrue();
            assertThat(Playground.running(target.resolve("playground-2"))).isFalse();
            Playground.pruneOldLogs(target, 4);
        } finally {
            Playground.release(running);
        }
        try (var left = Files.list(target)) {
            assertThat(left.map(p -> p.getFileName().toString())).containsExactlyInAnyOrder("playground-1",
                    "playground-3", "playground-4", "playground-5", "playground-6", "bench-service-1",
                    "playground-notes.txt");
        }
        assertThat(Files.readString(target.resolve("playground-6/shard-0.log"))).isEqualTo("run 6");
        assertThat(Files.readString(target.resolve("playground-1/shard-0.log"))).isEqualTo("run 1");
    }

    @Test
    void childrenThatIgnoreTheStopSignalAreKilledAfterOneSharedWait() throws Exception {
        // Three hung children (SIGTERM ignored): one grace period for all, not one each.
        java.util.List<Process> hung = new java.util.ArrayList<>();
        try {
            for (int i = 0; i < 3; i++) {
                hung.add(new ProcessBuilder("sh", "-c", "trap '' TERM; echo up; exec sleep 60").start());
            }
            for (Process p : hung) {
                assertThat(new String(p.getInputStream().readNBytes(3), java.nio.charset.StandardCharsets.UTF_8))
                        .isEqualTo("up\n"); // the trap is set
            }
            long start = System.nanoTime();
            SidecarProcess.stop(hung, java.util.concurrent.TimeUnit.SECONDS.toNanos(2));
            double seconds = (System.nanoTime() - start) / 1e9;
            assertThat(hung).noneMatch(Process::isAlive);
            // One grace period for all is 2 s and the kills; one each would be 6 s.
            assertThat(seconds).as("one 2 s grace period, then kills").isBetween(1.9, 5.5);
        } finally {
            hung.forEach(Process::destroyForcibly); // whatever failed above, no child outlives the test
        }
    }

    /** A command that runs out of heap (picocli hands Errors on) is one sentence and exit 1, not a stack trace. */
    @picocli.CommandLine.Command(name = "hungry")
    static final class Hungry implements Runnable {
        @Override
        public void run() {
            throw new OutOfMemoryError("Java heap space");
        }
    }

    @Test
    void aCommandOutOfMemoryIsOneSentenceAndExitOne() {
        StringWriter out = new StringWriter();
        StringWriter err = new StringWriter();
        int code = Main.execute(new picocli.CommandLine(new Hungry()), new String[0], new PrintWriter(out, true),
                new PrintWriter(err, true));
        assertThat(code).isEqualTo(1);
        assertThat(err.toString().strip()).isEqualTo("pikv: hungry ran out of memory (Java heap space): raise the "
                + "launcher's heap (PIKV_JAVA_OPTS=-Xmx…) or give it a smaller input.");
    }

    @Test
    void aChildThatFailsIsReportedInASentenceWithItsLogNotAStackTrace(@TempDir Path root) throws Exception {
        // A project whose operator build names a class path that does not exist: the child JVM cannot start.
        Files.createDirectories(root.resolve("sidecar/service"));
        Files.createDirectories(root.resolve("operator/target/test-classes"));
        Files.writeString(root.resolve("operator/target/test-classpath.txt"), "/no/such/operator.jar");
        String before = System.getProperty("pikv.root");
        System.setProperty("pikv.root", root.toString());
        try {
            // Not built at all: not a usage error (the arguments are fine), a run that cannot start: exit 1.
            Files.delete(root.resolve("operator/target/test-classpath.txt"));
            Run unbuilt = run("bench", "operator", "--clusters", "1", "--rounds", "1", "--warmup", "0");
            assertThat(unbuilt.code()).isEqualTo(1);
            assertThat(unbuilt.err().strip()).startsWith("pikv: the operator is not built (").endsWith(
                    "run ./mvnw -DskipTests package first.");
            Files.writeString(root.resolve("operator/target/test-classpath.txt"), "/no/such/operator.jar");
            Run r = run("bench", "operator", "--clusters", "1", "--rounds", "1", "--warmup", "0");
            assertThat(r.code()).isEqualTo(1);
            assertThat(r.err()).startsWith("pikv: the operator benchmark failed (exit 1; log ")
                    .contains("bench.log):", "ReconcileBench").doesNotContain("\tat io.pikv");
        } finally {
            if (before == null) {
                System.clearProperty("pikv.root");
            } else {
                System.setProperty("pikv.root", before);
            }
        }
    }

    @Test
    void routingBenchRejectsABadShardCount(@TempDir Path dir) throws Exception {
        Path trace = routingTrace(dir);
        String file = trace.toString();
        String[][] cases = {{"bench", "routing", "--trace", file, "--shards", "0"},
                {"bench", "routing", "--trace", file, "--shards", "2000000000"},
                {"bench", "routing", "--trace", file, "--shards", "2", "--experts", "30000", "--skip", "2"},
                {"bench", "routing", "--trace", file, "--shards", "2", "--window", "0"},
                {"bench", "routing", "--trace", file, "--shards", "2", "--skip", "-1"},
                {"bench", "routing", "--trace", file, "--shards", "5", "--skip", "2"},
                {"bench", "routing", "--trace", file, "--shards", "2", "--skip", "2", "--window", "2", "--json", file}};
        String[] reasons = {"--shards must be in [1, 4096], got 0.", "--shards must be in [1, 4096], got 2000000000.",
                "--experts must be at most 4096, got 30000.", "--window must be at least 1 token, got 0.",
                "--skip must not be negative, got -1.", "--shards 5 is more than the 4 experts",
                "the report would overwrite it"};
        for (int i = 0; i < cases.length; i++) {
            String[] args = cases[i];
            Run r = run(args);
            assertThat(r.code()).as(String.join(" ", args)).isEqualTo(2);
            assertThat(r.err().strip()).as(String.join(" ", args)).startsWith("pikv: ").doesNotContain("\n")
                    .doesNotContain("Exception").endsWith(".").contains(reasons[i]);
        }
        assertThat(run("bench", "routing", "--trace", file, "--shards", "0").err().strip())
                .isEqualTo("pikv: --shards must be in [1, 4096], got 0.");
        assertThat(run("bench", "routing", "--trace", file, "--shards", "5", "--skip", "2").err().strip())
                .isEqualTo("pikv: --shards 5 is more than the 4 experts: some shards would hold none.");
        assertThat(Files.readString(trace)).as("the trace, not overwritten by --json").startsWith("{\"type\": \"meta\"");
        assertThat(run("bench", "routing", "--trace", file, "--shards", "2", "--window", "5", "--skip", "2").err())
                .contains("fewer than two windows of 5");
        Path twoLayers = dir.resolve("two-layers.jsonl");
        Files.writeString(twoLayers, Files.readString(trace) + "{\"type\": \"route\", \"layer\": 12, "
                + "\"topk_ids\": [0, 1], \"topk_weights\": [0.5, 0.5]}\n");
        Run mixed = run("bench", "routing", "--trace", twoLayers.toString(), "--shards", "2", "--window", "2",
                "--skip", "2");
        assertThat(mixed.code()).isEqualTo(2);
        assertThat(mixed.err()).contains("line 10", "its layer 12 differs from layer 0");
        // The default skip is vLLM's warm-up; a log without it is refused, not read with its real tokens dropped.
        Run noWarmUp = run("bench", "routing", "--trace", file, "--shards", "2", "--window", "2");
        assertThat(noWarmUp.code()).isEqualTo(2);
        assertThat(noWarmUp.err().strip()).isEqualTo("pikv: trace file " + file + " does not start with vLLM's "
                + "8448-record warm-up (token_idx 0..8191, then 0..255): its route record 2 (line 3) has token_idx 0, "
                + "not 1; pass --skip 0, or the number of warm-up records it holds.");
        // Nor one whose warm-up runs on past the 8,448 records: the first kept record must start a forward pass.
        StringBuilder longer = new StringBuilder("{\"type\": \"meta\", \"top_k\": 2}\n");
        for (int i = 0; i < 8448 + 3; i++) {
            longer.append("{\"type\": \"route\", \"token_idx\": ").append(i < 8192 ? i : i - 8192)
                    .append(", \"layer\": 0, \"topk_ids\": [0, 2], \"topk_weights\": [0.5, 0.5]}\n");
        }
        Path longWarmUp = dir.resolve("long-warm-up.jsonl");
        Files.writeString(longWarmUp, longer.toString());
        Run tooLong = run("bench", "routing", "--trace", longWarmUp.toString(), "--shards", "2", "--window", "1");
        assertThat(tooLong.code()).isEqualTo(2);
        assertThat(tooLong.err().strip()).isEqualTo("pikv: trace file " + longWarmUp + ": its route record 8449 (line "
                + "8450), the first after vLLM's 8448-record warm-up, has token_idx 256, not 0 (a forward pass starts at"
                + " 0): the warm-up is longer here; pass --skip with the number of warm-up records it holds.");
        // A skip past the log's end says how many records it has.
        Run past = run("bench", "routing", "--trace", file, "--shards", "2", "--window", "2", "--skip", "100");
        assertThat(past.code()).isEqualTo(2);
        assertThat(past.err().strip()).isEqualTo("pikv: trace file " + file + " holds no route records after the "
                + "warm-up: it has 8 route records, --skip is 100.");
        // Empty top-k arrays are named as such.
        Path empty = dir.resolve("empty-topk.jsonl");
        Files.writeString(empty, "{\"type\": \"route\", \"topk_ids\": [], \"topk_weights\": []}\n");
        assertThat(run("bench", "routing", "--trace", empty.toString(), "--shards", "1", "--skip", "0").err())
                .contains("its \"topk_ids\" and \"topk_weights\" are empty");
    }

    /** A meta line, two warm-up records, then experts 0+1 and 2+3 firing in pairs for three windows of two tokens. */
    private static Path routingTrace(Path dir) throws Exception {
        StringBuilder b = new StringBuilder("{\"type\": \"meta\", \"top_k\": 2}\n");
        String route = "{\"type\": \"route\", \"req_id\": \"r1\", \"token_idx\": 0, \"layer\": 0, "
                + "\"topk_ids\": [%s], \"topk_weights\": [%s]}\n";
        b.append(String.format(route, "0, 2", "0.5, 0.5")).append(String.format(route, "0, 2", "0.5, 0.5"));
        for (int w = 0; w < 3; w++) {
            b.append(String.format(route, "0, 1", "0.95, 0.05")).append(String.format(route, "2, 3", "0.6, 0.4"));
        }
        Path trace = dir.resolve("routing.jsonl");
        Files.writeString(trace, b.toString());
        return trace;
    }

    @Test
    void routingBenchReportsExactFigures(@TempDir Path dir) throws Exception {
        Path json = dir.resolve("routing.json");
        Run r = run("bench", "routing", "--trace", routingTrace(dir).toString(), "--shards", "2", "--window", "2",
                "--skip", "2", "--max-moved", "0.5", "--json", json.toString());
        assertThat(r.code()).as(r.err()).isZero();
        assertThat(r.out()).contains("fanout_cache_aware", "per_window");
        JsonNode n = new ObjectMapper().readTree(json.toFile());
        assertThat(n.get("shards").asInt()).isEqualTo(2);
        assertThat(n.get("experts").asInt()).isEqualTo(4);
        assertThat(n.get("tokens").asInt()).isEqualTo(6);
        assertThat(n.get("windows").asInt()).isEqualTo(3);
        // Round-robin splits both pairs; the plan after the first window joins them with one swap (2 of 4 experts).
        assertThat(n.get("fanout_hash").asDouble()).isEqualTo(2.0);
        assertThat(n.get("fanout_planned").asDouble()).isEqualTo(1.0);
        assertThat(n.get("fanout_cache_aware").asDouble()).isEqualTo(1.0);
        assertThat(n.get("gate_mass_moved").asDouble()).isZero();
        assertThat(n.get("moved_fraction_max").asDouble()).isEqualTo(0.5);
        assertThat(n.get("round_robin_max_over_mean_p95").asDouble()).isEqualTo(1.0);
        assertThat(n.get("planned_max_over_mean_p95").asDouble()).isEqualTo(1.0);
        // In the first window, on round-robin, expert 1 (0.05 of its token) would open a second shard and is dropped.
        JsonNode first = n.get("per_window").get(0);
        assertThat(first.get("fanout_cache_aware").asDouble()).isEqualTo(1.5);
        assertThat(first.get("gate_mass_moved").asDouble()).isEqualTo(0.025);
        assertThat(n.get("per_window").get(1).get("moved").asInt()).isEqualTo(2);
        // A setting with more digits than the table gives its figures: printed as given, as the JSON has it.
        Path exact = dir.resolve("exact.json");
        Run given = run("bench", "routing", "--trace", routingTrace(dir).toString(), "--shards", "2", "--window", "2",
                "--skip", "2", "--lambda", "0.123456789", "--json", exact.toString());
        assertThat(given.code()).as(given.err()).isZero();
        assertThat(new ObjectMapper().readTree(exact.toFile()).get("lambda").asText()).isEqualTo("0.123456789");
        assertThat(given.out()).containsPattern("lambda\\s+0\\.123456789\\b");
    }

    @Test
    void cacheBenchReportsExactHitRates(@TempDir Path dir) throws Exception {
        // Prefix chains 1-2-3, 1-2-4, 5-6-7, 1-2, 5-6-7-8, out of timestamp order on disk; 15 lookups.
        Path trace = dir.resolve("trace.jsonl");
        Files.writeString(trace, String.join("\n",
                "{\"timestamp\": 30, \"input_length\": 1024, \"output_length\": 1, \"hash_ids\": [1, 2]}",
                "{\"timestamp\": 0, \"input_length\": 1536, \"output_length\": 1, \"hash_ids\": [1, 2, 3]}",
                "{\"timestamp\": 10, \"input_length\": 1536, \"output_length\": 1, \"hash_ids\": [1, 2, 4]}",
                "{\"timestamp\": 20, \"input_length\": 1536, \"output_length\": 1, \"hash_ids\": [5, 6, 7]}",
                "{\"timestamp\": 40, \"input_length\": 2048, \"output_length\": 1, \"hash_ids\": [5, 6, 7, 8]}", ""));
        Path json = dir.resolve("out/cache.json");
        Run r = run("bench", "cache", "--trace", trace.toString(), "--capacity", "2,8", "--policies", "lru",
                "--json", json.toString());
        assertThat(r.code()).as(r.err()).isZero();
        assertThat(r.out()).contains("policy", "capacity", "hit_rate", "ratio_to_belady", "belady");
        JsonNode n = new ObjectMapper().readTree(json.toFile());
        assertThat(n.get("lookups").asLong()).isEqualTo(15);
        JsonNode results = n.get("results");
        assertThat(results).hasSize(4);
        // Capacity 2. LRU: the two blocks in use fill the cache, so only 1-2-4 reuses anything (1, 2): 2 hits; 5-6-7
        // and 1-2 then evict each other's blocks. Belady keeps 1 and 2 for 1-2-4 and 1-2: 4 hits.
        assertRow(results.get(0), "lru", 2, 2 / 15.0, 0.5);
        assertRow(results.get(1), "belady", 2, 4 / 15.0, 1.0);
        // Capacity 8 holds every block: 2 + 0 + 2 + 3 = 7 hits for both.
        assertRow(results.get(2), "lru", 8, 7 / 15.0, 1.0);
        assertRow(results.get(3), "belady", 8, 7 / 15.0, 1.0);

        // An id after two different parents is not a prefix-block hash: refused with both lines.
        Path broken = dir.resolve("broken.jsonl");
        Files.writeString(broken, "{\"timestamp\": 0, \"hash_ids\": [1, 2, 3]}\n"
                + "{\"timestamp\": 1, \"hash_ids\": [5, 2, 3]}\n");
        Run refused = run("bench", "cache", "--trace", broken.toString(), "--capacity", "2");
        assertThat(refused.code()).isEqualTo(2);
        assertThat(refused.err()).contains("line 2", "hash_ids[1] = 2 follows block 5 here but followed block 1 on line 1");
        // An id twice in one request is said as such, also where an earlier request chained it.
        Path repeated = dir.resolve("repeated.jsonl");
        Files.writeString(repeated, "{\"timestamp\": 0, \"hash_ids\": [1, 2]}\n"
                + "{\"timestamp\": 1, \"hash_ids\": [1, 2, 3, 2]}\n");
        Run twice = run("bench", "cache", "--trace", repeated.toString(), "--capacity", "2");
        assertThat(twice.code()).isEqualTo(2);
        assertThat(twice.err()).contains("line 2", "hash_ids[3] = 2 repeats hash_ids[1] of the same request");

        Path all = dir.resolve("all.json");
        assertThat(run("bench", "cache", "--trace", trace.toString(), "--capacity", "3", "--json", all.toString())
                .code()).isZero();
        JsonNode every = new ObjectMapper().readTree(all.toFile());
        assertThat(every.get("results").findValuesAsText("policy")).containsExactly("lru", "streaming", "h2o",
                "utility", "lrfu", "adaptive", "belady");
        assertThat(every.get("adaptive").get(0).get("active").asText()).isEqualTo("lru");
    }

    private static void assertRow(JsonNode row, String policy, int capacity, double hitRate, double ratio) {
        assertThat(row.get("policy").asText()).isEqualTo(policy);
        assertThat(row.get("capacity").asInt()).isEqualTo(capacity);
        assertThat(row.get("hit_rate").asDouble()).isCloseTo(hitRate, org.assertj.core.data.Offset.offset(1e-5));
        assertThat(row.get("ratio_to_belady").asDouble()).isEqualTo(ratio);
    }

    @Test
    void emptyListsAndAJsonFileThatIsTheInputAreRefusedBeforeAnyWork(@TempDir Path dir) throws Exception {
        Path trace = dir.resolve("trace.jsonl");
        String text = "{\"timestamp\": 0, \"hash_ids\": [1, 2]}\n{\"timestamp\": 1, \"hash_ids\": [1, 2]}\n";
        Files.writeString(trace, text);
        String file = trace.toString();
        Run capacity = run("bench", "cache", "--trace", file, "--capacity", ",");
        assertThat(capacity.code()).isEqualTo(2);
        assertThat(capacity.err().strip()).isEqualTo("pikv: --capacity needs at least one value.");
        Run policies = run("bench", "cache", "--trace", file, "--capacity", "4", "--policies", ",");
        assertThat(policies.code()).isEqualTo(2);
        assertThat(policies.err().strip()).isEqualTo("pikv: --policies needs at least one value.");
        Run overwrite = run("bench", "cache", "--trace", file, "--capacity", "4", "--json", file);
        assertThat(overwrite.code()).isEqualTo(2);
        assertThat(overwrite.err()).contains("the report would overwrite it");
        assertThat(Files.readString(trace)).isEqualTo(text);
        assertThat(run("bench", "cache", "--trace", file, "--capacity", "4", "--policies", "belady").err())
                .contains("belady is always reported");
    }

    @Test
    void malformedTraceLinesAreNamed(@TempDir Path dir) throws Exception {
        Path trace = dir.resolve("bad.jsonl");
        // A timestamp beyond 64 bits would wrap and put its request out of order.
        Files.writeString(trace, "{\"timestamp\": 10000000000000000000, \"hash_ids\": [1]}\n");
        Run huge = run("bench", "cache", "--trace", trace.toString(), "--capacity", "4");
        assertThat(huge.code()).isEqualTo(2);
        assertThat(huge.err()).contains("line 1 of " + trace, "is beyond a 64-bit millisecond count");
        Files.writeString(trace, "{\"timestamp\": 0, \"hash_ids\": [1]}\n{\"timestamp\": 1}\n");
        Run r = run("bench", "cache", "--trace", trace.toString(), "--capacity", "4");
        assertThat(r.code()).isEqualTo(2);
        assertThat(r.err()).contains("line 2 of " + trace + " is not a Mooncake request");
        // Something after the JSON value on a line.
        Files.writeString(trace, "{\"timestamp\": 0, \"hash_ids\": [1]} {\"x\": 1}\n");
        r = run("bench", "cache", "--trace", trace.toString(), "--capacity", "4");
        assertThat(r.code()).isEqualTo(2);
        assertThat(r.err()).contains("line 1 of " + trace + " is not a Mooncake request");
        // A block id with a fraction (it used to be read as 1).
        Files.writeString(trace, "{\"timestamp\": 0, \"hash_ids\": [1.5]}\n");
        r = run("bench", "cache", "--trace", trace.toString(), "--capacity", "4");
        assertThat(r.code()).isEqualTo(2);
        assertThat(r.err()).contains("hash_ids[0] is not an integer");
        // 2^63 as a double: Jackson converts it to a long, saturated at 2^63 - 1.
        Files.writeString(trace, "{\"timestamp\": 9223372036854775808.0, \"hash_ids\": [1]}\n");
        r = run("bench", "cache", "--trace", trace.toString(), "--capacity", "4");
        assertThat(r.code()).isEqualTo(2);
        assertThat(r.err()).contains("line 1 of " + trace, "is beyond a 64-bit millisecond count");
        // Ids are signed or unsigned 64-bit integers: 2^64 is neither, and a mix of both kinds is refused.
        Files.writeString(trace, "{\"timestamp\": 0, \"hash_ids\": [18446744073709551616]}\n");
        r = run("bench", "cache", "--trace", trace.toString(), "--capacity", "4");
        assertThat(r.code()).isEqualTo(2);
        assertThat(r.err()).contains("hash_ids[0] = 18446744073709551616 is outside the 64-bit range (-2^63 to "
                + "18446744073709551615)");
        Files.writeString(trace, "{\"timestamp\": 0, \"hash_ids\": [-5]}\n"
                + "{\"timestamp\": 1, \"hash_ids\": [18446744073709551615]}\n");
        r = run("bench", "cache", "--trace", trace.toString(), "--capacity", "4");
        assertThat(r.code()).isEqualTo(2);
        assertThat(r.err()).contains("line 2 of " + trace, "negative ids (line 1) and ids of 2^63 or more (line 2)");
        // An unsigned id that breaks the chain is named as the file writes it, as its parents are.
        Files.writeString(trace, "{\"timestamp\": 0, \"hash_ids\": [18446744073709551615, 9223372036854775808]}\n"
                + "{\"timestamp\": 1, \"hash_ids\": [18446744073709551614, 9223372036854775808]}\n");
        r = run("bench", "cache", "--trace", trace.toString(), "--capacity", "4");
        assertThat(r.code()).isEqualTo(2);
        assertThat(r.err()).contains("hash_ids[1] = 9223372036854775808 follows block 18446744073709551614 here but "
                + "followed block 18446744073709551615 on line 1");
        // Unsigned 64-bit hashes alone are replayed: a prompt, then its follow-up hitting both blocks.
        Files.writeString(trace, "{\"timestamp\": 0, \"hash_ids\": [18446744073709551615, 9223372036854775808]}\n"
                + "{\"timestamp\": 1, \"hash_ids\": [18446744073709551615, 9223372036854775808, 7]}\n");
        Path report = dir.resolve("unsigned.json");
        r = run("bench", "cache", "--trace", trace.toString(), "--capacity", "4", "--policies", "lru", "--json",
                report.toString());
        assertThat(r.code()).as(r.err()).isZero();
        JsonNode unsigned = new ObjectMapper().readTree(report.toFile());
        assertThat(unsigned.get("lookups").asInt()).isEqualTo(5);
        assertThat(unsigned.get("results").get(0).get("hit_rate").asDouble()).isEqualTo(0.4);
        // Routing records with an infinite weight, an expert id no replay could hold, or a fractional id.
        Path routes = dir.resolve("routes.jsonl");
        for (String record : new String[] {"{\"type\": \"route\", \"topk_ids\": [1, 2], \"topk_weights\": [1e400, 0.5]}",
                "{\"type\": \"route\", \"topk_ids\": [100000, 1], \"topk_weights\": [0.5, 0.5]}",
                "{\"type\": \"route\", \"topk_ids\": [3.9, 1], \"topk_weights\": [0.5, 0.5]}"}) {
            Files.writeString(routes, record + "\n");
            r = run("bench", "routing", "--trace", routes.toString(), "--shards", "2", "--skip", "0", "--window", "1");
            assertThat(r.code()).as(record).isEqualTo(2);
            assertThat(r.err()).as(record).contains("line 1 of " + routes + " is not a routing record: topk entry 0 is "
                    + "not an expert id in [0, 4096) with a positive finite weight");
        }
    }

    /** A routing log shaped like the shared Qwen one: meta line, the warm-up records, then {@code real} tokens. */
    private static Path routing(Path dir, int real) throws Exception {
        StringBuilder b = new StringBuilder("{\"type\": \"meta\", \"top_k\": 4}\n");
        for (int i = 0; i < QwenRoutingLog.WARM_UP_RECORDS; i++) {
            b.append("{\"type\": \"route\", \"token_idx\": ").append(i < 8192 ? i : i - 8192)
                    .append(", \"topk_ids\": [1, 2, 3, 4], \"topk_weights\": [0.4, 0.3, 0.2, 0.1]}\n");
        }
        for (int i = 0; i < real; i++) {
            b.append("{\"type\": \"route\", \"token_idx\": ").append(i).append(", \"topk_ids\": [").append(i % 60)
                    .append(", ").append((i + 7) % 60).append(", ").append((i + 13) % 60).append(", ")
                    .append((i + 29) % 60).append("], \"topk_weights\": [0.4, 0.3, 0.2, 0.1]}\n");
        }
        Path file = dir.resolve("route.jsonl");
        Files.writeString(file, b);
        return file;
    }

    private static String fixture(String name) throws Exception {
        return Path.of(LauncherTest.class.getResource("/compression/" + name).toURI()).toString();
    }

    private static JsonNode method(JsonNode report, String name, String scope) {
        for (JsonNode m : report.get("methods")) {
            if (m.get("name").asText().equals(name) && m.get("scope").asText().equals(scope)) {
                return m;
            }
        }
        throw new AssertionError("no method " + name + " " + scope + " in " + report.get("methods"));
    }

    /**
     * The .npy fixtures were written by NumPy: k.npy [64, 2, 16] float16 with an outlier channel, v.npy float32,
     * q.npy [4, 4, 16] float32 (see docs/compression.md). NumPy's exact attention against attention over the values
     * rounded to fp16 gives a mean relative error of 1.5308e-4 over the last two queries, which the fp16 store must
     * reproduce; page bytes are exact.
     */
    @Test
    void compressionBenchOnSuppliedTensors(@TempDir Path dir) throws Exception {
        Path json = dir.resolve("compression.json");
        Run r = run("bench", "compression", "--keys", fixture("k.npy"), "--values", fixture("v.npy"), "--queries",
                fixture("q.npy"), "--routing", routing(dir, 100).toString(), "--key-rank", "8", "--value-rank", "8",
                "--sinks", "2", "--window", "8", "--budget", "0.5", "--json", json.toString());
        assertThat(r.code()).as(r.err()).isZero();
        assertThat(r.out()).contains("memory_ratio", "rel_error", "pyramid+lowrank+int8");
        JsonNode n = new ObjectMapper().readTree(json.toFile());
        assertThat(n.get("calibration").asText()).isEqualTo("in_sample");
        assertThat(n.get("methods")).hasSize(16);
        JsonNode fp16 = method(n, "fp16", "all");
        assertThat(fp16.get("memory_ratio").asDouble()).isEqualTo(1.0);
        assertThat(fp16.get("bytes").asLong()).isEqualTo(2 * (2 * 2 * 16 * 32 * 2));
        assertThat(fp16.get("rel_error").asDouble()).isCloseTo(1.5308e-4, org.assertj.core.data.Offset.offset(1e-6));
        // int8 pages: 2 × 2·16·32 bytes + float scales 2 × (16 + 32) per page: 8192 / 4864.
        assertThat(method(n, "int8", "all").get("memory_ratio").asDouble()).isEqualTo(1.684);
        assertThat(method(n, "pyramid", "all").get("visited").asDouble()).isEqualTo(0.5);
        assertThat(method(n, "lowrank", "all").get("bases_bytes").asLong()).isEqualTo(2L * ((1 + 8) + (1 + 8)) * 16 * 4);
        assertThat(method(n, "fp16", "experts").get("visited").asDouble()).isLessThan(1);
        assertThat(n.get("per_layer")).hasSize(1);
    }

    @Test
    void compressionBenchOnGeneratedKv(@TempDir Path dir) throws Exception {
        Path json = dir.resolve("generated.json");
        Run r = run("bench", "compression", "--routing", routing(dir, 300).toString(), "--context", "96", "--layers",
                "2", "--q-heads", "4", "--kv-heads", "2", "--head-dim", "32", "--decode-queries", "2",
                "--calibration-tokens", "128", "--window", "8", "--sinks", "2", "--key-rank", "8", "--value-rank", "8",
                "--methods", "int8,pyramid+lowrank+int8", "--json", json.toString());
        assertThat(r.code()).as(r.err()).isZero();
        // Fewer calibration tokens than the rank: refused before fitting (such a basis reports keeping everything).
        Run few = run("bench", "compression", "--routing", routing(dir, 300).toString(), "--context", "96",
                "--layers", "2", "--q-heads", "4", "--kv-heads", "2", "--head-dim", "32", "--decode-queries", "2",
                "--calibration-tokens", "8", "--key-rank", "8", "--value-rank", "4", "--methods", "lowrank");
        assertThat(few.code()).as(few.err()).isEqualTo(2);
        assertThat(few.err()).contains("fitting bases of rank 8 needs more calibration tokens than that, got 8");
        JsonNode n = new ObjectMapper().readTree(json.toFile());
        assertThat(n.get("source").asText()).isEqualTo("generator");
        assertThat(n.get("calibration").asText()).isEqualTo("held_out");
        assertThat(n.get("methods")).hasSize(2 + 3); // fp16 is measured as the baseline, shown only in sparse mode
        assertThat(method(n, "fp16", "experts").get("memory_ratio").asDouble()).isEqualTo(1.0);
        // Within its scope the sparse mode is exact but for the pages' rounding: scoping costs the rest.
        assertThat(method(n, "fp16", "experts").get("rel_error_in_scope").asDouble()).isLessThan(0.005)
                .isLessThan(method(n, "fp16", "experts").get("rel_error").asDouble());
        assertThat(method(n, "int8", "all").get("rel_error").asDouble()).isBetween(0.0, 0.05);
        assertThat(n.get("per_layer")).hasSize(2);
        // PyramidKV schedule over 2 layers, average 24 of 96, minimum 10: 38 and 10.
        assertThat(n.get("pyramid_budgets").asText()).isEqualTo("38,10");
    }

    @Test
    void compressionBenchRejectsBadTensorsInOneSentence(@TempDir Path dir) throws Exception {
        String route = routing(dir, 50).toString();
        Path flat = dir.resolve("flat.npy");
        try (Npy.Writer w = new Npy.Writer(flat, false, 64, 32)) {
            for (int i = 0; i < 64 * 32; i++) {
                w.put(i, (short) 0);
            }
        }
        Path doubles = dir.resolve("f8.npy");
        Files.write(doubles, (new String(new byte[] {(byte) 0x93}, java.nio.charset.StandardCharsets.ISO_8859_1)
                + "NUMPY\u0001\u0000F\u0000{'descr': '<f8', 'fortran_order': False, 'shape': (1, 1, 1), }          \n")
                .getBytes(java.nio.charset.StandardCharsets.ISO_8859_1));
        Path badShape = dir.resolve("shape.npy");
        Files.write(badShape, (new String(new byte[] {(byte) 0x93}, java.nio.charset.StandardCharsets.ISO_8859_1)
                + "NUMPY\u0001\u0000F\u0000{'descr': '<f4', 'fortran_order': False, 'shape': (a, 1, 1), }          \n")
                .getBytes(java.nio.charset.StandardCharsets.ISO_8859_1));
        Path huge = dir.resolve("huge.npy"); // a shape whose element count wraps a long product to 0, and no data
        Files.write(huge, (new String(new byte[] {(byte) 0x93}, java.nio.charset.StandardCharsets.ISO_8859_1)
                + "NUMPY\u0001\u0000Q\u0000{'descr': '<f4', 'fortran_order': False, 'shape': (4194304, 2097152, 2097152), }\n")
                .getBytes(java.nio.charset.StandardCharsets.ISO_8859_1));
        Path shortHeader = dir.resolve("short.npy");
        Files.write(shortHeader, new byte[] {(byte) 0x93, 'N', 'U', 'M', 'P', 'Y', 2, 0, 16, 0});
        StringBuilder wide = new StringBuilder();
        for (int i = 0; i < QwenRoutingLog.WARM_UP_RECORDS + 4; i++) {
            wide.append("{\"type\": \"route\", \"token_idx\": ")
                    .append(i < 8192 ? i : i < QwenRoutingLog.WARM_UP_RECORDS ? i - 8192 : i - QwenRoutingLog.WARM_UP_RECORDS)
                    .append(", \"topk_ids\": [70, 1], \"topk_weights\": [0.5, 0.5]}\n");
        }
        Path wideRoute = dir.resolve("wide.jsonl");
        Files.writeString(wideRoute, wide);
        String k = fixture("k.npy");
        String v = fixture("v.npy");
        String q = fixture("q.npy");
        String[][] cases = {
                {"--keys", flat.toString(), "--values", v},
                {"--keys", k, "--values", flat.toString()},
                {"--keys", k, "--values", v, "--queries", flat.toString(), "--key-rank", "8", "--value-rank", "8"},
                {"--keys", k},
                {"--keys", doubles.toString(), "--values", v},
                {"--keys", dir.resolve("missing.npy").toString(), "--values", v},
                {"--keys", k, "--values", v, "--methods", "int4"},
                {"--keys", k, "--values", v, "--key-rank", "17"},
                {"--keys", k, "--values", v, "--key-rank", "16", "--value-rank", "16", "--methods", "lowrank"},
                {"--keys", k, "--values", v, "--budget", "0.1", "--key-rank", "8", "--value-rank", "8"},
                {"--keys", k, "--values", v, "--window", "100", "--budget", "1", "--key-rank", "8", "--value-rank", "8"},
                {"--keys", badShape.toString(), "--values", v},
                {"--keys", shortHeader.toString(), "--values", v},
                {"--keys", huge.toString(), "--values", huge.toString()},
                {"--keys", k, "--values", v, "--q-heads", "32"},
                {"--keys", k, "--values", v, "--queries", q, "--context", "64", "--seed", "3"}};
        // Each refused for its own reason, not for another one met first.
        String[] reasons = {"--keys must be [tokens, kv_heads, head_dim]", "--values must have the shape of --keys",
                "--queries must be [queries, q_heads, 16] with q_heads a multiple of 2", "--keys and --values go together",
                "holds '<f8', not float32 or float16", "missing.npy does not exist", "unknown method part 'int4'",
                "--key-rank and --value-rank must be at most the head dim, 16", "keep everything",
                "--budget 0.1 keeps 6 of 64 tokens, below --sinks + --window = 36",
                "--sinks + --window = 104 is more than the 64 tokens of the context (--keys): every pyramid layer keeps "
                        + "at least that many.",
                "has a shape that is not a list of sizes below 2^31", "has a truncated .npy header",
                "more than 2^31 - 1 elements",
                "--q-heads sets what --keys and --values give (shape, tokens, calibration); leave it out with supplied "
                        + "tensors",
                "--context, --seed set what --keys, --values and --queries give (shape, tokens, calibration, queries); "
                        + "leave them out"};
        assertThat(reasons).hasSameSizeAs(cases);
        for (int i = 0; i < cases.length; i++) {
            String[] c = cases[i];
            String[] args = new String[c.length + 4];
            args[0] = "bench";
            args[1] = "compression";
            args[2] = "--routing";
            args[3] = route;
            System.arraycopy(c, 0, args, 4, c.length);
            Run r = run(args);
            assertThat(r.code()).as(String.join(" ", c)).isEqualTo(2);
            assertThat(r.err().strip()).as(String.join(" ", c)).startsWith("pikv: ").doesNotContain("\n")
                    .doesNotContain("Exception").contains(reasons[i]);
        }
        assertThat(run("bench", "compression", "--routing", route, "--keys", flat.toString(), "--values", v).err())
                .contains("has shape [64, 32]; --keys must be [tokens, kv_heads, head_dim]");
        assertThat(run("bench", "compression", "--routing", route, "--keys", doubles.toString(), "--values", v).err())
                .contains("holds '<f8', not float32 or float16");
        assertThat(run("bench", "compression", "--routing", route, "--keys", k, "--values", v, "--key-rank", "16",
                "--value-rank", "16", "--methods", "fp16,lowrank+int8").err()).contains("keep everything");
        assertThat(run("bench", "compression", "--routing", dir.resolve("none.jsonl").toString()).err())
                .contains("none.jsonl does not exist");
        Run wideRun = run("bench", "compression", "--routing", wideRoute.toString(), "--keys", k, "--values", v);
        assertThat(wideRun.code()).isEqualTo(2);
        assertThat(wideRun.err()).contains("routes to expert 70, but this bench models Qwen1.5-MoE's 60 experts");
        assertThat(run("bench", "compression", "--routing", route, "--keys", badShape.toString(), "--values", v).err())
                .contains("has a shape that is not a list of sizes below 2^31: (a, 1, 1)");
        assertThat(run("bench", "compression", "--routing", route, "--keys", huge.toString(), "--values",
                huge.toString()).err()).contains("more than 2^31 - 1 elements");
    }

    @Test
    void benchInputsOutOfRangeAreRefusedInOneSentence(@TempDir Path dir) throws Exception {
        String route = routing(dir, 50).toString();
        String k = fixture("k.npy");
        String v = fixture("v.npy");
        Path loud = dir.resolve("loud.npy"); // a key beyond fp16's range, which the fp16 baseline cannot store
        try (Npy.Writer w = new Npy.Writer(loud, false, 64, 2, 16)) {
            for (int i = 0; i < 64 * 2 * 16; i++) {
                w.put(i == 100 ? 70000f : 0.5f, (short) 0);
            }
        }
        Path bigEndian = dir.resolve("be.npy");
        Files.write(bigEndian, (new String(new byte[] {(byte) 0x93}, java.nio.charset.StandardCharsets.ISO_8859_1)
                + "NUMPY\u0001\u0000F\u0000{'descr': '>f4', 'fortran_order': False, 'shape': (1, 1, 1), }          \n")
                .getBytes(java.nio.charset.StandardCharsets.ISO_8859_1));
        Path narrow = dir.resolve("narrow.npy"); // head dim 6: int8 pages take multiples of 4
        try (Npy.Writer w = new Npy.Writer(narrow, false, 64, 2, 6)) {
            for (int i = 0; i < 64 * 2 * 6; i++) {
                w.put(0.5f, (short) 0);
            }
        }
        Path mixedTopK = dir.resolve("mixed.jsonl");
        Files.writeString(mixedTopK, "{\"type\": \"route\", \"topk_ids\": [1, 2], \"topk_weights\": [0.6, 0.4]}\n"
                + "{\"type\": \"route\", \"topk_ids\": [1, 2, 3], \"topk_weights\": [0.5, 0.3, 0.2]}\n");
        Path negative = dir.resolve("negative.jsonl");
        Files.writeString(negative, "{\"timestamp\": 0, \"input_length\": -5, \"hash_ids\": [1]}\n");
        Path empty = dir.resolve("empty.jsonl");
        Files.writeString(empty, "{\"timestamp\": 0, \"hash_ids\": []}\n{\"timestamp\": 1, \"hash_ids\": []}\n");
        Path twice = dir.resolve("twice.jsonl"); // a key given twice: not read as its last value
        Files.writeString(twice, "{\"timestamp\": 0, \"hash_ids\": [1, 2], \"hash_ids\": [9]}\n");
        Path fraction = dir.resolve("fraction.jsonl");
        Files.writeString(fraction, "{\"timestamp\": 0.9, \"hash_ids\": [1]}\n{\"timestamp\": 0.1, \"hash_ids\": [2]}\n");
        Path joined = dir.resolve("joined.jsonl"); // two logs run together: the second's header mid-file
        String route1 = "{\"type\": \"route\", \"layer\": 1, \"topk_ids\": [1, 2], \"topk_weights\": [0.6, 0.4]}\n";
        Files.writeString(joined, "{\"type\": \"meta\"}\n" + route1.repeat(3) + "{\"type\": \"meta\"}\n"
                + route1.repeat(3));
        Path halfLayer = dir.resolve("half-layer.jsonl");
        Files.writeString(halfLayer, route1.repeat(3) + route1.replace("\"layer\": 1", "\"layer\": 1.5"));
        Path binary = dir.resolve("binary.jsonl");
        Files.write(binary, new byte[] {'{', '}', '\n', (byte) 0xC3, (byte) 0x28, '\n'});
        String[][] cases = {
                {"compression", "--routing", route, "--keys", loud.toString(), "--values", v},
                {"compression", "--routing", route, "--keys", bigEndian.toString(), "--values", v},
                {"compression", "--routing", route, "--keys", "/dev/zero", "--values", v},
                {"compression", "--routing", route, "--keys", dir.toString(), "--values", v},
                {"compression", "--routing", route, "--keys", k, "--values", v, "--methods", "lowrank+lowrank-expert"},
                {"compression", "--routing", route, "--keys", k, "--values", v, "--methods", "int8+"},
                {"compression", "--routing", route, "--keys", k, "--values", v, "--methods", "int8+int8"},
                {"compression", "--routing", route, "--keys", k, "--values", v, "--skip", "-1"},
                {"compression", "--routing", mixedTopK.toString(), "--skip", "0", "--keys", k, "--values", v},
                {"compression", "--routing", route, "--context", "1048576", "--layers", "256"},
                {"compression", "--routing", route, "--keys", k, "--values", v, "--page-tokens", "48"},
                {"compression", "--routing", route, "--keys", k, "--values", v, "--pyramid-policy", "fifo"},
                {"compression", "--routing", route, "--keys", narrow.toString(), "--values", narrow.toString(),
                    "--methods", "int8"},
                {"compression", "--routing", route, "--keys", k, "--values", v, "--methods", "pyramid", "--beta",
                    "Infinity"},
                {"compression", "--routing", route, "--keys", k, "--values", v, "--methods", "lowrank+int8",
                    "--key-rank", "6", "--value-rank", "8"},
                {"cache", "--trace", negative.toString(), "--capacity", "4"},
                {"cache", "--trace", empty.toString(), "--capacity", "4"},
                {"cache", "--trace", binary.toString(), "--capacity", "4"},
                {"cache", "--trace", twice.toString(), "--capacity", "4"},
                {"cache", "--trace", fraction.toString(), "--capacity", "4"},
                {"routing", "--trace", joined.toString(), "--shards", "2", "--skip", "0"},
                {"routing", "--trace", halfLayer.toString(), "--shards", "2", "--skip", "0"},
                {"cache", "--trace", binary.toString(), "--capacity", "4,4"},
                {"cache", "--trace", binary.toString(), "--capacity", "4", "--policies", "lru,lrfu,lru"},
                {"routing", "--trace", route, "--shards", "2", "--max-moved", "2"},
                {"routing", "--trace", route, "--shards", "2", "--null-ratio", "1"},
                {"routing", "--trace", route, "--shards", "2", "--lambda", "NaN"},
                {"compression", "--routing", route, "--keys", k, "--values", v, "--methods",
                    "int8+pyramid,pyramid+int8"},
                {"compression", "--routing", route, "--context", "16", "--window", "64", "--methods", "int8"}};
        String[] expected = {
                "--keys holds 70000.0 at row 3, element 4, beyond ±65504.0, the range of fp16 pages.",
                "holds big-endian floats ('>f4'); save it little-endian, e.g. with a.astype('<f4').",
                "/dev/zero is not a regular file.",
                "is a directory, not a .npy file.",
                "names two low-rank groupings; take lowrank or lowrank-expert.",
                "method 'int8+' has an empty part",
                "method 'int8+int8' names int8 twice.",
                "--skip must not be negative, got -1.",
                "line 2 of " + mixedTopK + " is not a routing record: it routes to 3 experts, the records before to 2",
                "of direct memory this JVM may use; use fewer --methods, a shorter --context or fewer --layers",
                "--page-tokens must be a power of two in [1, 1024], got 48.",
                "--pyramid-policy must be one of pyramidkv, h2o, streaming, lru; got 'fifo'.",
                "method int8 cannot store KV of 2 heads of dimension 6: ",
                "--budget must be in (0, 1] and --beta finite and at least 1.",
                "method lowrank+int8 cannot store ranks 6 and 8: int8 low-rank pages need headDim and both ranks to be "
                        + "multiples of 4, got 16, 6 and 8.",
                "is not a Mooncake request: its \"input_length\" is not a token count (an integer >= 0).",
                "holds no blocks: every request's hash_ids is empty.",
                "is not UTF-8 JSON-lines text: it holds bytes that are not UTF-8.",
                "it names a key twice (Duplicate field 'hash_ids')",
                "its \"timestamp\" 0.9 is not a whole number of milliseconds.",
                "it is a \"meta\" header after route records (two logs joined?); the replay takes one log.",
                "its \"layer\" 1.5 is not a layer number (an integer >= 0).",
                "--capacity names the capacity 4 twice.",
                "--policies names the policy lru twice.",
                "--max-moved must be a fraction in [0, 1], got 2.0.",
                "--null-ratio must be in [0, 1), got 1.0.",
                "--lambda must be a finite number >= 0, got NaN.",
                "--methods names the method pyramid+int8 twice.",
                "--window (64) must not exceed --context (16)."};
        for (int i = 0; i < cases.length; i++) {
            String[] args = new String[cases[i].length + 1];
            args[0] = "bench";
            System.arraycopy(cases[i], 0, args, 1, cases[i].length);
            Run r = run(args);
            assertThat(r.code()).as(String.join(" ", args)).isEqualTo(2);
            assertThat(r.err().strip()).as(String.join(" ", args)).startsWith("pikv: ").doesNotContain("\n")
                    .doesNotContain("Exception").contains(expected[i]);
        }
        // Ranks are the low-rank methods' only; a method spelt in another order is the row of its name; --skip reads a
        // log as it is.
        Path json = dir.resolve("int8.json");
        Run r = run("bench", "compression", "--routing", routing(dir, 200).toString(), "--keys", k, "--values", v,
                "--methods", "int8+pyramid,lowrank+fp16", "--key-rank", "8", "--value-rank", "8",
                "--sinks", "2", "--window", "8", "--json", json.toString());
        assertThat(r.code()).as(r.err()).isZero();
        JsonNode n = new ObjectMapper().readTree(json.toFile());
        assertThat(n.get("methods").findValuesAsText("name")).containsExactly("pyramid+int8", "lowrank", "fp16",
                "pyramid+int8", "lowrank");
        // CRLF line ends and whole timestamps written as floats (as Python writes them) read as any other.
        Path windows = dir.resolve("crlf.jsonl");
        Files.writeString(windows, "{\"timestamp\": 1000.0, \"hash_ids\": [1, 2]}\r\n"
                + "{\"timestamp\": 2e3, \"hash_ids\": [1, 2, 3]}\r\n");
        Path crlfJson = dir.resolve("crlf.json");
        Run crlf = run("bench", "cache", "--trace", windows.toString(), "--capacity", "8", "--json", crlfJson.toString());
        assertThat(crlf.code()).as(crlf.err()).isZero();
        assertThat(new ObjectMapper().readTree(crlfJson.toFile()).get("lookups").asLong()).isEqualTo(5);
        Run noRanks = run("bench", "compression", "--routing", route, "--keys", k, "--values", v, "--methods", "int8");
        assertThat(noRanks.code()).as(noRanks.err()).isZero(); // --value-rank 64 by default, head dim 16
        // Pages of 512 bytes (two heads of rank 2 + 2, fp16): each store's budget is what it holds, not a fixed one
        // of more pages than a shard can address.
        Run tiny = run("bench", "compression", "--routing", route, "--keys", k, "--values", v, "--methods", "lowrank",
                "--key-rank", "2", "--value-rank", "2");
        assertThat(tiny.code()).as(tiny.err()).isZero();
    }

    @Test
    void attentionBenchWritesItsFigures(@TempDir Path dir) throws Exception {
        Path json = dir.resolve("attention.json");
        Run r = run("bench", "attention", "--context", "300", "--q-heads", "8", "--kv-heads", "2", "--head-dim",
                "64", "--iterations", "2", "--no-numpy", "--json", json.toString());
        assertThat(r.code()).as(r.err()).isZero();
        JsonNode n = new ObjectMapper().readTree(json.toFile());
        for (String key : new String[] {"achieved_gbps", "stream_triad_gbps", "ratio_to_triad"}) {
            assertThat(n.get(key).asDouble()).as(key).isPositive();
            assertThat(r.out()).contains(key);
        }
        assertThat(n.get("kv_bytes").asLong()).isEqualTo(300L * 2 * 64 * 2 * 2);
        assertThat(n.has("numpy_gbps")).isTrue();
        assertThat(n.get("numpy_gbps").isNull()).isTrue();
        // Many workers (a host with hundreds of processors): the store's buckets stay within its 1,024.
        Run many = run("bench", "attention", "--context", "64", "--q-heads", "4", "--kv-heads", "1", "--head-dim",
                "16", "--threads", "512", "--iterations", "1", "--no-numpy");
        assertThat(many.code()).as(many.err()).isZero();
        // int8: K and V bytes, every token's value scale, and each page's key scales, over the pages the store holds:
        // 64 tokens over 64 buckets fill more than the two pages 64 tokens would.
        Run int8 = run("bench", "attention", "--dtype", "int8", "--context", "64", "--q-heads", "4", "--kv-heads", "1",
                "--head-dim", "16", "--threads", "16", "--iterations", "1", "--no-numpy", "--json",
                dir.resolve("int8.json").toString());
        assertThat(int8.code()).as(int8.err()).isZero();
        long scaleBytes = new ObjectMapper().readTree(dir.resolve("int8.json").toFile()).get("kv_bytes").asLong() - 64 * 16 * 2 - 64 * 4;
        assertThat(scaleBytes % (16 * 4)).isZero();
        assertThat(scaleBytes / (16 * 4)).as("pages").isGreaterThan(2).isLessThanOrEqualTo(64);
    }
}
