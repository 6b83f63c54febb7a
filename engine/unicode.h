/*
 * unicode.h - engine-internal Unicode helpers shared by tokenizer.c and bpe_train.c:
 * strict UTF-8 decoding, the character classes of the GPT-2 pre-tokenizer, the
 * GPT-2 byte-to-unicode mapping and the GPT-2 pre-split itself; also the hashes of
 * their open-addressing tables.
 *
 * Not part of the public contract (include/hm/); engine/ files only.
 */
#ifndef HM_ENGINE_UNICODE_H
#define HM_ENGINE_UNICODE_H

#include <stddef.h>
#include <stdint.h>

/* Character classes used by the GPT-2 pattern (spec 12.11). */
enum hm__ucls {
    HM__UCLS_OTHER = 0,   /* anything else: [^\s\p{L}\p{N}] */
    HM__UCLS_LETTER = 1,  /* general category L* */
    HM__UCLS_NUMBER = 2,  /* general category N* */
    HM__UCLS_SPACE = 3,   /* White_Space */
    HM__UCLS_INVALID = 4, /* a byte that does not start a valid UTF-8 sequence */
};

/* One range of the generated table (engine/unicode_tables.c): code points lo..hi
 * (inclusive) have class cls. Ranges are sorted and disjoint; code points in no
 * range are HM__UCLS_OTHER. */
struct hm__urange {
    uint32_t lo;
    uint32_t hi;
    uint8_t cls;
};
extern const struct hm__urange hm__unicode_ranges[];
extern const size_t hm__n_unicode_ranges;
extern const char hm__unicode_version[];

/* Class of a valid code point. */
enum hm__ucls hm__unicode_class(uint32_t cp);

/* Decodes one strict UTF-8 character (no overlongs, surrogates or > U+10FFFF) at
 * s[0..len), len >= 1. Returns its length 1..4 and sets *cp, or returns 0 if s[0]
 * does not start a complete valid sequence (the caller treats that byte alone). */
size_t hm__utf8_decode(const uint8_t *s, size_t len, uint32_t *cp);
/* Encodes cp (<= U+10FFFF) into out (4 bytes room); returns the length. */
size_t hm__utf8_encode(uint32_t cp, uint8_t *out);

/* GPT-2 bytes_to_unicode(): byte b <-> code point (printable Latin-1 bytes map to
 * themselves, the other 68 bytes to U+0100..U+0143 in byte order). */
uint32_t hm__gpt2_byte_to_cp(uint8_t b);
/* The byte for a code point of the table, or -1 if cp is not in it. */
int hm__gpt2_cp_to_byte(uint32_t cp);

/* Length in bytes (>= 1 when len >= 1) of the next GPT-2 pre-token at s[0..len).
 * A byte that does not start valid UTF-8 is a piece on its own. */
size_t hm__gpt2_next_piece(const uint8_t *s, size_t len);

/* ---- Shared by tokenizer.c and bpe_train.c ---- */
struct hm_tokenizer_data;
/* A new gpt2 vocabulary of the 256 byte tokens (token i is byte i as its GPT-2
 * byte-to-unicode string, type normal), no merges, bos = eos = -1. Returns owned. */
int hm__tokenizer_data_bytes(struct hm_tokenizer_data **out);
/* Appends the control tokens <|bos|> and <|eos|>, sets bos/eos and add_bos = true. */
int hm__tokenizer_data_add_specials(struct hm_tokenizer_data *d);

/* Hash of a byte string for open-addressing tables: FNV-1a, then h ^ (h >> 29). */
static inline uint64_t hm__hash_bytes(const void *p, size_t n)
{
    const uint8_t *s = p;
    uint64_t h = 0xcbf29ce484222325ull;
    size_t i;

    for (i = 0; i < n; i++) {
        h ^= s[i];
        h *= 0x100000001b3ull;
    }
    return h ^ (h >> 29);
}

/* Hash of a 64-bit key (a pair of token ids) for open-addressing tables. */
static inline uint64_t hm__hash_u64(uint64_t k)
{
    k *= 0x9e3779b97f4a7c15ull;
    return k ^ (k >> 31);
}

#endif
