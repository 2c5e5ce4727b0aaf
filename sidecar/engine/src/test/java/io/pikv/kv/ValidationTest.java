package io.pikv.kv;

import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.assertj.core.api.ThrowableAssert.ThrowingCallable;

import java.util.List;
import java.util.Random;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/** Every bad input is rejected with a message that names the problem, and leaves the store as it was. */
class ValidationTest {
    private static final ModelShape SHAPE = new ModelShape(2, 4, 2, 16, 6, 2);
    private final Random rnd = new Random(12);
    private KvStore store;
    private long seq;
    private float[] q;
    private float[] before;

    @BeforeEach
    void fill() {
        store = new KvStore(KvStoreConfig.builder(SHAPE).pageTokens(16).shards(2).threads(1).build());
        seq = store.createSequence();
        List<Reference.Entry> entries = Reference.randomEntries(SHAPE, 40, rnd);
        Reference.load(store, seq, 1, entries);
        q = Reference.gaussian(SHAPE.queryWidth(), rnd, 1f);
        before = store.attend(seq, 1, q).output();
    }

    @AfterEach
    void unchanged() {
        assertThat(store.length(seq, 1)).isEqualTo(40);
        assertThat(store.length(seq, 0)).isZero();
        assertThat(store.resident(seq, 1)).isEqualTo(40);
        assertThat(store.attend(seq, 1, q).output()).containsExactly(before);
        store.close();
    }

    private void rejects(ThrowingCallable call, String message) {
        assertThatThrownBy(call).isInstanceOf(IllegalArgumentException.class).hasMessageContaining(message);
    }

    @Test
    void badAppends() {
        float[] ok = new float[SHAPE.kvWidth()];
        rejects(() -> store.append(seq, 1, 0, new float[3], ok), "K must hold kvHeads × headDim = 32 floats, got 3");
        rejects(() -> store.append(seq, 1, 0, ok, null), "V must hold");
        float[] nan = ok.clone();
        nan[17] = Float.NaN;
        rejects(() -> store.append(seq, 1, 0, nan, ok), "K[head 1][1] is NaN: values must be finite");
        float[] inf = ok.clone();
        inf[0] = Float.NEGATIVE_INFINITY;
        rejects(() -> store.append(seq, 1, 0, ok, inf), "V[head 0][0] is -Infinity");
        float[] big = ok.clone();
        big[3] = 70000f;
        rejects(() -> store.append(seq, 1, 0, big, ok), "within ±65504 for fp16 storage");
        // fp32 takes far larger values, but none whose products could overflow a logit (every answer would be NaN).
        try (KvStore fp32 = new KvStore(KvStoreConfig.builder(SHAPE).storageType(StorageType.FP32).pageTokens(16)
                .threads(1).build())) {
            long s32 = fp32.createSequence();
            float[] large = ok.clone();
            large[3] = 1e15f;
            fp32.append(s32, 1, 0, large, large);
            float[] huge = ok.clone();
            huge[5] = 3e38f;
            rejects(() -> fp32.append(s32, 1, 0, huge, ok), "K[head 0][5] is 3.0E38: values must be finite and within "
                    + "±2^50 (about 1.1e15)");
            assertThat(fp32.resident(s32, 1)).isEqualTo(1);
        }
        rejects(() -> store.append(seq, 2, 0, ok, ok), "layer 2 is out of range: the model has 2 layers");
        rejects(() -> store.append(seq, -1, 0, ok, ok), "layer -1 is out of range");
        rejects(() -> store.append(seq, 1, 6, ok, ok), "expert 6 is out of range: the model has 6 experts");
        rejects(() -> store.append(999, 1, 0, ok, ok), "unknown sequence 999");
    }

    @Test
    void badQueries() {
        rejects(() -> store.attend(seq, 1, new float[5]), "query must hold qHeads × headDim = 64 floats, got 5");
        float[] nan = q.clone();
        nan[63] = Float.NaN;
        rejects(() -> store.attend(seq, 1, nan), "query[63] is NaN");
        float[] huge = q.clone();
        huge[2] = 3e38f;
        rejects(() -> store.attend(seq, 1, huge), "query[2] is 3.0E38: values must be finite and within ±2^50");
        rejects(() -> store.attend(seq, 1, q, AttentionScope.experts(1, 9), false), "scope names expert 9");
        rejects(() -> AttentionScope.experts(-1), "expert ids must be in [0, 4096), got -1");
        rejects(() -> AttentionScope.experts(Integer.MAX_VALUE), "expert ids must be in [0, 4096), got 2147483647");
        rejects(() -> store.evict(seq, 1, null), "positions are missing");
        // Missing arguments are named, not a bare NullPointerException; bad key sizes refused, not a bucket out of range.
        rejects(() -> AttentionScope.experts((int[]) null), "expert ids are missing");
        rejects(() -> store.attend(seq, 1, q, null, false), "the attention scope is missing");
        rejects(() -> store.applyShardMap(null), "the shard map is missing");
        rejects(() -> new ExpertShardMap(1, 2, null), "the map's shard of each expert is missing");
        rejects(() -> ShardKey.bucket(1, 2, 3), "buckets must be a power of two, got 3");
        rejects(() -> ShardKey.key(1, 2, 0, 4), "N_tok and N_exp must be >= 1, got 0 and 4");
        rejects(() -> ExpertShardMap.roundRobin(6, 2).withMove(6, 0), "expert 6 is outside [0, 6)");
        // A page whose size would not fit an int (it used to wrap to 0 bytes and divide by zero).
        rejects(() -> new KvLayout(1024, 1024, 1024, StorageType.FP32), "a page of 1024 tokens × 1024 KV heads × "
                + "(1024 + 1024) FP32 elements would take 8589934592 bytes, more than 1073741824");
        rejects(() -> store.attend(777, 1, q), "unknown sequence 777");
        rejects(() -> store.evict(seq, 5, new int[] {1}), "layer 5 is out of range");
        rejects(() -> store.shards().get(0).resident(seq, 2), "layer 2 is out of range");
        rejects(() -> store.shards().get(0).resident(seq, -1), "layer -1 is out of range");
        // A shard names missing arguments as the store does.
        rejects(() -> store.shards().get(0).attendPartial(seq, 1, q, null, false, null, 1, -1),
                "the attention scope is missing");
        rejects(() -> store.shards().get(0).notResident(seq, 1, null), "positions must not be null");
        long closed = store.createSequence();
        store.closeSequence(closed);
        rejects(() -> store.attend(closed, 0, q), "unknown sequence " + closed);
        rejects(() -> store.closeSequence(closed), "unknown sequence " + closed);
    }

    @Test
    void badConfigurations() {
        rejects(() -> new ModelShape(1, 6, 4, 16, 4, 2), "qHeads (6) must be a multiple of kvHeads (4)");
        rejects(() -> new ModelShape(1, 4, 4, 16, 4, 5), "topK must be in [1, 4], got 5");
        rejects(() -> new ModelShape(0, 4, 4, 16, 4, 1), "layers must be in [1, 1024], got 0");
        rejects(() -> KvStoreConfig.builder(SHAPE).pageTokens(24).build(), "pageTokens must be a power of two");
        rejects(() -> KvStoreConfig.builder(SHAPE).buckets(3).build(), "buckets must be a power of two");
        rejects(() -> KvStoreConfig.builder(SHAPE).shards(4).budgetBytes(1000).build(), "less than one page");
        // 1 TiB of 128 KiB pages is 8 Mi pages; a shard names at most 2^31 / 1024 - 1 of 1024 tokens: refused, not cut,
        // and when the settings are built, not only when a store is made of them.
        rejects(() -> KvStoreConfig.builder(SHAPE).pageTokens(1024).budgetBytes(1L << 40).build(),
                "budget of 1099511627776 bytes gives each of the 1 shards more than the 2097150 pages of 131072 bytes "
                        + "one shard can address");
        rejects(() -> KvStoreConfig.builder(SHAPE).kernel("gpu").build(),
                "kernel must be auto, vector or scalar, got 'gpu'");
        rejects(() -> StorageType.parse("bf16"), "unknown storage type 'bf16': use fp32, fp16 or int8");
    }
}
