/*
 * testmodel.c - random in-memory models and the naive reference forward pass (testmodel.h).
 */
#include "testmodel.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "../engine/forward.h"
#include "hm/alloc.h"
#include "hm/gguf.h"

struct owned {
    void **p;
    size_t n, cap;
};

struct hm_hparams hm_test_hparams(const char *pattern)
{
    struct hm_hparams hp;
    hm_hparams_defaults(&hp);
    hp.n_vocab = 64;
    hp.n_ctx = 96;
    hp.d = 32;
    hp.n_layer = (uint32_t)strlen(pattern);
    snprintf(hp.pattern, sizeof(hp.pattern), "%s", pattern);
    hp.n_dense_lead = 1;
    hp.ff_dense = 48;
    hp.n_head = 4;
    hp.n_head_kv = 2;
    hp.head_dim = 8;
    hp.q_lora_rank = 0;
    hp.kv_lora_rank = 16;
    hp.qk_nope = 8;
    hp.qk_rope = 4;
    hp.v_head_dim = 8;
    hp.n_expert = 4;
    hp.n_expert_used = 2;
    hp.n_expert_shared = 1;
    hp.ff_expert = 16;
    hp.window_min = 4;
    hp.window_max = 32;
    hp.window_gain = 16;
    hp.long_ctx_start = 32;
    hp.long_ctx_step = 16;
    hp.long_ctx_penalty = 2;
    hp.phrase_span = 3;
    hp.max_phrases = 8;
    hp.max_sentences = 4;
    hp.max_sentence_len = 7;
    hp.cross_dim = 16;
    hp.complexity_window = 8;
    return hp;
}

void hm_test_hparams_q8(struct hm_hparams *hp)
{
    hp->ff_dense = 64;
    hp->kv_lora_rank = 32;
    hp->ff_expert = 32;
    hp->cross_dim = 32;
    if (hp->q_lora_rank)
        hp->q_lora_rank = 32;
}

static void *own(struct owned *o, size_t bytes)
{
    void *p;
    if (o->n == o->cap) {
        size_t nc = o->cap ? o->cap * 2 : 64;
        void **np = hm_realloc(o->p, nc * sizeof(*np));
        if (!np)
            return NULL;
        o->p = np;
        o->cap = nc;
    }
    p = hm_calloc(1, bytes ? bytes : 1);
    if (p)
        o->p[o->n++] = p;
    return p;
}

static uint64_t name_seed(uint64_t seed, const char *name)
{
    uint64_t h = 1469598103934665603ull ^ seed;
    for (; *name; name++)
        h = (h ^ (uint8_t)*name) * 1099511628211ull;
    return h ? h : 1;
}

static float rnd(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return (float)((x * 2685821657736338717ull) >> 40) / (float)(1 << 24) * 2.0f - 1.0f;
}

static float *vec(struct owned *o, uint64_t seed, const char *name, uint32_t n, float base,
                  float amp)
{
    float *v = own(o, (size_t)n * sizeof(float));
    uint64_t s = name_seed(seed, name);
    uint32_t i;
    if (!v)
        return NULL;
    for (i = 0; i < n; i++)
        v[i] = base + amp * rnd(&s);
    return v;
}

static int mat(struct owned *o, struct hm_mat *W, uint64_t seed, const char *name, enum hm_dtype t,
               uint32_t n_mat, uint32_t rows, uint32_t cols, float amp)
{
    uint64_t s = name_seed(seed, name);
    float *row = hm_malloc((size_t)cols * sizeof(float));
    size_t r;
    uint8_t *data;
    if (!row)
        return HM_ENOMEM;
    W->type = t;
    W->rows = rows;
    W->cols = cols;
    W->n_mat = n_mat;
    W->row_bytes = (size_t)hm_dtype_row_bytes(t, cols);
    W->mat_bytes = W->row_bytes * rows;
    data = own(o, W->mat_bytes * n_mat);
    if (!data || !W->row_bytes) {
        hm_free(row);
        return HM_ENOMEM;
    }
    for (r = 0; r < (size_t)rows * n_mat; r++) {
        uint32_t k;
        for (k = 0; k < cols; k++)
            row[k] = amp * rnd(&s);
        hm_quantize_row(t, row, data + r * W->row_bytes, cols);
    }
    W->data = data;
    hm_free(row);
    return HM_OK;
}

void hm_test_model_free(struct hm_model *m)
{
    struct owned *o;
    size_t i;
    if (!m)
        return;
    o = m->owned;
    if (o) {
        for (i = 0; i < o->n; i++)
            hm_free(o->p[i]);
        hm_free(o->p);
        hm_free(o);
    }
    hm_free(m->layers);
    hm_free(m);
}

#define MAT(W, nm, n_mat, rows, cols, amp)                                                         \
    do {                                                                                           \
        if (mat(o, (W), seed, (nm), type, (n_mat), (rows), (cols), (amp)) < 0)                     \
            goto fail;                                                                             \
    } while (0)
#define VEC(p, nm, n, base, amp)                                                                   \
    do {                                                                                           \
        if (!((p) = vec(o, seed, (nm), (n), (base), (amp))))                                       \
            goto fail;                                                                             \
    } while (0)

int hm_test_model_new(const struct hm_hparams *hp, uint32_t features, enum hm_dtype type,
                      uint64_t seed, struct hm_model **out)
{
    struct hm_model *m = hm_calloc(1, sizeof(*m));
    struct owned *o = hm_calloc(1, sizeof(*o));
    uint32_t l, d = hp->d;
    char nm[96];
    float sd = 1.0f / sqrtf((float)d) * 1.7f;

    *out = NULL;
    if (!m || !o) {
        hm_free(m);
        hm_free(o);
        return HM_ENOMEM;
    }
    m->owned = o;
    m->hp = *hp;
    m->features = features;
    m->layers = hm_calloc(hp->n_layer ? hp->n_layer : 1, sizeof(*m->layers));
    if (!m->layers)
        goto fail;
    MAT(&m->tok_embd, "token_embd", 1, hp->n_vocab, d, 1.0f);
    if (features & HM_FEAT_TIED_OUTPUT)
        m->output = m->tok_embd;
    else
        MAT(&m->output, "output", 1, hp->n_vocab, d, sd);
    VEC(m->output_norm, "output_norm", d, 1.0f, 0.2f);
    if (features & HM_FEAT_XSCALE) {
        uint32_t dx = hp->cross_dim;
        MAT(&m->xq, "xq", 1, dx, d, 1.7f / sqrtf((float)d));
        MAT(&m->xk, "xk", 1, dx, d, 1.7f / sqrtf((float)d));
        MAT(&m->xv, "xv", 1, dx, d, 1.7f / sqrtf((float)d));
        MAT(&m->xo, "xo", 1, d, dx, 1.7f / sqrtf((float)dx));
        VEC(m->scale_embd, "scale_embd", 2 * dx, 0.0f, 0.5f);
    }
    if (features & HM_FEAT_CTRL) {
        float *p;
        VEC(p, "fc1w", 16 * 4, 0.0f, 1.0f);
        m->ctrl_fc1_w = p;
        VEC(p, "fc1b", 16, 0.0f, 0.5f);
        m->ctrl_fc1_b = p;
        VEC(p, "fc2w", 16, 0.0f, 1.0f);
        m->ctrl_fc2_w = p;
        VEC(p, "fc2b", 1, 0.0f, 0.5f);
        m->ctrl_fc2_b = p;
    }
    for (l = 0; l < hp->n_layer; l++) {
        struct hm_layer *L = &m->layers[l];
        uint32_t h = hp->n_head, hd = hp->head_dim, hkv = hp->n_head_kv;
        L->type = hp->pattern[l];
        L->moe = hm_hparams_layer_is_moe(hp, l);
#define N(s) (snprintf(nm, sizeof(nm), "blk.%u.%s", l, (s)), nm)
        VEC(L->attn_norm, N("attn_norm"), d, 1.0f, 0.2f);
        VEC(L->ffn_norm, N("ffn_norm"), d, 1.0f, 0.2f);
        if (features & HM_FEAT_ADAPT_GAIN) {
            VEC(L->attn_norm_adapt, N("attn_norm_adapt"), d, 0.0f, 0.5f);
            VEC(L->ffn_norm_adapt, N("ffn_norm_adapt"), d, 0.0f, 0.5f);
        }
        if (features & HM_FEAT_SANDWICH) {
            VEC(L->post_attn_norm, N("post_attn_norm"), d, 1.0f, 0.2f);
            VEC(L->post_ffn_norm, N("post_ffn_norm"), d, 1.0f, 0.2f);
        }
        if (L->type == 'M') {
            uint32_t dqk = hp->qk_nope + hp->qk_rope, r = hp->kv_lora_rank;
            if (hp->q_lora_rank) {
                MAT(&L->wq_a, N("wq_a"), 1, hp->q_lora_rank, d, sd);
                VEC(L->q_a_norm, N("q_a_norm"), hp->q_lora_rank, 1.0f, 0.2f);
                MAT(&L->wq_b, N("wq_b"), 1, h * dqk, hp->q_lora_rank,
                    1.7f / sqrtf((float)hp->q_lora_rank));
            } else {
                MAT(&L->wq, N("wq_m"), 1, h * dqk, d, sd);
            }
            MAT(&L->wkv_a, N("wkv_a"), 1, r + hp->qk_rope, d, sd);
            VEC(L->kv_a_norm, N("kv_a_norm"), r, 1.0f, 0.2f);
            MAT(&L->wkv_b, N("wkv_b"), 1, h * (hp->qk_nope + hp->v_head_dim), r,
                1.7f / sqrtf((float)r));
            MAT(&L->wo, N("wo_m"), 1, d, h * hp->v_head_dim,
                1.7f / sqrtf((float)(h * hp->v_head_dim)));
        } else {
            /* same names for G and L: two models differing only in the pattern share them */
            MAT(&L->wq, N("wq"), 1, h * hd, d, sd);
            MAT(&L->wk, N("wk"), 1, hkv * hd, d, sd);
            MAT(&L->wv, N("wv"), 1, hkv * hd, d, sd);
            MAT(&L->wo, N("wo"), 1, d, h * hd, 1.7f / sqrtf((float)(h * hd)));
            if (features & HM_FEAT_QK_NORM) {
                VEC(L->q_norm, N("q_norm"), hd, 1.0f, 0.2f);
                VEC(L->k_norm, N("k_norm"), hd, 1.0f, 0.2f);
            }
        }
        if (!L->moe) {
            MAT(&L->ffn_gate, N("ffn_gate"), 1, hp->ff_dense, d, sd);
            MAT(&L->ffn_up, N("ffn_up"), 1, hp->ff_dense, d, sd);
            MAT(&L->ffn_down, N("ffn_down"), 1, d, hp->ff_dense, 1.7f / sqrtf((float)hp->ff_dense));
        } else {
            uint32_t E = hp->n_expert, ffe = hp->ff_expert, S = hp->n_expert_shared;
            MAT(&L->router, N("router"), 1, E, d, 4.0f / sqrtf((float)d));
            MAT(&L->gate_exps, N("gate_exps"), E, ffe, d, sd);
            MAT(&L->up_exps, N("up_exps"), E, ffe, d, sd);
            MAT(&L->down_exps, N("down_exps"), E, d, ffe, 1.7f / sqrtf((float)ffe));
            if (S) {
                MAT(&L->gate_shexp, N("gate_shexp"), 1, S * ffe, d, sd);
                MAT(&L->up_shexp, N("up_shexp"), 1, S * ffe, d, sd);
                MAT(&L->down_shexp, N("down_shexp"), 1, d, S * ffe, 1.7f / sqrtf((float)(S * ffe)));
            }
        }
#undef N
    }
    *out = m;
    return HM_OK;
fail:
    hm_test_model_free(m);
    return HM_ENOMEM;
}

void hm_test_model_zero_adapt(struct hm_model *m)
{
    uint32_t l;
    for (l = 0; l < m->hp.n_layer; l++) {
        struct hm_layer *L = &m->layers[l];
        if (L->attn_norm_adapt)
            memset((float *)L->attn_norm_adapt, 0, m->hp.d * sizeof(float));
        if (L->ffn_norm_adapt)
            memset((float *)L->ffn_norm_adapt, 0, m->hp.d * sizeof(float));
    }
}

void hm_test_model_zero_xo(struct hm_model *m)
{
    if (m->xo.data)
        memset((void *)m->xo.data, 0, m->xo.mat_bytes);
}

double hm_test_rel_err(const float *a, const float *b, size_t n)
{
    double mx = 1.0, err = 0.0;
    size_t i;
    for (i = 0; i < n; i++)
        if (fabs((double)b[i]) > mx)
            mx = fabs((double)b[i]);
    for (i = 0; i < n; i++) {
        double dlt = fabs((double)a[i] - (double)b[i]);
        if (dlt > err || isnan(dlt))
            err = isnan(dlt) ? INFINITY : dlt;
    }
    return err / mx;
}

/* ---- the reference ------------------------------------------------------------------ */

/* y = W_e x (double accumulation, dequantized rows). */
static void ref_matvec(const struct hm_mat *W, uint32_t e, const float *x, float *y)
{
    float row[4096];
    uint32_t r, k;
    for (r = 0; r < W->rows; r++) {
        double s = 0.0;
        hm__mat_row(W, e, r, row);
        for (k = 0; k < W->cols; k++)
            s += (double)row[k] * x[k];
        y[r] = (float)s;
    }
}

static void ref_rmsnorm(float *y, const float *x, uint32_t n, const float *g, const float *b,
                        float c, float eps)
{
    double ss = 0.0;
    uint32_t i;
    float inv;
    for (i = 0; i < n; i++)
        ss += (double)x[i] * x[i];
    inv = (float)(1.0 / sqrt(ss / n + eps));
    for (i = 0; i < n; i++)
        y[i] = x[i] * inv * ((g ? g[i] : 1.0f) + (b ? (2.0f * c - 1.0f) * b[i] : 0.0f));
}

static void ref_rope(float *u, uint32_t m, uint32_t pos, float base)
{
    uint32_t i;
    for (i = 0; i < m / 2; i++) {
        double th = pow((double)base, -2.0 * i / m) * pos;
        double a = u[i], b = u[i + m / 2];
        u[i] = (float)(a * cos(th) - b * sin(th));
        u[i + m / 2] = (float)(a * sin(th) + b * cos(th));
    }
}

static void ref_swiglu_ffn(const struct hm_mat *G, const struct hm_mat *U, const struct hm_mat *D,
                           uint32_t e, const float *x, float *y, float *tmp1, float *tmp2)
{
    uint32_t i;
    ref_matvec(G, e, x, tmp1);
    ref_matvec(U, e, x, tmp2);
    for (i = 0; i < G->rows; i++)
        tmp1[i] = tmp1[i] / (1.0f + expf(-tmp1[i])) * tmp2[i];
    ref_matvec(D, e, tmp1, y);
}

#define RMAX 4096

int hm_test_reference(const struct hm_model *m, const int32_t *tokens, uint32_t n,
                      const struct hm_test_ref_opts *o, float *logits)
{
    const struct hm_hparams *hp = &m->hp;
    uint32_t d = hp->d, t, l, s, i, hh, j;
    float *H = hm_calloc((size_t)n * d, sizeof(float));
    float *X = hm_calloc((size_t)n * d, sizeof(float));
    float *A = hm_calloc((size_t)n * d, sizeof(float));
    float *Q = hm_calloc((size_t)n * RMAX, sizeof(float));
    float *Kc = hm_calloc((size_t)n * RMAX, sizeof(float));
    float *Vc = hm_calloc((size_t)n * RMAX, sizeof(float));
    float *tmp = hm_calloc(4 * RMAX, sizeof(float));
    double *sc = hm_calloc(n, sizeof(double));
    struct hm__xs_state *xs = NULL;
    int rc = HM_ENOMEM;

    if (!H || !X || !A || !Q || !Kc || !Vc || !tmp || !sc)
        goto out;
    if (o->use_xs && hm__xs_new(m, n, &xs) < 0)
        goto out;
    for (t = 0; t < n; t++) {
        hm__mat_row(&m->tok_embd, 0, (uint32_t)tokens[t], H + (size_t)t * d);
        if (xs) {
            hm__xs_push(xs, m, tokens[t], t);
            hm__xs_attend(xs, m, H + (size_t)t * d, tmp, tmp + RMAX);
            for (i = 0; i < d; i++)
                H[(size_t)t * d + i] += tmp[i];
        }
    }
    for (l = 0; l < hp->n_layer; l++) {
        const struct hm_layer *L = &m->layers[l];
        uint32_t h = hp->n_head;
        for (t = 0; t < n; t++)
            ref_rmsnorm(X + (size_t)t * d, H + (size_t)t * d, d, L->attn_norm, L->attn_norm_adapt,
                        o->c[t], hp->eps);
        if (L->type != 'M') {
            uint32_t hd = hp->head_dim, hkv = hp->n_head_kv;
            for (t = 0; t < n; t++) {
                float *q = Q + (size_t)t * RMAX, *k = Kc + (size_t)t * RMAX;
                ref_matvec(&L->wq, 0, X + (size_t)t * d, q);
                ref_matvec(&L->wk, 0, X + (size_t)t * d, k);
                ref_matvec(&L->wv, 0, X + (size_t)t * d, Vc + (size_t)t * RMAX);
                for (hh = 0; hh < h; hh++) {
                    if (L->q_norm)
                        ref_rmsnorm(q + hh * hd, q + hh * hd, hd, L->q_norm, NULL, 0, hp->eps);
                    ref_rope(q + hh * hd, hd, t, hp->rope_base);
                }
                for (hh = 0; hh < hkv; hh++) {
                    if (L->k_norm)
                        ref_rmsnorm(k + hh * hd, k + hh * hd, hd, L->k_norm, NULL, 0, hp->eps);
                    ref_rope(k + hh * hd, hd, t, hp->rope_base);
                }
            }
            for (t = 0; t < n; t++) {
                float *att = tmp;
                for (hh = 0; hh < h; hh++) {
                    uint32_t kv = hh / (h / hkv), lo = 0;
                    double mx = -INFINITY, sum = 0;
                    if (L->type == 'L' && (int64_t)t + 1 > o->window)
                        lo = (uint32_t)((int64_t)t + 1 - o->window);
                    for (s = lo; s <= t; s++) {
                        double dd = 0;
                        for (i = 0; i < hd; i++)
                            dd += (double)Q[(size_t)t * RMAX + hh * hd + i] *
                                  Kc[(size_t)s * RMAX + kv * hd + i];
                        sc[s] = dd / sqrt((double)hd);
                        if (sc[s] > mx)
                            mx = sc[s];
                    }
                    for (s = lo; s <= t; s++)
                        sum += (sc[s] = exp(sc[s] - mx));
                    for (i = 0; i < hd; i++) {
                        double acc = 0;
                        for (s = lo; s <= t; s++)
                            acc += sc[s] / sum * Vc[(size_t)s * RMAX + kv * hd + i];
                        att[hh * hd + i] = (float)acc;
                    }
                }
                ref_matvec(&L->wo, 0, att, A + (size_t)t * d);
            }
        } else {
            /* naive MLA: decompress k_nope and v for every position */
            uint32_t r = hp->kv_lora_rank, dn = hp->qk_nope, dr = hp->qk_rope;
            uint32_t dv = hp->v_head_dim, dqk = dn + dr;
            for (t = 0; t < n; t++) {
                float *q = Q + (size_t)t * RMAX, *kv = Kc + (size_t)t * RMAX;
                float *kvb = Vc + (size_t)t * RMAX; /* h x (dn + dv) */
                if (hp->q_lora_rank) {
                    ref_matvec(&L->wq_a, 0, X + (size_t)t * d, tmp);
                    ref_rmsnorm(tmp, tmp, hp->q_lora_rank, L->q_a_norm, NULL, 0, hp->eps);
                    ref_matvec(&L->wq_b, 0, tmp, q);
                } else {
                    ref_matvec(&L->wq, 0, X + (size_t)t * d, q);
                }
                for (hh = 0; hh < h; hh++)
                    ref_rope(q + hh * dqk + dn, dr, t, hp->rope_base);
                ref_matvec(&L->wkv_a, 0, X + (size_t)t * d, kv); /* ckv | k_rope */
                ref_rmsnorm(kv, kv, r, L->kv_a_norm, NULL, 0, hp->eps);
                ref_rope(kv + r, dr, t, hp->rope_base);
                ref_matvec(&L->wkv_b, 0, kv, kvb);
            }
            for (t = 0; t < n; t++) {
                float *att = tmp;
                for (hh = 0; hh < h; hh++) {
                    const float *q = Q + (size_t)t * RMAX + hh * dqk;
                    double mx = -INFINITY, sum = 0;
                    for (s = 0; s <= t; s++) {
                        const float *kb = Vc + (size_t)s * RMAX + hh * (dn + dv);
                        const float *kr = Kc + (size_t)s * RMAX + r;
                        double dd = 0;
                        for (i = 0; i < dn; i++)
                            dd += (double)q[i] * kb[i];
                        for (i = 0; i < dr; i++)
                            dd += (double)q[dn + i] * kr[i];
                        sc[s] = dd / sqrt((double)dqk);
                        if (sc[s] > mx)
                            mx = sc[s];
                    }
                    for (s = 0; s <= t; s++)
                        sum += (sc[s] = exp(sc[s] - mx));
                    for (i = 0; i < dv; i++) {
                        double acc = 0;
                        for (s = 0; s <= t; s++)
                            acc += sc[s] / sum * Vc[(size_t)s * RMAX + hh * (dn + dv) + dn + i];
                        att[hh * dv + i] = (float)acc;
                    }
                }
                ref_matvec(&L->wo, 0, att, A + (size_t)t * d);
            }
        }
        for (t = 0; t < n; t++) {
            float *a = A + (size_t)t * d, *hrow = H + (size_t)t * d, *x = X + (size_t)t * d;
            if (L->post_attn_norm)
                ref_rmsnorm(a, a, d, L->post_attn_norm, NULL, o->c[t], hp->eps);
            for (i = 0; i < d; i++)
                hrow[i] += a[i];
            ref_rmsnorm(x, hrow, d, L->ffn_norm, L->ffn_norm_adapt, o->c[t], hp->eps);
            if (!L->moe) {
                ref_swiglu_ffn(&L->ffn_gate, &L->ffn_up, &L->ffn_down, 0, x, a, tmp, tmp + RMAX);
            } else {
                uint32_t E = hp->n_expert, K = o->max_experts ? o->max_experts : hp->n_expert_used;
                uint32_t kmin = hp->router_k_min < K ? hp->router_k_min : K, k;
                float p[HM_MAX_EXPERTS], w[HM_MAX_EXPERTS], y[RMAX];
                uint8_t sel[HM_MAX_EXPERTS];
                float tau = o->static_route ? 1.0f : hm__route_tau(hp, o->c[t], o->tau_fixed);
                ref_matvec(&L->router, 0, x, p);
                k = hm__route(p, E, K, kmin, tau, hp->expert_weights_norm, sel, w);
                memset(a, 0, d * sizeof(float));
                for (j = 0; j < k; j++) {
                    ref_swiglu_ffn(&L->gate_exps, &L->up_exps, &L->down_exps, sel[j], x, y, tmp,
                                   tmp + RMAX);
                    for (i = 0; i < d; i++)
                        a[i] += w[j] * y[i];
                }
                for (i = 0; i < d; i++)
                    a[i] *= hp->expert_weights_scale;
                if (L->gate_shexp.data) {
                    ref_swiglu_ffn(&L->gate_shexp, &L->up_shexp, &L->down_shexp, 0, x, y, tmp,
                                   tmp + RMAX);
                    for (i = 0; i < d; i++)
                        a[i] += y[i];
                }
            }
            if (L->post_ffn_norm)
                ref_rmsnorm(a, a, d, L->post_ffn_norm, NULL, o->c[t], hp->eps);
            for (i = 0; i < d; i++)
                hrow[i] += a[i];
        }
    }
    for (t = 0; t < n; t++) {
        ref_rmsnorm(X + (size_t)t * d, H + (size_t)t * d, d, m->output_norm, NULL, o->c[t],
                    hp->eps);
        ref_matvec(&m->output, 0, X + (size_t)t * d, logits + (size_t)t * hp->n_vocab);
    }
    rc = HM_OK;
out:
    hm__xs_free(xs);
    hm_free(H);
    hm_free(X);
    hm_free(A);
    hm_free(Q);
    hm_free(Kc);
    hm_free(Vc);
    hm_free(tmp);
    hm_free(sc);
    return rc;
}
