/* The kernels of cpu_kernels.c for one storage type: cpu_kernels.c includes this file once for bf16 and once
 * for fp32, with these defined before each include:
 *   ELEM        the element type (uint16_t holding bf16 bits, or float)
 *   TYPED(n)    n with the type's suffix (n_bf16, n_f32): every name below that differs between the two
 *   LOAD(x)     an element as fp32;  STORE(f) fp32 to an element, rounded to nearest even (fp32: as is)
 *   ROUND(f)    f rounded as storing it would round it (fp32: f), for the steps where torch rounds
 *   IS_NAN(x)   on the element's bits: -ffast-math folds x != x away
 *   FAST_ATTEND(job, pair, query, scores)  a vector path for some shapes, returning 1, or 0 to decline
 * The arithmetic is fp32 in both; only loads, stores and roundings differ. In fp32 the loops are plain C
 * that the compiler vectorizes for this CPU (-march=native: AVX2/FMA, AVX-512, NEON). */

typedef struct TYPED(job) {
    const ELEM *query, *key, *value;
    ELEM *out;
    const int32_t *lengths;
    int64_t heads, kv_heads, dim, row_stride, head_stride;
    float scale;
    int64_t tokens;  /* query rows per cache row: 1 in decode; a prefill pass's width, each token a query row */
} TYPED(job_t);

/* One (query row, kv head): its group of query heads against the first `length` keys and values of its cache
 * row. A query's result depends on its own query, keys, values and length alone, never on the other rows, the
 * row count or the thread count: one thread runs the whole pair, every sum in an order fixed by the length. */
static void TYPED(attend)(const TYPED(job_t) *j, int64_t pair, const ELEM *query, float *scores) {
    const int64_t row = pair / j->kv_heads, kv = pair % j->kv_heads, group = j->heads / j->kv_heads;
    const int64_t dim = j->dim, length = j->lengths[row] > 0 ? j->lengths[row] : 1;
    const ELEM *k = j->key + (row / j->tokens) * j->row_stride + kv * j->head_stride;
    const ELEM *v = j->value + (row / j->tokens) * j->row_stride + kv * j->head_stride;
    const int64_t ahead = PREFETCH_BYTES / (dim * (int64_t)sizeof(ELEM));  /* keys */
    float q[MAX_GROUP][MAX_DIM], acc[MAX_GROUP][MAX_DIM], best[MAX_GROUP], total[MAX_GROUP];
    for (int64_t g = 0; g < group; g++) {
        const ELEM *src = query + g * dim;
        for (int64_t d = 0; d < dim; d++) q[g][d] = LOAD(src[d]) * j->scale;
        best[g] = -FLT_MAX;  /* not -INFINITY: -ffast-math assumes no infinities */
    }
    for (int64_t t = 0; t < length; t++) {  /* scores: each key row read once for the whole group */
        float kf[MAX_DIM];
        const ELEM *kt = k + t * dim;
        /* Memory is read ahead of use: the key PREFETCH_BYTES on, into L1, and this key's value into L2
         * for the pass below. A decode step's attention streams the whole cache (1.1 GB at 256 rows of
         * ~200 tokens), and the prefetchers alone kept it at half the read bandwidth. */
        for (int64_t b = 0; b < dim * (int64_t)sizeof(ELEM); b += 64) {
            if (t + ahead < length) __builtin_prefetch((const char *)(kt + ahead * dim) + b, 0, 3);
            __builtin_prefetch((const char *)(v + t * dim) + b, 0, 2);
        }
        for (int64_t d = 0; d < dim; d++) kf[d] = LOAD(kt[d]);
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
        const ELEM *vt = v + t * dim;
        for (int64_t d = 0; d < dim; d++) vf[d] = LOAD(vt[d]);
        for (int64_t g = 0; g < group; g++) {
            const float p = scores[g * length + t];
            for (int64_t d = 0; d < dim; d++) acc[g][d] += p * vf[d];
        }
    }
    for (int64_t g = 0; g < group; g++) {
        ELEM *dst = j->out + (row * j->heads + kv * group + g) * dim;
        const float inv = 1.0f / total[g];
        for (int64_t d = 0; d < dim; d++) dst[d] = STORE(acc[g][d] * inv);
    }
}

/* The new token of a decode step, for the fused entry point: its query, key and value before the rotary
 * embedding, (rows, heads or kv_heads, dim) at the given row strides, and each row's cos/sin (rows, dim). */
typedef struct {
    const ELEM *query, *key, *value, *cos, *sin;
    int64_t query_stride, key_stride, value_stride;
    ELEM *key_cache, *value_cache;  /* the slot cache the job reads, written at each row's last position */
} TYPED(fresh_t);

/* x·cos + rotate_half(x)·sin, as transformers' apply_rotary_pos_emb, in fp32 and rounded once. */
static void TYPED(rotate)(const ELEM *x, const ELEM *cos, const ELEM *sin, ELEM *out, int64_t dim) {
    const int64_t half = dim / 2;
    for (int64_t d = 0; d < half; d++)
        out[d] = STORE(LOAD(x[d]) * LOAD(cos[d]) - LOAD(x[d + half]) * LOAD(sin[d]));
    for (int64_t d = half; d < dim; d++)
        out[d] = STORE(LOAD(x[d]) * LOAD(cos[d]) + LOAD(x[d - half]) * LOAD(sin[d]));
}

/* Rotate one (row, kv head)'s new key into the cache at the row's last position (its value beside it), and
 * its group's queries into qbuf; returns qbuf. An idle row (length 0) writes nothing. */
static const ELEM *TYPED(place_fresh)(const TYPED(job_t) *j, const TYPED(fresh_t) *f, int64_t pair, ELEM *qbuf) {
    const int64_t row = pair / j->kv_heads, kv = pair % j->kv_heads, group = j->heads / j->kv_heads, dim = j->dim;
    const ELEM *cos = f->cos + row * dim, *sin = f->sin + row * dim;
    if (j->lengths[row] > 0) {
        const int64_t at = row * j->row_stride + kv * j->head_stride + (int64_t)(j->lengths[row] - 1) * dim;
        TYPED(rotate)(f->key + row * f->key_stride + kv * dim, cos, sin, f->key_cache + at, dim);
        memcpy(f->value_cache + at, f->value + row * f->value_stride + kv * dim, sizeof(ELEM) * (size_t)dim);
    }
    for (int64_t g = 0; g < group; g++)
        TYPED(rotate)(f->query + row * f->query_stride + (kv * group + g) * dim, cos, sin, qbuf + g * dim, dim);
    return qbuf;
}

/* Both attention entry points: every (row, kv head) pair in parallel; 0 on success, 1 when a shape is out of
 * range or memory ran out (the caller falls back; a fused call may then have written some new keys, which
 * the fallback writes again, the same). */
static int TYPED(run)(const TYPED(job_t) *job, const TYPED(fresh_t) *fresh, int64_t rows, int threads) {
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
        ELEM qbuf[MAX_GROUP * MAX_DIM];
#pragma omp for schedule(dynamic, 4)
        for (int64_t pair = 0; pair < rows * job->kv_heads; pair++) {  /* rows differ in length: dynamic */
            if (scores == NULL) continue;
            const int64_t row = pair / job->kv_heads, kv = pair % job->kv_heads;
            const ELEM *query = fresh ? TYPED(place_fresh)(job, fresh, pair, qbuf)
                                      : job->query + (row * job->heads + kv * group) * job->dim;
            if (!FAST_ATTEND(job, pair, query, scores)) TYPED(attend)(job, pair, query, scores);
        }
        free(scores);
    }
    return failed;
}

/* Decode attention over keys and values already in the cache; query and out (rows, heads, dim) contiguous. */
int TYPED(cotbench_decode_attention)(const ELEM *query, const ELEM *key, const ELEM *value, ELEM *out,
                                     const int32_t *lengths, int64_t rows, int64_t heads, int64_t kv_heads,
                                     int64_t dim, int64_t row_stride, int64_t head_stride, float scale, int threads) {
    const TYPED(job_t) job = {query, key, value, out, lengths, heads, kv_heads, dim, row_stride, head_stride, scale, 1};
    return TYPED(run)(&job, NULL, rows, threads);
}

/* Prefill attention with decode's arithmetic: each of a row's `tokens` query tokens is a query row of its own
 * against its cache row's first lengths[row * tokens + t] keys (its position + 1; 0 for padding, whose output
 * is unused). query and out (rows, tokens, heads, dim) contiguous. PyTorch's SDPA sums in blocks that shift
 * with the width of the pass (the batch's longest row) and with padding; this does not. */
int TYPED(cotbench_prefill_attention)(const ELEM *query, const ELEM *key, const ELEM *value, ELEM *out,
                                      const int32_t *lengths, int64_t rows, int64_t tokens, int64_t heads,
                                      int64_t kv_heads, int64_t dim, int64_t row_stride, int64_t head_stride,
                                      float scale, int threads) {
    if (tokens <= 0) return 1;
    const TYPED(job_t) job = {query, key, value, out, lengths, heads, kv_heads, dim, row_stride, head_stride, scale,
                              tokens};
    return TYPED(run)(&job, NULL, rows * tokens, threads);
}

/* The same, fused with what comes before it in a decoder layer: the rotary embedding of the new token's
 * query and key, and the key and value written into the cache. Saves ~20 small torch ops a layer. */
int TYPED(cotbench_rope_decode_attention)(const ELEM *query, int64_t query_stride, const ELEM *key_new,
                                          int64_t key_stride, const ELEM *value_new, int64_t value_stride,
                                          const ELEM *cos, const ELEM *sin, ELEM *key, ELEM *value, ELEM *out,
                                          const int32_t *lengths, int64_t rows, int64_t heads, int64_t kv_heads,
                                          int64_t dim, int64_t row_stride, int64_t head_stride, float scale,
                                          int threads) {
    const TYPED(job_t) job = {NULL, key, value, out, lengths, heads, kv_heads, dim, row_stride, head_stride, scale, 1};
    const TYPED(fresh_t) fresh = {query, key_new, value_new, cos, sin, query_stride, key_stride, value_stride, key, value};
    return TYPED(run)(&job, &fresh, rows, threads);
}

/* One row of the LoRA up-projection at a rank known when compiling: the rank loop unrolls, and the column
 * loop vectorizes with each output column kept in a register through all r terms (one read of base, one
 * write of out). The same sum, in the same order, as the blocked loop below. */
static inline __attribute__((always_inline)) void TYPED(lora_row)(const ELEM *src, const float *coef, const float *up_t,
                                                                  ELEM *dst, int64_t n, const int RANK) {
    for (int64_t i = 0; i < n; i++) {
        float a = LOAD(src[i]);
        for (int r = 0; r < RANK; r++) a += coef[r] * up_t[r * n + i];
        dst[i] = STORE(a);
    }
}

/* The LoRA up-projection of a valve layer with a per-row strength, fused with the add:
 *   out[m, :] = base[m, :] + scale[m / tokens] * low[m, :] @ up_t      (rounded once)
 * base (rows, n) at row stride base_stride (the base columns of the [W; A] GEMM's output, read in place),
 * low (rows, rank) at row stride low_stride (its rank-r columns), up_t (rank, n) fp32 (B transposed),
 * out (rows, n) contiguous. In fp32 throughout. torch's addmm does the same work in 50-90 µs a call at 128
 * rows, mostly fixed cost for a K of 4; this loop runs in a fraction of that. Ranks 1, 2, 4 and 8 run
 * lora_row (rank 4, 256-2048 rows of 1536 columns: 1.4-1.5x the blocked loop, measured on the AMX Xeon);
 * others the blocked loop (at rank 16 the unrolled row was slower in fp32, measured). */
int TYPED(cotbench_lora_up)(const ELEM *base, int64_t base_stride, const ELEM *low, int64_t low_stride,
                            const float *scale, int64_t tokens, const float *up_t, ELEM *out, int64_t rows,
                            int64_t n, int64_t rank, int threads) {
    if (rank > 64 || tokens <= 0) return 1;
#pragma omp parallel for num_threads(threads > 0 ? threads : 1) schedule(static)
    for (int64_t m = 0; m < rows; m++) {
        float coef[64], acc[512];
        const float s = scale[m / tokens];
        for (int64_t r = 0; r < rank; r++) coef[r] = s * LOAD(low[m * low_stride + r]);
        const ELEM *row = base + m * base_stride;
        ELEM *dst_row = out + m * n;
        switch (rank) {
#define RANK_CASE(R) case R: TYPED(lora_row)(row, coef, up_t, dst_row, n, R); continue;
            RANK_CASE(1) RANK_CASE(2) RANK_CASE(4) RANK_CASE(8)
#undef RANK_CASE
            default: break;
        }
        for (int64_t i0 = 0; i0 < n; i0 += 512) {  /* blocks of columns, so each loop below vectorizes */
            const int64_t width = n - i0 < 512 ? n - i0 : 512;
            const ELEM *src = row + i0;
            for (int64_t i = 0; i < width; i++) acc[i] = LOAD(src[i]);
            for (int64_t r = 0; r < rank; r++) {
                const float c = coef[r], *u = up_t + r * n + i0;
                for (int64_t i = 0; i < width; i++) acc[i] += c * u[i];
            }
            ELEM *dst = dst_row + i0;
            for (int64_t i = 0; i < width; i++) dst[i] = STORE(acc[i]);
        }
    }
    return 0;
}

/* A decoder layer's residual add and RMSNorm in one pass, with transformers' roundings (LlamaRMSNorm):
 *   hidden = round(residual + delta)            (skipped when delta is NULL: hidden = residual)
 *   normed = round(weight * round(hidden * rsqrt(mean(hidden^2) + eps)))   (the mean in fp32)
 * All (rows, n) contiguous; hidden may be written over residual. */
int TYPED(cotbench_add_rms_norm)(const ELEM *residual, const ELEM *delta, ELEM *hidden, ELEM *normed,
                                 const ELEM *weight, int64_t rows, int64_t n, float eps, int threads) {
#pragma omp parallel for num_threads(threads > 0 ? threads : 1) schedule(static) if (rows * n > 32768)
    for (int64_t m = 0; m < rows; m++) {
        const ELEM *r = residual + m * n, *d = delta ? delta + m * n : NULL;
        ELEM *h = hidden + m * n, *y = normed + m * n;
        float squares = 0.0f;
        for (int64_t i = 0; i < n; i++) {
            const float v = d ? ROUND(LOAD(r[i]) + LOAD(d[i])) : LOAD(r[i]);
            h[i] = STORE(v);
            squares += v * v;
        }
        const float inv = 1.0f / sqrtf(squares / (float)n + eps);
        for (int64_t i = 0; i < n; i++)
            y[i] = STORE(LOAD(weight[i]) * ROUND(LOAD(h[i]) * inv));
    }
    return 0;
}

/* Greedy decoding's argmax over logits (rows, n) contiguous, as torch.argmax decides: the first largest
 * value, a NaN counting as larger than any number. Two passes a row (the maximum, vectorized; then its
 * first index), since -ffast-math leaves NaN tests to integer bit checks. */
int TYPED(cotbench_argmax)(const ELEM *logits, int64_t *out, int64_t rows, int64_t n, int threads) {
#pragma omp parallel for num_threads(threads > 0 ? threads : 1) schedule(static)
    for (int64_t m = 0; m < rows; m++) {
        const ELEM *x = logits + m * n;
        float top = LOAD(x[0]);  /* not -FLT_MAX: a row of -inf (fully masked logits) still picks index 0 */
        int nan = 0;
        for (int64_t i = 0; i < n; i++) {
            const float v = LOAD(x[i]);
            top = v > top ? v : top;
            nan |= IS_NAN(x[i]);
        }
        int64_t best = 0;
        if (nan)
            while (!IS_NAN(x[best])) best++;
        else
            while (best < n - 1 && LOAD(x[best]) != top) best++;
        out[m] = best;
    }
    return 0;
}
