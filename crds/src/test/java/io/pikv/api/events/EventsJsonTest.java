package io.pikv.api.events;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import org.junit.jupiter.api.Test;

import java.util.List;
import java.util.Map;

import static org.assertj.core.api.Assertions.assertThat;

/** The JSON of the Kafka records, as docs/sidecar-api.md shows it: field names are the contract with the operator. */
class EventsJsonTest {
    final ObjectMapper json = new ObjectMapper();

    @Test
    void cacheEventsRoundTripWithTheDocumentedFields() throws Exception {
        CacheEvents record = new CacheEvents(CacheEvents.VERSION, "demo", 2, "7f0c", 41, 1_700_000_000_000L,
                1_700_000_001_000L, "oldest-page", 12, Map.of("lru", 0.61), 1_073_741_824L, 52_428_800L, 3,
                List.of(new ExpertCounters(0, 120, 96, 24, 10, 1_048_576)),
                new BlockCacheCounters("adaptive/lrfu", 40, 31, 2, 4_194_304, 268_435_456));
        String text = json.writeValueAsString(record);
        JsonNode tree = json.readTree(text);
        assertThat(tree.fieldNames()).toIterable().containsExactly("version", "cluster", "shard", "producerId",
                "sequence", "windowStartMs", "windowEndMs", "policy", "epoch", "ghostHitRates", "budgetBytes",
                "bytesResident", "dropped", "experts", "blocks");
        assertThat(tree.get("experts").get(0).fieldNames()).toIterable().containsExactly("expert", "lookups", "hits",
                "misses", "evictions", "bytesResident");
        assertThat(tree.get("blocks").fieldNames()).toIterable().containsExactly("policy", "lookups", "hits",
                "evictions", "bytes", "capacityBytes");
        assertThat(json.readValue(text, CacheEvents.class)).isEqualTo(record);
        // A record from a producer without the block cache still reads.
        String older = text.replaceFirst(",\"blocks\":\\{[^}]*\\}", "");
        assertThat(older).doesNotContain("blocks");
        assertThat(json.readValue(older, CacheEvents.class).blocks()).isNull();
        // A record from a newer producer, with fields added within version 1 at every level, reads as this one.
        String newer = text.replace("\"bytesResident\":1048576}", "\"bytesResident\":1048576,\"pinned\":3}")
                .replace("\"capacityBytes\":268435456}", "\"capacityBytes\":268435456,\"ghosts\":{}}")
                .replace("\"dropped\":3,", "\"dropped\":3,\"region\":\"eu\",");
        assertThat(newer).contains("pinned").contains("ghosts").contains("region");
        assertThat(json.readValue(newer, CacheEvents.class)).isEqualTo(record);
        assertThat(CacheEvents.key("demo", 2)).isEqualTo("demo/2");
        assertThat(record.withDropped(0).dropped()).isZero();
    }

    @Test
    void controlStateReadsTheDocumentedExampleAndIgnoresUnknownFields() throws Exception {
        String example = """
                {"version": 1, "cluster": "demo", "epoch": 12, "shardOfExpert": [0, 1, 0, 1], "shards": 2,
                 "policy": "oldest-page", "parameters": {}, "budgetBytes": 1073741824, "reason": "rebalance"}
                """;
        ControlState state = json.readValue(example, ControlState.class);
        assertThat(state).isEqualTo(new ControlState(1, "demo", 12, List.of(0, 1, 0, 1), 2, "oldest-page", Map.of(),
                1_073_741_824L));
    }
}
