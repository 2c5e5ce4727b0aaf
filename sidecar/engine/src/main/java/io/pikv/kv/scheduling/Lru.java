package io.pikv.kv.scheduling;

/** Least recently used: evicts the candidate whose last use is oldest (for tokens: the oldest generated). */
public final class Lru extends RankedPolicy {

    public Lru() {
        super(0, 0);
    }

    @Override
    public String name() {
        return "lru";
    }

    @Override
    protected double score(Entries entries, int id) {
        return entries.lastAccess(id);
    }

    @Override
    public EvictionPolicy fresh() {
        return new Lru();
    }
}
