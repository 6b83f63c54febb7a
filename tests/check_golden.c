/*
 * check_golden.c - the C engine against the reference implementation's fixtures.
 *
 * The fixtures (tests/golden/, one JSON file each) and the tiny models they use were written by
 * tools/reference/make_golden.py (Python/PyTorch, an independent implementation of
 * ../shared/spec/HYBRIDMOE.md); this test needs no Python. For every fixture it loads
 * the model, opens a session with the fixture's request controls and trace = true,
 * prefills the prompt with all_logits, then replays the greedy continuation one token
 * at a time, and compares:
 *
 *   logits          |a - b| <= 1e-4 * max(1, |b|)  (b = reference)
 *   greedy tokens   exact (argmax, lowest index on ties); the reference's token is
 *                   pushed either way so later positions stay comparable
 *   c_t             |a - b| <= 1e-5
 *   c_req           |a - b| <= 1e-9
 *   window, N       exact
 *   k, experts      exact, per token per MoE layer, in chosen order
 *   mean experts    |a - b| <= 1e-9; attention positions visited: exact
 *   KV bytes        kv_elems * element size (2 or 4), the same size for the baseline
 *
 * Tokenizer fixtures (tests/golden/tokenizer-*.json): text -> ids exactly, and back.
 * Every mismatch is printed to stderr (fixture, what, position, values); a test fails
 * if any was found.
 */
#include <check.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hm/alloc.h"
#include "hm/engine.h"
#include "hm/err.h"
#include "hm/model.h"
#include "hm/tokenizer.h"
#include "testutil.h"

#define LOGIT_RTOL 1e-4
#define C_TOL 1e-5
#define CREQ_TOL 1e-9
#define MAX_REPORTS 12

static const char *const fixtures[] = {
    "full-plain",  "full-complexity-maxexp", "full-thresh-window", "full-topk",
    "bare-plain",  "bare-complexity-window", "window-long",        "window-forced",
    "window-c1",   "default-plain",
};
#define N_FIXTURES (sizeof(fixtures) / sizeof(fixtures[0]))

static const char *const tok_fixtures[] = {"tiny", "default"};
#define N_TOK_FIXTURES (sizeof(tok_fixtures) / sizeof(tok_fixtures[0]))

static const char *srcdir(void)
{
    const char *s = getenv("HM_SRCDIR");
    return (s && *s) ? s : HM_SRCDIR;
}

/* Path of a file under tests/golden/ (owned; hm_free). */
static char *golden_path(const char *name, const char *suffix)
{
    const char *sd = srcdir();
    size_t n = strlen(sd) + strlen(name) + strlen(suffix) + 32;
    char *p = hm_malloc(n);
    ck_assert_ptr_nonnull(p);
    snprintf(p, n, "%s/tests/golden/%s%s", sd, name, suffix);
    return p;
}

static json_t *load_json(const char *name)
{
    char *path = golden_path(name, ".json");
    json_error_t jerr;
    json_t *j = json_load_file(path, 0, &jerr);
    if (!j)
        ck_abort_msg("%s: %s (line %d)", path, jerr.text, jerr.line);
    hm_free(path);
    return j;
}

static struct hm_model *load_model(const char *rel)
{
    char *path = golden_path(rel, "");
    struct hm_model *m = NULL;
    struct hm_errmsg em = {{0}};
    int rc = hm_model_load(path, &m, &em);
    if (rc < 0)
        ck_abort_msg("hm_model_load(%s): %s (%s)", path, em.text, hm_strerror(rc));
    hm_free(path);
    return m;
}

static long jint(const json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    ck_assert_msg(json_is_integer(v), "fixture key '%s' is not an integer", key);
    return (long)json_integer_value(v);
}

static double jnum(const json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    ck_assert_msg(json_is_number(v), "fixture key '%s' is not a number", key);
    return json_number_value(v);
}

struct report {
    const char *fixture;
    unsigned n_bad;
};

static void bad(struct report *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void bad(struct report *r, const char *fmt, ...)
{
    va_list ap;
    if (r->n_bad++ < MAX_REPORTS) {
        fprintf(stderr, "golden %s: ", r->fixture);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
    }
}

/* Compares the engine's logits for position pos with the fixture's row, if any. */
static void cmp_logits(struct report *r, const json_t *fx, uint32_t pos, const float *lg,
                       uint32_t V)
{
    json_t *lpos = json_object_get(fx, "logit_positions");
    json_t *rows = json_object_get(fx, "logits");
    size_t i;
    for (i = 0; i < json_array_size(lpos); i++) {
        if ((uint32_t)json_integer_value(json_array_get(lpos, i)) != pos)
            continue;
        json_t *row = json_array_get(rows, i);
        ck_assert_uint_eq(json_array_size(row), V);
        unsigned n_off = 0;
        double worst = 0;
        uint32_t worst_v = 0;
        for (uint32_t v = 0; v < V; v++) {
            double b = json_number_value(json_array_get(row, v));
            double d = fabs((double)lg[v] - b);
            double lim = LOGIT_RTOL * fmax(1.0, fabs(b));
            if (d > lim) {
                n_off++;
                if (d / lim > worst) {
                    worst = d / lim;
                    worst_v = v;
                }
            }
        }
        if (n_off)
            bad(r, "logits at position %u: %u of %u values off; worst token %u: engine %.7g "
                   "reference %.7g",
                pos, n_off, V, worst_v, (double)lg[worst_v],
                json_number_value(json_array_get(row, worst_v)));
        return;
    }
}

static uint32_t argmax(const float *lg, uint32_t V)
{
    uint32_t best = 0;
    for (uint32_t v = 1; v < V; v++)
        if (lg[v] > lg[best])
            best = v;
    return best;
}

static void run_fixture(const char *name)
{
    json_t *fx = load_json(name);
    struct report r = {name, 0};
    struct hm_model *m = load_model(json_string_value(json_object_get(fx, "model")));
    uint32_t V = m->hp.n_vocab;
    ck_assert_uint_eq(V, (uint32_t)jint(fx, "n_vocab"));

    json_t *jprompt = json_object_get(fx, "prompt");
    json_t *jgen = json_object_get(fx, "generated");
    json_t *ov = json_object_get(fx, "overrides");
    uint32_t n_prompt = (uint32_t)json_array_size(jprompt);
    uint32_t n_gen = (uint32_t)json_array_size(jgen);
    int32_t *prompt = hm_mallocarray(n_prompt, sizeof(*prompt));
    ck_assert_ptr_nonnull(prompt);
    for (uint32_t i = 0; i < n_prompt; i++)
        prompt[i] = (int32_t)json_integer_value(json_array_get(jprompt, i));

    struct hm_engine_opts eo = hm_engine_opts_default();
    eo.n_threads = 1;
    eo.matmul = HM_MATMUL_DETERMINISTIC;
    struct hm_engine *e = NULL;
    ck_assert_int_eq(hm_engine_new(m, &eo, &e), HM_OK);

    struct hm_session_opts so = hm_session_opts_default();
    so.max_tokens = (uint32_t)jint(fx, "max_tokens");
    so.trace = true;
    json_t *v;
    if ((v = json_object_get(ov, "complexity")) && json_is_number(v))
        so.complexity = (float)json_number_value(v);
    if ((v = json_object_get(ov, "window")) && json_is_integer(v))
        so.window = (int64_t)json_integer_value(v);
    if ((v = json_object_get(ov, "max_experts")) && json_is_integer(v))
        so.max_experts = (uint32_t)json_integer_value(v);
    if ((v = json_object_get(ov, "router_threshold")) && json_is_number(v))
        so.router_threshold = (float)json_number_value(v);

    struct hm_errmsg em = {{0}};
    struct hm_session_plan plan;
    int rc = hm_session_plan(m, prompt, n_prompt, &so, &plan, &em);
    if (rc < 0)
        ck_abort_msg("%s: hm_session_plan: %s (%s)", name, em.text, hm_strerror(rc));
    struct hm_session *s = NULL;
    rc = hm_session_new(m, prompt, n_prompt, &so, &s, &em);
    if (rc < 0)
        ck_abort_msg("%s: hm_session_new: %s (%s)", name, em.text, hm_strerror(rc));

    double c_req = jnum(fx, "c_req");
    int64_t win = jint(fx, "window");
    uint32_t n_planned = (uint32_t)jint(fx, "n_planned");
    struct hm_session_stats st;
    hm_session_get_stats(s, &st);
    if (fabs(st.c_req - c_req) > CREQ_TOL)
        bad(&r, "c_req: engine %.12f reference %.12f", st.c_req, c_req);
    if (fabs(plan.c_req - c_req) > CREQ_TOL)
        bad(&r, "plan c_req: engine %.12f reference %.12f", plan.c_req, c_req);
    if (st.window != win)
        bad(&r, "window: engine %lld reference %lld", (long long)st.window, (long long)win);
    if (plan.window != win)
        bad(&r, "plan window: engine %lld reference %lld", (long long)plan.window,
            (long long)win);
    if (st.n_ctx_planned != n_planned)
        bad(&r, "N: engine %u reference %u", st.n_ctx_planned, n_planned);

    /* prefill, in chunks the engine accepts */
    float *lg = hm_mallocarray((size_t)n_prompt * V, sizeof(float));
    ck_assert_ptr_nonnull(lg);
    uint32_t done = 0;
    while (done < n_prompt) {
        uint32_t n = n_prompt - done;
        if (n > eo.max_step_tokens)
            n = eo.max_step_tokens;
        struct hm_step_item it = {.s = s, .n_tokens = n, .all_logits = true,
                                  .logits = lg + (size_t)done * V};
        ck_assert_int_eq(hm_engine_step(e, &it, 1), HM_OK);
        done += n;
    }
    for (uint32_t t = 0; t < n_prompt; t++)
        cmp_logits(&r, fx, t, lg + (size_t)t * V, V);

    /* greedy continuation, teacher-forced with the reference's tokens */
    float *last = hm_mallocarray(V, sizeof(float));
    ck_assert_ptr_nonnull(last);
    memcpy(last, lg + (size_t)(n_prompt - 1) * V, (size_t)V * sizeof(float));
    for (uint32_t i = 0; i < n_gen; i++) {
        int32_t want = (int32_t)json_integer_value(json_array_get(jgen, i));
        uint32_t got = argmax(last, V);
        if ((int32_t)got != want)
            bad(&r, "greedy token %u (position %u): engine %u reference %d", i,
                n_prompt + i, got, want);
        ck_assert_int_eq(hm_session_push(s, want), HM_OK);
        struct hm_step_item it = {.s = s, .n_tokens = 1, .all_logits = false, .logits = last};
        ck_assert_int_eq(hm_engine_step(e, &it, 1), HM_OK);
        cmp_logits(&r, fx, n_prompt + i, last, V);
    }
    uint32_t n_tok = n_prompt + n_gen;
    ck_assert_uint_eq(hm_session_n_tokens(s), n_tok);

    /* trace: c_t, k and experts */
    const struct hm_trace *tr = hm_session_trace(s);
    ck_assert_ptr_nonnull(tr);
    json_t *jc = json_object_get(fx, "c");
    json_t *jk = json_object_get(fx, "k");
    json_t *jx = json_object_get(fx, "experts");
    uint32_t n_moe = (uint32_t)jint(fx, "n_moe");
    ck_assert_uint_eq(tr->n_moe, n_moe);
    ck_assert_uint_eq(tr->k_max, (uint32_t)jint(fx, "k_max"));
    ck_assert_uint_eq(tr->n_pos, n_tok);
    for (uint32_t t = 0; t < n_tok; t++) {
        double cr = json_number_value(json_array_get(jc, t));
        if (fabs((double)tr->c[t] - cr) > C_TOL)
            bad(&r, "c_t at position %u: engine %.8g reference %.8g", t, (double)tr->c[t], cr);
        for (uint32_t j = 0; j < n_moe; j++) {
            json_t *kx = json_array_get(json_array_get(jx, t), j);
            uint32_t kr = (uint32_t)json_integer_value(json_array_get(json_array_get(jk, t), j));
            uint32_t ke = tr->k[t * n_moe + j];
            const uint8_t *ex = tr->experts + ((size_t)t * n_moe + j) * tr->k_max;
            char es[64] = "", rs[64] = "";
            int mism = ke != kr;
            for (uint32_t i = 0; i < kr && i < ke; i++)
                if (ex[i] != (uint8_t)json_integer_value(json_array_get(kx, i)))
                    mism = 1;
            if (mism) {
                for (uint32_t i = 0; i < ke && i < 8; i++)
                    snprintf(es + strlen(es), sizeof(es) - strlen(es), " %u", ex[i]);
                for (uint32_t i = 0; i < kr && i < 8; i++)
                    snprintf(rs + strlen(rs), sizeof(rs) - strlen(rs), " %lld",
                             (long long)json_integer_value(json_array_get(kx, i)));
                bad(&r, "experts at position %u, MoE layer %u: engine k=%u [%s ] reference "
                        "k=%u [%s ]",
                    t, j, ke, es, kr, rs);
            }
        }
    }

    /* reported figures */
    hm_session_get_stats(s, &st);
    double me = jnum(fx, "mean_experts");
    if (n_moe && fabs(st.mean_experts - me) > 1e-9)
        bad(&r, "mean experts: engine %.12f reference %.12f", st.mean_experts, me);
    uint64_t ap = (uint64_t)jint(fx, "attn_positions");
    if (st.attn_positions != ap)
        bad(&r, "attention positions: engine %llu reference %llu",
            (unsigned long long)st.attn_positions, (unsigned long long)ap);
    uint64_t ke = (uint64_t)jint(fx, "kv_elems"), kb = (uint64_t)jint(fx, "kv_elems_baseline");
    if (st.kv_bytes != ke * 4 && st.kv_bytes != ke * 2)
        bad(&r, "KV bytes: engine %llu, reference %llu elements (x2 or x4)",
            (unsigned long long)st.kv_bytes, (unsigned long long)ke);
    else if (st.kv_bytes_baseline != kb * (st.kv_bytes / ke))
        bad(&r, "baseline KV bytes: engine %llu, reference %llu elements x %llu",
            (unsigned long long)st.kv_bytes_baseline, (unsigned long long)kb,
            (unsigned long long)(st.kv_bytes / ke));
    if (plan.kv_bytes != st.kv_bytes)
        bad(&r, "plan KV bytes %llu != session %llu", (unsigned long long)plan.kv_bytes,
            (unsigned long long)st.kv_bytes);

    hm_free(last);
    hm_free(lg);
    hm_free(prompt);
    hm_session_free(s);
    hm_engine_free(e);
    hm_model_free(m);
    json_decref(fx);
    ck_assert_msg(r.n_bad == 0, "golden %s: %u mismatches (details on stderr)", name, r.n_bad);
}

START_TEST(test_fixture)
{
    run_fixture(fixtures[_i]);
}
END_TEST

START_TEST(test_tokenizer)
{
    char name[64];
    snprintf(name, sizeof(name), "tokenizer-%s", tok_fixtures[_i]);
    json_t *fx = load_json(name);
    struct report r = {tok_fixtures[_i], 0};
    struct hm_model *m = load_model(json_string_value(json_object_get(fx, "model")));
    json_t *cases = json_object_get(fx, "cases");
    ck_assert_uint_gt(json_array_size(cases), 0);
    for (size_t i = 0; i < json_array_size(cases); i++) {
        json_t *c = json_array_get(cases, i);
        json_t *jt = json_object_get(c, "text");
        json_t *ji = json_object_get(c, "ids");
        const char *text = json_string_value(jt);
        size_t len = json_string_length(jt);
        int32_t *ids = NULL;
        size_t n = 0;
        ck_assert_int_eq(hm_tokenizer_encode(m->tok, text, len, 0, &ids, &n), HM_OK);
        size_t nr = json_array_size(ji);
        size_t k = 0;
        while (k < n && k < nr && ids[k] == (int32_t)json_integer_value(json_array_get(ji, k)))
            k++;
        if (k != n || k != nr)
            bad(&r, "case %zu: %zu ids, reference %zu; first difference at %zu: engine %d "
                    "reference %lld",
                i, n, nr, k, k < n ? ids[k] : -1,
                k < nr ? (long long)json_integer_value(json_array_get(ji, k)) : -1LL);
        char *back = NULL;
        size_t blen = 0;
        ck_assert_int_eq(hm_tokenizer_decode(m->tok, ids, n, false, &back, &blen), HM_OK);
        if (blen != len || memcmp(back, text, len) != 0)
            bad(&r, "case %zu: decode(encode(text)) differs", i);
        hm_free(back);
        hm_free(ids);
    }
    hm_model_free(m);
    json_decref(fx);
    ck_assert_msg(r.n_bad == 0, "golden tokenizer-%s: %u mismatches (details on stderr)",
                  tok_fixtures[_i], r.n_bad);
}
END_TEST

/* The fixture files themselves: every listed fixture exists, and its model loads. */
START_TEST(test_fixture_files)
{
    for (size_t i = 0; i < N_FIXTURES; i++) {
        json_t *fx = load_json(fixtures[i]);
        ck_assert_ptr_nonnull(json_object_get(fx, "logits"));
        ck_assert_uint_eq(json_array_size(json_object_get(fx, "logits")),
                          json_array_size(json_object_get(fx, "logit_positions")));
        json_decref(fx);
    }
}
END_TEST

static Suite *golden_suite(void)
{
    Suite *s = suite_create("golden");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_fixture_files);
    tcase_add_loop_test(tc, test_fixture, 0, (int)N_FIXTURES);
    tcase_add_loop_test(tc, test_tokenizer, 0, (int)N_TOK_FIXTURES);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return hm_test_run(golden_suite(), CK_NORMAL);
}
