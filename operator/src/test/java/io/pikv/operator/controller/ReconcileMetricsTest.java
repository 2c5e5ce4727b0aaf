package io.pikv.operator.controller;

import io.micrometer.core.instrument.simple.SimpleMeterRegistry;
import org.junit.jupiter.api.Test;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/** Per-cluster series, and a cluster deleted while its reconcile runs: its series must not come back. */
class ReconcileMetricsTest {
    final SimpleMeterRegistry registry = new SimpleMeterRegistry();
    final ReconcileMetrics metrics = new ReconcileMetrics(registry);

    private double reconciles(String cluster, String result) {
        var counter = registry.find(ReconcileMetrics.RECONCILES).tags("namespace", "ns", "cluster", cluster,
                "result", result).counter();
        return counter == null ? 0 : counter.count();
    }

    private int series(String cluster) {
        return registry.find(ReconcileMetrics.RECONCILES).tags("cluster", cluster).meters().size()
                + registry.find(ReconcileMetrics.FAILURES).tags("cluster", cluster).meters().size()
                + registry.find(ReconcileMetrics.DURATION).tags("cluster", cluster).meters().size();
    }

    @Test
    void finishedAndFailedReconcilesAreCountedPerCluster() {
        metrics.finished(metrics.start("ns", "a"), "applied");
        metrics.finished(metrics.start("ns", "a"), "applied");
        metrics.failed(metrics.start("ns", "a"));
        metrics.finished(metrics.start("ns", "b"), "invalid");
        assertThat(reconciles("a", "applied")).isEqualTo(2);
        assertThat(reconciles("a", "failed")).isEqualTo(1);
        assertThat(reconciles("b", "invalid")).isEqualTo(1);
        assertThat(registry.find(ReconcileMetrics.DURATION).tags("cluster", "a").timer().count()).isEqualTo(3);

        assertThat(metrics.forget("ns", "a")).isEqualTo(4); // applied, failed, failures, duration
        assertThat(series("a")).isZero();
        assertThat(reconciles("b", "invalid")).isEqualTo(1);
    }

    @Test
    void aClusterDeletedWhileItsReconcileRunsKeepsNoSeries() {
        // The SDK tells the deletion (cleanupDone → forget) while a reconcile of the cluster still runs.
        ReconcileMetrics.Reconcile running = metrics.start("ns", "a");
        ReconcileMetrics.Reconcile failing = metrics.start("ns", "a");
        metrics.forget("ns", "a");
        metrics.finished(running, "applied");
        metrics.failed(failing);
        assertThat(series("a")).isZero();

        // Created again under its name: a reconcile started after the deletion counts, even beside an old one.
        ReconcileMetrics.Reconcile old = metrics.start("ns", "b");
        metrics.forget("ns", "b");
        ReconcileMetrics.Reconcile recreated = metrics.start("ns", "b");
        metrics.finished(old, "applied");
        metrics.finished(recreated, "invalid");
        assertThat(reconciles("b", "applied")).isZero();
        assertThat(reconciles("b", "invalid")).isEqualTo(1);
        metrics.finished(metrics.start("ns", "a"), "applied");
        assertThat(reconciles("a", "applied")).isEqualTo(1);
    }

    @Test
    void aReconcileEndsOnce() {
        ReconcileMetrics.Reconcile once = metrics.start("ns", "a");
        metrics.finished(once, "applied");
        assertThatThrownBy(() -> metrics.finished(once, "applied")).isInstanceOf(IllegalStateException.class)
                .hasMessageContaining("ns/a");
    }
}
