/*
 * batcher.c - continuous batching on one thread.
 *
 * DESIGN
 * The batcher thread owns the engine, every session and sampler, and the two FIFO
 * lists `waiting` and `running`. Other threads talk to it through two locked queues:
 * the submit queue (jobs in) and the done-queue (events out, followed by the notify
 * callback, which is the loop's uv_async_send; sends coalesce, so the loop takes the
 * whole done-queue in one swap). Each iteration of the thread:
 *
 *   1. moves submitted jobs to the tail of `waiting` (FIFO);
 *   2. ends jobs whose cancel flag is set or whose deadline passed, waiting or running:
 *      their sessions (KV cache) are freed now, so a disconnect frees its slot within
 *      one step;
 *   3. admits from the head of `waiting` while the head fits: running sequences +
 *      its n_seq <= max_running and KV bytes in use + its planned KV bytes <= kv_budget.
 *      Admission stops at the first job that does not fit (strict FIFO: a big request
 *      is not starved by small ones behind it). A job's sequences are admitted together;
 *   4. builds one step under the token budget step_tokens: first one token for every
 *      decoding sequence (oldest first), then prefill chunks of prompts (oldest first)
 *      with what is left of the budget, so long prompts never stall running decodes;
 *   5. runs hm_engine_step, then for every item that produced logits: samples, appends
 *      the token, decodes its bytes through hm_utf8_stream (partial characters held
 *      back), feeds the stop matcher (text that may start a stop sequence held back),
 *      and queues a TOKEN event; a finished sequence frees its session at once and
 *      queues SEQ_DONE; the last one of a job queues JOB_DONE. A job with
 *      prompt_logprobs (echo) runs its prompt chunks with every position's logits (at
 *      most HM_ECHO_CHUNK tokens a step) and scores them into PROMPT events first.
 * The thread sleeps on a condition variable when there is nothing to run.
 */
#include "batcher.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "hm/alloc.h"
#include "hm/model.h"

uint64_t hm_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

struct hm_batcher {
    const struct hm_model *m;
    struct hm_engine *e;
    struct hm_batcher_opts o;
    hm_batcher_notify_cb notify;
    void *ctx;
    pthread_t thread;
    bool started;

    pthread_mutex_t lock;      /* guards everything down to `st` */
    pthread_cond_t cond;
    bool stop;
    bool cancel_all;
    struct hm_job *sub_head, *sub_tail;
    struct hm_event *ev_head, *ev_tail;
    struct hm_batcher_stats st;

    _Atomic uint64_t heartbeat_ns;

    /* batcher thread only */
    struct hm_job *wait_head, *wait_tail;
    struct hm_job **running;   /* admission order */
    size_t n_running, cap_running;
    unsigned running_seqs, waiting_seqs, waiting_jobs;
    uint64_t kv_used;
    struct hm_step_item *items;
    struct hm_job_seq **item_seq;
    struct hm_job **item_job;
    struct hm_event *pend_head, *pend_tail; /* events of this iteration, published at once */
    /* local stats, copied into st under the lock */
    struct hm_batcher_stats local;
};

int hm_job_new(size_t n_seq, struct hm_job **out)
{
    struct hm_job *j = hm_calloc(1, sizeof(*j) + n_seq * sizeof(j->seqs[0]));

    *out = j;
    if (!j)
        return HM_ENOMEM;
    atomic_init(&j->refs, 1);
    atomic_init(&j->cancel, false);
    j->n_seq = n_seq;
    j->so = hm_session_opts_default();
    j->sp = hm_sampler_params_default();
    return HM_OK;
}

void hm_job_unref(struct hm_job *j)
{
    if (!j || atomic_fetch_sub(&j->refs, 1) != 1)
        return;
    for (size_t i = 0; i < j->n_seq; i++) {
        struct hm_job_seq *q = &j->seqs[i];
        hm_free(q->prompt);
        hm_session_free(q->s);
        hm_sampler_free(q->sm);
        hm_free(q->logits);
        hm_free(q->prompt_logits);
        hm_stopper_release(&q->stopper);
    }
    for (size_t i = 0; i < 4; i++)
        hm_free(j->stops[i]);
    hm_free(j->bias);
    hm_free(j);
}

void hm_job_cancel(struct hm_job *j)
{
    atomic_store(&j->cancel, true);
}

void hm_event_free(struct hm_event *ev)
{
    if (!ev)
        return;
    if (ev->kind == HM_EV_JOB_DONE)
        hm_job_unref(ev->job);
    hm_free(ev->text);
    hm_free(ev->prompt);
    hm_free(ev);
}

/* ---- events ------------------------------------------------------------------- */

/* Allocation failure of an event is handled by dropping text-less events; SEQ_DONE and
 * JOB_DONE use a retry loop because losing them would hang a request. */
static struct hm_event *event_new(struct hm_job *j, enum hm_ev_kind kind, unsigned index)
{
    struct hm_event *ev;

    for (int tries = 0;; tries++) {
        ev = hm_calloc(1, sizeof(*ev));
        if (ev || kind == HM_EV_TOKEN || kind == HM_EV_ADMITTED || kind == HM_EV_PROMPT)
            break;
        struct timespec ts = { 0, 1000000 };
        nanosleep(&ts, NULL);
    }
    if (!ev)
        return NULL;
    ev->job = j;
    ev->kind = kind;
    ev->index = index;
    ev->t_ns = hm_now_ns();
    return ev;
}

static void event_queue(struct hm_batcher *b, struct hm_event *ev)
{
    if (!ev)
        return;
    if (b->pend_tail)
        b->pend_tail->next = ev;
    else
        b->pend_head = ev;
    b->pend_tail = ev;
}

/* Publishes this iteration's events and the stats (lock held by caller). */
static void publish_locked(struct hm_batcher *b)
{
    b->local.running_seqs = b->running_seqs;
    b->local.waiting_seqs = b->waiting_seqs;
    b->local.waiting_jobs = b->waiting_jobs;
    b->local.kv_used = b->kv_used;
    b->st = b->local;
    if (b->pend_head) {
        if (b->ev_tail)
            b->ev_tail->next = b->pend_head;
        else
            b->ev_head = b->pend_head;
        b->ev_tail = b->pend_tail;
        b->pend_head = b->pend_tail = NULL;
    }
}

/* ---- sequences ---------------------------------------------------------------- */

static void take_text(struct hm_event *ev, struct hm_buf *text)
{
    if (!ev) {
        hm_buf_release(text);
        return;
    }
    ev->text = hm_buf_detach(text, &ev->text_len);
}

/* Ends sequence q of job j with `finish`; tail = text still to deliver (consumed). */
static void seq_finish(struct hm_batcher *b, struct hm_job *j, struct hm_job_seq *q,
                       enum hm_finish finish, int err, const char *msg, struct hm_buf *tail)
{
    struct hm_event *ev = event_new(j, HM_EV_SEQ_DONE, q->index);

    if (ev) {
        ev->finish = finish;
        ev->err = err;
        if (msg)
            snprintf(ev->msg, sizeof(ev->msg), "%s", msg);
        ev->n_prompt = q->n_prompt;
        ev->n_gen = q->n_gen;
        if (q->s)
            hm_session_get_stats(q->s, &ev->stats);
        if (tail)
            take_text(ev, tail);
    } else if (tail) {
        hm_buf_release(tail);
    }
    if (q->s) {
        struct hm_session_stats st;
        hm_session_get_stats(q->s, &st);
        hm_hist_observe(&b->local.experts_per_token, st.mean_experts);
        hm_hist_observe(&b->local.window, (double)st.window);
        hm_hist_observe(&b->local.complexity, st.c_req);
        hm_session_free(q->s);
        q->s = NULL;
        b->running_seqs--;
    }
    hm_sampler_free(q->sm);
    q->sm = NULL;
    hm_free(q->logits);
    q->logits = NULL;
    hm_free(q->prompt_logits);
    q->prompt_logits = NULL;
    q->done = true;
    j->n_done++;
    event_queue(b, ev);
}

/* Ends every unfinished sequence of j; then, if all are done, JOB_DONE. */
static void job_finish_all(struct hm_batcher *b, struct hm_job *j, enum hm_finish finish,
                           int err, const char *msg)
{
    for (size_t i = 0; i < j->n_seq; i++)
        if (!j->seqs[i].done)
            seq_finish(b, j, &j->seqs[i], finish, err, msg, NULL);
}

static bool job_check_done(struct hm_batcher *b, struct hm_job *j)
{
    if (j->n_done < j->n_seq)
        return false;
    if (j->admitted) {
        b->kv_used -= j->kv_bytes;
        j->admitted = false;
    }
    /* the batcher's reference now travels with this event */
    event_queue(b, event_new(j, HM_EV_JOB_DONE, 0));
    return true;
}

static enum hm_finish job_abort_reason(struct hm_batcher *b, struct hm_job *j, uint64_t now)
{
    if (b->cancel_all)
        return HM_FINISH_SHUTDOWN;
    if (atomic_load(&j->cancel))
        return HM_FINISH_CANCELLED;
    if (j->deadline_ns && now >= j->deadline_ns)
        return HM_FINISH_TIMEOUT;
    return HM_FINISH_NONE;
}

static int running_push(struct hm_batcher *b, struct hm_job *j)
{
    if (b->n_running == b->cap_running) {
        size_t cap = b->cap_running ? 2 * b->cap_running : 16;
        struct hm_job **r = hm_realloc(b->running, cap * sizeof(*r));
        if (!r)
            return HM_ENOMEM;
        b->running = r;
        b->cap_running = cap;
    }
    b->running[b->n_running++] = j;
    return HM_OK;
}

/* Creates sessions and samplers of a job being admitted. */
static void job_start(struct hm_batcher *b, struct hm_job *j)
{
    uint32_t V = b->m->hp.n_vocab;

    j->admitted = true;
    b->kv_used += j->kv_bytes;
    event_queue(b, event_new(j, HM_EV_ADMITTED, 0));
    for (size_t i = 0; i < j->n_seq; i++) {
        struct hm_job_seq *q = &j->seqs[i];
        struct hm_session_opts so = j->so;
        struct hm_errmsg em = { { 0 } };
        int rc;

        so.max_tokens = j->max_tokens;
        hm_utf8_stream_init(&q->us);
        hm_stopper_init(&q->stopper, j->stops, j->n_stop);
        rc = hm_session_new(b->m, q->prompt, q->n_prompt, &so, &q->s, &em);
        if (rc < 0) {
            seq_finish(b, j, q, HM_FINISH_ERROR, rc, em.text[0] ? em.text : hm_strerror(rc),
                       NULL);
            continue;
        }
        b->running_seqs++;
        /* each choice samples with its own PRNG stream: seed + choice index */
        struct hm_sampler_params sp = j->sp;
        sp.seed = j->sp.seed + q->index;
        rc = hm_sampler_new(&sp, V, &q->sm);
        q->logits = hm_mallocarray(V, sizeof(float));
        if (j->prompt_logprobs)
            q->prompt_logits = hm_mallocarray((size_t)HM_ECHO_CHUNK * V, sizeof(float));
        if (rc < 0 || !q->logits || (j->prompt_logprobs && !q->prompt_logits)) {
            seq_finish(b, j, q, HM_FINISH_ERROR, rc < 0 ? rc : HM_ENOMEM,
                       rc < 0 ? "invalid sampling parameters" : "out of memory", NULL);
            continue;
        }
        b->local.prompt_tokens += q->n_prompt;
    }
}

/* Handles the logits of sequence q after a step: sample, detokenize, stop checks. */
static void seq_after_logits(struct hm_batcher *b, struct hm_job *j, struct hm_job_seq *q)
{
    const struct hm_tokenizer *tok = b->m->tok;
    struct hm_sample smp;
    struct hm_buf text;
    enum hm_finish finish = HM_FINISH_NONE;
    bool stopped = false;
    uint8_t dec[3 * (256 + 4)];
    size_t blen = 0, nd;
    const uint8_t *bytes;
    int rc;

    if (j->max_tokens == 0) { /* echo: the prompt was all that was asked for */
        seq_finish(b, j, q, HM_FINISH_LENGTH, 0, NULL, NULL);
        return;
    }
    hm_buf_init(&text, (size_t)1 << 20);
    rc = hm_sampler_sample(q->sm, q->logits, &smp);
    if (rc < 0) {
        seq_finish(b, j, q, HM_FINISH_ERROR, rc, "sampling failed", NULL);
        return;
    }
    hm_sampler_accept(q->sm, smp.token);
    if (tok && !j->ignore_eos && smp.token == hm_tokenizer_eos(tok)) {
        finish = HM_FINISH_STOP;
        goto flush;
    }
    q->n_gen++;
    b->local.generated_tokens++;
    bytes = tok ? hm_tokenizer_token_bytes(tok, smp.token, &blen) : NULL;
    /* a token's bytes are short; feed them in slices that fit dec[] */
    while (blen && !stopped) {
        size_t take = blen > 256 ? 256 : blen;
        nd = hm_utf8_stream_push(&q->us, bytes, take, dec, sizeof(dec));
        bytes += take;
        blen -= take;
        if (hm_stopper_push(&q->stopper, (const char *)dec, nd, &text, &stopped) < 0)
            goto oom;
    }
    if (stopped)
        finish = HM_FINISH_STOP;
    else if (q->n_gen >= j->max_tokens)
        finish = HM_FINISH_LENGTH;
    else if ((rc = hm_session_push(q->s, smp.token)) < 0)
        finish = HM_FINISH_LENGTH; /* context full (cannot happen: N was planned) */
    {
        struct hm_event *ev = event_new(j, HM_EV_TOKEN, q->index);
        if (ev) {
            ev->has_sample = true;
            ev->sample = smp;
        }
        take_text(ev, &text);
        event_queue(b, ev);
    }
    hm_buf_init(&text, (size_t)1 << 20);
    if (finish == HM_FINISH_NONE)
        return;
flush:
    if (!stopped) {
        nd = hm_utf8_stream_flush(&q->us, dec, sizeof(dec));
        if (hm_stopper_push(&q->stopper, (const char *)dec, nd, &text, &stopped) < 0)
            goto oom;
        if (!stopped && hm_stopper_finish(&q->stopper, &text) < 0)
            goto oom;
    }
    seq_finish(b, j, q, finish, 0, NULL, &text);
    return;
oom:
    hm_buf_release(&text);
    seq_finish(b, j, q, HM_FINISH_ERROR, HM_ENOMEM, "out of memory", NULL);
}

/* After a prompt chunk of `take` tokens run with all logits (echo with logprobs): scores
 * the prompt tokens those logits predict (row r predicts the token after position
 * past + r), queues them as one HM_EV_PROMPT, and at the end of the prompt goes on to
 * the first generated token with the last row. */
static void seq_after_prompt_chunk(struct hm_batcher *b, struct hm_job *j, struct hm_job_seq *q,
                                   uint32_t take)
{
    uint32_t V = b->m->hp.n_vocab, end = hm_session_n_past(q->s), past = end - take;
    uint32_t last = end < q->n_prompt - 1 ? end : q->n_prompt - 1;
    uint32_t count = last > past ? last - past : 0;

    if (count) {
        struct hm_event *ev = event_new(j, HM_EV_PROMPT, q->index);
        if (ev)
            ev->prompt = hm_mallocarray(count, sizeof(*ev->prompt));
        if (!ev || !ev->prompt) {
            hm_event_free(ev);
            seq_finish(b, j, q, HM_FINISH_ERROR, HM_ENOMEM, "out of memory", NULL);
            return;
        }
        for (uint32_t k = 0; k < count; k++) {
            int rc = hm_sampler_score(q->prompt_logits + (size_t)k * V, V,
                                      q->prompt[past + 1 + k], j->sp.n_top_logprobs,
                                      &ev->prompt[k]);
            if (rc < 0) {
                hm_event_free(ev);
                seq_finish(b, j, q, HM_FINISH_ERROR, rc, "scoring the prompt failed", NULL);
                return;
            }
        }
        ev->n_prompt_samples = count;
        event_queue(b, ev);
    }
    if (end == q->n_prompt) {
        memcpy(q->logits, q->prompt_logits + (size_t)(take - 1) * V, (size_t)V * sizeof(float));
        seq_after_logits(b, j, q);
    }
}

/* ---- the thread --------------------------------------------------------------- */

static void reap_running(struct hm_batcher *b)
{
    size_t w = 0;

    for (size_t i = 0; i < b->n_running; i++) {
        struct hm_job *j = b->running[i];
        if (!job_check_done(b, j))
            b->running[w++] = j;
    }
    b->n_running = w;
}

static void check_aborts(struct hm_batcher *b)
{
    uint64_t now = hm_now_ns();
    struct hm_job **pp = &b->wait_head, *j;

    /* waiting jobs */
    b->wait_tail = NULL;
    while ((j = *pp)) {
        enum hm_finish f = job_abort_reason(b, j, now);
        if (f != HM_FINISH_NONE) {
            *pp = j->next;
            j->next = NULL;
            b->waiting_jobs--;
            b->waiting_seqs -= (unsigned)j->n_seq;
            job_finish_all(b, j, f, 0, NULL);
            job_check_done(b, j);
            continue;
        }
        b->wait_tail = j;
        pp = &j->next;
    }
    /* running jobs */
    for (size_t i = 0; i < b->n_running; i++) {
        enum hm_finish f = job_abort_reason(b, b->running[i], now);
        if (f != HM_FINISH_NONE)
            job_finish_all(b, b->running[i], f, 0, NULL);
    }
    reap_running(b);
}

static void admit(struct hm_batcher *b)
{
    struct hm_job *j;

    while ((j = b->wait_head)) {
        bool empty = b->running_seqs == 0 && b->n_running == 0;
        bool fits = b->running_seqs + j->n_seq <= b->o.max_running &&
                    b->kv_used + j->kv_bytes <= b->o.kv_budget;
        if (!fits && !empty)
            break;
        if (running_push(b, j) < 0)
            break; /* retry next iteration */
        b->wait_head = j->next;
        if (!b->wait_head)
            b->wait_tail = NULL;
        j->next = NULL;
        b->waiting_jobs--;
        b->waiting_seqs -= (unsigned)j->n_seq;
        if (!fits) {
            /* alone it still does not fit: validation should have refused it */
            job_finish_all(b, j, HM_FINISH_ERROR, HM_ETOOBIG,
                           "request does not fit in max_running / kv_budget");
            continue;
        }
        job_start(b, j);
    }
    reap_running(b);
}

/* Builds and runs one step. Returns false if there was nothing to run. */
static bool run_step(struct hm_batcher *b)
{
    uint32_t budget = b->o.step_tokens, n_tok = 0;
    size_t n = 0;
    uint64_t t0, t1;
    int rc;

    /* decodes first: one token for every sequence past its prompt */
    for (size_t i = 0; i < b->n_running && budget; i++) {
        struct hm_job *j = b->running[i];
        for (size_t k = 0; k < j->n_seq && budget; k++) {
            struct hm_job_seq *q = &j->seqs[k];
            if (q->done || !q->s || hm_session_n_past(q->s) < q->n_prompt)
                continue;
            b->items[n] = (struct hm_step_item){ .s = q->s, .n_tokens = 1, .logits = q->logits };
            b->item_seq[n] = q;
            b->item_job[n] = j;
            n++;
            budget--;
        }
    }
    /* then prompt chunks, oldest first */
    for (size_t i = 0; i < b->n_running && budget; i++) {
        struct hm_job *j = b->running[i];
        for (size_t k = 0; k < j->n_seq && budget; k++) {
            struct hm_job_seq *q = &j->seqs[k];
            uint32_t past, left, take;
            if (q->done || !q->s)
                continue;
            past = hm_session_n_past(q->s);
            if (past >= q->n_prompt)
                continue;
            left = q->n_prompt - past;
            take = left < budget ? left : budget;
            if (j->prompt_logprobs) {
                if (take > HM_ECHO_CHUNK)
                    take = HM_ECHO_CHUNK;
                b->items[n] = (struct hm_step_item){
                    .s = q->s, .n_tokens = take, .all_logits = true, .logits = q->prompt_logits
                };
            } else {
                b->items[n] = (struct hm_step_item){
                    .s = q->s, .n_tokens = take, .logits = take == left ? q->logits : NULL
                };
            }
            b->item_seq[n] = q;
            b->item_job[n] = j;
            n++;
            budget -= take;
        }
    }
    if (!n)
        return false;
    for (size_t i = 0; i < n; i++)
        n_tok += b->items[i].n_tokens;
    t0 = hm_now_ns();
    rc = hm_engine_step(b->e, b->items, n);
    t1 = hm_now_ns();
    b->local.steps++;
    b->local.step_tokens_total += n_tok;
    hm_hist_observe(&b->local.step_seconds, (double)(t1 - t0) * 1e-9);
    hm_hist_observe(&b->local.step_batch_size, (double)n);
    hm_hist_observe(&b->local.step_tokens, (double)n_tok);
    for (size_t i = 0; i < n; i++) {
        struct hm_job_seq *q = b->item_seq[i];
        if (q->done)
            continue;
        if (rc < 0)
            seq_finish(b, b->item_job[i], q, HM_FINISH_ERROR, rc, hm_strerror(rc), NULL);
        else if (b->items[i].all_logits)
            seq_after_prompt_chunk(b, b->item_job[i], q, b->items[i].n_tokens);
        else if (b->items[i].logits)
            seq_after_logits(b, b->item_job[i], q);
    }
    reap_running(b);
    return true;
}

static void *thread_main(void *arg)
{
    struct hm_batcher *b = arg;

    pthread_mutex_lock(&b->lock);
    for (;;) {
        /* 1. take submissions */
        while (b->sub_head) {
            struct hm_job *j = b->sub_head;
            b->sub_head = j->next;
            j->next = NULL;
            if (b->wait_tail)
                b->wait_tail->next = j;
            else
                b->wait_head = j;
            b->wait_tail = j;
            b->waiting_jobs++;
            b->waiting_seqs += (unsigned)j->n_seq;
        }
        b->sub_tail = NULL;
        if (b->stop && !b->wait_head && !b->n_running)
            break;
        if (!b->wait_head && !b->n_running) {
            publish_locked(b);
            pthread_cond_wait(&b->cond, &b->lock);
            continue;
        }
        if (b->stop)
            b->cancel_all = true;
        pthread_mutex_unlock(&b->lock);

        check_aborts(b);
        admit(b);
        if (run_step(b) && b->o.step_delay_ms) {
            struct timespec ts = { b->o.step_delay_ms / 1000,
                                   (long)(b->o.step_delay_ms % 1000) * 1000000L };
            nanosleep(&ts, NULL);
        }
        atomic_store(&b->heartbeat_ns, hm_now_ns());

        pthread_mutex_lock(&b->lock);
        bool any = b->pend_head != NULL;
        publish_locked(b);
        if (any && b->notify) {
            pthread_mutex_unlock(&b->lock);
            b->notify(b->ctx);
            pthread_mutex_lock(&b->lock);
        }
    }
    publish_locked(b);
    pthread_mutex_unlock(&b->lock);
    if (b->notify)
        b->notify(b->ctx);
    return NULL;
}

int hm_batcher_new(const struct hm_model *m, const struct hm_batcher_opts *o,
                   hm_batcher_notify_cb notify, void *ctx, struct hm_batcher **out)
{
    struct hm_batcher *b = hm_calloc(1, sizeof(*b));
    struct hm_engine_opts eo = hm_engine_opts_default();
    int rc = HM_ENOMEM;

    if (!b)
        goto out;
    b->m = m;
    b->o = *o;
    b->notify = notify;
    b->ctx = ctx;
    pthread_mutex_init(&b->lock, NULL);
    pthread_cond_init(&b->cond, NULL);
    atomic_init(&b->heartbeat_ns, hm_now_ns());
    hm_batcher_stats_init(&b->local, o->kv_budget);
    b->st = b->local;
    /* every running sequence may be in one step: items <= max_running */
    b->items = hm_calloc(o->max_running, sizeof(*b->items));
    b->item_seq = hm_calloc(o->max_running, sizeof(*b->item_seq));
    b->item_job = hm_calloc(o->max_running, sizeof(*b->item_job));
    if (!b->items || !b->item_seq || !b->item_job)
        goto out;
    eo.n_threads = o->n_threads;
    eo.max_step_tokens = o->step_tokens;
    eo.max_step_items = o->max_running;
    eo.matmul = o->deterministic ? HM_MATMUL_DETERMINISTIC : HM_MATMUL_BLAS;
    rc = hm_engine_new(m, &eo, &b->e);
    if (rc < 0)
        goto out;
    if (pthread_create(&b->thread, NULL, thread_main, b)) {
        rc = HM_ENOMEM;
        goto out;
    }
    b->started = true;
    rc = HM_OK;
out:
    if (rc < 0) {
        hm_batcher_free(b);
        b = NULL;
    }
    *out = b;
    return rc;
}

void hm_batcher_free(struct hm_batcher *b)
{
    struct hm_event *ev;

    if (!b)
        return;
    if (b->started) {
        pthread_mutex_lock(&b->lock);
        b->stop = true;
        pthread_cond_signal(&b->cond);
        pthread_mutex_unlock(&b->lock);
        pthread_join(b->thread, NULL);
    }
    while ((ev = b->ev_head)) {
        b->ev_head = ev->next;
        hm_event_free(ev);
    }
    hm_free(b->running);
    hm_free(b->items);
    hm_free(b->item_seq);
    hm_free(b->item_job);
    hm_engine_free(b->e);
    pthread_mutex_destroy(&b->lock);
    pthread_cond_destroy(&b->cond);
    hm_free(b);
}

void hm_batcher_submit(struct hm_batcher *b, struct hm_job *j)
{
    atomic_fetch_add(&j->refs, 1);
    j->t_submit_ns = hm_now_ns();
    j->next = NULL;
    pthread_mutex_lock(&b->lock);
    if (b->sub_tail)
        b->sub_tail->next = j;
    else
        b->sub_head = j;
    b->sub_tail = j;
    /* visible in /metrics before the thread wakes */
    b->st.waiting_jobs++;
    b->st.waiting_seqs += (unsigned)j->n_seq;
    pthread_cond_signal(&b->cond);
    pthread_mutex_unlock(&b->lock);
}

void hm_batcher_cancel_all(struct hm_batcher *b)
{
    pthread_mutex_lock(&b->lock);
    b->cancel_all = true;
    pthread_cond_signal(&b->cond);
    pthread_mutex_unlock(&b->lock);
}

struct hm_event *hm_batcher_take_events(struct hm_batcher *b)
{
    struct hm_event *ev;

    pthread_mutex_lock(&b->lock);
    ev = b->ev_head;
    b->ev_head = b->ev_tail = NULL;
    pthread_mutex_unlock(&b->lock);
    return ev;
}

void hm_batcher_stats_init(struct hm_batcher_stats *s, uint64_t kv_budget)
{
    memset(s, 0, sizeof(*s));
    hm_hist_init(&s->step_seconds, HM_HIST_FAST_LATENCY);
    hm_hist_init(&s->step_batch_size, HM_HIST_COUNT);
    hm_hist_init(&s->step_tokens, HM_HIST_COUNT);
    hm_hist_init(&s->experts_per_token, HM_HIST_EXPERTS);
    hm_hist_init(&s->window, HM_HIST_COUNT);
    hm_hist_init(&s->complexity, HM_HIST_UNIT);
    s->kv_budget = kv_budget;
}

void hm_batcher_get_stats(struct hm_batcher *b, struct hm_batcher_stats *out)
{
    pthread_mutex_lock(&b->lock);
    *out = b->st;
    pthread_mutex_unlock(&b->lock);
}

uint64_t hm_batcher_heartbeat_ns(struct hm_batcher *b)
{
    return atomic_load(&b->heartbeat_ns);
}
