package io.pikv.operator.config;

import io.pikv.operator.model.OperatorSettings;
import org.junit.jupiter.api.Test;

import java.time.Duration;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/** The operator's own settings: what start-up builds from them and what it refuses, with the setting named. */
class OperatorBeansTest {

    static OperatorConfig config(String image, String overhead) {
        return config(image, overhead, Duration.ofMinutes(5), Duration.ofSeconds(10), Duration.ofMinutes(10),
                "pikv-operator-lease");
    }

    static OperatorConfig config(String image, String overhead, Duration resync, Duration progress, Duration deadline,
                                 String lease) {
        return new OperatorConfig() {
            @Override
            public String sidecarImage() {
                return image;
            }

            @Override
            public String memoryOverhead() {
                return overhead;
            }

            @Override
            public Duration resyncInterval() {
                return resync;
            }

            @Override
            public Duration progressInterval() {
                return progress;
            }

            @Override
            public Duration progressDeadline() {
                return deadline;
            }

            @Override
            public String leaseName() {
                return lease;
            }
        };
    }

    @Test
    void settingsComeFromTheConfiguration() {
        OperatorSettings s = new OperatorBeans().operatorSettings(config("registry.local/pikv/sidecar:1.2", "1536Mi"));
        assertThat(s.sidecarImage()).isEqualTo("registry.local/pikv/sidecar:1.2");
        assertThat(s.memoryOverheadBytes()).isEqualTo(1536L << 20);
        assertThat(new OperatorBeans().operatorSettings(config("i", "512Mi")).memoryOverheadBytes())
                .as("the least overhead accepted").isEqualTo(512L << 20);
    }

    @Test
    void badSettingsStopStartUpNamingTheSetting() {
        assertThatThrownBy(() -> new OperatorBeans().operatorSettings(config(" ", "1Gi")))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessage("pikv.operator.sidecar-image must name an image");
        assertThatThrownBy(() -> new OperatorBeans().operatorSettings(config("i", "256Mi")))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessage("pikv.operator.memory-overhead must be at least 512Mi, got 268435456 bytes");
        assertThatThrownBy(() -> new OperatorBeans().operatorSettings(config("i", "lots")))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessage("pikv.operator.memory-overhead 'lots' is not a quantity (e.g. 1Gi)");
    }

    @Test
    void intervalsDeadlineAndLeaseNameAreChecked() {
        Duration m5 = Duration.ofMinutes(5);
        Duration s10 = Duration.ofSeconds(10);
        Duration m10 = Duration.ofMinutes(10);
        OperatorBeans beans = new OperatorBeans();
        // The bounds themselves (resync 1S, progress 24H; resync 24H, progress 1S), and a deadline of 0 (off) or 365D.
        org.assertj.core.api.Assertions.assertThatNoException().isThrownBy(() -> {
            beans.operatorSettings(config("i", "1Gi", Duration.ofSeconds(1), Duration.ofDays(1), Duration.ZERO,
                    "a.b-c"));
            beans.operatorSettings(config("i", "1Gi", Duration.ofDays(1), Duration.ofSeconds(1), Duration.ofDays(365),
                    "a.b-c"));
        });
        assertThatThrownBy(() -> beans.operatorSettings(config("i", "1Gi", Duration.ZERO, s10, m10, "l")))
                .hasMessage("pikv.operator.resync-interval must be from 1S to 24H, got PT0S");
        assertThatThrownBy(() -> beans.operatorSettings(config("i", "1Gi", m5, Duration.ofMillis(-5), m10, "l")))
                .hasMessage("pikv.operator.progress-interval must be from 1S to 24H, got PT-0.005S");
        assertThatThrownBy(() -> beans.operatorSettings(config("i", "1Gi", m5, Duration.ofHours(25), m10, "l")))
                .hasMessage("pikv.operator.progress-interval must be from 1S to 24H, got PT25H");
        assertThatThrownBy(() -> beans.operatorSettings(config("i", "1Gi", m5, s10, Duration.ofSeconds(-1), "l")))
                .hasMessage("pikv.operator.progress-deadline must be 0 (off) or from 1S to 365D, got PT-1S");
        assertThatThrownBy(() -> beans.operatorSettings(config("i", "1Gi", m5, s10, Duration.ofMillis(500), "l")))
                .hasMessageStartingWith("pikv.operator.progress-deadline must be 0 (off)");
        assertThatThrownBy(() -> beans.operatorSettings(config("i", "1Gi", m5, s10, m10, "Lease_1")))
                .hasMessageStartingWith("pikv.operator.lease-name 'Lease_1' is not a Lease name");
        for (String image : new String[] {"reg/pikv:1 ", "REGISTRY/pikv/sidecar:0.1.0", "pikv/sidecar:",
            "pikv/sidecar@sha256:abc", "pikv//sidecar", "-pikv/sidecar"}) {
            assertThatThrownBy(() -> beans.operatorSettings(config(image, "1Gi"))).as(image)
                    .hasMessage("pikv.operator.sidecar-image '" + image + "' is not an image reference "
                            + "([registry/]lower-case/path[:tag][@sha256:digest]): every shard pod would fail to pull it");
        }
        for (String image : new String[] {"pikv/sidecar:0.1.0", "registry.local:5000/team/pikv-sidecar:1.2_rc.1",
            "localhost/pikv", "ghcr.io/o/r@sha256:" + "a".repeat(64), "quay.io/o/r:v1@sha256:" + "0".repeat(64)}) {
            assertThat(beans.operatorSettings(config(image, "1Gi")).sidecarImage()).as(image).isEqualTo(image);
        }
        assertThatThrownBy(() -> beans.operatorSettings(config("i", "1Ti")))
                .hasMessage("pikv.operator.memory-overhead must be at most 64Gi (it is added to every shard that "
                        + "gives no memory), got 1024Gi");
    }
}
