package io.pikv.sidecar;

import io.pikv.kv.ExpertShardMap;
import io.pikv.kv.ModelShape;
import io.pikv.kv.StorageType;
import io.pikv.sidecar.control.ShardControl;
import io.quarkus.runtime.ShutdownEvent;
import io.quarkus.runtime.StartupEvent;
import jakarta.enterprise.context.ApplicationScoped;
import jakarta.enterprise.event.Observes;
import org.jboss.logging.Logger;

/**
 * The sidecar's engine state, built once from {@link SidecarConfig}: the model shape every request is checked
 * against, this process's shard and its block cache, and the desired state the operator controls (shard map,
 * policy, budget) starting from the configuration. A configuration the engine rejects stops start-up with the
 * engine's message, naming the setting.
 */
@ApplicationScoped
public class Sidecar {
    private static final Logger LOG = Logger.getLogger(Sidecar.class);

    private final SidecarConfig config;
    private final ModelShape shape;
    private final ShardNode shard;
    private final BlockStore blocks;
    private final ShardControl control;

    public Sidecar(SidecarConfig config) {
        this.config = config;
        this.shape = setting("pikv.model.*", () -> new ModelShape(config.model().layers(), config.model().qHeads(),
                config.model().kvHeads(), config.model().headDim(), config.model().experts(), config.model().topK()));
        StorageType type = setting("pikv.store.dtype", () -> StorageType.parse(config.store().dtype()));
        ShardPolicy policy = setting("pikv.store.eviction", () -> ShardPolicy.of(config.store().eviction()));
        this.shard = setting("pikv.store.*", () -> new ShardNode(config.shardId(), shape, type,
                config.store().pageTokens(), config.store().buckets(), config.store().budgetBytes(),
                policy));
        this.blocks = setting("pikv.blocks.capacity-bytes", () -> new BlockStore(config.blocks().capacityBytes()));
        // Until the operator publishes a map: experts round-robin over the gateway's shards, or all on this one.
        int shards = Math.max(1, config.gateway().shards().map(java.util.List::size).orElse(1));
        this.control = new ShardControl(config.cluster(), config.shardId(),
                ExpertShardMap.roundRobin(shape.experts(), shards), policy, config.store().budgetBytes(),
                shard::budgetBytes);
    }

    void started(@Observes StartupEvent event) {
        LOG.infof("PiKV sidecar: role %s, cluster %s, shard %d, model %s, %s pages of %d tokens, budget %d bytes",
                config.role(), config.cluster(), config.shardId(), shape, shard.layout().type(),
                shard.layout().pageTokens(), config.store().budgetBytes());
    }

    void stopped(@Observes ShutdownEvent event) {
        shard.close();
    }

    public SidecarConfig config() {
        return config;
    }

    public ModelShape shape() {
        return shape;
    }

    public ShardNode shard() {
        return shard;
    }

    public BlockStore blocks() {
        return blocks;
    }

    /** The desired state in effect (shard map, policy, budget) and the control records applied to it. */
    public ShardControl control() {
        return control;
    }

    private static <T> T setting(String name, java.util.function.Supplier<T> build) {
        try {
            return build.get();
        } catch (IllegalArgumentException e) {
            throw new IllegalStateException("invalid configuration " + name + ": " + e.getMessage(), e);
        }
    }
}
