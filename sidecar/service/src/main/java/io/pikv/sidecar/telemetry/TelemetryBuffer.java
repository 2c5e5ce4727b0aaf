package io.pikv.sidecar.telemetry;

import io.pikv.api.events.CacheEvents;

import java.util.ArrayDeque;
import java.util.concurrent.TimeUnit;

/**
 * Records waiting for Kafka, oldest first, at most {@code capacity}: a new record beyond it drops the oldest. Drops
 * are counted so that the next published record can report them ({@link #unreported()}, {@link #reported(long)}).
 * Adding never blocks, so the window task keeps its pace whatever Kafka does. Thread-safe.
 */
public final class TelemetryBuffer {
    private final int capacity;
    private final ArrayDeque<CacheEvents> queue;
    private long dropped;
    private long droppedReported;
    /** Whether the oldest record was put back after a try: it is never the one dropped. */
    private boolean headTried;
    /** A record taken and not yet put back, dropped or sent: it still waits for Kafka. */
    private boolean inFlight;
    /** {@link #unreported()} when the last record was taken. */
    private long unreportedAtTake;

    public TelemetryBuffer(int capacity) {
        if (capacity < 2) {
            // A record put back after a try is never the one dropped: with room for one, the newest would go instead.
            throw new IllegalArgumentException("the buffer must hold at least two records, got " + capacity);
        }
        this.capacity = capacity;
        this.queue = new ArrayDeque<>(Math.min(capacity, 1024));
    }

    public int capacity() {
        return capacity;
    }

    /**
     * Appends {@code record}, dropping the oldest when full: the oldest never sent, that is, not a record put back
     * after a try (which may already be in Kafka and is sent again); with only such a record held, the new one.
     */
    public synchronized void add(CacheEvents record) {
        if (queue.size() == capacity) {
            dropped++;
            if (headTried) {
                CacheEvents tried = queue.pollFirst();
                queue.pollFirst();
                queue.addFirst(tried);
            } else {
                queue.pollFirst();
            }
        }
        queue.addLast(record);
        notifyAll();
    }

    /** Takes the oldest record, waiting up to {@code timeoutMs} for one; null when none came. */
    public synchronized CacheEvents take(long timeoutMs) throws InterruptedException {
        long deadline = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(timeoutMs);
        while (queue.isEmpty()) {
            long left = deadline - System.nanoTime();
            if (left <= 0) {
                return null;
            }
            TimeUnit.NANOSECONDS.timedWait(this, left);
        }
        headTried = false;
        inFlight = true;
        unreportedAtTake = dropped - droppedReported;
        return queue.pollFirst();
    }

    /**
     * The drops not yet reported when the last record was taken, all of records older than it: what that record
     * reports when first sent (a drop counted later, while it is being sent, is of a newer record and belongs to the
     * next one).
     */
    public synchronized long unreportedAtTake() {
        return unreportedAtTake;
    }

    /**
     * Puts back a record taken but not published, in front: it is still the oldest, and it is sent again. When newer
     * records filled the buffer meanwhile, the oldest of those is dropped instead: it was never sent, while the record
     * put back may already be in Kafka (a send that timed out can still have arrived), so only a drop of a record
     * never sent keeps the reported drops equal to the gaps in the sequence.
     */
    public synchronized void putBack(CacheEvents record) {
        if (queue.size() == capacity) {
            queue.pollFirst();
            dropped++;
        }
        queue.addFirst(record);
        headTried = true;
        inFlight = false;
    }

    /** The record taken last is done with: Kafka took it (or may have). */
    public synchronized void sent() {
        inFlight = false;
    }

    /** Counts a taken record as dropped (Kafka refused it for good). */
    public synchronized void drop(CacheEvents record) {
        dropped++;
        inFlight = false;
    }

    /** Records dropped that no published record has reported yet. */
    public synchronized long unreported() {
        return dropped - droppedReported;
    }

    /** A published record reported {@code count} drops. */
    public synchronized void reported(long count) {
        droppedReported += count;
    }

    /** Records waiting for Kafka: those queued and the one being sent (so at most the capacity plus one). */
    public synchronized int depth() {
        return queue.size() + (inFlight ? 1 : 0);
    }

    /** Records dropped since start. */
    public synchronized long dropped() {
        return dropped;
    }
}
