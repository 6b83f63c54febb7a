/*
 * moe.c - feed-forward blocks: dense SwiGLU and the mixture of experts with dynamic 1..K
 * routing (spec 9, 12.4, 12.6).
 *
 * The MoE groups a step's tokens by expert: after routing, every (token, chosen expert)
 * pair gets one row of a gathered buffer, ordered by expert, so each active expert runs
 * ONE matrix multiply over all the step's tokens that chose it (gate and up of every
 * active expert plus the shared experts share one pool run, the downs another). Each
 * token's output is then combined in its own chosen order: sum_j w_j y_j (from zero),
 * times expert_weights_scale, plus the shared experts' output. Which other tokens share
 * an expert never changes a row's result (hm__matmul is row-independent), so the MoE is
 * batch invariant.
 */
#include <string.h>

#include "forward.h"
#include "kernels.h"

float hm__route_tau(const struct hm_hparams *hp, float c, float fixed)
{
    float tau;
    if (fixed >= 0.0f)
        return fixed;
    tau = hp->router_threshold + hp->router_threshold_gain * (c - 0.5f);
    if (tau < 0.0f)
        tau = 0.0f;
    if (tau > 1.0f)
        tau = 1.0f;
    return tau;
}

uint32_t hm__route(float *p, uint32_t E, uint32_t K, uint32_t k_min, float tau, bool norm,
                   uint8_t *sel, float *w)
{
    uint8_t taken[HM_MAX_EXPERTS];
    uint32_t r, i, k;
    float cum = 0.0f;

    if (K > E)
        K = E;
    if (k_min < 1)
        k_min = 1;
    if (k_min > K)
        k_min = K;
    hm__softmax(p, E);
    memset(taken, 0, E);
    for (r = 0; r < K; r++) { /* selection: descending, ties to the lower index */
        int best = -1;
        for (i = 0; i < E; i++)
            if (!taken[i] && (best < 0 || p[i] > p[best]))
                best = (int)i;
        if (best < 0)
            break; /* not reached: K <= E */
        taken[best] = 1;
        sel[r] = (uint8_t)best;
    }
    k = K;
    if (tau < 1.0f) {
        for (r = 0; r < K; r++) {
            cum += p[sel[r]];
            if (r + 1 >= k_min && cum >= tau) {
                k = r + 1;
                break;
            }
        }
    }
    if (norm) {
        float sum = 0.0f;
        for (r = 0; r < k; r++)
            sum += p[sel[r]];
        for (r = 0; r < k; r++)
            w[r] = p[sel[r]] / sum;
    } else {
        for (r = 0; r < k; r++)
            w[r] = p[sel[r]];
    }
    return k;
}

/* ---- SwiGLU rows ------------------------------------------------------------------------ */

struct swiglu_ctx {
    float *g;
    const float *u;
    size_t width, ld;
};

static void swiglu_task(void *vc, size_t row, unsigned thread)
{
    struct swiglu_ctx *c = vc;
    (void)thread;
    hm__swiglu(c->g + row * c->ld, c->u + row * c->ld, c->width);
}

void hm__ffn_dense(struct hm_engine *e, const struct hm_layer *L, uint32_t n_rows)
{
    uint32_t ff = L->ffn_gate.rows;
    struct hm__mm_job jobs[2] = {
        {&L->ffn_gate, 0, e->xn, n_rows, e->d, e->fg, e->ffw},
        {&L->ffn_up, 0, e->xn, n_rows, e->d, e->fu, e->ffw},
    };
    struct swiglu_ctx sc = {e->fg, e->fu, ff, e->ffw};

    hm__matmul_jobs(jobs, 2, e->pool, e->blas);
    hm__run(e, n_rows, 8 * (size_t)ff, swiglu_task, &sc);
    hm__matmul_jobs(&(struct hm__mm_job){&L->ffn_down, 0, e->fg, n_rows, e->ffw, e->xtmp, e->d}, 1,
                    e->pool, e->blas);
}

/* ---- MoE ---------------------------------------------------------------------------------- */

struct combine_ctx {
    struct hm_engine *e;
    bool shared;
    float scale;
};

/* out = scale * sum_j w_j y_(j) + shared (xtmp holds the shared output, or nothing). */
static void combine_task(void *vc, size_t row, unsigned thread)
{
    struct combine_ctx *c = vc;
    struct hm_engine *e = c->e;
    uint32_t K = e->K, j, k = e->selk[row];
    float *acc = e->tscratch + (size_t)thread * e->tscr;
    float *out = e->xtmp + row * e->d;
    size_t i;

    memset(acc, 0, e->d * sizeof(float));
    for (j = 0; j < k; j++)
        hm__axpy(acc, e->selw[row * K + j], e->moe_y + (size_t)e->slot_row[row * K + j] * e->d,
                 e->d);
    if (c->scale != 1.0f)
        hm__scale(acc, c->scale, e->d);
    if (c->shared)
        for (i = 0; i < e->d; i++)
            out[i] = acc[i] + out[i];
    else
        memcpy(out, acc, e->d * sizeof(float));
}

uint64_t hm__ffn_moe(struct hm_engine *e, const struct hm_layer *L, uint32_t moe_idx,
                     const struct hm__item *items, size_t n_items, uint32_t n_rows)
{
    uint64_t t0 = hm__now_ns(), t_route;
    const struct hm_hparams *hp = &e->m->hp;
    uint32_t E = e->E, K = e->K, ffe = hp->ff_expert, t, j, x;
    uint32_t n_routed = 0, nj = 0;
    bool shared = hp->n_expert_shared > 0 && L->gate_shexp.data;
    struct swiglu_ctx sc;
    struct combine_ctx cc = {e, shared, hp->expert_weights_scale};
    size_t i;

    /* router logits for every token, then each token's choice */
    hm__matmul_jobs(&(struct hm__mm_job){&L->router, 0, e->xn, n_rows, e->d, e->router, E}, 1,
                    e->pool, e->blas);
    memset(e->exp_cnt, 0, E * sizeof(*e->exp_cnt));
    for (i = 0; i < n_items; i++) {
        const struct hm__item *it = &items[i];
        const struct hm_session *s = it->s;
        uint32_t Ks = s->o.max_experts ? s->o.max_experts : K;
        uint32_t kmin = hp->router_k_min < Ks ? hp->router_k_min : Ks;
        bool stat = s->static_route || e->o.force_static;
        uint64_t sum = 0;
        for (j = 0; j < it->n; j++) {
            uint32_t row = it->row0 + j, k;
            float tau = stat ? 1.0f : hm__route_tau(hp, e->toks[row].c, s->o.router_threshold);
            k = hm__route(e->router + (size_t)row * E, E, Ks, kmin, tau, hp->expert_weights_norm,
                          e->sel + (size_t)row * K, e->selw + (size_t)row * K);
            e->selk[row] = (uint8_t)k;
            for (x = 0; x < k; x++)
                e->exp_cnt[e->sel[(size_t)row * K + x]]++;
            sum += k;
            if (s->o.trace) {
                size_t base = (size_t)(it->pos0 + j) * s->trace.n_moe + moe_idx;
                s->tr_k[base] = (uint8_t)k;
                memcpy(s->tr_experts + base * K, e->sel + (size_t)row * K, k);
            }
        }
        it->s->sum_experts += sum;
        it->s->n_expert_decisions += it->n;
    }
    t_route = hm__now_ns() - t0;
    /* gather rows by expert */
    e->exp_off[0] = 0;
    for (x = 0; x < E; x++)
        e->exp_off[x + 1] = e->exp_off[x] + e->exp_cnt[x];
    n_routed = e->exp_off[E];
    memset(e->exp_cnt, 0, E * sizeof(*e->exp_cnt));
    for (t = 0; t < n_rows; t++) {
        for (j = 0; j < e->selk[t]; j++) {
            uint32_t ex = e->sel[(size_t)t * K + j];
            uint32_t row = e->exp_off[ex] + e->exp_cnt[ex]++;
            e->slot_row[(size_t)t * K + j] = row;
            memcpy(e->moe_x + (size_t)row * e->d, e->xn + (size_t)t * e->d, e->d * sizeof(float));
        }
    }
    /* gate and up of every active expert (and the shared experts) in one run */
    for (x = 0; x < E; x++) {
        uint32_t n = e->exp_off[x + 1] - e->exp_off[x];
        size_t off = e->exp_off[x];
        if (!n)
            continue;
        e->jobs[nj++] = (struct hm__mm_job){
            &L->gate_exps, x, e->moe_x + off * e->d, n, e->d, e->moe_g + off * ffe, ffe};
        e->jobs[nj++] = (struct hm__mm_job){
            &L->up_exps, x, e->moe_x + off * e->d, n, e->d, e->moe_u + off * ffe, ffe};
    }
    if (shared) {
        e->jobs[nj++] = (struct hm__mm_job){&L->gate_shexp, 0, e->xn, n_rows, e->d, e->fg, e->ffw};
        e->jobs[nj++] = (struct hm__mm_job){&L->up_shexp, 0, e->xn, n_rows, e->d, e->fu, e->ffw};
    }
    hm__matmul_jobs(e->jobs, nj, e->pool, e->blas);
    sc = (struct swiglu_ctx){e->moe_g, e->moe_u, ffe, ffe};
    hm__run(e, n_routed, 8 * (size_t)ffe, swiglu_task, &sc);
    if (shared) {
        sc = (struct swiglu_ctx){e->fg, e->fu, L->gate_shexp.rows, e->ffw};
        hm__run(e, n_rows, 8 * (size_t)L->gate_shexp.rows, swiglu_task, &sc);
    }
    nj = 0;
    for (x = 0; x < E; x++) {
        uint32_t n = e->exp_off[x + 1] - e->exp_off[x];
        size_t off = e->exp_off[x];
        if (!n)
            continue;
        e->jobs[nj++] = (struct hm__mm_job){
            &L->down_exps, x, e->moe_g + off * ffe, n, ffe, e->moe_y + off * e->d, e->d};
    }
    if (shared)
        e->jobs[nj++] =
            (struct hm__mm_job){&L->down_shexp, 0, e->fg, n_rows, e->ffw, e->xtmp, e->d};
    hm__matmul_jobs(e->jobs, nj, e->pool, e->blas);
    hm__run(e, n_rows, (size_t)e->d * (K + 1), combine_task, &cc);
    return t_route;
}
