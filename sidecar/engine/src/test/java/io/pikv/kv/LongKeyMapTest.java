package io.pikv.kv;

import org.junit.jupiter.api.Test;

import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicReference;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

class LongKeyMapTest {

    @Test
    void holdsWhatAHashMapHoldsUnderRandomPutsAndRemoves() {
        Random rnd = new Random(1);
        LongKeyMap<String> map = new LongKeyMap<>();
        Map<Long, String> reference = new HashMap<>();
        long[] keys = new long[300];
        for (int i = 0; i < keys.length; i++) {
            keys[i] = i < 3 ? new long[] {0, Long.MIN_VALUE, -1}[i] : rnd.nextLong();
        }
        for (int op = 0; op < 200_000; op++) {
            long key = keys[rnd.nextInt(keys.length)];
            if (rnd.nextInt(3) == 0) {
                assertThat(map.remove(key)).isEqualTo(reference.remove(key));
            } else {
                String value = "v" + op;
                assertThat(map.put(key, value)).isEqualTo(reference.put(key, value));
            }
            long probe = keys[rnd.nextInt(keys.length)];
            assertThat(map.get(probe)).isEqualTo(reference.get(probe));
            assertThat(map.containsKey(probe)).isEqualTo(reference.containsKey(probe));
        }
        assertThat(map.size()).isEqualTo(reference.size());
        List<String> values = new ArrayList<>();
        map.forEachValue(values::add);
        assertThat(values).containsExactlyInAnyOrderElementsOf(reference.values());
        // Removal markers are dropped when the table is rebuilt: churn over 300 keys keeps a table sized for them.
        assertThat(map.capacity()).isLessThanOrEqualTo(1024);
    }

    @Test
    void refusesNullValues() {
        LongKeyMap<String> map = new LongKeyMap<>();
        assertThatThrownBy(() -> map.put(1, null)).isInstanceOf(IllegalArgumentException.class);
        assertThat(map.size()).isZero();
        assertThat(map.get(1)).isNull();
    }

    /** Lookups take no lock: a reader always finds keys held throughout while a writer adds, removes and rebuilds. */
    @Test
    void lookupsRunningBesideWritesFindEveryKeyHeldThroughout() throws Exception {
        LongKeyMap<Long> map = new LongKeyMap<>();
        for (long key = 1000; key < 1064; key++) {
            map.put(key, key);
        }
        AtomicBoolean done = new AtomicBoolean();
        AtomicReference<String> wrong = new AtomicReference<>();
        Thread reader = new Thread(() -> {
            while (!done.get()) {
                for (long key = 1000; key < 1064; key++) {
                    Long value = map.get(key);
                    if (value == null || value != key) {
                        wrong.compareAndSet(null, "key " + key + " read as " + value);
                    }
                }
            }
        });
        reader.start();
        try {
            for (int round = 0; round < 200; round++) {
                for (long key = 0; key < 500; key++) {
                    map.put(key, key); // grows the table: rebuilt beside the reader
                }
                for (long key = 0; key < 500; key++) {
                    map.remove(key);
                }
            }
        } finally {
            done.set(true);
            reader.join();
        }
        assertThat(wrong.get()).isNull();
        assertThat(map.size()).isEqualTo(64);
    }
}
