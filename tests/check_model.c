/* check_model.c - hyperparameters, tensor binding, optional groups, counts, presets and
 * model generation. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hm/alloc.h"
#include "hm/gguf.h"
#include "hm/model.h"
#include "hm/tokenizer.h"
#include "model_internal.h"
#include "testutil.h"

#define ALL_FEATS 0xffu

static char tmpdir[256];
static char tiny_path[400];

static const char *tmp_path(const char *name)
{
    static char p[400];
    snprintf(p, sizeof p, "%s/%s", tmpdir, name);
    return p;
}

static void gen(const struct hm_hparams *hp, uint32_t features, enum hm_dtype type,
                uint64_t seed, const char *path)
{
    struct hm_generate_opts o = {.seed = seed, .type = type, .features = features};
    struct hm_errmsg em = {{0}};
    int rc = hm_model_generate(hp, &o, path, &em);
    if (rc != HM_OK)
        ck_abort_msg("generate: %d %s", rc, em.text);
}

static void setup(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/check_model.XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
    snprintf(tiny_path, sizeof tiny_path, "%s/tiny.gguf", tmpdir);
    const struct hm_preset *p = hm_preset_find("tiny");
    gen(&p->hp, p->features, HM_DTYPE_F32, 1, tiny_path);
}

static void teardown(void)
{
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    ck_assert_int_eq(system(cmd), 0);
}

static uint8_t *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    ck_assert_ptr_nonnull(f);
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc((size_t)sz + 1);
    ck_assert_uint_eq(fread(b, 1, (size_t)sz, f), (size_t)sz);
    fclose(f);
    *n = (size_t)sz;
    return b;
}

static struct hm_model *load_ok(const char *path)
{
    struct hm_model *m = NULL;
    struct hm_errmsg em = {{0}};
    int rc = hm_model_load(path, &m, &em);
    if (rc != HM_OK)
        ck_abort_msg("load %s: %d %s", path, rc, em.text);
    return m;
}

static void assert_counts_match(const struct hm_model *m, enum hm_dtype type)
{
    struct hm_param_counts c;
    hm_hparams_count(&m->hp, m->features, type, &c);
    ck_assert_uint_eq(c.total, m->counts.total);
    ck_assert_uint_eq(c.active, m->counts.active);
    ck_assert_uint_eq(c.weight_bytes, m->counts.weight_bytes);
    ck_assert_uint_eq(c.kv_elems_g, m->counts.kv_elems_g);
    ck_assert_uint_eq(c.kv_elems_l, m->counts.kv_elems_l);
    ck_assert_uint_eq(c.kv_elems_m, m->counts.kv_elems_m);
}

/* ---- core ---- */

START_TEST(test_tiny)
{
    const struct hm_preset *p = hm_preset_find("tiny");
    struct hm_model *m = load_ok(tiny_path);
    ck_assert_uint_eq(m->features, ALL_FEATS);
    ck_assert_int_eq(memcmp(&m->hp, &p->hp, sizeof m->hp), 0);
    ck_assert_str_eq(m->hp.pattern, "GLMLGM");
    ck_assert_ptr_nonnull(m->tok);
    ck_assert_uint_eq(hm_tokenizer_n_vocab(m->tok), 512);
    assert_counts_match(m, HM_DTYPE_F32);
    ck_assert_uint_lt(m->counts.total, 1000000);
    ck_assert_uint_lt(m->counts.active, m->counts.total);
    ck_assert_uint_eq(m->counts.kv_elems_g, 2 * 2 * 16);
    ck_assert_uint_eq(m->counts.kv_elems_m, 32 + 8);
    /* layer binding */
    ck_assert_int_eq(m->layers[0].type, 'G');
    ck_assert(!m->layers[0].moe);
    ck_assert(m->layers[1].moe);
    ck_assert_ptr_nonnull(m->layers[0].ffn_gate.data);
    ck_assert_ptr_null(m->layers[1].ffn_gate.data);
    ck_assert_uint_eq(m->layers[0].wq.rows, 64);
    ck_assert_uint_eq(m->layers[0].wk.rows, 32);
    ck_assert_ptr_nonnull(m->layers[0].q_norm);
    ck_assert_ptr_nonnull(m->layers[2].wq_a.data);
    ck_assert_ptr_null(m->layers[2].wq.data);
    ck_assert_uint_eq(m->layers[2].wq_b.rows, 4 * 24);
    ck_assert_uint_eq(m->layers[2].wq_b.cols, 32);
    ck_assert_uint_eq(m->layers[2].wkv_a.rows, 40);
    ck_assert_uint_eq(m->layers[2].wkv_b.rows, 4 * 32);
    ck_assert_uint_eq(m->layers[2].wo.cols, 64);
    ck_assert_uint_eq(m->layers[3].gate_exps.n_mat, 4);
    ck_assert_uint_eq(m->layers[3].gate_exps.rows, 32);
    ck_assert_uint_eq(m->layers[3].gate_exps.mat_bytes, 32 * 64 * 4);
    ck_assert_uint_eq(m->layers[3].down_exps.rows, 64);
    ck_assert_uint_eq(m->layers[3].gate_shexp.rows, 32);
    ck_assert_ptr_nonnull(m->layers[5].post_ffn_norm);
    ck_assert_ptr_nonnull(m->layers[5].ffn_norm_adapt);
    ck_assert(m->layers[5].attn_norm[3] == 1.0f);
    ck_assert(fabsf(m->layers[5].attn_norm_adapt[3]) <= 0.05f);
    ck_assert_ptr_eq(m->output.data, m->tok_embd.data);
    ck_assert_ptr_nonnull(m->scale_embd);
    ck_assert_ptr_nonnull(m->ctrl_fc2_b);
    ck_assert_uint_eq(m->xo.rows, 64);
    ck_assert_uint_eq(m->xo.cols, 32);
    /* initial values: finite, std about 1/sqrt(cols) */
    const float *e = m->tok_embd.data;
    double s2 = 0;
    for (size_t i = 0; i < 512 * 64; i++) {
        ck_assert(isfinite(e[i]));
        s2 += (double)e[i] * e[i];
    }
    double sd = sqrt(s2 / (512 * 64));
    ck_assert(sd > 0.115 && sd < 0.135);
    hm_model_free(m);
}
END_TEST

START_TEST(test_types_and_determinism)
{
    const struct hm_preset *p = hm_preset_find("tiny");
    struct hm_hparams hp = p->hp;
    char a[400], b[400], c[400];
    snprintf(a, sizeof a, "%s", tmp_path("a.gguf"));
    snprintf(b, sizeof b, "%s", tmp_path("b.gguf"));
    snprintf(c, sizeof c, "%s", tmp_path("c.gguf"));
    gen(&hp, p->features, HM_DTYPE_F32, 1, a);
    size_t na, nt;
    uint8_t *da = slurp(a, &na), *dt = slurp(tiny_path, &nt);
    ck_assert_uint_eq(na, nt);
    ck_assert_int_eq(memcmp(da, dt, na), 0);
    free(dt);
    gen(&hp, p->features, HM_DTYPE_F32, 2, b);
    dt = slurp(b, &nt);
    ck_assert_uint_eq(na, nt);
    ck_assert_int_ne(memcmp(da, dt, na), 0);
    free(da);
    free(dt);
    /* f16, bf16 and q8_0 (kv_lora_rank 24: attn_kv_b has 24 columns -> f16 fallback) */
    enum hm_dtype types[] = {HM_DTYPE_F16, HM_DTYPE_BF16, HM_DTYPE_Q8_0};
    hp.kv_lora_rank = 24;
    for (size_t i = 0; i < 3; i++) {
        gen(&hp, p->features, types[i], 3, c);
        struct hm_model *m = load_ok(c);
        ck_assert_int_eq(m->layers[0].wq.type, types[i]);
        ck_assert_int_eq(m->layers[2].wkv_b.type,
                         types[i] == HM_DTYPE_Q8_0 ? HM_DTYPE_F16 : types[i]);
        ck_assert_uint_eq(m->layers[0].wq.row_bytes, hm_dtype_row_bytes(types[i], 64));
        ck_assert(m->layers[0].attn_norm[0] == 1.0f); /* vectors stay f32 */
        assert_counts_match(m, types[i]);
        hm_model_free(m);
    }
}
END_TEST

START_TEST(test_variants)
{
    const struct hm_preset *p = hm_preset_find("tiny");
    struct hm_hparams hp = p->hp;
    char path[400];
    snprintf(path, sizeof path, "%s", tmp_path("v.gguf"));
    /* nothing optional, untied, direct q on M, no shared experts */
    hp.q_lora_rank = 0;
    hp.n_expert_shared = 0;
    gen(&hp, 0, HM_DTYPE_F32, 1, path);
    struct hm_model *m = load_ok(path);
    ck_assert_uint_eq(m->features, 0);
    ck_assert_ptr_ne(m->output.data, m->tok_embd.data);
    ck_assert_ptr_nonnull(m->layers[2].wq.data);
    ck_assert_uint_eq(m->layers[2].wq.rows, 4 * 24);
    ck_assert_ptr_null(m->layers[0].q_norm);
    ck_assert_ptr_null(m->scale_embd);
    ck_assert_ptr_null(m->ctrl_fc1_w);
    assert_counts_match(m, HM_DTYPE_F32);
    ck_assert_uint_eq(m->counts.total - m->counts.active,
                      512 * 64 + 5 * 2 * 3 * 32 * 64); /* embedding + 2 idle experts x 5 */
    hm_model_free(m);
    /* all dense, only G layers (MLA keys absent from use) */
    hp = p->hp;
    hp.n_expert = 0;
    hp.n_expert_used = 0;
    hp.n_expert_shared = 0;
    snprintf(hp.pattern, sizeof hp.pattern, "GGL");
    hp.n_layer = 3;
    gen(&hp, HM_FEAT_QK_NORM | HM_FEAT_TIED_OUTPUT, HM_DTYPE_F16, 1, path);
    m = load_ok(path);
    ck_assert_uint_eq(m->features, HM_FEAT_QK_NORM | HM_FEAT_TIED_OUTPUT);
    ck_assert_uint_eq(hm_hparams_n_moe(&m->hp), 0);
    assert_counts_match(m, HM_DTYPE_F16);
    ck_assert_uint_eq(m->counts.total, m->counts.active);
    hm_model_free(m);
    /* only M layers: QK-norm requested but there is no G/L layer */
    hp = p->hp;
    snprintf(hp.pattern, sizeof hp.pattern, "MM");
    hp.n_layer = 2;
    gen(&hp, HM_FEAT_QK_NORM | HM_FEAT_SANDWICH, HM_DTYPE_F32, 1, path);
    m = load_ok(path);
    ck_assert_uint_eq(m->features, HM_FEAT_SANDWICH | HM_FEAT_Q_LORA | HM_FEAT_SHARED_EXPERTS);
    hm_model_free(m);
}
END_TEST

static void within(uint64_t have, double want)
{
    if (fabs((double)have - want) > 0.05 * want)
        ck_abort_msg("%llu not within 5%% of %.0f", (unsigned long long)have, want);
}

START_TEST(test_presets)
{
    const struct hm_preset *const *list = hm_preset_list();
    size_t n = 0;
    struct hm_param_counts c;
    for (; list[n]; n++) {
        struct hm_errmsg em = {{0}};
        ck_assert_int_eq(hm_hparams_validate(&list[n]->hp, &em), HM_OK);
        ck_assert_ptr_eq(hm_preset_find(list[n]->name), list[n]);
    }
    ck_assert_uint_eq(n, 5);
    ck_assert_ptr_null(hm_preset_find("huge"));
    const struct hm_preset *p = hm_preset_find("tiny");
    hm_hparams_count(&p->hp, p->features, HM_DTYPE_F32, &c);
    ck_assert_uint_lt(c.total, 1000000);
    ck_assert_uint_eq(p->features, ALL_FEATS);
    ck_assert(strchr(p->hp.pattern, 'G') && strchr(p->hp.pattern, 'L') &&
              strchr(p->hp.pattern, 'M'));
    ck_assert_uint_ge(p->hp.n_expert, 4);
    ck_assert_uint_ge(p->hp.n_expert_used, 2);
    ck_assert_uint_ge(p->hp.n_dense_lead, 1);
    p = hm_preset_find("mini");
    hm_hparams_count(&p->hp, p->features, HM_DTYPE_F32, &c);
    ck_assert(c.total >= 20000000 && c.total <= 100000000);
    p = hm_preset_find("small");
    hm_hparams_count(&p->hp, p->features, HM_DTYPE_F32, &c);
    within(c.total, 7e9);
    within(c.active, 2e9);
    p = hm_preset_find("medium");
    hm_hparams_count(&p->hp, p->features, HM_DTYPE_F32, &c);
    within(c.total, 70e9);
    within(c.active, 15e9);
    p = hm_preset_find("large");
    hm_hparams_count(&p->hp, p->features, HM_DTYPE_F32, &c);
    within(c.total, 400e9);
    within(c.active, 40e9);
    ck_assert_uint_eq(c.kv_elems_g, 2 * 8 * 128);
    ck_assert_uint_eq(c.kv_elems_m, 512 + 64);
    /* hand count of small's embedding share: untied, so total - active includes V*d */
    p = hm_preset_find("small");
    struct hm_param_counts c2;
    struct hm_hparams hp = p->hp;
    hm_hparams_count(&hp, p->features, HM_DTYPE_F32, &c);
    hm_hparams_count(&hp, p->features | HM_FEAT_TIED_OUTPUT, HM_DTYPE_F32, &c2);
    ck_assert_uint_eq(c.total - c2.total, 131072ull * 2048);
    ck_assert_uint_eq(c.active, c2.active);
    ck_assert_uint_eq(c.weight_bytes, 4 * c.total);
    hm_hparams_count(&hp, p->features, HM_DTYPE_Q8_0, &c2);
    ck_assert_uint_lt(c2.weight_bytes, c.weight_bytes / 3);
}
END_TEST

START_TEST(test_hp_table)
{
    struct hm_hparams hp;
    hm_hparams_defaults(&hp);
    ck_assert_uint_eq(hp.window_min, 512);
    ck_assert_uint_eq(hp.long_ctx_start, 4096);
    ck_assert(hp.router_threshold == 0.6f);
    ck_assert(hp.expert_weights_norm);
    ck_assert(hp.complexity_weights[0] == 0.4f);
    ck_assert_uint_eq(hp.n_layer, 0);
    const struct hm__hp_key *k = hm__hp_find("hybridmoe.window.min");
    ck_assert_ptr_nonnull(k);
    ck_assert_ptr_eq(k, hm__hp_find("window.min"));
    ck_assert_ptr_null(hm__hp_find("window.mn"));
    ck_assert_int_eq(hm__hp_set(&hp, k, "16"), HM_OK);
    ck_assert_uint_eq(hp.window_min, 16);
    ck_assert_int_eq(hm__hp_set(&hp, k, "-1"), HM_EINVAL);
    ck_assert_int_eq(hm__hp_set(&hp, k, "4294967296"), HM_EINVAL);
    ck_assert_int_eq(hm__hp_set(&hp, k, "12x"), HM_EINVAL);
    k = hm__hp_find("router.threshold");
    ck_assert_int_eq(hm__hp_set(&hp, k, "0.5"), HM_OK);
    ck_assert(hp.router_threshold == 0.5f);
    ck_assert_int_eq(hm__hp_set(&hp, k, "abc"), HM_EINVAL);
    k = hm__hp_find("expert_weights_norm");
    ck_assert_int_eq(hm__hp_set(&hp, k, "false"), HM_OK);
    ck_assert(!hp.expert_weights_norm);
    ck_assert_int_eq(hm__hp_set(&hp, k, "maybe"), HM_EINVAL);
    k = hm__hp_find("complexity.weights");
    ck_assert_int_eq(hm__hp_set(&hp, k, "0.5,0.25,0.25"), HM_OK);
    ck_assert(hp.complexity_weights[1] == 0.25f);
    ck_assert_int_eq(hm__hp_set(&hp, k, "0.5,0.25"), HM_EINVAL);
    ck_assert_int_eq(hm__hp_set(&hp, k, "0.5,0.25,1,2"), HM_EINVAL);
    char buf[64];
    hm__hp_format(&hp, k, buf, sizeof buf);
    ck_assert_str_eq(buf, "0.5,0.25,0.25");
    k = hm__hp_find("layer_pattern");
    ck_assert_int_eq(hm__hp_set(&hp, k, "GLM"), HM_OK);
    ck_assert_str_eq(hp.pattern, "GLM");
}
END_TEST

/* ---- errors: a model written with one thing wrong ---- */

struct mut {
    const char *skip;     /* tensor left out */
    const char *reshape;  /* tensor with ne[0] + 1 */
    const char *extra;    /* an extra 1-D tensor */
    const char *arch;     /* general.architecture (NULL = hybridmoe) */
    const char *drop_key; /* hyperparameter key left out */
    const char *str_key;  /* hyperparameter key written as a string */
};

struct wctx {
    struct hm_gguf_writer *w;
    const struct mut *mu;
};

static int add_cb(void *ctx, const struct hm__tspec *t)
{
    struct wctx *c = ctx;
    uint64_t ne[3] = {t->ne[0], t->ne[1], t->ne[2]};
    if (c->mu->skip && strcmp(t->name, c->mu->skip) == 0)
        return HM_OK;
    if (c->mu->reshape && strcmp(t->name, c->mu->reshape) == 0)
        ne[0]++;
    return hm_gguf_writer_add_tensor(c->w, t->name, HM_DTYPE_F32, t->n_dims, ne, NULL);
}

static int zero_fill(void *ctx, const char *name, void *dst, uint64_t n)
{
    memset(dst, 0, (size_t)n);
    return HM_OK;
}

static void write_mut(const struct hm_hparams *hp, uint32_t features, const struct mut *mu,
                      const char *path)
{
    struct hm_gguf_writer *w;
    struct hm_tokenizer_data *td;
    struct hm_errmsg em = {{0}};
    char key[128];
    ck_assert_int_eq(hm_gguf_writer_new(&w), HM_OK);
    ck_assert_int_eq(hm_gguf_writer_add_str(w, "general.architecture",
                                            mu->arch ? mu->arch : "hybridmoe"),
                     HM_OK);
    for (const struct hm__hp_key *k = hm__hp_keys; k->key; k++) {
        if (mu->drop_key && strcmp(k->key, mu->drop_key) == 0)
            continue;
        snprintf(key, sizeof key, "hybridmoe.%s", k->key);
        const char *p = (const char *)hp + k->offset;
        if (mu->str_key && strcmp(k->key, mu->str_key) == 0) {
            ck_assert_int_eq(hm_gguf_writer_add_str(w, key, "12"), HM_OK);
            continue;
        }
        switch (k->kind) {
        case HM__HP_U32:
            ck_assert_int_eq(hm_gguf_writer_add_u32(w, key, *(const uint32_t *)(const void *)p),
                             HM_OK);
            break;
        case HM__HP_F32:
            ck_assert_int_eq(hm_gguf_writer_add_f32(w, key, *(const float *)(const void *)p),
                             HM_OK);
            break;
        case HM__HP_BOOL:
            ck_assert_int_eq(hm_gguf_writer_add_bool(w, key, *(const bool *)(const void *)p),
                             HM_OK);
            break;
        case HM__HP_STR:
            ck_assert_int_eq(hm_gguf_writer_add_str(w, key, p), HM_OK);
            break;
        case HM__HP_F32x3:
            ck_assert_int_eq(hm_gguf_writer_add_arr(w, key, HM_GGUF_FLOAT32, p, 3), HM_OK);
            break;
        }
    }
    ck_assert_int_eq(hm_tokenizer_data_default(hp->n_vocab, &td), HM_OK);
    ck_assert_int_eq(hm_tokenizer_data_write(td, w), HM_OK);
    hm_tokenizer_data_free(td);
    struct wctx c = {w, mu};
    ck_assert_int_eq(hm__model_tensors(hp, features, add_cb, &c), HM_OK);
    if (mu->extra) {
        uint64_t ne[1] = {8};
        ck_assert_int_eq(hm_gguf_writer_add_tensor(w, mu->extra, HM_DTYPE_F32, 1, ne, NULL),
                         HM_OK);
    }
    ck_assert_int_eq(hm_gguf_writer_write(w, path, zero_fill, NULL, NULL, NULL, &em), HM_OK);
    hm_gguf_writer_free(w);
}

static void expect_load(const struct hm_hparams *hp, uint32_t features, const struct mut *mu,
                        int want, const char *needle)
{
    char path[400];
    snprintf(path, sizeof path, "%s", tmp_path("mut.gguf"));
    write_mut(hp, features, mu, path);
    struct hm_model *m = (void *)1;
    struct hm_errmsg em = {{0}};
    int rc = hm_model_load(path, &m, &em);
    if (rc != want || (needle && !strstr(em.text, needle)))
        ck_abort_msg("rc %d (want %d): '%s' (want '%s')", rc, want, em.text,
                     needle ? needle : "");
    if (rc == HM_OK) {
        hm_model_free(m);
        return;
    }
    ck_assert_ptr_null(m);
    ck_assert_ptr_nonnull(strstr(em.text, "mut.gguf"));
}

START_TEST(test_schema_errors)
{
    const struct hm_preset *p = hm_preset_find("tiny");
    uint32_t f = p->features;
    const struct hm_hparams *hp = &p->hp;
    expect_load(hp, f, &(struct mut){0}, HM_OK, NULL);
    expect_load(hp, f, &(struct mut){.skip = "blk.2.attn_kv_b.weight"}, HM_EFORMAT,
                "tensor 'blk.2.attn_kv_b.weight' missing");
    expect_load(hp, f, &(struct mut){.skip = "blk.0.ffn_down.weight"}, HM_EFORMAT,
                "'blk.0.ffn_down.weight' missing");
    expect_load(hp, f, &(struct mut){.skip = "output_norm.weight"}, HM_EFORMAT,
                "'output_norm.weight' missing");
    expect_load(hp, f, &(struct mut){.reshape = "blk.0.attn_q.weight"}, HM_EFORMAT,
                "tensor 'blk.0.attn_q.weight': shape 64x65, expected 64x64");
    expect_load(hp, f, &(struct mut){.reshape = "blk.3.ffn_up_exps.weight"}, HM_EFORMAT,
                "shape 4x32x65, expected 4x32x64");
    expect_load(hp, f, &(struct mut){.reshape = "blk.1.attn_norm.weight"}, HM_EFORMAT,
                "shape 65, expected 64");
    expect_load(hp, f, &(struct mut){.reshape = "ctrl.fc1.weight"}, HM_EFORMAT,
                "'ctrl.fc1.weight': shape 16x5, expected 16x4");
    expect_load(hp, f, &(struct mut){.extra = "blk.0.mystery.weight"}, HM_EFORMAT,
                "tensor 'blk.0.mystery.weight' is not part");
    /* partial optional groups */
    expect_load(hp, f, &(struct mut){.skip = "xscale.k.weight"}, HM_EFORMAT,
                "'cross-scale attention' is partly present: tensor 'xscale.k.weight' missing");
    expect_load(hp, f, &(struct mut){.skip = "ctrl.fc2.bias"}, HM_EFORMAT,
                "'controller' is partly present");
    expect_load(hp, f, &(struct mut){.skip = "blk.4.post_ffw_norm.weight"}, HM_EFORMAT,
                "'sandwich norms of layer 4' is partly present");
    expect_load(hp, f, &(struct mut){.skip = "blk.0.attn_k_norm.weight"}, HM_EFORMAT,
                "'QK-norm of layer 0' is partly present");
    expect_load(hp, f, &(struct mut){.skip = "blk.5.attn_norm_adapt.weight"}, HM_EFORMAT,
                "'adaptive gain of layer 5'");
    /* q_lora tensors in a model without q_lora; shared experts with S = 0 */
    struct hm_hparams h2 = *hp;
    h2.n_expert_shared = 0;
    expect_load(&h2, f, &(struct mut){.extra = "blk.1.ffn_up_shexp.weight"}, HM_EFORMAT,
                "'blk.1.ffn_up_shexp.weight' is not part");
    h2 = *hp;
    h2.q_lora_rank = 0;
    expect_load(&h2, f, &(struct mut){.extra = "blk.2.attn_q_a_norm.weight"}, HM_EFORMAT,
                "'blk.2.attn_q_a_norm.weight' is not part");
    /* a whole group absent is fine */
    struct mut none = {0};
    expect_load(hp, f & ~(uint32_t)HM_FEAT_XSCALE, &none, HM_OK, NULL);
}
END_TEST

START_TEST(test_hparam_errors)
{
    const struct hm_preset *p = hm_preset_find("tiny");
    uint32_t f = p->features;
    struct hm_hparams hp = p->hp;
    expect_load(&hp, f, &(struct mut){.arch = "llama"}, HM_EUNSUPPORTED,
                "'general.architecture': 'llama', expected 'hybridmoe'");
    expect_load(&hp, f, &(struct mut){.drop_key = "context_length"}, HM_EFORMAT,
                "key 'hybridmoe.context_length' missing");
    expect_load(&hp, f, &(struct mut){.drop_key = "attention.head_count"}, HM_EFORMAT,
                "'hybridmoe.attention.head_count' missing");
    expect_load(&hp, f, &(struct mut){.str_key = "embedding_length"}, HM_EFORMAT,
                "'hybridmoe.embedding_length': wrong type");
    expect_load(&hp, f, &(struct mut){.drop_key = "feed_forward_length"}, HM_EFORMAT,
                "feed_forward_length");
    expect_load(&hp, f, &(struct mut){.drop_key = "mla.kv_lora_rank"}, HM_EFORMAT,
                "mla.kv_lora_rank");
    /* optional keys take their defaults */
    expect_load(&hp, f, &(struct mut){.drop_key = "window.min"}, HM_EFORMAT,
                "window.max"); /* default 512 > tiny's max 64 */
    expect_load(&hp, f, &(struct mut){.drop_key = "router.threshold"}, HM_OK, NULL);
    hp = p->hp;
    memcpy(hp.pattern, "GLXLGM", 7);
    expect_load(&hp, f, &(struct mut){0}, HM_EFORMAT, "character 2 is 'X'");
    hp = p->hp;
    hp.n_layer = 5; /* pattern still has 6 characters */
    expect_load(&hp, f, &(struct mut){0}, HM_EFORMAT, "has 6 characters, block_count is 5");
    hp = p->hp;
    hp.n_expert_used = 5;
    expect_load(&hp, f, &(struct mut){0}, HM_EFORMAT, "expert_used_count");
    hp = p->hp;
    hp.n_head_kv = 3;
    expect_load(&hp, f, &(struct mut){0}, HM_EFORMAT, "head_count_kv");
    hp = p->hp;
    hp.n_dense_lead = 7;
    expect_load(&hp, f, &(struct mut){0}, HM_EFORMAT, "leading_dense_block_count");
    /* validate directly */
    struct hm_errmsg em = {{0}};
    hp = p->hp;
    hp.router_k_min = 3;
    ck_assert_int_eq(hm_hparams_validate(&hp, &em), HM_EFORMAT);
    ck_assert_ptr_nonnull(strstr(em.text, "router.k_min"));
    struct hm_generate_opts o = {.seed = 1, .type = HM_DTYPE_F32};
    ck_assert_int_eq(hm_model_generate(&hp, &o, tmp_path("x.gguf"), &em), HM_EFORMAT);
    hp = p->hp;
    hp.n_vocab = 100;
    ck_assert_int_eq(hm_model_generate(&hp, &o, tmp_path("x.gguf"), &em), HM_EINVAL);
    ck_assert_ptr_nonnull(strstr(em.text, "258"));
}
END_TEST

START_TEST(test_not_gguf)
{
    struct hm_model *m = (void *)1;
    struct hm_errmsg em = {{0}};
    ck_assert_int_eq(hm_model_load(tmp_path("nothing.gguf"), &m, &em), HM_ENOENT);
    ck_assert_ptr_null(m);
    struct hm_gguf *g;
    static const uint8_t empty[24] = {'G', 'G', 'U', 'F', 3};
    ck_assert_int_eq(hm_gguf_open_mem(empty, sizeof empty, "empty.gguf", &g, &em), HM_OK);
    ck_assert_int_eq(hm_model_from_gguf(g, &m, &em), HM_EFORMAT); /* takes g */
    ck_assert_ptr_nonnull(strstr(em.text, "empty.gguf: key 'general.architecture' missing"));
}
END_TEST

/* Random byte mutations of the header of a valid model: every outcome is a clean
 * success or an error with a message (under ASan: no invalid access, no leak). */
START_TEST(test_mutations)
{
    size_t n;
    uint8_t *orig = slurp(tiny_path, &n);
    const struct hm_tensor *last;
    struct hm_gguf *g;
    struct hm_errmsg em = {{0}};
    ck_assert_int_eq(hm_gguf_open_mem(orig, n, "tiny", &g, &em), HM_OK);
    last = hm_gguf_tensor(g, hm_gguf_n_tensors(g) - 1);
    size_t header = (size_t)((const uint8_t *)last->data - orig - last->offset);
    hm_gguf_free(g);
    ck_assert_uint_gt(header, 1000);
    uint8_t *d = malloc(n);
    uint64_t s = 42;
    int n_ok = 0;
    for (int it = 0; it < 1500; it++) {
        memcpy(d, orig, n);
        for (int k = 0; k < 1 + it % 3; k++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            size_t pos = (size_t)(s >> 33) % (it % 2 ? header : 200);
            d[pos] = (it % 5 == 0) ? 0xff : (uint8_t)(d[pos] ^ (1u << ((s >> 20) & 7)));
        }
        struct hm_model *m = (void *)1;
        em.text[0] = 0;
        int rc = hm_gguf_open_mem(d, n, "tiny", &g, &em);
        bool opened = rc == HM_OK;
        if (opened)
            rc = hm_model_from_gguf(g, &m, &em);
        if (rc == HM_OK) {
            n_ok++;
            hm_model_free(m);
            continue;
        }
        ck_assert(rc == HM_EFORMAT || rc == HM_EUNSUPPORTED || rc == HM_ETOOBIG ||
                  rc == HM_ERANGE || rc == HM_EINVAL);
        if (opened)
            ck_assert_ptr_null(m);
        ck_assert_uint_gt(strlen(em.text), 0);
    }
    ck_assert_int_gt(n_ok, 0);
    free(d);
    free(orig);
}
END_TEST

/* ---- oom ---- */

START_TEST(test_oom_load)
{
    size_t n;
    uint8_t *data = slurp(tiny_path, &n);
    int n_fail = 0;
    for (long k = 1;; k++) {
        struct hm_gguf *g = NULL;
        struct hm_model *m = (void *)1;
        struct hm_errmsg em = {{0}};
        hm_alloc_fail_after(k);
        int rc = hm_gguf_open_mem(data, n, "tiny", &g, &em);
        if (rc == HM_OK)
            rc = hm_model_from_gguf(g, &m, &em);
        hm_alloc_fail_after(0);
        if (rc == HM_OK) {
            ck_assert_uint_eq(m->features, ALL_FEATS);
            hm_model_free(m);
            break;
        }
        if (rc != HM_ENOMEM)
            ck_abort_msg("allocation %ld: rc %d '%s'", k, rc, em.text);
        n_fail++;
        ck_assert_int_lt(k, 100000);
    }
    ck_assert_int_gt(n_fail, 100);
    free(data);
}
END_TEST

START_TEST(test_oom_generate)
{
    const struct hm_preset *p = hm_preset_find("tiny");
    struct hm_hparams hp = p->hp;
    snprintf(hp.pattern, sizeof hp.pattern, "GM");
    hp.n_layer = 2;
    hp.n_vocab = 260;
    for (long k = 1;; k++) {
        struct hm_generate_opts o = {.seed = 1, .type = HM_DTYPE_Q8_0, .features = ALL_FEATS};
        struct hm_errmsg em = {{0}};
        hm_alloc_fail_after(k);
        int rc = hm_model_generate(&hp, &o, tmp_path("oom.gguf"), &em);
        hm_alloc_fail_after(0);
        if (rc == HM_OK)
            break;
        if (rc != HM_ENOMEM)
            ck_abort_msg("allocation %ld: rc %d '%s'", k, rc, em.text);
        ck_assert_int_lt(k, 100000);
    }
}
END_TEST

static Suite *model_suite(void)
{
    Suite *s = suite_create("model");
    TCase *tc = tcase_create("core");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_tiny);
    tcase_add_test(tc, test_types_and_determinism);
    tcase_add_test(tc, test_variants);
    tcase_add_test(tc, test_presets);
    tcase_add_test(tc, test_hp_table);
    suite_add_tcase(s, tc);
    tc = tcase_create("errors");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_schema_errors);
    tcase_add_test(tc, test_hparam_errors);
    tcase_add_test(tc, test_not_gguf);
    tcase_add_test(tc, test_mutations);
    suite_add_tcase(s, tc);
    tc = tcase_create("oom");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_oom_load);
    tcase_add_test(tc, test_oom_generate);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return hm_test_run(model_suite(), CK_NORMAL);
}
