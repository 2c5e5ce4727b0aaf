package io.pikv.cli;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;

/**
 * Times NumPy on the same decode attention over the same K/V (written as .npy in the stored dtype): matmul for
 * the scores, softmax, matmul for the output, after widening 16-bit data to float32 (NumPy has no fast fp16
 * matmul; the widening is part of its cost, as staging is part of ours).
 */
final class NumpyAttention {
    private static final String SCRIPT = String.join("\n",
            "import sys, json, time",
            "import numpy as np",
            "K = np.load(sys.argv[1]); V = np.load(sys.argv[2]); q = np.load(sys.argv[3])",
            "out_file, iters = sys.argv[4], int(sys.argv[5])",
            "T, H, D = K.shape; QH = q.shape[0]; G = QH // H",
            "def attend():",
            "    Kf = K.astype(np.float32, copy=False); Vf = V.astype(np.float32, copy=False)",
            "    qg = (q / np.float32(np.sqrt(D))).reshape(H, G, D)",
            "    s = np.matmul(qg, Kf.transpose(1, 2, 0))",
            "    s -= s.max(axis=-1, keepdims=True)",
            "    p = np.exp(s); p /= p.sum(axis=-1, keepdims=True)",
            "    return np.matmul(p, Vf.transpose(1, 0, 2)).reshape(QH, D)",
            "o = attend(); o = attend()",
            "times = []",
            "for _ in range(iters):",
            "    t0 = time.perf_counter(); o = attend(); times.append(time.perf_counter() - t0)",
            "np.save(out_file, o.astype(np.float32))",
            "times.sort()",
            "print(json.dumps({'best_s': times[0], 'median_s': times[len(times) // 2], 'numpy': np.__version__}))",
            "");

    /** Result of the NumPy run, or the reason there is none. */
    record Result(Double bestSeconds, Double medianSeconds, String version, float[] output, String unavailable) {
    }

    private NumpyAttention() {
    }

    /**
     * Whether python3 with numpy can run here (asked before K and V are written for it, which can take gigabytes):
     * null when it can, else why not.
     */
    static String unavailable() {
        try {
            Process p = new ProcessBuilder("python3", "-c", "import numpy").redirectErrorStream(true).start();
            if (!ended(p, 60)) {
                return "python3 did not import numpy within 60 s";
            }
            String text = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8).strip();
            return p.exitValue() == 0 ? null
                    : "numpy not available: " + text.lines().reduce((a, b) -> b).orElseGet(() -> "exit " + p.exitValue());
        } catch (IOException e) {
            return "python3 not available: " + e.getMessage();
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            return "interrupted";
        }
    }

    /**
     * Waits up to {@code seconds} for {@code p}; ends it (with the JVM too: a Ctrl-C passed on by the launcher as TERM
     * ends this JVM without the caller's finally block, and the child, which ignores Ctrl-C, would run on).
     */
    private static boolean ended(Process p, long seconds) throws InterruptedException {
        Thread reaper = new Thread(p::destroyForcibly, "pikv-python-reaper");
        Runtime.getRuntime().addShutdownHook(reaper);
        boolean exited = false;
        try {
            exited = p.waitFor(seconds, TimeUnit.SECONDS);
            return exited;
        } finally {
            if (!exited) {
                p.destroyForcibly(); // on a timeout or an interrupt (once it exited, its output is still to be read)
            }
            Main.removeShutdownHook(reaper);
        }
    }

    static Result run(Path dir, Path k, Path v, Path q, int iterations, int threads) {
        try {
            Path script = dir.resolve("numpy_attention.py");
            Path out = dir.resolve("numpy_out.npy");
            Files.writeString(script, SCRIPT, StandardCharsets.UTF_8);
            ProcessBuilder pb = new ProcessBuilder(List.of("python3", script.toString(), k.toString(), v.toString(),
                    q.toString(), out.toString(), Integer.toString(iterations)));
            Map<String, String> env = pb.environment();
            // Same thread count as ours; OpenBLAS core-type pins slow a current NumPy, so drop them for this run.
            env.put("OPENBLAS_NUM_THREADS", Integer.toString(threads));
            env.put("OMP_NUM_THREADS", Integer.toString(threads));
            env.remove("OPENBLAS_CORETYPE");
            env.remove("OPENBLAS_L2_SIZE");
            Path log = dir.resolve("numpy_log.txt");
            pb.redirectErrorStream(true).redirectOutput(log.toFile());
            Process p = pb.start();
            if (!ended(p, TimeUnit.MINUTES.toSeconds(10))) {
                return new Result(null, null, null, null, "python3/numpy did not finish within 10 minutes");
            }
            String text = Files.readString(log, StandardCharsets.UTF_8).strip();
            if (p.exitValue() != 0) {
                String last = text.lines().reduce((a, b) -> b).orElseGet(() -> "exit " + p.exitValue());
                return new Result(null, null, null, null, "python3/numpy failed: " + last);
            }
            String[] lines = text.split("\n");
            JsonNode r = new ObjectMapper().readTree(lines[lines.length - 1]);
            return new Result(r.get("best_s").asDouble(), r.get("median_s").asDouble(), r.get("numpy").asText(),
                    Npy.readFloats(out), null);
        } catch (IOException e) {
            return new Result(null, null, null, null, "python3 not available: " + e.getMessage());
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            return new Result(null, null, null, null, "interrupted");
        }
    }
}
