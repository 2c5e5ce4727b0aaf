package io.pikv.kv;

import java.util.ArrayDeque;

/**
 * Allocates pages under a hard byte budget and recycles them.
 *
 * <p>Direct memory is taken lazily, one page at a time, and never more than {@code budgetBytes / pageBytes}
 * pages; released pages go to a free list and are reused, so the off-heap memory a pool holds is at most its
 * budget for its whole life. Not thread-safe: its shard's lock guards it.
 */
public final class PagePool {
    private final KvLayout layout;
    private final long budgetBytes;
    private final int maxPages;
    private final ArrayDeque<Page> free = new ArrayDeque<>();
    private Page[] byId = new Page[16];
    private int created;
    private int inUse;

    public PagePool(KvLayout layout, long budgetBytes) {
        this.layout = layout;
        this.budgetBytes = budgetBytes;
        long pages = budgetBytes / layout.pageBytes();
        if (pages < 1) {
            throw new IllegalArgumentException("budget of " + budgetBytes + " bytes is below one page of "
                    + layout.pageBytes() + " bytes (" + layout + "): raise the budget or shrink pageTokens");
        }
        this.maxPages = (int) Math.min(pages, Integer.MAX_VALUE - 8);
    }

    /** A free page with {@code count == 0}, or {@code null} when the budget is exhausted. */
    Page allocate() {
        Page page = free.pollFirst();
        if (page == null) {
            if (created == maxPages) {
                return null;
            }
            page = new Page(created, layout);
            if (created == byId.length) {
                byId = java.util.Arrays.copyOf(byId, Math.min(maxPages, byId.length * 2));
            }
            byId[created++] = page;
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
        free.addFirst(page);
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

    /** Off-heap bytes this pool has ever taken (in-use plus free-listed pages); never above the budget. */
    public long bytesAllocated() {
        return (long) created * layout.pageBytes();
    }
}
