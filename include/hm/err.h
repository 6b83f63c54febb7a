/*
 * err.h - error codes shared by every hybridmoe module.
 *
 * Fallible functions return int: HM_OK (0) or a negative enum hm_err. The table
 * below is the single source of truth; it also yields hm_strerror() and
 * hm_err_name(). Functions that can explain *why* they failed also take a
 * nullable struct hm_errmsg *, which receives one human-readable line such as
 * "model.gguf: tensor 'blk.0.attn_q.weight': shape 64x32, expected 64x64".
 *
 *     struct hm_errmsg em = {0};
 *     int rc = hm_gguf_open(path, &g, &em);
 *     if (rc < 0)
 *         fprintf(stderr, "%s (%s)\n", em.text, hm_strerror(rc));
 */
#ifndef HM_ERR_H
#define HM_ERR_H

#include <stddef.h>

/* X(name, value, message) */
#define HM_ERR_MAP(X)                                                                              \
    X(ENOMEM, -1, "out of memory")                                                                 \
    X(EINVAL, -2, "invalid argument")                                                              \
    X(EIO, -3, "input/output error")                                                               \
    X(EFORMAT, -4, "malformed data")                                                               \
    X(ETOOBIG, -5, "too big")                                                                      \
    X(EBUSY, -6, "resource busy")                                                                  \
    X(ECANCELED, -7, "operation canceled")                                                         \
    X(ETIMEDOUT, -8, "timed out")                                                                  \
    X(ERANGE, -9, "value out of range")                                                            \
    X(ENOENT, -10, "not found")                                                                    \
    X(EUNSUPPORTED, -11, "not supported")

enum hm_err {
    HM_OK = 0,
#define HM__ERR_ENUM(name, val, msg) HM_##name = (val),
    HM_ERR_MAP(HM__ERR_ENUM)
#undef HM__ERR_ENUM
};

/* Returns a static string for any int (unknown codes give "unknown error"). */
const char *hm_strerror(int err);
/* Returns the code's name without the prefix, e.g. "ENOMEM"; static. */
const char *hm_err_name(int err);

/* One line of detail about a failure. Zero-initialise; text is always NUL-terminated. */
struct hm_errmsg {
    char text[512];
};

/* Formats into em (if em is not NULL) and returns err, so callers write
 * `return hm_errmsg_set(em, HM_EFORMAT, "bad '%s'", key);`. */
int hm_errmsg_set(struct hm_errmsg *em, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* HM_BUG: an invariant of our own code is broken. Prints and aborts. */
#define HM_BUG(msg) hm__bug(__FILE__, __LINE__, (msg))
void hm__bug(const char *file, int line, const char *msg) __attribute__((noreturn));

#endif
