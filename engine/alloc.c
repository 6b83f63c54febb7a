/*
 * alloc.c - allocation wrappers with failure injection for tests.
 *
 * The failure counter is process-wide and atomic so that tests of threaded
 * code can use it too. Once an allocation fails, later ones fail as well
 * until hm_alloc_fail_after() is called again (sticky, like SQLite's
 * mallocFailed), which keeps every error path reachable by a simple loop.
 */
#include "hm/alloc.h"

#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static atomic_long fail_at;   /* 0 = never fail; else fail when count reaches it */
static atomic_long n_allocs;  /* allocations since the last hm_alloc_fail_after() */

void hm_alloc_fail_after(long n)
{
    atomic_store(&n_allocs, 0);
    atomic_store(&fail_at, n);
}

long hm_alloc_count(void)
{
    return atomic_load(&n_allocs);
}

static int should_fail(void)
{
    long c = atomic_fetch_add(&n_allocs, 1) + 1;
    long f = atomic_load(&fail_at);
    return f > 0 && c >= f;
}

void *hm_malloc(size_t n)
{
    if (should_fail())
        return NULL;
    return malloc(n ? n : 1);
}

void *hm_calloc(size_t count, size_t size)
{
    if (should_fail())
        return NULL;
    if (count == 0 || size == 0)
        return calloc(1, 1);
    return calloc(count, size);
}

void *hm_realloc(void *p, size_t n)
{
    if (should_fail())
        return NULL;
    return realloc(p, n ? n : 1);
}

void hm_free(void *p)
{
    free(p);
}

void *hm_mallocarray(size_t count, size_t size)
{
    if (size && count > SIZE_MAX / size)
        return NULL;
    return hm_malloc(count * size);
}

char *hm_strndup(const char *s, size_t n)
{
    size_t len = strnlen(s, n);
    char *d = hm_malloc(len + 1);
    if (!d)
        return NULL;
    memcpy(d, s, len);
    d[len] = '\0';
    return d;
}

char *hm_memdup_z(const void *p, size_t n)
{
    char *d = n < SIZE_MAX ? hm_malloc(n + 1) : NULL;
    if (!d)
        return NULL;
    memcpy(d, p, n);
    d[n] = '\0';
    return d;
}

char *hm_strdup(const char *s)
{
    return hm_strndup(s, SIZE_MAX);
}

void *hm_malloc_aligned(size_t n)
{
    void *p = NULL;
    if (should_fail())
        return NULL;
    n = (n + 63) & ~(size_t)63;
    if (posix_memalign(&p, 64, n ? n : 64) != 0)
        return NULL;
    return p;
}

void hm_free_aligned(void *p)
{
    free(p);
}
