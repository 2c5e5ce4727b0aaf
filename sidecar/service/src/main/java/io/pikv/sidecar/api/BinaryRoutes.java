package io.pikv.sidecar.api;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.pikv.sidecar.SidecarConfig;
import io.quarkus.vertx.http.runtime.RouteConstants;
import io.vertx.core.buffer.Buffer;
import io.vertx.core.http.HttpHeaders;
import io.vertx.ext.web.Router;
import io.vertx.ext.web.RoutingContext;
import io.vertx.ext.web.handler.BodyHandler;
import jakarta.enterprise.context.ApplicationScoped;
import jakarta.enterprise.event.Observes;
import jakarta.ws.rs.core.MediaType;

/**
 * The two binary requests of every decode step, {@code POST /v1/sequences/{id}/steps} and
 * {@code POST /v1/sequences/{id}/attention}, served on Vert.x routes ahead of the REST layer: the body is read on the
 * event loop into one buffer of its declared size and handed to a worker thread that runs {@link SequenceResource}'s
 * own method, so the checks, the work and the answer are the resource's. What this skips is the REST layer's
 * per-request machinery (filters, parameter conversion, body readers, writers), which measured about 0.5 ms on each
 * hop of a step on a 2-core machine (docs/sidecar-api.md, Transport). The resource methods remain the documented
 * contract (OpenAPI) and serve requests these routes do not match (a non-POST method).
 *
 * <p>Errors are the REST layer's: {@link Problems} maps them to the same {@code application/problem+json} bodies,
 * a body over {@code pikv.api.max-body-bytes} is refused with 413 before it is read when its length is declared, a
 * content type other than {@code application/octet-stream} gets 415, an {@code Accept} that excludes it 406, and
 * an id that is not a number 404.
 */
@ApplicationScoped
public class BinaryRoutes {
    private final SequenceResource sequences;
    private final int maxBodyBytes;
    private final ObjectMapper json;

    public BinaryRoutes(SequenceResource sequences, SidecarConfig config, ObjectMapper json) {
        this.sequences = sequences;
        this.maxBodyBytes = config.api().maxBodyBytes();
        this.json = json;
    }

    /** What one route serves, given the sequence id and the body; runs on a worker thread. */
    @FunctionalInterface
    interface Call {
        byte[] serve(RoutingContext rc, long id, byte[] body);
    }

    void register(@Observes Router router) {
        add(router, "attention", (rc, id, body) -> sequences.attend(id, body));
        add(router, "steps", (rc, id, body) -> sequences.step(id, position(rc), body));
    }

    private void add(Router router, String operation, Call call) {
        router.post("/v1/sequences/:id/" + operation).order(RouteConstants.ROUTE_ORDER_BEFORE_DEFAULT)
                .handler(BodyHandler.create(false).setBodyLimit(maxBodyBytes).setPreallocateBodyBuffer(true))
                .handler(rc -> serve(rc, call))
                .failureHandler(this::failed);
    }

    private void serve(RoutingContext rc, Call call) {
        String path = rc.request().path();
        if (!octets(rc.request().getHeader(HttpHeaders.CONTENT_TYPE))) {
            send(rc, Problems.http(415, "Unsupported Media Type", null, path));
            return;
        }
        if (!acceptsOctets(rc.request().getHeader(HttpHeaders.ACCEPT))) {
            send(rc, Problems.http(406, "Not Acceptable", null, path));
            return;
        }
        long id;
        try {
            id = Long.parseLong(rc.pathParam("id"));
        } catch (NumberFormatException e) {
            send(rc, Problems.http(404, "Not Found", null, path));
            return;
        }
        Buffer received = rc.body().buffer();
        byte[] body = received == null ? new byte[0] : received.getBytes();
        rc.vertx().executeBlocking(() -> call.serve(rc, id, body), false).onComplete(done -> {
            if (done.succeeded()) {
                rc.response().putHeader(HttpHeaders.CONTENT_TYPE, MediaType.APPLICATION_OCTET_STREAM)
                        .end(Buffer.buffer(done.result()));
            } else {
                send(rc, Problems.of(done.cause(), path));
            }
        });
    }

    /** A failure before the work started: the body limit (413 from the body handler) or an unexpected exception. */
    private void failed(RoutingContext rc) {
        String path = rc.request().path();
        if (rc.failure() != null) {
            send(rc, Problems.of(rc.failure(), path));
        } else if (rc.statusCode() == 413) {
            String declared = rc.request().getHeader(HttpHeaders.CONTENT_LENGTH);
            send(rc, Problems.of(new BodyLimit.BodyTooLargeException(declared, maxBodyBytes), path));
        } else {
            int status = rc.statusCode() > 0 ? rc.statusCode() : 500;
            send(rc, Problems.http(status, rc.response().getStatusMessage(), "the request failed with " + status,
                    path));
        }
    }

    private void send(RoutingContext rc, Problem problem) {
        if (rc.response().ended() || rc.response().closed()) {
            return;
        }
        byte[] body;
        try {
            body = json.writeValueAsBytes(problem);
        } catch (JsonProcessingException e) {
            throw new IllegalStateException("a problem record did not serialize", e);
        }
        rc.response().setStatusCode(problem.status()).putHeader(HttpHeaders.CONTENT_TYPE, Problem.MEDIA_TYPE)
                .end(Buffer.buffer(body));
    }

    private static Integer position(RoutingContext rc) {
        String position = rc.request().getParam("position");
        if (position == null) {
            return null;
        }
        try {
            return Integer.valueOf(position.trim());
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException("position must be an integer, got '" + position + "'");
        }
    }

    /** {@code application/octet-stream}, parameters and case aside. */
    static boolean octets(String contentType) {
        if (contentType == null) {
            return false;
        }
        int semicolon = contentType.indexOf(';');
        String type = (semicolon < 0 ? contentType : contentType.substring(0, semicolon)).trim();
        return type.equalsIgnoreCase(MediaType.APPLICATION_OCTET_STREAM);
    }

    /** No {@code Accept}, or one that lists {@code application/octet-stream}, {@code application/*} or {@code *}{@code /*}. */
    static boolean acceptsOctets(String accept) {
        if (accept == null || accept.isBlank()) {
            return true;
        }
        for (String range : accept.split(",")) {
            int semicolon = range.indexOf(';');
            String type = (semicolon < 0 ? range : range.substring(0, semicolon)).trim();
            if (type.equals("*/*") || type.equalsIgnoreCase("application/*")
                    || type.equalsIgnoreCase(MediaType.APPLICATION_OCTET_STREAM)) {
                return true;
            }
        }
        return false;
    }
}
