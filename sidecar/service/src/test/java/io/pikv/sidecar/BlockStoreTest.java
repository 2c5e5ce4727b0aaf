package io.pikv.sidecar;

import org.junit.jupiter.api.Test;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/** The prefix block store: byte and block bounds, replacement, the policy's choice, bad settings. */
class BlockStoreTest {

    @Test
    void holdsAtMostTheCapacityInBytesAndInBlocks() {
        BlockStore store = new BlockStore(1000, "lru");
        for (int i = 0; i < 10; i++) {
            store.put(i, new byte[100]);
        }
        store.get(0); // block 0 is now the most recently used
        store.put(10, new byte[250]); // needs 250 bytes: blocks 1, 2 and 3 go
        BlockStore.Stats s = store.stats();
        assertThat(s.capacityBlocks()).isEqualTo(10); // 1000 bytes / the first block's 100
        assertThat(s.bytes()).isEqualTo(950);
        assertThat(s.blocks()).isEqualTo(8);
        assertThat(s.evictions()).isEqualTo(3);
        assertThat(store.get(0)).hasSize(100);
        assertThat(store.get(1)).isNull();
        assertThat(store.get(3)).isNull();
        assertThat(store.get(4)).hasSize(100);

        // Blocks of a twentieth of the size: the count follows the typical size of the recent blocks (the mean of the
        // middle half of the last 64 sizes) each time it has moved by a factor of two: 20 blocks at the 12th small
        // block, then 43, 100 and, from the 33rd, 200 (1000 / 5). Until the first of these the count of 10 binds:
        // from the third small block on, each evicts the least recently used (the eight large ones left, then the
        // first small one); after it the count grows faster than the blocks come.
        for (int i = 20; i < 90; i++) {
            store.put(i, new byte[5]);
        }
        BlockStore.Stats after = store.stats();
        assertThat(after.capacityBlocks()).isEqualTo(200);
        assertThat(after.evictions()).isEqualTo(3 + 9);
        assertThat(after.blocks()).isEqualTo(69);
        assertThat(after.bytes()).isEqualTo(69 * 5);
        assertThat(store.get(0)).isNull();
        assertThat(store.get(20)).isNull();
        assertThat(store.get(21)).hasSize(5);
        // Blocks somewhat smaller (more than half the size the count was computed from) change nothing.
        store.put(1000, new byte[3]);
        assertThat(store.stats().capacityBlocks()).isEqualTo(200);
    }

    @Test
    void aPeekChangesNoOrderWhileAHitAndAReplacementDo() {
        BlockStore store = new BlockStore(300, "lru");
        store.put(1, new byte[100]);
        store.put(2, new byte[100]);
        store.put(3, new byte[100]);
        assertThat(store.peekLength(1)).isEqualTo(100);
        assertThat(store.peekLength(9)).isEqualTo(-1);
        store.put(4, new byte[100]); // 1 is still the least recently used: the peek did not touch it
        assertThat(store.peekLength(1)).isEqualTo(-1);
        store.get(2);
        store.put(3, new byte[100]); // a replacement is a use as well
        store.put(5, new byte[100]); // so 4 goes, not 2 or 3
        assertThat(store.peekLength(4)).isEqualTo(-1);
        assertThat(store.peekLength(2)).isEqualTo(100);
        assertThat(store.peekLength(3)).isEqualTo(100);
        assertThat(store.stats().hits()).isEqualTo(1);
        assertThat(store.stats().misses()).isZero();
    }

    @Test
    void anotherSizeWithTheSameCountKeepsThePolicysHistory() {
        // 1 GiB of 16 KiB blocks and then of 64 KiB blocks: both past the 16,384-block limit, so the count stays, and
        // the adaptive policy keeps what it learnt (its evidence would restart with a new index).
        BlockStore store = new BlockStore(1L << 30, "adaptive");
        for (int i = 0; i < 64; i++) {
            store.put(i, new byte[16 << 10]);
            store.get(i);
        }
        assertThat(store.stats().capacityBlocks()).isEqualTo(BlockStore.MAX_BLOCKS);
        java.util.Map<String, Double> learnt = store.stats().ghostHitRates();
        assertThat(learnt).isNotEmpty();
        for (int i = 64; i < 130; i++) {
            store.put(i, new byte[64 << 10]);
        }
        assertThat(store.stats().capacityBlocks()).isEqualTo(BlockStore.MAX_BLOCKS);
        // No lookup since: a new index would have restarted the ghosts (no rates); the same one has the same rates.
        assertThat(store.stats().ghostHitRates()).as("the same index: its evidence kept").isEqualTo(learnt);
        assertThat(store.stats().blocks()).isEqualTo(130);
    }

    @Test
    void oneStrayBlockDoesNotSetTheCount() {
        BlockStore store = new BlockStore(1 << 20, "adaptive");
        store.put(1, new byte[1]); // a probe
        assertThat(store.stats().capacityBlocks()).isEqualTo(BlockStore.MAX_BLOCKS);
        for (int i = 2; i < 40; i++) {
            store.put(i, new byte[8 << 10]);
        }
        assertThat(store.stats().capacityBlocks()).isEqualTo(128); // 1 MiB / 8 KiB
        // ... and one stray small block among them does not undo it.
        store.put(100, new byte[1]);
        assertThat(store.stats().capacityBlocks()).isEqualTo(128);
        // Nor a stray second block: two sizes that disagree keep the first's.
        BlockStore second = new BlockStore(1 << 20, "adaptive");
        second.put(1, new byte[8 << 10]);
        second.put(2, new byte[256 << 10]);
        assertThat(second.stats().capacityBlocks()).isEqualTo(128);
        second.put(3, new byte[8 << 10]);
        assertThat(second.stats().capacityBlocks()).isEqualTo(128);
        assertThat(second.stats().evictions()).isZero();
    }

    @Test
    void anEvenMixOfSizesIsCountedByItsMeanWithoutFlipping() {
        // Blocks of 10 and 30 KB in random order, half each: the count follows their mean (20 KB: 500 blocks of
        // 10 MB). A median of the recent sizes flipped between the two sizes about 150 times in 3,000 stores, each
        // time rebuilding the policy's index and dropping its history.
        BlockStore store = new BlockStore(10_000_000, "adaptive");
        java.util.SplittableRandom rnd = new java.util.SplittableRandom(7);
        int counts = 0;
        int last = -1;
        for (int i = 0; i < 3000; i++) {
            store.put(i, new byte[rnd.nextBoolean() ? 10_000 : 30_000]);
            store.get(i - 7L);
            int now = store.stats().capacityBlocks();
            if (now != last) {
                counts++;
                last = now;
            }
        }
        assertThat(counts).as("counts the store was sized to").isBetween(1, 4);
        assertThat(last).isBetween(10_000_000 / 30_000, 10_000_000 / 12_000);
        assertThat(store.stats().bytes()).isLessThanOrEqualTo(10_000_000);
    }

    @Test
    void aResizeKeepsTheRecencyOrder() {
        BlockStore store = new BlockStore(100_000, "lru");
        for (int i = 0; i < 5; i++) {
            store.put(i, new byte[1000]); // sized for 1000-byte blocks: 100 of them
        }
        store.get(0); // block 0 is now more recent than 1..4
        for (int i = 100; i < 106; i++) {
            // The sixth brings the typical size to 486 bytes (the mean of the middle seven of 100 x 6 and 1000 x 5),
            // half the 1000 the count was computed from: sized anew, history restarts.
            store.put(i, new byte[100]);
        }
        assertThat(store.stats().capacityBlocks()).isEqualTo(100_000 / 486);
        // A large block (the typical size is 550 now: no new count), and 600 bytes must go: the least recently used
        // block, 1 (not 0, the first stored).
        store.put(200, new byte[95_000]);
        assertThat(store.stats().evictions()).isEqualTo(1);
        assertThat(store.get(1)).isNull();
        assertThat(store.get(0)).hasSize(1000);
        assertThat(store.stats().bytes()).isLessThanOrEqualTo(100_000);
    }

    @Test
    void aLargeFirstBlockDoesNotFixTheCountForever() {
        BlockStore store = new BlockStore(1 << 20, "adaptive");
        store.put(1, new byte[256 << 10]);
        assertThat(store.stats().capacityBlocks()).isEqualTo(4);
        for (int i = 2; i <= 101; i++) {
            store.put(i, new byte[1 << 10]);
        }
        BlockStore.Stats s = store.stats();
        assertThat(s.capacityBlocks()).isEqualTo(1024);
        assertThat(s.blocks()).isEqualTo(101);
        assertThat(s.evictions()).isZero();
        assertThat(s.bytes()).isEqualTo((256 << 10) + 100 * 1024);
    }

    @Test
    void aHashIsOneToSixteenAsciiHexDigits() {
        assertThat(BlockStore.parseHash("ff")).isEqualTo(255);
        assertThat(BlockStore.parseHash("FFFFFFFFFFFFFFFF")).isEqualTo(-1L);
        for (String bad : new String[] {"", "0x1f", "12345678901234567", "g1", "\u0663", "\uff21", " 1"}) {
            assertThatThrownBy(() -> BlockStore.parseHash(bad)).as(bad).isInstanceOf(IllegalArgumentException.class)
                    .hasMessageStartingWith("a block hash is 1 to 16 hex digits");
        }
    }

    @Test
    void aTinyFirstBlockIsBoundedByTheBlockLimit() {
        BlockStore store = new BlockStore(256L << 20, "adaptive");
        store.put(1, new byte[1]);
        assertThat(store.stats().capacityBlocks()).isEqualTo(BlockStore.MAX_BLOCKS);
        for (int i = 2; i <= BlockStore.MAX_BLOCKS + 100; i++) {
            store.put(i, new byte[1]);
        }
        assertThat(store.stats().blocks()).isEqualTo(BlockStore.MAX_BLOCKS);
        assertThat(store.stats().evictions()).isEqualTo(100);
    }

    @Test
    void aReplacedBlockIsNeverItsOwnVictim() {
        BlockStore store = new BlockStore(1000, "lru");
        store.put(1, new byte[400]);
        store.put(2, new byte[400]);
        store.get(2);
        // Block 1 is the least recently used, yet growing it evicts block 2, the only other block.
        store.put(1, new byte[700]);
        assertThat(store.get(1)).hasSize(700);
        assertThat(store.get(2)).isNull();
        assertThat(store.stats().bytes()).isEqualTo(700);
        assertThat(store.stats().evictions()).isEqualTo(1);
        // Shrinking it needs no room.
        store.put(1, new byte[10]);
        assertThat(store.stats().bytes()).isEqualTo(10);
        assertThat(store.stats().evictions()).isEqualTo(1);
    }

    @Test
    void adaptiveRunsGhostsOfFourCandidates() {
        BlockStore store = new BlockStore(300, "adaptive");
        assertThat(store.stats().policy()).isEqualTo("adaptive/lru");
        assertThat(store.stats().ghostHitRates()).isEmpty();
        store.put(7, new byte[100]);
        assertThat(store.get(7)).hasSize(100);
        assertThat(store.stats().policy()).isEqualTo("adaptive/lru");
        assertThat(store.stats().ghostHitRates()).containsOnlyKeys("lru", "h2o", "utility", "lrfu")
                .containsEntry("lru", 1.0);
    }

    @Test
    void badSettingsAreRefusedWithTheReason() {
        assertThatThrownBy(() -> new BlockStore(1000, "streaming")).isInstanceOf(IllegalArgumentException.class)
                .hasMessage("unknown block policy 'streaming' (known: lru, h2o, utility, lrfu, adaptive)");
        assertThatThrownBy(() -> new BlockStore(0, "lru")).isInstanceOf(IllegalArgumentException.class)
                .hasMessage("the block capacity must be >= 1 byte, got 0");
        BlockStore store = new BlockStore(100, "lru");
        assertThatThrownBy(() -> store.put(1, new byte[101])).isInstanceOf(BlockStore.BlockTooLargeException.class);
        assertThatThrownBy(() -> store.put(1, new byte[0])).isInstanceOf(IllegalArgumentException.class);
        assertThat(store.stats().blocks()).isZero();
        assertThat(store.stats().bytes()).isZero();
    }
}
