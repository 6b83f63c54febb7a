/* testutil.c - see testutil.h. */
#include <check.h>
#include <stdlib.h>
#include <unistd.h>

#include "hm/err.h"
#include "testutil.h"

static uint64_t rng_state;

void hm_test_rng_seed(uint64_t seed)
{
    rng_state = seed;
}

uint32_t hm_test_rnd(void)
{
    rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (uint32_t)(rng_state >> 33);
}

float hm_test_rndf(void)
{
    return (float)((double)hm_test_rnd() / 1073741824.0 - 1.0);
}

struct hm_tokenizer *hm_test_byte_tok(uint32_t n_vocab, struct hm_gguf **gout,
                                      int32_t byte_id[256])
{
    struct hm_tokenizer_data *td = NULL;
    struct hm_gguf_writer *w = NULL;
    struct hm_tokenizer *tok = NULL;
    struct hm_errmsg em = {{0}};
    char path[] = "/tmp/hm_test_tok_XXXXXX";
    int fd, id;

    ck_assert_int_eq(hm_tokenizer_data_default(n_vocab, &td), HM_OK);
    ck_assert_int_eq(hm_gguf_writer_new(&w), HM_OK);
    ck_assert_int_eq(hm_gguf_writer_add_str(w, "general.architecture", "hybridmoe"), HM_OK);
    ck_assert_int_eq(hm_tokenizer_data_write(td, w), HM_OK);
    fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    close(fd);
    ck_assert_int_eq(hm_gguf_writer_write(w, path, NULL, NULL, NULL, NULL, &em), HM_OK);
    ck_assert_int_eq(hm_gguf_open(path, gout, &em), HM_OK);
    unlink(path);
    ck_assert_int_eq(hm_tokenizer_from_gguf(*gout, n_vocab, &tok, &em), HM_OK);
    hm_gguf_writer_free(w);
    hm_tokenizer_data_free(td);
    for (id = 0; id < 256; id++)
        byte_id[id] = -1;
    for (id = 0; id < (int)n_vocab; id++) {
        size_t len;
        const uint8_t *b = hm_tokenizer_token_bytes(tok, id, &len);
        if (len == 1 && byte_id[b[0]] < 0)
            byte_id[b[0]] = id;
    }
    for (id = 0; id < 256; id++)
        ck_assert_int_ge(byte_id[id], 0);
    return tok;
}
