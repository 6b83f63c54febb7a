/* buf.c - capped growable byte buffer (see include/hm/buf.h). */
#include "hm/buf.h"

#include "hm/alloc.h"
#include "hm/err.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

void hm_buf_init(struct hm_buf *b, size_t max)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->max = max;
}

void hm_buf_release(struct hm_buf *b)
{
    if (!b)
        return;
    hm_free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

void hm_buf_reset(struct hm_buf *b)
{
    b->len = 0;
    if (b->data)
        b->data[0] = '\0';
}

/* Makes room for n more bytes plus the terminator. */
static int reserve(struct hm_buf *b, size_t n)
{
    size_t need, cap;
    char *p;

    if (n > b->max || b->len > b->max - n)
        return HM_ETOOBIG;
    need = b->len + n + 1;
    if (need <= b->cap)
        return HM_OK;
    cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    p = hm_realloc(b->data, cap);
    if (!p)
        return HM_ENOMEM;
    b->data = p;
    b->cap = cap;
    return HM_OK;
}

int hm_buf_append(struct hm_buf *b, const void *data, size_t n)
{
    int rc = reserve(b, n);
    if (rc < 0)
        return rc;
    if (n)
        memcpy(b->data + b->len, data, n);
    b->len += n;
    b->data[b->len] = '\0';
    return HM_OK;
}

int hm_buf_append_str(struct hm_buf *b, const char *s)
{
    return hm_buf_append(b, s, strlen(s));
}

int hm_buf_vprintf(struct hm_buf *b, const char *fmt, va_list ap)
{
    va_list ap2;
    int n, rc;

    va_copy(ap2, ap);
    n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    if (n < 0)
        return HM_EINVAL;
    rc = reserve(b, (size_t)n);
    if (rc < 0)
        return rc;
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    b->len += (size_t)n;
    return HM_OK;
}

int hm_buf_printf(struct hm_buf *b, const char *fmt, ...)
{
    va_list ap;
    int rc;
    va_start(ap, fmt);
    rc = hm_buf_vprintf(b, fmt, ap);
    va_end(ap);
    return rc;
}

char *hm_buf_detach(struct hm_buf *b, size_t *len)
{
    char *d = b->data;
    if (len)
        *len = b->len;
    hm_buf_init(b, b->max);
    return d;
}
