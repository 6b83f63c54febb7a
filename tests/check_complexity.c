/* check_complexity.c - estimator features, controller, fallback and the window policy
 * (spec 7, 8, 12.4) against straightforward float64 reimplementations. */
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../engine/internal.h"
#include "hm/alloc.h"
#include "hm/engine.h"
#include "hm/gguf.h"
#include "hm/model.h"
#include "hm/tokenizer.h"
#include "testutil.h"

#define V 300

/* ---- A small in-memory model ------------------------------------------------------- */

struct tm {
    struct hm_model m;
    float *embd;          /* V x d f32 (the values, also when stored quantized) */
    void *embd_store;     /* what m.tok_embd points at */
    struct hm_gguf *g;    /* keeps the tokenizer's source alive */
    int32_t byte_id[256]; /* token whose decoded bytes are exactly that byte */
    float fc1_w[16 * 4], fc1_b[16], fc2_w[16], fc2_b[1];
};

static void mat_init(struct hm_mat *M, enum hm_dtype type, uint32_t rows, uint32_t cols,
                     const void *data)
{
    M->type = type;
    M->rows = rows;
    M->cols = cols;
    M->n_mat = 1;
    M->row_bytes = hm_dtype_row_bytes(type, cols);
    M->mat_bytes = M->row_bytes * rows;
    M->data = data;
}

/* d columns, estimator window wc, f32 or q8_0 embeddings, with or without tokenizer. */
static struct tm *tm_new(uint32_t d, uint32_t wc, enum hm_dtype type, bool with_tok)
{
    struct tm *t = hm_calloc(1, sizeof(*t));
    uint32_t i;

    ck_assert_ptr_nonnull(t);
    hm_test_rng_seed(12345 + d + wc);
    t->embd = hm_malloc(sizeof(float) * V * d);
    for (i = 0; i < V * d; i++)
        t->embd[i] = hm_test_rndf();
    if (type == HM_DTYPE_F32) {
        t->embd_store = t->embd;
    } else {
        size_t rb = hm_dtype_row_bytes(type, d);
        t->embd_store = hm_malloc(rb * V);
        for (i = 0; i < V; i++) {
            /* store quantized, keep the dequantized values as the truth */
            hm_quantize_row(type, t->embd + (size_t)i * d, (uint8_t *)t->embd_store + i * rb, d);
            hm_dequantize_row(type, (uint8_t *)t->embd_store + i * rb, t->embd + (size_t)i * d, d);
        }
    }
    hm_hparams_defaults(&t->m.hp);
    t->m.hp.n_vocab = V;
    t->m.hp.d = d;
    t->m.hp.n_ctx = 1000;
    t->m.hp.complexity_window = wc;
    mat_init(&t->m.tok_embd, type, V, d, t->embd_store);
    if (with_tok)
        t->m.tok = hm_test_byte_tok(V, &t->g, t->byte_id);
    for (i = 0; i < 64; i++)
        t->fc1_w[i] = 2 * hm_test_rndf();
    for (i = 0; i < 16; i++) {
        t->fc1_b[i] = hm_test_rndf();
        t->fc2_w[i] = 2 * hm_test_rndf();
    }
    t->fc2_b[0] = 0.1f;
    return t;
}

static void tm_free(struct tm *t)
{
    hm_tokenizer_free(t->m.tok);
    hm_gguf_free(t->g);
    if (t->embd_store != t->embd)
        hm_free(t->embd_store);
    hm_free(t->embd);
    hm_free(t);
}

static void use_ctrl(struct tm *t)
{
    t->m.features |= HM_FEAT_CTRL;
    t->m.ctrl_fc1_w = t->fc1_w;
    t->m.ctrl_fc1_b = t->fc1_b;
    t->m.ctrl_fc2_w = t->fc2_w;
    t->m.ctrl_fc2_b = t->fc2_b;
}

/* Token ids for the bytes of s (one token a byte). */
static uint32_t ids_of(const struct tm *t, const char *s, int32_t *ids)
{
    uint32_t n = 0;
    for (; *s; s++)
        ids[n++] = t->byte_id[(uint8_t)*s];
    return n;
}

/* ---- Reference (float64, written from the spec text) -------------------------------- */

static void ref_features(const struct tm *t, const int32_t *toks, uint32_t pos, double out[4])
{
    const struct hm_model *m = &t->m;
    uint32_t d = m->hp.d, wc = m->hp.complexity_window;
    uint32_t n = pos + 1 < wc ? pos + 1 : wc, i, k;
    const int32_t *w = toks + pos + 1 - n;
    double H = 0, num = 0, den = 0;
    int depth = 0, deepest = 0, n_punct = 0;
    uint32_t *hist = hm_calloc(V, sizeof(*hist));

    for (i = 0; i < n; i++)
        hist[w[i]]++;
    for (k = 0; k < V; k++) {
        if (hist[k]) {
            double p = (double)hist[k] / n;
            H += -(p * log(p));
        }
    }
    hm_free(hist);
    /* per column: mean, then the two sums over the window, added to num / den */
    for (k = 0; k < d; k++) {
        double mu = 0, pn = 0, pd = 0;
        for (i = 0; i < n; i++)
            mu += t->embd[(size_t)w[i] * d + k];
        mu /= n;
        for (i = 0; i < n; i++) {
            double v = t->embd[(size_t)w[i] * d + k];
            pn += (v - mu) * (v - mu);
            pd += v * v;
        }
        num += pn;
        den += pd;
    }
    for (i = 0; i < n; i++) {
        size_t len = 0, j;
        const uint8_t *b = m->tok ? hm_tokenizer_token_bytes(m->tok, w[i], &len) : NULL;
        int has = 0;
        for (j = 0; j < len; j++) {
            if (strchr("([{", b[j]) && b[j])
                deepest = ++depth > deepest ? depth : deepest;
            if (strchr(")]}", b[j]) && b[j] && depth > 0)
                depth--;
            if (strchr(",;:()[]{}\"'", b[j]) && b[j])
                has = 1;
        }
        n_punct += has;
    }
    out[0] = n > 1 ? H / log(n) : 0;
    out[1] = n > 1 && den > 0 ? num / den : 0;
    out[2] = n ? 0.5 * (deepest < 8 ? deepest : 8) / 8.0 + 0.5 * (double)n_punct / n : 0;
    out[3] = log(pos + 2.0) / log(m->hp.n_ctx + 1.0);
}

static void check_all_positions(const struct tm *t, const int32_t *toks, uint32_t n)
{
    uint32_t pos;
    for (pos = 0; pos < n; pos++) {
        float f[4];
        double r[4];
        hm__complexity_features(&t->m, toks, pos, f);
        ref_features(t, toks, pos, r);
        for (int i = 0; i < 4; i++)
            ck_assert_msg(f[i] == (float)r[i], "pos %u feature %d: %.9g vs %.9g", pos, i,
                          (double)f[i], r[i]);
    }
}

/* ---- core ------------------------------------------------------------------------- */

START_TEST(test_entropy_known)
{
    struct tm *t = tm_new(8, 8, HM_DTYPE_F32, false);
    int32_t same[4] = {5, 5, 5, 5}, all4[4] = {1, 2, 3, 4};
    int32_t pairs[8] = {1, 1, 2, 2, 3, 3, 4, 4}, mix[8] = {7, 7, 7, 7, 7, 7, 9, 9};
    float f[4];

    hm__complexity_features(&t->m, same, 3, f);
    ck_assert(f[0] == 0.0f);
    ck_assert(f[1] == 0.0f); /* every row equals the mean */
    hm__complexity_features(&t->m, all4, 3, f);
    ck_assert_float_eq_tol(f[0], 1.0f, 1e-6f);
    hm__complexity_features(&t->m, pairs, 7, f);
    ck_assert_float_eq_tol(f[0], 2.0f / 3.0f, 1e-6f); /* ln 4 / ln 8 */
    hm__complexity_features(&t->m, mix, 7, f);
    ck_assert_float_eq_tol(f[0], (float)((-(0.75 * log(0.75)) - 0.25 * log(0.25)) / log(8.0)),
                           1e-6f);
    /* n = 1: e = s = 0 */
    hm__complexity_features(&t->m, all4, 0, f);
    ck_assert(f[0] == 0.0f && f[1] == 0.0f && f[2] == 0.0f);
    ck_assert(f[3] == (float)(log(2.0) / log(1001.0)));
    tm_free(t);
}
END_TEST

START_TEST(test_density_known)
{
    struct tm *t = tm_new(8, 4, HM_DTYPE_F32, false);
    int32_t seq[2] = {3, 4};
    float f[4];
    uint32_t k;

    /* e_4 = -e_3: the mean is 0, so s = 1 exactly */
    for (k = 0; k < 8; k++)
        t->embd[4 * 8 + k] = -t->embd[3 * 8 + k];
    hm__complexity_features(&t->m, seq, 1, f);
    ck_assert(f[1] == 1.0f);
    ck_assert(f[0] == 1.0f); /* two distinct ids out of two */
    /* all-zero rows: denominator 0 gives s = 0 */
    for (k = 0; k < 8; k++)
        t->embd[3 * 8 + k] = t->embd[4 * 8 + k] = 0.0f;
    hm__complexity_features(&t->m, seq, 1, f);
    ck_assert(f[1] == 0.0f);
    tm_free(t);
}
END_TEST

START_TEST(test_features_random_windows)
{
    /* window edges t < W_c and t >= W_c, several W_c, d with a partial 32-column chunk */
    static const uint32_t wcs[] = {1, 2, 5, 16, 64};
    int32_t toks[80];
    uint32_t i, j;

    for (j = 0; j < sizeof(wcs) / sizeof(wcs[0]); j++) {
        struct tm *t = tm_new(40, wcs[j], HM_DTYPE_F32, true);
        for (i = 0; i < 80; i++)
            toks[i] = (int32_t)(hm_test_rnd() % (i % 3 ? 12 : V)); /* repeats and rare ids */
        check_all_positions(t, toks, 80);
        tm_free(t);
    }
}
END_TEST

START_TEST(test_features_stored_types)
{
    /* embeddings stored as q8_0 / f16 / bf16 (d = 40 has a partial chunk for f16, bf16) */
    static const enum hm_dtype types[] = {HM_DTYPE_Q8_0, HM_DTYPE_F16, HM_DTYPE_BF16};
    static const uint32_t dims[] = {96, 40, 40};
    int32_t toks[30];
    uint32_t i, j;

    for (j = 0; j < 3; j++) {
        struct tm *t = tm_new(dims[j], 10, types[j], true);
        for (i = 0; i < 30; i++)
            toks[i] = (int32_t)(hm_test_rnd() % V);
        check_all_positions(t, toks, 30);
        tm_free(t);
    }
}
END_TEST

START_TEST(test_syntax_depth)
{
    struct tm *t = tm_new(8, 64, HM_DTYPE_F32, true);
    int32_t ids[64];
    float f[4];
    uint32_t n;

    n = ids_of(t, "f(a[b{c}])", ids);
    hm__complexity_features(&t->m, ids, n - 1, f);
    ck_assert(f[2] == (float)(0.5 * 3 / 8.0 + 0.5 * 6 / 10.0));
    /* closers never take the depth below 0 */
    n = ids_of(t, "))((", ids);
    hm__complexity_features(&t->m, ids, n - 1, f);
    ck_assert(f[2] == (float)(0.5 * 2 / 8.0 + 0.5));
    n = ids_of(t, ")))(", ids);
    hm__complexity_features(&t->m, ids, n - 1, f);
    ck_assert(f[2] == (float)(0.5 * 1 / 8.0 + 0.5));
    /* deeper than 8 counts as 8 */
    n = ids_of(t, "((((((((((", ids);
    hm__complexity_features(&t->m, ids, n - 1, f);
    ck_assert(f[2] == 1.0f);
    /* quotes, colon etc count for q but not for D */
    n = ids_of(t, "a,b;c:d\"e'", ids);
    hm__complexity_features(&t->m, ids, n - 1, f);
    ck_assert(f[2] == (float)(0.5 * 5 / 10.0));
    /* no punctuation at all; a control token (no bytes) counts in n */
    n = ids_of(t, "abc", ids);
    ids[n++] = hm_tokenizer_bos(t->m.tok) >= 0 ? hm_tokenizer_bos(t->m.tok) : 299;
    ids[n++] = t->byte_id['('];
    hm__complexity_features(&t->m, ids, n - 1, f);
    ck_assert(f[2] == (float)(0.5 * 1 / 8.0 + 0.5 * 1 / 5.0));
    tm_free(t);
}
END_TEST

START_TEST(test_syntax_window_start)
{
    /* the scan starts at the window's first token: openers before it do not count */
    struct tm *t = tm_new(8, 4, HM_DTYPE_F32, true);
    int32_t ids[16];
    float f[4];
    uint32_t n = ids_of(t, "((((ab)", ids); /* window at t=6: "(ab)" */

    hm__complexity_features(&t->m, ids, n - 1, f);
    ck_assert(f[2] == (float)(0.5 * 1 / 8.0 + 0.5 * 2 / 4.0));
    hm__complexity_features(&t->m, ids, 3, f); /* "((((" */
    ck_assert(f[2] == (float)(0.5 * 4 / 8.0 + 0.5));
    hm__complexity_features(&t->m, ids, 1, f); /* t < W_c: "((" */
    ck_assert(f[2] == (float)(0.5 * 2 / 8.0 + 0.5));
    tm_free(t);
}
END_TEST

START_TEST(test_no_tokenizer)
{
    /* without a tokenizer no token has bytes: y = 0 */
    struct tm *t = tm_new(8, 8, HM_DTYPE_F32, false);
    int32_t ids[4] = {'(', '(', ',', '('};
    float f[4];

    hm__complexity_features(&t->m, ids, 3, f);
    ck_assert(f[2] == 0.0f);
    tm_free(t);
}
END_TEST

/* float32 controller, as the spec's text says, in index order */
static float ref_ctrl(const struct tm *t, const float f[4])
{
    float z[16], acc = 0;
    for (int j = 0; j < 16; j++) {
        float a = 0;
        for (int i = 0; i < 4; i++)
            a += t->fc1_w[j * 4 + i] * f[i];
        a += t->fc1_b[j];
        z[j] = a * (1.0f / (1.0f + expf(-a)));
    }
    for (int j = 0; j < 16; j++)
        acc += t->fc2_w[j] * z[j];
    acc += t->fc2_b[0];
    return 1.0f / (1.0f + expf(-acc));
}

START_TEST(test_controller_vs_fallback)
{
    struct tm *t = tm_new(16, 8, HM_DTYPE_F32, true);
    int32_t toks[40];
    float f[4], c_fb, c_ctrl;
    uint32_t i, n_diff = 0;

    for (i = 0; i < 40; i++)
        toks[i] = (int32_t)(hm_test_rnd() % V);
    for (i = 0; i < 40; i++) {
        hm__complexity_features(&t->m, toks, i, f);
        t->m.features &= ~(uint32_t)HM_FEAT_CTRL;
        c_fb = hm__complexity_at(&t->m, toks, i);
        ck_assert(c_fb == hm__complexity_from_features(&t->m, f));
        {
            const float *wt = t->m.hp.complexity_weights;
            float e = wt[0] * f[0];
            e += wt[1] * f[1];
            e += wt[2] * f[2];
            e = e < 0 ? 0 : e > 1 ? 1 : e;
            ck_assert(c_fb == e);
        }
        use_ctrl(t);
        c_ctrl = hm__complexity_at(&t->m, toks, i);
        ck_assert(c_ctrl == ref_ctrl(t, f));
        ck_assert(c_ctrl >= 0.0f && c_ctrl <= 1.0f);
        n_diff += c_ctrl != c_fb;
    }
    ck_assert_uint_gt(n_diff, 30);
    tm_free(t);
}
END_TEST

/* ---- limits ------------------------------------------------------------------------ */

START_TEST(test_fallback_clamps)
{
    struct tm *t = tm_new(8, 8, HM_DTYPE_F32, false);
    float f[4] = {1.0f, 1.0f, 1.0f, 0.5f};

    t->m.hp.complexity_weights[0] = 0.6f;
    t->m.hp.complexity_weights[1] = 0.6f;
    t->m.hp.complexity_weights[2] = 0.0f;
    ck_assert(hm__complexity_from_features(&t->m, f) == 1.0f);
    t->m.hp.complexity_weights[0] = -2.0f;
    ck_assert(hm__complexity_from_features(&t->m, f) == 0.0f);
    t->m.hp.complexity_weights[0] = NAN;
    ck_assert(hm__complexity_from_features(&t->m, f) == 0.0f);
    t->m.hp.complexity_weights[0] = 0.25f;
    t->m.hp.complexity_weights[1] = 0.25f;
    ck_assert(hm__complexity_from_features(&t->m, f) == 0.5f);
    tm_free(t);
}
END_TEST

START_TEST(test_long_window_histogram)
{
    /* W_c above the on-stack sort size uses the scan path: same order, same results */
    struct tm *t = tm_new(8, 1500, HM_DTYPE_F32, false);
    int32_t *toks = hm_malloc(sizeof(int32_t) * 1600);
    uint32_t i, pos[] = {1023, 1024, 1025, 1499, 1599};

    for (i = 0; i < 1600; i++)
        toks[i] = (int32_t)(hm_test_rnd() % 40 + (i % 7 == 0 ? 200 : 0));
    for (i = 0; i < sizeof(pos) / sizeof(pos[0]); i++) {
        float f[4];
        double r[4];
        hm__complexity_features(&t->m, toks, pos[i], f);
        ref_features(t, toks, pos[i], r);
        for (int k = 0; k < 4; k++)
            ck_assert(f[k] == (float)r[k]);
    }
    hm_free(toks);
    tm_free(t);
}
END_TEST

static struct hm_model window_model(void)
{
    struct hm_model m;
    memset(&m, 0, sizeof(m));
    m.hp.window_min = 16;
    m.hp.window_max = 200;
    m.hp.window_gain = 100;
    m.hp.long_ctx_start = 64;
    m.hp.long_ctx_step = 16;
    m.hp.long_ctx_penalty = 8;
    return m;
}

START_TEST(test_window_formula)
{
    struct hm_model m = window_model();

    ck_assert_int_eq(hm_window_policy(&m, 0.0, 10), 16);
    ck_assert_int_eq(hm_window_policy(&m, 0.5, 10), 66);
    ck_assert_int_eq(hm_window_policy(&m, 1.0, 10), 116);
    ck_assert_int_eq(hm_window_policy(&m, 0.999, 10), 115);
    /* floor taken in float64: 0.29 * 100 = 28.999999999999996 */
    ck_assert_int_eq(hm_window_policy(&m, 0.29, 10), 16 + 28);
    /* long-context penalty: floor((N - L0) / L_step) steps of w_pen */
    ck_assert_int_eq(hm_window_policy(&m, 1.0, 64), 116);
    ck_assert_int_eq(hm_window_policy(&m, 1.0, 79), 116);
    ck_assert_int_eq(hm_window_policy(&m, 1.0, 80), 108);
    ck_assert_int_eq(hm_window_policy(&m, 1.0, 100), 100);
    ck_assert_int_eq(hm_window_policy(&m, 1.0, 0), 116); /* N < L0: no penalty, no bonus */
    ck_assert_int_eq(hm_window_policy(&m, 1.0, 63), 116);
}
END_TEST

START_TEST(test_window_clamps)
{
    struct hm_model m = window_model();

    /* negative before the clamp */
    ck_assert_int_eq(hm_window_policy(&m, 0.0, 1000), 16);
    ck_assert_int_eq(hm_window_policy(&m, -0.5, 10), 16);
    ck_assert_int_eq(hm_window_policy(&m, 1.0, 1u << 31), 16);
    ck_assert_int_eq(hm_window_policy(&m, 1.0, UINT64_MAX), 16);
    /* upper clamp */
    m.hp.window_gain = 1000;
    ck_assert_int_eq(hm_window_policy(&m, 1.0, 10), 200);
    ck_assert_int_eq(hm_window_policy(&m, 0.1, 10), 116);
    ck_assert_int_eq(hm_window_policy(&m, 1e300, 10), 200);
    ck_assert_int_eq(hm_window_policy(&m, NAN, 10), 16);
    /* L_step = 0: no penalty at all */
    m.hp.window_gain = 100;
    m.hp.long_ctx_step = 0;
    ck_assert_int_eq(hm_window_policy(&m, 1.0, 1000000), 116);
    /* penalty of 0 */
    m.hp.long_ctx_step = 1;
    m.hp.long_ctx_penalty = 0;
    ck_assert_int_eq(hm_window_policy(&m, 1.0, 1000000), 116);
    /* huge penalty saturates instead of overflowing */
    m.hp.long_ctx_penalty = UINT32_MAX;
    ck_assert_int_eq(hm_window_policy(&m, 1.0, UINT64_MAX), 16);
}
END_TEST

START_TEST(test_window_defaults)
{
    struct hm_model m;

    memset(&m, 0, sizeof(m));
    hm_hparams_defaults(&m.hp);
    ck_assert_int_eq(hm_window_policy(&m, 1.0, 100), 1536);
    ck_assert_int_eq(hm_window_policy(&m, 0.0, 100), 512);
    ck_assert_int_eq(hm_window_policy(&m, 1.0, 4096 + 1024 * 3), 1536 - 3 * 128);
}
END_TEST

static Suite *complexity_suite(void)
{
    Suite *s = suite_create("complexity");
    TCase *tc = tcase_create("core");

    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_entropy_known);
    tcase_add_test(tc, test_density_known);
    tcase_add_test(tc, test_features_random_windows);
    tcase_add_test(tc, test_features_stored_types);
    tcase_add_test(tc, test_syntax_depth);
    tcase_add_test(tc, test_syntax_window_start);
    tcase_add_test(tc, test_no_tokenizer);
    tcase_add_test(tc, test_controller_vs_fallback);
    tcase_add_test(tc, test_window_formula);
    tcase_add_test(tc, test_window_defaults);
    suite_add_tcase(s, tc);
    tc = tcase_create("limits");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_fallback_clamps);
    tcase_add_test(tc, test_long_window_histogram);
    tcase_add_test(tc, test_window_clamps);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return hm_test_run(complexity_suite(), CK_NORMAL);
}
