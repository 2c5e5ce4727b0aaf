package io.pikv.api.v1alpha1;

import com.fasterxml.jackson.annotation.JsonInclude;
import com.fasterxml.jackson.annotation.JsonPropertyDescription;
import com.fasterxml.jackson.annotation.JsonPropertyOrder;

import java.util.Objects;

/** One decision of the operator, as recorded in status and in a Kubernetes Event. */
@JsonInclude(JsonInclude.Include.NON_NULL)
@JsonPropertyOrder({"time", "reason", "message"})
public class Decision {

    @JsonPropertyDescription("When it was taken (RFC 3339).")
    private String time;

    @JsonPropertyDescription("What kind of decision, CamelCase (the Event's reason): SpecApplied, SpecRejected, "
            + "Scaled, ConfigChanged, Rebalanced.")
    private String reason;

    @JsonPropertyDescription("What was decided and why.")
    private String message;

    public Decision() {
    }

    public Decision(String time, String reason, String message) {
        this.time = time;
        this.reason = reason;
        this.message = message;
    }

    public String getTime() {
        return time;
    }

    public void setTime(String time) {
        this.time = time;
    }

    public String getReason() {
        return reason;
    }

    public void setReason(String reason) {
        this.reason = reason;
    }

    public String getMessage() {
        return message;
    }

    public void setMessage(String message) {
        this.message = message;
    }

    @Override
    public boolean equals(Object o) {
        return o instanceof Decision d && Objects.equals(time, d.time) && Objects.equals(reason, d.reason)
                && Objects.equals(message, d.message);
    }

    @Override
    public int hashCode() {
        return Objects.hash(time, reason, message);
    }
}
