package io.pikv.cli;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Comparator;
import java.util.stream.Stream;

/** Removes a directory the commands made (logs, temp files), with everything under it. */
final class DirTree {
    private DirTree() {
    }

    /** Deletes {@code dir} and what it holds, deepest first; null when it is gone, else why some of it stays. */
    static String delete(Path dir) {
        try (Stream<Path> files = Files.walk(dir)) {
            for (Path p : (Iterable<Path>) files.sorted(Comparator.reverseOrder())::iterator) {
                Files.deleteIfExists(p);
            }
            return null;
        } catch (IOException | UncheckedIOException e) {
            return e.getMessage();
        }
    }
}
