/*
 * config.c - the option table and its three readers: defaults, the config file
 * (`key value` lines, redis.conf style) and command-line flags.
 *
 * Every option is one row of options[]: name, type, bounds, default (as text, parsed
 * by the same code as the file) and a help line. etc/hybridmoe.conf and docs/config.md
 * list the same rows; tests/check_server_config.c checks that the three agree.
 */
#include "conf.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "hm/alloc.h"
#include "hm/buf.h"

#ifndef HM_DATADIR
#define HM_DATADIR "/usr/local/share/hybridmoe"
#endif

#define OPT(name, type, min, max, def, help) \
    { #name, HM_OPT_##type, offsetof(struct hm_config, name), (min), (max), (def), (help) }

static const struct hm_config_option options[] = {
    OPT(host, STR, 0, 0, "127.0.0.1", "listen address (numeric IPv4 or IPv6)"),
    OPT(port, UINT, 0, 65535, "8080", "TCP port; 0 = any free port (logged at startup)"),
    OPT(model, STR, 0, 0, HM_DATADIR "/default.gguf", "path of the GGUF model to serve"),
    OPT(model_name, STR, 0, 0, "", "model id shown by /v1/models; empty = the file's base name"),
    OPT(threads, UINT, 0, 256, "0", "engine compute threads; 0 = one per core"),
    OPT(max_running, UINT, 1, 1024, "8", "most sequences decoding at once"),
    OPT(step_tokens, UINT, 1, 65536, "256", "token budget of one engine step (prefill chunks)"),
    OPT(queue_size, UINT, 0, 100000, "64", "requests waiting for admission; more get 503"),
    OPT(kv_budget, BYTES, 1024, UINT64_MAX / 2, "1G", "KV-cache bytes of all running sequences"),
    OPT(body_limit, BYTES, 1024, 1ull << 30, "1M", "largest request body in bytes (413 above)"),
    OPT(header_limit, BYTES, 4096, 1ull << 20, "64K",
        "per-connection memory for request headers (431 above about half of it)"),
    OPT(max_connections, UINT, 1, 1000000, "256", "open HTTP connections at most"),
    OPT(per_ip_connections, UINT, 0, 1000000, "0", "connections per client IP; 0 = no limit"),
    OPT(idle_timeout, UINT, 1, 86400, "30", "seconds an idle connection stays open"),
    OPT(header_timeout, UINT, 1, 86400, "10",
        "seconds a client may take to send a request's headers (slow clients are cut)"),
    OPT(body_timeout, UINT, 1, 86400, "30",
        "seconds a client may take to send a request's body once its headers are in"),
    OPT(request_timeout, UINT, 0, 86400, "600",
        "seconds a generation request may take; 0 = no limit (requests may set timeout_s)"),
    OPT(drain_timeout, UINT, 0, 86400, "30",
        "seconds to finish in-flight requests after SIGTERM before cancelling them"),
    OPT(keepalive_interval, UINT, 1, 3600, "10",
        "seconds between SSE keep-alive comments while a stream waits"),
    OPT(api_key, STR, 0, 0, "", "require Authorization: Bearer KEY; empty = no key"),
    OPT(metrics_auth, BOOL, 0, 0, "yes", "whether /metrics needs the API key too"),
    OPT(cors_origin, STR, 0, 0, "",
        "CORS: Access-Control-Allow-Origin for browser clients (\"*\" or an origin); empty = off"),
    OPT(log_level, LOGLEVEL, 0, 0, "info", "error, warn, info or debug"),
    OPT(default_max_tokens, UINT, 1, 1 << 24, "256",
        "max_tokens when a request gives none (capped by the context)"),
    OPT(max_n, UINT, 1, 128, "8", "largest n (choices) per request"),
    OPT(deterministic, BOOL, 0, 0, "yes",
        "batch-invariant kernels: the same answer whatever runs alongside"),
    OPT(debug_step_delay_ms, UINT, 0, 10000, "0",
        "testing only: sleep this long after every engine step (slows generation down)"),
    { NULL, 0, 0, 0, 0, NULL, NULL },
};

const struct hm_config_option *hm_config_options(void)
{
    return options;
}

int hm_parse_bytes(const char *s, uint64_t *out)
{
    char *end;
    unsigned long long v;
    uint64_t mul = 1;

    if (!s || *s < '0' || *s > '9')
        return HM_EINVAL;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno)
        return HM_ERANGE;
    switch (*end) {
    case 'k': case 'K': mul = 1ull << 10; end++; break;
    case 'm': case 'M': mul = 1ull << 20; end++; break;
    case 'g': case 'G': mul = 1ull << 30; end++; break;
    case 't': case 'T': mul = 1ull << 40; end++; break;
    default: break;
    }
    if (*end == 'B' || *end == 'b')
        end++;
    if (*end)
        return HM_EINVAL;
    if (v > UINT64_MAX / mul)
        return HM_ERANGE;
    *out = v * mul;
    return HM_OK;
}

static const struct hm_config_option *find_option(const char *key, size_t len)
{
    for (const struct hm_config_option *o = options; o->name; o++) {
        size_t i;
        if (strlen(o->name) != len)
            continue;
        for (i = 0; i < len; i++) {
            char k = key[i] == '-' ? '_' : key[i];
            if (k != o->name[i])
                break;
        }
        if (i == len)
            return o;
    }
    return NULL;
}

static int set_option(struct hm_config *c, const struct hm_config_option *o, const char *value,
                      struct hm_errmsg *em)
{
    char *base = (char *)c + o->offset;

    switch (o->type) {
    case HM_OPT_STR: {
        char *dup = hm_strdup(value);
        if (!dup)
            return hm_errmsg_set(em, HM_ENOMEM, "option '%s': out of memory", o->name);
        hm_free(*(char **)base);
        *(char **)base = dup;
        return HM_OK;
    }
    case HM_OPT_UINT: {
        char *end;
        unsigned long long v;
        if (*value < '0' || *value > '9')
            goto bad_int;
        errno = 0;
        v = strtoull(value, &end, 10);
        if (errno || *end)
            goto bad_int;
        if (v < o->min || v > o->max)
            return hm_errmsg_set(em, HM_EINVAL,
                                 "option '%s': value '%s' out of range [%llu, %llu]", o->name,
                                 value, (unsigned long long)o->min, (unsigned long long)o->max);
        *(unsigned *)base = (unsigned)v;
        return HM_OK;
    bad_int:
        return hm_errmsg_set(em, HM_EINVAL, "option '%s': '%s' is not a non-negative integer",
                             o->name, value);
    }
    case HM_OPT_BYTES: {
        uint64_t v;
        if (hm_parse_bytes(value, &v) < 0)
            return hm_errmsg_set(em, HM_EINVAL,
                                 "option '%s': '%s' is not a size (examples: 65536, 64K, 4G)",
                                 o->name, value);
        if (v < o->min || v > o->max)
            return hm_errmsg_set(em, HM_EINVAL,
                                 "option '%s': value '%s' out of range [%llu, %llu] bytes",
                                 o->name, value, (unsigned long long)o->min,
                                 (unsigned long long)o->max);
        *(uint64_t *)base = v;
        return HM_OK;
    }
    case HM_OPT_BOOL:
        if (!strcmp(value, "yes") || !strcmp(value, "true") || !strcmp(value, "1") ||
            !strcmp(value, "on")) {
            *(bool *)base = true;
            return HM_OK;
        }
        if (!strcmp(value, "no") || !strcmp(value, "false") || !strcmp(value, "0") ||
            !strcmp(value, "off")) {
            *(bool *)base = false;
            return HM_OK;
        }
        return hm_errmsg_set(em, HM_EINVAL, "option '%s': '%s' is not yes or no", o->name,
                             value);
    case HM_OPT_LOGLEVEL: {
        static const char *const names[] = { "error", "warn", "info", "debug" };
        for (unsigned i = 0; i < 4; i++) {
            if (!strcmp(value, names[i])) {
                *(enum hm_log_level *)base = (enum hm_log_level)i;
                return HM_OK;
            }
        }
        return hm_errmsg_set(em, HM_EINVAL,
                             "option '%s': '%s' is not one of error, warn, info, debug",
                             o->name, value);
    }
    }
    HM_BUG("unknown option type");
}

int hm_config_set(struct hm_config *c, const char *key, const char *value, struct hm_errmsg *em)
{
    const struct hm_config_option *o = find_option(key, strlen(key));

    if (!o)
        return hm_errmsg_set(em, HM_ENOENT, "unknown option '%s'", key);
    return set_option(c, o, value, em);
}

void hm_config_free(struct hm_config *c)
{
    if (!c)
        return;
    for (const struct hm_config_option *o = options; o->name; o++)
        if (o->type == HM_OPT_STR)
            hm_free(*(char **)((char *)c + o->offset));
    hm_free(c);
}

int hm_config_new(struct hm_config **out)
{
    struct hm_config *c = hm_calloc(1, sizeof(*c));
    int rc = HM_ENOMEM;

    if (!c)
        goto out;
    for (const struct hm_config_option *o = options; o->name; o++) {
        rc = set_option(c, o, o->def, NULL);
        if (rc < 0)
            goto out;
    }
    rc = HM_OK;
out:
    if (rc < 0) {
        hm_config_free(c);
        c = NULL;
    }
    *out = c;
    return rc;
}

static bool is_space(char ch)
{
    return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n';
}

/* Reads one line (its '\n' dropped) into line[cap]. Returns 1 for a line, 0 at the end of
 * the file, HM_ERANGE for a line of cap bytes or more (the rest is not read), HM_EINVAL for
 * a line holding a NUL byte (fgets() could not tell it from the end of the text). */
static int read_line(FILE *f, char *line, size_t cap)
{
    size_t n = 0;
    bool nul = false;
    int ch;

    while ((ch = getc(f)) != EOF && ch != '\n') {
        if (n + 1 >= cap)
            return HM_ERANGE;
        if (ch == '\0')
            nul = true;
        line[n++] = (char)ch;
    }
    line[n] = '\0';
    if (ch == EOF && n == 0 && !nul)
        return 0;
    return nul ? HM_EINVAL : 1;
}

int hm_config_load_file(struct hm_config *c, const char *path, struct hm_errmsg *em)
{
    FILE *f = fopen(path, "r");
    char line[4096];
    unsigned lineno = 0;
    int rc = HM_OK, got;

    if (!f)
        return hm_errmsg_set(em, HM_EIO, "cannot open config file '%s': %s", path,
                             strerror(errno));
    while ((got = read_line(f, line, sizeof(line))) != 0) {
        char *p = line, *key, *val, *end;
        struct hm_errmsg sub = { { 0 } };
        const struct hm_config_option *o;

        lineno++;
        if (got == HM_ERANGE) {
            rc = hm_errmsg_set(em, HM_EINVAL, "%s:%u: line too long", path, lineno);
            goto out;
        }
        if (got == HM_EINVAL) {
            rc = hm_errmsg_set(em, HM_EINVAL, "%s:%u: NUL byte in the line (not a text file?)",
                               path, lineno);
            goto out;
        }
        while (is_space(*p))
            p++;
        if (!*p || *p == '#')
            continue;
        key = p;
        while (*p && !is_space(*p))
            p++;
        if (*p)
            *p++ = '\0';
        while (*p == ' ' || *p == '\t')
            p++;
        val = p;
        end = val + strlen(val);
        while (end > val && is_space(end[-1]))
            *--end = '\0';
        /* "quoted values" may hold spaces or be empty */
        if (end - val >= 2 && val[0] == '"' && end[-1] == '"') {
            end[-1] = '\0';
            val++;
        }
        o = find_option(key, strlen(key));
        if (!o) {
            rc = hm_errmsg_set(em, HM_EINVAL, "%s:%u: unknown option '%s'", path, lineno, key);
            goto out;
        }
        rc = set_option(c, o, val, &sub);
        if (rc < 0) {
            hm_errmsg_set(em, rc, "%s:%u: %s", path, lineno, sub.text);
            goto out;
        }
    }
    if (ferror(f))
        rc = hm_errmsg_set(em, HM_EIO, "cannot read config file '%s'", path);
out:
    fclose(f);
    return rc;
}

/* Splits "--key=value" / "--key value"; returns the number of argv entries used. */
static int split_flag(int argc, char **argv, int i, const char **key, size_t *klen,
                      const char **val)
{
    const char *a = argv[i] + 2;
    const char *eq = strchr(a, '=');

    *key = a;
    if (eq) {
        *klen = (size_t)(eq - a);
        *val = eq + 1;
        return 1;
    }
    *klen = strlen(a);
    *val = i + 1 < argc ? argv[i + 1] : NULL;
    return 2;
}

int hm_config_from_args(int argc, char **argv, bool *want_help, bool *want_version,
                        struct hm_config **out, struct hm_errmsg *em)
{
    struct hm_config *c = NULL;
    int rc;

    *want_help = false;
    *want_version = false;
    rc = hm_config_new(&c);
    if (rc < 0) {
        hm_errmsg_set(em, rc, "out of memory");
        goto out;
    }
    /* pass 1: --help, --version, --config; pass 2: every other flag (flags override
     * the file whatever their position) */
    for (int pass = 1; pass <= 2; pass++) {
        for (int i = 1; i < argc;) {
            const char *key, *val;
            size_t klen;
            int used;

            if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
                *want_help = true;
                rc = HM_OK;
                goto out;
            }
            if (!strcmp(argv[i], "--version") || !strcmp(argv[i], "-V")) {
                *want_version = true;
                rc = HM_OK;
                goto out;
            }
            if (strncmp(argv[i], "--", 2) || !argv[i][2]) {
                rc = hm_errmsg_set(em, HM_EINVAL, "unexpected argument '%s' (see --help)",
                                   argv[i]);
                goto out;
            }
            used = split_flag(argc, argv, i, &key, &klen, &val);
            if (!val) {
                rc = hm_errmsg_set(em, HM_EINVAL, "option '--%s' needs a value", key);
                goto out;
            }
            if (klen == 6 && !strncmp(key, "config", 6)) {
                if (pass == 1) {
                    rc = hm_config_load_file(c, val, em);
                    if (rc < 0)
                        goto out;
                }
            } else if (pass == 2) {
                const struct hm_config_option *o = find_option(key, klen);
                if (!o) {
                    rc = hm_errmsg_set(em, HM_EINVAL, "unknown option '--%.*s' (see --help)",
                                       (int)klen, key);
                    goto out;
                }
                rc = set_option(c, o, val, em);
                if (rc < 0)
                    goto out;
            }
            i += used;
        }
    }
    rc = HM_OK;
out:
    if (rc < 0) {
        hm_config_free(c);
        c = NULL;
    }
    *out = c;
    return rc;
}

void hm_config_usage(FILE *f, const char *prog)
{
    fprintf(f,
            "Usage: %s [--config FILE] [--model PATH] [--host ADDR] [--port N] [--OPTION VALUE]...\n"
            "\n"
            "Serves a HybridMoE GGUF model over an OpenAI-compatible HTTP API.\n"
            "Options (also valid as `OPTION VALUE` lines in the config file; flags override\n"
            "the file; --key=value works too):\n"
            "  --config FILE                read options from FILE first\n"
            "  --help, --version\n",
            prog);
    for (const struct hm_config_option *o = options; o->name; o++) {
        char left[64];
        snprintf(left, sizeof(left), "--%s %s", o->name,
                 o->type == HM_OPT_STR ? "STR" : o->type == HM_OPT_BOOL ? "yes|no"
                 : o->type == HM_OPT_BYTES ? "SIZE" : o->type == HM_OPT_LOGLEVEL ? "LEVEL"
                 : "N");
        fprintf(f, "  %-28s %s (default: \"%s\")\n", left, o->help, o->def);
    }
    fprintf(f, "\nExit status: 0 after a clean shutdown, 78 for a bad option or model, "
               "1 otherwise.\n");
}
