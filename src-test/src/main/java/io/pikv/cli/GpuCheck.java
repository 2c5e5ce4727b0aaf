package io.pikv.cli;

import io.pikv.kv.Accuracy;
import io.pikv.kv.Fp16;
import io.pikv.kv.KvLayout;
import io.pikv.kv.ModelShape;
import io.pikv.kv.StorageType;
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
 * CPU backend on several shapes, and attention bandwidth against device-to-device copy bandwidth measured in the
 * same run. Without a usable GPU it says why in one line and exits 0.
 */
@Command(name = "gpu-check", mixinStandardHelpOptions = true,
        description = "Check the CUDA backend on this machine: correctness against the CPU backend and attention "
                + "bandwidth (K+V bytes read per second) against device-to-device copy bandwidth.")
public final class GpuCheck implements Callable<Integer> {
    private static final int[][] SHAPES = { // qHeads, kvHeads, headDim, tokens
        {32, 8, 128, 1000}, {16, 16, 128, 77}, {8, 2, 64, 513}, {4, 4, 256, 300}, {12, 4, 32, 65}, {6, 2, 128, 1}};

    @Option(names = "--contexts", split = ",", defaultValue = "32768,131072",
            description = "Context lengths for the bandwidth runs (default ${DEFAULT-VALUE}).")
    List<Integer> contexts;

    @Option(names = "--iterations", defaultValue = "30", description = "Timed launches per context (default ${DEFAULT-VALUE}).")
    int iterations;

    @Option(names = "--json", paramLabel = "FILE", description = "Also write the figures as JSON.")
    Path json;

    @picocli.CommandLine.Spec
    picocli.CommandLine.Model.CommandSpec spec;

    @Override
    public Integer call() {
        PrintWriter out = spec.commandLine().getOut();
        for (int c : contexts) {
            if (c < 1) {
                throw new Main.UsageException("--contexts values must be positive token counts, got " + c + ".");
            }
        }
        if (iterations < 1) {
            throw new Main.UsageException("--iterations must be positive.");
        }
        ComputeBackends.Probe probe = ComputeBackends.probe();
        if (!probe.available()) {
            out.println("gpu-check: no usable CUDA device (" + probe.reason() + "); nothing to check.");
            if (json != null) {
                new BenchReport("gpu-check").put("gpu", false).put("reason", probe.reason()).writeJson(json);
            }
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
        for (int[] s : SHAPES) {
            Map<String, Object> row = new LinkedHashMap<>();
            row.put("shape", "q" + s[0] + " kv" + s[1] + " d" + s[2]);
            row.put("tokens", s[3]);
            boolean ok;
            try {
                double err = CudaKvCache.errorAgainstCpu(cuda, new ModelShape(1, s[0], s[1], s[2], 8, 2), s[3],
                        s[3] * 31L + s[2]);
                ok = err <= 2e-3;
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
        report.put("correctness", correctness);

        double copy = CudaKvCache.copyBandwidthGbps(cuda, 1L << 30, 10);
        report.put("copy_gbps", BenchReport.round(copy, 4));
        List<Map<String, Object>> bandwidth = new ArrayList<>();
        for (int context : contexts) {
            Map<String, Object> row;
            try {
                row = bandwidth(cuda, context, copy);
            } catch (RuntimeException e) {
                row = new LinkedHashMap<>();
                row.put("context", context);
                row.put("error", String.valueOf(e.getMessage()));
                row.put("ok", false);
            }
            allOk &= (Boolean) row.get("ok");
            bandwidth.add(row);
        }
        report.put("bandwidth", bandwidth);
        report.put("all_ok", allOk);
        report.print(out);
        if (json != null) {
            report.writeJson(json);
        }
        return allOk ? 0 : 1;
    }

    /**
     * Attention over {@code context} tokens (q32 kv8 d128, fp16) from uploaded pages: time, bandwidth, error.
     * Bandwidth is K+V bytes over the mean time of steps enqueued back to back; the single-step figures (each
     * step timed alone, host launch gap included) are reported beside it.
     */
    private Map<String, Object> bandwidth(CudaBackend cuda, int context, double copyGbps) {
        ModelShape shape = new ModelShape(1, 32, 8, 128, 8, 2);
        KvLayout layout = new KvLayout(8, 128, CudaKvCache.PAGE_TOKENS, StorageType.FP16);
        int pages = (context + CudaKvCache.PAGE_TOKENS - 1) / CudaKvCache.PAGE_TOKENS;
        Random rnd = new Random(context);
        ByteBuffer[] distinct = new ByteBuffer[Math.min(pages, 64)];
        for (int i = 0; i < distinct.length; i++) {
            distinct[i] = ByteBuffer.allocateDirect(layout.pageBytes()).order(ByteOrder.LITTLE_ENDIAN);
            for (int e = 0; e < layout.pageBytes() / 2; e++) {
                distinct[i].putShort(e * 2, Fp16.fromFloat((float) rnd.nextGaussian()));
            }
        }
        int lastCount = context - (pages - 1) * CudaKvCache.PAGE_TOKENS;
        try (CudaKvCache gpu = new CudaKvCache(cuda, shape, (long) pages * layout.pageBytes())) {
            long seq = gpu.createSequence();
            for (int p = 0; p < pages; p++) {
                gpu.uploadPage(seq, 0, distinct[p % distinct.length].duplicate(),
                        p == pages - 1 ? lastCount : CudaKvCache.PAGE_TOKENS);
            }
            float[] q = gaussian(shape.queryWidth(), rnd, 1);
            Map<String, Object> row = new LinkedHashMap<>();
            try (CudaKvCache.Plan plan = gpu.plan(seq, 0)) {
                float[] output = plan.run(q).finish().output();
                double err = Accuracy.relativeError(output, reference(shape, layout, distinct, pages, lastCount, q));
                double[] ms = plan.time(q, iterations);
                long bytes = (long) context * shape.kvHeads() * shape.headDim() * 2 * 2;
                double gbps = bytes / (ms[2] / 1e3) / 1e9;
                row.put("context", context);
                row.put("splits", plan.splits());
                row.put("step_ms", BenchReport.round(ms[2], 4));
                row.put("single_step_ms_best", BenchReport.round(ms[0], 4));
                row.put("single_step_ms_median", BenchReport.round(ms[1], 4));
                row.put("single_step_gbps", BenchReport.round(bytes / (ms[0] / 1e3) / 1e9, 4));
                row.put("attention_gbps", BenchReport.round(gbps, 4));
                row.put("copy_gbps", BenchReport.round(copyGbps, 4));
                row.put("ratio_to_copy", BenchReport.round(gbps / copyGbps, 3));
                row.put("rel_error", BenchReport.round(err, 3));
                row.put("ok", err <= 2e-3);
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
                    dot += q[qh * d + i] * half(page, layout.keyIndex(h, i, slot));
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
                    o[i] += w * half(page, layout.valueIndex(h, slot, i));
                }
            }
            for (int i = 0; i < d; i++) {
                out[qh * d + i] = (float) (o[i] / sum);
            }
        });
        return out;
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
