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
    @JsonPropertyDescription("none, or the engine's methods joined by '+': int8 (8-bit pages, keys per channel, "
            + "values per token), lowrank (a shared low-rank basis per layer and head), lowrank-expert (a basis per "
            + "expert where calibration allows), pyramid (PyramidKV layer budgets); e.g. pyramid+lowrank+int8.")
    private String method = "none";

    @JsonPropertyDescription("Method knobs by name: keyRank, valueRank, outlierDirections, minExpertTokens (lowrank); "
            + "budget (fraction of tokens kept, (0, 1]), beta (>= 1), sinks, window (pyramid). "
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
