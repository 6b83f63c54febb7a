/*
 * engine.h - running HybridMoE: sessions (one per request) and batched steps.
 *
 *     struct hm_engine *e;
 *     struct hm_engine_opts eo = hm_engine_opts_default();
 *     hm_engine_new(model, &eo, &e);
 *
 *     struct hm_session_opts so = hm_session_opts_default();
 *     so.max_tokens = 64;
 *     struct hm_session *s;
 *     hm_session_new(model, prompt_ids, n_prompt, &so, &s, &em);   // c_req, w, KV sized
 *
 *     struct hm_step_item it = { .s = s, .n_tokens = n_prompt, .logits = buf };
 *     hm_engine_step(e, &it, 1);             // prefill (any chunking gives the same logits)
 *     loop:
 *         tok = sample(buf);
 *         hm_session_push(s, tok);           // appends a generated token (c_t computed)
 *         it.n_tokens = 1;
 *         hm_engine_step(e, &it, 1);         // decode
 *     hm_session_free(s);
 *
 * A step processes, for every item, the next n_tokens not yet processed tokens of its
 * session (prompt first, then pushed tokens), for all items at once. Items of one step
 * must name different sessions. At temperature 0 the results are bit-identical
 * whatever the batch composition, the chunking of the prompt and the thread count.
 *
 * Threads: an hm_engine is used by one thread at a time (the batcher); it runs each
 * step on its own compute pool. Sessions belong to whoever created them but must
 * not be touched while a step that names them runs. Models are read-only and can be
 * shared by any number of engines and sessions.
 *
 * Spec: ../shared/spec/HYBRIDMOE.md sections 3-9 and 12.
 */
#ifndef HM_ENGINE_H
#define HM_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hm/err.h"

struct hm_model;
struct hm_engine;
struct hm_session;

enum hm_matmul_mode {
    HM_MATMUL_DETERMINISTIC = 0, /* own kernels, fixed reduction order: batch invariant */
    HM_MATMUL_BLAS = 1,          /* OpenBLAS sgemm where it is faster; not batch invariant */
};

struct hm_engine_opts {
    unsigned n_threads;          /* compute pool threads incl. the caller; 0 = cores */
    uint32_t max_step_tokens;    /* most tokens in one step (sum of n_tokens); >= 1 */
    uint32_t max_step_items;     /* most sessions in one step */
    enum hm_matmul_mode matmul;
    bool force_static;           /* bench: fixed top-K, full windows, no cross-scale */
};
struct hm_engine_opts hm_engine_opts_default(void);

/* Returns owned; free with hm_engine_free(). The model must outlive the engine. */
int hm_engine_new(const struct hm_model *m, const struct hm_engine_opts *o,
                  struct hm_engine **out);
void hm_engine_free(struct hm_engine *e);

/* Request-level controls (spec 10, 12.6). "unset" values leave the model's policy. */
struct hm_session_opts {
    uint32_t max_tokens;     /* generated tokens planned: N = n_prompt + max_tokens */
    float complexity;        /* [0,1] fixes c for every token; < 0 = unset */
    int64_t window;          /* [1, n_ctx] fixes w; 0 = unset */
    uint32_t max_experts;    /* [1, K] caps K; 0 = unset */
    float router_threshold;  /* [0,1] fixes tau; < 0 = unset */
    bool trace;              /* record per-token c_t and expert choices */
    bool force_static;       /* fixed top-K, w = N, no cross-scale (benchmarks only) */
};
struct hm_session_opts hm_session_opts_default(void);

/* Validates the options against the model (ranges of 12.6, empty prompt, prompt or
 * N past n_ctx, token ids outside the vocabulary: HM_EINVAL / HM_ERANGE with a message
 * naming the field), computes c_t over the prompt, c_req and the window, and
 * allocates the KV cache once. Copies prompt. Returns owned; free with
 * hm_session_free(). */
int hm_session_new(const struct hm_model *m, const int32_t *prompt, uint32_t n_prompt,
                   const struct hm_session_opts *o, struct hm_session **out,
                   struct hm_errmsg *em);
void hm_session_free(struct hm_session *s);

/* KV bytes a session with these inputs would allocate, and the all-G baseline,
 * without allocating (admission control). c_req must be given (it needs the prompt's
 * tokens: use hm_session_plan). */
struct hm_session_plan {
    double c_req;
    int64_t window;
    uint32_t n_ctx_planned;       /* N */
    uint64_t kv_bytes;
    uint64_t kv_bytes_baseline;
};
int hm_session_plan(const struct hm_model *m, const int32_t *prompt, uint32_t n_prompt,
                    const struct hm_session_opts *o, struct hm_session_plan *out,
                    struct hm_errmsg *em);

/* Appends a generated token (its c_t is computed now). HM_ERANGE past N, HM_EINVAL
 * for an id outside the vocabulary. */
int hm_session_push(struct hm_session *s, int32_t token);

uint32_t hm_session_n_tokens(const struct hm_session *s);  /* prompt + pushed */
uint32_t hm_session_n_past(const struct hm_session *s);    /* processed by steps */
uint32_t hm_session_n_prompt(const struct hm_session *s);
const int32_t *hm_session_tokens(const struct hm_session *s); /* borrowed */

struct hm_session_stats {
    double c_req;
    int64_t window;
    uint32_t n_ctx_planned;      /* N */
    uint32_t n_past;
    uint64_t kv_bytes;           /* as allocated (section 8, 12.10) */
    uint64_t kv_bytes_baseline;  /* all-G model of the same shape */
    uint64_t sum_experts;        /* sum of k over processed tokens and MoE layers */
    uint64_t n_expert_decisions; /* processed tokens x MoE layers */
    double mean_experts;         /* sum_experts / n_expert_decisions (0 if none) */
    uint64_t attn_positions;     /* sum over processed tokens and layers of positions attended */
};
void hm_session_get_stats(const struct hm_session *s, struct hm_session_stats *out);

/* Per-token trace (if opts.trace): for position t, c[t]; for MoE layer j (in layer
 * order), k[t * n_moe + j] and experts[(t * n_moe + j) * K + i] for i < k (chosen
 * order: probability descending, ties to the lower index). Borrowed. */
struct hm_trace {
    uint32_t n_pos;           /* positions recorded so far (processed) */
    uint32_t n_moe;           /* MoE layers */
    uint32_t k_max;           /* K */
    const float *c;           /* c_t for every known token (prompt + pushed) */
    const uint8_t *k;
    const uint8_t *experts;
};
const struct hm_trace *hm_session_trace(const struct hm_session *s); /* NULL if not traced */

/* c_t of token position t (t < n_tokens). */
float hm_session_complexity(const struct hm_session *s, uint32_t t);

struct hm_step_item {
    struct hm_session *s;
    uint32_t n_tokens;   /* next tokens of s to process (>= 1) */
    bool all_logits;     /* logits for every processed token, else only the last */
    float *logits;       /* caller-owned: (all_logits ? n_tokens : 1) x V floats; may be NULL */
};

/* Runs one step. Errors (HM_EINVAL: empty item, a session twice, more tokens than the
 * session holds or than the engine allows; HM_ENOMEM) leave every session unchanged. */
int hm_engine_step(struct hm_engine *e, struct hm_step_item *items, size_t n_items);

/* Timing counters for benchmarks and /metrics (nanoseconds, cumulative). */
struct hm_engine_profile {
    uint64_t steps, tokens;
    uint64_t ns_total, ns_embed, ns_xscale, ns_attn_g, ns_attn_l, ns_attn_m, ns_router,
        ns_experts, ns_dense_ffn, ns_norm, ns_output;
};
void hm_engine_get_profile(const struct hm_engine *e, struct hm_engine_profile *out);

/* Window formula of section 8 (exposed for tests and admission). */
int64_t hm_window_policy(const struct hm_model *m, double c_req, uint64_t n_planned);

#endif
