package io.pikv.sidecar.api;

import io.pikv.kv.ExpertLayerCounters;
import io.pikv.kv.ShardStats;
import io.pikv.sidecar.BlockStore;
import io.pikv.sidecar.Sidecar;
import io.pikv.sidecar.SidecarConfig;
import io.pikv.kv.ExpertShardMap;
import io.pikv.sidecar.Gateway;
import jakarta.ws.rs.Consumes;
import jakarta.ws.rs.GET;
import jakarta.ws.rs.PUT;
import jakarta.ws.rs.Path;
import jakarta.ws.rs.Produces;
import jakarta.ws.rs.core.MediaType;
import org.eclipse.microprofile.openapi.annotations.Operation;

import java.util.List;

/** Read-only views: stats per expert and layer, the effective configuration, the shard map. */
@Path("/v1")
@Produces(MediaType.APPLICATION_JSON)
public class InfoResource {

    /** A shard's figures, with counters per (expert, layer) that saw any activity. */
    public record StatsJson(int shard, String policy, long budgetBytes, long bytesInUse, long entries,
                            long sequences, long lookups, long hits, long misses, long evictions,
                            List<ExpertLayerCounters> experts, BlockStore.Stats blocks) {
    }

    /** The settings in effect (defaults, application.properties and PIKV_* environment merged). */
    public record ConfigJson(String role, String cluster, int shardId, ModelJson model, String dtype, int pageTokens,
                             long budgetBytes, int buckets, int maxBodyBytes, long blockCapacityBytes,
                             List<String> gatewayShards, String routing) {
    }

    /** Which shard owns each expert, with the map's epoch. */
    public record ShardMapJson(long epoch, int shards, int[] shardOfExpert) {
    }

    private final Sidecar sidecar;

    public InfoResource(Sidecar sidecar) {
        this.sidecar = sidecar;
    }

    @GET
    @Path("/stats")
    @Operation(summary = "Hits, misses, evictions and bytes per expert and layer on this shard")
    public StatsJson stats() {
        ShardStats s = sidecar.shard().stats();
        return new StatsJson(s.shard(), sidecar.config().store().eviction(), s.budgetBytes(), s.bytesInUse(), s.entries(),
                sidecar.shard().sequenceCount(), s.lookups(), s.hits(), s.misses(), s.evictions(), s.counters(),
                sidecar.blocks().stats());
    }

    @GET
    @Path("/config")
    @Operation(summary = "The effective configuration")
    public ConfigJson config() {
        SidecarConfig c = sidecar.config();
        return new ConfigJson(c.role().name(), c.cluster(), c.shardId(), ModelJson.of(sidecar.shape()),
                sidecar.shard().layout().type().name().toLowerCase(java.util.Locale.ROOT),
                sidecar.shard().layout().pageTokens(), c.store().budgetBytes(), c.store().buckets(),
                c.api().maxBodyBytes(), c.blocks().capacityBytes(), c.gateway().shards().orElse(List.of()),
                c.gateway().routing());
    }

    @GET
    @Path("/shard-map")
    @Operation(summary = "The expert-to-shard map in effect, with its epoch")
    public ShardMapJson shardMap() {
        if (sidecar.gateway() != null) {
            ExpertShardMap map = sidecar.gateway().shardMap();
            return new ShardMapJson(map.epoch(), map.shards(), map.assignment());
        }
        int experts = sidecar.shape().experts();
        return new ShardMapJson(0, 1, new int[experts]);
    }

    @PUT
    @Path("/shard-map")
    @Consumes(MediaType.APPLICATION_JSON)
    @Operation(summary = "Gateway: route new entries by a newer shard map (stored entries stay readable where they are)")
    public ShardMapJson applyShardMap(ShardMapJson next) {
        Gateway gateway = sidecar.gateway();
        if (gateway == null) {
            throw new WrongRoleException("only a gateway routes by the shard map; this sidecar is a shard");
        }
        if (next == null || next.shardOfExpert() == null) {
            throw new IllegalArgumentException("the body must hold epoch, shards and shardOfExpert");
        }
        ExpertShardMap map = new ExpertShardMap(next.epoch(), next.shards(), next.shardOfExpert());
        synchronized (gateway) {
            long current = gateway.shardMap().epoch();
            if (map.epoch() <= current) {
                throw new StaleEpochException("epoch " + map.epoch() + " is not newer than the map in effect (epoch "
                        + current + ")");
            }
            gateway.applyShardMap(map);
        }
        return shardMap();
    }

    /** A request only another role serves. */
    public static final class WrongRoleException extends RuntimeException {
        WrongRoleException(String message) {
            super(message);
        }
    }

    /** A shard map that is not newer than the one in effect. */
    public static final class StaleEpochException extends RuntimeException {
        StaleEpochException(String message) {
            super(message);
        }
    }
}
