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

    /** Libraries that do not load: no device without a device node, an unusable one with it. */
    @Test
    void aDriverThatDoesNotLoadIsNoDeviceUnlessADeviceNodeIsThere() {
        UnsatisfiedLinkError link = new UnsatisfiedLinkError("libcuda.so.1: cannot open shared object file");
        CudaUnavailableException none = CudaBackend.linkFailure(link, null);
        assertThat(none.deviceFound()).isFalse();
        assertThat(none).hasMessage("the CUDA driver library cannot be loaded (libcuda.so.1: cannot open shared "
                + "object file)");
        CudaUnavailableException unusable = CudaBackend.linkFailure(link, "/dev/nvidia0");
        assertThat(unusable.deviceFound()).isTrue();
        assertThat(unusable.getMessage()).startsWith("a GPU is there (/dev/nvidia0) but CUDA cannot be used from Java");
        // The probe on this machine agrees with its own device node.
        ComputeBackends.Probe probe = ComputeBackends.probe();
        if (!probe.available() && probe.reason().startsWith("the CUDA driver library cannot be loaded")) {
            assertThat(CudaBackend.deviceNode()).isNull();
            assertThat(probe.deviceFound()).isFalse();
        }
    }

    @Test
    void theShippedPtxDeclaresItsIsaAndLinkFailuresSayTheSystemsReason() {
        for (String target : new String[] {"sm_80", "sm_90"}) {
            assertThat(CudaBackend.ptxVersion(CudaBackend.ptx(target))).as(target).matches("\\d+\\.\\d+");
        }
        assertThat(CudaBackend.ptxVersion("// no version\n".getBytes())).isEqualTo("unknown");
        UnsatisfiedLinkError jcuda = new UnsatisfiedLinkError("Error while loading native library "
                + "\"JCudaDriver-12.0.0-linux-x86_64\"\nOperating system name: Linux\nStack trace from the attempt "
                + "to load the library as a resource:\njava.lang.UnsatisfiedLinkError: /tmp/libJCudaDriver.so: "
                + "libcuda.so.1: cannot open shared object file: No such file or directory\n\tat java.base/...");
        assertThat(CudaBackend.linkReason(jcuda)).isEqualTo("Error while loading native library "
                + "\"JCudaDriver-12.0.0-linux-x86_64\": /tmp/libJCudaDriver.so: libcuda.so.1: cannot open shared "
                + "object file: No such file or directory");
        assertThat(CudaBackend.linkReason(new UnsatisfiedLinkError("no jcuda in java.library.path")))
                .isEqualTo("no jcuda in java.library.path");
    }

    @Test
    void ptxTargetsByComputeCapability() {
        assertThat(CudaBackend.ptxTarget(9)).isEqualTo("sm_90");
        assertThat(CudaBackend.ptxTarget(10)).isEqualTo("sm_90");
        assertThat(CudaBackend.ptxTarget(8)).isEqualTo("sm_80");
        assertThat(CudaBackend.ptxTarget(7)).isNull();
    }
}
