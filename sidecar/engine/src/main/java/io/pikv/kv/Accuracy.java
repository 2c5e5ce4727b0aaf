package io.pikv.kv;

/**
 * The error measure PiKV reports for attention outputs: {@code max|actual − expected| / max|expected|} over the
 * whole output (relative to the output's scale, so near-zero elements do not blow it up).
 */
public final class Accuracy {
    private Accuracy() {
    }

    public static double relativeError(float[] actual, double[] expected) {
        if (actual.length != expected.length) {
            throw new IllegalArgumentException("outputs differ in length: " + actual.length + " vs " + expected.length);
        }
        double diff = 0;
        double norm = 0;
        for (int i = 0; i < expected.length; i++) {
            diff = Math.max(diff, Math.abs(actual[i] - expected[i]));
            norm = Math.max(norm, Math.abs(expected[i]));
        }
        return norm == 0 ? diff : diff / norm;
    }

    public static double relativeError(float[] actual, float[] expected) {
        double[] e = new double[expected.length];
        for (int i = 0; i < e.length; i++) {
            e[i] = expected[i];
        }
        return relativeError(actual, e);
    }
}
