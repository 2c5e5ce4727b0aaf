package io.pikv.sidecar.telemetry;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.micrometer.core.instrument.Counter;
import io.micrometer.core.instrument.FunctionCounter;
import io.micrometer.core.instrument.Gauge;
import io.micrometer.core.instrument.Meter;
import io.micrometer.core.instrument.MeterRegistry;
import io.pikv.api.events.CacheEvents;
import io.pikv.kv.ShardStats;
import io.pikv.sidecar.BlockStore;
import io.pikv.sidecar.PolicyReport;
import io.pikv.sidecar.kafka.KafkaLink;
import org.apache.kafka.clients.producer.Producer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.KafkaException;
import org.apache.kafka.common.errors.InterruptException;
import org.apache.kafka.common.errors.RetriableException;
import org.jboss.logging.Logger;

import java.time.Duration;
import java.util.List;
import java.util.UUID;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.function.Supplier;

/**
 * Publishes a shard's telemetry to Kafka: a scheduled task closes one window per period into a bounded
 * {@link TelemetryBuffer}; a sender thread moves the oldest buffered record to Kafka, one at a time, and takes it
 * out of the buffer only once Kafka acknowledged it. Nothing here runs on a request thread, and the window task
 * only reads the shard's statistics, so an unreachable broker costs the data plane nothing: records wait in the
 * buffer, the oldest are dropped beyond its bound, and the next published record says how many.
 *
 * <p>A record that timed out may still have reached Kafka and is sent again: consumers drop duplicates by
 * (producerId, sequence). The producer is idempotent with {@code acks=all} (see {@code KafkaClients}).
 */
public final class TelemetryPublisher implements AutoCloseable {
    private static final Logger LOG = Logger.getLogger(TelemetryPublisher.class);

    /**
     * @param window        period of a window
     * @param bufferRecords records held while Kafka does not take them
     * @param sendTimeout   how long one send may take before it is retried
     */
    public record Settings(String topic, String cluster, int shard, int experts, Duration window, int bufferRecords,
                           Duration sendTimeout) {
        public Settings {
            check(window, bufferRecords, sendTimeout);
        }

        /**
         * The rules of the three knobs, one place for the publisher and the sidecar's start-up check (which runs in
         * every role, also where no publisher is made).
         *
         * @throws IllegalArgumentException naming the setting that breaks its rule ({@code pikv.telemetry.…: why})
         */
        public static void check(Duration window, int bufferRecords, Duration sendTimeout) {
            // Compared as durations: toMillis of a huge one would overflow before saying which setting is wrong.
            if (window.compareTo(Duration.ofMillis(1)) < 0 || window.compareTo(Duration.ofHours(1)) > 0) {
                throw new IllegalArgumentException("pikv.telemetry.window: a telemetry window is from 1 ms to 1 h, got "
                        + window);
            }
            if (bufferRecords < 2) {
                // One may be a record waiting to be sent again, which is never the one dropped: with room for one
                // only, every newer record would be dropped instead of the oldest.
                throw new IllegalArgumentException("pikv.telemetry.buffer-records: the telemetry buffer holds at "
                        + "least two records (one may wait for a retry), got " + bufferRecords);
            }
            if (sendTimeout.compareTo(Duration.ofSeconds(1)) < 0
                    || sendTimeout.compareTo(Duration.ofMillis(Integer.MAX_VALUE)) > 0) {
                throw new IllegalArgumentException("pikv.telemetry.send-timeout: a send may take from 1 s to "
                        + Integer.MAX_VALUE / 86_400_000 + " days (the producer's timeouts are int milliseconds), got "
                        + sendTimeout);
            }
        }
    }

    /** What the publisher reads of the shard at the end of each window. */
    public interface Source {
        ShardStats stats();

        PolicyReport policy();

        /** The prefix block cache's statistics (cumulative). */
        BlockStore.Stats blocks();

        /** The control epoch the shard runs (-1: none). */
        long epoch();

        /**
         * Runs {@code read} so that no control record applies meanwhile: the stats (budget), policy and epoch a record
         * carries are then all from before or all from after a record.
         */
        default <T> T consistent(java.util.function.Supplier<T> read) {
            return read.get();
        }
    }

    /**
     * Window times: the wall clock read once, then the monotonic clock's progress from there, so that a clock stepped
     * back (NTP) never makes a window end before it starts.
     */
    private final long startMs = System.currentTimeMillis();
    private final long startNanos = System.nanoTime();
    private final Settings settings;
    private final Source source;
    private final Supplier<Producer<String, byte[]>> producers;
    private volatile Producer<String, byte[]> producer;
    private final ObjectMapper json;
    private final KafkaLink link;
    private final MeterRegistry registry;
    private final String key;
    private final TelemetryBuffer buffer;
    private final TelemetryWindow window;
    private final ScheduledExecutorService ticker;
    private final Thread sender;
    private final Counter published;
    private final Counter failures;
    private final List<Meter> meters;
    private final Object pause = new Object();
    private volatile boolean running;
    private volatile boolean draining;
    /** The record being sent (its sequence, -1 for none) and the drops it reports, fixed at its first try. */
    private long pendingSequence = -1;
    private long pendingDrops;
    /** A try of the pending record may have landed ({@link #mayHaveLanded}): that copy may be in Kafka. */
    private boolean pendingMaybeSent;

    /**
     * @param producers makes the producer, on the sender thread; retried while it fails (a broker name that does
     *                  not resolve yet fails the construction), so that no Kafka problem can stop the sidecar
     */
    public TelemetryPublisher(Settings settings, Source source, Supplier<Producer<String, byte[]>> producers,
                              ObjectMapper json, MeterRegistry registry, KafkaLink link) {
        this.settings = settings; // its knobs checked when it was made
        this.source = source;
        this.producers = producers;
        this.json = json;
        this.link = link;
        this.registry = registry;
        this.key = CacheEvents.key(settings.cluster(), settings.shard());
        this.buffer = new TelemetryBuffer(settings.bufferRecords());
        this.window = new TelemetryWindow(settings.cluster(), settings.shard(), settings.experts(),
                UUID.randomUUID().toString(), source.stats(), source.blocks(), nowMs());
        this.ticker = Executors.newSingleThreadScheduledExecutor(r -> daemon(r, "pikv-telemetry-window"));
        this.sender = daemon(this::send, "pikv-telemetry-send");
        this.published = Counter.builder("pikv.telemetry.records.published")
                .description("Telemetry records Kafka acknowledged").register(registry);
        this.failures = Counter.builder("pikv.telemetry.send.failures")
                .description("Telemetry sends that failed (the record is retried or, when Kafka refused it for good, "
                        + "dropped; or counted as neither, refused for good after a try that may have "
                        + "landed)")
                .register(registry);
        this.meters = List.of(published, failures,
                FunctionCounter.builder("pikv.telemetry.records.dropped", buffer, TelemetryBuffer::dropped)
                        .description("Telemetry records dropped: beyond the buffer while Kafka was unreachable, "
                                + "refused by Kafka for good, or failed to serialise")
                        .register(registry),
                FunctionCounter.builder("pikv.telemetry.windows", window, TelemetryWindow::closed)
                        .description("Telemetry windows closed (records built)").register(registry),
                Gauge.builder("pikv.telemetry.buffer.depth", buffer, TelemetryBuffer::depth)
                        .description("Telemetry records waiting for Kafka").strongReference(true).register(registry),
                Gauge.builder("pikv.telemetry.buffer.capacity", buffer, TelemetryBuffer::capacity)
                        .description("Telemetry records the buffer holds at most").strongReference(true)
                        .register(registry));
    }

    /** When the last window closed ({@link System#nanoTime}); the first is the one start opens. */
    private volatile long lastCloseNanos = System.nanoTime();

    public void start() {
        running = true;
        lastCloseNanos = System.nanoTime();
        link.enabled(KafkaLink.Client.TELEMETRY);
        long period = settings.window().toMillis();
        ticker.scheduleAtFixedRate(this::tick, period, period, TimeUnit.MILLISECONDS);
        sender.start();
        LOG.infof("telemetry: a record per %d ms to topic %s, key %s, buffer of %d records", period, settings.topic(),
                key, buffer.capacity());
    }

    /** Ends the current window now and queues its record (the scheduled task does this each period). */
    public CacheEvents closeWindow() {
        synchronized (window) {
            // The window ends when its counts are read, inside the consistent view (which may wait for a control
            // record being applied): the next window starts there too, so a wait makes this one longer, not the next
            // one a sliver the catch-up tick would close at once.
            long[] closing = new long[1];
            CacheEvents record = source.consistent(() -> {
                closing[0] = System.nanoTime();
                return window.close(source.stats(), source.blocks(), msAt(closing[0]), source.policy().activePolicy(),
                        source.epoch());
            });
            buffer.add(record);
            lastCloseNanos = closing[0];
            return record;
        }
    }

    public TelemetryBuffer buffer() {
        return buffer;
    }

    /** Records Kafka acknowledged. */
    public long published() {
        return (long) published.count();
    }

    public String topic() {
        return settings.topic();
    }

    void tick() {
        // A fixed-rate timer runs the ticks a stall (a long control record, a pause) held back one after the other: a
        // window younger than half a period is left to run on, so a stall gives one long window, not a burst of
        // empty ones, each taking a sequence number and a buffer slot.
        if (System.nanoTime() - lastCloseNanos < settings.window().toNanos() / 2) {
            return;
        }
        try {
            closeWindow();
        } catch (RuntimeException e) {
            LOG.warnf(e, "telemetry: could not close a window");
        } catch (Error e) {
            // Thrown on, the scheduler would cancel every later window without a word: said, and the next tick tries.
            LOG.errorf(e, "telemetry: could not close a window");
        }
    }

    /** The sender thread: {@link #sendLoop}, and a stop said aloud (health reports the link down) if it fails. */
    private void send() {
        try {
            sendLoop();
        } catch (Throwable e) {
            link.down(KafkaLink.Client.TELEMETRY, e);
            LOG.errorf(e, "telemetry: the sender stopped; no more records are published until the sidecar restarts");
            throw e;
        }
    }

    private void sendLoop() {
        boolean wasDown = false;
        long droppedWhenDown = 0; // the buffer's drops when the outage began
        int refusedInARow = 0;
        long lastRefusalLog = 0;
        while (running) {
            if (producer == null) {
                try {
                    Producer<String, byte[]> made = producers.get();
                    if (!running) {
                        closeQuietly(made); // close() ran while it was being made: nobody else would close it
                        break;
                    }
                    producer = made;
                } catch (RuntimeException e) { // KafkaException (bad settings, no broker), or another failure
                    link.down(KafkaLink.Client.TELEMETRY, e);
                    if (!wasDown) {
                        LOG.warnf("telemetry: cannot create the Kafka producer (%s); retrying, buffering up to %d records",
                                KafkaLink.describe(e), buffer.capacity());
                        wasDown = true;
                        droppedWhenDown = buffer.dropped();
                    }
                    if (draining) {
                        break; // no producer to drain with
                    }
                    pause(1000);
                    continue;
                }
            }
            CacheEvents next;
            try {
                next = buffer.take(100);
            } catch (InterruptedException e) {
                break;
            }
            if (next == null) {
                if (draining) {
                    break;
                }
                continue;
            }
            // A record reports the drops before it when it is first sent, and every retry sends the same value: a
            // try that timed out may have reached Kafka, and consumers keep the first copy of a sequence.
            if (next.sequence() != pendingSequence) {
                pendingSequence = next.sequence();
                pendingDrops = buffer.unreportedAtTake();
                pendingMaybeSent = false;
            }
            long drops = pendingDrops;
            boolean handedOver = false; // send() returned: the record is the producer's, and may reach a broker
            try {
                byte[] value = json.writeValueAsBytes(next.withDropped(drops));
                java.util.concurrent.Future<?> sent = producer.send(new ProducerRecord<>(settings.topic(), key, value));
                handedOver = true;
                sent.get(settings.sendTimeout().toMillis() + 1000, TimeUnit.MILLISECONDS);
                pendingSequence = -1;
                refusedInARow = 0;
                buffer.reported(drops);
                buffer.sent();
                published.increment();
                link.up(KafkaLink.Client.TELEMETRY);
                if (wasDown) {
                    // The record carries the drops counted when it was first tried; drops while it was retried ride
                    // on the records after it: the log says the outage's total.
                    LOG.infof("telemetry: Kafka takes records again at record %d; %d records dropped during the outage "
                            + "(each record's \"dropped\" gives the gap in sequence just before it)", next.sequence(),
                            buffer.dropped() - droppedWhenDown);
                    wasDown = false;
                }
            } catch (InterruptedException | InterruptException e) {
                buffer.putBack(next);
                break;
            } catch (ExecutionException | TimeoutException | RuntimeException e) {
                // Besides Kafka's errors, any other failure of a send (a client setting that makes every send throw,
                // say) is a refusal for good: the record goes, the producer is rebuilt, the link is reported down.
                Throwable cause = e instanceof ExecutionException ? e.getCause() : e;
                long droppedBefore = buffer.dropped(); // an outage that starts here counts this record's drop too
                failures.increment();
                link.down(KafkaLink.Client.TELEMETRY, cause);
                boolean retry = cause instanceof RetriableException || cause instanceof TimeoutException;
                if (retry) {
                    refusedInARow = 0; // a broker that answers again is not refusing: the short pause
                    pendingMaybeSent |= handedOver && mayHaveLanded(cause);
                    buffer.putBack(next);
                } else {
                    // Refused for good. The error may have left the producer unusable (an idempotent producer's
                    // fatal errors do), so it is closed and the next record goes through a new one.
                    refusedInARow++;
                    // A refusal that stays (an ACL, a record too large) is said once a minute, not every window.
                    long now = System.nanoTime();
                    boolean say = refusedInARow == 1 || now - lastRefusalLog >= TimeUnit.MINUTES.toNanos(1);
                    if (say) {
                        lastRefusalLog = now;
                    }
                    String inARow = refusedInARow > 1 ? " (" + refusedInARow + " refused in a row)" : "";
                    if (pendingMaybeSent) {
                        // An earlier try may have landed, carrying the drops before it: they count
                        // as reported and the record not as dropped, so that nothing is reported twice.
                        buffer.reported(pendingDrops);
                        buffer.sent();
                        if (say) {
                            LOG.errorf("telemetry: Kafka refused record %d for good after a try that may have landed: it "
                                    + "may or may not be on the topic: %s; the producer is rebuilt%s", next.sequence(),
                                    cause, inARow);
                        }
                    } else {
                        buffer.drop(next);
                        if (say) {
                            LOG.errorf("telemetry: Kafka refused record %d for good (dropped): %s; the producer is "
                                    + "rebuilt%s", next.sequence(), cause, inARow);
                        }
                    }
                    pendingSequence = -1;
                    Producer<String, byte[]> failed = producer;
                    producer = null;
                    closeQuietly(failed);
                }
                if (!wasDown) {
                    LOG.warnf("telemetry: cannot publish to %s (%s); buffering up to %d records, oldest dropped beyond",
                            settings.topic(), cause, buffer.capacity());
                    wasDown = true;
                    droppedWhenDown = droppedBefore;
                }
                if (draining) {
                    break;
                }
                // Refusals in a row back off, doubling to a minute: each one rebuilds a producer (threads, metadata).
                pause(Math.min(60_000, Math.min(1000, settings.window().toMillis())
                        << Math.min(Math.max(refusedInARow - 1, 0), 16)));
            } catch (JsonProcessingException e) {
                buffer.drop(next);
                pendingSequence = -1;
                LOG.errorf(e, "telemetry: cannot write record %d as JSON (dropped)", next.sequence());
            }
        }
    }

    /**
     * Whether a send that failed this way (a retriable failure, after the producer took the record) may still have put
     * the record on the topic. It may unless the failure says it was never written: a record that timed out waiting
     * for the topic's metadata never left this process (the producer fails its future that way too), and a broker
     * that answers with an unknown partition, too few in-sync replicas before the append or a corrupt batch wrote
     * nothing. Every other answer may come after the leader wrote it (too few replicas after the append, a leader
     * that moved while waiting for its followers, a storage error, a lost connection, a timeout).
     */
    static boolean mayHaveLanded(Throwable cause) {
        if (cause instanceof org.apache.kafka.common.errors.TimeoutException) {
            return !String.valueOf(cause.getMessage()).contains("not present in metadata");
        }
        return !(cause instanceof org.apache.kafka.common.errors.UnknownTopicOrPartitionException
                || cause instanceof org.apache.kafka.common.errors.NotEnoughReplicasException
                || cause instanceof org.apache.kafka.common.errors.CorruptRecordException);
    }

    private static void closeQuietly(Producer<String, byte[]> failed) {
        closeQuietly(failed, Duration.ZERO);
    }

    private static void closeQuietly(Producer<String, byte[]> failed, Duration wait) {
        try {
            failed.close(wait);
        } catch (RuntimeException e) {
            LOG.debugf(e, "telemetry: closing the failed producer");
        }
    }

    /** A back-off; none once the drain has begun (checked under the monitor close() notifies, so no wake-up is lost). */
    private void pause(long millis) {
        long end = System.nanoTime() + java.util.concurrent.TimeUnit.MILLISECONDS.toNanos(millis);
        synchronized (pause) {
            try {
                // To the deadline: a spurious wake-up of wait() must not cut the backoff short; a stop or a drain
                // (which notify) ends it at once.
                for (long left = millis; running && !draining && left > 0;
                     left = java.util.concurrent.TimeUnit.NANOSECONDS.toMillis(end - System.nanoTime())) {
                    pause.wait(left);
                }
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                running = false;
            }
        }
    }

    /**
     * Stops the windows, queues the last (partial) window and gives the sender a moment to deliver what is
     * buffered; what Kafka has not taken then is lost.
     */
    private long nowMs() {
        return msAt(System.nanoTime());
    }

    /** The wall-clock milliseconds of a {@link System#nanoTime} reading, on this publisher's monotonic clock. */
    private long msAt(long nanos) {
        return startMs + (nanos - startNanos) / 1_000_000;
    }

    @Override
    public void close() {
        ticker.shutdownNow();
        if (running) {
            try {
                ticker.awaitTermination(1, TimeUnit.SECONDS);
                try {
                    closeWindow();
                } catch (RuntimeException e) {
                    // The last window is lost, not the rest of the shutdown: the sender still drains and stops.
                    LOG.warnf(e, "telemetry: could not close the last window");
                }
                draining = true;
                synchronized (pause) {
                    pause.notifyAll(); // a sender backing off after refusals tries once more now, not after the drain
                }
                sender.join(Math.min(2000, settings.sendTimeout().toMillis()));
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
            running = false;
            synchronized (pause) {
                pause.notifyAll();
            }
            sender.interrupt();
            try {
                sender.join(2000);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        }
        Producer<String, byte[]> made = producer;
        if (made != null) {
            closeQuietly(made, Duration.ofSeconds(1));
        }
        meters.forEach(registry::remove);
        LOG.infof("telemetry: stopped after %d windows, %d published, %d dropped, %d left unsent", window.closed(),
                published(), buffer.dropped(), buffer.depth());
    }

    private static Thread daemon(Runnable r, String name) {
        Thread t = new Thread(r, name);
        t.setDaemon(true);
        return t;
    }
}
