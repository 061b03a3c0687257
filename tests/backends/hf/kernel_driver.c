/* A small program around cotbench's CPU kernels, for tests/backends/hf/test_cpu_kernels_arm.py: built with
 * cpu_kernels.c for this machine and, with a cross compiler, for aarch64 (run under qemu-user), it feeds both
 * the same inputs and prints every output, one number a line, so the two builds can be compared. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

int cotbench_decode_attention_f32(const float *, const float *, const float *, float *, const int32_t *, int64_t,
                                  int64_t, int64_t, int64_t, int64_t, int64_t, float, int);
int cotbench_decode_attention_bf16(const uint16_t *, const uint16_t *, const uint16_t *, uint16_t *,
                                   const int32_t *, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, float, int);
int cotbench_add_rms_norm_f32(const float *, const float *, float *, float *, const float *, int64_t, int64_t,
                              float, int);
int cotbench_lora_up_f32(const float *, int64_t, const float *, int64_t, const float *, int64_t, const float *,
                         float *, int64_t, int64_t, int64_t, int);
int cotbench_argmax_f32(const float *, int64_t *, int64_t, int64_t, int);
int cotbench_argmax_bf16(const uint16_t *, int64_t *, int64_t, int64_t, int);

#define ROWS 3
#define HEADS 6
#define KV 2
#define DIM 64
#define CAP 20
#define N 96

static uint32_t state = 12345u;
static float next(void) {  /* the same numbers on every machine: a linear congruential generator */
    state = state * 1664525u + 1013904223u;
    return (float)((state >> 8) & 0xffff) / 32768.0f - 1.0f;
}
static uint16_t bf16(float f) { uint32_t u; memcpy(&u, &f, 4); return (uint16_t)(u >> 16); }
static float from_bf16(uint16_t h) { uint32_t u = (uint32_t)h << 16; float f; memcpy(&f, &u, 4); return f; }

int main(void) {
    static float q[ROWS * HEADS * DIM], k[ROWS * KV * CAP * DIM], v[ROWS * KV * CAP * DIM], out[ROWS * HEADS * DIM];
    static uint16_t qb[ROWS * HEADS * DIM], kb[ROWS * KV * CAP * DIM], vb[ROWS * KV * CAP * DIM], outb[ROWS * HEADS * DIM];
    const int32_t lengths[ROWS] = {5, 20, 0};
    for (int i = 0; i < ROWS * HEADS * DIM; i++) qb[i] = bf16(q[i] = from_bf16(bf16(next())));
    for (int i = 0; i < ROWS * KV * CAP * DIM; i++) kb[i] = bf16(k[i] = from_bf16(bf16(next())));
    for (int i = 0; i < ROWS * KV * CAP * DIM; i++) vb[i] = bf16(v[i] = from_bf16(bf16(next())));
    if (cotbench_decode_attention_f32(q, k, v, out, lengths, ROWS, HEADS, KV, DIM, KV * CAP * DIM, CAP * DIM, 0.125f, 2)) return 1;
    if (cotbench_decode_attention_bf16(qb, kb, vb, outb, lengths, ROWS, HEADS, KV, DIM, KV * CAP * DIM, CAP * DIM, 0.125f, 2)) return 1;
    for (int i = 0; i < ROWS * HEADS * DIM; i++) printf("%.9g\n", out[i]);
    for (int i = 0; i < ROWS * HEADS * DIM; i++) printf("%.9g\n", from_bf16(outb[i]));

    static float residual[ROWS * N], delta[ROWS * N], weight[N], hidden[ROWS * N], normed[ROWS * N];
    for (int i = 0; i < ROWS * N; i++) { residual[i] = next(); delta[i] = next(); }
    for (int i = 0; i < N; i++) weight[i] = next();
    cotbench_add_rms_norm_f32(residual, delta, hidden, normed, weight, ROWS, N, 1e-5f, 2);
    for (int i = 0; i < ROWS * N; i++) printf("%.9g\n%.9g\n", hidden[i], normed[i]);

    static float base[ROWS * (N + 4)], up_t[4 * N], scale[ROWS], lora[ROWS * N];
    for (int i = 0; i < ROWS * (N + 4); i++) base[i] = next();
    for (int i = 0; i < 4 * N; i++) up_t[i] = next();
    for (int i = 0; i < ROWS; i++) scale[i] = next();
    if (cotbench_lora_up_f32(base, N + 4, base + N, N + 4, scale, 1, up_t, lora, ROWS, N, 4, 2)) return 1;
    for (int i = 0; i < ROWS * N; i++) printf("%.9g\n", lora[i]);

    static float logits[ROWS * 1000];
    static uint16_t logits_b[ROWS * 1000];
    int64_t picks[ROWS];
    for (int i = 0; i < ROWS * 1000; i++) logits_b[i] = bf16(logits[i] = next());
    cotbench_argmax_f32(logits, picks, ROWS, 1000, 2);
    for (int i = 0; i < ROWS; i++) printf("%lld\n", (long long)picks[i]);
    cotbench_argmax_bf16(logits_b, picks, ROWS, 1000, 2);
    for (int i = 0; i < ROWS; i++) printf("%lld\n", (long long)picks[i]);
    return 0;
}
