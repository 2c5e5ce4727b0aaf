package io.pikv.kv;

import io.pikv.kv.compression.LowRankBases;

/**
 * Settings of an in-process {@link KvStore}. Build with {@link #builder(ModelShape)}; every value is checked
 * when built.
 *
 * @param budgetBytes total hard byte budget, split evenly over the shards
 * @param buckets     in-shard buckets per shard (a power of two): the unit of attention parallelism
 * @param kernel      {@code auto}, {@code vector} or {@code scalar}
 * @param threads     attention worker threads (1 = run on the caller's thread)
 * @param lowRank     fitted bases when pages store low-rank coefficients (in {@code storageType}) instead of the
 *                    entries, else null
 */
public record KvStoreConfig(ModelShape shape, StorageType storageType, int pageTokens, int shards, int buckets,
                            long budgetBytes, EvictionHook eviction, String kernel, int threads,
                            LowRankBases lowRank) {

    public KvStoreConfig {
        if (shape == null || storageType == null || eviction == null || kernel == null) {
            throw new IllegalArgumentException("shape, storageType, eviction and kernel are required");
        }
        if (!kernel.equals("auto") && !kernel.equals("vector") && !kernel.equals("scalar")) {
            throw new IllegalArgumentException("kernel must be auto, vector or scalar, got '" + kernel + "'");
        }
        if (lowRank != null && kernel.equals("vector")) {
            // Low-rank pages attend through their own kernel (coefficients, not entries): vector cannot be honoured.
            throw new IllegalArgumentException("kernel vector cannot serve low-rank pages, which attend through the "
                    + "low-rank kernel; use auto or scalar");
        }
        if (shards < 1 || shards > 4096) {
            throw new IllegalArgumentException("shards must be in [1, 4096], got " + shards);
        }
        if (buckets < 1 || buckets > 1024 || Integer.bitCount(buckets) != 1) {
            throw new IllegalArgumentException("buckets must be a power of two in [1, 1024], got " + buckets);
        }
        if (threads < 1 || threads > 1024) {
            throw new IllegalArgumentException("threads must be in [1, 1024], got " + threads);
        }
        if (lowRank != null && (lowRank.layers() != shape.layers() || lowRank.kvHeads() != shape.kvHeads()
                || lowRank.headDim() != shape.headDim() || lowRank.experts() != shape.experts())) {
            throw new IllegalArgumentException("low-rank bases fitted for " + lowRank.layers() + " layers, "
                    + lowRank.kvHeads() + " kv heads of dim " + lowRank.headDim() + " and " + lowRank.experts()
                    + " experts do not match " + shape);
        }
        KvLayout layout = layout(shape, pageTokens, storageType, lowRank);
        if (budgetBytes / shards < layout.pageBytes()) {
            throw new IllegalArgumentException("budget of " + budgetBytes + " bytes gives each of the " + shards
                    + " shards less than one page of " + layout.pageBytes() + " bytes");
        }
        if (budgetBytes / shards / layout.pageBytes() > layout.maxPages()) {
            throw new IllegalArgumentException("budget of " + budgetBytes + " bytes gives each of the " + shards
                    + " shards more than the " + layout.maxPages() + " pages of " + layout.pageBytes()
                    + " bytes one shard can address: lower the budget, use more shards, or larger pages");
        }
    }

    /** Settings of a plain (not low-rank) store. */
    public KvStoreConfig(ModelShape shape, StorageType storageType, int pageTokens, int shards, int buckets,
                         long budgetBytes, EvictionHook eviction, String kernel, int threads) {
        this(shape, storageType, pageTokens, shards, buckets, budgetBytes, eviction, kernel, threads, null);
    }

    /** The page layout these settings give. */
    public KvLayout layout() {
        return layout(shape, pageTokens, storageType, lowRank);
    }

    private static KvLayout layout(ModelShape shape, int pageTokens, StorageType type, LowRankBases lowRank) {
        return lowRank == null ? new KvLayout(shape.kvHeads(), shape.headDim(), pageTokens, type)
                : new KvLayout(shape.kvHeads(), shape.headDim(), pageTokens, type, lowRank.keyRank(),
                lowRank.valueRank());
    }

    public static Builder builder(ModelShape shape) {
        return new Builder(shape);
    }

    /** Defaults: fp16, 32-token pages, 1 shard, 8 buckets, 1 GiB, oldest-page-first, auto kernel, all cores. */
    public static final class Builder {
        private final ModelShape shape;
        private StorageType storageType = StorageType.FP16;
        private int pageTokens = 32;
        private int shards = 1;
        private int buckets = 8;
        private long budgetBytes = 1L << 30;
        private EvictionHook eviction = EvictionHook.OLDEST_PAGE_FIRST;
        private String kernel = System.getProperty("pikv.kernel", "auto");
        private int threads = Runtime.getRuntime().availableProcessors();
        private LowRankBases lowRank;

        private Builder(ModelShape shape) {
            this.shape = shape;
        }

        public Builder storageType(StorageType v) {
            storageType = v;
            return this;
        }

        public Builder pageTokens(int v) {
            pageTokens = v;
            return this;
        }

        public Builder shards(int v) {
            shards = v;
            return this;
        }

        public Builder buckets(int v) {
            buckets = v;
            return this;
        }

        public Builder budgetBytes(long v) {
            budgetBytes = v;
            return this;
        }

        public Builder eviction(EvictionHook v) {
            eviction = v;
            return this;
        }

        public Builder kernel(String v) {
            kernel = v;
            return this;
        }

        public Builder threads(int v) {
            threads = v;
            return this;
        }

        /** Store entries as coefficients in these bases (pages of {@code storageType} coefficients). */
        public Builder lowRank(LowRankBases v) {
            lowRank = v;
            return this;
        }

        public KvStoreConfig build() {
            return new KvStoreConfig(shape, storageType, pageTokens, shards, buckets, budgetBytes, eviction, kernel,
                    threads, lowRank);
        }
    }
}
