package io.pikv.api.events;

import com.fasterxml.jackson.annotation.JsonIgnoreProperties;

import java.util.List;
import java.util.Map;

/**
 * The desired state the operator publishes for a cluster on the compacted topic {@code pikv.control}, keyed by the
 * cluster's id (the sidecars' {@code pikv.cluster}: {@code <namespace>/<name>} for a cluster the operator runs): the expert→shard map (with its epoch), the active eviction policy and the budgets. A sidecar
 * applies a record whose epoch is newer than the one it runs and ignores older ones (and records of other
 * clusters). Each record is the whole state, since compaction keeps only the latest per cluster: what it leaves out
 * is the sidecar's configuration, never an earlier record. A record with any invalid part is rejected whole.
 *
 * @param version       schema version ({@link #VERSION})
 * @param cluster       the PiKVCluster this state is for
 * @param epoch         monotonically increasing version of this state, from 0
 * @param shardOfExpert the shard owning each expert (index = expert id; one per expert of the model)
 * @param shards        the number of shards
 * @param policy        the eviction policy every shard runs; null or blank: the configured one, with its configured
 *                      parameters
 * @param parameters    the policy's parameters (policy-specific names; unnamed ones take the policy's defaults)
 * @param budgetBytes   the per-shard byte budget; 0 or less: the configured one
 */
@JsonIgnoreProperties(ignoreUnknown = true)
public record ControlState(int version, String cluster, long epoch, List<Integer> shardOfExpert, int shards, String policy,
                           Map<String, Double> parameters, long budgetBytes) {

    public static final int VERSION = 1;
}
