package io.pikv.sidecar;

import io.quarkus.arc.Arc;
import io.quarkus.test.junit.callback.QuarkusTestBeforeEachCallback;
import io.quarkus.test.junit.callback.QuarkusTestMethodContext;

import java.time.Duration;

import static org.awaitility.Awaitility.await;

/**
 * Before the first test of the application, waits until it serves KV: it has read the suite broker's control topic
 * to its end. Until then KV requests answer 503 not-ready, which no test of the API means to exercise by chance.
 */
public class AwaitServing implements QuarkusTestBeforeEachCallback {
    private static volatile boolean serving;

    @Override
    public void beforeEach(QuarkusTestMethodContext context) {
        if (serving) {
            return;
        }
        Sidecar sidecar = Arc.container().instance(Sidecar.class).get();
        await().atMost(Duration.ofSeconds(30)).ignoreException(NotReadyException.class).until(() -> {
            sidecar.checkServing();
            return true;
        });
        serving = true;
    }
}
