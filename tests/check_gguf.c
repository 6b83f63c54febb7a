/* check_gguf.c - GGUF reader/writer: round trips, conversions, a malformed-file corpus
 * and allocation failures. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hm/alloc.h"
#include "hm/buf.h"
#include "hm/gguf.h"
#include "testutil.h"

static char tmpdir[256];

static void tmp_setup(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/check_gguf.XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

static void tmp_teardown(void)
{
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    ck_assert_int_eq(system(cmd), 0);
}

static char *tmp_path(const char *name)
{
    static char p[400];
    snprintf(p, sizeof p, "%s/%s", tmpdir, name);
    return p;
}

/* ---- a raw byte builder for hand-made files ---- */
struct bb {
    struct hm_buf b;
};

static void bb_init(struct bb *b)
{
    hm_buf_init(&b->b, 1 << 24);
}
static void bb_u32(struct bb *b, uint32_t v)
{
    hm_buf_append(&b->b, &v, 4);
}
static void bb_u64(struct bb *b, uint64_t v)
{
    hm_buf_append(&b->b, &v, 8);
}
static void bb_str(struct bb *b, const char *s)
{
    bb_u64(b, strlen(s));
    hm_buf_append(&b->b, s, strlen(s));
}
static void bb_header(struct bb *b, uint32_t version, uint64_t n_t, uint64_t n_kv)
{
    bb_u32(b, 0x46554747u);
    bb_u32(b, version);
    bb_u64(b, n_t);
    bb_u64(b, n_kv);
}
/* tensor info: 1-D or 2-D f32 */
static void bb_tensor(struct bb *b, const char *name, uint32_t n_dims, const uint64_t *ne,
                      uint32_t type, uint64_t off)
{
    bb_str(b, name);
    bb_u32(b, n_dims);
    for (uint32_t i = 0; i < n_dims; i++)
        bb_u64(b, ne[i]);
    bb_u32(b, type);
    bb_u64(b, off);
}
static void bb_pad(struct bb *b, size_t align)
{
    while (b->b.len % align)
        hm_buf_append(&b->b, "", 1);
}
static void bb_zeros(struct bb *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        hm_buf_append(&b->b, "", 1);
}

/* Opens b from memory, expects rc and (if rc < 0) a message containing `needle` and
 * the name. */
static void expect(struct bb *b, int want, const char *needle)
{
    struct hm_gguf *g = (void *)1;
    struct hm_errmsg em = {{0}};
    int rc = hm_gguf_open_mem(b->b.data, b->b.len, "bad.gguf", &g, &em);
    if (rc != want || (needle && !strstr(em.text, needle)))
        ck_abort_msg("rc %d (want %d), message '%s' (want '%s')", rc, want, em.text,
                     needle ? needle : "");
    if (rc == HM_OK) {
        ck_assert_ptr_nonnull(g);
        hm_gguf_free(g);
    } else {
        ck_assert_ptr_null(g);
        ck_assert_ptr_nonnull(strstr(em.text, "bad.gguf"));
    }
    hm_buf_release(&b->b);
}

/* ---- conversions ---- */

START_TEST(test_f16)
{
    ck_assert_uint_eq(hm_f32_to_f16(1.0f), 0x3c00);
    ck_assert_uint_eq(hm_f32_to_f16(-2.0f), 0xc000);
    ck_assert_uint_eq(hm_f32_to_f16(65504.0f), 0x7bff);
    ck_assert_uint_eq(hm_f32_to_f16(1e6f), 0x7c00);
    ck_assert_uint_eq(hm_f32_to_f16(0.0f), 0);
    ck_assert_uint_eq(hm_f32_to_f16(5.9604645e-8f), 1); /* smallest subnormal */
    ck_assert_uint_eq(hm_f32_to_f16(1.0f + 1.0f / 2048), 0x3c00); /* tie to even */
    ck_assert_uint_eq(hm_f32_to_f16(1.0f + 3.0f / 2048), 0x3c02);
    ck_assert(hm_f16_to_f32(0x3555) > 0.333f && hm_f16_to_f32(0x3555) < 0.3334f);
    ck_assert(isnan(hm_f16_to_f32(hm_f32_to_f16(NAN))));
    for (uint32_t h = 0; h < 0x7c00; h++) /* every finite positive half round-trips */
        ck_assert_uint_eq(hm_f32_to_f16(hm_f16_to_f32((uint16_t)h)), h);
    ck_assert_uint_eq(hm_f32_to_bf16(1.0f), 0x3f80);
    ck_assert_uint_eq(hm_f32_to_bf16(-3.0f), 0xc040);
    ck_assert(hm_bf16_to_f32(0x3f80) == 1.0f);
    ck_assert(isnan(hm_bf16_to_f32(hm_f32_to_bf16(NAN))));
}
END_TEST

START_TEST(test_q8_0)
{
    float x[64], y[64];
    uint8_t q[68];
    for (int i = 0; i < 64; i++)
        x[i] = sinf((float)i) * (i < 32 ? 1.0f : 100.0f);
    ck_assert_uint_eq(hm_dtype_row_bytes(HM_DTYPE_Q8_0, 64), 68);
    ck_assert_uint_eq(hm_dtype_row_bytes(HM_DTYPE_Q8_0, 33), 0);
    ck_assert_uint_eq(hm_dtype_row_bytes(HM_DTYPE_F16, 3), 6);
    hm_quantize_row(HM_DTYPE_Q8_0, x, q, 64);
    hm_dequantize_row(HM_DTYPE_Q8_0, q, y, 64);
    for (int i = 0; i < 64; i++)
        ck_assert(fabsf(x[i] - y[i]) <= (i < 32 ? 1.0f : 100.0f) / 127.0f * 0.51f + 1e-3f);
    float z[32] = {0};
    hm_quantize_row(HM_DTYPE_Q8_0, z, q, 32);
    hm_dequantize_row(HM_DTYPE_Q8_0, q, y, 32);
    ck_assert(y[5] == 0.0f);
    enum hm_dtype t;
    ck_assert_int_eq(hm_dtype_from_name("q8_0", &t), HM_OK);
    ck_assert_int_eq(t, HM_DTYPE_Q8_0);
    ck_assert_int_eq(hm_dtype_from_name("q4_0", &t), HM_EINVAL);
    ck_assert_str_eq(hm_dtype_name(HM_DTYPE_BF16), "bf16");
}
END_TEST

/* ---- round trip ---- */

START_TEST(test_roundtrip)
{
    struct hm_gguf_writer *w;
    struct hm_errmsg em = {{0}};
    ck_assert_int_eq(hm_gguf_writer_new(&w), HM_OK);
    uint8_t u8 = 200;
    int8_t i8 = -100;
    uint16_t u16 = 60000;
    int16_t i16 = -30000;
    int64_t i64 = -5000000000ll;
    double f64 = 2.5;
    ck_assert_int_eq(hm_gguf_writer_add_scalar(w, "t.u8", HM_GGUF_UINT8, &u8), HM_OK);
    ck_assert_int_eq(hm_gguf_writer_add_scalar(w, "t.i8", HM_GGUF_INT8, &i8), HM_OK);
    ck_assert_int_eq(hm_gguf_writer_add_scalar(w, "t.u16", HM_GGUF_UINT16, &u16), HM_OK);
    ck_assert_int_eq(hm_gguf_writer_add_scalar(w, "t.i16", HM_GGUF_INT16, &i16), HM_OK);
    ck_assert_int_eq(hm_gguf_writer_add_u32(w, "t.u32", 4000000000u), HM_OK);
    ck_assert_int_eq(hm_gguf_writer_add_i32(w, "t.i32", -7), HM_OK);
    ck_assert_int_eq(hm_gguf_writer_add_f32(w, "t.f32", 0.25f), HM_OK);
    ck_assert_int_eq(hm_gguf_writer_add_bool(w, "t.bool", true), HM_OK);
    ck_assert_int_eq(hm_gguf_writer_add_str(w, "t.str", "héllo"), HM_OK);
    ck_assert_int_eq(hm_gguf_writer_add_u64(w, "t.u64", 1ull << 40), HM_OK);
    ck_assert_int_eq(hm_gguf_writer_add_scalar(w, "t.i64", HM_GGUF_INT64, &i64), HM_OK);
    ck_assert_int_eq(hm_gguf_writer_add_scalar(w, "t.f64", HM_GGUF_FLOAT64, &f64), HM_OK);
    float fa[3] = {1, 2, 3};
    ck_assert_int_eq(hm_gguf_writer_add_arr(w, "t.arr", HM_GGUF_FLOAT32, fa, 3), HM_OK);
    ck_assert_int_eq(hm_gguf_writer_add_arr(w, "t.empty", HM_GGUF_INT32, NULL, 0), HM_OK);
    const char *strs[] = {"a", "", "ccc"};
    ck_assert_int_eq(hm_gguf_writer_add_arr_str(w, "t.strs", strs, 3), HM_OK);
    /* nested: array of 2 arrays of u16: [[1,2],[3]] */
    struct bb nb;
    bb_init(&nb);
    bb_u32(&nb, HM_GGUF_ARRAY);
    bb_u64(&nb, 2);
    bb_u32(&nb, HM_GGUF_UINT16);
    bb_u64(&nb, 2);
    uint16_t v16[3] = {1, 2, 3};
    hm_buf_append(&nb.b, v16, 4);
    bb_u32(&nb, HM_GGUF_UINT16);
    bb_u64(&nb, 1);
    hm_buf_append(&nb.b, v16 + 2, 2);
    ck_assert_int_eq(hm_gguf_writer_add_raw(w, "t.nested", HM_GGUF_ARRAY, nb.b.data, nb.b.len),
                     HM_OK);
    hm_buf_release(&nb.b);
    /* strings with NUL bytes keep their full length: "a\0b" and ["x\0y\0"] */
    bb_init(&nb);
    bb_u64(&nb, 3);
    hm_buf_append(&nb.b, "a\0b", 3);
    ck_assert_int_eq(hm_gguf_writer_add_raw(w, "t.nul", HM_GGUF_STRING, nb.b.data, nb.b.len),
                     HM_OK);
    hm_buf_release(&nb.b);
    bb_init(&nb);
    bb_u32(&nb, HM_GGUF_STRING);
    bb_u64(&nb, 1);
    bb_u64(&nb, 4);
    hm_buf_append(&nb.b, "x\0y\0", 4);
    ck_assert_int_eq(hm_gguf_writer_add_raw(w, "t.nuls", HM_GGUF_ARRAY, nb.b.data, nb.b.len),
                     HM_OK);
    hm_buf_release(&nb.b);
    /* duplicates rejected */
    ck_assert_int_eq(hm_gguf_writer_add_u32(w, "t.u32", 1), HM_EINVAL);
    ck_assert_int_eq(hm_gguf_writer_add_u32(w, "general.alignment", 48), HM_EINVAL);
    ck_assert_int_eq(hm_gguf_writer_add_u32(w, "general.alignment", 64), HM_OK);

    /* tensors of every type */
    float d32[64 * 2];
    for (int i = 0; i < 128; i++)
        d32[i] = (float)i / 8.0f - 4.0f;
    uint16_t d16[128], db16[128];
    uint8_t dq[4 * 34];
    hm_quantize_row(HM_DTYPE_F16, d32, d16, 128);
    hm_quantize_row(HM_DTYPE_BF16, d32, db16, 128);
    hm_quantize_row(HM_DTYPE_Q8_0, d32, dq, 128);
    uint64_t ne2[2] = {64, 2}, ne1[1] = {128}, ne3[3] = {32, 2, 2};
    ck_assert_int_eq(hm_gguf_writer_add_tensor(w, "a.f32", HM_DTYPE_F32, 2, ne2, d32), HM_OK);
    ck_assert_int_eq(hm_gguf_writer_add_tensor(w, "b.f16", HM_DTYPE_F16, 1, ne1, d16), HM_OK);
    ck_assert_int_eq(hm_gguf_writer_add_tensor(w, "c.bf16", HM_DTYPE_BF16, 2, ne2, db16), HM_OK);
    ck_assert_int_eq(hm_gguf_writer_add_tensor(w, "d.q8_0", HM_DTYPE_Q8_0, 3, ne3, dq), HM_OK);
    ck_assert_int_eq(hm_gguf_writer_add_tensor(w, "a.f32", HM_DTYPE_F32, 1, ne1, d32), HM_EINVAL);
    uint64_t bad[1] = {33};
    ck_assert_int_eq(hm_gguf_writer_add_tensor(w, "e", HM_DTYPE_Q8_0, 1, bad, dq), HM_EINVAL);
    char path[400];
    snprintf(path, sizeof path, "%s", tmp_path("rt.gguf"));
    ck_assert_int_eq(hm_gguf_writer_write(w, path, NULL, NULL, NULL, NULL, &em), HM_OK);
    hm_gguf_writer_free(w);
    ck_assert_int_ne(access(tmp_path("rt.gguf.tmp"), F_OK), 0);

    struct hm_gguf *g;
    ck_assert_int_eq(hm_gguf_open(path, &g, &em), HM_OK);
    ck_assert_uint_eq(hm_gguf_version(g), 3);
    ck_assert_uint_eq(hm_gguf_alignment(g), 64);
    ck_assert_uint_eq(hm_gguf_n_kv(g), 19);
    ck_assert_str_eq(hm_gguf_key(g, 0), "t.u8");
    ck_assert_int_eq(hm_gguf_kv_type(g, 15), HM_GGUF_ARRAY);
    uint32_t u;
    uint64_t u64;
    int64_t s64;
    float f;
    bool b;
    const char *s;
    size_t len;
    ck_assert_int_eq(hm_gguf_get_u32(g, "t.u8", &u), HM_OK);
    ck_assert_uint_eq(u, 200);
    ck_assert_int_eq(hm_gguf_get_u32(g, "t.u16", &u), HM_OK);
    ck_assert_uint_eq(u, 60000);
    ck_assert_int_eq(hm_gguf_get_u32(g, "t.u32", &u), HM_OK);
    ck_assert_uint_eq(u, 4000000000u);
    ck_assert_int_eq(hm_gguf_get_u32(g, "t.i8", &u), HM_EFORMAT); /* negative */
    ck_assert_int_eq(hm_gguf_get_u32(g, "t.u64", &u), HM_EFORMAT); /* does not fit */
    ck_assert_int_eq(hm_gguf_get_u64(g, "t.u64", &u64), HM_OK);
    ck_assert_uint_eq(u64, 1ull << 40);
    ck_assert_int_eq(hm_gguf_get_i64(g, "t.i8", &s64), HM_OK);
    ck_assert_int_eq(s64, -100);
    ck_assert_int_eq(hm_gguf_get_i64(g, "t.i16", &s64), HM_OK);
    ck_assert_int_eq(s64, -30000);
    ck_assert_int_eq(hm_gguf_get_i64(g, "t.i32", &s64), HM_OK);
    ck_assert_int_eq(s64, -7);
    ck_assert_int_eq(hm_gguf_get_i64(g, "t.i64", &s64), HM_OK);
    ck_assert_int_eq(s64, -5000000000ll);
    ck_assert_int_eq(hm_gguf_get_f32(g, "t.f32", &f), HM_OK);
    ck_assert(f == 0.25f);
    ck_assert_int_eq(hm_gguf_get_f32(g, "t.f64", &f), HM_OK);
    ck_assert(f == 2.5f);
    ck_assert_int_eq(hm_gguf_get_f32(g, "t.u32", &f), HM_EFORMAT);
    ck_assert_int_eq(hm_gguf_get_bool(g, "t.bool", &b), HM_OK);
    ck_assert(b);
    ck_assert_int_eq(hm_gguf_get_str(g, "t.str", &s, &len), HM_OK);
    ck_assert_str_eq(s, "héllo");
    ck_assert_uint_eq(len, 6);
    ck_assert_int_eq(hm_gguf_get_str(g, "t.nul", &s, &len), HM_OK);
    ck_assert_uint_eq(len, 3);
    ck_assert_int_eq(memcmp(s, "a\0b", 4), 0);
    ck_assert_int_eq(hm_gguf_get_arr_str(g, "t.nuls", 0, &s, &len), HM_OK);
    ck_assert_uint_eq(len, 4);
    ck_assert_int_eq(memcmp(s, "x\0y\0", 5), 0);
    ck_assert_int_eq(hm_gguf_get_str(g, "nope", &s, &len), HM_ENOENT);
    ck_assert_int_eq(hm_gguf_get_u32(g, "t.str", &u), HM_EFORMAT);
    enum hm_gguf_type et;
    uint64_t n;
    const void *data;
    ck_assert_int_eq(hm_gguf_get_arr(g, "t.arr", &et, &n, &data), HM_OK);
    ck_assert_int_eq(et, HM_GGUF_FLOAT32);
    ck_assert_uint_eq(n, 3);
    memcpy(fa, data, 12);
    ck_assert(fa[2] == 3.0f);
    ck_assert_int_eq(hm_gguf_get_arr(g, "t.empty", &et, &n, &data), HM_OK);
    ck_assert_uint_eq(n, 0);
    ck_assert_int_eq(hm_gguf_get_arr(g, "t.strs", &et, &n, &data), HM_EFORMAT);
    ck_assert_int_eq(hm_gguf_get_arr_n(g, "t.strs", &et, &n), HM_OK);
    ck_assert_uint_eq(n, 3);
    ck_assert_int_eq(hm_gguf_get_arr_str(g, "t.strs", 2, &s, &len), HM_OK);
    ck_assert_str_eq(s, "ccc");
    ck_assert_int_eq(hm_gguf_get_arr_str(g, "t.strs", 1, &s, &len), HM_OK);
    ck_assert_uint_eq(len, 0);
    ck_assert_int_eq(hm_gguf_get_arr_str(g, "t.strs", 3, &s, &len), HM_ERANGE);
    ck_assert_int_eq(hm_gguf_get_arr_n(g, "t.nested", &et, &n), HM_OK);
    ck_assert_int_eq(et, HM_GGUF_ARRAY);
    ck_assert_uint_eq(n, 2);

    char buf[256];
    long i = hm_gguf_find_key(g, "t.nested");
    ck_assert_int_ge(i, 0);
    hm_gguf_format_value(g, (size_t)i, 8, buf, sizeof buf);
    ck_assert_str_eq(buf, "[[1, 2], [3]]");
    hm_gguf_format_value(g, (size_t)hm_gguf_find_key(g, "t.strs"), 2, buf, sizeof buf);
    ck_assert_str_eq(buf, "[\"a\", \"\", ... (3 elements)]");
    hm_gguf_format_value(g, (size_t)hm_gguf_find_key(g, "t.i64"), 2, buf, sizeof buf);
    ck_assert_str_eq(buf, "-5000000000");
    ck_assert_uint_eq(hm_gguf_format_value(g, (size_t)hm_gguf_find_key(g, "t.str"), 2, buf, 4),
                      3);
    ck_assert_str_eq(buf, "\"h\xc3");
    ck_assert_int_eq(hm_gguf_find_key(g, "zzz"), -1);

    ck_assert_uint_eq(hm_gguf_n_tensors(g), 4);
    const struct hm_tensor *t = hm_gguf_find_tensor(g, "d.q8_0");
    ck_assert_ptr_nonnull(t);
    ck_assert_uint_eq(t->n_dims, 3);
    ck_assert_uint_eq(t->ne[2], 2);
    ck_assert_uint_eq(t->ne[3], 1);
    ck_assert_uint_eq(t->n_elems, 128);
    ck_assert_uint_eq(t->n_bytes, 136);
    ck_assert_uint_eq(t->offset % 64, 0);
    ck_assert_int_eq(memcmp(t->data, dq, sizeof dq), 0);
    t = hm_gguf_find_tensor(g, "a.f32");
    ck_assert_int_eq(memcmp(t->data, d32, sizeof d32), 0);
    ck_assert_uint_eq(t->ne[0], 64);
    ck_assert_uint_eq(t->ne[1], 2);
    t = hm_gguf_find_tensor(g, "b.f16");
    ck_assert_int_eq(t->type, HM_DTYPE_F16);
    ck_assert_int_eq(memcmp(t->data, d16, sizeof d16), 0);
    float back[128];
    hm_dequantize_row(t->type, t->data, back, 128);
    ck_assert(back[100] == d32[100]); /* exactly representable */
    t = hm_gguf_find_tensor(g, "c.bf16");
    ck_assert_int_eq(memcmp(t->data, db16, sizeof db16), 0);
    ck_assert_ptr_eq(hm_gguf_tensor(g, 0), hm_gguf_find_tensor(g, "a.f32"));
    ck_assert_ptr_null(hm_gguf_find_tensor(g, "nope"));
    ck_assert_str_eq(hm_gguf_path(g), path);
    hm_gguf_free(g);
}
END_TEST

struct fill_state {
    int calls;
    uint64_t last_done, total;
};

static int fill(void *ctx, const char *name, void *dst, uint64_t n)
{
    struct fill_state *s = ctx;
    s->calls++;
    memset(dst, name[0], (size_t)n);
    return HM_OK;
}

static void progress(void *ctx, uint64_t done, uint64_t total)
{
    struct fill_state *s = ctx;
    ck_assert_uint_ge(done, s->last_done);
    s->last_done = done;
    s->total = total;
}

static int fill_fail(void *ctx, const char *name, void *dst, uint64_t n)
{
    return HM_EIO;
}

START_TEST(test_writer_fill)
{
    struct hm_gguf_writer *w;
    struct hm_errmsg em = {{0}};
    struct fill_state st = {0};
    uint64_t ne[2] = {8, 3};
    ck_assert_int_eq(hm_gguf_writer_new(&w), HM_OK);
    ck_assert_int_eq(hm_gguf_writer_add_tensor(w, "x", HM_DTYPE_F32, 2, ne, NULL), HM_OK);
    ck_assert_int_eq(hm_gguf_writer_add_tensor(w, "y", HM_DTYPE_F16, 1, ne, NULL), HM_OK);
    char path[400];
    snprintf(path, sizeof path, "%s", tmp_path("fill.gguf"));
    ck_assert_int_eq(hm_gguf_writer_write(w, path, NULL, NULL, NULL, NULL, &em), HM_EINVAL);
    ck_assert_int_eq(hm_gguf_writer_write(w, path, fill_fail, NULL, NULL, NULL, &em), HM_EIO);
    ck_assert_ptr_nonnull(strstr(em.text, "'x'"));
    ck_assert_int_ne(access(path, F_OK), 0);
    ck_assert_int_ne(access(tmp_path("fill.gguf.tmp"), F_OK), 0);
    ck_assert_int_eq(hm_gguf_writer_write(w, path, fill, &st, progress, &st, &em), HM_OK);
    ck_assert_int_eq(st.calls, 2);
    ck_assert_uint_eq(st.total, 96 + 16);
    ck_assert_uint_eq(st.last_done, 96 + 16);
    hm_gguf_writer_free(w);
    struct hm_gguf *g;
    ck_assert_int_eq(hm_gguf_open(path, &g, &em), HM_OK);
    const struct hm_tensor *t = hm_gguf_find_tensor(g, "y");
    ck_assert_uint_eq(((const uint8_t *)t->data)[15], 'y');
    ck_assert_uint_eq(t->offset, 96);
    hm_gguf_free(g);
    ck_assert_int_eq(hm_gguf_writer_new(&w), HM_OK);
    ck_assert_int_eq(hm_gguf_writer_write(w, "/nonexistent/dir/x.gguf", NULL, NULL, NULL, NULL,
                                          &em),
                     HM_EIO);
    ck_assert_ptr_nonnull(strstr(em.text, "/nonexistent/dir/x.gguf"));
    hm_gguf_writer_free(w);
}
END_TEST

START_TEST(test_open_errors)
{
    struct hm_gguf *g;
    struct hm_errmsg em = {{0}};
    ck_assert_int_eq(hm_gguf_open(tmp_path("missing.gguf"), &g, &em), HM_ENOENT);
    ck_assert_ptr_null(g);
    ck_assert_ptr_nonnull(strstr(em.text, "missing.gguf"));
    ck_assert_int_eq(hm_gguf_open(tmpdir, &g, &em), HM_EIO);
    FILE *f = fopen(tmp_path("empty.gguf"), "wb");
    fclose(f);
    ck_assert_int_eq(hm_gguf_open(tmp_path("empty.gguf"), &g, &em), HM_EFORMAT);
    ck_assert_ptr_nonnull(strstr(em.text, "truncated"));
}
END_TEST

/* ---- malformed corpus ---- */

/* A small valid file: 2 keys (one array of strings), 2 tensors. */
static void make_small(struct bb *b)
{
    bb_init(b);
    bb_header(b, 3, 2, 2);
    bb_str(b, "general.architecture");
    bb_u32(b, HM_GGUF_STRING);
    bb_str(b, "x");
    bb_str(b, "k.strs");
    bb_u32(b, HM_GGUF_ARRAY);
    bb_u32(b, HM_GGUF_STRING);
    bb_u64(b, 2);
    bb_str(b, "ab");
    bb_str(b, "c");
    uint64_t ne[2] = {4, 2};
    bb_tensor(b, "t0", 2, ne, HM_DTYPE_F32, 0);
    bb_tensor(b, "t1", 1, ne, HM_DTYPE_F16, 32);
    bb_pad(b, 32);
    bb_zeros(b, 40);
}

START_TEST(test_truncated_everywhere)
{
    struct bb b;
    make_small(&b);
    struct hm_gguf *g;
    struct hm_errmsg em = {{0}};
    ck_assert_int_eq(hm_gguf_open_mem(b.b.data, b.b.len, "small", &g, &em), HM_OK);
    hm_gguf_free(g);
    for (size_t n = 0; n < b.b.len; n++) {
        /* a fresh copy of exactly n bytes so ASan catches any read past the end */
        uint8_t *p = malloc(n ? n : 1);
        memcpy(p, b.b.data, n);
        g = (void *)1;
        int rc = hm_gguf_open_mem(p, n, "small", &g, &em);
        if (rc != HM_EFORMAT)
            ck_abort_msg("truncated at %zu: rc %d '%s'", n, rc, em.text);
        ck_assert_ptr_null(g);
        ck_assert_ptr_nonnull(strstr(em.text, "small"));
        free(p);
    }
    /* on disk too (mmap path) for a few lengths */
    for (size_t n = 0; n < b.b.len; n += 37) {
        FILE *f = fopen(tmp_path("trunc.gguf"), "wb");
        fwrite(b.b.data, 1, n, f);
        fclose(f);
        ck_assert_int_eq(hm_gguf_open(tmp_path("trunc.gguf"), &g, &em), HM_EFORMAT);
    }
    hm_buf_release(&b.b);
}
END_TEST

START_TEST(test_bad_header)
{
    struct bb b;
    bb_init(&b);
    bb_u32(&b, 0x46554746u);
    bb_u32(&b, 3);
    bb_u64(&b, 0);
    bb_u64(&b, 0);
    expect(&b, HM_EFORMAT, "not a GGUF file");
    bb_init(&b);
    bb_header(&b, 1, 0, 0);
    expect(&b, HM_EUNSUPPORTED, "version 1");
    bb_init(&b);
    bb_header(&b, 4, 0, 0);
    expect(&b, HM_EUNSUPPORTED, "version 4");
    bb_init(&b);
    bb_header(&b, 2, 0, 0); /* v2 is fine */
    expect(&b, HM_OK, NULL);
    bb_init(&b);
    bb_header(&b, 3, 0, UINT64_MAX);
    expect(&b, HM_EFORMAT, "cannot fit");
    bb_init(&b);
    bb_header(&b, 3, 1ull << 60, 0);
    expect(&b, HM_EFORMAT, "cannot fit");
    bb_init(&b);
    bb_header(&b, 3, 0, 1);
    bb_u64(&b, 1ull << 62); /* key length */
    bb_zeros(&b, 16);
    expect(&b, HM_EFORMAT, "string length");
}
END_TEST

/* one key with raw value bytes */
static void one_kv(struct bb *b, const char *key, uint32_t type)
{
    bb_init(b);
    bb_header(b, 3, 0, 1);
    bb_str(b, key);
    bb_u32(b, type);
}

START_TEST(test_bad_values)
{
    struct bb b;
    one_kv(&b, "k", 13);
    bb_zeros(&b, 16);
    expect(&b, HM_EFORMAT, "unknown value type 13");
    one_kv(&b, "k", HM_GGUF_STRING);
    bb_u64(&b, 100);
    bb_zeros(&b, 10);
    expect(&b, HM_EFORMAT, "key 'k'");
    one_kv(&b, "k", HM_GGUF_ARRAY);
    bb_u32(&b, HM_GGUF_UINT32);
    bb_u64(&b, 1ull << 62);
    bb_zeros(&b, 16);
    expect(&b, HM_EFORMAT, "exceeds");
    one_kv(&b, "k", HM_GGUF_ARRAY);
    bb_u32(&b, HM_GGUF_STRING);
    bb_u64(&b, 1ull << 40); /* would be a huge allocation if trusted */
    bb_zeros(&b, 16);
    expect(&b, HM_EFORMAT, "exceeds");
    one_kv(&b, "k", HM_GGUF_ARRAY);
    bb_u32(&b, 77);
    bb_u64(&b, 1);
    bb_zeros(&b, 16);
    expect(&b, HM_EFORMAT, "element type 77");
    one_kv(&b, "k", HM_GGUF_BOOL);
    bb_zeros(&b, 0);
    hm_buf_append(&b.b, "\x02", 1);
    expect(&b, HM_EFORMAT, "bool");
    /* nesting: 9 levels deep */
    one_kv(&b, "k", HM_GGUF_ARRAY);
    for (int i = 0; i < 9; i++) {
        bb_u32(&b, HM_GGUF_ARRAY);
        bb_u64(&b, 1);
    }
    bb_u32(&b, HM_GGUF_UINT8);
    bb_u64(&b, 0);
    expect(&b, HM_EFORMAT, "nested deeper");
    /* 7 levels is fine */
    one_kv(&b, "k", HM_GGUF_ARRAY);
    for (int i = 0; i < 7; i++) {
        bb_u32(&b, HM_GGUF_ARRAY);
        bb_u64(&b, 1);
    }
    bb_u32(&b, HM_GGUF_UINT8);
    bb_u64(&b, 0);
    expect(&b, HM_OK, NULL);
    /* key with a NUL byte, empty key */
    bb_init(&b);
    bb_header(&b, 3, 0, 1);
    bb_u64(&b, 3);
    hm_buf_append(&b.b, "a\0b", 3);
    bb_u32(&b, HM_GGUF_UINT8);
    bb_zeros(&b, 1);
    expect(&b, HM_EFORMAT, "NUL");
    one_kv(&b, "", HM_GGUF_UINT8);
    bb_zeros(&b, 8);
    expect(&b, HM_EFORMAT, "name length 0");
    /* duplicate keys */
    bb_init(&b);
    bb_header(&b, 3, 0, 2);
    bb_str(&b, "dup");
    bb_u32(&b, HM_GGUF_UINT8);
    bb_zeros(&b, 1);
    bb_str(&b, "dup");
    bb_u32(&b, HM_GGUF_UINT8);
    bb_zeros(&b, 1);
    expect(&b, HM_EFORMAT, "duplicate key 'dup'");
    /* alignment: wrong type, not a power of two */
    one_kv(&b, "general.alignment", HM_GGUF_UINT64);
    bb_u64(&b, 32);
    expect(&b, HM_EFORMAT, "general.alignment");
    one_kv(&b, "general.alignment", HM_GGUF_UINT32);
    bb_u32(&b, 48);
    expect(&b, HM_EFORMAT, "power of two");
    one_kv(&b, "general.alignment", HM_GGUF_UINT32);
    bb_u32(&b, 0);
    expect(&b, HM_EFORMAT, "power of two");
}
END_TEST

START_TEST(test_bad_tensors)
{
    struct bb b;
    uint64_t ne[5] = {4, 2, 1, 1, 1};
#define ONE(nd, nev, type, off, data)                                                              \
    do {                                                                                           \
        bb_init(&b);                                                                               \
        bb_header(&b, 3, 1, 0);                                                                    \
        bb_tensor(&b, "w", nd, nev, type, off);                                                    \
        bb_pad(&b, 32);                                                                            \
        bb_zeros(&b, data);                                                                        \
    } while (0)
    ONE(2, ne, HM_DTYPE_F32, 0, 32);
    expect(&b, HM_OK, NULL);
    ONE(2, ne, HM_DTYPE_F32, 0, 31);
    expect(&b, HM_EFORMAT, "past the end");
    ONE(2, ne, HM_DTYPE_F32, 32, 32);
    expect(&b, HM_EFORMAT, "tensor 'w'");
    ONE(2, ne, HM_DTYPE_F32, 8, 64);
    expect(&b, HM_EFORMAT, "not a multiple of the alignment");
    ONE(2, ne, HM_DTYPE_F32, UINT64_MAX - 31, 64);
    expect(&b, HM_EFORMAT, "past the end");
    ONE(0, ne, HM_DTYPE_F32, 0, 32);
    expect(&b, HM_EFORMAT, "dimensions");
    ONE(5, ne, HM_DTYPE_F32, 0, 32);
    expect(&b, HM_EFORMAT, "dimensions");
    ONE(2, ne, 2 /* q4_0 */, 0, 32);
    expect(&b, HM_EFORMAT, "unsupported tensor type 2");
    ONE(2, ne, HM_DTYPE_Q8_0, 0, 32);
    expect(&b, HM_EFORMAT, "block");
    uint64_t zero[2] = {4, 0};
    ONE(2, zero, HM_DTYPE_F32, 0, 32);
    expect(&b, HM_EFORMAT, "dimension 1");
    uint64_t huge[3] = {1ull << 31, 1ull << 31, 1ull << 31};
    ONE(3, huge, HM_DTYPE_F32, 0, 32);
    expect(&b, HM_EFORMAT, "overflows");
    uint64_t big[2] = {1ull << 30, 1ull << 30}; /* valid product, data too big */
    ONE(2, big, HM_DTYPE_F32, 0, 32);
    expect(&b, HM_EFORMAT, "past the end");
    uint64_t big16[2] = {1ull << 31, 1ull << 30}; /* 2^61 elems: bytes overflow 2^64 */
    ONE(2, big16, HM_DTYPE_F32, 0, 32);
    expect(&b, HM_EFORMAT, "tensor 'w'");
#undef ONE
    /* overlapping and duplicate tensors */
    bb_init(&b);
    bb_header(&b, 3, 2, 0);
    bb_tensor(&b, "a", 2, ne, HM_DTYPE_F32, 0);
    bb_tensor(&b, "b", 1, ne, HM_DTYPE_F32, 0);
    bb_pad(&b, 32);
    bb_zeros(&b, 64);
    expect(&b, HM_EFORMAT, "overlaps");
    bb_init(&b);
    bb_header(&b, 3, 2, 0);
    bb_tensor(&b, "a", 2, ne, HM_DTYPE_F32, 0);
    bb_tensor(&b, "a", 1, ne, HM_DTYPE_F32, 32);
    bb_pad(&b, 32);
    bb_zeros(&b, 64);
    expect(&b, HM_EFORMAT, "duplicate tensor 'a'");
    /* custom alignment respected */
    bb_init(&b);
    bb_header(&b, 3, 2, 1);
    bb_str(&b, "general.alignment");
    bb_u32(&b, HM_GGUF_UINT32);
    bb_u32(&b, 64);
    bb_tensor(&b, "a", 1, ne, HM_DTYPE_F32, 0);
    bb_tensor(&b, "b", 1, ne, HM_DTYPE_F32, 32);
    bb_pad(&b, 64);
    bb_zeros(&b, 128);
    expect(&b, HM_EFORMAT, "alignment 64");
}
END_TEST

/* ---- oom ---- */

START_TEST(test_oom_open)
{
    struct bb b;
    make_small(&b);
    int n_fail = 0;
    for (long n = 1;; n++) {
        struct hm_gguf *g = (void *)1;
        struct hm_errmsg em = {{0}};
        hm_alloc_fail_after(n);
        int rc = hm_gguf_open_mem(b.b.data, b.b.len, "small", &g, &em);
        hm_alloc_fail_after(0);
        if (rc == HM_OK) {
            hm_gguf_free(g);
            break;
        }
        ck_assert_int_eq(rc, HM_ENOMEM);
        ck_assert_ptr_null(g);
        n_fail++;
        ck_assert_int_lt(n, 1000);
    }
    ck_assert_int_gt(n_fail, 5);
    hm_buf_release(&b.b);
}
END_TEST

START_TEST(test_oom_writer)
{
    char *path = tmp_path("oom.gguf");
    for (long n = 1;; n++) {
        struct hm_gguf_writer *w = NULL;
        struct hm_errmsg em = {{0}};
        const char *strs[] = {"a", "b"};
        float v[32] = {0};
        uint64_t ne[1] = {32};
        hm_alloc_fail_after(n);
        int rc = hm_gguf_writer_new(&w);
        if (rc == HM_OK)
            rc = hm_gguf_writer_add_str(w, "s", "x");
        if (rc == HM_OK)
            rc = hm_gguf_writer_add_arr_str(w, "a", strs, 2);
        if (rc == HM_OK)
            rc = hm_gguf_writer_add_tensor(w, "t", HM_DTYPE_F32, 1, ne, v);
        if (rc == HM_OK)
            rc = hm_gguf_writer_add_tensor(w, "u", HM_DTYPE_F32, 1, ne, NULL);
        if (rc == HM_OK)
            rc = hm_gguf_writer_write(w, path, fill, &(struct fill_state){0}, NULL, NULL, &em);
        hm_alloc_fail_after(0);
        hm_gguf_writer_free(w);
        if (rc == HM_OK)
            break;
        ck_assert_int_eq(rc, HM_ENOMEM);
        ck_assert_int_lt(n, 1000);
    }
}
END_TEST

static Suite *gguf_suite(void)
{
    Suite *s = suite_create("gguf");
    TCase *tc = tcase_create("core");
    tcase_add_checked_fixture(tc, tmp_setup, tmp_teardown);
    tcase_add_test(tc, test_f16);
    tcase_add_test(tc, test_q8_0);
    tcase_add_test(tc, test_roundtrip);
    tcase_add_test(tc, test_writer_fill);
    suite_add_tcase(s, tc);
    tc = tcase_create("errors");
    tcase_add_checked_fixture(tc, tmp_setup, tmp_teardown);
    tcase_add_test(tc, test_open_errors);
    tcase_add_test(tc, test_truncated_everywhere);
    tcase_add_test(tc, test_bad_header);
    tcase_add_test(tc, test_bad_values);
    tcase_add_test(tc, test_bad_tensors);
    suite_add_tcase(s, tc);
    tc = tcase_create("oom");
    tcase_add_checked_fixture(tc, tmp_setup, tmp_teardown);
    tcase_add_test(tc, test_oom_open);
    tcase_add_test(tc, test_oom_writer);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return hm_test_run(gguf_suite(), CK_NORMAL);
}
