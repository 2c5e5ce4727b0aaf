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

    /** Reads a float32 array's elements (any shape). */
    static float[] readFloats(Path file) throws IOException {
        ByteBuffer b = ByteBuffer.wrap(Files.readAllBytes(file)).order(ByteOrder.LITTLE_ENDIAN);
        int major = b.get(6);
        int headerLen = major == 1 ? Short.toUnsignedInt(b.getShort(8)) : b.getInt(8);
        int start = (major == 1 ? 10 : 12) + headerLen;
        String header = new String(b.array(), major == 1 ? 10 : 12, headerLen, StandardCharsets.US_ASCII);
        if (!header.contains("'<f4'")) {
            throw new IOException(file + " is not a little-endian float32 array: " + header.strip());
        }
        b.position(start);
        float[] out = new float[b.remaining() / 4];
        b.asFloatBuffer().get(out);
        return out;
    }
}
