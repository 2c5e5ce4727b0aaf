package io.pikv.operator.dependent;

import io.fabric8.kubernetes.api.model.ConfigMap;
import io.javaoperatorsdk.operator.api.config.informer.Informer;
import io.javaoperatorsdk.operator.api.reconciler.Context;
import io.javaoperatorsdk.operator.processing.dependent.kubernetes.CRUDKubernetesDependentResource;
import io.javaoperatorsdk.operator.processing.dependent.kubernetes.KubernetesDependent;
import io.pikv.api.v1alpha1.PiKVCluster;
import io.pikv.operator.model.PiKVClusterResources;
import io.pikv.operator.model.ShardCluster;

/** The ConfigMap with the rendered sidecar settings and the control state (shard map, policy, budget). */
@KubernetesDependent(informer = @Informer(labelSelector = PiKVClusterResources.MANAGED_SELECTOR))
public class ShardConfigMapDependent extends CRUDKubernetesDependentResource<ConfigMap, PiKVCluster> {

    public ShardConfigMapDependent() {
        super(ConfigMap.class);
    }

    @Override
    protected ConfigMap desired(PiKVCluster primary, Context<PiKVCluster> context) {
        return context.managedWorkflowAndDependentResourceContext()
                .getMandatory(ShardCluster.CONTEXT_KEY, ShardCluster.class).generateConfigMap();
    }
}
