/*
 * kernels.h - the forward pass's numeric building blocks (engine/kernels.c, matmul.c,
 * blas.c). Internal to engine/.
 *
 * Every reduction here has a fixed order that depends only on the length of the vectors,
 * never on the batch, the thread or the caller, which is what makes the engine batch
 * invariant: hm__dot(a, b, n) accumulates a[i]*b[i] in 8 lanes (lane i % 8, in increasing
 * i), reduces the lanes as ((0+4)+(2+6))+((1+5)+(3+7)) and then adds the tail (i >= n/8*8)
 * one by one. With AVX2+FMA the lane updates are fused multiply-adds; the portable
 * fallback does the same sequence with separate multiplies and adds. The choice is made
 * once per process from the CPU (hm__cpu_fast()).
 */
#ifndef HM_ENGINE_KERNELS_H
#define HM_ENGINE_KERNELS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hm/model.h"
#include "hm/pool.h"

/* true when the AVX2+FMA+F16C kernels are used (constant for the process). */
bool hm__cpu_fast(void);

/* sum_i a[i] * b[i] in the fixed order described above. */
float hm__dot(const float *a, const float *b, size_t n);
/* y[i] += a * x[i] (element-wise, so no reduction order question). */
void hm__axpy(float *y, float a, const float *x, size_t n);
/* out[i] = hm__dot(q, rows + i * stride, len) for i < n (bit-identical, fewer calls). */
void hm__dot_rows(const float *q, const float *rows, size_t stride, size_t n, size_t len,
                  float *out);
/* y += w[i] * row i for i = 0, 1, ..., n-1 in that order: the same per-element sequence of
 * fused multiply-adds as n calls of hm__axpy, with y kept in registers. */
void hm__axpy_rows(float *y, const float *w, const float *rows, size_t stride, size_t n,
                   size_t len);
/* y[i] *= a */
void hm__scale(float *y, float a, size_t n);

/* RMSNorm (spec 3): y = x / sqrt(mean(x^2) + eps) * (g + (2c - 1) b). g NULL = 1,
 * b NULL = 0. y may equal x. */
void hm__rmsnorm(float *y, const float *x, size_t n, const float *g, const float *b, float c,
                 float eps);
/* RoPE rotate-half on u (m floats, m even) at position pos; inv_freq[i] = base^(-2i/m)
 * in float64 (m/2 entries). Angles in float64, rotation in float32 (spec 12.5). */
void hm__rope(float *u, size_t m, uint32_t pos, const double *inv_freq);
/* The same in two parts, to rotate several heads at one position: cs/sn (m/2 floats each)
 * receive the float32 cos and sin of the float64 angles; hm__rope_apply rotates u. */
void hm__rope_table(float *cs, float *sn, size_t m, uint32_t pos, const double *inv_freq);
void hm__rope_apply(float *u, size_t m, const float *cs, const float *sn);
void hm__rope_freqs(double *inv_freq, size_t m, float base);
/* In-place softmax over n floats (max subtracted, float32). */
void hm__softmax(float *x, size_t n);
/* g[i] = silu(g[i]) * u[i] */
void hm__swiglu(float *g, const float *u, size_t n);
float hm__silu(float z);

/* ---- Matrix multiply jobs (matmul.c) ------------------------------------------------
 * One job is y[i][o] = sum_k W_e[o][k] x[i][k] for i < n (as hm__matmul). A list of jobs
 * runs as ONE pool run, split into tasks of output-row blocks, so several small matrices
 * (q/k/v, every active expert) share the pool's wake-up cost. Rows are split across
 * threads, never k: each output element is one hm__dot-ordered reduction. */
struct hm__mm_job {
    const struct hm_mat *W;
    uint32_t e;     /* matrix index in a stacked tensor */
    const float *x; /* n rows, stride ldx floats */
    size_t n, ldx;
    float *y; /* n rows, stride ldy floats, W->rows columns written */
    size_t ldy;
};
/* blas: use OpenBLAS sgemm for f32 weights (not batch invariant). */
void hm__matmul_jobs(const struct hm__mm_job *jobs, size_t n_jobs, struct hm_pool *pool, bool blas);

/* ---- OpenBLAS (blas.c, the only cblas.h user) ---------------------------------------- */
/* y (n x rows, ldy) = x (n x cols, ldx) * W^T for rows [r0, r1) of an f32 matrix W. */
void hm__blas_sgemm_rows(const float *W, size_t cols, size_t r0, size_t r1, const float *x,
                         size_t n, size_t ldx, float *y, size_t ldy);
/* openblas_set_num_threads(1): our pool provides the threads. */
void hm__blas_single_thread(void);

#endif
