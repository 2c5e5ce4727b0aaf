package io.pikv.kv;

/** A call named a sequence the store does not hold (never created, or closed). */
public final class UnknownSequenceException extends IllegalArgumentException {
    public UnknownSequenceException(long sequence) {
        super("unknown sequence " + sequence + ": create it first (or it was closed)");
    }
}
