package io.pikv.kv;

import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicReference;
import java.util.function.IntFunction;

/**
 * Units of one attention call (buckets, or a store's shards' buckets) shared between the calling thread and up to
 * {@code threads - 1} tasks on a pool: every thread takes the next unit until none is left, so a thread that runs
 * slower (its processor shared with other work) takes fewer. The caller holds the read locks the units read under, so
 * this returns only once no task of the call runs any more, whatever happens meanwhile: a unit that fails, the
 * caller interrupted, a pool that refuses tasks or is shut down (its queued tasks dropped or cancelled; a cancelled
 * task that already runs goes on). That end is counted here rather than read from the pool's futures, which a
 * shutdown can mark done while their task still runs.
 */
final class SharedWork {
    private SharedWork() {
    }

    /**
     * Runs {@code unit.apply(i)} for every {@code i} below {@code units} and returns the results by index; the first
     * failure of a unit is thrown (the other threads stop at their next unit) once every started task has ended.
     */
    static PartialAttention[] run(ExecutorService pool, int threads, int units, IntFunction<PartialAttention> unit) {
        PartialAttention[] out = new PartialAttention[units];
        AtomicInteger next = new AtomicInteger();
        AtomicReference<Throwable> failure = new AtomicReference<>();
        Runnable take = () -> {
            try {
                for (int i = next.getAndIncrement(); i < units; i = next.getAndIncrement()) {
                    out[i] = unit.apply(i);
                }
            } catch (RuntimeException | Error e) {
                next.set(units); // the others stop at their next unit
                failure.compareAndSet(null, e);
            }
        };
        int helpers = pool == null ? 0 : Math.max(0, Math.min(threads, units) - 1);
        // Each slot ends once: run by its task, or claimed by the caller before the task started (it then never
        // will: queued behind other calls' tasks, or dropped by a pool shut down).
        AtomicBoolean[] claimed = new AtomicBoolean[helpers];
        CountDownLatch ended = new CountDownLatch(helpers);
        int submitted = 0;
        while (submitted < helpers) {
            AtomicBoolean slot = new AtomicBoolean();
            // Counted before it is handed over: whatever execute does, the slot ends by its task or by the caller's
            // claim below.
            claimed[submitted++] = slot;
            try {
                pool.execute(() -> {
                    if (slot.compareAndSet(false, true)) {
                        try {
                            take.run();
                        } finally {
                            ended.countDown();
                        }
                    }
                });
            } catch (RuntimeException | Error e) {
                // A pool that takes no more tasks (rejected, shut down), or one that failed to start a thread for it
                // (OutOfMemoryError: unable to create native thread) after perhaps queueing it: the caller claims its
                // slot below, and the threads already going take every unit.
                break;
            }
        }
        for (int t = submitted; t < helpers; t++) {
            ended.countDown(); // never submitted
        }
        take.run();
        for (int t = 0; t < submitted; t++) {
            if (claimed[t].compareAndSet(false, true)) {
                ended.countDown();
            }
        }
        boolean interrupted = false;
        while (true) {
            try {
                ended.await();
                break;
            } catch (InterruptedException e) {
                interrupted = true; // a task still reads under the caller's locks: wait for it
            }
        }
        if (interrupted) {
            Thread.currentThread().interrupt();
        }
        Throwable f = failure.get();
        if (f instanceof RuntimeException r) {
            throw r;
        }
        if (f instanceof Error e) {
            throw e;
        }
        return out;
    }
}
