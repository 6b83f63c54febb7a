/*
 * chat.c - chat templates: messages -> prompt text.
 *
 * A model whose GGUF has tokenizer.chat_template of a known kind gets that format
 * (detected by its markers): ChatML (<|im_start|>), Llama 3 (<|start_header_id|>) or
 * Llama 2 ([INST]). Every other model gets the documented default (docs/api.md):
 *
 *     System: {system}\n        (each message: "<Role>: <content>\n")
 *     User: {user}\n
 *     Assistant: {assistant}\n
 *     Assistant:                (generation starts after this colon)
 */
#include "server.h"

#include <string.h>

#include "hm/alloc.h"
#include "hm/gguf.h"
#include "hm/model.h"

enum hm_chat_template hm_chat_template_detect(const struct hm_model *m)
{
    const char *t = NULL;
    size_t len = 0;

    if (!m->gguf || hm_gguf_get_str(m->gguf, "tokenizer.chat_template", &t, &len) < 0 || !t)
        return HM_TMPL_DEFAULT;
    if (memmem(t, len, "<|im_start|>", 12))
        return HM_TMPL_CHATML;
    if (memmem(t, len, "<|start_header_id|>", 19))
        return HM_TMPL_LLAMA3;
    if (memmem(t, len, "[INST]", 6))
        return HM_TMPL_LLAMA2;
    return HM_TMPL_DEFAULT;
}

const char *hm_chat_template_name(enum hm_chat_template t)
{
    switch (t) {
    case HM_TMPL_CHATML: return "chatml";
    case HM_TMPL_LLAMA3: return "llama3";
    case HM_TMPL_LLAMA2: return "llama2";
    default: return "hybridmoe";
    }
}

static const char *const role_lower[] = { "system", "user", "assistant" };
static const char *const role_title[] = { "System", "User", "Assistant" };

int hm_chat_render(enum hm_chat_template t, const struct hm_chat_msg *msgs, size_t n,
                   char **out, size_t *len, bool *special)
{
    struct hm_buf b;
    int rc = 0;

    hm_buf_init(&b, (size_t)1 << 30);
    *special = t != HM_TMPL_DEFAULT;
    for (size_t i = 0; i < n && rc >= 0; i++) {
        const struct hm_chat_msg *m = &msgs[i];
        switch (t) {
        case HM_TMPL_CHATML:
            rc = hm_buf_printf(&b, "<|im_start|>%s\n", role_lower[m->role]);
            if (rc >= 0)
                rc = hm_buf_append(&b, m->content, m->content_len);
            if (rc >= 0)
                rc = hm_buf_append_str(&b, "<|im_end|>\n");
            break;
        case HM_TMPL_LLAMA3:
            rc = hm_buf_printf(&b, "<|start_header_id|>%s<|end_header_id|>\n\n",
                               role_lower[m->role]);
            if (rc >= 0)
                rc = hm_buf_append(&b, m->content, m->content_len);
            if (rc >= 0)
                rc = hm_buf_append_str(&b, "<|eot_id|>");
            break;
        case HM_TMPL_LLAMA2:
            if (m->role == HM_ROLE_SYSTEM) {
                rc = hm_buf_append_str(&b, "[INST] <<SYS>>\n");
                if (rc >= 0)
                    rc = hm_buf_append(&b, m->content, m->content_len);
                if (rc >= 0)
                    rc = hm_buf_append_str(&b, "\n<</SYS>>\n\n");
            } else if (m->role == HM_ROLE_USER) {
                bool open = i > 0 && msgs[i - 1].role == HM_ROLE_SYSTEM;
                rc = open ? 0 : hm_buf_append_str(&b, "[INST] ");
                if (rc >= 0)
                    rc = hm_buf_append(&b, m->content, m->content_len);
                if (rc >= 0)
                    rc = hm_buf_append_str(&b, " [/INST]");
            } else {
                rc = hm_buf_append_str(&b, " ");
                if (rc >= 0)
                    rc = hm_buf_append(&b, m->content, m->content_len);
                if (rc >= 0)
                    rc = hm_buf_append_str(&b, " </s><s>");
            }
            break;
        default:
            rc = hm_buf_printf(&b, "%s: ", role_title[m->role]);
            if (rc >= 0)
                rc = hm_buf_append(&b, m->content, m->content_len);
            if (rc >= 0)
                rc = hm_buf_append_str(&b, "\n");
            break;
        }
    }
    if (rc >= 0) {
        switch (t) {
        case HM_TMPL_CHATML: rc = hm_buf_append_str(&b, "<|im_start|>assistant\n"); break;
        case HM_TMPL_LLAMA3:
            rc = hm_buf_append_str(&b, "<|start_header_id|>assistant<|end_header_id|>\n\n");
            break;
        case HM_TMPL_LLAMA2: rc = hm_buf_append(&b, "", 0); break;
        default: rc = hm_buf_append_str(&b, "Assistant:"); break;
        }
    }
    if (rc < 0) {
        hm_buf_release(&b);
        *out = NULL;
        *len = 0;
        return rc;
    }
    *out = hm_buf_detach(&b, len);
    return HM_OK;
}
