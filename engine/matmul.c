/*
 * matmul.c - the engine's deterministic matrix multiply (internal.h, kernels.h).
 *
 * DESIGN
 * y[i][o] = sum_k W[o][k] x[i][k]. Every output element is reduced in exactly the order of
 * hm__dot (8 lanes by k % 8 in increasing k, fixed horizontal sum, scalar tail), whatever
 * n is, whichever rows are computed together and whichever thread computes them. That is
 * the batch-invariance guarantee: a sequence's activations are bit-identical alone or in a
 * batch, chunked or not, on 1 or N threads.
 *
 * Speed comes from register tiling, not from changing the order: a micro-kernel keeps
 * 4 W rows x 3 x rows = 12 independent 8-lane accumulators (each one exactly the
 * accumulator hm__dot would use) so that FMA latency is hidden and every W load feeds
 * 3 FMAs. Columns are processed in chunks of KC; between chunks the accumulators are
 * parked in memory (storing and reloading a vector does not round). Non-f32 weights
 * (f16 via F16C, bf16 by shifting, q8_0 as int8 * f16 scale, which is exact in f32) are
 * converted chunk by chunk into a small stack buffer and then go through the same f32
 * micro-kernel, so the dequantized product equals the f32 product of the dequantized
 * matrix bit for bit.
 *
 * Threads split output rows into blocks (tasks of one pool run); k is never split.
 * Several jobs (q/k/v, all active experts) share one pool run.
 */
#include <string.h>

#include "internal.h"
#include "kernels.h"

#if defined(__x86_64__)
#include <immintrin.h>
#define HM_HAVE_X86 1
#endif

#define KC 1024           /* columns per chunk (multiple of 32) */
#define XB 48             /* x rows per block (multiple of 3) */
#define MAX_JOBS 512      /* jobs per pool run; more are run in several batches */
#define INLINE_WORK 32768 /* multiply-adds below which a job list runs on the caller */

/* ---- scalar conversions (exact) ----------------------------------------------------- */

static float f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ffu, bits;
    float f;
    if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else { /* subnormal: normalise */
            exp = 127 - 15 + 1;
            while (!(man & 0x400u)) {
                man <<= 1;
                exp--;
            }
            man &= 0x3ffu;
            bits = sign | (exp << 23) | (man << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (man << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    memcpy(&f, &bits, 4);
    return f;
}

static float bf16_to_f32(uint16_t h)
{
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static uint16_t rd16(const uint8_t *p)
{
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
}

/* Dequantizes columns [k0, k0 + len) of row `row` (a pointer to the row's bytes). k0 and
 * len are multiples of 32 for q8_0. */
static void row_to_f32(enum hm_dtype t, const uint8_t *row, size_t k0, size_t len, float *dst)
{
    size_t i;
    switch (t) {
    case HM_DTYPE_F32:
        memcpy(dst, (const float *)row + k0, len * sizeof(float));
        break;
    case HM_DTYPE_F16:
        for (i = 0; i < len; i++)
            dst[i] = f16_to_f32(rd16(row + 2 * (k0 + i)));
        break;
    case HM_DTYPE_BF16:
        for (i = 0; i < len; i++)
            dst[i] = bf16_to_f32(rd16(row + 2 * (k0 + i)));
        break;
    case HM_DTYPE_Q8_0:
        for (i = 0; i < len; i += HM_Q8_0_BLOCK) {
            const uint8_t *b = row + (k0 + i) / HM_Q8_0_BLOCK * 34;
            float d = f16_to_f32(rd16(b));
            size_t j;
            for (j = 0; j < HM_Q8_0_BLOCK; j++)
                dst[i + j] = d * (float)(int8_t)b[2 + j];
        }
        break;
    default:
        HM_BUG("matmul: unsupported weight type");
    }
}

static const uint8_t *mat_row_ptr(const struct hm_mat *W, uint32_t e, size_t r)
{
    return (const uint8_t *)W->data + (size_t)e * W->mat_bytes + r * W->row_bytes;
}

void hm__mat_row(const struct hm_mat *W, uint32_t e, uint32_t r, float *dst)
{
    row_to_f32(W->type, mat_row_ptr(W, e, r), 0, W->cols, dst);
}

/* ---- portable path ------------------------------------------------------------------- */

/* One block of rows [r0, r1) for all n x rows; same lane order as dot_portable. */
static void block_portable(const struct hm__mm_job *j, size_t r0, size_t r1)
{
    const struct hm_mat *W = j->W;
    size_t cols = W->cols, c8 = cols / 8 * 8;
    float wbuf[KC];
    size_t r, i, kc, q, l;

    for (r = r0; r < r1; r++) {
        const uint8_t *row = mat_row_ptr(W, j->e, r);
        for (i = 0; i < j->n; i++) {
            const float *x = j->x + i * j->ldx;
            float lanes[8] = {0}, s;
            for (kc = 0; kc < c8; kc += KC) {
                size_t len = c8 - kc < KC ? c8 - kc : KC;
                row_to_f32(W->type, row, kc, len, wbuf);
                for (q = 0; q < len; q += 8)
                    for (l = 0; l < 8; l++)
                        lanes[l] += wbuf[q + l] * x[kc + q + l];
            }
            s = ((lanes[0] + lanes[4]) + (lanes[2] + lanes[6])) +
                ((lanes[1] + lanes[5]) + (lanes[3] + lanes[7]));
            if (c8 < cols) {
                row_to_f32(W->type, row, c8, cols - c8, wbuf);
                for (q = c8; q < cols; q++)
                    s += wbuf[q - c8] * x[q];
            }
            j->y[i * j->ldy + r] = s;
        }
    }
}

/* ---- AVX2 path ------------------------------------------------------------------------ */
#ifdef HM_HAVE_X86

__attribute__((target("avx2,fma,f16c"))) static void
chunk_to_f32_avx2(enum hm_dtype t, const uint8_t *row, size_t k0, size_t len, float *dst)
{
    size_t i;
    switch (t) {
    case HM_DTYPE_F16:
        for (i = 0; i < len; i += 8)
            _mm256_storeu_ps(
                dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(row + 2 * (k0 + i)))));
        break;
    case HM_DTYPE_BF16:
        for (i = 0; i < len; i += 8) {
            __m256i v =
                _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(row + 2 * (k0 + i))));
            _mm256_storeu_ps(dst + i, _mm256_castsi256_ps(_mm256_slli_epi32(v, 16)));
        }
        break;
    case HM_DTYPE_Q8_0:
        for (i = 0; i < len; i += HM_Q8_0_BLOCK) {
            const uint8_t *b = row + (k0 + i) / HM_Q8_0_BLOCK * 34;
            __m256 d = _mm256_set1_ps(_cvtsh_ss(rd16(b)));
            size_t j;
            for (j = 0; j < HM_Q8_0_BLOCK; j += 8) {
                __m128i q = _mm_loadl_epi64((const __m128i *)(b + 2 + j));
                __m256 f = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q));
                _mm256_storeu_ps(dst + i + j, _mm256_mul_ps(d, f));
            }
        }
        break;
    default:
        row_to_f32(t, row, k0, len, dst);
    }
}

/* 4 W rows x 3 x rows over len columns (multiple of 8); acc[xi * 4 + wi]. */
__attribute__((target("avx2,fma"))) static inline void
mk_4x3(const float *w0, const float *w1, const float *w2, const float *w3, const float *x0,
       const float *x1, const float *x2, size_t len, __m256 *acc)
{
    __m256 a00 = acc[0], a01 = acc[1], a02 = acc[2], a03 = acc[3];
    __m256 a10 = acc[4], a11 = acc[5], a12 = acc[6], a13 = acc[7];
    __m256 a20 = acc[8], a21 = acc[9], a22 = acc[10], a23 = acc[11];
    size_t k;
    for (k = 0; k < len; k += 8) {
        __m256 v0 = _mm256_loadu_ps(x0 + k), v1 = _mm256_loadu_ps(x1 + k);
        __m256 v2 = _mm256_loadu_ps(x2 + k), w;
        w = _mm256_loadu_ps(w0 + k);
        a00 = _mm256_fmadd_ps(w, v0, a00);
        a10 = _mm256_fmadd_ps(w, v1, a10);
        a20 = _mm256_fmadd_ps(w, v2, a20);
        w = _mm256_loadu_ps(w1 + k);
        a01 = _mm256_fmadd_ps(w, v0, a01);
        a11 = _mm256_fmadd_ps(w, v1, a11);
        a21 = _mm256_fmadd_ps(w, v2, a21);
        w = _mm256_loadu_ps(w2 + k);
        a02 = _mm256_fmadd_ps(w, v0, a02);
        a12 = _mm256_fmadd_ps(w, v1, a12);
        a22 = _mm256_fmadd_ps(w, v2, a22);
        w = _mm256_loadu_ps(w3 + k);
        a03 = _mm256_fmadd_ps(w, v0, a03);
        a13 = _mm256_fmadd_ps(w, v1, a13);
        a23 = _mm256_fmadd_ps(w, v2, a23);
    }
    acc[0] = a00, acc[1] = a01, acc[2] = a02, acc[3] = a03;
    acc[4] = a10, acc[5] = a11, acc[6] = a12, acc[7] = a13;
    acc[8] = a20, acc[9] = a21, acc[10] = a22, acc[11] = a23;
}

/* 4 W rows x 1 x row. */
__attribute__((target("avx2,fma"))) static inline void mk_4x1(const float *w0, const float *w1,
                                                              const float *w2, const float *w3,
                                                              const float *x0, size_t len,
                                                              __m256 *acc)
{
    __m256 a0 = acc[0], a1 = acc[1], a2 = acc[2], a3 = acc[3];
    size_t k;
    for (k = 0; k < len; k += 8) {
        __m256 v0 = _mm256_loadu_ps(x0 + k);
        if ((k & 15) == 0) { /* decode streams weights: fetch 512 bytes ahead */
            _mm_prefetch((const char *)(w0 + k + 128), _MM_HINT_T0);
            _mm_prefetch((const char *)(w1 + k + 128), _MM_HINT_T0);
            _mm_prefetch((const char *)(w2 + k + 128), _MM_HINT_T0);
            _mm_prefetch((const char *)(w3 + k + 128), _MM_HINT_T0);
        }
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w0 + k), v0, a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w1 + k), v0, a1);
        a2 = _mm256_fmadd_ps(_mm256_loadu_ps(w2 + k), v0, a2);
        a3 = _mm256_fmadd_ps(_mm256_loadu_ps(w3 + k), v0, a3);
    }
    acc[0] = a0, acc[1] = a1, acc[2] = a2, acc[3] = a3;
}

/* Eight weights at column k of a row, dequantized in registers (exactly the values
 * chunk_to_f32_avx2 would store). */
__attribute__((target("avx2,fma,f16c"), always_inline)) static inline __m256
load8(enum hm_dtype t, const uint8_t *row, size_t k)
{
    switch (t) {
    case HM_DTYPE_F16:
        return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(row + 2 * k)));
    case HM_DTYPE_BF16:
        return _mm256_castsi256_ps(_mm256_slli_epi32(
            _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(row + 2 * k))), 16));
    case HM_DTYPE_Q8_0: {
        const uint8_t *b = row + k / HM_Q8_0_BLOCK * 34;
        __m256 d = _mm256_set1_ps(_cvtsh_ss(rd16(b)));
        __m128i q = _mm_loadl_epi64((const __m128i *)(b + 2 + k % HM_Q8_0_BLOCK));
        return _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q)));
    }
    default:
        return _mm256_loadu_ps((const float *)row + k);
    }
}

/* One x row against 4 quantized W rows over columns [0, c8), dequantizing in registers:
 * the decode path (n = 1), where a staging buffer would only add memory traffic. Same
 * per-lane FMA sequence as the buffered path. Inlined per type (t is a constant at each
 * call) so the type switch leaves the loop. */
__attribute__((target("avx2,fma,f16c"), always_inline)) static inline void
mk_4x1_q_t(enum hm_dtype t, const uint8_t *const rows[4], const float *x, size_t c8, __m256 *acc)
{
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    size_t k;
    for (k = 0; k < c8; k += 8) {
        __m256 v = _mm256_loadu_ps(x + k);
        a0 = _mm256_fmadd_ps(load8(t, rows[0], k), v, a0);
        a1 = _mm256_fmadd_ps(load8(t, rows[1], k), v, a1);
        a2 = _mm256_fmadd_ps(load8(t, rows[2], k), v, a2);
        a3 = _mm256_fmadd_ps(load8(t, rows[3], k), v, a3);
    }
    acc[0] = a0, acc[1] = a1, acc[2] = a2, acc[3] = a3;
}

/* q8_0: per block of 32, the 4 scales once, then 4 steps of 8 (same values and order).
 * Written out by hand so that every accumulator stays in a register. */
#define Q8_STEP(b, d, acc, j)                                                                      \
    acc =                                                                                          \
        _mm256_fmadd_ps(_mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(                  \
                                             _mm_loadl_epi64((const __m128i *)((b) + 2 + (j)))))), \
                        v, acc)

__attribute__((target("avx2,fma,f16c"))) static void
mk_4x1_q8(const uint8_t *const rows[4], const float *x, size_t c8, __m256 *acc)
{
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    size_t k, j;
    for (k = 0; k < c8; k += HM_Q8_0_BLOCK) {
        const uint8_t *b0 = rows[0] + k / HM_Q8_0_BLOCK * 34;
        const uint8_t *b1 = rows[1] + k / HM_Q8_0_BLOCK * 34;
        const uint8_t *b2 = rows[2] + k / HM_Q8_0_BLOCK * 34;
        const uint8_t *b3 = rows[3] + k / HM_Q8_0_BLOCK * 34;
        __m256 d0 = _mm256_set1_ps(_cvtsh_ss(rd16(b0)));
        __m256 d1 = _mm256_set1_ps(_cvtsh_ss(rd16(b1)));
        __m256 d2 = _mm256_set1_ps(_cvtsh_ss(rd16(b2)));
        __m256 d3 = _mm256_set1_ps(_cvtsh_ss(rd16(b3)));
        for (j = 0; j < HM_Q8_0_BLOCK; j += 8) {
            __m256 v = _mm256_loadu_ps(x + k + j);
            Q8_STEP(b0, d0, a0, j);
            Q8_STEP(b1, d1, a1, j);
            Q8_STEP(b2, d2, a2, j);
            Q8_STEP(b3, d3, a3, j);
        }
    }
    acc[0] = a0, acc[1] = a1, acc[2] = a2, acc[3] = a3;
}
#undef Q8_STEP

__attribute__((target("avx2,fma,f16c"))) static void
mk_4x1_q(enum hm_dtype t, const uint8_t *const rows[4], const float *x, size_t c8, __m256 *acc)
{
    switch (t) {
    case HM_DTYPE_F16:
        mk_4x1_q_t(HM_DTYPE_F16, rows, x, c8, acc);
        break;
    case HM_DTYPE_BF16:
        mk_4x1_q_t(HM_DTYPE_BF16, rows, x, c8, acc);
        break;
    case HM_DTYPE_Q8_0:
        mk_4x1_q8(rows, x, c8, acc);
        break;
    default:
        mk_4x1_q_t(HM_DTYPE_F32, rows, x, c8, acc);
    }
}

__attribute__((target("avx2,fma"))) static inline float hsum8_avx(__m256 v)
{
    __m128 lo = _mm256_castps256_ps128(v);
    __m128 hi = _mm256_extractf128_ps(v, 1);
    __m128 s = _mm_add_ps(lo, hi);
    __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
    __m128 u = _mm_add_ss(t, _mm_shuffle_ps(t, t, 1));
    return _mm_cvtss_f32(u);
}

/* f32 weights, one x row (decode): 8 W rows at a time, each with its own accumulator in the
 * hm__dot order, straight from memory (more rows in flight than the 4-row tile). */
__attribute__((target("avx2,fma"))) static void gemv_f32_avx2(const struct hm__mm_job *j, size_t r0,
                                                              size_t r1)
{
    const struct hm_mat *W = j->W;
    size_t cols = W->cols, c8 = cols / 8 * 8, r, k, i;
    const float *x = j->x;

    for (r = r0; r < r1; r += 8) {
        const float *w[8];
        __m256 a[8];
        size_t nw = r1 - r < 8 ? r1 - r : 8;
        for (i = 0; i < 8; i++) {
            w[i] = (const float *)mat_row_ptr(W, j->e, r + (i < nw ? i : nw - 1));
            a[i] = _mm256_setzero_ps();
        }
        for (k = 0; k < c8; k += 8) {
            __m256 v = _mm256_loadu_ps(x + k);
            a[0] = _mm256_fmadd_ps(_mm256_loadu_ps(w[0] + k), v, a[0]);
            a[1] = _mm256_fmadd_ps(_mm256_loadu_ps(w[1] + k), v, a[1]);
            a[2] = _mm256_fmadd_ps(_mm256_loadu_ps(w[2] + k), v, a[2]);
            a[3] = _mm256_fmadd_ps(_mm256_loadu_ps(w[3] + k), v, a[3]);
            a[4] = _mm256_fmadd_ps(_mm256_loadu_ps(w[4] + k), v, a[4]);
            a[5] = _mm256_fmadd_ps(_mm256_loadu_ps(w[5] + k), v, a[5]);
            a[6] = _mm256_fmadd_ps(_mm256_loadu_ps(w[6] + k), v, a[6]);
            a[7] = _mm256_fmadd_ps(_mm256_loadu_ps(w[7] + k), v, a[7]);
        }
        for (i = 0; i < nw; i++) {
            float s = hsum8_avx(a[i]);
            for (k = c8; k < cols; k++)
                s += w[i][k] * x[k];
            j->y[r + i] = s;
        }
    }
}

__attribute__((target("avx2,fma,f16c"))) static void block_avx2(const struct hm__mm_job *j,
                                                                size_t r0, size_t r1)
{
    const struct hm_mat *W = j->W;
    size_t cols = W->cols, c8 = cols / 8 * 8;
    bool f32 = W->type == HM_DTYPE_F32;
    float wbuf[4 * KC] __attribute__((aligned(32)));
    __m256 acc[XB * 4];
    size_t xb, r, kc, xi, wi, q;

    for (xb = 0; xb < j->n; xb += XB) {
        size_t nxb = j->n - xb < XB ? j->n - xb : XB;
        for (r = r0; r < r1; r += 4) {
            const uint8_t *rows[4];
            const float *wp[4];
            size_t nw = r1 - r < 4 ? r1 - r : 4;
            for (wi = 0; wi < 4; wi++)
                rows[wi] = mat_row_ptr(W, j->e, r + (wi < nw ? wi : nw - 1));
            for (q = 0; q < nxb * 4; q++)
                acc[q] = _mm256_setzero_ps();
            if (!f32 && nxb == 1 && c8 > 0) {
                mk_4x1_q(W->type, rows, j->x + xb * j->ldx, c8, acc);
                kc = c8; /* skip the buffered path */
            } else {
                kc = 0;
            }
            for (; kc < c8; kc += KC) {
                size_t len = c8 - kc < KC ? c8 - kc : KC;
                for (wi = 0; wi < 4; wi++) {
                    if (f32) {
                        wp[wi] = (const float *)rows[wi] + kc;
                    } else {
                        chunk_to_f32_avx2(W->type, rows[wi], kc, len, wbuf + wi * KC);
                        wp[wi] = wbuf + wi * KC;
                    }
                }
                for (xi = 0; xi + 3 <= nxb; xi += 3) {
                    const float *x0 = j->x + (xb + xi) * j->ldx + kc;
                    mk_4x3(wp[0], wp[1], wp[2], wp[3], x0, x0 + j->ldx, x0 + 2 * j->ldx, len,
                           acc + xi * 4);
                }
                for (; xi < nxb; xi++)
                    mk_4x1(wp[0], wp[1], wp[2], wp[3], j->x + (xb + xi) * j->ldx + kc, len,
                           acc + xi * 4);
            }
            for (xi = 0; xi < nxb; xi++) {
                const float *x = j->x + (xb + xi) * j->ldx;
                float *y = j->y + (xb + xi) * j->ldy + r;
                for (wi = 0; wi < nw; wi++) {
                    float s = hsum8_avx(acc[xi * 4 + wi]);
                    if (c8 < cols) {
                        float tail[8];
                        row_to_f32(W->type, rows[wi], c8, cols - c8, tail);
                        for (q = c8; q < cols; q++)
                            s += tail[q - c8] * x[q];
                    }
                    y[wi] = s;
                }
            }
        }
    }
}
#endif /* HM_HAVE_X86 */

/* ---- job splitting -------------------------------------------------------------------- */

struct mm_ctx {
    const struct hm__mm_job *jobs;
    size_t n_jobs;
    size_t rb;                       /* rows per task (multiple of 4) */
    size_t first_task[MAX_JOBS + 1]; /* prefix sums of tasks per job */
    bool blas;
};

static void mm_task(void *vctx, size_t task, unsigned thread)
{
    struct mm_ctx *c = vctx;
    size_t lo = 0, hi = c->n_jobs, r0, r1;
    const struct hm__mm_job *j;
    (void)thread;
    while (hi - lo > 1) { /* the job whose range holds task */
        size_t mid = (lo + hi) / 2;
        if (c->first_task[mid] <= task)
            lo = mid;
        else
            hi = mid;
    }
    j = &c->jobs[lo];
    r0 = (task - c->first_task[lo]) * c->rb;
    r1 = r0 + c->rb < j->W->rows ? r0 + c->rb : j->W->rows;
    if (c->blas && j->W->type == HM_DTYPE_F32) {
        hm__blas_sgemm_rows(
            (const float *)((const uint8_t *)j->W->data + (size_t)j->e * j->W->mat_bytes),
            j->W->cols, r0, r1, j->x, j->n, j->ldx, j->y, j->ldy);
        return;
    }
#ifdef HM_HAVE_X86
    if (hm__cpu_fast()) {
        if (j->n == 1 && j->W->type == HM_DTYPE_F32)
            gemv_f32_avx2(j, r0, r1);
        else
            block_avx2(j, r0, r1);
        return;
    }
#endif
    block_portable(j, r0, r1);
}

void hm__matmul_jobs(const struct hm__mm_job *jobs, size_t n_jobs, struct hm_pool *pool, bool blas)
{
    struct mm_ctx c;
    unsigned nt = hm_pool_n_threads(pool);
    size_t i, total_rows = 0, cnt = 0, rb, work = 0;

    while (n_jobs > MAX_JOBS) {
        hm__matmul_jobs(jobs, MAX_JOBS, pool, blas);
        jobs += MAX_JOBS;
        n_jobs -= MAX_JOBS;
    }
    c.jobs = jobs;
    c.blas = blas;
    for (i = 0; i < n_jobs; i++) {
        if (jobs[i].n) {
            total_rows += jobs[i].W->rows;
            work += jobs[i].n * jobs[i].W->rows * jobs[i].W->cols;
        }
    }
    if (total_rows == 0)
        return;
    if (work < INLINE_WORK) { /* too small to pay for a wake-up */
        pool = NULL;
        nt = 1;
    }
    /* about 8 tasks per thread, blocks of 4..256 rows */
    rb = (total_rows + nt * 8 - 1) / (nt * 8);
    rb = (rb + 3) / 4 * 4;
    if (rb < 4)
        rb = 4;
    if (rb > 256)
        rb = 256;
    if (nt == 1)
        rb = 256;
    c.rb = rb;
    c.n_jobs = 0;
    for (i = 0; i < n_jobs; i++) {
        if (!jobs[i].n)
            continue;
        /* compact the job list: skip empty jobs */
        c.first_task[c.n_jobs] = cnt;
        cnt += (jobs[i].W->rows + rb - 1) / rb;
        c.n_jobs++;
    }
    c.first_task[c.n_jobs] = cnt;
    if (c.n_jobs != n_jobs) {
        /* rare (an empty job): rebuild with a compacted copy */
        struct hm__mm_job compact[MAX_JOBS];
        size_t k = 0;
        for (i = 0; i < n_jobs; i++)
            if (jobs[i].n)
                compact[k++] = jobs[i];
        c.jobs = compact;
        hm_pool_run(pool, cnt, mm_task, &c);
        return;
    }
    hm_pool_run(pool, cnt, mm_task, &c);
}

void hm__matmul(const struct hm_mat *W, uint32_t e, const float *x, size_t n, size_t ldx, float *y,
                size_t ldy, struct hm_pool *pool)
{
    struct hm__mm_job j = {W, e, x, n, ldx, y, ldy};
    hm__matmul_jobs(&j, 1, pool, false);
}
