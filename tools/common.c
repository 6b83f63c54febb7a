/*
 * common.c - helpers the subcommands of `hybridmoe` share (declared in tools/cmd.h):
 * bounded number parsing, getopt error reporting, a monotonic clock, reading a whole
 * file and loading a model that must carry a tokenizer.
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "hm/alloc.h"
#include "hm/err.h"
#include "hm/model.h"

#include "cmd.h"

int hm_cmd_parse_u64_max(const char *s, uint64_t max, uint64_t *out)
{
    uint64_t v;
    if (hm_cmd_parse_u64(s, &v) < 0 || v > max)
        return HM_EINVAL;
    *out = v;
    return HM_OK;
}

int hm_cmd_parse_float(const char *s, float *out)
{
    char *end;
    float v;
    errno = 0;
    v = strtof(s, &end);
    if (errno != 0 || end == s || *end != '\0' || !isfinite(v))
        return HM_EINVAL;
    *out = v;
    return HM_OK;
}

int hm_cmd_bad_option(const char *name, int c, char **argv)
{
    if (c == ':')
        return hm_cmd_usage_error(name, "option '%s' needs a value", argv[optind - 1]);
    return hm_cmd_usage_error(name, "unknown option '%s'", argv[optind - 1]);
}

double hm_cmd_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int hm_cmd_read_file(const char *path, size_t max, char **out, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL, *nb;
    size_t cap = 0, n = 0, k;
    int rc = HM_EIO;
    *out = NULL;
    if (f == NULL)
        return HM_EIO;
    for (;;) {
        if (n == cap) {
            if (max != 0 && cap >= max) {
                rc = HM_ETOOBIG;
                goto out;
            }
            size_t nc = cap ? cap * 2 : 1 << 16;
            nb = hm_realloc(buf, nc + 1);
            if (nb == NULL) {
                rc = HM_ENOMEM;
                goto out;
            }
            buf = nb;
            cap = nc;
        }
        k = fread(buf + n, 1, cap - n, f);
        n += k;
        if (k == 0)
            break;
    }
    if (ferror(f))
        goto out;
    buf[n] = '\0';
    *out = buf;
    *len = n;
    buf = NULL;
    rc = HM_OK;
out:
    hm_free(buf);
    fclose(f);
    return rc;
}

int hm_cmd_load_model(const char *prog, const char *path, struct hm_model **out)
{
    struct hm_errmsg em = {{0}};
    struct hm_model *m = NULL;
    int rc = hm_model_load(path, &m, &em);
    *out = NULL;
    if (rc < 0) {
        fprintf(stderr, "%s: %s (%s)\n", prog, em.text[0] ? em.text : path, hm_strerror(rc));
        return rc;
    }
    if (m->tok == NULL) {
        fprintf(stderr, "%s: %s: the model has no tokenizer\n", prog, path);
        hm_model_free(m);
        return HM_EINVAL;
    }
    *out = m;
    return HM_OK;
}
