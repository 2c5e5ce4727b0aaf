package io.pikv.api.v1alpha1;

import com.fasterxml.jackson.annotation.JsonProperty;

/** Element type of uncompressed KV pages (the engine's {@code StorageType} without the compressed int8). */
public enum KvDtype {
    @JsonProperty("fp16")
    FP16("fp16"),
    @JsonProperty("fp32")
    FP32("fp32");

    private final String value;

    KvDtype(String value) {
        this.value = value;
    }

    /** The name in the spec and in the sidecar's {@code pikv.store.dtype}. */
    public String value() {
        return value;
    }
}
