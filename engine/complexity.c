/*
 * complexity.c - the complexity estimator, the controller network and the window
 * policy (spec sections 7 and 8, exact rules 12.1, 12.2 and 12.4).
 *
 * Every value here depends only on the sequence's tokens up to the position asked
 * for, never on how a prompt is chunked or batched, so prefill and decode agree
 * bit for bit. Nothing here allocates: the token-id histogram is counted over a
 * sorted copy on the stack (or, for very long estimator windows, by repeated
 * minimum scans that visit the ids in the same ascending order), and embedding rows
 * are dequantized 32 values at a time into a stack buffer.
 *
 * Exact arithmetic (float64 for the features, then each rounded to float32):
 *   window    = positions [t + 1 - n, t], n = min(W_c, t + 1)
 *   entropy   H = sum over the distinct ids of the window in ascending id order of
 *               -(p * log(p)), p = (double)count / (double)n; e = H / log(n); e = 0 if n <= 1
 *   density   for each embedding column k (ascending), over the window positions i ascending:
 *                 mu[k] = (sum_i (double)e_i[k]) / n
 *                 num += sum_i (e_i[k] - mu[k])^2;  den += sum_i e_i[k]^2
 *             (each inner sum from 0, then added to num / den, which start at 0);
 *             s = num / den; s = 0 if n <= 1 or den == 0
 *   syntax    D = deepest nesting of ( [ { over the window's bytes from its start (closers
 *             decrease, never below 0); q = (tokens with any of , ; : ( ) [ ] { } " ') / n;
 *             y = 0.5 * min(D, 8) / 8 + 0.5 * q  (q = 0 when n = 0)
 *   context   l = log(t + 2) / log(context_length + 1)
 * Controller (float32, fixed order): z[j] = silu((sum_{i=0..3} w1[j][i] * f[i]) + b1[j]),
 * silu(x) = x * (1 / (1 + expf(-x))); c = sigmoid((sum_{j=0..15} w2[j] * z[j]) + b2),
 * sums accumulated from 0 in index order. Fallback: c = w_e*e + w_s*s + w_y*y in that order.
 * c is clamped to [0, 1]; a NaN becomes 0.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "hm/gguf.h"
#include "hm/tokenizer.h"

#define CHUNK 32        /* columns dequantized at a time (the q8_0 block) */
#define HIST_STACK 1024 /* windows up to this many tokens are sorted on the stack */

/* The decoded bytes of a token (spec 12.1); none without a tokenizer. Borrowed. */
static const uint8_t *token_bytes(const struct hm_model *m, int32_t id, size_t *len)
{
    *len = 0;
    if (!m->tok)
        return NULL;
    return hm_tokenizer_token_bytes(m->tok, id, len);
}

/* Declared in internal.h (n <= CHUNK). */
const float *hm__mat_row_chunk(const struct hm_mat *W, int64_t r, uint32_t k0, uint32_t n,
                               float *dst)
{
    const uint8_t *row;

    if (r < 0 || r >= (int64_t)W->rows || !W->data) {
        memset(dst, 0, n * sizeof(*dst));
        return dst;
    }
    row = (const uint8_t *)W->data + (size_t)r * W->row_bytes;
    if (W->type == HM_DTYPE_F32)
        return (const float *)(const void *)(row + (size_t)k0 * sizeof(float));
    hm_dequantize_row(W->type, row + hm_dtype_row_bytes(W->type, k0), dst, n);
    return dst;
}

static int cmp_i32(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

/* H of the ids w[0..n) (n >= 2), distinct ids visited in ascending order. */
static double entropy(const int32_t *w, uint32_t n)
{
    double H = 0.0;

    if (n <= HIST_STACK) {
        int32_t sorted[HIST_STACK];
        uint32_t i = 0;

        memcpy(sorted, w, n * sizeof(*w));
        qsort(sorted, n, sizeof(*sorted), cmp_i32);
        while (i < n) {
            uint32_t j = i;
            double p;

            while (j < n && sorted[j] == sorted[i])
                j++;
            p = (double)(j - i) / (double)n;
            H += -(p * log(p));
            i = j;
        }
    } else {
        int64_t prev = INT64_MIN;

        for (;;) {
            int64_t cur = INT64_MAX;
            uint32_t count = 0, i;
            double p;

            for (i = 0; i < n; i++) {
                if ((int64_t)w[i] <= prev)
                    continue;
                if ((int64_t)w[i] < cur) {
                    cur = w[i];
                    count = 1;
                } else if ((int64_t)w[i] == cur) {
                    count++;
                }
            }
            if (count == 0)
                break;
            p = (double)count / (double)n;
            H += -(p * log(p));
            prev = cur;
        }
    }
    return H;
}

/* pn[k] += (x[k] - mu[k])^2, pd[k] += x[k]^2 for k < nk (independent per column). */
static inline void sq_sums(double *pn, double *pd, const float *x, const double *mu,
                           uint32_t nk)
{
    uint32_t k;

    for (k = 0; k < nk; k++) {
        double v = (double)x[k], dv = v - mu[k];
        pn[k] += dv * dv;
        pd[k] += v * v;
    }
}

/* Semantic density of the window w[0..n) (n >= 2); order in the file comment. */
static double density(const struct hm_model *m, const int32_t *w, uint32_t n)
{
    const struct hm_mat *E = &m->tok_embd;
    uint32_t d = E->cols, k0, i, k;
    double num = 0.0, den = 0.0;

    for (k0 = 0; k0 < d; k0 += CHUNK) {
        uint32_t nk = d - k0 < CHUNK ? d - k0 : CHUNK;
        double mu[CHUNK] = {0}, pn[CHUNK] = {0}, pd[CHUNK] = {0};
        float tmp[CHUNK];
        const float *x;

        for (i = 0; i < n; i++) {
            x = hm__mat_row_chunk(E, w[i], k0, nk, tmp);
            for (k = 0; k < nk; k++)
                mu[k] += (double)x[k];
        }
        for (k = 0; k < nk; k++)
            mu[k] /= (double)n;
        for (i = 0; i < n; i++) {
            x = hm__mat_row_chunk(E, w[i], k0, nk, tmp);
            if (nk == CHUNK) /* constant trip count: vectorizes, same per-column order */
                sq_sums(pn, pd, x, mu, CHUNK);
            else
                sq_sums(pn, pd, x, mu, nk);
        }
        for (k = 0; k < nk; k++) {
            num += pn[k];
            den += pd[k];
        }
    }
    return den > 0.0 ? num / den : 0.0;
}

/* One of , ; : ( ) [ ] { } " ' (the 11 bytes of the string, not its NUL). */
static bool is_punct(uint8_t b)
{
    return memchr(",;:()[]{}\"'", b, 11) != NULL;
}

/* Syntactic depth y of the window w[0..n). */
static double syntax(const struct hm_model *m, const int32_t *w, uint32_t n)
{
    uint64_t depth = 0, deepest = 0;
    uint32_t n_punct = 0, i;
    double D, q;

    if (n == 0)
        return 0.0;
    for (i = 0; i < n; i++) {
        size_t len, j;
        const uint8_t *b = token_bytes(m, w[i], &len);
        bool punct = false;

        for (j = 0; j < len; j++) {
            uint8_t c = b[j];
            if (c == '(' || c == '[' || c == '{') {
                depth++;
                if (depth > deepest)
                    deepest = depth;
            } else if ((c == ')' || c == ']' || c == '}') && depth > 0) {
                depth--;
            }
            punct = punct || is_punct(c);
        }
        n_punct += punct;
    }
    D = (double)(deepest < 8 ? deepest : 8);
    q = (double)n_punct / (double)n;
    return 0.5 * D / 8.0 + 0.5 * q;
}

void hm__complexity_features(const struct hm_model *m, const int32_t *tokens, uint32_t t,
                             float out[4])
{
    uint64_t wc = m->hp.complexity_window;
    uint32_t n = (uint32_t)((uint64_t)t + 1 < wc ? (uint64_t)t + 1 : wc);
    const int32_t *w = tokens + ((uint64_t)t + 1 - n); /* the window, n tokens */
    double e = 0.0, s = 0.0, y, l = 0.0;

    if (n > 1) {
        e = entropy(w, n) / log((double)n);
        s = density(m, w, n);
    }
    y = syntax(m, w, n);
    if (m->hp.n_ctx > 0)
        l = log((double)t + 2.0) / log((double)m->hp.n_ctx + 1.0);
    out[0] = (float)e;
    out[1] = (float)s;
    out[2] = (float)y;
    out[3] = (float)l;
}

static float sigmoidf(float x)
{
    return 1.0f / (1.0f + expf(-x));
}

float hm__complexity_from_features(const struct hm_model *m, const float f[4])
{
    float c;

    if ((m->features & HM_FEAT_CTRL) && m->ctrl_fc1_w && m->ctrl_fc1_b && m->ctrl_fc2_w &&
        m->ctrl_fc2_b) {
        float z[HM_CTRL_HIDDEN], acc;
        int i, j;

        for (j = 0; j < HM_CTRL_HIDDEN; j++) {
            acc = 0.0f;
            for (i = 0; i < HM_CTRL_INPUTS; i++)
                acc += m->ctrl_fc1_w[j * HM_CTRL_INPUTS + i] * f[i];
            acc += m->ctrl_fc1_b[j];
            z[j] = acc * sigmoidf(acc);
        }
        acc = 0.0f;
        for (j = 0; j < HM_CTRL_HIDDEN; j++)
            acc += m->ctrl_fc2_w[j] * z[j];
        acc += m->ctrl_fc2_b[0];
        c = sigmoidf(acc);
    } else {
        const float *wt = m->hp.complexity_weights;
        c = wt[0] * f[0];
        c += wt[1] * f[1];
        c += wt[2] * f[2];
    }
    if (!(c >= 0.0f)) /* also NaN */
        c = 0.0f;
    if (c > 1.0f)
        c = 1.0f;
    return c;
}

float hm__complexity_at(const struct hm_model *m, const int32_t *tokens, uint32_t t)
{
    float f[4];

    hm__complexity_features(m, tokens, t, f);
    return hm__complexity_from_features(m, f);
}

/* floor(a / b) for b > 0 (C division truncates toward zero). */
static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;

    if (a % b != 0 && a < 0)
        q--;
    return q;
}

/* Section 8 / 12.4, in signed 64-bit integers:
 * w = clamp(w_min + floor(c_req * w_gain) - max(0, floor((N - L0) / L_step)) * w_pen,
 *           w_min, w_max); L_step = 0 means no penalty. Out-of-range intermediates
 * (absurd c_req or N, which admission rejects anyway) saturate instead of overflowing. */
int64_t hm_window_policy(const struct hm_model *m, double c_req, uint64_t n_planned)
{
    const struct hm_hparams *hp = &m->hp;
    const int64_t lim = INT64_C(1) << 52; /* far beyond any window, exact in a double */
    double g = floor(c_req * (double)hp->window_gain);
    int64_t w, pen = 0;

    if (isnan(g))
        g = 0.0;
    if (g > (double)lim)
        g = (double)lim;
    if (g < -(double)lim)
        g = -(double)lim;
    w = (int64_t)hp->window_min + (int64_t)g;
    if (hp->long_ctx_step > 0) {
        int64_t n = n_planned > (uint64_t)lim ? lim : (int64_t)n_planned;
        int64_t k = floor_div(n - (int64_t)hp->long_ctx_start, (int64_t)hp->long_ctx_step);

        if (k > 0) {
            /* k < 2^52 and w_pen < 2^32 could overflow: saturate at lim */
            if (hp->long_ctx_penalty > 0 && k > lim / (int64_t)hp->long_ctx_penalty)
                pen = lim;
            else
                pen = k * (int64_t)hp->long_ctx_penalty;
        }
    }
    w -= pen;
    if (w < (int64_t)hp->window_min)
        w = hp->window_min;
    if (w > (int64_t)hp->window_max)
        w = hp->window_max;
    return w;
}
