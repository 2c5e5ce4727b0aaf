package io.pikv.kv;

import java.util.Arrays;

/** One shard's state for one (sequence, layer): its buckets, where each position lives, per-expert counts. */
final class LayerState {
    final Segment[] buckets;
    /** Position → {@code pageId · pageTokens + slot}, or −1 when not resident on this shard. */
    int[] location = new int[64];
    final int[] residentPerExpert;
    final int[] evictedPerExpert;
    int resident;

    LayerState(int layer, int buckets, int experts) {
        this.buckets = new Segment[buckets];
        for (int b = 0; b < buckets; b++) {
            this.buckets[b] = new Segment(this, layer);
        }
        this.residentPerExpert = new int[experts];
        this.evictedPerExpert = new int[experts];
        Arrays.fill(location, -1);
    }

    int location(int position) {
        return position >= 0 && position < location.length ? location[position] : -1;
    }

    /** Grows the index to hold {@code position}: before anything else changes, so a failure here changes nothing. */
    void reserve(int position) {
        if (position >= location.length) {
            int old = location.length;
            location = Arrays.copyOf(location, (int) Math.min(Math.max(old * 2L, position + 1L),
                    KvShard.MAX_POSITION + 1L));
            Arrays.fill(location, old, location.length, -1);
        }
    }

    void setLocation(int position, int value) {
        reserve(position);
        location[position] = value;
    }
}
