package io.pikv.sidecar;

import io.pikv.kv.ModelShape;
import io.pikv.kv.StorageType;
import io.pikv.sidecar.wire.Wire;
import org.junit.jupiter.api.Test;

import java.util.Map;
import java.util.Random;
import java.util.stream.IntStream;

import static org.assertj.core.api.Assertions.assertThat;

/** Token policies on a live shard: what a full shard evicts follows the attention its tokens got. */
class ShardPolicyTest {
    static final ModelShape SHAPE = new ModelShape(1, 2, 1, 16, 2, 1);

    /** A shard of {@code n} fp32 pages of 16 entries, one bucket, under {@code policy}. */
    static ShardNode pages(int n, ShardPolicy policy) {
        return new ShardNode(0, SHAPE, StorageType.FP32, 16, 1, n * PAGE, policy);
    }

    /** Bytes of one page of the test shape: 16 entries of K and V, 2 × 16 floats each. */
    static final long PAGE = 2 * 16 * 16 * 4;

    static Wire.AppendRequest.Entry entry(float[] k, Random rnd) {
        float[] v = new float[SHAPE.kvWidth()];
        for (int i = 0; i < v.length; i++) {
            v[i] = (float) rnd.nextGaussian();
        }
        return new Wire.AppendRequest.Entry(Wire.NEXT_POSITION, 0, k, v);
    }

    static void append(ShardNode node, long seq, int n, Random rnd, float[] heavyKey, int... heavy) {
        int start = node.lengths(seq)[0];
        for (int t = start; t < start + n; t++) {
            int position = t;
            float[] k = IntStream.of(heavy).anyMatch(h -> h == position) ? heavyKey : small(rnd);
            node.append(seq, new Wire.AppendRequest(0, new Wire.AppendRequest.Entry[] {entry(k, rnd)}));
        }
    }

    static float[] small(Random rnd) {
        float[] k = new float[SHAPE.kvWidth()];
        for (int i = 0; i < k.length; i++) {
            k[i] = (float) (0.1 * rnd.nextGaussian());
        }
        return k;
    }

    /** A switch waits for the batch of appends holding the policy, so a batch runs under one policy. */
    @Test
    void aSwitchWaitsForTheBatchThatHoldsThePolicy() throws Exception {
        ShardPolicy policy = ShardPolicy.of("oldest-page");
        java.util.concurrent.CompletableFuture<java.util.Optional<String>> switched =
                new java.util.concurrent.CompletableFuture<>();
        Thread switcher = new Thread(() -> switched.complete(policy.use("reject")), "switcher");
        try (ShardPolicy.Hold held = policy.holdSwitches()) {
            switcher.start();
            // Parked on the hold (not merely not started yet), and still so a while later.
            org.awaitility.Awaitility.await().atMost(java.time.Duration.ofSeconds(10)).until(() ->
                    switcher.getState() == Thread.State.WAITING || switcher.getState() == Thread.State.BLOCKED);
            org.awaitility.Awaitility.await().during(java.time.Duration.ofMillis(300))
                    .atMost(java.time.Duration.ofSeconds(2)).until(() -> !switched.isDone());
            assertThat(policy.activePolicy()).isEqualTo("oldest-page");
        }
        assertThat(switched.get(5, java.util.concurrent.TimeUnit.SECONDS)).isEmpty();
        assertThat(policy.activePolicy()).isEqualTo("reject");
    }

    @Test
    void onlyPoliciesThatRankByAttentionAskForWeights() {
        // Weights keep attention on the CPU (a GPU computes none): asked for only where the ranking uses them.
        assertThat(ShardPolicy.of("lru").wantsAttention()).isFalse();
        assertThat(ShardPolicy.of("streaming").wantsAttention()).isFalse();
        assertThat(ShardPolicy.of("oldest-page").wantsAttention()).isFalse();
        assertThat(ShardPolicy.of("h2o").wantsAttention()).isTrue();
        assertThat(ShardPolicy.of("lrfu").wantsAttention()).isTrue();
        assertThat(ShardPolicy.of("utility").wantsAttention()).isTrue();
        assertThat(ShardPolicy.of("utility", Map.of("attention", 0.0, "frequency", 0.0)).wantsAttention()).isFalse();
        assertThat(ShardPolicy.of("utility", Map.of("attention", 0.0)).wantsAttention()).as("frequency 1 by default")
                .isTrue();
    }

    @Test
    void heavyHittersSinksAndTheRecentWindowSurviveEviction() {
        ShardPolicy policy = ShardPolicy.of("reject");
        assertThat(policy.use("h2o", Map.of("sinks", 1.0, "window", 8.0))).isEmpty();
        Random rnd = new Random(4);
        float[] direction = new float[SHAPE.kvWidth()];
        java.util.Arrays.fill(direction, 3f);
        // 4 pages of 16 tokens, one bucket: the 65th token needs a page, so 16 tokens are evicted.
        try (ShardNode node = pages(4, policy)) {
            long seq = node.create(null);
            append(node, seq, 64, rnd, direction, 10, 20);
            float[] q = new float[SHAPE.queryWidth()];
            java.util.Arrays.fill(q, 1f);
            for (int i = 0; i < 3; i++) {
                node.attend(seq, new Wire.AttendRequest(0, new int[0], q));
            }
            append(node, seq, 1, rnd, direction);
            int[] resident = node.residentPositions(seq, 0);
            assertThat(resident).hasSize(49);
            assertThat(resident).contains(0, 10, 20, 64);
            assertThat(resident).contains(IntStream.range(56, 64).toArray());
            assertThat(node.stats().evictions()).isEqualTo(16);
        }
    }

    @Test
    void aTokenPolicySwitchedToRanksTheEntriesAlreadyResident() {
        ShardPolicy policy = ShardPolicy.of("reject");
        Random rnd = new Random(5);
        try (ShardNode node = pages(2, policy)) {
            long seq = node.create(null);
            append(node, seq, 32, rnd, small(rnd));
            policy.use("lru");
            assertThat(policy.tracked(seq, 0)).as("told of what the shard holds").isEqualTo(32);
            append(node, seq, 1, rnd, small(rnd));
            assertThat(node.residentPositions(seq, 0)).containsExactly(IntStream.range(16, 33).toArray());
            // Under lru from the switch on, the oldest go first: 16..31, not the 16 stored since (32..47).
            append(node, seq, 16, rnd, small(rnd));
            assertThat(node.residentPositions(seq, 0)).containsExactly(IntStream.range(32, 49).toArray());
            // A parameter change builds a new policy: it too is told of what is resident.
            policy.use("h2o", Map.of("window", 4.0));
            assertThat(policy.tracked(seq, 0)).isEqualTo(17);
        }
    }

    /** A policy that could not be told of the resident entries stays untold: the shard evicts its oldest pages. */
    @Test
    void aSwitchWhoseTellingFailsSaysSoAndLeavesThePolicyUntold() {
        ShardPolicy policy = ShardPolicy.of("reject");
        Random rnd = new Random(6);
        try (ShardNode node = pages(2, policy)) {
            long seq = node.create(null);
            append(node, seq, 32, rnd, small(rnd));
            policy.onSwitch(() -> {
                throw new IllegalStateException("the store is closing");
            });
            assertThat(policy.use("lru")).hasValue("policy lru is in force but could not be told of the entries stored"
                    + " before it (java.lang.IllegalStateException: the store is closing): the shard evicts its oldest"
                    + " pages instead until another policy, or other parameters, is switched to");
            assertThat(policy.activePolicy()).isEqualTo("lru");
            long before = policy.fallbacks();
            append(node, seq, 1, rnd, small(rnd)); // full: room is made by the oldest page, not by lru's ranking
            assertThat(policy.fallbacks()).isGreaterThan(before);
            assertThat(node.residentPositions(seq, 0)).containsExactly(IntStream.range(16, 33).toArray());
        }
    }

    /**
     * Appends that come while a new token policy is being told of the resident entries (it knows only what they
     * store): the shard evicts its oldest pages then, not a batch's own first entries, all the new policy knows of.
     */
    @Test
    void aBatchStoredWhileANewPolicyIsToldOfTheResidentEntriesKeepsItsEntries() {
        ShardPolicy policy = ShardPolicy.of("oldest-page");
        Random rnd = new Random(9);
        try (ShardNode node = pages(2, policy)) {
            long old = node.create(null);
            append(node, old, 32, rnd, small(rnd)); // both pages full
            long fresh = node.create(null);
            Wire.AppendRequest.Entry[] batch = new Wire.AppendRequest.Entry[17]; // a page and one entry more
            for (int i = 0; i < batch.length; i++) {
                batch[i] = entry(small(rnd), rnd);
            }
            // Stands for the telling under way: the batch arrives before the new policy has heard of the old entries.
            policy.onSwitch(() -> node.append(fresh, new Wire.AppendRequest(0, batch)));
            policy.use("lru");
            assertThat(node.residentPositions(fresh, 0)).containsExactly(IntStream.range(0, 17).toArray());
            assertThat(node.residentPositions(old, 0)).isEmpty(); // its two pages were the oldest
        }
    }

    @Test
    void aSwitchUnderConcurrentEvictionTracksExactlyWhatIsResident() throws Exception {
        // A full shard: one thread switches token policies (each new one is told of the entries resident), another
        // appends to its own sequence, evicting the others' entries meanwhile. Once both stop, the policy tracks
        // exactly what the shard holds: an entry evicted while a switch told of its sequence is not tracked for good.
        ShardPolicy policy = ShardPolicy.of("oldest-page");
        Random rnd = new Random(9);
        try (ShardNode node = pages(16, policy)) {
            long[] others = new long[12];
            for (int i = 0; i < others.length; i++) {
                others[i] = node.create(null);
                append(node, others[i], 20, rnd, small(rnd));
            }
            long writer = node.create(null);
            java.util.concurrent.atomic.AtomicBoolean done = new java.util.concurrent.atomic.AtomicBoolean();
            java.util.concurrent.atomic.AtomicReference<Throwable> failed = new java.util.concurrent.atomic.AtomicReference<>();
            java.util.concurrent.atomic.AtomicInteger appends = new java.util.concurrent.atomic.AtomicInteger();
            Thread appender = new Thread(() -> {
                Random r = new Random(10);
                try {
                    while (!done.get()) {
                        append(node, writer, 1, r, small(r));
                        // Refill the others now and then, so that the switches keep finding entries to tell of.
                        long other = others[r.nextInt(others.length)];
                        append(node, other, 1, r, small(r));
                        appends.incrementAndGet();
                    }
                } catch (Throwable e) {
                    failed.set(e);
                }
            });
            appender.start();
            int during;
            try {
                // The switches race appends only while the appender runs: it has started, and the switches go on
                // (2,000 at least) until it has appended during them too, so the race is not left to the scheduler.
                org.awaitility.Awaitility.await().atMost(java.time.Duration.ofSeconds(20)).until(() -> appends.get() > 0 || failed.get() != null);
                int before = appends.get();
                long giveUp = System.nanoTime() + java.util.concurrent.TimeUnit.SECONDS.toNanos(20);
                for (int i = 0; i < 2_000 || failed.get() == null && appends.get() - before < 100
                        && System.nanoTime() < giveUp; i++) {
                    assertThat(policy.use(i % 2 == 0 ? "lru" : "streaming", Map.of())).isEmpty();
                }
                during = appends.get() - before;
            } finally {
                done.set(true);
                appender.join();
            }
            assertThat(failed.get()).isNull();
            assertThat(during).as("appends while the policy switched").isGreaterThanOrEqualTo(100);
            for (long seq : others) {
                assertThat(policy.tracked(seq, 0)).as("sequence %d", seq).isEqualTo(node.resident(seq, 0));
            }
            assertThat(policy.tracked(writer, 0)).isEqualTo(node.resident(writer, 0));
        }
    }

    @Test
    void anEvictionByAnotherPathLeavesTheTokenPolicysTracking() {
        ShardPolicy policy = ShardPolicy.of("lru");
        for (int p = 0; p < 10; p++) {
            policy.appended(7, 0, p);
        }
        policy.evicted(7, 0, 3); // the shard evicted it (a page, a pyramid budget): lru must not name it again
        policy.evicted(7, 0, 42); // one it never tracked: nothing
        assertThat(policy.tracked(7, 0)).isEqualTo(9);
        // Budgets resized under lru: its victims, and any page the fallback takes, leave its tracking.
        Random rnd = new Random(8);
        try (ShardNode node = pages(4, policy)) {
            long seq = node.create(null);
            append(node, seq, 64, rnd, small(rnd));
            node.resizeBudget(2 * PAGE);
            assertThat(node.resident(seq, 0)).isEqualTo(32);
            assertThat(policy.tracked(seq, 0)).isEqualTo(32);
        }
    }

    @Test
    void parametersFromSettingsAndTheirRefusals() {
        assertThat(ShardPolicy.parseParameters(" sinks=4, window = 256 ")).containsExactly(
                Map.entry("sinks", 4.0), Map.entry("window", 256.0));
        assertThat(ShardPolicy.parseParameters("")).isEmpty();
        org.assertj.core.api.Assertions.assertThatThrownBy(() -> ShardPolicy.parseParameters("sinks"))
                .hasMessage("eviction parameters are name=value pairs separated by commas, got 'sinks' in 'sinks'");
        org.assertj.core.api.Assertions.assertThatThrownBy(() -> ShardPolicy.parseParameters("window=wide"))
                .hasMessage("eviction parameter window must be a number, got 'wide'");
        org.assertj.core.api.Assertions.assertThatThrownBy(() -> ShardPolicy.parseParameters("sinks=4, sinks =8"))
                .hasMessage("eviction parameter sinks is given twice in 'sinks=4, sinks =8': give each once");
        for (String emptyItem : new String[] {",", "sinks=4,", "sinks=4,,window=8"}) {
            org.assertj.core.api.Assertions.assertThatThrownBy(() -> ShardPolicy.parseParameters(emptyItem))
                    .as(emptyItem).hasMessage("eviction parameters are name=value pairs separated by commas, got '' "
                            + "in '" + emptyItem + "'");
        }
        org.assertj.core.api.Assertions.assertThatThrownBy(() -> ShardPolicy.of("utility",
                        Map.of("attention", 0.0, "recency", 0.0, "frequency", -0.0)))
                .hasMessageContaining("utility weights attention, recency and frequency are all 0");

        ShardPolicy lrfu = ShardPolicy.of("lrfu", Map.of("halfLife", 512.0, "historyLimit", 64.0));
        assertThat(lrfu.activePolicy()).isEqualTo("lrfu");
        assertThat(lrfu.use("lrfu", Map.of("halfLife", 0.0))).get().asString()
                .contains("halfLife must be > 0").endsWith("; keeping lrfu");
        java.util.Map<String, Double> withNull = new java.util.HashMap<>();
        withNull.put("sinks", null);
        assertThat(lrfu.use("h2o", withNull)).contains("parameter sinks must be a finite number, got null; keeping lrfu");
        assertThat(lrfu.use("h2o", Map.of("window", Double.POSITIVE_INFINITY))).contains(
                "parameter window must be a finite number, got Infinity; keeping lrfu");
        assertThat(lrfu.activePolicy()).isEqualTo("lrfu");
    }
}
