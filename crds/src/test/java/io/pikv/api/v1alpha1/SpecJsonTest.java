package io.pikv.api.v1alpha1;

import com.fasterxml.jackson.databind.ObjectMapper;
import io.fabric8.kubernetes.api.model.Quantity;
import org.junit.jupiter.api.Test;

import static org.assertj.core.api.Assertions.assertThat;

/** A spec read without the API server's defaulting (a mock server, another tool) means what the server would make of it. */
class SpecJsonTest {
    private final ObjectMapper json = new ObjectMapper();

    @Test
    void explicitNullsOfDefaultedFieldsReadAsTheirDefaults() throws Exception {
        String model = "\"model\": {\"layers\": 2, \"qHeads\": 8, \"kvHeads\": 2, \"headDim\": 64, \"experts\": 8, "
                + "\"topK\": 2}";
        PiKVClusterSpec nulls = json.readValue("{" + model + ", \"shards\": null, \"memoryPerShard\": null}",
                PiKVClusterSpec.class);
        assertThat(nulls.getShards()).isEqualTo(2);
        assertThat(nulls.getMemoryPerShard()).isEqualTo(new Quantity("1Gi"));
        PiKVClusterSpec absent = json.readValue("{" + model + "}", PiKVClusterSpec.class);
        assertThat(absent.getShards()).isEqualTo(2);
        assertThat(absent.getMemoryPerShard()).isEqualTo(new Quantity("1Gi"));
        PiKVClusterSpec given = json.readValue("{" + model + ", \"shards\": 4, \"memoryPerShard\": \"2Gi\"}",
                PiKVClusterSpec.class);
        assertThat(given.getShards()).isEqualTo(4);
        assertThat(given.getMemoryPerShard()).isEqualTo(new Quantity("2Gi"));
    }
}
