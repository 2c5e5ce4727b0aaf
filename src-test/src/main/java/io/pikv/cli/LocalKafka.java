package io.pikv.cli;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.config.TopicConfig;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.test.KafkaClusterTestKit;
import org.apache.kafka.common.test.TestKitNodes;

import java.util.List;
import java.util.Map;

/**
 * A real Kafka broker (KRaft, one combined broker + controller) inside this JVM, on a loopback port, with the
 * sidecar's two topics: {@code pikv.cache-events} and the compacted {@code pikv.control}. For the benchmarks.
 */
public final class LocalKafka implements AutoCloseable {
    public static final String TELEMETRY_TOPIC = "pikv.cache-events";
    public static final String CONTROL_TOPIC = "pikv.control";

    private final KafkaClusterTestKit cluster;
    /**
     * What the broker asked for when it failed for good (a halt or an exit, which are turned into this record here so
     * that they do not end the JVM); null while it runs. Kafka's halt and exit procedures are global, as this is.
     */
    private static volatile String failure;

    private final java.util.concurrent.atomic.AtomicBoolean closed = new java.util.concurrent.atomic.AtomicBoolean();
    private final java.util.concurrent.CountDownLatch stopped = new java.util.concurrent.CountDownLatch(1);
    private volatile Thread onExit;

    private LocalKafka(KafkaClusterTestKit cluster) {
        this.cluster = cluster;
    }

    /**
     * Stops the broker (and deletes its directory) when the JVM exits before {@link #close} (Ctrl-C), for a command
     * with no stop sequence of its own; the playground orders its own (operator, sidecars, then the broker).
     */
    public LocalKafka closeOnExit() {
        Thread hook = new Thread(() -> {
            try {
                close();
            } catch (RuntimeException e) {
                System.err.println("(" + e.getMessage() + ")");
            }
        }, "pikv-local-kafka-stop");
        Runtime.getRuntime().addShutdownHook(hook);
        onExit = hook;
        return this;
    }

    /** The broker's fatal-fault handler (tests give it a fault). */
    org.apache.kafka.common.test.MockFaultHandler faults() {
        return cluster.fatalFaultHandler();
    }

    /**
     * Why the broker stopped by itself, or null while it runs: it asked the JVM to halt or exit, or it met a fatal
     * fault (the test kit's fault handler records those instead of halting, and the broker stops serving).
     */
    public String failure() {
        if (failure != null) {
            return failure;
        }
        Exception fatal = cluster.fatalFaultHandler().firstException();
        return fatal == null ? null : "a fatal fault: " + fatal.getMessage();
    }

    public static LocalKafka start() {
        // The broker logs through SLF4J, which has no provider here: without this it warns of that on every start.
        if (System.getProperty("slf4j.internal.verbosity") == null) {
            System.setProperty("slf4j.internal.verbosity", "ERROR");
        }
        // The broker lives inside the benchmark: a broker failure must not halt the benchmark's JVM.
        failure = null;
        org.apache.kafka.common.utils.Exit.setHaltProcedure((code, message) -> {
            failure = "it asked to halt (" + code + "): " + message;
            System.err.printf("local Kafka broker asked to halt (%d): %s%n", code, message);
        });
        org.apache.kafka.common.utils.Exit.setExitProcedure((code, message) -> {
            failure = "it asked to exit (" + code + "): " + message;
            System.err.printf("local Kafka broker asked to exit (%d): %s%n", code, message);
        });
        KafkaClusterTestKit kit = null;
        java.nio.file.Path dir = null;
        // While the broker starts (seconds), a Ctrl-C ends the JVM before anyone holds it to close: this hook closes
        // what was started and deletes the directory; once started, the caller's stop (or closeOnExit) does.
        java.util.concurrent.atomic.AtomicReference<KafkaClusterTestKit> starting =
                new java.util.concurrent.atomic.AtomicReference<>();
        java.util.concurrent.atomic.AtomicReference<java.nio.file.Path> startingDir =
                new java.util.concurrent.atomic.AtomicReference<>();
        Thread whileStarting = new Thread(() -> {
            Exception cleanUp = abandon(starting.get(), startingDir.get());
            if (cleanUp != null) {
                System.err.println("(local Kafka broker: " + cleanUp.getMessage() + ")");
            }
        }, "pikv-local-kafka-start");
        try {
            Runtime.getRuntime().addShutdownHook(whileStarting);
        } catch (IllegalStateException shuttingDown) {
            throw new Main.RunFailure("stopped while starting"); // a signal came before anything was started
        }
        try {
            // A directory of our own, which only the kit's close() deletes: without one the kit takes a temp
            // directory that Kafka's own exit hook deletes, on Ctrl-C while the broker still runs (stopped last).
            dir = java.nio.file.Files.createTempDirectory("pikv-kafka-");
            startingDir.set(dir);
            kit = new KafkaClusterTestKit.Builder(new TestKitNodes.Builder().setBaseDirectory(dir)
                    .setCombined(true).setNumBrokerNodes(1).setNumControllerNodes(1).build())
                    .setConfigProp("offsets.topic.replication.factor", "1")
                    .setConfigProp("transaction.state.log.replication.factor", "1")
                    .setConfigProp("transaction.state.log.min.isr", "1")
                    .setConfigProp("group.initial.rebalance.delay.ms", "0")
                    .setConfigProp("auto.create.topics.enable", "false")
                    .build();
            starting.set(kit);
            // The formatter prints its own progress line on standard output, amid the command's table.
            java.io.PrintStream stdout = System.out;
            System.setOut(new java.io.PrintStream(java.io.OutputStream.nullOutputStream()));
            try {
                kit.format();
            } finally {
                System.setOut(stdout);
            }
            KafkaClusterTestKit started = kit;
            within("the broker's start", START_SECONDS, () -> {
                started.startup();
                started.waitForReadyBrokers();
            });
            LocalKafka kafka = new LocalKafka(kit);
            kafka.createTopic(TELEMETRY_TOPIC, false);
            kafka.createTopic(CONTROL_TOPIC, true);
            return kafka;
        } catch (Exception e) {
            // A broker half started must not keep its threads and files in this JVM.
            Exception cleanUp = abandon(kit, dir);
            if (cleanUp != null) {
                e.addSuppressed(cleanUp);
            }
            if (Main.shuttingDown()) { // Ctrl-C: the start-up hook closed the broker under it, which is no failure
                throw new Main.RunFailure("stopped while starting", e);
            }
            throw new Main.RunFailure("cannot start a local Kafka broker: " + e.getMessage(), e);
        } finally {
            Main.removeShutdownHook(whileStarting);
        }
    }

    /**
     * Closes a broker whose start was cut short (its close deletes its directory), or deletes the directory when no
     * broker was built; returns what went wrong doing so, or null.
     */
    private static Exception abandon(KafkaClusterTestKit kit, java.nio.file.Path dir) {
        try {
            if (kit != null) {
                within("closing the broker", STOP_SECONDS, kit::close);
            } else if (dir != null) {
                String kept = DirTree.delete(dir);
                if (kept != null) {
                    return new java.io.IOException("could not remove " + dir + ": " + kept);
                }
            }
            return null;
        } catch (Exception e) {
            return e;
        }
    }

    /** The longest a broker may take to start, and to stop: the broker's own waits for either have no limit. */
    static final int START_SECONDS = 120;
    static final int STOP_SECONDS = 30;

    private interface Step {
        void run() throws Exception;
    }

    /**
     * Runs {@code step} on a daemon thread and waits at most {@code seconds} for it: a broker that hangs (a fatal error
     * in its start, whose halt is only printed here) fails the command with a sentence instead of holding it forever.
     */
    private static void within(String what, int seconds, Step step) throws Exception {
        java.util.concurrent.FutureTask<Void> task = new java.util.concurrent.FutureTask<>(() -> {
            step.run();
            return null;
        });
        Thread thread = new Thread(task, "pikv-local-kafka-step");
        thread.setDaemon(true);
        thread.start();
        try {
            task.get(seconds, java.util.concurrent.TimeUnit.SECONDS);
        } catch (java.util.concurrent.TimeoutException e) {
            throw new java.util.concurrent.TimeoutException(what + " did not finish within " + seconds + " s");
        } catch (java.util.concurrent.ExecutionException e) {
            if (e.getCause() instanceof Exception cause) {
                throw cause;
            }
            throw e;
        }
    }

    public String bootstrapServers() {
        return cluster.bootstrapServers();
    }

    private void createTopic(String name, boolean compacted) throws Exception {
        try (Admin admin = Admin.create(Map.of(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrapServers()))) {
            NewTopic topic = new NewTopic(name, 1, (short) 1);
            if (compacted) {
                topic.configs(Map.of(TopicConfig.CLEANUP_POLICY_CONFIG, TopicConfig.CLEANUP_POLICY_COMPACT));
            }
            admin.createTopics(List.of(topic)).all().get();
        }
    }

    /** Records in the topic's single partition (its end offset). */
    public long records(String topic) {
        try (KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(Map.of(
                ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrapServers(),
                ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName(),
                ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName()))) {
            TopicPartition partition = new TopicPartition(topic, 0);
            return consumer.endOffsets(List.of(partition)).get(partition);
        }
    }

    /**
     * Stops the broker and deletes its directory; once only (a later call waits for the first to finish: the exit
     * hook must not let the JVM halt while the main thread's close is still deleting).
     */
    @Override
    public void close() {
        if (!closed.compareAndSet(false, true)) {
            try {
                stopped.await(30, java.util.concurrent.TimeUnit.SECONDS);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
            return;
        }
        Thread hook = onExit;
        if (hook != null && hook != Thread.currentThread()) {
            Main.removeShutdownHook(hook); // (exiting: the hook runs, and finds the broker closed)
        }
        // A fatal fault the broker met is told by failure() (the playground's watch says it): closing stops the broker
        // whatever it met, rather than failing with that fault again.
        cluster.fatalFaultHandler().setIgnore(true);
        try {
            within("stopping the broker", STOP_SECONDS, cluster::close);
        } catch (Exception e) {
            throw new Main.RunFailure("cannot stop the local Kafka broker: " + e.getMessage(), e);
        } finally {
            stopped.countDown();
        }
    }
}
