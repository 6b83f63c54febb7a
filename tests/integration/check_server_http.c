/*
 * check_server_http.c - integration tests: start the real hybridmoe-server on
 * 127.0.0.1 (port 0: the server picks a free port and logs it) with the tiny model and
 * talk HTTP/1.1 to it over plain sockets, so status lines, headers and SSE framing can
 * be checked byte by byte.
 *
 * Each TCase starts its own server in an unchecked fixture (the server runs in the
 * parent; tests run in forked children) and kills it in the teardown; the child is
 * also bound to the test's life with PR_SET_PDEATHSIG, so a crashed runner leaves no
 * server behind. Every test has a Check timeout.
 */
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../testutil.h"

/* ---- the server under test ------------------------------------------------------- */

static pid_t srv_pid;
static unsigned srv_port;
static char srv_log[256];

static const char *builddir(void)
{
    const char *b = getenv("HM_BUILDDIR");
    return b && *b ? b : HM_BUILDDIR;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
}

/* Starts the server with extra flags (NULL-terminated); waits for "ready". */
static void server_start(const char *first, ...)
{
    char bin[512], model[512];
    const char *argv[64];
    int argc = 0, fd;
    va_list ap;

    snprintf(bin, sizeof(bin), "%s/hybridmoe-server", builddir());
    snprintf(model, sizeof(model), "%s/models/tiny.gguf", builddir());
    snprintf(srv_log, sizeof(srv_log), "/tmp/hm-check-server-%d.log", (int)getpid());
    argv[argc++] = bin;
    argv[argc++] = "--model";
    argv[argc++] = model;
    argv[argc++] = "--host";
    argv[argc++] = "127.0.0.1";
    argv[argc++] = "--port";
    argv[argc++] = "0";
    argv[argc++] = "--threads";
    argv[argc++] = "1";
    argv[argc++] = "--log_level";
    argv[argc++] = "debug";
    va_start(ap, first);
    for (const char *a = first; a && argc < 62; a = va_arg(ap, const char *))
        argv[argc++] = a;
    va_end(ap);
    argv[argc] = NULL;

    fd = open(srv_log, O_CREAT | O_TRUNC | O_WRONLY, 0644);
    ck_assert_int_ge(fd, 0);
    srv_pid = fork();
    ck_assert_int_ge(srv_pid, 0);
    if (srv_pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        dup2(fd, 2);
        dup2(fd, 1);
        execv(bin, (char *const *)argv);
        _exit(127);
    }
    close(fd);
    srv_port = 0;
    for (int i = 0; i < 300 && !srv_port; i++) {
        char line[1024];
        FILE *f = fopen(srv_log, "r");
        while (f && fgets(line, sizeof(line), f)) {
            char *p = strstr(line, "ready: listening on http://127.0.0.1:");
            if (p)
                srv_port = (unsigned)strtoul(p + strlen("ready: listening on http://127.0.0.1:"),
                                             NULL, 10);
        }
        if (f)
            fclose(f);
        if (!srv_port)
            sleep_ms(20);
    }
    if (!srv_port) {
        kill(srv_pid, SIGKILL);
        waitpid(srv_pid, NULL, 0);
        ck_abort_msg("server did not become ready (log: %s)", srv_log);
    }
}

static int server_stop(void)
{
    int st = 0;

    if (srv_pid <= 0)
        return -1;
    kill(srv_pid, SIGKILL);
    waitpid(srv_pid, &st, 0);
    srv_pid = 0;
    unlink(srv_log);
    return st;
}

static void setup_default(void)
{
    server_start("--body_limit", "4096", "--max_n", "4", "--keepalive_interval", "1",
                 "--debug_step_delay_ms", "4", NULL);
}

static void setup_auth(void)
{
    server_start("--api_key", "sekrit", "--cors_origin", "https://app.example", NULL);
}

static void setup_small(void)
{
    server_start("--max_running", "1", "--queue_size", "1", "--keepalive_interval", "1",
                 "--debug_step_delay_ms", "20", NULL);
}

static void teardown(void)
{
    server_stop();
}

/* ---- a tiny HTTP/1.1 client ------------------------------------------------------- */

struct resp {
    int status;
    char *head;   /* status line + headers */
    char *body;   /* de-chunked */
    size_t body_len;
};

static void resp_free(struct resp *r)
{
    free(r->head);
    free(r->body);
    memset(r, 0, sizeof(*r));
}

static int connect_port(unsigned port)
{
    struct sockaddr_in a = { 0 };
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0)
        return -1;
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static void send_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w <= 0)
            return;
        p += w;
        n -= (size_t)w;
    }
}

/* Sends a request; extra_headers are "Name: value\r\n" lines or NULL. Returns the fd. */
static int send_request(const char *method, const char *path, const char *extra_headers,
                        const char *body)
{
    char head[2048];
    int fd = connect_port(srv_port);

    ck_assert_msg(fd >= 0, "connect: %s", strerror(errno));
    snprintf(head, sizeof(head),
             "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n%s%s%s\r\n", method,
             path, extra_headers ? extra_headers : "",
             body ? "Content-Type: application/json\r\n" : "", "");
    if (body) {
        char cl[64];
        snprintf(cl, sizeof(cl), "Content-Length: %zu\r\n\r\n", strlen(body));
        head[strlen(head) - 2] = '\0';
        send_all(fd, head, strlen(head));
        send_all(fd, cl, strlen(cl));
        send_all(fd, body, strlen(body));
    } else {
        send_all(fd, head, strlen(head));
    }
    return fd;
}

static char *read_all(int fd, size_t *len)
{
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);

    for (;;) {
        ssize_t r;
        if (n + 1024 > cap)
            buf = realloc(buf, cap *= 2);
        r = recv(fd, buf + n, cap - n - 1, 0);
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

static void parse_response(char *raw, size_t len, struct resp *out)
{
    char *sep = strstr(raw, "\r\n\r\n");

    memset(out, 0, sizeof(*out));
    ck_assert_msg(sep != NULL, "no header end in response: %.200s", raw);
    out->head = strndup(raw, (size_t)(sep - raw + 2));
    out->status = atoi(raw + 9);
    sep += 4;
    if (strcasestr(out->head, "Transfer-Encoding: chunked")) {
        char *p = sep, *end = raw + len;
        out->body = malloc(len + 1);
        out->body_len = 0;
        while (p < end) {
            char *e;
            unsigned long n = strtoul(p, &e, 16);
            ck_assert_msg(e[0] == '\r' && e[1] == '\n', "bad chunk header");
            p = e + 2;
            if (n == 0)
                break;
            ck_assert_msg(p + n + 2 <= end, "truncated chunk");
            memcpy(out->body + out->body_len, p, n);
            out->body_len += n;
            p += n;
            ck_assert_msg(p[0] == '\r' && p[1] == '\n', "chunk not followed by CRLF");
            p += 2;
        }
        out->body[out->body_len] = '\0';
    } else {
        out->body_len = (size_t)(raw + len - sep);
        out->body = strndup(sep, out->body_len);
    }
}

static void http(const char *method, const char *path, const char *headers, const char *body,
                 struct resp *out)
{
    int fd = send_request(method, path, headers, body);
    size_t len;
    char *raw = read_all(fd, &len);

    close(fd);
    parse_response(raw, len, out);
    free(raw);
}

static json_t *http_json(const char *path, const char *body, int want_status)
{
    struct resp r;
    json_error_t je;
    json_t *j;

    http(body ? "POST" : "GET", path, NULL, body, &r);
    ck_assert_msg(r.status == want_status, "%s: status %d, want %d: %s", path, r.status,
                  want_status, r.body);
    /* the model may generate a NUL byte: "\u0000" is valid JSON */
    j = json_loads(r.body, JSON_ALLOW_NUL, &je);
    ck_assert_msg(j != NULL, "%s: body is not JSON (%s): %s", path, je.text, r.body);
    resp_free(&r);
    return j;
}

static const char *header(const struct resp *r, const char *name)
{
    static char val[256];
    char pat[128];
    const char *p;

    snprintf(pat, sizeof(pat), "\r\n%s:", name);
    p = strcasestr(r->head, pat);
    if (!p)
        return NULL;
    p += strlen(pat);
    while (*p == ' ')
        p++;
    snprintf(val, sizeof(val), "%.*s", (int)strcspn(p, "\r\n"), p);
    return val;
}

static double metric(const char *name)
{
    struct resp r;
    char pat[160];
    const char *p;
    double v = -1;

    http("GET", "/metrics", NULL, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    snprintf(pat, sizeof(pat), "\n%s ", name);
    p = strstr(r.body, pat);
    if (p)
        v = strtod(p + strlen(pat), NULL);
    resp_free(&r);
    return v;
}

/* Splits an SSE body into events; checks the framing exactly: every event is
 * "data: <payload>\n\n" or a comment ": ...\n\n", the last is "data: [DONE]\n\n".
 * Returns the JSON payloads (owned array). */
static json_t *sse_events(const char *body)
{
    json_t *arr = json_array();
    const char *p = body;
    bool done = false;

    while (*p) {
        const char *end = strstr(p, "\n\n");
        ck_assert_msg(end != NULL, "unterminated SSE event: %s", p);
        ck_assert_msg(!done, "data after [DONE]");
        if (p[0] == ':') {
            p = end + 2;
            continue;
        }
        ck_assert_msg(!strncmp(p, "data: ", 6), "event does not start with 'data: ': %.40s", p);
        ck_assert_msg(memchr(p, '\n', (size_t)(end - p)) == NULL, "multi-line event");
        if (!strncmp(p + 6, "[DONE]", 6) && p + 12 == end) {
            done = true;
        } else {
            json_error_t je;
            json_t *j = json_loadb(p + 6, (size_t)(end - p - 6), JSON_ALLOW_NUL, &je);
            ck_assert_msg(j != NULL, "SSE payload not JSON: %s", je.text);
            json_array_append_new(arr, j);
        }
        p = end + 2;
    }
    ck_assert_msg(done, "stream did not end with data: [DONE]");
    return arr;
}

static const char *jstr(json_t *j, const char *path)
{
    json_t *v = json_object_get(j, path);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

static json_t *choice0(json_t *j)
{
    return json_array_get(json_object_get(j, "choices"), 0);
}

/* ---- core: endpoints ---------------------------------------------------------------- */

START_TEST(health_models)
{
    json_t *j = http_json("/health", NULL, 200);
    ck_assert_str_eq(jstr(j, "status"), "ok");
    json_decref(j);
    j = http_json("/v1/models", NULL, 200);
    ck_assert_str_eq(jstr(j, "object"), "list");
    json_t *m = json_array_get(json_object_get(j, "data"), 0);
    ck_assert_str_eq(jstr(m, "id"), "tiny");
    ck_assert_str_eq(jstr(m, "object"), "model");
    json_decref(j);
    j = http_json("/v1/models/tiny", NULL, 200);
    ck_assert_str_eq(jstr(j, "id"), "tiny");
    json_decref(j);
    /* hand-written base URLs: doubled and trailing slashes still find the route */
    j = http_json("//v1/models/", NULL, 200);
    ck_assert_str_eq(jstr(j, "object"), "list");
    json_decref(j);
    j = http_json("/v1//models/tiny/", NULL, 200);
    ck_assert_str_eq(jstr(j, "id"), "tiny");
    json_decref(j);
    j = http_json("/v1/completions/", "{\"prompt\":\"a\",\"max_tokens\":1}", 200);
    ck_assert_str_eq(jstr(j, "object"), "text_completion");
    json_decref(j);
    j = http_json("/v1/models/nope", NULL, 404);
    ck_assert_str_eq(jstr(json_object_get(j, "error"), "code"), "model_not_found");
    json_decref(j);
}
END_TEST

START_TEST(completion_shape_and_usage)
{
    json_t *j = http_json("/v1/completions",
                          "{\"model\":\"tiny\",\"prompt\":\"Hello world\",\"max_tokens\":8,"
                          "\"temperature\":0}", 200);
    json_t *c = choice0(j), *u = json_object_get(j, "usage"), *h, *t;

    ck_assert_str_eq(jstr(j, "object"), "text_completion");
    ck_assert_ptr_nonnull(strstr(jstr(j, "id"), "cmpl-"));
    ck_assert(json_is_integer(json_object_get(j, "created")));
    ck_assert_str_eq(jstr(j, "model"), "tiny");
    ck_assert_int_eq(json_integer_value(json_object_get(c, "index")), 0);
    ck_assert(json_is_string(json_object_get(c, "text")));
    ck_assert(json_is_null(json_object_get(c, "logprobs")));
    ck_assert(!strcmp(jstr(c, "finish_reason"), "length") || !strcmp(jstr(c, "finish_reason"), "stop"));
    /* usage: prompt tokens as /tokenize counts them (BOS included per the model) */
    t = http_json("/tokenize", "{\"content\":\"Hello world\"}", 200);
    ck_assert_int_eq(json_integer_value(json_object_get(u, "prompt_tokens")),
                     json_integer_value(json_object_get(t, "count")));
    json_decref(t);
    if (!strcmp(jstr(c, "finish_reason"), "length"))
        ck_assert_int_eq(json_integer_value(json_object_get(u, "completion_tokens")), 8);
    ck_assert_int_eq(json_integer_value(json_object_get(u, "total_tokens")),
                     json_integer_value(json_object_get(u, "prompt_tokens")) +
                         json_integer_value(json_object_get(u, "completion_tokens")));
    h = json_object_get(u, "hybridmoe");
    ck_assert(json_is_real(json_object_get(h, "complexity")));
    ck_assert_int_ge(json_integer_value(json_object_get(h, "window")), 1);
    ck_assert(json_real_value(json_object_get(h, "mean_experts_per_token")) >= 1.0);
    ck_assert(json_real_value(json_object_get(h, "mean_experts_per_token")) <= 2.0);
    ck_assert_int_gt(json_integer_value(json_object_get(h, "kv_bytes")), 0);
    ck_assert_int_gt(json_integer_value(json_object_get(h, "kv_bytes_baseline")), 0);
    json_decref(j);
}
END_TEST

START_TEST(chat_shape)
{
    json_t *j = http_json("/v1/chat/completions",
                          "{\"messages\":[{\"role\":\"system\",\"content\":\"Be brief.\"},"
                          "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"Hi\"}]}],"
                          "\"max_completion_tokens\":5,\"temperature\":0}", 200);
    json_t *c = choice0(j), *m = json_object_get(c, "message");

    ck_assert_str_eq(jstr(j, "object"), "chat.completion");
    ck_assert_ptr_nonnull(strstr(jstr(j, "id"), "chatcmpl-"));
    ck_assert_str_eq(jstr(m, "role"), "assistant");
    ck_assert(json_is_string(json_object_get(m, "content")));
    ck_assert_int_le(json_integer_value(json_object_get(json_object_get(j, "usage"),
                                                        "completion_tokens")), 5);
    json_decref(j);
}
END_TEST

START_TEST(tokenize_detokenize)
{
    json_t *j = http_json("/tokenize", "{\"content\":\"abc d\",\"add_special\":false}", 200);
    json_t *toks = json_object_get(j, "tokens");
    char *body = NULL, *arr = json_dumps(toks, JSON_COMPACT);
    ck_assert_int_gt(json_array_size(toks), 0);
    ck_assert_int_gt(asprintf(&body, "{\"tokens\":%s}", arr), 0);
    json_decref(j);
    j = http_json("/detokenize", body, 200);
    ck_assert_str_eq(jstr(j, "content"), "abc d");
    json_decref(j);
    free(body);
    free(arr);
}
END_TEST

START_TEST(metrics_names)
{
    struct resp r;
    static const char *const names[] = {
        "hybridmoe_running_sequences ", "hybridmoe_waiting_sequences ", "hybridmoe_kv_bytes_used ",
        "hybridmoe_kv_bytes_budget ", "hybridmoe_requests_total{status=",
        "hybridmoe_prompt_tokens_total ", "hybridmoe_generated_tokens_total ",
        "hybridmoe_time_to_first_token_seconds_bucket", "hybridmoe_inter_token_latency_seconds_bucket",
        "hybridmoe_request_latency_seconds_bucket", "hybridmoe_queue_time_seconds_bucket",
        "hybridmoe_step_duration_seconds_bucket", "hybridmoe_step_batch_size_bucket",
        "hybridmoe_experts_per_token_bucket", "hybridmoe_window_tokens_bucket",
        "hybridmoe_complexity_bucket",
    };
    json_decref(http_json("/v1/completions", "{\"prompt\":\"x\",\"max_tokens\":3}", 200));
    http("GET", "/metrics", NULL, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_ptr_nonnull(strstr(header(&r, "Content-Type"), "text/plain"));
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        ck_assert_msg(strstr(r.body, names[i]) != NULL, "metric %s missing", names[i]);
    resp_free(&r);
    ck_assert(metric("hybridmoe_generated_tokens_total") >= 1);
    ck_assert(metric("hybridmoe_running_sequences") == 0);
}
END_TEST

/* ---- streaming ----------------------------------------------------------------------- */

START_TEST(stream_chat_framing)
{
    struct resp r;
    json_t *ev, *j;
    size_t n, i;
    char *text_stream = NULL;
    size_t tlen = 0;

    http("POST", "/v1/chat/completions", NULL,
         "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"max_tokens\":6,"
         "\"temperature\":0,\"stream\":true,\"stream_options\":{\"include_usage\":true}}", &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(header(&r, "Content-Type"), "text/event-stream");
    ck_assert_str_eq(header(&r, "Cache-Control"), "no-cache");
    ck_assert_ptr_nonnull(strcasestr(r.head, "Transfer-Encoding: chunked"));
    ev = sse_events(r.body);
    n = json_array_size(ev);
    ck_assert_int_ge(n, 3);
    /* first: role chunk */
    j = json_array_get(ev, 0);
    ck_assert_str_eq(jstr(j, "object"), "chat.completion.chunk");
    ck_assert_str_eq(jstr(json_object_get(choice0(j), "delta"), "role"), "assistant");
    /* middle: content deltas, no finish_reason */
    for (i = 1; i + 2 < n; i++) {
        json_t *c = choice0(json_array_get(ev, i));
        const char *t = jstr(json_object_get(c, "delta"), "content");
        ck_assert(json_is_null(json_object_get(c, "finish_reason")));
        ck_assert_ptr_nonnull(t);
        text_stream = realloc(text_stream, tlen + strlen(t) + 1);
        memcpy(text_stream + tlen, t, strlen(t) + 1);
        tlen += strlen(t);
    }
    /* final chunk: empty delta and finish_reason */
    j = json_array_get(ev, n - 2);
    ck_assert_int_eq(json_object_size(json_object_get(choice0(j), "delta")), 0);
    ck_assert(jstr(choice0(j), "finish_reason") != NULL);
    /* usage chunk: choices [] */
    j = json_array_get(ev, n - 1);
    ck_assert_int_eq(json_array_size(json_object_get(j, "choices")), 0);
    ck_assert(json_is_integer(json_object_get(json_object_get(j, "usage"), "total_tokens")));
    json_decref(ev);
    resp_free(&r);
    /* the same request without streaming gives the same text */
    j = http_json("/v1/chat/completions",
                  "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"max_tokens\":6,"
                  "\"temperature\":0}", 200);
    ck_assert_str_eq(jstr(json_object_get(choice0(j), "message"), "content"),
                     text_stream ? text_stream : "");
    json_decref(j);
    free(text_stream);
}
END_TEST

START_TEST(stream_completion_utf8_holdback)
{
    /* bias towards the two bytes of "é" (C3 A9): the model emits them in some order;
     * every event must be valid JSON (valid UTF-8) and the streamed text must equal the
     * non-streamed one */
#define UTF8_REQ(extra) "{\"prompt\":\"x\",\"max_tokens\":24,\"temperature\":0," \
                         "\"logit_bias\":{\"195\":100,\"169\":100}" extra "}"
    char body[512];
    struct resp r;
    json_t *ev, *j;
    char text[4096] = "";

    snprintf(body, sizeof(body), "%s", UTF8_REQ(",\"stream\":true"));
    http("POST", "/v1/completions", NULL, body, &r);
    ck_assert_int_eq(r.status, 200);
    ev = sse_events(r.body);
    for (size_t i = 0; i < json_array_size(ev); i++) {
        json_t *c = choice0(json_array_get(ev, i));
        ck_assert_str_eq(jstr(json_array_get(ev, i), "object"), "text_completion");
        if (jstr(c, "text"))
            strncat(text, jstr(c, "text"), sizeof(text) - strlen(text) - 1);
    }
    json_decref(ev);
    resp_free(&r);
    snprintf(body, sizeof(body), "%s", UTF8_REQ(""));
    j = http_json("/v1/completions", body, 200);
    ck_assert_str_eq(jstr(choice0(j), "text"), text);
    json_decref(j);
}
END_TEST

/* Byte-exact check of a whole completions stream. */
START_TEST(stream_bytes_exact)
{
    struct resp r;
    json_t *j = http_json("/v1/completions",
                          "{\"prompt\":\"hello\",\"max_tokens\":4,\"temperature\":0,"
                          "\"logit_bias\":{\"97\":100,\"98\":100}}", 200);
    char expect[8192];
    const char *id;
    size_t off = 0;
    const char *full = jstr(choice0(j), "text");

    ck_assert_int_eq(strlen(full), 4); /* four one-byte tokens */
    http("POST", "/v1/completions", NULL,
         "{\"prompt\":\"hello\",\"max_tokens\":4,\"temperature\":0,\"stream\":true,"
         "\"logit_bias\":{\"97\":100,\"98\":100}}", &r);
    ck_assert_int_eq(r.status, 200);
    /* rebuild the exact expected bytes from the id and created of the first event */
    json_t *first = json_loadb(r.body + 6, strcspn(r.body + 6, "\n"), JSON_ALLOW_NUL, NULL);
    ck_assert_ptr_nonnull(first);
    id = jstr(first, "id");
    long long created = json_integer_value(json_object_get(first, "created"));
    for (int i = 0; i < 4; i++)
        off += (size_t)snprintf(expect + off, sizeof(expect) - off,
                                "data: {\"id\":\"%s\",\"object\":\"text_completion\",\"created\":%lld,"
                                "\"model\":\"tiny\",\"system_fingerprint\":\"hybridmoe\",\"choices\":"
                                "[{\"index\":0,\"text\":\"%c\",\"logprobs\":null,\"finish_reason\":null}]}"
                                "\n\n", id, created, full[i]);
    off += (size_t)snprintf(expect + off, sizeof(expect) - off,
                            "data: {\"id\":\"%s\",\"object\":\"text_completion\",\"created\":%lld,"
                            "\"model\":\"tiny\",\"system_fingerprint\":\"hybridmoe\",\"choices\":"
                            "[{\"index\":0,\"text\":\"\",\"logprobs\":null,\"finish_reason\":\"length\"}]}"
                            "\n\ndata: [DONE]\n\n", id, created);
    ck_assert_str_eq(r.body, expect);
    json_decref(first);
    json_decref(j);
    resp_free(&r);
}
END_TEST

/* ---- parameters -------------------------------------------------------------------- */

START_TEST(stop_across_tokens)
{
    /* output restricted to one-byte tokens a/b/c; the stop string spans tokens 1 and 2 */
    const char *base = "{\"prompt\":\"hello\",\"max_tokens\":20,\"temperature\":0,"
                       "\"logit_bias\":{\"97\":100,\"98\":100,\"99\":100}";
    char body[512], stop[3];
    json_t *j;
    const char *full, *hit;
    char want[64];

    snprintf(body, sizeof(body), "%s}", base);
    j = http_json("/v1/completions", body, 200);
    full = jstr(choice0(j), "text");
    ck_assert_int_eq(strlen(full), 20);
    memcpy(stop, full + 1, 2);
    stop[2] = '\0';
    hit = strstr(full, stop);
    snprintf(want, sizeof(want), "%.*s", (int)(hit - full), full);
    json_decref(j);

    for (int stream = 0; stream < 2; stream++) {
        snprintf(body, sizeof(body), "%s,\"stop\":[\"zzz\",\"%s\"]%s}", base, stop,
                 stream ? ",\"stream\":true" : "");
        if (!stream) {
            j = http_json("/v1/completions", body, 200);
            ck_assert_str_eq(jstr(choice0(j), "text"), want);
            ck_assert_str_eq(jstr(choice0(j), "finish_reason"), "stop");
            json_decref(j);
        } else {
            struct resp r;
            char got[64] = "";
            const char *fin = NULL;
            http("POST", "/v1/completions", NULL, body, &r);
            json_t *ev = sse_events(r.body);
            for (size_t i = 0; i < json_array_size(ev); i++) {
                json_t *c = choice0(json_array_get(ev, i));
                strncat(got, jstr(c, "text"), sizeof(got) - strlen(got) - 1);
                if (jstr(c, "finish_reason"))
                    fin = jstr(c, "finish_reason");
            }
            ck_assert_str_eq(got, want);
            ck_assert_str_eq(fin, "stop");
            json_decref(ev);
            resp_free(&r);
        }
    }
}
END_TEST

START_TEST(n_and_logprobs)
{
    json_t *j = http_json("/v1/completions",
                          "{\"prompt\":[\"ab\",[97,98,99]],\"n\":2,\"max_tokens\":3,"
                          "\"temperature\":0.8,\"seed\":7,\"logprobs\":3}", 200);
    json_t *ch = json_object_get(j, "choices");
    ck_assert_int_eq(json_array_size(ch), 4);
    for (size_t i = 0; i < 4; i++) {
        json_t *c = json_array_get(ch, i), *lp = json_object_get(c, "logprobs");
        ck_assert_int_eq(json_integer_value(json_object_get(c, "index")), (json_int_t)i);
        ck_assert(json_is_object(lp));
        size_t nt = json_array_size(json_object_get(lp, "tokens"));
        ck_assert_int_eq(nt, json_array_size(json_object_get(lp, "token_logprobs")));
        ck_assert_int_eq(nt, json_array_size(json_object_get(lp, "top_logprobs")));
        ck_assert_int_eq(nt, json_array_size(json_object_get(lp, "text_offset")));
        for (size_t k = 0; k < nt; k++) {
            ck_assert(json_real_value(json_array_get(json_object_get(lp, "token_logprobs"), k)) <= 0);
            /* the 3 best, plus the sampled token when it is not among them */
            ck_assert_int_le(json_object_size(json_array_get(json_object_get(lp, "top_logprobs"), k)), 4);
        }
    }
    /* seeded sampling is reproducible */
    json_t *j2 = http_json("/v1/completions",
                           "{\"prompt\":[\"ab\",[97,98,99]],\"n\":2,\"max_tokens\":3,"
                           "\"temperature\":0.8,\"seed\":7,\"logprobs\":3}", 200);
    for (size_t i = 0; i < 4; i++)
        ck_assert_str_eq(jstr(json_array_get(ch, i), "text"),
                         jstr(json_array_get(json_object_get(j2, "choices"), i), "text"));
    json_decref(j2);
    json_decref(j);

    j = http_json("/v1/chat/completions",
                  "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"max_tokens\":2,"
                  "\"logprobs\":true,\"top_logprobs\":2,\"temperature\":0}", 200);
    json_t *content = json_object_get(json_object_get(choice0(j), "logprobs"), "content");
    ck_assert_int_ge(json_array_size(content), 1);
    json_t *e0 = json_array_get(content, 0);
    ck_assert(json_is_string(json_object_get(e0, "token")));
    ck_assert(json_is_real(json_object_get(e0, "logprob")));
    ck_assert(json_is_array(json_object_get(e0, "bytes")));
    ck_assert_int_eq(json_array_size(json_object_get(e0, "top_logprobs")), 2);
    json_decref(j);
}
END_TEST

START_TEST(sampling_params_accepted)
{
    json_t *j = http_json("/v1/completions",
                          "{\"prompt\":\"abc\",\"max_tokens\":4,\"temperature\":1.2,\"top_p\":0.9,"
                          "\"top_k\":40,\"min_p\":0.05,\"presence_penalty\":0.5,"
                          "\"frequency_penalty\":0.5,\"repetition_penalty\":1.1,\"seed\":1,"
                          "\"user\":\"u1\",\"unknown_field\":{\"x\":[1]},\"timeout_s\":30,"
                          "\"hybridmoe\":{\"complexity\":0.9,\"window\":16,\"max_experts\":1,"
                          "\"router_threshold\":1.0}}", 200);
    json_t *h = json_object_get(json_object_get(j, "usage"), "hybridmoe");
    ck_assert_int_eq(json_integer_value(json_object_get(h, "window")), 16);
    ck_assert(json_real_value(json_object_get(h, "complexity")) > 0.89);
    ck_assert(json_real_value(json_object_get(h, "complexity")) < 0.91);
    ck_assert(json_real_value(json_object_get(h, "mean_experts_per_token")) == 1.0);
    json_decref(j);
}
END_TEST

START_TEST(request_timeout)
{
    struct resp r;
    json_t *j, *ev, *last;

    /* 250 steps of >= 4 ms cannot finish in 0.2 s */
    j = http_json("/v1/completions",
                  "{\"prompt\":\"a\",\"max_tokens\":250,\"ignore_eos\":true,"
                  "\"timeout_s\":0.2}", 504);
    ck_assert_str_eq(jstr(json_object_get(j, "error"), "code"), "timeout");
    json_decref(j);
    http("POST", "/v1/completions", NULL,
         "{\"prompt\":\"a\",\"max_tokens\":250,\"ignore_eos\":true,\"timeout_s\":0.2,"
         "\"stream\":true}", &r);
    ck_assert_int_eq(r.status, 200);
    ev = sse_events(r.body); /* ends with [DONE] */
    last = json_array_get(ev, json_array_size(ev) - 1);
    ck_assert_str_eq(jstr(json_object_get(last, "error"), "code"), "timeout");
    json_decref(ev);
    resp_free(&r);
    ck_assert(metric("hybridmoe_running_sequences") == 0);
}
END_TEST

/* ---- errors --------------------------------------------------------------------------- */

struct bad_case {
    const char *method, *path, *ctype, *body;
    int status;
    const char *param;  /* NULL: param must be null; "-" = do not check */
};

static const struct bad_case bad_cases[] = {
    { "POST", "/v1/completions", "application/json", "{", 400, NULL },
    { "POST", "/v1/completions", "application/json", "[1]", 400, NULL },
    { "POST", "/v1/completions", "application/json", "{\"max_tokens\":4}", 400, "prompt" },
    { "POST", "/v1/completions", "application/json", "{\"prompt\":\"\"}", 400, "prompt" },
    { "POST", "/v1/completions", "application/json", "{\"prompt\":{}}", 400, "prompt" },
    { "POST", "/v1/completions", "application/json", "{\"prompt\":[99999]}", 400, "prompt" },
    { "POST", "/v1/completions", "application/json", "{\"prompt\":\"a\",\"temperature\":2.5}", 400, "temperature" },
    { "POST", "/v1/completions", "application/json", "{\"prompt\":\"a\",\"temperature\":\"hot\"}", 400, "temperature" },
    { "POST", "/v1/completions", "application/json", "{\"prompt\":\"a\",\"temperature\":1e400}", 400, NULL },
    { "POST", "/v1/completions", "application/json", "{\"prompt\":\"a\",\"top_p\":0}", 400, "top_p" },
    { "POST", "/v1/completions", "application/json", "{\"prompt\":\"a\",\"n\":5}", 400, "n" },
    { "POST", "/v1/completions", "application/json", "{\"prompt\":\"a\",\"n\":1.5}", 400, "n" },
    { "POST", "/v1/completions", "application/json", "{\"prompt\":\"a\",\"logprobs\":21}", 400, "logprobs" },
    { "POST", "/v1/completions", "application/json", "{\"prompt\":\"a\",\"max_tokens\":100000}", 400, "max_tokens" },
    { "POST", "/v1/completions", "application/json", "{\"prompt\":\"a\",\"max_tokens\":256}", 400, "max_tokens" },
    { "POST", "/v1/completions", "application/json", "{\"prompt\":\"a\",\"stop\":[\"a\",\"b\",\"c\",\"d\",\"e\"]}", 400, "stop" },
    { "POST", "/v1/completions", "application/json", "{\"prompt\":\"a\",\"stop\":7}", 400, "stop" },
    { "POST", "/v1/completions", "application/json", "{\"prompt\":\"a\",\"logit_bias\":{\"abc\":1}}", 400, "logit_bias" },
    { "POST", "/v1/completions", "application/json", "{\"prompt\":\"a\",\"logit_bias\":{\"1\":101}}", 400, "logit_bias" },
    { "POST", "/v1/completions", "application/json", "{\"prompt\":\"a\",\"stream\":1}", 400, "stream" },
    { "POST", "/v1/completions", "application/json", "{\"prompt\":\"a\",\"stream_options\":{\"include_usage\":\"y\"}}", 400, "stream_options.include_usage" },
    { "POST", "/v1/completions", "application/json", "{\"prompt\":\"a\",\"hybridmoe\":{\"complexity\":1.5}}", 400, "hybridmoe.complexity" },
    { "POST", "/v1/completions", "application/json", "{\"prompt\":\"a\",\"hybridmoe\":{\"window\":0}}", 400, "hybridmoe.window" },
    { "POST", "/v1/completions", "application/json", "{\"prompt\":\"a\",\"hybridmoe\":{\"max_experts\":3}}", 400, "hybridmoe.max_experts" },
    { "POST", "/v1/completions", "application/json", "{\"prompt\":\"a\",\"hybridmoe\":{\"router_threshold\":-0.1}}", 400, "hybridmoe.router_threshold" },
    { "POST", "/v1/completions", "application/json", "{\"prompt\":\"a\",\"hybridmoe\":[1]}", 400, "hybridmoe" },
    { "POST", "/v1/completions", "application/json", "{\"prompt\":\"a\",\"model\":\"gpt-4\"}", 404, "model" },
    { "POST", "/v1/chat/completions", "application/json", "{\"messages\":[]}", 400, "messages" },
    { "POST", "/v1/chat/completions", "application/json", "{\"messages\":[{\"role\":\"robot\",\"content\":\"x\"}]}", 400, "messages" },
    { "POST", "/v1/chat/completions", "application/json", "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"top_logprobs\":2}", 400, "top_logprobs" },
    { "POST", "/v1/chat/completions", "application/json", "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"logprobs\":3}", 400, "logprobs" },
    { "POST", "/v1/completions", "text/plain", "{\"prompt\":\"a\"}", 415, NULL },
    { "GET", "/v1/completions", NULL, NULL, 405, NULL },
    { "POST", "/health", "application/json", "{}", 405, NULL },
    { "GET", "/v2/nothing", NULL, NULL, 404, NULL },
    { "POST", "/tokenize", "application/json", "{\"content\":5}", 400, "content" },
    { "POST", "/detokenize", "application/json", "{\"tokens\":[-1]}", 400, "tokens" },
};

START_TEST(bad_inputs)
{
    for (size_t i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
        const struct bad_case *bc = &bad_cases[i];
        char hdr[128] = "";
        struct resp r;
        int fd;
        size_t len;
        char *raw;
        json_t *j, *e;

        if (bc->ctype && strcmp(bc->ctype, "application/json"))
            snprintf(hdr, sizeof(hdr), "Content-Type: %s\r\nContent-Length: %zu\r\n", bc->ctype,
                     strlen(bc->body));
        if (hdr[0]) {
            char req[1024];
            fd = connect_port(srv_port);
            ck_assert_int_ge(fd, 0);
            snprintf(req, sizeof(req), "%s %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n%s\r\n%s",
                     bc->method, bc->path, hdr, bc->body);
            send_all(fd, req, strlen(req));
        } else {
            fd = send_request(bc->method, bc->path, NULL, bc->body);
        }
        raw = read_all(fd, &len);
        close(fd);
        parse_response(raw, len, &r);
        free(raw);
        ck_assert_msg(r.status == bc->status, "case %zu (%s): status %d, want %d: %s", i,
                      bc->body ? bc->body : bc->path, r.status, bc->status, r.body);
        j = json_loads(r.body, 0, NULL);
        ck_assert_msg(j != NULL, "case %zu: error body not JSON", i);
        e = json_object_get(j, "error");
        ck_assert_msg(json_is_string(json_object_get(e, "message")), "case %zu: no message", i);
        ck_assert(json_is_string(json_object_get(e, "type")));
        ck_assert(json_object_get(e, "param") != NULL);
        ck_assert(json_object_get(e, "code") != NULL);
        if (!bc->param)
            ck_assert_msg(json_is_null(json_object_get(e, "param")), "case %zu: param not null",
                          i);
        else if (strcmp(bc->param, "-"))
            ck_assert_msg(jstr(e, "param") && !strcmp(jstr(e, "param"), bc->param),
                          "case %zu: param %s, want %s", i, jstr(e, "param"), bc->param);
        if (bc->status == 405)
            ck_assert_ptr_nonnull(header(&r, "Allow"));
        json_decref(j);
        resp_free(&r);
    }
    /* still serving */
    json_decref(http_json("/v1/completions", "{\"prompt\":\"a\",\"max_tokens\":2}", 200));
}
END_TEST

static void http_raw(const char *req, size_t len, struct resp *out)
{
    int fd = connect_port(srv_port);
    size_t n;
    char *raw;

    ck_assert_int_ge(fd, 0);
    send_all(fd, req, len);
    raw = read_all(fd, &n);
    close(fd);
    parse_response(raw, n, out);
    free(raw);
}

START_TEST(body_limit_413)
{
    struct resp r;
    char *req = malloc(20000);
    size_t off;

    /* declared too big: refused from the headers alone */
    off = (size_t)snprintf(req, 20000, "POST /v1/completions HTTP/1.1\r\nHost: x\r\n"
                           "Connection: close\r\nContent-Type: application/json\r\n"
                           "Content-Length: 9999\r\n\r\n");
    http_raw(req, off, &r);
    ck_assert_int_eq(r.status, 413);
    ck_assert_ptr_nonnull(strstr(r.body, "request_too_large"));
    resp_free(&r);
    /* chunked, no Content-Length: read, discarded past the limit, then refused */
    off = (size_t)snprintf(req, 20000, "POST /v1/completions HTTP/1.1\r\nHost: x\r\n"
                           "Connection: close\r\nContent-Type: application/json\r\n"
                           "Transfer-Encoding: chunked\r\n\r\n");
    for (int i = 0; i < 5; i++) {
        off += (size_t)snprintf(req + off, 20000 - off, "7d0\r\n");
        memset(req + off, ' ', 2000);
        off += 2000;
        memcpy(req + off, "\r\n", 2);
        off += 2;
    }
    off += (size_t)snprintf(req + off, 20000 - off, "0\r\n\r\n");
    http_raw(req, off, &r);
    ck_assert_int_eq(r.status, 413);
    resp_free(&r);
    free(req);
    json_decref(http_json("/health", NULL, 200));
}
END_TEST

/* ---- conformance with what OpenAI clients, curl, wrk and Prometheus expect ---------- */

/* A persistent connection: reads one response at a time (Content-Length or chunked). */
struct conn {
    int fd;
    char *buf;
    size_t len, cap;
};

static void conn_open(struct conn *c)
{
    c->fd = connect_port(srv_port);
    ck_assert_int_ge(c->fd, 0);
    c->cap = 1 << 16;
    c->buf = malloc(c->cap);
    c->len = 0;
}

static void conn_close(struct conn *c)
{
    close(c->fd);
    free(c->buf);
}

/* Makes sure n bytes are buffered; false on EOF. */
static bool conn_fill(struct conn *c, size_t n)
{
    while (c->len < n) {
        ssize_t r;
        if (c->len + 4096 > c->cap)
            c->buf = realloc(c->buf, c->cap *= 2);
        r = recv(c->fd, c->buf + c->len, c->cap - c->len - 1, 0);
        if (r <= 0)
            return false;
        c->len += (size_t)r;
    }
    c->buf[c->len] = '\0';
    return true;
}

/* Index just past "needle" in the buffer, reading more as needed; 0 on EOF. */
static size_t conn_find(struct conn *c, size_t from, const char *needle)
{
    for (;;) {
        c->buf[c->len] = '\0';
        char *p = c->len > from ? strstr(c->buf + from, needle) : NULL;
        if (p)
            return (size_t)(p - c->buf) + strlen(needle);
        if (!conn_fill(c, c->len + 1))
            return 0;
    }
}

static void conn_consume(struct conn *c, size_t n)
{
    memmove(c->buf, c->buf + n, c->len - n);
    c->len -= n;
}

/* Reads exactly one response; head_only: the request was HEAD (no body). */
static void conn_read(struct conn *c, bool head_only, struct resp *out)
{
    size_t hend = conn_find(c, 0, "\r\n\r\n");
    const char *te, *cl;

    memset(out, 0, sizeof(*out));
    ck_assert_msg(hend > 0, "connection closed before a response");
    out->head = strndup(c->buf, hend - 2);
    out->status = atoi(c->buf + 9);
    conn_consume(c, hend);
    te = header(out, "Transfer-Encoding");
    cl = header(out, "Content-Length");
    out->body = malloc(1);
    out->body_len = 0;
    if (head_only || out->status == 204 || out->status == 304) {
        out->body[0] = '\0';
        return;
    }
    if (te && !strcasecmp(te, "chunked")) {
        for (;;) {
            size_t e = conn_find(c, 0, "\r\n");
            unsigned long n;
            ck_assert_msg(e > 0, "EOF in a chunk header");
            n = strtoul(c->buf, NULL, 16);
            conn_consume(c, e);
            ck_assert(conn_fill(c, n + 2));
            ck_assert_msg(c->buf[n] == '\r' && c->buf[n + 1] == '\n', "chunk without CRLF");
            out->body = realloc(out->body, out->body_len + n + 1);
            memcpy(out->body + out->body_len, c->buf, n);
            out->body_len += n;
            conn_consume(c, n + 2);
            if (n == 0)
                break;
        }
    } else {
        size_t n;
        ck_assert_msg(cl != NULL, "response without Content-Length or chunking: %s", out->head);
        n = strtoul(cl, NULL, 10);
        ck_assert(conn_fill(c, n));
        out->body = realloc(out->body, n + 1);
        memcpy(out->body, c->buf, n);
        out->body_len = n;
        conn_consume(c, n);
    }
    out->body[out->body_len] = '\0';
}

static void conn_send(struct conn *c, const char *method, const char *path, const char *extra,
                      const char *body)
{
    char head[1024];

    snprintf(head, sizeof(head), "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\n%s", method, path,
             extra ? extra : "");
    send_all(c->fd, head, strlen(head));
    if (body) {
        snprintf(head, sizeof(head), "Content-Type: application/json\r\n"
                 "Content-Length: %zu\r\n\r\n", strlen(body));
        send_all(c->fd, head, strlen(head));
        send_all(c->fd, body, strlen(body));
    } else {
        send_all(c->fd, "\r\n", 2);
    }
}

/* wrk and the SDKs send many requests on one connection: every kind of answer keeps it
 * open (errors after the body was read included), and Connection: close is honoured. */
START_TEST(keepalive_many_requests)
{
    struct conn c;
    struct resp r;
    char buf[16];

    conn_open(&c);
    for (int round = 0; round < 3; round++) {
        conn_send(&c, "GET", "/health", NULL, NULL);
        conn_read(&c, false, &r);
        ck_assert_int_eq(r.status, 200);
        ck_assert_str_eq(r.body, "{\"status\":\"ok\"}");
        resp_free(&r);
        conn_send(&c, "POST", "/v1/completions", NULL,
                  "{\"prompt\":\"a\",\"max_tokens\":3,\"temperature\":0}");
        conn_read(&c, false, &r);
        ck_assert_int_eq(r.status, 200);
        ck_assert_ptr_nonnull(strstr(r.body, "\"text_completion\""));
        ck_assert_ptr_null(header(&r, "Connection"));
        resp_free(&r);
        conn_send(&c, "POST", "/v1/chat/completions", NULL,
                  "{\"messages\":[{\"role\":\"user\",\"content\":\"a\"}],\"max_tokens\":3,"
                  "\"stream\":true}");
        conn_read(&c, false, &r);
        ck_assert_int_eq(r.status, 200);
        ck_assert(r.body_len > 14);
        ck_assert_str_eq(r.body + r.body_len - 14, "data: [DONE]\n\n");
        resp_free(&r);
        conn_send(&c, "POST", "/v1/completions", NULL, "{\"prompt\":\"a\",\"temperature\":7}");
        conn_read(&c, false, &r);
        ck_assert_int_eq(r.status, 400);
        resp_free(&r);
        conn_send(&c, "POST", "/v1/completions", NULL,
                  "{\"prompt\":\"a\",\"max_tokens\":1,\"model\":\"\"}");
        conn_read(&c, false, &r);
        ck_assert_int_eq(r.status, 200); /* "" = the served model */
        resp_free(&r);
        conn_send(&c, "POST", "/v1/completions", NULL, "{\"prompt\":\"a\",\"model\":\"x\"}");
        conn_read(&c, false, &r);
        ck_assert_int_eq(r.status, 404);
        resp_free(&r);
        conn_send(&c, "GET", "/v1/nothing-here", NULL, NULL);
        conn_read(&c, false, &r);
        ck_assert_int_eq(r.status, 404);
        resp_free(&r);
        conn_send(&c, "HEAD", "/v1/models", NULL, NULL);
        conn_read(&c, true, &r);
        ck_assert_int_eq(r.status, 200);
        resp_free(&r);
        conn_send(&c, "OPTIONS", "/v1/chat/completions", NULL, NULL);
        conn_read(&c, false, &r);
        ck_assert_int_eq(r.status, 204);
        resp_free(&r);
        conn_send(&c, "GET", "/metrics", NULL, NULL);
        conn_read(&c, false, &r);
        ck_assert_int_eq(r.status, 200);
        resp_free(&r);
    }
    conn_send(&c, "GET", "/v1/models", "Connection: close\r\n", NULL);
    conn_read(&c, false, &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(header(&r, "Connection"), "close");
    resp_free(&r);
    ck_assert_int_eq(recv(c.fd, buf, sizeof(buf), 0), 0); /* the server closed it */
    conn_close(&c);
}
END_TEST

/* HEAD on GET routes (probes, curl -I), OPTIONS on every route (204 + Allow). */
START_TEST(head_and_options)
{
    struct conn c;
    struct resp r;

    conn_open(&c);
    conn_send(&c, "HEAD", "/health", NULL, NULL);
    conn_read(&c, true, &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(header(&r, "Content-Type"), "application/json");
    resp_free(&r);
    conn_send(&c, "OPTIONS", "/v1/completions", NULL, NULL);
    conn_read(&c, false, &r);
    ck_assert_int_eq(r.status, 204);
    ck_assert_str_eq(header(&r, "Allow"), "POST, OPTIONS");
    ck_assert_int_eq(r.body_len, 0);
    ck_assert_ptr_null(header(&r, "Access-Control-Allow-Origin")); /* cors_origin is off */
    resp_free(&r);
    conn_send(&c, "OPTIONS", "/v1/models/tiny", NULL, NULL);
    conn_read(&c, false, &r);
    ck_assert_int_eq(r.status, 204);
    ck_assert_str_eq(header(&r, "Allow"), "GET, HEAD, OPTIONS");
    resp_free(&r);
    conn_close(&c);
    /* HEAD and GET on a POST route stay 405 */
    http("HEAD", "/v1/chat/completions", NULL, NULL, &r);
    ck_assert_int_eq(r.status, 405);
    ck_assert_str_eq(header(&r, "Allow"), "POST, OPTIONS");
    resp_free(&r);
    http("DELETE", "/health", NULL, NULL, &r);
    ck_assert_int_eq(r.status, 405);
    ck_assert_str_eq(header(&r, "Allow"), "GET, HEAD, OPTIONS");
    resp_free(&r);
}
END_TEST

/* A strict reader of the Prometheus text format 0.0.4: every sample belongs to a family
 * announced by # HELP and # TYPE before it; histograms have ascending le buckets with
 * cumulative counts, a +Inf bucket equal to _count, and a _sum. */
static bool prom_name_ok(const char *s, size_t n)
{
    if (!n || !(s[0] == '_' || s[0] == ':' || (s[0] >= 'a' && s[0] <= 'z') ||
                (s[0] >= 'A' && s[0] <= 'Z')))
        return false;
    for (size_t i = 1; i < n; i++)
        if (!(s[i] == '_' || s[i] == ':' || (s[i] >= 'a' && s[i] <= 'z') ||
              (s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= '0' && s[i] <= '9')))
            return false;
    return true;
}

START_TEST(metrics_exposition)
{
    struct resp r;
    char *text, *line, *save = NULL;
    char family[128] = "", ftype[32] = "", helped[128] = "";
    double last_le = -1, last_cum = -1, inf_count = -1;
    int n_families = 0, n_hist = 0;
    bool have_sum = false, have_count = false;

    json_decref(http_json("/v1/completions", "{\"prompt\":\"ab\",\"max_tokens\":3}", 200));
    http("GET", "/metrics", NULL, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(header(&r, "Content-Type"), "text/plain; version=0.0.4; charset=utf-8");
    ck_assert(r.body_len > 0 && r.body[r.body_len - 1] == '\n');
    text = strdup(r.body);
    for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (!strncmp(line, "# HELP ", 7)) {
            size_t n = strcspn(line + 7, " ");
            ck_assert_msg(prom_name_ok(line + 7, n), "bad name: %s", line);
            ck_assert_msg(line[7 + n] == ' ' && line[8 + n], "HELP without text: %s", line);
            snprintf(helped, sizeof(helped), "%.*s", (int)n, line + 7);
            continue;
        }
        if (!strncmp(line, "# TYPE ", 7)) {
            char name[128], type[32];
            ck_assert_int_eq(sscanf(line + 7, "%127s %31s", name, type), 2);
            ck_assert_msg(!strcmp(name, helped), "TYPE %s not after its HELP", name);
            ck_assert_msg(!strcmp(type, "counter") || !strcmp(type, "gauge") ||
                          !strcmp(type, "histogram"), "type %s", type);
            if (!strcmp(ftype, "histogram"))
                ck_assert_msg(have_sum && have_count && inf_count >= 0,
                              "histogram %s incomplete", family);
            snprintf(family, sizeof(family), "%s", name);
            snprintf(ftype, sizeof(ftype), "%s", type);
            n_families++;
            n_hist += !strcmp(type, "histogram");
            last_le = -1;
            last_cum = -1;
            inf_count = -1;
            have_sum = have_count = false;
            ck_assert_msg(!strncmp(name, "hybridmoe_", 10), "name %s", name);
            if (!strcmp(type, "counter"))
                ck_assert_msg(strlen(name) > 6 && !strcmp(name + strlen(name) - 6, "_total"),
                              "counter %s without _total", name);
            continue;
        }
        ck_assert_msg(line[0] != '#', "unknown comment: %s", line);
        /* a sample: name[{labels}] value */
        size_t n = strcspn(line, "{ ");
        const char *rest = line + n, *suffix;
        char *end;
        double v, le = 0;
        bool has_le = false;
        ck_assert_msg(prom_name_ok(line, n), "bad sample name: %s", line);
        ck_assert_msg(!strncmp(line, family, strlen(family)), "sample %s outside family %s",
                      line, family);
        suffix = line + strlen(family);
        if (*rest == '{') {
            const char *close_b = strchr(rest, '}');
            ck_assert_ptr_nonnull(close_b);
            if (!strncmp(rest, "{le=\"", 5)) {
                has_le = true;
                le = strncmp(rest + 5, "+Inf\"", 5) ? strtod(rest + 5, &end) : 1e308;
            } else {
                ck_assert_msg(strstr(rest, "=\"") && close_b[-1] == '"', "labels: %s", line);
            }
            rest = close_b + 1;
        }
        ck_assert_msg(*rest == ' ', "no value: %s", line);
        v = strtod(rest + 1, &end);
        ck_assert_msg(*end == '\0' && end != rest + 1, "bad value: %s", line);
        if (!strcmp(ftype, "histogram")) {
            if (!strncmp(suffix, "_bucket", 7)) {
                ck_assert_msg(has_le, "bucket without le: %s", line);
                ck_assert_msg(le > last_le, "le not ascending: %s", line);
                ck_assert_msg(v >= last_cum, "buckets not cumulative: %s", line);
                last_le = le;
                last_cum = v;
                if (le == 1e308)
                    inf_count = v;
            } else if (!strncmp(suffix, "_sum ", 5)) {
                have_sum = true;
            } else if (!strncmp(suffix, "_count ", 7)) {
                ck_assert_msg(inf_count >= 0 && v == inf_count, "_count %g != +Inf bucket %g",
                              v, inf_count);
                have_count = true;
            } else {
                ck_abort_msg("histogram sample %s", line);
            }
        } else {
            ck_assert_msg(*suffix == ' ' || *suffix == '{', "sample %s in family %s", line,
                          family);
            ck_assert(v >= 0);
        }
    }
    if (!strcmp(ftype, "histogram"))
        ck_assert(have_sum && have_count);
    ck_assert_int_ge(n_families, 20);
    ck_assert_int_ge(n_hist, 10);
    free(text);
    resp_free(&r);
}
END_TEST

/* Chat streaming with n = 2: a role chunk per choice, one choice per chunk with its
 * index, a final chunk per choice, "usage": null until the usage chunk (choices []),
 * and per choice the same text as the non-streamed answer. */
START_TEST(stream_n_choices)
{
    const char *base = "{\"messages\":[{\"role\":\"developer\",\"content\":\"Be brief.\","
                       "\"name\":\"x\"},{\"role\":\"user\",\"content\":[{\"type\":\"text\","
                       "\"text\":\"Hi\"},{\"type\":\"text\",\"text\":\" there\"}]}],"
                       "\"n\":2,\"max_tokens\":6,\"temperature\":0.9,\"seed\":11";
    char body[1024];
    struct resp r;
    json_t *ev, *j;
    char text[2][1024] = { "", "" };
    int roles[2] = { 0, 0 }, finals[2] = { 0, 0 };
    size_t n;
    json_int_t ctoks = 0;

    snprintf(body, sizeof(body), "%s,\"stream\":true,\"stream_options\":{\"include_usage\":true}}",
             base);
    http("POST", "/v1/chat/completions", NULL, body, &r);
    ck_assert_int_eq(r.status, 200);
    ev = sse_events(r.body);
    n = json_array_size(ev);
    for (size_t i = 0; i + 1 < n; i++) {
        json_t *e = json_array_get(ev, i), *chs = json_object_get(e, "choices"), *c, *d;
        json_int_t idx;
        ck_assert_str_eq(jstr(e, "object"), "chat.completion.chunk");
        ck_assert(json_is_null(json_object_get(e, "usage")));
        ck_assert_int_eq(json_array_size(chs), 1);
        c = json_array_get(chs, 0);
        idx = json_integer_value(json_object_get(c, "index"));
        ck_assert(idx == 0 || idx == 1);
        d = json_object_get(c, "delta");
        ck_assert(json_is_object(d));
        ck_assert_msg(finals[idx] == 0, "chunk for choice %d after its final chunk", (int)idx);
        if (jstr(d, "role")) {
            ck_assert_str_eq(jstr(d, "role"), "assistant");
            ck_assert_str_eq(jstr(d, "content"), "");
            ck_assert_int_eq(i, (size_t)idx); /* the role chunks come first, in order */
            roles[idx]++;
        } else if (jstr(c, "finish_reason")) {
            ck_assert_int_eq(json_object_size(d), 0);
            finals[idx]++;
        } else {
            ck_assert(json_is_null(json_object_get(c, "finish_reason")));
            strncat(text[idx], jstr(d, "content"), sizeof(text[idx]) - strlen(text[idx]) - 1);
        }
    }
    ck_assert_int_eq(roles[0], 1);
    ck_assert_int_eq(roles[1], 1);
    ck_assert_int_eq(finals[0], 1);
    ck_assert_int_eq(finals[1], 1);
    j = json_array_get(ev, n - 1);
    ck_assert_int_eq(json_array_size(json_object_get(j, "choices")), 0);
    ctoks = json_integer_value(json_object_get(json_object_get(j, "usage"), "completion_tokens"));
    ck_assert_int_le(ctoks, 12);
    json_decref(ev);
    resp_free(&r);
    /* without streaming: the same choices, in index order */
    snprintf(body, sizeof(body), "%s}", base);
    j = http_json("/v1/chat/completions", body, 200);
    for (size_t i = 0; i < 2; i++) {
        json_t *c = json_array_get(json_object_get(j, "choices"), i);
        ck_assert_int_eq(json_integer_value(json_object_get(c, "index")), (json_int_t)i);
        ck_assert_str_eq(jstr(json_object_get(c, "message"), "content"), text[i]);
    }
    ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(j, "usage"),
                                                        "completion_tokens")), ctoks);
    json_decref(j);
}
END_TEST

/* Several prompts: choice index = prompt_index * n + j; each prompt's choices are what
 * that prompt gives alone. */
START_TEST(prompt_list_indices)
{
    json_t *j = http_json("/v1/completions", "{\"prompt\":[\"The cat\",[97,98]],\"n\":2,"
                          "\"max_tokens\":5,\"temperature\":0}", 200);
    json_t *a = http_json("/v1/completions", "{\"prompt\":\"The cat\",\"max_tokens\":5,"
                          "\"temperature\":0}", 200);
    json_t *b = http_json("/v1/completions", "{\"prompt\":[97,98],\"max_tokens\":5,"
                          "\"temperature\":0}", 200);
    json_t *ch = json_object_get(j, "choices");

    ck_assert_int_eq(json_array_size(ch), 4);
    for (size_t i = 0; i < 4; i++) {
        json_t *c = json_array_get(ch, i);
        ck_assert_int_eq(json_integer_value(json_object_get(c, "index")), (json_int_t)i);
        ck_assert_str_eq(jstr(c, "text"), jstr(choice0(i < 2 ? a : b), "text"));
    }
    /* usage: each prompt counted once */
    ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(j, "usage"),
                                                        "prompt_tokens")),
                     json_integer_value(json_object_get(json_object_get(a, "usage"),
                                                        "prompt_tokens")) +
                     json_integer_value(json_object_get(json_object_get(b, "usage"),
                                                        "prompt_tokens")));
    json_decref(j);
    json_decref(a);
    json_decref(b);
}
END_TEST

/* logprobs shapes: completions top_logprobs always hold the sampled token (OpenAI: "up
 * to logprobs+1 elements"), text_offset counts the completion's characters before each
 * token even while text is held back for a stop sequence; chat entries carry bytes. */
START_TEST(logprobs_shapes)
{
    /* one-byte tokens a/b/c only; the stop string "aq" never matches but holds every
     * "a" back until the next token */
    json_t *j = http_json("/v1/completions",
                          "{\"prompt\":\"hello\",\"max_tokens\":8,\"temperature\":0,\"logprobs\":0,"
                          "\"stop\":\"aq\",\"logit_bias\":{\"97\":100,\"98\":100,\"99\":100}}",
                          200);
    json_t *lp = json_object_get(choice0(j), "logprobs");
    json_t *toks = json_object_get(lp, "tokens"), *tlp = json_object_get(lp, "token_logprobs");
    json_t *top = json_object_get(lp, "top_logprobs"), *off = json_object_get(lp, "text_offset");
    const char *text = jstr(choice0(j), "text");

    ck_assert_int_eq(strlen(text), 8);
    ck_assert_int_eq(json_array_size(toks), 8);
    for (size_t i = 0; i < 8; i++) {
        const char *t = json_string_value(json_array_get(toks, i));
        json_t *d = json_array_get(top, i);
        ck_assert_int_eq(strlen(t), 1);
        ck_assert_int_eq(t[0], text[i]);
        ck_assert_int_eq(json_integer_value(json_array_get(off, i)), (json_int_t)i);
        ck_assert_int_eq(json_object_size(d), 1);
        ck_assert(json_real_value(json_object_get(d, t)) ==
                  json_real_value(json_array_get(tlp, i)));
    }
    json_decref(j);
    /* logprobs 2: the two best, plus the sampled token when it is not among them */
    j = http_json("/v1/completions", "{\"prompt\":\"hello\",\"max_tokens\":6,\"temperature\":1,"
                  "\"seed\":5,\"logprobs\":2}", 200);
    lp = json_object_get(choice0(j), "logprobs");
    for (size_t i = 0; i < json_array_size(json_object_get(lp, "tokens")); i++) {
        json_t *d = json_array_get(json_object_get(lp, "top_logprobs"), i);
        const char *t = json_string_value(json_array_get(json_object_get(lp, "tokens"), i));
        ck_assert_int_ge(json_object_size(d), 1);
        ck_assert_int_le(json_object_size(d), 3);
        ck_assert_ptr_nonnull(json_object_get(d, t));
    }
    json_decref(j);
    /* chat: content entries {token, logprob, bytes, top_logprobs: [{token, logprob, bytes}]} */
    j = http_json("/v1/chat/completions",
                  "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"max_tokens\":3,"
                  "\"logprobs\":true,\"temperature\":0,\"logit_bias\":{\"97\":100}}", 200);
    lp = json_object_get(choice0(j), "logprobs");
    ck_assert(json_is_null(json_object_get(lp, "refusal")));
    ck_assert_int_eq(json_array_size(json_object_get(lp, "content")), 3);
    for (size_t i = 0; i < 3; i++) {
        json_t *e = json_array_get(json_object_get(lp, "content"), i);
        ck_assert_str_eq(jstr(e, "token"), "a");
        ck_assert(json_real_value(json_object_get(e, "logprob")) <= 0);
        ck_assert_int_eq(json_array_size(json_object_get(e, "bytes")), 1);
        ck_assert_int_eq(json_integer_value(json_array_get(json_object_get(e, "bytes"), 0)), 97);
        ck_assert(json_is_array(json_object_get(e, "top_logprobs")));
        ck_assert_int_eq(json_array_size(json_object_get(e, "top_logprobs")), 0);
    }
    json_decref(j);
}
END_TEST

/* U+0000 is valid JSON text. A prompt or message carrying it is tokenized with its length
 * (not cut at the NUL); a generated NUL byte comes back as "\u0000", also as a top_logprobs
 * key. Names and stop strings with a NUL are rejected, so "user\u0000x" is not "user". */
START_TEST(nul_in_text)
{
    json_t *j = http_json("/tokenize", "{\"content\":\"\\u0000\",\"add_special\":false}", 200);
    json_t *toks = json_object_get(j, "tokens"), *c;
    json_int_t nul_id;
    char body[512];

    ck_assert_int_eq(json_array_size(toks), 1);
    nul_id = json_integer_value(json_array_get(toks, 0));
    json_decref(j);

    j = http_json("/tokenize", "{\"content\":\"a\\u0000b\",\"add_special\":false}", 200);
    toks = json_object_get(j, "tokens");
    ck_assert_int_ge(json_array_size(toks), 2);
    {
        char *arr = json_dumps(toks, JSON_COMPACT);
        snprintf(body, sizeof(body), "{\"tokens\":%s}", arr);
        free(arr);
    }
    json_decref(j);
    j = http_json("/detokenize", body, 200);
    c = json_object_get(j, "content");
    ck_assert_int_eq(json_string_length(c), 3);
    ck_assert_mem_eq(json_string_value(c), "a\0b", 3);
    json_decref(j);

    /* the prompt is not cut at the NUL: 3 tokens without BOS, 4 with */
    j = http_json("/v1/completions", "{\"prompt\":\"a\\u0000b\",\"max_tokens\":1,\"seed\":1}", 200);
    ck_assert_int_ge(json_integer_value(json_object_get(json_object_get(j, "usage"),
                                                        "prompt_tokens")), 3);
    json_decref(j);
    json_decref(http_json("/v1/chat/completions", "{\"messages\":[{\"role\":\"user\","
                          "\"content\":\"x\\u0000\"}],\"max_tokens\":1,\"seed\":1}", 200));

    /* a forced NUL token: text "\u0000\u0000", logprobs keyed by the NUL string */
    snprintf(body, sizeof(body), "{\"prompt\":\"a\",\"max_tokens\":2,\"temperature\":0,"
             "\"logprobs\":1,\"logit_bias\":{\"%lld\":100}}", (long long)nul_id);
    {
        /* jansson cannot decode a NUL in an object key, so the key is checked in the text */
        struct resp r;
        http("POST", "/v1/completions", NULL, body, &r);
        ck_assert_int_eq(r.status, 200);
        ck_assert_msg(strstr(r.body, "\"text\":\"\\u0000\\u0000\"") &&
                      strstr(r.body, "\"top_logprobs\":[{\"\\u0000\":"),
                      "%s", r.body);
        resp_free(&r);
    }

    j = http_json("/v1/completions", "{\"prompt\":\"a\",\"stop\":\"x\\u0000\"}", 400);
    ck_assert_str_eq(jstr(json_object_get(j, "error"), "param"), "stop");
    json_decref(j);
    j = http_json("/v1/completions", "{\"prompt\":\"a\",\"stop\":[\"y\",\"\\u0000\"]}", 400);
    ck_assert_str_eq(jstr(json_object_get(j, "error"), "param"), "stop");
    json_decref(j);
    j = http_json("/v1/completions", "{\"prompt\":\"a\",\"model\":\"tiny\\u0000x\"}", 400);
    ck_assert_str_eq(jstr(json_object_get(j, "error"), "param"), "model");
    json_decref(j);
    j = http_json("/v1/chat/completions", "{\"messages\":[{\"role\":\"user\\u0000x\","
                  "\"content\":\"x\"}]}", 400);
    ck_assert_str_eq(jstr(json_object_get(j, "error"), "param"), "messages");
    json_decref(j);
}
END_TEST

/* Scores (echo, max_tokens 0, logprobs 0) the first n of a fixed sequence of letter
 * tokens, with complexity and window fixed so that prompts of any length run the same
 * model. */
static json_t *echo_score_ids(int n)
{
    char body[4096];
    size_t off = (size_t)snprintf(body, sizeof(body), "{\"prompt\":[");

    for (int i = 0; i < n; i++)
        off += (size_t)snprintf(body + off, sizeof(body) - off, "%s%d", i ? "," : "",
                                97 + (i * 7) % 26);
    snprintf(body + off, sizeof(body) - off, "],\"max_tokens\":0,\"echo\":true,\"logprobs\":0,"
             "\"hybridmoe\":{\"complexity\":0.5,\"window\":64}}");
    return http_json("/v1/completions", body, 200);
}

/* echo (completions): the prompt comes first in the text and, with logprobs, in the
 * logprobs arrays (its first token null). A prompt token's log-probability is exactly the
 * one it gets when it is generated at temperature 0; max_tokens 0 scores the prompt only;
 * prompts longer than a scoring chunk (64 tokens) give the same numbers as shorter ones
 * (fixed complexity and window, so both requests run the same model); streams send the
 * prompt as each choice's first chunk. */
START_TEST(echo_and_prompt_logprobs)
{
    json_t *j, *lp, *a, *b, *toks;
    char body[4096], *arr;
    double gen_lp;
    char gen_tok[32];
    size_t n;

    /* echo without logprobs: prompt + the same completion as without echo */
    j = http_json("/v1/completions", "{\"prompt\":\"hello\",\"max_tokens\":4,\"temperature\":0}",
                  200);
    snprintf(body, sizeof(body), "hello%s", jstr(choice0(j), "text"));
    json_decref(j);
    j = http_json("/v1/completions", "{\"prompt\":\"hello\",\"max_tokens\":4,\"temperature\":0,"
                  "\"echo\":true}", 200);
    ck_assert_str_eq(jstr(choice0(j), "text"), body);
    json_decref(j);

    /* a generated token's logprob == its logprob as the last token of an echoed prompt */
    j = http_json("/v1/completions", "{\"prompt\":\"hello\",\"max_tokens\":1,\"temperature\":0,"
                  "\"logprobs\":0}", 200);
    lp = json_object_get(choice0(j), "logprobs");
    snprintf(gen_tok, sizeof(gen_tok), "%s",
             json_string_value(json_array_get(json_object_get(lp, "tokens"), 0)));
    gen_lp = json_real_value(json_array_get(json_object_get(lp, "token_logprobs"), 0));
    snprintf(body, sizeof(body), "{\"content\":\"hello%s\"}", gen_tok);
    json_decref(j);
    j = http_json("/tokenize", body, 200);
    toks = json_object_get(j, "tokens");
    n = json_array_size(toks);
    ck_assert_int_eq(n, 7); /* BOS + 5 bytes + the generated token */
    arr = json_dumps(toks, JSON_COMPACT);
    json_decref(j);
    snprintf(body, sizeof(body), "{\"prompt\":%s,\"max_tokens\":0,\"echo\":true,\"logprobs\":2}",
             arr);
    free(arr);
    j = http_json("/v1/completions", body, 200);
    lp = json_object_get(choice0(j), "logprobs");
    ck_assert_str_eq(jstr(choice0(j), "finish_reason"), "length");
    ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(j, "usage"),
                                                        "completion_tokens")), 0);
    ck_assert_int_eq(json_array_size(json_object_get(lp, "tokens")), n);
    ck_assert(json_is_null(json_array_get(json_object_get(lp, "token_logprobs"), 0)));
    ck_assert(json_is_null(json_array_get(json_object_get(lp, "top_logprobs"), 0)));
    ck_assert(json_real_value(json_array_get(json_object_get(lp, "token_logprobs"), n - 1)) ==
              gen_lp);
    ck_assert_str_eq(json_string_value(json_array_get(json_object_get(lp, "tokens"), n - 1)),
                     gen_tok);
    for (size_t i = 1; i < n; i++) { /* the token itself, plus up to 2 alternatives */
        json_t *d = json_array_get(json_object_get(lp, "top_logprobs"), i);
        ck_assert_int_ge(json_object_size(d), 2);
        ck_assert_int_le(json_object_size(d), 3);
    }
    {
        char want[64];
        snprintf(want, sizeof(want), "hello%s", gen_tok);
        ck_assert_str_eq(jstr(choice0(j), "text"), want);
    }
    json_decref(j);

    /* 150 prompt tokens (3 scoring chunks) against their first 100 (2 chunks); scoring
     * may fill the whole context (256), generating may not */
    a = echo_score_ids(256);
    ck_assert_int_eq(json_array_size(json_object_get(json_object_get(choice0(a), "logprobs"),
                                                     "tokens")), 256);
    json_decref(a);
    a = echo_score_ids(150);
    b = echo_score_ids(100);
    {
        json_t *la = json_object_get(json_object_get(choice0(a), "logprobs"), "token_logprobs");
        json_t *lb = json_object_get(json_object_get(choice0(b), "logprobs"), "token_logprobs");
        json_t *oa = json_object_get(json_object_get(choice0(a), "logprobs"), "text_offset");
        ck_assert_int_eq(json_array_size(la), 150);
        ck_assert_int_eq(json_array_size(lb), 100);
        for (size_t i = 1; i < 100; i++)
            ck_assert_msg(json_real_value(json_array_get(la, i)) ==
                          json_real_value(json_array_get(lb, i)), "token %zu", i);
        for (size_t i = 0; i < 150; i++)
            ck_assert_int_eq(json_integer_value(json_array_get(oa, i)), (json_int_t)i);
        ck_assert_int_eq(strlen(jstr(choice0(a), "text")), 150);
    }
    json_decref(a);
    json_decref(b);

    /* a stream: each choice's first chunk is its prompt; the texts add up to the body's */
    {
        struct resp r;
        json_t *evs;
        char text[2][256] = { "", "" };
        bool first[2] = { true, true };
        const char *req = "{\"prompt\":\"hi\",\"max_tokens\":3,\"temperature\":0,\"echo\":true,"
                          "\"n\":2,\"stream\":true,\"logit_bias\":{\"120\":50}}";
        http("POST", "/v1/completions", NULL, req, &r);
        ck_assert_int_eq(r.status, 200);
        evs = sse_events(r.body);
        resp_free(&r);
        for (size_t i = 0; i < json_array_size(evs); i++) {
            json_t *c = choice0(json_array_get(evs, i));
            json_int_t k = json_integer_value(json_object_get(c, "index"));
            ck_assert(k == 0 || k == 1);
            if (first[k])
                ck_assert_str_eq(jstr(c, "text"), "hi");
            first[k] = false;
            strncat(text[k], jstr(c, "text"), sizeof(text[k]) - strlen(text[k]) - 1);
        }
        json_decref(evs);
        ck_assert_str_eq(text[0], "hixxx");
        ck_assert_str_eq(text[1], "hixxx");
    }
}
END_TEST

/* max_tokens absent or null: the default, cut to what fits after a long prompt (not an
 * error); an explicit max_tokens that overflows the context is a 400. Content-Type may
 * carry a charset. */
START_TEST(max_tokens_default_fits)
{
    char body[4096];
    size_t off;
    struct resp r;
    json_t *j, *u;

    for (int variant = 0; variant < 3; variant++) {
        off = (size_t)snprintf(body, sizeof(body), "{\"prompt\":[");
        for (int i = 0; i < 250; i++)
            off += (size_t)snprintf(body + off, sizeof(body) - off, "%s%d", i ? "," : "",
                                    97 + i % 3);
        snprintf(body + off, sizeof(body) - off, "]%s}",
                 variant == 0 ? "" : variant == 1 ? ",\"max_tokens\":null" :
                 ",\"max_completion_tokens\":null,\"stop\":null,\"n\":null,\"seed\":null");
        j = http_json("/v1/completions", body, 200);
        u = json_object_get(j, "usage");
        ck_assert_int_eq(json_integer_value(json_object_get(u, "prompt_tokens")), 250);
        ck_assert_int_le(json_integer_value(json_object_get(u, "completion_tokens")), 6);
        if (!strcmp(jstr(choice0(j), "finish_reason"), "length"))
            ck_assert_int_eq(json_integer_value(json_object_get(u, "completion_tokens")), 6);
        json_decref(j);
    }
    snprintf(body + off, sizeof(body) - off, "],\"max_tokens\":7}");
    j = http_json("/v1/completions", body, 400);
    ck_assert_str_eq(jstr(json_object_get(j, "error"), "code"), "context_length_exceeded");
    ck_assert_str_eq(jstr(json_object_get(j, "error"), "param"), "max_tokens");
    json_decref(j);
    snprintf(body, sizeof(body), "POST /v1/completions HTTP/1.1\r\nHost: x\r\n"
             "Connection: close\r\nContent-Type: application/json; charset=utf-8\r\n"
             "Content-Length: 29\r\n\r\n{\"prompt\":\"a\",\"max_tokens\":1}");
    http_raw(body, strlen(body), &r);
    ck_assert_int_eq(r.status, 200);
    resp_free(&r);
}
END_TEST

/* ignore_eos (vLLM / llama.cpp extension, used by benchmarks): EOS does not end the
 * sequence. The tiny model's EOS is token 257. Also: a choice that generated nothing has
 * empty logprobs (when asked for), so clients can index them. */
START_TEST(ignore_eos)
{
    json_t *j = http_json("/v1/completions", "{\"prompt\":\"a\",\"max_tokens\":4,"
                          "\"temperature\":0,\"logit_bias\":{\"257\":100}}", 200);
    ck_assert_str_eq(jstr(choice0(j), "finish_reason"), "stop");
    ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(j, "usage"),
                                                        "completion_tokens")), 0);
    json_decref(j);
    /* logprobs asked for but nothing generated: empty arrays, not null */
    j = http_json("/v1/chat/completions", "{\"messages\":[{\"role\":\"user\",\"content\":\"a\"}],"
                  "\"logprobs\":true,\"temperature\":0,\"logit_bias\":{\"257\":100}}", 200);
    ck_assert(json_is_array(json_object_get(json_object_get(choice0(j), "logprobs"), "content")));
    json_decref(j);
    j = http_json("/v1/completions", "{\"prompt\":\"a\",\"logprobs\":1,\"temperature\":0,"
                  "\"logit_bias\":{\"257\":100}}", 200);
    ck_assert_int_eq(json_array_size(json_object_get(json_object_get(choice0(j), "logprobs"),
                                                     "tokens")), 0);
    ck_assert(json_is_array(json_object_get(json_object_get(choice0(j), "logprobs"),
                                            "text_offset")));
    json_decref(j);
    j = http_json("/v1/completions", "{\"prompt\":\"a\",\"max_tokens\":4,\"temperature\":0,"
                  "\"ignore_eos\":true,\"logit_bias\":{\"257\":100}}", 200);
    ck_assert_str_eq(jstr(choice0(j), "finish_reason"), "length");
    ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(j, "usage"),
                                                        "completion_tokens")), 4);
    json_decref(j);
}
END_TEST

/* CORS (cors_origin set): preflights need no API key; every answer, errors included,
 * carries Access-Control-Allow-Origin so a browser can read it. */
START_TEST(cors_preflight)
{
    struct resp r;

    http("OPTIONS", "/v1/chat/completions", "Origin: https://app.example\r\n"
         "Access-Control-Request-Method: POST\r\n"
         "Access-Control-Request-Headers: authorization, content-type\r\n", NULL, &r);
    ck_assert_int_eq(r.status, 204);
    ck_assert_str_eq(header(&r, "Access-Control-Allow-Origin"), "https://app.example");
    ck_assert_str_eq(header(&r, "Vary"), "Origin");
    ck_assert_ptr_nonnull(strstr(header(&r, "Access-Control-Allow-Methods"), "POST"));
    ck_assert_ptr_nonnull(strstr(header(&r, "Access-Control-Allow-Headers"), "Authorization"));
    ck_assert_ptr_nonnull(strstr(header(&r, "Access-Control-Allow-Headers"), "Content-Type"));
    resp_free(&r);
    http("GET", "/v1/models", "Origin: https://app.example\r\n", NULL, &r);
    ck_assert_int_eq(r.status, 401);
    ck_assert_str_eq(header(&r, "Access-Control-Allow-Origin"), "https://app.example");
    resp_free(&r);
    http("GET", "/v1/models", "Authorization: Bearer sekrit\r\n", NULL, &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(header(&r, "Access-Control-Allow-Origin"), "https://app.example");
    resp_free(&r);
}
END_TEST

START_TEST(api_key)
{
    struct resp r;

    http("GET", "/v1/models", NULL, NULL, &r);
    ck_assert_int_eq(r.status, 401);
    ck_assert_ptr_nonnull(strstr(r.body, "invalid_api_key"));
    resp_free(&r);
    http("GET", "/v1/models", "Authorization: Bearer wrong\r\n", NULL, &r);
    ck_assert_int_eq(r.status, 401);
    resp_free(&r);
    http("GET", "/metrics", NULL, NULL, &r);
    ck_assert_int_eq(r.status, 401);
    resp_free(&r);
    http("POST", "/v1/completions", NULL, "{\"prompt\":\"a\",\"max_tokens\":1}", &r);
    ck_assert_int_eq(r.status, 401);
    resp_free(&r);
    http("GET", "/v1/models", "Authorization: Bearer sekrit\r\n", NULL, &r);
    ck_assert_int_eq(r.status, 200);
    resp_free(&r);
    http("GET", "/health", NULL, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    resp_free(&r);
}
END_TEST

/* ---- concurrency, disconnects, overload ------------------------------------------------ */

static const char *const conc_prompts[] = { "The cat", "Once upon a time", "x", "HybridMoE is" };

struct conc_arg {
    const char *prompt;
    char text[4096];
};

static void *conc_thread(void *p)
{
    struct conc_arg *a = p;
    char body[256];
    struct resp r;
    json_t *j;

    snprintf(body, sizeof(body), "{\"prompt\":\"%s\",\"max_tokens\":24,\"temperature\":0}",
             a->prompt);
    http("POST", "/v1/completions", NULL, body, &r);
    j = json_loads(r.body, 0, NULL);
    snprintf(a->text, sizeof(a->text), "%d:%s", r.status,
             j ? json_string_value(json_object_get(choice0(j), "text")) : "?");
    json_decref(j);
    resp_free(&r);
    return NULL;
}

START_TEST(concurrent_equals_alone)
{
    struct conc_arg alone[4], together[4];
    pthread_t th[4];

    for (int i = 0; i < 4; i++) {
        alone[i].prompt = together[i].prompt = conc_prompts[i];
        conc_thread(&alone[i]);
    }
    for (int i = 0; i < 4; i++)
        pthread_create(&th[i], NULL, conc_thread, &together[i]);
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < 4; i++)
        ck_assert_str_eq(together[i].text, alone[i].text);
}
END_TEST

/* Reads from fd until `needle` was seen (or EOF); returns bytes read. */
static size_t read_until(int fd, const char *needle, char *buf, size_t cap)
{
    size_t n = 0;
    buf[0] = '\0';
    while (n + 1 < cap && !strstr(buf, needle)) {
        ssize_t r = recv(fd, buf + n, cap - n - 1, 0);
        if (r <= 0)
            break;
        n += (size_t)r;
        buf[n] = '\0';
    }
    return n;
}

START_TEST(disconnect_frees_slot)
{
    char buf[8192];
    int fd = send_request("POST", "/v1/completions", NULL,
                          "{\"prompt\":\"a\",\"max_tokens\":250,\"ignore_eos\":true,"
                          "\"stream\":true,"
                          "\"logit_bias\":{\"97\":100}}");
    double cancelled0 = metric("hybridmoe_requests_cancelled_total");
    double generated0 = metric("hybridmoe_generated_tokens_total");

    read_until(fd, "\"text\":\"a\"", buf, sizeof(buf));
    ck_assert_ptr_nonnull(strstr(buf, "200 OK"));
    ck_assert(metric("hybridmoe_running_sequences") == 1);
    close(fd);
    for (int i = 0; i < 200 && metric("hybridmoe_running_sequences") != 0; i++)
        sleep_ms(10);
    ck_assert(metric("hybridmoe_running_sequences") == 0);
    ck_assert(metric("hybridmoe_kv_bytes_used") == 0);
    ck_assert(metric("hybridmoe_requests_cancelled_total") == cancelled0 + 1);
    /* the generation stopped early: fewer tokens than requested were generated */
    ck_assert(metric("hybridmoe_generated_tokens_total") < generated0 + 250);
    json_decref(http_json("/v1/completions", "{\"prompt\":\"a\",\"max_tokens\":2}", 200));
}
END_TEST

START_TEST(full_queue_503)
{
    char buf[8192];
    /* A holds the only running slot, B waits in the one queue place, C is refused */
    int a = send_request("POST", "/v1/completions", NULL,
                         "{\"prompt\":\"a\",\"max_tokens\":250,\"ignore_eos\":true,"
                         "\"stream\":true}");
    int b;
    struct resp r;

    read_until(a, "data: ", buf, sizeof(buf));
    b = send_request("POST", "/v1/completions", NULL, "{\"prompt\":\"b\",\"max_tokens\":2}");
    for (int i = 0; i < 600 && metric("hybridmoe_waiting_requests") != 1; i++)
        sleep_ms(5);
    ck_assert(metric("hybridmoe_waiting_requests") == 1);
    http("POST", "/v1/completions", NULL, "{\"prompt\":\"c\",\"max_tokens\":2}", &r);
    ck_assert_int_eq(r.status, 503);
    ck_assert_str_eq(header(&r, "Retry-After"), "1");
    ck_assert_ptr_nonnull(strstr(r.body, "server_overloaded"));
    resp_free(&r);
    close(a); /* frees the slot: B runs */
    {
        size_t len;
        char *raw = read_all(b, &len);
        parse_response(raw, len, &r);
        free(raw);
        ck_assert_int_eq(r.status, 200);
        resp_free(&r);
    }
    close(b);
}
END_TEST

START_TEST(keepalive_while_queued)
{
    char buf[16384];
    int a = send_request("POST", "/v1/completions", NULL,
                         "{\"prompt\":\"a\",\"max_tokens\":250,\"ignore_eos\":true,"
                         "\"stream\":true}");
    int b;

    read_until(a, "data: ", buf, sizeof(buf));
    b = send_request("POST", "/v1/completions", NULL,
                     "{\"prompt\":\"b\",\"max_tokens\":2,\"stream\":true}");
    /* B is queued behind A: it gets headers and ": keep-alive" comments (interval 1 s is
     * set for this server), then its data */
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    read_until(b, "data: [DONE]", buf, sizeof(buf));
    clock_gettime(CLOCK_MONOTONIC, &t1);
    ck_assert_ptr_nonnull(strstr(buf, "200 OK"));
    /* waited through two ticks of the 1 s keep-alive timer: a comment must be there */
    if (t1.tv_sec - t0.tv_sec >= 3)
        ck_assert_ptr_nonnull(strstr(buf, ": keep-alive\n\n"));
    ck_assert_ptr_nonnull(strstr(buf, "data: [DONE]"));
    close(a);
    close(b);
}
END_TEST

START_TEST(nonstream_disconnect)
{
    /* a non-streaming request is suspended while it runs: the server watches its socket
     * and cancels the job as soon as the client hangs up. Measured in tokens, not time:
     * with 20 ms steps, a check on the 1-second tick would let ~25 more tokens through
     * on average, an immediate cancel one or two. */
    int fd = send_request("POST", "/v1/completions", NULL,
                          "{\"prompt\":\"a\",\"max_tokens\":250,\"ignore_eos\":true}");
    double g0, g1;

    for (int i = 0; i < 300 && metric("hybridmoe_running_sequences") != 1; i++)
        sleep_ms(10);
    ck_assert(metric("hybridmoe_running_sequences") == 1);
    for (int i = 0; i < 300 && metric("hybridmoe_generated_tokens_total") < 3; i++)
        sleep_ms(10);
    g0 = metric("hybridmoe_generated_tokens_total");
    close(fd);
    for (int i = 0; i < 400 && metric("hybridmoe_running_sequences") != 0; i++)
        sleep_ms(5);
    g1 = metric("hybridmoe_generated_tokens_total");
    ck_assert(metric("hybridmoe_running_sequences") == 0);
    ck_assert_msg(g1 - g0 < 8, "%g tokens generated after the client hung up", g1 - g0);
    /* a keep-alive connection that sends a second request while the first runs
     * (pipelining) is not a hang-up: both are answered */
    {
        const char *one = "POST /v1/completions HTTP/1.1\r\nHost: x\r\n"
                          "Content-Type: application/json\r\nContent-Length: 30\r\n\r\n"
                          "{\"prompt\":\"a\",\"max_tokens\":10}";
        char req[512], buf[16384];
        int c = connect_port(srv_port);
        size_t n;
        snprintf(req, sizeof(req), "%s%s", one, one);
        ck_assert_int_ge(c, 0);
        send_all(c, req, strlen(req));
        n = 0;
        buf[0] = '\0';
        while (n + 1 < sizeof(buf)) {
            char *p1 = strstr(buf, "200 OK"), *p2 = p1 ? strstr(p1 + 1, "200 OK") : NULL;
            if (p2 && strstr(p2, "\"usage\""))
                break;
            ssize_t k = recv(c, buf + n, sizeof(buf) - n - 1, 0);
            if (k <= 0)
                break;
            n += (size_t)k;
            buf[n] = '\0';
        }
        close(c);
        char *p1 = strstr(buf, "HTTP/1.1 200 OK");
        ck_assert_ptr_nonnull(p1);
        ck_assert_ptr_nonnull(strstr(p1 + 1, "HTTP/1.1 200 OK"));
    }
}
END_TEST

/* ---- startup errors ---- */

static int run_expect_exit(const char *log, const char *a1, const char *a2, const char *a3,
                           const char *a4)
{
    char bin[512];
    int st = 0, fd;
    pid_t pid;

    snprintf(bin, sizeof(bin), "%s/hybridmoe-server", builddir());
    fd = open(log, O_CREAT | O_TRUNC | O_WRONLY, 0644);
    pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        dup2(fd, 2);
        dup2(fd, 1);
        execl(bin, bin, "--port", "0", a1, a2, a3, a4, (char *)NULL);
        _exit(127);
    }
    close(fd);
    for (int i = 0; i < 1000; i++) {
        if (waitpid(pid, &st, WNOHANG) == pid)
            return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
        sleep_ms(10);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return -2;
}

static bool log_has(const char *log, const char *needle)
{
    char buf[8192];
    FILE *f = fopen(log, "r");
    size_t n = f ? fread(buf, 1, sizeof(buf) - 1, f) : 0;

    if (f)
        fclose(f);
    buf[n] = '\0';
    return strstr(buf, needle) != NULL;
}

START_TEST(startup_errors)
{
    char log[64], model[512];

    snprintf(log, sizeof(log), "/tmp/hm-check-start-%d.log", (int)getpid());
    snprintf(model, sizeof(model), "%s/models/tiny.gguf", builddir());
    ck_assert_int_eq(run_expect_exit(log, "--model", model, "--max_running", "lots"), 78);
    ck_assert(log_has(log, "'max_running'"));
    ck_assert_int_eq(run_expect_exit(log, "--model", model, "--kv_budget=12Q", NULL), 78);
    ck_assert(log_has(log, "'kv_budget'"));
    ck_assert_int_eq(run_expect_exit(log, "--model", "/nonexistent/model.gguf", NULL, NULL), 78);
    ck_assert(log_has(log, "cannot load model '/nonexistent/model.gguf'"));
    ck_assert_int_eq(run_expect_exit(log, "--model", "/etc/hostname", NULL, NULL), 78);
    ck_assert(log_has(log, "cannot load model"));
    ck_assert_int_eq(run_expect_exit(log, "--model", model, "--host", "localhost"), 78);
    ck_assert(log_has(log, "option 'host'"));
    ck_assert_int_eq(run_expect_exit(log, "--help", NULL, NULL, NULL), 0);
    ck_assert(log_has(log, "--config FILE"));
    unlink(log);
}
END_TEST

/* ---- shutdown -------------------------------------------------------------------------- */

START_TEST(sigterm_drains)
{
    char buf[65536];
    int st = 0;
    int a;

    /* started here, not in a fixture: this process must be its parent to reap it */
    server_start("--debug_step_delay_ms", "10", NULL);
    a = send_request("POST", "/v1/completions", NULL,
                         "{\"prompt\":\"a\",\"max_tokens\":120,\"ignore_eos\":true,"
                         "\"stream\":true}");

    read_until(a, "data: ", buf, sizeof(buf));
    kill(srv_pid, SIGTERM);
    /* the in-flight stream finishes normally */
    size_t n = strlen(buf);
    while (n + 1 < sizeof(buf)) {
        ssize_t r = recv(a, buf + n, sizeof(buf) - n - 1, 0);
        if (r <= 0)
            break;
        n += (size_t)r;
        buf[n] = '\0';
    }
    close(a);
    ck_assert_ptr_nonnull(strstr(buf, "\"finish_reason\":\"length\""));
    ck_assert_ptr_nonnull(strstr(buf, "data: [DONE]"));
    /* new connections are refused while draining or after exit */
    int fd = connect_port(srv_port);
    if (fd >= 0) {
        struct resp r;
        send_all(fd, "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 53);
        size_t len;
        char *raw = read_all(fd, &len);
        if (len) {
            parse_response(raw, len, &r);
            ck_assert_int_eq(r.status, 503);
            resp_free(&r);
        }
        free(raw);
        close(fd);
    }
    ck_assert_int_eq(waitpid(srv_pid, &st, 0), srv_pid);
    srv_pid = 0;
    ck_assert(WIFEXITED(st));
    ck_assert_int_eq(WEXITSTATUS(st), 0);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("server_http");
    TCase *tc = tcase_create("core");
    tcase_add_unchecked_fixture(tc, setup_default, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, health_models);
    tcase_add_test(tc, completion_shape_and_usage);
    tcase_add_test(tc, chat_shape);
    tcase_add_test(tc, tokenize_detokenize);
    tcase_add_test(tc, metrics_names);
    tcase_add_test(tc, stream_chat_framing);
    tcase_add_test(tc, stream_completion_utf8_holdback);
    tcase_add_test(tc, stream_bytes_exact);
    tcase_add_test(tc, stop_across_tokens);
    tcase_add_test(tc, n_and_logprobs);
    tcase_add_test(tc, sampling_params_accepted);
    tcase_add_test(tc, concurrent_equals_alone);
    tcase_add_test(tc, disconnect_frees_slot);
    tcase_add_test(tc, request_timeout);
    tcase_add_test(tc, keepalive_many_requests);
    tcase_add_test(tc, head_and_options);
    tcase_add_test(tc, metrics_exposition);
    tcase_add_test(tc, stream_n_choices);
    tcase_add_test(tc, prompt_list_indices);
    tcase_add_test(tc, logprobs_shapes);
    tcase_add_test(tc, max_tokens_default_fits);
    tcase_add_test(tc, ignore_eos);
    tcase_add_test(tc, nul_in_text);
    tcase_add_test(tc, echo_and_prompt_logprobs);
    suite_add_tcase(s, tc);

    tc = tcase_create("errors");
    tcase_add_unchecked_fixture(tc, setup_default, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, bad_inputs);
    tcase_add_test(tc, body_limit_413);
    suite_add_tcase(s, tc);

    tc = tcase_create("auth");
    tcase_add_unchecked_fixture(tc, setup_auth, teardown);
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, api_key);
    tcase_add_test(tc, cors_preflight);
    suite_add_tcase(s, tc);

    tc = tcase_create("limits");
    tcase_add_unchecked_fixture(tc, setup_small, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, full_queue_503);
    tcase_add_test(tc, nonstream_disconnect);
    suite_add_tcase(s, tc);

    tc = tcase_create("startup");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, startup_errors);
    suite_add_tcase(s, tc);

    tc = tcase_create("keepalive");
    tcase_add_unchecked_fixture(tc, setup_small, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, keepalive_while_queued);
    suite_add_tcase(s, tc);

    tc = tcase_create("shutdown");
    tcase_add_checked_fixture(tc, NULL, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, sigterm_drains);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    return hm_test_run(suite(), CK_NORMAL);
}
