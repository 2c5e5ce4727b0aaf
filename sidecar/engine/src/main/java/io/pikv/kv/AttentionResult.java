package io.pikv.kv;

/**
 * The output of one decode attention call: {@code softmax(q·Kᵀ/√d)·V} per query head, and optionally the weight
 * each visited entry received (per query head; they sum to one over the visited entries of a head).
 */
public final class AttentionResult {
    private final int qHeads;
    private final int headDim;
    private final float[] output;
    private final int visited;
    private final int[] positions;
    private final float[] weights;

    AttentionResult(int qHeads, int headDim, float[] output, int visited, int[] positions, float[] weights) {
        this.qHeads = qHeads;
        this.headDim = headDim;
        this.output = output;
        this.visited = visited;
        this.positions = positions;
        this.weights = weights;
    }

    /** Output, {@code [qHeads][headDim]} head-major. Zero for a head that visited no entry. */
    public float[] output() {
        return output.clone();
    }

    public float output(int head, int i) {
        return output[head * headDim + i];
    }

    public int qHeads() {
        return qHeads;
    }

    public int headDim() {
        return headDim;
    }

    /** Entries visited (in scope and resident). */
    public int visited() {
        return visited;
    }

    public boolean hasWeights() {
        return positions != null;
    }

    /** Positions of the visited entries, in the order {@link #weight(int, int)} indexes them. */
    public int[] positions() {
        requireWeights();
        return positions.clone();
    }

    /** Weight that query head {@code head} gave the {@code j}-th visited entry. */
    public float weight(int head, int j) {
        requireWeights();
        return weights[head * positions.length + j];
    }

    /** Mean weight over query heads of the {@code j}-th visited entry (what accumulated-attention policies use). */
    public float meanWeight(int j) {
        requireWeights();
        double sum = 0;
        for (int h = 0; h < qHeads; h++) {
            sum += weights[h * positions.length + j];
        }
        return (float) (sum / qHeads);
    }

    private void requireWeights() {
        if (positions == null) {
            throw new IllegalStateException("weights were not collected: attend with weights=true");
        }
    }
}
