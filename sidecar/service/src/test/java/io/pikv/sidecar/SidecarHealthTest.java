package io.pikv.sidecar;

import com.sun.net.httpserver.HttpServer;
import io.smallrye.config.PropertiesConfigSource;
import io.smallrye.config.SmallRyeConfigBuilder;
import org.eclipse.microprofile.health.HealthCheckResponse;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

import java.io.IOException;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

import static org.assertj.core.api.Assertions.assertThat;

/** A gateway's readiness: ready while at least one shard is, with each shard's state in its data. */
class SidecarHealthTest {
    private final List<AutoCloseable> open = new ArrayList<>();

    @AfterEach
    void close() throws Exception {
        for (AutoCloseable c : open) {
            c.close();
        }
    }

    /** A shard whose readiness answers {@code status}. */
    private String shard(int status) throws IOException {
        HttpServer server = HttpServer.create(new InetSocketAddress("127.0.0.1", 0), 0);
        server.createContext("/q/health/ready", x -> {
            x.sendResponseHeaders(status, -1);
            x.close();
        });
        server.start();
        open.add(() -> server.stop(0));
        return "http://127.0.0.1:" + server.getAddress().getPort();
    }

    /** A shard that takes the connection and never answers. */
    private String silentShard() throws IOException {
        ServerSocket socket = new ServerSocket(0, 50, java.net.InetAddress.getLoopbackAddress());
        open.add(socket);
        return "http://127.0.0.1:" + socket.getLocalPort();
    }

    private HealthCheckResponse readiness(String... shards) {
        return readiness(java.time.Duration.ofSeconds(3), shards);
    }

    private HealthCheckResponse readiness(java.time.Duration wait, String... shards) {
        return health(wait, shards).call();
    }

    /** A gateway's readiness check over these shards, waiting {@code wait} for their answers. */
    private SidecarHealth health(java.time.Duration wait, String... shards) {
        Map<String, String> values = new HashMap<>();
        values.put("pikv.role", "gateway");
        values.put("pikv.gateway.shards", String.join(",", shards));
        SidecarConfig config = new SmallRyeConfigBuilder().withMapping(SidecarConfig.class)
                .withConverter(java.time.Duration.class, 200, new io.quarkus.runtime.configuration.DurationConverter())
                .withSources(new PropertiesConfigSource(values, "test", 500)).build()
                .getConfigMapping(SidecarConfig.class);
        Sidecar sidecar = new Sidecar(config);
        open.add(() -> sidecar.shard().close());
        // A wait that a cold client on a busy machine keeps within, not the probe's 0.8 s: the classification is what
        // is tested here (a silent shard is still cut off by it).
        return new SidecarHealth(sidecar, wait);
    }

    @Test
    void aGatewayIsReadyWhileOneShardIsAndSaysWhichAreNot() throws IOException {
        HealthCheckResponse r = readiness(shard(200), shard(503), silentShard());
        assertThat(r.getStatus()).isEqualTo(HealthCheckResponse.Status.UP);
        Map<String, Object> data = r.getData().orElseThrow();
        assertThat(data).containsEntry("shard-0", "ready").containsEntry("shard-1", "unreachable or not ready")
                .containsEntry("shard-2", "unreachable or not ready").containsEntry("readyShards", "1/3");
    }

    @Test
    void aSilentShardIsGivenUpWithinTheProbesWait() throws IOException {
        // Timed is the check alone (the gateway's setup is not): 0.8 s, well inside a probe's 1 s; the bound leaves
        // slack for a loaded machine's first HTTP call while still failing a check held by the call's own timeout.
        SidecarHealth probe = health(SidecarHealth.WAIT, silentShard());
        long t0 = System.nanoTime();
        HealthCheckResponse r = probe.call();
        assertThat(r.getStatus()).isEqualTo(HealthCheckResponse.Status.DOWN);
        assertThat((System.nanoTime() - t0) / 1e9).isLessThan(4.0);
        // The wait is what ends it: a shorter one gives up sooner, and not before the call's own timeout (7/8 of it).
        SidecarHealth quick = health(java.time.Duration.ofMillis(300), silentShard());
        long t1 = System.nanoTime();
        assertThat(quick.call().getStatus()).isEqualTo(HealthCheckResponse.Status.DOWN);
        assertThat((System.nanoTime() - t1) / 1e9).isGreaterThanOrEqualTo(0.25).isLessThan(3.5);
    }

    @Test
    void aGatewayWithNoShardReadyIsNotReady() throws IOException {
        HealthCheckResponse r = readiness(shard(503), silentShard());
        assertThat(r.getStatus()).isEqualTo(HealthCheckResponse.Status.DOWN);
        assertThat(r.getData().orElseThrow()).containsEntry("readyShards", "0/2");
    }
}
