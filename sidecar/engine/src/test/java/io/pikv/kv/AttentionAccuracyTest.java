package io.pikv.kv;

import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import java.util.stream.Stream;

import static org.assertj.core.api.Assertions.assertThat;

/** Attention through the store against the double-precision reference, for both kernels and both storage types. */
class AttentionAccuracyTest {
    static final double INT8_TOLERANCE = 3e-2;

    /** qHeads, kvHeads, headDim, tokens, pageTokens, shards, buckets. */
    static Stream<Arguments> shapes() {
        return Stream.of(
                Arguments.of(8, 8, 64, 1, 16, 1, 1),        // one token
                Arguments.of(32, 8, 128, 1000, 16, 1, 8),   // GQA group 4, odd length
                Arguments.of(32, 8, 128, 1000, 32, 2, 4),   // the default shape and page: the fused fp16 loops (16 lanes)
                Arguments.of(8, 2, 64, 45, 32, 1, 2),       // fused loops over partly filled pages
                Arguments.of(4, 1, 32, 257, 16, 2, 4),      // multi-query, one past a page boundary
                Arguments.of(6, 2, 48, 64, 16, 1, 2),       // GQA group 3, exact page multiple
                Arguments.of(2, 2, 16, 15, 16, 3, 1),       // one short of a page
                Arguments.of(12, 4, 80, 333, 32, 2, 2),     // head dim 80
                Arguments.of(3, 3, 20, 77, 8, 1, 4));       // head dim the vector kernel cannot take: scalar
    }

    static Stream<Arguments> cases() {
        List<Arguments> out = new ArrayList<>();
        for (String kernel : List.of("scalar", "auto")) {
            for (StorageType type : StorageType.values()) {
                shapes().forEach(a -> {
                    Object[] x = a.get();
                    Object[] y = new Object[x.length + 2];
                    y[0] = kernel;
                    y[1] = type;
                    System.arraycopy(x, 0, y, 2, x.length);
                    out.add(Arguments.of(y));
                });
            }
        }
        return out.stream();
    }

    @ParameterizedTest(name = "{0} {1} q{2} kv{3} d{4} n{5} page{6} shards{7} buckets{8}")
    @MethodSource("cases")
    void matchesDoublePrecisionReference(String kernel, StorageType type, int qHeads, int kvHeads, int headDim,
                                         int tokens, int pageTokens, int shards, int buckets) {
        ModelShape shape = new ModelShape(2, qHeads, kvHeads, headDim, 8, 2);
        Random rnd = new Random(31L * tokens + headDim + qHeads);
        List<Reference.Entry> entries = Reference.randomEntries(shape, tokens, rnd);
        KvStoreConfig config = KvStoreConfig.builder(shape).storageType(type).pageTokens(pageTokens)
                .shards(shards).buckets(buckets).kernel(kernel).threads(2).build();
        // int8 is the lossy compressed format: its arithmetic is held to 1e-5 against the stored values in
        // Int8PageTest; here it is held to what 8 bits of per-channel/per-token scale give on these inputs.
        double tolerance = type == StorageType.FP32 ? 1e-5 : type == StorageType.FP16 ? 2e-3 : INT8_TOLERANCE;
        try (KvStore store = new KvStore(config)) {
            if (kernel.equals("auto") && Boolean.parseBoolean(System.getProperty("pikv.expect.vector", "true"))
                    && headDim % 16 == 0) {
                // The build runs these with the Vector API module: "auto" must then be the vector kernel.
                assertThat(store.kernel().name()).startsWith("vector");
            }
            long seq = store.createSequence();
            Reference.load(store, seq, 1, entries);
            for (int trial = 0; trial < 3; trial++) {
                // Larger query norms make attention peakier (logit spread up to ~±25), where precision is tested
                // hardest.
                float[] q = Reference.gaussian(shape.queryWidth(), rnd, 1f + trial);
                AttentionResult result = store.attend(seq, 1, q, AttentionScope.all(), true);
                double[] expected = Reference.attend(shape, q, entries);
                assertThat(Reference.relativeError(result.output(), expected))
                        .as("relative error, %s %s trial %d", store.kernel().name(), type, trial)
                        .isLessThanOrEqualTo(tolerance);
                if (type == StorageType.FP16) {
                    // Against the values as stored, the arithmetic itself is as exact as with fp32 pages.
                    double[] exact = Reference.attend(shape, q, Reference.roundedToFp16(entries));
                    assertThat(Reference.relativeError(result.output(), exact))
                            .as("relative error vs fp16-rounded inputs").isLessThanOrEqualTo(1e-5);
                }
                assertThat(result.visited()).isEqualTo(tokens);
                int[] positions = result.positions();
                for (int qh = 0; qh < qHeads; qh += Math.max(1, qHeads / 3)) {
                    // Relative to the head's largest weight (most weights of a long peaky context are tiny, so an
                    // absolute bound would pass a vector of zeros), and summing to one. fp16 pages against the
                    // values as stored (a weight moves with its logit, which fp16 rounding of K shifts), so the
                    // arithmetic is held to fp32's bound.
                    double[] w = Reference.weights(shape, q,
                            type == StorageType.FP16 ? Reference.roundedToFp16(entries) : entries, qh);
                    double maxRef = 0;
                    double worst = 0;
                    double sum = 0;
                    for (int j = 0; j < positions.length; j++) {
                        maxRef = Math.max(maxRef, w[positions[j]]);
                        worst = Math.max(worst, Math.abs(result.weight(qh, j) - w[positions[j]]));
                        sum += result.weight(qh, j);
                    }
                    assertThat(worst / maxRef).as("weights of head %d, %s %s", qh, store.kernel().name(), type)
                            .isLessThanOrEqualTo(type == StorageType.INT8 ? INT8_TOLERANCE : 1e-5);
                    assertThat(sum).as("weights of head %d sum to one", qh).isCloseTo(1.0,
                            org.assertj.core.data.Offset.offset(1e-4));
                }
            }
        }
    }
}
