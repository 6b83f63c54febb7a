/*
 * presets.c - model presets, the tensor list of a configuration, parameter counts and
 * random model generation (spec section 11).
 *
 * hm__model_tensors() is the single description of which tensors a configuration
 * stores: hm_hparams_count() sums it and hm_model_generate() writes it, so the counts
 * printed by `hybridmoe mkmodel --dry-run` are exactly those of the written file (the
 * loader computes the same numbers from the tensors it binds; tests compare them).
 *
 * Generation is deterministic for a seed: each tensor has its own splitmix64 stream
 * seeded from (seed, tensor name), so the values do not depend on the order of writing.
 * Matrices are N(0, 1/cols) (std 1/sqrt(cols)), norm gammas 1, adaptive betas and
 * biases uniform in +-0.05.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "hm/alloc.h"
#include "hm/model.h"
#include "hm/tokenizer.h"
#include "model_internal.h"

/* ---- presets -------------------------------------------------------------------------- */

#define COMMON                                                                                     \
    .eps = 1e-5f, .rope_base = 10000.0f, .expert_weights_norm = true,                              \
    .expert_weights_scale = 1.0f, .router_k_min = 1, .router_threshold = 0.6f,                     \
    .router_threshold_gain = 0.4f, .complexity_weights = {0.4f, 0.3f, 0.3f}

#define WINDOW_DEFAULTS                                                                            \
    .window_min = 512, .window_max = 2048, .window_gain = 1024, .long_ctx_start = 4096,            \
    .long_ctx_step = 1024, .long_ctx_penalty = 128, .phrase_span = 4, .max_phrases = 64,           \
    .max_sentences = 16, .max_sentence_len = 64, .complexity_window = 64

#define ALL_FEATURES                                                                               \
    (HM_FEAT_XSCALE | HM_FEAT_CTRL | HM_FEAT_QK_NORM | HM_FEAT_SANDWICH | HM_FEAT_ADAPT_GAIN |     \
     HM_FEAT_Q_LORA | HM_FEAT_SHARED_EXPERTS)

static const struct hm_preset preset_tiny = {
    .name = "tiny",
    .description = "unit and golden tests: every feature on, short-context window settings",
    .hp = {COMMON, .n_vocab = 512, .n_ctx = 256, .d = 64, .n_layer = 6, .pattern = "GLMLGM",
           .n_dense_lead = 1, .ff_dense = 128, .n_head = 4, .n_head_kv = 2, .head_dim = 16,
           .q_lora_rank = 32, .kv_lora_rank = 32, .qk_nope = 16, .qk_rope = 8,
           .v_head_dim = 16, .n_expert = 4, .n_expert_used = 2, .n_expert_shared = 1,
           .ff_expert = 32, .window_min = 8, .window_max = 64, .window_gain = 32,
           .long_ctx_start = 64, .long_ctx_step = 32, .long_ctx_penalty = 4, .phrase_span = 4,
           .max_phrases = 16, .max_sentences = 8, .max_sentence_len = 16, .cross_dim = 32,
           .complexity_window = 16},
    .features = ALL_FEATURES | HM_FEAT_TIED_OUTPUT,
};

static const struct hm_preset preset_mini = {
    .name = "mini",
    .description = "benchmarks on a small machine (~66M parameters, untied output)",
    .hp = {COMMON, .n_vocab = 8192, .n_ctx = 2048, .d = 512, .n_layer = 8,
           .pattern = "GLLMGLLM", .n_dense_lead = 1, .ff_dense = 1536, .n_head = 8,
           .n_head_kv = 2, .head_dim = 64, .q_lora_rank = 0, .kv_lora_rank = 128,
           .qk_nope = 64, .qk_rope = 32, .v_head_dim = 64, .n_expert = 8, .n_expert_used = 2,
           .n_expert_shared = 1, .ff_expert = 512, .window_min = 64, .window_max = 512,
           .window_gain = 256, .long_ctx_start = 1024, .long_ctx_step = 256,
           .long_ctx_penalty = 16, .phrase_span = 4, .max_phrases = 64, .max_sentences = 16,
           .max_sentence_len = 64, .cross_dim = 128, .complexity_window = 64},
    .features = ALL_FEATURES,
};

#define BIG_FEATURES (HM_FEAT_XSCALE | HM_FEAT_CTRL | HM_FEAT_QK_NORM | HM_FEAT_ADAPT_GAIN)

static const struct hm_preset preset_small = {
    .name = "small",
    .description = "the proposal's HybridMoE-Small (7B total / 2B active)",
    .hp = {COMMON, WINDOW_DEFAULTS, .n_vocab = 131072, .n_ctx = 32768, .d = 2048,
           .n_layer = 24, .pattern = "GLLLMLLLGLLLMLLLGLLLMLLL", .n_dense_lead = 1,
           .ff_dense = 6144, .n_head = 16, .n_head_kv = 4, .head_dim = 128, .q_lora_rank = 0,
           .kv_lora_rank = 512, .qk_nope = 128, .qk_rope = 64, .v_head_dim = 128,
           .n_expert = 32, .n_expert_used = 6, .n_expert_shared = 2, .ff_expert = 1280,
           .cross_dim = 512},
    .features = BIG_FEATURES | HM_FEAT_SHARED_EXPERTS,
};

#define P6 "GLLLMLLL"
static const struct hm_preset preset_medium = {
    .name = "medium",
    .description = "the proposal's HybridMoE-Medium (70B total / 15B active)",
    .hp = {COMMON, WINDOW_DEFAULTS, .n_vocab = 131072, .n_ctx = 65536, .d = 6144,
           .n_layer = 48, .pattern = P6 P6 P6 P6 P6 P6, .n_dense_lead = 3, .ff_dense = 16384,
           .n_head = 48, .n_head_kv = 8, .head_dim = 128, .q_lora_rank = 1536,
           .kv_lora_rank = 512, .qk_nope = 128, .qk_rope = 64, .v_head_dim = 128,
           .n_expert = 48, .n_expert_used = 6, .n_expert_shared = 1, .ff_expert = 1536,
           .cross_dim = 1024},
    .features = BIG_FEATURES | HM_FEAT_Q_LORA | HM_FEAT_SHARED_EXPERTS,
};

static const struct hm_preset preset_large = {
    .name = "large",
    .description = "the proposal's HybridMoE-Large (400B total / 40B active)",
    .hp = {COMMON, WINDOW_DEFAULTS, .n_vocab = 131072, .n_ctx = 131072, .d = 7168,
           .n_layer = 64, .pattern = P6 P6 P6 P6 P6 P6 P6 P6, .n_dense_lead = 3,
           .ff_dense = 18432, .n_head = 56, .n_head_kv = 8, .head_dim = 128,
           .q_lora_rank = 1536, .kv_lora_rank = 512, .qk_nope = 128, .qk_rope = 64,
           .v_head_dim = 128, .n_expert = 128, .n_expert_used = 8, .n_expert_shared = 2,
           .ff_expert = 2304, .cross_dim = 1024},
    .features = BIG_FEATURES | HM_FEAT_Q_LORA | HM_FEAT_SHARED_EXPERTS,
};

static const struct hm_preset *const presets[] = {
    &preset_tiny, &preset_mini, &preset_small, &preset_medium, &preset_large, NULL,
};

const struct hm_preset *const *hm_preset_list(void)
{
    return presets;
}

const struct hm_preset *hm_preset_find(const char *name)
{
    for (size_t i = 0; presets[i]; i++)
        if (strcmp(presets[i]->name, name) == 0)
            return presets[i];
    return NULL;
}

/* ---- tensor list ------------------------------------------------------------------------ */

struct emit {
    hm__tspec_cb cb;
    void *ctx;
    int rc;
};

static void emit(struct emit *e, enum hm__trole role, uint32_t layer, bool mat,
                 enum hm__tinit init, uint32_t n_dims, uint64_t rows, uint64_t cols,
                 uint64_t n_mat, const char *fmt, ...) __attribute__((format(printf, 10, 11)));

/* Shapes are given rows x cols (and n_mat for stacked experts); stored GGUF order. */
static void emit(struct emit *e, enum hm__trole role, uint32_t layer, bool mat,
                 enum hm__tinit init, uint32_t n_dims, uint64_t rows, uint64_t cols,
                 uint64_t n_mat, const char *fmt, ...)
{
    struct hm__tspec t;
    va_list ap;
    if (e->rc < 0)
        return;
    memset(&t, 0, sizeof t);
    va_start(ap, fmt);
    vsnprintf(t.name, sizeof t.name, fmt, ap);
    va_end(ap);
    t.n_dims = n_dims;
    t.ne[0] = cols;
    t.ne[1] = rows;
    t.ne[2] = n_mat;
    if (n_dims == 1) {
        t.ne[1] = 1;
        t.ne[2] = 1;
    } else if (n_dims == 2) {
        t.ne[2] = 1;
    }
    t.mat = mat;
    t.init = init;
    t.std = init == HM__INIT_NORMAL ? 1.0f / sqrtf((float)cols) : 0.05f;
    t.role = role;
    t.layer = layer;
    e->rc = e->cb(e->ctx, &t);
}

#define MAT(role, rows, cols, ...)                                                                 \
    emit(&e, role, l, true, HM__INIT_NORMAL, 2, rows, cols, 1, __VA_ARGS__)
#define VEC(init, n, ...) emit(&e, HM__ROLE_OTHER, l, false, init, 1, 1, n, 1, __VA_ARGS__)

int hm__model_tensors(const struct hm_hparams *hp, uint32_t features, hm__tspec_cb cb,
                      void *ctx)
{
    struct emit e = {cb, ctx, HM_OK};
    uint64_t d = hp->d, dx = hp->cross_dim;
    uint32_t l = 0;
    const enum hm__trole O = HM__ROLE_OTHER;

    MAT(HM__ROLE_EMBD, hp->n_vocab, d, "token_embd.weight");
    if (features & HM_FEAT_XSCALE) {
        MAT(O, dx, d, "xscale.q.weight");
        MAT(O, dx, d, "xscale.k.weight");
        MAT(O, dx, d, "xscale.v.weight");
        MAT(O, d, dx, "xscale.o.weight");
        emit(&e, O, 0, false, HM__INIT_NORMAL, 2, 2, dx, 1, "xscale.scale_embd.weight");
    }
    if (features & HM_FEAT_CTRL) {
        emit(&e, O, 0, false, HM__INIT_NORMAL, 2, HM_CTRL_HIDDEN, HM_CTRL_INPUTS, 1,
             "ctrl.fc1.weight");
        VEC(HM__INIT_SMALL, HM_CTRL_HIDDEN, "ctrl.fc1.bias");
        emit(&e, O, 0, false, HM__INIT_NORMAL, 2, 1, HM_CTRL_HIDDEN, 1, "ctrl.fc2.weight");
        VEC(HM__INIT_SMALL, 1, "ctrl.fc2.bias");
    }
    for (l = 0; l < hp->n_layer; l++) {
        bool m = hp->pattern[l] == 'M';
        VEC(HM__INIT_ONE, d, "blk.%u.attn_norm.weight", l);
        if (features & HM_FEAT_ADAPT_GAIN)
            VEC(HM__INIT_SMALL, d, "blk.%u.attn_norm_adapt.weight", l);
        if (features & HM_FEAT_SANDWICH)
            VEC(HM__INIT_ONE, d, "blk.%u.post_attention_norm.weight", l);
        if (!m) {
            uint64_t q = (uint64_t)hp->n_head * hp->head_dim;
            uint64_t kv = (uint64_t)hp->n_head_kv * hp->head_dim;
            MAT(O, q, d, "blk.%u.attn_q.weight", l);
            MAT(O, kv, d, "blk.%u.attn_k.weight", l);
            MAT(O, kv, d, "blk.%u.attn_v.weight", l);
            if (features & HM_FEAT_QK_NORM) {
                VEC(HM__INIT_ONE, hp->head_dim, "blk.%u.attn_q_norm.weight", l);
                VEC(HM__INIT_ONE, hp->head_dim, "blk.%u.attn_k_norm.weight", l);
            }
            MAT(O, d, q, "blk.%u.attn_output.weight", l);
        } else {
            uint64_t q = (uint64_t)hp->n_head * (hp->qk_nope + hp->qk_rope);
            if (hp->q_lora_rank) {
                MAT(O, hp->q_lora_rank, d, "blk.%u.attn_q_a.weight", l);
                VEC(HM__INIT_ONE, hp->q_lora_rank, "blk.%u.attn_q_a_norm.weight", l);
                MAT(O, q, hp->q_lora_rank, "blk.%u.attn_q_b.weight", l);
            } else {
                MAT(O, q, d, "blk.%u.attn_q.weight", l);
            }
            MAT(O, (uint64_t)hp->kv_lora_rank + hp->qk_rope, d, "blk.%u.attn_kv_a_mqa.weight",
                l);
            VEC(HM__INIT_ONE, hp->kv_lora_rank, "blk.%u.attn_kv_a_norm.weight", l);
            MAT(O, (uint64_t)hp->n_head * (hp->qk_nope + hp->v_head_dim), hp->kv_lora_rank,
                "blk.%u.attn_kv_b.weight", l);
            MAT(O, d, (uint64_t)hp->n_head * hp->v_head_dim, "blk.%u.attn_output.weight", l);
        }
        VEC(HM__INIT_ONE, d, "blk.%u.ffn_norm.weight", l);
        if (features & HM_FEAT_ADAPT_GAIN)
            VEC(HM__INIT_SMALL, d, "blk.%u.ffn_norm_adapt.weight", l);
        if (features & HM_FEAT_SANDWICH)
            VEC(HM__INIT_ONE, d, "blk.%u.post_ffw_norm.weight", l);
        if (!hm_hparams_layer_is_moe(hp, l)) {
            MAT(O, hp->ff_dense, d, "blk.%u.ffn_gate.weight", l);
            MAT(O, hp->ff_dense, d, "blk.%u.ffn_up.weight", l);
            MAT(O, d, hp->ff_dense, "blk.%u.ffn_down.weight", l);
        } else {
            uint64_t E = hp->n_expert, ff = hp->ff_expert;
            MAT(O, E, d, "blk.%u.ffn_gate_inp.weight", l);
            emit(&e, HM__ROLE_ROUTED, l, true, HM__INIT_NORMAL, 3, ff, d, E,
                 "blk.%u.ffn_gate_exps.weight", l);
            emit(&e, HM__ROLE_ROUTED, l, true, HM__INIT_NORMAL, 3, ff, d, E,
                 "blk.%u.ffn_up_exps.weight", l);
            emit(&e, HM__ROLE_ROUTED, l, true, HM__INIT_NORMAL, 3, d, ff, E,
                 "blk.%u.ffn_down_exps.weight", l);
            if (hp->n_expert_shared) {
                uint64_t sff = hp->n_expert_shared * ff;
                MAT(O, sff, d, "blk.%u.ffn_gate_shexp.weight", l);
                MAT(O, sff, d, "blk.%u.ffn_up_shexp.weight", l);
                MAT(O, d, sff, "blk.%u.ffn_down_shexp.weight", l);
            }
        }
    }
    l = 0;
    VEC(HM__INIT_ONE, d, "output_norm.weight");
    if (!(features & HM_FEAT_TIED_OUTPUT))
        MAT(HM__ROLE_OUTPUT, hp->n_vocab, d, "output.weight");
    return e.rc;
}

/* ---- counts ------------------------------------------------------------------------------ */

struct count_ctx {
    const struct hm_hparams *hp;
    bool tied;
    enum hm_dtype type;
    struct hm_param_counts *c;
};

static uint64_t spec_elems(const struct hm__tspec *t)
{
    return t->ne[0] * t->ne[1] * t->ne[2];
}

static uint64_t spec_bytes(const struct hm__tspec *t, enum hm_dtype type)
{
    if (!t->mat)
        return 4 * spec_elems(t);
    enum hm_dtype mt = hm__mat_type(type, t->ne[0]);
    return hm_dtype_row_bytes(mt, t->ne[0]) * t->ne[1] * t->ne[2];
}

static int count_cb(void *ctx, const struct hm__tspec *t)
{
    struct count_ctx *cc = ctx;
    uint64_t n = spec_elems(t);
    cc->c->total += n;
    cc->c->weight_bytes += spec_bytes(t, cc->type);
    if (t->role == HM__ROLE_ROUTED)
        cc->c->active += n / cc->hp->n_expert * cc->hp->n_expert_used;
    else if (t->role != HM__ROLE_EMBD || cc->tied)
        cc->c->active += n;
    return HM_OK;
}

static uint32_t effective_features(const struct hm_hparams *hp, uint32_t features)
{
    uint32_t f = features & (HM_FEAT_XSCALE | HM_FEAT_CTRL | HM_FEAT_SANDWICH |
                             HM_FEAT_ADAPT_GAIN | HM_FEAT_TIED_OUTPUT);
    bool any_g = false, any_m = false;
    for (uint32_t l = 0; l < hp->n_layer && l < HM_MAX_LAYERS; l++) {
        any_g |= hp->pattern[l] != 'M';
        any_m |= hp->pattern[l] == 'M';
    }
    if (any_g && (features & HM_FEAT_QK_NORM))
        f |= HM_FEAT_QK_NORM;
    if (any_m && hp->q_lora_rank)
        f |= HM_FEAT_Q_LORA;
    if (hp->n_expert && hp->n_expert_shared && hm_hparams_n_moe(hp))
        f |= HM_FEAT_SHARED_EXPERTS;
    return f;
}

void hm_hparams_count(const struct hm_hparams *hp, uint32_t features, enum hm_dtype type,
                      struct hm_param_counts *out)
{
    memset(out, 0, sizeof *out);
    struct count_ctx cc = {hp, (features & HM_FEAT_TIED_OUTPUT) != 0, type, out};
    hm__model_tensors(hp, features, count_cb, &cc);
    out->kv_elems_g = out->kv_elems_l = 2ull * hp->n_head_kv * hp->head_dim;
    out->kv_elems_m = (uint64_t)hp->kv_lora_rank + hp->qk_rope;
}

/* ---- generation ------------------------------------------------------------------------- */

struct gen_ctx {
    struct hm__tspec *specs;
    size_t n, cap;
    size_t next;           /* index of the tensor the writer asks for next */
    uint64_t seed;
    enum hm_dtype type;
    float *row;            /* scratch: one row of f32 */
    size_t row_cap;
};

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Uniform in (0, 1). */
static double uniform(uint64_t *s)
{
    return ((double)(splitmix64(s) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

static int collect_cb(void *ctx, const struct hm__tspec *t)
{
    struct gen_ctx *g = ctx;
    if (g->n == g->cap) {
        size_t nc = g->cap ? g->cap * 2 : 64;
        struct hm__tspec *p = hm_realloc(g->specs, nc * sizeof *p);
        if (!p)
            return HM_ENOMEM;
        g->specs = p;
        g->cap = nc;
    }
    g->specs[g->n++] = *t;
    return HM_OK;
}

static void gen_values(const struct hm__tspec *t, uint64_t *s, float *dst, uint64_t n)
{
    switch (t->init) {
    case HM__INIT_ONE:
        for (uint64_t i = 0; i < n; i++)
            dst[i] = 1.0f;
        return;
    case HM__INIT_SMALL:
        for (uint64_t i = 0; i < n; i++)
            dst[i] = (float)((uniform(s) * 2.0 - 1.0) * t->std);
        return;
    case HM__INIT_NORMAL:
        for (uint64_t i = 0; i < n; i += 2) {
            /* Box-Muller: two normals per pair of uniforms */
            double r = sqrt(-2.0 * log(uniform(s)));
            double a = 2.0 * M_PI * uniform(s);
            dst[i] = (float)(r * cos(a) * t->std);
            if (i + 1 < n)
                dst[i + 1] = (float)(r * sin(a) * t->std);
        }
        return;
    }
}

static int fill_cb(void *ctx, const char *name, void *dst, uint64_t n_bytes)
{
    struct gen_ctx *g = ctx;
    if (g->next >= g->n || strcmp(g->specs[g->next].name, name) != 0)
        return HM_EINVAL;
    const struct hm__tspec *t = &g->specs[g->next++];
    enum hm_dtype type = t->mat ? hm__mat_type(g->type, t->ne[0]) : HM_DTYPE_F32;
    uint64_t cols = t->ne[0], rows = t->ne[1] * t->ne[2];
    uint64_t rb = hm_dtype_row_bytes(type, cols);
    if (rb * rows != n_bytes)
        return HM_EINVAL;
    /* stream seeded by (seed, name): FNV-1a of the name */
    uint64_t h = 0xcbf29ce484222325ull;
    for (const char *p = name; *p; p++)
        h = (h ^ (uint8_t)*p) * 0x100000001b3ull;
    uint64_t s = g->seed ^ h;
    splitmix64(&s);
    if (cols > g->row_cap) {
        float *r = hm_realloc(g->row, (size_t)cols * sizeof *r);
        if (!r)
            return HM_ENOMEM;
        g->row = r;
        g->row_cap = (size_t)cols;
    }
    uint8_t *o = dst;
    for (uint64_t r = 0; r < rows; r++) {
        gen_values(t, &s, g->row, cols);
        hm_quantize_row(type, g->row, o + r * rb, cols);
    }
    return HM_OK;
}

int hm_model_generate(const struct hm_hparams *hp, const struct hm_generate_opts *o,
                      const char *path, struct hm_errmsg *em)
{
    struct gen_ctx g = {0};
    struct hm_gguf_writer *w = NULL;
    struct hm_tokenizer_data *td_owned = NULL;
    const struct hm_tokenizer_data *td = o->tokenizer;
    int rc;

    rc = hm_hparams_validate(hp, em);
    if (rc < 0)
        return rc;
    if (o->type != HM_DTYPE_F32 && o->type != HM_DTYPE_F16 && o->type != HM_DTYPE_BF16 &&
        o->type != HM_DTYPE_Q8_0)
        return hm_errmsg_set(em, HM_EINVAL, "%s: unsupported matrix type %d", path, o->type);
    uint32_t features = effective_features(hp, o->features);
    g.seed = o->seed;
    g.type = o->type;
    rc = HM_ENOMEM;
    if (!td) {
        if (hp->n_vocab < 258) {
            rc = hm_errmsg_set(em, HM_EINVAL, "%s: the default vocabulary needs n_vocab >= 258 "
                               "(have %u)", path, hp->n_vocab);
            goto out;
        }
        rc = hm_tokenizer_data_default(hp->n_vocab, &td_owned);
        if (rc < 0) {
            hm_errmsg_set(em, rc, "%s: cannot build the default vocabulary: %s", path,
                          hm_strerror(rc));
            goto out;
        }
        td = td_owned;
    }
    if (td->n_tokens != hp->n_vocab) {
        rc = hm_errmsg_set(em, HM_EINVAL, "%s: tokenizer has %u tokens, the model %u", path,
                           td->n_tokens, hp->n_vocab);
        goto out;
    }
    rc = hm__model_tensors(hp, features, collect_cb, &g);
    if (rc == HM_OK)
        rc = hm_gguf_writer_new(&w);
    if (rc == HM_OK)
        rc = hm_gguf_writer_add_str(w, "general.architecture", HM_ARCH);
    if (rc == HM_OK && o->name)
        rc = hm_gguf_writer_add_str(w, "general.name", o->name);
    if (rc == HM_OK)
        rc = hm_gguf_writer_add_u32(w, "general.alignment", 32);
    if (rc == HM_OK)
        rc = hm__hp_write(hp, w);
    if (rc == HM_OK)
        rc = hm_tokenizer_data_write(td, w);
    for (size_t i = 0; i < g.n && rc == HM_OK; i++) {
        const struct hm__tspec *t = &g.specs[i];
        enum hm_dtype type = t->mat ? hm__mat_type(o->type, t->ne[0]) : HM_DTYPE_F32;
        rc = hm_gguf_writer_add_tensor(w, t->name, type, t->n_dims, t->ne, NULL);
    }
    if (rc < 0) {
        hm_errmsg_set(em, rc, "%s: cannot prepare the model: %s", path, hm_strerror(rc));
        goto out;
    }
    rc = hm_gguf_writer_write(w, path, fill_cb, &g, o->progress, o->progress_ctx, em);
out:
    hm_gguf_writer_free(w);
    hm_tokenizer_data_free(td_owned);
    hm_free(g.specs);
    hm_free(g.row);
    return rc;
}
