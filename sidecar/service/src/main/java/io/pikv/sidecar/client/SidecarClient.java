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
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.time.Duration;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionException;

/**
 * A small client of one sidecar's {@code /v1} API over HTTP/1.1 (JDK {@link HttpClient}): what the gateway uses to
 * reach its shards, and what the tests and benchmarks drive. Binary bodies go through {@link Wire}; an error answer
 * becomes a {@link SidecarException} carrying the status and the problem's detail. Thread-safe.
 */
public final class SidecarClient {
    private static final ObjectMapper JSON = new ObjectMapper();
    private static final String OCTETS = "application/octet-stream";

    private final URI base;
    private final ModelShape shape;
    private final HttpClient http;
    private final Duration timeout;

    public SidecarClient(URI base, ModelShape shape) {
        this(base, shape, HttpClient.newBuilder().version(HttpClient.Version.HTTP_1_1)
                .connectTimeout(Duration.ofSeconds(5)).build(), Duration.ofSeconds(30));
    }

    public SidecarClient(URI base, ModelShape shape, HttpClient http, Duration timeout) {
        this.base = base;
        this.shape = shape;
        this.http = http;
        this.timeout = timeout;
    }

    public URI base() {
        return base;
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
        return json(send(request("/v1/sequences").POST(HttpRequest.BodyPublishers.ofString(body.toString()))
                .header("Content-Type", "application/json"), 201)).get("id").asLong();
    }

    public void closeSequence(long id) {
        send(request("/v1/sequences/" + id).DELETE(), 204);
    }

    /** Stores the entries (all or none) and returns their positions. */
    public int[] append(long sequence, Wire.AppendRequest request) {
        JsonNode positions = json(send(binary("/v1/sequences/" + sequence + "/entries", Wire.encodeAppend(request)),
                200)).get("positions");
        int[] out = new int[positions.size()];
        for (int i = 0; i < out.length; i++) {
            out[i] = positions.get(i).asInt();
        }
        return out;
    }

    public PartialAttention attend(long sequence, Wire.AttendRequest request) {
        return join(attendAsync(sequence, request));
    }

    public CompletableFuture<PartialAttention> attendAsync(long sequence, Wire.AttendRequest request) {
        return sendAsync(binary("/v1/sequences/" + sequence + "/attention", Wire.encodeAttend(request)), 200)
                .thenApply(Wire::decodePartial);
    }

    public CompletableFuture<int[]> appendAsync(long sequence, Wire.AppendRequest request) {
        return sendAsync(binary("/v1/sequences/" + sequence + "/entries", Wire.encodeAppend(request)), 200)
                .thenApply(body -> {
                    JsonNode positions = json(body).get("positions");
                    int[] out = new int[positions.size()];
                    for (int i = 0; i < out.length; i++) {
                        out[i] = positions.get(i).asInt();
                    }
                    return out;
                });
    }

    /** Takes back just-stored entries of (sequence, layer) without counting evictions. */
    public int withdraw(long sequence, int layer, int[] positions) {
        ObjectNode body = JSON.createObjectNode().put("layer", layer);
        positions(body.putArray("positions"), positions);
        return json(send(request("/v1/sequences/" + sequence + "/withdrawals")
                .POST(HttpRequest.BodyPublishers.ofString(body.toString())).header("Content-Type", "application/json"),
                200)).get("withdrawn").asInt();
    }

    /** {@code GET /v1/sequences/{id}} as a JSON tree. */
    public JsonNode describe(long sequence) {
        return json(send(request("/v1/sequences/" + sequence).GET(), 200));
    }

    private static void positions(com.fasterxml.jackson.databind.node.ArrayNode array, int[] positions) {
        for (int p : positions) {
            array.add(p);
        }
    }

    public Wire.StepResponse step(long sequence, Wire.StepRequest request) {
        return Wire.decodeStepResponse(send(binary("/v1/sequences/" + sequence + "/steps", Wire.encodeStep(request)),
                200), shape);
    }

    /** A gateway's step on the owning shard: store the token at {@code position}, answer the shard's partial. */
    public CompletableFuture<PartialAttention> stepPartialAsync(long sequence, Wire.StepRequest request, int position) {
        return sendAsync(binary("/v1/sequences/" + sequence + "/steps?position=" + position, Wire.encodeStep(request)),
                200).thenApply(Wire::decodePartial);
    }

    public void putBlock(String hash, byte[] payload) {
        send(request("/v1/blocks/" + hash).PUT(HttpRequest.BodyPublishers.ofByteArray(payload))
                .header("Content-Type", OCTETS), 204);
    }

    /** The block, or null when it is not cached. */
    public byte[] getBlock(String hash) {
        try {
            return send(request("/v1/blocks/" + hash).GET(), 200);
        } catch (SidecarException e) {
            if (e.status() == 404) {
                return null;
            }
            throw e;
        }
    }

    /** {@code GET /v1/stats} as a JSON tree. */
    public JsonNode stats() {
        return json(send(request("/v1/stats").GET(), 200));
    }

    private HttpRequest.Builder request(String path) {
        return HttpRequest.newBuilder(base.resolve(path)).timeout(timeout);
    }

    private HttpRequest.Builder binary(String path, byte[] body) {
        return request(path).POST(HttpRequest.BodyPublishers.ofByteArray(body)).header("Content-Type", OCTETS)
                .header("Accept", OCTETS + ", application/json, application/problem+json");
    }

    private CompletableFuture<byte[]> sendAsync(HttpRequest.Builder builder, int expected) {
        HttpRequest request = builder.build();
        return http.sendAsync(request, HttpResponse.BodyHandlers.ofByteArray()).handle((response, failure) -> {
            if (failure != null) {
                Throwable cause = failure instanceof CompletionException && failure.getCause() != null
                        ? failure.getCause() : failure;
                throw new UncheckedIOException(request.method() + " " + request.uri() + " failed: " + cause,
                        cause instanceof IOException io ? io : new IOException(cause));
            }
            if (response.statusCode() != expected) {
                throw SidecarException.of(request, response.statusCode(), response.body());
            }
            return response.body();
        });
    }

    /** The future's value, with a failure rethrown as it was raised (SidecarException, UncheckedIOException). */
    public static <T> T join(CompletableFuture<T> future) {
        try {
            return future.join();
        } catch (CompletionException e) {
            if (e.getCause() instanceof RuntimeException r) {
                throw r;
            }
            throw e;
        }
    }

    private byte[] send(HttpRequest.Builder builder, int expected) {
        HttpRequest request = builder.build();
        HttpResponse<byte[]> response;
        try {
            response = http.send(request, HttpResponse.BodyHandlers.ofByteArray());
        } catch (IOException e) {
            throw new UncheckedIOException(request.method() + " " + request.uri() + " failed: " + e.getMessage(), e);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IllegalStateException("interrupted during " + request.method() + " " + request.uri(), e);
        }
        if (response.statusCode() != expected) {
            throw SidecarException.of(request, response.statusCode(), response.body());
        }
        return response.body();
    }

    private static JsonNode json(byte[] body) {
        try {
            return JSON.readTree(body);
        } catch (IOException e) {
            throw new UncheckedIOException("the sidecar answered malformed JSON", e);
        }
    }
}
