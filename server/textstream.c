/*
 * textstream.c - stop-sequence matching across token boundaries, SSE framing and
 * lossy UTF-8 for token strings.
 *
 * Invariant of struct hm_stopper: `held` never contains a whole stop sequence, and is
 * the longest suffix of the text seen so far that is a proper prefix of some stop
 * sequence. Since stop strings are valid UTF-8 and the pushed text is too, the held
 * suffix starts on a character boundary, so released text is always valid UTF-8.
 */
#include "textstream.h"

#include <string.h>

#include "hm/alloc.h"
#include "hm/err.h"

void hm_stopper_init(struct hm_stopper *st, char *const *stops, size_t n_stop)
{
    st->stops = stops;
    st->n_stop = n_stop;
    hm_buf_init(&st->held, (size_t)1 << 20);
}

void hm_stopper_release(struct hm_stopper *st)
{
    hm_buf_release(&st->held);
}

/* Is s[0..n) a prefix of some stop sequence? */
static bool is_stop_prefix(const struct hm_stopper *st, const char *s, size_t n)
{
    for (size_t i = 0; i < st->n_stop; i++) {
        size_t l = strlen(st->stops[i]);
        if (n < l && !memcmp(st->stops[i], s, n))
            return true;
    }
    return false;
}

int hm_stopper_push(struct hm_stopper *st, const char *text, size_t len, struct hm_buf *out,
                    bool *stopped)
{
    const char *h;
    size_t n, best = (size_t)-1, keep, i;
    int rc;

    *stopped = false;
    if (st->n_stop == 0)
        return len ? hm_buf_append(out, text, len) : 0;
    if (len) {
        rc = hm_buf_append(&st->held, text, len);
        if (rc < 0)
            return rc;
    }
    h = st->held.data;
    n = st->held.len;
    if (!n)
        return 0;
    /* earliest complete match of any stop sequence */
    for (i = 0; i < st->n_stop; i++) {
        const char *m = memmem(h, n, st->stops[i], strlen(st->stops[i]));
        if (m && (size_t)(m - h) < best)
            best = (size_t)(m - h);
    }
    if (best != (size_t)-1) {
        rc = best ? hm_buf_append(out, h, best) : 0;
        hm_buf_reset(&st->held);
        *stopped = true;
        return rc;
    }
    /* longest suffix that is a proper prefix of a stop sequence */
    for (keep = n; keep > 0; keep--)
        if (is_stop_prefix(st, h + n - keep, keep))
            break;
    if (keep < n) {
        rc = hm_buf_append(out, h, n - keep);
        if (rc < 0)
            return rc;
        memmove(st->held.data, h + n - keep, keep);
        st->held.len = keep;
        st->held.data[keep] = '\0';
    }
    return 0;
}

int hm_stopper_finish(struct hm_stopper *st, struct hm_buf *out)
{
    int rc = 0;

    if (st->held.len)
        rc = hm_buf_append(out, st->held.data, st->held.len);
    hm_buf_reset(&st->held);
    return rc;
}

static int dump_cb(const char *buffer, size_t size, void *data)
{
    return hm_buf_append(data, buffer, size) < 0 ? -1 : 0;
}

int hm_sse_append_json(struct hm_buf *out, const json_t *j)
{
    size_t mark = out->len;
    int rc = hm_buf_append(out, "data: ", 6);

    if (rc < 0)
        return rc;
    if (json_dump_callback(j, dump_cb, out, JSON_COMPACT) < 0) {
        rc = HM_ENOMEM;
        goto fail;
    }
    rc = hm_buf_append(out, "\n\n", 2);
    if (rc < 0)
        goto fail;
    return HM_OK;
fail:
    out->len = mark; /* no half frame */
    if (out->data)
        out->data[mark] = '\0';
    return rc;
}

int hm_sse_append_done(struct hm_buf *out)
{
    return hm_buf_append_str(out, "data: [DONE]\n\n");
}

int hm_sse_append_comment(struct hm_buf *out, const char *text)
{
    return hm_buf_printf(out, ": %s\n\n", text);
}

/* Length of the valid UTF-8 sequence at s (1..4), or 0 if invalid / truncated. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    size_t len;
    unsigned cp;

    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2;
        cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
        (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return len;
}

int hm_utf8_append_lossy(struct hm_buf *out, const unsigned char *bytes, size_t len)
{
    size_t i = 0;
    int rc;

    while (i < len) {
        size_t l = utf8_seq(bytes + i, len - i);
        if (l) {
            rc = hm_buf_append(out, bytes + i, l);
            i += l;
        } else {
            rc = hm_buf_append(out, "\xEF\xBF\xBD", 3);
            i++;
        }
        if (rc < 0)
            return rc;
    }
    if (!out->data)
        return hm_buf_append(out, "", 0);
    return HM_OK;
}
