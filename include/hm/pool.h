/*
 * pool.h - the engine's compute pool: N threads (the caller is one of them) that run
 * a parallel-for and return when every task is done.
 *
 *     struct hm_pool *p; hm_pool_new(2, &p);
 *     hm_pool_run(p, n_rows, row_fn, ctx);    // row_fn(ctx, i, thread) for i < n_rows
 *     hm_pool_free(p);
 *
 * Tasks are handed out in order from an atomic counter, so which thread runs a task
 * varies; tasks must write disjoint memory and never depend on that. thread is in
 * [0, n_threads) and may index per-thread scratch. One hm_pool_run at a time
 * (the engine's step); not reentrant.
 */
#ifndef HM_POOL_H
#define HM_POOL_H

#include <stddef.h>

struct hm_pool;
typedef void (*hm_pool_fn)(void *ctx, size_t task, unsigned thread);

/* n_threads 0 = the number of online cores. Returns owned; free with hm_pool_free(). */
int hm_pool_new(unsigned n_threads, struct hm_pool **out);
void hm_pool_free(struct hm_pool *p);
unsigned hm_pool_n_threads(const struct hm_pool *p);
void hm_pool_run(struct hm_pool *p, size_t n_tasks, hm_pool_fn fn, void *ctx);
/* Number of online cores (at least 1). */
unsigned hm_cpu_count(void);

#endif
