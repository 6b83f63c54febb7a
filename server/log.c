/*
 * log.c - stderr logging with syslog priority prefixes (journald reads "<N>").
 */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static enum hm_log_level max_level = HM_LOG_INFO;
static bool journal;

void hm_log_init(enum hm_log_level level)
{
    max_level = level;
    journal = getenv("JOURNAL_STREAM") != NULL;
}

bool hm_log_enabled(enum hm_log_level level)
{
    return level <= max_level;
}

static void vlog(enum hm_log_level level, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));
static void vlog(enum hm_log_level level, const char *fmt, va_list ap)
{
    /* syslog priorities: err 3, warning 4, info 6, debug 7 */
    static const int prio[] = { 3, 4, 6, 7 };
    static const char *const names[] = { "error", "warn", "info", "debug" };
    char msg[2048];
    char ts[40] = "";

    vsnprintf(msg, sizeof(msg), fmt, ap);
    if (!journal) {
        struct timespec now;
        struct tm tm;
        clock_gettime(CLOCK_REALTIME, &now);
        gmtime_r(&now.tv_sec, &tm);
        strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%SZ ", &tm);
    }
    fprintf(stderr, "<%d>%s%s: %s\n", prio[level], ts, names[level], msg);
}

void hm_log(enum hm_log_level level, const char *fmt, ...)
{
    va_list ap;

    if (!hm_log_enabled(level))
        return;
    va_start(ap, fmt);
    vlog(level, fmt, ap);
    va_end(ap);
}

void hm_log_access(const struct hm_access *a)
{
    char ttft[32] = "-";

    if (!hm_log_enabled(HM_LOG_INFO))
        return;
    if (a->ttft_s >= 0)
        snprintf(ttft, sizeof(ttft), "%.3f", a->ttft_s);
    hm_log(HM_LOG_INFO,
           "access %s \"%s %s\" %u tokens_in=%llu tokens_out=%llu latency=%.3f ttft=%s",
           a->client ? a->client : "-", a->method, a->path, a->status,
           (unsigned long long)a->tokens_in, (unsigned long long)a->tokens_out, a->latency_s,
           ttft);
}
