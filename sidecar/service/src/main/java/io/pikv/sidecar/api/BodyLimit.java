package io.pikv.sidecar.api;

import io.pikv.sidecar.SidecarConfig;
import jakarta.enterprise.context.ApplicationScoped;
import jakarta.ws.rs.container.ContainerRequestContext;
import org.jboss.resteasy.reactive.server.ServerRequestFilter;

/**
 * {@code pikv.api.max-body-bytes}: requests that declare a larger Content-Length are refused before their body
 * is read, and bodies sent without one are checked once read; both get 413 as problem+json. (The HTTP layer's own
 * limit is set far above it, only as a backstop.)
 */
@ApplicationScoped
public class BodyLimit {
    private final int maxBytes;

    public BodyLimit(SidecarConfig config) {
        this.maxBytes = config.api().maxBodyBytes();
    }

    @ServerRequestFilter(preMatching = true)
    public void declared(ContainerRequestContext request) {
        declaredLength(request.getHeaderString("Content-Length"));
    }

    /** The length a {@code Content-Length} header declares (-1 without one), refused when it is over the limit. */
    long declaredLength(String contentLength) {
        if (contentLength == null) {
            return -1;
        }
        long declared;
        try {
            declared = Long.parseLong(contentLength.trim());
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException("Content-Length must be a number, got '" + contentLength + "'");
        }
        if (declared > maxBytes) {
            throw new BodyTooLargeException(declared, maxBytes);
        }
        return declared;
    }

    /** The limit, {@code pikv.api.max-body-bytes}. */
    int maxBytes() {
        return maxBytes;
    }

    void check(byte[] body) {
        if (body != null && body.length > maxBytes) {
            throw new BodyTooLargeException(body.length, maxBytes);
        }
    }

    /** A request body over the configured limit. */
    public static final class BodyTooLargeException extends RuntimeException {
        BodyTooLargeException(long size, int limit) {
            super("the request body is " + size + " bytes, over the limit of " + limit
                    + " bytes (pikv.api.max-body-bytes); send fewer entries per request");
        }

        /** A body without a declared length, refused once the bytes read passed the limit. */
        BodyTooLargeException(int limit) {
            super("the request body is more than " + limit + " bytes, over the limit of " + limit
                    + " bytes (pikv.api.max-body-bytes); send fewer entries per request");
        }
    }
}
