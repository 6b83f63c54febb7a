/*
 * api_request.h - parsing and validating the JSON of /v1/completions and
 * /v1/chat/completions into a plain C struct (no jansson types survive parsing).
 *
 *     struct hm_gen_request *r;
 *     struct hm_api_error e;
 *     if (hm_gen_request_parse(json, HM_API_CHAT, &limits, &r, &e) < 0)
 *         reply_error(&e);                   // 400 naming e.param
 *     ...
 *     hm_gen_request_free(r);
 *
 * Unknown fields are ignored (as OpenAI does); JSON null means "not given". A known
 * field with a wrong type or out-of-range value is HM_AERR_INVALID with param set to
 * the field's name ("hybridmoe.window", "stream_options.include_usage", "messages[1].role").
 * Limits that need the prompt's tokens (context, vocabulary, KV budget) are checked later
 * by the caller (api_generate.c) once the prompt is tokenized.
 */
#ifndef HM_SERVER_API_REQUEST_H
#define HM_SERVER_API_REQUEST_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hm/engine.h"
#include "hm/sampler.h"

#include "api_error.h"

enum hm_api_kind { HM_API_COMPLETIONS = 0, HM_API_CHAT = 1 };

#define HM_MAX_STOP 4
#define HM_MAX_STOP_LEN 256
#define HM_MAX_PROMPTS 64
#define HM_MAX_MESSAGES 1024
#define HM_MAX_LOGIT_BIAS 1024

/* One prompt: text, or token ids (exactly one of the two is set). */
struct hm_prompt {
    char *text;          /* owned, NUL-terminated; may contain NUL bytes (use text_len) */
    size_t text_len;
    int32_t *ids;        /* owned */
    size_t n_ids;
};

enum hm_role { HM_ROLE_SYSTEM = 0, HM_ROLE_USER = 1, HM_ROLE_ASSISTANT = 2 };

struct hm_chat_msg {
    enum hm_role role;
    char *content;       /* owned; text parts joined */
    size_t content_len;
};

/* What validation needs to know about the server and model. */
struct hm_api_limits {
    uint32_t n_vocab;
    uint32_t n_ctx;
    uint32_t k_max;          /* the model's K (max_experts upper bound) */
    unsigned max_n;
    unsigned default_max_tokens;
    unsigned max_timeout_s;  /* 0 = no cap */
};

struct hm_gen_request {
    enum hm_api_kind kind;
    char *model;                 /* owned or NULL */
    struct hm_prompt *prompts;   /* completions: n_prompts (>= 1) */
    size_t n_prompts;
    struct hm_chat_msg *messages;/* chat: n_messages (>= 1) */
    size_t n_messages;
    uint32_t max_tokens;         /* 0 = not given (server default), unless max_tokens_zero */
    bool max_tokens_zero;        /* max_tokens 0 was given (only with echo: score the prompt) */
    struct hm_sampler_params sp; /* sp.bias points at bias */
    struct hm_logit_bias *bias;  /* owned */
    size_t n_bias;
    char *stop[HM_MAX_STOP];     /* owned */
    size_t n_stop;
    unsigned n;
    bool logprobs;               /* report log-probabilities */
    unsigned top_logprobs;       /* alternatives per token (0..20) */
    bool stream;
    bool include_usage;
    bool echo;                   /* completions: the prompt precedes the completion in text
                                  * (and in logprobs, its first token with null) */
    bool ignore_eos;             /* vLLM / llama.cpp extension: do not stop at EOS */
    char *user;                  /* owned or NULL */
    struct hm_session_opts so;   /* complexity, window, max_experts, router_threshold */
    double timeout_s;            /* 0 = server default */
};

/* Parses root (borrowed). Returns HM_OK and an owned request (free with
 * hm_gen_request_free), or -1 with e filled and *out NULL. */
int hm_gen_request_parse(const json_t *root, enum hm_api_kind kind,
                         const struct hm_api_limits *lim, struct hm_gen_request **out,
                         struct hm_api_error *e);
void hm_gen_request_free(struct hm_gen_request *r);

/* /tokenize {"content"|"prompt"|"text": string, "add_special"|"add_special_tokens": bool,
 * "with_pieces": bool} and
 * /detokenize {"tokens": [ids]} bodies. */
struct hm_tokenize_request {
    char *text;
    size_t len;
    bool add_special;
    bool with_pieces;
};
int hm_tokenize_request_parse(const json_t *root, struct hm_tokenize_request *out,
                              struct hm_api_error *e);
void hm_tokenize_request_release(struct hm_tokenize_request *r);
int hm_detokenize_request_parse(const json_t *root, uint32_t n_vocab, int32_t **ids,
                                size_t *n_ids, struct hm_api_error *e);

#endif
