package io.pikv.cli;

import com.fasterxml.jackson.databind.JsonNode;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;

/**
 * Reads a Mooncake-format request trace: one JSON object per line with {@code timestamp} (ms) and
 * {@code hash_ids} (the prompt's 512-token blocks). Requests come back in timestamp order (stable for ties).
 */
final class MooncakeTrace {
    private MooncakeTrace() {
    }

    static List<long[]> read(Path file) {
        record Request(long timestamp, int line, long[] blocks) {
        }
        List<Request> requests = new ArrayList<>();
        JsonLines.read(file, "a Mooncake request", (line, node) -> {
            JsonNode ts = node.get("timestamp");
            JsonNode ids = node.get("hash_ids");
            if (ts == null || !ts.isNumber() || ids == null || !ids.isArray()) {
                throw bad(file, line, "it lacks a numeric \"timestamp\" or a \"hash_ids\" array");
            }
            long[] blocks = new long[ids.size()];
            for (int i = 0; i < blocks.length; i++) {
                if (!ids.get(i).isIntegralNumber() || !ids.get(i).canConvertToLong()) {
                    throw bad(file, line, "hash_ids[" + i + "] is not an integer");
                }
                blocks[i] = ids.get(i).asLong();
            }
            requests.add(new Request(ts.asLong(), line, blocks));
        });
        if (requests.isEmpty()) {
            throw new Main.UsageException("trace file " + file + " holds no requests.");
        }
        requests.sort(Comparator.comparingLong(Request::timestamp).thenComparingInt(Request::line));
        List<long[]> out = new ArrayList<>(requests.size());
        for (Request r : requests) {
            out.add(r.blocks());
        }
        return out;
    }

    private static Main.UsageException bad(Path file, int line, String why) {
        return JsonLines.bad(file, line, "a Mooncake request", why);
    }
}
