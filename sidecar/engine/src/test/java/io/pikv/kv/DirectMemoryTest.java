package io.pikv.kv;

import org.junit.jupiter.api.Test;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

import static org.assertj.core.api.Assertions.assertThat;

/** The direct-memory limit pages are admitted against, read from the JVM's own settings. */
class DirectMemoryTest {

    /** Prints {@link DirectMemory#limit()} and the heap's maximum of the JVM it runs in. */
    public static final class Print {
        public static void main(String[] args) {
            System.out.println(DirectMemory.limit() + " " + Runtime.getRuntime().maxMemory());
        }
    }

    @Test
    void theFlagSetsTheLimit() throws Exception {
        String[] printed = run("-XX:MaxDirectMemorySize=100m", "-Xmx64m");
        assertThat(Long.parseLong(printed[0])).isEqualTo(100L << 20);
    }

    @Test
    void withoutTheFlagTheLimitIsTheHeapsMaximum() throws Exception {
        String[] printed = run("-Xmx96m");
        assertThat(Long.parseLong(printed[0])).isEqualTo(Long.parseLong(printed[1]));
        assertThat(Long.parseLong(printed[0])).isBetween(80L << 20, 96L << 20);
    }

    private static String[] run(String... flags) throws IOException, InterruptedException {
        List<String> command = new ArrayList<>();
        command.add(Path.of(System.getProperty("java.home"), "bin", "java").toString());
        command.addAll(List.of(flags));
        command.add("-cp");
        command.add(System.getProperty("java.class.path"));
        command.add(Print.class.getName());
        Process p = new ProcessBuilder(command).redirectError(ProcessBuilder.Redirect.DISCARD).start();
        String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8).trim();
        assertThat(p.waitFor(60, TimeUnit.SECONDS)).isTrue();
        assertThat(p.exitValue()).as(out).isZero();
        String[] lines = out.split("\\R");
        return lines[lines.length - 1].split(" "); // the last line: a JVM may print notes before it
    }
}
