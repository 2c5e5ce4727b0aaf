package io.pikv.operator.controller;

import io.fabric8.kubernetes.api.model.Event;
import io.fabric8.kubernetes.client.KubernetesClient;
import io.fabric8.kubernetes.client.server.mock.KubernetesCrudDispatcher;
import io.fabric8.kubernetes.client.server.mock.KubernetesMockServer;
import io.fabric8.mockwebserver.Context;
import io.fabric8.mockwebserver.MockWebServer;
import io.pikv.api.v1alpha1.PiKVCluster;
import io.pikv.operator.TestClusters;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

import java.time.Duration;
import java.util.HashMap;

import static org.assertj.core.api.Assertions.assertThat;

/** Events against the mock API server in CRUD mode: counted repeats, one request each, and recovery from a stale copy. */
class EventRecorderTest {
    static final String NS = "events";

    KubernetesMockServer server;
    KubernetesClient client;
    EventRecorder recorder;
    PiKVCluster cluster;

    @BeforeEach
    void start() {
        server = new KubernetesMockServer(new Context(), new MockWebServer(), new HashMap<>(),
                new KubernetesCrudDispatcher(), false);
        server.init();
        client = server.createClient();
        recorder = new EventRecorder(client);
        cluster = TestClusters.small("ev", NS);
        cluster.getMetadata().setUid("uid-ev");
    }

    @AfterEach
    void stop() {
        recorder.close();
        client.close();
        server.destroy();
    }

    private String name(String reason, String message) {
        return EventRecorder.eventName("ev", "uid-ev", EventRecorder.NORMAL, reason, message);
    }

    private Event event(String name) {
        return client.v1().events().inNamespace(NS).withName(name).get();
    }

    /** Records once and returns the requests the recorder made for it. */
    private int record(EventRecorder r, String reason, String message) throws Exception {
        int before = server.getRequestCount();
        r.normal(cluster, reason, message);
        r.awaitWritten(Duration.ofSeconds(10));
        return server.getRequestCount() - before;
    }

    @Test
    void anEventOfALongClusterNameStaysWithinANamesLength() {
        // The API takes PiKVCluster names the operator refuses (over 40 characters): their SpecRejected event must
        // still have a name the API takes.
        String longName = "a".repeat(235) + "-" + "b".repeat(17); // cut after its dash: the dash goes too
        String name = EventRecorder.eventName(longName, "uid", EventRecorder.WARNING, "SpecRejected", "too long");
        assertThat(name).hasSizeLessThanOrEqualTo(253).matches("[a-z0-9]([-a-z0-9.]*[a-z0-9])?")
                .doesNotContain("-.");
        assertThat(EventRecorder.eventName("ev", "uid", EventRecorder.NORMAL, "r", "m")).startsWith("ev.").hasSize(19);
    }

    @Test
    void aLongMessageIsCutToTheServersLimitInBytes() throws Exception {
        String ascii = "x".repeat(2000);
        record(recorder, "Long", ascii);
        String stored = event(name("Long", ascii)).getMessage();
        assertThat(stored).hasSize(1024).endsWith("...").startsWith("x".repeat(1021));
        // Two bytes a character: 1,021 bytes hold 510 of them, never half of one.
        String accented = "\u00e9".repeat(600);
        assertThat(EventRecorder.truncate(accented)).isEqualTo("\u00e9".repeat(510) + "...");
        String emoji = "\ud83d\ude00".repeat(300); // four bytes each, two chars
        String cut = EventRecorder.truncate(emoji);
        assertThat(cut.getBytes(java.nio.charset.StandardCharsets.UTF_8).length).isEqualTo(255 * 4 + 3);
        assertThat(cut).isEqualTo("\ud83d\ude00".repeat(255) + "...");
        assertThat(EventRecorder.truncate("short")).isEqualTo("short");
        assertThat(EventRecorder.truncate("y".repeat(1024))).isEqualTo("y".repeat(1024));
    }

    @Test
    void aNewEventAndItsRepeatsCostOneRequestEach() throws Exception {
        String name = name("Scaled", "Shards 2 → 3.");
        assertThat(record(recorder, "Scaled", "Shards 2 → 3.")).as("a create, no read first").isEqualTo(1);
        assertThat(event(name).getCount()).isEqualTo(1);
        assertThat(record(recorder, "Scaled", "Shards 2 → 3.")).as("an update, no read first").isEqualTo(1);
        assertThat(record(recorder, "Scaled", "Shards 2 → 3.")).isEqualTo(1);

        Event e = event(name);
        assertThat(e.getCount()).isEqualTo(3);
        assertThat(e.getType()).isEqualTo(EventRecorder.NORMAL);
        assertThat(e.getReason()).isEqualTo("Scaled");
        assertThat(e.getMessage()).isEqualTo("Shards 2 → 3.");
        assertThat(e.getInvolvedObject().getUid()).isEqualTo("uid-ev");
        assertThat(client.v1().events().inNamespace(NS).list().getItems()).hasSize(1);
    }

    @Test
    void closingWritesTheEventsAlreadyRecorded() {
        // A shutdown right after a reconcile: what it decided (already in status) must still be told.
        for (int i = 0; i < 40; i++) {
            recorder.normal(cluster, "Scaled", "Shards " + i + " → " + (i + 1) + ".");
        }
        recorder.close();
        assertThat(client.v1().events().inNamespace(NS).list().getItems()).hasSize(40);
        recorder.normal(cluster, "Scaled", "after close"); // dropped, said at debug level, never thrown
        recorder.close(); // idempotent
        assertThat(client.v1().events().inNamespace(NS).list().getItems()).hasSize(40);
    }

    @Test
    void aClusterCreatedAgainUnderItsNameGetsItsOwnEvents() throws Exception {
        record(recorder, "Created", "Created 2 shards.");
        cluster.getMetadata().setUid("uid-ev-2"); // deleted and applied again
        assertThat(record(recorder, "Created", "Created 2 shards.")).isEqualTo(1);
        assertThat(client.v1().events().inNamespace(NS).list().getItems())
                .extracting(e -> e.getInvolvedObject().getUid() + " " + e.getCount())
                .containsExactlyInAnyOrder("uid-ev 1", "uid-ev-2 1");
    }

    @Test
    void anEventWrittenByAnEarlierOperatorIsCountedOn() throws Exception {
        String name = name("ConfigChanged", "Config a → b.");
        record(recorder, "ConfigChanged", "Config a → b.");
        // A fresh recorder (an operator restart) does not know the event: its create conflicts, it reads and counts.
        EventRecorder restarted = new EventRecorder(client);
        try {
            assertThat(record(restarted, "ConfigChanged", "Config a → b.")).as("create, read, update").isEqualTo(3);
            assertThat(event(name).getCount()).isEqualTo(2);
            assertThat(record(restarted, "ConfigChanged", "Config a → b.")).isEqualTo(1);
            assertThat(event(name).getCount()).isEqualTo(3);
        } finally {
            restarted.close();
        }
    }

    @Test
    void aStaleOrMissingCopyIsReadAgain() throws Exception {
        String name = name("Rebalanced", "Epoch 1 → 2.");
        record(recorder, "Rebalanced", "Epoch 1 → 2.");

        // Another writer counted on it: the recorder's copy is stale, its update conflicts, it reads and counts on.
        Event theirs = event(name);
        theirs.setCount(10);
        client.v1().events().inNamespace(NS).resource(theirs).update();
        assertThat(record(recorder, "Rebalanced", "Epoch 1 → 2.")).as("update, read, update").isEqualTo(3);
        assertThat(event(name).getCount()).isEqualTo(11);

        // Gone (expired): created again from one.
        client.v1().events().inNamespace(NS).withName(name).delete();
        assertThat(record(recorder, "Rebalanced", "Epoch 1 → 2.")).as("update, read, create").isEqualTo(3);
        Event again = event(name);
        assertThat(again.getCount()).isEqualTo(1);
        assertThat(again.getFirstTimestamp()).isNotBlank();
    }
}
