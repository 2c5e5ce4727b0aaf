package io.pikv.kv.compute;

import jcuda.CudaException;
import jcuda.driver.CUcontext;
import jcuda.driver.CUdevice;
import jcuda.driver.CUdevice_attribute;
import jcuda.driver.CUfunction;
import jcuda.driver.CUmodule;
import jcuda.driver.JCudaDriver;

import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;

/**
 * A CUDA device driven through the JCuda driver API: its context and the PiKV kernels loaded from the PTX
 * shipped in this jar ({@code cuModuleLoadData}; the driver compiles PTX for the device). Opening it is the
 * probe: any {@link LinkageError} (no driver library) or {@link CudaException} becomes a
 * {@link CudaUnavailableException} with the reason.
 */
public final class CudaBackend implements AutoCloseable {
    static final String PTX_DIR = "/io/pikv/kv/compute/cuda/";

    private final CUcontext context;
    private volatile boolean closed;
    private final String deviceName;
    private final int major;
    private final int minor;
    private final int multiprocessors;
    private final long totalMemory;
    private final String ptxTarget;
    /** Entry points of the split-K partial kernels: page type and merge, then the head dim (32, 64, 128, 256). */
    private static final String[] PARTIAL_PREFIXES = {"pikv_decode_partial_d", "pikv_decode_partial_i8_d"};
    /** The split-K partial kernels by entry-point name. */
    private final java.util.Map<String, CUfunction> partials = new java.util.HashMap<>();
    final CUfunction merge = new CUfunction();
    final CUfunction append = new CUfunction();

    private CudaBackend(CUcontext context, String deviceName, int major, int minor, int multiprocessors,
                        long totalMemory, String ptxTarget) {
        this.context = context;
        this.deviceName = deviceName;
        this.major = major;
        this.minor = minor;
        this.multiprocessors = multiprocessors;
        this.totalMemory = totalMemory;
        this.ptxTarget = ptxTarget;
    }

    /** Opens device {@code ordinal}, or explains why it cannot. */
    public static CudaBackend open(int ordinal) {
        boolean found = false;
        String step = "cuInit"; // the driver call under way, for the message of a failure
        try {
            JCudaDriver.setExceptionsEnabled(true);
            try {
                JCudaDriver.cuInit(0);
            } catch (CudaException e) {
                // The driver is there: only "no device" means there is no GPU; any other failure (a driver that
                // does not match its kernel module, say) is a GPU that cannot be used.
                throw new CudaUnavailableException("CUDA error: " + firstLine(e), e,
                        !String.valueOf(e.getMessage()).contains("CUDA_ERROR_NO_DEVICE"));
            }
            int[] count = new int[1];
            step = "cuDeviceGetCount";
            JCudaDriver.cuDeviceGetCount(count);
            if (count[0] <= ordinal) {
                throw new CudaUnavailableException("no CUDA device " + ordinal + " (the driver reports " + count[0]
                        + ")", null);
            }
            found = true;
            step = "reading the attributes of device " + ordinal;
            CUdevice device = new CUdevice();
            JCudaDriver.cuDeviceGet(device, ordinal);
            byte[] name = new byte[256];
            JCudaDriver.cuDeviceGetName(name, name.length, device);
            int major = attribute(device, CUdevice_attribute.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR);
            int minor = attribute(device, CUdevice_attribute.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR);
            int sms = attribute(device, CUdevice_attribute.CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT);
            long[] memory = new long[1];
            JCudaDriver.cuDeviceTotalMem(memory, device);
            String target = ptxTarget(major);
            if (target == null) {
                throw new CudaUnavailableException("compute capability " + major + "." + minor
                        + " is below 8.0, the oldest PTX target PiKV ships (sm_80)", null, true);
            }
            String on = " on device " + ordinal + " (" + cString(name) + ")";
            step = "cuCtxCreate" + on;
            CUcontext context = new CUcontext();
            JCudaDriver.cuCtxCreate(context, 0, device);
            CudaBackend backend = new CudaBackend(context, cString(name), major, minor, sms, memory[0], target);
            CUmodule module = new CUmodule();
            try {
                byte[] ptx = ptx(target);
                step = "cuModuleLoadData (the " + target + " PTX)" + on;
                try {
                    JCudaDriver.cuModuleLoadData(module, ptx);
                } catch (CudaException e) {
                    if (String.valueOf(e.getMessage()).contains("UNSUPPORTED_PTX_VERSION")) {
                        throw new CudaUnavailableException("the driver is too old for the shipped PTX (ISA "
                                + ptxVersion(ptx) + "; ISA 9.0 needs driver 580 or newer): " + firstLine(e), e, true);
                    }
                    throw e;
                }
                for (int dim : new int[] {32, 64, 128, 256}) {
                    for (String prefix : PARTIAL_PREFIXES) {
                        String kernel = prefix + dim;
                        CUfunction f = new CUfunction();
                        step = "cuModuleGetFunction(" + kernel + ")" + on;
                        JCudaDriver.cuModuleGetFunction(f, module, kernel);
                        backend.partials.put(kernel, f);
                    }
                }
                step = "cuModuleGetFunction(pikv_decode_merge)" + on;
                JCudaDriver.cuModuleGetFunction(backend.merge, module, "pikv_decode_merge");
                step = "cuModuleGetFunction(pikv_append)" + on;
                JCudaDriver.cuModuleGetFunction(backend.append, module, "pikv_append");
            } catch (RuntimeException e) {
                // A driver too old for the PTX, or a kernel missing from it: give the context (and with it the
                // module) back, since the caller then runs on the CPU without this backend.
                try {
                    JCudaDriver.cuCtxDestroy(context);
                } catch (RuntimeException destroying) {
                    e.addSuppressed(destroying); // the reason the caller needs is the first one
                }
                throw e;
            }
            return backend;
        } catch (LinkageError e) {
            throw linkFailure(e, deviceNode());
        } catch (CudaException e) {
            throw new CudaUnavailableException("CUDA error in " + step + ": " + firstLine(e), e, found);
        } catch (CudaUnavailableException e) {
            throw found && !e.deviceFound() ? new CudaUnavailableException(e.getMessage(), e.getCause(), true) : e;
        }
    }

    /**
     * Why CUDA cannot be used when its libraries do not load: without the library nothing can be asked of a device;
     * its node ({@code node}, null when none is present) says whether one is there (a GPU whose use fails is not "no
     * GPU": JCuda's natives are linux-x86_64 only, and need a temp directory that runs).
     */
    static CudaUnavailableException linkFailure(LinkageError e, String node) {
        return node == null
                ? new CudaUnavailableException("the CUDA driver library cannot be loaded (" + linkReason(e) + ")", e)
                : new CudaUnavailableException("a GPU is there (" + node + ") but CUDA cannot be used from Java: "
                + "the CUDA driver library or JCuda's native library cannot be loaded (" + linkReason(e) + "; "
                + "PiKV ships JCuda's natives for linux-x86_64)", e, true);
    }

    /** The first NVIDIA device node present ({@code /dev/nvidia0}, {@code /dev/nvidiactl}), or null. */
    static String deviceNode() {
        for (String node : new String[] {"/dev/nvidia0", "/dev/nvidiactl"}) {
            if (java.nio.file.Files.exists(java.nio.file.Path.of(node))) {
                return node;
            }
        }
        return null;
    }

    /** The PTX ISA version a PTX text declares ({@code .version X.Y}), or "unknown". */
    static String ptxVersion(byte[] ptx) {
        java.util.regex.Matcher m = java.util.regex.Pattern.compile("(?m)^\\s*\\.version\\s+(\\d+\\.\\d+)")
                .matcher(new String(ptx, 0, Math.min(ptx.length, 4096), java.nio.charset.StandardCharsets.US_ASCII));
        return m.find() ? m.group(1) : "unknown";
    }

    /**
     * Why a native library did not load: JCuda's message starts with its own library's name and gives the system's
     * reason (a missing libcuda.so.1, a temporary directory it cannot write, …) further down, in the innermost error.
     */
    static String linkReason(Throwable e) {
        Throwable inner = e;
        while (inner.getCause() != null && inner.getCause() != inner) {
            inner = inner.getCause();
        }
        String best = firstLine(e);
        for (Throwable t : new Throwable[] {e, inner}) {
            for (String line : String.valueOf(t.getMessage()).split("\n")) {
                String l = line.strip();
                if (l.contains(".so") && (l.contains("cannot open") || l.contains("UnsatisfiedLinkError")
                        || l.contains("not found") || l.contains("No such file"))) {
                    String reason = l.replaceFirst("^.*UnsatisfiedLinkError:\\s*", "");
                    // Not the first line twice when it names the library itself.
                    best = reason.equals(firstLine(e)) ? reason : firstLine(e) + ": " + reason;
                }
            }
        }
        return best;
    }

    /** The PTX target for a compute capability major version (sm_90 for Hopper and newer, sm_80 for Ampere/Ada). */
    static String ptxTarget(int major) {
        return major >= 9 ? "sm_90" : major >= 8 ? "sm_80" : null;
    }

    /** The shipped PTX for {@code target}, NUL-terminated as cuModuleLoadData wants it. */
    static byte[] ptx(String target) {
        try (InputStream in = CudaBackend.class.getResourceAsStream(PTX_DIR + "pikv_attention." + target + ".ptx")) {
            if (in == null) {
                throw new CudaUnavailableException("PTX for " + target + " is missing from the jar", null);
            }
            byte[] text = in.readAllBytes();
            byte[] out = new byte[text.length + 1];
            System.arraycopy(text, 0, out, 0, text.length);
            return out;
        } catch (IOException e) {
            throw new CudaUnavailableException("cannot read the PTX for " + target + ": " + e.getMessage(), e);
        }
    }

    private static int attribute(CUdevice device, int attribute) {
        int[] v = new int[1];
        JCudaDriver.cuDeviceGetAttribute(v, attribute, device);
        return v[0];
    }

    private static String cString(byte[] bytes) {
        int n = 0;
        while (n < bytes.length && bytes[n] != 0) {
            n++;
        }
        return new String(bytes, 0, n, StandardCharsets.US_ASCII);
    }

    private static String firstLine(Throwable e) {
        String m = String.valueOf(e.getMessage());
        int nl = m.indexOf('\n');
        return nl < 0 ? m : m.substring(0, nl);
    }

    /** The partial kernel for this page type (fp16 or int8) and head dim. */
    CUfunction partial(io.pikv.kv.StorageType type, int headDim) {
        String name = "pikv_decode_partial_" + (type == io.pikv.kv.StorageType.INT8 ? "i8_" : "") + "d" + headDim;
        CUfunction f = partials.get(name);
        if (f == null) {
            throw new IllegalArgumentException("no partial kernel for head dim " + headDim);
        }
        return f;
    }

    /** Blocks of {@code threads} threads of {@code f} that fit on one multiprocessor at once. */
    int residentBlocks(CUfunction f, int threads) {
        int[] n = new int[1];
        JCudaDriver.cuOccupancyMaxActiveBlocksPerMultiprocessor(n, f, threads, 0);
        return Math.max(1, n[0]);
    }

    /** Makes this device's context current on the calling thread. */
    void bind() {
        if (closed) {
            throw new IllegalStateException("the CUDA backend on " + deviceName + " is closed");
        }
        JCudaDriver.cuCtxSetCurrent(context);
    }

    public String deviceName() {
        return deviceName;
    }

    public String computeCapability() {
        return major + "." + minor;
    }

    public int multiprocessors() {
        return multiprocessors;
    }

    public long totalMemory() {
        return totalMemory;
    }

    /** Device memory free now (other processes and this one's allocations taken). */
    public long freeMemory() {
        bind();
        long[] free = new long[1];
        long[] total = new long[1];
        JCudaDriver.cuMemGetInfo(free, total);
        return free[0];
    }

    public String ptxTarget() {
        return ptxTarget;
    }

    /** Destroys the context (and with it every allocation, module and stream made in it); once. */
    @Override
    public synchronized void close() {
        if (closed) {
            return;
        }
        closed = true;
        JCudaDriver.cuCtxDestroy(context);
    }
}
