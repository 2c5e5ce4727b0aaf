package io.pikv.operator.config;

import io.fabric8.kubernetes.api.model.Quantity;
import io.javaoperatorsdk.operator.api.config.LeaderElectionConfiguration;
import io.pikv.operator.model.OperatorSettings;
import io.pikv.operator.model.PiKVClusterValidator;
import jakarta.inject.Singleton;
import jakarta.enterprise.inject.Produces;

import java.time.Duration;

/**
 * Beans built from {@link OperatorConfig}: the builders' plain settings and the leader election, which QOSDK turns
 * on for the profiles in {@code quarkus.operator-sdk.activate-leader-election-for-profiles} (prod).
 */
public class OperatorBeans {

    /** Longest reschedule interval accepted (a cluster left alone longer than a day is not being managed). */
    static final Duration MAX_INTERVAL = Duration.ofDays(1);
    /** Longest progress deadline accepted. */
    static final Duration MAX_DEADLINE = Duration.ofDays(365);

    @Produces
    @Singleton
    OperatorSettings operatorSettings(OperatorConfig config) {
        // The reconciler injects these settings, so a bad value of any pikv.operator.* key stops start-up here.
        interval("pikv.operator.resync-interval", config.resyncInterval());
        interval("pikv.operator.progress-interval", config.progressInterval());
        Duration deadline = config.progressDeadline();
        if (deadline.isNegative() || deadline.compareTo(MAX_DEADLINE) > 0
                || !deadline.isZero() && deadline.compareTo(Duration.ofSeconds(1)) < 0) {
            throw new IllegalArgumentException("pikv.operator.progress-deadline must be 0 (off) or from 1S to "
                    + MAX_DEADLINE.toDays() + "D, got " + deadline);
        }
        leaseName(config.leaseName());
        long overhead;
        try {
            overhead = PiKVClusterValidator.bytes(new Quantity(config.memoryOverhead()));
        } catch (IllegalArgumentException | ArithmeticException e) {
            throw new IllegalArgumentException("pikv.operator.memory-overhead '" + config.memoryOverhead()
                    + "' is not a quantity (e.g. 1Gi)");
        }
        return new OperatorSettings(config.sidecarImage(), overhead);
    }

    private static void interval(String key, Duration value) {
        if (value.compareTo(Duration.ofSeconds(1)) < 0 || value.compareTo(MAX_INTERVAL) > 0) {
            throw new IllegalArgumentException(key + " must be from 1S to " + MAX_INTERVAL.toHours() + "H, got "
                    + value);
        }
    }

    /** A Lease's name is a DNS-1123 subdomain. */
    private static void leaseName(String name) {
        if (name == null || name.length() > 253
                || !name.matches("[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")) {
            throw new IllegalArgumentException("pikv.operator.lease-name '" + name + "' is not a Lease name (lower-case"
                    + " letters, digits, '-' and '.', starting and ending with a letter or digit, at most 253)");
        }
    }

    @Produces
    @Singleton
    LeaderElectionConfiguration leaderElection(OperatorConfig config) {
        // Namespace left unset: the Lease goes to the namespace the operator runs in.
        return new LeaderElectionConfiguration(config.leaseName());
    }
}
