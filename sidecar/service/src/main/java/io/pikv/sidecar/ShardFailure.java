package io.pikv.sidecar;

import io.pikv.sidecar.client.SidecarException;

/**
 * A shard refused or could not answer a gateway's call. A refusal that the client's request caused (a 4xx of the kinds
 * in {@link #CLIENT_KINDS}) is passed on with the shard's status and detail; any other answer — an unreachable or
 * failing shard, a model mismatch (a shard configured unlike its gateway), an {@code http-*} refusal of the gateway's
 * own request (another version), a 4xx from something that is not a sidecar — is a 502.
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

    /** Problem kinds of a shard's 4xx that describe the client's request, which the gateway passed on as it came. */
    static final java.util.Set<String> CLIENT_KINDS = java.util.Set.of("invalid-request", "malformed-json",
            "sequence-exists", "budget-exceeded", "body-too-large", "block-too-large", "stale-epoch");

    /** Whether {@code e} is a shard's refusal that the client's request caused (passed on as it came). */
    static boolean causedByClient(RuntimeException e) {
        return e instanceof SidecarException se && clientsFault(se);
    }

    private static boolean clientsFault(SidecarException se) {
        return se.status() >= 400 && se.status() < 500 && se.type() != null
                && se.type().startsWith("urn:pikv:problem:")
                && CLIENT_KINDS.contains(se.type().substring("urn:pikv:problem:".length()));
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

    /**
     * A shard's refusal of its part of a multi-entry append, with the entry it names ("entry i: …", its index within
     * the part) renumbered to the client's request ({@code clientIndex[i]}).
     */
    static RuntimeException ofPart(RuntimeException e, long sequence, int[] clientIndex) {
        if (e instanceof SidecarException se && clientsFault(se) && se.detail() != null) {
            java.util.regex.Matcher m = java.util.regex.Pattern.compile("^entry (\\d+): ").matcher(se.detail());
            if (m.find()) {
                int i = Integer.parseInt(m.group(1));
                if (i < clientIndex.length) {
                    return new ShardFailure(se.status(), "entry " + clientIndex[i] + ": "
                            + se.detail().substring(m.end()), se);
                }
            } else if (clientIndex.length == 1) {
                // A shard names no entry when its part has one: the client's request may have had more.
                return new ShardFailure(se.status(), "entry " + clientIndex[0] + ": " + se.detail(), se);
            }
        }
        return ofKnown(e, sequence);
    }

    /**
     * {@code e} as {@link #of} makes it, its detail followed by {@code note}; an {@link UnknownSequenceException} (the
     * sequence closed meanwhile) or another failure that is not a shard's stays as it is.
     */
    static RuntimeException withNote(RuntimeException e, String note) {
        RuntimeException known = of(e);
        if (known instanceof ShardFailure f) {
            return new ShardFailure(f.status, f.getMessage() + "; " + note, f.getCause());
        }
        return known;
    }

    static RuntimeException of(RuntimeException e) {
        if (e instanceof ShardFailure) {
            return e;
        }
        if (e instanceof SidecarException se) {
            if (clientsFault(se)) {
                return new ShardFailure(se.status(), se.detail(), se);
            }
            return new ShardFailure(502, se.status() >= 400 && se.status() < 500
                    ? "a shard refused the gateway's call with " + se.status()
                    + (se.type() == null ? "" : " (" + se.type() + ")") + ", which is no fault of this request (a shard "
                    + "configured unlike its gateway, or of another version): " + se.detail()
                    : se.detail(), se);
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
