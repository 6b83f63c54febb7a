/* bench_forward.c - tokens/s of the forward pass on a ~25M-parameter in-memory model, own
 * deterministic matmul vs OpenBLAS, and the compute pool's overhead per run. Not a test:
 * it exits 77 (skipped) unless HM_BENCH=1:
 * `make tests/bench_forward && HM_BENCH=1 ./tests/bench_forward [threads] [dtype] [model.gguf]`
 * (with a model file, dtype only selects the matmul micro-benchmark's type). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../engine/forward.h"
#include "../engine/kernels.h"
#include "hm/gguf.h"
#include "testmodel.h"

/* Wall time, or with HM_BENCH_CPU=1 the process's CPU time (steadier on a shared machine;
 * meaningful for 1 thread only). */
static double now_s(void)
{
    static int cpu = -1;
    if (cpu < 0)
        cpu = getenv("HM_BENCH_CPU") != NULL;
    if (cpu) {
        struct timespec ts;
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
    }
    return (double)hm__now_ns() * 1e-9;
}

static void noop(void *c, size_t i, unsigned t)
{
    (void)c;
    (void)i;
    (void)t;
}

static void busy(void *c, size_t i, unsigned t)
{
    volatile float x = 1.0f;
    int k;
    (void)c;
    (void)i;
    (void)t;
    for (k = 0; k < 400; k++)
        x = x * 1.0000001f;
}

/* Time per run of nt tasks of ~1 us each, against the same work run inline. */
static void bench_pool(unsigned nt)
{
    struct hm_pool *p;
    double t0, tin, tpool;
    size_t i, reps = 20000;
    hm_pool_new(nt, &p);
    t0 = now_s();
    for (i = 0; i < reps * nt; i++)
        busy(NULL, 0, 0);
    tin = (now_s() - t0) / reps; /* nt tasks inline */
    hm_pool_run(p, nt, busy, NULL);
    t0 = now_s();
    for (i = 0; i < reps; i++)
        hm_pool_run(p, nt, busy, NULL);
    tpool = (now_s() - t0) / reps;
    printf("pool: %u tasks of %.2f us: %.2f us per hm_pool_run (ideal %.2f us on %u threads)\n", nt,
           tin / nt * 1e6, tpool * 1e6, tin / nt * 1e6, nt);
    hm_pool_free(p);
}

static void bench_mode(const struct hm_model *m, unsigned nt, enum hm_matmul_mode mode)
{
    struct hm_engine_opts eo = hm_engine_opts_default();
    struct hm_session_opts so = hm_session_opts_default();
    struct hm_engine *e;
    struct hm_session *s[32];
    struct hm_step_item it[32];
    uint32_t V = m->hp.n_vocab, i, k, np = 16, gen = 48;
    int32_t prompt[256];
    float *lg = malloc(sizeof(float) * V * 32);
    double t0, dec1, dec32, pre32, pre256;

    eo.n_threads = nt;
    eo.matmul = mode;
    eo.max_step_tokens = 256;
    eo.max_step_items = 32;
    if (hm_engine_new(m, &eo, &e) < 0)
        exit(1);
    for (i = 0; i < 256; i++)
        prompt[i] = (int32_t)((i * 131 + 7) % V);
    so.max_tokens = gen;
    so.complexity = 0.5f;
    /* decode, batch 1 */
    hm_session_new(m, prompt, np, &so, &s[0], NULL);
    it[0] = (struct hm_step_item){s[0], np, false, lg};
    hm_engine_step(e, it, 1);
    t0 = now_s();
    for (i = 0; i < gen; i++) {
        hm_session_push(s[0], (int32_t)(i % V));
        it[0] = (struct hm_step_item){s[0], 1, false, lg};
        hm_engine_step(e, it, 1);
    }
    dec1 = gen / (now_s() - t0);
    hm_session_free(s[0]);
    /* decode, 32 sequences a step */
    for (k = 0; k < 32; k++) {
        hm_session_new(m, prompt + k, np, &so, &s[k], NULL);
        it[k] = (struct hm_step_item){s[k], np, false, NULL};
    }
    hm_engine_step(e, it, 16);
    hm_engine_step(e, it + 16, 16);
    t0 = now_s();
    for (i = 0; i < gen; i++) {
        for (k = 0; k < 32; k++) {
            hm_session_push(s[k], (int32_t)((i + k) % V));
            it[k] = (struct hm_step_item){s[k], 1, false, lg + (size_t)k * V};
        }
        hm_engine_step(e, it, 32);
    }
    dec32 = 32.0 * gen / (now_s() - t0);
    for (k = 0; k < 32; k++)
        hm_session_free(s[k]);
    /* prefill: 256 tokens in chunks of 32, and in one chunk */
    so.max_tokens = 0;
    hm_session_new(m, prompt, 256, &so, &s[0], NULL);
    t0 = now_s();
    for (i = 0; i < 256; i += 32) {
        it[0] = (struct hm_step_item){s[0], 32, false, lg};
        hm_engine_step(e, it, 1);
    }
    pre32 = 256 / (now_s() - t0);
    hm_session_free(s[0]);
    hm_session_new(m, prompt, 256, &so, &s[0], NULL);
    t0 = now_s();
    it[0] = (struct hm_step_item){s[0], 256, false, lg};
    hm_engine_step(e, it, 1);
    pre256 = 256 / (now_s() - t0);
    hm_session_free(s[0]);
    printf("%-13s threads %u: decode b1 %7.1f tok/s | decode b32 %7.1f tok/s | "
           "prefill chunk32 %7.1f tok/s | prefill 256 %7.1f tok/s\n",
           mode == HM_MATMUL_BLAS ? "openblas" : "deterministic", nt, dec1, dec32, pre32, pre256);
    {
        struct hm_engine_profile p;
        hm_engine_get_profile(e, &p);
        printf("  profile ms: attn g %.0f l %.0f m %.0f | experts %.0f dense %.0f | norm %.0f | "
               "output %.0f | total %.0f\n",
               p.ns_attn_g / 1e6, p.ns_attn_l / 1e6, p.ns_attn_m / 1e6, p.ns_experts / 1e6,
               p.ns_dense_ffn / 1e6, p.ns_norm / 1e6, p.ns_output / 1e6, p.ns_total / 1e6);
    }
    hm_engine_free(e);
    free(lg);
}

/* GFLOP/s of one 2048 x 2048 f32 matmul for n rows: own kernel vs OpenBLAS, same pool. */
static void bench_matmul(struct hm_pool *pool, enum hm_dtype type)
{
    struct hm_hparams hp = hm_test_hparams("G");
    struct hm_model *m;
    size_t ns[] = {1, 8, 32, 64}, k;
    float *x = malloc(sizeof(float) * 64 * 2048), *y = malloc(sizeof(float) * 64 * 2048);
    int i, blas;
    hp.n_vocab = 2048;
    hp.d = 2048;
    hp.n_layer = 0;
    if (hm_test_model_new(&hp, 0, type, 3, &m) < 0)
        exit(1);
    for (i = 0; i < 64 * 2048; i++)
        x[i] = (float)(i % 17) * 0.01f;
    for (k = 0; k < 4; k++) {
        double r[2] = {0, 0};
        for (blas = 0; blas < (type == HM_DTYPE_F32 ? 2 : 1); blas++) {
            struct hm__mm_job j = {&m->output, 0, x, ns[k], 2048, y, 2048};
            int reps = ns[k] == 1 ? 50 : 10;
            double t0;
            hm__matmul_jobs(&j, 1, pool, blas);
            t0 = now_s();
            for (i = 0; i < reps; i++)
                hm__matmul_jobs(&j, 1, pool, blas);
            r[blas] = 2.0 * 2048 * 2048 * ns[k] * reps / (now_s() - t0) * 1e-9;
        }
        printf("matmul 2048x2048 %s n=%-3zu own %6.1f GFLOP/s   openblas %6.1f GFLOP/s\n",
               hm_dtype_name(type), ns[k], r[0], r[1]);
    }
    hm_test_model_free(m);
    free(x);
    free(y);
}

int main(int argc, char **argv)
{
    struct hm_hparams hp = hm_test_hparams("GLMG");
    struct hm_model *m;
    unsigned nt = argc > 1 ? (unsigned)strtoul(argv[1], NULL, 10) : 2;
    enum hm_dtype type = HM_DTYPE_F32;
    struct hm_pool *p;
    double t0;
    int i;

    if (!getenv("HM_BENCH")) {
        printf("SKIP: a benchmark, not a test: run with HM_BENCH=1\n");
        return 77;
    }
    if (argc > 2 && hm_dtype_from_name(argv[2], &type) < 0)
        return 1;
    hp.n_vocab = 8192;
    hp.n_ctx = 512;
    hp.d = 512;
    hp.n_head = 8;
    hp.n_head_kv = 2;
    hp.head_dim = 64;
    hp.ff_dense = 1024;
    hp.kv_lora_rank = 128;
    hp.qk_nope = 64;
    hp.qk_rope = 32;
    hp.v_head_dim = 64;
    hp.n_expert = 8;
    hp.n_expert_used = 2;
    hp.n_expert_shared = 1;
    hp.ff_expert = 256;
    hp.cross_dim = 128;
    hp.window_min = 64;
    hp.window_gain = 256;
    hp.window_max = 512;
    hp.long_ctx_start = 1024;
    if (argc > 3) { /* a model file instead of the in-memory one */
        struct hm_errmsg em = {{0}};
        if (hm_model_load(argv[3], &m, &em) < 0) {
            fprintf(stderr, "%s\n", em.text);
            return 1;
        }
        hp = m->hp;
    } else if (hm_test_model_new(&hp, HM_FEAT_QK_NORM | HM_FEAT_SHARED_EXPERTS, type, 1, &m) < 0) {
        return 1;
    }
    {
        struct hm_param_counts c;
        hm_hparams_count(&hp, m->features, type, &c);
        printf("model: %.1fM params (%.1fM active), %s, %u threads\n", c.total / 1e6,
               c.active / 1e6, hm_dtype_name(type), nt);
    }
    hm_pool_new(nt, &p);
    hm_pool_run(p, 2, noop, NULL);
    t0 = now_s();
    for (i = 0; i < 100000; i++)
        hm_pool_run(p, 2 * nt, noop, NULL);
    printf("pool: %.2f us per hm_pool_run (%u threads, empty tasks)\n",
           (now_s() - t0) / 100000 * 1e6, nt);
    bench_pool(nt);
    bench_matmul(p, type);
    hm_pool_free(p);
    bench_mode(m, nt, HM_MATMUL_DETERMINISTIC);
    if (type == HM_DTYPE_F32)
        bench_mode(m, nt, HM_MATMUL_BLAS);
    if (argc > 3)
        hm_model_free(m);
    else
        hm_test_model_free(m);
    return 0;
}
