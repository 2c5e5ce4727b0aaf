package io.pikv.operator.config;

import io.fabric8.kubernetes.api.model.Quantity;
import io.javaoperatorsdk.operator.api.config.LeaderElectionConfiguration;
import io.pikv.operator.model.OperatorSettings;
import io.pikv.operator.model.PiKVClusterValidator;
import jakarta.inject.Singleton;
import jakarta.enterprise.inject.Produces;

/**
 * Beans built from {@link OperatorConfig}: the builders' plain settings and the leader election, which QOSDK turns
 * on for the profiles in {@code quarkus.operator-sdk.activate-leader-election-for-profiles} (prod).
 */
public class OperatorBeans {

    @Produces
    @Singleton
    OperatorSettings operatorSettings(OperatorConfig config) {
        long overhead;
        try {
            overhead = PiKVClusterValidator.bytes(new Quantity(config.memoryOverhead()));
        } catch (IllegalArgumentException | ArithmeticException e) {
            throw new IllegalArgumentException("pikv.operator.memory-overhead '" + config.memoryOverhead()
                    + "' is not a quantity (e.g. 1Gi)");
        }
        return new OperatorSettings(config.sidecarImage(), overhead);
    }

    @Produces
    @Singleton
    LeaderElectionConfiguration leaderElection(OperatorConfig config) {
        // Namespace left unset: the Lease goes to the namespace the operator runs in.
        return new LeaderElectionConfiguration(config.leaseName());
    }
}
