package io.pikv.kv.cache;

import org.junit.jupiter.api.Test;

import java.util.List;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

class PrefixReplayTest {

    @Test
    void reuseStopsAtTheFirstMissingBlock() {
        // Capacity 4, LRU; cache shown least to most recent after each request.
        // r1 [1,2,3]    hits 0               -> 1 2 3
        // r2 [1,2,4]    hits 2 (1, 2)        -> 3 1 2 4
        // r3 [5,2,3]    hits 0: 5 is missing, so cached 2 and 3 are not reused; 3 then 1 evicted -> 4 5 2 3
        // r4 [1,2]      hits 0 (1 evicted)   -> 5 3 1 2
        // r5 [5,3,1,2]  hits 4
        List<long[]> requests = List.of(new long[] {1, 2, 3}, new long[] {1, 2, 4}, new long[] {5, 2, 3},
                new long[] {1, 2}, new long[] {5, 3, 1, 2});
        PrefixReplay.Result r = PrefixReplay.replay(requests, new LruBlockCache(4));
        assertThat(r.lookups()).isEqualTo(15);
        assertThat(r.hits()).isEqualTo(6);
        assertThat(r.hitRate()).isEqualTo(6.0 / 15);
        assertThat(r.requests()).isEqualTo(5);
    }

    @Test
    void lruEvictsTheLeastRecentlyUsed() {
        LruBlockCache c = new LruBlockCache(2);
        c.access(1);
        c.access(2);
        c.access(1);
        c.access(3);
        assertThat(c.contains(1)).isTrue();
        assertThat(c.contains(2)).isFalse();
        assertThat(c.contains(3)).isTrue();
        assertThat(c.size()).isEqualTo(2);
        assertThatThrownBy(() -> new LruBlockCache(0)).hasMessageContaining("capacity must be >= 1");
    }
}
