/* CPU kernels for a decode step, built on first use by cotbench/backends/hf/cpu_kernels.py (plain C, no
 * torch headers): decode attention over a slot cache (optionally fused with the rotary embedding and the
 * cache write), a valve layer's per-row-scaled LoRA up-projection, residual add + RMSNorm, greedy argmax.
 * Each exists for bf16 (suffix _bf16) and fp32 (_f32): cpu_kernels_typed.h holds them once, included below
 * for each type.
 *
 * Decode attention: one query token per row, each row read only up to its own length. Prefill attention runs
 * the same loop with each prompt token as a query row of its own, so no result depends on padding or batch
 * mates (and none on the thread count: one thread computes a query row's head group whole).
 *
 * Why: PyTorch's CPU SDPA kernel tiles for long queries; with one query token per row it reads the cache at
 * about 7 GB/s and reads every row to the widest row's length. This loop reads each key and value row once,
 * for all the query heads that share it (GQA), and stops at the row's own length.
 *
 * Layout (element strides): query and out (rows, heads, dim) contiguous; key and value (slots, kv_heads,
 * capacity, dim) with dim contiguous. Arithmetic in fp32, softmax with the row maximum subtracted.
 *
 * Vector code: bf16 attention has an AVX512-BF16 path written by hand (below); everything else is plain C
 * that the compiler vectorizes for the CPU it builds on (-march=native: AVX2/FMA on most x86 machines,
 * AVX-512 where present, NEON on Arm). */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DIM 256
#define MAX_GROUP 16
#define PREFETCH_BYTES 8192  /* how far ahead attention reads the keys (measured best of 4-32 KB) */

static inline float bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline uint16_t f32_to_bf16(float f) {  /* round to nearest even, as torch does */
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* NaN stays NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static inline int f32_is_nan(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return (u & 0x7fffffffu) > 0x7f800000u;
}

static inline int bf16_is_nan(uint16_t h) { return (h & 0x7fffu) > 0x7f80u; }

/* A hand-written vector path for some bf16 attention shapes (defined below); 0 when it declines. */
struct job_bf16;
static int attend_dispatch(const struct job_bf16 *j, int64_t pair, const uint16_t *query, float *scores);

/* bf16: stored as uint16_t bits, rounded to nearest even at every store, as torch rounds. */
#define ELEM uint16_t
#define TYPED(n) n##_bf16
#define LOAD(x) bf16_to_f32(x)
#define STORE(f) f32_to_bf16(f)
#define ROUND(f) bf16_to_f32(f32_to_bf16(f))
#define IS_NAN(x) bf16_is_nan(x)
#define FAST_ATTEND(job, pair, query, scores) attend_dispatch(job, pair, query, scores)
#include "cpu_kernels_typed.h"
#undef ELEM
#undef TYPED
#undef LOAD
#undef STORE
#undef ROUND
#undef IS_NAN
#undef FAST_ATTEND

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512BF16__)
/* AVX512-BF16 CPUs (Zen 4, Sapphire Rapids and later) at head sizes 64 and 128, for up to 8 query heads per
 * key/value head: the same arithmetic as attend() in vector registers. Scores come from bf16 dot-product
 * instructions (each bf16 product exact, sums in fp32, the scale applied after), 16 keys at a time;
 * weighted values in fp32 FMAs, up to 256 / dim query heads per pass over the values. Nothing past a row's
 * length is read: the last block's loads are masked. Measured on decode shapes: benchmarks/decode_step.py. */
#include <immintrin.h>
#define HAVE_FAST_PATH 1

/* Lane i of the result holds the sum of a[i]'s 16 lanes: a transpose-and-add tree, ~3 instructions a
 * vector where one horizontal reduction each would take ~8. */
static inline __attribute__((always_inline)) __m512 sums16(const __m512 a[16]) {
    __m512 x[8], y[4], z[2];
    for (int i = 0; i < 8; i++)
        x[i] = _mm512_add_ps(_mm512_unpacklo_ps(a[2 * i], a[2 * i + 1]), _mm512_unpackhi_ps(a[2 * i], a[2 * i + 1]));
    for (int i = 0; i < 4; i++) {
        const __m512d lo = _mm512_unpacklo_pd(_mm512_castps_pd(x[2 * i]), _mm512_castps_pd(x[2 * i + 1]));
        const __m512d hi = _mm512_unpackhi_pd(_mm512_castps_pd(x[2 * i]), _mm512_castps_pd(x[2 * i + 1]));
        y[i] = _mm512_add_ps(_mm512_castpd_ps(lo), _mm512_castpd_ps(hi));
    }
    for (int i = 0; i < 2; i++)
        z[i] = _mm512_add_ps(_mm512_shuffle_f32x4(y[2 * i], y[2 * i + 1], 0x88),
                             _mm512_shuffle_f32x4(y[2 * i], y[2 * i + 1], 0xDD));
    return _mm512_add_ps(_mm512_shuffle_f32x4(z[0], z[1], 0x88), _mm512_shuffle_f32x4(z[0], z[1], 0xDD));
}

static inline __attribute__((always_inline)) __m512 load_bf16x16(const uint16_t *src) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)src)), 16));
}

static inline __attribute__((always_inline)) void attend_fast(const struct job_bf16 *j, int64_t pair, const uint16_t *query,
                                                              float *scores, const int DIM, const int GROUP) {
    const int CHUNKS = DIM / 32, LANES = DIM / 16, PER_PASS = 256 / DIM;
    const int64_t row = pair / j->kv_heads, kv = pair % j->kv_heads;
    const int64_t length = j->lengths[row] > 0 ? j->lengths[row] : 1;
    const uint16_t *k = j->key + (row / j->tokens) * j->row_stride + kv * j->head_stride;
    const uint16_t *v = j->value + (row / j->tokens) * j->row_stride + kv * j->head_stride;
    __m512bh q[8][4];
    float best[8], total[8];
    for (int g = 0; g < GROUP; g++)
        for (int c = 0; c < CHUNKS; c++) q[g][c] = (__m512bh)_mm512_loadu_si512(query + g * DIM + 32 * c);
    for (int g = 0; g < GROUP; g++) {  /* scores, one query head at a time: its q stays in registers */
        __m512 top = _mm512_set1_ps(-FLT_MAX);
        for (int64_t t0 = 0; t0 < length; t0 += 16) {
            const int64_t n = length - t0 < 16 ? length - t0 : 16;
            if (g == 0) {  /* keys a few blocks ahead, from memory: the next heads find them in L1/L2 */
                const int64_t ahead = t0 + PREFETCH_BYTES / (DIM * 2);
                for (int64_t i = ahead; i < ahead + 16 && i < length; i++)
                    for (int c = 0; c < DIM; c += 32) _mm_prefetch((const char *)(k + i * DIM + c), _MM_HINT_T0);
            }
            if (g == GROUP - 1)  /* this block's values into L2 while the last head scores it */
                for (int64_t i = t0; i < t0 + n; i++)
                    for (int c = 0; c < DIM; c += 32) _mm_prefetch((const char *)(v + i * DIM + c), _MM_HINT_T1);
            __m512 acc[16];
            for (int i = 0; i < 16; i++) {
                const __mmask32 in = i < n ? ~(__mmask32)0 : 0;  /* keys past the length: not loaded */
                acc[i] = _mm512_setzero_ps();
                for (int c = 0; c < CHUNKS; c++)
                    acc[i] = _mm512_dpbf16_ps(acc[i], q[g][c],
                                              (__m512bh)_mm512_maskz_loadu_epi16(in, k + (t0 + i) * DIM + 32 * c));
            }
            const __mmask16 keep = (__mmask16)(n == 16 ? 0xFFFFu : (1u << n) - 1);
            const __m512 s = _mm512_mul_ps(sums16(acc), _mm512_set1_ps(j->scale));
            _mm512_mask_storeu_ps(scores + g * length + t0, keep, s);
            top = _mm512_mask_max_ps(top, keep, top, s);
        }
        best[g] = _mm512_reduce_max_ps(top);
    }
    for (int g = 0; g < GROUP; g++) {  /* exp: the compiler vectorizes this loop (libmvec under -ffast-math) */
        float sum = 0.0f, *sg = scores + g * length;
        for (int64_t t = 0; t < length; t++) {
            const float p = expf(sg[t] - best[g]);
            sg[t] = p;
            sum += p;
        }
        total[g] = sum;
    }
    for (int g0 = 0; g0 < GROUP; g0 += PER_PASS) {  /* weighted values: each value row converted once a pass */
        const int gn = GROUP - g0 < PER_PASS ? GROUP - g0 : PER_PASS;
        __m512 acc[4][8];
        for (int g = 0; g < PER_PASS; g++)
            for (int l = 0; l < LANES; l++) acc[g][l] = _mm512_setzero_ps();
        for (int64_t t = 0; t < length; t++) {
            __m512 vf[8];
            for (int l = 0; l < LANES; l++) vf[l] = load_bf16x16(v + t * DIM + 16 * l);
            for (int g = 0; g < PER_PASS; g++) {
                if (g >= gn) break;
                const __m512 p = _mm512_set1_ps(scores[(g0 + g) * length + t]);
                for (int l = 0; l < LANES; l++) acc[g][l] = _mm512_fmadd_ps(p, vf[l], acc[g][l]);
            }
        }
        for (int g = 0; g < gn; g++) {
            uint16_t *dst = j->out + (row * j->heads + kv * GROUP + g0 + g) * DIM;
            const __m512 inv = _mm512_set1_ps(1.0f / total[g0 + g]);
            for (int l = 0; l < LANES; l++)
                _mm256_storeu_si256((__m256i *)(dst + 16 * l),
                                    (__m256i)_mm512_cvtneps_pbh(_mm512_mul_ps(acc[g][l], inv)));
        }
    }
}

/* attend_fast with the head size and group as constants, so its loops unroll into registers; 0 if none fits. */
static int attend_dispatch(const struct job_bf16 *j, int64_t pair, const uint16_t *query, float *scores) {
    const int64_t group = j->heads / j->kv_heads;
#define CASE(D, G) if (j->dim == D && group == G) { attend_fast(j, pair, query, scores, D, G); return 1; }
    CASE(64, 1) CASE(64, 2) CASE(64, 3) CASE(64, 4) CASE(64, 5) CASE(64, 6) CASE(64, 7) CASE(64, 8)
    CASE(128, 1) CASE(128, 2) CASE(128, 3) CASE(128, 4) CASE(128, 5) CASE(128, 6) CASE(128, 7) CASE(128, 8)
#undef CASE
    return 0;
}
#else
#define HAVE_FAST_PATH 0
static int attend_dispatch(const struct job_bf16 *j, int64_t pair, const uint16_t *query, float *scores) {
    (void)j; (void)pair; (void)query; (void)scores;
    return 0;
}
#endif

/* fp32: no rounding anywhere; the compiler's vector code for this CPU. */
#define ELEM float
#define TYPED(n) n##_f32
#define LOAD(x) (x)
#define STORE(f) (f)
#define ROUND(f) (f)
#define IS_NAN(x) f32_is_nan(x)
#define FAST_ATTEND(job, pair, query, scores) 0
#include "cpu_kernels_typed.h"

/* The argument types of every function above, in the notation cpu_kernels.py checks at load: p pointer,
 * q int64, f float, i int. Edit it with any signature; a mismatch is refused rather than called. */
const char *cotbench_abi(void) {
    return "decode_attention_bf16:pppppqqqqqqfi;"
           "prefill_attention_bf16:pppppqqqqqqqfi;"
           "rope_decode_attention_bf16:pqpqpqppppppqqqqqqfi;"
           "lora_up_bf16:pqpqpqppqqqi;"
           "add_rms_norm_bf16:pppppqqfi;"
           "argmax_bf16:ppqqi;"
           "decode_attention_f32:pppppqqqqqqfi;"
           "prefill_attention_f32:pppppqqqqqqqfi;"
           "rope_decode_attention_f32:pqpqpqppppppqqqqqqfi;"
           "lora_up_f32:pqpqpqppqqqi;"
           "add_rms_norm_f32:pppppqqfi;"
           "argmax_f32:ppqqi";
}
