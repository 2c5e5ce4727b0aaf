package io.pikv.kv.scheduling;

import io.pikv.kv.AttentionResult;
import io.pikv.kv.EvictionContext;
import io.pikv.kv.EvictionHook;
import io.pikv.kv.PagePool;

import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/**
 * Token retention inside sequences: per (sequence, layer) it tracks each resident token's features (position,
 * accumulated attention mass, heavy steps, generation order) and, given a number of tokens to free, returns which
 * positions the policy evicts — StreamingLLM keeps the sinks and the recent window, H2O the heavy hitters and the
 * window, and so on. {@link #evictionHook()} plugs it into a {@code KvStore}.
 *
 * <p>The caller reports what the store does: {@link #appended} after each append, {@link #attended} with each
 * attention result that carries weights. A token counts as used at a step ({@link Entries#accesses}) when it gets
 * at least {@code heavyShare} times the uniform share {@code 1/visited} of the mean weight over query heads.
 * Thread-safe: the hook runs under a shard's lock while attention results may arrive from other threads.
 */
public final class TokenRetention {
    /**
     * Heap per stored (token, layer) entry of a store whose tokens a retention tracks: the store's position index and
     * page objects (about 23 bytes with the radix index these were measured with; the hash index since costs 11 to 21
     * bytes a position held, 7 to 17 more) and the policy's row and index (110 to 150 bytes), measured with two million
     * fp16 entries in one and in a hundred sequences (134 and 174 bytes in all), rounded up. A store whose budget holds N
     * entries needs about N times this much heap beside its pages once it is full.
     */
    public static final long HEAP_PER_ENTRY_BYTES = 192;

    /**
     * Whether the policy named {@code policy} ranks tokens by the attention they receive, so that every attention call
     * must report per-entry weights ({@link #attended}): {@code h2o} (accumulated mass) and {@code lrfu} (its uses
     * are the heavy steps) always, {@code utility} unless its {@code attention} and {@code frequency} weights are
     * both 0 (absent: their default, 1); {@code lru} and {@code streaming} (generation order) and page policies
     * never. Attention without weights can run where weights are not computed (a GPU).
     */
    public static boolean ranksByAttention(String policy, Map<String, Double> parameters) {
        return switch (policy) {
            case "h2o", "lrfu" -> true;
            case "utility" -> parameters.getOrDefault("attention", 1.0) != 0
                    || parameters.getOrDefault("frequency", 1.0) != 0;
            default -> false;
        };
    }

    private final EvictionPolicy prototype;
    private final double heavyShare;
    private final Map<TrackKey, Track> tracks = new HashMap<>();

    private record TrackKey(long sequence, int layer) {
    }

    private static final class Track {
        final TrackKey key;
        final Entries entries = new Entries(64);
        final EvictionPolicy policy;

        Track(TrackKey key, EvictionPolicy policy) {
            this.key = key;
            this.policy = policy;
        }
    }

    /** Retention by {@code policy} (each (sequence, layer) gets a fresh copy), heavy share 1. */
    public TokenRetention(EvictionPolicy policy) {
        this(policy, 1.0);
    }

    public TokenRetention(EvictionPolicy policy, double heavyShare) {
        if (!(heavyShare > 0) || Double.isInfinite(heavyShare)) {
            throw new IllegalArgumentException("heavyShare must be positive and finite, got " + heavyShare);
        }
        this.prototype = policy;
        this.heavyShare = heavyShare;
    }

    /**
     * The token at {@code position} of (sequence, layer) is now resident. A position still tracked is tracked anew: its
     * earlier entry left the store without the policy hearing of it in time (evicted between its store and the call
     * that reported it), and the store holds this one.
     */
    public synchronized void appended(long sequence, int layer, int position) {
        if (position < 0) {
            throw new IllegalArgumentException("position must be >= 0, got " + position);
        }
        Track t = tracks.computeIfAbsent(new TrackKey(sequence, layer), k -> new Track(k, prototype.fresh()));
        int stale = t.entries.id(position);
        if (stale >= 0) {
            remove(t, stale);
        }
        t.entries.setNow(Math.max(t.entries.now(), position));
        add(t, position);
    }

    /** Tracks {@code position} as used at the clock's time now, and offers it to the policy. */
    private static void add(Track t, int position) {
        int id = t.entries.add(position, position, -1, false, 0);
        t.policy.accessed(t.entries, id);
        t.policy.offer(t.entries, id);
    }

    /**
     * Tracks the positions of (sequence, layer) not tracked yet, as {@link #appended} does, in ascending order; tracked
     * ones keep what the policy knows of them. For a caller that learns of resident tokens from attention results
     * rather than from each append (PyramidKV budgets choosing through a policy).
     */
    public synchronized void track(long sequence, int layer, int[] positions) {
        int[] sorted = positions.clone();
        java.util.Arrays.sort(sorted);
        for (int position : sorted) {
            if (position < 0) {
                throw new IllegalArgumentException("position must be >= 0, got " + position);
            }
        }
        if (sorted.length == 0) {
            return; // nothing to track: no empty track is made
        }
        Track t = tracks.computeIfAbsent(new TrackKey(sequence, layer), k -> new Track(k, prototype.fresh()));
        for (int position : sorted) {
            if (t.entries.id(position) >= 0) {
                continue;
            }
            // Generation order is the position: a token learnt of late is as old as its position says, not new.
            long now = t.entries.now();
            t.entries.setNow(position);
            add(t, position);
            t.entries.setNow(Math.max(now, position));
        }
    }

    /** Adds the mean weight (over query heads) each visited token received in {@code result}. */
    public void attended(long sequence, int layer, AttentionResult result) {
        int[] positions = result.positions();
        float[] weights = new float[positions.length];
        for (int j = 0; j < positions.length; j++) {
            weights[j] = result.meanWeight(j);
        }
        attended(sequence, layer, positions, weights);
    }

    /**
     * Adds {@code weights[j]} to the token at {@code positions[j]}; untracked positions are ignored.
     *
     * @throws IllegalArgumentException when the lengths differ or a weight is negative or not finite (nothing is added)
     */
    public synchronized void attended(long sequence, int layer, int[] positions, float[] weights) {
        if (positions.length != weights.length) {
            throw new IllegalArgumentException("positions and weights differ in length: " + positions.length
                    + " and " + weights.length);
        }
        for (int j = 0; j < weights.length; j++) {
            if (!(weights[j] >= 0) || weights[j] == Float.POSITIVE_INFINITY) {
                throw new IllegalArgumentException("the weight of position " + positions[j] + " is " + weights[j]
                        + ": attention weights are finite and >= 0");
            }
        }
        Track t = tracks.get(new TrackKey(sequence, layer));
        if (t == null || positions.length == 0) {
            return;
        }
        // Weights are floats summed from exponentials: the share is met within their rounding (a token given exactly
        // the uniform 1/n in float, 0.0399999991 for n = 25, is heavy at heavyShare 1).
        double heavy = heavyShare / positions.length * (1 - 1e-6);
        for (int j = 0; j < positions.length; j++) {
            int id = t.entries.id(positions[j]);
            if (id < 0) {
                continue;
            }
            boolean isHeavy = weights[j] >= heavy;
            t.entries.attend(id, weights[j], isHeavy);
            if (isHeavy) {
                t.policy.accessed(t.entries, id);
            }
            t.policy.updated(t.entries, id);
        }
    }

    /**
     * Chooses up to {@code count} tokens of (sequence, layer) to evict, in the policy's order, and stops tracking
     * them: the caller evicts them from the store.
     */
    public synchronized int[] evict(long sequence, int layer, int count) {
        Track t = tracks.get(new TrackKey(sequence, layer));
        if (t == null || count <= 0) {
            return new int[0];
        }
        int n = Math.min(count, t.entries.size());
        int[] out = new int[n];
        int i = 0;
        for (; i < n; i++) {
            int id = t.policy.victim(t.entries);
            if (id < 0) {
                break; // tracked, but withdrawn from the policy (only while makeRoom runs)
            }
            out[i] = (int) t.entries.key(id);
            remove(t, id);
        }
        return i == n ? out : java.util.Arrays.copyOf(out, i);
    }

    /**
     * Evicts up to {@code count} tokens of (sequence, layer) in the policy's order through {@code evict}, which
     * answers whether the token left the store (or may be taken: the caller evicts it next); a token it declines (not
     * held there, not resident) stays tracked and a candidate. Returns the positions taken, in the policy's order.
     */
    public synchronized int[] evict(long sequence, int layer, int count, java.util.function.IntPredicate evict) {
        return evict(sequence, layer, count, evict, () -> false);
    }

    /** {@link #evict(long, int, int, java.util.function.IntPredicate)}, stopping as soon as {@code enough} says so. */
    public synchronized int[] evict(long sequence, int layer, int count, java.util.function.IntPredicate evict,
                                    java.util.function.BooleanSupplier enough) {
        Track t = tracks.get(new TrackKey(sequence, layer));
        if (t == null || count <= 0) {
            return new int[0];
        }
        List<Integer> declined = new ArrayList<>();
        int[] out = new int[Math.min(count, t.entries.size())];
        int n = 0;
        try {
            while (n < out.length && !enough.getAsBoolean()) {
                int id = t.policy.victim(t.entries);
                if (id < 0) {
                    break;
                }
                t.policy.withdraw(t.entries, id);
                int position = (int) t.entries.key(id);
                boolean taken;
                evicting = new long[] {sequence, layer, position}; // its eviction reported meanwhile is this one
                try {
                    taken = evict.test(position);
                } catch (RuntimeException | Error e) {
                    t.policy.offer(t.entries, id); // still tracked, so still a candidate
                    throw e;
                } finally {
                    evicting = null;
                }
                if (taken) {
                    t.policy.evicted(t.entries, id);
                    t.entries.remove(id);
                    out[n++] = position;
                } else {
                    declined.add(id);
                }
            }
        } finally {
            for (int id : declined) {
                t.policy.offer(t.entries, id);
            }
        }
        return n == out.length ? out : java.util.Arrays.copyOf(out, n);
    }

    /** Stops tracking these positions (the store evicted them another way): the policy hears of each eviction. */
    public synchronized void forget(long sequence, int layer, int[] positions) {
        untrack(sequence, layer, positions, true);
    }

    /**
     * Stops tracking these positions, taken back (an append undone), not evicted: the policy keeps no history of them
     * ({@code Lrfu}'s), so a token stored later at such a position starts anew instead of inheriting the score of the
     * one taken back.
     */
    public synchronized void withdrawn(long sequence, int layer, int[] positions) {
        untrack(sequence, layer, positions, false);
    }

    private void untrack(long sequence, int layer, int[] positions, boolean evicted) {
        Track t = tracks.get(new TrackKey(sequence, layer));
        if (t == null) {
            return;
        }
        boolean newest = false;
        long[] own = evicting;
        for (int p : positions) {
            if (own != null && own[0] == sequence && own[1] == layer && own[2] == p) {
                continue; // the token an eviction of this retention is taking out: it untracks it itself
            }
            int id = t.entries.id(p);
            if (id >= 0) {
                newest |= t.entries.lastAccess(id) == t.entries.now();
                if (evicted) {
                    remove(t, id);
                } else {
                    t.policy.withdraw(t.entries, id);
                    t.entries.remove(id);
                }
            } else if (!evicted) {
                t.policy.forget(p); // evicted before it was taken back: nor does the policy's history keep it
            }
        }
        if (newest) {
            // The clock is the newest resident token: with the newest gone (a withdrawn append), it goes back, so
            // the tokens now newest are the recent window again and tokens stored at the freed positions later keep
            // generation order. (An entry a victim search already moved out of the window stays out.)
            long clock = -1;
            for (int id = 0; id < t.entries.idLimit(); id++) {
                if (t.entries.id(t.entries.key(id)) == id) {
                    clock = Math.max(clock, t.entries.lastAccess(id));
                }
            }
            t.entries.setNow(Math.max(clock, 0));
        }
    }

    /** Stops tracking every layer of the sequence (it was closed). */
    public synchronized void drop(long sequence) {
        tracks.entrySet().removeIf(e -> {
            if (e.getKey().sequence() != sequence) {
                return false;
            }
            e.getValue().policy.retired(); // a shared history's slots go back to the other sequences
            return true;
        });
    }

    /** The policy copy ranking (sequence, layer), or null when nothing of it is tracked (for tests). */
    synchronized EvictionPolicy policyOf(long sequence, int layer) {
        Track t = tracks.get(new TrackKey(sequence, layer));
        return t == null ? null : t.policy;
    }

    /** Tokens tracked for (sequence, layer). */
    public synchronized int tracked(long sequence, int layer) {
        Track t = tracks.get(new TrackKey(sequence, layer));
        return t == null ? 0 : t.entries.size();
    }

    /**
     * A store hook that frees a page by evicting tracked tokens, lowest-ranked first, from the (sequence, layer)
     * that holds the most tracked tokens, until the shard's pool has a free page. A token the shard does not hold
     * (it lives on another shard) is skipped for this call. Tokens the store evicts another way
     * ({@code KvStore.evict}, a budget shrink) are no longer tracked, nor are a closed sequence's.
     */
    public EvictionHook evictionHook() {
        return new EvictionHook() {
            @Override
            public void makeRoom(EvictionContext context) {
                TokenRetention.this.makeRoom(context);
            }

            @Override
            public void evicted(long sequence, int layer, int position) {
                evictedByStore(sequence, layer, position);
            }

            @Override
            public void sequenceClosed(long sequence) {
                drop(sequence);
            }

            @Override
            public void withdrawn(long sequence, int layer, int position) {
                TokenRetention.this.withdrawn(sequence, layer, new int[] {position});
            }
        };
    }

    /** The token {@link #makeRoom} is evicting, which it untracks itself: {@code {sequence, layer, position}}. */
    private long[] evicting;

    private synchronized void evictedByStore(long sequence, int layer, int position) {
        long[] own = evicting;
        if (own != null && own[0] == sequence && own[1] == layer && own[2] == position) {
            return;
        }
        forget(sequence, layer, new int[] {position});
    }

    private synchronized void makeRoom(EvictionContext ctx) {
        PagePool pool = ctx.pool();
        List<Track> skippedTracks = new ArrayList<>();
        List<Integer> skippedIds = new ArrayList<>();
        try {
            makeRoom(ctx, pool, skippedTracks, skippedIds);
        } finally {
            // Skipped tokens are candidates again, also when the store failed mid-way.
            for (int i = 0; i < skippedIds.size(); i++) {
                Track t = skippedTracks.get(i);
                t.policy.offer(t.entries, skippedIds.get(i));
            }
        }
    }

    private void makeRoom(EvictionContext ctx, PagePool pool, List<Track> skippedTracks, List<Integer> skippedIds) {
        while (pool.pagesInUse() >= pool.maxPages()) {
            Track from = null;
            int victim = -1;
            for (Track t : tracks.values()) {
                if (from != null && t.entries.size() < from.entries.size()) {
                    continue;
                }
                int v = t.policy.victim(t.entries);
                if (v >= 0 && (from == null || t.entries.size() > from.entries.size() || before(t.key, from.key))) {
                    from = t;
                    victim = v;
                }
            }
            if (from == null) {
                break;
            }
            from.policy.withdraw(from.entries, victim);
            int position = (int) from.entries.key(victim);
            int evicted;
            evicting = new long[] {from.key.sequence(), from.key.layer(), position};
            try {
                evicted = ctx.evictTokens(from.key.sequence(), from.key.layer(), new int[] {position});
            } catch (RuntimeException | Error e) {
                from.policy.offer(from.entries, victim); // still tracked, so still a candidate
                throw e;
            } finally {
                evicting = null;
            }
            if (evicted > 0) {
                from.policy.evicted(from.entries, victim);
                from.entries.remove(victim);
            } else {
                skippedTracks.add(from);
                skippedIds.add(victim);
            }
        }
    }

    private static boolean before(TrackKey a, TrackKey b) {
        return a.sequence() != b.sequence() ? a.sequence() < b.sequence() : a.layer() < b.layer();
    }

    private static void remove(Track t, int id) {
        t.policy.withdraw(t.entries, id);
        t.policy.evicted(t.entries, id);
        t.entries.remove(id);
    }
}
