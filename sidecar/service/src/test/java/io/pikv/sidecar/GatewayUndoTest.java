package io.pikv.sidecar;

import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpServer;
import io.pikv.kv.ModelShape;
import io.pikv.kv.routing.CacheAwareRouter;
import io.pikv.kv.routing.HashRouter;
import io.pikv.sidecar.client.SidecarClient;
import io.pikv.sidecar.wire.Wire;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

import java.io.IOException;
import java.net.InetSocketAddress;
import java.net.URI;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CopyOnWriteArrayList;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/**
 * What a gateway does when shards fail: an append refused by one shard is taken back from the others, and when that
 * cannot be confirmed its positions are not given again; a malformed answer is a 502. Against two fake shards
 * whose answers the test chooses.
 */
class GatewayUndoTest {
    /** Two experts, one per shard (round-robin): expert 0 on shard 0, expert 1 on shard 1. */
    static final ModelShape SHAPE = new ModelShape(1, 2, 1, 4, 2, 1);

    /** A shard that answers each path with a fixed status and body, and records the requests. */
    static final class FakeShard implements AutoCloseable {
        final HttpServer server;
        final List<String> requests = new CopyOnWriteArrayList<>();
        volatile int appendStatus = 200;
        volatile String appendDetail = "full";
        volatile int withdrawStatus = 200;
        volatile int closeStatus = 204;
        /** The body a create answers with. */
        volatile String createAnswer = "{\"id\":7}";
        volatile int createStatus = 201;
        /** The partial an attention call answers with (default: negative heads and dim). */
        volatile byte[] partial = java.nio.ByteBuffer.allocate(12).order(java.nio.ByteOrder.LITTLE_ENDIAN).putInt(-5)
                .putInt(-2).putInt(0).array();
        /** Status of a step (the owner's store-and-attend) and its problem type when it is an error. */
        volatile int stepStatus = 200;
        volatile String stepType = "about:blank";
        /** How many entries a withdrawal says it took back (0: the request it undoes has not landed yet). */
        volatile int withdrawn = 1;
        /** When set, a create waits for it before it answers. */
        volatile java.util.concurrent.CountDownLatch createGate;
        /** When set, a close waits for it before it answers. */
        volatile java.util.concurrent.CountDownLatch closeGate;
        /** Closes still to answer 503 before {@link #closeStatus} applies. */
        final java.util.concurrent.atomic.AtomicInteger closeFailuresLeft = new java.util.concurrent.atomic.AtomicInteger();
        /** What {@code GET /v1/sequences/{id}} answers. */
        volatile String describeAnswer = "{}";
        /** Its status: 200, or a problem (404: the shard restarted). */
        volatile int describeStatus = 200;
        /** When set, a GET is dropped unanswered (the connection closed), as by a shard that went away. */
        volatile boolean describeDropped;
        /** When set, an append waits for it before it answers. */
        volatile java.util.concurrent.CountDownLatch appendGate;
        /** The body of the last withdrawal asked of this shard. */
        volatile String lastWithdrawal;

        FakeShard() throws IOException {
            server = HttpServer.create(new InetSocketAddress("127.0.0.1", 0), 0);
            server.createContext("/v1/sequences", this::handle);
            server.start();
        }

        URI uri() {
            return URI.create("http://127.0.0.1:" + server.getAddress().getPort());
        }

        private void handle(HttpExchange x) throws IOException {
            String path = x.getRequestURI().getPath();
            byte[] body = x.getRequestBody().readAllBytes();
            if (path.endsWith("/withdrawals")) {
                lastWithdrawal = new String(body, java.nio.charset.StandardCharsets.UTF_8);
            }
            requests.add(x.getRequestMethod() + " " + path);
            if (x.getRequestMethod().equals("POST") && path.equals("/v1/sequences")) {
                java.util.concurrent.CountDownLatch gate = createGate;
                if (gate != null) {
                    try {
                        gate.await(10, java.util.concurrent.TimeUnit.SECONDS);
                    } catch (InterruptedException e) {
                        Thread.currentThread().interrupt();
                    }
                }
                reply(x, createStatus, createStatus == 201 ? createAnswer
                        : "{\"type\":\"" + (createStatus == 409 ? "urn:pikv:problem:sequence-exists" : "about:blank")
                        + "\",\"status\":" + createStatus + ",\"title\":\"x\"}");
            } else if (path.endsWith("/entries")) {
                java.util.concurrent.CountDownLatch gate = appendGate;
                if (gate != null) {
                    try {
                        gate.await(10, java.util.concurrent.TimeUnit.SECONDS);
                    } catch (InterruptedException e) {
                        Thread.currentThread().interrupt();
                    }
                }
                // A sidecar's problem kinds: 409 budget-exceeded, 400 invalid-request, 404 unknown-sequence.
                String kind = switch (appendStatus) {
                    case 409 -> "urn:pikv:problem:budget-exceeded";
                    case 400 -> "urn:pikv:problem:invalid-request";
                    case 404 -> "urn:pikv:problem:unknown-sequence";
                    case 422 -> "urn:pikv:problem:model-mismatch";
                    case 500 -> "urn:pikv:problem:internal";
                    default -> "about:blank";
                };
                reply(x, appendStatus, appendStatus == 200 ? "{\"positions\":[0]}"
                        : "{\"type\":\"" + kind + "\",\"status\":" + appendStatus + ",\"title\":\"refused\","
                        + "\"detail\":\"" + appendDetail + "\"}");
            } else if (path.endsWith("/attention")) {
                byte[] b = partial;
                x.getResponseHeaders().add("Content-Type", "application/octet-stream");
                x.sendResponseHeaders(200, b.length);
                x.getResponseBody().write(b);
                x.close();
            } else if (path.endsWith("/steps")) {
                if (stepStatus != 200) {
                    reply(x, stepStatus, "{\"type\":\"" + stepType + "\",\"status\":" + stepStatus
                            + ",\"title\":\"x\",\"detail\":\"step failed\"}");
                } else {
                    byte[] b = Wire.encodePartial(io.pikv.kv.PartialAttention.empty(SHAPE.qHeads(), SHAPE.headDim(),
                            false));
                    x.getResponseHeaders().add("Content-Type", "application/octet-stream");
                    x.sendResponseHeaders(200, b.length);
                    x.getResponseBody().write(b);
                    x.close();
                }
            } else if (path.endsWith("/withdrawals")) {
                reply(x, withdrawStatus, withdrawStatus == 200 ? "{\"withdrawn\":" + withdrawn + "}"
                        : "{\"type\":\"about:blank\",\"status\":404,\"title\":\"not-found\",\"detail\":\"gone\"}");
            } else if (x.getRequestMethod().equals("GET")) {
                if (describeDropped) {
                    x.close(); // no status line: the client reads the connection's end
                } else {
                    reply(x, describeStatus, describeStatus == 200 ? describeAnswer
                            : "{\"type\":\"urn:pikv:problem:unknown-sequence\",\"status\":" + describeStatus
                            + ",\"title\":\"x\"}");
                }
            } else if (x.getRequestMethod().equals("DELETE")) {
                java.util.concurrent.CountDownLatch gate = closeGate;
                if (gate != null) {
                    try {
                        gate.await(10, java.util.concurrent.TimeUnit.SECONDS);
                    } catch (InterruptedException e) {
                        Thread.currentThread().interrupt();
                    }
                }
                int status = closeFailuresLeft.getAndUpdate(n -> Math.max(0, n - 1)) > 0 ? 503 : closeStatus;
                reply(x, status, status == 204 ? ""
                        : "{\"type\":\"about:blank\",\"status\":" + status + ",\"title\":\"down\"}");
            } else {
                reply(x, 204, "");
            }
        }

        private static void reply(HttpExchange x, int status, String body) throws IOException {
            byte[] b = body.getBytes(StandardCharsets.UTF_8);
            x.getResponseHeaders().add("Content-Type", status >= 400 ? "application/problem+json" : "application/json");
            x.sendResponseHeaders(status, b.length == 0 ? -1 : b.length);
            if (b.length > 0) {
                x.getResponseBody().write(b);
            }
            x.close();
        }

        @Override
        public void close() {
            server.stop(0);
        }
    }

    final List<FakeShard> fakes = new ArrayList<>();

    @AfterEach
    void stop() {
        fakes.forEach(FakeShard::close);
    }

    private Gateway gateway() throws IOException {
        return gateway(SHAPE);
    }

    private Gateway gateway(ModelShape shape) throws IOException {
        List<SidecarClient> clients = new ArrayList<>();
        for (int i = 0; i < 2; i++) {
            FakeShard f = new FakeShard();
            fakes.add(f);
            clients.add(new SidecarClient(f.uri(), shape));
        }
        return new Gateway(shape, clients, () -> new HashRouter(shape.topK()));
    }

    private static Wire.AppendRequest twoEntries() {
        float[] kv = new float[SHAPE.kvWidth()];
        return new Wire.AppendRequest(0, new Wire.AppendRequest.Entry[] {
            new Wire.AppendRequest.Entry(Wire.NEXT_POSITION, 0, kv, kv),
            new Wire.AppendRequest.Entry(Wire.NEXT_POSITION, 1, kv, kv)});
    }

    /** The request line of a POST to sequence {@code seq}'s {@code what} (withdrawals, steps, entries). */
    private static String post(long seq, String what) {
        return "POST /v1/sequences/" + seq + "/" + what;
    }

    /**
     * A step whose owner answers 503 (a proxy's: it may be storing the token) and whose undo takes nothing back (the
     * late store has not landed): the step fails (502) and shard 0 stays failing steps until the test says otherwise.
     */
    private void failStepUnconfirmed(Gateway g, long seq) {
        fakes.get(0).stepStatus = 503;
        fakes.get(0).withdrawn = 0;
        assertThatThrownBy(() -> g.step(seq, stepOnShard0())).isInstanceOf(ShardFailure.class);
    }

    /** The requests {@code shard} received after its first {@code before}. */
    private static List<String> since(FakeShard shard, int before) {
        return shard.requests.subList(before, shard.requests.size());
    }

    @Test
    void aFailedCreateClosesTheSequenceWhereverItMayHaveBeenMade() throws IOException {
        Gateway g = gateway();
        // Shard 1 fails (500): it may have made the sequence, so both shards are asked to close it.
        fakes.get(1).createStatus = 500;
        assertThatThrownBy(() -> g.create(42L)).isInstanceOf(ShardFailure.class);
        assertThat(fakes.get(0).requests).containsExactly("POST /v1/sequences", "DELETE /v1/sequences/42");
        assertThat(fakes.get(1).requests).as("asked first whether it holds entries: it holds none")
                .containsExactly("POST /v1/sequences", "GET /v1/sequences/42", "DELETE /v1/sequences/42");
        // Shard 1 refuses (409: the id is taken there): its sequence is not the gateway's to close.
        fakes.forEach(f -> f.requests.clear());
        fakes.get(1).createStatus = 409;
        assertThatThrownBy(() -> g.create(43L)).isInstanceOf(ShardFailure.class);
        assertThat(fakes.get(0).requests).containsExactly("POST /v1/sequences", "DELETE /v1/sequences/43");
        assertThat(fakes.get(1).requests).containsExactly("POST /v1/sequences");
        // Shard 1 fails, and holds entries under the id: another gateway's sequence (a new one is empty), left open.
        fakes.forEach(f -> f.requests.clear());
        fakes.get(1).createStatus = 500;
        fakes.get(1).describeAnswer = "{\"layers\":[{\"layer\":0,\"length\":3,\"resident\":3}]}";
        assertThatThrownBy(() -> g.create(44L)).isInstanceOf(ShardFailure.class);
        assertThat(fakes.get(0).requests).containsExactly("POST /v1/sequences", "DELETE /v1/sequences/44");
        assertThat(fakes.get(1).requests).containsExactly("POST /v1/sequences", "GET /v1/sequences/44");
        // Shard 1 fails, and shard 0 does not confirm closing what it made: the id stays taken, closing, until a
        // close gets through (a create of it meanwhile would meet shard 0's sequence).
        fakes.forEach(f -> f.requests.clear());
        fakes.get(1).describeAnswer = "{\"layers\":[]}";
        fakes.get(0).closeStatus = 500;
        assertThatThrownBy(() -> g.create(45L)).isInstanceOf(ShardFailure.class);
        assertThatThrownBy(() -> g.create(45L)).isInstanceOf(SequenceExistsException.class);
        assertThatThrownBy(() -> g.lengths(45L)).isInstanceOf(io.pikv.kv.UnknownSequenceException.class);
        fakes.get(0).closeStatus = 204;
        fakes.forEach(f -> f.requests.clear());
        g.close(45L);
        // Only shard 0 is asked: shard 1 confirmed closing what it made.
        assertThat(fakes.get(0).requests).containsExactly("DELETE /v1/sequences/45");
        assertThat(fakes.get(1).requests).isEmpty();
        // Shard 1 refuses (409: another owner's sequence of the id), shard 0 does not confirm its close: the close
        // that gets through later asks shard 0 alone, never shard 1, whose sequence is not the gateway's.
        fakes.get(1).createStatus = 409;
        fakes.get(0).closeStatus = 500;
        assertThatThrownBy(() -> g.create(46L)).isInstanceOf(ShardFailure.class);
        fakes.get(0).closeStatus = 204;
        fakes.forEach(f -> f.requests.clear());
        g.close(46L);
        assertThat(fakes.get(0).requests).containsExactly("DELETE /v1/sequences/46");
        assertThat(fakes.get(1).requests).isEmpty();
        fakes.get(1).createStatus = 500;
        // An id the gateway chose, which no client learnt, is let go: nothing is left taken per failed create.
        fakes.get(0).closeStatus = 500;
        int open = g.openSequences();
        assertThatThrownBy(() -> g.create(null)).isInstanceOf(ShardFailure.class);
        assertThat(g.openSequences()).isEqualTo(open);
        fakes.get(0).closeStatus = 204;
        fakes.get(1).createStatus = 201;
        assertThat(g.create(45L)).isEqualTo(45L);
    }

    @Test
    void anIdleSequenceIsClosedOnItsShardsAndOneAShardDidNotConfirmIsTriedAgain() throws IOException {
        Gateway g = gateway();
        long idle = g.create(null);
        long used = g.create(null);
        long twoSeconds = java.time.Duration.ofSeconds(2).toNanos();
        long minute = java.time.Duration.ofMinutes(1).toNanos();
        assertThat(g.closeIdle(minute)).isZero();
        // Every shard of an open sequence is told it is alive once per period, whether the calls reached it or not.
        assertThat(g.keepAlive(minute)).isZero();
        org.awaitility.Awaitility.await().pollDelay(java.time.Duration.ofMillis(3000)).until(() -> true);
        assertThat(g.keepAlive(twoSeconds)).isEqualTo(2);
        assertThat(fakes.get(0).requests).contains("GET /v1/sequences/" + idle, "GET /v1/sequences/" + used);
        assertThat(fakes.get(1).requests).contains("GET /v1/sequences/" + idle, "GET /v1/sequences/" + used);
        assertThat(g.keepAlive(minute)).isZero();
        g.lengths(used);
        fakes.get(1).closeStatus = 503;
        assertThat(g.closeIdle(twoSeconds)).isZero(); // shard 1 did not confirm
        assertThatThrownBy(() -> g.lengths(idle)).isInstanceOf(io.pikv.kv.UnknownSequenceException.class);
        fakes.get(1).closeStatus = 204;
        g.lengths(used);
        assertThat(g.closeIdle(twoSeconds)).isEqualTo(1);
        String delete = "DELETE /v1/sequences/" + idle;
        assertThat(fakes.get(1).requests.stream().filter(delete::equals)).hasSize(2);
        assertThat(fakes.get(0).requests).doesNotContain("DELETE /v1/sequences/" + used);
        assertThat(g.lengths(used)).containsExactly(0);
        assertThat(g.openSequences()).isEqualTo(1);
    }

    /**
     * One keep-alive pass over three sequences: a shard whose read fails is not asked again in that pass (one down
     * shard must not hold the pass for a timeout per sequence), while one that answers, even 404, is asked for each.
     */
    @Test
    void aKeepAlivePassSkipsAShardThatFailedAndAsksOneThatAnswered() throws IOException {
        Gateway g = gateway();
        for (int i = 0; i < 3; i++) {
            g.create(null);
        }
        fakes.get(0).describeStatus = 404; // restarted: it answers, so it is reachable
        fakes.get(1).describeDropped = true;
        fakes.forEach(f -> f.requests.clear());
        assertThat(g.keepAlive(0)).isEqualTo(3);
        assertThat(fakes.get(0).requests.stream().filter(r -> r.startsWith("GET "))).hasSize(3);
        // One read (its kept connection's failure may send that GET once more on a new one), not one per sequence.
        assertThat(fakes.get(1).requests.stream().filter(r -> r.startsWith("GET ")).count()).isBetween(1L, 2L);
    }

    /**
     * A shutdown that finds the idle sweep closing a sequence (and that close then failing on a shard) closes it once
     * that close is over, instead of taking it as closed.
     */
    @Test
    void aShutdownClosesASequenceWhoseIdleCloseWasUnderWayAndFailed() throws Exception {
        Gateway g = gateway();
        long seq = g.create(null);
        java.util.concurrent.CountDownLatch gate = new java.util.concurrent.CountDownLatch(1);
        fakes.get(0).closeGate = gate;
        fakes.get(1).closeFailuresLeft.set(1);
        String delete = "DELETE /v1/sequences/" + seq;
        java.util.concurrent.CompletableFuture<Integer> sweep = java.util.concurrent.CompletableFuture.supplyAsync(
                () -> g.closeIdle(0));
        org.awaitility.Awaitility.await().atMost(java.time.Duration.ofSeconds(10))
                .until(() -> fakes.get(0).requests.contains(delete));
        java.util.concurrent.CompletableFuture<Integer> shutdown = java.util.concurrent.CompletableFuture.supplyAsync(
                () -> g.closeAllOnShards(java.time.Duration.ofSeconds(10)));
        // The shutdown has found the sweep's close under way and waits for it (its close thread polls, asleep).
        org.awaitility.Awaitility.await().atMost(java.time.Duration.ofSeconds(10)).until(() ->
                Thread.getAllStackTraces().keySet().stream().anyMatch(t -> t.getName().equals("pikv-gateway-close")
                        && t.getState() == Thread.State.TIMED_WAITING));
        gate.countDown(); // the sweep's close: shard 0 closes, shard 1 answers 503, so it stays closing
        assertThat(sweep.get(10, java.util.concurrent.TimeUnit.SECONDS)).isZero();
        assertThat(shutdown.get(10, java.util.concurrent.TimeUnit.SECONDS)).isEqualTo(1);
        assertThat(g.openSequences()).isZero();
        assertThat(fakes.get(1).requests.stream().filter(delete::equals)).hasSize(2);
    }

    /** Starts a one-entry append whose shard 0 answers only once {@code gate} opens. */
    private java.util.concurrent.CompletableFuture<int[]> appendHeldBy(java.util.concurrent.CountDownLatch gate,
                                                                    Gateway g, long seq) {
        fakes.get(0).appendGate = gate;
        float[] kv = new float[SHAPE.kvWidth()];
        Wire.AppendRequest one = new Wire.AppendRequest(0, new Wire.AppendRequest.Entry[] {
            new Wire.AppendRequest.Entry(Wire.NEXT_POSITION, 0, kv, kv)});
        java.util.concurrent.CompletableFuture<int[]> append =
                java.util.concurrent.CompletableFuture.supplyAsync(() -> g.append(seq, one));
        // From here the append holds the sequence (it looked it up and waits for shard 0 under its lock): the times
        // the tests wait are measured from this moment, not from when a busy machine happened to start the thread.
        String sent = post(seq, "entries");
        org.awaitility.Awaitility.await().atMost(java.time.Duration.ofSeconds(10))
                .until(() -> fakes.get(0).requests.contains(sent));
        return append;
    }

    /** A call's end counts as use: a sweep right after a call that took longer than the idle timeout keeps it. */
    @Test
    void aCallLongerThanTheIdleTimeoutLeavesTheSequenceFreshWhenItEnds() throws Exception {
        Gateway g = gateway();
        long seq = g.create(null);
        java.util.concurrent.CountDownLatch gate = new java.util.concurrent.CountDownLatch(1);
        java.util.concurrent.CompletableFuture<int[]> append = appendHeldBy(gate, g, seq);
        // Held 3.5 s against an idle timeout of 3 s: a pause of up to 3 s between the call's end and the sweep (a
        // loaded machine) does not make it look idle.
        org.awaitility.Awaitility.await().pollDelay(java.time.Duration.ofMillis(3500)).until(() -> true);
        gate.countDown();
        assertThat(append.get(10, java.util.concurrent.TimeUnit.SECONDS)).containsExactly(0);
        assertThat(g.closeIdle(java.time.Duration.ofSeconds(3).toNanos())).isZero();
        assertThat(g.lengths(seq)).containsExactly(1);
    }

    /** The same for a create whose shards take longer than the idle timeout to answer. */
    @Test
    void aCreateLongerThanTheIdleTimeoutLeavesTheSequenceFreshWhenItEnds() throws Exception {
        Gateway g = gateway();
        java.util.concurrent.CountDownLatch gate = new java.util.concurrent.CountDownLatch(1);
        fakes.get(1).createGate = gate;
        java.util.concurrent.CompletableFuture<Long> create =
                java.util.concurrent.CompletableFuture.supplyAsync(() -> g.create(null));
        // Held from shard 1's receipt of the create (not from when this thread started waiting) for 3.5 s.
        org.awaitility.Awaitility.await().atMost(java.time.Duration.ofSeconds(10))
                .until(() -> fakes.get(1).requests.contains("POST /v1/sequences"));
        org.awaitility.Awaitility.await().pollDelay(java.time.Duration.ofMillis(3500)).until(() -> true);
        gate.countDown();
        long seq = create.get(10, java.util.concurrent.TimeUnit.SECONDS);
        assertThat(g.closeIdle(java.time.Duration.ofSeconds(3).toNanos())).isZero();
        assertThat(g.lengths(seq)).containsExactly(0);
    }

    @Test
    void aSequenceACallHoldsPastTheIdleTimeoutIsNotClosedUnderIt() throws Exception {
        Gateway g = gateway();
        long seq = g.create(null);
        java.util.concurrent.CountDownLatch gate = new java.util.concurrent.CountDownLatch(1);
        // An append that starts now and takes 3 s (a slow shard), against an idle timeout of 2 s.
        java.util.concurrent.CompletableFuture<int[]> append = appendHeldBy(gate, g, seq);
        org.awaitility.Awaitility.await().pollDelay(java.time.Duration.ofMillis(2500)).until(() -> true);
        java.util.concurrent.CompletableFuture<Integer> sweep = new java.util.concurrent.CompletableFuture<>();
        Thread sweeper = new Thread(() -> sweep.complete(g.closeIdle(java.time.Duration.ofSeconds(2).toNanos())));
        sweeper.start();
        // The sweep found the sequence idle by its last use and waits for the lock the append holds.
        org.awaitility.Awaitility.await().atMost(java.time.Duration.ofSeconds(10))
                .until(() -> sweeper.getState() == Thread.State.BLOCKED);
        gate.countDown();
        assertThat(append.get(10, java.util.concurrent.TimeUnit.SECONDS)).containsExactly(0);
        // The sweep waited for the append's lock: the sequence was in use to its end, so it stays open.
        assertThat(sweep.get(10, java.util.concurrent.TimeUnit.SECONDS)).isZero();
        assertThat(g.lengths(seq)).containsExactly(1);
    }

    @Test
    void anIdBelowOneIsRefusedBeforeAnyShardIsAsked() throws IOException {
        Gateway g = gateway();
        for (long id : new long[] {0, -5}) {
            assertThatThrownBy(() -> g.create(id)).isInstanceOf(IllegalArgumentException.class)
                    .hasMessage("a sequence id must be >= 1, got " + id);
        }
        assertThat(fakes.get(0).requests).isEmpty();
        assertThat(fakes.get(1).requests).isEmpty();
    }

    @Test
    void keysAndValuesNoShardTakesAreRefusedBeforeAnyShardIsAsked() throws IOException {
        Gateway g = gateway();
        long seq = g.create(null);
        fakes.forEach(f -> f.requests.clear());
        float[] ok = new float[SHAPE.kvWidth()];
        float[] huge = new float[SHAPE.kvWidth()];
        huge[1] = 1e16f; // beyond the ±2^50 every page type takes
        // An append whose second entry no shard could store: the first entry's shard is not asked either.
        Wire.AppendRequest append = new Wire.AppendRequest(0, new Wire.AppendRequest.Entry[] {
            new Wire.AppendRequest.Entry(Wire.NEXT_POSITION, 0, ok, ok),
            new Wire.AppendRequest.Entry(Wire.NEXT_POSITION, 1, ok, huge)});
        assertThatThrownBy(() -> g.append(seq, append)).isInstanceOf(IllegalArgumentException.class)
                .hasMessage("entry 1: v[head 0][1] is " + 1e16f + ": values must be finite and within ±2^50 (about 1.1e15)");
        // A step with such a key: neither the owner nor the other shards (which would attend with its query).
        Wire.StepRequest step = new Wire.StepRequest(0, Wire.CHOSEN_EXPERTS, Wire.SCOPE_ALL, null, new int[] {0},
                new float[SHAPE.queryWidth()], huge, ok);
        assertThatThrownBy(() -> g.step(seq, step)).isInstanceOf(IllegalArgumentException.class)
                .hasMessage("k[head 0][1] is " + 1e16f + ": values must be finite and within ±2^50 (about 1.1e15)");
        assertThat(fakes.get(0).requests).isEmpty();
        assertThat(fakes.get(1).requests).isEmpty();
        assertThat(g.lengths(seq)).containsExactly(0);
    }

    @Test
    void aWithdrawalAsksOnlyTheShardsHoldingTheLayerAndAddsTheirCounts() throws IOException {
        Gateway g = gateway();
        long seq = g.create(null);
        String withdraw = post(seq, "withdrawals");
        // Nothing appended yet: no shard holds the layer, none is asked, nothing is taken back.
        assertThat(g.withdraw(seq, 0, new int[] {0})).isZero();
        assertThat(fakes.get(0).requests).doesNotContain(withdraw);
        // One entry on each shard (expert 0 on shard 0, expert 1 on shard 1): both are asked; 2 + 1 taken back.
        g.append(seq, twoEntries());
        fakes.get(0).withdrawn = 2;
        assertThat(g.withdraw(seq, 0, new int[] {0, 1})).isEqualTo(3);
        assertThat(fakes.get(0).requests).contains(withdraw);
        assertThat(fakes.get(1).requests).contains(withdraw);
        // Bad positions are the client's mistake, refused before any shard is asked.
        fakes.forEach(f -> f.requests.clear());
        assertThatThrownBy(() -> g.withdraw(seq, 0, new int[] {1, 1})).isInstanceOf(IllegalArgumentException.class);
        assertThatThrownBy(() -> g.withdraw(seq, 0, new int[] {-1})).isInstanceOf(IllegalArgumentException.class);
        assertThatThrownBy(() -> g.withdraw(seq, 1, new int[] {0})).isInstanceOf(IllegalArgumentException.class);
        assertThat(fakes.get(0).requests).isEmpty();
        assertThat(fakes.get(1).requests).isEmpty();
        // A shard that cannot be asked fails the withdrawal as a bad gateway.
        fakes.get(1).withdrawStatus = 404;
        assertThatThrownBy(() -> g.withdraw(seq, 0, new int[] {0})).isInstanceOf(ShardFailure.class)
                .satisfies(e -> assertThat(((ShardFailure) e).status()).isEqualTo(502));
        assertThatThrownBy(() -> g.withdraw(seq + 1, 0, new int[] {0}))
                .isInstanceOf(io.pikv.kv.UnknownSequenceException.class);
    }

    @Test
    void aSequencesLayersAreOneStateWithOneDescriptionAskedOfEachShardHoldingEntries() throws IOException {
        Gateway g = gateway(new ModelShape(2, 2, 1, 4, 2, 1)); // SHAPE with two layers
        long seq = g.create(null);
        String describe = "GET /v1/sequences/" + seq;
        fakes.forEach(f -> f.requests.clear());
        assertThat(g.layers(seq)).as("nothing stored: no shard is asked").isDeepEqualTo(
                new int[][] {new int[2], new int[2]});
        assertThat(fakes.get(0).requests).doesNotContain(describe);
        g.append(seq, twoEntries()); // layer 0: expert 0 on shard 0, expert 1 on shard 1
        float[] kv = new float[SHAPE.kvWidth()];
        g.append(seq, new Wire.AppendRequest(1, new Wire.AppendRequest.Entry[] {
            new Wire.AppendRequest.Entry(Wire.NEXT_POSITION, 0, kv, kv)})); // layer 1: shard 0 only
        String layers = "{\"layers\":[{\"layer\":0,\"length\":2,\"resident\":%d},"
                + "{\"layer\":1,\"length\":1,\"resident\":%d}]}";
        fakes.get(0).describeAnswer = String.format(layers, 1, 1);
        fakes.get(1).describeAnswer = String.format(layers, 1, 9); // layer 1: none given to it, so not counted
        fakes.forEach(f -> f.requests.clear());
        int[][] read = g.layers(seq);
        assertThat(read[0]).isEqualTo(g.lengths(seq));
        assertThat(read[1]).containsExactly(2, 1);
        for (FakeShard f : fakes) { // once each, though shard 0 holds entries of both layers
            assertThat(f.requests).containsExactly(describe);
        }
        fakes.get(1).describeAnswer = "{\"layers\":[]}"; // a description without the layers: a bad gateway
        assertThatThrownBy(() -> g.layers(seq)).isInstanceOf(ShardFailure.class)
                .satisfies(e -> assertThat(((ShardFailure) e).status()).isEqualTo(502));
        assertThatThrownBy(() -> g.layers(seq + 1)).isInstanceOf(io.pikv.kv.UnknownSequenceException.class);
    }

    @Test
    void aCloseAShardDidNotConfirmKeepsTheIdUntilARepeatedCloseSucceeds() throws IOException {
        Gateway g = gateway();
        long seq = g.create(null);
        fakes.get(1).closeStatus = 503;
        assertThatThrownBy(() -> g.close(seq)).isInstanceOf(ShardFailure.class);
        // Closing: unknown to everything but a close, and its id is not free.
        assertThatThrownBy(() -> g.lengths(seq)).isInstanceOf(io.pikv.kv.UnknownSequenceException.class);
        assertThatThrownBy(() -> g.append(seq, twoEntries())).isInstanceOf(io.pikv.kv.UnknownSequenceException.class);
        assertThatThrownBy(() -> g.create(seq)).isInstanceOf(SequenceExistsException.class);
        assertThat(fakes.get(0).requests).doesNotContain(post(seq, "entries"));

        fakes.get(1).closeStatus = 204;
        g.close(seq); // asks shard 1 again, not shard 0, which confirmed (the id may be another's there by now)
        String delete = "DELETE /v1/sequences/" + seq;
        assertThat(fakes.get(1).requests.stream().filter(delete::equals)).hasSize(2);
        assertThat(fakes.get(0).requests.stream().filter(delete::equals)).hasSize(1);
        assertThatThrownBy(() -> g.close(seq)).isInstanceOf(io.pikv.kv.UnknownSequenceException.class);
    }

    @Test
    void aSecondCloseWhileTheFirstAsksTheShardsIsUnknownAsTheShardsWouldSay() throws Exception {
        Gateway g = gateway();
        long seq = g.create(null);
        java.util.concurrent.CountDownLatch gate = new java.util.concurrent.CountDownLatch(1);
        fakes.get(0).closeGate = gate;
        java.util.concurrent.CompletableFuture<Void> first =
                java.util.concurrent.CompletableFuture.runAsync(() -> g.close(seq));
        org.awaitility.Awaitility.await().atMost(java.time.Duration.ofSeconds(10))
                .until(() -> fakes.get(0).requests.contains("DELETE /v1/sequences/" + seq));
        // Only one of two concurrent closes closes: the other is told the sequence is unknown, and asks no shard.
        assertThatThrownBy(() -> g.close(seq)).isInstanceOf(io.pikv.kv.UnknownSequenceException.class);
        gate.countDown();
        first.get(10, java.util.concurrent.TimeUnit.SECONDS);
        for (FakeShard f : fakes) {
            assertThat(f.requests.stream().filter(("DELETE /v1/sequences/" + seq)::equals)).hasSize(1);
        }
        assertThatThrownBy(() -> g.close(seq)).isInstanceOf(io.pikv.kv.UnknownSequenceException.class);
    }

    @Test
    void aStoppingGatewayClosesItsSequencesOnTheShards() throws Exception {
        Gateway g = gateway();
        long a = g.create(null);
        long b = g.create(null);
        long c = g.create(null);
        g.close(c); // closed already: not asked again
        fakes.get(1).closeStatus = 503; // shard 1 fails: both stay closing, unknown to every call but a close
        assertThat(g.closeAllOnShards(java.time.Duration.ofSeconds(10))).isZero();
        for (long id : new long[] {a, b}) {
            assertThat(fakes.get(0).requests).contains("DELETE /v1/sequences/" + id);
            assertThatThrownBy(() -> g.lengths(id)).isInstanceOf(io.pikv.kv.UnknownSequenceException.class);
        }
        // Shard 1 is asked until it fails once (both closes may have asked it at the same time), then not again.
        assertThat(fakes.get(1).requests.stream().filter(r -> r.startsWith("DELETE"))
                .filter(r -> !r.equals("DELETE /v1/sequences/" + c))).hasSizeBetween(1, 2);
        fakes.get(1).closeStatus = 204;
        assertThat(g.closeAllOnShards(java.time.Duration.ofSeconds(10))).isEqualTo(2);
        assertThat(g.openSequences()).isZero();

        // A shard that holds its answers back: the wait ends the shutdown's closes, not the calls' own deadline.
        long d = g.create(null);
        java.util.concurrent.CountDownLatch gate = new java.util.concurrent.CountDownLatch(1);
        fakes.get(0).closeGate = gate;
        try {
            long t0 = System.nanoTime();
            assertThat(g.closeAllOnShards(java.time.Duration.ofMillis(300))).isZero();
            assertThat((System.nanoTime() - t0) / 1e9).isLessThan(3.0);
            assertThatThrownBy(() -> g.lengths(d)).isInstanceOf(io.pikv.kv.UnknownSequenceException.class);
        } finally {
            gate.countDown();
        }
        g.shutdown();
    }

    @Test
    void aConfirmedUndoGivesThePositionsAgain() throws IOException {
        Gateway g = gateway();
        long seq = g.create(null);
        fakes.get(1).appendStatus = 409; // shard 1 refuses its part; shard 0 stored its own
        assertThatThrownBy(() -> g.append(seq, twoEntries())).hasMessageContaining("full");
        assertThat(g.lengths(seq)).containsExactly(0);
        // Shard 0 takes its part back; shard 1 refused its own, so it stored none of it and is not asked (a
        // withdrawal there could remove an entry of the same position that was there before).
        assertThat(fakes.get(0).requests).contains(post(seq, "withdrawals"));
        assertThat(fakes.get(1).requests).doesNotContain(post(seq, "withdrawals"));
    }

    @Test
    void aShardsInternalErrorMayComeAfterItsStoreSoItIsAskedToTakeBack() throws IOException {
        Gateway g = gateway();
        long seq = g.create(null);
        fakes.get(1).appendStatus = 500; // internal: perhaps while answering, after the entries were stored
        assertThatThrownBy(() -> g.append(seq, twoEntries())).isInstanceOf(ShardFailure.class)
                .satisfies(e -> assertThat(((ShardFailure) e).status()).isEqualTo(502));
        assertThat(fakes.get(1).requests).contains(post(seq, "withdrawals"));
        assertThat(fakes.get(0).requests).contains(post(seq, "withdrawals"));
        assertThat(g.lengths(seq)).containsExactly(0); // both confirmed: the positions are given again
    }

    @Test
    void aShardsRefusalThatIsNoFaultOfTheRequestIsABadGateway() throws IOException {
        Gateway g = gateway();
        long seq = g.create(null);
        fakes.get(1).appendStatus = 422; // model-mismatch: shard 1 runs another model than its gateway
        assertThatThrownBy(() -> g.append(seq, twoEntries())).isInstanceOf(ShardFailure.class)
                .satisfies(e -> assertThat(((ShardFailure) e).status()).isEqualTo(502))
                .hasMessageContaining("a shard refused the gateway's call with 422 (urn:pikv:problem:model-mismatch), "
                        + "which is no fault of this request");
        fakes.get(1).appendStatus = 403; // not a sidecar's answer (a proxy's): no fault of the client either
        assertThatThrownBy(() -> g.append(seq, twoEntries())).isInstanceOf(ShardFailure.class)
                .satisfies(e -> assertThat(((ShardFailure) e).status()).isEqualTo(502));
        fakes.get(1).appendStatus = 409; // budget-exceeded: the client's to know, as it came
        assertThatThrownBy(() -> g.append(seq, twoEntries())).isInstanceOf(ShardFailure.class)
                .satisfies(e -> assertThat(((ShardFailure) e).status()).isEqualTo(409));
    }

    /** One step routed to expert 0, owned by shard 0 (a scope of that expert only: no other shard is asked). */
    private static Wire.StepRequest stepOnShard0() {
        return new Wire.StepRequest(0, Wire.CHOSEN_EXPERTS, Wire.SCOPE_CHOSEN, null, new int[] {0},
                new float[SHAPE.queryWidth()], new float[SHAPE.kvWidth()], new float[SHAPE.kvWidth()]);
    }

    @Test
    void aStepTheOwnerRefusedOrFailedItselfIsNotTakenBackAndItsPositionIsGivenAgain() throws IOException {
        Gateway g = gateway();
        long seq = g.create(null);
        String withdrawal = post(seq, "withdrawals");
        fakes.get(0).stepStatus = 400;
        fakes.get(0).stepType = "urn:pikv:problem:invalid-request";
        assertThatThrownBy(() -> g.step(seq, stepOnShard0())).isInstanceOf(ShardFailure.class)
                .satisfies(e -> assertThat(((ShardFailure) e).status()).isEqualTo(400));
        fakes.get(0).stepStatus = 500; // the shard's own failure, after it took its token back
        fakes.get(0).stepType = "urn:pikv:problem:undone";
        assertThatThrownBy(() -> g.step(seq, stepOnShard0())).isInstanceOf(ShardFailure.class)
                .satisfies(e -> assertThat(((ShardFailure) e).status()).isEqualTo(502));
        assertThat(fakes.get(0).requests).doesNotContain(withdrawal);
        // Another 500 may come from after the store (answering failed): taken back.
        fakes.get(0).stepType = "urn:pikv:problem:internal";
        assertThatThrownBy(() -> g.step(seq, stepOnShard0())).isInstanceOf(ShardFailure.class);
        assertThat(fakes.get(0).requests).contains(withdrawal);
        fakes.get(0).stepStatus = 200;
        assertThat(g.step(seq, stepOnShard0()).position()).isZero();
    }

    @Test
    void aStepWhoseOwnerMayHaveStoredIsTakenBackAndUnconfirmedPositionsAreAskedForAgain() throws IOException {
        Gateway g = gateway();
        long seq = g.create(null);
        String withdrawal = post(seq, "withdrawals");
        String steps = post(seq, "steps");
        // A 503 that is not the sidecar's (a proxy's): the owner may be storing the token right now.
        fakes.get(0).stepStatus = 503;
        fakes.get(0).withdrawn = 1; // it had: taken back, confirmed, so the position is given again
        assertThatThrownBy(() -> g.step(seq, stepOnShard0())).isInstanceOf(ShardFailure.class)
                .satisfies(e -> assertThat(((ShardFailure) e).status()).isEqualTo(502));
        assertThat(fakes.get(0).requests).containsSubsequence(steps, withdrawal);
        assertThat(g.lengths(seq)).containsExactly(0);
        // Not confirmed (it has not landed yet): the position is never given again, and asked for before the next.
        fakes.get(0).withdrawn = 0;
        assertThatThrownBy(() -> g.step(seq, stepOnShard0())).isInstanceOf(ShardFailure.class);
        assertThat(g.lengths(seq)).containsExactly(1);
        fakes.get(0).stepStatus = 200;
        fakes.get(0).withdrawn = 1; // the late token landed, and is taken back by the asking before the next step
        int before = fakes.get(0).requests.size();
        assertThat(g.step(seq, stepOnShard0()).position()).isEqualTo(1);
        assertThat(since(fakes.get(0), before))
                .containsExactly(withdrawal, steps);
        before = fakes.get(0).requests.size();
        g.step(seq, stepOnShard0()); // confirmed: not asked again
        assertThat(since(fakes.get(0), before)).containsExactly(steps);
    }

    /**
     * A shard that cannot even be connected to has received nothing: its failed step or append is not taken back, the
     * positions are given again, and the layer's other calls are not held up asking it for a take-back it cannot
     * confirm (it never stored anything to count).
     */
    @Test
    void aShardThatCouldNotBeConnectedToGotNothingToTakeBack() throws IOException {
        Gateway g = gateway();
        long seq = g.create(null);
        fakes.get(0).close(); // shard 0 is down: connections to it are refused
        int before = fakes.get(1).requests.size();
        assertThatThrownBy(() -> g.step(seq, stepOnShard0())).isInstanceOf(ShardFailure.class)
                .satisfies(e -> assertThat(((ShardFailure) e).status()).isEqualTo(502));
        assertThat(g.lengths(seq)).containsExactly(0);
        assertThatThrownBy(() -> g.append(seq, twoEntries())).isInstanceOf(ShardFailure.class);
        assertThat(g.lengths(seq)).containsExactly(0);
        // Shard 1's part of the append was stored and is taken back (confirmed); shard 0 is asked nothing more.
        assertThat(since(fakes.get(1), before)).containsExactly(post(seq, "entries"), post(seq, "withdrawals"));
        // A step over every expert that the other shard owns goes through: shard 0 holds nothing of the layer.
        float[] kv = new float[SHAPE.kvWidth()];
        Wire.StepRequest onShard1 = new Wire.StepRequest(0, Wire.CHOSEN_EXPERTS, Wire.SCOPE_ALL, null, new int[] {1},
                new float[SHAPE.queryWidth()], kv, kv);
        assertThat(g.step(seq, onShard1).position()).isZero();
    }

    /**
     * A shard that cannot be asked again for a failed step's token (its late store may have landed) is not attended
     * over by the next step: that step fails (502) before sending anything, and goes through once the ask does.
     */
    @Test
    void aStepIsNotAnsweredOverAShardThatCouldNotBeAskedAgain() throws IOException {
        Gateway g = gateway();
        long seq = g.create(null);
        String withdrawal = post(seq, "withdrawals");
        String steps = post(seq, "steps");
        failStepUnconfirmed(g, seq); // asked for again before the layer's next call
        fakes.get(0).stepStatus = 200;
        fakes.get(0).withdrawStatus = 500; // the ask fails
        int before = fakes.get(0).requests.size();
        assertThatThrownBy(() -> g.step(seq, stepOnShard0())).isInstanceOf(ShardFailure.class)
                .satisfies(e -> assertThat(((ShardFailure) e).status()).isEqualTo(502))
                .hasMessageContaining("could not be asked again to take back positions [0] of a failed call");
        assertThat(since(fakes.get(0), before)).containsExactly(withdrawal);
        fakes.get(0).withdrawStatus = 200;
        fakes.get(0).withdrawn = 1;
        before = fakes.get(0).requests.size();
        assertThat(g.step(seq, stepOnShard0()).position()).isEqualTo(1);
        assertThat(since(fakes.get(0), before))
                .containsExactly(withdrawal, steps);
    }

    /**
     * Two failed steps' positions merge into one take-back; the shard takes them back one call at a time (each late
     * store lands between asks): once it has taken back both, over the asks, it is asked no more.
     */
    @Test
    void takeBacksConfirmedOverSeveralAsksEndTheAsking() throws IOException {
        Gateway g = gateway();
        long seq = g.create(null);
        String withdrawal = post(seq, "withdrawals");
        String steps = post(seq, "steps");
        failStepUnconfirmed(g, seq); // neither late store has landed yet
        assertThatThrownBy(() -> g.step(seq, stepOnShard0())).isInstanceOf(ShardFailure.class);
        assertThat(g.lengths(seq)).containsExactly(2);
        fakes.get(0).stepStatus = 200;
        fakes.get(0).withdrawn = 1; // one lands before each of the next two asks
        g.step(seq, stepOnShard0());
        g.step(seq, stepOnShard0());
        int before = fakes.get(0).requests.size();
        g.step(seq, stepOnShard0()); // both taken back by now: no third ask
        assertThat(since(fakes.get(0), before)).containsExactly(steps);
        assertThat(fakes.get(0).requests.stream().filter(withdrawal::equals)).hasSize(5); // 2 undos, 1 + 2 asks
    }

    /**
     * A sequence closed while a shard had not confirmed taking back a failed step's token: the step may still be queued
     * there and store it into whatever sequence then has the id, so the id is not given again until the asking would
     * have ended.
     */
    @Test
    void anIdClosedWithAnUnconfirmedTakeBackIsNotCreatedAgainMeanwhile() throws IOException {
        Gateway g = gateway();
        long seq = g.create(77L);
        failStepUnconfirmed(g, seq);
        g.close(seq);
        assertThatThrownBy(() -> g.create(77L)).isInstanceOf(SequenceExistsException.class)
                .hasMessageStartingWith("sequence 77 was closed while a shard may still store entries of a failed call")
                .hasMessageContaining("use another id, or this one in ");
        assertThat(g.create(78L)).isEqualTo(78L); // other ids, and ids closed with nothing unsettled, are free
        g.close(78L);
        assertThat(g.create(78L)).isEqualTo(78L);
    }

    @Test
    void positionsInALogLineAreListedWhenFewAndSummedUpWhenMany() {
        assertThat(Gateway.brief(new int[] {3, 1, 2})).isEqualTo("[3, 1, 2]");
        int[] many = new int[500_000];
        for (int i = 0; i < many.length; i++) {
            many[i] = 1_000 + i;
        }
        assertThat(Gateway.brief(many)).isEqualTo("500000 positions in [1000, 500999]");
    }

    @Test
    void anUnconfirmedUndoBurnsThePositions() throws IOException {
        Gateway g = gateway();
        long seq = g.create(null);
        fakes.get(1).appendStatus = 409;
        fakes.get(0).withdrawStatus = 404; // shard 0 cannot confirm it took its entry back
        assertThatThrownBy(() -> g.append(seq, twoEntries())).hasMessageContaining("full");
        // The entry at position 0 may still be on shard 0: positions 0 and 1 are not given again.
        assertThat(g.lengths(seq)).containsExactly(2);
        // Asked again, shard 0 answers but takes nothing back (its entry may never come). Attention asks shard 0,
        // which may hold its entry, and not shard 1, which refused its part: nothing there.
        fakes.get(0).withdrawStatus = 200;
        fakes.get(0).withdrawn = 0;
        byte[] empty = Wire.encodePartial(io.pikv.kv.PartialAttention.empty(SHAPE.qHeads(), SHAPE.headDim(), false));
        fakes.forEach(f -> {
            f.partial = empty;
            f.requests.clear();
        });
        g.attend(seq, new Wire.AttendRequest(0, new int[0], new float[SHAPE.queryWidth()]));
        assertThat(fakes.get(0).requests).contains("POST /v1/sequences/" + seq + "/attention");
        assertThat(fakes.get(1).requests).doesNotContain("POST /v1/sequences/" + seq + "/attention");
    }

    @Test
    void anUndoThatTookBackLessBurnsThePositions() throws IOException {
        Gateway g = gateway();
        long seq = g.create(null);
        fakes.get(1).appendStatus = 409;
        // Shard 0 answers the withdrawal but took back nothing: its append (timed out, say) may still land after it.
        fakes.get(0).withdrawn = 0;
        assertThatThrownBy(() -> g.append(seq, twoEntries())).hasMessageContaining("full");
        assertThat(g.lengths(seq)).containsExactly(2);
    }

    @Test
    void entriesAShardDidNotConfirmTakingBackAreAskedForAgainBeforeTheLayersNextCall() throws IOException {
        Gateway g = gateway();
        long seq = g.create(null);
        fakes.get(1).appendStatus = 409;
        fakes.get(0).withdrawn = 0; // shard 0's append may still land after the withdrawal
        assertThatThrownBy(() -> g.append(seq, twoEntries())).hasMessageContaining("full");
        String withdrawal = post(seq, "withdrawals");
        assertThat(fakes.get(0).requests.stream().filter(withdrawal::equals)).hasSize(1);
        // It landed meanwhile: the next call of the layer takes it back first, then asks no more.
        fakes.get(1).appendStatus = 200;
        fakes.get(0).withdrawn = 1;
        g.append(seq, twoEntries());
        g.append(seq, twoEntries());
        String entries = post(seq, "entries");
        assertThat(fakes.get(0).requests).containsExactly("POST /v1/sequences", entries, withdrawal, withdrawal,
                entries, entries);
    }

    @Test
    void unconfirmedTakeBacksOfOneShardAndLayerAreAskedForInOneCall() throws IOException {
        Gateway g = gateway();
        long seq = g.create(null);
        fakes.get(1).appendStatus = 409;
        fakes.get(0).withdrawn = 0; // never confirms
        assertThatThrownBy(() -> g.append(seq, twoEntries())).hasMessageContaining("full"); // position 0 unconfirmed
        assertThatThrownBy(() -> g.append(seq, twoEntries())).hasMessageContaining("full"); // and position 2
        fakes.get(1).appendStatus = 200;
        g.append(seq, twoEntries());
        String withdrawal = post(seq, "withdrawals");
        String entries = post(seq, "entries");
        // Undo, ask again, undo; then one call asks for both positions before the third append.
        assertThat(fakes.get(0).requests).containsExactly("POST /v1/sequences", entries, withdrawal, withdrawal,
                entries, withdrawal, withdrawal, entries);
    }

    @Test
    void anUnconfirmedTakeBackOfALargeRequestKeepsItsNewestPositions() throws Exception {
        Gateway g = gateway();
        long seq = g.create(null);
        // 1,100 entries for shard 0 and one for shard 1, which refuses: shard 0 never confirms taking its back.
        float[] kv = new float[SHAPE.kvWidth()];
        Wire.AppendRequest.Entry[] many = new Wire.AppendRequest.Entry[1101];
        for (int i = 0; i < many.length; i++) {
            many[i] = new Wire.AppendRequest.Entry(Wire.NEXT_POSITION, i == many.length - 1 ? 1 : 0, kv, kv);
        }
        fakes.get(1).appendStatus = 409;
        fakes.get(0).withdrawn = 0;
        assertThatThrownBy(() -> g.append(seq, new Wire.AppendRequest(0, many))).hasMessageContaining("full");
        assertThat(new com.fasterxml.jackson.databind.ObjectMapper().readTree(fakes.get(0).lastWithdrawal)
                .get("positions")).hasSize(1100);
        // Asked again before the layer's next call: only the newest 1,024 of them (76..1099), in order.
        fakes.get(1).appendStatus = 200;
        g.append(seq, twoEntries());
        com.fasterxml.jackson.databind.JsonNode again = new com.fasterxml.jackson.databind.ObjectMapper()
                .readTree(fakes.get(0).lastWithdrawal).get("positions");
        assertThat(again).hasSize(Gateway.MAX_UNCONFIRMED);
        assertThat(again.get(0).asInt()).isEqualTo(76);
        assertThat(again.get(Gateway.MAX_UNCONFIRMED - 1).asInt()).isEqualTo(1099);
    }

    @Test
    void aShardThatLostAKnownSequenceIsABadGatewayAndATakenIdIsChosenAgain() throws IOException {
        Gateway g = gateway();
        long seq = g.create(null);
        g.append(seq, twoEntries());
        fakes.get(1).appendStatus = 404; // the shard restarted: it knows no such sequence
        assertThatThrownBy(() -> g.append(seq, twoEntries())).isInstanceOf(ShardFailure.class)
                .satisfies(e -> assertThat(((ShardFailure) e).status()).isEqualTo(502))
                .hasMessageContaining("a shard does not know sequence " + seq + " although the gateway does");
        // A shard that already has the id the gateway chose (made there directly): another id is chosen.
        fakes.get(1).createStatus = 409;
        assertThatThrownBy(() -> g.create(null)).isInstanceOf(ShardFailure.class)
                .satisfies(e -> assertThat(((ShardFailure) e).status()).isEqualTo(409));
        assertThat(fakes.get(1).requests.stream().filter("POST /v1/sequences"::equals)).hasSize(1 + 3);
        assertThatThrownBy(() -> g.create(77L)).isInstanceOf(ShardFailure.class);
        assertThat(fakes.get(1).requests.stream().filter("POST /v1/sequences"::equals)).hasSize(1 + 3 + 1);
    }

    @Test
    void aShardsRefusalNamesTheEntryOfTheClientsRequest() throws IOException {
        Gateway g = gateway();
        long seq = g.create(null);
        float[] kv = new float[SHAPE.kvWidth()];
        // Entries 0 and 2 go to shard 0 (expert 0), entry 1 to shard 1 (expert 1).
        Wire.AppendRequest three = new Wire.AppendRequest(0, new Wire.AppendRequest.Entry[] {
            new Wire.AppendRequest.Entry(Wire.NEXT_POSITION, 0, kv, kv),
            new Wire.AppendRequest.Entry(Wire.NEXT_POSITION, 1, kv, kv),
            new Wire.AppendRequest.Entry(Wire.NEXT_POSITION, 0, kv, kv)});
        fakes.get(0).appendStatus = 400;
        fakes.get(0).appendDetail = "entry 1: k[3] is NaN (no entry of the request was stored)";
        assertThatThrownBy(() -> g.append(seq, three)).isInstanceOf(ShardFailure.class)
                .hasMessage("entry 2: k[3] is NaN (no entry of the request was stored)");
        fakes.get(0).appendStatus = 200;
        fakes.get(1).appendStatus = 400; // a one-entry part: the shard names no entry
        fakes.get(1).appendDetail = "v[0] is Infinity";
        assertThatThrownBy(() -> g.append(seq, twoEntries())).isInstanceOf(ShardFailure.class)
                .hasMessage("entry 1: v[0] is Infinity");
        // Also when an earlier shard failed on its own meanwhile: the client's request is at fault, and is told so.
        fakes.get(0).appendStatus = 500;
        fakes.get(0).appendDetail = "disk on fire";
        assertThatThrownBy(() -> g.append(seq, twoEntries())).isInstanceOf(ShardFailure.class)
                .hasMessage("entry 1: v[0] is Infinity")
                .satisfies(e -> assertThat(((ShardFailure) e).status()).isEqualTo(400));
    }

    @Test
    void aCloseDuringTheCreateWaitsForItAndThenClosesOnEveryShard() throws Exception {
        Gateway g = gateway();
        java.util.concurrent.CountDownLatch gate = new java.util.concurrent.CountDownLatch(1);
        fakes.get(1).createGate = gate; // shard 0 has answered, shard 1 holds its answer back
        java.util.concurrent.CompletableFuture<Long> create =
                java.util.concurrent.CompletableFuture.supplyAsync(() -> g.create(42L));
        org.awaitility.Awaitility.await().atMost(java.time.Duration.ofSeconds(10))
                .until(() -> fakes.get(1).requests.contains("POST /v1/sequences"));
        java.util.concurrent.CompletableFuture<Void> close = new java.util.concurrent.CompletableFuture<>();
        Thread closer = new Thread(() -> {
            g.close(42L);
            close.complete(null);
        }, "closer");
        closer.start();
        // The close waits for the create (parked, not merely not started yet): for as long as shard 1 holds its
        // answer back, nothing is closed anywhere.
        org.awaitility.Awaitility.await().atMost(java.time.Duration.ofSeconds(10)).until(() ->
                closer.getState() == Thread.State.WAITING || closer.getState() == Thread.State.BLOCKED);
        org.awaitility.Awaitility.await().during(java.time.Duration.ofMillis(300))
                .atMost(java.time.Duration.ofSeconds(5))
                .until(() -> !close.isDone() && !fakes.get(0).requests.contains("DELETE /v1/sequences/42"));
        gate.countDown();
        assertThat(create.get(10, java.util.concurrent.TimeUnit.SECONDS)).isEqualTo(42L);
        close.get(10, java.util.concurrent.TimeUnit.SECONDS);
        for (FakeShard f : fakes) {
            assertThat(f.requests).containsExactly("POST /v1/sequences", "DELETE /v1/sequences/42");
        }
        assertThatThrownBy(() -> g.lengths(42L)).isInstanceOf(io.pikv.kv.UnknownSequenceException.class);
    }

    @Test
    void aMalformedShardAnswerIsABadGateway() throws IOException {
        Gateway g = gateway();
        long seq = g.create(null);
        g.append(seq, twoEntries()); // both shards now hold entries, so attention asks them
        assertThatThrownBy(() -> g.attend(seq, new Wire.AttendRequest(0, new int[0], new float[SHAPE.queryWidth()])))
                .isInstanceOfSatisfying(ShardFailure.class, f -> assertThat(f.status()).isEqualTo(502))
                .hasMessageContaining("malformed body").hasMessageContaining("a partial for this model has 2 heads of dim 4");

        // Heads and dim whose size arithmetic wraps to the body's length: refused before anything is sized from them.
        java.util.function.Function<double[], byte[]> partial = values -> {
            java.nio.ByteBuffer b = java.nio.ByteBuffer.allocate(12 + 8 * values.length)
                    .order(java.nio.ByteOrder.LITTLE_ENDIAN).putInt(SHAPE.qHeads()).putInt(SHAPE.headDim()).putInt(1);
            for (double v : values) {
                b.putDouble(v);
            }
            return b.array();
        };
        byte[][] bad = {
            java.nio.ByteBuffer.allocate(12).order(java.nio.ByteOrder.LITTLE_ENDIAN).putInt(1 << 30)
                    .putInt(Integer.MAX_VALUE - 1).putInt(0).array(),
            partial.apply(new double[] {Double.NaN, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0}), // a NaN running max
            partial.apply(new double[] {0, 0, 1, Double.POSITIVE_INFINITY, 0, 0, 0, 0, 0, 0, 0, 0}), // infinite sum
            partial.apply(new double[] {0, 0, 1, 1, 0, 0, 0, Double.NaN, 0, 0, 0, 0}), // a NaN value
            // Heads that contradict themselves (the merge would drop their mass): nothing seen but a sum or a value,
            // an entry seen but no sum.
            partial.apply(new double[] {Double.NEGATIVE_INFINITY, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0}),
            partial.apply(new double[] {Double.NEGATIVE_INFINITY, 0, 0, 1, 0.5, 0, 0, 0, 0, 0, 0, 0}),
            partial.apply(new double[] {0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0})};
        for (byte[] b : bad) {
            fakes.get(0).partial = b;
            fakes.get(1).partial = b;
            assertThatThrownBy(() -> g.attend(seq, new Wire.AttendRequest(0, new int[0], new float[SHAPE.queryWidth()])))
                    .isInstanceOfSatisfying(ShardFailure.class, f -> assertThat(f.status()).isEqualTo(502))
                    .hasMessageContaining("malformed body");
        }
    }

    @Test
    void aShardAnswerWithoutItsFieldsIsABadGatewayNotAnInternalError() throws IOException {
        Gateway g = gateway();
        fakes.get(1).createAnswer = "{}";
        assertThatThrownBy(() -> g.create(null)).isInstanceOfSatisfying(ShardFailure.class,
                f -> assertThat(f.status()).isEqualTo(502)).hasMessageContaining("has no whole number 'id'");
    }

    @Test
    void eachLayerRoutesWithItsOwnMissCounts() throws IOException {
        // Four experts on two shards (0 and 2 on shard 0, 1 and 3 on shard 1), top-2, two layers.
        ModelShape shape = new ModelShape(2, 2, 1, 4, 4, 2);
        List<SidecarClient> clients = new ArrayList<>();
        for (int i = 0; i < 2; i++) {
            FakeShard f = new FakeShard();
            fakes.add(f);
            clients.add(new SidecarClient(f.uri(), shape));
        }
        Gateway g = new Gateway(shape, clients, () -> new CacheAwareRouter(4, 2, 0.1, 4, 0));
        float[] logits = {2, 1, 0, -1};
        float[] q = new float[shape.queryWidth()];
        float[] kv = new float[shape.kvWidth()];
        Wire.StepRequest layer0 = new Wire.StepRequest(0, Wire.GATE_LOGITS, 0, logits, null, q, kv, kv);
        Wire.StepRequest layer1 = new Wire.StepRequest(1, Wire.GATE_LOGITS, 0, logits, null, q, kv, kv);
        long seq = g.create(null);
        // Expert 1 opens shard 1 for the token: a miss, counted by layer 0's router only.
        assertThat(g.step(seq, layer0).experts()).containsExactly(0, 1);
        CacheAwareRouter r0 = (CacheAwareRouter) g.router(0);
        CacheAwareRouter r1 = (CacheAwareRouter) g.router(1);
        assertThat(r0.missCount(1)).isEqualTo(1.0);
        assertThat(r1.missCount(1)).isZero();
        // A token routed on layer 1 decays layer 1's counts, not layer 0's.
        assertThat(g.step(seq, layer1).experts()).containsExactly(0, 1);
        assertThat(r0.missCount(1)).isEqualTo(1.0);
        assertThat(r1.missCount(1)).isEqualTo(1.0);
        assertThat(g.step(seq, layer0).experts()).containsExactly(0, 1);
        assertThat(r0.missCount(1)).isCloseTo(1 + Math.exp(-1.0 / 4), org.assertj.core.api.Assertions.offset(1e-12));
        // A step the owner refuses changes nothing in the router: no miss counted, no token's decay.
        fakes.get(fakes.size() - 2).stepStatus = 400;
        fakes.get(fakes.size() - 2).stepType = "urn:pikv:problem:invalid-request";
        double before = r0.missCount(1);
        assertThatThrownBy(() -> g.step(seq, layer0)).isInstanceOf(ShardFailure.class);
        assertThat(r0.missCount(1)).isEqualTo(before);
        fakes.get(fakes.size() - 2).stepStatus = 200;
        assertThat(g.step(seq, layer0).experts()).containsExactly(0, 1);
        assertThat(r0.missCount(1)).isCloseTo((1 + Math.exp(-1.0 / 4)) * Math.exp(-1.0 / 4) + 1,
                org.assertj.core.api.Assertions.offset(1e-12));
    }

    @Test
    void aRouterSharedBetweenLayersIsRefused() throws IOException {
        ModelShape shape = new ModelShape(2, 2, 1, 4, 4, 2);
        FakeShard f = new FakeShard();
        fakes.add(f);
        CacheAwareRouter shared = new CacheAwareRouter(4, 2, 0.1, 4, 0);
        assertThatThrownBy(() -> new Gateway(shape, List.of(new SidecarClient(f.uri(), shape)), () -> shared))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("one router to two layers");
    }
}
