package io.pikv.api.v1alpha1;

import com.fasterxml.jackson.annotation.JsonInclude;
import com.fasterxml.jackson.annotation.JsonPropertyDescription;
import com.fasterxml.jackson.annotation.JsonPropertyOrder;
import io.fabric8.generator.annotation.Default;
import io.fabric8.generator.annotation.Max;
import io.fabric8.generator.annotation.Min;
import io.fabric8.generator.annotation.ValidationRule;

/**
 * Bounds and targets for changing the shard count from telemetry (the operator's shard autoscaler). The autoscaler
 * is not built yet: the bounds are validated against {@code spec.shards}, and nothing changes the shard count.
 */
@JsonInclude(JsonInclude.Include.NON_NULL)
@JsonPropertyOrder({"enabled", "minShards", "maxShards", "targetMemoryUtilization", "targetHitRate", "cooldownSeconds"})
@ValidationRule(value = "self.minShards <= self.maxShards", message = "minShards must not exceed maxShards")
public class AutoscalingSpec {

    @Default("false")
    @JsonPropertyDescription("Let the operator change spec.shards from memory pressure and miss rate. Not acted on "
            + "yet: the bounds are validated against spec.shards, and the shard count changes only with spec.shards.")
    private Boolean enabled = false;

    @Default("1")
    @Min(1)
    @Max(PiKVClusterSpec.MAX_SHARDS)
    @JsonPropertyDescription("Fewest shards autoscaling may leave.")
    private Integer minShards = 1;

    @Default("8")
    @Min(1)
    @Max(PiKVClusterSpec.MAX_SHARDS)
    @JsonPropertyDescription("Most shards autoscaling may create; above model.experts it counts as model.experts "
            + "(every shard owns at least one expert).")
    private Integer maxShards = 8;

    @Default("0.85")
    @Min(0.05)
    @Max(1)
    @JsonPropertyDescription("Fraction of the per-shard budget in use above which a shard is added.")
    private Double targetMemoryUtilization = 0.85;

    @Default("0.9")
    @Min(0)
    @Max(1)
    @JsonPropertyDescription("Hit rate below which, with memory full, a shard is added.")
    private Double targetHitRate = 0.9;

    @Default("300")
    @Min(0)
    @Max(86400)
    @JsonPropertyDescription("Seconds after a scaling decision before the next one.")
    private Integer cooldownSeconds = 300;

    public Boolean getEnabled() {
        return enabled;
    }

    public void setEnabled(Boolean enabled) {
        this.enabled = enabled;
    }

    public Integer getMinShards() {
        return minShards;
    }

    public void setMinShards(Integer minShards) {
        this.minShards = minShards;
    }

    public Integer getMaxShards() {
        return maxShards;
    }

    public void setMaxShards(Integer maxShards) {
        this.maxShards = maxShards;
    }

    public Double getTargetMemoryUtilization() {
        return targetMemoryUtilization;
    }

    public void setTargetMemoryUtilization(Double targetMemoryUtilization) {
        this.targetMemoryUtilization = targetMemoryUtilization;
    }

    public Double getTargetHitRate() {
        return targetHitRate;
    }

    public void setTargetHitRate(Double targetHitRate) {
        this.targetHitRate = targetHitRate;
    }

    public Integer getCooldownSeconds() {
        return cooldownSeconds;
    }

    public void setCooldownSeconds(Integer cooldownSeconds) {
        this.cooldownSeconds = cooldownSeconds;
    }
}
