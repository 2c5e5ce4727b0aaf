package io.pikv.cli;

import java.io.BufferedOutputStream;
import java.io.IOException;
import java.io.OutputStream;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.stream.Collectors;

/** Minimal NumPy {@code .npy} (format 1.0) writing and reading of little-endian float32/float16 arrays. */
final class Npy {
    private Npy() {
    }

    /** Streams an array of {@code shape} in dtype {@code <f4} or {@code <f2}: write the header, then elements. */
    static final class Writer implements AutoCloseable {
        private final OutputStream out;
        private final boolean half;
        private final ByteBuffer buf = ByteBuffer.allocate(1 << 16).order(ByteOrder.LITTLE_ENDIAN);

        Writer(Path file, boolean half, int... shape) throws IOException {
            this.out = new BufferedOutputStream(Files.newOutputStream(file), 1 << 16);
            this.half = half;
            String dims = Arrays.stream(shape).mapToObj(Integer::toString).collect(Collectors.joining(", "));
            String dict = "{'descr': '" + (half ? "<f2" : "<f4") + "', 'fortran_order': False, 'shape': (" + dims
                    + (shape.length == 1 ? "," : "") + "), }";
            int total = 10 + dict.length() + 1;
            int padded = (total + 63) / 64 * 64;
            String header = dict + " ".repeat(padded - total) + "\n";
            out.write(new byte[] {(byte) 0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0});
            out.write(header.length() & 0xFF);
            out.write(header.length() >>> 8);
            out.write(header.getBytes(StandardCharsets.US_ASCII));
        }

        /** Writes one element; {@code fp16Bits} is used when the dtype is float16. */
        void put(float value, short fp16Bits) throws IOException {
            if (buf.remaining() < 4) {
                flush();
            }
            if (half) {
                buf.putShort(fp16Bits);
            } else {
                buf.putFloat(value);
            }
        }

        private void flush() throws IOException {
            out.write(buf.array(), 0, buf.position());
            buf.clear();
        }

        @Override
        public void close() throws IOException {
            flush();
            out.close();
        }
    }

    /** A C-order array read from a {@code .npy} file, widened to float. */
    record Array(int[] shape, float[] data) {
    }

    /**
     * Reads a little-endian float32 or float16 array in C order (format 1.0, 2.0 or 3.0).
     *
     * @throws IOException when the file is not such an array; the message names what is wrong
     */
    static Array read(Path file) throws IOException {
        ByteBuffer b = bytes(file);
        if (b.limit() < 10 || b.get(0) != (byte) 0x93 || b.get(1) != 'N' || b.get(2) != 'U' || b.get(3) != 'M'
                || b.get(4) != 'P' || b.get(5) != 'Y') {
            throw new IOException(file + " is not a NumPy .npy file");
        }
        int major = b.get(6);
        if (major < 1 || major > 3) {
            throw new IOException(file + " is .npy format version " + major + "; this reader takes versions 1 to 3");
        }
        if (major != 1 && b.limit() < 12) {
            throw new IOException(file + " has a truncated .npy header");
        }
        int headerLen = major == 1 ? Short.toUnsignedInt(b.getShort(8)) : b.getInt(8);
        long start = (major == 1 ? 10 : 12) + (long) headerLen;
        if (headerLen < 0 || start > b.limit()) {
            throw new IOException(file + " has a truncated .npy header");
        }
        String header = new String(b.array(), major == 1 ? 10 : 12, headerLen, StandardCharsets.UTF_8);
        boolean half;
        if (header.contains("'<f4'")) {
            half = false;
        } else if (header.contains("'<f2'")) {
            half = true;
        } else if (header.contains("'>f4'") || header.contains("'>f2'")) {
            throw new IOException(file + " holds big-endian floats (" + field(header, "descr") + "); save it "
                    + "little-endian, e.g. with a.astype('<f4')");
        } else {
            throw new IOException(file + " holds " + field(header, "descr") + ", not float32 or float16");
        }
        if (!header.contains("'fortran_order': False")) {
            throw new IOException(file + " is in Fortran order; save it in C order");
        }
        String dims = field(header, "shape").replaceAll("[()\\s]", "");
        int[] shape;
        try {
            shape = dims.isEmpty() ? new int[0]
                    : Arrays.stream(dims.split(",")).filter(x -> !x.isEmpty()).mapToInt(Integer::parseInt).toArray();
        } catch (NumberFormatException e) {
            throw new IOException(file + " has a shape that is not a list of sizes below 2^31: " + field(header, "shape"));
        }
        for (int d : shape) {
            if (d < 0) {
                throw new IOException(file + " has a negative size in its shape " + Arrays.toString(shape));
            }
        }
        long n = 1;
        for (int d : shape) {
            n *= d;
            if (n > Integer.MAX_VALUE) { // checked as it grows: a long product of several large sizes wraps
                throw new IOException(file + " has the shape " + Arrays.toString(shape) + ", more than 2^31 - 1 "
                        + "elements");
            }
        }
        int bytes = half ? 2 : 4;
        if (n > Integer.MAX_VALUE || (long) b.limit() - start != n * bytes) {
            throw new IOException(file + " holds " + (b.limit() - start) + " data bytes, not the " + n * bytes
                    + " its shape " + Arrays.toString(shape) + " needs");
        }
        float[] out = new float[(int) n];
        b.position((int) start);
        for (int i = 0; i < out.length; i++) {
            out[i] = half ? io.pikv.kv.Fp16.toFloat(b.getShort()) : b.getFloat();
        }
        return new Array(shape, out);
    }

    /** The text of a header dictionary entry's value (up to the next top-level comma for scalars). */
    private static String field(String header, String key) {
        int at = header.indexOf("'" + key + "':");
        if (at < 0) {
            return "no " + key;
        }
        String rest = header.substring(at + key.length() + 3).strip();
        if (rest.startsWith("(")) {
            return rest.substring(0, rest.indexOf(')') + 1);
        }
        int end = rest.indexOf(',');
        return end < 0 ? rest : rest.substring(0, end);
    }

    /** Reads a float32 array's elements (any shape). */
    static float[] readFloats(Path file) throws IOException {
        Array a = read(file); // the same checks: magic, header, C order, size against the shape
        return a.data();
    }

    /** The file's bytes, little-endian; refused with a sentence when it is too large to hold in one array. */
    private static ByteBuffer bytes(Path file) throws IOException {
        if (!Files.exists(file)) {
            throw new java.nio.file.NoSuchFileException(file.toString());
        }
        if (Files.isDirectory(file)) {
            throw new IOException(file + " is a directory, not a .npy file");
        }
        if (!Files.isRegularFile(file)) {
            // A device or a pipe has no size to check and may never end.
            throw new IOException(file + " is not a regular file");
        }
        if (!Files.isReadable(file)) {
            throw new IOException(file + " cannot be read (no read permission)");
        }
        long size = Files.size(file);
        if (size > Integer.MAX_VALUE - 8) {
            throw new IOException(file + " is " + size + " bytes, more than this reader takes (2 GiB)");
        }
        // The bytes and the floats they become live at once: for float16, twice the file again.
        long need = 3 * size;
        long heap = Runtime.getRuntime().maxMemory();
        if (need > heap / 2) {
            throw new IOException(file + " (" + (size >> 20) + " MiB) needs about " + (need >> 20) + " MiB of heap to "
                    + "read, more than half of this JVM's " + (heap >> 20) + " MiB; raise it (PIKV_JAVA_OPTS=-Xmx…) or "
                    + "pass fewer tokens");
        }
        return ByteBuffer.wrap(Files.readAllBytes(file)).order(ByteOrder.LITTLE_ENDIAN);
    }
}
