/*
 * fuzz_request.c - libFuzzer target: an HTTP request body -> a validated generation
 * request, for both completion routes.
 *
 * The body goes through what server/api_generate.c and server/api_misc.c do with it:
 * json_loadb(JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL) (the error message built as
 * hm_api_parse_body builds it), then hm_gen_request_parse() for HM_API_COMPLETIONS and for HM_API_CHAT, then
 * hm_chat_render() of the messages with every template; also the /tokenize and
 * /detokenize body parsers. (hm_api_parse_body itself needs a live MHD connection, so its
 * few lines are repeated here.)
 *
 * Properties: a rejection has a kind with a 4xx/5xx status and an error body with
 * message, type, param and code that serialises; an accepted request respects the limits
 * (prompts >= 1, ids < n_vocab, n in 1..max_n, stop <= 4, top_logprobs <= 20, ...).
 */
#include <stdbool.h>
#include <string.h>

#include <jansson.h>

#include "hm/alloc.h"
#include "api_error.h"
#include "api_request.h"
#include "server.h"

#include "fuzz.h"

static const struct hm_api_limits lim = {
    .n_vocab = 512, .n_ctx = 256, .k_max = 2, .max_n = 8,
    .default_max_tokens = 16, .max_timeout_s = 600,
};

int hm_fuzz_init(void)
{
    static bool done;

    if (!done) {
        json_object_seed(1);
        done = true;
    }
    return 0;
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    return hm_fuzz_init();
}

/* The error reply as the server would send it. */
static void check_error(const struct hm_api_error *e)
{
    json_t *body, *inner;
    char *text;
    unsigned st;

    FUZZ_ASSERT(e->kind != HM_AERR_NONE);
    st = hm_api_error_status(e->kind);
    FUZZ_ASSERT(st >= 400 && st < 600);
    FUZZ_ASSERT(memchr(e->message, '\0', sizeof(e->message)) != NULL);
    FUZZ_ASSERT(memchr(e->param, '\0', sizeof(e->param)) != NULL);
    body = hm_api_error_json(e);
    FUZZ_ASSERT(body != NULL);
    inner = json_object_get(body, "error");
    FUZZ_ASSERT(json_is_object(inner));
    FUZZ_ASSERT(json_is_string(json_object_get(inner, "message")));
    FUZZ_ASSERT(json_is_string(json_object_get(inner, "type")));
    FUZZ_ASSERT(json_object_get(inner, "param") != NULL);
    FUZZ_ASSERT(json_object_get(inner, "code") != NULL);
    text = json_dumps(body, JSON_COMPACT);
    FUZZ_ASSERT(text != NULL);
    free(text);
    json_decref(body);
}

static void check_request(const struct hm_gen_request *r, enum hm_api_kind kind)
{
    size_t i, j;

    FUZZ_ASSERT(r->kind == kind);
    if (kind == HM_API_COMPLETIONS) {
        FUZZ_ASSERT(r->n_prompts >= 1 && r->n_prompts <= HM_MAX_PROMPTS);
        for (i = 0; i < r->n_prompts; i++) {
            const struct hm_prompt *p = &r->prompts[i];
            FUZZ_ASSERT((p->text != NULL) != (p->ids != NULL));
            if (p->text)
                FUZZ_ASSERT(p->text[p->text_len] == '\0');
            for (j = 0; j < p->n_ids; j++)
                FUZZ_ASSERT(p->ids[j] >= 0 && (uint32_t)p->ids[j] < lim.n_vocab);
        }
    } else {
        FUZZ_ASSERT(r->n_messages >= 1 && r->n_messages <= HM_MAX_MESSAGES);
        for (i = 0; i < r->n_messages; i++) {
            FUZZ_ASSERT(r->messages[i].role <= HM_ROLE_ASSISTANT);
            FUZZ_ASSERT(r->messages[i].content != NULL);
        }
    }
    FUZZ_ASSERT(r->n >= 1 && r->n <= lim.max_n);
    FUZZ_ASSERT(r->n_stop <= HM_MAX_STOP);
    for (i = 0; i < r->n_stop; i++)
        FUZZ_ASSERT(r->stop[i] != NULL && strlen(r->stop[i]) >= 1 &&
                    strlen(r->stop[i]) <= HM_MAX_STOP_LEN);
    FUZZ_ASSERT(r->top_logprobs <= 20);
    FUZZ_ASSERT(r->n_bias <= HM_MAX_LOGIT_BIAS);
    for (i = 0; i < r->n_bias; i++)
        FUZZ_ASSERT(r->bias[i].token >= 0 && (uint32_t)r->bias[i].token < lim.n_vocab);
    FUZZ_ASSERT(r->timeout_s >= 0);
}

static void render_all(const struct hm_gen_request *r)
{
    static const enum hm_chat_template t[] = {HM_TMPL_DEFAULT, HM_TMPL_CHATML, HM_TMPL_LLAMA3,
                                              HM_TMPL_LLAMA2};
    size_t i, len;
    char *text;
    bool special;

    for (i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        text = NULL;
        if (hm_chat_render(t[i], r->messages, r->n_messages, &text, &len, &special) == 0) {
            FUZZ_ASSERT(text != NULL && text[len] == '\0');
            hm_free(text);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct hm_api_error e;
    struct hm_gen_request *r;
    struct hm_tokenize_request tr;
    json_error_t je;
    json_t *root;
    int32_t *ids;
    size_t n_ids;
    int k;

    hm_fuzz_init();
    root = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &je);
    if (!root) {
        memset(&e, 0, sizeof(e));
        hm_api_error_set(&e, HM_AERR_INVALID_JSON, NULL,
                         "the request body is not valid JSON: %s (line %d, column %d)", je.text,
                         je.line, je.column);
        check_error(&e);
        return 0;
    }
    for (k = HM_API_COMPLETIONS; k <= HM_API_CHAT; k++) {
        memset(&e, 0, sizeof(e));
        r = (struct hm_gen_request *)&e; /* must be set to NULL on failure */
        if (hm_gen_request_parse(root, (enum hm_api_kind)k, &lim, &r, &e) < 0) {
            FUZZ_ASSERT(r == NULL);
            check_error(&e);
            continue;
        }
        FUZZ_ASSERT(r != NULL);
        check_request(r, (enum hm_api_kind)k);
        if (k == HM_API_CHAT)
            render_all(r);
        hm_gen_request_free(r);
    }

    memset(&e, 0, sizeof(e));
    memset(&tr, 0, sizeof(tr));
    if (hm_tokenize_request_parse(root, &tr, &e) < 0)
        check_error(&e);
    else
        FUZZ_ASSERT(tr.text != NULL || tr.len == 0);
    hm_tokenize_request_release(&tr);

    memset(&e, 0, sizeof(e));
    ids = NULL;
    n_ids = 0;
    if (hm_detokenize_request_parse(root, lim.n_vocab, &ids, &n_ids, &e) < 0) {
        check_error(&e);
    } else {
        for (size_t i = 0; i < n_ids; i++)
            FUZZ_ASSERT(ids[i] >= 0 && (uint32_t)ids[i] < lim.n_vocab);
        hm_free(ids);
    }
    json_decref(root);
    return 0;
}
