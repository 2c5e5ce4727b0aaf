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
}
