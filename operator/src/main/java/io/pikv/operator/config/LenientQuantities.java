package io.pikv.operator.config;

import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.JsonToken;
import com.fasterxml.jackson.databind.DeserializationContext;
import com.fasterxml.jackson.databind.JsonDeserializer;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.annotation.JsonDeserialize;
import io.fabric8.kubernetes.api.model.Quantity;
import io.quarkus.kubernetes.client.KubernetesClientObjectMapperCustomizer;
import jakarta.inject.Singleton;

import java.io.IOException;

/**
 * Quantities as the Kubernetes client reads them: a string fabric8 cannot parse (an empty one, or an exponent
 * followed by a unit such as {@code 1e3Mi}, which the CRD's int-or-string schema lets through) is kept as given
 * instead of failing the whole object. With fabric8's own deserializer one such value in one {@code PiKVCluster}
 * made it unreadable — no status, no {@code Degraded}, and an informer that could not list the resources of every
 * other cluster either. Kept as text, the value reaches the validator, which reports it in the cluster's status like
 * any other violation. Strings that parse are read exactly as fabric8 reads them.
 */
@Singleton
public class LenientQuantities implements KubernetesClientObjectMapperCustomizer {

    @Override
    public void customize(ObjectMapper mapper) {
        mapper.addMixIn(Quantity.class, AsGiven.class);
    }

    /** Puts {@link Text} in the place of fabric8's deserializer. */
    @JsonDeserialize(using = Text.class)
    abstract static class AsGiven {
    }

    /** A quantity from a JSON string or number: parsed when it parses, kept as its text otherwise. */
    static final class Text extends JsonDeserializer<Quantity> {
        @Override
        public Quantity deserialize(JsonParser p, DeserializationContext ctx) throws IOException {
            JsonToken token = p.currentToken();
            if (token != JsonToken.VALUE_STRING && token != JsonToken.VALUE_NUMBER_INT
                    && token != JsonToken.VALUE_NUMBER_FLOAT) {
                return (Quantity) ctx.handleUnexpectedToken(Quantity.class, p);
            }
            return read(p.getText());
        }

        static Quantity read(String text) {
            try {
                return new Quantity(text);
            } catch (RuntimeException e) {
                Quantity q = new Quantity(); // unparsed: its amount is the text, which any use parses and refuses
                q.setAmount(text);
                q.setFormat("");
                return q;
            }
        }
    }
}
