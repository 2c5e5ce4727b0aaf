package io.pikv.sidecar.kafka;

import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

import java.time.Duration;
import java.util.HashMap;
import java.util.Map;

/**
 * Client settings of the sidecar's producer and consumer: the shared {@code kafka.*} settings (bootstrap servers,
 * TLS, SASL — Quarkus hands them over without the prefix), kept to the keys each client knows, plus what PiKV
 * requires of each.
 */
public final class KafkaClients {

    private KafkaClients() {
    }

    /**
     * The telemetry producer: idempotent, {@code acks=all}, and no call that blocks longer than
     * {@code sendTimeout}.
     */
    public static Map<String, Object> producer(Map<String, Object> shared, String clientId, Duration sendTimeout) {
        Map<String, Object> p = known(shared, ProducerConfig.configNames());
        // Telemetry is not transactional: a transactional id would make every send fail (never initialised).
        p.remove(ProducerConfig.TRANSACTIONAL_ID_CONFIG);
        long timeout = Math.max(1000, sendTimeout.toMillis());
        p.put(ProducerConfig.CLIENT_ID_CONFIG, clientId);
        p.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, true);
        p.put(ProducerConfig.ACKS_CONFIG, "all");
        p.put(ProducerConfig.LINGER_MS_CONFIG, 0);
        p.put(ProducerConfig.MAX_BLOCK_MS_CONFIG, timeout);
        p.put(ProducerConfig.REQUEST_TIMEOUT_MS_CONFIG, (int) Math.max(500, timeout / 2));
        p.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, (int) timeout);
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        return p;
    }

    /**
     * The control consumer: assigned partitions, no group and no commits (every sidecar reads the whole compacted
     * topic from its start), and it never creates the topic (it is created compacted with the install: docs/install.md).
     */
    public static Map<String, Object> consumer(Map<String, Object> shared, String clientId) {
        Map<String, Object> c = known(shared, ConsumerConfig.configNames());
        c.remove(ConsumerConfig.GROUP_ID_CONFIG);
        c.remove(ConsumerConfig.GROUP_INSTANCE_ID_CONFIG);
        c.put(ConsumerConfig.CLIENT_ID_CONFIG, clientId);
        c.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, false);
        c.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        // A transactional producer's aborted records are not control; end offsets are then the last stable ones.
        c.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed");
        c.put(ConsumerConfig.ALLOW_AUTO_CREATE_TOPICS_CONFIG, false);
        c.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        c.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        return c;
    }

    /**
     * Why the shared {@code kafka.*} settings cannot make the clients at all (a bootstrap address that is not
     * host:port, SASL without its JAAS settings, an unknown security protocol; with {@code producer}, also what the
     * idempotent telemetry producer cannot take: {@code retries=0}, more than 5 requests in flight, an unknown
     * compression type), or null when they can. A consumer is built from them (which connects to nothing) and closed,
     * and the producer's settings are parsed as the producer would parse them (building one would start its network
     * thread). A bootstrap name that does not resolve yet is no reason: the clients retry it (a broker's DNS name may
     * come up after the sidecar). Such settings would otherwise be retried for good, with control given up after its
     * start-up wait and every telemetry record dropped.
     */
    public static String unusable(Map<String, Object> shared, boolean producer, Duration sendTimeout) {
        try (org.apache.kafka.clients.consumer.KafkaConsumer<String, byte[]> probe =
                     new org.apache.kafka.clients.consumer.KafkaConsumer<>(consumer(shared, "pikv-settings-check"))) {
            // built: the shared settings make a client
        } catch (org.apache.kafka.common.KafkaException | IllegalArgumentException e) {
            String why = reason(e);
            if (why != null) {
                return why;
            }
        }
        if (producer) {
            try {
                new ProducerConfig(producer(shared, "pikv-settings-check", sendTimeout));
            } catch (org.apache.kafka.common.KafkaException | IllegalArgumentException e) {
                return reason(e);
            }
        }
        return null;
    }

    /** What a client's construction failure says is wrong, or null for a bootstrap name that does not resolve yet. */
    private static String reason(RuntimeException e) {
        Throwable root = e;
        for (int depth = 0; root != null && depth < 32; depth++) {
            if (root instanceof org.apache.kafka.common.config.ConfigException
                    && String.valueOf(root.getMessage()).contains("No resolvable bootstrap urls")) {
                return null;
            }
            if (root.getCause() == null || root.getCause() == root) {
                break;
            }
            root = root.getCause();
        }
        // The deepest cause says what is wrong ("Failed to create new NetworkClient" above it does not).
        return root.getClass().getSimpleName() + (root.getMessage() == null ? "" : ": " + root.getMessage());
    }

    private static Map<String, Object> known(Map<String, Object> shared, java.util.Set<String> names) {
        Map<String, Object> out = new HashMap<>();
        shared.forEach((k, v) -> {
            if (names.contains(k)) {
                out.put(k, v);
            }
        });
        return out;
    }
}
