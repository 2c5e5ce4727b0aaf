package io.pikv.kv.scheduling;

import java.util.List;

/** The policies by name, with the settings the block-cache benchmark uses for a cache of a given capacity. */
public final class BlockPolicies {
    /** Every policy name, in report order. */
    public static final List<String> NAMES = List.of("lru", "streaming", "h2o", "utility", "lrfu", "adaptive");

    /** Half-life of a use in {@link Lrfu}, in lookups. */
    public static final double LRFU_HALF_LIFE = 32_768;

    private BlockPolicies() {
    }

    /**
     * {@link Adaptive} over the named candidates ({@link #create}'s settings), with the benchmark's evidence window
     * (max(4096, capacity) lookups) and margin (0.005).
     */
    public static Adaptive adaptive(int capacity, List<String> candidates) {
        List<EvictionPolicy> policies = new java.util.ArrayList<>();
        for (String name : candidates) {
            if (name.equals("adaptive")) {
                throw new IllegalArgumentException("adaptive cannot be a candidate of adaptive");
            }
            policies.add(create(name, capacity));
        }
        return new Adaptive(capacity, policies, Math.max(4096, capacity), 0.005);
    }

    /** The policy called {@code name} for a cache of {@code capacity} blocks. */
    public static EvictionPolicy create(String name, int capacity) {
        return switch (name) {
            case "lru" -> new Lru();
            case "streaming" -> new StreamingLlm(1, capacity / 4);
            case "h2o" -> new HeavyHitter(0, capacity / 4);
            case "utility" -> new Utility(1, 1, 1, capacity);
            case "lrfu" -> new Lrfu(LRFU_HALF_LIFE, (int) Math.min(Lrfu.MAX_HISTORY, 8L * capacity), true);
            case "adaptive" -> adaptive(capacity, List.of("lru", "streaming", "h2o", "utility", "lrfu"));
            default -> throw new IllegalArgumentException("unknown policy '" + name + "'; known: "
                    + String.join(", ", NAMES));
        };
    }
}
