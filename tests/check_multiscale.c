/* check_multiscale.c - phrase/sentence visibility, cross-scale attention against a
 * naive recomputation from scratch at every position, the 12.10 element count, OOM. */
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../engine/internal.h"
#include "../engine/kernels.h"
#include "hm/alloc.h"
#include "hm/engine.h"
#include "hm/gguf.h"
#include "hm/model.h"
#include "hm/tokenizer.h"
#include "testutil.h"

#define V 300

struct tm {
    struct hm_model m;
    uint32_t d, dx;
    float *embd, *xq, *xk, *xv, *xo, *scale; /* f32 values (dequantized if stored quantized) */
    void *store[5];                          /* quantized copies of embd, xq, xk, xv, xo */
    struct hm_gguf *g;
    int32_t byte_id[256];
};

/* rows x cols random values; stored as type (values replaced by their dequantized form). */
static float *rand_mat(struct hm_mat *M, enum hm_dtype type, uint32_t rows, uint32_t cols,
                       float scale, void **store)
{
    float *v = hm_malloc(sizeof(float) * rows * cols);
    size_t rb = hm_dtype_row_bytes(type, cols);
    uint32_t i;

    ck_assert_ptr_nonnull(v);
    for (i = 0; i < rows * cols; i++)
        v[i] = scale * hm_test_rndf();
    *store = NULL;
    if (type != HM_DTYPE_F32) {
        *store = hm_malloc(rb * rows);
        for (i = 0; i < rows; i++) {
            hm_quantize_row(type, v + (size_t)i * cols, (uint8_t *)*store + i * rb, cols);
            hm_dequantize_row(type, (uint8_t *)*store + i * rb, v + (size_t)i * cols, cols);
        }
    }
    M->type = type;
    M->rows = rows;
    M->cols = cols;
    M->n_mat = 1;
    M->row_bytes = rb;
    M->mat_bytes = rb * rows;
    M->data = *store ? *store : v;
    return v;
}

struct cfg {
    uint32_t d, dx, P, max_ph, max_se, max_sl;
    enum hm_dtype type;
    bool xscale, tok;
};

static struct tm *tm_new(const struct cfg *c)
{
    struct tm *t = hm_calloc(1, sizeof(*t));
    uint32_t i;

    ck_assert_ptr_nonnull(t);
    hm_test_rng_seed(777 + c->d * 31 + c->dx);
    t->d = c->d;
    t->dx = c->dx;
    hm_hparams_defaults(&t->m.hp);
    t->m.hp.n_vocab = V;
    t->m.hp.d = c->d;
    t->m.hp.cross_dim = c->dx;
    t->m.hp.n_ctx = 4096;
    t->m.hp.phrase_span = c->P;
    t->m.hp.max_phrases = c->max_ph;
    t->m.hp.max_sentences = c->max_se;
    t->m.hp.max_sentence_len = c->max_sl;
    /* scaled so that the scores are O(1) and the softmax is not saturated */
    t->embd = rand_mat(&t->m.tok_embd, c->type, V, c->d, 1.0f, &t->store[0]);
    t->xq = rand_mat(&t->m.xq, c->type, c->dx, c->d, 3.0f / sqrtf((float)c->d), &t->store[1]);
    t->xk = rand_mat(&t->m.xk, c->type, c->dx, c->d, 3.0f / sqrtf((float)c->d), &t->store[2]);
    t->xv = rand_mat(&t->m.xv, c->type, c->dx, c->d, 1.0f, &t->store[3]);
    t->xo = rand_mat(&t->m.xo, c->type, c->d, c->dx, 1.0f, &t->store[4]);
    t->scale = hm_malloc(sizeof(float) * 2 * c->dx);
    for (i = 0; i < 2 * c->dx; i++)
        t->scale[i] = hm_test_rndf();
    t->m.scale_embd = t->scale;
    if (c->xscale)
        t->m.features |= HM_FEAT_XSCALE;
    if (c->tok)
        t->m.tok = hm_test_byte_tok(V, &t->g, t->byte_id);
    return t;
}

static void tm_free(struct tm *t)
{
    hm_tokenizer_free(t->m.tok);
    hm_gguf_free(t->g);
    for (int i = 0; i < 5; i++)
        hm_free(t->store[i]);
    hm_free(t->embd);
    hm_free(t->xq);
    hm_free(t->xk);
    hm_free(t->xv);
    hm_free(t->xo);
    hm_free(t->scale);
    hm_free(t);
}

static uint32_t ids_of(const struct tm *t, const char *s, int32_t *ids)
{
    uint32_t n = 0;
    for (; *s; s++)
        ids[n++] = t->byte_id[(uint8_t)*s];
    return n;
}

/* ---- Naive reference: everything recomputed from the tokens at each position ------ */

/* The engine's kernels (their own tests check them): the reference recomputes the
 * representations from scratch, with the same arithmetic, so results must be identical. */
static float ref_dot(const float *a, const float *b, uint32_t n)
{
    return hm__dot(a, b, n);
}

static void ref_matvec(const struct hm_mat *W, const float *x, float *y)
{
    for (uint32_t o = 0; o < W->rows; o++) {
        float *row = hm_malloc(sizeof(float) * W->cols);
        hm__mat_row(W, 0, o, row);
        y[o] = ref_dot(row, x, W->cols);
        hm_free(row);
    }
}

static bool ref_terminator(const struct tm *t, int32_t id)
{
    size_t len = 0;
    const uint8_t *b = t->m.tok ? hm_tokenizer_token_bytes(t->m.tok, id, &len) : NULL;
    for (size_t i = 0; i < len; i++)
        if (memchr(".!?\n", b[i], 4))
            return true;
    return false;
}

struct span {
    uint32_t first, last;
};

/* Closed phrases and sentences of toks[0..pos] (all of them, oldest first). */
static void ref_spans(const struct tm *t, const int32_t *toks, uint32_t pos, struct span *ph,
                      uint32_t *n_ph, struct span *se, uint32_t *n_se)
{
    const struct hm_hparams *hp = &t->m.hp;
    uint32_t start = 0;

    *n_ph = 0;
    for (uint32_t j = 0; (j + 1) * hp->phrase_span - 1 <= pos; j++) {
        ph[*n_ph].first = j * hp->phrase_span;
        ph[(*n_ph)++].last = (j + 1) * hp->phrase_span - 1;
    }
    *n_se = 0;
    for (uint32_t i = 0; i <= pos; i++) {
        if (ref_terminator(t, toks[i]) || i - start + 1 == hp->max_sentence_len) {
            se[*n_se].first = start;
            se[(*n_se)++].last = i;
            start = i + 1;
        }
    }
}

static void ref_kv(const struct tm *t, const int32_t *toks, struct span sp, int sigma, float *k,
                   float *v)
{
    float *mean = hm_calloc(t->d, sizeof(float));
    for (uint32_t i = sp.first; i <= sp.last; i++)
        for (uint32_t c = 0; c < t->d; c++)
            mean[c] += t->embd[(size_t)toks[i] * t->d + c];
    for (uint32_t c = 0; c < t->d; c++)
        mean[c] = mean[c] / (float)(sp.last - sp.first + 1);
    ref_matvec(&t->m.xk, mean, k);
    for (uint32_t c = 0; c < t->dx; c++)
        k[c] += t->scale[sigma * t->dx + c];
    ref_matvec(&t->m.xv, mean, v);
    hm_free(mean);
}

/* CrossScale(pos) from scratch. */
static void ref_attend(const struct tm *t, const int32_t *toks, uint32_t pos, float *out)
{
    const struct hm_hparams *hp = &t->m.hp;
    struct span ph[512], se[512];
    uint32_t n_ph, n_se, p0, s0, nv, r, c;
    float *k, *v, *q, *sc, *u, mx, sum;

    ref_spans(t, toks, pos, ph, &n_ph, se, &n_se);
    p0 = n_ph > hp->max_phrases ? n_ph - hp->max_phrases : 0;
    s0 = n_se > hp->max_sentences ? n_se - hp->max_sentences : 0;
    nv = (n_ph - p0) + (n_se - s0);
    if (nv == 0) {
        memset(out, 0, sizeof(float) * t->d);
        return;
    }
    k = hm_malloc(sizeof(float) * nv * t->dx);
    v = hm_malloc(sizeof(float) * nv * t->dx);
    q = hm_malloc(sizeof(float) * t->dx);
    u = hm_calloc(t->dx, sizeof(float));
    sc = hm_malloc(sizeof(float) * (nv + 1));
    r = 0;
    for (uint32_t j = p0; j < n_ph; j++, r++)
        ref_kv(t, toks, ph[j], 0, k + (size_t)r * t->dx, v + (size_t)r * t->dx);
    for (uint32_t j = s0; j < n_se; j++, r++)
        ref_kv(t, toks, se[j], 1, k + (size_t)r * t->dx, v + (size_t)r * t->dx);
    ref_matvec(&t->m.xq, t->embd + (size_t)toks[pos] * t->d, q);
    for (r = 0; r < nv; r++)
        sc[r] = ref_dot(q, k + (size_t)r * t->dx, t->dx) / sqrtf((float)t->dx);
    sc[nv] = 0;
    mx = sc[0];
    for (r = 1; r <= nv; r++)
        mx = sc[r] > mx ? sc[r] : mx;
    sum = 0;
    for (r = 0; r <= nv; r++) {
        sc[r] = expf(sc[r] - mx);
        sum += sc[r];
    }
    for (r = 0; r < nv; r++)
        for (c = 0; c < t->dx; c++)
            u[c] += (sc[r] / sum) * v[(size_t)r * t->dx + c];
    ref_matvec(&t->m.xo, u, out);
    hm_free(k);
    hm_free(v);
    hm_free(q);
    hm_free(u);
    hm_free(sc);
}

/* Pushes toks one by one; at every position compares visibility and the output. */
static void run_against_ref(const struct tm *t, const int32_t *toks, uint32_t n)
{
    const struct hm_hparams *hp = &t->m.hp;
    struct hm__xs_state *xs;
    float *out = hm_malloc(sizeof(float) * t->d), *ref = hm_malloc(sizeof(float) * t->d);
    float *scratch = hm_malloc(sizeof(float) * hm__xs_scratch_floats(&t->m));
    struct span ph[512], se[512];
    uint32_t pos, n_nonzero = 0;

    ck_assert_int_eq(hm__xs_new(&t->m, n, &xs), HM_OK);
    for (pos = 0; pos < n; pos++) {
        uint32_t vp, vs, fp, fs, n_ph, n_se;

        hm__xs_push(xs, &t->m, toks[pos], pos);
        hm__xs_visible(xs, &vp, &vs, &fp, &fs);
        ref_spans(t, toks, pos, ph, &n_ph, se, &n_se);
        ck_assert_uint_eq(vp, n_ph < hp->max_phrases ? n_ph : hp->max_phrases);
        ck_assert_uint_eq(vs, n_se < hp->max_sentences ? n_se : hp->max_sentences);
        ck_assert_uint_eq(fp, n_ph - vp);
        ck_assert_uint_eq(fs, n_se - vs);
        hm__xs_attend(xs, &t->m, t->embd + (size_t)toks[pos] * t->d, out, scratch);
        ref_attend(t, toks, pos, ref);
        ck_assert_msg(memcmp(out, ref, sizeof(float) * t->d) == 0, "position %u differs", pos);
        n_nonzero += out[0] != 0.0f;
    }
    ck_assert_uint_gt(n_nonzero, n / 2);
    hm__xs_free(xs);
    hm_free(out);
    hm_free(ref);
    hm_free(scratch);
}

/* Random text of letters with terminators, control tokens and reserved ids. */
static void random_tokens(const struct tm *t, int32_t *toks, uint32_t n)
{
    static const char terms[] = ".!?\n";
    for (uint32_t i = 0; i < n; i++) {
        uint32_t r = hm_test_rnd() % 20;
        if (r == 0)
            toks[i] = t->byte_id[(uint8_t)terms[hm_test_rnd() % 4]];
        else if (r == 1)
            toks[i] = 256 + (int32_t)(hm_test_rnd() % (V - 256)); /* control: no bytes */
        else
            toks[i] = t->byte_id['a' + hm_test_rnd() % 26];
    }
}

/* ---- core ---------------------------------------------------------------------------- */

START_TEST(test_visibility_crafted)
{
    struct cfg c = {16, 8, 3, 2, 2, 4, HM_DTYPE_F32, true, true};
    struct tm *t = tm_new(&c);
    struct hm__xs_state *xs;
    int32_t ids[32];
    /* positions:        0123456789012 */
    uint32_t n = ids_of(t, "ab.cdefghi!jk", ids), pos;
    /* expected after each push: visible phrases, first phrase, visible sentences, first */
    static const uint32_t exp[13][4] = {
        {0, 0, 0, 0}, {0, 0, 0, 0}, {1, 0, 1, 0}, /* "ab." closes phrase 0 and sentence 0 */
        {1, 0, 1, 0}, {1, 0, 1, 0}, {2, 0, 1, 0}, /* phrase 1 = "cde" at 5 */
        {2, 0, 2, 0},                             /* sentence "cdef" closed by length 4 */
        {2, 0, 2, 0}, {2, 1, 2, 0},               /* phrase 2 at 8: phrase 0 drops out */
        {2, 1, 2, 0}, {2, 1, 2, 1},               /* "ghi!" closes by '!' */
        {2, 2, 2, 1}, {2, 2, 2, 1},               /* phrase 3 at 11 */
    };

    ck_assert_uint_eq(n, 13);
    ck_assert_int_eq(hm__xs_new(&t->m, 64, &xs), HM_OK);
    for (pos = 0; pos < n; pos++) {
        uint32_t vp, vs, fp, fs;
        hm__xs_push(xs, &t->m, ids[pos], pos);
        hm__xs_visible(xs, &vp, &vs, &fp, &fs);
        ck_assert_msg(vp == exp[pos][0] && fp == exp[pos][1] && vs == exp[pos][2] &&
                          fs == exp[pos][3],
                      "pos %u: %u %u %u %u", pos, vp, fp, vs, fs);
    }
    hm__xs_free(xs);
    tm_free(t);
}
END_TEST

START_TEST(test_zero_when_nothing_visible)
{
    struct cfg c = {40, 24, 4, 8, 8, 64, HM_DTYPE_F32, true, true};
    struct tm *t = tm_new(&c);
    struct hm__xs_state *xs;
    float out[40], scratch[256];
    int32_t ids[8];
    uint32_t n = ids_of(t, "abcd", ids), pos, i;

    ck_assert_uint_le(hm__xs_scratch_floats(&t->m), 256);
    ck_assert_int_eq(hm__xs_new(&t->m, 100, &xs), HM_OK);
    for (pos = 0; pos < n; pos++) {
        for (i = 0; i < 40; i++)
            out[i] = 123.0f;
        hm__xs_push(xs, &t->m, ids[pos], pos);
        hm__xs_attend(xs, &t->m, t->embd + (size_t)ids[pos] * 40, out, scratch);
        for (i = 0; i < 40; i++) {
            if (pos < 3) /* the phrase closes at position 3 */
                ck_assert(out[i] == 0.0f && !signbit(out[i]));
        }
    }
    ck_assert(out[0] != 0.0f);
    hm__xs_free(xs);
    tm_free(t);
}
END_TEST

START_TEST(test_matches_naive_f32)
{
    /* d with a partial 32-column chunk and d_x not a multiple of 8 */
    struct cfg c = {40, 20, 3, 5, 3, 7, HM_DTYPE_F32, true, true};
    struct tm *t = tm_new(&c);
    int32_t toks[120];

    random_tokens(t, toks, 120);
    run_against_ref(t, toks, 120);
    tm_free(t);
}
END_TEST

START_TEST(test_matches_naive_q8_0)
{
    struct cfg c = {64, 32, 4, 3, 4, 5, HM_DTYPE_Q8_0, true, true};
    struct tm *t = tm_new(&c);
    int32_t toks[80];

    random_tokens(t, toks, 80);
    run_against_ref(t, toks, 80);
    tm_free(t);
}
END_TEST

START_TEST(test_matches_naive_f16_bf16)
{
    struct cfg c = {40, 20, 3, 4, 3, 6, HM_DTYPE_F16, true, true};
    struct tm *t = tm_new(&c);
    int32_t toks[60];

    random_tokens(t, toks, 60);
    run_against_ref(t, toks, 60);
    tm_free(t);
    c.type = HM_DTYPE_BF16;
    t = tm_new(&c);
    random_tokens(t, toks, 60);
    run_against_ref(t, toks, 60);
    tm_free(t);
}
END_TEST

START_TEST(test_matches_naive_no_tokenizer)
{
    /* sentences close by length only */
    struct cfg c = {16, 16, 2, 4, 2, 3, HM_DTYPE_F32, true, false};
    struct tm *t = tm_new(&c);
    int32_t toks[40];

    for (uint32_t i = 0; i < 40; i++)
        toks[i] = (int32_t)(hm_test_rnd() % V);
    run_against_ref(t, toks, 40);
    tm_free(t);
}
END_TEST

START_TEST(test_chunk_invariance)
{
    /* two states fed the same tokens give the same bits whatever else happens between */
    struct cfg c = {40, 20, 3, 5, 3, 7, HM_DTYPE_F32, true, true};
    struct tm *t = tm_new(&c);
    struct hm__xs_state *a, *b;
    int32_t toks[50];
    float oa[40], ob[40], scratch[128];
    uint32_t pos;

    random_tokens(t, toks, 50);
    ck_assert_int_eq(hm__xs_new(&t->m, 50, &a), HM_OK);
    ck_assert_int_eq(hm__xs_new(&t->m, 200, &b), HM_OK); /* larger plan, bigger rings */
    for (pos = 0; pos < 50; pos++)
        hm__xs_push(a, &t->m, toks[pos], pos);
    for (pos = 0; pos < 50; pos++)
        hm__xs_push(b, &t->m, toks[pos], pos);
    hm__xs_attend(a, &t->m, t->embd + (size_t)toks[49] * 40, oa, scratch);
    hm__xs_attend(b, &t->m, t->embd + (size_t)toks[49] * 40, ob, scratch);
    ck_assert(memcmp(oa, ob, sizeof(oa)) == 0);
    hm__xs_free(a);
    hm__xs_free(b);
    tm_free(t);
}
END_TEST

/* ---- limits -------------------------------------------------------------------------- */

START_TEST(test_elems_formula)
{
    struct cfg c = {40, 24, 4, 8, 16, 64, HM_DTYPE_F32, true, false};
    struct tm *t = tm_new(&c);
    static const uint32_t ns[] = {0, 1, 3, 4, 5, 16, 31, 32, 33, 100, 4096};

    for (size_t i = 0; i < sizeof(ns) / sizeof(ns[0]); i++) {
        uint64_t N = ns[i], cp = N / 4 < 8 ? N / 4 : 8, cs = N < 16 ? N : 16;
        ck_assert_uint_eq(hm__xs_elems(&t->m, ns[i]), (cp + cs) * 2 * 24 + 2 * 40);
    }
    /* no cross-scale tensors: nothing stored */
    t->m.features &= ~(uint32_t)HM_FEAT_XSCALE;
    ck_assert_uint_eq(hm__xs_elems(&t->m, 100), 0);
    tm_free(t);
}
END_TEST

START_TEST(test_rings_hold_every_visible)
{
    /* N small so the rings are smaller than max_phrases / max_sentences */
    struct cfg c = {16, 8, 2, 64, 16, 64, HM_DTYPE_F32, true, true};
    struct tm *t = tm_new(&c);
    int32_t toks[9];

    for (uint32_t i = 0; i < 9; i++)
        toks[i] = t->byte_id[i % 2 ? '.' : 'x']; /* a sentence every other token */
    ck_assert_uint_eq(hm__xs_elems(&t->m, 9), (4 + 9) * 2 * 8 + 2 * 16);
    run_against_ref(t, toks, 9);
    tm_free(t);
}
END_TEST

START_TEST(test_without_xscale)
{
    struct cfg c = {16, 8, 2, 4, 4, 4, HM_DTYPE_F32, false, true};
    struct tm *t = tm_new(&c);
    struct hm__xs_state *xs;
    float out[16], scratch[64];
    uint32_t vp, vs, fp, fs, pos;

    ck_assert_int_eq(hm__xs_new(&t->m, 10, &xs), HM_OK);
    for (pos = 0; pos < 10; pos++)
        hm__xs_push(xs, &t->m, t->byte_id['a'], pos);
    hm__xs_visible(xs, &vp, &vs, &fp, &fs);
    ck_assert_uint_eq(vp, 4);
    ck_assert_uint_eq(fp, 1);
    ck_assert_uint_eq(vs, 2);
    hm__xs_attend(xs, &t->m, t->embd, out, scratch);
    for (pos = 0; pos < 16; pos++)
        ck_assert(out[pos] == 0.0f);
    hm__xs_free(xs);
    tm_free(t);
}
END_TEST

/* ---- oom ----------------------------------------------------------------------------- */

START_TEST(test_new_oom)
{
    struct cfg c = {16, 8, 2, 4, 4, 4, HM_DTYPE_F32, true, false};
    struct tm *t = tm_new(&c);
    struct hm__xs_state *xs = (struct hm__xs_state *)&c;
    int rc;
    long n;

    for (n = 1;; n++) {
        hm_alloc_fail_after(n);
        rc = hm__xs_new(&t->m, 50, &xs);
        hm_alloc_fail_after(0);
        if (rc == HM_OK)
            break;
        ck_assert_int_eq(rc, HM_ENOMEM);
        ck_assert_ptr_null(xs);
        xs = (struct hm__xs_state *)&c;
    }
    ck_assert_int_ge(n, 2);
    hm__xs_free(xs);
    hm__xs_free(NULL);
    tm_free(t);
}
END_TEST

static Suite *multiscale_suite(void)
{
    Suite *s = suite_create("multiscale");
    TCase *tc = tcase_create("core");

    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_visibility_crafted);
    tcase_add_test(tc, test_zero_when_nothing_visible);
    tcase_add_test(tc, test_matches_naive_f32);
    tcase_add_test(tc, test_matches_naive_q8_0);
    tcase_add_test(tc, test_matches_naive_f16_bf16);
    tcase_add_test(tc, test_matches_naive_no_tokenizer);
    tcase_add_test(tc, test_chunk_invariance);
    suite_add_tcase(s, tc);
    tc = tcase_create("limits");
    tcase_add_test(tc, test_elems_formula);
    tcase_add_test(tc, test_rings_hold_every_visible);
    tcase_add_test(tc, test_without_xscale);
    suite_add_tcase(s, tc);
    tc = tcase_create("oom");
    tcase_add_test(tc, test_new_oom);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return hm_test_run(multiscale_suite(), CK_NORMAL);
}
