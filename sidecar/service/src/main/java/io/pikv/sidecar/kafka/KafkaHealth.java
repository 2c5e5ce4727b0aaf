package io.pikv.sidecar.kafka;

import io.pikv.sidecar.Sidecar;
import io.pikv.sidecar.control.ControlListener;
import io.pikv.sidecar.control.ShardControl;
import io.smallrye.health.api.HealthGroup;
import jakarta.enterprise.context.ApplicationScoped;
import jakarta.enterprise.inject.Produces;
import org.eclipse.microprofile.health.HealthCheck;
import org.eclipse.microprofile.health.HealthCheckResponse;
import org.eclipse.microprofile.health.HealthCheckResponseBuilder;
import org.eclipse.microprofile.health.Readiness;

import java.util.Locale;

/**
 * Health of the sidecar's Kafka side.
 *
 * <ul>
 *   <li>{@code pikv-control} (readiness): DOWN until the control topic has been read to its end, or the start-up
 *       wait has passed while it could not be read; UP ever after.</li>
 *   <li>{@code pikv-kafka} (readiness): always UP, with {@code kafka: up|down|disabled} and each client's state in
 *       its data. A lost broker does not take the shard out of service: its KV and attention do not need Kafka,
 *       and a telemetry outage must not become a cache outage. It degrades the shard (telemetry buffers, control
 *       changes wait), which the data, {@code pikv_kafka_up} and the {@code kafka} group show.</li>
 *   <li>{@code pikv-kafka} in group {@code kafka} ({@code /q/health/group/kafka}): DOWN while the link is down, for
 *       monitors.</li>
 * </ul>
 */
@ApplicationScoped
public class KafkaHealth {
    private final SidecarKafka kafka;
    private final Sidecar sidecar;

    public KafkaHealth(SidecarKafka kafka, Sidecar sidecar) {
        this.kafka = kafka;
        this.sidecar = sidecar;
    }

    @Produces
    @Readiness
    HealthCheck control() {
        return () -> {
            ShardControl.State state = sidecar.control().state();
            HealthCheckResponseBuilder b = HealthCheckResponse.named("pikv-control")
                    .withData("epoch", state.epoch()).withData("source", state.source());
            if (kafka.control().isEmpty()) {
                return b.withData("control", "disabled").up().build();
            }
            ControlListener listener = kafka.control().get();
            b.withData("topic", listener.topic()).withData("phase", listener.phase().name().toLowerCase(Locale.ROOT));
            if (listener.problem() != null) {
                b.withData("problem", listener.problem());
            }
            if (listener.phase() != ControlListener.Phase.CAUGHT_UP) {
                b.withData("readyAt", listener.deadline().toString());
            }
            return b.status(listener.ready()).build();
        };
    }

    @Produces
    @Readiness
    HealthCheck link() {
        return () -> withLink(HealthCheckResponse.named("pikv-kafka")).up().build();
    }

    @Produces
    @HealthGroup("kafka")
    HealthCheck linkGroup() {
        return () -> withLink(HealthCheckResponse.named("pikv-kafka")).status(!kafka.link().down()).build();
    }

    private HealthCheckResponseBuilder withLink(HealthCheckResponseBuilder b) {
        kafka.link().data().forEach(b::withData);
        kafka.telemetry().ifPresent(t -> b.withData("telemetryBuffered", t.buffer().depth())
                .withData("telemetryDropped", t.buffer().dropped()));
        return b;
    }
}
