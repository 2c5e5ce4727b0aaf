package io.pikv.kv;

/** An append needed a page, the pool was at its budget and the eviction hook freed nothing. The store is unchanged. */
public final class KvBudgetExceededException extends RuntimeException {
    public KvBudgetExceededException(String message) {
        super(message);
    }
}
