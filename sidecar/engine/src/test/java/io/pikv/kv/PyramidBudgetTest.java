package io.pikv.kv;

import io.pikv.kv.compression.PyramidBudget;
import org.junit.jupiter.api.Test;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.Comparator;
import java.util.List;
import java.util.Random;
import java.util.Set;
import java.util.TreeSet;
import java.util.stream.IntStream;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/** PyramidKV budgets: the linear schedule, and which entries the selection keeps through evict and the hook. */
class PyramidBudgetTest {
    private static final ModelShape SHAPE = new ModelShape(2, 4, 2, 16, 4, 2);

    @Test
    void linearScheduleShrinksWithDepthAndKeepsTheTotal() {
        // top = 100/20 = 5, bottom = 195, step 63.33: 195, 131.67, 68.33, 5 → the extra token goes to 131.67.
        assertThat(PyramidBudget.linear(4, 100, 20, 0)).containsExactly(195, 132, 68, 5);
        // The last layer is held at the minimum; the first takes what it gives up.
        assertThat(PyramidBudget.linear(3, 40, 20, 36)).containsExactly(44, 40, 36);
        assertThat(PyramidBudget.linear(1, 50, 20, 8)).containsExactly(50);
        assertThat(PyramidBudget.linear(2, 10, 1, 0)).containsExactly(10, 10);
        for (int layers = 2; layers < 30; layers += 3) {
            int[] b = PyramidBudget.linear(layers, 517, 7.5, 40);
            assertThat(IntStream.of(b).sum()).isEqualTo(layers * 517);
            for (int l = 1; l < layers; l++) {
                assertThat(b[l]).isLessThanOrEqualTo(b[l - 1]);
            }
            assertThat(b[layers - 1]).isGreaterThanOrEqualTo(68); // 517 / 7.5
        }
        assertThatThrownBy(() -> PyramidBudget.linear(4, 30, 20, 36)).hasMessageContaining("below the minimum of 36");
        // Every layer keeps a token at least, even with no minimum and a steep β; an infinite β is refused.
        int[] steep = PyramidBudget.linear(8, 10, 20, 0);
        assertThat(IntStream.of(steep).min().getAsInt()).isPositive();
        assertThat(IntStream.of(steep).sum()).isEqualTo(80);
        assertThat(PyramidBudget.linear(2, 1, 20, 0)).containsExactly(1, 1);
        for (int l = 0; l < 8; l++) {
            assertThat(PyramidBudget.layerBudget(8, l, 10, 1.0, 20, 0)).isEqualTo(PyramidBudget.linear(8, 10, 20, 0)[l]);
        }
        assertThat(PyramidBudget.layerBudget(2, 1, 1, 1.0, 20, 0)).isEqualTo(1);
        new PyramidBudget(PyramidBudget.linear(8, 10, 20, 0), 0, 0); // its own schedule is one it takes
        assertThatThrownBy(() -> PyramidBudget.linear(3, 5, Double.POSITIVE_INFINITY, 0))
                .hasMessageContaining("a finite beta >= 1");
        assertThatThrownBy(() -> PyramidBudget.layerBudget(3, 0, 5, 1.0, Double.POSITIVE_INFINITY, 0))
                .hasMessageContaining("a finite beta >= 1");
        assertThatThrownBy(() -> PyramidBudget.linear(2, 2_000_000_000, 1e9, 0))
                .hasMessage("an average budget of 2000000000 tokens is more than the 16777216 positions a layer can hold");
        assertThat(PyramidBudget.linear(2, 1 << 24, 1, 0)).containsExactly(1 << 24, 1 << 24);
        assertThatThrownBy(() -> PyramidBudget.layerBudget(2, 0, 5, 1.0, 20, (1 << 24) + 1))
                .hasMessageContaining("more than the 16777216 positions a layer can hold");
        assertThatThrownBy(() -> new PyramidBudget(new int[] {40, 20}, 4, 32))
                .hasMessageContaining("layer 1 budget 20 is below sinks + window = 36");
    }

    @Test
    void layerBudgetFollowsTheContext() {
        // 4 layers, 400 entries at 25 %: the linear schedule around 100 tokens.
        for (int l = 0; l < 4; l++) {
            assertThat(PyramidBudget.layerBudget(4, l, 400, 0.25, 20, 0)).isEqualTo(new int[] {195, 132, 68, 5}[l]);
        }
        // A fraction's product rounded up by the arithmetic is not a token more (0.07 of 100 is 7), and a fraction given
        // just above a whole count is (0.5000000001 of 2 is 2: a fixed slack of 1e-9 made it 1).
        assertThat(PyramidBudget.layerBudget(1, 0, 100, 0.07, 20, 0)).isEqualTo(7); // 7.000000000000001 as doubles
        assertThat(PyramidBudget.layerBudget(1, 0, 2, 0.5000000001, 20, 0)).isEqualTo(2);
        // 401 entries: an average of 100.25 rounds up to 101.
        assertThat(PyramidBudget.layerBudget(4, 0, 401, 0.25, 20, 0))
                .isEqualTo(PyramidBudget.linear(4, 101, 20, 0)[0]);
        // Few entries: the minimum (sinks + window) holds every layer up, the first layer gets no less.
        assertThat(PyramidBudget.layerBudget(3, 2, 10, 0.25, 20, 36)).isEqualTo(36);
        // No entries yet: an average of one token (linear needs at least one).
        assertThat(PyramidBudget.layerBudget(3, 0, 0, 0.5, 20, 0)).isEqualTo(PyramidBudget.linear(3, 1, 20, 0)[0]);
        assertThat(PyramidBudget.layerBudget(1, 0, 1000, 1.0, 20, 8)).isEqualTo(1000);
        // Computed without linear's arrays, it is linear's answer, layer for layer.
        java.util.Random rnd = new java.util.Random(12);
        for (int i = 0; i < 3000; i++) {
            int layers = 1 + rnd.nextInt(40);
            int stored = rnd.nextInt(200_000);
            int thousandths = 1 + rnd.nextInt(1000);
            double fraction = thousandths / 1000.0;
            double beta = 1 + rnd.nextInt(4) * rnd.nextDouble() * 30;
            int minimum = rnd.nextInt(3) == 0 ? 0 : rnd.nextInt(200);
            // The average as exact arithmetic has it: the ceiling of thousandths × stored / 1000.
            int average = (int) Math.max(Math.max(minimum, 1), ((long) thousandths * stored + 999) / 1000);
            int[] expected = PyramidBudget.linear(layers, average, beta, minimum);
            for (int l = 0; l < layers; l++) {
                assertThat(PyramidBudget.layerBudget(layers, l, stored, fraction, beta, minimum))
                        .as("layers %d, layer %d, stored %d, fraction %s, beta %s, minimum %d", layers, l, stored,
                                fraction, beta, minimum).isEqualTo(expected[l]);
            }
        }
        assertThatThrownBy(() -> PyramidBudget.layerBudget(4, 0, 10, 0, 20, 0)).hasMessageContaining("(0, 1]");
        assertThatThrownBy(() -> PyramidBudget.layerBudget(4, 4, 10, 0.5, 20, 0)).hasMessageContaining("layer 4");
        assertThatThrownBy(() -> PyramidBudget.layerBudget(4, 0, -1, 0.5, 20, 0)).hasMessageContaining(">= 0");
    }

    /** Positions the selection should keep: sinks, the recent window, then the highest scores (recent on ties). */
    private static Set<Integer> expectedKept(int[] resident, float[] score, int budget, int sinks, int window) {
        Set<Integer> kept = new TreeSet<>();
        List<Integer> rest = new ArrayList<>();
        for (int i = 0; i < resident.length; i++) {
            if (resident[i] < sinks || i >= resident.length - window) {
                kept.add(resident[i]);
            } else {
                rest.add(resident[i]);
            }
        }
        rest.sort(Comparator.comparingDouble((Integer p) -> -score[p]).thenComparing(p -> -p));
        for (int i = 0; kept.size() < budget && i < rest.size(); i++) {
            kept.add(rest.get(i));
        }
        return kept;
    }

    @Test
    void enforceKeepsSinksWindowAndHeavyHittersPerLayerBudget() {
        Random rnd = new Random(17);
        int[] budgets = {60, 25};
        PyramidBudget policy = new PyramidBudget(budgets, 2, 8);
        try (KvStore store = new KvStore(KvStoreConfig.builder(SHAPE).storageType(StorageType.FP32).pageTokens(8)
                .shards(2).buckets(2).threads(1).build())) {
            long seq = store.createSequence();
            List<List<Reference.Entry>> layers = new ArrayList<>();
            for (int layer = 0; layer < 2; layer++) {
                List<Reference.Entry> entries = Reference.randomEntries(SHAPE, 100, rnd);
                Reference.load(store, seq, layer, entries);
                layers.add(entries);
            }
            float[][] score = new float[2][100];
            for (int layer = 0; layer < 2; layer++) {
                for (int obs = 0; obs < 4; obs++) {
                    AttentionResult r = store.attend(seq, layer, Reference.gaussian(SHAPE.queryWidth(), rnd, 2f),
                            AttentionScope.all(), true);
                    policy.observe(seq, layer, r);
                    int[] pos = r.positions();
                    for (int j = 0; j < pos.length; j++) {
                        score[layer][pos[j]] += r.meanWeight(j);
                    }
                }
            }
            int[] all = IntStream.range(0, 100).toArray();
            Set<Integer> keep0 = expectedKept(all, score[0], 60, 2, 8);
            Set<Integer> keep1 = expectedKept(all, score[1], 25, 2, 8);
            assertThat(policy.enforce(store, seq)).isEqualTo(40 + 75);
            assertThat(store.residentPositions(seq, 0)).containsExactly(keep0.stream().mapToInt(i -> i).toArray());
            assertThat(store.residentPositions(seq, 1)).containsExactly(keep1.stream().mapToInt(i -> i).toArray());
            assertThat(keep1).contains(0, 1, 92, 93, 94, 95, 96, 97, 98, 99);
            assertThat(policy.score(seq, 1, 50)).isEqualTo(score[1][50]);
            // Within budget now: nothing more to evict; attention is exact over what is left.
            assertThat(policy.enforce(store, seq)).isZero();
            List<Reference.Entry> kept = new ArrayList<>(layers.get(1));
            kept.removeIf(e -> !keep1.contains(e.position()));
            float[] q = Reference.gaussian(SHAPE.queryWidth(), rnd, 1f);
            assertThat(Reference.relativeError(store.attend(seq, 1, q).output(), Reference.attend(SHAPE, q, kept)))
                    .isLessThanOrEqualTo(1e-5);
            // A layer without a budget is refused, before anything is evicted.
            PyramidBudget short1 = new PyramidBudget(new int[] {10}, 2, 8);
            assertThatThrownBy(() -> short1.enforce(store, seq)).hasMessageContaining("every layer needs a budget");
            assertThat(store.residentPositions(seq, 0)).hasSize(60);
        }
    }

    @Test
    void throughAnEvictionPolicyTheBudgetSaysHowManyAndThePolicyWhich() {
        ModelShape shape = new ModelShape(1, 4, 2, 16, 4, 2);
        Random rnd = new Random(29);
        List<Reference.Entry> entries = Reference.randomEntries(shape, 30, rnd);
        float[] q = Reference.gaussian(shape.queryWidth(), rnd, 2f);
        // StreamingLLM (1 sink): the 20 oldest after the sink go, whatever attention they got.
        // H2O (1 sink, window 4): the least attended outside sink and window, as PyramidKV's own choice.
        io.pikv.kv.scheduling.EvictionPolicy[] policies = {new io.pikv.kv.scheduling.StreamingLlm(1, 9),
            new io.pikv.kv.scheduling.HeavyHitter(1, 4)};
        for (io.pikv.kv.scheduling.EvictionPolicy chosen : policies) {
            PyramidBudget pyramid = new PyramidBudget(new int[] {10},
                    new io.pikv.kv.scheduling.TokenRetention(chosen));
            try (KvStore store = new KvStore(KvStoreConfig.builder(shape).storageType(StorageType.FP32).pageTokens(8)
                    .buckets(1).threads(1).eviction(pyramid).build())) {
                long seq = store.createSequence();
                Reference.load(store, seq, 0, entries);
                AttentionResult r = store.attend(seq, 0, q, AttentionScope.all(), true);
                pyramid.observe(seq, 0, r);
                float[] score = new float[30];
                for (int j = 0; j < r.positions().length; j++) {
                    score[r.positions()[j]] = r.meanWeight(j);
                }
                assertThat(pyramid.enforce(store, seq)).isEqualTo(20);
                int[] expected = chosen.name().equals("streaming")
                        ? IntStream.concat(IntStream.of(0), IntStream.range(21, 30)).toArray()
                        : expectedKept(IntStream.range(0, 30).toArray(), score, 10, 1, 4).stream()
                                .mapToInt(i -> i).toArray();
                assertThat(store.residentPositions(seq, 0)).as(chosen.name()).containsExactly(expected);
                assertThat(pyramid.enforce(store, seq)).isZero();
            }
        }
    }

    @Test
    void aPolicyLearnsOfUnobservedResidentsInTheirGenerationOrder() {
        // Only positions 20..29 were in an observed result; 0..19 are told to the policy at the trim, as old as
        // their positions: StreamingLLM (1 sink) gives up 1..20, not the newest.
        ModelShape shape = new ModelShape(1, 4, 2, 16, 4, 2);
        Random rnd = new Random(31);
        PyramidBudget pyramid = new PyramidBudget(new int[] {10},
                new io.pikv.kv.scheduling.TokenRetention(new io.pikv.kv.scheduling.StreamingLlm(1, 4)));
        try (KvStore store = new KvStore(KvStoreConfig.builder(shape).storageType(StorageType.FP32).pageTokens(8)
                .buckets(1).threads(1).build())) {
            long seq = store.createSequence();
            Reference.load(store, seq, 0, Reference.randomEntries(shape, 30, rnd));
            int[] late = IntStream.range(20, 30).toArray();
            float[] w = new float[4 * late.length];
            Arrays.fill(w, 0.1f);
            pyramid.observe(seq, 0, new AttentionResult(4, 16, new float[64], late.length, late, w));
            assertThat(pyramid.enforce(store, seq)).isEqualTo(20);
            assertThat(store.residentPositions(seq, 0))
                    .containsExactly(IntStream.concat(IntStream.of(0), IntStream.range(21, 30)).toArray());
        }
    }

    @Test
    void asTheHookThroughAPolicyAShardLeavesOtherShardsEntriesToThePolicy() {
        // Two shards, three pages each: the hook of the full shard evicts its own least attended tokens outside the
        // window, in the policy's order, until a page is free; the entries on the other shard stay tracked.
        ModelShape shape = new ModelShape(1, 4, 2, 16, 4, 2);
        Random rnd = new Random(37);
        io.pikv.kv.scheduling.TokenRetention retention =
                new io.pikv.kv.scheduling.TokenRetention(new io.pikv.kv.scheduling.HeavyHitter(0, 2));
        PyramidBudget pyramid = new PyramidBudget(new int[] {8}, retention);
        KvLayout layout = new KvLayout(2, 16, 8, StorageType.FP32);
        try (KvStore store = new KvStore(KvStoreConfig.builder(shape).storageType(StorageType.FP32).pageTokens(8)
                .shards(2).buckets(1).threads(1).budgetBytes(2L * 3 * layout.pageBytes()).eviction(pyramid)
                .build())) {
            long seq = store.createSequence();
            // Expert 0 lives on shard 0 and expert 1 on shard 1 (round robin): even positions on shard 0, 24 each.
            for (int i = 0; i < 48; i++) {
                store.append(seq, 0, i % 2, Reference.gaussian(32, rnd, 1f), Reference.gaussian(32, rnd, 1f));
            }
            AttentionResult r = store.attend(seq, 0, Reference.gaussian(shape.queryWidth(), rnd, 1f),
                    AttentionScope.all(), true);
            pyramid.observe(seq, 0, r);
            assertThat(retention.tracked(seq, 0)).isEqualTo(48);
            float[] mass = new float[48];
            for (int j = 0; j < r.positions().length; j++) {
                mass[r.positions()[j]] = r.meanWeight(j);
            }
            // Shard 0's candidates: its positions outside the window (46 and 47 are the two newest), least mass first.
            int[] expectedGone = IntStream.range(0, 46).filter(p -> p % 2 == 0).boxed()
                    .sorted((a, b) -> Float.compare(mass[a], mass[b])).limit(8).mapToInt(i -> i).sorted().toArray();
            // Shard 0 needs a page for position 48: eight of its tokens go (one page), no more.
            store.append(seq, 0, 0, Reference.gaussian(32, rnd, 1f), Reference.gaussian(32, rnd, 1f));
            assertThat(store.resident(seq, 0)).isEqualTo(48 - 8 + 1);
            int[] resident = store.residentPositions(seq, 0);
            assertThat(resident).doesNotContain(expectedGone).contains(46, 47, 48);
            assertThat(store.shards().get(1).resident(seq, 0)).isEqualTo(24);
            // Everything still resident but the new position (never observed yet) is still tracked.
            assertThat(retention.tracked(seq, 0)).isEqualTo(resident.length - 1);
        }
    }

    @Test
    void asTheEvictionHookItTrimsTheMostOverBudgetLayerWhenThePoolIsFull() {
        Random rnd = new Random(23);
        ModelShape shape = new ModelShape(1, 4, 2, 16, 4, 2);
        PyramidBudget policy = new PyramidBudget(new int[] {24}, 1, 4);
        KvLayout layout = new KvLayout(2, 16, 8, StorageType.FP32);
        try (KvStore store = new KvStore(KvStoreConfig.builder(shape).storageType(StorageType.FP32).pageTokens(8)
                .buckets(1).threads(1).budgetBytes(6L * layout.pageBytes()).eviction(policy).build())) {
            long seq = store.createSequence();
            List<Reference.Entry> entries = Reference.randomEntries(shape, 49, rnd);
            Reference.load(store, seq, 0, entries.subList(0, 48)); // exactly the 6 pages
            AttentionResult r = store.attend(seq, 0, Reference.gaussian(shape.queryWidth(), rnd, 2f),
                    AttentionScope.all(), true);
            policy.observe(seq, 0, r);
            float[] score = new float[48];
            int[] pos = r.positions();
            for (int j = 0; j < pos.length; j++) {
                score[pos[j]] = r.meanWeight(j);
            }
            Set<Integer> keep = expectedKept(IntStream.range(0, 48).toArray(), score, 24, 1, 4);
            keep.add(48);
            Reference.Entry last = entries.get(48);
            store.append(seq, 0, last.expert(), last.k(), last.v()); // needs a 7th page: the hook makes room
            assertThat(store.residentPositions(seq, 0)).containsExactly(keep.stream().mapToInt(i -> i).toArray());
            assertThat(store.stats().get(0).pagesInUse()).isEqualTo(4);

            // A sequence the policy never observed is not over budget as far as it knows: oldest page goes.
            long other = store.createSequence();
            for (Reference.Entry e : Reference.randomEntries(shape, 17, rnd)) {
                store.append(other, 0, e.expert(), e.k(), e.v());
            }
            assertThat(store.resident(seq, 0) + store.resident(other, 0)).isEqualTo(25 + 17 - 8);
            assertThat(Arrays.stream(store.residentPositions(seq, 0)).min().getAsInt()).isGreaterThan(0);
        }
    }

    @Test
    void entriesEvictedByAnotherPathNoLongerCountAsResident() {
        // As the store's hook, the policy hears of every eviction: one through KvStore.evict leaves its view too, so
        // the layer does not look over budget (24) for entries it no longer holds.
        ModelShape shape = new ModelShape(1, 4, 2, 16, 4, 2);
        PyramidBudget pyramid = new PyramidBudget(new int[] {24}, 1, 4);
        Random rnd = new Random(3);
        try (KvStore store = new KvStore(KvStoreConfig.builder(shape).storageType(StorageType.FP32).pageTokens(8)
                .buckets(1).threads(1).eviction(pyramid).build())) {
            long seq = store.createSequence();
            for (int i = 0; i < 40; i++) {
                store.append(seq, 0, i % 4, Reference.gaussian(32, rnd, 1f), Reference.gaussian(32, rnd, 1f));
            }
            pyramid.observe(seq, 0, store.attend(seq, 0, Reference.gaussian(shape.queryWidth(), rnd, 1f),
                    AttentionScope.all(), true));
            assertThat(pyramid.knownResident(seq, 0)).hasSize(40);
            int[] gone = IntStream.range(5, 21).toArray();
            assertThat(store.evict(seq, 0, gone)).isEqualTo(16);
            assertThat(pyramid.knownResident(seq, 0)).hasSize(24).doesNotContain(gone);
            assertThat(pyramid.enforce(store, seq)).as("within budget now").isZero();
            assertThat(store.residentPositions(seq, 0)).hasSize(24);
        }
    }

    /**
     * A token evicted and then taken back (withdrawLast) leaves its position free for another token: as the store's
     * hook the policy forgets it whole, so the new token at that position counts as resident once a result shows it
     * (before, its eviction stayed recorded and the new token was never counted, nor chosen as a victim).
     */
    @Test
    void aPositionTakenBackAndStoredAgainCountsAsResident() {
        ModelShape shape = new ModelShape(1, 4, 2, 16, 4, 2);
        PyramidBudget pyramid = new PyramidBudget(new int[] {24}, 1, 4);
        Random rnd = new Random(4);
        try (KvStore store = new KvStore(KvStoreConfig.builder(shape).storageType(StorageType.FP32).pageTokens(8)
                .buckets(1).threads(1).eviction(pyramid).build())) {
            long seq = store.createSequence();
            for (int i = 0; i < 8; i++) {
                store.append(seq, 0, i % 4, Reference.gaussian(32, rnd, 1f), Reference.gaussian(32, rnd, 1f));
            }
            pyramid.observe(seq, 0, store.attend(seq, 0, Reference.gaussian(shape.queryWidth(), rnd, 1f),
                    AttentionScope.all(), true));
            assertThat(store.evict(seq, 0, new int[] {7})).isEqualTo(1);
            assertThat(pyramid.knownResident(seq, 0)).hasSize(7).doesNotContain(7);
            assertThat(store.withdrawLast(seq, 0)).isEqualTo(7);
            assertThat(store.append(seq, 0, 1, Reference.gaussian(32, rnd, 1f), Reference.gaussian(32, rnd, 1f)))
                    .isEqualTo(7);
            pyramid.observe(seq, 0, store.attend(seq, 0, Reference.gaussian(shape.queryWidth(), rnd, 1f),
                    AttentionScope.all(), true));
            assertThat(pyramid.knownResident(seq, 0)).hasSize(8).contains(7);
        }
    }

    @Test
    void anAttentionResultFromBeforeAnEvictionDoesNotBringThePositionBack() {
        // observe() may come after another thread's eviction of a position the result still shows: it stays evicted.
        PyramidBudget pyramid = new PyramidBudget(new int[] {24}, 1, 4);
        pyramid.observe(7, 0, quarterEach(0, 1, 2, 3));
        pyramid.evicted(7, 0, 2);
        pyramid.observe(7, 0, quarterEach(0, 1, 2, 3));
        assertThat(pyramid.knownResident(7, 0)).containsExactly(0, 1, 3);
        // Also when the eviction comes before the layer's first result: that result does not bring it back either.
        pyramid.evicted(8, 0, 1);
        pyramid.observe(8, 0, quarterEach(0, 1, 2, 3));
        assertThat(pyramid.knownResident(8, 0)).containsExactly(0, 2, 3);
    }

    /** Nor does it make the policy track the position again: it would offer it for good, and it is gone. */
    @Test
    void anAttentionResultFromBeforeAnEvictionDoesNotMakeThePolicyTrackThePositionAgain() {
        io.pikv.kv.scheduling.TokenRetention retention =
                new io.pikv.kv.scheduling.TokenRetention(new io.pikv.kv.scheduling.HeavyHitter(0, 1));
        PyramidBudget pyramid = new PyramidBudget(new int[] {2}, retention);
        pyramid.observe(7, 0, quarterEach(0, 1, 2, 3));
        assertThat(retention.tracked(7, 0)).isEqualTo(4);
        pyramid.evicted(7, 0, 2);
        assertThat(retention.tracked(7, 0)).isEqualTo(3);
        pyramid.observe(7, 0, quarterEach(0, 1, 2, 3));
        assertThat(retention.tracked(7, 0)).isEqualTo(3);
        assertThat(pyramid.knownResident(7, 0)).containsExactly(0, 1, 3);
    }

    @Test
    void sinksAndAWindowBeyondAnIntAreRefusedNotWrapped() {
        org.assertj.core.api.Assertions.assertThatThrownBy(() -> new PyramidBudget(new int[] {10}, Integer.MAX_VALUE,
                1)).isInstanceOf(IllegalArgumentException.class).hasMessageContaining("2147483648");
        PyramidBudget p = new PyramidBudget(new int[] {10}, 1, 1);
        org.assertj.core.api.Assertions.assertThatThrownBy(() -> p.budget(1))
                .hasMessage("layer 1 is out of range [0, 1)");
        org.assertj.core.api.Assertions.assertThatThrownBy(() -> p.score(1, -1, 0))
                .hasMessage("layer -1 is out of range [0, 1)");
        org.assertj.core.api.Assertions.assertThatThrownBy(() -> PyramidBudget.select(new int[] {0, 1, 2}, 1, 0, -5,
                q -> 0f)).isInstanceOf(IllegalArgumentException.class);
    }

    @Test
    void aResultOfASequenceClosedMeanwhileDoesNotBringItBack() {
        // An attention that raced the sequence's close reports after it: nothing of the closed sequence is kept again.
        PyramidBudget pyramid = new PyramidBudget(new int[] {24}, 1, 4);
        pyramid.observe(7, 0, quarterEach(0, 1, 2, 3));
        pyramid.sequenceClosed(7);
        pyramid.observe(7, 0, quarterEach(0, 1, 2, 3));
        pyramid.evicted(7, 0, 1);
        assertThat(pyramid.knownResident(7, 0)).isEmpty();
        assertThat(pyramid.score(7, 0, 0)).isZero();
        pyramid.observe(9, 0, quarterEach(0, 1, 2, 3));
        assertThat(pyramid.knownResident(9, 0)).containsExactly(0, 1, 2, 3);
    }

    /** A result of 4 query heads over {@code positions}, each weighted 1/4 (a placeholder output). */
    private static AttentionResult quarterEach(int... positions) {
        float[] weights = new float[4 * positions.length];
        Arrays.fill(weights, 0.25f);
        return new AttentionResult(4, 16, new float[64], positions.length, positions, weights);
    }

    @Test
    void entriesOfAPageEvictedAsTheFallbackAreNotCountedAgainstTheBudget() {
        // One layer with a budget of 24 tokens (1 sink, window 4), 8-token pages, a pool of six pages.
        ModelShape shape = new ModelShape(1, 4, 2, 16, 4, 2);
        PyramidBudget pyramid = new PyramidBudget(new int[] {24}, 1, 4);
        KvLayout layout = new KvLayout(2, 16, 8, StorageType.FP32);
        Random rnd = new Random(1);
        try (KvStore store = new KvStore(KvStoreConfig.builder(shape).storageType(StorageType.FP32).pageTokens(8)
                .buckets(1).threads(1).budgetBytes(6L * layout.pageBytes()).eviction(pyramid).build())) {
            long a = store.createSequence();
            long b = store.createSequence();
            for (int i = 0; i < 24; i++) {
                store.append(a, 0, 0, Reference.gaussian(32, rnd, 1f), Reference.gaussian(32, rnd, 1f));
            }
            int[] all = IntStream.range(0, 24).toArray();
            float[] uniform = new float[4 * all.length];
            Arrays.fill(uniform, 1f / 24);
            pyramid.observe(a, 0, new AttentionResult(4, 16, new float[64], all.length, all, uniform));
            // B fills the pool: A is within its budget, so the hook falls back to the oldest page (A's 0..7), and
            // then to A's 8..15 when A grows.
            for (int i = 0; i < 25; i++) {
                store.append(b, 0, 1, Reference.gaussian(32, rnd, 1f), Reference.gaussian(32, rnd, 1f));
            }
            for (int i = 0; i < 8; i++) {
                store.append(a, 0, 0, Reference.gaussian(32, rnd, 1f), Reference.gaussian(32, rnd, 1f));
            }
            int[] resident = store.residentPositions(a, 0);
            assertThat(resident).hasSize(16);
            float[] small = new float[4 * resident.length];
            Arrays.fill(small, 0.01f);
            pyramid.observe(a, 0, new AttentionResult(4, 16, new float[64], resident.length, resident, small));
            assertThat(pyramid.victims(a, 0, store.residentPositions(a, 0))).isEmpty();
            // B needs a page again: A holds 16 of its 24, so nothing of A is over budget; only a page goes.
            for (int i = 0; i < 8; i++) {
                store.append(b, 0, 1, Reference.gaussian(32, rnd, 1f), Reference.gaussian(32, rnd, 1f));
            }
            // (A's 16..31 were resident: its oldest page, 16..23, went whole.)
            assertThat(store.residentPositions(a, 0)).as("A's oldest page went whole; no tokens trimmed as over budget")
                    .containsExactly(24, 25, 26, 27, 28, 29, 30, 31);
        }
    }
}
