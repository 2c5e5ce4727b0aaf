package io.pikv.kv.compute;

import io.pikv.kv.KvLayout;
import io.pikv.kv.Page;

/**
 * Folds the entries of one page into a running online-softmax state, for every query head at once.
 *
 * <p>Contract: for each query head {@code qh} (KV head {@code qh / groupSize}) and each slot {@code t < page.count()}
 * with {@code bias[t] == 0}, the logit is {@code s = Σ_i query[qh·D+i] · K[h][i][t]} ({@code query} is already
 * scaled by {@code 1/√D}); slots with {@code bias[t] == −∞} are skipped. The state is updated with the
 * log-sum-exp rule: {@code M = max(m, max_t s)}, {@code l ← l·e^(m−M) + Σ e^(s−M)},
 * {@code o ← o·e^(m−M) + Σ e^(s−M)·V[h][t]}. When {@code logits} is not null the kernel also writes each slot's
 * logit ({@code −∞} for skipped ones) to {@code logits[qh·logitsStride + logitsOffset + t]}.
 */
public interface AttentionKernel {

    /** A short name for logs and benchmark output. */
    String name();

    /** Whether this kernel handles pages of this layout. */
    boolean supports(KvLayout layout);

    void foldPage(Page page, float[] bias, float[] query, int qHeads, AttentionAccumulator acc,
                  KernelScratch scratch, float[] logits, int logitsStride, int logitsOffset);

    /**
     * Called once before the pages of one attention call over {@code layer} are folded into a fresh {@code acc}.
     * Kernels that fold in another space (the low-rank kernel folds values as basis coefficients) set up their
     * per-call state here.
     */
    default void begin(AttentionAccumulator acc, int layer) {
    }

    /** Called once after the last page: leaves {@code acc.m}, {@code acc.l} and {@code acc.o} as the contract says. */
    default void finish(AttentionAccumulator acc) {
    }
}
