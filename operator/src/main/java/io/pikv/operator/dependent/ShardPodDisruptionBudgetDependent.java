package io.pikv.operator.dependent;

import io.fabric8.kubernetes.api.model.policy.v1.PodDisruptionBudget;
import io.javaoperatorsdk.operator.api.config.informer.Informer;
import io.javaoperatorsdk.operator.api.reconciler.Context;
import io.javaoperatorsdk.operator.processing.dependent.kubernetes.CRUDKubernetesDependentResource;
import io.javaoperatorsdk.operator.processing.dependent.kubernetes.KubernetesDependent;
import io.pikv.api.v1alpha1.PiKVCluster;
import io.pikv.operator.model.PiKVClusterResources;
import io.pikv.operator.model.ShardCluster;

/** The PodDisruptionBudget that lets voluntary disruptions take one shard at a time. */
@KubernetesDependent(informer = @Informer(labelSelector = PiKVClusterResources.MANAGED_SELECTOR))
public class ShardPodDisruptionBudgetDependent extends CRUDKubernetesDependentResource<PodDisruptionBudget, PiKVCluster> {

    public ShardPodDisruptionBudgetDependent() {
        super(PodDisruptionBudget.class);
    }

    @Override
    protected PodDisruptionBudget desired(PiKVCluster primary, Context<PiKVCluster> context) {
        return context.managedWorkflowAndDependentResourceContext()
                .getMandatory(ShardCluster.CONTEXT_KEY, ShardCluster.class).generatePodDisruptionBudget();
    }
}
