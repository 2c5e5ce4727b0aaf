package io.pikv.kv.compute;

import io.pikv.kv.DeviceAttention;
import io.pikv.kv.KvLayout;
import io.pikv.kv.ModelShape;
import io.pikv.kv.Page;
import io.pikv.kv.PartialAttention;
import io.pikv.kv.StorageType;

import java.util.Arrays;
import java.util.BitSet;
import java.util.List;

/**
 * A shard's attention on a CUDA device: device copies of the shard's host pages (same bytes, same page format) in a
 * {@link CudaKvCache}'s device pool, brought up to date when the shard attends, and the split-K kernels over them. A
 * host page keeps its device page for life (host page ids are recycled with their pages, and a reused page is
 * rewritten, which marks it stale); when the device pool is full the shard attends on the CPU, and this says so once.
 * Thread-safe: attention calls are serialised on the device.
 */
public final class CudaDeviceAttention implements DeviceAttention {
    private static final System.Logger LOG = System.getLogger(CudaDeviceAttention.class.getName());

    private final CudaBackend cuda;
    private final CudaKvCache pages;
    /** Host page id → device page id + 1 (0: none yet). */
    private int[] deviceOf = new int[64];
    /** Host page ids whose device copy is current. */
    private final BitSet current = new BitSet();
    private boolean fullSaid;
    /** Set after a CUDA error other than memory short: attention then stays on the CPU, the device memory freed. */
    private volatile boolean failed;
    private long shortCalls;
    private long lastShortWarning;
    private boolean closed;
    /** Calls answered on the device. */
    private long answered;

    /**
     * @param deviceBytes device memory for page copies: at least the shard's page budget for all of them to fit
     */
    public CudaDeviceAttention(CudaBackend cuda, ModelShape shape, StorageType type, long deviceBytes) {
        this.cuda = cuda;
        this.pages = new CudaKvCache(cuda, shape, type, deviceBytes);
    }

    @Override
    public boolean supports(KvLayout layout) {
        KvLayout own = pages.layout();
        return !layout.projected() && layout.type() == own.type() && layout.pageTokens() == own.pageTokens()
                && layout.kvHeads() == own.kvHeads() && layout.headDim() == own.headDim()
                && layout.pageBytes() == own.pageBytes();
    }

    @Override
    public synchronized void pageChanged(Page page) {
        current.clear(page.id());
    }

    @Override
    public synchronized PartialAttention attend(List<Page> list, float[] query) {
        if (failed || closed) {
            return null;
        }
        try {
            PartialAttention result = attendOnDevice(list, query);
            if (result != null) {
                answered++;
            }
            return result;
        } catch (jcuda.CudaException e) {
            if (String.valueOf(e.getMessage()).contains("CUDA_ERROR_OUT_OF_MEMORY")) {
                // Device memory short for this call's buffers (others share the device): this call on the CPU. Once
                // a minute at most in the log, since every call of that size meets it again while memory is short.
                shortCalls++;
                long now = System.nanoTime();
                if (lastShortWarning == 0 || now - lastShortWarning > 60_000_000_000L) {
                    LOG.log(System.Logger.Level.WARNING, "{0}: device memory short for an attention call; it runs on "
                            + "the CPU ({1} such calls so far)", describe(), shortCalls);
                    lastShortWarning = now;
                }
                return null;
            }
            failed = true;
            LOG.log(System.Logger.Level.ERROR, describe() + " failed (" + e.getMessage() + "); this shard attends on "
                    + "the CPU from now on", e);
            close();
            return null;
        }
    }

    private PartialAttention attendOnDevice(List<Page> list, float[] query) {
        int n = list.size();
        int[] ids = new int[n];
        int[] counts = new int[n];
        for (int i = 0; i < n; i++) {
            Page page = list.get(i);
            int host = page.id();
            if (host >= deviceOf.length) {
                deviceOf = Arrays.copyOf(deviceOf, Math.max(deviceOf.length * 2, host + 1));
            }
            int device = deviceOf[host] - 1;
            if (device < 0) {
                device = pages.allocatePage();
                if (device < 0) {
                    if (!fullSaid) {
                        LOG.log(System.Logger.Level.WARNING, "{0}: device memory for {1} pages is full; attention "
                                + "that needs more pages runs on the CPU", describe(), pages.pool().maxPages());
                        fullSaid = true;
                    }
                    return null;
                }
                deviceOf[host] = device + 1;
            }
            if (!current.get(host)) {
                pages.writePage(device, page.bytes());
                current.set(host);
            }
            ids[i] = device;
            counts[i] = page.count();
        }
        return pages.attendPages(ids, counts, query);
    }

    /** Attention calls this device answered (a call it gave back to the CPU is not counted). */
    public synchronized long answered() {
        return answered;
    }

    @Override
    public String describe() {
        return "cuda " + cuda.deviceName();
    }

    @Override
    public synchronized void close() {
        if (!closed) {
            closed = true;
            pages.close();
        }
    }

    @Override
    public boolean failed() {
        return failed;
    }

    /**
     * Why pages of {@code layout} for {@code shape} cannot be attended on a CUDA device, or null when they can: checked
     * before any device memory is taken.
     */
    public static String refusal(KvLayout layout, ModelShape shape) {
        if (layout.projected()) {
            return "low-rank pages are attended on the CPU";
        }
        if (layout.type() != StorageType.FP16 && layout.type() != StorageType.INT8) {
            return "the CUDA kernels read fp16 or int8 pages, not " + layout.type();
        }
        if (layout.pageTokens() != CudaKvCache.PAGE_TOKENS) {
            return "the CUDA kernels take " + CudaKvCache.PAGE_TOKENS + "-token pages, not " + layout.pageTokens();
        }
        try {
            CudaKvCache.checkShape(shape);
        } catch (IllegalArgumentException e) {
            return e.getMessage();
        }
        return null;
    }
}
