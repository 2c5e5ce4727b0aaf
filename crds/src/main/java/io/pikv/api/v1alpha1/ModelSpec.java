package io.pikv.api.v1alpha1;

import com.fasterxml.jackson.annotation.JsonInclude;
import com.fasterxml.jackson.annotation.JsonProperty;
import com.fasterxml.jackson.annotation.JsonPropertyDescription;
import com.fasterxml.jackson.annotation.JsonPropertyOrder;
import io.fabric8.generator.annotation.Default;
import io.fabric8.generator.annotation.Max;
import io.fabric8.generator.annotation.Min;
import io.fabric8.generator.annotation.Required;
import io.fabric8.generator.annotation.ValidationRule;

/** The shape of the MoE model whose KV the cluster holds; every sequence the shards accept has this shape. */
@JsonInclude(JsonInclude.Include.NON_NULL)
@JsonPropertyOrder({"layers", "qHeads", "kvHeads", "headDim", "experts", "topK", "dtype"})
@ValidationRule(value = "self.topK <= self.experts",
        message = "topK must not exceed experts: a token cannot be routed to more experts than the model has")
@ValidationRule(value = "self.qHeads % self.kvHeads == 0",
        message = "qHeads must be a multiple of kvHeads (grouped-query attention)")
public class ModelSpec {

    /** Bounds shared with the engine's {@code io.pikv.kv.ModelShape}. */
    public static final int MAX_LAYERS = 1024;
    public static final int MAX_HEADS = 1024;
    public static final int MAX_HEAD_DIM = 1024;
    public static final int MAX_EXPERTS = 4096;

    @Required
    @Min(1)
    @Max(MAX_LAYERS)
    @JsonPropertyDescription("Transformer layers; each holds its own KV.")
    private Integer layers;

    @Required
    @Min(1)
    @Max(MAX_HEADS)
    @JsonProperty("qHeads")
    @JsonPropertyDescription("Query heads per layer; a multiple of kvHeads (grouped-query attention).")
    private Integer qHeads;

    @Required
    @Min(1)
    @Max(MAX_HEADS)
    @JsonPropertyDescription("Key/value heads per layer.")
    private Integer kvHeads;

    @Required
    @Min(1)
    @Max(MAX_HEAD_DIM)
    @JsonPropertyDescription("Dimension of one attention head.")
    private Integer headDim;

    @Required
    @Min(1)
    @Max(MAX_EXPERTS)
    @JsonPropertyDescription("Routed experts per MoE layer; the unit the shard map places on shards.")
    private Integer experts;

    @Required
    @Min(1)
    @Max(MAX_EXPERTS)
    @JsonPropertyDescription("Experts each token is routed to; at most experts.")
    private Integer topK;

    @Default("fp16")
    @JsonPropertyDescription("Element type of uncompressed KV pages: fp16 (IEEE half, the default) or fp32. "
            + "int8 pages come from spec.compression.method.")
    private KvDtype dtype = KvDtype.FP16;

    public ModelSpec() {
    }

    public ModelSpec(int layers, int qHeads, int kvHeads, int headDim, int experts, int topK) {
        this.layers = layers;
        this.qHeads = qHeads;
        this.kvHeads = kvHeads;
        this.headDim = headDim;
        this.experts = experts;
        this.topK = topK;
    }

    public Integer getLayers() {
        return layers;
    }

    public void setLayers(Integer layers) {
        this.layers = layers;
    }

    @JsonProperty("qHeads")
    public Integer getQHeads() {
        return qHeads;
    }

    @JsonProperty("qHeads")
    public void setQHeads(Integer qHeads) {
        this.qHeads = qHeads;
    }

    public Integer getKvHeads() {
        return kvHeads;
    }

    public void setKvHeads(Integer kvHeads) {
        this.kvHeads = kvHeads;
    }

    public Integer getHeadDim() {
        return headDim;
    }

    public void setHeadDim(Integer headDim) {
        this.headDim = headDim;
    }

    public Integer getExperts() {
        return experts;
    }

    public void setExperts(Integer experts) {
        this.experts = experts;
    }

    public Integer getTopK() {
        return topK;
    }

    public void setTopK(Integer topK) {
        this.topK = topK;
    }

    public KvDtype getDtype() {
        return dtype;
    }

    public void setDtype(KvDtype dtype) {
        this.dtype = dtype;
    }
}
