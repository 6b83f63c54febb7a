/*
 * cmd_perplexity.c - `hybridmoe perplexity`: perplexity and bits per byte over a text file.
 *
 * The whole file is tokenized once (BOS first if the tokenizer asks for it) and split into
 * consecutive windows of --ctx tokens (the last may be shorter; one of a single token is
 * dropped). Each window is an independent sequence; every token after the first of a
 * window is scored with -ln p(token | the window's earlier tokens). --batch windows run
 * as the items of one engine step, each advancing by a chunk of its tokens per step, so
 * that the logits buffer stays bounded (V floats per token row).
 *
 *   perplexity    = exp(sum of NLL / tokens scored)
 *   bits per byte = sum of NLL / ln 2 / bytes of the scored tokens (spec 12.1 bytes)
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hm/alloc.h"
#include "hm/engine.h"
#include "hm/err.h"
#include "hm/model.h"
#include "hm/tokenizer.h"

#include "cmd.h"

#define PROG "hybridmoe perplexity"
#define LOGITS_BUDGET (UINT64_C(128) << 20) /* bytes of logits per step */

/* Usage error: message, the usage text, exit status 2. */
#define bad_usage(fmt, arg) hm_cmd_usage_error("perplexity", (fmt), (arg))

static void progress(bool on, uint64_t done, uint64_t total, double t0)
{
    enum { WIDTH = 40 };
    char bar[WIDTH + 1];
    if (!on || total == 0)
        return;
    unsigned fill = (unsigned)(done * WIDTH / total);
    for (unsigned i = 0; i < WIDTH; i++)
        bar[i] = i < fill ? '#' : '.';
    bar[WIDTH] = '\0';
    double dt = hm_cmd_now() - t0;
    fprintf(stderr, "\r[%s] %3u%% %" PRIu64 "/%" PRIu64 " tokens, %.1f tokens/s", bar,
            (unsigned)(done * 100 / total), done, total, dt > 0 ? (double)done / dt : 0.0);
    fflush(stderr);
}

struct win {
    struct hm_session *s;
    const int32_t *tok; /* borrowed from the file's ids */
    uint32_t len;
};

int hm_cmd_perplexity(int argc, char **argv)
{
    enum { OPT_STATIC = 256, OPT_NO_PROGRESS };
    static const struct option longopts[] = {
        {"model", required_argument, NULL, 'm'},
        {"file", required_argument, NULL, 'f'},
        {"ctx", required_argument, NULL, 'c'},
        {"batch", required_argument, NULL, 'b'},
        {"threads", required_argument, NULL, 't'},
        {"static", no_argument, NULL, OPT_STATIC},
        {"no-progress", no_argument, NULL, OPT_NO_PROGRESS},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *model_path = NULL, *text_path = NULL;
    uint64_t ctx = 0, batch = 4, n_threads = 0;
    bool force_static = false, show_progress = true;
    struct hm_engine_opts eo = hm_engine_opts_default();
    struct hm_errmsg em = {{0}};
    struct hm_model *m = NULL;
    struct hm_engine *e = NULL;
    char *text = NULL;
    size_t text_len = 0, n_ids = 0;
    int32_t *ids = NULL;
    float *logits = NULL;
    struct win *wins = NULL;
    struct hm_step_item *items = NULL;
    uint32_t *item_win = NULL, *pos0 = NULL;
    size_t n_win = 0;
    int ret = 1, rc, c;

    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":m:f:c:b:t:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'm':
            model_path = optarg;
            break;
        case 'f':
            text_path = optarg;
            break;
        case 'c':
            if (hm_cmd_parse_u64_max(optarg, UINT32_MAX, &ctx) < 0 || ctx < 2)
                return bad_usage("--ctx: '%s' is not a window of at least 2 tokens", optarg);
            break;
        case 'b':
            if (hm_cmd_parse_u64_max(optarg, 4096, &batch) < 0 || batch == 0)
                return bad_usage("--batch: '%s' is not a count (1..4096)", optarg);
            break;
        case 't':
            if (hm_cmd_parse_u64_max(optarg, 1024, &n_threads) < 0 || n_threads == 0)
                return bad_usage("--threads: '%s' is not a thread count (1..1024)", optarg);
            break;
        case OPT_STATIC:
            force_static = true;
            break;
        case OPT_NO_PROGRESS:
            show_progress = false;
            break;
        case 'h':
            hm_cmd_print_usage("perplexity", stdout);
            return 0;
        default:
            return hm_cmd_bad_option("perplexity", c, argv);
        }
    }
    if (optind < argc)
        return bad_usage("unexpected argument '%s'", argv[optind]);
    if (model_path == NULL)
        return bad_usage("%s", "a model is required (-m MODEL)");
    if (text_path == NULL)
        return bad_usage("%s", "a text file is required (-f FILE)");
    if (!isatty(STDERR_FILENO))
        show_progress = false;

    rc = hm_cmd_read_file(text_path, 0, &text, &text_len);
    if (rc < 0) {
        fprintf(stderr, PROG ": cannot read '%s': %s\n", text_path,
                rc == HM_ENOMEM ? "out of memory" : strerror(errno));
        goto out;
    }
    if (hm_cmd_load_model(PROG, model_path, &m) < 0)
        goto out;
    const uint32_t V = m->hp.n_vocab;
    if (ctx == 0)
        ctx = m->hp.n_ctx < 512 ? m->hp.n_ctx : 512;
    if (ctx > m->hp.n_ctx) {
        fprintf(stderr,
                PROG ": --ctx %" PRIu64 " is larger than the model's context (%" PRIu32 ")\n", ctx,
                m->hp.n_ctx);
        goto out;
    }
    rc = hm_tokenizer_encode(m->tok, text, text_len, HM_TOK_ADD_BOS, &ids, &n_ids);
    if (rc < 0) {
        fprintf(stderr, PROG ": cannot tokenize '%s' (%s)\n", text_path, hm_strerror(rc));
        goto out;
    }

    /* windows */
    n_win = (n_ids + ctx - 1) / ctx;
    if (n_win > 0 && n_ids - (n_win - 1) * ctx < 2)
        n_win--; /* a last window of one token scores nothing */
    if (n_win == 0) {
        fprintf(stderr, PROG ": '%s' has %zu tokens; at least 2 are needed\n", text_path, n_ids);
        goto out;
    }
    wins = hm_calloc(n_win, sizeof *wins);
    if (wins == NULL)
        goto oom;
    uint64_t to_score = 0;
    for (size_t i = 0; i < n_win; i++) {
        size_t start = i * ctx, len = n_ids - start < ctx ? n_ids - start : ctx;
        wins[i].tok = ids + start;
        wins[i].len = (uint32_t)len;
        to_score += len - 1;
    }

    eo.n_threads = (unsigned)n_threads;
    eo.force_static = force_static;
    if (eo.max_step_items > 0 && batch > eo.max_step_items)
        batch = eo.max_step_items;
    rc = hm_engine_new(m, &eo, &e);
    if (rc < 0) {
        fprintf(stderr, PROG ": cannot create the engine (%s)\n", hm_strerror(rc));
        goto out;
    }
    /* tokens per item per step: bounded by the engine and by the logits budget */
    uint64_t per_step = eo.max_step_tokens ? eo.max_step_tokens : 1;
    uint64_t budget_rows = LOGITS_BUDGET / ((uint64_t)V * sizeof(float));
    if (per_step > budget_rows)
        per_step = budget_rows;
    uint32_t chunk = (uint32_t)(per_step / batch);
    if (chunk == 0) {
        chunk = 1;
        batch = per_step ? per_step : 1;
    }
    logits = hm_mallocarray((size_t)batch * chunk * V, sizeof *logits);
    items = hm_calloc(batch, sizeof *items);
    item_win = hm_calloc(batch, sizeof *item_win);
    pos0 = hm_calloc(batch, sizeof *pos0);
    if (logits == NULL || items == NULL || item_win == NULL || pos0 == NULL)
        goto oom;

    double nll = 0.0, t0 = hm_cmd_now();
    uint64_t scored = 0, bytes = 0;
    struct hm_session_opts so = hm_session_opts_default();
    so.max_tokens = 0;
    so.force_static = force_static;
    progress(show_progress, 0, to_score, t0);
    for (size_t w0 = 0; w0 < n_win; w0 += batch) {
        size_t nb = n_win - w0 < batch ? n_win - w0 : batch;
        for (size_t i = 0; i < nb; i++) {
            struct win *w = &wins[w0 + i];
            rc = hm_session_new(m, w->tok, w->len, &so, &w->s, &em);
            if (rc < 0) {
                fprintf(stderr, PROG ": %s (%s)\n", em.text[0] ? em.text : "session",
                        hm_strerror(rc));
                goto out;
            }
        }
        for (;;) {
            size_t n_items = 0;
            for (size_t i = 0; i < nb; i++) {
                struct win *w = &wins[w0 + i];
                uint32_t past = hm_session_n_past(w->s);
                if (past >= w->len)
                    continue;
                uint32_t n = w->len - past < chunk ? w->len - past : chunk;
                items[n_items] =
                    (struct hm_step_item){.s = w->s,
                                          .n_tokens = n,
                                          .all_logits = true,
                                          .logits = logits + n_items * (size_t)chunk * V};
                item_win[n_items] = (uint32_t)(w0 + i);
                n_items++;
            }
            if (n_items == 0)
                break;
            for (size_t k = 0; k < n_items; k++)
                pos0[k] = hm_session_n_past(items[k].s);
            rc = hm_engine_step(e, items, n_items);
            if (rc < 0) {
                fprintf(stderr, "\n" PROG ": step failed (%s)\n", hm_strerror(rc));
                goto out;
            }
            for (size_t k = 0; k < n_items; k++) {
                const struct win *w = &wins[item_win[k]];
                for (uint32_t r = 0; r < items[k].n_tokens; r++) {
                    uint32_t next = pos0[k] + r + 1; /* position predicted by this row */
                    if (next >= w->len)
                        break;
                    const float *l = items[k].logits + (size_t)r * V;
                    float mx = l[0];
                    for (uint32_t v = 1; v < V; v++)
                        mx = l[v] > mx ? l[v] : mx;
                    double sum = 0.0;
                    for (uint32_t v = 0; v < V; v++)
                        sum += exp((double)l[v] - (double)mx);
                    nll += (double)mx + log(sum) - (double)l[w->tok[next]];
                    size_t blen;
                    (void)hm_tokenizer_token_bytes(m->tok, w->tok[next], &blen);
                    bytes += blen;
                    scored++;
                }
            }
            progress(show_progress, scored, to_score, t0);
        }
        for (size_t i = 0; i < nb; i++) {
            hm_session_free(wins[w0 + i].s);
            wins[w0 + i].s = NULL;
        }
    }
    double dt = hm_cmd_now() - t0;
    if (show_progress)
        fputc('\n', stderr);

    printf("windows %zu of at most %" PRIu64 " tokens, batch %" PRIu64 "\n", n_win, ctx, batch);
    printf("tokens scored %" PRIu64 ", bytes %" PRIu64 ", %.1f tokens/s\n", scored, bytes,
           dt > 0 ? (double)(scored + n_win) / dt : 0.0);
    printf("perplexity %.4f\n", exp(nll / (double)scored));
    if (bytes > 0)
        printf("bits per byte %.4f\n", nll / log(2.0) / (double)bytes);
    ret = 0;
    goto out;
oom:
    fprintf(stderr, PROG ": out of memory\n");
out:
    if (wins != NULL) {
        for (size_t i = 0; i < n_win; i++)
            hm_session_free(wins[i].s);
    }
    hm_free(wins);
    hm_free(items);
    hm_free(item_win);
    hm_free(pos0);
    hm_free(logits);
    hm_engine_free(e);
    hm_free(ids);
    hm_model_free(m);
    hm_free(text);
    return ret;
}
