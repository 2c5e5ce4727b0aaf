package io.pikv.kv.compute;

import io.pikv.kv.KvLayout;

/**
 * Chooses the attention kernel: the Vector API kernel when the {@code jdk.incubator.vector} module is in the
 * boot layer and supports the page layout, the scalar kernel otherwise. {@code -Dpikv.kernel=scalar|vector|auto}
 * overrides the choice ({@code vector} fails when it cannot be honoured).
 */
public final class Kernels {
    private static final System.Logger LOG = System.getLogger(Kernels.class.getName());
    private static final String VECTOR_MODULE = "jdk.incubator.vector";
    private static final String VECTOR_KERNEL = "io.pikv.kv.compute.VectorKernel";

    private Kernels() {
    }

    /** Whether the Vector API module was resolved at start-up ({@code --add-modules jdk.incubator.vector}). */
    public static boolean vectorModulePresent() {
        return ModuleLayer.boot().findModule(VECTOR_MODULE).isPresent();
    }

    /** The kernel for this layout per the {@code pikv.kernel} system property (default {@code auto}). */
    public static AttentionKernel select(KvLayout layout) {
        return select(layout, System.getProperty("pikv.kernel", "auto"));
    }

    /** The kernel for this layout and preference ({@code auto}, {@code vector} or {@code scalar}). */
    public static AttentionKernel select(KvLayout layout, String preference) {
        switch (preference) {
            case "scalar":
                return new ScalarKernel();
            case "vector": {
                if (!vectorModulePresent()) {
                    throw new IllegalStateException("the vector kernel was asked for but the JVM was started without "
                            + "--add-modules " + VECTOR_MODULE + ": add it, or ask for auto or scalar");
                }
                AttentionKernel k = loadVector(); // vector fails loudly when it cannot be honoured
                if (!k.supports(layout)) {
                    throw new IllegalStateException("the vector kernel (" + k.name() + ") does not support " + layout
                            + ": it needs pageTokens and headDim to be multiples of its vector length and headDim of 4, "
                            + "at most 16 float lanes, for int8 pages at least 8, and no low-rank layout");
                }
                return k;
            }
            case "auto": {
                if (!vectorModulePresent()) {
                    LOG.log(System.Logger.Level.INFO, "attention kernel: scalar (start the JVM with --add-modules "
                            + VECTOR_MODULE + " for the Vector API kernel)");
                    return new ScalarKernel();
                }
                AttentionKernel k;
                try {
                    k = loadVector();
                } catch (IllegalStateException e) {
                    // auto never fails for want of the vector kernel: the scalar one answers the same.
                    LOG.log(System.Logger.Level.WARNING, "attention kernel: scalar ({0})", e.getMessage());
                    return new ScalarKernel();
                }
                if (!k.supports(layout)) {
                    LOG.log(System.Logger.Level.INFO, "attention kernel: scalar ({0} does not support {1})", k.name(), layout);
                    return new ScalarKernel();
                }
                return k;
            }
            default:
                throw new IllegalArgumentException("the attention kernel must be auto, vector or scalar, got '" + preference
                        + "'");
        }
    }

    private static AttentionKernel loadVector() {
        // Loaded by name so that no class referring to jdk.incubator.vector is linked when the module is absent.
        try {
            return (AttentionKernel) Class.forName(VECTOR_KERNEL).getDeclaredConstructor().newInstance();
        } catch (ReflectiveOperationException | LinkageError e) {
            throw new IllegalStateException("cannot load the vector kernel: " + e, e);
        }
    }
}
