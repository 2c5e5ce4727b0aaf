package io.pikv.kv;

import org.junit.jupiter.api.Test;

import java.lang.management.BufferPoolMXBean;
import java.lang.management.ManagementFactory;
import java.util.Arrays;
import java.util.List;
import java.util.Random;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

class BudgetTest {
    private static final ModelShape SHAPE = new ModelShape(3, 4, 2, 32, 8, 2);

    @Test
    void neverHoldsMoreThanTheBudgetUnderHeavyAppends() {
        KvLayout layout = new KvLayout(2, 32, 16, StorageType.FP16);
        long budget = 23L * layout.pageBytes() + 100; // not a page multiple: the remainder is never used
        long directBefore = directBytes();
        KvStoreConfig config = KvStoreConfig.builder(SHAPE).pageTokens(16).shards(1).buckets(2).budgetBytes(budget)
                .threads(1).build();
        Random rnd = new Random(3);
        try (KvStore store = new KvStore(config)) {
            long[] seqs = {store.createSequence(), store.createSequence(), store.createSequence()};
            float[] k = Reference.gaussian(SHAPE.kvWidth(), rnd, 1f);
            float[] v = Reference.gaussian(SHAPE.kvWidth(), rnd, 1f);
            long maxInUse = 0;
            for (int i = 0; i < 20_000; i++) {
                store.append(seqs[rnd.nextInt(3)], rnd.nextInt(3), rnd.nextInt(8), k, v);
                long inUse = store.bytesInUse();
                maxInUse = Math.max(maxInUse, inUse);
                assertThat(inUse).isLessThanOrEqualTo(budget);
            }
            ShardStats stats = store.stats().get(0);
            assertThat(maxInUse).isEqualTo(23L * layout.pageBytes());
            assertThat(stats.bytesAllocated()).isLessThanOrEqualTo(budget);
            assertThat(stats.evictions()).isGreaterThan(15_000);
            assertThat(stats.entries()).isEqualTo(20_000 - stats.evictions());
            assertThat(directBytes() - directBefore).as("direct memory taken by the store")
                    .isLessThanOrEqualTo(budget);
        }
    }

    @Test
    void evictsTheOldestPageFirst() {
        KvStoreConfig config = KvStoreConfig.builder(SHAPE).pageTokens(16).shards(1).buckets(1)
                .budgetBytes(4L * new KvLayout(2, 32, 16, StorageType.FP16).pageBytes()).threads(1).build();
        Random rnd = new Random(5);
        try (KvStore store = new KvStore(config)) {
            long seq = store.createSequence();
            for (int t = 0; t < 64 + 10; t++) {
                store.append(seq, 0, 0, Reference.gaussian(SHAPE.kvWidth(), rnd, 1f),
                        Reference.gaussian(SHAPE.kvWidth(), rnd, 1f));
            }
            // Four pages hold 64 entries; the 65th append evicted the page of positions 0..15.
            AttentionResult r = store.attend(seq, 0, Reference.gaussian(SHAPE.queryWidth(), rnd, 1f),
                    AttentionScope.all(), true);
            int[] positions = r.positions();
            Arrays.sort(positions);
            assertThat(positions).hasSize(58);
            assertThat(positions[0]).isEqualTo(16);
            assertThat(positions[57]).isEqualTo(73);
            assertThat(store.length(seq, 0)).isEqualTo(74);
            assertThat(store.resident(seq, 0)).isEqualTo(58);
        }
    }

    @Test
    void rejectingHookLeavesTheStoreUnchanged() {
        KvLayout layout = new KvLayout(2, 32, 16, StorageType.FP32);
        KvStoreConfig config = KvStoreConfig.builder(SHAPE).storageType(StorageType.FP32).pageTokens(16).shards(1)
                .buckets(1).budgetBytes(2L * layout.pageBytes()).eviction(EvictionHook.REJECT).threads(1).build();
        Random rnd = new Random(9);
        try (KvStore store = new KvStore(config)) {
            long seq = store.createSequence();
            List<Reference.Entry> entries = Reference.randomEntries(SHAPE, 32, rnd);
            Reference.load(store, seq, 0, entries);
            float[] q = Reference.gaussian(SHAPE.queryWidth(), rnd, 1f);
            float[] before = store.attend(seq, 0, q).output();
            ShardStats statsBefore = store.stats().get(0);

            assertThatThrownBy(() -> store.append(seq, 0, 1, entries.get(0).k(), entries.get(0).v()))
                    .isInstanceOf(KvBudgetExceededException.class)
                    .hasMessageContaining("budget of " + 2 * layout.pageBytes() + " bytes");

            assertThat(store.length(seq, 0)).isEqualTo(32);
            assertThat(store.resident(seq, 0)).isEqualTo(32);
            assertThat(store.attend(seq, 0, q).output()).containsExactly(before);
            assertThat(store.stats().get(0).bytesInUse()).isEqualTo(statsBefore.bytesInUse());
            assertThat(store.stats().get(0).evictions()).isZero();
        }
    }

    @Test
    void countsLookupsHitsAndMissesPerExpertAndLayer() {
        KvLayout layout = new KvLayout(2, 32, 16, StorageType.FP16);
        KvStoreConfig config = KvStoreConfig.builder(SHAPE).pageTokens(16).shards(2).buckets(1)
                .budgetBytes(2L * 2 * layout.pageBytes()).threads(1).build();
        Random rnd = new Random(11);
        try (KvStore store = new KvStore(config)) {
            long seq = store.createSequence();
            // Expert 0 lives on shard 0, expert 1 on shard 1 (round-robin); 40 entries of expert 0 overflow
            // shard 0's two pages, so its oldest page (16 entries) is evicted.
            for (int t = 0; t < 40; t++) {
                store.append(seq, 2, 0, Reference.gaussian(SHAPE.kvWidth(), rnd, 1f),
                        Reference.gaussian(SHAPE.kvWidth(), rnd, 1f));
            }
            for (int t = 0; t < 5; t++) {
                store.append(seq, 2, 1, Reference.gaussian(SHAPE.kvWidth(), rnd, 1f),
                        Reference.gaussian(SHAPE.kvWidth(), rnd, 1f));
            }
            store.attend(seq, 2, Reference.gaussian(SHAPE.queryWidth(), rnd, 1f));
            store.attend(seq, 2, Reference.gaussian(SHAPE.queryWidth(), rnd, 1f), AttentionScope.experts(1), false);

            ExpertLayerCounters e0 = counters(store.stats().get(0), 0, 2);
            assertThat(e0.lookups()).isEqualTo(40);
            assertThat(e0.hits()).isEqualTo(24);
            assertThat(e0.misses()).isEqualTo(16);
            assertThat(e0.evictions()).isEqualTo(16);
            assertThat(e0.bytesResident()).isEqualTo(24L * layout.entryBytes());
            ExpertLayerCounters e1 = counters(store.stats().get(1), 1, 2);
            assertThat(e1.lookups()).isEqualTo(10);
            assertThat(e1.hits()).isEqualTo(10);
            assertThat(e1.misses()).isZero();
        }
    }

    private static ExpertLayerCounters counters(ShardStats stats, int expert, int layer) {
        return stats.counters().stream().filter(c -> c.expert() == expert && c.layer() == layer).findFirst()
                .orElseThrow();
    }

    private static long directBytes() {
        return ManagementFactory.getPlatformMXBeans(BufferPoolMXBean.class).stream()
                .filter(b -> b.getName().equals("direct")).mapToLong(BufferPoolMXBean::getMemoryUsed).sum();
    }
}
