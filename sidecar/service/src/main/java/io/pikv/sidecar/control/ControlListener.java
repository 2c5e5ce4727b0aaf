package io.pikv.sidecar.control;

import com.fasterxml.jackson.databind.ObjectMapper;
import io.micrometer.core.instrument.Counter;
import io.micrometer.core.instrument.Gauge;
import io.micrometer.core.instrument.Meter;
import io.micrometer.core.instrument.MeterRegistry;
import io.pikv.api.events.ControlState;
import io.pikv.sidecar.kafka.KafkaLink;
import org.apache.kafka.clients.consumer.Consumer;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.common.KafkaException;
import org.apache.kafka.common.PartitionInfo;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.WakeupException;
import org.jboss.logging.Logger;

import java.io.IOException;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.EnumMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.function.Supplier;

/**
 * Reads the compacted control topic into {@link ShardControl}: from its start, every partition (no consumer group:
 * each sidecar reads everything), then follows it. {@link #ready()} turns true once the topic has been read up to
 * the end it had when reading began — the latest record of this cluster, if any, is applied by then — or, when
 * the topic cannot be read (broker unreachable, topic missing), once the start-up wait has passed; the listener
 * keeps trying and applies records whenever they come.
 */
public final class ControlListener implements AutoCloseable {
    private static final Logger LOG = Logger.getLogger(ControlListener.class);
    private static final Duration CALL_TIMEOUT = Duration.ofSeconds(2);
    private static final long LINK_CHECK_MS = 5000;
    /** While reading, how long the broker may stay silent before the topic counts as unreadable (two link checks). */
    private static final long SILENT_NANOS = 2 * LINK_CHECK_MS * 1_000_000L;
    /** When the broker last answered while reading (partitions, end offsets, records). */
    private volatile long lastAnswer = System.nanoTime();

    /** Where reading stands. */
    public enum Phase {
        /** Looking for the topic's partitions. */
        STARTING,
        /** Reading up to the end offsets taken at start. */
        READING,
        /** Read to the end once; following. */
        CAUGHT_UP
    }

    private final String topic;
    private final ShardControl control;
    private final Supplier<Consumer<String, byte[]>> consumers;
    private volatile Consumer<String, byte[]> consumer;
    private final ObjectMapper json;
    private final KafkaLink link;
    private final MeterRegistry registry;
    private final Instant deadline;
    /** {@link #deadline} on {@link System#nanoTime}'s clock. */
    private final long deadlineNanos;
    private final Thread thread;
    private final Map<ShardControl.Outcome, Counter> outcomes = new EnumMap<>(ShardControl.Outcome.class);
    private final List<Meter> meters = new ArrayList<>();
    private volatile Phase phase = Phase.STARTING;
    private volatile boolean running;
    private volatile long recordsRead;
    private volatile String problem;
    private volatile boolean started;
    /** Set the first time {@link #ready()} is true; readiness never goes back. */
    private volatile boolean ready;
    /**
     * This cluster's records met during the first read, in the order read: applied when it ends, the latest only (see
     * {@link #applyLatest}). At most {@link #PENDING_LIMIT}; beyond it a record the shard would refuse for its content
     * goes first (counted invalid), else the lowest epoch (counted stale): what applies at the end never goes.
     */
    private final List<Candidate> pending = new ArrayList<>();
    static final int PENDING_LIMIT = 1024;

    /**
     * A record read during the first read, where it was read (for the log), and whether its content is one the shard
     * takes ({@link ShardControl#problem}).
     */
    private record Candidate(ControlState state, String where, boolean acceptable) {
    }

    /**
     * @param consumers makes the consumer, on the listener's thread; retried while it fails (a broker name that
     *                  does not resolve yet fails the construction), so that no Kafka problem can stop the sidecar
     */
    public ControlListener(String topic, ShardControl control, Duration startupWait,
                           Supplier<Consumer<String, byte[]>> consumers, ObjectMapper json, MeterRegistry registry,
                           KafkaLink link) {
        this.topic = topic;
        this.control = control;
        this.consumers = consumers;
        this.json = json;
        this.link = link;
        this.registry = registry;
        this.deadline = Instant.now().plus(startupWait);
        // Timed on the monotonic clock (the Instant is for display): a wall clock stepped back or forth by NTP must
        // neither stretch nor cut the wait.
        long waitNanos = startupWait.compareTo(Duration.ofDays(365)) > 0 ? Duration.ofDays(365).toNanos()
                : Math.max(0, startupWait.toNanos());
        this.deadlineNanos = System.nanoTime() + waitNanos;
        this.thread = new Thread(this::run, "pikv-control");
        thread.setDaemon(true);
        for (ShardControl.Outcome o : ShardControl.Outcome.values()) {
            Counter c = Counter.builder("pikv.control.records").tag("outcome", o.name().toLowerCase(Locale.ROOT))
                    .description("Control records read, by what became of them").register(registry);
            outcomes.put(o, c);
            meters.add(c);
        }
        meters.add(Gauge.builder("pikv.control.epoch", control, ShardControl::epoch)
                .description("The control epoch applied (-1: none, running the configured state)")
                .strongReference(true).register(registry));
    }

    public void start() {
        started = true;
        running = true;
        link.enabled(KafkaLink.Client.CONTROL);
        thread.start();
    }

    /** Whether the sidecar may report ready: the topic was read to its end, or the start-up wait is over. */
    public boolean ready() {
        if (ready) {
            return true;
        }
        // Past the start-up wait, ready only when the topic cannot be read: not found or not connected (a try has
        // failed: with a short wait, the first try may still be under way), or the broker silent for a while during
        // the read. Not while it is being read, even after a failure that is over.
        boolean now = phase == Phase.CAUGHT_UP || System.nanoTime() - deadlineNanos > 0
                && (phase == Phase.STARTING ? problem != null : System.nanoTime() - lastAnswer > SILENT_NANOS);
        if (now) {
            ready = true; // once ready, it stays so: control gates the start only, not serving afterwards
        }
        return now;
    }

    public Phase phase() {
        return phase;
    }

    /** Why KV requests must wait (the sidecar is not {@link #ready()}), or null. */
    public String servingRefusal() {
        return ready() ? null : "it is still reading control topic " + topic + " (it serves once the topic is read to"
                + " its end, or from " + deadline + " on if the topic cannot be read)";
    }

    /**
     * Why a shard map applied by hand ({@code PUT /v1/shard-map}) must wait, or null: while the sidecar is not ready,
     * and while the first read goes on after it became ready (the broker silent past the start-up wait). A map applied
     * then would outrank the records read so far, and the latest of them, its policy and budget too, would be dropped
     * as stale when the read ends.
     */
    public String manualMapRefusal() {
        String notServing = servingRefusal();
        if (notServing != null) {
            return notServing;
        }
        // (A listener that stopped during the read applies nothing of it any more: a map by hand is then the remedy.)
        if (phase == Phase.READING && thread.isAlive()) {
            return "it is still reading control topic " + topic + " (serving meanwhile, since the broker went silent"
                    + " past the start-up wait): a map applied by hand now would outrank the records read so far,"
                    + " which apply when the read ends";
        }
        return null;
    }

    /** Why the topic is not being read yet, or null. */
    public String problem() {
        return problem;
    }

    /** When the start-up wait ends (or ended). */
    public Instant deadline() {
        return deadline;
    }

    public String topic() {
        return topic;
    }

    private void run() {
        try {
            if (!connect()) {
                return;
            }
            List<TopicPartition> partitions = partitions();
            if (partitions == null) {
                return;
            }
            partitions = new ArrayList<>(partitions);
            consumer.assign(partitions);
            consumer.seekToBeginning(partitions);
            lastAnswer = System.nanoTime(); // the partitions came from the broker
            phase = Phase.READING;
            Map<TopicPartition, Long> end = null;
            long lastCheck = System.nanoTime(); // monotonic: a wall clock stepped back must not stop the checks
            long lastBudgetTry = System.nanoTime();
            while (running) {
                if (System.nanoTime() - lastBudgetTry >= LINK_CHECK_MS * 1_000_000L) {
                    // Outside the broker's calls: a refused budget is tried again also while every poll fails.
                    lastBudgetTry = System.nanoTime();
                    retryBudget();
                }
                try {
                    if (end == null) {
                        end = new java.util.HashMap<>(consumer.endOffsets(partitions, CALL_TIMEOUT));
                        lastAnswer = System.nanoTime();
                    }
                    var records = consumer.poll(Duration.ofMillis(500));
                    if (!records.isEmpty()) {
                        lastAnswer = System.nanoTime();
                    }
                    for (ConsumerRecord<String, byte[]> r : records) {
                        try {
                            handle(r);
                        } catch (RuntimeException e) {
                            // No record may end the listener: it is counted invalid, later records still apply.
                            outcomes.get(ShardControl.Outcome.INVALID).increment();
                            LOG.errorf(e, "control: record at %s-%d offset %d could not be handled; ignored",
                                    r.topic(), r.partition(), r.offset());
                        }
                    }
                    if (phase == Phase.READING && caughtUp(partitions, end)) {
                        applyLatest();
                        phase = Phase.CAUGHT_UP;
                        up();
                        LOG.infof("control: read %s to its end (%d records); running epoch %d", topic, recordsRead,
                                control.epoch());
                    }
                    if (System.nanoTime() - lastCheck >= LINK_CHECK_MS * 1_000_000L) {
                        lastCheck = System.nanoTime();
                        syncPartitions(partitions, phase == Phase.READING ? end : null);
                        Map<TopicPartition, Long> ends = consumer.endOffsets(partitions, CALL_TIMEOUT);
                        lastAnswer = System.nanoTime();
                        if (phase == Phase.READING) {
                            lowerEnds(end, ends);
                        }
                        up();
                    }
                } catch (WakeupException e) {
                    throw e;
                } catch (KafkaException e) {
                    TopicPartition corrupt = corruptPartition(e, partitions);
                    if (corrupt != null && skipCorrupt(corrupt, e)) {
                        continue;
                    }
                    lost(e);
                    pause();
                } catch (RuntimeException e) {
                    // Not the broker's: still no reason to stop following control; said, counted as down, retried.
                    LOG.errorf(e, "control: reading %s failed; retrying, keeping epoch %d", topic, control.epoch());
                    problem = "reading topic " + topic + " failed: " + e;
                    link.down(KafkaLink.Client.CONTROL, e);
                    pause();
                }
            }
        } catch (WakeupException e) {
            // close() asked us to stop
        } catch (Throwable e) {
            // The thread ends (an Error): health must not go on saying control is followed.
            problem = "the control listener stopped: " + e;
            link.down(KafkaLink.Client.CONTROL, e);
            LOG.errorf(e, "control: the listener stopped; no control record applies until the sidecar restarts");
            if (e instanceof Error error) {
                throw error;
            }
        } finally {
            Consumer<String, byte[]> made = consumer;
            if (made != null) {
                made.close(Duration.ofSeconds(1));
            }
        }
    }

    /** Makes the consumer, retried until it works; false when closed first. */
    private boolean connect() {
        boolean logged = false;
        while (running) {
            try {
                consumer = consumers.get();
                return running;
            } catch (KafkaException e) {
                problem = "cannot create the Kafka consumer: " + KafkaLink.describe(e);
                link.down(KafkaLink.Client.CONTROL, e);
                if (!logged) {
                    LOG.warnf("control: %s; retrying, running the configured state, ready at %s", problem, deadline);
                    logged = true;
                }
                pause();
            }
        }
        return false;
    }

    /** The topic's partitions, retried until found; null when closed first. */
    private List<TopicPartition> partitions() {
        boolean logged = false;
        while (running) {
            try {
                List<PartitionInfo> infos = consumer.partitionsFor(topic, CALL_TIMEOUT);
                if (infos != null && !infos.isEmpty()) {
                    problem = null;
                    link.up(KafkaLink.Client.CONTROL); // readable: readiness now waits for the read
                    return infos.stream().map(p -> new TopicPartition(p.topic(), p.partition())).toList();
                }
                problem = "topic " + topic + " does not exist";
                // The broker answers, but control cannot be followed: the kafka group and pikv_kafka_up say so, as
                // they do for a topic deleted later.
                link.down(KafkaLink.Client.CONTROL,
                        new org.apache.kafka.common.errors.UnknownTopicOrPartitionException(problem));
                if (!logged) {
                    LOG.warnf("control: topic %s does not exist (yet); running the configured state, ready at %s",
                            topic, deadline);
                    logged = true;
                }
            } catch (WakeupException e) {
                return null;
            } catch (KafkaException e) {
                problem = "cannot read topic " + topic + ": " + e.getMessage();
                if (!logged) {
                    LOG.warnf("control: cannot read %s (%s); running the configured state, ready at %s", topic, e,
                            deadline);
                    logged = true;
                }
                link.down(KafkaLink.Client.CONTROL, e);
            }
            pause();
        }
        return null;
    }

    /**
     * Partitions added to the topic since reading began (as the consumer's metadata shows them, refreshed every
     * {@code metadata.max.age.ms}): assigned and read from their start, so that records keyed to them are not missed;
     * while the first read is under way ({@code end} given), up to their end as well before it counts as caught up.
     * Partitions gone from a topic that still has some (it was deleted and made again with fewer) are no longer read:
     * asked for their end, they would fail every check (the link reported down while the topic is read) and, in the
     * first read, hold it back for good.
     */
    private void syncPartitions(List<TopicPartition> partitions, Map<TopicPartition, Long> end) {
        List<PartitionInfo> infos = consumer.partitionsFor(topic, CALL_TIMEOUT);
        if (infos == null || infos.isEmpty()) {
            return; // no topic (yet, or for now): nothing to say which partitions it has
        }
        List<TopicPartition> now = new ArrayList<>();
        for (PartitionInfo info : infos) {
            now.add(new TopicPartition(info.topic(), info.partition()));
        }
        List<TopicPartition> added = new ArrayList<>(now);
        added.removeAll(partitions);
        List<TopicPartition> gone = new ArrayList<>(partitions);
        gone.removeAll(now);
        if (added.isEmpty() && gone.isEmpty()) {
            return;
        }
        if (end != null) {
            gone.forEach(end::remove);
            // Still reading to the end taken at start: the new partitions' records up to now belong to it too.
            if (!added.isEmpty()) {
                end.putAll(consumer.endOffsets(added, CALL_TIMEOUT));
            }
        }
        partitions.removeAll(gone);
        partitions.addAll(added);
        consumer.assign(partitions); // the partitions read so far keep their positions
        if (!added.isEmpty()) {
            consumer.seekToBeginning(added);
        }
        LOG.infof("control: %s has %d partition(s) now; reading the %d new one(s) from their start%s", topic,
                partitions.size(), added.size(), gone.isEmpty() ? "" : ", no longer reading " + gone + " (gone)");
    }

    /**
     * A partition that now ends before the end the first read aims at was recreated or truncated (the topic deleted
     * and made again, a broker without storage restarted, an unclean election): its records up to that end will never
     * come, so the read aims at its end now instead of waiting for ever (never ready, or ready with every record left
     * pending).
     */
    private void lowerEnds(Map<TopicPartition, Long> end, Map<TopicPartition, Long> now) {
        for (Map.Entry<TopicPartition, Long> e : now.entrySet()) {
            Long aimed = end.get(e.getKey());
            if (aimed != null && e.getValue() != null && e.getValue() < aimed) {
                LOG.warnf("control: %s ends at offset %d now, before the %d the first read aims at (the topic was "
                        + "recreated or truncated); reading to its end now", e.getKey(), e.getValue(), aimed);
                end.put(e.getKey(), e.getValue());
            }
        }
    }

    private boolean caughtUp(List<TopicPartition> partitions, Map<TopicPartition, Long> end) {
        for (TopicPartition p : partitions) {
            if (consumer.position(p, CALL_TIMEOUT) < end.getOrDefault(p, 0L)) {
                return false;
            }
        }
        return true;
    }

    private void handle(ConsumerRecord<String, byte[]> r) {
        recordsRead++;
        if (r.key() != null && !r.key().equals(control.cluster())) {
            outcomes.get(ShardControl.Outcome.OTHER_CLUSTER).increment();
            return;
        }
        if (r.value() == null) {
            // A tombstone: the operator deleted the cluster; the shard keeps running its last state.
            LOG.infof("control: tombstone for cluster %s at offset %d ignored", r.key(), r.offset());
            return;
        }
        ControlState state;
        try {
            state = read(r.value());
        } catch (IOException | IllegalArgumentException e) {
            unreadable(r, "is not a control state: " + e.getMessage());
            return;
        }
        if (state == null || state.cluster() == null) {
            // The JSON literal null, or a state that does not name its cluster: nothing to apply.
            unreadable(r, state == null ? "is JSON null" : "names no cluster");
            return;
        }
        if (!state.cluster().equals(control.cluster())) {
            if (r.key() != null) {
                unreadable(r, "is keyed " + r.key() + " but names cluster " + state.cluster());
            } else {
                outcomes.get(ShardControl.Outcome.OTHER_CLUSTER).increment(); // unkeyed, another cluster's
            }
            return;
        }
        if (phase == Phase.READING) {
            pending.add(new Candidate(state, where(r), control.problem(state).isEmpty()));
            if (pending.size() > PENDING_LIMIT) {
                dropOnePending();
            }
            return;
        }
        outcomes.get(apply(new Candidate(state, where(r), true))).increment();
    }

    /**
     * Makes room in {@link #pending} without losing what {@link #applyLatest} would apply: a record the shard refuses
     * for its content (an acceptable one of lower epoch could be the one to apply), else the lowest epoch, the
     * earliest read among equals (every other one is acceptable and of an epoch at least as high, read later).
     */
    private void dropOnePending() {
        int drop = -1;
        for (int i = 0; i < pending.size() && drop < 0; i++) {
            if (!pending.get(i).acceptable()) {
                drop = i;
            }
        }
        if (drop >= 0) {
            Candidate refused = pending.remove(drop);
            LOG.warnf("control: record at %s (epoch %d) is one this shard refuses (%s); passed over", refused.where(),
                    refused.state().epoch(), control.problem(refused.state()).orElse("no longer"));
            outcomes.get(ShardControl.Outcome.INVALID).increment();
            return;
        }
        int lowest = 0;
        for (int i = 1; i < pending.size(); i++) {
            if (pending.get(i).state().epoch() < pending.get(lowest).state().epoch()) {
                lowest = i;
            }
        }
        pending.remove(lowest);
        outcomes.get(ShardControl.Outcome.STALE).increment();
    }

    private static String where(ConsumerRecord<String, byte[]> r) {
        return r.topic() + "-" + r.partition() + " offset " + r.offset();
    }

    private ShardControl.Outcome apply(Candidate c) {
        try {
            return control.apply(c.state());
        } catch (RuntimeException e) {
            // A record the shard cannot take must not stop the listener: later records still apply.
            LOG.errorf(e, "control: record at %s (epoch %d) failed to apply; ignored", c.where(), c.state().epoch());
            return ShardControl.Outcome.INVALID;
        }
    }

    /**
     * The first read is over: of this cluster's records, the one a sidecar that had followed each as it came would
     * run now is applied, and only that one, so that a shard already serving (ready after the start-up wait) does not
     * go through every budget and policy the topic still holds. Following them in order applies the valid records of
     * rising epochs (the later one of an epoch), so that record is the valid one of the highest epoch, the last read
     * among equals: tried from the highest epoch down until one is not refused. Those a follower would have passed
     * over count as stale; the refused ones as invalid, as they would have been.
     */
    private void applyLatest() {
        List<Candidate> order = new ArrayList<>(pending);
        pending.clear();
        java.util.Collections.reverse(order); // the later of equal epochs first: the stable sort keeps it so
        order.sort(java.util.Comparator.comparingLong((Candidate c) -> c.state().epoch()).reversed());
        boolean settled = false;
        for (Candidate c : order) {
            ShardControl.Outcome outcome = settled ? ShardControl.Outcome.STALE : apply(c);
            settled |= outcome != ShardControl.Outcome.INVALID;
            outcomes.get(outcome).increment();
        }
    }

    private void retryBudget() {
        try {
            control.retryBudget(); // a budget the shard could not take when its record applied
        } catch (RuntimeException e) {
            LOG.errorf(e, "control: trying the refused budget again failed; trying again later");
        }
    }

    /** A record of this cluster (or unkeyed) that is no control state: counted invalid and told as lastRejected. */
    private void unreadable(ConsumerRecord<String, byte[]> r, String why) {
        outcomes.get(ShardControl.Outcome.INVALID).increment();
        control.unreadable("record at " + r.topic() + "-" + r.partition() + " offset " + r.offset() + " " + why);
    }

    /**
     * A record's value as a control state: {@code version} and {@code epoch} must be there as whole numbers (a
     * missing one would read as 0), and no whole-number field takes a fraction.
     */
    private ControlState read(byte[] value) throws IOException {
        com.fasterxml.jackson.databind.JsonNode tree = json.readTree(value);
        if (tree == null || tree.isNull()) {
            return null;
        }
        if (!tree.isObject()) {
            throw new IllegalArgumentException("it is JSON " + tree.getNodeType().name().toLowerCase(Locale.ROOT)
                    + ", not an object");
        }
        for (String field : List.of("version", "epoch")) {
            if (!tree.path(field).isIntegralNumber()) {
                throw new IllegalArgumentException("'" + field + "' must be a whole number, got "
                        + (tree.has(field) ? tree.get(field) : "none"));
            }
        }
        // A field left out (a primitive such as budgetBytes) means the configured value, whatever the application's
        // mapper does with missing primitives (it refuses them in request bodies).
        return json.readerFor(ControlState.class)
                .without(com.fasterxml.jackson.databind.DeserializationFeature.ACCEPT_FLOAT_AS_INT)
                .without(com.fasterxml.jackson.databind.DeserializationFeature.FAIL_ON_NULL_FOR_PRIMITIVES)
                // A field a later operator adds to version 1 is not this sidecar's business.
                .without(com.fasterxml.jackson.databind.DeserializationFeature.FAIL_ON_UNKNOWN_PROPERTIES)
                .readValue(tree);
    }

    /** Failures in a row at one position of a corrupt partition before its record is skipped. */
    static final int CORRUPT_TRIES = 3;
    private static final java.util.regex.Pattern CORRUPT = java.util.regex.Pattern.compile(
            "Received exception when fetching the next record from (.+)-(\\d+)\\. "
                    + "If needed, please seek past the record");
    private TopicPartition corruptAt;
    private long corruptOffset = -1;
    private int corruptTries;
    /** Where the last skip left the consumer: a failure there is the rest of the same unreadable batch. */
    private TopicPartition skippedIn;
    private long skippedTo = -1;

    /**
     * The partition whose next record the consumer cannot read (a batch that fails its checksum: the fetch throws the
     * same exception at the same position for good), from the exception Kafka's consumer gives then; null otherwise.
     */
    static TopicPartition corruptPartition(KafkaException e, List<TopicPartition> assigned) {
        if (e.getMessage() == null) {
            return null;
        }
        java.util.regex.Matcher m = CORRUPT.matcher(e.getMessage());
        if (!m.find()) {
            return null;
        }
        TopicPartition p = new TopicPartition(m.group(1), Integer.parseInt(m.group(2)));
        return assigned.contains(p) ? p : null;
    }

    /**
     * A record the consumer cannot read: retried ({@link #CORRUPT_TRIES} in a row at the same position, a second
     * apart, as a lost broker is), then skipped — counted invalid and told as lastRejected — so that one bad batch
     * does not stop every later record of its partition from applying. Returns whether it was skipped.
     */
    private boolean skipCorrupt(TopicPartition p, KafkaException e) {
        long offset;
        try {
            offset = consumer.position(p, CALL_TIMEOUT);
        } catch (RuntimeException unknown) {
            return false; // retried as a lost broker is
        }
        if (p.equals(skippedIn) && offset == skippedTo) {
            // The consumer checks a fetched batch whole, so every offset of a corrupt batch fails alike: the rest of
            // the batch whose first record was just skipped goes at once, counted with it (as does a damaged batch
            // right after it: the consumer says nothing of where batches begin).
            consumer.seek(p, offset + 1);
            skippedTo = offset + 1;
            LOG.debugf("control: %s offset %d is in the unreadable batch skipped before; skipped", p, offset);
            return true;
        }
        if (!p.equals(corruptAt) || offset != corruptOffset) {
            corruptAt = p;
            corruptOffset = offset;
            corruptTries = 0;
        }
        if (++corruptTries < CORRUPT_TRIES) {
            return false;
        }
        consumer.seek(p, offset + 1);
        skippedIn = p;
        skippedTo = offset + 1;
        corruptAt = null;
        corruptOffset = -1;
        outcomes.get(ShardControl.Outcome.INVALID).increment();
        String cause = e.getCause() == null ? e.getMessage() : e.getCause().toString();
        LOG.errorf("control: the record at %s offset %d cannot be read (%s); skipped after %d tries with the rest of "
                + "its batch, the records after it apply", p, offset, cause, CORRUPT_TRIES);
        control.unreadable("record at " + p + " offset " + offset + " cannot be read (" + cause + "); skipped");
        return true;
    }

    /** The link is up; said once when it comes back after it was lost (as its loss was). */
    private void up() {
        if ("down".equals(link.status(KafkaLink.Client.CONTROL).state())) {
            LOG.infof("control: %s is readable again; keeping epoch %d", topic, control.epoch());
        }
        link.up(KafkaLink.Client.CONTROL);
        problem = null;
    }

    private void lost(KafkaException e) {
        if (!"down".equals(link.status(KafkaLink.Client.CONTROL).state())) {
            LOG.warnf("control: lost %s (%s); keeping epoch %d", topic, e, control.epoch());
        }
        problem = "lost topic " + topic + ": " + KafkaLink.describe(e);
        link.down(KafkaLink.Client.CONTROL, e);
    }

    private void pause() {
        synchronized (this) {
            try {
                if (running) {
                    wait(1000);
                }
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                running = false;
            }
        }
    }

    @Override
    public void close() {
        running = false;
        synchronized (this) {
            notifyAll();
        }
        if (!started) {
            meters.forEach(registry::remove);
            return;
        }
        Consumer<String, byte[]> made = consumer;
        if (made != null) {
            made.wakeup();
        }
        try {
            thread.join(3000);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        meters.forEach(registry::remove);
    }
}
