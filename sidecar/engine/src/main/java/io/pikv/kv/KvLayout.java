package io.pikv.kv;

/**
 * Byte layout of one page: {@code pageTokens} entries of one (sequence, layer, bucket), K and V for all KV heads.
 *
 * <pre>
 *   K region: [kvHeads][headDim][pageTokens]   (transposed: a token's elements are pageTokens apart)
 *   V region: [kvHeads][pageTokens][headDim]   (row per token)
 * </pre>
 * Elements are {@link StorageType} little-endian. Keys are stored transposed so that the scores of a run of
 * tokens are one fused multiply-add per dimension across vector lanes (no horizontal reductions); values are
 * stored by row because the output accumulates whole rows.
 *
 * <p>fp16 elements are swizzled in blocks of 32: the 32-bit word {@code w} of a block holds element {@code w} in its
 * low half and element {@code w + 16} in its high half ({@link #halfSlot(int)}). Widening a block is then two
 * same-width integer passes over 16 words (low halves, high halves) that land in natural order, with no lane
 * shuffles; scalar code goes through {@link #halfSlot(int)}. A region's element count is a multiple of 32 because
 * {@code headDim × pageTokens} is even and heads start on block boundaries (checked here).
 *
 * <p>int8 pages keep the same element order (no swizzle: element {@code x} is byte {@code x}) and append their
 * scales after the two regions: {@code float keyScale[kvHeads][headDim]} (per channel, over the page's tokens)
 * then {@code float valueScale[kvHeads][pageTokens]} (per token). An element's value is its byte times its scale.
 */
public record KvLayout(int kvHeads, int headDim, int pageTokens, StorageType type) {

    public KvLayout {
        if (pageTokens < 1 || pageTokens > 1024 || Integer.bitCount(pageTokens) != 1) {
            throw new IllegalArgumentException("pageTokens must be a power of two in [1, 1024], got " + pageTokens);
        }
        if (type == StorageType.FP16 && (headDim * pageTokens) % 32 != 0) {
            throw new IllegalArgumentException("fp16 pages need headDim × pageTokens to be a multiple of 32, got "
                    + headDim + " × " + pageTokens);
        }
        if (type == StorageType.INT8 && headDim % 4 != 0) {
            throw new IllegalArgumentException("int8 pages need headDim to be a multiple of 4, got " + headDim);
        }
    }

    /** Position of fp16 element {@code index} among the page's 16-bit slots (the 32-element block swizzle). */
    public static int halfSlot(int index) {
        return (index & ~31) | ((index & 15) << 1) | ((index >> 4) & 1);
    }

    /** Elements in one region (K or V) of a page. */
    public int regionElements() {
        return kvHeads * headDim * pageTokens;
    }

    /** Bytes of one page (for int8: both regions plus the key and value scales). */
    public int pageBytes() {
        int payload = 2 * regionElements() * type.bytes();
        return type == StorageType.INT8 ? payload + Float.BYTES * kvHeads * (headDim + pageTokens) : payload;
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
        return 2 * regionElements() + Float.BYTES * (head * headDim + dim);
    }

    /** Byte offset of the int8 value scale of the token in {@code slot} of {@code head}. */
    public int valueScaleOffset(int head, int slot) {
        return 2 * regionElements() + Float.BYTES * (kvHeads * headDim + head * pageTokens + slot);
    }

    /** Element index of K[head][dim] of the token in {@code slot}. */
    public int keyIndex(int head, int dim, int slot) {
        return (head * headDim + dim) * pageTokens + slot;
    }

    /** Element index of V[head][dim] of the token in {@code slot}. */
    public int valueIndex(int head, int slot, int dim) {
        return regionElements() + (head * pageTokens + slot) * headDim + dim;
    }
}
