package io.pikv.operator.controller;

import io.pikv.api.v1alpha1.PiKVCluster;
import io.pikv.api.v1alpha1.PiKVClusterStatus;
import io.pikv.operator.status.StatusAggregator;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * The status the operator last wrote per cluster (by uid), kept until the informer's copy shows it (or a later
 * generation). A reconcile that starts before the watch has brought a write back (a spec change queued behind the
 * reconcile that wrote it) reads the written status from here, so it neither decides again what it already told nor
 * writes an older status over a newer one. The controller's informer does not compare resource versions (see
 * {@link PiKVClusterReconciler}), which turns the SDK's own cache of writes off; generations are comparable.
 *
 * <p>Thread-safe (reconciles of different clusters run in parallel). Bounded: an entry leaves when the informer
 * catches up, when its cluster is deleted ({@link #forget}, from the SDK's delete event), and the oldest go beyond
 * {@code limit}. One instance, shared by the reconciler and {@link SdkMetrics}.
 */
@jakarta.inject.Singleton
public final class WrittenStatuses {
    /** Clusters whose written status is kept at most. */
    static final int DEFAULT_LIMIT = 4096;

    /**
     * A written status and the cluster it was written to; the resource version the write made, and those of the
     * copies the operator wrote from and of its earlier writes (a copy of one of them is from before this write); and
     * the statuses those copies and writes held (a copy holding one of them is from before this write too, whatever its
     * version: a label or annotation edited meanwhile makes a version the operator never saw, with the old status).
     */
    private record Written(String namespace, String name, PiKVClusterStatus status, String version,
                           java.util.Set<String> before, List<PiKVClusterStatus> earlierStatuses) {
    }

    /** Earlier statuses kept per cluster at most (the last writes of a generation and what they were made from). */
    static final int EARLIER_STATUSES = 8;

    private final Map<String, Written> byUid;
    /**
     * Clusters (by uid) whose status was last found changed by someone else: the status their next write is made from
     * is that edit, which is no status of the operator's (a second such edit must not pass for a copy from before).
     */
    private final java.util.Set<String> editedByHand;

    public WrittenStatuses() {
        this(DEFAULT_LIMIT);
    }

    WrittenStatuses(int limit) {
        if (limit < 1) {
            throw new IllegalArgumentException("limit must be >= 1, got " + limit);
        }
        this.byUid = new LinkedHashMap<>(16, 0.75f, false) {
            @Override
            protected boolean removeEldestEntry(Map.Entry<String, Written> eldest) {
                return size() > limit;
            }
        };
        this.editedByHand = java.util.Collections.newSetFromMap(new LinkedHashMap<>(16, 0.75f, false) {
            @Override
            protected boolean removeEldestEntry(Map.Entry<String, Boolean> eldest) {
                return size() > limit;
            }
        });
    }

    /** The cluster {@code namespace/name} was deleted: what was written to it goes (any incarnation of the name). */
    synchronized void forget(String namespace, String name) {
        byUid.values().removeIf(w -> w.namespace().equals(namespace) && w.name().equals(name));
    }

    /**
     * {@code status} was written to {@code cluster} (the copy the reconcile read), making resource version
     * {@code version} (null when unknown); the status must not be changed afterwards.
     */
    synchronized void remember(PiKVCluster cluster, PiKVClusterStatus status, String version) {
        String uid = cluster.getMetadata().getUid();
        if (uid != null) {
            Written earlier = byUid.remove(uid); // newest last, for the bound
            java.util.Set<String> before = new java.util.HashSet<>();
            List<PiKVClusterStatus> earlierStatuses = new ArrayList<>();
            if (earlier != null) {
                before.addAll(earlier.before());
                before.add(earlier.version());
                earlierStatuses.addAll(earlier.earlierStatuses());
                earlierStatuses.add(earlier.status());
            }
            if (!editedByHand.remove(uid)) {
                earlierStatuses.add(cluster.getStatus());
            }
            while (earlierStatuses.size() > EARLIER_STATUSES) {
                earlierStatuses.remove(0);
            }
            before.add(cluster.getMetadata().getResourceVersion());
            before.remove(null);
            String namespace = cluster.getMetadata().getNamespace();
            byUid.put(uid, new Written(namespace == null ? "" : namespace, cluster.getMetadata().getName(), status,
                    version, before, earlierStatuses));
        }
    }

    /**
     * The cluster's status as the operator last knew it: the informer's copy, unless a status of a later generation
     * was written that the informer has not shown yet (then that one, which the caller must not change). Null when
     * there is none.
     */
    synchronized PiKVClusterStatus current(PiKVCluster cluster) {
        PiKVClusterStatus cached = cluster.getStatus();
        String uid = cluster.getMetadata().getUid();
        Written written = uid == null ? null : byUid.get(uid);
        PiKVClusterStatus mine = written == null ? null : written.status();
        if (mine == null) {
            return cached;
        }
        // The informer caught up when it shows this write, or a status of a later generation. A copy of the same
        // generation that differs is taken for one from before the write: the operator writes several statuses per
        // generation (readiness changes, a reconcile's failure), and the watch may not have brought the last back.
        if (cached != null && (observed(cached) > observed(mine) || !StatusAggregator.changed(cached, mine))) {
            byUid.remove(uid);
            return cached;
        }
        // A copy of a version none of the writes was made from or made, of the generation written, came after the
        // write: its status was changed by someone else (cleared or edited by hand) and is what the cluster shows now,
        // to be written anew. A copy of a later generation may be a spec change from before the write, so not that.
        String shown = cluster.getMetadata().getResourceVersion();
        Long generation = cluster.getMetadata().getGeneration();
        if (shown != null && written.version() != null && !shown.equals(written.version())
                && !written.before().contains(shown) && generation != null && generation == observed(mine)
                && !heldBefore(written, cached)) {
            byUid.remove(uid);
            editedByHand.add(uid);
            return cached;
        }
        return mine;
    }

    /** Whether {@code status} is one the cluster held before the write (so a copy showing it is from before). */
    private static boolean heldBefore(Written written, PiKVClusterStatus status) {
        for (PiKVClusterStatus earlier : written.earlierStatuses()) {
            if (earlier == null ? status == null : status != null && !StatusAggregator.changed(earlier, status)) {
                return true;
            }
        }
        return false;
    }

    synchronized int size() {
        return byUid.size();
    }

    private static long observed(PiKVClusterStatus status) {
        return status.getObservedGeneration() == null ? -1 : status.getObservedGeneration();
    }
}
