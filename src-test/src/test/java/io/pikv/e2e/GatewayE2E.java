package io.pikv.e2e;

import io.pikv.cli.SidecarProcess;
import io.pikv.kv.Accuracy;
import io.pikv.sidecar.ShardPolicy;
import io.pikv.kv.ModelShape;
import io.pikv.kv.PartialAttention;
import io.pikv.kv.StorageType;
import io.pikv.sidecar.ShardNode;
import io.pikv.sidecar.client.SidecarClient;
import io.pikv.sidecar.client.SidecarException;
import io.pikv.sidecar.wire.Wire;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.file.Path;
import java.time.Duration;
import java.util.HashMap;
import java.util.Map;
import java.util.Random;
import java.util.concurrent.CompletableFuture;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/**
 * A gateway and two shards, each a child JVM of the packaged sidecar, over real HTTP on loopback: the gateway's
 * answers equal the engine's in one process, an expert moved to another shard loses nothing, and bad requests and
 * a lost shard get problem answers.
 */
@org.junit.jupiter.api.TestMethodOrder(org.junit.jupiter.api.MethodOrderer.OrderAnnotation.class)
class GatewayE2E {
    static final ModelShape SHAPE = new ModelShape(2, 4, 2, 16, 4, 2);
    static SidecarProcess shard0;
    static SidecarProcess shard1;
    static SidecarProcess gateway;
    static SidecarClient client;

    static Map<String, String> settings(String role) {
        Map<String, String> s = new HashMap<>();
        s.put("pikv.role", role);
        s.put("pikv.model.layers", "2");
        s.put("pikv.model.q-heads", "4");
        s.put("pikv.model.kv-heads", "2");
        s.put("pikv.model.head-dim", "16");
        s.put("pikv.model.experts", "4");
        s.put("pikv.model.top-k", "2");
        s.put("pikv.store.page-tokens", "16");
        s.put("pikv.store.buckets", "2");
        s.put("pikv.store.budget-bytes", "1048576");
        // No Kafka in this suite: no telemetry, and the configured state instead of the control topic.
        s.put("pikv.telemetry.enabled", "false");
        s.put("pikv.control.enabled", "false");
        return s;
    }

    @BeforeAll
    static void start() {
        Path root = SidecarProcess.projectRoot();
        Path jar = SidecarProcess.appJar(root);
        Path logs = root.resolve("src-test/target/e2e-logs");
        Duration timeout = Duration.ofSeconds(90);
        CompletableFuture<SidecarProcess> a = CompletableFuture.supplyAsync(() -> {
            Map<String, String> s = settings("shard");
            s.put("pikv.shard-id", "0");
            return SidecarProcess.start(jar, "shard-0", s, logs, timeout);
        });
        CompletableFuture<SidecarProcess> b = CompletableFuture.supplyAsync(() -> {
            Map<String, String> s = settings("shard");
            s.put("pikv.shard-id", "1");
            // Shard 1 holds at most 8 pages and never evicts, so a request can be refused by one shard only.
            s.put("pikv.store.budget-bytes", "16384");
            s.put("pikv.store.eviction", "reject");
            return SidecarProcess.start(jar, "shard-1", s, logs, timeout);
        });
        try {
            shard0 = a.join();
        } finally {
            shard1 = b.handle((started, failure) -> started).join(); // whatever started is closed by stop()
        }
        b.join(); // its failure, if it had one
        Map<String, String> g = settings("gateway");
        g.put("pikv.gateway.shards", shard0.uri() + "," + shard1.uri());
        gateway = SidecarProcess.start(jar, "gateway", g, logs, timeout);
        client = new SidecarClient(gateway.uri(), SHAPE);
    }

    @AfterAll
    static void stop() {
        if (client != null) {
            client.close();
        }
        for (SidecarProcess p : new SidecarProcess[] {gateway, shard1, shard0}) {
            if (p != null) {
                p.close();
            }
        }
    }

    /** Sequences a test opened, closed after it whatever its outcome: the shards (8 pages) are the next tests' too. */
    private final java.util.List<Long> opened = new java.util.ArrayList<>();

    private long open() {
        long seq = client.createSequence(null);
        opened.add(seq);
        return seq;
    }

    @org.junit.jupiter.api.AfterEach
    void closeWhatTheTestOpened() {
        for (long seq : opened) {
            try {
                client.closeSequence(seq);
            } catch (RuntimeException e) {
                // closed by the test already (404), or a shard the test stopped: nothing more to free here
            }
        }
        opened.clear();
    }

    static float[] gaussian(int n, Random rnd) {
        float[] x = new float[n];
        for (int i = 0; i < n; i++) {
            x[i] = (float) rnd.nextGaussian();
        }
        return x;
    }

    static Wire.StepRequest step(int layer, Random rnd) {
        return new Wire.StepRequest(layer, Wire.GATE_LOGITS, Wire.SCOPE_ALL, gaussian(SHAPE.experts(), rnd), null,
                gaussian(SHAPE.queryWidth(), rnd), gaussian(SHAPE.kvWidth(), rnd), gaussian(SHAPE.kvWidth(), rnd));
    }

    @Test
    void stepsThroughTheGatewayEqualTheEngineInOneProcess() {
        long seq = open();
        Random rnd = new Random(1);
        try (ShardNode local = new ShardNode(0, SHAPE, StorageType.FP16, 16, 2, 1 << 20, ShardPolicy.of("reject"))) {
            long ref = local.create(null);
            for (int t = 0; t < 40; t++) {
                Wire.StepRequest step = step(t % 2, rnd);
                Wire.StepResponse over = client.step(seq, step);
                Wire.StepResponse in = local.step(ref, step);
                assertThat(over.position()).isEqualTo(in.position());
                assertThat(over.experts()).containsExactly(in.experts());
                assertThat(Accuracy.relativeError(over.output(), in.output())).isLessThanOrEqualTo(1e-6);
            }
        }
        // Both shards hold part of the sequence: entries went to the shard of their primary expert.
        SidecarClient direct0 = new SidecarClient(shard0.uri(), SHAPE);
        SidecarClient direct1 = new SidecarClient(shard1.uri(), SHAPE);
        int on0 = direct0.describe(seq).get("layers").get(0).get("resident").asInt();
        int on1 = direct1.describe(seq).get("layers").get(0).get("resident").asInt();
        assertThat(on0).isPositive();
        assertThat(on1).isPositive();
        assertThat(on0 + on1).isEqualTo(20);
        assertThat(client.describe(seq).get("layers").get(0).get("resident").asInt()).isEqualTo(20);
        // The gateway's stats say what it is: no KV of its own, the sequences it has open; the shards' hold the KV.
        com.fasterxml.jackson.databind.JsonNode stats = client.stats();
        assertThat(stats.get("role").asText()).isEqualTo("gateway");
        assertThat(stats.get("sequences").asLong()).isPositive();
        assertThat(stats.get("entries").asLong()).isZero();
        com.fasterxml.jackson.databind.JsonNode config;
        try {
            config = new com.fasterxml.jackson.databind.ObjectMapper().readTree(get("/v1/config"));
        } catch (Exception e) {
            throw new IllegalStateException(e);
        }
        assertThat(config.get("role").asText()).isEqualTo("gateway");
        assertThat(config.get("attention").isNull()).as("a gateway attends nowhere").isTrue();
        assertThat(direct0.stats().get("role").asText()).isEqualTo("shard");
        assertThat(direct0.stats().get("entries").asLong() + direct1.stats().get("entries").asLong())
                .isGreaterThanOrEqualTo(20);
        client.closeSequence(seq);
        assertThatThrownBy(() -> direct0.describe(seq)).isInstanceOf(SidecarException.class).hasMessageContaining("404");
    }

    @Test
    void movingAnExpertLosesNothing() throws Exception {
        long seq = open();
        Random rnd = new Random(2);
        for (int t = 0; t < 30; t++) {
            client.step(seq, step(0, rnd));
        }
        float[] q = gaussian(SHAPE.queryWidth(), rnd);
        Wire.AttendRequest all = new Wire.AttendRequest(0, new int[0], q);
        Wire.AttendRequest expert0 = new Wire.AttendRequest(0, new int[] {0}, q);
        PartialAttention before = client.attend(seq, all);
        PartialAttention beforeScoped = client.attend(seq, expert0);

        // Expert 0 (round-robin: shard 0) moves to shard 1.
        long epoch = Long.parseLong(get("/v1/shard-map").replaceAll(".*\"epoch\":(\\d+).*", "$1"));
        put("/v1/shard-map", "{\"epoch\":" + (epoch + 1) + ",\"shards\":2,\"shardOfExpert\":[1,1,0,1]}", 200);
        Throwable failed = null;
        try {
            movedExpertLosesNothing(seq, rnd, q, all, expert0, before, beforeScoped, epoch);
        } catch (Exception | AssertionError e) {
            failed = e;
            throw e;
        } finally {
            // Round-robin again under a newer epoch, so the other tests (in any order) find the map they expect; a
            // failure here is added to the test's own, not put in its place.
            try {
                put("/v1/shard-map", "{\"epoch\":" + (epoch + 2) + ",\"shards\":2,\"shardOfExpert\":[0,1,0,1]}",
                        200);
            } catch (Exception | AssertionError restore) {
                if (failed == null) {
                    throw restore;
                }
                failed.addSuppressed(restore);
            }
        }
    }

    private void movedExpertLosesNothing(long seq, Random rnd, float[] q, Wire.AttendRequest all,
                                         Wire.AttendRequest expert0, PartialAttention before,
                                         PartialAttention beforeScoped, long epoch) throws Exception {
        assertThat(client.attend(seq, all).finish().output()).containsExactly(before.finish().output());
        assertThat(client.attend(seq, expert0).finish().output()).containsExactly(beforeScoped.finish().output());
        assertThat(client.attend(seq, expert0).visited()).isEqualTo(beforeScoped.visited());

        // New entries of expert 0 go to shard 1; the old ones stay readable on shard 0.
        int on1Before = new SidecarClient(shard1.uri(), SHAPE).describe(seq).get("layers").get(0).get("resident").asInt();
        Wire.AppendRequest.Entry e = new Wire.AppendRequest.Entry(Wire.NEXT_POSITION, 0, gaussian(SHAPE.kvWidth(), rnd),
                gaussian(SHAPE.kvWidth(), rnd));
        client.append(seq, new Wire.AppendRequest(0, new Wire.AppendRequest.Entry[] {e}));
        assertThat(new SidecarClient(shard1.uri(), SHAPE).describe(seq).get("layers").get(0).get("resident").asInt())
                .isEqualTo(on1Before + 1);
        assertThat(client.attend(seq, expert0).visited()).isEqualTo(beforeScoped.visited() + 1);
        // An older or equal epoch is refused.
        put("/v1/shard-map", "{\"epoch\":" + (epoch + 1) + ",\"shards\":2,\"shardOfExpert\":[0,1,0,1]}", 409);
        client.closeSequence(seq);
    }

    @Test
    void badRequestsThroughTheGatewayChangeNothing() {
        long seq = open();
        Random rnd = new Random(3);
        client.step(seq, step(0, rnd));
        Wire.AppendRequest bad = new Wire.AppendRequest(0, new Wire.AppendRequest.Entry[] {
            new Wire.AppendRequest.Entry(Wire.NEXT_POSITION, 1, gaussian(SHAPE.kvWidth(), rnd), gaussian(SHAPE.kvWidth(), rnd)),
            new Wire.AppendRequest.Entry(0, 2, gaussian(SHAPE.kvWidth(), rnd), gaussian(SHAPE.kvWidth(), rnd))});
        // Position 0 is already stored (on some shard): the whole request is refused, nothing of it stays.
        assertThatThrownBy(() -> client.append(seq, bad)).isInstanceOf(SidecarException.class)
                .satisfies(x -> assertThat(((SidecarException) x).status()).isEqualTo(400))
                .satisfies(x -> assertThat(((SidecarException) x).type()).isEqualTo("urn:pikv:problem:invalid-request"))
                .hasMessageContaining("already stored");
        assertThat(client.describe(seq).get("layers").get(0).get("resident").asInt()).isEqualTo(1);
        assertThat(client.describe(seq).get("layers").get(0).get("length").asInt()).isEqualTo(1);
        Wire.AppendRequest outOfRange = new Wire.AppendRequest(0, new Wire.AppendRequest.Entry[] {
            new Wire.AppendRequest.Entry(Wire.NEXT_POSITION, 9, gaussian(SHAPE.kvWidth(), rnd), gaussian(SHAPE.kvWidth(), rnd))});
        assertThatThrownBy(() -> client.append(seq, outOfRange)).isInstanceOf(SidecarException.class)
                .hasMessageContaining("expert 9 is out of range");
        // One shard refuses its part (budget, no eviction): the part another shard stored is withdrawn.
        int owner1 = java.util.stream.IntStream.range(0, 4).filter(x -> shardOf(x) == 1).findFirst().orElseThrow();
        int owner0 = java.util.stream.IntStream.range(0, 4).filter(x -> shardOf(x) == 0).findFirst().orElseThrow();
        Wire.AppendRequest.Entry[] many = new Wire.AppendRequest.Entry[201];
        many[0] = new Wire.AppendRequest.Entry(Wire.NEXT_POSITION, owner0, gaussian(SHAPE.kvWidth(), rnd),
                gaussian(SHAPE.kvWidth(), rnd));
        for (int i = 1; i < many.length; i++) {
            many[i] = new Wire.AppendRequest.Entry(Wire.NEXT_POSITION, owner1, gaussian(SHAPE.kvWidth(), rnd),
                    gaussian(SHAPE.kvWidth(), rnd));
        }
        assertThatThrownBy(() -> client.append(seq, new Wire.AppendRequest(1, many))).isInstanceOf(SidecarException.class)
                .satisfies(x -> assertThat(((SidecarException) x).status()).isEqualTo(409))
                .satisfies(x -> assertThat(((SidecarException) x).type()).isEqualTo("urn:pikv:problem:shard-refused"))
                .hasMessageContaining("budget");
        assertThat(client.describe(seq).get("layers").get(1).get("resident").asInt()).isZero();
        assertThat(client.describe(seq).get("layers").get(1).get("length").asInt()).isZero();
        assertThat(new SidecarClient(shard0.uri(), SHAPE).stats().get("evictions").asLong()).isZero();
        assertThatThrownBy(() -> client.step(seq + 1, step(0, rnd))).isInstanceOf(SidecarException.class)
                .satisfies(x -> assertThat(((SidecarException) x).status()).isEqualTo(404));
        client.closeSequence(seq);
    }

    @Test
    @org.junit.jupiter.api.Order(Integer.MAX_VALUE) // last: it stops a shard
    void aLostShardIsABadGatewayAndTheGatewayStaysReadyOnTheOther() throws Exception {
        long seq = open();
        Random rnd = new Random(5);
        int owner0 = java.util.stream.IntStream.range(0, 4).filter(x -> shardOf(x) == 0).findFirst().orElseThrow();
        int owner1 = java.util.stream.IntStream.range(0, 4).filter(x -> shardOf(x) == 1).findFirst().orElseThrow();
        client.append(seq, new Wire.AppendRequest(0, new Wire.AppendRequest.Entry[] {
            new Wire.AppendRequest.Entry(Wire.NEXT_POSITION, owner0, gaussian(SHAPE.kvWidth(), rnd),
                    gaussian(SHAPE.kvWidth(), rnd)),
            new Wire.AppendRequest.Entry(Wire.NEXT_POSITION, owner1, gaussian(SHAPE.kvWidth(), rnd),
                    gaussian(SHAPE.kvWidth(), rnd))}));
        shard1.close();
        // The step's attention needs shard 1, which holds entries in scope: a 502 that names the shard's failure.
        Wire.StepRequest step = new Wire.StepRequest(0, Wire.CHOSEN_EXPERTS, Wire.SCOPE_ALL, null,
                new int[] {owner0}, gaussian(SHAPE.queryWidth(), rnd), gaussian(SHAPE.kvWidth(), rnd),
                gaussian(SHAPE.kvWidth(), rnd));
        assertThatThrownBy(() -> client.step(seq, step)).isInstanceOf(SidecarException.class)
                .satisfies(x -> assertThat(((SidecarException) x).status()).isEqualTo(502))
                .satisfies(x -> assertThat(((SidecarException) x).type())
                        .isEqualTo("urn:pikv:problem:shard-unavailable"));
        // Nothing of the failed step stays: shard 0 holds the one entry it held.
        assertThat(new SidecarClient(shard0.uri(), SHAPE).resident(seq, 0)).isEqualTo(1);
        // Ready while one shard is, saying which is not. Asked until it says so: each probe waits 0.8 s for a shard,
        // which a loaded machine can let pass for the shard that is up.
        org.awaitility.Awaitility.await().atMost(Duration.ofSeconds(30)).untilAsserted(() -> {
            HttpResponse<String> ready = HttpClient.newHttpClient().send(HttpRequest.newBuilder(
                    gateway.uri().resolve("/q/health/ready")).build(), HttpResponse.BodyHandlers.ofString());
            assertThat(ready.statusCode()).as(ready.body()).isEqualTo(200);
            com.fasterxml.jackson.databind.JsonNode kv = null;
            for (com.fasterxml.jackson.databind.JsonNode check : new com.fasterxml.jackson.databind.ObjectMapper()
                    .readTree(ready.body()).get("checks")) {
                if (check.get("name").asText().equals("kv")) {
                    kv = check.get("data");
                }
            }
            assertThat(kv).as(ready.body()).isNotNull();
            assertThat(kv.get("shard-0").asText()).isEqualTo("ready");
            assertThat(kv.get("shard-1").asText()).isEqualTo("unreachable or not ready");
            assertThat(kv.get("readyShards").asText()).isEqualTo("1/2");
        });
    }

    /** A gateway's own block cache, which no telemetry carries (a gateway publishes none), is on its metrics. */
    @Test
    void theGatewaysBlockCacheIsOnItsMetrics() throws Exception {
        client.putBlock("e2e0b10c", new byte[] {1, 2, 3});
        assertThat(client.getBlock("e2e0b10c")).containsExactly(1, 2, 3);
        String metrics = get("/q/metrics");
        assertThat(metrics).containsPattern("(?m)^pikv_blocks_held(\\{[^}]*\\})? [1-9]")
                .containsPattern("(?m)^pikv_blocks_hits_total(\\{[^}]*\\})? [1-9]")
                .contains("pikv_blocks_capacity_bytes");
    }

    static int shardOf(int expert) {
        try {
            String map = get("/v1/shard-map");
            String list = map.replaceAll(".*\"shardOfExpert\":\\[([0-9,]*)\\].*", "$1");
            return Integer.parseInt(list.split(",")[expert]);
        } catch (Exception e) {
            throw new IllegalStateException(e);
        }
    }

    static String get(String path) throws Exception {
        HttpResponse<String> r = HttpClient.newHttpClient().send(HttpRequest.newBuilder(gateway.uri().resolve(path)).build(),
                HttpResponse.BodyHandlers.ofString());
        return r.body();
    }

    static void put(String path, String json, int status) throws Exception {
        HttpResponse<String> r = HttpClient.newHttpClient().send(HttpRequest.newBuilder(gateway.uri().resolve(path))
                .PUT(HttpRequest.BodyPublishers.ofString(json)).header("Content-Type", "application/json").build(),
                HttpResponse.BodyHandlers.ofString());
        assertThat(r.statusCode()).as(r.body()).isEqualTo(status);
    }

}
