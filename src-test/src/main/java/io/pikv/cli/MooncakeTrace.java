package io.pikv.cli;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;

import java.io.BufferedReader;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;

/**
 * Reads a Mooncake-format request trace: one JSON object per line with {@code timestamp} (ms) and
 * {@code hash_ids} (the prompt's 512-token blocks). Requests come back in timestamp order (stable for ties).
 */
final class MooncakeTrace {
    private static final ObjectMapper JSON = new ObjectMapper();

    private MooncakeTrace() {
    }

    static List<long[]> read(Path file) {
        if (!Files.isRegularFile(file)) {
            throw new Main.UsageException("trace file " + file + " does not exist or is not a file.");
        }
        record Request(long timestamp, int line, long[] blocks) {
        }
        List<Request> requests = new ArrayList<>();
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
                    throw bad(file, line, "it is not JSON");
                }
                JsonNode ts = node.get("timestamp");
                JsonNode ids = node.get("hash_ids");
                if (ts == null || !ts.isNumber() || ids == null || !ids.isArray()) {
                    throw bad(file, line, "it lacks a numeric \"timestamp\" or a \"hash_ids\" array");
                }
                long[] blocks = new long[ids.size()];
                for (int i = 0; i < blocks.length; i++) {
                    if (!ids.get(i).canConvertToLong()) {
                        throw bad(file, line, "hash_ids[" + i + "] is not an integer");
                    }
                    blocks[i] = ids.get(i).asLong();
                }
                requests.add(new Request(ts.asLong(), line, blocks));
            }
        } catch (IOException e) {
            throw new Main.UsageException("cannot read trace file " + file + ": " + e.getMessage());
        }
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
        return new Main.UsageException("line " + line + " of " + file + " is not a Mooncake request: " + why + ".");
    }
}
