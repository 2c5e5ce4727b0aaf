package io.pikv.operator.config;

import io.smallrye.config.ConfigMapping;
import io.smallrye.config.WithDefault;

import java.time.Duration;

/** The operator's own settings, under {@code pikv.operator.*} (env {@code PIKV_OPERATOR_*}). */
@ConfigMapping(prefix = "pikv.operator")
public interface OperatorConfig {

    /** Image of the shard sidecars when a PiKVCluster names none. */
    @WithDefault("pikv/sidecar:0.1.0")
    String sidecarImage();

    /**
     * Container memory on top of {@code spec.memoryPerShard} when a cluster gives no memory: half becomes the JVM
     * heap, an eighth extra direct memory, the rest metaspace, threads and code.
     */
    @WithDefault("1Gi")
    String memoryOverhead();

    /** Next reconcile of a cluster whose shards are all ready (a resync; events wake the operator sooner). */
    @WithDefault("5M")
    Duration resyncInterval();

    /** Next reconcile while a cluster is rolling out, scaling or not ready. */
    @WithDefault("10S")
    Duration progressInterval();

    /**
     * How long the shards may go without all being ready and without progress (a pod created, updated or becoming
     * ready, a new config or shard count) before the cluster is {@code Degraded} with reason
     * {@code ProgressDeadlineExceeded}, until they are all ready; 0 turns it off.
     */
    @WithDefault("10M")
    Duration progressDeadline();

    /** Name of the Lease that elects the active operator replica (in the operator's namespace). */
    @WithDefault("pikv-operator-lease")
    String leaseName();
}
