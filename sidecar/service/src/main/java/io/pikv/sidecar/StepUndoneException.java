package io.pikv.sidecar;

/**
 * A shard's step failed after it stored the token, and the token was taken back: the step did not happen. Answered
 * as its own problem kind ({@code step-undone}, 500) so that a gateway knows nothing is left to take back, which a
 * plain 500 cannot tell (it may come from after the store).
 */
public final class StepUndoneException extends RuntimeException {
    public StepUndoneException(long sequence, int layer, int position, RuntimeException cause) {
        super("the step of sequence " + sequence + " layer " + layer + " failed after its token was stored at position "
                + position + ", which was taken back: " + cause.getMessage(), cause);
    }
}
