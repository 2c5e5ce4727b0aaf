package io.pikv.api.v1alpha1;

import com.fasterxml.jackson.annotation.JsonInclude;
import com.fasterxml.jackson.annotation.JsonPropertyDescription;
import com.fasterxml.jackson.annotation.JsonPropertyOrder;
import com.fasterxml.jackson.annotation.JsonSetter;
import com.fasterxml.jackson.annotation.Nulls;
import io.fabric8.generator.annotation.Default;
import io.fabric8.generator.annotation.Max;
import io.fabric8.generator.annotation.Min;
import io.fabric8.generator.annotation.Required;
import io.fabric8.generator.annotation.ValidationRule;
import io.fabric8.kubernetes.api.model.Quantity;
import io.fabric8.kubernetes.model.annotation.SpecReplicas;

/** The desired state of a PiKV cluster. */
@JsonInclude(JsonInclude.Include.NON_NULL)
@JsonPropertyOrder({"model", "shards", "memoryPerShard", "routing", "scheduling", "compression", "kafka",
    "autoscaling", "gpu", "placement", "sidecar"})
@ValidationRule(value = "self.shards <= self.model.experts",
        message = "shards (2 when not set) must not exceed model.experts: a shard owns at least one expert; set "
                + "shards to at most model.experts")
@ValidationRule(value = "!has(self.autoscaling) || !self.autoscaling.enabled "
        + "|| (self.shards >= self.autoscaling.minShards && self.shards <= self.autoscaling.maxShards)",
        message = "with autoscaling enabled, shards must lie within [autoscaling.minShards, autoscaling.maxShards]")
public class PiKVClusterSpec {

    public static final int MAX_SHARDS = 256;

    @Required
    @JsonPropertyDescription("The MoE model whose KV the cluster holds.")
    private ModelSpec model;

    @Default("2")
    @Min(1)
    @Max(MAX_SHARDS)
    @SpecReplicas
    @JsonPropertyDescription("Shard pods; experts are spread over them by the shard map. The scale subresource "
            + "drives this field (kubectl scale, HPA, KEDA).")
    // An explicit null reads as absent (the default), as the API server's defaulting has it; a client that skips that
    // (a mock server, another tool) would otherwise have the spec refused for a field it did not set.
    @JsonSetter(nulls = Nulls.SKIP)
    private Integer shards = 2;

    @Default("1Gi")
    @JsonPropertyDescription("Hard byte budget of one shard's KV pages (a quantity: 512Mi, 16Gi); the container's "
            + "memory is this plus the heap for its entries' bookkeeping plus the JVM overhead unless "
            + "sidecar.resources says otherwise.")
    @JsonSetter(nulls = Nulls.SKIP) // as shards: null reads as absent
    private Quantity memoryPerShard = new Quantity("1Gi");

    @JsonPropertyDescription("Token-to-expert routing of the gateways.")
    private RoutingSpec routing = new RoutingSpec();

    @JsonPropertyDescription("Eviction policy and its adaptation.")
    private SchedulingSpec scheduling = new SchedulingSpec();

    @JsonPropertyDescription("KV compression.")
    private CompressionSpec compression = new CompressionSpec();

    @JsonPropertyDescription("Kafka for telemetry and control; without it the shards publish no telemetry.")
    private KafkaSpec kafka;

    @JsonPropertyDescription("Shard autoscaling bounds and targets.")
    private AutoscalingSpec autoscaling = new AutoscalingSpec();

    @JsonPropertyDescription("GPUs for the shards.")
    private GpuSpec gpu = new GpuSpec();

    @JsonPropertyDescription("Where the shard pods may run: node selector, tolerations, priority class.")
    private PlacementSpec placement = new PlacementSpec();

    @JsonPropertyDescription("The sidecar container of the shard pods.")
    private SidecarSpec sidecar = new SidecarSpec();

    public PlacementSpec getPlacement() {
        return placement;
    }

    public void setPlacement(PlacementSpec placement) {
        this.placement = placement;
    }

    public ModelSpec getModel() {
        return model;
    }

    public void setModel(ModelSpec model) {
        this.model = model;
    }

    public Integer getShards() {
        return shards;
    }

    public void setShards(Integer shards) {
        this.shards = shards;
    }

    public Quantity getMemoryPerShard() {
        return memoryPerShard;
    }

    public void setMemoryPerShard(Quantity memoryPerShard) {
        this.memoryPerShard = memoryPerShard;
    }

    public RoutingSpec getRouting() {
        return routing;
    }

    public void setRouting(RoutingSpec routing) {
        this.routing = routing;
    }

    public SchedulingSpec getScheduling() {
        return scheduling;
    }

    public void setScheduling(SchedulingSpec scheduling) {
        this.scheduling = scheduling;
    }

    public CompressionSpec getCompression() {
        return compression;
    }

    public void setCompression(CompressionSpec compression) {
        this.compression = compression;
    }

    public KafkaSpec getKafka() {
        return kafka;
    }

    public void setKafka(KafkaSpec kafka) {
        this.kafka = kafka;
    }

    public AutoscalingSpec getAutoscaling() {
        return autoscaling;
    }

    public void setAutoscaling(AutoscalingSpec autoscaling) {
        this.autoscaling = autoscaling;
    }

    public GpuSpec getGpu() {
        return gpu;
    }

    public void setGpu(GpuSpec gpu) {
        this.gpu = gpu;
    }

    public SidecarSpec getSidecar() {
        return sidecar;
    }

    public void setSidecar(SidecarSpec sidecar) {
        this.sidecar = sidecar;
    }
}
