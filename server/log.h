/*
 * log.h - server logging to stderr, journald-friendly.
 *
 *     hm_log_init(HM_LOG_INFO);
 *     hm_log(HM_LOG_WARN, "cannot bind %s:%u", host, port);
 *
 * Each line starts with a syslog priority prefix "<N>" (sd-daemon(3)), so journald
 * keeps the level. When JOURNAL_STREAM is set (stderr goes to the journal) lines carry
 * no timestamp; otherwise an ISO-8601 UTC timestamp follows the prefix.
 * Any thread (one fprintf per line; stderr is unbuffered-line by POSIX locking).
 */
#ifndef HM_SERVER_LOG_H
#define HM_SERVER_LOG_H

#include <stdint.h>

#include "conf.h"

void hm_log_init(enum hm_log_level level);
bool hm_log_enabled(enum hm_log_level level);
void hm_log(enum hm_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* One access-log line (info level). Latencies in seconds; ttft < 0 = none. */
struct hm_access {
    const char *method;
    const char *path;
    unsigned status;
    uint64_t tokens_in, tokens_out;
    double latency_s;
    double ttft_s;
    const char *client;   /* peer address or "-" */
};
void hm_log_access(const struct hm_access *a);

#endif
