package io.pikv.sidecar.client;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.pikv.kv.ModelShape;
import io.pikv.kv.PartialAttention;
import io.pikv.sidecar.wire.Wire;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.net.URI;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.function.Function;

/**
 * A small client of one sidecar's {@code /v1} API over HTTP/1.1 ({@link Http1Client}: kept-alive connections, the
 * calling thread does the I/O): what the gateway uses to reach its shards, and what the tests and benchmarks drive.
 * Binary bodies go through {@link Wire}; an error answer becomes a {@link SidecarException} carrying the status and
 * the problem's detail, a transport failure an {@link UncheckedIOException}. The {@code start…} calls send a request
 * and return a {@link Pending} whose answer is read later, so that one thread can have several shards working at
 * once. Thread-safe; {@link #close} closes its idle connections.
 */
public final class SidecarClient implements AutoCloseable {
    /** Reads answers strictly: anything after the value is malformed, not ignored. */
    private static final ObjectMapper JSON = new ObjectMapper()
            .enable(com.fasterxml.jackson.databind.DeserializationFeature.FAIL_ON_TRAILING_TOKENS);
    private static final String OCTETS = "application/octet-stream";
    private static final String JSON_TYPE = "application/json";
    private static final String ACCEPT_BINARY = OCTETS + ", application/json, application/problem+json";
    /** Largest answer read (a sidecar's largest answers are stats and partials, far below it). */
    private static final long MAX_ANSWER_BYTES = 256L << 20;
    private static final int MAX_IDLE_CONNECTIONS = 16;

    private final URI base;
    private final ModelShape shape;
    private final Http1Client http;

    public SidecarClient(URI base, ModelShape shape) {
        this(base, shape, Duration.ofSeconds(5), Duration.ofSeconds(30));
    }

    /**
     * @param connectTimeout longest wait for a connection
     * @param timeout        longest a call may take, from sending its request to the end of its answer
     */
    public SidecarClient(URI base, ModelShape shape, Duration connectTimeout, Duration timeout) {
        this(base, shape, connectTimeout, timeout, MAX_IDLE_CONNECTIONS);
    }

    /**
     * @param idleConnections connections kept open for later calls (more may be open at once; those beyond it close
     *                        after their call)
     */
    public SidecarClient(URI base, ModelShape shape, Duration connectTimeout, Duration timeout, int idleConnections) {
        if (connectTimeout.isNegative() || connectTimeout.isZero() || timeout.isNegative() || timeout.isZero()) {
            throw new IllegalArgumentException("timeouts must be positive, got " + connectTimeout + " to connect and "
                    + timeout + " per call");
        }
        if (idleConnections < 0) {
            throw new IllegalArgumentException("idle connections must be >= 0, got " + idleConnections);
        }
        this.base = base;
        this.shape = shape;
        this.http = new Http1Client(base, connectTimeout, timeout, MAX_ANSWER_BYTES, idleConnections);
    }

    public URI base() {
        return base;
    }

    @Override
    public void close() {
        http.close();
    }

    /** A request sent whose answer is read (once) by {@link #await}. */
    public static final class Pending<T> {
        private final Http1Client.Exchange exchange;
        private final String what;
        private final int expected;
        private final Function<byte[], T> decode;
        private boolean done;
        private T result;
        private RuntimeException failure;
        /** A call that failed before its request could go out (its body could not be encoded). */
        private boolean unsent;

        private Pending(Http1Client.Exchange exchange, String what, int expected, Function<byte[], T> decode) {
            this.exchange = exchange;
            this.what = what;
            this.expected = expected;
            this.decode = decode;
        }

        private Pending(T value) {
            this.exchange = null;
            this.what = null;
            this.expected = 0;
            this.decode = null;
            this.done = true;
            this.result = value;
        }

        /** An answer known without asking. */
        public static <T> Pending<T> of(T value) {
            return new Pending<>(value);
        }

        /** A call that failed before its request could be sent ({@code unsent}: surely not sent, so nothing acted). */
        private static <T> Pending<T> failed(RuntimeException e, boolean unsent) {
            Pending<T> p = new Pending<>(null);
            p.failure = e;
            p.unsent = unsent;
            return p;
        }

        /** Reads the answer (blocking) and returns it decoded; a failure is thrown again on every call. */
        public T await() {
            if (!done) {
                done = true;
                try {
                    Http1Client.Response r = exchange.await();
                    if (r.status() != expected) {
                        throw SidecarException.of(what, r.status(), r.body());
                    }
                    result = decode.apply(r.body());
                } catch (RuntimeException e) {
                    failure = e;
                } catch (Error e) {
                    failure = new IllegalStateException(what + " failed: " + e, e);
                    throw e;
                }
            }
            if (failure != null) {
                throw failure;
            }
            return result;
        }

        /**
         * Whether the sidecar refused the call and so changed nothing: a 4xx (its requests are all or none), or the
         * {@code undone} problem (a shard whose append or step failed after storing took back what it stored before
         * it answered), or {@code not-ready} (refused before anything was done); or the request never went out (no
         * connection could be had for it, or its body could not be encoded). A call that got no answer once its request
         * was out (timed out, connection lost) or another 5xx — an internal error may come after the store, a proxy's
         * from a request still under way — may have been acted on.
         */
        public boolean refused() {
            if (!done) {
                try {
                    await();
                } catch (RuntimeException ignored) {
                    // looked at below
                }
            }
            if (failure != null && (exchange == null ? unsent : exchange.sentNothing())) {
                return true;
            }
            return failure instanceof SidecarException se && se.status() >= 400
                    && (se.status() < 500 || "urn:pikv:problem:undone".equals(se.type())
                    || "urn:pikv:problem:not-ready".equals(se.type()));
        }
    }

    /** Creates a sequence ({@code id} null: the sidecar picks one) and returns its id. */
    public long createSequence(Long id) {
        ObjectNode body = JSON.createObjectNode();
        ObjectNode model = body.putObject("model");
        model.put("layers", shape.layers()).put("qHeads", shape.qHeads()).put("kvHeads", shape.kvHeads())
                .put("headDim", shape.headDim()).put("experts", shape.experts()).put("topK", shape.topK());
        if (id != null) {
            body.put("id", id);
        }
        return whole(json(send("POST", "/v1/sequences", JSON_TYPE, utf8(body.toString()), 201)), "id");
    }

    public void closeSequence(long id) {
        send("DELETE", "/v1/sequences/" + id, null, null, 204);
    }

    /** Stores the entries (all or none) and returns their positions. */
    public int[] append(long sequence, Wire.AppendRequest request) {
        return startAppend(sequence, request).await();
    }

    public Pending<int[]> startAppend(long sequence, Wire.AppendRequest request) {
        return start("POST", "/v1/sequences/" + sequence + "/entries", () -> Wire.encodeAppend(request), 200,
                body -> {
            JsonNode positions = json(body).path("positions");
            if (!positions.isArray() || positions.size() != request.entries().length) {
                throw new io.pikv.sidecar.wire.WireException("the answer to an append of " + request.entries().length
                        + " entries has no 'positions' array of that length");
            }
            int[] out = new int[positions.size()];
            for (int i = 0; i < out.length; i++) {
                out[i] = wholeInt(positions.get(i), "positions[" + i + "]");
            }
            return out;
        });
    }

    public PartialAttention attend(long sequence, Wire.AttendRequest request) {
        return prepareAttend(sequence, request).start().await();
    }

    /** The attention request with its body encoded now, sent by {@link Prepared#start}. */
    public Prepared<PartialAttention> prepareAttend(long sequence, Wire.AttendRequest request) {
        return prepare("/v1/sequences/" + sequence + "/attention", () -> Wire.encodeAttend(request),
                body -> Wire.decodePartial(body, shape), partialBytes());
    }

    /** Takes back just-stored entries of (sequence, layer) without counting evictions. */
    public int withdraw(long sequence, int layer, int[] positions) {
        ObjectNode body = JSON.createObjectNode().put("layer", layer);
        com.fasterxml.jackson.databind.node.ArrayNode array = body.putArray("positions");
        for (int p : positions) {
            array.add(p);
        }
        return wholeInt(json(send("POST", "/v1/sequences/" + sequence + "/withdrawals", JSON_TYPE,
                utf8(body.toString()), 200)), "withdrawn");
    }

    /** The entries of (sequence, layer) the sidecar holds ({@code GET /v1/sequences/{id}}, {@code layers[layer]}). */
    public int resident(long sequence, int layer) {
        JsonNode layers = describe(sequence).path("layers");
        if (!layers.isArray() || layers.size() <= layer) {
            throw new io.pikv.sidecar.wire.WireException("the sequence's description has no layer " + layer);
        }
        return wholeInt(layers.get(layer), "resident");
    }

    /** The entries of each of the sequence's {@code layers} the sidecar holds, from one {@code GET /v1/sequences/{id}}. */
    public int[] residents(long sequence, int layers) {
        JsonNode list = describe(sequence).path("layers");
        if (!list.isArray() || list.size() < layers) {
            throw new io.pikv.sidecar.wire.WireException("the sequence's description has "
                    + (list.isArray() ? list.size() : "no") + " layers, not " + layers);
        }
        int[] out = new int[layers];
        for (int layer = 0; layer < layers; layer++) {
            out[layer] = wholeInt(list.get(layer), "resident");
        }
        return out;
    }

    /**
     * The whole number a sidecar's JSON answer holds under {@code name} (or, for a bare number node, itself); a
     * WireException saying what is missing otherwise, which a gateway answers as a bad gateway.
     */
    private static long whole(JsonNode answer, String name) {
        JsonNode n = answer != null && answer.isObject() ? answer.path(name) : answer;
        if (n == null || !n.isIntegralNumber() || !n.canConvertToLong()) {
            throw new io.pikv.sidecar.wire.WireException("the sidecar's answer has no whole number '" + name + "'");
        }
        return n.asLong();
    }

    /** {@link #whole} as an int (a position or a count), refused when it does not fit rather than cut. */
    private static int wholeInt(JsonNode answer, String name) {
        long v = whole(answer, name);
        if (v < Integer.MIN_VALUE || v > Integer.MAX_VALUE) {
            throw new io.pikv.sidecar.wire.WireException("the sidecar's answer has '" + name + "' = " + v
                    + ", beyond an int");
        }
        return (int) v;
    }

    /** {@code GET /v1/sequences/{id}} as a JSON tree. */
    public JsonNode describe(long sequence) {
        return json(send("GET", "/v1/sequences/" + sequence, null, null, 200));
    }

    public Wire.StepResponse step(long sequence, Wire.StepRequest request) {
        return start("POST", "/v1/sequences/" + sequence + "/steps", () -> Wire.encodeStep(request), 200,
                body -> Wire.decodeStepResponse(body, shape)).await();
    }

    /**
     * A gateway's step on the owning shard (store the token at {@code position}, answer the shard's partial), its body
     * encoded now, sent by {@link Prepared#start}.
     */
    public Prepared<PartialAttention> prepareStepPartial(long sequence, Wire.StepRequest request, int position) {
        return prepare("/v1/sequences/" + sequence + "/steps?position=" + position, () -> Wire.encodeStep(request),
                body -> Wire.decodePartial(body, shape), partialBytes());
    }

    /**
     * A binary POST whose body is encoded and not yet sent: a caller that fans one step out to several sidecars
     * encodes every body first and then sends them back to back, so that no sidecar starts working (and takes a
     * processor) while the caller still encodes the next one's request.
     */
    public final class Prepared<T> {
        private final String path;
        private final byte[] body;
        private final RuntimeException failure;
        private final Function<byte[], T> decode;

        private final long answerLimit;

        private Prepared(String path, byte[] body, RuntimeException failure, Function<byte[], T> decode,
                         long answerLimit) {
            this.path = path;
            this.body = body;
            this.failure = failure;
            this.decode = decode;
            this.answerLimit = answerLimit;
        }

        /** Sends the request; its answer is read by {@link Pending#await}. An encoding failure is thrown there. */
        public Pending<T> start() {
            if (failure != null) {
                return Pending.failed(failure, true);
            }
            return SidecarClient.this.start("POST", path, () -> body, 200, decode, answerLimit);
        }
    }

    private <T> Prepared<T> prepare(String path, java.util.function.Supplier<byte[]> body, Function<byte[], T> decode,
                                    long answerLimit) {
        try {
            return new Prepared<>(path, body.get(), null, decode, answerLimit);
        } catch (RuntimeException e) {
            return new Prepared<>(path, null, e, decode, answerLimit);
        }
    }

    /** The bytes of a partial of this client's model: the size of every attention and step answer. */
    private long partialBytes() {
        return 12 + 16L * shape.qHeads() + 8L * shape.qHeads() * shape.headDim();
    }

    /** Stores a block under {@code hash} (1 to 16 hex digits, else IllegalArgumentException before anything is sent). */
    public void putBlock(String hash, byte[] payload) {
        send("PUT", blockPath(hash), OCTETS, payload, 204);
    }

    /**
     * The block, or null when it is not cached (the sidecar's {@code unknown-block} problem; any other 404 is an
     * error). {@code hash}: 1 to 16 hex digits, else IllegalArgumentException before anything is sent.
     */
    public byte[] getBlock(String hash) {
        try {
            return send("GET", blockPath(hash), null, null, 200);
        } catch (SidecarException e) {
            if (e.status() == 404 && UNKNOWN_BLOCK.equals(e.type())) {
                return null;
            }
            throw e;
        }
    }

    private static final String UNKNOWN_BLOCK = "urn:pikv:problem:unknown-block";

    private static String blockPath(String hash) {
        if (hash == null || hash.isEmpty() || hash.length() > 16
                || !hash.chars().allMatch(c -> c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F')) {
            throw new IllegalArgumentException("a block hash is 1 to 16 hex digits, got '" + hash + "'");
        }
        return "/v1/blocks/" + hash;
    }

    /** {@code GET /v1/stats} as a JSON tree. */
    public JsonNode stats() {
        return json(send("GET", "/v1/stats", null, null, 200));
    }

    /**
     * Sends a binary request; the body is encoded by {@code body} here, so that any failure before the request is
     * out (a request that cannot be encoded) comes back from {@link Pending#await} like every other: a caller that
     * started several calls reads them all.
     */
    private <T> Pending<T> start(String method, String path, java.util.function.Supplier<byte[]> body, int expected,
                                 Function<byte[], T> decode) {
        return start(method, path, body, expected, decode, MAX_ANSWER_BYTES);
    }

    /** As above, with a smaller limit on a successful answer's body (a partial's exact size). */
    private <T> Pending<T> start(String method, String path, java.util.function.Supplier<byte[]> body, int expected,
                                 Function<byte[], T> decode, long answerLimit) {
        try {
            String what = method + " " + base.resolve(path); // before the request goes: a failure here sent nothing
            return new Pending<>(http.start(method, path, OCTETS, ACCEPT_BINARY, body.get(), answerLimit), what,
                    expected, decode);
        } catch (RuntimeException e) {
            return Pending.failed(e, true); // encoding the body, before anything is sent
        } catch (Error e) {
            // Out of memory encoding the body or opening a connection: a fan-out that already sent other parts must
            // still await them and undo (the request may even be out), so it fails like any other start.
            return Pending.failed(new IllegalStateException(method + " " + base.resolve(path) + " failed in this "
                    + "process before its answer: " + e, e), false);
        }
    }

    private byte[] send(String method, String path, String contentType, byte[] body, int expected) {
        return new Pending<>(http.start(method, path, contentType, "application/json, application/problem+json, */*",
                body), method + " " + base.resolve(path), expected, Function.identity()).await();
    }

    private static byte[] utf8(String s) {
        return s.getBytes(StandardCharsets.UTF_8);
    }

    private static JsonNode json(byte[] body) {
        try {
            return JSON.readTree(body);
        } catch (IOException e) {
            throw new UncheckedIOException("the sidecar answered malformed JSON", e);
        }
    }
}
