package io.pikv.kv;

import io.pikv.kv.compute.Kernels;
import org.junit.jupiter.api.Test;

import java.util.Arrays;
import java.util.List;
import java.util.Random;
import java.util.stream.IntStream;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/** A shard's budget changed while it serves ({@link KvShard#resizeBudget}). */
class BudgetResizeTest {
    private static final ModelShape SHAPE = new ModelShape(1, 4, 2, 32, 8, 2);
    private static final KvLayout LAYOUT = new KvLayout(2, 32, 16, StorageType.FP32);
    private static final long PAGE = LAYOUT.pageBytes();

    private static KvShard shard(long pages, EvictionHook hook) {
        return new KvShard(0, SHAPE, LAYOUT, 1, pages * PAGE, hook, Kernels.select(LAYOUT));
    }

    private static void load(KvShard shard, long seq, List<Reference.Entry> entries) {
        for (Reference.Entry e : entries) {
            shard.append(seq, 0, e.position(), e.expert(), e.k(), e.v());
        }
    }

    private static int[] resident(KvShard shard, long seq) {
        int[] p = shard.residentPositions(seq, 0);
        Arrays.sort(p);
        return p;
    }

    @Test
    void shrinkingEvictsOldestPagesUntilThePagesInUseFit() {
        Random rnd = new Random(1);
        KvShard shard = shard(8, EvictionHook.OLDEST_PAGE_FIRST);
        List<Reference.Entry> entries = Reference.randomEntries(SHAPE, 8 * 16, rnd);
        load(shard, 1, entries);
        assertThat(shard.stats().pagesInUse()).isEqualTo(8);

        assertThat(shard.resizeBudget(3 * PAGE + 7)).as("pages evicted").isEqualTo(5);

        ShardStats stats = shard.stats();
        assertThat(stats.budgetBytes()).isEqualTo(3 * PAGE + 7);
        assertThat(stats.maxPages()).isEqualTo(3);
        assertThat(stats.pagesInUse()).isEqualTo(3);
        assertThat(stats.bytesAllocated()).as("dropped pages are not kept").isEqualTo(3 * PAGE);
        assertThat(resident(shard, 1)).containsExactly(IntStream.range(80, 128).toArray());
        // What stays answers exactly as the same entries alone would.
        float[] q = Reference.gaussian(SHAPE.queryWidth(), rnd, 1f);
        float[] out = shard.attendPartial(1, 0, q, AttentionScope.all(), false).finish().output();
        assertThat(Reference.relativeError(out, Reference.attend(SHAPE, q, entries.subList(80, 128)))).isLessThan(1e-5);

        // Appends now stay within three pages.
        List<Reference.Entry> more = Reference.randomEntries(SHAPE, 40, rnd);
        for (int i = 0; i < more.size(); i++) {
            Reference.Entry e = more.get(i);
            shard.append(1, 0, 128 + i, e.expert(), e.k(), e.v());
            assertThat(shard.stats().pagesInUse()).isLessThanOrEqualTo(3);
        }
        assertThat(shard.stats().bytesAllocated()).isLessThanOrEqualTo(3 * PAGE);
    }

    @Test
    void growingTakesEffectAtOnceAndReusesDroppedPageIds() {
        Random rnd = new Random(2);
        KvShard shard = shard(6, EvictionHook.OLDEST_PAGE_FIRST);
        load(shard, 1, Reference.randomEntries(SHAPE, 6 * 16, rnd));
        assertThat(shard.resizeBudget(2 * PAGE)).isEqualTo(4);
        assertThat(shard.resizeBudget(10 * PAGE)).as("nothing to evict").isZero();

        List<Reference.Entry> fresh = Reference.randomEntries(SHAPE, 10 * 16, rnd);
        load(shard, 2, fresh);
        ShardStats stats = shard.stats();
        assertThat(stats.maxPages()).isEqualTo(10);
        assertThat(stats.pagesInUse()).isEqualTo(10);
        assertThat(resident(shard, 2)).as("sequence 2 filled its ten pages by evicting sequence 1's two")
                .containsExactly(IntStream.range(0, 160).toArray());
        assertThat(shard.resident(1, 0)).isZero();
        float[] q = Reference.gaussian(SHAPE.queryWidth(), rnd, 1f);
        float[] out = shard.attendPartial(2, 0, q, AttentionScope.all(), false).finish().output();
        assertThat(Reference.relativeError(out, Reference.attend(SHAPE, q, fresh))).isLessThan(1e-5);
    }

    @Test
    void aPolicyThatEvictsNothingKeepsTheBudgetAndTheEntries() {
        Random rnd = new Random(3);
        KvShard shard = shard(4, EvictionHook.REJECT);
        List<Reference.Entry> entries = Reference.randomEntries(SHAPE, 3 * 16 + 5, rnd);
        load(shard, 1, entries);
        float[] q = Reference.gaussian(SHAPE.queryWidth(), rnd, 1f);
        float[] before = shard.attendPartial(1, 0, q, AttentionScope.all(), false).finish().output();

        assertThatThrownBy(() -> shard.resizeBudget(2 * PAGE)).isInstanceOf(KvBudgetExceededException.class)
                .hasMessageContaining("cannot shrink to " + 2 * PAGE + " bytes")
                .hasMessageContaining("4 pages of " + PAGE + " bytes are in use")
                .hasMessageContaining("the budget stays at " + 4 * PAGE + " bytes");
        assertThat(shard.stats().budgetBytes()).isEqualTo(4 * PAGE);
        assertThat(shard.stats().maxPages()).isEqualTo(4);
        assertThat(shard.attendPartial(1, 0, q, AttentionScope.all(), false).finish().output()).containsExactly(before);

        assertThat(shard.resizeBudget(4 * PAGE + 1)).as("a shrink the pages in use fit is fine").isZero();
        assertThat(shard.stats().budgetBytes()).isEqualTo(4 * PAGE + 1);
    }

    @Test
    void anAppendRefusedForWantOfAPageLeavesNoStateBehind() {
        Random rnd = new Random(5);
        KvShard shard = shard(1, EvictionHook.REJECT);
        load(shard, 1, Reference.randomEntries(SHAPE, 16, rnd)); // the one page, full
        Reference.Entry e = Reference.randomEntries(SHAPE, 1, rnd).get(0);
        assertThatThrownBy(() -> shard.append(2, 0, 0, e.expert(), e.k(), e.v()))
                .isInstanceOf(KvBudgetExceededException.class);
        assertThat(shard.holdsLayerState(2, 0)).as("a new sequence's layer: not made").isFalse();
        assertThat(shard.indexCapacity(2, 0)).isZero();
        assertThat(shard.holdsLayerState(1, 0)).isTrue();
        shard.dropSequence(1);
        shard.append(2, 0, 0, e.expert(), e.k(), e.v()); // room again: stored as any first entry
        assertThat(shard.residentPositions(2, 0)).containsExactly(0);
    }

    @Test
    void aRefusedShrinkKeepsTheFreePages() {
        // Two pages in use and two free (a closed sequence's): a shrink to one page is refused under REJECT, and the
        // free pages stay for the next appends instead of going back to the JVM (a control record's budget that
        // cannot apply yet is retried every few seconds, which would drop them each time).
        Random rnd = new Random(4);
        KvShard shard = shard(4, EvictionHook.REJECT);
        load(shard, 1, Reference.randomEntries(SHAPE, 2 * 16, rnd));
        load(shard, 2, Reference.randomEntries(SHAPE, 2 * 16, rnd));
        shard.dropSequence(2);
        assertThat(shard.stats().bytesAllocated()).isEqualTo(4 * PAGE);
        assertThatThrownBy(() -> shard.resizeBudget(PAGE)).isInstanceOf(KvBudgetExceededException.class);
        assertThat(shard.stats().bytesAllocated()).as("the free pages kept").isEqualTo(4 * PAGE);
        assertThat(shard.stats().maxPages()).isEqualTo(4);
        // A shrink that applies drops them.
        assertThat(shard.resizeBudget(2 * PAGE)).isZero();
        assertThat(shard.stats().bytesAllocated()).isEqualTo(2 * PAGE);
    }

    @Test
    void aHookThatFailsMidShrinkRestoresTheOldBudgetAndIsRethrown() {
        int[] calls = {0};
        EvictionHook failing = ctx -> {
            if (calls[0]++ == 0) {
                ctx.evictPage(ctx.oldestPage()); // frees one page, then fails on the next call
            } else {
                throw new IllegalStateException("policy broke");
            }
        };
        KvShard shard = shard(4, failing);
        load(shard, 1, Reference.randomEntries(SHAPE, 4 * 16, new Random(6)));
        assertThatThrownBy(() -> shard.resizeBudget(PAGE)).isInstanceOf(IllegalStateException.class)
                .hasMessage("policy broke");
        // The old budget, not the temporary one-page-above limit of the shrink; the page it freed stays freed.
        assertThat(shard.stats().budgetBytes()).isEqualTo(4 * PAGE);
        assertThat(shard.stats().maxPages()).isEqualTo(4);
        assertThat(shard.stats().pagesInUse()).isEqualTo(3);
        assertThat(shard.resident(1, 0)).isEqualTo(3 * 16);
    }

    @Test
    void aBudgetBelowOnePageIsRefusedAndChangesNothing() {
        KvShard shard = shard(4, EvictionHook.OLDEST_PAGE_FIRST);
        load(shard, 1, Reference.randomEntries(SHAPE, 40, new Random(4)));
        assertThatThrownBy(() -> shard.resizeBudget(PAGE - 1)).isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("below one page of " + PAGE + " bytes");
        assertThat(shard.stats().budgetBytes()).isEqualTo(4 * PAGE);
        assertThat(shard.resident(1, 0)).isEqualTo(40);
    }
}
