package io.pikv.cli;

import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;

/**
 * STREAM triad {@code a[i] = b[i] + s·c[i]} over arrays far larger than the caches, on {@code threads} threads:
 * the memory bandwidth this process can reach, measured next to the benchmark it normalises. Bytes counted as
 * STREAM does: two reads and one write of 8 bytes per element.
 */
final class StreamTriad {
    private StreamTriad() {
    }

    /** Best bandwidth in GB/s (10^9 bytes) over {@code repeats} runs. */
    static double bestGbps(int elements, int threads, int repeats) throws Exception {
        double[] a = new double[elements];
        double[] b = new double[elements];
        double[] c = new double[elements];
        ExecutorService pool = Executors.newFixedThreadPool(threads);
        try {
            List<int[]> chunks = new ArrayList<>();
            int step = (elements + threads - 1) / threads;
            for (int from = 0; from < elements; from += step) {
                chunks.add(new int[] {from, Math.min(elements, from + step)});
            }
            run(pool, chunks, (from, to) -> {
                for (int i = from; i < to; i++) {
                    b[i] = 1.0 + i % 7;
                    c[i] = 2.0 + i % 5;
                }
            });
            double best = Double.MAX_VALUE;
            for (int r = 0; r < repeats + 2; r++) { // two untimed passes let the JIT compile the loop
                long t0 = System.nanoTime();
                run(pool, chunks, (from, to) -> {
                    for (int i = from; i < to; i++) {
                        a[i] = b[i] + 3.0 * c[i];
                    }
                });
                double s = (System.nanoTime() - t0) / 1e9;
                if (r >= 2) {
                    best = Math.min(best, s);
                }
            }
            if (a[elements / 2] == 0) {
                throw new IllegalStateException("triad produced nothing"); // keeps the stores observable
            }
            return 3.0 * 8 * elements / best / 1e9;
        } finally {
            pool.shutdownNow();
        }
    }

    private interface Range {
        void run(int from, int to);
    }

    private static void run(ExecutorService pool, List<int[]> chunks, Range body) throws Exception {
        List<Future<?>> futures = new ArrayList<>();
        for (int[] ch : chunks) {
            futures.add(pool.submit(() -> body.run(ch[0], ch[1])));
        }
        for (Future<?> f : futures) {
            f.get();
        }
    }
}
