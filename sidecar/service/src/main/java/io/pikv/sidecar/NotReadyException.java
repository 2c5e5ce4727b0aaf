package io.pikv.sidecar;

/**
 * The sidecar is not ready to serve KV yet: it has not read the control topic to its end (the shard map, policy and
 * budget it must serve under), and the start-up wait is not over. Answered as {@code 503 not-ready}; the request did
 * nothing, and may be sent again.
 */
public final class NotReadyException extends RuntimeException {
    public NotReadyException(String why) {
        super("the sidecar is not ready to serve KV: " + why + "; nothing was done, send the request again later");
    }
}
