package io.pikv.sidecar;

import io.pikv.kv.compute.ComputeBackends;
import io.smallrye.config.PropertiesConfigSource;
import io.smallrye.config.SmallRyeConfig;
import io.smallrye.config.SmallRyeConfigBuilder;
import org.junit.jupiter.api.Test;

import java.util.HashMap;
import java.util.Map;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.junit.jupiter.api.Assumptions.assumeFalse;

/** pikv.compute at start-up: cuda without a usable device stops start-up with the reason; auto and cpu run. */
class ComputeSelectionTest {
    static SidecarConfig config(String compute) {
        return config(compute, 32);
    }

    static SidecarConfig config(String compute, int pageTokens) {
        Map<String, String> values = new HashMap<>();
        values.put("pikv.compute", compute);
        values.put("pikv.store.page-tokens", String.valueOf(pageTokens));
        values.put("pikv.store.budget-bytes", String.valueOf(1L << 20));
        return config(values);
    }

    /** The sidecar's settings from {@code values} (defaults for the rest), as Quarkus would map them. */
    static SidecarConfig config(Map<String, String> values) {
        SmallRyeConfig config = new SmallRyeConfigBuilder().withMapping(SidecarConfig.class)
                .withConverter(java.time.Duration.class, 200, new io.quarkus.runtime.configuration.DurationConverter())
                .withSources(new PropertiesConfigSource(values, "test", 500)).build();
        return config.getConfigMapping(SidecarConfig.class);
    }

    @Test
    void settingsOutOfRangeStopStartUpWithTheReason() {
        String[][] cases = {
            {"pikv.shard-id", "-1", "invalid configuration pikv.shard-id: a shard id is >= 0, got -1"},
            {"pikv.cluster", "ns/my cluster", "invalid configuration pikv.cluster: a cluster name is a non-empty name "
                + "without whitespace (the operator sets <namespace>/<name>), got 'ns/my cluster'"},
            {"pikv.api.max-body-bytes", "0", "invalid configuration pikv.api.max-body-bytes: the largest request "
                + "body must be at least 1 byte, got 0"},
            {"pikv.control.startup-wait", "-5s", "invalid configuration pikv.control.startup-wait: the start-up "
                + "wait is from 0 to 1 day, got PT-5S"},
            {"pikv.control.startup-wait", "400000000000d", "invalid configuration pikv.control.startup-wait: the "
                + "start-up wait is from 0 to 1 day"},
            {"pikv.telemetry.window", "400000000000d", "invalid configuration pikv.telemetry.window: a telemetry "
                + "window is from 1 ms to 1 h"},
            {"pikv.telemetry.send-timeout", "400000000000d", "invalid configuration pikv.telemetry.send-timeout: a "
                + "send may take from 1 s"},
            {"pikv.control.topic", "pikv.cache-events", "invalid configuration pikv.telemetry.topic and "
                + "pikv.control.topic: telemetry and control need topics of their own (control is a compacted topic "
                + "of desired states), got 'pikv.cache-events' for both"},
            {"pikv.store.buckets", "2048", "invalid configuration pikv.store.*: buckets must be a power of two in "
                + "[1, 1024], got 2048"},
            {"pikv.sequence-idle-timeout", "30s", "invalid configuration pikv.sequence-idle-timeout: the idle "
                + "timeout of a sequence is 0 (never) or from 1 min (longer than a call may take) to 36,500 days, "
                + "got PT30S"},
            {"pikv.sequence-idle-timeout", "-1h", "invalid configuration pikv.sequence-idle-timeout: the idle "
                + "timeout of a sequence is 0 (never) or from 1 min"},
            {"pikv.sequence-idle-timeout", "40000d", "invalid configuration pikv.sequence-idle-timeout: the idle "
                + "timeout of a sequence is 0 (never) or from 1 min"},
            {"pikv.control.topic", "pikv control", "invalid configuration pikv.control.topic: a Kafka topic name is "
                + "1 to 249 of the characters a-z A-Z 0-9 . _ - (and not . or ..), got 'pikv control'"},
            {"pikv.telemetry.topic", "..", "invalid configuration pikv.telemetry.topic: a Kafka topic name is"},
            {"pikv.store.budget-bytes", String.valueOf(Long.MAX_VALUE / 2), "invalid configuration "
                + "pikv.store.budget-bytes: a budget of " + Long.MAX_VALUE / 2 + " bytes exceeds the "},
            {"pikv.telemetry.buffer-records", "1", "invalid configuration pikv.telemetry.buffer-records: the "
                + "telemetry buffer holds at least two records (one may wait for a retry), got 1"},
            {"pikv.telemetry.window", "0s", "invalid configuration pikv.telemetry.window: a telemetry window is from "
                + "1 ms to 1 h"},
            {"pikv.telemetry.send-timeout", "30d", "invalid configuration pikv.telemetry.send-timeout: a send may "
                + "take from 1 s to 24 days"},
            {"pikv.store.eviction-parameters", "window", "invalid configuration pikv.store.eviction-parameters: "
                + "eviction parameters are name=value pairs"},
            {"pikv.store.pyramid.budget", "1.5", "invalid configuration pikv.store.pyramid.*: pyramid budget is the "
                + "fraction of tokens kept, in (0, 1], got 1.5"},
            {"pikv.store.pyramid.beta", "0.5", "invalid configuration pikv.store.pyramid.budget: "
                + "pikv.store.pyramid.beta, sinks or window is set but the budget is not"},
            {"pikv.store.kernel", "simd", "invalid configuration pikv.store.*: the attention kernel must be auto, "
                + "vector or scalar, got 'simd'"}};
        for (String[] c : cases) {
            Map<String, String> values = new HashMap<>();
            values.put(c[0], c[1]);
            SidecarConfig config = config(values);
            assertThatThrownBy(() -> new Sidecar(config)).as(c[0]).isInstanceOf(IllegalStateException.class)
                    .hasMessageStartingWith(c[2]);
        }
        // A parameter out of its range is the parameters' setting's fault, an unknown name the policy's.
        assertThatThrownBy(() -> new Sidecar(config(Map.of("pikv.store.eviction", "streaming",
                "pikv.store.eviction-parameters", "window=-1")))).isInstanceOf(IllegalStateException.class)
                .hasMessageStartingWith("invalid configuration pikv.store.eviction-parameters: parameter window must be");
        assertThatThrownBy(() -> new Sidecar(config(Map.of("pikv.store.eviction", "fifo",
                "pikv.store.eviction-parameters", "window=4")))).isInstanceOf(IllegalStateException.class)
                .hasMessageStartingWith("invalid configuration pikv.store.eviction: unknown eviction policy 'fifo'");
    }

    @Test
    void gatewayTimeoutsOutOfRangeStopStartUp() {
        // (200000000000d: a duration whose milliseconds overflow a long; PT0.0005S: below 1 ms, would be cut to 0.)
        for (String[] c : new String[][] {{"pikv.gateway.call-timeout", "0s"}, {"pikv.gateway.connect-timeout", "-1s"},
            {"pikv.gateway.call-timeout", "30d"}, {"pikv.gateway.call-timeout", "200000000000d"},
            {"pikv.gateway.connect-timeout", "PT0.0005S"}, {"pikv.gateway.idle-connections", "-1"}}) {
            Map<String, String> values = new HashMap<>();
            values.put("pikv.role", "gateway");
            values.put("pikv.gateway.shards", "http://127.0.0.1:1");
            values.put("pikv.store.budget-bytes", String.valueOf(1L << 20));
            values.put(c[0], c[1]);
            SidecarConfig config = config(values);
            assertThatThrownBy(() -> new Sidecar(config)).as(c[0] + "=" + c[1])
                    .isInstanceOf(IllegalStateException.class).hasMessageStartingWith("invalid configuration "
                            + "pikv.gateway.*: pikv.gateway." + (c[0].endsWith("idle-connections")
                            ? "idle-connections must be >= 0" : "connect-timeout and call-timeout must be from 1 ms"));
        }
    }

    @Test
    void aGatewaysIdleTimeoutOutlastsItsCalls() {
        Map<String, String> values = new HashMap<>();
        values.put("pikv.role", "gateway");
        values.put("pikv.gateway.shards", "http://127.0.0.1:1");
        values.put("pikv.store.budget-bytes", String.valueOf(1L << 20));
        values.put("pikv.gateway.call-timeout", "2m");
        values.put("pikv.sequence-idle-timeout", "3m");
        SidecarConfig config = config(values);
        assertThatThrownBy(() -> new Sidecar(config)).isInstanceOf(IllegalStateException.class)
                .hasMessage("invalid configuration pikv.sequence-idle-timeout: a gateway's idle timeout must be at "
                        + "least twice pikv.gateway.call-timeout (PT2M), got PT3M");
    }

    @Test
    void aGatewaysShardListAndRoutingAreCheckedAtStartUp() {
        String[][] cases = {
            {null, null, "pikv.gateway.shards must list the shards' base URLs"},
            {"http://127.0.0.1:1,http://shard 1:8080", null, "'http://shard 1:8080' is not a URL: "},
            {"127.0.0.1:8080", null, "'127.0.0.1:8080' has no scheme: list each shard as http://host:port"},
            {"http://", null, "'http://' is not a URL: "},
            {"ftp://shard-0:21", null, "'ftp://shard-0:21' is not an http or https URL"},
            {"http://shard-0:8080/v1", null, "'http://shard-0:8080/v1' must be an origin (scheme, host and port)"},
            {"http://shard-0:8080", "round-robin", "routing must be hash or cache-aware, got 'round-robin'"},
            {"http://Shard-0:80,http://shard-1:8080,http://shard-0/", null, "pikv.gateway.shards lists the shard "
                + "http://shard-0:80 twice ('http://Shard-0:80' and 'http://shard-0/'): list each shard once"}};
        for (String[] c : cases) {
            Map<String, String> values = new HashMap<>();
            values.put("pikv.role", "gateway");
            values.put("pikv.store.budget-bytes", String.valueOf(1L << 20));
            if (c[0] != null) {
                values.put("pikv.gateway.shards", c[0]);
            }
            if (c[1] != null) {
                values.put("pikv.gateway.routing", c[1]);
            }
            SidecarConfig config = config(values);
            assertThatThrownBy(() -> new Sidecar(config)).as(c[0] + " / " + c[1])
                    .isInstanceOf(IllegalStateException.class)
                    .hasMessageStartingWith("invalid configuration pikv.gateway.*: " + c[2]);
        }
    }

    @Test
    void cacheAwareKnobsAreCheckedWhateverTheRouting() {
        String[][] cases = {
            {"pikv.gateway.lambda", "-0.5", "pikv.gateway.lambda must be a finite number >= 0, got -0.5"},
            {"pikv.gateway.lambda", "NaN", "pikv.gateway.lambda must be a finite number >= 0, got NaN"},
            {"pikv.gateway.window", "0", "pikv.gateway.window must be at least 1 token, got 0"},
            {"pikv.gateway.null-ratio", "1", "pikv.gateway.null-ratio must be in [0, 1), got 1.0"}};
        for (String routing : new String[] {"hash", "cache-aware"}) {
            for (String[] c : cases) {
                Map<String, String> values = new HashMap<>();
                values.put("pikv.role", "gateway");
                values.put("pikv.gateway.shards", "http://127.0.0.1:1");
                values.put("pikv.store.budget-bytes", String.valueOf(1L << 20));
                values.put("pikv.gateway.routing", routing);
                values.put(c[0], c[1]);
                SidecarConfig config = config(values);
                assertThatThrownBy(() -> new Sidecar(config)).as(routing + ": " + c[0] + "=" + c[1])
                        .isInstanceOf(IllegalStateException.class)
                        .hasMessage("invalid configuration pikv.gateway.*: " + c[2]);
            }
        }
    }

    @Test
    void aGatewayRefusesAnUnknownComputeSetting() {
        Map<String, String> values = new HashMap<>();
        values.put("pikv.role", "gateway");
        values.put("pikv.gateway.shards", "http://127.0.0.1:1");
        values.put("pikv.store.budget-bytes", String.valueOf(1L << 20));
        values.put("pikv.compute", "gpu");
        SidecarConfig config = config(values);
        assertThatThrownBy(() -> new Sidecar(config)).isInstanceOf(IllegalStateException.class)
                .hasMessageStartingWith("invalid configuration pikv.compute: pikv.compute must be auto, cpu or cuda, "
                        + "got 'gpu'");
    }

    @Test
    void anApiBodyLimitAboveTheHttpLayersIsRefused() {
        assertThat(Sidecar.bodyLimits(64 << 20, 128L << 20)).isNull();
        assertThat(Sidecar.bodyLimits(128 << 20, 128L << 20)).isNull();
        assertThat(Sidecar.bodyLimits((128 << 20) + 1, 128L << 20)).startsWith("invalid configuration "
                + "pikv.api.max-body-bytes: 134217729 bytes is above the HTTP layer's limit "
                + "quarkus.http.limits.max-body-size (134217728 bytes)");
    }

    @Test
    void pyramidBudgetsAreOnWhenABudgetIsSet() {
        Map<String, String> values = new HashMap<>();
        values.put("pikv.store.budget-bytes", String.valueOf(1L << 20));
        values.put("pikv.store.pyramid.budget", "0.25");
        values.put("pikv.store.pyramid.window", "16");
        SidecarConfig config = config(values);
        Sidecar sidecar = new Sidecar(config);
        try {
            ShardPyramid p = sidecar.shard().pyramid();
            assertThat(p).isNotNull();
            assertThat(p.budget()).isEqualTo(0.25);
            assertThat(p.beta()).isEqualTo(20);
            assertThat(p.sinks()).isEqualTo(4);
            assertThat(p.window()).isEqualTo(16);
        } finally {
            sidecar.shard().close();
        }
        // Budgets rank by attention weights, which no device computes: cuda is refused with or without a device.
        values.put("pikv.compute", "cuda");
        SidecarConfig onCuda = config(values);
        assertThatThrownBy(() -> new Sidecar(onCuda)).isInstanceOf(IllegalStateException.class)
                .hasMessage("pikv.compute=cuda but pyramid budgets (pikv.store.pyramid.budget) choose the tokens kept "
                        + "by attention weights, which the CUDA kernels do not compute; turn one of them off");
        Sidecar plain = new Sidecar(config("cpu"));
        try {
            assertThat(plain.shard().pyramid()).isNull();
        } finally {
            plain.shard().close();
        }
    }

    @Test
    void environmentVariablesThatNameNoSettingAreFound() {
        Map<String, String> env = new HashMap<>();
        env.put("PIKV_STORE_BUDGET_BYTES", "1");
        env.put("PIKV_GATEWAY_SHARDS", "http://a");
        env.put("PIKV_GATEWAY_SHARDS_0_", "http://b");
        env.put("PIKV_TELEMETRY_SEND_TIMEOUT", "5s");
        env.put("PIKV_SHARD_ID", "0");
        env.put("PIKV_JAVA_OPTS", "-Xmx1g");
        env.put("PIKV_DEBUG", "1"); // the launcher's, which its children see
        env.put("PIKV_PARENT_PID", "1");
        env.put("PIKV_OPERATOR_SIDECAR_IMAGE", "x");
        env.put("PATH", "/bin");
        env.put("PIKV_STORE_BUDGETBYTES", "1");
        env.put("PIKV_TELEMETRY_SEND_TIMEOUTS", "5s");
        env.put("PIKV_CONTROL_TOPIC_2", "x"); // an index only a list setting takes
        assertThat(Sidecar.unknownEnvironment(env)).containsExactly("PIKV_CONTROL_TOPIC_2", "PIKV_STORE_BUDGETBYTES",
                "PIKV_TELEMETRY_SEND_TIMEOUTS");
    }

    /** pikv.parent-pid: the launcher runs while its process does, and a reused id is another process. */
    @Test
    void theLauncherIsAliveWhileItsProcessRunsWithTheSameStart() throws Exception {
        ProcessHandle self = ProcessHandle.current();
        java.util.Optional<java.time.Instant> born = self.info().startInstant();
        assertThat(Sidecar.parentAlive(self.pid(), born)).isTrue();
        assertThat(Sidecar.parentAlive(self.pid(), java.util.Optional.empty())).isTrue();
        if (born.isPresent()) {
            assertThat(Sidecar.parentAlive(self.pid(), java.util.Optional.of(born.get().minusSeconds(60)))).isFalse();
        }
        Process gone = new ProcessBuilder("true").start();
        assertThat(gone.waitFor(10, java.util.concurrent.TimeUnit.SECONDS)).isTrue();
        assertThat(Sidecar.parentAlive(gone.pid(), java.util.Optional.empty())).isFalse();
    }

    @Test
    void anEmptyShardIdStopsStartUpInsteadOfFallingBackToShardZero() {
        // What a shard pod gets on a cluster without the pod-index label (docs/operator.md): PIKV_SHARD_ID="".
        Map<String, String> values = new HashMap<>();
        values.put("pikv.shard-id", "");
        SmallRyeConfigBuilder builder = new SmallRyeConfigBuilder().withMapping(SidecarConfig.class)
                .withConverter(java.time.Duration.class, 200, new io.quarkus.runtime.configuration.DurationConverter())
                .withSources(new PropertiesConfigSource(values, "test", 500));
        assertThatThrownBy(() -> builder.build().getConfigMapping(SidecarConfig.class))
                .hasMessageContaining("pikv.shard-id");
    }

    @Test
    void cudaWithoutADeviceStopsStartUpWithTheReason() {
        ComputeBackends.Probe probe = ComputeBackends.probe();
        assumeFalse(probe.available(), "a CUDA device is usable here");
        assertThatThrownBy(() -> new Sidecar(config("cuda"))).isInstanceOf(IllegalStateException.class)
                .hasMessage("pikv.compute=cuda but no CUDA device can be used: " + probe.reason());
        for (String compute : new String[] {"auto", "cpu"}) {
            Sidecar sidecar = new Sidecar(config(compute));
            try {
                assertThat(sidecar.shard().attentionPlace()).endsWith("CPU thread(s)");
            } finally {
                sidecar.shard().close();
            }
        }
        assertThatThrownBy(() -> new Sidecar(config("gpu"))).isInstanceOf(IllegalStateException.class)
                .hasMessage("invalid configuration pikv.compute: pikv.compute must be auto, cpu or cuda, got 'gpu'");
    }

    @Test
    void aDeviceThatFailedForGoodIsNotReportedAsWhereAttentionRuns() {
        Sidecar sidecar = new Sidecar(config("cpu"));
        boolean[] failed = {false};
        io.pikv.kv.DeviceAttention device = new StubDevice("test device", () -> null, () -> failed[0]);
        try (ShardNode weighted = new ShardNode(1, new io.pikv.kv.ModelShape(1, 2, 1, 32, 4, 2),
                io.pikv.kv.StorageType.FP16, 32, 1, 1 << 20, ShardPolicy.of("h2o"))) {
            sidecar.shard().attendOn(device);
            // What still runs on the CPU names its kernel, as pikv.store.kernel's "GET /v1/config names the one in use".
            assertThat(sidecar.shard().attentionPlace()).matches("test device \\(expert-scoped and weighted attention: "
                    + "the (scalar|vector-\\S+) kernel on \\d+ CPU thread\\(s\\)\\)");
            // A policy that ranks by attention needs weights, which only the CPU computes: the device sits idle.
            weighted.attendOn(device);
            assertThat(weighted.attentionPlace()).contains("CPU thread(s) (test device unused while eviction policy "
                    + "h2o ranks tokens by attention weights");
            failed[0] = true;
            assertThat(sidecar.shard().attentionPlace()).endsWith("CPU thread(s) (test device failed; see the log)");
        } finally {
            sidecar.shard().close();
        }
    }

    @Test
    void aLayoutTheKernelsCannotTakeIsDecidedBeforeAnyProbe() {
        // Refused for its pages whether or not a device is present: cuda stops start-up, auto stays on the CPU.
        assertThatThrownBy(() -> new Sidecar(config("cuda", 16))).isInstanceOf(IllegalStateException.class)
                .hasMessage("pikv.compute=cuda but this shard's pages cannot be attended on a CUDA device: the CUDA "
                        + "kernels take 32-token pages, not 16");
        Sidecar sidecar = new Sidecar(config("auto", 16));
        try {
            assertThat(sidecar.shard().attentionPlace()).endsWith("CPU thread(s)");
        } finally {
            sidecar.shard().close();
        }
    }

    /** pikv.store.kernel picks the CPU kernel a shard attends with; /v1/config's attention names it. */
    @Test
    void theKernelSettingChoosesTheShardsCpuKernel() {
        Map<String, String> values = new HashMap<>();
        values.put("pikv.compute", "cpu");
        values.put("pikv.store.budget-bytes", String.valueOf(1L << 20));
        values.put("pikv.store.kernel", "scalar");
        Sidecar scalar = new Sidecar(config(values));
        try {
            assertThat(scalar.shard().attentionPlace()).startsWith("the scalar kernel on ").endsWith("CPU thread(s)");
        } finally {
            scalar.shard().close();
        }
        values.put("pikv.store.kernel", "vector");
        if (io.pikv.kv.compute.Kernels.vectorModulePresent()) {
            Sidecar vector = new Sidecar(config(values));
            try {
                assertThat(vector.shard().attentionPlace()).startsWith("the vector-");
            } finally {
                vector.shard().close();
            }
            values.put("pikv.model.head-dim", "18"); // not a multiple of 4: no vector kernel takes it
            assertThatThrownBy(() -> new Sidecar(config(values))).isInstanceOf(IllegalStateException.class)
                    .hasMessageStartingWith("invalid configuration pikv.store.*: the vector kernel (vector-")
                    .hasMessageContaining("does not support");
        } else {
            assertThatThrownBy(() -> new Sidecar(config(values))).isInstanceOf(IllegalStateException.class)
                    .hasMessage("invalid configuration pikv.store.*: the vector kernel was asked for but the JVM was "
                            + "started without --add-modules jdk.incubator.vector: add it, or ask for auto or scalar");
        }
    }
}
