package io.pikv.cli;

import com.fasterxml.jackson.databind.JsonNode;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;

/**
 * Reads a Mooncake-format request trace: one JSON object per line with {@code timestamp} (ms) and
 * {@code hash_ids} (the prompt's 512-token blocks). Requests come back in timestamp order (stable for ties).
 */
final class MooncakeTrace {
    private MooncakeTrace() {
    }

    /**
     * Heap a trace's bookkeeping takes per byte of its text, at most: a new id is a map entry (node, boxed key, record
     * with its boxed parent, table slot) and a slot of its request's array, about 104 bytes, and a compact id of five
     * or six digits takes 7 bytes of text ({@code 100000,}).
     */
    static final int HEAP_PER_TEXT_BYTE = 16;

    /** 2^64: ids are read as signed or unsigned 64-bit integers. */
    private static final java.math.BigInteger TWO_TO_64 = java.math.BigInteger.ONE.shiftLeft(64);

    /** Refuses a trace whose bookkeeping would not fit in the heap, before reading it. */
    private static void checkHeap(Path file) {
        long size;
        try {
            size = java.nio.file.Files.size(file);
        } catch (java.io.IOException e) {
            return; // said by the read that follows
        }
        long need = size * HEAP_PER_TEXT_BYTE;
        if (need > Runtime.getRuntime().maxMemory()) {
            throw new Main.UsageException("trace file " + file + " (" + (size >> 20) + " MiB) may need up to "
                    + (need >> 20) + " MiB of heap to read, more than this JVM's "
                    + (Runtime.getRuntime().maxMemory() >> 20) + " MiB; raise it (PIKV_JAVA_OPTS=-Xmx…) or split the "
                    + "trace.");
        }
    }

    static List<long[]> read(Path file) {
        record Request(long timestamp, int line, long[] blocks) {
        }
        record Seen(Long parent, int line) {
        }
        List<Request> requests = new ArrayList<>();
        checkHeap(file);
        // hash_ids are prefix-block hashes: an id names its whole prefix, so it always follows the same parent. The
        // replay's prefix hits and Belady's bound rest on that; a trace that breaks it is refused, not replayed.
        Map<Long, Seen> seen = new HashMap<>();
        // Ids from 2^63 to 2^64 - 1 (unsigned 64-bit hashes) are kept as the negative long of the same bits, which a
        // trace that also holds negative ids would confuse: the first line of each kind is kept to refuse such a mix.
        int[] firstSigned = {0};
        int[] firstUnsigned = {0};
        JsonLines.read(file, "a Mooncake request", (line, node) -> {
            JsonNode ts = node.get("timestamp");
            JsonNode ids = node.get("hash_ids");
            if (ts == null || !ts.isNumber() || ids == null || !ids.isArray()) {
                throw bad(file, line, "it lacks a numeric \"timestamp\" or a \"hash_ids\" array");
            }
            double whole = ts.asDouble(); // 1000.0 and 1e3 are whole: Python writes float timestamps so
            if (!ts.isIntegralNumber() && !(Double.isFinite(whole) && whole == Math.rint(whole))) {
                // Cut to whole milliseconds it could change places with its neighbours.
                throw bad(file, line, "its \"timestamp\" " + ts.asText() + " is not a whole number of milliseconds");
            }
            if (!ts.canConvertToLong() || !ts.isIntegralNumber() && !(whole >= -0x1p63 && whole < 0x1p63)) {
                // (A double node converts to long up to 2^63 itself, saturated: 9223372036854775808.0 is beyond too.)
                // A larger number would wrap or saturate and put the request out of its order.
                throw bad(file, line, "its \"timestamp\" " + ts.asText() + " is beyond a 64-bit millisecond count");
            }
            for (String length : new String[] {"input_length", "output_length"}) {
                JsonNode n = node.get(length);
                if (n != null && !(n.isIntegralNumber() && n.canConvertToLong() && n.asLong() >= 0)) {
                    throw bad(file, line, "its \"" + length + "\" is not a token count (an integer >= 0)");
                }
            }
            long[] blocks = new long[ids.size()];
            for (int i = 0; i < blocks.length; i++) {
                JsonNode id = ids.get(i);
                if (!id.isIntegralNumber()) {
                    throw bad(file, line, "hash_ids[" + i + "] is not an integer");
                }
                java.math.BigInteger value = id.bigIntegerValue();
                if (value.bitLength() > 64 || value.signum() < 0 && value.bitLength() > 63) {
                    throw bad(file, line, "hash_ids[" + i + "] = " + value + " is outside the 64-bit range (-2^63 to "
                            + TWO_TO_64.subtract(java.math.BigInteger.ONE) + ")");
                }
                int[] kind = value.signum() < 0 ? firstSigned : value.bitLength() == 64 ? firstUnsigned : null;
                if (kind != null && kind[0] == 0) {
                    kind[0] = line;
                }
                if (firstSigned[0] != 0 && firstUnsigned[0] != 0) {
                    throw bad(file, line, "the trace holds negative ids (line " + firstSigned[0] + ") and ids of 2^63 "
                            + "or more (line " + firstUnsigned[0] + "): ids are read as signed or as unsigned 64-bit "
                            + "integers, not both");
                }
                blocks[i] = value.longValue(); // the low 64 bits: an unsigned id above 2^63 - 1 as a negative long
                Long parent = i == 0 ? null : blocks[i - 1];
                Seen before = seen.putIfAbsent(blocks[i], new Seen(parent, line));
                if (before != null && !Objects.equals(before.parent(), parent)) {
                    for (int j = 0; j < i; j++) {
                        if (blocks[j] == blocks[i]) {
                            throw bad(file, line, "hash_ids[" + i + "] = " + value + " repeats hash_ids[" + j + "] of"
                                    + " the same request; hash_ids must be prefix-block hashes, each naming its whole"
                                    + " prefix");
                        }
                    }
                    // Ids as the file writes them: without negative ids, a negative long is an unsigned one.
                    java.util.function.LongFunction<String> shown = x -> firstSigned[0] == 0
                            ? Long.toUnsignedString(x) : Long.toString(x);
                    throw bad(file, line, "hash_ids[" + i + "] = " + value + " follows "
                            + (parent == null ? "nothing (it starts the prompt)" : "block " + shown.apply(parent))
                            + " here but " + (before.parent() == null ? "started the prompt"
                            : "followed block " + shown.apply(before.parent())) + " on line " + before.line()
                            + "; hash_ids must be prefix-block hashes, each id always after the same parent");
                }
            }
            requests.add(new Request(ts.asLong(), line, blocks));
        });
        if (requests.isEmpty()) {
            throw new Main.UsageException("trace file " + file + " holds no requests.");
        }
        if (requests.stream().allMatch(r -> r.blocks().length == 0)) {
            throw new Main.UsageException("trace file " + file + " holds no blocks: every request's hash_ids is empty.");
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
