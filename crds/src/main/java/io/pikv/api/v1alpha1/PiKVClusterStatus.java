package io.pikv.api.v1alpha1;

import com.fasterxml.jackson.annotation.JsonInclude;
import com.fasterxml.jackson.annotation.JsonPropertyDescription;
import com.fasterxml.jackson.annotation.JsonPropertyOrder;
import io.fabric8.kubernetes.api.model.Condition;
import io.fabric8.kubernetes.model.annotation.LabelSelector;
import io.fabric8.kubernetes.model.annotation.StatusReplicas;

import java.util.ArrayList;
import java.util.List;

/** What the operator observed and decided for a PiKV cluster. */
@JsonInclude(JsonInclude.Include.NON_NULL)
@JsonPropertyOrder({"observedGeneration", "conditions", "desiredShards", "shards", "readyShards", "updatedShards",
    "lastProgressTime", "selector", "hitRate", "activePolicy", "shardMapEpoch", "lastRebalance", "lastDecision",
    "configHash", "lastValidGeneration", "lastValidSpec"})
public class PiKVClusterStatus {

    /** Condition types. */
    public static final String READY = "Ready";
    public static final String PROGRESSING = "Progressing";
    public static final String DEGRADED = "Degraded";
    public static final String REBALANCING = "Rebalancing";
    /** kstatus's names (Flux, kpt): Progressing and a Degraded that needs a person, restated. */
    public static final String RECONCILING = "Reconciling";
    public static final String STALLED = "Stalled";

    @JsonPropertyDescription("The metadata.generation this status describes.")
    private Long observedGeneration;

    @JsonPropertyDescription("Ready (all shards of the running spec ready), Progressing (a rollout or scaling is "
            + "under way), Degraded (the spec is invalid or a reconcile failed, and the last valid spec keeps running; "
            + "or the shards have not all been ready and none has progressed for the operator's progress deadline), "
            + "Rebalancing (the control state changed — its epoch: the shard map, or the policy, its parameters or the "
            + "budget beside it — and not all shards are ready yet); Reconciling and Stalled restate "
            + "Progressing and a Degraded that needs a person (an invalid spec, the progress deadline, a name taken) for kstatus "
            + "tools (never both true).")
    private List<Condition> conditions = new ArrayList<>();

    @JsonPropertyDescription("Shards of the spec being run (the last valid one).")
    private Integer desiredShards;

    @StatusReplicas
    @JsonPropertyDescription("Shard pods that exist (the StatefulSet's replicas); the scale subresource's status.")
    private Integer shards;

    @JsonPropertyDescription("Shard pods that pass their readiness probe.")
    private Integer readyShards;

    @JsonPropertyDescription("Shard pods that run the current pod template (the StatefulSet's updatedReplicas).")
    private Integer updatedShards;

    @JsonPropertyDescription("When the shards last progressed (RFC 3339): a new running config or shard count, or "
            + "more pods that exist, run the current template or are ready; also when a cluster that was all ready "
            + "lost a ready pod (the progress deadline counts from then).")
    private String lastProgressTime;

    @LabelSelector
    @JsonPropertyDescription("Label selector of the shard pods, for the scale subresource (HPA, KEDA).")
    private String selector;

    @JsonPropertyDescription("Fraction of KV lookups that found their entry resident over the last telemetry "
            + "window. Not yet set: this operator does not consume the shards' telemetry yet.")
    private Double hitRate;

    @JsonPropertyDescription("The eviction policy the shards run.")
    private String activePolicy;

    @JsonPropertyDescription("Epoch of the control state the operator computed (the expert-to-shard map with the "
            + "policy, its parameters and the budget; kept in the ConfigMap's control-state.json, not yet published "
            + "to the shards); it grows whenever any of them changes.")
    private Long shardMapEpoch;

    @JsonPropertyDescription("When the control state (its epoch: the shard map, the policy, its parameters or "
            + "the budget) last changed (RFC 3339).")
    private String lastRebalance;

    @JsonPropertyDescription("The operator's last decision for this cluster.")
    private Decision lastDecision;

    @JsonPropertyDescription("Hash of the shard pod template (the rendered sidecar settings, image, resources and "
            + "the rest); the shard pods carry it as the pikv.io/config-hash annotation, so a change rolls them.")
    private String configHash;

    @JsonPropertyDescription("The generation whose spec is running (the last valid one).")
    private Long lastValidGeneration;

    @JsonPropertyDescription("The running spec as JSON: what the operator keeps applying while the current spec "
            + "is invalid, across operator restarts.")
    private String lastValidSpec;

    public Long getObservedGeneration() {
        return observedGeneration;
    }

    public void setObservedGeneration(Long observedGeneration) {
        this.observedGeneration = observedGeneration;
    }

    public List<Condition> getConditions() {
        return conditions;
    }

    public void setConditions(List<Condition> conditions) {
        this.conditions = conditions;
    }

    public Integer getDesiredShards() {
        return desiredShards;
    }

    public void setDesiredShards(Integer desiredShards) {
        this.desiredShards = desiredShards;
    }

    public Integer getShards() {
        return shards;
    }

    public void setShards(Integer shards) {
        this.shards = shards;
    }

    public Integer getReadyShards() {
        return readyShards;
    }

    public void setReadyShards(Integer readyShards) {
        this.readyShards = readyShards;
    }

    public Integer getUpdatedShards() {
        return updatedShards;
    }

    public void setUpdatedShards(Integer updatedShards) {
        this.updatedShards = updatedShards;
    }

    public String getLastProgressTime() {
        return lastProgressTime;
    }

    public void setLastProgressTime(String lastProgressTime) {
        this.lastProgressTime = lastProgressTime;
    }

    public String getSelector() {
        return selector;
    }

    public void setSelector(String selector) {
        this.selector = selector;
    }

    public Double getHitRate() {
        return hitRate;
    }

    public void setHitRate(Double hitRate) {
        this.hitRate = hitRate;
    }

    public String getActivePolicy() {
        return activePolicy;
    }

    public void setActivePolicy(String activePolicy) {
        this.activePolicy = activePolicy;
    }

    public Long getShardMapEpoch() {
        return shardMapEpoch;
    }

    public void setShardMapEpoch(Long shardMapEpoch) {
        this.shardMapEpoch = shardMapEpoch;
    }

    public String getLastRebalance() {
        return lastRebalance;
    }

    public void setLastRebalance(String lastRebalance) {
        this.lastRebalance = lastRebalance;
    }

    public Decision getLastDecision() {
        return lastDecision;
    }

    public void setLastDecision(Decision lastDecision) {
        this.lastDecision = lastDecision;
    }

    public String getConfigHash() {
        return configHash;
    }

    public void setConfigHash(String configHash) {
        this.configHash = configHash;
    }

    public Long getLastValidGeneration() {
        return lastValidGeneration;
    }

    public void setLastValidGeneration(Long lastValidGeneration) {
        this.lastValidGeneration = lastValidGeneration;
    }

    public String getLastValidSpec() {
        return lastValidSpec;
    }

    public void setLastValidSpec(String lastValidSpec) {
        this.lastValidSpec = lastValidSpec;
    }

    /** The condition of this type, or null. */
    public Condition condition(String type) {
        for (Condition c : conditions) {
            if (type.equals(c.getType())) {
                return c;
            }
        }
        return null;
    }
}
