package io.pikv.kv.compute;

import org.junit.jupiter.api.Test;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/** Backend selection; on a machine without a GPU (CI) it proves the fallback, on one with a GPU the choice. */
class ComputeBackendsTest {

    @Test
    void selectionFollowsTheProbe() {
        ComputeBackends.Probe probe = ComputeBackends.probe();
        assertThat(ComputeBackends.probe()).as("probed once, cached").isSameAs(probe);
        assertThat(ComputeBackends.select("cpu").kind()).isEqualTo("cpu");
        ComputeBackends.Selection auto = ComputeBackends.select("auto");
        if (probe.available()) {
            assertThat(auto.kind()).isEqualTo("cuda");
            assertThat(ComputeBackends.select("cuda").detail()).isEqualTo(probe.backend().deviceName());
        } else {
            assertThat(probe.reason()).isNotBlank();
            assertThat(auto.kind()).isEqualTo("cpu");
            assertThat(auto.detail()).isEqualTo(probe.reason());
            assertThatThrownBy(() -> ComputeBackends.select("cuda")).isInstanceOf(IllegalStateException.class)
                    .hasMessageContaining("pikv.compute=cuda but no CUDA device can be used: " + probe.reason());
        }
        assertThatThrownBy(() -> ComputeBackends.select("tpu"))
                .hasMessageContaining("pikv.compute must be auto, cpu or cuda, got 'tpu'");
    }

    @Test
    void ptxTargetsByComputeCapability() {
        assertThat(CudaBackend.ptxTarget(9)).isEqualTo("sm_90");
        assertThat(CudaBackend.ptxTarget(10)).isEqualTo("sm_90");
        assertThat(CudaBackend.ptxTarget(8)).isEqualTo("sm_80");
        assertThat(CudaBackend.ptxTarget(7)).isNull();
    }
}
