package io.pikv.kv.scheduling;

import org.junit.jupiter.api.Test;

import java.util.HashMap;
import java.util.Map;
import java.util.Random;

import static org.assertj.core.api.Assertions.assertThat;

class LongIntMapTest {

    @Test
    void agreesWithHashMapUnderRandomPutsAndRemoves() {
        Random rnd = new Random(5);
        LongIntMap map = new LongIntMap(4);
        Map<Long, Integer> reference = new HashMap<>();
        for (int i = 0; i < 200_000; i++) {
            // Few distinct keys with colliding low bits, so probe runs wrap and backward shifts happen often.
            long key = (rnd.nextInt(3000) * 1024L) ^ (rnd.nextBoolean() ? Long.MIN_VALUE : 0);
            if (rnd.nextInt(3) == 0) {
                Integer expected = reference.remove(key);
                assertThat(map.remove(key)).isEqualTo(expected == null ? -1 : expected);
            } else {
                int value = rnd.nextInt(1 << 20);
                reference.put(key, value);
                map.put(key, value);
            }
            assertThat(map.size()).isEqualTo(reference.size());
        }
        for (Map.Entry<Long, Integer> e : reference.entrySet()) {
            assertThat(map.get(e.getKey())).isEqualTo(e.getValue());
        }
        assertThat(map.get(12345L)).isEqualTo(-1);
    }

    @Test
    void keysThatDifferOnlyInTheirTopBitsDoNotShareOneSlot() {
        // With an unseeded multiplicative hash these 128 keys all probed the same slot of a 1,024-slot table.
        LongIntMap map = new LongIntMap(500);
        java.util.Set<Integer> homes = new java.util.HashSet<>();
        for (long j = 0; j < 128; j++) {
            long key = (j << 57) | 12345;
            map.put(key, (int) j);
            homes.add(map.home(key));
        }
        assertThat(homes.size()).as("distinct first slots of 128 keys").isGreaterThan(96);
        for (long j = 0; j < 128; j++) {
            assertThat(map.get((j << 57) | 12345)).isEqualTo((int) j);
        }
    }
}
