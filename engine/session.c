/*
 * session.c - one request's state (engine.h): its tokens and their c_t, the request
 * controls (spec 10, 12.6), the window and the KV cache sized once at admission
 * (section 8), statistics and the optional trace.
 */
#include <math.h>
#include <string.h>

#include "forward.h"
#include "hm/alloc.h"

struct hm_session_opts hm_session_opts_default(void)
{
    struct hm_session_opts o;
    memset(&o, 0, sizeof(o));
    o.max_tokens = 0;
    o.complexity = -1.0f;
    o.window = 0;
    o.max_experts = 0;
    o.router_threshold = -1.0f;
    o.trace = false;
    o.force_static = false;
    return o;
}

/* Checks the request against the model (12.6, 12.9). */
static int check_request(const struct hm_model *m, const int32_t *prompt, uint32_t n_prompt,
                         const struct hm_session_opts *o, struct hm_errmsg *em)
{
    const struct hm_hparams *hp = &m->hp;
    uint32_t i;

    if (!prompt || n_prompt == 0)
        return hm_errmsg_set(em, HM_EINVAL, "prompt: empty");
    if (n_prompt > hp->n_ctx)
        return hm_errmsg_set(em, HM_ERANGE, "prompt: %u tokens, more than context_length %u",
                             n_prompt, hp->n_ctx);
    if ((uint64_t)n_prompt + o->max_tokens > hp->n_ctx)
        return hm_errmsg_set(em, HM_ERANGE,
                             "max_tokens: %u + %u prompt tokens exceeds context_length %u",
                             o->max_tokens, n_prompt, hp->n_ctx);
    for (i = 0; i < n_prompt; i++)
        if (prompt[i] < 0 || (uint32_t)prompt[i] >= hp->n_vocab)
            return hm_errmsg_set(em, HM_EINVAL,
                                 "prompt: token %d at position %u outside the vocabulary (%u)",
                                 (int)prompt[i], i, hp->n_vocab);
    if (isnan(o->complexity) || o->complexity > 1.0f)
        return hm_errmsg_set(em, HM_ERANGE, "complexity: %g outside [0, 1]", (double)o->complexity);
    if (o->window < 0 || o->window > (int64_t)hp->n_ctx)
        return hm_errmsg_set(em, HM_ERANGE, "window: %lld outside [1, %u]", (long long)o->window,
                             hp->n_ctx);
    if (o->max_experts > 0 && (hp->n_expert == 0 || o->max_experts > hp->n_expert_used))
        return hm_errmsg_set(em, HM_ERANGE, "max_experts: %u outside [1, %u]", o->max_experts,
                             hp->n_expert ? hp->n_expert_used : 0);
    if (isnan(o->router_threshold) || o->router_threshold > 1.0f)
        return hm_errmsg_set(em, HM_ERANGE, "router_threshold: %g outside [0, 1]",
                             (double)o->router_threshold);
    return HM_OK;
}

static float token_c(const struct hm_model *m, const struct hm_session_opts *o,
                     const int32_t *tokens, uint32_t t)
{
    if (o->complexity >= 0.0f)
        return o->complexity;
    return hm__complexity_at(m, tokens, t);
}

static bool uses_xs(const struct hm_model *m, const struct hm_session_opts *o)
{
    return (m->features & HM_FEAT_XSCALE) && !o->force_static;
}

/* c_req (float64 mean over the prompt; c_out receives each c_t if not NULL), the window
 * and the byte counts. */
static void plan(const struct hm_model *m, const int32_t *prompt, uint32_t n_prompt,
                 const struct hm_session_opts *o, float *c_out, struct hm_session_plan *p)
{
    double sum = 0.0;
    uint32_t t, n = n_prompt + o->max_tokens;

    for (t = 0; t < n_prompt; t++) {
        float c = token_c(m, o, prompt, t);
        if (c_out)
            c_out[t] = c;
        sum += (double)c;
    }
    p->c_req = o->complexity >= 0.0f ? (double)o->complexity : sum / (double)n_prompt;
    p->n_ctx_planned = n;
    if (o->force_static)
        p->window = n;
    else if (o->window > 0)
        p->window = o->window;
    else
        p->window = hm_window_policy(m, p->c_req, n);
    p->kv_bytes = hm__kv_elems(m, n, p->window, uses_xs(m, o)) * sizeof(float);
    p->kv_bytes_baseline = hm__kv_elems_baseline(m, n) * sizeof(float);
}

int hm_session_plan(const struct hm_model *m, const int32_t *prompt, uint32_t n_prompt,
                    const struct hm_session_opts *o, struct hm_session_plan *out,
                    struct hm_errmsg *em)
{
    struct hm_session_opts def = hm_session_opts_default();
    int rc;
    if (!o)
        o = &def;
    memset(out, 0, sizeof(*out));
    rc = check_request(m, prompt, n_prompt, o, em);
    if (rc < 0)
        return rc;
    plan(m, prompt, n_prompt, o, NULL, out);
    return HM_OK;
}

int hm_session_new(const struct hm_model *m, const int32_t *prompt, uint32_t n_prompt,
                   const struct hm_session_opts *o, struct hm_session **out, struct hm_errmsg *em)
{
    struct hm_session_opts def = hm_session_opts_default();
    struct hm_session_plan pl;
    struct hm_session *s = NULL;
    const struct hm_hparams *hp = &m->hp;
    uint32_t N, n_moe;
    int rc;

    *out = NULL;
    if (!o)
        o = &def;
    rc = check_request(m, prompt, n_prompt, o, em);
    if (rc < 0)
        return rc;
    N = n_prompt + o->max_tokens;
    rc = HM_ENOMEM;
    s = hm_calloc(1, sizeof(*s));
    if (!s)
        goto fail;
    s->m = m;
    s->o = *o;
    s->n_planned = N;
    s->n_prompt = s->n_tokens = n_prompt;
    s->tokens = hm_mallocarray(N, sizeof(*s->tokens));
    s->c = hm_mallocarray(N, sizeof(*s->c));
    s->kv = hm_calloc(hp->n_layer ? hp->n_layer : 1, sizeof(*s->kv));
    if (!s->tokens || !s->c || !s->kv)
        goto fail;
    memcpy(s->tokens, prompt, (size_t)n_prompt * sizeof(*prompt));
    plan(m, prompt, n_prompt, o, s->c, &pl);
    s->c_req = pl.c_req;
    s->window = pl.window;
    s->kv_bytes = pl.kv_bytes;
    s->kv_bytes_baseline = pl.kv_bytes_baseline;
    s->static_route = o->force_static;
    s->use_xs = uses_xs(m, o);
    rc = hm__kv_alloc(m, N, s->window, s->kv, &s->kv_mem);
    if (rc < 0)
        goto fail;
    if (s->use_xs) {
        rc = hm__xs_new(m, N, &s->xs);
        if (rc < 0)
            goto fail;
    }
    rc = HM_ENOMEM;
    n_moe = hm_hparams_n_moe(hp);
    if (o->trace) {
        size_t K = hp->n_expert_used ? hp->n_expert_used : 1;
        s->tr_k = hm_calloc((size_t)N * (n_moe ? n_moe : 1), 1);
        s->tr_experts = hm_calloc((size_t)N * (n_moe ? n_moe : 1) * K, 1);
        if (!s->tr_k || !s->tr_experts)
            goto fail;
        s->trace.n_moe = n_moe;
        s->trace.k_max = hp->n_expert_used;
        s->trace.c = s->c;
        s->trace.k = s->tr_k;
        s->trace.experts = s->tr_experts;
    }
    *out = s;
    return HM_OK;
fail:
    hm_session_free(s);
    if (rc == HM_ENOMEM)
        hm_errmsg_set(em, HM_ENOMEM, "out of memory allocating a session for %u tokens", N);
    return rc;
}

void hm_session_free(struct hm_session *s)
{
    if (!s)
        return;
    hm__xs_free(s->xs);
    hm_free_aligned(s->kv_mem);
    hm_free(s->kv);
    hm_free(s->tokens);
    hm_free(s->c);
    hm_free(s->tr_k);
    hm_free(s->tr_experts);
    hm_free(s);
}

int hm_session_push(struct hm_session *s, int32_t token)
{
    if (token < 0 || (uint32_t)token >= s->m->hp.n_vocab)
        return HM_EINVAL;
    if (s->n_tokens >= s->n_planned)
        return HM_ERANGE;
    s->tokens[s->n_tokens] = token;
    s->c[s->n_tokens] = token_c(s->m, &s->o, s->tokens, s->n_tokens);
    s->n_tokens++;
    return HM_OK;
}

uint32_t hm_session_n_tokens(const struct hm_session *s)
{
    return s->n_tokens;
}

uint32_t hm_session_n_past(const struct hm_session *s)
{
    return s->n_past;
}

uint32_t hm_session_n_prompt(const struct hm_session *s)
{
    return s->n_prompt;
}

const int32_t *hm_session_tokens(const struct hm_session *s)
{
    return s->tokens;
}

void hm_session_get_stats(const struct hm_session *s, struct hm_session_stats *out)
{
    memset(out, 0, sizeof(*out));
    out->c_req = s->c_req;
    out->window = s->window;
    out->n_ctx_planned = s->n_planned;
    out->n_past = s->n_past;
    out->kv_bytes = s->kv_bytes;
    out->kv_bytes_baseline = s->kv_bytes_baseline;
    out->sum_experts = s->sum_experts;
    out->n_expert_decisions = s->n_expert_decisions;
    out->mean_experts =
        s->n_expert_decisions ? (double)s->sum_experts / (double)s->n_expert_decisions : 0.0;
    out->attn_positions = s->attn_positions;
}

const struct hm_trace *hm_session_trace(const struct hm_session *s)
{
    return s->o.trace ? &s->trace : NULL;
}

float hm_session_complexity(const struct hm_session *s, uint32_t t)
{
    return t < s->n_tokens ? s->c[t] : 0.0f;
}
