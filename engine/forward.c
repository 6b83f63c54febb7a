/*
 * forward.c - the engine (engine.h): scratch allocated once, and hm_engine_step, which runs
 * the forward pass of section 4 over a batch of sessions at once.
 *
 * DATA FLOW OF A STEP (T = tokens of all items, one row each, items in order)
 *   validate every item (nothing is touched before this succeeds)
 *   h[T x d]   = token_embd rows                        (pool: rows)
 *   h         += CrossScale (hm__xs_push/attend per token, in order; pool: items)
 *   xn         = RMSNorm(h; attn_norm, adapt, c_t)      (pool: rows)
 *   per layer:
 *     xtmp     = Attention_T(xn)                        (attn.c: one matmul per projection,
 *                                                        pool tasks per (item, head))
 *     h       += post_norm(xtmp); xn = RMSNorm(h; ffn_norm, adapt, c_t)       (pool: rows)
 *     xtmp     = FFN(xn)                                (moe.c: dense, or grouped experts)
 *     h       += post_norm(xtmp); xn = RMSNorm(h; next norm, c_t)             (pool: rows)
 *   logits     = output * xn for the rows that want logits, straight into the caller's
 *                buffers (one job per item, one pool run)
 *   commit: n_past, statistics
 * No allocation happens during a step.
 */
#include <string.h>
#include <time.h>

#include "forward.h"
#include "hm/alloc.h"
#include "kernels.h"

uint64_t hm__now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void hm__run(struct hm_engine *e, size_t n, size_t work, hm_pool_fn fn, void *ctx)
{
    hm_pool_run(n * work < e->inline_work ? NULL : e->pool, n, fn, ctx);
}

struct hm_engine_opts hm_engine_opts_default(void)
{
    struct hm_engine_opts o;
    memset(&o, 0, sizeof(o));
    o.n_threads = 0;
    o.max_step_tokens = 512;
    o.max_step_items = 64;
    o.matmul = HM_MATMUL_DETERMINISTIC;
    o.force_static = false;
    return o;
}

static size_t max_sz(size_t a, size_t b)
{
    return a > b ? a : b;
}

static float *falloc(size_t n, int *bad)
{
    float *p = hm_malloc_aligned((n ? n : 1) * sizeof(float));
    if (!p)
        *bad = 1;
    return p;
}

void hm_engine_free(struct hm_engine *e)
{
    uint32_t l;
    if (!e)
        return;
    hm_pool_free(e->pool);
    if (e->mla) {
        for (l = 0; l < e->m->hp.n_layer; l++) {
            hm_free_aligned(e->mla[l].wkT);
            hm_free_aligned(e->mla[l].wv);
        }
        hm_free(e->mla);
    }
    hm_free(e->rope_gl);
    hm_free(e->rope_m);
    hm_free_aligned(e->h);
    hm_free_aligned(e->xn);
    hm_free_aligned(e->xtmp);
    hm_free_aligned(e->q);
    hm_free_aligned(e->qa);
    hm_free_aligned(e->kva);
    hm_free_aligned(e->kx);
    hm_free_aligned(e->vx);
    hm_free_aligned(e->att);
    hm_free_aligned(e->fg);
    hm_free_aligned(e->fu);
    hm_free_aligned(e->moe_x);
    hm_free_aligned(e->moe_y);
    hm_free_aligned(e->moe_g);
    hm_free_aligned(e->moe_u);
    hm_free_aligned(e->router);
    hm_free_aligned(e->selw);
    hm_free_aligned(e->tscratch);
    hm_free_aligned(e->lbuf);
    hm_free(e->ldst);
    hm_free(e->sel);
    hm_free(e->selk);
    hm_free(e->slot_row);
    hm_free(e->exp_cnt);
    hm_free(e->exp_off);
    hm_free(e->jobs);
    hm_free(e->toks);
    hm_free(e->items);
    hm_free(e);
}

/* Per head, W_kv_b's K part transposed (r x d_n) and V part (d_v x r), as f32. */
static int build_mla(struct hm_engine *e, uint32_t l)
{
    const struct hm_hparams *hp = &e->m->hp;
    const struct hm_mat *W = &e->m->layers[l].wkv_b;
    uint32_t r = hp->kv_lora_rank, dn = hp->qk_nope, dv = hp->v_head_dim, h, j, c;
    struct hm__mla_w *mw = &e->mla[l];
    float *row;
    int bad = 0;

    mw->wkT = falloc((size_t)hp->n_head * r * dn, &bad);
    mw->wv = falloc((size_t)hp->n_head * dv * r, &bad);
    row = hm_malloc((size_t)r * sizeof(float) + 1);
    if (bad || !row) {
        hm_free(row);
        return HM_ENOMEM;
    }
    for (h = 0; h < hp->n_head; h++) {
        for (j = 0; j < dn + dv; j++) {
            hm__mat_row(W, 0, h * (dn + dv) + j, row);
            if (j < dn) {
                for (c = 0; c < r; c++)
                    mw->wkT[((size_t)h * r + c) * dn + j] = row[c];
            } else {
                memcpy(mw->wv + ((size_t)h * dv + (j - dn)) * r, row, r * sizeof(float));
            }
        }
    }
    hm_free(row);
    return HM_OK;
}

int hm_engine_new(const struct hm_model *m, const struct hm_engine_opts *o, struct hm_engine **out)
{
    struct hm_engine_opts def = hm_engine_opts_default();
    const struct hm_hparams *hp = &m->hp;
    struct hm_engine *e;
    size_t T, KT, tscr;
    uint32_t l, K, E;
    bool any_m = false, any_gl = false;
    int rc = HM_ENOMEM, bad = 0;

    *out = NULL;
    if (!o)
        o = &def;
    if (o->max_step_tokens < 1 || o->max_step_tokens > (1u << 20) || o->max_step_items < 1 ||
        o->max_step_items > (1u << 16) ||
        (o->matmul != HM_MATMUL_DETERMINISTIC && o->matmul != HM_MATMUL_BLAS))
        return HM_EINVAL;
    e = hm_calloc(1, sizeof(*e));
    if (!e)
        return HM_ENOMEM;
    e->m = m;
    e->o = *o;
    e->blas = o->matmul == HM_MATMUL_BLAS;
    e->inline_work = 8192;
    T = e->T = o->max_step_tokens;
    for (l = 0; l < hp->n_layer; l++) {
        if (hp->pattern[l] == 'M')
            any_m = true;
        else
            any_gl = true;
    }
    E = e->E = hp->n_expert;
    K = e->K = hp->n_expert ? hp->n_expert_used : 0;
    e->n_moe = hm_hparams_n_moe(hp);
    e->d = hp->d;
    e->kvdim = hp->n_head_kv * hp->head_dim;
    e->qdim = any_gl ? hp->n_head * hp->head_dim : 1;
    e->attdim = any_gl ? hp->n_head * hp->head_dim : 1;
    if (any_m) {
        e->qdim = (uint32_t)max_sz(e->qdim, (size_t)hp->n_head * (hp->qk_nope + hp->qk_rope));
        e->attdim = (uint32_t)max_sz(e->attdim, (size_t)hp->n_head * hp->v_head_dim);
    }
    e->ffw = (uint32_t)max_sz(hp->ff_dense, (size_t)hp->n_expert_shared * hp->ff_expert);
    if (e->ffw == 0)
        e->ffw = 1;
    KT = T * (K ? K : 1);

    rc = hm_pool_new(o->n_threads, &e->pool);
    if (rc < 0)
        goto fail;
    rc = HM_ENOMEM;
    e->nt = hm_pool_n_threads(e->pool);
    tscr = 2 * (size_t)hp->n_ctx + 2 * (size_t)hp->kv_lora_rank + hp->head_dim;
    tscr = max_sz(tscr, hp->d);
    if (m->features & HM_FEAT_XSCALE)
        tscr = max_sz(tscr, hm__xs_scratch_floats(m));
    e->tscr = (tscr + 15) / 16 * 16;

    e->h = falloc(T * hp->d, &bad);
    e->xn = falloc(T * hp->d, &bad);
    e->xtmp = falloc(T * hp->d, &bad);
    e->q = falloc(T * e->qdim, &bad);
    e->qa = falloc(T * max_sz(hp->q_lora_rank, 1), &bad);
    e->kva = falloc(T * max_sz((size_t)hp->kv_lora_rank + hp->qk_rope, 1), &bad);
    e->kx = falloc(T * max_sz(e->kvdim, 1), &bad);
    e->vx = falloc(T * max_sz(e->kvdim, 1), &bad);
    e->att = falloc(T * e->attdim, &bad);
    e->fg = falloc(T * e->ffw, &bad);
    e->fu = falloc(T * e->ffw, &bad);
    e->moe_x = falloc(E ? KT * hp->d : 1, &bad);
    e->moe_y = falloc(E ? KT * hp->d : 1, &bad);
    e->moe_g = falloc(E ? KT * hp->ff_expert : 1, &bad);
    e->moe_u = falloc(E ? KT * hp->ff_expert : 1, &bad);
    e->router = falloc(T * max_sz(E, 1), &bad);
    e->selw = falloc(KT, &bad);
    e->tscratch = falloc(e->nt * e->tscr, &bad);
    e->lb = (uint32_t)(T < 64 ? T : 64);
    e->lbuf = falloc((size_t)e->lb * hp->n_vocab, &bad);
    if (bad)
        goto fail;
    e->sel = hm_calloc(KT, 1);
    e->selk = hm_calloc(T, 1);
    e->slot_row = hm_calloc(KT, sizeof(*e->slot_row));
    e->exp_cnt = hm_calloc(max_sz(E, 1), sizeof(*e->exp_cnt));
    e->exp_off = hm_calloc(E + 1, sizeof(*e->exp_off));
    e->jobs = hm_calloc(2 * (size_t)E + 4, sizeof(*e->jobs));
    e->toks = hm_calloc(T, sizeof(*e->toks));
    e->items = hm_calloc(o->max_step_items, sizeof(*e->items));
    e->ldst = hm_calloc(e->lb, sizeof(*e->ldst));
    e->rope_gl = hm_calloc(max_sz(hp->head_dim / 2, 1), sizeof(double));
    e->rope_m = hm_calloc(max_sz(hp->qk_rope / 2, 1), sizeof(double));
    e->mla = hm_calloc(max_sz(hp->n_layer, 1), sizeof(*e->mla));
    if (!e->sel || !e->selk || !e->slot_row || !e->exp_cnt || !e->exp_off || !e->jobs || !e->toks ||
        !e->items || !e->ldst || !e->rope_gl || !e->rope_m || !e->mla)
        goto fail;
    hm__rope_freqs(e->rope_gl, hp->head_dim, hp->rope_base);
    hm__rope_freqs(e->rope_m, hp->qk_rope, hp->rope_base);
    for (l = 0; l < hp->n_layer; l++) {
        if (hp->pattern[l] == 'M') {
            rc = build_mla(e, l);
            if (rc < 0)
                goto fail;
        }
    }
    if (e->blas)
        hm__blas_single_thread();
    *out = e;
    return HM_OK;
fail:
    hm_engine_free(e);
    return rc < 0 ? rc : HM_ENOMEM;
}

void hm_engine_get_profile(const struct hm_engine *e, struct hm_engine_profile *out)
{
    *out = e->prof;
}

/* ---- step tasks ------------------------------------------------------------------------- */

static void embed_task(void *vc, size_t row, unsigned thread)
{
    struct hm_engine *e = vc;
    (void)thread;
    hm__mat_row(&e->m->tok_embd, 0, (uint32_t)e->toks[row].id, e->h + row * e->d);
}

struct xs_ctx {
    struct hm_engine *e;
    const struct hm__item *items;
};

static void xs_task(void *vc, size_t i, unsigned thread)
{
    struct xs_ctx *c = vc;
    struct hm_engine *e = c->e;
    const struct hm__item *it = &c->items[i];
    float *scratch = e->tscratch + (size_t)thread * e->tscr;
    uint32_t j;
    size_t k;

    if (!it->s->use_xs)
        return;
    for (j = 0; j < it->n; j++) {
        size_t row = it->row0 + j;
        float *hrow = e->h + row * e->d, *x = e->xtmp + row * e->d;
        hm__xs_push(it->s->xs, e->m, e->toks[row].id, it->pos0 + j);
        hm__xs_attend(it->s->xs, e->m, hrow, x, scratch);
        for (k = 0; k < e->d; k++)
            hrow[k] = hrow[k] + x[k];
    }
}

/* h += post(xtmp) (if add), then xn = RMSNorm(h; g, b, c_t). */
struct resid_ctx {
    struct hm_engine *e;
    bool add;
    const float *post;
    const float *g, *b;
};

static void resid_task(void *vc, size_t row, unsigned thread)
{
    struct resid_ctx *c = vc;
    struct hm_engine *e = c->e;
    float cc = e->toks[row].c, eps = e->m->hp.eps;
    float *h = e->h + row * e->d, *a = e->xtmp + row * e->d;
    size_t k;
    (void)thread;
    if (c->add) {
        if (c->post)
            hm__rmsnorm(a, a, e->d, c->post, NULL, cc, eps);
        for (k = 0; k < e->d; k++)
            h[k] = h[k] + a[k];
    }
    hm__rmsnorm(e->xn + row * e->d, h, e->d, c->g, c->b, cc, eps);
}

/* Checks the items; on success marks the sessions (in_step) and fills e->items/toks. */
static int validate(struct hm_engine *e, const struct hm_step_item *items, size_t n_items,
                    uint32_t *n_rows)
{
    size_t i, total = 0;
    int rc = HM_OK;

    if (!items || n_items == 0 || n_items > e->o.max_step_items)
        return HM_EINVAL;
    for (i = 0; i < n_items; i++) {
        const struct hm_step_item *it = &items[i];
        if (!it->s || it->s->m != e->m || it->n_tokens == 0 || it->s->in_step ||
            (uint64_t)it->s->n_past + it->n_tokens > it->s->n_tokens) {
            rc = HM_EINVAL;
            n_items = i; /* unmark the ones marked so far */
            break;
        }
        it->s->in_step = true;
        total += it->n_tokens;
    }
    if (rc == HM_OK && total > e->T)
        rc = HM_EINVAL;
    if (rc < 0) {
        for (i = 0; i < n_items; i++)
            items[i].s->in_step = false;
        return rc;
    }
    *n_rows = (uint32_t)total;
    return HM_OK;
}

int hm_engine_step(struct hm_engine *e, struct hm_step_item *items, size_t n_items)
{
    const struct hm_model *m = e->m;
    const struct hm_hparams *hp = &m->hp;
    uint64_t t0 = hm__now_ns(), t1;
    uint32_t n_rows = 0, row = 0, l, moe_idx = 0, j;
    size_t i;
    struct resid_ctx rc;
    int err;

    err = validate(e, items, n_items, &n_rows);
    if (err < 0)
        return err;
    for (i = 0; i < n_items; i++) {
        struct hm_session *s = items[i].s;
        struct hm__item *it = &e->items[i];
        s->in_step = false;
        it->s = s;
        it->row0 = row;
        it->n = items[i].n_tokens;
        it->pos0 = s->n_past;
        for (j = 0; j < it->n; j++, row++) {
            e->toks[row].item = (uint32_t)i;
            e->toks[row].pos = s->n_past + j;
            e->toks[row].id = s->tokens[s->n_past + j];
            e->toks[row].c = s->c[s->n_past + j];
        }
    }

    /* embeddings and cross-scale */
    hm__run(e, n_rows, e->d, embed_task, e);
    t1 = hm__now_ns();
    e->prof.ns_embed += t1 - t0;
    if ((m->features & HM_FEAT_XSCALE) && !e->o.force_static) {
        struct xs_ctx xc = {e, e->items};
        hm_pool_run(e->pool, n_items, xs_task, &xc);
        e->prof.ns_xscale += hm__now_ns() - t1;
    }
    t1 = hm__now_ns();
    rc = (struct resid_ctx){e, false, NULL, m->layers[0].attn_norm, m->layers[0].attn_norm_adapt};
    if (hp->n_layer == 0)
        rc = (struct resid_ctx){e, false, NULL, m->output_norm, NULL};
    hm__run(e, n_rows, 3 * (size_t)e->d, resid_task, &rc);
    e->prof.ns_norm += hm__now_ns() - t1;

    for (l = 0; l < hp->n_layer; l++) {
        const struct hm_layer *L = &m->layers[l];
        uint64_t ta = hm__now_ns(), tb;
        hm__attention(e, l, e->items, n_items, n_rows);
        for (i = 0; i < n_items; i++) { /* attended positions (12.10 statistics) */
            const struct hm__item *it = &e->items[i];
            uint64_t sum = 0;
            for (j = 0; j < it->n; j++) {
                uint64_t npos = (uint64_t)it->pos0 + j + 1;
                if (L->type == 'L' && (int64_t)npos > it->s->window)
                    npos = (uint64_t)it->s->window;
                sum += npos;
            }
            it->s->attn_positions += sum;
        }
        tb = hm__now_ns();
        if (L->type == 'G')
            e->prof.ns_attn_g += tb - ta;
        else if (L->type == 'L')
            e->prof.ns_attn_l += tb - ta;
        else
            e->prof.ns_attn_m += tb - ta;
        rc = (struct resid_ctx){e, true, L->post_attn_norm, L->ffn_norm, L->ffn_norm_adapt};
        hm__run(e, n_rows, 3 * (size_t)e->d, resid_task, &rc);
        ta = hm__now_ns();
        e->prof.ns_norm += ta - tb;
        if (L->moe) {
            uint64_t tr = hm__ffn_moe(e, L, moe_idx++, e->items, n_items, n_rows);
            tb = hm__now_ns();
            e->prof.ns_router += tr;
            e->prof.ns_experts += tb - ta - tr;
        } else {
            hm__ffn_dense(e, L, n_rows);
            tb = hm__now_ns();
            e->prof.ns_dense_ffn += tb - ta;
        }
        if (l + 1 < hp->n_layer)
            rc = (struct resid_ctx){e, true, L->post_ffn_norm, m->layers[l + 1].attn_norm,
                                    m->layers[l + 1].attn_norm_adapt};
        else
            rc = (struct resid_ctx){e, true, L->post_ffn_norm, m->output_norm, NULL};
        hm__run(e, n_rows, 3 * (size_t)e->d, resid_task, &rc);
        e->prof.ns_norm += hm__now_ns() - tb;
    }

    /* logits: the wanted rows of xn, LB at a time, one matmul each (W read once per
     * block, not once per item), then copied to the callers' buffers */
    t1 = hm__now_ns();
    {
        uint32_t nl = 0, q;
        for (i = 0; i <= n_items; i++) {
            const struct hm__item *it = i < n_items ? &e->items[i] : NULL;
            uint32_t first = 0, cnt = 0;
            if (it && items[i].logits) {
                cnt = items[i].all_logits ? it->n : 1;
                first = it->row0 + it->n - cnt;
            }
            for (j = 0; j <= cnt; j++) {
                bool flush = (j == cnt && i == n_items && nl > 0) || nl == e->lb;
                if (flush) {
                    hm__matmul_jobs(&(struct hm__mm_job){&m->output, 0, e->xtmp, nl, e->d, e->lbuf,
                                                         hp->n_vocab},
                                    1, e->pool, e->blas);
                    for (q = 0; q < nl; q++)
                        memcpy(e->ldst[q], e->lbuf + (size_t)q * hp->n_vocab,
                               hp->n_vocab * sizeof(float));
                    nl = 0;
                }
                if (j < cnt) {
                    memcpy(e->xtmp + (size_t)nl * e->d, e->xn + (size_t)(first + j) * e->d,
                           e->d * sizeof(float));
                    e->ldst[nl++] = items[i].logits + (size_t)j * hp->n_vocab;
                }
            }
        }
    }
    e->prof.ns_output += hm__now_ns() - t1;

    for (i = 0; i < n_items; i++) {
        struct hm_session *s = e->items[i].s;
        s->n_past += e->items[i].n;
        s->trace.n_pos = s->n_past;
    }
    e->prof.steps++;
    e->prof.tokens += n_rows;
    e->prof.ns_total += hm__now_ns() - t0;
    return HM_OK;
}
