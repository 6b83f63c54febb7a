/*
 * fuzz_config.c - libFuzzer target: the hybridmoe-server configuration parsers
 * (server/config.c).
 *
 * There is no parse-from-memory function, so the input is written to a memfd and
 * hm_config_load_file() reads it through /proc/self/fd/N (the closest entry point; the
 * file path is what main.c passes for --config). The same bytes, split at newlines, are
 * then given to hm_config_from_args() as command-line flags (any flag naming a config
 * file is dropped so the fuzzer cannot make it read arbitrary files), and each line to
 * hm_parse_bytes().
 *
 * Properties: success leaves a config whose numbers are within the option table's bounds
 * and whose strings are set; failure sets a message (file:line for the file parser) and,
 * for hm_config_from_args, a NULL config.
 */
#include <stdbool.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "hm/alloc.h"
#include "hm/err.h"
#include "conf.h"

#include "fuzz.h"

#define MAX_INPUT 65536
#define MAX_ARGS 64

int hm_fuzz_init(void)
{
    return 0;
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    return hm_fuzz_init();
}

static void check_config(const struct hm_config *c)
{
    const struct hm_config_option *o;

    for (o = hm_config_options(); o->name; o++) {
        const char *p = (const char *)c + o->offset;
        uint64_t v;

        switch (o->type) {
        case HM_OPT_STR:
            FUZZ_ASSERT(*(char *const *)p != NULL);
            break;
        case HM_OPT_UINT:
            v = *(const unsigned *)p;
            FUZZ_ASSERT(v >= o->min && v <= o->max);
            break;
        case HM_OPT_BYTES:
            v = *(const uint64_t *)p;
            FUZZ_ASSERT(v >= o->min && v <= o->max);
            break;
        default:
            break;
        }
    }
}

static void fuzz_file(const uint8_t *data, size_t size)
{
    struct hm_errmsg em = {{0}};
    struct hm_config *c = NULL;
    char path[64];
    int fd, rc;

    fd = memfd_create("fuzz_config", MFD_CLOEXEC);
    FUZZ_ASSERT(fd >= 0);
    FUZZ_ASSERT(size == 0 || write(fd, data, size) == (ssize_t)size);
    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    FUZZ_ASSERT(hm_config_new(&c) == HM_OK);
    rc = hm_config_load_file(c, path, &em);
    if (rc < 0) {
        FUZZ_ASSERT(em.text[0] != '\0');
        FUZZ_ASSERT(strstr(em.text, path) != NULL); /* names the file (and line) */
    }
    check_config(c); /* a failed load may leave earlier lines applied, still in bounds */
    hm_config_free(c);
    close(fd);
}

static void fuzz_args(const uint8_t *data, size_t size)
{
    char *copy = hm_malloc(size + 1), *argv[MAX_ARGS + 1], *p, *nl;
    struct hm_errmsg em = {{0}};
    struct hm_config *c = (struct hm_config *)&em;
    bool help, version;
    int argc = 0, rc;
    size_t i;

    FUZZ_ASSERT(copy != NULL);
    memcpy(copy, data, size);
    copy[size] = '\0';
    argv[argc++] = "hybridmoe-server";
    for (p = copy; argc < MAX_ARGS; p = nl + 1) {
        nl = strchr(p, '\n');
        if (nl)
            *nl = '\0';
        if (!strstr(p, "conf")) /* --config: would read an arbitrary file */
            argv[argc++] = p;
        if (!nl)
            break;
    }
    argv[argc] = NULL;
    rc = hm_config_from_args(argc, argv, &help, &version, &c, &em);
    if (rc < 0) {
        FUZZ_ASSERT(c == NULL);
        FUZZ_ASSERT(em.text[0] != '\0');
    } else {
        FUZZ_ASSERT(c != NULL);
        check_config(c);
        hm_config_free(c);
    }
    for (i = 1; i < (size_t)argc; i++) {
        uint64_t v;
        hm_parse_bytes(argv[i], &v);
    }
    hm_free(copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > MAX_INPUT)
        return 0;
    fuzz_file(data, size);
    fuzz_args(data, size);
    return 0;
}
