package io.pikv.kv.compute;

import io.pikv.kv.KvLayout;
import io.pikv.kv.Page;
import io.pikv.kv.StorageType;
import jdk.incubator.vector.ByteVector;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.IntVector;
import jdk.incubator.vector.VectorMask;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorShape;
import jdk.incubator.vector.VectorSpecies;

/**
 * JDK Vector API kernel.
 *
 * <p>Per KV head, the page's K tile ({@code headDim × pageTokens}, transposed) is staged from off-heap memory into
 * a thread-local array with one bulk copy (fp16 is widened in the same pass with integer lane ops), then each
 * query head's logits for {@code L} tokens are {@code headDim} fused multiply-adds across the lanes — no
 * horizontal reductions. V rows are staged the same way and accumulated row by row. Staging through an array
 * keeps one source for JDK 17 (which loads vectors from {@code ByteBuffer}) and later JDKs (which load from
 * {@code MemorySegment} only); the tile stays in L1/L2, so memory traffic is the page read once.
 */
public final class VectorKernel implements AttentionKernel {
    private static final VectorSpecies<Float> SF = FloatVector.SPECIES_PREFERRED;
    private static final VectorSpecies<Integer> SI = SF.withLanes(int.class);
    private static final int L = SF.length();
    /** Bytes of one float vector's worth of int8 lanes (none below 8 lanes: the smallest byte vector is 64 bits). */
    private static final VectorSpecies<Byte> SB = L >= 8 ? VectorSpecies.of(byte.class, VectorShape.forBitSize(L * 8))
            : null;

    @Override
    public String name() {
        return "vector-" + SF.vectorBitSize() + "bit";
    }

    /** Lanes of the float species in use. */
    public static int lanes() {
        return L;
    }

    @Override
    public boolean supports(KvLayout layout) {
        return !layout.projected() && (layout.type() != StorageType.INT8 || SB != null)
                && layout.pageTokens() % L == 0 && layout.headDim() % L == 0 && L <= 16
                && layout.headDim() % 4 == 0; // the one-head score loop takes four dimensions a step
    }

    @Override
    public void foldPage(Page page, float[] bias, float[] query, int qHeads, AttentionAccumulator acc,
                         KernelScratch scratch, float[] logits, int logitsStride, int logitsOffset) {
        KvLayout layout = page.layout();
        int count = page.count();
        if (count == 0) {
            return;
        }
        int tokens = layout.pageTokens();
        int dim = layout.headDim();
        int heads = layout.kvHeads();
        int group = qHeads / heads;
        int blocks = (count + L - 1) / L;
        int span = blocks * L;
        scratch.ensure(dim * tokens, group * tokens + group, 0);
        boolean half = layout.type() == StorageType.FP16;

        for (int h = 0; h < heads; h++) {
            keys(page, layout, h, count, group, blocks, span, bias, query, acc, scratch, logits, logitsStride,
                    logitsOffset, half);
            values(page, layout, h, count, group, acc, scratch, half);
        }
    }

    // foldPage, keys and values are kept apart (and each larger than C2's inlining limit for hot methods) so
    // that each is compiled on its own. As one compilation unit they exceeded C2's node budget: calls inlined
    // late were left out, and the fp16 widening then ran the Vector API's Java fallback, boxing every vector.

    /** Stages head {@code h}'s K tile, computes the page's logits for the head's query group and folds the softmax state. */
    private static void keys(Page page, KvLayout layout, int h, int count, int group, int blocks, int span,
                             float[] bias, float[] query, AttentionAccumulator acc, KernelScratch scratch,
                             float[] logits, int logitsStride, int logitsOffset, boolean half) {
        int tokens = layout.pageTokens();
        int dim = layout.headDim();
        float[] tile = scratch.tile;
        float[] sc = scratch.scores;
        int rescaleAt = group * tokens;
        int g = 0;
        if (half && fusedHalf(layout, group)) {
            // 32-token fp16 pages: a K row is one swizzled block of 16 words whose low halves are tokens 0..15 and
            // high halves tokens 16..31, so the rows are widened in registers and no float tile is written.
            int[] words = scratch.halfWords;
            page.readHalfWords(layout.keyIndex(h, 0, 0), words, 0, dim * tokens / 2);
            for (; g < group; g += 4) {
                scores4x2Half(words, query, (h * group + g) * dim, dim, sc, g * tokens);
            }
        } else if (layout.type() == StorageType.INT8) {
            stageInt8Keys(page, layout, h, tile, scratch);
        } else {
            stage(page, layout.keyIndex(h, 0, 0), dim * tokens, tile, half, scratch);
        }
        for (; g + 4 <= group; g += 4) {
            int b = 0;
            for (; b + 2 <= blocks; b += 2) {
                scores4x2(tile, tokens, b * L, query, (h * group + g) * dim, dim, sc, g * tokens);
            }
            for (; b < blocks; b++) {
                scores4(tile, tokens, b * L, query, (h * group + g) * dim, dim, sc, g * tokens);
            }
        }
        for (; g < group; g++) {
            for (int b = 0; b < blocks; b++) {
                scores(tile, tokens, b * L, query, (h * group + g) * dim, dim, sc, g * tokens);
            }
        }
        for (g = 0; g < group; g++) {
            int qh = h * group + g;
            int row = g * tokens;
            skip(sc, row, span, count, bias);
            if (logits != null) {
                System.arraycopy(sc, row, logits, qh * logitsStride + logitsOffset, count);
            }
            float pageMax = max(sc, row, span);
            if (pageMax == Float.NEGATIVE_INFINITY) {
                sc[rescaleAt + g] = Float.NaN; // nothing visited for this head in this page
                continue;
            }
            float newMax = Math.max(acc.m[qh], pageMax);
            float sum = expInPlace(sc, row, span, newMax);
            float rescale = newMax == acc.m[qh] ? 1f : (float) Math.exp(acc.m[qh] - newMax);
            acc.l[qh] = acc.l[qh] * rescale + sum;
            acc.m[qh] = newMax;
            sc[rescaleAt + g] = rescale;
        }
    }

    /** Stages head {@code h}'s V rows and accumulates them, weighted by the probabilities {@link #keys} left. */
    private static void values(Page page, KvLayout layout, int h, int count, int group, AttentionAccumulator acc,
                               KernelScratch scratch, boolean half) {
        int tokens = layout.pageTokens();
        int dim = layout.headDim();
        float[] tile = scratch.tile;
        float[] sc = scratch.scores;
        int rescaleAt = group * tokens;
        // Rescale each head's output to the page's new running max once, so the loops below only add.
        for (int g = 0; g < group; g++) {
            float rescale = sc[rescaleAt + g];
            if (rescale != 1f && !Float.isNaN(rescale)) {
                scale(acc.o, (h * group + g) * dim, dim, rescale);
            }
        }
        int g = 0;
        if (half && fusedHalf(layout, group) && live(sc, rescaleAt, group)) {
            // A 32-dim chunk of a V row is one swizzled block: low halves dims c..c+15, high halves c+16..c+31.
            int[] words = scratch.halfWords;
            page.readHalfWords(layout.valueIndex(h, 0, 0), words, 0, ((count * dim + 31) & ~31) / 2);
            for (; g < group; g += 4) {
                for (int c = 0; c < dim; c += 32) {
                    accumulateGroup4Half(words, dim, count, sc, g * tokens, tokens, acc.o,
                            (h * group + g) * dim + c, dim, c);
                }
            }
            return;
        }
        if (layout.type() == StorageType.INT8) {
            stageInt8Values(page, layout, h, count, tile, scratch);
        } else {
            stage(page, layout.valueIndex(h, 0, 0), count * dim, tile, half, scratch);
        }
        for (; g + 4 <= group; g += 4) {
            if (live(sc, rescaleAt + g, 4)) {
                int c = 0;
                for (; c + 2 * L <= dim; c += 2 * L) {
                    accumulateGroup4(tile, dim, count, sc, g * tokens, tokens, acc.o,
                            (h * group + g) * dim + c, dim, c);
                }
                for (int k = 0; k < 4; k++) {
                    for (int cc = c; cc < dim; cc += L) {
                        accumulate1(tile, dim, count, sc, (g + k) * tokens, acc.o,
                                (h * group + g + k) * dim + cc, cc);
                    }
                }
                continue;
            }
            for (int k = 0; k < 4; k++) {
                accumulateHead(tile, dim, count, sc, rescaleAt, g + k, tokens, acc.o, (h * group + g + k) * dim);
            }
        }
        for (; g < group; g++) {
            accumulateHead(tile, dim, count, sc, rescaleAt, g, tokens, acc.o, (h * group + g) * dim);
        }
    }

    /** Whether the fused fp16 loops apply: 32-token pages, 16 float lanes, 32-multiple head dim, groups of 4. */
    private static boolean fusedHalf(KvLayout layout, int group) {
        return L == 16 && layout.pageTokens() == 32 && layout.headDim() % 32 == 0 && group % 4 == 0;
    }

    /** {@link #scores4x2} for 32-token fp16 pages, widening each K row (16 words) in registers. */
    private static void scores4x2Half(int[] words, float[] query, int qBase, int dim, float[] sc, int row) {
        FloatVector a0 = FloatVector.zero(SF);
        FloatVector a1 = FloatVector.zero(SF);
        FloatVector a2 = FloatVector.zero(SF);
        FloatVector a3 = FloatVector.zero(SF);
        FloatVector c0 = FloatVector.zero(SF);
        FloatVector c1 = FloatVector.zero(SF);
        FloatVector c2 = FloatVector.zero(SF);
        FloatVector c3 = FloatVector.zero(SF);
        for (int i = 0; i < dim; i++) {
            IntVector x = IntVector.fromArray(SI, words, i * 16);
            FloatVector k = x.lanewise(VectorOperators.LSHL, 16).lanewise(VectorOperators.ASHR, 3).and(0x8FFFE000)
                    .reinterpretAsFloats().mul(0x1p112f);
            FloatVector k1 = x.lanewise(VectorOperators.ASHR, 3).and(0x8FFFE000).reinterpretAsFloats().mul(0x1p112f);
            FloatVector q0 = FloatVector.broadcast(SF, query[qBase + i]);
            FloatVector q1 = FloatVector.broadcast(SF, query[qBase + dim + i]);
            FloatVector q2 = FloatVector.broadcast(SF, query[qBase + 2 * dim + i]);
            FloatVector q3 = FloatVector.broadcast(SF, query[qBase + 3 * dim + i]);
            a0 = k.fma(q0, a0);
            a1 = k.fma(q1, a1);
            a2 = k.fma(q2, a2);
            a3 = k.fma(q3, a3);
            c0 = k1.fma(q0, c0);
            c1 = k1.fma(q1, c1);
            c2 = k1.fma(q2, c2);
            c3 = k1.fma(q3, c3);
        }
        a0.intoArray(sc, row);
        a1.intoArray(sc, row + 32);
        a2.intoArray(sc, row + 64);
        a3.intoArray(sc, row + 96);
        c0.intoArray(sc, row + 16);
        c1.intoArray(sc, row + 32 + 16);
        c2.intoArray(sc, row + 64 + 16);
        c3.intoArray(sc, row + 96 + 16);
    }

    /** {@link #accumulateGroup4} for fp16 V rows: the 32-dim chunk at {@code c} is one block, widened in registers. */
    private static void accumulateGroup4Half(int[] words, int dim, int count, float[] p, int row, int tokens,
                                             float[] o, int oAt, int headStride, int c) {
        FloatVector x0 = FloatVector.zero(SF);
        FloatVector x1 = FloatVector.zero(SF);
        FloatVector y0 = FloatVector.zero(SF);
        FloatVector y1 = FloatVector.zero(SF);
        FloatVector z0 = FloatVector.zero(SF);
        FloatVector z1 = FloatVector.zero(SF);
        FloatVector w0 = FloatVector.zero(SF);
        FloatVector w1 = FloatVector.zero(SF);
        for (int t = 0; t < count; t++) {
            IntVector x = IntVector.fromArray(SI, words, (t * dim + c) >> 1);
            FloatVector v0 = x.lanewise(VectorOperators.LSHL, 16).lanewise(VectorOperators.ASHR, 3).and(0x8FFFE000)
                    .reinterpretAsFloats().mul(0x1p112f);
            FloatVector v1 = x.lanewise(VectorOperators.ASHR, 3).and(0x8FFFE000).reinterpretAsFloats().mul(0x1p112f);
            FloatVector p0 = FloatVector.broadcast(SF, p[row + t]);
            FloatVector p1 = FloatVector.broadcast(SF, p[row + tokens + t]);
            FloatVector p2 = FloatVector.broadcast(SF, p[row + 2 * tokens + t]);
            FloatVector p3 = FloatVector.broadcast(SF, p[row + 3 * tokens + t]);
            x0 = v0.fma(p0, x0);
            x1 = v1.fma(p0, x1);
            y0 = v0.fma(p1, y0);
            y1 = v1.fma(p1, y1);
            z0 = v0.fma(p2, z0);
            z1 = v1.fma(p2, z1);
            w0 = v0.fma(p3, w0);
            w1 = v1.fma(p3, w1);
        }
        FloatVector.fromArray(SF, o, oAt).add(x0).intoArray(o, oAt);
        FloatVector.fromArray(SF, o, oAt + L).add(x1).intoArray(o, oAt + L);
        int at = oAt + headStride;
        FloatVector.fromArray(SF, o, at).add(y0).intoArray(o, at);
        FloatVector.fromArray(SF, o, at + L).add(y1).intoArray(o, at + L);
        at += headStride;
        FloatVector.fromArray(SF, o, at).add(z0).intoArray(o, at);
        FloatVector.fromArray(SF, o, at + L).add(z1).intoArray(o, at + L);
        at += headStride;
        FloatVector.fromArray(SF, o, at).add(w0).intoArray(o, at);
        FloatVector.fromArray(SF, o, at + L).add(w1).intoArray(o, at + L);
    }

    private static void scale(float[] o, int from, int n, float factor) {
        FloatVector f = FloatVector.broadcast(SF, factor);
        for (int i = 0; i < n; i += L) {
            FloatVector.fromArray(SF, o, from + i).mul(f).intoArray(o, from + i);
        }
    }

    /** Whether all {@code n} heads from {@code at} visited something in this page (their rescale is not NaN). */
    private static boolean live(float[] sc, int at, int n) {
        for (int i = 0; i < n; i++) {
            if (Float.isNaN(sc[at + i])) {
                return false;
            }
        }
        return true;
    }

    private static void accumulateHead(float[] tile, int dim, int count, float[] sc, int rescaleAt, int g, int tokens,
                                       float[] o, int oBase) {
        if (!Float.isNaN(sc[rescaleAt + g])) {
            accumulate(tile, dim, count, sc, g * tokens, o, oBase);
        }
    }

    // C2 keeps vectors in registers only when every Vector API call inlines, the loop carrying a vector is the
    // only loop of its method, and loop-carried vectors start from a local (not a static field). Otherwise JDK 17
    // boxes them and runs 20-50x slower. Hence one small method per hot loop.

    /** Logits of the L tokens from column {@code col} of the staged K tile into {@code sc[row + col ..]}. */
    private static void scores(float[] tile, int tokens, int col, float[] query, int qBase, int dim, float[] sc,
                                int row) {
        FloatVector a0 = FloatVector.zero(SF);
        FloatVector a1 = FloatVector.zero(SF);
        FloatVector a2 = FloatVector.zero(SF);
        FloatVector a3 = FloatVector.zero(SF);
        for (int i = 0; i < dim; i += 4) {
            a0 = FloatVector.fromArray(SF, tile, i * tokens + col).fma(FloatVector.broadcast(SF, query[qBase + i]), a0);
            a1 = FloatVector.fromArray(SF, tile, (i + 1) * tokens + col)
                    .fma(FloatVector.broadcast(SF, query[qBase + i + 1]), a1);
            a2 = FloatVector.fromArray(SF, tile, (i + 2) * tokens + col)
                    .fma(FloatVector.broadcast(SF, query[qBase + i + 2]), a2);
            a3 = FloatVector.fromArray(SF, tile, (i + 3) * tokens + col)
                    .fma(FloatVector.broadcast(SF, query[qBase + i + 3]), a3);
        }
        FloatVector s = a0.add(a1).add(a2.add(a3));
        s.intoArray(sc, row + col);
    }

    /** {@link #scores} for four query heads sharing one KV head: each staged K row is loaded once for all four. */
    private static void scores4(float[] tile, int tokens, int col, float[] query, int qBase, int dim, float[] sc,
                                int row) {
        FloatVector a0 = FloatVector.zero(SF);
        FloatVector a1 = FloatVector.zero(SF);
        FloatVector a2 = FloatVector.zero(SF);
        FloatVector a3 = FloatVector.zero(SF);
        FloatVector c0 = FloatVector.zero(SF);
        FloatVector c1 = FloatVector.zero(SF);
        FloatVector c2 = FloatVector.zero(SF);
        FloatVector c3 = FloatVector.zero(SF);
        for (int i = 0; i < dim; i += 2) {
            FloatVector k = FloatVector.fromArray(SF, tile, i * tokens + col);
            FloatVector k1 = FloatVector.fromArray(SF, tile, (i + 1) * tokens + col);
            a0 = k.fma(FloatVector.broadcast(SF, query[qBase + i]), a0);
            a1 = k.fma(FloatVector.broadcast(SF, query[qBase + dim + i]), a1);
            a2 = k.fma(FloatVector.broadcast(SF, query[qBase + 2 * dim + i]), a2);
            a3 = k.fma(FloatVector.broadcast(SF, query[qBase + 3 * dim + i]), a3);
            c0 = k1.fma(FloatVector.broadcast(SF, query[qBase + i + 1]), c0);
            c1 = k1.fma(FloatVector.broadcast(SF, query[qBase + dim + i + 1]), c1);
            c2 = k1.fma(FloatVector.broadcast(SF, query[qBase + 2 * dim + i + 1]), c2);
            c3 = k1.fma(FloatVector.broadcast(SF, query[qBase + 3 * dim + i + 1]), c3);
        }
        a0.add(c0).intoArray(sc, row + col);
        a1.add(c1).intoArray(sc, row + tokens + col);
        a2.add(c2).intoArray(sc, row + 2 * tokens + col);
        a3.add(c3).intoArray(sc, row + 3 * tokens + col);
    }

    /** {@link #scores4} over two token blocks at once: each query broadcast feeds two blocks. */
    private static void scores4x2(float[] tile, int tokens, int col, float[] query, int qBase, int dim, float[] sc,
                                int row) {
        FloatVector a0 = FloatVector.zero(SF);
        FloatVector a1 = FloatVector.zero(SF);
        FloatVector a2 = FloatVector.zero(SF);
        FloatVector a3 = FloatVector.zero(SF);
        FloatVector c0 = FloatVector.zero(SF);
        FloatVector c1 = FloatVector.zero(SF);
        FloatVector c2 = FloatVector.zero(SF);
        FloatVector c3 = FloatVector.zero(SF);
        for (int i = 0; i < dim; i++) {
            FloatVector k = FloatVector.fromArray(SF, tile, i * tokens + col);
            FloatVector k1 = FloatVector.fromArray(SF, tile, i * tokens + col + L);
            FloatVector q0 = FloatVector.broadcast(SF, query[qBase + i]);
            FloatVector q1 = FloatVector.broadcast(SF, query[qBase + dim + i]);
            FloatVector q2 = FloatVector.broadcast(SF, query[qBase + 2 * dim + i]);
            FloatVector q3 = FloatVector.broadcast(SF, query[qBase + 3 * dim + i]);
            a0 = k.fma(q0, a0);
            a1 = k.fma(q1, a1);
            a2 = k.fma(q2, a2);
            a3 = k.fma(q3, a3);
            c0 = k1.fma(q0, c0);
            c1 = k1.fma(q1, c1);
            c2 = k1.fma(q2, c2);
            c3 = k1.fma(q3, c3);
        }
        a0.intoArray(sc, row + col);
        a1.intoArray(sc, row + tokens + col);
        a2.intoArray(sc, row + 2 * tokens + col);
        a3.intoArray(sc, row + 3 * tokens + col);
        c0.intoArray(sc, row + col + L);
        c1.intoArray(sc, row + tokens + col + L);
        c2.intoArray(sc, row + 2 * tokens + col + L);
        c3.intoArray(sc, row + 3 * tokens + col + L);
    }

    /**
     * Two L-wide column chunks from {@code c} for four query heads sharing one KV head: each staged V row chunk is
     * loaded once and feeds eight independent accumulators.
     */
    private static void accumulateGroup4(float[] tile, int dim, int count, float[] p, int row, int tokens,
                                         float[] o, int oAt, int headStride, int c) {
        FloatVector x0 = FloatVector.zero(SF);
        FloatVector x1 = FloatVector.zero(SF);
        FloatVector y0 = FloatVector.zero(SF);
        FloatVector y1 = FloatVector.zero(SF);
        FloatVector z0 = FloatVector.zero(SF);
        FloatVector z1 = FloatVector.zero(SF);
        FloatVector w0 = FloatVector.zero(SF);
        FloatVector w1 = FloatVector.zero(SF);
        for (int t = 0; t < count; t++) {
            FloatVector v0 = FloatVector.fromArray(SF, tile, t * dim + c);
            FloatVector v1 = FloatVector.fromArray(SF, tile, t * dim + c + L);
            FloatVector p0 = FloatVector.broadcast(SF, p[row + t]);
            FloatVector p1 = FloatVector.broadcast(SF, p[row + tokens + t]);
            FloatVector p2 = FloatVector.broadcast(SF, p[row + 2 * tokens + t]);
            FloatVector p3 = FloatVector.broadcast(SF, p[row + 3 * tokens + t]);
            x0 = v0.fma(p0, x0);
            x1 = v1.fma(p0, x1);
            y0 = v0.fma(p1, y0);
            y1 = v1.fma(p1, y1);
            z0 = v0.fma(p2, z0);
            z1 = v1.fma(p2, z1);
            w0 = v0.fma(p3, w0);
            w1 = v1.fma(p3, w1);
        }
        FloatVector.fromArray(SF, o, oAt).add(x0).intoArray(o, oAt);
        FloatVector.fromArray(SF, o, oAt + L).add(x1).intoArray(o, oAt + L);
        int at = oAt + headStride;
        FloatVector.fromArray(SF, o, at).add(y0).intoArray(o, at);
        FloatVector.fromArray(SF, o, at + L).add(y1).intoArray(o, at + L);
        at += headStride;
        FloatVector.fromArray(SF, o, at).add(z0).intoArray(o, at);
        FloatVector.fromArray(SF, o, at + L).add(z1).intoArray(o, at + L);
        at += headStride;
        FloatVector.fromArray(SF, o, at).add(w0).intoArray(o, at);
        FloatVector.fromArray(SF, o, at + L).add(w1).intoArray(o, at + L);
    }

    /** Sets to −∞ the logits of slots skipped by the bias and of the padding past {@code count} (whatever its bias). */
    private static void skip(float[] sc, int row, int span, int count, float[] bias) {
        FloatVector none = FloatVector.broadcast(SF, Float.NEGATIVE_INFINITY);
        for (int c = 0; c < span; c += L) {
            VectorMask<Float> visit = FloatVector.fromArray(SF, bias, c).compare(VectorOperators.EQ, 0f)
                    .and(SF.indexInRange(c, count));
            none.blend(FloatVector.fromArray(SF, sc, row + c), visit).intoArray(sc, row + c);
        }
    }

    private static float max(float[] sc, int row, int span) {
        FloatVector mx = FloatVector.broadcast(SF, Float.NEGATIVE_INFINITY);
        for (int c = 0; c < span; c += L) {
            mx = mx.max(FloatVector.fromArray(SF, sc, row + c));
        }
        return mx.reduceLanes(VectorOperators.MAX);
    }

    /** Replaces each logit by {@code e^(s − max)} and returns their sum. */
    private static float expInPlace(float[] sc, int row, int span, float max) {
        FloatVector sum = FloatVector.zero(SF);
        for (int c = 0; c < span; c += L) {
            FloatVector p = FloatVector.fromArray(SF, sc, row + c).sub(max).lanewise(VectorOperators.EXP);
            p.intoArray(sc, row + c);
            sum = sum.add(p);
        }
        return sum.reduceLanes(VectorOperators.ADD);
    }

    /** {@code o ← o + Σ_t p_t·V[t]} over the staged V rows ({@code o} is already rescaled). */
    private static void accumulate(float[] tile, int dim, int count, float[] sc, int row, float[] o, int oBase) {
        int c = 0;
        for (; c + 4 * L <= dim; c += 4 * L) {
            accumulate4(tile, dim, count, sc, row, o, oBase + c, c);
        }
        for (; c < dim; c += L) {
            accumulate1(tile, dim, count, sc, row, o, oBase + c, c);
        }
    }

    /** Four L-wide column chunks from {@code c}: four independent accumulators, one broadcast per token. */
    private static void accumulate4(float[] tile, int dim, int count, float[] sc, int row, float[] o, int oAt,
                                    int c) {
        FloatVector b0 = FloatVector.zero(SF);
        FloatVector b1 = FloatVector.zero(SF);
        FloatVector b2 = FloatVector.zero(SF);
        FloatVector b3 = FloatVector.zero(SF);
        for (int t = 0; t < count; t++) {
            FloatVector p = FloatVector.broadcast(SF, sc[row + t]);
            int at = t * dim + c;
            b0 = FloatVector.fromArray(SF, tile, at).fma(p, b0);
            b1 = FloatVector.fromArray(SF, tile, at + L).fma(p, b1);
            b2 = FloatVector.fromArray(SF, tile, at + 2 * L).fma(p, b2);
            b3 = FloatVector.fromArray(SF, tile, at + 3 * L).fma(p, b3);
        }
        FloatVector.fromArray(SF, o, oAt).add(b0).intoArray(o, oAt);
        FloatVector.fromArray(SF, o, oAt + L).add(b1).intoArray(o, oAt + L);
        FloatVector.fromArray(SF, o, oAt + 2 * L).add(b2).intoArray(o, oAt + 2 * L);
        FloatVector.fromArray(SF, o, oAt + 3 * L).add(b3).intoArray(o, oAt + 3 * L);
    }

    /** One L-wide column chunk {@code c}. */
    private static void accumulate1(float[] tile, int dim, int count, float[] sc, int row, float[] o, int oAt,
                                    int c) {
        FloatVector b0 = FloatVector.zero(SF);
        for (int t = 0; t < count; t++) {
            b0 = FloatVector.fromArray(SF, tile, t * dim + c).fma(FloatVector.broadcast(SF, sc[row + t]), b0);
        }
        FloatVector.fromArray(SF, o, oAt).add(b0).intoArray(o, oAt);
    }

    /**
     * Copies elements {@code [index, index + n)} from the page into {@code dst} as floats; {@code index} is a
     * multiple of 32 and fp16 reads are rounded up to whole 32-element blocks ({@code dst} has room).
     */
    private static void stage(Page page, int index, int n, float[] dst, boolean half, KernelScratch scratch) {
        if (!half) {
            page.readFloats(index, dst, 0, n);
            return;
        }
        int words = ((n + 31) & ~31) >> 1;
        int[] w = scratch.halfWords;
        page.readHalfWords(index, w, 0, words);
        for (int i = 0; i < words; i += L) {
            widen(w, i, dst, ((i & ~15) << 1) + (i & 15));
        }
    }

    /**
     * Widens the fp16 pairs in words {@code [i, i + L)}: low halves to {@code dst[at ..]}, high halves to
     * {@code dst[at + 16 ..]} (the block swizzle of {@link KvLayout#halfSlot(int)}). An arithmetic shift right by
     * 3 moves a half's exponent and mantissa into float position while its sign stays in bit 31; masking
     * {@code 0x8FFFE000} clears what the shift smeared, and scaling by 2^112 rebiases the exponent — exact for
     * normals, subnormals and signed zeros, as in {@code Fp16.toFloat}.
     */
    static void widen(int[] words, int i, float[] dst, int at) {
        IntVector x = IntVector.fromArray(SI, words, i);
        x.lanewise(VectorOperators.LSHL, 16).lanewise(VectorOperators.ASHR, 3).and(0x8FFFE000)
                .reinterpretAsFloats().mul(0x1p112f).intoArray(dst, at);
        x.lanewise(VectorOperators.ASHR, 3).and(0x8FFFE000).reinterpretAsFloats().mul(0x1p112f).intoArray(dst, at + 16);
    }

    /** Head {@code h}'s int8 K tile as floats: each channel's row of bytes times the channel's key scale. */
    private static void stageInt8Keys(Page page, KvLayout layout, int h, float[] dst, KernelScratch scratch) {
        int tokens = layout.pageTokens();
        int dim = layout.headDim();
        byte[] b = scratch.ensureInt8(dim * tokens, 0).bytes;
        page.readBytes(layout.keyIndex(h, 0, 0), b, 0, dim * tokens);
        for (int i = 0; i < dim; i++) {
            widenBytes(b, i * tokens, tokens, page.keyScale(h, i), dst, i * tokens);
        }
    }

    /** Head {@code h}'s int8 V rows as floats: each token's row of bytes times the token's value scale. */
    private static void stageInt8Values(Page page, KvLayout layout, int h, int count, float[] dst,
                                        KernelScratch scratch) {
        int dim = layout.headDim();
        byte[] b = scratch.ensureInt8(layout.pageTokens() * dim, 0).bytes;
        page.readBytes(layout.valueIndex(h, 0, 0), b, 0, count * dim);
        for (int t = 0; t < count; t++) {
            widenBytes(b, t * dim, dim, page.valueScale(h, t), dst, t * dim);
        }
    }

    /** {@code dst[at + j] = src[from + j] · scale} for {@code j < n} ({@code n} a multiple of the lanes). */
    private static void widenBytes(byte[] src, int from, int n, float scale, float[] dst, int at) {
        for (int j = 0; j < n; j += L) {
            ((FloatVector) ByteVector.fromArray(SB, src, from + j).convertShape(VectorOperators.B2F, SF, 0))
                    .mul(scale).intoArray(dst, at + j);
        }
    }
}
