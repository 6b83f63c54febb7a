/*
 * forward.h - structures shared by the forward pass's files: sessions and their KV
 * caches (session.c, kvcache.c), the engine and its scratch (forward.c), attention
 * (attn.c) and the MoE (moe.c). Internal to engine/.
 */
#ifndef HM_ENGINE_FORWARD_H
#define HM_ENGINE_FORWARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hm/engine.h"
#include "hm/model.h"
#include "hm/pool.h"
#include "internal.h"

/* ---- KV cache (kvcache.c) -------------------------------------------------------------
 * One allocation per session holds every layer's cache, all float32:
 *   G: k, v   N x (h_kv * hd) each, position p at row p
 *   L: k, v   cap = min(w, N) rows each, position p at row p % cap (ring buffer)
 *   M: ckv    N x r, kr N x d_r (the normalised latent and the rotated shared rope key)
 * followed by the cross-scale state (allocated by multiscale.c, counted here). */
struct hm__kv_layer {
    char type;
    uint32_t cap;    /* rows */
    float *k, *v;    /* G, L */
    float *ckv, *kr; /* M */
};

/* Elements of the caches for a planned context N and window w (section 8, 12.10). */
uint64_t hm__kv_elems(const struct hm_model *m, uint32_t n_planned, int64_t window, bool xs);
uint64_t hm__kv_elems_baseline(const struct hm_model *m, uint32_t n_planned);
/* Allocates *mem (owned, hm_free_aligned) and fills layers[n_layer]. */
int hm__kv_alloc(const struct hm_model *m, uint32_t n_planned, int64_t window,
                 struct hm__kv_layer *layers, float **mem);

struct hm_session {
    const struct hm_model *m;
    struct hm_session_opts o;
    uint32_t n_planned; /* N */
    uint32_t n_prompt, n_tokens, n_past;
    int32_t *tokens; /* N; [0, n_tokens) known */
    float *c;        /* N; c_t of every known token */
    double c_req;
    int64_t window;
    bool static_route;       /* force_static: fixed top-K */
    bool use_xs;             /* cross-scale on (model has it, not force_static) */
    float *kv_mem;           /* owned (aligned) */
    struct hm__kv_layer *kv; /* n_layer, owned */
    struct hm__xs_state *xs; /* owned, NULL if !use_xs */
    uint64_t kv_bytes, kv_bytes_baseline;
    uint64_t sum_experts, n_expert_decisions, attn_positions;
    struct hm_trace trace; /* when o.trace */
    uint8_t *tr_k;         /* N x n_moe */
    uint8_t *tr_experts;   /* N x n_moe x K */
    bool in_step;          /* set while a step validates its items */
};

/* ---- the engine ------------------------------------------------------------------------ */

/* One token row of a step. */
struct hm__tok {
    uint32_t item; /* index into the step's items */
    uint32_t pos;  /* position in its sequence */
    int32_t id;
    float c; /* c_t */
};

/* Per-item view of a step. */
struct hm__item {
    struct hm_session *s;
    uint32_t row0; /* first token row */
    uint32_t n;    /* tokens */
    uint32_t pos0; /* position of the first token (= n_past) */
};

struct hm__mla_w {
    float *wkT; /* h x r x d_n: per head, W_kv_b's K part transposed (dequantized) */
    float *wv;  /* h x d_v x r: per head, W_kv_b's V part (dequantized) */
};

struct hm_engine {
    const struct hm_model *m;
    struct hm_engine_opts o;
    struct hm_pool *pool;
    unsigned nt;
    bool blas;
    size_t inline_work; /* element-wise runs smaller than this stay on the caller (tests: 0) */
    uint32_t T;         /* max_step_tokens */
    /* dimensions */
    uint32_t d, qdim, kvdim, attdim, n_moe, K, E;
    uint32_t ffw;          /* width of the ffn hidden buffers */
    double *rope_gl;       /* hd/2 inverse frequencies */
    double *rope_m;        /* d_r/2 */
    struct hm__mla_w *mla; /* n_layer (only M entries set) */
    /* scratch, preallocated for T tokens (row-major, one row per token) */
    float *h;                /* T x d residual stream */
    float *xn;               /* T x d normalised input */
    float *xtmp;             /* T x d (xs embeddings, block outputs) */
    float *q;                /* T x qdim */
    float *qa;               /* T x r_q (M: q_a output) */
    float *kva;              /* T x (r + d_r) (M: kv_a output: latent | rope key) */
    float *kx, *vx;          /* T x kvdim */
    float *att;              /* T x attdim */
    float *fg, *fu;          /* T x ffw hidden (gate, up) */
    float *moe_x;            /* T*K x d gathered inputs */
    float *moe_y;            /* T*K x d expert outputs */
    float *moe_g, *moe_u;    /* T*K x ff_e */
    float *router;           /* T x E logits -> probabilities */
    uint8_t *sel;            /* T x K chosen experts */
    float *selw;             /* T x K weights */
    uint8_t *selk;           /* T chosen counts */
    uint32_t *slot_row;      /* T x K: row of moe_y for (token, j) */
    uint32_t *exp_cnt;       /* E */
    uint32_t *exp_off;       /* E + 1 */
    struct hm__mm_job *jobs; /* 2 * E + 4 */
    struct hm__tok *toks;    /* T */
    struct hm__item *items;  /* max_step_items */
    uint32_t lb;             /* logit rows per output matmul: min(T, 64) */
    float *lbuf;             /* lb x V logits before they are copied to the callers */
    float **ldst;            /* lb destinations (borrowed from the step's items) */
    float *tscratch;         /* nt x tscr per-thread scratch */
    size_t tscr;
    struct hm_engine_profile prof;
};

/* Runs n tasks of about `work` floats each on the pool, or inline on the caller when the
 * whole run is too small to pay for waking a worker (results never depend on it). */
void hm__run(struct hm_engine *e, size_t n, size_t work, hm_pool_fn fn, void *ctx);

/* Monotonic clock in nanoseconds (profiling). */
uint64_t hm__now_ns(void);

/* ---- attention (attn.c) ---------------------------------------------------------------
 * Runs layer l's attention for the step: input e->xn (n_rows), output e->xtmp (n_rows x d,
 * after W_o). Writes the sessions' caches for the step's positions. */
void hm__attention(struct hm_engine *e, uint32_t l, const struct hm__item *items, size_t n_items,
                   uint32_t n_rows);

/* ---- MoE and dense FFN (moe.c) ----------------------------------------------------------
 * Input e->xn (n_rows), output e->xtmp (n_rows x d). moe_idx = index among MoE layers. */
void hm__ffn_dense(struct hm_engine *e, const struct hm_layer *L, uint32_t n_rows);
/* Returns the nanoseconds spent in the router (logits and routing). */
uint64_t hm__ffn_moe(struct hm_engine *e, const struct hm_layer *L, uint32_t moe_idx,
                     const struct hm__item *items, size_t n_items, uint32_t n_rows);

/* Dynamic routing (section 9, 12.4) of one token. p: E router logits, replaced by the
 * softmax probabilities. Writes the chosen experts (probability descending, ties to the
 * lower index) and their weights (renormalised if norm), returns k. tau >= 1 gives K. */
uint32_t hm__route(float *p, uint32_t E, uint32_t K, uint32_t k_min, float tau, bool norm,
                   uint8_t *sel, float *w);
/* tau for a token of complexity c: fixed threshold if >= 0, else clamp(p0 + g (c-0.5)). */
float hm__route_tau(const struct hm_hparams *hp, float c, float fixed);

#endif
