/*
 * fuzz.h - shared by the libFuzzer targets in tests/fuzz/ and by the replay driver
 * (tests/fuzz/replay.c), which calls the same entry points without libFuzzer so that
 * `make check` replays every corpus and regression input in ordinary and sanitizer builds.
 *
 * Every target defines LLVMFuzzerTestOneInput() and may define hm_fuzz_init() (called
 * once before the first input, from LLVMFuzzerInitialize or from the replay driver).
 * FUZZ_ASSERT(cond) reports the failed property and aborts, which libFuzzer records as a
 * crash and the replay driver as a failed test.
 */
#ifndef HM_FUZZ_H
#define HM_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
/* Target setup (vocabularies, logging off); 0 on success. Idempotent. */
int hm_fuzz_init(void);

#define FUZZ_ASSERT(cond)                                                                          \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: fuzz property failed: %s\n", __FILE__, __LINE__, #cond);       \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#endif
