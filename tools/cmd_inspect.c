/*
 * cmd_inspect.c - `hybridmoe inspect MODEL`: the file's metadata and tensors, then (unless
 * --raw) the model as the engine sees it: layer pattern, optional features, parameter
 * counts, weight bytes and KV-cache bytes per position by layer type.
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cmd.h"
#include "hm/gguf.h"
#include "hm/model.h"
#include "model_internal.h"

static const char *gguf_type_name(enum hm_gguf_type t)
{
    static const char *const names[] = {"u8",  "i8",  "u16",  "i16",   "u32", "i32", "f32",
                                        "bool", "str", "array", "u64", "i64", "f64"};
    return (unsigned)t < sizeof names / sizeof names[0] ? names[t] : "?";
}

static void print_shape(const struct hm_tensor *t)
{
    char buf[96];
    size_t o = 0;
    for (uint32_t d = t->n_dims; d-- > 0 && o < sizeof buf;)
        o += (size_t)snprintf(buf + o, sizeof buf - o, "%s%llu", d + 1 == t->n_dims ? "" : " x ",
                              (unsigned long long)t->ne[d]);
    printf("%-22s", buf);
}

int hm_cmd_inspect(int argc, char **argv)
{
    static const struct option opts[] = {
        {"no-tensors", no_argument, NULL, 'T'},
        {"max-elems", required_argument, NULL, 'm'},
        {"raw", no_argument, NULL, 'r'},
        {NULL, 0, NULL, 0},
    };
    const char *me = "inspect";
    bool tensors = true, raw = false;
    uint64_t max_elems = 8;
    int c;

    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
        switch (c) {
        case 'T': tensors = false; break;
        case 'r': raw = true; break;
        case 'm':
            if (hm_cmd_parse_u64(optarg, &max_elems) < 0 || max_elems > 1000000)
                return hm_cmd_usage_error(me, "--max-elems: '%s' is not a number", optarg);
            break;
        default:
            return hm_cmd_bad_option(me, c, argv);
        }
    }
    if (optind + 1 != argc)
        return hm_cmd_usage_error(me, optind == argc ? "MODEL is required"
                                                     : "exactly one MODEL expected");
    const char *path = argv[optind];
    struct hm_errmsg em = {{0}};
    struct hm_gguf *g;
    if (hm_gguf_open(path, &g, &em) < 0) {
        fprintf(stderr, "hybridmoe inspect: %s\n", em.text);
        return 1;
    }
    printf("file: %s\n", path);
    printf("gguf version: %u, alignment: %u, keys: %zu, tensors: %zu\n", hm_gguf_version(g),
           hm_gguf_alignment(g), hm_gguf_n_kv(g), hm_gguf_n_tensors(g));
    printf("\nmetadata:\n");
    char buf[4096];
    for (size_t i = 0; i < hm_gguf_n_kv(g); i++) {
        hm_gguf_format_value(g, i, (size_t)max_elems, buf, sizeof buf);
        printf("  %-48s %-5s %s\n", hm_gguf_key(g, i), gguf_type_name(hm_gguf_kv_type(g, i)),
               buf);
    }
    if (tensors) {
        printf("\ntensors (shape rows x cols, outermost first):\n");
        for (size_t i = 0; i < hm_gguf_n_tensors(g); i++) {
            const struct hm_tensor *t = hm_gguf_tensor(g, i);
            printf("  %-36s %-5s ", t->name, hm_dtype_name(t->type));
            print_shape(t);
            printf(" %12llu bytes\n", (unsigned long long)t->n_bytes);
        }
    }
    if (raw) {
        hm_gguf_free(g);
        return 0;
    }
    struct hm_model *m;
    if (hm_model_from_gguf(g, &m, &em) < 0) {
        fprintf(stderr, "hybridmoe inspect: not a valid hybridmoe model: %s\n", em.text);
        return 1;
    }
    const struct hm_hparams *hp = &m->hp;
    const struct hm_param_counts *cn = &m->counts;
    uint32_t n[3] = {0, 0, 0};
    for (uint32_t l = 0; l < hp->n_layer; l++)
        n[hp->pattern[l] == 'G' ? 0 : hp->pattern[l] == 'L' ? 1 : 2]++;
    printf("\nmodel:\n");
    printf("  layers: %u, pattern %s (G %u, L %u, M %u), dense %u, MoE %u\n", hp->n_layer,
           hp->pattern, n[0], n[1], n[2], hp->n_layer - hm_hparams_n_moe(hp),
           hm_hparams_n_moe(hp));
    printf("  d %u, vocabulary %u, context %u\n", hp->d, hp->n_vocab, hp->n_ctx);
    printf("  features:");
    for (unsigned i = 0; hm__feature_name(i); i++)
        printf(" %s=%s", hm__feature_name(i), (m->features & (1u << i)) ? "on" : "off");
    printf("\n");
    char a[32], b[32];
    hm_cmd_format_count(cn->total, a, sizeof a);
    hm_cmd_format_count(cn->active, b, sizeof b);
    printf("  total: %s (%llu)\n", a, (unsigned long long)cn->total);
    printf("  active: %s (%llu)\n", b, (unsigned long long)cn->active);
    printf("  weight bytes: %llu (%.2f MB)\n", (unsigned long long)cn->weight_bytes,
           (double)cn->weight_bytes / 1e6);
    uint64_t per_pos = n[0] * cn->kv_elems_g + n[1] * cn->kv_elems_l + n[2] * cn->kv_elems_m;
    printf("  kv per position per layer (f32): G %llu elems (%llu B), L %llu elems (%llu B), "
           "M %llu elems (%llu B)\n",
           (unsigned long long)cn->kv_elems_g, (unsigned long long)cn->kv_elems_g * 4,
           (unsigned long long)cn->kv_elems_l, (unsigned long long)cn->kv_elems_l * 4,
           (unsigned long long)cn->kv_elems_m, (unsigned long long)cn->kv_elems_m * 4);
    printf("  kv per position, all layers (f32): %llu elems (%llu B)\n",
           (unsigned long long)per_pos, (unsigned long long)per_pos * 4);
    hm_model_free(m);
    return 0;
}
