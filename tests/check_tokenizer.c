/* check_tokenizer.c - gpt2 and llama tokenizers, GPT-2 pre-split, streaming UTF-8, BPE
 * training and vocabulary validation (engine/tokenizer.c, unicode.c, bpe_train.c). */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hm/alloc.h"
#include "hm/err.h"
#include "hm/gguf.h"
#include "hm/tokenizer.h"
#include "testutil.h"
#include "unicode.h" /* engine-internal: pre-split, classes, byte mapping */

/* ---- Helpers ------------------------------------------------------------------------ */

/* Reads tinyshakespeare.txt from $HM_SHARED_DATA or $HM_SRCDIR/../shared/data; NULL if
 * absent. Returns owned (free). */
static char *read_shakespeare(size_t *len)
{
    const char *dir = getenv("HM_SHARED_DATA"), *src = getenv("HM_SRCDIR");
    char path[4096];
    char *buf = NULL;
    FILE *f;
    long n;

    if (dir)
        snprintf(path, sizeof(path), "%s/tinyshakespeare.txt", dir);
    else
        snprintf(path, sizeof(path), "%s/../shared/data/tinyshakespeare.txt",
                 src ? src : HM_SRCDIR);
    f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "check_tokenizer: SKIP: %s not found (set HM_SHARED_DATA)\n", path);
        return NULL;
    }
    if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) > 0 && fseek(f, 0, SEEK_SET) == 0) {
        buf = malloc((size_t)n + 1);
        if (buf && fread(buf, 1, (size_t)n, f) == (size_t)n) {
            *len = (size_t)n;
            buf[n] = '\0';
        } else {
            free(buf);
            buf = NULL;
        }
    }
    fclose(f);
    return buf;
}

/* Writes the writer to a temporary file and opens it (the file is unlinked at once). */
static int writer_open(struct hm_gguf_writer *w, struct hm_gguf **g, struct hm_errmsg *em)
{
    char path[] = "/tmp/hm_check_tok_XXXXXX";
    int fd = mkstemp(path), rc;

    ck_assert_int_ge(fd, 0);
    close(fd);
    rc = hm_gguf_writer_write(w, path, NULL, NULL, NULL, NULL, em);
    ck_assert_msg(rc == HM_OK, "gguf write: %s", em->text);
    rc = hm_gguf_open(path, g, em);
    unlink(path);
    return rc;
}

/* Loads a tokenizer from data through a GGUF file. */
static int load_data(const struct hm_tokenizer_data *d, struct hm_tokenizer **t,
                     struct hm_errmsg *em)
{
    struct hm_gguf_writer *w;
    struct hm_gguf *g;
    int rc;

    ck_assert_int_eq(hm_gguf_writer_new(&w), HM_OK);
    ck_assert_int_eq(hm_tokenizer_data_write(d, w), HM_OK);
    ck_assert_int_eq(writer_open(w, &g, em), HM_OK);
    hm_gguf_writer_free(w);
    rc = hm_tokenizer_from_gguf(g, d->n_tokens, t, em);
    hm_gguf_free(g);
    return rc;
}

static struct hm_tokenizer *load_ok(const struct hm_tokenizer_data *d)
{
    struct hm_errmsg em = {{0}};
    struct hm_tokenizer *t = NULL;
    int rc = load_data(d, &t, &em);

    ck_assert_msg(rc == HM_OK, "load: %s", em.text);
    return t;
}

/* Appends a token (and score) to d. */
static void data_add(struct hm_tokenizer_data *d, const char *text, int32_t type, float score)
{
    uint32_t n = d->n_tokens;

    d->tokens = hm_realloc(d->tokens, (n + 1) * sizeof(char *));
    d->token_type = hm_realloc(d->token_type, (n + 1) * sizeof(int32_t));
    ck_assert_ptr_nonnull(d->tokens);
    ck_assert_ptr_nonnull(d->token_type);
    if (d->scores) {
        d->scores = hm_realloc(d->scores, (n + 1) * sizeof(float));
        ck_assert_ptr_nonnull(d->scores);
        d->scores[n] = score;
    }
    d->tokens[n] = hm_strdup(text);
    d->token_type[n] = type;
    d->n_tokens = n + 1;
}

static void data_add_merge(struct hm_tokenizer_data *d, const char *m)
{
    d->merges = hm_realloc(d->merges, (d->n_merges + 1) * sizeof(char *));
    ck_assert_ptr_nonnull(d->merges);
    d->merges[d->n_merges++] = hm_strdup(m);
}

/* An empty llama vocabulary: <unk>, <s>, </s>, then (if bytes) <0x00>..<0xFF>. */
static struct hm_tokenizer_data *llama_base(bool bytes)
{
    struct hm_tokenizer_data *d = hm_calloc(1, sizeof(*d));
    char name[16];
    int i;

    ck_assert_ptr_nonnull(d);
    d->kind = HM_TOK_LLAMA;
    d->scores = hm_malloc(sizeof(float));
    data_add(d, "<unk>", HM_TOKEN_UNKNOWN, 0);
    data_add(d, "<s>", HM_TOKEN_CONTROL, 0);
    data_add(d, "</s>", HM_TOKEN_CONTROL, 0);
    d->bos = 1;
    d->eos = 2;
    d->add_bos = true;
    for (i = 0; bytes && i < 256; i++) {
        snprintf(name, sizeof(name), "<0x%02X>", i);
        data_add(d, name, HM_TOKEN_BYTE, 0);
    }
    return d;
}

/* A llama-style vocabulary from a trained gpt2 one: byte tokens, every printable ASCII
 * character and U+2581, then the trained tokens that are valid UTF-8 (score -rank). */
static struct hm_tokenizer_data *llama_from_trained(const struct hm_tokenizer_data *tr)
{
    struct hm_tokenizer_data *d = llama_base(true);
    uint8_t buf[1024];
    size_t n, i, k;
    uint32_t cp, id;
    int b;
    char c[2] = {0, 0};

    data_add(d, "\xe2\x96\x81", HM_TOKEN_NORMAL, 0);
    for (b = 0x21; b < 0x7f; b++) {
        c[0] = (char)b;
        data_add(d, c, HM_TOKEN_NORMAL, 0);
    }
    for (id = 256; id < tr->n_tokens; id++) {
        const uint8_t *s = (const uint8_t *)tr->tokens[id];
        if (tr->token_type[id] != HM_TOKEN_NORMAL)
            continue;
        n = 0;
        for (i = 0; s[i];) { /* back through the byte-to-unicode table, ' ' -> U+2581 */
            k = hm__utf8_decode(s + i, strlen((const char *)s + i), &cp);
            ck_assert_uint_gt(k, 0);
            b = hm__gpt2_cp_to_byte(cp);
            ck_assert_int_ge(b, 0);
            if (b == ' ') {
                memcpy(buf + n, "\xe2\x96\x81", 3);
                n += 3;
            } else {
                buf[n++] = (uint8_t)b;
            }
            i += k;
            ck_assert_uint_lt(n, sizeof(buf) - 4);
        }
        buf[n] = '\0';
        if (!hm_utf8_valid(buf, n) || (n <= 3 && hm__utf8_decode(buf, n, &cp) == n &&
                                       (cp == 0x2581 || (cp > 0x20 && cp < 0x7f))))
            continue; /* not UTF-8, or already present */
        data_add(d, (const char *)buf, HM_TOKEN_NORMAL, -(float)id);
    }
    return d;
}

static void check_roundtrip(const struct hm_tokenizer *t, const char *s, size_t len)
{
    int32_t *ids;
    size_t n, olen, i, bad = 0;
    char *out;

    ck_assert_int_eq(hm_tokenizer_encode(t, s, len, 0, &ids, &n), HM_OK);
    /* (one assertion per loop: Check's assertions are slow in bulk) */
    for (i = 0; i < n; i++)
        if (ids[i] < 0 || (uint32_t)ids[i] >= hm_tokenizer_n_vocab(t) ||
            hm_tokenizer_token_type(t, ids[i]) == HM_TOKEN_CONTROL)
            bad++;
    ck_assert_uint_eq(bad, 0);
    ck_assert_int_eq(hm_tokenizer_decode(t, ids, n, true, &out, &olen), HM_OK);
    ck_assert_uint_eq(olen, len);
    ck_assert_msg(memcmp(out, s, len) == 0, "round trip differs");
    hm_free(out);
    hm_free(ids);
}

static void check_ids(const struct hm_tokenizer *t, const char *s, unsigned flags,
                      const int32_t *want, size_t n_want)
{
    int32_t *ids;
    size_t n, i;

    ck_assert_int_eq(hm_tokenizer_encode(t, s, strlen(s), flags, &ids, &n), HM_OK);
    for (i = 0; i < n && i < n_want; i++)
        ck_assert_msg(ids[i] == want[i], "'%s': id %zu is %d, want %d", s, i, ids[i], want[i]);
    ck_assert_msg(n == n_want, "'%s': %zu ids, want %zu", s, n, n_want);
    hm_free(ids);
}

/* ---- Pre-split, classes, byte mapping ----------------------------------------------- */

static void check_split(const char *s, const char *const *want, size_t n_want)
{
    size_t len = strlen(s), i = 0, k, j = 0;

    while (i < len) {
        k = hm__gpt2_next_piece((const uint8_t *)s + i, len - i);
        ck_assert_uint_ge(k, 1);
        ck_assert_msg(j < n_want, "'%s': extra piece '%.*s'", s, (int)k, s + i);
        ck_assert_msg(strlen(want[j]) == k && memcmp(want[j], s + i, k) == 0,
                      "'%s': piece %zu is '%.*s', want '%s'", s, j, (int)k, s + i, want[j]);
        i += k;
        j++;
    }
    ck_assert_uint_eq(j, n_want);
}

#define SPLIT(s, ...)                                                                              \
    do {                                                                                           \
        static const char *const w_[] = {__VA_ARGS__};                                             \
        check_split(s, w_, sizeof(w_) / sizeof(w_[0]));                                            \
    } while (0)

START_TEST(test_presplit)
{
    SPLIT("Hello world's 123 test!!  \n x", "Hello", " world", "'s", " 123", " test", "!!",
          "  \n", " x");
    SPLIT("h\xc3\xa9llo \xd9\xa3\xd9\xa4 \xe6\x97\xa5\xe6\x9c\xac", "h\xc3\xa9llo",
          " \xd9\xa3\xd9\xa4", " \xe6\x97\xa5\xe6\x9c\xac");
    SPLIT("\n\nabc", "\n", "\n", "abc");
    SPLIT("I'LL don't  go\t\tnow ", "I", "'", "LL", " don", "'t", " ", " go", "\t", "\t", "now",
          " ");
    SPLIT("x  ", "x", "  ");
    SPLIT("  x", " ", " x");
    SPLIT("'''re", "'''", "re");
    SPLIT("we're they've I'm he'd she'll", "we", "'re", " they", "'ve", " I", "'m", " he", "'d",
          " she", "'ll");
    /* a1b2 ½x NBSP IDEOGRAPHIC-SPACE y: digits, No (½), Zs */
    SPLIT("a1b2 \xc2\xbdx\xc2\xa0\xe3\x80\x80y", "a", "1", "b", "2", " \xc2\xbd", "x", "\xc2\xa0",
          "\xe3\x80\x80", "y");
    SPLIT("\xf0\x9f\x98\x80 \xf0\x9f\x98\x80!", "\xf0\x9f\x98\x80", " \xf0\x9f\x98\x80!");
    /* invalid bytes are pieces of their own and \S for the look-ahead */
    SPLIT("a\xff b", "a", "\xff", " b");
    SPLIT("ab\xe6\x97!", "ab", "\xe6", "\x97", "!");
    SPLIT("  \xff", " ", " ", "\xff");
    SPLIT("\xc0\xaf", "\xc0", "\xaf");
}
END_TEST

START_TEST(test_unicode_classes)
{
    ck_assert_int_eq(hm__unicode_class('a'), HM__UCLS_LETTER);
    ck_assert_int_eq(hm__unicode_class('7'), HM__UCLS_NUMBER);
    ck_assert_int_eq(hm__unicode_class('\v'), HM__UCLS_SPACE);
    ck_assert_int_eq(hm__unicode_class('_'), HM__UCLS_OTHER);
    ck_assert_int_eq(hm__unicode_class(0x85), HM__UCLS_SPACE);    /* NEL */
    ck_assert_int_eq(hm__unicode_class(0xa0), HM__UCLS_SPACE);    /* NBSP */
    ck_assert_int_eq(hm__unicode_class(0x2028), HM__UCLS_SPACE);  /* LINE SEPARATOR */
    ck_assert_int_eq(hm__unicode_class(0x3000), HM__UCLS_SPACE);
    ck_assert_int_eq(hm__unicode_class(0x200b), HM__UCLS_OTHER);  /* ZWSP: Cf, not White_Space */
    ck_assert_int_eq(hm__unicode_class(0xaa), HM__UCLS_LETTER);   /* ª Lo */
    ck_assert_int_eq(hm__unicode_class(0xb2), HM__UCLS_NUMBER);   /* ² No */
    ck_assert_int_eq(hm__unicode_class(0x660), HM__UCLS_NUMBER);  /* Arabic-Indic zero */
    ck_assert_int_eq(hm__unicode_class(0x2164), HM__UCLS_NUMBER); /* Roman five: Nl */
    ck_assert_int_eq(hm__unicode_class(0xd7), HM__UCLS_OTHER);    /* × */
    ck_assert_int_eq(hm__unicode_class(0x301), HM__UCLS_OTHER);   /* combining acute: Mn */
    ck_assert_int_eq(hm__unicode_class(0x4e00), HM__UCLS_LETTER);
    ck_assert_int_eq(hm__unicode_class(0x9fff), HM__UCLS_LETTER); /* end of CJK block */
    ck_assert_int_eq(hm__unicode_class(0x20000), HM__UCLS_LETTER);
    ck_assert_int_eq(hm__unicode_class(0x1f600), HM__UCLS_OTHER);
    ck_assert_int_eq(hm__unicode_class(0x10ffff), HM__UCLS_OTHER);
    ck_assert_str_eq(hm__unicode_version, "15.0.0");
}
END_TEST

START_TEST(test_byte_mapping)
{
    int b;

    ck_assert_uint_eq(hm__gpt2_byte_to_cp(' '), 0x120);  /* Ġ */
    ck_assert_uint_eq(hm__gpt2_byte_to_cp('\n'), 0x10a); /* Ċ */
    ck_assert_uint_eq(hm__gpt2_byte_to_cp(0), 0x100);
    ck_assert_uint_eq(hm__gpt2_byte_to_cp(0x7f), 0x121);
    ck_assert_uint_eq(hm__gpt2_byte_to_cp(0xad), 0x143);
    ck_assert_uint_eq(hm__gpt2_byte_to_cp('a'), 'a');
    ck_assert_uint_eq(hm__gpt2_byte_to_cp(0xff), 0xff);
    for (b = 0; b < 256; b++)
        ck_assert_int_eq(hm__gpt2_cp_to_byte(hm__gpt2_byte_to_cp((uint8_t)b)), b);
    ck_assert_int_eq(hm__gpt2_cp_to_byte(0x144), -1);
    ck_assert_int_eq(hm__gpt2_cp_to_byte(' '), -1);
    ck_assert_int_eq(hm__gpt2_cp_to_byte(0x2581), -1);
}
END_TEST

/* ---- Vocabularies ------------------------------------------------------------------- */

START_TEST(test_default_vocab)
{
    struct hm_tokenizer_data *d;
    struct hm_tokenizer *t;
    const uint8_t *b;
    size_t n;
    char *out;
    static const int32_t hi[] = {256, 'h', 'i', ' ', '!'};

    ck_assert_int_eq(hm_tokenizer_data_default(300, &d), HM_OK);
    ck_assert_uint_eq(d->n_tokens, 300);
    ck_assert_int_eq(d->kind, HM_TOK_GPT2);
    ck_assert_str_eq(d->tokens[' '], "\xc4\xa0");
    ck_assert_str_eq(d->tokens['a'], "a");
    ck_assert_str_eq(d->tokens[256], "<|bos|>");
    ck_assert_str_eq(d->tokens[257], "<|eos|>");
    ck_assert_str_eq(d->tokens[258], "<|reserved_0|>");
    ck_assert_str_eq(d->tokens[299], "<|reserved_41|>");
    ck_assert_int_eq(d->token_type['a'], HM_TOKEN_NORMAL);
    ck_assert_int_eq(d->token_type[257], HM_TOKEN_CONTROL);
    ck_assert_int_eq(d->token_type[299], HM_TOKEN_CONTROL);
    ck_assert_int_eq(d->bos, 256);
    ck_assert_int_eq(d->eos, 257);
    ck_assert(d->add_bos);
    ck_assert_uint_eq(d->n_merges, 0);
    /* padding again continues the numbering */
    ck_assert_int_eq(hm_tokenizer_data_pad(d, 302), HM_OK);
    ck_assert_str_eq(d->tokens[301], "<|reserved_43|>");
    ck_assert_int_eq(hm_tokenizer_data_pad(d, 301), HM_EINVAL);
    ck_assert_int_eq(hm_tokenizer_data_pad(d, 302), HM_OK);

    t = load_ok(d);
    ck_assert_int_eq(hm_tokenizer_kind(t), HM_TOK_GPT2);
    ck_assert_uint_eq(hm_tokenizer_n_vocab(t), 302);
    ck_assert_int_eq(hm_tokenizer_bos(t), 256);
    ck_assert_int_eq(hm_tokenizer_eos(t), 257);
    ck_assert(hm_tokenizer_add_bos(t));
    ck_assert_int_eq(hm_tokenizer_token_type(t, 300), HM_TOKEN_CONTROL);
    ck_assert_str_eq(hm_tokenizer_token_text(t, 256), "<|bos|>");
    ck_assert_int_eq(hm_tokenizer_find(t, "<|eos|>", 7), 257);
    ck_assert_int_eq(hm_tokenizer_find(t, "\xc4\x8a", 2), '\n');
    ck_assert_int_eq(hm_tokenizer_find(t, "zz", 2), -1);
    check_ids(t, "hi !", HM_TOK_ADD_BOS, hi, 5);
    check_ids(t, "hi !", 0, hi + 1, 4);
    /* decoded bytes (spec 12.1) */
    b = hm_tokenizer_token_bytes(t, ' ', &n);
    ck_assert_uint_eq(n, 1);
    ck_assert_int_eq(b[0], ' ');
    b = hm_tokenizer_token_bytes(t, 0xad, &n);
    ck_assert_uint_eq(n, 1);
    ck_assert_int_eq(b[0], 0xad);
    hm_tokenizer_token_bytes(t, 256, &n);
    ck_assert_uint_eq(n, 0);
    hm_tokenizer_token_bytes(t, 302, &n);
    ck_assert_uint_eq(n, 0);
    hm_tokenizer_token_bytes(t, -1, &n);
    ck_assert_uint_eq(n, 0);
    /* decode skips control tokens and ids outside the vocabulary */
    {
        static const int32_t ids[] = {256, 'o', 99999, 'k', 257, -5};
        ck_assert_int_eq(hm_tokenizer_decode(t, ids, 6, false, &out, &n), HM_OK);
        ck_assert_str_eq(out, "ok");
        ck_assert_uint_eq(n, 2);
        hm_free(out);
    }
    hm_tokenizer_free(t);
    hm_tokenizer_data_free(d);
}
END_TEST

/* Byte tokens, <|bos|>, <|eos|>, then he(258) ll(259) hell(260) lo(261) hello(262). */
static struct hm_tokenizer_data *hello_vocab(bool lo_first)
{
    struct hm_tokenizer_data *d;

    ck_assert_int_eq(hm_tokenizer_data_default(258, &d), HM_OK);
    data_add(d, "he", HM_TOKEN_NORMAL, 0);
    data_add(d, "ll", HM_TOKEN_NORMAL, 0);
    data_add(d, "hell", HM_TOKEN_NORMAL, 0);
    data_add(d, "lo", HM_TOKEN_NORMAL, 0);
    data_add(d, "hello", HM_TOKEN_NORMAL, 0);
    if (lo_first)
        data_add_merge(d, "l o");
    data_add_merge(d, "l l");
    data_add_merge(d, "h e");
    if (!lo_first)
        data_add_merge(d, "l o");
    data_add_merge(d, "he ll");
    data_add_merge(d, "hell o");
    return d;
}

START_TEST(test_gpt2_merge_ranks)
{
    struct hm_tokenizer_data *d = hello_vocab(false);
    struct hm_tokenizer *t = load_ok(d);
    static const int32_t hello[] = {262}, hello2[] = {262, ' ', 262}, llo[] = {259, 'o'},
                         lll[] = {259, 'l'}, llo2[] = {'l', 261}, hel[] = {258, 'l'};

    check_ids(t, "hello", 0, hello, 1);
    check_ids(t, "hello hello", 0, hello2, 3); /* " hello" starts with the byte Ġ */
    check_ids(t, "llo", 0, llo, 2);            /* (l,l) ranks before (l,o) */
    check_ids(t, "lll", 0, lll, 2);            /* same rank: leftmost first */
    check_ids(t, "hel", 0, hel, 2);
    check_roundtrip(t, "hello hello llo", 15);
    hm_tokenizer_free(t);
    hm_tokenizer_data_free(d);

    d = hello_vocab(true);
    t = load_ok(d);
    check_ids(t, "llo", 0, llo2, 2); /* now (l,o) ranks first */
    check_ids(t, "hello", 0, (const int32_t[]){258, 'l', 261}, 3);
    hm_tokenizer_free(t);
    hm_tokenizer_data_free(d);
}
END_TEST

/* llama: unk(0) <s>(1) </s>(2) <0x00>..<0xFF>(3..258), then the tokens below. */
enum { L_SP = 259, L_A, L_B, L_SPA, L_AB, L_SPAB, L_X, L_Y, L_Z, L_XY, L_YZ };

static struct hm_tokenizer_data *llama_vocab(bool bytes, float yz_score)
{
    struct hm_tokenizer_data *d = llama_base(bytes);

    if (!bytes) { /* keep the ids of the enum */
        char name[16];
        int i;
        for (i = 0; i < 256; i++) {
            snprintf(name, sizeof(name), "unused%d", i);
            data_add(d, name, HM_TOKEN_UNUSED, 0);
        }
    }
    data_add(d, "\xe2\x96\x81", HM_TOKEN_NORMAL, -10);
    data_add(d, "a", HM_TOKEN_NORMAL, -10);
    data_add(d, "b", HM_TOKEN_NORMAL, -10);
    data_add(d, "\xe2\x96\x81" "a", HM_TOKEN_NORMAL, -3);
    data_add(d, "ab", HM_TOKEN_NORMAL, -1);
    data_add(d, "\xe2\x96\x81" "ab", HM_TOKEN_NORMAL, -2);
    data_add(d, "x", HM_TOKEN_NORMAL, -10);
    data_add(d, "y", HM_TOKEN_NORMAL, -10);
    data_add(d, "z", HM_TOKEN_NORMAL, -10);
    data_add(d, "xy", HM_TOKEN_NORMAL, -5);
    data_add(d, "yz", HM_TOKEN_NORMAL, yz_score);
    return d;
}

START_TEST(test_llama_spm)
{
    struct hm_tokenizer_data *d = llama_vocab(true, -5);
    struct hm_tokenizer *t = load_ok(d);
    int32_t *ids;
    size_t n, olen;
    char *out;

    ck_assert_int_eq(hm_tokenizer_kind(t), HM_TOK_LLAMA);
    ck_assert(hm_tokenizer_add_bos(t));
    /* "▁ab": "ab" (-1) merges before "▁a" (-3), then "▁" + "ab" = "▁ab" */
    check_ids(t, "ab", HM_TOK_ADD_BOS, (const int32_t[]){1, L_SPAB}, 2);
    check_ids(t, "ab", 0, (const int32_t[]){L_SPAB}, 1);
    check_ids(t, "a b", 0, (const int32_t[]){L_SPA, L_SP, L_B}, 3);
    check_ids(t, "b", 0, (const int32_t[]){L_SP, L_B}, 2);
    /* equal scores: leftmost pair first */
    check_ids(t, "xyz", 0, (const int32_t[]){L_SP, L_XY, L_Z}, 3);
    /* byte fallback: é = C3 A9, and an invalid byte */
    check_ids(t, "\xc3\xa9", 0, (const int32_t[]){L_SP, 3 + 0xc3, 3 + 0xa9}, 3);
    check_ids(t, "a\xff", 0, (const int32_t[]){L_SPA, 3 + 0xff}, 2);
    /* decoded bytes: ▁ is a space, <0xNN> a byte, control tokens nothing */
    ck_assert_int_eq(hm_tokenizer_encode(t, "ab a", 4, HM_TOK_ADD_BOS, &ids, &n), HM_OK);
    ck_assert_int_eq(hm_tokenizer_decode(t, ids, n, false, &out, &olen), HM_OK);
    ck_assert_str_eq(out, " ab a");
    ck_assert_uint_eq(olen, 5);
    hm_free(out);
    ck_assert_int_eq(hm_tokenizer_decode(t, ids, n, true, &out, &olen), HM_OK);
    ck_assert_str_eq(out, "ab a");
    hm_free(out);
    hm_free(ids);
    {
        const uint8_t *b = hm_tokenizer_token_bytes(t, 3 + 0x41, &n);
        ck_assert_uint_eq(n, 1);
        ck_assert_int_eq(b[0], 0x41);
        hm_tokenizer_token_bytes(t, 1, &n);
        ck_assert_uint_eq(n, 0);
        b = hm_tokenizer_token_bytes(t, 0, &n); /* <unk> is not a control token */
        ck_assert_uint_eq(n, 5);
        ck_assert_int_eq(memcmp(b, "<unk>", 5), 0);
    }
    check_roundtrip(t, "ab  xyz\xc3\xa9\xff\n", 11);
    hm_tokenizer_free(t);
    hm_tokenizer_data_free(d);

    /* a higher score for "yz" wins over leftmost */
    d = llama_vocab(true, -4);
    t = load_ok(d);
    check_ids(t, "xyz", 0, (const int32_t[]){L_SP, L_X, L_YZ}, 3);
    hm_tokenizer_free(t);
    hm_tokenizer_data_free(d);

    /* without byte tokens: one unknown token per byte */
    d = llama_vocab(false, -5);
    t = load_ok(d);
    check_ids(t, "a\xc3\xa9", 0, (const int32_t[]){L_SPA, 0, 0}, 3);
    hm_tokenizer_free(t);
    hm_tokenizer_data_free(d);
}
END_TEST

START_TEST(test_special_tokens)
{
    struct hm_tokenizer_data *d;
    struct hm_tokenizer *t;
    int32_t *ids;
    size_t n, i;

    ck_assert_int_eq(hm_tokenizer_data_default(400, &d), HM_OK);
    data_add(d, "<|user|>", HM_TOKEN_USER_DEFINED, 0);  /* 400 */
    data_add(d, "<|user|>x", HM_TOKEN_CONTROL, 0);      /* 401: longest match wins */
    t = load_ok(d);
    /* plain text never yields special tokens */
    ck_assert_int_eq(hm_tokenizer_encode(t, "a<|eos|>b<|user|><|reserved_5|>", 31, 0, &ids, &n),
                     HM_OK);
    ck_assert_uint_eq(n, 31);
    for (i = 0; i < n; i++)
        ck_assert_int_lt(ids[i], 256);
    hm_free(ids);
    check_ids(t, "a<|eos|>b<|user|><|reserved_5|>", HM_TOK_PARSE_SPECIAL,
              (const int32_t[]){'a', 257, 'b', 400, 263}, 5);
    check_ids(t, "<|user|>x<|eos", HM_TOK_PARSE_SPECIAL | HM_TOK_FORCE_BOS,
              (const int32_t[]){256, 401, '<', '|', 'e', 'o', 's'}, 7);
    check_roundtrip(t, "<|bos|> <|eos|>", 15);
    hm_tokenizer_free(t);
    hm_tokenizer_data_free(d);

    /* llama: a space is prefixed after each special token */
    d = llama_vocab(true, -5);
    t = load_ok(d);
    check_ids(t, "a</s>b", 0,
              (const int32_t[]){L_SPA, 3 + '<', 3 + '/', 3 + 's', 3 + '>', L_B}, 6);
    check_ids(t, "a</s>b", HM_TOK_PARSE_SPECIAL, (const int32_t[]){L_SPA, 2, L_SP, L_B}, 4);
    check_ids(t, "</s>", HM_TOK_PARSE_SPECIAL | HM_TOK_ADD_BOS, (const int32_t[]){1, 2}, 2);
    hm_tokenizer_free(t);
    hm_tokenizer_data_free(d);
}
END_TEST

START_TEST(test_bos_defaults)
{
    struct hm_gguf_writer *w;
    struct hm_gguf *g;
    struct hm_tokenizer *t;
    struct hm_errmsg em = {{0}};
    struct hm_tokenizer_data *d;
    int kind;

    for (kind = 0; kind < 2; kind++) {
        d = kind ? llama_vocab(true, -5) : NULL;
        if (!d)
            ck_assert_int_eq(hm_tokenizer_data_default(258, &d), HM_OK);
        ck_assert_int_eq(hm_gguf_writer_new(&w), HM_OK);
        /* the keys without add_bos_token */
        hm_gguf_writer_add_str(w, "tokenizer.ggml.model", kind ? "llama" : "gpt2");
        hm_gguf_writer_add_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)d->tokens,
                                   d->n_tokens);
        hm_gguf_writer_add_arr(w, "tokenizer.ggml.token_type", HM_GGUF_INT32, d->token_type,
                               d->n_tokens);
        if (d->scores)
            hm_gguf_writer_add_arr(w, "tokenizer.ggml.scores", HM_GGUF_FLOAT32, d->scores,
                                   d->n_tokens);
        hm_gguf_writer_add_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)d->bos);
        ck_assert_int_eq(writer_open(w, &g, &em), HM_OK);
        ck_assert_int_eq(hm_tokenizer_from_gguf(g, d->n_tokens, &t, &em), HM_OK);
        ck_assert_int_eq(hm_tokenizer_add_bos(t), kind == 1); /* spec 12.11 */
        ck_assert_int_eq(hm_tokenizer_eos(t), -1);
        check_ids(t, "", HM_TOK_ADD_BOS, (const int32_t[]){d->bos}, kind == 1 ? 1 : 0);
        check_ids(t, "", HM_TOK_FORCE_BOS, (const int32_t[]){d->bos}, 1);
        check_ids(t, "", 0, NULL, 0);
        hm_tokenizer_free(t);
        hm_gguf_free(g);
        hm_gguf_writer_free(w);
        hm_tokenizer_data_free(d);
    }
}
END_TEST

/* ---- Streaming UTF-8 ---------------------------------------------------------------- */

static void check_stream_splits(const char *str)
{
    const uint8_t *s = (const uint8_t *)str;
    size_t len = strlen(str), i, j, n, total;
    uint8_t out[3 * (64 + 4)], all[3 * 64 * 4];
    struct hm_utf8_stream us;
    size_t cuts[3];
    int c;

    ck_assert_uint_le(len, 64);
    for (i = 0; i <= len; i++) {
        for (j = i; j <= len; j++) {
            hm_utf8_stream_init(&us);
            cuts[0] = i;
            cuts[1] = j;
            cuts[2] = len;
            total = 0;
            for (c = 0; c < 3; c++) {
                size_t from = c ? cuts[c - 1] : 0;
                n = hm_utf8_stream_push(&us, s + from, cuts[c] - from, out, sizeof(out));
                ck_assert_msg(hm_utf8_valid(out, n), "'%s' cut %zu/%zu: broken output", str,
                              i, j);
                memcpy(all + total, out, n);
                total += n;
            }
            ck_assert_uint_eq(hm_utf8_stream_flush(&us, out, sizeof(out)), 0);
            ck_assert_uint_eq(total, len);
            ck_assert_int_eq(memcmp(all, s, len), 0);
        }
    }
}

static void check_stream_once(const char *in, size_t len, const char *want)
{
    struct hm_utf8_stream us;
    uint8_t out[3 * (32 + 4)];
    size_t n;

    hm_utf8_stream_init(&us);
    n = hm_utf8_stream_push(&us, (const uint8_t *)in, len, out, sizeof(out));
    n += hm_utf8_stream_flush(&us, out + n, sizeof(out) - n);
    ck_assert_uint_eq(n, strlen(want));
    ck_assert_int_eq(memcmp(out, want, n), 0);
}

#define FFFD "\xef\xbf\xbd"

START_TEST(test_utf8_stream)
{
    struct hm_utf8_stream us;
    uint8_t out[64];

    check_stream_splits("h\xc3\xa9llo \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x98\x80 \xd9\xa3!");
    check_stream_splits("\xf0\x9f\x98\x80\xf0\x9f\x98\x80\xe2\x96\x81\xc2\xa0");
    check_stream_once("a\xff" "b", 3, "a" FFFD "b");
    check_stream_once("a\xe6\x97" "b", 4, "a" FFFD "b");    /* one U+FFFD per broken part */
    check_stream_once("\xe6\x97", 2, FFFD);                  /* cut off at the end */
    check_stream_once("\xc0\xaf", 2, FFFD FFFD);             /* overlong */
    check_stream_once("\xed\xa0\x80", 3, FFFD FFFD FFFD);    /* surrogate */
    check_stream_once("\xf4\x90\x80\x80", 4, FFFD FFFD FFFD FFFD); /* > U+10FFFF */
    check_stream_once("\xf0\x9f\x98" "a", 4, FFFD "a");
    check_stream_once("\x80\xbf", 2, FFFD FFFD);
    /* a partial character is held back, not emitted */
    hm_utf8_stream_init(&us);
    ck_assert_uint_eq(hm_utf8_stream_push(&us, (const uint8_t *)"x\xe6\x97", 3, out, sizeof(out)),
                      1);
    ck_assert_uint_eq(us.n_pending, 2);
    ck_assert_uint_eq(hm_utf8_stream_push(&us, (const uint8_t *)"\xa5", 1, out, sizeof(out)), 3);
    ck_assert_int_eq(memcmp(out, "\xe6\x97\xa5", 3), 0);

    ck_assert(hm_utf8_valid((const uint8_t *)"", 0));
    ck_assert(hm_utf8_valid((const uint8_t *)"h\xc3\xa9\xf4\x8f\xbf\xbf", 7));
    ck_assert(!hm_utf8_valid((const uint8_t *)"\xc3", 1));
    ck_assert(!hm_utf8_valid((const uint8_t *)"\xed\xa0\x80", 3));
    ck_assert(!hm_utf8_valid((const uint8_t *)"\xe0\x80\x80", 3));
    ck_assert(!hm_utf8_valid((const uint8_t *)"\xf5\x80\x80\x80", 4));
    ck_assert_uint_eq(hm_utf8_complete_prefix((const uint8_t *)"ab\xe6\x97", 4), 2);
    ck_assert_uint_eq(hm_utf8_complete_prefix((const uint8_t *)"ab\xe6", 3), 2);
    ck_assert_uint_eq(hm_utf8_complete_prefix((const uint8_t *)"ab\xe6\x97\xa5", 5), 5);
    ck_assert_uint_eq(hm_utf8_complete_prefix((const uint8_t *)"ab\xff", 3), 3);
    ck_assert_uint_eq(hm_utf8_complete_prefix((const uint8_t *)"ab\xe6\x41", 4), 4);
    ck_assert_uint_eq(hm_utf8_complete_prefix((const uint8_t *)"\xf0\x9f\x98", 3), 0);
    ck_assert_uint_eq(hm_utf8_complete_prefix((const uint8_t *)"", 0), 0);
}
END_TEST

START_TEST(test_utf8_stream_random)
{
    uint8_t in[256], out[3 * (256 + 4)], ref[3 * (256 + 4) + 3], all[3 * (256 + 4) + 3];
    struct hm_utf8_stream us;
    size_t len, i, k, n, nref, total;
    int iter;

    srand(1234);
    for (iter = 0; iter < 500; iter++) {
        len = (size_t)(rand() % 256);
        for (i = 0; i < len; i++) /* mostly UTF-8-ish bytes */
            in[i] = (uint8_t)(rand() % 3 ? 0x80 + rand() % 0x78 : rand() % 256);
        hm_utf8_stream_init(&us);
        nref = hm_utf8_stream_push(&us, in, len, ref, sizeof(ref));
        nref += hm_utf8_stream_flush(&us, ref + nref, sizeof(ref) - nref);
        ck_assert(hm_utf8_valid(ref, nref));
        hm_utf8_stream_init(&us);
        for (i = 0, total = 0; i < len; i += k) {
            k = 1 + (size_t)(rand() % 5);
            if (k > len - i)
                k = len - i;
            n = hm_utf8_stream_push(&us, in + i, k, out, sizeof(out));
            ck_assert(hm_utf8_valid(out, n));
            memcpy(all + total, out, n);
            total += n;
        }
        total += hm_utf8_stream_flush(&us, all + total, 3);
        ck_assert_uint_eq(total, nref);
        ck_assert_int_eq(memcmp(all, ref, nref), 0);
        if (hm_utf8_valid(in, len)) {
            ck_assert_uint_eq(nref, len);
            ck_assert_int_eq(memcmp(ref, in, len), 0);
        }
    }
}
END_TEST

/* ---- Training ----------------------------------------------------------------------- */

START_TEST(test_train_tiebreak)
{
    struct hm_tokenizer_data *d;
    struct hm_errmsg em = {{0}};
    static const char *const want[] = {"\xc4\xa0 c", "\xc4\xa0\x63 d", "a b", "\xc4\xa0 ab"};
    struct hm_tokenizer *t;
    uint32_t i;

    /* pairs (a,b) 2, (Ġ,a) 1, (Ġ,c) 2, (c,d) 2: ties go to the smallest bytes */
    ck_assert_int_eq(hm_bpe_train("ab ab cd cd", 11, 10, &d, &em), HM_OK);
    ck_assert_uint_eq(d->n_merges, 4); /* then no pair is left */
    for (i = 0; i < 4; i++)
        ck_assert_str_eq(d->merges[i], want[i]);
    ck_assert_uint_eq(d->n_tokens, 256 + 4 + 2);
    ck_assert_str_eq(d->tokens[256], "\xc4\xa0" "c");
    ck_assert_str_eq(d->tokens[257], "\xc4\xa0" "cd");
    ck_assert_str_eq(d->tokens[258], "ab");
    ck_assert_str_eq(d->tokens[259], "\xc4\xa0" "ab");
    ck_assert_str_eq(d->tokens[260], "<|bos|>");
    ck_assert_int_eq(d->token_type[261], HM_TOKEN_CONTROL);
    ck_assert_int_eq(d->bos, 260);
    ck_assert_int_eq(d->eos, 261);
    t = load_ok(d);
    check_ids(t, "ab ab cd cd", 0, (const int32_t[]){258, 259, 257, 257}, 4);
    hm_tokenizer_free(t);
    hm_tokenizer_data_free(d);

    ck_assert_int_eq(hm_bpe_train("", 0, 10, &d, &em), HM_OK);
    ck_assert_uint_eq(d->n_merges, 0);
    ck_assert_uint_eq(d->n_tokens, 258);
    hm_tokenizer_data_free(d);
}
END_TEST

START_TEST(test_train_shakespeare)
{
    struct hm_tokenizer_data *d, *d2, *dl;
    struct hm_tokenizer *t, *tl;
    struct hm_errmsg em = {{0}};
    size_t len, i;
    uint32_t k;
    char *text = read_shakespeare(&len);
    char rnd[4096];

    if (!text)
        return;
    ck_assert_int_eq(hm_bpe_train(text, len, 2000, &d, &em), HM_OK);
    ck_assert_uint_eq(d->n_merges, 2000);
    ck_assert_uint_ge(d->n_tokens, 256 + 1000 + 2);
    ck_assert_str_eq(d->merges[0], "\xc4\xa0 t"); /* " t" is the most frequent pair */
    ck_assert_str_eq(d->tokens[d->n_tokens - 1], "<|eos|>");
    /* deterministic */
    ck_assert_int_eq(hm_bpe_train(text, len, 2000, &d2, &em), HM_OK);
    ck_assert_uint_eq(d2->n_tokens, d->n_tokens);
    ck_assert_uint_eq(d2->n_merges, d->n_merges);
    for (k = 0, i = 0; k < d->n_merges; k++)
        i += strcmp(d->merges[k], d2->merges[k]) != 0;
    for (k = 0; k < d->n_tokens; k++)
        i += strcmp(d->tokens[k], d2->tokens[k]) != 0 || d->token_type[k] != d2->token_type[k];
    ck_assert_uint_eq(i, 0);
    hm_tokenizer_data_free(d2);

    ck_assert_int_eq(hm_tokenizer_data_pad(d, 4096), HM_OK);
    t = load_ok(d);
    check_roundtrip(t, text, len);
    {
        int32_t *ids;
        size_t n;
        ck_assert_int_eq(hm_tokenizer_encode(t, text, len, 0, &ids, &n), HM_OK);
        ck_assert_uint_lt(n, len / 2); /* the merges compress */
        hm_free(ids);
    }
    dl = llama_from_trained(d);
    tl = load_ok(dl);
    check_roundtrip(tl, text, len);
    /* arbitrary bytes and UTF-8 (seeded) through both */
    srand(42);
    for (k = 0; k < 200; k++) {
        size_t n = (size_t)(rand() % (int)sizeof(rnd));
        for (i = 0; i < n; i++) {
            int r = rand() % 4;
            rnd[i] = (char)(r == 0 ? rand() % 256 : r == 1 ? ' ' + rand() % 95
                                                  : r == 2 ? "\xc3\xa9\xe6\x97\xa5 \n"[rand() % 7]
                                                           : text[rand() % (int)len]);
        }
        check_roundtrip(t, rnd, n);
        check_roundtrip(tl, rnd, n);
    }
    hm_tokenizer_free(tl);
    hm_tokenizer_data_free(dl);
    hm_tokenizer_free(t);
    hm_tokenizer_data_free(d);
    free(text);
}
END_TEST

/* Random vocabularies: tokens made by joining two earlier tokens, merges (gpt2) in a
 * random order and random scores (llama); whatever the ranks, any bytes round-trip and
 * no special token appears. */
START_TEST(test_random_vocab)
{
    static const char alphabet[] = "ab \n\xc3\xa9\xe6\x97\xa5";
    struct hm_tokenizer_data *d;
    struct hm_tokenizer *t;
    char buf[512], text[600];
    uint32_t i, j, a, b, n0;
    int kind, iter;
    size_t n, k;

    srand(7);
    for (iter = 0; iter < 6; iter++) {
        for (kind = 0; kind < 2; kind++) {
            if (kind == 0) {
                ck_assert_int_eq(hm_tokenizer_data_default(258, &d), HM_OK);
            } else {
                char c[2] = {0, 0};
                d = llama_base(true);
                data_add(d, "\xe2\x96\x81", HM_TOKEN_NORMAL, 0);
                for (k = 0; k < 4; k++) {
                    c[0] = "ab\n!"[k];
                    data_add(d, c, HM_TOKEN_NORMAL, (float)(rand() % 5));
                }
                data_add(d, "\xc3\xa9", HM_TOKEN_NORMAL, 1);
            }
            n0 = kind == 0 ? 'a' : d->n_tokens - 6; /* join from here on */
            for (i = 0; i < 150; i++) {
                a = n0 + (uint32_t)rand() % (d->n_tokens - n0);
                b = n0 + (uint32_t)rand() % (d->n_tokens - n0);
                if (d->token_type[a] != HM_TOKEN_NORMAL || d->token_type[b] != HM_TOKEN_NORMAL ||
                    strlen(d->tokens[a]) + strlen(d->tokens[b]) >= 40)
                    continue;
                snprintf(buf, sizeof(buf), "%s%s", d->tokens[a], d->tokens[b]);
                for (j = 0; j < d->n_tokens && strcmp(d->tokens[j], buf) != 0; j++)
                    ;
                if (j < d->n_tokens)
                    continue;
                data_add(d, buf, HM_TOKEN_NORMAL, (float)(rand() % 20) - 10);
                if (kind == 0) {
                    snprintf(buf, sizeof(buf), "%s %s", d->tokens[a], d->tokens[b]);
                    data_add_merge(d, buf);
                }
            }
            for (i = d->n_merges; i > 1; i--) { /* shuffle the ranks */
                char *tmp = d->merges[i - 1];
                j = (uint32_t)rand() % i;
                d->merges[i - 1] = d->merges[j];
                d->merges[j] = tmp;
            }
            t = load_ok(d);
            for (i = 0; i < 40; i++) {
                n = (size_t)(rand() % (int)sizeof(text));
                for (k = 0; k < n; k++)
                    text[k] = rand() % 8 ? alphabet[rand() % (int)(sizeof(alphabet) - 1)]
                                         : (char)(rand() % 256);
                check_roundtrip(t, text, n);
            }
            hm_tokenizer_free(t);
            hm_tokenizer_data_free(d);
        }
    }
}
END_TEST

/* ---- Limits ------------------------------------------------------------------------- */

START_TEST(test_limits)
{
    struct hm_tokenizer_data *d;
    struct hm_tokenizer *t;
    struct hm_errmsg em = {{0}};
    char *big;
    size_t n = 200000, i;

    ck_assert_int_eq(hm_tokenizer_data_default(257, &d), HM_EINVAL);
    ck_assert_ptr_null(d);
    ck_assert_int_eq(hm_bpe_train("aaaa", 4, 1u << 30, &d, &em), HM_ETOOBIG);
    ck_assert_ptr_null(d);
    ck_assert_ptr_nonnull(strstr(em.text, "merges"));
    ck_assert_int_eq(hm_bpe_train("aaaa", 4, 0, &d, &em), HM_OK);
    ck_assert_uint_eq(d->n_tokens, 258);
    hm_tokenizer_data_free(d);
    hm_tokenizer_data_free(NULL);
    hm_tokenizer_free(NULL);

    /* one huge pre-token (merges inside one piece) and a long whitespace run */
    ck_assert_int_eq(hm_bpe_train("aaaa bbbb aaaa", 14, 10, &d, &em), HM_OK);
    t = load_ok(d);
    big = malloc(n);
    ck_assert_ptr_nonnull(big);
    for (i = 0; i < n; i++)
        big[i] = i < n / 2 ? 'a' : (i % 7 ? ' ' : '\n');
    check_roundtrip(t, big, n);
    {
        int32_t *ids;
        size_t m;
        ck_assert_int_eq(hm_tokenizer_encode(t, big, n / 2, 0, &ids, &m), HM_OK);
        ck_assert_uint_eq(m, n / 8); /* "aaaa" tokens */
        hm_free(ids);
    }
    free(big);
    hm_tokenizer_free(t);
    hm_tokenizer_data_free(d);
}
END_TEST

/* ---- Errors: bad vocabularies ------------------------------------------------------- */

enum bad {
    BAD_NO_MODEL, BAD_MODEL_NAME, BAD_COUNT, BAD_TOKENS_TYPE, BAD_TYPE_LEN, BAD_TYPE_VALUE,
    BAD_MERGE_TOKEN, BAD_MERGE_FORM, BAD_BOS, BAD_EOS_TYPE, BAD_NO_BYTE, BAD_NO_SCORES,
    BAD_SCORES_LEN, BAD_ADD_BOS_TYPE, BAD_ZERO_VOCAB, BAD_MERGES_TYPE, BAD_SCORES_NAN,
    BAD_UNK, BAD_TYPES_FLOAT, BAD_N
};

static int load_bad(enum bad which, struct hm_errmsg *em)
{
    struct hm_tokenizer_data *d;
    struct hm_gguf_writer *w;
    struct hm_gguf *g;
    struct hm_tokenizer *t = (struct hm_tokenizer *)&t;
    bool llama = which == BAD_NO_SCORES || which == BAD_SCORES_LEN || which == BAD_SCORES_NAN;
    uint32_t n_model, n_tok;
    int32_t ty[300];
    int rc;

    d = llama ? llama_vocab(true, -5) : hello_vocab(false);
    n_tok = d->n_tokens;
    n_model = which == BAD_COUNT ? n_tok + 1 : which == BAD_ZERO_VOCAB ? 0 : n_tok;
    if (which == BAD_SCORES_NAN)
        d->scores[7] = NAN;
    memcpy(ty, d->token_type, n_tok * sizeof(int32_t));
    if (which == BAD_TYPE_VALUE)
        ty[5] = 7;
    if (which == BAD_NO_BYTE)
        d->tokens['q'][0] = 'Q'; /* duplicates "Q": no token for byte 'q' */
    if (which == BAD_MERGE_TOKEN) {
        hm_free(d->merges[1]);
        d->merges[1] = hm_strdup("h zz");
    }
    if (which == BAD_MERGE_FORM) {
        hm_free(d->merges[1]);
        d->merges[1] = hm_strdup("he");
    }
    ck_assert_int_eq(hm_gguf_writer_new(&w), HM_OK);
    if (which == BAD_MODEL_NAME)
        hm_gguf_writer_add_str(w, "tokenizer.ggml.model", "bert");
    else if (which != BAD_NO_MODEL)
        hm_gguf_writer_add_str(w, "tokenizer.ggml.model", llama ? "llama" : "gpt2");
    if (which == BAD_TOKENS_TYPE)
        hm_gguf_writer_add_arr(w, "tokenizer.ggml.tokens", HM_GGUF_INT32, ty, n_tok);
    else
        hm_gguf_writer_add_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)d->tokens,
                                   n_tok);
    hm_gguf_writer_add_arr(w, "tokenizer.ggml.token_type",
                           which == BAD_TYPES_FLOAT ? HM_GGUF_FLOAT32 : HM_GGUF_INT32, ty,
                           which == BAD_TYPE_LEN ? n_tok - 1 : n_tok);
    if (llama && which != BAD_NO_SCORES)
        hm_gguf_writer_add_arr(w, "tokenizer.ggml.scores", HM_GGUF_FLOAT32, d->scores,
                               which == BAD_SCORES_LEN ? 3 : n_tok);
    if (which == BAD_MERGES_TYPE)
        hm_gguf_writer_add_arr(w, "tokenizer.ggml.merges", HM_GGUF_INT32, ty, 3);
    else if (!llama)
        hm_gguf_writer_add_arr_str(w, "tokenizer.ggml.merges", (const char *const *)d->merges,
                                   d->n_merges);
    if (which == BAD_UNK)
        hm_gguf_writer_add_u32(w, "tokenizer.ggml.unknown_token_id", 1u << 31);
    hm_gguf_writer_add_u32(w, "tokenizer.ggml.bos_token_id", which == BAD_BOS ? n_tok : 1);
    if (which == BAD_EOS_TYPE)
        hm_gguf_writer_add_str(w, "tokenizer.ggml.eos_token_id", "2");
    if (which == BAD_ADD_BOS_TYPE)
        hm_gguf_writer_add_u32(w, "tokenizer.ggml.add_bos_token", 1);
    ck_assert_int_eq(writer_open(w, &g, em), HM_OK);
    rc = hm_tokenizer_from_gguf(g, n_model, &t, em);
    if (rc < 0)
        ck_assert_ptr_null(t);
    hm_tokenizer_free(t);
    hm_gguf_free(g);
    hm_gguf_writer_free(w);
    hm_tokenizer_data_free(d);
    return rc;
}

START_TEST(test_bad_vocab)
{
    static const struct {
        int rc;
        const char *needle;
    } want[BAD_N] = {
        [BAD_NO_MODEL] = {HM_EFORMAT, "tokenizer.ggml.model: missing"},
        [BAD_MODEL_NAME] = {HM_EUNSUPPORTED, "'bert'"},
        [BAD_COUNT] = {HM_EFORMAT, "tokenizer.ggml.tokens: 263 tokens, expected 264"},
        [BAD_TOKENS_TYPE] = {HM_EFORMAT, "tokenizer.ggml.tokens: not an array of strings"},
        [BAD_TYPE_LEN] = {HM_EFORMAT, "tokenizer.ggml.token_type: 262 entries"},
        [BAD_TYPE_VALUE] = {HM_EFORMAT, "token 5 has invalid type 7"},
        [BAD_MERGE_TOKEN] = {HM_EFORMAT, "tokenizer.ggml.merges: merge 1 (\"h zz\")"},
        [BAD_MERGE_FORM] = {HM_EFORMAT, "merge 1 is not"},
        [BAD_BOS] = {HM_EFORMAT, "tokenizer.ggml.bos_token_id: token id 263 out of range"},
        [BAD_EOS_TYPE] = {HM_EFORMAT, "tokenizer.ggml.eos_token_id"},
        [BAD_NO_BYTE] = {HM_EFORMAT, "byte 0x71"},
        [BAD_NO_SCORES] = {HM_EFORMAT, "tokenizer.ggml.scores: missing"},
        [BAD_SCORES_LEN] = {HM_EFORMAT, "tokenizer.ggml.scores: 3 entries"},
        [BAD_ADD_BOS_TYPE] = {HM_EFORMAT, "tokenizer.ggml.add_bos_token: not a bool"},
        [BAD_ZERO_VOCAB] = {HM_ETOOBIG, "vocabulary of 0 tokens"},
        [BAD_MERGES_TYPE] = {HM_EFORMAT, "tokenizer.ggml.merges: not an array of strings"},
        [BAD_SCORES_NAN] = {HM_EFORMAT, "tokenizer.ggml.scores: score of token 7 is NaN"},
        [BAD_UNK] = {HM_EFORMAT, "tokenizer.ggml.unknown_token_id: token id 2147483648 out"},
        [BAD_TYPES_FLOAT] = {HM_EFORMAT, "tokenizer.ggml.token_type: not an array of integers"},
    };
    struct hm_errmsg em;
    int i, rc;

    for (i = 0; i < BAD_N; i++) {
        memset(&em, 0, sizeof(em));
        rc = load_bad((enum bad)i, &em);
        ck_assert_msg(rc == want[i].rc, "case %d: rc %d (%s), want %d", i, rc, em.text,
                      want[i].rc);
        ck_assert_msg(strstr(em.text, want[i].needle), "case %d: message '%s' lacks '%s'", i,
                      em.text, want[i].needle);
    }
}
END_TEST

/* ---- OOM ---------------------------------------------------------------------------- */

START_TEST(test_oom)
{
    static const char text[] = "Hello world's 123 test!!  \n x h\xc3\xa9llo \xff<|eos|>";
    struct hm_tokenizer_data *d = NULL, *tr;
    struct hm_gguf_writer *w;
    struct hm_gguf *g, *gl;
    struct hm_tokenizer *t = NULL, *tl;
    struct hm_errmsg em = {{0}};
    int32_t *ids;
    size_t n, olen;
    char *out;
    long k;
    int rc, kind;

    for (k = 1;; k++) { /* training */
        hm_alloc_fail_after(k);
        rc = hm_bpe_train(text, sizeof(text) - 1, 20, &tr, &em);
        hm_alloc_fail_after(0);
        if (rc == HM_OK)
            break;
        ck_assert_int_eq(rc, HM_ENOMEM);
        ck_assert_ptr_null(tr);
    }
    for (k = 1;; k++) { /* default vocabulary and padding */
        hm_alloc_fail_after(k);
        rc = hm_tokenizer_data_default(300, &d);
        if (rc == HM_OK)
            rc = hm_tokenizer_data_pad(d, 310);
        hm_alloc_fail_after(0);
        if (rc == HM_OK)
            break;
        ck_assert_int_eq(rc, HM_ENOMEM);
        hm_tokenizer_data_free(d);
    }
    ck_assert_uint_eq(d->n_tokens, 310);
    hm_tokenizer_data_free(d);
    ck_assert_int_eq(hm_tokenizer_data_pad(tr, 300), HM_OK);
    d = llama_from_trained(tr);
    for (kind = 0; kind < 2; kind++) {
        ck_assert_int_eq(hm_gguf_writer_new(&w), HM_OK);
        ck_assert_int_eq(hm_tokenizer_data_write(kind ? d : tr, w), HM_OK);
        ck_assert_int_eq(writer_open(w, kind ? &gl : &g, &em), HM_OK);
        hm_gguf_writer_free(w);
    }
    for (kind = 0; kind < 2; kind++) {
        for (k = 1;; k++) { /* loading */
            hm_alloc_fail_after(k);
            rc = hm_tokenizer_from_gguf(kind ? gl : g, kind ? d->n_tokens : tr->n_tokens,
                                        kind ? &tl : &t, &em);
            hm_alloc_fail_after(0);
            if (rc == HM_OK)
                break;
            ck_assert_int_eq(rc, HM_ENOMEM);
        }
        for (k = 1;; k++) { /* encoding and decoding */
            hm_alloc_fail_after(k);
            rc = hm_tokenizer_encode(kind ? tl : t, text, sizeof(text) - 1,
                                     HM_TOK_ADD_BOS | HM_TOK_PARSE_SPECIAL, &ids, &n);
            if (rc == HM_OK) {
                rc = hm_tokenizer_decode(kind ? tl : t, ids, n, true, &out, &olen);
                hm_free(ids);
                if (rc == HM_OK)
                    hm_free(out);
            }
            hm_alloc_fail_after(0);
            if (rc == HM_OK)
                break;
            ck_assert_int_eq(rc, HM_ENOMEM);
        }
    }
    hm_tokenizer_free(t);
    hm_tokenizer_free(tl);
    hm_gguf_free(g);
    hm_gguf_free(gl);
    hm_tokenizer_data_free(tr);
    hm_tokenizer_data_free(d);
}
END_TEST

static Suite *tokenizer_suite(void)
{
    Suite *s = suite_create("tokenizer");
    TCase *core = tcase_create("core"), *limits = tcase_create("limits"),
          *errors = tcase_create("errors"), *oom = tcase_create("oom");

    tcase_set_timeout(core, 60);
    tcase_add_test(core, test_presplit);
    tcase_add_test(core, test_unicode_classes);
    tcase_add_test(core, test_byte_mapping);
    tcase_add_test(core, test_default_vocab);
    tcase_add_test(core, test_gpt2_merge_ranks);
    tcase_add_test(core, test_llama_spm);
    tcase_add_test(core, test_special_tokens);
    tcase_add_test(core, test_bos_defaults);
    tcase_add_test(core, test_utf8_stream);
    tcase_add_test(core, test_utf8_stream_random);
    tcase_add_test(core, test_train_tiebreak);
    tcase_add_test(core, test_train_shakespeare);
    tcase_add_test(core, test_random_vocab);
    suite_add_tcase(s, core);
    tcase_add_test(limits, test_limits);
    suite_add_tcase(s, limits);
    tcase_add_test(errors, test_bad_vocab);
    suite_add_tcase(s, errors);
    tcase_set_timeout(oom, 60);
    tcase_add_test(oom, test_oom);
    suite_add_tcase(s, oom);
    return s;
}

int main(void)
{
    return hm_test_run(tokenizer_suite(), CK_NORMAL);
}
