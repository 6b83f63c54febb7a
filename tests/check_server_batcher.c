/*
 * check_server_batcher.c - the continuous batcher against the real engine and the tiny
 * model: events in order, max_tokens, cancellation freeing slots and KV at once,
 * admission by max_running and kv_budget (FIFO), batch invariance at temperature 0.
 */
#include <check.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hm/alloc.h"
#include "hm/err.h"
#include "hm/model.h"
#include "hm/tokenizer.h"

#include "batcher.h"
#include "testutil.h"

static struct hm_model *model;

static void load_model(void)
{
    char path[1024];
    const char *b = getenv("HM_BUILDDIR");
    struct hm_errmsg em = { { 0 } };

    snprintf(path, sizeof(path), "%s/models/tiny.gguf", b && *b ? b : HM_BUILDDIR);
    ck_assert_msg(hm_model_load(path, &model, &em) == HM_OK, "%s", em.text);
}

static void free_model(void)
{
    hm_model_free(model);
    model = NULL;
}

/* The test's doorbell: a condition variable instead of uv_async. */
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int rings;

static void notify(void *ctx)
{
    (void)ctx;
    pthread_mutex_lock(&mu);
    rings++;
    pthread_cond_signal(&cv);
    pthread_mutex_unlock(&mu);
}

struct result {
    char text[4096];
    size_t len;
    unsigned n_tokens;
    int32_t tokens[300];
    enum hm_finish finish;
    bool admitted, done;
    int order_admitted; /* global admission order */
};

static int admit_counter;

/* Takes events until every job in jobs[] has finished. results indexed by job then seq. */
static void collect(struct hm_batcher *b, struct hm_job **jobs, size_t n_jobs,
                    struct result (*res)[4])
{
    size_t done = 0;

    while (done < n_jobs) {
        struct hm_event *ev, *next;
        pthread_mutex_lock(&mu);
        while (!rings) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += 1;
            pthread_cond_timedwait(&cv, &mu, &ts);
            break;
        }
        rings = 0;
        pthread_mutex_unlock(&mu);
        for (ev = hm_batcher_take_events(b); ev; ev = next) {
            size_t j;
            next = ev->next;
            for (j = 0; j < n_jobs && jobs[j] != ev->job; j++)
                ;
            ck_assert_uint_lt(j, n_jobs);
            struct result *r = &res[j][ev->index];
            switch (ev->kind) {
            case HM_EV_ADMITTED:
                for (size_t k = 0; k < 4; k++) {
                    res[j][k].admitted = true;
                    res[j][k].order_admitted = admit_counter;
                }
                admit_counter++;
                break;
            case HM_EV_TOKEN:
                ck_assert(res[j][0].admitted);
                ck_assert(!r->done);
                if (ev->text_len)
                    memcpy(r->text + r->len, ev->text, ev->text_len);
                r->len += ev->text_len;
                r->text[r->len] = '\0';
                if (ev->has_sample && r->n_tokens < 300)
                    r->tokens[r->n_tokens++] = ev->sample.token;
                break;
            case HM_EV_SEQ_DONE:
                ck_assert(!r->done);
                if (ev->text_len)
                    memcpy(r->text + r->len, ev->text, ev->text_len);
                r->len += ev->text_len;
                r->text[r->len] = '\0';
                r->done = true;
                r->finish = ev->finish;
                ck_assert_uint_eq(ev->n_gen, r->n_tokens);
                break;
            case HM_EV_JOB_DONE:
                done++;
                break;
            case HM_EV_PROMPT:
                ck_abort_msg("prompt scores without echo");
                break;
            }
            hm_event_free(ev);
        }
    }
}

static struct hm_job *make_job(const char *prompt, size_t n_seq, uint32_t max_tokens)
{
    struct hm_job *j;
    int32_t *ids;
    size_t n;

    ck_assert_int_eq(hm_job_new(n_seq, &j), HM_OK);
    ck_assert_int_eq(hm_tokenizer_encode(model->tok, prompt, strlen(prompt), HM_TOK_ADD_BOS,
                                         &ids, &n), HM_OK);
    j->max_tokens = max_tokens;
    j->sp.temperature = 0;
    for (size_t i = 0; i < n_seq; i++) {
        j->seqs[i].index = (unsigned)i;
        j->seqs[i].n_prompt = (uint32_t)n;
        j->seqs[i].prompt = hm_mallocarray(n, sizeof(int32_t));
        memcpy(j->seqs[i].prompt, ids, n * sizeof(int32_t));
    }
    hm_free(ids);
    j->kv_bytes = 1000 * n_seq;
    return j;
}

static struct hm_batcher *make_batcher(unsigned max_running, unsigned step_tokens,
                                       uint64_t kv_budget)
{
    struct hm_batcher_opts o = { .max_running = max_running, .step_tokens = step_tokens,
                                 .kv_budget = kv_budget, .n_threads = 1,
                                 .deterministic = true };
    struct hm_batcher *b;

    rings = 0;
    admit_counter = 0;
    ck_assert_int_eq(hm_batcher_new(model, &o, notify, NULL, &b), HM_OK);
    return b;
}

START_TEST(one_job_events)
{
    struct hm_batcher *b = make_batcher(4, 64, 1 << 20);
    struct hm_job *j = make_job("Hello", 1, 10);
    struct result res[1][4];
    struct hm_batcher_stats st;

    memset(res, 0, sizeof(res));
    hm_batcher_submit(b, j);
    collect(b, &j, 1, res);
    ck_assert(res[0][0].done);
    if (res[0][0].finish == HM_FINISH_LENGTH)
        ck_assert_uint_eq(res[0][0].n_tokens, 10);
    else
        ck_assert_int_eq(res[0][0].finish, HM_FINISH_STOP);
    hm_batcher_get_stats(b, &st);
    ck_assert_uint_eq(st.running_seqs, 0);
    ck_assert_uint_eq(st.kv_used, 0);
    ck_assert_uint_ge(st.steps, 1);
    hm_job_unref(j);
    hm_batcher_free(b);
}
END_TEST

START_TEST(batch_invariance)
{
    /* four jobs alone, then together (small step budget: prompts prefilled in chunks
     * interleaved with decodes): identical tokens */
    static const char *const prompts[] = { "The quick brown fox", "a", "Once upon a time, in",
                                           "xyz" };
    struct result alone[4][4], together[4][4];
    struct hm_job *jobs[4];
    struct hm_batcher *b = make_batcher(8, 8, 1 << 24);

    memset(alone, 0, sizeof(alone));
    memset(together, 0, sizeof(together));
    for (int i = 0; i < 4; i++) {
        struct hm_job *j = make_job(prompts[i], 1, 20);
        hm_batcher_submit(b, j);
        collect(b, &j, 1, &alone[i]);
        hm_job_unref(j);
    }
    for (int i = 0; i < 4; i++) {
        jobs[i] = make_job(prompts[i], i == 1 ? 2 : 1, 20);
        hm_batcher_submit(b, jobs[i]);
    }
    collect(b, jobs, 4, together);
    for (int i = 0; i < 4; i++) {
        ck_assert_uint_eq(together[i][0].n_tokens, alone[i][0].n_tokens);
        ck_assert_mem_eq(together[i][0].tokens, alone[i][0].tokens,
                         alone[i][0].n_tokens * sizeof(int32_t));
        ck_assert_str_eq(together[i][0].text, alone[i][0].text);
        hm_job_unref(jobs[i]);
    }
    /* n = 2 at temperature 0: both choices equal */
    ck_assert_str_eq(together[1][1].text, together[1][0].text);
    hm_batcher_free(b);
}
END_TEST

START_TEST(fifo_admission_max_running)
{
    struct hm_batcher *b = make_batcher(1, 16, 1 << 24);
    struct hm_job *jobs[3];
    struct result res[3][4];

    memset(res, 0, sizeof(res));
    for (int i = 0; i < 3; i++) {
        jobs[i] = make_job("abc", 1, 5);
        hm_batcher_submit(b, jobs[i]);
    }
    collect(b, jobs, 3, res);
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(res[i][0].order_admitted, i);
        hm_job_unref(jobs[i]);
    }
    hm_batcher_free(b);
}
END_TEST

START_TEST(kv_budget_admission)
{
    /* budget for one job at a time: they run one after the other, in order */
    struct hm_batcher *b = make_batcher(8, 64, 1500);
    struct hm_job *jobs[2];
    struct result res[2][4];

    memset(res, 0, sizeof(res));
    for (int i = 0; i < 2; i++) {
        jobs[i] = make_job("abc", 1, 30);
        hm_batcher_submit(b, jobs[i]);
    }
    collect(b, jobs, 2, res);
    ck_assert_int_eq(res[0][0].order_admitted, 0);
    ck_assert_int_eq(res[1][0].order_admitted, 1);
    for (int i = 0; i < 2; i++)
        hm_job_unref(jobs[i]);
    hm_batcher_free(b);
}
END_TEST

START_TEST(cancel_frees_at_once)
{
    struct hm_batcher *b = make_batcher(2, 64, 1 << 24);
    struct hm_job *j = make_job("abc", 2, 250);
    struct result res[1][4];
    struct hm_batcher_stats st;

    memset(res, 0, sizeof(res));
    hm_job_cancel(j); /* cancelled before it even starts: ends with CANCELLED */
    hm_batcher_submit(b, j);
    collect(b, &j, 1, res);
    ck_assert_int_eq(res[0][0].finish, HM_FINISH_CANCELLED);
    ck_assert_int_eq(res[0][1].finish, HM_FINISH_CANCELLED);
    hm_batcher_get_stats(b, &st);
    ck_assert_uint_eq(st.running_seqs, 0);
    ck_assert_uint_eq(st.kv_used, 0);
    ck_assert_uint_eq(st.waiting_seqs, 0);
    hm_job_unref(j);
    hm_batcher_free(b);
}
END_TEST

START_TEST(deadline_and_shutdown)
{
    struct hm_batcher *b = make_batcher(2, 64, 1 << 24);
    struct hm_job *j = make_job("abc", 1, 250);
    struct result res[1][4];

    memset(res, 0, sizeof(res));
    j->deadline_ns = hm_now_ns(); /* already due */
    hm_batcher_submit(b, j);
    collect(b, &j, 1, res);
    ck_assert_int_eq(res[0][0].finish, HM_FINISH_TIMEOUT);
    hm_job_unref(j);
    /* free with a job still queued: it ends (SHUTDOWN) and nothing leaks */
    j = make_job("abc", 1, 250);
    hm_batcher_submit(b, j);
    hm_batcher_free(b);
    hm_job_unref(j);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("server_batcher");
    TCase *tc = tcase_create("core");
    tcase_add_unchecked_fixture(tc, load_model, free_model);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, one_job_events);
    tcase_add_test(tc, batch_invariance);
    tcase_add_test(tc, fifo_admission_max_running);
    tcase_add_test(tc, kv_budget_admission);
    tcase_add_test(tc, cancel_frees_at_once);
    tcase_add_test(tc, deadline_and_shutdown);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return hm_test_run(suite(), CK_NORMAL);
}
