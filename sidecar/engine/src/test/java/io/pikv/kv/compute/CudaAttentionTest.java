package io.pikv.kv.compute;

import io.pikv.kv.ModelShape;
import io.pikv.kv.StorageType;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

import static org.assertj.core.api.Assertions.assertThat;

/** CUDA attention against the CPU backend on the same tokens; skipped, with the reason, where no GPU is usable. */
class CudaAttentionTest {

    @BeforeEach
    void needsGpu() {
        ComputeBackends.Probe probe = ComputeBackends.probe();
        Assumptions.assumeTrue(probe.available(), () -> (probe.deviceFound()
                ? "a CUDA device is there but cannot be used, GPU tests skipped: "
                : "no CUDA device, GPU tests skipped: ") + probe.reason());
    }

    @ParameterizedTest(name = "{0} q{1} kv{2} d{3} n{4}")
    @CsvSource({"FP16, 32, 8, 128, 1000", "FP16, 16, 16, 128, 77", "FP16, 8, 2, 64, 513", "FP16, 4, 4, 256, 300",
            "FP16, 12, 4, 32, 65", "FP16, 6, 2, 128, 1", "FP16, 3, 1, 64, 32",
            "INT8, 32, 8, 128, 1000", "INT8, 8, 2, 64, 513", "INT8, 4, 4, 256, 300", "INT8, 12, 4, 32, 65",
            "INT8, 6, 2, 128, 1"})
    void matchesTheCpuBackend(StorageType type, int qHeads, int kvHeads, int headDim, int tokens) {
        ModelShape shape = new ModelShape(1, qHeads, kvHeads, headDim, 8, 2);
        double error = CudaKvCache.errorAgainstCpu(ComputeBackends.probe().backend(), shape, type, tokens,
                tokens * 31L + headDim);
        // Both sides read the same pages (int8: the same codec), so only the arithmetic differs: measured at most
        // 2.2e-6 on an H100 (docs/gpu.md); 1e-4 leaves room for other devices and still catches a dropped token.
        assertThat(error).isLessThanOrEqualTo(1e-4);
    }

    /**
     * With at most two splits, each split reads many pages (1,000 tokens: 32 pages, 16 a split), so a warp
     * rescales its running softmax across pages and the merge combines warps: paths that one wave of splits over a
     * short sequence (a page a split) never takes.
     */
    @ParameterizedTest(name = "{0} q{1} kv{2} d{3}")
    @CsvSource({"FP16, 8, 2, 32", "FP16, 8, 2, 64", "FP16, 32, 8, 128", "FP16, 4, 4, 256", "FP16, 6, 2, 128",
        "INT8, 8, 2, 32", "INT8, 8, 2, 64", "INT8, 32, 8, 128", "INT8, 4, 4, 256"})
    void manyPagesASplitMatchTheCpuBackend(StorageType type, int qHeads, int kvHeads, int headDim) {
        ModelShape shape = new ModelShape(1, qHeads, kvHeads, headDim, 8, 2);
        int cap = CudaKvCache.splitCap;
        CudaKvCache.splitCap = 2;
        try {
            double error = CudaKvCache.errorAgainstCpu(ComputeBackends.probe().backend(), shape, type, 1000,
                    headDim * 7L + qHeads);
            assertThat(error).isLessThanOrEqualTo(1e-4);
        } finally {
            CudaKvCache.splitCap = cap;
        }
    }

    /**
     * A shard attending on the device (its pages copied there as they change) gives its CPU answer after appends,
     * compaction, evictions and page reuse, for fp16 and int8 pages.
     */
    @ParameterizedTest(name = "{0}")
    @CsvSource({"FP16", "INT8"})
    void aShardAttendingOnTheDeviceMatchesItsCpuAnswer(StorageType type) {
        ModelShape shape = new ModelShape(1, 16, 4, 128, 8, 2);
        io.pikv.kv.KvLayout layout = new io.pikv.kv.KvLayout(4, 128, 32, type);
        io.pikv.kv.KvShard shard = new io.pikv.kv.KvShard(0, shape, layout, 4, 24L * layout.pageBytes(),
                io.pikv.kv.EvictionHook.OLDEST_PAGE_FIRST, Kernels.select(layout));
        try (CudaDeviceAttention device = new CudaDeviceAttention(ComputeBackends.probe().backend(), shape, type,
                24L * layout.pageBytes())) {
            shard.useDevice(device);
            java.util.Random rnd = new java.util.Random(type.ordinal() + 5);
            java.util.function.IntConsumer fill = n -> {
                for (int i = 0; i < n; i++) {
                    float[] k = new float[shape.kvWidth()];
                    float[] v = new float[shape.kvWidth()];
                    for (int j = 0; j < k.length; j++) {
                        k[j] = (float) rnd.nextGaussian();
                        v[j] = (float) rnd.nextGaussian();
                    }
                    shard.append(1, 0, next[0]++, rnd.nextInt(8), k, v);
                }
            };
            fill.accept(300);
            agree(shard, device, shape, rnd);
            // Withdrawals and evictions fill their holes with entries moved from a segment's tail (compaction).
            shard.withdraw(1, 0, new int[] {0, 7, 100, 299});
            shard.evict(1, 0, new int[] {3, 50, 51, 52, 200});
            agree(shard, device, shape, rnd);
            fill.accept(700); // beyond the budget: the oldest pages go and are reused
            agree(shard, device, shape, rnd);
            // A device error would have moved the shard to the CPU, and the answers compared the CPU with itself.
            assertThat(device.failed()).as("the device answered every call").isFalse();
        }
    }

    private final int[] next = {0};

    /** The device answers (a call it gave back to the CPU would compare the CPU with itself) and agrees with the CPU. */
    private static void agree(io.pikv.kv.KvShard shard, CudaDeviceAttention device, ModelShape shape,
                              java.util.Random rnd) {
        float[] q = new float[shape.queryWidth()];
        for (int i = 0; i < q.length; i++) {
            q[i] = (float) rnd.nextGaussian();
        }
        long before = device.answered();
        float[] onDevice = shard.attendPartial(1, 0, q, io.pikv.kv.AttentionScope.all(), false).finish().output();
        assertThat(device.answered()).as("the device answered the call").isEqualTo(before + 1);
        float[] onCpu = shard.attendPartial(1, 0, q, io.pikv.kv.AttentionScope.experts(0, 1, 2, 3, 4, 5, 6, 7), false)
                .finish().output();
        assertThat(io.pikv.kv.Accuracy.relativeError(onDevice, onCpu)).isLessThanOrEqualTo(1e-4);
    }
}
