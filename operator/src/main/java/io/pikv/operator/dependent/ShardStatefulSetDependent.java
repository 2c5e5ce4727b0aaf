package io.pikv.operator.dependent;

import io.fabric8.kubernetes.api.model.apps.StatefulSet;
import io.javaoperatorsdk.operator.api.config.informer.Informer;
import io.javaoperatorsdk.operator.api.reconciler.Context;
import io.javaoperatorsdk.operator.processing.dependent.kubernetes.CRUDKubernetesDependentResource;
import io.javaoperatorsdk.operator.processing.dependent.kubernetes.KubernetesDependent;
import io.pikv.api.v1alpha1.PiKVCluster;
import io.pikv.operator.model.PiKVClusterResources;
import io.pikv.operator.model.ShardCluster;

/** The shard StatefulSet: one sidecar pod in the shard role per shard. */
@KubernetesDependent(informer = @Informer(labelSelector = PiKVClusterResources.MANAGED_SELECTOR))
public class ShardStatefulSetDependent extends CRUDKubernetesDependentResource<StatefulSet, PiKVCluster> {

    public ShardStatefulSetDependent() {
        super(StatefulSet.class);
    }

    @Override
    protected StatefulSet desired(PiKVCluster primary, Context<PiKVCluster> context) {
        return context.managedWorkflowAndDependentResourceContext()
                .getMandatory(ShardCluster.CONTEXT_KEY, ShardCluster.class).generateStatefulSet();
    }
}
