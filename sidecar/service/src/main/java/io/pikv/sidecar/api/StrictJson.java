package io.pikv.sidecar.api;

import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.cfg.CoercionAction;
import com.fasterxml.jackson.databind.cfg.CoercionInputShape;
import com.fasterxml.jackson.databind.type.LogicalType;
import io.quarkus.jackson.ObjectMapperCustomizer;
import jakarta.inject.Singleton;

/**
 * JSON request bodies are read strictly: a fraction where a whole number goes ({@code "position": 3.7}), a null where
 * a number goes ({@code "positions": [null]}), a string where a number goes ({@code "layer": "0"}, an empty or blank
 * one too, which Jackson would read as null: {@code "id": ""} is not "no id"), a field the request does not have (a
 * misspelt {@code "Id"}), a field given twice, or anything after the JSON value is refused (400
 * {@code malformed-json}) instead of being truncated, read as 0, converted, ignored or overwritten — a request that
 * means something else than it says must not change the store. (Control records, read with this mapper too, relax the
 * unknown-field rule: docs/sidecar-api.md, Control.)
 */
@Singleton
public class StrictJson implements ObjectMapperCustomizer {
    @Override
    public void customize(ObjectMapper mapper) {
        mapper.disable(DeserializationFeature.ACCEPT_FLOAT_AS_INT)
                .enable(DeserializationFeature.FAIL_ON_NULL_FOR_PRIMITIVES)
                .enable(DeserializationFeature.FAIL_ON_UNKNOWN_PROPERTIES)
                .enable(DeserializationFeature.FAIL_ON_TRAILING_TOKENS);
        mapper.getFactory().enable(JsonParser.Feature.STRICT_DUPLICATE_DETECTION);
        for (LogicalType numeric : new LogicalType[] {LogicalType.Integer, LogicalType.Float, LogicalType.Boolean}) {
            mapper.coercionConfigFor(numeric).setCoercion(CoercionInputShape.String, CoercionAction.Fail)
                    .setCoercion(CoercionInputShape.EmptyString, CoercionAction.Fail)
                    .setAcceptBlankAsEmpty(false);
        }
    }
}
