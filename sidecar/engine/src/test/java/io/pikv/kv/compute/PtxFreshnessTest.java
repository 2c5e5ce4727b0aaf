package io.pikv.kv.compute;

import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.util.HexFormat;

import static org.assertj.core.api.Assertions.assertThat;

/** The committed PTX must come from the current kernel source: regenerate with src/main/cuda/build-ptx.sh --commit. */
class PtxFreshnessTest {
    private static final Path SOURCE = Path.of("src/main/cuda/pikv_attention.cu");
    private static final Path COMMITTED = Path.of("src/main/resources/io/pikv/kv/compute/cuda");

    @ParameterizedTest
    @ValueSource(strings = {"sm_80", "sm_90"})
    void committedPtxMatchesTheSource(String target) throws Exception {
        String sha = HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256").digest(Files.readAllBytes(SOURCE)));
        String first = Files.readAllLines(COMMITTED.resolve("pikv_attention." + target + ".ptx")).get(0);
        assertThat(first).as("committed PTX is older than %s: run src/main/cuda/build-ptx.sh --commit", SOURCE)
                .isEqualTo("// pikv-source-sha256: " + sha);
        String ptx = new String(CudaBackend.ptx(target), java.nio.charset.StandardCharsets.US_ASCII);
        assertThat(ptx).contains(".target " + target, ".entry pikv_decode_partial_d32",
                ".entry pikv_decode_partial_d64", ".entry pikv_decode_partial_d128", ".entry pikv_decode_partial_d256",
                // int8 pages: without these entries CudaBackend.open fails and auto stays on the CPU of a GPU machine
                ".entry pikv_decode_partial_i8_d32", ".entry pikv_decode_partial_i8_d64",
                ".entry pikv_decode_partial_i8_d128", ".entry pikv_decode_partial_i8_d256",
                ".entry pikv_decode_merge",
                ".entry pikv_append");
        assertThat(ptx).endsWith("\0");
    }
}
