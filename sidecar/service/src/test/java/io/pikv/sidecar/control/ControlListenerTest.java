package io.pikv.sidecar.control;

import com.fasterxml.jackson.databind.ObjectMapper;
import io.micrometer.core.instrument.MeterRegistry;
import io.micrometer.core.instrument.simple.SimpleMeterRegistry;
import io.pikv.api.events.ControlState;
import io.pikv.kv.ExpertShardMap;
import io.pikv.kv.StorageType;
import io.pikv.sidecar.ShardNode;
import io.pikv.sidecar.ShardPolicy;
import io.pikv.sidecar.kafka.KafkaClients;
import io.pikv.sidecar.kafka.KafkaLink;
import io.pikv.sidecar.kafka.TestKafka;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

import java.time.Duration;
import java.util.List;
import java.util.Map;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

/** The control listener on a real broker: what readiness waits for, and which records it applies. */
class ControlListenerTest {
    /** The application's mapper as the sidecar customizes it (strict about request bodies). */
    final ObjectMapper json = strict();

    static ObjectMapper strict() {
        ObjectMapper m = new ObjectMapper();
        new io.pikv.sidecar.api.StrictJson().customize(m);
        return m;
    }
    final MeterRegistry registry = new SimpleMeterRegistry();
    final KafkaLink link = new KafkaLink();
    final ShardPolicy policy = ShardPolicy.of("reject");
    final ShardNode node = new ShardNode(0, ShardControlTest.SHAPE, StorageType.FP32, 16, 1, 4096, policy);
    final ShardControl control = new ShardControl("c1", 0, ExpertShardMap.roundRobin(4, 1), policy,
            ShardControl.Budget.of(node));
    ControlListener listener;

    @AfterEach
    void close() {
        if (listener != null) {
            listener.close();
        }
        node.close();
    }

    ControlListener listener(String topic, Duration startupWait) {
        return listener(TestKafka.bootstrap(), topic, startupWait);
    }

    ControlListener listener(String bootstrap, String topic, Duration startupWait) {
        return listener(bootstrap, topic, startupWait, Map.of());
    }

    ControlListener listener(String bootstrap, String topic, Duration startupWait, Map<String, Object> more) {
        Map<String, Object> settings = new java.util.HashMap<>(more);
        settings.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        settings.put(ConsumerConfig.GROUP_ID_CONFIG, "ignored");
        Map<String, Object> config = KafkaClients.consumer(settings, "test-control");
        listener = new ControlListener(topic, control, startupWait, () -> new KafkaConsumer<>(config), json, registry,
                link);
        return listener;
    }

    void publish(KafkaProducer<String, String> producer, String topic, String key, ControlState state) throws Exception {
        producer.send(new ProducerRecord<>(topic, key, json.writeValueAsString(state))).get();
    }

    static ControlState state(String cluster, long epoch, String policy, int... map) {
        return new ControlState(ControlState.VERSION, cluster, epoch,
                java.util.Arrays.stream(map).boxed().toList(), 2, policy, Map.of(), 4096);
    }

    /** Gives a mock consumer the one partition of topic pikv.control, from offset 0 (its end is each test's). */
    static void onePartition(org.apache.kafka.clients.consumer.MockConsumer<String, byte[]> consumer) {
        consumer.updatePartitions("pikv.control", List.of(new org.apache.kafka.common.PartitionInfo("pikv.control", 0,
                null, new org.apache.kafka.common.Node[0], new org.apache.kafka.common.Node[0])));
        consumer.updateBeginningOffsets(Map.of(new TopicPartition("pikv.control", 0), 0L));
    }

    double count(String outcome) {
        return registry.get("pikv.control.records").tag("outcome", outcome).counter().count();
    }

    @Test
    void readyOnlyOnceTheTopicIsReadToItsEndWithTheLatestEpochApplied() throws Exception {
        String topic = TestKafka.uniqueTopic("control");
        TestKafka.createTopic(topic, true);
        try (KafkaProducer<String, String> producer = TestKafka.producer()) {
            publish(producer, topic, "c1", state("c1", 3, "reject", 0, 1, 0, 1));
            publish(producer, topic, "c2", state("c2", 9, "reject", 1, 1, 1, 1));
            publish(producer, topic, "c1", state("c1", 5, "oldest-page", 1, 0, 1, 0));
            publish(producer, topic, "c1", state("c1", 4, "reject", 0, 0, 0, 0));
            producer.send(new ProducerRecord<>(topic, "c1", "not json")).get();

            ControlListener l = listener(topic, Duration.ofMinutes(5));
            assertThat(l.ready()).isFalse();
            l.start();
            await().atMost(Duration.ofSeconds(20)).until(l::ready);
            // Ready implies the whole topic was read: the latest epoch is in effect, older and foreign ones are not.
            assertThat(l.phase()).isEqualTo(ControlListener.Phase.CAUGHT_UP);
            assertThat(l.servingRefusal()).isNull();
            assertThat(l.manualMapRefusal()).isNull();
            assertThat(control.epoch()).isEqualTo(5);
            assertThat(control.state().shardMap().assignment()).containsExactly(1, 0, 1, 0);
            assertThat(policy.activePolicy()).isEqualTo("oldest-page");
            // Only the latest applied: epoch 3 was passed over (a follower would have left it for 5), 4 is older.
            assertThat(count("applied")).isEqualTo(1);
            assertThat(count("stale")).isEqualTo(2);
            assertThat(count("other_cluster")).isEqualTo(1);
            assertThat(count("invalid")).isEqualTo(1);
            assertThat(registry.get("pikv.control.epoch").gauge().value()).isEqualTo(5);

            // While following: a newer epoch applies at once, an older one never.
            publish(producer, topic, "c1", state("c1", 2, "oldest-page", 0, 0, 0, 0));
            publish(producer, topic, "c1", state("c1", 6, "reject", 0, 0, 1, 1));
            await().atMost(Duration.ofSeconds(10)).until(() -> control.epoch() == 6);
            assertThat(count("stale")).isEqualTo(3);
            assertThat(policy.activePolicy()).isEqualTo("reject");
            assertThat(control.state().shardMap().assignment()).containsExactly(0, 0, 1, 1);
            assertThat(link.status(KafkaLink.Client.CONTROL).state()).isEqualTo("up");
        }
    }

    /**
     * The first read applies one record, the one a follower of every record would run: a shard that was already
     * serving (ready after the start-up wait) does not pass through each budget and policy the topic still holds.
     */
    @Test
    void theFirstReadAppliesOnlyTheRecordAFollowerWouldRun() throws Exception {
        String topic = TestKafka.uniqueTopic("control");
        TestKafka.createTopic(topic, false); // not compacted: it may hold an unkeyed record
        try (KafkaProducer<String, String> producer = TestKafka.producer()) {
            publish(producer, topic, "c1", state("c1", 5, "oldest-page", 0, 0, 0, 0));
            publish(producer, topic, "c1", state("c1", 6, "reject", 1, 1, 1, 1));
            publish(producer, topic, "c1", state("c1", 7, "oldest-page", 0, 1, 0, 1));
            publish(producer, topic, "c1", state("c1", 7, "reject", 1, 0, 1, 0)); // a conflict: the later one runs
            publish(producer, topic, "c1", state("c1", 8, "no-such-policy", 1, 1, 0, 0)); // refused
            publish(producer, topic, null, state("c2", 9, "oldest-page", 1, 1, 1, 1)); // unkeyed, another cluster's
            ControlListener l = listener(topic, Duration.ofMinutes(5));
            l.start();
            await().atMost(Duration.ofSeconds(20)).until(l::ready);
            assertThat(control.epoch()).isEqualTo(7);
            assertThat(control.state().shardMap().assignment()).containsExactly(1, 0, 1, 0);
            assertThat(policy.activePolicy()).isEqualTo("reject");
            assertThat(control.state().lastRejected()).startsWith("epoch 8: ");
            assertThat(count("applied")).isEqualTo(1);
            assertThat(count("invalid")).isEqualTo(1);
            assertThat(count("stale")).isEqualTo(3);
            assertThat(count("conflict")).isZero();
            assertThat(count("other_cluster")).isEqualTo(1);
        }
    }

    /** With no start-up wait, a readable topic still decides: ready only once it is read, the latest applied. */
    @Test
    void noStartupWaitStillWaitsForAReadableTopic() throws Exception {
        String topic = TestKafka.uniqueTopic("control");
        TestKafka.createTopic(topic, true);
        try (KafkaProducer<String, String> producer = TestKafka.producer()) {
            publish(producer, topic, "c1", state("c1", 4, "oldest-page", 1, 1, 0, 0));
            ControlListener l = listener(topic, Duration.ZERO);
            l.start();
            long until = System.nanoTime() + Duration.ofSeconds(20).toNanos();
            while (!l.ready() && System.nanoTime() < until) {
                java.util.concurrent.locks.LockSupport.parkNanos(200_000);
            }
            assertThat(l.ready()).isTrue();
            // The first moment it was ready, the record was in effect (before: ready at once, on the configured state).
            assertThat(control.epoch()).isEqualTo(4);
            assertThat(l.phase()).isEqualTo(ControlListener.Phase.CAUGHT_UP);
        }
    }

    @Test
    void aRecordThatCannotRunIsSaidAndLaterOnesStillApply() throws Exception {
        String topic = TestKafka.uniqueTopic("control");
        TestKafka.createTopic(topic, true);
        try (KafkaProducer<String, String> producer = TestKafka.producer()) {
            // A null parameter: the record is refused whole, with the reason, before anything of it applies.
            producer.send(new ProducerRecord<>(topic, "c1", "{\"version\":1,\"cluster\":\"c1\",\"epoch\":2,"
                    + "\"shardOfExpert\":[0,0,0,0],\"shards\":1,\"policy\":\"h2o\",\"parameters\":{\"sinks\":null},"
                    + "\"budgetBytes\":4096}")).get();
            ControlListener l = listener(topic, Duration.ofSeconds(30));
            l.start();
            await().atMost(Duration.ofSeconds(20)).until(l::ready);
            assertThat(control.epoch()).isEqualTo(-1);
            assertThat(control.state().lastRejected())
                    .isEqualTo("epoch 2: parameter sinks must be a finite number, got null");
            assertThat(count("invalid")).isEqualTo(1);
            // The JSON literal null and a state naming no cluster: counted invalid, the listener goes on.
            producer.send(new ProducerRecord<>(topic, "c1", "null")).get();
            producer.send(new ProducerRecord<>(topic, "c1", "{\"version\":1,\"epoch\":7,\"shardOfExpert\":[0,0,0,0],"
                    + "\"shards\":1,\"budgetBytes\":4096}")).get();
            // No epoch (it would read as 0), a fractional epoch, a fractional shard, a JSON array: refused too.
            producer.send(new ProducerRecord<>(topic, "c1", "{\"version\":1,\"cluster\":\"c1\","
                    + "\"shardOfExpert\":[0,0,0,0],\"shards\":1,\"policy\":\"reject\"}")).get();
            producer.send(new ProducerRecord<>(topic, "c1", "{\"version\":1,\"cluster\":\"c1\",\"epoch\":7.5,"
                    + "\"shardOfExpert\":[0,0,0,0],\"shards\":1,\"policy\":\"reject\"}")).get();
            producer.send(new ProducerRecord<>(topic, "c1", "{\"version\":1,\"cluster\":\"c1\",\"epoch\":8,"
                    + "\"shardOfExpert\":[0,0.5,0,0],\"shards\":1,\"policy\":\"reject\"}")).get();
            producer.send(new ProducerRecord<>(topic, "c1", "[1, 2]")).get();
            publish(producer, topic, "c1", state("c1", 3, "oldest-page", 0, 0, 0, 0));
            await().atMost(Duration.ofSeconds(10)).until(() -> control.epoch() == 3);
            assertThat(policy.activePolicy()).isEqualTo("oldest-page");
            assertThat(count("invalid")).isEqualTo(7);
            // Each said as the last rejected record, also the ones that never read as a control state: the last sent.
            assertThat(control.state().lastRejected()).startsWith("record at " + topic + "-0 offset ")
                    .endsWith(" is not a control state: it is JSON array, not an object");
            // The same epoch again: the same record is stale; another one is a conflict, and the later record wins
            // (it is the one compaction keeps for a shard that starts later).
            publish(producer, topic, "c1", state("c1", 3, "oldest-page", 0, 0, 0, 0));
            publish(producer, topic, "c1", state("c1", 3, "reject", 0, 0, 0, 0));
            await().atMost(Duration.ofSeconds(10)).until(() -> count("conflict") == 1);
            assertThat(count("stale")).isEqualTo(1);
            assertThat(policy.activePolicy()).isEqualTo("reject");
            assertThat(control.epoch()).isEqualTo(3);
            assertThat(l.ready()).isTrue();
            // A tombstone (the operator deleted the cluster) is no refusal: nothing counted, the state runs on. A
            // record keyed c1 that names another cluster is refused and said; one keyed for another cluster is
            // that cluster's.
            producer.send(new ProducerRecord<>(topic, "c1", null)).get();
            publish(producer, topic, "c1", state("c2", 9, "lru", 0, 0, 0, 0));
            publish(producer, topic, "c2", state("c2", 10, "lru", 0, 0, 0, 0));
            await().atMost(Duration.ofSeconds(10)).until(() -> count("other_cluster") == 1);
            assertThat(count("invalid")).isEqualTo(8);
            assertThat(control.state().lastRejected()).endsWith(" is keyed c1 but names cluster c2");
            assertThat(control.epoch()).isEqualTo(3);
            assertThat(policy.activePolicy()).isEqualTo("reject");
        }
    }

    @Test
    void partitionsAddedToTheTopicAreReadFromTheirStart() throws Exception {
        String topic = TestKafka.uniqueTopic("control-grown");
        TestKafka.createTopic(topic, true);
        try (KafkaProducer<String, String> producer = TestKafka.producer();
             org.apache.kafka.clients.admin.Admin admin = org.apache.kafka.clients.admin.Admin.create(Map.of(
                     org.apache.kafka.clients.admin.AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, TestKafka.bootstrap()))) {
            publish(producer, topic, "c1", state("c1", 1, "reject", 0, 0, 0, 0));
            // Metadata refreshed every 200 ms here (5 minutes by default), so the new partition shows at the next
            // check (every 5 s).
            ControlListener l = listener(TestKafka.bootstrap(), topic, Duration.ofSeconds(30),
                    Map.of(ConsumerConfig.METADATA_MAX_AGE_CONFIG, 200));
            l.start();
            await().atMost(Duration.ofSeconds(20)).until(() -> control.epoch() == 1);
            admin.createPartitions(Map.of(topic, org.apache.kafka.clients.admin.NewPartitions.increaseTo(2))).all()
                    .get();
            producer.send(new ProducerRecord<>(topic, 1, "c1", json.writeValueAsString(
                    state("c1", 2, "oldest-page", 0, 0, 0, 0)))).get();
            await().atMost(Duration.ofSeconds(20)).until(() -> control.epoch() == 2);
            assertThat(policy.activePolicy()).isEqualTo("oldest-page");
            assertThat(count("stale")).isZero(); // partition 0 was not read again
        }
    }

    @Test
    void aMissingTopicDelaysReadinessByTheStartupWaitOnly() throws Exception {
        String topic = TestKafka.uniqueTopic("control-missing");
        ControlListener l = listener(topic, Duration.ofSeconds(3));
        long started = System.nanoTime(); // the monotonic clock: a wall clock stepped meanwhile must not count
        l.start();
        assertThat(l.ready()).isFalse();
        await().atMost(Duration.ofSeconds(15)).until(l::ready);
        // The wait, and not much more (the slack is for a loaded machine; the next bound is the 15 s above).
        assertThat(Duration.ofNanos(System.nanoTime() - started)).isGreaterThanOrEqualTo(Duration.ofMillis(2900))
                .isLessThan(Duration.ofSeconds(9));
        assertThat(l.phase()).isEqualTo(ControlListener.Phase.STARTING);
        // Readiness ends by the clock; what the consumer thread found is awaited (a loaded broker may answer late).
        await().atMost(Duration.ofSeconds(15)).untilAsserted(() -> {
            assertThat(l.problem()).isEqualTo("topic " + topic + " does not exist");
            // Control cannot be followed: the link says so (the kafka health group, pikv_kafka_up).
            assertThat(link.status(KafkaLink.Client.CONTROL).state()).isEqualTo("down");
            assertThat(link.status(KafkaLink.Client.CONTROL).error()).contains("does not exist");
        });
        assertThat(control.state().source()).isEqualTo("config");

        // The topic appears later: the listener finds it and applies what it carries.
        TestKafka.createTopic(topic, true);
        try (KafkaProducer<String, String> producer = TestKafka.producer()) {
            publish(producer, topic, "c1", state("c1", 0, "oldest-page", 1, 1, 0, 0));
        }
        await().atMost(Duration.ofSeconds(20)).until(() -> control.epoch() == 0);
        assertThat(control.state().source()).isEqualTo("control");
        assertThat(policy.activePolicy()).isEqualTo("oldest-page");
        await().atMost(Duration.ofSeconds(10)).until(() -> l.phase() == ControlListener.Phase.CAUGHT_UP);
        assertThat(l.problem()).isNull();
        assertThat(link.status(KafkaLink.Client.CONTROL).state()).isEqualTo("up");
    }

    @Test
    void aFailureThatIsOverDoesNotMakeTheShardReadyBeforeItHasReadTheTopic() throws Exception {
        // The topic holds one record the consumer cannot fetch yet; one offsets call times out, the next ones answer.
        // Past the start-up wait the shard must still wait for the record: the topic is readable, only slow.
        TopicPartition p0 = new TopicPartition("pikv.control", 0);
        java.util.concurrent.atomic.AtomicInteger positions = new java.util.concurrent.atomic.AtomicInteger();
        org.apache.kafka.clients.consumer.MockConsumer<String, byte[]> consumer =
                new org.apache.kafka.clients.consumer.MockConsumer<>("earliest") {
                    @Override
                    public synchronized long position(TopicPartition partition, Duration timeout) {
                        if (positions.getAndIncrement() == 0) {
                            throw new org.apache.kafka.common.errors.TimeoutException("no answer in time");
                        }
                        return super.position(partition, timeout);
                    }
                };
        onePartition(consumer);
        consumer.updateEndOffsets(Map.of(p0, 1L));
        listenOn(consumer, Duration.ofMillis(300)).start();
        await().atMost(Duration.ofSeconds(10)).until(() -> positions.get() >= 3);
        // Not ready through and past the start-up wait (300 ms): the topic is readable, only not read yet.
        await().during(Duration.ofMillis(700)).atMost(Duration.ofSeconds(3))
                .until(() -> !listener.ready() && listener.phase() == ControlListener.Phase.READING);

        byte[] record = json.writeValueAsBytes(state("c1", 0, "oldest-page", 1, 1, 0, 0));
        consumer.schedulePollTask(() -> consumer.addRecord(new org.apache.kafka.clients.consumer.ConsumerRecord<>(
                "pikv.control", 0, 0L, "c1", record)));
        await().atMost(Duration.ofSeconds(10)).until(listener::ready);
        assertThat(control.epoch()).isZero();
    }

    /**
     * A broker that goes silent once reading began (end offsets known, the record never fetched, every later call
     * timing out): past the start-up wait, the shard becomes ready once the broker has been silent for 10 s, rather
     * than never (a cache outage for a control topic it cannot read).
     */
    @Test
    void aBrokerSilentDuringTheFirstReadMakesTheShardReadyAfterTenSeconds() throws Exception {
        TopicPartition p0 = new TopicPartition("pikv.control", 0);
        java.util.concurrent.atomic.AtomicBoolean silent = new java.util.concurrent.atomic.AtomicBoolean();
        org.apache.kafka.clients.consumer.MockConsumer<String, byte[]> consumer =
                new org.apache.kafka.clients.consumer.MockConsumer<>("earliest") {
                    @Override
                    public synchronized Map<TopicPartition, Long> endOffsets(java.util.Collection<TopicPartition> ps,
                                                                             Duration timeout) {
                        if (!silent.getAndSet(true)) {
                            return super.endOffsets(ps, timeout); // the first answer: reading begins
                        }
                        throw new org.apache.kafka.common.errors.TimeoutException("no answer in time");
                    }

                    @Override
                    public synchronized List<org.apache.kafka.common.PartitionInfo> partitionsFor(String topic,
                                                                                               Duration timeout) {
                        if (silent.get()) {
                            throw new org.apache.kafka.common.errors.TimeoutException("no answer in time");
                        }
                        return super.partitionsFor(topic, timeout);
                    }
                };
        onePartition(consumer);
        consumer.updateEndOffsets(Map.of(p0, 1L)); // one record, which never comes
        listenOn(consumer, Duration.ofMillis(300));
        long started = System.nanoTime();
        listener.start();
        await().atMost(Duration.ofSeconds(5)).until(silent::get);
        // Past the start-up wait and reading: not ready while the broker may still answer.
        await().during(Duration.ofSeconds(3)).atMost(Duration.ofSeconds(5))
                .until(() -> !listener.ready() && listener.phase() == ControlListener.Phase.READING);
        assertThat(listener.servingRefusal()).startsWith("it is still reading control topic pikv.control (it serves");
        assertThat(listener.manualMapRefusal()).isEqualTo(listener.servingRefusal());
        await().atMost(Duration.ofSeconds(20)).until(listener::ready);
        // Serving, but a map by hand would still outrank the record the read waits for.
        assertThat(listener.servingRefusal()).isNull();
        assertThat(listener.manualMapRefusal()).startsWith("it is still reading control topic pikv.control (serving"
                + " meanwhile, since the broker went silent past the start-up wait)");
        assertThat((System.nanoTime() - started) / 1e9).as("seconds to ready").isGreaterThanOrEqualTo(9.5);
        assertThat(listener.phase()).isEqualTo(ControlListener.Phase.READING);
        assertThat(listener.problem()).isEqualTo("lost topic pikv.control: TimeoutException: no answer in time");
        assertThat(control.epoch()).isEqualTo(-1);
    }

    /**
     * A listener that stops during the first read (an Error on its thread) applies nothing of it any more: once the
     * shard serves, a map by hand is taken rather than refused for a read that will never end.
     */
    @Test
    void aListenerStoppedDuringTheFirstReadNoLongerHoldsBackAMapByHand() throws Exception {
        org.apache.kafka.clients.consumer.MockConsumer<String, byte[]> consumer =
                new org.apache.kafka.clients.consumer.MockConsumer<>("earliest") {
                    @Override
                    public synchronized org.apache.kafka.clients.consumer.ConsumerRecords<String, byte[]> poll(
                            Duration timeout) {
                        throw new LinkageError("a class the poll needs is missing");
                    }
                };
        onePartition(consumer);
        consumer.updateEndOffsets(Map.of(new TopicPartition("pikv.control", 0), 1L)); // a record, never read
        listenOn(consumer, Duration.ofMillis(300)).start();
        // The Error ends the listener's thread uncaught, as it is meant to: not a failure of this test.
        await().dontCatchUncaughtExceptions().atMost(Duration.ofSeconds(5)).until(() -> String.valueOf(
                listener.problem()).startsWith("the control listener stopped: java.lang.LinkageError"));
        assertThat(listener.phase()).isEqualTo(ControlListener.Phase.READING);
        // The broker "silent" from then on.
        await().dontCatchUncaughtExceptions().atMost(Duration.ofSeconds(20)).until(listener::ready);
        assertThat(listener.manualMapRefusal()).isNull();
    }

    /**
     * A partition that goes away during the first read (the topic made again with fewer): its records will never
     * come and its end cannot be asked for any more. The read finishes with the partitions the topic has.
     */
    @Test
    void aPartitionGoneDuringTheFirstReadDoesNotHoldItBack() throws Exception {
        TopicPartition p0 = new TopicPartition("pikv.control", 0);
        TopicPartition p1 = new TopicPartition("pikv.control", 1);
        java.util.concurrent.atomic.AtomicBoolean gone = new java.util.concurrent.atomic.AtomicBoolean();
        org.apache.kafka.clients.consumer.MockConsumer<String, byte[]> consumer =
                new org.apache.kafka.clients.consumer.MockConsumer<>("earliest") {
                    @Override
                    public synchronized Map<TopicPartition, Long> endOffsets(java.util.Collection<TopicPartition> ps,
                                                                             Duration timeout) {
                        if (gone.get() && ps.contains(p1)) {
                            throw new org.apache.kafka.common.errors.TimeoutException("no leader for " + p1);
                        }
                        return super.endOffsets(ps, timeout);
                    }
                };
        org.apache.kafka.common.Node[] none = new org.apache.kafka.common.Node[0];
        consumer.updatePartitions("pikv.control", List.of(
                new org.apache.kafka.common.PartitionInfo("pikv.control", 0, null, none, none),
                new org.apache.kafka.common.PartitionInfo("pikv.control", 1, null, none, none)));
        consumer.updateBeginningOffsets(Map.of(p0, 0L, p1, 0L));
        consumer.updateEndOffsets(Map.of(p0, 1L, p1, 3L)); // partition 1's three records never come
        consumer.schedulePollTask(() -> consumer.addRecord(record(0, state("c1", 3, "oldest-page", 1, 1, 0, 0))));
        listenOn(consumer, Duration.ofMinutes(5)).start();
        await().during(Duration.ofSeconds(1)).atMost(Duration.ofSeconds(5))
                .until(() -> listener.phase() == ControlListener.Phase.READING && !listener.ready());
        consumer.updatePartitions("pikv.control", List.of(
                new org.apache.kafka.common.PartitionInfo("pikv.control", 0, null, none, none)));
        gone.set(true);
        await().atMost(Duration.ofSeconds(15)).until(listener::ready); // at the next check, within 5 s
        assertThat(listener.phase()).isEqualTo(ControlListener.Phase.CAUGHT_UP);
        assertThat(control.epoch()).isEqualTo(3);
        assertThat(policy.activePolicy()).isEqualTo("oldest-page");
        // Following the topic it has now: the link is up at the checks after it, not down for the partition gone.
        await().during(Duration.ofSeconds(6)).atMost(Duration.ofSeconds(8))
                .until(() -> link.status(KafkaLink.Client.CONTROL).state().equals("up"));
        assertThat(listener.problem()).isNull();
    }

    /** More records than the first read keeps: those the shard refuses go first, never the one to apply. */
    @Test
    void aValidRecordOutlivesMoreRefusedOnesThanTheFirstReadKeeps() throws Exception {
        int refused = ControlListener.PENDING_LIMIT + 5;
        org.apache.kafka.clients.consumer.MockConsumer<String, byte[]> consumer = mockTopic(refused + 2L);
        consumer.schedulePollTask(() -> {
            consumer.addRecord(record(0, state("c1", 3, "oldest-page", 1, 1, 0, 0)));
            for (int i = 1; i <= refused; i++) { // higher epochs, all refused (a producer gone wrong)
                consumer.addRecord(record(i, state("c1", 10 + i, "no-such-policy", 0, 0, 1, 1)));
            }
            consumer.addRecord(record(refused + 1L, state("c1", 2, "reject", 0, 0, 0, 0)));
        });
        listenOn(consumer, Duration.ofMinutes(5)).start();
        await().atMost(Duration.ofSeconds(20)).until(listener::ready);
        assertThat(control.epoch()).isEqualTo(3);
        assertThat(policy.activePolicy()).isEqualTo("oldest-page");
        assertThat(control.state().shardMap().assignment()).containsExactly(1, 1, 0, 0);
        assertThat(count("applied")).isEqualTo(1);
        assertThat(count("invalid")).isEqualTo(refused);
        assertThat(count("stale")).isEqualTo(1); // epoch 2
    }

    /** A record of cluster c1 at {@code offset} of partition 0 of the mock topic. */
    org.apache.kafka.clients.consumer.ConsumerRecord<String, byte[]> record(long offset, ControlState state) {
        return new org.apache.kafka.clients.consumer.ConsumerRecord<>("pikv.control", 0, offset, "c1", bytes(state));
    }

    /** The test's listener on {@code consumer}, not started. */
    ControlListener listenOn(org.apache.kafka.clients.consumer.MockConsumer<String, byte[]> consumer, Duration wait) {
        listener = new ControlListener("pikv.control", control, wait, () -> consumer, json, registry, link);
        return listener;
    }

    /**
     * The topic recreated (or truncated) during the first read: the records up to the end the read aimed at will never
     * come, so it aims at the new end, catches up and applies what comes after, instead of reading for ever.
     */
    @Test
    void aTopicThatEndsEarlierDuringTheFirstReadIsReadToItsNewEnd() throws Exception {
        // 200 records, never fetched: the topic is then recreated.
        org.apache.kafka.clients.consumer.MockConsumer<String, byte[]> consumer = mockTopic(200);
        listenOn(consumer, Duration.ofMinutes(5)).start();
        await().atMost(Duration.ofSeconds(5)).until(() -> listener.phase() == ControlListener.Phase.READING);
        consumer.updateEndOffsets(Map.of(new TopicPartition("pikv.control", 0), 0L));
        // At the next end-offsets check (every 5 s) the read aims at the new end, which it has reached.
        await().atMost(Duration.ofSeconds(15)).until(() -> listener.phase() == ControlListener.Phase.CAUGHT_UP);
        assertThat(listener.ready()).isTrue();
        consumer.schedulePollTask(() -> consumer.addRecord(record(0, state("c1", 1, "oldest-page", 1, 1, 0, 0))));
        await().atMost(Duration.ofSeconds(10)).until(() -> control.epoch() == 1);
    }

    @Test
    void aLostBrokerOrAFailedPollKeepsTheEpochAndReadingResumes() throws Exception {
        org.apache.kafka.clients.consumer.MockConsumer<String, byte[]> consumer = readEpochThree();
        assertThat(control.epoch()).isEqualTo(3);
        assertThat(link.status(KafkaLink.Client.CONTROL).state()).isEqualTo("up");

        // The broker is lost: the link says so, the epoch in effect stays, and the next record applies once a poll
        // works again; the link is up again by the next check (every 5 s).
        consumer.setPollException(new org.apache.kafka.common.KafkaException("broker gone"));
        await().atMost(Duration.ofSeconds(10)).until(() -> link.status(KafkaLink.Client.CONTROL).state().equals("down"));
        assertThat(control.epoch()).isEqualTo(3);
        consumer.schedulePollTask(() -> consumer.addRecord(new org.apache.kafka.clients.consumer.ConsumerRecord<>(
                "pikv.control", 0, 1L, "c1", bytes(state("c1", 4, "oldest-page", 1, 1, 0, 0)))));
        await().atMost(Duration.ofSeconds(10)).until(() -> control.epoch() == 4);
        await().atMost(Duration.ofSeconds(10)).until(() -> link.status(KafkaLink.Client.CONTROL).state().equals("up"));

        // A failure that is not Kafka's (a defect, a client setting) is said the same way and retried.
        consumer.schedulePollTask(() -> {
            throw new IllegalStateException("a poll that failed");
        });
        await().atMost(Duration.ofSeconds(10)).until(() -> link.status(KafkaLink.Client.CONTROL).state().equals("down"));
        consumer.schedulePollTask(() -> consumer.addRecord(new org.apache.kafka.clients.consumer.ConsumerRecord<>(
                "pikv.control", 0, 2L, "c1", bytes(state("c1", 5, "reject", 1, 1, 0, 0)))));
        await().atMost(Duration.ofSeconds(10)).until(() -> control.epoch() == 5);
        assertThat(control.state().policy()).isEqualTo("reject");
        assertThat(listener.ready()).isTrue();
    }

    @Test
    void aRecordTheConsumerCannotReadIsSkippedAfterRetriesAndTheNextOnesApply() throws Exception {
        TopicPartition p0 = new TopicPartition("pikv.control", 0);
        org.apache.kafka.clients.consumer.MockConsumer<String, byte[]> consumer = readEpochThree();
        // The batch at offset 1 fails its checksum: every fetch of it fails the same way, as Kafka's consumer says.
        for (int i = 0; i < ControlListener.CORRUPT_TRIES; i++) {
            consumer.schedulePollTask(() -> {
                throw new org.apache.kafka.common.KafkaException("Received exception when fetching the next record "
                        + "from pikv.control-0. If needed, please seek past the record to continue consumption.",
                        new org.apache.kafka.common.errors.CorruptRecordException("Record is corrupt (stored crc = 1)"));
            });
        }
        // The batch holds offsets 1 to 5: the consumer fails the same way at each offset of it, once each is reached;
        // those go at once, without the tries (a batch of thousands would otherwise take seconds per offset).
        for (int i = 0; i < 4; i++) {
            consumer.schedulePollTask(() -> {
                throw new org.apache.kafka.common.KafkaException("Received exception when fetching the next record "
                        + "from pikv.control-0. If needed, please seek past the record to continue consumption.",
                        new org.apache.kafka.common.errors.CorruptRecordException("Record is corrupt (stored crc = 1)"));
            });
        }
        consumer.schedulePollTask(() -> consumer.addRecord(new org.apache.kafka.clients.consumer.ConsumerRecord<>(
                "pikv.control", 0, 6L, "c1", bytes(state("c1", 4, "reject", 1, 1, 0, 0)))));
        await().atMost(Duration.ofSeconds(20)).until(() -> control.epoch() == 4);
        assertThat(consumer.position(p0)).isEqualTo(7);
        assertThat(control.state().lastRejected()).isEqualTo("record at pikv.control-0 offset 1 cannot be read "
                + "(org.apache.kafka.common.errors.CorruptRecordException: Record is corrupt (stored crc = 1)); skipped");
        assertThat(count("invalid")).as("the unreadable batch, once").isEqualTo(1);
        // Another failure naming no partition, or one not read, is a lost broker: retried, never skipped.
        assertThat(ControlListener.corruptPartition(new org.apache.kafka.common.KafkaException("Received exception "
                + "when fetching the next record from other-0. If needed, please seek past the record to continue "
                + "consumption."), List.of(p0))).isNull();
        assertThat(ControlListener.corruptPartition(new org.apache.kafka.common.KafkaException("broker gone"),
                List.of(p0))).isNull();
    }

    /** A mock consumer of a one-partition {@code pikv.control} whose end is offset 1 (one record to read). */
    static org.apache.kafka.clients.consumer.MockConsumer<String, byte[]> mockTopic() {
        return mockTopic(1);
    }

    /** A mock consumer of a one-partition {@code pikv.control} that ends at offset {@code end}. */
    static org.apache.kafka.clients.consumer.MockConsumer<String, byte[]> mockTopic(long end) {
        org.apache.kafka.clients.consumer.MockConsumer<String, byte[]> consumer =
                new org.apache.kafka.clients.consumer.MockConsumer<>("earliest");
        onePartition(consumer);
        consumer.updateEndOffsets(Map.of(new TopicPartition("pikv.control", 0), end));
        return consumer;
    }

    /** A listener started on {@link #mockTopic()} whose one record, epoch 3, it has read: ready. */
    org.apache.kafka.clients.consumer.MockConsumer<String, byte[]> readEpochThree() {
        org.apache.kafka.clients.consumer.MockConsumer<String, byte[]> consumer = mockTopic();
        consumer.schedulePollTask(() -> consumer.addRecord(record(0, state("c1", 3, "oldest-page", 0, 0, 1, 1))));
        listenOn(consumer, Duration.ofSeconds(30)).start();
        await().atMost(Duration.ofSeconds(10)).until(listener::ready);
        return consumer;
    }

    byte[] bytes(ControlState state) {
        try {
            return json.writeValueAsBytes(state);
        } catch (com.fasterxml.jackson.core.JsonProcessingException e) {
            throw new IllegalStateException(e);
        }
    }

    @Test
    void aRecordThatLeavesOutPolicyAndBudgetAppliesWithTheConfiguredOnes() throws Exception {
        org.apache.kafka.clients.consumer.MockConsumer<String, byte[]> consumer = mockTopic();
        // First another policy and budget than the configured ones (reject, 4,096 bytes), so that the record after it
        // shows which it falls back to: the configured ones, not those in force before it.
        byte[] other = "{\"version\":1,\"cluster\":\"c1\",\"epoch\":2,\"shardOfExpert\":[0,0,0,0],\"shards\":1,"
                .concat("\"policy\":\"oldest-page\",\"budgetBytes\":8192}").getBytes(java.nio.charset.StandardCharsets.UTF_8);
        consumer.schedulePollTask(() -> consumer.addRecord(new org.apache.kafka.clients.consumer.ConsumerRecord<>(
                "pikv.control", 0, 0L, "c1", other)));
        listenOn(consumer, Duration.ofSeconds(30)).start();
        await().atMost(Duration.ofSeconds(10)).until(listener::ready);
        assertThat(control.epoch()).isEqualTo(2);
        assertThat(control.state().policy()).isEqualTo("oldest-page");
        assertThat(control.state().budgetBytes()).isEqualTo(8192);
        byte[] record = "{\"version\":1,\"cluster\":\"c1\",\"epoch\":3,\"shardOfExpert\":[0,0,0,0],\"shards\":1}"
                .getBytes(java.nio.charset.StandardCharsets.UTF_8);
        consumer.schedulePollTask(() -> consumer.addRecord(new org.apache.kafka.clients.consumer.ConsumerRecord<>(
                "pikv.control", 0, 1L, "c1", record)));
        await().atMost(Duration.ofSeconds(10)).until(() -> control.epoch() == 3);
        assertThat(control.state().policy()).isEqualTo("reject");
        assertThat(policy.activePolicy()).isEqualTo("reject");
        assertThat(control.state().budgetBytes()).isEqualTo(4096);
    }

    @Test
    void anUnreachableBrokerDelaysReadinessByTheStartupWaitOnly() {
        ControlListener l = listener("no-such-broker.invalid:9092", "pikv.control", Duration.ofSeconds(1));
        long started = System.nanoTime(); // the monotonic clock: a wall clock stepped meanwhile must not count
        l.start();
        assertThat(l.ready()).isFalse();
        await().atMost(Duration.ofSeconds(10)).until(l::ready);
        assertThat(Duration.ofNanos(System.nanoTime() - started)).isGreaterThanOrEqualTo(Duration.ofMillis(900))
                .isLessThan(Duration.ofSeconds(7));
        assertThat(l.phase()).isEqualTo(ControlListener.Phase.STARTING);
        // Readiness ends by the clock; the consumer thread's finding is awaited (a slow resolver may take longer).
        await().atMost(Duration.ofSeconds(60)).untilAsserted(() -> {
            assertThat(l.problem()).contains("cannot create the Kafka consumer").contains("No resolvable bootstrap urls");
            assertThat(link.down()).isTrue();
        });
        assertThat(control.state().source()).isEqualTo("config");
    }
}
