package io.pikv.operator.model;

import io.fabric8.kubernetes.api.model.ConfigMap;
import io.fabric8.kubernetes.api.model.Container;
import io.fabric8.kubernetes.api.model.EnvVar;
import io.fabric8.kubernetes.api.model.HasMetadata;
import io.fabric8.kubernetes.api.model.Quantity;
import io.fabric8.kubernetes.api.model.ResourceRequirementsBuilder;
import io.fabric8.kubernetes.api.model.Service;
import io.fabric8.kubernetes.api.model.apps.StatefulSet;
import io.fabric8.kubernetes.api.model.policy.v1.PodDisruptionBudget;
import io.pikv.api.events.ControlState;
import io.pikv.api.v1alpha1.KafkaSpec;
import io.pikv.api.v1alpha1.PiKVCluster;
import io.pikv.api.v1alpha1.SchedulingPolicy;
import io.pikv.api.v1alpha1.SecretRef;
import io.pikv.kv.ExpertShardMap;
import io.pikv.operator.TestClusters;
import org.junit.jupiter.api.Test;

import java.util.List;
import java.util.Map;
import java.util.function.Consumer;
import java.util.stream.Collectors;
import java.util.stream.Stream;

import static org.assertj.core.api.Assertions.assertThat;

/** The desired-state builders, on objects built in memory. */
class ShardClusterTest {
    static final OperatorSettings SETTINGS = OperatorSettings.DEFAULTS;

    private static ShardCluster model(PiKVCluster c) {
        assertThat(PiKVClusterValidator.validate(c).violations()).isEmpty();
        return ShardCluster.fromCrd(c, c.getSpec(), null, -1, SETTINGS);
    }

    private static String hashAfter(Consumer<PiKVCluster> change) {
        PiKVCluster c = TestClusters.small("demo", "ns");
        change.accept(c);
        return model(c).configHash();
    }

    @Test
    void everyObjectIsNamedLabelledAndOwnedByTheCluster() {
        ShardCluster m = model(TestClusters.small("demo", "ns"));
        List<HasMetadata> objects = List.of(m.generateConfigMap(), m.generateHeadlessService(),
                m.generateStatefulSet(), m.generatePodDisruptionBudget());
        assertThat(objects).extracting(o -> o.getMetadata().getName())
                .containsExactly("demo-config", "demo-shards", "demo-shard", "demo-shard");
        for (HasMetadata o : objects) {
            assertThat(o.getMetadata().getNamespace()).isEqualTo("ns");
            assertThat(o.getMetadata().getLabels()).containsEntry("app.kubernetes.io/managed-by", "pikv-operator")
                    .containsEntry("app.kubernetes.io/instance", "demo").containsEntry("pikv.io/cluster", "demo");
            assertThat(o.getMetadata().getOwnerReferences()).singleElement().satisfies(r -> {
                assertThat(r.getKind()).isEqualTo("PiKVCluster");
                assertThat(r.getApiVersion()).isEqualTo("pikv.io/v1alpha1");
                assertThat(r.getName()).isEqualTo("demo");
                assertThat(r.getController()).isTrue();
            });
        }
    }

    @Test
    void statefulSetRunsTheSidecarInTheShardRole() {
        ShardCluster m = model(TestClusters.small("demo", "ns"));
        StatefulSet sts = m.generateStatefulSet();
        assertThat(sts.getSpec().getReplicas()).isEqualTo(2);
        assertThat(sts.getSpec().getServiceName()).isEqualTo("demo-shards");
        assertThat(sts.getSpec().getSelector().getMatchLabels())
                .isEqualTo(PiKVClusterResources.selectorLabels("demo"));
        assertThat(sts.getSpec().getTemplate().getMetadata().getLabels())
                .containsAllEntriesOf(PiKVClusterResources.selectorLabels("demo"));
        assertThat(sts.getSpec().getTemplate().getMetadata().getAnnotations())
                .containsEntry(PiKVClusterResources.ANNOTATION_CONFIG_HASH, m.configHash());
        Container c = sts.getSpec().getTemplate().getSpec().getContainers().get(0);
        assertThat(c.getImage()).isEqualTo("pikv/sidecar:0.1.0");
        Map<String, EnvVar> env = c.getEnv().stream().collect(Collectors.toMap(EnvVar::getName, e -> e));
        assertThat(env.get("PIKV_ROLE").getValue()).isEqualTo("shard");
        assertThat(env.get("PIKV_SHARD_ID").getValueFrom().getFieldRef().getFieldPath())
                .isEqualTo("metadata.labels['apps.kubernetes.io/pod-index']");
        // Literal values (a pod of an older revision restarting mid-rollout keeps its own settings), equal to the
        // ConfigMap's copy: every setting the shards read has its variable.
        assertThat(env.get("PIKV_STORE_BUDGET_BYTES").getValueFrom()).isNull();
        assertThat(env.get("PIKV_STORE_BUDGET_BYTES").getValue()).isEqualTo("67108864");
        assertThat(env.get("PIKV_MODEL_Q_HEADS").getValue()).isEqualTo("8");
        ConfigMap cm = m.generateConfigMap();
        for (String key : m.shardSettings().keySet()) {
            assertThat(env.get(ShardCluster.envName(key)).getValue()).isEqualTo(m.shardSettings().get(key));
            assertThat(cm.getData()).containsEntry(key, m.shardSettings().get(key));
        }
        assertThat(env.get("JDK_JAVA_OPTIONS").getValue())
                .contains("--add-modules=jdk.incubator.vector", "--enable-native-access=ALL-UNNAMED", "-Xmx542m",
                        "-XX:MaxDirectMemorySize=194m");
        assertThat(env.get("GC_CONTAINER_OPTIONS").getValue()).as("the image's collector, in place of ParallelGC")
                .isEqualTo("-XX:+UseG1GC");
        assertThat(env.get("PIKV_STORE_PAGE_TOKENS").getValue()).as("the page size the heap was sized for")
                .isEqualTo("32");
        // What lives on that heap is sized from it: a quarter for prefix blocks, an eighth (at most 64 MiB) a body.
        assertThat(env.get("PIKV_BLOCKS_CAPACITY_BYTES").getValue()).isEqualTo(String.valueOf((518L << 20) / 4));
        assertThat(env.get("PIKV_API_MAX_BODY_BYTES").getValue()).isEqualTo(String.valueOf(64L << 20));
        assertThat(env.get("QUARKUS_HTTP_LIMITS_MAX_BODY_SIZE").getValue()).isEqualTo(String.valueOf(128L << 20));
        assertThat(c.getReadinessProbe().getHttpGet().getPath()).isEqualTo("/q/health/ready");
        assertThat(c.getLivenessProbe().getHttpGet().getPath()).isEqualTo("/q/health/live");
        assertThat(c.getSecurityContext().getRunAsNonRoot()).isTrue();
        // Non-root by the image's user: no UID, GID or fsGroup fixed, so a platform that assigns them can.
        io.fabric8.kubernetes.api.model.PodSecurityContext pod = sts.getSpec().getTemplate().getSpec()
                .getSecurityContext();
        assertThat(pod.getRunAsNonRoot()).isTrue();
        assertThat(pod.getRunAsUser()).isNull();
        assertThat(pod.getRunAsGroup()).isNull();
        assertThat(pod.getFsGroup()).isNull();
        assertThat(c.getSecurityContext().getReadOnlyRootFilesystem()).isTrue();
        assertThat(c.getSecurityContext().getAllowPrivilegeEscalation()).isFalse();
        assertThat(c.getSecurityContext().getCapabilities().getDrop()).containsExactly("ALL");
        assertThat(c.getVolumeMounts()).extracting(v -> v.getMountPath()).containsExactly("/etc/pikv", "/tmp");
        // 64 MiB budget + 24 MiB of heap for its entries' bookkeeping (131,072 entries of 512 bytes, 192 bytes each)
        // + half of that again (12 MiB) + 1 GiB overhead, requested and limited alike; the heap is the bookkeeping
        // and half of the rest above the budget (24 + 518 MiB). No GPU by default.
        assertThat(c.getResources().getLimits()).containsOnlyKeys("memory")
                .containsEntry("memory", new Quantity("1124Mi"));
        assertThat(c.getResources().getRequests()).containsEntry("memory", new Quantity("1124Mi"))
                .containsEntry("cpu", new Quantity("1"));
        assertThat(sts.getSpec().getTemplate().getSpec().getTolerations()).isEmpty();
        // Spread over nodes where the scheduler can, never left pending for it.
        assertThat(sts.getSpec().getTemplate().getSpec().getTopologySpreadConstraints()).singleElement().satisfies(t -> {
            assertThat(t.getTopologyKey()).isEqualTo("kubernetes.io/hostname");
            assertThat(t.getWhenUnsatisfiable()).isEqualTo("ScheduleAnyway");
            assertThat(t.getMaxSkew()).isEqualTo(1);
            assertThat(t.getLabelSelector().getMatchLabels()).isEqualTo(sts.getSpec().getSelector().getMatchLabels());
        });
    }

    @Test
    void anLrfuHistoryIsGivenItsHeap() {
        // 1,048,576 remembered evictions at 96 bytes: 96 MiB of heap beside the entries' 24 MiB, so 64 MiB budget +
        // 120 MiB + half of it again (60 MiB) + 1 GiB; the heap is those 120 MiB and half of the 1084 MiB above them.
        PiKVCluster c = TestClusters.small("demo", "ns");
        c.getSpec().getScheduling().setPolicy(SchedulingPolicy.LRFU);
        c.getSpec().getScheduling().setParameters(Map.of("historyLimit", 1048576.0));
        Container container = model(c).generateStatefulSet().getSpec().getTemplate().getSpec().getContainers().get(0);
        assertThat(container.getResources().getLimits()).containsEntry("memory", new Quantity("1268Mi"));
        EnvVar opts = container.getEnv().stream().filter(e -> e.getName().equals("JDK_JAVA_OPTIONS")).findFirst()
                .orElseThrow();
        assertThat(opts.getValue()).contains("-Xmx662m");
    }

    @Test
    void gpuShardsRequestTheDeviceAndTolerateItsTaint() {
        PiKVCluster c = TestClusters.small("demo", "ns");
        c.getSpec().getGpu().setEnabled(true);
        c.getSpec().getGpu().setResourceName("nvidia.com/mig-1g.10gb");
        StatefulSet sts = model(c).generateStatefulSet();
        Container container = sts.getSpec().getTemplate().getSpec().getContainers().get(0);
        assertThat(container.getResources().getLimits()).containsEntry("nvidia.com/mig-1g.10gb", new Quantity("1"));
        // The slice's taint and the GPU node's (node pools taint GPU nodes by nvidia.com/gpu, also MIG ones).
        assertThat(sts.getSpec().getTemplate().getSpec().getTolerations()).extracting(t -> t.getKey())
                .containsExactly("nvidia.com/mig-1g.10gb", "nvidia.com/gpu");
        // It must attend on the device: a shard that cannot stops at start-up instead of falling back to the CPU.
        assertThat(container.getEnv()).anySatisfy(e -> {
            assertThat(e.getName()).isEqualTo("PIKV_COMPUTE");
            assertThat(e.getValue()).isEqualTo("cuda");
        });
        // Without a GPU the sidecar's default stands.
        assertThat(model(TestClusters.small("demo", "ns")).shardSettings()).doesNotContainKey("pikv.compute");
    }

    @Test
    void placementAndPullSecretsReachThePods() {
        PiKVCluster c = TestClusters.small("demo", "ns");
        c.getSpec().getGpu().setEnabled(true);
        c.getSpec().getPlacement().setNodeSelector(Map.of("cloud.example.com/pool", "gpu-a100"));
        c.getSpec().getPlacement().setTolerations(List.of(new io.fabric8.kubernetes.api.model.TolerationBuilder()
                .withKey("dedicated").withOperator("Equal").withValue("kv").withEffect("NoSchedule").build()));
        c.getSpec().getPlacement().setPriorityClassName("kv-cache");
        c.getSpec().getSidecar().setImagePullSecrets(List.of(
                new io.fabric8.kubernetes.api.model.LocalObjectReference("registry-creds")));
        assertThat(PiKVClusterValidator.validate(c).violations()).isEmpty();
        io.fabric8.kubernetes.api.model.PodSpec pod = model(c).generateStatefulSet().getSpec().getTemplate().getSpec();
        // GPU shards go to x86-64 nodes (the CUDA bindings' platform), beside the spec's selector.
        assertThat(pod.getNodeSelector()).containsExactly(Map.entry("cloud.example.com/pool", "gpu-a100"),
                Map.entry("kubernetes.io/arch", "amd64"));
        assertThat(pod.getRuntimeClassName()).isNull();
        c.getSpec().getGpu().setRuntimeClassName("nvidia");
        assertThat(PiKVClusterValidator.validate(c).violations()).isEmpty();
        assertThat(model(c).generateStatefulSet().getSpec().getTemplate().getSpec().getRuntimeClassName())
                .isEqualTo("nvidia");
        c.getSpec().getGpu().setEnabled(false); // without the GPU, neither the class nor the architecture
        io.fabric8.kubernetes.api.model.PodSpec cpu = model(c).generateStatefulSet().getSpec().getTemplate().getSpec();
        assertThat(cpu.getRuntimeClassName()).isNull();
        assertThat(cpu.getNodeSelector()).containsExactly(Map.entry("cloud.example.com/pool", "gpu-a100"));
        assertThat(pod.getPriorityClassName()).isEqualTo("kv-cache");
        assertThat(pod.getImagePullSecrets()).extracting(r -> r.getName()).containsExactly("registry-creds");
        // The GPU resource's toleration first, then the spec's.
        assertThat(pod.getTolerations()).extracting(t -> t.getKey()).containsExactly("nvidia.com/gpu", "dedicated");
        // Empty fields are rendered absent, as the API server stores them: "" and absent give one pod template.
        PiKVCluster spelled = TestClusters.small("demo", "ns");
        spelled.getSpec().getPlacement().setTolerations(List.of(new io.fabric8.kubernetes.api.model.TolerationBuilder()
                .withKey("dedicated").withOperator("Exists").withValue("").withEffect("").build()));
        PiKVCluster plainly = TestClusters.small("demo", "ns");
        plainly.getSpec().getPlacement().setTolerations(List.of(new io.fabric8.kubernetes.api.model.TolerationBuilder()
                .withKey("dedicated").withOperator("Exists").build()));
        assertThat(PiKVClusterValidator.validate(spelled).violations()).isEmpty();
        assertThat(model(spelled).generateStatefulSet().getSpec().getTemplate().getSpec().getTolerations())
                .singleElement().satisfies(t -> {
                    assertThat(t.getValue()).isNull();
                    assertThat(t.getEffect()).isNull();
                });
        assertThat(model(spelled).configHash()).isEqualTo(model(plainly).configHash());
        // Without placement none of them is set.
        io.fabric8.kubernetes.api.model.PodSpec plain = model(TestClusters.small("demo", "ns")).generateStatefulSet()
                .getSpec().getTemplate().getSpec();
        assertThat(plain.getNodeSelector()).isNullOrEmpty();
        assertThat(plain.getPriorityClassName()).isNull();
        assertThat(plain.getImagePullSecrets()).isNullOrEmpty();
        // An empty priority class is none, as the API server takes it (a template may render "").
        PiKVCluster empty = TestClusters.small("demo", "ns");
        empty.getSpec().getPlacement().setPriorityClassName("");
        assertThat(PiKVClusterValidator.validate(empty).violations()).isEmpty();
        assertThat(model(empty).generateStatefulSet().getSpec().getTemplate().getSpec().getPriorityClassName())
                .isNull();
    }

    @Test
    void givenResourcesWinAndTheHeapFollowsThem() {
        PiKVCluster c = TestClusters.small("demo", "ns");
        c.getSpec().getSidecar().setResources(new ResourceRequirementsBuilder()
                .addToLimits("memory", new Quantity("664Mi")).addToRequests("cpu", new Quantity("250m")).build());
        Container container = model(c).generateStatefulSet().getSpec().getTemplate().getSpec().getContainers().get(0);
        assertThat(container.getResources().getLimits()).containsEntry("memory", new Quantity("664Mi"));
        assertThat(container.getResources().getRequests()).containsOnlyKeys("cpu");
        EnvVar opts = container.getEnv().stream().filter(e -> e.getName().equals("JDK_JAVA_OPTIONS")).findFirst()
                .orElseThrow();
        // 576 MiB above the budget and the entries' 24 MiB: a heap of those 24 MiB and half the 576, direct memory of
        // the budget and an eighth of the 576.
        assertThat(opts.getValue()).contains("-Xmx312m", "-XX:MaxDirectMemorySize=136m");

        // The least memory the validator takes (budget + bookkeeping and half of it again + 512Mi): a heap of 24 + 262
        // MiB, direct memory of the budget and an eighth of the 524 MiB above it and the bookkeeping (66 MiB).
        c.getSpec().getSidecar().setResources(new ResourceRequirementsBuilder()
                .addToLimits("memory", new Quantity("612Mi")).build());
        container = model(c).generateStatefulSet().getSpec().getTemplate().getSpec().getContainers().get(0);
        opts = container.getEnv().stream().filter(e -> e.getName().equals("JDK_JAVA_OPTIONS")).findFirst()
                .orElseThrow();
        assertThat(opts.getValue()).contains("-Xmx286m", "-XX:MaxDirectMemorySize=130m");

        // A budget of no whole MiB (1G = 10^9 bytes): the direct memory is rounded up, so the pages' budget fits in
        // it beside the server's 64 MiB (rounded down, the shard would refuse to start).
        c.getSpec().setMemoryPerShard(new Quantity("1G"));
        c.getSpec().getSidecar().setResources(new ResourceRequirementsBuilder()
                .addToLimits("memory", new Quantity("2200M")).build());
        container = model(c).generateStatefulSet().getSpec().getTemplate().getSpec().getContainers().get(0);
        opts = container.getEnv().stream().filter(e -> e.getName().equals("JDK_JAVA_OPTIONS")).findFirst()
                .orElseThrow();
        java.util.regex.Matcher m = java.util.regex.Pattern.compile("MaxDirectMemorySize=(\\d+)m")
                .matcher(opts.getValue());
        assertThat(m.find()).isTrue();
        assertThat((Long.parseLong(m.group(1)) << 20) - (64L << 20)).isGreaterThanOrEqualTo(1_000_000_000L);
        // Exactly: 10^9 bytes and an eighth of the headroom (2200M less the budget and the bookkeeping: about 98 MiB,
        // above the 64 MiB floor), rounded up to whole MiB.
        assertThat(m.group(1)).isEqualTo("1053");
    }

    @Test
    void kafkaCredentialsArePassedByReferenceOnly() {
        PiKVCluster c = TestClusters.small("demo", "ns");
        KafkaSpec k = new KafkaSpec();
        k.setBootstrapServers("kafka:9092");
        k.setCredentialsSecret(new SecretRef("kafka-creds"));
        c.getSpec().setKafka(k);
        ShardCluster m = model(c);
        Container container = m.generateStatefulSet().getSpec().getTemplate().getSpec().getContainers().get(0);
        assertThat(container.getEnvFrom()).singleElement()
                .satisfies(e -> assertThat(e.getSecretRef().getName()).isEqualTo("kafka-creds"));
        assertThat(m.generateConfigMap().getData()).containsEntry("kafka.bootstrap.servers", "kafka:9092")
                .containsEntry("pikv.telemetry.topic", "pikv.cache-events")
                .containsEntry("pikv.control.topic", "pikv.control")
                .doesNotContainKey("pikv.telemetry.enabled")
                .doesNotContainKey("kafka-creds");

        // A topic a client left null (the API server would have defaulted it) is left to the sidecar's default.
        k.getTopics().setEvents(null);
        k.getTopics().setControl("team.control");
        assertThat(model(c).generateConfigMap().getData()).doesNotContainKey("pikv.telemetry.topic")
                .containsEntry("pikv.control.topic", "team.control");
    }

    @Test
    void configMapCarriesSettingsAndTheControlState() throws Exception {
        PiKVCluster c = TestClusters.small("demo", "ns");
        c.getSpec().getScheduling().setPolicy(SchedulingPolicy.H2O);
        c.getSpec().getScheduling().setParameters(Map.of("window", 256.0));
        c.getSpec().getCompression().setMethod("pyramid+int8");
        c.getSpec().getCompression().setParameters(Map.of("budget", 0.25, "sinks", 4.0));
        ConfigMap cm = model(c).generateConfigMap();
        assertThat(cm.getData()).containsEntry("pikv.cluster", "ns/demo").containsEntry("pikv.model.layers", "4")
                .containsEntry("pikv.model.q-heads", "8").containsEntry("pikv.store.dtype", "int8")
                .containsEntry("pikv.store.budget-bytes", String.valueOf(64L << 20))
                .containsEntry("pikv.gateway.routing", "hash")
                // Shard settings: the sidecar's own defaults stand for the knobs not given (beta 20, window 32).
                .containsEntry("pikv.store.pyramid.budget", "0.25").containsEntry("pikv.store.pyramid.sinks", "4")
                .doesNotContainKeys("pikv.store.pyramid.beta", "pikv.store.pyramid.window", "pikv.compression.method");
        assertThat(model(c).shardSettings()).containsKey("pikv.store.pyramid.budget");
        // A pyramid without a budget (a last valid spec an older operator accepted): no knobs, which would stop a
        // shard at start-up without the budget that turns them on.
        c.getSpec().getCompression().setParameters(Map.of("window", 64.0));
        assertThat(ShardCluster.fromCrd(c, c.getSpec(), null, -1, SETTINGS).shardSettings())
                .doesNotContainKeys("pikv.store.pyramid.budget", "pikv.store.pyramid.window");
        ControlState state = new com.fasterxml.jackson.databind.ObjectMapper()
                .readValue(cm.getData().get(ShardCluster.CONTROL_STATE_KEY), ControlState.class);
        assertThat(state.cluster()).isEqualTo("ns/demo");
        assertThat(state.epoch()).isZero();
        assertThat(state.shards()).isEqualTo(2);
        assertThat(state.shardOfExpert()).containsExactly(0, 1, 0, 1, 0, 1, 0, 1);
        assertThat(state.policy()).isEqualTo("h2o");
        assertThat(state.parameters()).containsEntry("window", 256.0);
        assertThat(state.budgetBytes()).isEqualTo(64L << 20);
        assertThat(ShardCluster.readControlState(cm)).isEqualTo(state);
        // Edited by hand under the same epoch (another map): it no longer matches the digest the operator wrote, so it
        // reads as lost and is written anew under a higher epoch, never run beside the old map under one epoch.
        ControlState moved = new ControlState(state.version(), state.cluster(), state.epoch(),
                List.of(1, 0, 1, 0, 1, 0, 1, 0), state.shards(), state.policy(), state.parameters(), state.budgetBytes());
        ConfigMap handEdited = new io.fabric8.kubernetes.api.model.ConfigMapBuilder(cm).build();
        handEdited.getData().put(ShardCluster.CONTROL_STATE_KEY, new com.fasterxml.jackson.databind.ObjectMapper()
                .writeValueAsString(moved));
        assertThat(ShardCluster.readControlState(handEdited)).isNull();
        assertThat(ShardCluster.fromCrd(c, c.getSpec(), ShardCluster.readControlState(handEdited), 0, SETTINGS)
                .shardMap().epoch()).isEqualTo(1);
        // Without the digest (a ConfigMap an older operator wrote) its state is read and checked as it holds.
        cm.getMetadata().getAnnotations().remove(ShardCluster.CONTROL_STATE_DIGEST);
        assertThat(ShardCluster.readControlState(cm)).isEqualTo(state);
        // Edited by hand to an epoch no operator reaches: read as no state (its next epoch would overflow and fail
        // every reconcile), so the operator renders the map anew from status and repairs the ConfigMap.
        ControlState edited = new ControlState(state.version(), state.cluster(), Long.MAX_VALUE, state.shardOfExpert(),
                state.shards(), state.policy(), state.parameters(), state.budgetBytes());
        cm.getData().put(ShardCluster.CONTROL_STATE_KEY, new com.fasterxml.jackson.databind.ObjectMapper()
                .writeValueAsString(edited));
        assertThat(ShardCluster.readControlState(cm)).isNull();
        assertThat(ShardCluster.fromCrd(c, c.getSpec(), ShardCluster.readControlState(cm), 3,
                SETTINGS).shardMap().epoch()).isEqualTo(4);
        // Edited to a shard count no spec asks for (its experts all on shards it has): no state either, rendered anew.
        for (int shards : new int[] {Integer.MAX_VALUE, io.pikv.api.v1alpha1.PiKVClusterSpec.MAX_SHARDS + 1}) {
            ControlState huge = new ControlState(state.version(), state.cluster(), 3, state.shardOfExpert(), shards,
                    state.policy(), state.parameters(), state.budgetBytes());
            cm.getData().put(ShardCluster.CONTROL_STATE_KEY, new com.fasterxml.jackson.databind.ObjectMapper()
                    .writeValueAsString(huge));
            assertThat(ShardCluster.readControlState(cm)).isNull();
            assertThat(ShardCluster.fromCrd(c, c.getSpec(), ShardCluster.readControlState(cm), 3, SETTINGS)
                    .shardMap().shards()).isEqualTo(2);
        }
    }

    @Test
    void theShardsStartWithTheSpecsEvictionPolicy() {
        PiKVCluster streaming = TestClusters.small("demo", "ns");
        streaming.getSpec().getScheduling().setPolicy(SchedulingPolicy.STREAMING);
        streaming.getSpec().getScheduling().setParameters(Map.of("window", 16.0, "sinks", 2.0));
        ShardCluster m = model(streaming);
        assertThat(m.generateConfigMap().getData()).containsEntry("pikv.store.eviction", "streaming")
                .containsEntry("pikv.store.eviction-parameters", "sinks=2,window=16");
        assertThat(m.generateStatefulSet().getSpec().getTemplate().getSpec().getContainers().get(0).getEnv())
                .extracting(EnvVar::getName).contains("PIKV_STORE_EVICTION", "PIKV_STORE_EVICTION_PARAMETERS");
        assertThat(m.controlState().policy()).isEqualTo("streaming");
        assertThat(m.controlState().parameters()).containsEntry("sinks", 2.0).containsEntry("window", 16.0);

        // Adaptive: the shards start with its first candidate, without adaptive's own knobs (the tuner's).
        PiKVCluster adaptive = TestClusters.small("demo", "ns");
        adaptive.getSpec().getScheduling().setPolicy(SchedulingPolicy.ADAPTIVE);
        adaptive.getSpec().getScheduling().setCandidates(List.of(SchedulingPolicy.H2O, SchedulingPolicy.LRU));
        adaptive.getSpec().getScheduling().setParameters(Map.of("window", 4096.0, "margin", 0.01));
        ShardCluster a = model(adaptive);
        assertThat(a.activePolicy()).isEqualTo(SchedulingPolicy.H2O);
        assertThat(a.generateConfigMap().getData()).containsEntry("pikv.store.eviction", "h2o")
                .doesNotContainKey("pikv.store.eviction-parameters");
        assertThat(a.controlState().parameters()).isEmpty();

        // Without a scheduling section: lru.
        PiKVCluster plain = TestClusters.small("demo", "ns");
        plain.getSpec().setScheduling(null);
        assertThat(model(plain).generateConfigMap().getData()).containsEntry("pikv.store.eviction", "lru");
    }

    @Test
    void configHashChangesExactlyWhenThePodTemplateDoes() {
        String base = hashAfter(c -> { });
        assertThat(hashAfter(c -> { })).isEqualTo(base);
        // Read at start-up: a change rolls the pods.
        Stream.<Consumer<PiKVCluster>>of(
                c -> c.getSpec().setMemoryPerShard(new Quantity("128Mi")),
                c -> c.getSpec().getModel().setLayers(8),
                c -> c.getSpec().getCompression().setMethod("int8"),
                c -> {
                    c.getSpec().getCompression().setMethod("pyramid");
                    c.getSpec().getCompression().setParameters(Map.of("budget", 0.5));
                },
                // The eviction policy: until the operator publishes control records, the shards take it at start.
                c -> c.getSpec().getScheduling().setPolicy(SchedulingPolicy.UTILITY),
                c -> {
                    KafkaSpec k = new KafkaSpec();
                    k.setBootstrapServers("kafka:9092");
                    c.getSpec().setKafka(k);
                },
                // Anything else of the pod template rolls the pods as well, so it changes the hash too.
                c -> c.getSpec().getSidecar().setImage("registry.example/pikv/sidecar:0.2.0"),
                c -> c.getSpec().getSidecar().setResources(new ResourceRequirementsBuilder()
                        .addToRequests("cpu", new Quantity("2")).build()),
                c -> c.getSpec().getGpu().setEnabled(true)).forEach(change ->
                assertThat(hashAfter(change)).isNotEqualTo(base));
        // Applied online (gateway routing, shard count): the pods keep running.
        Stream.<Consumer<PiKVCluster>>of(
                c -> c.getSpec().getRouting().setLambda(0.5),
                c -> c.getSpec().setShards(4)).forEach(change ->
                assertThat(hashAfter(change)).isEqualTo(base));
    }

    @Test
    void anotherSpellingOfTheSameQuantitiesRollsNothing() {
        String twoGi = hashAfter(c -> c.getSpec().getSidecar().setResources(new ResourceRequirementsBuilder()
                .addToLimits("memory", new Quantity("2Gi")).addToRequests("cpu", new Quantity("1")).build()));
        String mebi = hashAfter(c -> c.getSpec().getSidecar().setResources(new ResourceRequirementsBuilder()
                .addToLimits("memory", new Quantity("2048Mi")).addToRequests("cpu", new Quantity("1000m")).build()));
        String bytes = hashAfter(c -> c.getSpec().getSidecar().setResources(new ResourceRequirementsBuilder()
                .addToLimits("memory", new Quantity("2147483648")).addToRequests("cpu", new Quantity("1")).build()));
        assertThat(mebi).isEqualTo(twoGi).isEqualTo(bytes);
        assertThat(ShardCluster.canonical(new Quantity("1536Mi"))).isEqualTo(new Quantity("1536Mi"));
        assertThat(ShardCluster.canonical(new Quantity("1.5Gi")).toString()).isEqualTo("1536Mi");
        assertThat(ShardCluster.canonical(new Quantity("0.5")).toString()).isEqualTo("500m");
        assertThat(ShardCluster.canonical(new Quantity("1000m")).toString()).isEqualTo("1");
        assertThat(ShardCluster.canonical(new Quantity("3G")).toString()).isEqualTo("3000000000");
        assertThat(ShardCluster.canonical(new Quantity("0")).toString()).isEqualTo("0");
    }

    @Test
    void aShardAsksForACpuUnlessItsResourcesNameOne() {
        PiKVCluster c = TestClusters.small("demo", "ns");
        c.getSpec().getSidecar().setResources(new ResourceRequirementsBuilder()
                .addToLimits("memory", new Quantity("20Gi")).build());
        Container container = model(c).generateStatefulSet().getSpec().getTemplate().getSpec().getContainers().get(0);
        assertThat(container.getResources().getRequests()).containsEntry("cpu", new Quantity("1"));
        c.getSpec().getSidecar().setResources(new ResourceRequirementsBuilder()
                .addToLimits("memory", new Quantity("20Gi")).addToLimits("cpu", new Quantity("4")).build());
        container = model(c).generateStatefulSet().getSpec().getTemplate().getSpec().getContainers().get(0);
        assertThat(container.getResources().getRequests()).doesNotContainKey("cpu"); // Kubernetes takes the limit
    }

    @Test
    void aGpuSpecWithoutItsDefaultsTakesThem() {
        PiKVCluster c = TestClusters.small("demo", "ns");
        c.getSpec().getGpu().setEnabled(true);
        c.getSpec().getGpu().setResourceName(null); // a resource made under a CRD without the defaults
        c.getSpec().getGpu().setPerShard(null);
        StatefulSet sts = model(c).generateStatefulSet();
        assertThat(sts.getSpec().getTemplate().getSpec().getContainers().get(0).getResources().getLimits())
                .containsEntry("nvidia.com/gpu", new Quantity("1"));
    }

    @Test
    void serviceIsHeadlessAndPdbTakesOneShardAtATime() {
        ShardCluster m = model(TestClusters.small("demo", "ns"));
        Service svc = m.generateHeadlessService();
        assertThat(svc.getSpec().getClusterIP()).isEqualTo("None");
        assertThat(svc.getSpec().getSelector()).isEqualTo(PiKVClusterResources.selectorLabels("demo"));
        assertThat(svc.getSpec().getPorts()).singleElement().satisfies(p -> assertThat(p.getPort()).isEqualTo(8080));
        PodDisruptionBudget pdb = m.generatePodDisruptionBudget();
        assertThat(pdb.getSpec().getMaxUnavailable().getIntVal()).isEqualTo(1);
        assertThat(pdb.getSpec().getUnhealthyPodEvictionPolicy()).isEqualTo("AlwaysAllow");
        assertThat(pdb.getSpec().getSelector().getMatchLabels()).isEqualTo(PiKVClusterResources.selectorLabels("demo"));
    }

    @Test
    void buildersArePure() {
        PiKVCluster c = TestClusters.mixtral("mixtral", "llm");
        ShardCluster a = model(c);
        ShardCluster b = model(c);
        assertThat(a.generateStatefulSet()).isEqualTo(b.generateStatefulSet());
        assertThat(a.generateConfigMap()).isEqualTo(b.generateConfigMap());
        assertThat(a.generateHeadlessService()).isEqualTo(b.generateHeadlessService());
        assertThat(a.generatePodDisruptionBudget()).isEqualTo(b.generatePodDisruptionBudget());
    }

    @Test
    void scalingMovesOnlyTheExpertsThatMust() {
        // 4 -> 3 shards: only shard 3's experts (3 and 7) move, each to a remaining shard with the fewest.
        ExpertShardMap four = new ExpertShardMap(2, 4, new int[] {0, 1, 2, 3, 0, 1, 2, 3});
        ExpertShardMap three = ShardMaps.next(four, 2, 8, 3);
        assertThat(three.assignment()).containsExactly(0, 1, 2, 0, 0, 1, 2, 1);
        assertThat(three.epoch()).isEqualTo(3);
        // Random maps and counts: what stays on a kept shard stays; every shard is within one of the mean, or as
        // close as the experts that stay allow; the moves are exactly the removed shards' experts, or what the new
        // shards need.
        java.util.Random rnd = new java.util.Random(5);
        for (int trial = 0; trial < 500; trial++) {
            int experts = 1 + rnd.nextInt(64);
            int from = 1 + rnd.nextInt(Math.min(experts, 8));
            int to = 1 + rnd.nextInt(Math.min(experts, 8));
            int[] before = ExpertShardMap.roundRobin(experts, from).assignment();
            for (int i = 0; i < experts; i++) { // shuffle, so the map is not round-robin
                int j = rnd.nextInt(experts);
                int t = before[i];
                before[i] = before[j];
                before[j] = t;
            }
            int[] after = ShardMaps.next(new ExpertShardMap(0, from, before), 0, experts, to).assignment();
            int moved = 0;
            int[] count = new int[to];
            for (int e = 0; e < experts; e++) {
                assertThat(after[e]).isBetween(0, to - 1);
                count[after[e]]++;
                if (after[e] != before[e]) {
                    moved++;
                    assertThat(before[e] >= to || after[e] >= from).as("expert %d moved between kept shards", e)
                            .isTrue();
                }
            }
            int removed = 0;
            for (int e = 0; e < experts; e++) {
                removed += before[e] >= to ? 1 : 0;
            }
            assertThat(moved).isEqualTo(to < from ? removed : (to - from) * (experts / to));
            for (int sh = from; sh < to; sh++) {
                assertThat(count[sh]).isEqualTo(experts / to);
            }
            if (to < from) { // the kept shards start within one of each other; each moved expert goes to the fewest
                assertThat(java.util.Arrays.stream(count).max().getAsInt()
                        - java.util.Arrays.stream(count).min().getAsInt()).as("spread after %d -> %d", from, to)
                        .isLessThanOrEqualTo(1);
            }
        }
    }

    @Test
    void aChangeBesideTheMapIsANewControlEpoch() throws Exception {
        PiKVCluster c = TestClusters.small("demo", "ns");
        ShardCluster first = model(c);
        ControlState running = first.controlState();
        // The same spec over the state it rendered: nothing changes, no new epoch (no churn).
        assertThat(ShardCluster.fromCrd(c, c.getSpec(), running, running.epoch(), SETTINGS).controlState())
                .isEqualTo(running);
        // Parameters read back from the ConfigMap's JSON compare equal too.
        ControlState readBack = ShardCluster.readControlState(first.generateConfigMap());
        assertThat(ShardCluster.fromCrd(c, c.getSpec(), readBack, running.epoch(), SETTINGS).controlState().epoch())
                .isEqualTo(running.epoch());
        // A new budget, a new policy, new parameters: each a newer epoch, with the map kept.
        c.getSpec().setMemoryPerShard(new io.fabric8.kubernetes.api.model.Quantity("128Mi"));
        ControlState budget = ShardCluster.fromCrd(c, c.getSpec(), running, running.epoch(), SETTINGS).controlState();
        assertThat(budget.epoch()).isEqualTo(running.epoch() + 1);
        assertThat(budget.shardOfExpert()).isEqualTo(running.shardOfExpert());
        c.getSpec().getScheduling().setPolicy(SchedulingPolicy.STREAMING);
        ControlState policy = ShardCluster.fromCrd(c, c.getSpec(), budget, budget.epoch(), SETTINGS).controlState();
        assertThat(policy.epoch()).isEqualTo(budget.epoch() + 1);
        c.getSpec().getScheduling().setParameters(Map.of("sinks", 2.0));
        ControlState parameters = ShardCluster.fromCrd(c, c.getSpec(), policy, policy.epoch(), SETTINGS)
                .controlState();
        assertThat(parameters.epoch()).isEqualTo(policy.epoch() + 1);
        assertThat(ShardCluster.fromCrd(c, c.getSpec(), parameters, parameters.epoch(), SETTINGS).controlState())
                .isEqualTo(parameters);
    }

    @Test
    void shardMapKeepsItsEpochUntilTheShapeChanges() {
        ExpertShardMap rebalanced = new ExpertShardMap(7, 2, new int[] {1, 1, 0, 0, 1, 0, 1, 0});
        assertThat(ShardMaps.next(rebalanced, 7, 8, 2)).isSameAs(rebalanced);
        ExpertShardMap scaled = ShardMaps.next(rebalanced, 7, 8, 4);
        assertThat(scaled.epoch()).isEqualTo(8);
        // Shards 2 and 3 take two experts each, the highest of the fullest shard first; the other four stay.
        assertThat(scaled.assignment()).containsExactly(1, 1, 0, 0, 3, 3, 2, 2);
        // A change beside the map (policy, parameters, budget) is a new epoch with the same map.
        ExpertShardMap same = ShardMaps.next(rebalanced, 7, 8, 2, true);
        assertThat(same.epoch()).isEqualTo(8);
        assertThat(same.assignment()).containsExactly(rebalanced.assignment());
        // A lost ConfigMap must not reset epochs the shards already accepted.
        assertThat(ShardMaps.next(null, 7, 8, 2).epoch()).isEqualTo(8);
        assertThat(ShardMaps.next(null, -1, 8, 2).epoch()).isZero();
    }
}
