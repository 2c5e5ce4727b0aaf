package io.pikv.sidecar.api;

import io.pikv.kv.ModelShape;

/** A model shape in JSON: layers, query heads, KV heads, head dim, experts, top-k. */
public record ModelJson(Integer layers, Integer qHeads, Integer kvHeads, Integer headDim, Integer experts,
                        Integer topK) {

    public static ModelJson of(ModelShape s) {
        return new ModelJson(s.layers(), s.qHeads(), s.kvHeads(), s.headDim(), s.experts(), s.topK());
    }

    /** The shape, or an {@link IllegalArgumentException} naming a missing or bad field. */
    public ModelShape toShape() {
        return new ModelShape(need(layers, "layers"), need(qHeads, "qHeads"), need(kvHeads, "kvHeads"),
                need(headDim, "headDim"), need(experts, "experts"), need(topK, "topK"));
    }

    private static int need(Integer v, String name) {
        if (v == null) {
            throw new IllegalArgumentException("model." + name + " is required");
        }
        return v;
    }
}
