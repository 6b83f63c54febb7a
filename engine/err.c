/* err.c - error strings for enum hm_err (the table lives in include/hm/err.h). */
#include "hm/err.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

const char *hm_strerror(int err)
{
    switch (err) {
    case HM_OK:
        return "success";
#define HM__ERR_STR(name, val, msg)                                                                \
    case HM_##name:                                                                                \
        return msg;
        HM_ERR_MAP(HM__ERR_STR)
#undef HM__ERR_STR
    }
    return "unknown error";
}

const char *hm_err_name(int err)
{
    switch (err) {
    case HM_OK:
        return "OK";
#define HM__ERR_NAME(name, val, msg)                                                               \
    case HM_##name:                                                                                \
        return #name;
        HM_ERR_MAP(HM__ERR_NAME)
#undef HM__ERR_NAME
    }
    return "UNKNOWN";
}

int hm_errmsg_set(struct hm_errmsg *em, int err, const char *fmt, ...)
{
    if (em) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(em->text, sizeof(em->text), fmt, ap);
        va_end(ap);
    }
    return err;
}

void hm__bug(const char *file, int line, const char *msg)
{
    fprintf(stderr, "hybridmoe: BUG at %s:%d: %s\n", file, line, msg);
    abort();
}
