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
            .enable(com.fasterxml.jackson.databind.DeserializationFeature.FAIL_ON_TRAILING_TOKENS);

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
                    throw bad(file, line, what, "it is not JSON");
                }
                each.accept(line, node);
            }
        } catch (java.nio.charset.CharacterCodingException e) {
            // No line number: the reader decodes ahead of the lines it has handed out.
            throw new Main.UsageException("trace file " + file + " is not UTF-8 JSON-lines text: it holds bytes that "
                    + "are not UTF-8.");
        } catch (IOException e) {
            throw new Main.UsageException("cannot read trace file " + file + ": " + e.getMessage() + ".");
        }
    }

    /** The error for a line that is not what the file should hold. */
    static Main.UsageException bad(Path file, int line, String what, String why) {
        return new Main.UsageException("line " + line + " of " + file + " is not " + what + ": " + why + ".");
    }
}
