package io.pikv.kv.scheduling;

import org.junit.jupiter.api.Test;

import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/** Belady's MIN against an exhaustive search over every insert, bypass and eviction choice on tiny traces. */
class BeladyTest {

    @Test
    void leavesOutABlockThatIsNeededLast() {
        // Capacity 2: 3 is never used again, so MIN does not insert it and both 1 and 2 hit; LRU hits neither.
        List<long[]> requests = List.of(new long[] {1}, new long[] {2}, new long[] {3}, new long[] {1},
                new long[] {2});
        assertThat(Belady.replay(requests, 2).hits()).isEqualTo(2);
        assertThat(PrefixReplay.replay(requests, new PrefixBlockCache(2, new Lru())).hits()).isZero();
    }

    @Test
    void refusesAStreamWhoseIdsDoNotChain() {
        // 2 after 1 and after 3: MIN's prefix count (0 at capacity 1) would be below the true optimum (keep 1: one
        // hit), so it is no optimum there.
        assertThatThrownBy(() -> Belady.replay(List.of(new long[] {1, 2}, new long[] {3, 2}, new long[] {1, 2}), 1))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessageStartingWith("block 2 follows block 1 in one request and block 3 in another");
        assertThatThrownBy(() -> Belady.replay(List.of(new long[] {1, 2}, new long[] {2}), 1))
                .hasMessageStartingWith("block 2 follows block 1 in one request and nothing in another");
        assertThatThrownBy(() -> Belady.replay(List.of(new long[] {1, 1}), 1))
                .hasMessageStartingWith("block 1 comes twice in one request");
        // Also after a request where it chained: the repeat, not a parent of another request, is the fault.
        assertThatThrownBy(() -> Belady.replay(List.of(new long[] {1, 2}, new long[] {1, 2, 3, 2}), 1))
                .hasMessageStartingWith("block 2 comes twice in one request");
    }

    @Test
    void equalsTheExhaustiveOptimumOnPrefixTraces() {
        Random rnd = new Random(3);
        for (int trial = 0; trial < 300; trial++) {
            // A random prefix tree of up to 7 blocks (block b's parent is a smaller block or none); each request is
            // the path from a root down to a random block, as hash chains over prompt blocks are.
            int nodes = 2 + rnd.nextInt(6);
            int[] parent = new int[nodes];
            for (int b = 0; b < nodes; b++) {
                parent[b] = b == 0 || rnd.nextInt(4) == 0 ? -1 : rnd.nextInt(b);
            }
            List<long[]> requests = new ArrayList<>();
            for (int i = 0, n = 3 + rnd.nextInt(5); i < n; i++) {
                List<Long> path = new ArrayList<>();
                for (int b = rnd.nextInt(nodes); b >= 0; b = parent[b]) {
                    path.add(0, (long) b);
                }
                requests.add(path.stream().mapToLong(Long::longValue).toArray());
            }
            int capacity = 1 + rnd.nextInt(3);
            assertThat(Belady.replay(requests, capacity).hits()).as("trial %d", trial)
                    .isEqualTo(new Exhaustive(requests, capacity).best(0, 0, 0));
        }
    }

    @Test
    void equalsTheExhaustiveOptimumOnSingleBlockStreams() {
        Random rnd = new Random(4);
        for (int trial = 0; trial < 300; trial++) {
            List<long[]> requests = new ArrayList<>();
            for (int i = 0, n = 4 + rnd.nextInt(9); i < n; i++) {
                requests.add(new long[] {rnd.nextInt(5)});
            }
            int capacity = 1 + rnd.nextInt(3);
            assertThat(Belady.replay(requests, capacity).hits()).as("trial %d", trial)
                    .isEqualTo(new Exhaustive(requests, capacity).best(0, 0, 0));
        }
    }

    /** Most prefix hits over every way to serve the requests: blocks are ids < 8, the cache a bit mask. */
    private static final class Exhaustive {
        private final List<long[]> requests;
        private final int capacity;
        private final Map<Long, Integer> memo = new HashMap<>();

        Exhaustive(List<long[]> requests, int capacity) {
            this.requests = requests;
            this.capacity = capacity;
        }

        /** Best hits from block {@code k} of request {@code req} on, with {@code mask} resident. */
        int best(int req, int k, int mask) {
            if (req == requests.size()) {
                return 0;
            }
            long state = ((long) req << 40) | ((long) k << 20) | mask;
            Integer known = memo.get(state);
            if (known != null) {
                return known;
            }
            long[] blocks = requests.get(req);
            int result;
            if (k == 0) {
                int run = 0;
                while (run < blocks.length && (mask & (1 << blocks[run])) != 0) {
                    run++;
                }
                result = run + serve(req, 0, mask);
            } else {
                result = serve(req, k, mask);
            }
            memo.put(state, result);
            return result;
        }

        private int serve(int req, int k, int mask) {
            long[] blocks = requests.get(req);
            if (k == blocks.length) {
                return best(req + 1, 0, mask);
            }
            int bit = 1 << blocks[k];
            if ((mask & bit) != 0) {
                return serve(req, k + 1, mask);
            }
            int result = serve(req, k + 1, mask); // leave it out
            if (Integer.bitCount(mask) < capacity) {
                result = Math.max(result, serve(req, k + 1, mask | bit));
            } else {
                for (int m = mask; m != 0; m &= m - 1) {
                    result = Math.max(result, serve(req, k + 1, (mask & ~Integer.lowestOneBit(m)) | bit));
                }
            }
            return result;
        }
    }
}
