/*
 * tokenizer.c - gpt2 byte-level BPE and llama SentencePiece BPE tokenizers built from
 * the tokenizer.ggml.* GGUF keys, and the plain-array vocabulary (hm_tokenizer_data)
 * written into GGUF files (include/hm/tokenizer.h; spec 10, 12.1, 12.11).
 *
 * DESIGN
 * - A loaded tokenizer is immutable and may be shared by any number of threads.
 * - Token texts are copied out of the GGUF into one pool (text_pool); their decoded
 *   bytes (spec 12.1) are computed once at load into bytes_pool. Decoded bytes are never
 *   longer than the text, so both pools have the same size.
 * - Lookups: text -> id is an open-addressing hash table (first id wins for duplicate
 *   texts); gpt2 merges are a hash table (left id, right id) -> (rank, result id).
 * - gpt2 encode: pre-split (unicode.c), each byte of a piece starts as its byte token,
 *   then the adjacent pair with the lowest merge rank (leftmost on ties) is merged until
 *   none is left, using a binary heap of candidate pairs validated when popped.
 * - llama encode: spaces become U+2581 and a space is prefixed to each text fragment
 *   that starts the input or follows a special token (llama.cpp); symbols start as
 *   UTF-8 characters (an invalid byte is a symbol of its own) and the adjacent pair
 *   whose concatenation is a normal token with the highest score (leftmost on ties) is
 *   merged first. A final symbol that is not a normal token falls back to <0xNN> byte
 *   tokens, or to the unknown token if the byte has none. SentencePiece has no pre-split,
 *   so the text is cut between two characters that are adjacent in no normal token (no
 *   merge can cross there) and the parts are merged independently: the same result as
 *   one big heap (the merge order restricted to a part is unchanged), 10x faster.
 * - Control and user-defined tokens are matched only with HM_TOK_PARSE_SPECIAL (longest
 *   match first); merges never produce them, so plain text never yields them.
 */
#include "hm/tokenizer.h"

#include "hm/alloc.h"
#include "hm/err.h"
#include "hm/gguf.h"
#include "unicode.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* Limits for model-file input. */
#define MAX_VOCAB (1u << 22)         /* tokens */
#define MAX_TOKEN_LEN 65536u         /* bytes of one token's text */
#define MAX_TEXT_POOL (1u << 30)     /* bytes of all token texts */
#define MAX_MERGES (1u << 22)

#define K_MODEL "tokenizer.ggml.model"
#define K_TOKENS "tokenizer.ggml.tokens"
#define K_TYPES "tokenizer.ggml.token_type"
#define K_SCORES "tokenizer.ggml.scores"
#define K_MERGES "tokenizer.ggml.merges"
#define K_BOS "tokenizer.ggml.bos_token_id"
#define K_EOS "tokenizer.ggml.eos_token_id"
#define K_UNK "tokenizer.ggml.unknown_token_id"
#define K_ADD_BOS "tokenizer.ggml.add_bos_token"
#define K_ADD_SPACE "tokenizer.ggml.add_space_prefix"

struct merge_slot {
    uint64_t key;   /* (left << 32) | right; UINT64_MAX = empty */
    int32_t rank;
    int32_t result;
};

struct hm_tokenizer {
    enum hm_tok_kind kind;
    uint32_t n_vocab;
    char *text_pool;       /* every token text, each NUL-terminated */
    uint32_t *text_off;    /* n_vocab: offset into text_pool */
    uint32_t *text_len;    /* n_vocab */
    uint8_t *bytes_pool;   /* decoded bytes (spec 12.1) */
    uint32_t *bytes_off;   /* n_vocab */
    uint32_t *bytes_len;   /* n_vocab */
    uint8_t *type;         /* n_vocab: enum hm_token_type */
    float *scores;         /* n_vocab (llama) or NULL */
    int32_t bos, eos, unk; /* -1 = none */
    bool add_bos;
    bool add_space_prefix; /* llama */
    uint32_t *map;         /* text -> id + 1 (0 = empty); map_mask + 1 slots */
    uint32_t map_mask;
    struct merge_slot *merges; /* gpt2; merge_mask + 1 slots, or NULL */
    uint32_t merge_mask;
    int32_t byte_id[256];  /* gpt2: token of byte b; llama: <0xNN> token or -1 */
    /* llama: set of character pairs (c1, c2) adjacent inside some normal token; between
     * two characters not in it no merge can happen, so the text is cut there into parts
     * merged independently (same result, small heaps). Keys are adj_key() values. */
    uint64_t *adj;
    uint32_t adj_mask;
    /* special tokens (control, user-defined) for HM_TOK_PARSE_SPECIAL */
    uint32_t n_special;
    uint32_t *special_lens; /* distinct text lengths, longest first */
    uint32_t n_special_lens;
    uint8_t special_first[256]; /* 1 if some special token starts with this byte */
};

/* ---- Hashing ------------------------------------------------------------------------ */

static uint32_t table_size(uint64_t n)
{
    uint32_t cap = 16;
    while (cap < 2 * n)
        cap <<= 1;
    return cap;
}

static int32_t map_find(const struct hm_tokenizer *t, const void *text, size_t len)
{
    uint32_t i = (uint32_t)hm__hash_bytes(text, len) & t->map_mask, id;

    while ((id = t->map[i]) != 0) {
        id--;
        if (t->text_len[id] == len && memcmp(t->text_pool + t->text_off[id], text, len) == 0)
            return (int32_t)id;
        i = (i + 1) & t->map_mask;
    }
    return -1;
}

/* Inserts id unless its text is already present (first id wins). */
static void map_insert(struct hm_tokenizer *t, uint32_t id)
{
    const char *text = t->text_pool + t->text_off[id];
    uint32_t len = t->text_len[id], i = (uint32_t)hm__hash_bytes(text, len) & t->map_mask, o;

    while ((o = t->map[i]) != 0) {
        o--;
        if (t->text_len[o] == len && memcmp(t->text_pool + t->text_off[o], text, len) == 0)
            return;
        i = (i + 1) & t->map_mask;
    }
    t->map[i] = id + 1;
}

static const struct merge_slot *merge_find(const struct hm_tokenizer *t, int32_t l, int32_t r)
{
    uint64_t key = ((uint64_t)(uint32_t)l << 32) | (uint32_t)r;
    uint32_t i = (uint32_t)hm__hash_u64(key) & t->merge_mask;

    while (t->merges[i].key != UINT64_MAX) {
        if (t->merges[i].key == key)
            return &t->merges[i];
        i = (i + 1) & t->merge_mask;
    }
    return NULL;
}

/* Inserts unless present (the first, lowest rank, wins). */
static void merge_insert(struct hm_tokenizer *t, int32_t l, int32_t r, int32_t rank, int32_t res)
{
    uint64_t key = ((uint64_t)(uint32_t)l << 32) | (uint32_t)r;
    uint32_t i = (uint32_t)hm__hash_u64(key) & t->merge_mask;

    while (t->merges[i].key != UINT64_MAX) {
        if (t->merges[i].key == key)
            return;
        i = (i + 1) & t->merge_mask;
    }
    t->merges[i].key = key;
    t->merges[i].rank = rank;
    t->merges[i].result = res;
}

/* Character at s[0..len) as a code point, an invalid byte b as 0x110000 + b; *n = its
 * length. Keys of adjacent characters are never 0. */
static uint32_t char_code(const uint8_t *s, size_t len, size_t *n)
{
    uint32_t cp;

    *n = hm__utf8_decode(s, len, &cp);
    if (*n == 0) {
        *n = 1;
        return 0x110000u + s[0];
    }
    return cp;
}

static uint64_t adj_key(uint32_t c1, uint32_t c2)
{
    return (((uint64_t)c1 << 21) | c2) + 1;
}

static bool adj_has(const struct hm_tokenizer *t, uint64_t key)
{
    uint32_t i = (uint32_t)hm__hash_u64(key) & t->adj_mask;

    while (t->adj[i] != 0) {
        if (t->adj[i] == key)
            return true;
        i = (i + 1) & t->adj_mask;
    }
    return false;
}

static void adj_insert(struct hm_tokenizer *t, uint64_t key)
{
    uint32_t i = (uint32_t)hm__hash_u64(key) & t->adj_mask;

    while (t->adj[i] != 0) {
        if (t->adj[i] == key)
            return;
        i = (i + 1) & t->adj_mask;
    }
    t->adj[i] = key;
}

/* Fills adj from the normal tokens (llama). */
static int build_adj(struct hm_tokenizer *t)
{
    uint64_t total = 0;
    uint32_t id, c1, c2;
    const uint8_t *s;
    size_t i, k, len;

    for (id = 0; id < t->n_vocab; id++)
        if (t->type[id] == HM_TOKEN_NORMAL && t->text_len[id] > 1)
            total += t->text_len[id] - 1;
    t->adj_mask = table_size(total) - 1;
    t->adj = hm_calloc((size_t)t->adj_mask + 1, sizeof(uint64_t));
    if (!t->adj)
        return HM_ENOMEM;
    for (id = 0; id < t->n_vocab; id++) {
        if (t->type[id] != HM_TOKEN_NORMAL)
            continue;
        s = (const uint8_t *)t->text_pool + t->text_off[id];
        len = t->text_len[id];
        if (len == 0)
            continue;
        c1 = char_code(s, len, &k);
        for (i = k; i < len; i += k) {
            c2 = char_code(s + i, len - i, &k);
            adj_insert(t, adj_key(c1, c2));
            c1 = c2;
        }
    }
    return HM_OK;
}

/* ---- Accessors ---------------------------------------------------------------------- */

void hm_tokenizer_free(struct hm_tokenizer *t)
{
    if (!t)
        return;
    hm_free(t->text_pool);
    hm_free(t->text_off);
    hm_free(t->text_len);
    hm_free(t->bytes_pool);
    hm_free(t->bytes_off);
    hm_free(t->bytes_len);
    hm_free(t->type);
    hm_free(t->scores);
    hm_free(t->map);
    hm_free(t->merges);
    hm_free(t->special_lens);
    hm_free(t->adj);
    hm_free(t);
}

enum hm_tok_kind hm_tokenizer_kind(const struct hm_tokenizer *t)
{
    return t->kind;
}

uint32_t hm_tokenizer_n_vocab(const struct hm_tokenizer *t)
{
    return t->n_vocab;
}

int32_t hm_tokenizer_bos(const struct hm_tokenizer *t)
{
    return t->bos;
}

int32_t hm_tokenizer_eos(const struct hm_tokenizer *t)
{
    return t->eos;
}

bool hm_tokenizer_add_bos(const struct hm_tokenizer *t)
{
    return t->add_bos;
}

enum hm_token_type hm_tokenizer_token_type(const struct hm_tokenizer *t, int32_t id)
{
    if (id < 0 || (uint32_t)id >= t->n_vocab)
        return HM_TOKEN_UNUSED;
    return (enum hm_token_type)t->type[id];
}

const char *hm_tokenizer_token_text(const struct hm_tokenizer *t, int32_t id)
{
    if (id < 0 || (uint32_t)id >= t->n_vocab)
        return "";
    return t->text_pool + t->text_off[id];
}

int32_t hm_tokenizer_find(const struct hm_tokenizer *t, const char *text, size_t len)
{
    return map_find(t, text, len);
}

const uint8_t *hm_tokenizer_token_bytes(const struct hm_tokenizer *t, int32_t id, size_t *len)
{
    if (id < 0 || (uint32_t)id >= t->n_vocab) {
        *len = 0;
        return t->bytes_pool; /* any valid pointer */
    }
    *len = t->bytes_len[id];
    return t->bytes_pool + t->bytes_off[id];
}

/* ---- Loading ------------------------------------------------------------------------ */

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* The byte of a "<0xNN>" text, or -1. */
static int byte_token_value(const char *s, size_t len)
{
    int hi, lo;

    if (len != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>')
        return -1;
    hi = hexval(s[3]);
    lo = hexval(s[4]);
    if (hi < 0 || lo < 0)
        return -1;
    return hi * 16 + lo;
}

/* Decoded bytes of token text s (spec 12.1) into out (room for len bytes). */
static uint32_t decode_text(enum hm_tok_kind kind, const char *text, size_t len, uint8_t *out)
{
    const uint8_t *s = (const uint8_t *)text;
    size_t i = 0, n, o = 0;
    uint32_t cp;
    int b;

    if (kind == HM_TOK_LLAMA) {
        b = byte_token_value(text, len);
        if (b >= 0) {
            out[0] = (uint8_t)b;
            return 1;
        }
        while (i < len) {
            if (i + 3 <= len && s[i] == 0xe2 && s[i + 1] == 0x96 && s[i + 2] == 0x81) {
                out[o++] = ' ';
                i += 3;
            } else {
                out[o++] = s[i++];
            }
        }
        return (uint32_t)o;
    }
    while (i < len) {
        n = hm__utf8_decode(s + i, len - i, &cp);
        if (n == 0) { /* not UTF-8: the byte stands for itself */
            out[o++] = s[i++];
            continue;
        }
        b = hm__gpt2_cp_to_byte(cp);
        if (b >= 0) {
            out[o++] = (uint8_t)b;
        } else {
            memcpy(out + o, s + i, n);
            o += n;
        }
        i += n;
    }
    return (uint32_t)o;
}

static bool is_special_type(uint8_t ty)
{
    return ty == HM_TOKEN_CONTROL || ty == HM_TOKEN_USER_DEFINED;
}

/* Reads integer element i of a packed little-endian array of type et. */
static bool arr_int(enum hm_gguf_type et, const void *data, uint64_t i, int64_t *v)
{
    const uint8_t *p = data;
    uint8_t u8;
    int8_t i8;
    uint16_t u16;
    int16_t i16;
    uint32_t u32;
    int32_t i32;
    uint64_t u64;

    switch (et) {
    case HM_GGUF_UINT8:
        memcpy(&u8, p + i, 1);
        *v = u8;
        return true;
    case HM_GGUF_INT8:
        memcpy(&i8, p + i, 1);
        *v = i8;
        return true;
    case HM_GGUF_UINT16:
        memcpy(&u16, p + 2 * i, 2);
        *v = u16;
        return true;
    case HM_GGUF_INT16:
        memcpy(&i16, p + 2 * i, 2);
        *v = i16;
        return true;
    case HM_GGUF_UINT32:
        memcpy(&u32, p + 4 * i, 4);
        *v = u32;
        return true;
    case HM_GGUF_INT32:
        memcpy(&i32, p + 4 * i, 4);
        *v = i32;
        return true;
    case HM_GGUF_UINT64:
        memcpy(&u64, p + 8 * i, 8);
        *v = u64 > INT64_MAX ? INT64_MAX : (int64_t)u64;
        return true;
    case HM_GGUF_INT64:
        memcpy(v, p + 8 * i, 8);
        return true;
    default:
        return false;
    }
}

/* Optional token id key: *id = -1 if absent. */
static int load_id(const struct hm_gguf *g, const char *key, uint32_t n_vocab, int32_t *id,
                   struct hm_errmsg *em)
{
    uint32_t v;
    int rc = hm_gguf_get_u32(g, key, &v);

    *id = -1;
    if (rc == HM_ENOENT)
        return HM_OK;
    if (rc < 0)
        return hm_errmsg_set(em, HM_EFORMAT, "%s: %s: not an unsigned 32-bit integer",
                             hm_gguf_path(g), key);
    if (v >= n_vocab)
        return hm_errmsg_set(em, HM_EFORMAT, "%s: %s: token id %u out of range (vocabulary %u)",
                             hm_gguf_path(g), key, v, n_vocab);
    *id = (int32_t)v;
    return HM_OK;
}

static int load_bool(const struct hm_gguf *g, const char *key, bool def, bool *out,
                     struct hm_errmsg *em)
{
    int rc = hm_gguf_get_bool(g, key, out);

    if (rc == HM_ENOENT) {
        *out = def;
        return HM_OK;
    }
    if (rc < 0)
        return hm_errmsg_set(em, HM_EFORMAT, "%s: %s: not a bool", hm_gguf_path(g), key);
    return HM_OK;
}

static int load_tokens(struct hm_tokenizer *t, const struct hm_gguf *g, struct hm_errmsg *em)
{
    const char *path = hm_gguf_path(g);
    uint64_t total = 0, i;
    const char *s;
    size_t len;
    uint32_t off = 0;

    for (i = 0; i < t->n_vocab; i++) {
        if (hm_gguf_get_arr_str(g, K_TOKENS, i, &s, &len) < 0)
            return hm_errmsg_set(em, HM_EFORMAT, "%s: %s: cannot read token %llu", path,
                                 K_TOKENS, (unsigned long long)i);
        if (len > MAX_TOKEN_LEN)
            return hm_errmsg_set(em, HM_ETOOBIG, "%s: %s: token %llu is %zu bytes long (max %u)",
                                 path, K_TOKENS, (unsigned long long)i, len, MAX_TOKEN_LEN);
        total += len + 1;
        if (total > MAX_TEXT_POOL)
            return hm_errmsg_set(em, HM_ETOOBIG, "%s: %s: token texts exceed %u bytes", path,
                                 K_TOKENS, MAX_TEXT_POOL);
    }
    t->text_pool = hm_malloc(total);
    t->bytes_pool = hm_malloc(total);
    if (!t->text_pool || !t->bytes_pool)
        return HM_ENOMEM;
    for (i = 0; i < t->n_vocab; i++) {
        hm_gguf_get_arr_str(g, K_TOKENS, i, &s, &len);
        memcpy(t->text_pool + off, s, len);
        t->text_pool[off + len] = '\0';
        t->text_off[i] = off;
        t->text_len[i] = (uint32_t)len;
        off += (uint32_t)len + 1;
    }
    return HM_OK;
}

static int load_types(struct hm_tokenizer *t, const struct hm_gguf *g, struct hm_errmsg *em)
{
    const char *path = hm_gguf_path(g);
    enum hm_gguf_type et;
    const void *data;
    uint64_t n, i;
    int64_t v;
    int rc = hm_gguf_get_arr(g, K_TYPES, &et, &n, &data);

    if (rc == HM_ENOENT) {
        memset(t->type, HM_TOKEN_NORMAL, t->n_vocab);
        return HM_OK;
    }
    if (rc < 0 || et == HM_GGUF_FLOAT32 || et == HM_GGUF_FLOAT64 || et == HM_GGUF_BOOL ||
        et == HM_GGUF_STRING || et == HM_GGUF_ARRAY || et > HM_GGUF_FLOAT64)
        return hm_errmsg_set(em, HM_EFORMAT, "%s: %s: not an array of integers", path, K_TYPES);
    if (n != t->n_vocab)
        return hm_errmsg_set(em, HM_EFORMAT, "%s: %s: %llu entries, expected %u (one per token)",
                             path, K_TYPES, (unsigned long long)n, t->n_vocab);
    for (i = 0; i < n; i++) {
        if (!arr_int(et, data, i, &v))
            return hm_errmsg_set(em, HM_EFORMAT, "%s: %s: not an array of integers", path,
                                 K_TYPES);
        if (v < HM_TOKEN_NORMAL || v > HM_TOKEN_BYTE)
            return hm_errmsg_set(em, HM_EFORMAT, "%s: %s: token %llu has invalid type %lld",
                                 path, K_TYPES, (unsigned long long)i, (long long)v);
        t->type[i] = (uint8_t)v;
    }
    return HM_OK;
}

static int load_scores(struct hm_tokenizer *t, const struct hm_gguf *g, struct hm_errmsg *em)
{
    const char *path = hm_gguf_path(g);
    enum hm_gguf_type et;
    const void *data;
    uint64_t n, i;
    double d;
    float f;
    int rc = hm_gguf_get_arr(g, K_SCORES, &et, &n, &data);

    if (rc == HM_ENOENT) {
        if (t->kind == HM_TOK_LLAMA)
            return hm_errmsg_set(em, HM_EFORMAT, "%s: %s: missing (required by llama)", path,
                                 K_SCORES);
        return HM_OK;
    }
    if (rc < 0 || (et != HM_GGUF_FLOAT32 && et != HM_GGUF_FLOAT64))
        return hm_errmsg_set(em, HM_EFORMAT, "%s: %s: not an array of floats", path, K_SCORES);
    if (n != t->n_vocab)
        return hm_errmsg_set(em, HM_EFORMAT, "%s: %s: %llu entries, expected %u (one per token)",
                             path, K_SCORES, (unsigned long long)n, t->n_vocab);
    t->scores = hm_mallocarray(t->n_vocab, sizeof(float));
    if (!t->scores)
        return HM_ENOMEM;
    for (i = 0; i < n; i++) {
        if (et == HM_GGUF_FLOAT32) {
            memcpy(&f, (const uint8_t *)data + 4 * i, 4);
        } else {
            memcpy(&d, (const uint8_t *)data + 8 * i, 8);
            f = (float)d;
        }
        if (isnan(f))
            return hm_errmsg_set(em, HM_EFORMAT, "%s: %s: score of token %llu is NaN", path,
                                 K_SCORES, (unsigned long long)i);
        t->scores[i] = f;
    }
    return HM_OK;
}

static int load_merges(struct hm_tokenizer *t, const struct hm_gguf *g, struct hm_errmsg *em)
{
    const char *path = hm_gguf_path(g), *s, *sp;
    enum hm_gguf_type et;
    uint64_t n, i;
    size_t len;
    int32_t l, r, res;
    char *cat = NULL;
    int rc = hm_gguf_get_arr_n(g, K_MERGES, &et, &n);

    if (rc == HM_ENOENT)
        n = 0;
    else if (rc < 0 || et != HM_GGUF_STRING)
        return hm_errmsg_set(em, HM_EFORMAT, "%s: %s: not an array of strings", path, K_MERGES);
    if (n > MAX_MERGES)
        return hm_errmsg_set(em, HM_ETOOBIG, "%s: %s: %llu merges (max %u)", path, K_MERGES,
                             (unsigned long long)n, MAX_MERGES);
    t->merge_mask = table_size(n) - 1;
    t->merges = hm_mallocarray((size_t)t->merge_mask + 1, sizeof(*t->merges));
    cat = hm_malloc(2 * (size_t)MAX_TOKEN_LEN + 1);
    if (!t->merges || !cat) {
        rc = HM_ENOMEM;
        goto out;
    }
    memset(t->merges, 0xff, ((size_t)t->merge_mask + 1) * sizeof(*t->merges));
    for (i = 0; i < n; i++) {
        rc = HM_EFORMAT;
        if (hm_gguf_get_arr_str(g, K_MERGES, i, &s, &len) < 0) {
            hm_errmsg_set(em, rc, "%s: %s: cannot read merge %llu", path, K_MERGES,
                          (unsigned long long)i);
            goto out;
        }
        sp = len > 1 ? memchr(s + 1, ' ', len - 1) : NULL;
        if (!sp || (size_t)(sp - s) + 1 >= len || len > 2 * (size_t)MAX_TOKEN_LEN + 1) {
            hm_errmsg_set(em, rc, "%s: %s: merge %llu is not \"left right\"", path, K_MERGES,
                          (unsigned long long)i);
            goto out;
        }
        l = map_find(t, s, (size_t)(sp - s));
        r = map_find(t, sp + 1, len - (size_t)(sp - s) - 1);
        memcpy(cat, s, (size_t)(sp - s));
        memcpy(cat + (sp - s), sp + 1, len - (size_t)(sp - s) - 1);
        res = map_find(t, cat, len - 1);
        if (l < 0 || r < 0 || res < 0) {
            hm_errmsg_set(em, rc, "%s: %s: merge %llu (\"%.*s\") refers to a token not in the "
                          "vocabulary", path, K_MERGES, (unsigned long long)i,
                          len > 64 ? 64 : (int)len, s);
            goto out;
        }
        /* a merge never produces a special token from plain text */
        if (!is_special_type(t->type[res]))
            merge_insert(t, l, r, (int32_t)i, res);
    }
    rc = HM_OK;
out:
    hm_free(cat);
    return rc;
}

static int build_lookups(struct hm_tokenizer *t, const struct hm_gguf *g, struct hm_errmsg *em)
{
    uint32_t i, len, n_lens = 0;
    uint8_t tmp[4], *seen;
    char name[8];
    size_t n;

    t->map_mask = table_size(t->n_vocab) - 1;
    t->map = hm_calloc((size_t)t->map_mask + 1, sizeof(uint32_t));
    if (!t->map)
        return HM_ENOMEM;
    for (i = 0; i < t->n_vocab; i++) {
        map_insert(t, i);
        t->bytes_off[i] = t->text_off[i];
        t->bytes_len[i] = t->type[i] == HM_TOKEN_CONTROL
                              ? 0
                              : decode_text(t->kind, t->text_pool + t->text_off[i],
                                            t->text_len[i], t->bytes_pool + t->text_off[i]);
        if (is_special_type(t->type[i]) && t->text_len[i] > 0)
            t->n_special++;
    }
    for (i = 0; i < 256; i++) {
        if (t->kind == HM_TOK_GPT2) {
            n = hm__utf8_encode(hm__gpt2_byte_to_cp((uint8_t)i), tmp);
            t->byte_id[i] = map_find(t, tmp, n);
            if (t->byte_id[i] < 0 || is_special_type(t->type[t->byte_id[i]]))
                return hm_errmsg_set(em, HM_EFORMAT, "%s: %s: the gpt2 vocabulary has no "
                                     "(normal) token for byte 0x%02X", hm_gguf_path(g), K_TOKENS,
                                     i);
        } else {
            snprintf(name, sizeof(name), "<0x%02X>", i);
            t->byte_id[i] = map_find(t, name, 6);
            if (t->byte_id[i] >= 0 && is_special_type(t->type[t->byte_id[i]]))
                t->byte_id[i] = -1;
        }
    }
    /* distinct lengths of special tokens, longest first (marked in a table by length) */
    if (t->n_special == 0)
        return HM_OK;
    seen = hm_calloc(MAX_TOKEN_LEN + 1, 1);
    t->special_lens = hm_mallocarray(t->n_special, sizeof(uint32_t));
    if (!seen || !t->special_lens) {
        hm_free(seen);
        return HM_ENOMEM;
    }
    for (i = 0; i < t->n_vocab; i++) {
        if (!is_special_type(t->type[i]) || t->text_len[i] == 0)
            continue;
        t->special_first[(uint8_t)t->text_pool[t->text_off[i]]] = 1;
        seen[t->text_len[i]] = 1;
    }
    for (len = MAX_TOKEN_LEN; len > 0; len--)
        if (seen[len])
            t->special_lens[n_lens++] = len;
    hm_free(seen);
    t->n_special_lens = n_lens;
    return HM_OK;
}

int hm_tokenizer_from_gguf(const struct hm_gguf *g, uint32_t n_vocab_model,
                           struct hm_tokenizer **out, struct hm_errmsg *em)
{
    const char *path = hm_gguf_path(g), *model;
    struct hm_tokenizer *t = NULL;
    enum hm_gguf_type et;
    size_t mlen;
    uint64_t n;
    uint32_t i;
    int rc;

    *out = NULL;
    rc = hm_gguf_get_str(g, K_MODEL, &model, &mlen);
    if (rc < 0) {
        rc = hm_errmsg_set(em, HM_EFORMAT, "%s: %s: %s", path, K_MODEL,
                           rc == HM_ENOENT ? "missing" : "not a string");
        goto out;
    }
    rc = hm_gguf_get_arr_n(g, K_TOKENS, &et, &n);
    if (rc < 0 || et != HM_GGUF_STRING) {
        rc = hm_errmsg_set(em, HM_EFORMAT, "%s: %s: %s", path, K_TOKENS,
                           rc == HM_ENOENT ? "missing" : "not an array of strings");
        goto out;
    }
    if (n_vocab_model == 0 || n_vocab_model > MAX_VOCAB) {
        rc = hm_errmsg_set(em, HM_ETOOBIG, "%s: vocabulary of %u tokens (must be 1..%u)", path,
                           n_vocab_model, MAX_VOCAB);
        goto out;
    }
    if (n != n_vocab_model) {
        rc = hm_errmsg_set(em, HM_EFORMAT, "%s: %s: %llu tokens, expected %u (the model's "
                           "vocabulary)", path, K_TOKENS, (unsigned long long)n, n_vocab_model);
        goto out;
    }
    rc = HM_ENOMEM;
    t = hm_calloc(1, sizeof(*t));
    if (!t)
        goto out;
    if (mlen == 4 && memcmp(model, "gpt2", 4) == 0) {
        t->kind = HM_TOK_GPT2;
    } else if (mlen == 5 && memcmp(model, "llama", 5) == 0) {
        t->kind = HM_TOK_LLAMA;
    } else {
        rc = hm_errmsg_set(em, HM_EUNSUPPORTED, "%s: %s: unsupported tokenizer '%.*s' (gpt2 or "
                           "llama)", path, K_MODEL, mlen > 32 ? 32 : (int)mlen, model);
        goto out;
    }
    t->n_vocab = n_vocab_model;
    t->text_off = hm_mallocarray(n_vocab_model, sizeof(uint32_t));
    t->text_len = hm_mallocarray(n_vocab_model, sizeof(uint32_t));
    t->bytes_off = hm_mallocarray(n_vocab_model, sizeof(uint32_t));
    t->bytes_len = hm_mallocarray(n_vocab_model, sizeof(uint32_t));
    t->type = hm_malloc(n_vocab_model);
    if (!t->text_off || !t->text_len || !t->bytes_off || !t->bytes_len || !t->type)
        goto out;
    if ((rc = load_tokens(t, g, em)) < 0 || (rc = load_types(t, g, em)) < 0 ||
        (rc = load_scores(t, g, em)) < 0 || (rc = build_lookups(t, g, em)) < 0)
        goto out;
    if (t->kind == HM_TOK_GPT2 && (rc = load_merges(t, g, em)) < 0)
        goto out;
    if (t->kind == HM_TOK_LLAMA && (rc = build_adj(t)) < 0)
        goto out;
    if ((rc = load_id(g, K_BOS, t->n_vocab, &t->bos, em)) < 0 ||
        (rc = load_id(g, K_EOS, t->n_vocab, &t->eos, em)) < 0 ||
        (rc = load_id(g, K_UNK, t->n_vocab, &t->unk, em)) < 0 ||
        (rc = load_bool(g, K_ADD_BOS, t->kind == HM_TOK_LLAMA, &t->add_bos, em)) < 0 ||
        (rc = load_bool(g, K_ADD_SPACE, true, &t->add_space_prefix, em)) < 0)
        goto out;
    for (i = 0; i < t->n_vocab && t->unk < 0; i++)
        if (t->type[i] == HM_TOKEN_UNKNOWN)
            t->unk = (int32_t)i;
    *out = t;
    t = NULL;
    rc = HM_OK;
out:
    if (rc == HM_ENOMEM && em)
        hm_errmsg_set(em, rc, "%s: out of memory loading the tokenizer", path);
    hm_tokenizer_free(t);
    return rc;
}

/* ---- Encoding ----------------------------------------------------------------------- */

struct idvec {
    int32_t *v;
    size_t n, cap;
};

static int idvec_push(struct idvec *iv, int32_t id)
{
    int32_t *p;
    size_t cap;

    if (iv->n == iv->cap) {
        cap = iv->cap ? 2 * iv->cap : 64;
        p = hm_realloc(iv->v, cap * sizeof(int32_t));
        if (!p)
            return HM_ENOMEM;
        iv->v = p;
        iv->cap = cap;
    }
    iv->v[iv->n++] = id;
    return HM_OK;
}

/* A symbol of the piece being merged: a byte range of the input and its token. */
struct sym {
    uint32_t start, len;
    int32_t id;          /* gpt2: token id; llama: token id or -1 if none */
    int32_t prev, next;  /* neighbours (-1 = none); len 0 = merged away */
};

/* A candidate merge of symbol left with its next one. */
struct cand {
    float score;   /* higher first (llama score, or -rank for gpt2) */
    int32_t left;  /* symbol index: leftmost first on ties */
    uint32_t size; /* bytes of the pair when pushed (to detect stale entries) */
    int32_t id;    /* resulting token */
};

struct work {
    struct sym *syms;
    struct cand *heap;
    size_t n_heap, cap; /* cap symbols, 2 * cap heap entries */
    uint8_t *buf;       /* llama: escaped fragment */
};

static bool cand_before(const struct cand *a, const struct cand *b)
{
    return a->score > b->score || (a->score == b->score && a->left < b->left);
}

static void heap_push(struct work *w, struct cand c)
{
    size_t i = w->n_heap++, p;

    while (i > 0) {
        p = (i - 1) / 2;
        if (!cand_before(&c, &w->heap[p]))
            break;
        w->heap[i] = w->heap[p];
        i = p;
    }
    w->heap[i] = c;
}

static struct cand heap_pop(struct work *w)
{
    struct cand top = w->heap[0], last = w->heap[--w->n_heap];
    size_t i = 0, c, n = w->n_heap;

    while ((c = 2 * i + 1) < n) {
        if (c + 1 < n && cand_before(&w->heap[c + 1], &w->heap[c]))
            c++;
        if (!cand_before(&w->heap[c], &last))
            break;
        w->heap[i] = w->heap[c];
        i = c;
    }
    if (n > 0)
        w->heap[i] = last;
    return top;
}

/* Makes room for n symbols and 2n heap entries (n - 1 initial candidates, and each
 * merge pops one and pushes at most two). */
static int work_reserve(struct work *w, size_t n)
{
    struct sym *s;
    struct cand *h;

    if (n <= w->cap)
        return HM_OK;
    s = hm_realloc(w->syms, n * sizeof(*s));
    if (!s)
        return HM_ENOMEM;
    w->syms = s;
    h = hm_realloc(w->heap, 2 * n * sizeof(*h));
    if (!h)
        return HM_ENOMEM;
    w->heap = h;
    w->cap = n;
    return HM_OK;
}

static void gpt2_try_pair(const struct hm_tokenizer *t, struct work *w, int32_t left)
{
    const struct sym *a = &w->syms[left], *b;
    const struct merge_slot *m;
    struct cand c;

    if (a->next < 0)
        return;
    b = &w->syms[a->next];
    m = merge_find(t, a->id, b->id);
    if (!m)
        return;
    c.score = -(float)m->rank;
    c.left = left;
    c.size = a->len + b->len;
    c.id = m->result;
    heap_push(w, c);
}

/* Merges symbols 0..n-1 (linked in order) until no candidate is left. */
static void merge_loop(const struct hm_tokenizer *t, struct work *w,
                       void (*try_pair)(const struct hm_tokenizer *, struct work *, int32_t))
{
    struct sym *a, *b;
    struct cand c;

    while (w->n_heap > 0) {
        c = heap_pop(w);
        a = &w->syms[c.left];
        if (a->len == 0 || a->next < 0)
            continue;
        b = &w->syms[a->next];
        if (a->len + b->len != c.size)
            continue; /* stale: one side changed since it was pushed */
        a->len += b->len;
        a->id = c.id;
        b->len = 0;
        a->next = b->next;
        if (a->next >= 0)
            w->syms[a->next].prev = c.left;
        if (a->prev >= 0)
            try_pair(t, w, a->prev);
        try_pair(t, w, c.left);
    }
}

static int gpt2_piece(const struct hm_tokenizer *t, struct work *w, const uint8_t *s, size_t n,
                      struct idvec *out)
{
    size_t i;
    int32_t k;
    int rc;

    if (n == 1)
        return idvec_push(out, t->byte_id[s[0]]);
    if ((rc = work_reserve(w, n)) < 0)
        return rc;
    for (i = 0; i < n; i++) {
        w->syms[i].start = (uint32_t)i;
        w->syms[i].len = 1;
        w->syms[i].id = t->byte_id[s[i]];
        w->syms[i].prev = (int32_t)i - 1;
        w->syms[i].next = i + 1 < n ? (int32_t)i + 1 : -1;
    }
    w->n_heap = 0;
    for (i = 0; i + 1 < n; i++)
        gpt2_try_pair(t, w, (int32_t)i);
    merge_loop(t, w, gpt2_try_pair);
    for (k = 0; k >= 0; k = w->syms[k].next)
        if ((rc = idvec_push(out, w->syms[k].id)) < 0)
            return rc;
    return HM_OK;
}

static int gpt2_fragment(const struct hm_tokenizer *t, struct work *w, const uint8_t *s, size_t n,
                         struct idvec *out)
{
    size_t i = 0, k;
    int rc;

    while (i < n) {
        k = hm__gpt2_next_piece(s + i, n - i);
        if ((rc = gpt2_piece(t, w, s + i, k, out)) < 0)
            return rc;
        i += k;
    }
    return HM_OK;
}

/* llama: a normal token for bytes s[0..n), or -1. */
static int32_t llama_normal(const struct hm_tokenizer *t, const uint8_t *s, size_t n)
{
    int32_t id = map_find(t, s, n);
    return id >= 0 && t->type[id] == HM_TOKEN_NORMAL ? id : -1;
}

static void llama_try_pair(const struct hm_tokenizer *t, struct work *w, int32_t left)
{
    const struct sym *a = &w->syms[left], *b;
    struct cand c;
    int32_t id;

    if (a->next < 0)
        return;
    b = &w->syms[a->next];
    id = llama_normal(t, w->buf + a->start, a->len + b->len);
    if (id < 0)
        return;
    c.score = t->scores[id];
    c.left = left;
    c.size = a->len + b->len;
    c.id = id;
    heap_push(w, c);
}

/* Merges the characters of w->buf[from..to) and appends their ids. */
static int llama_part(const struct hm_tokenizer *t, struct work *w, size_t from, size_t to,
                      struct idvec *out)
{
    const uint8_t *buf = w->buf;
    size_t i, nsym = 0, k;
    int32_t j, id;
    int rc;

    if ((rc = work_reserve(w, to - from)) < 0)
        return rc;
    for (i = from; i < to; i += k) {
        char_code(buf + i, to - i, &k);
        w->syms[nsym].start = (uint32_t)i;
        w->syms[nsym].len = (uint32_t)k;
        w->syms[nsym].id = -1; /* looked up at the end */
        w->syms[nsym].prev = (int32_t)nsym - 1;
        w->syms[nsym].next = (int32_t)nsym + 1;
        nsym++;
    }
    w->syms[nsym - 1].next = -1;
    w->n_heap = 0;
    for (i = 0; i + 1 < nsym; i++)
        llama_try_pair(t, w, (int32_t)i);
    merge_loop(t, w, llama_try_pair);
    for (j = 0; j >= 0; j = w->syms[j].next) {
        const struct sym *y = &w->syms[j];
        id = llama_normal(t, buf + y->start, y->len);
        if (id >= 0) {
            if ((rc = idvec_push(out, id)) < 0)
                return rc;
            continue;
        }
        for (i = 0; i < y->len; i++) { /* byte fallback, else unknown, else dropped */
            id = t->byte_id[buf[y->start + i]];
            if (id < 0)
                id = t->unk;
            if (id >= 0 && (rc = idvec_push(out, id)) < 0)
                return rc;
        }
    }
    return HM_OK;
}

static int llama_fragment(const struct hm_tokenizer *t, struct work *w, const uint8_t *s, size_t n,
                          bool prefix, struct idvec *out)
{
    size_t i, m = 0, k, part = 0;
    uint32_t c1 = 0, c2;
    uint8_t *buf;
    int rc;

    if (n == 0)
        return HM_OK;
    /* escape: ' ' -> U+2581 (3 bytes), with the optional leading space */
    buf = hm_realloc(w->buf, 3 * n + 3);
    if (!buf)
        return HM_ENOMEM;
    w->buf = buf;
    if (prefix) {
        memcpy(buf, "\xe2\x96\x81", 3);
        m = 3;
    }
    for (i = 0; i < n; i++) {
        if (s[i] == ' ') {
            memcpy(buf + m, "\xe2\x96\x81", 3);
            m += 3;
        } else {
            buf[m++] = s[i];
        }
    }
    /* cut where no normal token has the two characters side by side */
    for (i = 0; i < m; i += k) {
        c2 = char_code(buf + i, m - i, &k);
        if (i > part && !adj_has(t, adj_key(c1, c2))) {
            if ((rc = llama_part(t, w, part, i, out)) < 0)
                return rc;
            part = i;
        }
        c1 = c2;
    }
    return llama_part(t, w, part, m, out);
}

/* The special token starting at s[0..n), longest first: its id and length, or -1. */
static int32_t match_special(const struct hm_tokenizer *t, const uint8_t *s, size_t n,
                             size_t *len)
{
    uint32_t i;
    int32_t id;

    if (!t->special_first[s[0]])
        return -1;
    for (i = 0; i < t->n_special_lens; i++) {
        if (t->special_lens[i] > n)
            continue;
        id = map_find(t, s, t->special_lens[i]);
        if (id >= 0 && is_special_type(t->type[id])) {
            *len = t->special_lens[i];
            return id;
        }
    }
    return -1;
}

static int encode_fragment(const struct hm_tokenizer *t, struct work *w, const uint8_t *s,
                           size_t n, bool after_special, struct idvec *out)
{
    if (t->kind == HM_TOK_GPT2)
        return gpt2_fragment(t, w, s, n, out);
    return llama_fragment(t, w, s, n, after_special && t->add_space_prefix, out);
}

int hm_tokenizer_encode(const struct hm_tokenizer *t, const char *text, size_t len,
                        unsigned flags, int32_t **ids, size_t *n_ids)
{
    const uint8_t *s = (const uint8_t *)text;
    struct idvec out = {0};
    struct work w = {0};
    bool after_special = true; /* llama: the first fragment gets the space prefix */
    size_t i, start = 0, slen = 0;
    int32_t sid;
    int rc;

    *ids = NULL;
    *n_ids = 0;
    if (len > UINT32_MAX / 4) {
        rc = HM_ETOOBIG;
        goto out;
    }
    if (t->bos >= 0 && ((flags & HM_TOK_FORCE_BOS) || ((flags & HM_TOK_ADD_BOS) && t->add_bos)))
        if ((rc = idvec_push(&out, t->bos)) < 0)
            goto out;
    if ((flags & HM_TOK_PARSE_SPECIAL) && t->n_special > 0) {
        for (i = 0; i < len;) {
            sid = match_special(t, s + i, len - i, &slen);
            if (sid < 0) {
                i++;
                continue;
            }
            if (i > start) {
                rc = encode_fragment(t, &w, s + start, i - start, after_special, &out);
                if (rc < 0)
                    goto out;
            }
            if ((rc = idvec_push(&out, sid)) < 0)
                goto out;
            after_special = true;
            i += slen;
            start = i;
            continue;
        }
    }
    if (len > start && (rc = encode_fragment(t, &w, s + start, len - start, after_special, &out)) < 0)
        goto out;
    if (out.n == 0) { /* an owned, non-NULL result even when empty */
        if ((rc = idvec_push(&out, 0)) < 0)
            goto out;
        out.n = 0;
    }
    *ids = out.v;
    *n_ids = out.n;
    out.v = NULL;
    rc = HM_OK;
out:
    hm_free(out.v);
    hm_free(w.syms);
    hm_free(w.heap);
    hm_free(w.buf);
    return rc;
}

/* ---- Decoding ----------------------------------------------------------------------- */

int hm_tokenizer_decode(const struct hm_tokenizer *t, const int32_t *ids, size_t n_ids,
                        bool strip_leading_space, char **out, size_t *out_len)
{
    size_t total = 0, i, n, o = 0;
    const uint8_t *b;
    bool first = true;
    char *res;

    *out = NULL;
    *out_len = 0;
    for (i = 0; i < n_ids; i++) {
        hm_tokenizer_token_bytes(t, ids[i], &n);
        if (total + n < total || total + n == SIZE_MAX)
            return HM_ETOOBIG;
        total += n;
    }
    res = hm_malloc(total + 1);
    if (!res)
        return HM_ENOMEM;
    for (i = 0; i < n_ids; i++) {
        b = hm_tokenizer_token_bytes(t, ids[i], &n);
        if (n == 0)
            continue;
        if (first && strip_leading_space && t->kind == HM_TOK_LLAMA && b[0] == ' ') {
            b++;
            n--;
        }
        first = false;
        memcpy(res + o, b, n);
        o += n;
    }
    res[o] = '\0';
    *out = res;
    *out_len = o;
    return HM_OK;
}

/* ---- Vocabulary data ---------------------------------------------------------------- */

void hm_tokenizer_data_free(struct hm_tokenizer_data *d)
{
    uint32_t i;

    if (!d)
        return;
    if (d->tokens)
        for (i = 0; i < d->n_tokens; i++)
            hm_free(d->tokens[i]);
    if (d->merges)
        for (i = 0; i < d->n_merges; i++)
            hm_free(d->merges[i]);
    hm_free(d->tokens);
    hm_free(d->token_type);
    hm_free(d->scores);
    hm_free(d->merges);
    hm_free(d);
}

/* Grows the arrays of d to hold n tokens (n_tokens unchanged). */
static int data_reserve(struct hm_tokenizer_data *d, uint32_t n)
{
    char **tk;
    int32_t *ty;
    float *sc;

    tk = hm_realloc(d->tokens, (size_t)n * sizeof(char *));
    if (!tk)
        return HM_ENOMEM;
    d->tokens = tk;
    ty = hm_realloc(d->token_type, (size_t)n * sizeof(int32_t));
    if (!ty)
        return HM_ENOMEM;
    d->token_type = ty;
    if (d->scores) {
        sc = hm_realloc(d->scores, (size_t)n * sizeof(float));
        if (!sc)
            return HM_ENOMEM;
        d->scores = sc;
    }
    return HM_OK;
}

int hm_tokenizer_data_pad(struct hm_tokenizer_data *d, uint32_t n_vocab)
{
    uint32_t i, next = 0, n = d->n_tokens;
    char name[32];
    int rc;

    if (n_vocab < d->n_tokens || n_vocab > MAX_VOCAB)
        return HM_EINVAL;
    if (n_vocab == d->n_tokens)
        return HM_OK;
    if ((rc = data_reserve(d, n_vocab)) < 0)
        return rc;
    for (i = 0; i < d->n_tokens; i++)
        if (strncmp(d->tokens[i], "<|reserved_", 11) == 0)
            next++;
    for (i = n; i < n_vocab; i++) {
        snprintf(name, sizeof(name), "<|reserved_%u|>", next + (i - n));
        d->tokens[i] = hm_strdup(name);
        if (!d->tokens[i]) {
            while (i-- > n)
                hm_free(d->tokens[i]);
            return HM_ENOMEM;
        }
        d->token_type[i] = HM_TOKEN_CONTROL;
        if (d->scores)
            d->scores[i] = 0.0f;
    }
    d->n_tokens = n_vocab;
    return HM_OK;
}

int hm__tokenizer_data_bytes(struct hm_tokenizer_data **out)
{
    struct hm_tokenizer_data *d;
    uint8_t u[5];
    size_t n;
    int rc = HM_ENOMEM;
    uint32_t i;

    *out = NULL;
    d = hm_calloc(1, sizeof(*d));
    if (!d)
        return HM_ENOMEM;
    d->kind = HM_TOK_GPT2;
    d->bos = d->eos = -1;
    if ((rc = data_reserve(d, 256)) < 0)
        goto out;
    for (i = 0; i < 256; i++) {
        n = hm__utf8_encode(hm__gpt2_byte_to_cp((uint8_t)i), u);
        u[n] = '\0';
        d->tokens[i] = hm_strdup((const char *)u);
        if (!d->tokens[i]) {
            rc = HM_ENOMEM;
            goto out;
        }
        d->token_type[i] = HM_TOKEN_NORMAL;
        d->n_tokens = i + 1;
    }
    *out = d;
    d = NULL;
    rc = HM_OK;
out:
    hm_tokenizer_data_free(d);
    return rc;
}

int hm__tokenizer_data_add_specials(struct hm_tokenizer_data *d)
{
    static const char *const names[2] = {"<|bos|>", "<|eos|>"};
    uint32_t i, n = d->n_tokens;
    int rc;

    if ((rc = data_reserve(d, n + 2)) < 0)
        return rc;
    for (i = 0; i < 2; i++) {
        d->tokens[n + i] = hm_strdup(names[i]);
        if (!d->tokens[n + i]) {
            if (i == 1)
                hm_free(d->tokens[n]);
            return HM_ENOMEM;
        }
        d->token_type[n + i] = HM_TOKEN_CONTROL;
        if (d->scores)
            d->scores[n + i] = 0.0f;
    }
    d->n_tokens = n + 2;
    d->bos = (int32_t)n;
    d->eos = (int32_t)n + 1;
    d->add_bos = true;
    return HM_OK;
}

int hm_tokenizer_data_default(uint32_t n_vocab, struct hm_tokenizer_data **out)
{
    struct hm_tokenizer_data *d = NULL;
    int rc;

    *out = NULL;
    if (n_vocab < 258 || n_vocab > MAX_VOCAB)
        return HM_EINVAL;
    if ((rc = hm__tokenizer_data_bytes(&d)) < 0)
        return rc;
    if ((rc = hm__tokenizer_data_add_specials(d)) < 0 || (rc = hm_tokenizer_data_pad(d, n_vocab)) < 0) {
        hm_tokenizer_data_free(d);
        return rc;
    }
    *out = d;
    return HM_OK;
}

int hm_tokenizer_data_write(const struct hm_tokenizer_data *d, struct hm_gguf_writer *w)
{
    int rc;

    if (d->n_tokens == 0 || !d->tokens || !d->token_type)
        return HM_EINVAL;
    if ((rc = hm_gguf_writer_add_str(w, K_MODEL, d->kind == HM_TOK_LLAMA ? "llama" : "gpt2")) < 0 ||
        (rc = hm_gguf_writer_add_arr_str(w, K_TOKENS, (const char *const *)d->tokens,
                                         d->n_tokens)) < 0 ||
        (rc = hm_gguf_writer_add_arr(w, K_TYPES, HM_GGUF_INT32, d->token_type, d->n_tokens)) < 0)
        return rc;
    if (d->scores &&
        (rc = hm_gguf_writer_add_arr(w, K_SCORES, HM_GGUF_FLOAT32, d->scores, d->n_tokens)) < 0)
        return rc;
    if (d->merges && d->n_merges > 0 &&
        (rc = hm_gguf_writer_add_arr_str(w, K_MERGES, (const char *const *)d->merges,
                                         d->n_merges)) < 0)
        return rc;
    if (d->bos >= 0 && (rc = hm_gguf_writer_add_u32(w, K_BOS, (uint32_t)d->bos)) < 0)
        return rc;
    if (d->eos >= 0 && (rc = hm_gguf_writer_add_u32(w, K_EOS, (uint32_t)d->eos)) < 0)
        return rc;
    return hm_gguf_writer_add_bool(w, K_ADD_BOS, d->add_bos);
}
