package io.pikv.sidecar.control;

import com.fasterxml.jackson.databind.ObjectMapper;
import io.micrometer.core.instrument.MeterRegistry;
import io.pikv.api.events.ControlState;
import io.pikv.sidecar.kafka.TestKafka;
import io.quarkus.test.junit.QuarkusTest;
import jakarta.inject.Inject;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

import java.time.Duration;
import java.util.List;
import java.util.Map;

import static io.restassured.RestAssured.given;
import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;
import static org.hamcrest.Matchers.contains;
import static org.hamcrest.Matchers.containsString;
import static org.hamcrest.Matchers.equalTo;
import static org.hamcrest.Matchers.hasItem;

/**
 * Control records published to the suite's broker change what a running sidecar serves. Each test leaves the
 * configured state behind (policy reject, everything on shard 0) under a newer epoch, as the other tests expect.
 */
@QuarkusTest
class ControlKafkaTest {
    final ObjectMapper json = new ObjectMapper();

    @Inject
    MeterRegistry registry;

    long epoch() {
        return given().get("/v1/stats").then().statusCode(200).extract().jsonPath().getLong("control.epoch");
    }

    void publish(String key, ControlState state) throws Exception {
        try (KafkaProducer<String, String> producer = TestKafka.producer()) {
            producer.send(new ProducerRecord<>(TestKafka.CONTROL_TOPIC, key, json.writeValueAsString(state))).get();
        }
    }

    static ControlState state(String cluster, long epoch, List<Integer> map, int shards, String policy, long budget) {
        return new ControlState(ControlState.VERSION, cluster, epoch, map, shards, policy, Map.of(), budget);
    }

    double count(String outcome) {
        return registry.get("pikv.control.records").tag("outcome", outcome).counter().count();
    }

    void awaitEpoch(long epoch) {
        await().atMost(Duration.ofSeconds(10)).until(() -> epoch() == epoch);
    }

    @AfterEach
    void restore() throws Exception {
        // The test profile's state; oldest-page first, so that a budget shrink has a policy that can evict.
        long next = epoch() + 1;
        publish("local", state("local", next, List.of(0, 0, 0, 0), 1, "oldest-page", 16384));
        publish("local", state("local", next + 1, List.of(0, 0, 0, 0), 1, "reject", 16384));
        awaitEpoch(next + 1);
        given().get("/v1/stats").then().body("budgetBytes", equalTo(16384)).body("control.warnings.size()", equalTo(0));
    }

    @Test
    void aNewerEpochIsAppliedOlderOnesAndOtherClustersAreNot() throws Exception {
        long base = Math.max(1, epoch() + 1);
        publish("local", state("local", base, List.of(0, 1, 0, 1), 2, "oldest-page", 16384));
        awaitEpoch(base);
        given().get("/v1/shard-map").then().statusCode(200).body("epoch", equalTo((int) base))
                .body("shards", equalTo(2)).body("shardOfExpert", contains(0, 1, 0, 1))
                .body("source", equalTo("control"));
        given().get("/v1/stats").then().body("policy", equalTo("oldest-page")).body("control.warnings.size()", equalTo(0));

        double stale = count("stale");
        double other = count("other_cluster");
        publish("local", state("local", base - 1, List.of(1, 1, 1, 1), 2, "reject", 16384));
        publish("other", state("other", base + 100, List.of(1, 1, 1, 1), 2, "reject", 16384));
        publish("local", state("local", base + 1, List.of(1, 0, 1, 0), 2, "reject", 32768));
        // One partition, read in order: once base + 1 is in effect the two before it have been seen.
        awaitEpoch(base + 1);
        assertThat(count("stale")).isEqualTo(stale + 1);
        assertThat(count("other_cluster")).isEqualTo(other + 1);
        given().get("/v1/shard-map").then().body("epoch", equalTo((int) base + 1))
                .body("shardOfExpert", contains(1, 0, 1, 0));
        // The budget applies to the running shard.
        given().get("/v1/stats").then().body("policy", equalTo("reject")).body("budgetBytes", equalTo(32768))
                .body("control.desiredBudgetBytes", equalTo(32768)).body("control.budgetBytes", equalTo(32768))
                .body("control.warnings.size()", equalTo(0));
    }

    @Test
    void anUnknownPolicyRefusesTheRecordAndSaysWhy() throws Exception {
        long current = epoch();
        double invalid = count("invalid");
        publish("local", new ControlState(ControlState.VERSION, "local", current + 1, List.of(0, 1, 0, 1), 2,
                "lru-9000", Map.of("alpha", 0.3), 32768));
        await().atMost(Duration.ofSeconds(10)).until(() -> count("invalid") == invalid + 1);
        given().get("/v1/stats").then().body("policy", equalTo("reject")).body("budgetBytes", equalTo(16384))
                .body("control.epoch", equalTo((int) current))
                .body("control.lastRejected", equalTo("epoch " + (current + 1) + ": unknown eviction policy "
                        + "'lru-9000' (this sidecar knows h2o, lrfu, lru, oldest-page, reject, streaming, utility)"));
        given().get("/v1/shard-map").then().body("shardOfExpert", contains(0, 0, 0, 0));
        given().get("/q/health/ready").then().statusCode(200)
                .body("checks.find { it.name == 'pikv-control' }.data.epoch", equalTo((int) current));
    }
}
