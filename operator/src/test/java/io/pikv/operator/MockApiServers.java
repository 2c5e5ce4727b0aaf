package io.pikv.operator;

import io.fabric8.kubernetes.client.dsl.base.CustomResourceDefinitionContext;
import io.fabric8.kubernetes.client.server.mock.KubernetesMockServer;

/** What the tests' fabric8 mock API servers are told so that they behave as an API server does. */
public final class MockApiServers {
    private MockApiServers() {
    }

    /**
     * Serves StatefulSets with a status subresource, as an API server does: an update of the object keeps its status
     * (in CRUD mode the mock server otherwise replaces the status with the update's, none for an operator's write, so
     * every change of the StatefulSet read as shards no longer ready) and a status update changes nothing else.
     */
    public static void keepStatefulSetStatus(KubernetesMockServer server) {
        server.expectCustomResource(new CustomResourceDefinitionContext.Builder().withGroup("apps").withVersion("v1")
                .withPlural("statefulsets").withKind("StatefulSet").withScope("Namespaced").withStatusSubresource(true)
                .build());
    }
}
