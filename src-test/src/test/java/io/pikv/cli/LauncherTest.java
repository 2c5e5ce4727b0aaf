package io.pikv.cli;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.PrintWriter;
import java.io.StringWriter;
import java.nio.file.Files;
import java.nio.file.Path;

import static org.assertj.core.api.Assertions.assertThat;

/** The launcher's commands: help, usage errors (exit 2, one sentence), and the benches' tables and JSON. */
class LauncherTest {

    private record Run(int code, String out, String err) {
    }

    private static Run run(String... args) {
        StringWriter out = new StringWriter();
        StringWriter err = new StringWriter();
        int code = Main.run(args, new PrintWriter(out, true), new PrintWriter(err, true));
        return new Run(code, out.toString(), err.toString());
    }

    @Test
    void helpListsEveryCommand() {
        Run top = run("--help");
        assertThat(top.code()).isZero();
        assertThat(top.out()).contains("bench");
        Run bench = run("bench", "--help");
        assertThat(bench.code()).isZero();
        assertThat(bench.out()).contains("attention", "cache");
        assertThat(run("bench", "cache", "--help").out()).contains("--trace", "--capacity", "--policies", "--json");
        assertThat(run("bench", "attention", "--help").out()).contains("--context", "--q-heads", "--kv-heads",
                "--head-dim", "--json");
    }

    @Test
    void usageErrorsAreOneSentenceAndExitTwo() {
        for (String[] args : new String[][] {{"frobnicate"}, {"bench", "nope"}, {"bench"},
                {"bench", "attention", "--context", "many"}, {"bench", "cache", "--capacity", "10"},
                {"bench", "cache", "--trace", "/no/such/file.jsonl", "--capacity", "10"},
                {"bench", "attention", "--q-heads", "6", "--kv-heads", "4", "--no-numpy"},
                {"bench", "attention", "--dtype", "int4", "--no-numpy"},
                {"bench", "cache", "--trace", "pom.xml", "--capacity", "10", "--policies", "lru,clock"}}) {
            Run r = run(args);
            assertThat(r.code()).as(String.join(" ", args)).isEqualTo(2);
            assertThat(r.err().strip()).as(String.join(" ", args)).startsWith("pikv: ").doesNotContain("\n")
                    .doesNotContain("Exception");
        }
        assertThat(run("bench", "attention", "--q-heads", "6", "--kv-heads", "4", "--no-numpy").err())
                .contains("qHeads (6) must be a multiple of kvHeads (4)");
        assertThat(run("bench", "nope").err()).contains("unknown command or argument 'nope'", "pikv bench --help");
        assertThat(run("bench", "cache", "--trace", "pom.xml", "--capacity", "10", "--policies", "lru,clock").err())
                .contains("unknown policy 'clock' in --policies; known: lru, streaming, h2o, utility, lrfu, adaptive.");
    }

    @Test
    void cacheBenchReportsExactHitRates(@TempDir Path dir) throws Exception {
        // The trace of PrefixBlockCacheTest, out of timestamp order on disk; 15 lookups.
        Path trace = dir.resolve("trace.jsonl");
        Files.writeString(trace, String.join("\n",
                "{\"timestamp\": 30, \"input_length\": 1024, \"output_length\": 1, \"hash_ids\": [1, 2]}",
                "{\"timestamp\": 0, \"input_length\": 1536, \"output_length\": 1, \"hash_ids\": [1, 2, 3]}",
                "{\"timestamp\": 10, \"input_length\": 1536, \"output_length\": 1, \"hash_ids\": [1, 2, 4]}",
                "{\"timestamp\": 20, \"input_length\": 1536, \"output_length\": 1, \"hash_ids\": [5, 2, 3]}",
                "{\"timestamp\": 40, \"input_length\": 2048, \"output_length\": 1, \"hash_ids\": [5, 3, 1, 2]}", ""));
        Path json = dir.resolve("out/cache.json");
        Run r = run("bench", "cache", "--trace", trace.toString(), "--capacity", "2,4", "--policies", "lru",
                "--json", json.toString());
        assertThat(r.code()).as(r.err()).isZero();
        assertThat(r.out()).contains("policy", "capacity", "hit_rate", "ratio_to_belady", "belady");
        JsonNode n = new ObjectMapper().readTree(json.toFile());
        assertThat(n.get("lookups").asLong()).isEqualTo(15);
        JsonNode results = n.get("results");
        assertThat(results).hasSize(4);
        // Capacity 2. LRU: the two blocks in use fill the cache, so only r2 reuses anything (1, 2): 2 hits.
        // Belady leaves out blocks needed later than both residents: r2 and r4 reuse 1, 2: 4 hits.
        assertRow(results.get(0), "lru", 2, 2 / 15.0, 0.5);
        assertRow(results.get(1), "belady", 2, 4 / 15.0, 1.0);
        // Capacity 4: leaf-first LRU reaches what an unbounded cache would: 2 + 0 + 2 + 4 = 8.
        assertRow(results.get(2), "lru", 4, 8 / 15.0, 1.0);
        assertRow(results.get(3), "belady", 4, 8 / 15.0, 1.0);

        Path all = dir.resolve("all.json");
        assertThat(run("bench", "cache", "--trace", trace.toString(), "--capacity", "3", "--json", all.toString())
                .code()).isZero();
        JsonNode every = new ObjectMapper().readTree(all.toFile());
        assertThat(every.get("results").findValuesAsText("policy")).containsExactly("lru", "streaming", "h2o",
                "utility", "lrfu", "adaptive", "belady");
        assertThat(every.get("adaptive").get(0).get("active").asText()).isEqualTo("lru");
    }

    private static void assertRow(JsonNode row, String policy, int capacity, double hitRate, double ratio) {
        assertThat(row.get("policy").asText()).isEqualTo(policy);
        assertThat(row.get("capacity").asInt()).isEqualTo(capacity);
        assertThat(row.get("hit_rate").asDouble()).isCloseTo(hitRate, org.assertj.core.data.Offset.offset(1e-5));
        assertThat(row.get("ratio_to_belady").asDouble()).isEqualTo(ratio);
    }

    @Test
    void malformedTraceLinesAreNamed(@TempDir Path dir) throws Exception {
        Path trace = dir.resolve("bad.jsonl");
        Files.writeString(trace, "{\"timestamp\": 0, \"hash_ids\": [1]}\n{\"timestamp\": 1}\n");
        Run r = run("bench", "cache", "--trace", trace.toString(), "--capacity", "4");
        assertThat(r.code()).isEqualTo(2);
        assertThat(r.err()).contains("line 2 of " + trace + " is not a Mooncake request");
    }

    @Test
    void attentionBenchWritesItsFigures(@TempDir Path dir) throws Exception {
        Path json = dir.resolve("attention.json");
        Run r = run("bench", "attention", "--context", "300", "--q-heads", "8", "--kv-heads", "2", "--head-dim",
                "64", "--iterations", "2", "--no-numpy", "--json", json.toString());
        assertThat(r.code()).as(r.err()).isZero();
        JsonNode n = new ObjectMapper().readTree(json.toFile());
        for (String key : new String[] {"achieved_gbps", "stream_triad_gbps", "ratio_to_triad"}) {
            assertThat(n.get(key).asDouble()).as(key).isPositive();
            assertThat(r.out()).contains(key);
        }
        assertThat(n.get("kv_bytes").asLong()).isEqualTo(300L * 2 * 64 * 2 * 2);
        assertThat(n.has("numpy_gbps")).isTrue();
        assertThat(n.get("numpy_gbps").isNull()).isTrue();
    }
}
