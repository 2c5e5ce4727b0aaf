package io.pikv.kv.routing;

/**
 * Per-expert load and expert co-activation, accumulated over routed tokens: what {@link PlacementPlanner} plans from.
 *
 * <p>{@code load[e]} counts the tokens expert {@code e} served; {@code coActivation[a][b]} counts the tokens that
 * experts {@code a} and {@code b} both served (symmetric, zero diagonal). {@link #decay} scales everything, so a
 * caller can weigh recent windows more. Not thread-safe.
 */
public final class ExpertStatistics {
    private final double[] load;
    private final double[][] coActivation;
    private long tokens;

    public ExpertStatistics(int experts) {
        if (experts < 1) {
            throw new IllegalArgumentException("experts must be >= 1, got " + experts);
        }
        load = new double[experts];
        coActivation = new double[experts][experts];
    }

    public int experts() {
        return load.length;
    }

    /** Counts one token served by {@code experts} (distinct expert ids). */
    public void add(int[] experts) {
        if (experts == null) {
            throw new IllegalArgumentException("a token's experts are required");
        }
        for (int i = 0; i < experts.length; i++) {
            int a = experts[i];
            if (a < 0 || a >= load.length) {
                throw new IllegalArgumentException("expert " + a + " is outside [0, " + load.length + ")");
            }
            for (int j = 0; j < i; j++) {
                if (experts[j] == a) {
                    throw new IllegalArgumentException("expert " + a + " appears twice in one token");
                }
            }
        }
        for (int i = 0; i < experts.length; i++) {
            load[experts[i]] += 1;
            for (int j = 0; j < i; j++) {
                coActivation[experts[i]][experts[j]] += 1;
                coActivation[experts[j]][experts[i]] += 1;
            }
        }
        tokens++;
    }

    /** Multiplies every count by {@code factor} in [0, 1]. */
    public void decay(double factor) {
        if (!(factor >= 0 && factor <= 1)) {
            throw new IllegalArgumentException("decay factor must be in [0, 1], got " + factor);
        }
        for (int a = 0; a < load.length; a++) {
            load[a] *= factor;
            for (int b = 0; b < load.length; b++) {
                coActivation[a][b] *= factor;
            }
        }
    }

    /** Tokens added so far (not decayed). */
    public long tokens() {
        return tokens;
    }

    public double[] load() {
        return load.clone();
    }

    public double[][] coActivation() {
        double[][] copy = new double[load.length][];
        for (int a = 0; a < load.length; a++) {
            copy[a] = coActivation[a].clone();
        }
        return copy;
    }
}
