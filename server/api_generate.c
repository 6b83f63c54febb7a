/*
 * api_generate.c - POST /v1/completions and /v1/chat/completions: validation against
 * the model, admission, job submission, and turning batcher events into OpenAI
 * responses (one JSON body, or SSE chunks as tokens arrive).
 *
 * Choice numbering: prompt p (completions may send several) and sample j < n give
 * choice index p * n + j, one engine sequence each; all sequences of a request are one
 * job, admitted together. usage.prompt_tokens counts each prompt once.
 *
 * Streaming order (chat): a role chunk per choice, content chunks as text is released,
 * per choice a final chunk with an empty delta and finish_reason, then (with
 * stream_options.include_usage) a chunk with "choices": [] and usage, then
 * "data: [DONE]". An error after the stream began is sent as data: {"error": {...}}
 * followed by [DONE]. Completions streams have the same order without the role chunk.
 */
#include "server.h"

#include <math.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "hm/alloc.h"
#include "hm/model.h"
#include "hm/tokenizer.h"

#include "log.h"
#include "textstream.h"

/* Unsent SSE bytes beyond which a stream is cancelled (slow consumer). */
#define HM_STREAM_BACKLOG_MAX ((size_t)8 << 20)

/* jansson's json_real() returns NULL for NaN and infinities: clamp (OpenAI reports
 * -9999 for impossible tokens). */
static json_t *jreal(double x)
{
    if (isnan(x))
        return json_real(-9999.0);
    if (!isfinite(x) || x < -9999.0)
        return json_real(x > 0 ? 0.0 : -9999.0);
    return json_real(x);
}

static const char *finish_name(enum hm_finish f)
{
    return f == HM_FINISH_LENGTH ? "length" : "stop";
}

/* A token's text for logprobs: its bytes made valid UTF-8, or its vocabulary text
 * for tokens without bytes. Returns owned json string. */
static json_t *token_string(const struct hm_model *m, int32_t id, json_t **bytes_out)
{
    size_t len = 0;
    const uint8_t *b = hm_tokenizer_token_bytes(m->tok, id, &len);
    struct hm_buf s;
    json_t *j;

    hm_buf_init(&s, 1 << 16);
    if (len)
        hm_utf8_append_lossy(&s, b, len);
    else
        hm_buf_append_str(&s, hm_tokenizer_token_text(m->tok, id));
    j = json_stringn(s.data ? s.data : "", s.len);
    hm_buf_release(&s);
    if (bytes_out) {
        *bytes_out = json_array();
        for (size_t i = 0; i < len; i++)
            json_array_append_new(*bytes_out, json_integer(b[i]));
    }
    return j;
}

/* The four arrays of a completions logprobs object, empty. */
static void completion_lp_init(json_t *lp)
{
    json_object_set_new(lp, "tokens", json_array());
    json_object_set_new(lp, "token_logprobs", json_array());
    json_object_set_new(lp, "top_logprobs", json_array());
    json_object_set_new(lp, "text_offset", json_array());
}

/* Appends one token's logprobs to lp (creating the arrays on first use). */
static void logprobs_append(struct hm_req *r, json_t *lp, const struct hm_sample *smp,
                            size_t text_offset)
{
    const struct hm_model *m = r->srv->model;

    if (r->kind == HM_API_CHAT) {
        json_t *content = json_object_get(lp, "content"), *e = json_object(), *tops = json_array();
        json_t *bytes = NULL;
        if (!content) {
            content = json_array();
            json_object_set_new(lp, "content", content);
            json_object_set_new(lp, "refusal", json_null());
        }
        json_object_set_new(e, "token", token_string(m, smp->token, &bytes));
        json_object_set_new(e, "logprob", jreal(smp->logprob));
        json_object_set_new(e, "bytes", bytes);
        for (uint32_t i = 0; i < smp->n_top && i < r->gr->top_logprobs; i++) {
            json_t *t = json_object(), *tb = NULL;
            json_object_set_new(t, "token", token_string(m, smp->top_tokens[i], &tb));
            json_object_set_new(t, "logprob", jreal(smp->top_logprobs[i]));
            json_object_set_new(t, "bytes", tb);
            json_array_append_new(tops, t);
        }
        json_object_set_new(e, "top_logprobs", tops);
        json_array_append_new(content, e);
        return;
    }
    json_t *tokens = json_object_get(lp, "tokens");
    if (!tokens) {
        completion_lp_init(lp);
        tokens = json_object_get(lp, "tokens");
    }
    json_array_append_new(tokens, token_string(m, smp->token, NULL));
    json_array_append_new(json_object_get(lp, "token_logprobs"), jreal(smp->logprob));
    json_t *top = json_object();
    for (uint32_t i = 0; i < smp->n_top && i < r->gr->top_logprobs; i++) {
        json_t *k = token_string(m, smp->top_tokens[i], NULL);
        if (k && !json_object_getn(top, json_string_value(k), json_string_length(k)))
            json_object_setn_new(top, json_string_value(k), json_string_length(k),
                                 jreal(smp->top_logprobs[i]));
        json_decref(k);
    }
    /* OpenAI: "the API will always return the logprob of the sampled token, so there may be
     * up to logprobs+1 elements" */
    {
        json_t *k = token_string(m, smp->token, NULL);
        if (k && !json_object_getn(top, json_string_value(k), json_string_length(k)))
            json_object_setn_new(top, json_string_value(k), json_string_length(k),
                                 jreal(smp->logprob));
        json_decref(k);
    }
    json_array_append_new(json_object_get(lp, "top_logprobs"), top);
    json_array_append_new(json_object_get(lp, "text_offset"), json_integer((json_int_t)text_offset));
}

/* Code points in a token's bytes (completions' text_offset counts characters, from the
 * tokens' own bytes, so text held back - partial UTF-8, a possible stop sequence - does
 * not shift it). */
static size_t token_chars(const struct hm_model *m, int32_t id)
{
    size_t len = 0, n = 0;
    const uint8_t *b = hm_tokenizer_token_bytes(m->tok, id, &len);
    for (size_t i = 0; i < len; i++)
        n += (b[i] & 0xC0) != 0x80;
    return n;
}

/* echo with logprobs: the choice's logprobs object, created with the prompt's first
 * token, which has no log-probability (null in token_logprobs and top_logprobs, as
 * OpenAI reports it). */
static json_t *echo_logprobs(struct hm_req *r, struct hm_choice *ch)
{
    const struct hm_model *m = r->srv->model;
    json_t *lp = ch->logprobs;

    if (lp)
        return lp;
    lp = ch->logprobs = json_object();
    completion_lp_init(lp);
    json_array_append_new(json_object_get(lp, "tokens"), token_string(m, ch->prompt_ids[0], NULL));
    json_array_append_new(json_object_get(lp, "token_logprobs"), json_null());
    json_array_append_new(json_object_get(lp, "top_logprobs"), json_null());
    json_array_append_new(json_object_get(lp, "text_offset"),
                          json_integer((json_int_t)ch->text_offset));
    ch->text_offset += token_chars(m, ch->prompt_ids[0]);
    return lp;
}

static void stream_choice(struct hm_req *r, unsigned index, const char *text, size_t len,
                          bool role, json_t *lp, const char *finish);

/* echo: before a choice's first token (or its end), its prompt. A stream sends it as
 * the choice's first chunk, with the prompt's logprobs when asked for; a body already
 * holds the text, and the logprobs object goes on with the generated tokens. */
static void echo_begin(struct hm_req *r, struct hm_choice *ch, unsigned index)
{
    json_t *lp = NULL;

    if (!ch->echo_pending)
        return;
    ch->echo_pending = false;
    if (ch->prompt_ids)
        lp = echo_logprobs(r, ch);
    if (r->stream) {
        ch->logprobs = NULL; /* the chunk takes it */
        stream_choice(r, index, ch->echo_text ? ch->echo_text : "", ch->echo_len, false, lp, NULL);
        hm_free(ch->echo_text);
        ch->echo_text = NULL;
    }
}

/* The fields every response object starts with: id, object, created, model. */
static json_t *response_base(struct hm_req *r, const char *object)
{
    json_t *c = json_object();
    json_object_set_new(c, "id", json_string(r->id));
    json_object_set_new(c, "object", json_string(object));
    json_object_set_new(c, "created", json_integer(r->created));
    json_object_set_new(c, "model", json_string(r->srv->model_id));
    json_object_set_new(c, "system_fingerprint", json_string("hybridmoe"));
    return c;
}

static json_t *chunk_base(struct hm_req *r)
{
    return response_base(r, r->kind == HM_API_CHAT ? "chat.completion.chunk" : "text_completion");
}

/* One choice delta chunk. text may be NULL (role or final chunk). */
static void stream_choice(struct hm_req *r, unsigned index, const char *text, size_t len,
                          bool role, json_t *lp, const char *finish)
{
    json_t *c = chunk_base(r), *choices = json_array(), *ch = json_object();

    json_object_set_new(ch, "index", json_integer(index));
    if (r->kind == HM_API_CHAT) {
        json_t *delta = json_object();
        if (role) {
            json_object_set_new(delta, "role", json_string("assistant"));
            json_object_set_new(delta, "content", json_string(""));
        }
        if (text)
            json_object_set_new(delta, "content", json_stringn(text, len));
        json_object_set_new(ch, "delta", delta);
    } else {
        json_object_set_new(ch, "text", json_stringn(text ? text : "", text ? len : 0));
    }
    json_object_set_new(ch, "logprobs", lp ? lp : json_null());
    json_object_set_new(ch, "finish_reason", finish ? json_string(finish) : json_null());
    json_array_append_new(choices, ch);
    json_object_set_new(c, "choices", choices);
    if (r->gr->include_usage)
        json_object_set_new(c, "usage", json_null());
    hm_sse_append_json(&r->out, c);
    json_decref(c);
}

static json_t *usage_json(struct hm_req *r)
{
    json_t *u = json_object(), *h = json_object();
    uint64_t gen = 0, sum_exp = 0, n_dec = 0, kv = 0, kv_base = 0;
    double c = 0;
    int64_t w = 0;

    for (size_t i = 0; i < r->n_choices; i++) {
        const struct hm_choice *ch = &r->choices[i];
        gen += ch->n_gen;
        sum_exp += ch->stats.sum_experts;
        n_dec += ch->stats.n_expert_decisions;
        kv += ch->stats.kv_bytes;
        kv_base += ch->stats.kv_bytes_baseline;
        c += ch->stats.c_req;
        if (ch->stats.window > w)
            w = ch->stats.window;
    }
    json_object_set_new(u, "prompt_tokens", json_integer((json_int_t)r->prompt_tokens));
    json_object_set_new(u, "completion_tokens", json_integer((json_int_t)gen));
    json_object_set_new(u, "total_tokens", json_integer((json_int_t)(r->prompt_tokens + gen)));
    json_object_set_new(h, "complexity", jreal(r->n_choices ? c / (double)r->n_choices : 0));
    json_object_set_new(h, "window", json_integer(w));
    json_object_set_new(h, "mean_experts_per_token",
                        jreal(n_dec ? (double)sum_exp / (double)n_dec : 0));
    json_object_set_new(h, "kv_bytes", json_integer((json_int_t)kv));
    json_object_set_new(h, "kv_bytes_baseline", json_integer((json_int_t)kv_base));
    json_object_set_new(u, "hybridmoe", h);
    return u;
}

static json_t *final_body(struct hm_req *r)
{
    json_t *b = response_base(r, r->kind == HM_API_CHAT ? "chat.completion" : "text_completion");
    json_t *choices = json_array();

    for (size_t i = 0; i < r->n_choices; i++) {
        struct hm_choice *ch = &r->choices[i];
        json_t *c = json_object();
        const char *t = ch->text.data ? ch->text.data : "";
        json_object_set_new(c, "index", json_integer((json_int_t)i));
        if (r->kind == HM_API_CHAT) {
            json_t *msg = json_object();
            json_object_set_new(msg, "role", json_string("assistant"));
            json_object_set_new(msg, "content", json_stringn(t, ch->text.len));
            json_object_set_new(msg, "refusal", json_null());
            json_object_set_new(c, "message", msg);
        } else {
            json_object_set_new(c, "text", json_stringn(t, ch->text.len));
        }
        if (ch->logprobs) {
            json_object_set_new(c, "logprobs", ch->logprobs);
            ch->logprobs = NULL;
        } else if (r->gr->logprobs) {
            /* asked for, but no token was generated (EOS first): empty, not null */
            json_t *lp = json_object();
            if (r->kind == HM_API_CHAT) {
                json_object_set_new(lp, "content", json_array());
                json_object_set_new(lp, "refusal", json_null());
            } else {
                completion_lp_init(lp);
            }
            json_object_set_new(c, "logprobs", lp);
        } else {
            json_object_set_new(c, "logprobs", json_null());
        }
        json_object_set_new(c, "finish_reason", json_string(finish_name(ch->finish)));
        json_array_append_new(choices, c);
    }
    json_object_set_new(b, "choices", choices);
    json_object_set_new(b, "usage", usage_json(r));
    return b;
}

/* ---- events --------------------------------------------------------------------- */

static void choice_text(struct hm_req *r, struct hm_choice *ch, unsigned index, const char *text,
                        size_t len, const struct hm_sample *smp)
{
    json_t *lp = NULL;

    if (r->gr->logprobs && smp) {
        lp = json_object();
        logprobs_append(r, r->stream ? lp : (ch->logprobs ? ch->logprobs
                                                          : (ch->logprobs = json_object())),
                        smp, ch->text_offset);
        if (!r->stream) {
            json_decref(lp);
            lp = NULL;
        }
        ch->text_offset += token_chars(r->srv->model, smp->token);
    }
    if (!r->stream) {
        if (len && hm_buf_append(&ch->text, text, len) < 0)
            hm_api_error_set(&r->err, HM_AERR_INTERNAL, NULL, "response too large");
        return;
    }
    if (len || lp)
        stream_choice(r, index, text, len, false, lp, NULL);
    else
        json_decref(lp);
    /* a client that does not read: stop generating for it rather than buffer without end */
    if (r->out.len - r->out_off > HM_STREAM_BACKLOG_MAX && r->job && !atomic_load(&r->job->cancel)) {
        hm_log(HM_LOG_WARN, "%s: client reads too slowly (%zu bytes unsent): cancelled", r->id,
               r->out.len - r->out_off);
        hm_api_error_set(&r->err, HM_AERR_INTERNAL, NULL, "the client reads too slowly");
        hm_job_cancel(r->job);
    }
}

static void set_error_from_finish(struct hm_req *r, const struct hm_choice *ch)
{
    if (r->err.kind != HM_AERR_NONE)
        return;
    switch (ch->finish) {
    case HM_FINISH_TIMEOUT:
        hm_api_error_set(&r->err, HM_AERR_TIMEOUT, NULL, "the request timed out");
        break;
    case HM_FINISH_SHUTDOWN:
        hm_api_error_set(&r->err, HM_AERR_SHUTDOWN, NULL, "the server is shutting down");
        break;
    case HM_FINISH_CANCELLED:
        hm_api_error_set(&r->err, HM_AERR_INTERNAL, NULL, "the request was cancelled");
        break;
    case HM_FINISH_ERROR: {
        enum hm_aerr k = hm_api_error_from_hm(ch->err);
        if (k == HM_AERR_NONE || k == HM_AERR_NOT_FOUND || k == HM_AERR_TOO_LARGE)
            k = HM_AERR_INTERNAL;
        hm_api_error_set(&r->err, k, NULL, "%s", ch->msg[0] ? ch->msg : hm_strerror(ch->err));
        break;
    }
    default:
        break;
    }
}

static void job_end(struct hm_req *r)
{
    struct hm_server *srv = r->srv;

    hm_hist_observe(&srv->metrics.e2e, (double)(hm_now_ns() - r->t_start_ns) * 1e-9);
    if (r->stream) {
        if (r->err.kind != HM_AERR_NONE) {
            json_t *e = hm_api_error_json(&r->err);
            hm_sse_append_json(&r->out, e);
            json_decref(e);
        } else if (r->gr->include_usage) {
            json_t *c = chunk_base(r);
            json_object_set_new(c, "choices", json_array());
            json_object_set_new(c, "usage", usage_json(r));
            hm_sse_append_json(&r->out, c);
            json_decref(c);
        }
        hm_sse_append_done(&r->out);
        r->finished = true;
    } else if (r->err.kind == HM_AERR_NONE) {
        r->resp = final_body(r);
        if (!r->resp)
            hm_api_error_set(&r->err, HM_AERR_INTERNAL, NULL, "out of memory");
    }
    hm_req_resume(r);
}

void hm_api_on_event(struct hm_server *srv, struct hm_event *ev)
{
    struct hm_job *j = ev->job;
    struct hm_req *r = j->cookie;
    struct hm_choice *ch = NULL;

    /* server-wide accounting first: it holds whether or not the client is still there */
    switch (ev->kind) {
    case HM_EV_ADMITTED:
        j->sub_admitted = true;
        srv->pending_jobs--;
        srv->pending_seqs -= (unsigned)j->n_seq;
        srv->running_seqs += (unsigned)j->n_seq;
        hm_hist_observe(&srv->metrics.queue, (double)(ev->t_ns - j->t_submit_ns) * 1e-9);
        break;
    case HM_EV_SEQ_DONE:
        if (j->sub_admitted)
            srv->running_seqs--;
        break;
    case HM_EV_JOB_DONE:
        if (!j->sub_admitted) {
            srv->pending_jobs--;
            srv->pending_seqs -= (unsigned)j->n_seq;
        }
        srv->n_gen_active--;
        break;
    default:
        break;
    }
    if (!r)
        return;
    if (ev->kind == HM_EV_TOKEN || ev->kind == HM_EV_SEQ_DONE || ev->kind == HM_EV_PROMPT) {
        if (ev->index >= r->n_choices)
            return;
        ch = &r->choices[ev->index];
        if (ev->kind != HM_EV_PROMPT)
            echo_begin(r, ch, ev->index);
    }
    switch (ev->kind) {
    case HM_EV_ADMITTED:
        r->admitted = true;
        break;
    case HM_EV_PROMPT:
        if (ch->prompt_ids && ch->echo_pending) {
            json_t *lp = echo_logprobs(r, ch);
            for (uint32_t k = 0; k < ev->n_prompt_samples; k++) {
                logprobs_append(r, lp, &ev->prompt[k], ch->text_offset);
                ch->text_offset += token_chars(srv->model, ev->prompt[k].token);
            }
        }
        break;
    case HM_EV_TOKEN:
        if (!r->t_first_ns) {
            r->t_first_ns = ev->t_ns;
            hm_hist_observe(&srv->metrics.ttft, (double)(ev->t_ns - r->t_start_ns) * 1e-9);
        }
        if (ch->last_token_ns)
            hm_hist_observe(&srv->metrics.itl, (double)(ev->t_ns - ch->last_token_ns) * 1e-9);
        ch->last_token_ns = ev->t_ns;
        ch->n_gen++;
        r->tokens_out++;
        choice_text(r, ch, ev->index, ev->text, ev->text_len,
                    ev->has_sample ? &ev->sample : NULL);
        if (r->stream)
            hm_req_resume(r);
        break;
    case HM_EV_SEQ_DONE:
        ch->done = true;
        ch->finish = ev->finish;
        ch->stats = ev->stats;
        ch->err = ev->err;
        snprintf(ch->msg, sizeof(ch->msg), "%s", ev->msg);
        if (ev->text_len)
            choice_text(r, ch, ev->index, ev->text, ev->text_len, NULL);
        if (ev->finish == HM_FINISH_STOP || ev->finish == HM_FINISH_LENGTH) {
            if (r->stream)
                stream_choice(r, ev->index, NULL, 0, false, NULL, finish_name(ev->finish));
        } else {
            set_error_from_finish(r, ch);
        }
        break;
    case HM_EV_JOB_DONE:
        r->job_done = true;
        job_end(r);
        break;
    }
}

void hm_api_request_gone(struct hm_req *r)
{
    if (r->job && !r->job_done)
        hm_job_cancel(r->job);
    if (r->job)
        r->job->cookie = NULL;
}

/* A suspended connection is not watched by MHD, so a client that closes while its
 * non-streaming request runs would go unnoticed: peek at the socket instead. */
static bool client_gone(struct hm_req *r)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    struct pollfd p;
    char c;

    if (!ci)
        return false;
    p.fd = ci->connect_fd;
    p.events = POLLIN | POLLRDHUP;
    p.revents = 0;
    if (poll(&p, 1, 0) <= 0)
        return false;
    if (p.revents & (POLLHUP | POLLERR))
        return true;
    /* readable: EOF means the client closed (pipelined bytes mean it did not) */
    return recv(p.fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) == 0;
}

void hm_api_keepalive(struct hm_server *srv, uint64_t now_ns)
{
    uint64_t every = (uint64_t)srv->cfg->keepalive_interval * 1000000000ull;

    for (struct hm_req *r = srv->reqs; r; r = r->next) {
        if (r->state == HM_RS_WAIT && r->conn && r->job && !r->job_done &&
            !atomic_load(&r->job->cancel) && client_gone(r)) {
            hm_job_cancel(r->job); /* the batcher ends it within a step; MHD then closes */
            srv->metrics.requests_cancelled++;
            continue;
        }
        if (r->state != HM_RS_STREAM || r->finished || !r->conn)
            continue;
        if (r->out.len == r->out_off && now_ns - r->last_write_ns >= every) {
            hm_sse_append_comment(&r->out, "keep-alive");
            r->last_write_ns = now_ns;
            hm_req_resume(r);
        }
    }
}

/* ---- the request -------------------------------------------------------------- */

static int tokenize_prompt(struct hm_req *r, const char *text, size_t len, unsigned flags,
                           int32_t **ids, size_t *n, struct hm_api_error *e)
{
    int rc = hm_tokenizer_encode(r->srv->model->tok, text, len, flags, ids, n);
    if (rc < 0)
        return hm_api_error_set(e, hm_api_error_from_hm(rc), NULL, "cannot tokenize: %s",
                                hm_strerror(rc));
    return 0;
}

/* echo: each choice starts with its prompt's text (the string as sent, or the token ids
 * decoded, invalid UTF-8 replaced) and, with logprobs, keeps the prompt's tokens. */
static int echo_setup(struct hm_req *r, int32_t **ids, const size_t *n_ids,
                      struct hm_api_error *e)
{
    const struct hm_gen_request *gr = r->gr;

    for (size_t i = 0; i < r->n_choices; i++) {
        size_t p = i / gr->n;
        const struct hm_prompt *pr = &gr->prompts[p];
        struct hm_choice *ch = &r->choices[i];
        struct hm_buf t;
        int rc = 0;

        hm_buf_init(&t, (size_t)64 << 20);
        if (pr->ids) {
            char *raw = NULL;
            size_t len = 0;
            rc = hm_tokenizer_decode(r->srv->model->tok, pr->ids, pr->n_ids, false, &raw, &len);
            if (rc >= 0)
                rc = hm_utf8_append_lossy(&t, (const unsigned char *)raw, len);
            hm_free(raw);
        } else {
            rc = hm_buf_append(&t, pr->text, pr->text_len);
        }
        if (rc >= 0 && r->stream) {
            ch->echo_text = hm_memdup_z(t.data ? t.data : "", t.len);
            ch->echo_len = t.len;
            rc = ch->echo_text ? 0 : HM_ENOMEM;
        } else if (rc >= 0 && t.len) {
            rc = hm_buf_append(&ch->text, t.data, t.len);
        }
        hm_buf_release(&t);
        if (rc >= 0 && gr->logprobs) {
            ch->prompt_ids = hm_mallocarray(n_ids[p], sizeof(int32_t));
            if (ch->prompt_ids)
                memcpy(ch->prompt_ids, ids[p], n_ids[p] * sizeof(int32_t));
            else
                rc = HM_ENOMEM;
        }
        if (rc < 0)
            return hm_api_error_set(e, HM_AERR_INTERNAL, NULL, "cannot echo the prompt: %s",
                                    hm_strerror(rc));
        ch->echo_pending = true;
    }
    return 0;
}

void hm_api_generate(struct hm_req *r)
{
    struct hm_server *srv = r->srv;
    const struct hm_config *cfg = srv->cfg;
    struct hm_api_error e = { 0 };
    struct hm_gen_request *gr = NULL;
    struct hm_job *job = NULL;
    int32_t **ids = NULL;
    size_t *n_ids = NULL, n_prompts = 0, n_seq;
    uint32_t max_tokens;
    uint64_t kv_total = 0;
    json_t *root;
    const char *pparam;

    r->kind = r->route == HM_ROUTE_CHAT ? HM_API_CHAT : HM_API_COMPLETIONS;
    pparam = r->kind == HM_API_CHAT ? "messages" : "prompt";
    root = hm_api_parse_body(r);
    if (!root)
        return;
    if (hm_gen_request_parse(root, r->kind, &srv->limits, &gr, &e) < 0) {
        json_decref(root);
        goto fail;
    }
    json_decref(root);
    r->gr = gr;
    r->stream = gr->stream;
    /* "" (sent by some tools that have no model setting) means the served model */
    if (gr->model && gr->model[0] && strcmp(gr->model, srv->model_id)) {
        hm_api_error_set(&e, HM_AERR_MODEL_NOT_FOUND, "model",
                         "the model '%s' does not exist; this server serves '%s'", gr->model,
                         srv->model_id);
        goto fail;
    }

    /* prompts -> tokens */
    n_prompts = r->kind == HM_API_CHAT ? 1 : gr->n_prompts;
    ids = hm_calloc(n_prompts, sizeof(*ids));
    n_ids = hm_calloc(n_prompts, sizeof(*n_ids));
    if (!ids || !n_ids) {
        hm_api_error_set(&e, HM_AERR_INTERNAL, NULL, "out of memory");
        goto fail;
    }
    if (r->kind == HM_API_CHAT) {
        char *text = NULL;
        size_t len = 0;
        bool special = false;
        if (hm_chat_render(srv->tmpl, gr->messages, gr->n_messages, &text, &len, &special) < 0) {
            hm_api_error_set(&e, HM_AERR_INTERNAL, NULL, "out of memory");
            goto fail;
        }
        int rc = tokenize_prompt(r, text, len, HM_TOK_ADD_BOS | (special ? HM_TOK_PARSE_SPECIAL : 0),
                                 &ids[0], &n_ids[0], &e);
        hm_free(text);
        if (rc < 0)
            goto fail;
    } else {
        for (size_t p = 0; p < n_prompts; p++) {
            const struct hm_prompt *pr = &gr->prompts[p];
            if (pr->ids) {
                ids[p] = hm_mallocarray(pr->n_ids, sizeof(int32_t));
                if (!ids[p]) {
                    hm_api_error_set(&e, HM_AERR_INTERNAL, NULL, "out of memory");
                    goto fail;
                }
                memcpy(ids[p], pr->ids, pr->n_ids * sizeof(int32_t));
                n_ids[p] = pr->n_ids;
            } else if (tokenize_prompt(r, pr->text, pr->text_len, HM_TOK_ADD_BOS, &ids[p],
                                       &n_ids[p], &e) < 0) {
                goto fail;
            }
        }
    }
    max_tokens = gr->max_tokens;
    for (size_t p = 0; p < n_prompts; p++) {
        uint32_t n_ctx = srv->limits.n_ctx;
        if (n_ids[p] == 0) {
            hm_api_error_set(&e, HM_AERR_INVALID, pparam, "the prompt is empty");
            goto fail;
        }
        /* scoring only (echo, max_tokens 0) may fill the context; otherwise at least one
         * generated token must fit */
        if (n_ids[p] > n_ctx || (n_ids[p] == n_ctx && !gr->max_tokens_zero)) {
            hm_api_error_set(&e, HM_AERR_CONTEXT, pparam,
                             "the prompt has %zu tokens; this model's context is %u tokens "
                             "(prompt + at least one generated token must fit)", n_ids[p], n_ctx);
            goto fail;
        }
        r->prompt_tokens += n_ids[p];
        if (gr->max_tokens) {
            if (n_ids[p] + gr->max_tokens > n_ctx) {
                hm_api_error_set(&e, HM_AERR_CONTEXT, gr->max_tokens ? "max_tokens" : pparam,
                                 "the prompt (%zu tokens) plus max_tokens (%u) exceeds this "
                                 "model's context of %u tokens", n_ids[p], gr->max_tokens, n_ctx);
                goto fail;
            }
        } else {
            uint32_t room = n_ctx - (uint32_t)n_ids[p];
            uint32_t mt = cfg->default_max_tokens < room ? cfg->default_max_tokens : room;
            if (!max_tokens || mt < max_tokens)
                max_tokens = mt;
        }
    }
    if (gr->max_tokens_zero)
        max_tokens = 0; /* echo: score the prompt, generate nothing */
    n_seq = n_prompts * gr->n;
    if (n_seq > cfg->max_running) {
        hm_api_error_set(&e, HM_AERR_INVALID, "n",
                         "the request needs %zu sequences (prompts x n); this server runs at most "
                         "%u at once (max_running)", n_seq, cfg->max_running);
        goto fail;
    }
    /* KV bytes, known before the request starts (spec 8) */
    {
        struct hm_session_opts so = gr->so;
        so.max_tokens = max_tokens;
        if (hm_job_new(n_seq, &job) < 0) {
            hm_api_error_set(&e, HM_AERR_INTERNAL, NULL, "out of memory");
            goto fail;
        }
        for (size_t p = 0; p < n_prompts; p++) {
            struct hm_session_plan plan;
            struct hm_errmsg em = { { 0 } };
            int rc = hm_session_plan(srv->model, ids[p], (uint32_t)n_ids[p], &so, &plan, &em);
            if (rc < 0) {
                hm_api_error_set(&e, hm_api_error_from_hm(rc), NULL, "%s",
                                 em.text[0] ? em.text : hm_strerror(rc));
                if (e.kind != HM_AERR_INVALID)
                    e.kind = HM_AERR_INTERNAL;
                goto fail;
            }
            kv_total += plan.kv_bytes * gr->n;
        }
        if (kv_total > cfg->kv_budget) {
            hm_api_error_set(&e, HM_AERR_CONTEXT, "max_tokens",
                             "the request needs %llu bytes of KV cache, more than this server's "
                             "kv_budget of %llu bytes; lower max_tokens, n or the prompt",
                             (unsigned long long)kv_total, (unsigned long long)cfg->kv_budget);
            goto fail;
        }
        job->so = so;
    }
    /* admission: never an unbounded wait */
    if (srv->pending_jobs >= cfg->queue_size &&
        srv->running_seqs + srv->pending_seqs + n_seq > cfg->max_running) {
        srv->metrics.rejected_overload++;
        hm_api_error_set(&e, HM_AERR_OVERLOADED, NULL,
                         "the server is at capacity (%u requests waiting); retry later",
                         srv->pending_jobs);
        goto fail;
    }

    /* the job: every input copied in */
    job->sp = gr->sp;
    if (gr->n_bias) {
        job->bias = hm_mallocarray(gr->n_bias, sizeof(*job->bias));
        if (!job->bias) {
            hm_api_error_set(&e, HM_AERR_INTERNAL, NULL, "out of memory");
            goto fail;
        }
        memcpy(job->bias, gr->bias, gr->n_bias * sizeof(*job->bias));
    }
    job->sp.bias = job->bias;
    job->sp.n_bias = gr->n_bias;
    for (size_t i = 0; i < gr->n_stop; i++) {
        job->stops[i] = hm_strdup(gr->stop[i]);
        if (!job->stops[i]) {
            hm_api_error_set(&e, HM_AERR_INTERNAL, NULL, "out of memory");
            goto fail;
        }
        job->n_stop = i + 1;
    }
    job->max_tokens = max_tokens;
    job->prompt_logprobs = gr->echo && gr->logprobs;
    job->ignore_eos = gr->ignore_eos;
    job->kv_bytes = kv_total;
    {
        double t = gr->timeout_s > 0 ? gr->timeout_s : (double)cfg->request_timeout;
        job->deadline_ns = t > 0 ? hm_now_ns() + (uint64_t)(t * 1e9) : 0;
    }
    r->choices = hm_calloc(n_seq, sizeof(*r->choices));
    if (!r->choices) {
        hm_api_error_set(&e, HM_AERR_INTERNAL, NULL, "out of memory");
        goto fail;
    }
    r->n_choices = n_seq;
    for (size_t i = 0; i < n_seq; i++) {
        size_t p = i / gr->n;
        struct hm_job_seq *q = &job->seqs[i];
        hm_buf_init(&r->choices[i].text, (size_t)64 << 20);
        q->index = (unsigned)i;
        q->n_prompt = (uint32_t)n_ids[p];
        q->prompt = hm_mallocarray(n_ids[p], sizeof(int32_t));
        if (!q->prompt) {
            hm_api_error_set(&e, HM_AERR_INTERNAL, NULL, "out of memory");
            goto fail;
        }
        memcpy(q->prompt, ids[p], n_ids[p] * sizeof(int32_t));
    }
    if (gr->echo && echo_setup(r, ids, n_ids, &e) < 0)
        goto fail;
    for (size_t p = 0; p < n_prompts; p++)
        hm_free(ids[p]);
    hm_free(ids);
    hm_free(n_ids);
    ids = NULL;
    n_ids = NULL;

    snprintf(r->id, sizeof(r->id), "%s-%016llx", r->kind == HM_API_CHAT ? "chatcmpl" : "cmpl",
             (unsigned long long)(srv->next_id++ * 0x9E3779B97F4A7C15ull));
    r->created = (long long)time(NULL);
    r->tokens_in = r->prompt_tokens;
    job->cookie = r;
    r->job = job;
    srv->pending_jobs++;
    srv->pending_seqs += (unsigned)n_seq;
    srv->n_gen_active++;
    hm_batcher_submit(srv->batcher, job);

    if (r->stream) {
        if (hm_req_start_stream(r) < 0) {
            hm_job_cancel(job);
            return; /* MHD closes the connection; completion frees r */
        }
        if (r->kind == HM_API_CHAT)
            for (size_t i = 0; i < n_seq; i++)
                stream_choice(r, (unsigned)i, NULL, 0, true, NULL, NULL);
    } else {
        hm_req_wait(r);
    }
    return;
fail:
    if (ids)
        for (size_t p = 0; p < n_prompts; p++)
            hm_free(ids[p]);
    hm_free(ids);
    hm_free(n_ids);
    hm_job_unref(job);
    hm_req_respond_error(r, &e);
}
