package io.pikv.kv.scheduling;

/**
 * Chooses what to evict among the candidates of one cache: the tokens of a (sequence, layer)
 * ({@link TokenRetention}) or the prefix blocks of a block cache ({@link PrefixBlockCache}). The container owns the
 * entries and their features ({@link Entries}); a policy only ranks the entries the container offers it.
 *
 * <p>Protocol: the container calls {@link #accessed} when an entry is used (after updating its features), offers
 * an entry when it may be evicted, withdraws it when it may not (it is in use, has resident children, or leaves),
 * calls {@link #updated} when a candidate's features changed in place, and {@link #evicted} after an entry left.
 * A policy instance serves one container; {@link #fresh()} makes another with the same settings.
 */
public interface EvictionPolicy {

    /** The name benchmarks and telemetry report. */
    String name();

    /** {@code id} was used at {@code entries.now()}: a hit, an insertion, or a heavy attention step. */
    default void accessed(Entries entries, int id) {
    }

    /** {@code id} may now be evicted. */
    void offer(Entries entries, int id);

    /** {@code id} may no longer be evicted (it must have been offered). */
    void withdraw(Entries entries, int id);

    /** The features of candidate {@code id} changed: rank it again. */
    default void updated(Entries entries, int id) {
        withdraw(entries, id);
        offer(entries, id);
    }

    /** {@code id} left the container (it was withdrawn first); its id may be reused. */
    default void evicted(Entries entries, int id) {
    }

    /**
     * This copy ranks nothing any more (its container dropped it: a token retention's sequence closed): it gives back
     * what it holds beyond its own heap (a shared history's slots, {@link Lrfu#sharedHistory}).
     */
    default void retired() {
    }

    /**
     * The entry of {@code key}, evicted before, was taken back (an append undone after its eviction): a policy that
     * remembers evicted entries forgets it, so that an entry stored later under that key starts anew.
     */
    default void forget(long key) {
    }

    /** The candidate to evict next (it stays a candidate until withdrawn), or -1 when there is none. */
    int victim(Entries entries);

    /** The requests a block cache is about to serve, before it serves them (ghost evaluation listens here). */
    default void observe(long[] blocks) {
    }

    /** A new instance with the same settings and no state. */
    EvictionPolicy fresh();
}
