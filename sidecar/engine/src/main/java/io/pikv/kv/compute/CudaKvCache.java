package io.pikv.kv.compute;

import io.pikv.kv.Accuracy;
import io.pikv.kv.Fp16;
import io.pikv.kv.KvStore;
import io.pikv.kv.KvStoreConfig;
import io.pikv.kv.KvLayout;
import io.pikv.kv.ModelShape;
import io.pikv.kv.PartialAttention;
import io.pikv.kv.StorageType;
import io.pikv.kv.UnknownSequenceException;
import jcuda.Pointer;
import jcuda.driver.CUdeviceptr;
import jcuda.driver.CUevent;
import jcuda.driver.JCudaDriver;

import java.nio.ByteBuffer;
import java.util.Arrays;
import java.util.HashMap;
import java.util.Map;
import java.util.Random;

/**
 * Device-resident KV pages for sequences, with decode attention on the GPU. Pages use the engine's fp16 page
 * format with 32-token pages (docs/engine.md), allocated from one device slab under a byte budget
 * ({@link DevicePagePool}); appends are copied host→device and written by the append kernel; attention runs the
 * split-K partial kernel and the merge kernel and returns a {@link PartialAttention} in the same form as the CPU
 * backend. Not thread-safe.
 */
public final class CudaKvCache implements AutoCloseable {
    /** The kernels' page size. */
    public static final int PAGE_TOKENS = 32;
    private static final int THREADS = 128;
    /** The merge kernel keeps one weight per split in shared memory (PIKV_MAX_SPLITS in the .cu source). */
    private static final int MAX_SPLITS = 4096;
    /**
     * Waves of resident blocks the split-K grid fills ({@code -Dpikv.cuda.waves}, default 1): the grid is sized
     * to a whole number of waves from the kernel's occupancy, so no half-empty tail wave runs.
     */
    private static final int WAVES = Math.max(1, Integer.getInteger("pikv.cuda.waves", 1));

    private final CudaBackend cuda;
    private final ModelShape shape;
    private final KvLayout layout;
    private final DevicePagePool pool;
    private final CUdeviceptr slab = new CUdeviceptr();
    private final CUdeviceptr staging = new CUdeviceptr();
    private final Map<Long, Layer[]> sequences = new HashMap<>();
    private long nextSequence;

    /** Pages of one (sequence, layer): ids and token counts; only the last page may be partial. */
    private static final class Layer {
        int[] pages = new int[8];
        int n;
        int lastCount;

        int tokens() {
            return n == 0 ? 0 : (n - 1) * PAGE_TOKENS + lastCount;
        }
    }

    public CudaKvCache(CudaBackend cuda, ModelShape shape, long budgetBytes) {
        checkShape(shape);
        this.cuda = cuda;
        this.shape = shape;
        this.layout = new KvLayout(shape.kvHeads(), shape.headDim(), PAGE_TOKENS, StorageType.FP16);
        this.pool = new DevicePagePool(layout.pageBytes(), budgetBytes);
        cuda.bind();
        JCudaDriver.cuMemAlloc(slab, pool.slabBytes());
        JCudaDriver.cuMemAlloc(staging, 2L * shape.kvWidth() * Float.BYTES);
    }

    /** The shapes the kernels take: head dim 32, 64, 128 or 256 and at most four query heads per KV head. */
    public static void checkShape(ModelShape shape) {
        int d = shape.headDim();
        if (d != 32 && d != 64 && d != 128 && d != 256) {
            throw new IllegalArgumentException("the CUDA kernels take head dim 32, 64, 128 or 256, got " + d);
        }
        if (shape.groupSize() > 4) {
            throw new IllegalArgumentException("the CUDA kernels take at most 4 query heads per KV head, got "
                    + shape.groupSize());
        }
    }

    public KvLayout layout() {
        return layout;
    }

    public DevicePagePool pool() {
        return pool;
    }

    public long createSequence() {
        long id = ++nextSequence;
        sequences.put(id, new Layer[shape.layers()]);
        return id;
    }

    public void closeSequence(long sequence) {
        Layer[] layers = sequences.remove(sequence);
        if (layers == null) {
            throw new UnknownSequenceException(sequence);
        }
        for (Layer l : layers) {
            if (l != null) {
                for (int i = 0; i < l.n; i++) {
                    pool.release(l.pages[i]);
                }
            }
        }
    }

    public int tokens(long sequence, int layer) {
        Layer l = layer(sequence, layer);
        return l.tokens();
    }

    /** Appends one token (K and V: kvHeads × headDim floats each), through the append kernel. */
    public void append(long sequence, int layer, float[] k, float[] v) {
        int width = shape.kvWidth();
        if (k.length != width || v.length != width) {
            throw new IllegalArgumentException("K and V must hold kvHeads × headDim = " + width + " floats each");
        }
        for (int i = 0; i < width; i++) {
            if (!Float.isFinite(k[i]) || !Float.isFinite(v[i]) || Math.abs(k[i]) > Fp16.MAX || Math.abs(v[i]) > Fp16.MAX) {
                throw new IllegalArgumentException("K and V must be finite and within ±65504 (fp16), element " + i
                        + " is " + k[i] + " / " + v[i]);
            }
        }
        Layer l = layer(sequence, layer);
        if (l.n == 0 || l.lastCount == PAGE_TOKENS) {
            addPage(l);
        }
        cuda.bind();
        float[] kv = new float[2 * width];
        System.arraycopy(k, 0, kv, 0, width);
        System.arraycopy(v, 0, kv, width, width);
        JCudaDriver.cuMemcpyHtoD(staging, Pointer.to(kv), (long) kv.length * Float.BYTES);
        Pointer params = Pointer.to(Pointer.to(slab), Pointer.to(new long[] {pool.pageBytes()}),
                Pointer.to(new int[] {l.pages[l.n - 1]}), Pointer.to(new int[] {l.lastCount}), Pointer.to(staging),
                Pointer.to(new int[] {shape.kvHeads()}), Pointer.to(new int[] {shape.headDim()}),
                Pointer.to(new int[] {PAGE_TOKENS}));
        JCudaDriver.cuLaunchKernel(cuda.append, (width + 127) / 128, 1, 1, 128, 1, 1, 0, null, params, null);
        JCudaDriver.cuCtxSynchronize();
        l.lastCount++;
    }

    /**
     * Uploads a whole page built on the host in the same format (e.g. a CPU page's bytes) holding {@code count}
     * tokens; appends after a partial last page are not allowed (the page list stays dense).
     */
    public void uploadPage(long sequence, int layer, ByteBuffer page, int count) {
        if (page.remaining() != layout.pageBytes() || !page.isDirect()) {
            throw new IllegalArgumentException("a page is a direct buffer of " + layout.pageBytes() + " bytes");
        }
        if (count < 1 || count > PAGE_TOKENS) {
            throw new IllegalArgumentException("count must be in [1, " + PAGE_TOKENS + "], got " + count);
        }
        Layer l = layer(sequence, layer);
        if (l.n > 0 && l.lastCount != PAGE_TOKENS) {
            throw new IllegalStateException("the last page of sequence " + sequence + " layer " + layer
                    + " is partial; upload whole pages before appending tokens");
        }
        addPage(l);
        cuda.bind();
        JCudaDriver.cuMemcpyHtoD(slab.withByteOffset(pool.offset(l.pages[l.n - 1])), Pointer.to(page),
                layout.pageBytes());
        l.lastCount = count;
    }

    private void addPage(Layer l) {
        int id = pool.allocate();
        if (id < 0) {
            throw new io.pikv.kv.KvBudgetExceededException("device pool is at its budget of " + pool.slabBytes()
                    + " bytes (" + pool.maxPages() + " pages)");
        }
        if (l.n == l.pages.length) {
            l.pages = Arrays.copyOf(l.pages, l.n * 2);
        }
        l.pages[l.n++] = id;
        l.lastCount = 0;
    }

    private Layer layer(long sequence, int layer) {
        Layer[] layers = sequences.get(sequence);
        if (layers == null) {
            throw new UnknownSequenceException(sequence);
        }
        if (layer < 0 || layer >= layers.length) {
            throw new IllegalArgumentException("layer " + layer + " is out of range: the model has " + layers.length
                    + " layers");
        }
        if (layers[layer] == null) {
            layers[layer] = new Layer();
        }
        return layers[layer];
    }

    /** Attention over all of (sequence, layer) on the device, as a mergeable partial. */
    public PartialAttention attendPartial(long sequence, int layer, float[] query) {
        try (Plan plan = plan(sequence, layer)) {
            return plan.run(query);
        }
    }

    /** Device buffers for repeated attention over one (sequence, layer); close it to free them. */
    public Plan plan(long sequence, int layer) {
        Layer l = layer(sequence, layer);
        if (l.n == 0) {
            throw new IllegalArgumentException("sequence " + sequence + " layer " + layer + " holds no tokens");
        }
        return new Plan(l);
    }

    /** Launches of the partial and merge kernels over a fixed page list. */
    public final class Plan implements AutoCloseable {
        private final jcuda.driver.CUfunction partialKernel;
        private final int numPages;
        private final int pagesPerSplit;
        private final int splits;
        private final int tokens;
        private final CUdeviceptr ids = new CUdeviceptr();
        private final CUdeviceptr counts = new CUdeviceptr();
        private final CUdeviceptr q = new CUdeviceptr();
        private final CUdeviceptr pm = new CUdeviceptr();
        private final CUdeviceptr pl = new CUdeviceptr();
        private final CUdeviceptr po = new CUdeviceptr();
        private final CUdeviceptr m = new CUdeviceptr();
        private final CUdeviceptr ls = new CUdeviceptr();
        private final CUdeviceptr o = new CUdeviceptr();

        private Plan(Layer l) {
            cuda.bind();
            numPages = l.n;
            tokens = l.tokens();
            partialKernel = cuda.partial(shape.headDim());
            int slots = cuda.residentBlocks(partialKernel, THREADS) * cuda.multiprocessors();
            int target = Math.max(1, WAVES * slots / shape.kvHeads());
            int s = Math.min(Math.min(numPages, target), MAX_SPLITS);
            pagesPerSplit = (numPages + s - 1) / s;
            splits = (numPages + pagesPerSplit - 1) / pagesPerSplit;
            int[] c = new int[numPages];
            Arrays.fill(c, PAGE_TOKENS);
            c[numPages - 1] = l.lastCount;
            int qh = shape.qHeads();
            int d = shape.headDim();
            JCudaDriver.cuMemAlloc(ids, 4L * numPages);
            JCudaDriver.cuMemAlloc(counts, 4L * numPages);
            JCudaDriver.cuMemcpyHtoD(ids, Pointer.to(Arrays.copyOf(l.pages, numPages)), 4L * numPages);
            JCudaDriver.cuMemcpyHtoD(counts, Pointer.to(c), 4L * numPages);
            JCudaDriver.cuMemAlloc(q, 4L * qh * d);
            JCudaDriver.cuMemAlloc(pm, 4L * splits * qh);
            JCudaDriver.cuMemAlloc(pl, 4L * splits * qh);
            JCudaDriver.cuMemAlloc(po, 4L * splits * qh * d);
            JCudaDriver.cuMemAlloc(m, 4L * qh);
            JCudaDriver.cuMemAlloc(ls, 4L * qh);
            JCudaDriver.cuMemAlloc(o, 4L * qh * d);
        }

        public int splits() {
            return splits;
        }

        /** Uploads the query (unscaled, qHeads × headDim), runs both kernels and reads the partial back. */
        public PartialAttention run(float[] query) {
            load(query);
            launch();
            JCudaDriver.cuCtxSynchronize();
            int qh = shape.qHeads();
            int d = shape.headDim();
            float[] hm = new float[qh];
            float[] hl = new float[qh];
            float[] ho = new float[qh * d];
            JCudaDriver.cuMemcpyDtoH(Pointer.to(hm), m, 4L * qh);
            JCudaDriver.cuMemcpyDtoH(Pointer.to(hl), ls, 4L * qh);
            JCudaDriver.cuMemcpyDtoH(Pointer.to(ho), o, 4L * qh * d);
            double[] dm = new double[qh];
            double[] dl = new double[qh];
            double[] dout = new double[qh * d];
            for (int h = 0; h < qh; h++) {
                dm[h] = hm[h];
                dl[h] = hl[h];
            }
            for (int i = 0; i < dout.length; i++) {
                dout[i] = ho[i];
            }
            return new PartialAttention(qh, d, dm, dl, dout, tokens, null, null);
        }

        /**
         * Device time of attention steps after two warm-ups, in milliseconds: {@code [best, median]} of
         * {@code iterations} single steps each timed alone (includes the gap while the host enqueues the
         * launch), and {@code [2]} the mean of {@code iterations} steps enqueued back to back (the kernels'
         * own throughput, as in a serving loop that keeps the stream busy).
         */
        public double[] time(float[] query, int iterations) {
            load(query);
            launch();
            launch();
            CUevent start = new CUevent();
            CUevent stop = new CUevent();
            JCudaDriver.cuEventCreate(start, 0);
            JCudaDriver.cuEventCreate(stop, 0);
            double[] ms = new double[iterations];
            float[] elapsed = new float[1];
            for (int i = 0; i < iterations; i++) {
                JCudaDriver.cuEventRecord(start, null);
                launch();
                JCudaDriver.cuEventRecord(stop, null);
                JCudaDriver.cuEventSynchronize(stop);
                JCudaDriver.cuEventElapsedTime(elapsed, start, stop);
                ms[i] = elapsed[0];
            }
            JCudaDriver.cuEventRecord(start, null);
            for (int i = 0; i < iterations; i++) {
                launch();
            }
            JCudaDriver.cuEventRecord(stop, null);
            JCudaDriver.cuEventSynchronize(stop);
            JCudaDriver.cuEventElapsedTime(elapsed, start, stop);
            JCudaDriver.cuEventDestroy(start);
            JCudaDriver.cuEventDestroy(stop);
            Arrays.sort(ms);
            return new double[] {ms[0], ms[iterations / 2], elapsed[0] / iterations};
        }

        private void load(float[] query) {
            float[] scaled = shape.scaledQuery(query);
            cuda.bind();
            JCudaDriver.cuMemcpyHtoD(q, Pointer.to(scaled), 4L * scaled.length);
        }

        private void launch() {
            Pointer partial = Pointer.to(Pointer.to(slab), Pointer.to(new long[] {pool.pageBytes()}), Pointer.to(ids),
                    Pointer.to(counts), Pointer.to(new int[] {numPages}), Pointer.to(new int[] {pagesPerSplit}),
                    Pointer.to(q), Pointer.to(new int[] {shape.kvHeads()}), Pointer.to(new int[] {shape.groupSize()}),
                    Pointer.to(pm), Pointer.to(pl), Pointer.to(po));
            JCudaDriver.cuLaunchKernel(partialKernel, splits, shape.kvHeads(), 1, THREADS, 1, 1, 0, null, partial, null);
            Pointer merge = Pointer.to(Pointer.to(pm), Pointer.to(pl), Pointer.to(po), Pointer.to(new int[] {splits}),
                    Pointer.to(new int[] {shape.qHeads()}), Pointer.to(new int[] {shape.headDim()}), Pointer.to(m),
                    Pointer.to(ls), Pointer.to(o));
            JCudaDriver.cuLaunchKernel(cuda.merge, shape.qHeads(), (shape.headDim() + 31) / 32, 1, 256, 1, 1, 0, null,
                    merge, null);
        }

        @Override
        public void close() {
            cuda.bind();
            for (CUdeviceptr p : new CUdeviceptr[] {ids, counts, q, pm, pl, po, m, ls, o}) {
                JCudaDriver.cuMemFree(p);
            }
        }
    }

    /**
     * Appends the same random tokens (N(0,1), every 17th key ×3 for peaky attention) to a CPU store and to a
     * device cache of {@code shape} and returns the worst relative error ({@link Accuracy}) of the device's
     * attention over two queries (scales 1 and 3). Used by the GPU tests and {@code ./pikv gpu-check}.
     */
    public static double errorAgainstCpu(CudaBackend cuda, ModelShape shape, int tokens, long seed) {
        Random rnd = new Random(seed);
        try (KvStore cpu = new KvStore(KvStoreConfig.builder(shape).storageType(StorageType.FP16)
                .pageTokens(PAGE_TOKENS).threads(1).build());
             CudaKvCache gpu = new CudaKvCache(cuda, shape, 64L << 20)) {
            long a = cpu.createSequence();
            long b = gpu.createSequence();
            for (int t = 0; t < tokens; t++) {
                float[] k = gaussian(shape.kvWidth(), rnd, t % 17 == 0 ? 3 : 1);
                float[] v = gaussian(shape.kvWidth(), rnd, 1);
                cpu.append(a, 0, rnd.nextInt(shape.experts()), k, v);
                gpu.append(b, 0, k, v);
            }
            double worst = 0;
            for (float scale : new float[] {1, 3}) {
                float[] q = gaussian(shape.queryWidth(), rnd, scale);
                worst = Math.max(worst, Accuracy.relativeError(gpu.attendPartial(b, 0, q).finish().output(),
                        cpu.attend(a, 0, q).output()));
            }
            return worst;
        }
    }

    private static float[] gaussian(int n, Random rnd, float sigma) {
        float[] x = new float[n];
        for (int i = 0; i < n; i++) {
            x[i] = (float) (rnd.nextGaussian() * sigma);
        }
        return x;
    }

    /** Device-to-device copy bandwidth (bytes read plus written per second, GB/s), best of {@code iterations}. */
    public static double copyBandwidthGbps(CudaBackend cuda, long bytes, int iterations) {
        cuda.bind();
        CUdeviceptr a = new CUdeviceptr();
        CUdeviceptr b = new CUdeviceptr();
        JCudaDriver.cuMemAlloc(a, bytes);
        JCudaDriver.cuMemAlloc(b, bytes);
        try {
            JCudaDriver.cuMemsetD8(a, (byte) 1, bytes);
            JCudaDriver.cuMemcpyDtoD(b, a, bytes);
            CUevent start = new CUevent();
            CUevent stop = new CUevent();
            JCudaDriver.cuEventCreate(start, 0);
            JCudaDriver.cuEventCreate(stop, 0);
            float[] elapsed = new float[1];
            double best = Double.MAX_VALUE;
            for (int i = 0; i < iterations; i++) {
                JCudaDriver.cuEventRecord(start, null);
                JCudaDriver.cuMemcpyDtoD(b, a, bytes);
                JCudaDriver.cuEventRecord(stop, null);
                JCudaDriver.cuEventSynchronize(stop);
                JCudaDriver.cuEventElapsedTime(elapsed, start, stop);
                best = Math.min(best, elapsed[0]);
            }
            JCudaDriver.cuEventDestroy(start);
            JCudaDriver.cuEventDestroy(stop);
            return 2.0 * bytes / (best / 1e3) / 1e9;
        } finally {
            JCudaDriver.cuMemFree(a);
            JCudaDriver.cuMemFree(b);
        }
    }

    @Override
    public void close() {
        cuda.bind();
        JCudaDriver.cuMemFree(slab);
        JCudaDriver.cuMemFree(staging);
    }
}
