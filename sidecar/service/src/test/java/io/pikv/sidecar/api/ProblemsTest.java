package io.pikv.sidecar.api;

import com.fasterxml.jackson.databind.ObjectMapper;
import io.pikv.kv.KvBudgetExceededException;
import io.pikv.kv.ModelShape;
import io.pikv.kv.UnknownSequenceException;
import io.pikv.sidecar.BlockStore;
import io.pikv.sidecar.NotReadyException;
import io.pikv.sidecar.SequenceExistsException;
import io.pikv.sidecar.UndoneException;
import org.junit.jupiter.api.Test;

import java.util.LinkedHashMap;
import java.util.Map;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/**
 * The one table from failures to problem answers: each failure's status and kind, which clients and the gateway
 * decide by (a shard's {@code undone} and 4xx kinds tell a gateway that nothing stayed stored).
 */
class ProblemsTest {

    @Test
    void everyFailureHasItsStatusAndKind() {
        ModelShape shape = new ModelShape(1, 2, 1, 16, 2, 1);
        Map<Throwable, String> table = new LinkedHashMap<>();
        table.put(new UnknownSequenceException(7), "404 unknown-sequence");
        table.put(new BlockResource.BlockNotFoundException("ff"), "404 unknown-block");
        table.put(new SequenceExistsException(7), "409 sequence-exists");
        table.put(new KvBudgetExceededException("full"), "409 budget-exceeded");
        table.put(new InfoResource.StaleEpochException("epoch 3 is older than 4"), "409 stale-epoch");
        table.put(new BodyLimit.BodyTooLargeException(10, 5), "413 body-too-large");
        table.put(new BlockStore.BlockTooLargeException(10, 5), "413 block-too-large");
        table.put(new ModelMismatchException(shape, new ModelShape(2, 2, 1, 16, 2, 1)), "422 model-mismatch");
        table.put(new NotReadyException("it is starting"), "503 not-ready");
        table.put(new UndoneException("append", new IllegalStateException("device lost")), "500 undone");
        table.put(new IllegalArgumentException("layer 3 >= 1"), "400 invalid-request");
        table.put(new IllegalStateException("a defect"), "500 internal");
        for (Map.Entry<Throwable, String> e : table.entrySet()) {
            Problem p = Problems.of(e.getKey(), "/v1/sequences/7");
            assertThat(p.status() + " " + p.type().substring("urn:pikv:problem:".length()))
                    .as(e.getKey().getClass().getSimpleName()).isEqualTo(e.getValue());
            assertThat(p.instance()).isEqualTo("/v1/sequences/7");
            assertThat(p.title()).isNotBlank();
        }
        // The detail is the failure's own sentence, but for a defect, which says what failed.
        assertThat(Problems.of(new UnknownSequenceException(7), "/x").detail())
                .isEqualTo(new UnknownSequenceException(7).getMessage());
        assertThat(Problems.of(new IllegalStateException("a defect"), "/x").detail())
                .isEqualTo("the sidecar failed unexpectedly: java.lang.IllegalStateException: a defect");
    }

    @Test
    void malformedJsonSaysWhere() throws Exception {
        ObjectMapper json = new ObjectMapper();
        assertThatThrownBy(() -> json.readValue("{\"layer\": 1,", Map.class)).satisfies(e -> {
            Problem p = Problems.of(e, "/v1/x");
            assertThat(p.status()).isEqualTo(400);
            assertThat(p.type()).isEqualTo("urn:pikv:problem:malformed-json");
            assertThat(p.detail()).startsWith("at line 1, column ");
        });
        record Body(int layer) {
        }
        assertThatThrownBy(() -> json.readValue("{\"layer\": \"x\"}", Body.class)).satisfies(e -> {
            Problem p = Problems.of(e, "/v1/x");
            assertThat(p.type()).isEqualTo("urn:pikv:problem:malformed-json");
            assertThat(p.detail()).startsWith("at layer: ");
        });
        // The sidecar's mapper: an empty or blank string is not a missing number either.
        ObjectMapper strict = new ObjectMapper();
        new StrictJson().customize(strict);
        record Create(Long id, Integer layer, Double weight, Boolean flag) {
        }
        for (String body : new String[] {"{\"id\": \"\"}", "{\"id\": \" \"}", "{\"layer\": \"\"}",
                "{\"weight\": \"\"}", "{\"flag\": \"\"}", "{\"id\": \"5\"}"}) {
            assertThatThrownBy(() -> strict.readValue(body, Create.class)).as(body).satisfies(e -> {
                Problem p = Problems.of(e, "/v1/x");
                assertThat(p.status()).isEqualTo(400);
                assertThat(p.type()).isEqualTo("urn:pikv:problem:malformed-json");
            });
        }
        assertThat(strict.readValue("{\"id\": null}", Create.class).id()).isNull();
    }
}
