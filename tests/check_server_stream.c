/*
 * check_server_stream.c - stop sequences across token boundaries, UTF-8 holdback, SSE
 * frame building, lossy UTF-8 for token strings, and metrics exposition.
 */
#include <check.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hm/alloc.h"
#include "hm/err.h"
#include "hm/tokenizer.h"

#include "batcher.h"
#include "metrics.h"
#include "textstream.h"
#include "testutil.h"

/* Feeds pieces through a stopper; returns the released text and whether it stopped. */
static char *run_stopper(char *const *stops, size_t n_stop, const char *const *pieces,
                         size_t n_pieces, bool *stopped, size_t *stop_at_piece)
{
    struct hm_stopper st;
    struct hm_buf out;

    hm_stopper_init(&st, stops, n_stop);
    hm_buf_init(&out, 1 << 20);
    hm_buf_append(&out, "", 0);
    *stopped = false;
    for (size_t i = 0; i < n_pieces && !*stopped; i++) {
        ck_assert_int_eq(hm_stopper_push(&st, pieces[i], strlen(pieces[i]), &out, stopped), 0);
        if (*stopped)
            *stop_at_piece = i;
    }
    if (!*stopped)
        ck_assert_int_eq(hm_stopper_finish(&st, &out), 0);
    hm_stopper_release(&st);
    return hm_buf_detach(&out, NULL);
}

START_TEST(stop_within_token)
{
    char *stops[] = { "END" };
    const char *pieces[] = { "abc", "xENDy", "zzz" };
    bool stopped;
    size_t at = 99;
    char *t = run_stopper(stops, 1, pieces, 3, &stopped, &at);

    ck_assert(stopped);
    ck_assert_uint_eq(at, 1);
    ck_assert_str_eq(t, "abcx");
    hm_free(t);
}
END_TEST

START_TEST(stop_across_tokens)
{
    char *stops[] = { "\nUser:", "###" };
    const char *pieces[] = { "Hi", " there\n", "Us", "er", ": more" };
    bool stopped;
    size_t at = 99;
    char *t = run_stopper(stops, 2, pieces, 5, &stopped, &at);

    ck_assert(stopped);
    ck_assert_uint_eq(at, 4);
    ck_assert_str_eq(t, "Hi there");
    hm_free(t);
}
END_TEST

START_TEST(holdback_released_when_not_stop)
{
    char *stops[] = { "abcd" };
    struct hm_stopper st;
    struct hm_buf out;
    bool stopped;

    hm_stopper_init(&st, stops, 1);
    hm_buf_init(&out, 1 << 20);
    ck_assert_int_eq(hm_stopper_push(&st, "xab", 3, &out, &stopped), 0);
    ck_assert(!stopped);
    ck_assert_uint_eq(out.len, 1); /* "ab" may start "abcd": held */
    ck_assert_int_eq(hm_stopper_push(&st, "c", 1, &out, &stopped), 0);
    ck_assert_uint_eq(out.len, 1);
    ck_assert_int_eq(hm_stopper_push(&st, "x", 1, &out, &stopped), 0);
    ck_assert(!stopped);
    ck_assert_str_eq(out.data, "xabcx"); /* released as soon as it cannot be a stop */
    ck_assert_int_eq(hm_stopper_push(&st, "ab", 2, &out, &stopped), 0);
    ck_assert_int_eq(hm_stopper_finish(&st, &out), 0);
    ck_assert_str_eq(out.data, "xabcxab"); /* end of generation releases the rest */
    hm_buf_release(&out);
    hm_stopper_release(&st);
}
END_TEST

START_TEST(earliest_stop_wins)
{
    char *stops[] = { "cd", "bcde" };
    const char *pieces[] = { "ab", "cdef" };
    bool stopped;
    size_t at;
    char *t = run_stopper(stops, 2, pieces, 2, &stopped, &at);

    ck_assert(stopped);
    ck_assert_str_eq(t, "a");
    hm_free(t);
}
END_TEST

START_TEST(no_stops_passthrough)
{
    const char *pieces[] = { "a", "", "bc" };
    bool stopped;
    size_t at;
    char *t = run_stopper(NULL, 0, pieces, 3, &stopped, &at);

    ck_assert(!stopped);
    ck_assert_str_eq(t, "abc");
    hm_free(t);
}
END_TEST

/* A stop made of a multi-byte character split over tokens, behind hm_utf8_stream. */
START_TEST(utf8_holdback_and_stop)
{
    /* "é" = C3 A9, "€" = E2 82 AC */
    static const uint8_t toks[][3] = { { 'a' }, { 0xC3 }, { 0xA9, 'b' }, { 0xE2, 0x82 },
                                       { 0xAC } };
    static const size_t lens[] = { 1, 1, 2, 2, 1 };
    char *stops[] = { "b\xE2\x82\xAC" };
    struct hm_utf8_stream us;
    struct hm_stopper st;
    struct hm_buf out;
    uint8_t dec[64];
    bool stopped = false;
    size_t released[5];

    hm_utf8_stream_init(&us);
    hm_stopper_init(&st, stops, 1);
    hm_buf_init(&out, 1 << 20);
    for (size_t i = 0; i < 5 && !stopped; i++) {
        size_t n = hm_utf8_stream_push(&us, toks[i], lens[i], dec, sizeof(dec));
        ck_assert(hm_utf8_valid(dec, n));
        ck_assert_int_eq(hm_stopper_push(&st, (const char *)dec, n, &out, &stopped), 0);
        released[i] = out.len;
    }
    ck_assert(stopped);
    ck_assert_uint_eq(released[0], 1);    /* "a" */
    ck_assert_uint_eq(released[1], 1);    /* C3 held by the UTF-8 stream */
    ck_assert_uint_eq(released[2], 3);    /* "é" out, "b" held as a stop prefix */
    ck_assert_uint_eq(released[3], 3);    /* E2 82 held */
    ck_assert_str_eq(out.data, "a\xC3\xA9");
    ck_assert(hm_utf8_valid((const uint8_t *)out.data, out.len));
    hm_buf_release(&out);
    hm_stopper_release(&st);
}
END_TEST

START_TEST(sse_frames)
{
    struct hm_buf b;
    json_t *j = json_pack("{s:s,s:[i]}", "a", "x\ny", "b", 1);

    hm_buf_init(&b, 1 << 20);
    ck_assert_int_eq(hm_sse_append_json(&b, j), 0);
    ck_assert_str_eq(b.data, "data: {\"a\":\"x\\ny\",\"b\":[1]}\n\n");
    ck_assert_int_eq(hm_sse_append_comment(&b, "keep-alive"), 0);
    ck_assert_int_eq(hm_sse_append_done(&b), 0);
    ck_assert_str_eq(b.data, "data: {\"a\":\"x\\ny\",\"b\":[1]}\n\n: keep-alive\n\ndata: [DONE]\n\n");
    hm_buf_release(&b);
    /* a frame that does not fit leaves the buffer as it was */
    hm_buf_init(&b, 20);
    ck_assert_int_eq(hm_sse_append_done(&b), 0);
    ck_assert_int_lt(hm_sse_append_json(&b, j), 0);
    ck_assert_str_eq(b.data, "data: [DONE]\n\n");
    hm_buf_release(&b);
    json_decref(j);
}
END_TEST

START_TEST(lossy_utf8)
{
    struct hm_buf b;

    hm_buf_init(&b, 1 << 10);
    ck_assert_int_eq(hm_utf8_append_lossy(&b, (const unsigned char *)"a\xC3\xA9", 3), 0);
    ck_assert_str_eq(b.data, "a\xC3\xA9");
    hm_buf_reset(&b);
    ck_assert_int_eq(hm_utf8_append_lossy(&b, (const unsigned char *)"\xC3", 1), 0);
    ck_assert_str_eq(b.data, "\xEF\xBF\xBD");
    hm_buf_reset(&b);
    ck_assert_int_eq(hm_utf8_append_lossy(&b, (const unsigned char *)"\xED\xA0\x80z", 4), 0);
    ck_assert_str_eq(b.data, "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBDz"); /* surrogate */
    hm_buf_reset(&b);
    ck_assert_int_eq(hm_utf8_append_lossy(&b, (const unsigned char *)"\xC0\xAF", 2), 0);
    ck_assert_str_eq(b.data, "\xEF\xBF\xBD\xEF\xBF\xBD"); /* overlong */
    hm_buf_reset(&b);
    ck_assert_int_eq(hm_utf8_append_lossy(&b, (const unsigned char *)"", 0), 0);
    ck_assert_str_eq(b.data, "");
    hm_buf_release(&b);
}
END_TEST

START_TEST(histogram_render)
{
    struct hm_hist h;
    struct hm_buf b;

    hm_hist_init(&h, HM_HIST_UNIT);
    hm_hist_observe(&h, 0.05);
    hm_hist_observe(&h, 0.5);
    hm_hist_observe(&h, 2.0);
    hm_hist_observe(&h, 0.0 / 0.0); /* NaN ignored */
    hm_buf_init(&b, 1 << 16);
    ck_assert_int_eq(hm_hist_render(&h, "hybridmoe_x", "X.", &b), 0);
    ck_assert_ptr_nonnull(strstr(b.data, "# TYPE hybridmoe_x histogram\n"));
    ck_assert_ptr_nonnull(strstr(b.data, "hybridmoe_x_bucket{le=\"0.1\"} 1\n"));
    ck_assert_ptr_nonnull(strstr(b.data, "hybridmoe_x_bucket{le=\"0.5\"} 2\n"));
    ck_assert_ptr_nonnull(strstr(b.data, "hybridmoe_x_bucket{le=\"1\"} 2\n"));
    ck_assert_ptr_nonnull(strstr(b.data, "hybridmoe_x_bucket{le=\"+Inf\"} 3\n"));
    ck_assert_ptr_nonnull(strstr(b.data, "hybridmoe_x_count 3\n"));
    ck_assert_ptr_nonnull(strstr(b.data, "hybridmoe_x_sum 2.55\n"));
    hm_buf_release(&b);
}
END_TEST

START_TEST(metrics_render_all)
{
    struct hm_metrics m;
    struct hm_batcher_stats bs;
    struct hm_buf b;

    hm_metrics_init(&m);
    hm_batcher_stats_init(&bs, 1024);
    bs.running_seqs = 3;
    hm_metrics_count_status(&m, 200);
    hm_metrics_count_status(&m, 200);
    hm_metrics_count_status(&m, 503);
    hm_metrics_count_status(&m, 9999); /* ignored */
    hm_buf_init(&b, 1 << 20);
    ck_assert_int_eq(hm_metrics_render(&m, &bs, 8, 64, 0, &b), 0);
    ck_assert_ptr_nonnull(strstr(b.data, "\nhybridmoe_running_sequences 3\n"));
    ck_assert_ptr_nonnull(strstr(b.data, "\nhybridmoe_kv_bytes_budget 1024\n"));
    ck_assert_ptr_nonnull(strstr(b.data, "hybridmoe_requests_total{status=\"200\"} 2\n"));
    ck_assert_ptr_nonnull(strstr(b.data, "hybridmoe_requests_total{status=\"503\"} 1\n"));
    ck_assert_ptr_null(strstr(b.data, "status=\"9999\""));
    /* every line is a comment or "name[{labels}] value" */
    for (const char *l = b.data; *l; l = strchr(l, '\n') + 1) {
        ck_assert_msg(!strncmp(l, "# ", 2) || !strncmp(l, "hybridmoe_", 10), "bad line %.40s", l);
        ck_assert_ptr_nonnull(strchr(l, '\n'));
    }
    hm_buf_release(&b);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("server_stream");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, stop_within_token);
    tcase_add_test(tc, stop_across_tokens);
    tcase_add_test(tc, holdback_released_when_not_stop);
    tcase_add_test(tc, earliest_stop_wins);
    tcase_add_test(tc, no_stops_passthrough);
    tcase_add_test(tc, utf8_holdback_and_stop);
    tcase_add_test(tc, sse_frames);
    tcase_add_test(tc, lossy_utf8);
    tcase_add_test(tc, histogram_render);
    tcase_add_test(tc, metrics_render_all);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return hm_test_run(suite(), CK_NORMAL);
}
