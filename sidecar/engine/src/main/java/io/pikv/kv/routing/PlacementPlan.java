package io.pikv.kv.routing;

import io.pikv.kv.ExpertShardMap;

import java.util.List;

/**
 * What {@link PlacementPlanner} proposes, with its predicted effect (from the loads and co-activation it was given).
 *
 * @param map               the map to apply: the current one when nothing moves, else a new one with the next epoch
 * @param moves             experts whose shard changes, by expert id
 * @param maxOverMeanBefore predicted max/mean shard load under the current map
 * @param maxOverMean       predicted max/mean shard load under {@code map}
 * @param cutBefore         share of co-activation that crosses shards under the current map
 * @param cut               the same under {@code map}
 * @param gain              drop of {@code (max/mean − 1) + cut} of the best plan found (applied only at or above the
 *                          planner's threshold; 0 when none was found)
 * @param reason            why nothing moves; empty when experts move
 */
public record PlacementPlan(ExpertShardMap map, List<Move> moves, double maxOverMeanBefore, double maxOverMean,
        double cutBefore, double cut, double gain, String reason) {

    /** One expert changing shard. */
    public record Move(int expert, int from, int to) {
    }

    public PlacementPlan {
        moves = List.copyOf(moves);
    }

    public boolean changed() {
        return !moves.isEmpty();
    }

    /** Moved experts over all experts. */
    public double movedFraction() {
        return (double) moves.size() / map.experts();
    }
}
