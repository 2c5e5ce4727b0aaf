package io.pikv.sidecar.wire;

/** A binary body that does not match its documented layout; the message says what was wrong. */
public final class WireException extends IllegalArgumentException {
    public WireException(String message) {
        super(message);
    }
}
