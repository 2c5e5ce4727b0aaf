package io.pikv.operator.model;

/**
 * The operator-wide settings the desired-state builders need (from {@code pikv.operator.*}, see
 * {@code io.pikv.operator.config.OperatorConfig}); a plain record so that the model stays free of framework code.
 *
 * @param sidecarImage         image of the shard pods when a cluster does not name one
 * @param memoryOverheadBytes  container memory on top of the KV budget and the heap its entries need (their bookkeeping
 *                             and half of it again) when a cluster gives no memory: the JVM heap
 *                             (half of it), metaspace, threads and the HTTP server's buffers
 */
public record OperatorSettings(String sidecarImage, long memoryOverheadBytes) {

    public static final OperatorSettings DEFAULTS = new OperatorSettings("pikv/sidecar:0.1.0", 1L << 30);

    public OperatorSettings {
        if (sidecarImage == null || sidecarImage.isBlank()) {
            throw new IllegalArgumentException("pikv.operator.sidecar-image must name an image");
        }
        if (sidecarImage.chars().anyMatch(Character::isWhitespace)) {
            throw new IllegalArgumentException("pikv.operator.sidecar-image '" + sidecarImage
                    + "' is not an image reference (it holds whitespace)");
        }
        if (memoryOverheadBytes < PiKVClusterValidator.MIN_MEMORY_OVERHEAD_BYTES) {
            throw new IllegalArgumentException("pikv.operator.memory-overhead must be at least "
                    + (PiKVClusterValidator.MIN_MEMORY_OVERHEAD_BYTES >> 20) + "Mi, got " + memoryOverheadBytes + " bytes");
        }
    }
}
