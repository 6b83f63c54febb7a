/*
 * metrics.c - histograms and the Prometheus exposition of /metrics.
 */
#include "metrics.h"

#include <string.h>

#include "batcher.h"

static const double latency_bounds[] = { 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                         0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600 };
static const double fast_bounds[] = { 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
                                      0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10 };
static const double count_bounds[] = { 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048,
                                       4096, 8192, 16384, 32768, 65536 };
static const double expert_bounds[] = { 1, 1.25, 1.5, 1.75, 2, 2.5, 3, 3.5, 4, 5, 6, 8, 12,
                                        16 };
static const double unit_bounds[] = { 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1 };

#define N(a) (unsigned)(sizeof(a) / sizeof((a)[0]))

void hm_hist_init(struct hm_hist *h, enum hm_hist_kind kind)
{
    memset(h, 0, sizeof(*h));
    switch (kind) {
    case HM_HIST_LATENCY: h->bounds = latency_bounds; h->n_bounds = N(latency_bounds); break;
    case HM_HIST_FAST_LATENCY: h->bounds = fast_bounds; h->n_bounds = N(fast_bounds); break;
    case HM_HIST_COUNT: h->bounds = count_bounds; h->n_bounds = N(count_bounds); break;
    case HM_HIST_EXPERTS: h->bounds = expert_bounds; h->n_bounds = N(expert_bounds); break;
    case HM_HIST_UNIT: h->bounds = unit_bounds; h->n_bounds = N(unit_bounds); break;
    }
}

void hm_hist_observe(struct hm_hist *h, double v)
{
    unsigned i = 0;

    if (!(v == v)) /* NaN */
        return;
    while (i < h->n_bounds && v > h->bounds[i])
        i++;
    h->counts[i]++;
    h->count++;
    h->sum += v;
}

void hm_metrics_init(struct hm_metrics *m)
{
    memset(m, 0, sizeof(*m));
    hm_hist_init(&m->ttft, HM_HIST_LATENCY);
    hm_hist_init(&m->itl, HM_HIST_FAST_LATENCY);
    hm_hist_init(&m->e2e, HM_HIST_LATENCY);
    hm_hist_init(&m->queue, HM_HIST_LATENCY);
}

void hm_metrics_count_status(struct hm_metrics *m, unsigned status)
{
    if (status < HM_STATUS_CODES)
        m->requests_by_status[status]++;
}

int hm_hist_render(const struct hm_hist *h, const char *name, const char *help,
                   struct hm_buf *out)
{
    uint64_t cum = 0;
    int rc;

    rc = hm_buf_printf(out, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    for (unsigned i = 0; rc >= 0 && i < h->n_bounds; i++) {
        cum += h->counts[i];
        rc = hm_buf_printf(out, "%s_bucket{le=\"%g\"} %llu\n", name, h->bounds[i],
                           (unsigned long long)cum);
    }
    if (rc >= 0)
        rc = hm_buf_printf(out, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %.9g\n%s_count %llu\n",
                           name, (unsigned long long)h->count, name, h->sum, name,
                           (unsigned long long)h->count);
    return rc < 0 ? rc : 0;
}

static int gauge(struct hm_buf *out, const char *type, const char *name, const char *help,
                 double v)
{
    return hm_buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n%s %.17g\n", name, help, name, type,
                         name, v);
}

int hm_metrics_render(const struct hm_metrics *m, const struct hm_batcher_stats *bs,
                      unsigned max_running, unsigned queue_size, int draining,
                      struct hm_buf *out)
{
    int rc = 0;

#define G(type, name, help, v)                                                        \
    do {                                                                              \
        if (rc >= 0)                                                                  \
            rc = gauge(out, type, "hybridmoe_" name, help, (double)(v));              \
    } while (0)
#define H(h, name, help)                                                              \
    do {                                                                              \
        if (rc >= 0)                                                                  \
            rc = hm_hist_render(&(h), "hybridmoe_" name, help, out);                  \
    } while (0)

    G("gauge", "running_sequences", "Sequences in the running batch.", bs->running_seqs);
    G("gauge", "waiting_sequences", "Sequences waiting for admission.", bs->waiting_seqs);
    G("gauge", "waiting_requests", "Requests waiting for admission.", bs->waiting_jobs);
    G("gauge", "max_running_sequences", "Configured max_running.", max_running);
    G("gauge", "queue_size", "Configured queue_size (waiting requests).", queue_size);
    G("gauge", "kv_bytes_used", "KV-cache bytes held by running sequences.", bs->kv_used);
    G("gauge", "kv_bytes_budget", "Configured KV-cache budget in bytes.", bs->kv_budget);
    G("gauge", "draining", "1 while the server drains after SIGTERM.", draining);
    G("gauge", "open_connections", "Open HTTP connections.", m->connections_open);
    if (rc >= 0)
        rc = hm_buf_printf(out, "# HELP hybridmoe_requests_total HTTP requests by status.\n"
                                "# TYPE hybridmoe_requests_total counter\n");
    for (unsigned s = 100; rc >= 0 && s < HM_STATUS_CODES; s++)
        if (m->requests_by_status[s])
            rc = hm_buf_printf(out, "hybridmoe_requests_total{status=\"%u\"} %llu\n", s,
                               (unsigned long long)m->requests_by_status[s]);
    G("counter", "requests_cancelled_total", "Requests whose client went away.",
      m->requests_cancelled);
    G("counter", "slow_clients_closed_total",
      "Connections closed because their request headers or body exceeded header_timeout or "
      "body_timeout.", m->slow_clients_cut);
    G("counter", "requests_rejected_total", "Requests rejected because the queue was full.",
      m->rejected_overload);
    G("counter", "prompt_tokens_total", "Prompt tokens processed.", bs->prompt_tokens);
    G("counter", "generated_tokens_total", "Tokens generated.", bs->generated_tokens);
    G("counter", "steps_total", "Engine steps run.", bs->steps);
    H(m->ttft, "time_to_first_token_seconds", "Time from request to its first token.");
    H(m->itl, "inter_token_latency_seconds", "Time between consecutive tokens of a sequence.");
    H(m->e2e, "request_latency_seconds", "End-to-end latency of generation requests.");
    H(m->queue, "queue_time_seconds", "Time a request waited for admission.");
    H(bs->step_seconds, "step_duration_seconds", "Duration of one engine step.");
    H(bs->step_batch_size, "step_batch_size", "Sequences in one engine step.");
    H(bs->step_tokens, "step_tokens", "Tokens processed in one engine step.");
    H(bs->experts_per_token, "experts_per_token",
      "Mean experts per token (k over MoE layers) of each finished sequence.");
    H(bs->window, "window_tokens", "Attention window chosen for each sequence.");
    H(bs->complexity, "complexity", "Request complexity c_req of each sequence.");
#undef G
#undef H
    return rc < 0 ? rc : 0;
}
