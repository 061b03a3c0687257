/* bf16 kernels for CPUs, built on first use by cotbench/backends/hf/cpu_kernels.py (plain C, no torch headers):
 * decode attention over a slot cache, and a valve layer's per-row-scaled LoRA up-projection (at the end).
 *
 * Decode attention: one query token per row, each row read only up to its own length.
 *
 * Why: PyTorch's CPU SDPA kernel tiles for long queries; with one query token per row it reads the cache at
 * about 7 GB/s and reads every row to the widest row's length. This loop reads each key and value row once,
 * for all the query heads that share it (GQA), and stops at the row's own length.
 *
 * Layout (element strides): query and out (rows, heads, dim) contiguous; key and value (slots, kv_heads,
 * capacity, dim) with dim contiguous. Arithmetic in fp32, softmax with the row maximum subtracted. */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DIM 256
#define MAX_GROUP 16

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

typedef struct {
    const uint16_t *query, *key, *value;
    uint16_t *out;
    const int32_t *lengths;
    int64_t heads, kv_heads, dim, row_stride, head_stride;
    float scale;
} job_t;

static void attend(const job_t *j, int64_t pair, const uint16_t *query, float *scores) {
    const int64_t row = pair / j->kv_heads, kv = pair % j->kv_heads, group = j->heads / j->kv_heads;
    const int64_t dim = j->dim, length = j->lengths[row] > 0 ? j->lengths[row] : 1;
    const uint16_t *k = j->key + row * j->row_stride + kv * j->head_stride;
    const uint16_t *v = j->value + row * j->row_stride + kv * j->head_stride;
    float q[MAX_GROUP][MAX_DIM], acc[MAX_GROUP][MAX_DIM], best[MAX_GROUP], total[MAX_GROUP];
    for (int64_t g = 0; g < group; g++) {
        const uint16_t *src = query + g * dim;
        for (int64_t d = 0; d < dim; d++) q[g][d] = bf16_to_f32(src[d]) * j->scale;
        best[g] = -FLT_MAX;  /* not -INFINITY: -ffast-math assumes no infinities */
    }
    for (int64_t t = 0; t < length; t++) {  /* scores: each key row read once for the whole group */
        float kf[MAX_DIM];
        const uint16_t *kt = k + t * dim;
        for (int64_t d = 0; d < dim; d++) kf[d] = bf16_to_f32(kt[d]);
        for (int64_t g = 0; g < group; g++) {
            float s = 0.0f;
            for (int64_t d = 0; d < dim; d++) s += q[g][d] * kf[d];
            scores[g * length + t] = s;
            if (s > best[g]) best[g] = s;
        }
    }
    for (int64_t g = 0; g < group; g++) {
        float sum = 0.0f;
        for (int64_t t = 0; t < length; t++) {
            float p = expf(scores[g * length + t] - best[g]);
            scores[g * length + t] = p;
            sum += p;
        }
        total[g] = sum;
        memset(acc[g], 0, sizeof(float) * dim);
    }
    for (int64_t t = 0; t < length; t++) {  /* weighted values: each value row read once */
        float vf[MAX_DIM];
        const uint16_t *vt = v + t * dim;
        for (int64_t d = 0; d < dim; d++) vf[d] = bf16_to_f32(vt[d]);
        for (int64_t g = 0; g < group; g++) {
            const float p = scores[g * length + t];
            for (int64_t d = 0; d < dim; d++) acc[g][d] += p * vf[d];
        }
    }
    for (int64_t g = 0; g < group; g++) {
        uint16_t *dst = j->out + (row * j->heads + kv * group + g) * dim;
        const float inv = 1.0f / total[g];
        for (int64_t d = 0; d < dim; d++) dst[d] = f32_to_bf16(acc[g][d] * inv);
    }
}

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

static inline __attribute__((always_inline)) void attend_fast(const job_t *j, int64_t pair, const uint16_t *query,
                                                              float *scores, const int DIM, const int GROUP) {
    const int CHUNKS = DIM / 32, LANES = DIM / 16, PER_PASS = 256 / DIM;
    const int64_t row = pair / j->kv_heads, kv = pair % j->kv_heads;
    const int64_t length = j->lengths[row] > 0 ? j->lengths[row] : 1;
    const uint16_t *k = j->key + row * j->row_stride + kv * j->head_stride;
    const uint16_t *v = j->value + row * j->row_stride + kv * j->head_stride;
    __m512bh q[8][4];
    float best[8], total[8];
    for (int g = 0; g < GROUP; g++)
        for (int c = 0; c < CHUNKS; c++) q[g][c] = (__m512bh)_mm512_loadu_si512(query + g * DIM + 32 * c);
    for (int g = 0; g < GROUP; g++) {  /* scores, one query head at a time: its q stays in registers */
        __m512 top = _mm512_set1_ps(-FLT_MAX);
        for (int64_t t0 = 0; t0 < length; t0 += 16) {
            const int64_t n = length - t0 < 16 ? length - t0 : 16;
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
static int attend_dispatch(const job_t *j, int64_t pair, const uint16_t *query, float *scores) {
    const int64_t group = j->heads / j->kv_heads;
#define CASE(D, G) if (j->dim == D && group == G) { attend_fast(j, pair, query, scores, D, G); return 1; }
    CASE(64, 1) CASE(64, 2) CASE(64, 3) CASE(64, 4) CASE(64, 5) CASE(64, 6) CASE(64, 7) CASE(64, 8)
    CASE(128, 1) CASE(128, 2) CASE(128, 3) CASE(128, 4) CASE(128, 5) CASE(128, 6) CASE(128, 7) CASE(128, 8)
#undef CASE
    return 0;
}
#else
#define HAVE_FAST_PATH 0
static int attend_dispatch(const job_t *j, int64_t pair, const uint16_t *query, float *scores) {
    (void)j; (void)pair; (void)query; (void)scores;
    return 0;
}
#endif

/* The new token of a decode step, for the fused entry point: its query, key and value before the rotary
 * embedding, (rows, heads or kv_heads, dim) at the given row strides, and each row's cos/sin (rows, dim). */
typedef struct {
    const uint16_t *query, *key, *value, *cos, *sin;
    int64_t query_stride, key_stride, value_stride;
    uint16_t *key_cache, *value_cache;  /* the slot cache the job reads, written at each row's last position */
} fresh_t;

/* x·cos + rotate_half(x)·sin, as transformers' apply_rotary_pos_emb, in fp32 and rounded once. */
static void rotate(const uint16_t *x, const uint16_t *cos, const uint16_t *sin, uint16_t *out, int64_t dim) {
    const int64_t half = dim / 2;
    for (int64_t d = 0; d < half; d++)
        out[d] = f32_to_bf16(bf16_to_f32(x[d]) * bf16_to_f32(cos[d]) - bf16_to_f32(x[d + half]) * bf16_to_f32(sin[d]));
    for (int64_t d = half; d < dim; d++)
        out[d] = f32_to_bf16(bf16_to_f32(x[d]) * bf16_to_f32(cos[d]) + bf16_to_f32(x[d - half]) * bf16_to_f32(sin[d]));
}

/* Rotate one (row, kv head)'s new key into the cache at the row's last position (its value beside it), and
 * its group's queries into qbuf; returns qbuf. An idle row (length 0) writes nothing. */
static const uint16_t *place_fresh(const job_t *j, const fresh_t *f, int64_t pair, uint16_t *qbuf) {
    const int64_t row = pair / j->kv_heads, kv = pair % j->kv_heads, group = j->heads / j->kv_heads, dim = j->dim;
    const uint16_t *cos = f->cos + row * dim, *sin = f->sin + row * dim;
    if (j->lengths[row] > 0) {
        const int64_t at = row * j->row_stride + kv * j->head_stride + (int64_t)(j->lengths[row] - 1) * dim;
        rotate(f->key + row * f->key_stride + kv * dim, cos, sin, f->key_cache + at, dim);
        memcpy(f->value_cache + at, f->value + row * f->value_stride + kv * dim, sizeof(uint16_t) * (size_t)dim);
    }
    for (int64_t g = 0; g < group; g++)
        rotate(f->query + row * f->query_stride + (kv * group + g) * dim, cos, sin, qbuf + g * dim, dim);
    return qbuf;
}

/* Both entry points: every (row, kv head) pair in parallel; 0 on success, 1 when a shape is out of range or
 * memory ran out (the caller falls back; a fused call may then have written some new keys, which the
 * fallback writes again, the same). */
static int run(const job_t *job, const fresh_t *fresh, int64_t rows, int threads) {
    if (job->dim > MAX_DIM || job->kv_heads <= 0 || job->heads % job->kv_heads || job->heads / job->kv_heads > MAX_GROUP)
        return 1;
    const int64_t group = job->heads / job->kv_heads;
    int64_t longest = 1;
    for (int64_t r = 0; r < rows; r++)
        if (job->lengths[r] > longest) longest = job->lengths[r];
    int failed = 0;
    /* OpenMP, not threads of our own: this library links the libgomp torch has already loaded, so it runs
     * on torch's pool. A second pool would fight torch's spinning workers for the same cores. */
#pragma omp parallel num_threads(threads > 0 ? threads : 1)
    {
        float *scores = malloc(sizeof(float) * (size_t)(longest * group));
        if (scores == NULL) {
#pragma omp atomic write
            failed = 1;
        }
        uint16_t qbuf[MAX_GROUP * MAX_DIM];
#pragma omp for schedule(dynamic, 4)
        for (int64_t pair = 0; pair < rows * job->kv_heads; pair++) {  /* rows differ in length: dynamic */
            if (scores == NULL) continue;
            const int64_t row = pair / job->kv_heads, kv = pair % job->kv_heads;
            const uint16_t *query = fresh ? place_fresh(job, fresh, pair, qbuf)
                                          : job->query + (row * job->heads + kv * group) * job->dim;
            if (!attend_dispatch(job, pair, query, scores)) attend(job, pair, query, scores);
        }
        free(scores);
    }
    return failed;
}

/* Decode attention over keys and values already in the cache; query and out (rows, heads, dim) contiguous. */
int cotbench_decode_attention_bf16(const uint16_t *query, const uint16_t *key, const uint16_t *value,
                                   uint16_t *out, const int32_t *lengths, int64_t rows, int64_t heads,
                                   int64_t kv_heads, int64_t dim, int64_t row_stride, int64_t head_stride,
                                   float scale, int threads) {
    const job_t job = {query, key, value, out, lengths, heads, kv_heads, dim, row_stride, head_stride, scale};
    return run(&job, NULL, rows, threads);
}

/* The same, fused with what comes before it in a decoder layer: the rotary embedding of the new token's
 * query and key, and the key and value written into the cache. Saves ~20 small torch ops a layer. */
int cotbench_rope_decode_attention_bf16(const uint16_t *query, int64_t query_stride, const uint16_t *key_new,
                                        int64_t key_stride, const uint16_t *value_new, int64_t value_stride,
                                        const uint16_t *cos, const uint16_t *sin, uint16_t *key, uint16_t *value,
                                        uint16_t *out, const int32_t *lengths, int64_t rows, int64_t heads,
                                        int64_t kv_heads, int64_t dim, int64_t row_stride, int64_t head_stride,
                                        float scale, int threads) {
    const job_t job = {NULL, key, value, out, lengths, heads, kv_heads, dim, row_stride, head_stride, scale};
    const fresh_t fresh = {query, key_new, value_new, cos, sin, query_stride, key_stride, value_stride, key, value};
    return run(&job, &fresh, rows, threads);
}

/* The LoRA up-projection of a valve layer with a per-row strength, fused with the add:
 *   out[m, :] = bf16(base[m, :] + scale[m / tokens] * low[m, :] @ up_t)
 * base (rows, n) bf16 at row stride base_stride (the base columns of the [W; A] GEMM's output, read in place),
 * low (rows, rank) bf16 at row stride low_stride (its rank-r columns), up_t (rank, n) fp32 (B transposed),
 * out (rows, n) bf16 contiguous. In fp32 throughout, rounded once. torch's addmm does the same work in
 * 50-90 µs a call at 128 rows, mostly fixed cost for a K of 4; this loop runs in a fraction of that. */
int cotbench_lora_up_bf16(const uint16_t *base, int64_t base_stride, const uint16_t *low, int64_t low_stride,
                          const float *scale, int64_t tokens, const float *up_t, uint16_t *out, int64_t rows,
                          int64_t n, int64_t rank, int threads) {
    if (rank > 64 || tokens <= 0) return 1;
#pragma omp parallel for num_threads(threads > 0 ? threads : 1) schedule(static)
    for (int64_t m = 0; m < rows; m++) {
        float coef[64], acc[512];
        const float s = scale[m / tokens];
        for (int64_t r = 0; r < rank; r++) coef[r] = s * bf16_to_f32(low[m * low_stride + r]);
        for (int64_t i0 = 0; i0 < n; i0 += 512) {  /* blocks of columns, so each loop below vectorizes */
            const int64_t width = n - i0 < 512 ? n - i0 : 512;
            const uint16_t *src = base + m * base_stride + i0;
            for (int64_t i = 0; i < width; i++) acc[i] = bf16_to_f32(src[i]);
            for (int64_t r = 0; r < rank; r++) {
                const float c = coef[r], *u = up_t + r * n + i0;
                for (int64_t i = 0; i < width; i++) acc[i] += c * u[i];
            }
            uint16_t *dst = out + m * n + i0;
            for (int64_t i = 0; i < width; i++) dst[i] = f32_to_bf16(acc[i]);
        }
    }
    return 0;
}

/* A decoder layer's residual add and RMSNorm in one pass, with transformers' roundings (LlamaRMSNorm):
 *   hidden = bf16(residual + delta)            (skipped when delta is NULL: hidden = residual)
 *   normed = bf16(weight * bf16(hidden * rsqrt(mean(hidden^2) + eps)))   (the mean in fp32)
 * All (rows, n) bf16 contiguous; hidden may be written over residual. */
int cotbench_add_rms_norm_bf16(const uint16_t *residual, const uint16_t *delta, uint16_t *hidden, uint16_t *normed,
                               const uint16_t *weight, int64_t rows, int64_t n, float eps, int threads) {
#pragma omp parallel for num_threads(threads > 0 ? threads : 1) schedule(static) if (rows * n > 32768)
    for (int64_t m = 0; m < rows; m++) {
        const uint16_t *r = residual + m * n, *d = delta ? delta + m * n : NULL;
        uint16_t *h = hidden + m * n, *y = normed + m * n;
        float squares = 0.0f;
        for (int64_t i = 0; i < n; i++) {
            const float v = bf16_to_f32(d ? f32_to_bf16(bf16_to_f32(r[i]) + bf16_to_f32(d[i])) : r[i]);
            h[i] = f32_to_bf16(v);
            squares += v * v;
        }
        const float inv = 1.0f / sqrtf(squares / (float)n + eps);
        for (int64_t i = 0; i < n; i++)
            y[i] = f32_to_bf16(bf16_to_f32(weight[i]) * bf16_to_f32(f32_to_bf16(bf16_to_f32(h[i]) * inv)));
    }
    return 0;
}

/* Greedy decoding's argmax over bf16 logits (rows, n) contiguous, as torch.argmax decides: the first
 * largest value, a NaN counting as larger than any number. Two passes a row (the maximum, vectorized; then
 * its first index), since -ffast-math leaves NaN tests to integer bit checks. */
static inline int bf16_is_nan(uint16_t h) { return (h & 0x7fffu) > 0x7f80u; }

int cotbench_argmax_bf16(const uint16_t *logits, int64_t *out, int64_t rows, int64_t n, int threads) {
#pragma omp parallel for num_threads(threads > 0 ? threads : 1) schedule(static)
    for (int64_t m = 0; m < rows; m++) {
        const uint16_t *x = logits + m * n;
        float top = -FLT_MAX;
        int nan = 0;
        for (int64_t i = 0; i < n; i++) {
            const float v = bf16_to_f32(x[i]);
            top = v > top ? v : top;
            nan |= bf16_is_nan(x[i]);
        }
        int64_t best = 0;
        if (nan)
            while (!bf16_is_nan(x[best])) best++;
        else
            while (best < n - 1 && bf16_to_f32(x[best]) != top) best++;
        out[m] = best;
    }
    return 0;
}

/* The argument types of every function above, in the notation cpu_kernels.py checks at load: p pointer,
 * q int64, f float, i int. Edit it with any signature; a mismatch is refused rather than called. */
const char *cotbench_abi(void) {
    return "decode_attention_bf16:pppppqqqqqqfi;"
           "rope_decode_attention_bf16:pqpqpqppppppqqqqqqfi;"
           "lora_up_bf16:pqpqpqppqqqi;"
           "add_rms_norm_bf16:pppppqqfi;"
           "argmax_bf16:ppqqi";
}
