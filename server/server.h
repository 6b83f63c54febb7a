/*
 * server.h - the state of one hybridmoe-server process, shared by http.c (MHD glue),
 * loop.c (libuv: signals, doorbell, timers, drain), api_generate.c (completions and
 * chat), api_misc.c (models, health, metrics, tokenize) and main.c.
 *
 * Threads: everything here belongs to the loop thread (the thread running uv_run),
 * except what the comments name: the model (read-only, shared with the batcher and
 * the loader thread) and struct hm_batcher's own thread-safe entry points.
 */
#ifndef HM_SERVER_SERVER_H
#define HM_SERVER_SERVER_H

#include <jansson.h>
#include <microhttpd.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "hm/buf.h"
#include "hm/engine.h"

#include "api_error.h"
#include "api_request.h"
#include "batcher.h"
#include "conf.h"
#include "metrics.h"

struct hm_model;

enum hm_route {
    HM_ROUTE_NONE = 0,
    HM_ROUTE_COMPLETIONS,
    HM_ROUTE_CHAT,
    HM_ROUTE_MODELS,
    HM_ROUTE_MODEL,       /* /v1/models/{id} */
    HM_ROUTE_HEALTH,
    HM_ROUTE_METRICS,
    HM_ROUTE_TOKENIZE,
    HM_ROUTE_DETOKENIZE,
};

enum hm_chat_template { HM_TMPL_DEFAULT = 0, HM_TMPL_CHATML, HM_TMPL_LLAMA3, HM_TMPL_LLAMA2 };

enum hm_req_state {
    HM_RS_BODY,        /* reading the request body */
    HM_RS_WAIT,        /* non-streaming generation: suspended until the job ends */
    HM_RS_STREAM,      /* streaming response queued */
    HM_RS_RESPONDED,   /* a response is queued */
    HM_RS_DISCARD,     /* an error found from the headers (err): the body is read and
                        * dropped, the error answered at the final call (keep-alive) */
};

/* Where a connection's current request is, for header_timeout / body_timeout. */
enum hm_conn_phase {
    HM_CP_HEADERS,     /* waiting for (or reading) a request line and headers */
    HM_CP_BODY,        /* headers in, reading the body */
    HM_CP_BUSY,        /* request received: waiting for the engine or sending the response;
                        * never cut by the header/body deadlines */
};

/* One open connection (MHD's socket_context), from NOTIFY_CONNECTION STARTED to CLOSED
 * (loop thread). Owned by srv->conns. */
struct hm_conn {
    struct MHD_Connection *conn;
    struct hm_conn *prev, *next;   /* srv->conns */
    enum hm_conn_phase phase;
    uint64_t deadline_ns;          /* of the header or body phase */
    bool cut;                      /* shut down for a passed deadline */
};

/* Per-choice accumulation (loop thread). */
struct hm_choice {
    struct hm_buf text;        /* non-stream: the whole text */
    json_t *logprobs;          /* non-stream: the logprobs object being built */
    enum hm_finish finish;
    bool done;
    uint32_t n_gen;
    uint64_t last_token_ns;
    size_t text_offset;        /* completions logprobs: characters before the next token */
    /* echo (completions) */
    char *echo_text;           /* stream: the prompt text, sent before the first token */
    size_t echo_len;
    bool echo_pending;         /* stream: echo_text not sent yet */
    int32_t *prompt_ids;       /* with logprobs: the prompt's tokens (owned) */
    struct hm_session_stats stats;
    int err;
    char msg[160];
};

/* One HTTP request (MHD's con_cls). refs: 1 for MHD's request, +1 while a streaming
 * response object refers to it; freed at 0. */
struct hm_req {
    struct hm_server *srv;
    struct MHD_Connection *conn;   /* NULL once MHD finished the request */
    struct hm_req *prev, *next;    /* srv->reqs */
    int refs;
    enum hm_route route;
    enum hm_req_state state;
    char method[16];
    char path[128];
    char client[64];
    struct hm_buf body;
    bool too_big;
    bool preflight;                /* OPTIONS: answered 204 at the final call */
    unsigned status;               /* of the queued response */
    uint64_t t_start_ns, t_first_ns;
    uint64_t tokens_in, tokens_out;

    /* generation */
    enum hm_api_kind kind;
    struct hm_gen_request *gr;
    struct hm_job *job;            /* our reference; NULL when none */
    bool admitted, job_done, counted_pending;
    size_t n_choices;
    struct hm_choice *choices;
    uint64_t prompt_tokens;        /* usage: each distinct prompt once */
    char id[48];
    long long created;
    bool stream;
    bool suspended;                /* MHD_suspend_connection called, not yet resumed */
    uv_poll_t *watch;              /* non-stream wait: watches the socket for a hang-up
                                    * (owned; closed by hm_req_unwatch) */
    bool finished;                 /* stream: [DONE] written */
    struct hm_buf out;             /* stream: SSE bytes not yet sent */
    size_t out_off;
    uint64_t last_write_ns;
    json_t *resp;                  /* non-stream: the finished body */
    struct hm_api_error err;       /* non-stream: error to send (kind != NONE) */
};

struct hm_server {
    const struct hm_config *cfg;
    uv_loop_t *loop;
    struct MHD_Daemon *mhd;
    unsigned port;                 /* actually bound */
    bool quiesced;               /* MHD_quiesce_daemon done, listen socket closed */

    /* model: set by the loader, read-only afterwards */
    const struct hm_model *model;
    char model_id[256];
    enum hm_chat_template tmpl;
    struct hm_api_limits limits;
    uint64_t kv_full_ctx;          /* KV bytes of one full-context sequence */
    struct hm_batcher *batcher;

    bool ready, draining, stopping;
    uint64_t drain_deadline_ns;
    bool drain_cancelled;
    int exit_code;

    struct hm_req *reqs;           /* every live request */
    struct hm_conn *conns;         /* every open connection */
    unsigned n_gen_active;         /* generation requests not yet finished */
    unsigned pending_jobs, pending_seqs, running_seqs; /* loop-side admission view */
    uint64_t next_id;
    uint64_t last_watchdog_ns;
    char last_status[160];         /* the last STATUS= sent to systemd */

    struct hm_metrics metrics;

    uv_poll_t mhd_poll;
    uv_timer_t mhd_timer;
    uv_async_t async;              /* batcher doorbell */
    uv_timer_t tick;               /* keep-alives, drain, watchdog */
    uv_signal_t sigterm, sigint;
    unsigned n_open_handles;
};

/* http.c */
int hm_http_start(struct hm_server *srv, struct hm_errmsg *em);
void hm_http_run(struct hm_server *srv);              /* MHD_run + re-arm timer */
void hm_http_quiesce(struct hm_server *srv);
void hm_http_stop(struct hm_server *srv);
void hm_req_resume(struct hm_req *r);                  /* if suspended */
/* Suspends a non-streaming generation request until its job ends, watching the socket
 * so that a client that hangs up cancels the job at once. */
void hm_req_wait(struct hm_req *r);
/* Queues a JSON response (takes ownership of body). */
int hm_req_respond_json(struct hm_req *r, unsigned status, json_t *body);
int hm_req_respond_error(struct hm_req *r, const struct hm_api_error *e);
int hm_req_respond_text(struct hm_req *r, unsigned status, const char *ctype, const char *text,
                        size_t len);
/* Starts an SSE response (200, text/event-stream); r->out is the send buffer. */
int hm_req_start_stream(struct hm_req *r);
void hm_req_unref(struct hm_req *r);
/* Closes connections whose request headers or body take longer than header_timeout /
 * body_timeout (called by the 1 s tick). Returns how many were cut. */
unsigned hm_http_cut_slow(struct hm_server *srv, uint64_t now_ns);

/* api_generate.c */
void hm_api_generate(struct hm_req *r);                /* final call of a POST */
void hm_api_on_event(struct hm_server *srv, struct hm_event *ev);
/* Ends a streaming request's output with an error frame and [DONE] (drain, timeout). */
void hm_api_request_gone(struct hm_req *r);            /* MHD completed: cancel the job */
void hm_api_keepalive(struct hm_server *srv, uint64_t now_ns);

/* api_misc.c */
void hm_api_models(struct hm_req *r);
void hm_api_health(struct hm_req *r);
void hm_api_metrics(struct hm_req *r);
void hm_api_tokenize(struct hm_req *r);
void hm_api_detokenize(struct hm_req *r);
/* Parses r->body as JSON; on failure responds 400 and returns NULL. Returns owned. */
json_t *hm_api_parse_body(struct hm_req *r);

/* chat.c */
enum hm_chat_template hm_chat_template_detect(const struct hm_model *m);
const char *hm_chat_template_name(enum hm_chat_template t);
/* Renders messages into prompt text. Returns owned text (hm_free). *special: the
 * text holds special-token markup to parse. */
int hm_chat_render(enum hm_chat_template t, const struct hm_chat_msg *msgs, size_t n,
                   char **out, size_t *len, bool *special);

/* loop.c */
int hm_loop_start(struct hm_server *srv, struct hm_errmsg *em);
void hm_loop_begin_drain(struct hm_server *srv);
void hm_loop_model_ready(struct hm_server *srv);

#endif
