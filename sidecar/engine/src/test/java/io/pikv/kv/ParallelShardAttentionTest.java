package io.pikv.kv;

import io.pikv.kv.compute.Kernels;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.Test;

import java.util.List;
import java.util.Random;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;

import static org.assertj.core.api.Assertions.assertThat;

/** One shard's attention split over its buckets on a pool matches the one-pass answer and counts lookups once. */
class ParallelShardAttentionTest {
    private static final ModelShape SHAPE = new ModelShape(1, 8, 2, 32, 12, 2);
    private static final KvLayout LAYOUT = new KvLayout(2, 32, 16, StorageType.FP16);
    private static final ExecutorService POOL = Executors.newFixedThreadPool(3);

    @AfterAll
    static void close() {
        POOL.shutdownNow();
    }

    private static KvShard filled(int buckets, List<Reference.Entry> entries) {
        KvShard shard = new KvShard(0, SHAPE, LAYOUT, buckets, 1 << 22, EvictionHook.OLDEST_PAGE_FIRST,
                Kernels.select(LAYOUT));
        for (Reference.Entry e : entries) {
            shard.append(1, 0, e.position(), e.expert(), e.k(), e.v());
        }
        return shard;
    }

    @Test
    void splitsOverTheBucketsAndMergesToTheOnePassAnswer() {
        Random rnd = new Random(11);
        List<Reference.Entry> entries = Reference.randomEntries(SHAPE, 1_000, rnd);
        for (int buckets : new int[] {1, 4, 8}) {
            KvShard shard = filled(buckets, entries);
            for (int parallelism : new int[] {1, 2, 3, 5, 16}) {
                float[] q = Reference.gaussian(SHAPE.queryWidth(), rnd, 1f);
                AttentionResult one = shard.attendPartial(1, 0, q, AttentionScope.all(), true).finish();
                AttentionResult split = shard.attendPartial(1, 0, q, AttentionScope.all(), true, POOL, parallelism)
                        .finish();
                double[] exact = Reference.attend(SHAPE, q, Reference.roundedToFp16(entries));
                // Float accumulation inside each range runs in another order than in one pass: equal to float
                // rounding, and both within the engine's 1e-5 of the double reference.
                assertThat(Reference.relativeError(split.output(), one.output())).as("b%d p%d", buckets, parallelism)
                        .isLessThan(1e-5);
                assertThat(Reference.relativeError(split.output(), exact)).isLessThan(1e-5);
                assertThat(split.positions()).as("weights in bucket order").containsExactly(one.positions());
                for (int h = 0; h < SHAPE.qHeads(); h++) {
                    for (int j = 0; j < one.positions().length; j++) {
                        assertThat(split.weight(h, j)).isCloseTo(one.weight(h, j),
                                org.assertj.core.api.Assertions.within(1e-6f));
                    }
                }
            }
        }
    }

    /**
     * Threads take buckets one at a time and the buckets' partials merge in bucket order, so neither the number of
     * threads nor which thread took which bucket changes the order of any sum: answers agree to the last bits the
     * vector exponential leaves (its compiled and interpreted forms round differently), and the weights come in the
     * same order.
     */
    @Test
    void theAnswerDoesNotDependOnTheNumberOfThreads() {
        Random rnd = new Random(13);
        List<Reference.Entry> entries = Reference.randomEntries(SHAPE, 1_500, rnd);
        KvShard shard = filled(8, entries);
        for (int round = 0; round < 3; round++) {
            float[] q = Reference.gaussian(SHAPE.queryWidth(), rnd, 1f);
            AttentionResult two = shard.attendPartial(1, 0, q, AttentionScope.all(), true, POOL, 2).finish();
            for (int parallelism : new int[] {3, 4, 8, 16}) {
                AttentionResult more = shard.attendPartial(1, 0, q, AttentionScope.all(), true, POOL, parallelism)
                        .finish();
                assertThat(Reference.relativeError(more.output(), two.output())).as("p%d", parallelism)
                        .isLessThan(1e-6);
                assertThat(more.positions()).containsExactly(two.positions());
                for (int h = 0; h < SHAPE.qHeads(); h++) {
                    for (int j = 0; j < two.positions().length; j++) {
                        assertThat(more.weight(h, j)).isCloseTo(two.weight(h, j),
                                org.assertj.core.api.Assertions.within(1e-7f));
                    }
                }
            }
        }
    }

    /**
     * A pool busy with other work (its task for this call still queued) or shut down (the task refused or dropped)
     * does not hold the call: the calling thread takes every bucket and returns without waiting for the pool.
     */
    @Test
    void aBusyOrStoppedPoolDoesNotHoldTheCall() throws Exception {
        Random rnd = new Random(14);
        List<Reference.Entry> entries = Reference.randomEntries(SHAPE, 600, rnd);
        KvShard shard = filled(8, entries);
        float[] q = Reference.gaussian(SHAPE.queryWidth(), rnd, 1f);
        AttentionResult expected = shard.attendPartial(1, 0, q, AttentionScope.all(), false, POOL, 2).finish();
        ExecutorService busy = Executors.newSingleThreadExecutor();
        java.util.concurrent.CountDownLatch release = new java.util.concurrent.CountDownLatch(1);
        try {
            busy.submit(() -> {
                release.await();
                return null;
            });
            AttentionResult queued = org.junit.jupiter.api.Assertions.assertTimeoutPreemptively(
                    java.time.Duration.ofSeconds(10),
                    () -> shard.attendPartial(1, 0, q, AttentionScope.all(), false, busy, 2).finish());
            assertThat(queued.output()).containsExactly(expected.output());
        } finally {
            release.countDown();
            busy.shutdown();
        }
        assertThat(busy.awaitTermination(10, java.util.concurrent.TimeUnit.SECONDS)).isTrue();
        AttentionResult stopped = shard.attendPartial(1, 0, q, AttentionScope.all(), false, busy, 4).finish();
        assertThat(stopped.output()).containsExactly(expected.output());
        // The shard still takes writes: the call released its read lock.
        shard.append(1, 0, 10_000, 0, Reference.gaussian(SHAPE.kvWidth(), rnd, 1f), Reference.gaussian(SHAPE.kvWidth(), rnd, 1f));
    }

    @Test
    void scopeAndCountersAreThoseOfOneCall() {
        Random rnd = new Random(12);
        List<Reference.Entry> entries = Reference.randomEntries(SHAPE, 400, rnd);
        KvShard shard = filled(8, entries);
        float[] q = Reference.gaussian(SHAPE.queryWidth(), rnd, 1f);
        AttentionScope scope = AttentionScope.experts(new int[] {1, 5});
        long before = shard.stats().lookups();
        AttentionResult split = shard.attendPartial(1, 0, q, scope, false, POOL, 4).finish();
        long inScope = entries.stream().filter(e -> e.expert() == 1 || e.expert() == 5).count();
        assertThat(shard.stats().lookups() - before).isEqualTo(inScope);
        double[] exact = Reference.attend(SHAPE, q, Reference.roundedToFp16(entries.stream()
                .filter(e -> e.expert() == 1 || e.expert() == 5).toList()));
        assertThat(Reference.relativeError(split.output(), exact)).isLessThan(1e-5);
        assertThat(split.visited()).isEqualTo((int) inScope);
    }
}
