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
        String length = request.getHeaderString("Content-Length");
        if (length != null) {
            try {
                long declared = Long.parseLong(length.trim());
                if (declared > maxBytes) {
                    throw new BodyTooLargeException(declared, maxBytes);
                }
            } catch (NumberFormatException e) {
                throw new IllegalArgumentException("Content-Length must be a number, got '" + length + "'");
            }
        }
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
