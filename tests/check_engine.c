/* check_engine.c - the forward pass: agreement with a naive reference, batch/chunk/thread
 * invariance (bit for bit), spec identities, KV sizing, statistics, errors and OOM. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../engine/forward.h"
#include "hm/alloc.h"
#include "hm/engine.h"
#include "testmodel.h"
#include "testutil.h"

#define ALLF                                                                                       \
    (HM_FEAT_XSCALE | HM_FEAT_QK_NORM | HM_FEAT_SANDWICH | HM_FEAT_ADAPT_GAIN |                    \
     HM_FEAT_SHARED_EXPERTS)

static struct hm_model *model_new(const char *pattern, uint32_t feat, enum hm_dtype t,
                                  uint64_t seed)
{
    struct hm_hparams hp = hm_test_hparams(pattern);
    struct hm_model *m;
    if (t == HM_DTYPE_Q8_0)
        hm_test_hparams_q8(&hp);
    ck_assert_int_eq(hm_test_model_new(&hp, feat, t, seed, &m), HM_OK);
    return m;
}

static struct hm_engine *engine_new(const struct hm_model *m, unsigned threads)
{
    struct hm_engine_opts eo = hm_engine_opts_default();
    struct hm_engine *e;
    eo.n_threads = threads;
    eo.max_step_tokens = 128;
    eo.max_step_items = 8;
    ck_assert_int_eq(hm_engine_new(m, &eo, &e), HM_OK);
    return e;
}

static void rand_tokens(int32_t *tok, uint32_t n, uint32_t V, unsigned seed)
{
    uint32_t i;
    srand(seed);
    for (i = 0; i < n; i++)
        tok[i] = rand() % (int)V;
}

static struct hm_session *session_new(const struct hm_model *m, const int32_t *tok, uint32_t n,
                                      const struct hm_session_opts *so)
{
    struct hm_session *s;
    struct hm_errmsg em = {{0}};
    int rc = hm_session_new(m, tok, n, so, &s, &em);
    ck_assert_msg(rc == HM_OK, "session_new: %s", em.text);
    return s;
}

/* Prefills n tokens in the given chunks (0-terminated list; NULL = one chunk), all logits. */
static void prefill(struct hm_engine *e, struct hm_session *s, uint32_t n, const uint32_t *chunks,
                    float *logits, uint32_t V)
{
    uint32_t done = 0, ci = 0;
    while (done < n) {
        struct hm_step_item it = {0};
        uint32_t c = chunks && chunks[ci] ? chunks[ci++] : n - done;
        if (c > n - done)
            c = n - done;
        it.s = s;
        it.n_tokens = c;
        it.all_logits = true;
        it.logits = logits + (size_t)done * V;
        ck_assert_int_eq(hm_engine_step(e, &it, 1), HM_OK);
        done += c;
    }
}

/* ---- agreement with the reference ----------------------------------------------------- */

static void check_against_reference(const char *pattern, uint32_t feat, enum hm_dtype type,
                                    uint32_t q_lora, double tol)
{
    struct hm_hparams hp = hm_test_hparams(pattern);
    struct hm_model *m;
    struct hm_engine *e;
    struct hm_session *s;
    struct hm_session_opts so = hm_session_opts_default();
    struct hm_test_ref_opts ro = {0};
    uint32_t n = 40, V, t;
    int32_t tok[40];
    float *a, *b, c[40];
    double err;

    hp.q_lora_rank = q_lora;
    if (type == HM_DTYPE_Q8_0)
        hm_test_hparams_q8(&hp);
    ck_assert_int_eq(hm_test_model_new(&hp, feat, type, 7, &m), HM_OK);
    V = hp.n_vocab;
    rand_tokens(tok, n, V, 3);
    e = engine_new(m, 2);
    so.window = 6; /* L layers really slide */
    s = session_new(m, tok, n, &so);
    a = malloc(sizeof(float) * n * V);
    b = malloc(sizeof(float) * n * V);
    prefill(e, s, n, (const uint32_t[]){7, 1, 13, 0}, a, V);
    for (t = 0; t < n; t++)
        c[t] = hm_session_complexity(s, t);
    ro.c = c;
    ro.window = 6;
    ro.tau_fixed = -1.0f;
    ro.use_xs = (feat & HM_FEAT_XSCALE) != 0;
    ck_assert_int_eq(hm_test_reference(m, tok, n, &ro, b), HM_OK);
    err = hm_test_rel_err(a, b, (size_t)n * V);
    ck_assert_msg(err < tol, "%s: engine vs reference rel err %g", pattern, err);
    free(a);
    free(b);
    hm_session_free(s);
    hm_engine_free(e);
    hm_test_model_free(m);
}

START_TEST(test_ref_gqa)
{
    check_against_reference("GG", HM_FEAT_SHARED_EXPERTS, HM_DTYPE_F32, 0, 1e-4);
}
END_TEST

START_TEST(test_ref_window)
{
    check_against_reference("LL", HM_FEAT_SHARED_EXPERTS, HM_DTYPE_F32, 0, 1e-4);
}
END_TEST

START_TEST(test_ref_mla_naive_vs_absorbed)
{
    check_against_reference("MM", 0, HM_DTYPE_F32, 0, 1e-4);
    check_against_reference("MM", 0, HM_DTYPE_F32, 8, 1e-4);
}
END_TEST

START_TEST(test_ref_all_features)
{
    check_against_reference("GLMLG", ALLF, HM_DTYPE_F32, 8, 1e-4);
    check_against_reference("GLM", ALLF | HM_FEAT_TIED_OUTPUT, HM_DTYPE_Q8_0, 0, 1e-4);
    check_against_reference("MLG", ALLF, HM_DTYPE_F16, 0, 1e-4);
    check_against_reference("LGM", ALLF, HM_DTYPE_BF16, 0, 1e-4);
}
END_TEST

/* ---- invariance ------------------------------------------------------------------------ */

static float *run_alone(const struct hm_model *m, unsigned threads, const int32_t *tok, uint32_t n,
                        const uint32_t *chunks)
{
    struct hm_engine *e = engine_new(m, threads);
    e->inline_work = threads & 1 ? 8192 : 0; /* even thread counts: every run on the pool */
    struct hm_session_opts so = hm_session_opts_default();
    struct hm_session *s = session_new(m, tok, n, &so);
    float *out = malloc(sizeof(float) * n * m->hp.n_vocab);
    prefill(e, s, n, chunks, out, m->hp.n_vocab);
    hm_session_free(s);
    hm_engine_free(e);
    return out;
}

START_TEST(test_chunking_bitexact)
{
    struct hm_model *m = model_new("GLMLG", ALLF, HM_DTYPE_F32, 11);
    uint32_t n = 90, V = m->hp.n_vocab, i; /* > 64: the logits come in two blocks */
    int32_t tok[90];
    uint32_t ones[91], rnd[91];
    float *a, *b, *c;
    rand_tokens(tok, n, V, 5);
    for (i = 0; i < n; i++)
        ones[i] = 1;
    ones[n] = 0;
    srand(9);
    for (i = 0; i < n; i++)
        rnd[i] = 1 + (uint32_t)(rand() % 9);
    rnd[n] = 0;
    a = run_alone(m, 1, tok, n, NULL);
    b = run_alone(m, 1, tok, n, ones);
    c = run_alone(m, 1, tok, n, rnd);
    ck_assert(memcmp(a, b, sizeof(float) * n * V) == 0);
    ck_assert(memcmp(a, c, sizeof(float) * n * V) == 0);
    free(a);
    free(b);
    free(c);
    hm_test_model_free(m);
}
END_TEST

/* Decoding pushed tokens one at a time equals prefilling them as a prompt. */
START_TEST(test_decode_equals_prefill)
{
    struct hm_model *m = model_new("GLMLG", ALLF, HM_DTYPE_BF16, 14);
    struct hm_session_opts so = hm_session_opts_default();
    struct hm_engine *e = engine_new(m, 2);
    struct hm_session *s;
    uint32_t n = 40, np = 22, V = m->hp.n_vocab, i;
    int32_t tok[40];
    float *a = malloc(sizeof(float) * n * V), *b = malloc(sizeof(float) * n * V);
    rand_tokens(tok, n, V, 15);
    so.window = 7; /* the same window for both (the policy sees different prompts) */
    s = session_new(m, tok, n, &so);
    prefill(e, s, n, NULL, a, V);
    hm_session_free(s);
    so.max_tokens = n - np;
    s = session_new(m, tok, np, &so);
    prefill(e, s, np, (const uint32_t[]){4, 0}, b, V);
    for (i = np; i < n; i++) {
        struct hm_step_item it = {s, 1, false, b + (size_t)i * V};
        ck_assert_int_eq(hm_session_push(s, tok[i]), HM_OK);
        ck_assert(hm_session_complexity(s, i) == hm__complexity_at(m, tok, i));
        ck_assert_int_eq(hm_engine_step(e, &it, 1), HM_OK);
    }
    ck_assert(memcmp(a, b, sizeof(float) * n * V) == 0);
    hm_session_free(s);
    hm_engine_free(e);
    free(a);
    free(b);
    hm_test_model_free(m);
}
END_TEST

START_TEST(test_threads_bitexact)
{
    struct hm_model *m = model_new("GLMLG", ALLF, HM_DTYPE_Q8_0, 12);
    uint32_t n = 40, V = m->hp.n_vocab;
    int32_t tok[40];
    float *a, *b, *c;
    rand_tokens(tok, n, V, 6);
    a = run_alone(m, 1, tok, n, (const uint32_t[]){17, 0});
    b = run_alone(m, 2, tok, n, (const uint32_t[]){5, 0});
    c = run_alone(m, 4, tok, n, NULL);
    ck_assert(memcmp(a, b, sizeof(float) * n * V) == 0);
    ck_assert(memcmp(a, c, sizeof(float) * n * V) == 0);
    free(a);
    free(b);
    free(c);
    hm_test_model_free(m);
}
END_TEST

/* One sequence alone vs. batched with random others (mixed prefill and decode steps). */
START_TEST(test_batch_bitexact)
{
    struct hm_model *m = model_new("GLMLG", ALLF, HM_DTYPE_F32, 13);
    uint32_t V = m->hp.n_vocab, np = 20, gen = 12, i, k;
    struct hm_engine *e = engine_new(m, 2);
    struct hm_session_opts so = hm_session_opts_default();
    int32_t tok[20], other[3][30];
    struct hm_session *s, *o[3];
    float *alone = malloc(sizeof(float) * (np + gen) * V);
    float *batched = malloc(sizeof(float) * (np + gen) * V);
    float *junk = malloc(sizeof(float) * 64 * V);
    int32_t next[12];

    so.max_tokens = gen;
    rand_tokens(tok, np, V, 21);
    for (i = 0; i < gen; i++)
        next[i] = (int32_t)((i * 7 + 3) % V);
    /* alone: prefill, then decode one token a step */
    s = session_new(m, tok, np, &so);
    prefill(e, s, np, NULL, alone, V);
    for (i = 0; i < gen; i++) {
        struct hm_step_item it = {s, 1, false, alone + (size_t)(np + i) * V};
        ck_assert_int_eq(hm_session_push(s, next[i]), HM_OK);
        ck_assert_int_eq(hm_engine_step(e, &it, 1), HM_OK);
    }
    hm_session_free(s);
    /* batched: other sessions prefill in chunks alongside */
    for (k = 0; k < 3; k++) {
        struct hm_session_opts oo = hm_session_opts_default();
        rand_tokens(other[k], 30, V, 100 + k);
        oo.max_tokens = 0;
        oo.complexity = k == 1 ? 0.9f : -1.0f;
        o[k] = session_new(m, other[k], 30, &oo);
    }
    s = session_new(m, tok, np, &so);
    {
        struct hm_step_item it[4] = {
            {o[0], 3, true, junk}, {s, 5, true, batched}, {o[1], 11, false, junk}};
        ck_assert_int_eq(hm_engine_step(e, it, 3), HM_OK);
        it[0] = (struct hm_step_item){s, 15, true, batched + 5 * V};
        it[1] = (struct hm_step_item){o[2], 30, true, junk};
        it[2] = (struct hm_step_item){o[0], 2, false, NULL};
        ck_assert_int_eq(hm_engine_step(e, it, 3), HM_OK);
    }
    for (i = 0; i < gen; i++) {
        struct hm_step_item it[3];
        size_t ni = 0;
        ck_assert_int_eq(hm_session_push(s, next[i]), HM_OK);
        if (i % 2 == 0 && hm_session_n_past(o[1]) < 30)
            it[ni++] = (struct hm_step_item){o[1], 1, false, junk};
        it[ni++] = (struct hm_step_item){s, 1, false, batched + (size_t)(np + i) * V};
        if (hm_session_n_past(o[0]) + 3 <= 30)
            it[ni++] = (struct hm_step_item){o[0], 3, true, junk};
        ck_assert_int_eq(hm_engine_step(e, it, ni), HM_OK);
    }
    ck_assert(memcmp(alone, batched, sizeof(float) * (np + gen) * V) == 0);
    hm_session_free(s);
    for (k = 0; k < 3; k++)
        hm_session_free(o[k]);
    hm_engine_free(e);
    free(alone);
    free(batched);
    free(junk);
    hm_test_model_free(m);
}
END_TEST

/* ---- spec identities -------------------------------------------------------------------- */

static float *run_opts(const struct hm_model *m, const int32_t *tok, uint32_t n,
                       const struct hm_session_opts *so)
{
    struct hm_engine *e = engine_new(m, 2);
    struct hm_session *s = session_new(m, tok, n, so);
    float *out = malloc(sizeof(float) * n * m->hp.n_vocab);
    prefill(e, s, n, (const uint32_t[]){9, 0}, out, m->hp.n_vocab);
    hm_session_free(s);
    hm_engine_free(e);
    return out;
}

START_TEST(test_local_wide_equals_global)
{
    struct hm_model *g = model_new("GGG", ALLF, HM_DTYPE_F32, 21);
    struct hm_model *l = model_new("GLL", ALLF, HM_DTYPE_F32, 21);
    struct hm_session_opts so = hm_session_opts_default();
    uint32_t n = 30, V = g->hp.n_vocab;
    int32_t tok[30];
    float *a, *b;
    rand_tokens(tok, n, V, 8);
    so.window = 30; /* w >= t + 1 for every t */
    a = run_opts(g, tok, n, &so);
    b = run_opts(l, tok, n, &so);
    ck_assert(memcmp(a, b, sizeof(float) * n * V) == 0);
    free(b);
    so.window = 5; /* and a narrow window really differs */
    b = run_opts(l, tok, n, &so);
    ck_assert(memcmp(a, b, sizeof(float) * n * V) != 0);
    free(a);
    free(b);
    hm_test_model_free(g);
    hm_test_model_free(l);
}
END_TEST

START_TEST(test_threshold_one_equals_topk)
{
    struct hm_hparams hp = hm_test_hparams("GLM");
    struct hm_model *a, *b;
    struct hm_session_opts so = hm_session_opts_default();
    uint32_t n = 24, V = hp.n_vocab;
    int32_t tok[24];
    float *x, *y, *z;
    hp.router_threshold = 1.0f;
    hp.router_threshold_gain = 0.0f;
    ck_assert_int_eq(hm_test_model_new(&hp, ALLF, HM_DTYPE_F32, 5, &a), HM_OK);
    hp = hm_test_hparams("GLM");
    hp.router_k_min = hp.n_expert_used;
    ck_assert_int_eq(hm_test_model_new(&hp, ALLF, HM_DTYPE_F32, 5, &b), HM_OK);
    rand_tokens(tok, n, V, 4);
    x = run_opts(a, tok, n, &so);
    y = run_opts(b, tok, n, &so);
    so.router_threshold = 1.0f; /* the request control too */
    z = run_opts(b, tok, n, &so);
    ck_assert(memcmp(x, y, sizeof(float) * n * V) == 0);
    ck_assert(memcmp(x, z, sizeof(float) * n * V) == 0);
    free(x);
    free(y);
    free(z);
    hm_test_model_free(a);
    hm_test_model_free(b);
}
END_TEST

START_TEST(test_absent_equals_zero)
{
    struct hm_model *with = model_new("GLM", ALLF, HM_DTYPE_F32, 31);
    struct hm_model *without =
        model_new("GLM", ALLF & ~(HM_FEAT_ADAPT_GAIN | HM_FEAT_XSCALE), HM_DTYPE_F32, 31);
    struct hm_session_opts so = hm_session_opts_default();
    uint32_t n = 26, V = with->hp.n_vocab;
    int32_t tok[26];
    float *a, *b;
    rand_tokens(tok, n, V, 9);
    so.window = 8;
    so.complexity = 0.8f; /* the gain term matters: 2c - 1 != 0 */
    a = run_opts(with, tok, n, &so);
    b = run_opts(without, tok, n, &so);
    ck_assert(memcmp(a, b, sizeof(float) * n * V) != 0);
    free(a);
    hm_test_model_zero_adapt(with);
    hm_test_model_zero_xo(with);
    a = run_opts(with, tok, n, &so);
    ck_assert(memcmp(a, b, sizeof(float) * n * V) == 0);
    free(a);
    free(b);
    hm_test_model_free(with);
    hm_test_model_free(without);
}
END_TEST

START_TEST(test_force_static)
{
    struct hm_model *m = model_new("GLM", ALLF, HM_DTYPE_F32, 41);
    struct hm_session_opts so = hm_session_opts_default();
    struct hm_session_stats st;
    struct hm_engine *e = engine_new(m, 1);
    struct hm_session *s;
    uint32_t n = 30, V = m->hp.n_vocab;
    int32_t tok[30];
    float *out = malloc(sizeof(float) * n * V);
    rand_tokens(tok, n, V, 12);
    so.force_static = true;
    so.max_tokens = 10;
    s = session_new(m, tok, n, &so);
    prefill(e, s, n, NULL, out, V);
    hm_session_get_stats(s, &st);
    ck_assert_int_eq(st.window, 40);
    {
        struct hm_engine_profile p;
        hm_engine_get_profile(e, &p);
        ck_assert_uint_eq(p.steps, 1);
        ck_assert_uint_eq(p.tokens, n);
        ck_assert_uint_ge(p.ns_total, p.ns_attn_g + p.ns_experts + p.ns_router);
    }
    ck_assert_uint_eq(st.sum_experts, (uint64_t)n * 2 * m->hp.n_expert_used);
    ck_assert_uint_eq(st.n_expert_decisions, (uint64_t)n * 2);
    hm_session_free(s);
    hm_engine_free(e);
    free(out);
    hm_test_model_free(m);
}
END_TEST

/* ---- routing ------------------------------------------------------------------------------ */

START_TEST(test_route_basic)
{
    struct hm_hparams hp = hm_test_hparams("G");
    float p[4];
    uint8_t sel[4];
    float w[4];
    uint32_t k;
    /* logits ln(0.5), ln(0.3), ln(0.2), -inf-ish: probabilities ~ .5 .3 .2 0 */
    float lg[4] = {logf(0.5f), logf(0.3f), logf(0.2f), -80.0f};
    memcpy(p, lg, sizeof(p));
    k = hm__route(p, 4, 3, 1, 0.6f, true, sel, w);
    ck_assert_uint_eq(k, 2);
    ck_assert_uint_eq(sel[0], 0);
    ck_assert_uint_eq(sel[1], 1);
    ck_assert_float_eq_tol(w[0], 0.5f / 0.8f, 1e-6);
    ck_assert_float_eq_tol(w[0] + w[1], 1.0f, 1e-6);
    /* tau reached by the first: k_min still forces 2 */
    memcpy(p, lg, sizeof(p));
    ck_assert_uint_eq(hm__route(p, 4, 3, 2, 0.1f, false, sel, w), 2);
    ck_assert_float_eq_tol(w[1], 0.3f, 1e-6);
    /* tau >= 1: K */
    memcpy(p, lg, sizeof(p));
    ck_assert_uint_eq(hm__route(p, 4, 3, 1, 1.0f, true, sel, w), 3);
    /* tau 0: one expert (k_min 1) */
    memcpy(p, lg, sizeof(p));
    ck_assert_uint_eq(hm__route(p, 4, 3, 1, 0.0f, true, sel, w), 1);
    /* threshold never reached below K: K */
    memcpy(p, lg, sizeof(p));
    ck_assert_uint_eq(hm__route(p, 4, 2, 1, 0.95f, true, sel, w), 2);
    /* tau policy: clamp(p0 + g (c - 0.5)) in float32 */
    ck_assert_float_eq(hm__route_tau(&hp, 0.5f, -1.0f), 0.6f);
    ck_assert_float_eq(hm__route_tau(&hp, 1.0f, -1.0f), 0.6f + 0.4f * 0.5f);
    ck_assert_float_eq(hm__route_tau(&hp, 0.0f, 0.25f), 0.25f);
    hp.router_threshold = 0.9f;
    ck_assert_float_eq(hm__route_tau(&hp, 1.0f, -1.0f), 1.0f);
    hp.router_threshold = 0.1f;
    ck_assert_float_eq(hm__route_tau(&hp, 0.0f, -1.0f), 0.0f);
}
END_TEST

START_TEST(test_route_ties)
{
    float p[5] = {1.0f, 2.0f, 2.0f, 1.0f, 2.0f};
    uint8_t sel[5];
    float w[5];
    ck_assert_uint_eq(hm__route(p, 5, 4, 1, 1.0f, true, sel, w), 4);
    ck_assert_uint_eq(sel[0], 1);
    ck_assert_uint_eq(sel[1], 2);
    ck_assert_uint_eq(sel[2], 4);
    ck_assert_uint_eq(sel[3], 0);
    /* all equal: 4 experts at .25 each; tau .5 reached exactly at 2 */
    {
        float q[4] = {0, 0, 0, 0};
        ck_assert_uint_eq(hm__route(q, 4, 4, 1, 0.5f, true, sel, w), 2);
        ck_assert_uint_eq(sel[0], 0);
        ck_assert_uint_eq(sel[1], 1);
    }
}
END_TEST

/* max_experts caps K (and k_min); the trace records the choices. */
START_TEST(test_max_experts_trace)
{
    struct hm_model *m = model_new("GLM", ALLF, HM_DTYPE_F32, 51);
    struct hm_session_opts so = hm_session_opts_default();
    struct hm_engine *e = engine_new(m, 2);
    struct hm_session *s;
    struct hm_session_stats st;
    const struct hm_trace *tr;
    uint32_t n = 20, V = m->hp.n_vocab, t, j;
    int32_t tok[20];
    float *out = malloc(sizeof(float) * V);
    uint64_t sum = 0;
    rand_tokens(tok, n, V, 13);
    so.trace = true;
    so.max_experts = 1;
    s = session_new(m, tok, n, &so);
    {
        struct hm_step_item it = {s, n, false, out};
        ck_assert_int_eq(hm_engine_step(e, &it, 1), HM_OK);
    }
    tr = hm_session_trace(s);
    ck_assert_ptr_nonnull(tr);
    ck_assert_uint_eq(tr->n_pos, n);
    ck_assert_uint_eq(tr->n_moe, 2);
    for (t = 0; t < n; t++)
        for (j = 0; j < 2; j++) {
            ck_assert_uint_eq(tr->k[t * 2 + j], 1);
            ck_assert_uint_lt(tr->experts[(t * 2 + j) * tr->k_max], m->hp.n_expert);
            sum += tr->k[t * 2 + j];
        }
    hm_session_get_stats(s, &st);
    ck_assert_uint_eq(st.sum_experts, sum);
    ck_assert(st.mean_experts == 1.0);
    hm_session_free(s);
    /* the default policy: mean in [1, K], and the trace sums to the statistic */
    so.max_experts = 0;
    s = session_new(m, tok, n, &so);
    {
        struct hm_step_item it = {s, n, false, out};
        ck_assert_int_eq(hm_engine_step(e, &it, 1), HM_OK);
    }
    tr = hm_session_trace(s);
    sum = 0;
    for (t = 0; t < n * 2; t++) {
        ck_assert_uint_ge(tr->k[t], 1);
        ck_assert_uint_le(tr->k[t], m->hp.n_expert_used);
        sum += tr->k[t];
    }
    hm_session_get_stats(s, &st);
    ck_assert_uint_eq(st.sum_experts, sum);
    ck_assert_uint_eq(st.n_expert_decisions, n * 2);
    ck_assert(st.mean_experts >= 1.0 && st.mean_experts <= m->hp.n_expert_used);
    /* attended positions: G and M t+1, L min(t+1, w) */
    {
        uint64_t want = 0, w = (uint64_t)st.window;
        for (t = 0; t < n; t++)
            want += 2 * (uint64_t)(t + 1) + (t + 1 < w ? t + 1 : w);
        ck_assert_uint_eq(st.attn_positions, want);
    }
    hm_session_free(s);
    hm_engine_free(e);
    free(out);
    hm_test_model_free(m);
}
END_TEST

/* ---- KV sizing ---------------------------------------------------------------------------- */

START_TEST(test_kv_bytes)
{
    struct hm_model *m = model_new("GLMLG", ALLF, HM_DTYPE_F32, 61);
    const struct hm_hparams *hp = &m->hp;
    static const struct {
        uint32_t np, mt;
        float c;
        int64_t w;
    } cases[] = {{5, 0, 0.0f, 0},  {10, 20, 0.5f, 0}, {40, 50, 1.0f, 0},
                 {3, 1, -1.0f, 2}, {60, 30, 0.3f, 0}, {1, 0, -1.0f, 96}};
    size_t i;
    int32_t tok[96];
    rand_tokens(tok, 96, hp->n_vocab, 1);
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct hm_session_opts so = hm_session_opts_default();
        struct hm_session_plan pl;
        struct hm_session_stats st;
        struct hm_session *s;
        uint64_t N = cases[i].np + cases[i].mt, w, rows_l, elems, xs, base;
        so.max_tokens = cases[i].mt;
        so.complexity = cases[i].c;
        so.window = cases[i].w;
        s = session_new(m, tok, cases[i].np, &so);
        hm_session_get_stats(s, &st);
        ck_assert_int_eq(hm_session_plan(m, tok, cases[i].np, &so, &pl, NULL), HM_OK);
        if (cases[i].w) {
            w = (uint64_t)cases[i].w;
        } else {
            double c_req = cases[i].c;
            uint32_t t;
            if (cases[i].c < 0) {
                c_req = 0;
                for (t = 0; t < cases[i].np; t++)
                    c_req += hm__complexity_at(m, tok, t);
                c_req /= cases[i].np;
            }
            w = (uint64_t)hm_window_policy(m, c_req, N);
        }
        ck_assert_int_eq(st.window, (int64_t)w);
        rows_l = w < N ? w : N;
        xs = ((N / hp->phrase_span < hp->max_phrases ? N / hp->phrase_span : hp->max_phrases) +
              (N < hp->max_sentences ? N : hp->max_sentences)) *
                 2 * hp->cross_dim +
             2 * hp->d;
        elems = 2 * N * 2 * hp->n_head_kv * hp->head_dim +      /* G */
                2 * rows_l * 2 * hp->n_head_kv * hp->head_dim + /* L */
                N * (hp->kv_lora_rank + hp->qk_rope) + xs;      /* M, cross-scale */
        base = 5 * N * 2 * hp->n_head_kv * hp->head_dim;
        ck_assert_uint_eq(st.kv_bytes, elems * 4);
        ck_assert_uint_eq(st.kv_bytes_baseline, base * 4);
        ck_assert_uint_eq(pl.kv_bytes, st.kv_bytes);
        ck_assert_uint_eq(pl.kv_bytes_baseline, st.kv_bytes_baseline);
        ck_assert_uint_eq(st.n_ctx_planned, N);
        if (cases[i].c >= 0)
            ck_assert(st.c_req == (double)cases[i].c);
        hm_session_free(s);
    }
    hm_test_model_free(m);
}
END_TEST

/* c_req is the float64 mean of the prompt's c_t. */
START_TEST(test_c_req)
{
    struct hm_model *m = model_new("GLM", ALLF | HM_FEAT_CTRL, HM_DTYPE_F32, 62);
    struct hm_session_stats st;
    struct hm_session *s;
    int32_t tok[17];
    double sum = 0;
    uint32_t t;
    rand_tokens(tok, 17, m->hp.n_vocab, 2);
    s = session_new(m, tok, 17, NULL);
    for (t = 0; t < 17; t++) {
        ck_assert(hm_session_complexity(s, t) == hm__complexity_at(m, tok, t));
        sum += hm_session_complexity(s, t);
    }
    hm_session_get_stats(s, &st);
    ck_assert(st.c_req == sum / 17);
    ck_assert_int_eq(st.window, hm_window_policy(m, sum / 17, 17));
    hm_session_free(s);
    hm_test_model_free(m);
}
END_TEST

/* ---- errors -------------------------------------------------------------------------------- */

START_TEST(test_session_errors)
{
    struct hm_model *m = model_new("GLM", ALLF, HM_DTYPE_F32, 71);
    struct hm_session_opts so;
    struct hm_session *s = (void *)1;
    struct hm_errmsg em = {{0}};
    int32_t tok[4] = {1, 2, 3, 4}, bad[2] = {1, 64};

    ck_assert_int_eq(hm_session_new(m, tok, 0, NULL, &s, &em), HM_EINVAL);
    ck_assert_ptr_null(s);
    ck_assert_ptr_nonnull(strstr(em.text, "prompt"));
    ck_assert_int_eq(hm_session_new(m, bad, 2, NULL, &s, &em), HM_EINVAL);
    ck_assert_ptr_nonnull(strstr(em.text, "prompt"));
    so = hm_session_opts_default();
    so.max_tokens = 93;
    ck_assert_int_eq(hm_session_new(m, tok, 4, &so, &s, &em), HM_ERANGE);
    ck_assert_ptr_nonnull(strstr(em.text, "max_tokens"));
    so.max_tokens = 92; /* exactly n_ctx */
    ck_assert_int_eq(hm_session_new(m, tok, 4, &so, &s, &em), HM_OK);
    hm_session_free(s);
#define BAD(field, val)                                                                            \
    do {                                                                                           \
        so = hm_session_opts_default();                                                            \
        so.field = (val);                                                                          \
        ck_assert_int_eq(hm_session_new(m, tok, 4, &so, &s, &em), HM_ERANGE);                      \
        ck_assert_ptr_nonnull(strstr(em.text, #field));                                            \
    } while (0)
    BAD(complexity, 1.5f);
    BAD(complexity, NAN);
    BAD(window, 97);
    BAD(window, -3);
    BAD(max_experts, 3);
    BAD(router_threshold, 1.01f);
#undef BAD
    so = hm_session_opts_default();
    so.complexity = 1.0f;
    so.window = 96;
    so.max_experts = 2;
    so.router_threshold = 0.0f;
    ck_assert_int_eq(hm_session_new(m, tok, 4, &so, &s, &em), HM_OK);
    /* push: vocabulary and planned context */
    ck_assert_int_eq(hm_session_push(s, 64), HM_EINVAL);
    ck_assert_int_eq(hm_session_push(s, -1), HM_EINVAL);
    hm_session_free(s);
    so = hm_session_opts_default();
    so.max_tokens = 1;
    ck_assert_int_eq(hm_session_new(m, tok, 4, &so, &s, &em), HM_OK);
    ck_assert_int_eq(hm_session_push(s, 5), HM_OK);
    ck_assert_int_eq(hm_session_push(s, 5), HM_ERANGE);
    ck_assert_uint_eq(hm_session_n_tokens(s), 5);
    hm_session_free(s);
    hm_test_model_free(m);
}
END_TEST

START_TEST(test_step_errors)
{
    struct hm_model *m = model_new("GLM", ALLF, HM_DTYPE_F32, 72);
    struct hm_model *m2 = model_new("GLM", ALLF, HM_DTYPE_F32, 73);
    struct hm_engine_opts eo = hm_engine_opts_default();
    struct hm_engine *e;
    struct hm_session *a, *b, *c;
    int32_t tok[20];
    float *lg = malloc(sizeof(float) * 20 * 64);
    struct hm_step_item it[3];

    eo.max_step_tokens = 16;
    eo.max_step_items = 2;
    eo.n_threads = 2;
    ck_assert_int_eq(hm_engine_new(m, &eo, &e), HM_OK);
    rand_tokens(tok, 20, 64, 3);
    a = session_new(m, tok, 10, NULL);
    b = session_new(m, tok, 20, NULL);
    c = session_new(m2, tok, 5, NULL);
    it[0] = (struct hm_step_item){a, 11, false, lg}; /* more than the session holds */
    ck_assert_int_eq(hm_engine_step(e, it, 1), HM_EINVAL);
    it[0] = (struct hm_step_item){b, 17, false, lg}; /* more than the engine allows */
    ck_assert_int_eq(hm_engine_step(e, it, 1), HM_EINVAL);
    it[0] = (struct hm_step_item){a, 4, false, lg};
    it[1] = (struct hm_step_item){a, 4, false, lg}; /* the same session twice */
    ck_assert_int_eq(hm_engine_step(e, it, 2), HM_EINVAL);
    it[1] = (struct hm_step_item){b, 13, false, lg}; /* 17 tokens in all */
    ck_assert_int_eq(hm_engine_step(e, it, 2), HM_EINVAL);
    it[1] = (struct hm_step_item){b, 0, false, lg}; /* empty item */
    ck_assert_int_eq(hm_engine_step(e, it, 2), HM_EINVAL);
    it[1] = (struct hm_step_item){c, 2, false, lg}; /* another model's session */
    ck_assert_int_eq(hm_engine_step(e, it, 2), HM_EINVAL);
    it[1] = (struct hm_step_item){b, 2, false, lg};
    it[2] = (struct hm_step_item){c, 2, false, lg}; /* too many items */
    ck_assert_int_eq(hm_engine_step(e, it, 3), HM_EINVAL);
    ck_assert_int_eq(hm_engine_step(e, NULL, 0), HM_EINVAL);
    ck_assert_uint_eq(hm_session_n_past(a), 0);
    ck_assert_uint_eq(hm_session_n_past(b), 0);
    /* and the sessions still work, with the same logits as fresh ones */
    it[0] = (struct hm_step_item){a, 10, false, lg};
    ck_assert_int_eq(hm_engine_step(e, it, 1), HM_OK);
    ck_assert_uint_eq(hm_session_n_past(a), 10);
    ck_assert_int_eq(hm_engine_step(e, it, 1), HM_EINVAL); /* nothing left to process */
    {
        struct hm_session *f = session_new(m, tok, 10, NULL);
        float *lf = malloc(sizeof(float) * 64);
        it[0] = (struct hm_step_item){f, 10, false, lf};
        ck_assert_int_eq(hm_engine_step(e, it, 1), HM_OK);
        ck_assert(memcmp(lf, lg, sizeof(float) * 64) == 0);
        hm_session_free(f);
        free(lf);
    }
    {
        struct hm_engine *e2 = (void *)1;
        ck_assert_int_eq(hm_engine_new(m, &(struct hm_engine_opts){0}, &e2), HM_EINVAL);
        ck_assert_ptr_null(e2);
    }
    hm_session_free(a);
    hm_session_free(b);
    hm_session_free(c);
    free(lg);
    hm_engine_free(e);
    hm_test_model_free(m);
    hm_test_model_free(m2);
}
END_TEST

/* ---- OOM ------------------------------------------------------------------------------------- */

START_TEST(test_oom)
{
    struct hm_model *m = model_new("GLM", ALLF | HM_FEAT_CTRL, HM_DTYPE_F32, 81);
    struct hm_engine_opts eo = hm_engine_opts_default();
    struct hm_session_opts so = hm_session_opts_default();
    struct hm_engine *e = NULL;
    struct hm_session *s = NULL;
    int32_t tok[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    long n;
    int rc;

    eo.n_threads = 2;
    eo.max_step_tokens = 16;
    for (n = 1;; n++) {
        hm_alloc_fail_after(n);
        rc = hm_engine_new(m, &eo, &e);
        hm_alloc_fail_after(0);
        if (rc == HM_OK)
            break;
        ck_assert_int_eq(rc, HM_ENOMEM);
        ck_assert_ptr_null(e);
    }
    so.trace = true;
    so.max_tokens = 4;
    for (n = 1;; n++) {
        hm_alloc_fail_after(n);
        rc = hm_session_new(m, tok, 8, &so, &s, NULL);
        hm_alloc_fail_after(0);
        if (rc == HM_OK)
            break;
        ck_assert_int_eq(rc, HM_ENOMEM);
        ck_assert_ptr_null(s);
    }
    {
        struct hm_step_item it = {s, 8, false, NULL};
        ck_assert_int_eq(hm_engine_step(e, &it, 1), HM_OK);
    }
    hm_session_free(s);
    hm_engine_free(e);
    hm_test_model_free(m);
}
END_TEST

/* ---- the tiny model file, end to end ----------------------------------------------------------
 */

START_TEST(test_tiny_gguf)
{
    const char *dir = getenv("HM_BUILDDIR");
    char path[4096];
    struct hm_model *m;
    struct hm_errmsg em = {{0}};
    FILE *f;
    snprintf(path, sizeof(path), "%s/models/tiny.gguf", dir ? dir : HM_BUILDDIR);
    f = fopen(path, "rb");
    if (!f)
        return; /* not built (yet): make check builds it first */
    fclose(f);
    ck_assert_msg(hm_model_load(path, &m, &em) == HM_OK, "%s", em.text);
    {
        uint32_t n = 24, V = m->hp.n_vocab, i;
        int32_t tok[24];
        struct hm_session_opts so = hm_session_opts_default();
        struct hm_engine *e = engine_new(m, 2);
        struct hm_session *s;
        float *a = malloc(sizeof(float) * n * V), *b;
        for (i = 0; i < n; i++)
            tok[i] = (int32_t)((i * 37 + 11) % V);
        s = session_new(m, tok, n, &so);
        prefill(e, s, n, (const uint32_t[]){5, 0}, a, V);
        hm_session_free(s);
        hm_engine_free(e);
        b = run_alone(m, 1, tok, n, NULL);
        ck_assert(memcmp(a, b, sizeof(float) * n * V) == 0);
        for (i = 0; i < n * V; i++)
            ck_assert(isfinite(a[i]));
        free(a);
        free(b);
    }
    hm_model_free(m);
}
END_TEST

static Suite *engine_suite(void)
{
    Suite *s = suite_create("engine");
    TCase *core = tcase_create("core");
    TCase *lim = tcase_create("limits");
    TCase *err = tcase_create("errors");
    TCase *oom = tcase_create("oom");
    tcase_set_timeout(core, 120);
    tcase_add_test(core, test_ref_gqa);
    tcase_add_test(core, test_ref_window);
    tcase_add_test(core, test_ref_mla_naive_vs_absorbed);
    tcase_add_test(core, test_ref_all_features);
    tcase_add_test(core, test_chunking_bitexact);
    tcase_add_test(core, test_threads_bitexact);
    tcase_add_test(core, test_decode_equals_prefill);
    tcase_add_test(core, test_batch_bitexact);
    tcase_add_test(core, test_local_wide_equals_global);
    tcase_add_test(core, test_threshold_one_equals_topk);
    tcase_add_test(core, test_absent_equals_zero);
    tcase_add_test(core, test_force_static);
    tcase_add_test(core, test_route_basic);
    tcase_add_test(core, test_route_ties);
    tcase_add_test(core, test_max_experts_trace);
    tcase_add_test(core, test_c_req);
    tcase_add_test(core, test_tiny_gguf);
    tcase_add_test(lim, test_kv_bytes);
    tcase_add_test(err, test_session_errors);
    tcase_add_test(err, test_step_errors);
    tcase_add_test(oom, test_oom);
    suite_add_tcase(s, core);
    suite_add_tcase(s, lim);
    suite_add_tcase(s, err);
    suite_add_tcase(s, oom);
    return s;
}

int main(void)
{
    return hm_test_run(engine_suite(), CK_ENV);
}
