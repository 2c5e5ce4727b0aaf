package io.pikv.operator.model;

import io.fabric8.kubernetes.api.model.Quantity;
import io.fabric8.kubernetes.api.model.ResourceRequirements;
import io.pikv.api.v1alpha1.AutoscalingSpec;
import io.pikv.api.v1alpha1.CompressionSpec;
import io.pikv.api.v1alpha1.GpuSpec;
import io.pikv.api.v1alpha1.KafkaSpec;
import io.pikv.api.v1alpha1.KafkaTopics;
import io.pikv.api.v1alpha1.ModelSpec;
import io.pikv.api.v1alpha1.PiKVCluster;
import io.pikv.api.v1alpha1.PiKVClusterSpec;
import io.pikv.api.v1alpha1.PlacementSpec;
import io.pikv.api.v1alpha1.RoutingSpec;
import io.pikv.api.v1alpha1.SchedulingPolicy;
import io.pikv.api.v1alpha1.SchedulingSpec;
import io.pikv.api.v1alpha1.SidecarSpec;
import io.pikv.kv.KvLayout;
import io.pikv.kv.ModelShape;

import java.math.BigDecimal;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.regex.Pattern;
import java.util.stream.Collectors;

/**
 * The one validator of a PiKVCluster: the reconciler runs it on every reconcile, the manifest tests run every example
 * through it, and the admission webhook will too. It repeats the CRD's OpenAPI bounds and CEL rules (so a cluster
 * whose CRD is older, or an API server that skipped them, still gets the same answer) and adds what the schema cannot
 * say: the engine's own rules for the model and its pages ({@link ModelShape}, {@link KvLayout}), the budget against
 * the page size, parameter names per policy and compression method, resources against the budget.
 *
 * <p>Every message names the field, the value, the rule and what to change.
 */
public final class PiKVClusterValidator {

    /** Tokens per page the shards run with (the sidecar's {@code pikv.store.page-tokens} default). */
    public static final int PAGE_TOKENS = 32;
    /** Largest budget accepted per shard. */
    public static final long MAX_BUDGET_BYTES = 4L << 40;

    private static final Pattern DNS_1035 = Pattern.compile("^[a-z]([-a-z0-9]*[a-z0-9])?$");
    private static final Pattern DNS_LABEL = Pattern.compile("^[a-z0-9]([-a-z0-9]*[a-z0-9])?$");
    /** A DNS-1123 subdomain (with the 253-character limit checked beside it): dot-separated DNS labels. */
    private static final Pattern DNS_1123_SUBDOMAIN = Pattern.compile(
            "^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$");
    /** What a DNS-1123 subdomain is, for messages (opened by a parenthesis the message writes before it). */
    private static final String DNS_SUBDOMAIN_RULE = "(dot-separated parts of lower-case letters, digits and '-', each "
            + "starting and ending with a letter or digit; at most 253 characters";
    /** An extended resource name: domain/name (an unprefixed name such as memory or cpu is not one). */
    private static final Pattern RESOURCE_NAME =
            Pattern.compile("^[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$");
    /** Largest sidecar container memory accepted (the budget's maximum with room to spare). */
    public static final long MAX_CONTAINER_MEMORY_BYTES = 8L << 40;
    private static final java.util.Set<String> STANDARD_RESOURCES = java.util.Set.of("cpu", "memory",
            "ephemeral-storage");
    /** Memory a shard pod needs beyond its budget at least: the JVM's heap and the server (see OperatorSettings). */
    /**
     * Least container memory above the KV budget: the heap (half of it) and the JVM's own memory — measured at about
     * 100 MiB idle (GC structures, metaspace, code, symbols) and more under load — beside the server's direct buffers.
     */
    public static final long MIN_MEMORY_OVERHEAD_BYTES = 512L << 20;
    /**
     * Heap a shard's bookkeeping takes per (token, layer) entry its pages hold (the engine's measured figure). Every
     * policy a cluster runs is a token policy, so a full budget holds that much heap beside its pages.
     */
    public static final long HEAP_PER_ENTRY_BYTES = io.pikv.kv.scheduling.TokenRetention.HEAP_PER_ENTRY_BYTES;
    private static final Pattern TOPIC = Pattern.compile("^[a-zA-Z0-9._-]{1,249}$");
    /** host:port as Kafka's clients read it: an optional listener prefix (SASL_SSL://), underscores in names too. */
    private static final Pattern HOST_PORT = Pattern.compile(
            "^(?:[A-Za-z_][A-Za-z0-9_]*://)?(\\[[0-9a-fA-F:.]+]|[A-Za-z0-9._-]+):([0-9]{1,5})$");

    /** Knobs each policy takes (see io.pikv.kv.scheduling). */
    static final Map<SchedulingPolicy, Set<String>> POLICY_PARAMETERS = Map.of(
            SchedulingPolicy.LRU, Set.of(),
            SchedulingPolicy.STREAMING, Set.of("sinks", "window"),
            SchedulingPolicy.H2O, Set.of("sinks", "window"),
            SchedulingPolicy.UTILITY, Set.of("attention", "recency", "frequency", "recencyScale"),
            SchedulingPolicy.LRFU, Set.of("halfLife", "historyLimit"),
            SchedulingPolicy.ADAPTIVE, Set.of("window", "margin"));

    /** Knobs each compression part takes (see docs/compression.md). */
    static final Map<String, Set<String>> COMPRESSION_PARAMETERS = Map.of(
            "int8", Set.of(),
            "lowrank", Set.of("keyRank", "valueRank", "outlierDirections"),
            "lowrank-expert", Set.of("keyRank", "valueRank", "outlierDirections", "minExpertTokens"),
            "pyramid", Set.of("budget", "beta", "sinks", "window"));

    private PiKVClusterValidator() {
    }

    /**
     * One broken rule: the field (a JSON path from the resource root) and what is wrong with it. Both are cut to
     * {@link #MAX_TEXT} characters: they quote the spec's values, which status and events repeat, and an object holds
     * at most about 1.5 MiB.
     */
    public record Violation(String field, String message) {
        /** Characters of a field or message kept. */
        static final int MAX_TEXT = 512;

        public Violation {
            field = cut(field);
            message = cut(message);
        }

        private static String cut(String text) {
            return text == null || text.length() <= MAX_TEXT ? text
                    : text.substring(0, MAX_TEXT) + "… (" + (text.length() - MAX_TEXT) + " more characters)";
        }

        @Override
        public String toString() {
            return field + ": " + message;
        }
    }

    /** The outcome: valid when there is no violation. */
    public record Result(List<Violation> violations) {
        public Result {
            violations = List.copyOf(violations);
        }

        public boolean valid() {
            return violations.isEmpty();
        }

        /** Violations listed in a summary at most. */
        static final int MAX_LISTED = 16;

        /** All violations in one line (the first {@link #MAX_LISTED}, and how many more), for a condition or an event. */
        public String summary() {
            String listed = violations.stream().limit(MAX_LISTED).map(Violation::toString)
                    .collect(Collectors.joining("; "));
            return violations.size() <= MAX_LISTED ? listed
                    : listed + "; and " + (violations.size() - MAX_LISTED) + " more violations";
        }
    }

    /** Validates a whole resource: its name (names of the objects derive from it) and its spec. */
    public static Result validate(PiKVCluster cluster) {
        List<Violation> out = new ArrayList<>();
        String name = cluster.getMetadata() == null ? null : cluster.getMetadata().getName();
        if (name == null || name.isEmpty()) {
            out.add(new Violation("metadata.name", "is required"));
        } else {
            if (name.length() > PiKVCluster.MAX_NAME_LENGTH) {
                out.add(new Violation("metadata.name", "'" + name + "' has " + name.length() + " characters, more than "
                        + PiKVCluster.MAX_NAME_LENGTH + ": shard pod names and labels derive from it; use a shorter name"));
            }
            if (!DNS_1035.matcher(name).matches()) {
                out.add(new Violation("metadata.name", "'" + name + "' must be lower-case letters, digits and '-', "
                        + "starting with a letter and ending with a letter or digit: the headless Service is named "
                        + "after it"));
            }
        }
        out.addAll(validate(cluster.getSpec()).violations());
        return new Result(out);
    }

    /** Validates a spec on its own. */
    public static Result validate(PiKVClusterSpec spec) {
        List<Violation> out = new ArrayList<>();
        if (spec == null) {
            out.add(new Violation("spec", "is required: give at least spec.model"));
            return new Result(out);
        }
        ModelShape shape = model(spec.getModel(), out);
        int shards = shards(spec, shape, out);
        Compression compression = compression(spec.getCompression(), shape, out);
        budget(spec, shape, compression, out);
        routing(spec.getRouting(), out);
        scheduling(spec.getScheduling(), out);
        kafka(spec.getKafka(), out);
        autoscaling(spec.getAutoscaling(), shards, shape, out);
        gpu(spec.getGpu(), out);
        gpuUse(spec, shape, compression, out);
        placement(spec.getPlacement(), out);
        sidecar(spec, out);
        return new Result(out);
    }

    private static ModelShape model(ModelSpec m, List<Violation> out) {
        if (m == null) {
            out.add(new Violation("spec.model", "is required: give layers, qHeads, kvHeads, headDim, experts and topK"));
            return null;
        }
        int before = out.size();
        range(out, "spec.model.layers", m.getLayers(), 1, ModelSpec.MAX_LAYERS);
        range(out, "spec.model.qHeads", m.getQHeads(), 1, ModelSpec.MAX_HEADS);
        range(out, "spec.model.kvHeads", m.getKvHeads(), 1, ModelSpec.MAX_HEADS);
        range(out, "spec.model.headDim", m.getHeadDim(), 1, ModelSpec.MAX_HEAD_DIM);
        range(out, "spec.model.experts", m.getExperts(), 1, ModelSpec.MAX_EXPERTS);
        range(out, "spec.model.topK", m.getTopK(), 1, ModelSpec.MAX_EXPERTS);
        if (out.size() > before) {
            return null;
        }
        if (m.getTopK() > m.getExperts()) {
            out.add(new Violation("spec.model.topK", "is " + m.getTopK() + " but spec.model.experts is "
                    + m.getExperts() + ": a token cannot be routed to more experts than the model has; lower topK or "
                    + "raise experts"));
            return null;
        }
        if (m.getQHeads() % m.getKvHeads() != 0) {
            out.add(new Violation("spec.model.qHeads", "is " + m.getQHeads() + ", not a multiple of spec.model.kvHeads ("
                    + m.getKvHeads() + "): grouped-query attention shares each KV head among a whole number of query "
                    + "heads"));
            return null;
        }
        try {
            return new ModelShape(m.getLayers(), m.getQHeads(), m.getKvHeads(), m.getHeadDim(), m.getExperts(),
                    m.getTopK());
        } catch (IllegalArgumentException e) {
            out.add(new Violation("spec.model", e.getMessage()));
            return null;
        }
    }

    private static int shards(PiKVClusterSpec spec, ModelShape shape, List<Violation> out) {
        Integer shards = spec.getShards();
        if (!range(out, "spec.shards", shards, 1, PiKVClusterSpec.MAX_SHARDS)) {
            return -1;
        }
        if (shape != null && shards > shape.experts()) {
            out.add(new Violation("spec.shards", "is " + shards + " but the model has " + shape.experts()
                    + " experts: every shard owns at least one expert; use at most " + shape.experts() + " shards"));
        }
        return shards;
    }

    /** The parsed compression method. */
    record Compression(boolean int8, String lowRank, boolean pyramid) {
        static final Compression NONE = new Compression(false, null, false);
    }

    private static Compression compression(CompressionSpec c, ModelShape shape, List<Violation> out) {
        if (c == null) {
            return Compression.NONE;
        }
        Compression parsed = parseCompression(c.getMethod(), out);
        if (parsed == null) {
            return Compression.NONE;
        }
        if (parsed.lowRank() != null) {
            // Parsed for what it names, refused for what the shards do: a cluster must not run without what it asked.
            out.add(new Violation("spec.compression.method", "'" + c.getMethod() + "': the shards do not apply "
                    + parsed.lowRank() + " compression (its bases must be fitted on calibration KV, which they do not "
                    + "do yet; docs/compression.md); use int8, pyramid or pyramid+int8"));
        }
        if (parsed.pyramid() && (c.getParameters() == null || c.getParameters().get("budget") == null)) {
            out.add(new Violation("spec.compression.parameters.budget", "is required by pyramid: the share of each "
                    + "sequence's tokens the shards keep on average over the layers, in (0, 1] (e.g. 0.25)"));
        }
        Set<String> allowed = new HashSet<>();
        if (parsed.int8()) {
            allowed.addAll(COMPRESSION_PARAMETERS.get("int8"));
        }
        if (parsed.lowRank() != null) {
            allowed.addAll(COMPRESSION_PARAMETERS.get(parsed.lowRank()));
        }
        if (parsed.pyramid()) {
            allowed.addAll(COMPRESSION_PARAMETERS.get("pyramid"));
        }
        Map<String, Double> p = c.getParameters() == null ? Map.of() : c.getParameters();
        for (Map.Entry<String, Double> e : p.entrySet()) {
            String field = "spec.compression.parameters." + e.getKey();
            if (!allowed.contains(e.getKey())) {
                out.add(new Violation(field, "is not a knob of '" + c.getMethod() + "'; it takes "
                        + (allowed.isEmpty() ? "none" : String.join(", ", new java.util.TreeSet<>(allowed)))));
                continue;
            }
            double v = e.getValue() == null ? Double.NaN : e.getValue();
            int headDim = shape == null ? ModelSpec.MAX_HEAD_DIM : shape.headDim();
            switch (e.getKey()) {
                case "keyRank", "valueRank" -> integer(out, field, v, 1, headDim);
                case "outlierDirections" -> integer(out, field, v, 0, headDim);
                case "minExpertTokens", "window" -> integer(out, field, v, 1, Integer.MAX_VALUE);
                case "sinks" -> integer(out, field, v, 0, Integer.MAX_VALUE);
                case "budget" -> {
                    if (!(v > 0 && v <= 1)) {
                        out.add(new Violation(field, "is " + v + "; the fraction of tokens kept must be in (0, 1]"));
                    }
                }
                case "beta" -> {
                    if (!(v >= 1) || Double.isInfinite(v)) {
                        out.add(new Violation(field, "is " + v + "; PyramidKV's beta must be a number of at least 1"));
                    }
                }
                default -> throw new IllegalStateException(e.getKey());
            }
        }
        // A sinks or window left out is the sidecar's default (pikv.store.pyramid.sinks 4, window 32), which counts too.
        double sinks = p.get("sinks") != null ? p.get("sinks") : PYRAMID_DEFAULT_SINKS;
        double window = p.get("window") != null ? p.get("window") : PYRAMID_DEFAULT_WINDOW;
        if (parsed.pyramid() && (p.containsKey("sinks") || p.containsKey("window"))
                && sinks + window > io.pikv.kv.KvShard.MAX_POSITION + 1) {
            out.add(new Violation("spec.compression.parameters.window", "with sinks it keeps more than "
                    + (io.pikv.kv.KvShard.MAX_POSITION + 1) + " tokens per layer, the positions a layer can hold; "
                    + "lower sinks or window"));
        }
        if (parsed.lowRank() != null && p.containsKey("outlierDirections")) {
            double rank = Math.min(p.getOrDefault("keyRank", Double.MAX_VALUE), p.getOrDefault("valueRank",
                    Double.MAX_VALUE));
            if (p.get("outlierDirections") != null && p.get("outlierDirections") > rank) {
                out.add(new Violation("spec.compression.parameters.outlierDirections", "exceeds the smaller rank ("
                        + (long) rank + "): outlier directions are taken from the basis"));
            }
        }
        return parsed;
    }

    /** The sidecar's defaults of {@code pikv.store.pyramid.sinks} and {@code .window} (docs/sidecar-api.md). */
    static final int PYRAMID_DEFAULT_SINKS = 4;
    static final int PYRAMID_DEFAULT_WINDOW = 32;

    /** Parses {@code none} or parts joined by {@code +}; null (after adding a violation) when it is not a method. */
    static Compression parseCompression(String method, List<Violation> out) {
        String field = "spec.compression.method";
        if (method == null || method.equals("none")) {
            return Compression.NONE;
        }
        boolean int8 = false;
        boolean pyramid = false;
        String lowRank = null;
        for (String part : method.split("\\+", -1)) {
            switch (part) {
                case "int8" -> {
                    if (int8) {
                        out.add(new Violation(field, "'" + method + "' names int8 twice"));
                        return null;
                    }
                    int8 = true;
                }
                case "pyramid" -> {
                    if (pyramid) {
                        out.add(new Violation(field, "'" + method + "' names pyramid twice"));
                        return null;
                    }
                    pyramid = true;
                }
                case "lowrank", "lowrank-expert" -> {
                    if (lowRank != null) {
                        out.add(new Violation(field, "'" + method + "' names two low-rank methods; choose lowrank "
                                + "(one basis per layer and head) or lowrank-expert (one per expert)"));
                        return null;
                    }
                    lowRank = part;
                }
                default -> {
                    out.add(new Violation(field, "'" + method + "' has the unknown part '" + part + "'; use none, or "
                            + "join int8, lowrank, lowrank-expert and pyramid with '+' (e.g. pyramid+int8)"));
                    return null;
                }
            }
        }
        return new Compression(int8, lowRank, pyramid);
    }

    /**
     * The heap a shard needs beside its other memory for the bookkeeping of a full budget:
     * {@link #HEAP_PER_ENTRY_BYTES} per (token, layer) entry that the budget's pages hold, plus an {@code lrfu}
     * policy's history of evicted entries ({@link #historyBytes}). 0 when the model or the budget is not valid
     * (reported elsewhere).
     */
    public static long bookkeepingBytes(PiKVClusterSpec spec, long budgetBytes) {
        ModelSpec m = spec.getModel();
        if (m == null || m.getKvHeads() == null || m.getHeadDim() == null || budgetBytes <= 0) {
            return 0;
        }
        try {
            KvLayout layout = new KvLayout(m.getKvHeads(), m.getHeadDim(), PAGE_TOKENS, storageType(spec));
            return budgetBytes / layout.pageBytes() * PAGE_TOKENS * HEAP_PER_ENTRY_BYTES + historyBytes(spec);
        } catch (IllegalArgumentException e) {
            return 0;
        }
    }

    /**
     * The heap an {@code lrfu} policy's history may take once full: {@code historyLimit} ×
     * {@link io.pikv.kv.scheduling.Lrfu#HEAP_PER_HISTORY_BYTES} (a shard remembers that many evicted entries); 0 for
     * another policy, without the knob (the shard's default keeps none), or with an invalid one (reported elsewhere).
     */
    public static long historyBytes(PiKVClusterSpec spec) {
        SchedulingSpec s = spec.getScheduling();
        if (s == null || s.getPolicy() != SchedulingPolicy.LRFU || s.getParameters() == null) {
            return 0;
        }
        Double limit = s.getParameters().get("historyLimit");
        if (limit == null || !(limit >= 0) || limit > io.pikv.kv.scheduling.Lrfu.MAX_HISTORY || limit != Math.rint(limit)) {
            return 0;
        }
        return limit.longValue() * io.pikv.kv.scheduling.Lrfu.HEAP_PER_HISTORY_BYTES;
    }

    /** The storage type of the shard's pages for this spec: int8 when compression says so, else the model's dtype. */
    public static io.pikv.kv.StorageType storageType(PiKVClusterSpec spec) {
        String method = spec.getCompression() == null ? null : spec.getCompression().getMethod();
        if (method != null && List.of(method.split("\\+")).contains("int8")) {
            return io.pikv.kv.StorageType.INT8;
        }
        return spec.getModel() != null && spec.getModel().getDtype() != null
                ? io.pikv.kv.StorageType.parse(spec.getModel().getDtype().value()) : io.pikv.kv.StorageType.FP16;
    }

    private static void budget(PiKVClusterSpec spec, ModelShape shape, Compression compression, List<Violation> out) {
        Quantity q = spec.getMemoryPerShard();
        if (q == null) {
            out.add(new Violation("spec.memoryPerShard", "is required: the byte budget of one shard, e.g. 4Gi"));
            return;
        }
        long bytes;
        try {
            bytes = bytes(q);
        } catch (ArithmeticException e) {
            out.add(new Violation("spec.memoryPerShard", "is " + q + "; it must be positive and at most 4Ti"));
            return;
        } catch (IllegalArgumentException e) {
            out.add(new Violation("spec.memoryPerShard", "'" + q + "' is not a quantity of bytes (e.g. 512Mi, 16Gi)"));
            return;
        }
        if (bytes <= 0 || bytes > MAX_BUDGET_BYTES) {
            out.add(new Violation("spec.memoryPerShard", "is " + q + "; it must be positive and at most 4Ti"));
            return;
        }
        if (shape == null) {
            return;
        }
        io.pikv.kv.StorageType type = compression.int8() ? io.pikv.kv.StorageType.INT8 : storageType(spec);
        KvLayout layout;
        try {
            layout = new KvLayout(shape.kvHeads(), shape.headDim(), PAGE_TOKENS, type);
        } catch (IllegalArgumentException e) {
            out.add(new Violation(type == io.pikv.kv.StorageType.INT8 ? "spec.compression.method" : "spec.model",
                    e.getMessage() + " (with " + PAGE_TOKENS + "-token pages)"));
            return;
        }
        long floor = (long) layout.pageBytes() * shape.layers();
        if (bytes < floor) {
            out.add(new Violation("spec.memoryPerShard", "is " + q + " (" + bytes + " bytes), less than one "
                    + type.name().toLowerCase() + " page per layer (" + shape.layers() + " × " + layout.pageBytes()
                    + " = " + floor + " bytes): raise it to at least " + mebibytesCeil(floor) + "Mi"));
        }
        long ceiling = (long) layout.maxPages() * layout.pageBytes();
        if (bytes / layout.pageBytes() > layout.maxPages()) { // whole pages, as a shard counts its budget
            out.add(new Violation("spec.memoryPerShard", "is " + q + " (" + bytes + " bytes), more than one shard "
                    + "can address with " + type.name().toLowerCase() + " pages of " + layout.pageBytes() + " bytes ("
                    + layout.maxPages() + " pages, " + ceiling + " bytes): spread the KV over more shards"));
        }
    }

    private static void routing(RoutingSpec r, List<Violation> out) {
        if (r == null) {
            return;
        }
        if (r.getLambda() != null && !(r.getLambda() >= 0 && r.getLambda() <= 10)) {
            out.add(new Violation("spec.routing.lambda", "is " + r.getLambda() + "; the miss-penalty weight must be in "
                    + "[0, 10] (0 is plain top-k)"));
        }
        range(out, "spec.routing.window", r.getWindow(), 1, 1 << 20, true);
    }

    private static void scheduling(SchedulingSpec s, List<Violation> out) {
        if (s == null) {
            return;
        }
        SchedulingPolicy policy = s.getPolicy() == null ? SchedulingPolicy.LRU : s.getPolicy();
        Set<String> knobs = POLICY_PARAMETERS.get(policy);
        Map<String, Double> p = s.getParameters() == null ? Map.of() : s.getParameters();
        for (Map.Entry<String, Double> e : p.entrySet()) {
            String field = "spec.scheduling.parameters." + e.getKey();
            if (!knobs.contains(e.getKey())) {
                out.add(new Violation(field, "is not a knob of policy " + policy.value() + "; it takes "
                        + (knobs.isEmpty() ? "none" : String.join(", ", new java.util.TreeSet<>(knobs)))));
                continue;
            }
            double v = e.getValue() == null ? Double.NaN : e.getValue();
            switch (e.getKey()) {
                // A window of 0 is what a shard takes too (h2o: heavy hitters alone; streaming: the sinks alone).
                case "sinks" -> integer(out, field, v, 0, Integer.MAX_VALUE);
                case "historyLimit" -> integer(out, field, v, 0, io.pikv.kv.scheduling.Lrfu.MAX_HISTORY);
                case "window" -> integer(out, field, v, policy == SchedulingPolicy.ADAPTIVE ? 1 : 0, Integer.MAX_VALUE);
                case "attention", "recency", "frequency" -> {
                    if (!(v >= 0) || Double.isInfinite(v)) {
                        out.add(new Violation(field, "is " + v + "; utility weights must be finite and at least 0"));
                    } else if (v > io.pikv.kv.scheduling.Utility.MAX_WEIGHT) {
                        out.add(new Violation(field, "is " + v + "; utility weights must be at most "
                                + io.pikv.kv.scheduling.Utility.MAX_WEIGHT + " (only their ratios matter)"));
                    }
                }
                case "recencyScale", "halfLife" -> {
                    if (!(v > 0) || Double.isInfinite(v)) {
                        out.add(new Violation(field, "is " + v + "; it must be finite and positive"));
                    }
                }
                case "margin" -> {
                    if (!(v >= 0 && v < 1)) {
                        out.add(new Violation(field, "is " + v + "; the switching margin must be in [0, 1)"));
                    }
                }
                default -> throw new IllegalStateException(e.getKey());
            }
        }
        // A missing weight or scale is the sidecar's default (recency 1, recencyScale 1024).
        Double recency = p.get("recency") == null && !p.containsKey("recency") ? Double.valueOf(1.0) : p.get("recency");
        Double scale = p.get("recencyScale") == null && !p.containsKey("recencyScale") ? Double.valueOf(1024.0)
                : p.get("recencyScale");
        if (policy == SchedulingPolicy.UTILITY && recency != null && scale != null && recency >= 0 && scale > 0
                && Double.isFinite(recency) && recency / scale > io.pikv.kv.scheduling.Utility.MAX_WEIGHT) {
            out.add(new Violation("spec.scheduling.parameters.recencyScale", "is " + scale + "; recency " + recency
                    + " over it exceeds " + io.pikv.kv.scheduling.Utility.MAX_WEIGHT + ": raise recencyScale or "
                    + "lower recency"));
        }
        if (policy == SchedulingPolicy.UTILITY && p.keySet().containsAll(Set.of("attention", "recency", "frequency"))
                && p.get("attention") == 0 && p.get("recency") == 0 && p.get("frequency") == 0) {
            out.add(new Violation("spec.scheduling.parameters", "utility weights attention, recency and frequency are "
                    + "all 0: give at least one a positive weight"));
        }
        List<SchedulingPolicy> candidates = s.getCandidates() == null ? List.of() : s.getCandidates();
        Set<SchedulingPolicy> seen = new HashSet<>();
        for (SchedulingPolicy c : candidates) {
            if (c == null) {
                out.add(new Violation("spec.scheduling.candidates", "holds an empty entry"));
            } else if (c == SchedulingPolicy.ADAPTIVE) {
                out.add(new Violation("spec.scheduling.candidates", "lists adaptive, which chooses between candidates "
                        + "and cannot be one; list the policies it may switch to"));
            } else if (!seen.add(c)) {
                out.add(new Violation("spec.scheduling.candidates", "lists " + c.value() + " twice"));
            }
        }
        if (policy == SchedulingPolicy.ADAPTIVE && candidates.size() == 1) {
            out.add(new Violation("spec.scheduling.candidates", "has one policy; adaptive needs at least two to choose "
                    + "between (or none for all of them)"));
        }
        if (policy != SchedulingPolicy.ADAPTIVE && !candidates.isEmpty() && !candidates.contains(policy)) {
            out.add(new Violation("spec.scheduling.policy", "is " + policy.value() + ", which is not among "
                    + "spec.scheduling.candidates " + candidates.stream().map(c -> c == null ? "?" : c.value()).toList()
                    + ": adaptation starts from the policy, so add it to the candidates"));
        }
    }

    private static void kafka(KafkaSpec k, List<Violation> out) {
        if (k == null) {
            return;
        }
        String servers = k.getBootstrapServers();
        if (servers == null || servers.isBlank()) {
            out.add(new Violation("spec.kafka.bootstrapServers", "is required when spec.kafka is given "
                    + "(host:port[,host:port...]); remove spec.kafka to run without telemetry"));
        } else {
            for (String server : servers.split(",", -1)) {
                var m = HOST_PORT.matcher(server.strip());
                int port = m.matches() ? Integer.parseInt(m.group(2)) : -1;
                if (!m.matches() || port < 1 || port > 65535) {
                    out.add(new Violation("spec.kafka.bootstrapServers", "'" + server + "' is not host:port: give each "
                            + "broker with its port, e.g. kafka-0.kafka:9092 (port 1 to 65535), comma-separated"));
                }
            }
        }
        if (k.getTopics() != null) {
            String events = k.getTopics().getEvents();
            String control = k.getTopics().getControl();
            topic(out, "spec.kafka.topics.events", events);
            topic(out, "spec.kafka.topics.control", control);
            // A topic left null runs as the shards' default (the operator renders no setting for it).
            String eventsRun = events == null ? KafkaTopics.DEFAULT_EVENTS : events;
            String controlRun = control == null ? KafkaTopics.DEFAULT_CONTROL : control;
            if (eventsRun.equals(controlRun)) {
                out.add(new Violation("spec.kafka.topics.control", "equals spec.kafka.topics.events ('" + eventsRun
                        + "'" + (events == null || control == null ? ", the default of the one left unset" : "")
                        + "): telemetry and the compacted control topic must be different topics"));
            }
        }
        if (k.getCredentialsSecret() != null) {
            String name = k.getCredentialsSecret().getName();
            if (name == null || name.length() > 253 || !DNS_1123_SUBDOMAIN.matcher(name).matches()) {
                out.add(new Violation("spec.kafka.credentialsSecret.name", "'" + name + "' is not a Secret name: "
                        + "at most 253 lower-case letters, digits, '-' and '.', starting and ending with a letter or "
                        + "digit"));
            }
        }
    }

    private static void topic(List<Violation> out, String field, String topic) {
        if (topic != null && (!TOPIC.matcher(topic).matches() || topic.equals(".") || topic.equals(".."))) {
            out.add(new Violation(field, "'" + topic + "' is not a Kafka topic name (1 to 249 letters, digits, '.', "
                    + "'_' and '-', other than . and ..)"));
        }
    }

    private static void autoscaling(AutoscalingSpec a, int shards, ModelShape shape, List<Violation> out) {
        if (a == null) {
            return;
        }
        boolean ok = range(out, "spec.autoscaling.minShards", a.getMinShards(), 1, PiKVClusterSpec.MAX_SHARDS, true)
                & range(out, "spec.autoscaling.maxShards", a.getMaxShards(), 1, PiKVClusterSpec.MAX_SHARDS, true);
        int min = a.getMinShards() == null ? 1 : a.getMinShards();
        int max = a.getMaxShards() == null ? 8 : a.getMaxShards();
        if (ok && min > max) {
            out.add(new Violation("spec.autoscaling.minShards", "is " + min + ", more than spec.autoscaling.maxShards ("
                    + max + "); lower minShards or raise maxShards"));
        }
        if (a.getTargetMemoryUtilization() != null
                && !(a.getTargetMemoryUtilization() >= 0.05 && a.getTargetMemoryUtilization() <= 1)) {
            out.add(new Violation("spec.autoscaling.targetMemoryUtilization", "is " + a.getTargetMemoryUtilization()
                    + "; it must be in [0.05, 1]"));
        }
        if (a.getTargetHitRate() != null && !(a.getTargetHitRate() >= 0 && a.getTargetHitRate() <= 1)) {
            out.add(new Violation("spec.autoscaling.targetHitRate", "is " + a.getTargetHitRate()
                    + "; a hit rate is in [0, 1]"));
        }
        range(out, "spec.autoscaling.cooldownSeconds", a.getCooldownSeconds(), 0, 86400, true);
        if (Boolean.TRUE.equals(a.getEnabled()) && ok && min <= max) {
            if (shards > 0 && (shards < min || shards > max)) {
                out.add(new Violation("spec.shards", "is " + shards + ", outside the autoscaling range [" + min + ", "
                        + max + "]; set shards within it or widen the range"));
            }
            // A maxShards above the experts (8 by default, whatever the model) bounds nothing more than one shard per
            // expert already does, so it is taken as that bound rather than refused; a minShards above them can
            // never hold.
            if (shape != null && min > shape.experts()) {
                out.add(new Violation("spec.autoscaling.minShards", "is " + min + " but the model has "
                        + shape.experts() + " experts; every shard owns at least one, so use at most "
                        + shape.experts()));
            }
        }
    }

    private static final Pattern LABEL_NAME = Pattern.compile("^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$");
    private static final Pattern LABEL_VALUE = Pattern.compile("^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$");
    private static final java.util.Set<String> TAINT_EFFECTS = java.util.Set.of("NoSchedule", "PreferNoSchedule",
            "NoExecute");

    /** A label key as the API server takes it: an optional DNS subdomain prefix and '/', then a name of at most 63. */
    static boolean labelKey(String key) {
        int slash = key.indexOf('/');
        String prefix = slash < 0 ? null : key.substring(0, slash);
        String name = slash < 0 ? key : key.substring(slash + 1);
        return LABEL_NAME.matcher(name).matches() && (prefix == null
                || prefix.length() <= 253 && DNS_1123_SUBDOMAIN.matcher(prefix).matches());
    }

    private static void placement(PlacementSpec p, List<Violation> out) {
        if (p == null) {
            return;
        }
        if (p.getNodeSelector() != null) {
            for (Map.Entry<String, String> e : p.getNodeSelector().entrySet()) {
                if (e.getKey() == null || !labelKey(e.getKey())) {
                    out.add(new Violation("spec.placement.nodeSelector", "'" + e.getKey() + "' is not a label key "
                            + "(an optional DNS subdomain and '/', then at most 63 letters, digits, '-', '_', '.')"));
                } else if (e.getValue() == null || !LABEL_VALUE.matcher(e.getValue()).matches()) {
                    out.add(new Violation("spec.placement.nodeSelector." + e.getKey(), "'" + e.getValue() + "' is not "
                            + "a label value (at most 63 letters, digits, '-', '_', '.', starting and ending with a "
                            + "letter or digit)"));
                }
            }
        }
        List<io.fabric8.kubernetes.api.model.Toleration> tolerations = p.getTolerations() == null ? List.of()
                : p.getTolerations();
        for (int i = 0; i < tolerations.size(); i++) {
            io.fabric8.kubernetes.api.model.Toleration t = tolerations.get(i);
            String field = "spec.placement.tolerations[" + i + "]";
            String operator = t.getOperator() == null || t.getOperator().isEmpty() ? "Equal" : t.getOperator();
            boolean noKey = t.getKey() == null || t.getKey().isEmpty();
            if (!operator.equals("Equal") && !operator.equals("Exists")) {
                out.add(new Violation(field + ".operator", "'" + t.getOperator() + "' is not an operator a "
                        + "toleration takes: use Exists or Equal (the default)"));
            } else if (noKey && operator.equals("Equal")) {
                out.add(new Violation(field + ".key", "is required with operator Equal (only Exists may leave it out, "
                        + "to tolerate every taint)"));
            } else if (operator.equals("Exists") && t.getValue() != null && !t.getValue().isEmpty()) {
                out.add(new Violation(field + ".value", "must be empty with operator Exists, got '" + t.getValue()
                        + "'"));
            }
            if (!noKey && !labelKey(t.getKey())) {
                out.add(new Violation(field + ".key", "'" + t.getKey() + "' is not a taint key (a label key)"));
            }
            if (t.getValue() != null && !LABEL_VALUE.matcher(t.getValue()).matches()) {
                out.add(new Violation(field + ".value", "'" + t.getValue() + "' is not a taint value (a label value)"));
            }
            if (t.getEffect() != null && !t.getEffect().isEmpty() && !TAINT_EFFECTS.contains(t.getEffect())) {
                out.add(new Violation(field + ".effect", "'" + t.getEffect() + "' is not NoSchedule, PreferNoSchedule "
                        + "or NoExecute (or empty: every effect)"));
            }
            if (t.getTolerationSeconds() != null && !"NoExecute".equals(t.getEffect())) {
                out.add(new Violation(field + ".tolerationSeconds", "applies to the NoExecute effect only; remove it "
                        + "or set effect NoExecute"));
            }
        }
        String priority = p.getPriorityClassName();
        if (priority != null && !priority.isEmpty()
                && (priority.length() > 253 || !DNS_1123_SUBDOMAIN.matcher(priority).matches())) {
            out.add(new Violation("spec.placement.priorityClassName", "'" + priority + "' is not a PriorityClass "
                    + "name " + DNS_SUBDOMAIN_RULE + ")"));
        }
    }

    private static void gpu(GpuSpec g, List<Violation> out) {
        if (g == null) {
            return;
        }
        String name = g.getResourceName();
        if (name != null && !extendedResourceName(name)) {
            out.add(new Violation("spec.gpu.resourceName", "'" + name + "' is not an extended resource name: use "
                    + "the device plugin's domain/name, e.g. nvidia.com/gpu (a domain of dot-separated parts of "
                    + "lower-case letters, digits and '-', each at most 63 characters; a name of at most 63; "
                    + "kubernetes.io names, requests.* and unprefixed names such as memory or cpu are not)"));
        } else if (name != null && Boolean.TRUE.equals(g.getEnabled()) && !name.startsWith("nvidia.com/")) {
            // The shards attend on CUDA only: another vendor's device would leave every pod failing at start-up.
            out.add(new Violation("spec.gpu.resourceName", "'" + name + "' is not an NVIDIA device: the shards "
                    + "attend through CUDA; use nvidia.com/gpu (or an nvidia.com MIG resource), or disable spec.gpu"));
        }
        // A shard attends on one device (CUDA device 0 of its pod): more would be held and never used.
        Integer perShard = g.getPerShard();
        range(out, "spec.gpu.perShard", perShard, 1, 16, true);
        if (perShard != null && perShard > 1 && perShard <= 16 && Boolean.TRUE.equals(g.getEnabled())) {
            out.add(new Violation("spec.gpu.perShard", "is " + perShard + "; a shard attends on one device (CUDA "
                    + "device 0 of its pod): use 1, and more shards for more GPUs"));
        }
        String runtimeClass = g.getRuntimeClassName();
        if (runtimeClass != null && !runtimeClass.isEmpty()
                && (runtimeClass.length() > 253 || !DNS_1123_SUBDOMAIN.matcher(runtimeClass).matches())) {
            out.add(new Violation("spec.gpu.runtimeClassName", "'" + runtimeClass + "' is not a RuntimeClass name "
                    + DNS_SUBDOMAIN_RULE + ")"));
        }
    }

    /** The node label the operator pins GPU shards with: the CUDA bindings the sidecar ships are for x86-64 only. */
    public static final String ARCH_LABEL = "kubernetes.io/arch";
    public static final String GPU_ARCH = "amd64";

    /**
     * With GPUs asked for, that the shards can attend on them: pages the CUDA kernels take (fp16 or int8, no low-rank
     * coefficients, a head dim and group size they handle), and eviction policies that need no per-entry attention
     * weights (the device computes none; a policy ranking by them keeps attention on the CPU and the GPU idle).
     */
    private static void gpuUse(PiKVClusterSpec spec, ModelShape shape, Compression compression, List<Violation> out) {
        GpuSpec g = spec.getGpu();
        if (g == null || !Boolean.TRUE.equals(g.getEnabled())) {
            return;
        }
        String arch = spec.getPlacement() == null || spec.getPlacement().getNodeSelector() == null ? null
                : spec.getPlacement().getNodeSelector().get(ARCH_LABEL);
        if (arch != null && !arch.equals(GPU_ARCH)) {
            out.add(new Violation("spec.placement.nodeSelector." + ARCH_LABEL, "is " + arch + ", but the sidecar's "
                    + "CUDA bindings are for linux x86-64 only: GPU shards run on " + GPU_ARCH + " nodes (the operator "
                    + "pins them there); remove the selector or turn spec.gpu off"));
        }
        if (shape == null) {
            return;
        }
        // The pages the shards run with: the storage type only (low-rank is refused above).
        String refused;
        try {
            io.pikv.kv.StorageType type = compression.int8() ? io.pikv.kv.StorageType.INT8 : storageType(spec);
            refused = io.pikv.kv.compute.CudaDeviceAttention.refusal(
                    new KvLayout(shape.kvHeads(), shape.headDim(), PAGE_TOKENS, type), shape);
        } catch (IllegalArgumentException e) {
            refused = null; // a layout the shards cannot take at all is reported by the budget check
        }
        if (refused != null) {
            out.add(new Violation("spec.gpu.enabled", "the shards could not attend on the GPU (" + refused + "): they "
                    + "would hold it unused; turn spec.gpu off or change the model or compression"));
        }
        if (compression.pyramid()) {
            out.add(new Violation("spec.gpu.enabled", "pyramid budgets choose the tokens kept by attention weights, "
                    + "which the GPU does not compute: the shards would attend on the CPU and hold the GPU unused; "
                    + "with spec.gpu use int8 alone, or turn spec.gpu off"));
        }
        SchedulingSpec s = spec.getScheduling();
        SchedulingPolicy policy = s == null || s.getPolicy() == null ? SchedulingPolicy.LRU : s.getPolicy();
        Map<String, Double> parameters = s == null || s.getParameters() == null ? Map.of() : s.getParameters();
        // The policy the shards start with and every candidate adaptation may switch them to.
        List<SchedulingPolicy> policies = new ArrayList<>();
        if (policy != SchedulingPolicy.ADAPTIVE) {
            policies.add(policy);
        }
        if (s != null && s.getCandidates() != null && !s.getCandidates().isEmpty()) {
            policies.addAll(s.getCandidates());
        } else if (policy == SchedulingPolicy.ADAPTIVE) {
            // No candidates: adaptation may choose any policy.
            for (SchedulingPolicy p : SchedulingPolicy.values()) {
                if (p != SchedulingPolicy.ADAPTIVE) {
                    policies.add(p);
                }
            }
        }
        for (SchedulingPolicy p : policies) {
            if (p != null && io.pikv.kv.scheduling.TokenRetention.ranksByAttention(p.value(),
                    p == policy ? parameters : Map.of())) {
                boolean candidate = p != policy;
                boolean listed = s != null && s.getCandidates() != null && !s.getCandidates().isEmpty();
                out.add(new Violation("spec.gpu.enabled", "policy " + p.value()
                        + (!candidate ? "" : listed ? " (a candidate)" : " (a candidate: with no candidates listed, "
                        + "adaptive may choose any policy)")
                        + " ranks tokens by attention weights, which the GPU does not compute: the shards would "
                        + "attend on the CPU and hold the GPU unused; with spec.gpu use "
                        + (candidate ? "candidates lru and streaming only (spec.scheduling.candidates)"
                        : "lru or streaming (or utility with attention and frequency 0)") + ", or turn spec.gpu off"));
                break;
            }
        }
    }

    private static void sidecar(PiKVClusterSpec spec, List<Violation> out) {
        SidecarSpec s = spec.getSidecar();
        Quantity budget = spec.getMemoryPerShard();
        GpuSpec gpu = spec.getGpu();
        if (s == null) {
            return;
        }
        if (s.getImage() != null && !imageReference(s.getImage())) {
            out.add(new Violation("spec.sidecar.image", "'" + s.getImage() + "' is not an image reference "
                    + "([registry/]lower-case/path[:tag][@sha256:digest]); remove it to use the operator's default"));
        }
        List<io.fabric8.kubernetes.api.model.LocalObjectReference> pullSecrets = s.getImagePullSecrets() == null
                ? List.of() : s.getImagePullSecrets();
        java.util.Set<String> pulledWith = new java.util.HashSet<>();
        for (int i = 0; i < pullSecrets.size(); i++) {
            String name = pullSecrets.get(i) == null ? null : pullSecrets.get(i).getName();
            if (name == null || name.length() > 253 || !DNS_1123_SUBDOMAIN.matcher(name).matches()) {
                out.add(new Violation("spec.sidecar.imagePullSecrets[" + i + "].name", "'" + name + "' is not a "
                        + "Secret name " + DNS_SUBDOMAIN_RULE + ")"));
            } else if (!pulledWith.add(name)) {
                // The pod spec keys this list by name: an apply that names a Secret twice is refused by the API server.
                out.add(new Violation("spec.sidecar.imagePullSecrets[" + i + "].name", "'" + name + "' is listed "
                        + "twice; list each Secret once"));
            }
        }
        ResourceRequirements r = s.getResources();
        if (r == null) {
            return;
        }
        if (r.getClaims() != null && !r.getClaims().isEmpty()) {
            out.add(new Violation("spec.sidecar.resources.claims", "resource claims (dynamic resource allocation) are "
                    + "not passed to the shard pods; remove them (a GPU is asked for with spec.gpu)"));
        }
        Map<String, Quantity> limits = r.getLimits() == null ? Map.of() : r.getLimits();
        Map<String, Quantity> requests = r.getRequests() == null ? Map.of() : r.getRequests();
        // Every quantity parsed and not negative; requests within limits, compared exactly (1500m > 1200m).
        Map<String, BigDecimal> limitAmounts = amounts(out, "spec.sidecar.resources.limits.", limits);
        Map<String, BigDecimal> requestAmounts = amounts(out, "spec.sidecar.resources.requests.", requests);
        resourceNames(out, limits.keySet(), requests.keySet(), gpu);
        notOvercommitted(out, limitAmounts, requestAmounts, limits, requests);
        for (Map.Entry<String, BigDecimal> request : requestAmounts.entrySet()) {
            BigDecimal limit = limitAmounts.get(request.getKey());
            if (limit != null && request.getValue().compareTo(limit) > 0) {
                out.add(new Violation("spec.sidecar.resources.requests." + request.getKey(), requests.get(
                        request.getKey()) + " exceeds the limit " + limits.get(request.getKey())
                        + ": lower the request or raise the limit"));
            }
        }
        Quantity memory = limitAmounts.containsKey("memory") ? limits.get("memory")
                : requestAmounts.containsKey("memory") ? requests.get("memory") : null;
        if (memory != null && !fitsContainerMemory(memory)) {
            out.add(new Violation("spec.sidecar.resources", "memory " + memory + " is too large: a shard container "
                    + "takes at most 8Ti"));
        } else if (memory != null && budget != null) {
            try {
                long budgetBytes = bytes(budget);
                long bookkeeping = bookkeepingBytes(spec, budgetBytes);
                // Half the bookkeeping again, as the default memory has: a collector needs room in proportion to
                // what is live (its marking bitmap and card tables alone grow with the heap), so a heap of the
                // bookkeeping and a fixed 256Mi beside it left a large one no room and the pod OOM-killed once full.
                long collectorRoom = (bookkeeping + 1) / 2;
                long floor = budgetBytes + bookkeeping + collectorRoom + MIN_MEMORY_OVERHEAD_BYTES;
                if (bytes(memory) < floor) {
                    out.add(new Violation("spec.sidecar.resources", "memory " + memory + " leaves less than "
                            + (bookkeeping == 0 ? "512Mi" : mebibytesCeil(floor - budgetBytes) + "Mi (512Mi, "
                            + mebibytesCeil(bookkeeping) + "Mi of heap for the bookkeeping of the entries the budget "
                            + "holds" + (historyBytes(spec) > 0 ? " and of the lrfu history (historyLimit)" : "")
                            + ", and " + mebibytesCeil(collectorRoom) + "Mi, half of it again, for the collector)")
                            + " above spec.memoryPerShard (" + budget + "): the KV pages live in the container's "
                            + "memory next to the JVM's heap and its own memory; give at least " + mebibytesCeil(floor)
                            + "Mi, or leave it unset"));
                } else if (memory != requests.get("memory") && requestAmounts.containsKey("memory")
                        && bytes(requests.get("memory")) < floor) {
                    // The limit holds the KV, but the scheduler places the pod by its request: one far below what
                    // the shard fills lands it on a node without room, and makes it the first evicted under pressure.
                    out.add(new Violation("spec.sidecar.resources.requests.memory", requests.get("memory")
                            + " is less than the " + mebibytesCeil(floor)
                            + "Mi a shard holds once its budget (spec.memoryPerShard, "
                            + budget + ") is full: the scheduler would place the pod as if it needed less, on a node "
                            + "that may not have room for its KV pages; request at least that, or leave the request "
                            + "unset (Kubernetes then takes the limit)"));
                }
            } catch (IllegalArgumentException | ArithmeticException e) {
                // reported above or by the budget check
            }
        }
    }

    /** A path component of an image name: lower-case alphanumerics, joined by '.', '_', '__' or dashes. */
    private static final String IMAGE_COMPONENT = "[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*";
    /**
     * An image reference as a container runtime reads it (the distribution reference grammar): an optional registry
     * host (with a dot or a port, or localhost), a lower-case path, then a tag and/or a digest.
     */
    private static final String DOMAIN_LABEL = "[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?";
    /** A registry: localhost or a dotted host (either with a port), or any host with a port; else it is a path. */
    private static final String REGISTRY = "(?:localhost(?::[0-9]+)?|" + DOMAIN_LABEL + "(?:\\." + DOMAIN_LABEL
            + ")+(?::[0-9]+)?|" + DOMAIN_LABEL + ":[0-9]+)";
    private static final Pattern IMAGE_REFERENCE = Pattern.compile("^(?:" + REGISTRY + "/)?" + IMAGE_COMPONENT + "(?:/"
            + IMAGE_COMPONENT + ")*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@[a-z0-9]+(?:[+._-][a-z0-9]+)*:"
            + "[0-9a-fA-F]{32,})?$");

    /**
     * Whether {@code image} is an image reference the kubelet can pull (at most 255 characters of name): the API
     * server takes any string without surrounding whitespace, so a bad one would surface only as pods that never run.
     */
    public static boolean imageReference(String image) {
        if (image == null || image.length() > 512 || !IMAGE_REFERENCE.matcher(image).matches()) {
            return false;
        }
        int nameEnd = image.indexOf('@') >= 0 ? image.indexOf('@') : image.length();
        String name = image.substring(0, nameEnd);
        int tag = name.lastIndexOf(':');
        if (tag > name.lastIndexOf('/')) {
            name = name.substring(0, tag);
        }
        return name.length() <= 255;
    }

    /**
     * An extended resource name as the API server takes it: a DNS subdomain (at most 253 characters, no empty label),
     * '/', and a name of at most 63 characters; not in a kubernetes.io domain, not requests.*.
     */
    static boolean extendedResourceName(String name) {
        if (!RESOURCE_NAME.matcher(name).matches() || name.startsWith("requests.") || name.contains("kubernetes.io/")) {
            return false;
        }
        int slash = name.indexOf('/');
        String domain = name.substring(0, slash);
        // Kubernetes checks requests.<name> as a qualified name too: the domain is a DNS subdomain of at most 244
        // characters (253 with "requests."), every label 1 to 63 letters, digits and inner dashes.
        if (domain.length() > 244 || name.length() - slash - 1 > 63) {
            return false;
        }
        for (String label : domain.split("\\.", -1)) {
            if (label.isEmpty() || label.length() > 63 || !DNS_LABEL.matcher(label).matches()) {
                return false;
            }
        }
        return true;
    }

    /** Whether a memory quantity that parses is at most {@link #MAX_CONTAINER_MEMORY_BYTES} bytes. */
    private static boolean fitsContainerMemory(Quantity memory) {
        try {
            return Quantity.getAmountInBytes(memory).compareTo(BigDecimal.valueOf(MAX_CONTAINER_MEMORY_BYTES)) <= 0;
        } catch (RuntimeException e) {
            return true; // not a quantity: reported with the others
        }
    }

    /**
     * Container resource names the API server accepts: cpu, memory, ephemeral-storage, hugepages-*, or an extended
     * resource (domain/name, not in a kubernetes.io domain); the GPU of {@code spec.gpu} is set there, not here.
     */
    private static void resourceNames(List<Violation> out, java.util.Set<String> limits, java.util.Set<String> requests,
                                      GpuSpec gpu) {
        boolean gpuEnabled = gpu != null && Boolean.TRUE.equals(gpu.getEnabled());
        // The name the shards are given: the CRD's default when a resource made under an older CRD has none.
        String gpuName = gpu == null ? null : gpu.getResourceName() == null
                ? GpuSpec.DEFAULT_RESOURCE_NAME : gpu.getResourceName();
        java.util.Set<String> names = new java.util.TreeSet<>(limits);
        names.addAll(requests);
        for (String name : names) {
            boolean standard = STANDARD_RESOURCES.contains(name) || name.startsWith("hugepages-");
            boolean extended = extendedResourceName(name);
            if (!standard && !extended) {
                out.add(new Violation("spec.sidecar.resources", "'" + name + "' is not a container resource: use cpu, "
                        + "memory, ephemeral-storage, hugepages-<size> or an extended resource domain/name"));
            } else if (gpuEnabled && name.equals(gpuName)) {
                out.add(new Violation("spec.sidecar.resources", name + " is set by spec.gpu (perShard); remove it "
                        + "from spec.sidecar.resources"));
            }
        }
    }

    /**
     * Resources the API server does not let a pod overcommit, checked as it does: extended resources ({@code
     * domain/name}) are whole numbers; huge pages name their page size ({@code hugepages-2Mi}) and come in whole
     * pages; for both a request needs a limit, and must equal it.
     */
    private static void notOvercommitted(List<Violation> out, Map<String, BigDecimal> limitAmounts,
                                         Map<String, BigDecimal> requestAmounts, Map<String, Quantity> limits,
                                         Map<String, Quantity> requests) {
        java.util.Set<String> names = new java.util.TreeSet<>(limitAmounts.keySet());
        names.addAll(requestAmounts.keySet());
        for (String name : names) {
            BigDecimal limit = limitAmounts.get(name);
            BigDecimal request = requestAmounts.get(name);
            if (name.contains("/")) {
                BigDecimal fraction = fractional(limit) ? limit : fractional(request) ? request : null;
                if (fraction != null) {
                    out.add(new Violation("spec.sidecar.resources", name + " must be a whole number, got "
                            + fraction.stripTrailingZeros().toPlainString()));
                } else {
                    requestEqualsLimit(out, name, "an extended resource", request, limit, requests, limits);
                }
            } else if (name.startsWith("hugepages-")) {
                String size = name.substring("hugepages-".length());
                BigDecimal page;
                try {
                    page = Quantity.getAmountInBytes(new Quantity(size));
                } catch (RuntimeException ex) {
                    page = null;
                }
                if (page == null || page.signum() <= 0 || fractional(page)) {
                    out.add(new Violation("spec.sidecar.resources", "'" + name + "' names no page size: use "
                            + "hugepages-<size>, e.g. hugepages-2Mi or hugepages-1Gi"));
                    continue;
                }
                wholePages(out, "limits", name, limit, page, limits);
                wholePages(out, "requests", name, request, page, requests);
                requestEqualsLimit(out, name, "huge pages", request, limit, requests, limits);
            }
        }
    }

    private static void wholePages(List<Violation> out, String kind, String name, BigDecimal amount, BigDecimal page,
                                   Map<String, Quantity> given) {
        if (amount != null && amount.remainder(page).signum() != 0) {
            out.add(new Violation("spec.sidecar.resources." + kind + "." + name, given.get(name) + " is not a whole "
                    + "number of " + name.substring("hugepages-".length()) + " pages"));
        }
    }

    /** A resource that cannot be overcommitted: a request needs a limit, and must equal it. */
    private static void requestEqualsLimit(List<Violation> out, String name, String what, BigDecimal request,
                                           BigDecimal limit, Map<String, Quantity> requests,
                                           Map<String, Quantity> limits) {
        if (request != null && limit == null) {
            out.add(new Violation("spec.sidecar.resources.limits." + name, "is required with the request "
                    + requests.get(name) + ": " + what + " cannot be overcommitted, so set the limit (the request "
                    + "then defaults to it)"));
        } else if (request != null && request.compareTo(limit) != 0) {
            out.add(new Violation("spec.sidecar.resources.requests." + name, requests.get(name)
                    + " differs from the limit " + limits.get(name) + ": for " + what + ", a request must equal its "
                    + "limit"));
        }
    }

    private static boolean fractional(BigDecimal amount) {
        return amount != null && amount.stripTrailingZeros().scale() > 0;
    }

    /** The quantities that parse and are not negative, by resource name, sorted; a violation for each other one. */
    private static Map<String, BigDecimal> amounts(List<Violation> out, String prefix, Map<String, Quantity> given) {
        Map<String, BigDecimal> amounts = new java.util.TreeMap<>();
        for (String kind : new java.util.TreeSet<>(given.keySet())) {
            Quantity q = given.get(kind);
            try {
                BigDecimal amount = Quantity.getAmountInBytes(q);
                if (amount.signum() < 0) {
                    out.add(new Violation(prefix + kind, q + " is negative"));
                } else if (!usable(amount)) {
                    out.add(new Violation(prefix + kind, "'" + q + "' is beyond what a container can be given: "
                            + "at most 10^30, in at most " + MAX_DIGITS + " significant digits"));
                } else {
                    amounts.put(kind, amount);
                }
            } catch (RuntimeException e) {
                out.add(new Violation(prefix + kind, "'" + q + "' is not a quantity (e.g. 500m, 2, 4Gi)"));
            }
        }
        return amounts;
    }

    /** Significant digits a quantity may have (far more than any resource needs). */
    static final int MAX_DIGITS = 64;
    /** Largest amount of any resource taken (beyond every machine; the checks per resource say their own limits). */
    private static final BigDecimal MAX_AMOUNT = BigDecimal.TEN.pow(30);
    private static final BigDecimal MAX_LONG = BigDecimal.valueOf(Long.MAX_VALUE);

    /**
     * Whether an amount can be used as is: at most 10^30, in at most {@link #MAX_DIGITS} digits, and not so small
     * that its digits lie beyond them. Checked on the exponent alone, before any exact conversion, which for
     * 1e400000000 (a valid quantity string) would build a number of that many digits.
     */
    static boolean usable(BigDecimal amount) {
        return amount.abs().compareTo(MAX_AMOUNT) <= 0 && amount.precision() <= MAX_DIGITS
                && amount.scale() <= MAX_DIGITS;
    }

    /**
     * Bytes of a quantity (fractions rounded up).
     *
     * @throws ArithmeticException beyond a long, or with more than {@link #MAX_DIGITS} digits
     */
    public static long bytes(Quantity q) {
        BigDecimal amount = Quantity.getAmountInBytes(q);
        if (amount.signum() > 0 && amount.compareTo(BigDecimal.ONE) <= 0) {
            return 1; // a fraction of a byte (1e-400000000 included, which a rounding would expand digit by digit)
        }
        if (!usable(amount) || amount.abs().compareTo(MAX_LONG) > 0) {
            throw new ArithmeticException(q + " is beyond a long or has more than " + MAX_DIGITS + " digits");
        }
        return amount.setScale(0, java.math.RoundingMode.CEILING).longValueExact();
    }

    private static long mebibytesCeil(long bytes) {
        return (bytes + (1L << 20) - 1) >> 20;
    }

    private static boolean range(List<Violation> out, String field, Integer value, int min, int max) {
        return range(out, field, value, min, max, false);
    }

    /** Checks an integer field; a null value is a violation unless the field has a default ({@code optional}). */
    private static boolean range(List<Violation> out, String field, Integer value, int min, int max, boolean optional) {
        if (value == null) {
            if (!optional) {
                out.add(new Violation(field, "is required (an integer in [" + min + ", " + max + "])"));
            }
            return optional;
        }
        if (value < min || value > max) {
            out.add(new Violation(field, "is " + value + "; it must be in [" + min + ", " + max + "]"));
            return false;
        }
        return true;
    }

    private static void integer(List<Violation> out, String field, double v, long min, long max) {
        if (Double.isNaN(v) || v != Math.rint(v) || v < min || v > max) {
            out.add(new Violation(field, "is " + v + "; it must be a whole number in [" + min + ", "
                    + max + "]"));
        }
    }
}
