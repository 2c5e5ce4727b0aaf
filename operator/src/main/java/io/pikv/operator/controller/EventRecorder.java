package io.pikv.operator.controller;

import io.fabric8.kubernetes.api.model.Event;
import io.fabric8.kubernetes.api.model.EventBuilder;
import io.fabric8.kubernetes.client.KubernetesClient;
import io.fabric8.kubernetes.client.KubernetesClientException;
import io.pikv.api.v1alpha1.PiKVCluster;
import io.quarkus.runtime.ShutdownEvent;
import jakarta.annotation.PreDestroy;
import jakarta.annotation.Priority;
import jakarta.enterprise.context.ApplicationScoped;
import jakarta.enterprise.event.Observes;
import jakarta.interceptor.Interceptor;
import org.jboss.logging.Logger;

import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.time.Duration;
import java.time.Instant;
import java.util.HexFormat;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.RejectedExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;

/**
 * Records the operator's decisions as Kubernetes Events on the PiKVCluster. An event with the same reason and
 * message as an existing one is counted on it (count, lastTimestamp) rather than created again, the way kubectl
 * shows repeated events; its name derives from the cluster, reason and message. Events are written in order by one
 * background thread, so recording costs a reconcile no API round trips; a failure to record is logged and never
 * fails a reconcile. The recorder remembers the events it wrote (the last 4,096), so a new event or a repeat of one it
 * wrote costs one request; only when the server's copy differs (a conflict, or an event gone or written by an
 * earlier operator) does it read that copy first. At shutdown the events already recorded are written before the
 * recorder stops (at most {@link #DRAIN_TIMEOUT}), after the operator has stopped reconciling and while the client is
 * still open: the decisions a reconcile put in status are told too.
 */
@ApplicationScoped
public class EventRecorder {
    private static final Logger LOG = Logger.getLogger(EventRecorder.class);
    public static final String COMPONENT = "pikv-operator";
    public static final String NORMAL = "Normal";
    public static final String WARNING = "Warning";
    private static final int WRITTEN_LIMIT = 4096;
    private static final int HTTP_NOT_FOUND = 404;
    /** Longest object name the API server takes. */
    private static final int MAX_NAME = 253;
    private static final int HTTP_CONFLICT = 409;

    private final KubernetesClient client;
    /** The events this recorder wrote, as the server answered; touched only by {@link #write}, on the writer thread. */
    private final Map<String, Event> written = new LinkedHashMap<>(64, 0.75f, true) {
        @Override
        protected boolean removeEldestEntry(Map.Entry<String, Event> eldest) {
            return size() > WRITTEN_LIMIT;
        }
    };
    /** Events waiting to be written at most: while the API server is away, the oldest go (and are logged). */
    static final int QUEUE_LIMIT = 1024;
    private final ExecutorService writer = new java.util.concurrent.ThreadPoolExecutor(1, 1, 0, TimeUnit.MILLISECONDS,
            new java.util.concurrent.LinkedBlockingQueue<>(QUEUE_LIMIT), r -> {
                Thread t = new Thread(r, "pikv-events");
                t.setDaemon(true);
                return t;
            }, (task, pool) -> {
                if (pool.isShutdown()) {
                    throw new RejectedExecutionException("the event writer is stopped"); // record() says so
                }
                pool.getQueue().poll();
                LOG.warnf("%d events wait to be written (the API server slow or away): the oldest is dropped",
                        QUEUE_LIMIT);
                pool.execute(task);
            });

    public EventRecorder(KubernetesClient client) {
        this.client = client;
    }

    /** How long shutdown waits for the events already recorded to be written (a pod's grace period is 30 s). */
    static final Duration DRAIN_TIMEOUT = Duration.ofSeconds(10);

    /**
     * Drains at shutdown, after the operator's own shutdown observer (the default priority) has stopped the
     * reconcilers, so no reconcile records after the drain, and before beans are destroyed, so the client is open.
     */
    void drainAtShutdown(@Observes @Priority(Interceptor.Priority.APPLICATION + 600) ShutdownEvent event) {
        close();
    }

    /** Stops taking events and writes those already taken, waiting at most {@link #DRAIN_TIMEOUT}; idempotent. */
    @PreDestroy
    void close() {
        close(DRAIN_TIMEOUT);
    }

    void close(Duration timeout) {
        writer.shutdown();
        try {
            if (writer.awaitTermination(timeout.toMillis(), TimeUnit.MILLISECONDS)) {
                return;
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        int left = writer.shutdownNow().size();
        LOG.warnf("operator stopping: %d event(s) not written within %d s (the API server slow or away) are dropped",
                left, timeout.toSeconds());
    }

    /** Waits until every event recorded before this call has been written (or failed): for tests. */
    void awaitWritten(Duration timeout) throws InterruptedException, ExecutionException, TimeoutException {
        writer.submit(() -> { }).get(timeout.toMillis(), TimeUnit.MILLISECONDS);
    }

    public void normal(PiKVCluster cluster, String reason, String message) {
        record(cluster, NORMAL, reason, message);
    }

    public void warning(PiKVCluster cluster, String reason, String message) {
        record(cluster, WARNING, reason, message);
    }

    public void record(PiKVCluster cluster, String type, String reason, String message) {
        String namespace = cluster.getMetadata().getNamespace();
        String clusterName = cluster.getMetadata().getName();
        String uid = cluster.getMetadata().getUid();
        String resourceVersion = cluster.getMetadata().getResourceVersion();
        try {
            writer.execute(() -> write(namespace, clusterName, uid, resourceVersion, type, reason, message));
        } catch (RejectedExecutionException e) {
            LOG.debugf("operator stopping; event %s for %s/%s dropped", reason, namespace, clusterName);
        }
    }

    private void write(String namespace, String clusterName, String uid, String resourceVersion, String type,
                       String reason, String message) {
        String name = eventName(clusterName, uid, type, reason, message);
        String now = Instant.now().toString();
        var events = client.v1().events().inNamespace(namespace);
        String key = namespace + "/" + name;
        try {
            // One request when this recorder knows the server's copy (it wrote it) or that there is none.
            Event known = written.get(key);
            try {
                if (known != null) {
                    written.put(key, events.resource(counted(known, now)).update());
                } else {
                    written.put(key, events.resource(newEvent(namespace, name, clusterName, uid, resourceVersion, type,
                            reason, message, now)).create());
                }
                return;
            } catch (KubernetesClientException e) {
                if (e.getCode() != HTTP_CONFLICT && e.getCode() != HTTP_NOT_FOUND) {
                    throw e;
                }
                written.remove(key); // changed, expired or written by an earlier operator: read the server's copy
            }
            Event existing = events.withName(name).get();
            written.put(key, existing != null ? events.resource(counted(existing, now)).update()
                    : events.resource(newEvent(namespace, name, clusterName, uid, resourceVersion, type, reason,
                            message, now)).create());
        } catch (KubernetesClientException e) {
            written.remove(key);
            LOG.warnf("could not record event %s/%s %s: %s", namespace, clusterName, reason, e.getMessage());
        }
    }

    private static Event counted(Event event, String now) {
        event.setCount(event.getCount() == null ? 2 : event.getCount() + 1);
        event.setLastTimestamp(now);
        return event;
    }

    private static Event newEvent(String namespace, String name, String clusterName, String uid,
                                  String resourceVersion, String type, String reason, String message, String now) {
        return new EventBuilder()
                .withNewMetadata().withName(name).withNamespace(namespace).endMetadata()
                .withNewInvolvedObject()
                .withApiVersion(PiKVCluster.GROUP + "/" + PiKVCluster.VERSION).withKind(PiKVCluster.KIND)
                .withName(clusterName).withNamespace(namespace).withUid(uid)
                .withResourceVersion(resourceVersion)
                .endInvolvedObject()
                .withType(type).withReason(reason).withMessage(truncate(message))
                .withCount(1).withFirstTimestamp(now).withLastTimestamp(now)
                .withNewSource().withComponent(COMPONENT).endSource()
                .withReportingComponent(COMPONENT)
                .build();
    }

    /**
     * {@code <cluster>.<16 hex digits of SHA-256(uid, type, reason, message)>}: the same decision about the same
     * object maps to one Event, and a cluster deleted and created again under its name starts new Events (an event
     * of the old object, which {@code kubectl describe} no longer shows, is never counted up for the new one).
     */
    static String eventName(String cluster, String uid, String type, String reason, String message) {
        try {
            byte[] digest = MessageDigest.getInstance("SHA-256")
                    .digest((uid + "\n" + type + "\n" + reason + "\n" + message).getBytes(StandardCharsets.UTF_8));
            // Within a name's 253 characters whatever the cluster's (the API takes longer PiKVCluster names than the
            // operator does, and a name it refuses is exactly what a SpecRejected event must be able to say).
            String prefix = cluster.length() > MAX_NAME - 17 ? cluster.substring(0, MAX_NAME - 17) : cluster;
            prefix = prefix.replaceAll("[-.]+$", "");
            return prefix + "." + HexFormat.of().formatHex(digest).substring(0, 16);
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
    }

    /** The API server refuses event messages over 1 KiB of UTF-8: cut at a character boundary, marked "...". */
    static String truncate(String message) {
        if (message.getBytes(StandardCharsets.UTF_8).length <= 1024) {
            return message;
        }
        int bytes = 0;
        int end = 0;
        while (end < message.length()) {
            int cp = message.codePointAt(end);
            int size = cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
            if (bytes + size > 1021) {
                break;
            }
            bytes += size;
            end += Character.charCount(cp);
        }
        return message.substring(0, end) + "...";
    }
}
