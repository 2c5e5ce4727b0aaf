package io.pikv.kv.compute;

/**
 * Start-up choice of the compute backend, {@code pikv.compute=auto|cpu|cuda}: {@code auto} probes for a CUDA
 * device once and falls back to the CPU with one log line saying why; {@code cuda} without a usable device fails
 * with that reason; {@code cpu} never touches CUDA.
 */
public final class ComputeBackends {
    private static final System.Logger LOG = System.getLogger(ComputeBackends.class.getName());
    private static volatile Probe probe;

    private ComputeBackends() {
    }

    /** The outcome of the CUDA probe: a backend, or the reason there is none. */
    public record Probe(CudaBackend backend, String reason, boolean deviceFound) {
        public Probe(CudaBackend backend, String reason) {
            this(backend, reason, backend != null);
        }

        public boolean available() {
            return backend != null;
        }
    }

    /** Chosen backend: {@code cuda} with its device, or {@code cpu} with the reason CUDA is not used. */
    public record Selection(String kind, CudaBackend cuda, String detail) {
    }

    /** Probes CUDA once per JVM (device 0) and caches the answer. */
    public static Probe probe() {
        Probe p = probe;
        if (p == null) {
            synchronized (ComputeBackends.class) {
                p = probe;
                if (p == null) {
                    try {
                        p = new Probe(CudaBackend.open(0), null);
                    } catch (CudaUnavailableException e) {
                        p = new Probe(null, e.getMessage(), e.deviceFound());
                    }
                    probe = p;
                }
            }
        }
        return p;
    }

    public static Selection select(String preference) {
        switch (preference) {
            case "cpu":
                return new Selection("cpu", null, "pikv.compute=cpu");
            case "cuda": {
                Probe p = probe();
                if (!p.available()) {
                    throw new IllegalStateException("pikv.compute=cuda but no CUDA device can be used: " + p.reason());
                }
                return new Selection("cuda", p.backend(), p.backend().deviceName());
            }
            case "auto": {
                Probe p = probe();
                if (p.available()) {
                    LOG.log(System.Logger.Level.INFO, "compute backend: cuda on {0}", p.backend().deviceName());
                    return new Selection("cuda", p.backend(), p.backend().deviceName());
                }
                LOG.log(System.Logger.Level.INFO, "compute backend: cpu ({0})", p.reason());
                return new Selection("cpu", null, p.reason());
            }
            default:
                checkPreference(preference);
                throw new AssertionError(preference);
        }
    }

    /** Refuses a {@code pikv.compute} value other than auto, cpu or cuda. */
    public static void checkPreference(String preference) {
        if (!preference.equals("auto") && !preference.equals("cpu") && !preference.equals("cuda")) {
            throw new IllegalArgumentException("pikv.compute must be auto, cpu or cuda, got '" + preference + "'");
        }
    }
}
