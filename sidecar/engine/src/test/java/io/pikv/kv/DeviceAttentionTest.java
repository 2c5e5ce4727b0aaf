package io.pikv.kv;

import io.pikv.kv.compute.AttentionAccumulator;
import io.pikv.kv.compute.AttentionKernel;
import io.pikv.kv.compute.KernelScratch;
import io.pikv.kv.compute.Kernels;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

import java.nio.ByteBuffer;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * A shard attending on a device keeps the device's page copies in step: a stand-in device that attends only over
 * the copies it took when told a page changed must give the shard's own answer after appends, compaction (entries
 * withdrawn and moved), evictions and page reuse. A page changed without the shard saying so would make it differ.
 */
class DeviceAttentionTest {
    static final ModelShape SHAPE = new ModelShape(1, 4, 2, 16, 4, 2);

    /** Attends over its own copies of the pages, taken when a page is first seen or after it was said to change. */
    static final class CopyingDevice implements DeviceAttention {
        final KvLayout layout;
        final AttentionKernel kernel;
        final Map<Integer, Page> copies = new HashMap<>();
        int calls;
        int uploads;
        /** When set, every attention fails, as a device lost mid-run. */
        volatile boolean lost;
        /** When set, a page change is refused (throws), as a device whose bookkeeping broke. */
        volatile boolean refusesChanges;
        /** When set, a page change throws this (an error the shard does not catch). */
        volatile Error changeError;
        boolean closed;

        CopyingDevice(KvLayout layout) {
            this.layout = layout;
            this.kernel = Kernels.select(layout, "scalar");
        }

        @Override
        public boolean supports(KvLayout l) {
            return l.equals(layout);
        }

        @Override
        public synchronized void pageChanged(Page page) {
            if (refusesChanges) {
                throw new IllegalStateException("page bookkeeping broke");
            }
            if (changeError != null) {
                throw changeError;
            }
            copies.remove(page.id());
        }

        @Override
        public synchronized PartialAttention attend(List<Page> pages, float[] query) {
            if (lost) {
                throw new IllegalStateException("device lost");
            }
            calls++;
            int qHeads = SHAPE.qHeads();
            float[] scaled = SHAPE.scaledQuery(query);
            AttentionAccumulator acc = new AttentionAccumulator(qHeads, SHAPE.headDim());
            KernelScratch scratch = KernelScratch.get().ensure(0, 0, layout.pageTokens());
            float[] bias = new float[layout.pageTokens()];
            int visited = 0;
            for (Page page : pages) {
                Page copy = copies.get(page.id());
                if (copy == null) {
                    copy = new Page(page.id(), layout);
                    ByteBuffer from = page.bytes();
                    copy.bytes.clear();
                    copy.bytes.put(from);
                    copies.put(page.id(), copy);
                    uploads++;
                }
                copy.count = page.count(); // counts travel with every call, bytes only when changed
                Arrays.fill(bias, 0f);
                Arrays.fill(bias, copy.count, bias.length, Float.NEGATIVE_INFINITY);
                kernel.foldPage(copy, bias, scaled, qHeads, acc, scratch, null, 0, 0);
                visited += copy.count;
            }
            kernel.finish(acc);
            double[] m = new double[qHeads];
            double[] l = new double[qHeads];
            double[] o = new double[acc.o.length];
            for (int h = 0; h < qHeads; h++) {
                m[h] = acc.m[h];
                l[h] = acc.l[h];
            }
            for (int i = 0; i < o.length; i++) {
                o[i] = acc.o[i];
            }
            return new PartialAttention(qHeads, SHAPE.headDim(), m, l, o, visited, null, null);
        }

        @Override
        public String describe() {
            return "copying test device";
        }

        @Override
        public synchronized void close() {
            closed = true;
        }
    }

    /**
     * A device that cannot take a page change would answer from a stale copy: the shard lets it go (closed) and attends
     * on the CPU, and the append that changed the page stands, counted once, its entry attended.
     */
    @org.junit.jupiter.api.Test
    void aDeviceThatRefusesAPageChangeIsLetGoAndTheShardStaysWhole() {
        Random rnd = new Random(8);
        KvLayout layout = new KvLayout(SHAPE.kvHeads(), SHAPE.headDim(), 16, StorageType.FP32);
        KvShard shard = shardOf64Pages(0, layout, 2);
        KvShard reference = shardOf64Pages(1, layout, 2);
        CopyingDevice device = new CopyingDevice(layout);
        shard.useDevice(device);
        List<Reference.Entry> entries = Reference.randomEntries(SHAPE, 41, rnd);
        appendToBoth(shard, reference, entries, 0, 40);
        device.refusesChanges = true;
        appendToBoth(shard, reference, entries, 40, 41);
        assertThat(shard.device()).isNull();
        assertThat(device.closed).isTrue();
        assertThat(shard.resident(7, 0)).isEqualTo(41);
        assertThat(shard.stats().entries()).isEqualTo(41);
        float[] q = attendsAsTheReference(shard, reference, 41, rnd);
        // Later changes reach no device, and evictions keep the shard whole as well.
        assertThat(shard.evict(7, 0, new int[] {3, 17})).isEqualTo(2);
        assertThat(shard.attendPartial(7, 0, q, AttentionScope.all(), false).visited()).isEqualTo(39);
    }

    /**
     * An error out of the device while a removal moves the tail entry into the hole (one the shard does not catch)
     * comes after the segment is whole again: the entry sits in one slot, found there, and is read once.
     */
    @org.junit.jupiter.api.Test
    void anErrorFromTheDeviceDuringACompactionLeavesTheSegmentWhole() {
        Random rnd = new Random(9);
        KvLayout layout = new KvLayout(SHAPE.kvHeads(), SHAPE.headDim(), 16, StorageType.FP32);
        KvShard shard = shardOf64Pages(0, layout, 1);
        KvShard reference = shardOf64Pages(1, layout, 1);
        CopyingDevice device = new CopyingDevice(layout);
        shard.useDevice(device);
        appendToBoth(shard, reference, Reference.randomEntries(SHAPE, 41, rnd), 0, 41);
        device.changeError = new OutOfMemoryError("device bookkeeping");
        org.assertj.core.api.Assertions.assertThatThrownBy(() -> shard.evict(7, 0, new int[] {3}))
                .isInstanceOf(OutOfMemoryError.class);
        assertThat(reference.evict(7, 0, new int[] {3})).isEqualTo(1);
        shard.useDevice(null); // its copies missed the change: read the pages on the CPU
        assertThat(shard.residentPositions(7, 0)).containsExactly(reference.residentPositions(7, 0));
        assertThat(shard.stats().entries()).isEqualTo(40);
        attendsAsTheReference(shard, reference, 40, rnd);
    }

    /** Appends entries {@code from} to {@code to} (exclusive), at their index as position, to sequence 7 of both. */
    private static void appendToBoth(KvShard shard, KvShard reference, List<Reference.Entry> entries, int from, int to) {
        for (int i = from; i < to; i++) {
            Reference.Entry e = entries.get(i);
            shard.append(7, 0, i, e.expert(), e.k(), e.v());
            reference.append(7, 0, i, e.expert(), e.k(), e.v());
        }
    }

    /** The shard's attention over sequence 7 visits {@code visited} entries and answers as the reference's; the query. */
    private static float[] attendsAsTheReference(KvShard shard, KvShard reference, int visited, Random rnd) {
        float[] q = Reference.gaussian(SHAPE.queryWidth(), rnd, 1f);
        PartialAttention got = shard.attendPartial(7, 0, q, AttentionScope.all(), false);
        assertThat(got.visited()).isEqualTo(visited);
        assertThat(got.finish().output())
                .containsExactly(reference.attendPartial(7, 0, q, AttentionScope.all(), false).finish().output());
        return q;
    }

    /**
     * A device attached again after the shard ran without it: pages that changed meanwhile (the device was not there to
     * be told) are told as changed at the attach, so it does not attend over the copies it took before.
     */
    @org.junit.jupiter.api.Test
    void aDeviceAttachedAgainDoesNotAttendOverCopiesTakenBeforeItWasDetached() {
        Random rnd = new Random(13);
        KvLayout layout = new KvLayout(SHAPE.kvHeads(), SHAPE.headDim(), 16, StorageType.FP32);
        KvShard shard = shardOf64Pages(0, layout, 1);
        CopyingDevice device = new CopyingDevice(layout);
        List<Reference.Entry> entries = Reference.randomEntries(SHAPE, 12, rnd);
        shard.useDevice(device);
        for (int i = 0; i < 6; i++) {
            Reference.Entry e = entries.get(i);
            shard.append(7, 0, i, e.expert(), e.k(), e.v());
        }
        agree(shard, device, 7, rnd); // the device holds a copy of the one page, with 6 entries' bytes
        shard.useDevice(null);
        for (int i = 6; i < 12; i++) { // into the same page, unseen by the device
            Reference.Entry e = entries.get(i);
            shard.append(7, 0, i, e.expert(), e.k(), e.v());
        }
        shard.useDevice(device);
        agree(shard, device, 7, rnd);
    }

    /** A shard of 64 pages' budget, evicting its oldest page. */
    private static KvShard shardOf64Pages(int id, KvLayout layout, int buckets) {
        return new KvShard(id, SHAPE, layout, buckets, 64L * layout.pageBytes(), EvictionHook.OLDEST_PAGE_FIRST,
                Kernels.select(layout));
    }

    /** The device's answer against the shard's own CPU answer (an expert scope naming every expert stays on the CPU). */
    private static void agree(KvShard shard, CopyingDevice device, long seq, Random rnd) {
        float[] q = Reference.gaussian(SHAPE.queryWidth(), rnd, 1f);
        int before = device.calls;
        float[] onDevice = shard.attendPartial(seq, 0, q, AttentionScope.all(), false).finish().output();
        assertThat(device.calls).isEqualTo(before + 1);
        float[] onCpu = shard.attendPartial(seq, 0, q, AttentionScope.experts(0, 1, 2, 3), false).finish().output();
        assertThat(Accuracy.relativeError(onDevice, onCpu)).isLessThan(1e-6);
    }

    @org.junit.jupiter.api.Test
    void aStoreAttendsOnItsShardsDevices() {
        Random rnd = new Random(21);
        try (KvStore store = new KvStore(KvStoreConfig.builder(SHAPE).storageType(StorageType.FP32).pageTokens(16)
                .shards(2).buckets(2).threads(2).build())) {
            CopyingDevice device = new CopyingDevice(store.shards().get(1).layout());
            store.shards().get(1).useDevice(device); // shard 0 stays on the CPU
            long seq = store.createSequence();
            Reference.load(store, seq, 0, Reference.randomEntries(SHAPE, 70, rnd));
            float[] q = Reference.gaussian(SHAPE.queryWidth(), rnd, 1f);
            AttentionResult all = store.attend(seq, 0, q);
            assertThat(device.calls).isEqualTo(1);
            // Expert-scoped and weighted calls stay on the CPU, and every path gives the same answer.
            AttentionResult scoped = store.attend(seq, 0, q, AttentionScope.experts(0, 1, 2, 3), false);
            AttentionResult weighted = store.attend(seq, 0, q, AttentionScope.all(), true);
            assertThat(device.calls).isEqualTo(1);
            assertThat(all.visited()).isEqualTo(70);
            assertThat(Accuracy.relativeError(all.output(), scoped.output())).isLessThan(1e-6);
            assertThat(Accuracy.relativeError(all.output(), weighted.output())).isLessThan(1e-6);
        }
    }

    @org.junit.jupiter.api.Test
    void anAttentionThatFailsCountsNoLookup() {
        KvLayout layout = new KvLayout(SHAPE.kvHeads(), SHAPE.headDim(), 16, StorageType.FP32);
        KvShard shard = shardOf64Pages(0, layout, 1);
        CopyingDevice device = new CopyingDevice(layout);
        shard.useDevice(device);
        Random rnd = new Random(2);
        for (int p = 0; p < 20; p++) {
            shard.append(1, 0, p, p % SHAPE.experts(), Reference.gaussian(SHAPE.kvWidth(), rnd, 1f),
                    Reference.gaussian(SHAPE.kvWidth(), rnd, 1f));
        }
        float[] q = Reference.gaussian(SHAPE.queryWidth(), rnd, 1f);
        shard.attendPartial(1, 0, q, AttentionScope.all(), false);
        assertThat(shard.stats().lookups()).isEqualTo(20);
        device.lost = true;
        org.assertj.core.api.Assertions.assertThatThrownBy(
                () -> shard.attendPartial(1, 0, q, AttentionScope.all(), false)).hasMessage("device lost");
        assertThat(shard.stats().lookups()).as("a call that failed looked nothing up").isEqualTo(20);
        assertThat(shard.stats().hits()).isEqualTo(20);
        device.lost = false;
        shard.attendPartial(1, 0, q, AttentionScope.all(), false);
        assertThat(shard.stats().lookups()).isEqualTo(40);
    }

    @ParameterizedTest
    @EnumSource(value = StorageType.class, names = {"FP16", "INT8", "FP32"})
    void theDevicesCopiesFollowAppendsCompactionEvictionAndReuse(StorageType type) {
        KvLayout layout = new KvLayout(SHAPE.kvHeads(), SHAPE.headDim(), 16, type);
        KvShard shard = new KvShard(0, SHAPE, layout, 2, 8L * layout.pageBytes(), EvictionHook.OLDEST_PAGE_FIRST,
                Kernels.select(layout));
        CopyingDevice device = new CopyingDevice(layout);
        shard.useDevice(device);
        Random rnd = new Random(type.ordinal());
        for (int p = 0; p < 40; p++) {
            shard.append(1, 0, p, rnd.nextInt(SHAPE.experts()), Reference.gaussian(SHAPE.kvWidth(), rnd, 1f),
                    Reference.gaussian(SHAPE.kvWidth(), rnd, 1f));
        }
        agree(shard, device, 1, rnd);
        int uploads = device.uploads;
        agree(shard, device, 1, rnd);
        assertThat(device.uploads).as("nothing changed: nothing copied again").isEqualTo(uploads);

        // Withdrawals and evictions fill holes with the tail's last entry: the pages written to are stale.
        shard.withdraw(1, 0, new int[] {0, 5, 17, 33});
        shard.evict(1, 0, new int[] {2, 9, 38});
        agree(shard, device, 1, rnd);
        // Appends after the tail shrank write into slots the device had copied.
        for (int p = 40; p < 48; p++) {
            shard.append(1, 0, p, rnd.nextInt(SHAPE.experts()), Reference.gaussian(SHAPE.kvWidth(), rnd, 1f),
                    Reference.gaussian(SHAPE.kvWidth(), rnd, 1f));
        }
        agree(shard, device, 1, rnd);
        // Another sequence fills the budget: sequence 1 loses its oldest pages, which come back as sequence 2's.
        for (int p = 0; p < 100; p++) {
            shard.append(2, 0, p, rnd.nextInt(SHAPE.experts()), Reference.gaussian(SHAPE.kvWidth(), rnd, 1f),
                    Reference.gaussian(SHAPE.kvWidth(), rnd, 1f));
        }
        agree(shard, device, 1, rnd);
        agree(shard, device, 2, rnd);
        // Weights and expert scopes stay on the CPU.
        int calls = device.calls;
        shard.attendPartial(2, 0, Reference.gaussian(SHAPE.queryWidth(), rnd, 1f), AttentionScope.all(), true);
        shard.attendPartial(2, 0, Reference.gaussian(SHAPE.queryWidth(), rnd, 1f), AttentionScope.experts(1), false);
        assertThat(device.calls).isEqualTo(calls);
    }
}
