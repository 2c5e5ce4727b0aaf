package io.pikv.kv;

import java.util.ArrayList;

/**
 * The pages of one (sequence, layer, bucket) inside a shard. Every page but {@link #tail} is full; appends go to
 * the tail, and token evictions fill their hole with the tail's last entry, so the segment stays dense.
 */
final class Segment {
    final LayerState layerState;
    final int layer;
    final ArrayList<Page> pages = new ArrayList<>(4);
    Page tail;

    Segment(LayerState layerState, int layer) {
        this.layerState = layerState;
        this.layer = layer;
    }

    void add(Page page) {
        page.indexInSegment = pages.size();
        pages.add(page);
    }

    void remove(Page page) {
        int at = page.indexInSegment;
        Page last = pages.remove(pages.size() - 1);
        if (last != page) {
            pages.set(at, last);
            last.indexInSegment = at;
        }
        if (tail == page) {
            tail = null;
        }
    }
}
