/*
 * model.c - hyperparameters and weight binding for a hybridmoe GGUF (spec sections 1, 2,
 * 11, 12.8).
 *
 * The loader reads the hyperparameters (defaults applied), validates them, then binds
 * every tensor the schema expects for each layer's type, checking presence and shape.
 * Optional groups are all-or-nothing: the global groups (xscale.*, ctrl.*) and, per
 * layer, the QK-norm pair, the sandwich (post) norm pair and the adaptive-gain pair.
 * A tensor the schema does not know is an error, so a file is either fully understood
 * or refused. Matrices stay in the mapping (struct hm_mat views); vectors are converted
 * to f32 copies owned by the model.
 */
#include "hm/model.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hm/alloc.h"
#include "hm/tokenizer.h"
#include "model_internal.h"

#define HP(field) offsetof(struct hm_hparams, field)

const struct hm__hp_key hm__hp_keys[] = {
    {"context_length", HM__HP_U32, HP(n_ctx), true},
    {"embedding_length", HM__HP_U32, HP(d), true},
    {"block_count", HM__HP_U32, HP(n_layer), true},
    {"layer_pattern", HM__HP_STR, HP(pattern), true},
    {"leading_dense_block_count", HM__HP_U32, HP(n_dense_lead), false},
    {"feed_forward_length", HM__HP_U32, HP(ff_dense), false},
    {"attention.head_count", HM__HP_U32, HP(n_head), true},
    {"attention.head_count_kv", HM__HP_U32, HP(n_head_kv), false},
    {"attention.key_length", HM__HP_U32, HP(head_dim), false},
    {"attention.layer_norm_rms_epsilon", HM__HP_F32, HP(eps), false},
    {"rope.freq_base", HM__HP_F32, HP(rope_base), false},
    {"mla.q_lora_rank", HM__HP_U32, HP(q_lora_rank), false},
    {"mla.kv_lora_rank", HM__HP_U32, HP(kv_lora_rank), false},
    {"mla.qk_nope_head_dim", HM__HP_U32, HP(qk_nope), false},
    {"mla.qk_rope_head_dim", HM__HP_U32, HP(qk_rope), false},
    {"mla.v_head_dim", HM__HP_U32, HP(v_head_dim), false},
    {"expert_count", HM__HP_U32, HP(n_expert), false},
    {"expert_used_count", HM__HP_U32, HP(n_expert_used), false},
    {"expert_shared_count", HM__HP_U32, HP(n_expert_shared), false},
    {"expert_feed_forward_length", HM__HP_U32, HP(ff_expert), false},
    {"expert_weights_norm", HM__HP_BOOL, HP(expert_weights_norm), false},
    {"expert_weights_scale", HM__HP_F32, HP(expert_weights_scale), false},
    {"router.k_min", HM__HP_U32, HP(router_k_min), false},
    {"router.threshold", HM__HP_F32, HP(router_threshold), false},
    {"router.threshold_gain", HM__HP_F32, HP(router_threshold_gain), false},
    {"window.min", HM__HP_U32, HP(window_min), false},
    {"window.max", HM__HP_U32, HP(window_max), false},
    {"window.complexity_gain", HM__HP_U32, HP(window_gain), false},
    {"window.long_context_start", HM__HP_U32, HP(long_ctx_start), false},
    {"window.long_context_step", HM__HP_U32, HP(long_ctx_step), false},
    {"window.long_context_penalty", HM__HP_U32, HP(long_ctx_penalty), false},
    {"multiscale.phrase_span", HM__HP_U32, HP(phrase_span), false},
    {"multiscale.max_phrases", HM__HP_U32, HP(max_phrases), false},
    {"multiscale.max_sentences", HM__HP_U32, HP(max_sentences), false},
    {"multiscale.max_sentence_length", HM__HP_U32, HP(max_sentence_len), false},
    {"multiscale.cross_dim", HM__HP_U32, HP(cross_dim), false},
    {"complexity.window", HM__HP_U32, HP(complexity_window), false},
    {"complexity.weights", HM__HP_F32x3, HP(complexity_weights), false},
    {NULL, HM__HP_U32, 0, false},
};

static const char *const feature_names[] = {
    "xscale", "ctrl", "qk-norm", "sandwich", "adapt-gain", "tied-output", "q-lora",
    "shared-experts",
};

const char *hm__feature_name(unsigned bit)
{
    return bit < sizeof feature_names / sizeof feature_names[0] ? feature_names[bit] : NULL;
}

const struct hm__hp_key *hm__hp_find(const char *key)
{
    if (strncmp(key, HM_ARCH ".", sizeof HM_ARCH) == 0)
        key += sizeof HM_ARCH;
    for (const struct hm__hp_key *k = hm__hp_keys; k->key; k++)
        if (strcmp(k->key, key) == 0)
            return k;
    return NULL;
}

static int parse_f32(const char *s, float *out)
{
    char *end;
    errno = 0;
    float v = strtof(s, &end);
    if (end == s || errno)
        return HM_EINVAL;
    while (*end == ' ')
        end++;
    if (*end && *end != ',')
        return HM_EINVAL;
    *out = v;
    return HM_OK;
}

int hm__hp_set(struct hm_hparams *hp, const struct hm__hp_key *k, const char *text)
{
    char *p = (char *)hp + k->offset;
    switch (k->kind) {
    case HM__HP_U32: {
        char *end;
        if (*text < '0' || *text > '9')
            return HM_EINVAL;
        errno = 0;
        unsigned long long v = strtoull(text, &end, 10);
        if (*end || errno || v > UINT32_MAX)
            return HM_EINVAL;
        uint32_t u = (uint32_t)v;
        memcpy(p, &u, 4);
        return HM_OK;
    }
    case HM__HP_F32: {
        float f;
        if (parse_f32(text, &f) < 0 || strchr(text, ','))
            return HM_EINVAL;
        memcpy(p, &f, 4);
        return HM_OK;
    }
    case HM__HP_BOOL: {
        bool b;
        if (strcmp(text, "true") == 0 || strcmp(text, "1") == 0)
            b = true;
        else if (strcmp(text, "false") == 0 || strcmp(text, "0") == 0)
            b = false;
        else
            return HM_EINVAL;
        memcpy(p, &b, sizeof b);
        return HM_OK;
    }
    case HM__HP_STR: {
        size_t n = strlen(text);
        if (n > HM_MAX_LAYERS)
            return HM_ERANGE;
        memcpy(p, text, n + 1);
        return HM_OK;
    }
    case HM__HP_F32x3: {
        float f[3];
        const char *s = text;
        for (int i = 0; i < 3; i++) {
            if (parse_f32(s, &f[i]) < 0)
                return HM_EINVAL;
            s = strchr(s, ',');
            if ((i < 2) != (s != NULL))
                return HM_EINVAL;
            if (s)
                s++;
        }
        memcpy(p, f, sizeof f);
        return HM_OK;
    }
    }
    return HM_EINVAL;
}

void hm__hp_format(const struct hm_hparams *hp, const struct hm__hp_key *k, char *buf,
                   size_t len)
{
    const char *p = (const char *)hp + k->offset;
    uint32_t u;
    float f[3];
    bool b;
    switch (k->kind) {
    case HM__HP_U32:
        memcpy(&u, p, 4);
        snprintf(buf, len, "%" PRIu32, u);
        return;
    case HM__HP_F32:
        memcpy(f, p, 4);
        snprintf(buf, len, "%g", (double)f[0]);
        return;
    case HM__HP_BOOL:
        memcpy(&b, p, sizeof b);
        snprintf(buf, len, "%s", b ? "true" : "false");
        return;
    case HM__HP_STR:
        snprintf(buf, len, "%s", p);
        return;
    case HM__HP_F32x3:
        memcpy(f, p, sizeof f);
        snprintf(buf, len, "%g,%g,%g", (double)f[0], (double)f[1], (double)f[2]);
        return;
    }
}

int hm__hp_write(const struct hm_hparams *hp, struct hm_gguf_writer *w)
{
    char key[128];
    int rc = HM_OK;
    for (const struct hm__hp_key *k = hm__hp_keys; k->key && rc == HM_OK; k++) {
        const char *p = (const char *)hp + k->offset;
        uint32_t u;
        float f;
        bool b;
        snprintf(key, sizeof key, HM_ARCH ".%s", k->key);
        switch (k->kind) {
        case HM__HP_U32:
            memcpy(&u, p, 4);
            rc = hm_gguf_writer_add_u32(w, key, u);
            break;
        case HM__HP_F32:
            memcpy(&f, p, 4);
            rc = hm_gguf_writer_add_f32(w, key, f);
            break;
        case HM__HP_BOOL:
            memcpy(&b, p, sizeof b);
            rc = hm_gguf_writer_add_bool(w, key, b);
            break;
        case HM__HP_STR:
            rc = hm_gguf_writer_add_str(w, key, p);
            break;
        case HM__HP_F32x3:
            rc = hm_gguf_writer_add_arr(w, key, HM_GGUF_FLOAT32, p, 3);
            break;
        }
    }
    return rc;
}

void hm_hparams_defaults(struct hm_hparams *hp)
{
    memset(hp, 0, sizeof *hp);
    hp->eps = 1e-5f;
    hp->rope_base = 10000.0f;
    hp->expert_weights_norm = true;
    hp->expert_weights_scale = 1.0f;
    hp->router_k_min = 1;
    hp->router_threshold = 0.6f;
    hp->router_threshold_gain = 0.4f;
    hp->window_min = 512;
    hp->window_max = 2048;
    hp->window_gain = 1024;
    hp->long_ctx_start = 4096;
    hp->long_ctx_step = 1024;
    hp->long_ctx_penalty = 128;
    hp->phrase_span = 4;
    hp->max_phrases = 64;
    hp->max_sentences = 16;
    hp->max_sentence_len = 64;
    hp->complexity_window = 64;
    hp->complexity_weights[0] = 0.4f;
    hp->complexity_weights[1] = 0.3f;
    hp->complexity_weights[2] = 0.3f;
}

bool hm_hparams_layer_is_moe(const struct hm_hparams *hp, uint32_t l)
{
    return hp->n_expert > 0 && l >= hp->n_dense_lead;
}

uint32_t hm_hparams_n_moe(const struct hm_hparams *hp)
{
    uint32_t n = 0;
    for (uint32_t l = 0; l < hp->n_layer && l < HM_MAX_LAYERS; l++)
        n += hm_hparams_layer_is_moe(hp, l);
    return n;
}

/* Largest value accepted for a width, and for a matrix's rows or columns. */
#define DIM_MAX (1u << 20)
#define ROWS_MAX (1ull << 24)

int hm_hparams_validate(const struct hm_hparams *hp, struct hm_errmsg *em)
{
#define BAD(...) return hm_errmsg_set(em, HM_EFORMAT, __VA_ARGS__)
#define NEED(cond, key, why)                                                                       \
    do {                                                                                           \
        if (!(cond))                                                                               \
            BAD("key '" HM_ARCH ".%s': %s", key, why);                                            \
    } while (0)
    bool any_g = false, any_m = false, any_dense = false;
    NEED(hp->n_layer >= 1 && hp->n_layer <= HM_MAX_LAYERS, "block_count", "must be 1..512");
    size_t plen = strnlen(hp->pattern, sizeof hp->pattern);
    if (plen != hp->n_layer)
        BAD("key '" HM_ARCH ".layer_pattern': '%s' has %zu characters, block_count is %u",
            hp->pattern, plen, hp->n_layer);
    for (uint32_t l = 0; l < hp->n_layer; l++) {
        char c = hp->pattern[l];
        if (c != 'G' && c != 'L' && c != 'M')
            BAD("key '" HM_ARCH ".layer_pattern': character %u is '%c', expected G, L or M", l,
                c);
        any_g |= c != 'M';
        any_m |= c == 'M';
        any_dense |= !hm_hparams_layer_is_moe(hp, l);
    }
    NEED(hp->n_vocab >= 1 && hp->n_vocab <= ROWS_MAX, "vocabulary", "token_embd rows 1..2^24");
    NEED(hp->n_ctx >= 1 && hp->n_ctx <= (1u << 24), "context_length", "must be 1..2^24");
    NEED(hp->d >= 1 && hp->d <= DIM_MAX, "embedding_length", "must be 1..2^20");
    NEED(hp->n_head >= 1 && hp->n_head <= 4096, "attention.head_count", "must be 1..4096");
    NEED(hp->n_dense_lead <= hp->n_layer, "leading_dense_block_count", "exceeds block_count");
    NEED(!any_dense || (hp->ff_dense >= 1 && hp->ff_dense <= DIM_MAX), "feed_forward_length",
         "required (1..2^20) when some layer is dense");
    if (any_g) {
        NEED(hp->n_head_kv >= 1 && hp->n_head % hp->n_head_kv == 0, "attention.head_count_kv",
             "must divide attention.head_count");
        NEED(hp->head_dim >= 2 && hp->head_dim % 2 == 0 && hp->head_dim <= 4096,
             "attention.key_length", "must be even, 2..4096");
        NEED((uint64_t)hp->n_head * hp->head_dim <= ROWS_MAX, "attention.key_length",
             "head_count * key_length too large");
    }
    if (any_m) {
        NEED(hp->kv_lora_rank >= 1 && hp->kv_lora_rank <= DIM_MAX, "mla.kv_lora_rank",
             "required (1..2^20) when some layer is M");
        NEED(hp->qk_nope >= 1 && hp->qk_nope <= 4096, "mla.qk_nope_head_dim",
             "required (1..4096) when some layer is M");
        NEED(hp->qk_rope >= 2 && hp->qk_rope % 2 == 0 && hp->qk_rope <= 4096,
             "mla.qk_rope_head_dim", "required, even, 2..4096 when some layer is M");
        NEED(hp->v_head_dim >= 1 && hp->v_head_dim <= 4096, "mla.v_head_dim",
             "required (1..4096) when some layer is M");
        NEED(hp->q_lora_rank <= DIM_MAX, "mla.q_lora_rank", "must be at most 2^20");
        NEED((uint64_t)hp->n_head * (hp->qk_nope + hp->v_head_dim + hp->qk_rope) <= ROWS_MAX,
             "attention.head_count", "MLA projections too large");
    }
    if (hp->n_expert > 0) {
        NEED(hp->n_expert <= HM_MAX_EXPERTS, "expert_count", "must be at most 256");
        NEED(hp->n_expert_used >= 1 && hp->n_expert_used <= hp->n_expert, "expert_used_count",
             "required, 1..expert_count");
        NEED(hp->router_k_min >= 1 && hp->router_k_min <= hp->n_expert_used, "router.k_min",
             "must be 1..expert_used_count");
        NEED(hp->ff_expert >= 1 && hp->ff_expert <= DIM_MAX, "expert_feed_forward_length",
             "required (1..2^20) when expert_count > 0");
        NEED((uint64_t)hp->n_expert_shared * hp->ff_expert <= ROWS_MAX, "expert_shared_count",
             "shared experts too large");
    } else {
        NEED(hp->n_expert_shared == 0, "expert_shared_count", "needs expert_count > 0");
    }
    NEED(hp->eps > 0.0f && isfinite(hp->eps), "attention.layer_norm_rms_epsilon",
         "must be positive");
    NEED(hp->rope_base > 0.0f && isfinite(hp->rope_base), "rope.freq_base", "must be positive");
    NEED(isfinite(hp->expert_weights_scale), "expert_weights_scale", "must be finite");
    NEED(isfinite(hp->router_threshold_gain), "router.threshold_gain", "must be finite");
    NEED(isfinite(hp->complexity_weights[0]) && isfinite(hp->complexity_weights[1]) &&
             isfinite(hp->complexity_weights[2]),
         "complexity.weights", "must be finite");
    NEED(hp->router_threshold >= 0.0f && hp->router_threshold <= 1.0f, "router.threshold",
         "must be in [0, 1]");
    NEED(hp->router_threshold_gain >= 0.0f, "router.threshold_gain", "must be >= 0");
    NEED(hp->window_min >= 1, "window.min", "must be at least 1");
    NEED(hp->window_max >= hp->window_min, "window.max", "must be at least window.min");
    NEED(hp->phrase_span >= 1, "multiscale.phrase_span", "must be at least 1");
    NEED(hp->max_sentence_len >= 1, "multiscale.max_sentence_length", "must be at least 1");
    NEED(hp->cross_dim >= 1 && hp->cross_dim <= DIM_MAX, "multiscale.cross_dim",
         "must be 1..2^20");
    NEED(hp->complexity_window >= 1, "complexity.window", "must be at least 1");
    return HM_OK;
#undef NEED
#undef BAD
}

int hm_hparams_from_gguf(const struct hm_gguf *g, struct hm_hparams *hp, struct hm_errmsg *em)
{
    const char *path = hm_gguf_path(g);
    const char *s;
    size_t len;
    char key[128];
    bool have_kv = false, have_hd = false, have_xd = false;
    int rc;

    hm_hparams_defaults(hp);
    rc = hm_gguf_get_str(g, "general.architecture", &s, &len);
    if (rc == HM_ENOENT)
        return hm_errmsg_set(em, HM_EFORMAT, "%s: key 'general.architecture' missing", path);
    if (rc < 0)
        return hm_errmsg_set(em, HM_EFORMAT, "%s: key 'general.architecture': not a string",
                             path);
    if (len != strlen(HM_ARCH) || memcmp(s, HM_ARCH, len) != 0)
        return hm_errmsg_set(em, HM_EUNSUPPORTED,
                             "%s: key 'general.architecture': '%.64s', expected '" HM_ARCH "'",
                             path, s);
    for (const struct hm__hp_key *k = hm__hp_keys; k->key; k++) {
        char *p = (char *)hp + k->offset;
        snprintf(key, sizeof key, HM_ARCH ".%s", k->key);
        const char *want = "u32";
        switch (k->kind) {
        case HM__HP_U32:
            rc = hm_gguf_get_u32(g, key, (uint32_t *)(void *)p);
            break;
        case HM__HP_F32:
            want = "f32";
            rc = hm_gguf_get_f32(g, key, (float *)(void *)p);
            break;
        case HM__HP_BOOL:
            want = "bool";
            rc = hm_gguf_get_bool(g, key, (bool *)(void *)p);
            break;
        case HM__HP_STR:
            want = "string";
            rc = hm_gguf_get_str(g, key, &s, &len);
            if (rc == HM_OK) {
                if (len > HM_MAX_LAYERS || strlen(s) != len)
                    return hm_errmsg_set(em, HM_EFORMAT,
                                         "%s: key '%s': %zu characters (at most %d layers)",
                                         path, key, len, HM_MAX_LAYERS);
                memcpy(p, s, len + 1);
            }
            break;
        case HM__HP_F32x3: {
            enum hm_gguf_type et;
            uint64_t n;
            const void *data;
            want = "f32[3]";
            rc = hm_gguf_get_arr(g, key, &et, &n, &data);
            if (rc == HM_OK && (et != HM_GGUF_FLOAT32 || n != 3))
                rc = HM_EFORMAT;
            if (rc == HM_OK)
                memcpy(p, data, 12);
            break;
        }
        }
        if (rc == HM_ENOENT && k->required)
            return hm_errmsg_set(em, HM_EFORMAT, "%s: key '%s' missing (required)", path, key);
        if (rc != HM_OK && rc != HM_ENOENT)
            return hm_errmsg_set(em, HM_EFORMAT, "%s: key '%s': wrong type or out of range "
                                 "(expected %s)", path, key, want);
        if (rc == HM_OK) {
            have_kv |= k->offset == HP(n_head_kv);
            have_hd |= k->offset == HP(head_dim);
            have_xd |= k->offset == HP(cross_dim);
        }
    }
    if (!have_kv)
        hp->n_head_kv = hp->n_head;
    if (!have_hd)
        hp->head_dim = hp->n_head ? hp->d / hp->n_head : 0;
    if (!have_xd)
        hp->cross_dim = hp->d;
    const struct hm_tensor *t = hm_gguf_find_tensor(g, "token_embd.weight");
    if (!t)
        return hm_errmsg_set(em, HM_EFORMAT, "%s: tensor 'token_embd.weight' missing", path);
    if (t->n_dims != 2 || t->ne[1] > ROWS_MAX)
        return hm_errmsg_set(em, HM_EFORMAT,
                             "%s: tensor 'token_embd.weight': %u dimensions, %llu rows "
                             "(expected 2, at most 2^24)",
                             path, t->n_dims, (unsigned long long)t->ne[1]);
    hp->n_vocab = (uint32_t)t->ne[1];
    rc = hm_hparams_validate(hp, em);
    if (rc < 0) {
        char tmp[sizeof em->text];
        snprintf(tmp, sizeof tmp, "%s", em ? em->text : "");
        return hm_errmsg_set(em, rc, "%s: %s", path, tmp);
    }
    return HM_OK;
}

/* ---- binding ------------------------------------------------------------------------ */

struct owned {
    void **p;
    size_t n, cap;
};

struct binder {
    struct hm_model *m;
    const struct hm_gguf *g;
    const char *path;
    bool *used;             /* per tensor of g */
    struct owned *own;
    struct hm_errmsg *em;
};

static const struct hm_tensor *find(struct binder *b, const char *name)
{
    const struct hm_tensor *t = hm_gguf_find_tensor(b->g, name);
    if (t)
        b->used[t - hm_gguf_tensor(b->g, 0)] = true;
    return t;
}

static void shape_text(const struct hm_tensor *t, char *buf, size_t len)
{
    size_t o = 0;
    /* rows x cols: outermost first */
    for (uint32_t d = t->n_dims; d-- > 0 && o < len;)
        o += (size_t)snprintf(buf + o, len - o, "%s%llu", d + 1 == t->n_dims ? "" : "x",
                              (unsigned long long)t->ne[d]);
}

/* Checks presence and shape: want[] in rows x cols order (outermost first). */
static int check(struct binder *b, const char *name, const struct hm_tensor **out,
                 uint32_t n_dims, const uint64_t *want)
{
    const struct hm_tensor *t = find(b, name);
    char have[96], exp[96];
    *out = t;
    if (!t)
        return hm_errmsg_set(b->em, HM_EFORMAT, "%s: tensor '%s' missing", b->path, name);
    bool ok = t->n_dims == n_dims;
    for (uint32_t d = 0; ok && d < n_dims; d++)
        ok = t->ne[d] == want[n_dims - 1 - d];
    if (ok)
        return HM_OK;
    shape_text(t, have, sizeof have);
    size_t o = 0;
    for (uint32_t d = 0; d < n_dims && o < sizeof exp; d++)
        o += (size_t)snprintf(exp + o, sizeof exp - o, "%s%llu", d ? "x" : "",
                              (unsigned long long)want[d]);
    return hm_errmsg_set(b->em, HM_EFORMAT, "%s: tensor '%s': shape %s, expected %s", b->path,
                         name, have, exp);
}

static int bind_mat(struct binder *b, const char *name, uint64_t rows, uint64_t cols,
                    uint32_t n_mat, struct hm_mat *out)
{
    const struct hm_tensor *t;
    uint64_t want[3] = {n_mat, rows, cols};
    int rc = n_mat ? check(b, name, &t, 3, want) : check(b, name, &t, 2, want + 1);
    if (rc < 0)
        return rc;
    /* kernels read f32/f16 elements in place: the data must be aligned for them */
    size_t need = t->type == HM_DTYPE_F32 ? 4 : t->type == HM_DTYPE_Q8_0 ? 1 : 2;
    if ((uintptr_t)t->data % need)
        return hm_errmsg_set(b->em, HM_EFORMAT,
                             "%s: tensor '%s': data not aligned to %zu bytes (general.alignment "
                             "%u)",
                             b->path, name, need, hm_gguf_alignment(b->g));
    out->type = t->type;
    out->rows = (uint32_t)rows;
    out->cols = (uint32_t)cols;
    out->n_mat = n_mat ? n_mat : 1;
    out->row_bytes = (size_t)hm_dtype_row_bytes(t->type, cols);
    out->mat_bytes = out->row_bytes * (size_t)rows;
    out->data = t->data;
    return HM_OK;
}

/* A vector (n_dims 1) or a small matrix (rows > 0: n_dims 2) converted to owned f32. */
static int bind_f32(struct binder *b, const char *name, uint64_t rows, uint64_t n,
                    const float **out)
{
    const struct hm_tensor *t;
    uint64_t want[2] = {rows, n};
    int rc = rows ? check(b, name, &t, 2, want) : check(b, name, &t, 1, want + 1);
    if (rc < 0)
        return rc;
    struct owned *o = b->own;
    if (o->n == o->cap) {
        size_t nc = o->cap ? o->cap * 2 : 64;
        void **p = hm_realloc(o->p, nc * sizeof *p);
        if (!p)
            return hm_errmsg_set(b->em, HM_ENOMEM, "%s: out of memory", b->path);
        o->p = p;
        o->cap = nc;
    }
    float *v = hm_mallocarray((size_t)t->n_elems, sizeof *v);
    if (!v)
        return hm_errmsg_set(b->em, HM_ENOMEM, "%s: out of memory", b->path);
    o->p[o->n++] = v;
    hm_dequantize_row(t->type, t->data, v, t->n_elems);
    *out = v;
    return HM_OK;
}

/* All-or-nothing group: counts the names present; 0 -> *on = false; all -> true; else
 * an error naming the first missing one. */
static int group(struct binder *b, const char *what, const char *const *names, size_t n,
                 bool *on)
{
    size_t have = 0, miss = n;
    for (size_t i = 0; i < n; i++) {
        if (hm_gguf_find_tensor(b->g, names[i]))
            have++;
        else if (miss == n)
            miss = i;
    }
    *on = have == n;
    if (have == 0 || have == n)
        return HM_OK;
    return hm_errmsg_set(b->em, HM_EFORMAT,
                         "%s: optional group '%s' is partly present: tensor '%s' missing",
                         b->path, what, names[miss]);
}

#define NAME(buf, ...) snprintf(buf, sizeof buf, __VA_ARGS__)

static int bind_layer(struct binder *b, uint32_t l)
{
    const struct hm_hparams *hp = &b->m->hp;
    struct hm_layer *L = &b->m->layers[l];
    char n1[64], n2[64], what[64];
    const char *pair[2] = {n1, n2};
    bool on;
    uint64_t d = hp->d;
    int rc;

    L->type = hp->pattern[l];
    L->moe = hm_hparams_layer_is_moe(hp, l);
#define TRY(x)                                                                                     \
    do {                                                                                           \
        if ((rc = (x)) < 0)                                                                        \
            return rc;                                                                             \
    } while (0)
    NAME(n1, "blk.%u.attn_norm.weight", l);
    TRY(bind_f32(b, n1, 0, d, &L->attn_norm));
    NAME(n1, "blk.%u.ffn_norm.weight", l);
    TRY(bind_f32(b, n1, 0, d, &L->ffn_norm));

    NAME(n1, "blk.%u.attn_norm_adapt.weight", l);
    NAME(n2, "blk.%u.ffn_norm_adapt.weight", l);
    NAME(what, "adaptive gain of layer %u", l);
    TRY(group(b, what, pair, 2, &on));
    if (on) {
        TRY(bind_f32(b, n1, 0, d, &L->attn_norm_adapt));
        TRY(bind_f32(b, n2, 0, d, &L->ffn_norm_adapt));
        b->m->features |= HM_FEAT_ADAPT_GAIN;
    }
    NAME(n1, "blk.%u.post_attention_norm.weight", l);
    NAME(n2, "blk.%u.post_ffw_norm.weight", l);
    NAME(what, "sandwich norms of layer %u", l);
    TRY(group(b, what, pair, 2, &on));
    if (on) {
        TRY(bind_f32(b, n1, 0, d, &L->post_attn_norm));
        TRY(bind_f32(b, n2, 0, d, &L->post_ffn_norm));
        b->m->features |= HM_FEAT_SANDWICH;
    }

    if (L->type != 'M') {
        uint64_t q = (uint64_t)hp->n_head * hp->head_dim;
        uint64_t kv = (uint64_t)hp->n_head_kv * hp->head_dim;
        NAME(n1, "blk.%u.attn_q.weight", l);
        TRY(bind_mat(b, n1, q, d, 0, &L->wq));
        NAME(n1, "blk.%u.attn_k.weight", l);
        TRY(bind_mat(b, n1, kv, d, 0, &L->wk));
        NAME(n1, "blk.%u.attn_v.weight", l);
        TRY(bind_mat(b, n1, kv, d, 0, &L->wv));
        NAME(n1, "blk.%u.attn_output.weight", l);
        TRY(bind_mat(b, n1, d, q, 0, &L->wo));
        NAME(n1, "blk.%u.attn_q_norm.weight", l);
        NAME(n2, "blk.%u.attn_k_norm.weight", l);
        NAME(what, "QK-norm of layer %u", l);
        TRY(group(b, what, pair, 2, &on));
        if (on) {
            TRY(bind_f32(b, n1, 0, hp->head_dim, &L->q_norm));
            TRY(bind_f32(b, n2, 0, hp->head_dim, &L->k_norm));
            b->m->features |= HM_FEAT_QK_NORM;
        }
    } else {
        uint64_t q = (uint64_t)hp->n_head * (hp->qk_nope + hp->qk_rope);
        if (hp->q_lora_rank) {
            NAME(n1, "blk.%u.attn_q_a.weight", l);
            TRY(bind_mat(b, n1, hp->q_lora_rank, d, 0, &L->wq_a));
            NAME(n1, "blk.%u.attn_q_a_norm.weight", l);
            TRY(bind_f32(b, n1, 0, hp->q_lora_rank, &L->q_a_norm));
            NAME(n1, "blk.%u.attn_q_b.weight", l);
            TRY(bind_mat(b, n1, q, hp->q_lora_rank, 0, &L->wq_b));
            b->m->features |= HM_FEAT_Q_LORA;
        } else {
            NAME(n1, "blk.%u.attn_q.weight", l);
            TRY(bind_mat(b, n1, q, d, 0, &L->wq));
        }
        NAME(n1, "blk.%u.attn_kv_a_mqa.weight", l);
        TRY(bind_mat(b, n1, (uint64_t)hp->kv_lora_rank + hp->qk_rope, d, 0, &L->wkv_a));
        NAME(n1, "blk.%u.attn_kv_a_norm.weight", l);
        TRY(bind_f32(b, n1, 0, hp->kv_lora_rank, &L->kv_a_norm));
        NAME(n1, "blk.%u.attn_kv_b.weight", l);
        TRY(bind_mat(b, n1, (uint64_t)hp->n_head * (hp->qk_nope + hp->v_head_dim),
                     hp->kv_lora_rank, 0, &L->wkv_b));
        NAME(n1, "blk.%u.attn_output.weight", l);
        TRY(bind_mat(b, n1, d, (uint64_t)hp->n_head * hp->v_head_dim, 0, &L->wo));
    }

    if (!L->moe) {
        NAME(n1, "blk.%u.ffn_gate.weight", l);
        TRY(bind_mat(b, n1, hp->ff_dense, d, 0, &L->ffn_gate));
        NAME(n1, "blk.%u.ffn_up.weight", l);
        TRY(bind_mat(b, n1, hp->ff_dense, d, 0, &L->ffn_up));
        NAME(n1, "blk.%u.ffn_down.weight", l);
        TRY(bind_mat(b, n1, d, hp->ff_dense, 0, &L->ffn_down));
    } else {
        uint32_t E = hp->n_expert;
        NAME(n1, "blk.%u.ffn_gate_inp.weight", l);
        TRY(bind_mat(b, n1, E, d, 0, &L->router));
        NAME(n1, "blk.%u.ffn_gate_exps.weight", l);
        TRY(bind_mat(b, n1, hp->ff_expert, d, E, &L->gate_exps));
        NAME(n1, "blk.%u.ffn_up_exps.weight", l);
        TRY(bind_mat(b, n1, hp->ff_expert, d, E, &L->up_exps));
        NAME(n1, "blk.%u.ffn_down_exps.weight", l);
        TRY(bind_mat(b, n1, d, hp->ff_expert, E, &L->down_exps));
        if (hp->n_expert_shared) {
            uint64_t ff = (uint64_t)hp->n_expert_shared * hp->ff_expert;
            NAME(n1, "blk.%u.ffn_gate_shexp.weight", l);
            TRY(bind_mat(b, n1, ff, d, 0, &L->gate_shexp));
            NAME(n1, "blk.%u.ffn_up_shexp.weight", l);
            TRY(bind_mat(b, n1, ff, d, 0, &L->up_shexp));
            NAME(n1, "blk.%u.ffn_down_shexp.weight", l);
            TRY(bind_mat(b, n1, d, ff, 0, &L->down_shexp));
            b->m->features |= HM_FEAT_SHARED_EXPERTS;
        }
    }
    return HM_OK;
}

static int bind_all(struct binder *b)
{
    struct hm_model *m = b->m;
    const struct hm_hparams *hp = &m->hp;
    static const char *const xs[] = {"xscale.q.weight", "xscale.k.weight", "xscale.v.weight",
                                     "xscale.o.weight", "xscale.scale_embd.weight"};
    static const char *const ctrl[] = {"ctrl.fc1.weight", "ctrl.fc1.bias", "ctrl.fc2.weight",
                                       "ctrl.fc2.bias"};
    bool on;
    int rc;

    TRY(bind_mat(b, "token_embd.weight", hp->n_vocab, hp->d, 0, &m->tok_embd));
    TRY(bind_f32(b, "output_norm.weight", 0, hp->d, &m->output_norm));
    if (hm_gguf_find_tensor(b->g, "output.weight")) {
        TRY(bind_mat(b, "output.weight", hp->n_vocab, hp->d, 0, &m->output));
    } else {
        m->output = m->tok_embd;
        m->features |= HM_FEAT_TIED_OUTPUT;
    }
    TRY(group(b, "cross-scale attention", xs, 5, &on));
    if (on) {
        TRY(bind_mat(b, xs[0], hp->cross_dim, hp->d, 0, &m->xq));
        TRY(bind_mat(b, xs[1], hp->cross_dim, hp->d, 0, &m->xk));
        TRY(bind_mat(b, xs[2], hp->cross_dim, hp->d, 0, &m->xv));
        TRY(bind_mat(b, xs[3], hp->d, hp->cross_dim, 0, &m->xo));
        TRY(bind_f32(b, xs[4], 2, hp->cross_dim, &m->scale_embd));
        m->features |= HM_FEAT_XSCALE;
    }
    TRY(group(b, "controller", ctrl, 4, &on));
    if (on) {
        TRY(bind_f32(b, ctrl[0], HM_CTRL_HIDDEN, HM_CTRL_INPUTS, &m->ctrl_fc1_w));
        TRY(bind_f32(b, ctrl[1], 0, HM_CTRL_HIDDEN, &m->ctrl_fc1_b));
        TRY(bind_f32(b, ctrl[2], 1, HM_CTRL_HIDDEN, &m->ctrl_fc2_w));
        TRY(bind_f32(b, ctrl[3], 0, 1, &m->ctrl_fc2_b));
        m->features |= HM_FEAT_CTRL;
    }
    for (uint32_t l = 0; l < hp->n_layer; l++)
        TRY(bind_layer(b, l));
    for (size_t i = 0; i < hm_gguf_n_tensors(b->g); i++)
        if (!b->used[i])
            return hm_errmsg_set(b->em, HM_EFORMAT,
                                 "%s: tensor '%s' is not part of the " HM_ARCH " schema for "
                                 "this configuration",
                                 b->path, hm_gguf_tensor(b->g, i)->name);
    return HM_OK;
#undef TRY
}

/* Counts from the bound tensors (section 11 rule). */
static void count_loaded(struct hm_model *m)
{
    const struct hm_hparams *hp = &m->hp;
    struct hm_param_counts *c = &m->counts;
    memset(c, 0, sizeof *c);
    for (size_t i = 0; i < hm_gguf_n_tensors(m->gguf); i++) {
        const struct hm_tensor *t = hm_gguf_tensor(m->gguf, i);
        c->total += t->n_elems;
        c->weight_bytes += t->n_bytes;
    }
    c->active = c->total;
    if (!(m->features & HM_FEAT_TIED_OUTPUT))
        c->active -= (uint64_t)hp->n_vocab * hp->d;
    uint64_t per_expert = 3ull * hp->ff_expert * hp->d;
    c->active -= (uint64_t)hm_hparams_n_moe(hp) * (hp->n_expert - hp->n_expert_used) * per_expert;
    c->kv_elems_g = c->kv_elems_l = 2ull * hp->n_head_kv * hp->head_dim;
    c->kv_elems_m = (uint64_t)hp->kv_lora_rank + hp->qk_rope;
}

int hm_model_from_gguf(struct hm_gguf *g, struct hm_model **out, struct hm_errmsg *em)
{
    struct hm_model *m = NULL;
    struct binder b = {0};
    int rc;

    *out = NULL;
    m = hm_calloc(1, sizeof *m);
    if (!m) {
        hm_errmsg_set(em, HM_ENOMEM, "%s: out of memory", hm_gguf_path(g));
        hm_gguf_free(g);
        return HM_ENOMEM;
    }
    m->gguf = g;
    b.m = m;
    b.g = g;
    b.path = hm_gguf_path(g);
    b.em = em;
    rc = hm_hparams_from_gguf(g, &m->hp, em);
    if (rc < 0)
        goto out;
    rc = HM_ENOMEM;
    b.own = hm_calloc(1, sizeof *b.own);
    m->owned = b.own;
    b.used = hm_calloc(hm_gguf_n_tensors(g) + 1, sizeof *b.used);
    m->layers = hm_calloc(m->hp.n_layer, sizeof *m->layers);
    if (!b.own || !b.used || !m->layers) {
        hm_errmsg_set(em, HM_ENOMEM, "%s: out of memory", b.path);
        goto out;
    }
    rc = bind_all(&b);
    if (rc < 0)
        goto out;
    count_loaded(m);
    rc = hm_tokenizer_from_gguf(g, m->hp.n_vocab, &m->tok, em);
    if (rc < 0)
        goto out;
    rc = HM_OK;
out:
    hm_free(b.used);
    if (rc < 0) {
        hm_model_free(m);
        return rc;
    }
    *out = m;
    return HM_OK;
}

int hm_model_load(const char *path, struct hm_model **out, struct hm_errmsg *em)
{
    struct hm_gguf *g;
    *out = NULL;
    int rc = hm_gguf_open(path, &g, em);
    if (rc < 0)
        return rc;
    return hm_model_from_gguf(g, out, em);
}

void hm_model_free(struct hm_model *m)
{
    if (!m)
        return;
    struct owned *o = m->owned;
    if (o) {
        for (size_t i = 0; i < o->n; i++)
            hm_free(o->p[i]);
        hm_free(o->p);
        hm_free(o);
    }
    hm_tokenizer_free(m->tok);
    hm_free(m->layers);
    hm_gguf_free(m->gguf);
    hm_free(m);
}
