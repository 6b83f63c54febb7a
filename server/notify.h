/*
 * notify.h - the sd_notify protocol without libsystemd.
 *
 * Under systemd with Type=notify, the service manager passes the address of a datagram socket in
 * $NOTIFY_SOCKET (a filesystem path, or "@name" for the abstract namespace) and, with
 * WatchdogSec=, the watchdog interval in $WATCHDOG_USEC (and optionally $WATCHDOG_PID, the one
 * process the watchdog applies to). A state is one datagram of newline-separated KEY=VALUE
 * assignments (sd_notify(3)). Outside systemd every call is a harmless no-op.
 *
 *     int rc = hm_notify_init();               // main(), before any thread starts
 *     if (rc < 0)
 *         log_warn("NOTIFY_SOCKET/WATCHDOG_USEC unusable: %s", hm_strerror(rc));
 *     ... load the model, start listening ...
 *     hm_notify_send("READY=1");
 *     uint64_t wd = hm_notify_watchdog_usec(); // 0 = no watchdog
 *     if (wd > 0)
 *         ... every wd / 3 microseconds, from the loop that proves progress:
 *         hm_notify_send("WATCHDOG=1");
 *     ... on SIGTERM:
 *     hm_notify_send("STOPPING=1");
 *
 * Threads: hm_notify_init() on one thread before any other notify call and before other threads
 * start (it writes process-wide state); every other function is safe from any thread.
 * The module owns one close-on-exec datagram socket for the life of the process.
 */
#ifndef HM_NOTIFY_H
#define HM_NOTIFY_H

#include <stdbool.h>
#include <stdint.h>

/*
 * Reads $NOTIFY_SOCKET, $WATCHDOG_USEC and $WATCHDOG_PID (the environment is left unchanged) and
 * opens the socket. May be called again (for example by tests) to re-read the environment; the
 * previous state and socket are dropped.
 * Returns HM_OK when NOTIFY_SOCKET is unset or empty (not under systemd: notify disabled), and
 * when it is a usable address (notify enabled).
 * Returns HM_EINVAL when NOTIFY_SOCKET is set but is neither an absolute path nor "@name" or does
 * not fit in sockaddr_un (notify disabled), or when WATCHDOG_USEC / WATCHDOG_PID is set but is not
 * a decimal number (watchdog off; notify stays enabled if the socket is usable).
 * Returns HM_EIO when the socket cannot be created (notify disabled).
 * The watchdog is on only when WATCHDOG_USEC > 0 and WATCHDOG_PID is unset or equals getpid().
 * Any error is worth a warning, never fatal: the service manager enforces its own timeouts.
 */
int hm_notify_init(void);

/* True once hm_notify_init() has found a usable NOTIFY_SOCKET. Any thread. */
bool hm_notify_enabled(void);

/*
 * The watchdog interval in microseconds (WatchdogSec=), or 0 when there is no watchdog for this
 * process. Ping at least twice per interval; sd_watchdog_enabled(3) suggests every half. Any
 * thread.
 */
uint64_t hm_notify_watchdog_usec(void);

/*
 * Sends @state (borrowed; for example "READY=1", "WATCHDOG=1", "STOPPING=1",
 * "STATUS=loading model", or several lines joined with '\n') as one datagram.
 * Returns HM_OK when notify is disabled (no-op) or the datagram was sent; HM_EINVAL when @state
 * is NULL or empty; HM_EIO when the send failed (no receiver, or blocked for more than one second).
 * Never raises SIGPIPE. Any thread; concurrent sends are never interleaved.
 */
int hm_notify_send(const char *state);

#endif
