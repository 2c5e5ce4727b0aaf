package io.pikv.operator.dependent;

import io.fabric8.kubernetes.api.model.Service;
import io.javaoperatorsdk.operator.api.config.informer.Informer;
import io.javaoperatorsdk.operator.api.reconciler.Context;
import io.javaoperatorsdk.operator.processing.dependent.kubernetes.CRUDKubernetesDependentResource;
import io.javaoperatorsdk.operator.processing.dependent.kubernetes.KubernetesDependent;
import io.pikv.api.v1alpha1.PiKVCluster;
import io.pikv.operator.model.PiKVClusterResources;
import io.pikv.operator.model.ShardCluster;

/** The headless Service that gives every shard pod a stable DNS name. */
@KubernetesDependent(informer = @Informer(labelSelector = PiKVClusterResources.MANAGED_SELECTOR))
public class ShardHeadlessServiceDependent extends CRUDKubernetesDependentResource<Service, PiKVCluster> {

    public ShardHeadlessServiceDependent() {
        super(Service.class);
    }

    @Override
    protected Service desired(PiKVCluster primary, Context<PiKVCluster> context) {
        return context.managedWorkflowAndDependentResourceContext()
                .getMandatory(ShardCluster.CONTEXT_KEY, ShardCluster.class).generateHeadlessService();
    }
}
