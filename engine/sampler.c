/*
 * sampler.c - turning logits into the next token (spec section 10, include/hm/sampler.h).
 *
 * DESIGN
 * One hm_sampler per request. hm_sampler_sample() runs, in this order:
 *   1. logit_bias: logits[token] += bias (in place);
 *   2. penalties over the accepted tokens (in place): repetition (CTRL: a positive logit is
 *      divided by the penalty, a negative one multiplied), then OpenAI presence (subtracted
 *      once per distinct token) and frequency (subtracted count times);
 *   3. log-probabilities (if wanted): log_softmax of those logits in float64;
 *   4. temperature 0: argmax, lowest id on ties; the PRNG is not used. Otherwise:
 *   5. top_k: the k candidates with the largest logits (ties: lower id), by selection;
 *   6. weights w_i = exp((l_i - l_max) / T) in float64 (w = 1 for the best candidate) and
 *      Z = their sum over the top_k set;
 *   7. top_p: the smallest prefix of the candidates sorted by probability descending (ties:
 *      lower id) whose weight reaches top_p * Z (cumulative probability >= top_p);
 *   8. min_p: keep w_i >= min_p (p_i >= min_p * p_max; a prefix of the same order); the kept
 *      set is the shorter prefix, its weight `total`;
 *   9. draw u = hm_rng_uniform() and return the first candidate of the kept prefix, in
 *      that order, whose cumulative weight exceeds u * total (cumulative probability,
 *      renormalised over the kept set, exceeds u); the last kept candidate if rounding
 *      leaves none.
 *
 * Efficiency for V = 131072: no step sorts the vocabulary. top_k is a quickselect; the
 * prefixes of steps 7 and 9 are found by a weighted quickselect (wsel: partition, sum the
 * better side's weight, descend into the side that holds the target), expected O(V) even
 * for flat distributions where the drawn token lies deep in the order; only the last
 * <= 32 candidates are sorted. min_p is a count. Cumulative sums are float64 but added in
 * partition order, so they may differ from a sequential sum by rounding (~1e-16 relative);
 * u has 24 bits, so this cannot matter in practice. All scratch memory is allocated by
 * hm_sampler_new(), so sampling never allocates and cannot fail for lack of memory.
 *
 * Logits: NaN or +inf anywhere, or no finite logit at all, is HM_EINVAL; -inf is allowed
 * (a masked token: it is never drawn and its logprob is -inf).
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "hm/alloc.h"
#include "hm/err.h"
#include "hm/sampler.h"

struct cand {
    double w;   /* weight exp((l - l_max) / T), set once the candidates are known */
    float l;    /* logit after bias and penalties (before temperature) */
    int32_t id; /* token id */
};

struct hm_sampler {
    struct hm_sampler_params p; /* p.bias points to our own copy */
    struct hm_logit_bias *bias; /* n_bias, owned */
    uint32_t n_vocab;
    struct hm_rng rng;
    bool penalties;   /* any penalty active: counts / seen exist */
    uint32_t *counts; /* n_vocab, accepted occurrences per token (owned) */
    int32_t *seen;    /* distinct accepted tokens, in first-seen order (owned) */
    uint32_t n_seen;
    struct cand *cands; /* n_vocab scratch (owned) */
};

/* ---- PRNG: xoshiro256** seeded through splitmix64 ------------------------------- */

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

void hm_rng_seed(struct hm_rng *r, uint64_t seed)
{
    uint64_t x = seed;
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix64(&x);
}

uint64_t hm_rng_next(struct hm_rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

float hm_rng_uniform(struct hm_rng *r)
{
    /* 24 bits: exactly representable in a float, in [0, 1). */
    return (float)(hm_rng_next(r) >> 40) * (1.0f / 16777216.0f);
}

/* ---- Parameters ----------------------------------------------------------------- */

struct hm_sampler_params hm_sampler_params_default(void)
{
    struct hm_sampler_params p;
    memset(&p, 0, sizeof p);
    p.temperature = 1.0f;
    p.top_k = 0;
    p.top_p = 1.0f;
    p.min_p = 0.0f;
    p.presence_penalty = 0.0f;
    p.frequency_penalty = 0.0f;
    p.repetition_penalty = 1.0f;
    p.seed = 0;
    p.bias = NULL;
    p.n_bias = 0;
    p.n_top_logprobs = 0;
    p.want_logprobs = false;
    return p;
}

/* Written as "!(in range)" so that NaN fails every check. */
static int validate(const struct hm_sampler_params *p, uint32_t n_vocab)
{
    if (n_vocab == 0 || n_vocab > INT32_MAX)
        return HM_EINVAL;
    if (!(p->temperature >= 0.0f && p->temperature <= 2.0f))
        return HM_EINVAL;
    if (!(p->top_p > 0.0f && p->top_p <= 1.0f))
        return HM_EINVAL;
    if (!(p->min_p >= 0.0f && p->min_p <= 1.0f))
        return HM_EINVAL;
    if (!(p->presence_penalty >= -2.0f && p->presence_penalty <= 2.0f))
        return HM_EINVAL;
    if (!(p->frequency_penalty >= -2.0f && p->frequency_penalty <= 2.0f))
        return HM_EINVAL;
    if (!(p->repetition_penalty > 0.0f && isfinite(p->repetition_penalty)))
        return HM_EINVAL;
    if (p->n_top_logprobs > HM_MAX_TOP_LOGPROBS)
        return HM_EINVAL;
    if (p->n_bias > 0 && p->bias == NULL)
        return HM_EINVAL;
    for (size_t i = 0; i < p->n_bias; i++) {
        if (p->bias[i].token < 0 || (uint32_t)p->bias[i].token >= n_vocab)
            return HM_EINVAL;
        if (!isfinite(p->bias[i].bias))
            return HM_EINVAL;
    }
    return HM_OK;
}

int hm_sampler_new(const struct hm_sampler_params *p, uint32_t n_vocab, struct hm_sampler **out)
{
    struct hm_sampler *s = NULL;
    int rc;

    if (out == NULL)
        return HM_EINVAL;
    *out = NULL;
    if (p == NULL)
        return HM_EINVAL;
    rc = validate(p, n_vocab);
    if (rc < 0)
        return rc;

    rc = HM_ENOMEM;
    s = hm_calloc(1, sizeof *s);
    if (s == NULL)
        goto out;
    s->p = *p;
    s->n_vocab = n_vocab;
    s->p.bias = NULL;
    if (p->n_bias > 0) {
        s->bias = hm_mallocarray(p->n_bias, sizeof *s->bias);
        if (s->bias == NULL)
            goto out;
        memcpy(s->bias, p->bias, p->n_bias * sizeof *s->bias);
        s->p.bias = s->bias;
    }
    s->penalties = p->presence_penalty != 0.0f || p->frequency_penalty != 0.0f ||
                   p->repetition_penalty != 1.0f;
    if (s->penalties) {
        s->counts = hm_calloc(n_vocab, sizeof *s->counts);
        s->seen = hm_mallocarray(n_vocab, sizeof *s->seen);
        if (s->counts == NULL || s->seen == NULL)
            goto out;
    }
    s->cands = hm_mallocarray(n_vocab, sizeof *s->cands);
    if (s->cands == NULL)
        goto out;
    hm_rng_seed(&s->rng, p->seed);
    *out = s;
    s = NULL;
    rc = HM_OK;
out:
    hm_sampler_free(s);
    return rc;
}

void hm_sampler_free(struct hm_sampler *s)
{
    if (s == NULL)
        return;
    hm_free(s->bias);
    hm_free(s->counts);
    hm_free(s->seen);
    hm_free(s->cands);
    hm_free(s);
}

void hm_sampler_accept(struct hm_sampler *s, int32_t token)
{
    if (s == NULL || !s->penalties || token < 0 || (uint32_t)token >= s->n_vocab)
        return;
    if (s->counts[token] == 0)
        s->seen[s->n_seen++] = token; /* at most n_vocab distinct tokens: fits */
    if (s->counts[token] < UINT32_MAX)
        s->counts[token]++;
}

/* ---- Ordering: a before b if its logit is larger, ties to the lower id ---------- */

static inline bool before(const struct cand *a, const struct cand *b)
{
    return a->l > b->l || (a->l == b->l && a->id < b->id);
}

static inline void swap_cand(struct cand *a, struct cand *b)
{
    struct cand t = *a;
    *a = *b;
    *b = t;
}

static void insertion_sort(struct cand *c, size_t n)
{
    for (size_t i = 1; i < n; i++) {
        struct cand x = c[i];
        size_t j = i;
        while (j > 0 && before(&x, &c[j - 1])) {
            c[j] = c[j - 1];
            j--;
        }
        c[j] = x;
    }
}

/* Median-of-three pivot moved to c[n-1]; Lomuto partition; returns the pivot's index. */
static size_t partition(struct cand *c, size_t n)
{
    size_t mid = n / 2, last = n - 1;
    if (before(&c[mid], &c[0]))
        swap_cand(&c[mid], &c[0]);
    if (before(&c[last], &c[0]))
        swap_cand(&c[last], &c[0]);
    if (before(&c[mid], &c[last]))
        swap_cand(&c[mid], &c[last]);
    /* now c[0] <= c[last] <= c[mid] in "before" order: c[last] is the median */
    size_t store = 0;
    for (size_t i = 0; i < last; i++) {
        if (before(&c[i], &c[last])) {
            swap_cand(&c[i], &c[store]);
            store++;
        }
    }
    swap_cand(&c[store], &c[last]);
    return store;
}

static void heap_sift(struct cand *c, size_t n, size_t i)
{
    /* max-heap in reverse "before" order: the root is the element that sorts last */
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && before(&c[m], &c[l]))
            m = l;
        if (r < n && before(&c[m], &c[r]))
            m = r;
        if (m == i)
            return;
        swap_cand(&c[i], &c[m]);
        i = m;
    }
}

static void heap_sort(struct cand *c, size_t n)
{
    for (size_t i = n / 2; i-- > 0;)
        heap_sift(c, n, i);
    for (size_t end = n; end > 1; end--) {
        swap_cand(&c[0], &c[end - 1]);
        heap_sift(c, end - 1, 0);
    }
}

/* Introsort: quicksort, heapsort past a depth limit, insertion sort for short runs. */
static void sort_rec(struct cand *c, size_t n, int depth)
{
    while (n > 16) {
        if (depth-- <= 0) {
            heap_sort(c, n);
            return;
        }
        size_t p = partition(c, n);
        /* recurse into the smaller side, loop on the larger */
        if (p < n - p - 1) {
            sort_rec(c, p, depth);
            c += p + 1;
            n -= p + 1;
        } else {
            sort_rec(c + p + 1, n - p - 1, depth);
            n = p;
        }
    }
    insertion_sort(c, n);
}

static int depth_limit(size_t n)
{
    int d = 0;
    while (n > 1) {
        n >>= 1;
        d++;
    }
    return 2 * d + 2;
}

static void sort_cands(struct cand *c, size_t n)
{
    sort_rec(c, n, depth_limit(n));
}

/* Moves the k best of c[0..n) to c[0..k) (in no particular order). 0 < k < n. */
static void select_cands(struct cand *c, size_t n, size_t k)
{
    int depth = depth_limit(n);
    while (n > 16) {
        if (depth-- <= 0)
            break;
        size_t p = partition(c, n);
        if (p == k || p + 1 == k)
            return; /* c[0..p) are the p best, c[p] the next */
        if (p > k) {
            n = p;
        } else {
            c += p + 1;
            n -= p + 1;
            k -= p + 1;
        }
    }
    sort_cands(c, n); /* small rest (or a bad pivot run): sorting selects too */
}

/* ---- Sampling ------------------------------------------------------------------- */

/* Weighted selection. Finds the smallest i such that the weights of the i + 1 best
 * candidates of c[0..n) (in "before" order) sum to more than target (strict) or at least
 * target (!strict), and rearranges c so that c[0..i] are those i + 1 best (in no
 * particular order). Returns i, and their weight in *mass. If rounding leaves the target
 * unreached, returns n - 1. Expected O(n): quickselect that descends into the side holding
 * the target, like nth_element, then sorts a short final range. n >= 1. */
static size_t wsel(struct cand *c, size_t n, double target, bool strict, double *mass)
{
    size_t lo = 0, hi = n;
    double acc = 0.0; /* weight of c[0..lo) */
    int depth = depth_limit(n);

#define REACHED(x) (strict ? (x) > target : (x) >= target)
    while (hi - lo > 32 && depth-- > 0) {
        size_t p = lo + partition(c + lo, hi - lo);
        double m = 0.0;
        for (size_t k = lo; k < p; k++)
            m += c[k].w;
        if (REACHED(acc + m)) {
            hi = p; /* in c[lo..p); never empty: acc alone did not reach */
            continue;
        }
        acc += m + c[p].w;
        if (REACHED(acc)) {
            *mass = acc;
            return p;
        }
        lo = p + 1;
    }
    sort_cands(c + lo, hi - lo);
    for (size_t k = lo; k < hi; k++) {
        acc += c[k].w;
        if (REACHED(acc)) {
            *mass = acc;
            return k;
        }
    }
#undef REACHED
    *mass = acc;
    return hi - 1;
}

/* The n best of the n_vocab logits (n <= HM_MAX_TOP_LOGPROBS), in order, by a small
 * insertion list: one pass over the vocabulary. Returns the count. */
static uint32_t top_n(const float *logits, uint32_t n_vocab, uint32_t n, struct cand *top)
{
    uint32_t k = 0;
    if (n > n_vocab)
        n = n_vocab;
    if (n == 0)
        return 0;
    for (uint32_t i = 0; i < n_vocab; i++) {
        struct cand x = {.w = 0.0, .l = logits[i], .id = (int32_t)i};
        if (k == n && !before(&x, &top[k - 1]))
            continue;
        uint32_t j = k < n ? k++ : n - 1;
        while (j > 0 && before(&x, &top[j - 1])) {
            top[j] = top[j - 1];
            j--;
        }
        top[j] = x;
    }
    return k;
}

/* log-sum-exp of the logits in float64 (lmax: their maximum), and the n_top best with
 * their log-probabilities into out. Returns the log-sum-exp. */
static double log_softmax_top(const float *logits, uint32_t V, float lmax, uint32_t n_top,
                              struct hm_sample *out)
{
    double sum = 0.0, lse;
    for (uint32_t i = 0; i < V; i++)
        sum += exp((double)logits[i] - (double)lmax);
    lse = (double)lmax + log(sum);
    if (n_top > 0) {
        struct cand top[HM_MAX_TOP_LOGPROBS];
        out->n_top = top_n(logits, V, n_top, top);
        for (uint32_t i = 0; i < out->n_top; i++) {
            out->top_tokens[i] = top[i].id;
            out->top_logprobs[i] = (float)((double)top[i].l - lse);
        }
    }
    return lse;
}

int hm_sampler_score(const float *logits, uint32_t n_vocab, int32_t token, uint32_t n_top,
                     struct hm_sample *out)
{
    float lmax = -INFINITY;

    if (!logits || !out || n_vocab == 0 || token < 0 || (uint32_t)token >= n_vocab ||
        n_top > HM_MAX_TOP_LOGPROBS)
        return HM_EINVAL;
    memset(out, 0, sizeof *out);
    for (uint32_t i = 0; i < n_vocab; i++) {
        float l = logits[i];
        if (isnan(l) || l == INFINITY)
            return HM_EINVAL;
        if (l > lmax)
            lmax = l;
    }
    if (lmax == -INFINITY)
        return HM_EINVAL;
    out->token = token;
    out->logprob = (float)((double)logits[token] - log_softmax_top(logits, n_vocab, lmax, n_top,
                                                                     out));
    return HM_OK;
}

int hm_sampler_sample(struct hm_sampler *s, float *logits, struct hm_sample *out)
{
    const struct hm_sampler_params *p;
    uint32_t V;
    float lmax;
    int32_t best;

    if (s == NULL || logits == NULL || out == NULL)
        return HM_EINVAL;
    p = &s->p;
    V = s->n_vocab;
    memset(out, 0, sizeof *out);
    out->token = -1;

    /* 1. bias */
    for (size_t i = 0; i < p->n_bias; i++)
        logits[s->bias[i].token] += s->bias[i].bias;

    /* 2. penalties over the distinct accepted tokens */
    if (s->penalties) {
        for (uint32_t i = 0; i < s->n_seen; i++) {
            int32_t t = s->seen[i];
            float l = logits[t];
            if (p->repetition_penalty != 1.0f)
                l = l > 0.0f ? l / p->repetition_penalty : l * p->repetition_penalty;
            l -= (float)s->counts[t] * p->frequency_penalty + p->presence_penalty;
            logits[t] = l;
        }
    }

    /* max (first index on ties) and a check that the logits are usable */
    best = -1;
    lmax = -INFINITY;
    for (uint32_t i = 0; i < V; i++) {
        float l = logits[i];
        if (isnan(l) || l == INFINITY)
            return HM_EINVAL;
        if (l > lmax) {
            lmax = l;
            best = (int32_t)i;
        }
    }
    if (best < 0)
        return HM_EINVAL; /* every logit is -inf */

    /* 3. log-probabilities: log_softmax in float64 */
    double lse = 0.0;
    if (p->want_logprobs)
        lse = log_softmax_top(logits, V, lmax, p->n_top_logprobs, out);

    if (p->temperature == 0.0f) {
        /* 4. greedy */
        out->token = best;
    } else {
        /* 5. top_k: the candidates are c[0..n) */
        struct cand *c = s->cands;
        size_t n = V;
        for (uint32_t i = 0; i < V; i++) {
            c[i].l = logits[i];
            c[i].id = (int32_t)i;
        }
        if (p->top_k > 0 && (uint32_t)p->top_k < V) {
            select_cands(c, V, (size_t)p->top_k);
            n = (size_t)p->top_k;
        }

        /* 6. weights relative to the best candidate (w = 1 for it) and their sum */
        double Z = 0.0;
        for (size_t i = 0; i < n; i++) {
            c[i].w = exp(((double)c[i].l - (double)lmax) / (double)p->temperature);
            Z += c[i].w;
        }

        /* 8 (counted first). min_p: the n_m candidates with w >= min_p, a prefix of the
         * order, and their weight */
        size_t n_m = n;
        double total_m = Z;
        if (p->min_p > 0.0f) {
            n_m = 0;
            total_m = 0.0;
            for (size_t i = 0; i < n; i++) {
                if (c[i].w >= (double)p->min_p) {
                    n_m++;
                    total_m += c[i].w;
                }
            }
        }

        /* 7. top_p: the smallest prefix whose weight reaches top_p * Z; the kept set is
         * the shorter of the two prefixes, moved to c[0..n_keep) */
        size_t n_keep = n_m;
        double total = total_m;
        if (p->top_p < 1.0f) {
            double mass;
            size_t i = wsel(c, n, (double)p->top_p * Z, false, &mass);
            if (i + 1 <= n_m) {
                n_keep = i + 1;
                total = mass;
            } else {
                select_cands(c, i + 1, n_m);
            }
        } else if (n_m < n) {
            select_cands(c, n, n_m);
        }

        /* 9. draw: the first kept candidate in order whose cumulative weight exceeds
         * u * total */
        double u = (double)hm_rng_uniform(&s->rng), mass;
        size_t i = wsel(c, n_keep, u * total, true, &mass);
        out->token = c[i].id;
    }

    if (p->want_logprobs)
        out->logprob = (float)((double)logits[out->token] - lse);
    return HM_OK;
}
