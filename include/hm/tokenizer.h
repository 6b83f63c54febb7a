/*
 * tokenizer.h - gpt2 byte-level BPE and llama SentencePiece BPE, streaming UTF-8
 * decoding, and byte-level BPE training.
 *
 *     struct hm_tokenizer *tok = model->tok;        // loaded with the model
 *     int32_t *ids; size_t n;
 *     hm_tokenizer_encode(tok, text, len, HM_TOK_ADD_BOS, &ids, &n);   // owned ids
 *     ...
 *     struct hm_utf8_stream us; hm_utf8_stream_init(&us);
 *     for each generated id:
 *         size_t blen; const uint8_t *b = hm_tokenizer_token_bytes(tok, id, &blen);
 *         n_out = hm_utf8_stream_push(&us, b, blen, out, sizeof out);  // complete chars only
 *     n_out = hm_utf8_stream_flush(&us, out, sizeof out);    // leftovers as U+FFFD
 *
 * Spec: ../shared/spec/HYBRIDMOE.md sections 10, 12.1 and 12.11.
 */
#ifndef HM_TOKENIZER_H
#define HM_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hm/err.h"

struct hm_gguf;
struct hm_gguf_writer;
struct hm_tokenizer;

enum hm_tok_kind { HM_TOK_GPT2 = 0, HM_TOK_LLAMA = 1 };

/* GGUF token_type values. */
enum hm_token_type {
    HM_TOKEN_NORMAL = 1,
    HM_TOKEN_UNKNOWN = 2,
    HM_TOKEN_CONTROL = 3,
    HM_TOKEN_USER_DEFINED = 4,
    HM_TOKEN_UNUSED = 5,
    HM_TOKEN_BYTE = 6,
};

enum hm_tok_encode_flags {
    HM_TOK_ADD_BOS = 1 << 0,       /* prepend BOS if the model says add_bos_token */
    HM_TOK_FORCE_BOS = 1 << 1,     /* prepend BOS whatever the model says */
    HM_TOK_PARSE_SPECIAL = 1 << 2, /* text such as "<|eos|>" becomes the control token */
};

/* Builds a tokenizer from the tokenizer.ggml.* keys. n_vocab_model is the model's
 * vocabulary (token_embd rows); the token list must have exactly that many entries.
 * Returns owned; free with hm_tokenizer_free(). */
int hm_tokenizer_from_gguf(const struct hm_gguf *g, uint32_t n_vocab_model,
                           struct hm_tokenizer **out, struct hm_errmsg *em);
void hm_tokenizer_free(struct hm_tokenizer *t);

enum hm_tok_kind hm_tokenizer_kind(const struct hm_tokenizer *t);
uint32_t hm_tokenizer_n_vocab(const struct hm_tokenizer *t);
int32_t hm_tokenizer_bos(const struct hm_tokenizer *t); /* -1 if none */
int32_t hm_tokenizer_eos(const struct hm_tokenizer *t); /* -1 if none */
bool hm_tokenizer_add_bos(const struct hm_tokenizer *t);
enum hm_token_type hm_tokenizer_token_type(const struct hm_tokenizer *t, int32_t id);
/* The token's text as stored in the vocabulary (borrowed, NUL-terminated). */
const char *hm_tokenizer_token_text(const struct hm_tokenizer *t, int32_t id);
/* Token id of an exact vocabulary string, or -1. */
int32_t hm_tokenizer_find(const struct hm_tokenizer *t, const char *text, size_t len);

/* Encodes len bytes of text (any bytes; invalid UTF-8 is encoded byte-wise so that
 * decode(encode(s)) == s). Returns owned ids (free with hm_free) and their count. */
int hm_tokenizer_encode(const struct hm_tokenizer *t, const char *text, size_t len,
                        unsigned flags, int32_t **ids, size_t *n_ids);

/* The decoded bytes of a token (spec 12.1): control tokens and ids outside the
 * vocabulary have none (len 0). Borrowed; valid for the tokenizer's life. */
const uint8_t *hm_tokenizer_token_bytes(const struct hm_tokenizer *t, int32_t id, size_t *len);

/* Decodes ids to bytes into a new NUL-terminated buffer (owned, free with hm_free).
 * For llama tokenizers the leading space of the first token is kept unless
 * strip_leading_space is set. The result may contain invalid UTF-8 if the ids do. */
int hm_tokenizer_decode(const struct hm_tokenizer *t, const int32_t *ids, size_t n_ids,
                        bool strip_leading_space, char **out, size_t *out_len);

/* Streaming UTF-8: emits only complete, valid characters; holds back a partial one.
 * Invalid sequences are replaced by U+FFFD (EF BF BD). */
struct hm_utf8_stream {
    uint8_t pending[4];
    uint8_t n_pending;
};
void hm_utf8_stream_init(struct hm_utf8_stream *s);
/* Pushes len bytes; writes at most out_cap bytes of complete characters to out and
 * returns the count. out_cap must be >= 3 * (len + 4); anything less is HM_BUG. */
size_t hm_utf8_stream_push(struct hm_utf8_stream *s, const uint8_t *in, size_t len, uint8_t *out,
                           size_t out_cap);
/* Ends the stream: pending bytes become U+FFFD. Returns bytes written (out_cap >= 3). */
size_t hm_utf8_stream_flush(struct hm_utf8_stream *s, uint8_t *out, size_t out_cap);
/* Length of the longest prefix of buf that is complete UTF-8 (valid or not, a trailing
 * incomplete but so-far-valid sequence is excluded). */
size_t hm_utf8_complete_prefix(const uint8_t *buf, size_t len);
/* true if buf is valid UTF-8 (no overlongs, no surrogates, <= U+10FFFF). */
bool hm_utf8_valid(const uint8_t *buf, size_t len);

/* ---- Vocabulary data and training ---------------------------------------------------
 * A tokenizer as plain arrays, for writing into GGUF (mkmodel, tests). */
struct hm_tokenizer_data {
    enum hm_tok_kind kind;
    uint32_t n_tokens;
    char **tokens;          /* n_tokens owned strings */
    int32_t *token_type;    /* n_tokens */
    float *scores;          /* n_tokens or NULL (llama) */
    uint32_t n_merges;
    char **merges;          /* "a b" strings (gpt2) or NULL */
    int32_t bos, eos;       /* -1 = none */
    bool add_bos;
};

/* Learns n_merges byte-level BPE merges from text (GPT-2 pre-split, deterministic:
 * ties broken by the smallest pair in byte order). The vocabulary is the 256 byte
 * tokens, the merges in order, then the special tokens <|bos|> and <|eos|> (control).
 * Returns owned; free with hm_tokenizer_data_free(). */
int hm_bpe_train(const char *text, size_t len, uint32_t n_merges,
                 struct hm_tokenizer_data **out, struct hm_errmsg *em);
/* The default byte-level vocabulary (256 bytes, <|bos|>, <|eos|>) padded with control
 * tokens <|reserved_N|> up to n_vocab (>= 258). */
int hm_tokenizer_data_default(uint32_t n_vocab, struct hm_tokenizer_data **out);
/* Pads a trained vocabulary with <|reserved_N|> control tokens up to n_vocab. */
int hm_tokenizer_data_pad(struct hm_tokenizer_data *d, uint32_t n_vocab);
void hm_tokenizer_data_free(struct hm_tokenizer_data *d);
/* Adds the tokenizer.ggml.* keys for d to a writer. */
int hm_tokenizer_data_write(const struct hm_tokenizer_data *d, struct hm_gguf_writer *w);

#endif
