package io.pikv.cli;

import com.fasterxml.jackson.core.type.TypeReference;
import com.fasterxml.jackson.databind.ObjectMapper;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

import java.io.IOException;
import java.io.PrintWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Callable;
import java.util.concurrent.TimeUnit;

/**
 * {@code ./pikv bench operator}: reconcile latency with many PiKVClusters against the fabric8 mock API server.
 *
 * <p>The operator, the SDK and the mock server are not on the launcher's class path: the benchmark runs as a child
 * JVM ({@code io.pikv.operator.bench.ReconcileBench}) on the operator module's test class path, which the build
 * writes to {@code operator/target/test-classpath.txt}; this command starts it, waits, and reports its figures.
 */
@Command(name = "operator", mixinStandardHelpOptions = true,
        description = "Reconcile latency (spec change -> status, p50/p99) with many PiKVClusters against the mock "
                + "API server, the operator's reconciler and dependents in a child JVM.")
public final class OperatorBench implements Callable<Integer> {

    @Option(names = "--clusters", defaultValue = "100", description = "PiKVClusters to create (default ${DEFAULT-VALUE}).")
    int clusters;

    @Option(names = "--rounds", defaultValue = "3", description = "Measured rounds of one spec change per cluster (default ${DEFAULT-VALUE}).")
    int rounds;

    @Option(names = "--warmup", defaultValue = "1", description = "Unmeasured rounds first (default ${DEFAULT-VALUE}).")
    int warmup;

    @Option(names = "--json", paramLabel = "FILE", converter = BenchReport.JsonFile.class,
            description = "Also write the figures as JSON.")
    Path json;

    @picocli.CommandLine.Spec
    picocli.CommandLine.Model.CommandSpec spec;

    static final String MAIN = "io.pikv.operator.bench.ReconcileBench";

    /**
     * The operator module's test class path (its classes, test classes and dependencies, the mock API server among
     * them), which its build writes to {@code operator/target/test-classpath.txt}; a clear failure when not built.
     */
    static String classpath(Path root) throws IOException {
        Path operator = root.resolve("operator/target");
        Path classpathFile = operator.resolve("test-classpath.txt");
        if (!Files.isRegularFile(classpathFile) || !Files.isDirectory(operator.resolve("test-classes"))) {
            throw new Main.RunFailure("the operator is not built (" + classpathFile + " or its test classes are "
                    + "missing): run ./mvnw -DskipTests package first.");
        }
        return operator.resolve("test-classes") + java.io.File.pathSeparator + operator.resolve("classes")
                + java.io.File.pathSeparator + Files.readString(classpathFile).strip();
    }

    @Override
    public Integer call() throws IOException, InterruptedException {
        Main.within("--clusters", clusters, 1, 2000, "");
        Main.within("--rounds", rounds, 1, 1000, "");
        Main.within("--warmup", warmup, 0, 1000, "");
        Path root = SidecarProcess.projectRoot();
        String classpath = classpath(root);
        // A directory of this run's own: two runs at once (the test suite's and a user's) never read each other's figures.
        Files.createDirectories(root.resolve("src-test/target"));
        Path dir = Files.createTempDirectory(root.resolve("src-test/target"), "bench-operator-");
        Path out = dir.resolve("figures.json");
        Path log = dir.resolve("bench.log");
        Files.deleteIfExists(out);
        List<String> cmd = new ArrayList<>(List.of(Path.of(System.getProperty("java.home"), "bin", "java").toString(),
                "-Xmx2g", "-Djava.util.logging.manager=org.jboss.logmanager.LogManager",
                "-Dpikv.parent-pid=" + ProcessHandle.current().pid(), "-cp", classpath, MAIN,
                "--clusters", String.valueOf(clusters), "--rounds", String.valueOf(rounds),
                "--warmup", String.valueOf(warmup), "--out", out.toString()));
        PrintWriter pw = spec.commandLine().getOut();
        pw.println("creating " + clusters + " PiKVClusters against the mock API server (log in " + log + ") ...");
        pw.flush();
        ProcessBuilder builder = new ProcessBuilder(cmd).directory(root.toFile()).redirectErrorStream(true)
                .redirectOutput(log.toFile());
        builder.environment().keySet().removeIf(SidecarProcess::jvmOptions); // its own heap, no agent of the caller's
        java.util.concurrent.atomic.AtomicReference<Process> child = new java.util.concurrent.atomic.AtomicReference<>();
        // On Ctrl-C or a kill: the hook itself ends the child and removes the run's directory, since the JVM halts
        // once its hooks return, before the main thread would (registered before the child starts, so none escapes).
        Thread reaper = new Thread(() -> {
            Process running;
            synchronized (child) { // after a start under way: the child it makes is seen here
                running = child.get();
            }
            if (running != null) {
                running.destroyForcibly();
                try {
                    running.waitFor(10, TimeUnit.SECONDS);
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                }
            }
            DirTree.delete(dir);
        }, "pikv-operator-bench-child");
        Runtime.getRuntime().addShutdownHook(reaper);
        Process p;
        // Generous: each step of the child has its own time-outs; this only ends a child stuck beyond them.
        long minutes = 30 + (long) clusters * (rounds + warmup + 1) / 60;
        try {
            synchronized (child) {
                if (Main.shuttingDown()) {
                    throw new Main.RunFailure("interrupted");
                }
                p = builder.start();
                child.set(p);
            }
            if (!p.waitFor(minutes, TimeUnit.MINUTES)) {
                throw new Main.RunFailure("the operator benchmark did not finish within " + minutes + " minutes; see "
                        + log);
            }
        } finally {
            Process started = child.get();
            if (started != null) {
                started.destroyForcibly();
            }
            Main.removeShutdownHook(reaper);
        }
        if (Main.shuttingDown()) { // interrupted (Ctrl-C): the child was ended by the hook above, not failed
            DirTree.delete(dir); // also when the signal came after the hook was removed
            throw new Main.RunFailure("interrupted");
        }
        if (p.exitValue() != 0 || !Files.isRegularFile(out)) {
            // Malformed bytes (a child killed mid-write) become replacement characters rather than hide the failure.
            List<String> lines = new String(Files.readAllBytes(log), java.nio.charset.StandardCharsets.UTF_8).lines()
                    .toList();
            throw new Main.RunFailure("the operator benchmark failed (exit " + p.exitValue() + "; log " + log + "):\n"
                    + String.join("\n", lines.subList(Math.max(0, lines.size() - 30), lines.size())));
        }
        Map<String, Object> figures = new ObjectMapper().readValue(out.toFile(),
                new TypeReference<LinkedHashMap<String, Object>>() { });
        // A run that worked leaves nothing behind (a failed one keeps its log, named in the error).
        DirTree.delete(dir);
        BenchReport report = new BenchReport("Operator reconcile latency: " + clusters + " PiKVClusters, mock API "
                + "server (CRUD), p50/p99 from a spec change to the status that reports it");
        figures.forEach(report::put);
        report.print(pw);
        if (json != null) {
            report.writeJson(json);
        }
        return 0;
    }
}
