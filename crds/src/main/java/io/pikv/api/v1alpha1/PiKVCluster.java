package io.pikv.api.v1alpha1;

import io.fabric8.crd.generator.annotation.AdditionalPrinterColumn;
import io.fabric8.generator.annotation.ValidationRule;
import io.fabric8.kubernetes.api.model.Namespaced;
import io.fabric8.kubernetes.client.CustomResource;
import io.fabric8.kubernetes.model.annotation.Group;
import io.fabric8.kubernetes.model.annotation.Kind;
import io.fabric8.kubernetes.model.annotation.Plural;
import io.fabric8.kubernetes.model.annotation.ShortNames;
import io.fabric8.kubernetes.model.annotation.Singular;
import io.fabric8.kubernetes.model.annotation.Version;

/**
 * A PiKV cluster: expert-sharded KV-cache shards (a StatefulSet of sidecars in the shard role) for one MoE model,
 * reconciled by the PiKV operator. {@code kubectl get pikv} shows shards, hit rate, policy and readiness at a glance;
 * {@code kubectl scale pikv NAME --replicas N} changes {@code spec.shards}.
 */
@Group(PiKVCluster.GROUP)
@Version(PiKVCluster.VERSION)
@Kind(PiKVCluster.KIND)
@Plural(PiKVCluster.PLURAL)
@Singular("pikvcluster")
@ShortNames("pikv")
@ValidationRule(value = "self.metadata.name.size() <= " + PiKVCluster.MAX_NAME_LENGTH,
        message = "metadata.name must be at most " + PiKVCluster.MAX_NAME_LENGTH
                + " characters: shard pod names and their labels are derived from it")
@ValidationRule(value = "self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",
        message = "metadata.name must be lower-case letters, digits and '-', starting with a letter and ending with a"
                + " letter or digit: the cluster's headless Service is named after it")
@AdditionalPrinterColumn(name = "Ready Shards", type = AdditionalPrinterColumn.Type.INTEGER,
        jsonPath = ".status.readyShards", getDescription = "Shard pods that pass their readiness probe")
@AdditionalPrinterColumn(name = "Shards", type = AdditionalPrinterColumn.Type.INTEGER, jsonPath = ".status.desiredShards",
        getDescription = "Shards of the spec being run")
@AdditionalPrinterColumn(name = "Hit Rate", type = AdditionalPrinterColumn.Type.NUMBER, jsonPath = ".status.hitRate",
        getDescription = "KV lookups that found their entry resident, over the last telemetry window")
@AdditionalPrinterColumn(name = "Policy", type = AdditionalPrinterColumn.Type.STRING, jsonPath = ".status.activePolicy",
        getDescription = "The eviction policy the shards run")
@AdditionalPrinterColumn(name = "Ready", type = AdditionalPrinterColumn.Type.STRING,
        jsonPath = ".status.conditions[?(@.type==\"Ready\")].status", getDescription = "The Ready condition")
@AdditionalPrinterColumn(name = "Age", type = AdditionalPrinterColumn.Type.DATE, jsonPath = ".metadata.creationTimestamp")
public class PiKVCluster extends CustomResource<PiKVClusterSpec, PiKVClusterStatus> implements Namespaced {

    public static final String GROUP = "pikv.io";
    public static final String VERSION = "v1alpha1";
    public static final String KIND = "PiKVCluster";
    public static final String PLURAL = "pikvclusters";
    /** The CRD's name, and the stem of its committed file ({@code pikvclusters.pikv.io-v1.yml}). */
    public static final String CRD_NAME = PLURAL + "." + GROUP;
    /**
     * Longest cluster name: a shard pod is {@code <name>-shard-<ordinal>} and the StatefulSet's
     * {@code controller-revision-hash} label adds a hash to it, all within 63 characters.
     */
    public static final int MAX_NAME_LENGTH = 40;

    @Override
    protected PiKVClusterSpec initSpec() {
        return new PiKVClusterSpec();
    }

    @Override
    protected PiKVClusterStatus initStatus() {
        return new PiKVClusterStatus();
    }
}
