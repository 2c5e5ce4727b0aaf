package io.pikv.kv;

import org.junit.jupiter.api.Test;

import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Random;
import java.util.Set;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

class EvictionTest {
    private static final ModelShape SHAPE = new ModelShape(1, 4, 2, 16, 4, 2);

    @Test
    void evictingTokensKeepsTheRestExact() {
        Random rnd = new Random(8);
        for (StorageType type : new StorageType[] {StorageType.FP32, StorageType.FP16}) { // int8: Int8PageTest
            try (KvStore store = new KvStore(KvStoreConfig.builder(SHAPE).storageType(type).pageTokens(16).shards(2)
                    .buckets(2).threads(1).build())) {
                long seq = store.createSequence();
                List<Reference.Entry> entries = Reference.randomEntries(SHAPE, 203, rnd);
                Reference.load(store, seq, 0, entries);
                long pagesBefore = store.stats().stream().mapToLong(ShardStats::pagesInUse).sum();
                Set<Integer> gone = new HashSet<>();
                for (int round = 0; round < 4; round++) {
                    int[] victims = rnd.ints(30, 0, 203).toArray();
                    int expected = 0;
                    for (int v : victims) {
                        expected += gone.add(v) ? 1 : 0;
                    }
                    assertThat(store.evict(seq, 0, victims)).isEqualTo(expected);
                    List<Reference.Entry> kept = new ArrayList<>();
                    for (Reference.Entry e : entries) {
                        if (!gone.contains(e.position())) {
                            kept.add(e);
                        }
                    }
                    float[] q = Reference.gaussian(SHAPE.queryWidth(), rnd, 1f);
                    AttentionResult r = store.attend(seq, 0, q, AttentionScope.all(), true);
                    assertThat(java.util.Arrays.stream(r.positions()).boxed().toList()).containsExactlyInAnyOrderElementsOf(
                            kept.stream().map(Reference.Entry::position).toList());
                    List<Reference.Entry> exact = type == StorageType.FP16 ? Reference.roundedToFp16(kept) : kept;
                    assertThat(Reference.relativeError(r.output(), Reference.attend(SHAPE, q, exact)))
                            .isLessThanOrEqualTo(1e-5);
                }
                long evictions = store.stats().stream().mapToLong(ShardStats::evictions).sum();
                assertThat(evictions).isEqualTo(gone.size());
                assertThat(store.resident(seq, 0)).isEqualTo(203 - gone.size());
                // Compaction keeps segments dense: pages were freed as entries went.
                assertThat(store.stats().stream().mapToLong(ShardStats::pagesInUse).sum()).isLessThan(pagesBefore);
            }
        }
    }

    /** An fp32 store of one shard, 16-token pages, one attention thread, the default budget. */
    private static KvStore oneShard(int buckets) {
        return new KvStore(KvStoreConfig.builder(SHAPE).storageType(StorageType.FP32).pageTokens(16).shards(1)
                .buckets(buckets).threads(1).build());
    }

    @Test
    void discardedEntriesAreEvictionsButNotMisses() {
        Random rnd = new Random(31);
        try (KvStore store = oneShard(2)) {
            long seq = store.createSequence();
            List<Reference.Entry> entries = Reference.randomEntries(SHAPE, 40, rnd);
            Reference.load(store, seq, 0, entries);
            KvShard shard = store.shards().get(0);
            assertThat(shard.discard(seq, 0, new int[] {3, 4, 5, 99})).isEqualTo(3);
            assertThat(shard.evict(seq, 0, new int[] {6})).isEqualTo(1);
            float[] q = Reference.gaussian(SHAPE.queryWidth(), rnd, 1f);
            store.attend(seq, 0, q, AttentionScope.all(), true);
            ShardStats stats = shard.stats();
            assertThat(stats.evictions()).isEqualTo(4);
            assertThat(stats.hits()).isEqualTo(36);
            assertThat(stats.misses()).as("the evicted entry only").isEqualTo(1);
            // A discarded position is stored again as a new entry (no miss to take back); attention is exact.
            Reference.Entry again = entries.get(3);
            shard.append(seq, 0, again.position(), again.expert(), again.k(), again.v());
            List<Reference.Entry> kept = new ArrayList<>(entries);
            kept.removeIf(e -> e.position() >= 4 && e.position() <= 6);
            AttentionResult r = store.attend(seq, 0, q, AttentionScope.all(), true);
            assertThat(r.positions()).hasSize(37);
            assertThat(Reference.relativeError(r.output(), Reference.attend(SHAPE, q, kept))).isLessThanOrEqualTo(1e-5);
            assertThat(shard.stats().misses()).isEqualTo(2);
            assertThat(shard.stats().hits()).isEqualTo(36 + 37);
        }
    }

    /**
     * A re-store of an evicted position (a step stored again) discarded by a budget: the eviction it replaced stands
     * (a miss, as before the re-store), and withdrawing the re-store takes it back to that eviction, as after an
     * eviction of the re-store.
     */
    @Test
    void aDiscardedReStoreLeavesTheEvictionItReplaced() {
        Random rnd = new Random(33);
        for (boolean discard : new boolean[] {true, false}) {
            try (KvStore store = oneShard(1)) {
                long seq = store.createSequence();
                List<Reference.Entry> entries = Reference.randomEntries(SHAPE, 8, rnd);
                Reference.load(store, seq, 0, entries);
                KvShard shard = store.shards().get(0);
                Reference.Entry e = entries.get(5);
                assertThat(shard.evict(seq, 0, new int[] {5})).isEqualTo(1);
                shard.append(seq, 0, 5, e.expert(), e.k(), e.v()); // stored again
                assertThat(discard ? shard.discard(seq, 0, new int[] {5}) : shard.evict(seq, 0, new int[] {5}))
                        .isEqualTo(1);
                float[] q = Reference.gaussian(SHAPE.queryWidth(), rnd, 1f);
                store.attend(seq, 0, q, AttentionScope.all(), false);
                assertThat(shard.stats().misses()).as("discard %s: the eviction before the re-store", discard)
                        .isEqualTo(1);
                // The re-store's request is undone: taken back, and the first eviction stays.
                assertThat(shard.withdraw(seq, 0, new int[] {5})).as("discard %s", discard).isEqualTo(1);
                assertThat(shard.withdraw(seq, 0, new int[] {5})).isZero();
                store.attend(seq, 0, q, AttentionScope.all(), false);
                assertThat(shard.stats().misses()).isEqualTo(2);
                assertThat(store.resident(seq, 0)).isEqualTo(7);
                // An entry discarded (never re-stored) is found taken by a withdrawal too, and was never a miss.
                assertThat(shard.discard(seq, 0, new int[] {2})).isEqualTo(1);
                store.attend(seq, 0, q, AttentionScope.all(), false);
                assertThat(shard.stats().misses()).isEqualTo(3); // position 5's eviction only, again
                assertThat(shard.withdraw(seq, 0, new int[] {2})).isEqualTo(1);
                assertThat(shard.withdraw(seq, 0, new int[] {2})).isZero(); // taken back before: never stored
                store.attend(seq, 0, q, AttentionScope.all(), false);
                assertThat(shard.stats().misses()).isEqualTo(4);
                assertThat(store.resident(seq, 0)).isEqualTo(6);
            }
        }
    }

    @Test
    void aHookThatFailsOnEvictedLeavesTheShardWhole() {
        // evicted() throws for every entry: the page must still be freed and counted once, the tokens evicted by
        // position still compacted away, and attention exact over what is left.
        EvictionHook failing = new EvictionHook() {
            @Override
            public void makeRoom(EvictionContext ctx) {
                OLDEST_PAGE_FIRST.makeRoom(ctx);
            }

            @Override
            public void evicted(long sequence, int layer, int position) {
                throw new IllegalStateException("hook failure");
            }

            @Override
            public void withdrawn(long sequence, int layer, int position) {
                throw new IllegalStateException("hook failure");
            }
        };
        KvLayout layout = new KvLayout(SHAPE.kvHeads(), SHAPE.headDim(), 16, StorageType.FP32);
        Random rnd = new Random(21);
        try (KvStore store = new KvStore(KvStoreConfig.builder(SHAPE).storageType(StorageType.FP32).pageTokens(16)
                .shards(1).buckets(1).budgetBytes(3L * layout.pageBytes()).eviction(failing).threads(1).build())) {
            long seq = store.createSequence();
            List<Reference.Entry> entries = Reference.randomEntries(SHAPE, 64, rnd);
            Reference.load(store, seq, 0, entries); // 4 pages of 16 into 3: the oldest page (0..15) goes
            assertThat(store.resident(seq, 0)).isEqualTo(48);
            assertThat(store.evict(seq, 0, new int[] {20, 21})).isEqualTo(2);
            assertThat(store.resident(seq, 0)).isEqualTo(46);
            assertThat(store.stats().get(0).evictions()).isEqualTo(18);
            // Evicting the same positions again finds nothing: they are gone, not half-gone.
            assertThat(store.evict(seq, 0, new int[] {20, 21, 3})).isZero();
            List<Reference.Entry> kept = new ArrayList<>(entries);
            kept.removeIf(e -> e.position() < 16 || e.position() == 20 || e.position() == 21);
            float[] q = Reference.gaussian(SHAPE.queryWidth(), rnd, 1f);
            AttentionResult r = store.attend(seq, 0, q, AttentionScope.all(), true);
            assertThat(r.positions()).hasSize(46);
            assertThat(Reference.relativeError(r.output(), Reference.attend(SHAPE, q, kept))).isLessThanOrEqualTo(1e-5);
            // A withdrawal the hook fails on stands, and is answered (the caller must not withdraw again).
            assertThat(store.withdrawLast(seq, 0)).isEqualTo(63);
            assertThat(store.resident(seq, 0)).isEqualTo(45);
        }
    }

    @Test
    void shardEvictsItsOldestPageOnRequest() {
        Random rnd = new Random(14);
        try (KvStore store = new KvStore(KvStoreConfig.builder(SHAPE).pageTokens(16).buckets(1).threads(1).build())) {
            long seq = store.createSequence();
            Reference.load(store, seq, 0, Reference.randomEntries(SHAPE, 40, rnd));
            KvShard shard = store.shards().get(0);
            assertThat(shard.evictOldestPage()).isEqualTo(16);
            AttentionResult r = store.attend(seq, 0, Reference.gaussian(SHAPE.queryWidth(), rnd, 1f),
                    AttentionScope.all(), true);
            assertThat(java.util.Arrays.stream(r.positions()).min().orElseThrow()).isEqualTo(16);
            assertThat(shard.evictOldestPage()).isEqualTo(16);
            assertThat(shard.evictOldestPage()).isEqualTo(8);
            assertThat(shard.evictOldestPage()).isZero();
            assertThat(store.resident(seq, 0)).isZero();
            assertThat(shard.stats().evictions()).isEqualTo(40);
        }
    }

    @Test
    void closingASequenceFreesItsPagesWithoutCountingEvictions() {
        Random rnd = new Random(10);
        try (KvStore store = new KvStore(KvStoreConfig.builder(SHAPE).pageTokens(16).threads(1).build())) {
            long a = store.createSequence();
            long b = store.createSequence();
            Reference.load(store, a, 0, Reference.randomEntries(SHAPE, 100, rnd));
            Reference.load(store, b, 0, Reference.randomEntries(SHAPE, 50, rnd));
            store.closeSequence(a);
            assertThat(store.hasSequence(a)).isFalse();
            assertThat(store.resident(b, 0)).isEqualTo(50);
            ShardStats stats = store.stats().get(0);
            assertThat(stats.entries()).isEqualTo(50);
            assertThat(stats.evictions()).isZero();
            assertThat(stats.counters().stream().mapToLong(ExpertLayerCounters::bytesResident).sum())
                    .isEqualTo(50L * store.config().layout().entryBytes());
        }
    }

    /** The lookup counters of expert {@code e} (layer 0) on {@code shard}: lookups, hits, misses. */
    private static long[] counted(KvShard shard, int e) {
        ExpertLayerCounters c = shard.stats().counters().stream().filter(x -> x.expert() == e && x.layer() == 0)
                .findFirst().orElseThrow();
        return new long[] {c.lookups(), c.hits(), c.misses()};
    }

    @Test
    void aPositionStoredAgainAfterItsEvictionIsOneLookup() {
        Random rnd = new Random(21);
        try (KvStore store = new KvStore(KvStoreConfig.builder(SHAPE).pageTokens(16).buckets(1).threads(1).build())) {
            KvShard shard = store.shards().get(0);
            long seq = store.createSequence();
            float[] k = Reference.gaussian(SHAPE.kvWidth(), rnd, 1f);
            float[] q = Reference.gaussian(SHAPE.queryWidth(), rnd, 1f);
            shard.append(seq, 0, 5, 2, k, k);
            assertThat(shard.evict(seq, 0, new int[] {5})).isEqualTo(1);
            shard.append(seq, 0, 6, 1, k, k);
            store.attend(seq, 0, q);
            assertThat(counted(shard, 2)).containsExactly(1, 0, 1); // position 5: evicted
            // Stored again under another expert: one lookup of expert 3, a hit; expert 2 has nothing missing now.
            shard.append(seq, 0, 5, 3, k, k);
            store.attend(seq, 0, q);
            assertThat(counted(shard, 2)).containsExactly(1, 0, 1);
            assertThat(counted(shard, 3)).containsExactly(1, 1, 0);
            assertThat(counted(shard, 1)).containsExactly(2, 2, 0);
            assertThat(shard.stats().evictions()).isEqualTo(1);
            // Evicted, then withdrawn (the step it belonged to was undone): no longer a miss either.
            assertThat(shard.evict(seq, 0, new int[] {6})).isEqualTo(1);
            store.attend(seq, 0, q);
            assertThat(counted(shard, 1)).containsExactly(3, 2, 1);
            // Taken back, so counted as withdrawn (a gateway's undo is then confirmed, not asked again).
            assertThat(shard.withdraw(seq, 0, new int[] {6})).isEqualTo(1);
            store.attend(seq, 0, q);
            assertThat(counted(shard, 1)).containsExactly(3, 2, 1);
            assertThat(shard.withdraw(seq, 0, new int[] {6, 40})).as("taken back before; 40 never stored").isZero();
            assertThat(counted(shard, 3)).containsExactly(3, 3, 0);
            // A re-store withdrawn (its request failed): position 5 is evicted again, a miss of expert 2 as before.
            // Listed twice, it would be undone twice (its eviction lost too): refused, nothing changed.
            assertThatThrownBy(() -> shard.withdraw(seq, 0, new int[] {5, 5}))
                    .isInstanceOf(IllegalArgumentException.class).hasMessage("position 5 is listed twice");
            assertThat(counted(shard, 3)).containsExactly(3, 3, 0);
            shard.withdraw(seq, 0, new int[] {5});
            store.attend(seq, 0, q);
            assertThat(counted(shard, 2)).containsExactly(2, 0, 2);
            assertThat(counted(shard, 3)).containsExactly(3, 3, 0);
            shard.append(seq, 0, 5, 2, k, k);
            store.attend(seq, 0, q);
            assertThat(counted(shard, 2)).containsExactly(3, 1, 2);
            // A re-store evicted again before its request is undone (the request's later entries made room): the
            // undo puts position 5 back to its eviction before the request, as expert 2's miss.
            assertThat(shard.evict(seq, 0, new int[] {5})).isEqualTo(1);
            shard.append(seq, 0, 5, 3, k, k); // the re-store: expert 2 no longer misses it
            assertThat(shard.evict(seq, 0, new int[] {5})).isEqualTo(1); // now a miss of expert 3
            store.attend(seq, 0, q);
            assertThat(counted(shard, 2)).as("nothing of expert 2 to look up").containsExactly(3, 1, 2);
            assertThat(counted(shard, 3)).containsExactly(4, 3, 1);
            assertThat(shard.withdraw(seq, 0, new int[] {5})).isEqualTo(1);
            store.attend(seq, 0, q);
            assertThat(counted(shard, 2)).as("missed as before the re-store").containsExactly(4, 1, 3);
            assertThat(counted(shard, 3)).containsExactly(4, 3, 1);
            shard.append(seq, 0, 5, 3, k, k); // stored again later: expert 2's miss is taken back, as for any eviction
            store.attend(seq, 0, q);
            assertThat(counted(shard, 2)).containsExactly(4, 1, 3);
            assertThat(counted(shard, 3)).containsExactly(5, 4, 1);
        }
    }

    /**
     * A re-store of an evicted position, withdrawn twice (a retry whose first answer was lost): the first puts the
     * earlier eviction back, the second finds the position taken back before and leaves that eviction standing.
     */
    @Test
    void withdrawingARestoreTwiceLeavesTheEarlierEvictionStanding() {
        KvLayout layout = new KvLayout(SHAPE.kvHeads(), SHAPE.headDim(), 16, StorageType.FP32);
        KvShard shard = new KvShard(0, SHAPE, layout, 1, 8L * layout.pageBytes(), EvictionHook.OLDEST_PAGE_FIRST,
                io.pikv.kv.compute.Kernels.select(layout));
        Random rnd = new Random(4);
        float[] k = Reference.gaussian(SHAPE.kvWidth(), rnd, 1f);
        float[] v = Reference.gaussian(SHAPE.kvWidth(), rnd, 1f);
        shard.append(7, 0, 5, 2, k, v);
        assertThat(shard.evict(7, 0, new int[] {5})).isEqualTo(1);
        shard.append(7, 0, 5, 3, k, v); // stored again, by another expert
        assertThat(shard.withdraw(7, 0, new int[] {5})).isEqualTo(1);
        assertThat(shard.withdraw(7, 0, new int[] {5})).as("taken back before").isZero();
        // The entry stored first was evicted and never taken back: a lookup of it is still expert 2's miss.
        shard.attendPartial(7, 0, Reference.gaussian(SHAPE.queryWidth(), rnd, 1f), AttentionScope.all(), false);
        ShardStats stats = shard.stats();
        assertThat(stats.evictions()).isEqualTo(1);
        assertThat(stats.misses()).isEqualTo(1);
        assertThat(stats.counters().stream().filter(c -> c.expert() == 2).mapToLong(ExpertLayerCounters::misses)
                .sum()).isEqualTo(1);
    }

    @Test
    void withdrawingEntriesUndoesAppendsWithoutCountingEvictions() {
        Random rnd = new Random(12);
        try (KvStore store = new KvStore(KvStoreConfig.builder(SHAPE).pageTokens(16).buckets(2).threads(1).build())) {
            long seq = store.createSequence();
            List<Reference.Entry> entries = Reference.randomEntries(SHAPE, 20, rnd);
            Reference.load(store, seq, 0, entries);
            KvShard shard = store.shards().get(0);
            assertThat(shard.withdraw(seq, 0, new int[] {19, 18, 5, 99})).isEqualTo(3);
            ShardStats stats = shard.stats();
            assertThat(stats.evictions()).isZero();
            assertThat(stats.entries()).isEqualTo(17);
            assertThat(stats.counters().stream().mapToLong(ExpertLayerCounters::bytesResident).sum())
                    .isEqualTo(17L * store.config().layout().entryBytes());
            float[] q = Reference.gaussian(SHAPE.queryWidth(), rnd, 1f);
            AttentionResult r = store.attend(seq, 0, q, AttentionScope.all(), false);
            List<Reference.Entry> kept = new ArrayList<>(entries);
            kept.removeIf(e -> e.position() == 19 || e.position() == 18 || e.position() == 5);
            assertThat(Reference.relativeError(r.output(),
                    Reference.attend(SHAPE, q, Reference.roundedToFp16(kept)))).isLessThanOrEqualTo(1e-5);
            // Nothing was evicted, so the lookups of that attention are all hits.
            assertThat(shard.stats().misses()).isZero();
        }
    }

    /**
     * A token appended to every layer and refused at the last one (budget full): the layers already stored are taken
     * back with withdrawLast, so every layer's length is the same again and the token's next try gets one position
     * everywhere (before, layers 0-2 kept it at 0 and the retry stored it at 1 there and 0 on layer 3).
     */
    @Test
    void aTokenRefusedAtOneLayerIsTakenBackFromTheOthers() {
        ModelShape shape = new ModelShape(4, 4, 2, 16, 4, 2);
        KvLayout layout = new KvLayout(2, 16, 16, StorageType.FP16);
        Random rnd = new Random(5);
        try (KvStore store = new KvStore(KvStoreConfig.builder(shape).pageTokens(16).shards(1).buckets(1)
                .budgetBytes(3L * layout.pageBytes()).eviction(EvictionHook.REJECT).threads(1).build())) {
            long seq = store.createSequence();
            float[] k = Reference.gaussian(shape.kvWidth(), rnd, 1f);
            float[] v = Reference.gaussian(shape.kvWidth(), rnd, 1f);
            int layer = 0;
            try {
                for (; layer < 4; layer++) {
                    store.append(seq, layer, 1, k, v);
                }
            } catch (KvBudgetExceededException refused) {
                for (int l = layer - 1; l >= 0; l--) {
                    assertThat(store.withdrawLast(seq, l)).isZero();
                }
            }
            assertThat(layer).as("refused at the fourth layer's page").isEqualTo(3);
            for (int l = 0; l < 4; l++) {
                assertThat(store.length(seq, l)).as("layer %d", l).isZero();
                assertThat(store.resident(seq, l)).isZero();
            }
            assertThat(store.shards().get(0).stats().evictions()).isZero();
            assertThatThrownBy(() -> store.withdrawLast(seq, 0)).isInstanceOf(IllegalStateException.class)
                    .hasMessage("sequence " + seq + " layer 0 holds no token to withdraw");
            // One layer again: the position taken back is given again.
            assertThat(store.append(seq, 0, 1, k, v)).isZero();
        }
    }
}
