/*
 * testutil.h - small helpers the engine's Check tests share (tests/testutil.c):
 * a seeded LCG stream, the default byte-level tokenizer read back from a GGUF, and the
 * runner every test program's main() ends with (header only: no need to link testutil.c).
 *
 *     hm_test_rng_seed(42);
 *     float x = hm_test_rndf();                  // in [-1, 1)
 *     struct hm_gguf *g;
 *     int32_t byte_id[256];
 *     struct hm_tokenizer *tok = hm_test_byte_tok(300, &g, byte_id);
 */
#ifndef HM_TESTUTIL_H
#define HM_TESTUTIL_H

#include <check.h>
#include <stdint.h>
#include <stdlib.h>

#include "hm/gguf.h"
#include "hm/tokenizer.h"

/* One process-wide LCG stream (not thread-safe): seed it, then draw. */
void hm_test_rng_seed(uint64_t seed);
uint32_t hm_test_rnd(void);  /* the high bits of the next state: 31 bits */
float hm_test_rndf(void);    /* [-1, 1) */

/* hm_tokenizer_data_default(n_vocab) written to a temporary GGUF and read back. *gout
 * (owned, hm_gguf_close) keeps the tokenizer's source alive; byte_id[b] is a token whose
 * bytes are exactly b. Fails the running Check test on any error. Returns owned
 * (hm_tokenizer_free). */
struct hm_tokenizer *hm_test_byte_tok(uint32_t n_vocab, struct hm_gguf **gout,
                                      int32_t byte_id[256]);

/* Runs suite s (mode CK_NORMAL, or CK_ENV to follow CK_VERBOSITY) and frees it; returns
 * the exit status: EXIT_SUCCESS if no test failed, else EXIT_FAILURE. */
static inline int hm_test_run(Suite *s, enum print_output mode)
{
    SRunner *sr = srunner_create(s);
    int failed;

    srunner_run_all(sr, mode);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

#endif
