/*
 * http.c - libmicrohttpd glue: daemon setup, routing, request bodies, responses,
 * SSE streaming with suspend/resume.
 *
 * DESIGN
 * MHD runs in external-polling mode inside the libuv loop: a uv_poll_t watches MHD's
 * epoll fd and a uv_timer_t is re-armed from MHD_get_timeout() after every MHD_run().
 * We chose this over MHD's own epoll thread so that one thread (the loop) owns every
 * MHD connection, every request struct, the metrics and the config: request state needs
 * no locks, the only cross-thread structure is the batcher's done-queue, and
 * MHD_suspend/resume_connection are always called on the thread that runs MHD (no
 * "resume while the daemon thread is inside the reader" races). The cost is that
 * JSON parsing and response building run on the loop thread, which is cheap next to
 * inference on a 2-core machine.
 *
 * Access handler calls: the first call (no body yet) routes, checks method (405 with
 * Allow), API key (401), Content-Type (415) and Content-Length (413) and answers GET
 * routes at once; middle calls append the body (capped: past body_limit the rest is
 * discarded and 413 is answered at the final call); the final call dispatches. A
 * non-streaming generation suspends the connection until its job ends; a streaming
 * one queues a callback response whose reader suspends when it has nothing to send.
 * The loop resumes connections after handling batcher events, then calls MHD_run().
 */
#include "server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "hm/alloc.h"

#include "log.h"

struct route_row {
    const char *path;
    enum hm_route route;
    const char *method;   /* the one allowed method (GET routes also answer HEAD) */
    bool auth;            /* needs the API key (metrics: per config) */
};

/* The Allow header of a route: its method, HEAD for GET routes, and OPTIONS (answered
 * for every route, without the API key, as CORS preflights are). */
static const char *allow_of(const struct route_row *rt)
{
    if (!rt)
        return "GET, HEAD, POST, OPTIONS";
    return strcmp(rt->method, "GET") ? "POST, OPTIONS" : "GET, HEAD, OPTIONS";
}

static const struct route_row routes[] = {
    { "/v1/completions", HM_ROUTE_COMPLETIONS, "POST", true },
    { "/v1/chat/completions", HM_ROUTE_CHAT, "POST", true },
    { "/v1/models", HM_ROUTE_MODELS, "GET", true },
    { "/health", HM_ROUTE_HEALTH, "GET", false },
    { "/metrics", HM_ROUTE_METRICS, "GET", true },
    { "/tokenize", HM_ROUTE_TOKENIZE, "POST", true },
    { "/detokenize", HM_ROUTE_DETOKENIZE, "POST", true },
    { NULL, HM_ROUTE_NONE, NULL, false },
};

static const struct route_row *find_route(const char *url)
{
    static const struct route_row model_row = { "/v1/models/", HM_ROUTE_MODEL, "GET", true };

    for (const struct route_row *r = routes; r->path; r++)
        if (!strcmp(url, r->path))
            return r;
    if (!strncmp(url, "/v1/models/", 11) && url[11])
        return &model_row;
    return NULL;
}

/* ---- request lifetime --------------------------------------------------------- */

static void req_unwatch(struct hm_req *r);

/* The client's address as text ("-" when unknown) into buf[cap]. */
static void client_address(struct MHD_Connection *conn, char *buf, size_t cap)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);

    snprintf(buf, cap, "-");
    if (ci && ci->client_addr) {
        const struct sockaddr *sa = ci->client_addr;
        if (sa->sa_family == AF_INET)
            inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, buf,
                      (socklen_t)cap);
        else if (sa->sa_family == AF_INET6)
            inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, buf,
                      (socklen_t)cap);
    }
}

static struct hm_req *req_new(struct hm_server *srv, struct MHD_Connection *conn,
                              const char *method, const char *url)
{
    struct hm_req *r = hm_calloc(1, sizeof(*r));

    if (!r)
        return NULL;
    r->srv = srv;
    r->conn = conn;
    r->refs = 1;
    r->t_start_ns = hm_now_ns();
    snprintf(r->method, sizeof(r->method), "%s", method);
    /* routing path: runs of '/' collapsed and a trailing '/' dropped, so "//v1/models/"
     * and "/v1/chat/completions/" (hand-written base URLs) find their routes */
    {
        size_t n = 0;
        for (const char *u = url; *u && n + 1 < sizeof(r->path); u++)
            if (!(*u == '/' && n && r->path[n - 1] == '/'))
                r->path[n++] = *u;
        if (n > 1 && r->path[n - 1] == '/')
            n--;
        r->path[n] = '\0';
    }
    client_address(conn, r->client, sizeof(r->client));
    hm_buf_init(&r->body, srv->cfg->body_limit);
    hm_buf_init(&r->out, (size_t)64 << 20);
    r->next = srv->reqs;
    if (srv->reqs)
        srv->reqs->prev = r;
    srv->reqs = r;
    return r;
}

static void req_free(struct hm_req *r)
{
    struct hm_server *srv = r->srv;

    if (r->prev)
        r->prev->next = r->next;
    else
        srv->reqs = r->next;
    if (r->next)
        r->next->prev = r->prev;
    req_unwatch(r);
    hm_buf_release(&r->body);
    hm_buf_release(&r->out);
    for (size_t i = 0; i < r->n_choices; i++) {
        hm_buf_release(&r->choices[i].text);
        json_decref(r->choices[i].logprobs);
        hm_free(r->choices[i].echo_text);
        hm_free(r->choices[i].prompt_ids);
    }
    hm_free(r->choices);
    json_decref(r->resp);
    hm_gen_request_free(r->gr);
    if (r->job) {
        r->job->cookie = NULL;
        hm_job_unref(r->job);
    }
    hm_free(r);
}

void hm_req_unref(struct hm_req *r)
{
    if (r && --r->refs == 0)
        req_free(r);
}

/* ---- hang-up watch of suspended non-streaming requests ------------------------------
 * MHD does not watch a suspended connection, so a client that closes while its
 * non-streaming request runs would go unnoticed until the response is written. A
 * uv_poll_t on the socket (UV_DISCONNECT = EPOLLRDHUP, plus readable for EOF/RST)
 * notices at once; the job is cancelled and the batcher frees its KV within a step.
 * The watch is stopped before the connection is resumed (MHD may then close the fd). */

static void watch_close_cb(uv_handle_t *h)
{
    hm_free(h);
}

static void req_unwatch(struct hm_req *r)
{
    if (!r->watch)
        return;
    uv_poll_stop(r->watch);
    r->watch->data = NULL;
    uv_close((uv_handle_t *)r->watch, watch_close_cb);
    r->watch = NULL;
}

static void watch_cb(uv_poll_t *w, int status, int events)
{
    struct hm_req *r = w->data;
    bool gone = status < 0 || (events & UV_DISCONNECT);
    uv_os_fd_t fd;
    char c;

    if (!r)
        return;
    if (!gone && uv_fileno((uv_handle_t *)w, &fd) == 0) {
        ssize_t n = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
        gone = n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
    }
    /* pipelined bytes (not a hang-up): stop watching, the 1 s tick still checks */
    req_unwatch(r);
    if (gone && r->job && !r->job_done && !atomic_load(&r->job->cancel)) {
        hm_log(HM_LOG_DEBUG, "%s %s: client closed the connection; cancelling", r->method,
               r->path);
        hm_job_cancel(r->job);
        r->srv->metrics.requests_cancelled++;
    }
}

void hm_req_wait(struct hm_req *r)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_CONNECTION_FD);

    r->state = HM_RS_WAIT;
    r->suspended = true;
    MHD_suspend_connection(r->conn);
    if (!ci || r->watch)
        return;
    r->watch = hm_malloc(sizeof(*r->watch));
    if (!r->watch)
        return; /* the 1 s tick still checks */
    if (uv_poll_init_socket(r->srv->loop, r->watch, ci->connect_fd) < 0) {
        hm_free(r->watch);
        r->watch = NULL;
        return;
    }
    r->watch->data = r;
    if (uv_poll_start(r->watch, UV_READABLE | UV_DISCONNECT, watch_cb) < 0)
        req_unwatch(r);
}

void hm_req_resume(struct hm_req *r)
{
    req_unwatch(r);
    if (r->suspended && r->conn) {
        r->suspended = false;
        MHD_resume_connection(r->conn);
    }
}

/* ---- responses ----------------------------------------------------------------- */

static void add_common_headers(struct hm_req *r, struct MHD_Response *resp, unsigned status)
{
    if (status == 503 || status == 429) {
        MHD_add_response_header(resp, "Retry-After", "1");
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
    }
    if (status == 401)
        MHD_add_response_header(resp, "WWW-Authenticate", "Bearer");
    if (status == 405 || r->preflight)
        MHD_add_response_header(resp, "Allow", allow_of(find_route(r->path)));
    if (r->srv->cfg->cors_origin && r->srv->cfg->cors_origin[0]) {
        MHD_add_response_header(resp, "Access-Control-Allow-Origin", r->srv->cfg->cors_origin);
        if (strcmp(r->srv->cfg->cors_origin, "*"))
            MHD_add_response_header(resp, "Vary", "Origin");
        if (r->preflight) {
            MHD_add_response_header(resp, "Access-Control-Allow-Methods",
                                    allow_of(find_route(r->path)));
            MHD_add_response_header(resp, "Access-Control-Allow-Headers",
                                    "Authorization, Content-Type");
            MHD_add_response_header(resp, "Access-Control-Max-Age", "86400");
        }
    }
    if (r->srv->draining)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
}

static int queue(struct hm_req *r, unsigned status, struct MHD_Response *resp)
{
    enum MHD_Result ok;

    if (!resp)
        return HM_ENOMEM;
    add_common_headers(r, resp, status);
    ok = MHD_queue_response(r->conn, status, resp);
    MHD_destroy_response(resp);
    if (ok != MHD_YES)
        return HM_EIO;
    r->status = status;
    if (r->state != HM_RS_STREAM)
        r->state = HM_RS_RESPONDED;
    return HM_OK;
}

int hm_req_respond_text(struct hm_req *r, unsigned status, const char *ctype, const char *text,
                        size_t len)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, (void *)text, MHD_RESPMEM_MUST_COPY);

    if (resp)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    return queue(r, status, resp);
}

int hm_req_respond_json(struct hm_req *r, unsigned status, json_t *body)
{
    char *s = body ? json_dumps(body, JSON_COMPACT) : NULL;
    int rc;

    json_decref(body);
    if (!s) {
        static const char oom[] = "{\"error\":{\"message\":\"out of memory\",\"type\":"
                                  "\"server_error\",\"param\":null,\"code\":\"internal_error\"}}";
        return hm_req_respond_text(r, 500, "application/json", oom, sizeof(oom) - 1);
    }
    rc = hm_req_respond_text(r, status, "application/json", s, strlen(s));
    {
        /* json_dumps() allocates with jansson's allocator (tests may replace it) */
        json_malloc_t jm;
        json_free_t jf;
        json_get_alloc_funcs(&jm, &jf);
        jf(s);
    }
    return rc;
}

int hm_req_respond_error(struct hm_req *r, const struct hm_api_error *e)
{
    hm_log(HM_LOG_DEBUG, "%s %s: %u %s", r->method, r->path, hm_api_error_status(e->kind),
           e->message);
    return hm_req_respond_json(r, hm_api_error_status(e->kind), hm_api_error_json(e));
}

static ssize_t sse_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    struct hm_req *r = cls;
    size_t avail = r->out.len - r->out_off;

    (void)pos;
    if (avail) {
        size_t n = avail < max ? avail : max;
        memcpy(buf, r->out.data + r->out_off, n);
        r->out_off += n;
        if (r->out_off == r->out.len) {
            hm_buf_reset(&r->out);
            r->out_off = 0;
        }
        r->last_write_ns = hm_now_ns();
        return (ssize_t)n;
    }
    if (r->finished || !r->conn)
        return MHD_CONTENT_READER_END_OF_STREAM;
    r->suspended = true;
    MHD_suspend_connection(r->conn);
    return 0;
}

static void sse_free(void *cls)
{
    hm_req_unref(cls);
}

int hm_req_start_stream(struct hm_req *r)
{
    struct MHD_Response *resp =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024, sse_reader, r, sse_free);

    if (!resp)
        return HM_ENOMEM;
    r->refs++;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    MHD_add_response_header(resp, "X-Accel-Buffering", "no");
    r->state = HM_RS_STREAM;
    r->last_write_ns = hm_now_ns();
    return queue(r, 200, resp);
}

/* ---- header and body deadlines (slow clients) ---------------------------------------
 * MHD's connection timeout is an inactivity timeout: a client sending a byte every few
 * seconds never trips it, and the access handler is not called before the headers are
 * complete. So every connection (NOTIFY_CONNECTION) records the phase of its current
 * request and that phase's deadline:
 *   headers  header_timeout from the accept; on a kept-alive connection from the end of
 *            the previous request, plus idle_timeout (MHD cannot tell us when the next
 *            request's first byte arrives, and its idle timeout governs the wait for it);
 *   body     body_timeout from the end of the headers (the handler's first call);
 *   busy     the request is complete: waiting for the engine or sending a response,
 *            never cut here (request_timeout and the idle timeout apply).
 * The 1 s tick shuts down the socket of a connection past its deadline; MHD then reads
 * EOF and closes the connection at its next run (the fd itself stays MHD's). */

static struct hm_conn *conn_of(struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);

    return ci ? ci->socket_context : NULL;
}

/* Enters phase ph; the deadline is seconds from now (headers and body phases). */
static void conn_enter(struct MHD_Connection *conn, enum hm_conn_phase ph, uint64_t seconds)
{
    struct hm_conn *hc = conn_of(conn);

    if (!hc)
        return;
    hc->phase = ph;
    hc->deadline_ns = hm_now_ns() + seconds * 1000000000ull;
}

unsigned hm_http_cut_slow(struct hm_server *srv, uint64_t now_ns)
{
    unsigned n = 0;

    for (struct hm_conn *hc = srv->conns; hc; hc = hc->next) {
        const union MHD_ConnectionInfo *ci;
        char client[64];

        if (hc->cut || hc->phase == HM_CP_BUSY || now_ns < hc->deadline_ns)
            continue;
        ci = MHD_get_connection_info(hc->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        if (!ci)
            continue;
        hc->cut = true;
        client_address(hc->conn, client, sizeof(client));
        hm_log(HM_LOG_INFO, "%s: request %s not received within %u s; closing the connection",
               client, hc->phase == HM_CP_HEADERS ? "headers" : "body",
               hc->phase == HM_CP_HEADERS ? srv->cfg->header_timeout : srv->cfg->body_timeout);
        shutdown(ci->connect_fd, SHUT_RDWR);
        srv->metrics.slow_clients_cut++;
        n++;
    }
    return n;
}

/* ---- the access handler --------------------------------------------------------- */

static bool auth_ok(struct hm_req *r, const struct route_row *rt)
{
    const struct hm_config *c = r->srv->cfg;
    const char *h;
    size_t klen;

    if (!c->api_key[0] || !rt->auth)
        return true;
    if (rt->route == HM_ROUTE_METRICS && !c->metrics_auth)
        return true;
    h = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!h || strncasecmp(h, "Bearer ", 7))
        return false;
    h += 7;
    while (*h == ' ')
        h++;
    klen = strlen(c->api_key);
    if (strlen(h) != klen)
        return false;
    /* constant time over the key length */
    unsigned char diff = 0;
    for (size_t i = 0; i < klen; i++)
        diff |= (unsigned char)(h[i] ^ c->api_key[i]);
    return diff == 0;
}

static bool json_content_type(struct hm_req *r)
{
    const char *ct =
        MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
    size_t n = strlen("application/json");

    if (!ct)
        return false;
    while (*ct == ' ')
        ct++;
    return !strncasecmp(ct, "application/json", n) &&
           (ct[n] == '\0' || ct[n] == ';' || ct[n] == ' ');
}

static int respond_kind(struct hm_req *r, enum hm_aerr kind, const char *msg, const char *arg)
{
    struct hm_api_error e;
    if (arg)
        hm_api_error_set(&e, kind, NULL, "%s '%s'", msg, arg);
    else
        hm_api_error_set(&e, kind, NULL, "%s", msg);
    return hm_req_respond_error(r, &e);
}

/* An error found from the headers alone. Answered at once, MHD closes the connection
 * (the body, if any, is never read); so when the body is small and of known length
 * (or absent) it is read and dropped instead, and the error answered at the final
 * call, which keeps the connection alive for clients that reuse it (wrk, SDKs). */
static void early_error(struct hm_req *r, enum hm_aerr kind, const char *msg, const char *arg)
{
    const char *te =
        MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING);
    const char *cl =
        MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);

    if (te || (cl && strtoull(cl, NULL, 10) > r->srv->cfg->body_limit)) {
        respond_kind(r, kind, msg, arg);
        return;
    }
    if (arg)
        hm_api_error_set(&r->err, kind, NULL, "%s '%s'", msg, arg);
    else
        hm_api_error_set(&r->err, kind, NULL, "%s", msg);
    r->state = HM_RS_DISCARD;
}

static void first_call(struct hm_req *r)
{
    struct hm_server *srv = r->srv;
    const struct route_row *rt = find_route(r->path);
    const char *cl;

    if (!rt) {
        early_error(r, HM_AERR_NOT_FOUND, "unknown route", r->path);
        return;
    }
    r->route = rt->route;
    if (!strcmp(r->method, "OPTIONS")) {
        /* answered at the final call (keeps the connection), before the API key check:
         * browsers send CORS preflights without credentials */
        r->preflight = true;
        r->state = HM_RS_BODY;
        return;
    }
    if (strcmp(r->method, rt->method) &&
        !(!strcmp(rt->method, "GET") && !strcmp(r->method, "HEAD"))) {
        early_error(r, HM_AERR_METHOD, "method not allowed; this route accepts", rt->method);
        return;
    }
    if (!auth_ok(r, rt)) {
        early_error(r, HM_AERR_UNAUTHORIZED,
                    "missing or invalid API key (Authorization: Bearer KEY)", NULL);
        return;
    }
    if (!strcmp(rt->method, "GET")) {
        /* answered at the final call: a response queued before the request is complete
         * makes MHD close the connection */
        r->state = HM_RS_BODY;
        return;
    }
    if (!srv->ready) {
        respond_kind(r, HM_AERR_UNAVAILABLE, "the model is still loading", NULL);
        return;
    }
    if (srv->draining) {
        respond_kind(r, HM_AERR_SHUTDOWN, "the server is shutting down", NULL);
        return;
    }
    if (!json_content_type(r)) {
        early_error(r, HM_AERR_MEDIA_TYPE, "Content-Type must be application/json", NULL);
        return;
    }
    cl = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl) {
        char *end;
        unsigned long long n = strtoull(cl, &end, 10);
        if (n > srv->cfg->body_limit) {
            struct hm_api_error e;
            hm_api_error_set(&e, HM_AERR_TOO_LARGE, NULL,
                             "request body of %llu bytes exceeds body_limit (%llu bytes)", n,
                             (unsigned long long)srv->cfg->body_limit);
            hm_req_respond_error(r, &e);
            return;
        }
    }
    r->state = HM_RS_BODY;
}

static void final_call(struct hm_req *r)
{
    if (r->preflight) {
        queue(r, 204, MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT));
        return;
    }
    if (r->too_big) {
        struct hm_api_error e;
        hm_api_error_set(&e, HM_AERR_TOO_LARGE, NULL, "request body exceeds body_limit (%llu "
                         "bytes)", (unsigned long long)r->srv->cfg->body_limit);
        hm_req_respond_error(r, &e);
        return;
    }
    if (r->route != HM_ROUTE_HEALTH && r->route != HM_ROUTE_METRICS && !r->srv->ready) {
        respond_kind(r, HM_AERR_UNAVAILABLE, "the model is still loading", NULL);
        return;
    }
    switch (r->route) {
    case HM_ROUTE_HEALTH:
        hm_api_health(r);
        break;
    case HM_ROUTE_METRICS:
        hm_api_metrics(r);
        break;
    case HM_ROUTE_MODELS:
    case HM_ROUTE_MODEL:
        hm_api_models(r);
        break;
    case HM_ROUTE_COMPLETIONS:
    case HM_ROUTE_CHAT:
        hm_api_generate(r);
        break;
    case HM_ROUTE_TOKENIZE:
        hm_api_tokenize(r);
        break;
    case HM_ROUTE_DETOKENIZE:
        hm_api_detokenize(r);
        break;
    default:
        respond_kind(r, HM_AERR_INTERNAL, "unexpected route", NULL);
        break;
    }
}

static enum MHD_Result access_cb(void *cls, struct MHD_Connection *conn, const char *url,
                                 const char *method, const char *version,
                                 const char *upload_data, size_t *upload_data_size,
                                 void **con_cls)
{
    struct hm_server *srv = cls;
    struct hm_req *r = *con_cls;

    (void)version;
    if (!r) {
        r = req_new(srv, conn, method, url);
        if (!r)
            return MHD_NO;
        *con_cls = r;
        r->state = HM_RS_RESPONDED; /* unless first_call wants the body */
        first_call(r);
        if (r->state == HM_RS_BODY || r->state == HM_RS_DISCARD)
            conn_enter(conn, HM_CP_BODY, srv->cfg->body_timeout);
        else
            conn_enter(conn, HM_CP_BUSY, 0);
        return MHD_YES;
    }
    switch (r->state) {
    case HM_RS_BODY:
        if (*upload_data_size) {
            if (!r->too_big && hm_buf_append(&r->body, upload_data, *upload_data_size) < 0)
                r->too_big = true;
            *upload_data_size = 0;
            return MHD_YES;
        }
        conn_enter(conn, HM_CP_BUSY, 0);
        r->state = HM_RS_RESPONDED;
        final_call(r);
        return MHD_YES;
    case HM_RS_WAIT:
        /* resumed: the job ended */
        if (r->err.kind != HM_AERR_NONE) {
            hm_req_respond_error(r, &r->err);
        } else if (r->resp) {
            json_t *body = r->resp;
            r->resp = NULL;
            hm_req_respond_json(r, 200, body);
        } else {
            /* spurious wake-up: wait again */
            hm_req_wait(r);
        }
        return MHD_YES;
    case HM_RS_DISCARD:
        if (*upload_data_size) {
            *upload_data_size = 0;
            return MHD_YES;
        }
        conn_enter(conn, HM_CP_BUSY, 0);
        r->state = HM_RS_RESPONDED;
        hm_req_respond_error(r, &r->err);
        return MHD_YES;
    default:
        if (*upload_data_size)
            *upload_data_size = 0; /* discard */
        return MHD_YES;
    }
}

static void completed_cb(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    struct hm_server *srv = cls;
    struct hm_req *r = *con_cls;
    struct hm_access a;

    /* a kept-alive connection now waits for its next request (see "deadlines") */
    if (conn)
        conn_enter(conn, HM_CP_HEADERS,
                   (uint64_t)srv->cfg->header_timeout + srv->cfg->idle_timeout);
    if (!r)
        return;
    *con_cls = NULL;
    if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK && r->job && !r->job_done)
        srv->metrics.requests_cancelled++;
    hm_api_request_gone(r);
    req_unwatch(r);
    r->conn = NULL;
    r->suspended = false;
    if (!r->status)
        r->status = 499; /* nginx's "client closed request" */
    hm_metrics_count_status(&srv->metrics, r->status);
    a.method = r->method;
    a.path = r->path;
    a.status = r->status;
    a.tokens_in = r->tokens_in;
    a.tokens_out = r->tokens_out;
    a.latency_s = (double)(hm_now_ns() - r->t_start_ns) * 1e-9;
    a.ttft_s = r->t_first_ns ? (double)(r->t_first_ns - r->t_start_ns) * 1e-9 : -1;
    a.client = r->client;
    hm_log_access(&a);
    hm_req_unref(r);
}

static void connection_cb(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe)
{
    struct hm_server *srv = cls;
    struct hm_conn *hc = *socket_context;

    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        srv->metrics.connections_open++;
        /* without memory the connection is only left untracked (no deadlines) */
        hc = hm_calloc(1, sizeof(*hc));
        if (!hc)
            return;
        hc->conn = conn;
        hc->phase = HM_CP_HEADERS;
        hc->deadline_ns = hm_now_ns() + (uint64_t)srv->cfg->header_timeout * 1000000000ull;
        hc->next = srv->conns;
        if (srv->conns)
            srv->conns->prev = hc;
        srv->conns = hc;
        *socket_context = hc;
        return;
    }
    if (srv->metrics.connections_open)
        srv->metrics.connections_open--;
    if (!hc)
        return;
    *socket_context = NULL;
    if (hc->prev)
        hc->prev->next = hc->next;
    else
        srv->conns = hc->next;
    if (hc->next)
        hc->next->prev = hc->prev;
    hm_free(hc);
}

static void mhd_logger(void *cls, const char *fmt, va_list ap)
{
    char msg[512];
    size_t n;

    (void)cls;
    /* libmicrohttpd's own format strings */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
    vsnprintf(msg, sizeof(msg), fmt, ap);
#pragma GCC diagnostic pop
    n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
    hm_log(HM_LOG_DEBUG, "http: %s", msg);
}

/* ---- the daemon inside the loop --------------------------------------------------- */

static void mhd_timer_cb(uv_timer_t *t)
{
    hm_http_run(t->data);
}

static void mhd_poll_cb(uv_poll_t *p, int status, int events)
{
    (void)status;
    (void)events;
    hm_http_run(p->data);
}

void hm_http_run(struct hm_server *srv)
{
    MHD_UNSIGNED_LONG_LONG ms;

    if (!srv->mhd)
        return;
    MHD_run(srv->mhd);
    if (MHD_get_timeout(srv->mhd, &ms) == MHD_YES)
        uv_timer_start(&srv->mhd_timer, mhd_timer_cb, ms, 0);
    else
        uv_timer_start(&srv->mhd_timer, mhd_timer_cb, 1000, 0);
}

int hm_http_start(struct hm_server *srv, struct hm_errmsg *em)
{
    const struct hm_config *c = srv->cfg;
    struct sockaddr_storage ss;
    socklen_t sl;
    unsigned flags = MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    const union MHD_DaemonInfo *di;
    int rc;

    memset(&ss, 0, sizeof(ss));
    if (inet_pton(AF_INET, c->host, &((struct sockaddr_in *)&ss)->sin_addr) == 1) {
        struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
        sin->sin_family = AF_INET;
        sin->sin_port = htons((uint16_t)c->port);
        sl = sizeof(*sin);
    } else if (inet_pton(AF_INET6, c->host, &((struct sockaddr_in6 *)&ss)->sin6_addr) == 1) {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons((uint16_t)c->port);
        sl = sizeof(*sin6);
        flags |= MHD_USE_IPv6;
    } else {
        return hm_errmsg_set(em, HM_EINVAL, "option 'host': '%s' is not a numeric IPv4 or IPv6 "
                             "address", c->host);
    }
    (void)sl;
    srv->mhd = MHD_start_daemon(
        flags, (uint16_t)c->port, NULL, NULL, access_cb, srv, MHD_OPTION_SOCK_ADDR, &ss,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)c->max_connections,
        MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)c->per_ip_connections,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)c->idle_timeout,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)c->header_limit,
        MHD_OPTION_LISTEN_BACKLOG_SIZE, 128u, MHD_OPTION_NOTIFY_COMPLETED, completed_cb, srv,
        MHD_OPTION_NOTIFY_CONNECTION, connection_cb, srv, MHD_OPTION_EXTERNAL_LOGGER,
        mhd_logger, srv, MHD_OPTION_END);
    if (!srv->mhd)
        return hm_errmsg_set(em, HM_EIO, "cannot listen on %s port %u (address in use or not "
                             "available)", c->host, c->port);
    di = MHD_get_daemon_info(srv->mhd, MHD_DAEMON_INFO_BIND_PORT);
    srv->port = di ? di->port : c->port;
    di = MHD_get_daemon_info(srv->mhd, MHD_DAEMON_INFO_EPOLL_FD);
    if (!di) {
        MHD_stop_daemon(srv->mhd);
        srv->mhd = NULL;
        return hm_errmsg_set(em, HM_EIO, "libmicrohttpd has no epoll fd");
    }
    rc = uv_poll_init(srv->loop, &srv->mhd_poll, di->epoll_fd);
    if (rc == 0)
        rc = uv_poll_start(&srv->mhd_poll, UV_READABLE, mhd_poll_cb);
    if (rc == 0)
        rc = uv_timer_init(srv->loop, &srv->mhd_timer);
    if (rc) {
        MHD_stop_daemon(srv->mhd);
        srv->mhd = NULL;
        return hm_errmsg_set(em, HM_EIO, "libuv: %s", uv_strerror(rc));
    }
    srv->mhd_poll.data = srv;
    srv->mhd_timer.data = srv;
    srv->n_open_handles += 2;
    srv->quiesced = false;
    hm_http_run(srv);
    return HM_OK;
}

void hm_http_quiesce(struct hm_server *srv)
{
    MHD_socket fd;

    if (!srv->mhd || srv->quiesced)
        return;
    srv->quiesced = true;
    /* Close the listen socket now, not at stop: while it stays open the kernel keeps
     * completing handshakes into its backlog that nobody will serve, so a load balancer
     * sending to a draining instance waits for the whole drain instead of failing over
     * at once (found by tests/integration/nginx-upstream.sh). */
    fd = MHD_quiesce_daemon(srv->mhd);
    if (fd != MHD_INVALID_SOCKET)
        close(fd);
}

void hm_http_stop(struct hm_server *srv)
{
    if (!srv->mhd)
        return;
    /* MHD must not be stopped with suspended connections */
    for (struct hm_req *r = srv->reqs; r; r = r->next) {
        r->finished = true;
        if (r->state == HM_RS_WAIT && !r->resp && r->err.kind == HM_AERR_NONE)
            hm_api_error_set(&r->err, HM_AERR_SHUTDOWN, NULL, "the server is shutting down");
        hm_req_resume(r);
    }
    MHD_run(srv->mhd);
    MHD_stop_daemon(srv->mhd);
    srv->mhd = NULL;
}
