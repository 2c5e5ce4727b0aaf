package io.pikv.kv;

/**
 * Byte layout of one page: {@code pageTokens} entries of one (sequence, layer, bucket), K and V for all KV heads.
 *
 * <pre>
 *   K region: [kvHeads][keyWidth][pageTokens]   (transposed: a token's elements are pageTokens apart)
 *   V region: [kvHeads][pageTokens][valueWidth] (row per token)
 * </pre>
 * Elements are {@link StorageType} little-endian. Keys are stored transposed so that the scores of a run of
 * tokens are one fused multiply-add per dimension across vector lanes (no horizontal reductions); values are
 * stored by row because the output accumulates whole rows.
 *
 * <p>A plain page stores the entries themselves: {@code keyWidth = valueWidth = headDim}. A <em>projected</em>
 * (low-rank) page stores, per token and head, {@code keyWidth} coefficients of the key and {@code valueWidth} of
 * the value in a fitted basis ({@code io.pikv.kv.compression.LowRankBases}); the element order is the same with
 * the coefficient index in place of the dimension.
 *
 * <p>fp16 elements are swizzled in blocks of 32: the 32-bit word {@code w} of a block holds element {@code w} in its
 * low half and element {@code w + 16} in its high half ({@link #halfSlot(int)}). Widening a block is then two
 * same-width integer passes over 16 words (low halves, high halves) that land in natural order, with no lane
 * shuffles; scalar code goes through {@link #halfSlot(int)}. A region's element count is a multiple of 32 because
 * {@code width × pageTokens} is a multiple of 32 for each head (checked here), so heads start on block boundaries.
 *
 * <p>int8 pages keep the same element order (no swizzle: element {@code x} is byte {@code x}) and append their
 * scales after the two regions: {@code float keyScale[kvHeads][keyWidth]} (per channel, over the page's tokens)
 * then {@code float valueScale[kvHeads][pageTokens]} (per token). An element's value is its byte times its scale.
 */
public record KvLayout(int kvHeads, int headDim, int pageTokens, StorageType type, int keyWidth, int valueWidth) {

    public KvLayout {
        if (pageTokens < 1 || pageTokens > 1024 || Integer.bitCount(pageTokens) != 1) {
            throw new IllegalArgumentException("pageTokens must be a power of two in [1, 1024], got " + pageTokens);
        }
        if (keyWidth < 1 || keyWidth > headDim || valueWidth < 1 || valueWidth > headDim) {
            throw new IllegalArgumentException("stored key and value widths must be in [1, headDim = " + headDim
                    + "], got " + keyWidth + " and " + valueWidth);
        }
        if (type == StorageType.FP16 && ((keyWidth * pageTokens) % 32 != 0 || (valueWidth * pageTokens) % 32 != 0)) {
            throw new IllegalArgumentException(keyWidth == headDim && valueWidth == headDim
                    ? "fp16 pages need headDim × pageTokens to be a multiple of 32, got " + headDim + " × " + pageTokens
                    : "fp16 low-rank pages need rank × pageTokens to be a multiple of 32, got ranks " + keyWidth
                    + " and " + valueWidth + " with " + pageTokens + " tokens");
        }
        long bytes = (long) kvHeads * (keyWidth + valueWidth) * pageTokens * type.bytes()
                + (type == StorageType.INT8 ? (long) Float.BYTES * kvHeads * (keyWidth + pageTokens) : 0);
        if (kvHeads < 1 || bytes > MAX_PAGE_BYTES) {
            throw new IllegalArgumentException(kvHeads < 1 ? "kvHeads must be >= 1, got " + kvHeads
                    : "a page of " + pageTokens + " tokens × " + kvHeads + " KV heads × (" + keyWidth + " + "
                    + valueWidth + ") " + type + " elements would take " + bytes + " bytes, more than "
                    + MAX_PAGE_BYTES + ": use fewer tokens per page");
        }
        if (type == StorageType.INT8 && (headDim % 4 != 0 || keyWidth % 4 != 0 || valueWidth % 4 != 0)) {
            throw new IllegalArgumentException(keyWidth == headDim && valueWidth == headDim
                    ? "int8 pages need headDim to be a multiple of 4, got " + headDim
                    : "int8 low-rank pages need headDim and both ranks to be multiples of 4, got " + headDim + ", "
                    + keyWidth + " and " + valueWidth);
        }
    }

    /** Largest page: 1 GiB, so that every size and offset inside a page is an int. */
    public static final long MAX_PAGE_BYTES = 1L << 30;

    /** A plain page layout: entries stored whole ({@code keyWidth = valueWidth = headDim}). */
    public KvLayout(int kvHeads, int headDim, int pageTokens, StorageType type) {
        this(kvHeads, headDim, pageTokens, type, headDim, headDim);
    }

    /** Whether pages hold coefficients in a fitted basis rather than the entries themselves. */
    public boolean projected() {
        return keyWidth != headDim || valueWidth != headDim;
    }

    @Override
    public String toString() {
        return "KvLayout[kvHeads=" + kvHeads + ", headDim=" + headDim + ", pageTokens=" + pageTokens + ", type=" + type
                + (projected() ? ", keyRank=" + keyWidth + ", valueRank=" + valueWidth : "") + "]";
    }

    /** Position of fp16 element {@code index} among the page's 16-bit slots (the 32-element block swizzle). */
    public static int halfSlot(int index) {
        return (index & ~31) | ((index & 15) << 1) | ((index >> 4) & 1);
    }

    /** Elements in the K region of a page (for a plain page also the V region's). */
    public int regionElements() {
        return kvHeads * keyWidth * pageTokens;
    }

    /** Elements in the V region of a page. */
    public int valueElements() {
        return kvHeads * valueWidth * pageTokens;
    }

    /**
     * The most pages one shard can address: a location is page id × pageTokens + slot, an int. A budget of more
     * bytes than this many pages is refused, not silently cut.
     */
    public int maxPages() {
        return Integer.MAX_VALUE / pageTokens - 1;
    }

    /** Bytes of one page (for int8: both regions plus the key and value scales). */
    public int pageBytes() {
        int payload = (regionElements() + valueElements()) * type.bytes();
        return type == StorageType.INT8 ? payload + Float.BYTES * kvHeads * (keyWidth + pageTokens) : payload;
    }

    /**
     * Bytes one entry (K and V of one token in one layer) occupies: for fp32/fp16 its payload, for int8 the page's
     * bytes per slot rounded up (payload, its value scales and its share of the page's key scales).
     */
    public int entryBytes() {
        return (pageBytes() + pageTokens - 1) / pageTokens;
    }

    /** Byte offset of the int8 key scale of channel (head, dim). */
    public int keyScaleOffset(int head, int dim) {
        return regionElements() + valueElements() + Float.BYTES * (head * keyWidth + dim);
    }

    /** Byte offset of the int8 value scale of the token in {@code slot} of {@code head}. */
    public int valueScaleOffset(int head, int slot) {
        return regionElements() + valueElements() + Float.BYTES * (kvHeads * keyWidth + head * pageTokens + slot);
    }

    /** Element index of K[head][dim] (or key coefficient {@code dim}) of the token in {@code slot}. */
    public int keyIndex(int head, int dim, int slot) {
        return (head * keyWidth + dim) * pageTokens + slot;
    }

    /** Element index of V[head][dim] (or value coefficient {@code dim}) of the token in {@code slot}. */
    public int valueIndex(int head, int slot, int dim) {
        return regionElements() + (head * pageTokens + slot) * valueWidth + dim;
    }
}
