/*
 * conf.h - hybridmoe-server options: one table drives the config file, the
 * command-line flags and --help (redis config.c style).
 *
 *     struct hm_config *c;
 *     struct hm_errmsg em = {0};
 *     if (hm_config_from_args(argc, argv, &c, &em) < 0) { fputs(em.text, stderr); exit(78); }
 *     ... c->port, c->model ...
 *     hm_config_free(c);
 *
 * Order: table defaults, then the file named by --config (if any), then every other
 * flag (`--key value` or `--key=value`; `-` and `_` are interchangeable in flag names).
 * A bad value or an unknown key names the option and stops startup (exit code 78).
 *
 * Threads: a struct hm_config is immutable once built; read it from any thread.
 */
#ifndef HM_SERVER_CONF_H
#define HM_SERVER_CONF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "hm/err.h"

#define HM_EX_CONFIG 78 /* sysexits.h EX_CONFIG */

enum hm_log_level { HM_LOG_ERROR = 0, HM_LOG_WARN, HM_LOG_INFO, HM_LOG_DEBUG };

struct hm_config {
    char *host;              /* listen address (numeric IPv4 or IPv6) */
    unsigned port;
    char *model;             /* GGUF path */
    char *model_name;        /* id in /v1/models; "" = the model file's base name */
    unsigned threads;        /* engine compute threads; 0 = cores */
    unsigned max_running;    /* sequences in the running batch */
    unsigned step_tokens;    /* tokens per engine step (prefill chunk budget) */
    unsigned queue_size;     /* requests waiting for admission */
    uint64_t kv_budget;      /* bytes of KV cache over all running sequences */
    uint64_t body_limit;     /* bytes */
    uint64_t header_limit;   /* bytes (MHD per-connection memory limit) */
    unsigned max_connections;
    unsigned per_ip_connections; /* 0 = unlimited */
    unsigned idle_timeout;   /* seconds of inactivity before MHD closes a connection */
    unsigned header_timeout; /* seconds to receive a request's line and headers */
    unsigned body_timeout;   /* seconds to receive a request's body after its headers */
    unsigned request_timeout;/* seconds per generation request; 0 = none */
    unsigned drain_timeout;  /* seconds to finish in-flight requests on SIGTERM */
    unsigned keepalive_interval; /* seconds between SSE keep-alive comments */
    char *api_key;           /* "" = no authentication */
    bool metrics_auth;       /* /metrics needs the API key too */
    char *cors_origin;       /* Access-Control-Allow-Origin value; "" = no CORS headers */
    enum hm_log_level log_level;
    unsigned default_max_tokens;
    unsigned max_n;          /* largest n per request */
    bool deterministic;      /* batch-invariant matmuls (else BLAS where faster) */
    unsigned debug_step_delay_ms; /* testing: pause after every engine step */
};

enum hm_opt_type { HM_OPT_STR, HM_OPT_UINT, HM_OPT_BYTES, HM_OPT_BOOL, HM_OPT_LOGLEVEL };

struct hm_config_option {
    const char *name;
    enum hm_opt_type type;
    size_t offset;           /* into struct hm_config */
    uint64_t min, max;       /* UINT and BYTES bounds (inclusive) */
    const char *def;         /* default, as written in the file */
    const char *help;        /* one line */
};

/* The table, terminated by a row with name == NULL. Borrowed, static. */
const struct hm_config_option *hm_config_options(void);

/* A config with every default. Returns owned; free with hm_config_free(). */
int hm_config_new(struct hm_config **out);
void hm_config_free(struct hm_config *c);

/* Sets one option from text (names with '-' or '_'). HM_ENOENT unknown key, HM_EINVAL
 * bad value; em names the option and the value. */
int hm_config_set(struct hm_config *c, const char *key, const char *value,
                  struct hm_errmsg *em);
/* Reads a `key value` file (# comments, blank lines). Errors say file:line. */
int hm_config_load_file(struct hm_config *c, const char *path, struct hm_errmsg *em);
/* Parses command-line flags; *want_help / *want_version set for --help / --version.
 * Returns owned config (NULL on failure). */
int hm_config_from_args(int argc, char **argv, bool *want_help, bool *want_version,
                        struct hm_config **out, struct hm_errmsg *em);
/* Writes --help text. */
void hm_config_usage(FILE *f, const char *prog);
/* Parses "4G", "512k", "100" (powers of 1024; k/K, m/M, g/G, t/T; optional trailing B). */
int hm_parse_bytes(const char *s, uint64_t *out);

#endif
