package io.pikv.kv.scheduling;

/**
 * H2O, heavy-hitter oracle (Zhang et al., 2023): keeps a recent window and, outside it, the entries with the most
 * accumulated attention; evicts the one with the least. For prefix blocks every use adds one, so outside the window
 * it evicts the block used least often while resident (ties: the least recently used).
 */
public final class HeavyHitter extends RankedPolicy {

    /**
     * @param sinks  positions {@code 0..sinks-1} are kept (H2O itself has none: 0)
     * @param window entries used within this many clock ticks are kept
     */
    public HeavyHitter(int sinks, long window) {
        super(sinks, window);
    }

    @Override
    public String name() {
        return "h2o";
    }

    @Override
    protected double score(Entries entries, int id) {
        return entries.mass(id);
    }

    @Override
    public EvictionPolicy fresh() {
        return new HeavyHitter(sinks(), window());
    }
}
