/*
 * metrics.h - Prometheus text-format metrics (names prefixed hybridmoe_).
 *
 * struct hm_hist is a plain fixed-bucket histogram (copyable, no allocation) used by
 * both the loop thread (HTTP latencies, owned by struct hm_metrics) and the batcher
 * (step figures, copied out under its lock). hm_metrics_render() writes the whole
 * exposition: the loop's own counters plus a batcher snapshot.
 *
 * Threads: struct hm_metrics belongs to the loop thread.
 */
#ifndef HM_SERVER_METRICS_H
#define HM_SERVER_METRICS_H

#include <stdint.h>

#include "hm/buf.h"

#define HM_HIST_MAX 24

struct hm_hist {
    const double *bounds;   /* n_bounds upper bounds, ascending; +Inf implicit */
    unsigned n_bounds;
    uint64_t counts[HM_HIST_MAX + 1]; /* per bucket (not cumulative); last = +Inf */
    uint64_t count;
    double sum;
};

enum hm_hist_kind {
    HM_HIST_LATENCY,        /* seconds, 1 ms .. 10 min */
    HM_HIST_FAST_LATENCY,   /* seconds, 0.1 ms .. 10 s (inter-token, steps) */
    HM_HIST_COUNT,          /* 1 .. 4096, powers of two (batch size, tokens, window) */
    HM_HIST_EXPERTS,        /* 1 .. 16 in quarter steps up to 4 */
    HM_HIST_UNIT,           /* 0 .. 1 by 0.1 (complexity) */
};

void hm_hist_init(struct hm_hist *h, enum hm_hist_kind kind);
void hm_hist_observe(struct hm_hist *h, double v);

#define HM_STATUS_CODES 600

struct hm_metrics {
    uint64_t requests_by_status[HM_STATUS_CODES];
    uint64_t requests_cancelled;          /* client went away mid-request */
    uint64_t rejected_overload;           /* 503/429 from admission */
    uint64_t connections_open;
    uint64_t slow_clients_cut;            /* closed by header_timeout / body_timeout */
    struct hm_hist ttft, itl, e2e, queue;
};

void hm_metrics_init(struct hm_metrics *m);
void hm_metrics_count_status(struct hm_metrics *m, unsigned status);

struct hm_batcher_stats;
/* Appends the exposition text. ready/draining describe server state. */
int hm_metrics_render(const struct hm_metrics *m, const struct hm_batcher_stats *bs,
                      unsigned max_running, unsigned queue_size, int draining,
                      struct hm_buf *out);

/* Appends one histogram in exposition format (exposed for tests). */
int hm_hist_render(const struct hm_hist *h, const char *name, const char *help,
                   struct hm_buf *out);

#endif
