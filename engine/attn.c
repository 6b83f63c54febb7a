/*
 * attn.c - attention layers G (global GQA), L (sliding-window GQA, ring-buffer cache) and
 * M (multi-head latent attention, absorbed form) for one step (spec 5, 12.5, 12.7).
 *
 * A step's projections are one matrix multiply over all its tokens; the attention proper
 * runs as one pool task per (item, query head), looping over that item's new tokens.
 * For every (token, head) the arithmetic is the same whatever the batch: scores in
 * position order (hm__dot), softmax in float32 with the maximum subtracted, and the
 * weighted sum accumulated in position order. A position's key/value are the same float
 * whether they are read from the cache or from this step's scratch, so chunking a prompt
 * does not change a bit.
 *
 * L layers: positions older than the step come from the ring (row p % cap); the step's
 * own positions come from scratch, and only after every query of the step is done are
 * the item's last min(n, cap) positions written into the ring, so a long prefill chunk
 * never overwrites a key that one of its own queries still needs.
 *
 * M layers: q_nope is absorbed through W_kv_b's K part (q~ = W_UK^T q_nope, r floats) and
 * scored against the cached latent; the weighted sum of latents goes through W_kv_b's V
 * part afterwards. Prefill and decode both use this form.
 */
#include <math.h>
#include <string.h>

#include "forward.h"
#include "kernels.h"

struct rows_ctx {
    struct hm_engine *e;
    const struct hm_layer *L;
    const struct hm__item *items;
    uint32_t l;
};

struct heads_ctx {
    struct hm_engine *e;
    const struct hm__item *items;
    uint32_t l;
    uint32_t h;
};

/* ---- G / L ----------------------------------------------------------------------------- */

/* Per token row: QK-norm and RoPE on q and k; G layers also store k, v in the cache. */
static void gl_rows_task(void *vc, size_t row, unsigned thread)
{
    struct rows_ctx *c = vc;
    struct hm_engine *e = c->e;
    const struct hm_hparams *hp = &e->m->hp;
    const struct hm__tok *tk = &e->toks[row];
    uint32_t hd = hp->head_dim, i;
    float *q = e->q + (size_t)row * e->qdim;
    float *k = e->kx + (size_t)row * e->kvdim;
    float *v = e->vx + (size_t)row * e->kvdim;
    float *cs = e->tscratch + (size_t)thread * e->tscr, *sn = cs + hd / 2;

    hm__rope_table(cs, sn, hd, tk->pos, e->rope_gl);
    for (i = 0; i < hp->n_head; i++) {
        if (c->L->q_norm)
            hm__rmsnorm(q + i * hd, q + i * hd, hd, c->L->q_norm, NULL, 0.5f, hp->eps);
        hm__rope_apply(q + i * hd, hd, cs, sn);
    }
    for (i = 0; i < hp->n_head_kv; i++) {
        if (c->L->k_norm)
            hm__rmsnorm(k + i * hd, k + i * hd, hd, c->L->k_norm, NULL, 0.5f, hp->eps);
        hm__rope_apply(k + i * hd, hd, cs, sn);
    }
    if (c->L->type == 'G') {
        const struct hm__kv_layer *kl = &c->items[tk->item].s->kv[c->l];
        memcpy(kl->k + (size_t)tk->pos * e->kvdim, k, e->kvdim * sizeof(float));
        memcpy(kl->v + (size_t)tk->pos * e->kvdim, v, e->kvdim * sizeof(float));
    }
}

/* Where positions [lo, t] of one item's keys and values live: up to 3 runs of consecutive
 * rows (the ring may wrap once; the step's own positions come from scratch), in position
 * order. Row pointers point at kv head offset koff. */
struct seg {
    const float *k, *v;
    uint32_t n;
};

static int kv_segments(const struct hm_engine *e, const struct hm__item *it,
                       const struct hm__kv_layer *kl, uint32_t lo, uint32_t t, size_t koff,
                       struct seg out[3])
{
    size_t kvd = e->kvdim;
    uint32_t p = lo, end;
    int n = 0;
    if (kl->type != 'L') { /* the step's positions are already in the cache */
        out[0] = (struct seg){kl->k + (size_t)lo * kvd + koff, kl->v + (size_t)lo * kvd + koff,
                              t - lo + 1};
        return 1;
    }
    end = t + 1 < it->pos0 ? t + 1 : it->pos0;
    while (p < end) { /* older positions: the ring */
        uint32_t slot = p % kl->cap, run = end - p;
        if (run > kl->cap - slot)
            run = kl->cap - slot;
        out[n++] =
            (struct seg){kl->k + (size_t)slot * kvd + koff, kl->v + (size_t)slot * kvd + koff, run};
        p += run;
    }
    if (t >= it->pos0) { /* this step's positions: scratch */
        uint32_t p0 = lo > it->pos0 ? lo : it->pos0;
        size_t r0 = (size_t)it->row0 + (p0 - it->pos0);
        out[n++] = (struct seg){e->kx + r0 * kvd + koff, e->vx + r0 * kvd + koff, t - p0 + 1};
    }
    return n;
}

static void gl_heads_task(void *vc, size_t task, unsigned thread)
{
    struct heads_ctx *c = vc;
    struct hm_engine *e = c->e;
    const struct hm_hparams *hp = &e->m->hp;
    const struct hm__item *it = &c->items[task / c->h];
    uint32_t head = (uint32_t)(task % c->h);
    uint32_t kvh = head / (hp->n_head / hp->n_head_kv);
    uint32_t hd = hp->head_dim, j;
    const struct hm__kv_layer *kl = &it->s->kv[c->l];
    bool local = kl->type == 'L';
    int64_t w = it->s->window;
    float scale = 1.0f / sqrtf((float)hd);
    float *scores = e->tscratch + (size_t)thread * e->tscr;
    size_t koff = (size_t)kvh * hd;

    for (j = 0; j < it->n; j++) {
        uint32_t row = it->row0 + j, t = it->pos0 + j, lo = 0, np, off;
        const float *q = e->q + (size_t)row * e->qdim + (size_t)head * hd;
        float *out = e->att + (size_t)row * e->attdim + (size_t)head * hd;
        struct seg sg[3];
        int ns, g;
        if (local && (int64_t)t + 1 > w)
            lo = (uint32_t)((int64_t)t + 1 - w);
        np = t - lo + 1;
        ns = kv_segments(e, it, kl, lo, t, koff, sg);
        for (g = 0, off = 0; g < ns; off += sg[g].n, g++)
            hm__dot_rows(q, sg[g].k, e->kvdim, sg[g].n, hd, scores + off);
        for (off = 0; off < np; off++)
            scores[off] *= scale;
        hm__softmax(scores, np);
        memset(out, 0, hd * sizeof(float));
        for (g = 0, off = 0; g < ns; off += sg[g].n, g++)
            hm__axpy_rows(out, scores + off, sg[g].v, e->kvdim, sg[g].n, hd);
    }
}

static void attn_gl(struct hm_engine *e, uint32_t l, const struct hm__item *items, size_t n_items,
                    uint32_t n_rows)
{
    const struct hm_layer *L = &e->m->layers[l];
    struct hm__mm_job jobs[3] = {
        {&L->wq, 0, e->xn, n_rows, e->d, e->q, e->qdim},
        {&L->wk, 0, e->xn, n_rows, e->d, e->kx, e->kvdim},
        {&L->wv, 0, e->xn, n_rows, e->d, e->vx, e->kvdim},
    };
    struct rows_ctx rc = {e, L, items, l};
    struct heads_ctx hc = {e, items, l, e->m->hp.n_head};
    size_t i;

    hm__matmul_jobs(jobs, 3, e->pool, e->blas);
    hm__run(e, n_rows, e->qdim + 2 * (size_t)e->kvdim, gl_rows_task, &rc);
    hm_pool_run(e->pool, n_items * hc.h, gl_heads_task, &hc);
    if (L->type == 'L') {
        /* now that every query of the step is done, keep the last positions in the ring */
        for (i = 0; i < n_items; i++) {
            const struct hm__item *it = &items[i];
            const struct hm__kv_layer *kl = &it->s->kv[l];
            uint32_t j0 = it->n > kl->cap ? it->n - kl->cap : 0, j;
            for (j = j0; j < it->n; j++) {
                size_t slot = (size_t)((it->pos0 + j) % kl->cap);
                memcpy(kl->k + slot * e->kvdim, e->kx + (size_t)(it->row0 + j) * e->kvdim,
                       e->kvdim * sizeof(float));
                memcpy(kl->v + slot * e->kvdim, e->vx + (size_t)(it->row0 + j) * e->kvdim,
                       e->kvdim * sizeof(float));
            }
        }
    }
}

/* ---- M --------------------------------------------------------------------------------- */

static void m_qa_norm_task(void *vc, size_t row, unsigned thread)
{
    struct rows_ctx *c = vc;
    struct hm_engine *e = c->e;
    uint32_t rq = e->m->hp.q_lora_rank;
    float *qa = e->qa + (size_t)row * rq;
    (void)thread;
    hm__rmsnorm(qa, qa, rq, c->L->q_a_norm, NULL, 0.5f, e->m->hp.eps);
}

static void m_rows_task(void *vc, size_t row, unsigned thread)
{
    struct rows_ctx *c = vc;
    struct hm_engine *e = c->e;
    const struct hm_hparams *hp = &e->m->hp;
    const struct hm__tok *tk = &e->toks[row];
    uint32_t r = hp->kv_lora_rank, dr = hp->qk_rope, dqk = hp->qk_nope + hp->qk_rope, i;
    float *kva = e->kva + (size_t)row * (r + dr);
    float *q = e->q + (size_t)row * e->qdim;
    const struct hm__kv_layer *kl = &c->items[tk->item].s->kv[c->l];
    float *cs = e->tscratch + (size_t)thread * e->tscr, *sn = cs + dr / 2;

    hm__rmsnorm(kva, kva, r, c->L->kv_a_norm, NULL, 0.5f, hp->eps);
    hm__rope_table(cs, sn, dr, tk->pos, e->rope_m);
    hm__rope_apply(kva + r, dr, cs, sn);
    for (i = 0; i < hp->n_head; i++)
        hm__rope_apply(q + (size_t)i * dqk + hp->qk_nope, dr, cs, sn);
    memcpy(kl->ckv + (size_t)tk->pos * r, kva, r * sizeof(float));
    memcpy(kl->kr + (size_t)tk->pos * dr, kva + r, dr * sizeof(float));
}

static void m_heads_task(void *vc, size_t task, unsigned thread)
{
    struct heads_ctx *c = vc;
    struct hm_engine *e = c->e;
    const struct hm_hparams *hp = &e->m->hp;
    const struct hm__item *it = &c->items[task / c->h];
    uint32_t head = (uint32_t)(task % c->h);
    uint32_t r = hp->kv_lora_rank, dn = hp->qk_nope, dr = hp->qk_rope, dv = hp->v_head_dim;
    uint32_t dqk = dn + dr, j, p;
    const struct hm__kv_layer *kl = &it->s->kv[c->l];
    const struct hm__mla_w *mw = &e->mla[c->l];
    const float *wkT = mw->wkT + (size_t)head * r * dn;
    const float *wv = mw->wv + (size_t)head * dv * r;
    float scale = 1.0f / sqrtf((float)dqk);
    float *scores = e->tscratch + (size_t)thread * e->tscr;
    float *sc2 = scores + hp->n_ctx;
    float *qabs = sc2 + hp->n_ctx;
    float *olat = qabs + r;

    for (j = 0; j < it->n; j++) {
        uint32_t row = it->row0 + j, t = it->pos0 + j;
        const float *q = e->q + (size_t)row * e->qdim + (size_t)head * dqk;
        float *out = e->att + (size_t)row * e->attdim + (size_t)head * dv;
        hm__dot_rows(q, wkT, dn, r, dn, qabs); /* q~ = W_UK^T q_nope */
        hm__dot_rows(qabs, kl->ckv, r, t + 1, r, scores);
        hm__dot_rows(q + dn, kl->kr, dr, t + 1, dr, sc2);
        for (p = 0; p <= t; p++)
            scores[p] = (scores[p] + sc2[p]) * scale;
        hm__softmax(scores, t + 1);
        memset(olat, 0, r * sizeof(float));
        hm__axpy_rows(olat, scores, kl->ckv, r, t + 1, r);
        hm__dot_rows(olat, wv, r, dv, r, out); /* o = W_UV o~ */
    }
}

static void attn_m(struct hm_engine *e, uint32_t l, const struct hm__item *items, size_t n_items,
                   uint32_t n_rows)
{
    const struct hm_hparams *hp = &e->m->hp;
    const struct hm_layer *L = &e->m->layers[l];
    uint32_t r = hp->kv_lora_rank, dr = hp->qk_rope;
    struct rows_ctx rc = {e, L, items, l};
    struct heads_ctx hc = {e, items, l, hp->n_head};
    struct hm__mm_job jobs[2] = {
        {&L->wkv_a, 0, e->xn, n_rows, e->d, e->kva, r + dr},
        {&L->wq, 0, e->xn, n_rows, e->d, e->q, e->qdim},
    };

    if (hp->q_lora_rank) {
        jobs[1].W = &L->wq_a;
        jobs[1].y = e->qa;
        jobs[1].ldy = hp->q_lora_rank;
        hm__matmul_jobs(jobs, 2, e->pool, e->blas);
        hm__run(e, n_rows, hp->q_lora_rank, m_qa_norm_task, &rc);
        hm__matmul_jobs(
            &(struct hm__mm_job){&L->wq_b, 0, e->qa, n_rows, hp->q_lora_rank, e->q, e->qdim}, 1,
            e->pool, e->blas);
    } else {
        hm__matmul_jobs(jobs, 2, e->pool, e->blas);
    }
    hm__run(e, n_rows, e->qdim + (size_t)r + dr, m_rows_task, &rc);
    hm_pool_run(e->pool, n_items * hc.h, m_heads_task, &hc);
}

void hm__attention(struct hm_engine *e, uint32_t l, const struct hm__item *items, size_t n_items,
                   uint32_t n_rows)
{
    const struct hm_layer *L = &e->m->layers[l];

    if (L->type == 'M')
        attn_m(e, l, items, n_items, n_rows);
    else
        attn_gl(e, l, items, n_items, n_rows);
    hm__matmul_jobs(&(struct hm__mm_job){&L->wo, 0, e->att, n_rows, e->attdim, e->xtmp, e->d}, 1,
                    e->pool, e->blas);
}
