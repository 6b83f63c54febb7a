/*
 * testmodel.h - random in-memory HybridMoE models and a naive reference forward pass,
 * for the engine's tests (no GGUF file, m->tok == NULL, m->gguf == NULL).
 *
 *     struct hm_hparams hp = hm_test_hparams("GLM");
 *     struct hm_model *m;
 *     hm_test_model_new(&hp, HM_FEAT_XSCALE, HM_DTYPE_F32, 42, &m);
 *     ...
 *     hm_test_model_free(m);
 *
 * Weights are drawn from one xorshift stream per tensor (seeded from seed and the tensor's
 * name), so two models that differ only in the layer pattern or in an optional group share
 * every other weight.
 */
#ifndef HM_TESTMODEL_H
#define HM_TESTMODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "hm/model.h"

/* A small model (d 32, 4 heads, 2 kv heads, MLA, 4 experts top-2 with 1 shared, one
 * leading dense layer, context 96, small window settings) with the given pattern. */
struct hm_hparams hm_test_hparams(const char *pattern);

/* Widens every input dimension to a multiple of 32 (q8_0 blocks). */
void hm_test_hparams_q8(struct hm_hparams *hp);

/* features: enum hm_model_features (TIED_OUTPUT: no separate output matrix). Returns
 * owned; free with hm_test_model_free(). */
int hm_test_model_new(const struct hm_hparams *hp, uint32_t features, enum hm_dtype type,
                      uint64_t seed, struct hm_model **out);
void hm_test_model_free(struct hm_model *m);

/* Sets every adaptive-gain vector (attn/ffn_norm_adapt) to zero. */
void hm_test_model_zero_adapt(struct hm_model *m);
/* Sets xscale.o to zero (f32 models only). */
void hm_test_model_zero_xo(struct hm_model *m);

/* Request-level settings the reference needs. */
struct hm_test_ref_opts {
    const float *c;       /* c_t of every token */
    int64_t window;       /* L layers' w */
    uint32_t max_experts; /* 0 = K */
    float tau_fixed;      /* < 0 = policy */
    bool static_route;    /* fixed top-K */
    bool use_xs;          /* cross-scale attention */
};
/* The spec's forward pass written plainly (double accumulations, MLA in the naive form,
 * keys recomputed for every position): logits for every token, n x V floats. */
int hm_test_reference(const struct hm_model *m, const int32_t *tokens, uint32_t n,
                      const struct hm_test_ref_opts *o, float *logits);

/* Max |a - b| / max(1, max |b|). */
double hm_test_rel_err(const float *a, const float *b, size_t n);

#endif
