package io.pikv.operator.controller;

import io.micrometer.core.instrument.Counter;
import io.micrometer.core.instrument.Meter;
import io.micrometer.core.instrument.MeterRegistry;
import io.micrometer.core.instrument.Tags;
import io.micrometer.core.instrument.Timer;
import jakarta.enterprise.context.ApplicationScoped;

import java.time.Duration;
import java.util.HashMap;
import java.util.Map;

/**
 * Per-cluster reconcile metrics (Prometheus at {@code /q/metrics}): {@code pikv_operator_reconciles_total} by result
 * (applied, invalid, blocked, relabelled, failed), {@code pikv_operator_reconcile_failures_total}, and
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
    /** The clusters with a reconcile running, by {@code namespace/name}: guarded by {@code this}. */
    private final Map<String, Flight> flights = new HashMap<>();

    /** Reconciles of one cluster running now, and how often its series were removed meanwhile. */
    private static final class Flight {
        int running;
        long forgets;
    }

    /** One reconcile being timed: from {@link #start} to {@link #finished} or {@link #failed}. */
    public static final class Reconcile {
        private final Timer.Sample sample;
        private final String namespace;
        private final String cluster;
        private final long forgets;

        private Reconcile(Timer.Sample sample, String namespace, String cluster, long forgets) {
            this.sample = sample;
            this.namespace = namespace;
            this.cluster = cluster;
            this.forgets = forgets;
        }
    }

    public ReconcileMetrics(MeterRegistry registry) {
        this.registry = registry;
    }

    private static String key(String namespace, String cluster) {
        return namespace + "/" + cluster;
    }

    public synchronized Reconcile start(String namespace, String cluster) {
        Flight flight = flights.computeIfAbsent(key(namespace, cluster), k -> new Flight());
        flight.running++;
        return new Reconcile(Timer.start(registry), namespace, cluster, flight.forgets);
    }

    /**
     * A finished reconcile: {@code result} is applied (the current spec runs), invalid (the last valid one runs) or
     * blocked (nothing applied: an object of the cluster's names is not its own), relabelled (nothing applied: one of
     * its own objects had lost its label and was labelled again; the next reconcile applies). Not counted when the cluster was
     * deleted while it ran (its series were removed then and would otherwise come back for good).
     */
    public synchronized void finished(Reconcile reconcile, String result) {
        if (land(reconcile)) {
            count(reconcile, result);
        }
    }

    /** A reconcile that threw (it is retried with backoff); not counted when the cluster was deleted while it ran. */
    public synchronized void failed(Reconcile reconcile) {
        if (land(reconcile)) {
            count(reconcile, "failed");
            Counter.builder(FAILURES).description("PiKVCluster reconciles that failed")
                    .tags(Tags.of("namespace", reconcile.namespace, "cluster", reconcile.cluster)).register(registry)
                    .increment();
        }
    }

    /** Ends a reconcile's flight; whether its cluster's series were not removed since it started. */
    private boolean land(Reconcile reconcile) {
        String key = key(reconcile.namespace, reconcile.cluster);
        Flight flight = flights.get(key);
        if (flight == null) {
            throw new IllegalStateException("reconcile of " + key + " ended twice");
        }
        if (--flight.running == 0) {
            flights.remove(key);
        }
        return flight.forgets == reconcile.forgets;
    }

    private void count(Reconcile reconcile, String result) {
        Tags tags = Tags.of("namespace", reconcile.namespace, "cluster", reconcile.cluster);
        reconcile.sample.stop(Timer.builder(DURATION).description("Time of one PiKVCluster reconcile").tags(tags)
                .serviceLevelObjectives(BUCKETS).register(registry));
        Counter.builder(RECONCILES).description("PiKVCluster reconciles by result").tags(tags.and("result", result))
                .register(registry).increment();
    }

    /**
     * Removes every series of one cluster (it was deleted); returns how many. A reconcile of it still running
     * counts nothing when it ends; one started afterwards (the cluster created again under its name) counts.
     */
    public synchronized int forget(String namespace, String cluster) {
        Flight flight = flights.get(key(namespace, cluster));
        if (flight != null) {
            flight.forgets++;
        }
        int removed = 0;
        for (String name : new String[] {RECONCILES, FAILURES, DURATION}) {
            for (Meter meter : registry.find(name).tags("namespace", namespace, "cluster", cluster).meters()) {
                registry.remove(meter);
                removed++;
            }
        }
        return removed;
    }
}
