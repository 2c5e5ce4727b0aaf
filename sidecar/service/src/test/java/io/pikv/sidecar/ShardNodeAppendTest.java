package io.pikv.sidecar;

import io.pikv.kv.ModelShape;
import io.pikv.kv.StorageType;
import io.pikv.kv.UnknownSequenceException;
import io.pikv.sidecar.wire.Wire;
import org.junit.jupiter.api.Test;

import java.util.Random;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/** A refused append changes nothing on the shard, not even through the evictions that storing it would cause. */
class ShardNodeAppendTest {
    /** One KV head of dim 16, fp32, 16-token pages: 2,048 bytes a page; a budget of 2 pages. */
    static final ModelShape SHAPE = new ModelShape(1, 2, 1, 16, 4, 2);

    static Wire.AppendRequest.Entry entry(int position, int expert, Random rnd) {
        float[] k = new float[SHAPE.kvWidth()];
        float[] v = new float[SHAPE.kvWidth()];
        for (int i = 0; i < k.length; i++) {
            k[i] = (float) rnd.nextGaussian();
            v[i] = (float) rnd.nextGaussian();
        }
        return new Wire.AppendRequest.Entry(position, expert, k, v);
    }

    static Wire.AppendRequest request(Wire.AppendRequest.Entry... entries) {
        return new Wire.AppendRequest(0, entries);
    }

    @Test
    void aSequenceNoCallUsedForTheIdleTimeoutIsClosedAndItsEntriesFreed() {
        Random rnd = new Random(7);
        try (ShardNode node = twoPages("lru")) {
            long idle = node.create(null);
            long used = node.create(null);
            for (int p = 0; p < 8; p++) {
                node.append(idle, request(entry(Wire.NEXT_POSITION, p % 4, rnd)));
                node.append(used, request(entry(Wire.NEXT_POSITION, p % 4, rnd)));
            }
            assertThat(node.closeIdle(java.time.Duration.ofMinutes(1).toNanos())).isZero();
            org.awaitility.Awaitility.await().pollDelay(java.time.Duration.ofMillis(3000)).until(() -> true);
            assertThat(node.lengths(used)).containsExactly(8); // a call: used now
            assertThat(node.closeIdle(java.time.Duration.ofSeconds(2).toNanos())).isEqualTo(1);
            assertThatThrownBy(() -> node.lengths(idle)).isInstanceOf(UnknownSequenceException.class);
            assertThat(node.lengths(used)).containsExactly(8);
            assertThat(node.stats().entries()).isEqualTo(8);
            assertThat(node.sequenceCount()).isEqualTo(1);
        }
    }

    @Test
    void anAttentionNeverSeesPartOfAnAppendThatIsTakenBack() throws Exception {
        // One page of 16 entries under reject, 15 stored: a batch of two stores its first entry in the last slot,
        // finds no page for the second and takes the first back. Attention running meanwhile sees 15 entries, never
        // 16 (it takes the sequence's lock, as the append does).
        Random rnd = new Random(6);
        try (ShardNode node = new ShardNode(0, SHAPE, StorageType.FP32, 16, 1, 2048, ShardPolicy.of("reject"))) {
            long seq = node.create(null);
            for (int p = 0; p < 15; p++) {
                node.append(seq, request(entry(Wire.NEXT_POSITION, p % 4, rnd)));
            }
            Wire.AppendRequest batch = request(entry(Wire.NEXT_POSITION, 0, rnd), entry(Wire.NEXT_POSITION, 1, rnd));
            java.util.concurrent.atomic.AtomicBoolean done = new java.util.concurrent.atomic.AtomicBoolean();
            java.util.concurrent.atomic.AtomicInteger refused = new java.util.concurrent.atomic.AtomicInteger();
            java.util.concurrent.atomic.AtomicReference<Throwable> failed = new java.util.concurrent.atomic.AtomicReference<>();
            Thread appender = new Thread(() -> {
                try {
                    while (!done.get()) {
                        try {
                            node.append(seq, batch);
                        } catch (io.pikv.kv.KvBudgetExceededException e) {
                            refused.incrementAndGet();
                        }
                    }
                } catch (Throwable e) { // any other failure of the take-back: a silent thread would hide it
                    failed.set(e);
                }
            });
            appender.start();
            float[] q = new float[SHAPE.queryWidth()];
            java.util.Arrays.fill(q, 0.5f);
            java.util.Set<Integer> seen = new java.util.TreeSet<>();
            long deadline = System.nanoTime() + java.time.Duration.ofSeconds(20).toNanos();
            try {
                // Until the appender has been refused often enough to have raced the attention many times.
                for (int i = 0; i < 20_000 || refused.get() < 200 && System.nanoTime() < deadline; i++) {
                    seen.add(node.attend(seq, new Wire.AttendRequest(0, new int[0], q)).visited());
                }
            } finally {
                done.set(true);
                appender.join();
            }
            assertThat(failed.get()).isNull();
            assertThat(refused.get()).isGreaterThanOrEqualTo(200);
            assertThat(seen).containsExactly(15);
            assertThat(node.resident(seq, 0)).isEqualTo(15);
        }
    }

    @Test
    void aBatchWithABadEntryEvictsNothingToMakeRoomForTheGoodOnes() {
        Random rnd = new Random(5);
        try (ShardNode node = twoPages("oldest-page")) {
            long full = node.create(null);
            for (int p = 0; p < 32; p++) {
                node.append(full, request(entry(Wire.NEXT_POSITION, p % 4, rnd)));
            }
            assertThat(node.resident(full, 0)).isEqualTo(32); // two full pages: the budget
            long other = node.create(null);
            long evictionsBefore = node.stats().evictions();

            // Storing entry 0 would evict the oldest page; entry 1 is refused, so neither may happen.
            assertThatThrownBy(() -> node.append(other, request(entry(Wire.NEXT_POSITION, 0, rnd),
                    entry(Wire.NEXT_POSITION, 9, rnd))))
                    .isInstanceOf(IllegalArgumentException.class)
                    .hasMessageContaining("entry 1: expert 9 is out of range")
                    .hasMessageContaining("no entry of the request was stored");
            float[] nan = new float[SHAPE.kvWidth()];
            nan[3] = Float.NaN;
            assertThatThrownBy(() -> node.append(other, request(entry(0, 1, rnd),
                    new Wire.AppendRequest.Entry(1, 1, nan, nan))))
                    .hasMessageContaining("entry 1: K[head 0][3] is NaN");
            assertThatThrownBy(() -> node.append(other, request(entry(0, 1, rnd), entry(1 << 24, 1, rnd))))
                    .hasMessageContaining("entry 1: position must be in [0, 16777215]");
            assertThatThrownBy(() -> node.append(other, request(entry(5, 1, rnd), entry(Wire.NEXT_POSITION, 2, rnd),
                    entry(6, 3, rnd))))
                    .hasMessage("position 6 appears twice in the request (no entry of the request was stored)");

            assertThat(node.resident(full, 0)).isEqualTo(32);
            assertThat(node.resident(other, 0)).isZero();
            assertThat(node.lengths(other)).containsExactly(0);
            assertThat(node.stats().evictions()).isEqualTo(evictionsBefore);

            // A good batch then evicts as it must.
            node.append(other, request(entry(Wire.NEXT_POSITION, 0, rnd), entry(Wire.NEXT_POSITION, 1, rnd)));
            assertThat(node.resident(other, 0)).isEqualTo(2);
            assertThat(node.stats().evictions()).isEqualTo(evictionsBefore + 16);
        }
    }

    /** A shard of fp32 pages of 16 entries, one bucket, a budget of two pages, under {@code policy}. */
    private static ShardNode twoPages(String policy) {
        return new ShardNode(0, SHAPE, StorageType.FP32, 16, 1, 2 * 2048, ShardPolicy.of(policy));
    }

    /** {@code n} entries at the next positions, experts 0 to 3 in turn. */
    private static Wire.AppendRequest.Entry[] next(int n, Random rnd) {
        Wire.AppendRequest.Entry[] entries = new Wire.AppendRequest.Entry[n];
        for (int i = 0; i < n; i++) {
            entries[i] = entry(Wire.NEXT_POSITION, i % 4, rnd);
        }
        return entries;
    }

    /** A batch that could not fit even alone is refused before it evicts anything, its own entries included. */
    @Test
    void aBatchLargerThanTheBudgetIsRefusedWithoutEvicting() {
        Random rnd = new Random(9);
        try (ShardNode node = twoPages("oldest-page")) {
            long other = node.create(null);
            node.append(other, request(entry(Wire.NEXT_POSITION, 0, rnd)));
            long seq = node.create(null);
            Wire.AppendRequest.Entry[] many = next(33, rnd); // three pages of 16, the budget two
            assertThatThrownBy(() -> node.append(seq, request(many)))
                    .isInstanceOf(io.pikv.kv.KvBudgetExceededException.class)
                    .hasMessage("the request's 33 entries need at least 3 pages by themselves, more than the 2 pages "
                            + "of the shard's budget of 4096 bytes; send fewer at a time (no entry of the request was "
                            + "stored)");
            assertThat(node.resident(other, 0)).isEqualTo(1);
            assertThat(node.resident(seq, 0)).isZero();
            assertThat(node.stats().evictions()).isZero();
            // Two pages' worth fits (evicting the other sequence's page).
            node.append(seq, request(java.util.Arrays.copyOf(many, 32)));
            assertThat(node.resident(seq, 0)).isEqualTo(32);
        }
    }

    /**
     * A batch that fits in fresh pages but starts on its layer's partly filled tail page: room for its last entry
     * evicts that oldest page with the batch's first entries in it. Refused and taken back, never answered as stored.
     */
    @Test
    void aBatchWhoseLastEntriesWouldEvictItsFirstIsRefused() {
        Random rnd = new Random(10);
        try (ShardNode node = twoPages("oldest-page")) {
            long seq = node.create(null);
            node.append(seq, request(entry(Wire.NEXT_POSITION, 0, rnd))); // page 1 of 2, one entry
            Wire.AppendRequest.Entry[] batch = next(32, rnd); // two pages' worth
            assertThatThrownBy(() -> node.append(seq, request(batch)))
                    .isInstanceOf(io.pikv.kv.KvBudgetExceededException.class)
                    .hasMessage("the request's 32 entries do not fit beside each other: making room for the last, "
                            + "or for another request meanwhile, evicted some of the first (the budget holds 2 pages); "
                            + "send fewer at a time, or again (no entry of the request was stored)");
            // None of the batch stays; the entry before it went with the page (an eviction is not undone).
            assertThat(node.residentPositions(seq, 0)).isEmpty();
            assertThat(node.layers(seq)[0][0]).as("length").isEqualTo(1);
            // Sent in two halves, it is stored whole.
            node.append(seq, request(java.util.Arrays.copyOf(batch, 16)));
            node.append(seq, request(java.util.Arrays.copyOfRange(batch, 16, 32)));
            assertThat(node.residentPositions(seq, 0)).hasSize(32);
        }
        // Under a token policy the same batch is stored: lru evicts the oldest tokens, the batch's first among them.
        try (ShardNode node = twoPages("lru")) {
            long seq = node.create(null);
            node.append(seq, request(entry(Wire.NEXT_POSITION, 0, rnd)));
            Wire.AppendRequest.Entry[] batch = next(32, rnd);
            assertThat(node.append(seq, request(batch))).hasSize(32).startsWith(1).endsWith(32);
            assertThat(node.residentPositions(seq, 0)).hasSizeLessThanOrEqualTo(32).endsWith(32)
                    .doesNotContain(0);
        }
    }

    @Test
    void aClosedSequenceTakesNoEntries() {
        Random rnd = new Random(6);
        try (ShardNode node = new ShardNode(0, SHAPE, StorageType.FP32, 16, 1, 4 * 2048, ShardPolicy.of("lru"))) {
            long seq = node.create(7L);
            node.append(seq, request(entry(Wire.NEXT_POSITION, 0, rnd)));
            node.close(seq);
            assertThatThrownBy(() -> node.append(seq, request(entry(Wire.NEXT_POSITION, 0, rnd))))
                    .isInstanceOf(UnknownSequenceException.class);
            // The id can be used again, and the new sequence starts empty.
            assertThat(node.create(7L)).isEqualTo(7L);
            assertThat(node.resident(7L, 0)).isZero();
            assertThat(node.stats().bytesInUse()).isZero();
        }
    }
}
