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

    private static HealthCheckResponse readiness(String... shards) {
        Map<String, String> values = new HashMap<>();
        values.put("pikv.role", "gateway");
        values.put("pikv.gateway.shards", String.join(",", shards));
        SidecarConfig config = new SmallRyeConfigBuilder().withMapping(SidecarConfig.class)
                .withConverter(java.time.Duration.class, 200, new io.quarkus.runtime.configuration.DurationConverter())
                .withSources(new PropertiesConfigSource(values, "test", 500)).build()
                .getConfigMapping(SidecarConfig.class);
        return new SidecarHealth(new Sidecar(config)).call();
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
    void aGatewayWithNoShardReadyIsNotReady() throws IOException {
        HealthCheckResponse r = readiness(shard(503), silentShard());
        assertThat(r.getStatus()).isEqualTo(HealthCheckResponse.Status.DOWN);
        assertThat(r.getData().orElseThrow()).containsEntry("readyShards", "0/2");
    }
}
