package io.pikv.kv.compute;

import io.pikv.kv.Accuracy;
import io.pikv.kv.KvStore;
import io.pikv.kv.KvStoreConfig;
import io.pikv.kv.ModelShape;
import io.pikv.kv.StorageType;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

import java.util.Random;

import static org.assertj.core.api.Assertions.assertThat;

/** CUDA attention against the CPU backend on the same tokens; skipped, with the reason, where no GPU is usable. */
class CudaAttentionTest {

    @BeforeEach
    void needsGpu() {
        ComputeBackends.Probe probe = ComputeBackends.probe();
        Assumptions.assumeTrue(probe.available(), () -> "no CUDA device, GPU tests skipped: " + probe.reason());
    }

    @ParameterizedTest(name = "q{0} kv{1} d{2} n{3}")
    @CsvSource({"32, 8, 128, 1000", "16, 16, 128, 77", "8, 2, 64, 513", "4, 4, 256, 300", "12, 4, 32, 65",
            "6, 2, 128, 1", "3, 1, 64, 32"})
    void matchesTheCpuBackend(int qHeads, int kvHeads, int headDim, int tokens) {
        ModelShape shape = new ModelShape(1, qHeads, kvHeads, headDim, 8, 2);
        Random rnd = new Random(tokens * 31L + headDim);
        CudaBackend cuda = ComputeBackends.probe().backend();
        try (KvStore cpu = new KvStore(KvStoreConfig.builder(shape).storageType(StorageType.FP16).pageTokens(32)
                .threads(1).build());
             CudaKvCache gpu = new CudaKvCache(cuda, shape, 64L << 20)) {
            long a = cpu.createSequence();
            long b = gpu.createSequence();
            for (int t = 0; t < tokens; t++) {
                float[] k = gaussian(shape.kvWidth(), rnd, t % 17 == 0 ? 3 : 1);
                float[] v = gaussian(shape.kvWidth(), rnd, 1);
                cpu.append(a, 0, rnd.nextInt(8), k, v);
                gpu.append(b, 0, k, v);
            }
            for (float scale : new float[] {1, 3}) {
                float[] q = gaussian(shape.queryWidth(), rnd, scale);
                float[] expected = cpu.attend(a, 0, q).output();
                float[] actual = gpu.attendPartial(b, 0, q).finish().output();
                assertThat(Accuracy.relativeError(actual, expected)).isLessThanOrEqualTo(2e-3);
            }
        }
    }

    static float[] gaussian(int n, Random rnd, float sigma) {
        float[] x = new float[n];
        for (int i = 0; i < n; i++) {
            x[i] = (float) (rnd.nextGaussian() * sigma);
        }
        return x;
    }
}
