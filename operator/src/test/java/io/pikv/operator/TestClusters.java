package io.pikv.operator;

import io.fabric8.kubernetes.api.model.ObjectMetaBuilder;
import io.fabric8.kubernetes.api.model.Quantity;
import io.pikv.api.v1alpha1.ModelSpec;
import io.pikv.api.v1alpha1.PiKVCluster;
import io.pikv.api.v1alpha1.PiKVClusterSpec;

import java.util.UUID;

/** PiKVClusters for tests. */
public final class TestClusters {
    private TestClusters() {
    }

    /** A small valid cluster: 4 layers, 8 query / 2 KV heads of 64, 8 experts top-2, 2 shards of 64 MiB. */
    public static PiKVCluster small(String name, String namespace) {
        PiKVClusterSpec spec = new PiKVClusterSpec();
        spec.setModel(new ModelSpec(4, 8, 2, 64, 8, 2));
        spec.setShards(2);
        spec.setMemoryPerShard(new Quantity("64Mi"));
        return cluster(name, namespace, spec);
    }

    /** Mixtral-8x7B's shape: 32 layers, 32 query / 8 KV heads of 128, 8 experts top-2. */
    public static PiKVCluster mixtral(String name, String namespace) {
        PiKVClusterSpec spec = new PiKVClusterSpec();
        spec.setModel(new ModelSpec(32, 32, 8, 128, 8, 2));
        spec.setShards(4);
        spec.setMemoryPerShard(new Quantity("8Gi"));
        return cluster(name, namespace, spec);
    }

    public static PiKVCluster cluster(String name, String namespace, PiKVClusterSpec spec) {
        PiKVCluster c = new PiKVCluster();
        c.setMetadata(new ObjectMetaBuilder().withName(name).withNamespace(namespace)
                .withUid(UUID.nameUUIDFromBytes(name.getBytes()).toString()).withGeneration(1L).build());
        c.setSpec(spec);
        return c;
    }
}
