package io.pikv.api.v1alpha1;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.dataformat.yaml.YAMLFactory;
import org.junit.jupiter.api.Test;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import java.util.Set;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * The committed CRD ({@code crds/pikvclusters.pikv.io-v1.yml}, and its copy {@code manifests/010-crd-pikvclusters.yaml}
 * that the install applies) must be the one the build generates from the Java model. {@code -Dpikv.crd.update=true}
 * rewrites both committed copies instead.
 */
class CrdDriftTest {
    static final Path GENERATED = Path.of("target/classes/META-INF/fabric8/" + PiKVCluster.CRD_NAME + "-v1.yml");
    static final Path COMMITTED = Path.of(PiKVCluster.CRD_NAME + "-v1.yml");
    /** The install manifests carry the same CRD, second in apply order. */
    static final Path MANIFEST = Path.of("../manifests/010-crd-pikvclusters.yaml");
    /** Kubernetes' own types, whose fields fabric8 leaves undescribed. */
    static final Set<String> FOREIGN = Set.of("resources", "conditions");

    @Test
    void committedCrdEqualsGenerated() throws IOException {
        assertThat(GENERATED).as("the CRD generator ran in process-classes").isRegularFile();
        String generated = Files.readString(GENERATED);
        if (Boolean.getBoolean("pikv.crd.update")) {
            Files.writeString(COMMITTED, generated);
            Files.writeString(MANIFEST, generated);
        }
        for (Path committed : new Path[] {COMMITTED, MANIFEST}) {
            assertThat(committed).as(committed + " is committed").isRegularFile();
            assertThat(Files.readString(committed))
                    .as("%s differs from the CRD generated from io.pikv.api.v1alpha1; run "
                            + "./mvnw -pl crds test -Dpikv.crd.update=true and commit the files", committed)
                    .isEqualTo(generated);
        }
    }

    @Test
    void crdHasSubresourcesAndEveryFieldIsDescribed() throws IOException {
        JsonNode crd = new ObjectMapper(new YAMLFactory()).readTree(GENERATED.toFile());
        JsonNode version = crd.at("/spec/versions/0");
        assertThat(version.at("/subresources/status").isObject()).isTrue();
        assertThat(version.at("/subresources/scale/specReplicasPath").asText()).isEqualTo(".spec.shards");
        assertThat(version.at("/subresources/scale/statusReplicasPath").asText()).isEqualTo(".status.shards");
        assertThat(version.at("/subresources/scale/labelSelectorPath").asText()).isEqualTo(".status.selector");
        List<String> columns = new ArrayList<>();
        version.get("additionalPrinterColumns").forEach(c -> columns.add(c.get("name").asText()));
        assertThat(columns).containsExactlyInAnyOrder("Shards", "Ready Shards", "Hit Rate", "Policy", "Ready", "Age");

        List<String> undescribed = new ArrayList<>();
        JsonNode root = version.at("/schema/openAPIV3Schema/properties");
        walk(root.get("spec"), "spec", undescribed);
        walk(root.get("status"), "status", undescribed);
        assertThat(undescribed).as("fields without @JsonPropertyDescription").isEmpty();
    }

    private static void walk(JsonNode schema, String path, List<String> undescribed) {
        JsonNode properties = schema.get("properties");
        if (properties != null) {
            for (Iterator<Map.Entry<String, JsonNode>> it = properties.fields(); it.hasNext(); ) {
                Map.Entry<String, JsonNode> field = it.next();
                String at = path + "." + field.getKey();
                if (!field.getValue().hasNonNull("description")) {
                    undescribed.add(at);
                }
                if (!FOREIGN.contains(field.getKey())) {
                    walk(field.getValue(), at, undescribed);
                }
            }
        }
        if (schema.has("items")) {
            walk(schema.get("items"), path + "[]", undescribed);
        }
    }
}
