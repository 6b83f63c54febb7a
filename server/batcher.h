/*
 * batcher.h - continuous batching: one thread that admits generation jobs, builds
 * every engine step, samples, detokenizes, matches stop sequences and reports results.
 *
 *     struct hm_batcher *b;
 *     hm_batcher_new(model, &opts, notify_cb, ctx, &b);   // starts the thread
 *     struct hm_job *j; hm_job_new(n_seq, &j);             // fill j (loop thread)
 *     hm_batcher_submit(b, j);                             // batcher takes a reference
 *     ... notify_cb(ctx) -> hm_batcher_take_events(b) -> list of struct hm_event ...
 *     hm_job_cancel(j);                                    // any thread, any time
 *     hm_job_unref(j);
 *     hm_batcher_free(b);                                  // cancels all, joins
 *
 * Threads: submit, take_events, stats, cancel and unref may be called from any thread
 * (the server calls them from the loop thread). Everything else in a job after submit
 * belongs to the batcher thread; the submitter must not touch it (except `cookie`,
 * which only the submitter reads and writes). The batcher never touches request, MHD
 * or libuv memory: results leave as struct hm_event on a locked done-queue, and
 * notify_cb (the loop's uv_async_send) rings the doorbell.
 *
 * Job life: refs = 1 (creator) + 1 (batcher, from submit). The batcher's reference
 * travels with the job's final event (HM_EV_JOB_DONE) and is dropped by whoever
 * frees that event (hm_event_free), so a job outlives every event that names it.
 */
#ifndef HM_SERVER_BATCHER_H
#define HM_SERVER_BATCHER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hm/engine.h"
#include "hm/sampler.h"
#include "hm/tokenizer.h"

#include "metrics.h"
#include "textstream.h"

struct hm_model;

/* Prompt tokens per step of a sequence whose prompt is scored (bounds its logits buffer). */
#define HM_ECHO_CHUNK 64

enum hm_finish {
    HM_FINISH_NONE = 0,
    HM_FINISH_STOP,      /* EOS or a stop sequence */
    HM_FINISH_LENGTH,    /* max_tokens */
    HM_FINISH_CANCELLED, /* client went away */
    HM_FINISH_TIMEOUT,   /* request deadline */
    HM_FINISH_SHUTDOWN,  /* server stopping */
    HM_FINISH_ERROR,     /* engine error (err, msg) */
};

/* One sequence (a choice) of a job. Batcher-private after submit. */
struct hm_job_seq {
    int32_t *prompt;             /* owned */
    uint32_t n_prompt;
    unsigned index;              /* choice index in the response */
    /* batcher state */
    struct hm_session *s;
    struct hm_sampler *sm;
    float *logits;               /* V floats */
    float *prompt_logits;        /* HM_ECHO_CHUNK x V floats (job->prompt_logprobs only) */
    uint32_t n_gen;
    bool done;
    struct hm_utf8_stream us;
    struct hm_stopper stopper;
};

struct hm_job {
    atomic_int refs;
    atomic_bool cancel;
    void *cookie;                 /* submitter's; never read by the batcher */
    bool sub_admitted;            /* submitter's: saw HM_EV_ADMITTED */
    struct hm_job *next;          /* batcher queues */
    /* inputs (copied in by the submitter) */
    struct hm_session_opts so;
    struct hm_sampler_params sp;  /* sp.bias points at bias */
    struct hm_logit_bias *bias;   /* owned */
    char *stops[4];               /* owned */
    size_t n_stop;
    uint32_t max_tokens;          /* 0: score the prompt only (echo), generate nothing */
    bool ignore_eos;              /* EOS is an ordinary token (runs to max_tokens) */
    bool prompt_logprobs;         /* echo with logprobs: score every prompt token after the
                                   * first (HM_EV_PROMPT), with sp.n_top_logprobs alternatives */
    uint64_t deadline_ns;         /* CLOCK_MONOTONIC; 0 = none */
    uint64_t kv_bytes;            /* planned, sum over sequences (admission) */
    uint64_t t_submit_ns;
    /* batcher state */
    unsigned n_done;
    bool admitted;
    size_t n_seq;
    struct hm_job_seq seqs[];
};

/* Allocates a job with n_seq zeroed sequences (refs = 1). Returns owned; drop with
 * hm_job_unref(). */
int hm_job_new(size_t n_seq, struct hm_job **out);
void hm_job_unref(struct hm_job *j);
void hm_job_cancel(struct hm_job *j);

enum hm_ev_kind {
    HM_EV_ADMITTED,  /* the job left the queue; sessions exist */
    HM_EV_PROMPT,    /* log-probabilities of prompt tokens of one sequence (echo) */
    HM_EV_TOKEN,     /* one generated token of one sequence */
    HM_EV_SEQ_DONE,  /* one sequence finished (finish, stats) */
    HM_EV_JOB_DONE,  /* every sequence finished; the last event of the job */
};

struct hm_event {
    struct hm_event *next;
    struct hm_job *job;           /* borrowed, except for JOB_DONE (holds the batcher's ref) */
    enum hm_ev_kind kind;
    unsigned index;               /* choice index (TOKEN, SEQ_DONE) */
    uint64_t t_ns;                /* CLOCK_MONOTONIC when produced */
    /* TOKEN */
    char *text;                   /* owned; released text (valid UTF-8, may be empty) */
    size_t text_len;
    bool has_sample;              /* false for a text-only tail (SEQ_DONE flush) */
    struct hm_sample sample;      /* token, logprob, top alternatives */
    /* PROMPT: the next prompt tokens in order, from prompt position 1 on (position 0 has no
     * log-probability); owned */
    struct hm_sample *prompt;
    uint32_t n_prompt_samples;
    /* SEQ_DONE */
    enum hm_finish finish;
    int err;
    char msg[160];
    uint32_t n_prompt, n_gen;
    struct hm_session_stats stats;
};
/* Frees an event and its text; drops the job reference of a JOB_DONE event. */
void hm_event_free(struct hm_event *ev);

struct hm_batcher_opts {
    unsigned max_running;    /* sequences */
    unsigned step_tokens;    /* tokens per step */
    uint64_t kv_budget;      /* bytes */
    unsigned n_threads;      /* engine pool */
    bool deterministic;
    unsigned step_delay_ms;  /* testing: sleep after every step */
};

/* Snapshot for /metrics (copied under the batcher's lock). */
struct hm_batcher_stats {
    unsigned running_seqs, waiting_seqs, waiting_jobs;
    uint64_t kv_used, kv_budget;
    uint64_t steps, step_tokens_total;
    uint64_t prompt_tokens, generated_tokens;
    struct hm_hist step_seconds, step_batch_size, step_tokens;
    struct hm_hist experts_per_token, window, complexity;
};

/* Zeroes s and sets up its histograms (what a batcher with no steps yet reports). */
void hm_batcher_stats_init(struct hm_batcher_stats *s, uint64_t kv_budget);

struct hm_batcher;
typedef void (*hm_batcher_notify_cb)(void *ctx);

/* Creates the engine and starts the thread. Returns owned; free with hm_batcher_free(). */
int hm_batcher_new(const struct hm_model *m, const struct hm_batcher_opts *o,
                   hm_batcher_notify_cb notify, void *ctx, struct hm_batcher **out);
/* Cancels every job, joins the thread, frees the engine. Events still queued are freed
 * (take them first to see them). */
void hm_batcher_free(struct hm_batcher *b);
/* Queues a job (FIFO). Takes a reference. */
void hm_batcher_submit(struct hm_batcher *b, struct hm_job *j);
/* Cancels every queued and running job (shutdown); they end with HM_FINISH_SHUTDOWN. */
void hm_batcher_cancel_all(struct hm_batcher *b);
/* Takes every pending event, oldest first. Returns owned list (free each with
 * hm_event_free). */
struct hm_event *hm_batcher_take_events(struct hm_batcher *b);
void hm_batcher_get_stats(struct hm_batcher *b, struct hm_batcher_stats *out);
/* Monotonic time of the batcher's last completed loop iteration (watchdog). */
uint64_t hm_batcher_heartbeat_ns(struct hm_batcher *b);

uint64_t hm_now_ns(void);

#endif
