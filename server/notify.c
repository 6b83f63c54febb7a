/*
 * notify.c - sd_notify(3) client: one datagram per state to $NOTIFY_SOCKET, no libsystemd.
 *
 * DESIGN: hm_notify_init() parses the environment once into process-wide state (the socket
 * address, the watchdog interval) and opens one SOCK_DGRAM|SOCK_CLOEXEC socket. After that the
 * state is read-only, so hm_notify_send() may run on any thread: sendto() on a datagram socket is
 * atomic per message, and we address every datagram explicitly (no connect()) so that a service
 * manager that re-executes itself and recreates the socket file is still reached. The socket has a
 * one-second send timeout, so a stalled service manager cannot block the caller (the loop that
 * sends watchdog pings) for long.
 */
#include "notify.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "hm/err.h"

/* Written only by hm_notify_init() (before other threads start); read by any thread after. */
static struct {
    bool enabled;
    int fd;                  /* -1 when disabled */
    struct sockaddr_un addr; /* sun_path[0] == '\0' for the abstract namespace */
    socklen_t addr_len;      /* exact length: abstract names are not NUL-terminated */
    uint64_t watchdog_usec;  /* 0 = no watchdog for this process */
} g_notify = {.fd = -1};

/* Parses a non-empty string of decimal digits into *out; false on anything else or overflow. */
static bool parse_u64(const char *s, uint64_t *out)
{
    uint64_t v = 0;

    if (s == NULL || *s == '\0')
        return false;
    for (; *s != '\0'; s++) {
        if (*s < '0' || *s > '9')
            return false;
        if (v > (UINT64_MAX - (uint64_t)(*s - '0')) / 10)
            return false;
        v = v * 10 + (uint64_t)(*s - '0');
    }
    *out = v;
    return true;
}

/* Fills g_notify.addr/addr_len from a NOTIFY_SOCKET value; HM_EINVAL if unusable. */
static int parse_address(const char *value)
{
    size_t n = strlen(value);

    memset(&g_notify.addr, 0, sizeof(g_notify.addr));
    g_notify.addr.sun_family = AF_UNIX;
    if (value[0] == '@') {
        /* abstract: "@name" -> "\0name", length without a terminator (systemd does the same) */
        if (n < 2 || n > sizeof(g_notify.addr.sun_path))
            return HM_EINVAL;
        memcpy(g_notify.addr.sun_path + 1, value + 1, n - 1);
        g_notify.addr_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
        return HM_OK;
    }
    if (value[0] != '/' || n >= sizeof(g_notify.addr.sun_path))
        return HM_EINVAL;
    memcpy(g_notify.addr.sun_path, value, n + 1);
    g_notify.addr_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
    return HM_OK;
}

/* Sets g_notify.watchdog_usec from WATCHDOG_USEC / WATCHDOG_PID; HM_EINVAL if malformed. */
static int parse_watchdog(void)
{
    const char *usec = getenv("WATCHDOG_USEC");
    const char *pid = getenv("WATCHDOG_PID");
    uint64_t v = 0, p = 0;

    g_notify.watchdog_usec = 0;
    if (usec == NULL || *usec == '\0')
        return HM_OK;
    if (!parse_u64(usec, &v))
        return HM_EINVAL;
    if (pid != NULL && *pid != '\0') {
        if (!parse_u64(pid, &p) || p == 0)
            return HM_EINVAL;
        /* the watchdog belongs to another process (for example our parent) */
        if (p != (uint64_t)getpid())
            return HM_OK;
    }
    g_notify.watchdog_usec = v;
    return HM_OK;
}

int hm_notify_init(void)
{
    const char *value = getenv("NOTIFY_SOCKET");
    struct timeval tv = {.tv_sec = 1, .tv_usec = 0};
    int rc, wd_rc;

    if (g_notify.fd >= 0)
        close(g_notify.fd);
    g_notify.fd = -1;
    g_notify.enabled = false;
    g_notify.addr_len = 0;

    wd_rc = parse_watchdog();
    if (value == NULL || *value == '\0') {
        /* not under systemd: a watchdog without a socket to ping is no watchdog */
        g_notify.watchdog_usec = 0;
        rc = wd_rc;
        goto out;
    }
    rc = parse_address(value);
    if (rc < 0) {
        g_notify.watchdog_usec = 0;
        goto out;
    }
    g_notify.fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (g_notify.fd < 0) {
        g_notify.watchdog_usec = 0;
        rc = HM_EIO;
        goto out;
    }
    /* best effort: without the timeout a send can only block longer, not fail */
    (void)setsockopt(g_notify.fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    g_notify.enabled = true;
    rc = wd_rc;
out:
    return rc;
}

bool hm_notify_enabled(void)
{
    return g_notify.enabled;
}

uint64_t hm_notify_watchdog_usec(void)
{
    return g_notify.watchdog_usec;
}

int hm_notify_send(const char *state)
{
    size_t n;
    ssize_t sent;

    if (state == NULL || *state == '\0')
        return HM_EINVAL;
    if (!g_notify.enabled)
        return HM_OK;
    n = strlen(state);
    do {
        sent = sendto(g_notify.fd, state, n, MSG_NOSIGNAL, (const struct sockaddr *)&g_notify.addr,
                      g_notify.addr_len);
    } while (sent < 0 && errno == EINTR);
    if (sent < 0 || (size_t)sent != n)
        return HM_EIO;
    return HM_OK;
}
