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
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;

/**
 * Readiness of the KV path: a shard's store serves from start-up on, so this check is UP there (reporting its fill
 * level; the shard's readiness also waits for its control topic: {@code pikv-control}). A gateway asks all its
 * shards for their readiness at once and waits 0.8 s at most (inside a probe's default 1 s); it is ready while at
 * least one shard is,
 * and its data say which are not: a step that needs a shard that is down gets a 502, but one shard restarting (a
 * rolling update, a node drain) must not take every model server beside a gateway out of its Service.
 */
@Readiness
@ApplicationScoped
public class SidecarHealth implements HealthCheck {
    /** Longest wait for the shards' answers: inside a probe's default timeout of 1 s. */
    static final Duration WAIT = Duration.ofMillis(800);
    private final Sidecar sidecar;
    private final Duration wait;
    /**
     * HTTP/1.1: an HTTP/2 connection (the client's default, upgraded over plain text) is kept after a probe times out,
     * so a shard whose node went away without a reset would read unreachable through it until the kernel gives the
     * socket up, long after its new pod serves.
     */
    private final HttpClient http = HttpClient.newBuilder().version(HttpClient.Version.HTTP_1_1)
            .connectTimeout(Duration.ofMillis(500)).build();

    @jakarta.inject.Inject
    public SidecarHealth(Sidecar sidecar) {
        this(sidecar, WAIT);
    }

    /** With another wait for the shards' answers (tests: a cold client on a busy machine needs more than 0.8 s). */
    SidecarHealth(Sidecar sidecar, Duration wait) {
        this.sidecar = sidecar;
        this.wait = wait;
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
        List<CompletableFuture<HttpResponse<Void>>> calls = new ArrayList<>();
        List<CompletableFuture<Boolean>> answers = new ArrayList<>();
        for (String shard : shards) {
            HttpRequest request = HttpRequest.newBuilder(URI.create(shard.trim()).resolve("/q/health/ready"))
                    .timeout(wait.multipliedBy(7).dividedBy(8)).build();
            CompletableFuture<HttpResponse<Void>> call = http.sendAsync(request, HttpResponse.BodyHandlers.discarding());
            calls.add(call);
            answers.add(call.thenApply(response -> response.statusCode() == 200).exceptionally(failure -> false));
        }
        try {
            CompletableFuture.allOf(answers.toArray(CompletableFuture[]::new)).get(wait.toMillis(),
                    TimeUnit.MILLISECONDS);
        } catch (TimeoutException | ExecutionException e) {
            // the shards that have not answered by now count as not ready
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        int ready = 0;
        for (int i = 0; i < answers.size(); i++) {
            boolean up = answers.get(i).getNow(false);
            calls.get(i).cancel(true); // a shard that has not answered: its exchange is given up
            r.withData("shard-" + i, up ? "ready" : "unreachable or not ready");
            ready += up ? 1 : 0;
        }
        return r.withData("readyShards", ready + "/" + shards.size()).status(ready > 0).build();
    }
}
