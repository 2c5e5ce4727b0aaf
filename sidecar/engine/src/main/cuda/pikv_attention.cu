// PiKV decode attention over paged fp16 KV, device side.
//
// Page format (docs/engine.md): K region [kvHeads][headDim][P] then V region [kvHeads][P][headDim], fp16,
// swizzled in blocks of 32 elements: 32-bit word w of a block holds element w (low half) and element w + 16
// (high half). Pages live in one device pool; a page is addressed by its index.
//
// Limits of these kernels (checked by the host): P == 32, headDim in {32, 64, 128, 256} (one partial kernel
// per head dim), group = qHeads / kvHeads <= 4, 128 threads per block.
#include <cuda_fp16.h>

#define PIKV_P 32
#define PIKV_THREADS 128
#define PIKV_MAX_GROUP 4

__device__ __forceinline__ float2 pikv_word_to_float2(unsigned int word) {
    __half2 h = *reinterpret_cast<__half2*>(&word);
    return __half22float2(h);  // .x = element w (low half), .y = element w + 16 (high half)
}

__device__ __forceinline__ float pikv_warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

__device__ __forceinline__ float pikv_warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// Widens a 16-byte load: 4 words of one 32-element block. Word w holds element w (low) and w + 16 (high).
__device__ __forceinline__ void pikv_widen4(uint4 x, float lo[4], float hi[4]) {
    float2 a = pikv_word_to_float2(x.x);
    float2 b = pikv_word_to_float2(x.y);
    float2 c = pikv_word_to_float2(x.z);
    float2 d = pikv_word_to_float2(x.w);
    lo[0] = a.x; hi[0] = a.y;
    lo[1] = b.x; hi[1] = b.y;
    lo[2] = c.x; hi[2] = c.y;
    lo[3] = d.x; hi[3] = d.y;
}

// Issues one page's 16-byte K and V loads for this thread (see pikv_partial_impl for the mapping).
template <int D>
__device__ __forceinline__ void pikv_load_page(const unsigned char* __restrict__ pool, unsigned long long pageBytes,
                                               int pageId, int count, int h, int kvHeads, int krow0, int quad,
                                               int vrow0, int vchunk, uint4* kx, uint4* vx) {
    constexpr int N = D / 32;
    constexpr int VCHUNKS = D / 8;
    constexpr int VROWS = PIKV_THREADS / VCHUNKS;
    const size_t regionU4 = (size_t) D * PIKV_P / 8;
    const uint4* page = reinterpret_cast<const uint4*>(pool + (unsigned long long) pageId * pageBytes);
    const uint4* kp = page + (size_t) h * regionU4;
    const uint4* vp = page + (size_t) kvHeads * regionU4 + (size_t) h * regionU4;
#pragma unroll
    for (int n = 0; n < N; n++) kx[n] = __ldg(kp + (krow0 + 32 * n) * 4 + quad);
#pragma unroll
    for (int n = 0; n < N; n++) {
        int t = vrow0 + VROWS * n;
        vx[n] = t < count ? __ldg(vp + t * VCHUNKS + vchunk) : make_uint4(0, 0, 0, 0);
    }
}

// One block = (split blockIdx.x, KV head blockIdx.y): the pages [split * pagesPerSplit, ...) of the list.
// Writes the split's partial per query head of the group: running max m, sum of exponentials l and the
// weighted V sum o, all relative to m (the same merge form as the CPU backend).
//
// Each thread issues all of a page's 16-byte K and V loads for its share before using any of them.
// K: a dim row of 32 tokens is 4 uint4; thread j takes quad j % 4 (tokens 4q..4q+3 and 4q+16..4q+19) of rows
// j / 4 + 32 n. V: a token row is D / 8 uint4; thread j takes column chunk j % (D / 8) (8 dims) of rows
// j / (D / 8) + (1024 / D) n.
template <int D, bool PIPE>
__device__ __forceinline__ void pikv_partial_impl(const unsigned char* __restrict__ pool, unsigned long long pageBytes,
                                                  const int* __restrict__ pageIds, const int* __restrict__ counts,
                                                  int numPages, int pagesPerSplit, const float* __restrict__ q,
                                                  int kvHeads, int group, float* __restrict__ outM,
                                                  float* __restrict__ outL, float* __restrict__ outO) {
    constexpr int N = D / 32;             // uint4 loads per thread for K, and for V
    constexpr int VCHUNKS = D / 8;        // uint4 per V token row
    constexpr int VROWS = PIKV_THREADS / VCHUNKS;  // V rows per sweep
    __shared__ float qs[PIKV_MAX_GROUP][D];
    __shared__ float red[4][PIKV_MAX_GROUP][PIKV_P];
    __shared__ float ps[PIKV_MAX_GROUP][PIKV_P];
    __shared__ float alphas[PIKV_MAX_GROUP];
    __shared__ float ored[4][PIKV_MAX_GROUP][D];

    const int split = blockIdx.x;
    const int h = blockIdx.y;
    const int j = threadIdx.x;
    const int lane = j & 31;
    const int warp = j >> 5;
    const int qHeads = kvHeads * group;

    for (int x = j; x < group * D; x += PIKV_THREADS) {
        qs[x / D][x % D] = q[(h * group + x / D) * D + x % D];
    }

    const int quad = j & 3;
    const int krow0 = j >> 2;
    const int vchunk = j % VCHUNKS;
    const int vrow0 = j / VCHUNKS;
    // Element offset of this thread's 8 V dims inside a row: block (vchunk / 4), words 4 (vchunk % 4) ...
    const int vdim = (vchunk >> 2) * 32 + (vchunk & 3) * 4;   // low dims vdim..vdim+3, high vdim+16..vdim+19

    float m = -INFINITY;
    float l = 0.f;
    float o[PIKV_MAX_GROUP][8];
#pragma unroll
    for (int g = 0; g < PIKV_MAX_GROUP; g++)
#pragma unroll
        for (int x = 0; x < 8; x++) o[g][x] = 0.f;

    const int first = split * pagesPerSplit;
    const int last = min(numPages, first + pagesPerSplit);
    __syncthreads();

    // Software pipeline: the loads of page pi + 1 are in flight while page pi is reduced and accumulated.
    uint4 kx[N];
    uint4 vx[N];
    int count = 0;
    if (PIPE && first < last) {
        count = counts[first];
        pikv_load_page<D>(pool, pageBytes, pageIds[first], count, h, kvHeads, krow0, quad, vrow0, vchunk, kx, vx);
    }
    for (int pi = first; pi < last; pi++) {
        uint4 nkx[N];
        uint4 nvx[N];
        int nextCount = 0;
        if (!PIPE) {
            count = counts[pi];
            pikv_load_page<D>(pool, pageBytes, pageIds[pi], count, h, kvHeads, krow0, quad, vrow0, vchunk, kx, vx);
        } else if (pi + 1 < last) {
            nextCount = counts[pi + 1];
            pikv_load_page<D>(pool, pageBytes, pageIds[pi + 1], nextCount, h, kvHeads, krow0, quad, vrow0, vchunk,
                              nkx, nvx);
        }

        float acc[PIKV_MAX_GROUP][8];
#pragma unroll
        for (int g = 0; g < PIKV_MAX_GROUP; g++)
#pragma unroll
            for (int x = 0; x < 8; x++) acc[g][x] = 0.f;
#pragma unroll
        for (int n = 0; n < N; n++) {
            float lo[4], hi[4];
            pikv_widen4(kx[n], lo, hi);
            const int row = krow0 + 32 * n;
#pragma unroll
            for (int g = 0; g < PIKV_MAX_GROUP; g++) {
                if (g < group) {
                    float qv = qs[g][row];
#pragma unroll
                    for (int x = 0; x < 4; x++) {
                        acc[g][x] = fmaf(qv, lo[x], acc[g][x]);
                        acc[g][4 + x] = fmaf(qv, hi[x], acc[g][4 + x]);
                    }
                }
            }
        }
        // Sum over the threads of this warp that hold the same token quad (lanes equal mod 4).
#pragma unroll
        for (int g = 0; g < PIKV_MAX_GROUP; g++) {
            if (g < group) {
#pragma unroll
                for (int x = 0; x < 8; x++) {
                    float v = acc[g][x];
                    v += __shfl_xor_sync(0xffffffffu, v, 4);
                    v += __shfl_xor_sync(0xffffffffu, v, 8);
                    v += __shfl_xor_sync(0xffffffffu, v, 16);
                    acc[g][x] = v;
                }
            }
        }
        if (lane < 4) {
#pragma unroll
            for (int g = 0; g < PIKV_MAX_GROUP; g++) {
                if (g < group) {
#pragma unroll
                    for (int x = 0; x < 4; x++) {
                        red[warp][g][4 * quad + x] = acc[g][x];
                        red[warp][g][4 * quad + 16 + x] = acc[g][4 + x];
                    }
                }
            }
        }
        __syncthreads();
        if (warp < group) {
            const int g = warp;
            float s = red[0][g][lane] + red[1][g][lane] + red[2][g][lane] + red[3][g][lane];
            s = lane < count ? s : -INFINITY;
            float pageMax = pikv_warp_max(s);
            float next = fmaxf(m, pageMax);
            float alpha = 1.f;
            float p = 0.f;
            if (next != -INFINITY) {
                alpha = __expf(m - next);
                p = lane < count ? __expf(s - next) : 0.f;
            }
            l = l * alpha + pikv_warp_sum(p);
            m = next;
            ps[g][lane] = p;
            if (lane == 0) alphas[g] = alpha;
        }
        __syncthreads();
#pragma unroll
        for (int g = 0; g < PIKV_MAX_GROUP; g++) {
            if (g < group) {
                float a = alphas[g];
#pragma unroll
                for (int x = 0; x < 8; x++) o[g][x] *= a;
            }
        }
#pragma unroll
        for (int n = 0; n < N; n++) {
            const int t = vrow0 + VROWS * n;
            if (t < count) {
                float lo[4], hi[4];
                pikv_widen4(vx[n], lo, hi);
#pragma unroll
                for (int g = 0; g < PIKV_MAX_GROUP; g++) {
                    if (g < group) {
                        float p = ps[g][t];
#pragma unroll
                        for (int x = 0; x < 4; x++) {
                            o[g][x] = fmaf(p, lo[x], o[g][x]);
                            o[g][4 + x] = fmaf(p, hi[x], o[g][4 + x]);
                        }
                    }
                }
            }
        }
        __syncthreads();
        if (PIPE) {
#pragma unroll
            for (int n = 0; n < N; n++) {
                kx[n] = nkx[n];
                vx[n] = nvx[n];
            }
            count = nextCount;
        }
    }

    // Sum the V partials of the threads that hold the same dims: lanes equal mod VCHUNKS, then the 4 warps.
#pragma unroll
    for (int g = 0; g < PIKV_MAX_GROUP; g++) {
        if (g < group) {
#pragma unroll
            for (int x = 0; x < 8; x++) {
                float v = o[g][x];
                for (int mask = VCHUNKS; mask < 32; mask <<= 1) v += __shfl_xor_sync(0xffffffffu, v, mask);
                o[g][x] = v;
            }
        }
    }
    if (lane < VCHUNKS && lane == vchunk) {
#pragma unroll
        for (int g = 0; g < PIKV_MAX_GROUP; g++) {
            if (g < group) {
#pragma unroll
                for (int x = 0; x < 4; x++) {
                    ored[warp][g][vdim + x] = o[g][x];
                    ored[warp][g][vdim + 16 + x] = o[g][4 + x];
                }
            }
        }
    }
    __syncthreads();
    for (int x = j; x < group * D; x += PIKV_THREADS) {
        const int g = x / D;
        const int d = x % D;
        outO[((size_t) split * qHeads + h * group + g) * D + d] = ored[0][g][d] + ored[1][g][d] + ored[2][g][d] + ored[3][g][d];
    }
    if (warp < group && lane == 0) {
        outM[split * qHeads + h * group + warp] = m;
        outL[split * qHeads + h * group + warp] = l;
    }
}

#define PIKV_PARTIAL(D, PIPE, NAME)                                                                             \
    extern "C" __global__ void __launch_bounds__(PIKV_THREADS) NAME(                                            \
        const unsigned char* __restrict__ pool, unsigned long long pageBytes, const int* __restrict__ pageIds, \
        const int* __restrict__ counts, int numPages, int pagesPerSplit, const float* __restrict__ q,          \
        int kvHeads, int group, float* __restrict__ outM, float* __restrict__ outL, float* __restrict__ outO) { \
        pikv_partial_impl<D, PIPE>(pool, pageBytes, pageIds, counts, numPages, pagesPerSplit, q, kvHeads, group, \
                             outM, outL, outO);                                                                 \
    }

// Pipelined (next page's loads in flight during this page) and plain variants per head dim.
PIKV_PARTIAL(32, true, pikv_decode_partial_d32)
PIKV_PARTIAL(64, true, pikv_decode_partial_d64)
PIKV_PARTIAL(128, true, pikv_decode_partial_d128)
PIKV_PARTIAL(256, true, pikv_decode_partial_d256)
PIKV_PARTIAL(32, false, pikv_decode_partial_d32_plain)
PIKV_PARTIAL(64, false, pikv_decode_partial_d64_plain)
PIKV_PARTIAL(128, false, pikv_decode_partial_d128_plain)
PIKV_PARTIAL(256, false, pikv_decode_partial_d256_plain)

// Merges the splits of pikv_decode_partial_d* with the log-sum-exp rule. One block per query head; the
// split weights e^(m_s - M) are computed once into shared memory (splits <= PIKV_MAX_SPLITS, host-checked).
// Writes m, l and the weighted V sum relative to m (mergeable with partials from other shards).
#define PIKV_MAX_SPLITS 4096
extern "C" __global__ void pikv_decode_merge(const float* __restrict__ inM, const float* __restrict__ inL,
                                             const float* __restrict__ inO, int splits, int qHeads, int headDim,
                                             float* __restrict__ outM, float* __restrict__ outL,
                                             float* __restrict__ outO) {
    __shared__ float wts[PIKV_MAX_SPLITS];
    __shared__ float warpVals[32];
    const int qh = blockIdx.x;
    const int tid = threadIdx.x;
    const int lane = tid & 31;
    const int warps = (blockDim.x + 31) >> 5;

    float mx = -INFINITY;
    for (int s = tid; s < splits; s += blockDim.x) mx = fmaxf(mx, inM[s * qHeads + qh]);
    mx = pikv_warp_max(mx);
    if (lane == 0) warpVals[tid >> 5] = mx;
    __syncthreads();
    float m = -INFINITY;
    for (int w = 0; w < warps; w++) m = fmaxf(m, warpVals[w]);
    __syncthreads();

    float lsum = 0.f;
    for (int s = tid; s < splits; s += blockDim.x) {
        float ms = inM[s * qHeads + qh];
        float w = ms == -INFINITY ? 0.f : __expf(ms - m);
        wts[s] = w;
        lsum += inL[s * qHeads + qh] * w;
    }
    lsum = pikv_warp_sum(lsum);
    if (lane == 0) warpVals[tid >> 5] = lsum;
    __syncthreads();
    float l = 0.f;
    for (int w = 0; w < warps; w++) l += warpVals[w];

    for (int d = tid; d < headDim; d += blockDim.x) {
        float o = 0.f;
#pragma unroll 8
        for (int s = 0; s < splits; s++) o = fmaf(inO[((size_t) s * qHeads + qh) * headDim + d], wts[s], o);
        outO[(size_t) qh * headDim + d] = o;
    }
    if (tid == 0) {
        outM[qh] = m;
        outL[qh] = l;
    }
}

// Writes one token's K and V (fp32, [kvHeads][headDim] each, K then V) into slot `slot` of page `pageId`,
// rounding to fp16 and applying the block swizzle. One thread per (head, dim).
extern "C" __global__ void pikv_append(unsigned char* __restrict__ pool, unsigned long long pageBytes, int pageId, int slot,
                            const float* __restrict__ kv, int kvHeads, int headDim, int pageTokens) {
    const int x = blockIdx.x * blockDim.x + threadIdx.x;
    const int width = kvHeads * headDim;
    if (x >= width) return;
    const int h = x / headDim;
    const int i = x % headDim;
    __half* page = reinterpret_cast<__half*>(pool + (unsigned long long) pageId * pageBytes);
    const int ke = (h * headDim + i) * pageTokens + slot;
    const int ve = width * pageTokens + (h * pageTokens + slot) * headDim + i;
    page[(ke & ~31) | ((ke & 15) << 1) | ((ke >> 4) & 1)] = __float2half_rn(kv[x]);
    page[(ve & ~31) | ((ve & 15) << 1) | ((ve >> 4) & 1)] = __float2half_rn(kv[width + x]);
}

