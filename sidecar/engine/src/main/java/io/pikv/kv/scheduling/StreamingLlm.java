package io.pikv.kv.scheduling;

/**
 * StreamingLLM (Xiao et al., 2023): keeps the attention sinks (the first {@code sinks} positions) and a recent
 * window, and evicts the least recently used of the rest. For tokens that is the oldest token after the sinks; for
 * prefix blocks it is LRU that never evicts the first {@code sinks} blocks of a prompt while anything else can go.
 */
public final class StreamingLlm extends RankedPolicy {

    /**
     * @param sinks  positions {@code 0..sinks-1} are kept
     * @param window entries used within this many clock ticks are kept
     */
    public StreamingLlm(int sinks, long window) {
        super(sinks, window);
    }

    @Override
    public String name() {
        return "streaming";
    }

    @Override
    protected double score(Entries entries, int id) {
        return entries.lastAccess(id);
    }

    @Override
    public EvictionPolicy fresh() {
        return new StreamingLlm(sinks(), window());
    }
}
