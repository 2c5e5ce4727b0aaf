package io.pikv.kv;

/**
 * The paper's in-shard placement key {@code s(t,e) = (t mod N_tok) xor (e mod N_exp)}.
 *
 * <p>Inside a shard, entries are spread over {@code buckets} (a power of two) by this key. Consecutive tokens of
 * one expert land in different buckets and so do tokens of different experts at one position, so every bucket
 * holds about the same share of a sequence; buckets are the unit of attention parallelism and each produces a
 * partial result that is merged exactly.
 */
public final class ShardKey {
    private ShardKey() {
    }

    /** {@code (t mod nTok) xor (e mod nExp)}. */
    public static int key(int token, int expert, int nTok, int nExp) {
        if (nTok < 1 || nExp < 1) {
            throw new IllegalArgumentException("N_tok and N_exp must be >= 1, got " + nTok + " and " + nExp);
        }
        return Math.floorMod(token, nTok) ^ Math.floorMod(expert, nExp);
    }

    /** The bucket of (token, expert) among {@code buckets} (a power of two): the key with {@code N_tok = N_exp = buckets}. */
    public static int bucket(int token, int expert, int buckets) {
        if (buckets < 1 || Integer.bitCount(buckets) != 1) {
            // The xor of two values below a power of two stays below it; below any other count it may not.
            throw new IllegalArgumentException("buckets must be a power of two, got " + buckets);
        }
        return key(token, expert, buckets, buckets);
    }
}
