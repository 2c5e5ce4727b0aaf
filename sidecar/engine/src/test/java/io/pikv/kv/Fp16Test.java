package io.pikv.kv;

import org.junit.jupiter.api.Test;

import java.util.HashSet;
import java.util.Random;
import java.util.Set;

import static org.assertj.core.api.Assertions.assertThat;

class Fp16Test {

    @Test
    void everyFiniteHalfRoundTrips() {
        for (int h = 0; h < 1 << 16; h++) {
            float f = Fp16.toFloat((short) h);
            if (Float.isNaN(f)) {
                continue;
            }
            assertThat(Fp16.fromFloat(f) & 0xFFFF).as("half 0x%04x = %s", h, f).isEqualTo(h);
        }
    }

    @Test
    void knownValues() {
        assertThat(Fp16.toFloat((short) 0x3C00)).isEqualTo(1f);
        assertThat(Fp16.toFloat((short) 0xC000)).isEqualTo(-2f);
        assertThat(Fp16.toFloat((short) 0x7BFF)).isEqualTo(65504f);
        assertThat(Fp16.toFloat((short) 0x0001)).isEqualTo((float) Math.pow(2, -24));
        assertThat(Fp16.toFloat((short) 0x03FF)).isEqualTo((float) (1023 * Math.pow(2, -24)));
        assertThat(Fp16.toFloat((short) 0x7C00)).isEqualTo(Float.POSITIVE_INFINITY);
        assertThat(Fp16.fromFloat(65519.99f)).isEqualTo((short) 0x7BFF);
        assertThat(Fp16.fromFloat(65520f)).isEqualTo((short) 0x7C00);
        assertThat(Fp16.fromFloat(1f + 0x1p-11f)).as("tie rounds to even").isEqualTo((short) 0x3C00);
        assertThat(Fp16.fromFloat(1f + 3 * 0x1p-11f)).as("tie rounds to even").isEqualTo((short) 0x3C02);
        assertThat(Fp16.fromFloat(0x1p-25f)).as("half of the smallest subnormal: tie to zero").isEqualTo((short) 0);
        assertThat(Fp16.fromFloat(1.5f * 0x1p-25f)).isEqualTo((short) 1);
        assertThat(Fp16.fromFloat(-0f)).isEqualTo((short) 0x8000);
    }

    @Test
    void roundsToNearest() {
        Random rnd = new Random(7);
        for (int i = 0; i < 200_000; i++) {
            float x = (float) ((rnd.nextDouble() * 2 - 1) * Math.pow(2, rnd.nextInt(40) - 26));
            if (Math.abs(x) > Fp16.MAX) {
                continue;
            }
            short h = Fp16.fromFloat(x);
            double err = Math.abs(Fp16.toFloat(h) - (double) x);
            for (int d = -1; d <= 1; d += 2) {
                float neighbour = Fp16.toFloat((short) (h + d));
                if (Float.isFinite(neighbour) && Math.signum(neighbour) * Math.signum(Fp16.toFloat(h)) >= 0) {
                    assertThat(err).as("%s -> 0x%04x", x, h).isLessThanOrEqualTo(Math.abs(neighbour - (double) x));
                }
            }
        }
    }

    @Test
    void halfSlotIsAPermutationOfEachBlock() {
        Set<Integer> seen = new HashSet<>();
        for (int i = 0; i < 96; i++) {
            int slot = KvLayout.halfSlot(i);
            assertThat(slot / 32).isEqualTo(i / 32);
            assertThat(seen.add(slot)).isTrue();
        }
        assertThat(KvLayout.halfSlot(0)).isEqualTo(0);
        assertThat(KvLayout.halfSlot(16)).isEqualTo(1);
        assertThat(KvLayout.halfSlot(1)).isEqualTo(2);
        assertThat(KvLayout.halfSlot(31)).isEqualTo(31);
    }
}
