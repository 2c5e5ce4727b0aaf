package io.pikv.kv;

import io.pikv.kv.compute.AttentionKernel;
import io.pikv.kv.compute.Kernels;
import io.pikv.kv.compute.LowRankKernel;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.Callable;
import java.util.concurrent.ForkJoinPool;
import java.util.concurrent.atomic.AtomicLong;

/**
 * An expert-sharded KV store with all its shards in this process.
 *
 * <p>Each token's entry goes to the shard that owns its primary expert under the current {@link ExpertShardMap};
 * attention fans out over (shard, bucket) pairs on a worker pool and merges the partials exactly. A new shard map
 * changes where new entries go; entries already stored stay readable on the shard that holds them.
 */
public final class KvStore implements AutoCloseable {
    private static final System.Logger LOG = System.getLogger(KvStore.class.getName());

    private final KvStoreConfig config;
    private final ModelShape shape;
    private final KvShard[] shards;
    private final AttentionKernel kernel;
    private final ForkJoinPool workers;
    private volatile boolean closed;
    private final LongKeyMap<SequenceState> sequences = new LongKeyMap<>();
    private final AtomicLong nextSequence = new AtomicLong();
    private volatile ExpertShardMap shardMap;

    public KvStore(KvStoreConfig config) {
        this.config = config;
        this.shape = config.shape();
        KvLayout layout = config.layout();
        this.kernel = config.lowRank() != null ? new LowRankKernel(config.lowRank())
                : Kernels.select(layout, config.kernel());
        long perShard = config.budgetBytes() / config.shards();
        this.shards = new KvShard[config.shards()];
        for (int s = 0; s < shards.length; s++) {
            shards[s] = new KvShard(s, shape, layout, config.buckets(), perShard, config.eviction(), kernel,
                    config.lowRank());
        }
        this.shardMap = ExpertShardMap.roundRobin(shape.experts(), config.shards());
        // The calling thread takes buckets too: the pool runs the other threads - 1.
        this.workers = config.threads() > 1 ? new ForkJoinPool(config.threads() - 1) : null;
        LOG.log(System.Logger.Level.DEBUG, "KV store: {0} shards × {1} buckets, {2}, kernel {3}", shards.length,
                config.buckets(), layout, kernel.name());
    }

    public KvStoreConfig config() {
        return config;
    }

    public ModelShape shape() {
        return shape;
    }

    /** The kernel attention runs with. */
    public AttentionKernel kernel() {
        return kernel;
    }

    public List<KvShard> shards() {
        return List.of(shards);
    }

    public ExpertShardMap shardMap() {
        return shardMap;
    }

    /**
     * Installs a newer shard map. New entries follow it; stored entries stay where they are and remain readable.
     *
     * @throws IllegalArgumentException when its epoch is not newer or its experts/shards differ from the store's
     */
    public synchronized void applyShardMap(ExpertShardMap next) {
        if (next == null) {
            throw new IllegalArgumentException("the shard map is missing");
        }
        ExpertShardMap current = shardMap;
        if (next.experts() != shape.experts() || next.shards() != shards.length) {
            throw new IllegalArgumentException("shard map covers " + next.experts() + " experts on " + next.shards()
                    + " shards; this store has " + shape.experts() + " experts on " + shards.length + " shards");
        }
        if (next.epoch() <= current.epoch()) {
            throw new IllegalArgumentException("stale shard map: epoch " + next.epoch()
                    + " is not newer than the current epoch " + current.epoch());
        }
        shardMap = next;
    }

    /** Opens a sequence and returns its id. */
    public long createSequence() {
        checkOpen();
        long id = nextSequence.incrementAndGet();
        sequences.put(id, new SequenceState(shape.layers()));
        return id;
    }

    /** Closes a sequence and frees its pages on every shard. */
    public void closeSequence(long sequence) {
        SequenceState state = sequences.remove(sequence);
        if (state == null) {
            throw new UnknownSequenceException(sequence);
        }
        synchronized (state) {
            state.closed = true;
            for (KvShard shard : shards) {
                shard.dropSequence(sequence);
            }
        }
        // A hook that tracks entries (token policies, pyramid budgets) drops the closed sequence's.
        config.eviction().sequenceClosed(sequence);
    }

    public boolean hasSequence(long sequence) {
        return sequences.containsKey(sequence);
    }

    /** Tokens appended so far to (sequence, layer), resident or evicted. */
    public int length(long sequence, int layer) {
        shape.checkLayer(layer);
        SequenceState state = state(sequence);
        synchronized (state) { // appends to it change it under this monitor
            return state.length[layer];
        }
    }

    /** Resident entries of (sequence, layer) over all shards. */
    public int resident(long sequence, int layer) {
        shape.checkLayer(layer);
        state(sequence);
        int n = 0;
        for (KvShard shard : shards) {
            n += shard.resident(sequence, layer);
        }
        return n;
    }

    /** Positions of the resident entries of (sequence, layer) over all shards, ascending. */
    public int[] residentPositions(long sequence, int layer) {
        shape.checkLayer(layer);
        state(sequence);
        int[][] parts = new int[shards.length][];
        int n = 0;
        for (int s = 0; s < shards.length; s++) {
            parts[s] = shards[s].residentPositions(sequence, layer);
            n += parts[s].length;
        }
        int[] out = new int[n];
        int at = 0;
        for (int[] part : parts) {
            System.arraycopy(part, 0, out, at, part.length);
            at += part.length;
        }
        java.util.Arrays.sort(out);
        return out;
    }

    /**
     * Appends the next token of (sequence, layer): K and V are {@code kvHeads × headDim} floats, head-major,
     * and {@code primaryExpert} is the token's first expert. Returns the token's position.
     */
    public int append(long sequence, int layer, int primaryExpert, float[] k, float[] v) {
        checkOpen(); // first: a closed store says so, whatever else is wrong
        shape.checkLayer(layer);
        if (primaryExpert < 0 || primaryExpert >= shape.experts()) {
            throw new IllegalArgumentException("expert " + primaryExpert + " is out of range: the model has "
                    + shape.experts() + " experts (0.." + (shape.experts() - 1) + ")");
        }
        checkOpen();
        SequenceState state = state(sequence);
        synchronized (state) {
            if (state.closed) {
                throw new UnknownSequenceException(sequence);
            }
            int position = state.length[layer];
            if (position > KvShard.MAX_POSITION) {
                throw new IllegalArgumentException("sequence " + sequence + " layer " + layer + " is full: it holds "
                        + "the most tokens a layer can (" + (KvShard.MAX_POSITION + 1L) + ")");
            }
            shards[shardMap.shardOf(primaryExpert)].append(sequence, layer, position, primaryExpert, k, v);
            state.length[layer] = position + 1;
            return position;
        }
    }

    /**
     * Takes back the last token appended to (sequence, layer), as if it had never been appended: its entry leaves
     * whichever shard holds it (no eviction is counted, as {@link KvShard#withdraw}), and the layer's next append gets
     * its position again. For a caller that appends one token to every layer and must undo the layers already stored
     * when a later one is refused, so that positions stay aligned across layers. Returns the position taken back.
     *
     * @throws IllegalStateException when the layer holds no token
     */
    public int withdrawLast(long sequence, int layer) {
        checkOpen();
        shape.checkLayer(layer);
        SequenceState state = state(sequence);
        synchronized (state) {
            if (state.closed) {
                throw new UnknownSequenceException(sequence);
            }
            int position = state.length[layer] - 1;
            if (position < 0) {
                throw new IllegalStateException("sequence " + sequence + " layer " + layer + " holds no token to "
                        + "withdraw");
            }
            int[] one = {position};
            for (KvShard shard : shards) { // the map may have changed since: every shard is asked
                shard.withdraw(sequence, layer, one);
            }
            state.length[layer] = position;
            try {
                config.eviction().withdrawn(sequence, layer, position);
            } catch (RuntimeException e) {
                // The withdrawal stands (every shard took the entry back): said, not thrown, so that a caller undoing
                // an append does not withdraw again and take an earlier token back too.
                LOG.log(System.Logger.Level.WARNING, "the eviction hook failed"
                        + " on the withdrawal of (" + sequence + ", " + layer + ", " + position + "); the store's"
                        + " state is whole", e);
            }
            return position;
        }
    }

    /** Exact attention over every resident entry of (sequence, layer). */
    public AttentionResult attend(long sequence, int layer, float[] query) {
        return attend(sequence, layer, query, AttentionScope.all(), false);
    }

    /** Attention over the entries in {@code scope}; with {@code weights} the result carries each entry's weight. */
    public AttentionResult attend(long sequence, int layer, float[] query, AttentionScope scope, boolean weights) {
        return attendPartial(sequence, layer, query, scope, weights).finish();
    }

    /** The merged partial over all shards (what a gateway would compute from remote shards' partials). */
    public PartialAttention attendPartial(long sequence, int layer, float[] query, AttentionScope scope,
                                          boolean weights) {
        checkOpen();
        shape.checkLayer(layer);
        SequenceState state = state(sequence);
        if (scope == null) {
            throw new IllegalArgumentException("the attention scope is missing (AttentionScope.all() for every entry)");
        }
        scope.validate(shape.experts());
        float[] scaled = shape.scaledQuery(query);
        // Every shard's read lock for the whole call, so that every bucket of every shard is read in one state even
        // while other threads append or evict. Taken in shard order; a writer holds one shard's lock at a time, so no
        // cycle can form. The tasks take no lock of their own (see KvShard#lockRead).
        int locked = 0;
        try {
            for (KvShard shard : shards) {
                shard.lockRead();
                locked++;
            }
            if (state.closed) {
                // Closed meanwhile: its shards drop it one at a time, so an answer now could cover some of them only.
                throw new UnknownSequenceException(sequence);
            }
            List<Callable<PartialAttention>> tasks = new ArrayList<>();
            List<PartialAttention> parts = new ArrayList<>();
            for (KvShard shard : shards) {
                if (!shard.holdsLocked(sequence, layer, scope)) {
                    continue; // nothing in scope here (after an expert moved away, say): no bucket to scan
                }
                // A shard on a device (KvShard#useDevice) answers whole-sequence calls without weights there.
                PartialAttention onDevice = shard.attendOnDeviceLocked(sequence, layer, query, scope, weights);
                if (onDevice != null) {
                    parts.add(onDevice);
                    continue;
                }
                for (int b = 0; b < shard.buckets(); b++) {
                    int bucket = b;
                    tasks.add(() -> shard.attendBucketsLocked(sequence, layer, scaled, scope, weights, bucket,
                            bucket + 1));
                }
            }
            PartialAttention merged;
            if (tasks.isEmpty() && parts.isEmpty()) {
                merged = PartialAttention.empty(shape.qHeads(), shape.headDim(), weights);
            } else {
                if (workers == null || tasks.size() == 1) {
                    for (Callable<PartialAttention> task : tasks) {
                        parts.add(call(task));
                    }
                } else {
                    // This thread and threads - 1 pool tasks take the buckets; the locks above are released only
                    // once no task runs (also when this thread is interrupted or close() stops the pool meanwhile).
                    parts.addAll(Arrays.asList(SharedWork.run(workers, config.threads(), tasks.size(),
                            i -> call(tasks.get(i)))));
                }
                merged = PartialAttention.merge(parts);
            }
            // Counted once the answer is there (a call that failed looked nothing up), under the same locks.
            for (KvShard shard : shards) {
                shard.countLookupsLocked(sequence, layer, scope);
            }
            return merged;
        } finally {
            for (int s = locked - 1; s >= 0; s--) {
                shards[s].unlockRead();
            }
        }
    }

    /** Evicts the resident entries of (sequence, layer) at these positions, wherever they live. */
    public int evict(long sequence, int layer, int[] positions) {
        checkOpen();
        shape.checkLayer(layer);
        state(sequence);
        int n = 0;
        for (KvShard shard : shards) {
            n += shard.evict(sequence, layer, positions);
        }
        return n;
    }

    public List<ShardStats> stats() {
        List<ShardStats> out = new ArrayList<>(shards.length);
        for (KvShard shard : shards) {
            out.add(shard.stats());
        }
        return out;
    }

    /** Bytes of pages in use over all shards; never above the budget (as long as no shard's is raised on its own). */
    public long bytesInUse() {
        long n = 0;
        for (KvShard shard : shards) {
            n += shard.stats().bytesInUse();
        }
        return n;
    }

    /**
     * Off-heap bytes this store's entries need beyond their pages: the low-rank bases (shared by every sequence and
     * shard, outside the page budget), 0 for a plain store.
     */
    public long projectionBytes() {
        return config.lowRank() == null ? 0 : config.lowRank().bytes();
    }

    /**
     * Stops the attention threads. The store takes no further appends, attention calls, evictions or sequences: each
     * throws {@link IllegalStateException}; a call running meanwhile may end the same way.
     */
    @Override
    public void close() {
        closed = true;
        if (workers != null) {
            workers.shutdownNow();
        }
    }

    private SequenceState state(long sequence) {
        SequenceState state = sequences.get(sequence);
        if (state == null) {
            throw new UnknownSequenceException(sequence);
        }
        return state;
    }


    private static PartialAttention call(Callable<PartialAttention> task) {
        try {
            return task.call();
        } catch (RuntimeException e) {
            throw e;
        } catch (Exception e) {
            throw new IllegalStateException(e);
        }
    }

    private void checkOpen() {
        if (closed) {
            throw new IllegalStateException("the store is closed");
        }
    }

    /** Per-sequence lengths; appends to one sequence are serialised on it. */
    private static final class SequenceState {
        final int[] length;
        volatile boolean closed;

        SequenceState(int layers) {
            this.length = new int[layers];
        }
    }
}
