package io.pikv.kv.compression;

import io.pikv.kv.KvLayout;
import io.pikv.kv.StorageType;

import java.nio.ByteBuffer;

/**
 * The int8 page codec ({@link StorageType#INT8}, layout in {@link KvLayout}): symmetric quantization to
 * {@code [-127, 127]} with float scales, keys per channel and values per token.
 *
 * <p>Values: a token's row of one head gets {@code scale = max|v| / 127}, known when the token is written.
 * Keys: a channel's scale covers every token of the page, so it can only be known once the page is full. Writing
 * keeps it tight instead: when a new key exceeds its channel's range, the channel's stored bytes (at most
 * {@code pageTokens}) are requantized to the wider scale. A key thus carries at most half a step of every scale its
 * channel had from its write on (a key that never saw its channel widen: half a step), and of every page it was moved
 * to: an eviction that fills its hole with another page's entry requantizes that entry at the new page's scales; with
 * keys drawn from one
 * distribution a channel widens only a few times per page (record maxima among n samples: about ln n). The cost
 * stays O(pageTokens) per widened channel, so an append remains O(1) in sequence length.
 *
 * <p>The CPU page ({@code Page}) and the GPU backend's host-side tail page both write through this class, so the
 * two backends hold the same bytes.
 */
public final class Int8Codec {
    /** Largest quantized magnitude. */
    public static final int LEVELS = 127;

    private Int8Codec() {
    }

    /**
     * Writes K and V ({@code kvHeads × keyWidth} and {@code kvHeads × valueWidth}, head-major: the entry itself on
     * a plain page, its coefficients on a low-rank one) into {@code slot} of an int8 page whose slots
     * {@code [0, count)} hold entries (one of them may be {@code slot} itself, which is overwritten). With
     * {@code count == 0} the page is taken as empty and its key scales are reset.
     */
    public static void writeEntry(ByteBuffer page, KvLayout layout, int slot, int count, float[] k, int kOffset,
                                  float[] v, int vOffset) {
        check(layout);
        int heads = layout.kvHeads();
        int kw = layout.keyWidth();
        int vw = layout.valueWidth();
        if (count == 0) {
            for (int c = 0; c < heads * kw; c++) {
                page.putFloat(layout.keyScaleOffset(0, c), 0f);
            }
        }
        for (int h = 0; h < heads; h++) {
            int base = h * vw;
            float max = 0f;
            for (int i = 0; i < vw; i++) {
                max = Math.max(max, Math.abs(v[vOffset + base + i]));
            }
            float vScale = max / LEVELS;
            page.putFloat(layout.valueScaleOffset(h, slot), vScale);
            for (int i = 0; i < vw; i++) {
                page.put(layout.valueIndex(h, slot, i), quantize(v[vOffset + base + i], vScale));
            }
            for (int i = 0; i < kw; i++) {
                float x = k[kOffset + h * kw + i];
                int scaleAt = layout.keyScaleOffset(h, i);
                float scale = page.getFloat(scaleAt);
                if (Math.abs(x) > scale * LEVELS) {
                    float wider = Math.abs(x) / LEVELS;
                    for (int t = 0; t < count; t++) {
                        if (t != slot) {
                            int at = layout.keyIndex(h, i, t);
                            page.put(at, quantize(page.get(at) * scale, wider));
                        }
                    }
                    page.putFloat(scaleAt, wider);
                    scale = wider;
                }
                page.put(layout.keyIndex(h, i, slot), quantize(x, scale));
            }
        }
    }

    /** The value of element {@code index} (a {@link KvLayout#keyIndex} or {@link KvLayout#valueIndex}). */
    public static float get(ByteBuffer page, KvLayout layout, int index) {
        int region = layout.regionElements();
        float scale;
        if (index < region) {
            int channel = index / layout.pageTokens(); // head · keyWidth + dim
            scale = page.getFloat(layout.keyScaleOffset(0, channel));
        } else {
            int row = (index - region) / layout.valueWidth(); // head · pageTokens + slot
            scale = page.getFloat(layout.valueScaleOffset(0, row));
        }
        return page.get(index) * scale;
    }

    /** Rounds {@code x / scale} to the nearest level, clamped to ±127 (0 when the scale is 0). */
    static byte quantize(float x, float scale) {
        if (scale == 0f) {
            return 0;
        }
        int q = Math.round(x / scale);
        return (byte) Math.max(-LEVELS, Math.min(LEVELS, q));
    }

    private static void check(KvLayout layout) {
        if (layout.type() != StorageType.INT8) {
            throw new IllegalArgumentException("the int8 codec writes int8 pages, not " + layout.type());
        }
    }
}
