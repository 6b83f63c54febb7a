/*
 * model.h - a loaded HybridMoE model: hyperparameters, bound weights, counts.
 *
 * The struct layouts here are shared by the engine's files (engine/) and the tools;
 * the server only uses the accessor functions and struct hm_hparams.
 *
 *     struct hm_model *m;
 *     struct hm_errmsg em = {0};
 *     if (hm_model_load("models/default.gguf", &m, &em) < 0) die(em.text);
 *     printf("%u layers, pattern %s\n", m->hp.n_layer, m->hp.pattern);
 *     hm_model_free(m);
 *
 * Spec: ../shared/spec/HYBRIDMOE.md sections 1, 2, 11 and 12.8.
 */
#ifndef HM_MODEL_H
#define HM_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hm/err.h"
#include "hm/gguf.h"

#define HM_MAX_LAYERS 512
#define HM_MAX_EXPERTS 256
#define HM_CTRL_HIDDEN 16
#define HM_CTRL_INPUTS 4

/* Hyperparameters, with the spec's defaults applied (section 1). */
struct hm_hparams {
    uint32_t n_vocab;             /* V = rows of token_embd */
    uint32_t n_ctx;               /* context_length */
    uint32_t d;                   /* embedding_length */
    uint32_t n_layer;             /* block_count */
    char pattern[HM_MAX_LAYERS + 1]; /* layer_pattern, n_layer chars of G/L/M, NUL-terminated */
    uint32_t n_dense_lead;        /* leading_dense_block_count */
    uint32_t ff_dense;            /* feed_forward_length (0 if no dense layer) */
    uint32_t n_head;              /* h */
    uint32_t n_head_kv;           /* h_kv (G, L) */
    uint32_t head_dim;            /* hd = key_length (G, L) */
    float eps;                    /* attention.layer_norm_rms_epsilon */
    float rope_base;              /* rope.freq_base */
    uint32_t q_lora_rank;         /* r_q, 0 = direct W_q */
    uint32_t kv_lora_rank;        /* r */
    uint32_t qk_nope;             /* d_n */
    uint32_t qk_rope;             /* d_r */
    uint32_t v_head_dim;          /* d_v */
    uint32_t n_expert;            /* E (0 = all dense) */
    uint32_t n_expert_used;       /* K */
    uint32_t n_expert_shared;     /* S */
    uint32_t ff_expert;           /* ff_e */
    bool expert_weights_norm;
    float expert_weights_scale;
    uint32_t router_k_min;
    float router_threshold;       /* p0 */
    float router_threshold_gain;  /* g */
    uint32_t window_min, window_max, window_gain;
    uint32_t long_ctx_start, long_ctx_step, long_ctx_penalty;
    uint32_t phrase_span;         /* P */
    uint32_t max_phrases, max_sentences, max_sentence_len;
    uint32_t cross_dim;           /* d_x */
    uint32_t complexity_window;   /* W_c */
    float complexity_weights[3];  /* w_e, w_s, w_y */
};

/* A weight matrix (rows = outputs, cols = inputs), stored row-major in `type`.
 * data == NULL means the tensor is absent. For the stacked expert tensors
 * (E x rows x cols) `rows` is one expert's rows and n_mat = E; matrix e starts at
 * data + e * mat_bytes. */
struct hm_mat {
    enum hm_dtype type;
    uint32_t rows, cols;
    uint32_t n_mat;       /* 1, or E for stacked experts */
    size_t row_bytes;     /* bytes of one row */
    size_t mat_bytes;     /* rows * row_bytes */
    const void *data;     /* borrowed from the mapping */
};

/* Feature flags: which optional groups are present. */
enum hm_model_features {
    HM_FEAT_XSCALE = 1 << 0,     /* cross-scale attention (xscale.*) */
    HM_FEAT_CTRL = 1 << 1,       /* controller network (ctrl.*) */
    HM_FEAT_QK_NORM = 1 << 2,    /* any G/L layer has QK-norm */
    HM_FEAT_SANDWICH = 1 << 3,   /* any layer has post norms */
    HM_FEAT_ADAPT_GAIN = 1 << 4, /* any layer has *_norm_adapt */
    HM_FEAT_TIED_OUTPUT = 1 << 5,/* output.weight absent: logits use token_embd */
    HM_FEAT_Q_LORA = 1 << 6,     /* M layers use attn_q_a / attn_q_b */
    HM_FEAT_SHARED_EXPERTS = 1 << 7,
};

/* Vectors (norm weights, biases) are always f32 here: the loader converts them and
 * owns the copies. NULL = absent. */
struct hm_layer {
    char type;          /* 'G', 'L' or 'M' */
    bool moe;           /* MoE FFN (else dense) */
    const float *attn_norm, *attn_norm_adapt, *post_attn_norm; /* d */
    /* G, L */
    struct hm_mat wq;   /* h*hd x d; for M with q_lora_rank = 0: h*(d_n+d_r) x d */
    struct hm_mat wk, wv; /* h_kv*hd x d */
    const float *q_norm, *k_norm; /* hd */
    /* M */
    struct hm_mat wq_a; /* r_q x d */
    const float *q_a_norm; /* r_q */
    struct hm_mat wq_b; /* h*(d_n+d_r) x r_q */
    struct hm_mat wkv_a; /* (r + d_r) x d */
    const float *kv_a_norm; /* r */
    struct hm_mat wkv_b; /* h*(d_n+d_v) x r, per head d_n rows of K then d_v rows of V */
    struct hm_mat wo;   /* d x h*hd (G, L) or d x h*d_v (M) */
    const float *ffn_norm, *ffn_norm_adapt, *post_ffn_norm; /* d */
    /* dense FFN */
    struct hm_mat ffn_gate, ffn_up; /* ff x d */
    struct hm_mat ffn_down;         /* d x ff */
    /* MoE */
    struct hm_mat router;           /* E x d */
    struct hm_mat gate_exps, up_exps; /* E stacked ff_e x d */
    struct hm_mat down_exps;          /* E stacked d x ff_e */
    struct hm_mat gate_shexp, up_shexp; /* S*ff_e x d */
    struct hm_mat down_shexp;           /* d x S*ff_e */
};

struct hm_param_counts {
    uint64_t total;          /* every stored weight (section 11) */
    uint64_t active;         /* per token with K experts, vocabulary matrix once */
    uint64_t weight_bytes;   /* bytes of all tensors as stored */
    /* KV-cache elements per position, by layer type (one layer of that type). */
    uint64_t kv_elems_g, kv_elems_l, kv_elems_m;
};

struct hm_tokenizer;

struct hm_model {
    struct hm_hparams hp;
    uint32_t features;          /* enum hm_model_features */
    struct hm_gguf *gguf;       /* owned */
    struct hm_tokenizer *tok;   /* owned; from the tokenizer.ggml.* keys */
    struct hm_mat tok_embd;     /* V x d */
    struct hm_mat output;       /* V x d (== tok_embd when tied) */
    const float *output_norm;   /* d */
    /* cross-scale attention (HM_FEAT_XSCALE) */
    struct hm_mat xq, xk, xv;   /* d_x x d */
    struct hm_mat xo;           /* d x d_x */
    const float *scale_embd;    /* 2 x d_x, row 0 phrase, row 1 sentence */
    /* controller (HM_FEAT_CTRL) */
    const float *ctrl_fc1_w;    /* 16 x 4 */
    const float *ctrl_fc1_b;    /* 16 */
    const float *ctrl_fc2_w;    /* 1 x 16 */
    const float *ctrl_fc2_b;    /* 1 */
    struct hm_layer *layers;    /* n_layer, owned */
    struct hm_param_counts counts;
    void *owned;                /* internal: converted vectors */
};

/* Loads and validates a hybridmoe GGUF (hyperparameters, every tensor's presence and
 * shape for its layer type, optional groups all-or-nothing, the tokenizer).
 * Returns owned; free with hm_model_free(). Errors name the file, the key or tensor,
 * and the problem. */
int hm_model_load(const char *path, struct hm_model **out, struct hm_errmsg *em);
/* The same from an already opened file; takes ownership of g (freed on failure too). */
int hm_model_from_gguf(struct hm_gguf *g, struct hm_model **out, struct hm_errmsg *em);
void hm_model_free(struct hm_model *m);

/* Fills hp with the spec defaults for every key that has one (others zeroed). */
void hm_hparams_defaults(struct hm_hparams *hp);
/* Reads hyperparameters from GGUF metadata (defaults applied), validates them. */
int hm_hparams_from_gguf(const struct hm_gguf *g, struct hm_hparams *hp, struct hm_errmsg *em);
/* Checks internal consistency (pattern, divisibility, required keys for the layer
 * types present, ranges). */
int hm_hparams_validate(const struct hm_hparams *hp, struct hm_errmsg *em);
/* Counts from hyperparameters alone (no weights needed): tied says whether the output
 * matrix is tied; features says which optional groups would be stored. weight_bytes
 * assumes `type` for matrices and f32 for vectors. */
void hm_hparams_count(const struct hm_hparams *hp, uint32_t features, enum hm_dtype type,
                      struct hm_param_counts *out);
/* Number of MoE layers. */
uint32_t hm_hparams_n_moe(const struct hm_hparams *hp);
/* Is layer l MoE? */
bool hm_hparams_layer_is_moe(const struct hm_hparams *hp, uint32_t l);

/* ---- Presets and model generation (engine/presets.c) ---------------------------- */

struct hm_preset {
    const char *name;
    const char *description;
    struct hm_hparams hp;
    uint32_t features;          /* optional groups stored by default */
};

/* Returns a borrowed static preset, or NULL. */
const struct hm_preset *hm_preset_find(const char *name);
/* The presets, NULL-terminated. */
const struct hm_preset *const *hm_preset_list(void);

struct hm_tokenizer_data; /* tokenizer.h */

struct hm_generate_opts {
    uint64_t seed;
    enum hm_dtype type;                       /* matrices; vectors stay f32 */
    uint32_t features;                        /* which optional groups to write */
    const struct hm_tokenizer_data *tokenizer; /* NULL = default byte-level vocabulary */
    const char *name;                          /* general.name, may be NULL */
    hm_gguf_progress_cb progress;
    void *progress_ctx;
};

/* Writes a randomly initialised model (deterministic for a seed) to path. */
int hm_model_generate(const struct hm_hparams *hp, const struct hm_generate_opts *o,
                      const char *path, struct hm_errmsg *em);

#endif
