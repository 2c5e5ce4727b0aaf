package io.pikv.sidecar;

import io.pikv.kv.ShardStats;
import jakarta.enterprise.context.ApplicationScoped;
import org.eclipse.microprofile.health.HealthCheck;
import org.eclipse.microprofile.health.HealthCheckResponse;
import org.eclipse.microprofile.health.HealthCheckResponseBuilder;
import org.eclipse.microprofile.health.Readiness;

import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.time.Duration;
import java.util.List;

/**
 * Readiness of the KV path: a shard is ready when its store is (reported with its fill level); a gateway when every
 * shard it fans out to answers its own readiness within a second, since a step may need any of them.
 */
@Readiness
@ApplicationScoped
public class SidecarHealth implements HealthCheck {
    private final Sidecar sidecar;
    private final HttpClient http = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(1)).build();

    public SidecarHealth(Sidecar sidecar) {
        this.sidecar = sidecar;
    }

    @Override
    public HealthCheckResponse call() {
        HealthCheckResponseBuilder r = HealthCheckResponse.named("kv").withData("role", sidecar.config().role().name());
        if (sidecar.gateway() == null) {
            ShardStats s = sidecar.shard().stats();
            return r.up().withData("shard", s.shard()).withData("bytesInUse", s.bytesInUse())
                    .withData("budgetBytes", s.budgetBytes()).withData("sequences", sidecar.shard().sequenceCount())
                    .build();
        }
        List<String> shards = sidecar.config().gateway().shards().orElse(List.of());
        boolean all = true;
        for (int i = 0; i < shards.size(); i++) {
            boolean ready = ready(URI.create(shards.get(i).trim()));
            r.withData("shard-" + i, ready ? "ready" : "unreachable or not ready");
            all &= ready;
        }
        return r.status(all).build();
    }

    private boolean ready(URI shard) {
        try {
            HttpRequest request = HttpRequest.newBuilder(shard.resolve("/q/health/ready")).timeout(Duration.ofSeconds(1))
                    .build();
            return http.send(request, HttpResponse.BodyHandlers.discarding()).statusCode() == 200;
        } catch (java.io.IOException e) {
            return false;
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            return false;
        }
    }
}
