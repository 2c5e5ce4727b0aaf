package io.pikv.api.v1alpha1;

import com.fasterxml.jackson.annotation.JsonInclude;
import com.fasterxml.jackson.annotation.JsonPropertyDescription;
import com.fasterxml.jackson.annotation.JsonPropertyOrder;
import io.fabric8.kubernetes.api.model.Toleration;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/** Where the shard pods may run: node selection, tolerations and priority (a soft spread over nodes is always on). */
@JsonInclude(JsonInclude.Include.NON_NULL)
@JsonPropertyOrder({"nodeSelector", "tolerations", "priorityClassName"})
public class PlacementSpec {

    @JsonPropertyDescription("Node labels a shard pod's node must have (e.g. a GPU node pool).")
    private Map<String, String> nodeSelector = new LinkedHashMap<>();

    @JsonPropertyDescription("Taints the shard pods tolerate, besides the GPU resource's (added with gpu.enabled).")
    private List<Toleration> tolerations = new ArrayList<>();

    @JsonPropertyDescription("PriorityClass of the shard pods (their KV is lost when they are pre-empted).")
    private String priorityClassName;

    public Map<String, String> getNodeSelector() {
        return nodeSelector;
    }

    public void setNodeSelector(Map<String, String> nodeSelector) {
        this.nodeSelector = nodeSelector;
    }

    public List<Toleration> getTolerations() {
        return tolerations;
    }

    public void setTolerations(List<Toleration> tolerations) {
        this.tolerations = tolerations;
    }

    public String getPriorityClassName() {
        return priorityClassName;
    }

    public void setPriorityClassName(String priorityClassName) {
        this.priorityClassName = priorityClassName;
    }
}
