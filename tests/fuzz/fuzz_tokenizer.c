/*
 * fuzz_tokenizer.c - libFuzzer target: bytes -> ids -> bytes through a gpt2 byte-level BPE
 * tokenizer and a llama SentencePiece-style one (both with a small vocabulary trained
 * once at start-up with hm_bpe_train on the text below).
 *
 * Properties: encode succeeds on any bytes, every id is in the vocabulary and not a
 * control token, decode(encode(s)) == s exactly (spec 12.1; for llama, U+2581 in s
 * comes back as a space); with BOS and special-token
 * parsing, ids stay in range and decoding succeeds; the input read as int32 ids (any
 * value) decodes without harm, and streaming those ids' bytes through hm_utf8_stream
 * yields valid UTF-8 only.
 */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "hm/alloc.h"
#include "hm/err.h"
#include "hm/gguf.h"
#include "hm/tokenizer.h"
#include "unicode.h" /* engine-internal: gpt2 byte <-> code point mapping */

#include "fuzz.h"

#define MAX_INPUT 16384

static const char train_text[] =
    "First Citizen: Before we proceed any further, hear me speak.\n"
    "All: Speak, speak. You are all resolved rather to die than to famish?\n"
    "The quick brown fox jumps over the lazy dog. THE QUICK BROWN FOX! 0123456789 1,234.5\n"
    "Le c\xc5\x93ur a ses raisons que la raison ne conna\xc3\xaet point. caf\xc3\xa9 na\xc3\xafve\n"
    "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e\xe3\x81\xae\xe6\x96\x87\xe7\xab\xa0\xe3\x80\x82 "
    "\xd0\x9f\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82, \xd0\xbc\xd0\xb8\xd1\x80! "
    "\xf0\x9f\x98\x80\xf0\x9f\x98\x80 emoji\n"
    "def main(argc, argv):\n    return 0  # it's, we'll, they're, I've, you'd\n"
    "<|bos|> hello <|eos|> world\t\ttabs  and   spaces\r\n";

static struct hm_tokenizer *tok_gpt2, *tok_llama;

static void data_add(struct hm_tokenizer_data *d, const char *text, int32_t type, float score)
{
    uint32_t n = d->n_tokens;
    char **tokens = hm_realloc(d->tokens, (n + 1) * sizeof(char *));
    int32_t *types;
    float *scores;

    FUZZ_ASSERT(tokens != NULL);
    d->tokens = tokens;
    types = hm_realloc(d->token_type, (n + 1) * sizeof(int32_t));
    FUZZ_ASSERT(types != NULL);
    d->token_type = types;
    scores = hm_realloc(d->scores, (n + 1) * sizeof(float));
    FUZZ_ASSERT(scores != NULL);
    d->scores = scores;
    d->scores[n] = score;
    d->tokens[n] = hm_strdup(text);
    FUZZ_ASSERT(d->tokens[n] != NULL);
    d->token_type[n] = type;
    d->n_tokens = n + 1;
}

static bool has_token(const struct hm_tokenizer_data *d, const char *text)
{
    uint32_t i;

    for (i = 0; i < d->n_tokens; i++)
        if (strcmp(d->tokens[i], text) == 0)
            return true;
    return false;
}

/* llama vocabulary: <unk> <s> </s>, <0x00>..<0xFF>, U+2581, printable ASCII, then the
 * trained gpt2 tokens that are valid UTF-8 (score -rank, spaces as U+2581). Owned. */
static struct hm_tokenizer_data *llama_from_trained(const struct hm_tokenizer_data *tr)
{
    struct hm_tokenizer_data *d = hm_calloc(1, sizeof(*d));
    char name[16], c[2] = {0, 0};
    uint8_t buf[512];
    uint32_t id, cp;
    size_t i, n, k;
    int b;

    FUZZ_ASSERT(d != NULL);
    d->kind = HM_TOK_LLAMA;
    data_add(d, "<unk>", HM_TOKEN_UNKNOWN, 0);
    data_add(d, "<s>", HM_TOKEN_CONTROL, 0);
    data_add(d, "</s>", HM_TOKEN_CONTROL, 0);
    d->bos = 1;
    d->eos = 2;
    d->add_bos = true;
    for (b = 0; b < 256; b++) {
        snprintf(name, sizeof(name), "<0x%02X>", b);
        data_add(d, name, HM_TOKEN_BYTE, 0);
    }
    data_add(d, "\xe2\x96\x81", HM_TOKEN_NORMAL, 0);
    for (b = 0x21; b < 0x7f; b++) {
        c[0] = (char)b;
        data_add(d, c, HM_TOKEN_NORMAL, 0);
    }
    for (id = 256; id < tr->n_tokens; id++) {
        const uint8_t *s = (const uint8_t *)tr->tokens[id];
        bool ok = true;

        if (tr->token_type[id] != HM_TOKEN_NORMAL)
            continue;
        n = 0;
        for (i = 0; s[i] && ok;) {
            k = hm__utf8_decode(s + i, strlen((const char *)s + i), &cp);
            b = k ? hm__gpt2_cp_to_byte(cp) : -1;
            if (b < 0 || n + 4 >= sizeof(buf)) {
                ok = false;
                break;
            }
            if (b == ' ') {
                memcpy(buf + n, "\xe2\x96\x81", 3);
                n += 3;
            } else {
                buf[n++] = (uint8_t)b;
            }
            i += k;
        }
        buf[n] = '\0';
        if (!ok || n == 0 || !hm_utf8_valid(buf, n) || has_token(d, (const char *)buf))
            continue;
        data_add(d, (const char *)buf, HM_TOKEN_NORMAL, -(float)id);
    }
    return d;
}

/* Writes d as a GGUF to a temporary file, opens it and builds the tokenizer. Owned. */
static struct hm_tokenizer *load(const struct hm_tokenizer_data *d)
{
    char path[] = "/tmp/hm_fuzz_tok_XXXXXX";
    struct hm_errmsg em = {{0}};
    struct hm_gguf_writer *w = NULL;
    struct hm_gguf *g = NULL;
    struct hm_tokenizer *t = NULL;
    int fd, rc;

    fd = mkstemp(path);
    FUZZ_ASSERT(fd >= 0);
    close(fd);
    FUZZ_ASSERT(hm_gguf_writer_new(&w) == HM_OK);
    FUZZ_ASSERT(hm_tokenizer_data_write(d, w) == HM_OK);
    rc = hm_gguf_writer_write(w, path, NULL, NULL, NULL, NULL, &em);
    hm_gguf_writer_free(w);
    if (rc == HM_OK)
        rc = hm_gguf_open(path, &g, &em);
    unlink(path);
    if (rc == HM_OK) {
        rc = hm_tokenizer_from_gguf(g, d->n_tokens, &t, &em);
        hm_gguf_free(g);
    }
    if (rc != HM_OK) {
        fprintf(stderr, "fuzz_tokenizer: cannot build the vocabulary: %s\n", em.text);
        abort();
    }
    return t;
}

int hm_fuzz_init(void)
{
    struct hm_errmsg em = {{0}};
    struct hm_tokenizer_data *d = NULL, *dl;

    if (tok_gpt2)
        return 0;
    if (hm_bpe_train(train_text, sizeof(train_text) - 1, 300, &d, &em) != HM_OK) {
        fprintf(stderr, "fuzz_tokenizer: hm_bpe_train: %s\n", em.text);
        abort();
    }
    dl = llama_from_trained(d);
    FUZZ_ASSERT(hm_tokenizer_data_pad(d, 640) == HM_OK);
    tok_gpt2 = load(d);
    tok_llama = load(dl);
    hm_tokenizer_data_free(d);
    hm_tokenizer_data_free(dl);
    return 0;
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    return hm_fuzz_init();
}

/* Explains a failed round trip on stderr: the tokenizer, the ids and both byte strings. */
static void dump_mismatch(const struct hm_tokenizer *t, const char *s, size_t len,
                          const int32_t *ids, size_t n, const char *out, size_t olen)
{
    size_t i;

    fprintf(stderr, "%s round trip: %zu bytes in, %zu out\n  in: ",
            hm_tokenizer_kind(t) == HM_TOK_GPT2 ? "gpt2" : "llama", len, olen);
    for (i = 0; i < len; i++)
        fprintf(stderr, "%02x", (unsigned char)s[i]);
    fprintf(stderr, "\n out: ");
    for (i = 0; i < olen; i++)
        fprintf(stderr, "%02x", (unsigned char)out[i]);
    fprintf(stderr, "\n ids:");
    for (i = 0; i < n; i++)
        fprintf(stderr, " %d'%s'", ids[i], hm_tokenizer_token_text(t, ids[i]));
    fprintf(stderr, "\n");
}

/* What decode(encode(s)) must give: s itself, except that a llama vocabulary decodes
 * U+2581 as a space (spec 12.1), so a literal U+2581 in s comes back as ' '. Owned. */
static char *expected_text(const struct hm_tokenizer *t, const char *s, size_t len,
                           size_t *wlen)
{
    char *w = hm_malloc(len + 1);
    size_t i, n = 0;

    FUZZ_ASSERT(w != NULL);
    for (i = 0; i < len; i++) {
        if (hm_tokenizer_kind(t) == HM_TOK_LLAMA && i + 3 <= len &&
            memcmp(s + i, "\xe2\x96\x81", 3) == 0) {
            w[n++] = ' ';
            i += 2;
        } else {
            w[n++] = s[i];
        }
    }
    w[n] = '\0';
    *wlen = n;
    return w;
}

static void roundtrip(const struct hm_tokenizer *t, const char *s, size_t len)
{
    uint32_t nv = hm_tokenizer_n_vocab(t);
    int32_t *ids = NULL;
    size_t n = 0, olen = 0, wlen, i;
    char *out = NULL, *want;

    FUZZ_ASSERT(hm_tokenizer_encode(t, s, len, 0, &ids, &n) == HM_OK);
    if (hm_tokenizer_kind(t) == HM_TOK_GPT2)
        FUZZ_ASSERT(n <= len); /* at least one byte per token */
    for (i = 0; i < n; i++) {
        FUZZ_ASSERT(ids[i] >= 0 && (uint32_t)ids[i] < nv);
        FUZZ_ASSERT(hm_tokenizer_token_type(t, ids[i]) != HM_TOKEN_CONTROL);
    }
    FUZZ_ASSERT(hm_tokenizer_decode(t, ids, n, true, &out, &olen) == HM_OK);
    want = expected_text(t, s, len, &wlen);
    if (olen != wlen || memcmp(out, want, wlen) != 0)
        dump_mismatch(t, s, len, ids, n, out, olen);
    FUZZ_ASSERT(olen == wlen);
    FUZZ_ASSERT(memcmp(out, want, wlen) == 0);
    FUZZ_ASSERT(out[olen] == '\0');
    hm_free(want);
    hm_free(out);
    hm_free(ids);

    /* with BOS and special-token parsing: ids in range, decoding succeeds */
    FUZZ_ASSERT(hm_tokenizer_encode(t, s, len, HM_TOK_FORCE_BOS | HM_TOK_PARSE_SPECIAL, &ids,
                                    &n) == HM_OK);
    FUZZ_ASSERT(n >= 1 && ids[0] == hm_tokenizer_bos(t));
    for (i = 0; i < n; i++)
        FUZZ_ASSERT(ids[i] >= 0 && (uint32_t)ids[i] < nv);
    FUZZ_ASSERT(hm_tokenizer_decode(t, ids, n, false, &out, &olen) == HM_OK);
    FUZZ_ASSERT(hm_tokenizer_kind(t) == HM_TOK_LLAMA || olen <= len);
    hm_free(out);
    hm_free(ids);
}

/* The input as little-endian int32 ids (any value): decode, and stream each id's bytes. */
static void decode_ids(const struct hm_tokenizer *t, const uint8_t *data, size_t size)
{
    size_t n = size / 4, i, olen = 0, k, blen;
    int32_t *ids = hm_mallocarray(n ? n : 1, sizeof(int32_t));
    uint8_t out[3 * (256 + 4)];
    struct hm_utf8_stream us;
    char *text = NULL;

    FUZZ_ASSERT(ids != NULL);
    for (i = 0; i < n; i++)
        ids[i] = (int32_t)((uint32_t)data[4 * i] | (uint32_t)data[4 * i + 1] << 8 |
                           (uint32_t)data[4 * i + 2] << 16 | (uint32_t)data[4 * i + 3] << 24);
    FUZZ_ASSERT(hm_tokenizer_decode(t, ids, n, false, &text, &olen) == HM_OK);
    FUZZ_ASSERT(text != NULL && text[olen] == '\0');
    hm_free(text);
    hm_utf8_stream_init(&us);
    for (i = 0; i < n; i++) {
        const uint8_t *b = hm_tokenizer_token_bytes(t, ids[i], &blen);

        if (blen > 256)
            continue; /* not in this vocabulary; keeps out[] within the contract */
        FUZZ_ASSERT(blen == 0 || b != NULL);
        k = hm_utf8_stream_push(&us, b, blen, out, sizeof(out));
        FUZZ_ASSERT(hm_utf8_valid(out, k));
    }
    k = hm_utf8_stream_flush(&us, out, sizeof(out));
    FUZZ_ASSERT(hm_utf8_valid(out, k));
    hm_free(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (hm_fuzz_init() != 0)
        return 0;
    if (size > MAX_INPUT)
        return 0;
    roundtrip(tok_gpt2, (const char *)data, size);
    roundtrip(tok_llama, (const char *)data, size);
    decode_ids(tok_gpt2, data, size);
    decode_ids(tok_llama, data, size);
    return 0;
}
