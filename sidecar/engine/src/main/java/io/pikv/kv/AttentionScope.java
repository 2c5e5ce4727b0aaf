package io.pikv.kv;

import java.util.BitSet;

/**
 * Which entries an attention call visits: all of them (exact, the default), or only the entries whose primary
 * expert is in a given set (PiKV's sparse expert-scoped mode, whose error is measured, never assumed).
 */
public final class AttentionScope {
    private static final AttentionScope ALL = new AttentionScope(null);

    private final BitSet experts;

    private AttentionScope(BitSet experts) {
        this.experts = experts;
    }

    /** Every resident entry. */
    public static AttentionScope all() {
        return ALL;
    }

    /** Entries whose primary expert is one of {@code ids}. */
    public static AttentionScope experts(int... ids) {
        if (ids == null) {
            throw new IllegalArgumentException("expert ids are missing");
        }
        BitSet set = new BitSet();
        for (int id : ids) {
            if (id < 0 || id >= ModelShape.MAX_EXPERTS) {
                throw new IllegalArgumentException("expert ids must be in [0, " + ModelShape.MAX_EXPERTS + "), got "
                        + id);
            }
            set.set(id);
        }
        return new AttentionScope(set);
    }

    public boolean isAll() {
        return experts == null;
    }

    /** Whether an entry with this primary expert is visited. */
    public boolean includes(int expert) {
        return experts == null || experts.get(expert);
    }

    /** Whether an entry is visited among those counted per primary expert in {@code perExpert} (a count above 0). */
    boolean anyIn(int[] perExpert) {
        if (experts == null) {
            for (int n : perExpert) {
                if (n > 0) {
                    return true;
                }
            }
            return false;
        }
        for (int e = experts.nextSetBit(0); e >= 0 && e < perExpert.length; e = experts.nextSetBit(e + 1)) {
            if (perExpert[e] > 0) {
                return true;
            }
        }
        return false;
    }

    /** Checks every named expert exists in a model with {@code count} experts. */
    void validate(int count) {
        if (experts != null && experts.length() > count) {
            throw new IllegalArgumentException("scope names expert " + (experts.length() - 1)
                    + " but the model has " + count + " experts (ids 0.." + (count - 1) + ")");
        }
    }

    @Override
    public String toString() {
        return experts == null ? "ALL" : "EXPERTS" + experts;
    }
}
