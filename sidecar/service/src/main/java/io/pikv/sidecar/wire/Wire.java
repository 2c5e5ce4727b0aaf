package io.pikv.sidecar.wire;

import io.pikv.kv.ModelShape;
import io.pikv.kv.PartialAttention;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;

/**
 * The binary bodies of the KV API ({@code application/octet-stream}, little-endian; layouts in
 * {@code docs/sidecar-api.md}). Decoding checks the exact length against the model shape and that every float is
 * finite, and says what was wrong in a {@link WireException}; encoding is its mirror, used by the client.
 */
public final class Wire {
    /** {@link StepRequest#mode()}: the gate's logits over all experts follow. */
    public static final int GATE_LOGITS = 0;
    /** {@link StepRequest#mode()}: the chosen experts (top-k ids) follow, counted ({@code int32 k} first). */
    public static final int CHOSEN_EXPERTS = 2;
    /**
     * The mode number of chosen experts counted by the body's size, as sidecars before the count read them: refused,
     * so that a sidecar of either layout never reads the other's (a count word taken for an expert) as a step.
     */
    static final int UNCOUNTED_EXPERTS = 1;
    /** {@link StepRequest#scope()} and attention: every entry of the layer (exact). */
    public static final int SCOPE_ALL = 0;
    /** {@link StepRequest#scope()}: only entries routed to the step's experts (PiKV's sparse mode). */
    public static final int SCOPE_CHOSEN = 1;
    /** {@link AppendRequest.Entry#position()}: the next position of the sequence's layer. */
    public static final int NEXT_POSITION = -1;

    private Wire() {
    }

    /** Tokens to store: K and V ({@code kvHeads × headDim} floats each) with position and primary expert. */
    public record AppendRequest(int layer, Entry[] entries) {
        public record Entry(int position, int expert, float[] k, float[] v) {
        }
    }

    /** Partial attention of a query over one layer, all entries or those of some experts. */
    public record AttendRequest(int layer, int[] experts, float[] query) {
        public boolean allExperts() {
            return experts.length == 0;
        }
    }

    /** One decode step: route the token, store its K/V, attend with its query. */
    public record StepRequest(int layer, int mode, int scope, float[] logits, int[] experts, float[] query, float[] k,
                              float[] v) {
    }

    /** The answer of a step: the token's position, its experts and the attention output. */
    public record StepResponse(int position, int[] experts, float[] output) {
    }

    public static AppendRequest decodeAppend(byte[] body, ModelShape shape) {
        ByteBuffer in = wrap(body);
        need(in, 8, "append header (layer, count)");
        int layer = in.getInt();
        int count = in.getInt();
        int width = shape.kvWidth();
        long entryBytes = 8L + 8L * width;
        if (count < 1 || count > 1 << 20) {
            throw new WireException("append count must be in [1, 1048576], got " + count);
        }
        exact(body.length, 8 + count * entryBytes, "an append of " + count + " entries (8 + count × (8 + 8 × "
                + width + ") bytes)");
        AppendRequest.Entry[] entries = new AppendRequest.Entry[count];
        for (int i = 0; i < count; i++) {
            int position = in.getInt();
            int expert = in.getInt();
            float[] k = floats(in, width, "entry " + i + " K");
            float[] v = floats(in, width, "entry " + i + " V");
            entries[i] = new AppendRequest.Entry(position, expert, k, v);
        }
        return new AppendRequest(layer, entries);
    }

    public static byte[] encodeAppend(AppendRequest request) {
        int width = request.entries()[0].k().length;
        ByteBuffer out = allocate(8 + request.entries().length * (8 + 8 * width));
        out.putInt(request.layer()).putInt(request.entries().length);
        for (AppendRequest.Entry e : request.entries()) {
            out.putInt(e.position()).putInt(e.expert());
            putFloats(out, e.k());
            putFloats(out, e.v());
        }
        return out.array();
    }

    public static AttendRequest decodeAttend(byte[] body, ModelShape shape) {
        ByteBuffer in = wrap(body);
        need(in, 8, "attend header (layer, expert count)");
        int layer = in.getInt();
        int n = in.getInt();
        if (n < 0 || n > shape.experts()) {
            throw new WireException("expert count must be in [0, " + shape.experts() + "], got " + n);
        }
        exact(body.length, 8 + 4L * n + 4L * shape.queryWidth(), "an attend request with " + n
                + " experts (8 + 4 × experts + 4 × qHeads × headDim bytes)");
        int[] experts = new int[n];
        boolean[] seen = new boolean[shape.experts()];
        for (int i = 0; i < n; i++) {
            int e = in.getInt();
            if (e < 0 || e >= shape.experts()) {
                throw new WireException("scope expert " + i + " is " + e + ": experts are 0.." + (shape.experts() - 1));
            }
            if (seen[e]) {
                throw new WireException("scope expert " + e + " appears twice");
            }
            seen[e] = true;
            experts[i] = e;
        }
        return new AttendRequest(layer, experts, floats(in, shape.queryWidth(), "query"));
    }

    public static byte[] encodeAttend(AttendRequest request) {
        ByteBuffer out = allocate(8 + 4 * request.experts().length + 4 * request.query().length);
        out.putInt(request.layer()).putInt(request.experts().length);
        for (int e : request.experts()) {
            out.putInt(e);
        }
        putFloats(out, request.query());
        return out.array();
    }

    public static byte[] encodePartial(PartialAttention p) {
        int qh = p.qHeads();
        int d = p.headDim();
        ByteBuffer out = allocate(12 + 16 * qh + 8 * qh * d);
        out.putInt(qh).putInt(d).putInt(p.visited());
        for (int h = 0; h < qh; h++) {
            out.putDouble(p.max(h));
        }
        for (int h = 0; h < qh; h++) {
            out.putDouble(p.sumExp(h));
        }
        for (int h = 0; h < qh; h++) {
            for (int i = 0; i < d; i++) {
                out.putDouble(p.weightedV(h, i));
            }
        }
        return out.array();
    }

    /**
     * A shard's partial for a model of {@code shape}: its heads and dim must be the model's (checked before anything
     * is sized from them, so a malformed answer cannot make the reader allocate), and its numbers finite (a running
     * max may be -infinity: that head saw nothing).
     */
    public static PartialAttention decodePartial(byte[] body, ModelShape shape) {
        ByteBuffer in = wrap(body);
        need(in, 12, "partial header");
        int qh = in.getInt();
        int d = in.getInt();
        int visited = in.getInt();
        if (qh != shape.qHeads() || d != shape.headDim() || visited < 0) {
            throw new WireException("a partial for this model has " + shape.qHeads() + " heads of dim "
                    + shape.headDim() + " and visited >= 0, got " + qh + ", " + d + " and " + visited);
        }
        exact(body.length, 12 + 16L * qh + 8L * qh * d, "a partial of " + qh + " heads of dim " + d);
        double[] m = new double[qh];
        double[] l = new double[qh];
        double[] o = new double[qh * d];
        for (int h = 0; h < qh; h++) {
            m[h] = in.getDouble();
            if (Double.isNaN(m[h]) || m[h] == Double.POSITIVE_INFINITY) {
                throw new WireException("a partial's running max of head " + h + " is " + m[h]);
            }
        }
        for (int h = 0; h < qh; h++) {
            l[h] = in.getDouble();
            if (!(l[h] >= 0) || Double.isInfinite(l[h])) {
                throw new WireException("a partial's sum of head " + h + " is " + l[h] + ": finite and >= 0 expected");
            }
        }
        for (int i = 0; i < o.length; i++) {
            o[i] = in.getDouble();
            if (!Double.isFinite(o[i])) {
                throw new WireException("a partial's weighted value " + i + " is " + o[i]);
            }
        }
        // A head that saw nothing has no max, no sum and no values; one that saw an entry has a sum of at least the
        // max's own exp(0). Anything else would lose mass in the merge without a word.
        for (int h = 0; h < qh; h++) {
            boolean empty = m[h] == Double.NEGATIVE_INFINITY;
            boolean valuesZero = true;
            for (int i = h * d; i < (h + 1) * d; i++) {
                valuesZero &= o[i] == 0;
            }
            if (empty ? l[h] != 0 || !valuesZero : !(l[h] > 0)) {
                throw new WireException("a partial's head " + h + " contradicts itself: max " + m[h] + ", sum " + l[h]
                        + (empty && !valuesZero ? ", weighted values not 0" : ""));
            }
        }
        return new PartialAttention(qh, d, m, l, o, visited, null, null);
    }

    public static StepRequest decodeStep(byte[] body, ModelShape shape) {
        ByteBuffer in = wrap(body);
        need(in, 12, "step header (layer, mode, scope)");
        int layer = in.getInt();
        int mode = in.getInt();
        int scope = in.getInt();
        if (mode == UNCOUNTED_EXPERTS) {
            throw new WireException("step mode 1 (chosen experts counted by the body's size) is not taken: send mode 2, "
                    + "int32 k before the experts (a gateway and its shards must run the same sidecar version)");
        }
        if (mode != GATE_LOGITS && mode != CHOSEN_EXPERTS) {
            throw new WireException("step mode must be 0 (gate logits) or 2 (chosen experts), got " + mode);
        }
        if (scope != SCOPE_ALL && scope != SCOPE_CHOSEN) {
            throw new WireException("step scope must be 0 (all entries) or 1 (the step's experts), got " + scope);
        }
        long fixed = 12 + 4L * shape.queryWidth() + 8L * shape.kvWidth();
        int routing;
        if (mode == GATE_LOGITS) {
            routing = shape.experts();
            exact(body.length, fixed + 4L * routing, "a step with " + routing + " gate logits (12 + 4 × " + routing
                    + " + 4 × qHeads × headDim + 8 × kvHeads × headDim bytes)");
        } else {
            // 1 to topK chosen experts (cache-aware routing may keep fewer), counted in the body: a count inferred
            // from the size would read a stray or missing word as an expert and shift every float after it.
            need(in, 4, "step's count of chosen experts");
            routing = in.getInt();
            if (routing < 1 || routing > shape.topK()) {
                throw new WireException("a step with chosen experts names 1 to " + shape.topK() + " of them, got "
                        + routing);
            }
            exact(body.length, fixed + 4 + 4L * routing, "a step with " + routing + " chosen expert(s) (16 + 4 × "
                    + routing + " + 4 × qHeads × headDim + 8 × kvHeads × headDim bytes)");
        }
        float[] logits = null;
        int[] experts = null;
        if (mode == GATE_LOGITS) {
            logits = floats(in, routing, "gate logits");
        } else {
            experts = new int[routing];
            for (int i = 0; i < routing; i++) {
                experts[i] = in.getInt();
            }
        }
        float[] q = floats(in, shape.queryWidth(), "query");
        float[] k = floats(in, shape.kvWidth(), "K");
        float[] v = floats(in, shape.kvWidth(), "V");
        return new StepRequest(layer, mode, scope, logits, experts, q, k, v);
    }

    public static byte[] encodeStep(StepRequest r) {
        int routing = r.mode() == GATE_LOGITS ? r.logits().length : 1 + r.experts().length;
        ByteBuffer out = allocate(12 + 4 * routing + 4 * r.query().length + 8 * r.k().length);
        out.putInt(r.layer()).putInt(r.mode()).putInt(r.scope());
        if (r.mode() == GATE_LOGITS) {
            putFloats(out, r.logits());
        } else {
            out.putInt(r.experts().length);
            for (int e : r.experts()) {
                out.putInt(e);
            }
        }
        putFloats(out, r.query());
        putFloats(out, r.k());
        putFloats(out, r.v());
        return out.array();
    }

    public static byte[] encodeStepResponse(StepResponse r) {
        ByteBuffer out = allocate(8 + 4 * r.experts().length + 4 * r.output().length);
        out.putInt(r.position()).putInt(r.experts().length);
        for (int e : r.experts()) {
            out.putInt(e);
        }
        putFloats(out, r.output());
        return out.array();
    }

    public static StepResponse decodeStepResponse(byte[] body, ModelShape shape) {
        ByteBuffer in = wrap(body);
        need(in, 8, "step response header");
        int position = in.getInt();
        int k = in.getInt();
        if (k < 1 || k > shape.topK()) {
            throw new WireException("a step response names 1 to " + shape.topK() + " experts, got " + k);
        }
        exact(body.length, 8 + 4L * k + 4L * shape.queryWidth(), "a step response");
        if (position < 0) {
            throw new WireException("a step response's position is " + position + "; positions are >= 0");
        }
        int[] experts = new int[k];
        boolean[] seen = new boolean[shape.experts()];
        for (int i = 0; i < k; i++) {
            int e = in.getInt();
            if (e < 0 || e >= shape.experts() || seen[e]) {
                throw new WireException("a step response's expert " + e + " is outside [0, " + shape.experts()
                        + ") or named twice");
            }
            seen[e] = true;
            experts[i] = e;
        }
        float[] output = floats(in, shape.queryWidth(), "output");
        return new StepResponse(position, experts, output);
    }

    private static ByteBuffer wrap(byte[] body) {
        if (body == null) {
            throw new WireException("the request has no body");
        }
        return ByteBuffer.wrap(body).order(ByteOrder.LITTLE_ENDIAN);
    }

    private static ByteBuffer allocate(int bytes) {
        return ByteBuffer.allocate(bytes).order(ByteOrder.LITTLE_ENDIAN);
    }

    private static void need(ByteBuffer in, int bytes, String what) {
        if (in.remaining() < bytes) {
            // What is left and what was needed, and the whole body's length (a header after another one, say).
            throw new WireException("body is " + in.limit() + " bytes, too short for the " + what + ": " + bytes
                    + " bytes needed at byte " + in.position() + ", " + in.remaining() + " left");
        }
    }

    private static void exact(long actual, long expected, String what) {
        if (actual != expected) {
            throw new WireException("body is " + actual + " bytes, but " + what + " is " + expected + " bytes");
        }
    }

    private static float[] floats(ByteBuffer in, int n, String what) {
        float[] x = new float[n];
        for (int i = 0; i < n; i++) {
            float f = in.getFloat();
            if (!Float.isFinite(f)) {
                throw new WireException(what + "[" + i + "] is " + f + ": values must be finite");
            }
            x[i] = f;
        }
        return x;
    }

    private static void putFloats(ByteBuffer out, float[] x) {
        for (float f : x) {
            out.putFloat(f);
        }
    }
}
