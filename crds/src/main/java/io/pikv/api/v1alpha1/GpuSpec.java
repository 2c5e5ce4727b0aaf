package io.pikv.api.v1alpha1;

import com.fasterxml.jackson.annotation.JsonInclude;
import com.fasterxml.jackson.annotation.JsonPropertyDescription;
import com.fasterxml.jackson.annotation.JsonPropertyOrder;
import io.fabric8.generator.annotation.Default;
import io.fabric8.generator.annotation.Max;
import io.fabric8.generator.annotation.Size;
import io.fabric8.generator.annotation.Min;
import io.fabric8.generator.annotation.Pattern;

/**
 * GPUs for the shards: enabled, a shard runs with {@code pikv.compute=cuda} and stops at start-up (with the reason)
 * when it cannot use its device, rather than serving from its CPU kernels on a pod sized for a GPU.
 */
@JsonInclude(JsonInclude.Include.NON_NULL)
@JsonPropertyOrder({"enabled", "resourceName", "perShard", "runtimeClassName"})
public class GpuSpec {

    /** The resource name a GPU spec defaults to (the CRD's default, and the operator's for a resource without one). */
    public static final String DEFAULT_RESOURCE_NAME = "nvidia.com/gpu";

    @Default("false")
    @JsonPropertyDescription("Request GPUs for every shard pod.")
    private Boolean enabled = false;

    @Default("nvidia.com/gpu")
    @Pattern("^[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
    @JsonPropertyDescription("Extended resource name of the GPU device plugin: an NVIDIA one, nvidia.com/gpu or an "
            + "nvidia.com MIG resource (the shards attend through CUDA).")
    private String resourceName = DEFAULT_RESOURCE_NAME;

    @Default("1")
    @Min(1)
    @Max(16)
    @JsonPropertyDescription("GPUs per shard pod; with the GPU enabled 1, since a shard attends on one device (for "
            + "more GPUs, run more shards).")
    private Integer perShard = 1;

    @Size(max = 253)
    @Pattern("^([a-z0-9]([-a-z0-9.]*[a-z0-9])?)?$")
    @JsonPropertyDescription("RuntimeClass of the shard pods when the GPU is enabled, for clusters whose NVIDIA "
            + "container runtime is not the default handler (e.g. nvidia); none by default (empty: none).")
    private String runtimeClassName;

    public Boolean getEnabled() {
        return enabled;
    }

    public void setEnabled(Boolean enabled) {
        this.enabled = enabled;
    }

    public String getResourceName() {
        return resourceName;
    }

    public void setResourceName(String resourceName) {
        this.resourceName = resourceName;
    }

    public Integer getPerShard() {
        return perShard;
    }

    public void setPerShard(Integer perShard) {
        this.perShard = perShard;
    }

    public String getRuntimeClassName() {
        return runtimeClassName;
    }

    public void setRuntimeClassName(String runtimeClassName) {
        this.runtimeClassName = runtimeClassName;
    }
}
