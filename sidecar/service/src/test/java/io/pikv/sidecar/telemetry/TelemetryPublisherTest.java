package io.pikv.sidecar.telemetry;

import com.fasterxml.jackson.databind.ObjectMapper;
import io.micrometer.core.instrument.MeterRegistry;
import io.micrometer.core.instrument.simple.SimpleMeterRegistry;
import io.pikv.api.events.CacheEvents;
import io.pikv.kv.ModelShape;
import io.pikv.kv.ShardStats;
import io.pikv.kv.StorageType;
import io.pikv.sidecar.BlockStore;
import io.pikv.sidecar.PolicyReport;
import io.pikv.sidecar.ShardNode;
import io.pikv.sidecar.ShardPolicy;
import io.pikv.sidecar.kafka.KafkaClients;
import io.pikv.sidecar.kafka.KafkaLink;
import io.pikv.sidecar.kafka.TestKafka;
import io.pikv.sidecar.wire.Wire;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.MockProducer;
import org.apache.kafka.clients.producer.Producer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.ClusterAuthorizationException;
import org.apache.kafka.common.serialization.ByteArraySerializer;
import org.apache.kafka.common.serialization.StringSerializer;
import org.apache.kafka.common.test.KafkaClusterTestKit;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

import java.time.Duration;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Deque;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.function.Supplier;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

/** The publisher against an unreachable Kafka: the data plane keeps its pace, the buffer stays bounded. */
class TelemetryPublisherTest {
    static final ModelShape SHAPE = new ModelShape(2, 4, 2, 16, 4, 2);
    final ObjectMapper json = new ObjectMapper();
    final MeterRegistry registry = new SimpleMeterRegistry();
    final KafkaLink link = new KafkaLink();
    final ShardNode node = new ShardNode(0, SHAPE, StorageType.FP16, 16, 2, 1 << 16, ShardPolicy.of("oldest-page"));
    final BlockStore blocks = new BlockStore(1 << 16, "adaptive");
    TelemetryPublisher publisher;

    @AfterEach
    void close() {
        if (publisher != null) {
            publisher.close();
        }
        node.close();
    }

    TelemetryPublisher publisher(String bootstrap, String topic, Duration window, int buffer, Duration sendTimeout) {
        TelemetryPublisher.Settings settings = new TelemetryPublisher.Settings(topic, "c", 0, SHAPE.experts(), window,
                buffer, sendTimeout);
        Map<String, Object> config = KafkaClients.producer(Map.of(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap),
                "test-telemetry", sendTimeout);
        return publisher(settings, () -> new KafkaProducer<>(config));
    }

    /** The test's shard and block store as a publisher's source. */
    class NodeSource implements TelemetryPublisher.Source {
        @Override
        public ShardStats stats() {
            return node.stats();
        }

        @Override
        public PolicyReport policy() {
            return node.policy();
        }

        @Override
        public BlockStore.Stats blocks() {
            return blocks.stats();
        }

        @Override
        public long epoch() {
            return -1;
        }
    }

    TelemetryPublisher publisher(TelemetryPublisher.Settings settings, Supplier<Producer<String, byte[]>> producers) {
        publisher = new TelemetryPublisher(settings, new NodeSource(), producers, json, registry, link);
        return publisher;
    }

    @Test
    void closingPublishesTheLastPartialWindow() throws Exception {
        MockProducer<String, byte[]> producer = new MockProducer<>(true, null, new StringSerializer(),
                new ByteArraySerializer());
        TelemetryPublisher p = publisher(new TelemetryPublisher.Settings("pikv.cache-events", "c", 0, SHAPE.experts(),
                Duration.ofHours(1), 16, Duration.ofSeconds(5)), () -> producer);
        p.start();
        blocks.put(1, new byte[10]);
        blocks.get(1);
        blocks.get(2);
        await().during(Duration.ofMillis(300)).atMost(Duration.ofSeconds(2)).until(() -> producer.history().isEmpty());
        p.close();
        publisher = null;
        // An hour's window cut short by the shutdown: what it saw is sent, not lost with the process.
        assertThat(producer.history()).hasSize(1);
        CacheEvents last = json.readValue(producer.history().get(0).value(), CacheEvents.class);
        assertThat(last.sequence()).isZero();
        assertThat(last.blocks().lookups()).isEqualTo(2);
        assertThat(last.blocks().hits()).isEqualTo(1);
        assertThat(last.windowEndMs() - last.windowStartMs()).isBetween(0L, 60_000L);
        assertThat(producer.closed()).isTrue();
    }

    /**
     * A sender backing off after refusals (here 3.2 s, longer than the 2 s a close waits for the drain) is woken by the
     * close and tries once more at once: the buffered windows and the last partial one go out, not lost with it.
     */
    @Test
    void closingWakesASenderBackingOffSoTheLastWindowsStillGoOut() throws Exception {
        MockProducer<String, byte[]> healthy = new MockProducer<>(true, null, new StringSerializer(),
                new ByteArraySerializer());
        List<MockProducer<String, byte[]>> broken = new java.util.concurrent.CopyOnWriteArrayList<>();
        AtomicInteger calls = new AtomicInteger();
        TelemetryPublisher p = publisher(new TelemetryPublisher.Settings("pikv.cache-events", "c", 0, SHAPE.experts(),
                Duration.ofMillis(200), 64, Duration.ofSeconds(5)), () -> {
                    if (calls.incrementAndGet() > 5) {
                        return healthy;
                    }
                    MockProducer<String, byte[]> refusing = new MockProducer<>(true, null, new StringSerializer(),
                            new ByteArraySerializer());
                    refusing.sendException = new ClusterAuthorizationException("not authorized");
                    broken.add(refusing);
                    return refusing;
                });
        p.start();
        // Five refusals in a row (backing off 0.2, 0.4, 0.8 and 1.6 s between them): the fifth producer closed, the
        // sender now waits 3.2 s before it builds another.
        await().atMost(Duration.ofSeconds(20)).until(() -> broken.size() == 5 && broken.get(4).closed());
        await().pollDelay(Duration.ofMillis(300)).until(() -> true);
        assertThat(calls).hasValue(5);
        // Windows closed by the ticker so far (read before the close, which removes the meters): the close's own
        // partial window comes after them.
        long closedBefore = (long) registry.get("pikv.telemetry.windows").functionCounter().count();
        p.close();
        publisher = null;
        assertThat(calls).hasValue(6);
        // The records the refusing producers refused for good are dropped (the first record sent says how many: all
        // before it); every window after them went out, once and in order (the buffer holds 64), the last of them the
        // partial one the close cut short.
        List<Long> sequences = new java.util.ArrayList<>();
        List<Long> dropped = new java.util.ArrayList<>();
        for (var sent : healthy.history()) {
            CacheEvents record = json.readValue(sent.value(), CacheEvents.class);
            sequences.add(record.sequence());
            dropped.add(record.dropped());
        }
        assertThat(sequences).isNotEmpty();
        long first = sequences.get(0);
        long last = sequences.get(sequences.size() - 1);
        assertThat(sequences).isEqualTo(java.util.stream.LongStream.rangeClosed(first, last).boxed().toList());
        assertThat(dropped.get(0)).as("the gap before the first record sent").isEqualTo(first);
        assertThat(dropped.subList(1, dropped.size())).containsOnly(0L);
        assertThat(last).isGreaterThanOrEqualTo(closedBefore);
    }

    @Test
    void aRetriedRecordReportsTheDropsItReportedFirstSoGapsMatchDrops() throws Exception {
        MockProducer<String, byte[]> producer = new MockProducer<>(false, null, new StringSerializer(),
                new ByteArraySerializer());
        TelemetryPublisher p = publisher(new TelemetryPublisher.Settings("pikv.cache-events", "c", 0, SHAPE.experts(),
                Duration.ofMillis(20), 2, Duration.ofSeconds(5)), () -> producer);
        p.start();
        // Record 0 is in flight; meanwhile the buffer of two overflows, and then its send times out (retriable: it may
        // or may not have reached Kafka).
        await().atMost(Duration.ofSeconds(10)).until(() -> producer.history().size() == 1 && p.buffer().dropped() >= 3);
        assertThat(producer.errorNext(new org.apache.kafka.common.errors.TimeoutException("no answer"))).isTrue();
        // Acknowledge everything from now on.
        List<CacheEvents> sent = new ArrayList<>();
        await().atMost(Duration.ofSeconds(20)).until(() -> {
            producer.completeNext();
            return producer.history().size() >= 5;
        });
        for (var r : producer.history()) {
            sent.add(json.readValue(r.value(), CacheEvents.class));
        }
        // Every try of record 0 says the same; consumers keep the first copy of a sequence, and then each gap in the
        // sequence equals the drops the record after it reports.
        assertThat(sent.get(0).sequence()).isZero();
        assertThat(sent.get(1).sequence()).isZero();
        assertThat(sent.get(1).dropped()).isEqualTo(sent.get(0).dropped()).isZero();
        List<CacheEvents> kept = new ArrayList<>();
        for (CacheEvents r : sent) {
            if (kept.isEmpty() || kept.get(kept.size() - 1).sequence() != r.sequence()) {
                kept.add(r);
            }
        }
        long droppedReported = 0;
        for (int i = 1; i < kept.size(); i++) {
            CacheEvents r = kept.get(i);
            assertThat(r.sequence() - kept.get(i - 1).sequence() - 1).as("gap before %d", r.sequence())
                    .isEqualTo(r.dropped());
            droppedReported += r.dropped();
        }
        assertThat(droppedReported).isPositive();
    }

    @Test
    void aRecordRefusedForGoodAfterATryThatTimedOutIsNotCountedTwice() throws Exception {
        // Record k carries drops D; its first try times out (it may have landed, with D), the retry is refused for
        // good. Counting k as dropped and reporting D again would make the next record report more than its gap.
        MockProducer<String, byte[]> first = new MockProducer<>(false, null, new StringSerializer(),
                new ByteArraySerializer());
        MockProducer<String, byte[]> healthy = new MockProducer<>(true, null, new StringSerializer(),
                new ByteArraySerializer());
        Deque<MockProducer<String, byte[]>> made = new ArrayDeque<>(List.of(first, healthy));
        TelemetryPublisher p = publisher(new TelemetryPublisher.Settings("pikv.cache-events", "c", 0, SHAPE.experts(),
                Duration.ofMillis(20), 2, Duration.ofSeconds(5)), () -> made.size() > 1 ? made.poll() : made.peek());
        p.start();
        await().atMost(Duration.ofSeconds(10)).until(() -> first.history().size() == 1 && p.buffer().dropped() >= 3);
        assertThat(first.completeNext()).isTrue(); // record 0 lands; the next one carries the drops meanwhile
        await().atMost(Duration.ofSeconds(10)).until(() -> first.history().size() == 2);
        CacheEvents k = json.readValue(first.history().get(1).value(), CacheEvents.class);
        assertThat(k.dropped()).isPositive();
        assertThat(first.errorNext(new org.apache.kafka.common.errors.TimeoutException("no answer"))).isTrue();
        await().atMost(Duration.ofSeconds(10)).until(() -> first.history().size() == 3);
        assertThat(json.readValue(first.history().get(2).value(), CacheEvents.class)).isEqualTo(k);
        assertThat(first.errorNext(new ClusterAuthorizationException("not authorized any more"))).isTrue();
        await().atMost(Duration.ofSeconds(10)).until(() -> healthy.history().size() >= 2);
        CacheEvents after = json.readValue(healthy.history().get(0).value(), CacheEvents.class);
        assertThat(after.dropped()).as("the gap between record %d and record %d", k.sequence(), after.sequence())
                .isEqualTo(after.sequence() - k.sequence() - 1);
    }

    @Test
    void refusalsInARowBackOffInsteadOfRebuildingAProducerEveryWindow() throws Exception {
        AtomicInteger calls = new AtomicInteger();
        java.util.List<Long> made = new java.util.concurrent.CopyOnWriteArrayList<>();
        TelemetryPublisher p = publisher(new TelemetryPublisher.Settings("pikv.cache-events", "c", 0, SHAPE.experts(),
                Duration.ofMillis(20), 1000, Duration.ofSeconds(1)), () -> {
                    calls.incrementAndGet();
                    made.add(System.nanoTime());
                    MockProducer<String, byte[]> refusing = new MockProducer<>(true, null, new StringSerializer(),
                            new ByteArraySerializer());
                    refusing.sendException = new ClusterAuthorizationException("not authorized");
                    return refusing;
                });
        p.start();
        // Pauses of 20, 40, 80, ... ms: about 7 producers in 2.5 s, where a pause of one window made over 50.
        await().atMost(Duration.ofSeconds(5)).until(() -> calls.get() >= 4);
        await().during(Duration.ofMillis(2000)).atMost(Duration.ofSeconds(4)).until(() -> calls.get() <= 14);
        assertThat(link.status(KafkaLink.Client.TELEMETRY).state()).isEqualTo("down");
        // The pauses double: the eighth producer comes no sooner than 20 x (1 + 2 + ... + 64) = 2,540 ms after the
        // first (a load only delays it; a fixed pause of a tenth of that, 254 ms, would make it after 1,778 ms).
        await().atMost(Duration.ofSeconds(10)).until(() -> made.size() >= 8);
        assertThat((made.get(7) - made.get(0)) / 1e6).isGreaterThanOrEqualTo(2_540 * 0.95);
    }

    @Test
    void aSendFailingOutsideKafkasErrorsIsARefusalThatHealthReports() throws Exception {
        // E.g. a client setting that makes every send throw: not a KafkaException, still never a silent loss.
        AtomicInteger calls = new AtomicInteger();
        TelemetryPublisher p = publisher(new TelemetryPublisher.Settings("pikv.cache-events", "c", 0, SHAPE.experts(),
                Duration.ofMillis(20), 1000, Duration.ofSeconds(1)), () -> {
                    calls.incrementAndGet();
                    MockProducer<String, byte[]> broken = new MockProducer<>(true, null, new StringSerializer(),
                            new ByteArraySerializer());
                    broken.sendException = new IllegalStateException("cannot send: transactions not initialised");
                    return broken;
                });
        p.start();
        await().atMost(Duration.ofSeconds(10)).until(() -> calls.get() >= 3); // rebuilt after each refusal
        assertThat(link.status(KafkaLink.Client.TELEMETRY).state()).isEqualTo("down");
        assertThat(registry.get("pikv.telemetry.send.failures").counter().count()).isGreaterThanOrEqualTo(2.0);
    }

    @Test
    void onlyRetriableFailuresThatSayNothingWasWrittenCountAsNotLanded() {
        assertThat(TelemetryPublisher.mayHaveLanded(new java.util.concurrent.TimeoutException())).isTrue();
        assertThat(TelemetryPublisher.mayHaveLanded(new org.apache.kafka.common.errors.TimeoutException(
                "Expiring 1 record(s) for pikv.cache-events-0: 10001 ms has passed since batch creation"))).isTrue();
        assertThat(TelemetryPublisher.mayHaveLanded(new org.apache.kafka.common.errors.NetworkException("gone")))
                .isTrue();
        // What kafka-clients 4.1 fails the future with when the topic's metadata never came: nothing was sent.
        assertThat(TelemetryPublisher.mayHaveLanded(new org.apache.kafka.common.errors.TimeoutException(
                "Topic pikv.cache-events not present in metadata after 10000 ms."))).isFalse();
        // Answers that may come after the leader wrote the record, and those that say it wrote nothing.
        assertThat(TelemetryPublisher.mayHaveLanded(
                new org.apache.kafka.common.errors.NotEnoughReplicasAfterAppendException("after"))).isTrue();
        assertThat(TelemetryPublisher.mayHaveLanded(
                new org.apache.kafka.common.errors.NotLeaderOrFollowerException("moved"))).isTrue();
        assertThat(TelemetryPublisher.mayHaveLanded(
                new org.apache.kafka.common.errors.KafkaStorageException("disk"))).isTrue();
        assertThat(TelemetryPublisher.mayHaveLanded(
                new org.apache.kafka.common.errors.NotEnoughReplicasException("before"))).isFalse();
        assertThat(TelemetryPublisher.mayHaveLanded(
                new org.apache.kafka.common.errors.UnknownTopicOrPartitionException("none"))).isFalse();
    }

    @Test
    void aProducerWhoseSendKafkaRefusedForGoodIsReplaced() throws Exception {
        // An idempotent producer's fatal errors leave it unusable: every later send would fail the same way.
        MockProducer<String, byte[]> broken = new MockProducer<>(true, null, new StringSerializer(),
                new ByteArraySerializer());
        broken.sendException = new ClusterAuthorizationException("not authorized to write idempotently");
        MockProducer<String, byte[]> healthy = new MockProducer<>(true, null, new StringSerializer(),
                new ByteArraySerializer());
        Deque<MockProducer<String, byte[]>> made = new ArrayDeque<>(List.of(broken, healthy));
        AtomicInteger calls = new AtomicInteger();
        TelemetryPublisher p = publisher(new TelemetryPublisher.Settings("pikv.cache-events", "c", 0, SHAPE.experts(),
                Duration.ofMillis(20), 1000, Duration.ofSeconds(1)), () -> {
                    calls.incrementAndGet();
                    return made.size() > 1 ? made.poll() : made.peek();
                });
        p.start();
        await().atMost(Duration.ofSeconds(10)).until(() -> healthy.history().size() >= 3);
        assertThat(calls).hasValue(2);
        assertThat(broken.closed()).isTrue();
        assertThat(broken.history()).isEmpty();
        assertThat(registry.get("pikv.telemetry.send.failures").counter().count()).isEqualTo(1.0);
        List<CacheEvents> records = new ArrayList<>();
        for (var r : healthy.history()) {
            assertThat(r.key()).isEqualTo("c/0");
            records.add(json.readValue(r.value(), CacheEvents.class));
        }
        // The refused record is the only one lost, and the next one says so.
        assertThat(records.get(0).sequence()).isEqualTo(1);
        assertThat(records.get(0).dropped()).isEqualTo(1);
        assertThat(records.get(1).sequence()).isEqualTo(2);
        assertThat(records.get(1).dropped()).isZero();
        assertThat(link.status(KafkaLink.Client.TELEMETRY).state()).isEqualTo("up");
    }

    @Test
    void appendsKeepTheirPaceAndTheBufferStaysBoundedWhileKafkaIsUnreachable() throws Exception {
        int deadPort = 1; // nothing listens, and no freed port another test's broker could take meanwhile
        TelemetryPublisher p = publisher("127.0.0.1:" + deadPort, "pikv.cache-events", Duration.ofMillis(20), 5,
                Duration.ofSeconds(5));
        p.start();
        long seq = node.create(null);
        Random rnd = new Random(1);
        long[] nanos = new long[200_000];
        int n = 0;
        long end = System.nanoTime() + 1_000_000_000L;
        while (System.nanoTime() < end && n < nanos.length) {
            Wire.AppendRequest request = new Wire.AppendRequest(n % 2, new Wire.AppendRequest.Entry[] {
                new Wire.AppendRequest.Entry(Wire.NEXT_POSITION, rnd.nextInt(4), gaussian(rnd), gaussian(rnd))});
            long t0 = System.nanoTime();
            node.append(seq, request);
            nanos[n++] = System.nanoTime() - t0;
        }
        long[] sorted = Arrays.copyOf(nanos, n);
        Arrays.sort(sorted);
        System.out.printf("appends with Kafka unreachable: %d in 1 s, p50 %.1f us, p99 %.1f us, max %.1f ms%n", n,
                sorted[n / 2] / 1e3, sorted[(int) (n * 0.99)] / 1e3, sorted[n - 1] / 1e6);
        // A send blocks up to 5 s for the dead broker; no append waited for one (the bound leaves room for a GC pause
        // or a busy machine, not for a 5 s wait).
        assertThat(sorted[n - 1]).isLessThan(4_000_000_000L);
        assertThat(p.published()).isZero();

        await().atMost(Duration.ofSeconds(20)).untilAsserted(() -> {
            assertThat(link.status(KafkaLink.Client.TELEMETRY).state()).isEqualTo("down");
            assertThat(link.status(KafkaLink.Client.TELEMETRY).error()).contains("TimeoutException");
        });
        await().atMost(Duration.ofSeconds(5)).untilAsserted(() -> {
            double windows = registry.get("pikv.telemetry.windows").functionCounter().count();
            double dropped = registry.get("pikv.telemetry.records.dropped").functionCounter().count();
            double depth = registry.get("pikv.telemetry.buffer.depth").gauge().value();
            assertThat(depth).isBetween(5.0, 6.0); // the buffer's five, and the one the sender holds
            assertThat(dropped).isGreaterThan(10);
            // Every record built is dropped or waiting (the depth counts the one being sent); read one after the
            // other, a window closing in between can add one to the later readings.
            assertThat(windows - dropped - depth).isBetween(-1.0, 0.0);
        });
        assertThat(registry.get("pikv.telemetry.send.failures").counter().count()).isPositive();
        assertThat(link.down()).isTrue();
    }

    @Test
    void ticksAStallHeldBackCloseNoWindowYoungerThanHalfAPeriod() {
        // Not started: the test plays the timer. A tick right after a window closed (a fixed-rate timer catching up
        // after a stall) adds no record.
        TelemetryPublisher p = publisher("127.0.0.1:1", "pikv.cache-events", Duration.ofSeconds(10), 8,
                Duration.ofSeconds(1));
        p.closeWindow();
        p.tick();
        p.tick();
        assertThat(p.buffer().depth()).isEqualTo(1);
    }

    /**
     * A close that waits for the consistent view (a control record being applied) ends the window when its counts are
     * read: the next window starts there, so the catch-up tick right after does not close a sliver of one.
     */
    @Test
    void aWindowWhoseCloseWaitedEndsWhenItsCountsAreRead() {
        java.util.concurrent.atomic.AtomicBoolean slow = new java.util.concurrent.atomic.AtomicBoolean(true);
        publisher = new TelemetryPublisher(new TelemetryPublisher.Settings("pikv.cache-events", "c", 0, SHAPE.experts(),
                Duration.ofSeconds(4), 8, Duration.ofSeconds(1)), new NodeSource() {
                    @Override
                    public <T> T consistent(Supplier<T> read) {
                        if (slow.getAndSet(false)) {
                            // Half a period and more; the tick after it has the other half (2 s) to come in.
                            await().pollDelay(Duration.ofSeconds(3)).atMost(Duration.ofSeconds(10)).until(() -> true);
                        }
                        return read.get();
                    }
                }, () -> new MockProducer<>(true, null, new StringSerializer(), new ByteArraySerializer()), json,
                registry, link);
        publisher.closeWindow();
        publisher.tick();
        assertThat(publisher.buffer().depth()).isEqualTo(1);
    }

    @Test
    void aBrokerNameThatDoesNotResolveIsRetriedNotFatal() {
        TelemetryPublisher p = publisher("no-such-broker.invalid:9092", "pikv.cache-events", Duration.ofMillis(20), 3,
                Duration.ofSeconds(1));
        p.start();
        // Generous: the Kafka client resolves the name itself, and a resolver that waits for an unreachable DNS
        // server takes its own time to say no.
        await().atMost(Duration.ofSeconds(60)).untilAsserted(() -> {
            assertThat(link.status(KafkaLink.Client.TELEMETRY).error()).contains("No resolvable bootstrap urls");
            assertThat(p.buffer().depth()).isEqualTo(3);
            assertThat(p.buffer().dropped()).isPositive();
        });
    }

    @Test
    void theFirstRecordKafkaTakesReportsTheDropsAndSequencesShowTheGap() {
        String topic = TestKafka.uniqueTopic("telemetry-outage");
        TelemetryPublisher p = publisher(TestKafka.bootstrap(), topic, Duration.ofMillis(50), 4, Duration.ofSeconds(1));
        p.start();
        // The topic does not exist (the broker creates none by itself): Kafka takes nothing.
        await().atMost(Duration.ofSeconds(10)).until(() -> p.buffer().dropped() >= 6 && link.down());
        assertThat(p.published()).isZero();
        TestKafka.createTopic(topic, false);

        List<CacheEvents> records = new ArrayList<>();
        try (KafkaConsumer<String, String> consumer = TestKafka.consumer()) {
            TopicPartition partition = new TopicPartition(topic, 0);
            consumer.assign(List.of(partition));
            consumer.seekToBeginning(List.of(partition));
            await().atMost(Duration.ofSeconds(20)).until(() -> {
                for (ConsumerRecord<String, String> r : consumer.poll(Duration.ofMillis(200))) {
                    assertThat(r.key()).isEqualTo("c/0");
                    records.add(json.readValue(r.value(), CacheEvents.class));
                }
                return records.size() >= 5;
            });
        }
        // Consumers keep the first copy of a sequence (a retried send may have arrived twice).
        List<CacheEvents> distinct = new ArrayList<>();
        for (CacheEvents r : records) {
            if (distinct.stream().noneMatch(d -> d.sequence() == r.sequence())) {
                distinct.add(r);
            }
        }
        records.clear();
        records.addAll(distinct);
        // The record in flight when Kafka refused is kept and sent again, so it is the first Kafka takes; the records
        // dropped meanwhile are reported by the one after it, and every gap equals the drops reported after it.
        CacheEvents first = records.get(0);
        assertThat(first.sequence()).isZero();
        assertThat(first.dropped()).isZero();
        assertThat(records.get(1).dropped()).isGreaterThanOrEqualTo(2);
        for (int i = 1; i < records.size(); i++) {
            CacheEvents r = records.get(i);
            CacheEvents before = records.get(i - 1);
            assertThat(r.producerId()).isEqualTo(first.producerId());
            assertThat(r.sequence() - before.sequence() - 1).as("gap before %d", r.sequence()).isEqualTo(r.dropped());
            if (r.dropped() == 0) {
                assertThat(r.windowStartMs()).isEqualTo(before.windowEndMs());
            }
        }
        assertThat(link.down()).isFalse();
        assertThat(registry.get("pikv.telemetry.records.published").counter().count()).isGreaterThanOrEqualTo(5);
    }

    @Test
    void aBrokerLostWhileServingIsBufferedAround() throws Exception {
        KafkaClusterTestKit broker = TestKafka.startBroker();
        boolean stopped = false;
        try {
            TestKafka.createTopic(broker.bootstrapServers(), "pikv.cache-events", false);
            TelemetryPublisher p = publisher(broker.bootstrapServers(), "pikv.cache-events", Duration.ofMillis(50), 4,
                    Duration.ofSeconds(1));
            p.start();
            await().atMost(Duration.ofSeconds(20)).until(() -> p.published() >= 3);
            assertThat(link.status(KafkaLink.Client.TELEMETRY).state()).isEqualTo("up");
            broker.close();
            stopped = true;

            // Sends now fail after the delivery timeout (the producer knew the broker): records wait, the oldest go.
            long seq = node.create(null);
            Random rnd = new Random(2);
            await().atMost(Duration.ofSeconds(20)).untilAsserted(() -> {
                node.append(seq, new Wire.AppendRequest(0, new Wire.AppendRequest.Entry[] {
                    new Wire.AppendRequest.Entry(Wire.NEXT_POSITION, 1, gaussian(rnd), gaussian(rnd))}));
                assertThat(link.status(KafkaLink.Client.TELEMETRY).state()).isEqualTo("down");
                assertThat(p.buffer().depth()).isEqualTo(4);
                assertThat(p.buffer().dropped()).isGreaterThanOrEqualTo(3);
            });
            // The next record Kafka takes will report these.
            assertThat(p.buffer().unreported()).isGreaterThanOrEqualTo(3);
            assertThat(link.down()).isTrue();
        } finally {
            if (!stopped) {
                broker.close();
            }
        }
    }

    static float[] gaussian(Random rnd) {
        float[] x = new float[SHAPE.kvWidth()];
        for (int i = 0; i < x.length; i++) {
            x[i] = (float) rnd.nextGaussian();
        }
        return x;
    }
}
