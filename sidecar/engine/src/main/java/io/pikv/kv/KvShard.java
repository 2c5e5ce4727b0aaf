package io.pikv.kv;

import io.pikv.kv.compression.LowRankBases;
import io.pikv.kv.compute.AttentionAccumulator;
import io.pikv.kv.compute.AttentionKernel;
import io.pikv.kv.compute.KernelScratch;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.atomic.AtomicLongArray;
import java.util.concurrent.locks.ReentrantReadWriteLock;

/**
 * One expert shard: the entries of the experts the shard map gives it, in pages from its own budgeted pool.
 *
 * <p>It exposes only what a shard in another process could: append, attend-partial, evict, drop a sequence, stats.
 * It validates its own inputs, so a rejected call leaves it unchanged. Attention calls share a read lock and run
 * concurrently; appends and evictions take the write lock.
 */
public final class KvShard {
    private static final System.Logger LOG = System.getLogger(KvShard.class.getName());
    // Counter slots per (layer, expert) cell; slot 0 is unused (lookups are hits + misses).
    private static final int HITS = 1;
    private static final int MISSES = 2;
    private static final int EVICTIONS = 3;

    private final int id;
    private final ModelShape shape;
    private final KvLayout layout;
    private final int buckets;
    private final PagePool pool;
    private final EvictionHook hook;
    private final AttentionKernel kernel;
    /** Attention on another device (a GPU) for whole-sequence scopes, or null: see {@link #useDevice}. */
    private volatile DeviceAttention device;
    /** Bases of a low-rank layout (entries are stored as their coefficients); null for a plain layout. */
    private final LowRankBases projection;
    /** Coefficient scratch for appends (used under the write lock; apart from moveK/V, which eviction uses). */
    private final float[] projK;
    private final float[] projV;
    /** The largest token position a sequence may use (2^24 − 1: a context of 16,777,216 tokens). */
    public static final int MAX_POSITION = (1 << 24) - 1;
    private final ReentrantReadWriteLock lock = new ReentrantReadWriteLock();
    private final LongKeyMap<LayerState[]> sequences = new LongKeyMap<>();
    private final AtomicLongArray counters;
    /** Scratch for moving an int8 entry between pages (used under the write lock). */
    private final float[] moveK;
    private final float[] moveV;
    private final AtomicLongArray residentEntries;
    private final Context context = new Context();
    private Page oldest;
    private Page newest;
    private long entries;

    /**
     * @param buckets     in-shard buckets (a power of two), placed by {@link ShardKey}
     * @param budgetBytes hard limit on the bytes of pages this shard holds
     */
    public KvShard(int id, ModelShape shape, KvLayout layout, int buckets, long budgetBytes, EvictionHook hook,
                   AttentionKernel kernel) {
        this(id, shape, layout, buckets, budgetBytes, hook, kernel, null);
    }

    /**
     * A shard whose pages may be low-rank: with {@code projection} not null, the layout's key and value widths are
     * its ranks, appends store each entry's coefficients, and {@code kernel} must read such pages.
     */
    public KvShard(int id, ModelShape shape, KvLayout layout, int buckets, long budgetBytes, EvictionHook hook,
                   AttentionKernel kernel, LowRankBases projection) {
        if (layout.kvHeads() != shape.kvHeads() || layout.headDim() != shape.headDim()) {
            throw new IllegalArgumentException("layout " + layout + " does not match model " + shape);
        }
        if (projection == null ? layout.projected()
                : projection.keyRank() != layout.keyWidth() || projection.valueRank() != layout.valueWidth()
                || projection.layers() != shape.layers() || projection.experts() != shape.experts()
                || projection.kvHeads() != shape.kvHeads() || projection.headDim() != shape.headDim()) {
            throw new IllegalArgumentException("layout " + layout + " needs low-rank bases of its ranks fitted for "
                    + shape + (projection == null ? "; none were given" : ""));
        }
        if (!kernel.supports(layout)) {
            throw new IllegalArgumentException("kernel " + kernel.name() + " cannot read pages of " + layout);
        }
        this.projection = projection;
        this.projK = new float[shape.kvWidth()];
        this.projV = new float[shape.kvWidth()];
        if (buckets < 1 || buckets > 1024 || Integer.bitCount(buckets) != 1) {
            // Every (sequence, layer) holds a segment per bucket from its first entry on, as in KvStoreConfig.
            throw new IllegalArgumentException("buckets must be a power of two in [1, 1024], got " + buckets);
        }
        this.id = id;
        this.shape = shape;
        this.layout = layout;
        this.evictedPositions = new int[layout.pageTokens()];
        this.moveK = new float[shape.kvWidth()];
        this.moveV = new float[shape.kvWidth()];
        this.buckets = buckets;
        this.pool = new PagePool(layout, budgetBytes);
        if (hook == null) {
            throw new IllegalArgumentException("a shard needs an eviction hook (EvictionHook.REJECT never evicts)");
        }
        this.hook = hook;
        this.kernel = kernel;
        this.counters = new AtomicLongArray(shape.layers() * shape.experts() * 4);
        this.residentEntries = new AtomicLongArray(shape.layers() * shape.experts());
    }

    public int id() {
        return id;
    }

    public int buckets() {
        return buckets;
    }

    public KvLayout layout() {
        return layout;
    }

    /**
     * Attends over this shard's pages on {@code device} from now on, for whole-sequence scopes without per-entry
     * weights (expert-scoped attention and attention with weights stay on the CPU kernel); null: the CPU only. The
     * shard tells the device of every page whose bytes change.
     */
    public void useDevice(DeviceAttention device) {
        if (device != null && !device.supports(layout)) {
            throw new IllegalArgumentException(device.describe() + " cannot attend over pages of " + layout);
        }
        lock.writeLock().lock();
        try {
            if (device != null && device != this.device) {
                // The device may hold copies from an earlier time with this shard, which changes since then (made
                // while it was detached) would not have reached: every page held now is told as changed.
                sequences.forEachValue(layers -> {
                    for (LayerState ls : layers) {
                        if (ls == null) {
                            continue;
                        }
                        for (Segment segment : ls.buckets) {
                            for (Page page : segment.pages) {
                                device.pageChanged(page);
                            }
                        }
                    }
                });
            }
            this.device = device;
        } finally {
            lock.writeLock().unlock();
        }
    }

    /** The device this shard attends on, or null. */
    public DeviceAttention device() {
        return device;
    }

    public AttentionKernel kernel() {
        return kernel;
    }

    /**
     * Stores K and V ({@code kvHeads × headDim} each, head-major) of the token at {@code position} of
     * (sequence, layer), whose primary expert is {@code expert}.
     *
     * @throws IllegalArgumentException  on bad sizes, non-finite values, values outside the storage type's range,
     *                                   out-of-range layer, expert or position ({@link #MAX_POSITION}), or a position
     *                                   already resident
     * @throws KvBudgetExceededException when no page can be had; nothing of the entry is stored, while entries the
     *                                   eviction hook evicted trying to make room stay evicted
     */
    public void append(long sequence, int layer, int position, int expert, float[] k, float[] v) {
        checkEntry(layer, position, expert, k, v);
        lock.writeLock().lock();
        try {
            LayerState existing = layerState(sequence, layer, false);
            checkFree(existing, sequence, layer, position);
            float[] sk = k;
            float[] sv = v;
            if (projection != null) {
                projection.project(layer, expert, k, v, projK, projV);
                checkCoefficients(projK, layout.kvHeads() * layout.keyWidth());
                checkCoefficients(projV, layout.kvHeads() * layout.valueWidth());
                sk = projK;
                sv = projV;
            }
            // Made only once the entry is known to be storable, and taken back if no page can be had for it: a
            // rejected append leaves no state behind (a layer's state holds a segment per bucket).
            boolean newSequence = existing == null && sequences.get(sequence) == null;
            LayerState ls = existing != null ? existing : layerState(sequence, layer, true);
            Segment segment = ls.buckets[ShardKey.bucket(position, expert, buckets)];
            Page page;
            try {
                page = pageForAppend(segment);
            } catch (RuntimeException | Error e) {
                forgetMade(sequence, layer, newSequence, existing, ls);
                throw e;
            }
            // Everything that allocates happens before the entry is written, so a failure (memory) leaves it unstored
            // and the shard whole (a page taken for it goes back). The hook that made room may have cleaned up the
            // index's eviction markers (this position's too, when past the horizon), so room for the position is
            // reserved now and its marker read anew.
            int evictedAs;
            try {
                ls.reserve(position);
                evictedAs = LayerState.evictedExpertOf(ls.location(position));
                if (evictedAs >= 0) {
                    if (ls.restoredAfterEviction == null) {
                        ls.restoredAfterEviction = new io.pikv.kv.scheduling.LongIntMap(16);
                    }
                    ls.restoredAfterEviction.put(position, evictedAs);
                }
            } catch (RuntimeException | Error e) {
                if (page.count == 0) {
                    free(page); // a page taken for this entry: back to the pool, no empty tail left behind
                }
                forgetMade(sequence, layer, newSequence, existing, ls);
                throw e;
            }
            int slot = page.count;
            page.writeEntry(slot, sk, 0, sv, 0);
            page.position[slot] = position;
            page.expert[slot] = (short) expert;
            page.count = slot + 1;
            if (evictedAs >= 0) {
                ls.evictedPerExpert[evictedAs]--; // stored again: no longer a miss
            }
            ls.setLocation(position, page.id * layout.pageTokens() + slot);
            ls.residentPerExpert[expert]++;
            ls.resident++;
            residentEntries.incrementAndGet(layer * shape.experts() + expert);
            entries++;
            changed(page);
        } finally {
            lock.writeLock().unlock();
        }
    }

    /**
     * The checks {@link #append} makes before it changes anything (range of layer, expert and position, the values,
     * the position not stored yet), for a caller that must refuse a batch of entries before storing any of them: an
     * append can evict other entries to make room, so a batch checked entry by entry while it is stored would change
     * the shard even when a later entry is refused.
     */
    public void checkAppend(long sequence, int layer, int position, int expert, float[] k, float[] v) {
        checkEntry(layer, position, expert, k, v);
        if (projection != null) {
            // The coefficients must fit the storage type too (append checks them under the write lock).
            float[] pk = new float[projK.length];
            float[] pv = new float[projV.length];
            projection.project(layer, expert, k, v, pk, pv);
            checkCoefficients(pk, layout.kvHeads() * layout.keyWidth());
            checkCoefficients(pv, layout.kvHeads() * layout.valueWidth());
        }
        lock.readLock().lock();
        try {
            checkFree(layerState(sequence, layer, false), sequence, layer, position);
        } finally {
            lock.readLock().unlock();
        }
    }

    private void checkEntry(int layer, int position, int expert, float[] k, float[] v) {
        shape.checkLayer(layer);
        shape.checkExpert(expert);
        checkPosition(position);
        checkValues("K", k);
        checkValues("V", v);
    }

    /** Refuses a position already stored; returns its location (negative: not resident, see LayerState). */
    private int checkFree(LayerState ls, long sequence, int layer, int position) {
        int loc = ls == null ? -1 : ls.location(position);
        if (loc >= 0) {
            throw new IllegalArgumentException("position " + position + " of sequence " + sequence + " layer "
                    + layer + " is already stored on shard " + id);
        }
        return loc;
    }

    private static void checkPosition(int position) {
        if (position < 0 || position > MAX_POSITION) {
            throw new IllegalArgumentException("position must be in [0, " + MAX_POSITION + "], got " + position);
        }
    }

    /**
     * Refuses a position outside [0, {@link #MAX_POSITION}] before a caller (a shard node checking a request before it
     * takes its locks) or this shard acts on any of them.
     */
    public static void checkPositions(int[] positions) {
        if (positions == null) {
            throw new IllegalArgumentException("positions are missing");
        }
        for (int p : positions) {
            if (p < 0 || p > MAX_POSITION) {
                throw new IllegalArgumentException("positions must be in [0, " + MAX_POSITION + "], got " + p);
            }
        }
    }

    private void checkCoefficients(float[] c, int n) {
        for (int i = 0; i < n; i++) {
            if (!Float.isFinite(c[i]) || (layout.type() == StorageType.FP16 && Math.abs(c[i]) > Fp16.MAX)) {
                throw new IllegalArgumentException("low-rank coefficient " + c[i] + " is outside the range of "
                        + layout.type() + " storage");
            }
        }
    }

    /** An evicted page's positions while the hook is told of them (write lock held), and whether that is going on. */
    private final int[] evictedPositions;
    private boolean evictedPositionsInUse;

    /** Whether the eviction hook's makeRoom runs (write lock held): the only time its context may be used. */
    private boolean makingRoom;

    private void makeRoom() {
        makingRoom = true;
        try {
            hook.makeRoom(context);
        } finally {
            makingRoom = false;
        }
    }

    private Page pageForAppend(Segment segment) {
        Page tail = segment.tail;
        if (tail != null && tail.count < layout.pageTokens()) {
            return tail;
        }
        Page page = pool.allocate();
        if (page == null) {
            makeRoom();
            tail = segment.tail; // the hook may have compacted this very segment
            if (tail != null && tail.count < layout.pageTokens()) {
                return tail;
            }
            page = pool.allocate();
            if (page == null) {
                if (pool.memoryExhausted()) {
                    throw new KvBudgetExceededException("shard " + id + " cannot take another page: the JVM's direct "
                            + "memory (" + DirectMemory.limit() + " bytes) is exhausted with " + pool.pagesInUse()
                            + " pages of " + layout.pageBytes() + " bytes in use, below the budget of "
                            + pool.budgetBytes() + " bytes, and the eviction hook freed nothing; raise "
                            + "-XX:MaxDirectMemorySize or lower the budget");
                }
                throw new KvBudgetExceededException("shard " + id + " is at its budget of " + pool.budgetBytes()
                        + " bytes (" + pool.pagesInUse() + " pages of " + layout.pageBytes()
                        + " bytes in use) and the eviction hook freed nothing");
            }
        }
        page.segment = segment;
        try {
            segment.add(page); // may grow the segment's list
        } catch (RuntimeException | Error e) {
            pool.release(page);
            throw e;
        }
        segment.tail = page;
        page.olderPage = newest;
        page.newerPage = null;
        if (newest != null) {
            newest.newerPage = page;
        } else {
            oldest = page;
        }
        newest = page;
        return page;
    }

    /**
     * A page's bytes changed: its device copy, if any, is stale. Called under the write lock once the shard's own
     * state is whole. A device that cannot take the news would answer from a stale copy, so it is let go (closed) and
     * the shard attends on the CPU from then on; the change itself stands.
     */
    private void changed(Page page) {
        DeviceAttention d = device;
        if (d == null) {
            return;
        }
        try {
            d.pageChanged(page);
        } catch (RuntimeException e) {
            device = null;
            LOG.log(System.Logger.Level.ERROR, "shard " + id + ": " + d.describe() + " failed to take a page change; "
                    + "attention runs on the CPU from now on", e);
            try {
                d.close();
            } catch (RuntimeException closing) {
                e.addSuppressed(closing);
            }
        }
    }

    private void free(Page page) {
        page.segment.remove(page);
        if (page.olderPage != null) {
            page.olderPage.newerPage = page.newerPage;
        } else {
            oldest = page.newerPage;
        }
        if (page.newerPage != null) {
            page.newerPage.olderPage = page.olderPage;
        } else {
            newest = page.olderPage;
        }
        page.olderPage = null;
        page.newerPage = null;
        pool.release(page);
    }

    /** The byte budget this shard enforces now. */
    public long budgetBytes() {
        lock.readLock().lock();
        try {
            return pool.budgetBytes();
        } finally {
            lock.readLock().unlock();
        }
    }

    /**
     * Changes the budget while the shard serves. A larger budget takes effect at once. A smaller one that the pages
     * in use exceed evicts through the shard's eviction hook, as a full shard does for an append, until they fit.
     * A hook makes room for one more page under the pool's limit, so while it is asked the limit is one page above
     * the new budget's: the pages in use end at the new budget's, not one below.
     *
     * @return the pages evicted to fit
     * @throws IllegalArgumentException   when the budget is below one page or above the pages a shard can address;
     *                                     nothing changes
     * @throws KvBudgetExceededException  when the hook stops freeing pages before they fit (e.g.
     *                                    {@link EvictionHook#REJECT}); the budget and the free pages stay as they
     *                                    were, and what the hook evicted before it stopped stays evicted (so with
     *                                    any other failure of the hook, which is rethrown)
     */
    public int resizeBudget(long budgetBytes) {
        lock.writeLock().lock();
        try {
            long previous = pool.budgetBytes();
            int before = pool.pagesInUse();
            pool.resize(budgetBytes, false); // validates; free-listed pages go once the shrink cannot be refused
            int target = pool.maxPages();
            if (before <= target) {
                pool.resize(budgetBytes);
                return 0;
            }
            try {
                pool.resize((target + 1L) * layout.pageBytes(), false);
                while (pool.pagesInUse() > target) {
                    int inUse = pool.pagesInUse();
                    makeRoom();
                    if (pool.pagesInUse() >= inUse) {
                        throw new KvBudgetExceededException("shard " + id + " cannot shrink to " + budgetBytes
                                + " bytes: " + pool.pagesInUse() + " pages of " + layout.pageBytes()
                                + " bytes are in use and the eviction policy freed nothing; the budget stays at "
                                + previous + " bytes");
                    }
                }
                pool.resize(budgetBytes);
            } catch (RuntimeException | Error e) {
                pool.resize(previous); // also on an Error (direct memory): never left at the temporary limit
                throw e;
            }
            return before - pool.pagesInUse();
        } finally {
            lock.writeLock().unlock();
        }
    }

    /** Evicts the resident entries at these positions; returns how many were resident here. */
    public int evict(long sequence, int layer, int[] positions) {
        return remove(sequence, layer, positions, Removal.EVICT);
    }

    /**
     * Takes back entries this shard just stored, as if they had never been appended: unlike {@link #evict}, nothing
     * is counted as an eviction (no miss will be charged for them). Used to undo the already applied part of a
     * multi-entry request that failed, so that a rejected request leaves the shard unchanged. Returns how many were
     * taken back: the resident ones and those evicted since they were stored (no miss will be charged for them
     * either); a position the shard does not hold (never stored, or taken back before) is not counted, and one listed
     * twice is refused.
     */
    public int withdraw(long sequence, int layer, int[] positions) {
        return remove(sequence, layer, positions, Removal.WITHDRAW);
    }

    /**
     * Evicts entries a compression chose to drop (a token budget such as PyramidKV's): counted as evictions and told to
     * the hook like any, but not remembered as evicted, so later lookups do not count them as misses — the cache was
     * meant not to hold them, and a larger budget would not bring them back. Returns how many were resident.
     */
    public int discard(long sequence, int layer, int[] positions) {
        return remove(sequence, layer, positions, Removal.DISCARD);
    }

    /**
     * Refuses a withdrawal that lists a position twice: it would be undone twice (an entry stored again after its
     * eviction would lose its eviction as well).
     */
    public static void checkDistinct(int[] positions) {
        int[] sorted = positions.clone();
        Arrays.sort(sorted);
        for (int i = 1; i < sorted.length; i++) {
            if (sorted[i] == sorted[i - 1]) {
                throw new IllegalArgumentException("position " + sorted[i] + " is listed twice");
            }
        }
    }

    /** Checks the arguments, then removes the entries under the write lock. */
    private int remove(long sequence, int layer, int[] positions, Removal removal) {
        shape.checkLayer(layer);
        checkPositions(positions);
        if (removal == Removal.WITHDRAW) {
            checkDistinct(positions);
        }
        lock.writeLock().lock();
        try {
            return removeTokens(sequence, layer, positions, removal);
        } finally {
            lock.writeLock().unlock();
        }
    }

    /** How entries leave a shard. */
    private enum Removal {
        /** Counted as an eviction and remembered as a miss for later lookups. */
        EVICT,
        /** As if never stored (undo of a failed request). */
        WITHDRAW,
        /** Counted as an eviction, not remembered (a compression's drop). */
        DISCARD
    }

    /** Evicts the page allocated longest ago; returns the entries it held (0 when the shard is empty). */
    public int evictOldestPage() {
        lock.writeLock().lock();
        try {
            if (oldest == null) {
                return 0;
            }
            int n = oldest.count;
            evictPage(oldest);
            return n;
        } finally {
            lock.writeLock().unlock();
        }
    }

    private int evictTokens(long sequence, int layer, int[] positions) {
        return removeTokens(sequence, layer, positions, Removal.EVICT);
    }

    private int removeTokens(long sequence, int layer, int[] positions, Removal removal) {
        boolean counted = removal != Removal.WITHDRAW;
        LayerState[] layers = sequences.get(sequence);
        LayerState ls = layers == null ? null : layers[layer];
        if (ls == null) {
            return 0;
        }
        int tokens = layout.pageTokens();
        int evicted = 0;
        for (int position : positions) {
            int loc = ls.location(position);
            if (loc < 0) {
                if (!counted && LayerState.discarded(loc)) {
                    // Withdrawing an entry discarded meanwhile: taken back all the same (no miss was counted for it).
                    ls.clearLocation(position);
                    evicted++;
                    continue;
                }
                int evictedAs = LayerState.evictedExpertOf(loc);
                if (!counted && evictedAs >= 0 && !LayerState.putBack(loc)) {
                    // Withdrawing an entry that was evicted meanwhile: it never happened, so it is no miss either;
                    // it is taken back all the same (the caller's undo is complete). A re-store evicted meanwhile goes
                    // back to the eviction before it.
                    ls.evictedPerExpert[evictedAs]--;
                    int prior = LayerState.priorEvictionOf(loc);
                    if (prior >= 0) {
                        ls.markPutBack(position, prior);
                        ls.evictedPerExpert[prior]++;
                    } else {
                        ls.clearLocation(position);
                    }
                    evicted++;
                }
                // A position taken back before reads as never stored (or as the eviction its withdrawn re-store had
                // replaced), and is not counted: the gateway may give it again, and a later attempt's undo must not
                // be confirmed by an earlier attempt's.
                continue;
            }
            Page page = pool.byId(loc / tokens);
            int slot = loc % tokens;
            Segment segment = page.segment;
            int before = ls.restoredAfterEviction == null ? -1 : ls.restoredAfterEviction.remove(position);
            if (removal == Removal.EVICT) {
                countEviction(ls, layer, page.expert[slot]);
                ls.markEvicted(position, page.expert[slot], before);
            } else if (removal == Removal.DISCARD) {
                countEviction(ls, layer, page.expert[slot]);
                ls.evictedPerExpert[page.expert[slot]]--; // an eviction, but no miss to come
                if (before >= 0) {
                    // A re-store discarded: the eviction it had replaced stands again (a miss, as before the
                    // re-store), and withdrawing the re-store takes it back to that eviction, as after an eviction.
                    ls.markEvicted(position, before, before);
                    ls.evictedPerExpert[before]++;
                } else {
                    ls.markDiscarded(position); // no miss; a withdrawal still finds it taken
                }
            } else {
                uncount(ls, layer, page.expert[slot]);
                if (before >= 0) {
                    // Withdrawing a re-store: the entry is back to evicted, as it was before that append (and a
                    // second withdrawal of the position, taken back now, leaves that eviction standing).
                    ls.markPutBack(position, before);
                    ls.evictedPerExpert[before]++;
                } else {
                    ls.clearLocation(position);
                }
            }
            Page donor = segment.tail != null ? segment.tail : segment.pages.get(segment.pages.size() - 1);
            int last = donor.count - 1;
            boolean moved = donor != page || last != slot;
            if (moved) {
                page.copyEntry(donor, last, slot, moveK, moveV);
                ls.setLocation(page.position[slot], page.id * tokens + slot); // held already: allocates nothing
            }
            donor.count = last;
            segment.tail = donor;
            if (moved) {
                changed(page); // once the segment is whole again, as an append tells it
            }
            if (last == 0) {
                free(donor);
            }
            evicted++;
            if (counted) {
                tellEvicted(sequence, layer, position); // once the entry is gone from its page
            }
        }
        return evicted;
    }

    /**
     * Tells the hook of an eviction, after the shard's state is whole again: a hook that throws is logged, never left to
     * leave an entry counted evicted but still in its page.
     */
    private void tellEvicted(long sequence, int layer, int position) {
        try {
            hook.evicted(sequence, layer, position);
        } catch (RuntimeException e) {
            LOG.log(System.Logger.Level.WARNING, "shard " + id + ": the eviction hook failed on the eviction of ("
                    + sequence + ", " + layer + ", " + position + "); the shard's state is whole", e);
        }
    }

    private void evictPage(Page page) {
        LayerState ls = page.segment.layerState;
        int layer = page.segment.layer;
        long sequence = page.sequence();
        int count = page.count;
        // The page's positions outlive it (the hook hears of them once it is free): kept in the shard's own array,
        // unless a hook evicts again from inside evicted() while this one is told (then in an array of their own).
        int[] positions = evictedPositionsInUse ? new int[count] : evictedPositions;
        System.arraycopy(page.position, 0, positions, 0, count);
        for (int slot = 0; slot < count; slot++) {
            countEviction(ls, layer, page.expert[slot]);
            int before = ls.restoredAfterEviction == null ? -1 : ls.restoredAfterEviction.remove(page.position[slot]);
            ls.markEvicted(page.position[slot], page.expert[slot], before);
        }
        free(page);
        boolean own = positions == evictedPositions;
        evictedPositionsInUse = true;
        try {
            for (int i = 0; i < count; i++) {
                tellEvicted(sequence, layer, positions[i]);
            }
        } finally {
            if (own) {
                evictedPositionsInUse = false;
            }
        }
    }

    private void uncount(LayerState ls, int layer, int expert) {
        ls.residentPerExpert[expert]--;
        ls.resident--;
        residentEntries.decrementAndGet(layer * shape.experts() + expert);
        entries--;
    }

    private void countEviction(LayerState ls, int layer, int expert) {
        ls.residentPerExpert[expert]--;
        ls.evictedPerExpert[expert]++;
        ls.resident--;
        int cell = layer * shape.experts() + expert;
        residentEntries.decrementAndGet(cell);
        counters.incrementAndGet(cell * 4 + EVICTIONS);
        entries--;
    }

    /** Frees everything this shard holds for the sequence (closing is not counted as eviction). */
    public void dropSequence(long sequence) {
        lock.writeLock().lock();
        try {
            LayerState[] layers = sequences.remove(sequence);
            if (layers == null) {
                return;
            }
            for (int layer = 0; layer < layers.length; layer++) {
                LayerState ls = layers[layer];
                if (ls == null) {
                    continue;
                }
                for (Segment segment : ls.buckets) {
                    while (!segment.pages.isEmpty()) {
                        free(segment.pages.get(segment.pages.size() - 1));
                    }
                }
                for (int e = 0; e < shape.experts(); e++) {
                    residentEntries.addAndGet(layer * shape.experts() + e, -ls.residentPerExpert[e]);
                }
                entries -= ls.resident;
            }
        } finally {
            lock.writeLock().unlock();
        }
    }

    /**
     * Attention of {@code query} ({@code qHeads × headDim}, head-major, unscaled) over this shard's entries of
     * (sequence, layer) in scope, as a mergeable partial. Counts one lookup per entry in scope.
     */
    public PartialAttention attendPartial(long sequence, int layer, float[] query, AttentionScope scope,
                                          boolean weights) {
        return attendPartial(sequence, layer, query, scope, weights, null, 1);
    }

    /**
     * {@link #attendPartial(long, int, float[], AttentionScope, boolean)} on up to {@code parallelism} threads: the
     * calling thread and {@code parallelism - 1} tasks on {@code pool} take buckets one at a time until none is left,
     * so a thread that runs slower (its processor shared with other work) takes fewer; each bucket's partial is
     * computed on its own and they merge (log-sum-exp) in bucket order, so neither the number of threads nor which
     * thread took which bucket changes the order of any sum, and weights come in bucket order. Without a pool, or
     * with one thread, it is the one-pass call (one accumulator over every bucket: equal up to float rounding).
     */
    public PartialAttention attendPartial(long sequence, int layer, float[] query, AttentionScope scope,
                                          boolean weights, ExecutorService pool, int parallelism) {
        return attendPartial(sequence, layer, query, scope, weights, pool, parallelism, -1);
    }

    /**
     * {@link #attendPartial(long, int, float[], AttentionScope, boolean, ExecutorService, int)}, only if the entry at
     * {@code mustHold} (≥ 0) is resident when the attention reads the shard: null, counting nothing, when it is not
     * (a step's own token, evicted by another request's room between its store and its attention).
     */
    public PartialAttention attendPartial(long sequence, int layer, float[] query, AttentionScope scope,
                                          boolean weights, ExecutorService pool, int parallelism, int mustHold) {
        shape.checkLayer(layer);
        if (scope == null) {
            throw new IllegalArgumentException("the attention scope is missing (AttentionScope.all() for every entry)");
        }
        scope.validate(shape.experts());
        float[] scaled = shape.scaledQuery(query);
        int threads = pool == null ? 1 : Math.min(parallelism, buckets);
        // One read lock for the whole call, counting included: every bucket is read in the same state. The tasks on
        // the pool take no lock of their own (a reader queued behind a waiting writer would never run while this
        // thread waits for it); they run under this one, which is released only after every task has finished.
        lock.readLock().lock();
        try {
            if (mustHold >= 0) {
                LayerState ls = layerState(sequence, layer, false);
                if (ls == null || ls.location(mustHold) < 0) {
                    return null;
                }
            }
            PartialAttention partial = attendLocked(sequence, layer, scaled, query, scope, weights, pool, threads);
            // Counted once the partial is there: a call that failed looked nothing up (and the lock is still held,
            // so the counts are of the state the partial read).
            countLookupsLocked(sequence, layer, scope);
            return partial;
        } finally {
            lock.readLock().unlock();
        }
    }

    /** The body of {@link #attendPartial}: the read lock held. */
    private PartialAttention attendLocked(long sequence, int layer, float[] scaled, float[] query, AttentionScope scope,
                                          boolean weights, ExecutorService pool, int threads) {
        DeviceAttention d = device;
        if (d != null && !weights && scope.isAll()) {
            PartialAttention onDevice = attendOnDeviceLocked(d, sequence, layer, query);
            if (onDevice != null) {
                return onDevice;
            }
        }
        if (threads <= 1) {
            return attendBucketsLocked(sequence, layer, scaled, scope, weights, 0, buckets);
        }
        // The calling thread and threads - 1 pool tasks take buckets one at a time; returns once no task runs any more.
        PartialAttention[] perBucket = SharedWork.run(pool, threads, buckets,
                b -> attendBucketsLocked(sequence, layer, scaled, scope, weights, b, b + 1));
        return PartialAttention.merge(Arrays.asList(perBucket));
    }

    /**
     * For a caller holding the read lock ({@link KvStore}): the device's partial when this shard attends on one and
     * the call is one it takes (whole sequence, no weights), else null (attend over the buckets on the CPU).
     */
    PartialAttention attendOnDeviceLocked(long sequence, int layer, float[] query, AttentionScope scope,
                                          boolean weights) {
        DeviceAttention d = device;
        return d != null && !weights && scope.isAll() ? attendOnDeviceLocked(d, sequence, layer, query) : null;
    }

    /** The device's partial over every page of (sequence, layer), or null to attend on the CPU instead. */
    private PartialAttention attendOnDeviceLocked(DeviceAttention d, long sequence, int layer, float[] query) {
        LayerState ls = layerState(sequence, layer, false);
        if (ls == null) {
            return null;
        }
        List<Page> pages = new ArrayList<>();
        for (Segment segment : ls.buckets) {
            for (Page page : segment.pages) {
                if (page.count > 0) {
                    pages.add(page);
                }
            }
        }
        return pages.isEmpty() ? null : d.attend(pages, query);
    }

    /** Counts one attention call's lookups over (sequence, layer, scope), lock held: hits resident, misses evicted. */
    void countLookupsLocked(long sequence, int layer, AttentionScope scope) {
        LayerState ls = layerState(sequence, layer, false);
        if (ls == null) {
            return;
        }
        for (int e = 0; e < shape.experts(); e++) {
            int hits = ls.residentPerExpert[e];
            int misses = ls.evictedPerExpert[e];
            if (hits + misses == 0 || !scope.includes(e)) {
                continue;
            }
            int cell = (layer * shape.experts() + e) * 4;
            // Lookups are not counted apart: stats() reads them as hits + misses, so a snapshot taken while
            // attention counts (both under the read lock) never shows a call's hits without its lookups.
            counters.addAndGet(cell + HITS, hits);
            counters.addAndGet(cell + MISSES, misses);
        }
    }

    /**
     * For a caller that attends over several shards in one state ({@link KvStore#attendPartial}): takes this shard's
     * read lock, to be released with {@link #unlockRead}; while held, the {@code ...Locked} methods may run on any
     * thread (they take no lock: a pool thread queued behind a waiting writer would never run).
     */
    void lockRead() {
        lock.readLock().lock();
    }

    void unlockRead() {
        lock.readLock().unlock();
    }

    /** Whether any entry of (sequence, layer) in {@code scope} is resident here, while {@link #lockRead} is held. */
    boolean holdsLocked(long sequence, int layer, AttentionScope scope) {
        LayerState ls = layerState(sequence, layer, false);
        return ls != null && ls.resident > 0 && (scope.isAll() || scope.anyIn(ls.residentPerExpert));
    }

    /** The partial over buckets {@code [from, to)}, the read lock held (by this thread or the one it runs for). */
    PartialAttention attendBucketsLocked(long sequence, int layer, float[] scaledQuery, AttentionScope scope,
                                                 boolean weights, int from, int to) {
        int qHeads = shape.qHeads();
        int dim = shape.headDim();
        int tokens = layout.pageTokens();
        LayerState ls = layerState(sequence, layer, false);
        if (ls == null) {
            return PartialAttention.empty(qHeads, dim, weights);
        }
        int n = 0;
        for (int b = from; b < to; b++) {
            for (Page page : ls.buckets[b].pages) {
                n += page.count;
            }
        }
        KernelScratch scratch = KernelScratch.get().ensure(0, 0, tokens);
        float[] bias = scratch.bias;
        AttentionAccumulator acc = new AttentionAccumulator(qHeads, dim);
        kernel.begin(acc, layer);
        if (weights && (long) qHeads * n > Integer.MAX_VALUE - 8) {
            throw new IllegalArgumentException("attention weights for " + n + " entries of " + qHeads + " query heads "
                    + "would need " + (long) qHeads * n + " values, more than one array holds; attend without weights "
                    + "or over fewer entries");
        }
        int[] positions = weights ? new int[n] : null;
        float[] logits = weights ? new float[qHeads * n] : null;
        int offset = 0;
        int visited = 0;
        for (int b = from; b < to; b++) {
            for (Page page : ls.buckets[b].pages) {
                int count = page.count;
                int inScope = 0;
                for (int slot = 0; slot < tokens; slot++) {
                    boolean visit = slot < count && scope.includes(page.expert[slot]);
                    bias[slot] = visit ? 0f : Float.NEGATIVE_INFINITY;
                    inScope += visit ? 1 : 0;
                }
                if (inScope > 0) {
                    kernel.foldPage(page, bias, scaledQuery, qHeads, acc, scratch, logits, n, offset);
                } else if (weights) {
                    for (int h = 0; h < qHeads; h++) {
                        Arrays.fill(logits, h * n + offset, h * n + offset + count, Float.NEGATIVE_INFINITY);
                    }
                }
                if (weights) {
                    System.arraycopy(page.position, 0, positions, offset, count);
                }
                offset += count;
                visited += inScope;
            }
        }
        kernel.finish(acc);
        double[] m = new double[qHeads];
        double[] l = new double[qHeads];
        double[] o = new double[qHeads * dim];
        for (int h = 0; h < qHeads; h++) {
            m[h] = acc.m[h];
            l[h] = acc.l[h];
        }
        for (int i = 0; i < o.length; i++) {
            o[i] = acc.o[i];
        }
        if (weights && visited < n) {
            int[] keptPositions = new int[visited];
            float[] keptLogits = new float[qHeads * visited];
            int j = 0;
            for (int i = 0; i < n; i++) {
                if (logits[i] == Float.NEGATIVE_INFINITY && !scope.isAll()) {
                    continue; // out of scope (every head has −∞ there)
                }
                keptPositions[j] = positions[i];
                for (int h = 0; h < qHeads; h++) {
                    keptLogits[h * visited + j] = logits[h * n + i];
                }
                j++;
            }
            positions = keptPositions;
            logits = keptLogits;
        }
        return new PartialAttention(qHeads, dim, m, l, o, visited, positions, logits);
    }

    /**
     * Runs {@code action} on the positions of (sequence, layer) resident here, under the shard's read lock: nothing is
     * stored, evicted or withdrawn on the shard until it returns, so what it learns stays true while it acts on it.
     * The action must not call back into the shard's writers.
     */
    public void withResidentPositions(long sequence, int layer, java.util.function.Consumer<int[]> action) {
        shape.checkLayer(layer);
        lock.readLock().lock();
        try {
            action.accept(residentPositionsLocked(sequence, layer));
        } finally {
            lock.readLock().unlock();
        }
    }

    /** Positions of the resident entries of (sequence, layer) on this shard, in no particular order. */
    public int[] residentPositions(long sequence, int layer) {
        shape.checkLayer(layer);
        lock.readLock().lock();
        try {
            return residentPositionsLocked(sequence, layer);
        } finally {
            lock.readLock().unlock();
        }
    }

    private int[] residentPositionsLocked(long sequence, int layer) {
        LayerState ls = layerState(sequence, layer, false);
        if (ls == null) {
            return new int[0];
        }
        int[] out = new int[ls.resident];
        ls.positions(out);
        return out;
    }

    /** Those of {@code positions} (each in range) not resident here for (sequence, layer), in their order. */
    public int[] notResident(long sequence, int layer, int[] positions) {
        shape.checkLayer(layer);
        if (positions == null) {
            throw new IllegalArgumentException("positions must not be null");
        }
        lock.readLock().lock();
        try {
            LayerState ls = layerState(sequence, layer, false);
            int[] out = new int[positions.length];
            int n = 0;
            for (int p : positions) {
                if (ls == null || ls.location(p) < 0) {
                    out[n++] = p;
                }
            }
            return n == out.length ? out : Arrays.copyOf(out, n);
        } finally {
            lock.readLock().unlock();
        }
    }

    /** Resident entries of (sequence, layer) on this shard. */
    public int resident(long sequence, int layer) {
        shape.checkLayer(layer);
        lock.readLock().lock();
        try {
            LayerState ls = layerState(sequence, layer, false);
            return ls == null ? 0 : ls.resident;
        } finally {
            lock.readLock().unlock();
        }
    }

    public ShardStats stats() {
        lock.readLock().lock();
        try {
            List<ExpertLayerCounters> list = new ArrayList<>();
            for (int layer = 0; layer < shape.layers(); layer++) {
                for (int e = 0; e < shape.experts(); e++) {
                    int cell = layer * shape.experts() + e;
                    long hits = counters.get(cell * 4 + HITS);
                    long misses = counters.get(cell * 4 + MISSES);
                    long evictions = counters.get(cell * 4 + EVICTIONS);
                    long resident = residentEntries.get(cell);
                    if (hits + misses == 0 && evictions == 0 && resident == 0) {
                        continue;
                    }
                    // Each entry's share of its page, rounded down over the expert's entries: the experts' bytes
                    // never add up to more than the pages they fill (int8 pages' bytes need not divide by their
                    // tokens, and entryBytes rounds each entry's share up).
                    list.add(new ExpertLayerCounters(e, layer, hits + misses, hits, misses, evictions,
                            resident * layout.pageBytes() / layout.pageTokens()));
                }
            }
            return new ShardStats(id, pool.budgetBytes(), pool.bytesInUse(), pool.bytesAllocated(),
                    pool.pagesInUse(), pool.maxPages(), entries, List.copyOf(list));
        } finally {
            lock.readLock().unlock();
        }
    }

    /**
     * Takes back the state a rejected append made for its (sequence, layer) — the layer's state, and the sequence's
     * entry when the append made that too — so that nothing of a rejected append stays. Write lock held.
     */
    private void forgetMade(long sequence, int layer, boolean newSequence, LayerState existing, LayerState made) {
        if (existing != null || made.resident != 0) {
            return;
        }
        if (newSequence) {
            sequences.remove(sequence);
        } else {
            LayerState[] layers = sequences.get(sequence);
            if (layers != null) {
                layers[layer] = null;
            }
        }
    }

    /** Whether (sequence, layer) has state on this shard (tests of what a rejected append leaves). */
    boolean holdsLayerState(long sequence, int layer) {
        lock.readLock().lock();
        try {
            return layerState(sequence, layer, false) != null;
        } finally {
            lock.readLock().unlock();
        }
    }

    /** Slots of (sequence, layer)'s position index now allocated, 0 without one (tests of its memory). */
    int indexCapacity(long sequence, int layer) {
        return indexFigure(sequence, layer, LayerState::indexCapacity);
    }

    /** Positions (sequence, layer)'s index holds now, resident or evicted (tests of its memory). */
    int indexed(long sequence, int layer) {
        return indexFigure(sequence, layer, LayerState::indexed);
    }

    private int indexFigure(long sequence, int layer, java.util.function.ToIntFunction<LayerState> figure) {
        lock.readLock().lock();
        try {
            LayerState ls = layerState(sequence, layer, false);
            return ls == null ? 0 : figure.applyAsInt(ls);
        } finally {
            lock.readLock().unlock();
        }
    }

    private LayerState layerState(long sequence, int layer, boolean create) {
        LayerState[] layers = sequences.get(sequence);
        if (layers == null) {
            if (!create) {
                return null;
            }
            // Made whole before it is registered: a failure to allocate either part leaves no sequence behind.
            LayerState[] made = new LayerState[shape.layers()];
            LayerState ls = new LayerState(sequence, layer, buckets, shape.experts());
            made[layer] = ls;
            sequences.put(sequence, made);
            return ls;
        }
        LayerState ls = layers[layer];
        if (ls == null && create) {
            ls = new LayerState(sequence, layer, buckets, shape.experts());
            layers[layer] = ls;
        }
        return ls;
    }



    private void checkValues(String name, float[] values) {
        // Low-rank pages store coefficients, checked against the storage type on their own (checkCoefficients).
        boolean half = layout.type() == StorageType.FP16 && !layout.projected();
        if (!half) {
            shape.checkKv(name, values);
            return;
        }
        int width = shape.kvWidth();
        if (values == null || values.length != width) {
            throw new IllegalArgumentException(name + " must hold kvHeads × headDim = " + width + " floats, got "
                    + (values == null ? "none" : values.length));
        }
        for (int i = 0; i < width; i++) {
            float x = values[i];
            if (!(Math.abs(x) <= Fp16.MAX)) {
                throw new IllegalArgumentException(name + "[head " + (i / shape.headDim()) + "][" + (i % shape.headDim())
                        + "] is " + x + ": values must be finite" + (!Float.isFinite(x) ? ""
                        : " and within ±65504 for fp16 storage"));
            }
        }
    }

    /** The context handed to the eviction hook; runs under the write lock the append holds. */
    private final class Context implements EvictionContext {
        @Override
        public int shardId() {
            return id;
        }

        @Override
        public Page oldestPage() {
            return oldest;
        }

        @Override
        public void evictPage(Page page) {
            checkHeld();
            if (page == null || page.segment == null || !pool.holds(page)) {
                throw new IllegalArgumentException("page " + (page == null ? "null" : String.valueOf(page.id))
                        + " is not live on shard " + id);
            }
            KvShard.this.evictPage(page);
        }

        @Override
        public int evictTokens(long sequence, int layer, int[] positions) {
            checkHeld();
            shape.checkLayer(layer);
            checkPositions(positions);
            return KvShard.this.evictTokens(sequence, layer, positions);
        }

        /** A hook that kept the context and calls it outside the append that made it would change the shard unlocked. */
        private void checkHeld() {
            if (!lock.isWriteLockedByCurrentThread() || !makingRoom) {
                throw new IllegalStateException("shard " + id + ": the eviction context is usable only inside the "
                        + "eviction hook's makeRoom call");
            }
        }

        @Override
        public PagePool pool() {
            return pool;
        }
    }
}
