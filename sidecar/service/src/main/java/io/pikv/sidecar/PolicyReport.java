package io.pikv.sidecar;

import java.util.Map;

/**
 * What a shard says about its eviction policy, for telemetry and stats: the policy in charge and, where the policy
 * runs ghost copies of other candidates on the live stream (the engine's {@code Adaptive}), the hit rate each of
 * them would have had. The one place telemetry reads policy facts from, so a new policy only implements this.
 */
public interface PolicyReport {

    /** The name of the policy that evicts now (a name {@code pikv.store.eviction} and control records use). */
    String activePolicy();

    /** Candidate policy name → hit rate (0..1) its ghost would have had; empty when no ghosts run. */
    Map<String, Double> ghostHitRates();
}
