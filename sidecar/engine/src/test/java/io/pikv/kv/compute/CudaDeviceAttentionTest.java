package io.pikv.kv.compute;

import io.pikv.kv.KvLayout;
import io.pikv.kv.ModelShape;
import io.pikv.kv.StorageType;
import org.junit.jupiter.api.Test;

import static org.assertj.core.api.Assertions.assertThat;

/** Which shard layouts a CUDA device can attend over, decided before any device memory is taken. */
class CudaDeviceAttentionTest {
    @Test
    void refusalsNameWhatTheKernelsDoNotTake() {
        ModelShape shape = new ModelShape(1, 32, 8, 128, 8, 2);
        assertThat(CudaDeviceAttention.refusal(new KvLayout(8, 128, 32, StorageType.FP16), shape)).isNull();
        assertThat(CudaDeviceAttention.refusal(new KvLayout(8, 128, 32, StorageType.INT8), shape)).isNull();
        assertThat(CudaDeviceAttention.refusal(new KvLayout(8, 128, 32, StorageType.FP32), shape))
                .isEqualTo("the CUDA kernels read fp16 or int8 pages, not FP32");
        assertThat(CudaDeviceAttention.refusal(new KvLayout(8, 128, 16, StorageType.FP16), shape))
                .isEqualTo("the CUDA kernels take 32-token pages, not 16");
        assertThat(CudaDeviceAttention.refusal(new KvLayout(8, 48, 32, StorageType.FP16),
                new ModelShape(1, 32, 8, 48, 8, 2))).contains("head dim 32, 64, 128 or 256, got 48");
        assertThat(CudaDeviceAttention.refusal(new KvLayout(2, 128, 32, StorageType.FP16),
                new ModelShape(1, 32, 2, 128, 8, 2))).contains("at most 4 query heads per KV head, got 16");
        assertThat(CudaDeviceAttention.refusal(new KvLayout(8, 128, 32, StorageType.FP16, 32, 64), shape))
                .isEqualTo("low-rank pages are attended on the CPU");
    }
}
