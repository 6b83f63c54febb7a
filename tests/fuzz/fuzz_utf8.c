/*
 * fuzz_utf8.c - libFuzzer target: the streaming UTF-8 decoder (hm_utf8_stream_*) under
 * arbitrary splits of arbitrary bytes.
 *
 * Input: byte 0 and byte 1 seed the split positions, the rest is the text. The text is
 * pushed in chunks of 0..8 bytes, then byte by byte, then in one piece. Properties:
 * every push and flush emits valid UTF-8 only; all three give the same bytes; that is
 * exactly the Unicode "maximal subpart" replacement of the text computed by the small
 * reference decoder below (valid input comes out unchanged); hm_utf8_valid and
 * hm_utf8_complete_prefix agree with the reference.
 */
#include <stdbool.h>
#include <string.h>

#include "hm/alloc.h"
#include "hm/tokenizer.h"

#include "fuzz.h"

#define MAX_TEXT 4096

int hm_fuzz_init(void)
{
    return 0;
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    return hm_fuzz_init();
}

/* Length of the sequence led by b (0 if b cannot lead) and its second byte's range. */
static int lead(uint8_t b, uint8_t *lo, uint8_t *hi)
{
    *lo = 0x80;
    *hi = 0xbf;
    if (b < 0x80)
        return 1;
    if (b >= 0xc2 && b <= 0xdf)
        return 2;
    if (b >= 0xe0 && b <= 0xef) {
        if (b == 0xe0)
            *lo = 0xa0;
        if (b == 0xed)
            *hi = 0x9f;
        return 3;
    }
    if (b >= 0xf0 && b <= 0xf4) {
        if (b == 0xf0)
            *lo = 0x90;
        if (b == 0xf4)
            *hi = 0x8f;
        return 4;
    }
    return 0;
}

/* Reference: valid sequences copied, each maximal invalid subpart (and a truncated tail)
 * replaced by one U+FFFD. out needs 3 * len bytes. Returns the length; *valid says
 * whether nothing was replaced, *prefix is the complete-prefix length. */
static size_t ref_decode(const uint8_t *s, size_t len, uint8_t *out, bool *valid,
                         size_t *prefix)
{
    size_t i = 0, o = 0, j;
    uint8_t lo, hi;
    int n;

    *valid = true;
    *prefix = len;
    while (i < len) {
        n = lead(s[i], &lo, &hi);
        if (n == 0) {
            j = 1;
        } else {
            for (j = 1; j < (size_t)n && i + j < len; j++) {
                uint8_t c = s[i + j];
                if (j == 1 ? (c < lo || c > hi) : (c < 0x80 || c > 0xbf))
                    break;
            }
            if (j == (size_t)n) {
                memcpy(out + o, s + i, j);
                o += j;
                i += j;
                continue;
            }
            if (i + j == len) /* ran out inside a so-far-valid sequence */
                *prefix = i;
        }
        memcpy(out + o, "\xef\xbf\xbd", 3);
        o += 3;
        i += j;
        *valid = false;
    }
    return o;
}

static uint32_t rng_next(uint32_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 17;
    *x ^= *x << 5;
    return *x;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t want[3 * MAX_TEXT], got[3 * MAX_TEXT + 16], out[3 * (MAX_TEXT + 4)];
    struct hm_utf8_stream us;
    const uint8_t *s;
    size_t len, want_len, got_len, i, k, prefix;
    uint32_t x;
    bool valid;
    int pass;

    if (size < 2 || size - 2 > MAX_TEXT)
        return 0;
    x = 0x9e3779b9u ^ ((uint32_t)data[0] << 8 | data[1]);
    s = data + 2;
    len = size - 2;
    want_len = ref_decode(s, len, want, &valid, &prefix);
    FUZZ_ASSERT(hm_utf8_valid(s, len) == valid);
    FUZZ_ASSERT(hm_utf8_valid(want, want_len));
    if (valid)
        FUZZ_ASSERT(want_len == len && memcmp(want, s, len) == 0);
    if (prefix == len || valid)
        FUZZ_ASSERT(hm_utf8_complete_prefix(s, len) == len);
    else
        FUZZ_ASSERT(hm_utf8_complete_prefix(s, len) == prefix);

    for (pass = 0; pass < 3; pass++) {
        hm_utf8_stream_init(&us);
        got_len = 0;
        for (i = 0; i < len; i += k) {
            k = pass == 0 ? rng_next(&x) % 9 : pass == 1 ? 1 : len;
            if (k > len - i)
                k = len - i;
            size_t n = hm_utf8_stream_push(&us, s + i, k, out, 3 * (k + 4));
            FUZZ_ASSERT(n <= 3 * (k + 4));
            FUZZ_ASSERT(hm_utf8_valid(out, n));
            FUZZ_ASSERT(us.n_pending < 4);
            FUZZ_ASSERT(got_len + n <= sizeof(got));
            memcpy(got + got_len, out, n);
            got_len += n;
        }
        k = hm_utf8_stream_flush(&us, out, 3);
        FUZZ_ASSERT(k <= 3 && hm_utf8_valid(out, k));
        memcpy(got + got_len, out, k);
        got_len += k;
        FUZZ_ASSERT(us.n_pending == 0);
        FUZZ_ASSERT(got_len == want_len);
        FUZZ_ASSERT(memcmp(got, want, want_len) == 0);
    }
    return 0;
}
