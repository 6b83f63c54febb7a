/* check_sampler.c - the sampler (spec 10, include/hm/sampler.h): PRNG, greedy, each filter
 * against hand-computed cases, logprobs, bias, penalties, validation, a brute-force
 * reference at V = 131072, and allocation failures. */
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "hm/alloc.h"
#include "hm/err.h"
#include "hm/sampler.h"
#include "testutil.h"

static struct hm_sampler *mk(const struct hm_sampler_params *p, uint32_t n_vocab)
{
    struct hm_sampler *s = NULL;
    ck_assert_int_eq(hm_sampler_new(p, n_vocab, &s), HM_OK);
    ck_assert_ptr_nonnull(s);
    return s;
}

static int32_t draw(struct hm_sampler *s, const float *logits, uint32_t n)
{
    float buf[64];
    struct hm_sample r;
    ck_assert_uint_le(n, 64);
    memcpy(buf, logits, n * sizeof *buf);
    ck_assert_int_eq(hm_sampler_sample(s, buf, &r), HM_OK);
    return r.token;
}

/* ---- core ----------------------------------------------------------------------- */

START_TEST(test_rng_known_values)
{
    /* xoshiro256** seeded by splitmix64(42); checked against an independent Python
     * implementation. docs/api.md relies on these. */
    struct hm_rng r;
    hm_rng_seed(&r, 42);
    ck_assert_uint_eq(hm_rng_next(&r), UINT64_C(0x15780b2e0c2ec716));
    ck_assert_uint_eq(hm_rng_next(&r), UINT64_C(0x6104d9866d113a7e));
    ck_assert_uint_eq(hm_rng_next(&r), UINT64_C(0xae17533239e499a1));
    ck_assert_uint_eq(hm_rng_next(&r), UINT64_C(0xecb8ad4703b360a1));
    hm_rng_seed(&r, 42);
    ck_assert_float_eq(hm_rng_uniform(&r), (float)(0x15780bu) / 16777216.0f);
    for (int i = 0; i < 100000; i++) {
        float u = hm_rng_uniform(&r);
        ck_assert(u >= 0.0f && u < 1.0f);
    }
}
END_TEST

START_TEST(test_seed42_first_draws)
{
    /* Four equal logits: sorted order 0,1,2,3 (ties lower id first), cumulative
     * 0.25/0.5/0.75/1, so token = floor(4u). */
    static const int32_t expect[8] = {0, 1, 2, 3, 3, 3, 2, 3};
    const float l[4] = {0.5f, 0.5f, 0.5f, 0.5f};
    struct hm_sampler_params p = hm_sampler_params_default();
    p.seed = 42;
    struct hm_sampler *s = mk(&p, 4);
    for (int i = 0; i < 8; i++)
        ck_assert_int_eq(draw(s, l, 4), expect[i]);
    hm_sampler_free(s);
}
END_TEST

START_TEST(test_greedy_ties)
{
    const float l[5] = {1.0f, 3.0f, -2.0f, 3.0f, 2.9f};
    struct hm_sampler_params p = hm_sampler_params_default();
    p.temperature = 0.0f;
    p.top_k = 3; /* ignored by greedy */
    p.top_p = 0.1f;
    struct hm_sampler *s = mk(&p, 5);
    for (int i = 0; i < 5; i++)
        ck_assert_int_eq(draw(s, l, 5), 1);
    hm_sampler_free(s);

    const float neg[3] = {-INFINITY, -5.0f, -5.0f};
    s = mk(&p, 3);
    ck_assert_int_eq(draw(s, neg, 3), 1);
    hm_sampler_free(s);
}
END_TEST

/* Token probabilities proportional to w = {1, 2, 3, 4} (logits ln w). Sorted: 3, 2, 1, 0.
 * For each case, expected token as a function of u, the uniform the sampler draws. */
static const float W4[4] = {0.0f, 0.69314718f, 1.09861229f, 1.38629436f};

static void check_cases(struct hm_sampler_params p, const double *cum, const int32_t *tok,
                        int n_kept)
{
    struct hm_rng r;
    p.seed = 1234;
    hm_rng_seed(&r, p.seed);
    struct hm_sampler *s = mk(&p, 4);
    int seen[4] = {0};
    for (int i = 0; i < 400; i++) {
        double u = hm_rng_uniform(&r);
        int32_t want = tok[n_kept - 1];
        for (int j = 0; j < n_kept; j++) {
            if (cum[j] > u) {
                want = tok[j];
                break;
            }
        }
        int32_t got = draw(s, W4, 4);
        ck_assert_int_eq(got, want);
        seen[got]++;
    }
    for (int j = 0; j < n_kept; j++)
        ck_assert_int_gt(seen[tok[j]], 0); /* every kept token was drawn */
    hm_sampler_free(s);
}

START_TEST(test_no_filter)
{
    static const double cum[4] = {0.4, 0.7, 0.9, 1.0};
    static const int32_t tok[4] = {3, 2, 1, 0};
    check_cases(hm_sampler_params_default(), cum, tok, 4);
}
END_TEST

START_TEST(test_top_k)
{
    static const double cum2[2] = {4.0 / 7.0, 1.0};
    static const int32_t tok[3] = {3, 2, 1};
    static const double cum3[3] = {4.0 / 9.0, 7.0 / 9.0, 1.0};
    struct hm_sampler_params p = hm_sampler_params_default();
    p.top_k = 2;
    check_cases(p, cum2, tok, 2);
    p.top_k = 3;
    check_cases(p, cum3, tok, 3);
    p.top_k = 1000; /* larger than V: off */
    static const double cum4[4] = {0.4, 0.7, 0.9, 1.0};
    static const int32_t tok4[4] = {3, 2, 1, 0};
    check_cases(p, cum4, tok4, 4);
}
END_TEST

START_TEST(test_top_p)
{
    static const int32_t tok[3] = {3, 2, 1};
    static const double one[1] = {1.0};
    static const double two[2] = {4.0 / 7.0, 1.0};
    static const double three[3] = {4.0 / 9.0, 7.0 / 9.0, 1.0};
    struct hm_sampler_params p = hm_sampler_params_default();
    p.top_p = 0.39f; /* 0.4 >= 0.39: just the best */
    check_cases(p, one, tok, 1);
    p.top_p = 0.5f; /* 0.4, 0.7 */
    check_cases(p, two, tok, 2);
    p.top_p = 0.75f; /* 0.4, 0.7, 0.9 */
    check_cases(p, three, tok, 3);
    /* top_p applies to the top_k set renormalised: 4/9 = 0.444 >= 0.42 keeps one token,
     * where without top_k 0.4 < 0.42 keeps two. */
    p.top_p = 0.42f;
    check_cases(p, two, tok, 2);
    p.top_k = 3;
    check_cases(p, one, tok, 1);
}
END_TEST

START_TEST(test_min_p)
{
    static const int32_t tok[3] = {3, 2, 1};
    static const double two[2] = {4.0 / 7.0, 1.0};
    static const double three[3] = {4.0 / 9.0, 7.0 / 9.0, 1.0};
    static const double one[1] = {1.0};
    struct hm_sampler_params p = hm_sampler_params_default();
    p.min_p = 0.6f; /* threshold 0.24: keeps 0.4, 0.3 */
    check_cases(p, two, tok, 2);
    p.min_p = 0.45f; /* threshold 0.18: keeps 0.4, 0.3, 0.2 */
    check_cases(p, three, tok, 3);
    p.min_p = 1.0f; /* only the best */
    check_cases(p, one, tok, 1);
    /* min_p after top_p: the shorter prefix wins */
    p.min_p = 0.45f;
    p.top_p = 0.5f;
    check_cases(p, two, tok, 2);
}
END_TEST

START_TEST(test_temperature)
{
    /* logits {0, ln 4} at T = 2: weights 1 and 2 -> p = 1/3, 2/3 */
    const float l[2] = {0.0f, 1.38629436f};
    struct hm_sampler_params p = hm_sampler_params_default();
    p.temperature = 2.0f;
    p.seed = 7;
    struct hm_rng r;
    hm_rng_seed(&r, 7);
    struct hm_sampler *s = mk(&p, 2);
    double p1 = 1.0 / (1.0 + exp((0.0 - (double)l[1]) / 2.0)); /* about 2/3 */
    ck_assert(fabs(p1 - 2.0 / 3.0) < 1e-7);
    for (int i = 0; i < 300; i++) {
        double u = hm_rng_uniform(&r);
        ck_assert_int_eq(draw(s, l, 2), u < p1 ? 1 : 0);
    }
    hm_sampler_free(s);
}
END_TEST

START_TEST(test_distribution)
{
    /* p = 0.25 / 0.75: 10000 draws; the count is fixed for the seed (no flakes), and
     * must be near 7500 (sd 43). */
    const float l[2] = {0.0f, 1.09861229f};
    struct hm_sampler_params p = hm_sampler_params_default();
    p.seed = 42;
    struct hm_sampler *s = mk(&p, 2);
    int n1 = 0;
    for (int i = 0; i < 10000; i++)
        n1 += draw(s, l, 2) == 1;
    hm_sampler_free(s);
    ck_assert_int_gt(n1, 7200);
    ck_assert_int_lt(n1, 7800);
}
END_TEST

START_TEST(test_determinism)
{
    float l[16];
    for (int i = 0; i < 16; i++)
        l[i] = (float)((i * 7) % 5) * 0.3f;
    struct hm_sampler_params p = hm_sampler_params_default();
    p.seed = 99;
    p.temperature = 1.3f;
    struct hm_sampler *a = mk(&p, 16), *b = mk(&p, 16);
    p.seed = 100;
    struct hm_sampler *c = mk(&p, 16);
    int differ = 0;
    for (int i = 0; i < 200; i++) {
        int32_t ta = draw(a, l, 16), tb = draw(b, l, 16), tc = draw(c, l, 16);
        ck_assert_int_eq(ta, tb);
        differ += ta != tc;
    }
    ck_assert_int_gt(differ, 0);
    hm_sampler_free(a);
    hm_sampler_free(b);
    hm_sampler_free(c);
}
END_TEST

START_TEST(test_logprobs)
{
    float l[4] = {1.0f, 2.0f, 3.0f, 2.0f};
    double lse = log(exp(1.0) + 2 * exp(2.0) + exp(3.0));
    struct hm_sampler_params p = hm_sampler_params_default();
    p.temperature = 0.0f;
    p.want_logprobs = true;
    p.n_top_logprobs = 3;
    struct hm_sampler *s = mk(&p, 4);
    struct hm_sample r;
    ck_assert_int_eq(hm_sampler_sample(s, l, &r), HM_OK);
    ck_assert_int_eq(r.token, 2);
    ck_assert_float_eq_tol(r.logprob, (float)(3.0 - lse), 1e-6f);
    ck_assert_uint_eq(r.n_top, 3);
    ck_assert_int_eq(r.top_tokens[0], 2);
    ck_assert_int_eq(r.top_tokens[1], 1); /* tie with 3: lower id first */
    ck_assert_int_eq(r.top_tokens[2], 3);
    ck_assert_float_eq_tol(r.top_logprobs[0], (float)(3.0 - lse), 1e-6f);
    ck_assert_float_eq_tol(r.top_logprobs[1], (float)(2.0 - lse), 1e-6f);
    ck_assert_float_eq(r.top_logprobs[1], r.top_logprobs[2]);
    hm_sampler_free(s);

    /* before temperature and truncation; the sampled token need not be in the top set;
     * more alternatives than tokens gives V */
    float m[3] = {0.0f, 0.0f, -INFINITY};
    p.temperature = 1.5f;
    p.top_k = 1;
    p.n_top_logprobs = 20;
    s = mk(&p, 3);
    ck_assert_int_eq(hm_sampler_sample(s, m, &r), HM_OK);
    ck_assert_int_eq(r.token, 0);
    ck_assert_float_eq_tol(r.logprob, (float)log(0.5), 1e-7f);
    ck_assert_uint_eq(r.n_top, 3);
    ck_assert_int_eq(r.top_tokens[2], 2);
    ck_assert(isinf(r.top_logprobs[2]) && r.top_logprobs[2] < 0);
    hm_sampler_free(s);

    /* not wanted: nothing reported */
    p = hm_sampler_params_default();
    p.n_top_logprobs = 5;
    s = mk(&p, 3);
    float q[3] = {0.0f, 1.0f, 2.0f};
    ck_assert_int_eq(hm_sampler_sample(s, q, &r), HM_OK);
    ck_assert_uint_eq(r.n_top, 0);
    ck_assert_float_eq(r.logprob, 0.0f);
    hm_sampler_free(s);
}
END_TEST

/* hm_sampler_score: any token's log-probability under the raw logits, bit-identical to
 * what sampling reports for the same logits; bad arguments are HM_EINVAL */
START_TEST(test_score)
{
    float l[4] = {1.0f, 2.0f, 3.0f, 2.0f}, copy[4];
    double lse = log(exp(1.0) + 2 * exp(2.0) + exp(3.0));
    struct hm_sampler_params p = hm_sampler_params_default();
    struct hm_sample r, g;

    ck_assert_int_eq(hm_sampler_score(l, 4, 0, 2, &r), HM_OK);
    ck_assert_int_eq(r.token, 0);
    ck_assert_float_eq_tol(r.logprob, (float)(1.0 - lse), 1e-6f);
    ck_assert_uint_eq(r.n_top, 2);
    ck_assert_int_eq(r.top_tokens[0], 2);
    ck_assert_int_eq(r.top_tokens[1], 1);
    ck_assert_int_eq(hm_sampler_score(l, 4, 3, 0, &r), HM_OK);
    ck_assert_uint_eq(r.n_top, 0);
    ck_assert_float_eq_tol(r.logprob, (float)(2.0 - lse), 1e-6f);

    p.temperature = 0.0f;
    p.want_logprobs = true;
    p.n_top_logprobs = 3;
    struct hm_sampler *s = mk(&p, 4);
    memcpy(copy, l, sizeof(l));
    ck_assert_int_eq(hm_sampler_sample(s, copy, &g), HM_OK);
    ck_assert_int_eq(hm_sampler_score(l, 4, g.token, 3, &r), HM_OK);
    ck_assert(memcmp(&r, &g, sizeof(r)) == 0);
    hm_sampler_free(s);

    ck_assert_int_eq(hm_sampler_score(l, 4, 4, 0, &r), HM_EINVAL);
    ck_assert_int_eq(hm_sampler_score(l, 4, -1, 0, &r), HM_EINVAL);
    ck_assert_int_eq(hm_sampler_score(l, 4, 0, HM_MAX_TOP_LOGPROBS + 1, &r), HM_EINVAL);
    ck_assert_int_eq(hm_sampler_score(NULL, 4, 0, 0, &r), HM_EINVAL);
    l[1] = NAN;
    ck_assert_int_eq(hm_sampler_score(l, 4, 0, 0, &r), HM_EINVAL);
    {
        float ninf[2] = {-INFINITY, -INFINITY};
        ck_assert_int_eq(hm_sampler_score(ninf, 2, 0, 0, &r), HM_EINVAL);
    }
}
END_TEST

START_TEST(test_bias)
{
    const struct hm_logit_bias b[2] = {{0, 10.0f}, {2, -100.0f}};
    float l[3] = {1.0f, 2.0f, 3.0f};
    struct hm_sampler_params p = hm_sampler_params_default();
    p.temperature = 0.0f;
    p.bias = b;
    p.n_bias = 2;
    p.want_logprobs = true;
    struct hm_sampler *s = mk(&p, 3);
    struct hm_sample r;
    ck_assert_int_eq(hm_sampler_sample(s, l, &r), HM_OK);
    ck_assert_int_eq(r.token, 0);
    ck_assert_float_eq(l[0], 11.0f); /* in place */
    ck_assert_float_eq(l[2], -97.0f);
    /* logprob includes the bias */
    double lse = log(exp(11.0) + exp(2.0) + exp(-97.0));
    ck_assert_float_eq_tol(r.logprob, (float)(11.0 - lse), 1e-6f);
    hm_sampler_free(s);
}
END_TEST

START_TEST(test_penalties)
{
    struct hm_sampler_params p = hm_sampler_params_default();
    p.temperature = 0.0f;
    p.presence_penalty = 1.5f;
    p.frequency_penalty = 0.5f;
    struct hm_sampler *s = mk(&p, 4);
    struct hm_sample r;
    hm_sampler_accept(s, 2);
    hm_sampler_accept(s, 2);
    hm_sampler_accept(s, 1);
    hm_sampler_accept(s, -1); /* ignored */
    hm_sampler_accept(s, 4);  /* ignored */
    float l[4] = {1.0f, 2.0f, 3.0f, 0.25f};
    ck_assert_int_eq(hm_sampler_sample(s, l, &r), HM_OK);
    ck_assert_float_eq(l[0], 1.0f);
    ck_assert_float_eq(l[1], 2.0f - 0.5f - 1.5f); /* count 1 */
    ck_assert_float_eq(l[2], 3.0f - 1.0f - 1.5f); /* count 2, presence once */
    ck_assert_float_eq(l[3], 0.25f);
    ck_assert_int_eq(r.token, 0);
    hm_sampler_free(s);

    /* repetition (CTRL): positive divided, negative multiplied; before presence */
    p = hm_sampler_params_default();
    p.temperature = 0.0f;
    p.repetition_penalty = 2.0f;
    p.presence_penalty = 0.25f;
    s = mk(&p, 4);
    hm_sampler_accept(s, 0);
    hm_sampler_accept(s, 1);
    float m[4] = {3.0f, -2.0f, 1.0f, 0.0f};
    ck_assert_int_eq(hm_sampler_sample(s, m, &r), HM_OK);
    ck_assert_float_eq(m[0], 1.25f);
    ck_assert_float_eq(m[1], -4.25f);
    ck_assert_float_eq(m[2], 1.0f);
    ck_assert_int_eq(r.token, 0);
    hm_sampler_free(s);

    /* negative penalties encourage repetition */
    p = hm_sampler_params_default();
    p.temperature = 0.0f;
    p.frequency_penalty = -2.0f;
    s = mk(&p, 3);
    hm_sampler_accept(s, 1);
    float n[3] = {1.0f, 0.0f, 1.5f};
    ck_assert_int_eq(hm_sampler_sample(s, n, &r), HM_OK);
    ck_assert_int_eq(r.token, 1);
    hm_sampler_free(s);

    /* without penalties, accept is a no-op */
    p = hm_sampler_params_default();
    p.temperature = 0.0f;
    s = mk(&p, 3);
    hm_sampler_accept(s, 2);
    float o[3] = {1.0f, 0.0f, 1.5f};
    ck_assert_int_eq(hm_sampler_sample(s, o, &r), HM_OK);
    ck_assert_int_eq(r.token, 2);
    ck_assert_float_eq(o[2], 1.5f);
    hm_sampler_free(s);
}
END_TEST

/* ---- limits: a brute-force reference at V = 131072 ------------------------------ */

struct ref_c {
    float l;
    int32_t id;
};

static int ref_cmp(const void *a, const void *b)
{
    const struct ref_c *x = a, *y = b;
    if (x->l != y->l)
        return x->l > y->l ? -1 : 1;
    return x->id < y->id ? -1 : 1;
}

/* The documented algorithm with a full sort. */
static int32_t ref_sample(const float *logits, uint32_t V, const struct hm_sampler_params *p,
                          struct hm_rng *rng, struct ref_c *c)
{
    for (uint32_t i = 0; i < V; i++) {
        c[i].l = logits[i];
        c[i].id = (int32_t)i;
    }
    qsort(c, V, sizeof *c, ref_cmp);
    uint32_t n = V;
    if (p->top_k > 0 && (uint32_t)p->top_k < V)
        n = (uint32_t)p->top_k;
    double *w = hm_malloc(n * sizeof *w), Z = 0;
    for (uint32_t i = 0; i < n; i++) {
        w[i] = exp(((double)c[i].l - (double)c[0].l) / (double)p->temperature);
        Z += w[i];
    }
    uint32_t keep = n;
    if (p->top_p < 1.0f) {
        double cum = 0;
        for (uint32_t i = 0; i < n; i++) {
            cum += w[i];
            if (cum >= (double)p->top_p * Z) {
                keep = i + 1;
                break;
            }
        }
    }
    uint32_t km = 0;
    while (km < keep && w[km] >= (double)p->min_p * w[0])
        km++;
    keep = km;
    double total = 0, cum = 0, u = hm_rng_uniform(rng);
    for (uint32_t i = 0; i < keep; i++)
        total += w[i];
    uint32_t i;
    for (i = 0; i < keep; i++) {
        cum += w[i];
        if (cum > u * total)
            break;
    }
    if (i == keep)
        i = keep - 1;
    hm_free(w);
    return c[i].id;
}

START_TEST(test_large_vocab_reference)
{
    const uint32_t V = 131072;
    float *base = hm_malloc(V * sizeof *base), *l = hm_malloc(V * sizeof *l);
    struct ref_c *rc = hm_malloc(V * sizeof *rc);
    ck_assert(base && l && rc);
    struct hm_rng g;
    hm_rng_seed(&g, 5);
    for (uint32_t i = 0; i < V; i++) /* quantized so that many logits tie */
        base[i] = (float)(int)(hm_rng_uniform(&g) * 2000.0f) * 0.01f - 10.0f;
    static const struct {
        float t, top_p, min_p;
        int32_t top_k;
    } cases[] = {
        {1.0f, 1.0f, 0.0f, 0},      {1.0f, 0.9f, 0.0f, 0},  {0.7f, 0.95f, 0.0f, 40},
        {1.0f, 1.0f, 0.05f, 0},     {2.0f, 0.5f, 0.01f, 0}, {0.3f, 1.0f, 0.0f, 1000},
        {1.0f, 0.99f, 0.0f, 50000}, {0.1f, 0.8f, 0.1f, 0},  {1.0f, 0.99f, 0.5f, 0},
        {1.5f, 1.0f, 0.2f, 100},    {1.0f, 0.9f, 0.02f, 0},
    };
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        struct hm_sampler_params p = hm_sampler_params_default();
        p.temperature = cases[ci].t;
        p.top_p = cases[ci].top_p;
        p.min_p = cases[ci].min_p;
        p.top_k = cases[ci].top_k;
        p.seed = 1000 + ci;
        struct hm_rng rr;
        hm_rng_seed(&rr, p.seed);
        struct hm_sampler *s = mk(&p, V);
        for (int k = 0; k < 6; k++) {
            struct hm_sample r;
            memcpy(l, base, V * sizeof *l);
            ck_assert_int_eq(hm_sampler_sample(s, l, &r), HM_OK);
            int32_t want = ref_sample(base, V, &p, &rr, rc);
            ck_assert_msg(r.token == want, "case %zu draw %d: %d != %d", ci, k, r.token, want);
        }
        hm_sampler_free(s);
    }
    hm_free(base);
    hm_free(l);
    hm_free(rc);
}
END_TEST

START_TEST(test_large_vocab_top_logprobs)
{
    const uint32_t V = 131072;
    float *l = hm_malloc(V * sizeof *l);
    ck_assert_ptr_nonnull(l);
    for (uint32_t i = 0; i < V; i++)
        l[i] = (float)((i * 2654435761u) % 1000u) * 0.001f;
    struct hm_sampler_params p = hm_sampler_params_default();
    p.temperature = 0.0f;
    p.want_logprobs = true;
    p.n_top_logprobs = HM_MAX_TOP_LOGPROBS;
    struct hm_sampler *s = mk(&p, V);
    struct hm_sample r;
    ck_assert_int_eq(hm_sampler_sample(s, l, &r), HM_OK);
    ck_assert_uint_eq(r.n_top, HM_MAX_TOP_LOGPROBS);
    ck_assert_int_eq(r.top_tokens[0], r.token);
    for (uint32_t i = 1; i < r.n_top; i++) {
        float a = l[r.top_tokens[i - 1]], b = l[r.top_tokens[i]];
        ck_assert(a > b || (a == b && r.top_tokens[i - 1] < r.top_tokens[i]));
        ck_assert(r.top_logprobs[i - 1] >= r.top_logprobs[i]);
    }
    /* nothing outside the list beats its last entry */
    float last = l[r.top_tokens[r.n_top - 1]];
    int n_above = 0;
    for (uint32_t i = 0; i < V; i++)
        n_above += l[i] > last || (l[i] == last && (int32_t)i <= r.top_tokens[r.n_top - 1]);
    ck_assert_int_eq(n_above, HM_MAX_TOP_LOGPROBS);
    hm_sampler_free(s);
    hm_free(l);
}
END_TEST

/* ---- errors --------------------------------------------------------------------- */

START_TEST(test_invalid_params)
{
    struct hm_sampler *s = (struct hm_sampler *)1;
    struct hm_sampler_params p;
#define BAD(field, value)                                                                          \
    do {                                                                                           \
        p = hm_sampler_params_default();                                                           \
        p.field = (value);                                                                         \
        s = (struct hm_sampler *)1;                                                                \
        ck_assert_int_eq(hm_sampler_new(&p, 10, &s), HM_EINVAL);                                   \
        ck_assert_ptr_null(s);                                                                     \
    } while (0)
    BAD(temperature, -0.1f);
    BAD(temperature, 2.01f);
    BAD(temperature, NAN);
    BAD(top_p, 0.0f);
    BAD(top_p, 1.01f);
    BAD(top_p, NAN);
    BAD(min_p, -0.01f);
    BAD(min_p, 1.5f);
    BAD(presence_penalty, 2.5f);
    BAD(presence_penalty, -2.5f);
    BAD(frequency_penalty, 2.01f);
    BAD(frequency_penalty, NAN);
    BAD(repetition_penalty, 0.0f);
    BAD(repetition_penalty, -1.0f);
    BAD(repetition_penalty, INFINITY);
    BAD(n_top_logprobs, HM_MAX_TOP_LOGPROBS + 1);
    BAD(n_bias, 1); /* bias NULL */
#undef BAD
    const struct hm_logit_bias out_of_range[1] = {{10, 1.0f}};
    const struct hm_logit_bias negative[1] = {{-1, 1.0f}};
    const struct hm_logit_bias inf_bias[1] = {{3, INFINITY}};
    const struct hm_logit_bias *bad[3] = {out_of_range, negative, inf_bias};
    for (int i = 0; i < 3; i++) {
        p = hm_sampler_params_default();
        p.bias = bad[i];
        p.n_bias = 1;
        ck_assert_int_eq(hm_sampler_new(&p, 10, &s), HM_EINVAL);
        ck_assert_ptr_null(s);
    }
    p = hm_sampler_params_default();
    ck_assert_int_eq(hm_sampler_new(&p, 0, &s), HM_EINVAL);
    ck_assert_int_eq(hm_sampler_new(NULL, 10, &s), HM_EINVAL);
    ck_assert_int_eq(hm_sampler_new(&p, 10, NULL), HM_EINVAL);

    /* the edges are valid */
    p.temperature = 2.0f;
    p.top_p = 1.0f;
    p.min_p = 1.0f;
    p.presence_penalty = -2.0f;
    p.frequency_penalty = 2.0f;
    p.repetition_penalty = 0.01f;
    p.n_top_logprobs = HM_MAX_TOP_LOGPROBS;
    ck_assert_int_eq(hm_sampler_new(&p, 10, &s), HM_OK);
    hm_sampler_free(s);
    hm_sampler_free(NULL);
}
END_TEST

START_TEST(test_invalid_logits)
{
    struct hm_sampler_params p = hm_sampler_params_default();
    struct hm_sampler *s = mk(&p, 3);
    struct hm_sample r;
    float a[3] = {0.0f, NAN, 1.0f};
    float b[3] = {0.0f, INFINITY, 1.0f};
    float c[3] = {-INFINITY, -INFINITY, -INFINITY};
    ck_assert_int_eq(hm_sampler_sample(s, a, &r), HM_EINVAL);
    ck_assert_int_eq(hm_sampler_sample(s, b, &r), HM_EINVAL);
    ck_assert_int_eq(hm_sampler_sample(s, c, &r), HM_EINVAL);
    ck_assert_int_eq(hm_sampler_sample(s, NULL, &r), HM_EINVAL);
    /* a masked token is never drawn */
    float d[3] = {-INFINITY, 0.0f, -INFINITY};
    for (int i = 0; i < 50; i++)
        ck_assert_int_eq(draw(s, d, 3), 1);
    hm_sampler_free(s);
}
END_TEST

/* ---- oom ------------------------------------------------------------------------ */

START_TEST(test_oom_new)
{
    const struct hm_logit_bias b[1] = {{1, 2.0f}};
    struct hm_sampler_params p = hm_sampler_params_default();
    p.bias = b;
    p.n_bias = 1;
    p.presence_penalty = 0.5f;
    long n;
    for (n = 1;; n++) {
        struct hm_sampler *s = (struct hm_sampler *)1;
        hm_alloc_fail_after(n);
        int rc = hm_sampler_new(&p, 1000, &s);
        hm_alloc_fail_after(0);
        if (rc == HM_OK) {
            float l[1000] = {0};
            struct hm_sample r;
            hm_alloc_fail_after(1); /* sampling never allocates */
            hm_sampler_accept(s, 3);
            ck_assert_int_eq(hm_sampler_sample(s, l, &r), HM_OK);
            hm_alloc_fail_after(0);
            hm_sampler_free(s);
            break;
        }
        ck_assert_int_eq(rc, HM_ENOMEM);
        ck_assert_ptr_null(s);
    }
    ck_assert_int_ge(n, 5);
}
END_TEST

static Suite *sampler_suite(void)
{
    Suite *s = suite_create("sampler");
    TCase *core = tcase_create("core");
    TCase *limits = tcase_create("limits");
    TCase *errors = tcase_create("errors");
    TCase *oom = tcase_create("oom");
    tcase_add_test(core, test_rng_known_values);
    tcase_add_test(core, test_seed42_first_draws);
    tcase_add_test(core, test_greedy_ties);
    tcase_add_test(core, test_no_filter);
    tcase_add_test(core, test_top_k);
    tcase_add_test(core, test_top_p);
    tcase_add_test(core, test_min_p);
    tcase_add_test(core, test_temperature);
    tcase_add_test(core, test_distribution);
    tcase_add_test(core, test_determinism);
    tcase_add_test(core, test_logprobs);
    tcase_add_test(core, test_score);
    tcase_add_test(core, test_bias);
    tcase_add_test(core, test_penalties);
    tcase_add_test(limits, test_large_vocab_reference);
    tcase_add_test(limits, test_large_vocab_top_logprobs);
    tcase_set_timeout(limits, 60);
    tcase_add_test(errors, test_invalid_params);
    tcase_add_test(errors, test_invalid_logits);
    tcase_add_test(oom, test_oom_new);
    suite_add_tcase(s, core);
    suite_add_tcase(s, limits);
    suite_add_tcase(s, errors);
    suite_add_tcase(s, oom);
    return s;
}

int main(void)
{
    return hm_test_run(sampler_suite(), CK_NORMAL);
}
