/*
 * alloc.h - the only allocation functions hybridmoe code calls.
 *
 * They behave like their libc namesakes, plus a test hook: after
 * hm_alloc_fail_after(n) the n-th following allocation (1-based) and every one
 * after it fails (sticky, as in SQLite), so tests can walk every error path:
 *
 *     for (n = 1; ; n++) {
 *         hm_alloc_fail_after(n);
 *         rc = thing_new(&t);
 *         hm_alloc_fail_after(0);
 *         if (rc == HM_OK) { thing_free(t); break; }
 *         ck_assert_int_eq(rc, HM_ENOMEM);
 *     }
 *
 * Any thread. hm_malloc(0) returns a unique pointer or NULL, like malloc.
 */
#ifndef HM_ALLOC_H
#define HM_ALLOC_H

#include <stddef.h>

void *hm_malloc(size_t n);
void *hm_calloc(size_t count, size_t size);
void *hm_realloc(void *p, size_t n);
void hm_free(void *p);
/* Returns owned copy of s (NUL-terminated); free with hm_free(). */
char *hm_strdup(const char *s);
char *hm_strndup(const char *s, size_t n);
/* Owned copy of exactly n bytes (which may include NUL bytes) plus a terminating NUL. */
char *hm_memdup_z(const void *p, size_t n);
/* hm_malloc(count * size) with an overflow check. */
void *hm_mallocarray(size_t count, size_t size);
/* 64-byte aligned allocation, freed with hm_free_aligned(). */
void *hm_malloc_aligned(size_t n);
void hm_free_aligned(void *p);

/* Test hook: fail the n-th allocation from now on (0 = never). Any thread. */
void hm_alloc_fail_after(long n);
/* Number of allocations made since the last hm_alloc_fail_after() call. */
long hm_alloc_count(void);

#endif
