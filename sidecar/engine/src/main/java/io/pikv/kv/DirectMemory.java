package io.pikv.kv;

/** The direct memory this JVM may allocate, where off-heap KV pages live. */
public final class DirectMemory {
    private DirectMemory() {
    }

    /** {@code -XX:MaxDirectMemorySize}, or when it is not set the JVM's default: the heap's maximum. */
    public static long limit() {
        long configured;
        try {
            var hotspot = java.lang.management.ManagementFactory.getPlatformMXBean(
                    com.sun.management.HotSpotDiagnosticMXBean.class);
            configured = hotspot == null ? 0 : Long.parseLong(hotspot.getVMOption("MaxDirectMemorySize").getValue());
        } catch (RuntimeException | LinkageError e) {
            configured = 0; // no jdk.management module: the JVM's default applies
        }
        return configured > 0 ? configured : Runtime.getRuntime().maxMemory();
    }

    private static final long LIMIT = limit();
    private static final java.lang.management.BufferPoolMXBean DIRECT = direct();

    private static java.lang.management.BufferPoolMXBean direct() {
        try {
            for (var pool : java.lang.management.ManagementFactory.getPlatformMXBeans(
                    java.lang.management.BufferPoolMXBean.class)) {
                if (pool.getName().equals("direct")) {
                    return pool;
                }
            }
        } catch (RuntimeException | LinkageError e) {
            // no management: allocations are tried and their failure caught
        }
        return null;
    }

    /**
     * Whether {@code bytes} more of direct buffers fit under {@link #limit()} now (buffers already released but not
     * yet collected still count, as they do for the JDK). True when it cannot be told.
     */
    public static boolean fits(long bytes) {
        return DIRECT == null || DIRECT.getTotalCapacity() + bytes <= LIMIT;
    }
}
