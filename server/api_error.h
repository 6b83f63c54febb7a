/*
 * api_error.h - the one table from server/engine errors to HTTP status and the
 * OpenAI error body {"error": {"message", "type", "param", "code"}}.
 *
 *     struct hm_api_error e;
 *     hm_api_error_set(&e, HM_AERR_INVALID, "temperature", "must be in [0, 2]");
 *     json_t *body = hm_api_error_json(&e);     // owned
 *     unsigned status = hm_api_error_status(e.kind);
 */
#ifndef HM_SERVER_API_ERROR_H
#define HM_SERVER_API_ERROR_H

#include <jansson.h>

/* X(kind, status, type, code) */
#define HM_AERR_MAP(X)                                                                   \
    X(INVALID, 400, "invalid_request_error", NULL)                                       \
    X(INVALID_JSON, 400, "invalid_request_error", "invalid_json")                        \
    X(CONTEXT, 400, "invalid_request_error", "context_length_exceeded")                  \
    X(UNAUTHORIZED, 401, "authentication_error", "invalid_api_key")                      \
    X(NOT_FOUND, 404, "invalid_request_error", "not_found")                              \
    X(MODEL_NOT_FOUND, 404, "invalid_request_error", "model_not_found")                  \
    X(METHOD, 405, "invalid_request_error", "method_not_allowed")                        \
    X(TOO_LARGE, 413, "invalid_request_error", "request_too_large")                      \
    X(MEDIA_TYPE, 415, "invalid_request_error", "unsupported_media_type")                \
    X(RATE_LIMIT, 429, "rate_limit_error", "rate_limit_exceeded")                        \
    X(INTERNAL, 500, "server_error", "internal_error")                                   \
    X(OVERLOADED, 503, "server_error", "server_overloaded")                              \
    X(UNAVAILABLE, 503, "server_error", "server_unavailable")                            \
    X(SHUTDOWN, 503, "server_error", "server_shutdown")                                  \
    X(TIMEOUT, 504, "server_error", "timeout")

enum hm_aerr {
    HM_AERR_NONE = 0,
#define HM__AERR_ENUM(kind, status, type, code) HM_AERR_##kind,
    HM_AERR_MAP(HM__AERR_ENUM)
#undef HM__AERR_ENUM
};

struct hm_api_error {
    enum hm_aerr kind;
    char param[64];    /* "" = null */
    char message[512];
};

/* Fills e; param may be NULL. Returns -1 (so callers can `return hm_api_error_set(...)`). */
int hm_api_error_set(struct hm_api_error *e, enum hm_aerr kind, const char *param,
                     const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* Maps an engine error code (HM_EINVAL, HM_ERANGE, HM_ENOMEM, ...) to a kind. */
enum hm_aerr hm_api_error_from_hm(int err);
unsigned hm_api_error_status(enum hm_aerr kind);
const char *hm_api_error_type(enum hm_aerr kind);
const char *hm_api_error_code(enum hm_aerr kind); /* NULL = JSON null */
/* {"error": {...}}. Returns owned (NULL on ENOMEM). */
json_t *hm_api_error_json(const struct hm_api_error *e);

#endif
