package io.pikv.operator.model;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;
import io.fabric8.kubernetes.api.model.ConfigMap;
import io.fabric8.kubernetes.api.model.ConfigMapBuilder;
import io.fabric8.kubernetes.api.model.Container;
import io.fabric8.kubernetes.api.model.ContainerBuilder;
import io.fabric8.kubernetes.api.model.EnvFromSource;
import io.fabric8.kubernetes.api.model.EnvFromSourceBuilder;
import io.fabric8.kubernetes.api.model.EnvVar;
import io.fabric8.kubernetes.api.model.EnvVarBuilder;
import io.fabric8.kubernetes.api.model.IntOrString;
import io.fabric8.kubernetes.api.model.ObjectMeta;
import io.fabric8.kubernetes.api.model.ObjectMetaBuilder;
import io.fabric8.kubernetes.api.model.OwnerReference;
import io.fabric8.kubernetes.api.model.OwnerReferenceBuilder;
import io.fabric8.kubernetes.api.model.Probe;
import io.fabric8.kubernetes.api.model.PodSpec;
import io.fabric8.kubernetes.api.model.PodSpecBuilder;
import io.fabric8.kubernetes.api.model.ProbeBuilder;
import io.fabric8.kubernetes.api.model.Quantity;
import io.fabric8.kubernetes.api.model.ResourceRequirements;
import io.fabric8.kubernetes.api.model.Service;
import io.fabric8.kubernetes.api.model.ServiceBuilder;
import io.fabric8.kubernetes.api.model.Toleration;
import io.fabric8.kubernetes.api.model.TolerationBuilder;
import io.fabric8.kubernetes.api.model.apps.StatefulSet;
import io.fabric8.kubernetes.api.model.apps.StatefulSetBuilder;
import io.fabric8.kubernetes.api.model.policy.v1.PodDisruptionBudget;
import io.fabric8.kubernetes.api.model.policy.v1.PodDisruptionBudgetBuilder;
import io.pikv.api.events.ControlState;
import io.pikv.api.v1alpha1.PiKVCluster;
import io.pikv.api.v1alpha1.PiKVClusterSpec;
import io.pikv.api.v1alpha1.PlacementSpec;
import io.pikv.api.v1alpha1.SchedulingPolicy;
import io.pikv.api.v1alpha1.SidecarSpec;
import io.pikv.kv.ExpertShardMap;
import io.pikv.kv.StorageType;

import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HexFormat;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Objects;
import java.util.TreeMap;
import java.util.stream.Collectors;

/**
 * The desired state of one cluster's shards, computed once per reconcile from a valid spec, and the pure functions
 * that turn it into Kubernetes objects ({@link #generateConfigMap()}, {@link #generateStatefulSet()},
 * {@link #generateHeadlessService()}, {@link #generatePodDisruptionBudget()}). Nothing here talks to the API server.
 *
 * <p>Settings reach the sidecar as environment variables ({@code pikv.store.budget-bytes} →
 * {@code PIKV_STORE_BUDGET_BYTES}) with literal values in the pod template (the ConfigMap holds the same keys for
 * reading; pods mount it at {@link #CONFIG_MOUNT} but take no setting from it, so a pod of an older revision
 * restarting mid-rollout keeps its own settings). The hash of the whole pod spec (those settings, the image, resources, GPU, credentials) is the pod
 * template's {@code pikv.io/config-hash}: it changes exactly when the StatefulSet rolls the shards, and changing
 * anything the shards apply online (the gateway's routing, the shard map) leaves it alone.
 */
public final class ShardCluster {

    /** Key under which the reconciler hands the model to the dependents. */
    public static final String CONTEXT_KEY = ShardCluster.class.getName();
    /** ConfigMap key of the control state (shard map, policy, budget) in {@code pikv.control}'s record format. */
    public static final String CONTROL_STATE_KEY = "control-state.json";
    /**
     * StatefulSet annotations: the generation and the spec (JSON) the shards were rendered from. Applied with the
     * StatefulSet, before the status that records the same: a status write that fails after them leaves the shards on a
     * generation status does not name, and an invalid spec then must keep that one, not an older one.
     */
    public static final String RENDERED_GENERATION = "pikv.io/rendered-generation";
    /**
     * The digest of the control state the operator wrote into the ConfigMap ({@link #hash} of it): a state edited by
     * hand no longer matches it, and is not taken for the operator's (its map could otherwise run under an epoch the
     * shards already hold with another map).
     */
    public static final String CONTROL_STATE_DIGEST = "pikv.io/control-state-digest";
    /** See {@link #RENDERED_GENERATION}. */
    public static final String RENDERED_SPEC = "pikv.io/rendered-spec";

    /** What {@link #RENDERED_GENERATION} and {@link #RENDERED_SPEC} say. */
    public record Rendered(long generation, String specJson) {
    }
    /** Where the ConfigMap is mounted in the shard pods. */
    public static final String CONFIG_MOUNT = "/etc/pikv";
    /** Direct memory beyond the pages the sidecar keeps for its own buffers (its ShardNode.SERVER_DIRECT_MEMORY). */
    static final long SERVER_DIRECT_MEMORY = 64L << 20;

    private static final ObjectMapper JSON = new ObjectMapper().enable(SerializationFeature.ORDER_MAP_ENTRIES_BY_KEYS);

    private final String name;
    private final String namespace;
    private final OwnerReference owner;
    private final PiKVClusterSpec spec;
    private final OperatorSettings settings;
    private final StorageType storageType;
    private final long budgetBytes;
    private final long containerMemoryBytes;
    /** Heap for the bookkeeping of a full budget's entries ({@link PiKVClusterValidator#bookkeepingBytes}). */
    private final long bookkeepingBytes;
    private final Map<String, String> shardSettings;
    private final Map<String, String> otherSettings;
    private final ExpertShardMap shardMap;
    private final String configHash;
    private Rendered rendered;

    private ShardCluster(PiKVCluster cluster, PiKVClusterSpec spec, ControlState current, long knownEpoch,
                         OperatorSettings settings) {
        this.name = cluster.getMetadata().getName();
        this.namespace = cluster.getMetadata().getNamespace();
        this.owner = new OwnerReferenceBuilder().withApiVersion(PiKVCluster.GROUP + "/" + PiKVCluster.VERSION)
                .withKind(PiKVCluster.KIND).withName(name).withUid(cluster.getMetadata().getUid())
                .withController(true).withBlockOwnerDeletion(true).build();
        this.spec = spec;
        this.settings = settings;
        this.storageType = PiKVClusterValidator.storageType(spec);
        this.budgetBytes = PiKVClusterValidator.bytes(spec.getMemoryPerShard());
        this.bookkeepingBytes = PiKVClusterValidator.bookkeepingBytes(spec, budgetBytes);
        this.containerMemoryBytes = containerMemory(spec, budgetBytes, bookkeepingBytes, settings);
        // The policy, its parameters and the budget travel with the map: a change of any of them is a new epoch.
        boolean restChanged = current != null && !(Objects.equals(current.policy(), activePolicy().value())
                && Objects.equals(current.parameters() == null ? Map.of() : current.parameters(),
                activePolicyParameters()) && current.budgetBytes() == budgetBytes);
        this.shardMap = ShardMaps.next(shardMap(current), knownEpoch, spec.getModel().getExperts(), spec.getShards(),
                restChanged);
        this.shardSettings = renderShardSettings();
        this.otherSettings = renderOtherSettings();
        this.configHash = hash(Map.of("podSpec", podSpecJson()));
    }

    /**
     * The model of a cluster running {@code spec}, which must have passed {@link PiKVClusterValidator} (it may be
     * the last valid spec rather than the resource's current one).
     *
     * @param current    the control state the shards run now (see {@link #readControlState(ConfigMap)}), or null
     * @param knownEpoch the highest shard-map epoch in status, or -1
     */
    public static ShardCluster fromCrd(PiKVCluster cluster, PiKVClusterSpec spec, ControlState current,
                                       long knownEpoch, OperatorSettings settings) {
        return new ShardCluster(cluster, spec, current, knownEpoch, settings);
    }

    private Map<String, String> renderShardSettings() {
        Map<String, String> s = new LinkedHashMap<>();
        s.put("pikv.cluster", clusterId());
        s.put("pikv.model.layers", String.valueOf(spec.getModel().getLayers()));
        s.put("pikv.model.q-heads", String.valueOf(spec.getModel().getQHeads()));
        s.put("pikv.model.kv-heads", String.valueOf(spec.getModel().getKvHeads()));
        s.put("pikv.model.head-dim", String.valueOf(spec.getModel().getHeadDim()));
        s.put("pikv.model.experts", String.valueOf(spec.getModel().getExperts()));
        s.put("pikv.model.top-k", String.valueOf(spec.getModel().getTopK()));
        s.put("pikv.store.dtype", storageType.name().toLowerCase(Locale.ROOT));
        // The page size the budget, the heap and the CUDA check were sized for, whatever the image's default.
        s.put("pikv.store.page-tokens", String.valueOf(PiKVClusterValidator.PAGE_TOKENS));
        s.put("pikv.store.budget-bytes", String.valueOf(budgetBytes));
        // The JVM heap beside the entries' bookkeeping is half the memory left above the budget and it (see env());
        // the prefix block cache and request bodies live on it, so they are sized from it rather than left at the
        // sidecar's defaults (256 MiB and 64 MiB).
        long heap = freeHeapBytes();
        s.put("pikv.blocks.capacity-bytes", String.valueOf(heap / 4));
        long maxBody = Math.min(64L << 20, heap / 8);
        s.put("pikv.api.max-body-bytes", String.valueOf(maxBody));
        // The HTTP layer's own bound, which also caps bodies sent without a Content-Length (read before checked).
        s.put("quarkus.http.limits.max-body-size", String.valueOf(2 * maxBody));
        // PyramidKV budgets, enforced by the shards (int8, the other part a shard applies, is the dtype above).
        PiKVClusterValidator.Compression compression = spec.getCompression() == null ? null
                : PiKVClusterValidator.parseCompression(spec.getCompression().getMethod(), new ArrayList<>());
        if (compression != null && compression.pyramid() && spec.getCompression().getParameters() != null
                && spec.getCompression().getParameters().get("budget") != null) {
            // Only with a budget: knobs without one stop a shard at start-up (a spec an older operator accepted).
            Map<String, Double> knobs = spec.getCompression().getParameters() == null ? Map.of()
                    : spec.getCompression().getParameters();
            for (String knob : List.of("budget", "beta", "sinks", "window")) {
                if (knobs.get(knob) != null) {
                    s.put("pikv.store.pyramid." + knob, number(knobs.get(knob)));
                }
            }
        }
        // A GPU shard must attend on its GPU: with `cuda` one that cannot (no driver, a library missing) stops at
        // start-up with the reason, which the progress deadline reports, rather than holding the GPU while it attends
        // on the CPU (`auto`). Without one, the sidecar's default (`auto`, the CPU on a node without a device).
        if (gpuEnabled()) {
            s.put("pikv.compute", "cuda");
        }
        // The eviction policy the shards start with (a control record may switch it later).
        s.put("pikv.store.eviction", activePolicy().value());
        Map<String, Double> parameters = activePolicyParameters();
        if (!parameters.isEmpty()) {
            s.put("pikv.store.eviction-parameters", parameters.entrySet().stream()
                    .map(e -> e.getKey() + "=" + number(e.getValue())).collect(Collectors.joining(",")));
        }
        if (spec.getKafka() != null) {
            s.put("kafka.bootstrap.servers", spec.getKafka().getBootstrapServers());
            if (spec.getKafka().getTopics() != null) {
                // A topic left null (the API server defaults it; a client may not) is the sidecar's default, the same.
                putIfNotNull(s, "pikv.telemetry.topic", spec.getKafka().getTopics().getEvents());
                putIfNotNull(s, "pikv.control.topic", spec.getKafka().getTopics().getControl());
            }
        } else {
            // No Kafka: the shards publish nothing and run the configured state instead of waiting for control.
            s.put("pikv.telemetry.enabled", "false");
            s.put("pikv.control.enabled", "false");
        }
        return s;
    }

    /** Settings for gateways and for the control loop, in the ConfigMap but not read by the shards at start-up. */
    private Map<String, String> renderOtherSettings() {
        Map<String, String> s = new LinkedHashMap<>();
        if (spec.getRouting() != null) {
            s.put("pikv.gateway.routing", spec.getRouting().getStrategy() == null ? "hash"
                    : spec.getRouting().getStrategy().value());
            if (spec.getRouting().getLambda() != null) {
                s.put("pikv.gateway.lambda", String.valueOf(spec.getRouting().getLambda()));
            }
            if (spec.getRouting().getWindow() != null) {
                s.put("pikv.gateway.window", String.valueOf(spec.getRouting().getWindow()));
            }
        }
        if (spec.getScheduling() != null && spec.getScheduling().getCandidates() != null
                && !spec.getScheduling().getCandidates().isEmpty()) {
            s.put("pikv.scheduling.candidates", spec.getScheduling().getCandidates().stream()
                    .map(SchedulingPolicy::value).collect(Collectors.joining(",")));
        }
        return s;
    }

    private static String emptyAsNull(String value) {
        return value == null || value.isEmpty() ? null : value;
    }

    private static void putIfNotNull(Map<String, String> settings, String key, String value) {
        if (value != null) {
            settings.put(key, value);
        }
    }

    private static String number(Double v) {
        return v == Math.rint(v) && Math.abs(v) < 1e15 ? String.valueOf(v.longValue()) : String.valueOf(v);
    }

    /**
     * The cluster's identity on Kafka ({@code pikv.cluster}: telemetry keys {@code <id>/<shard>}, control records'
     * {@code cluster}): {@code <namespace>/<name>}, so that same-named clusters of two namespaces sharing a broker
     * never read each other's records.
     */
    public String clusterId() {
        return namespace + "/" + name;
    }

    /** The control state the shards start from: the record the control loop will publish on {@code pikv.control}. */
    public ControlState controlState() {
        SchedulingPolicy policy = activePolicy();
        Map<String, Double> parameters = activePolicyParameters();
        return new ControlState(ControlState.VERSION, clusterId(), shardMap.epoch(),
                Arrays.stream(shardMap.assignment()).boxed().toList(), shardMap.shards(), policy.value(), parameters,
                budgetBytes);
    }

    /**
     * The eviction policy the shards run: the spec's, or for {@code adaptive} its first candidate ({@code lru} when it
     * lists none), which the shards start from until the policy tuner switches between the candidates.
     */
    public SchedulingPolicy activePolicy() {
        SchedulingPolicy policy = spec.getScheduling() == null || spec.getScheduling().getPolicy() == null
                ? SchedulingPolicy.LRU : spec.getScheduling().getPolicy();
        if (policy == SchedulingPolicy.ADAPTIVE) {
            List<SchedulingPolicy> candidates = spec.getScheduling().getCandidates();
            return candidates == null || candidates.isEmpty() ? SchedulingPolicy.LRU : candidates.get(0);
        }
        return policy;
    }

    /** The parameters of {@link #activePolicy()}: the spec's, none for an adaptive cluster's starting candidate. */
    public Map<String, Double> activePolicyParameters() {
        if (spec.getScheduling() == null || spec.getScheduling().getParameters() == null
                || spec.getScheduling().getPolicy() == SchedulingPolicy.ADAPTIVE) {
            return Map.of(); // adaptive's window and margin are the tuner's, not a shard policy's
        }
        return new TreeMap<>(spec.getScheduling().getParameters());
    }

    /** Largest control-state epoch taken from a ConfigMap; far beyond any a cluster reaches (one per change). */
    public static final long MAX_EPOCH = 1L << 53;

    /** The control state carried by a ConfigMap this operator wrote, or null when it has none or cannot be read. */
    public static ControlState readControlState(ConfigMap configMap) {
        if (configMap == null || configMap.getData() == null || !configMap.getData().containsKey(CONTROL_STATE_KEY)) {
            return null;
        }
        String written = configMap.getMetadata() == null || configMap.getMetadata().getAnnotations() == null ? null
                : configMap.getMetadata().getAnnotations().get(CONTROL_STATE_DIGEST);
        if (written != null && !written.equals(hash(Map.of(CONTROL_STATE_KEY, configMap.getData().get(CONTROL_STATE_KEY))))) {
            return null; // edited by hand: read as lost, so it is written anew under a higher epoch
        }
        try {
            ControlState state = JSON.readValue(configMap.getData().get(CONTROL_STATE_KEY), ControlState.class);
            // The ConfigMap can be edited by hand: an epoch no operator could have reached (the next one would
            // overflow, and every reconcile fail before it could repair the ConfigMap) reads as no state at all.
            if (state.epoch() >= MAX_EPOCH || state.epoch() < 0) {
                return null;
            }
            // Nor a shard count no spec can ask for: a map resized from it would size its arrays by it (a count of
            // 2^31 − 1 threw OutOfMemoryError out of the reconcile, which the SDK never finished).
            if (state.shards() < 1 || state.shards() > io.pikv.api.v1alpha1.PiKVClusterSpec.MAX_SHARDS) {
                return null;
            }
            return shardMap(state) == null ? null : state;
        } catch (JsonProcessingException | RuntimeException e) {
            return null;
        }
    }

    private static ExpertShardMap shardMap(ControlState state) {
        if (state == null || state.shardOfExpert() == null) {
            return null;
        }
        try {
            return new ExpertShardMap(state.epoch(), state.shards(),
                    state.shardOfExpert().stream().mapToInt(Integer::intValue).toArray());
        } catch (RuntimeException e) {
            return null;
        }
    }

    // ---- objects ----

    private ObjectMeta metadata(String objectName) {
        return new ObjectMetaBuilder().withName(objectName).withNamespace(namespace)
                .withLabels(PiKVClusterResources.labels(name)).withOwnerReferences(owner).build();
    }

    public ConfigMap generateConfigMap() {
        Map<String, String> data = new TreeMap<>();
        data.putAll(shardSettings);
        data.putAll(otherSettings);
        String control;
        try {
            control = JSON.writeValueAsString(controlState());
        } catch (JsonProcessingException e) {
            throw new IllegalStateException("cannot render the control state", e);
        }
        data.put(CONTROL_STATE_KEY, control);
        ObjectMeta meta = metadata(PiKVClusterResources.configMapName(name));
        meta.setAnnotations(new TreeMap<>(Map.of(CONTROL_STATE_DIGEST, hash(Map.of(CONTROL_STATE_KEY, control)))));
        return new ConfigMapBuilder().withMetadata(meta).withData(data).build();
    }

    /** Largest spec recorded on the StatefulSet: annotations are limited to 256 KiB in all. */
    static final int MAX_RENDERED_SPEC_CHARS = 64 * 1024;

    /**
     * Records on the StatefulSet the generation and spec this is rendered from ({@link #RENDERED_GENERATION}): applied
     * with the StatefulSet itself, it says what the shards run even when a status write was lost (a ConfigMap, applied
     * before it, could name a generation whose StatefulSet was then refused). A spec larger than
     * {@link #MAX_RENDERED_SPEC_CHARS} is not recorded (status alone then names the last valid one).
     */
    public ShardCluster renderedFrom(long generation, String specJson) {
        this.rendered = specJson.length() > MAX_RENDERED_SPEC_CHARS ? null : new Rendered(generation, specJson);
        return this;
    }

    /** The generation and spec a StatefulSet says it was rendered from, or null (none, or unreadable). */
    public static Rendered rendered(StatefulSet statefulSet) {
        Map<String, String> a = statefulSet == null || statefulSet.getMetadata() == null ? null
                : statefulSet.getMetadata().getAnnotations();
        if (a == null || a.get(RENDERED_GENERATION) == null || a.get(RENDERED_SPEC) == null) {
            return null;
        }
        try {
            return new Rendered(Long.parseLong(a.get(RENDERED_GENERATION)), a.get(RENDERED_SPEC));
        } catch (NumberFormatException e) {
            return null; // edited by hand: no evidence
        }
    }

    public Service generateHeadlessService() {
        return new ServiceBuilder().withMetadata(metadata(PiKVClusterResources.headlessServiceName(name)))
                .withNewSpec()
                .withClusterIP("None")
                // Shards resolve by name as soon as they exist, so gateways listing every shard can start early.
                .withPublishNotReadyAddresses(true)
                .withSelector(PiKVClusterResources.selectorLabels(name))
                .addNewPort().withName(PiKVClusterResources.HTTP_PORT_NAME).withPort(PiKVClusterResources.HTTP_PORT)
                .withTargetPort(new IntOrString(PiKVClusterResources.HTTP_PORT_NAME)).withProtocol("TCP").endPort()
                .endSpec().build();
    }

    public PodDisruptionBudget generatePodDisruptionBudget() {
        // One shard at a time: a drained shard loses its resident KV, so voluntary disruptions go one by one. A shard
        // that is not ready serves nothing, so it may always be evicted itself (the drain of its node is not held up
        // by it); while it is not ready, it takes the budget of one, so no ready shard may be evicted meanwhile.
        return new PodDisruptionBudgetBuilder()
                .withMetadata(metadata(PiKVClusterResources.podDisruptionBudgetName(name)))
                .withNewSpec()
                .withMaxUnavailable(new IntOrString(1))
                .withUnhealthyPodEvictionPolicy("AlwaysAllow")
                .withNewSelector().withMatchLabels(PiKVClusterResources.selectorLabels(name)).endSelector()
                .endSpec().build();
    }

    public StatefulSet generateStatefulSet() {
        Map<String, String> podLabels = PiKVClusterResources.labels(name);
        Map<String, String> podAnnotations = new LinkedHashMap<>();
        podAnnotations.put(PiKVClusterResources.ANNOTATION_CONFIG_HASH, configHash);
        podAnnotations.put("prometheus.io/scrape", "true");
        podAnnotations.put("prometheus.io/port", String.valueOf(PiKVClusterResources.HTTP_PORT));
        podAnnotations.put("prometheus.io/path", "/q/metrics");
        ObjectMeta stsMeta = metadata(PiKVClusterResources.shardStatefulSetName(name));
        if (rendered != null) {
            stsMeta.setAnnotations(new TreeMap<>(Map.of(RENDERED_GENERATION, String.valueOf(rendered.generation()),
                    RENDERED_SPEC, rendered.specJson())));
        }
        return new StatefulSetBuilder()
                .withMetadata(stsMeta)
                .withNewSpec()
                .withReplicas(spec.getShards())
                .withServiceName(PiKVClusterResources.headlessServiceName(name))
                // Shards are independent: start and stop them together rather than one after another.
                .withPodManagementPolicy("Parallel")
                .withNewUpdateStrategy().withType("RollingUpdate").endUpdateStrategy()
                .withRevisionHistoryLimit(5)
                .withNewSelector().withMatchLabels(PiKVClusterResources.selectorLabels(name)).endSelector()
                .withNewTemplate()
                .withNewMetadata().withLabels(podLabels).withAnnotations(podAnnotations).endMetadata()
                .withSpec(podSpec())
                .endTemplate()
                .endSpec().build();
    }

    /** The pod spec as JSON with sorted map keys: the input of the config hash. */
    private String podSpecJson() {
        try {
            return JSON.writeValueAsString(podSpec());
        } catch (com.fasterxml.jackson.core.JsonProcessingException e) {
            throw new IllegalStateException("cannot write the shard pod spec as JSON", e);
        }
    }

    /** The shard pods' spec: everything of the pod template but its labels and annotations. */
    private PodSpec podSpec() {
        List<Toleration> tolerations = new ArrayList<>();
        if (gpuEnabled()) {
            tolerations.add(new TolerationBuilder().withKey(gpuResource()).withOperator("Exists")
                    .withEffect("NoSchedule").build());
            if (gpuResource().startsWith("nvidia.com/mig-")) {
                // MIG slices live on GPU nodes, which GPU node pools taint by the whole GPU's resource name.
                tolerations.add(new TolerationBuilder().withKey("nvidia.com/gpu").withOperator("Exists")
                        .withEffect("NoSchedule").build());
            }
        }
        PlacementSpec placement = spec.getPlacement() == null ? new PlacementSpec() : spec.getPlacement();
        if (placement.getTolerations() != null) {
            // Empty fields as absent: the API server stores them so, and an apply that sends "" would differ from
            // its copy at every reconcile (and "" and absent, meaning the same, would give two config hashes).
            for (Toleration t : placement.getTolerations()) {
                tolerations.add(new TolerationBuilder(t).withKey(emptyAsNull(t.getKey()))
                        .withOperator(emptyAsNull(t.getOperator())).withValue(emptyAsNull(t.getValue()))
                        .withEffect(emptyAsNull(t.getEffect())).build());
            }
        }
        SidecarSpec sidecar = spec.getSidecar() == null ? new SidecarSpec() : spec.getSidecar();
        Map<String, String> nodeSelector = new java.util.TreeMap<>(placement.getNodeSelector() == null ? Map.of()
                : placement.getNodeSelector());
        String runtimeClass = null;
        if (gpuEnabled()) {
            // The sidecar's CUDA bindings are for x86-64: a GPU shard scheduled on an arm64 node (a Grace Hopper
            // one, say) could not start. The validator refuses another architecture asked for.
            nodeSelector.putIfAbsent(PiKVClusterValidator.ARCH_LABEL, PiKVClusterValidator.GPU_ARCH);
            String asked = spec.getGpu().getRuntimeClassName();
            runtimeClass = asked == null || asked.isEmpty() ? null : asked;
        }
        return new PodSpecBuilder()
                .withNodeSelector(nodeSelector.isEmpty() ? null : nodeSelector)
                .withRuntimeClassName(runtimeClass)
                .withPriorityClassName(placement.getPriorityClassName() == null
                        || placement.getPriorityClassName().isEmpty() ? null : placement.getPriorityClassName())
                .withImagePullSecrets(sidecar.getImagePullSecrets() == null || sidecar.getImagePullSecrets().isEmpty()
                        ? null : sidecar.getImagePullSecrets())
                .withAutomountServiceAccountToken(false)
                .withEnableServiceLinks(false)
                .withTerminationGracePeriodSeconds(30L)
                .withNewSecurityContext()
                .withRunAsNonRoot(true) // the image's numeric USER (185); no fixed UID, so a platform may assign one
                .withNewSeccompProfile().withType("RuntimeDefault").endSeccompProfile()
                .endSecurityContext()
                .withContainers(container())
                .withTolerations(tolerations)
                // Shards of one cluster on different nodes where the scheduler can (a node lost takes one shard's KV,
                // not all of them), but never unschedulable for it: a soft spread over host names.
                .addNewTopologySpreadConstraint().withMaxSkew(1).withTopologyKey("kubernetes.io/hostname")
                .withWhenUnsatisfiable("ScheduleAnyway").withNewLabelSelector()
                .withMatchLabels(PiKVClusterResources.selectorLabels(name)).endLabelSelector()
                .endTopologySpreadConstraint()
                .addNewVolume().withName("config").withNewConfigMap()
                .withName(PiKVClusterResources.configMapName(name)).endConfigMap().endVolume()
                // The root filesystem is read-only; the JVM (and JCuda, which unpacks its native library) need /tmp.
                .addNewVolume().withName("tmp").withNewEmptyDir().endEmptyDir().endVolume()
                .build();
    }

    private Container container() {
        SidecarSpec sidecar = spec.getSidecar() == null ? new SidecarSpec() : spec.getSidecar();
        return new ContainerBuilder()
                .withName(PiKVClusterResources.CONTAINER_NAME)
                .withImage(sidecar.getImage() != null ? sidecar.getImage() : settings.sidecarImage())
                .withImagePullPolicy(sidecar.getImagePullPolicy() == null ? "IfNotPresent"
                        : sidecar.getImagePullPolicy().value())
                .addNewPort().withName(PiKVClusterResources.HTTP_PORT_NAME)
                .withContainerPort(PiKVClusterResources.HTTP_PORT).withProtocol("TCP").endPort()
                .withEnv(env())
                .withEnvFrom(envFrom())
                .withResources(resources(sidecar))
                .withStartupProbe(probe("/q/health/started", 2, 60))
                .withReadinessProbe(probe("/q/health/ready", 5, 3))
                .withLivenessProbe(probe("/q/health/live", 10, 3))
                .withNewSecurityContext()
                .withAllowPrivilegeEscalation(false).withReadOnlyRootFilesystem(true).withPrivileged(false)
                .withRunAsNonRoot(true)
                .withNewCapabilities().withDrop("ALL").endCapabilities()
                .endSecurityContext()
                .addNewVolumeMount().withName("config").withMountPath(CONFIG_MOUNT).withReadOnly(true).endVolumeMount()
                .addNewVolumeMount().withName("tmp").withMountPath("/tmp").endVolumeMount()
                .build();
    }

    private List<EnvVar> env() {
        List<EnvVar> env = new ArrayList<>();
        env.add(new EnvVar("PIKV_ROLE", "shard", null));
        // The shard id is the pod's ordinal, which the StatefulSet controller puts in this label (Kubernetes 1.28+).
        env.add(new EnvVarBuilder().withName("PIKV_SHARD_ID").withNewValueFrom().withNewFieldRef()
                .withFieldPath("metadata.labels['" + PiKVClusterResources.LABEL_POD_INDEX + "']").endFieldRef()
                .endValueFrom().build());
        // Literal values, not references to the ConfigMap: a pod of the previous revision that restarts during a
        // rollout must come back with the settings of its own revision, not with the ConfigMap's newer ones.
        shardSettings.forEach((key, value) -> env.add(new EnvVar(envName(key), value, null)));
        // Direct memory: the pages' budget, plus an eighth of the headroom and never less than the 64 MiB the sidecar
        // keeps for its HTTP server's and clients' own buffers (ShardNode.SERVER_DIRECT_MEMORY).
        long headroom = containerMemoryBytes - budgetBytes - bookkeepingBytes;
        long serverDirect = Math.max(SERVER_DIRECT_MEMORY, headroom / 8);
        // The flags every JVM running the engine takes (pikv.jvm.flags in the root pom): JDK 24 and later warn on
        // each native load of the CUDA bindings without the second.
        env.add(new EnvVar("JDK_JAVA_OPTIONS", "--add-modules=jdk.incubator.vector --enable-native-access=ALL-UNNAMED"
                + " -Xmx" + mebibytes(heapBytes())
                + "m -XX:MaxDirectMemorySize=" + mebibytesUp(budgetBytes + serverDirect) + "m", null));
        // G1, which lets long-lived data fill the heap: the image's start script otherwise picks ParallelGC, whose old
        // generation stops at two thirds of the heap (NewRatio 2), below the bookkeeping a full shard may hold. Given
        // here, not in JDK_JAVA_OPTIONS: the script's own -XX:+UseParallelGC beside it would make two collectors.
        env.add(new EnvVar("GC_CONTAINER_OPTIONS", "-XX:+UseG1GC", null));
        return env;
    }

    private List<EnvFromSource> envFrom() {
        if (spec.getKafka() == null || spec.getKafka().getCredentialsSecret() == null) {
            return List.of();
        }
        return List.of(new EnvFromSourceBuilder().withNewSecretRef()
                .withName(spec.getKafka().getCredentialsSecret().getName()).endSecretRef().build());
    }

    private ResourceRequirements resources(SidecarSpec sidecar) {
        ResourceRequirements given = sidecar.getResources();
        Map<String, Quantity> requests = new TreeMap<>();
        Map<String, Quantity> limits = new TreeMap<>();
        // In one canonical form (2048Mi and 2Gi alike): the API server stores them so, and the config hash must change
        // only when a value does, not its spelling (a new hash rolls every shard, dropping their KV).
        if (given != null && given.getRequests() != null) {
            given.getRequests().forEach((k, v) -> requests.put(k, canonical(v)));
        }
        if (given != null && given.getLimits() != null) {
            given.getLimits().forEach((k, v) -> limits.put(k, canonical(v)));
        }
        if (!requests.containsKey("memory") && !limits.containsKey("memory")) {
            Quantity memory = new Quantity(mebibytes(containerMemoryBytes) + "Mi");
            requests.put("memory", memory);
            limits.put("memory", memory);
        }
        if (!requests.containsKey("cpu") && !limits.containsKey("cpu")) {
            requests.put("cpu", new Quantity("1")); // a shard that asks for no CPU gets the least of it under load
        }
        if (gpuEnabled()) {
            // Extended resources are given as limits; Kubernetes sets the request to the same value.
            limits.put(gpuResource(), new Quantity(String.valueOf(gpuPerShard())));
        }
        ResourceRequirements r = new ResourceRequirements();
        r.setRequests(requests);
        r.setLimits(limits);
        return r;
    }

    /** The GPU resource name, the CRD's default when a resource made under an older CRD has none. */
    private String gpuResource() {
        String name = spec.getGpu().getResourceName();
        return name == null ? io.pikv.api.v1alpha1.GpuSpec.DEFAULT_RESOURCE_NAME : name;
    }

    private int gpuPerShard() {
        Integer n = spec.getGpu().getPerShard();
        return n == null ? 1 : n;
    }

    /**
     * A quantity in one form per value: whole multiples of a binary unit with its suffix (2Gi, 1536Mi), other whole
     * numbers plain, fractions in milli-units (500m) or plain decimals. One that does not parse is kept as given (the
     * validator has reported it).
     */
    static Quantity canonical(Quantity q) {
        java.math.BigDecimal n;
        try {
            n = q.getNumericalAmount();
        } catch (RuntimeException e) {
            return q;
        }
        if (n.signum() == 0) {
            return new Quantity("0");
        }
        if (!PiKVClusterValidator.usable(n)) {
            return q; // refused by the validator; not expanded here (1e300000000 has that many digits)
        }
        if (n.signum() > 0 && n.stripTrailingZeros().scale() <= 0) {
            java.math.BigInteger whole = n.toBigIntegerExact();
            String[] suffixes = {"Ei", "Pi", "Ti", "Gi", "Mi", "Ki"};
            for (int i = 0; i < suffixes.length; i++) {
                java.math.BigInteger unit = java.math.BigInteger.ONE.shiftLeft(10 * (suffixes.length - i));
                if (whole.compareTo(unit) >= 0 && whole.mod(unit).signum() == 0) {
                    return new Quantity(whole.divide(unit) + suffixes[i]);
                }
            }
            return new Quantity(whole.toString());
        }
        java.math.BigDecimal milli = n.movePointRight(3);
        if (milli.stripTrailingZeros().scale() <= 0) {
            return new Quantity(milli.toBigIntegerExact() + "m");
        }
        return new Quantity(n.stripTrailingZeros().toPlainString());
    }

    private static Probe probe(String path, int periodSeconds, int failureThreshold) {
        return new ProbeBuilder().withNewHttpGet().withPath(path)
                .withPort(new IntOrString(PiKVClusterResources.HTTP_PORT_NAME)).endHttpGet()
                .withPeriodSeconds(periodSeconds).withFailureThreshold(failureThreshold).withTimeoutSeconds(2)
                .build();
    }

    private boolean gpuEnabled() {
        return spec.getGpu() != null && Boolean.TRUE.equals(spec.getGpu().getEnabled());
    }

    /**
     * The shard JVM's heap: the bookkeeping of a full budget's entries, plus half of the container memory left above
     * the KV budget and that bookkeeping (the rest is the JVM's own memory and the server's direct buffers).
     */
    private long heapBytes() {
        return bookkeepingBytes + freeHeapBytes();
    }

    /** The heap beside the entries' bookkeeping: for the server, the block cache and everything else. */
    private long freeHeapBytes() {
        return (containerMemoryBytes - budgetBytes - bookkeepingBytes) / 2;
    }

    /**
     * Memory of the sidecar container: what the spec gives, else the budget, its entries' bookkeeping, half as much
     * again and the operator's overhead. The half goes to the heap and the JVM in equal parts (see {@link #heapBytes}):
     * a collector needs room in proportion to what is live, so a full shard's heap is at most four fifths
     * bookkeeping, however large, and the JVM's own memory (GC structures grow with the heap) grows with it.
     */
    static long containerMemory(PiKVClusterSpec spec, long budgetBytes, long bookkeepingBytes,
                                OperatorSettings settings) {
        ResourceRequirements r = spec.getSidecar() == null ? null : spec.getSidecar().getResources();
        Quantity memory = null;
        if (r != null && r.getLimits() != null) {
            memory = r.getLimits().get("memory");
        }
        if (memory == null && r != null && r.getRequests() != null) {
            memory = r.getRequests().get("memory");
        }
        return memory != null ? PiKVClusterValidator.bytes(memory)
                : budgetBytes + bookkeepingBytes + bookkeepingBytes / 2 + settings.memoryOverheadBytes();
    }

    /** The sidecar's environment name of a setting: upper case, '.' and '-' as '_'. */
    public static String envName(String key) {
        return key.toUpperCase(Locale.ROOT).replace('.', '_').replace('-', '_');
    }

    /** SHA-256 over the sorted settings, first 16 hex digits. */
    static String hash(Map<String, String> values) {
        try {
            MessageDigest sha = MessageDigest.getInstance("SHA-256");
            for (Map.Entry<String, String> e : new TreeMap<>(values).entrySet()) {
                sha.update((e.getKey() + "=" + e.getValue() + "\n").getBytes(StandardCharsets.UTF_8));
            }
            return HexFormat.of().formatHex(sha.digest()).substring(0, 16);
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
    }

    private static long mebibytes(long bytes) {
        return Math.max(1, bytes >> 20);
    }

    /** Whole MiB at least {@code bytes}: the shard refuses to start when its pages' budget does not fit. */
    private static long mebibytesUp(long bytes) {
        return Math.max(1, (bytes + (1L << 20) - 1) >> 20);
    }

    // ---- accessors ----

    public String name() {
        return name;
    }

    public String namespace() {
        return namespace;
    }

    public PiKVClusterSpec spec() {
        return spec;
    }

    public int shards() {
        return spec.getShards();
    }

    public String configHash() {
        return configHash;
    }

    public ExpertShardMap shardMap() {
        return shardMap;
    }

    public long budgetBytes() {
        return budgetBytes;
    }

    /** The settings the shards read at start-up (environment variables), in rendering order. */
    public Map<String, String> shardSettings() {
        return java.util.Collections.unmodifiableMap(shardSettings);
    }

    /** Gateway and control-loop settings carried by the ConfigMap. */
    public Map<String, String> otherSettings() {
        return java.util.Collections.unmodifiableMap(otherSettings);
    }
}
