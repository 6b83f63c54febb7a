/*
 * cmd_generate.c - `hybridmoe generate`: continue a prompt with a model, streaming the text.
 *
 * The continuation goes to stdout as tokens arrive (complete UTF-8 characters only, through
 * hm_utf8_stream); statistics and errors go to stderr. With --logits-out every position of
 * the sequence (prompt and generated) gets one JSON line with the logits computed after
 * that token, floats printed with %.9g so that they read back bit-identical.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hm/alloc.h"
#include "hm/engine.h"
#include "hm/err.h"
#include "hm/model.h"
#include "hm/sampler.h"
#include "hm/tokenizer.h"

#include "cmd.h"

#define PROG "hybridmoe generate"

/* Usage error: message, the usage text, exit status 2. */
#define bad_usage(fmt, arg) hm_cmd_usage_error("generate", (fmt), (arg))

/* One JSON line: {"pos": t, "token": id, "logits": [...]}. */
static int write_logits(FILE *f, uint32_t pos, int32_t token, const float *logits, uint32_t V)
{
    fprintf(f, "{\"pos\": %" PRIu32 ", \"token\": %" PRId32 ", \"logits\": [", pos, token);
    for (uint32_t i = 0; i < V; i++)
        fprintf(f, i ? ", %.9g" : "%.9g", (double)logits[i]);
    fputs("]}\n", f);
    return ferror(f) ? -1 : 0;
}

static void emit(struct hm_utf8_stream *us, const uint8_t *b, size_t len)
{
    uint8_t out[3 * (64 + 4)];
    while (len > 0) { /* pieces of at most 64 bytes so that out is always big enough */
        size_t n = len < 64 ? len : 64;
        size_t k = hm_utf8_stream_push(us, b, n, out, sizeof out);
        fwrite(out, 1, k, stdout);
        b += n;
        len -= n;
    }
}

enum {
    OPT_TEMP = 256,
    OPT_TOP_P,
    OPT_TOP_K,
    OPT_MIN_P,
    OPT_SEED,
    OPT_COMPLEXITY,
    OPT_WINDOW,
    OPT_MAX_EXPERTS,
    OPT_ROUTER_THRESHOLD,
    OPT_STATIC,
    OPT_STATS,
    OPT_LOGITS_OUT,
};

int hm_cmd_generate(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"model", required_argument, NULL, 'm'},
        {"prompt", required_argument, NULL, 'p'},
        {"n-predict", required_argument, NULL, 'n'},
        {"threads", required_argument, NULL, 't'},
        {"temp", required_argument, NULL, OPT_TEMP},
        {"top-p", required_argument, NULL, OPT_TOP_P},
        {"top-k", required_argument, NULL, OPT_TOP_K},
        {"min-p", required_argument, NULL, OPT_MIN_P},
        {"seed", required_argument, NULL, OPT_SEED},
        {"complexity", required_argument, NULL, OPT_COMPLEXITY},
        {"window", required_argument, NULL, OPT_WINDOW},
        {"max-experts", required_argument, NULL, OPT_MAX_EXPERTS},
        {"router-threshold", required_argument, NULL, OPT_ROUTER_THRESHOLD},
        {"static", no_argument, NULL, OPT_STATIC},
        {"stats", no_argument, NULL, OPT_STATS},
        {"logits-out", required_argument, NULL, OPT_LOGITS_OUT},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *model_path = NULL, *prompt = NULL, *logits_path = NULL;
    uint64_t n_predict = 64, n_threads = 0, u;
    bool stats = false, force_static = false;
    struct hm_sampler_params sp = hm_sampler_params_default();
    struct hm_session_opts so = hm_session_opts_default();
    struct hm_engine_opts eo = hm_engine_opts_default();
    struct hm_errmsg em = {{0}};
    struct hm_model *m = NULL;
    struct hm_engine *e = NULL;
    struct hm_session *s = NULL;
    struct hm_sampler *sm = NULL;
    int32_t *ids = NULL;
    size_t n_ids = 0;
    float *logits = NULL;
    FILE *lf = NULL;
    int ret = 1, rc, c;

    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":m:p:n:t:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'm':
            model_path = optarg;
            break;
        case 'p':
            prompt = optarg;
            break;
        case 'n':
            if (hm_cmd_parse_u64_max(optarg, UINT32_MAX, &n_predict) < 0)
                return bad_usage("-n: '%s' is not a token count", optarg);
            break;
        case 't':
            if (hm_cmd_parse_u64_max(optarg, 1024, &n_threads) < 0 || n_threads == 0)
                return bad_usage("--threads: '%s' is not a thread count (1..1024)", optarg);
            break;
        case OPT_TEMP:
            if (hm_cmd_parse_float(optarg, &sp.temperature) < 0)
                return bad_usage("--temp: '%s' is not a number", optarg);
            break;
        case OPT_TOP_P:
            if (hm_cmd_parse_float(optarg, &sp.top_p) < 0)
                return bad_usage("--top-p: '%s' is not a number", optarg);
            break;
        case OPT_MIN_P:
            if (hm_cmd_parse_float(optarg, &sp.min_p) < 0)
                return bad_usage("--min-p: '%s' is not a number", optarg);
            break;
        case OPT_TOP_K:
            if (hm_cmd_parse_u64_max(optarg, INT32_MAX, &u) < 0)
                return bad_usage("--top-k: '%s' is not a count", optarg);
            sp.top_k = (int32_t)u;
            break;
        case OPT_SEED:
            if (hm_cmd_parse_u64_max(optarg, UINT64_MAX, &sp.seed) < 0)
                return bad_usage("--seed: '%s' is not an unsigned integer", optarg);
            break;
        case OPT_COMPLEXITY:
            if (hm_cmd_parse_float(optarg, &so.complexity) < 0 || so.complexity < 0.0f ||
                so.complexity > 1.0f)
                return bad_usage("--complexity: '%s' is not in [0, 1]", optarg);
            break;
        case OPT_WINDOW:
            if (hm_cmd_parse_u64_max(optarg, INT64_MAX, &u) < 0 || u == 0)
                return bad_usage("--window: '%s' is not a positive integer", optarg);
            so.window = (int64_t)u;
            break;
        case OPT_MAX_EXPERTS:
            if (hm_cmd_parse_u64_max(optarg, HM_MAX_EXPERTS, &u) < 0 || u == 0)
                return bad_usage("--max-experts: '%s' is not a positive count", optarg);
            so.max_experts = (uint32_t)u;
            break;
        case OPT_ROUTER_THRESHOLD:
            if (hm_cmd_parse_float(optarg, &so.router_threshold) < 0 ||
                so.router_threshold < 0.0f || so.router_threshold > 1.0f)
                return bad_usage("--router-threshold: '%s' is not in [0, 1]", optarg);
            break;
        case OPT_STATIC:
            force_static = true;
            break;
        case OPT_STATS:
            stats = true;
            break;
        case OPT_LOGITS_OUT:
            logits_path = optarg;
            break;
        case 'h':
            hm_cmd_print_usage("generate", stdout);
            return 0;
        default:
            return hm_cmd_bad_option("generate", c, argv);
        }
    }
    if (optind < argc)
        return bad_usage("unexpected argument '%s'", argv[optind]);
    if (model_path == NULL)
        return bad_usage("%s", "a model is required (-m MODEL)");
    if (prompt == NULL)
        return bad_usage("%s", "a prompt is required (-p TEXT)");

    /* sampler parameters first: their errors are usage errors */
    rc = hm_sampler_new(&sp, 1, &sm);
    if (rc < 0)
        return bad_usage("%s", "sampling parameters out of range (--temp [0,2], --top-p (0,1], "
                               "--min-p [0,1])");
    hm_sampler_free(sm);
    sm = NULL;

    if (hm_cmd_load_model(PROG, model_path, &m) < 0)
        goto out;
    const uint32_t V = m->hp.n_vocab;
    rc = hm_tokenizer_encode(m->tok, prompt, strlen(prompt), HM_TOK_ADD_BOS, &ids, &n_ids);
    if (rc < 0) {
        fprintf(stderr, PROG ": cannot tokenize the prompt (%s)\n", hm_strerror(rc));
        goto out;
    }
    if (n_ids == 0) {
        fprintf(stderr, PROG ": the prompt is empty\n");
        goto out;
    }
    if (n_ids > m->hp.n_ctx) {
        fprintf(stderr, PROG ": the prompt has %zu tokens, more than the context (%" PRIu32 ")\n",
                n_ids, m->hp.n_ctx);
        goto out;
    }
    if (n_ids + n_predict > m->hp.n_ctx) {
        n_predict = m->hp.n_ctx - n_ids;
        fprintf(stderr, PROG ": -n reduced to %" PRIu64 " to fit the context (%" PRIu32 ")\n",
                n_predict, m->hp.n_ctx);
    }

    eo.n_threads = (unsigned)n_threads;
    eo.force_static = force_static;
    rc = hm_engine_new(m, &eo, &e);
    if (rc < 0) {
        fprintf(stderr, PROG ": cannot create the engine (%s)\n", hm_strerror(rc));
        goto out;
    }
    so.max_tokens = (uint32_t)n_predict;
    so.trace = stats;
    so.force_static = force_static;
    rc = hm_session_new(m, ids, (uint32_t)n_ids, &so, &s, &em);
    if (rc < 0) {
        fprintf(stderr, PROG ": %s (%s)\n", em.text[0] ? em.text : "cannot start the session",
                hm_strerror(rc));
        goto out;
    }
    rc = hm_sampler_new(&sp, V, &sm);
    if (rc < 0) {
        fprintf(stderr, PROG ": cannot create the sampler (%s)\n", hm_strerror(rc));
        goto out;
    }

    /* prefill in chunks of at most max_step_tokens; with --logits-out every position's
     * logits are kept, else only the last. */
    uint32_t chunk = eo.max_step_tokens ? eo.max_step_tokens : 1;
    if (logits_path != NULL) {
        /* keep the buffer under 256 MiB */
        uint64_t cap = (UINT64_C(256) << 20) / ((uint64_t)V * sizeof(float));
        if (cap == 0)
            cap = 1;
        if (chunk > cap)
            chunk = (uint32_t)cap;
        lf = fopen(logits_path, "w");
        if (lf == NULL) {
            fprintf(stderr, PROG ": cannot open '%s': %s\n", logits_path, strerror(errno));
            goto out;
        }
    }
    logits = hm_mallocarray((size_t)(logits_path ? chunk : 1) * V, sizeof *logits);
    if (logits == NULL) {
        fprintf(stderr, PROG ": out of memory\n");
        goto out;
    }

    double t0 = hm_cmd_now();
    for (uint32_t done = 0; done < n_ids;) {
        uint32_t n = (uint32_t)n_ids - done < chunk ? (uint32_t)n_ids - done : chunk;
        struct hm_step_item it = {
            .s = s, .n_tokens = n, .all_logits = lf != NULL, .logits = logits};
        rc = hm_engine_step(e, &it, 1);
        if (rc < 0) {
            fprintf(stderr, PROG ": prefill failed (%s)\n", hm_strerror(rc));
            goto out;
        }
        if (lf != NULL) {
            for (uint32_t i = 0; i < n; i++) {
                if (write_logits(lf, done + i, ids[done + i], logits + (size_t)i * V, V) < 0)
                    goto write_error;
            }
            if (n > 1) /* the last row is the one to sample from */
                memmove(logits, logits + (size_t)(n - 1) * V, (size_t)V * sizeof *logits);
        }
        done += n;
    }
    double t1 = hm_cmd_now();

    /* decode */
    struct hm_utf8_stream us;
    hm_utf8_stream_init(&us);
    int32_t eos = hm_tokenizer_eos(m->tok);
    uint32_t n_gen = 0;
    while (n_gen < n_predict) {
        struct hm_sample r;
        rc = hm_sampler_sample(sm, logits, &r);
        if (rc < 0) {
            fprintf(stderr, PROG ": sampling failed (%s)\n", hm_strerror(rc));
            goto out;
        }
        if (r.token == eos)
            break;
        size_t blen;
        const uint8_t *b = hm_tokenizer_token_bytes(m->tok, r.token, &blen);
        emit(&us, b, blen);
        fflush(stdout);
        hm_sampler_accept(sm, r.token);
        rc = hm_session_push(s, r.token);
        if (rc < 0) {
            fprintf(stderr, PROG ": cannot append a token (%s)\n", hm_strerror(rc));
            goto out;
        }
        n_gen++;
        if (n_gen == n_predict && lf == NULL)
            break; /* its logits are not needed */
        struct hm_step_item it = {.s = s, .n_tokens = 1, .all_logits = false, .logits = logits};
        rc = hm_engine_step(e, &it, 1);
        if (rc < 0) {
            fprintf(stderr, PROG ": decode failed (%s)\n", hm_strerror(rc));
            goto out;
        }
        if (lf != NULL && write_logits(lf, hm_session_n_past(s) - 1, r.token, logits, V) < 0)
            goto write_error;
    }
    double t2 = hm_cmd_now();
    {
        uint8_t tail[8];
        size_t k = hm_utf8_stream_flush(&us, tail, sizeof tail);
        fwrite(tail, 1, k, stdout);
        fputc('\n', stdout);
        fflush(stdout);
    }

    if (stats) {
        struct hm_session_stats st;
        hm_session_get_stats(s, &st);
        fprintf(stderr, "c_req           %.4f\n", st.c_req);
        fprintf(stderr, "window          %" PRId64 "\n", st.window);
        fprintf(stderr,
                "tokens          %zu prompt + %" PRIu32 " generated (N planned %" PRIu32 ")\n",
                n_ids, n_gen, st.n_ctx_planned);
        fprintf(stderr, "experts/token   %.3f (mean over %" PRIu64 " decisions)\n", st.mean_experts,
                st.n_expert_decisions);
        const struct hm_trace *tr = hm_session_trace(s);
        if (tr != NULL && tr->n_moe > 0 && tr->n_pos > 0) {
            uint32_t j = 0;
            fprintf(stderr, "  per MoE layer:");
            for (uint32_t l = 0; l < m->hp.n_layer; l++) {
                if (!hm_hparams_layer_is_moe(&m->hp, l))
                    continue;
                uint64_t sum = 0;
                for (uint32_t t = 0; t < tr->n_pos; t++)
                    sum += tr->k[(size_t)t * tr->n_moe + j];
                fprintf(stderr, " L%" PRIu32 "=%.2f", l, (double)sum / tr->n_pos);
                j++;
            }
            fputc('\n', stderr);
        }
        fprintf(stderr, "KV bytes        %" PRIu64 " (all-G baseline %" PRIu64 ", %.1f%%)\n",
                st.kv_bytes, st.kv_bytes_baseline,
                st.kv_bytes_baseline ? 100.0 * (double)st.kv_bytes / (double)st.kv_bytes_baseline
                                     : 0.0);
        fprintf(stderr, "prefill         %zu tokens in %.3f s: %.1f tokens/s\n", n_ids, t1 - t0,
                t1 > t0 ? (double)n_ids / (t1 - t0) : 0.0);
        fprintf(stderr, "decode          %" PRIu32 " tokens in %.3f s: %.1f tokens/s\n", n_gen,
                t2 - t1, t2 > t1 ? (double)n_gen / (t2 - t1) : 0.0);
    }
    ret = 0;
    goto out;

write_error:
    fprintf(stderr, PROG ": cannot write '%s'\n", logits_path);
out:
    if (lf != NULL && fclose(lf) != 0 && ret == 0) {
        fprintf(stderr, PROG ": cannot write '%s'\n", logits_path);
        ret = 1;
    }
    hm_free(logits);
    hm_sampler_free(sm);
    hm_session_free(s);
    hm_engine_free(e);
    hm_free(ids);
    hm_model_free(m);
    return ret;
}
