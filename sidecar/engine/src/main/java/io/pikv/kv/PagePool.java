package io.pikv.kv;

import java.util.Arrays;

/**
 * Allocates pages under a hard byte budget and recycles them.
 *
 * <p>Direct memory is taken lazily, one page at a time, and never more than {@code budgetBytes / pageBytes}
 * pages; released pages go to a free list and are reused, so the off-heap memory a pool holds is at most its
 * budget. The budget can change ({@link #resize}): a larger one takes effect at once; a smaller one drops free-listed
 * pages beyond it at once and in-use pages as they are released (their shard evicts them), so the pool is back
 * within its budget when its pages in use are. A dropped page's id is reused; its direct memory goes with the
 * garbage collector. Releasing a page allocates nothing (the free list and the free ids have room for every id
 * from the page's creation on), so a release, which its shard makes after it has unlinked the page, cannot fail
 * half-way. Not thread-safe: its shard's lock guards it.
 */
public final class PagePool {
    private final KvLayout layout;
    private long budgetBytes;
    private int maxPages;
    /** Free-listed pages, the most recently released on top; room for one per id ever created. */
    private Page[] free = new Page[16];
    private int freeCount;
    private Page[] byId = new Page[16];
    /** Ids of dropped pages, for reuse; room for every id ever created. */
    private int[] freeIds = new int[16];
    private int freeIdCount;
    /** The next id never used. */
    private int created;
    /** Pages that exist: in use plus free-listed. */
    private int live;
    private int inUse;
    /** Whether {@code bytes} more of direct memory can be taken now ({@link DirectMemory#fits} outside tests). */
    private final java.util.function.LongPredicate memoryFits;
    /** The last {@link #allocate} refused for want of direct memory, not for the budget. */
    private boolean memoryExhausted;
    /**
     * Pages in use when direct memory last ran out: until a page can be allocated again (or the budget is set anew),
     * {@link #maxPages()} is at most this, so eviction hooks, which free pages while the pool is at its maximum,
     * make room within the memory there is.
     */
    private int memoryCap = Integer.MAX_VALUE;
    /**
     * Pages dropped (by a smaller budget) since an allocation last went through the JDK's own reserve: their memory
     * counts until the collector frees it, so with such pages about, an allocation the counter refuses is tried all the
     * same — the JDK then collects and retries — rather than capping the pool below its budget for as long as they
     * linger.
     */
    private int droppedSinceReserve;

    public PagePool(KvLayout layout, long budgetBytes) {
        this(layout, budgetBytes, DirectMemory::fits);
    }

    PagePool(KvLayout layout, long budgetBytes, java.util.function.LongPredicate memoryFits) {
        this.memoryFits = memoryFits;
        this.layout = layout;
        this.maxPages = pagesFor(layout, budgetBytes);
        this.budgetBytes = budgetBytes;
    }

    private static int pagesFor(KvLayout layout, long budgetBytes) {
        long pages = budgetBytes / layout.pageBytes();
        if (pages < 1) {
            throw new IllegalArgumentException("budget of " + budgetBytes + " bytes is below one page of "
                    + layout.pageBytes() + " bytes (" + layout + "): raise the budget or shrink pageTokens");
        }
        if (pages > layout.maxPages()) {
            throw new IllegalArgumentException("budget of " + budgetBytes + " bytes is " + pages + " pages of "
                    + layout.pageBytes() + " bytes, more than the " + layout.maxPages() + " one shard can address ("
                    + (long) layout.maxPages() * layout.pageBytes() + " bytes): lower the budget, spread it over more "
                    + "shards, or use larger pages");
        }
        return (int) pages;
    }

    /**
     * Sets a new budget. Free-listed pages beyond it are dropped now; when more pages are in use than it allows,
     * {@link #allocate} returns null until the shard has evicted enough, and the pages it releases meanwhile are
     * dropped rather than free-listed.
     *
     * @throws IllegalArgumentException when the budget is below one page or above {@link KvLayout#maxPages()} pages
     *                                  (nothing changes)
     */
    void resize(long budgetBytes) {
        resize(budgetBytes, true);
    }

    /**
     * {@link #resize(long)}, dropping the free-listed pages beyond the new budget only when {@code trimFree}: a shrink
     * that may still be refused keeps them, so that a refusal leaves the pool as it was.
     */
    void resize(long budgetBytes, boolean trimFree) {
        this.maxPages = pagesFor(layout, budgetBytes);
        this.budgetBytes = budgetBytes;
        this.memoryCap = Integer.MAX_VALUE;
        while (trimFree && live > maxPages && freeCount > 0) {
            drop(popFree());
        }
    }

    /**
     * A free page with {@code count == 0}, or {@code null} when the budget is exhausted — or when the JVM's direct
     * memory is ({@link #memoryExhausted()}): the shard then evicts to reuse its own pages, as at its budget, instead
     * of failing the append, and instead of the JDK's collect-and-retry, which would stall the shard under its lock —
     * except once after a smaller budget dropped pages, whose memory only a collection gives back.
     */
    Page allocate() {
        memoryExhausted = false;
        if (inUse >= maxPages) {
            return null;
        }
        Page page = freeCount > 0 ? popFree() : null;
        if (page == null) {
            int id = freeIdCount > 0 ? freeIds[freeIdCount - 1] : created;
            if (!memoryFits.test(layout.pageBytes())) {
                if (droppedSinceReserve == 0) {
                    return outOfMemory();
                }
                droppedSinceReserve = 0; // tried once through the JDK's reserve, which collects what it can
            }
            try {
                page = new Page(id, layout); // no id is taken if this fails
            } catch (OutOfMemoryError e) {
                if (!String.valueOf(e.getMessage()).toLowerCase(java.util.Locale.ROOT)
                        .contains("direct buffer memory")) {
                    throw e; // the heap ran out (the page's own arrays), not direct memory: no budget of this pool
                }
                return outOfMemory(); // reserved between the check and here, by another pool or the server
            }
            memoryCap = Integer.MAX_VALUE;
            if (id >= byId.length) { // a new id: room for it everywhere, before it is taken
                int length = Math.max(id + 1, byId.length * 2);
                Page[] ids = Arrays.copyOf(byId, length);
                Page[] frees = Arrays.copyOf(free, length);
                int[] dropped = Arrays.copyOf(freeIds, length);
                byId = ids;
                free = frees;
                freeIds = dropped;
            }
            if (freeIdCount > 0) {
                freeIdCount--;
            } else {
                created++;
            }
            byId[id] = page;
            live++;
        }
        page.count = 0;
        inUse++;
        return page;
    }

    private Page outOfMemory() {
        memoryExhausted = true;
        memoryCap = inUse;
        return null;
    }

    /** Whether the last {@link #allocate} returned null because the JVM's direct memory ran out. */
    boolean memoryExhausted() {
        return memoryExhausted;
    }

    void release(Page page) {
        if (live <= maxPages) {
            free[freeCount++] = page;
        }
        page.count = 0;
        page.segment = null;
        page.indexInSegment = -1;
        inUse--;
        if (live > maxPages) {
            drop(page); // the budget shrank: this page's memory goes
        }
    }

    private Page popFree() {
        Page page = free[--freeCount];
        free[freeCount] = null;
        return page;
    }

    private void drop(Page page) {
        droppedSinceReserve++;
        byId[page.id] = null;
        freeIds[freeIdCount++] = page.id;
        live--;
    }

    /** Whether {@code page} is this pool's page of its id (a page of another pool, or one dropped, is not). */
    boolean holds(Page page) {
        return page.id >= 0 && page.id < byId.length && byId[page.id] == page;
    }

    Page byId(int id) {
        return byId[id];
    }

    public KvLayout layout() {
        return layout;
    }

    public long budgetBytes() {
        return budgetBytes;
    }

    /** Pages the budget allows; fewer, the pages in use then, while direct memory is exhausted (see allocate). */
    public int maxPages() {
        return Math.min(maxPages, memoryCap);
    }

    public int pagesInUse() {
        return inUse;
    }

    /** Bytes of the pages in use. */
    public long bytesInUse() {
        return (long) inUse * layout.pageBytes();
    }

    /**
     * Off-heap bytes of the pages this pool holds (in use plus free-listed); never above the budget, except after a
     * shrink until the shard has evicted down to it.
     */
    public long bytesAllocated() {
        return (long) live * layout.pageBytes();
    }
}
