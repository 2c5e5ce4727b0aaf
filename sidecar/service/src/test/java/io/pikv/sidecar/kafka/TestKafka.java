package io.pikv.sidecar.kafka;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.common.config.TopicConfig;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;
import org.apache.kafka.common.test.KafkaClusterTestKit;
import org.apache.kafka.common.test.TestKitNodes;

import java.util.List;
import java.util.Map;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * One real Kafka broker (KRaft, combined broker + controller, in-process) for the whole test JVM, started on first
 * use and closed when the JVM exits. Topics are never created implicitly, so a test can make a topic be missing;
 * the sidecar's default topics exist from the start.
 *
 * <p>{@code @QuarkusTest} classes load this class again in Quarkus's class loader; that copy asks the one in the
 * system class loader, so both kinds of test share the broker, which lives outside any application's class loader.
 */
public final class TestKafka {
    public static final String TELEMETRY_TOPIC = "pikv.cache-events";
    public static final String CONTROL_TOPIC = "pikv.control";
    private static final AtomicInteger NAMES = new AtomicInteger();
    private static KafkaClusterTestKit cluster;

    private TestKafka() {
    }

    public static String bootstrap() {
        ClassLoader system = ClassLoader.getSystemClassLoader();
        if (TestKafka.class.getClassLoader() != system) {
            try {
                return (String) system.loadClass(TestKafka.class.getName()).getMethod("bootstrap").invoke(null);
            } catch (ClassNotFoundException e) {
                // Test classes not on the system class path (some IDE runners): a broker of this loader's own.
            } catch (ReflectiveOperationException e) {
                throw new IllegalStateException("cannot reach the test Kafka broker of the system class loader", e);
            }
        }
        return start();
    }

    private static synchronized String start() {
        if (cluster == null) {
            // The broker loads plugins through the context class loader, and its threads inherit it: make it ours,
            // not the application's that happens to ask first.
            Thread thread = Thread.currentThread();
            ClassLoader context = thread.getContextClassLoader();
            thread.setContextClassLoader(TestKafka.class.getClassLoader());
            try {
                // A broker that fails while the test JVM shuts down must not halt it with a non-zero code (Surefire
                // would call the fork broken although every test passed): log instead.
                org.apache.kafka.common.utils.Exit.setHaltProcedure((code, message) ->
                        System.err.printf("test Kafka broker asked to halt (%d): %s%n", code, message));
                org.apache.kafka.common.utils.Exit.setExitProcedure((code, message) ->
                        System.err.printf("test Kafka broker asked to exit (%d): %s%n", code, message));
                long start = System.nanoTime();
                KafkaClusterTestKit kit = startBroker();
                cluster = kit;
                Runtime.getRuntime().addShutdownHook(new Thread(TestKafka::shutdown, "test-kafka-stop"));
                createTopic(kit.bootstrapServers(), TELEMETRY_TOPIC, false);
                createTopic(kit.bootstrapServers(), CONTROL_TOPIC, true);
                System.out.printf("test Kafka broker at %s up in %d ms%n", kit.bootstrapServers(),
                        (System.nanoTime() - start) / 1_000_000);
            } catch (Exception e) {
                throw new IllegalStateException("cannot start the test Kafka broker", e);
            } finally {
                thread.setContextClassLoader(context);
            }
        }
        return cluster.bootstrapServers();
    }

    /**
     * A broker of its own, for a test that stops it; the caller closes it. Topics are created explicitly only.
     */
    public static KafkaClusterTestKit startBroker() throws Exception {
        KafkaClusterTestKit kit = new KafkaClusterTestKit.Builder(new TestKitNodes.Builder()
                .setCombined(true).setNumBrokerNodes(1).setNumControllerNodes(1).build())
                .setConfigProp("offsets.topic.replication.factor", "1")
                .setConfigProp("transaction.state.log.replication.factor", "1")
                .setConfigProp("transaction.state.log.min.isr", "1")
                .setConfigProp("group.initial.rebalance.delay.ms", "0")
                .setConfigProp("auto.create.topics.enable", "false")
                .build();
        kit.format();
        kit.startup();
        kit.waitForReadyBrokers();
        return kit;
    }

    /** A topic name no other test uses. */
    public static String uniqueTopic(String prefix) {
        return prefix + "-" + NAMES.incrementAndGet() + "-" + ProcessHandle.current().pid();
    }

    /** Creates a one-partition topic, compacted when asked (as the operator creates the control topic). */
    public static void createTopic(String name, boolean compacted) {
        createTopic(bootstrap(), name, compacted);
    }

    public static void createTopic(String bootstrap, String name, boolean compacted) {
        try (Admin admin = Admin.create(Map.of(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap))) {
            NewTopic topic = new NewTopic(name, 1, (short) 1);
            if (compacted) {
                topic.configs(Map.of(TopicConfig.CLEANUP_POLICY_CONFIG, TopicConfig.CLEANUP_POLICY_COMPACT));
            }
            admin.createTopics(List.of(topic)).all().get();
        } catch (Exception e) {
            throw new IllegalStateException("cannot create topic " + name, e);
        }
    }

    public static KafkaProducer<String, String> producer() {
        return new KafkaProducer<>(Map.of(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap(),
                ProducerConfig.ACKS_CONFIG, "all",
                ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName(),
                ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName()));
    }

    public static KafkaConsumer<String, String> consumer() {
        return new KafkaConsumer<>(Map.of(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap(),
                ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false",
                ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest",
                ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName(),
                ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName()));
    }

    private static synchronized void shutdown() {
        try {
            cluster.close();
        } catch (Exception e) {
            System.err.println("test Kafka broker did not close cleanly: " + e);
        }
    }
}
