package io.pikv.kv;

import org.junit.jupiter.api.Test;

import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Random;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

class ShardingAndMergeTest {
    private static final ModelShape SHAPE = new ModelShape(2, 8, 2, 32, 12, 2);

    private static KvStore store(int shards, int buckets, StorageType type) {
        return new KvStore(KvStoreConfig.builder(SHAPE).storageType(type).pageTokens(16).shards(shards)
                .buckets(buckets).threads(2).build());
    }

    @Test
    void theShardKeyIsThePapers() {
        assertThat(ShardKey.key(5, 3, 8, 4)).isEqualTo((5 % 8) ^ (3 % 4));
        assertThat(ShardKey.key(13, 9, 8, 4)).isEqualTo(5 ^ 1);
        assertThat(ShardKey.bucket(13, 9, 4)).isEqualTo(1 ^ 1);
        // Consecutive tokens of one expert visit every bucket.
        List<Integer> seen = new ArrayList<>();
        for (int t = 0; t < 8; t++) {
            seen.add(ShardKey.bucket(t, 6, 8));
        }
        assertThat(seen).containsExactlyInAnyOrder(0, 1, 2, 3, 4, 5, 6, 7);
    }

    @Test
    void entriesLandOnTheShardOfTheirPrimaryExpert() {
        Random rnd = new Random(1);
        try (KvStore store = store(3, 2, StorageType.FP16)) {
            long seq = store.createSequence();
            int[] perShard = new int[3];
            for (Reference.Entry e : Reference.randomEntries(SHAPE, 300, rnd)) {
                store.append(seq, 1, e.expert(), e.k(), e.v());
                perShard[e.expert() % 3]++;
            }
            for (int s = 0; s < 3; s++) {
                assertThat(store.shards().get(s).resident(seq, 1)).isEqualTo(perShard[s]);
                for (ExpertLayerCounters c : store.shards().get(s).stats().counters()) {
                    assertThat(c.expert() % 3).as("expert %d on shard %d", c.expert(), s).isEqualTo(s);
                }
            }
        }
    }

    @Test
    void anySplitOfTheEntriesMergesToTheUnsplitAnswer() {
        Random rnd = new Random(2);
        List<Reference.Entry> entries = Reference.randomEntries(SHAPE, 700, rnd);
        float[] q = Reference.gaussian(SHAPE.queryWidth(), rnd, 2f);
        float[] unsplit;
        try (KvStore one = store(1, 1, StorageType.FP32)) {
            long seq = one.createSequence();
            Reference.load(one, seq, 0, entries);
            unsplit = one.attend(seq, 0, q).output();
        }
        for (int trial = 0; trial < 5; trial++) {
            int shards = 2 + rnd.nextInt(6);
            int[] map = new int[SHAPE.experts()];
            for (int e = 0; e < map.length; e++) {
                map[e] = rnd.nextInt(shards);
            }
            try (KvStore split = store(shards, 1 << rnd.nextInt(4), StorageType.FP32)) {
                split.applyShardMap(new ExpertShardMap(1, shards, map));
                long seq = split.createSequence();
                Reference.load(split, seq, 0, entries);
                assertThat(Reference.relativeError(split.attend(seq, 0, q).output(), unsplit))
                        .as("trial %d, %d shards", trial, shards).isLessThanOrEqualTo(1e-6);

                // The same partials merged in another order give the same answer.
                List<PartialAttention> parts = new ArrayList<>();
                for (KvShard shard : split.shards()) {
                    parts.add(shard.attendPartial(seq, 0, q, AttentionScope.all(), false));
                }
                Collections.shuffle(parts, rnd);
                assertThat(Reference.relativeError(PartialAttention.merge(parts).finish().output(), unsplit))
                        .isLessThanOrEqualTo(1e-6);
            }
        }
    }

    @Test
    void mergeRuleOnHandMadePartials() {
        // Two single-entry partials with logits 0 and ln 3 and values 1 and 5: weights 1/4 and 3/4, output 4.
        PartialAttention a = new PartialAttention(1, 1, new double[] {0}, new double[] {1}, new double[] {1}, 1,
                null, null);
        PartialAttention b = new PartialAttention(1, 1, new double[] {Math.log(3)}, new double[] {1},
                new double[] {5}, 1, null, null);
        PartialAttention none = PartialAttention.empty(1, 1, false);
        AttentionResult r = PartialAttention.merge(List.of(a, none, b)).finish();
        assertThat((double) r.output(0, 0)).isCloseTo(4.0, org.assertj.core.data.Offset.offset(1e-6));
        assertThat(r.visited()).isEqualTo(2);
        assertThat(PartialAttention.merge(List.of(none)).finish().output(0, 0)).isZero();
        // A part with a large running max but no mass (nothing it visited counts) changes nothing.
        PartialAttention massless = new PartialAttention(1, 1, new double[] {1e4}, new double[] {0},
                new double[] {0}, 0, null, null);
        assertThat((double) PartialAttention.merge(List.of(a, massless, b)).finish().output(0, 0))
                .isCloseTo(4.0, org.assertj.core.data.Offset.offset(1e-6));
        // With weights: the massless part's entry (a logit at its own large max) weighs nothing, and a and b keep
        // 1/4 and 3/4 (its logit, taken against the merged max and sum, would read as e^(1e4 - ln 3)).
        PartialAttention aw = new PartialAttention(1, 1, new double[] {0}, new double[] {1}, new double[] {1}, 1,
                new int[] {0}, new float[] {0f});
        PartialAttention bw = new PartialAttention(1, 1, new double[] {Math.log(3)}, new double[] {1},
                new double[] {5}, 1, new int[] {1}, new float[] {(float) Math.log(3)});
        PartialAttention masslessW = new PartialAttention(1, 1, new double[] {1e4}, new double[] {0},
                new double[] {0}, 1, new int[] {2}, new float[] {1e4f});
        AttentionResult weighted = PartialAttention.merge(List.of(aw, masslessW, bw)).finish();
        assertThat(weighted.weight(0, 0)).isCloseTo(0.25f, org.assertj.core.data.Offset.offset(1e-6f));
        assertThat(weighted.weight(0, 1)).isZero();
        assertThat(weighted.weight(0, 2)).isCloseTo(0.75f, org.assertj.core.data.Offset.offset(1e-6f));
    }

    @Test
    void expertScopeVisitsOnlyTheChosenExperts() {
        Random rnd = new Random(4);
        List<Reference.Entry> entries = Reference.randomEntries(SHAPE, 500, rnd);
        try (KvStore store = store(4, 4, StorageType.FP32)) {
            long seq = store.createSequence();
            Reference.load(store, seq, 1, entries);
            float[] q = Reference.gaussian(SHAPE.queryWidth(), rnd, 1f);
            List<Reference.Entry> subset = entries.stream().filter(e -> e.expert() == 2 || e.expert() == 7).toList();
            AttentionResult r = store.attend(seq, 1, q, AttentionScope.experts(2, 7), true);
            assertThat(r.visited()).isEqualTo(subset.size());
            assertThat(java.util.Arrays.stream(r.positions()).boxed().toList()).containsExactlyInAnyOrderElementsOf(
                    subset.stream().map(Reference.Entry::position).toList());
            assertThat(Reference.relativeError(r.output(), Reference.attend(SHAPE, q, subset)))
                    .isLessThanOrEqualTo(1e-5);
        }
    }

    @Test
    void aNewShardMapRoutesNewEntriesAndKeepsOldOnesReadable() {
        Random rnd = new Random(6);
        List<Reference.Entry> entries = Reference.randomEntries(SHAPE, 200, rnd);
        try (KvStore store = store(2, 2, StorageType.FP32)) {
            long seq = store.createSequence();
            Reference.load(store, seq, 0, entries.subList(0, 100));
            float[] q = Reference.gaussian(SHAPE.queryWidth(), rnd, 1f);
            float[] before = store.attend(seq, 0, q).output();

            int[] all = new int[SHAPE.experts()];
            java.util.Arrays.fill(all, 1);
            ExpertShardMap next = new ExpertShardMap(store.shardMap().epoch() + 1, 2, all);
            store.applyShardMap(next);
            assertThat(store.attend(seq, 0, q).output()).containsExactly(before);

            int onShard0 = store.shards().get(0).resident(seq, 0);
            for (Reference.Entry e : entries.subList(100, 200)) {
                store.append(seq, 0, e.expert(), e.k(), e.v());
            }
            assertThat(store.shards().get(0).resident(seq, 0)).isEqualTo(onShard0);
            assertThat(Reference.relativeError(store.attend(seq, 0, q).output(), Reference.attend(SHAPE, q, entries)))
                    .isLessThanOrEqualTo(1e-5);

            assertThatThrownBy(() -> store.applyShardMap(next)).hasMessageContaining("stale shard map");
            assertThatThrownBy(() -> store.applyShardMap(new ExpertShardMap(9, 3, new int[SHAPE.experts()])))
                    .hasMessageContaining("this store has 12 experts on 2 shards");
            assertThat(store.shardMap()).isEqualTo(next);
        }
    }

    @Test
    void shardMapRejectsBadAssignments() {
        assertThatThrownBy(() -> new ExpertShardMap(0, 2, new int[] {0, 2})).hasMessageContaining("expert 1 is mapped to shard 2");
        assertThatThrownBy(() -> new ExpertShardMap(-1, 2, new int[] {0})).hasMessageContaining("epoch");
        assertThat(ExpertShardMap.roundRobin(5, 2).assignment()).containsExactly(0, 1, 0, 1, 0);
        assertThat(ExpertShardMap.roundRobin(5, 2).withMove(4, 1).epoch()).isEqualTo(1);
    }
}
