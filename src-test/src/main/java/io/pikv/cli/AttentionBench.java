package io.pikv.cli;

import io.pikv.kv.Accuracy;
import io.pikv.kv.AttentionResult;
import io.pikv.kv.Fp16;
import io.pikv.kv.KvStore;
import io.pikv.kv.KvStoreConfig;
import io.pikv.kv.ModelShape;
import io.pikv.kv.StorageType;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

import java.io.IOException;
import java.io.PrintWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.SplittableRandom;
import java.util.concurrent.Callable;

/**
 * {@code ./pikv bench attention}: decode attention over one sequence × layer, as bandwidth (bytes of K+V read per
 * second), next to STREAM triad in the same process and NumPy on the same data.
 */
@Command(name = "attention", mixinStandardHelpOptions = true,
        description = "Time decode attention over one sequence x layer and compare its K+V read bandwidth with "
                + "STREAM triad (same process) and NumPy (same data, when python3 with numpy is present).")
public final class AttentionBench implements Callable<Integer> {

    @Option(names = "--context", defaultValue = "32768", description = "Tokens in the sequence (default ${DEFAULT-VALUE}).")
    int context;

    @Option(names = "--q-heads", defaultValue = "32", description = "Query heads (default ${DEFAULT-VALUE}).")
    int qHeads;

    @Option(names = "--kv-heads", defaultValue = "8", description = "KV heads (default ${DEFAULT-VALUE}).")
    int kvHeads;

    @Option(names = "--head-dim", defaultValue = "128", description = "Head dimension (default ${DEFAULT-VALUE}).")
    int headDim;

    @Option(names = "--dtype", defaultValue = "fp16", description = "Storage type: fp16, fp32 or int8 (int8: bytes "
            + "read include the scales; no NumPy comparison) (default ${DEFAULT-VALUE}).")
    String dtype;

    @Option(names = "--page-tokens", defaultValue = "32", description = "Tokens per page (default ${DEFAULT-VALUE}).")
    int pageTokens;

    @Option(names = "--threads", description = "Worker threads (default: available processors).")
    Integer threads;

    @Option(names = "--kernel", defaultValue = "auto", description = "auto, vector or scalar (default ${DEFAULT-VALUE}).")
    String kernel;

    @Option(names = "--iterations", defaultValue = "30",
            description = "Timed decode steps, spread over 5 rounds alternating with STREAM triad (default ${DEFAULT-VALUE}).")
    int iterations;

    @Option(names = "--no-numpy", description = "Skip the NumPy comparison.")
    boolean noNumpy;

    @Option(names = "--json", paramLabel = "FILE", converter = BenchReport.JsonFile.class,
            description = "Also write the figures as JSON.")
    Path json;

    @picocli.CommandLine.Spec
    picocli.CommandLine.Model.CommandSpec spec;

    /** Alternating attention/triad rounds. */
    private static final int ROUNDS = 5;

    @Override
    public Integer call() throws Exception {
        int workers = threads == null ? Runtime.getRuntime().availableProcessors() : threads;
        if (context < 1 || context > (1 << 24) || iterations < 1 || iterations > 100_000 || workers < 1
                || workers > 1024) {
            throw new Main.UsageException("--context must be in [1, 16777216], --iterations in [1, 100000] and "
                    + "--threads in [1, 1024].");
        }
        StorageType type;
        ModelShape shape;
        KvStoreConfig config;
        try {
            type = StorageType.parse(dtype);
            shape = new ModelShape(1, qHeads, kvHeads, headDim, 8, 2);
            int buckets = Math.min(1024, Integer.highestOneBit(Math.max(1, workers * 4))); // the store takes at most 1,024
            KvStoreConfig probe = KvStoreConfig.builder(shape).storageType(type).pageTokens(pageTokens).build();
            long pages = (context + pageTokens - 1L) / pageTokens + buckets + 1;
            long bytes = pages * probe.layout().pageBytes();
            long room = Math.max(0, io.pikv.kv.DirectMemory.limit() - (256L << 20));
            if (bytes > room) {
                throw new Main.UsageException("--context " + context + " needs " + (bytes >> 20) + " MiB of KV pages, "
                        + "more than the " + (room >> 20) + " MiB of direct memory this JVM may use; use a shorter "
                        + "context or raise the heap (PIKV_JAVA_OPTS=-Xmx…).");
            }
            if (!kernel.equals("auto")) {
                io.pikv.kv.compute.Kernels.select(probe.layout(), kernel); // refused here, before anything is built
            }
            config = KvStoreConfig.builder(shape).storageType(type).pageTokens(pageTokens).buckets(buckets)
                    .threads(workers).kernel(kernel).budgetBytes(bytes).build();
        } catch (IllegalArgumentException | IllegalStateException e) {
            throw new Main.UsageException(e.getMessage() + ".");
        }
        PrintWriter out = spec.commandLine().getOut();
        // NumPy gets the exact values the pages hold for fp16 and fp32; int8 pages hold quantized ones. Asked first:
        // its copy of K and V (as large as the cache) is written only for a NumPy that can run.
        String numpyUnavailable = noNumpy ? "skipped (--no-numpy)" : type == StorageType.INT8
                ? "skipped for int8 pages (NumPy would attend over other values than the quantized ones)"
                : NumpyAttention.unavailable();
        Path dir = null;
        if (numpyUnavailable == null) {
            dir = Files.createTempDirectory("pikv-attention");
            dir.toFile().deleteOnExit(); // with the files below: also on Ctrl-C, when the finally block does not run
        }
        try (KvStore store = new KvStore(config)) {
            long seq = store.createSequence();
            Filled filled = fill(store, seq, shape, type, dir);
            float[] q = filled.query();
            if (numpyUnavailable == null) {
                numpyUnavailable = filled.npyFailure();
            }
            long bytes = (long) context * kvHeads * headDim * 2 * type.bytes();
            if (type == StorageType.INT8) {
                // Each page's key scales (per channel) and the tokens' value scales are read too. Pages as the store
                // holds them: each bucket has a run of its own, so its last page is partly filled, and with many
                // buckets the pages are more than the context fills.
                long pages = store.bytesInUse() / config.layout().pageBytes();
                bytes += pages * Float.BYTES * kvHeads * headDim + (long) context * Float.BYTES * kvHeads;
            }

            // Warm up by time, not count: small contexts need many calls before the JIT compiles the kernel loops.
            AttentionResult result = null;
            long warmUntil = System.nanoTime() + 2_000_000_000L;
            for (int i = 0; i < 10 || System.nanoTime() < warmUntil; i++) {
                result = store.attend(seq, 0, q);
            }
            // The machine's memory bandwidth drifts with its neighbours' load, so attention and STREAM triad are
            // measured in alternating rounds and the ratio is taken per round; figures are the rounds' medians.
            int rounds = Math.max(1, Math.min(ROUNDS, iterations));
            double[] t = new double[iterations]; // every step asked for, the remainder spread over the first rounds
            int at = 0;
            double[] roundBest = new double[rounds];
            double[] roundTriad = new double[rounds];
            double[] roundRatio = new double[rounds];
            try (StreamTriad triadRun = new StreamTriad(1 << 24, workers)) {
                for (int r = 0; r < rounds; r++) {
                    roundTriad[r] = triadRun.bestGbps(4);
                    roundBest[r] = Double.MAX_VALUE;
                    int steps = iterations / rounds + (r < iterations % rounds ? 1 : 0);
                    for (int i = 0; i < steps; i++, at++) {
                        long t0 = System.nanoTime();
                        result = store.attend(seq, 0, q);
                        t[at] = (System.nanoTime() - t0) / 1e9;
                        roundBest[r] = Math.min(roundBest[r], t[at]);
                    }
                    roundRatio[r] = bytes / roundBest[r] / 1e9 / roundTriad[r];
                }
            }
            Arrays.sort(t);
            double best = median(roundBest);
            double median = median(t);
            double bestWeights = Double.MAX_VALUE;
            // The weights path (per-entry logits kept and exponentiated after the merge) warmed up as well: its code
            // runs for the first time here.
            long weightsWarm = System.nanoTime() + 1_000_000_000L;
            while (System.nanoTime() - weightsWarm < 0) {
                store.attend(seq, 0, q, io.pikv.kv.AttentionScope.all(), true);
            }
            for (int i = 0; i < Math.max(3, iterations / 3); i++) {
                long t0 = System.nanoTime();
                store.attend(seq, 0, q, io.pikv.kv.AttentionScope.all(), true);
                bestWeights = Math.min(bestWeights, (System.nanoTime() - t0) / 1e9);
            }
            double triad = median(roundTriad);
            double achieved = bytes / best / 1e9;

            NumpyAttention.Result np = numpyUnavailable != null
                    ? new NumpyAttention.Result(null, null, null, null, numpyUnavailable)
                    : NumpyAttention.run(dir, dir.resolve("k.npy"), dir.resolve("v.npy"), dir.resolve("q.npy"),
                    Math.min(iterations, 10), workers);

            BenchReport report = new BenchReport("attention: context " + context + ", " + qHeads + " q heads, "
                    + kvHeads + " kv heads, head dim " + headDim + ", " + type.name().toLowerCase() + ", kernel "
                    + store.kernel().name() + ", " + workers + " threads");
            report.put("context", context).put("q_heads", qHeads).put("kv_heads", kvHeads).put("head_dim", headDim)
                    .put("dtype", type.name().toLowerCase()).put("page_tokens", pageTokens)
                    .put("kernel", store.kernel().name()).put("threads", workers)
                    .put("kv_bytes", bytes)
                    .put("step_ms_best", BenchReport.round(best * 1e3, 4))
                    .put("step_ms_median", BenchReport.round(median * 1e3, 4))
                    .put("achieved_gbps", BenchReport.round(achieved, 4))
                    .put("achieved_gbps_with_weights", BenchReport.round(bytes / bestWeights / 1e9, 4))
                    .put("stream_triad_gbps", BenchReport.round(triad, 4))
                    .put("ratio_to_triad", BenchReport.round(median(roundRatio), 3))
                    .put("rounds", rounds)
                    .put("ratio_to_triad_min", BenchReport.round(Arrays.stream(roundRatio).min().orElse(0), 3))
                    .put("ratio_to_triad_max", BenchReport.round(Arrays.stream(roundRatio).max().orElse(0), 3));
            if (np.unavailable() == null) {
                double npGbps = bytes / np.bestSeconds() / 1e9;
                report.put("numpy_gbps", BenchReport.round(npGbps, 4))
                        .put("numpy_step_ms_best", BenchReport.round(np.bestSeconds() * 1e3, 4))
                        .put("speedup_vs_numpy", BenchReport.round(np.bestSeconds() / best, 3))
                        .put("numpy_version", np.version())
                        .put("numpy_max_rel_diff", BenchReport.round(Accuracy.relativeError(result.output(), np.output()), 3));
            } else {
                report.put("numpy_gbps", null).put("numpy_note", np.unavailable());
            }
            report.print(out);
            if (json != null) {
                report.writeJson(json);
            }
            return 0;
        } finally {
            if (dir != null) {
                DirTree.delete(dir); // a temp directory left behind is harmless
            }
        }
    }

    /** The query of a filled sequence, and why NumPy's copy of its K and V could not be written (null: written). */
    private record Filled(float[] query, String npyFailure) {
    }

    /** One generated token: its K and V, and its primary expert. */
    private interface TokenSink {
        void accept(float[] k, float[] v, int expert) throws IOException;
    }

    /** Generates the {@code context} random tokens (the same ones on every call) into {@code sink}; returns the query. */
    private float[] tokens(ModelShape shape, TokenSink sink) throws IOException {
        SplittableRandom rnd = new SplittableRandom(42);
        int width = shape.kvWidth();
        float[] k = new float[width];
        float[] v = new float[width];
        for (int t = 0; t < context; t++) {
            for (int i = 0; i < width; i++) {
                k[i] = (float) (rnd.nextDouble() * 2 - 1);
                v[i] = (float) (rnd.nextDouble() * 2 - 1);
            }
            sink.accept(k, v, rnd.nextInt(shape.experts()));
        }
        float[] q = new float[shape.queryWidth()];
        for (int i = 0; i < q.length; i++) {
            q[i] = (float) (rnd.nextDouble() * 4 - 2);
        }
        return q;
    }

    /**
     * Appends the random tokens to the sequence; with {@code dir}, writes them (and the query) there as .npy for
     * NumPy. A write that fails (a full disk) costs only the NumPy comparison: the files go, and the reason is said.
     */
    private Filled fill(KvStore store, long seq, ModelShape shape, StorageType type, Path dir) throws IOException {
        float[] q = tokens(shape, (k, v, expert) -> store.append(seq, 0, expert, k, v));
        if (dir == null) {
            return new Filled(q, null);
        }
        for (String name : new String[] {"q.npy", "numpy_out.npy", "numpy_attention.py", "numpy_log.txt", "v.npy",
                "k.npy"}) {
            dir.resolve(name).toFile().deleteOnExit(); // deleted in reverse order, before the directory
        }
        boolean half = type == StorageType.FP16;
        try {
            try (Npy.Writer kw = new Npy.Writer(dir.resolve("k.npy"), half, context, kvHeads, headDim);
                 Npy.Writer vw = new Npy.Writer(dir.resolve("v.npy"), half, context, kvHeads, headDim)) {
                tokens(shape, (k, v, expert) -> {
                    for (int i = 0; i < k.length; i++) {
                        kw.put(k[i], Fp16.fromFloat(k[i]));
                        vw.put(v[i], Fp16.fromFloat(v[i]));
                    }
                });
            }
            try (Npy.Writer qw = new Npy.Writer(dir.resolve("q.npy"), false, shape.qHeads(), shape.headDim())) {
                for (float x : q) {
                    qw.put(x, (short) 0);
                }
            }
            return new Filled(q, null);
        } catch (IOException e) {
            DirTree.delete(dir);
            return new Filled(q, "could not write NumPy's copy of K and V in " + dir + ": " + e.getMessage());
        }
    }

    private static double median(double[] values) {
        double[] v = values.clone();
        Arrays.sort(v);
        return v.length % 2 == 1 ? v[v.length / 2] : (v[v.length / 2 - 1] + v[v.length / 2]) / 2;
    }
}
