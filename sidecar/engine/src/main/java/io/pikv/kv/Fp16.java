package io.pikv.kv;

/**
 * IEEE 754 binary16 conversion, bit-exact with round-to-nearest-even (Java 17 has no
 * {@code Float.floatToFloat16}).
 */
public final class Fp16 {
    /** Largest finite fp16 value. */
    public static final float MAX = 65504f;

    private static final float[] TO_FLOAT = new float[1 << 16];

    static {
        for (int h = 0; h < TO_FLOAT.length; h++) {
            TO_FLOAT[h] = decode(h);
        }
    }

    private Fp16() {
    }

    /** Widens fp16 bits to float (exact). */
    public static float toFloat(short bits) {
        return TO_FLOAT[bits & 0xFFFF];
    }

    private static float decode(int h) {
        int sign = (h & 0x8000) << 16;
        int exp = (h >>> 10) & 0x1F;
        int mant = h & 0x3FF;
        if (exp == 0x1F) {
            return Float.intBitsToFloat(sign | 0x7F800000 | (mant << 13));
        }
        // Normal and subnormal halves both come out right when the bits are read as a float
        // (a float subnormal for fp16 subnormals) and scaled by 2^112; the vector kernel does the same (the CUDA
        // kernel widens with the device's own __half22float2).
        float magnitude = Float.intBitsToFloat(((h & 0x7FFF) << 13)) * 0x1p112f;
        return Float.intBitsToFloat(Float.floatToRawIntBits(magnitude) | sign);
    }

    /** Narrows a float to fp16 bits, rounding to nearest even; overflow gives ±infinity. */
    public static short fromFloat(float f) {
        int x = Float.floatToRawIntBits(f);
        int sign = (x >>> 16) & 0x8000;
        int abs = x & 0x7FFFFFFF;
        if (abs >= 0x7F800000) { // inf or NaN
            return (short) (sign | 0x7C00 | (abs > 0x7F800000 ? 0x200 : 0));
        }
        if (abs >= 0x477FF000) { // rounds to >= 65520: overflow
            return (short) (sign | 0x7C00);
        }
        if (abs < 0x38800000) { // below the smallest normal half (2^-14): subnormal or zero
            if (abs < 0x33000000) { // below 2^-25: rounds to zero
                return (short) sign;
            }
            int e = abs >>> 23;
            int m = (abs & 0x7FFFFF) | 0x800000;
            int shift = 126 - e; // 14..24 for e in 102..112
            int half = m >>> shift;
            int rem = m & ((1 << shift) - 1);
            int mid = 1 << (shift - 1);
            if (rem > mid || (rem == mid && (half & 1) != 0)) {
                half++;
            }
            return (short) (sign | half);
        }
        int e = (abs >>> 23) - 127 + 15;
        int m = abs & 0x7FFFFF;
        int half = (e << 10) | (m >>> 13);
        int rem = m & 0x1FFF;
        if (rem > 0x1000 || (rem == 0x1000 && (half & 1) != 0)) {
            half++; // may carry into the exponent, which is the right answer
        }
        return (short) (sign | half);
    }
}
