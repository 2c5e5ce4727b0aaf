package io.pikv.operator.controller;

import io.micrometer.core.instrument.Counter;
import io.micrometer.core.instrument.Meter;
import io.micrometer.core.instrument.MeterRegistry;
import io.micrometer.core.instrument.Tags;
import io.micrometer.core.instrument.Timer;
import jakarta.enterprise.context.ApplicationScoped;

import java.time.Duration;

/**
 * Per-cluster reconcile metrics (Prometheus at {@code /q/metrics}): {@code pikv_operator_reconciles_total} by result
 * (applied, invalid, failed), {@code pikv_operator_reconcile_failures_total}, and
 * {@code pikv_operator_reconcile_duration_seconds} (a histogram with buckets from 5 ms to 10 s). JOSDK's own
 * ({@code reconciliations_*}, per controller) come beside them through {@link SdkMetrics}, which also removes a
 * deleted cluster's series ({@link #forget}) on the SDK's delete event.
 */
@ApplicationScoped
public class ReconcileMetrics {
    public static final String RECONCILES = "pikv.operator.reconciles";
    public static final String FAILURES = "pikv.operator.reconcile.failures";
    public static final String DURATION = "pikv.operator.reconcile.duration";

    /** Few, fixed histogram buckets: the series are per cluster, so percentile histograms would multiply them. */
    static final Duration[] BUCKETS = {Duration.ofMillis(5), Duration.ofMillis(10), Duration.ofMillis(25),
        Duration.ofMillis(50), Duration.ofMillis(100), Duration.ofMillis(250), Duration.ofMillis(500),
        Duration.ofSeconds(1), Duration.ofMillis(2500), Duration.ofSeconds(10)};

    private final MeterRegistry registry;

    public ReconcileMetrics(MeterRegistry registry) {
        this.registry = registry;
    }

    public Timer.Sample start() {
        return Timer.start(registry);
    }

    /**
     * A finished reconcile: {@code result} is applied (the current spec runs), invalid (the last valid one runs) or
     * blocked (nothing applied: an object of the cluster's names is not its own).
     */
    public void finished(Timer.Sample sample, String namespace, String cluster, String result) {
        Tags tags = Tags.of("namespace", namespace, "cluster", cluster);
        sample.stop(Timer.builder(DURATION).description("Time of one PiKVCluster reconcile").tags(tags)
                .serviceLevelObjectives(BUCKETS).register(registry));
        Counter.builder(RECONCILES).description("PiKVCluster reconciles by result").tags(tags.and("result", result))
                .register(registry).increment();
    }

    /** Removes every series of one cluster; returns how many. */
    public int forget(String namespace, String cluster) {
        int removed = 0;
        for (String name : new String[] {RECONCILES, FAILURES, DURATION}) {
            for (Meter meter : registry.find(name).tags("namespace", namespace, "cluster", cluster).meters()) {
                registry.remove(meter);
                removed++;
            }
        }
        return removed;
    }

    /** A reconcile that threw (it is retried with backoff). */
    public void failed(Timer.Sample sample, String namespace, String cluster) {
        finished(sample, namespace, cluster, "failed");
        Counter.builder(FAILURES).description("PiKVCluster reconciles that failed")
                .tags(Tags.of("namespace", namespace, "cluster", cluster)).register(registry).increment();
    }
}
