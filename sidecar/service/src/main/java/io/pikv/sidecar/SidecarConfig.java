package io.pikv.sidecar;

import io.smallrye.config.ConfigMapping;
import io.smallrye.config.WithDefault;

import java.time.Duration;
import java.util.List;
import java.util.Optional;

/**
 * Every setting of the sidecar, under {@code pikv.*} in {@code application.properties}; each can be overridden by
 * an environment variable named after it ({@code pikv.store.budget-bytes} → {@code PIKV_STORE_BUDGET_BYTES}).
 */
@ConfigMapping(prefix = "pikv")
public interface SidecarConfig {

    /** {@code shard}: stores and attends; {@code gateway}: routes and fans steps out to shards. */
    @WithDefault("shard")
    Role role();

    /** The PiKVCluster this sidecar belongs to (telemetry key, control topic key). */
    @WithDefault("local")
    String cluster();

    /** This shard's index in the cluster's shard map. */
    @WithDefault("0")
    int shardId();

    /**
     * Where a shard attends: {@code auto} (a usable CUDA device if there is one, else the CPU, saying why),
     * {@code cuda} (start-up fails without one) or {@code cpu}.
     */
    @WithDefault("auto")
    String compute();

    /**
     * A sequence that no call has used for this long is closed and its KV freed (on a gateway: on its shards too);
     * {@code 0} never. Catches sequences left open by a client or a gateway that went away without closing them.
     */
    @WithDefault("1h")
    Duration sequenceIdleTimeout();

    /**
     * The process id of a local launcher that started this sidecar as its child: the sidecar stops once that process
     * is gone, so a launcher killed outright (no shutdown hook ran) leaves no sidecar behind. Unset in a cluster.
     */
    java.util.Optional<Long> parentPid();

    Model model();

    Store store();

    Api api();

    Blocks blocks();

    Gateway gateway();

    Telemetry telemetry();

    Control control();

    /** The model whose KV this cluster holds; sequences must be created with this shape. */
    interface Model {
        @WithDefault("2")
        int layers();

        @WithDefault("8")
        int qHeads();

        @WithDefault("2")
        int kvHeads();

        @WithDefault("64")
        int headDim();

        @WithDefault("8")
        int experts();

        @WithDefault("2")
        int topK();
    }

    /** The shard's KV store. */
    interface Store {
        /** Page element type: fp16 (default), fp32 or int8 (compressed). */
        @WithDefault("fp16")
        String dtype();

        /** Tokens per page (a power of two). */
        @WithDefault("32")
        int pageTokens();

        /** Hard limit on the bytes of KV pages this shard holds. */
        @WithDefault("1073741824")
        long budgetBytes();

        /** In-shard buckets, placed by s(t,e) = (t mod N_tok) xor (e mod N_exp). */
        @WithDefault("8")
        int buckets();

        /**
         * What a full store does: {@code oldest-page} evicts the page allocated longest ago; {@code reject} never
         * evicts, so appends beyond the budget are refused (409).
         */
        @WithDefault("oldest-page")
        String eviction();

        /**
         * Parameters of the eviction policy, {@code name=value} pairs separated by commas (for example
         * {@code sinks=4,window=256}); the ones not given keep their defaults.
         */
        Optional<String> evictionParameters();

        /**
         * Threads one attention call splits the shard's buckets over (at most the buckets); 0: one per available
         * processor. Steps of one long sequence then use the pod's cores; 1 keeps each call on its request thread.
         */
        @WithDefault("0")
        int attentionThreads();

        /**
         * The CPU attention kernel: {@code auto} (the Vector API kernel when the JVM has {@code jdk.incubator.vector}
         * and the kernel takes the page layout, else the scalar one, saying why), {@code vector} (start-up fails
         * without it) or {@code scalar}. Both answer the same within float rounding.
         */
        @WithDefault("auto")
        String kernel();

        Pyramid pyramid();
    }

    /**
     * PyramidKV budgets (docs/compression.md): each (sequence, layer) keeps at most its layer's share of the entries
     * stored for it, shrinking with depth; off unless {@code budget} is set.
     */
    interface Pyramid {
        /** Share of the entries kept on average over the layers, in (0, 1]; unset: no pyramid budgets. */
        Optional<Double> budget();

        /** The last layer keeps {@code 1/beta} of the average (at least {@code sinks + window}); default 20. */
        Optional<Double> beta();

        /** Leading positions every layer keeps (attention sinks); default 4. */
        Optional<Integer> sinks();

        /** Most recent positions every layer keeps, at least 1; default 32. */
        Optional<Integer> window();
    }

    /** The HTTP API. */
    interface Api {
        /** Largest request body accepted; larger ones get 413. */
        @WithDefault("67108864")
        int maxBodyBytes();
    }

    /** The prefix-block cache (block put/lookup by hash). */
    interface Blocks {
        /** Bytes of block payloads held; beyond it the policy chooses which blocks go. */
        @WithDefault("268435456")
        long capacityBytes();

        /**
         * Which block goes first: {@code lru}, {@code h2o}, {@code utility}, {@code lrfu}, or {@code adaptive}
         * (ghost copies of those four on the lookups and stores; it follows the best).
         */
        @WithDefault("adaptive")
        String policy();
    }

    /** The gateway role. */
    interface Gateway {
        /** Base URLs of the shards, in shard-index order (e.g. {@code http://shard-0:8080}). */
        Optional<List<String>> shards();

        /** {@code hash} (plain top-k) or {@code cache-aware}. */
        @WithDefault("hash")
        String routing();

        /** Cache-aware routing: weight of the miss penalty λ. */
        @WithDefault("0.1")
        double lambda();

        /** Cache-aware routing: tokens over which miss counts decay. */
        @WithDefault("512")
        int window();

        /** Cache-aware routing: an expert on a new shard below this fraction of the top weight is dropped. */
        @WithDefault("0.15")
        double nullRatio();

        /** Longest wait for a connection to a shard. */
        @WithDefault("5s")
        Duration connectTimeout();

        /**
         * Longest one call to a shard may take, from its request to the end of its answer; a step waits for its
         * slowest shard, and a shard that does not answer holds the sequence's next call for as long.
         */
        @WithDefault("30s")
        Duration callTimeout();

        /** Connections to each shard kept open between calls; more open under load and close after their call. */
        @WithDefault("64")
        int idleConnections();
    }

    /**
     * Telemetry out: one {@code CacheEvents} record per window to Kafka. The broker comes from
     * {@code kafka.bootstrap.servers} ({@code KAFKA_BOOTSTRAP_SERVERS}); every other {@code kafka.*} client setting
     * (TLS, SASL) applies too.
     */
    interface Telemetry {
        /** Off: no producer is created and nothing is published. */
        @WithDefault("true")
        boolean enabled();

        @WithDefault("pikv.cache-events")
        String topic();

        /** Length of a window: one record per window. */
        @WithDefault("1s")
        Duration window();

        /** Records held while Kafka is unreachable; beyond it the oldest are dropped (and counted). */
        @WithDefault("600")
        int bufferRecords();

        /**
         * How long one record may take to reach Kafka before it counts as failed and is retried (bounds the
         * producer's {@code delivery.timeout.ms} and {@code max.block.ms}).
         */
        @WithDefault("10s")
        Duration sendTimeout();
    }

    /** Control in: the operator's desired state, read from a compacted Kafka topic keyed by cluster. */
    interface Control {
        /** Off: the sidecar runs on its configured state and is ready at once. */
        @WithDefault("true")
        boolean enabled();

        @WithDefault("pikv.control")
        String topic();

        /**
         * Readiness waits for the control topic to be read to its end; when it cannot be read (broker unreachable,
         * topic missing) the sidecar becomes ready after this long on its configured state.
         */
        @WithDefault("30s")
        Duration startupWait();
    }
}
