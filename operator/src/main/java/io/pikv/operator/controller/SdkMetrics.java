package io.pikv.operator.controller;

import io.fabric8.kubernetes.api.model.HasMetadata;
import io.javaoperatorsdk.operator.api.monitoring.Metrics;
import io.javaoperatorsdk.operator.api.reconciler.RetryInfo;
import io.javaoperatorsdk.operator.monitoring.micrometer.MicrometerMetricsV2;
import io.javaoperatorsdk.operator.processing.Controller;
import io.javaoperatorsdk.operator.processing.event.Event;
import io.javaoperatorsdk.operator.processing.event.ResourceID;
import io.micrometer.core.instrument.MeterRegistry;
import jakarta.inject.Singleton;

import java.util.Map;

/**
 * The SDK's metrics as the operator SDK extension makes them by default (JOSDK's Micrometer metrics, version 2), plus
 * one thing: when the SDK is done with a deleted {@code PiKVCluster} ({@link #cleanupDone}, on the delete event, with no
 * finalizer needed), the operator's own per-cluster series ({@link ReconcileMetrics}) go too, so that deleted clusters
 * do not stay on {@code /q/metrics} until the operator restarts, and so does the status last written to it
 * ({@link WrittenStatuses}). This bean replaces the extension's default one.
 */
@Singleton
public class SdkMetrics implements Metrics {
    private final Metrics sdk;
    private final ReconcileMetrics reconciles;
    private final WrittenStatuses written;

    public SdkMetrics(MeterRegistry registry, ReconcileMetrics reconciles, WrittenStatuses written) {
        this.sdk = MicrometerMetricsV2.newBuilder(registry).build();
        this.reconciles = reconciles;
        this.written = written;
    }

    @Override
    public void cleanupDone(ResourceID resource, Map<String, Object> metadata) {
        sdk.cleanupDone(resource, metadata);
        reconciles.forget(resource.getNamespace().orElse(""), resource.getName());
        written.forget(resource.getNamespace().orElse(""), resource.getName()); // and its last written status
    }

    @Override
    public void controllerRegistered(Controller<? extends HasMetadata> controller) {
        sdk.controllerRegistered(controller);
    }

    @Override
    public void eventReceived(Event event, Map<String, Object> metadata) {
        sdk.eventReceived(event, metadata);
    }

    @Override
    public void reconciliationSubmitted(HasMetadata resource, RetryInfo retry, Map<String, Object> metadata) {
        sdk.reconciliationSubmitted(resource, retry, metadata);
    }

    @Override
    public void reconciliationStarted(HasMetadata resource, Map<String, Object> metadata) {
        sdk.reconciliationStarted(resource, metadata);
    }

    @Override
    public void reconciliationFailed(HasMetadata resource, RetryInfo retry, Exception exception,
                                     Map<String, Object> metadata) {
        sdk.reconciliationFailed(resource, retry, exception, metadata);
    }

    @Override
    public void reconciliationSucceeded(HasMetadata resource, Map<String, Object> metadata) {
        sdk.reconciliationSucceeded(resource, metadata);
    }

    @Override
    public void reconciliationFinished(HasMetadata resource, RetryInfo retry, Map<String, Object> metadata) {
        sdk.reconciliationFinished(resource, retry, metadata);
    }

    @Override
    public <T> T timeControllerExecution(ControllerExecution<T> execution) throws Exception {
        return sdk.timeControllerExecution(execution);
    }
}
