package io.pikv.cli;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;

import java.io.BufferedReader;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

/**
 * Reads the shared Qwen1.5-MoE expert-routing logs ({@code ../shared/data/qwen15moe_layer*.jsonl}, see that folder's
 * README): a meta line, then one route record per token with its top-k expert ids. The first 8,448 route records are
 * vLLM's start-up warm-up on dummy tokens (every one has the same experts) and are skipped; the rest are the real
 * tokens in file order.
 */
final class QwenRoutingLog {
    /** Route records of vLLM's warm-up at the head of each log (token_idx 0..8191, then 0..255). */
    static final int WARM_UP_RECORDS = 8448;
    /** Routed experts of Qwen1.5-MoE-A2.7B. */
    static final int EXPERTS = 60;

    private static final ObjectMapper JSON = new ObjectMapper();

    private QwenRoutingLog() {
    }

    /** The real tokens' top-k expert ids, in file order. */
    static List<int[]> read(Path file) {
        if (!Files.isRegularFile(file)) {
            throw new Main.UsageException("routing log " + file + " does not exist or is not a file (the shared "
                    + "Qwen routing lives in ../shared/data/qwen15moe_layer12.jsonl; pass --routing FILE).");
        }
        List<int[]> out = new ArrayList<>();
        int routes = 0;
        try (BufferedReader in = Files.newBufferedReader(file)) {
            String text;
            int line = 0;
            while ((text = in.readLine()) != null) {
                line++;
                if (text.isBlank()) {
                    continue;
                }
                JsonNode node;
                try {
                    node = JSON.readTree(text);
                } catch (IOException e) {
                    throw new Main.UsageException("line " + line + " of " + file + " is not JSON.");
                }
                if (!"route".equals(node.path("type").asText())) {
                    continue;
                }
                JsonNode ids = node.get("topk_ids");
                if (ids == null || !ids.isArray() || ids.size() == 0) {
                    throw new Main.UsageException("line " + line + " of " + file + " is a route record without topk_ids.");
                }
                if (routes++ < WARM_UP_RECORDS) {
                    continue;
                }
                int[] experts = new int[ids.size()];
                for (int i = 0; i < experts.length; i++) {
                    experts[i] = ids.get(i).asInt(-1);
                    if (experts[i] < 0 || experts[i] >= EXPERTS) {
                        throw new Main.UsageException("line " + line + " of " + file + " names expert " + experts[i]
                                + ", outside the model's " + EXPERTS + " experts.");
                    }
                }
                out.add(experts);
            }
        } catch (IOException e) {
            throw new Main.UsageException("cannot read " + file + ": " + e.getMessage() + ".");
        }
        if (out.isEmpty()) {
            throw new Main.UsageException(file + " has no route records after the " + WARM_UP_RECORDS
                    + " warm-up records.");
        }
        return out;
    }
}
