/* Decode attention over a slot cache, bf16, for CPUs: one query token per row, each row read only up to
 * its own length. Built on first use by cotbench/backends/decode_kernel.py (plain C, no torch headers).
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

static void attend(const job_t *j, int64_t pair, float *scores) {
    const int64_t row = pair / j->kv_heads, kv = pair % j->kv_heads, group = j->heads / j->kv_heads;
    const int64_t dim = j->dim, length = j->lengths[row] > 0 ? j->lengths[row] : 1;
    const uint16_t *k = j->key + row * j->row_stride + kv * j->head_stride;
    const uint16_t *v = j->value + row * j->row_stride + kv * j->head_stride;
    float q[MAX_GROUP][MAX_DIM], acc[MAX_GROUP][MAX_DIM], best[MAX_GROUP], total[MAX_GROUP];
    for (int64_t g = 0; g < group; g++) {
        const uint16_t *src = j->query + (row * j->heads + kv * group + g) * dim;
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

/* Returns 0 on success; 1 when a shape is out of range or memory ran out (the caller falls back). */
int cotbench_decode_attention_bf16(const uint16_t *query, const uint16_t *key, const uint16_t *value,
                                   uint16_t *out, const int32_t *lengths, int64_t rows, int64_t heads,
                                   int64_t kv_heads, int64_t dim, int64_t row_stride, int64_t head_stride,
                                   float scale, int threads) {
    if (dim > MAX_DIM || kv_heads <= 0 || heads % kv_heads || heads / kv_heads > MAX_GROUP) return 1;
    const job_t job = {query, key, value, out, lengths, heads, kv_heads, dim, row_stride, head_stride, scale};
    int64_t longest = 1;
    for (int64_t r = 0; r < rows; r++)
        if (lengths[r] > longest) longest = lengths[r];
    int failed = 0;
    /* OpenMP, not threads of our own: this library links the libgomp torch has already loaded, so it runs
     * on torch's pool. A second pool would fight torch's spinning workers for the same cores. */
#pragma omp parallel num_threads(threads > 0 ? threads : 1)
    {
        float *scores = malloc(sizeof(float) * (size_t)(longest * (heads / kv_heads)));
        if (scores == NULL) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(dynamic, 4)
        for (int64_t pair = 0; pair < rows * kv_heads; pair++)  /* rows differ in length: dynamic */
            if (scores != NULL) attend(&job, pair, scores);
        free(scores);
    }
    return failed;
}
