package io.pikv.sidecar;

/** A create named a sequence id that is already in use. */
public final class SequenceExistsException extends RuntimeException {
    public SequenceExistsException(long sequence) {
        super("sequence " + sequence + " already exists");
    }

    /** The id is taken for a reason other than an open sequence, said after it. */
    public SequenceExistsException(long sequence, String why) {
        super("sequence " + sequence + " " + why);
    }
}
