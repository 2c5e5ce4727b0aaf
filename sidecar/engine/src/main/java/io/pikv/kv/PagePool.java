package io.pikv.kv;

import java.util.ArrayDeque;
import java.util.Arrays;

/**
 * Allocates pages under a hard byte budget and recycles them.
 *
 * <p>Direct memory is taken lazily, one page at a time, and never more than {@code budgetBytes / pageBytes}
 * pages; released pages go to a free list and are reused, so the off-heap memory a pool holds is at most its
 * budget. The budget can change ({@link #resize}): a larger one takes effect at once; a smaller one drops free-listed
 * pages beyond it at once and in-use pages as they are released (their shard evicts them), so the pool is back
 * within its budget when its pages in use are. A dropped page's id is reused; its direct memory goes with the
 * garbage collector. Not thread-safe: its shard's lock guards it.
 */
public final class PagePool {
    private final KvLayout layout;
    private long budgetBytes;
    private int maxPages;
    private final ArrayDeque<Page> free = new ArrayDeque<>();
    private Page[] byId = new Page[16];
    /** Ids of dropped pages, for reuse. */
    private int[] freeIds = new int[0];
    private int freeIdCount;
    /** The next id never used. */
    private int created;
    /** Pages that exist: in use plus free-listed. */
    private int live;
    private int inUse;

    public PagePool(KvLayout layout, long budgetBytes) {
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
        // A location is page id × pageTokens + slot, an int: no more pages than that can name.
        return (int) Math.min(pages, Integer.MAX_VALUE / layout.pageTokens() - 1);
    }

    /**
     * Sets a new budget. Free-listed pages beyond it are dropped now; when more pages are in use than it allows,
     * {@link #allocate} returns null until the shard has evicted enough, and the pages it releases meanwhile are
     * dropped rather than free-listed.
     *
     * @throws IllegalArgumentException when the budget is below one page (nothing changes)
     */
    void resize(long budgetBytes) {
        this.maxPages = pagesFor(layout, budgetBytes);
        this.budgetBytes = budgetBytes;
        while (live > maxPages && !free.isEmpty()) {
            drop(free.pollLast());
        }
    }

    /** A free page with {@code count == 0}, or {@code null} when the budget is exhausted. */
    Page allocate() {
        if (inUse >= maxPages) {
            return null;
        }
        Page page = free.pollFirst();
        if (page == null) {
            int id = freeIdCount > 0 ? freeIds[freeIdCount - 1] : created;
            page = new Page(id, layout); // may throw (direct memory exhausted): then no id is taken
            if (freeIdCount > 0) {
                freeIdCount--;
            } else {
                created++;
            }
            if (id >= byId.length) {
                byId = Arrays.copyOf(byId, Math.max(id + 1, byId.length * 2));
            }
            byId[id] = page;
            live++;
        }
        page.count = 0;
        inUse++;
        return page;
    }

    void release(Page page) {
        page.count = 0;
        page.segment = null;
        page.indexInSegment = -1;
        inUse--;
        if (live > maxPages) {
            drop(page); // the budget shrank: this page's memory goes
        } else {
            free.addFirst(page);
        }
    }

    private void drop(Page page) {
        byId[page.id] = null;
        if (freeIdCount == freeIds.length) {
            freeIds = Arrays.copyOf(freeIds, Math.max(16, freeIds.length * 2));
        }
        freeIds[freeIdCount++] = page.id;
        live--;
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

    /** Pages the budget allows. */
    public int maxPages() {
        return maxPages;
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
