package io.pikv.cli;

import com.fasterxml.jackson.databind.ObjectMapper;
import io.pikv.api.events.CacheEvents;
import io.pikv.api.events.ExpertCounters;
import io.pikv.kv.ModelShape;
import io.pikv.sidecar.client.SidecarClient;
import io.pikv.sidecar.wire.Wire;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.StringDeserializer;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

import java.io.IOException;
import java.io.PrintWriter;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.time.Instant;
import java.time.ZoneId;
import java.time.format.DateTimeFormatter;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;
import java.util.concurrent.Callable;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicReference;
import java.util.concurrent.locks.LockSupport;

/**
 * {@code ./pikv playground}: a local PiKV cluster with everything embedded — a Kafka broker (KRaft) in this JVM,
 * shard sidecars and a gateway as child JVMs on loopback, a demo client stepping sequences through the gateway — and
 * each shard's telemetry printed as the broker receives it, until Ctrl-C or {@code --duration}.
 */
@Command(name = "playground", mixinStandardHelpOptions = true,
        description = "Start a local PiKV cluster, everything embedded: a Kafka broker (KRaft) in this JVM, shard "
                + "sidecars and a gateway as child JVMs on loopback, and a demo client stepping sequences through the "
                + "gateway; print each shard's telemetry as it arrives. Ctrl-C stops it.")
public final class Playground implements Callable<Integer> {

    @Option(names = "--shards", defaultValue = "2", description = "Shard sidecars (default ${DEFAULT-VALUE}).")
    int shards;

    @Option(names = "--port", defaultValue = "8080",
            description = "The gateway's port on 127.0.0.1; 0 picks a free one (default ${DEFAULT-VALUE}).")
    int port;

    @Option(names = "--budget-mib", defaultValue = "1",
            description = "KV page budget of each shard in MiB, at most 256: small, so that the demo fills it and the "
                    + "policy evicts (default ${DEFAULT-VALUE}).")
    int budgetMib;

    @Option(names = "--policy", defaultValue = "h2o",
            description = "The shards' eviction policy: lru, streaming, h2o, utility, lrfu, oldest-page or reject "
                    + "(default ${DEFAULT-VALUE}).")
    String policy;

    @Option(names = "--steps-per-second", defaultValue = "50",
            description = "Decode steps (one layer each) the demo client sends per second; 0: no demo traffic "
                    + "(default ${DEFAULT-VALUE}).")
    int stepsPerSecond;

    @Option(names = "--no-operator",
            description = "Do not run the operator (against a mock API server) beside the cluster.")
    boolean noOperator;

    @Option(names = "--duration", defaultValue = "0",
            description = "Seconds to run once started; 0: until Ctrl-C (default ${DEFAULT-VALUE}).")
    int durationSeconds;

    @picocli.CommandLine.Spec
    picocli.CommandLine.Model.CommandSpec spec;

    /** The sidecar's own default model: 2 layers, 8 query / 2 KV heads of 64, 8 experts, top-2. */
    static final ModelShape SHAPE = new ModelShape(2, 8, 2, 64, 8, 2);
    static final String CLUSTER = "playground";
    private static final int PAGE_TOKENS = 32;
    private static final DateTimeFormatter CLOCK = DateTimeFormatter.ofPattern("HH:mm:ss").withZone(ZoneId.systemDefault());

    @Override
    public Integer call() throws Exception {
        if (shards < 1 || shards > 8 || port < 0 || port > 65535 || budgetMib < 1 || budgetMib > 256
                || stepsPerSecond < 0 || stepsPerSecond > 10_000 || durationSeconds < 0) {
            throw new Main.UsageException("--shards must be in [1, 8], --port in [0, 65535], --budget-mib in [1, 256], "
                    + "--steps-per-second in [0, 10000] and --duration at least 0.");
        }
        if (!List.of("lru", "streaming", "h2o", "utility", "lrfu", "oldest-page", "reject").contains(policy)) {
            throw new Main.UsageException("unknown --policy '" + policy + "'; known: lru, streaming, h2o, utility, "
                    + "lrfu, oldest-page, reject.");
        }
        if (port != 0) {
            // Said before anything starts, rather than found in the gateway's log.
            try (ServerSocket probe = new ServerSocket(port, 1, InetAddress.getLoopbackAddress())) {
                probe.setReuseAddress(true);
            } catch (IOException e) {
                throw new Main.UsageException("port " + port + " on 127.0.0.1 is in use (another playground?): stop "
                        + "what holds it, or pass --port 0 for a free one.");
            }
        }
        Path root = SidecarProcess.projectRoot();
        Path jar = SidecarProcess.appJar(root);
        Files.createDirectories(root.resolve("src-test/target"));
        Path logs = Files.createTempDirectory(root.resolve("src-test/target"), "playground-");
        long budget = (long) budgetMib << 20;
        PrintWriter out = spec.commandLine().getOut();
        out.println("starting a Kafka broker, " + shards + " shard(s) and a gateway; logs in " + logs + " ...");
        out.flush();

        List<SidecarProcess> all = new ArrayList<>();
        Process operator = null;
        CountDownLatch stop = new CountDownLatch(1);
        Thread onSignal = new Thread(stop::countDown, "pikv-playground-stop");
        Runtime.getRuntime().addShutdownHook(onSignal);
        LocalKafka kafka = null;
        try {
            kafka = LocalKafka.start();
            Map<String, String> common = new HashMap<>();
            common.put("pikv.cluster", CLUSTER);
            common.put("kafka.bootstrap.servers", kafka.bootstrapServers());
            common.put("pikv.model.layers", String.valueOf(SHAPE.layers()));
            common.put("pikv.model.q-heads", String.valueOf(SHAPE.qHeads()));
            common.put("pikv.model.kv-heads", String.valueOf(SHAPE.kvHeads()));
            common.put("pikv.model.head-dim", String.valueOf(SHAPE.headDim()));
            common.put("pikv.model.experts", String.valueOf(SHAPE.experts()));
            common.put("pikv.model.top-k", String.valueOf(SHAPE.topK()));
            common.put("pikv.store.page-tokens", String.valueOf(PAGE_TOKENS));
            common.put("pikv.store.budget-bytes", String.valueOf(budget));
            common.put("quarkus.log.level", "WARN");
            common.put("quarkus.log.category.\"org.apache.kafka\".level", "ERROR");

            List<CompletableFuture<SidecarProcess>> starting = new ArrayList<>();
            for (int s = 0; s < shards; s++) {
                Map<String, String> settings = new HashMap<>(common);
                settings.put("pikv.role", "shard");
                settings.put("pikv.shard-id", String.valueOf(s));
                settings.put("pikv.store.eviction", policy);
                String name = "shard-" + s;
                starting.add(CompletableFuture.supplyAsync(() -> SidecarProcess.start(jar, name, settings, logs,
                        Duration.ofSeconds(180))));
            }
            List<String> urls = new ArrayList<>();
            RuntimeException failed = null;
            for (CompletableFuture<SidecarProcess> f : starting) {
                try {
                    SidecarProcess p = f.join();
                    all.add(p);
                    urls.add(p.uri().toString());
                } catch (java.util.concurrent.CompletionException e) {
                    failed = failed != null ? failed : e.getCause() instanceof RuntimeException r ? r : e;
                }
            }
            if (failed != null) {
                throw failed;
            }
            Map<String, String> g = new HashMap<>(common);
            g.put("pikv.role", "gateway");
            g.put("pikv.gateway.shards", String.join(",", urls));
            g.put("pikv.telemetry.enabled", "false"); // a gateway holds no KV: shards publish
            g.put("quarkus.http.port", String.valueOf(port));
            SidecarProcess gateway = SidecarProcess.start(jar, "gateway", g, logs, Duration.ofSeconds(180));
            all.add(gateway);

            printWelcome(out, gateway, all, kafka, logs, budget);
            if (!noOperator) {
                operator = startOperator(root, kafka, logs, budget, out);
            }
            AtomicReference<String> demoFailure = new AtomicReference<>();
            Thread demo = stepsPerSecond == 0 ? null : startDemo(gateway, budget, stop, demoFailure, out);
            Thread telemetry = startTelemetry(kafka, stop, out);
            long deadline = durationSeconds == 0 ? Long.MAX_VALUE : System.nanoTime()
                    + TimeUnit.SECONDS.toNanos(durationSeconds);
            String ended = null;
            while (ended == null) {
                if (stop.await(1, TimeUnit.SECONDS)) {
                    ended = "stopping";
                } else if (System.nanoTime() >= deadline) {
                    ended = "--duration " + durationSeconds + " s passed; stopping";
                }
                for (SidecarProcess p : all) {
                    if (!p.alive()) {
                        stop.countDown();
                        throw new Main.RunFailure("sidecar " + p.name() + " stopped (log " + p.log() + "):\n"
                                + p.tail());
                    }
                }
                if (operator != null && !operator.isAlive() && stop.getCount() > 0) {
                    stop.countDown();
                    throw new Main.RunFailure("the operator stopped (exit " + operator.exitValue() + "; log "
                            + logs.resolve("operator.log") + "):\n" + tail(logs.resolve("operator.log")));
                }
            }
            stop.countDown();
            for (Thread t : demo == null ? List.of(telemetry) : List.of(demo, telemetry)) {
                t.join(TimeUnit.SECONDS.toMillis(10));
            }
            out.println("playground: " + ended + (demoFailure.get() == null ? "" : " (the demo client last failed: "
                    + demoFailure.get() + ")"));
            out.flush();
            return 0;
        } finally {
            stop.countDown();
            if (operator != null) {
                stopOperator(operator);
            }
            for (SidecarProcess p : all) {
                p.close();
            }
            if (kafka != null) {
                kafka.close(); // after the sidecars: their clients would spend their last seconds retrying it
            }
            try {
                Runtime.getRuntime().removeShutdownHook(onSignal);
            } catch (IllegalStateException shuttingDown) {
                // Ctrl-C: the hooks are running
            }
        }
    }

    private void printWelcome(PrintWriter out, SidecarProcess gateway, List<SidecarProcess> all, LocalKafka kafka,
                              Path logs, long budget) {
        String g = gateway.uri().toString().replaceAll("/$", "");
        out.println();
        out.println("PiKV playground (cluster '" + CLUSTER + "')");
        out.println("  gateway  " + g + "   model: " + SHAPE.layers() + " layers, " + SHAPE.qHeads() + " query / "
                + SHAPE.kvHeads() + " KV heads of " + SHAPE.headDim() + ", " + SHAPE.experts() + " experts, top-"
                + SHAPE.topK());
        for (SidecarProcess p : all) {
            if (p != gateway) {
                out.println("  " + p.name() + "  " + p.uri().toString().replaceAll("/$", "") + "   " + (budget >> 20)
                        + " MiB of KV pages, policy " + policy);
            }
        }
        out.println("  kafka    " + kafka.bootstrapServers() + "   topics " + LocalKafka.TELEMETRY_TOPIC + " (telemetry), "
                + LocalKafka.CONTROL_TOPIC + " (control)");
        if (!noOperator) {
            out.println("  operator against a mock API server, reconciling PiKVCluster " + CLUSTER + "/" + CLUSTER
                    + " (its status below)");
        }
        out.println("  logs     " + logs);
        out.println("Try:");
        out.println("  curl -s " + g + "/v1/config");
        out.println("  curl -s " + g + "/v1/stats");
        out.println("  curl -s " + all.get(0).uri().toString().replaceAll("/$", "") + "/v1/stats");
        out.println("  curl -s " + g + "/v1/shard-map");
        out.println("  curl -s " + g + "/q/metrics | grep '^pikv_'");
        out.println("  curl -s " + g + "/q/openapi          (the whole API; docs/sidecar-api.md explains it)");
        out.println(stepsPerSecond == 0 ? "No demo traffic (--steps-per-second 0)." : "A demo client steps sequences "
                + "through the gateway, " + stepsPerSecond + " steps a second; each shard's telemetry follows, one line "
                + "per window.");
        out.println(durationSeconds == 0 ? "Ctrl-C stops everything." : "Stops after " + durationSeconds + " s.");
        out.println();
        out.flush();
    }

    /**
     * The operator against a mock API server in a child JVM (the operator module's test class path), given the
     * PiKVCluster of this playground; its lines are printed as they come, its errors go to {@code operator.log}.
     */
    private Process startOperator(Path root, LocalKafka kafka, Path logs, long budget, PrintWriter out)
            throws IOException {
        List<String> cmd = new ArrayList<>(List.of(Path.of(System.getProperty("java.home"), "bin", "java").toString(),
                "-Xmx512m", "-Djava.util.logging.manager=org.jboss.logmanager.LogManager", "-cp",
                OperatorBench.classpath(root), OPERATOR_MAIN,
                "--name", CLUSTER, "--shards", String.valueOf(shards), "--memory", (budget >> 20) + "Mi",
                "--policy", policy, "--kafka", kafka.bootstrapServers(), "--model", SHAPE.layers() + "," + SHAPE.qHeads()
                        + "," + SHAPE.kvHeads() + "," + SHAPE.headDim() + "," + SHAPE.experts() + "," + SHAPE.topK()));
        Process p = new ProcessBuilder(cmd).directory(root.toFile())
                .redirectError(logs.resolve("operator.log").toFile()).start();
        OPERATORS.add(p);
        Thread lines = new Thread(() -> {
            try (java.io.BufferedReader in = new java.io.BufferedReader(new java.io.InputStreamReader(
                    p.getInputStream(), java.nio.charset.StandardCharsets.UTF_8))) {
                String line;
                while ((line = in.readLine()) != null) {
                    synchronized (out) {
                        out.println(CLOCK.format(Instant.now()) + " operator: " + line);
                        out.flush();
                    }
                }
            } catch (IOException e) {
                // the operator stopped; the main loop says so
            }
        }, "pikv-playground-operator");
        lines.setDaemon(true);
        lines.start();
        return p;
    }

    static final String OPERATOR_MAIN = "io.pikv.operator.bench.PlaygroundOperator";

    /** Operators still running, ended by a shutdown hook if the JVM exits without stopping them (a signal). */
    private static final java.util.Set<Process> OPERATORS = java.util.concurrent.ConcurrentHashMap.newKeySet();

    static {
        Runtime.getRuntime().addShutdownHook(new Thread(() -> OPERATORS.forEach(Process::destroy),
                "pikv-playground-operator-stop"));
    }

    /** Closes the operator's standard input (it stops on that), then ends it if it has not within 10 s. */
    private static void stopOperator(Process p) {
        try {
            p.getOutputStream().close();
            if (!p.waitFor(10, TimeUnit.SECONDS)) {
                p.destroyForcibly().waitFor(5, TimeUnit.SECONDS);
            }
        } catch (IOException e) {
            p.destroyForcibly();
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            p.destroyForcibly();
        }
        OPERATORS.remove(p);
    }

    private static String tail(Path log) {
        try {
            List<String> lines = Files.readAllLines(log);
            return String.join("\n", lines.subList(Math.max(0, lines.size() - 30), lines.size()));
        } catch (IOException e) {
            return "(no log: " + e.getMessage() + ")";
        }
    }

    /**
     * The demo client: conversations of a prompt (appended in one request) and decode steps through the gateway, each
     * long enough to fill the shards' budgets, so that the policy evicts; one conversation open at a time.
     */
    private Thread startDemo(SidecarProcess gateway, long budget, CountDownLatch stop, AtomicReference<String> failure,
                             PrintWriter out) {
        long entryBytes = 4L * SHAPE.kvWidth(); // fp16 K and V
        int budgetTokens = (int) Math.min(1 << 20, budget * shards / entryBytes / SHAPE.layers());
        int prompt = Math.max(PAGE_TOKENS, budgetTokens * 3 / 4);
        int decode = Math.max(PAGE_TOKENS, budgetTokens);
        Thread t = new Thread(() -> {
            SplittableRandom rnd = new SplittableRandom(42);
            long interval = TimeUnit.SECONDS.toNanos(1) / stepsPerSecond;
            try (SidecarClient client = new SidecarClient(gateway.uri(), SHAPE)) {
                while (stop.getCount() > 0) {
                    long sequence = -1;
                    try {
                        sequence = client.createSequence(null);
                        synchronized (out) {
                            out.println(CLOCK.format(Instant.now()) + " demo: sequence " + sequence + ": a " + prompt
                                    + "-token prompt, then " + decode + " decode tokens");
                            out.flush();
                        }
                        for (int layer = 0; layer < SHAPE.layers(); layer++) {
                            appendPrompt(client, sequence, layer, prompt, rnd);
                        }
                        long next = System.nanoTime();
                        for (int token = 0; token < decode && stop.getCount() > 0; token++) {
                            for (int layer = 0; layer < SHAPE.layers() && stop.getCount() > 0; layer++) {
                                next += interval;
                                long wait = next - System.nanoTime();
                                if (wait > 0) {
                                    LockSupport.parkNanos(wait);
                                }
                                client.step(sequence, new Wire.StepRequest(layer, Wire.GATE_LOGITS, Wire.SCOPE_ALL,
                                        gaussian(SHAPE.experts(), rnd), null, gaussian(SHAPE.queryWidth(), rnd),
                                        gaussian(SHAPE.kvWidth(), rnd), gaussian(SHAPE.kvWidth(), rnd)));
                            }
                        }
                        client.closeSequence(sequence);
                    } catch (RuntimeException e) {
                        if (stop.getCount() == 0) {
                            return; // the cluster is going away under it
                        }
                        if (sequence >= 0) {
                            try {
                                client.closeSequence(sequence); // its pages back (a full 'reject' store refuses more)
                            } catch (RuntimeException closeFailed) {
                                // the idle timeout closes it
                            }
                        }
                        failure.set(e.getMessage());
                        synchronized (out) {
                            out.println(CLOCK.format(Instant.now()) + " demo: " + e.getMessage() + "; a new sequence "
                                    + "in 1 s");
                            out.flush();
                        }
                        LockSupport.parkNanos(TimeUnit.SECONDS.toNanos(1));
                    }
                }
            }
        }, "pikv-playground-demo");
        t.setDaemon(true);
        t.start();
        return t;
    }

    private static void appendPrompt(SidecarClient client, long sequence, int layer, int tokens, SplittableRandom rnd) {
        int chunk = 1024;
        for (int start = 0; start < tokens; start += chunk) {
            int n = Math.min(chunk, tokens - start);
            Wire.AppendRequest.Entry[] entries = new Wire.AppendRequest.Entry[n];
            for (int i = 0; i < n; i++) {
                entries[i] = new Wire.AppendRequest.Entry(Wire.NEXT_POSITION, rnd.nextInt(SHAPE.experts()),
                        gaussian(SHAPE.kvWidth(), rnd), gaussian(SHAPE.kvWidth(), rnd));
            }
            client.append(sequence, new Wire.AppendRequest(layer, entries));
        }
    }

    /** Prints one line per telemetry record the broker receives, until {@code stop}. */
    private static Thread startTelemetry(LocalKafka kafka, CountDownLatch stop, PrintWriter out) {
        Thread t = new Thread(() -> {
            ObjectMapper json = new ObjectMapper();
            try (KafkaConsumer<String, byte[]> consumer = new KafkaConsumer<>(Map.of(
                    ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, kafka.bootstrapServers(),
                    ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName(),
                    ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName()))) {
                TopicPartition partition = new TopicPartition(LocalKafka.TELEMETRY_TOPIC, 0);
                consumer.assign(List.of(partition));
                consumer.seekToBeginning(List.of(partition));
                Map<Integer, Long> resident = new HashMap<>();
                while (stop.getCount() > 0) {
                    for (ConsumerRecord<String, byte[]> r : consumer.poll(Duration.ofMillis(500))) {
                        String line;
                        try {
                            CacheEvents e = json.readValue(r.value(), CacheEvents.class);
                            Long before = resident.put(e.shard(), e.bytesResident());
                            if (quiet(e) && before != null && before == e.bytesResident()) {
                                continue; // an idle shard: a line when something changes
                            }
                            line = describe(e);
                        } catch (IOException e) {
                            line = "unreadable record " + r.key() + ": " + e.getMessage();
                        }
                        synchronized (out) {
                            out.println(line);
                            out.flush();
                        }
                    }
                }
            } catch (RuntimeException e) {
                if (stop.getCount() > 0) {
                    synchronized (out) {
                        out.println("telemetry: reading the broker failed: " + e.getMessage());
                        out.flush();
                    }
                }
            }
        }, "pikv-playground-telemetry");
        t.setDaemon(true);
        t.start();
        return t;
    }

    /** Whether the window saw no lookups and no evictions. */
    private static boolean quiet(CacheEvents e) {
        return e.experts().stream().allMatch(c -> c.lookups() == 0 && c.evictions() == 0);
    }

    /** One telemetry record in a line: the window's end, the shard, its lookups, hits, evictions and bytes. */
    static String describe(CacheEvents e) {
        long lookups = 0;
        long hits = 0;
        long evictions = 0;
        for (ExpertCounters c : e.experts()) {
            lookups += c.lookups();
            hits += c.hits();
            evictions += c.evictions();
        }
        return String.format(java.util.Locale.ROOT, "%s telemetry: shard %d: %,d lookups, %s hits, %,d evicted, "
                        + "%.2f of %.2f MiB resident, policy %s", CLOCK.format(Instant.ofEpochMilli(e.windowEndMs())),
                e.shard(), lookups, lookups == 0 ? "no" : String.format(java.util.Locale.ROOT,
                        "%.1f %%", 100.0 * hits / lookups), evictions, e.bytesResident() / 1048576.0,
                e.budgetBytes() / 1048576.0, e.policy());
    }

    private static float[] gaussian(int n, SplittableRandom rnd) {
        float[] x = new float[n];
        for (int i = 0; i < n; i++) {
            double u = rnd.nextDouble(1e-12, 1.0);
            double v = rnd.nextDouble();
            x[i] = (float) (Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v));
        }
        return x;
    }
}
