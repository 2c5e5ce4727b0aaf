package io.pikv.sidecar.api;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.netty.handler.codec.DecoderException;
import io.netty.handler.codec.http.HttpResponseStatus;
import io.quarkus.vertx.http.runtime.RouteConstants;
import io.vertx.core.buffer.Buffer;
import io.vertx.core.http.HttpHeaders;
import io.vertx.core.http.HttpServerRequest;
import io.vertx.core.http.HttpVersion;
import io.vertx.ext.web.Router;
import io.vertx.ext.web.RoutingContext;
import jakarta.enterprise.context.ApplicationScoped;
import jakarta.enterprise.event.Observes;
import jakarta.ws.rs.core.MediaType;
import org.jboss.logging.Logger;

import java.net.URLDecoder;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.Callable;
import java.util.function.Consumer;

/**
 * The two binary requests of every decode step, {@code POST /v1/sequences/{id}/steps} and
 * {@code POST /v1/sequences/{id}/attention}, served on Vert.x routes ahead of the REST layer: the request is checked
 * (content type, accepted answer types, id), its body is read on the event loop into one buffer, and a worker thread
 * runs {@link SequenceResource}'s own method, so the checks of the body, the work and the answer are the resource's.
 * What this skips is the REST layer's per-request machinery (filters, parameter conversion, body readers and writers),
 * which measured about 0.5 ms on each hop of a step on a 2-core machine (docs/sidecar-api.md, Transport). The resource
 * methods remain the documented contract (OpenAPI) and serve what these routes do not take (another method).
 *
 * <p>The answers are the REST layer's: errors go through {@link Problems}, the same table as its exception mappers; a
 * missing content type is taken as octets (as the REST layer does), another than octets gets 415 before the body is
 * read (forms and multipart bodies included), an {@code Accept} that excludes octets 406, an id that is not a number
 * 404, a body over {@code pikv.api.max-body-bytes} 413 (on its declared length before it is read, otherwise as soon as
 * the bytes read pass the limit). {@code Expect: 100-continue} is answered once the request is found acceptable; other
 * expectations are ignored, as the REST layer ignores them.
 */
@ApplicationScoped
public class BinaryRoutes {
    private static final Logger LOG = Logger.getLogger(BinaryRoutes.class);
    /**
     * Most bytes reserved for a body before they arrive: a declared length is a claim, not data, so a client that
     * declares 64 MiB and sends nothing holds no more than this (a step or attention body is tens of kilobytes).
     */
    private static final int MAX_RESERVED_BODY_BYTES = 1 << 16;
    /** Bytes of a refused body read and dropped before the connection is closed instead (an endless chunked body). */
    private static final long DRAIN_BYTES = 256L << 20;
    /** Routing-context key: a {@code 100 Continue} was sent, so the client is sending its body. */
    private static final String CONTINUED = "pikv.continued";

    private final SequenceResource sequences;
    private final BodyLimit limit;
    private final ObjectMapper json;

    public BinaryRoutes(SequenceResource sequences, BodyLimit limit, ObjectMapper json) {
        this.sequences = sequences;
        this.limit = limit;
        this.json = json;
    }

    /** What one route serves, given the sequence id, the query's {@code position} values (none: empty) and the body. */
    @FunctionalInterface
    interface Call {
        byte[] serve(long id, List<String> position, byte[] body);
    }

    void register(@Observes Router router) {
        add(router, "attention", (id, position, body) -> sequences.attend(id, body));
        add(router, "steps", sequences::step);
    }

    private void add(Router router, String operation, Call call) {
        router.post("/v1/sequences/:id/" + operation).order(RouteConstants.ROUTE_ORDER_BEFORE_DEFAULT)
                .handler(rc -> accept(rc, call));
    }

    /** Checks what can be checked before the body, then reads it. */
    private void accept(RoutingContext rc, Call call) {
        HttpServerRequest request = rc.request();
        String path = rc.normalizedPath();
        if (!octets(request.getHeader(HttpHeaders.CONTENT_TYPE))) {
            refuse(rc, 415, path);
            return;
        }
        if (!acceptsOctets(request.headers().getAll(HttpHeaders.ACCEPT))) {
            refuse(rc, 406, path);
            return;
        }
        long id;
        try {
            String segment = rc.pathParam("id");
            int matrix = segment.indexOf(';'); // matrix parameters are not part of the id, as in the REST layer
            id = Long.parseLong(matrix < 0 ? segment : segment.substring(0, matrix));
        } catch (NumberFormatException e) {
            refuse(rc, 404, path);
            return;
        }
        List<String> position;
        try {
            position = positionValues(request.query());
        } catch (IllegalArgumentException e) {
            send(rc, Problems.of(e, path));
            return;
        }
        long length;
        try {
            length = limit.declaredLength(request.getHeader(HttpHeaders.CONTENT_LENGTH));
        } catch (RuntimeException e) {
            send(rc, Problems.of(e, path));
            return;
        }
        if (expectsContinue(rc)) {
            rc.response().writeContinue();
            rc.put(CONTINUED, Boolean.TRUE);
        }
        read(rc, path, length, body -> work(rc, path, () -> call.serve(id, position, body.getBytes())));
    }

    /** The {@code position} values of a raw query string; one that does not decode (a bad %-escape) is refused. */
    static List<String> positionValues(String rawQuery) {
        try {
            return queryValues(rawQuery, "position");
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException("the query string does not decode: " + e.getMessage(), e);
        }
    }

    /**
     * The values of query parameter {@code name} (exactly that name, after decoding) in the raw query string: its
     * parameters are separated by {@code &} only (a framework's reader would also split at {@code ;}, match the name in
     * any case and stop after 1,024 parameters, so that {@code ?position=7;8} read as 7). A bad %-escape throws.
     */
    static List<String> queryValues(String rawQuery, String name) {
        List<String> values = new ArrayList<>();
        if (rawQuery == null || rawQuery.isEmpty()) {
            return values;
        }
        for (String parameter : rawQuery.split("&", -1)) {
            int eq = parameter.indexOf('=');
            String key = URLDecoder.decode(eq < 0 ? parameter : parameter.substring(0, eq), StandardCharsets.UTF_8);
            if (key.equals(name)) {
                values.add(eq < 0 ? "" : URLDecoder.decode(parameter.substring(eq + 1), StandardCharsets.UTF_8));
            }
        }
        return values;
    }

    /** Reads the body into one buffer (sized by its declared length), refusing it once it passes the limit. */
    private void read(RoutingContext rc, String path, long length, Consumer<Buffer> then) {
        HttpServerRequest request = rc.request();
        int maxBodyBytes = limit.maxBytes();
        Buffer body = Buffer.buffer((int) Math.max(0, Math.min(length, MAX_RESERVED_BODY_BYTES)));
        if (request.isEnded()) {
            then.accept(body);
            return;
        }
        boolean[] refused = {false};
        request.handler(chunk -> { // replaced by send's drain once a refusal is sent
            if ((long) body.length() + chunk.length() > maxBodyBytes) {
                refused[0] = true;
                send(rc, Problems.of(new BodyLimit.BodyTooLargeException(maxBodyBytes), path));
                return;
            }
            body.appendBuffer(chunk);
        });
        request.exceptionHandler(e -> {
            // The request stream failed: the client went away (closed, reset, its HTTP/2 stream reset) or sent
            // framing the HTTP layer could not decode. Either way the body is incomplete and nothing reached the
            // store; there is no one to answer, or nothing more to read on this connection.
            refused[0] = true;
            if (e instanceof DecoderException) {
                send(rc, Problems.of(new IllegalArgumentException("malformed request body: " + e.getMessage()), path));
            } else {
                LOG.debugf("%s: the request stream ended before its body was read: %s", path, e);
                if (!rc.response().closed()) {
                    rc.response().reset();
                }
            }
        });
        request.endHandler(v -> {
            if (!refused[0]) {
                then.accept(body);
            }
        });
        request.resume(); // the handlers are set: let the body flow (harmless when the HTTP layer resumed it already)
    }

    /** Runs {@code work} on a worker thread and answers with its octets or its problem. */
    private void work(RoutingContext rc, String path, Callable<byte[]> work) {
        rc.vertx().executeBlocking(work, false).onComplete(done -> {
            if (done.succeeded()) {
                rc.response().putHeader(HttpHeaders.CONTENT_TYPE, MediaType.APPLICATION_OCTET_STREAM)
                        .end(Buffer.buffer(done.result()));
            } else {
                send(rc, Problems.of(done.cause(), path));
            }
        });
    }

    /**
     * Answers with {@code problem}. A refusal sent before the whole body was read keeps the connection in step: a
     * client that waits for {@code 100 Continue} gets the refusal instead and the connection is closed after it (on
     * HTTP/1.x it will not send the body, so nothing would mark where the next request starts); a client that is
     * sending its body has the rest read and dropped, so that it can finish writing and read the answer, and the
     * connection is closed (on HTTP/2 the stream reset) only if more than {@link #DRAIN_BYTES} beyond the limit keep
     * coming.
     */
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
        HttpServerRequest request = rc.request();
        boolean unread = !request.isEnded();
        boolean http1 = request.version() != HttpVersion.HTTP_2;
        boolean close = unread && http1 && expectsContinue(rc) && rc.get(CONTINUED) == null;
        if (close) {
            rc.response().putHeader(HttpHeaders.CONNECTION, HttpHeaders.CLOSE);
        } else if (unread) {
            long[] dropped = {0};
            request.handler(chunk -> {
                dropped[0] += chunk.length();
                if (dropped[0] > DRAIN_BYTES && dropped[0] - chunk.length() <= DRAIN_BYTES) {
                    LOG.debugf("%s: %s after %d bytes of a refused body", rc.normalizedPath(),
                            http1 ? "closing the connection" : "resetting the stream", dropped[0]);
                    if (http1) {
                        request.connection().close();
                    } else {
                        rc.response().reset(); // HTTP/2: this stream only, the connection's others go on
                    }
                }
            });
            request.endHandler(v -> { });
            request.resume();
        }
        rc.response().setStatusCode(problem.status()).putHeader(HttpHeaders.CONTENT_TYPE, Problem.MEDIA_TYPE)
                .end(Buffer.buffer(body)).onComplete(done -> {
                    if (close) {
                        request.connection().close();
                    }
                });
    }

    private static boolean expectsContinue(RoutingContext rc) {
        return rc.request().headers().contains(HttpHeaders.EXPECT, HttpHeaders.CONTINUE, true);
    }

    /** A refusal of the HTTP layer's kind (type, accepted types, no such resource), titled by its reason phrase. */
    private void refuse(RoutingContext rc, int status, String path) {
        send(rc, Problems.http(status, HttpResponseStatus.valueOf(status).reasonPhrase(), null, path));
    }

    /**
     * Whether a request with this content type is octets: {@code application/octet-stream} (parameters and case
     * aside), a wildcard, or none at all (the REST layer reads a body without a type as octets).
     */
    static boolean octets(String contentType) {
        if (contentType == null || contentType.isBlank()) {
            return true;
        }
        String type = mediaType(contentType);
        return type.equalsIgnoreCase(MediaType.APPLICATION_OCTET_STREAM) || type.equals("*/*")
                || type.equalsIgnoreCase("application/*");
    }

    /**
     * No {@code Accept}, or one under which {@code application/octet-stream} is acceptable, over all its headers: the
     * most specific range that matches it decides (RFC 9110, 12.5.1), and a weight of 0 refuses.
     */
    static boolean acceptsOctets(List<String> accept) {
        if (accept.isEmpty()) {
            return true;
        }
        int best = -1; // specificity of the best match so far: 0 */*, 1 application/*, 2 application/octet-stream
        boolean acceptable = false;
        for (String header : accept) {
            if (header.isBlank()) {
                return true;
            }
            for (String range : header.split(",")) {
                String type = mediaType(range);
                int specificity = type.equalsIgnoreCase(MediaType.APPLICATION_OCTET_STREAM) ? 2
                        : type.equalsIgnoreCase("application/*") ? 1 : type.equals("*/*") || type.equals("*") ? 0 : -1;
                if (specificity > best) {
                    best = specificity;
                    acceptable = !refused(range);
                } else if (specificity == best && specificity >= 0) {
                    acceptable |= !refused(range);
                }
            }
        }
        return best >= 0 && acceptable;
    }

    /** Whether a range carries {@code q=0}: "not acceptable" (RFC 9110, 12.4.2). */
    private static boolean refused(String range) {
        String[] parts = range.split(";");
        for (int i = 1; i < parts.length; i++) {
            String p = parts[i].trim();
            if (p.regionMatches(true, 0, "q=", 0, 2)) {
                try {
                    return Double.parseDouble(p.substring(2).trim()) == 0;
                } catch (NumberFormatException e) {
                    return false; // a malformed weight is read as the default, 1
                }
            }
        }
        return false;
    }

    private static String mediaType(String value) {
        int semicolon = value.indexOf(';');
        return (semicolon < 0 ? value : value.substring(0, semicolon)).trim();
    }
}
