package io.pikv.operator.model;

import org.junit.jupiter.api.Test;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.stream.Stream;

import static org.assertj.core.api.Assertions.assertThat;

/** The model package builds desired state from values only: no API client, no operator framework, no CDI. */
class ModelPackageImportsTest {
    static final List<String> FORBIDDEN = List.of("import io.fabric8.kubernetes.client", "import io.javaoperatorsdk",
            "import io.quarkus", "import io.quarkiverse", "import jakarta.", "import io.micrometer",
            "import io.pikv.operator.controller", "import io.pikv.operator.dependent");

    @Test
    void modelImportsNoClientCode() throws IOException {
        Path dir = Path.of("src/main/java/io/pikv/operator/model");
        try (Stream<Path> files = Files.list(dir)) {
            List<Path> sources = files.filter(p -> p.toString().endsWith(".java")).toList();
            assertThat(sources).isNotEmpty();
            for (Path source : sources) {
                List<String> imports = Files.readAllLines(source).stream().filter(l -> l.startsWith("import ")).toList();
                assertThat(imports).as(source.toString())
                        .noneMatch(l -> FORBIDDEN.stream().anyMatch(l::startsWith));
            }
        }
    }
}
