package io.pikv.kv.scheduling;

import java.util.ArrayList;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * Chooses among candidate policies with evidence from the live request stream. Every candidate runs as a
 * metadata-only <em>ghost</em> (a {@link PrefixBlockCache} of the same capacity holding block ids only) on the
 * requests the live cache serves ({@link #observe}), and counts the prefix hits it would have had. The live cache
 * is ranked by one candidate, the <em>active</em> one; every candidate follows the live entries too, so a switch
 * takes effect at once with each candidate's own bookkeeping intact.
 *
 * <p>Hysteresis: evidence is counted per window of {@code window} lookups and smoothed over windows (each window
 * weighs half as much as the next). Only at the end of a window does the active policy change: to the candidate with the best smoothed ghost hit rate, when that rate
 * beats the active candidate's by at least {@code margin}.
 */
public final class Adaptive implements EvictionPolicy {
    private final int capacity;
    private final int window;
    private final double margin;
    private final List<EvictionPolicy> prototypes;
    private final EvictionPolicy[] live;
    /** Made at the first block observed: token retention never feeds them, and a ghost's tables are not small. */
    private PrefixBlockCache[] ghosts;
    private final double[] smoothedHits;
    private final long[] windowHits;
    private double smoothedLookups;
    private long windowLookups;
    private int active;
    private int switches;

    /**
     * @param capacity   the live cache's capacity in blocks (each ghost gets the same)
     * @param candidates the policies to choose among; the first is active at start; names must differ
     * @param window     lookups per evidence window (the least evidence a switch needs)
     * @param margin     how much better (in hit rate, 0..1) a candidate's ghost must do to take over
     */
    public Adaptive(int capacity, List<EvictionPolicy> candidates, int window, double margin) {
        if (capacity < 1) {
            throw new IllegalArgumentException("capacity must be >= 1 block, got " + capacity);
        }
        if (candidates.isEmpty()) {
            throw new IllegalArgumentException("adaptive needs at least one candidate policy");
        }
        if (window < 1 || !(margin >= 0 && margin < 1)) {
            throw new IllegalArgumentException("window must be >= 1 lookup and margin in [0, 1), got " + window
                    + " and " + margin);
        }
        Set<String> names = new HashSet<>();
        for (EvictionPolicy c : candidates) {
            if (c instanceof Adaptive) {
                throw new IllegalArgumentException("adaptive cannot be a candidate of adaptive");
            }
            if (!names.add(c.name())) {
                throw new IllegalArgumentException("candidate names must differ: '" + c.name() + "' appears twice");
            }
        }
        this.capacity = capacity;
        this.window = window;
        this.margin = margin;
        this.prototypes = List.copyOf(candidates);
        int n = candidates.size();
        this.live = new EvictionPolicy[n];
        for (int i = 0; i < n; i++) {
            live[i] = candidates.get(i).fresh();
        }
        this.smoothedHits = new double[n];
        this.windowHits = new long[n];
    }

    /** The capacity its ghosts run at: the live cache's. */
    public int capacity() {
        return capacity;
    }

    @Override
    public String name() {
        return "adaptive";
    }

    /** The candidate that ranks the live cache now. */
    public String active() {
        return live[active].name();
    }

    /** How many times the active policy changed. */
    public int switches() {
        return switches;
    }

    /**
     * Each candidate's smoothed ghost hit rate (hits / lookups, windows weighted as above), in candidate order; empty
     * before any lookup (no evidence yet, which a rate of 0 would misstate).
     */
    public Map<String, Double> ghostHitRates() {
        Map<String, Double> rates = new LinkedHashMap<>();
        // The window in progress weighs as it will when it ends (the closed windows' evidence halved beside it).
        double closedWeight = windowLookups > 0 ? 0.5 : 1;
        double lookups = smoothedLookups * closedWeight + windowLookups;
        if (lookups == 0) {
            return rates;
        }
        for (int i = 0; i < live.length; i++) {
            rates.put(live[i].name(), (smoothedHits[i] * closedWeight + windowHits[i]) / lookups);
        }
        return rates;
    }

    /** Whether the ghosts were made (a block was observed). */
    boolean ghostsMade() {
        return ghosts != null;
    }

    /** The ghosts, made empty (as they would be before any block) at the first call. */
    private PrefixBlockCache[] ghosts() {
        if (ghosts == null) {
            PrefixBlockCache[] made = new PrefixBlockCache[prototypes.size()];
            for (int i = 0; i < made.length; i++) {
                made[i] = new PrefixBlockCache(capacity, prototypes.get(i).fresh());
            }
            ghosts = made;
        }
        return ghosts;
    }

    @Override
    public void observe(long[] blocks) {
        PrefixBlockCache[] ghosts = ghosts();
        for (int i = 0; i < ghosts.length; i++) {
            windowHits[i] += ghosts[i].request(blocks);
        }
        counted(blocks.length);
    }

    /**
     * One lookup of a cache whose caller stores blocks separately ({@link BlockIndex}): counted as evidence; each
     * ghost uses the block if it holds it and inserts nothing otherwise ({@link PrefixBlockCache#lookup}).
     */
    public void observeLookup(long block) {
        PrefixBlockCache[] ghosts = ghosts();
        for (int i = 0; i < ghosts.length; i++) {
            windowHits[i] += ghosts[i].lookup(block) ? 1 : 0;
        }
        counted(1);
    }

    /** One block stored by such a cache: every ghost stores it too (no lookup is counted). */
    public void observeStore(long block) {
        for (PrefixBlockCache ghost : ghosts()) {
            ghost.store(block);
        }
    }

    /** Adds lookups to the evidence window, and ends the window when it is full. */
    private void counted(int lookups) {
        windowLookups += lookups;
        if (windowLookups >= window) {
            endWindow();
        }
    }

    private void endWindow() {
        smoothedLookups = smoothedLookups / 2 + windowLookups;
        windowLookups = 0;
        for (int i = 0; i < live.length; i++) {
            smoothedHits[i] = smoothedHits[i] / 2 + windowHits[i];
            windowHits[i] = 0;
        }
        // Every candidate's evidence is this window's before any is compared (the active one's too).
        int best = active;
        for (int i = 0; i < live.length; i++) {
            if (smoothedHits[i] > smoothedHits[best]) {
                best = i;
            }
        }
        double gain = (smoothedHits[best] - smoothedHits[active]) / smoothedLookups;
        if (best != active && gain >= margin) {
            active = best;
            switches++;
        }
    }

    @Override
    public void accessed(Entries entries, int id) {
        for (EvictionPolicy p : live) {
            p.accessed(entries, id);
        }
    }

    @Override
    public void offer(Entries entries, int id) {
        for (EvictionPolicy p : live) {
            p.offer(entries, id);
        }
    }

    @Override
    public void withdraw(Entries entries, int id) {
        for (EvictionPolicy p : live) {
            p.withdraw(entries, id);
        }
    }

    @Override
    public void updated(Entries entries, int id) {
        for (EvictionPolicy p : live) {
            p.updated(entries, id);
        }
    }

    @Override
    public void evicted(Entries entries, int id) {
        for (EvictionPolicy p : live) {
            p.evicted(entries, id);
        }
    }

    @Override
    public void forget(long key) {
        for (EvictionPolicy p : live) {
            p.forget(key);
        }
    }

    /** Its live copies and its ghosts' policies are retired with it (a shared history's slots go back). */
    @Override
    public void retired() {
        for (EvictionPolicy p : live) {
            p.retired();
        }
        if (ghosts != null) {
            for (PrefixBlockCache g : ghosts) {
                g.policy().retired();
            }
        }
    }

    @Override
    public int victim(Entries entries) {
        return live[active].victim(entries);
    }

    @Override
    public EvictionPolicy fresh() {
        List<EvictionPolicy> copies = new ArrayList<>();
        for (EvictionPolicy p : prototypes) {
            copies.add(p.fresh());
        }
        return new Adaptive(capacity, copies, window, margin);
    }
}
