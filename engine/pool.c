/*
 * pool.c - the engine's compute pool (pool.h): persistent threads running a parallel-for.
 *
 * DESIGN
 * n_threads - 1 worker threads are created once; the caller of hm_pool_run is thread 0 and
 * takes tasks too. A run is published as ONE atomic 64-bit word `work` = generation (20
 * bits) | n_tasks (22 bits) | next task index (22 bits). A thread claims a task with a
 * compare-and-swap that increments the index only while the generation is still the one
 * it saw and the index is below n_tasks; after a successful claim the run cannot finish
 * (its task is not done), so fn and ctx read then are this run's. Every finished task
 * bumps `done`, and the caller returns when done == n_tasks.
 *
 * So the caller waits only for tasks, never for threads: a worker that the OS has not
 * scheduled yet (the machine has 2 cores and is shared) simply finds no task left when it
 * wakes, and the caller does the work itself. Workers spin briefly for the next run (a
 * step issues many runs back to back) and then sleep on a condition variable; the caller
 * takes the mutex to broadcast only when some worker sleeps. `work` and `sleepers` are
 * sequentially consistent, so either the caller sees the sleeper or the sleeper sees the
 * new generation (no lost wake-up).
 */
#include "hm/pool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <unistd.h>

#include "hm/alloc.h"
#include "hm/err.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define cpu_relax() _mm_pause()
#else
#define cpu_relax() ((void)0)
#endif

/* Spin iterations before sleeping (each a pause instruction: a few ns to ~40 ns). */
#define POOL_SPIN 2000
#define IDX_BITS 22
#define MAX_TASKS ((1u << IDX_BITS) - 1)
#define GEN_SHIFT (2 * IDX_BITS)
#define W_GEN(w) ((uint32_t)((w) >> GEN_SHIFT))
#define W_N(w) ((uint32_t)(((w) >> IDX_BITS) & MAX_TASKS))
#define W_IDX(w) ((uint32_t)((w)&MAX_TASKS))

struct hm_pool {
    unsigned n_threads;
    pthread_t *threads; /* n_threads - 1 workers */
    unsigned n_started;
    pthread_mutex_t mu;
    pthread_cond_t work_cv; /* sleeping workers wait here for a new generation */
    _Atomic uint64_t work;  /* gen | n_tasks | next index */
    atomic_uint sleepers;
    atomic_bool stop;
    atomic_size_t done; /* tasks finished in the current run */
    uint32_t gen;       /* caller's copy of the current generation */
    /* the current run; written by the caller before `work` is published */
    hm_pool_fn fn;
    void *ctx;
};

struct worker_arg {
    struct hm_pool *p;
    unsigned id;
};

unsigned hm_cpu_count(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1u : (unsigned)n;
}

/* Claims and runs tasks of generation gen until none is left. */
static void run_tasks(struct hm_pool *p, uint32_t gen, unsigned id)
{
    uint64_t w = atomic_load(&p->work);
    for (;;) {
        if (W_GEN(w) != gen || W_IDX(w) >= W_N(w))
            return;
        if (atomic_compare_exchange_weak(&p->work, &w, w + 1)) {
            p->fn(p->ctx, W_IDX(w), id);
            atomic_fetch_add_explicit(&p->done, 1, memory_order_release);
            w = atomic_load(&p->work);
        }
    }
}

static void *worker_main(void *arg)
{
    struct hm_pool *p = ((struct worker_arg *)arg)->p;
    unsigned id = ((struct worker_arg *)arg)->id;
    uint32_t seen = 0;

    hm_free(arg);
    for (;;) {
        uint32_t g = W_GEN(atomic_load(&p->work));
        int spin;
        for (spin = 0; spin < POOL_SPIN && g == seen && !atomic_load(&p->stop); spin++) {
            cpu_relax();
            g = W_GEN(atomic_load(&p->work));
        }
        if (g == seen && !atomic_load(&p->stop)) {
            pthread_mutex_lock(&p->mu);
            atomic_fetch_add(&p->sleepers, 1);
            while ((g = W_GEN(atomic_load(&p->work))) == seen && !atomic_load(&p->stop))
                pthread_cond_wait(&p->work_cv, &p->mu);
            atomic_fetch_sub(&p->sleepers, 1);
            pthread_mutex_unlock(&p->mu);
        }
        if (atomic_load(&p->stop))
            break;
        seen = g;
        run_tasks(p, g, id);
    }
    return NULL;
}

int hm_pool_new(unsigned n_threads, struct hm_pool **out)
{
    struct hm_pool *p;
    unsigned i;

    *out = NULL;
    if (n_threads == 0)
        n_threads = hm_cpu_count();
    p = hm_calloc(1, sizeof(*p));
    if (!p)
        return HM_ENOMEM;
    p->n_threads = n_threads;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->work_cv, NULL);
    atomic_init(&p->work, 0);
    atomic_init(&p->sleepers, 0);
    atomic_init(&p->stop, false);
    atomic_init(&p->done, 0);
    if (n_threads > 1) {
        p->threads = hm_calloc(n_threads - 1, sizeof(*p->threads));
        if (!p->threads)
            goto fail;
        for (i = 1; i < n_threads; i++) {
            struct worker_arg *a = hm_malloc(sizeof(*a));
            if (!a)
                goto fail;
            a->p = p;
            a->id = i;
            if (pthread_create(&p->threads[i - 1], NULL, worker_main, a) != 0) {
                hm_free(a);
                goto fail;
            }
            p->n_started++;
        }
    }
    *out = p;
    return HM_OK;
fail:
    hm_pool_free(p);
    return HM_ENOMEM;
}

void hm_pool_free(struct hm_pool *p)
{
    unsigned i;
    if (!p)
        return;
    if (p->n_started) {
        atomic_store(&p->stop, true);
        pthread_mutex_lock(&p->mu);
        pthread_cond_broadcast(&p->work_cv);
        pthread_mutex_unlock(&p->mu);
        for (i = 0; i < p->n_started; i++)
            pthread_join(p->threads[i], NULL);
    }
    hm_free(p->threads);
    pthread_cond_destroy(&p->work_cv);
    pthread_mutex_destroy(&p->mu);
    hm_free(p);
}

unsigned hm_pool_n_threads(const struct hm_pool *p)
{
    return p ? p->n_threads : 1;
}

void hm_pool_run(struct hm_pool *p, size_t n_tasks, hm_pool_fn fn, void *ctx)
{
    size_t i;
    int spin;

    if (n_tasks == 0)
        return;
    if (!p || p->n_started == 0 || n_tasks == 1) {
        for (i = 0; i < n_tasks; i++)
            fn(ctx, i, 0);
        return;
    }
    if (n_tasks > MAX_TASKS) /* the engine's runs are far smaller (rows of one step) */
        HM_BUG("pool: too many tasks in one run");
    p->fn = fn;
    p->ctx = ctx;
    atomic_store(&p->done, 0);
    p->gen = (p->gen + 1) & ((1u << (64 - GEN_SHIFT)) - 1);
    if (p->gen == 0)
        p->gen = 1; /* workers start having seen generation 0 */
    atomic_store(&p->work, ((uint64_t)p->gen << GEN_SHIFT) | ((uint64_t)n_tasks << IDX_BITS));
    if (atomic_load(&p->sleepers) > 0) {
        pthread_mutex_lock(&p->mu);
        pthread_cond_broadcast(&p->work_cv);
        pthread_mutex_unlock(&p->mu);
    }
    run_tasks(p, p->gen, 0);
    for (spin = 0; atomic_load_explicit(&p->done, memory_order_acquire) < n_tasks; spin++) {
        if (spin < POOL_SPIN)
            cpu_relax();
        else
            sched_yield(); /* a worker holding a task was descheduled: let it run */
    }
}
