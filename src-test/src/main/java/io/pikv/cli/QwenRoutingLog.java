package io.pikv.cli;

import com.fasterxml.jackson.databind.JsonNode;
import io.pikv.kv.routing.RoutingReplay;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

/**
 * Reads an expert-routing log in the vLLM-MoE-Logger format: an optional {@code "type": "meta"} header, then one
 * {@code "type": "route"} object per token with {@code topk_ids} and {@code topk_weights}. The first {@code skip}
 * route records are dropped (vLLM's start-up warm-up on dummy tokens).
 */
final class QwenRoutingLog {
    /** The tokens after the warm-up, and the highest expert id seen plus one. */
    record Log(List<RoutingReplay.Token> tokens, int experts, int skipped) {
    }

    /** Route records of vLLM's warm-up at the head of each shared log (token_idx 0..8191, then 0..255). */
    static final int WARM_UP_RECORDS = 8448;
    /** Routed experts of Qwen1.5-MoE-A2.7B. */
    static final int EXPERTS = 60;
    /** Largest expert id + 1 a log may name (the replay keeps experts × experts co-activation counts). */
    static final int MAX_EXPERTS = 4096;

    private QwenRoutingLog() {
    }

    static Log read(Path file, int skip) {
        List<RoutingReplay.Token> tokens = new ArrayList<>();
        int[] routes = {0};
        int[] experts = {0};
        int[] layer = {-1};
        int[] topK = {0};
        JsonLines.read(file, "a routing record", (line, node) -> {
            String type = node.path("type").asText("");
            if (type.equals("meta")) {
                if (routes[0] > 0) {
                    // A second log's header: two logs run together would replay the second's warm-up as tokens.
                    throw bad(file, line, "it is a \"meta\" header after route records (two logs joined?); the "
                            + "replay takes one log");
                }
                return;
            }
            if (!type.equals("route")) {
                throw bad(file, line, "its \"type\" is neither \"meta\" nor \"route\"");
            }
            JsonNode l = node.get("layer");
            if (l != null && l.isNumber() && !(l.isIntegralNumber() && l.canConvertToInt() && l.asInt() >= 0)) {
                throw bad(file, line, "its \"layer\" " + l.asText() + " is not a layer number (an integer >= 0)");
            }
            if (l != null && l.isNumber()) {
                // One layer's stream: records of two layers would interleave as if they were tokens, and the
                // warm-up to skip is counted per layer.
                if (layer[0] >= 0 && l.asInt() != layer[0]) {
                    throw bad(file, line, "its layer " + l.asInt() + " differs from layer " + layer[0]
                            + " of the records before; the replay takes one layer's log");
                }
                layer[0] = l.asInt();
            }
            if (routes[0] < skip) {
                if (skip == WARM_UP_RECORDS) {
                    // The default skip is vLLM's warm-up: a log without one would lose real tokens unnoticed.
                    int i = routes[0];
                    int expected = i < 8192 ? i : i - 8192;
                    JsonNode index = node.get("token_idx");
                    if (index == null || !index.isIntegralNumber() || !index.canConvertToInt()
                            || index.asInt() != expected) {
                        throw new Main.UsageException("trace file " + file + " does not start with vLLM's "
                                + WARM_UP_RECORDS + "-record warm-up (token_idx 0..8191, then 0..255): its route "
                                + "record " + (i + 1) + " (line " + line + ") has token_idx "
                                + (index == null ? "none" : index.asText()) + ", not " + expected + "; pass --skip 0, "
                                + "or the number of warm-up records it holds.");
                    }
                }
                routes[0]++;
                return;
            }
            if (routes[0] == skip && skip == WARM_UP_RECORDS) {
                // The first real record starts a forward pass: a longer warm-up (a second batch past 256 tokens)
                // would otherwise be replayed as real tokens, all routed alike.
                JsonNode index = node.get("token_idx");
                if (index == null || !index.isIntegralNumber() || !index.canConvertToInt() || index.asInt() != 0) {
                    throw new Main.UsageException("trace file " + file + ": its route record " + (skip + 1)
                            + " (line " + line + "), the first after vLLM's " + WARM_UP_RECORDS
                            + "-record warm-up, has token_idx " + (index == null ? "none" : index.asText())
                            + ", not 0 (a forward pass starts at 0): the warm-up is longer here; pass --skip with the"
                            + " number of warm-up records it holds.");
                }
            }
            routes[0]++;
            JsonNode ids = node.get("topk_ids");
            JsonNode weights = node.get("topk_weights");
            if (ids == null || !ids.isArray() || weights == null || !weights.isArray()
                    || ids.size() != weights.size() || ids.isEmpty()) {
                throw bad(file, line, ids != null && ids.isArray() && ids.isEmpty() && weights != null
                        && weights.isArray() && weights.isEmpty() ? "its \"topk_ids\" and \"topk_weights\" are empty"
                        : "it lacks \"topk_ids\" and \"topk_weights\" arrays of one length");
            }
            int[] e = new int[ids.size()];
            double[] w = new double[ids.size()];
            for (int i = 0; i < e.length; i++) {
                if (!ids.get(i).isIntegralNumber() || !ids.get(i).canConvertToInt() || ids.get(i).asInt() < 0 || ids.get(i).asInt() >= MAX_EXPERTS
                        || !weights.get(i).isNumber() || !(weights.get(i).asDouble() > 0)
                        || !Double.isFinite(weights.get(i).asDouble())) {
                    throw bad(file, line, "topk entry " + i + " is not an expert id in [0, " + MAX_EXPERTS
                            + ") with a positive finite weight");
                }
                e[i] = ids.get(i).asInt();
                w[i] = weights.get(i).asDouble();
                experts[0] = Math.max(experts[0], e[i] + 1);
                for (int j = 0; j < i; j++) {
                    if (e[j] == e[i]) {
                        throw bad(file, line, "expert " + e[i] + " appears twice");
                    }
                }
            }
            if (topK[0] == 0) {
                topK[0] = e.length;
            } else if (e.length != topK[0]) {
                throw bad(file, line, "it routes to " + e.length + " experts, the records before to " + topK[0]
                        + "; a log has one top-k");
            }
            sortByWeight(e, w);
            tokens.add(new RoutingReplay.Token(e, w));
        });
        if (tokens.isEmpty()) {
            throw new Main.UsageException("trace file " + file + " holds no route records after the "
                    + (routes[0] < skip ? "warm-up: it has " + routes[0] + " route records, --skip is " + skip
                    : skip + " skipped warm-up records") + ".");
        }
        return new Log(tokens, experts[0], Math.min(skip, routes[0]));
    }

    /**
     * Orders a record's experts by descending gate weight (ties by id), as vLLM writes them: the first is the token's
     * primary expert, which places its KV, whatever order a log lists them in.
     */
    static void sortByWeight(int[] e, double[] w) {
        for (int i = 1; i < e.length; i++) {
            for (int j = i; j > 0 && (w[j] > w[j - 1] || (w[j] == w[j - 1] && e[j] < e[j - 1])); j--) {
                int te = e[j];
                e[j] = e[j - 1];
                e[j - 1] = te;
                double tw = w[j];
                w[j] = w[j - 1];
                w[j - 1] = tw;
            }
        }
    }

    private static Main.UsageException bad(Path file, int line, String why) {
        return JsonLines.bad(file, line, "a routing record", why);
    }

    /** The real tokens' top-k expert ids, in file order (the first {@code skip} records dropped). */
    static List<int[]> read(Path file, int skip, String option) {
        Log log = read(file, skip);
        if (log.experts() > EXPERTS) {
            throw new Main.UsageException(option + " " + file + " routes to expert " + (log.experts() - 1) + ", but this bench "
                    + "models Qwen1.5-MoE's " + EXPERTS + " experts (ids 0.." + (EXPERTS - 1) + ").");
        }
        List<int[]> out = new ArrayList<>(log.tokens().size());
        for (RoutingReplay.Token t : log.tokens()) {
            out.add(t.experts());
        }
        return out;
    }
}
