/* check_notify.c - the sd_notify client (server/notify.c) against datagram sockets we bind. */
#include <check.h>
#include <errno.h>
#include <stddef.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "../server/notify.h"
#include "hm/err.h"
#include "testutil.h"

/* A bound datagram socket standing in for systemd's notify socket. */
struct receiver {
    int fd;
    char dir[64];  /* temp dir holding a filesystem socket, "" for abstract */
    char env[128]; /* the NOTIFY_SOCKET value that reaches it */
};

static void clear_env(void)
{
    unsetenv("NOTIFY_SOCKET");
    unsetenv("WATCHDOG_USEC");
    unsetenv("WATCHDOG_PID");
}

static void setup(void)
{
    clear_env();
}

static void teardown(void)
{
    clear_env();
    hm_notify_init(); /* back to disabled; closes the module's socket */
}

static void set_rcv_timeout(int fd)
{
    struct timeval tv = {.tv_sec = 10, .tv_usec = 0};
    ck_assert_int_eq(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)), 0);
}

/* Binds a filesystem socket <tempdir>/notify, or <tempdir>/zzz... of exactly @len characters. */
static void receiver_path(struct receiver *r, size_t len)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    size_t n;

    snprintf(r->dir, sizeof(r->dir), "/tmp/hmnotifyXXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(r->dir));
    n = (size_t)snprintf(a.sun_path, sizeof(a.sun_path), "%s/notify", r->dir);
    if (len > 0) {
        ck_assert_uint_lt(len, sizeof(a.sun_path));
        ck_assert_uint_ge(len, n);
        n = strlen(r->dir) + 1;
        memset(a.sun_path + n, 'z', len - n);
        a.sun_path[len] = '\0';
    }
    memcpy(r->env, a.sun_path, sizeof(a.sun_path));
    r->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(r->fd, 0);
    ck_assert_int_eq(bind(r->fd, (struct sockaddr *)&a, sizeof(a)), 0);
    set_rcv_timeout(r->fd);
}

/* Binds an abstract socket "\0<name>" whose name is exactly @len bytes (unique per process). */
static void receiver_abstract(struct receiver *r, size_t len)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    char name[sizeof(a.sun_path)];
    size_t i;
    int n;

    ck_assert_uint_lt(len, sizeof(a.sun_path));
    n = snprintf(name, sizeof(name), "hm-notify-test-%ld-", (long)getpid());
    ck_assert_uint_le((size_t)n, len);
    for (i = (size_t)n; i < len; i++)
        name[i] = 'x';
    name[len] = '\0';
    r->dir[0] = '\0';
    snprintf(r->env, sizeof(r->env), "@%s", name);
    memcpy(a.sun_path + 1, name, len);
    r->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(r->fd, 0);
    ck_assert_int_eq(bind(r->fd, (struct sockaddr *)&a,
                          (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + len)),
                     0);
    set_rcv_timeout(r->fd);
}

static void receiver_close(struct receiver *r)
{
    close(r->fd);
    if (r->dir[0] != '\0') {
        unlink(r->env);
        rmdir(r->dir);
    }
}

/* Receives one datagram and checks it is exactly @want. */
static void expect_datagram(struct receiver *r, const char *want)
{
    char buf[4096];
    ssize_t n = recv(r->fd, buf, sizeof(buf) - 1, 0);

    ck_assert_msg(n >= 0, "recv: %s", strerror(errno));
    buf[n] = '\0';
    ck_assert_str_eq(buf, want);
}

/* ---- core ------------------------------------------------------------------------------- */

START_TEST(test_not_under_systemd)
{
    ck_assert_int_eq(hm_notify_init(), HM_OK);
    ck_assert(!hm_notify_enabled());
    ck_assert_uint_eq(hm_notify_watchdog_usec(), 0);
    ck_assert_int_eq(hm_notify_send("READY=1"), HM_OK);
    /* an empty NOTIFY_SOCKET is the same as none */
    setenv("NOTIFY_SOCKET", "", 1);
    ck_assert_int_eq(hm_notify_init(), HM_OK);
    ck_assert(!hm_notify_enabled());
    /* a watchdog without a socket is no watchdog */
    unsetenv("NOTIFY_SOCKET");
    setenv("WATCHDOG_USEC", "30000000", 1);
    ck_assert_int_eq(hm_notify_init(), HM_OK);
    ck_assert_uint_eq(hm_notify_watchdog_usec(), 0);
}
END_TEST

START_TEST(test_path_socket)
{
    struct receiver r;

    receiver_path(&r, 0);
    setenv("NOTIFY_SOCKET", r.env, 1);
    ck_assert_int_eq(hm_notify_init(), HM_OK);
    ck_assert(hm_notify_enabled());
    ck_assert_uint_eq(hm_notify_watchdog_usec(), 0);
    ck_assert_int_eq(hm_notify_send("READY=1"), HM_OK);
    ck_assert_int_eq(hm_notify_send("STATUS=serving\nWATCHDOG=1"), HM_OK);
    ck_assert_int_eq(hm_notify_send("STOPPING=1"), HM_OK);
    expect_datagram(&r, "READY=1");
    expect_datagram(&r, "STATUS=serving\nWATCHDOG=1");
    expect_datagram(&r, "STOPPING=1");
    receiver_close(&r);
}
END_TEST

START_TEST(test_abstract_socket)
{
    struct receiver r;

    receiver_abstract(&r, 40);
    setenv("NOTIFY_SOCKET", r.env, 1);
    ck_assert_int_eq(hm_notify_init(), HM_OK);
    ck_assert(hm_notify_enabled());
    ck_assert_int_eq(hm_notify_send("READY=1"), HM_OK);
    expect_datagram(&r, "READY=1");
    receiver_close(&r);
}
END_TEST

START_TEST(test_watchdog)
{
    struct receiver r;
    char pid[32];

    receiver_abstract(&r, 30);
    setenv("NOTIFY_SOCKET", r.env, 1);
    setenv("WATCHDOG_USEC", "30000000", 1);
    ck_assert_int_eq(hm_notify_init(), HM_OK);
    ck_assert_uint_eq(hm_notify_watchdog_usec(), 30000000u);
    /* WATCHDOG_PID naming us keeps it */
    snprintf(pid, sizeof(pid), "%ld", (long)getpid());
    setenv("WATCHDOG_PID", pid, 1);
    ck_assert_int_eq(hm_notify_init(), HM_OK);
    ck_assert_uint_eq(hm_notify_watchdog_usec(), 30000000u);
    /* naming another process turns it off here, but notify stays on */
    snprintf(pid, sizeof(pid), "%ld", (long)getpid() + 1);
    setenv("WATCHDOG_PID", pid, 1);
    ck_assert_int_eq(hm_notify_init(), HM_OK);
    ck_assert_uint_eq(hm_notify_watchdog_usec(), 0);
    ck_assert(hm_notify_enabled());
    /* WATCHDOG_USEC=0 is no watchdog */
    unsetenv("WATCHDOG_PID");
    setenv("WATCHDOG_USEC", "0", 1);
    ck_assert_int_eq(hm_notify_init(), HM_OK);
    ck_assert_uint_eq(hm_notify_watchdog_usec(), 0);
    ck_assert_int_eq(hm_notify_send("WATCHDOG=1"), HM_OK);
    expect_datagram(&r, "WATCHDOG=1");
    receiver_close(&r);
}
END_TEST

START_TEST(test_reinit_disables)
{
    struct receiver r;

    receiver_abstract(&r, 30);
    setenv("NOTIFY_SOCKET", r.env, 1);
    ck_assert_int_eq(hm_notify_init(), HM_OK);
    ck_assert(hm_notify_enabled());
    unsetenv("NOTIFY_SOCKET");
    ck_assert_int_eq(hm_notify_init(), HM_OK);
    ck_assert(!hm_notify_enabled());
    ck_assert_int_eq(hm_notify_send("READY=1"), HM_OK);
    /* nothing arrived: the disabled send was a no-op */
    ck_assert_int_eq(recv(r.fd, (char[8]){0}, 8, MSG_DONTWAIT), -1);
    ck_assert_int_eq(errno, EAGAIN);
    receiver_close(&r);
}
END_TEST

#define N_THREADS 4
#define N_PER_THREAD 100

static void *sender_thread(void *arg)
{
    long id = (long)arg;
    char msg[64];
    int i;

    for (i = 0; i < N_PER_THREAD; i++) {
        snprintf(msg, sizeof(msg), "WATCHDOG=1\nX_SENDER=%ld\nX_SEQ=%d", id, i);
        if (hm_notify_send(msg) != HM_OK)
            return (void *)1;
    }
    return NULL;
}

/* Any thread may send; each datagram arrives whole, and each thread's stay in order. */
START_TEST(test_threads)
{
    struct receiver r;
    pthread_t t[N_THREADS];
    int next[N_THREADS] = {0};
    char buf[256];
    long i;
    int k;

    receiver_abstract(&r, 30);
    setenv("NOTIFY_SOCKET", r.env, 1);
    ck_assert_int_eq(hm_notify_init(), HM_OK);
    for (i = 0; i < N_THREADS; i++)
        ck_assert_int_eq(pthread_create(&t[i], NULL, sender_thread, (void *)i), 0);
    for (k = 0; k < N_THREADS * N_PER_THREAD; k++) {
        long id;
        int seq, used = 0;
        ssize_t n = recv(r.fd, buf, sizeof(buf) - 1, 0);

        ck_assert_msg(n > 0, "recv %d: %s", k, strerror(errno));
        buf[n] = '\0';
        ck_assert_int_eq(sscanf(buf, "WATCHDOG=1\nX_SENDER=%ld\nX_SEQ=%d%n", &id, &seq, &used), 2);
        ck_assert_int_eq(used, (int)n);
        ck_assert(id >= 0 && id < N_THREADS);
        ck_assert_int_eq(seq, next[id]);
        next[id]++;
    }
    for (i = 0; i < N_THREADS; i++) {
        void *ret;
        ck_assert_int_eq(pthread_join(t[i], &ret), 0);
        ck_assert_ptr_null(ret);
    }
    receiver_close(&r);
}
END_TEST

/* ---- limits ----------------------------------------------------------------------------- */

START_TEST(test_longest_names)
{
    struct sockaddr_un a;
    struct receiver r;
    char path[sizeof(a.sun_path) + 2];
    size_t max = sizeof(a.sun_path) - 1; /* 107: abstract name bytes / path chars */

    /* the longest abstract name (107 bytes after the leading NUL) works end to end */
    receiver_abstract(&r, max);
    setenv("NOTIFY_SOCKET", r.env, 1);
    ck_assert_int_eq(hm_notify_init(), HM_OK);
    ck_assert(hm_notify_enabled());
    ck_assert_int_eq(hm_notify_send("READY=1"), HM_OK);
    expect_datagram(&r, "READY=1");
    receiver_close(&r);

    /* one byte more does not fit */
    memset(path, 'y', sizeof(path));
    path[0] = '@';
    path[max + 2] = '\0';
    setenv("NOTIFY_SOCKET", path, 1);
    ck_assert_int_eq(hm_notify_init(), HM_EINVAL);
    ck_assert(!hm_notify_enabled());

    /* the longest path (107 chars + NUL) works end to end */
    receiver_path(&r, max);
    ck_assert_uint_eq(strlen(r.env), max);
    setenv("NOTIFY_SOCKET", r.env, 1);
    ck_assert_int_eq(hm_notify_init(), HM_OK);
    ck_assert_int_eq(hm_notify_send("READY=1"), HM_OK);
    expect_datagram(&r, "READY=1");
    receiver_close(&r);

    /* a 108-character path does not fit */
    memset(path, 'p', sizeof(path));
    path[0] = '/';
    path[max + 1] = '\0';
    setenv("NOTIFY_SOCKET", path, 1);
    ck_assert_int_eq(hm_notify_init(), HM_EINVAL);
    ck_assert(!hm_notify_enabled());
}
END_TEST

START_TEST(test_watchdog_range)
{
    setenv("NOTIFY_SOCKET", "@hm-notify-range", 1);
    setenv("WATCHDOG_USEC", "18446744073709551615", 1);
    ck_assert_int_eq(hm_notify_init(), HM_OK);
    ck_assert_uint_eq(hm_notify_watchdog_usec(), UINT64_MAX);
    setenv("WATCHDOG_USEC", "18446744073709551616", 1);
    ck_assert_int_eq(hm_notify_init(), HM_EINVAL);
    ck_assert_uint_eq(hm_notify_watchdog_usec(), 0);
    ck_assert(hm_notify_enabled());
}
END_TEST

START_TEST(test_large_state)
{
    struct receiver r;
    char *big = malloc(2000);

    ck_assert_ptr_nonnull(big);
    memcpy(big, "STATUS=", 7);
    memset(big + 7, 's', 2000 - 8);
    big[1999] = '\0';
    receiver_abstract(&r, 30);
    setenv("NOTIFY_SOCKET", r.env, 1);
    ck_assert_int_eq(hm_notify_init(), HM_OK);
    ck_assert_int_eq(hm_notify_send(big), HM_OK);
    expect_datagram(&r, big);
    receiver_close(&r);
    free(big);
}
END_TEST

/* ---- errors ----------------------------------------------------------------------------- */

START_TEST(test_bad_socket_values)
{
    static const char *bad[] = {"run/systemd/notify", "@", "notify", "vsock:2:1234"};
    size_t i;

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        setenv("NOTIFY_SOCKET", bad[i], 1);
        setenv("WATCHDOG_USEC", "1000000", 1);
        ck_assert_msg(hm_notify_init() == HM_EINVAL, "%s", bad[i]);
        ck_assert(!hm_notify_enabled());
        ck_assert_uint_eq(hm_notify_watchdog_usec(), 0);
        ck_assert_int_eq(hm_notify_send("READY=1"), HM_OK);
    }
}
END_TEST

START_TEST(test_bad_watchdog_values)
{
    static const char *bad[] = {"abc", "-5", "10s", " 10", "1e6", "+1"};
    size_t i;

    setenv("NOTIFY_SOCKET", "@hm-notify-bad-wd", 1);
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        setenv("WATCHDOG_USEC", bad[i], 1);
        ck_assert_msg(hm_notify_init() == HM_EINVAL, "%s", bad[i]);
        ck_assert(hm_notify_enabled());
        ck_assert_uint_eq(hm_notify_watchdog_usec(), 0);
    }
    setenv("WATCHDOG_USEC", "1000000", 1);
    setenv("WATCHDOG_PID", "me", 1);
    ck_assert_int_eq(hm_notify_init(), HM_EINVAL);
    ck_assert_uint_eq(hm_notify_watchdog_usec(), 0);
    setenv("WATCHDOG_PID", "0", 1);
    ck_assert_int_eq(hm_notify_init(), HM_EINVAL);
    ck_assert_uint_eq(hm_notify_watchdog_usec(), 0);
}
END_TEST

START_TEST(test_no_receiver)
{
    char path[64];

    /* a path nobody listens on: the send fails, and does not raise SIGPIPE */
    snprintf(path, sizeof(path), "/tmp/hm-notify-nobody-%ld", (long)getpid());
    setenv("NOTIFY_SOCKET", path, 1);
    ck_assert_int_eq(hm_notify_init(), HM_OK);
    ck_assert(hm_notify_enabled());
    ck_assert_int_eq(hm_notify_send("READY=1"), HM_EIO);
    /* the same for an abstract name nobody bound */
    snprintf(path, sizeof(path), "@hm-notify-nobody-%ld", (long)getpid());
    setenv("NOTIFY_SOCKET", path, 1);
    ck_assert_int_eq(hm_notify_init(), HM_OK);
    ck_assert_int_eq(hm_notify_send("READY=1"), HM_EIO);
}
END_TEST

START_TEST(test_bad_state)
{
    struct receiver r;

    receiver_abstract(&r, 30);
    setenv("NOTIFY_SOCKET", r.env, 1);
    ck_assert_int_eq(hm_notify_init(), HM_OK);
    ck_assert_int_eq(hm_notify_send(NULL), HM_EINVAL);
    ck_assert_int_eq(hm_notify_send(""), HM_EINVAL);
    ck_assert_int_eq(recv(r.fd, (char[8]){0}, 8, MSG_DONTWAIT), -1);
    receiver_close(&r);
    /* argument errors are reported even when disabled, so they show up outside systemd too */
    unsetenv("NOTIFY_SOCKET");
    ck_assert_int_eq(hm_notify_init(), HM_OK);
    ck_assert_int_eq(hm_notify_send(NULL), HM_EINVAL);
}
END_TEST

static Suite *notify_suite(void)
{
    Suite *s = suite_create("notify");
    TCase *tc;

    tc = tcase_create("core");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_not_under_systemd);
    tcase_add_test(tc, test_path_socket);
    tcase_add_test(tc, test_abstract_socket);
    tcase_add_test(tc, test_watchdog);
    tcase_add_test(tc, test_reinit_disables);
    tcase_add_test(tc, test_threads);
    suite_add_tcase(s, tc);

    tc = tcase_create("limits");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_longest_names);
    tcase_add_test(tc, test_watchdog_range);
    tcase_add_test(tc, test_large_state);
    suite_add_tcase(s, tc);

    tc = tcase_create("errors");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_bad_socket_values);
    tcase_add_test(tc, test_bad_watchdog_values);
    tcase_add_test(tc, test_no_receiver);
    tcase_add_test(tc, test_bad_state);
    suite_add_tcase(s, tc);
    return s;
}

/*
 * `check_notify --listen ADDR SECONDS`: a stand-in for systemd's side, used by
 * tests/integration/systemd-notify.sh. Binds ADDR (a path, or "@name" for the abstract
 * namespace), prints each datagram on one line (newlines shown as spaces) and exits 0 after
 * SECONDS or on SIGTERM.
 */
static int listen_main(const char *addr, const char *seconds)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    struct timeval tv = {.tv_sec = 0, .tv_usec = 200000};
    size_t n = strlen(addr);
    socklen_t len;
    char buf[4096];
    long limit = strtol(seconds, NULL, 10), ticks;
    int fd;

    if (n < 2 || n >= sizeof(a.sun_path) || limit <= 0) {
        fprintf(stderr, "usage: check_notify --listen PATH|@NAME SECONDS\n");
        return 2;
    }
    memcpy(a.sun_path, addr, n);
    len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
    if (addr[0] == '@') {
        a.sun_path[0] = '\0';
        len--;
    }
    fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, len) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0) {
        fprintf(stderr, "check_notify: %s: %s\n", addr, strerror(errno));
        return 1;
    }
    printf("LISTENING\n");
    fflush(stdout);
    for (ticks = 0; ticks < limit * 5;) {
        ssize_t got = recv(fd, buf, sizeof(buf) - 1, 0);
        ssize_t i;

        if (got < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                break;
            ticks++;
            continue;
        }
        for (i = 0; i < got; i++)
            if (buf[i] == '\n' || buf[i] == '\0')
                buf[i] = ' ';
        buf[got] = '\0';
        printf("%s\n", buf);
        fflush(stdout);
    }
    close(fd);
    if (addr[0] != '@')
        unlink(addr);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 4 && strcmp(argv[1], "--listen") == 0)
        return listen_main(argv[2], argv[3]);
    return hm_test_run(notify_suite(), CK_NORMAL);
}
