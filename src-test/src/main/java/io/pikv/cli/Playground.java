package io.pikv.cli;

import com.fasterxml.jackson.databind.ObjectMapper;
import io.pikv.api.events.CacheEvents;
import io.pikv.api.events.ExpertCounters;
import io.pikv.kv.ModelShape;
import io.pikv.sidecar.client.SidecarClient;
import io.pikv.sidecar.wire.Wire;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.StringDeserializer;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.PrintWriter;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.nio.charset.StandardCharsets;
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
import java.util.Set;
import java.util.SplittableRandom;
import java.util.concurrent.Callable;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicReference;
import java.util.concurrent.locks.LockSupport;

import static io.pikv.cli.ServiceBench.gaussian;

/**
 * {@code ./pikv playground}: a local PiKV cluster with everything embedded — a Kafka broker (KRaft) in this JVM,
 * shard sidecars and a gateway as child JVMs on loopback, the operator against a mock API server in another, a demo
 * client stepping sequences through the gateway — with each shard's telemetry printed as the broker receives it and
 * the cluster's status as the operator writes it, until Ctrl-C or {@code --duration}.
 */
@Command(name = "playground", mixinStandardHelpOptions = true,
        description = "Start a local PiKV cluster, everything embedded: a Kafka broker (KRaft) in this JVM, shard "
                + "sidecars and a gateway as child JVMs on loopback, the operator against a mock API server, and a "
                + "demo client stepping sequences through the gateway; print each shard's telemetry as it arrives and "
                + "the cluster's status as the operator writes it. Ctrl-C stops it.")
public final class Playground implements Callable<Integer> {

    @Option(names = "--shards", defaultValue = "2", description = "Shard sidecars, 1 to 8 (default ${DEFAULT-VALUE}).")
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
            description = "Decode steps (one layer each) the demo client sends per second, at most 10000; 0: no demo "
                    + "traffic (default ${DEFAULT-VALUE}).")
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
    /** The cluster as the operator names it: the PiKVCluster's namespace and name (both {@link #CLUSTER}). */
    static final String CLUSTER_ID = CLUSTER + "/" + CLUSTER;
    private static final int PAGE_TOKENS = 32;
    private static final DateTimeFormatter CLOCK = DateTimeFormatter.ofPattern("HH:mm:ss")
            .withZone(ZoneId.systemDefault());

    static final String OPERATOR_MAIN = "io.pikv.operator.bench.PlaygroundOperator";

    /** Operators still running, ended by a shutdown hook if the JVM exits without stopping them (a signal). */
    private static final Set<Process> OPERATORS = ConcurrentHashMap.newKeySet();

    static {
        Runtime.getRuntime().addShutdownHook(new Thread(() -> OPERATORS.forEach(Process::destroy),
                "pikv-playground-operator-stop"));
    }

    /** The running playground's parts, for the steps that start, watch and stop them. */
    private static final class Parts {
        final List<SidecarProcess> sidecars = new ArrayList<>();
        LocalKafka kafka;
        Process operator;
        Thread operatorLines;
    }

    /** Log directories of past runs kept (this run's included): the latest are there to read, the rest go. */
    static final int KEPT_LOG_DIRECTORIES = 5;

    /** A running playground's lock in its log directory: held for the run, so no other run's pruning takes it. */
    static final String RUNNING_LOCK = ".running";

    /**
     * Takes the lock that keeps {@code logs} from other runs' pruning while this run writes there; closing the
     * channel gives it back (as does the process's exit, however it ends). Null where the file system takes no lock:
     * the run goes on (its logs are a convenience) and another run's pruning may then take them.
     */
    static java.nio.channels.FileChannel holdLogs(Path logs) {
        java.nio.channels.FileChannel channel = null;
        try {
            channel = java.nio.channels.FileChannel.open(logs.resolve(RUNNING_LOCK),
                    java.nio.file.StandardOpenOption.CREATE, java.nio.file.StandardOpenOption.WRITE);
            channel.lock();
            return channel;
        } catch (IOException | RuntimeException e) {
            release(channel);
            try {
                // No lock taken: no file left to say one might be (a later run could never tell, and kept it).
                Files.deleteIfExists(logs.resolve(RUNNING_LOCK));
            } catch (IOException ignored) {
                // pruned with its directory all the same
            }
            return null;
        }
    }

    /** Gives back what {@link #holdLogs} took (nothing when null). */
    static void release(java.nio.channels.FileChannel held) {
        if (held != null) {
            try {
                held.close();
            } catch (IOException e) {
                // the lock goes with the process anyway
            }
        }
    }

    /** Whether a playground runs with its logs in {@code dir} (it holds the directory's lock). */
    static boolean running(Path dir) {
        Path lock = dir.resolve(RUNNING_LOCK);
        if (!Files.exists(lock, java.nio.file.LinkOption.NOFOLLOW_LINKS)) {
            return false; // a run of an earlier version, or one that ended
        }
        try (java.nio.channels.FileChannel channel = java.nio.channels.FileChannel.open(lock,
                java.nio.file.StandardOpenOption.WRITE)) {
            return channel.tryLock() == null; // released with the channel
        } catch (java.nio.channels.OverlappingFileLockException e) {
            return true; // held in this process
        } catch (IOException e) {
            // No locks on this file system: no run could have taken one (holdLogs deletes its file then), so the file
            // is an ended run's.
            return false;
        }
    }

    /**
     * Removes the {@code playground-*} directories under {@code target} but the {@code keep} most recently modified,
     * and never one a running playground writes to (it holds {@link #RUNNING_LOCK} there: a directory's time changes
     * only when files come and go, so a long run's directory can look old). A directory that cannot be removed is
     * left as it is: the logs are a convenience, not the run.
     */
    static void pruneOldLogs(Path target, int keep) {
        List<Path> dirs;
        try (java.util.stream.Stream<Path> list = Files.list(target)) {
            dirs = new ArrayList<>(list.filter(d -> d.getFileName().toString().startsWith("playground-")
                    && Files.isDirectory(d, java.nio.file.LinkOption.NOFOLLOW_LINKS)).toList());
        } catch (IOException e) {
            return;
        }
        dirs.sort(java.util.Comparator.comparing(Playground::modified).reversed());
        for (Path old : dirs.subList(Math.min(keep, dirs.size()), dirs.size())) {
            if (!running(old)) {
                DirTree.delete(old); // what stays is left for the next run
            }
        }
    }

    private static java.nio.file.attribute.FileTime modified(Path p) {
        try {
            return Files.getLastModifiedTime(p);
        } catch (IOException e) {
            return java.nio.file.attribute.FileTime.fromMillis(0);
        }
    }

    @Override
    public Integer call() throws Exception {
        checkArguments();
        Path root = SidecarProcess.projectRoot();
        Path jar = SidecarProcess.appJar(root);
        // Before anything starts: a missing operator build is said at once, not after minutes of start-up.
        String operatorClasspath = noOperator ? null : OperatorBench.classpath(root);
        Files.createDirectories(root.resolve("src-test/target"));
        pruneOldLogs(root.resolve("src-test/target"), KEPT_LOG_DIRECTORIES - 1);
        Path logs = Files.createTempDirectory(root.resolve("src-test/target"), "playground-");
        java.nio.channels.FileChannel logsHeld = holdLogs(logs);
        long budget = (long) budgetMib << 20;
        PrintWriter out = spec.commandLine().getOut();
        out.println("starting a Kafka broker, " + shards + " shard(s) and a gateway; logs in " + logs + " ...");
        out.flush();

        Parts parts = new Parts();
        CountDownLatch stop = new CountDownLatch(1);
        CountDownLatch finished = new CountDownLatch(1);
        RUNNING.set(stop);
        // On Ctrl-C or SIGTERM: the main thread stops everything in order and says so before the JVM halts.
        Thread onSignal = new Thread(() -> {
            stop.countDown();
            try {
                // Longer than the stop's own bounds added up (demo and telemetry 10 s each, the operator 20 s, the
                // sidecars 15 s each in parallel, the broker): the stop finishes and says so before the JVM halts.
                finished.await(120, TimeUnit.SECONDS);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        }, "pikv-playground-stop");
        Runtime.getRuntime().addShutdownHook(onSignal);
        Throwable failure = null;
        try {
            parts.kafka = LocalKafka.start();
            SidecarProcess gateway = startSidecars(jar, logs, budget, parts, stop);
            printWelcome(out, gateway, parts.sidecars, parts.kafka, logs, budget);
            if (operatorClasspath != null) {
                startOperator(root, operatorClasspath, parts, logs, budget, out);
            }
            AtomicReference<String> demoFailure = new AtomicReference<>();
            Thread demo = stepsPerSecond == 0 ? null : startDemo(gateway, budget, stop, demoFailure, out);
            Thread telemetry = startTelemetry(parts.kafka, stop, out);
            String ended = watch(parts, stop, logs);
            stop.countDown();
            for (Thread t : demo == null ? List.of(telemetry) : List.of(demo, telemetry)) {
                t.join(TimeUnit.SECONDS.toMillis(10));
            }
            stopAll(parts); // the operator's last lines before the closing one
            out.println("playground: " + ended + (demoFailure.get() == null ? "" : " (the demo client last failed: "
                    + demoFailure.get() + ")"));
            out.flush();
            return 0;
        } catch (Throwable e) {
            failure = e;
            throw e;
        } finally {
            stop.countDown();
            try {
                stopAll(parts);
            } catch (RuntimeException e) {
                if (failure == null) {
                    throw e;
                }
                failure.addSuppressed(e); // the first failure is the one to tell
            } finally {
                Main.removeShutdownHook(onSignal);
                RUNNING.compareAndSet(stop, null);
                release(logsHeld);
                finished.countDown();
            }
        }
    }

    /** The stop of the playground running in this JVM, or null: what a signal does, for a caller in the same JVM. */
    private static final AtomicReference<CountDownLatch> RUNNING = new AtomicReference<>();

    /**
     * Stops the playground running in this JVM as a signal would (it then says {@code playground: stopping}); false
     * when none runs. For a caller that runs it in process (the launcher's tests end a run once they saw what they
     * wait for, rather than after a fixed duration).
     */
    static boolean stopRunning() {
        CountDownLatch stop = RUNNING.get();
        if (stop == null) {
            return false;
        }
        stop.countDown();
        return true;
    }

    private void checkArguments() {
        if (shards < 1 || shards > 8 || port < 0 || port > 65535 || budgetMib < 1 || budgetMib > 256
                || stepsPerSecond < 0 || stepsPerSecond > 10_000 || durationSeconds < 0) {
            throw new Main.UsageException("--shards must be in [1, 8], --port in [0, 65535], --budget-mib in [1, 256], "
                    + "--steps-per-second in [0, 10000] and --duration at least 0; got " + shards + ", " + port + ", "
                    + budgetMib + ", " + stepsPerSecond + " and " + durationSeconds + ".");
        }
        if (!List.of("lru", "streaming", "h2o", "utility", "lrfu", "oldest-page", "reject").contains(policy)) {
            throw new Main.UsageException("unknown --policy '" + policy + "'; known: lru, streaming, h2o, utility, "
                    + "lrfu, oldest-page, reject.");
        }
        if (port != 0) {
            // Said before anything starts, rather than found in the gateway's log.
            try (ServerSocket probe = new ServerSocket(port, 1, InetAddress.getLoopbackAddress())) {
                // bound: free
            } catch (java.net.BindException e) {
                // Java says "in use" and "permission denied" (a port below 1024) with the same exception.
                boolean taken = String.valueOf(e.getMessage()).toLowerCase(java.util.Locale.ROOT).contains("in use");
                throw new Main.UsageException("port " + port + " on 127.0.0.1 cannot be bound (" + e.getMessage()
                        + (taken ? "; another playground?): stop what holds it, or pass --port 0 for a free one."
                        : "): pass a port this user may bind, or --port 0 for a free one."));
            } catch (IOException e) {
                throw new Main.UsageException("port " + port + " on 127.0.0.1 cannot be bound: " + e.getMessage()
                        + "; pass --port 0 for a free one.");
            }
        }
    }

    /** Starts the shards (at once) and then the gateway; returns the gateway. Each joins {@code parts} as it starts. */
    private SidecarProcess startSidecars(Path jar, Path logs, long budget, Parts parts, CountDownLatch stop) {
        Map<String, String> common = ServiceBench.settings(SHAPE, "shard", budget);
        // As the operator names the cluster of PiKVCluster playground/playground (<namespace>/<name>): the key of its
        // control state and of the shards' telemetry.
        common.put("pikv.cluster", CLUSTER_ID);
        common.put("kafka.bootstrap.servers", parts.kafka.bootstrapServers());
        common.put("pikv.telemetry.enabled", "true");
        common.put("pikv.control.enabled", "true");
        // A thread per shard: a start waits up to minutes on its child, which the common pool's few threads would
        // serialise.
        ExecutorService starter = Executors.newFixedThreadPool(shards, r -> {
            Thread t = new Thread(r, "pikv-playground-start");
            t.setDaemon(true);
            return t;
        });
        List<Future<SidecarProcess>> starting = new ArrayList<>();
        try {
            for (int s = 0; s < shards; s++) {
                Map<String, String> settings = new HashMap<>(common);
                settings.put("pikv.shard-id", String.valueOf(s));
                settings.put("pikv.store.eviction", policy);
                String name = "shard-" + s;
                starting.add(starter.submit(() -> SidecarProcess.start(jar, name, settings, logs,
                        Duration.ofSeconds(180))));
            }
            List<String> urls = new ArrayList<>();
            RuntimeException failed = null;
            for (Future<SidecarProcess> f : starting) {
                try {
                    SidecarProcess p = f.get();
                    parts.sidecars.add(p);
                    urls.add(p.uri().toString());
                } catch (ExecutionException e) {
                    failed = failed != null ? failed : e.getCause() instanceof RuntimeException r ? r
                            : new Main.RunFailure("starting a shard failed: " + e.getCause(), e.getCause());
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    failed = failed != null ? failed : new Main.RunFailure("interrupted while starting the shards");
                }
            }
            if (failed != null) {
                if (stop.getCount() == 0) { // a signal stopped the children it was starting: no failure of theirs
                    throw new Main.RunFailure("stopped while starting");
                }
                throw failed;
            }
        } finally {
            starter.shutdown();
        }
        if (stop.getCount() == 0) {
            throw new Main.RunFailure("stopped while starting"); // a signal came during the shards' start-up
        }
        Map<String, String> g = new HashMap<>(common);
        g.put("pikv.role", "gateway");
        g.put("pikv.gateway.shards", String.join(",", urls(parts.sidecars)));
        g.put("pikv.telemetry.enabled", "false"); // a gateway holds no KV: shards publish
        g.put("quarkus.http.port", String.valueOf(port));
        SidecarProcess gateway;
        try {
            gateway = SidecarProcess.start(jar, "gateway", g, logs, Duration.ofSeconds(180));
        } catch (Main.RunFailure e) {
            if (stop.getCount() == 0) {
                throw new Main.RunFailure("stopped while starting");
            }
            String why = String.valueOf(e.getMessage());
            if (port != 0 && (why.contains("seems to be in use") || why.contains("Address already in use"))) {
                // Taken since it was checked (another playground starting beside this one): the same sentence.
                throw new Main.UsageException("port " + port + " on 127.0.0.1 cannot be bound (taken since it was "
                        + "checked; another playground?): stop what holds it, or pass --port 0 for a free one.");
            }
            throw e;
        }
        parts.sidecars.add(gateway);
        return gateway;
    }

    private static List<String> urls(List<SidecarProcess> sidecars) {
        return sidecars.stream().map(p -> p.uri().toString()).toList();
    }

    /**
     * Waits for a stop (a signal, or {@code --duration}), checking every second that every child still runs; returns
     * how the run ended, or fails with the log of a child that stopped by itself.
     */
    private String watch(Parts parts, CountDownLatch stop, Path logs) throws InterruptedException {
        long deadline = durationSeconds == 0 ? Long.MAX_VALUE : System.nanoTime()
                + TimeUnit.SECONDS.toNanos(durationSeconds);
        while (true) {
            if (stop.await(1, TimeUnit.SECONDS)) {
                return "stopping"; // the children may be going already (a signal reaches them too): not a failure
            }
            // The children first, also on the last pass: one that died near the end is a failure, not a clean run.
            boolean due = System.nanoTime() >= deadline;
            for (SidecarProcess p : parts.sidecars) {
                if (!p.alive() && stop.getCount() > 0) {
                    throw new Main.RunFailure("sidecar " + p.name() + " stopped (log " + p.log() + "):\n" + p.tail());
                }
            }
            if (parts.kafka != null && parts.kafka.failure() != null && stop.getCount() > 0) {
                // The sidecars would go on retrying it and the telemetry lines stop: said, not waited out.
                throw new Main.RunFailure("the local Kafka broker stopped: " + parts.kafka.failure());
            }
            if (parts.operator != null && !parts.operator.isAlive() && stop.getCount() > 0) {
                throw new Main.RunFailure("the operator stopped (exit " + parts.operator.exitValue() + "; log "
                        + logs.resolve("operator.log") + "):\n" + SidecarProcess.tail(logs.resolve("operator.log")));
            }
            if (due) {
                return "--duration " + durationSeconds + " s passed; stopping";
            }
        }
    }

    /**
     * Stops what runs: the operator first (its input closed), then every sidecar at once, then the broker, after
     * the sidecars, whose clients would spend their last seconds retrying it. Idempotent.
     */
    private static void stopAll(Parts parts) throws InterruptedException {
        if (parts.operator != null) {
            stopOperator(parts.operator);
            parts.operatorLines.join(TimeUnit.SECONDS.toMillis(5)); // its last lines printed
            parts.operator = null;
        }
        List<SidecarProcess> sidecars = new ArrayList<>(parts.sidecars);
        parts.sidecars.clear();
        SidecarProcess.closeAll(sidecars);
        if (parts.kafka != null) {
            LocalKafka kafka = parts.kafka;
            parts.kafka = null;
            kafka.close();
        }
    }

    private void printWelcome(PrintWriter out, SidecarProcess gateway, List<SidecarProcess> all, LocalKafka kafka,
                              Path logs, long budget) {
        String g = gateway.uri().toString().replaceAll("/$", "");
        out.println();
        out.println("PiKV playground (cluster '" + CLUSTER_ID + "')");
        out.println("  gateway  " + g + "   model: " + SHAPE.layers() + " layers, " + SHAPE.qHeads() + " query / "
                + SHAPE.kvHeads() + " KV heads of " + SHAPE.headDim() + ", " + SHAPE.experts() + " experts, top-"
                + SHAPE.topK());
        for (SidecarProcess p : all) {
            if (p != gateway) {
                out.println("  " + p.name() + "  " + p.uri().toString().replaceAll("/$", "") + "   " + (budget >> 20)
                        + " MiB of KV pages, policy " + policy);
            }
        }
        out.println("  kafka    " + kafka.bootstrapServers() + "   topics " + LocalKafka.TELEMETRY_TOPIC
                + " (telemetry), " + LocalKafka.CONTROL_TOPIC + " (control)");
        if (!noOperator) {
            out.println("  operator starting against a mock API server, to reconcile PiKVCluster " + CLUSTER + "/"
                    + CLUSTER
                    + " (its status below" + (PAGE_POLICIES.contains(policy) ? "; its spec names no page policy, so "
                    + "its status shows its default, lru" : "") + ")");
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
                + "through the gateway, " + stepsPerSecond + " steps a second; each shard's telemetry follows, one "
                + "line per window that saw lookups or evictions or changed the bytes held.");
        out.println(durationSeconds == 0 ? "Ctrl-C stops everything." : "Stops after " + durationSeconds + " s.");
        out.println();
        out.flush();
    }

    /** The shards' page policies, which a PiKVCluster's scheduling policy cannot name. */
    private static final List<String> PAGE_POLICIES = List.of("oldest-page", "reject");

    /**
     * The operator against a mock API server in a child JVM (the operator module's test class path), given the
     * PiKVCluster of this playground; its lines are printed as they come, its errors go to {@code operator.log}.
     */
    private void startOperator(Path root, String classpath, Parts parts, Path logs, long budget, PrintWriter out)
            throws IOException {
        List<String> cmd = new ArrayList<>(List.of(Path.of(System.getProperty("java.home"), "bin", "java").toString(),
                "-Xmx512m", "-Djava.util.logging.manager=org.jboss.logmanager.LogManager", "-cp", classpath,
                OPERATOR_MAIN, "--name", CLUSTER, "--shards", String.valueOf(shards), "--memory",
                (budget >> 20) + "Mi", "--policy", policy, "--kafka", parts.kafka.bootstrapServers(), "--model",
                SHAPE.layers() + "," + SHAPE.qHeads() + "," + SHAPE.kvHeads() + "," + SHAPE.headDim() + ","
                        + SHAPE.experts() + "," + SHAPE.topK()));
        ProcessBuilder builder = new ProcessBuilder(cmd).directory(root.toFile())
                .redirectError(logs.resolve("operator.log").toFile());
        builder.environment().keySet().removeIf(SidecarProcess::jvmOptions); // its own heap, no agent of the caller's
        Process p = builder.start();
        OPERATORS.add(p);
        parts.operator = p;
        Thread lines = new Thread(() -> {
            try (BufferedReader in = new BufferedReader(new InputStreamReader(p.getInputStream(),
                    StandardCharsets.UTF_8))) {
                String line;
                while ((line = in.readLine()) != null) {
                    print(out, CLOCK.format(Instant.now()) + " operator: " + line);
                }
            } catch (IOException e) {
                // the operator stopped; the watch says so
            }
        }, "pikv-playground-operator");
        lines.setDaemon(true);
        lines.start();
        parts.operatorLines = lines;
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

    /**
     * The demo client: conversations of a prompt (appended in requests of 1,024 entries) and decode steps through the
     * gateway, each long enough to fill the shards' budgets, so that the policy evicts; one conversation at a time.
     * A failed request is said and a new conversation starts a second later; an {@link Error} (out of memory) ends the
     * demo, said once, while the cluster runs on.
     */
    private Thread startDemo(SidecarProcess gateway, long budget, CountDownLatch stop, AtomicReference<String> failure,
                             PrintWriter out) {
        long entryBytes = 4L * SHAPE.kvWidth(); // fp16 K and V
        int budgetTokens = (int) Math.min(1 << 20, budget * shards / entryBytes / SHAPE.layers());
        int prompt = Math.max(PAGE_TOKENS, budgetTokens * 3 / 4);
        int decode = Math.max(PAGE_TOKENS, budgetTokens);
        long interval = TimeUnit.SECONDS.toNanos(1) / stepsPerSecond;
        Thread t = new Thread(() -> {
            SplittableRandom rnd = new SplittableRandom(42);
            try (SidecarClient client = new SidecarClient(gateway.uri(), SHAPE)) {
                while (stop.getCount() > 0) {
                    long sequence = -1;
                    try {
                        sequence = client.createSequence(null);
                        print(out, CLOCK.format(Instant.now()) + " demo: sequence " + sequence + ": a " + prompt
                                + "-token prompt, then " + decode + " decode tokens");
                        for (int layer = 0; layer < SHAPE.layers(); layer++) {
                            appendPrompt(client, sequence, layer, prompt, rnd, stop);
                        }
                        decode(client, sequence, decode, interval, rnd, stop);
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
                        failure.set(String.valueOf(e.getMessage()));
                        print(out, CLOCK.format(Instant.now()) + " demo: " + e + "; a new sequence in 1 s");
                        LockSupport.parkNanos(TimeUnit.SECONDS.toNanos(1));
                    }
                }
            } catch (Error e) {
                failure.set(String.valueOf(e));
                print(out, CLOCK.format(Instant.now()) + " demo: stopped by " + e);
            }
        }, "pikv-playground-demo");
        t.setDaemon(true);
        t.start();
        return t;
    }

    /** {@code tokens} decode tokens, a step per layer each, at one step per {@code interval}, until {@code stop}. */
    private static void decode(SidecarClient client, long sequence, int tokens, long interval, SplittableRandom rnd,
                               CountDownLatch stop) {
        long next = System.nanoTime();
        for (int token = 0; token < tokens && stop.getCount() > 0; token++) {
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
    }

    private static void appendPrompt(SidecarClient client, long sequence, int layer, int tokens, SplittableRandom rnd,
                                     CountDownLatch stop) {
        int chunk = 1024;
        for (int start = 0; start < tokens && stop.getCount() > 0; start += chunk) {
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
                // Consumers deduplicate on (producerId, sequence): a send retried after a timeout can land twice.
                Map<String, Long> lastSequence = new HashMap<>();
                String lastFailure = null;
                while (stop.getCount() > 0) {
                    ConsumerRecords<String, byte[]> records;
                    try {
                        records = consumer.poll(Duration.ofMillis(500));
                    } catch (RuntimeException e) {
                        // Said once per kind of failure, then retried: the playground goes on without the lines.
                        if (!String.valueOf(e.getMessage()).equals(lastFailure) && stop.getCount() > 0) {
                            lastFailure = String.valueOf(e.getMessage());
                            print(out, "telemetry: reading the broker failed: " + e.getMessage() + "; retrying");
                        }
                        LockSupport.parkNanos(TimeUnit.SECONDS.toNanos(1));
                        continue;
                    }
                    for (ConsumerRecord<String, byte[]> r : records) {
                        String line;
                        try {
                            CacheEvents e = json.readValue(r.value(), CacheEvents.class);
                            Long seen = lastSequence.get(e.producerId());
                            if (seen != null && e.sequence() <= seen) {
                                continue; // a copy of a window already printed
                            }
                            lastSequence.put(e.producerId(), e.sequence());
                            Long before = resident.put(e.shard(), e.bytesResident());
                            if (quiet(e) && (before == null ? e.bytesResident() == 0 : before == e.bytesResident())) {
                                continue; // an idle shard (from its first window on): a line when something changes
                            }
                            line = describe(e);
                        } catch (IOException | RuntimeException e) {
                            line = "telemetry: unreadable record " + r.key() + " at offset " + r.offset() + ": "
                                    + e.getMessage();
                        }
                        print(out, line);
                    }
                }
            } catch (RuntimeException e) {
                // The consumer itself could not be made or assigned: the playground goes on without the lines.
                print(out, "telemetry: cannot read the broker: " + e.getMessage() + "; no telemetry lines follow");
            }
        }, "pikv-playground-telemetry");
        t.setDaemon(true);
        t.start();
        return t;
    }

    private static void print(PrintWriter out, String line) {
        synchronized (out) {
            out.println(line);
            out.flush();
        }
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
}
