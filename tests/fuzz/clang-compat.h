/*
 * clang-compat.h - forced into every compilation of the fuzzing build
 * (CPPFLAGS=-include .../clang-compat.h, set by run-fuzzers.sh).
 *
 * clang 14 rejects __builtin_cpu_supports("f16c") (engine/kernels.c), so runtime CPU
 * dispatch is turned off here: the fuzzers run the portable kernels.
 */
#if defined(__clang__) && !defined(HM_FUZZ_CLANG_COMPAT_H)
#define HM_FUZZ_CLANG_COMPAT_H
#define __builtin_cpu_supports(feature) 0
#endif
