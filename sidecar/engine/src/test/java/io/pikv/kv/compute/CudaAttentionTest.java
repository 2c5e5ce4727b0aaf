package io.pikv.kv.compute;

import io.pikv.kv.ModelShape;
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

    @ParameterizedTest(name = "q{0} kv{1} d{2} n{3}")
    @CsvSource({"32, 8, 128, 1000", "16, 16, 128, 77", "8, 2, 64, 513", "4, 4, 256, 300", "12, 4, 32, 65",
            "6, 2, 128, 1", "3, 1, 64, 32"})
    void matchesTheCpuBackend(int qHeads, int kvHeads, int headDim, int tokens) {
        ModelShape shape = new ModelShape(1, qHeads, kvHeads, headDim, 8, 2);
        double error = CudaKvCache.errorAgainstCpu(ComputeBackends.probe().backend(), shape, tokens,
                tokens * 31L + headDim);
        assertThat(error).isLessThanOrEqualTo(2e-3);
    }
}
