package io.pikv.sidecar.api;

import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.quarkus.jackson.ObjectMapperCustomizer;
import jakarta.inject.Singleton;

/**
 * JSON request bodies are read strictly: a fraction where a whole number goes ({@code "position": 3.7}) or a null
 * where a number goes ({@code "positions": [null]}) is refused (400 {@code malformed-json}) instead of being
 * truncated to 3 or read as 0 — a request that means something else than it says must not change the store.
 */
@Singleton
public class StrictJson implements ObjectMapperCustomizer {
    @Override
    public void customize(ObjectMapper mapper) {
        mapper.disable(DeserializationFeature.ACCEPT_FLOAT_AS_INT)
                .enable(DeserializationFeature.FAIL_ON_NULL_FOR_PRIMITIVES);
    }
}
