package io.pikv.operator.bench;

import io.fabric8.kubernetes.api.model.Condition;
import io.fabric8.kubernetes.api.model.ObjectMetaBuilder;
import io.fabric8.kubernetes.api.model.Quantity;
import io.fabric8.kubernetes.api.model.apps.StatefulSet;
import io.fabric8.kubernetes.client.informers.SharedIndexInformer;
import io.micrometer.core.instrument.simple.SimpleMeterRegistry;
import io.pikv.api.v1alpha1.KafkaSpec;
import io.pikv.api.v1alpha1.ModelSpec;
import io.pikv.api.v1alpha1.PiKVCluster;
import io.pikv.api.v1alpha1.PiKVClusterSpec;
import io.pikv.api.v1alpha1.PiKVClusterStatus;
import io.pikv.api.v1alpha1.SchedulingPolicy;
import io.pikv.operator.controller.ReconcileMetrics;

import java.io.InputStream;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Objects;
import java.util.concurrent.atomic.AtomicReference;

/**
 * The playground's operator ({@code ./pikv playground}): the real reconciler against the fabric8 mock API server
 * ({@link MockOperator}), given the PiKVCluster that describes the playground's shards. It plays the StatefulSet
 * controller as well — the shards it would run are the playground's own sidecar processes, which are up when this
 * starts — and prints one line whenever the cluster's status says something new. Runs as a child JVM on the operator
 * module's test class path until its standard input closes (the playground stopping) or it is killed.
 *
 * <p>Arguments: {@code --name N --shards S --memory Q --policy P --kafka HOST:PORT --model L,QH,KVH,D,E,K}.
 */
public final class PlaygroundOperator {
    static final String NS = "playground";

    private PlaygroundOperator() {
    }

    /** Standard output, for the status lines alone: everything else the JVM prints goes to standard error. */
    private static final java.io.PrintStream LINES = System.out;

    public static void main(String[] args) throws Exception {
        System.setOut(System.err); // the SDK's and the mock server's own logging, kept out of the status lines
        String name = "playground";
        int shards = 2;
        String memory = "1Mi";
        String policy = null;
        String kafka = null;
        int[] model = {2, 8, 2, 64, 8, 2};
        for (int i = 0; i < args.length; i++) {
            switch (args[i]) {
                case "--name" -> name = args[++i];
                case "--shards" -> shards = Integer.parseInt(args[++i]);
                case "--memory" -> memory = args[++i];
                case "--policy" -> policy = args[++i];
                case "--kafka" -> kafka = args[++i];
                case "--model" -> model = Arrays.stream(args[++i].split(",")).mapToInt(Integer::parseInt).toArray();
                default -> throw new IllegalArgumentException("unknown argument " + args[i]);
            }
        }
        try (MockOperator mock = MockOperator.start(Path.of("").toAbsolutePath(),
                MockOperator.config(Duration.ofSeconds(2)), new ReconcileMetrics(new SimpleMeterRegistry()))) {
            run(mock, cluster(name, shards, memory, policy, kafka, model));
        } catch (Exception | Error e) {
            e.printStackTrace();
            System.exit(1);
        }
        // The SDK's and the mock server's threads are not daemons.
        System.exit(0);
    }

    static PiKVCluster cluster(String name, int shards, String memory, String policy, String kafka, int[] model) {
        PiKVClusterSpec spec = new PiKVClusterSpec();
        spec.setModel(new ModelSpec(model[0], model[1], model[2], model[3], model[4], model[5]));
        spec.setShards(shards);
        spec.setMemoryPerShard(new Quantity(memory));
        for (SchedulingPolicy p : SchedulingPolicy.values()) {
            if (p.value().equals(policy)) {
                spec.getScheduling().setPolicy(p); // a page policy (oldest-page, reject) is the shards' alone
            }
        }
        if (kafka != null) {
            KafkaSpec k = new KafkaSpec();
            k.setBootstrapServers(kafka);
            spec.setKafka(k);
        }
        PiKVCluster c = new PiKVCluster();
        c.setMetadata(new ObjectMetaBuilder().withName(name).withNamespace(NS).build());
        c.setSpec(spec);
        return c;
    }

    private static void run(MockOperator mock, PiKVCluster cluster) throws Exception {
        String name = cluster.getMetadata().getName();
        AtomicReference<String> told = new AtomicReference<>("");
        SharedIndexInformer<PiKVCluster> clusters = mock.driver.resources(PiKVCluster.class).inNamespace(NS)
                .inform(MockOperator.onChange(c -> {
                    String line = describe(c.getStatus());
                    if (line != null && !line.equals(told.getAndSet(line))) {
                        say(line);
                    }
                }));
        // The StatefulSet controller's part: the playground's shard processes are up, so every replica is ready.
        SharedIndexInformer<StatefulSet> sets = mock.driver.apps().statefulSets().inNamespace(NS)
                .inform(MockOperator.onChange(sts -> {
                    int n = sts.getSpec().getReplicas() == null ? 1 : sts.getSpec().getReplicas();
                    var st = sts.getStatus();
                    if (st == null || !Objects.equals(st.getObservedGeneration(), sts.getMetadata().getGeneration())
                            || !Objects.equals(st.getReadyReplicas(), n)) {
                        say("StatefulSet " + sts.getMetadata().getName() + " (" + n + " replicas) created or "
                                + "changed; its pods are the playground's shard processes: marked ready");
                        mock.markReady(NS, name);
                    }
                }));
        mock.driver.resource(cluster).create();
        say("PiKVCluster " + NS + "/" + name + " created in the mock API server at "
                + mock.driver.getMasterUrl().toString().replaceAll("/$", ""));
        try (InputStream in = System.in) {
            while (in.read() >= 0) {
                // until the playground closes its end
            }
        } finally {
            sets.close();
            clusters.close();
        }
    }

    /** The status in one line: its conditions, shard counts, config hash and shard map epoch; null before any. */
    static String describe(PiKVClusterStatus s) {
        if (s == null || s.getConditions() == null || s.getConditions().isEmpty()) {
            return null;
        }
        List<String> parts = new ArrayList<>();
        for (String type : List.of(PiKVClusterStatus.READY, PiKVClusterStatus.PROGRESSING,
                PiKVClusterStatus.DEGRADED)) {
            Condition c = s.getConditions().stream().filter(x -> type.equals(x.getType())).findFirst().orElse(null);
            if (c != null) {
                parts.add(type + "=" + c.getStatus() + " (" + c.getReason() + ")");
            }
        }
        Condition degraded = s.getConditions().stream().filter(x -> PiKVClusterStatus.DEGRADED.equals(x.getType())
                && "True".equals(x.getStatus())).findFirst().orElse(null);
        return "status: " + String.join(", ", parts) + "; " + s.getReadyShards() + "/" + s.getDesiredShards()
                + " shards ready, config " + s.getConfigHash() + ", shard map epoch " + s.getShardMapEpoch()
                + ", policy " + s.getActivePolicy() + (degraded == null ? "" : "; " + degraded.getMessage());
    }

    private static synchronized void say(String line) {
        LINES.println(line);
        LINES.flush();
    }
}
