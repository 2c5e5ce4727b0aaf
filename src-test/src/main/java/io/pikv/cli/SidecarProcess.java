package io.pikv.cli;

import java.io.IOException;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collection;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * A sidecar running as a child JVM from the packaged app ({@code sidecar/service/target/quarkus-app}), on a loopback
 * port it picks itself, with {@code pikv.*} settings as system properties; ready when {@code /q/health/ready} answers 200.
 * Its output goes to a log file, whose tail is quoted when it fails to start. Used by the service benchmark and the
 * end-to-end suites.
 */
public final class SidecarProcess implements AutoCloseable {
    private final String name;
    private final Process process;
    private final URI uri;
    private final Path log;

    private SidecarProcess(String name, Process process, URI uri, Path log) {
        this.name = name;
        this.process = process;
        this.uri = uri;
        this.log = log;
    }

    /** The packaged sidecar under {@code root}, or a clear failure saying how to build it. */
    public static Path appJar(Path root) {
        Path jar = root.resolve("sidecar/service/target/quarkus-app/quarkus-run.jar");
        if (!Files.isRegularFile(jar)) {
            throw new Main.RunFailure("the sidecar is not built (" + jar + " is missing): run ./mvnw -DskipTests "
                    + "package first.");
        }
        return jar;
    }

    /**
     * The project root: {@code -Dpikv.root} (the launcher passes its own directory), else the nearest directory at or
     * above the working directory that holds sidecar/service.
     */
    public static Path projectRoot() {
        String given = System.getProperty("pikv.root");
        if (given != null && Files.isDirectory(Path.of(given).resolve("sidecar/service"))) {
            return Path.of(given).toAbsolutePath();
        }
        Path dir = Path.of("").toAbsolutePath();
        for (Path d = dir; d != null; d = d.getParent()) {
            if (Files.isDirectory(d.resolve("sidecar/service"))) {
                return d;
            }
        }
        throw new Main.UsageException("no PiKV project at or above " + dir + ": run the command through ./pikv or "
                + "from the project.");
    }

    /** Children still running, ended by a shutdown hook if the JVM exits without closing them (a signal). */
    private static final Set<Process> RUNNING = ConcurrentHashMap.newKeySet();

    /** Set by the shutdown hook: a child started after it ran (a start under way at a signal) is stopped at once. */
    private static volatile boolean closing;

    static {
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            closing = true;
            // The same grace as closeAll: a sidecar finishing its requests in flight takes up to its shutdown timeout.
            stop(List.copyOf(RUNNING), TimeUnit.SECONDS.toNanos(10));
        }, "pikv-sidecar-children"));
    }

    /** The line Quarkus logs once its HTTP server listens, with the port it bound. */
    private static final Pattern LISTENING = Pattern.compile("Listening on: http://127\\.0\\.0\\.1:(\\d+)");

    /** An environment variable a sidecar would read as a setting ({@code PIKV_…}, {@code QUARKUS_…}). */
    static boolean overridesSettings(String variable) {
        return variable.startsWith("PIKV_") || variable.startsWith("QUARKUS_") || jvmOptions(variable);
    }

    /**
     * Whether an environment variable holds options every JVM started takes up (-D settings, heap, agents): a child
     * JVM of a command runs without them, on the options the command gives it.
     */
    static boolean jvmOptions(String variable) {
        return variable.equals("JAVA_TOOL_OPTIONS") || variable.equals("JDK_JAVA_OPTIONS")
                || variable.equals("_JAVA_OPTIONS");
    }

    /**
     * How a sidecar child is started: its output to {@code log}, none of the caller's setting variables (a PIKV_… or
     * QUARKUS_… variable of the shell, say PIKV_STORE_DTYPE, or JVM options from the environment would override the
     * settings given here unseen and change what a benchmark compares), in {@code logDir} rather than the caller's
     * directory (Quarkus reads a .env file and config/application.properties from there).
     */
    static ProcessBuilder builder(List<String> cmd, Path logDir, Path log) {
        ProcessBuilder builder = new ProcessBuilder(cmd).redirectErrorStream(true).redirectOutput(log.toFile());
        builder.environment().keySet().removeIf(SidecarProcess::overridesSettings);
        builder.directory(logDir.toAbsolutePath().toFile());
        return builder;
    }

    /**
     * Starts a sidecar on a port it picks itself (read back from its log, so no other process can take it between a
     * probe and the bind) and waits until it is ready (or fails with the tail of its log). With a
     * {@code pikv.store.budget-bytes} setting, the JVM may give pages that much direct memory plus the server's own.
     */
    public static SidecarProcess start(Path jar, String name, Map<String, String> settings, Path logDir,
                                       Duration timeout) {
        List<String> cmd = new ArrayList<>();
        cmd.add(Path.of(System.getProperty("java.home"), "bin", "java").toString());
        cmd.add("-Xmx512m");
        String budget = settings.get("pikv.store.budget-bytes");
        if (budget != null) {
            cmd.add("-XX:MaxDirectMemorySize=" + (Long.parseLong(budget) + (128L << 20)));
        }
        cmd.add("--add-modules");
        cmd.add("jdk.incubator.vector");
        cmd.add("--enable-native-access=ALL-UNNAMED");
        cmd.add("-Dquarkus.http.port=0");
        cmd.add("-Dquarkus.http.host=127.0.0.1");
        // The start-up line that names the port is Quarkus' own, at INFO: kept whatever level the settings ask for.
        cmd.add("-Dquarkus.log.category.\"io.quarkus\".level=INFO");
        if (!settings.containsKey("pikv.blocks.capacity-bytes")) {
            // The heap is 512 MiB here: a block cache of the default 256 MiB would leave a shard's bookkeeping too
            // little of it (the sidecar warns), and these sidecars do not fill one.
            cmd.add("-Dpikv.blocks.capacity-bytes=" + (64L << 20));
        }
        // Stops by itself once this JVM is gone, also when no shutdown hook ran (killed outright).
        cmd.add("-Dpikv.parent-pid=" + ProcessHandle.current().pid());
        settings.forEach((k, v) -> cmd.add("-D" + k + "=" + v));
        cmd.add("-jar");
        cmd.add(jar.toAbsolutePath().toString());
        Process process;
        Path log = logDir.toAbsolutePath().resolve(name + ".log");
        try {
            Files.createDirectories(logDir);
            process = builder(cmd, logDir, log).start();
        } catch (IOException e) {
            throw new Main.RunFailure("cannot start sidecar " + name + ": " + e.getMessage(), e);
        }
        RUNNING.add(process);
        if (closing) { // the hook has run (or is running) and may not have seen this child: it must not outlive us
            stop(List.of(process), TimeUnit.SECONDS.toNanos(10));
            RUNNING.remove(process);
            throw new Main.RunFailure("stopped while starting sidecar " + name);
        }
        long deadline = System.nanoTime() + timeout.toNanos();
        try {
            int port = awaitPort(name, process, log, deadline);
            SidecarProcess sidecar = new SidecarProcess(name, process, URI.create("http://127.0.0.1:" + port), log);
            sidecar.awaitReady(deadline, timeout);
            return sidecar;
        } catch (RuntimeException e) {
            stop(List.of(process), TimeUnit.SECONDS.toNanos(10));
            RUNNING.remove(process);
            throw e;
        }
    }

    /** The port the sidecar logs once it listens. */
    private static int awaitPort(String name, Process process, Path log, long deadline) {
        while (System.nanoTime() < deadline) {
            try {
                Matcher m = LISTENING.matcher(Files.readString(log, java.nio.charset.StandardCharsets.ISO_8859_1));
                if (m.find()) {
                    return Integer.parseInt(m.group(1));
                }
                if (!process.isAlive()) {
                    throw new Main.RunFailure("sidecar " + name + " exited with " + process.exitValue()
                            + " (log " + log + "):\n"
                            + tail(log));
                }
                process.waitFor(100, TimeUnit.MILLISECONDS);
            } catch (IOException e) {
                throw new Main.RunFailure("cannot read the log of sidecar " + name + ": " + e.getMessage(), e);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                break;
            }
        }
        throw new Main.RunFailure("sidecar " + name + " did not listen within the start-up timeout (log " + log + "):\n"
                + tail(log));
    }

    private void awaitReady(long deadline, Duration timeout) {
        HttpClient http = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(1)).build();
        HttpRequest ready = HttpRequest.newBuilder(uri.resolve("/q/health/ready")).timeout(Duration.ofSeconds(2)).build();
        while (System.nanoTime() < deadline) {
            if (!process.isAlive()) {
                throw new Main.RunFailure("sidecar " + name + " exited with " + process.exitValue()
                        + " (log " + log + "):\n"
                        + tail());
            }
            try {
                if (http.send(ready, HttpResponse.BodyHandlers.discarding()).statusCode() == 200) {
                    return;
                }
            } catch (IOException e) {
                // not listening yet
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                break;
            }
            try {
                process.waitFor(100, TimeUnit.MILLISECONDS);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                break;
            }
        }
        close();
        throw new Main.RunFailure("sidecar " + name + " was not ready within " + timeout.toSeconds() + " s (log " + log + "):\n"
                + tail());
    }

    public URI uri() {
        return uri;
    }

    public String name() {
        return name;
    }

    /** The sidecar's process id. */
    public long pid() {
        return process.pid();
    }

    public Path log() {
        return log;
    }

    /** Whether the sidecar's process is still running. */
    public boolean alive() {
        return process.isAlive();
    }

    /** The last lines of the sidecar's log. */
    public String tail() {
        return tail(log);
    }

    /** The last 30 lines of {@code log}, or a note that it cannot be read. */
    static String tail(Path log) {
        try {
            // Leniently: a child killed mid-character, or logging in another charset, must not hide its log.
            List<String> lines = java.util.Arrays.asList(new String(Files.readAllBytes(log),
                    java.nio.charset.StandardCharsets.UTF_8).split("\r?\n", -1));
            if (!lines.isEmpty() && lines.get(lines.size() - 1).isEmpty()) {
                lines = lines.subList(0, lines.size() - 1);
            }
            return String.join("\n", lines.subList(Math.max(0, lines.size() - 30), lines.size()));
        } catch (IOException e) {
            return "(no log: " + e.getMessage() + ")";
        }
    }

    @Override
    public void close() {
        closeAll(List.of(this));
    }

    /**
     * Stops every one (SIGTERM to all at once), waits for them together at most 10 s, kills those still running and
     * waits for them at most 5 s more: hung children cost one wait, not one each.
     */
    public static void closeAll(Collection<SidecarProcess> sidecars) {
        List<Process> processes = sidecars.stream().map(s -> s.process).toList();
        stop(processes, TimeUnit.SECONDS.toNanos(10));
        processes.forEach(RUNNING::remove);
    }

    /** Destroys all, waits for all within {@code graceNanos}, then kills the rest and waits within 5 s. */
    static void stop(List<Process> processes, long graceNanos) {
        processes.forEach(Process::destroy);
        boolean interrupted = awaitAll(processes, graceNanos);
        processes.stream().filter(Process::isAlive).forEach(Process::destroyForcibly);
        interrupted |= awaitAll(processes, TimeUnit.SECONDS.toNanos(5));
        if (interrupted) {
            Thread.currentThread().interrupt();
        }
    }

    /** Waits for every process to end, within one shared deadline; whether the wait was interrupted (cut short). */
    private static boolean awaitAll(List<Process> processes, long nanos) {
        long deadline = System.nanoTime() + nanos;
        for (Process p : processes) {
            try {
                p.waitFor(Math.max(0, deadline - System.nanoTime()), TimeUnit.NANOSECONDS);
            } catch (InterruptedException e) {
                return true; // the caller kills what is left and says so to its own caller
            }
        }
        return false;
    }
}
