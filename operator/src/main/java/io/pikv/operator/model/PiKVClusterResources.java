package io.pikv.operator.model;

import io.pikv.api.v1alpha1.PiKVCluster;

import java.util.LinkedHashMap;
import java.util.Map;
import java.util.stream.Collectors;

/**
 * The one place that names a cluster's objects and labels them; nothing else concatenates these names.
 *
 * <p>For a cluster {@code c}: StatefulSet and PodDisruptionBudget {@code c-shard}, pods {@code c-shard-<i>}, headless
 * Service {@code c-shards} (pod DNS {@code c-shard-<i>.c-shards.<ns>.svc}), ConfigMap {@code c-config}.
 */
public final class PiKVClusterResources {

    public static final String LABEL_NAME = "app.kubernetes.io/name";
    public static final String LABEL_INSTANCE = "app.kubernetes.io/instance";
    public static final String LABEL_COMPONENT = "app.kubernetes.io/component";
    public static final String LABEL_PART_OF = "app.kubernetes.io/part-of";
    public static final String LABEL_MANAGED_BY = "app.kubernetes.io/managed-by";
    public static final String LABEL_CLUSTER = "pikv.io/cluster";
    /** Set by the StatefulSet controller on every pod (Kubernetes 1.28+); the sidecar's shard id comes from it. */
    public static final String LABEL_POD_INDEX = "apps.kubernetes.io/pod-index";

    public static final String APP = "pikv";
    public static final String COMPONENT_SHARD = "shard";
    public static final String MANAGED_BY = "pikv-operator";
    /** The informers of the operator's dependents watch only objects with this label. */
    public static final String MANAGED_SELECTOR = LABEL_MANAGED_BY + "=" + MANAGED_BY;

    /** Hash of the settings the shard pods read at start-up; a new value rolls them. */
    public static final String ANNOTATION_CONFIG_HASH = "pikv.io/config-hash";

    /** The sidecar's HTTP port (API, health, metrics). */
    public static final int HTTP_PORT = 8080;
    public static final String HTTP_PORT_NAME = "http";
    public static final String CONTAINER_NAME = "sidecar";

    private PiKVClusterResources() {
    }

    public static String shardStatefulSetName(String cluster) {
        return cluster + "-shard";
    }

    public static String shardPodName(String cluster, int shard) {
        return shardStatefulSetName(cluster) + "-" + shard;
    }

    public static String headlessServiceName(String cluster) {
        return cluster + "-shards";
    }

    public static String configMapName(String cluster) {
        return cluster + "-config";
    }

    public static String podDisruptionBudgetName(String cluster) {
        return shardStatefulSetName(cluster);
    }

    /** A shard's base URL through the headless Service (what a gateway lists in {@code pikv.gateway.shards}). */
    public static String shardUrl(String cluster, String namespace, int shard) {
        return "http://" + shardPodName(cluster, shard) + "." + headlessServiceName(cluster) + "." + namespace
                + ".svc:" + HTTP_PORT;
    }

    /** Labels that select a cluster's shard pods (StatefulSet, Service, PDB selectors; status.selector). */
    public static Map<String, String> selectorLabels(String cluster) {
        Map<String, String> labels = new LinkedHashMap<>();
        labels.put(LABEL_NAME, APP);
        labels.put(LABEL_INSTANCE, cluster);
        labels.put(LABEL_COMPONENT, COMPONENT_SHARD);
        return labels;
    }

    /** Labels of every object the operator creates for a cluster. */
    public static Map<String, String> labels(String cluster) {
        Map<String, String> labels = selectorLabels(cluster);
        labels.put(LABEL_PART_OF, APP);
        labels.put(LABEL_MANAGED_BY, MANAGED_BY);
        labels.put(LABEL_CLUSTER, cluster);
        return labels;
    }

    /** {@link #selectorLabels} as a label selector string ({@code k=v,k=v}), for the scale subresource. */
    public static String selector(String cluster) {
        return selectorLabels(cluster).entrySet().stream().map(e -> e.getKey() + "=" + e.getValue())
                .collect(Collectors.joining(","));
    }

    public static String clusterName(PiKVCluster cluster) {
        return cluster.getMetadata().getName();
    }
}
