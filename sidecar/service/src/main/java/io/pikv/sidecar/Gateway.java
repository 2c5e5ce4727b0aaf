package io.pikv.sidecar;

import io.pikv.kv.ExpertShardMap;
import io.pikv.kv.KvShard;
import io.pikv.kv.ModelShape;
import io.pikv.kv.PartialAttention;
import io.pikv.kv.UnknownSequenceException;
import io.pikv.kv.routing.CacheAwareRouter;
import io.pikv.kv.routing.Router;
import io.pikv.sidecar.client.SidecarClient;
import io.pikv.sidecar.client.SidecarException;
import io.pikv.sidecar.wire.Wire;

import org.jboss.logging.Logger;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.BitSet;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ThreadLocalRandom;
import java.util.function.Supplier;

/**
 * The gateway role: routes each token, sends its K/V to the shard that owns its primary expert (per the current
 * expert→shard map), fans attention out to exactly the shards it stored entries in scope on, and merges their partials
 * with the log-sum-exp rule, so the answer is the one a single store would give.
 *
 * <p>Which shards hold what is tracked per (sequence, layer, shard) as the set of experts whose entries were sent
 * there, so entries stay readable on the shard that holds them after their expert moves to another shard. A request
 * with several entries is all or none across shards: when one shard refuses its part, the parts already stored on
 * other shards are withdrawn.
 */
public final class Gateway implements KvApi {
    private static final Logger LOG = Logger.getLogger(Gateway.class);
    private final ModelShape shape;
    private final List<SidecarClient> shards;
    /** One router per layer: a cache-aware router's miss counts are per layer and decay once per token. */
    private final Router[] routers;
    private volatile ExpertShardMap map;
    private final Map<Long, State> sequences = new ConcurrentHashMap<>();
    /**
     * Ids closed while a shard had not confirmed taking back a failed call's entries (a request queued there may still
     * store them, into whatever sequence then has the id), with the time until which they were to be asked for: a
     * create of such an id is refused until then.
     */
    private final Map<Long, Long> closedUnsettled = new ConcurrentHashMap<>();

    /** Per layer: the next position, and per shard the experts whose entries it holds. The object is the lock. */
    private static final class State {
        final int[] length;
        final BitSet[][] experts;
        /**
         * A close is under way or was not confirmed by every shard: the sequence takes nothing more and answers as
         * unknown, but keeps its id until a close succeeds (a repeated DELETE asks the shards again).
         */
        volatile boolean closing;
        /** A close is asking the shards now: another close of the id meanwhile answers unknown, as the shards would. */
        boolean closeInFlight;
        /** When a call last looked the sequence up ({@link System#nanoTime}): idle sequences are closed. */
        volatile long lastUsed = System.nanoTime();
        /** When every shard was last told the sequence is alive ({@link #keepAlive}). */
        volatile long shardsTold = System.nanoTime();
        /** Entries whose take-back no shard confirmed (a timed-out request may store them late), retried. */
        final List<Unconfirmed> unconfirmed = new ArrayList<>();
        /**
         * The shards (by index) a close asks: every one, but after a failed create only those whose close of what it
         * made there was not confirmed (the others never made the sequence: the id may be another owner's there). A
         * shard that confirms a close is taken out, so a repeated close does not ask it again. Changed only by the
         * one close in flight ({@link #closeInFlight}) or under the lock.
         */
        final BitSet closeOn = new BitSet();

        State(int layers, int shards) {
            closeOn.set(0, shards);
            length = new int[layers];
            experts = new BitSet[layers][shards];
            for (BitSet[] row : experts) {
                for (int s = 0; s < shards; s++) {
                    row[s] = new BitSet();
                }
            }
        }
    }

    /**
     * Positions of (layer) a shard did not confirm taking back: a request that timed out may still store them, after
     * which every step would attend over an entry of a step that failed. Withdrawn again before each later call of the
     * layer until the shard has taken them all back, or {@link #UNCONFIRMED_FOR} has passed. {@code taken}: how many
     * of them the shard has said it took back so far, over every ask (it counts a position once: a position taken back
     * is stored no more, and positions are never given again), so a late store of some that is taken back later ends
     * the asking once the last one is.
     */
    private record Unconfirmed(int layer, int shard, int[] positions, int taken, long untilNanos) {
    }

    /** How long a gateway keeps asking a shard to take back entries it did not confirm taking back. */
    static final java.time.Duration UNCONFIRMED_FOR = java.time.Duration.ofMinutes(2);
    /** Positions asked for again per (layer, shard) at most. */
    static final int MAX_UNCONFIRMED = 1024;

    /**
     * @param routers makes the router of each layer (called once per layer): a router that keeps state, as the
     *                cache-aware one's miss counts, must not be shared between layers
     */
    public Gateway(ModelShape shape, List<SidecarClient> shards, Supplier<Router> routers) {
        if (shards.isEmpty()) {
            throw new IllegalArgumentException("a gateway needs at least one shard (pikv.gateway.shards)");
        }
        this.shape = shape;
        this.shards = List.copyOf(shards);
        this.routers = new Router[shape.layers()];
        for (int l = 0; l < this.routers.length; l++) {
            this.routers[l] = routers.get();
            for (int m = 0; m < l; m++) {
                if (this.routers[m] == this.routers[l]) {
                    throw new IllegalArgumentException("the router supplier gave one router to two layers");
                }
            }
        }
        this.map = ExpertShardMap.roundRobin(shape.experts(), shards.size());
    }

    /** The router of {@code layer}. */
    Router router(int layer) {
        return routers[layer];
    }

    /** Closes the idle connections to the shards (on shutdown). */
    public void shutdown() {
        closeAllOnShards(CLOSE_ON_SHUTDOWN);
        for (SidecarClient shard : shards) {
            shard.close();
        }
    }

    /** How long a stopping gateway spends closing its open sequences on the shards. */
    static final java.time.Duration CLOSE_ON_SHUTDOWN = java.time.Duration.ofSeconds(10);

    /**
     * Closes every sequence this gateway holds on every shard, as {@link #close} does (after the calls of each that
     * are under way; a shard that failed one close is not asked again), several at once, and waits at most
     * {@code within} for them: what a gateway knows of its sequences (lengths, where each expert's entries are) goes
     * with it, so no one could use or close them on the shards afterwards, and they would hold shard memory until the
     * shard restarts. First every sequence stops taking new calls. Returns the sequences closed everywhere in time;
     * closes still under way then go on in the background until the process ends.
     */
    int closeAllOnShards(java.time.Duration within) {
        for (State state : sequences.values()) {
            state.closing = true; // nothing new starts on them
        }
        List<Long> ids = List.copyOf(sequences.keySet());
        if (ids.isEmpty()) {
            return 0;
        }
        java.util.Set<SidecarClient> failed = ConcurrentHashMap.newKeySet();
        java.util.concurrent.atomic.AtomicInteger closed = new java.util.concurrent.atomic.AtomicInteger();
        java.util.concurrent.ExecutorService pool = java.util.concurrent.Executors.newFixedThreadPool(
                Math.min(8, ids.size()), r -> {
                    Thread t = new Thread(r, "pikv-gateway-close");
                    t.setDaemon(true);
                    return t;
                });
        long deadline = System.nanoTime() + within.toNanos();
        try {
            for (long id : ids) {
                pool.execute(() -> {
                    while (true) {
                        try {
                            close(id, failed);
                            closed.incrementAndGet();
                            return;
                        } catch (UnknownSequenceException e) {
                            // Closed meanwhile, or a close of it under way (a client's, or the idle sweep's, which
                            // the shutdown may have interrupted): while the id is still held that close has not
                            // succeeded, so this one tries again once it is over, within the time given.
                            if (!sequences.containsKey(id) || System.nanoTime() - deadline > 0) {
                                return;
                            }
                            try {
                                Thread.sleep(50);
                            } catch (InterruptedException stop) {
                                Thread.currentThread().interrupt();
                                return;
                            }
                        } catch (RuntimeException e) {
                            return; // said by close(); the sequence stays closing
                        }
                    }
                });
            }
            pool.shutdown(); // not interrupted at the deadline: closes under way go on while the process lasts
            pool.awaitTermination(within.toMillis(), java.util.concurrent.TimeUnit.MILLISECONDS);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        int left = sequences.size();
        LOG.infof("gateway stopping: closed %d of %d sequence(s) on the shards%s", closed.get(), ids.size(),
                left == 0 ? "" : "; " + left + " left open on some shard (unreachable, or out of time)");
        return closed.get();
    }

    /** Sequences this gateway has open (closing ones included: their ids are still taken). */
    public int openSequences() {
        return sequences.size();
    }

    public ExpertShardMap shardMap() {
        return map;
    }

    /** Routes new entries by {@code next} from now on; entries already stored stay where they are, readable. */
    public void applyShardMap(ExpertShardMap next) {
        if (next.shards() != shards.size() || next.experts() != shape.experts()) {
            throw new IllegalArgumentException("the shard map has " + next.shards() + " shards and " + next.experts()
                    + " experts; this gateway has " + shards.size() + " shards and the model " + shape.experts()
                    + " experts");
        }
        map = next;
    }

    @Override
    public long create(Long requested) {
        if (requested != null) {
            if (requested < 1) { // as a shard says it, before any shard is asked
                throw new IllegalArgumentException("a sequence id must be >= 1, got " + requested);
            }
            return create(requested.longValue(), true);
        }
        for (int attempt = 1; ; attempt++) {
            long id = ThreadLocalRandom.current().nextLong(1, Long.MAX_VALUE);
            try {
                return create(id, false);
            } catch (SequenceExistsException | ShardFailure e) {
                // The gateway chose the id: one a shard already has (made there directly) is no client's fault.
                boolean taken = e instanceof SequenceExistsException || ((ShardFailure) e).status() == 409;
                if (!taken || attempt == 3) {
                    throw e;
                }
            }
        }
    }

    /** {@code explicit}: the client named the id (it can close it); else the gateway chose it. */
    private long create(long id, boolean explicit) {
        if (!closedUnsettled.isEmpty()) {
            long now = System.nanoTime();
            closedUnsettled.values().removeIf(until -> now - until > 0);
        }
        checkSettled(id);
        State state = new State(shape.layers(), shards.size());
        // Held until every shard answered: a close, append or step of the id waits for the create to finish.
        synchronized (state) {
            if (sequences.putIfAbsent(id, state) != null) {
                throw new SequenceExistsException(id);
            }
            try {
                // Again: a close of the id may have ended between the check above and taking the id (it marks the id
                // unsettled before it lets the id go).
                checkSettled(id);
            } catch (SequenceExistsException e) {
                sequences.remove(id, state);
                throw e;
            }
            List<SidecarClient> created = new ArrayList<>();
            SidecarClient asked = null;
            try {
                for (SidecarClient shard : shards) {
                    asked = shard;
                    shard.createSequence(id);
                    created.add(shard);
                }
                used(state); // its end counts as use, as every call's does: asking slow shards can take a while
            } catch (RuntimeException | Error e) {
                // A shard that refused (4xx: the id is taken there, a bad shape) made nothing; one that failed or did
                // not answer may have made the sequence before the answer was lost, so it is closed there too (a 404
                // then says it made none). Also on an Error reading an answer: the shards made before stay open
                // otherwise, under an id the client never learns.
                if (!(e instanceof SidecarException se && se.status() >= 400 && se.status() < 500)) {
                    if (holdsEntries(asked, id)) {
                        // Not made by this create (it would be empty): another gateway's or client's sequence of the
                        // same explicit id, whose refusal this one did not get to read. Left to its owner.
                        LOG.warnf("gateway: sequence %d on %s holds entries, so this failed create did not make it; "
                                + "left open", id, asked.base());
                    } else {
                        created.add(asked);
                    }
                }
                boolean unconfirmed = false;
                state.closeOn.clear(); // a later close asks only the shards whose close below is not confirmed
                for (SidecarClient shard : created) {
                    try {
                        shard.closeSequence(id);
                    } catch (RuntimeException closeFailure) {
                        if (!(closeFailure instanceof SidecarException se && se.status() == 404)) {
                            unconfirmed = true;
                            state.closeOn.set(shards.indexOf(shard));
                            LOG.warnf("gateway: sequence %d may stay open on %s after a failed create: %s%s", id,
                                    shard.base(), closeFailure.getMessage(), explicit ? "; its id stays taken until a "
                                    + "close succeeds (a DELETE, or the idle sweep)" : " (the shard closes it as idle)");
                        }
                    }
                }
                if (unconfirmed && explicit) {
                    // As a close a shard did not confirm: closing, unknown to every other call, its id taken, so that
                    // the client, who knows the id, can close it. An id the gateway chose is let go instead: no
                    // client learnt it, and a shard that is down would otherwise leave one per failed create.
                    state.closing = true;
                } else {
                    sequences.remove(id); // only now: a create of the id meanwhile would have had its sequence closed
                }
                if (e instanceof Error error) {
                    throw error;
                }
                throw ShardFailure.of((RuntimeException) e);
            }
        }
        return id;
    }

    /** Whether {@code shard} holds a sequence {@code id} with entries in some layer (false when it cannot say). */
    private static boolean holdsEntries(SidecarClient shard, long id) {
        try {
            for (com.fasterxml.jackson.databind.JsonNode layer : shard.describe(id).path("layers")) {
                if (layer.path("length").asLong() > 0) {
                    return true;
                }
            }
        } catch (RuntimeException e) {
            // not known there, or no answer: closed as a sequence the create may have made
        }
        return false;
    }

    /** Refuses an id closed while a shard may still store a failed call's entries into it ({@link #closedUnsettled}). */
    private void checkSettled(long id) {
        Long unsettled = closedUnsettled.get(id);
        if (unsettled == null) {
            return;
        }
        long left = unsettled - System.nanoTime();
        if (left > 0) {
            throw new SequenceExistsException(id, "was closed while a shard may still store entries of a failed "
                    + "call into it; use another id, or this one in " + (left / 1_000_000_000L + 1) + " s");
        }
        closedUnsettled.remove(id, unsettled);
    }

    /**
     * Closes the sequence on every shard. The gateway forgets it only once every shard confirmed (or did not know
     * it): when one cannot be reached, the sequence stays closing — unknown to every other call, its id taken — and a
     * repeated close asks the shards again, so no shard keeps entries that nothing could close any more.
     */
    @Override
    public void close(long sequence) {
        close(sequence, null);
    }

    /**
     * {@link #close(long)}; with {@code failed} (shared by a shutdown's or an idle pass's closes) a shard that failed
     * one close is not asked again: the sequence then stays closing, as when the shard fails it.
     */
    private void close(long sequence, java.util.Set<SidecarClient> failed) {
        close(sequence, failed, -1);
    }

    /**
     * {@link #close(long, java.util.Set)}, only if no call has used the sequence for more than {@code idleNanos}
     * (when not negative); returns whether it asked the shards and every one confirmed.
     */
    private boolean close(long sequence, java.util.Set<SidecarClient> failed, long idleNanos) {
        State state = sequences.get(sequence);
        if (state == null) {
            throw new UnknownSequenceException(sequence);
        }
        long waitFrom = System.nanoTime();
        synchronized (state) { // after any step or append of the sequence in flight, which may still undo
            if (sequences.get(sequence) != state || state.closeInFlight) {
                throw new UnknownSequenceException(sequence);
            }
            // Not idle if a call used it lately, or held it while this waited (a call of several shard calls may
            // outlast the timeout it started within).
            if (idleNanos >= 0 && (System.nanoTime() - state.lastUsed <= idleNanos
                    || System.nanoTime() - waitFrom > IDLE_SWEEP_HELD_NANOS)) {
                return false;
            }
            state.closing = true;
            state.closeInFlight = true;
        }
        RuntimeException first = null;
        boolean asked = false;
        try {
            for (int i = state.closeOn.nextSetBit(0); i >= 0; i = state.closeOn.nextSetBit(i + 1)) {
                SidecarClient shard = shards.get(i);
                if (failed != null && failed.contains(shard)) {
                    if (first == null) {
                        first = new IllegalStateException(shard.base() + " failed an earlier close of this pass");
                    }
                    continue;
                }
                try {
                    shard.closeSequence(sequence);
                    state.closeOn.clear(i); // confirmed: not asked again by a repeated close
                } catch (RuntimeException e) {
                    if (e instanceof SidecarException se && se.status() == 404) {
                        state.closeOn.clear(i);
                    } else {
                        if (first == null) {
                            first = e;
                        }
                        if (failed != null) {
                            failed.add(shard);
                        }
                    }
                }
            }
            asked = true;
        } finally {
            synchronized (state) {
                if (asked && first == null) {
                    long until = Long.MIN_VALUE;
                    for (Unconfirmed u : state.unconfirmed) {
                        until = Math.max(until, u.untilNanos());
                    }
                    if (!state.unconfirmed.isEmpty()) {
                        closedUnsettled.put(sequence, until); // before the id is free again
                    }
                    sequences.remove(sequence, state);
                }
                state.closeInFlight = false;
            }
        }
        if (first != null) {
            LOG.warnf("sequence %d: a shard did not confirm its close (%s); it stays closing until a close succeeds",
                    sequence, first.getMessage());
            throw ShardFailure.of(first);
        }
        return true;
    }

    /** A sequence closed (or whose create failed) while its caller waited for its lock is gone. */
    private void checkOpen(long sequence, State state) {
        if (sequences.get(sequence) != state || state.closing) {
            throw new UnknownSequenceException(sequence);
        }
    }

    @Override
    public int[] lengths(long sequence) {
        State state = state(sequence);
        synchronized (state) {
            try {
                checkOpen(sequence, state); // closed (or re-created) while this waited for the lock
                return state.length.clone();
            } finally {
                used(state);
            }
        }
    }

    /**
     * Lengths and resident entries under one hold of the sequence's lock (one state of it: not half of an append or
     * of a step being undone), with one description asked of each shard that holds any of its entries.
     */
    @Override
    public int[][] layers(long sequence) {
        State state = state(sequence);
        synchronized (state) {
            try {
                return layersHeld(sequence, state);
            } finally {
                used(state); // its end counts as use: asking the shards can take a while
            }
        }
    }

    /** {@link #layers} with the sequence's lock held. */
    private int[][] layersHeld(long sequence, State state) {
        checkOpen(sequence, state);
        int[] lengths = state.length.clone();
        int[] resident = new int[lengths.length];
        for (int s = 0; s < shards.size(); s++) {
            boolean holds = false;
            for (int layer = 0; layer < lengths.length; layer++) {
                holds |= !state.experts[layer][s].isEmpty();
            }
            if (holds) {
                SidecarClient shard = shards.get(s);
                int[] counts = call(() -> shard.residents(sequence, lengths.length), state, sequence);
                for (int layer = 0; layer < lengths.length; layer++) {
                    if (!state.experts[layer][s].isEmpty()) { // as resident(): only what the shard was given
                        resident[layer] += counts[layer];
                    }
                }
            }
        }
        return new int[][] {lengths, resident};
    }

    @Override
    public int resident(long sequence, int layer) {
        shape.checkLayer(layer);
        State state = state(sequence);
        synchronized (state) { // one state of the sequence: not half of an append or of a step being undone
            try {
                checkOpen(sequence, state);
                int total = 0;
                for (SidecarClient shard : holding(state, layer)) {
                    total += call(() -> shard.resident(sequence, layer), state, sequence);
                }
                return total;
            } finally {
                used(state);
            }
        }
    }

    /** The shards that hold entries of (the state's sequence, layer); the state's lock held. */
    private List<SidecarClient> holding(State state, int layer) {
        List<SidecarClient> out = new ArrayList<>();
        for (int s = 0; s < shards.size(); s++) {
            if (!state.experts[layer][s].isEmpty()) {
                out.add(shards.get(s));
            }
        }
        return out;
    }

    @Override
    public int[] append(long sequence, Wire.AppendRequest request) {
        shape.checkLayer(request.layer());
        State state = state(sequence);
        Wire.AppendRequest.Entry[] entries = request.entries();
        int layer = request.layer();
        synchronized (state) {
            try {
                checkOpen(sequence, state);
                settle(state, sequence, layer, null); // an append reads nothing
                int lengthBefore = state.length[layer];
                int[] positions = new int[entries.length];
                List<List<Wire.AppendRequest.Entry>> parts = new ArrayList<>();
                List<List<Integer>> clientIndex = new ArrayList<>(); // per part: each entry's index in the request
                for (int s = 0; s < shards.size(); s++) {
                    parts.add(new ArrayList<>());
                    clientIndex.add(new ArrayList<>());
                }
                ExpertShardMap current = map;
                int next = state.length[layer];
                java.util.Set<Integer> used = new java.util.HashSet<>();
                for (int i = 0; i < entries.length; i++) {
                    Wire.AppendRequest.Entry e = entries[i];
                    checkExpert(e.expert(), "entry " + i + ": ");
                    // What every shard refuses, refused here before any shard stores (and maybe evicts for) its part.
                    shape.checkKv("entry " + i + ": k", e.k());
                    shape.checkKv("entry " + i + ": v", e.v());
                    int position = e.position() == Wire.NEXT_POSITION ? next : e.position();
                    if (e.position() == Wire.NEXT_POSITION && position > KvShard.MAX_POSITION) {
                        throw layerFull(sequence, layer);
                    }
                    if (position < 0 || position > KvShard.MAX_POSITION) {
                        throw new IllegalArgumentException("entry " + i + ": position must be in [0, "
                                + KvShard.MAX_POSITION + "] or -1 (next), got " + e.position());
                    }
                    // Through a gateway positions are append-only: the shards that could hold an earlier one are not
                    // asked, so an explicit position must be new.
                    if (position < lengthBefore || !used.add(position)) {
                        throw new IllegalArgumentException("entry " + i + ": position " + position
                                + " of sequence " + sequence + " layer " + layer + " is already stored or used "
                                + "(through a gateway positions are append-only; the layer's length is "
                                + lengthBefore + ")");
                    }
                    next = Math.max(next, position + 1);
                    positions[i] = position;
                    parts.get(current.shardOf(e.expert()))
                            .add(new Wire.AppendRequest.Entry(position, e.expert(), e.k(), e.v()));
                    clientIndex.get(current.shardOf(e.expert())).add(i);
                }
                List<SidecarClient.Pending<int[]>> sent = new ArrayList<>();
                for (int s = 0; s < shards.size(); s++) {
                    List<Wire.AppendRequest.Entry> part = parts.get(s);
                    sent.add(part.isEmpty() ? SidecarClient.Pending.of(new int[0])
                            : shards.get(s).startAppend(sequence, new Wire.AppendRequest(layer,
                                    part.toArray(new Wire.AppendRequest.Entry[0]))));
                }
                RuntimeException failure = null;
                Error error = null;
                int failedPart = -1;
                for (int s = 0; s < sent.size(); s++) {
                    try {
                        sent.get(s).await();
                    } catch (RuntimeException e) {
                        // The first failure, unless a later part's is the client's own: that one is its answer (its
                        // request is at fault whatever else failed), not a 502 of an earlier shard.
                        if (failure == null || !ShardFailure.causedByClient(failure) && ShardFailure.causedByClient(e)) {
                            failure = e;
                            failedPart = s;
                        }
                    } catch (Error e) {
                        // Reading an answer failed in the gateway itself (out of memory): the shard may have stored, so
                        // the undo below runs all the same, and the error goes on after it.
                        error = error == null ? e : error;
                        if (failure == null) {
                            failure = new IllegalStateException("the gateway failed reading a shard's answer: " + e, e);
                            failedPart = s;
                        }
                    }
                }
                if (failure != null) {
                    // Take back what any shard may have stored, even one whose answer failed (a timeout after it
                    // stored); not from one that refused its part, which stored none of it.
                    boolean undone = true;
                    boolean[] mayHold = new boolean[shards.size()];
                    for (int s = 0; s < shards.size(); s++) {
                        if (!parts.get(s).isEmpty() && !sent.get(s).refused()) {
                            int[] stored = parts.get(s).stream().mapToInt(Wire.AppendRequest.Entry::position).toArray();
                            mayHold[s] = !undo(state, s, sequence, layer, stored);
                            undone &= !mayHold[s];
                        }
                    }
                    if (undone) {
                        state.length[layer] = lengthBefore;
                    } else {
                        // Entries may remain where the undo was not confirmed: their positions are never given again,
                        // and attention visits those shards (not ones that refused their part or took it back).
                        for (int s = 0; s < shards.size(); s++) {
                            if (!mayHold[s]) {
                                continue;
                            }
                            for (Wire.AppendRequest.Entry e : parts.get(s)) {
                                state.experts[layer][s].set(e.expert());
                            }
                        }
                        state.length[layer] = next;
                    }
                    if (error != null) {
                        throw error;
                    }
                    throw closedMeanwhile(state, sequence, failure) ? new UnknownSequenceException(sequence)
                            : ShardFailure.ofPart(failure, sequence,
                            clientIndex.get(failedPart).stream().mapToInt(Integer::intValue).toArray());
                }
                for (int s = 0; s < shards.size(); s++) {
                    for (Wire.AppendRequest.Entry e : parts.get(s)) {
                        state.experts[layer][s].set(e.expert());
                    }
                }
                state.length[layer] = next;
                return positions;
            } finally {
                used(state);
            }
        }
    }

    @Override
    public int withdraw(long sequence, int layer, int[] positions) {
        shape.checkLayer(layer);
        KvShard.checkPositions(positions); // as a shard would, also when no shard holds the layer
        KvShard.checkDistinct(positions);
        State state = state(sequence);
        synchronized (state) {
            try {
                checkOpen(sequence, state);
                // Every holding shard is asked, also after one failed: a withdrawal cannot be undone, so the answer
                // says what the others took back instead of leaving the client to guess.
                int total = 0;
                int failed = 0;
                RuntimeException failure = null;
                List<SidecarClient> holding = holding(state, layer);
                for (SidecarClient shard : holding) {
                    try {
                        total += call(() -> shard.withdraw(sequence, layer, positions), state, sequence);
                    } catch (RuntimeException e) {
                        failed++;
                        failure = failure == null ? e : failure;
                    }
                }
                if (failure != null) {
                    throw ShardFailure.withNote(failure, failed + " of the " + holding.size() + " shards holding layer "
                            + layer + " failed; the others took back " + total + " entries (a withdrawal is not undone: "
                            + "asking again takes back what is still held)");
                }
                return total;
            } finally {
                used(state);
            }
        }
    }

    @Override
    public PartialAttention attend(long sequence, Wire.AttendRequest request) {
        shape.checkLayer(request.layer());
        shape.checkQuery(request.query()); // the client's mistake, said as such (not a shard's refusal)
        State state = state(sequence);
        BitSet scope = new BitSet();
        if (request.allExperts()) {
            scope.set(0, shape.experts());
        } else {
            for (int e : request.experts()) {
                checkExpert(e, "scope: ");
                scope.set(e);
            }
        }
        // Under the sequence's lock for the whole fan-out, as a step: the answer covers one state of the sequence,
        // never half of an append, nor a step's token that its undo takes back.
        synchronized (state) {
            try {
                checkOpen(sequence, state);
                BitSet asked = holding(state, request.layer(), scope);
                settle(state, sequence, request.layer(), asked);
                return attendLocked(state, sequence, request, asked);
            } finally {
                used(state);
            }
        }
    }

    /** The shards that hold entries of {@code layer} routed to an expert in {@code scope}: those a call asks. */
    private BitSet holding(State state, int layer, BitSet scope) {
        BitSet holding = new BitSet(shards.size());
        for (int s = 0; s < shards.size(); s++) {
            if (state.experts[layer][s].intersects(scope)) {
                holding.set(s);
            }
        }
        return holding;
    }

    private PartialAttention attendLocked(State state, long sequence, Wire.AttendRequest request, BitSet asked) {
        List<SidecarClient.Prepared<PartialAttention>> prepared = new ArrayList<>();
        for (int s = asked.nextSetBit(0); s >= 0; s = asked.nextSetBit(s + 1)) {
            prepared.add(shards.get(s).prepareAttend(sequence, request));
        }
        List<SidecarClient.Pending<PartialAttention>> parts = new ArrayList<>(prepared.size());
        for (SidecarClient.Prepared<PartialAttention> call : prepared) {
            parts.add(call.start()); // every body encoded first: the sends go out back to back
        }
        if (parts.isEmpty()) {
            return PartialAttention.empty(shape.qHeads(), shape.headDim(), false);
        }
        List<PartialAttention> partials = new ArrayList<>(parts.size());
        RuntimeException failure = null;
        Error error = null;
        for (SidecarClient.Pending<PartialAttention> f : parts) {
            try {
                partials.add(f.await()); // every answer is read, so that every connection is left clean
            } catch (RuntimeException e) {
                failure = failure == null ? e : failure;
            } catch (Error e) {
                error = error == null ? e : error; // the gateway's own (out of memory): the other answers still read
            }
        }
        if (error != null) {
            throw error;
        }
        if (failure != null) {
            throw closedMeanwhile(state, sequence, failure) ? new UnknownSequenceException(sequence)
                    : ShardFailure.ofKnown(failure, sequence);
        }
        return PartialAttention.merge(partials);
    }

    /**
     * One step in one round trip per shard: the shard that owns the token's primary expert stores it and answers its
     * partial attention in the same call, while the other shards that hold entries in scope answer theirs.
     */
    @Override
    public Wire.StepResponse step(long sequence, Wire.StepRequest request) {
        shape.checkLayer(request.layer());
        // Refused here, before the owner stores the token and the other shards attend (and rank) with the query.
        shape.checkQuery(request.query());
        shape.checkKv("k", request.k());
        shape.checkKv("v", request.v());
        State state = state(sequence);
        // One map for the whole step: the router's choice, the owner and the misses agree even when control
        // installs another map meanwhile.
        ExpertShardMap current = map;
        int[] experts = route(request, current);
        int layer = request.layer();
        Wire.StepRequest routed = new Wire.StepRequest(layer, Wire.CHOSEN_EXPERTS, request.scope(), null, experts,
                request.query(), request.k(), request.v());
        BitSet scope = new BitSet();
        if (request.scope() == Wire.SCOPE_ALL) {
            scope.set(0, shape.experts());
        } else {
            for (int e : experts) {
                scope.set(e);
            }
        }
        synchronized (state) {
            try {
                checkOpen(sequence, state);
                int owner = current.shardOf(experts[0]);
                BitSet asked = holding(state, layer, scope);
                asked.set(owner);
                settle(state, sequence, layer, asked);
                int position = state.length[layer];
                if (position > KvShard.MAX_POSITION) {
                    throw layerFull(sequence, layer);
                }
                // Every body is encoded before the first is sent, so the sends go out back to back.
                List<SidecarClient.Prepared<PartialAttention>> prepared = new ArrayList<>();
                prepared.add(shards.get(owner).prepareStepPartial(sequence, routed, position));
                Wire.AttendRequest attend = new Wire.AttendRequest(layer,
                        request.scope() == Wire.SCOPE_ALL ? new int[0] : experts, request.query());
                for (int s = asked.nextSetBit(0); s >= 0; s = asked.nextSetBit(s + 1)) {
                    if (s != owner) {
                        prepared.add(shards.get(s).prepareAttend(sequence, attend));
                    }
                }
                List<SidecarClient.Pending<PartialAttention>> parts = new ArrayList<>(prepared.size());
                for (SidecarClient.Prepared<PartialAttention> call : prepared) {
                    parts.add(call.start());
                }
                List<PartialAttention> partials = new ArrayList<>(parts.size());
                RuntimeException failure = null;
                Error error = null;
                for (SidecarClient.Pending<PartialAttention> f : parts) {
                    try {
                        partials.add(f.await());
                    } catch (RuntimeException e) {
                        failure = failure == null ? e : failure;
                    } catch (Error e) {
                        // The gateway itself failed reading an answer: the undo below runs all the same.
                        error = error == null ? e : error;
                        failure = failure == null ? new IllegalStateException("the gateway failed reading a shard's "
                                + "answer: " + e, e) : failure;
                    }
                }
                if (failure != null) {
                    // The owner may have stored the token (even if its answer failed): take it back, the step did not
                    // happen. When that cannot be confirmed the position is not given again.
                    if (!parts.get(0).refused() && !undo(state, owner, sequence, layer, new int[] {position})) {
                        state.experts[layer][owner].set(experts[0]);
                        state.length[layer] = position + 1;
                    }
                    if (error != null) {
                        throw error;
                    }
                    throw ShardFailure.ofKnown(failure, sequence);
                }
                state.experts[layer][owner].set(experts[0]);
                state.length[layer] = position + 1;
                if (request.mode() != Wire.CHOSEN_EXPERTS) {
                    routed(layer, experts, current); // a step that happened: one refused moves no router on
                }
                return new Wire.StepResponse(position, experts, PartialAttention.merge(partials).finish().output());
            } finally {
                used(state);
            }
        }
    }

    /**
     * Withdraws {@code positions} from shard {@code s}; false (logged) unless the shard confirms it took back every one.
     * Fewer means a request that timed out may still be on its way (queued on the shard): it could store them after
     * this withdraw, so they count as not taken back.
     */
    private boolean undo(State state, int s, long sequence, int layer, int[] positions) {
        boolean confirmed;
        int withdrawn = 0;
        try {
            withdrawn = shards.get(s).withdraw(sequence, layer, positions);
            confirmed = withdrawn == positions.length;
            if (!confirmed) {
                LOG.warnf("gateway: %s took back %d of positions %s of sequence %d layer %d: the rest may still be "
                        + "stored by a request still on its way; their positions are not given again, and the shard "
                        + "is asked again before the layer's next call", shards.get(s).base(), withdrawn,
                        brief(positions), sequence, layer);
            }
        } catch (RuntimeException e) {
            confirmed = false;
            LOG.warnf("gateway: could not take back positions %s of sequence %d layer %d from %s: %s; asked again "
                    + "before the layer's next call", brief(positions), sequence, layer, shards.get(s).base(),
                    e.getMessage());
        }
        if (!confirmed) {
            // One record per (layer, shard), so that failures add positions to one withdrawal instead of adding calls.
            // Only the newest MAX_UNCONFIRMED of a large request's positions are kept (so the set stays small); which
            // of them were taken is unknown, so those dropped take their share of the count taken along.
            int[] newest = positions;
            int[] taken = {withdrawn};
            if (positions.length > MAX_UNCONFIRMED) {
                newest = positions.clone();
                Arrays.sort(newest);
                newest = Arrays.copyOfRange(newest, newest.length - MAX_UNCONFIRMED, newest.length);
                taken[0] = Math.max(0, withdrawn - (positions.length - MAX_UNCONFIRMED));
            }
            java.util.TreeSet<Integer> merged = new java.util.TreeSet<>();
            for (int p : newest) {
                merged.add(p);
            }
            state.unconfirmed.removeIf(u -> {
                if (u.layer() == layer && u.shard() == s) {
                    for (int p : u.positions()) {
                        merged.add(p);
                    }
                    taken[0] += u.taken();
                    return true;
                }
                return false;
            });
            while (merged.size() > MAX_UNCONFIRMED) {
                merged.pollFirst(); // the oldest positions: the longest past their request
                taken[0] = Math.max(0, taken[0] - 1); // which were taken is unknown: ask longer rather than less
            }
            state.unconfirmed.add(new Unconfirmed(layer, s, merged.stream().mapToInt(Integer::intValue).toArray(),
                    taken[0], System.nanoTime() + UNCONFIRMED_FOR.toNanos()));
        }
        return confirmed;
    }

    /** Positions for a log line: all of a few, else their count and range (a large append's would fill the log). */
    static String brief(int[] positions) {
        if (positions.length <= 16) {
            return Arrays.toString(positions);
        }
        int min = Integer.MAX_VALUE;
        int max = Integer.MIN_VALUE;
        for (int p : positions) {
            min = Math.min(min, p);
            max = Math.max(max, p);
        }
        return positions.length + " positions in [" + min + ", " + max + "]";
    }

    private static IllegalArgumentException layerFull(long sequence, int layer) {
        return new IllegalArgumentException("layer " + layer + " of sequence " + sequence + " is full: its positions "
                + "reach " + KvShard.MAX_POSITION + ", the most a shard stores; close the sequence and start another");
    }

    /**
     * The step's experts: the router's choice from the gate logits (changing nothing in the router until the step has
     * happened: {@link #routed}), or the given experts after checking them.
     */
    int[] route(Wire.StepRequest request, ExpertShardMap current) {
        if (request.mode() == Wire.CHOSEN_EXPERTS) {
            BitSet seen = new BitSet();
            for (int e : request.experts()) {
                checkExpert(e, "");
                if (seen.get(e)) {
                    throw new IllegalArgumentException("expert " + e + " is chosen twice");
                }
                seen.set(e);
            }
            return request.experts().clone();
        }
        double[] logits = new double[request.logits().length];
        for (int i = 0; i < logits.length; i++) {
            logits[i] = request.logits()[i];
        }
        Router router = routers[request.layer()];
        synchronized (router) {
            return router.decide(logits, current).experts();
        }
    }

    /**
     * A step routed from its gate logits happened: its layer's router moves on by one token (a cache-aware one decays
     * its miss counts) and counts the step's misses (docs/routing.md): a chosen expert that made the token reach one
     * more shard. After the step, so that a step a shard refused (or that failed) skews no layer's router.
     */
    void routed(int layer, int[] chosen, ExpertShardMap current) {
        Router router = routers[layer];
        synchronized (router) {
            router.routed();
            if (!(router instanceof CacheAwareRouter cacheAware)) {
                return;
            }
            BitSet touched = new BitSet();
            for (int i = 0; i < chosen.length; i++) {
                int shard = current.shardOf(chosen[i]);
                if (i > 0 && !touched.get(shard)) {
                    cacheAware.recordMiss(chosen[i]);
                }
                touched.set(shard);
            }
        }
    }

    /** A call of {@code state} ended: its end counts as use (see closeIdle), unless a close has begun. */
    private static void used(State state) {
        if (!state.closing) {
            state.lastUsed = System.nanoTime();
        }
    }

    private State state(long sequence) {
        State state = sequences.get(sequence);
        if (state == null || state.closing) {
            throw new UnknownSequenceException(sequence);
        }
        state.lastUsed = System.nanoTime();
        return state;
    }

    /**
     * Tells every shard, with a cheap read of the sequence, that each open sequence not told so for {@code everyNanos}
     * is alive: a shard closes a sequence no call has used for its idle timeout, and a step or an attention reaches
     * only the shards that own its token or hold entries in its scope, so a shard that took no part in a long session
     * would otherwise close its share of it while the gateway still uses it. Returns the sequences told.
     */
    public int keepAlive(long everyNanos) {
        int told = 0;
        // A shard that fails once is not asked again in this pass: one down shard (each call waiting out its
        // timeout) must not hold the pass past the time the others close what they were not told of.
        java.util.Set<SidecarClient> failed = new java.util.HashSet<>();
        for (Map.Entry<Long, State> e : sequences.entrySet()) {
            State state = e.getValue();
            if (state.closing || System.nanoTime() - state.shardsTold < everyNanos) {
                continue;
            }
            state.shardsTold = System.nanoTime();
            for (SidecarClient shard : shards) {
                if (failed.contains(shard)) {
                    continue;
                }
                try {
                    shard.describe(e.getKey());
                } catch (SidecarException answered) {
                    // It answered (e.g. 404: it restarted): reachable, nothing to keep alive there.
                } catch (RuntimeException unreachable) {
                    failed.add(shard);
                    LOG.debugf("sequence %d: could not tell %s it is alive: %s", e.getKey(), shard.base(),
                            unreachable.getMessage());
                }
            }
            told++;
        }
        return told;
    }

    /**
     * Closes, on the shards as a DELETE does, the sequences no call has used for more than {@code idleNanos} (checked
     * again under each one's lock, so a call that just looked it up keeps it), and retries those an earlier close left
     * closing; returns how many were closed. A shard that fails a close leaves its sequence closing, for the next try.
     */
    public int closeIdle(long idleNanos) {
        long now = System.nanoTime();
        closedUnsettled.values().removeIf(until -> now - until > 0);
        int closed = 0;
        java.util.Set<SidecarClient> failed = new java.util.HashSet<>(); // as in a shutdown: asked once per pass
        for (Map.Entry<Long, State> e : sequences.entrySet()) {
            if (System.nanoTime() - e.getValue().lastUsed <= idleNanos) {
                continue;
            }
            try {
                if (close(e.getKey(), failed, idleNanos)) {
                    closed++;
                }
            } catch (UnknownSequenceException gone) {
                // closed meanwhile, or a close of it under way
            } catch (RuntimeException notConfirmed) {
                // said by close(); the sequence stays closing, asked again at the next sweep
            }
        }
        return closed;
    }


    private void checkExpert(int expert, String where) {
        try {
            shape.checkExpert(expert);
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException(where + e.getMessage(), e);
        }
    }

    /** Whether a shard's 404 came from a close of the sequence through this gateway, while the call ran. */
    private boolean closedMeanwhile(State state, long sequence, RuntimeException failure) {
        return failure instanceof SidecarException se && se.status() == 404
                && (state.closing || sequences.get(sequence) != state);
    }

    private <T> T call(java.util.function.Supplier<T> shardCall, State state, long sequence) {
        try {
            return shardCall.get();
        } catch (RuntimeException e) {
            throw closedMeanwhile(state, sequence, e) ? new UnknownSequenceException(sequence)
                    : ShardFailure.ofKnown(e, sequence);
        }
    }

    /**
     * Asks again for the entries of {@code layer} whose take-back was not confirmed (state's lock held): a shard that
     * now takes back all of them, or a deadline passed, ends the asking. A shard that cannot be asked and that the call
     * is about to ask ({@code asked}; null for a call that reads nothing) fails the call with 502: its answer could
     * cover a failed call's entries.
     */
    private void settle(State state, long sequence, int layer, BitSet asked) {
        if (state.unconfirmed.isEmpty()) {
            return;
        }
        RuntimeException unsettled = null;
        long now = System.nanoTime();
        for (java.util.ListIterator<Unconfirmed> it = state.unconfirmed.listIterator(); it.hasNext(); ) {
            Unconfirmed u = it.next();
            if (u.layer() != layer) {
                continue;
            }
            int taken = u.taken();
            try {
                int withdrawn = shards.get(u.shard()).withdraw(sequence, layer, u.positions());
                if (withdrawn > 0) {
                    LOG.infof("gateway: %s had stored %d entr(ies) of a failed call late (positions %s of sequence %d "
                            + "layer %d): taken back", shards.get(u.shard()).base(), withdrawn,
                            Arrays.toString(u.positions()), sequence, layer);
                }
                taken += withdrawn;
                if (taken >= u.positions().length) {
                    it.remove();
                    continue;
                }
            } catch (RuntimeException e) {
                LOG.debugf("gateway: asking %s again to take back %s failed: %s", shards.get(u.shard()).base(),
                        Arrays.toString(u.positions()), e.getMessage());
                if (asked != null && asked.get(u.shard()) && unsettled == null && now - u.untilNanos() <= 0) {
                    unsettled = ShardFailure.withNote(e, shards.get(u.shard()).base() + " could not be asked again to "
                            + "take back positions " + Arrays.toString(u.positions()) + " of a failed call (sequence "
                            + sequence + " layer " + layer + "), and this call would read them: send it again");
                }
            }
            if (now - u.untilNanos() > 0) {
                LOG.warnf("gateway: %s never confirmed taking back %d of positions %s of sequence %d layer %d; no "
                        + "longer asked", shards.get(u.shard()).base(), u.positions().length - taken,
                        Arrays.toString(u.positions()), sequence, layer);
                it.remove();
            } else if (taken != u.taken()) {
                it.set(new Unconfirmed(u.layer(), u.shard(), u.positions(), taken, u.untilNanos()));
            }
        }
        if (unsettled != null) {
            throw unsettled;
        }
    }
}
