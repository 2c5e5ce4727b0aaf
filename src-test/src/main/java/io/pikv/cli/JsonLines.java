package io.pikv.cli;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;

import java.io.BufferedReader;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;

/** Reads a JSON-lines file for a benchmark, turning every problem into a one-sentence usage error. */
final class JsonLines {
    /** One JSON value per line: anything after it on the line makes the line malformed. */
    private static final ObjectMapper JSON = new ObjectMapper()
            .enable(com.fasterxml.jackson.databind.DeserializationFeature.FAIL_ON_TRAILING_TOKENS)
            // A key given twice would be read as its last value, silently: refused instead.
            .enable(com.fasterxml.jackson.core.JsonParser.Feature.STRICT_DUPLICATE_DETECTION);
    /** Longest line read (a record of a few million ids; a line without end must not take the heap with it). */
    static final int MAX_LINE_CHARS = 64 << 20;

    /** Takes one record: its 1-based line number and its JSON. */
    @FunctionalInterface
    interface Record {
        void accept(int line, JsonNode node);
    }

    private JsonLines() {
    }

    /**
     * Hands every non-blank line of {@code file} to {@code each}; {@code what} names a record in error messages
     * ("a Mooncake request").
     */
    static void read(Path file, String what, Record each) {
        if (!Files.isRegularFile(file)) {
            throw new Main.UsageException("trace file " + file + " does not exist or is not a file (the shared traces"
                    + " are kept in ../shared/data/ beside the project; the README says where they come from).");
        }
        if (!Files.isReadable(file)) {
            throw new Main.UsageException("trace file " + file + " cannot be read (no read permission).");
        }
        try (BufferedReader in = Files.newBufferedReader(file)) {
            String text;
            int line = 0;
            while ((text = readLine(in)) != null) {
                line++;
                if (line == 1 && text.startsWith("\uFEFF")) {
                    text = text.substring(1); // a UTF-8 byte-order mark (some editors write one) is not the JSON's
                }
                if (text.length() > MAX_LINE_CHARS) {
                    throw bad(file, line, what, "it is longer than " + (MAX_LINE_CHARS >> 20) + " Mi characters");
                }
                if (text.isBlank()) {
                    continue;
                }
                JsonNode node;
                try {
                    node = JSON.readTree(text);
                } catch (com.fasterxml.jackson.core.JsonParseException e) {
                    String why = String.valueOf(e.getOriginalMessage());
                    throw bad(file, line, what, why.startsWith("Duplicate field")
                            ? "it names a key twice (" + why + ")" : "it is not JSON");
                } catch (IOException e) {
                    throw bad(file, line, what, "it is not JSON");
                }
                each.accept(line, node);
            }
        } catch (java.nio.charset.CharacterCodingException e) {
            // No line number: the reader decodes ahead of the lines it has handed out.
            throw new Main.UsageException("trace file " + file + " is not UTF-8 JSON-lines text: it holds bytes that "
                    + "are not UTF-8.");
        } catch (IOException e) {
            // A file system's exception names the file as its message; its reason (if any) is what went wrong.
            String why = e instanceof java.nio.file.FileSystemException fs
                    ? (fs.getReason() != null ? fs.getReason() : e.getClass().getSimpleName()) : e.getMessage();
            throw new Main.UsageException("cannot read trace file " + file + ": " + why + ".");
        }
    }

    /**
     * The next line without its end ({@code \n}, {@code \r\n} or {@code \r}), or null at the end; stops reading a
     * line one character past {@link #MAX_LINE_CHARS}, so that the caller refuses it without holding all of it.
     */
    private static String readLine(BufferedReader in) throws IOException {
        StringBuilder b = new StringBuilder();
        int c;
        while ((c = in.read()) >= 0) {
            if (c == '\n') {
                return b.toString();
            }
            if (c == '\r') {
                in.mark(1);
                if (in.read() != '\n') {
                    in.reset();
                }
                return b.toString();
            }
            b.append((char) c);
            if (b.length() > MAX_LINE_CHARS) {
                return b.toString();
            }
        }
        return b.length() == 0 ? null : b.toString();
    }

    /** The error for a line that is not what the file should hold. */
    static Main.UsageException bad(Path file, int line, String what, String why) {
        return new Main.UsageException("line " + line + " of " + file + " is not " + what + ": " + why + ".");
    }
}
