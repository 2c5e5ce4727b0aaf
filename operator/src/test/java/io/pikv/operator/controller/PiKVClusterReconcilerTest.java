package io.pikv.operator.controller;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.dataformat.yaml.YAMLFactory;
import io.fabric8.kubernetes.api.model.ConfigMap;
import io.fabric8.kubernetes.api.model.Condition;
import io.fabric8.kubernetes.api.model.Event;
import io.fabric8.kubernetes.api.model.HasMetadata;
import io.fabric8.kubernetes.api.model.Quantity;
import io.fabric8.kubernetes.api.model.Service;
import io.fabric8.kubernetes.api.model.apps.StatefulSet;
import io.fabric8.kubernetes.api.model.apps.StatefulSetStatusBuilder;
import io.fabric8.kubernetes.api.model.policy.v1.PodDisruptionBudget;
import io.fabric8.kubernetes.api.model.StatusBuilder;
import io.fabric8.kubernetes.client.KubernetesClient;
import io.fabric8.kubernetes.client.dsl.base.PatchContext;
import io.fabric8.kubernetes.client.dsl.base.PatchType;
import io.pikv.api.v1alpha1.PiKVCluster;
import io.pikv.api.v1alpha1.PiKVClusterStatus;
import io.pikv.operator.TestClusters;
import io.pikv.operator.model.PiKVClusterResources;
import io.pikv.operator.model.ShardCluster;
import io.pikv.operator.status.Conditions;
import io.quarkus.test.junit.QuarkusTest;
import io.quarkus.test.kubernetes.client.KubernetesServer;
import io.quarkus.test.kubernetes.client.KubernetesTestServer;
import io.quarkus.test.kubernetes.client.WithKubernetesTestServer;
import io.javaoperatorsdk.operator.api.reconciler.Context;
import io.javaoperatorsdk.operator.api.reconciler.ErrorStatusUpdateControl;
import io.javaoperatorsdk.operator.api.reconciler.RetryInfo;
import jakarta.inject.Inject;
import org.junit.jupiter.api.Test;

import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.function.Predicate;

import static io.restassured.RestAssured.given;
import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;
import static org.hamcrest.Matchers.containsString;

/** The operator in Quarkus against the fabric8 mock API server in CRUD mode (no controllers, no GC, no SSA). */
@QuarkusTest
@WithKubernetesTestServer(crud = true)
class PiKVClusterReconcilerTest {
    static final String NS = "llm";
    static final Duration WAIT = Duration.ofSeconds(20);

    @Inject
    KubernetesClient client;

    @KubernetesTestServer
    KubernetesServer server;

    @org.junit.jupiter.api.BeforeEach
    void keepStatefulSetStatus() {
        io.pikv.operator.MockApiServers.keepStatefulSetStatus(server.getKubernetesMockServer());
    }

    private PiKVCluster create(PiKVCluster cluster) {
        return client.resource(cluster).create();
    }

    private PiKVCluster get(String name) {
        return client.resources(PiKVCluster.class).inNamespace(NS).withName(name).get();
    }

    private PiKVClusterStatus awaitStatus(String name, Predicate<PiKVClusterStatus> until) {
        return await().atMost(WAIT).until(() -> {
            PiKVCluster c = get(name);
            return c == null ? null : c.getStatus();
        }, s -> s != null && until.test(s));
    }

    private <T extends HasMetadata> T awaitObject(Class<T> type, String name, Predicate<T> until) {
        return await().atMost(WAIT).until(() -> client.resources(type).inNamespace(NS).withName(name).get(),
                o -> o != null && until.test(o));
    }

    private static Condition condition(PiKVClusterStatus s, String type) {
        return Conditions.find(s.getConditions(), type);
    }

    private List<Event> events(String cluster, String reason) {
        return client.v1().events().inNamespace(NS).list().getItems().stream()
                .filter(e -> cluster.equals(e.getInvolvedObject().getName()) && reason.equals(e.getReason())).toList();
    }

    /**
     * The cluster's Event of this reason was written once and counted once, and stays so for a second (a repeat raises
     * the count of the same Event rather than adding one).
     */
    private void awaitToldOnce(String cluster, String reason) {
        await().during(Duration.ofSeconds(1)).atMost(WAIT).alias(reason + " told once").until(() -> {
            List<Event> told = writtenEvents(cluster, reason);
            return told.size() == 1 && (told.get(0).getCount() == null || told.get(0).getCount() == 1);
        });
    }

    /** Plays the StatefulSet controller: all replicas updated and ready. */
    private void markShardsReady(String cluster) {
        String name = PiKVClusterResources.shardStatefulSetName(cluster);
        StatefulSet sts = client.apps().statefulSets().inNamespace(NS).withName(name).get();
        int replicas = sts.getSpec().getReplicas();
        sts.setStatus(new StatefulSetStatusBuilder().withObservedGeneration(sts.getMetadata().getGeneration())
                .withReplicas(replicas).withReadyReplicas(replicas).withUpdatedReplicas(replicas)
                .withCurrentRevision("r").withUpdateRevision("r").build());
        client.apps().statefulSets().inNamespace(NS).resource(sts).updateStatus();
    }

    private String configHash(StatefulSet sts) {
        return sts.getSpec().getTemplate().getMetadata().getAnnotations().get(PiKVClusterResources.ANNOTATION_CONFIG_HASH);
    }

    @Test
    void createBuildsTheShardObjects() throws Exception {
        PiKVCluster created = create(TestClusters.small("create", NS));
        PiKVClusterStatus status = awaitStatus("create", s -> s.getObservedGeneration() != null);

        StatefulSet sts = awaitObject(StatefulSet.class, "create-shard", s -> true);
        assertThat(sts.getSpec().getReplicas()).isEqualTo(2);
        assertThat(configHash(sts)).isEqualTo(status.getConfigHash()).isNotBlank();
        assertThat(sts.getSpec().getTemplate().getSpec().getContainers().get(0).getEnv())
                .anySatisfy(e -> assertThat(e.getName()).isEqualTo("PIKV_ROLE"));
        ConfigMap cm = awaitObject(ConfigMap.class, "create-config", c -> true);
        assertThat(cm.getData()).containsEntry("pikv.model.layers", "4").containsEntry("pikv.cluster", NS + "/create")
                .containsKey("control-state.json");
        Service svc = awaitObject(Service.class, "create-shards", s -> true);
        assertThat(svc.getSpec().getClusterIP()).isEqualTo("None");
        PodDisruptionBudget pdb = awaitObject(PodDisruptionBudget.class, "create-shard", p -> true);
        assertThat(pdb.getSpec().getMaxUnavailable().getIntVal()).isEqualTo(1);

        for (HasMetadata owned : List.of(sts, cm, svc, pdb)) {
            assertThat(owned.getMetadata().getOwnerReferences()).as(owned.getKind()).singleElement().satisfies(r -> {
                assertThat(r.getUid()).isEqualTo(created.getMetadata().getUid());
                assertThat(r.getKind()).isEqualTo("PiKVCluster");
                assertThat(r.getController()).isTrue();
            });
        }
        assertThat(status.getDesiredShards()).isEqualTo(2);
        assertThat(status.getActivePolicy()).isEqualTo("lru");
        assertThat(status.getShardMapEpoch()).isZero();
        assertThat(status.getLastValidGeneration()).isEqualTo(1);
        assertThat(condition(status, "Degraded").getStatus()).isEqualTo("False");
        assertThat(condition(status, "Ready").getStatus()).isEqualTo("False");
        assertThat(status.getLastDecision().getReason()).isEqualTo("SpecApplied");
        await().atMost(WAIT).until(() -> events("create", "SpecApplied").size() == 1);

        // The StatefulSet controller reports the pods ready: the cluster becomes Ready.
        markShardsReady("create");
        PiKVClusterStatus ready = awaitStatus("create", s -> Conditions.isTrue(s.getConditions(), "Ready"));
        assertThat(ready.getReadyShards()).isEqualTo(2);
        assertThat(condition(ready, "Progressing").getReason()).isEqualTo("Stable");
        assertThat(condition(ready, "Rebalancing").getStatus()).isEqualTo("False");
        // Decided once per generation: the reconciles since (the pods becoming ready) told it no second time (a
        // repeat would raise the one Event's count, not add an Event).
        assertThat(writtenEvents("create", "SpecApplied")).singleElement()
                .satisfies(e -> assertThat(e.getCount()).isEqualTo(1));
    }

    @Test
    void specChangeRollsThePodsThroughANewConfigHash() throws Exception {
        create(TestClusters.small("change", NS));
        PiKVClusterStatus before = awaitStatus("change", s -> s.getConfigHash() != null);
        String oldHash = configHash(awaitObject(StatefulSet.class, "change-shard", s -> true));

        client.resources(PiKVCluster.class).inNamespace(NS).withName("change")
                .edit(c -> {
                    c.getSpec().setMemoryPerShard(new Quantity("128Mi"));
                    return c;
                });
        PiKVClusterStatus after = awaitStatus("change", s -> s.getObservedGeneration() == 2);
        assertThat(after.getConfigHash()).isNotEqualTo(before.getConfigHash());
        StatefulSet sts = awaitObject(StatefulSet.class, "change-shard", s -> !configHash(s).equals(oldHash));
        assertThat(configHash(sts)).isEqualTo(after.getConfigHash());
        assertThat(awaitObject(ConfigMap.class, "change-config", c -> true).getData())
                .containsEntry("pikv.store.budget-bytes", String.valueOf(128L << 20));
        assertThat(after.getLastDecision().getReason()).isEqualTo("ConfigChanged");
        await().atMost(WAIT).until(() -> events("change", "ConfigChanged").size() == 1);
        markShardsReady("change"); // more reconciles of the same generation: nothing told twice
        awaitStatus("change", s -> Conditions.isTrue(s.getConditions(), "Ready"));
        assertThat(writtenEvents("change", "ConfigChanged")).singleElement()
                .satisfies(e -> assertThat(e.getCount()).isEqualTo(1));
    }

    /**
     * An object of one of the cluster's names that is not the cluster's (a ConfigMap of the user's own): nothing is
     * applied over it, status and an event say which and what to do, and the cluster is made once it is gone.
     */
    @Test
    void anObjectOfTheClustersNameThatIsNotItsOwnStallsItUntilItIsGone() throws Exception {
        client.configMaps().inNamespace(NS).resource(new io.fabric8.kubernetes.api.model.ConfigMapBuilder()
                .withNewMetadata().withName("squat-config").withNamespace(NS).endMetadata()
                .addToData("mine", "yes").build()).create();
        create(TestClusters.small("squat", NS));
        PiKVClusterStatus stalled = awaitStatus("squat", s -> Conditions.isTrue(s.getConditions(), "Stalled"));
        assertThat(condition(stalled, "Degraded").getReason()).isEqualTo("NameTaken");
        assertThat(condition(stalled, "Degraded").getMessage()).startsWith("ConfigMap " + NS + "/squat-config already "
                + "exists and is not this cluster's (no label app.kubernetes.io/managed-by=pikv-operator, no owner "
                + "reference to this PiKVCluster): delete or rename it, or give the cluster another name.");
        assertThat(condition(stalled, "Reconciling").getStatus()).isEqualTo("False");
        assertThat(condition(stalled, "Ready").getStatus()).isEqualTo("False");
        assertThat(client.apps().statefulSets().inNamespace(NS).withName("squat-shard").get()).isNull();
        assertThat(client.configMaps().inNamespace(NS).withName("squat-config").get().getData())
                .containsOnly(java.util.Map.entry("mine", "yes"));
        // Recorded after the status write the wait above saw: waited for too.
        await().atMost(WAIT).untilAsserted(() -> assertThat(writtenEvents("squat", "NameTaken")).singleElement());
        // A failed reconcile in between (Degraded then says ReconcileFailed, Stalled still NameTaken) does not make the
        // same sentence told again once the name is found taken again.
        await().atMost(WAIT).untilAsserted(() -> {
            reconciler.updateErrorStatus(get("squat"), retryContext(false), new IllegalStateException("API down"));
            assertThat(condition(get("squat").getStatus(), "Degraded").getReason()).isEqualTo("ReconcileFailed");
        });
        awaitStatus("squat", s -> "NameTaken".equals(condition(s, "Degraded").getReason()));
        awaitToldOnce("squat", "NameTaken");
        client.configMaps().inNamespace(NS).withName("squat-config").delete();
        awaitObject(StatefulSet.class, "squat-shard", sts -> true);
        PiKVClusterStatus made = awaitStatus("squat", s -> !Conditions.isTrue(s.getConditions(), "Stalled"));
        assertThat(condition(made, "Degraded").getReason()).isEqualTo("SpecValid");
    }

    /** One of the cluster's objects whose label was removed by hand: labelled again, not reported as missing. */
    @Test
    void anOwnObjectThatLostItsLabelIsLabelledAgain() {
        create(TestClusters.small("relabel", NS));
        awaitStatus("relabel", s -> s.getShardMapEpoch() != null);
        awaitObject(StatefulSet.class, "relabel-shard", sts -> true);
        client.apps().statefulSets().inNamespace(NS).withName("relabel-shard").edit(sts -> {
            sts.getMetadata().getLabels().remove("app.kubernetes.io/managed-by");
            return sts;
        });
        awaitObject(StatefulSet.class, "relabel-shard", sts -> "pikv-operator".equals(
                sts.getMetadata().getLabels().get("app.kubernetes.io/managed-by")));
        // Applied by the next reconcile, once the informers hold it: not created again and refused (409) at once.
        await().during(Duration.ofSeconds(3)).atMost(WAIT).until(() -> events("relabel", "ReconcileFailed").isEmpty()
                && "SpecValid".equals(condition(get("relabel").getStatus(), "Degraded").getReason()));
    }

    /** A status cleared by hand (the generation unchanged) is written again by the next reconcile, not taken as stale. */
    @Test
    void aStatusClearedByHandIsWrittenAgain() {
        create(TestClusters.small("cleared", NS));
        awaitStatus("cleared", s -> s.getShardMapEpoch() != null);
        awaitObject(StatefulSet.class, "cleared-shard", sts -> true);
        markShardsReady("cleared"); // Ready: no periodic reconcile (every 2 s before) writes the status back first
        awaitStatus("cleared", s -> Conditions.isTrue(s.getConditions(), "Ready"));
        client.resources(PiKVCluster.class).inNamespace(NS).withName("cleared").subresource("status")
                .patch(io.fabric8.kubernetes.client.dsl.base.PatchContext.of(
                        io.fabric8.kubernetes.client.dsl.base.PatchType.JSON),
                        "[{\"op\":\"add\",\"path\":\"/status\",\"value\":{}}]");
        await().atMost(WAIT).until(() -> get("cleared").getStatus() == null
                || get("cleared").getStatus().getShardMapEpoch() == null);
        // Any event of the cluster's objects brings a reconcile (a status change alone does not).
        client.apps().statefulSets().inNamespace(NS).withName("cleared-shard").edit(sts -> {
            sts.getMetadata().getLabels().remove("app.kubernetes.io/managed-by");
            return sts;
        });
        PiKVClusterStatus again = awaitStatus("cleared", s -> s.getShardMapEpoch() != null);
        assertThat(condition(again, "Degraded").getReason()).isEqualTo("SpecValid");
    }

    /**
     * A cluster deleted and created again under the same name before the garbage collector removed the old one's
     * objects (the mock server has none: the test plays it): they are not taken over, the new cluster is stalled
     * naming them, and it is made once they are gone.
     */
    @Test
    void objectsOfADeletedClusterOfTheSameNameStallItsSuccessorUntilTheyAreGone() throws Exception {
        create(TestClusters.small("reborn", NS));
        awaitStatus("reborn", s -> s.getShardMapEpoch() != null);
        awaitObject(StatefulSet.class, "reborn-shard", sts -> true);
        markShardsReady("reborn");
        awaitStatus("reborn", s -> s.getReadyShards() != null && s.getReadyShards() == 2);
        String oldUid = get("reborn").getMetadata().getUid();
        client.resources(PiKVCluster.class).inNamespace(NS).withName("reborn").delete();
        await().atMost(WAIT).until(() -> get("reborn") == null);
        String newUid = create(TestClusters.small("reborn", NS)).getMetadata().getUid();
        assertThat(newUid).isNotEqualTo(oldUid);
        PiKVClusterStatus stalled = awaitStatus("reborn", s -> Conditions.isTrue(s.getConditions(), "Stalled"));
        assertThat(condition(stalled, "Degraded").getReason()).isEqualTo("NameTaken");
        assertThat(condition(stalled, "Degraded").getMessage()).contains("StatefulSet " + NS + "/reborn-shard already "
                + "exists and is not this cluster's (it belongs to a deleted PiKVCluster of this name, uid " + oldUid
                + ": it goes once the garbage collector removes it)");
        // The old cluster's pods are not the new one's: none counted (they were as its own, ready ones included).
        assertThat(stalled.getShards()).isZero();
        assertThat(stalled.getReadyShards()).isZero();
        assertThat(client.apps().statefulSets().inNamespace(NS).withName("reborn-shard").get().getMetadata()
                .getOwnerReferences()).singleElement().satisfies(o -> assertThat(o.getUid()).isEqualTo(oldUid));
        client.apps().statefulSets().inNamespace(NS).withName("reborn-shard").delete();
        client.configMaps().inNamespace(NS).withName("reborn-config").delete();
        client.services().inNamespace(NS).withName("reborn-shards").delete();
        client.policy().v1().podDisruptionBudget().inNamespace(NS).withName("reborn-shard").delete();
        StatefulSet made = awaitObject(StatefulSet.class, "reborn-shard", sts -> newUid.equals(
                sts.getMetadata().getOwnerReferences().get(0).getUid()));
        assertThat(made.getMetadata().getOwnerReferences()).singleElement();
        awaitStatus("reborn", s -> !Conditions.isTrue(s.getConditions(), "Stalled"));
    }

    /** A ConfigMap deleted behind the operator's back: written anew under a higher epoch, and the change is told. */
    @Test
    void aDeletedConfigMapIsWrittenAnewAndTheNewControlStateTold() throws Exception {
        create(TestClusters.small("cmgone", NS));
        PiKVClusterStatus before = awaitStatus("cmgone", s -> s.getShardMapEpoch() != null);
        awaitObject(ConfigMap.class, "cmgone-config", c -> true);
        client.configMaps().inNamespace(NS).withName("cmgone-config").delete();
        PiKVClusterStatus after = awaitStatus("cmgone", s -> s.getShardMapEpoch() != null
                && s.getShardMapEpoch() > before.getShardMapEpoch());
        assertThat(after.getLastDecision().getReason()).isEqualTo("Rebalanced");
        assertThat(after.getLastDecision().getMessage()).startsWith("Control state epoch " + before.getShardMapEpoch()
                + " → " + after.getShardMapEpoch() + " with the spec unchanged: ConfigMap cmgone-config did not hold "
                + "the control state status recorded");
        assertThat(io.pikv.operator.model.ShardCluster.readControlState(awaitObject(ConfigMap.class, "cmgone-config",
                c -> true)).epoch()).isEqualTo(after.getShardMapEpoch());
        await().atMost(WAIT).untilAsserted(() -> assertThat(writtenEvents("cmgone", "Rebalanced")).singleElement());
    }

    @Test
    void invalidSpecDegradesWithAnEventAndLeavesTheShardsAlone() throws Exception {
        create(TestClusters.small("invalid", NS));
        awaitStatus("invalid", s -> s.getObservedGeneration() != null && s.getLastValidGeneration() != null);
        StatefulSet stsBefore = awaitObject(StatefulSet.class, "invalid-shard", s -> true);
        ConfigMap cmBefore = awaitObject(ConfigMap.class, "invalid-config", c -> true);

        client.resources(PiKVCluster.class).inNamespace(NS).withName("invalid").edit(c -> {
            c.getSpec().getModel().setTopK(9);
            c.getSpec().setShards(3);
            return c;
        });
        PiKVClusterStatus status = awaitStatus("invalid", s -> Conditions.isTrue(s.getConditions(), "Degraded"));
        Condition degraded = condition(status, "Degraded");
        assertThat(degraded.getReason()).isEqualTo("SpecInvalid");
        assertThat(degraded.getMessage()).contains("Generation 2 is invalid", "spec.model.topK",
                "lower topK or raise experts", "keep running the spec of generation 1");
        assertThat(status.getObservedGeneration()).isEqualTo(2);
        assertThat(status.getLastValidGeneration()).isEqualTo(1);
        assertThat(status.getDesiredShards()).isEqualTo(2);
        List<Event> warnings = await().atMost(WAIT).until(() -> events("invalid", "SpecRejected"), l -> !l.isEmpty());
        assertThat(warnings).singleElement().satisfies(e -> {
            assertThat(e.getType()).isEqualTo("Warning");
            assertThat(e.getMessage()).contains("spec.model.topK");
        });
        // The last valid spec keeps running: the objects are the ones from before, untouched.
        assertThat(client.apps().statefulSets().inNamespace(NS).withName("invalid-shard").get().getMetadata()
                .getResourceVersion()).isEqualTo(stsBefore.getMetadata().getResourceVersion());
        assertThat(client.configMaps().inNamespace(NS).withName("invalid-config").get().getMetadata()
                .getResourceVersion()).isEqualTo(cmBefore.getMetadata().getResourceVersion());

        // A failed reconcile in between (Degraded then says ReconcileFailed) does not make the same verdict told again.
        // (The cluster, not ready, is reconciled every 2 s, which may write SpecInvalid again between the failure's
        // write and its read: written and read again until the read sees it.)
        await().atMost(WAIT).untilAsserted(() -> {
            reconciler.updateErrorStatus(get("invalid"), retryContext(false),
                    new IllegalStateException("forced refusal"));
            assertThat(condition(get("invalid").getStatus(), "Degraded").getReason()).isEqualTo("ReconcileFailed");
        });
        client.resources(PiKVCluster.class).inNamespace(NS).withName("invalid").edit(c -> {
            c.getMetadata().setAnnotations(java.util.Map.of("poke", "1")); // a reconcile, same generation
            return c;
        });
        awaitStatus("invalid", s -> "SpecInvalid".equals(condition(s, "Degraded").getReason()));
        awaitToldOnce("invalid", "SpecRejected");

        // The running spec's ConfigMap deleted while the spec is invalid: written anew under a higher epoch, and told.
        long epoch = get("invalid").getStatus().getShardMapEpoch();
        client.configMaps().inNamespace(NS).withName("invalid-config").delete();
        PiKVClusterStatus reEpoched = awaitStatus("invalid", s -> s.getShardMapEpoch() > epoch);
        assertThat(reEpoched.getLastDecision().getReason()).isEqualTo("Rebalanced");
        assertThat(condition(reEpoched, "Degraded").getReason()).isEqualTo("SpecInvalid");
        assertThat(await().atMost(WAIT).until(() -> writtenEvents("invalid", "Rebalanced"), l -> !l.isEmpty()))
                .singleElement().satisfies(e -> assertThat(e.getMessage()).startsWith("Control state epoch " + epoch
                        + " → " + reEpoched.getShardMapEpoch() + " with the spec unchanged"));

        // Fixed: Degraded clears and the new spec runs.
        client.resources(PiKVCluster.class).inNamespace(NS).withName("invalid").edit(c -> {
            c.getSpec().getModel().setTopK(2);
            return c;
        });
        PiKVClusterStatus fixed = awaitStatus("invalid", s -> s.getLastValidGeneration() == 3);
        assertThat(condition(fixed, "Degraded").getStatus()).isEqualTo("False");
        awaitObject(StatefulSet.class, "invalid-shard", s -> s.getSpec().getReplicas() == 3);
        // Told once over the whole story: one Event, counted once (a repeat would raise its count, not add an Event).
        awaitToldOnce("invalid", "SpecRejected");
    }

    /**
     * A valid generation whose objects were applied but whose status write was lost (status still names the one
     * before), then an invalid spec before the retry: the shards keep the generation they run — the ConfigMap says
     * which — and are not rolled back to the one status names.
     */
    @Test
    void anInvalidSpecAfterALostStatusWriteKeepsTheGenerationTheShardsRun() throws Exception {
        create(TestClusters.small("lost", NS));
        PiKVClusterStatus first = awaitStatus("lost", s -> s.getLastValidGeneration() != null);
        String firstSpec = first.getLastValidSpec();
        client.resources(PiKVCluster.class).inNamespace(NS).withName("lost").edit(c -> {
            c.getSpec().setShards(3);
            return c;
        });
        awaitStatus("lost", s -> s.getLastValidGeneration() != null && s.getLastValidGeneration() == 2);
        assertThat(awaitObject(StatefulSet.class, "lost-shard", s -> s.getSpec().getReplicas() == 3)
                .getMetadata().getAnnotations()).containsEntry(ShardCluster.RENDERED_GENERATION, "2");
        // Status as a lost write leaves it: generation 1's (observed as the next generation, so that it is read).
        client.resources(PiKVCluster.class).inNamespace(NS).withName("lost").editStatus(x -> {
            x.getStatus().setLastValidSpec(firstSpec);
            x.getStatus().setLastValidGeneration(1L);
            x.getStatus().setDesiredShards(first.getDesiredShards());
            x.getStatus().setConfigHash(first.getConfigHash());
            x.getStatus().setObservedGeneration(3L);
            return x;
        });
        // Generation 2's Scaled event is recorded after its status: counted once it is there, so that the one
        // awaited below is the one told again.
        await().atMost(WAIT).until(() -> !writtenEvents("lost", "Scaled").isEmpty());
        int scaledBefore = writtenEvents("lost", "Scaled").stream().mapToInt(e -> e.getCount() == null ? 1
                : e.getCount()).sum();
        client.resources(PiKVCluster.class).inNamespace(NS).withName("lost").edit(c -> {
            c.getSpec().getModel().setTopK(9);
            return c;
        });
        PiKVClusterStatus status = awaitStatus("lost", s -> s.getObservedGeneration() == 3
                && Conditions.isTrue(s.getConditions(), "Degraded"));
        assertThat(condition(status, "Degraded").getMessage()).contains("Generation 3 is invalid",
                "keep running the spec of generation 2");
        assertThat(status.getLastValidGeneration()).isEqualTo(2);
        assertThat(client.apps().statefulSets().inNamespace(NS).withName("lost-shard").get().getSpec().getReplicas())
                .isEqualTo(3);
        // Generation 2 reaches status only now: what applying it decided is told again, then the rejection.
        assertThat(status.getDesiredShards()).isEqualTo(3);
        assertThat(status.getLastDecision().getReason()).isEqualTo("SpecRejected");
        await().atMost(WAIT).until(() -> writtenEvents("lost", "Scaled").stream()
                .mapToInt(e -> e.getCount() == null ? 1 : e.getCount()).sum() == scaledBefore + 1);
    }

    @Inject
    PiKVClusterReconciler reconciler;

    @Inject
    EventRecorder recorder;

    @Inject
    io.quarkiverse.operatorsdk.runtime.QuarkusConfigurationService sdk;

    /**
     * The recorder writes the events already recorded after the SDK has stopped (its shutdown observer runs after the
     * SDK's): that needs the SDK's stop to leave the Kubernetes client open (its producer closes it with the beans).
     */
    @Test
    void theSdksStopLeavesTheClientOpenForTheEventsLeftToWrite() {
        assertThat(sdk.closeClientOnStop()).isFalse();
    }

    /** Events the operator recorded so far, once its writer has sent them (events are written off the reconcile). */
    private List<Event> writtenEvents(String cluster, String reason) throws Exception {
        recorder.awaitWritten(WAIT);
        return events(cluster, reason);
    }

    /** A reconcile context that answers only what the error path asks: its retry state, the client, no StatefulSet. */
    private Context<PiKVCluster> retryContext(boolean lastAttempt) {
        return retryContext(lastAttempt, null);
    }

    /** {@link #retryContext(boolean)} whose informer cache holds {@code shards} as the cluster's StatefulSet. */
    @SuppressWarnings("unchecked")
    private Context<PiKVCluster> retryContext(boolean lastAttempt, StatefulSet shards) {
        RetryInfo retry = new RetryInfo() {
            @Override
            public int getAttemptCount() {
                return lastAttempt ? 10 : 1;
            }

            @Override
            public boolean isLastAttempt() {
                return lastAttempt;
            }
        };
        return (Context<PiKVCluster>) java.lang.reflect.Proxy.newProxyInstance(getClass().getClassLoader(),
                new Class<?>[] {Context.class}, (proxy, method, args) -> switch (method.getName()) {
                    case "getRetryInfo" -> java.util.Optional.of(retry);
                    case "getClient" -> client;
                    case "getSecondaryResource" -> java.util.Optional.ofNullable(args[0] == StatefulSet.class ? shards
                            : null);
                    default -> throw new UnsupportedOperationException(method.getName());
                });
    }

    @Test
    void pastTheLastRetryAFailedClusterIsTriedAgainAtTheProgressInterval() {
        create(TestClusters.small("exhausted", NS));
        awaitStatus("exhausted", s -> s.getShardMapEpoch() != null);
        // Ready: looked at again only at the 5-minute resync, so no periodic reconcile writes between the calls below.
        markShardsReady("exhausted");
        awaitStatus("exhausted", s -> Conditions.isTrue(s.getConditions(), "Ready"));
        ErrorStatusUpdateControl<PiKVCluster> retrying = reconciler.updateErrorStatus(get("exhausted"),
                retryContext(false), new IllegalStateException("forced refusal"));
        assertThat(retrying.isNoRetry()).isFalse();
        assertThat(retrying.getScheduleDelay()).isEmpty();

        // The SDK's last retry: without a reschedule it would wait for the next event or its 10-hour maximum.
        ErrorStatusUpdateControl<PiKVCluster> exhausted = reconciler.updateErrorStatus(get("exhausted"),
                retryContext(true), new IllegalStateException("forced refusal"));
        assertThat(exhausted.isNoRetry()).isTrue();
        assertThat(exhausted.getScheduleDelay()).contains(2000L);
        // One message for both (a new round of retries writes no status and sends no event of its own).
        List<Event> failed = await().atMost(WAIT).until(() -> writtenEvents("exhausted", "ReconcileFailed"),
                l -> !l.isEmpty()); // once the recorder has written all it was given: a second write would show
        assertThat(failed).extracting(Event::getMessage)
                .containsOnly("Reconcile failed (retrying with backoff): forced refusal");
        assertThat(failed).extracting(Event::getCount).containsOnly(1);
    }

    /** The same failure again for a newer generation: the conditions say the newer generation, not the one before. */
    @Test
    void theSameFailureOfANewerGenerationMovesTheConditionsGeneration() {
        create(TestClusters.small("repeat", NS));
        awaitStatus("repeat", s -> s.getShardMapEpoch() != null);
        markShardsReady("repeat"); // no periodic reconcile between the calls below (see above)
        awaitStatus("repeat", s -> Conditions.isTrue(s.getConditions(), "Ready"));
        PiKVCluster cluster = get("repeat");
        long g = cluster.getMetadata().getGeneration();
        reconciler.updateErrorStatus(cluster, retryContext(false), new IllegalStateException("webhook denied"));
        assertThat(condition(get("repeat").getStatus(), "Degraded").getObservedGeneration()).isEqualTo(g);
        PiKVCluster newer = get("repeat");
        newer.getMetadata().setGeneration(g + 1);
        reconciler.updateErrorStatus(newer, retryContext(false), new IllegalStateException("webhook denied"));
        PiKVClusterStatus now = get("repeat").getStatus();
        assertThat(condition(now, "Degraded").getObservedGeneration()).isEqualTo(g + 1);
        assertThat(condition(now, "Degraded").getMessage())
                .isEqualTo("Reconcile failed (retrying with backoff): webhook denied");
        assertThat(condition(now, "Reconciling").getObservedGeneration()).isEqualTo(g + 1);
    }

    @Test
    void whileReconcilesFailReadinessStillFollowsTheShards() throws Exception {
        create(TestClusters.small("flaky", NS));
        awaitStatus("flaky", s -> s.getShardMapEpoch() != null);
        markShardsReady("flaky");
        awaitStatus("flaky", s -> Conditions.isTrue(s.getConditions(), "Ready"));
        // Reconciles fail (say an admission policy refuses the PodDisruptionBudget) while a shard pod crashes.
        StatefulSet sts = client.apps().statefulSets().inNamespace(NS).withName("flaky-shard").get();
        sts.getStatus().setReadyReplicas(1);
        reconciler.updateErrorStatus(get("flaky"), retryContext(false, sts), new IllegalStateException("PDB refused"));
        PiKVClusterStatus down = get("flaky").getStatus();
        assertThat(condition(down, "Degraded").getReason()).isEqualTo("ReconcileFailed");
        assertThat(condition(down, "Ready").getStatus()).isEqualTo("False");
        assertThat(condition(down, "Ready").getMessage()).isEqualTo("1/2 shards ready.");
        assertThat(down.getReadyShards()).isEqualTo(1);

        // The same failure once the pod is back: Ready follows, and the failure is not told again.
        sts.getStatus().setReadyReplicas(2);
        reconciler.updateErrorStatus(get("flaky"), retryContext(false, sts), new IllegalStateException("PDB refused"));
        PiKVClusterStatus up = get("flaky").getStatus();
        assertThat(condition(up, "Ready").getStatus()).isEqualTo("True");
        assertThat(up.getReadyShards()).isEqualTo(2);
        assertThat(condition(up, "Degraded").getReason()).isEqualTo("ReconcileFailed");
        assertThat(writtenEvents("flaky", "ReconcileFailed")).singleElement()
                .satisfies(e -> assertThat(e.getCount()).isEqualTo(1));
    }

    @Test
    void aFailureIsToldByAnEventAlsoWhenItsStatusCannotBeWritten() throws Exception {
        create(TestClusters.small("unwritable", NS));
        awaitStatus("unwritable", s -> s.getLastValidGeneration() != null);
        PiKVCluster cluster = get("unwritable");
        // Only this call's status write fails: the cluster is renamed in the object handed over, so the operator's own
        // reconciles (of the real name) cannot take the refusal meant for it, and the check that the cluster is still
        // there finds it under the name it now answers to.
        cluster.getMetadata().setName("unwritable-twin");
        PiKVCluster twin = TestClusters.small("unwritable-twin", NS);
        twin.getMetadata().setUid(cluster.getMetadata().getUid());
        server.expect().patch().withPath("/apis/pikv.io/v1alpha1/namespaces/" + NS
                        + "/pikvclusters/unwritable-twin/status")
                .andReturn(503, new StatusBuilder().withStatus("Failure").withCode(503).withMessage("etcd is slow")
                        .build()).once();
        server.expect().get().withPath("/apis/pikv.io/v1alpha1/namespaces/" + NS + "/pikvclusters/unwritable-twin")
                .andReturn(200, twin).once();
        reconciler.updateErrorStatus(cluster, retryContext(false), new IllegalStateException("no room"));
        assertThat(writtenEvents("unwritable-twin", "ReconcileFailed")).singleElement().satisfies(e -> assertThat(
                e.getMessage()).isEqualTo("Reconcile failed (retrying with backoff): no room"));
    }

    @Test
    void aFailureApplyingTheFixOfAnInvalidSpecIsNoLongerStalledOnIt() {
        PiKVCluster invalid = TestClusters.small("fixing", NS);
        invalid.getSpec().getModel().setTopK(9);
        create(invalid);
        awaitStatus("fixing", s -> Conditions.isTrue(s.getConditions(), "Stalled"));
        // The fix (a valid spec) fails to apply: the operator retries it, so kstatus tools see it reconciling, not
        // stalled on the spec error that is gone.
        PiKVCluster fixed = get("fixing");
        fixed.getSpec().getModel().setTopK(2);
        reconciler.updateErrorStatus(fixed, retryContext(false), new IllegalStateException("forced refusal"));
        PiKVClusterStatus now = get("fixing").getStatus();
        assertThat(condition(now, "Stalled").getStatus()).isEqualTo("False");
        assertThat(condition(now, "Reconciling").getStatus()).isEqualTo("True");
        assertThat(condition(now, "Degraded").getReason()).isEqualTo("ReconcileFailed");
    }

    @Test
    void aLateStatusOfADeletedClusterIsNotWrittenIntoOneCreatedUnderItsName() throws Exception {
        create(TestClusters.small("again", NS));
        awaitStatus("again", s -> s.getLastValidSpec() != null);
        PiKVCluster old = get("again");
        client.resource(old).delete();
        await().atMost(WAIT).until(() -> get("again") == null);
        PiKVCluster fresh = TestClusters.small("again", NS);
        fresh.getSpec().getModel().setTopK(9); // never valid: nothing of the old spec may run for it
        create(fresh);
        awaitStatus("again", s -> Conditions.isTrue(s.getConditions(), "Degraded"));
        assertThat(get("again").getMetadata().getUid()).isNotEqualTo(old.getMetadata().getUid());

        // The old object's reconcile fails late: its status (with the old spec as the one to run) must not land.
        reconciler.updateErrorStatus(old, retryContext(false), new IllegalStateException("late failure"));
        PiKVClusterStatus now = get("again").getStatus();
        assertThat(now.getLastValidSpec()).isNull();
        assertThat(condition(now, "Degraded").getReason()).isEqualTo("SpecInvalid");
        assertThat(writtenEvents("again", "ReconcileFailed")).isEmpty();
    }

    @Test
    void aFailureIsSaidInWordsWithoutStackTraces() {
        io.fabric8.kubernetes.client.KubernetesClientException refused = new io.fabric8.kubernetes.client
                .KubernetesClientException(new StatusBuilder().withCode(422).withMessage("spec.replicas: Invalid")
                .build());
        Exception aggregated = new io.javaoperatorsdk.operator.AggregatedOperatorException("Exception(s) during workflow "
                + "execution.", java.util.Map.of("shards", new IllegalStateException("wrapped", refused),
                "io.pikv.operator.dependent.ShardConfigMapDependent", new IllegalStateException("no room")));
        assertThat(aggregated.getMessage()).contains("\tat "); // the SDK's own message: every stack trace
        assertThat(PiKVClusterReconciler.rootMessage(aggregated))
                .isEqualTo("ShardConfigMapDependent: no room; shards: 422 spec.replicas: Invalid");
        assertThat(PiKVClusterReconciler.rootMessage(new io.javaoperatorsdk.operator.OperatorException(aggregated)))
                .as("wrapped, as the SDK throws it").isEqualTo(PiKVClusterReconciler.rootMessage(aggregated));
        assertThat(PiKVClusterReconciler.rootMessage(new RuntimeException("x".repeat(5000))))
                .hasSize(PiKVClusterReconciler.MAX_FAILURE_MESSAGE + 1).endsWith("…");
    }

    @Test
    void failedReconcileDegradesWithAWarningAndRecovers() throws Exception {
        create(TestClusters.small("failing", NS));
        awaitStatus("failing", s -> s.getLastValidGeneration() != null);
        // The API server refuses the next two StatefulSet updates; the reconciles that need them fail.
        server.expect().put().withPath("/apis/apps/v1/namespaces/" + NS + "/statefulsets/failing-shard")
                .andReturn(422, new StatusBuilder().withStatus("Failure").withCode(422).withReason("Invalid")
                        .withMessage("forced refusal").build()).times(2);
        client.resources(PiKVCluster.class).inNamespace(NS).withName("failing")
                .edit(c -> {
                    c.getSpec().setMemoryPerShard(new Quantity("96Mi"));
                    return c;
                });
        PiKVClusterStatus failed = awaitStatus("failing", s -> Conditions.isTrue(s.getConditions(), "Degraded")
                && "ReconcileFailed".equals(condition(s, "Degraded").getReason()));
        assertThat(condition(failed, "Degraded").getMessage()).startsWith("Reconcile failed (retrying with backoff):")
                .contains("forced refusal").doesNotContain("\tat ", "Exception:")
                .hasSizeLessThan(PiKVClusterReconciler.MAX_FAILURE_MESSAGE + 60);
        assertThat(failed.getLastValidGeneration()).as("generation 2 not applied yet").isEqualTo(1);
        // For kstatus tools the operator is still at work: Reconciling, not Stalled.
        assertThat(condition(failed, "Reconciling").getStatus()).isEqualTo("True");
        assertThat(condition(failed, "Reconciling").getReason()).isEqualTo("ReconcileFailed");
        assertThat(condition(failed, "Stalled").getStatus()).isEqualTo("False");
        List<Event> warnings = await().atMost(WAIT).until(() -> events("failing", "ReconcileFailed"),
                l -> !l.isEmpty());
        assertThat(warnings).allSatisfy(e -> assertThat(e.getType()).isEqualTo("Warning"));

        // The SDK retries; once the server takes the update, generation 2 runs and Degraded clears.
        PiKVClusterStatus recovered = awaitStatus("failing", s -> s.getLastValidGeneration() == 2);
        assertThat(condition(recovered, "Degraded").getStatus()).isEqualTo("False");
        awaitObject(StatefulSet.class, "failing-shard", s -> configHash(s).equals(recovered.getConfigHash()));
        // The change told once, however many tries it took: one Event, counted once.
        awaitToldOnce("failing", "ConfigChanged");
    }

    /**
     * The StatefulSet is applied last: a PodDisruptionBudget the API server refuses (a policy webhook, a quota) holds
     * a new generation's StatefulSet back, so the shards never run a config that status does not name. (Applied beside
     * it, the StatefulSet rolled to generation 2 while status, its reconcile failed, still named generation 1's.)
     */
    @Test
    void aRefusedDisruptionBudgetHoldsTheStatefulSetBack() throws Exception {
        create(TestClusters.small("pdbfail", NS));
        PiKVClusterStatus first = awaitStatus("pdbfail", s -> s.getLastValidGeneration() != null);
        awaitObject(PodDisruptionBudget.class, "pdbfail-shard", p -> true);
        server.expect().put().withPath("/apis/policy/v1/namespaces/" + NS + "/poddisruptionbudgets/pdbfail-shard")
                .andReturn(403, new StatusBuilder().withStatus("Failure").withCode(403).withReason("Forbidden")
                        .withMessage("denied by a policy webhook").build()).always();
        // Changed by hand (a patch), so the operator puts it back (an update), which the server refuses.
        client.policy().v1().podDisruptionBudget().inNamespace(NS).withName("pdbfail-shard").edit(p -> {
            p.getSpec().setMaxUnavailable(new io.fabric8.kubernetes.api.model.IntOrString(2));
            return p;
        });
        client.resources(PiKVCluster.class).inNamespace(NS).withName("pdbfail").edit(c -> {
            c.getSpec().setMemoryPerShard(new Quantity("96Mi"));
            return c;
        });
        PiKVClusterStatus failed = awaitStatus("pdbfail", s -> "ReconcileFailed".equals(
                condition(s, "Degraded").getReason()) && condition(s, "Degraded").getObservedGeneration() == 2);
        assertThat(condition(failed, "Degraded").getMessage()).contains("denied by a policy webhook");
        assertThat(failed.getLastValidGeneration()).isEqualTo(1);
        assertThat(failed.getConfigHash()).isEqualTo(first.getConfigHash());
        StatefulSet sts = client.apps().statefulSets().inNamespace(NS).withName("pdbfail-shard").get();
        assertThat(configHash(sts)).as("the StatefulSet still runs what status names").isEqualTo(first.getConfigHash());
        assertThat(ShardCluster.rendered(sts).generation()).isEqualTo(1);
        client.resources(PiKVCluster.class).inNamespace(NS).withName("pdbfail").delete(); // no more retries
    }

    @Test
    void scaleSubresourceChangesTheShards() throws Exception {
        // What the API server does for `kubectl scale pikv scale --replicas 4` with this CRD: it writes the count
        // to specReplicasPath, and reads statusReplicasPath and labelSelectorPath back.
        JsonNode scale = new ObjectMapper(new YAMLFactory()).readTree(Path.of("../crds/pikvclusters.pikv.io-v1.yml")
                .toFile()).at("/spec/versions/0/subresources/scale");
        String specPath = scale.get("specReplicasPath").asText();
        assertThat(specPath).isEqualTo(".spec.shards");

        create(TestClusters.small("scale", NS));
        awaitStatus("scale", s -> s.getShardMapEpoch() != null);
        markShardsReady("scale");
        awaitStatus("scale", s -> Conditions.isTrue(s.getConditions(), "Ready"));

        client.resources(PiKVCluster.class).inNamespace(NS).withName("scale").patch(
                PatchContext.of(PatchType.JSON), "[{\"op\":\"replace\",\"path\":\"" + specPath.replace('.', '/')
                        + "\",\"value\":4}]");
        StatefulSet sts = awaitObject(StatefulSet.class, "scale-shard", s -> s.getSpec().getReplicas() == 4);
        PiKVClusterStatus status = awaitStatus("scale", s -> s.getDesiredShards() == 4);
        assertThat(status.getShardMapEpoch()).isEqualTo(1);
        assertThat(condition(status, "Rebalancing").getStatus()).isEqualTo("True");
        assertThat(condition(status, "Ready").getStatus()).isEqualTo("False");
        // The scale subresource's selector selects exactly the shard pods.
        String selector = status.getSelector();
        assertThat(selector).isEqualTo(PiKVClusterResources.selector("scale"));
        for (String pair : selector.split(",")) {
            String[] kv = pair.split("=");
            assertThat(sts.getSpec().getTemplate().getMetadata().getLabels()).containsEntry(kv[0], kv[1]);
        }
        assertThat(sts.getSpec().getTemplate().getMetadata().getAnnotations()
                .get(PiKVClusterResources.ANNOTATION_CONFIG_HASH)).as("scaling does not roll the pods")
                .isEqualTo(status.getConfigHash());
        await().atMost(WAIT).until(() -> events("scale", "Scaled").size() == 1
                && events("scale", "Rebalanced").size() == 1);
        ConfigMap cm = awaitObject(ConfigMap.class, "scale-config", c -> c.getData().get("control-state.json")
                .contains("\"epoch\":1"));
        assertThat(cm.getData().get("control-state.json")).contains("\"shards\":4");

        markShardsReady("scale");
        PiKVClusterStatus settled = awaitStatus("scale", s -> Conditions.isTrue(s.getConditions(), "Ready"));
        assertThat(settled.getShards()).isEqualTo(4);
        assertThat(condition(settled, "Rebalancing").getStatus()).isEqualTo("False");
    }

    @Test
    void unchangedClusterKeepsTransitionTimesAndIsNotRewritten() {
        create(TestClusters.small("steady", NS));
        awaitStatus("steady", s -> s.getObservedGeneration() != null);
        markShardsReady("steady");
        PiKVClusterStatus ready = awaitStatus("steady", s -> Conditions.isTrue(s.getConditions(), "Ready"));
        String readySince = condition(ready, "Ready").getLastTransitionTime();
        String degradedSince = condition(ready, "Degraded").getLastTransitionTime();

        // A change applied online: a reconcile with a new decision, but the conditions keep their times.
        client.resources(PiKVCluster.class).inNamespace(NS).withName("steady").edit(c -> {
            c.getSpec().getRouting().setLambda(0.5);
            return c;
        });
        PiKVClusterStatus after = awaitStatus("steady", s -> s.getObservedGeneration() == 2
                && s.getLastValidGeneration() == 2);
        assertThat(condition(after, "Ready").getLastTransitionTime()).isEqualTo(readySince);
        assertThat(condition(after, "Degraded").getLastTransitionTime()).isEqualTo(degradedSince);
        assertThat(condition(after, "Ready").getObservedGeneration()).isEqualTo(2);
        assertThat(after.getLastDecision().getReason()).isEqualTo("SpecApplied");

        // Nothing new: reconciles (rescheduled every 2 s in tests while not ready) write nothing.
        client.apps().statefulSets().inNamespace(NS).withName("steady-shard").editStatus(s -> {
            s.getStatus().setReadyReplicas(1);
            return s;
        });
        awaitStatus("steady", s -> s.getReadyShards() == 1);
        String rv = get("steady").getMetadata().getResourceVersion();
        double reconcilesBefore = reconciles("steady");
        // Two more reconciles (else an unchanged version would prove nothing), however long a loaded machine
        // takes to run them, and then the resource is still the version they started from.
        await().atMost(Duration.ofSeconds(30)).until(() -> reconciles("steady") >= reconcilesBefore + 2);
        assertThat(get("steady").getMetadata().getResourceVersion()).isEqualTo(rv);
    }

    @Inject
    io.micrometer.core.instrument.MeterRegistry meters;

    @Inject
    io.javaoperatorsdk.operator.Operator operator;

    /** The SDK's stop waits for reconciles under way (its default, 0, interrupted them and lost their events). */
    @Test
    void stoppingWaitsForReconcilesUnderWay() {
        assertThat(operator.getConfigurationService().reconciliationTerminationTimeout())
                .isEqualTo(Duration.ofSeconds(10));
    }

    /** Reconciles of one cluster so far, by the operator's own metric. */
    private double reconciles(String cluster) {
        return meters.find(ReconcileMetrics.RECONCILES).tags("namespace", NS, "cluster", cluster).counters().stream()
                .mapToDouble(io.micrometer.core.instrument.Counter::count).sum();
    }

    @Inject
    WrittenStatuses written;

    @Test
    void deleteIsNotBlockedLeavesCleanUpToTheGarbageCollectorAndDropsTheClusterMetrics() {
        PiKVCluster created = create(TestClusters.small("gone", NS));
        awaitStatus("gone", s -> s.getObservedGeneration() != null);
        List<HasMetadata> owned = List.of(awaitObject(StatefulSet.class, "gone-shard", s -> true),
                awaitObject(ConfigMap.class, "gone-config", c -> true), awaitObject(Service.class, "gone-shards", s -> true),
                awaitObject(PodDisruptionBudget.class, "gone-shard", p -> true));
        assertThat(get("gone").getMetadata().getFinalizers()).as("no finalizer holds the deletion").isEmpty();

        String series = "cluster=\"gone\",namespace=\"" + NS + "\"";
        // Registered when the reconcile finishes, after the status write the waits above saw.
        await().atMost(WAIT).untilAsserted(() -> given().get("/q/metrics").then().statusCode(200)
                .body(containsString(series)));
        // A status written the informer has not shown back (as a write just before a deletion leaves it).
        PiKVCluster lastSeen = get("gone");
        PiKVClusterStatus unseen = new PiKVClusterStatus();
        unseen.setObservedGeneration(99L);
        written.remember(lastSeen, unseen, null);
        assertThat(written.current(lastSeen)).isSameAs(unseen);

        client.resource(created).delete();
        await().atMost(WAIT).until(() -> get("gone") == null);
        // The operator's per-cluster series leave with the cluster (on the SDK's delete event, no finalizer), and so
        // does the status last written to it.
        await().atMost(WAIT).alias("no series of the deleted cluster on /q/metrics")
                .until(() -> !given().get("/q/metrics").then().statusCode(200).extract().asString().contains(series));
        await().atMost(WAIT).alias("the deleted cluster's written status forgotten")
                .until(() -> written.current(lastSeen) == lastSeen.getStatus());
        // The mock server has no garbage collector; a real one deletes exactly the objects whose controller
        // reference names the deleted cluster's uid.
        for (HasMetadata o : owned) {
            assertThat(o.getMetadata().getOwnerReferences()).as(o.getKind()).singleElement().satisfies(r -> {
                assertThat(r.getUid()).isEqualTo(created.getMetadata().getUid());
                assertThat(r.getBlockOwnerDeletion()).isTrue();
            });
        }
    }

    @Test
    void invalidFirstSpecCreatesNothing() {
        PiKVCluster bad = TestClusters.small("never", NS);
        bad.getSpec().setMemoryPerShard(new Quantity("1Ki"));
        create(bad);
        PiKVClusterStatus status = awaitStatus("never", s -> Conditions.isTrue(s.getConditions(), "Degraded"));
        assertThat(condition(status, "Degraded").getMessage()).contains("spec.memoryPerShard", "raise it to at least");
        assertThat(condition(status, "Ready").getReason()).isEqualTo("NoValidSpec");
        assertThat(status.getLastValidSpec()).isNull();
        assertThat(client.apps().statefulSets().inNamespace(NS).withName("never-shard").get()).isNull();
        assertThat(client.configMaps().inNamespace(NS).withName("never-config").get()).isNull();
    }

    @Test
    void aQuantityTheClientCannotParseIsAViolationNotAnUnreadableCluster() {
        // fabric8 refuses "1e3Mi" and "" as quantities, which the CRD's int-or-string schema lets through: read as
        // given, they reach the validator instead of making the cluster (and the informer's list) unreadable.
        PiKVCluster bad = TestClusters.small("unparsed", NS);
        Quantity exponentAndUnit = new Quantity();
        exponentAndUnit.setAmount("1e3Mi");
        exponentAndUnit.setFormat("");
        bad.getSpec().setMemoryPerShard(exponentAndUnit);
        Quantity empty = new Quantity();
        empty.setAmount("");
        empty.setFormat("");
        bad.getSpec().getSidecar().setResources(new io.fabric8.kubernetes.api.model.ResourceRequirementsBuilder()
                .addToLimits("cpu", empty).build());
        create(bad);
        try {
            PiKVClusterStatus status = awaitStatus("unparsed", s -> Conditions.isTrue(s.getConditions(), "Degraded"));
            assertThat(condition(status, "Degraded").getMessage()).contains("spec.memoryPerShard",
                    "'1e3Mi' is not a quantity of bytes", "spec.sidecar.resources.limits.cpu", "'' is not a quantity");
            assertThat(client.apps().statefulSets().inNamespace(NS).withName("unparsed-shard").get()).isNull();
        } finally {
            client.resources(PiKVCluster.class).inNamespace(NS).withName("unparsed").delete();
        }
    }

    @Test
    void aLastValidSpecThisVersionRefusesIsNotRendered() {
        // As an older operator left it: a spec it accepted (256Mi above the budget was its rule), kept in status as
        // the last valid one. Under this version's rule (512Mi plus the bookkeeping) it is invalid.
        PiKVCluster c = TestClusters.small("upgraded", NS);
        c.getSpec().getSidecar().setResources(new io.fabric8.kubernetes.api.model.ResourceRequirementsBuilder()
                .addToLimits("memory", new Quantity("320Mi")).build());
        String oldSpec = io.pikv.operator.status.StatusJson.write(c.getSpec());
        create(c);
        awaitStatus("upgraded", s -> Conditions.isTrue(s.getConditions(), "Degraded"));
        // The status the older operator wrote (a later observed generation, so that it is the one the operator reads).
        client.resources(PiKVCluster.class).inNamespace(NS).withName("upgraded").editStatus(x -> {
            x.getStatus().setLastValidSpec(oldSpec);
            x.getStatus().setLastValidGeneration(1L);
            x.getStatus().setObservedGeneration(2L);
            return x;
        });
        client.resources(PiKVCluster.class).inNamespace(NS).withName("upgraded").edit(x -> {
            x.getSpec().getSidecar().getResources().getLimits().put("memory", new Quantity("330Mi"));
            return x;
        });
        PiKVClusterStatus status = awaitStatus("upgraded", s -> s.getObservedGeneration() == 2
                && condition(s, "Degraded").getMessage().startsWith("Generation 2"));
        assertThat(condition(status, "Degraded").getMessage()).contains(
                "Generation 2 is invalid: spec.sidecar.resources",
                "The last valid spec (generation 1) fails this operator version's checks (spec.sidecar.resources: "
                        + "memory 320Mi", "the shard pods keep running as they are, unmanaged");
        assertThat(condition(status, "Ready").getMessage()).contains("fails this operator's checks");
        assertThat(status.getLastValidSpec()).as("kept for when the spec is valid again").isEqualTo(oldSpec);
        // Rendering it would roll the shards into settings they refuse to start with: nothing is applied.
        assertThat(client.apps().statefulSets().inNamespace(NS).withName("upgraded-shard").get()).isNull();
        assertThat(client.configMaps().inNamespace(NS).withName("upgraded-config").get()).isNull();
    }

    @Test
    void exposesMetricsAndHealth() {
        create(TestClusters.small("metrics", NS));
        awaitStatus("metrics", s -> s.getObservedGeneration() != null);
        given().get("/q/health/ready").then().statusCode(200);
        given().get("/q/health/live").then().statusCode(200);
        await().atMost(WAIT).untilAsserted(() -> given().get("/q/metrics").then().statusCode(200)
                .body(containsString("pikv_operator_reconciles_total{cluster=\"metrics\",namespace=\"llm\","
                        + "result=\"applied\"}"))
                .body(containsString("pikv_operator_reconcile_duration_seconds_bucket{cluster=\"metrics\"")));
    }
}
