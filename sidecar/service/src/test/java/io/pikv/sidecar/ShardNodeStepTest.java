package io.pikv.sidecar;

import io.pikv.kv.ModelShape;
import io.pikv.kv.StorageType;
import io.pikv.sidecar.wire.Wire;
import org.junit.jupiter.api.Test;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CountDownLatch;

import static org.assertj.core.api.Assertions.assertThat;

/** A single-shard step stores its token and attends as one: concurrent steps never see each other's later tokens. */
class ShardNodeStepTest {
    static final ModelShape SHAPE = new ModelShape(1, 2, 1, 16, 4, 2);

    record Step(int position, float[] query, float[] output) {
    }

    @Test
    void concurrentStepsOnOneSequenceEachAttendUpToTheirOwnPosition() throws Exception {
        int threads = 2;
        int steps = 400;
        Map<Integer, float[][]> kv = new ConcurrentHashMap<>();
        List<Step> done = java.util.Collections.synchronizedList(new ArrayList<>());
        try (ShardNode node = new ShardNode(0, SHAPE, StorageType.FP32, 16, 1, 1L << 22, ShardPolicy.of("oldest-page"))) {
            long seq = node.create(null);
            CountDownLatch start = new CountDownLatch(1);
            List<Thread> workers = new ArrayList<>();
            List<Throwable> failures = java.util.Collections.synchronizedList(new ArrayList<>());
            for (int t = 0; t < threads; t++) {
                Random rnd = new Random(t);
                Thread w = new Thread(() -> {
                    try {
                        start.await();
                        for (int i = 0; i < steps; i++) {
                            float[] q = gaussian(SHAPE.queryWidth(), rnd);
                            float[] k = gaussian(SHAPE.kvWidth(), rnd);
                            float[] v = gaussian(SHAPE.kvWidth(), rnd);
                            Wire.StepResponse r = node.step(seq, new Wire.StepRequest(0, Wire.CHOSEN_EXPERTS,
                                    Wire.SCOPE_ALL, null, new int[] {rnd.nextInt(4)}, q, k, v));
                            kv.put(r.position(), new float[][] {k, v});
                            done.add(new Step(r.position(), q, r.output()));
                        }
                    } catch (Throwable e) {
                        failures.add(e);
                    }
                });
                w.start();
                workers.add(w);
            }
            start.countDown();
            for (Thread w : workers) {
                w.join();
            }
            assertThat(failures).isEmpty();
        }
        assertThat(kv).hasSize(threads * steps);
        int wrong = 0;
        for (Step s : done) {
            double[] ref = reference(s.query(), kv, s.position());
            double err = 0;
            double max = 0;
            for (int i = 0; i < ref.length; i++) {
                err = Math.max(err, Math.abs(s.output()[i] - ref[i]));
                max = Math.max(max, Math.abs(ref[i]));
            }
            if (err > 1e-4 * max) {
                wrong++;
            }
        }
        assertThat(wrong).as("steps whose attention saw tokens stored after their own").isZero();
    }

    @Test
    void aStepWhoseAttentionFailsLeavesNoTokenBehind() {
        Random rnd = new Random(5);
        try (ShardNode node = new ShardNode(0, SHAPE, StorageType.FP32, 16, 1, 1L << 22, ShardPolicy.of("oldest-page"))) {
            long seq = node.create(null);
            for (int i = 0; i < 3; i++) {
                node.step(seq, new Wire.StepRequest(0, Wire.CHOSEN_EXPERTS, Wire.SCOPE_ALL, null, new int[] {i},
                        gaussian(SHAPE.queryWidth(), rnd), gaussian(SHAPE.kvWidth(), rnd), gaussian(SHAPE.kvWidth(), rnd)));
            }
            long lookups = node.stats().lookups();
            long evictions = node.stats().evictions();
            node.attendOn(new StubDevice("failing device", () -> { // its attention fails after the store
                throw new IllegalStateException("device lost");
            }, () -> false));
            Wire.StepRequest step = new Wire.StepRequest(0, Wire.CHOSEN_EXPERTS, Wire.SCOPE_ALL, null, new int[] {1},
                    gaussian(SHAPE.queryWidth(), rnd), gaussian(SHAPE.kvWidth(), rnd), gaussian(SHAPE.kvWidth(), rnd));
            org.assertj.core.api.Assertions.assertThatThrownBy(() -> node.step(seq, step))
                    .isInstanceOf(UndoneException.class).hasMessageContaining("device lost")
                    .hasMessageContaining("the step of sequence " + seq + " layer 0 at position 3 failed, and what it "
                            + "had stored was taken back (none remains)");
            // All or none: the token is gone, the layer's length is as before, nothing counts as evicted.
            assertThat(node.lengths(seq)).containsExactly(3);
            assertThat(node.resident(seq, 0)).isEqualTo(3);
            assertThat(node.stats().evictions()).isEqualTo(evictions);
            assertThat(node.stats().lookups()).as("a step that failed looked nothing up").isEqualTo(lookups);
            node.attendOn(null);
            Wire.StepResponse next = node.step(seq, step);
            assertThat(next.position()).as("the failed step's position is given again").isEqualTo(3);
            assertThat(node.resident(seq, 0)).isEqualTo(4);
            assertThat(node.stats().lookups()).as("the four entries it attended over").isEqualTo(lookups + 4);
        }
    }

    @Test
    void attentionWhileTheSequenceClosesIsUnknownNeverEmpty() throws Exception {
        Random rnd = new Random(9);
        int empty = 0;
        int calls = 0;
        try (ShardNode node = new ShardNode(0, SHAPE, StorageType.FP32, 16, 4, 1L << 24, ShardPolicy.of("oldest-page"))) {
            for (int round = 0; round < 200; round++) {
                long seq = node.create(null);
                for (int t = 0; t < 256; t++) {
                    node.append(seq, new Wire.AppendRequest(0, new Wire.AppendRequest.Entry[] {
                        new Wire.AppendRequest.Entry(Wire.NEXT_POSITION, t % 4, gaussian(SHAPE.kvWidth(), rnd),
                                gaussian(SHAPE.kvWidth(), rnd))}));
                }
                float[] q = gaussian(SHAPE.queryWidth(), rnd);
                CountDownLatch going = new CountDownLatch(1);
                int[] seen = new int[2];
                java.util.concurrent.atomic.AtomicReference<Throwable> other = new java.util.concurrent.atomic.AtomicReference<>();
                long giveUp = System.nanoTime() + java.util.concurrent.TimeUnit.SECONDS.toNanos(30);
                Thread reader = new Thread(() -> {
                    // Bounded: should attention on a closed sequence stop throwing (the regression this test is
                    // for), the reader ends by its deadline and the count of empty answers says so, not a hung build.
                    while (System.nanoTime() < giveUp) {
                        try {
                            io.pikv.kv.PartialAttention p = node.attend(seq, new Wire.AttendRequest(0, new int[0], q));
                            seen[0]++;
                            going.countDown(); // the close comes once a call has gone through: the next ones race it
                            if (p.finish().visited() == 0) {
                                seen[1]++;
                            }
                        } catch (io.pikv.kv.UnknownSequenceException gone) {
                            return;
                        } catch (Throwable e) {
                            other.set(e); // any other ending is a failure, which a silent thread would hide
                            return;
                        }
                    }
                    other.set(new AssertionError("attention on the closed sequence still answered after 30 s"));
                });
                reader.start();
                assertThat(going.await(10, java.util.concurrent.TimeUnit.SECONDS) || other.get() != null)
                        .as("a first attention call went through").isTrue();
                node.close(seq);
                reader.join(60_000);
                assertThat(reader.isAlive()).as("the reader ended").isFalse();
                assertThat(other.get()).as("the reader ended with something else than an unknown sequence").isNull();
                calls += seen[0];
                empty += seen[1];
            }
        }
        assertThat(calls).as("at least one call a round before its close").isGreaterThanOrEqualTo(200);
        assertThat(empty).as("answers of %d that read a closing sequence as empty", calls).isZero();
    }

    /** softmax(q·k/√d)·v per query head over positions 0..last, in double. */
    private static double[] reference(float[] q, Map<Integer, float[][]> kv, int last) {
        int d = SHAPE.headDim();
        int group = SHAPE.qHeads() / SHAPE.kvHeads();
        double[] out = new double[SHAPE.queryWidth()];
        for (int h = 0; h < SHAPE.qHeads(); h++) {
            int kvh = h / group;
            double[] logits = new double[last + 1];
            double m = Double.NEGATIVE_INFINITY;
            for (int p = 0; p <= last; p++) {
                float[] k = kv.get(p)[0];
                double dot = 0;
                for (int i = 0; i < d; i++) {
                    dot += (double) q[h * d + i] * k[kvh * d + i];
                }
                logits[p] = dot / Math.sqrt(d);
                m = Math.max(m, logits[p]);
            }
            double sum = 0;
            for (int p = 0; p <= last; p++) {
                double w = Math.exp(logits[p] - m);
                sum += w;
                float[] v = kv.get(p)[1];
                for (int i = 0; i < d; i++) {
                    out[h * d + i] += w * v[kvh * d + i];
                }
            }
            for (int i = 0; i < d; i++) {
                out[h * d + i] /= sum;
            }
        }
        return out;
    }

    /**
     * Another request's room taking the step's own token between its store and its attention (its tail page the
     * oldest): the step stores it again and attends with it, never without; evicted at every try, it is refused whole.
     */
    @Test
    void aStepWhoseTokenIsEvictedBeforeItsAttentionStoresItAgain() {
        Random rnd = new Random(11);
        try (ShardNode node = new ShardNode(0, SHAPE, StorageType.FP32, 16, 1, 2 * 2048,
                ShardPolicy.of("oldest-page"))) {
            long seq = node.create(null);
            long other = node.create(null);
            node.append(seq, append(Wire.NEXT_POSITION, rnd)); // the oldest page: seq's tail, one entry
            for (int i = 0; i < 16; i++) {
                node.append(other, append(Wire.NEXT_POSITION, rnd)); // the second page, full
            }
            int[] evictions = {0};
            node.afterStepStore = () -> {
                if (evictions[0]++ == 0) { // once: the other sequence needs a page, and the oldest goes
                    node.append(other, append(Wire.NEXT_POSITION, rnd));
                }
            };
            float[] v = gaussian(SHAPE.kvWidth(), rnd);
            Wire.StepResponse r = node.step(seq, new Wire.StepRequest(0, Wire.CHOSEN_EXPERTS, Wire.SCOPE_ALL, null,
                    new int[] {1}, gaussian(SHAPE.queryWidth(), rnd), gaussian(SHAPE.kvWidth(), rnd), v));
            assertThat(evictions[0]).as("attended twice").isEqualTo(2);
            assertThat(r.position()).isEqualTo(1);
            // The token is all the sequence holds now (its first entry went with the page): the output is its V, for
            // both query heads of the one KV head.
            assertThat(node.residentPositions(seq, 0)).containsExactly(1);
            for (int h = 0; h < SHAPE.qHeads(); h++) {
                for (int d = 0; d < SHAPE.headDim(); d++) {
                    assertThat(r.output()[h * SHAPE.headDim() + d]).isCloseTo(v[d], org.assertj.core.data.Offset
                            .offset(1e-6f));
                }
            }
            // Evicted at every try: refused, nothing of the step kept, the sequence's length as before.
            long evictionsBefore = node.stats().evictions();
            node.afterStepStore = () -> node.engineShard().evict(seq, 0, new int[] {2});
            org.assertj.core.api.Assertions.assertThatThrownBy(() -> node.step(seq, new Wire.StepRequest(0,
                    Wire.CHOSEN_EXPERTS, Wire.SCOPE_ALL, null, new int[] {1}, gaussian(SHAPE.queryWidth(), rnd),
                    gaussian(SHAPE.kvWidth(), rnd), gaussian(SHAPE.kvWidth(), rnd))))
                    .isInstanceOf(io.pikv.kv.KvBudgetExceededException.class)
                    .hasMessageContaining("evicted by other requests before its attention 3 times");
            assertThat(node.layers(seq)[0][0]).as("length").isEqualTo(2);
            assertThat(node.residentPositions(seq, 0)).containsExactly(1);
            // Each try's copy was taken back, its eviction too: no stale miss of position 2 is left behind.
            assertThat(node.stats().evictions()).isEqualTo(evictionsBefore + 3);
            long misses = node.stats().misses();
            node.attend(seq, new Wire.AttendRequest(0, new int[0], gaussian(SHAPE.queryWidth(), rnd)));
            assertThat(node.stats().misses() - misses).as("only position 0's, evicted for real").isEqualTo(1);
        }
    }

    private static Wire.AppendRequest append(int position, Random rnd) {
        return new Wire.AppendRequest(0, new Wire.AppendRequest.Entry[] {new Wire.AppendRequest.Entry(position,
                rnd.nextInt(4), gaussian(SHAPE.kvWidth(), rnd), gaussian(SHAPE.kvWidth(), rnd))});
    }

    private static float[] gaussian(int n, Random rnd) {
        float[] x = new float[n];
        for (int i = 0; i < n; i++) {
            x[i] = (float) rnd.nextGaussian();
        }
        return x;
    }
}
