package io.pikv.kv.scheduling;

/**
 * A policy that evicts the candidate of lowest {@link #score}, after two protections that StreamingLLM and H2O
 * define: <em>sinks</em> (entries at position {@code < sinks}: the first tokens, or the first blocks of a prompt)
 * and the <em>recent window</em> (entries used within the last {@code window} clock ticks). Protected entries are
 * evicted only when nothing else is left: first the least recently used of the window, then of the sinks.
 *
 * <p>A score must depend only on the entry's features and the policy's own state for that entry, never on the
 * clock, so that a candidate's rank changes only when it is touched; each operation is then O(log n). A policy may
 * also name entries that go before every other unprotected one ({@link #evictFirst}), ranked among themselves by the
 * same score: a tier, not a score offset, so it holds whatever values the scores take.
 */
public abstract class RankedPolicy implements EvictionPolicy {
    private final int sinks;
    private final long window;
    private final IdHeap ranked = new IdHeap();
    private final IdHeap first = new IdHeap();
    private final IdHeap recent = new IdHeap();
    private final IdHeap sinkHeap = new IdHeap();

    protected RankedPolicy(int sinks, long window) {
        if (sinks < 0 || window < 0) {
            throw new IllegalArgumentException("sinks and window must be >= 0, got " + sinks + " and " + window);
        }
        this.sinks = sinks;
        this.window = window;
    }

    /** Entries at positions below this are kept until nothing else is left. */
    public int sinks() {
        return sinks;
    }

    /** Entries used within this many clock ticks are kept until only they and the sinks are left. */
    public long window() {
        return window;
    }

    /** The value of keeping {@code id}: the candidate with the lowest score is evicted first. */
    protected abstract double score(Entries entries, int id);

    /**
     * Whether {@code id}, once outside the protections, is evicted before every entry for which this is false. Like
     * the score, it must depend only on the entry's features and the policy's state for it. None by default.
     */
    protected boolean evictFirst(Entries entries, int id) {
        return false;
    }

    private void rank(Entries entries, int id) {
        (evictFirst(entries, id) ? first : ranked).add(entries, id, score(entries, id));
    }

    @Override
    public void offer(Entries entries, int id) {
        if (ranked.contains(id) || first.contains(id) || recent.contains(id) || sinkHeap.contains(id)) {
            // Offered twice (a protocol slip): its tiers may differ by now, and a withdraw would then leave it in one.
            throw new IllegalStateException("entry " + id + " is offered already");
        }
        if (entries.position(id) < sinks) {
            sinkHeap.add(entries, id, entries.lastAccess(id));
        } else if (inWindow(entries, id)) {
            recent.add(entries, id, entries.lastAccess(id));
        } else {
            rank(entries, id);
        }
    }

    @Override
    public void withdraw(Entries entries, int id) {
        if (ranked.contains(id)) {
            ranked.remove(entries, id);
        } else if (first.contains(id)) {
            first.remove(entries, id);
        } else if (recent.contains(id)) {
            recent.remove(entries, id);
        } else {
            sinkHeap.remove(entries, id);
        }
    }

    @Override
    public int victim(Entries entries) {
        while (recent.size() > 0 && !inWindow(entries, recent.min())) {
            int id = recent.min();
            recent.remove(entries, id);
            rank(entries, id);
        }
        if (first.size() > 0) {
            return first.min();
        }
        if (ranked.size() > 0) {
            return ranked.min();
        }
        return recent.size() > 0 ? recent.min() : sinkHeap.min();
    }

    private boolean inWindow(Entries entries, int id) {
        return entries.now() - entries.lastAccess(id) < window;
    }
}
