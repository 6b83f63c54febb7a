/*
 * bench_engine.c - engine benchmarks (`make bench`, never part of make check).
 *
 *     bench_engine [-t THREADS] [--batches 1,8,32,64] [--prompt P] [--decode D] [--reps R]
 *                  [--long P [--long-label LABEL]] [--matmul det|blas]
 *                  [--no-limits] [--no-memory] [--no-sampler] [MODEL[=LABEL]]...
 *
 * Prints markdown tables to stdout (progress to stderr):
 *   1. the machine's limits measured in the same run: OpenBLAS sgemm GFLOP/s (square
 *      1024/2048, skinny M x 2048 x 2048 for M = 1, 8, 32, 64) with OpenBLAS using the
 *      same thread count, and sustained read bandwidth (summing a 1 GiB buffer on the
 *      engine's compute pool);
 *   2. per model, adaptive and static (hm_engine_opts / hm_session_opts.force_static):
 *      prefill and decode tokens/s at each batch (B sessions stepped together), achieved
 *      GFLOP/s = 2 x active parameters per token (with the measured mean experts per
 *      token) x tokens/s and its ratio to the square-sgemm peak, and for batch-1 decode
 *      the bytes of weights read per token x tokens/s against the measured bandwidth;
 *   3. where a batch-1 decode step's time goes (hm_engine_get_profile); with --long P, the
 *      same at batches 1 and 4 with a prompt of P tokens (where the window policy shows),
 *      for every model or only the one labelled LABEL;
 *   4. the sampler's cost per token at V = 131072;
 *   5. KV bytes per request for the `small` preset (no weights needed: the engine's own
 *      sizing functions on its hyperparameters) against the all-G baseline, and the
 *      requests a 16 GiB KV budget admits.
 */
#include <cblas.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "forward.h"
#include "hm/alloc.h"
#include "hm/engine.h"
#include "hm/err.h"
#include "hm/model.h"
#include "hm/pool.h"
#include "hm/sampler.h"
#include "hm/tokenizer.h"

#define MAX_BATCHES 8
#define MAX_MODELS 16

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void die(const char *what, int rc)
{
    fprintf(stderr, "bench_engine: %s (%s)\n", what, hm_strerror(rc));
    exit(1);
}

/* ---- 1. limits ------------------------------------------------------------------ */

static double bench_sgemm(int M, int N, int K)
{
    float *A = hm_malloc_aligned((size_t)M * K * sizeof(float));
    float *B = hm_malloc_aligned((size_t)N * K * sizeof(float));
    float *C = hm_malloc_aligned((size_t)M * N * sizeof(float));
    double best = 0.0;
    if (!A || !B || !C)
        die("sgemm buffers", HM_ENOMEM);
    for (size_t i = 0; i < (size_t)M * K; i++)
        A[i] = (float)(i % 13) * 0.01f;
    for (size_t i = 0; i < (size_t)N * K; i++)
        B[i] = (float)(i % 7) * 0.01f;
    /* C = A B^T: B holds N rows of K (the engine's weight layout) */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, A, K, B, K, 0.0f, C, N);
    for (int rep = 0; rep < 3; rep++) {
        int iters = 0;
        double t0 = now_s(), dt;
        do {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, A, K, B, K, 0.0f, C,
                        N);
            iters++;
            dt = now_s() - t0;
        } while (dt < 0.25);
        double gf = 2.0 * M * N * (double)K * iters / dt / 1e9;
        best = gf > best ? gf : best;
    }
    hm_free_aligned(A);
    hm_free_aligned(B);
    hm_free_aligned(C);
    return best;
}

struct bw_ctx {
    const float *buf;
    size_t chunk; /* floats per task */
    double *part; /* per task */
};

static void bw_task(void *vctx, size_t task, unsigned thread)
{
    struct bw_ctx *c = vctx;
    const float *p = c->buf + task * c->chunk;
    float acc[16] = {0};
    (void)thread;
    for (size_t i = 0; i < c->chunk; i += 16)
        for (int j = 0; j < 16; j++)
            acc[j] += p[i + j];
    double s = 0;
    for (int j = 0; j < 16; j++)
        s += acc[j];
    c->part[task] = s;
}

static double bench_bandwidth(unsigned n_threads)
{
    const size_t bytes = (size_t)1 << 30, chunk = (size_t)1 << 18; /* 1 MiB tasks */
    size_t n = bytes / sizeof(float), n_tasks = n / chunk;
    float *buf = hm_malloc_aligned(bytes);
    double *part = hm_calloc(n_tasks, sizeof *part), best = 0, sink = 0;
    struct hm_pool *pool;
    int rc;
    if (!buf || !part)
        die("bandwidth buffer", HM_ENOMEM);
    for (size_t i = 0; i < n; i++)
        buf[i] = 1.0f;
    rc = hm_pool_new(n_threads, &pool);
    if (rc < 0)
        die("pool", rc);
    struct bw_ctx c = {buf, chunk, part};
    for (int rep = 0; rep < 5; rep++) {
        double t0 = now_s();
        hm_pool_run(pool, n_tasks, bw_task, &c);
        double dt = now_s() - t0, gbs = (double)bytes / dt / 1e9;
        for (size_t i = 0; i < n_tasks; i++)
            sink += part[i];
        best = gbs > best ? gbs : best;
    }
    if (sink != 5.0 * (double)n)
        fprintf(stderr, "bench_engine: bandwidth checksum %.0f\n", sink);
    hm_pool_free(pool);
    hm_free(part);
    hm_free_aligned(buf);
    return best;
}

/* ---- 2. engine throughput ------------------------------------------------------- */

static const char bench_text[] =
    "The committee met on Tuesday to discuss the budget for next year. After a long debate "
    "(which, as usual, ran past midnight), the members agreed on three points: first, the "
    "library would stay open on weekends; second, the bridge repairs [delayed since spring] "
    "would start in May; and third, nobody would mention the fountain again. \"We have done "
    "what we could,\" said the chair, {tired but pleased}. The minutes were signed at 1:04. ";

struct run_result {
    double prefill_tps, decode_tps;
    double mean_k_decode; /* mean experts per token during decode */
    double c_req;
    int64_t window;
    struct hm_engine_profile prof; /* of the decode steps */
};

/* Fills n tokens: the bench text's tokens, repeated, starting at offset off. */
static void make_prompt(const int32_t *text_ids, size_t n_text, size_t off, int32_t *out,
                        uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        out[i] = text_ids[(off + i) % n_text];
}

static void prof_diff(const struct hm_engine_profile *a, const struct hm_engine_profile *b,
                      struct hm_engine_profile *d)
{
    d->steps = b->steps - a->steps;
    d->tokens = b->tokens - a->tokens;
#define D(f) d->f = b->f - a->f
    D(ns_total);
    D(ns_embed);
    D(ns_xscale);
    D(ns_attn_g);
    D(ns_attn_l);
    D(ns_attn_m);
    D(ns_router);
    D(ns_experts);
    D(ns_dense_ffn);
    D(ns_norm);
    D(ns_output);
#undef D
}

static void run_batch(const struct hm_model *m, unsigned n_threads, enum hm_matmul_mode mm,
                      bool stat, uint32_t B, uint32_t P, uint32_t D, const int32_t *text_ids,
                      size_t n_text, struct run_result *res)
{
    const uint32_t V = m->hp.n_vocab;
    struct hm_engine_opts eo = hm_engine_opts_default();
    struct hm_session_opts so = hm_session_opts_default();
    struct hm_engine *e;
    struct hm_session **s = hm_calloc(B, sizeof *s);
    struct hm_step_item *items = hm_calloc(B, sizeof *items);
    float *logits = hm_mallocarray((size_t)B * V, sizeof *logits);
    int32_t *prompt = hm_mallocarray(P, sizeof *prompt);
    uint64_t k0 = 0, k1 = 0, n0 = 0, n1 = 0;
    struct hm_engine_profile pa, pb;
    struct hm_errmsg em = {{0}};
    int rc;

    if (!s || !items || !logits || !prompt)
        die("batch buffers", HM_ENOMEM);
    eo.n_threads = n_threads;
    eo.matmul = mm;
    eo.force_static = stat;
    eo.max_step_items = B > eo.max_step_items ? B : eo.max_step_items;
    if (eo.max_step_tokens < B)
        eo.max_step_tokens = B;
    rc = hm_engine_new(m, &eo, &e);
    if (rc < 0)
        die("hm_engine_new", rc);
    so.max_tokens = D;
    so.force_static = stat;
    for (uint32_t i = 0; i < B; i++) {
        make_prompt(text_ids, n_text, (size_t)i * 7, prompt, P);
        rc = hm_session_new(m, prompt, P, &so, &s[i], &em);
        if (rc < 0) {
            fprintf(stderr, "bench_engine: %s\n", em.text);
            die("hm_session_new", rc);
        }
    }

    /* prefill: every session advances by `chunk` tokens per step */
    uint32_t chunk = eo.max_step_tokens / B;
    if (chunk == 0)
        chunk = 1;
    double t0 = now_s();
    for (uint32_t done = 0; done < P;) {
        uint32_t n = P - done < chunk ? P - done : chunk;
        for (uint32_t i = 0; i < B; i++)
            items[i] = (struct hm_step_item){
                .s = s[i], .n_tokens = n, .all_logits = false, .logits = logits + (size_t)i * V};
        rc = hm_engine_step(e, items, B);
        if (rc < 0)
            die("prefill step", rc);
        done += n;
    }
    double t1 = now_s();
    res->prefill_tps = (double)B * P / (t1 - t0);

    for (uint32_t i = 0; i < B; i++) {
        struct hm_session_stats st;
        hm_session_get_stats(s[i], &st);
        k0 += st.sum_experts;
        n0 += st.n_expert_decisions;
        if (i == 0) {
            res->c_req = st.c_req;
            res->window = st.window;
        }
    }

    /* decode: greedy, B sessions one token each per step */
    hm_engine_get_profile(e, &pa);
    t0 = now_s();
    for (uint32_t d = 0; d < D; d++) {
        for (uint32_t i = 0; i < B; i++) {
            const float *l = logits + (size_t)i * V;
            uint32_t best = 0;
            for (uint32_t v = 1; v < V; v++)
                best = l[v] > l[best] ? v : best;
            rc = hm_session_push(s[i], (int32_t)best);
            if (rc < 0)
                die("hm_session_push", rc);
            items[i] = (struct hm_step_item){
                .s = s[i], .n_tokens = 1, .all_logits = false, .logits = logits + (size_t)i * V};
        }
        rc = hm_engine_step(e, items, B);
        if (rc < 0)
            die("decode step", rc);
    }
    t1 = now_s();
    hm_engine_get_profile(e, &pb);
    prof_diff(&pa, &pb, &res->prof);
    res->decode_tps = (double)B * D / (t1 - t0);
    for (uint32_t i = 0; i < B; i++) {
        struct hm_session_stats st;
        hm_session_get_stats(s[i], &st);
        k1 += st.sum_experts;
        n1 += st.n_expert_decisions;
        hm_session_free(s[i]);
    }
    uint32_t n_moe = hm_hparams_n_moe(&m->hp);
    res->mean_k_decode = n_moe && n1 > n0 ? (double)(k1 - k0) / (double)(n1 - n0) : 0.0;
    hm_engine_free(e);
    hm_free(s);
    hm_free(items);
    hm_free(logits);
    hm_free(prompt);
}

static uint64_t mat_bytes(const struct hm_mat *w)
{
    return w->data ? (uint64_t)w->mat_bytes : 0;
}

/* Weight bytes one token reads: everything but the routed experts, plus mean_k experts
 * per MoE layer (from the matrices as stored; the embedding lookup is one row). */
static double bytes_per_token(const struct hm_model *m, double mean_k, bool stat)
{
    double b = 0;
    double row = m->tok_embd.row_bytes;
    b += row + (double)mat_bytes(&m->output);
    if (!stat && (m->features & HM_FEAT_XSCALE))
        b +=
            (double)(mat_bytes(&m->xq) + mat_bytes(&m->xk) + mat_bytes(&m->xv) + mat_bytes(&m->xo));
    for (uint32_t l = 0; l < m->hp.n_layer; l++) {
        const struct hm_layer *L = &m->layers[l];
        b += (double)(mat_bytes(&L->wq) + mat_bytes(&L->wk) + mat_bytes(&L->wv) +
                      mat_bytes(&L->wq_a) + mat_bytes(&L->wq_b) + mat_bytes(&L->wkv_a) +
                      mat_bytes(&L->wkv_b) + mat_bytes(&L->wo));
        b += (double)(mat_bytes(&L->ffn_gate) + mat_bytes(&L->ffn_up) + mat_bytes(&L->ffn_down));
        if (L->moe) {
            b += (double)(mat_bytes(&L->router) + mat_bytes(&L->gate_shexp) +
                          mat_bytes(&L->up_shexp) + mat_bytes(&L->down_shexp));
            b += mean_k * (double)(mat_bytes(&L->gate_exps) + mat_bytes(&L->up_exps) +
                                   mat_bytes(&L->down_exps));
        }
    }
    return b;
}

/* Active parameters per token with mean_k routed experts per MoE layer instead of K. */
static double active_params(const struct hm_model *m, double mean_k)
{
    const struct hm_hparams *hp = &m->hp;
    double per_expert = 3.0 * hp->d * (double)hp->ff_expert;
    double n_moe = hm_hparams_n_moe(hp);
    return (double)m->counts.active - n_moe * ((double)hp->n_expert_used - mean_k) * per_expert;
}

static const char *dtype_name(enum hm_dtype t)
{
    switch (t) {
    case HM_DTYPE_F32:
        return "f32";
    case HM_DTYPE_F16:
        return "f16";
    case HM_DTYPE_BF16:
        return "bf16";
    case HM_DTYPE_Q8_0:
        return "q8_0";
    default:
        return "?";
    }
}

struct cfg {
    unsigned n_threads;
    enum hm_matmul_mode mm;
    int reps;
    double peak_gflops; /* 0 = not measured */
    double bw_gbs;      /* 0 = not measured */
};

/* One table: both modes x the batches, at prompt P and D decode steps; the batch-1
 * decode profile after it when profile is set. */
static void bench_table(const struct hm_model *m, const char *label, const struct cfg *c,
                        const uint32_t *batches, int n_batches, uint32_t P, uint32_t D,
                        bool profile, const int32_t *text_ids, size_t n_text)
{
    struct run_result prof_res[2];
    bool have_prof = false;

    printf("| mode | batch | c_req | w | experts/token | prefill tok/s | decode tok/s | "
           "decode GFLOP/s | of sgemm peak | weight GB/s (B=1) | of bandwidth |\n");
    printf("|---|---|---|---|---|---|---|---|---|---|---|\n");
    for (int st = 0; st < 2; st++) {
        for (int bi = 0; bi < n_batches; bi++) {
            struct run_result r, rr;
            uint32_t B = batches[bi];
            fprintf(stderr, "bench_engine: %s %s batch %" PRIu32 " prompt %" PRIu32 "\n", label,
                    st ? "static" : "adaptive", B, P);
            /* best of reps: the machine may be shared; the best run is the least disturbed */
            run_batch(m, c->n_threads, c->mm, st, B, P, D, text_ids, n_text, &r);
            for (int rep = 1; rep < c->reps; rep++) {
                run_batch(m, c->n_threads, c->mm, st, B, P, D, text_ids, n_text, &rr);
                if (rr.prefill_tps > r.prefill_tps)
                    r.prefill_tps = rr.prefill_tps;
                if (rr.decode_tps > r.decode_tps) {
                    r.decode_tps = rr.decode_tps;
                    r.prof = rr.prof;
                }
            }
            double act = active_params(m, st ? (double)m->hp.n_expert_used : r.mean_k_decode);
            double gf = 2.0 * act * r.decode_tps / 1e9;
            printf("| %s | %" PRIu32 " | %.3f | %" PRId64 " | %.2f | %.1f | %.1f | %.2f |",
                   st ? "static" : "adaptive", B, r.c_req, r.window, r.mean_k_decode, r.prefill_tps,
                   r.decode_tps, gf);
            if (c->peak_gflops > 0)
                printf(" %.1f%% |", 100.0 * gf / c->peak_gflops);
            else
                printf(" - |");
            if (B == 1) {
                double bpt =
                    bytes_per_token(m, st ? (double)m->hp.n_expert_used : r.mean_k_decode, st);
                double gbs = bpt * r.decode_tps / 1e9;
                if (c->bw_gbs > 0)
                    printf(" %.2f (%.2f MB/token) | %.1f%% |\n", gbs, bpt / 1e6,
                           100.0 * gbs / c->bw_gbs);
                else
                    printf(" %.2f (%.2f MB/token) | - |\n", gbs, bpt / 1e6);
                prof_res[st] = r;
                have_prof = true;
            } else {
                printf(" | |\n");
            }
            fflush(stdout);
        }
    }
    if (!profile || !have_prof)
        return;
    printf("\nWhere a batch-1 decode step's time goes (hm_engine_get_profile, %% of step "
           "time):\n\n");
    printf("| mode | ms/step | embed | xscale | attn G | attn L | attn M | router | experts "
           "| dense FFN | norm | output | other |\n");
    printf("|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for (int st = 0; st < 2; st++) {
        const struct hm_engine_profile *p = &prof_res[st].prof;
        double tot = p->ns_total > 0 ? (double)p->ns_total : 1.0;
        uint64_t parts = p->ns_embed + p->ns_xscale + p->ns_attn_g + p->ns_attn_l + p->ns_attn_m +
                         p->ns_router + p->ns_experts + p->ns_dense_ffn + p->ns_norm + p->ns_output;
        double other = parts < p->ns_total ? (double)(p->ns_total - parts) : 0.0;
#define PC(x) (100.0 * (double)(x) / tot)
        printf("| %s | %.3f | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f | "
               "%.1f | %.1f |\n",
               st ? "static" : "adaptive",
               p->steps ? (double)p->ns_total / 1e6 / (double)p->steps : 0.0, PC(p->ns_embed),
               PC(p->ns_xscale), PC(p->ns_attn_g), PC(p->ns_attn_l), PC(p->ns_attn_m),
               PC(p->ns_router), PC(p->ns_experts), PC(p->ns_dense_ffn), PC(p->ns_norm),
               PC(p->ns_output), PC(other));
#undef PC
    }
}

static void bench_model(const char *path, const char *label, const struct cfg *c,
                        const uint32_t *batches, int n_batches, uint32_t P, uint32_t D,
                        uint32_t P_long)
{
    struct hm_model *m;
    struct hm_errmsg em = {{0}};
    int32_t *text_ids = NULL;
    size_t n_text = 0;
    int rc = hm_model_load(path, &m, &em);
    if (rc < 0) {
        fprintf(stderr, "bench_engine: %s\n", em.text);
        die("hm_model_load", rc);
    }
    rc = hm_tokenizer_encode(m->tok, bench_text, sizeof bench_text - 1, 0, &text_ids, &n_text);
    if (rc < 0 || n_text == 0)
        die("tokenize", rc < 0 ? rc : HM_EINVAL);
    if (P + D > m->hp.n_ctx) {
        P = m->hp.n_ctx / 2;
        D = m->hp.n_ctx - P < D ? m->hp.n_ctx - P : D;
    }

    printf("\n### %s (%s, %s)\n\n", label, path, dtype_name(m->output.type));
    printf("%.2f M parameters, %.2f M active (K = %" PRIu32 "), %.1f MB of weights, V = %" PRIu32
           ", pattern %s; prompt %" PRIu32 " tokens, %" PRIu32 " decode steps, %u threads, "
           "matmul %s\n\n",
           (double)m->counts.total / 1e6, (double)m->counts.active / 1e6, m->hp.n_expert_used,
           (double)m->counts.weight_bytes / 1e6, m->hp.n_vocab, m->hp.pattern, P, D, c->n_threads,
           c->mm == HM_MATMUL_BLAS ? "blas" : "deterministic");
    bench_table(m, label, c, batches, n_batches, P, D, true, text_ids, n_text);

    /* long context: where the window policy shows (L layers attend w, not N positions) */
    if (P_long > 0 && P_long + D <= m->hp.n_ctx && P_long > P) {
        static const uint32_t long_batches[2] = {1, 4};
        printf("\nLong context: prompt %" PRIu32 " tokens, %" PRIu32 " decode steps\n\n", P_long,
               D);
        bench_table(m, label, c, long_batches, 2, P_long, D, true, text_ids, n_text);
    }
    hm_free(text_ids);
    hm_model_free(m);
}

/* ---- 4. sampler cost ------------------------------------------------------------ */

static void bench_sampler(void)
{
    const uint32_t V = 131072;
    float *base = hm_mallocarray(V, sizeof *base), *l = hm_mallocarray(V, sizeof *l);
    struct hm_rng g;
    if (!base || !l)
        die("sampler buffers", HM_ENOMEM);
    hm_rng_seed(&g, 3);
    /* a peaked distribution: a few strong tokens over a gaussian-ish floor */
    for (uint32_t i = 0; i < V; i++) {
        float u = hm_rng_uniform(&g) + hm_rng_uniform(&g) + hm_rng_uniform(&g);
        base[i] = (u - 1.5f) * 3.0f;
    }
    for (uint32_t i = 0; i < 50; i++)
        base[(i * 2654435761u) % V] += 12.0f - (float)i * 0.2f;
    static const struct {
        const char *name;
        float t, top_p, min_p;
        int32_t top_k;
        bool lp;
    } cases[] = {
        {"greedy", 0.0f, 1.0f, 0.0f, 0, false},
        {"greedy + logprobs (top 5)", 0.0f, 1.0f, 0.0f, 0, true},
        {"T = 1, no truncation", 1.0f, 1.0f, 0.0f, 0, false},
        {"T = 0.8, top_k 40", 0.8f, 1.0f, 0.0f, 40, false},
        {"T = 0.8, top_p 0.95", 0.8f, 0.95f, 0.0f, 0, false},
        {"T = 0.8, top_k 40, top_p 0.95, min_p 0.05", 0.8f, 0.95f, 0.05f, 40, false},
        {"T = 2, no truncation (flat)", 2.0f, 1.0f, 0.0f, 0, false},
    };
    printf("\n### Sampler cost per token, V = %" PRIu32
           "\n\n| parameters | us/token |\n|---|---|\n",
           V);
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        struct hm_sampler_params p = hm_sampler_params_default();
        struct hm_sampler *s;
        struct hm_sample r;
        p.temperature = cases[c].t;
        p.top_p = cases[c].top_p;
        p.min_p = cases[c].min_p;
        p.top_k = cases[c].top_k;
        p.want_logprobs = cases[c].lp;
        p.n_top_logprobs = cases[c].lp ? 5 : 0;
        int rc = hm_sampler_new(&p, V, &s);
        if (rc < 0)
            die("hm_sampler_new", rc);
        int n = 0;
        double t0 = now_s(), dt;
        do {
            memcpy(l, base, V * sizeof *l);
            hm_sampler_sample(s, l, &r);
            n++;
            dt = now_s() - t0;
        } while (dt < 0.3);
        /* the memcpy is part of the measured loop; it is ~1% of the cost */
        printf("| %s | %.1f |\n", cases[c].name, dt / n * 1e6);
        hm_sampler_free(s);
    }
    hm_free(base);
    hm_free(l);
}

/* ---- 5. KV memory for the small preset ------------------------------------------- */

static void bench_memory(void)
{
    const struct hm_preset *pr = hm_preset_find("small");
    static const uint32_t ctxs[] = {1024, 4096, 8192, 32768};
    static const double cs[] = {0.0, 0.5, 1.0};
    const uint64_t budget = UINT64_C(16) << 30;
    struct hm_model fake;
    if (pr == NULL) {
        printf("\n(no `small` preset)\n");
        return;
    }
    /* The sizing functions read only hp and features: a model without weights. */
    memset(&fake, 0, sizeof fake);
    fake.hp = pr->hp;
    fake.features = pr->features;
    printf("\n### KV cache per request, `small` preset (pattern %s, float32 cache)\n\n",
           pr->hp.pattern);
    printf("| context N | c_req | window w | HybridMoE KV | all-G baseline | ratio | requests in "
           "16 GiB (HybridMoE / all-G) |\n|---|---|---|---|---|---|---|\n");
    for (size_t i = 0; i < sizeof ctxs / sizeof ctxs[0]; i++) {
        if (ctxs[i] > pr->hp.n_ctx)
            continue;
        for (size_t j = 0; j < sizeof cs / sizeof cs[0]; j++) {
            int64_t w = hm_window_policy(&fake, cs[j], ctxs[i]);
            uint64_t kv = hm__kv_elems(&fake, ctxs[i], w, (pr->features & HM_FEAT_XSCALE) != 0) *
                          sizeof(float);
            uint64_t base = hm__kv_elems_baseline(&fake, ctxs[i]) * sizeof(float);
            printf("| %" PRIu32 " | %.1f | %" PRId64 " | %.1f MiB | %.1f MiB | %.3f | %" PRIu64
                   " / %" PRIu64 " |\n",
                   ctxs[i], cs[j], w, (double)kv / 1048576.0, (double)base / 1048576.0,
                   (double)kv / (double)base, budget / kv, budget / base);
        }
    }
}

/* ---- main ------------------------------------------------------------------------ */

static int parse_batches(const char *s, uint32_t *out)
{
    int n = 0;
    while (*s) {
        char *end;
        errno = 0;
        unsigned long v = strtoul(s, &end, 10);
        if (end == s || errno || v == 0 || v > 4096 || n == MAX_BATCHES)
            return -1;
        out[n++] = (uint32_t)v;
        s = *end == ',' ? end + 1 : end;
        if (*end != ',' && *end != '\0')
            return -1;
    }
    return n;
}

int main(int argc, char **argv)
{
    unsigned n_threads = hm_cpu_count();
    uint32_t batches[MAX_BATCHES] = {1, 8, 32, 64};
    int n_batches = 4;
    uint32_t P = 64, D = 16;
    int reps = 2;
    uint32_t P_long = 0;
    const char *long_label = NULL;
    bool limits = true, memory = true, sampler = true;
    enum hm_matmul_mode mm = HM_MATMUL_DETERMINISTIC;
    const char *models[MAX_MODELS];
    int n_models = 0;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-t") == 0 && i + 1 < argc) {
            n_threads = (unsigned)strtoul(argv[++i], NULL, 10);
        } else if (strcmp(a, "--batches") == 0 && i + 1 < argc) {
            n_batches = parse_batches(argv[++i], batches);
            if (n_batches <= 0) {
                fprintf(stderr, "bench_engine: bad --batches\n");
                return 2;
            }
        } else if (strcmp(a, "--prompt") == 0 && i + 1 < argc) {
            P = (uint32_t)strtoul(argv[++i], NULL, 10);
        } else if (strcmp(a, "--decode") == 0 && i + 1 < argc) {
            D = (uint32_t)strtoul(argv[++i], NULL, 10);
        } else if (strcmp(a, "--long") == 0 && i + 1 < argc) {
            P_long = (uint32_t)strtoul(argv[++i], NULL, 10);
        } else if (strcmp(a, "--long-label") == 0 && i + 1 < argc) {
            long_label = argv[++i];
        } else if (strcmp(a, "--reps") == 0 && i + 1 < argc) {
            reps = (int)strtol(argv[++i], NULL, 10);
        } else if (strcmp(a, "--matmul") == 0 && i + 1 < argc) {
            mm = strcmp(argv[++i], "blas") == 0 ? HM_MATMUL_BLAS : HM_MATMUL_DETERMINISTIC;
        } else if (strcmp(a, "--no-limits") == 0) {
            limits = false;
        } else if (strcmp(a, "--no-memory") == 0) {
            memory = false;
        } else if (strcmp(a, "--no-sampler") == 0) {
            sampler = false;
        } else if (a[0] == '-') {
            fprintf(stderr, "usage: bench_engine [-t THREADS] [--batches 1,8,32,64] [--prompt P] "
                            "[--decode D] [--reps R] [--long P] [--long-label L] "
                            "[--matmul det|blas] [--no-limits] [--no-memory] [--no-sampler] "
                            "[MODEL[=LABEL]]...\n");
            return 2;
        } else if (n_models < MAX_MODELS) {
            models[n_models++] = a;
        }
    }
    if (n_threads == 0 || P == 0 || D == 0 || reps < 1) {
        fprintf(stderr, "bench_engine: threads, --prompt and --decode must be positive\n");
        return 2;
    }

    double peak = 0, bw = 0;
    if (limits) {
        openblas_set_num_threads((int)n_threads);
        printf("### Limits of this machine (measured in this run, %u threads)\n\n", n_threads);
        printf("| measurement | result |\n|---|---|\n");
        static const int sq[] = {1024, 2048};
        for (size_t i = 0; i < 2; i++) {
            fprintf(stderr, "bench_engine: sgemm %d\n", sq[i]);
            double g = bench_sgemm(sq[i], sq[i], sq[i]);
            peak = g > peak ? g : peak;
            printf("| sgemm %dx%dx%d | %.1f GFLOP/s |\n", sq[i], sq[i], sq[i], g);
        }
        static const int ms[] = {1, 8, 32, 64};
        for (size_t i = 0; i < 4; i++) {
            double g = bench_sgemm(ms[i], 2048, 2048);
            printf("| sgemm M = %d (x 2048 x 2048) | %.1f GFLOP/s |\n", ms[i], g);
        }
        fprintf(stderr, "bench_engine: bandwidth\n");
        bw = bench_bandwidth(n_threads);
        printf("| read bandwidth (sum of 1 GiB on the pool) | %.1f GB/s |\n", bw);
        fflush(stdout);
    }
    for (int i = 0; i < n_models; i++) {
        char path[4096];
        const char *label, *eq = strchr(models[i], '=');
        if (eq != NULL && (size_t)(eq - models[i]) < sizeof path) {
            memcpy(path, models[i], (size_t)(eq - models[i]));
            path[eq - models[i]] = '\0';
            label = eq + 1;
        } else {
            snprintf(path, sizeof path, "%s", models[i]);
            label = models[i];
        }
        struct cfg c = {n_threads, mm, reps, peak, bw};
        bool lng = long_label == NULL || strcmp(long_label, label) == 0;
        bench_model(path, label, &c, batches, n_batches, P, D, lng ? P_long : 0);
    }
    if (sampler)
        bench_sampler();
    if (memory)
        bench_memory();
    return 0;
}
