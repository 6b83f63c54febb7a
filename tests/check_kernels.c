/* check_kernels.c - the compute pool and the numeric kernels against plain references:
 * dot order, RMSNorm with gain, RoPE, softmax, SwiGLU, and the matrix multiply in f32, f16,
 * bf16 and q8_0 (close to a naive product, bit-identical across n, jobs and threads). */
#include <check.h>
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "../engine/kernels.h"
#include "hm/alloc.h"
#include "hm/gguf.h"
#include "hm/pool.h"
#include "internal.h"
#include "testutil.h"

static float frand(void)
{
    return (float)rand() / (float)RAND_MAX * 2.0f - 1.0f;
}

/* ---- pool --------------------------------------------------------------------------------- */

struct count_ctx {
    atomic_int *hits;
    atomic_int bad_thread;
    unsigned n_threads;
};

static void count_task(void *vc, size_t i, unsigned thread)
{
    struct count_ctx *c = vc;
    atomic_fetch_add(&c->hits[i], 1);
    if (thread >= c->n_threads)
        atomic_store(&c->bad_thread, 1);
}

START_TEST(test_pool)
{
    unsigned nts[] = {1, 2, 4};
    size_t k, i, run;
    for (k = 0; k < 3; k++) {
        struct hm_pool *p;
        struct count_ctx c;
        ck_assert_int_eq(hm_pool_new(nts[k], &p), HM_OK);
        ck_assert_uint_eq(hm_pool_n_threads(p), nts[k]);
        c.hits = calloc(1000, sizeof(*c.hits));
        atomic_init(&c.bad_thread, 0);
        c.n_threads = nts[k];
        for (run = 0; run < 200; run++) {
            size_t n = run % 7 == 0 ? 1000 : run % 13;
            hm_pool_run(p, n, count_task, &c);
            for (i = 0; i < n; i++) {
                ck_assert_int_eq(atomic_load(&c.hits[i]), 1);
                atomic_store(&c.hits[i], 0);
            }
        }
        ck_assert_int_eq(atomic_load(&c.bad_thread), 0);
        free(c.hits);
        hm_pool_free(p);
    }
    ck_assert_uint_ge(hm_cpu_count(), 1);
    hm_pool_free(NULL);
}
END_TEST

START_TEST(test_pool_oom)
{
    struct hm_pool *p = (void *)1;
    long n;
    for (n = 1;; n++) {
        int rc;
        hm_alloc_fail_after(n);
        rc = hm_pool_new(3, &p);
        hm_alloc_fail_after(0);
        if (rc == HM_OK)
            break;
        ck_assert_int_eq(rc, HM_ENOMEM);
        ck_assert_ptr_null(p);
    }
    hm_pool_free(p);
}
END_TEST

/* ---- vector kernels ---------------------------------------------------------------------- */

START_TEST(test_dot_order)
{
    size_t ns[] = {0, 1, 7, 8, 9, 64, 100, 333};
    size_t k, i, j;
    for (k = 0; k < sizeof(ns) / sizeof(ns[0]); k++) {
        size_t n = ns[k], n8 = n / 8 * 8;
        float a[333], b[333], l[8] = {0}, want;
        for (i = 0; i < n; i++) {
            a[i] = frand();
            b[i] = frand();
        }
        for (i = 0; i < n8; i += 8)
            for (j = 0; j < 8; j++)
                l[j] = hm__cpu_fast() ? fmaf(a[i + j], b[i + j], l[j]) : l[j] + a[i + j] * b[i + j];
        want = ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]));
        for (i = n8; i < n; i++)
            want += a[i] * b[i];
        ck_assert(hm__dot(a, b, n) == want);
    }
}
END_TEST

/* The batched forms used by attention are the same arithmetic as single calls. */
START_TEST(test_dot_axpy_rows)
{
    size_t lens[] = {1, 8, 13, 32, 64, 100}, k, i;
    for (k = 0; k < sizeof(lens) / sizeof(lens[0]); k++) {
        size_t len = lens[k], n = 37, stride = len + 5;
        float *rows = malloc(sizeof(float) * n * stride), q[100], w[37], out[37];
        float y1[100], y2[100];
        for (i = 0; i < n * stride; i++)
            rows[i] = frand();
        for (i = 0; i < len; i++)
            q[i] = y1[i] = y2[i] = frand();
        for (i = 0; i < n; i++)
            w[i] = frand();
        hm__dot_rows(q, rows, stride, n, len, out);
        for (i = 0; i < n; i++)
            ck_assert(out[i] == hm__dot(q, rows + i * stride, len));
        hm__axpy_rows(y1, w, rows, stride, n, len);
        for (i = 0; i < n; i++)
            hm__axpy(y2, w[i], rows + i * stride, len);
        ck_assert(memcmp(y1, y2, sizeof(float) * len) == 0);
        free(rows);
    }
}
END_TEST

START_TEST(test_rmsnorm)
{
    float x[40], g[40], b[40], y[40];
    float cs[] = {0.0f, 0.3f, 1.0f};
    size_t i, k;
    for (i = 0; i < 40; i++) {
        x[i] = frand() * 3;
        g[i] = 1 + frand() * 0.2f;
        b[i] = frand();
    }
    for (k = 0; k < 3; k++) {
        double ss = 0;
        for (i = 0; i < 40; i++)
            ss += (double)x[i] * x[i];
        hm__rmsnorm(y, x, 40, g, b, cs[k], 1e-5f);
        for (i = 0; i < 40; i++) {
            double want = x[i] / sqrt(ss / 40 + 1e-5) * (g[i] + (2.0 * cs[k] - 1) * b[i]);
            ck_assert_double_eq_tol(y[i], want, 1e-5);
        }
    }
    /* no gain vectors: plain normalisation; in place */
    hm__rmsnorm(x, x, 40, NULL, NULL, 0.7f, 0.0f);
    {
        double ss = 0;
        for (i = 0; i < 40; i++)
            ss += (double)x[i] * x[i];
        ck_assert_double_eq_tol(ss / 40, 1.0, 1e-5);
    }
}
END_TEST

START_TEST(test_rope)
{
    float u[16], v[16];
    double inv[8];
    uint32_t pos = 37;
    size_t i;
    for (i = 0; i < 16; i++)
        u[i] = v[i] = frand();
    hm__rope_freqs(inv, 16, 10000.0f);
    hm__rope(u, 16, pos, inv);
    for (i = 0; i < 8; i++) {
        double th = pos * pow(10000.0, -2.0 * i / 16);
        ck_assert_double_eq_tol(u[i], v[i] * cos(th) - v[i + 8] * sin(th), 1e-6);
        ck_assert_double_eq_tol(u[i + 8], v[i] * sin(th) + v[i + 8] * cos(th), 1e-6);
    }
    /* the two-part form is the same arithmetic */
    {
        float w[16], cs[8], sn[8];
        memcpy(w, v, sizeof(w));
        hm__rope_table(cs, sn, 16, pos, inv);
        hm__rope_apply(w, 16, cs, sn);
        ck_assert(memcmp(w, u, sizeof(w)) == 0);
    }
    /* position 0 is the identity */
    memcpy(u, v, sizeof(u));
    hm__rope(u, 16, 0, inv);
    ck_assert(memcmp(u, v, sizeof(u)) == 0);
}
END_TEST

START_TEST(test_softmax_swiglu)
{
    float x[10] = {1000.0f, 999.0f, -5.0f, 0, 0, 3, 1000.0f, -1e30f, 2, 1};
    float y[10];
    double sum = 0, mx = 1000.0, z = 0;
    size_t i;
    for (i = 0; i < 10; i++)
        z += exp((double)x[i] - mx);
    memcpy(y, x, sizeof(x));
    hm__softmax(y, 10);
    for (i = 0; i < 10; i++) {
        ck_assert_double_eq_tol(y[i], exp((double)x[i] - mx) / z, 1e-7);
        sum += y[i];
    }
    ck_assert_double_eq_tol(sum, 1.0, 1e-6);
    for (i = 0; i < 10; i++) {
        float g = frand() * 6, u = frand() * 2, gg = g;
        hm__swiglu(&gg, &u, 1);
        ck_assert_double_eq_tol(gg, g / (1 + exp(-(double)g)) * u, 1e-6);
    }
}
END_TEST

/* ---- matmul ---------------------------------------------------------------------------------- */

struct tmat {
    struct hm_mat W;
    void *data;
    float *deq; /* n_mat * rows x cols, dequantized */
};

static void tmat_new(struct tmat *t, enum hm_dtype type, uint32_t n_mat, uint32_t rows,
                     uint32_t cols)
{
    float *row = malloc(sizeof(float) * cols);
    size_t r;
    t->W.type = type;
    t->W.rows = rows;
    t->W.cols = cols;
    t->W.n_mat = n_mat;
    t->W.row_bytes = hm_dtype_row_bytes(type, cols);
    t->W.mat_bytes = t->W.row_bytes * rows;
    t->data = malloc(t->W.mat_bytes * n_mat);
    t->deq = malloc(sizeof(float) * n_mat * rows * cols);
    for (r = 0; r < (size_t)n_mat * rows; r++) {
        uint32_t k;
        for (k = 0; k < cols; k++)
            row[k] = frand();
        hm_quantize_row(type, row, (uint8_t *)t->data + r * t->W.row_bytes, cols);
        hm_dequantize_row(type, (uint8_t *)t->data + r * t->W.row_bytes, t->deq + r * cols, cols);
    }
    t->W.data = t->data;
    free(row);
}

static void tmat_free(struct tmat *t)
{
    free(t->data);
    free(t->deq);
}

static void check_matmul(enum hm_dtype type, uint32_t rows, uint32_t cols)
{
    struct tmat t;
    size_t nmax = 50, ns[] = {1, 2, 3, 4, 7, 50}, k, i, o;
    float *x = malloc(sizeof(float) * nmax * (cols + 3));
    float *ref = malloc(sizeof(float) * nmax * rows);
    float *y = malloc(sizeof(float) * nmax * (rows + 5));
    float *row = malloc(sizeof(float) * cols);
    struct hm_pool *pools[3];
    size_t ldx = cols + 3, ldy = rows + 5;

    tmat_new(&t, type, 2, rows, cols);
    for (i = 0; i < nmax * ldx; i++)
        x[i] = frand();
    ck_assert_int_eq(hm_pool_new(1, &pools[0]), HM_OK);
    ck_assert_int_eq(hm_pool_new(2, &pools[1]), HM_OK);
    ck_assert_int_eq(hm_pool_new(4, &pools[2]), HM_OK);
    /* reference: matrix 1 of the stack, one row at a time, single thread */
    for (i = 0; i < nmax; i++)
        hm__matmul(&t.W, 1, x + i * ldx, 1, ldx, ref + i * rows, rows, NULL);
    /* close to the naive product of the dequantized matrix */
    for (i = 0; i < nmax; i++)
        for (o = 0; o < rows; o++) {
            double s = 0;
            uint32_t c;
            for (c = 0; c < cols; c++)
                s += (double)t.deq[((size_t)rows + o) * cols + c] * x[i * ldx + c];
            ck_assert_double_eq_tol(ref[i * rows + o], s, 1e-4 * (1 + sqrt((double)cols)));
        }
    /* hm__mat_row dequantizes exactly */
    hm__mat_row(&t.W, 1, rows - 1, row);
    ck_assert(memcmp(row, t.deq + ((size_t)2 * rows - 1) * cols, sizeof(float) * cols) == 0);
    /* bit-identical for any n, any offset in the batch and any thread count */
    for (k = 0; k < sizeof(ns) / sizeof(ns[0]); k++) {
        size_t n = ns[k], p;
        for (p = 0; p < 3; p++) {
            size_t off = (k * 3 + p) % (nmax - n + 1);
            memset(y, 0xff, sizeof(float) * nmax * ldy);
            hm__matmul(&t.W, 1, x + off * ldx, n, ldx, y, ldy, pools[p]);
            for (i = 0; i < n; i++)
                ck_assert(memcmp(y + i * ldy, ref + (off + i) * rows, sizeof(float) * rows) == 0);
            ck_assert(isnan(y[rows])); /* nothing written past the row */
        }
    }
    /* several jobs in one run give the same rows as one at a time */
    {
        struct hm__mm_job jobs[3] = {
            {&t.W, 1, x, 5, ldx, y, ldy},
            {&t.W, 0, x, 0, ldx, NULL, ldy}, /* empty jobs are skipped */
            {&t.W, 1, x + 20 * ldx, 9, ldx, y + 5 * ldy, ldy},
        };
        hm__matmul_jobs(jobs, 3, pools[1], false);
        for (i = 0; i < 5; i++)
            ck_assert(memcmp(y + i * ldy, ref + i * rows, sizeof(float) * rows) == 0);
        for (i = 0; i < 9; i++)
            ck_assert(memcmp(y + (5 + i) * ldy, ref + (20 + i) * rows, sizeof(float) * rows) == 0);
    }
    /* the BLAS path (f32 only; others fall back) is close */
    hm__matmul_jobs(&(struct hm__mm_job){&t.W, 1, x, nmax, ldx, y, ldy}, 1, pools[1], true);
    for (i = 0; i < nmax; i++)
        for (o = 0; o < rows; o++)
            ck_assert_double_eq_tol(y[i * ldy + o], ref[i * rows + o],
                                    1e-4 * (1 + sqrt((double)cols)));
    for (k = 0; k < 3; k++)
        hm_pool_free(pools[k]);
    tmat_free(&t);
    free(x);
    free(ref);
    free(y);
    free(row);
}

START_TEST(test_matmul_f32)
{
    check_matmul(HM_DTYPE_F32, 37, 45);    /* tails everywhere */
    check_matmul(HM_DTYPE_F32, 130, 2100); /* several column chunks */
    check_matmul(HM_DTYPE_F32, 1, 8);
}
END_TEST

START_TEST(test_matmul_f16)
{
    check_matmul(HM_DTYPE_F16, 33, 70);
    check_matmul(HM_DTYPE_F16, 64, 1040);
}
END_TEST

START_TEST(test_matmul_bf16)
{
    check_matmul(HM_DTYPE_BF16, 29, 51);
    check_matmul(HM_DTYPE_BF16, 64, 256);
}
END_TEST

START_TEST(test_matmul_q8_0)
{
    check_matmul(HM_DTYPE_Q8_0, 35, 96);
    check_matmul(HM_DTYPE_Q8_0, 70, 2080);
}
END_TEST

static Suite *kernels_suite(void)
{
    Suite *s = suite_create("kernels");
    TCase *core = tcase_create("core");
    TCase *oom = tcase_create("oom");
    tcase_set_timeout(core, 60);
    tcase_add_test(core, test_pool);
    tcase_add_test(core, test_dot_order);
    tcase_add_test(core, test_dot_axpy_rows);
    tcase_add_test(core, test_rmsnorm);
    tcase_add_test(core, test_rope);
    tcase_add_test(core, test_softmax_swiglu);
    tcase_add_test(core, test_matmul_f32);
    tcase_add_test(core, test_matmul_f16);
    tcase_add_test(core, test_matmul_bf16);
    tcase_add_test(core, test_matmul_q8_0);
    tcase_add_test(oom, test_pool_oom);
    suite_add_tcase(s, core);
    suite_add_tcase(s, oom);
    return s;
}

int main(void)
{
    return hm_test_run(kernels_suite(), CK_ENV);
}
