package io.pikv.api.v1alpha1;

import com.fasterxml.jackson.annotation.JsonInclude;
import com.fasterxml.jackson.annotation.JsonPropertyDescription;
import com.fasterxml.jackson.annotation.JsonPropertyOrder;
import io.fabric8.generator.annotation.Default;
import io.fabric8.kubernetes.api.model.ResourceRequirements;

/** The sidecar container the shard pods run. */
@JsonInclude(JsonInclude.Include.NON_NULL)
@JsonPropertyOrder({"image", "imagePullPolicy", "imagePullSecrets", "resources"})
public class SidecarSpec {

    @JsonPropertyDescription("Sidecar image; the operator's default (pikv.operator.sidecar-image) when unset.")
    private String image;

    @Default("IfNotPresent")
    @JsonPropertyDescription("Always, IfNotPresent or Never.")
    private PullPolicy imagePullPolicy = PullPolicy.IF_NOT_PRESENT;

    @JsonPropertyDescription("Secrets (in the cluster's namespace) to pull the image with, each once. When set, the "
            + "namespace's default ServiceAccount's pull secrets are not added to the shard pods (Kubernetes adds them "
            + "only to pods that name none): list those here too.")
    private java.util.List<io.fabric8.kubernetes.api.model.LocalObjectReference> imagePullSecrets =
            new java.util.ArrayList<>();

    @JsonPropertyDescription("CPU and memory of the sidecar container. The heap for the bookkeeping of the entries "
            + "the budget holds takes 192 bytes per token and layer (plus 96 bytes per historyLimit entry under the "
            + "lrfu policy). When memory is not given, the request and limit "
            + "are memoryPerShard plus that bookkeeping, half of it again and the operator's JVM overhead "
            + "(pikv.operator.memory-overhead); memory given (the limit, and the request too when given) must be at "
            + "least memoryPerShard plus that bookkeeping, half of it again and 512Mi. Without cpu, 1 CPU is requested.")
    private ResourceRequirements resources;

    public String getImage() {
        return image;
    }

    public void setImage(String image) {
        this.image = image;
    }

    public PullPolicy getImagePullPolicy() {
        return imagePullPolicy;
    }

    public void setImagePullPolicy(PullPolicy imagePullPolicy) {
        this.imagePullPolicy = imagePullPolicy;
    }

    public java.util.List<io.fabric8.kubernetes.api.model.LocalObjectReference> getImagePullSecrets() {
        return imagePullSecrets;
    }

    public void setImagePullSecrets(java.util.List<io.fabric8.kubernetes.api.model.LocalObjectReference> secrets) {
        this.imagePullSecrets = secrets;
    }

    public ResourceRequirements getResources() {
        return resources;
    }

    public void setResources(ResourceRequirements resources) {
        this.resources = resources;
    }
}
