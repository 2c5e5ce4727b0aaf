package io.pikv.sidecar;

import io.pikv.kv.PartialAttention;
import io.pikv.sidecar.wire.Wire;

/**
 * The KV operations of the {@code /v1/sequences} API, as a shard serves them from its own store
 * ({@link ShardNode}) and as a gateway serves them by fanning out to its shards ({@link Gateway}).
 */
public interface KvApi {

    /**
     * Longer than taking a free lock: a sweep of idle sequences that waited this long for one found it held by a call,
     * so in use, and leaves it for the next pass.
     */
    long IDLE_SWEEP_HELD_NANOS = java.util.concurrent.TimeUnit.MILLISECONDS.toNanos(5);

    /** Registers a sequence with {@code requested} as its id (null: pick one); returns the id. */
    long create(Long requested);

    void close(long sequence);

    /** Per layer, one past the highest position stored. */
    int[] lengths(long sequence);

    /** Entries of (sequence, layer) resident (on this shard, or on all shards for a gateway). */
    int resident(long sequence, int layer);

    /**
     * Per layer its length and its resident entries ({@code [lengths, residents]}), read as one state where the
     * implementation can; by default one call after the other.
     */
    default int[][] layers(long sequence) {
        int[] lengths = lengths(sequence);
        int[] resident = new int[lengths.length];
        for (int layer = 0; layer < lengths.length; layer++) {
            resident[layer] = resident(sequence, layer);
        }
        return new int[][] {lengths, resident};
    }

    /** Stores the entries, all or none; returns their positions. */
    int[] append(long sequence, Wire.AppendRequest request);

    /**
     * Takes back just-stored entries without counting evictions; returns how many were taken back: resident ones and
     * ones evicted since (not positions never stored, nor ones taken back before).
     */
    int withdraw(long sequence, int layer, int[] positions);

    /** Partial attention over (sequence, layer), mergeable with other shards' partials. */
    PartialAttention attend(long sequence, Wire.AttendRequest request);

    /** One decode step: route, store the token, attend. */
    Wire.StepResponse step(long sequence, Wire.StepRequest request);
}
