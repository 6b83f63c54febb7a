/*
 * unicode.c - strict UTF-8 decoding, character classes, the GPT-2 byte-to-unicode
 * mapping and pre-split (engine/unicode.h), and the public streaming UTF-8 decoder
 * and validators (include/hm/tokenizer.h).
 *
 * The GPT-2 pre-split is a hand-written matcher for the pattern of spec 12.11,
 *     's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 * tried left to right as a regex engine would. Bytes that do not start valid UTF-8
 * match none of the classes: each one is a piece of its own, and counts as \S for
 * the look-ahead of \s+(?!\S).
 */
#include "unicode.h"

#include "hm/err.h"
#include "hm/tokenizer.h"

#include <string.h>

/* ---- Classes ------------------------------------------------------------------------ */

enum hm__ucls hm__unicode_class(uint32_t cp)
{
    size_t lo = 0, hi = hm__n_unicode_ranges;

    if (cp < 0x80) {
        if ((cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z'))
            return HM__UCLS_LETTER;
        if (cp >= '0' && cp <= '9')
            return HM__UCLS_NUMBER;
        if (cp == ' ' || (cp >= 0x09 && cp <= 0x0d))
            return HM__UCLS_SPACE;
        return HM__UCLS_OTHER;
    }
    /* binary search for the last range with lo <= cp */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (hm__unicode_ranges[mid].lo <= cp)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == 0 || cp > hm__unicode_ranges[lo - 1].hi)
        return HM__UCLS_OTHER;
    return (enum hm__ucls)hm__unicode_ranges[lo - 1].cls;
}

/* ---- UTF-8 -------------------------------------------------------------------------- */

/* Sequence length announced by a lead byte, or 0 if it cannot lead (continuation
 * bytes, C0/C1 overlong leads, F5..FF). */
static size_t lead_len(uint8_t b)
{
    if (b < 0x80)
        return 1;
    if (b >= 0xc2 && b <= 0xdf)
        return 2;
    if (b >= 0xe0 && b <= 0xef)
        return 3;
    if (b >= 0xf0 && b <= 0xf4)
        return 4;
    return 0;
}

/* Whether b may follow lead at position pos (1..3) of a sequence. The second byte's
 * range excludes overlongs (E0, F0), surrogates (ED) and > U+10FFFF (F4). */
static int cont_ok(uint8_t lead, size_t pos, uint8_t b)
{
    uint8_t lo = 0x80, hi = 0xbf;

    if (pos == 1) {
        if (lead == 0xe0)
            lo = 0xa0;
        else if (lead == 0xed)
            hi = 0x9f;
        else if (lead == 0xf0)
            lo = 0x90;
        else if (lead == 0xf4)
            hi = 0x8f;
    }
    return b >= lo && b <= hi;
}

size_t hm__utf8_decode(const uint8_t *s, size_t len, uint32_t *cp)
{
    size_t n = lead_len(s[0]), i;
    uint32_t v;

    if (n == 0 || n > len)
        return 0;
    if (n == 1) {
        *cp = s[0];
        return 1;
    }
    v = s[0] & (0x7f >> n);
    for (i = 1; i < n; i++) {
        if (!cont_ok(s[0], i, s[i]))
            return 0;
        v = (v << 6) | (s[i] & 0x3f);
    }
    *cp = v;
    return n;
}

size_t hm__utf8_encode(uint32_t cp, uint8_t *out)
{
    if (cp < 0x80) {
        out[0] = (uint8_t)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (uint8_t)(0xc0 | (cp >> 6));
        out[1] = (uint8_t)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (uint8_t)(0xe0 | (cp >> 12));
        out[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
        out[2] = (uint8_t)(0x80 | (cp & 0x3f));
        return 3;
    }
    out[0] = (uint8_t)(0xf0 | (cp >> 18));
    out[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3f));
    out[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
    out[3] = (uint8_t)(0x80 | (cp & 0x3f));
    return 4;
}

bool hm_utf8_valid(const uint8_t *buf, size_t len)
{
    size_t i = 0, n;
    uint32_t cp;

    while (i < len) {
        if (buf[i] < 0x80) {
            i++;
            continue;
        }
        n = hm__utf8_decode(buf + i, len - i, &cp);
        if (n == 0)
            return false;
        i += n;
    }
    return true;
}

size_t hm_utf8_complete_prefix(const uint8_t *buf, size_t len)
{
    size_t i = 0, n, k;

    while (i < len) {
        n = lead_len(buf[i]);
        if (n <= 1) { /* ASCII, or an invalid lead: complete as it is */
            i++;
            continue;
        }
        for (k = 1; k < n && i + k < len; k++)
            if (!cont_ok(buf[i], k, buf[i + k]))
                break;
        if (k == n) {
            i += n;
        } else if (i + k == len) {
            return i; /* valid so far but cut off: excluded */
        } else {
            i += k; /* broken sequence: complete (as invalid) */
        }
    }
    return len;
}

static const uint8_t fffd[3] = {0xef, 0xbf, 0xbd};

void hm_utf8_stream_init(struct hm_utf8_stream *s)
{
    memset(s, 0, sizeof(*s));
}

/* A byte-at-a-time state machine; pending holds the start of a sequence that is valid
 * so far. A maximal invalid subpart becomes one U+FFFD (Unicode's recommended practice). */
size_t hm_utf8_stream_push(struct hm_utf8_stream *s, const uint8_t *in, size_t len, uint8_t *out,
                           size_t out_cap)
{
    size_t o = 0, i, need;
    uint8_t b;

    if (len > (SIZE_MAX / 3) - 4 || out_cap < 3 * (len + 4))
        HM_BUG("hm_utf8_stream_push: out_cap < 3 * (len + 4)");
    if (s->n_pending > 3)
        HM_BUG("hm_utf8_stream_push: corrupt stream state");
    for (i = 0; i < len; i++) {
        b = in[i];
        if (s->n_pending > 0) {
            if (cont_ok(s->pending[0], s->n_pending, b)) {
                s->pending[s->n_pending++] = b;
                need = lead_len(s->pending[0]);
                if (s->n_pending == need) {
                    memcpy(out + o, s->pending, need);
                    o += need;
                    s->n_pending = 0;
                }
                continue;
            }
            /* broken: the pending bytes are one invalid subpart; b starts afresh */
            memcpy(out + o, fffd, 3);
            o += 3;
            s->n_pending = 0;
        }
        need = lead_len(b);
        if (need == 1) {
            out[o++] = b;
        } else if (need == 0) {
            memcpy(out + o, fffd, 3);
            o += 3;
        } else {
            s->pending[0] = b;
            s->n_pending = 1;
        }
    }
    return o;
}

size_t hm_utf8_stream_flush(struct hm_utf8_stream *s, uint8_t *out, size_t out_cap)
{
    if (s->n_pending == 0)
        return 0;
    if (out_cap < 3)
        HM_BUG("hm_utf8_stream_flush: out_cap < 3");
    s->n_pending = 0;
    memcpy(out, fffd, 3);
    return 3;
}

/* ---- GPT-2 byte mapping ------------------------------------------------------------- */

/* bytes_to_unicode(): '!'..'~', 0xA1..0xAC and 0xAE..0xFF map to themselves; the other
 * 68 bytes (0x00..0x20, 0x7F..0xA0, 0xAD) to U+0100 + their index in that order. */
uint32_t hm__gpt2_byte_to_cp(uint8_t b)
{
    if (b <= 0x20)
        return 0x100 + b;
    if (b >= 0x7f && b <= 0xa0)
        return 0x100 + 33 + (uint32_t)(b - 0x7f);
    if (b == 0xad)
        return 0x100 + 67;
    return b;
}

int hm__gpt2_cp_to_byte(uint32_t cp)
{
    if (cp < 0x100)
        return (cp <= 0x20 || (cp >= 0x7f && cp <= 0xa0) || cp == 0xad) ? -1 : (int)cp;
    if (cp <= 0x100 + 32)
        return (int)(cp - 0x100);
    if (cp <= 0x100 + 66)
        return (int)(0x7f + cp - 0x100 - 33);
    if (cp == 0x100 + 67)
        return 0xad;
    return -1;
}

/* ---- GPT-2 pre-split ---------------------------------------------------------------- */

/* Class and length of the character at s[0..len), len >= 1. */
static enum hm__ucls char_at(const uint8_t *s, size_t len, size_t *n)
{
    uint32_t cp;

    if (s[0] < 0x80) {
        *n = 1;
        return hm__unicode_class(s[0]);
    }
    *n = hm__utf8_decode(s, len, &cp);
    if (*n == 0) {
        *n = 1;
        return HM__UCLS_INVALID;
    }
    return hm__unicode_class(cp);
}

/* End of the run of characters of class cls starting at i. */
static size_t run_end(const uint8_t *s, size_t len, size_t i, enum hm__ucls cls)
{
    size_t n;

    while (i < len && char_at(s + i, len - i, &n) == cls)
        i += n;
    return i;
}

size_t hm__gpt2_next_piece(const uint8_t *s, size_t len)
{
    enum hm__ucls c0, c1;
    size_t n0, n1, end, last = 0;

    if (len == 0)
        return 0;
    /* 's|'t|'re|'ve|'m|'ll|'d */
    if (s[0] == '\'' && len >= 2) {
        if (s[1] == 's' || s[1] == 't' || s[1] == 'm' || s[1] == 'd')
            return 2;
        if (len >= 3 && ((s[1] == 'r' && s[2] == 'e') || (s[1] == 'v' && s[2] == 'e') ||
                         (s[1] == 'l' && s[2] == 'l')))
            return 3;
    }
    c0 = char_at(s, len, &n0);
    if (c0 == HM__UCLS_INVALID)
        return 1;
    /* ' ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+' with the optional space */
    if (s[0] == ' ' && len > 1) {
        c1 = char_at(s + 1, len - 1, &n1);
        if (c1 == HM__UCLS_LETTER || c1 == HM__UCLS_NUMBER || c1 == HM__UCLS_OTHER)
            return run_end(s, len, 1, c1);
    }
    if (c0 != HM__UCLS_SPACE)
        return run_end(s, len, 0, c0);
    /* \s+(?!\S)|\s+ : the whitespace run, less its last character if something other
     * than whitespace follows and the run has more than one character */
    end = 0;
    while (end < len && char_at(s + end, len - end, &n1) == HM__UCLS_SPACE) {
        last = end;
        end += n1;
    }
    if (end < len && last > 0)
        return last;
    return end;
}
