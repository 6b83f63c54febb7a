/*
 * multiscale.c - phrase and sentence representations and cross-scale attention
 * (spec section 6, exact rules 12.1, 12.2, 12.10 and 12.12).
 *
 * DESIGN. One struct hm__xs_state per session. Tokens are pushed in position order.
 * The state keeps two running sums of raw token_embd rows (the open phrase and the
 * open sentence) and, when a phrase or sentence closes, turns its sum into the mean
 * in place, computes its key k = W_xk r + scale_embd[sigma] and value v = W_xv r
 * straight into a ring slot, and zeroes the sum. A phrase or sentence is visible
 * from its last token on, so after a push every closed one is visible; the rings
 * hold the most recent min(max_phrases, floor(N/P)) phrases and min(max_sentences, N)
 * sentences, which is every one that can be visible (a sequence of N tokens closes
 * at most floor(N/P) phrases and N sentences). Memory is exactly the 12.10 count:
 * (cap_phrases + cap_sentences) * 2 * d_x + 2 * d floats. A model without xscale.*
 * stores nothing (count 0) and its cross-scale output is 0.
 *
 * Everything is a function of the tokens alone (batch and chunk invariant).
 * Exact arithmetic, all float32:
 *   sums      sum += e_i in position order, from 0; mean[k] = sum[k] / (float)count
 *   dot(a, b) hm__dot (kernels.h: eight lanes, fixed reduction order); every matrix-vector
 *             product is hm__matmul (internal.h), the same arithmetic as the rest of the engine
 *   k         k = W_xk r, then k[o] += scale_embd[sigma][o];  v = W_xv r
 *   q         q = W_xq e_t (no RoPE, no norm)
 *   scores    score_r = dot(q, k_r) / sqrtf((float)d_x), entries phrases oldest first, then
 *             sentences oldest first, then the null entry (score 0, value 0)
 *   softmax   m = max over all entries; a_r = expf(score_r - m); sum of a_r in entry order;
 *             a_r = a_r / sum
 *   output    u = 0; for each entry r in order: u[k] += a_r * v_r[k]; out = W_xo u
 * With no visible entry the output is exactly 0 (all +0.0f).
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "hm/alloc.h"
#include "hm/gguf.h"
#include "hm/tokenizer.h"
#include "internal.h"
#include "kernels.h"

#define CHUNK 32 /* embedding columns dequantized at a time (the q8_0 block) */

struct hm__xs_state {
    bool on;                 /* model has xscale.*; else nothing is stored */
    uint32_t d, dx;          /* model width, cross-scale width */
    uint32_t span;           /* P (0: no phrases) */
    uint32_t max_sent_len;   /* a sentence closes at this many tokens (0: no limit) */
    uint32_t cap_ph, cap_se; /* ring slots: min(max_phrases, N/P), min(max_sentences, N) */
    uint32_t n_pos;          /* tokens pushed = the next expected position */
    uint32_t n_ph, n_se;     /* phrases / sentences closed so far */
    uint32_t se_len;         /* tokens in the open sentence */
    float *buf;              /* owned, the single allocation holding all below */
    float *ph_k, *ph_v;      /* cap_ph x dx each; phrase j in slot j % cap_ph */
    float *se_k, *se_v;      /* cap_se x dx each; sentence k in slot k % cap_se */
    float *ph_sum, *se_sum;  /* d each: sums of the open phrase / sentence */
};

static uint64_t min_u64(uint64_t a, uint64_t b)
{
    return a < b ? a : b;
}

static void caps(const struct hm_model *m, uint32_t n_planned, uint32_t *cap_ph, uint32_t *cap_se)
{
    const struct hm_hparams *hp = &m->hp;

    *cap_ph = hp->phrase_span ? (uint32_t)min_u64(hp->max_phrases, n_planned / hp->phrase_span) : 0;
    *cap_se = (uint32_t)min_u64(hp->max_sentences, n_planned);
}

static bool has_xscale(const struct hm_model *m)
{
    return (m->features & HM_FEAT_XSCALE) && m->xq.data && m->xk.data && m->xv.data && m->xo.data &&
           m->scale_embd;
}

uint64_t hm__xs_elems(const struct hm_model *m, uint32_t n_planned)
{
    uint32_t cap_ph, cap_se;

    if (!has_xscale(m))
        return 0;
    caps(m, n_planned, &cap_ph, &cap_se);
    return ((uint64_t)cap_ph + cap_se) * 2 * m->hp.cross_dim + 2 * (uint64_t)m->hp.d;
}

size_t hm__xs_scratch_floats(const struct hm_model *m)
{
    const struct hm_hparams *hp = &m->hp;

    /* q (d_x) | scores (every entry + null) | weighted value sum (d_x) */
    return 2 * (size_t)hp->cross_dim + (size_t)hp->max_phrases + hp->max_sentences + 1;
}

int hm__xs_new(const struct hm_model *m, uint32_t n_planned, struct hm__xs_state **out)
{
    struct hm__xs_state *xs;
    uint64_t n = hm__xs_elems(m, n_planned);
    int rc = HM_ENOMEM;

    *out = NULL;
    xs = hm_calloc(1, sizeof(*xs));
    if (!xs)
        goto out;
    xs->on = has_xscale(m);
    xs->d = m->hp.d;
    xs->dx = m->hp.cross_dim;
    xs->span = m->hp.phrase_span;
    xs->max_sent_len = m->hp.max_sentence_len;
    caps(m, n_planned, &xs->cap_ph, &xs->cap_se);
    if (xs->on) {
        size_t rows_ph = (size_t)xs->cap_ph * xs->dx, rows_se = (size_t)xs->cap_se * xs->dx;

        if (n > SIZE_MAX / sizeof(float))
            goto out;
        xs->buf = hm_calloc((size_t)n, sizeof(float)); /* sums start at 0 */
        if (!xs->buf)
            goto out;
        xs->ph_k = xs->buf;
        xs->ph_v = xs->ph_k + rows_ph;
        xs->se_k = xs->ph_v + rows_ph;
        xs->se_v = xs->se_k + rows_se;
        xs->ph_sum = xs->se_v + rows_se;
        xs->se_sum = xs->ph_sum + xs->d;
    }
    *out = xs;
    xs = NULL;
    rc = HM_OK;
out:
    hm__xs_free(xs);
    return rc;
}

void hm__xs_free(struct hm__xs_state *xs)
{
    if (!xs)
        return;
    hm_free(xs->buf);
    hm_free(xs);
}

/* y = W x (W->rows outputs): the engine's batch-invariant matmul, single-threaded. */
static void matvec(const struct hm_mat *W, const float *x, float *y)
{
    hm__matmul(W, 0, x, 1, W->cols, y, W->rows, NULL);
}

/* sum[0..d) += embedding row of token. */
static void add_embedding(const struct hm_model *m, int32_t token, float *sum_a, float *sum_b,
                          uint32_t d)
{
    float tmp[CHUNK];
    uint32_t k0, k;

    for (k0 = 0; k0 < d; k0 += CHUNK) {
        uint32_t n = d - k0 < CHUNK ? d - k0 : CHUNK;
        const float *e = hm__mat_row_chunk(&m->tok_embd, token, k0, n, tmp);

        for (k = 0; k < n; k++) {
            sum_a[k0 + k] += e[k];
            sum_b[k0 + k] += e[k];
        }
    }
}

/* Turns sum (count tokens) into the mean in place, writes k and v of it, zeroes sum. */
static void close_rep(const struct hm_model *m, float *sum, uint32_t count, uint32_t sigma,
                      float *k, float *v, uint32_t d, uint32_t dx)
{
    uint32_t i;

    for (i = 0; i < d; i++)
        sum[i] = sum[i] / (float)count;
    matvec(&m->xk, sum, k);
    for (i = 0; i < dx; i++)
        k[i] += m->scale_embd[(size_t)sigma * dx + i];
    matvec(&m->xv, sum, v);
    memset(sum, 0, d * sizeof(*sum));
}

static bool ends_sentence(const struct hm_model *m, int32_t token)
{
    size_t len = 0, i;
    const uint8_t *b = m->tok ? hm_tokenizer_token_bytes(m->tok, token, &len) : NULL;

    for (i = 0; i < len; i++)
        if (b[i] == '.' || b[i] == '!' || b[i] == '?' || b[i] == '\n')
            return true;
    return false;
}

void hm__xs_push(struct hm__xs_state *xs, const struct hm_model *m, int32_t token, uint32_t pos)
{
    bool phrase_ends, sentence_ends;

    if (pos != xs->n_pos)
        HM_BUG("hm__xs_push: positions must come in order");
    xs->n_pos++;
    xs->se_len++;
    if (xs->on)
        add_embedding(m, token, xs->ph_sum, xs->se_sum, xs->d);
    phrase_ends = xs->span > 0 && ((uint64_t)pos + 1) % xs->span == 0;
    sentence_ends = xs->se_len == xs->max_sent_len || ends_sentence(m, token);
    if (phrase_ends) {
        if (xs->on && xs->cap_ph > 0) {
            size_t slot = (size_t)(xs->n_ph % xs->cap_ph) * xs->dx;
            close_rep(m, xs->ph_sum, xs->span, 0, xs->ph_k + slot, xs->ph_v + slot, xs->d, xs->dx);
        }
        xs->n_ph++;
    }
    if (sentence_ends) {
        if (xs->on && xs->cap_se > 0) {
            size_t slot = (size_t)(xs->n_se % xs->cap_se) * xs->dx;
            close_rep(m, xs->se_sum, xs->se_len, 1, xs->se_k + slot, xs->se_v + slot, xs->d,
                      xs->dx);
        }
        xs->n_se++;
        xs->se_len = 0;
    }
}

void hm__xs_visible(const struct hm__xs_state *xs, uint32_t *n_phrases, uint32_t *n_sentences,
                    uint32_t *first_phrase, uint32_t *first_sentence)
{
    uint32_t np = xs->n_ph < xs->cap_ph ? xs->n_ph : xs->cap_ph;
    uint32_t ns = xs->n_se < xs->cap_se ? xs->n_se : xs->cap_se;

    *n_phrases = np;
    *n_sentences = ns;
    *first_phrase = xs->n_ph - np;
    *first_sentence = xs->n_se - ns;
}

void hm__xs_attend(const struct hm__xs_state *xs, const struct hm_model *m, const float *e,
                   float *out, float *scratch)
{
    uint32_t np, ns, p0, s0, nv, r, i, dx = xs->dx;
    float *q, *sc, *u, mx, sum, scale;

    hm__xs_visible(xs, &np, &ns, &p0, &s0);
    nv = np + ns;
    if (!xs->on || nv == 0) {
        memset(out, 0, (size_t)xs->d * sizeof(*out));
        return;
    }
    q = scratch;     /* dx */
    sc = q + dx;     /* nv + 1 */
    u = sc + nv + 1; /* dx */
    matvec(&m->xq, e, q);
    scale = sqrtf((float)dx);
    for (r = 0; r < np; r++)
        sc[r] = hm__dot(q, xs->ph_k + (size_t)((p0 + r) % xs->cap_ph) * dx, dx) / scale;
    for (r = 0; r < ns; r++)
        sc[np + r] = hm__dot(q, xs->se_k + (size_t)((s0 + r) % xs->cap_se) * dx, dx) / scale;
    sc[nv] = 0.0f; /* the null entry */
    mx = sc[0];
    for (r = 1; r <= nv; r++)
        if (sc[r] > mx)
            mx = sc[r];
    sum = 0.0f;
    for (r = 0; r <= nv; r++) {
        sc[r] = expf(sc[r] - mx);
        sum += sc[r];
    }
    for (r = 0; r <= nv; r++)
        sc[r] = sc[r] / sum;
    memset(u, 0, (size_t)dx * sizeof(*u));
    for (r = 0; r < nv; r++) {
        const float *v = r < np ? xs->ph_v + (size_t)((p0 + r) % xs->cap_ph) * dx
                                : xs->se_v + (size_t)((s0 + r - np) % xs->cap_se) * dx;
        for (i = 0; i < dx; i++)
            u[i] += sc[r] * v[i];
    }
    matvec(&m->xo, u, out);
}
