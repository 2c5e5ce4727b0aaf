package io.pikv.cli;

import picocli.CommandLine;
import picocli.CommandLine.Command;

/** {@code ./pikv bench NAME}: benchmarks that print a table and, with {@code --json FILE}, write the same figures. */
@Command(name = "bench", mixinStandardHelpOptions = true,
        description = "Run a benchmark; each prints a table and writes JSON with --json FILE.",
        subcommands = {AttentionBench.class, CacheBench.class, CompressionBench.class, RoutingBench.class,
            ServiceBench.class, OperatorBench.class})
public final class BenchCommand implements Runnable {

    @CommandLine.Spec
    CommandLine.Model.CommandSpec spec;

    @Override
    public void run() {
        throw new CommandLine.ParameterException(spec.commandLine(),
                "name a benchmark: attention, cache, compression, routing, service or operator");
    }
}
