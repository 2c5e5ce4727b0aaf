package io.pikv.cli;

/** {@code gpu-check} alone, for a class path without the launcher's other commands (Kafka, Quarkus): see bundle.sh. */
public final class GpuCheckMain {
    private GpuCheckMain() {}

    public static void main(String[] args) {
        System.exit(Main.execute(new picocli.CommandLine(new GpuCheck()), args,
                new java.io.PrintWriter(System.out, true), new java.io.PrintWriter(System.err, true)));
    }
}
