package io.pikv.kv;

import org.junit.jupiter.api.Test;

import java.util.HashMap;
import java.util.Map;
import java.util.Random;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/** The position index's map against a HashMap under random puts, removals (backward shifts) and filters. */
class PositionMapTest {
    @Test
    void randomOperationsAgreeWithAHashMap() {
        for (int seed = 0; seed < 20; seed++) {
            Random rnd = new Random(seed);
            PositionMap map = new PositionMap();
            Map<Integer, Integer> reference = new HashMap<>();
            // Few distinct keys, so probe runs collide and wrap; some seeds spread them over the whole range.
            int range = seed % 2 == 0 ? 300 : KvShard.MAX_POSITION + 1;
            for (int op = 0; op < 20_000; op++) {
                int key = rnd.nextInt(range);
                switch (rnd.nextInt(6)) {
                    case 0, 1, 2 -> {
                        int value = rnd.nextBoolean() ? rnd.nextInt(1 << 20) : -2 - rnd.nextInt(1 << 20);
                        if (map.get(key) == PositionMap.MISSING) {
                            map.reserve();
                        }
                        map.put(key, value);
                        reference.put(key, value);
                    }
                    case 3, 4 -> {
                        Integer held = reference.remove(key);
                        assertThat(map.remove(key)).isEqualTo(held == null ? -1 : held);
                    }
                    default -> {
                        if (rnd.nextInt(200) == 0) {
                            int cut = rnd.nextInt(range);
                            int gone = map.retain((k, v) -> v >= 0 || k >= cut);
                            int before = reference.size();
                            reference.entrySet().removeIf(e -> e.getValue() < 0 && e.getKey() < cut);
                            assertThat(gone).isEqualTo(before - reference.size());
                        }
                    }
                }
                if (op % 3 == 0) {
                    reference.remove(key);
                    map.remove(key);
                }
                assertThat(map.size()).isEqualTo(reference.size());
            }
            for (int key = 0; key < Math.min(range, 1000); key++) {
                assertThat(map.get(key)).as("seed %d key %d", seed, key).isEqualTo(reference.getOrDefault(key, -1));
            }
            Map<Integer, Integer> seen = new HashMap<>();
            map.forEach((k, v) -> seen.put(k, v) == null);
            assertThat(seen).isEqualTo(reference);
            assertThat(map.capacity()).isLessThanOrEqualTo(Math.max(16, 4 * (reference.size() + 1) * 4 / 3 * 2));
        }
    }

    @Test
    void retainingMostOfTheEntriesKeepsTheTablesAndAllocatesNothing() {
        PositionMap map = new PositionMap();
        Random rnd = new Random(9);
        Map<Integer, Integer> reference = new HashMap<>();
        for (int i = 0; i < 3_000; i++) {
            int key = rnd.nextInt(50_000); // collisions and runs that wrap around the table's end
            int value = rnd.nextBoolean() ? i : -2 - i;
            if (map.get(key) == PositionMap.MISSING) {
                map.reserve();
            }
            map.put(key, value);
            reference.put(key, value);
        }
        int capacity = map.capacity();
        com.sun.management.ThreadMXBean threads =
                (com.sun.management.ThreadMXBean) java.lang.management.ManagementFactory.getThreadMXBean();
        PositionMap.EntryFilter keepHeldOrLate = (k, v) -> v >= 0 || k >= 25_000;
        map.retain((k, v) -> true); // (the filter's class loaded and the method run once before measuring)
        long before = threads.getCurrentThreadAllocatedBytes();
        int gone = map.retain(keepHeldOrLate);
        long allocated = threads.getCurrentThreadAllocatedBytes() - before;
        int sizeBefore = reference.size();
        reference.entrySet().removeIf(e -> e.getValue() < 0 && e.getKey() < 25_000);
        assertThat(gone).isEqualTo(sizeBefore - reference.size()).isPositive();
        assertThat(map.capacity()).as("tables kept").isEqualTo(capacity);
        assertThat(allocated).as("bytes allocated").isLessThan(1024);
        assertThat(map.size()).isEqualTo(reference.size());
        for (Map.Entry<Integer, Integer> e : reference.entrySet()) {
            assertThat(map.get(e.getKey())).isEqualTo(e.getValue());
        }
        for (int key = 0; key < 50_000; key++) {
            if (!reference.containsKey(key)) {
                assertThat(map.get(key)).isEqualTo(PositionMap.MISSING);
            }
        }
    }

    @Test
    void aNewKeyNeedsRoomReservedAndNeverMissing() {
        PositionMap map = new PositionMap();
        for (int i = 0; i < 12; i++) {
            map.put(i, i); // 12 of 16 slots: within three quarters
        }
        assertThatThrownBy(() -> map.put(12, 12)).isInstanceOf(IllegalStateException.class)
                .hasMessageContaining("no room reserved");
        map.put(3, 30); // a held key: in place
        map.reserve();
        map.put(12, 12);
        assertThat(map.capacity()).isEqualTo(32);
        assertThat(map.get(3)).isEqualTo(30);
        assertThatThrownBy(() -> map.put(-1, 0)).isInstanceOf(IllegalArgumentException.class);
        assertThatThrownBy(() -> map.put(1, PositionMap.MISSING)).isInstanceOf(IllegalArgumentException.class);
    }
}
