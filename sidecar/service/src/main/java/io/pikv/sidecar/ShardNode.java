package io.pikv.sidecar;

import io.pikv.kv.AttentionScope;
import io.pikv.kv.ExpertShardMap;
import io.pikv.kv.KvLayout;
import io.pikv.kv.KvBudgetExceededException;
import io.pikv.kv.KvShard;
import io.pikv.kv.ModelShape;
import io.pikv.kv.PartialAttention;
import io.pikv.kv.ShardStats;
import io.pikv.kv.StorageType;
import io.pikv.kv.UnknownSequenceException;
import io.pikv.kv.compute.Kernels;
import io.pikv.kv.routing.HashRouter;
import io.pikv.sidecar.wire.Wire;

import java.util.Arrays;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.atomic.AtomicLong;

/**
 * The KV of one shard: the engine's {@link KvShard} plus the sequences it knows and, per (sequence, layer), the next
 * position. Requests that carry several entries are atomic: when one entry fails (bad value, budget), the entries
 * already stored are withdrawn and the shard is as before. Thread-safe; a sequence's writes are serialized.
 */
public final class ShardNode implements KvApi, AutoCloseable {
    /** The JDK's logger: a shard node also runs outside the Quarkus app (benches, in-process tests). */
    private static final System.Logger LOG = System.getLogger(ShardNode.class.getName());
    private final int id;
    private final ModelShape shape;
    private final ShardPolicy policy;
    /** PyramidKV budgets per (sequence, layer), or null (none). */
    private final ShardPyramid pyramid;
    private final KvShard shard;
    private final HashRouter router;
    private final ExpertShardMap localMap;
    /** Threads one attention call uses (the request's own plus {@link #attentionPool}'s); 1: the request's only. */
    private final int attentionThreads;
    private final ExecutorService attentionPool;
    private final Map<Long, SequenceState> sequences = new ConcurrentHashMap<>();
    private final AtomicLong nextId = new AtomicLong();

    /** Next position per layer; the object is also the sequence's write lock. */
    private static final class SequenceState {
        final int[] length;
        /** Entries stored per layer on this shard (evicted ones included, withdrawn ones not): pyramid budgets. */
        final int[] stored;
        /** Set (under this object's lock) before a close drops the entries: a reader that took no lock checks it. */
        volatile boolean closed;
        /** When a call last looked the sequence up ({@link System#nanoTime}): idle sequences are closed. */
        volatile long lastUsed = System.nanoTime();

        SequenceState(int layers) {
            this.length = new int[layers];
            this.stored = new int[layers];
        }
    }

    /** Direct memory kept for the HTTP server's and clients' own buffers when a budget grows at runtime. */
    static final long SERVER_DIRECT_MEMORY = 64L << 20;

    /** A shard whose attention runs on the calling thread only. */
    public ShardNode(int id, ModelShape shape, StorageType type, int pageTokens, int buckets, long budgetBytes,
                     ShardPolicy policy) {
        this(id, shape, type, pageTokens, buckets, budgetBytes, policy, 1);
    }

    /**
     * @param attentionThreads threads one attention call splits the buckets over (the caller's and
     *                         {@code attentionThreads - 1} pool threads), at most the buckets
     */
    public ShardNode(int id, ModelShape shape, StorageType type, int pageTokens, int buckets, long budgetBytes,
                     ShardPolicy policy, int attentionThreads) {
        this(id, shape, type, pageTokens, buckets, budgetBytes, policy, attentionThreads, null);
    }

    /**
     * @param pyramid PyramidKV budgets per (sequence, layer), enforced after each attention over it; null: none
     */
    public ShardNode(int id, ModelShape shape, StorageType type, int pageTokens, int buckets, long budgetBytes,
                     ShardPolicy policy, int attentionThreads, ShardPyramid pyramid) {
        this(id, shape, type, pageTokens, buckets, budgetBytes, policy, attentionThreads, pyramid, null);
    }

    /**
     * @param kernel the CPU attention kernel ({@code auto}, {@code vector} or {@code scalar}); null: the JVM's
     *               {@code pikv.kernel} property, else auto
     * @throws IllegalArgumentException on a setting out of range, or a kernel this JVM or layout cannot run
     */
    public ShardNode(int id, ModelShape shape, StorageType type, int pageTokens, int buckets, long budgetBytes,
                     ShardPolicy policy, int attentionThreads, ShardPyramid pyramid, String kernel) {
        if (attentionThreads < 1) {
            throw new IllegalArgumentException("attention threads must be >= 1, got " + attentionThreads);
        }
        KvLayout layout = new KvLayout(shape.kvHeads(), shape.headDim(), pageTokens, type);
        if (budgetBytes < layout.pageBytes()) {
            throw new IllegalArgumentException("the budget (" + budgetBytes + " bytes) is less than one page of "
                    + layout.pageBytes() + " bytes");
        }
        this.id = id;
        this.shape = shape;
        this.policy = policy;
        this.pyramid = pyramid;
        io.pikv.kv.compute.AttentionKernel cpuKernel;
        try {
            cpuKernel = kernel == null ? Kernels.select(layout) : Kernels.select(layout, kernel);
        } catch (IllegalStateException e) { // vector asked for and not available: a setting this JVM cannot keep
            throw new IllegalArgumentException(e.getMessage(), e);
        }
        this.shard = new KvShard(id, shape, layout, buckets, budgetBytes, policy, cpuKernel);
        policy.onSwitch(this::tellResident);
        this.router = new HashRouter(shape.topK());
        this.localMap = ExpertShardMap.roundRobin(shape.experts(), 1);
        this.attentionThreads = Math.min(attentionThreads, buckets);
        this.attentionPool = this.attentionThreads > 1 ? Executors.newFixedThreadPool(this.attentionThreads - 1, r -> {
            Thread t = new Thread(r, "pikv-attention-" + THREADS.incrementAndGet());
            t.setDaemon(true);
            return t;
        }) : null;
    }

    private static final AtomicLong THREADS = new AtomicLong();

    /**
     * Applies {@code pikv.compute} ({@code auto}, {@code cpu} or {@code cuda}): a layout the CUDA kernels cannot take
     * is decided before CUDA is probed (no device context is made for a shard that could not use it); {@code cuda}
     * then stops start-up with the reason, {@code auto} logs it and stays on the CPU.
     */
    public void useCompute(String compute) {
        io.pikv.kv.compute.ComputeBackends.checkPreference(compute);
        if (compute.equals("cpu")) {
            return;
        }
        if (pyramid != null) {
            // Fixed for the shard's life (unlike a token policy, which a control record may switch): no device.
            String why = "pyramid budgets (pikv.store.pyramid.budget) choose the tokens kept by attention weights, "
                    + "which the CUDA kernels do not compute";
            if (compute.equals("cuda")) {
                throw new IllegalStateException("pikv.compute=cuda but " + why + "; turn one of them off");
            }
            LOG.log(System.Logger.Level.INFO, "shard {0}: attention on the CPU: {1}", id, why);
            return;
        }
        String refused = io.pikv.kv.compute.CudaDeviceAttention.refusal(shard.layout(), shape);
        if (refused == null) {
            io.pikv.kv.compute.ComputeBackends.Selection selection = io.pikv.kv.compute.ComputeBackends.select(compute);
            if (selection.cuda() != null) {
                attendOn(selection.cuda(), compute.equals("cuda"));
            }
        } else if (compute.equals("cuda")) {
            throw new IllegalStateException("pikv.compute=cuda but this shard's pages cannot be attended on a CUDA "
                    + "device: " + refused);
        } else {
            LOG.log(System.Logger.Level.INFO, "shard {0}: attention on the CPU: {1}", id, refused);
        }
    }

    /**
     * Attends on {@code cuda} from now on (whole-sequence attention; expert-scoped attention and attention whose
     * weights a token policy needs stay on the CPU), with device memory for a copy of every page of the budget, at
     * most 90 % of the device's free memory. When the device cannot take this shard's pages (their shape, or too
     * little free memory), {@code required} makes that a start-up failure; otherwise the shard stays on the CPU and
     * logs why.
     */
    public void attendOn(io.pikv.kv.compute.CudaBackend cuda, boolean required) {
        String refused = pyramid != null ? "pyramid budgets choose the tokens kept by attention weights, which the "
                + "device does not compute" : io.pikv.kv.compute.CudaDeviceAttention.refusal(shard.layout(), shape);
        RuntimeException failure = null;
        if (refused == null) {
            long bytes = 0;
            try {
                // Room for a copy of every page of the budget, at most 90 % of the device memory free now: a shard
                // shares its device with nothing by design, but must not take what it cannot use. Pages beyond it
                // (a budget raised later) are attended on the CPU, with a warning.
                bytes = Math.min(shard.budgetBytes(), (long) (cuda.freeMemory() * 0.9));
                io.pikv.kv.compute.CudaDeviceAttention device = new io.pikv.kv.compute.CudaDeviceAttention(cuda, shape,
                        shard.layout().type(), bytes);
                try {
                    shard.useDevice(device);
                } catch (RuntimeException e) {
                    device.close(); // its device memory, held for nothing
                    throw e;
                }
                devicePoolBytes = bytes;
                LOG.log(System.Logger.Level.INFO, "shard {0}: attention on {1} ({2} MiB of device memory for page "
                        + "copies)", id, device.describe(), bytes >> 20);
                if (bytes < shard.budgetBytes()) {
                    LOG.log(System.Logger.Level.WARNING, "shard {0}: {1} has room for page copies of {2} MiB, less "
                            + "than the budget of {3} MiB: once the pages in use pass it, a call over a page without a "
                            + "copy runs on the CPU, whole; for attention on the device throughout, give the shard a "
                            + "budget of at most {2} MiB (pikv.store.budget-bytes, the operator''s memoryPerShard)", id,
                            device.describe(), bytes >> 20, shard.budgetBytes() >> 20);
                }
                if (wantsWeights()) {
                    LOG.log(System.Logger.Level.WARNING, "shard {0}: {1} ranks tokens by attention weights, which only "
                            + "the CPU computes: {2} stays unused while it is in force (lru and streaming without "
                            + "pyramid budgets need no weights)", id, weightsReader(), device.describe());
                }
                return;
            } catch (RuntimeException e) { // device memory short (CudaException), or a budget below one page
                refused = "setting up " + (bytes >> 20) + " MiB of device memory for page copies failed: "
                        + e.getMessage();
                failure = e;
            }
        }
        if (required) {
            throw new IllegalStateException("pikv.compute=cuda but " + cuda.deviceName() + " cannot attend over this "
                    + "shard's pages: " + refused, failure);
        }
        if (failure != null) {
            LOG.log(System.Logger.Level.INFO, "shard " + id + ": attention on the CPU: " + cuda.deviceName() + ": "
                    + refused, failure);
        } else {
            LOG.log(System.Logger.Level.INFO, "shard {0}: attention on the CPU: {1}", id, refused);
        }
    }

    /** Bytes of device memory for page copies, when attention runs on a device. */
    private volatile long devicePoolBytes = Long.MAX_VALUE;

    /** Where attention runs, for logs and {@code /v1/config}: a device that failed for good is said to have. */
    public String attentionPlace() {
        io.pikv.kv.DeviceAttention device = shard.device();
        String cpu = "the " + shard.kernel().name() + " kernel on " + attentionThreads + " CPU thread(s)";
        if (device == null) {
            return cpu;
        }
        if (device.failed()) {
            return cpu + " (" + device.describe() + " failed; see the log)";
        }
        if (wantsWeights()) {
            return cpu + " (" + device.describe() + " unused while " + weightsReader()
                    + " ranks tokens by attention weights, which only the CPU computes)";
        }
        long budget = shard.budgetBytes();
        return device.describe() + " (expert-scoped and weighted attention: " + cpu + (devicePoolBytes < budget
                ? "; page copies for " + (devicePoolBytes >> 20) + " of the budget's " + (budget >> 20) + " MiB: a call "
                + "over a page beyond them runs on the CPU" : "") + ")";
    }

    /** Whether attention must report its weights: the eviction policy or the pyramid budgets rank tokens by them. */
    private boolean wantsWeights() {
        return pyramid != null || policy.wantsAttention();
    }

    /** What reads the weights, for logs. */
    private String weightsReader() {
        return policy.wantsAttention() ? "eviction policy " + policy.activePolicy() : String.valueOf(pyramid);
    }

    /** The PyramidKV budgets this shard enforces, or null. */
    public ShardPyramid pyramid() {
        return pyramid;
    }

    /** Attends whole-sequence scopes on {@code device} (null: on the CPU). */
    void attendOn(io.pikv.kv.DeviceAttention device) {
        shard.useDevice(device);
    }

    /** Threads one attention call uses. */
    public int attentionThreads() {
        return attentionThreads;
    }

    public int id() {
        return id;
    }

    public ModelShape shape() {
        return shape;
    }

    public KvLayout layout() {
        return shard.layout();
    }

    /** The byte budget the shard enforces now. */
    public long budgetBytes() {
        return shard.budgetBytes();
    }

    /** Bytes of one page: the smallest budget a shard can run with. */
    public long pageBytes() {
        return shard.layout().pageBytes();
    }

    /**
     * Changes the budget while serving, between batches of appends (a batch under way was checked against the budget
     * it started with, so a cut waits for it instead of making it evict its own entries): a larger one at once; a
     * smaller one evicts through the active policy ({@link KvShard#resizeBudget}) until the pages in use fit.
     *
     * @return the pages evicted
     * @throws IllegalArgumentException          below one page, or above the pages a shard can address (nothing changes)
     * @throws io.pikv.kv.KvBudgetExceededException the policy evicts nothing ({@code reject}); the budget stays
     */
    public int resizeBudget(long budgetBytes) {
        return resizeBudget(budgetBytes, pageMemoryLimit());
    }

    /**
     * {@link #resizeBudget(long)} with {@code pageMemoryLimit} the most the pages may take: a larger budget than
     * the one in force is refused above it (pages live in direct memory, whose limit the JVM fixed at start).
     */
    int resizeBudget(long budgetBytes, long pageMemoryLimit) {
        if (budgetBytes > shard.budgetBytes() && budgetBytes > pageMemoryLimit) {
            throw new IllegalArgumentException("a budget of " + budgetBytes + " bytes exceeds the " + pageMemoryLimit
                    + " bytes of direct memory this JVM may give pages (-XX:MaxDirectMemorySize less "
                    + (SERVER_DIRECT_MEMORY >> 20) + " MiB for the server's own buffers); it takes effect when the "
                    + "shard restarts with it");
        }
        return policy.betweenBatches(() -> shard.resizeBudget(budgetBytes));
    }

    /** Direct memory the JVM may allocate ({@code -XX:MaxDirectMemorySize}, by default the heap's maximum). */
    static long maxDirectMemory() {
        return io.pikv.kv.DirectMemory.limit();
    }

    /** Direct memory the JVM may give pages: its limit less what the server keeps for its own buffers. */
    static long pageMemoryLimit() {
        return Math.max(0, maxDirectMemory() - SERVER_DIRECT_MEMORY);
    }

    /** The eviction policy in charge, switchable while serving. */
    public ShardPolicy policy() {
        return policy;
    }

    /** Registers a sequence: with {@code requested} (a gateway's id) or a fresh one. */
    @Override
    public long create(Long requested) {
        if (requested == null) {
            long fresh;
            do {
                fresh = nextId.incrementAndGet();
            } while (sequences.putIfAbsent(fresh, new SequenceState(shape.layers())) != null);
            return fresh;
        }
        if (requested < 1) {
            throw new IllegalArgumentException("a sequence id must be >= 1, got " + requested);
        }
        if (sequences.putIfAbsent(requested, new SequenceState(shape.layers())) != null) {
            throw new SequenceExistsException(requested);
        }
        return requested;
    }

    @Override
    public void close(long sequence) {
        SequenceState state = state(sequence);
        synchronized (state) {
            checkOpen(sequence, state);
            closeLocked(sequence, state);
        }
    }

    /** Closes an open sequence; the caller holds its lock. */
    private void closeLocked(long sequence, SequenceState state) {
        state.closed = true;
        // Dropped before the id is freed: a create of the same id in between would have its entries dropped too.
        shard.dropSequence(sequence);
        policy.closed(sequence);
        if (pyramid != null) {
            pyramid.closed(sequence);
        }
        sequences.remove(sequence, state);
    }

    public boolean has(long sequence) {
        return sequences.containsKey(sequence);
    }

    /**
     * Tells the token policy just switched to of every entry resident, each sequence under its lock (no append of it
     * in between) and each layer under the shard's read lock (no eviction by another sequence's append between
     * reading the positions and telling them, which would leave the policy tracking entries gone for good), in
     * position order: it ranks them by their positions as generation order, with no attention yet. Entries it already
     * tracks (stored since the switch) keep what it knows of them.
     */
    private void tellResident() {
        for (Map.Entry<Long, SequenceState> e : sequences.entrySet()) {
            synchronized (e.getValue()) {
                if (sequences.get(e.getKey()) != e.getValue() || e.getValue().closed) {
                    continue; // closed meanwhile: the policy has dropped it and must not track it again
                }
                for (int layer = 0; layer < shape.layers(); layer++) {
                    int l = layer;
                    shard.withResidentPositions(e.getKey(), layer, positions -> policy.resident(e.getKey(), l,
                            positions));
                }
            }
        }
    }

    public int sequenceCount() {
        return sequences.size();
    }

    /** Next position of each layer (one past the highest position stored). */
    @Override
    public int[] lengths(long sequence) {
        SequenceState state = state(sequence);
        synchronized (state) {
            checkOpen(sequence, state); // closed while this call waited for the lock: unknown, not its old lengths
            return state.length.clone();
        }
    }

    /** Entries of (sequence, layer) stored on this shard so far, evicted ones included (pyramid budgets follow it). */
    int stored(long sequence, int layer) {
        SequenceState state = state(sequence);
        synchronized (state) {
            return state.stored[layer];
        }
    }

    /** Entries of (sequence, layer) resident on this shard. */
    @Override
    public int resident(long sequence, int layer) {
        SequenceState state = state(sequence);
        shape.checkLayer(layer);
        synchronized (state) {
            checkOpen(sequence, state); // a sequence closed meanwhile is unknown, not one with nothing resident
            return shard.resident(sequence, layer);
        }
    }

    /** Lengths and residents under the sequence's lock: no append or withdrawal lands between them. */
    @Override
    public int[][] layers(long sequence) {
        SequenceState state = state(sequence);
        synchronized (state) {
            checkOpen(sequence, state);
            int[] resident = new int[state.length.length];
            for (int layer = 0; layer < resident.length; layer++) {
                resident[layer] = shard.resident(sequence, layer);
            }
            return new int[][] {state.length.clone(), resident};
        }
    }

    /** Positions of (sequence, layer) resident on this shard, ascending. */
    public int[] residentPositions(long sequence, int layer) {
        state(sequence);
        shape.checkLayer(layer);
        int[] positions = shard.residentPositions(sequence, layer);
        Arrays.sort(positions);
        return positions;
    }

    /** Stores the entries, all or none; returns the positions they got. */
    @Override
    public int[] append(long sequence, Wire.AppendRequest request) {
        shape.checkLayer(request.layer());
        SequenceState state = state(sequence);
        Wire.AppendRequest.Entry[] entries = request.entries();
        int[] positions = new int[entries.length];
        synchronized (state) {
            checkOpen(sequence, state);
            int layer = request.layer();
            int lengthBefore = state.length[layer];
            // The hold first: the batch's room is checked against the budget it is then stored under (a budget
            // change waits for the hold), and the undo below runs under the same policy as the stores.
            try (ShardPolicy.Hold held = policy.holdSwitches()) {
                int[] planned = plan(sequence, layer, lengthBefore, entries);
                int done = 0;
                int storedCount = 0;
                long fallbacksBefore = policy.fallbacks();
                try {
                    for (; done < entries.length; done++) {
                        Wire.AppendRequest.Entry e = entries[done];
                        int position = planned[done];
                        shard.append(sequence, layer, position, e.expert(), e.k(), e.v());
                        positions[done] = position;
                        storedCount = done + 1; // stored, so withdrawn on a failure from here on (the policy's too)
                        policy.appended(sequence, layer, position);
                        state.length[layer] = Math.max(state.length[layer], position + 1);
                    }
                    boolean ranks = policy.ranksTokens();
                    // (Not looked up for one entry under a page policy, a step's usual case: nothing would act on it.)
                    int[] gone = entries.length > 1 || ranks ? shard.notResident(sequence, layer, positions)
                            : new int[0];
                    if (gone.length > 0 && entries.length > 1
                            && (!ranks || policy.fallbacks() != fallbacksBefore)) {
                        // Room made for the last entries took pages holding its first (a tail page the batch filled
                        // first, then the oldest): stored, it would answer for entries it no longer holds. (A token
                        // policy may rank the batch's first entries lowest and evict them: its choice, as for any;
                        // not its oldest-page fallback's, which ranks nothing.)
                        throw new KvBudgetExceededException("the request's " + entries.length + " entries do not "
                                + "fit beside each other: making room for the last, or for another request meanwhile, "
                                + "evicted some of the first (the budget holds " + shard.budgetBytes()
                                / shard.layout().pageBytes() + " pages); send fewer at a time, or again (no entry of "
                                + "the request was stored)");
                    }
                    if (gone.length > 0 && ranks) {
                        // Evicted by another request's room before the policy heard of their store: untracked now,
                        // or the policy would keep offering entries the shard no longer holds.
                        policy.evictedBeforeTold(sequence, layer, gone);
                    }
                    state.stored[layer] += entries.length;
                } catch (RuntimeException | Error failure) {
                    // Also on an Error (direct memory exhausted while a page was allocated): all or none.
                    int[] stored = Arrays.copyOf(positions, storedCount);
                    try {
                        shard.withdraw(sequence, layer, stored);
                        policy.withdrawn(sequence, layer, stored);
                        if (pyramid != null) {
                            pyramid.removed(sequence, layer, stored);
                        }
                    } catch (RuntimeException | Error undo) {
                        undo.addSuppressed(failure); // the entries may remain: said as the failure it is, with the cause
                        throw undo;
                    }
                    state.length[layer] = lengthBefore;
                    if (failure instanceof IllegalArgumentException || failure instanceof KvBudgetExceededException) {
                        // The request's own fault, or a full store: a 4xx, which already means nothing stored.
                        RuntimeException runtime = (RuntimeException) failure;
                        throw entries.length == 1 || done == entries.length ? runtime : withEntry(runtime, done);
                    }
                    throw new UndoneException("the append to sequence " + sequence + " layer " + layer + " ("
                            + storedCount + " of " + entries.length + " entries stored when it failed)", failure);
                }
            }
        }
        return positions;
    }

    /**
     * The positions the entries will take, after every check that storing them would make: a refused entry is
     * refused before any entry is stored (storing one can evict others to make room).
     */
    private int[] plan(long sequence, int layer, int length, Wire.AppendRequest.Entry[] entries) {
        int[] planned = new int[entries.length];
        int next = length;
        for (int i = 0; i < entries.length; i++) {
            Wire.AppendRequest.Entry e = entries[i];
            int position = e.position() == Wire.NEXT_POSITION ? next : e.position();
            try {
                if (position < 0) {
                    throw new IllegalArgumentException("position must be >= 0 or -1 (next), got " + e.position());
                }
                shard.checkAppend(sequence, layer, position, e.expert(), e.k(), e.v());
            } catch (IllegalArgumentException refused) {
                throw entries.length == 1 ? refused : withEntry(refused, i);
            }
            planned[i] = position;
            next = Math.max(next, position + 1);
        }
        if (entries.length > 1) {
            int[] sorted = planned.clone();
            Arrays.sort(sorted);
            for (int i = 1; i < sorted.length; i++) {
                if (sorted[i] == sorted[i - 1]) {
                    throw new IllegalArgumentException("position " + sorted[i] + " appears twice in the request "
                            + "(no entry of the request was stored)");
                }
            }
            checkFits(planned, entries);
        }
        return planned;
    }

    /**
     * Refuses a batch whose entries alone need more pages than the budget holds: storing it would evict its own first
     * entries to make room for its last, and answer as if all were stored. A lower bound (each bucket's entries packed
     * into whole pages), so no batch that could fit in fresh pages is refused here; one that starts on a partly filled
     * tail page can still evict its own first entries, which {@link #append} finds once it is stored, and takes back.
     */
    private void checkFits(int[] planned, Wire.AppendRequest.Entry[] entries) {
        int buckets = shard.buckets();
        int pageTokens = shard.layout().pageTokens();
        int[] perBucket = new int[buckets];
        for (int i = 0; i < entries.length; i++) {
            perBucket[io.pikv.kv.ShardKey.bucket(planned[i], entries[i].expert(), buckets)]++;
        }
        long pages = 0;
        for (int n : perBucket) {
            pages += (n + pageTokens - 1) / pageTokens;
        }
        long budget = shard.budgetBytes();
        long maxPages = budget / shard.layout().pageBytes();
        if (pages > maxPages) {
            throw new KvBudgetExceededException("the request's " + entries.length + " entries need at least " + pages
                    + " pages by themselves, more than the " + maxPages + " pages of the shard's budget of " + budget
                    + " bytes; send fewer at a time (no entry of the request was stored)");
        }
    }

    /** A sequence closed while its caller waited for its lock is gone: nothing may be stored into it again. */
    private void checkOpen(long sequence, SequenceState state) {
        if (sequences.get(sequence) != state) {
            throw new UnknownSequenceException(sequence);
        }
    }

    @Override
    public int withdraw(long sequence, int layer, int[] positions) {
        shape.checkLayer(layer);
        KvShard.checkPositions(positions);
        SequenceState state = state(sequence);
        synchronized (state) {
            checkOpen(sequence, state);
            int withdrawn = shard.withdraw(sequence, layer, positions);
            policy.withdrawn(sequence, layer, positions);
            if (pyramid != null) {
                pyramid.removed(sequence, layer, positions);
            }
            state.stored[layer] = Math.max(0, state.stored[layer] - withdrawn);
            return withdrawn;
        }
    }

    /** Times a step stores its token again after other requests evicted it before its attention. */
    static final int STEP_ATTEMPTS = 3;

    /** Run between a step's store and its attention, when set: tests put another request's room-making there. */
    volatile Runnable afterStepStore;

    /** The engine's shard (tests). */
    KvShard engineShard() {
        return shard;
    }

    /** This shard's partial attention over (sequence, layer) for a query, all entries or those of some experts. */
    @Override
    public PartialAttention attend(long sequence, Wire.AttendRequest request) {
        return attend(sequence, request, -1);
    }

    /** {@link #attend}, or null when the entry at {@code mustHold} (≥ 0) is not resident as the attention reads. */
    private PartialAttention attend(long sequence, Wire.AttendRequest request, int mustHold) {
        shape.checkLayer(request.layer());
        SequenceState state = state(sequence);
        AttentionScope scope = request.allExperts() ? AttentionScope.all() : AttentionScope.experts(request.experts());
        // Under the sequence's lock, as appends, steps, withdrawals and closes: the answer covers one state of the
        // sequence (never part of an append, nor an entry its undo takes back), and the weights it reports reach the
        // policy and the pyramid's scores while the entries they name are still the ones resident.
        synchronized (state) {
            checkOpen(sequence, state);
            if (!wantsWeights()) {
                return shard.attendPartial(sequence, request.layer(), request.query(), scope, false, attentionPool,
                        attentionThreads, mustHold);
            }
            // A token policy or the pyramid budgets rank tokens by the attention they get: report the weights (this
            // shard's share).
            PartialAttention partial = shard.attendPartial(sequence, request.layer(), request.query(), scope, true,
                    attentionPool, attentionThreads, mustHold);
            if (partial == null) {
                return null;
            }
            io.pikv.kv.AttentionResult weighted = partial.finish();
            policy.attended(sequence, request.layer(), weighted);
            if (pyramid != null) {
                enforcePyramid(sequence, state, request.layer(), weighted);
            }
            return partial;
        }
    }

    /**
     * Adds an attention's weights to the pyramid's scores of (sequence, layer) and, once it holds a page's worth of
     * entries beyond its budget, evicts it down to the budget, under the sequence's lock (the attention's answer is over
     * the entries before the eviction). The page of slack lets the selection — a sort of the layer's resident entries
     * — run once per page of new entries instead of at every step.
     */
    private void enforcePyramid(long sequence, SequenceState state, int layer, io.pikv.kv.AttentionResult weighted) {
        synchronized (state) {
            if (state.closed || sequences.get(sequence) != state) {
                return; // closed meanwhile: its scores are gone and must not come back
            }
            pyramid.observe(sequence, layer, weighted);
            int residentCount = shard.resident(sequence, layer);
            pyramid.prune(sequence, layer, residentCount, () -> shard.residentPositions(sequence, layer));
            int budget = pyramid.layerBudget(layer, state.stored[layer]);
            if (residentCount <= budget + (long) shard.layout().pageTokens()) {
                return;
            }
            int[] resident = shard.residentPositions(sequence, layer);
            Arrays.sort(resident);
            int[] victims = pyramid.victims(sequence, layer, budget, resident);
            if (victims.length > 0) {
                shard.discard(sequence, layer, victims); // evictions, not misses: the budget means not to hold them
                pyramid.removed(sequence, layer, victims); // the token policy hears of them through its hook
            }
        }
    }

    /**
     * One decode step with everything on this shard (a single-shard deployment): route with plain top-k (or take
     * the given experts), store the token at the next position, attend.
     */
    @Override
    public Wire.StepResponse step(long sequence, Wire.StepRequest request) {
        shape.checkLayer(request.layer());
        shape.checkQuery(request.query()); // a query the attention would refuse is refused before the token is stored
        int[] experts = chooseExperts(request);
        Stored stored = storeAndAttend(sequence, request, experts, Wire.NEXT_POSITION);
        return new Wire.StepResponse(stored.position(), experts, stored.partial().finish().output());
    }

    private record Stored(int position, PartialAttention partial) {
    }

    /**
     * Stores the step's token at {@code position} ({@link Wire#NEXT_POSITION}: the next) and attends, as one under the
     * sequence's lock: a concurrent step's token, stored after this one, must not enter this step's attention.
     */
    private Stored storeAndAttend(long sequence, Wire.StepRequest request, int[] experts, int position) {
        SequenceState state = state(sequence);
        synchronized (state) {
            checkOpen(sequence, state); // not closed and made again meanwhile: append must lock this very state
            int lengthBefore = state.length[request.layer()];
            int[] at = append(sequence, new Wire.AppendRequest(request.layer(), new Wire.AppendRequest.Entry[] {
                new Wire.AppendRequest.Entry(position, experts[0], request.k(), request.v())}));
            try {
                Wire.AttendRequest attention = new Wire.AttendRequest(request.layer(),
                        request.scope() == Wire.SCOPE_ALL ? new int[0] : experts, request.query());
                for (int attempt = 1; ; attempt++) {
                    Runnable between = afterStepStore;
                    if (between != null) {
                        between.run();
                    }
                    PartialAttention partial = attend(sequence, attention, at[0]);
                    if (partial != null) {
                        return new Stored(at[0], partial);
                    }
                    // Another request's room took the token's page between its store and this attention (its tail
                    // page was the oldest): attending without it would answer without the token's own K/V. Stored
                    // again at its position, and attended again.
                    if (attempt == STEP_ATTEMPTS) {
                        throw new KvBudgetExceededException("the step's token was evicted by other requests before "
                                + "its attention " + STEP_ATTEMPTS + " times: the shard's budget is too small for its "
                                + "load (nothing of the step was stored)");
                    }
                    // The evicted copy is taken back first (its miss with it, its count in the layer's stored
                    // entries too; its eviction stays counted, as every eviction does): each attempt starts from the
                    // state before the step, and the undo of a last failure is one withdrawal.
                    withdraw(sequence, request.layer(), at);
                    append(sequence, new Wire.AppendRequest(request.layer(), new Wire.AppendRequest.Entry[] {
                        new Wire.AppendRequest.Entry(at[0], experts[0], request.k(), request.v())}));
                }
            } catch (RuntimeException | Error failure) {
                // All or none: a step whose attention failed did not happen, so its token goes too (a retry would
                // store it twice, and a gateway reading a refusal as "nothing stored" would give the position again).
                try {
                    withdraw(sequence, request.layer(), at);
                } catch (RuntimeException | Error undo) {
                    undo.addSuppressed(failure); // the token may remain: said as the failure it is, with the cause
                    throw undo;
                }
                state.length[request.layer()] = lengthBefore;
                if (failure instanceof IllegalArgumentException || failure instanceof KvBudgetExceededException) {
                    throw failure; // the request's own fault or a full store: its 4xx already means nothing stored
                }
                throw new UndoneException("the step of sequence " + sequence + " layer " + request.layer()
                        + " at position " + at[0], failure);
            }
        }
    }

    /**
     * A gateway's step on the shard that owns the token's primary expert: store the token at the gateway's
     * {@code position} with its chosen experts, then return this shard's partial attention (one round trip for both;
     * the gateway merges it with the other shards' partials).
     */
    public PartialAttention stepPartial(long sequence, Wire.StepRequest request, int position) {
        shape.checkLayer(request.layer());
        if (request.mode() != Wire.CHOSEN_EXPERTS) {
            throw new IllegalArgumentException("a step at a given position carries the chosen experts (mode 2): the "
                    + "gateway routes");
        }
        shape.checkQuery(request.query()); // a query the attention would refuse is refused before the token is stored
        return storeAndAttend(sequence, request, chooseExperts(request), position).partial();
    }

    /** The step's experts: the plain top-k of its logits, or its chosen experts after checking them. */
    public int[] chooseExperts(Wire.StepRequest request) {
        if (request.mode() == Wire.GATE_LOGITS) {
            double[] logits = new double[request.logits().length];
            for (int i = 0; i < logits.length; i++) {
                logits[i] = request.logits()[i];
            }
            return router.route(logits, localMap).experts();
        }
        int[] experts = request.experts();
        boolean[] seen = new boolean[shape.experts()];
        for (int e : experts) {
            shape.checkExpert(e);
            if (seen[e]) {
                throw new IllegalArgumentException("expert " + e + " is chosen twice");
            }
            seen[e] = true;
        }
        return experts.clone();
    }

    public ShardStats stats() {
        return shard.stats();
    }

    private SequenceState state(long sequence) {
        SequenceState state = sequences.get(sequence);
        if (state == null) {
            throw new UnknownSequenceException(sequence);
        }
        state.lastUsed = System.nanoTime();
        return state;
    }

    /**
     * Closes the sequences no call has used for more than {@code idleNanos} (checked again under each one's lock, so
     * a call that just looked it up keeps it); returns how many were closed.
     */
    public int closeIdle(long idleNanos) {
        int closed = 0;
        for (Map.Entry<Long, SequenceState> e : sequences.entrySet()) {
            SequenceState state = e.getValue();
            if (System.nanoTime() - state.lastUsed <= idleNanos) {
                continue;
            }
            long asked = System.nanoTime();
            synchronized (state) {
                // Not if a call held it while this waited: it was in use to the end of that call.
                if (sequences.get(e.getKey()) == state && System.nanoTime() - state.lastUsed > idleNanos
                        && System.nanoTime() - asked <= IDLE_SWEEP_HELD_NANOS) {
                    closeLocked(e.getKey(), state);
                    closed++;
                }
            }
        }
        return closed;
    }


    private static RuntimeException withEntry(RuntimeException failure, int entry) {
        String message = "entry " + entry + ": " + failure.getMessage() + " (no entry of the request was stored)";
        if (failure instanceof io.pikv.kv.KvBudgetExceededException) {
            return new io.pikv.kv.KvBudgetExceededException(message);
        }
        if (failure instanceof UnknownSequenceException || !(failure instanceof IllegalArgumentException)) {
            return failure;
        }
        return new IllegalArgumentException(message, failure);
    }

    @Override
    public void close() {
        try {
            for (Long sequence : sequences.keySet()) {
                try {
                    close(sequence);
                } catch (UnknownSequenceException closedMeanwhile) {
                    // a request closed it while this ran
                }
            }
        } finally {
            if (attentionPool != null) {
                attentionPool.shutdownNow();
            }
            io.pikv.kv.DeviceAttention device = shard.device();
            if (device != null) {
                shard.useDevice(null);
                device.close();
            }
        }
    }
}
