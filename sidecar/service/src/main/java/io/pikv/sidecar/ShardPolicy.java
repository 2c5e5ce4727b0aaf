package io.pikv.sidecar;

import io.pikv.kv.AttentionResult;
import io.pikv.kv.EvictionContext;
import io.pikv.kv.EvictionHook;
import io.pikv.kv.scheduling.EvictionPolicy;
import io.pikv.kv.scheduling.HeavyHitter;
import io.pikv.kv.scheduling.Lrfu;
import io.pikv.kv.scheduling.Lru;
import io.pikv.kv.scheduling.StreamingLlm;
import io.pikv.kv.scheduling.TokenRetention;
import io.pikv.kv.scheduling.Utility;

import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.TreeMap;
import java.util.TreeSet;

/**
 * The shard's eviction policy, switchable while the shard serves: the engine's shard holds this hook for life, and
 * the hook delegates to the policy chosen last (by {@code pikv.store.eviction}, then by control records).
 *
 * <p>Page policies: {@code oldest-page} (evict the page allocated longest ago) and {@code reject} (never evict: a
 * full store refuses appends). Token policies ({@code lru}, {@code streaming}, {@code h2o}, {@code utility},
 * {@code lrfu}, docs/policies.md) rank the tokens of each (sequence, layer) by what attention did with them and evict
 * the lowest-ranked: the shard reports every append here, and every attention result (with weights) to the policies
 * that rank by attention ({@link #wantsAttention}). A switch takes
 * effect at the next eviction; a new token policy is told of the entries resident then (and tracks the ones stored
 * from then on), and until it has been told, or while it has nothing tracked to evict, the shard falls back to its
 * oldest page, so a switch never makes a full store refuse appends.
 */
public final class ShardPolicy implements EvictionHook, PolicyReport {
    private static final List<String> PAGE = List.of("oldest-page", "reject");
    private static final List<String> TOKEN = List.of("lru", "streaming", "h2o", "utility", "lrfu");
    /** Defaults of the token policies' parameters (docs/policies.md). */
    private static final Map<String, Map<String, Double>> DEFAULTS = Map.of(
            "streaming", Map.of("sinks", 4.0, "window", 256.0),
            "h2o", Map.of("sinks", 4.0, "window", 64.0),
            "utility", Map.of("attention", 1.0, "recency", 1.0, "frequency", 1.0, "recencyScale", 1024.0),
            "lrfu", Map.of("halfLife", io.pikv.kv.scheduling.BlockPolicies.LRFU_HALF_LIFE, "historyLimit", 0.0));

    /** The policy in charge: its name, its parameters with the defaults filled in, and its state. */
    private record Active(String name, Map<String, Double> parameters, EvictionHook hook, TokenRetention retention,
                          boolean weights, java.util.concurrent.atomic.AtomicBoolean told) {
    }

    private volatile Active active;
    /** Held (shared) by a batch of appends, so that no switch lands between two of its entries. */
    private final java.util.concurrent.locks.ReentrantReadWriteLock switching =
            new java.util.concurrent.locks.ReentrantReadWriteLock();

    /** What {@link #holdSwitches} returns: closing it lets switches through again. */
    public interface Hold extends AutoCloseable {
        @Override
        void close();
    }
    /**
     * Evictions heard while {@link #makeRoom} runs, forgotten when it returns (the token policy is then mid-way through
     * its own bookkeeping). Touched only under the shard's write lock, which both calls hold.
     */
    private final java.util.ArrayList<long[]> evictedMeanwhile = new java.util.ArrayList<>();
    private int makingRoom;

    private ShardPolicy(Active active, java.util.concurrent.atomic.AtomicLong fallbacks) {
        this.active = active;
        this.fallbacks = fallbacks;
    }

    /** The policy named {@code name} with default parameters; unknown names are a configuration error. */
    public static ShardPolicy of(String name) {
        return of(name, Map.of());
    }

    /** The policy {@code name} with {@code parameters} (unnamed ones keep their defaults). */
    public static ShardPolicy of(String name, Map<String, Double> parameters) {
        java.util.concurrent.atomic.AtomicLong fallbacks = new java.util.concurrent.atomic.AtomicLong();
        Active first = build(name, parameters, fallbacks);
        first.told().set(true); // a shard's first policy: nothing is resident to tell it of
        return new ShardPolicy(first, fallbacks);
    }

    /**
     * Parameters written as {@code name=value} pairs separated by commas ({@code pikv.store.eviction-parameters});
     * blank: none.
     */
    public static Map<String, Double> parseParameters(String text) {
        Map<String, Double> out = new TreeMap<>();
        if (text == null || text.isBlank()) {
            return out;
        }
        for (String pair : text.split(",", -1)) { // -1: an empty item at the end is refused too, as in the middle
            int eq = pair.indexOf('=');
            String key = eq < 0 ? "" : pair.substring(0, eq).trim();
            if (key.isEmpty()) {
                throw new IllegalArgumentException("eviction parameters are name=value pairs separated by commas, got '"
                        + pair.trim() + "' in '" + text + "'");
            }
            if (out.containsKey(key)) {
                throw new IllegalArgumentException("eviction parameter " + key + " is given twice in '" + text
                        + "': give each once");
            }
            try {
                out.put(key, Double.parseDouble(pair.substring(eq + 1).trim()));
            } catch (NumberFormatException e) {
                throw new IllegalArgumentException("eviction parameter " + key + " must be a number, got '"
                        + pair.substring(eq + 1).trim() + "'");
            }
        }
        return out;
    }

    /** Refuses a parameter without a finite value (a control record's JSON may carry null). */
    public static void requireFinite(Map<String, Double> parameters) {
        for (Map.Entry<String, Double> e : parameters.entrySet()) {
            if (e.getValue() == null || !Double.isFinite(e.getValue())) {
                throw new IllegalArgumentException("parameter " + e.getKey() + " must be a finite number, got "
                        + e.getValue());
            }
        }
    }

    /** Names this sidecar can run. */
    public static Set<String> known() {
        Set<String> names = new TreeSet<>(PAGE);
        names.addAll(TOKEN);
        return names;
    }

    /**
     * Whether the policy reads parameters ({@code streaming}, {@code h2o}: sinks, window; {@code utility}: weights;
     * {@code lrfu}: halfLife, historyLimit).
     */
    public static boolean takesParameters(String name) {
        return DEFAULTS.containsKey(name);
    }

    /**
     * Checks that {@code name} with {@code parameters} could run, without switching to it.
     *
     * @throws IllegalArgumentException an unknown name, or a parameter the policy does not take or out of its range
     */
    public static void check(String name, Map<String, Double> parameters) {
        build(name, parameters, new java.util.concurrent.atomic.AtomicLong());
    }

    /**
     * Keeps the policy in charge until the hold is closed: a batch of appends is stored, and makes its room, under one
     * policy (a switch to {@code reject} between its entries would refuse a later one after an earlier one evicted).
     * Take it with no lock a switch's re-tracking needs held for long: {@link #use} waits for it.
     */
    public Hold holdSwitches() {
        switching.readLock().lock();
        return () -> switching.readLock().unlock();
    }

    /**
     * Runs {@code change} once no batch holds the policy, and keeps new batches out while it runs, as a switch does:
     * for a budget change, which must not land between two entries of a batch whose room was checked against the
     * budget before it.
     *
     * @throws IllegalStateException from inside a batch that holds the policy (it would wait for itself)
     */
    public int betweenBatches(java.util.function.IntSupplier change) {
        if (switching.getReadHoldCount() > 0) {
            throw new IllegalStateException("a change from inside a batch that holds the policy would wait for itself");
        }
        switching.writeLock().lock();
        try {
            return change.getAsInt();
        } finally {
            switching.writeLock().unlock();
        }
    }

    /** Switches to {@code name} with default parameters; when the name is unknown, keeps the current one and says why. */
    public Optional<String> use(String name) {
        return use(name, Map.of());
    }

    /**
     * Switches to {@code name} with {@code parameters} (unnamed ones keep their defaults); when the name or a
     * parameter is not known, keeps the current policy and says why.
     */
    public Optional<String> use(String name, Map<String, Double> parameters) {
        Active next;
        try {
            next = build(name, parameters, fallbacks);
        } catch (IllegalArgumentException e) {
            return Optional.of(e.getMessage() + "; keeping " + active.name());
        }
        if (!(next.name().equals(active.name()) && next.parameters().equals(active.parameters()))) {
            if (switching.getReadHoldCount() > 0) {
                throw new IllegalStateException("a switch from inside a batch that holds the policy would wait "
                        + "for itself");
            }
            switching.writeLock().lock(); // after the batches under way: one batch, one policy
            try {
                active = next; // the same policy with the same parameters keeps what it tracked
            } finally {
                switching.writeLock().unlock();
            }
            if (next.retention() != null) {
                // A new token policy tracks nothing yet: it is told of the entries resident now, else it would
                // evict only what is stored from here on, the newest first. Until it has been told of them all,
                // the shard evicts its oldest pages instead (appends go on meanwhile: a batch's own first entries,
                // all the new policy would know of, must not be its victims).
                try {
                    onSwitch.run();
                } catch (RuntimeException | OutOfMemoryError e) {
                    // Told of some entries only: it stays untold, so the shard goes on evicting its oldest pages
                    // (as during any switch) rather than let it rank the few it knows while the rest stay.
                    return Optional.of("policy " + name + " is in force but could not be told of the entries "
                            + "stored before it (" + e + "): the shard evicts its oldest pages instead until "
                            + "another policy, or other parameters, is switched to");
                }
                next.told().set(true);
            }
        }
        return Optional.empty();
    }

    private static Active build(String name, Map<String, Double> parameters,
                                java.util.concurrent.atomic.AtomicLong fallbacks) {
        if (PAGE.contains(name)) {
            if (!parameters.isEmpty()) {
                throw new IllegalArgumentException("policy " + name + " takes no parameters, got " + parameters.keySet());
            }
            return new Active(name, Map.of(), name.equals("reject") ? EvictionHook.REJECT : EvictionHook.OLDEST_PAGE_FIRST,
                    null, false, new java.util.concurrent.atomic.AtomicBoolean(true));
        }
        if (!TOKEN.contains(name)) {
            throw new IllegalArgumentException("unknown eviction policy '" + name + "' (this sidecar knows "
                    + String.join(", ", known()) + ")");
        }
        Map<String, Double> defaults = DEFAULTS.getOrDefault(name, Map.of());
        requireFinite(parameters);
        for (String key : parameters.keySet()) {
            if (!defaults.containsKey(key)) {
                throw new IllegalArgumentException("policy " + name + " has no parameter '" + key + "'"
                        + (defaults.isEmpty() ? " (it takes none)" : " (it takes " + String.join(", ",
                        new TreeSet<>(defaults.keySet())) + ")"));
            }
        }
        Map<String, Double> resolved = new TreeMap<>(defaults);
        // -0.0 as 0.0: the same parameters compare equal, so a record that repeats them keeps what the policy tracked.
        parameters.forEach((key, value) -> resolved.put(key, value == 0 ? 0.0 : value));
        java.util.function.ToDoubleFunction<String> p = resolved::get;
        if (name.equals("utility") && p.applyAsDouble("attention") == 0 && p.applyAsDouble("recency") == 0
                && p.applyAsDouble("frequency") == 0) { // every token would score 0: the victims arbitrary
            throw new IllegalArgumentException("utility weights attention, recency and frequency are all 0: give at "
                    + "least one a positive weight");
        }
        EvictionPolicy policy = switch (name) {
            case "lru" -> new Lru();
            case "streaming" -> new StreamingLlm(count(p, "sinks"), count(p, "window"));
            case "h2o" -> new HeavyHitter(count(p, "sinks"), count(p, "window"));
            case "utility" -> new Utility(p.applyAsDouble("attention"), p.applyAsDouble("recency"),
                    p.applyAsDouble("frequency"), p.applyAsDouble("recencyScale"));
            default -> Lrfu.sharedHistory(p.applyAsDouble("halfLife"), count(p, "historyLimit"), false);
        };
        TokenRetention retention = new TokenRetention(policy);
        EvictionHook tokens = retention.evictionHook();
        // Told of the resident entries: at once for a shard's first policy (nothing is resident yet), after
        // use(...) has told it for a switch.
        java.util.concurrent.atomic.AtomicBoolean told = new java.util.concurrent.atomic.AtomicBoolean();
        EvictionHook hook = ctx -> {
            if (told.get()) {
                tokens.makeRoom(ctx);
            }
            if (ctx.pool().pagesInUse() >= ctx.pool().maxPages()) {
                // Nothing tracked to evict, or not yet told of what is resident (just switched): the oldest page.
                fallbacks.incrementAndGet();
                EvictionHook.OLDEST_PAGE_FIRST.makeRoom(ctx);
            }
        };
        return new Active(name, Map.copyOf(resolved), hook, retention,
                TokenRetention.ranksByAttention(name, resolved), told);
    }

    private static int count(java.util.function.ToDoubleFunction<String> p, String key) {
        double v = p.applyAsDouble(key);
        if (!(v >= 0) || v > Integer.MAX_VALUE || v != Math.rint(v)) {
            throw new IllegalArgumentException("parameter " + key + " must be a whole number >= 0, got " + v);
        }
        return (int) v;
    }

    /**
     * Whether the active policy ranks tokens by attention, so attention must report its weights here (and runs on the
     * CPU, which computes them); lru and streaming rank by generation order and need none.
     */
    public boolean wantsAttention() {
        return active.weights();
    }

    /** Runs after a switch to a new token policy: the shard tells it of what it holds (see {@link #use}). */
    private volatile Runnable onSwitch = () -> {
    };

    /** What the shard does when a new token policy starts: tell it of the entries resident (one per shard). */
    void onSwitch(Runnable tellResident) {
        this.onSwitch = tellResident;
    }

    /** A token was stored. */
    public void appended(long sequence, int layer, int position) {
        TokenRetention r = active.retention();
        if (r != null) {
            r.appended(sequence, layer, position);
        }
    }

    /** These entries are resident (told after a switch): tracked in position order where not tracked yet. */
    void resident(long sequence, int layer, int[] positions) {
        TokenRetention r = active.retention();
        if (r != null) {
            r.track(sequence, layer, positions);
        }
    }

    /** Attention visited these entries with these weights. */
    public void attended(long sequence, int layer, AttentionResult result) {
        TokenRetention r = active.retention();
        if (r != null && result.hasWeights()) {
            r.attended(sequence, layer, result);
        }
    }

    /** Entries were taken back (not evicted). */
    public void withdrawn(long sequence, int layer, int[] positions) {
        TokenRetention r = active.retention();
        if (r != null) {
            r.withdrawn(sequence, layer, positions);
        }
    }

    /** The sequence was closed. */
    public void closed(long sequence) {
        TokenRetention r = active.retention();
        if (r != null) {
            r.drop(sequence);
        }
    }

    /**
     * Entries evicted before the policy was told of their store (another request's room taken between the store and
     * {@link #appended}): the eviction it heard then found nothing to untrack, so they are untracked now.
     */
    public void evictedBeforeTold(long sequence, int layer, int[] positions) {
        TokenRetention r = active.retention();
        if (r != null) {
            r.forget(sequence, layer, positions);
        }
    }

    /**
     * How often the hook, on any thread, evicted the oldest page because the token policy could not make room (or had
     * not been told of the resident entries yet): a batch whose entries went while it rose lost them, perhaps, to no
     * policy's ranking. Shared by the shard's policies (one shard a process).
     */
    public long fallbacks() {
        return fallbacks.get();
    }

    private final java.util.concurrent.atomic.AtomicLong fallbacks;

    /** Whether the active policy ranks tokens (a token policy), not pages ({@code oldest-page}, {@code reject}). */
    public boolean ranksTokens() {
        return active.retention() != null;
    }

    /** Tokens of (sequence, layer) the active token policy tracks (0 under a page policy). */
    int tracked(long sequence, int layer) {
        TokenRetention r = active.retention();
        return r == null ? 0 : r.tracked(sequence, layer);
    }

    @Override
    public void makeRoom(EvictionContext context) {
        makingRoom++;
        try {
            active.hook().makeRoom(context);
        } finally {
            if (--makingRoom == 0 && !evictedMeanwhile.isEmpty()) {
                // The token policy untracked its own victims; what else went (the oldest-page fallback, a page of a
                // budget resize) it still tracks.
                TokenRetention r = active.retention();
                try {
                    if (r != null) {
                        for (long[] e : evictedMeanwhile) {
                            r.forget(e[0], (int) e[1], new int[] {(int) e[2]});
                        }
                    }
                } finally {
                    evictedMeanwhile.clear(); // also after a failure: the next room made must not forget them again
                }
            }
        }
    }

    /**
     * An entry left the shard as an eviction (the token policy's own, the oldest-page fallback, the pyramid budgets,
     * a budget resize): the token policy stops tracking it, so it never names a victim the shard no longer holds and
     * its tracking does not outgrow what is resident.
     */
    @Override
    public void evicted(long sequence, int layer, int position) {
        if (makingRoom > 0) {
            evictedMeanwhile.add(new long[] {sequence, layer, position});
            return;
        }
        TokenRetention r = active.retention();
        if (r != null) {
            r.forget(sequence, layer, new int[] {position});
        }
    }

    @Override
    public String activePolicy() {
        return active.name();
    }

    /** The parameters of the policy in charge, defaults filled in (none for page policies). */
    public Map<String, Double> activeParameters() {
        return active.parameters();
    }
}
