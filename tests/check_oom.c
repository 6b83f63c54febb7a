/* check_oom.c - allocation-failure injection across modules: for every n, the n-th
 * allocation from now on fails (hm_alloc_fail_after; jansson is routed through hm_malloc
 * too), and each entry point must return its out-of-memory error, leave its out-arg NULL
 * and leak nothing (LSan in the sanitizer build), then work normally once allocation
 * succeeds again.
 *
 * Paths: GGUF open + model binding (the tiny model), tokenizer encode/decode, engine and
 * session creation and a prefill+decode step (a failed step must leave the session
 * unchanged: the logits after a retry equal those of a run with no failure), and the
 * server's request parsing, chat rendering, error bodies and configuration. */
#include <check.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hm/alloc.h"
#include "hm/engine.h"
#include "hm/err.h"
#include "hm/gguf.h"
#include "hm/model.h"
#include "hm/tokenizer.h"

#include "api_error.h"
#include "api_request.h"
#include "conf.h"
#include "server.h"
#include "testutil.h"

#define MAX_ITER 200000L

static unsigned char *model_bytes;
static size_t model_size;

static void read_model(void)
{
    const char *b = getenv("HM_BUILDDIR");
    char path[4096];
    FILE *f;
    long n;

    snprintf(path, sizeof(path), "%s/models/tiny.gguf", b && *b ? b : HM_BUILDDIR);
    f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "cannot open %s (run make first)", path);
    ck_assert_int_eq(fseek(f, 0, SEEK_END), 0);
    n = ftell(f);
    ck_assert_int_gt(n, 0);
    rewind(f);
    model_bytes = malloc((size_t)n);
    ck_assert_ptr_nonnull(model_bytes);
    ck_assert_uint_eq(fread(model_bytes, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    model_size = (size_t)n;
}

static struct hm_model *load_model(void)
{
    struct hm_errmsg em = {{0}};
    struct hm_gguf *g;
    struct hm_model *m;

    ck_assert_int_eq(hm_gguf_open_mem(model_bytes, model_size, "tiny", &g, &em), HM_OK);
    ck_assert_msg(hm_model_from_gguf(g, &m, &em) == HM_OK, "%s", em.text);
    return m;
}

static void setup(void)
{
    json_set_alloc_funcs(hm_malloc, hm_free);
    read_model();
}

static void teardown(void)
{
    hm_alloc_fail_after(0);
    free(model_bytes);
    model_bytes = NULL;
}

START_TEST(test_model_load)
{
    struct hm_errmsg em;
    struct hm_gguf *g;
    struct hm_model *m;
    long n;
    int rc;

    for (n = 1; n < MAX_ITER; n++) {
        memset(&em, 0, sizeof(em));
        g = (struct hm_gguf *)&em;
        m = (struct hm_model *)&em;
        hm_alloc_fail_after(n);
        rc = hm_gguf_open_mem(model_bytes, model_size, "tiny", &g, &em);
        if (rc == HM_OK)
            rc = hm_model_from_gguf(g, &m, &em); /* takes g, even on failure */
        else
            ck_assert_ptr_null(g);
        hm_alloc_fail_after(0);
        if (rc == HM_OK) {
            ck_assert_ptr_nonnull(m);
            hm_model_free(m);
            break;
        }
        ck_assert_msg(rc == HM_ENOMEM, "allocation %ld: %s (%s)", n, hm_err_name(rc), em.text);
        ck_assert_msg(em.text[0] != '\0', "allocation %ld: no message", n);
    }
    ck_assert_int_lt(n, MAX_ITER);
    fprintf(stderr, "check_oom: model load: %ld allocation points\n", n - 1);
}
END_TEST

START_TEST(test_tokenizer)
{
    static const char text[] = "Hello, w\xc3\xb6rld! <|bos|> 12345 \xff\xfe tokens.";
    struct hm_model *m = load_model();
    int32_t *ids;
    size_t n_ids, len;
    char *out;
    long n;
    int rc;

    for (n = 1; n < MAX_ITER; n++) {
        ids = (int32_t *)&n_ids;
        hm_alloc_fail_after(n);
        rc = hm_tokenizer_encode(m->tok, text, sizeof(text) - 1, HM_TOK_ADD_BOS, &ids, &n_ids);
        hm_alloc_fail_after(0);
        if (rc == HM_OK)
            break;
        ck_assert_int_eq(rc, HM_ENOMEM);
        ck_assert_ptr_null(ids);
    }
    ck_assert_int_lt(n, MAX_ITER);
    for (n = 1; n < MAX_ITER; n++) {
        out = (char *)&len;
        hm_alloc_fail_after(n);
        rc = hm_tokenizer_decode(m->tok, ids, n_ids, false, &out, &len);
        hm_alloc_fail_after(0);
        if (rc == HM_OK)
            break;
        ck_assert_int_eq(rc, HM_ENOMEM);
        ck_assert_ptr_null(out);
    }
    ck_assert_int_lt(n, MAX_ITER);
    hm_free(out);
    hm_free(ids);
    hm_model_free(m);
}
END_TEST

/* Prefill of the prompt, then one decode step; last logits into logits (V floats). */
static int run_steps(struct hm_engine *e, struct hm_session *s, float *logits, int32_t next)
{
    struct hm_step_item it = {0};
    int rc;

    if (hm_session_n_past(s) < hm_session_n_prompt(s)) {
        it.s = s;
        it.n_tokens = hm_session_n_prompt(s) - hm_session_n_past(s);
        it.logits = logits;
        rc = hm_engine_step(e, &it, 1);
        if (rc < 0)
            return rc;
    }
    if (hm_session_n_tokens(s) == hm_session_n_prompt(s)) {
        rc = hm_session_push(s, next);
        if (rc < 0)
            return rc;
    }
    memset(&it, 0, sizeof(it));
    it.s = s;
    it.n_tokens = 1;
    it.logits = logits;
    return hm_engine_step(e, &it, 1);
}

START_TEST(test_engine)
{
    static const int32_t prompt[] = {256, 72, 101, 108, 108, 111, 32, 119, 111, 114};
    struct hm_model *m = load_model();
    struct hm_engine_opts eo = hm_engine_opts_default();
    struct hm_session_opts so = hm_session_opts_default();
    struct hm_engine *e = NULL;
    struct hm_session *s = NULL;
    uint32_t V = m->hp.n_vocab, i;
    float *want = calloc(V, sizeof(float)), *got = calloc(V, sizeof(float));
    long n, steps_failed = 0;
    int rc;

    ck_assert_ptr_nonnull(want);
    ck_assert_ptr_nonnull(got);
    eo.n_threads = 1;
    so.max_tokens = 8;
    /* reference */
    ck_assert_int_eq(hm_engine_new(m, &eo, &e), HM_OK);
    ck_assert_int_eq(hm_session_new(m, prompt, 10, &so, &s, NULL), HM_OK);
    ck_assert_int_eq(run_steps(e, s, want, 65), HM_OK);
    hm_session_free(s);
    hm_engine_free(e);

    for (n = 1; n < MAX_ITER; n++) {
        e = (struct hm_engine *)&n;
        hm_alloc_fail_after(n);
        rc = hm_engine_new(m, &eo, &e);
        hm_alloc_fail_after(0);
        if (rc == HM_OK)
            break;
        ck_assert_int_eq(rc, HM_ENOMEM);
        ck_assert_ptr_null(e);
    }
    ck_assert_int_lt(n, MAX_ITER);
    for (n = 1; n < MAX_ITER; n++) {
        s = (struct hm_session *)&n;
        hm_alloc_fail_after(n);
        rc = hm_session_new(m, prompt, 10, &so, &s, NULL);
        hm_alloc_fail_after(0);
        if (rc == HM_OK)
            break;
        ck_assert_int_eq(rc, HM_ENOMEM);
        ck_assert_ptr_null(s);
    }
    ck_assert_int_lt(n, MAX_ITER);
    /* steps: fail, then retry the same session without failure until it goes through */
    for (n = 1; n < MAX_ITER; n++) {
        hm_alloc_fail_after(n);
        rc = run_steps(e, s, got, 65);
        hm_alloc_fail_after(0);
        if (rc == HM_OK)
            break;
        ck_assert_int_eq(rc, HM_ENOMEM);
        steps_failed++;
    }
    ck_assert_int_lt(n, MAX_ITER);
    for (i = 0; i < V; i++)
        ck_assert_msg(got[i] == want[i] || (isnan(got[i]) && isnan(want[i])),
                      "logit %u after %ld failed steps: %g, want %g", i, steps_failed,
                      (double)got[i], (double)want[i]);
    fprintf(stderr, "check_oom: engine: %ld failed step attempts, then identical logits\n",
            steps_failed);
    hm_session_free(s);
    hm_engine_free(e);
    hm_model_free(m);
    free(want);
    free(got);
}
END_TEST

START_TEST(test_server_request)
{
    static const char *const bodies[2] = {
        "{\"model\":\"tiny\",\"prompt\":[\"a\",[1,2,3],\"b\"],\"n\":2,\"max_tokens\":16,"
        "\"stop\":[\"\\n\",\"x\"],\"logit_bias\":{\"5\":-100,\"7\":2},\"logprobs\":3,"
        "\"stream\":true,\"stream_options\":{\"include_usage\":true},\"user\":\"u\","
        "\"hybridmoe\":{\"window\":16,\"max_experts\":1}}",
        "{\"model\":\"tiny\",\"messages\":[{\"role\":\"system\",\"content\":\"Be brief.\"},"
        "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"Hi\"},"
        "{\"type\":\"text\",\"text\":\" there\"}]}],\"max_tokens\":16,\"stop\":[\"\\n\",\"x\"],"
        "\"logit_bias\":{\"5\":-100,\"7\":2},\"logprobs\":true,\"top_logprobs\":3,"
        "\"stream\":true,\"stream_options\":{\"include_usage\":true},"
        "\"hybridmoe\":{\"window\":16,\"max_experts\":1},\"n\":2}",
    };
    const struct hm_api_limits lim = {.n_vocab = 512, .n_ctx = 256, .k_max = 2, .max_n = 8,
                                      .default_max_tokens = 16};
    struct hm_gen_request *r;
    struct hm_api_error e;
    json_error_t je;
    json_t *root, *eb;
    char *text;
    size_t len;
    bool special;
    long n;
    int k, rc;

    for (k = HM_API_COMPLETIONS; k <= HM_API_CHAT; k++) {
        for (n = 1; n < MAX_ITER; n++) {
            hm_alloc_fail_after(n);
            root = json_loadb(bodies[k], strlen(bodies[k]), JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &je);
            hm_alloc_fail_after(0);
            if (root)
                break;
        }
        ck_assert_msg(root != NULL, "%s", je.text);
        for (n = 1; n < MAX_ITER; n++) {
            memset(&e, 0, sizeof(e));
            r = (struct hm_gen_request *)&e;
            hm_alloc_fail_after(n);
            rc = hm_gen_request_parse(root, (enum hm_api_kind)k, &lim, &r, &e);
            hm_alloc_fail_after(0);
            if (rc == 0)
                break;
            ck_assert_ptr_null(r);
            ck_assert_msg(e.kind == HM_AERR_INTERNAL, "kind %d at allocation %ld: %s",
                          (int)e.kind, n, e.message);
        }
        ck_assert_int_lt(n, MAX_ITER);
        if (k == HM_API_CHAT) {
            for (n = 1; n < MAX_ITER; n++) {
                text = NULL;
                hm_alloc_fail_after(n);
                rc = hm_chat_render(HM_TMPL_CHATML, r->messages, r->n_messages, &text, &len,
                                    &special);
                hm_alloc_fail_after(0);
                if (rc == 0)
                    break;
                ck_assert_ptr_null(text);
            }
            ck_assert_int_lt(n, MAX_ITER);
            hm_free(text);
        }
        hm_gen_request_free(r);
        json_decref(root);
    }

    hm_api_error_set(&e, HM_AERR_INVALID, "messages[1].content", "bad %s", "thing");
    for (n = 1; n < MAX_ITER; n++) {
        hm_alloc_fail_after(n);
        eb = hm_api_error_json(&e);
        hm_alloc_fail_after(0);
        if (eb && json_object_size(json_object_get(eb, "error")) == 4)
            break;
        json_decref(eb);
    }
    ck_assert_int_lt(n, MAX_ITER);
    json_decref(eb);
}
END_TEST

START_TEST(test_server_config)
{
    struct hm_config *c;
    long n;
    int rc;

    for (n = 1; n < MAX_ITER; n++) {
        c = (struct hm_config *)&n;
        hm_alloc_fail_after(n);
        rc = hm_config_new(&c);
        hm_alloc_fail_after(0);
        if (rc == HM_OK)
            break;
        ck_assert_int_eq(rc, HM_ENOMEM);
        ck_assert_ptr_null(c);
    }
    ck_assert_int_lt(n, MAX_ITER);
    for (n = 1; n < MAX_ITER; n++) {
        hm_alloc_fail_after(n);
        rc = hm_config_set(c, "model", "/some/where/else.gguf", NULL);
        hm_alloc_fail_after(0);
        if (rc == HM_OK)
            break;
        ck_assert_int_eq(rc, HM_ENOMEM);
    }
    ck_assert_str_eq(c->model, "/some/where/else.gguf");
    hm_config_free(c);
}
END_TEST

static Suite *oom_suite(void)
{
    Suite *s = suite_create("oom");
    TCase *tc = tcase_create("oom");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_model_load);
    tcase_add_test(tc, test_tokenizer);
    tcase_add_test(tc, test_engine);
    tcase_add_test(tc, test_server_request);
    tcase_add_test(tc, test_server_config);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return hm_test_run(oom_suite(), CK_NORMAL);
}
