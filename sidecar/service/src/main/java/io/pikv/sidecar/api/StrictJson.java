package io.pikv.sidecar.api;

import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.quarkus.jackson.ObjectMapperCustomizer;
import jakarta.inject.Singleton;

/**
 * JSON request bodies are read strictly: a fraction where a whole number goes ({@code "position": 3.7}), a null where
 * a number goes ({@code "positions": [null]}), a string where a number goes ({@code "layer": "0"}), a field the
 * request does not have (a misspelt {@code "Id"}), a field given twice, or anything after the JSON value is refused
 * (400 {@code malformed-json}) instead of being truncated, read as 0, converted, ignored or overwritten — a request
 * that means something else than it says must not change the store. (Control records, read with this mapper too,
 * relax the unknown-field rule: docs/sidecar-api.md, Control.)
 */
@Singleton
public class StrictJson implements ObjectMapperCustomizer {
    @Override
    public void customize(ObjectMapper mapper) {
        mapper.disable(DeserializationFeature.ACCEPT_FLOAT_AS_INT)
                .enable(DeserializationFeature.FAIL_ON_NULL_FOR_PRIMITIVES)
                .enable(DeserializationFeature.FAIL_ON_UNKNOWN_PROPERTIES)
                .enable(DeserializationFeature.FAIL_ON_TRAILING_TOKENS);
        mapper.getFactory().enable(com.fasterxml.jackson.core.JsonParser.Feature.STRICT_DUPLICATE_DETECTION);
        for (com.fasterxml.jackson.databind.type.LogicalType numeric : new com.fasterxml.jackson.databind.type
                .LogicalType[] {com.fasterxml.jackson.databind.type.LogicalType.Integer,
                com.fasterxml.jackson.databind.type.LogicalType.Float,
                com.fasterxml.jackson.databind.type.LogicalType.Boolean}) {
            mapper.coercionConfigFor(numeric).setCoercion(com.fasterxml.jackson.databind.cfg.CoercionInputShape.String,
                    com.fasterxml.jackson.databind.cfg.CoercionAction.Fail);
        }
    }
}
