package io.pikv.cli;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.net.ServerSocket;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;

/**
 * A sidecar running as a child JVM from the packaged app ({@code sidecar/service/target/quarkus-app}), on a free
 * loopback port, with {@code pikv.*} settings as system properties; ready when {@code /q/health/ready} answers 200.
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
            throw new Main.UsageException("the sidecar is not built (" + jar + " is missing): run ./mvnw -DskipTests "
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

    /** Starts a sidecar and waits until it is ready (or fails with the tail of its log). */
    public static SidecarProcess start(Path jar, String name, Map<String, String> settings, Path logDir,
                                       Duration timeout) {
        int port = freePort();
        List<String> cmd = new ArrayList<>();
        cmd.add(Path.of(System.getProperty("java.home"), "bin", "java").toString());
        cmd.add("-Xmx512m");
        cmd.add("--add-modules");
        cmd.add("jdk.incubator.vector");
        cmd.add("-Dquarkus.http.port=" + port);
        cmd.add("-Dquarkus.http.host=127.0.0.1");
        settings.forEach((k, v) -> cmd.add("-D" + k + "=" + v));
        cmd.add("-jar");
        cmd.add(jar.toString());
        try {
            Files.createDirectories(logDir);
            Path log = logDir.resolve(name + ".log");
            Process process = new ProcessBuilder(cmd).redirectErrorStream(true).redirectOutput(log.toFile()).start();
            SidecarProcess sidecar = new SidecarProcess(name, process, URI.create("http://127.0.0.1:" + port), log);
            sidecar.awaitReady(timeout);
            return sidecar;
        } catch (IOException e) {
            throw new UncheckedIOException("cannot start sidecar " + name + ": " + e.getMessage(), e);
        }
    }

    private void awaitReady(Duration timeout) {
        HttpClient http = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(1)).build();
        HttpRequest ready = HttpRequest.newBuilder(uri.resolve("/q/health/ready")).timeout(Duration.ofSeconds(2)).build();
        long deadline = System.nanoTime() + timeout.toNanos();
        while (System.nanoTime() < deadline) {
            if (!process.isAlive()) {
                throw new IllegalStateException("sidecar " + name + " exited with " + process.exitValue() + ":\n"
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
        throw new IllegalStateException("sidecar " + name + " was not ready within " + timeout.toSeconds() + " s:\n"
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

    /** The last lines of the sidecar's log. */
    public String tail() {
        try {
            List<String> lines = Files.readAllLines(log);
            return String.join("\n", lines.subList(Math.max(0, lines.size() - 30), lines.size()));
        } catch (IOException e) {
            return "(no log: " + e.getMessage() + ")";
        }
    }

    private static int freePort() {
        try (ServerSocket socket = new ServerSocket(0)) {
            return socket.getLocalPort();
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    @Override
    public void close() {
        process.destroy();
        try {
            if (!process.waitFor(10, TimeUnit.SECONDS)) {
                process.destroyForcibly().waitFor(5, TimeUnit.SECONDS);
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            process.destroyForcibly();
        }
    }
}
