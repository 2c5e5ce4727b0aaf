package io.pikv.api.v1alpha1;

import com.fasterxml.jackson.annotation.JsonInclude;
import com.fasterxml.jackson.annotation.JsonPropertyDescription;
import com.fasterxml.jackson.annotation.JsonPropertyOrder;
import io.fabric8.generator.annotation.Default;
import io.fabric8.generator.annotation.Pattern;

/** The two topics of a cluster. */
@JsonInclude(JsonInclude.Include.NON_NULL)
@JsonPropertyOrder({"events", "control"})
public class KafkaTopics {

    /** Kafka's legal topic names. */
    public static final String TOPIC_PATTERN = "^[a-zA-Z0-9._-]{1,249}$";

    /** The sidecar's own defaults ({@code pikv.telemetry.topic}, {@code pikv.control.topic}). */
    public static final String DEFAULT_EVENTS = "pikv.cache-events";
    public static final String DEFAULT_CONTROL = "pikv.control";

    @Default(DEFAULT_EVENTS)
    @Pattern(TOPIC_PATTERN)
    @JsonPropertyDescription("Telemetry: one record per shard per window, keyed <cluster>/<shard>.")
    private String events = DEFAULT_EVENTS;

    @Default(DEFAULT_CONTROL)
    @Pattern(TOPIC_PATTERN)
    @JsonPropertyDescription("Control state (compacted, keyed by cluster): shard map, active policy, budgets.")
    private String control = DEFAULT_CONTROL;

    public String getEvents() {
        return events;
    }

    public void setEvents(String events) {
        this.events = events;
    }

    public String getControl() {
        return control;
    }

    public void setControl(String control) {
        this.control = control;
    }
}
