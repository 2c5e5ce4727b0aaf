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
}
