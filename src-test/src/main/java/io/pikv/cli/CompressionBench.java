package io.pikv.cli;

import io.pikv.kv.Accuracy;
import io.pikv.kv.AttentionResult;
import io.pikv.kv.AttentionScope;
import io.pikv.kv.Fp16;
import io.pikv.kv.KvLayout;
import io.pikv.kv.KvShard;
import io.pikv.kv.KvStore;
import io.pikv.kv.KvStoreConfig;
import io.pikv.kv.ModelShape;
import io.pikv.kv.StorageType;
import io.pikv.kv.compression.LowRankBases;
import io.pikv.kv.compression.LowRankBases.Grouping;
import io.pikv.kv.compression.LowRankFitter;
import io.pikv.kv.compression.PyramidBudget;
import io.pikv.kv.compression.SymmetricEigen;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

import java.io.IOException;
import java.io.PrintWriter;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.EnumMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.SplittableRandom;
import java.util.concurrent.Callable;
import java.util.stream.Collectors;

/**
 * {@code ./pikv bench compression}: memory and attention error of each compression method, measured from the store.
 *
 * <p>KV comes from {@link SyntheticKv} (several layers) or from {@code --keys/--values [--queries]} .npy files (one
 * layer). Every method stores the same context in its own {@link KvStore}; its memory is the store's bytes of pages in
 * use (plus low-rank bases), against an fp16 store of the same context; its error is
 * {@link Accuracy#relativeError} of decode attention against exact attention in double over the uncompressed
 * float32 tensors, for every query, over all entries and in PiKV's sparse mode (only entries whose primary expert is
 * among the query's top-k experts, from the shared Qwen routing log).
 */
@Command(name = "compression", mixinStandardHelpOptions = true,
        description = "Memory ratio (vs fp16) and attention error (vs exact, uncompressed) of each KV compression "
                + "method, on generated KV that imitates real models or on .npy tensors, over all entries and in the "
                + "sparse expert-scoped mode.")
public final class CompressionBench implements Callable<Integer> {

    static final String ALL_METHODS = "fp16,int8,lowrank,lowrank+int8,lowrank-expert,pyramid,pyramid+int8,"
            + "pyramid+lowrank+int8";

    @Option(names = "--keys", paramLabel = "K.npy",
            description = "Keys [tokens, kv_heads, head_dim] (float32 or float16) instead of the generator; needs --values.")
    Path keysFile;

    @Option(names = "--values", paramLabel = "V.npy", description = "Values, the same shape as --keys.")
    Path valuesFile;

    @Option(names = "--queries", paramLabel = "Q.npy",
            description = "Queries [queries, q_heads, head_dim]: the first half score pyramid selection, the rest are "
                    + "measured (default: random queries scaled to a logit spread of 1.5).")
    Path queriesFile;

    @Option(names = "--routing", defaultValue = "../shared/data/qwen15moe_layer12.jsonl", paramLabel = "FILE",
            description = "Qwen routing log giving each token's experts (default ${DEFAULT-VALUE}).")
    Path routing;

    @Option(names = "--skip", defaultValue = "8448", paramLabel = "N",
            description = "Route records of the --routing log to drop first: vLLM's start-up warm-up on dummy tokens "
                    + "(default ${DEFAULT-VALUE}, the shared logs' warm-up).")
    int skip;

    @Option(names = "--methods", defaultValue = ALL_METHODS, split = ",", paramLabel = "M[,M...]",
            description = "Methods, each fp16|fp32|int8 optionally joined with lowrank|lowrank-expert and pyramid by '+' "
                    + "(default ${DEFAULT-VALUE}).")
    List<String> methods;

    @Option(names = "--context", defaultValue = "2048", description = "Generated tokens per layer (default ${DEFAULT-VALUE}).")
    int context;

    @Option(names = "--layers", defaultValue = "8", description = "Generated layers (default ${DEFAULT-VALUE}).")
    int layers;

    @Option(names = "--q-heads", defaultValue = "16", description = "Generated query heads (default ${DEFAULT-VALUE}).")
    int qHeads;

    @Option(names = "--kv-heads", defaultValue = "4", description = "Generated KV heads (default ${DEFAULT-VALUE}).")
    int kvHeads;

    @Option(names = "--head-dim", defaultValue = "128", description = "Generated head dim (default ${DEFAULT-VALUE}).")
    int headDim;

    @Option(names = "--calibration-tokens", defaultValue = "4096",
            description = "Generated tokens per layer the low-rank bases are fitted on, from another sequence of the "
                    + "same model (default ${DEFAULT-VALUE}).")
    int calibrationTokens;

    @Option(names = "--decode-queries", defaultValue = "16",
            description = "Generated decode queries measured per layer (default ${DEFAULT-VALUE}).")
    int decodeQueries;

    @Option(names = "--seed", defaultValue = "1", description = "Generator seed (default ${DEFAULT-VALUE}).")
    long seed;

    @Option(names = "--key-rank", defaultValue = "32", description = "Low-rank key coefficients (default ${DEFAULT-VALUE}).")
    int keyRank;

    @Option(names = "--value-rank", defaultValue = "64", description = "Low-rank value coefficients (default ${DEFAULT-VALUE}).")
    int valueRank;

    @Option(names = "--outlier-directions", defaultValue = "2",
            description = "Low-rank: basis directions kept for the largest calibration residuals, such as an "
                    + "attention sink's key (default ${DEFAULT-VALUE}).")
    int outlierDirections;

    @Option(names = "--min-expert-tokens", defaultValue = "128",
            description = "Calibration tokens an expert needs for its own basis (default ${DEFAULT-VALUE}).")
    int minExpertTokens;

    @Option(names = "--budget", defaultValue = "0.25",
            description = "Pyramid: average share of the context each layer keeps (default ${DEFAULT-VALUE}).")
    double budget;

    @Option(names = "--beta", defaultValue = "20",
            description = "Pyramid: the last layer keeps average/beta tokens (default ${DEFAULT-VALUE}).")
    double beta;

    @Option(names = "--sinks", defaultValue = "4", description = "Pyramid: leading tokens always kept (default ${DEFAULT-VALUE}).")
    int sinks;

    @Option(names = "--window", defaultValue = "32",
            description = "Pyramid: recent tokens always kept, and observation queries that score (default ${DEFAULT-VALUE}).")
    int window;

    @Option(names = "--pyramid-policy", defaultValue = "pyramidkv", description = "Pyramid: which tokens a layer over "
            + "its budget gives up: pyramidkv (sinks, window, then the most attention from the observation queries), or "
            + "an engine eviction policy: h2o (the same ranking, as the engine's H2O), streaming (sinks and the most "
            + "recent) or lru. Default: ${DEFAULT-VALUE}.")
    String pyramidPolicy;

    @Option(names = "--page-tokens", defaultValue = "32", description = "Tokens per page (default ${DEFAULT-VALUE}).")
    int pageTokens;

    @Option(names = "--json", paramLabel = "FILE", converter = BenchReport.JsonFile.class,
            description = "Also write the figures as JSON.")
    Path json;

    @picocli.CommandLine.Spec
    picocli.CommandLine.Model.CommandSpec spec;

    /** Target of the issue: some method at ≥ 4× memory with ≤ 1 % error. */
    static final double TARGET_RATIO = 4;
    static final double TARGET_ERROR = 0.01;

    /** One method: storage type of pages (or of coefficients), optional low-rank grouping, optional pyramid budgets. */
    record Method(String name, StorageType type, Grouping lowRank, boolean pyramid) {
        static Method parse(String text) {
            String name = text.strip().toLowerCase(Locale.ROOT);
            StorageType type = StorageType.FP16;
            Grouping lowRank = null;
            boolean pyramid = false;
            boolean typed = false;
            if (name.isEmpty() || name.startsWith("+") || name.endsWith("+") || name.contains("++")) {
                throw new Main.UsageException("method '" + text + "' has an empty part: join fp16, fp32 or int8 with "
                        + "lowrank, lowrank-expert and pyramid by '+'.");
            }
            java.util.Set<String> seen = new java.util.HashSet<>();
            for (String part : name.split("\\+")) {
                if (!seen.add(part)) {
                    throw new Main.UsageException("method '" + text + "' names " + part + " twice.");
                }
                switch (part) {
                    case "fp16", "fp32", "int8" -> {
                        if (typed) {
                            throw new Main.UsageException("method '" + text + "' names two storage types.");
                        }
                        typed = true;
                        type = StorageType.parse(part);
                    }
                    case "lowrank", "lowrank-expert" -> {
                        if (lowRank != null) {
                            throw new Main.UsageException("method '" + text + "' names two low-rank groupings; "
                                    + "take lowrank or lowrank-expert.");
                        }
                        lowRank = part.equals("lowrank") ? Grouping.SHARED : Grouping.EXPERT;
                    }
                    case "pyramid" -> pyramid = true;
                    default -> throw new Main.UsageException("unknown method part '" + part + "' in '" + text
                            + "': join fp16, fp32 or int8 with lowrank, lowrank-expert and pyramid by '+'.");
                }
            }
            // One name per method, whatever the order of its parts (int8+pyramid is pyramid+int8) and with fp16, the
            // default type, named only alone (lowrank+fp16 is lowrank).
            List<String> parts = new ArrayList<>();
            if (type != StorageType.FP16 || (lowRank == null && !pyramid)) {
                parts.add(type.name().toLowerCase(Locale.ROOT));
            }
            if (lowRank != null) {
                parts.add(0, lowRank == Grouping.SHARED ? "lowrank" : "lowrank-expert");
            }
            if (pyramid) {
                parts.add(0, "pyramid");
            }
            return new Method(String.join("+", parts), type, lowRank, pyramid);
        }
    }

    /** The tensors of one layer as the bench uses them. */
    private record LayerData(float[][] keys, float[][] values, int[] experts, float[][] observation,
                             float[][] queries, int[][] scopes) {
    }

    /** Where KV comes from: the generator or supplied tensors. */
    private interface Source {
        ModelShape shape();

        /** Context tokens per layer. */
        int tokens();

        LayerData layer(int layer);

        /** Calibration entries for fitting low-rank bases, and their experts. */
        LayerData calibration(int layer);

        String describe();
    }

    @Override
    public Integer call() {
        long start = System.nanoTime();
        BenchReport.notEmpty(methods, "--methods");
        BenchReport.notAnInput(json, Main.input(routing), keysFile, valuesFile, queriesFile);
        List<Method> list = parseMethods();
        checkOptions();
        if (!java.nio.file.Files.isRegularFile(Main.input(routing))) {
            throw new Main.UsageException("--routing " + routing + " does not exist or is not a file: every method's "
                    + "sparse mode needs a Qwen routing log (the shared one is ../shared/data/qwen15moe_layer12.jsonl).");
        }
        List<int[]> route = QwenRoutingLog.read(Main.input(routing), skip, "--routing");
        Source source = keysFile != null ? supplied(route, list.stream().anyMatch(Method::pyramid)) : synthetic(route);
        ModelShape shape = source.shape();
        checkMemory(list, shape, source.tokens());
        PrintWriter out = spec.commandLine().getOut();
        int tokens = source.tokens();
        int average = (int) Math.round(budget * tokens);
        int[] budgets;
        try {
            budgets = PyramidBudget.linear(shape.layers(), average, beta, sinks + window);
        } catch (IllegalArgumentException e) {
            if (list.stream().anyMatch(Method::pyramid) && (long) sinks + window > tokens) {
                // No --budget could do: even the whole context is less than what every layer must keep.
                throw new Main.UsageException("--sinks + --window = " + ((long) sinks + window) + " is more than the "
                        + tokens + " tokens of the context (" + (keysFile != null ? "--keys" : "--context")
                        + "): every pyramid layer keeps at least that many.");
            }
            if (list.stream().anyMatch(Method::pyramid)) {
                throw new Main.UsageException("--budget " + budget + " keeps " + average + " of " + tokens
                        + " tokens, below --sinks + --window = " + (sinks + window) + ".");
            }
            // No pyramid method asked for: every layer keeps its whole context.
            budgets = new int[shape.layers()];
            Arrays.fill(budgets, tokens);
        }

        // Fit the low-rank bases the methods need (an explicit, reported step). The fitter keeps every layer's
        // calibration K and V (8 bytes an element, in arrays that grow by doubling): refused before it runs out of heap.
        if (list.stream().anyMatch(m -> m.lowRank() != null)) {
            int calTokens = keysFile != null ? source.tokens() : calibrationTokens;
            if (calTokens <= Math.max(keyRank, valueRank)) {
                // n entries span n - 1 directions: a basis of more would be arbitrary axes reported as keeping all.
                throw new Main.UsageException("fitting bases of rank " + Math.max(keyRank, valueRank) + " needs more "
                        + "calibration tokens than that, got " + calTokens + "; use more "
                        + (keysFile != null ? "tokens" : "--calibration-tokens") + " or lower ranks.");
            }
            long need = 2L * 8 * shape.layers() * calTokens * shape.kvWidth();
            if (need > Runtime.getRuntime().maxMemory() / 2) {
                throw new Main.UsageException("fitting the low-rank bases on " + calTokens + " tokens of "
                        + shape.layers() + " layers needs about " + (need >> 20) + " MiB of heap, more than half of "
                        + "this JVM's " + (Runtime.getRuntime().maxMemory() >> 20) + " MiB; use fewer "
                        + (keysFile != null ? "tokens" : "--calibration-tokens") + ", leave the low-rank methods out, "
                        + "or raise the heap (PIKV_JAVA_OPTS=-Xmx…).");
            }
        }
        Map<Grouping, LowRankBases> bases = new EnumMap<>(Grouping.class);
        List<Map<String, Object>> fits = new ArrayList<>();
        for (Method m : list) {
            if (m.lowRank() != null && !bases.containsKey(m.lowRank())) {
                long t0 = System.nanoTime();
                LowRankFitter fitter = new LowRankFitter(shape, m.lowRank(), minExpertTokens);
                int observed = 0;
                for (int l = 0; l < shape.layers(); l++) {
                    LayerData cal = source.calibration(l);
                    for (int t = 0; t < cal.keys().length; t++) {
                        fitter.observe(l, cal.experts()[t], cal.keys()[t], cal.values()[t]);
                    }
                    observed += cal.keys().length;
                }
                LowRankBases b = fitter.fit(keyRank, valueRank, outlierDirections);
                bases.put(m.lowRank(), b);
                fits.add(fitRow(b, observed, (System.nanoTime() - t0) / 1e9));
            }
        }

        // One store per method (and the fp16 baseline, always measured).
        List<Method> run = new ArrayList<>();
        run.add(Method.parse("fp16"));
        for (Method m : list) {
            if (!m.name().equals("fp16")) {
                run.add(m);
            }
        }
        List<Run> runs = new ArrayList<>();
        List<Map<String, Object>> layerRows = new ArrayList<>();
        try {
            for (Method m : run) { // inside the try: a store that cannot be built closes those built before it
                runs.add(new Run(m, shape, m.lowRank() == null ? null : bases.get(m.lowRank()),
                        m.pyramid() ? pyramidBudget(budgets) : null, tokens));
            }
            for (int l = 0; l < shape.layers(); l++) {
                LayerData data = source.layer(l);
                List<Exact> exact = new ArrayList<>();
                // The sparse mode's own reference too: exact attention over the scope's entries only, so that its
                // rows can say what compression adds within the scope besides what scoping loses.
                List<Exact> exactInScope = new ArrayList<>();
                for (int j = 0; j < data.queries().length; j++) {
                    float[] q = data.queries()[j];
                    exact.add(Exact.attend(shape, data.keys(), data.values(), q));
                    exactInScope.add(Exact.attend(shape, data.keys(), data.values(), q,
                            inScope(data.experts(), data.scopes()[j])));
                }
                List<Exact> observed = new ArrayList<>();
                for (float[] q : data.observation()) {
                    observed.add(Exact.attend(shape, data.keys(), data.values(), q));
                }
                layerRows.add(layerRow(l, data, exact, observed, budgets[l], shape));
                for (Run r : runs) {
                    try {
                        r.measure(l, data, exact, exactInScope);
                    } catch (IllegalArgumentException e) {
                        // Inputs are checked up front; what is left is a method's own range (a low-rank coefficient
                        // beyond fp16, say): the method cannot store these tensors.
                        throw new Main.UsageException("method " + r.method.name() + " cannot store layer " + l
                                + " of these tensors: " + e.getMessage() + ".");
                    }
                }
            }
            long baseline = runs.get(0).bytes();
            List<Map<String, Object>> rows = new ArrayList<>();
            List<String> met = new ArrayList<>();
            for (String scope : List.of("all", "experts")) {
                for (Run r : runs) {
                    if (r.method.name().equals("fp16") && !list.contains(r.method) && scope.equals("all")) {
                        // Measured as the baseline. Its sparse row stays: the error of expert scoping alone, which
                        // every method's sparse row includes.
                        continue;
                    }
                    Map<String, Object> row = new LinkedHashMap<>();
                    double[] err = scope.equals("all") ? r.errors() : r.sparseErrors();
                    // Rounded as shown, and the target judged on what is shown.
                    double ratio = BenchReport.round((double) baseline / r.bytes(), 4);
                    double mean = BenchReport.round(Arrays.stream(err).average().orElse(0), 3);
                    row.put("name", r.method.name());
                    row.put("scope", scope);
                    row.put("memory_ratio", ratio);
                    row.put("rel_error", mean);
                    row.put("rel_error_max", BenchReport.round(Arrays.stream(err).max().orElse(0), 3));
                    if (scope.equals("experts")) {
                        row.put("rel_error_in_scope", BenchReport.round(r.inScopeErrors.stream()
                                .mapToDouble(Double::doubleValue).average().orElse(0), 3));
                    }
                    row.put("bytes", r.bytes());
                    row.put("bases_bytes", r.store.projectionBytes());
                    row.put("visited", BenchReport.round(scope.equals("all") ? r.visitedShare() : r.sparseVisitedShare(), 3));
                    row.put("rel_error_by_layer", perLayer(err, shape.layers()));
                    rows.add(row);
                    if (ratio >= TARGET_RATIO && mean <= TARGET_ERROR) {
                        met.add(r.method.name() + " (" + scope + ")");
                    }
                }
            }
            BenchReport report = new BenchReport("compression: " + source.describe());
            report.put("source", keysFile != null ? "npy" : "generator")
                    // Where low-rank bases were fitted: supplied tensors fit on themselves (as ShadowKV's per-prompt
                    // SVD), generated ones on another sequence of the same model.
                    .put("calibration", keysFile != null ? "in_sample" : "held_out")
                    .put("layers", shape.layers()).put("tokens", tokens).put("q_heads", shape.qHeads())
                    .put("kv_heads", shape.kvHeads()).put("head_dim", shape.headDim())
                    .put("queries_per_layer", runs.get(0).queriesPerLayer)
                    .put("page_tokens", pageTokens)
                    .put("key_rank", keyRank).put("value_rank", valueRank)
                    .put("pyramid_average_tokens", average)
                    .put("pyramid_policy", pyramidPolicy)
                    .put("pyramid_budgets", Arrays.stream(budgets).mapToObj(Integer::toString)
                            .collect(Collectors.joining(",")))
                    .put("baseline_fp16_bytes", baseline)
                    .put("routing", routing.toString())
                    .put("target", "memory_ratio >= " + TARGET_RATIO + " and mean rel_error <= " + TARGET_ERROR)
                    .put("target_met_by", met.isEmpty() ? "none" : String.join(", ", met))
                    .put("elapsed_s", BenchReport.round((System.nanoTime() - start) / 1e9, 3))
                    .put("methods", rows)
                    .put("per_layer", layerRows)
                    .put("fits", fits);
            report.print(out);
            if (json != null) {
                report.writeJson(json);
            }
            return 0;
        } finally {
            for (Run r : runs) {
                r.store.close();
            }
        }
    }

    /** Mean error per layer (errors are in layer order, the same number per layer), as "e0 e1 ...". */
    private static String perLayer(double[] err, int layers) {
        int per = err.length / layers;
        StringBuilder b = new StringBuilder();
        for (int l = 0; l < layers; l++) {
            double sum = 0;
            for (int j = 0; j < per; j++) {
                sum += err[l * per + j];
            }
            b.append(l == 0 ? "" : " ").append(String.format(Locale.ROOT, "%.2g", sum / per));
        }
        return b.toString();
    }

    private List<Method> parseMethods() {
        List<Method> list = new ArrayList<>();
        for (String m : methods) {
            list.add(Method.parse(m));
        }
        BenchReport.distinct(list.stream().map(Method::name).toList(), "--methods", "the method");
        return list;
    }

    /** What --pyramid-policy takes. */
    static final List<String> PYRAMID_POLICIES = List.of("pyramidkv", "h2o", "streaming", "lru");

    /** The per-layer budgets, choosing victims as --pyramid-policy says. */
    private PyramidBudget pyramidBudget(int[] budgets) {
        return switch (pyramidPolicy) {
            case "pyramidkv" -> new PyramidBudget(budgets, sinks, window);
            case "h2o" -> new PyramidBudget(budgets, new io.pikv.kv.scheduling.TokenRetention(
                    new io.pikv.kv.scheduling.HeavyHitter(sinks, window)));
            case "streaming" -> new PyramidBudget(budgets, new io.pikv.kv.scheduling.TokenRetention(
                    new io.pikv.kv.scheduling.StreamingLlm(sinks, window)));
            case "lru" -> new PyramidBudget(budgets, new io.pikv.kv.scheduling.TokenRetention(
                    new io.pikv.kv.scheduling.Lru()));
            default -> throw new IllegalStateException("unchecked --pyramid-policy " + pyramidPolicy);
        };
    }

    private void checkOptions() {
        if (pageTokens < 1 || pageTokens > 1024 || Integer.bitCount(pageTokens) != 1) {
            throw new Main.UsageException("--page-tokens must be a power of two in [1, 1024], got " + pageTokens + ".");
        }
        if (!PYRAMID_POLICIES.contains(pyramidPolicy)) {
            throw new Main.UsageException("--pyramid-policy must be one of " + String.join(", ", PYRAMID_POLICIES)
                    + "; got '" + pyramidPolicy + "'.");
        }
        if ((keysFile == null) != (valuesFile == null)) {
            throw new Main.UsageException("--keys and --values go together.");
        }
        if (queriesFile != null && keysFile == null) {
            throw new Main.UsageException("--queries needs --keys and --values.");
        }
        if (keysFile != null) {
            // The tensors give the shape and calibrate the bases themselves; --queries gives the queries too.
            List<String> generatorOnly = new ArrayList<>(List.of("--context", "--layers", "--q-heads", "--kv-heads",
                    "--head-dim", "--calibration-tokens"));
            if (queriesFile != null) {
                generatorOnly.addAll(List.of("--decode-queries", "--seed"));
            }
            List<String> given = generatorOnly.stream()
                    .filter(o -> spec.commandLine().getParseResult().hasMatchedOption(o)).toList();
            if (!given.isEmpty()) {
                throw new Main.UsageException(String.join(", ", given) + (given.size() == 1 ? " sets" : " set")
                        + " what --keys" + (queriesFile != null ? ", --values and --queries give" : " and --values give")
                        + " (shape, tokens, calibration" + (queriesFile != null ? ", queries" : "")
                        + "); leave " + (given.size() == 1 ? "it" : "them") + " out with supplied tensors.");
            }
        }
        if (context < 1 || layers < 1 || decodeQueries < 1 || window < 1 || sinks < 0 || calibrationTokens < 1) {
            throw new Main.UsageException("--context, --layers, --decode-queries, --window and --calibration-tokens "
                    + "must be positive, --sinks at least 0.");
        }
        if (context > (1 << 20) || layers > 256 || decodeQueries > 10_000 || calibrationTokens > (1 << 20)
                || window > (1 << 20) || sinks > (1 << 20)) {
            throw new Main.UsageException("--context, --calibration-tokens, --window and --sinks must be at most "
                    + "1048576, --layers at most 256 and --decode-queries at most 10000.");
        }
        if (!(budget > 0 && budget <= 1) || !(beta >= 1) || Double.isInfinite(beta)) {
            throw new Main.UsageException("--budget must be in (0, 1] and --beta finite and at least 1.");
        }
        if (keyRank < 1 || valueRank < 1 || minExpertTokens < 1) {
            throw new Main.UsageException("--key-rank, --value-rank and --min-expert-tokens must be positive.");
        }
        if (skip < 0) {
            throw new Main.UsageException("--skip must not be negative, got " + skip + ".");
        }
        if (outlierDirections < 0 || outlierDirections > Math.min(keyRank, valueRank)) {
            throw new Main.UsageException("--outlier-directions must be between 0 and the smaller rank.");
        }
        if (keysFile == null && window > context) {
            // The generator's observation queries are the window's last tokens: a longer window has none for the rest.
            throw new Main.UsageException("--window (" + window + ") must not exceed --context (" + context + ").");
        }
    }

    private Source synthetic(List<int[]> route) {
        ModelShape shape;
        SyntheticKv gen;
        try {
            shape = new ModelShape(layers, qHeads, kvHeads, headDim, QwenRoutingLog.EXPERTS, route.get(0).length);
            gen = new SyntheticKv(layers, qHeads, kvHeads, headDim, seed);
        } catch (IllegalArgumentException e) {
            throw new Main.UsageException(e.getMessage() + ".");
        }
        checkRanks(shape);
        return new Source() {
            @Override
            public ModelShape shape() {
                return shape;
            }

            @Override
            public int tokens() {
                return context;
            }

            @Override
            public LayerData layer(int layer) {
                // Context tokens take the log's first records; the decode queries' scopes the records after them.
                SyntheticKv.Layer g = gen.layer(layer, context, window, decodeQueries, seed);
                return new LayerData(g.keys(), g.values(), primary(route, 0, context), g.observation(),
                        g.decode(), scopes(route, context, decodeQueries));
            }

            @Override
            public LayerData calibration(int layer) {
                // Another sequence of the same model, routed by the records after the measured ones.
                SyntheticKv.Layer g = gen.layer(layer, calibrationTokens, 1, 1, seed + 1_000);
                return new LayerData(g.keys(), g.values(),
                        primary(route, context + decodeQueries, calibrationTokens), null, null, null);
            }

            @Override
            public String describe() {
                return "generator (seed " + seed + "), " + layers + " layers x " + context + " tokens, " + qHeads
                        + " q heads, " + kvHeads + " kv heads, head dim " + headDim;
            }
        };
    }

    private Source supplied(List<int[]> route, boolean pyramid) {
        Npy.Array k = readNpy(keysFile, "--keys");
        // K and V are held twice on the heap (as read, and as rows): refuse before reading V what cannot fit.
        long heapNeed = 4L * 4 * k.data().length;
        if (heapNeed > Runtime.getRuntime().maxMemory() * 8 / 10) {
            throw new Main.UsageException("--keys and --values need about " + (heapNeed >> 20) + " MiB of heap, more "
                    + "than this JVM's " + (Runtime.getRuntime().maxMemory() >> 20) + " MiB allow; use fewer tokens "
                    + "or raise the heap (PIKV_JAVA_OPTS=-Xmx…).");
        }
        Npy.Array v = readNpy(valuesFile, "--values");
        if (k.shape().length != 3) {
            throw new Main.UsageException(keysFile + " has shape " + Arrays.toString(k.shape())
                    + "; --keys must be [tokens, kv_heads, head_dim].");
        }
        if (!Arrays.equals(k.shape(), v.shape())) {
            throw new Main.UsageException(valuesFile + " has shape " + Arrays.toString(v.shape()) + "; --values must "
                    + "have the shape of --keys, " + Arrays.toString(k.shape()) + ".");
        }
        int tokens = k.shape()[0];
        int heads = k.shape()[1];
        int dim = k.shape()[2];
        if (heads < 1 || dim < 1) {
            throw new Main.UsageException(keysFile + " has shape " + Arrays.toString(k.shape())
                    + "; its kv_heads and head_dim must not be 0.");
        }
        if (tokens < 2 || tokens > KvShard.MAX_POSITION + 1) {
            throw new Main.UsageException(keysFile + " has shape " + Arrays.toString(k.shape()) + "; it needs from 2 "
                    + "to " + (KvShard.MAX_POSITION + 1) + " tokens (the positions a sequence's layer can hold).");
        }
        // The fp16 baseline is always measured, so K and V must fit fp16 (as a sidecar with fp16 pages requires).
        float[][] keys = rows(k.data(), tokens, heads * dim, Fp16.MAX, "--keys");
        float[][] values = rows(v.data(), tokens, heads * dim, Fp16.MAX, "--values");
        float[][] observation;
        float[][] queries;
        int qh;
        if (queriesFile != null) {
            Npy.Array q = readNpy(queriesFile, "--queries");
            if (q.shape().length != 3 || q.shape()[2] != dim || q.shape()[1] < 1 || q.shape()[1] % heads != 0
                    || q.shape()[0] < 1) {
                throw new Main.UsageException(queriesFile + " has shape " + Arrays.toString(q.shape())
                        + "; --queries must be [queries, q_heads, " + dim + "] with q_heads a multiple of " + heads + ".");
            }
            qh = q.shape()[1];
            float[][] all = rows(q.data(), q.shape()[0], qh * dim, ModelShape.MAX_ABS_VALUE, "--queries");
            int half = all.length / 2;
            if (half == 0 && pyramid) {
                throw new Main.UsageException(queriesFile + " holds one query; pyramid methods need at least 2: the "
                        + "first half scores the budgets, the second half is measured (one query would do both).");
            }
            observation = half == 0 ? all : Arrays.copyOfRange(all, 0, half);
            queries = half == 0 ? all : Arrays.copyOfRange(all, half, all.length);
        } else {
            qh = heads;
            observation = randomQueries(keys, heads, dim, window, seed);
            queries = randomQueries(keys, heads, dim, decodeQueries, seed + 1);
        }
        ModelShape shape;
        try {
            shape = new ModelShape(1, qh, heads, dim, QwenRoutingLog.EXPERTS, route.get(0).length);
        } catch (IllegalArgumentException e) {
            throw new Main.UsageException(e.getMessage() + ".");
        }
        checkRanks(shape);
        LayerData data = new LayerData(keys, values, primary(route, 0, tokens), observation, queries,
                scopes(route, tokens, queries.length));
        return new Source() {
            @Override
            public ModelShape shape() {
                return shape;
            }

            @Override
            public int tokens() {
                return tokens;
            }

            @Override
            public LayerData layer(int layer) {
                return data;
            }

            @Override
            public LayerData calibration(int layer) {
                return data; // in-sample: the bases are fitted on the tensors they compress
            }

            @Override
            public String describe() {
                return keysFile + " + " + valuesFile + (queriesFile == null ? " (random queries)" : " + " + queriesFile)
                        + ", " + tokens + " tokens, " + qh + " q heads, " + heads + " kv heads, head dim " + dim;
            }
        };
    }

    private void checkRanks(ModelShape shape) {
        if (parseMethods().stream().noneMatch(m -> m.lowRank() != null)) {
            return; // the ranks are the low-rank methods' only
        }
        if (keyRank > shape.headDim() || valueRank > shape.headDim()) {
            throw new Main.UsageException("--key-rank and --value-rank must be at most the head dim, "
                    + shape.headDim() + ".");
        }
        if (keyRank == shape.headDim() && valueRank == shape.headDim()) {
            throw new Main.UsageException("--key-rank and --value-rank both at the head dim, " + shape.headDim()
                    + ", keep everything: lower one of them for the low-rank methods.");
        }
    }

    private static Npy.Array readNpy(Path file, String option) {
        try {
            return Npy.read(file);
        } catch (java.nio.file.NoSuchFileException e) {
            throw new Main.UsageException(option + " file " + file + " does not exist.");
        } catch (IOException e) {
            throw new Main.UsageException(option + ": " + e.getMessage() + ".");
        }
    }

    /** The rows of a supplied tensor, each value finite and within ±{@code max}. */
    private static float[][] rows(float[] data, int n, int width, float max, String option) {
        float[][] out = new float[n][];
        for (int i = 0; i < n; i++) {
            out[i] = Arrays.copyOfRange(data, i * width, (i + 1) * width);
        }
        for (int i = 0; i < n; i++) {
            for (int j = 0; j < width; j++) {
                float x = out[i][j];
                if (!Float.isFinite(x)) {
                    throw new Main.UsageException(option + " holds a non-finite value (" + x + ") at row " + i
                            + ", element " + j + ".");
                }
                if (Math.abs(x) > max) {
                    throw new Main.UsageException(option + " holds " + x + " at row " + i + ", element " + j
                            + ", beyond ±" + max + (max == Fp16.MAX ? ", the range of fp16 pages" : "") + ".");
                }
            }
        }
        return out;
    }

    /**
     * Refuses a run whose stores would not fit the JVM's direct memory: every method's store holds every layer's
     * context at once (pyramid and low-rank methods hold less; this counts their storage type's full pages).
     */
    private void checkMemory(List<Method> list, ModelShape shape, int tokens) {
        long need = 0;
        List<Method> all = new ArrayList<>(list);
        if (all.stream().noneMatch(m -> m.name().equals("fp16"))) {
            all.add(Method.parse("fp16")); // the baseline, measured whether or not it was asked for
        }
        for (Method m : all) {
            long pageBytes;
            try {
                pageBytes = KvStoreConfig.builder(shape).storageType(m.type()).pageTokens(pageTokens).build()
                        .layout().pageBytes();
            } catch (IllegalArgumentException e) {
                // The shape fits no page of this method's storage type (int8 takes head dims that are multiples of 4).
                throw new Main.UsageException("method " + m.name() + " cannot store KV of " + shape.kvHeads()
                        + " heads of dimension " + shape.headDim() + ": " + e.getMessage() + ".");
            }
            need += (long) shape.layers() * ((tokens + pageTokens - 1L) / pageTokens + 1) * pageBytes;
            if (m.lowRank() != null) {
                try { // checked before the fit, which may take a while: the ranks must make a page of this type
                    new KvLayout(shape.kvHeads(), shape.headDim(), pageTokens, m.type(), keyRank, valueRank);
                } catch (IllegalArgumentException e) {
                    throw new Main.UsageException("method " + m.name() + " cannot store ranks " + keyRank + " and "
                            + valueRank + ": " + e.getMessage() + ".");
                }
            }
        }
        long room = Math.max(0, io.pikv.kv.DirectMemory.limit() - (256L << 20));
        if (need > room) {
            throw new Main.UsageException("the methods' stores need up to " + (need >> 20) + " MiB of KV pages ("
                    + shape.layers() + " layers of " + tokens + " tokens, " + all.size() + " stores), more than "
                    + "the " + (room >> 20) + " MiB of direct memory this JVM may use; use fewer --methods, a shorter "
                    + "--context or fewer --layers, or raise the heap (PIKV_JAVA_OPTS=-Xmx…).");
        }
    }

    /**
     * Gaussian queries (one per KV head, so q_heads = kv_heads) scaled per head so that their logits over the keys
     * have a standard deviation of 1.5: moderately peaky attention, for tensors supplied without queries.
     */
    private static float[][] randomQueries(float[][] keys, int heads, int dim, int n, long seed) {
        SplittableRandom rnd = new SplittableRandom(seed * 31 + 7);
        float[][] out = new float[n][heads * dim];
        for (float[] q : out) {
            for (int h = 0; h < heads; h++) {
                double sum = 0;
                double sq = 0;
                for (int i = 0; i < dim; i++) {
                    q[h * dim + i] = (float) (rnd.nextDouble() * 2 - 1);
                }
                for (float[] k : keys) {
                    double s = 0;
                    for (int i = 0; i < dim; i++) {
                        s += q[h * dim + i] * k[h * dim + i];
                    }
                    s /= Math.sqrt(dim);
                    sum += s;
                    sq += s * s;
                }
                double var = sq / keys.length - Math.pow(sum / keys.length, 2);
                double scale = var > 0 ? 1.5 / Math.sqrt(var) : 1;
                for (int i = 0; i < dim; i++) {
                    q[h * dim + i] *= (float) scale;
                }
            }
        }
        return out;
    }

    /** Primary experts of {@code n} tokens from record {@code from} of the routing log (wrapping around). */
    private static int[] primary(List<int[]> route, int from, int n) {
        int[] out = new int[n];
        for (int t = 0; t < n; t++) {
            out[t] = route.get((from + t) % route.size())[0];
        }
        return out;
    }

    private static int[][] scopes(List<int[]> route, int from, int n) {
        int[][] out = new int[n][];
        for (int j = 0; j < n; j++) {
            out[j] = route.get((from + j) % route.size()).clone();
        }
        return out;
    }

    /** Which tokens a sparse query's scope takes: those whose primary expert is one of the scope's. */
    private static boolean[] inScope(int[] experts, int[] scope) {
        boolean[] out = new boolean[experts.length];
        for (int t = 0; t < experts.length; t++) {
            for (int e : scope) {
                out[t] |= experts[t] == e;
            }
        }
        return out;
    }

    /** Exact decode attention in double over uncompressed float32 tensors, with the mean weight per token. */
    private record Exact(double[] output, double[] weights) {
        static Exact attend(ModelShape shape, float[][] keys, float[][] values, float[] q) {
            return attend(shape, keys, values, q, null);
        }

        /** Over the tokens {@code mask} takes (all when null); none: an output of zeros, as the store answers. */
        static Exact attend(ModelShape shape, float[][] keys, float[][] values, float[] q, boolean[] mask) {
            int d = shape.headDim();
            int g = shape.groupSize();
            int n = keys.length;
            double[] out = new double[shape.queryWidth()];
            double[] mean = new double[n];
            double[] s = new double[n];
            double scale = 1 / Math.sqrt(d);
            for (int qh = 0; qh < shape.qHeads(); qh++) {
                int h = qh / g;
                double max = Double.NEGATIVE_INFINITY;
                for (int t = 0; t < n; t++) {
                    if (mask != null && !mask[t]) {
                        s[t] = Double.NEGATIVE_INFINITY;
                        continue;
                    }
                    double dot = 0;
                    for (int i = 0; i < d; i++) {
                        dot += (double) q[qh * d + i] * keys[t][h * d + i];
                    }
                    s[t] = dot * scale;
                    max = Math.max(max, s[t]);
                }
                if (max == Double.NEGATIVE_INFINITY) {
                    continue; // nothing in scope
                }
                double sum = 0;
                for (int t = 0; t < n; t++) {
                    s[t] = Math.exp(s[t] - max);
                    sum += s[t];
                }
                for (int t = 0; t < n; t++) {
                    double w = s[t] / sum;
                    mean[t] += w / shape.qHeads();
                    for (int i = 0; i < d; i++) {
                        out[qh * d + i] += w * values[t][h * d + i];
                    }
                }
            }
            return new Exact(out, mean);
        }
    }

    /** One method's store and its measurements. */
    private final class Run {
        final Method method;
        final KvStore store;
        final PyramidBudget pyramid;
        final long sequence;
        final List<Double> errors = new ArrayList<>();
        final List<Double> sparseErrors = new ArrayList<>();
        /** The sparse answers against exact attention over the same scope: what compression adds within it. */
        final List<Double> inScopeErrors = new ArrayList<>();
        long visited;
        long sparseVisited;
        long possible;
        int queriesPerLayer;

        Run(Method method, ModelShape shape, LowRankBases bases, PyramidBudget pyramid, int tokens) {
            this.method = method;
            this.pyramid = pyramid;
            try {
                KvStoreConfig.Builder builder = KvStoreConfig.builder(shape).storageType(method.type())
                        .pageTokens(pageTokens).shards(1).buckets(1).threads(1).lowRank(bases);
                KvLayout layout = builder.build().layout();
                // Room for every layer's whole context twice over (so nothing is evicted but what pyramid budgets
                // evict), within the pages one shard can address: pages are allocated as they fill, not up front.
                long pages = Math.min(2L * shape.layers() * ((tokens + pageTokens - 1L) / pageTokens + 1),
                        layout.maxPages());
                this.store = new KvStore(builder.budgetBytes(pages * layout.pageBytes()).build());
            } catch (IllegalArgumentException e) {
                throw new Main.UsageException("method " + method.name() + ": " + e.getMessage() + ".");
            }
            this.sequence = store.createSequence();
        }

        void measure(int layer, LayerData data, List<Exact> exact, List<Exact> exactInScope) {
            for (int t = 0; t < data.keys().length; t++) {
                store.append(sequence, layer, data.experts()[t], data.keys()[t], data.values()[t]);
            }
            if (pyramid != null) {
                for (float[] q : data.observation()) {
                    pyramid.observe(sequence, layer, store.attend(sequence, layer, q, AttentionScope.all(), true));
                }
                pyramid.enforce(store, sequence);
            }
            queriesPerLayer = data.queries().length;
            for (int j = 0; j < data.queries().length; j++) {
                float[] q = data.queries()[j];
                AttentionResult all = store.attend(sequence, layer, q);
                errors.add(Accuracy.relativeError(all.output(), exact.get(j).output()));
                AttentionResult sparse = store.attend(sequence, layer, q, AttentionScope.experts(data.scopes()[j]),
                        false);
                sparseErrors.add(Accuracy.relativeError(sparse.output(), exact.get(j).output()));
                inScopeErrors.add(Accuracy.relativeError(sparse.output(), exactInScope.get(j).output()));
                visited += all.visited();
                sparseVisited += sparse.visited();
                possible += data.keys().length;
            }
        }

        long bytes() {
            return store.bytesInUse() + store.projectionBytes();
        }

        double[] errors() {
            return errors.stream().mapToDouble(Double::doubleValue).toArray();
        }

        double[] sparseErrors() {
            return sparseErrors.stream().mapToDouble(Double::doubleValue).toArray();
        }

        double visitedShare() {
            return (double) visited / possible;
        }

        double sparseVisitedShare() {
            return (double) sparseVisited / possible;
        }
    }

    /** What the layer's exact attention and tensors look like: the properties the generator imitates. */
    private Map<String, Object> layerRow(int layer, LayerData data, List<Exact> exact, List<Exact> observed,
                                         int budgetTokens, ModelShape shape) {
        int n = data.keys().length;
        int recent = Math.min(window, n);
        double sink = 0;
        double recentMass = 0;
        double top = 0;
        double effective = 0;
        int topCount = Math.max(1, n / 20);
        for (Exact e : exact) {
            double[] w = e.weights();
            sink += w[0];
            for (int t = n - recent; t < n; t++) {
                recentMass += w[t];
            }
            double[] sorted = w.clone();
            Arrays.sort(sorted);
            for (int i = 0; i < topCount; i++) {
                top += sorted[n - 1 - i];
            }
            double entropy = 0;
            for (double x : w) {
                entropy -= x > 0 ? x * Math.log(x) : 0;
            }
            effective += Math.exp(entropy);
        }
        int q = exact.size();
        Map<String, Object> row = new LinkedHashMap<>();
        row.put("layer", layer);
        row.put("sink_mass", BenchReport.round(sink / q, 3));
        row.put("recent_mass", BenchReport.round(recentMass / q, 3));
        row.put("top5pct_mass", BenchReport.round(top / q, 3));
        row.put("effective_tokens", BenchReport.round(effective / q, 3));
        row.put("heavy_overlap", BenchReport.round(heavyOverlap(observed, exact, n, recent), 3));
        row.put("key_rank90", rank90(data.keys(), shape));
        row.put("value_rank90", rank90(data.values(), shape));
        row.put("key_outlier_ratio", BenchReport.round(outlierRatio(data.keys(), shape), 3));
        row.put("value_mean_share", BenchReport.round(meanShare(data.values(), shape), 3));
        row.put("pyramid_budget", budgetTokens);
        return row;
    }

    /**
     * How persistent heavy hitters are (SnapKV's observation): the share of the top 5 % of tokens by the decode
     * queries' summed attention that are also in the top 5 % by the observation window's, sink and recent window
     * excluded.
     */
    private double heavyOverlap(List<Exact> observed, List<Exact> decode, int n, int recent) {
        int from = Math.min(sinks, n);
        int to = n - recent;
        if (to - from < 20) {
            return Double.NaN;
        }
        int k = Math.max(1, (to - from) / 20);
        java.util.Set<Integer> a = top(observed, from, to, k);
        java.util.Set<Integer> b = top(decode, from, to, k);
        a.retainAll(b);
        return (double) a.size() / k;
    }

    private static java.util.Set<Integer> top(List<Exact> results, int from, int to, int k) {
        double[] sum = new double[to];
        for (Exact e : results) {
            for (int t = from; t < to; t++) {
                sum[t] += e.weights()[t];
            }
        }
        return java.util.stream.IntStream.range(from, to).boxed()
                .sorted((x, y) -> Double.compare(sum[y], sum[x])).limit(k)
                .collect(Collectors.toCollection(java.util.HashSet::new));
    }

    /** Mean over KV heads of the components needed for 90 % of the variance around the mean. */
    private static double rank90(float[][] rows, ModelShape shape) {
        int d = shape.headDim();
        double total = 0;
        for (int h = 0; h < shape.kvHeads(); h++) {
            double[] mean = new double[d];
            for (float[] r : rows) {
                for (int i = 0; i < d; i++) {
                    mean[i] += r[h * d + i] / rows.length;
                }
            }
            double[][] cov = new double[d][d];
            double[] x = new double[d];
            for (float[] r : rows) {
                for (int i = 0; i < d; i++) {
                    x[i] = r[h * d + i] - mean[i];
                }
                for (int i = 0; i < d; i++) {
                    for (int j = i; j < d; j++) {
                        cov[i][j] += x[i] * x[j];
                    }
                }
            }
            for (int i = 0; i < d; i++) {
                for (int j = 0; j < i; j++) {
                    cov[i][j] = cov[j][i];
                }
            }
            double[] lambda = SymmetricEigen.of(cov).values();
            double sum = Arrays.stream(lambda).map(l -> Math.max(0, l)).sum();
            double acc = 0;
            int r = 0;
            while (r < d && acc < 0.9 * sum) {
                acc += Math.max(0, lambda[r++]);
            }
            total += r;
        }
        return BenchReport.round(total / shape.kvHeads(), 3);
    }

    /** Energy of the mean vector over the mean energy of a row, averaged over KV heads (anisotropy). */
    private static double meanShare(float[][] rows, ModelShape shape) {
        int d = shape.headDim();
        double total = 0;
        for (int h = 0; h < shape.kvHeads(); h++) {
            double[] mean = new double[d];
            double energy = 0;
            for (float[] r : rows) {
                for (int i = 0; i < d; i++) {
                    mean[i] += r[h * d + i] / rows.length;
                    energy += (double) r[h * d + i] * r[h * d + i] / rows.length;
                }
            }
            double m = 0;
            for (double x : mean) {
                m += x * x;
            }
            total += energy == 0 ? 0 : m / energy;
        }
        return total / shape.kvHeads();
    }

    /** Largest channel's mean |K| over the median channel's, averaged over KV heads (KIVI's outlier channels). */
    private static double outlierRatio(float[][] rows, ModelShape shape) {
        int d = shape.headDim();
        double total = 0;
        for (int h = 0; h < shape.kvHeads(); h++) {
            double[] mag = new double[d];
            for (float[] r : rows) {
                for (int i = 0; i < d; i++) {
                    mag[i] += Math.abs(r[h * d + i]);
                }
            }
            Arrays.sort(mag);
            total += mag[d / 2] == 0 ? 0 : mag[d - 1] / mag[d / 2];
        }
        return total / shape.kvHeads();
    }

    private static Map<String, Object> fitRow(LowRankBases b, int observed, double seconds) {
        Map<String, Object> row = new LinkedHashMap<>();
        row.put("grouping", b.grouping().name().toLowerCase(Locale.ROOT));
        row.put("calibration_tokens_total", observed);
        long bases = b.fits().size();
        row.put("bases", bases);
        row.put("expert_bases", b.fits().stream().filter(f -> f.expert() >= 0).count());
        row.put("key_retained", BenchReport.round(b.fits().stream().mapToDouble(LowRankBases.Fit::keyRetained)
                .average().orElse(0), 4));
        row.put("value_retained", BenchReport.round(b.fits().stream().mapToDouble(LowRankBases.Fit::valueRetained)
                .average().orElse(0), 4));
        row.put("bytes", b.bytes());
        row.put("fit_s", BenchReport.round(seconds, 3));
        return row;
    }
}
