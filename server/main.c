/*
 * main.c - hybridmoe-server: options, model load (on a loader thread while /health
 * answers 503 "loading"), warm-up, the batcher, the HTTP loop, and exit codes
 * (0 after a clean shutdown, 78 = EX_CONFIG for a bad option or model, 1 otherwise).
 * The only file that calls exit().
 */
#include <config.h> /* PACKAGE_VERSION (the build's autoconf header) */

#include <cblas.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "hm/alloc.h"
#include "hm/engine.h"
#include "hm/model.h"
#include "hm/pool.h"
#include "hm/tokenizer.h"

#include "log.h"
#include "server.h"

#include "notify.h"

struct loader {
    struct hm_server *srv;
    uv_async_t done;
    uv_thread_t thread;
    struct hm_model *model;
    int rc;
    struct hm_errmsg em;
};

static void loader_main(void *arg)
{
    struct loader *l = arg;
    struct hm_engine *e = NULL;
    struct hm_engine_opts eo = hm_engine_opts_default();
    struct hm_session *s = NULL;
    struct hm_session_opts so = hm_session_opts_default();
    struct hm_step_item it = { 0 };
    int32_t tok;

    l->rc = hm_model_load(l->srv->cfg->model, &l->model, &l->em);
    if (l->rc < 0)
        goto out;
    /* warm-up: one token through a throw-away engine touches the mapped weights */
    eo.n_threads = 1;
    eo.max_step_tokens = 1;
    eo.max_step_items = 1;
    tok = hm_tokenizer_bos(l->model->tok);
    if (tok < 0)
        tok = 0;
    so.max_tokens = 1;
    if (hm_engine_new(l->model, &eo, &e) == HM_OK &&
        hm_session_new(l->model, &tok, 1, &so, &s, NULL) == HM_OK) {
        it.s = s;
        it.n_tokens = 1;
        hm_engine_step(e, &it, 1);
    }
    hm_session_free(s);
    hm_engine_free(e);
out:
    uv_async_send(&l->done);
}

static void loader_close_cb(uv_handle_t *h)
{
    (void)h;
}

static void banner(struct hm_server *srv)
{
    const struct hm_model *m = srv->model;
    const struct hm_hparams *hp = &m->hp;

    hm_log(HM_LOG_INFO,
           "model '%s' (%s): %u layers [%s], d=%u, vocab=%u, context=%u, experts %u (top %u, "
           "shared %u), params %.2fM total / %.2fM active, weights %.1f MiB, chat template %s",
           srv->model_id, srv->cfg->model, hp->n_layer, hp->pattern, hp->d, hp->n_vocab,
           hp->n_ctx, hp->n_expert, hp->n_expert_used, hp->n_expert_shared,
           (double)m->counts.total / 1e6, (double)m->counts.active / 1e6,
           (double)m->counts.weight_bytes / (1024.0 * 1024.0), hm_chat_template_name(srv->tmpl));
    hm_log(HM_LOG_INFO,
           "memory plan: kv_budget %.1f MiB; a full-context sequence needs %.2f MiB of KV "
           "(so at least %llu fit at once); max_running %u sequences, step_tokens %u, "
           "queue_size %u",
           (double)srv->cfg->kv_budget / (1024.0 * 1024.0),
           (double)srv->kv_full_ctx / (1024.0 * 1024.0),
           srv->kv_full_ctx ? (unsigned long long)(srv->cfg->kv_budget / srv->kv_full_ctx) : 0ull,
           srv->cfg->max_running, srv->cfg->step_tokens, srv->cfg->queue_size);
}

static void close_walk_cb(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

static void batcher_notify(void *ctx)
{
    uv_async_send(ctx);
}

static void model_id_from_path(struct hm_server *srv, const char *name, const char *path)
{
    const char *base = strrchr(path, '/');
    size_t n;

    if (name[0]) {
        snprintf(srv->model_id, sizeof(srv->model_id), "%s", name);
        return;
    }
    base = base ? base + 1 : path;
    n = strlen(base);
    if (n > 5 && !strcmp(base + n - 5, ".gguf"))
        n -= 5;
    snprintf(srv->model_id, sizeof(srv->model_id), "%.*s", (int)n, base);
}

static void loader_done_cb(uv_async_t *a)
{
    struct loader *l = a->data;
    struct hm_server *srv = l->srv;
    const struct hm_config *c = srv->cfg;
    struct hm_batcher_opts bo;
    struct hm_session_plan plan;
    struct hm_session_opts so = hm_session_opts_default();
    int32_t tok = 0;
    int rc;

    uv_thread_join(&l->thread);
    uv_close((uv_handle_t *)&l->done, loader_close_cb);
    if (l->rc < 0) {
        hm_log(HM_LOG_ERROR, "cannot load model '%s': %s", c->model,
               l->em.text[0] ? l->em.text : hm_strerror(l->rc));
        srv->exit_code = HM_EX_CONFIG;
        hm_loop_begin_drain(srv);
        hm_loop_begin_drain(srv);
        return;
    }
    srv->model = l->model; /* freed by main() */
    if (srv->draining || srv->stopping)
        return; /* a signal came while loading: do not start */
    model_id_from_path(srv, c->model_name, c->model);
    srv->tmpl = hm_chat_template_detect(srv->model);
    srv->limits.n_vocab = srv->model->hp.n_vocab;
    srv->limits.n_ctx = srv->model->hp.n_ctx;
    srv->limits.k_max = srv->model->hp.n_expert_used;
    srv->limits.max_n = c->max_n;
    srv->limits.default_max_tokens = c->default_max_tokens;
    srv->limits.max_timeout_s = c->request_timeout;
    so.max_tokens = srv->model->hp.n_ctx > 1 ? srv->model->hp.n_ctx - 1 : 1;
    if (hm_session_plan(srv->model, &tok, 1, &so, &plan, NULL) == HM_OK)
        srv->kv_full_ctx = plan.kv_bytes;
    bo.max_running = c->max_running;
    bo.step_tokens = c->step_tokens;
    bo.kv_budget = c->kv_budget;
    bo.n_threads = c->threads;
    bo.deterministic = c->deterministic;
    bo.step_delay_ms = c->debug_step_delay_ms;
    rc = hm_batcher_new(srv->model, &bo, batcher_notify, &srv->async, &srv->batcher);
    if (rc < 0) {
        hm_log(HM_LOG_ERROR, "cannot start the engine: %s", hm_strerror(rc));
        srv->exit_code = 1;
        hm_loop_begin_drain(srv);
        hm_loop_begin_drain(srv);
        return;
    }
    banner(srv);
    hm_loop_model_ready(srv);
}

int main(int argc, char **argv)
{
    struct hm_config *cfg = NULL;
    struct hm_errmsg em = { { 0 } };
    bool help, version;
    struct hm_server srv;
    struct loader l;
    uv_loop_t loop;
    int rc;

    /* before any thread: jansson's hash seed, BLAS threading (the engine has its own
     * pool, so BLAS runs single-threaded inside it) */
    json_object_seed(0);
    openblas_set_num_threads(1);
    signal(SIGPIPE, SIG_IGN);

    if (hm_config_from_args(argc, argv, &help, &version, &cfg, &em) < 0) {
        fprintf(stderr, "hybridmoe-server: %s\n", em.text);
        return HM_EX_CONFIG;
    }
    if (help) {
        hm_config_usage(stdout, "hybridmoe-server");
        hm_config_free(cfg);
        return 0;
    }
    if (version) {
        printf("hybridmoe-server %s\n", PACKAGE_VERSION);
        hm_config_free(cfg);
        return 0;
    }
    hm_log_init(cfg->log_level);
    rc = hm_notify_init();
    if (rc < 0)
        hm_log(HM_LOG_WARN, "NOTIFY_SOCKET/WATCHDOG_USEC unusable: %s", hm_strerror(rc));
    if (!cfg->model[0]) {
        hm_log(HM_LOG_ERROR, "option 'model': no model file given (use --model PATH)");
        hm_config_free(cfg);
        return HM_EX_CONFIG;
    }
    if (cfg->step_tokens < cfg->max_running) {
        hm_log(HM_LOG_ERROR, "option 'step_tokens': %u is below max_running (%u); every "
               "running sequence needs a token per step", cfg->step_tokens, cfg->max_running);
        hm_config_free(cfg);
        return HM_EX_CONFIG;
    }

    memset(&srv, 0, sizeof(srv));
    srv.cfg = cfg;
    hm_metrics_init(&srv.metrics);
    srv.next_id = (uint64_t)uv_hrtime();
    rc = uv_loop_init(&loop);
    if (rc) {
        hm_log(HM_LOG_ERROR, "libuv: %s", uv_strerror(rc));
        hm_config_free(cfg);
        return 1;
    }
    srv.loop = &loop;
    rc = hm_loop_start(&srv, &em);
    if (rc == HM_OK)
        rc = hm_http_start(&srv, &em);
    if (rc < 0) {
        hm_log(HM_LOG_ERROR, "%s", em.text);
        uv_walk(&loop, close_walk_cb, NULL);
        uv_run(&loop, UV_RUN_DEFAULT);
        uv_loop_close(&loop);
        hm_config_free(cfg);
        return rc == HM_EINVAL ? HM_EX_CONFIG : 1;
    }
    hm_log(HM_LOG_INFO, "hybridmoe-server %s listening on %s:%u, loading model '%s'",
           PACKAGE_VERSION, cfg->host, srv.port, cfg->model);

    memset(&l, 0, sizeof(l));
    l.srv = &srv;
    uv_async_init(&loop, &l.done, loader_done_cb);
    l.done.data = &l;
    if (uv_thread_create(&l.thread, loader_main, &l)) {
        hm_log(HM_LOG_ERROR, "cannot start the loader thread");
        return 1;
    }

    uv_run(&loop, UV_RUN_DEFAULT);
    rc = uv_loop_close(&loop);
    if (rc)
        hm_log(HM_LOG_WARN, "event loop closed with open handles: %s", uv_strerror(rc));
    hm_model_free((struct hm_model *)srv.model);
    hm_log(HM_LOG_INFO, "exit %d", srv.exit_code);
    hm_config_free(cfg);
    return srv.exit_code;
}
