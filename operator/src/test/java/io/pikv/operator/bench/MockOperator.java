package io.pikv.operator.bench;

import io.fabric8.kubernetes.api.model.apiextensions.v1.CustomResourceDefinition;
import io.fabric8.kubernetes.api.model.apps.StatefulSet;
import io.fabric8.kubernetes.api.model.apps.StatefulSetStatusBuilder;
import io.fabric8.kubernetes.client.KubernetesClient;
import io.fabric8.kubernetes.client.informers.ResourceEventHandler;
import io.fabric8.kubernetes.client.server.mock.KubernetesCrudDispatcher;
import io.fabric8.kubernetes.client.server.mock.KubernetesMockServer;
import io.fabric8.mockwebserver.Context;
import io.fabric8.mockwebserver.MockWebServer;
import io.javaoperatorsdk.operator.Operator;
import io.pikv.api.v1alpha1.PiKVCluster;
import io.pikv.operator.config.OperatorConfig;
import io.pikv.operator.controller.EventRecorder;
import io.pikv.operator.controller.PiKVClusterReconciler;
import io.pikv.operator.controller.ReconcileMetrics;
import io.pikv.operator.model.OperatorSettings;
import io.pikv.operator.model.PiKVClusterResources;

import java.io.IOException;
import java.io.InputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.HashMap;
import java.util.function.Consumer;

/**
 * The operator's real reconciler and dependents under the Java Operator SDK, against the fabric8 mock API server in
 * CRUD mode with the project's CRD (QOSDK's Quarkus wiring aside: the same classes, SSA off as the mock server needs).
 * {@link #driver} is a second client, for whoever plays the user and the StatefulSet controller. Used by the operator
 * benchmark and the playground, in child JVMs on the operator module's test class path.
 */
final class MockOperator implements AutoCloseable {
    final KubernetesMockServer server;
    final KubernetesClient driver;
    private final KubernetesClient operatorClient;
    private final Operator operator;

    private MockOperator(KubernetesMockServer server, KubernetesClient driver, KubernetesClient operatorClient,
                         Operator operator) {
        this.server = server;
        this.driver = driver;
        this.operatorClient = operatorClient;
        this.operator = operator;
    }

    static MockOperator start(Path cwd, OperatorConfig config, ReconcileMetrics metrics) throws IOException {
        KubernetesMockServer server = new KubernetesMockServer(new Context(), new MockWebServer(), new HashMap<>(),
                new KubernetesCrudDispatcher(), false);
        server.init();
        io.pikv.operator.MockApiServers.keepStatefulSetStatus(server);
        KubernetesClient driver = server.createClient();
        KubernetesClient operatorClient = server.createClient();
        try (InputStream crd = Files.newInputStream(crdFile(cwd))) {
            driver.resource(driver.getKubernetesSerialization().unmarshal(crd, CustomResourceDefinition.class))
                    .create();
        }
        Operator operator = new Operator(o -> o.withKubernetesClient(operatorClient)
                .withSSABasedCreateUpdateMatchForDependentResources(false)
                .withUseSSAToPatchPrimaryResource(false)
                .withDefaultNonSSAResource(java.util.Set.of(StatefulSet.class,
                        io.fabric8.kubernetes.api.model.ConfigMap.class, io.fabric8.kubernetes.api.model.Service.class,
                        io.fabric8.kubernetes.api.model.policy.v1.PodDisruptionBudget.class))
                .withCloseClientOnStop(false));
        operator.register(new PiKVClusterReconciler(OperatorSettings.DEFAULTS, config,
                new EventRecorder(operatorClient), metrics));
        operator.start();
        return new MockOperator(server, driver, operatorClient, operator);
    }

    /** An informer handler that hands every added or updated object to {@code seen} (deletions are not of interest). */
    static <T> ResourceEventHandler<T> onChange(Consumer<T> seen) {
        return new ResourceEventHandler<>() {
            public void onAdd(T o) {
                seen.accept(o);
            }

            public void onUpdate(T old, T o) {
                seen.accept(o);
            }

            public void onDelete(T o, boolean unknown) {
            }
        };
    }

    /** Plays the StatefulSet controller for {@code cluster}: every replica of its shard StatefulSet updated, ready. */
    void markReady(String namespace, String cluster) {
        var resource = driver.apps().statefulSets().inNamespace(namespace)
                .withName(PiKVClusterResources.shardStatefulSetName(cluster));
        StatefulSet sts = resource.get();
        int n = sts.getSpec().getReplicas() == null ? 1 : sts.getSpec().getReplicas(); // the API server's default
        sts.setStatus(new StatefulSetStatusBuilder().withObservedGeneration(sts.getMetadata().getGeneration())
                .withReplicas(n).withReadyReplicas(n).withUpdatedReplicas(n).withCurrentRevision("r")
                .withUpdateRevision("r").build());
        driver.apps().statefulSets().inNamespace(namespace).resource(sts).updateStatus();
    }

    @Override
    public void close() {
        operator.stop();
        operatorClient.close();
        driver.close();
        server.destroy();
    }

    private static Path crdFile(Path cwd) throws IOException {
        for (Path d = cwd; d != null; d = d.getParent()) {
            Path f = d.resolve("crds/" + PiKVCluster.CRD_NAME + "-v1.yml");
            if (Files.isRegularFile(f)) {
                return f;
            }
        }
        throw new IOException("no crds/" + PiKVCluster.CRD_NAME + "-v1.yml at or above " + cwd);
    }

    /** Operator settings for a run in a child JVM: the defaults, reconciling every {@code progress} while not ready. */
    static OperatorConfig config(Duration progress) {
        return new OperatorConfig() {
            public String sidecarImage() {
                return OperatorSettings.DEFAULTS.sidecarImage();
            }

            public String memoryOverhead() {
                return "1Gi";
            }

            public Duration resyncInterval() {
                return Duration.ofMinutes(5);
            }

            public Duration progressInterval() {
                return progress;
            }

            public Duration progressDeadline() {
                return Duration.ofMinutes(10);
            }

            public String leaseName() {
                return "unused";
            }
        };
    }
}
