package io.pikv.sidecar;

import io.pikv.sidecar.client.SidecarException;

/**
 * A shard refused or could not answer a gateway's call. A refusal (4xx) is passed on with the shard's status and
 * detail, since it is the client's request that was wrong; an unreachable or failing shard is a 502.
 */
public final class ShardFailure extends RuntimeException {
    private final int status;

    private ShardFailure(int status, String message, Throwable cause) {
        super(message, cause);
        this.status = status;
    }

    public int status() {
        return status;
    }

    static RuntimeException of(RuntimeException e) {
        if (e instanceof ShardFailure) {
            return e;
        }
        if (e instanceof SidecarException se) {
            int status = se.status() >= 400 && se.status() < 500 ? se.status() : 502;
            return new ShardFailure(status, se.detail(), se);
        }
        if (e instanceof java.io.UncheckedIOException) {
            return new ShardFailure(502, "a shard is unreachable: " + e.getMessage(), e);
        }
        if (e instanceof io.pikv.sidecar.wire.WireException) {
            // Raised while reading a shard's answer (the gateway checked the client's request before sending).
            return new ShardFailure(502, "a shard answered with a malformed body: " + e.getMessage(), e);
        }
        return e;
    }
}
