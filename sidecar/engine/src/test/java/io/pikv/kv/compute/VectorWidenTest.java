package io.pikv.kv.compute;

import io.pikv.kv.Fp16;
import io.pikv.kv.KvLayout;
import org.junit.jupiter.api.Test;

import static org.assertj.core.api.Assertions.assertThat;

/** The vector kernel's fp16 widening equals the scalar conversion for every finite half, through the swizzle. */
class VectorWidenTest {

    @Test
    void widensEveryFiniteHalfExactly() {
        // 65,536 halves as 32-element blocks in the page swizzle: word w of a block = element w | element w+16.
        int n = 1 << 16;
        short[] slots = new short[n];
        for (int e = 0; e < n; e++) {
            slots[KvLayout.halfSlot(e)] = (short) e;
        }
        int[] words = new int[n / 2];
        for (int w = 0; w < words.length; w++) {
            words[w] = (slots[2 * w] & 0xFFFF) | (slots[2 * w + 1] << 16);
        }
        float[] out = new float[n];
        int lanes = VectorKernel.lanes();
        for (int i = 0; i < words.length; i += lanes) {
            VectorKernel.widen(words, i, out, ((i & ~15) << 1) + (i & 15));
        }
        for (int e = 0; e < n; e++) {
            float expected = Fp16.toFloat((short) e);
            if (Float.isNaN(expected) || Float.isInfinite(expected)) {
                continue; // never stored: appends reject non-finite values
            }
            assertThat(Float.floatToRawIntBits(out[e])).as("half 0x%04x", e)
                    .isEqualTo(Float.floatToRawIntBits(expected));
        }
    }
}
