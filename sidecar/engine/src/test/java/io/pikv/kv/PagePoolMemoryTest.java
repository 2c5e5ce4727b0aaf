package io.pikv.kv;

import org.junit.jupiter.api.Test;

import java.util.concurrent.atomic.AtomicBoolean;

import static org.assertj.core.api.Assertions.assertThat;

/** A pool whose JVM runs out of direct memory below its budget reuses its own pages instead of failing. */
class PagePoolMemoryTest {
    private static final KvLayout LAYOUT = new KvLayout(2, 32, 16, StorageType.FP16);

    @Test
    void outOfDirectMemoryCapsThePoolAtThePagesItHolds() {
        AtomicBoolean fits = new AtomicBoolean(true);
        PagePool pool = new PagePool(LAYOUT, 4L * LAYOUT.pageBytes(), bytes -> fits.get());
        Page a = pool.allocate();
        Page b = pool.allocate();
        assertThat(pool.maxPages()).isEqualTo(4);

        fits.set(false);
        assertThat(pool.allocate()).isNull();
        assertThat(pool.memoryExhausted()).isTrue();
        // Eviction hooks free pages while pagesInUse >= maxPages: now they make room within the memory there is.
        assertThat(pool.maxPages()).isEqualTo(2);
        assertThat(pool.pagesInUse()).isEqualTo(2);

        pool.release(b); // what a hook's eviction does
        Page reused = pool.allocate();
        assertThat(reused).isSameAs(b);
        assertThat(pool.memoryExhausted()).isFalse();
        assertThat(pool.maxPages()).isEqualTo(2);

        fits.set(true); // memory back (collected, or another pool shrank): the budget applies again
        pool.release(reused);
        assertThat(pool.allocate()).isSameAs(b);
        assertThat(pool.allocate()).isNotNull().isNotSameAs(a).isNotSameAs(b);
        assertThat(pool.maxPages()).isEqualTo(4);
        assertThat(pool.pagesInUse()).isEqualTo(3);
    }

    @Test
    void pagesDroppedByASmallerBudgetAreReclaimedByTryingTheAllocation() {
        AtomicBoolean fits = new AtomicBoolean(true);
        PagePool pool = new PagePool(LAYOUT, 4L * LAYOUT.pageBytes(), bytes -> fits.get());
        Page a = pool.allocate();
        pool.release(pool.allocate());
        pool.release(pool.allocate());
        pool.resize(LAYOUT.pageBytes()); // the two free-listed pages are dropped: their memory waits for the collector
        pool.resize(4L * LAYOUT.pageBytes());
        Page b = pool.allocate(); // fits: an allocation the counter allows leaves the dropped pages' count alone
        fits.set(false); // the counter still counts them
        assertThat(pool.allocate()).as("tried anyway: the JDK collects the dropped pages and retries").isNotNull();
        assertThat(pool.memoryExhausted()).isFalse();
        assertThat(pool.allocate()).as("nothing dropped since: the counter is believed").isNull();
        assertThat(pool.memoryExhausted()).isTrue();
        assertThat(pool.maxPages()).isEqualTo(3);
        pool.release(a);
        pool.release(b);
    }

    @Test
    void settingTheBudgetAgainLiftsTheCap() {
        PagePool pool = new PagePool(LAYOUT, 4L * LAYOUT.pageBytes(), bytes -> false);
        assertThat(pool.allocate()).isNull();
        assertThat(pool.maxPages()).isZero();
        pool.resize(3L * LAYOUT.pageBytes());
        assertThat(pool.maxPages()).isEqualTo(3);
        assertThat(DirectMemory.fits(LAYOUT.pageBytes())).isTrue(); // this test JVM has memory to spare
    }

    /**
     * A shard releases a page after it has unlinked it from its segment: a release that failed to allocate (the heap
     * out of memory as its free list grew) would lose the page from the budget for good. Releases allocate nothing,
     * also when a smaller budget makes them drop the pages.
     */
    @Test
    void releasingPagesAllocatesNothing() {
        com.sun.management.ThreadMXBean threads =
                (com.sun.management.ThreadMXBean) java.lang.management.ManagementFactory.getThreadMXBean();
        org.junit.jupiter.api.Assumptions.assumeTrue(threads.isThreadAllocatedMemorySupported()
                && threads.isThreadAllocatedMemoryEnabled(), "this JVM does not count the bytes a thread allocates");
        PagePool pool = new PagePool(LAYOUT, 300L * LAYOUT.pageBytes(), bytes -> true);
        Page[] pages = new Page[300];
        for (int round = 0; round < 3; round++) {
            for (int i = 0; i < pages.length; i++) {
                pages[i] = pool.allocate();
            }
            if (round == 2) {
                pool.resize(10L * LAYOUT.pageBytes()); // the pages released from now on are dropped
            }
            long before = threads.getCurrentThreadAllocatedBytes();
            for (Page page : pages) {
                pool.release(page);
            }
            long allocated = threads.getCurrentThreadAllocatedBytes() - before;
            assertThat(allocated).as("bytes allocated releasing 300 pages, round %d", round).isZero();
            assertThat(pool.pagesInUse()).isZero();
        }
        assertThat(pool.bytesAllocated()).isEqualTo(10L * LAYOUT.pageBytes());
        assertThat(pool.allocate()).isNotNull();
    }
}
