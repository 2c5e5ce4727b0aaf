package io.pikv.operator.model;

import org.junit.jupiter.api.Test;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Stream;

import static org.assertj.core.api.Assertions.assertThat;

/** The model package builds desired state from values only: no API client, no operator framework, no CDI. */
class ModelPackageImportsTest {
    /**
     * The packages the model may not use, named anywhere in a source (an import, a static import or a name written out
     * in the code), in the package and below it.
     */
    static final Pattern FORBIDDEN = Pattern.compile("\\b(io\\.fabric8\\.kubernetes\\.client|io\\.javaoperatorsdk"
            + "|io\\.quarkus|io\\.quarkiverse|jakarta|io\\.micrometer|io\\.pikv\\.operator\\.(controller|dependent))\\.");

    @Test
    void modelImportsNoClientCode() throws IOException {
        Path dir = Path.of("src/main/java/io/pikv/operator/model");
        try (Stream<Path> files = Files.walk(dir)) {
            List<Path> sources = files.filter(p -> p.toString().endsWith(".java")).toList();
            assertThat(sources).isNotEmpty();
            for (Path source : sources) {
                Matcher m = FORBIDDEN.matcher(Files.readString(source));
                assertThat(m.find() ? m.group() : null).as("%s names a package the model may not use", source)
                        .isNull();
            }
        }
    }

    @Test
    void theRuleFindsNamesWrittenOutAndStaticImports() {
        for (String uses : List.of("import static io.quarkus.runtime.Quarkus.run;",
                "var c = (io.fabric8.kubernetes.client.KubernetesClient) x;", "@jakarta.inject.Inject Object o;",
                "import io.pikv.operator.controller.EventRecorder;")) {
            assertThat(FORBIDDEN.matcher(uses).find()).as(uses).isTrue();
        }
        for (String fine : List.of("import io.fabric8.kubernetes.api.model.Quantity;", "import io.pikv.kv.ModelShape;",
                "// io.quarkus in words, without a dot after a package name", "String s = \"jakartaee\";")) {
            assertThat(FORBIDDEN.matcher(fine).find()).as(fine).isFalse();
        }
    }
}
