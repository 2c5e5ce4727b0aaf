import static org.junit.platform.engine.discovery.DiscoverySelectors.selectClass;
import static org.junit.platform.engine.discovery.DiscoverySelectors.selectPackage;

import java.io.PrintWriter;
import java.util.ArrayList;
import java.util.List;
import org.junit.platform.engine.DiscoverySelector;
import org.junit.platform.engine.TestExecutionResult;
import org.junit.platform.engine.discovery.ClassNameFilter;
import org.junit.platform.launcher.TestExecutionListener;
import org.junit.platform.launcher.TestIdentifier;
import org.junit.platform.launcher.core.LauncherDiscoveryRequestBuilder;
import org.junit.platform.launcher.core.LauncherFactory;
import org.junit.platform.launcher.listeners.SummaryGeneratingListener;

/**
 * Runs engine tests on a GPU machine that has no Maven: {@code RunTests io.pikv.* | io.pikv.kv.compute.SomeTest ...}
 * (a name ending in {@code .*} selects a package). Prints one line per test (its status and id) with the stack trace
 * of each one that did not pass, then JUnit's summary; exits 0 when tests were found and none failed.
 * {@code KernelsWithoutVectorModuleTest} is left out: surefire runs it in a JVM without the Vector API module.
 */
public final class RunTests {
    public static void main(String[] args) {
        List<DiscoverySelector> selectors = new ArrayList<>();
        for (String name : args) {
            selectors.add(name.endsWith(".*") ? selectPackage(name.substring(0, name.length() - 2)) : selectClass(name));
        }
        if (selectors.isEmpty()) {
            System.err.println("RunTests: name the test classes or packages (io.pikv.*) to run");
            System.exit(2);
        }
        var request = LauncherDiscoveryRequestBuilder.request().selectors(selectors)
                .filters(ClassNameFilter.excludeClassNamePatterns(".*KernelsWithoutVectorModuleTest")).build();
        var summary = new SummaryGeneratingListener();
        var lines = new TestExecutionListener() {
            @Override
            public void executionSkipped(TestIdentifier test, String reason) {
                System.out.println("SKIPPED " + test.getDisplayName() + ": " + reason);
            }

            @Override
            public void executionFinished(TestIdentifier test, TestExecutionResult result) {
                if (test.isTest()) {
                    System.out.println(result.getStatus() + " " + test.getUniqueId().replaceAll(".*class:", ""));
                }
                if (result.getStatus() != TestExecutionResult.Status.SUCCESSFUL) {
                    result.getThrowable().ifPresent(e -> e.printStackTrace(System.out));
                }
            }
        };
        LauncherFactory.create().execute(request, summary, lines);
        summary.getSummary().printTo(new PrintWriter(System.out));
        boolean passed = summary.getSummary().getTotalFailureCount() == 0 && summary.getSummary().getTestsFoundCount() > 0;
        System.exit(passed ? 0 : 1);
    }
}
