/*
 * model_internal.h - tables shared by engine/model.c, engine/presets.c and the tools
 * (hybridmoe inspect / mkmodel). Not part of the server's contract.
 */
#ifndef HM_MODEL_INTERNAL_H
#define HM_MODEL_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hm/gguf.h"
#include "hm/model.h"

#define HM_ARCH "hybridmoe"

/* One hyperparameter key (without the "hybridmoe." prefix) and where it lives in
 * struct hm_hparams. The table drives reading, writing, printing and --set. */
enum hm__hp_kind { HM__HP_U32, HM__HP_F32, HM__HP_BOOL, HM__HP_STR, HM__HP_F32x3 };

struct hm__hp_key {
    const char *key;          /* e.g. "attention.head_count" */
    enum hm__hp_kind kind;
    size_t offset;            /* offsetof(struct hm_hparams, field) */
    bool required;            /* no default (conditionally required keys are false) */
};

/* The table, terminated by an entry with key == NULL. */
extern const struct hm__hp_key hm__hp_keys[];
/* Finds an entry by key, with or without the "hybridmoe." prefix. */
const struct hm__hp_key *hm__hp_find(const char *key);
/* Parses text into the field (u32 decimal, f32, bool true/false/1/0, pattern string,
 * three comma-separated floats). */
int hm__hp_set(struct hm_hparams *hp, const struct hm__hp_key *k, const char *text);
/* Formats the field as text into buf. */
void hm__hp_format(const struct hm_hparams *hp, const struct hm__hp_key *k, char *buf,
                   size_t len);
/* Adds every hyperparameter key (prefixed) to a writer. */
int hm__hp_write(const struct hm_hparams *hp, struct hm_gguf_writer *w);

/* Names of the feature flags ("xscale", "ctrl", "qk-norm", "sandwich", "adapt-gain",
 * "tied-output", "q-lora", "shared-experts") by bit index; NULL past the end. */
const char *hm__feature_name(unsigned bit);

/* Tensor enumeration for a configuration (engine/presets.c): calls cb for every tensor
 * that a model with hp and these optional groups stores, in file order. */
enum hm__tinit { HM__INIT_NORMAL, HM__INIT_ONE, HM__INIT_SMALL };
enum hm__trole { HM__ROLE_OTHER, HM__ROLE_EMBD, HM__ROLE_OUTPUT, HM__ROLE_ROUTED };

struct hm__tspec {
    char name[64];
    uint32_t n_dims;
    uint64_t ne[3];           /* GGUF order: ne[0] = cols */
    bool mat;                 /* stored in the matrix type (else f32) */
    enum hm__tinit init;
    float std;                /* HM__INIT_NORMAL: standard deviation; SMALL: half-range */
    enum hm__trole role;
    uint32_t layer;           /* for ROLE_ROUTED */
};

/* The type a matrix with `cols` columns is stored in when `type` is asked for: q8_0
 * needs cols % 32 == 0 and falls back to f16 otherwise. */
static inline enum hm_dtype hm__mat_type(enum hm_dtype type, uint64_t cols)
{
    return type == HM_DTYPE_Q8_0 && cols % HM_Q8_0_BLOCK ? HM_DTYPE_F16 : type;
}

typedef int (*hm__tspec_cb)(void *ctx, const struct hm__tspec *t);
int hm__model_tensors(const struct hm_hparams *hp, uint32_t features, hm__tspec_cb cb,
                      void *ctx);

#endif
