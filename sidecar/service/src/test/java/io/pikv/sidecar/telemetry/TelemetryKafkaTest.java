package io.pikv.sidecar.telemetry;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.pikv.api.events.CacheEvents;
import io.pikv.api.events.ExpertCounters;
import io.pikv.kv.ModelShape;
import io.pikv.sidecar.client.SidecarClient;
import io.pikv.sidecar.kafka.SidecarKafka;
import io.pikv.sidecar.kafka.TestKafka;
import io.pikv.sidecar.wire.Wire;
import io.quarkus.test.common.http.TestHTTPResource;
import io.quarkus.test.junit.QuarkusTest;
import jakarta.inject.Inject;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.TopicPartition;
import org.junit.jupiter.api.Test;

import java.net.URL;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;

import static io.restassured.RestAssured.given;
import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;
import static org.hamcrest.Matchers.containsString;
import static org.hamcrest.Matchers.equalTo;
import static org.hamcrest.Matchers.hasItem;

/** Telemetry of a running sidecar, read back from the suite's Kafka broker. */
@QuarkusTest
class TelemetryKafkaTest {
    static final ModelShape SHAPE = new ModelShape(2, 4, 2, 16, 4, 2);
    final ObjectMapper json = new ObjectMapper();

    @TestHTTPResource("/")
    URL url;

    @Inject
    SidecarKafka kafka;

    @Test
    void recordsCarryTheWindowDeltasOfKnownAppendsAndLookups() throws Exception {
        TelemetryPublisher publisher = kafka.telemetry().orElseThrow();
        SidecarClient client = new SidecarClient(url.toURI(), SHAPE);
        Random rnd = new Random(3);
        try (KafkaConsumer<String, String> consumer = TestKafka.consumer()) {
            TopicPartition partition = new TopicPartition(TestKafka.TELEMETRY_TOPIC, 0);
            consumer.assign(List.of(partition));
            consumer.seekToEnd(List.of(partition));
            consumer.position(partition);

            // Close a window right before and right after the activity: the records between them hold exactly it,
            // however the scheduled windows (200 ms in tests) cut it.
            CacheEvents before = publisher.closeWindow();
            long seq = client.createSequence(null);
            client.append(seq, new Wire.AppendRequest(0, new Wire.AppendRequest.Entry[] {
                entry(1, rnd), entry(1, rnd), entry(1, rnd), entry(3, rnd), entry(3, rnd)}));
            float[] q = gaussian(SHAPE.queryWidth(), rnd);
            client.attend(seq, new Wire.AttendRequest(0, new int[0], q)); // e1: 3 lookups, e3: 2
            client.attend(seq, new Wire.AttendRequest(0, new int[0], q)); // e1: 3, e3: 2
            client.attend(seq, new Wire.AttendRequest(0, new int[] {3}, q)); // e3: 2
            CacheEvents after = publisher.closeWindow();
            JsonNode stats = client.stats();

            List<CacheEvents> records = new ArrayList<>();
            await().atMost(Duration.ofSeconds(20)).until(() -> {
                for (ConsumerRecord<String, String> r : consumer.poll(Duration.ofMillis(200))) {
                    assertThat(r.key()).isEqualTo("local/0");
                    CacheEvents e = json.readValue(r.value(), CacheEvents.class);
                    // A send that timed out on a loaded machine is sent again and may land twice: a consumer drops
                    // the repeat by its sequence number, as the record's contract says.
                    if (records.stream().noneMatch(x -> x.sequence() == e.sequence())) {
                        records.add(e);
                    }
                }
                return records.stream().anyMatch(r -> r.sequence() >= after.sequence());
            });
            for (int i = 1; i < records.size(); i++) {
                assertThat(records.get(i).sequence()).isEqualTo(records.get(i - 1).sequence() + 1);
                assertThat(records.get(i).windowStartMs()).isEqualTo(records.get(i - 1).windowEndMs());
                assertThat(records.get(i).producerId()).isEqualTo(before.producerId());
            }
            List<CacheEvents> activity = records.stream()
                    .filter(r -> r.sequence() > before.sequence() && r.sequence() <= after.sequence()).toList();
            assertThat(activity).isNotEmpty();
            long[] lookups = new long[4];
            long[] hits = new long[4];
            long[] misses = new long[4];
            long[] evictions = new long[4];
            for (CacheEvents r : activity) {
                assertThat(r.cluster()).isEqualTo("local");
                assertThat(r.dropped()).isZero();
                for (ExpertCounters e : r.experts()) {
                    lookups[e.expert()] += e.lookups();
                    hits[e.expert()] += e.hits();
                    misses[e.expert()] += e.misses();
                    evictions[e.expert()] += e.evictions();
                }
            }
            assertThat(lookups).containsExactly(0, 6, 0, 6);
            assertThat(hits).containsExactly(0, 6, 0, 6);
            assertThat(misses).containsExactly(0, 0, 0, 0);
            assertThat(evictions).containsExactly(0, 0, 0, 0);

            // The closing record's bytes are the shard's at that moment (nothing changed until /v1/stats).
            CacheEvents last = activity.get(activity.size() - 1);
            assertThat(last.bytesResident()).isEqualTo(stats.get("bytesInUse").asLong());
            assertThat(last.budgetBytes()).isEqualTo(16384);
            assertThat(last.policy()).isEqualTo(stats.get("policy").asText());
            assertThat(last.epoch()).isEqualTo(stats.get("control").get("epoch").asLong());
            long[] bytes = new long[4];
            stats.get("experts").forEach(c -> bytes[c.get("expert").asInt()] += c.get("bytesResident").asLong());
            assertThat(last.experts().stream().mapToLong(ExpertCounters::bytesResident).toArray()).containsExactly(bytes);
            client.closeSequence(seq);
        }
    }

    @Test
    void metricsAndHealthShowTheLink() {
        await().atMost(Duration.ofSeconds(10)).untilAsserted(() -> given().get("/q/health/ready").then()
                .statusCode(200).body("checks.find { it.name == 'pikv-kafka' }.data.kafka", equalTo("up"))
                .body("checks.find { it.name == 'pikv-kafka' }.data.telemetry", equalTo("up"))
                .body("checks.find { it.name == 'pikv-control' }.data.phase", equalTo("caught_up")));
        given().get("/q/health/group/kafka").then().statusCode(200).body("checks.name", hasItem("pikv-kafka"));
        given().get("/q/metrics").then().statusCode(200)
                .body(containsString("pikv_telemetry_records_published_total"))
                .body(containsString("pikv_telemetry_records_dropped_total 0.0"))
                .body(containsString("pikv_telemetry_buffer_depth"))
                .body(containsString("pikv_telemetry_buffer_capacity 600.0"))
                .body(containsString("pikv_telemetry_windows_total"))
                .body(containsString("pikv_telemetry_send_failures_total"))
                .body(containsString("pikv_kafka_up 1.0"))
                .body(containsString("pikv_control_epoch"))
                .body(containsString("pikv_control_records_total{outcome=\"applied\"}"));
    }

    static Wire.AppendRequest.Entry entry(int expert, Random rnd) {
        return new Wire.AppendRequest.Entry(Wire.NEXT_POSITION, expert, gaussian(SHAPE.kvWidth(), rnd),
                gaussian(SHAPE.kvWidth(), rnd));
    }

    static float[] gaussian(int n, Random rnd) {
        float[] x = new float[n];
        for (int i = 0; i < n; i++) {
            x[i] = (float) rnd.nextGaussian();
        }
        return x;
    }
}
