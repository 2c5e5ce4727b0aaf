package io.pikv.sidecar.api;

import io.pikv.kv.ExpertLayerCounters;
import io.pikv.kv.ExpertShardMap;
import io.pikv.kv.ShardStats;
import io.pikv.sidecar.BlockStore;
import io.pikv.sidecar.Sidecar;
import io.pikv.sidecar.ShardPolicy;
import io.pikv.sidecar.SidecarConfig;
import io.pikv.sidecar.control.ShardControl;
import io.pikv.api.events.ControlState;
import jakarta.ws.rs.Consumes;
import jakarta.ws.rs.GET;
import jakarta.ws.rs.PUT;
import jakarta.ws.rs.Path;
import jakarta.ws.rs.Produces;
import jakarta.ws.rs.core.MediaType;
import org.eclipse.microprofile.openapi.annotations.Operation;

import java.util.List;
import java.util.Map;

/** Read-only views: stats per expert and layer, the effective configuration, the shard map. */
@Path("/v1")
@Produces(MediaType.APPLICATION_JSON)
public class InfoResource {

    /** A shard's figures, with counters per (expert, layer) that saw any activity. */
    public record StatsJson(String role, int shard, String policy, long budgetBytes,
                            long bytesInUse, long entries, long sequences, long lookups, long hits, long misses,
                            long evictions, List<ExpertLayerCounters> experts, BlockStore.Stats blocks,
                            ControlJson control) {
    }

    /**
     * The desired state in effect and what of it is not: {@code epoch} -1 and {@code source} config until a control
     * record is applied; {@code warnings} say what of the applied state does not run (unknown policy, budget that
     * the shard cannot take); {@code lastRejected} names the last control record refused (invalid) and why.
     */
    public record ControlJson(long epoch, String source, String requestedPolicy, Map<String, Double> parameters,
                              long desiredBudgetBytes, long budgetBytes, List<String> warnings, String lastRejected,
                              String appliedAt) {
        static ControlJson of(ShardControl.State s) {
            return new ControlJson(s.epoch(), s.source(), s.requestedPolicy(), s.parameters(), s.desiredBudgetBytes(),
                    s.budgetBytes(), s.warnings(), s.lastRejected(), s.appliedAt().toString());
        }
    }

    /** The settings in effect (defaults, application.properties and PIKV_* environment merged). */
    public record ConfigJson(String role, String cluster, int shardId, ModelJson model, String dtype, int pageTokens,
                             long budgetBytes, int buckets, String eviction, String evictionParameters, String kernel,
                             String sequenceIdleTimeout, int maxBodyBytes, long blockCapacityBytes, String blockPolicy,
                             List<String> gatewayShards, String routing, String compute, String attention,
                             PyramidJson pyramid, String telemetryTopic, String controlTopic) {
    }

    /** PyramidKV budgets in force ({@code pikv.store.pyramid.*}); null in {@link ConfigJson} when off. */
    public record PyramidJson(double budget, double beta, int sinks, int window) {
        static PyramidJson of(io.pikv.sidecar.ShardPyramid p) {
            return p == null ? null : new PyramidJson(p.budget(), p.beta(), p.sinks(), p.window());
        }
    }

    /**
     * Which shard owns each expert, with the map's epoch ({@code source} config: the map the sidecar started with,
     * epoch 0; control: the operator's, with the record's epoch).
     */
    public record ShardMapJson(Long epoch, Integer shards, int[] shardOfExpert, String source) {
    }

    /**
     * The body of {@code PUT /v1/shard-map}: what {@link ShardMapJson} holds but its {@code source}, which the sidecar
     * sets itself (a map applied by hand is {@code manual}), so a body naming one is refused as any unknown field is.
     */
    public record ShardMapRequest(Long epoch, Integer shards, int[] shardOfExpert) {
    }

    private final Sidecar sidecar;

    public InfoResource(Sidecar sidecar) {
        this.sidecar = sidecar;
    }

    @GET
    @Path("/stats")
    @Operation(summary = "Hits, misses, evictions and bytes per expert and layer on this shard")
    public StatsJson stats() {
        // One state of the control record: the policy and budget in force beside the record that set them, never a
        // record half applied (as telemetry reads them).
        if (sidecar.gateway() != null) {
            // A gateway holds no KV (its shards do, in their own /v1/stats): no KV figures, the sequences it has open,
            // its own block cache.
            return new StatsJson("gateway", sidecar.config().shardId(), null, 0, 0, 0,
                    sidecar.gateway().openSequences(), 0, 0, 0, 0, List.of(), sidecar.blocks().stats(),
                    ControlJson.of(sidecar.control().state()));
        }
        return sidecar.control().consistent(() -> {
            ShardStats s = sidecar.shard().stats();
            ShardPolicy policy = sidecar.shard().policy();
            return new StatsJson("shard", s.shard(), policy.activePolicy(), s.budgetBytes(), s.bytesInUse(),
                    s.entries(), sidecar.shard().sequenceCount(), s.lookups(), s.hits(), s.misses(), s.evictions(),
                    s.counters(), sidecar.blocks().stats(), ControlJson.of(sidecar.control().state()));
        });
    }

    @GET
    @Path("/config")
    @Operation(summary = "The effective configuration")
    public ConfigJson config() {
        SidecarConfig c = sidecar.config();
        boolean publishes = c.telemetry().enabled() && c.role() != io.pikv.sidecar.Role.gateway;
        return new ConfigJson(c.role().name(), c.cluster(), c.shardId(), ModelJson.of(sidecar.shape()),
                sidecar.shard().layout().type().name().toLowerCase(java.util.Locale.ROOT),
                sidecar.shard().layout().pageTokens(), c.store().budgetBytes(), c.store().buckets(),
                c.store().eviction(), c.store().evictionParameters().orElse(null), c.store().kernel(),
                c.sequenceIdleTimeout().toString(), c.api().maxBodyBytes(), c.blocks().capacityBytes(), c.blocks().policy(), c.gateway().shards().orElse(List.of()),
                c.gateway().routing(), c.compute(),
                c.role() == io.pikv.sidecar.Role.gateway ? null : sidecar.shard().attentionPlace(), // attends nowhere
                PyramidJson.of(sidecar.shard().pyramid()), publishes ? c.telemetry().topic() : null,
                c.control().enabled() ? c.control().topic() : null);
    }

    @GET
    @Path("/shard-map")
    @Operation(summary = "The expert-to-shard map in effect, with its epoch")
    public ShardMapJson shardMap() {
        ShardControl.State state = sidecar.control().state();
        ExpertShardMap map = state.shardMap();
        return new ShardMapJson(map.epoch(), map.shards(), map.assignment(), state.source());
    }

    /** Largest epoch step a hand-applied map may take past the one in effect. */
    static final long MAX_EPOCH_STEP = 1000;

    @PUT
    @Path("/shard-map")
    @Consumes(MediaType.APPLICATION_JSON)
    @Operation(summary = "Apply a newer shard map by hand (what a control record does): a gateway routes new entries "
            + "by it; stored entries stay readable where they are")
    public ShardMapJson applyShardMap(ShardMapRequest next) {
        if (next == null) {
            throw new IllegalArgumentException("the body must hold epoch, shards and shardOfExpert");
        }
        // Required, and said so when missing or null (a primitive would read a missing one as 0).
        String missing = next.epoch() == null ? "epoch" : next.shards() == null ? "shards"
                : next.shardOfExpert() == null ? "shardOfExpert" : null;
        if (missing != null) {
            throw new IllegalArgumentException(missing + " is required");
        }
        // Not while the control topic is still being read (even once serving, after a silent broker): a map applied
        // now would outrank the records read so far, and the latest one (its policy and budget too) would then be
        // dropped as stale when the read ends.
        sidecar.checkManualMap();
        ShardControl control = sidecar.control();
        ShardControl.State current = control.state();
        if (next.epoch() > current.shardMap().epoch() && next.epoch() - current.shardMap().epoch() > MAX_EPOCH_STEP) {
            throw new IllegalArgumentException("epoch " + next.epoch() + " jumps more than " + MAX_EPOCH_STEP
                    + " past the map in effect (epoch " + current.shardMap().epoch() + "): a hand-applied map continues the "
                    + "epoch sequence, since control records up to its epoch would then be ignored as stale");
        }
        java.util.List<Integer> assignment = java.util.Arrays.stream(next.shardOfExpert()).boxed().toList();
        if (control.applyMap(next.epoch(), assignment, next.shards()) == ShardControl.Outcome.STALE) {
            throw new StaleEpochException("epoch " + next.epoch() + " is not newer than the map in effect (epoch "
                    + control.state().shardMap().epoch() + ")");
        }
        return shardMap();
    }

    /** A shard map that is not newer than the one in effect. */
    public static final class StaleEpochException extends RuntimeException {
        StaleEpochException(String message) {
            super(message);
        }
    }
}
