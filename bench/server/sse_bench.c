/*
 * sse_bench.c - streaming latency benchmark of hybridmoe-server (or any server with the
 * OpenAI completions API): C client threads, each on its own keep-alive HTTP/1.1
 * connection, send POST /v1/completions with "stream": true back to back and time the
 * server-sent events as they arrive.
 *
 *   sse_bench -p 8080 -c 32 -d 20 -m 32            # 32 concurrent streams for 20 s
 *   sse_bench -p 8080 -c 8 -n 1250 -m 4 --no-stream # exactly 8 * 1250 plain requests
 *
 * Figures (one "RESULT key=value ..." line on stdout, parsed by bench/server/run.sh):
 * - ttft: time from just before the request is written to the arrival of the first event
 *   that carries text (the first token; the server may hold back a token that ends inside
 *   a UTF-8 character, which then shows up with the next one);
 * - itl: gaps between consecutive text events of one stream (inter-token latency as a
 *   client sees it: tokens released by the same engine step, or read by one recv(), show
 *   up as gaps near 0);
 * - tpot: time per output token of each request, (last text event - first) / (tokens - 1)
 *   with tokens = usage.completion_tokens (stream_options.include_usage);
 * - lat: end-to-end latency of each request (until "data: [DONE]" or the whole body);
 * - rps and tok_s: finished requests and usage.completion_tokens per second of wall time.
 * A request counts as an error (and adds no samples) on a non-2xx status, an error event,
 * a stream without [DONE], or a broken connection; the client then reconnects.
 *
 * DESIGN: one blocking socket per thread, no event loop: each thread has exactly one
 * request in flight, like wrk's connections, so -c is the number of concurrent requests.
 * Threads connect first, meet at a barrier, then run until the deadline (-d, a request is
 * never started after it) or for -n requests each. Samples are kept per thread (no locks
 * on the hot path) and merged after the join. Timestamps are CLOCK_MONOTONIC, taken right
 * after the recv() that completed an event. The chunked transfer coding is decoded here;
 * the JSON of the events is searched for the few keys needed, not parsed.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "hm/alloc.h"

#define RECV_TIMEOUT_S 300 /* a stalled server must not hang the benchmark forever */

struct opts {
    const char *host;
    const char *port;
    const char *path;
    const char *prompt;
    const char *model; /* NULL: no "model" field */
    unsigned conns;
    double duration_s; /* used when requests == 0 */
    unsigned long requests; /* per connection; 0 = run for duration_s */
    unsigned max_tokens;
    double temperature;
    unsigned long seed;
    bool stream;
};

/* A growable array of samples in seconds. */
struct samples {
    double *v;
    size_t n, cap;
};

/* A growable byte buffer; bytes [off, len) are unread. */
struct bytes {
    char *p;
    size_t off, len, cap;
};

struct worker {
    pthread_t tid;
    unsigned idx;
    const struct opts *o;
    pthread_barrier_t *barrier;
    const double *deadline; /* written by main before the barrier opens */
    int fd;
    struct bytes raw;  /* bytes from the socket, not yet decoded */
    struct bytes body; /* decoded body: SSE text or the JSON answer */
    double t_recv;     /* time of the last recv() */
    struct samples ttft, itl, tpot, lat;
    unsigned long ok, errors, tokens, events;
    char first_error[160];
};

/* Per-request state while a response is read. */
struct reply {
    int status;
    bool chunked, close, done, failed;
    long long content_length; /* -1: none */
    size_t body_got;          /* body bytes received (content-length framing) */
    double t0, t_first, t_last, t_end;
    unsigned long text_events;
    long long completion_tokens; /* -1: not seen */
    double *gaps;                /* ITL samples of this request, kept only if it succeeds */
    size_t n_gaps, cap_gaps;
};

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int push_sample(struct samples *s, double v)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 1024;
        double *p = hm_realloc(s->v, cap * sizeof(*p));

        if (!p)
            return -1;
        s->v = p;
        s->cap = cap;
    }
    s->v[s->n++] = v;
    return 0;
}

/* Empties the buffer; the (empty) unread part stays a C string. */
static void bytes_reset(struct bytes *b)
{
    b->off = b->len = 0;
    if (b->p)
        b->p[0] = '\0';
}

/* Makes room for `extra` more bytes (the caller keeps p[len] == '\0' after writing). */
static int bytes_reserve(struct bytes *b, size_t extra)
{
    if (b->off > 0 && b->off == b->len)
        bytes_reset(b);
    if (b->len + extra <= b->cap)
        return 0;
    if (b->off > 0) { /* compact first */
        memmove(b->p, b->p + b->off, b->len - b->off);
        b->len -= b->off;
        b->off = 0;
        b->p[b->len] = '\0';
        if (b->len + extra <= b->cap)
            return 0;
    }
    size_t cap = b->cap ? b->cap : 16384;
    while (cap < b->len + extra)
        cap *= 2;
    char *p = hm_realloc(b->p, cap);
    if (!p)
        return -1;
    b->p = p;
    b->cap = cap;
    return 0;
}

static int bytes_append(struct bytes *b, const char *s, size_t n)
{
    if (bytes_reserve(b, n + 1) < 0)
        return -1;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0'; /* keeps the unread part a C string for strstr() */
    return 0;
}

__attribute__((format(printf, 2, 3))) static void set_error(struct worker *w,
                                                            const char *fmt, ...)
{
    va_list ap;

    if (w->first_error[0])
        return;
    va_start(ap, fmt);
    vsnprintf(w->first_error, sizeof(w->first_error), fmt, ap);
    va_end(ap);
}

static void disconnect(struct worker *w)
{
    if (w->fd >= 0)
        close(w->fd);
    w->fd = -1;
    bytes_reset(&w->raw);
}

static int connect_to(struct worker *w)
{
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
    struct addrinfo *res = NULL;
    struct timeval tv = { .tv_sec = RECV_TIMEOUT_S };
    int one = 1;
    int rc = getaddrinfo(w->o->host, w->o->port, &hints, &res);

    if (rc != 0) {
        set_error(w, "getaddrinfo: %s", gai_strerror(rc));
        return -1;
    }
    for (struct addrinfo *a = res; a; a = a->ai_next) {
        int fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);

        if (fd < 0)
            continue;
        if (connect(fd, a->ai_addr, a->ai_addrlen) == 0) {
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
            setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
            w->fd = fd;
            freeaddrinfo(res);
            return 0;
        }
        close(fd);
    }
    set_error(w, "connect: %s", strerror(errno));
    freeaddrinfo(res);
    return -1;
}

/* One recv() into w->raw. Returns bytes read, 0 on EOF, -1 on error. */
static ssize_t fill(struct worker *w)
{
    ssize_t n;

    if (bytes_reserve(&w->raw, 65536 + 1) < 0)
        return -1;
    do
        n = recv(w->fd, w->raw.p + w->raw.len, w->raw.cap - w->raw.len - 1, 0);
    while (n < 0 && errno == EINTR);
    w->t_recv = now_s();
    if (n > 0) {
        w->raw.len += (size_t)n;
        w->raw.p[w->raw.len] = '\0';
    }
    return n;
}

static bool has_prefix_ci(const char *line, const char *name)
{
    return strncasecmp(line, name, strlen(name)) == 0;
}

/* Parses the status line and the headers in raw[off, end) (end points at "\r\n\r\n"). */
static int parse_head(struct reply *r, char *head, const char *end)
{
    char *line = head;
    char *eol;

    if (sscanf(head, "HTTP/1.%*d %d", &r->status) != 1)
        return -1;
    while ((eol = strstr(line, "\r\n")) != NULL && eol <= end) {
        *eol = '\0';
        if (has_prefix_ci(line, "transfer-encoding:") && strcasestr(line, "chunked"))
            r->chunked = true;
        else if (has_prefix_ci(line, "content-length:"))
            r->content_length = strtoll(line + 15, NULL, 10);
        else if (has_prefix_ci(line, "connection:") && strcasestr(line, "close"))
            r->close = true;
        line = eol + 2;
    }
    if (strncmp(head, "HTTP/1.0", 8) == 0)
        r->close = true;
    return 0;
}

static long long find_int(const char *s, const char *key)
{
    const char *p = strstr(s, key);

    if (!p)
        return -1;
    p += strlen(key);
    while (*p == ' ' || *p == ':')
        p++;
    return strtoll(p, NULL, 10);
}

/* Does the event carry text: "text":"x..." (completions) or "content":"x..." (chat)? */
static bool has_text(const char *json)
{
    static const char *const keys[] = { "\"text\":\"", "\"content\":\"" };

    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        const char *p = strstr(json, keys[i]);

        if (p && p[strlen(keys[i])] != '"')
            return true;
    }
    return false;
}

/* Handles the complete SSE events at the start of w->body. */
static int take_events(struct worker *w, struct reply *r)
{
    struct bytes *b = &w->body;
    char *ev;
    char *end;

    while ((end = strstr(ev = b->p + b->off, "\n\n")) != NULL) {
        *end = '\0';
        b->off = (size_t)(end + 2 - b->p);
        for (char *line = ev, *nl; line; line = nl ? nl + 1 : NULL) {
            nl = strchr(line, '\n');
            if (nl)
                *nl = '\0';
            if (strncmp(line, "data:", 5) == 0) {
                const char *d = line + 5 + (line[5] == ' ');

                w->events++;
                if (strcmp(d, "[DONE]") == 0) {
                    r->done = true;
                    r->t_end = w->t_recv;
                } else if (strncmp(d, "{\"error\"", 8) == 0) {
                    set_error(w, "error event: %.120s", d);
                    r->failed = true;
                } else if (strstr(d, "\"choices\":[]")) {
                    r->completion_tokens = find_int(d, "\"completion_tokens\"");
                } else if (has_text(d)) {
                    if (r->text_events == 0) {
                        r->t_first = w->t_recv;
                    } else {
                        if (r->n_gaps == r->cap_gaps) {
                            size_t cap = r->cap_gaps ? 2 * r->cap_gaps : 64;
                            double *p = hm_realloc(r->gaps, cap * sizeof(*p));

                            if (!p)
                                return -1;
                            r->gaps = p;
                            r->cap_gaps = cap;
                        }
                        r->gaps[r->n_gaps++] = w->t_recv - r->t_last;
                    }
                    r->t_last = w->t_recv;
                    r->text_events++;
                }
            }
        }
    }
    return 0;
}

/* Decodes what is in w->raw into w->body and handles it. Returns 1 when the body is
 * complete, 0 when more bytes are needed, -1 on a protocol error. */
static int decode_body(struct worker *w, struct reply *r)
{
    struct bytes *raw = &w->raw;

    if (r->chunked) {
        for (;;) {
            char *p = raw->p + raw->off;
            char *eol = strstr(p, "\r\n");
            char *after;
            unsigned long long size;

            if (!eol)
                return 0;
            errno = 0;
            size = strtoull(p, &after, 16);
            if (after == p || errno)
                return -1;
            if (size == 0) { /* last chunk; no trailers expected: "0\r\n\r\n" */
                if (raw->len - raw->off < (size_t)(eol - p) + 4)
                    return 0;
                raw->off += (size_t)(eol - p) + 4;
                return 1;
            }
            if (raw->len - raw->off < (size_t)(eol + 2 - p) + size + 2)
                return 0;
            if (bytes_append(&w->body, eol + 2, size) < 0)
                return -1;
            raw->off += (size_t)(eol + 2 - p) + size + 2;
            if (r->status == 200 && w->o->stream && take_events(w, r) < 0)
                return -1;
        }
    }
    if (r->content_length >= 0) {
        size_t want = (size_t)r->content_length - r->body_got;
        size_t have = raw->len - raw->off;
        size_t take = have < want ? have : want;

        if (bytes_append(&w->body, raw->p + raw->off, take) < 0)
            return -1;
        raw->off += take;
        r->body_got += take;
        if (r->status == 200 && w->o->stream && take_events(w, r) < 0)
            return -1;
        return r->body_got == (size_t)r->content_length ? 1 : 0;
    }
    /* close-delimited: everything until EOF (the caller handles EOF) */
    if (bytes_append(&w->body, raw->p + raw->off, raw->len - raw->off) < 0)
        return -1;
    raw->off = raw->len;
    if (r->status == 200 && w->o->stream && take_events(w, r) < 0)
        return -1;
    return 0;
}

static size_t json_escape(char *dst, size_t cap, const char *s)
{
    size_t n = 0;

    for (; *s && n + 7 < cap; s++) {
        unsigned char c = (unsigned char)*s;

        if (c == '"' || c == '\\') {
            dst[n++] = '\\';
            dst[n++] = (char)c;
        } else if (c < 0x20) {
            n += (size_t)snprintf(dst + n, cap - n, "\\u%04x", c);
        } else {
            dst[n++] = (char)c;
        }
    }
    dst[n] = '\0';
    return n;
}

/* Sends one request and reads its whole response. Returns 0 if the request succeeded,
 * 1 if it failed but the connection is usable, -1 if the connection must be reopened. */
static int one_request(struct worker *w, unsigned long seed)
{
    const struct opts *o = w->o;
    char prompt[2048], model[256] = "", body[4096], req[5120];
    struct reply r = { .content_length = -1, .completion_tokens = -1 };
    int body_len, req_len, rc = -1;
    size_t sent = 0;

    json_escape(prompt, sizeof(prompt), o->prompt);
    if (o->model) {
        char esc[200];

        json_escape(esc, sizeof(esc), o->model);
        snprintf(model, sizeof(model), "\"model\":\"%s\",", esc);
    }
    /* a path with "chat" in it gets the prompt as one user message */
    body_len = snprintf(body, sizeof(body),
                        strstr(o->path, "chat")
                            ? "{%s\"messages\":[{\"role\":\"user\",\"content\":\"%s\"}],"
                              "\"max_tokens\":%u,\"temperature\":%g,\"seed\":%lu%s}"
                            : "{%s\"prompt\":\"%s\",\"max_tokens\":%u,\"temperature\":%g,"
                              "\"seed\":%lu%s}",
                        model, prompt, o->max_tokens, o->temperature, seed,
                        o->stream ? ",\"stream\":true,\"stream_options\":{\"include_usage\":true}"
                                  : "");
    req_len = snprintf(req, sizeof(req),
                       "POST %s HTTP/1.1\r\nHost: %s:%s\r\nContent-Type: application/json\r\n"
                       "Accept: %s\r\nContent-Length: %d\r\n\r\n%s",
                       o->path, o->host, o->port,
                       o->stream ? "text/event-stream" : "application/json", body_len, body);
    if (body_len < 0 || (size_t)body_len >= sizeof(body) || req_len < 0 ||
        (size_t)req_len >= sizeof(req)) {
        set_error(w, "request too long");
        return -1;
    }
    bytes_reset(&w->body);
    r.t0 = now_s();
    while (sent < (size_t)req_len) {
        ssize_t n = send(w->fd, req + sent, (size_t)req_len - sent, MSG_NOSIGNAL);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            set_error(w, "send: %s", strerror(errno));
            goto out;
        }
        sent += (size_t)n;
    }
    /* status line and headers */
    for (;;) {
        char *head = w->raw.p ? w->raw.p + w->raw.off : NULL;
        char *end = head ? strstr(head, "\r\n\r\n") : NULL;

        if (end) {
            if (parse_head(&r, head, end + 2) < 0) {
                set_error(w, "%s", "bad status line");
                goto out;
            }
            w->raw.off = (size_t)(end + 4 - w->raw.p);
            break;
        }
        ssize_t n = fill(w);
        if (n <= 0) {
            set_error(w, "reading headers: %s", n == 0 ? "connection closed" : strerror(errno));
            goto out;
        }
    }
    /* body */
    for (;;) {
        int st = decode_body(w, &r);

        if (st < 0) {
            set_error(w, "%s", "bad body framing");
            goto out;
        }
        if (st == 1)
            break;
        ssize_t n = fill(w);
        if (n < 0) {
            set_error(w, "reading body: %s", strerror(errno));
            goto out;
        }
        if (n == 0) {
            if (r.chunked || r.content_length >= 0) {
                set_error(w, "%s", "connection closed in the body");
                goto out;
            }
            break; /* close-delimited body is complete */
        }
    }
    if (!r.t_end)
        r.t_end = w->t_recv;
    rc = r.close ? -1 : 1;
    if (r.status < 200 || r.status > 299) {
        set_error(w, "HTTP status %d: %.100s", r.status, w->body.p ? w->body.p : "");
        goto out;
    }
    if (!o->stream) {
        if (w->body.p)
            r.completion_tokens = find_int(w->body.p, "\"completion_tokens\"");
        r.t_first = r.t_end;
    } else if (r.failed || !r.done) {
        set_error(w, "%s", r.failed ? "error event" : "stream ended without [DONE]");
        goto out;
    }
    /* success: keep the samples */
    if (push_sample(&w->lat, r.t_end - r.t0) < 0)
        goto out;
    if (o->stream && r.text_events > 0) {
        if (push_sample(&w->ttft, r.t_first - r.t0) < 0)
            goto out;
        for (size_t i = 0; i < r.n_gaps; i++)
            if (push_sample(&w->itl, r.gaps[i]) < 0)
                goto out;
        if (r.completion_tokens > 1 &&
            push_sample(&w->tpot, (r.t_last - r.t_first) / (double)(r.completion_tokens - 1)) < 0)
            goto out;
    }
    if (r.completion_tokens > 0)
        w->tokens += (unsigned long)r.completion_tokens;
    w->ok++;
    rc = 0;
out:
    hm_free(r.gaps);
    return rc;
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    unsigned long seed = w->o->seed + (unsigned long)w->idx * 10000000ul;
    unsigned long done = 0;

    if (connect_to(w) < 0)
        w->errors++;
    pthread_barrier_wait(w->barrier);
    for (;;) {
        if (w->o->requests ? done >= w->o->requests : now_s() >= *w->deadline)
            break;
        if (w->fd < 0 && connect_to(w) < 0) {
            w->errors++;
            done++;
            usleep(100000);
            continue;
        }
        int rc = one_request(w, ++seed);
        done++;
        if (rc != 0)
            w->errors++;
        if (rc < 0)
            disconnect(w);
    }
    disconnect(w);
    return NULL;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

/* Concatenates field `which` of every worker and sorts it. Returns 0 or -1 (no memory). */
static int merge(struct worker *ws, unsigned n, size_t off, struct samples *out)
{
    memset(out, 0, sizeof(*out));
    for (unsigned i = 0; i < n; i++) {
        const struct samples *s = (const struct samples *)((const char *)&ws[i] + off);

        for (size_t j = 0; j < s->n; j++)
            if (push_sample(out, s->v[j]) < 0)
                return -1;
    }
    if (out->n)
        qsort(out->v, out->n, sizeof(double), cmp_double);
    return 0;
}

/* Nearest-rank percentile in milliseconds of sorted samples; NaN when empty. */
static double pct_ms(const struct samples *s, double p)
{
    size_t k;

    if (!s->n)
        return NAN;
    k = (size_t)ceil(p / 100.0 * (double)s->n);
    if (k < 1)
        k = 1;
    return s->v[k - 1] * 1e3;
}

static int parse_ulong(const char *s, unsigned long lo, unsigned long hi, unsigned long *out)
{
    char *end;
    unsigned long v;

    errno = 0;
    v = strtoul(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi || s[0] == '-')
        return -1;
    *out = v;
    return 0;
}

static void usage(FILE *f)
{
    fputs("Usage: sse_bench [options]\n"
          "  -H, --host ADDR        server address (default 127.0.0.1)\n"
          "  -p, --port N           server port (default 8080)\n"
          "  -c, --conns N          concurrent connections = requests in flight (default 1)\n"
          "  -d, --duration S       seconds to run (default 10; no request starts after)\n"
          "  -n, --requests N       requests per connection instead of a duration\n"
          "  -m, --max-tokens N     max_tokens of each request (default 32)\n"
          "  -t, --temperature X    temperature (default 0.8); seeds are distinct per request\n"
          "  -s, --seed N           first seed (default 1)\n"
          "      --prompt TEXT      the prompt (default: a line of Romeo and Juliet)\n"
          "      --model NAME       send \"model\": NAME (default: none)\n"
          "      --path PATH        endpoint (default /v1/completions; a path containing\n"
          "                         \"chat\" sends the prompt as one user message)\n"
          "      --no-stream        plain JSON answers instead of SSE (no ttft/itl figures)\n"
          "Prints a human summary on stderr and one RESULT line on stdout (times in ms).\n",
          f);
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "host", required_argument, NULL, 'H' },
        { "port", required_argument, NULL, 'p' },
        { "conns", required_argument, NULL, 'c' },
        { "duration", required_argument, NULL, 'd' },
        { "requests", required_argument, NULL, 'n' },
        { "max-tokens", required_argument, NULL, 'm' },
        { "temperature", required_argument, NULL, 't' },
        { "seed", required_argument, NULL, 's' },
        { "prompt", required_argument, NULL, 'P' },
        { "model", required_argument, NULL, 'M' },
        { "path", required_argument, NULL, 'A' },
        { "no-stream", no_argument, NULL, 'S' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    struct opts o = {
        .host = "127.0.0.1", .port = "8080", .path = "/v1/completions",
        .prompt = "ROMEO: But soft, what light through yonder window breaks? It is the east, and",
        .conns = 1, .duration_s = 10,
        .max_tokens = 32, .temperature = 0.8, .seed = 1, .stream = true,
    };
    struct worker *ws = NULL;
    pthread_barrier_t barrier;
    double deadline = 0, t_start, wall;
    unsigned long v, ok = 0, errors = 0, tokens = 0;
    struct samples ttft = { 0 }, itl = { 0 }, tpot = { 0 }, lat = { 0 };
    unsigned started = 0;
    int opt, rc = 2;
    char *end;

    while ((opt = getopt_long(argc, argv, "H:p:c:d:n:m:t:s:h", longopts, NULL)) != -1) {
        switch (opt) {
        case 'H': o.host = optarg; break;
        case 'p': o.port = optarg; break;
        case 'c':
            if (parse_ulong(optarg, 1, 4096, &v) < 0)
                goto bad;
            o.conns = (unsigned)v;
            break;
        case 'd':
            o.duration_s = strtod(optarg, &end);
            if (*end || !(o.duration_s > 0))
                goto bad;
            break;
        case 'n':
            if (parse_ulong(optarg, 1, ULONG_MAX / 2, &o.requests) < 0)
                goto bad;
            break;
        case 'm':
            if (parse_ulong(optarg, 1, 1000000, &v) < 0)
                goto bad;
            o.max_tokens = (unsigned)v;
            break;
        case 't':
            o.temperature = strtod(optarg, &end);
            if (*end || !(o.temperature >= 0))
                goto bad;
            break;
        case 's':
            if (parse_ulong(optarg, 0, ULONG_MAX / 2, &o.seed) < 0)
                goto bad;
            break;
        case 'P': o.prompt = optarg; break;
        case 'M': o.model = optarg; break;
        case 'A': o.path = optarg; break;
        case 'S': o.stream = false; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind != argc)
        goto bad;

    rc = 1;
    ws = hm_calloc(o.conns, sizeof(*ws));
    if (!ws || pthread_barrier_init(&barrier, NULL, o.conns + 1) != 0) {
        fputs("sse_bench: out of memory\n", stderr);
        hm_free(ws);
        return 1;
    }
    for (unsigned i = 0; i < o.conns; i++) {
        ws[i].idx = i;
        ws[i].o = &o;
        ws[i].barrier = &barrier;
        ws[i].deadline = &deadline;
        ws[i].fd = -1;
        if (pthread_create(&ws[i].tid, NULL, worker_main, &ws[i]) != 0) {
            /* the started threads wait at the barrier; leaving main ends them */
            fprintf(stderr, "sse_bench: cannot start thread %u\n", i);
            return 1;
        }
        started++;
    }
    t_start = now_s();
    deadline = t_start + o.duration_s;
    pthread_barrier_wait(&barrier);
    for (unsigned i = 0; i < started; i++)
        pthread_join(ws[i].tid, NULL);
    wall = now_s() - t_start;
    pthread_barrier_destroy(&barrier);

    for (unsigned i = 0; i < started; i++) {
        ok += ws[i].ok;
        errors += ws[i].errors;
        tokens += ws[i].tokens;
    }
    if (merge(ws, started, offsetof(struct worker, ttft), &ttft) < 0 ||
        merge(ws, started, offsetof(struct worker, itl), &itl) < 0 ||
        merge(ws, started, offsetof(struct worker, tpot), &tpot) < 0 ||
        merge(ws, started, offsetof(struct worker, lat), &lat) < 0) {
        fputs("sse_bench: out of memory\n", stderr);
        goto out;
    }
    for (unsigned i = 0; i < started; i++)
        if (ws[i].first_error[0]) {
            fprintf(stderr, "sse_bench: first error on connection %u: %s\n", i,
                    ws[i].first_error);
            break;
        }
    fprintf(stderr,
            "sse_bench: %u connections, %s, %.2f s: %lu ok, %lu errors, %.1f req/s, "
            "%.1f generated tokens/s\n"
            "  ttft ms  p50 %.2f  p90 %.2f  p99 %.2f\n"
            "  itl ms   p50 %.2f  p90 %.2f  p99 %.2f  (%zu gaps)\n"
            "  tpot ms  p50 %.2f  p90 %.2f  p99 %.2f\n"
            "  latency  p50 %.2f  p90 %.2f  p99 %.2f\n",
            started, o.stream ? "streaming" : "not streaming", wall, ok, errors,
            (double)ok / wall, (double)tokens / wall, pct_ms(&ttft, 50), pct_ms(&ttft, 90),
            pct_ms(&ttft, 99), pct_ms(&itl, 50), pct_ms(&itl, 90), pct_ms(&itl, 99), itl.n,
            pct_ms(&tpot, 50), pct_ms(&tpot, 90), pct_ms(&tpot, 99), pct_ms(&lat, 50),
            pct_ms(&lat, 90), pct_ms(&lat, 99));
    printf("RESULT conns=%u stream=%d duration_s=%.3f requests=%lu errors=%lu rps=%.2f "
           "tokens=%lu tok_s=%.1f text_events_per_token=%.3f "
           "ttft_p50_ms=%.3f ttft_p90_ms=%.3f ttft_p99_ms=%.3f "
           "itl_p50_ms=%.3f itl_p90_ms=%.3f itl_p99_ms=%.3f "
           "tpot_p50_ms=%.3f tpot_p90_ms=%.3f tpot_p99_ms=%.3f "
           "lat_p50_ms=%.3f lat_p90_ms=%.3f lat_p99_ms=%.3f\n",
           started, o.stream, wall, ok, errors, (double)ok / wall, tokens,
           (double)tokens / wall, tokens ? (double)(itl.n + ttft.n) / (double)tokens : 0.0,
           pct_ms(&ttft, 50), pct_ms(&ttft, 90), pct_ms(&ttft, 99), pct_ms(&itl, 50),
           pct_ms(&itl, 90), pct_ms(&itl, 99), pct_ms(&tpot, 50), pct_ms(&tpot, 90),
           pct_ms(&tpot, 99), pct_ms(&lat, 50), pct_ms(&lat, 90), pct_ms(&lat, 99));
    rc = ok > 0 ? 0 : 1;
out:
    hm_free(ttft.v);
    hm_free(itl.v);
    hm_free(tpot.v);
    hm_free(lat.v);
    for (unsigned i = 0; i < started; i++) {
        hm_free(ws[i].raw.p);
        hm_free(ws[i].body.p);
        hm_free(ws[i].ttft.v);
        hm_free(ws[i].itl.v);
        hm_free(ws[i].tpot.v);
        hm_free(ws[i].lat.v);
    }
    hm_free(ws);
    return rc;
bad:
    fprintf(stderr, "sse_bench: bad option or value (try --help)\n");
    return 2;
}
