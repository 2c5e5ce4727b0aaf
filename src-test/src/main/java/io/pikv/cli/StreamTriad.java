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
final class StreamTriad implements AutoCloseable {
    private final double[] a;
    private final double[] b;
    private final double[] c;
    private final ExecutorService pool;
    private final List<int[]> chunks = new ArrayList<>();
    private boolean warm;

    /** Allocates and fills the three arrays ({@code elements} doubles each) for runs on {@code threads} threads. */
    StreamTriad(int elements, int threads) throws Exception {
        a = new double[elements];
        b = new double[elements];
        c = new double[elements];
        pool = Executors.newFixedThreadPool(threads);
        int step = (elements + threads - 1) / threads;
        for (int from = 0; from < elements; from += step) {
            chunks.add(new int[] {from, Math.min(elements, from + step)});
        }
        run((from, to) -> {
            for (int i = from; i < to; i++) {
                b[i] = 1.0 + i % 7;
                c[i] = 2.0 + i % 5;
            }
        });
    }

    /** Best bandwidth in GB/s (10^9 bytes) over {@code repeats} runs (the first call adds two untimed JIT runs). */
    double bestGbps(int repeats) throws Exception {
        double best = Double.MAX_VALUE;
        int untimed = warm ? 0 : 2;
        warm = true;
        for (int r = 0; r < repeats + untimed; r++) {
            long t0 = System.nanoTime();
            run((from, to) -> {
                for (int i = from; i < to; i++) {
                    a[i] = b[i] + 3.0 * c[i];
                }
            });
            double s = (System.nanoTime() - t0) / 1e9;
            if (r >= untimed) {
                best = Math.min(best, s);
            }
        }
        if (a[a.length / 2] == 0) {
            throw new IllegalStateException("triad produced nothing"); // keeps the stores observable
        }
        return 3.0 * 8 * a.length / best / 1e9;
    }

    @Override
    public void close() {
        pool.shutdownNow();
    }

    private interface Range {
        void run(int from, int to);
    }

    private void run(Range body) throws Exception {
        List<Future<?>> futures = new ArrayList<>();
        for (int[] ch : chunks) {
            futures.add(pool.submit(() -> body.run(ch[0], ch[1])));
        }
        for (Future<?> f : futures) {
            f.get();
        }
    }
}
