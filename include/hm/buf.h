/*
 * buf.h - a growable byte buffer with a hard cap (curl's dynbuf).
 *
 *     struct hm_buf b;
 *     hm_buf_init(&b, 1 << 20);          // never grows past 1 MiB
 *     if (hm_buf_append(&b, data, n) < 0) ...   // HM_ETOOBIG or HM_ENOMEM
 *     use(b.data, b.len);                 // data is NUL-terminated (not counted in len)
 *     hm_buf_release(&b);
 *
 * On any failure the buffer keeps its previous contents.
 */
#ifndef HM_BUF_H
#define HM_BUF_H

#include <stdarg.h>
#include <stddef.h>

struct hm_buf {
    char *data;  /* NULL until the first append; always NUL-terminated after it */
    size_t len;  /* bytes used, not counting the terminator */
    size_t cap;  /* bytes allocated */
    size_t max;  /* largest len allowed */
};

void hm_buf_init(struct hm_buf *b, size_t max);
void hm_buf_release(struct hm_buf *b);
void hm_buf_reset(struct hm_buf *b); /* len = 0, keeps memory */
int hm_buf_append(struct hm_buf *b, const void *data, size_t n);
int hm_buf_append_str(struct hm_buf *b, const char *s);
int hm_buf_printf(struct hm_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int hm_buf_vprintf(struct hm_buf *b, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));
/* Returns owned data (NUL-terminated, possibly NULL if empty) and re-inits b. */
char *hm_buf_detach(struct hm_buf *b, size_t *len);

#endif
