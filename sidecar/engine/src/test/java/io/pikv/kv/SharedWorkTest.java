package io.pikv.kv;

import org.junit.jupiter.api.Test;

import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.ForkJoinPool;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.function.IntFunction;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/**
 * The units of one attention call shared between the caller and pool tasks: each runs once, and the call returns only
 * once no task runs any more (the caller holds the locks the units read under).
 */
class SharedWorkTest {

    /** A partial that carries the unit's index (as its visited count), to check that results come back by index. */
    private static PartialAttention marked(int i) {
        return new PartialAttention(1, 1, new double[] {0}, new double[] {1}, new double[] {0}, i, null, null);
    }

    @Test
    void everyUnitRunsOnceAndComesBackAtItsIndex() {
        ExecutorService pool = Executors.newFixedThreadPool(3);
        try {
            AtomicInteger calls = new AtomicInteger();
            PartialAttention[] out = SharedWork.run(pool, 4, 100, i -> {
                calls.incrementAndGet();
                return marked(i);
            });
            assertThat(calls).hasValue(100);
            for (int i = 0; i < 100; i++) {
                assertThat(out[i].visited()).isEqualTo(i);
            }
        } finally {
            pool.shutdownNow();
        }
    }

    @Test
    void aPoolThatTakesNoTasksLeavesEveryUnitToTheCaller() {
        ExecutorService pool = Executors.newFixedThreadPool(2);
        pool.shutdown();
        Thread caller = Thread.currentThread();
        PartialAttention[] out = SharedWork.run(pool, 3, 10, i -> {
            assertThat(Thread.currentThread()).isSameAs(caller);
            return marked(i);
        });
        assertThat(out).doesNotContainNull();
    }

    /**
     * A pool that queues one task and then fails to start a thread for the next (an Error from execute): the call does
     * every unit itself, without the Error, and returns only with the queued task's slot claimed, so that task, once it
     * starts, does nothing (before, the Error left the call at once while the queued task could still run its units).
     */
    @Test
    void aPoolThatFailsToStartAThreadLeavesTheUnitsToTheCallerAndItsQueuedTaskIdle() throws Exception {
        CountDownLatch go = new CountDownLatch(1);
        Thread[] queued = new Thread[1];
        AtomicInteger executes = new AtomicInteger();
        ExecutorService pool = new java.util.concurrent.AbstractExecutorService() {
            @Override
            public void execute(Runnable task) {
                if (executes.incrementAndGet() > 1) {
                    throw new OutOfMemoryError("unable to create native thread");
                }
                queued[0] = new Thread(() -> {
                    await(go);
                    task.run();
                });
                queued[0].start();
            }

            @Override
            public void shutdown() {
            }

            @Override
            public java.util.List<Runnable> shutdownNow() {
                return java.util.List.of();
            }

            @Override
            public boolean isShutdown() {
                return false;
            }

            @Override
            public boolean isTerminated() {
                return false;
            }

            @Override
            public boolean awaitTermination(long timeout, TimeUnit unit) {
                return true;
            }
        };
        AtomicInteger calls = new AtomicInteger();
        Thread caller = Thread.currentThread();
        PartialAttention[] out = SharedWork.run(pool, 3, 10, i -> {
            calls.incrementAndGet();
            assertThat(Thread.currentThread()).isSameAs(caller);
            return marked(i);
        });
        assertThat(out).doesNotContainNull();
        assertThat(executes).hasValue(2);
        go.countDown();
        queued[0].join(10_000);
        assertThat(queued[0].isAlive()).isFalse();
        assertThat(calls).as("each unit once, all on the caller").hasValue(10);
    }

    /**
     * Unit 0 runs on the caller once a pool task has taken unit 1, which then holds on until {@code release}: the call
     * must not return before that task has ended, whatever {@code meanwhile} does to the caller or the pool.
     */
    private static void holdsUntilTheTaskEnds(ExecutorService pool, Runnable meanwhile, IntFunction<Boolean> failOn)
            throws Exception {
        Thread caller = Thread.currentThread();
        CountDownLatch taskStarted = new CountDownLatch(1);
        CountDownLatch release = new CountDownLatch(1);
        AtomicBoolean released = new AtomicBoolean();
        Thread releaser = new Thread(() -> {
            try {
                taskStarted.await(10, TimeUnit.SECONDS);
                meanwhile.run();
                // Released only once the caller waits for the task (its unit done): the moment a broken call would
                // return early.
                long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
                while (caller.getState() != Thread.State.WAITING && System.nanoTime() < deadline) {
                    java.util.concurrent.locks.LockSupport.parkNanos(1_000_000);
                }
                released.set(true);
                release.countDown();
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        });
        releaser.start();
        try {
            SharedWork.run(pool, 2, 2, i -> {
                if (Thread.currentThread() == caller) {
                    await(taskStarted);
                } else {
                    taskStarted.countDown();
                    await(release);
                }
                if (failOn.apply(i)) {
                    throw new IllegalStateException("unit " + i + " failed");
                }
                return marked(i);
            });
        } finally {
            assertThat(released).as("returned while a task still ran under the caller's locks").isTrue();
            boolean interrupted = Thread.interrupted(); // kept for the test to check, not thrown by the join
            releaser.join(10_000);
            if (interrupted) {
                Thread.currentThread().interrupt();
            }
        }
    }

    /** Waits as attention runs: deaf to interrupts (a pool shut down interrupts its threads), which are kept. */
    private static void await(CountDownLatch latch) {
        boolean interrupted = false;
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
        while (latch.getCount() > 0 && System.nanoTime() < deadline) {
            try {
                latch.await(deadline - System.nanoTime(), TimeUnit.NANOSECONDS);
            } catch (InterruptedException e) {
                interrupted = true;
            }
        }
        assertThat(latch.getCount()).isZero();
        if (interrupted) {
            Thread.currentThread().interrupt();
        }
    }

    @Test
    void anInterruptedCallerStillWaitsForTheRunningTaskAndKeepsItsInterrupt() throws Exception {
        ExecutorService pool = Executors.newFixedThreadPool(1);
        Thread caller = Thread.currentThread();
        try {
            holdsUntilTheTaskEnds(pool, caller::interrupt, i -> false);
            assertThat(Thread.interrupted()).isTrue();
        } finally {
            Thread.interrupted();
            pool.shutdownNow();
        }
    }

    @Test
    void aPoolShutDownDuringTheCallStillHasItsRunningTaskWaitedFor() throws Exception {
        // A ForkJoinPool's shutdownNow cancels the tasks (their futures read as done) while their code still runs.
        ForkJoinPool pool = new ForkJoinPool(1);
        holdsUntilTheTaskEnds(pool, pool::shutdownNow, i -> false);
        assertThat(pool.awaitTermination(10, TimeUnit.SECONDS)).isTrue();
    }

    @Test
    void aFailedUnitIsThrownOnceTheOtherThreadsEnded() {
        ExecutorService pool = Executors.newFixedThreadPool(1);
        try {
            assertThatThrownBy(() -> holdsUntilTheTaskEnds(pool, () -> { }, i -> i == 0))
                    .isInstanceOf(IllegalStateException.class).hasMessage("unit 0 failed");
        } finally {
            pool.shutdownNow();
        }
    }
}
