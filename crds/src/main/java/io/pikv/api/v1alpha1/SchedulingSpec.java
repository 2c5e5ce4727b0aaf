package io.pikv.api.v1alpha1;

import com.fasterxml.jackson.annotation.JsonInclude;
import com.fasterxml.jackson.annotation.JsonPropertyDescription;
import com.fasterxml.jackson.annotation.JsonPropertyOrder;
import io.fabric8.generator.annotation.Default;
import io.fabric8.generator.annotation.Size;
import io.fabric8.generator.annotation.ValidationRule;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/** Which entries the shards keep when their budget is full, and which policies adaptation may switch to. */
@JsonInclude(JsonInclude.Include.NON_NULL)
@JsonPropertyOrder({"policy", "parameters", "candidates"})
@ValidationRule(value = "self.policy != 'adaptive' || !has(self.candidates) || self.candidates.size() == 0 "
        + "|| self.candidates.size() >= 2",
        message = "adaptive scheduling needs at least two candidates to choose between (or none for all policies)")
public class SchedulingSpec {

    @Default("lru")
    @JsonPropertyDescription("The eviction policy the shards start with: lru, streaming (sinks + recent window), "
            + "h2o (heavy hitters), utility (PiKV's score), lrfu, or adaptive (the shards run the "
            + "first of the candidates; switching between them online is not implemented yet).")
    private SchedulingPolicy policy = SchedulingPolicy.LRU;

    @JsonPropertyDescription("Policy knobs by name: sinks and window (streaming, h2o); attention, recency, frequency "
            + "(utility weights) and recencyScale (utility); halfLife and historyLimit (lrfu); window and margin "
            + "(adaptive). lru has none. Names the policy does not know are rejected.")
    private Map<String, Double> parameters = new LinkedHashMap<>();

    @Size(max = 6)
    @JsonPropertyDescription("Policies that adaptation (the adaptive policy, or the operator's policy tuner) may "
            + "switch between; under a policy other than adaptive, that policy is one of them (list it too: adaptation "
            + "starts from it); empty means all of them under adaptive, and none (the policy is pinned) under any other "
            + "policy.")
    private List<SchedulingPolicy> candidates = new ArrayList<>();

    public SchedulingPolicy getPolicy() {
        return policy;
    }

    public void setPolicy(SchedulingPolicy policy) {
        this.policy = policy;
    }

    public Map<String, Double> getParameters() {
        return parameters;
    }

    public void setParameters(Map<String, Double> parameters) {
        this.parameters = parameters;
    }

    public List<SchedulingPolicy> getCandidates() {
        return candidates;
    }

    public void setCandidates(List<SchedulingPolicy> candidates) {
        this.candidates = candidates;
    }
}
