package io.pikv.operator.config;

import io.pikv.operator.model.OperatorSettings;
import org.junit.jupiter.api.Test;

import java.time.Duration;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/** The operator's own settings: what start-up builds from them and what it refuses, with the setting named. */
class OperatorBeansTest {

    static OperatorConfig config(String image, String overhead) {
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
                return Duration.ofMinutes(5);
            }

            @Override
            public Duration progressInterval() {
                return Duration.ofSeconds(10);
            }

            @Override
            public Duration progressDeadline() {
                return Duration.ofMinutes(10);
            }

            @Override
            public String leaseName() {
                return "pikv-operator-lease";
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
}
