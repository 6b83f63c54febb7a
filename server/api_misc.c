/*
 * api_misc.c - GET /v1/models, /v1/models/{id}, /health, /metrics and
 * POST /tokenize, /detokenize.
 */
#include "server.h"

#include <string.h>

#include "hm/alloc.h"
#include "hm/model.h"
#include "hm/tokenizer.h"

#include "textstream.h"

json_t *hm_api_parse_body(struct hm_req *r)
{
    json_error_t je;
    json_t *root;
    struct hm_api_error e;

    if (!r->body.len) {
        hm_api_error_set(&e, HM_AERR_INVALID_JSON, NULL, "the request body is empty");
        hm_req_respond_error(r, &e);
        return NULL;
    }
    root = json_loadb(r->body.data, r->body.len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &je);
    if (!root) {
        hm_api_error_set(&e, HM_AERR_INVALID_JSON, NULL,
                         "the request body is not valid JSON: %s (line %d, column %d)", je.text,
                         je.line, je.column);
        hm_req_respond_error(r, &e);
        return NULL;
    }
    return root;
}

static json_t *model_object(struct hm_server *srv)
{
    const struct hm_model *m = srv->model;
    json_t *o = json_object(), *h = json_object();

    json_object_set_new(o, "id", json_string(srv->model_id));
    json_object_set_new(o, "object", json_string("model"));
    json_object_set_new(o, "created", json_integer(0));
    json_object_set_new(o, "owned_by", json_string("hybridmoe"));
    json_object_set_new(h, "n_ctx", json_integer(m->hp.n_ctx));
    json_object_set_new(h, "n_vocab", json_integer(m->hp.n_vocab));
    json_object_set_new(h, "n_layer", json_integer(m->hp.n_layer));
    json_object_set_new(h, "layer_pattern", json_string(m->hp.pattern));
    json_object_set_new(h, "n_expert", json_integer(m->hp.n_expert));
    json_object_set_new(h, "n_expert_used", json_integer(m->hp.n_expert_used));
    json_object_set_new(h, "params_total", json_integer((json_int_t)m->counts.total));
    json_object_set_new(h, "params_active", json_integer((json_int_t)m->counts.active));
    json_object_set_new(h, "chat_template", json_string(hm_chat_template_name(srv->tmpl)));
    json_object_set_new(o, "hybridmoe", h);
    return o;
}

void hm_api_models(struct hm_req *r)
{
    struct hm_server *srv = r->srv;

    if (r->route == HM_ROUTE_MODEL) {
        const char *id = r->path + strlen("/v1/models/");
        struct hm_api_error e;
        if (strcmp(id, srv->model_id)) {
            hm_api_error_set(&e, HM_AERR_MODEL_NOT_FOUND, "model",
                             "the model '%s' does not exist", id);
            hm_req_respond_error(r, &e);
            return;
        }
        hm_req_respond_json(r, 200, model_object(srv));
        return;
    }
    json_t *list = json_object(), *data = json_array();
    json_array_append_new(data, model_object(srv));
    json_object_set_new(list, "object", json_string("list"));
    json_object_set_new(list, "data", data);
    hm_req_respond_json(r, 200, list);
}

void hm_api_health(struct hm_req *r)
{
    struct hm_server *srv = r->srv;
    const char *status = srv->draining ? "draining" : srv->ready ? "ok" : "loading";
    json_t *b = json_object();

    json_object_set_new(b, "status", json_string(status));
    hm_req_respond_json(r, srv->ready && !srv->draining ? 200 : 503, b);
}

void hm_api_metrics(struct hm_req *r)
{
    struct hm_server *srv = r->srv;
    struct hm_batcher_stats bs;
    struct hm_buf out;

    hm_batcher_stats_init(&bs, srv->cfg->kv_budget);
    if (srv->batcher)
        hm_batcher_get_stats(srv->batcher, &bs);
    hm_buf_init(&out, (size_t)16 << 20);
    if (hm_metrics_render(&srv->metrics, &bs, srv->cfg->max_running, srv->cfg->queue_size,
                          srv->draining, &out) < 0) {
        struct hm_api_error e;
        hm_buf_release(&out);
        hm_api_error_set(&e, HM_AERR_INTERNAL, NULL, "out of memory");
        hm_req_respond_error(r, &e);
        return;
    }
    hm_req_respond_text(r, 200, "text/plain; version=0.0.4; charset=utf-8", out.data, out.len);
    hm_buf_release(&out);
}

void hm_api_tokenize(struct hm_req *r)
{
    const struct hm_model *m = r->srv->model;
    struct hm_tokenize_request tr;
    struct hm_api_error e;
    json_t *root = hm_api_parse_body(r), *toks, *b;
    int32_t *ids = NULL;
    size_t n = 0;
    int rc;

    if (!root)
        return;
    rc = hm_tokenize_request_parse(root, &tr, &e);
    json_decref(root);
    if (rc < 0) {
        hm_req_respond_error(r, &e);
        return;
    }
    rc = hm_tokenizer_encode(m->tok, tr.text, tr.len, tr.add_special ? HM_TOK_ADD_BOS : 0, &ids,
                             &n);
    if (rc < 0) {
        hm_tokenize_request_release(&tr);
        hm_api_error_set(&e, hm_api_error_from_hm(rc), NULL, "cannot tokenize: %s",
                         hm_strerror(rc));
        hm_req_respond_error(r, &e);
        return;
    }
    toks = json_array();
    for (size_t i = 0; i < n; i++) {
        if (tr.with_pieces) {
            json_t *p = json_object();
            size_t len = 0;
            const uint8_t *bytes = hm_tokenizer_token_bytes(m->tok, ids[i], &len);
            struct hm_buf s;
            hm_buf_init(&s, 1 << 16);
            hm_utf8_append_lossy(&s, bytes, len);
            json_object_set_new(p, "id", json_integer(ids[i]));
            json_object_set_new(p, "piece", json_stringn(s.data ? s.data : "", s.len));
            hm_buf_release(&s);
            json_array_append_new(toks, p);
        } else {
            json_array_append_new(toks, json_integer(ids[i]));
        }
    }
    hm_free(ids);
    hm_tokenize_request_release(&tr);
    b = json_object();
    json_object_set_new(b, "tokens", toks);
    json_object_set_new(b, "count", json_integer((json_int_t)n));
    json_object_set_new(b, "max_model_len", json_integer(m->hp.n_ctx));
    hm_req_respond_json(r, 200, b);
}

void hm_api_detokenize(struct hm_req *r)
{
    const struct hm_model *m = r->srv->model;
    struct hm_api_error e;
    json_t *root = hm_api_parse_body(r), *b;
    int32_t *ids = NULL;
    size_t n = 0, len = 0;
    char *text = NULL;
    struct hm_buf s;
    int rc;

    if (!root)
        return;
    rc = hm_detokenize_request_parse(root, m->hp.n_vocab, &ids, &n, &e);
    json_decref(root);
    if (rc < 0) {
        hm_req_respond_error(r, &e);
        return;
    }
    rc = hm_tokenizer_decode(m->tok, ids, n, false, &text, &len);
    hm_free(ids);
    if (rc < 0) {
        hm_api_error_set(&e, hm_api_error_from_hm(rc), NULL, "cannot detokenize: %s",
                         hm_strerror(rc));
        hm_req_respond_error(r, &e);
        return;
    }
    hm_buf_init(&s, (size_t)64 << 20);
    hm_utf8_append_lossy(&s, (const unsigned char *)text, len);
    hm_free(text);
    b = json_object();
    json_object_set_new(b, "content", json_stringn(s.data ? s.data : "", s.len));
    hm_buf_release(&s);
    hm_req_respond_json(r, 200, b);
}
