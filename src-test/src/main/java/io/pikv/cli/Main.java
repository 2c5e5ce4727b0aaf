package io.pikv.cli;

import picocli.CommandLine;
import picocli.CommandLine.Command;

import java.io.PrintWriter;
import java.nio.file.Path;

/** Entry point of {@code ./pikv}. */
@Command(name = "pikv", mixinStandardHelpOptions = true, version = "pikv 0.1.0",
        description = "PiKV: expert-sharded KV cache for Mixture-of-Experts inference.",
        subcommands = {Playground.class, BenchCommand.class, GpuCheck.class})
public final class Main implements Runnable {

    /** Exit code for bad usage: unknown command, bad flag, unreadable input. */
    public static final int USAGE = 2;
    /** Exit code of a run that failed for a reason outside its arguments ({@link RunFailure}). */
    public static final int FAILED = 1;

    @CommandLine.Spec
    CommandLine.Model.CommandSpec spec;

    public static void main(String[] args) {
        System.exit(run(args, new PrintWriter(System.out, true), new PrintWriter(System.err, true)));
    }

    /** Runs the launcher with these streams and returns the exit code (tests call this). */
    public static int run(String[] args, PrintWriter out, PrintWriter err) {
        CommandLine cli = new CommandLine(new Main());
        inheritVersion(cli, cli.getCommandSpec().version()); // every subcommand's -V says the launcher's version
        return execute(cli, args, out, err);
    }

    /**
     * Runs {@code cli} with the launcher's streams and its exit codes: bad usage one sentence and 2, a failed run one
     * sentence and 1 (also for a command run on its own, as the GPU bundle runs gpu-check).
     */
    static int execute(CommandLine cli, String[] args, PrintWriter out, PrintWriter err) {
        cli.setOut(out);
        cli.setErr(err);
        cli.setParameterExceptionHandler((ex, a) -> {
            CommandLine cmd = ex.getCommandLine();
            String what = ex instanceof CommandLine.UnmatchedArgumentException u && !u.getUnmatched().isEmpty()
                    ? "unknown command or argument '" + u.getUnmatched().get(0) + "'"
                    : oneSentence(ex.getMessage());
            err.println("pikv: " + what + " (see '" + cmd.getCommandSpec().qualifiedName() + " --help').");
            return USAGE;
        });
        cli.setExecutionExceptionHandler((ex, cmd, parsed) -> {
            if (ex instanceof UsageException) {
                err.println("pikv: " + ex.getMessage());
                return USAGE;
            }
            if (ex instanceof RunFailure) {
                err.println("pikv: " + ex.getMessage());
                return FAILED;
            }
            if (ex instanceof java.io.IOException || ex instanceof java.io.UncheckedIOException) {
                // The machine's, not the command line's (a directory not writable, a disk full): said, exit 1.
                err.println("pikv: " + ex);
                return FAILED;
            }
            // Anything else is a fault of this program, not of the command line: one line, the trace on request.
            err.println("pikv: " + cmd.getCommandSpec().qualifiedName() + " failed: " + ex
                    + (System.getenv("PIKV_DEBUG") == null ? " (PIKV_DEBUG=1 prints where)" : ""));
            if (System.getenv("PIKV_DEBUG") != null) {
                ex.printStackTrace(err);
            }
            return FAILED;
        });
        try {
            return cli.execute(args);
        } catch (OutOfMemoryError e) {
            // picocli hands Errors on: said in one sentence too (the launcher's heap is PIKV_JAVA_OPTS's to raise).
            err.println("pikv: " + cli.getCommandSpec().qualifiedName() + " ran out of memory (" + e.getMessage()
                    + "): raise the launcher's heap (PIKV_JAVA_OPTS=-Xmx…) or give it a smaller input.");
            return FAILED;
        }
    }

    private static void inheritVersion(CommandLine cli, String[] version) {
        for (CommandLine sub : cli.getSubcommands().values()) {
            sub.getCommandSpec().version(version);
            inheritVersion(sub, version);
        }
    }

    private static String oneSentence(String message) {
        String m = message.strip();
        int nl = m.indexOf('\n');
        if (nl >= 0) {
            m = m.substring(0, nl);
        }
        return m.endsWith(".") ? m.substring(0, m.length() - 1) : m;
    }

    @Override
    public void run() {
        throw new UsageException("name a command: playground, bench or gpu-check (./pikv --help lists them).");
    }

    /**
     * An input file as given, or, when a relative path does not exist from the working directory, the same path from
     * the project root ({@code -Dpikv.root}, set by the launcher): the documented {@code ../shared/data/...} paths
     * then work from any directory.
     */
    public static Path input(Path given) {
        String root = System.getProperty("pikv.root");
        if (given == null || given.isAbsolute() || java.nio.file.Files.exists(given) || root == null) {
            return given;
        }
        Path fromRoot = Path.of(root).resolve(given).normalize();
        return java.nio.file.Files.exists(fromRoot) ? fromRoot : given;
    }

    /**
     * Refuses {@code value} of {@code flag} outside {@code [min, max]} in one sentence naming the flag and the value;
     * {@code why}, when not empty, says why the bounds are what they are.
     */
    static void within(String flag, long value, long min, long max, String why) {
        if (value < min || value > max) {
            throw new UsageException(flag + " must be in [" + min + ", " + max + "]" + why + ", got " + value + ".");
        }
    }

    /** Bad input the user can fix: printed as one sentence, exit code 2. */
    public static final class UsageException extends RuntimeException {
        public UsageException(String message) {
            super(message);
        }
    }

    /**
     * Whether the JVM is shutting down (Ctrl-C, TERM): a command's own thread still runs then, and the failures it
     * meets (its child processes stopped by their hooks) are the interruption, not a failed run to report.
     */
    static boolean shuttingDown() {
        Thread probe = new Thread(() -> { });
        try {
            Runtime.getRuntime().addShutdownHook(probe);
            Runtime.getRuntime().removeShutdownHook(probe);
            return false;
        } catch (IllegalStateException e) {
            return true;
        }
    }

    /** Removes a shutdown hook a finished step no longer needs; once the JVM is shutting down, the hook runs anyway. */
    static void removeShutdownHook(Thread hook) {
        try {
            Runtime.getRuntime().removeShutdownHook(hook);
        } catch (IllegalStateException shuttingDown) {
            // the hook runs
        }
    }

    /**
     * A run that could not finish for a reason outside its arguments (a child process failed or did not start, a
     * broker would not start, a file could not be written): its message, with the details it carries (a log tail, the
     * log's path), and exit code 1, without a stack trace.
     */
    public static final class RunFailure extends RuntimeException {
        public RunFailure(String message) {
            super(message);
        }

        public RunFailure(String message, Throwable cause) {
            super(message, cause);
        }
    }
}
