package io.pikv.kv;

import org.junit.jupiter.api.Test;

import java.util.Random;
import java.util.concurrent.atomic.AtomicBoolean;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * KvStore.attend reads every bucket of every shard in one state: while another thread appends, each call sees the
 * entries of a prefix of the positions, never a later entry without an earlier one.
 */
class ConsistentAttentionTest {
    static final ModelShape SHAPE = new ModelShape(1, 4, 2, 16, 8, 2);
    /** Entries the appender stores, at most {@link #APPENDS_PER_CALL} ahead of the reader's calls. */
    static final int APPENDS = 20_000;
    static final int APPENDS_PER_CALL = 200;
    /** Attention calls the reader makes at least while the appender appends. */
    static final int READER_CALLS = APPENDS / APPENDS_PER_CALL - 1;

    @Test
    void attentionDuringAppendsSeesAPrefixOfThePositions() throws Exception {
        try (KvStore store = new KvStore(KvStoreConfig.builder(SHAPE).storageType(StorageType.FP32).pageTokens(8)
                .shards(2).buckets(4).threads(2).build())) {
            long seq = store.createSequence();
            AtomicBoolean done = new AtomicBoolean();
            java.util.concurrent.atomic.AtomicReference<Throwable> failed = new java.util.concurrent.atomic.AtomicReference<>();
            java.util.concurrent.CountDownLatch started = new java.util.concurrent.CountDownLatch(1);
            java.util.concurrent.atomic.AtomicInteger readerCalls = new java.util.concurrent.atomic.AtomicInteger();
            Thread appender = new Thread(() -> {
                try {
                    Random rnd = new Random(1);
                    started.await();
                    // Paced by the reader (a reader that finished its first call only after the last append would
                    // test nothing): at most APPENDS_PER_CALL appends ahead of its calls, however slow it runs.
                    long deadline = System.nanoTime() + 120_000_000_000L;
                    for (int i = 0; i < APPENDS; i++) {
                        while (i >= APPENDS_PER_CALL * (readerCalls.get() + 1) && System.nanoTime() < deadline) {
                            Thread.onSpinWait();
                        }
                        store.append(seq, 0, rnd.nextInt(SHAPE.experts()), Reference.gaussian(SHAPE.kvWidth(), rnd, 1f),
                                Reference.gaussian(SHAPE.kvWidth(), rnd, 1f));
                    }
                } catch (Throwable e) {
                    failed.set(e);
                } finally {
                    done.set(true); // also on a failure: the reader loop below must end
                }
            });
            appender.start();
            started.countDown();
            Random rnd = new Random(2);
            int calls = 0;
            int torn = 0;
            while (!done.get()) {
                AttentionResult r = store.attend(seq, 0, Reference.gaussian(SHAPE.queryWidth(), rnd, 1f),
                        AttentionScope.all(), true);
                int[] positions = r.positions().clone();
                java.util.Arrays.sort(positions);
                for (int j = 0; j < positions.length; j++) {
                    if (positions[j] != j) {
                        torn++;
                        break;
                    }
                }
                calls++;
                readerCalls.incrementAndGet();
            }
            appender.join();
            assertThat(failed.get()).as("the appender failed").isNull();
            assertThat(calls).as("attention calls made while the appends ran").isGreaterThanOrEqualTo(READER_CALLS);
            assertThat(torn).as("calls (of %d) that saw an entry without an earlier one", calls).isZero();
        }
    }
}
