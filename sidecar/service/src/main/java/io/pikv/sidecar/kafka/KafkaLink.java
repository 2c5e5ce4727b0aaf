package io.pikv.sidecar.kafka;

import org.apache.kafka.common.KafkaException;

import java.time.Instant;
import java.util.EnumMap;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * What the sidecar knows of its Kafka link, per client: the telemetry producer says so on each send, the control
 * consumer on each check of the topic's end. Down when an enabled client's last attempt failed. The data plane
 * never reads it; health and metrics do.
 */
public class KafkaLink {

    /** The two Kafka clients of a sidecar. */
    public enum Client {
        TELEMETRY,
        CONTROL
    }

    /**
     * @param state {@code disabled}, {@code connecting} (no attempt finished yet), {@code up} or {@code down}
     * @param error the last failure while down
     * @param since when the state was entered
     */
    public record Status(String state, String error, Instant since) {
    }

    private final Map<Client, Status> status = new EnumMap<>(Client.class);

    public KafkaLink() {
        for (Client c : Client.values()) {
            status.put(c, new Status("disabled", null, Instant.now()));
        }
    }

    public synchronized void enabled(Client client) {
        status.put(client, new Status("connecting", null, Instant.now()));
    }

    public synchronized void up(Client client) {
        if (!"up".equals(status.get(client).state())) {
            status.put(client, new Status("up", null, Instant.now()));
        }
    }

    public synchronized void down(Client client, Throwable cause) {
        String error = describe(cause);
        Status before = status.get(client);
        status.put(client, new Status("down", error, "down".equals(before.state()) ? before.since() : Instant.now()));
    }

    public synchronized Status status(Client client) {
        return status.get(client);
    }

    /** Whether an enabled client's last attempt failed. */
    public synchronized boolean down() {
        return status.values().stream().anyMatch(s -> "down".equals(s.state()));
    }

    /** Whether every enabled client's last attempt succeeded (none still connecting, none down). */
    public synchronized boolean up() {
        return used() && status.values().stream().allMatch(s -> "up".equals(s.state()) || "disabled".equals(s.state()));
    }

    /** Whether any client is enabled. */
    public synchronized boolean used() {
        return status.values().stream().anyMatch(s -> !"disabled".equals(s.state()));
    }

    /** Health-check data: {@code kafka} (up, down or disabled) and each client's state and last error. */
    public synchronized Map<String, String> data() {
        Map<String, String> data = new LinkedHashMap<>();
        data.put("kafka", !used() ? "disabled" : down() ? "down" : up() ? "up" : "connecting");
        for (Map.Entry<Client, Status> e : status.entrySet()) {
            String name = e.getKey().name().toLowerCase(java.util.Locale.ROOT);
            data.put(name, e.getValue().state());
            if (e.getValue().error() != null) {
                data.put(name + "Error", e.getValue().error());
                data.put(name + "DownSince", e.getValue().since().toString());
            }
        }
        return data;
    }

    /** The failure in one line: the innermost Kafka exception, or the root cause. */
    public static String describe(Throwable cause) {
        Throwable t = cause;
        Throwable kafka = cause instanceof KafkaException ? cause : null;
        // At most 32 causes deep: a chain that loops back (A to B to A) must not hold this link's monitor for good.
        for (int depth = 0; t.getCause() != null && t.getCause() != t && depth < 32; depth++) {
            t = t.getCause();
            if (t instanceof KafkaException) {
                kafka = t;
            }
        }
        Throwable chosen = kafka != null ? kafka : t;
        return chosen.getClass().getSimpleName() + (chosen.getMessage() == null ? "" : ": " + chosen.getMessage());
    }
}
