package io.pikv.kv.scheduling;

/**
 * PiKV's query-aware utility: {@code u_i = α_attn·φ_attn(i) + α_rec·φ_rec(i) + α_freq·φ_freq(i)}, evicting the
 * lowest. Features: {@code φ_attn} = accumulated attention mass, {@code φ_freq} = uses while resident, and
 * {@code φ_rec = −age/τ} with {@code age = now − lastAccess}. The recency term is linear so that the common
 * {@code −now/τ} cancels out of every comparison: ranking uses {@code lastAccess/τ} and never has to be redone as
 * the clock moves.
 */
public final class Utility extends RankedPolicy {
    private final double attention;
    private final double recency;
    private final double frequency;
    private final double recencyScale;
    /** α_rec/τ, bounded: the score multiplies the clock by it (dividing the clock by a tiny τ first could overflow). */
    private final double recencyPerTick;
    /** Largest magnitude of a weight, and of the recency weight over its scale. */
    public static final double MAX_WEIGHT = 1e12;

    /**
     * @param attention    α_attn
     * @param recency      α_rec
     * @param frequency    α_freq
     * @param recencyScale τ in clock ticks: an entry this much older scores α_rec lower
     */
    public Utility(double attention, double recency, double frequency, double recencyScale) {
        super(0, 0);
        if (!(recencyScale > 0) || !Double.isFinite(attention) || !Double.isFinite(recency)
                || !Double.isFinite(frequency)) {
            throw new IllegalArgumentException("utility weights must be finite and the recency scale positive");
        }
        // Only the weights' ratios matter; bounding them keeps every score finite (a score of ±∞, or ∞ − ∞ = NaN,
        // would break the ranking's order), whatever the clock, the mass or the use count reach.
        if (Math.abs(attention) > MAX_WEIGHT || Math.abs(recency) > MAX_WEIGHT || Math.abs(frequency) > MAX_WEIGHT
                || Math.abs(recency / recencyScale) > MAX_WEIGHT) {
            throw new IllegalArgumentException("utility weights (and the recency weight over its scale) must be "
                    + "within ±" + MAX_WEIGHT + ", got attention " + attention + ", recency " + recency + " / scale "
                    + recencyScale + ", frequency " + frequency + "; only their ratios matter");
        }
        this.attention = attention;
        this.recency = recency;
        this.frequency = frequency;
        this.recencyScale = recencyScale;
        this.recencyPerTick = recency / recencyScale;
    }

    @Override
    public String name() {
        return "utility";
    }

    @Override
    protected double score(Entries entries, int id) {
        return attention * entries.mass(id) + frequency * entries.accesses(id)
                + recencyPerTick * entries.lastAccess(id);
    }

    @Override
    public EvictionPolicy fresh() {
        return new Utility(attention, recency, frequency, recencyScale);
    }
}
