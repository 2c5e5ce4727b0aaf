package io.pikv.sidecar;

/**
 * A shard's request failed after it had stored some of its entries (an append's, a step's token), and what it stored
 * was taken back: the request did not happen. Answered as its own problem kind ({@code undone}, 500) so that a gateway
 * knows nothing is left to take back, which a plain 500 cannot tell (it may come from after the store).
 */
public final class UndoneException extends RuntimeException {
    public UndoneException(String what, Throwable cause) {
        super(what + " failed, and what it had stored was taken back (none remains): " + cause, cause);
    }
}
