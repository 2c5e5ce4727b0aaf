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
        Assumptions.assumeTrue(probe.available(), () -> "no CUDA device, GPU tests skipped: " + probe.reason());
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
        assertThat(error).isLessThanOrEqualTo(2e-3);
    }
}
