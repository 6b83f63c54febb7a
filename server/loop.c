/*
 * loop.c - the libuv side of the server: the batcher doorbell (uv_async_t), signals,
 * the 1-second tick (SSE keep-alives, drain progress, systemd watchdog, slow clients past
 * header_timeout / body_timeout) and shutdown.
 *
 * DESIGN
 * The loop thread owns all handles. The batcher's notify callback is uv_async_send
 * (the only libuv call allowed from another thread); sends coalesce, so async_cb takes
 * the whole done-queue in one swap, dispatches every event to its request (resuming
 * suspended connections) and then runs MHD once.
 *
 * Shutdown (SIGTERM/SIGINT): draining = true, STOPPING=1 to systemd, the listen socket
 * is quiesced (no new connections), new requests on open connections get 503. In-flight
 * generation requests continue until they end or drain_timeout passes; then the batcher
 * cancels the rest (streams get an error event and [DONE], others a 503). When no
 * generation request is left (or 2 s after the cancel), MHD is stopped and every handle
 * closed, so uv_run returns and main exits 0. A second signal skips the wait.
 */
#include "server.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "hm/alloc.h"

#include "log.h"

#include "notify.h"

static void notify_state(const char *state)
{
    hm_notify_send(state); /* no-op outside systemd */
}

static uint64_t watchdog_usec(void)
{
    return hm_notify_watchdog_usec();
}

/* STATUS= for `systemctl status` (sd_notify(3)): what the server is doing, sent when it
 * changes (the tick runs at most once a second when idle). */
static void notify_status(struct hm_server *srv, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void notify_status(struct hm_server *srv, const char *fmt, ...)
{
    char st[7 + sizeof(srv->last_status)]; /* "STATUS=" + at most last_status's size */
    va_list ap;

    if (!hm_notify_enabled())
        return;
    memcpy(st, "STATUS=", 7);
    va_start(ap, fmt);
    vsnprintf(st + 7, sizeof(st) - 7, fmt, ap);
    va_end(ap);
    if (!strcmp(st + 7, srv->last_status))
        return;
    memcpy(srv->last_status, st + 7, sizeof(srv->last_status));
    notify_state(st);
}

static void notify_serving_status(struct hm_server *srv)
{
    struct hm_batcher_stats bs = { 0 };
    uint64_t served = 0;

    if (!hm_notify_enabled() || !srv->batcher)
        return;
    hm_batcher_get_stats(srv->batcher, &bs);
    for (size_t i = 0; i < HM_STATUS_CODES; i++)
        served += srv->metrics.requests_by_status[i];
    notify_status(srv, "serving '%s': %u running, %u waiting; %llu requests, %llu tokens "
                  "generated", srv->model_id, bs.running_seqs, bs.waiting_seqs,
                  (unsigned long long)served, (unsigned long long)bs.generated_tokens);
}

static void async_cb(uv_async_t *a)
{
    struct hm_server *srv = a->data;
    struct hm_event *ev, *next;

    if (!srv->batcher)
        return;
    ev = hm_batcher_take_events(srv->batcher);
    for (; ev; ev = next) {
        next = ev->next;
        hm_api_on_event(srv, ev);
        hm_event_free(ev);
    }
    hm_http_run(srv);
}

static void close_cb(uv_handle_t *h)
{
    struct hm_server *srv = h->data;
    srv->n_open_handles--;
}

static void stop_now(struct hm_server *srv)
{
    if (srv->stopping)
        return;
    srv->stopping = true;
    hm_log(HM_LOG_INFO, "stopping");
    if (srv->batcher)
        hm_batcher_cancel_all(srv->batcher);
    hm_http_stop(srv); /* completion callbacks cancel jobs and free requests */
    /* join the batcher before closing its doorbell: it may ring until it exits */
    hm_batcher_free(srv->batcher);
    srv->batcher = NULL;
    uv_close((uv_handle_t *)&srv->mhd_poll, close_cb);
    uv_close((uv_handle_t *)&srv->mhd_timer, close_cb);
    uv_close((uv_handle_t *)&srv->async, close_cb);
    uv_close((uv_handle_t *)&srv->tick, close_cb);
    uv_close((uv_handle_t *)&srv->sigterm, close_cb);
    uv_close((uv_handle_t *)&srv->sigint, close_cb);
}

void hm_loop_begin_drain(struct hm_server *srv)
{
    if (srv->draining) {
        stop_now(srv);
        return;
    }
    srv->draining = true;
    srv->drain_deadline_ns = hm_now_ns() + (uint64_t)srv->cfg->drain_timeout * 1000000000ull;
    notify_state("STOPPING=1");
    notify_status(srv, "draining: %u request(s) in flight, up to %u s", srv->n_gen_active,
                  srv->cfg->drain_timeout);
    hm_log(HM_LOG_INFO, "draining: %u generation request(s) in flight, up to %u s",
           srv->n_gen_active, srv->cfg->drain_timeout);
    hm_http_quiesce(srv);
    if (uv_timer_get_repeat(&srv->tick) > 100)
        uv_timer_set_repeat(&srv->tick, 100);
    uv_timer_again(&srv->tick);
}

static void signal_cb(uv_signal_t *s, int signum)
{
    struct hm_server *srv = s->data;
    hm_log(HM_LOG_INFO, "received %s", signum == SIGTERM ? "SIGTERM" : "SIGINT");
    hm_loop_begin_drain(srv);
}

/* Requests whose response MHD has not finished sending (a stream's last bytes). */
static bool generation_requests_alive(const struct hm_server *srv)
{
    for (const struct hm_req *r = srv->reqs; r; r = r->next)
        if (r->route == HM_ROUTE_COMPLETIONS || r->route == HM_ROUTE_CHAT)
            return true;
    return false;
}

static void tick_cb(uv_timer_t *t)
{
    struct hm_server *srv = t->data;
    uint64_t now = hm_now_ns(), wd = watchdog_usec();

    if (srv->stopping)
        return;
    hm_api_keepalive(srv, now);
    if (wd && now - srv->last_watchdog_ns >= wd * 1000 / 2) {
        /* progress: the batcher loops while it has work; an idle batcher is healthy */
        struct hm_batcher_stats bs = { 0 };
        bool alive = true;
        if (srv->batcher) {
            hm_batcher_get_stats(srv->batcher, &bs);
            alive = (bs.running_seqs == 0 && bs.waiting_seqs == 0) ||
                    now - hm_batcher_heartbeat_ns(srv->batcher) < wd * 1000;
        }
        if (alive) {
            notify_state("WATCHDOG=1");
            srv->last_watchdog_ns = now;
        }
    }
    if (!srv->draining && srv->ready)
        notify_serving_status(srv);
    if (srv->draining) {
        if (srv->n_gen_active == 0 && !generation_requests_alive(srv)) {
            stop_now(srv);
            return;
        }
        if (now >= srv->drain_deadline_ns) {
            if (!srv->drain_cancelled) {
                hm_log(HM_LOG_WARN, "drain timeout: cancelling %u request(s)",
                       srv->n_gen_active);
                srv->drain_cancelled = true;
                if (srv->batcher)
                    hm_batcher_cancel_all(srv->batcher);
            } else if (now >= srv->drain_deadline_ns + 2000000000ull) {
                stop_now(srv);
                return;
            }
        }
    }
    hm_http_cut_slow(srv, now); /* header_timeout / body_timeout; MHD closes them now */
    hm_http_run(srv);
}

int hm_loop_start(struct hm_server *srv, struct hm_errmsg *em)
{
    int rc;

    rc = uv_async_init(srv->loop, &srv->async, async_cb);
    if (rc)
        goto fail;
    srv->async.data = srv;
    srv->n_open_handles++;
    rc = uv_timer_init(srv->loop, &srv->tick);
    if (rc)
        goto fail;
    srv->tick.data = srv;
    srv->n_open_handles++;
    {
        /* the tick pings the watchdog: at least twice per half interval */
        uint64_t wd_ms = watchdog_usec() / 1000, every = 1000;
        if (wd_ms && wd_ms / 4 < every)
            every = wd_ms / 4 ? wd_ms / 4 : 1;
        rc = uv_timer_start(&srv->tick, tick_cb, every, every);
    }
    if (rc)
        goto fail;
    rc = uv_signal_init(srv->loop, &srv->sigterm);
    if (rc)
        goto fail;
    srv->sigterm.data = srv;
    srv->n_open_handles++;
    rc = uv_signal_init(srv->loop, &srv->sigint);
    if (rc)
        goto fail;
    srv->sigint.data = srv;
    srv->n_open_handles++;
    rc = uv_signal_start(&srv->sigterm, signal_cb, SIGTERM);
    if (rc == 0)
        rc = uv_signal_start(&srv->sigint, signal_cb, SIGINT);
    if (rc)
        goto fail;
    return HM_OK;
fail:
    return hm_errmsg_set(em, HM_EIO, "libuv: %s", uv_strerror(rc));
}

void hm_loop_model_ready(struct hm_server *srv)
{
    srv->ready = true;
    notify_state("READY=1");
    srv->last_watchdog_ns = hm_now_ns();
    notify_serving_status(srv);
    hm_log(HM_LOG_INFO, "ready: listening on http://%s:%u (model '%s')", srv->cfg->host,
           srv->port, srv->model_id);
}
