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
import io.pikv.kv.compression.Int8Codec;
import jcuda.driver.CUevent;
import jcuda.driver.CUfunction;
import jcuda.driver.CUgraph;
import jcuda.driver.CUgraphExec;
import jcuda.driver.CUstream;
import jcuda.driver.JCudaDriver;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.Arrays;
import java.util.List;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.Map;
import java.util.Random;

/**
 * Device-resident KV pages for sequences, with decode attention on the GPU. Pages use the engine's page formats
 * with 32-token pages (docs/engine.md): fp16, or the compressed int8 format, which the kernels dequantize on read.
 * They are allocated from one device slab under a byte budget ({@link DevicePagePool}). fp16 appends are copied
 * host→device and written by the append kernel; int8 appends are quantized on the host by {@link Int8Codec} (the
 * CPU store's codec, so both backends hold the same bytes) into a host copy of the sequence's last page, which is
 * then copied to the device. Attention runs the split-K partial kernel and the merge kernel ({@link Launch} says
 * how) and returns a {@link PartialAttention} in the same form as the CPU backend. Not thread-safe.
 */
public final class CudaKvCache implements AutoCloseable {
    /** The kernels' page size. */
    public static final int PAGE_TOKENS = 32;
    private static final int THREADS = 128;
    /** Upper bound on splits (bounds the partial buffers; one wave of blocks never comes near it). */
    private static final int MAX_SPLITS = 4096;
    /**
     * Splits a plan may use at most (for tests: a low cap gives each split many pages, which one wave of splits over
     * a short test sequence never does, so the kernels' rescaling across a split's pages and the merge across warps
     * get exercised).
     */
    static volatile int splitCap = MAX_SPLITS;
    /**
     * Waves of resident blocks the split-K grid fills ({@code -Dpikv.cuda.waves}, default 1): the grid is sized
     * to a whole number of waves from the kernel's occupancy, so no half-empty tail wave runs.
     */
    private static final int WAVES = Math.max(1, Integer.getInteger("pikv.cuda.waves", 1));

    /**
     * How a {@link Plan} launches a decode step: its two kernels enqueued one by one, or replayed as a CUDA graph
     * captured once when the plan is made (a plan serves repeated steps over one fixed page list, so the capture
     * is paid once; one-shot {@link #attendPartial} enqueues directly). Default {@code -Dpikv.cuda.graph=true}.
     */
    public record Launch(boolean graph) {
        public static Launch fromSystemProperties() {
            String value = System.getProperty("pikv.cuda.graph", "true");
            if (!value.equals("true") && !value.equals("false")) {
                throw new IllegalArgumentException("pikv.cuda.graph must be true or false, got '" + value + "'");
            }
            return new Launch(Boolean.parseBoolean(value));
        }

        @Override
        public String toString() {
            return graph ? "graph" : "stream";
        }
    }

    private final CudaBackend cuda;
    private final ModelShape shape;
    private final KvLayout layout;
    private final DevicePagePool pool;
    private final CUdeviceptr slab = new CUdeviceptr();
    private final CUdeviceptr staging = new CUdeviceptr();
    private final Map<Long, Layer[]> sequences = new HashMap<>();
    private long nextSequence;
    private boolean closed;

    /** Pages of one (sequence, layer): ids and token counts; only the last page may be partial. */
    private static final class Layer {
        int[] pages = new int[8];
        int n;
        int lastCount;
        /** int8: host copy of the last page, quantized here and copied to the device after each append. */
        ByteBuffer lastPage;
        /** int8: where the next append is encoded (a copy of the last page), taken as the last page once uploaded. */
        ByteBuffer spare;

        int tokens() {
            return n == 0 ? 0 : (n - 1) * PAGE_TOKENS + lastCount;
        }
    }

    /** An fp16 cache. */
    public CudaKvCache(CudaBackend cuda, ModelShape shape, long budgetBytes) {
        this(cuda, shape, StorageType.FP16, budgetBytes);
    }

    /** A cache of fp16 or int8 pages. */
    public CudaKvCache(CudaBackend cuda, ModelShape shape, StorageType type, long budgetBytes) {
        checkShape(shape);
        if (type != StorageType.FP16 && type != StorageType.INT8) {
            throw new IllegalArgumentException("the CUDA kernels read fp16 or int8 pages, not " + type);
        }
        this.cuda = cuda;
        this.shape = shape;
        this.layout = new KvLayout(shape.kvHeads(), shape.headDim(), PAGE_TOKENS, type);
        this.pool = new DevicePagePool(layout.pageBytes(), budgetBytes);
        cuda.bind();
        JCudaDriver.cuMemAlloc(slab, pool.slabBytes());
        try {
            JCudaDriver.cuMemAlloc(staging, 2L * shape.kvWidth() * Float.BYTES);
        } catch (RuntimeException e) {
            JCudaDriver.cuMemFree(slab);
            throw e;
        }
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
        checkOpen();
        long id = ++nextSequence;
        sequences.put(id, new Layer[shape.layers()]);
        return id;
    }

    private void checkOpen() {
        if (closed) {
            throw new IllegalStateException("the device KV cache is closed");
        }
    }

    public void closeSequence(long sequence) {
        checkOpen();
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

    /**
     * Appends one token (K and V: kvHeads × headDim floats each): fp16 through the append kernel, int8 quantized
     * on the host into the last page, which is copied to the device.
     */
    public void append(long sequence, int layer, float[] k, float[] v) {
        // The store's rule for every page type (within ±2^50, so that no dot product overflows; a null or short array
        // said as such), then fp16's own range.
        shape.checkKv("K", k);
        shape.checkKv("V", v);
        int width = shape.kvWidth();
        boolean half = layout.type() == StorageType.FP16;
        for (int i = 0; i < width; i++) {
            if (!Float.isFinite(k[i]) || !Float.isFinite(v[i])
                    || (half && (Math.abs(k[i]) > Fp16.MAX || Math.abs(v[i]) > Fp16.MAX))) {
                throw new IllegalArgumentException("K and V must be finite" + (half ? " and within ±65504 (fp16)" : "")
                        + ", element " + i + " is " + k[i] + " / " + v[i]);
            }
        }
        Layer l = layer(sequence, layer);
        int countBefore = l.lastCount;
        boolean added = l.n == 0 || l.lastCount == PAGE_TOKENS;
        if (added) {
            addPage(l);
        }
        try {
            write(l, k, v, half, width);
        } catch (RuntimeException | Error e) {
            if (added) {
                dropLastPage(l, countBefore); // a page the failed write left empty would stop later uploads
            }
            throw e;
        }
    }

    /** Writes one token at the end of the layer's last page (which has room) on the device. */
    private void write(Layer l, float[] k, float[] v, boolean half, int width) {
        cuda.bind();
        if (!half) {
            if (l.lastPage == null) {
                l.lastPage = ByteBuffer.allocateDirect(layout.pageBytes()).order(ByteOrder.LITTLE_ENDIAN);
            }
            if (l.spare == null) {
                l.spare = ByteBuffer.allocateDirect(layout.pageBytes()).order(ByteOrder.LITTLE_ENDIAN);
            }
            // Encoded into a copy, kept only once the device holds it: a token may widen a key channel's scale and
            // requantize the page's earlier tokens, which a failed upload must not leave in the host copy (the next
            // append would upload them, and the device page would differ from the tokens it accepted).
            ByteBuffer next = l.spare;
            next.clear();
            next.put(l.lastPage.duplicate().clear()).clear();
            Int8Codec.writeEntry(next, layout, l.lastCount, l.lastCount, k, 0, v, 0);
            JCudaDriver.cuMemcpyHtoD(slab.withByteOffset(pool.offset(l.pages[l.n - 1])), Pointer.to(next),
                    layout.pageBytes());
            l.spare = l.lastPage;
            l.lastPage = next;
            l.lastCount++;
            return;
        }
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
        int countBefore = l.lastCount;
        addPage(l);
        try {
            cuda.bind();
            JCudaDriver.cuMemcpyHtoD(slab.withByteOffset(pool.offset(l.pages[l.n - 1])), Pointer.to(page.slice()),
                    layout.pageBytes());
        } catch (RuntimeException | Error e) {
            dropLastPage(l, countBefore);
            throw e;
        }
        l.lastCount = count;
        if (layout.type() == StorageType.INT8 && count < PAGE_TOKENS) {
            // Later appends quantize into the host copy of this page.
            if (l.lastPage == null) {
                l.lastPage = ByteBuffer.allocateDirect(layout.pageBytes()).order(ByteOrder.LITTLE_ENDIAN);
            }
            l.lastPage.clear();
            l.lastPage.put(page.duplicate()).clear();
        }
    }

    /** Takes back the page {@link #addPage} just added, its slot free again and the count as before. */
    private void dropLastPage(Layer l, int countBefore) {
        pool.release(l.pages[--l.n]);
        l.lastCount = countBefore;
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
        checkOpen();
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
        try (Plan plan = plan(sequence, layer, new Launch(false))) {
            return plan.run(query);
        }
    }

    /** Device buffers for repeated attention over one (sequence, layer), launched the default way. */
    public Plan plan(long sequence, int layer) {
        return plan(sequence, layer, Launch.fromSystemProperties());
    }

    /**
     * Device buffers for repeated attention over one (sequence, layer); close it to free them. A plan reads the pages
     * the sequence held when it was made: it is for repeated calls over a fixed context (gpu-check's timing), and must
     * not be run after its sequence was closed (its pages may then hold another's) or appended to (new tokens are not
     * in it): make a new plan then.
     */
    public Plan plan(long sequence, int layer, Launch launch) {
        Layer l = layer(sequence, layer);
        if (l.n == 0) {
            throw new IllegalArgumentException("sequence " + sequence + " layer " + layer + " holds no tokens");
        }
        return new Plan(l, launch);
    }

    private static void allocate(List<CUdeviceptr> allocated, CUdeviceptr p, long bytes) {
        JCudaDriver.cuMemAlloc(p, bytes);
        allocated.add(p);
    }

    /** Token counts of a layer's pages: all full but the last. */
    private static int[] lastPartial(Layer l) {
        int[] c = new int[l.n];
        Arrays.fill(c, PAGE_TOKENS);
        c[l.n - 1] = l.lastCount;
        return c;
    }

    /**
     * Attention over device pages given by id (pages written with {@link #writePage}) holding the given token counts,
     * as a mergeable partial: for a caller that keeps its own page lists (a shard's device copy of its pool).
     */
    PartialAttention attendPages(int[] pageIds, int[] pageCounts, float[] query) {
        checkOpen();
        if (pageIds.length == 0 || pageIds.length != pageCounts.length) {
            throw new IllegalArgumentException("pages and counts must be non-empty and of one length");
        }
        // One plan kept between calls and pointed at each call's pages; replaced by a larger one when a list
        // outgrows it (twice the pages, so growth costs few reallocations).
        if (pagesPlan == null || !pagesPlan.retarget(pageIds, pageCounts)) {
            // The larger plan first: when the device cannot hold it, the kept one still serves the lists it fits.
            Plan larger = new Plan(pageIds, pageCounts, Math.max(64, 2 * pageIds.length), new Launch(false));
            if (pagesPlan != null) {
                pagesPlan.close();
            }
            pagesPlan = larger;
        }
        return pagesPlan.run(query);
    }

    /** The plan {@link #attendPages} reuses (one caller at a time), or null. */
    private Plan pagesPlan;

    /** A device page from this cache's pool, or -1 when the pool is at its budget. */
    int allocatePage() {
        checkOpen();
        return pool.allocate();
    }

    /** Copies a host page (a direct buffer in this cache's page format) into device page {@code id}. */
    void writePage(int id, ByteBuffer page) {
        checkOpen();
        if (page.remaining() != layout.pageBytes() || !page.isDirect()) {
            throw new IllegalArgumentException("a page is a direct buffer of " + layout.pageBytes() + " bytes");
        }
        cuda.bind();
        JCudaDriver.cuMemcpyHtoD(slab.withByteOffset(pool.offset(id)), Pointer.to(page.slice()), layout.pageBytes());
    }

    /** Launches of the partial and merge kernels over a fixed page list. */
    public final class Plan implements AutoCloseable {
        private final Launch launchMode;
        private final CUfunction partialKernel;
        private final CUstream stream = new CUstream();
        private CUgraph graph;
        private CUgraphExec graphExec;
        private boolean closed;
        private int numPages;
        private int pagesPerSplit;
        private int splits;
        private int tokens;
        /** Pages the page-list buffers hold, and splits the partial buffers hold (for {@link #retarget}). */
        private final int pageCapacity;
        private final int splitCapacity;
        private final CUdeviceptr ids = new CUdeviceptr();
        private final CUdeviceptr counts = new CUdeviceptr();
        private final CUdeviceptr q = new CUdeviceptr();
        private final CUdeviceptr pm = new CUdeviceptr();
        private final CUdeviceptr pl = new CUdeviceptr();
        private final CUdeviceptr po = new CUdeviceptr();
        private final CUdeviceptr m = new CUdeviceptr();
        private final CUdeviceptr ls = new CUdeviceptr();
        private final CUdeviceptr o = new CUdeviceptr();

        private Plan(Layer l, Launch launch) {
            this(Arrays.copyOf(l.pages, l.n), lastPartial(l), l.n, launch);
        }

        /**
         * Over device pages {@code pageIds} holding {@code pageCounts} tokens each (1 to 32), with page-list buffers
         * for {@code pageCapacity} pages and partial buffers for as many splits as one wave takes, so that
         * {@link #retarget} can point it at other page lists without allocating.
         */
        private Plan(int[] pageIds, int[] pageCounts, int pageCapacity, Launch launch) {
            cuda.bind();
            launchMode = launch;
            partialKernel = cuda.partial(layout.type(), shape.headDim());
            this.pageCapacity = Math.max(pageCapacity, pageIds.length);
            this.splitCapacity = Math.min(Math.min(this.pageCapacity, waveSplits()), MAX_SPLITS);
            int qh = shape.qHeads();
            int d = shape.headDim();
            List<CUdeviceptr> allocated = new ArrayList<>();
            boolean streamMade = false;
            boolean capturing = false;
            try {
                allocate(allocated, ids, 4L * this.pageCapacity);
                allocate(allocated, counts, 4L * this.pageCapacity);
                setPages(pageIds, pageCounts);
                allocate(allocated, q, 4L * qh * d);
                allocate(allocated, pm, 4L * splitCapacity * qh);
                allocate(allocated, pl, 4L * splitCapacity * qh);
                allocate(allocated, po, 4L * splitCapacity * qh * d);
                allocate(allocated, m, 4L * qh);
                allocate(allocated, ls, 4L * qh);
                allocate(allocated, o, 4L * qh * d);
                JCudaDriver.cuStreamCreate(stream, 0);
                streamMade = true;
                if (launch.graph()) {
                    CUgraph captured = new CUgraph();
                    CUgraphExec instance = new CUgraphExec();
                    JCudaDriver.cuStreamBeginCapture(stream, 1); // CU_STREAM_CAPTURE_MODE_THREAD_LOCAL
                    capturing = true;
                    enqueue();
                    capturing = false; // ended below, whether or not it succeeds
                    JCudaDriver.cuStreamEndCapture(stream, captured);
                    graph = captured;
                    JCudaDriver.cuGraphInstantiate(instance, captured, 0);
                    graphExec = instance;
                }
            } catch (RuntimeException e) {
                // Device memory short (or another CUDA error, the graph's capture included): what was made goes back
                // before the error does, since no plan reaches a caller who could close it. A capture the error
                // interrupted is ended first: a stream still capturing cannot be destroyed cleanly, and while it
                // captures the legacy stream (every synchronous copy of this process) cannot be used.
                if (capturing) {
                    CUgraph partial = new CUgraph();
                    quietly(() -> JCudaDriver.cuStreamEndCapture(stream, partial));
                    quietly(() -> JCudaDriver.cuGraphDestroy(partial)); // none made: refused, and quietly so
                }
                if (graph != null) {
                    quietly(() -> JCudaDriver.cuGraphDestroy(graph));
                }
                if (streamMade) {
                    quietly(() -> JCudaDriver.cuStreamDestroy(stream));
                }
                for (CUdeviceptr p : allocated) {
                    quietly(() -> JCudaDriver.cuMemFree(p));
                }
                throw e;
            }
        }

        public int splits() {
            return splits;
        }

        /** Splits of one wave of resident blocks (the grid this plan aims at). */
        private int waveSplits() {
            int slots = cuda.residentBlocks(partialKernel, THREADS) * cuda.multiprocessors();
            return (int) Math.min(Integer.MAX_VALUE, Math.max(1, (long) WAVES * slots / shape.kvHeads()));
        }

        /** Points the plan at these pages: the page list and counts are copied, the grid is sized for them. */
        private void setPages(int[] pageIds, int[] pageCounts) {
            numPages = pageIds.length;
            tokens = Arrays.stream(pageCounts).sum();
            int s = Math.max(1, Math.min(Math.min(numPages, waveSplits()), Math.min(splitCap, MAX_SPLITS)));
            pagesPerSplit = (numPages + s - 1) / s;
            splits = (numPages + pagesPerSplit - 1) / pagesPerSplit;
            JCudaDriver.cuMemcpyHtoD(ids, Pointer.to(pageIds), 4L * numPages);
            JCudaDriver.cuMemcpyHtoD(counts, Pointer.to(pageCounts), 4L * numPages);
        }

        /**
         * Points a plan enqueued stream by stream (not a graph) at another page list; false when its page-list
         * buffers are too small for it (then a larger plan is needed). The partial buffers always fit: a list of at
         * most {@code pageCapacity} pages takes at most {@code splitCapacity} splits.
         */
        boolean retarget(int[] pageIds, int[] pageCounts) {
            if (graphExec != null || pageIds.length > pageCapacity) {
                return false;
            }
            cuda.bind();
            setPages(pageIds, pageCounts);
            return true;
        }

        public Launch launchMode() {
            return launchMode;
        }

        /** Uploads the query (unscaled, qHeads × headDim), runs both kernels and reads the partial back. */
        public PartialAttention run(float[] query) {
            if (closed) {
                throw new IllegalStateException("this attention plan is closed");
            }
            checkOpen();
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
            if (closed) {
                throw new IllegalStateException("this attention plan is closed");
            }
            checkOpen(); // launching on a freed slab would leave the context with a sticky illegal-address error
            load(query);
            launch();
            launch();
            CUevent start = new CUevent();
            CUevent stop = new CUevent();
            double[] ms = new double[iterations];
            float[] elapsed = new float[1];
            JCudaDriver.cuEventCreate(start, 0);
            try {
                JCudaDriver.cuEventCreate(stop, 0);
                try {
                    for (int i = 0; i < iterations; i++) {
                        JCudaDriver.cuEventRecord(start, stream);
                        launch();
                        JCudaDriver.cuEventRecord(stop, stream);
                        JCudaDriver.cuEventSynchronize(stop);
                        JCudaDriver.cuEventElapsedTime(elapsed, start, stop);
                        ms[i] = elapsed[0];
                    }
                    JCudaDriver.cuEventRecord(start, stream);
                    for (int i = 0; i < iterations; i++) {
                        launch();
                    }
                    JCudaDriver.cuEventRecord(stop, stream);
                    JCudaDriver.cuEventSynchronize(stop);
                    JCudaDriver.cuEventElapsedTime(elapsed, start, stop);
                } finally {
                    quietly(() -> JCudaDriver.cuEventDestroy(stop));
                }
            } finally {
                quietly(() -> JCudaDriver.cuEventDestroy(start));
            }
            Arrays.sort(ms);
            return new double[] {ms[0], ms[iterations / 2], elapsed[0] / iterations};
        }

        private void load(float[] query) {
            float[] scaled = shape.scaledQuery(query);
            cuda.bind();
            JCudaDriver.cuMemcpyHtoD(q, Pointer.to(scaled), 4L * scaled.length);
        }

        private void launch() {
            if (graphExec != null) {
                JCudaDriver.cuGraphLaunch(graphExec, stream);
            } else {
                enqueue();
            }
        }

        private void enqueue() {
            Pointer partial = Pointer.to(Pointer.to(slab), Pointer.to(new long[] {pool.pageBytes()}), Pointer.to(ids),
                    Pointer.to(counts), Pointer.to(new int[] {numPages}), Pointer.to(new int[] {pagesPerSplit}),
                    Pointer.to(q), Pointer.to(new int[] {shape.kvHeads()}), Pointer.to(new int[] {shape.groupSize()}),
                    Pointer.to(pm), Pointer.to(pl), Pointer.to(po));
            JCudaDriver.cuLaunchKernel(partialKernel, splits, shape.kvHeads(), 1, THREADS, 1, 1, 0, stream, partial,
                    null);
            Pointer merge = Pointer.to(Pointer.to(pm), Pointer.to(pl), Pointer.to(po), Pointer.to(new int[] {splits}),
                    Pointer.to(new int[] {shape.qHeads()}), Pointer.to(new int[] {shape.headDim()}), Pointer.to(m),
                    Pointer.to(ls), Pointer.to(o));
            JCudaDriver.cuLaunchKernel(cuda.merge, shape.qHeads(), (shape.headDim() + 31) / 32, 1, 256, 1, 1, 0, stream,
                    merge, null);
        }

        @Override
        public void close() {
            if (closed) {
                return; // freeing twice could free another allocation that took the same address
            }
            closed = true;
            // Each resource freed on its own: after a lasting CUDA error one failing call must not keep the others
            // (binding the context included: a close that throws would skip the frees and the caller's fallback).
            quietly(cuda::bind);
            if (graphExec != null) {
                quietly(() -> JCudaDriver.cuGraphExecDestroy(graphExec));
                quietly(() -> JCudaDriver.cuGraphDestroy(graph));
            }
            quietly(() -> JCudaDriver.cuStreamSynchronize(stream));
            quietly(() -> JCudaDriver.cuStreamDestroy(stream));
            for (CUdeviceptr p : new CUdeviceptr[] {ids, counts, q, pm, pl, po, m, ls, o}) {
                quietly(() -> JCudaDriver.cuMemFree(p));
            }
        }
    }

    /** {@link #errorAgainstCpu(CudaBackend, ModelShape, StorageType, int, long)} for fp16 pages. */
    public static double errorAgainstCpu(CudaBackend cuda, ModelShape shape, int tokens, long seed) {
        return errorAgainstCpu(cuda, shape, StorageType.FP16, tokens, seed);
    }

    /**
     * Appends the same random tokens (N(0,1), every 17th key ×3 for peaky attention) to a CPU store and to a
     * device cache of {@code shape} with pages of {@code type} and returns the worst relative error
     * ({@link Accuracy}) of the device's attention over two queries (scales 1 and 3) against the CPU's. The CPU
     * store has one bucket, so both fill the same pages in the same order and, for int8, quantize them to the same
     * bytes. Used by the GPU tests and {@code ./pikv gpu-check}.
     */
    public static double errorAgainstCpu(CudaBackend cuda, ModelShape shape, StorageType type, int tokens, long seed) {
        Random rnd = new Random(seed);
        try (KvStore cpu = new KvStore(KvStoreConfig.builder(shape).storageType(type)
                .pageTokens(PAGE_TOKENS).buckets(1).threads(1).build());
             CudaKvCache gpu = new CudaKvCache(cuda, shape, type, 64L << 20)) {
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
        CUevent start = new CUevent();
        CUevent stop = new CUevent();
        // Each resource is released in its own finally: a failure (memory short for the second buffer) frees the first.
        JCudaDriver.cuMemAlloc(a, bytes);
        try {
            JCudaDriver.cuMemAlloc(b, bytes);
            try {
                JCudaDriver.cuMemsetD8(a, (byte) 1, bytes);
                JCudaDriver.cuMemcpyDtoD(b, a, bytes);
                JCudaDriver.cuEventCreate(start, 0);
                try {
                    JCudaDriver.cuEventCreate(stop, 0);
                    try {
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
                        return 2.0 * bytes / (best / 1e3) / 1e9;
                    } finally {
                        quietly(() -> JCudaDriver.cuEventDestroy(stop));
                    }
                } finally {
                    quietly(() -> JCudaDriver.cuEventDestroy(start));
                }
            } finally {
                quietly(() -> JCudaDriver.cuMemFree(b));
            }
        } finally {
            quietly(() -> JCudaDriver.cuMemFree(a));
        }
    }

    @Override
    public void close() {
        if (closed) {
            return; // freeing twice could free another allocation that took the same address
        }
        closed = true;
        if (pagesPlan != null) {
            pagesPlan.close();
            pagesPlan = null;
        }
        quietly(cuda::bind);
        quietly(() -> JCudaDriver.cuMemFree(slab));
        quietly(() -> JCudaDriver.cuMemFree(staging));
    }

    /** Runs a release call; a failure (the device already in an error state) is logged, not thrown. */
    private static void quietly(Runnable release) {
        try {
            release.run();
        } catch (RuntimeException e) {
            System.getLogger(CudaKvCache.class.getName()).log(System.Logger.Level.DEBUG, "CUDA release failed", e);
        }
    }
}
