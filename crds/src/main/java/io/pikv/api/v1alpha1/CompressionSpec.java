package io.pikv.api.v1alpha1;

import com.fasterxml.jackson.annotation.JsonInclude;
import com.fasterxml.jackson.annotation.JsonPropertyDescription;
import com.fasterxml.jackson.annotation.JsonPropertyOrder;
import io.fabric8.generator.annotation.Default;
import io.fabric8.generator.annotation.Pattern;

import java.util.LinkedHashMap;
import java.util.Map;

/** How the shards shrink what they keep (docs/compression.md). */
@JsonInclude(JsonInclude.Include.NON_NULL)
@JsonPropertyOrder({"method", "parameters"})
public class CompressionSpec {

    /** Accepts {@code none} or parts joined by {@code +}; the validator rejects repeated or conflicting parts. */
    public static final String METHOD_PATTERN =
            "^(none|(int8|lowrank|lowrank-expert|pyramid)(\\+(int8|lowrank|lowrank-expert|pyramid)){0,2})$";

    @Default("none")
    @Pattern(METHOD_PATTERN)
    @JsonPropertyDescription("none, or methods joined by '+': int8 (8-bit pages, keys per channel, values per "
            + "token), pyramid (PyramidKV layer budgets: each layer keeps a share of its tokens, shrinking with "
            + "depth, the rest chosen by attention), e.g. pyramid+int8. lowrank and lowrank-expert are the engine's "
            + "low-rank methods; the shards do not fit their bases yet, so a cluster naming them is refused.")
    private String method = "none";

    @JsonPropertyDescription("Method knobs by name: keyRank, valueRank, outlierDirections, minExpertTokens "
            + "(lowrank; minExpertTokens lowrank-expert only); "
            + "budget (fraction of tokens kept, (0, 1], required), beta (>= 1, default 20), sinks (default 4), "
            + "window (default 32) (pyramid). "
            + "Names the chosen methods do not use are rejected.")
    private Map<String, Double> parameters = new LinkedHashMap<>();

    public String getMethod() {
        return method;
    }

    public void setMethod(String method) {
        this.method = method;
    }

    public Map<String, Double> getParameters() {
        return parameters;
    }

    public void setParameters(Map<String, Double> parameters) {
        this.parameters = parameters;
    }
}
