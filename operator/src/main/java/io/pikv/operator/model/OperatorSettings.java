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

    /** Most a shard's JVM may be given beside its KV budget and bookkeeping when a cluster gives no memory. */
    public static final long MAX_MEMORY_OVERHEAD_BYTES = 64L << 30;

    public static final OperatorSettings DEFAULTS = new OperatorSettings("pikv/sidecar:0.1.0", 1L << 30);

    public OperatorSettings {
        if (sidecarImage == null || sidecarImage.isBlank()) {
            throw new IllegalArgumentException("pikv.operator.sidecar-image must name an image");
        }
        if (!PiKVClusterValidator.imageReference(sidecarImage)) {
            throw new IllegalArgumentException("pikv.operator.sidecar-image '" + sidecarImage + "' is not an image "
                    + "reference ([registry/]lower-case/path[:tag][@sha256:digest]): every shard pod would fail to "
                    + "pull it");
        }
        if (memoryOverheadBytes < PiKVClusterValidator.MIN_MEMORY_OVERHEAD_BYTES) {
            throw new IllegalArgumentException("pikv.operator.memory-overhead must be at least "
                    + (PiKVClusterValidator.MIN_MEMORY_OVERHEAD_BYTES >> 20) + "Mi, got " + memoryOverheadBytes + " bytes");
        }
        if (memoryOverheadBytes > MAX_MEMORY_OVERHEAD_BYTES) {
            throw new IllegalArgumentException("pikv.operator.memory-overhead must be at most "
                    + (MAX_MEMORY_OVERHEAD_BYTES >> 30) + "Gi (it is added to every shard that gives no memory), got "
                    + (memoryOverheadBytes >> 30) + "Gi");
        }
    }
}
