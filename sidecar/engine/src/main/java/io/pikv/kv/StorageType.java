package io.pikv.kv;

/**
 * Element type of stored K/V.
 *
 * <p>The 16-bit type is IEEE fp16, not bf16: KV activations stay far inside fp16's range (±65504),
 * and fp16's 10-bit mantissa rounds 8× finer than bf16's 7 bits (relative step 2^-11 vs 2^-8), which is
 * what keeps attention over 16-bit pages within 2e-3 of the exact answer. CUDA kernels read {@code __half}
 * natively, so the same pages serve both backends.
 *
 * <p>{@link #INT8} is the compressed page format ({@code io.pikv.kv.compression.Int8Codec}): symmetric 8-bit
 * integers with float scales, keys per channel (one scale per (head, dim) over the page's tokens, so outlier
 * channels do not crush the others) and values per token (one scale per (head, token)).
 */
public enum StorageType {
    FP32(4),
    FP16(2),
    INT8(1);

    private final int bytes;

    StorageType(int bytes) {
        this.bytes = bytes;
    }

    /** Bytes per element. */
    public int bytes() {
        return bytes;
    }

    /** Parses {@code fp32}/{@code fp16}/{@code int8} (case-insensitive), naming the accepted values when it fails. */
    public static StorageType parse(String text) {
        for (StorageType t : values()) {
            if (t.name().equalsIgnoreCase(text)) {
                return t;
            }
        }
        throw new IllegalArgumentException("unknown storage type '" + text + "': use fp32, fp16 or int8");
    }
}
