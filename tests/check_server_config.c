/*
 * check_server_config.c - the option table, the config file reader, command-line flags,
 * --help, and the agreement of server/config.c, etc/hybridmoe.conf and docs/config.md.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hm/alloc.h"
#include "hm/err.h"

#include "conf.h"
#include "testutil.h"

#ifndef HM_DATADIR
#define HM_DATADIR "/usr/local/share/hybridmoe"
#endif

static const char *srcdir(void)
{
    const char *s = getenv("HM_SRCDIR");
    return s && *s ? s : HM_SRCDIR;
}

static char tmp_path[64];

static const char *write_tmp(const char *text)
{
    int fd;
    FILE *f;

    snprintf(tmp_path, sizeof(tmp_path), "/tmp/hm-conf-XXXXXX");
    fd = mkstemp(tmp_path);
    ck_assert_int_ge(fd, 0);
    f = fdopen(fd, "w");
    fputs(text, f);
    fclose(f);
    return tmp_path;
}

static int parse_args(int argc, const char **argv, struct hm_config **c, struct hm_errmsg *em)
{
    bool help, version;
    return hm_config_from_args(argc, (char **)argv, &help, &version, c, em);
}

/* ---- core ------------------------------------------------------------------------ */

START_TEST(defaults)
{
    struct hm_config *c;

    ck_assert_int_eq(hm_config_new(&c), HM_OK);
    ck_assert_str_eq(c->host, "127.0.0.1");
    ck_assert_uint_eq(c->port, 8080);
    ck_assert_str_eq(c->model, HM_DATADIR "/default.gguf");
    ck_assert_uint_eq(c->kv_budget, 1ull << 30);
    ck_assert_uint_eq(c->body_limit, 1u << 20);
    ck_assert_uint_eq(c->header_limit, 64u << 10);
    ck_assert_uint_eq(c->max_running, 8);
    ck_assert_uint_eq(c->queue_size, 64);
    ck_assert(c->metrics_auth);
    ck_assert(c->deterministic);
    ck_assert_int_eq(c->log_level, HM_LOG_INFO);
    ck_assert_str_eq(c->api_key, "");
    hm_config_free(c);
}
END_TEST

START_TEST(file_and_flags)
{
    struct hm_config *c;
    struct hm_errmsg em = { { 0 } };
    const char *path = write_tmp("# comment\n\n  port 9000  \nhost ::1\nkv_budget 4G\n"
                                 "api_key \"a b\"\nmetrics_auth no\nlog_level debug\n"
                                 "model_name \"\"\nmax_running 4\n");
    const char *argv[] = { "x", "--max-running", "2", "--config", path, "--port=9100",
                           "--model", "/m.gguf", "--host", "0.0.0.0" };

    ck_assert_int_eq(parse_args(10, argv, &c, &em), HM_OK);
    /* flags override the file whatever their order */
    ck_assert_uint_eq(c->port, 9100);
    ck_assert_uint_eq(c->max_running, 2);
    ck_assert_str_eq(c->host, "0.0.0.0");
    ck_assert_str_eq(c->model, "/m.gguf");
    ck_assert_uint_eq(c->kv_budget, 4ull << 30);
    ck_assert_str_eq(c->api_key, "a b");
    ck_assert(!c->metrics_auth);
    ck_assert_int_eq(c->log_level, HM_LOG_DEBUG);
    ck_assert_str_eq(c->model_name, "");
    hm_config_free(c);
    unlink(path);
}
END_TEST

START_TEST(bytes_suffixes)
{
    uint64_t v;

    ck_assert_int_eq(hm_parse_bytes("65536", &v), HM_OK);
    ck_assert_uint_eq(v, 65536);
    ck_assert_int_eq(hm_parse_bytes("64K", &v), HM_OK);
    ck_assert_uint_eq(v, 65536);
    ck_assert_int_eq(hm_parse_bytes("64kB", &v), HM_OK);
    ck_assert_uint_eq(v, 65536);
    ck_assert_int_eq(hm_parse_bytes("3M", &v), HM_OK);
    ck_assert_uint_eq(v, 3u << 20);
    ck_assert_int_eq(hm_parse_bytes("4G", &v), HM_OK);
    ck_assert_uint_eq(v, 4ull << 30);
    ck_assert_int_eq(hm_parse_bytes("1T", &v), HM_OK);
    ck_assert_uint_eq(v, 1ull << 40);
    ck_assert_int_eq(hm_parse_bytes("", &v), HM_EINVAL);
    ck_assert_int_eq(hm_parse_bytes("-1", &v), HM_EINVAL);
    ck_assert_int_eq(hm_parse_bytes("4X", &v), HM_EINVAL);
    ck_assert_int_eq(hm_parse_bytes("4 G", &v), HM_EINVAL);
    ck_assert_int_eq(hm_parse_bytes("99999999999999999999", &v), HM_ERANGE);
    ck_assert_int_eq(hm_parse_bytes("99999999999T", &v), HM_ERANGE);
}
END_TEST

START_TEST(help_lists_every_option)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);

    hm_config_usage(f, "hybridmoe-server");
    fclose(f);
    for (const struct hm_config_option *o = hm_config_options(); o->name; o++) {
        char flag[80];
        snprintf(flag, sizeof(flag), "--%s ", o->name);
        ck_assert_msg(strstr(buf, flag) != NULL, "--help lacks %s", o->name);
    }
    ck_assert_ptr_nonnull(strstr(buf, "--config FILE"));
    free(buf);
    {
        bool help, version;
        struct hm_config *c;
        const char *argv[] = { "x", "--port", "1", "--help" };
        ck_assert_int_eq(hm_config_from_args(4, (char **)argv, &help, &version, &c, NULL),
                         HM_OK);
        ck_assert(help);
        hm_config_free(c);
    }
}
END_TEST

/* ---- errors: every bad value stops with a message naming the option ------------ */

static void expect_bad(int argc, const char **argv, const char *needle)
{
    struct hm_config *c = (struct hm_config *)1;
    struct hm_errmsg em = { { 0 } };

    ck_assert_int_lt(parse_args(argc, argv, &c, &em), 0);
    ck_assert_ptr_null(c);
    ck_assert_msg(strstr(em.text, needle) != NULL, "message '%s' lacks '%s'", em.text, needle);
}

START_TEST(bad_flags)
{
    const char *a1[] = { "x", "--port", "abc" };
    const char *a2[] = { "x", "--port", "70000" };
    const char *a3[] = { "x", "--port", "-1" };
    const char *a4[] = { "x", "--kv_budget", "lots" };
    const char *a5[] = { "x", "--metrics_auth", "maybe" };
    const char *a6[] = { "x", "--log_level", "loud" };
    const char *a7[] = { "x", "--no_such_option", "1" };
    const char *a8[] = { "x", "--port" };
    const char *a9[] = { "x", "stray" };
    const char *a10[] = { "x", "--max_running", "0" };
    const char *a11[] = { "x", "--body_limit", "10" };
    const char *a12[] = { "x", "--config", "/nonexistent/hybridmoe.conf" };
    const char *a13[] = { "x", "--threads", "12abc" };

    expect_bad(3, a1, "'port'");
    expect_bad(3, a2, "out of range");
    expect_bad(3, a3, "'port'");
    expect_bad(3, a4, "'kv_budget'");
    expect_bad(3, a5, "'metrics_auth'");
    expect_bad(3, a6, "'log_level'");
    expect_bad(3, a7, "no_such_option");
    expect_bad(2, a8, "needs a value");
    expect_bad(2, a9, "stray");
    expect_bad(3, a10, "'max_running'");
    expect_bad(3, a11, "'body_limit'");
    expect_bad(3, a12, "cannot open config file");
    expect_bad(3, a13, "'threads'");
}
END_TEST

START_TEST(bad_file)
{
    struct hm_config *c;
    struct hm_errmsg em = { { 0 } };
    const char *path = write_tmp("port 8080\n# ok\nqueue_size many\n");

    ck_assert_int_eq(hm_config_new(&c), HM_OK);
    ck_assert_int_eq(hm_config_load_file(c, path, &em), HM_EINVAL);
    ck_assert_ptr_nonnull(strstr(em.text, ":3:"));
    ck_assert_ptr_nonnull(strstr(em.text, "'queue_size'"));
    unlink(path);
    path = write_tmp("bogus 1\n");
    ck_assert_int_eq(hm_config_load_file(c, path, &em), HM_EINVAL);
    ck_assert_ptr_nonnull(strstr(em.text, "unknown option 'bogus'"));
    unlink(path);
    {
        /* a NUL byte is named as such, at its line (fgets() saw a line without '\n') */
        static const char bin[] = "port 8080\n\0\xff\xfe port 1\n";
        FILE *f;
        path = write_tmp("");
        f = fopen(path, "wb");
        ck_assert_ptr_nonnull(f);
        ck_assert_uint_eq(fwrite(bin, 1, sizeof(bin) - 1, f), sizeof(bin) - 1);
        fclose(f);
        ck_assert_int_eq(hm_config_load_file(c, path, &em), HM_EINVAL);
        ck_assert_msg(strstr(em.text, ":2: NUL byte") != NULL, "%s", em.text);
        unlink(path);
    }
    {
        /* a line of 5000 bytes is too long; the last line may lack its '\n' */
        char *big = malloc(5001);
        memset(big, 'x', 5000);
        big[5000] = '\0';
        path = write_tmp(big);
        free(big);
        ck_assert_int_eq(hm_config_load_file(c, path, &em), HM_EINVAL);
        ck_assert_msg(strstr(em.text, ":1: line too long") != NULL, "%s", em.text);
        unlink(path);
        path = write_tmp("# no newline at the end\nqueue_size 7");
        ck_assert_int_eq(hm_config_load_file(c, path, &em), HM_OK);
        ck_assert_uint_eq(c->queue_size, 7);
        unlink(path);
    }
    hm_config_free(c);
}
END_TEST

START_TEST(set_unknown)
{
    struct hm_config *c;
    struct hm_errmsg em = { { 0 } };

    ck_assert_int_eq(hm_config_new(&c), HM_OK);
    ck_assert_int_eq(hm_config_set(c, "nope", "1", &em), HM_ENOENT);
    ck_assert_int_eq(hm_config_set(c, "queue-size", "5", &em), HM_OK);
    ck_assert_uint_eq(c->queue_size, 5);
    hm_config_free(c);
}
END_TEST

/* ---- the table, etc/hybridmoe.conf and docs/config.md agree --------------------- */

static char *slurp(const char *rel)
{
    char path[1024];
    FILE *f;
    char *buf;
    long n;

    snprintf(path, sizeof(path), "%s/%s", srcdir(), rel);
    f = fopen(path, "r");
    ck_assert_msg(f != NULL, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = malloc((size_t)n + 1);
    ck_assert_int_eq(fread(buf, 1, (size_t)n, f), n);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

/* The default as written in the file (prefix: "@pkgdatadir@" or "$(pkgdatadir)"). */
static void shown_default(const struct hm_config_option *o, const char *datadir, char *out,
                          size_t cap)
{
    size_t n = strlen(HM_DATADIR);

    if (!o->def[0])
        snprintf(out, cap, "\"\"");
    else if (!strncmp(o->def, HM_DATADIR, n))
        snprintf(out, cap, "%s%s", datadir, o->def + n);
    else
        snprintf(out, cap, "%s", o->def);
}

START_TEST(table_conf_docs_agree)
{
    char *conf = slurp("etc/hybridmoe.conf"), *docs = slurp("docs/config.md");
    const struct hm_config_option *o;
    size_t n_opts = 0, n_doc = 0;

    for (o = hm_config_options(); o->name; o++) {
        char line[512], def[256], entry[512];
        n_opts++;
        shown_default(o, "@pkgdatadir@", def, sizeof(def));
        snprintf(line, sizeof(line), "\n# %s %s\n", o->name, def);
        ck_assert_msg(strstr(conf, line) != NULL, "etc/hybridmoe.conf lacks '# %s %s'",
                      o->name, def);
        shown_default(o, "$(pkgdatadir)", def, sizeof(def));
        snprintf(entry, sizeof(entry), "\n## %s\n\n- Type: ", o->name);
        ck_assert_msg(strstr(docs, entry) != NULL, "docs/config.md lacks '## %s'", o->name);
        snprintf(entry, sizeof(entry), "\n## %s\n", o->name);
        const char *sec = strstr(docs, entry);
        snprintf(line, sizeof(line), "- Default: `%s`", def);
        const char *d = strstr(sec, line);
        const char *next = strstr(sec + 1, "\n## ");
        ck_assert_msg(d && (!next || d < next), "docs/config.md: %s default is not `%s`",
                      o->name, def);
    }
    /* no extra entries in the docs, no uncommented or unknown options in the file */
    for (const char *p = docs; (p = strstr(p, "\n## ")); p++)
        n_doc++;
    ck_assert_uint_eq(n_doc, n_opts);
    for (const char *l = conf; *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : l + strlen(l))
        ck_assert_msg(l[0] == '#' || l[0] == '\n', "uncommented line in conf: %.40s", l);
    free(conf);
    free(docs);
}
END_TEST

/* ---- oom --------------------------------------------------------------------------- */

START_TEST(oom_config_new)
{
    for (long n = 1;; n++) {
        struct hm_config *c = NULL;
        int rc;
        hm_alloc_fail_after(n);
        rc = hm_config_new(&c);
        hm_alloc_fail_after(0);
        if (rc == HM_OK) {
            hm_config_free(c);
            break;
        }
        ck_assert_int_eq(rc, HM_ENOMEM);
        ck_assert_ptr_null(c);
    }
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("server_config");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, defaults);
    tcase_add_test(tc, file_and_flags);
    tcase_add_test(tc, bytes_suffixes);
    tcase_add_test(tc, help_lists_every_option);
    tcase_add_test(tc, table_conf_docs_agree);
    suite_add_tcase(s, tc);
    tc = tcase_create("errors");
    tcase_add_test(tc, bad_flags);
    tcase_add_test(tc, bad_file);
    tcase_add_test(tc, set_unknown);
    suite_add_tcase(s, tc);
    tc = tcase_create("oom");
    tcase_add_test(tc, oom_config_new);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return hm_test_run(suite(), CK_NORMAL);
}
