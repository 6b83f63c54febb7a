/*
 * api_error.c - the single mapping from errors to HTTP status codes and OpenAI error
 * bodies. Every error response of the server goes through here.
 */
#include "api_error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "hm/err.h"

struct row {
    unsigned status;
    const char *type;
    const char *code;
};

static const struct row table[] = {
    [HM_AERR_NONE] = { 200, NULL, NULL },
#define HM__AERR_ROW(kind, status, type, code) [HM_AERR_##kind] = { status, type, code },
    HM_AERR_MAP(HM__AERR_ROW)
#undef HM__AERR_ROW
};

int hm_api_error_set(struct hm_api_error *e, enum hm_aerr kind, const char *param,
                     const char *fmt, ...)
{
    va_list ap;

    e->kind = kind;
    snprintf(e->param, sizeof(e->param), "%s", param ? param : "");
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof(e->message), fmt, ap);
    va_end(ap);
    return -1;
}

enum hm_aerr hm_api_error_from_hm(int err)
{
    switch (err) {
    case HM_OK: return HM_AERR_NONE;
    case HM_EINVAL: case HM_ERANGE: case HM_EFORMAT: return HM_AERR_INVALID;
    case HM_ETOOBIG: return HM_AERR_TOO_LARGE;
    case HM_ENOENT: return HM_AERR_NOT_FOUND;
    case HM_EBUSY: return HM_AERR_OVERLOADED;
    case HM_ECANCELED: return HM_AERR_SHUTDOWN;
    case HM_ETIMEDOUT: return HM_AERR_TIMEOUT;
    default: return HM_AERR_INTERNAL;
    }
}

unsigned hm_api_error_status(enum hm_aerr kind)
{
    return table[kind].status;
}

const char *hm_api_error_type(enum hm_aerr kind)
{
    return table[kind].type;
}

const char *hm_api_error_code(enum hm_aerr kind)
{
    return table[kind].code;
}

json_t *hm_api_error_json(const struct hm_api_error *e)
{
    json_t *inner = json_object(), *root = json_object();
    const char *code = table[e->kind].code;

    if (!inner || !root)
        goto fail;
    /* json_stringn would reject invalid UTF-8; messages quote user input, so be safe */
    if (json_object_set_new(inner, "message", json_string(e->message)) < 0)
        json_object_set_new(inner, "message", json_string("(unprintable message)"));
    json_object_set_new(inner, "type", json_string(table[e->kind].type));
    json_object_set_new(inner, "param", e->param[0] ? json_string(e->param) : json_null());
    json_object_set_new(inner, "code", code ? json_string(code) : json_null());
    if (json_object_set_new(root, "error", inner) < 0) {
        inner = NULL;
        goto fail;
    }
    return root;
fail:
    json_decref(inner);
    json_decref(root);
    return NULL;
}
