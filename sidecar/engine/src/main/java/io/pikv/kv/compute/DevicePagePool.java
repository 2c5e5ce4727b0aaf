package io.pikv.kv.compute;

import java.util.ArrayDeque;
import java.util.BitSet;

/**
 * Bookkeeping of device pages: a slab of {@code maxPages} pages of {@code pageBytes} (one device allocation sized
 * by the byte budget), handed out by index and recycled. Holds no device memory itself, so it is tested on any
 * machine; {@link CudaKvCache} maps indices to addresses. Not thread-safe.
 */
public final class DevicePagePool {
    private final long pageBytes;
    private final int maxPages;
    private final ArrayDeque<Integer> free = new ArrayDeque<>();
    /** Pages handed out and not released: release checks here in O(1) (closing a sequence releases page by page). */
    private final BitSet allocated = new BitSet();
    private int next;
    private int inUse;

    public DevicePagePool(long pageBytes, long budgetBytes) {
        if (pageBytes <= 0) {
            throw new IllegalArgumentException("pageBytes must be positive, got " + pageBytes);
        }
        long pages = budgetBytes / pageBytes;
        if (pages < 1) {
            throw new IllegalArgumentException("device budget of " + budgetBytes + " bytes is below one page of "
                    + pageBytes + " bytes");
        }
        this.pageBytes = pageBytes;
        this.maxPages = (int) Math.min(pages, Integer.MAX_VALUE - 8);
    }

    /** A free page index, or −1 when all {@link #maxPages()} are in use. */
    public int allocate() {
        Integer id = free.pollFirst();
        if (id == null) {
            if (next == maxPages) {
                return -1;
            }
            id = next++;
        }
        inUse++;
        allocated.set(id);
        return id;
    }

    public void release(int id) {
        if (id < 0 || !allocated.get(id)) {
            throw new IllegalArgumentException("page " + id + " is not allocated");
        }
        allocated.clear(id);
        inUse--;
        free.addFirst(id);
    }

    /** Byte offset of page {@code id} in the slab. */
    public long offset(int id) {
        return id * pageBytes;
    }

    public long pageBytes() {
        return pageBytes;
    }

    public int maxPages() {
        return maxPages;
    }

    public int pagesInUse() {
        return inUse;
    }

    /** Bytes of the slab: what the device allocation holds (≤ the budget). */
    public long slabBytes() {
        return maxPages * pageBytes;
    }
}
