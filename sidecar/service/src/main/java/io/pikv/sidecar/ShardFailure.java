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

    /**
     * A shard's failure on a call about a sequence the gateway knows: a 404 there means the shard lost it (it
     * restarted, or was closed behind the gateway's back), which is no fault of the client's request: 502.
     */
    static RuntimeException ofKnown(RuntimeException e, long sequence) {
        if (e instanceof SidecarException se && se.status() == 404) {
            return new ShardFailure(502, "a shard does not know sequence " + sequence + " although the gateway does (the "
                    + "shard restarted, or the sequence was closed on it directly): " + se.detail(), se);
        }
        return of(e);
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
