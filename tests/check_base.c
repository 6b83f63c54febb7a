/* check_base.c - error table, allocation wrappers and the capped buffer. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "hm/alloc.h"
#include "hm/buf.h"
#include "hm/err.h"
#include "testutil.h"

START_TEST(test_strerror)
{
    ck_assert_str_eq(hm_strerror(HM_OK), "success");
    ck_assert_str_eq(hm_strerror(HM_ENOMEM), "out of memory");
    ck_assert_str_eq(hm_err_name(HM_EFORMAT), "EFORMAT");
    ck_assert_str_eq(hm_strerror(12345), "unknown error");
}
END_TEST

START_TEST(test_errmsg)
{
    struct hm_errmsg em = {{0}};
    ck_assert_int_eq(hm_errmsg_set(&em, HM_EINVAL, "bad '%s' %d", "x", 3), HM_EINVAL);
    ck_assert_str_eq(em.text, "bad 'x' 3");
    ck_assert_int_eq(hm_errmsg_set(NULL, HM_EIO, "ignored"), HM_EIO);
}
END_TEST

START_TEST(test_buf_append)
{
    struct hm_buf b;
    hm_buf_init(&b, 16);
    ck_assert_int_eq(hm_buf_append_str(&b, "hello "), HM_OK);
    ck_assert_int_eq(hm_buf_printf(&b, "%d!", 42), HM_OK);
    ck_assert_str_eq(b.data, "hello 42!");
    ck_assert_uint_eq(b.len, 9);
    /* 9 + 8 = 17 > 16: refused, contents kept */
    ck_assert_int_eq(hm_buf_append_str(&b, "12345678"), HM_ETOOBIG);
    ck_assert_str_eq(b.data, "hello 42!");
    ck_assert_int_eq(hm_buf_append_str(&b, "1234567"), HM_OK);
    ck_assert_uint_eq(b.len, 16);
    ck_assert_int_eq(hm_buf_printf(&b, "x"), HM_ETOOBIG);
    hm_buf_release(&b);
    hm_buf_release(&b); /* twice is fine */
}
END_TEST

START_TEST(test_buf_detach)
{
    struct hm_buf b;
    size_t n;
    char *s;
    hm_buf_init(&b, 100);
    hm_buf_append(&b, "abc", 3);
    s = hm_buf_detach(&b, &n);
    ck_assert_uint_eq(n, 3);
    ck_assert_str_eq(s, "abc");
    ck_assert_ptr_null(b.data);
    hm_free(s);
}
END_TEST

START_TEST(test_alloc_fail_injection)
{
    void *a, *b, *c;
    hm_alloc_fail_after(2);
    a = hm_malloc(8);
    b = hm_malloc(8);
    c = hm_calloc(1, 8); /* sticky: fails too */
    hm_alloc_fail_after(0);
    ck_assert_ptr_nonnull(a);
    ck_assert_ptr_null(b);
    ck_assert_ptr_null(c);
    hm_free(a);
}
END_TEST

START_TEST(test_buf_oom)
{
    struct hm_buf b;
    int rc;
    hm_buf_init(&b, 1000);
    hm_alloc_fail_after(1);
    rc = hm_buf_append_str(&b, "x");
    hm_alloc_fail_after(0);
    ck_assert_int_eq(rc, HM_ENOMEM);
    ck_assert_uint_eq(b.len, 0);
    hm_buf_release(&b);
}
END_TEST

START_TEST(test_mallocarray_overflow)
{
    ck_assert_ptr_null(hm_mallocarray((size_t)-1 / 2, 4));
    char *s = hm_strndup("abcdef", 3);
    ck_assert_str_eq(s, "abc");
    hm_free(s);
    /* hm_memdup_z keeps bytes after an embedded NUL (hm_strndup stops there) */
    s = hm_memdup_z("a\0bc", 4);
    ck_assert_mem_eq(s, "a\0bc\0", 5);
    hm_free(s);
    ck_assert_ptr_null(hm_memdup_z("", SIZE_MAX));
}
END_TEST

static Suite *base_suite(void)
{
    Suite *s = suite_create("base");
    TCase *core = tcase_create("core");
    TCase *limits = tcase_create("limits");
    TCase *oom = tcase_create("oom");
    tcase_add_test(core, test_strerror);
    tcase_add_test(core, test_errmsg);
    tcase_add_test(core, test_buf_append);
    tcase_add_test(core, test_buf_detach);
    tcase_add_test(limits, test_mallocarray_overflow);
    tcase_add_test(oom, test_alloc_fail_injection);
    tcase_add_test(oom, test_buf_oom);
    suite_add_tcase(s, core);
    suite_add_tcase(s, limits);
    suite_add_tcase(s, oom);
    return s;
}

int main(void)
{
    return hm_test_run(base_suite(), CK_NORMAL);
}
