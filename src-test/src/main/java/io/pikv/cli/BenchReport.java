package io.pikv.cli;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;

import java.io.IOException;
import java.io.PrintWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;

/** The figures of one benchmark run: printed as aligned tables, written as JSON with the same keys. */
final class BenchReport {
    private static final ObjectMapper JSON = new ObjectMapper().enable(SerializationFeature.INDENT_OUTPUT);

    private final String title;
    private final Map<String, Object> json = new LinkedHashMap<>();

    BenchReport(String title) {
        this.title = title;
    }

    /** A top-level figure (null values print as "n/a" and are written as JSON null). */
    BenchReport put(String key, Object value) {
        json.put(key, value);
        return this;
    }

    /** Prints the scalar figures as a two-column table and every list of rows as its own table. */
    void print(PrintWriter out) {
        out.println(title);
        List<String[]> rows = new ArrayList<>();
        for (Map.Entry<String, Object> e : json.entrySet()) {
            if (!(e.getValue() instanceof List<?>)) {
                rows.add(new String[] {e.getKey(), format(e.getValue())});
            }
        }
        table(out, new String[] {"figure", "value"}, rows);
        for (Map.Entry<String, Object> e : json.entrySet()) {
            if (e.getValue() instanceof List<?> list && !list.isEmpty() && list.get(0) instanceof Map<?, ?> first) {
                out.println();
                out.println(e.getKey() + ":");
                // Every key of every row (in first-seen order): a later row may carry one the first lacks.
                java.util.Set<String> keys = new java.util.LinkedHashSet<>();
                for (Object o : list) {
                    ((Map<?, ?>) o).keySet().forEach(k -> keys.add(String.valueOf(k)));
                }
                String[] header = keys.toArray(String[]::new);
                List<String[]> body = new ArrayList<>();
                for (Object o : list) {
                    Map<?, ?> row = (Map<?, ?>) o;
                    String[] cells = new String[header.length];
                    for (int i = 0; i < header.length; i++) {
                        cells[i] = format(row.get(header[i]));
                    }
                    body.add(cells);
                }
                table(out, header, body);
            }
        }
        out.flush();
    }

    /**
     * {@code --json FILE}: refused while the command line is read (exit 2) when it could not be written, so a run of
     * minutes does not end by failing to save its figures.
     */
    static final class JsonFile implements picocli.CommandLine.ITypeConverter<Path> {
        @Override
        public Path convert(String value) {
            Path file = Path.of(value).toAbsolutePath();
            if (Files.exists(file)) {
                if (!Files.isRegularFile(file) || !Files.isWritable(file)) {
                    throw new picocli.CommandLine.TypeConversionException("'" + value + "' is not a writable file");
                }
                return Path.of(value);
            }
            Path dir = file.getParent();
            while (dir != null && !Files.exists(dir)) {
                dir = dir.getParent(); // written with its missing parent directories
            }
            if (dir == null || !Files.isDirectory(dir) || !Files.isWritable(dir)) {
                throw new picocli.CommandLine.TypeConversionException("'" + value + "' cannot be created: "
                        + (dir == null ? "no directory above it exists" : dir + " is not a writable directory"));
            }
            return Path.of(value);
        }
    }

    /**
     * Refuses (exit 2) a {@code --json} file that is one of the command's inputs: writing the report would destroy the
     * trace or tensors it read.
     */
    static void notAnInput(Path json, Path... inputs) {
        if (json == null || !Files.exists(json)) {
            return;
        }
        for (Path input : inputs) {
            try {
                if (input != null && Files.exists(input) && Files.isSameFile(json, input)) {
                    throw new Main.UsageException("--json " + json + " is the input " + input + ": the report would "
                            + "overwrite it; name another file.");
                }
            } catch (java.io.IOException e) {
                // cannot tell: the input is read before anything is written anyway
            }
        }
    }

    /** Refuses (exit 2) a list flag given with no values ({@code --capacity ,}). */
    static void notEmpty(java.util.List<?> values, String flag) {
        if (values != null && values.isEmpty()) {
            throw new Main.UsageException(flag + " needs at least one value.");
        }
    }

    /** Refuses (exit 2) a list flag naming one value twice ({@code --capacity 4000,4000}), which would run it twice. */
    static void distinct(java.util.List<?> values, String flag, String what) {
        java.util.Set<Object> seen = new java.util.HashSet<>();
        for (Object v : values) {
            if (!seen.add(v)) {
                throw new Main.UsageException(flag + " names " + what + " " + v + " twice.");
            }
        }
    }

    void writeJson(Path file) {
        try {
            Path parent = file.toAbsolutePath().getParent();
            if (parent != null) {
                Files.createDirectories(parent);
            }
            JSON.writeValue(file.toFile(), finite(json));
        } catch (IOException e) {
            throw new Main.RunFailure("cannot write " + file + ": " + e, e); // the flag was checked when parsed
        }
    }

    /** The figures with every NaN or infinite number as null (JSON has no such numbers). */
    private static Object finite(Object value) {
        if (value instanceof Double d && !Double.isFinite(d) || value instanceof Float f && !Float.isFinite(f)) {
            return null;
        }
        if (value instanceof Map<?, ?> map) {
            Map<Object, Object> out = new LinkedHashMap<>();
            map.forEach((k, v) -> out.put(k, finite(v)));
            return out;
        }
        if (value instanceof List<?> list) {
            List<Object> out = new ArrayList<>(list.size());
            list.forEach(v -> out.add(finite(v)));
            return out;
        }
        return value;
    }

    private static void table(PrintWriter out, String[] header, List<String[]> rows) {
        int[] width = new int[header.length];
        for (int i = 0; i < header.length; i++) {
            width[i] = header[i].length();
            for (String[] r : rows) {
                width[i] = Math.max(width[i], r[i].length());
            }
        }
        line(out, header, width);
        StringBuilder rule = new StringBuilder();
        for (int i = 0; i < width.length; i++) {
            rule.append(i == 0 ? "" : "  ").append("-".repeat(width[i]));
        }
        out.println(rule);
        for (String[] r : rows) {
            line(out, r, width);
        }
    }

    private static void line(PrintWriter out, String[] cells, int[] width) {
        StringBuilder b = new StringBuilder();
        for (int i = 0; i < cells.length; i++) {
            if (i > 0) {
                b.append("  ");
            }
            b.append(i == 0 ? pad(cells[i], width[i], false) : pad(cells[i], width[i], true));
        }
        out.println(b.toString().stripTrailing());
    }

    private static String pad(String s, int w, boolean right) {
        String fill = " ".repeat(w - s.length());
        return right ? fill + s : s + fill;
    }

    static String format(Object v) {
        if (v == null) {
            return "n/a";
        }
        if (v instanceof Double || v instanceof Float) {
            double d = ((Number) v).doubleValue();
            if (!Double.isFinite(d)) {
                return "n/a"; // as the JSON says: null
            }
            // A figure the JSON holds in a few digits (rounded when put, or given so) is printed as the JSON has it;
            // a longer one is shortened for the table.
            java.math.BigDecimal shortest = java.math.BigDecimal.valueOf(d).stripTrailingZeros();
            if (shortest.precision() <= 7 && shortest.scale() <= 9) {
                return shortest.toPlainString();
            }
            return Math.abs(d) >= 100 ? String.format(Locale.ROOT, "%.1f", d)
                    : Math.abs(d) >= 1 ? String.format(Locale.ROOT, "%.3f", d)
                    : String.format(Locale.ROOT, "%.4g", d);
        }
        return String.valueOf(v);
    }

    /** Rounds to {@code digits} significant digits so JSON stays readable. */
    static double round(double v, int digits) {
        if (v == 0 || !Double.isFinite(v)) {
            return v;
        }
        return new java.math.BigDecimal(v).round(new java.math.MathContext(digits)).doubleValue();
    }
}
