package io.pikv.kv;

import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;

import java.lang.management.ManagementFactory;
import java.util.Random;

import static org.assertj.core.api.Assertions.assertThat;

/** An append allocates nothing on the heap once its (sequence, layer)'s index has grown: not under eviction either. */
class AppendAllocationTest {
    private static final ModelShape SHAPE = new ModelShape(2, 4, 2, 32, 8, 2);

    @Test
    void appendsUnderEvictionAllocateNothing() {
        com.sun.management.ThreadMXBean threads = (com.sun.management.ThreadMXBean) ManagementFactory.getThreadMXBean();
        Assumptions.assumeTrue(threads.isThreadAllocatedMemorySupported() && threads.isThreadAllocatedMemoryEnabled(),
                "this JVM does not count the bytes a thread allocates");
        KvLayout layout = new KvLayout(2, 32, 16, StorageType.FP16);
        KvStoreConfig config = KvStoreConfig.builder(SHAPE).pageTokens(16).shards(2).buckets(2)
                .budgetBytes(2 * 64L * layout.pageBytes()).threads(1).build();
        Random rnd = new Random(11);
        float[] k = Reference.gaussian(SHAPE.kvWidth(), rnd, 1f);
        float[] v = Reference.gaussian(SHAPE.kvWidth(), rnd, 1f);
        try (KvStore store = new KvStore(config)) {
            // Ids of 200 and above: outside the JDK's cache of small boxed longs, where a Map<Long, …> lookup boxes.
            long sequence = 0;
            while (sequence < 200) {
                sequence = store.createSequence();
                if (sequence < 200) {
                    store.closeSequence(sequence);
                }
            }
            // Past the first clean-ups of the position indexes' eviction markers: their tables have their size.
            for (int i = 0; i < 1_000_000; i++) {
                store.append(sequence, 0, i % SHAPE.experts(), k, v);
            }
            long before = threads.getCurrentThreadAllocatedBytes();
            long baseline = threads.getCurrentThreadAllocatedBytes() - before; // what reading the counter costs
            int n = 400_000; // more than a clean-up round of both shards' indexes
            before = threads.getCurrentThreadAllocatedBytes();
            for (int i = 0; i < n; i++) {
                store.append(sequence, 0, i % SHAPE.experts(), k, v);
            }
            long allocated = threads.getCurrentThreadAllocatedBytes() - before - baseline;
            assertThat(store.stats().stream().mapToLong(ShardStats::evictions).sum())
                    .as("appends that evicted a page of 16 entries every 16 appends").isGreaterThan(1_390_000);
            // One byte in 400 appends at most (a one-off of the JVM's, never a per-append cost).
            assertThat(allocated).as("heap bytes allocated by %d appends", n).isLessThan(n / 400);
        }
    }
}
