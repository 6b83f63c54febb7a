/*
 * api_request.c - validation of generation request bodies (OpenAI completions and
 * chat completions plus the `hybridmoe` extension object).
 *
 * Rules: unknown fields are ignored; null means not given; a known field of the wrong
 * type or out of its range is a 400 naming the field. Numbers: jansson already rejects
 * NaN, infinities and numbers past the double or long long range at parse time, so every
 * json_real seen here is finite. Integer fields accept only JSON integers.
 */
#include "api_request.h"

#include <errno.h>
#include <math.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "hm/alloc.h"
#include "hm/buf.h"

#define BAD(e, param, ...) hm_api_error_set((e), HM_AERR_INVALID, (param), __VA_ARGS__)
#define OOM(e) hm_api_error_set((e), HM_AERR_INTERNAL, NULL, "out of memory")

/* The seed of a request that gives none: a fresh 64-bit value per request, as OpenAI,
 * vLLM and llama.cpp do (repeated sampled requests differ). splitmix64 of a per-process
 * counter whose start mixes the clock and the pid: no syscall that a seccomp filter
 * could refuse, and distinct values for every request of the process. */
static uint64_t fresh_seed(void)
{
    static _Atomic uint64_t counter;
    static atomic_flag started = ATOMIC_FLAG_INIT;
    uint64_t z;

    if (!atomic_flag_test_and_set(&started)) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        atomic_fetch_add(&counter, ((uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec) ^
                                       ((uint64_t)getpid() << 32));
    }
    z = atomic_fetch_add(&counter, 0x9e3779b97f4a7c15ull) + 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Returns the member or NULL when absent or null. */
static json_t *field(const json_t *o, const char *name)
{
    json_t *v = json_object_get(o, name);
    return json_is_null(v) ? NULL : v;
}

static int get_number(const json_t *o, const char *name, const char *param, double lo,
                      double hi, bool lo_open, double *out, bool *given, struct hm_api_error *e)
{
    json_t *v = field(o, name);
    double x;

    if (given)
        *given = false;
    if (!v)
        return 0;
    if (!json_is_number(v))
        return BAD(e, param, "'%s' must be a number", param);
    x = json_number_value(v);
    if (!isfinite(x) || x > hi || x < lo || (lo_open && x == lo))
        return BAD(e, param, "'%s' must be in %c%g, %g]", param, lo_open ? '(' : '[', lo, hi);
    *out = x;
    if (given)
        *given = true;
    return 0;
}

static int get_int(const json_t *o, const char *name, const char *param, long long lo,
                   long long hi, long long *out, bool *given, struct hm_api_error *e)
{
    json_t *v = field(o, name);
    long long x;

    if (given)
        *given = false;
    if (!v)
        return 0;
    if (!json_is_integer(v))
        return BAD(e, param, "'%s' must be an integer", param);
    x = json_integer_value(v);
    if (x < lo || x > hi)
        return BAD(e, param, "'%s' must be in [%lld, %lld]", param, lo, hi);
    *out = x;
    if (given)
        *given = true;
    return 0;
}

static int get_bool(const json_t *o, const char *name, const char *param, bool *out,
                    struct hm_api_error *e)
{
    json_t *v = field(o, name);

    if (!v)
        return 0;
    if (!json_is_boolean(v))
        return BAD(e, param, "'%s' must be a boolean", param);
    *out = json_is_true(v);
    return 0;
}

/* Request bodies are parsed with JSON_ALLOW_NUL, so text (prompts, message content) may carry
 * U+0000 and is always handled with its length. Names and stop strings are C strings: they
 * must not contain NUL, or a name like "user\u0000x" would compare equal to "user". */
static bool has_nul(const json_t *v)
{
    return strlen(json_string_value(v)) != json_string_length(v);
}

static int dup_string(const json_t *v, char **out, size_t *len, struct hm_api_error *e)
{
    size_t n = json_string_length(v);
    *out = hm_memdup_z(json_string_value(v), n);
    if (!*out)
        return OOM(e);
    if (len)
        *len = n;
    return 0;
}

static int parse_ids(const json_t *arr, const char *param, uint32_t n_vocab, int32_t **ids,
                     size_t *n_ids, struct hm_api_error *e)
{
    size_t n = json_array_size(arr), i;
    int32_t *v;

    if (n == 0)
        return BAD(e, param, "'%s' must not be empty", param);
    v = hm_mallocarray(n, sizeof(*v));
    if (!v)
        return OOM(e);
    for (i = 0; i < n; i++) {
        json_t *x = json_array_get(arr, i);
        if (!json_is_integer(x)) {
            hm_free(v);
            return BAD(e, param, "'%s' must be an array of integer token ids", param);
        }
        if (json_integer_value(x) < 0 || json_integer_value(x) >= (json_int_t)n_vocab) {
            hm_free(v);
            return BAD(e, param, "'%s': token id %lld is outside the vocabulary [0, %u)",
                       param, (long long)json_integer_value(x), n_vocab);
        }
        v[i] = (int32_t)json_integer_value(x);
    }
    *ids = v;
    *n_ids = n;
    return 0;
}

static int parse_prompt(const json_t *root, const struct hm_api_limits *lim,
                        struct hm_gen_request *r, struct hm_api_error *e)
{
    json_t *p = field(root, "prompt");
    size_t n, i;

    if (!p)
        return BAD(e, "prompt", "'prompt' is required");
    if (json_is_string(p)) {
        r->prompts = hm_calloc(1, sizeof(*r->prompts));
        if (!r->prompts)
            return OOM(e);
        r->n_prompts = 1;
        if (json_string_length(p) == 0)
            return BAD(e, "prompt", "'prompt' must not be empty");
        return dup_string(p, &r->prompts[0].text, &r->prompts[0].text_len, e);
    }
    if (!json_is_array(p) || json_array_size(p) == 0)
        return BAD(e, "prompt",
                   "'prompt' must be a string, an array of strings, an array of token ids "
                   "or an array of token id arrays");
    n = json_array_size(p);
    if (json_is_integer(json_array_get(p, 0))) {
        r->prompts = hm_calloc(1, sizeof(*r->prompts));
        if (!r->prompts)
            return OOM(e);
        r->n_prompts = 1;
        return parse_ids(p, "prompt", lim->n_vocab, &r->prompts[0].ids, &r->prompts[0].n_ids,
                         e);
    }
    if (n > HM_MAX_PROMPTS)
        return BAD(e, "prompt", "'prompt' has %zu prompts; at most %d", n, HM_MAX_PROMPTS);
    r->prompts = hm_calloc(n, sizeof(*r->prompts));
    if (!r->prompts)
        return OOM(e);
    r->n_prompts = n;
    for (i = 0; i < n; i++) {
        json_t *x = json_array_get(p, i);
        if (json_is_string(x)) {
            if (json_string_length(x) == 0)
                return BAD(e, "prompt", "'prompt[%zu]' must not be empty", i);
            if (dup_string(x, &r->prompts[i].text, &r->prompts[i].text_len, e) < 0)
                return -1;
        } else if (json_is_array(x)) {
            if (parse_ids(x, "prompt", lim->n_vocab, &r->prompts[i].ids, &r->prompts[i].n_ids,
                          e) < 0)
                return -1;
        } else {
            return BAD(e, "prompt",
                       "'prompt[%zu]' must be a string or an array of token ids", i);
        }
    }
    return 0;
}

/* content: a string or an array of {"type": "text", "text": "..."} parts */
static int parse_content(const json_t *c, size_t idx, struct hm_chat_msg *m,
                         struct hm_api_error *e)
{
    struct hm_buf b;
    size_t i;
    json_t *part;

    if (!c) {
        m->content = hm_strdup("");
        return m->content ? 0 : OOM(e);
    }
    if (json_is_string(c))
        return dup_string(c, &m->content, &m->content_len, e);
    if (!json_is_array(c))
        return BAD(e, "messages", "'messages[%zu].content' must be a string or an array of "
                   "text parts", idx);
    hm_buf_init(&b, (size_t)1 << 30);
    json_array_foreach(c, i, part) {
        json_t *t = json_object_get(part, "type"), *txt = json_object_get(part, "text");
        if (!json_is_object(part) || !json_is_string(t) || has_nul(t) || strcmp(json_string_value(t), "text")
            || !json_is_string(txt)) {
            hm_buf_release(&b);
            return BAD(e, "messages", "'messages[%zu].content[%zu]' must be "
                       "{\"type\": \"text\", \"text\": string}", idx, i);
        }
        if (hm_buf_append(&b, json_string_value(txt), json_string_length(txt)) < 0) {
            hm_buf_release(&b);
            return OOM(e);
        }
    }
    if (!b.data && hm_buf_append(&b, "", 0) < 0)
        return OOM(e);
    m->content = hm_buf_detach(&b, &m->content_len);
    if (!m->content) {
        m->content = hm_strdup("");
        if (!m->content)
            return OOM(e);
    }
    return 0;
}

static int parse_messages(const json_t *root, struct hm_gen_request *r, struct hm_api_error *e)
{
    json_t *ms = field(root, "messages"), *m;
    size_t i;

    if (!ms)
        return BAD(e, "messages", "'messages' is required");
    if (!json_is_array(ms) || json_array_size(ms) == 0)
        return BAD(e, "messages", "'messages' must be a non-empty array");
    if (json_array_size(ms) > HM_MAX_MESSAGES)
        return BAD(e, "messages", "'messages' has more than %d entries", HM_MAX_MESSAGES);
    r->messages = hm_calloc(json_array_size(ms), sizeof(*r->messages));
    if (!r->messages)
        return OOM(e);
    json_array_foreach(ms, i, m) {
        json_t *role;
        const char *rs;
        if (!json_is_object(m))
            return BAD(e, "messages", "'messages[%zu]' must be an object", i);
        role = json_object_get(m, "role");
        if (!json_is_string(role))
            return BAD(e, "messages", "'messages[%zu].role' must be a string", i);
        rs = has_nul(role) ? "" : json_string_value(role);
        if (!strcmp(rs, "system") || !strcmp(rs, "developer"))
            r->messages[i].role = HM_ROLE_SYSTEM;
        else if (!strcmp(rs, "user"))
            r->messages[i].role = HM_ROLE_USER;
        else if (!strcmp(rs, "assistant"))
            r->messages[i].role = HM_ROLE_ASSISTANT;
        else
            return BAD(e, "messages", "'messages[%zu].role' must be system, user or assistant",
                       i);
        r->n_messages = i + 1;
        if (parse_content(field(m, "content"), i, &r->messages[i], e) < 0)
            return -1;
    }
    return 0;
}

static int parse_stop(const json_t *root, struct hm_gen_request *r, struct hm_api_error *e)
{
    json_t *s = field(root, "stop"), *x;
    size_t i;

    if (!s)
        return 0;
    if (json_is_string(s)) {
        if (json_string_length(s) == 0 || json_string_length(s) > HM_MAX_STOP_LEN)
            return BAD(e, "stop", "'stop' strings must have 1 to %d bytes", HM_MAX_STOP_LEN);
        if (has_nul(s))
            return BAD(e, "stop", "'stop' strings must not contain U+0000");
        r->n_stop = 1;
        return dup_string(s, &r->stop[0], NULL, e);
    }
    if (!json_is_array(s))
        return BAD(e, "stop", "'stop' must be a string or an array of strings");
    if (json_array_size(s) > HM_MAX_STOP)
        return BAD(e, "stop", "'stop' has at most %d sequences", HM_MAX_STOP);
    json_array_foreach(s, i, x) {
        if (!json_is_string(x))
            return BAD(e, "stop", "'stop' must be a string or an array of strings");
        if (json_string_length(x) == 0 || json_string_length(x) > HM_MAX_STOP_LEN)
            return BAD(e, "stop", "'stop' strings must have 1 to %d bytes", HM_MAX_STOP_LEN);
        if (has_nul(x))
            return BAD(e, "stop", "'stop' strings must not contain U+0000");
        if (dup_string(x, &r->stop[i], NULL, e) < 0)
            return -1;
        r->n_stop = i + 1;
    }
    return 0;
}

static int parse_logit_bias(const json_t *root, uint32_t n_vocab, struct hm_gen_request *r,
                            struct hm_api_error *e)
{
    json_t *lb = field(root, "logit_bias"), *v;
    const char *key;

    if (!lb)
        return 0;
    if (!json_is_object(lb))
        return BAD(e, "logit_bias", "'logit_bias' must be an object of token id -> bias");
    if (json_object_size(lb) > HM_MAX_LOGIT_BIAS)
        return BAD(e, "logit_bias", "'logit_bias' has more than %d entries", HM_MAX_LOGIT_BIAS);
    r->bias = hm_calloc(json_object_size(lb) + 1, sizeof(*r->bias));
    if (!r->bias)
        return OOM(e);
    json_object_foreach((json_t *)lb, key, v) {
        char *end;
        long long id;
        double b;
        if (*key < '0' || *key > '9')
            return BAD(e, "logit_bias", "'logit_bias' key '%s' is not a token id", key);
        errno = 0;
        id = strtoll(key, &end, 10);
        if (errno || *end)
            return BAD(e, "logit_bias", "'logit_bias' key '%s' is not a token id", key);
        if (id < 0 || id >= (long long)n_vocab)
            return BAD(e, "logit_bias", "'logit_bias' token %lld is outside the vocabulary "
                       "[0, %u)", id, n_vocab);
        if (!json_is_number(v))
            return BAD(e, "logit_bias", "'logit_bias' values must be numbers");
        b = json_number_value(v);
        if (!(b >= -100 && b <= 100))
            return BAD(e, "logit_bias", "'logit_bias' values must be in [-100, 100]");
        r->bias[r->n_bias].token = (int32_t)id;
        r->bias[r->n_bias].bias = (float)b;
        r->n_bias++;
    }
    r->sp.bias = r->bias;
    r->sp.n_bias = r->n_bias;
    return 0;
}

static int parse_hybridmoe(const json_t *root, const struct hm_api_limits *lim,
                           struct hm_gen_request *r, struct hm_api_error *e)
{
    json_t *h = field(root, "hybridmoe");
    double d;
    long long i;
    bool given;

    if (!h)
        return 0;
    if (!json_is_object(h))
        return BAD(e, "hybridmoe", "'hybridmoe' must be an object");
    if (get_number(h, "complexity", "hybridmoe.complexity", 0, 1, false, &d, &given, e) < 0)
        return -1;
    if (given)
        r->so.complexity = (float)d;
    if (get_int(h, "window", "hybridmoe.window", 1, lim->n_ctx, &i, &given, e) < 0)
        return -1;
    if (given)
        r->so.window = i;
    if (get_int(h, "max_experts", "hybridmoe.max_experts", 1, lim->k_max ? lim->k_max : 1, &i,
                &given, e) < 0)
        return -1;
    if (given)
        r->so.max_experts = (uint32_t)i;
    if (get_number(h, "router_threshold", "hybridmoe.router_threshold", 0, 1, false, &d, &given,
                   e) < 0)
        return -1;
    if (given)
        r->so.router_threshold = (float)d;
    return 0;
}

static int parse_logprobs(const json_t *root, struct hm_gen_request *r, struct hm_api_error *e)
{
    json_t *lp = field(root, "logprobs");
    long long i;
    bool given;

    if (r->kind == HM_API_COMPLETIONS) {
        /* completions: logprobs is an integer 0..20 (alternatives per token) */
        if (lp && json_is_boolean(lp))
            return BAD(e, "logprobs", "'logprobs' must be an integer in [0, %d]",
                       HM_MAX_TOP_LOGPROBS);
        if (get_int(root, "logprobs", "logprobs", 0, HM_MAX_TOP_LOGPROBS, &i, &given, e) < 0)
            return -1;
        if (given) {
            r->logprobs = true;
            r->top_logprobs = (unsigned)i;
        }
        return 0;
    }
    if (get_bool(root, "logprobs", "logprobs", &r->logprobs, e) < 0)
        return -1;
    if (get_int(root, "top_logprobs", "top_logprobs", 0, HM_MAX_TOP_LOGPROBS, &i, &given, e) < 0)
        return -1;
    if (given) {
        /* top_logprobs: 0 without logprobs asks for nothing: accepted (some clients send it) */
        if (!r->logprobs && i > 0)
            return BAD(e, "top_logprobs", "'top_logprobs' requires 'logprobs' to be true");
        r->top_logprobs = (unsigned)i;
    }
    return 0;
}

int hm_gen_request_parse(const json_t *root, enum hm_api_kind kind,
                         const struct hm_api_limits *lim, struct hm_gen_request **out,
                         struct hm_api_error *e)
{
    struct hm_gen_request *r = hm_calloc(1, sizeof(*r));
    json_t *v;
    long long i;
    double d;
    bool given;
    int rc = -1;

    *out = NULL;
    if (!r)
        return OOM(e);
    r->kind = kind;
    r->n = 1;
    r->sp = hm_sampler_params_default();
    r->so = hm_session_opts_default();
    if (!json_is_object(root)) {
        BAD(e, NULL, "the request body must be a JSON object");
        goto out;
    }
    v = field(root, "model");
    if (v) {
        if (!json_is_string(v)) {
            BAD(e, "model", "'model' must be a string");
            goto out;
        }
        if (has_nul(v)) {
            BAD(e, "model", "'model' must not contain U+0000");
            goto out;
        }
        if (dup_string(v, &r->model, NULL, e) < 0)
            goto out;
    }
    if (kind == HM_API_COMPLETIONS ? parse_prompt(root, lim, r, e) < 0
                                   : parse_messages(root, r, e) < 0)
        goto out;

    /* max_completion_tokens (new name) wins over max_tokens */
    if (get_int(root, "max_tokens", "max_tokens", 0, lim->n_ctx, &i, &given, e) < 0)
        goto out;
    if (given) {
        r->max_tokens = (uint32_t)i;
        r->max_tokens_zero = i == 0;
    }
    if (get_int(root, "max_completion_tokens", "max_completion_tokens", 0, lim->n_ctx, &i, &given,
                e) < 0)
        goto out;
    if (given) {
        r->max_tokens = (uint32_t)i;
        r->max_tokens_zero = i == 0;
    }

    if (get_number(root, "temperature", "temperature", 0, 2, false, &d, &given, e) < 0)
        goto out;
    if (given)
        r->sp.temperature = (float)d;
    if (get_number(root, "top_p", "top_p", 0, 1, true, &d, &given, e) < 0)
        goto out;
    if (given)
        r->sp.top_p = (float)d;
    if (get_int(root, "top_k", "top_k", -1, lim->n_vocab, &i, &given, e) < 0)
        goto out;
    if (given)
        r->sp.top_k = (int32_t)i;
    if (get_number(root, "min_p", "min_p", 0, 1, false, &d, &given, e) < 0)
        goto out;
    if (given)
        r->sp.min_p = (float)d;
    if (get_number(root, "presence_penalty", "presence_penalty", -2, 2, false, &d, &given, e) < 0)
        goto out;
    if (given)
        r->sp.presence_penalty = (float)d;
    if (get_number(root, "frequency_penalty", "frequency_penalty", -2, 2, false, &d, &given, e) <
        0)
        goto out;
    if (given)
        r->sp.frequency_penalty = (float)d;
    if (get_number(root, "repetition_penalty", "repetition_penalty", 0, 10, true, &d, &given, e) <
        0)
        goto out;
    if (given)
        r->sp.repetition_penalty = (float)d;
    v = field(root, "seed");
    if (v) {
        if (!json_is_integer(v)) {
            BAD(e, "seed", "'seed' must be an integer");
            goto out;
        }
        r->sp.seed = (uint64_t)json_integer_value(v);
    } else {
        r->sp.seed = fresh_seed();
    }
    if (parse_stop(root, r, e) < 0)
        goto out;
    if (get_int(root, "n", "n", 1, lim->max_n, &i, &given, e) < 0)
        goto out;
    if (given)
        r->n = (unsigned)i;
    if (parse_logprobs(root, r, e) < 0)
        goto out;
    r->sp.want_logprobs = r->logprobs;
    r->sp.n_top_logprobs = r->top_logprobs;
    if (parse_logit_bias(root, lim->n_vocab, r, e) < 0)
        goto out;
    if (get_bool(root, "stream", "stream", &r->stream, e) < 0)
        goto out;
    if (get_bool(root, "ignore_eos", "ignore_eos", &r->ignore_eos, e) < 0)
        goto out;
    v = field(root, "stream_options");
    if (v) {
        if (!json_is_object(v)) {
            BAD(e, "stream_options", "'stream_options' must be an object");
            goto out;
        }
        if (get_bool(v, "include_usage", "stream_options.include_usage", &r->include_usage, e) <
            0)
            goto out;
    }
    if (kind == HM_API_COMPLETIONS) {
        if (get_bool(root, "echo", "echo", &r->echo, e) < 0)
            goto out;
        v = field(root, "suffix");
        if (v && !(json_is_string(v) && json_string_length(v) == 0)) {
            BAD(e, "suffix", "'suffix' is not supported");
            goto out;
        }
        v = field(root, "best_of");
        if (v && !(json_is_integer(v) && json_integer_value(v) == r->n)) {
            BAD(e, "best_of", "'best_of' is not supported (only best_of == n)");
            goto out;
        }
    }
    v = field(root, "user");
    if (v) {
        if (!json_is_string(v)) {
            BAD(e, "user", "'user' must be a string");
            goto out;
        }
        if (dup_string(v, &r->user, NULL, e) < 0)
            goto out;
    }
    if (r->max_tokens_zero && !r->echo) {
        BAD(e, "max_tokens", "'max_tokens' must be at least 1 (0 only with echo, to score a "
                             "prompt)");
        goto out;
    }
    if (parse_hybridmoe(root, lim, r, e) < 0)
        goto out;
    if (get_number(root, "timeout_s", "timeout_s", 0, lim->max_timeout_s ? lim->max_timeout_s
                                                                          : 86400.0 * 365,
                   true, &d, &given, e) < 0)
        goto out;
    if (given)
        r->timeout_s = d;
    rc = 0;
out:
    if (rc < 0) {
        hm_gen_request_free(r);
        r = NULL;
    }
    *out = r;
    return rc;
}

void hm_gen_request_free(struct hm_gen_request *r)
{
    if (!r)
        return;
    hm_free(r->model);
    for (size_t i = 0; i < r->n_prompts; i++) {
        hm_free(r->prompts[i].text);
        hm_free(r->prompts[i].ids);
    }
    hm_free(r->prompts);
    for (size_t i = 0; i < r->n_messages; i++)
        hm_free(r->messages[i].content);
    hm_free(r->messages);
    hm_free(r->bias);
    for (size_t i = 0; i < HM_MAX_STOP; i++)
        hm_free(r->stop[i]);
    hm_free(r->user);
    hm_free(r);
}

int hm_tokenize_request_parse(const json_t *root, struct hm_tokenize_request *out,
                              struct hm_api_error *e)
{
    json_t *v;
    const char *name = "content";

    memset(out, 0, sizeof(*out));
    out->add_special = true;
    if (!json_is_object(root))
        return BAD(e, NULL, "the request body must be a JSON object");
    /* llama.cpp sends "content", vLLM "prompt"; "text" is accepted too */
    v = field(root, "content");
    if (!v) {
        v = field(root, "prompt");
        name = "prompt";
    }
    if (!v) {
        v = field(root, "text");
        name = "text";
    }
    if (!v)
        return BAD(e, "content", "'content' (or 'prompt' or 'text') is required");
    if (!json_is_string(v))
        return BAD(e, name, "'%s' must be a string", name);
    /* add_special (llama.cpp) or add_special_tokens (vLLM) */
    if (get_bool(root, "add_special", "add_special", &out->add_special, e) < 0 ||
        get_bool(root, "add_special_tokens", "add_special_tokens", &out->add_special, e) < 0 ||
        get_bool(root, "with_pieces", "with_pieces", &out->with_pieces, e) < 0)
        return -1;
    return dup_string(v, &out->text, &out->len, e);
}

void hm_tokenize_request_release(struct hm_tokenize_request *r)
{
    hm_free(r->text);
    r->text = NULL;
}

int hm_detokenize_request_parse(const json_t *root, uint32_t n_vocab, int32_t **ids,
                                size_t *n_ids, struct hm_api_error *e)
{
    json_t *v;

    *ids = NULL;
    *n_ids = 0;
    if (!json_is_object(root))
        return BAD(e, NULL, "the request body must be a JSON object");
    v = field(root, "tokens");
    if (!v)
        return BAD(e, "tokens", "'tokens' is required");
    if (!json_is_array(v))
        return BAD(e, "tokens", "'tokens' must be an array of token ids");
    if (json_array_size(v) == 0) {
        *ids = hm_malloc(sizeof(int32_t));
        return *ids ? 0 : OOM(e);
    }
    return parse_ids(v, "tokens", n_vocab, ids, n_ids, e);
}
