package io.pikv.kv;

import io.pikv.kv.compression.Int8Codec;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.FloatBuffer;
import java.nio.IntBuffer;
import java.nio.ShortBuffer;

/**
 * One off-heap page of {@link KvLayout#pageTokens()} entries plus the small on-heap metadata of its slots.
 *
 * <p>Pages are created once by a {@link PagePool} and recycled; the slot arrays are allocated with the page, so
 * appends allocate nothing. A page is owned by one shard and is not thread-safe on its own: the shard's lock
 * guards it.
 */
public final class Page {
    final int id;
    final KvLayout layout;
    final ByteBuffer bytes;
    final FloatBuffer floats;
    final ShortBuffer shorts;
    final IntBuffer ints;
    /** Sequence position of the token in each slot. */
    final int[] position;
    /** Primary expert of the token in each slot. */
    final short[] expert;
    int count;

    // Bookkeeping owned by the shard: which segment holds the page, where in its list, and allocation order.
    Segment segment;
    int indexInSegment = -1;
    Page olderPage;
    Page newerPage;

    Page(int id, KvLayout layout) {
        this.id = id;
        this.layout = layout;
        this.bytes = ByteBuffer.allocateDirect(layout.pageBytes()).order(ByteOrder.LITTLE_ENDIAN);
        this.floats = bytes.asFloatBuffer();
        this.shorts = bytes.asShortBuffer();
        this.ints = bytes.asIntBuffer();
        this.position = new int[layout.pageTokens()];
        this.expert = new short[layout.pageTokens()];
    }

    /** Pool-local id of this page. */
    public int id() {
        return id;
    }

    /** Entries held. */
    public int count() {
        return count;
    }

    /** The layout of this page. */
    public KvLayout layout() {
        return layout;
    }

    /** The sequence whose entries this page holds (pages in use only). */
    public long sequence() {
        return segment.layerState.sequence;
    }

    /** The layer whose entries this page holds (pages in use only). */
    public int layer() {
        return segment.layer;
    }

    /**
     * A view of the page's bytes (a direct buffer in the layout's page format) for copying them elsewhere. Callers
     * must not write through it: the shard tracks every change of a page's bytes ({@link DeviceAttention}).
     */
    public java.nio.ByteBuffer bytes() {
        return bytes.duplicate().order(java.nio.ByteOrder.LITTLE_ENDIAN).clear();
    }

    /** Sequence position of the token in {@code slot}. */
    public int positionAt(int slot) {
        return position[slot];
    }

    /** Primary expert of the token in {@code slot}. */
    public int expertAt(int slot) {
        return expert[slot];
    }

    /**
     * Writes K and V ({@code kvHeads × keyWidth} and {@code kvHeads × valueWidth}, head-major: the entry, or its
     * coefficients on a low-rank page) into {@code slot}; slots {@code [0, count)} other than {@code slot} keep
     * their values (for int8 they may be requantized to a wider channel scale).
     */
    void writeEntry(int slot, float[] k, int kOffset, float[] v, int vOffset) {
        if (layout.type() == StorageType.INT8) {
            Int8Codec.writeEntry(bytes, layout, slot, count, k, kOffset, v, vOffset);
            return;
        }
        int kw = layout.keyWidth();
        int vw = layout.valueWidth();
        for (int h = 0; h < layout.kvHeads(); h++) {
            for (int i = 0; i < kw; i++) {
                put(layout.keyIndex(h, i, slot), k[kOffset + h * kw + i]);
            }
            for (int i = 0; i < vw; i++) {
                put(layout.valueIndex(h, slot, i), v[vOffset + h * vw + i]);
            }
        }
    }

    private void put(int index, float value) {
        if (layout.type() == StorageType.FP32) {
            floats.put(index, value);
        } else {
            shorts.put(KvLayout.halfSlot(index), Fp16.fromFloat(value));
        }
    }

    /** Reads one element at element index {@code index}, widened (fp16) or dequantized (int8) to float. */
    public float get(int index) {
        switch (layout.type()) {
            case FP32:
                return floats.get(index);
            case FP16:
                return Fp16.toFloat(shorts.get(KvLayout.halfSlot(index)));
            default:
                return Int8Codec.get(bytes, layout, index);
        }
    }

    /**
     * Copies the entry in {@code fromSlot} of {@code from} into {@code toSlot} of this page: bit for bit for fp32
     * and fp16; for int8 through its float values (the two pages have their own key scales), using scratch arrays
     * of at least {@code kvHeads × headDim} floats.
     */
    void copyEntry(Page from, int fromSlot, int toSlot, float[] kScratch, float[] vScratch) {
        int heads = layout.kvHeads();
        int kw = layout.keyWidth();
        int vw = layout.valueWidth();
        if (layout.type() == StorageType.INT8) {
            for (int h = 0; h < heads; h++) {
                for (int i = 0; i < kw; i++) {
                    kScratch[h * kw + i] = from.get(layout.keyIndex(h, i, fromSlot));
                }
                for (int i = 0; i < vw; i++) {
                    vScratch[h * vw + i] = from.get(layout.valueIndex(h, fromSlot, i));
                }
            }
            writeEntry(toSlot, kScratch, 0, vScratch, 0);
        } else {
            for (int h = 0; h < heads; h++) {
                for (int i = 0; i < kw; i++) {
                    copyElement(from, layout.keyIndex(h, i, fromSlot), layout.keyIndex(h, i, toSlot));
                }
                for (int i = 0; i < vw; i++) {
                    copyElement(from, layout.valueIndex(h, fromSlot, i), layout.valueIndex(h, toSlot, i));
                }
            }
        }
        position[toSlot] = from.position[fromSlot];
        expert[toSlot] = from.expert[fromSlot];
    }

    private void copyElement(Page from, int fromIndex, int toIndex) {
        if (layout.type() == StorageType.FP32) {
            floats.put(toIndex, from.floats.get(fromIndex));
        } else {
            shorts.put(KvLayout.halfSlot(toIndex), from.shorts.get(KvLayout.halfSlot(fromIndex)));
        }
    }

    /** Bulk-reads {@code length} int8 elements from element {@code index}. */
    public void readBytes(int index, byte[] dst, int offset, int length) {
        bytes.get(index, dst, offset, length);
    }

    /** The int8 key scale of channel (head, dim). */
    public float keyScale(int head, int dim) {
        return bytes.getFloat(layout.keyScaleOffset(head, dim));
    }

    /** The int8 value scale of the token in {@code slot} of {@code head}. */
    public float valueScale(int head, int slot) {
        return bytes.getFloat(layout.valueScaleOffset(head, slot));
    }

    /** Bulk-reads {@code length} fp32 elements from element {@code index} (memcpy from off-heap). */
    public void readFloats(int index, float[] dst, int offset, int length) {
        floats.get(index, dst, offset, length);
    }

    /**
     * Bulk-reads the raw 32-bit words holding fp16 elements {@code [index, index + 2·length)}; {@code index} must
     * be a multiple of 32 (see {@link KvLayout#halfSlot(int)} for where each element sits in a word).
     */
    public void readHalfWords(int index, int[] dst, int offset, int length) {
        ints.get(index >> 1, dst, offset, length);
    }
}
