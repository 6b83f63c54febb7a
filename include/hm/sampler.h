/*
 * sampler.h - turning logits into the next token (spec section 10).
 *
 * Order: logit_bias, repetition / presence / frequency penalties, temperature
 * (0 = greedy: argmax, lowest index on ties), top_k, top_p, min_p, then a draw with
 * the request's PRNG. The PRNG is xoshiro256** seeded through splitmix64(seed); a
 * draw is u = (next() >> 40) * 2^-24 in [0,1), and the token is the first (in the
 * order of the candidates sorted by probability descending, ties to the lower id)
 * whose cumulative probability exceeds u. So a seed reproduces a sequence exactly.
 *
 *     struct hm_sampler_params p = hm_sampler_params_default();
 *     p.temperature = 0.8f; p.seed = 42;
 *     struct hm_sampler *sm; hm_sampler_new(&p, n_vocab, &sm);
 *     struct hm_sample r; hm_sampler_sample(sm, logits, &r);  // logits modified in place
 *     hm_sampler_accept(sm, r.token);                           // history for penalties
 *     hm_sampler_free(sm);
 *
 * Log-probabilities reported are those of the model's distribution after logit_bias
 * and penalties, before temperature and truncation (log_softmax of those logits).
 */
#ifndef HM_SAMPLER_H
#define HM_SAMPLER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HM_MAX_TOP_LOGPROBS 20

struct hm_logit_bias {
    int32_t token;
    float bias;
};

struct hm_sampler_params {
    float temperature;        /* [0, 2]; 0 = greedy */
    int32_t top_k;            /* <= 0 = off */
    float top_p;              /* (0, 1]; 1 = off */
    float min_p;              /* [0, 1]; 0 = off */
    float presence_penalty;   /* [-2, 2] OpenAI semantics */
    float frequency_penalty;  /* [-2, 2] */
    float repetition_penalty; /* > 0; 1 = off (CTRL: divide positive logits, multiply negative) */
    uint64_t seed;
    const struct hm_logit_bias *bias; /* copied by hm_sampler_new */
    size_t n_bias;
    uint32_t n_top_logprobs;  /* alternatives to report, <= HM_MAX_TOP_LOGPROBS */
    bool want_logprobs;
};
struct hm_sampler_params hm_sampler_params_default(void);

struct hm_sample {
    int32_t token;
    float logprob;                           /* of token */
    uint32_t n_top;
    int32_t top_tokens[HM_MAX_TOP_LOGPROBS]; /* by logprob descending, ties lower id first */
    float top_logprobs[HM_MAX_TOP_LOGPROBS];
};

struct hm_sampler;
/* Penalties apply to the tokens passed to hm_sampler_accept (the generated ones).
 * Returns owned; free with hm_sampler_free(). HM_EINVAL for out-of-range params or
 * bias tokens outside [0, n_vocab). */
int hm_sampler_new(const struct hm_sampler_params *p, uint32_t n_vocab, struct hm_sampler **out);
void hm_sampler_free(struct hm_sampler *s);
/* Samples from n_vocab logits (modified in place). */
int hm_sampler_sample(struct hm_sampler *s, float *logits, struct hm_sample *out);
void hm_sampler_accept(struct hm_sampler *s, int32_t token);
/* Scores a given token (echo / prompt log-probabilities): out->token = token, its
 * log-probability and the n_top best alternatives under log_softmax(logits) of the raw
 * logits - no bias, penalties or temperature - computed exactly as hm_sampler_sample
 * computes them. HM_EINVAL for a token outside [0, n_vocab), n_top above
 * HM_MAX_TOP_LOGPROBS, or unusable logits (NaN, +inf, all -inf). */
int hm_sampler_score(const float *logits, uint32_t n_vocab, int32_t token, uint32_t n_top,
                     struct hm_sample *out);

/* The PRNG, exposed for tests and documentation. */
struct hm_rng {
    uint64_t s[4];
};
void hm_rng_seed(struct hm_rng *r, uint64_t seed);
uint64_t hm_rng_next(struct hm_rng *r);
float hm_rng_uniform(struct hm_rng *r); /* (next >> 40) * 2^-24 */

#endif
