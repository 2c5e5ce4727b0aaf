package io.pikv.sidecar.kafka;

import com.fasterxml.jackson.databind.ObjectMapper;
import io.micrometer.core.instrument.Gauge;
import io.micrometer.core.instrument.MeterRegistry;
import io.pikv.kv.ShardStats;
import io.pikv.sidecar.BlockStore;
import io.pikv.sidecar.PolicyReport;
import io.pikv.sidecar.Sidecar;
import io.pikv.sidecar.SidecarConfig;
import io.pikv.sidecar.control.ControlListener;
import io.pikv.sidecar.telemetry.TelemetryPublisher;
import io.quarkus.runtime.ShutdownEvent;
import io.quarkus.runtime.StartupEvent;
import io.smallrye.common.annotation.Identifier;
import jakarta.enterprise.context.ApplicationScoped;
import jakarta.enterprise.event.Observes;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.jboss.logging.Logger;

import java.util.Map;
import java.util.Optional;

/**
 * The sidecar's two Kafka clients, started with the application when enabled: the telemetry publisher (out) and
 * the control listener (in), both on the shared {@code kafka.*} settings, and the link state they report.
 */
@ApplicationScoped
public class SidecarKafka {
    private final SidecarConfig config;
    private final Sidecar sidecar;
    private final MeterRegistry registry;
    private final ObjectMapper json;
    private final Map<String, Object> kafka;
    private static final Logger LOG = Logger.getLogger(SidecarKafka.class);
    private final KafkaLink link = new KafkaLink();
    private TelemetryPublisher telemetry;
    private ControlListener control;

    public SidecarKafka(SidecarConfig config, Sidecar sidecar, MeterRegistry registry, ObjectMapper json,
                        @Identifier("default-kafka-broker") Map<String, Object> kafka) {
        this.config = config;
        this.sidecar = sidecar;
        this.registry = registry;
        this.json = json;
        this.kafka = kafka;
    }

    /**
     * First of the start-up observers (the sidecar's own threads start after it): settings that stop start-up here stop
     * it before anything runs, and a client made before a later one failed is closed with the failure.
     */
    void start(@Observes @jakarta.annotation.Priority(1000) StartupEvent event) {
        // The sidecar is built first (an application-scoped bean is made on its first call): a setting it refuses
        // stops start-up with its own message, and a failure below closes a sidecar that exists.
        sidecar.config();
        try {
            startClients();
        } catch (RuntimeException | Error e) {
            try {
                stop(null);
            } catch (RuntimeException closing) {
                e.addSuppressed(closing);
            }
            try {
                sidecar.closeAfterAFailedStart(); // no shutdown will close it: Quarkus runs none for a failed start
            } catch (RuntimeException closing) {
                e.addSuppressed(closing);
            }
            throw e;
        }
    }

    private void startClients() {
        Gauge.builder("pikv.kafka.up", link, l -> !l.used() ? Double.NaN : l.up() ? 1 : 0)
                .description("1 when every enabled Kafka client's last attempt succeeded, 0 when one failed or has "
                        + "not finished its first")
                .strongReference(true).register(registry);
        String client = "pikv-" + config.cluster() + "-" + config.shardId();
        boolean telemetryOn = config.telemetry().enabled() && config.role() != io.pikv.sidecar.Role.gateway;
        if (config.control().enabled() || telemetryOn) {
            String unusable = KafkaClients.unusable(kafka, telemetryOn, config.telemetry().sendTimeout());
            if (unusable != null) {
                throw new IllegalStateException("invalid configuration kafka.* (KAFKA_* variables): no Kafka client can "
                        + "be made with these settings: " + unusable + "; fix them, or turn control and telemetry off "
                        + "(pikv.control.enabled, pikv.telemetry.enabled)");
            }
        }
        if (config.control().enabled()) {
            control = new ControlListener(config.control().topic(), sidecar.control(), config.control().startupWait(),
                    () -> new KafkaConsumer<>(KafkaClients.consumer(kafka, client + "-control")), json, registry, link);
            ControlListener listener = control;
            sidecar.servingGate(listener::servingRefusal);
            sidecar.manualMapGate(listener::manualMapRefusal);
            control.start();
        }
        if (config.telemetry().enabled() && config.role() == io.pikv.sidecar.Role.gateway) {
            // A gateway stores nothing: its shards publish the cluster's telemetry (a gateway's records would take
            // the key of the shard whose id it happens to have).
            LOG.infof("telemetry: off on a gateway; its shards publish telemetry");
        } else if (config.telemetry().enabled()) {
            SidecarConfig.Telemetry t = config.telemetry();
            TelemetryPublisher.Settings settings = new TelemetryPublisher.Settings(t.topic(), config.cluster(),
                    config.shardId(), sidecar.shape().experts(), t.window(), t.bufferRecords(), t.sendTimeout());
            telemetry = new TelemetryPublisher(settings, new TelemetryPublisher.Source() {
                @Override
                public ShardStats stats() {
                    return sidecar.shard().stats();
                }

                @Override
                public PolicyReport policy() {
                    return sidecar.shard().policy();
                }

                @Override
                public BlockStore.Stats blocks() {
                    return sidecar.blocks().stats();
                }

                @Override
                public long epoch() {
                    return sidecar.control().epoch();
                }

                @Override
                public <T> T consistent(java.util.function.Supplier<T> read) {
                    return sidecar.control().consistent(read);
                }
            }, () -> new KafkaProducer<>(KafkaClients.producer(kafka, client + "-telemetry", t.sendTimeout())), json,
                    registry, link);
            telemetry.start();
        }
    }

    /** Before the shard closes (observers of a lower priority run first), so the last window sees its contents. */
    void stop(@Observes @jakarta.annotation.Priority(1000) ShutdownEvent event) {
        try {
            if (telemetry != null) {
                telemetry.close();
            }
        } finally {
            if (control != null) {
                control.close(); // also when telemetry's close failed: the consumer thread must not outlive the shard
            }
        }
    }

    public KafkaLink link() {
        return link;
    }

    public Optional<TelemetryPublisher> telemetry() {
        return Optional.ofNullable(telemetry);
    }

    public Optional<ControlListener> control() {
        return Optional.ofNullable(control);
    }
}
