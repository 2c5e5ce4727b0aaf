package io.pikv.kv.compute;

import io.pikv.kv.KvLayout;
import io.pikv.kv.StorageType;
import org.junit.jupiter.api.Test;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/**
 * Kernel selection. Surefire runs this class twice: with {@code --add-modules jdk.incubator.vector} (expects the
 * vector kernel) and in a JVM without it (expects the scalar fallback), per {@code pikv.expect.vector}.
 */
class KernelsWithoutVectorModuleTest {
    private static final boolean EXPECT_VECTOR = Boolean.parseBoolean(System.getProperty("pikv.expect.vector", "true"));
    private static final KvLayout LAYOUT = new KvLayout(8, 128, 32, StorageType.FP16);

    @Test
    void autoPicksTheBestKernelThisJvmCanRun() {
        assertThat(Kernels.vectorModulePresent()).isEqualTo(EXPECT_VECTOR);
        AttentionKernel kernel = Kernels.select(LAYOUT, "auto");
        if (EXPECT_VECTOR) {
            assertThat(kernel.name()).startsWith("vector-");
        } else {
            assertThat(kernel).isInstanceOf(ScalarKernel.class);
            assertThatThrownBy(() -> Kernels.select(LAYOUT, "vector"))
                    .hasMessageContaining("started without --add-modules jdk.incubator.vector");
        }
    }

    @Test
    void layoutsTheVectorKernelCannotTakeFallBackToScalar() {
        KvLayout odd = new KvLayout(3, 20, 8, StorageType.FP32);
        assertThat(Kernels.select(odd, "auto")).isInstanceOf(ScalarKernel.class);
        assertThat(Kernels.select(LAYOUT, "scalar")).isInstanceOf(ScalarKernel.class);
        if (EXPECT_VECTOR) {
            assertThatThrownBy(() -> Kernels.select(odd, "vector")).hasMessageContaining("multiples of its vector length");
        }
    }
}
