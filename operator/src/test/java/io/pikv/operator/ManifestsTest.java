package io.pikv.operator;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.dataformat.yaml.YAMLFactory;
import io.fabric8.kubernetes.api.model.HasMetadata;
import io.fabric8.kubernetes.api.model.rbac.PolicyRule;
import io.fabric8.kubernetes.api.model.apps.Deployment;
import io.fabric8.kubernetes.api.model.rbac.ClusterRole;
import io.fabric8.kubernetes.api.model.rbac.Role;
import io.fabric8.kubernetes.client.utils.KubernetesSerialization;
import io.pikv.api.v1alpha1.PiKVCluster;
import io.pikv.operator.model.OperatorSettings;
import io.pikv.operator.model.PiKVClusterValidator;
import io.pikv.operator.model.ShardCluster;
import org.junit.jupiter.api.Test;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.stream.Stream;

import static org.assertj.core.api.Assertions.assertThat;

/** Every install manifest parses, the kustomization lists them in order, RBAC covers the operator, examples validate. */
class ManifestsTest {
    static final Path MANIFESTS = Path.of("../manifests");
    static final KubernetesSerialization SERIALIZATION = new KubernetesSerialization();

    private static List<Path> yamlIn(Path dir) throws IOException {
        try (Stream<Path> files = Files.list(dir)) {
            return files.filter(p -> p.toString().endsWith(".yaml") && !p.getFileName().toString()
                    .equals("kustomization.yaml")).sorted().toList();
        }
    }

    private static List<HasMetadata> parse(Path file) throws IOException {
        List<HasMetadata> out = new ArrayList<>();
        for (String doc : Files.readString(file).split("(?m)^---\\s*$")) {
            if (!doc.strip().isEmpty() && !doc.lines().allMatch(l -> l.isBlank() || l.startsWith("#"))) {
                out.add(SERIALIZATION.unmarshal(doc, HasMetadata.class));
            }
        }
        return out;
    }

    @Test
    void everyManifestParsesAndIsNumberedInApplyOrder() throws IOException {
        List<Path> files = yamlIn(MANIFESTS);
        assertThat(files).extracting(p -> p.getFileName().toString()).allMatch(n -> n.matches("\\d{3}-[a-z0-9-]+\\.yaml"));
        List<String> kinds = new ArrayList<>();
        for (Path f : files) {
            List<HasMetadata> objects = parse(f);
            assertThat(objects).as(f.toString()).isNotEmpty();
            objects.forEach(o -> {
                assertThat(o.getMetadata().getName()).as(f + " names its object").isNotBlank();
                kinds.add(o.getKind());
            });
        }
        // Namespace first, then the CRD, then what refers to them.
        assertThat(kinds.subList(0, 2)).containsExactly("Namespace", "CustomResourceDefinition");
        assertThat(kinds).contains("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding",
                "Deployment", "Service");

        JsonNode kustomization = new ObjectMapper(new YAMLFactory()).readTree(MANIFESTS.resolve("kustomization.yaml")
                .toFile());
        List<String> listed = new ArrayList<>();
        kustomization.get("resources").forEach(r -> listed.add(r.asText()));
        assertThat(listed).containsExactlyElementsOf(files.stream().map(p -> p.getFileName().toString()).toList());
    }

    @Test
    void rbacGrantsWhatTheOperatorUsesAndNoDeletes() throws IOException {
        ClusterRole role = (ClusterRole) parse(MANIFESTS.resolve("030-clusterrole.yaml")).get(0);
        assertGrants(role.getRules(), "pikv.io", "pikvclusters", "get", "list", "watch");
        assertGrants(role.getRules(), "pikv.io", "pikvclusters/status", "patch");
        // The status is written with one JSON Patch only: no read of the subresource, no replace.
        assertThat(role.getRules()).filteredOn(r -> r.getResources().contains("pikvclusters/status"))
                .allSatisfy(r -> assertThat(r.getVerbs()).containsExactly("patch"));
        for (String[] owned : new String[][] {{"apps", "statefulsets"}, {"", "services"}, {"", "configmaps"},
            {"policy", "poddisruptionbudgets"}}) {
            assertGrants(role.getRules(), owned[0], owned[1], "get", "list", "watch", "create", "patch");
            // Server-side apply is fixed at build time (enable-ssa is off only in the test profile): never a PUT.
            assertThat(role.getRules()).filteredOn(r -> r.getResources().contains(owned[1]))
                    .allSatisfy(r -> assertThat(r.getVerbs()).doesNotContain("update"));
        }
        assertGrants(role.getRules(), "", "events", "get", "create", "update");
        assertThat(role.getRules()).allSatisfy(r -> {
            assertThat(r.getVerbs()).doesNotContain("delete", "*", "deletecollection");
            assertThat(r.getResources()).doesNotContain("*", "secrets", "pods");
        });
        Role leases = (Role) parse(MANIFESTS.resolve("050-leader-election-role.yaml")).get(0);
        assertGrants(leases.getRules(), "coordination.k8s.io", "leases", "get", "create", "update", "patch");

        // Users: editors and viewers of a namespace get PiKVClusters through the built-in roles' aggregation.
        List<HasMetadata> users = parse(MANIFESTS.resolve("090-user-clusterroles.yaml"));
        ClusterRole edit = (ClusterRole) users.get(0);
        ClusterRole view = (ClusterRole) users.get(1);
        assertThat(edit.getMetadata().getLabels()).containsEntry("rbac.authorization.k8s.io/aggregate-to-edit", "true")
                .containsEntry("rbac.authorization.k8s.io/aggregate-to-admin", "true");
        assertGrants(edit.getRules(), "pikv.io", "pikvclusters", "create", "update", "patch", "delete");
        assertGrants(edit.getRules(), "pikv.io", "pikvclusters/scale", "get", "update", "patch");
        assertThat(view.getMetadata().getLabels()).containsEntry("rbac.authorization.k8s.io/aggregate-to-view", "true");
        assertGrants(view.getRules(), "pikv.io", "pikvclusters", "get", "list", "watch");
        assertThat(view.getRules()).allSatisfy(r -> assertThat(r.getVerbs()).containsOnly("get", "list", "watch"));

        Deployment d = (Deployment) parse(MANIFESTS.resolve("070-deployment.yaml")).get(0);
        assertThat(d.getSpec().getTemplate().getSpec().getServiceAccountName()).isEqualTo("pikv-operator");
        var c = d.getSpec().getTemplate().getSpec().getContainers().get(0);
        assertThat(c.getReadinessProbe().getHttpGet().getPath()).isEqualTo("/q/health/ready");
        assertThat(c.getLivenessProbe().getHttpGet().getPath()).isEqualTo("/q/health/live");
        assertThat(c.getSecurityContext().getReadOnlyRootFilesystem()).isTrue();
        // The standby replica is kept apart from the leader and out of the same drain.
        assertThat(d.getSpec().getTemplate().getSpec().getTopologySpreadConstraints()).singleElement()
                .satisfies(t -> assertThat(t.getLabelSelector().getMatchLabels())
                        .isEqualTo(d.getSpec().getSelector().getMatchLabels()));
        var pdb = (io.fabric8.kubernetes.api.model.policy.v1.PodDisruptionBudget) parse(
                MANIFESTS.resolve("075-poddisruptionbudget.yaml")).get(0);
        assertThat(pdb.getSpec().getSelector().getMatchLabels()).isEqualTo(d.getSpec().getSelector().getMatchLabels());
        assertThat(pdb.getSpec().getMinAvailable().getIntVal()).isEqualTo(1);
        assertThat(pdb.getSpec().getUnhealthyPodEvictionPolicy()).isEqualTo("AlwaysAllow");
        assertThat(pdb.getMetadata().getNamespace()).isEqualTo(d.getMetadata().getNamespace());
    }

    /**
     * The client's own Lease election (what the SDK runs in the prod profile) against a mock API server: every verb it
     * uses on the Lease, taking it and renewing it, is one the leader-election Role grants. (Renewals are JSON merge
     * patches: a Role without {@code patch} loses leadership at the first renewal.)
     */
    @Test
    void theLeaderElectionRoleGrantsEveryVerbTheLeaseElectionUses() throws Exception {
        io.fabric8.kubernetes.client.server.mock.KubernetesMockServer server =
                new io.fabric8.kubernetes.client.server.mock.KubernetesMockServer(new io.fabric8.mockwebserver.Context(),
                        new io.fabric8.mockwebserver.MockWebServer(), new java.util.HashMap<>(),
                        new io.fabric8.kubernetes.client.server.mock.KubernetesCrudDispatcher(), false);
        server.init();
        java.util.Set<String> verbs = new java.util.TreeSet<>();
        try (io.fabric8.kubernetes.client.KubernetesClient client = server.createClient()) {
            java.util.concurrent.CountDownLatch leading = new java.util.concurrent.CountDownLatch(1);
            var elector = client.leaderElector().withConfig(
                    new io.fabric8.kubernetes.client.extended.leaderelection.LeaderElectionConfigBuilder()
                            .withName("pikv-operator")
                            .withLock(new io.fabric8.kubernetes.client.extended.leaderelection.resourcelock.LeaseLock(
                                    "pikv-system", "pikv-operator-lease", "replica-1"))
                            .withLeaseDuration(java.time.Duration.ofSeconds(2))
                            .withRenewDeadline(java.time.Duration.ofMillis(1500))
                            .withRetryPeriod(java.time.Duration.ofMillis(100))
                            .withLeaderCallbacks(new io.fabric8.kubernetes.client.extended.leaderelection.LeaderCallbacks(
                                    leading::countDown, () -> { }, id -> { }))
                            .build()).build();
            var running = elector.start();
            assertThat(leading.await(10, java.util.concurrent.TimeUnit.SECONDS)).as("elected").isTrue();
            int afterElection = server.getRequestCount();
            // A few renewals (one every retry period of 100 ms).
            org.awaitility.Awaitility.await().atMost(java.time.Duration.ofSeconds(10))
                    .until(() -> server.getRequestCount() >= afterElection + 6);
            running.cancel(true);
        } finally {
            for (var r = server.takeRequest(1, java.util.concurrent.TimeUnit.SECONDS); r != null;
                 r = server.takeRequest(100, java.util.concurrent.TimeUnit.MILLISECONDS)) {
                if (r.getPath().contains("/leases")) {
                    verbs.add(switch (r.getMethod()) {
                        case "GET" -> "get";
                        case "POST" -> "create";
                        case "PUT" -> "update";
                        case "PATCH" -> "patch";
                        case "DELETE" -> "delete";
                        default -> r.getMethod();
                    });
                }
            }
            server.destroy();
        }
        assertThat(verbs).contains("create", "patch");
        Role leases = (Role) parse(MANIFESTS.resolve("050-leader-election-role.yaml")).get(0);
        assertGrants(leases.getRules(), "coordination.k8s.io", "leases", verbs.toArray(String[]::new));
    }

    private static void assertGrants(List<PolicyRule> rules, String group, String resource, String... verbs) {
        assertThat(rules).as(group + "/" + resource).anySatisfy(r -> {
            assertThat(r.getApiGroups()).contains(group);
            assertThat(r.getResources()).contains(resource);
            assertThat(r.getVerbs()).contains(verbs);
        });
    }

    @Test
    void everyExampleIsValidAndBuildsItsShards() throws IOException {
        List<Path> examples = yamlIn(MANIFESTS.resolve("examples"));
        assertThat(examples).hasSizeGreaterThanOrEqualTo(2);
        for (Path f : examples) {
            PiKVCluster cluster = SERIALIZATION.unmarshal(Files.readString(f), PiKVCluster.class);
            assertThat(PiKVClusterValidator.validate(cluster).violations()).as(f.toString()).isEmpty();
            cluster.getMetadata().setUid("00000000-0000-0000-0000-000000000000");
            ShardCluster model = ShardCluster.fromCrd(cluster, cluster.getSpec(), null, -1, OperatorSettings.DEFAULTS);
            assertThat(model.generateStatefulSet().getSpec().getReplicas()).isEqualTo(cluster.getSpec().getShards());
            assertThat(model.shardMap().experts()).isEqualTo(cluster.getSpec().getModel().getExperts());
        }
    }
}
