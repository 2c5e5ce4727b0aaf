package io.pikv.sidecar;

/** A create named a sequence id that is already in use. */
public final class SequenceExistsException extends RuntimeException {
    public SequenceExistsException(long sequence) {
        super("sequence " + sequence + " already exists");
    }
}
