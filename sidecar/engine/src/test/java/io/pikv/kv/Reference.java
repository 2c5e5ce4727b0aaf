package io.pikv.kv;

import java.util.ArrayList;
import java.util.List;
import java.util.Random;

/** Double-precision decode attention over a list of entries: the yardstick the engine is held to. */
final class Reference {
    record Entry(int position, int expert, float[] k, float[] v) {
    }

    private Reference() {
    }

    /** {@code softmax(q·Kᵀ/√d)·V} per query head, in double, over {@code entries}. */
    static double[] attend(ModelShape shape, float[] q, List<Entry> entries) {
        int d = shape.headDim();
        int g = shape.groupSize();
        double[] out = new double[shape.queryWidth()];
        for (int qh = 0; qh < shape.qHeads(); qh++) {
            double[] logits = logits(shape, q, entries, qh);
            double max = Double.NEGATIVE_INFINITY;
            for (double s : logits) {
                max = Math.max(max, s);
            }
            double sum = 0;
            for (double s : logits) {
                sum += Math.exp(s - max);
            }
            int h = qh / g;
            for (int j = 0; j < entries.size(); j++) {
                double w = Math.exp(logits[j] - max) / sum;
                for (int i = 0; i < d; i++) {
                    out[qh * d + i] += w * entries.get(j).v()[h * d + i];
                }
            }
        }
        return out;
    }

    /** Softmax weights of query head {@code qh} over {@code entries}. */
    static double[] weights(ModelShape shape, float[] q, List<Entry> entries, int qh) {
        double[] logits = logits(shape, q, entries, qh);
        double max = Double.NEGATIVE_INFINITY;
        for (double s : logits) {
            max = Math.max(max, s);
        }
        double sum = 0;
        for (double s : logits) {
            sum += Math.exp(s - max);
        }
        double[] w = new double[logits.length];
        for (int j = 0; j < w.length; j++) {
            w[j] = Math.exp(logits[j] - max) / sum;
        }
        return w;
    }

    private static double[] logits(ModelShape shape, float[] q, List<Entry> entries, int qh) {
        int d = shape.headDim();
        int h = qh / shape.groupSize();
        double scale = 1.0 / Math.sqrt(d);
        double[] logits = new double[entries.size()];
        for (int j = 0; j < entries.size(); j++) {
            double dot = 0;
            for (int i = 0; i < d; i++) {
                dot += (double) q[qh * d + i] * entries.get(j).k()[h * d + i];
            }
            logits[j] = dot * scale;
        }
        return logits;
    }

    static double relativeError(float[] actual, double[] expected) {
        return Accuracy.relativeError(actual, expected);
    }

    static double relativeError(float[] actual, float[] expected) {
        return Accuracy.relativeError(actual, expected);
    }

    /** Random entries with N(0, σ²) keys and values; a few "sink" keys get larger norms for peaky attention. */
    static List<Entry> randomEntries(ModelShape shape, int n, Random rnd) {
        List<Entry> out = new ArrayList<>(n);
        for (int t = 0; t < n; t++) {
            float[] k = gaussian(shape.kvWidth(), rnd, t % 17 == 0 ? 3f : 1f);
            float[] v = gaussian(shape.kvWidth(), rnd, 1f);
            out.add(new Entry(t, rnd.nextInt(shape.experts()), k, v));
        }
        return out;
    }

    /** The entries with K and V rounded to fp16, as an fp16 page stores them. */
    static List<Entry> roundedToFp16(List<Entry> entries) {
        List<Entry> out = new ArrayList<>(entries.size());
        for (Entry e : entries) {
            out.add(new Entry(e.position(), e.expert(), round(e.k()), round(e.v())));
        }
        return out;
    }

    private static float[] round(float[] x) {
        float[] y = new float[x.length];
        for (int i = 0; i < x.length; i++) {
            y[i] = Fp16.toFloat(Fp16.fromFloat(x[i]));
        }
        return y;
    }

    static float[] gaussian(int n, Random rnd, float sigma) {
        float[] x = new float[n];
        for (int i = 0; i < n; i++) {
            x[i] = (float) (rnd.nextGaussian() * sigma);
        }
        return x;
    }

    /** Appends every entry to (sequence, layer) of the store, checking positions come out in order. */
    static void load(KvStore store, long seq, int layer, List<Entry> entries) {
        for (Entry e : entries) {
            int pos = store.append(seq, layer, e.expert(), e.k(), e.v());
            if (pos != e.position()) {
                throw new AssertionError("position " + pos + " != " + e.position());
            }
        }
    }
}
