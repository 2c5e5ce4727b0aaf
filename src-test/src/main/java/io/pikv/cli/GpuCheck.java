package io.pikv.cli;

import io.pikv.kv.Accuracy;
import io.pikv.kv.Fp16;
import io.pikv.kv.KvLayout;
import io.pikv.kv.ModelShape;
import io.pikv.kv.StorageType;
import io.pikv.kv.compression.Int8Codec;
import io.pikv.kv.compute.ComputeBackends;
import io.pikv.kv.compute.CudaBackend;
import io.pikv.kv.compute.CudaKvCache;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

import java.io.PrintWriter;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.concurrent.Callable;
import java.util.stream.IntStream;

/**
 * {@code ./pikv gpu-check}: proves the CUDA path on a machine with an NVIDIA GPU — device, correctness against the
 * CPU backend on several shapes (fp16 and int8 pages), and attention bandwidth against device-to-device copy
 * bandwidth measured in the same run, for the default launch and every launch variant, and for int8 pages. Without a
 * GPU (no driver library, or a driver that reports no device) it says why in one line and exits 0; with a GPU that
 * cannot be used (the driver fails to start, is too old for the PTX, the GPU is too old) it says why and exits 1.
 */
@Command(name = "gpu-check", mixinStandardHelpOptions = true,
        description = "Check the CUDA backend on this machine: correctness against the CPU backend and attention "
                + "bandwidth (K+V bytes read per second) against device-to-device copy bandwidth.")
public final class GpuCheck implements Callable<Integer> {
    /** Largest relative error accepted against the CPU backend and the double reference (measured: at most 2.2e-6). */
    static final double MAX_ERROR = 1e-4;

    private static final int[][] SHAPES = { // qHeads, kvHeads, headDim, tokens
        {32, 8, 128, 1000}, {16, 16, 128, 77}, {8, 2, 64, 513}, {4, 4, 256, 300}, {12, 4, 32, 65}, {6, 2, 128, 1}};

    @Option(names = "--contexts", split = ",", defaultValue = "32768,131072",
            description = "Context lengths for the bandwidth runs (default ${DEFAULT-VALUE}).")
    List<Integer> contexts;

    @Option(names = "--iterations", defaultValue = "30", description = "Timed launches per context (default ${DEFAULT-VALUE}).")
    int iterations;

    @Option(names = "--json", paramLabel = "FILE", converter = BenchReport.JsonFile.class,
            description = "Also write the figures as JSON.")
    Path json;

    @picocli.CommandLine.Spec
    picocli.CommandLine.Model.CommandSpec spec;

    /** Longest context checked: 4M tokens, 16 GiB of fp16 K+V at the check's shape (8 KV heads of dim 128). */
    static final int MAX_CONTEXT = 1 << 22;

    @Override
    public Integer call() {
        PrintWriter out = spec.commandLine().getOut();
        BenchReport.notEmpty(contexts, "--contexts");
        BenchReport.distinct(contexts, "--contexts", "the context");
        for (int c : contexts) {
            if (c < 1 || c > MAX_CONTEXT) {
                throw new Main.UsageException("--contexts values must be token counts in [1, " + MAX_CONTEXT
                        + "], got " + c + ".");
            }
        }
        if (iterations < 1 || iterations > 100_000) {
            throw new Main.UsageException("--iterations must be in [1, 100000], got " + iterations + ".");
        }
        ComputeBackends.Probe probe = ComputeBackends.probe();
        if (!probe.available()) {
            if (json != null) {
                new BenchReport("gpu-check").put("gpu", false).put("device_found", probe.deviceFound())
                        .put("reason", probe.reason()).writeJson(json);
            }
            if (probe.deviceFound()) {
                // A GPU is there and cannot be used (a driver too old for the PTX, say): that is a failed check,
                // not a machine without one.
                spec.commandLine().getErr().println("pikv: gpu-check: a CUDA device is present but cannot be used: "
                        + probe.reason() + ".");
                return 1;
            }
            out.println("gpu-check: no CUDA device (" + probe.reason() + "); nothing to check.");
            return 0;
        }
        CudaBackend cuda = probe.backend();
        BenchReport report = new BenchReport("gpu-check: " + cuda.deviceName() + " (compute " + cuda.computeCapability()
                + ", " + cuda.multiprocessors() + " SMs, PTX " + cuda.ptxTarget() + ")");
        report.put("gpu", true).put("device", cuda.deviceName()).put("compute_capability", cuda.computeCapability())
                .put("multiprocessors", cuda.multiprocessors())
                .put("memory_gib", BenchReport.round(cuda.totalMemory() / (double) (1L << 30), 4))
                .put("ptx_target", cuda.ptxTarget())
                .put("date", java.time.LocalDate.now().toString());

        boolean allOk = true;
        List<Map<String, Object>> correctness = new ArrayList<>();
        for (StorageType type : new StorageType[] {StorageType.FP16, StorageType.INT8}) {
        for (int[] s : SHAPES) {
            Map<String, Object> row = new LinkedHashMap<>();
            row.put("type", type.name().toLowerCase(java.util.Locale.ROOT));
            row.put("shape", "q" + s[0] + " kv" + s[1] + " d" + s[2]);
            row.put("tokens", s[3]);
            boolean ok;
            try {
                double err = CudaKvCache.errorAgainstCpu(cuda, new ModelShape(1, s[0], s[1], s[2], 8, 2), type, s[3],
                        s[3] * 31L + s[2]);
                ok = err <= MAX_ERROR;
                row.put("rel_error_vs_cpu", BenchReport.round(err, 3));
            } catch (RuntimeException e) {
                ok = false;
                row.put("rel_error_vs_cpu", null);
                row.put("error", String.valueOf(e.getMessage()));
            }
            row.put("ok", ok);
            allOk &= ok;
            correctness.add(row);
        }
        }
        report.put("correctness", correctness);

        double copy = Double.NaN;
        try {
            copy = CudaKvCache.copyBandwidthGbps(cuda, 1L << 30, 10);
        } catch (RuntimeException e) {
            // Too little free device memory for the 1 GiB copy, or a device error: the rows measured stay reported.
            allOk = false;
            report.put("copy_error", String.valueOf(e.getMessage()));
        }
        report.put("copy_gbps", Double.isNaN(copy) ? null : BenchReport.round(copy, 4));
        CudaKvCache.Launch standard = CudaKvCache.Launch.fromSystemProperties();
        report.put("launch", standard.toString());
        List<Map<String, Object>> bandwidth = new ArrayList<>();
        List<Map<String, Object>> variants = new ArrayList<>();
        List<Map<String, Object>> int8 = new ArrayList<>();
        for (int context : contexts) {
            Map<String, Object> row = bandwidthRow(cuda, context, copy, StorageType.FP16, standard);
            allOk &= (Boolean) row.get("ok");
            bandwidth.add(row);
            for (boolean graph : new boolean[] {false, true}) {
                CudaKvCache.Launch launch = new CudaKvCache.Launch(graph);
                if (!launch.equals(standard)) {
                    Map<String, Object> v = bandwidthRow(cuda, context, copy, StorageType.FP16, launch);
                    allOk &= (Boolean) v.get("ok");
                    variants.add(v);
                }
                Map<String, Object> i8 = bandwidthRow(cuda, context, copy, StorageType.INT8, launch);
                allOk &= (Boolean) i8.get("ok");
                int8.add(i8);
            }
        }
        report.put("bandwidth", bandwidth);
        report.put("launch_variants", variants);
        report.put("int8_bandwidth", int8);
        report.put("all_ok", allOk);
        report.print(out);
        if (json != null) {
            report.writeJson(json);
        }
        return allOk ? 0 : 1;
    }

    private Map<String, Object> bandwidthRow(CudaBackend cuda, int context, double copyGbps, StorageType type,
                                             CudaKvCache.Launch launch) {
        try {
            return bandwidth(cuda, context, copyGbps, type, launch);
        } catch (RuntimeException e) {
            Map<String, Object> row = new LinkedHashMap<>();
            row.put("context", context);
            row.put("type", type.name().toLowerCase(java.util.Locale.ROOT));
            row.put("launch", launch.toString());
            row.put("error", String.valueOf(e.getMessage()));
            row.put("ok", false);
            return row;
        }
    }

    /**
     * Attention over {@code context} tokens (q32 kv8 d128) from uploaded pages of {@code type}: time, bandwidth,
     * error. Bandwidth is the bytes the kernel reads (K and V, plus the scales of int8 pages) over the mean time of
     * steps enqueued back to back; the single-step figures (each step timed alone, host launch gap included) are
     * reported beside it.
     */
    private Map<String, Object> bandwidth(CudaBackend cuda, int context, double copyGbps, StorageType type,
                                          CudaKvCache.Launch launch) {
        ModelShape shape = new ModelShape(1, 32, 8, 128, 8, 2);
        KvLayout layout = new KvLayout(8, 128, CudaKvCache.PAGE_TOKENS, type);
        int pages = (context + CudaKvCache.PAGE_TOKENS - 1) / CudaKvCache.PAGE_TOKENS;
        Random rnd = new Random(context);
        ByteBuffer[] distinct = new ByteBuffer[Math.min(pages, 64)];
        for (int i = 0; i < distinct.length; i++) {
            distinct[i] = ByteBuffer.allocateDirect(layout.pageBytes()).order(ByteOrder.LITTLE_ENDIAN);
            if (type == StorageType.FP16) {
                for (int e = 0; e < layout.pageBytes() / 2; e++) {
                    distinct[i].putShort(e * 2, Fp16.fromFloat((float) rnd.nextGaussian()));
                }
            } else {
                for (int t = 0; t < CudaKvCache.PAGE_TOKENS; t++) {
                    Int8Codec.writeEntry(distinct[i], layout, t, t, gaussian(shape.kvWidth(), rnd, 1), 0,
                            gaussian(shape.kvWidth(), rnd, 1), 0);
                }
            }
        }
        int lastCount = context - (pages - 1) * CudaKvCache.PAGE_TOKENS;
        try (CudaKvCache gpu = new CudaKvCache(cuda, shape, type, (long) pages * layout.pageBytes())) {
            long seq = gpu.createSequence();
            for (int p = 0; p < pages; p++) {
                gpu.uploadPage(seq, 0, distinct[p % distinct.length].duplicate(),
                        p == pages - 1 ? lastCount : CudaKvCache.PAGE_TOKENS);
            }
            float[] q = gaussian(shape.queryWidth(), rnd, 1);
            Map<String, Object> row = new LinkedHashMap<>();
            try (CudaKvCache.Plan plan = gpu.plan(seq, 0, launch)) {
                float[] output = plan.run(q).finish().output();
                double err = Accuracy.relativeError(output, reference(shape, layout, distinct, pages, lastCount, q));
                double[] ms = plan.time(q, iterations);
                long bytes = (long) context * shape.kvHeads() * shape.headDim() * 2 * type.bytes();
                if (type == StorageType.INT8) {
                    bytes += (long) pages * (layout.pageBytes() - 2L * layout.regionElements()); // scales
                }
                double gbps = bytes / (ms[2] / 1e3) / 1e9;
                row.put("context", context);
                row.put("type", type.name().toLowerCase(java.util.Locale.ROOT));
                row.put("launch", launch.toString());
                row.put("splits", plan.splits());
                row.put("step_ms", BenchReport.round(ms[2], 4));
                row.put("single_step_ms_best", BenchReport.round(ms[0], 4));
                row.put("single_step_ms_median", BenchReport.round(ms[1], 4));
                row.put("single_step_gbps", BenchReport.round(bytes / (ms[0] / 1e3) / 1e9, 4));
                row.put("attention_gbps", BenchReport.round(gbps, 4));
                row.put("copy_gbps", BenchReport.round(copyGbps, 4));
                row.put("ratio_to_copy", BenchReport.round(gbps / copyGbps, 3));
                row.put("rel_error", BenchReport.round(err, 3));
                row.put("ok", err <= MAX_ERROR);
            }
            return row;
        }
    }

    /** Double-precision attention over the uploaded pages, read back through the page format. */
    private static float[] reference(ModelShape shape, KvLayout layout, ByteBuffer[] distinct, int pages,
                                     int lastCount, float[] q) {
        int d = shape.headDim();
        int g = shape.groupSize();
        double scale = 1.0 / Math.sqrt(d);
        float[] out = new float[shape.queryWidth()];
        IntStream.range(0, shape.qHeads()).parallel().forEach(qh -> {
            int h = qh / g;
            int tokens = (pages - 1) * CudaKvCache.PAGE_TOKENS + lastCount;
            double[] logits = new double[tokens];
            double max = Double.NEGATIVE_INFINITY;
            for (int t = 0; t < tokens; t++) {
                ByteBuffer page = distinct[(t / CudaKvCache.PAGE_TOKENS) % distinct.length];
                int slot = t % CudaKvCache.PAGE_TOKENS;
                double dot = 0;
                for (int i = 0; i < d; i++) {
                    dot += (double) q[qh * d + i] * element(page, layout, layout.keyIndex(h, i, slot));
                }
                logits[t] = dot * scale;
                max = Math.max(max, logits[t]);
            }
            double sum = 0;
            double[] o = new double[d];
            for (int t = 0; t < tokens; t++) {
                ByteBuffer page = distinct[(t / CudaKvCache.PAGE_TOKENS) % distinct.length];
                int slot = t % CudaKvCache.PAGE_TOKENS;
                double w = Math.exp(logits[t] - max);
                sum += w;
                for (int i = 0; i < d; i++) {
                    o[i] += w * element(page, layout, layout.valueIndex(h, slot, i));
                }
            }
            for (int i = 0; i < d; i++) {
                out[qh * d + i] = (float) (o[i] / sum);
            }
        });
        return out;
    }

    private static float element(ByteBuffer page, KvLayout layout, int element) {
        return layout.type() == StorageType.INT8 ? Int8Codec.get(page, layout, element) : half(page, element);
    }

    private static float half(ByteBuffer page, int element) {
        return Fp16.toFloat(page.getShort(2 * KvLayout.halfSlot(element)));
    }

    private static float[] gaussian(int n, Random rnd, float sigma) {
        float[] x = new float[n];
        for (int i = 0; i < n; i++) {
            x[i] = (float) (rnd.nextGaussian() * sigma);
        }
        return x;
    }
}
