/*
 * check_server_request.c - validation of completions / chat request bodies, the error
 * table, and the chat templates.
 */
#include <check.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hm/alloc.h"
#include "hm/err.h"

#include "api_error.h"
#include "api_request.h"
#include "server.h"
#include "testutil.h"

static const struct hm_api_limits lim = {
    .n_vocab = 512, .n_ctx = 256, .k_max = 2, .max_n = 4, .default_max_tokens = 16,
    .max_timeout_s = 0,
};

static int parse(const char *text, enum hm_api_kind kind, struct hm_gen_request **r,
                 struct hm_api_error *e)
{
    json_error_t je;
    json_t *root = json_loads(text, JSON_DECODE_ANY, &je);
    int rc;

    ck_assert_msg(root != NULL, "test JSON invalid: %s: %s", je.text, text);
    memset(e, 0, sizeof(*e));
    rc = hm_gen_request_parse(root, kind, &lim, r, e);
    json_decref(root);
    return rc;
}

static struct hm_gen_request *ok(const char *text, enum hm_api_kind kind)
{
    struct hm_gen_request *r;
    struct hm_api_error e;
    int rc = parse(text, kind, &r, &e);

    ck_assert_msg(rc == 0, "rejected (%s): %s", e.message, text);
    ck_assert_ptr_nonnull(r);
    return r;
}

/* ---- core: accepted values ---------------------------------------------------------- */

START_TEST(completions_full)
{
    struct hm_gen_request *r = ok(
        "{\"model\":\"m\",\"prompt\":\"hi\",\"max_tokens\":10,\"temperature\":0.5,\"top_p\":0.9,"
        "\"top_k\":5,\"min_p\":0.1,\"presence_penalty\":-2,\"frequency_penalty\":2,"
        "\"repetition_penalty\":1.3,\"seed\":-1,\"stop\":[\"a\",\"bc\"],\"n\":3,\"logprobs\":5,"
        "\"logit_bias\":{\"7\":-100,\"8\":2.5},\"stream\":true,"
        "\"stream_options\":{\"include_usage\":true},\"user\":\"u\",\"timeout_s\":1.5,"
        "\"hybridmoe\":{\"complexity\":0.25,\"window\":12,\"max_experts\":2,"
        "\"router_threshold\":0.75},\"something_new\":[{\"x\":null}]}",
        HM_API_COMPLETIONS);

    ck_assert_str_eq(r->model, "m");
    ck_assert_uint_eq(r->n_prompts, 1);
    ck_assert_str_eq(r->prompts[0].text, "hi");
    ck_assert_uint_eq(r->max_tokens, 10);
    ck_assert_float_eq(r->sp.temperature, 0.5f);
    ck_assert_float_eq(r->sp.top_p, 0.9f);
    ck_assert_int_eq(r->sp.top_k, 5);
    ck_assert_float_eq(r->sp.min_p, 0.1f);
    ck_assert_float_eq(r->sp.presence_penalty, -2.0f);
    ck_assert_float_eq(r->sp.frequency_penalty, 2.0f);
    ck_assert_float_eq(r->sp.repetition_penalty, 1.3f);
    ck_assert_uint_eq(r->sp.seed, UINT64_MAX);
    ck_assert_uint_eq(r->n_stop, 2);
    ck_assert_str_eq(r->stop[1], "bc");
    ck_assert_uint_eq(r->n, 3);
    ck_assert(r->logprobs);
    ck_assert_uint_eq(r->top_logprobs, 5);
    ck_assert(r->sp.want_logprobs);
    ck_assert_uint_eq(r->sp.n_top_logprobs, 5);
    ck_assert_uint_eq(r->n_bias, 2);
    ck_assert_ptr_eq(r->sp.bias, r->bias);
    ck_assert(r->stream && r->include_usage);
    ck_assert_str_eq(r->user, "u");
    ck_assert(r->timeout_s == 1.5);
    ck_assert_float_eq(r->so.complexity, 0.25f);
    ck_assert_int_eq(r->so.window, 12);
    ck_assert_uint_eq(r->so.max_experts, 2);
    ck_assert_float_eq(r->so.router_threshold, 0.75f);
    hm_gen_request_free(r);
}
END_TEST

START_TEST(defaults_and_nulls)
{
    struct hm_gen_request *r = ok("{\"prompt\":\"x\",\"temperature\":null,\"stop\":null,"
                                  "\"n\":null,\"logprobs\":null,\"hybridmoe\":null}",
                                  HM_API_COMPLETIONS);
    struct hm_sampler_params sp = hm_sampler_params_default();
    struct hm_session_opts so = hm_session_opts_default();

    ck_assert_uint_eq(r->max_tokens, 0); /* server default applies later */
    ck_assert_float_eq(r->sp.temperature, sp.temperature);
    ck_assert_uint_eq(r->n, 1);
    ck_assert(!r->logprobs && !r->stream);
    ck_assert_uint_eq(r->n_stop, 0);
    ck_assert_float_eq(r->so.complexity, so.complexity);
    ck_assert_int_eq(r->so.window, so.window);
    hm_gen_request_free(r);
}
END_TEST

/* No seed (or null): a fresh random seed per request, so repeated sampled requests differ
 * (OpenAI, vLLM, llama.cpp); a given seed is kept as is. */
START_TEST(absent_seed_is_fresh)
{
    uint64_t seeds[8];

    for (int i = 0; i < 8; i++) {
        struct hm_gen_request *r =
            ok(i % 2 ? "{\"prompt\":\"x\"}" : "{\"prompt\":\"x\",\"seed\":null}",
               HM_API_COMPLETIONS);
        seeds[i] = r->sp.seed;
        for (int j = 0; j < i; j++)
            ck_assert_msg(seeds[j] != seeds[i], "requests %d and %d got seed %llu", j, i,
                          (unsigned long long)seeds[i]);
        hm_gen_request_free(r);
    }
    for (int i = 0; i < 2; i++) {
        struct hm_gen_request *r = ok("{\"prompt\":\"x\",\"seed\":0}", HM_API_COMPLETIONS);
        ck_assert_uint_eq(r->sp.seed, 0);
        hm_gen_request_free(r);
    }
}
END_TEST

START_TEST(prompt_forms)
{
    struct hm_gen_request *r;

    r = ok("{\"prompt\":[1,2,511]}", HM_API_COMPLETIONS);
    ck_assert_uint_eq(r->n_prompts, 1);
    ck_assert_uint_eq(r->prompts[0].n_ids, 3);
    ck_assert_int_eq(r->prompts[0].ids[2], 511);
    ck_assert_ptr_null(r->prompts[0].text);
    hm_gen_request_free(r);
    r = ok("{\"prompt\":[\"a\",\"bb\"]}", HM_API_COMPLETIONS);
    ck_assert_uint_eq(r->n_prompts, 2);
    ck_assert_str_eq(r->prompts[1].text, "bb");
    hm_gen_request_free(r);
    r = ok("{\"prompt\":[[1],[2,3]]}", HM_API_COMPLETIONS);
    ck_assert_uint_eq(r->n_prompts, 2);
    ck_assert_uint_eq(r->prompts[1].n_ids, 2);
    hm_gen_request_free(r);
    r = ok("{\"prompt\":[\"a\",[5]]}", HM_API_COMPLETIONS);
    ck_assert_uint_eq(r->n_prompts, 2);
    hm_gen_request_free(r);
    r = ok("{\"prompt\":\"x\",\"stop\":\"END\",\"max_completion_tokens\":7,\"max_tokens\":3}",
           HM_API_COMPLETIONS);
    ck_assert_uint_eq(r->n_stop, 1);
    ck_assert_str_eq(r->stop[0], "END");
    ck_assert_uint_eq(r->max_tokens, 7); /* max_completion_tokens wins */
    hm_gen_request_free(r);
}
END_TEST

/* Fields other servers' clients send: ignore_eos (vLLM, llama.cpp benchmarks), and
 * top_logprobs 0 without logprobs (asks for nothing). */
START_TEST(client_extensions)
{
    struct hm_gen_request *r = ok("{\"prompt\":\"hi\",\"ignore_eos\":true}",
                                  HM_API_COMPLETIONS);
    struct hm_api_error e;

    ck_assert(r->ignore_eos);
    hm_gen_request_free(r);
    r = ok("{\"prompt\":\"hi\"}", HM_API_COMPLETIONS);
    ck_assert(!r->ignore_eos);
    hm_gen_request_free(r);
    ck_assert_int_lt(parse("{\"prompt\":\"hi\",\"ignore_eos\":1}", HM_API_COMPLETIONS, &r, &e),
                     0);
    ck_assert_str_eq(e.param, "ignore_eos");
    r = ok("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"top_logprobs\":0,"
           "\"logprobs\":false}", HM_API_CHAT);
    ck_assert(!r->logprobs);
    ck_assert_uint_eq(r->top_logprobs, 0);
    hm_gen_request_free(r);
    /* echo, and max_tokens 0 with it (score the prompt only) */
    r = ok("{\"prompt\":\"hi\",\"echo\":true,\"max_tokens\":0,\"logprobs\":1}",
           HM_API_COMPLETIONS);
    ck_assert(r->echo);
    ck_assert(r->max_tokens_zero);
    ck_assert_uint_eq(r->max_tokens, 0);
    hm_gen_request_free(r);
    r = ok("{\"prompt\":\"hi\",\"echo\":true,\"max_tokens\":3}", HM_API_COMPLETIONS);
    ck_assert(r->echo && !r->max_tokens_zero);
    ck_assert_uint_eq(r->max_tokens, 3);
    hm_gen_request_free(r);
}
END_TEST

START_TEST(chat_forms)
{
    struct hm_gen_request *r = ok(
        "{\"messages\":[{\"role\":\"system\",\"content\":\"S\"},{\"role\":\"developer\","
        "\"content\":\"D\"},{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"a\"},"
        "{\"type\":\"text\",\"text\":\"b\"}]},{\"role\":\"assistant\",\"content\":null},"
        "{\"role\":\"user\",\"content\":\"q\",\"name\":\"bob\"}],\"logprobs\":true,"
        "\"top_logprobs\":20}",
        HM_API_CHAT);
    char *text;
    size_t len;
    bool special;

    ck_assert_uint_eq(r->n_messages, 5);
    ck_assert_int_eq(r->messages[1].role, HM_ROLE_SYSTEM);
    ck_assert_str_eq(r->messages[2].content, "ab");
    ck_assert_str_eq(r->messages[3].content, "");
    ck_assert(r->logprobs);
    ck_assert_uint_eq(r->top_logprobs, 20);
    ck_assert_int_eq(hm_chat_render(HM_TMPL_DEFAULT, r->messages, r->n_messages, &text, &len,
                                    &special), HM_OK);
    ck_assert_str_eq(text, "System: S\nSystem: D\nUser: ab\nAssistant: \nUser: q\nAssistant:");
    ck_assert_uint_eq(len, strlen(text));
    ck_assert(!special);
    hm_free(text);
    ck_assert_int_eq(hm_chat_render(HM_TMPL_CHATML, r->messages, 1, &text, &len, &special),
                     HM_OK);
    ck_assert_str_eq(text, "<|im_start|>system\nS<|im_end|>\n<|im_start|>assistant\n");
    ck_assert(special);
    hm_free(text);
    ck_assert_int_eq(hm_chat_render(HM_TMPL_LLAMA3, r->messages + 4, 1, &text, &len, &special),
                     HM_OK);
    ck_assert_str_eq(text, "<|start_header_id|>user<|end_header_id|>\n\nq<|eot_id|>"
                           "<|start_header_id|>assistant<|end_header_id|>\n\n");
    hm_free(text);
    hm_gen_request_free(r);
}
END_TEST

/* ---- errors: every field, wrong types and ranges -------------------------------------- */

struct bad {
    const char *json;
    enum hm_api_kind kind;
    const char *param; /* "" = null param */
};

#define C HM_API_COMPLETIONS
#define H HM_API_CHAT
static const struct bad bads[] = {
    { "[]", C, "" },
    { "\"str\"", C, "" },
    { "{}", C, "prompt" },
    { "{\"prompt\":\"\"}", C, "prompt" },
    { "{\"prompt\":[]}", C, "prompt" },
    { "{\"prompt\":7}", C, "prompt" },
    { "{\"prompt\":{\"a\":1}}", C, "prompt" },
    { "{\"prompt\":[1,\"a\"]}", C, "prompt" },
    { "{\"prompt\":[1.5]}", C, "prompt" },
    { "{\"prompt\":[-1]}", C, "prompt" },
    { "{\"prompt\":[512]}", C, "prompt" },
    { "{\"prompt\":[\"a\",\"\"]}", C, "prompt" },
    { "{\"prompt\":[\"a\",[]]}", C, "prompt" },
    { "{\"prompt\":[\"a\",{}]}", C, "prompt" },
    { "{\"prompt\":[[1],[\"x\"]]}", C, "prompt" },
    { "{\"prompt\":\"a\",\"model\":5}", C, "model" },
    { "{\"prompt\":\"a\",\"max_tokens\":0}", C, "max_tokens" },
    { "{\"prompt\":\"a\",\"max_tokens\":257}", C, "max_tokens" },
    { "{\"prompt\":\"a\",\"max_tokens\":\"5\"}", C, "max_tokens" },
    { "{\"prompt\":\"a\",\"max_tokens\":5.0}", C, "max_tokens" },
    { "{\"prompt\":\"a\",\"max_completion_tokens\":-3}", C, "max_completion_tokens" },
    { "{\"prompt\":\"a\",\"temperature\":-0.1}", C, "temperature" },
    { "{\"prompt\":\"a\",\"temperature\":2.0001}", C, "temperature" },
    { "{\"prompt\":\"a\",\"temperature\":true}", C, "temperature" },
    { "{\"prompt\":\"a\",\"temperature\":1e308}", C, "temperature" },
    { "{\"prompt\":\"a\",\"top_p\":0}", C, "top_p" },
    { "{\"prompt\":\"a\",\"top_p\":1.01}", C, "top_p" },
    { "{\"prompt\":\"a\",\"top_k\":-2}", C, "top_k" },
    { "{\"prompt\":\"a\",\"top_k\":0.5}", C, "top_k" },
    { "{\"prompt\":\"a\",\"min_p\":1.5}", C, "min_p" },
    { "{\"prompt\":\"a\",\"presence_penalty\":-2.5}", C, "presence_penalty" },
    { "{\"prompt\":\"a\",\"frequency_penalty\":3}", C, "frequency_penalty" },
    { "{\"prompt\":\"a\",\"repetition_penalty\":0}", C, "repetition_penalty" },
    { "{\"prompt\":\"a\",\"repetition_penalty\":[1]}", C, "repetition_penalty" },
    { "{\"prompt\":\"a\",\"seed\":1.5}", C, "seed" },
    { "{\"prompt\":\"a\",\"seed\":\"1\"}", C, "seed" },
    { "{\"prompt\":\"a\",\"stop\":\"\"}", C, "stop" },
    { "{\"prompt\":\"a\",\"stop\":[\"a\",1]}", C, "stop" },
    { "{\"prompt\":\"a\",\"stop\":[\"1\",\"2\",\"3\",\"4\",\"5\"]}", C, "stop" },
    { "{\"prompt\":\"a\",\"stop\":{}}", C, "stop" },
    { "{\"prompt\":\"a\",\"n\":0}", C, "n" },
    { "{\"prompt\":\"a\",\"n\":5}", C, "n" },
    { "{\"prompt\":\"a\",\"n\":\"2\"}", C, "n" },
    { "{\"prompt\":\"a\",\"logprobs\":21}", C, "logprobs" },
    { "{\"prompt\":\"a\",\"logprobs\":-1}", C, "logprobs" },
    { "{\"prompt\":\"a\",\"logprobs\":true}", C, "logprobs" },
    { "{\"prompt\":\"a\",\"logit_bias\":[]}", C, "logit_bias" },
    { "{\"prompt\":\"a\",\"logit_bias\":{\"x\":1}}", C, "logit_bias" },
    { "{\"prompt\":\"a\",\"logit_bias\":{\"-1\":1}}", C, "logit_bias" },
    { "{\"prompt\":\"a\",\"logit_bias\":{\"512\":1}}", C, "logit_bias" },
    { "{\"prompt\":\"a\",\"logit_bias\":{\"1x\":1}}", C, "logit_bias" },
    { "{\"prompt\":\"a\",\"logit_bias\":{\"1\":\"1\"}}", C, "logit_bias" },
    { "{\"prompt\":\"a\",\"logit_bias\":{\"1\":-100.5}}", C, "logit_bias" },
    { "{\"prompt\":\"a\",\"stream\":\"true\"}", C, "stream" },
    { "{\"prompt\":\"a\",\"stream_options\":true}", C, "stream_options" },
    { "{\"prompt\":\"a\",\"stream_options\":{\"include_usage\":1}}", C,
      "stream_options.include_usage" },
    { "{\"prompt\":\"a\",\"user\":5}", C, "user" },
    { "{\"prompt\":\"a\",\"max_completion_tokens\":0}", C, "max_tokens" },
    { "{\"prompt\":\"a\",\"echo\":false,\"max_tokens\":0}", C, "max_tokens" },
    { "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"max_tokens\":0}", H,
      "max_tokens" },
    { "{\"prompt\":\"a\",\"echo\":\"no\"}", C, "echo" },
    { "{\"prompt\":\"a\",\"suffix\":\"x\"}", C, "suffix" },
    { "{\"prompt\":\"a\",\"best_of\":3}", C, "best_of" },
    { "{\"prompt\":\"a\",\"timeout_s\":0}", C, "timeout_s" },
    { "{\"prompt\":\"a\",\"timeout_s\":\"5\"}", C, "timeout_s" },
    { "{\"prompt\":\"a\",\"hybridmoe\":5}", C, "hybridmoe" },
    { "{\"prompt\":\"a\",\"hybridmoe\":{\"complexity\":-0.01}}", C, "hybridmoe.complexity" },
    { "{\"prompt\":\"a\",\"hybridmoe\":{\"complexity\":\"low\"}}", C, "hybridmoe.complexity" },
    { "{\"prompt\":\"a\",\"hybridmoe\":{\"window\":257}}", C, "hybridmoe.window" },
    { "{\"prompt\":\"a\",\"hybridmoe\":{\"window\":1.5}}", C, "hybridmoe.window" },
    { "{\"prompt\":\"a\",\"hybridmoe\":{\"max_experts\":0}}", C, "hybridmoe.max_experts" },
    { "{\"prompt\":\"a\",\"hybridmoe\":{\"max_experts\":3}}", C, "hybridmoe.max_experts" },
    { "{\"prompt\":\"a\",\"hybridmoe\":{\"router_threshold\":1.1}}", C,
      "hybridmoe.router_threshold" },
    { "{}", H, "messages" },
    { "{\"messages\":{}}", H, "messages" },
    { "{\"messages\":[]}", H, "messages" },
    { "{\"messages\":[5]}", H, "messages" },
    { "{\"messages\":[{\"content\":\"x\"}]}", H, "messages" },
    { "{\"messages\":[{\"role\":\"tool\",\"content\":\"x\"}]}", H, "messages" },
    { "{\"messages\":[{\"role\":\"user\",\"content\":5}]}", H, "messages" },
    { "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\"}]}]}", H,
      "messages" },
    { "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":[[[]]]}]}]}", H,
      "messages" },
    { "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"logprobs\":5}", H, "logprobs" },
    { "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"top_logprobs\":1}", H,
      "top_logprobs" },
    { "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"logprobs\":true,"
      "\"top_logprobs\":21}", H, "top_logprobs" },
};

START_TEST(bad_fields)
{
    for (size_t i = 0; i < sizeof(bads) / sizeof(bads[0]); i++) {
        struct hm_gen_request *r = (struct hm_gen_request *)1;
        struct hm_api_error e;
        int rc = parse(bads[i].json, bads[i].kind, &r, &e);
        ck_assert_msg(rc < 0, "accepted: %s", bads[i].json);
        ck_assert_ptr_null(r);
        ck_assert_int_eq(e.kind, HM_AERR_INVALID);
        ck_assert_msg(!strcmp(e.param, bads[i].param), "%s: param '%s', want '%s'",
                      bads[i].json, e.param, bads[i].param);
        ck_assert_msg(e.message[0], "no message for %s", bads[i].json);
        if (bads[i].param[0])
            ck_assert_msg(strstr(e.message, bads[i].param) != NULL ||
                              !strncmp(bads[i].param, "messages", 8),
                          "message '%s' does not name '%s'", e.message, bads[i].param);
    }
}
END_TEST

START_TEST(deep_junk)
{
    /* nested junk in unknown fields is ignored; in known fields it is a 400 */
    char *deep = malloc(5000);
    size_t n = 0;
    struct hm_gen_request *r;
    struct hm_api_error e;

    n += (size_t)snprintf(deep + n, 5000 - n, "{\"prompt\":\"a\",\"junk\":");
    for (int i = 0; i < 1000; i++)
        deep[n++] = '[';
    for (int i = 0; i < 1000; i++)
        deep[n++] = ']';
    deep[n++] = '}';
    deep[n] = '\0';
    r = ok(deep, HM_API_COMPLETIONS);
    hm_gen_request_free(r);
    memcpy(deep + 14, "\"stop\"", 6);
    ck_assert_int_lt(parse(deep, HM_API_COMPLETIONS, &r, &e), 0);
    ck_assert_str_eq(e.param, "stop");
    free(deep);
}
END_TEST

START_TEST(error_table)
{
    struct hm_api_error e;
    json_t *j, *in;

    ck_assert_uint_eq(hm_api_error_status(HM_AERR_INVALID), 400);
    ck_assert_uint_eq(hm_api_error_status(HM_AERR_UNAUTHORIZED), 401);
    ck_assert_uint_eq(hm_api_error_status(HM_AERR_NOT_FOUND), 404);
    ck_assert_uint_eq(hm_api_error_status(HM_AERR_MODEL_NOT_FOUND), 404);
    ck_assert_uint_eq(hm_api_error_status(HM_AERR_METHOD), 405);
    ck_assert_uint_eq(hm_api_error_status(HM_AERR_TOO_LARGE), 413);
    ck_assert_uint_eq(hm_api_error_status(HM_AERR_MEDIA_TYPE), 415);
    ck_assert_uint_eq(hm_api_error_status(HM_AERR_RATE_LIMIT), 429);
    ck_assert_uint_eq(hm_api_error_status(HM_AERR_INTERNAL), 500);
    ck_assert_uint_eq(hm_api_error_status(HM_AERR_OVERLOADED), 503);
    ck_assert_uint_eq(hm_api_error_status(HM_AERR_TIMEOUT), 504);
    ck_assert_int_eq(hm_api_error_from_hm(HM_EINVAL), HM_AERR_INVALID);
    ck_assert_int_eq(hm_api_error_from_hm(HM_ERANGE), HM_AERR_INVALID);
    ck_assert_int_eq(hm_api_error_from_hm(HM_ENOMEM), HM_AERR_INTERNAL);
    ck_assert_int_eq(hm_api_error_from_hm(HM_EBUSY), HM_AERR_OVERLOADED);
    ck_assert_int_eq(hm_api_error_from_hm(HM_ETIMEDOUT), HM_AERR_TIMEOUT);
    ck_assert_int_eq(hm_api_error_set(&e, HM_AERR_INVALID, "top_p", "bad %d", 5), -1);
    j = hm_api_error_json(&e);
    in = json_object_get(j, "error");
    ck_assert_str_eq(json_string_value(json_object_get(in, "message")), "bad 5");
    ck_assert_str_eq(json_string_value(json_object_get(in, "type")), "invalid_request_error");
    ck_assert_str_eq(json_string_value(json_object_get(in, "param")), "top_p");
    ck_assert(json_is_null(json_object_get(in, "code")));
    json_decref(j);
    hm_api_error_set(&e, HM_AERR_OVERLOADED, NULL, "busy");
    j = hm_api_error_json(&e);
    in = json_object_get(j, "error");
    ck_assert(json_is_null(json_object_get(in, "param")));
    ck_assert_str_eq(json_string_value(json_object_get(in, "code")), "server_overloaded");
    json_decref(j);
    /* a message cut inside a UTF-8 character still gives a JSON body */
    memset(&e, 0, sizeof(e));
    memset(e.message, 'x', sizeof(e.message) - 2);
    e.message[sizeof(e.message) - 2] = (char)0xC3;
    e.kind = HM_AERR_INVALID;
    j = hm_api_error_json(&e);
    ck_assert(json_is_string(json_object_get(json_object_get(j, "error"), "message")));
    json_decref(j);
}
END_TEST

START_TEST(tokenize_bodies)
{
    struct hm_tokenize_request tr;
    struct hm_api_error e;
    int32_t *ids;
    size_t n;
    json_t *j = json_loads("{\"prompt\":\"ab\",\"add_special\":false}", 0, NULL);

    ck_assert_int_eq(hm_tokenize_request_parse(j, &tr, &e), 0);
    ck_assert_str_eq(tr.text, "ab");
    ck_assert(!tr.add_special);
    hm_tokenize_request_release(&tr);
    json_decref(j);
    /* vLLM's spelling and "text" */
    j = json_loads("{\"text\":\"cd\",\"add_special_tokens\":false}", 0, NULL);
    ck_assert_int_eq(hm_tokenize_request_parse(j, &tr, &e), 0);
    ck_assert_str_eq(tr.text, "cd");
    ck_assert(!tr.add_special);
    hm_tokenize_request_release(&tr);
    json_decref(j);
    j = json_loads("{\"content\":1}", 0, NULL);
    ck_assert_int_lt(hm_tokenize_request_parse(j, &tr, &e), 0);
    ck_assert_str_eq(e.param, "content");
    json_decref(j);
    j = json_loads("{\"tokens\":[1,2]}", 0, NULL);
    ck_assert_int_eq(hm_detokenize_request_parse(j, 512, &ids, &n, &e), 0);
    ck_assert_uint_eq(n, 2);
    hm_free(ids);
    json_decref(j);
    j = json_loads("{\"tokens\":[1,600]}", 0, NULL);
    ck_assert_int_lt(hm_detokenize_request_parse(j, 512, &ids, &n, &e), 0);
    ck_assert_str_eq(e.param, "tokens");
    json_decref(j);
}
END_TEST

/* ---- oom ---------------------------------------------------------------------------- */

START_TEST(oom_parse)
{
    const char *text = "{\"prompt\":[\"a\",[1,2]],\"stop\":[\"x\",\"y\"],\"user\":\"u\","
                       "\"model\":\"m\",\"logit_bias\":{\"1\":1}}";
    json_t *root = json_loads(text, 0, NULL);

    for (long n = 1;; n++) {
        struct hm_gen_request *r = NULL;
        struct hm_api_error e;
        int rc;
        hm_alloc_fail_after(n);
        rc = hm_gen_request_parse(root, HM_API_COMPLETIONS, &lim, &r, &e);
        hm_alloc_fail_after(0);
        if (rc == 0) {
            hm_gen_request_free(r);
            break;
        }
        ck_assert_int_eq(e.kind, HM_AERR_INTERNAL);
        ck_assert_ptr_null(r);
    }
    json_decref(root);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("server_request");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, completions_full);
    tcase_add_test(tc, defaults_and_nulls);
    tcase_add_test(tc, absent_seed_is_fresh);
    tcase_add_test(tc, prompt_forms);
    tcase_add_test(tc, chat_forms);
    tcase_add_test(tc, tokenize_bodies);
    tcase_add_test(tc, client_extensions);
    suite_add_tcase(s, tc);
    tc = tcase_create("errors");
    tcase_add_test(tc, bad_fields);
    tcase_add_test(tc, deep_junk);
    tcase_add_test(tc, error_table);
    suite_add_tcase(s, tc);
    tc = tcase_create("oom");
    tcase_add_test(tc, oom_parse);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    json_object_seed(0);
    return hm_test_run(suite(), CK_NORMAL);
}
