/*
 * fuzz_gguf.c - libFuzzer target: bytes -> hm_gguf_open_mem -> hm_model_from_gguf.
 *
 * Any input must give either an error (with a message) or a model whose views all lie
 * inside the input. On success the target walks what the server and `hybridmoe inspect`
 * would touch: every key formatted, every tensor's first row dequantized, the tokenizer
 * run on a short text. Seeds: tests/fuzz/corpus/fuzz_gguf/ (tiny valid models and
 * truncations, made by tests/fuzz/make-seeds.sh).
 */
#include <string.h>

#include "hm/alloc.h"
#include "hm/err.h"
#include "hm/gguf.h"
#include "hm/model.h"
#include "hm/tokenizer.h"

#include "fuzz.h"

int hm_fuzz_init(void)
{
    return 0;
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    return hm_fuzz_init();
}

/* Touches every view of g: any byte outside the input is an ASan report. */
static void walk_gguf(const struct hm_gguf *g, const uint8_t *data, size_t size)
{
    char buf[256];
    float row[64];
    size_t i;

    for (i = 0; i < hm_gguf_n_kv(g); i++) {
        const char *key = hm_gguf_key(g, i);
        size_t n;

        FUZZ_ASSERT(key != NULL);
        FUZZ_ASSERT(hm_gguf_find_key(g, key) == (long)i);
        n = hm_gguf_format_value(g, i, 8, buf, sizeof(buf));
        FUZZ_ASSERT(n < sizeof(buf));
        FUZZ_ASSERT(memchr(buf, '\0', sizeof(buf)) != NULL);
    }
    for (i = 0; i < hm_gguf_n_tensors(g); i++) {
        const struct hm_tensor *t = hm_gguf_tensor(g, i);
        const uint8_t *p;
        uint64_t n;

        FUZZ_ASSERT(t != NULL && t->name != NULL);
        FUZZ_ASSERT(hm_gguf_find_tensor(g, t->name) == t);
        p = t->data;
        FUZZ_ASSERT(p >= data && t->n_bytes <= size && (size_t)(p - data) <= size - t->n_bytes);
        /* first row, at most 64 elements, in whole blocks */
        n = t->ne[0] < 64 ? t->ne[0] : 64;
        if (t->type == HM_DTYPE_Q8_0)
            n = n / HM_Q8_0_BLOCK * HM_Q8_0_BLOCK;
        if (n > 0 && hm_dtype_row_bytes(t->type, n) <= t->n_bytes)
            hm_dequantize_row(t->type, t->data, row, n);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct hm_errmsg em = {{0}};
    struct hm_gguf *g = NULL;
    struct hm_model *m = NULL;
    int rc;

    rc = hm_gguf_open_mem(data, size, "fuzz.gguf", &g, &em);
    if (rc < 0) {
        FUZZ_ASSERT(g == NULL);
        FUZZ_ASSERT(em.text[0] != '\0');
        return 0;
    }
    FUZZ_ASSERT(g != NULL);
    walk_gguf(g, data, size);

    memset(&em, 0, sizeof(em));
    rc = hm_model_from_gguf(g, &m, &em); /* takes g */
    if (rc < 0) {
        FUZZ_ASSERT(m == NULL);
        FUZZ_ASSERT(em.text[0] != '\0');
        return 0;
    }
    FUZZ_ASSERT(m != NULL && m->tok != NULL);
    FUZZ_ASSERT(m->hp.n_layer >= 1 && m->hp.n_vocab == hm_tokenizer_n_vocab(m->tok));
    {
        static const char text[] = "Hello, w\xc3\xb6rld! <|bos|> 123\n";
        int32_t *ids = NULL;
        size_t n_ids = 0, i;

        if (hm_tokenizer_encode(m->tok, text, sizeof(text) - 1,
                                HM_TOK_ADD_BOS | HM_TOK_PARSE_SPECIAL, &ids, &n_ids) == HM_OK) {
            for (i = 0; i < n_ids; i++)
                FUZZ_ASSERT(ids[i] >= 0 && (uint32_t)ids[i] < m->hp.n_vocab);
            hm_free(ids);
        }
    }
    hm_model_free(m);
    return 0;
}
