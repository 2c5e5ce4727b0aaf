package io.pikv.operator.status;

import com.fasterxml.jackson.annotation.JsonInclude;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.NullNode;

/** JSON form of status and spec values, for comparison and for status.lastValidSpec. */
public final class StatusJson {
    /**
     * Unknown properties are skipped when reading: a spec saved in status by another operator version (a field added
     * or renamed since) still reads, rather than being taken for no saved spec at all.
     */
    static final ObjectMapper MAPPER = new ObjectMapper().setSerializationInclusion(JsonInclude.Include.NON_NULL)
            .configure(com.fasterxml.jackson.databind.DeserializationFeature.FAIL_ON_UNKNOWN_PROPERTIES, false);

    private StatusJson() {
    }

    static JsonNode tree(Object value) {
        return value == null ? NullNode.instance : MAPPER.valueToTree(value);
    }

    /** A value as compact JSON. */
    public static String write(Object value) {
        try {
            return MAPPER.writeValueAsString(value);
        } catch (com.fasterxml.jackson.core.JsonProcessingException e) {
            throw new IllegalStateException(e);
        }
    }

    /** Reads JSON written by {@link #write}; null when the text is null or not of that type. */
    public static <T> T read(String json, Class<T> type) {
        if (json == null) {
            return null;
        }
        try {
            return MAPPER.readValue(json, type);
        } catch (com.fasterxml.jackson.core.JsonProcessingException e) {
            return null;
        }
    }
}
