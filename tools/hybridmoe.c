/*
 * hybridmoe.c - the `hybridmoe` command: a table of subcommands, git style.
 *
 *     hybridmoe --help | hybridmoe help CMD | hybridmoe CMD --help | hybridmoe CMD ARGS...
 *
 * Exit status: 0 success, 1 failure, 2 usage error.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd.h"
#include "hm/err.h"

struct cmd {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *summary;
    const char *usage; /* options, one per line */
};

/* One row per subcommand. */
static const struct cmd cmds[] = {
    {"inspect", hm_cmd_inspect, "show a model file's metadata, tensors, counts and features",
     "usage: hybridmoe inspect [options] MODEL\n"
     "  --no-tensors      do not list the tensors\n"
     "  --max-elems N     array elements shown per metadata value (default 8)\n"
     "  --raw             GGUF contents only; do not load the file as a hybridmoe model\n"},
    {"mkmodel", hm_cmd_mkmodel, "write a randomly initialised model from a preset",
     "usage: hybridmoe mkmodel --preset NAME -o FILE [options]\n"
     "  --preset NAME           tiny, mini, small, medium or large (--list-presets)\n"
     "  -o, --output FILE       where to write the GGUF file\n"
     "  --seed S                random seed (default 1); the same seed gives the same file\n"
     "  --type T                matrix type: f32 (default), f16, bf16 or q8_0\n"
     "                          (q8_0 matrices whose columns are not a multiple of 32 use f16)\n"
     "  --dry-run               print the configuration and counts; write nothing\n"
     "  --set KEY=VALUE         override a hyperparameter (key without 'hybridmoe.', e.g.\n"
     "                          --set window.min=16); repeatable\n"
     "  --pattern STR           layer pattern (also sets block_count to its length)\n"
     "  --vocab N               vocabulary size (default: the preset's)\n"
     "  --tokenizer-train FILE  learn a byte-level BPE vocabulary from FILE, padded to --vocab\n"
     "  --name NAME             general.name (default: hybridmoe-PRESET)\n"
     "  --no-xscale --no-ctrl --no-qk-norm --no-sandwich --no-adapt-gain\n"
     "                          leave out an optional group\n"
     "  --no-q-lora             direct query projection on M layers (mla.q_lora_rank = 0)\n"
     "  --no-shared-experts     expert_shared_count = 0\n"
     "  --tied | --untied       output matrix tied to token_embd, or stored\n"
     "  --list-presets          list the presets with their counts\n"
     "  -q, --quiet             no progress output\n"},
    {"generate", hm_cmd_generate, "continue a prompt with a model, streaming the text",
     "usage: hybridmoe generate -m MODEL -p TEXT [options]\n"
     "  -m, --model FILE          model (GGUF)\n"
     "  -p, --prompt TEXT         prompt (BOS added if the tokenizer asks for it)\n"
     "  -n, --n-predict N         most tokens to generate (default 64; stops at EOS)\n"
     "  --temp T                  temperature in [0, 2] (default 1; 0 = greedy)\n"
     "  --top-p P                 nucleus sampling in (0, 1] (default 1 = off)\n"
     "  --top-k K                 keep the K most likely tokens (default 0 = off)\n"
     "  --min-p P                 keep tokens with p >= P * p_max (default 0 = off)\n"
     "  --seed S                  PRNG seed (default 0)\n"
     "  -t, --threads N           compute threads (default: all cores)\n"
     "  --complexity C            fix the complexity c in [0, 1]\n"
     "  --window W                fix the local attention window\n"
     "  --max-experts K           cap the experts per token\n"
     "  --router-threshold T      fix the router threshold tau in [0, 1]\n"
     "  --static                  adaptive mechanisms off (fixed top-K, full windows)\n"
     "  --stats                   print c_req, window, experts, KV bytes, speed (stderr)\n"
     "  --logits-out FILE         write one JSON line of logits per position\n"},
    {"perplexity", hm_cmd_perplexity, "perplexity and bits per byte of a model over a text file",
     "usage: hybridmoe perplexity -m MODEL -f TEXTFILE [options]\n"
     "  -m, --model FILE     model (GGUF)\n"
     "  -f, --file FILE      text to score\n"
     "  -c, --ctx N          tokens per window (default min(512, context length))\n"
     "  -b, --batch B        windows run together in one step (default 4)\n"
     "  -t, --threads N      compute threads (default: all cores)\n"
     "  --static             adaptive mechanisms off (fixed top-K, full windows)\n"
     "  --no-progress        no progress bar on stderr\n"},
};

static const struct cmd *find_cmd(const char *name)
{
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        if (strcmp(cmds[i].name, name) == 0)
            return &cmds[i];
    return NULL;
}

void hm_cmd_print_usage(const char *name, FILE *f)
{
    const struct cmd *c = find_cmd(name);
    if (c)
        fprintf(f, "%s", c->usage);
}

int hm_cmd_usage_error(const char *name, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "hybridmoe %s: ", name);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    hm_cmd_print_usage(name, stderr);
    return 2;
}

int hm_cmd_parse_u64(const char *s, uint64_t *out)
{
    char *end;
    if (!s || *s < '0' || *s > '9')
        return HM_EINVAL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (*end || errno)
        return HM_EINVAL;
    *out = v;
    return HM_OK;
}

void hm_cmd_format_count(uint64_t n, char *buf, size_t len)
{
    if (n >= 1000000000ull)
        snprintf(buf, len, "%.2f B", (double)n / 1e9);
    else if (n >= 1000000ull)
        snprintf(buf, len, "%.2f M", (double)n / 1e6);
    else if (n >= 1000ull)
        snprintf(buf, len, "%.2f K", (double)n / 1e3);
    else
        snprintf(buf, len, "%llu", (unsigned long long)n);
}

static void print_help(FILE *f)
{
    fprintf(f, "usage: hybridmoe [--help] COMMAND [ARGS]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        fprintf(f, "  %-12s %s\n", cmds[i].name, cmds[i].summary);
    fprintf(f, "\n'hybridmoe help COMMAND' or 'hybridmoe COMMAND --help' shows a command's "
               "options.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        print_help(stderr);
        return 2;
    }
    const char *name = argv[1];
    if (strcmp(name, "--help") == 0 || strcmp(name, "-h") == 0) {
        print_help(stdout);
        return 0;
    }
    if (strcmp(name, "help") == 0) {
        if (argc < 3) {
            print_help(stdout);
            return 0;
        }
        const struct cmd *c = find_cmd(argv[2]);
        if (!c) {
            fprintf(stderr, "hybridmoe: '%s' is not a command\n", argv[2]);
            return 2;
        }
        hm_cmd_print_usage(c->name, stdout);
        return 0;
    }
    const struct cmd *c = find_cmd(name);
    if (!c) {
        fprintf(stderr, "hybridmoe: '%s' is not a command. See 'hybridmoe --help'.\n", name);
        return 2;
    }
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0)
            break;
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            hm_cmd_print_usage(c->name, stdout);
            return 0;
        }
    }
    return c->fn(argc - 1, argv + 1);
}
