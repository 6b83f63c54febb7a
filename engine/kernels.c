/*
 * kernels.c - vector kernels of the forward pass: dot, axpy, RMSNorm, RoPE, softmax,
 * SwiGLU. Reduction orders are fixed (see kernels.h) so results never depend on the
 * batch or the thread that computes them.
 */
#include "kernels.h"

#include <math.h>
#include <stdatomic.h>

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#define HM_HAVE_X86 1
#endif

bool hm__cpu_fast(void)
{
#ifdef HM_HAVE_X86
    static atomic_int fast = -1; /* every thread computes the same value */
    int f = atomic_load_explicit(&fast, memory_order_relaxed);
    if (f < 0) {
        __builtin_cpu_init();
        unsigned a = 0, b = 0, c = 0, d = 0;
        /* F16C via cpuid leaf 1 (ecx bit 29): not every compiler knows "f16c" here */
        f = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
            __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 29));
        atomic_store_explicit(&fast, f, memory_order_relaxed);
    }
    return f != 0;
#else
    return false;
#endif
}

/* ---- dot ---------------------------------------------------------------------------- */

static float dot_portable(const float *a, const float *b, size_t n)
{
    float l[8] = {0};
    size_t i, j, n8 = n / 8 * 8;
    float s;
    for (i = 0; i < n8; i += 8)
        for (j = 0; j < 8; j++)
            l[j] += a[i + j] * b[i + j];
    s = ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]));
    for (i = n8; i < n; i++)
        s += a[i] * b[i];
    return s;
}

#ifdef HM_HAVE_X86
__attribute__((target("avx2,fma"))) static inline float hsum8(__m256 v)
{
    /* lanes: ((0+4)+(2+6))+((1+5)+(3+7)) */
    __m128 lo = _mm256_castps256_ps128(v);
    __m128 hi = _mm256_extractf128_ps(v, 1);
    __m128 s = _mm_add_ps(lo, hi);                 /* 0+4, 1+5, 2+6, 3+7 */
    __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s)); /* (0+4)+(2+6), (1+5)+(3+7) */
    __m128 u = _mm_add_ss(t, _mm_shuffle_ps(t, t, 1));
    return _mm_cvtss_f32(u);
}

__attribute__((target("avx2,fma"))) static float dot_avx2(const float *a, const float *b, size_t n)
{
    __m256 acc = _mm256_setzero_ps();
    size_t i, n8 = n / 8 * 8;
    float s;
    for (i = 0; i < n8; i += 8)
        acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc);
    s = hsum8(acc);
    for (i = n8; i < n; i++)
        s += a[i] * b[i];
    return s;
}

__attribute__((target("avx2,fma"))) static void axpy_avx2(float *y, float a, const float *x,
                                                          size_t n)
{
    __m256 va = _mm256_set1_ps(a);
    size_t i, n8 = n / 8 * 8;
    for (i = 0; i < n8; i += 8)
        _mm256_storeu_ps(y + i,
                         _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    for (; i < n; i++)
        y[i] = fmaf(a, x[i], y[i]);
}
#endif

#ifdef HM_HAVE_X86
__attribute__((target("avx2,fma"))) static void
dot_rows_avx2(const float *q, const float *rows, size_t stride, size_t n, size_t len, float *out)
{
    size_t i;
    for (i = 0; i < n; i++)
        out[i] = dot_avx2(q, rows + i * stride, len);
}

__attribute__((target("avx2,fma"))) static void
axpy_rows_avx2(float *y, const float *w, const float *rows, size_t stride, size_t n, size_t len)
{
    size_t k, i, len8 = len / 8 * 8;
    for (k = 0; k + 32 <= len8; k += 32) { /* 4 vectors of y stay in registers */
        __m256 y0 = _mm256_loadu_ps(y + k), y1 = _mm256_loadu_ps(y + k + 8);
        __m256 y2 = _mm256_loadu_ps(y + k + 16), y3 = _mm256_loadu_ps(y + k + 24);
        for (i = 0; i < n; i++) {
            const float *r = rows + i * stride + k;
            __m256 wi = _mm256_set1_ps(w[i]);
            y0 = _mm256_fmadd_ps(wi, _mm256_loadu_ps(r), y0);
            y1 = _mm256_fmadd_ps(wi, _mm256_loadu_ps(r + 8), y1);
            y2 = _mm256_fmadd_ps(wi, _mm256_loadu_ps(r + 16), y2);
            y3 = _mm256_fmadd_ps(wi, _mm256_loadu_ps(r + 24), y3);
        }
        _mm256_storeu_ps(y + k, y0);
        _mm256_storeu_ps(y + k + 8, y1);
        _mm256_storeu_ps(y + k + 16, y2);
        _mm256_storeu_ps(y + k + 24, y3);
    }
    for (; k < len8; k += 8) {
        __m256 y0 = _mm256_loadu_ps(y + k);
        for (i = 0; i < n; i++)
            y0 = _mm256_fmadd_ps(_mm256_set1_ps(w[i]), _mm256_loadu_ps(rows + i * stride + k), y0);
        _mm256_storeu_ps(y + k, y0);
    }
    for (; k < len; k++)
        for (i = 0; i < n; i++)
            y[k] = fmaf(w[i], rows[i * stride + k], y[k]);
}
#endif

void hm__dot_rows(const float *q, const float *rows, size_t stride, size_t n, size_t len,
                  float *out)
{
    size_t i;
#ifdef HM_HAVE_X86
    if (hm__cpu_fast()) {
        dot_rows_avx2(q, rows, stride, n, len, out);
        return;
    }
#endif
    for (i = 0; i < n; i++)
        out[i] = dot_portable(q, rows + i * stride, len);
}

void hm__axpy_rows(float *y, const float *w, const float *rows, size_t stride, size_t n, size_t len)
{
    size_t i;
#ifdef HM_HAVE_X86
    if (hm__cpu_fast()) {
        axpy_rows_avx2(y, w, rows, stride, n, len);
        return;
    }
#endif
    for (i = 0; i < n; i++)
        hm__axpy(y, w[i], rows + i * stride, len);
}

float hm__dot(const float *a, const float *b, size_t n)
{
#ifdef HM_HAVE_X86
    if (hm__cpu_fast())
        return dot_avx2(a, b, n);
#endif
    return dot_portable(a, b, n);
}

void hm__axpy(float *y, float a, const float *x, size_t n)
{
    size_t i;
#ifdef HM_HAVE_X86
    if (hm__cpu_fast()) {
        axpy_avx2(y, a, x, n);
        return;
    }
#endif
    for (i = 0; i < n; i++)
        y[i] += a * x[i];
}

void hm__scale(float *y, float a, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++)
        y[i] *= a;
}

/* ---- norms, RoPE, softmax, activations ------------------------------------------------ */

void hm__rmsnorm(float *y, const float *x, size_t n, const float *g, const float *b, float c,
                 float eps)
{
    float ms = hm__dot(x, x, n) / (float)n;
    float inv = 1.0f / sqrtf(ms + eps);
    float cb = 2.0f * c - 1.0f;
    size_t i;
    for (i = 0; i < n; i++) {
        float gain = g ? g[i] : 1.0f;
        if (b)
            gain += cb * b[i];
        y[i] = x[i] * inv * gain;
    }
}

void hm__rope_freqs(double *inv_freq, size_t m, float base)
{
    size_t i;
    for (i = 0; i < m / 2; i++)
        inv_freq[i] = pow((double)base, -2.0 * (double)i / (double)m);
}

void hm__rope_table(float *cs, float *sn, size_t m, uint32_t pos, const double *inv_freq)
{
    size_t i;
    for (i = 0; i < m / 2; i++) {
        double ang = (double)pos * inv_freq[i];
        cs[i] = (float)cos(ang);
        sn[i] = (float)sin(ang);
    }
}

void hm__rope_apply(float *u, size_t m, const float *cs, const float *sn)
{
    size_t i, half = m / 2;
    for (i = 0; i < half; i++) {
        float a = u[i], b = u[i + half];
        u[i] = a * cs[i] - b * sn[i];
        u[i + half] = a * sn[i] + b * cs[i];
    }
}

void hm__rope(float *u, size_t m, uint32_t pos, const double *inv_freq)
{
    size_t i, half = m / 2;
    for (i = 0; i < half; i++) {
        double ang = (double)pos * inv_freq[i];
        float cs = (float)cos(ang), sn = (float)sin(ang);
        float a = u[i], b = u[i + half];
        u[i] = a * cs - b * sn;
        u[i + half] = a * sn + b * cs;
    }
}

void hm__softmax(float *x, size_t n)
{
    float mx, sum = 0.0f, inv;
    size_t i;
    if (n == 0)
        return;
    mx = x[0];
    for (i = 1; i < n; i++)
        if (x[i] > mx)
            mx = x[i];
    for (i = 0; i < n; i++) {
        x[i] = expf(x[i] - mx);
        sum += x[i];
    }
    inv = 1.0f / sum;
    for (i = 0; i < n; i++)
        x[i] *= inv;
}

float hm__silu(float z)
{
    return z / (1.0f + expf(-z));
}

void hm__swiglu(float *g, const float *u, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++)
        g[i] = hm__silu(g[i]) * u[i];
}
