/*
 * cmd_mkmodel.c - `hybridmoe mkmodel`: write a randomly initialised model from a preset,
 * with hyperparameter overrides, optional groups switched off, and optionally a BPE
 * vocabulary learned from a text file.
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cmd.h"
#include "hm/alloc.h"
#include "hm/model.h"
#include "hm/tokenizer.h"
#include "model_internal.h"

#define TRAIN_MAX_BYTES (256u << 20)

struct progress {
    const char *path;
    int last;       /* last percentage printed */
    bool tty;
};

static void progress_cb(void *ctx, uint64_t done, uint64_t total)
{
    struct progress *p = ctx;
    int pct = total ? (int)(done * 100 / total) : 100;
    if (pct < p->last + (p->tty ? 1 : 10) && pct != 100)
        return;
    if (pct == p->last)
        return;
    p->last = pct;
    fprintf(stderr, "%swriting %s: %3d%% (%.1f / %.1f MB)%s", p->tty ? "\r" : "", p->path, pct,
            (double)done / 1e6, (double)total / 1e6, p->tty && pct < 100 ? "" : "\n");
    fflush(stderr);
}

static void print_counts(FILE *f, const struct hm_param_counts *c)
{
    char a[32], b[32];
    hm_cmd_format_count(c->total, a, sizeof a);
    hm_cmd_format_count(c->active, b, sizeof b);
    fprintf(f, "total: %s (%llu)\n", a, (unsigned long long)c->total);
    fprintf(f, "active: %s (%llu)\n", b, (unsigned long long)c->active);
    double wb = (double)c->weight_bytes;
    fprintf(f, "weight bytes: %llu (%.2f %s)\n", (unsigned long long)c->weight_bytes,
            wb >= 1e9 ? wb / 1e9 : wb / 1e6, wb >= 1e9 ? "GB" : "MB");
    fprintf(f, "kv elements per position: G %llu, L %llu, M %llu\n",
            (unsigned long long)c->kv_elems_g, (unsigned long long)c->kv_elems_l,
            (unsigned long long)c->kv_elems_m);
}

static void print_features(FILE *f, uint32_t features)
{
    fprintf(f, "features:");
    for (unsigned i = 0; hm__feature_name(i); i++)
        if (features & (1u << i))
            fprintf(f, " %s", hm__feature_name(i));
    fprintf(f, "\n");
}

/* The features a configuration will really have (q-lora, shared experts and QK-norm
 * follow from the hyperparameters). */
static uint32_t real_features(const struct hm_hparams *hp, uint32_t features)
{
    uint32_t f = features & ~(HM_FEAT_Q_LORA | HM_FEAT_SHARED_EXPERTS | HM_FEAT_QK_NORM);
    bool any_g = strchr(hp->pattern, 'G') || strchr(hp->pattern, 'L');
    if (any_g && (features & HM_FEAT_QK_NORM))
        f |= HM_FEAT_QK_NORM;
    if (strchr(hp->pattern, 'M') && hp->q_lora_rank)
        f |= HM_FEAT_Q_LORA;
    if (hp->n_expert_shared && hm_hparams_n_moe(hp))
        f |= HM_FEAT_SHARED_EXPERTS;
    return f;
}

static void list_presets(void)
{
    const struct hm_preset *const *p = hm_preset_list();
    for (; *p; p++) {
        struct hm_param_counts c;
        char a[32], b[32];
        hm_hparams_count(&(*p)->hp, (*p)->features, HM_DTYPE_F32, &c);
        hm_cmd_format_count(c.total, a, sizeof a);
        hm_cmd_format_count(c.active, b, sizeof b);
        printf("%-8s total %-10s active %-10s %s\n", (*p)->name, a, b, (*p)->description);
    }
}

enum {
    OPT_PRESET = 256, OPT_SEED, OPT_TYPE, OPT_DRY, OPT_SET, OPT_PATTERN, OPT_VOCAB, OPT_TRAIN,
    OPT_NAME, OPT_TIED, OPT_UNTIED, OPT_LIST, OPT_NO_XSCALE, OPT_NO_CTRL, OPT_NO_QKN,
    OPT_NO_SANDWICH, OPT_NO_ADAPT, OPT_NO_QLORA, OPT_NO_SHEXP,
};

int hm_cmd_mkmodel(int argc, char **argv)
{
    static const struct option opts[] = {
        {"preset", required_argument, NULL, OPT_PRESET},
        {"output", required_argument, NULL, 'o'},
        {"seed", required_argument, NULL, OPT_SEED},
        {"type", required_argument, NULL, OPT_TYPE},
        {"dry-run", no_argument, NULL, OPT_DRY},
        {"set", required_argument, NULL, OPT_SET},
        {"pattern", required_argument, NULL, OPT_PATTERN},
        {"vocab", required_argument, NULL, OPT_VOCAB},
        {"tokenizer-train", required_argument, NULL, OPT_TRAIN},
        {"name", required_argument, NULL, OPT_NAME},
        {"tied", no_argument, NULL, OPT_TIED},
        {"untied", no_argument, NULL, OPT_UNTIED},
        {"list-presets", no_argument, NULL, OPT_LIST},
        {"no-xscale", no_argument, NULL, OPT_NO_XSCALE},
        {"no-ctrl", no_argument, NULL, OPT_NO_CTRL},
        {"no-qk-norm", no_argument, NULL, OPT_NO_QKN},
        {"no-sandwich", no_argument, NULL, OPT_NO_SANDWICH},
        {"no-adapt-gain", no_argument, NULL, OPT_NO_ADAPT},
        {"no-q-lora", no_argument, NULL, OPT_NO_QLORA},
        {"no-shared-experts", no_argument, NULL, OPT_NO_SHEXP},
        {"quiet", no_argument, NULL, 'q'},
        {NULL, 0, NULL, 0},
    };
    const char *me = "mkmodel";
    const char *preset_name = NULL, *out = NULL, *train = NULL, *name = NULL;
    const char *sets[64];
    size_t n_sets = 0;
    const char *pattern = NULL;
    uint64_t seed = 1, vocab = 0;
    enum hm_dtype type = HM_DTYPE_F32;
    bool dry = false, quiet = false;
    uint32_t clear = 0;
    int tied = -1, c;

    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":o:q", opts, NULL)) != -1) {
        switch (c) {
        case OPT_PRESET: preset_name = optarg; break;
        case 'o': out = optarg; break;
        case OPT_SEED:
            if (hm_cmd_parse_u64(optarg, &seed) < 0)
                return hm_cmd_usage_error(me, "--seed: '%s' is not a number", optarg);
            break;
        case OPT_TYPE:
            if (hm_dtype_from_name(optarg, &type) < 0)
                return hm_cmd_usage_error(me, "--type: '%s' is not f32, f16, bf16 or q8_0",
                                          optarg);
            break;
        case OPT_DRY: dry = true; break;
        case OPT_SET:
            if (n_sets == sizeof sets / sizeof sets[0])
                return hm_cmd_usage_error(me, "too many --set options");
            sets[n_sets++] = optarg;
            break;
        case OPT_PATTERN: pattern = optarg; break;
        case OPT_VOCAB:
            if (hm_cmd_parse_u64(optarg, &vocab) < 0 || vocab < 1 || vocab > (1u << 24))
                return hm_cmd_usage_error(me, "--vocab: '%s' is not a number in 1..2^24",
                                          optarg);
            break;
        case OPT_TRAIN: train = optarg; break;
        case OPT_NAME: name = optarg; break;
        case OPT_TIED: tied = 1; break;
        case OPT_UNTIED: tied = 0; break;
        case OPT_LIST: list_presets(); return 0;
        case OPT_NO_XSCALE: clear |= HM_FEAT_XSCALE; break;
        case OPT_NO_CTRL: clear |= HM_FEAT_CTRL; break;
        case OPT_NO_QKN: clear |= HM_FEAT_QK_NORM; break;
        case OPT_NO_SANDWICH: clear |= HM_FEAT_SANDWICH; break;
        case OPT_NO_ADAPT: clear |= HM_FEAT_ADAPT_GAIN; break;
        case OPT_NO_QLORA: clear |= HM_FEAT_Q_LORA; break;
        case OPT_NO_SHEXP: clear |= HM_FEAT_SHARED_EXPERTS; break;
        case 'q': quiet = true; break;
        default:
            return hm_cmd_bad_option(me, c, argv);
        }
    }
    if (optind < argc)
        return hm_cmd_usage_error(me, "unexpected argument '%s'", argv[optind]);
    if (!preset_name)
        return hm_cmd_usage_error(me, "--preset is required");
    const struct hm_preset *p = hm_preset_find(preset_name);
    if (!p)
        return hm_cmd_usage_error(me, "no preset '%s' (try --list-presets)", preset_name);
    if (!out && !dry)
        return hm_cmd_usage_error(me, "-o FILE is required (or --dry-run)");

    struct hm_hparams hp = p->hp;
    uint32_t features = p->features & ~clear;
    if (clear & HM_FEAT_Q_LORA)
        hp.q_lora_rank = 0;
    if (clear & HM_FEAT_SHARED_EXPERTS)
        hp.n_expert_shared = 0;
    if (tied == 1)
        features |= HM_FEAT_TIED_OUTPUT;
    else if (tied == 0)
        features &= ~(uint32_t)HM_FEAT_TIED_OUTPUT;
    if (vocab)
        hp.n_vocab = (uint32_t)vocab;
    if (pattern) {
        if (strlen(pattern) > HM_MAX_LAYERS)
            return hm_cmd_usage_error(me, "--pattern: more than %d layers", HM_MAX_LAYERS);
        memcpy(hp.pattern, pattern, strlen(pattern) + 1);
        hp.n_layer = (uint32_t)strlen(pattern);
    }
    for (size_t i = 0; i < n_sets; i++) {
        char key[128];
        const char *eq = strchr(sets[i], '=');
        if (!eq || eq == sets[i] || (size_t)(eq - sets[i]) >= sizeof key)
            return hm_cmd_usage_error(me, "--set '%s': expected KEY=VALUE", sets[i]);
        memcpy(key, sets[i], (size_t)(eq - sets[i]));
        key[eq - sets[i]] = 0;
        const struct hm__hp_key *k = hm__hp_find(key);
        if (!k)
            return hm_cmd_usage_error(me, "--set: unknown key '%s'", key);
        if (hm__hp_set(&hp, k, eq + 1) < 0)
            return hm_cmd_usage_error(me, "--set: bad value '%s' for '%s'", eq + 1, key);
    }
    struct hm_errmsg em = {{0}};
    if (hm_hparams_validate(&hp, &em) < 0) {
        fprintf(stderr, "hybridmoe mkmodel: invalid configuration: %s\n", em.text);
        return 1;
    }
    features = real_features(&hp, features);
    struct hm_param_counts cnt;
    hm_hparams_count(&hp, features, type, &cnt);

    FILE *info = dry ? stdout : stderr;
    if (dry || !quiet) {
        char buf[600];
        fprintf(info, "preset: %s\n", p->name);
        fprintf(info, "vocabulary: %u\n", hp.n_vocab);
        for (const struct hm__hp_key *k = hm__hp_keys; k->key; k++) {
            hm__hp_format(&hp, k, buf, sizeof buf);
            fprintf(info, "%s: %s\n", k->key, buf);
        }
        print_features(info, features);
        fprintf(info, "type: %s\n", hm_dtype_name(type));
        print_counts(info, &cnt);
    }
    if (dry)
        return 0;

    struct hm_tokenizer_data *td = NULL;
    int rc;
    if (train) {
        char *text;
        size_t len;
        rc = hm_cmd_read_file(train, TRAIN_MAX_BYTES, &text, &len);
        if (rc < 0) {
            fprintf(stderr, "hybridmoe mkmodel: cannot read '%s': %s\n", train, hm_strerror(rc));
            return 1;
        }
        uint32_t n_merges = hp.n_vocab > 258 ? hp.n_vocab - 258 : 0;
        rc = hm_bpe_train(text, len, n_merges, &td, &em);
        hm_free(text);
        if (rc == HM_OK && td->n_tokens < hp.n_vocab)
            rc = hm_tokenizer_data_pad(td, hp.n_vocab);
        if (rc == HM_OK && td->n_tokens != hp.n_vocab)
            rc = hm_errmsg_set(&em, HM_EINVAL, "trained vocabulary has %u tokens, need %u",
                               td->n_tokens, hp.n_vocab);
        if (rc < 0) {
            fprintf(stderr, "hybridmoe mkmodel: tokenizer training failed: %s\n",
                    em.text[0] ? em.text : hm_strerror(rc));
            hm_tokenizer_data_free(td);
            return 1;
        }
    }
    char gname[64];
    snprintf(gname, sizeof gname, "hybridmoe-%s", p->name);
    struct progress pr = {out, -1, isatty(2) != 0};
    struct hm_generate_opts go = {
        .seed = seed,
        .type = type,
        .features = features,
        .tokenizer = td,
        .name = name ? name : gname,
        .progress = quiet ? NULL : progress_cb,
        .progress_ctx = &pr,
    };
    rc = hm_model_generate(&hp, &go, out, &em);
    hm_tokenizer_data_free(td);
    if (rc < 0) {
        fprintf(stderr, "hybridmoe mkmodel: %s\n", em.text[0] ? em.text : hm_strerror(rc));
        return 1;
    }
    if (!quiet)
        fprintf(stderr, "wrote %s\n", out);
    return 0;
}
