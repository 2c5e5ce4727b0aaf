package io.pikv.sidecar.kafka;

import io.quarkus.test.common.QuarkusTestResourceLifecycleManager;
import io.quarkus.test.common.TestResourceScope;
import io.quarkus.test.common.WithTestResource;

import java.util.Map;

/**
 * Points every {@code @QuarkusTest} of this module at the JVM's one test broker ({@link TestKafka}); global, so
 * all test classes share one configuration and one application start. The broker outlives the application: it
 * closes when the JVM exits, after the application's clients.
 */
@WithTestResource(value = KafkaTestResource.class, scope = TestResourceScope.GLOBAL)
public class KafkaTestResource implements QuarkusTestResourceLifecycleManager {

    @Override
    public Map<String, String> start() {
        return Map.of("kafka.bootstrap.servers", TestKafka.bootstrap());
    }

    @Override
    public void stop() {
        // The broker is shared with plain tests in the same JVM; TestKafka closes it at exit.
    }
}
