/*
 * gguf.c - GGUF v2/v3 reader (validating, mmap'd) and streaming writer.
 *
 * DESIGN
 * The reader walks the header once with a bounded cursor. Every count and length read
 * from the file is checked against the bytes that are left before anything is
 * allocated or trusted, so a hostile file can at worst produce an error. The key and
 * tensor tables keep pointers into the mapping for scalar and array values, plus
 * NUL-terminated owned copies of keys, names and strings. Lookups use two sorted index
 * arrays (by key, by tensor name), which also find duplicates.
 *
 * The writer collects keys (as their raw value bytes) and tensor infos, then streams
 * the file: header, padding, tensor data (borrowed pointers, or produced one tensor at a
 * time by the fill callback), to path.tmp, then renames it.
 */
#include "hm/gguf.h"

#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hm/alloc.h"
#include "hm/buf.h"

#define GGUF_MAGIC 0x46554747u /* "GGUF" little-endian */
#define GGUF_DEFAULT_ALIGNMENT 32
#define GGUF_MAX_DEPTH 8       /* nesting depth of arrays */
#define GGUF_MAX_NAME 1024     /* longest key or tensor name */
#define GGUF_MAX_ALIGNMENT (1u << 20)

struct kv {
    char *key;                 /* owned, NUL-terminated */
    enum hm_gguf_type type;
    const uint8_t *val;        /* into the file: value bytes after the type field */
    size_t val_len;
    char *str;                 /* STRING: owned NUL-terminated copy */
    size_t str_len;
    enum hm_gguf_type elem_type; /* ARRAY */
    uint64_t n;                /* ARRAY: elements */
    const uint8_t *arr;        /* ARRAY: first element */
    char **strs;               /* ARRAY of STRING: owned copies (n) */
    size_t *str_lens;          /* ARRAY of STRING: lengths (n) */
};

struct hm_gguf {
    char *path;                /* owned; name used in messages */
    const uint8_t *base;
    size_t size;
    bool mapped;               /* munmap base on free */
    uint32_t version;
    uint32_t alignment;
    size_t n_kv;
    struct kv *kv;             /* n_kv, owned */
    size_t *kv_sorted;         /* n_kv indices sorted by key */
    size_t n_tensors;
    struct hm_tensor *tensors; /* n_tensors, names owned */
    size_t *t_sorted;          /* n_tensors indices sorted by name */
    uint64_t data_start;       /* file offset of the data section */
};

/* ---- element types --------------------------------------------------------------- */

static size_t scalar_size(enum hm_gguf_type t)
{
    switch (t) {
    case HM_GGUF_UINT8:
    case HM_GGUF_INT8:
    case HM_GGUF_BOOL:
        return 1;
    case HM_GGUF_UINT16:
    case HM_GGUF_INT16:
        return 2;
    case HM_GGUF_UINT32:
    case HM_GGUF_INT32:
    case HM_GGUF_FLOAT32:
        return 4;
    case HM_GGUF_UINT64:
    case HM_GGUF_INT64:
    case HM_GGUF_FLOAT64:
        return 8;
    default:
        return 0;
    }
}

static const char *type_name(enum hm_gguf_type t)
{
    static const char *const names[] = {"u8",  "i8",     "u16",    "i16", "u32",
                                        "i32", "f32",    "bool",   "str", "array",
                                        "u64", "i64",    "f64"};
    if ((unsigned)t < sizeof names / sizeof names[0])
        return names[t];
    return "?";
}

const char *hm_dtype_name(enum hm_dtype t)
{
    switch (t) {
    case HM_DTYPE_F32: return "f32";
    case HM_DTYPE_F16: return "f16";
    case HM_DTYPE_Q8_0: return "q8_0";
    case HM_DTYPE_BF16: return "bf16";
    }
    return "?";
}

int hm_dtype_from_name(const char *name, enum hm_dtype *out)
{
    static const enum hm_dtype all[] = {HM_DTYPE_F32, HM_DTYPE_F16, HM_DTYPE_Q8_0, HM_DTYPE_BF16};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        if (strcmp(name, hm_dtype_name(all[i])) == 0) {
            *out = all[i];
            return HM_OK;
        }
    }
    return HM_EINVAL;
}

static bool dtype_known(uint32_t t)
{
    return t == HM_DTYPE_F32 || t == HM_DTYPE_F16 || t == HM_DTYPE_Q8_0 || t == HM_DTYPE_BF16;
}

uint64_t hm_dtype_row_bytes(enum hm_dtype t, uint64_t n)
{
    switch (t) {
    case HM_DTYPE_F32:
        return n > UINT64_MAX / 4 ? 0 : n * 4;
    case HM_DTYPE_F16:
    case HM_DTYPE_BF16:
        return n > UINT64_MAX / 2 ? 0 : n * 2;
    case HM_DTYPE_Q8_0:
        if (n % HM_Q8_0_BLOCK)
            return 0;
        return n / HM_Q8_0_BLOCK * (2 + HM_Q8_0_BLOCK);
    }
    return 0;
}

/* ---- f16 / bf16 / q8_0 ----------------------------------------------------------- */

static uint32_t f2u(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float u2f(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

float hm_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t man = h & 0x3ff;
    if (exp == 0x1f) /* inf / nan */
        return u2f(sign | 0x7f800000u | (man << 13));
    if (exp == 0) {
        if (man == 0)
            return u2f(sign);
        /* subnormal: man * 2^-24 */
        float v = (float)man * 5.9604644775390625e-8f;
        return sign ? -v : v;
    }
    return u2f(sign | ((exp + 112) << 23) | (man << 13));
}

uint16_t hm_f32_to_f16(float f)
{
    uint32_t u = f2u(f);
    uint32_t sign = (u >> 16) & 0x8000;
    uint32_t exp = (u >> 23) & 0xff;
    uint32_t man = u & 0x7fffff;
    if (exp == 0xff) /* inf or nan (keep nan quiet) */
        return (uint16_t)(sign | 0x7c00 | (man ? 0x200 | (man >> 13) : 0));
    int32_t e = (int32_t)exp - 127 + 15;
    if (e >= 0x1f)
        return (uint16_t)(sign | 0x7c00);
    if (e <= 0) {
        /* subnormal or zero: shift the implicit-1 mantissa right, round to nearest even */
        if (e < -10)
            return (uint16_t)sign;
        man |= 0x800000;
        uint32_t shift = (uint32_t)(14 - e);
        uint32_t half = 1u << (shift - 1);
        uint32_t r = man >> shift;
        uint32_t rem = man & ((1u << shift) - 1);
        if (rem > half || (rem == half && (r & 1)))
            r++;
        return (uint16_t)(sign | r);
    }
    uint32_t r = ((uint32_t)e << 10) | (man >> 13);
    uint32_t rem = man & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (r & 1)))
        r++; /* may carry into the exponent, up to inf: correct */
    return (uint16_t)(sign | r);
}

float hm_bf16_to_f32(uint16_t h)
{
    return u2f((uint32_t)h << 16);
}

uint16_t hm_f32_to_bf16(float f)
{
    uint32_t u = f2u(f);
    if ((u & 0x7fffffff) > 0x7f800000) /* nan: keep quiet */
        return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fff + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}

void hm_dequantize_row(enum hm_dtype t, const void *src, float *dst, uint64_t n)
{
    const uint8_t *s = src;
    uint16_t h;
    switch (t) {
    case HM_DTYPE_F32:
        memcpy(dst, src, n * 4);
        return;
    case HM_DTYPE_F16:
        for (uint64_t i = 0; i < n; i++) {
            memcpy(&h, s + 2 * i, 2);
            dst[i] = hm_f16_to_f32(h);
        }
        return;
    case HM_DTYPE_BF16:
        for (uint64_t i = 0; i < n; i++) {
            memcpy(&h, s + 2 * i, 2);
            dst[i] = hm_bf16_to_f32(h);
        }
        return;
    case HM_DTYPE_Q8_0:
        for (uint64_t b = 0; b < n / HM_Q8_0_BLOCK; b++) {
            const uint8_t *blk = s + b * (2 + HM_Q8_0_BLOCK);
            memcpy(&h, blk, 2);
            float d = hm_f16_to_f32(h);
            for (int j = 0; j < HM_Q8_0_BLOCK; j++)
                dst[b * HM_Q8_0_BLOCK + j] = d * (float)(int8_t)blk[2 + j];
        }
        return;
    }
    HM_BUG("hm_dequantize_row: unknown type");
}

void hm_quantize_row(enum hm_dtype t, const float *src, void *dst, uint64_t n)
{
    uint8_t *o = dst;
    uint16_t h;
    switch (t) {
    case HM_DTYPE_F32:
        memcpy(dst, src, n * 4);
        return;
    case HM_DTYPE_F16:
        for (uint64_t i = 0; i < n; i++) {
            h = hm_f32_to_f16(src[i]);
            memcpy(o + 2 * i, &h, 2);
        }
        return;
    case HM_DTYPE_BF16:
        for (uint64_t i = 0; i < n; i++) {
            h = hm_f32_to_bf16(src[i]);
            memcpy(o + 2 * i, &h, 2);
        }
        return;
    case HM_DTYPE_Q8_0:
        for (uint64_t b = 0; b < n / HM_Q8_0_BLOCK; b++) {
            const float *x = src + b * HM_Q8_0_BLOCK;
            uint8_t *blk = o + b * (2 + HM_Q8_0_BLOCK);
            float amax = 0.0f;
            for (int j = 0; j < HM_Q8_0_BLOCK; j++)
                amax = fmaxf(amax, fabsf(x[j]));
            float d = amax / 127.0f;
            float id = d > 0.0f ? 1.0f / d : 0.0f;
            h = hm_f32_to_f16(d);
            memcpy(blk, &h, 2);
            for (int j = 0; j < HM_Q8_0_BLOCK; j++) {
                float q = roundf(x[j] * id);
                q = q > 127.0f ? 127.0f : (q < -127.0f ? -127.0f : q);
                blk[2 + j] = (uint8_t)(int8_t)q;
            }
        }
        return;
    }
    HM_BUG("hm_quantize_row: unknown type");
}

/* ---- reader ------------------------------------------------------------------------ */

struct cur {
    const uint8_t *base;
    size_t size;
    size_t off;
    const char *path;
    struct hm_errmsg *em;
};

static size_t cur_left(const struct cur *c)
{
    return c->size - c->off;
}

/* Reads n bytes; what names the field for the message. */
static int cur_read(struct cur *c, void *dst, size_t n, const char *what)
{
    if (cur_left(c) < n)
        return hm_errmsg_set(c->em, HM_EFORMAT,
                             "%s: %s at offset %zu: file truncated (%zu bytes left, need %zu)",
                             c->path, what, c->off, cur_left(c), n);
    memcpy(dst, c->base + c->off, n);
    c->off += n;
    return HM_OK;
}

static int cur_u32(struct cur *c, uint32_t *v, const char *what)
{
    return cur_read(c, v, 4, what);
}

static int cur_u64(struct cur *c, uint64_t *v, const char *what)
{
    return cur_read(c, v, 8, what);
}

/* A gguf_string: checks the length against the bytes left; returns a pointer into the
 * file and the length. */
static int cur_str(struct cur *c, const uint8_t **p, uint64_t *len, const char *what)
{
    int rc = cur_u64(c, len, what);
    if (rc < 0)
        return rc;
    if (*len > cur_left(c))
        return hm_errmsg_set(c->em, HM_EFORMAT,
                             "%s: %s at offset %zu: string length %llu exceeds the %zu bytes left",
                             c->path, what, c->off - 8, (unsigned long long)*len, cur_left(c));
    *p = c->base + c->off;
    c->off += (size_t)*len;
    return HM_OK;
}

/* Skips one value of type t (validating it, arrays recursively). */
static int skip_value(struct cur *c, uint32_t t, int depth, const char *what)
{
    size_t sz = scalar_size(t);
    if (sz) {
        if (cur_left(c) < sz)
            return hm_errmsg_set(c->em, HM_EFORMAT,
                                 "%s: %s at offset %zu: file truncated in a %s value", c->path,
                                 what, c->off, type_name(t));
        if (t == HM_GGUF_BOOL && c->base[c->off] > 1)
            return hm_errmsg_set(c->em, HM_EFORMAT, "%s: %s: bool value %u is not 0 or 1",
                                 c->path, what, c->base[c->off]);
        c->off += sz;
        return HM_OK;
    }
    if (t == HM_GGUF_STRING) {
        const uint8_t *p;
        uint64_t len = 0;
        return cur_str(c, &p, &len, what);
    }
    if (t != HM_GGUF_ARRAY)
        return hm_errmsg_set(c->em, HM_EFORMAT, "%s: %s: unknown value type %u", c->path, what,
                             t);
    if (depth >= GGUF_MAX_DEPTH)
        return hm_errmsg_set(c->em, HM_EFORMAT, "%s: %s: arrays nested deeper than %d",
                             c->path, what, GGUF_MAX_DEPTH);
    uint32_t et = 0;
    uint64_t n = 0;
    int rc = cur_u32(c, &et, what);
    if (rc == HM_OK)
        rc = cur_u64(c, &n, what);
    if (rc < 0)
        return rc;
    size_t esz = scalar_size(et);
    /* smallest encoding of one element: scalar size, 8 (string length), 12 (array) */
    size_t min = esz ? esz : et == HM_GGUF_STRING ? 8 : et == HM_GGUF_ARRAY ? 12 : 0;
    if (min == 0)
        return hm_errmsg_set(c->em, HM_EFORMAT, "%s: %s: unknown array element type %u",
                             c->path, what, et);
    if (n > cur_left(c) / min)
        return hm_errmsg_set(c->em, HM_EFORMAT,
                             "%s: %s: array of %llu %s elements exceeds the %zu bytes left",
                             c->path, what, (unsigned long long)n, type_name(et), cur_left(c));
    if (esz && et != HM_GGUF_BOOL) {
        c->off += (size_t)n * esz;
        return HM_OK;
    }
    for (uint64_t i = 0; i < n; i++) {
        rc = skip_value(c, et, depth + 1, what);
        if (rc < 0)
            return rc;
    }
    return HM_OK;
}

static int cmp_kv_idx(const void *a, const void *b, void *ctx)
{
    const struct kv *kv = ctx;
    return strcmp(kv[*(const size_t *)a].key, kv[*(const size_t *)b].key);
}

static int cmp_t_idx(const void *a, const void *b, void *ctx)
{
    const struct hm_tensor *t = ctx;
    return strcmp(t[*(const size_t *)a].name, t[*(const size_t *)b].name);
}

static int cmp_t_off(const void *a, const void *b, void *ctx)
{
    const struct hm_tensor *t = ctx;
    uint64_t x = t[*(const size_t *)a].offset, y = t[*(const size_t *)b].offset;
    return x < y ? -1 : x > y;
}

/* Copies a name out of the file: no NUL bytes, not empty, bounded. */
static int copy_name(struct cur *c, const uint8_t *p, uint64_t len, const char *what,
                     uint64_t idx, char **out)
{
    *out = NULL;
    if (len == 0 || len > GGUF_MAX_NAME)
        return hm_errmsg_set(c->em, HM_EFORMAT, "%s: %s #%llu: name length %llu (must be 1..%d)",
                             c->path, what, (unsigned long long)idx, (unsigned long long)len,
                             GGUF_MAX_NAME);
    if (memchr(p, 0, (size_t)len))
        return hm_errmsg_set(c->em, HM_EFORMAT, "%s: %s #%llu: name contains a NUL byte",
                             c->path, what, (unsigned long long)idx);
    *out = hm_strndup((const char *)p, (size_t)len);
    return *out ? HM_OK : HM_ENOMEM;
}

static int parse_kv(struct hm_gguf *g, struct cur *c, uint64_t i)
{
    struct kv *kv = &g->kv[i];
    const uint8_t *p;
    uint64_t len = 0;
    char what[GGUF_MAX_NAME + 32];
    int rc;

    snprintf(what, sizeof what, "key #%llu", (unsigned long long)i);
    rc = cur_str(c, &p, &len, what);
    if (rc < 0)
        return rc;
    rc = copy_name(c, p, len, "key", i, &kv->key);
    if (rc < 0)
        return rc;
    snprintf(what, sizeof what, "key '%s'", kv->key);
    uint32_t t = 0;
    rc = cur_u32(c, &t, what);
    if (rc < 0)
        return rc;
    if (t > HM_GGUF_FLOAT64)
        return hm_errmsg_set(c->em, HM_EFORMAT, "%s: %s: unknown value type %u", c->path, what,
                             t);
    kv->type = t;
    kv->val = c->base + c->off;
    size_t start = c->off;
    rc = skip_value(c, t, 0, what);
    if (rc < 0)
        return rc;
    kv->val_len = c->off - start;
    if (t == HM_GGUF_STRING) {
        memcpy(&len, kv->val, 8);
        kv->str = hm_memdup_z(kv->val + 8, (size_t)len);
        if (!kv->str)
            return HM_ENOMEM;
        kv->str_len = (size_t)len;
    } else if (t == HM_GGUF_ARRAY) {
        uint32_t et;
        memcpy(&et, kv->val, 4);
        memcpy(&kv->n, kv->val + 4, 8);
        kv->elem_type = et;
        kv->arr = kv->val + 12;
        if (et == HM_GGUF_STRING) {
            /* n <= bytes left / 8 was checked, so these allocations are bounded */
            kv->strs = hm_calloc(kv->n ? (size_t)kv->n : 1, sizeof *kv->strs);
            kv->str_lens = hm_calloc(kv->n ? (size_t)kv->n : 1, sizeof *kv->str_lens);
            if (!kv->strs || !kv->str_lens)
                return HM_ENOMEM;
            const uint8_t *q = kv->arr;
            for (uint64_t j = 0; j < kv->n; j++) {
                memcpy(&len, q, 8);
                kv->strs[j] = hm_memdup_z(q + 8, (size_t)len);
                if (!kv->strs[j])
                    return HM_ENOMEM;
                kv->str_lens[j] = (size_t)len;
                q += 8 + len;
            }
        }
    }
    return HM_OK;
}

static int parse_tensor(struct hm_gguf *g, struct cur *c, uint64_t i)
{
    struct hm_tensor *t = &g->tensors[i];
    const uint8_t *p;
    uint64_t len = 0;
    char what[GGUF_MAX_NAME + 32];
    char *name;
    int rc;

    snprintf(what, sizeof what, "tensor #%llu", (unsigned long long)i);
    rc = cur_str(c, &p, &len, what);
    if (rc < 0)
        return rc;
    rc = copy_name(c, p, len, "tensor", i, &name);
    if (rc < 0)
        return rc;
    t->name = name;
    snprintf(what, sizeof what, "tensor '%s'", name);
    uint32_t n_dims = 0, type = 0;
    rc = cur_u32(c, &n_dims, what);
    if (rc < 0)
        return rc;
    if (n_dims < 1 || n_dims > HM_GGUF_MAX_DIMS)
        return hm_errmsg_set(c->em, HM_EFORMAT, "%s: %s: %u dimensions (must be 1..%d)", c->path,
                             what, n_dims, HM_GGUF_MAX_DIMS);
    t->n_dims = n_dims;
    uint64_t n_elems = 1;
    for (uint32_t d = 0; d < HM_GGUF_MAX_DIMS; d++) {
        uint64_t ne = 1;
        if (d < n_dims) {
            rc = cur_u64(c, &ne, what);
            if (rc < 0)
                return rc;
        }
        if (ne == 0 || ne > (UINT64_MAX >> 2) / n_elems)
            return hm_errmsg_set(c->em, HM_EFORMAT,
                                 "%s: %s: dimension %u is %llu (zero or the element count "
                                 "overflows)",
                                 c->path, what, d, (unsigned long long)ne);
        t->ne[d] = ne;
        n_elems *= ne;
    }
    t->n_elems = n_elems;
    rc = cur_u32(c, &type, what);
    if (rc == HM_OK)
        rc = cur_u64(c, &t->offset, what);
    if (rc < 0)
        return rc;
    if (!dtype_known(type))
        return hm_errmsg_set(c->em, HM_EFORMAT, "%s: %s: unsupported tensor type %u", c->path,
                             what, type);
    t->type = type;
    uint64_t rb = hm_dtype_row_bytes(t->type, t->ne[0]);
    if (rb == 0)
        return hm_errmsg_set(c->em, HM_EFORMAT,
                             "%s: %s: row of %llu elements is not a multiple of the %s block",
                             c->path, what, (unsigned long long)t->ne[0], hm_dtype_name(t->type));
    uint64_t n_rows = n_elems / t->ne[0];
    if (rb > UINT64_MAX / n_rows)
        return hm_errmsg_set(c->em, HM_EFORMAT, "%s: %s: size overflows", c->path, what);
    t->n_bytes = rb * n_rows;
    return HM_OK;
}

static int check_tensors(struct hm_gguf *g, struct hm_errmsg *em)
{
    /* data section bounds and alignment */
    uint64_t avail = g->size >= g->data_start ? g->size - g->data_start : 0;
    for (size_t i = 0; i < g->n_tensors; i++) {
        struct hm_tensor *t = &g->tensors[i];
        if (t->offset % g->alignment)
            return hm_errmsg_set(em, HM_EFORMAT,
                                 "%s: tensor '%s': offset %llu is not a multiple of the "
                                 "alignment %u",
                                 g->path, t->name, (unsigned long long)t->offset, g->alignment);
        if (t->offset > avail || t->n_bytes > avail - t->offset)
            return hm_errmsg_set(em, HM_EFORMAT,
                                 "%s: tensor '%s': data [%llu, +%llu) extends past the end of the "
                                 "file (data section holds %llu bytes)",
                                 g->path, t->name, (unsigned long long)t->offset,
                                 (unsigned long long)t->n_bytes, (unsigned long long)avail);
        t->data = g->base + g->data_start + t->offset;
    }
    if (g->n_tensors < 2)
        return HM_OK;
    size_t *idx = hm_mallocarray(g->n_tensors, sizeof *idx);
    if (!idx)
        return HM_ENOMEM;
    for (size_t i = 0; i < g->n_tensors; i++)
        idx[i] = i;
    qsort_r(idx, g->n_tensors, sizeof *idx, cmp_t_off, g->tensors);
    int rc = HM_OK;
    for (size_t i = 0; i + 1 < g->n_tensors; i++) {
        const struct hm_tensor *a = &g->tensors[idx[i]], *b = &g->tensors[idx[i + 1]];
        if (a->offset + a->n_bytes > b->offset) {
            rc = hm_errmsg_set(em, HM_EFORMAT, "%s: tensor '%s': data overlaps tensor '%s'",
                               g->path, b->name, a->name);
            break;
        }
    }
    hm_free(idx);
    return rc;
}

static int parse(struct hm_gguf *g, struct hm_errmsg *em)
{
    struct cur c = {g->base, g->size, 0, g->path, em};
    uint32_t magic = 0;
    uint64_t n_tensors = 0, n_kv = 0;
    int rc;

    if ((rc = cur_u32(&c, &magic, "magic")) < 0)
        return rc;
    if (magic != GGUF_MAGIC)
        return hm_errmsg_set(em, HM_EFORMAT, "%s: not a GGUF file (magic 0x%08x)", g->path,
                             magic);
    if ((rc = cur_u32(&c, &g->version, "version")) < 0)
        return rc;
    if (g->version != 2 && g->version != 3)
        return hm_errmsg_set(em, HM_EUNSUPPORTED,
                             "%s: GGUF version %u is not supported (only 2 and 3)", g->path,
                             g->version);
    if ((rc = cur_u64(&c, &n_tensors, "tensor count")) < 0 ||
        (rc = cur_u64(&c, &n_kv, "key count")) < 0)
        return rc;
    /* a key takes at least 8 + 1 + 4 + 1 bytes, a tensor info 8 + 1 + 4 + 8 + 4 + 8 */
    if (n_kv > cur_left(&c) / 14 || n_tensors > cur_left(&c) / 33 ||
        n_kv * 14 + n_tensors * 33 > cur_left(&c))
        return hm_errmsg_set(em, HM_EFORMAT,
                             "%s: header: %llu keys and %llu tensors cannot fit in the %zu bytes "
                             "left",
                             g->path, (unsigned long long)n_kv, (unsigned long long)n_tensors,
                             cur_left(&c));
    g->kv = hm_calloc(n_kv ? (size_t)n_kv : 1, sizeof *g->kv);
    g->tensors = hm_calloc(n_tensors ? (size_t)n_tensors : 1, sizeof *g->tensors);
    g->kv_sorted = hm_calloc(n_kv ? (size_t)n_kv : 1, sizeof *g->kv_sorted);
    g->t_sorted = hm_calloc(n_tensors ? (size_t)n_tensors : 1, sizeof *g->t_sorted);
    if (!g->kv || !g->tensors || !g->kv_sorted || !g->t_sorted)
        return HM_ENOMEM;
    for (uint64_t i = 0; i < n_kv; i++) {
        g->n_kv = (size_t)i + 1; /* so that free sees partly filled entries */
        if ((rc = parse_kv(g, &c, i)) < 0)
            return rc;
    }
    for (size_t i = 0; i < g->n_kv; i++)
        g->kv_sorted[i] = i;
    qsort_r(g->kv_sorted, g->n_kv, sizeof(size_t), cmp_kv_idx, g->kv);
    for (size_t i = 0; i + 1 < g->n_kv; i++)
        if (strcmp(g->kv[g->kv_sorted[i]].key, g->kv[g->kv_sorted[i + 1]].key) == 0)
            return hm_errmsg_set(em, HM_EFORMAT, "%s: duplicate key '%s'", g->path,
                                 g->kv[g->kv_sorted[i]].key);

    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    long ai = hm_gguf_find_key(g, "general.alignment");
    if (ai >= 0) {
        uint32_t a;
        if (g->kv[ai].type != HM_GGUF_UINT32)
            return hm_errmsg_set(em, HM_EFORMAT, "%s: key 'general.alignment': type %s, "
                                 "expected u32", g->path, type_name(g->kv[ai].type));
        memcpy(&a, g->kv[ai].val, 4);
        if (a == 0 || (a & (a - 1)) || a > GGUF_MAX_ALIGNMENT)
            return hm_errmsg_set(em, HM_EFORMAT,
                                 "%s: key 'general.alignment': %u is not a power of two "
                                 "in 1..%u",
                                 g->path, a, GGUF_MAX_ALIGNMENT);
        g->alignment = a;
    }

    for (uint64_t i = 0; i < n_tensors; i++) {
        g->n_tensors = (size_t)i + 1;
        if ((rc = parse_tensor(g, &c, i)) < 0)
            return rc;
    }
    for (size_t i = 0; i < g->n_tensors; i++)
        g->t_sorted[i] = i;
    qsort_r(g->t_sorted, g->n_tensors, sizeof(size_t), cmp_t_idx, g->tensors);
    for (size_t i = 0; i + 1 < g->n_tensors; i++)
        if (strcmp(g->tensors[g->t_sorted[i]].name, g->tensors[g->t_sorted[i + 1]].name) == 0)
            return hm_errmsg_set(em, HM_EFORMAT, "%s: duplicate tensor '%s'", g->path,
                                 g->tensors[g->t_sorted[i]].name);

    g->data_start = (c.off + g->alignment - 1) / g->alignment * g->alignment;
    if (g->n_tensors > 0 && g->data_start > g->size)
        return hm_errmsg_set(em, HM_EFORMAT,
                             "%s: data section: file truncated (padding to offset %llu, file "
                             "has %zu bytes)",
                             g->path, (unsigned long long)g->data_start, g->size);
    return check_tensors(g, em);
}

static int open_common(struct hm_gguf *g, struct hm_gguf **out, struct hm_errmsg *em)
{
    int rc = parse(g, em);
    if (rc < 0) {
        if (rc == HM_ENOMEM)
            hm_errmsg_set(em, HM_ENOMEM, "%s: out of memory reading the header",
                          g->path ? g->path : "gguf");
        hm_gguf_free(g);
        return rc;
    }
    *out = g;
    return HM_OK;
}

int hm_gguf_open_mem(const void *data, size_t size, const char *name, struct hm_gguf **out,
                     struct hm_errmsg *em)
{
    *out = NULL;
    struct hm_gguf *g = hm_calloc(1, sizeof *g);
    if (!g)
        return hm_errmsg_set(em, HM_ENOMEM, "%s: out of memory", name ? name : "gguf");
    g->path = hm_strdup(name ? name : "<memory>");
    if (!g->path) {
        hm_free(g);
        return hm_errmsg_set(em, HM_ENOMEM, "%s: out of memory", name ? name : "gguf");
    }
    g->base = data;
    g->size = size;
    return open_common(g, out, em);
}

int hm_gguf_open(const char *path, struct hm_gguf **out, struct hm_errmsg *em)
{
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return hm_errmsg_set(em, errno == ENOENT ? HM_ENOENT : HM_EIO, "cannot open '%s': %s",
                             path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return hm_errmsg_set(em, HM_EIO, "cannot open '%s': not a regular file", path);
    }
    if ((uint64_t)st.st_size > SIZE_MAX) {
        close(fd);
        return hm_errmsg_set(em, HM_ETOOBIG, "%s: file too big", path);
    }
    size_t size = (size_t)st.st_size;
    if (size < 24) {
        close(fd);
        return hm_errmsg_set(em, HM_EFORMAT, "%s: header: file truncated (%zu bytes)", path,
                             size);
    }
    void *map = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
    int err = errno;
    close(fd);
    if (map == MAP_FAILED)
        return hm_errmsg_set(em, HM_EIO, "cannot map '%s': %s", path, strerror(err));
    struct hm_gguf *g = hm_calloc(1, sizeof *g);
    if (g)
        g->path = hm_strdup(path);
    if (!g || !g->path) {
        hm_free(g);
        munmap(map, size);
        return hm_errmsg_set(em, HM_ENOMEM, "%s: out of memory", path);
    }
    g->base = map;
    g->size = size;
    g->mapped = true;
    return open_common(g, out, em);
}

void hm_gguf_free(struct hm_gguf *g)
{
    if (!g)
        return;
    for (size_t i = 0; i < g->n_kv; i++) {
        struct kv *kv = &g->kv[i];
        hm_free(kv->key);
        hm_free(kv->str);
        if (kv->strs)
            for (uint64_t j = 0; j < kv->n; j++)
                hm_free(kv->strs[j]);
        hm_free(kv->strs);
        hm_free(kv->str_lens);
    }
    for (size_t i = 0; i < g->n_tensors; i++)
        hm_free((char *)g->tensors[i].name);
    hm_free(g->kv);
    hm_free(g->kv_sorted);
    hm_free(g->tensors);
    hm_free(g->t_sorted);
    if (g->mapped)
        munmap((void *)g->base, g->size);
    hm_free(g->path);
    hm_free(g);
}

const char *hm_gguf_path(const struct hm_gguf *g)
{
    return g->path;
}

uint32_t hm_gguf_version(const struct hm_gguf *g)
{
    return g->version;
}

uint32_t hm_gguf_alignment(const struct hm_gguf *g)
{
    return g->alignment;
}

size_t hm_gguf_n_kv(const struct hm_gguf *g)
{
    return g->n_kv;
}

const char *hm_gguf_key(const struct hm_gguf *g, size_t i)
{
    return i < g->n_kv ? g->kv[i].key : NULL;
}

enum hm_gguf_type hm_gguf_kv_type(const struct hm_gguf *g, size_t i)
{
    if (i >= g->n_kv)
        HM_BUG("hm_gguf_kv_type: index out of range");
    return g->kv[i].type;
}

long hm_gguf_find_key(const struct hm_gguf *g, const char *key)
{
    size_t lo = 0, hi = g->n_kv;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(g->kv[g->kv_sorted[mid]].key, key);
        if (c == 0)
            return (long)g->kv_sorted[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -1;
}

/* Integer value of a scalar (signed or unsigned); false if not an integer type. */
static bool kv_int(const struct kv *kv, bool *neg, uint64_t *mag)
{
    const uint8_t *p = kv->val;
    uint8_t u8;
    uint16_t u16;
    uint32_t u32;
    uint64_t u64;
    int64_t s = 0;
    bool is_signed = false;
    switch (kv->type) {
    case HM_GGUF_UINT8: memcpy(&u8, p, 1); u64 = u8; break;
    case HM_GGUF_UINT16: memcpy(&u16, p, 2); u64 = u16; break;
    case HM_GGUF_UINT32: memcpy(&u32, p, 4); u64 = u32; break;
    case HM_GGUF_UINT64: memcpy(&u64, p, 8); break;
    case HM_GGUF_INT8: memcpy(&u8, p, 1); s = (int8_t)u8; is_signed = true; break;
    case HM_GGUF_INT16: memcpy(&u16, p, 2); s = (int16_t)u16; is_signed = true; break;
    case HM_GGUF_INT32: memcpy(&u32, p, 4); s = (int32_t)u32; is_signed = true; break;
    case HM_GGUF_INT64: memcpy(&u64, p, 8); s = (int64_t)u64; is_signed = true; break;
    default: return false;
    }
    if (is_signed) {
        *neg = s < 0;
        *mag = s < 0 ? (uint64_t)0 - (uint64_t)s : (uint64_t)s;
    } else {
        *neg = false;
        *mag = u64;
    }
    return true;
}

static int get_kv(const struct hm_gguf *g, const char *key, const struct kv **kv)
{
    long i = hm_gguf_find_key(g, key);
    if (i < 0)
        return HM_ENOENT;
    *kv = &g->kv[i];
    return HM_OK;
}

/* The integer value of key as sign and magnitude: HM_ENOENT, HM_EFORMAT (not an integer). */
static int get_int(const struct hm_gguf *g, const char *key, bool *neg, uint64_t *mag)
{
    const struct kv *kv;
    if (get_kv(g, key, &kv) < 0)
        return HM_ENOENT;
    if (!kv_int(kv, neg, mag))
        return HM_EFORMAT;
    return HM_OK;
}

int hm_gguf_get_u64(const struct hm_gguf *g, const char *key, uint64_t *out)
{
    bool neg;
    uint64_t mag;
    int rc = get_int(g, key, &neg, &mag);
    if (rc < 0)
        return rc;
    if (neg)
        return HM_EFORMAT;
    *out = mag;
    return HM_OK;
}

int hm_gguf_get_u32(const struct hm_gguf *g, const char *key, uint32_t *out)
{
    uint64_t v;
    int rc = hm_gguf_get_u64(g, key, &v);
    if (rc < 0)
        return rc;
    if (v > UINT32_MAX)
        return HM_EFORMAT;
    *out = (uint32_t)v;
    return HM_OK;
}

int hm_gguf_get_i64(const struct hm_gguf *g, const char *key, int64_t *out)
{
    bool neg;
    uint64_t mag;
    int rc = get_int(g, key, &neg, &mag);
    if (rc < 0)
        return rc;
    if (neg) {
        if (mag > (uint64_t)INT64_MAX + 1)
            return HM_EFORMAT;
        *out = mag == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)mag;
    } else {
        if (mag > INT64_MAX)
            return HM_EFORMAT;
        *out = (int64_t)mag;
    }
    return HM_OK;
}

int hm_gguf_get_f32(const struct hm_gguf *g, const char *key, float *out)
{
    const struct kv *kv;
    if (get_kv(g, key, &kv) < 0)
        return HM_ENOENT;
    if (kv->type == HM_GGUF_FLOAT32) {
        memcpy(out, kv->val, 4);
    } else if (kv->type == HM_GGUF_FLOAT64) {
        double d;
        memcpy(&d, kv->val, 8);
        *out = (float)d;
    } else {
        return HM_EFORMAT;
    }
    return HM_OK;
}

int hm_gguf_get_bool(const struct hm_gguf *g, const char *key, bool *out)
{
    const struct kv *kv;
    if (get_kv(g, key, &kv) < 0)
        return HM_ENOENT;
    if (kv->type != HM_GGUF_BOOL)
        return HM_EFORMAT;
    *out = kv->val[0] != 0;
    return HM_OK;
}

int hm_gguf_get_str(const struct hm_gguf *g, const char *key, const char **out, size_t *len)
{
    const struct kv *kv;
    if (get_kv(g, key, &kv) < 0)
        return HM_ENOENT;
    if (kv->type != HM_GGUF_STRING)
        return HM_EFORMAT;
    *out = kv->str;
    if (len)
        *len = kv->str_len;
    return HM_OK;
}

int hm_gguf_get_arr(const struct hm_gguf *g, const char *key, enum hm_gguf_type *elem_type,
                    uint64_t *n, const void **data)
{
    const struct kv *kv;
    if (get_kv(g, key, &kv) < 0)
        return HM_ENOENT;
    if (kv->type != HM_GGUF_ARRAY || scalar_size(kv->elem_type) == 0)
        return HM_EFORMAT;
    if (elem_type)
        *elem_type = kv->elem_type;
    *n = kv->n;
    *data = kv->arr;
    return HM_OK;
}

int hm_gguf_get_arr_n(const struct hm_gguf *g, const char *key, enum hm_gguf_type *elem_type,
                      uint64_t *n)
{
    const struct kv *kv;
    if (get_kv(g, key, &kv) < 0)
        return HM_ENOENT;
    if (kv->type != HM_GGUF_ARRAY)
        return HM_EFORMAT;
    if (elem_type)
        *elem_type = kv->elem_type;
    *n = kv->n;
    return HM_OK;
}

int hm_gguf_get_arr_str(const struct hm_gguf *g, const char *key, uint64_t i, const char **out,
                        size_t *len)
{
    const struct kv *kv;
    if (get_kv(g, key, &kv) < 0)
        return HM_ENOENT;
    if (kv->type != HM_GGUF_ARRAY || kv->elem_type != HM_GGUF_STRING)
        return HM_EFORMAT;
    if (i >= kv->n)
        return HM_ERANGE;
    *out = kv->strs[i];
    if (len)
        *len = kv->str_lens[i];
    return HM_OK;
}

/* ---- formatting -------------------------------------------------------------------- */

struct fmt {
    char *buf;
    size_t cap, len; /* len may exceed cap: what would have been written */
};

static void fmt_put(struct fmt *f, const char *s, size_t n)
{
    if (f->cap > 0 && f->len < f->cap - 1) {
        size_t room = f->cap - 1 - f->len;
        memcpy(f->buf + f->len, s, n < room ? n : room);
    }
    f->len += n;
}

static void fmt_printf(struct fmt *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fmt_printf(struct fmt *f, const char *fmt, ...)
{
    char tmp[64];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0)
        fmt_put(f, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

static void fmt_string(struct fmt *f, const uint8_t *s, size_t n)
{
    size_t shown = n > 80 ? 80 : n;
    fmt_put(f, "\"", 1);
    for (size_t i = 0; i < shown; i++) {
        uint8_t ch = s[i];
        if (ch == '"' || ch == '\\') {
            char e[2] = {'\\', (char)ch};
            fmt_put(f, e, 2);
        } else if (ch < 0x20 || ch == 0x7f) {
            fmt_printf(f, "\\x%02x", ch);
        } else {
            fmt_put(f, (const char *)&ch, 1);
        }
    }
    fmt_put(f, "\"", 1);
    if (shown < n)
        fmt_printf(f, "...(%zu bytes)", n);
}

/* Formats the value at *p (already validated) and advances *p. */
static void fmt_value(struct fmt *f, enum hm_gguf_type t, const uint8_t **p, size_t max_elems)
{
    const uint8_t *q = *p;
    union {
        uint8_t u8; uint16_t u16; uint32_t u32; uint64_t u64; float f; double d;
    } v;
    size_t sz = scalar_size(t);
    if (sz)
        memcpy(&v, q, sz);
    switch (t) {
    case HM_GGUF_UINT8: fmt_printf(f, "%u", v.u8); break;
    case HM_GGUF_INT8: fmt_printf(f, "%d", (int8_t)v.u8); break;
    case HM_GGUF_UINT16: fmt_printf(f, "%u", v.u16); break;
    case HM_GGUF_INT16: fmt_printf(f, "%d", (int16_t)v.u16); break;
    case HM_GGUF_UINT32: fmt_printf(f, "%u", v.u32); break;
    case HM_GGUF_INT32: fmt_printf(f, "%d", (int32_t)v.u32); break;
    case HM_GGUF_UINT64: fmt_printf(f, "%llu", (unsigned long long)v.u64); break;
    case HM_GGUF_INT64: fmt_printf(f, "%lld", (long long)(int64_t)v.u64); break;
    case HM_GGUF_FLOAT32: fmt_printf(f, "%g", (double)v.f); break;
    case HM_GGUF_FLOAT64: fmt_printf(f, "%g", v.d); break;
    case HM_GGUF_BOOL: fmt_printf(f, "%s", v.u8 ? "true" : "false"); break;
    case HM_GGUF_STRING: {
        uint64_t len;
        memcpy(&len, q, 8);
        fmt_string(f, q + 8, (size_t)len);
        *p = q + 8 + len;
        return;
    }
    case HM_GGUF_ARRAY: {
        uint32_t et;
        uint64_t n;
        memcpy(&et, q, 4);
        memcpy(&n, q + 4, 8);
        q += 12;
        fmt_put(f, "[", 1);
        for (uint64_t i = 0; i < n; i++) {
            if (i == max_elems) {
                fmt_printf(f, ", ... (%llu elements)", (unsigned long long)n);
                /* skip the rest */
                size_t esz = scalar_size(et);
                if (esz) {
                    q += (n - i) * esz;
                } else {
                    struct fmt null = {NULL, 0, 0};
                    for (; i < n; i++)
                        fmt_value(&null, et, &q, 0);
                }
                break;
            }
            if (i)
                fmt_put(f, ", ", 2);
            fmt_value(f, et, &q, max_elems);
        }
        fmt_put(f, "]", 1);
        *p = q;
        return;
    }
    }
    *p = q + sz;
}

size_t hm_gguf_format_value(const struct hm_gguf *g, size_t i, size_t max_elems, char *buf,
                            size_t buflen)
{
    struct fmt f = {buf, buflen, 0};
    if (i >= g->n_kv) {
        if (buflen)
            buf[0] = 0;
        return 0;
    }
    const uint8_t *p = g->kv[i].val;
    fmt_value(&f, g->kv[i].type, &p, max_elems);
    if (buflen == 0)
        return 0;
    size_t n = f.len < buflen - 1 ? f.len : buflen - 1;
    buf[n] = 0;
    return n;
}

size_t hm_gguf_n_tensors(const struct hm_gguf *g)
{
    return g->n_tensors;
}

const struct hm_tensor *hm_gguf_tensor(const struct hm_gguf *g, size_t i)
{
    return i < g->n_tensors ? &g->tensors[i] : NULL;
}

const struct hm_tensor *hm_gguf_find_tensor(const struct hm_gguf *g, const char *name)
{
    size_t lo = 0, hi = g->n_tensors;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(g->tensors[g->t_sorted[mid]].name, name);
        if (c == 0)
            return &g->tensors[g->t_sorted[mid]];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/* ---- writer ------------------------------------------------------------------------ */

struct wkv {
    char *key;
    enum hm_gguf_type type;
    uint8_t *bytes;  /* owned value bytes */
    size_t n;
};

struct wtensor {
    char *name;
    enum hm_dtype type;
    uint32_t n_dims;
    uint64_t ne[HM_GGUF_MAX_DIMS];
    uint64_t n_bytes;
    uint64_t offset;
    const void *data; /* borrowed, or NULL = fill */
};

struct hm_gguf_writer {
    struct wkv *kv;
    size_t n_kv, cap_kv;
    struct wtensor *t;
    size_t n_t, cap_t;
    uint32_t alignment;
};

int hm_gguf_writer_new(struct hm_gguf_writer **out)
{
    *out = hm_calloc(1, sizeof **out);
    if (!*out)
        return HM_ENOMEM;
    (*out)->alignment = GGUF_DEFAULT_ALIGNMENT;
    return HM_OK;
}

void hm_gguf_writer_free(struct hm_gguf_writer *w)
{
    if (!w)
        return;
    for (size_t i = 0; i < w->n_kv; i++) {
        hm_free(w->kv[i].key);
        hm_free(w->kv[i].bytes);
    }
    for (size_t i = 0; i < w->n_t; i++)
        hm_free(w->t[i].name);
    hm_free(w->kv);
    hm_free(w->t);
    hm_free(w);
}

static int grow(void **arr, size_t *cap, size_t n, size_t elem)
{
    if (n < *cap)
        return HM_OK;
    size_t nc = *cap ? *cap * 2 : 16;
    void *p = hm_realloc(*arr, nc * elem);
    if (!p)
        return HM_ENOMEM;
    *arr = p;
    *cap = nc;
    return HM_OK;
}

int hm_gguf_writer_add_raw(struct hm_gguf_writer *w, const char *key, enum hm_gguf_type t,
                           const void *bytes, size_t n)
{
    if (!key || !*key || strlen(key) > GGUF_MAX_NAME || (unsigned)t > HM_GGUF_FLOAT64)
        return HM_EINVAL;
    for (size_t i = 0; i < w->n_kv; i++)
        if (strcmp(w->kv[i].key, key) == 0)
            return HM_EINVAL;
    if (strcmp(key, "general.alignment") == 0) {
        uint32_t a;
        if (t != HM_GGUF_UINT32 || n != 4)
            return HM_EINVAL;
        memcpy(&a, bytes, 4);
        if (a == 0 || (a & (a - 1)) || a > GGUF_MAX_ALIGNMENT)
            return HM_EINVAL;
        w->alignment = a;
    }
    if (grow((void **)&w->kv, &w->cap_kv, w->n_kv, sizeof *w->kv) < 0)
        return HM_ENOMEM;
    struct wkv *kv = &w->kv[w->n_kv];
    kv->key = hm_strdup(key);
    kv->bytes = hm_malloc(n);
    if (!kv->key || !kv->bytes) {
        hm_free(kv->key);
        hm_free(kv->bytes);
        return HM_ENOMEM;
    }
    memcpy(kv->bytes, bytes, n);
    kv->type = t;
    kv->n = n;
    w->n_kv++;
    return HM_OK;
}

int hm_gguf_writer_add_scalar(struct hm_gguf_writer *w, const char *key, enum hm_gguf_type t,
                              const void *v)
{
    size_t sz = scalar_size(t);
    if (!sz)
        return HM_EINVAL;
    return hm_gguf_writer_add_raw(w, key, t, v, sz);
}

int hm_gguf_writer_add_u32(struct hm_gguf_writer *w, const char *key, uint32_t v)
{
    return hm_gguf_writer_add_scalar(w, key, HM_GGUF_UINT32, &v);
}

int hm_gguf_writer_add_i32(struct hm_gguf_writer *w, const char *key, int32_t v)
{
    return hm_gguf_writer_add_scalar(w, key, HM_GGUF_INT32, &v);
}

int hm_gguf_writer_add_u64(struct hm_gguf_writer *w, const char *key, uint64_t v)
{
    return hm_gguf_writer_add_scalar(w, key, HM_GGUF_UINT64, &v);
}

int hm_gguf_writer_add_f32(struct hm_gguf_writer *w, const char *key, float v)
{
    return hm_gguf_writer_add_scalar(w, key, HM_GGUF_FLOAT32, &v);
}

int hm_gguf_writer_add_bool(struct hm_gguf_writer *w, const char *key, bool v)
{
    uint8_t b = v ? 1 : 0;
    return hm_gguf_writer_add_scalar(w, key, HM_GGUF_BOOL, &b);
}

int hm_gguf_writer_add_str(struct hm_gguf_writer *w, const char *key, const char *v)
{
    uint64_t len = strlen(v);
    uint8_t *b = hm_malloc(8 + len);
    if (!b)
        return HM_ENOMEM;
    memcpy(b, &len, 8);
    memcpy(b + 8, v, len);
    int rc = hm_gguf_writer_add_raw(w, key, HM_GGUF_STRING, b, 8 + len);
    hm_free(b);
    return rc;
}

int hm_gguf_writer_add_arr(struct hm_gguf_writer *w, const char *key,
                           enum hm_gguf_type elem_type, const void *data, uint64_t n)
{
    size_t sz = scalar_size(elem_type);
    if (!sz || n > (SIZE_MAX - 12) / sz)
        return HM_EINVAL;
    uint8_t *b = hm_malloc(12 + n * sz);
    if (!b)
        return HM_ENOMEM;
    uint32_t et = elem_type;
    memcpy(b, &et, 4);
    memcpy(b + 4, &n, 8);
    if (n)
        memcpy(b + 12, data, n * sz);
    int rc = hm_gguf_writer_add_raw(w, key, HM_GGUF_ARRAY, b, 12 + n * sz);
    hm_free(b);
    return rc;
}

int hm_gguf_writer_add_arr_str(struct hm_gguf_writer *w, const char *key,
                               const char *const *strs, uint64_t n)
{
    struct hm_buf b;
    uint32_t et = HM_GGUF_STRING;
    int rc;
    hm_buf_init(&b, SIZE_MAX / 2);
    rc = hm_buf_append(&b, &et, 4);
    if (rc == HM_OK)
        rc = hm_buf_append(&b, &n, 8);
    for (uint64_t i = 0; i < n && rc == HM_OK; i++) {
        uint64_t len = strlen(strs[i]);
        rc = hm_buf_append(&b, &len, 8);
        if (rc == HM_OK)
            rc = hm_buf_append(&b, strs[i], len);
    }
    if (rc == HM_OK)
        rc = hm_gguf_writer_add_raw(w, key, HM_GGUF_ARRAY, b.data, b.len);
    hm_buf_release(&b);
    return rc == HM_ETOOBIG ? HM_ENOMEM : rc;
}

int hm_gguf_writer_add_tensor(struct hm_gguf_writer *w, const char *name, enum hm_dtype type,
                              uint32_t n_dims, const uint64_t *ne, const void *data)
{
    if (!name || !*name || strlen(name) > GGUF_MAX_NAME || !dtype_known(type) || n_dims < 1 ||
        n_dims > HM_GGUF_MAX_DIMS)
        return HM_EINVAL;
    uint64_t n_elems = 1;
    for (uint32_t d = 0; d < n_dims; d++) {
        if (ne[d] == 0 || ne[d] > (UINT64_MAX >> 2) / n_elems)
            return HM_EINVAL;
        n_elems *= ne[d];
    }
    uint64_t rb = hm_dtype_row_bytes(type, ne[0]);
    if (rb == 0)
        return HM_EINVAL;
    for (size_t i = 0; i < w->n_t; i++)
        if (strcmp(w->t[i].name, name) == 0)
            return HM_EINVAL;
    if (grow((void **)&w->t, &w->cap_t, w->n_t, sizeof *w->t) < 0)
        return HM_ENOMEM;
    struct wtensor *t = &w->t[w->n_t];
    memset(t, 0, sizeof *t);
    t->name = hm_strdup(name);
    if (!t->name)
        return HM_ENOMEM;
    t->type = type;
    t->n_dims = n_dims;
    for (uint32_t d = 0; d < HM_GGUF_MAX_DIMS; d++)
        t->ne[d] = d < n_dims ? ne[d] : 1;
    t->n_bytes = rb * (n_elems / ne[0]);
    t->data = data;
    w->n_t++;
    return HM_OK;
}

static int put(FILE *f, const void *p, size_t n)
{
    return fwrite(p, 1, n, f) == n ? HM_OK : HM_EIO;
}

static int put_str(FILE *f, const char *s)
{
    uint64_t len = strlen(s);
    int rc = put(f, &len, 8);
    return rc < 0 ? rc : put(f, s, len);
}

static int put_zeros(FILE *f, uint64_t n)
{
    static const uint8_t zeros[64];
    while (n > 0) {
        size_t k = n < sizeof zeros ? (size_t)n : sizeof zeros;
        if (put(f, zeros, k) < 0)
            return HM_EIO;
        n -= k;
    }
    return HM_OK;
}

int hm_gguf_writer_write(struct hm_gguf_writer *w, const char *path, hm_gguf_fill_cb fill,
                         void *fill_ctx, hm_gguf_progress_cb progress, void *progress_ctx,
                         struct hm_errmsg *em)
{
    char *tmp = NULL;
    FILE *f = NULL;
    void *buf = NULL;
    uint64_t off = 0, total = 0, done = 0, pos = 0;
    int rc;

    for (size_t i = 0; i < w->n_t; i++) {
        if (!w->t[i].data && !fill)
            return hm_errmsg_set(em, HM_EINVAL, "%s: tensor '%s' has no data and no fill "
                                 "callback", path, w->t[i].name);
        w->t[i].offset = off;
        off += (w->t[i].n_bytes + w->alignment - 1) / w->alignment * w->alignment;
        total += w->t[i].n_bytes;
    }
    size_t plen = strlen(path) + 5;
    tmp = hm_malloc(plen);
    if (!tmp)
        return hm_errmsg_set(em, HM_ENOMEM, "%s: out of memory", path);
    snprintf(tmp, plen, "%s.tmp", path);
    f = fopen(tmp, "wb");
    if (!f) {
        rc = hm_errmsg_set(em, HM_EIO, "cannot create '%s': %s", tmp, strerror(errno));
        goto out;
    }
    uint32_t magic = GGUF_MAGIC, version = 3;
    uint64_t n_t = w->n_t, n_kv = w->n_kv;
    rc = put(f, &magic, 4);
    if (rc == HM_OK) rc = put(f, &version, 4);
    if (rc == HM_OK) rc = put(f, &n_t, 8);
    if (rc == HM_OK) rc = put(f, &n_kv, 8);
    for (size_t i = 0; i < w->n_kv && rc == HM_OK; i++) {
        uint32_t t = w->kv[i].type;
        rc = put_str(f, w->kv[i].key);
        if (rc == HM_OK) rc = put(f, &t, 4);
        if (rc == HM_OK) rc = put(f, w->kv[i].bytes, w->kv[i].n);
    }
    for (size_t i = 0; i < w->n_t && rc == HM_OK; i++) {
        const struct wtensor *t = &w->t[i];
        uint32_t type = t->type;
        rc = put_str(f, t->name);
        if (rc == HM_OK) rc = put(f, &t->n_dims, 4);
        if (rc == HM_OK) rc = put(f, t->ne, 8 * (size_t)t->n_dims);
        if (rc == HM_OK) rc = put(f, &type, 4);
        if (rc == HM_OK) rc = put(f, &t->offset, 8);
    }
    if (rc == HM_OK) {
        long hl = ftell(f);
        if (hl < 0) {
            rc = HM_EIO;
        } else {
            uint64_t h = (uint64_t)hl;
            rc = put_zeros(f, (h + w->alignment - 1) / w->alignment * w->alignment - h);
        }
    }
    if (rc < 0) {
        rc = hm_errmsg_set(em, HM_EIO, "cannot write '%s': %s", tmp, strerror(errno));
        goto out;
    }
    for (size_t i = 0; i < w->n_t; i++) {
        const struct wtensor *t = &w->t[i];
        const void *src = t->data;
        if (!src) {
            if (t->n_bytes > SIZE_MAX) {
                rc = hm_errmsg_set(em, HM_ETOOBIG, "%s: tensor '%s' too big", path, t->name);
                goto out;
            }
            buf = hm_malloc((size_t)t->n_bytes);
            if (!buf) {
                rc = hm_errmsg_set(em, HM_ENOMEM, "%s: out of memory for tensor '%s' (%llu "
                                   "bytes)", path, t->name, (unsigned long long)t->n_bytes);
                goto out;
            }
            rc = fill(fill_ctx, t->name, buf, t->n_bytes);
            if (rc < 0) {
                hm_errmsg_set(em, rc, "%s: producing tensor '%s' failed: %s", path, t->name,
                              hm_strerror(rc));
                goto out;
            }
            src = buf;
        }
        if (pos < t->offset)
            rc = put_zeros(f, t->offset - pos);
        if (rc == HM_OK)
            rc = put(f, src, (size_t)t->n_bytes);
        if (rc < 0) {
            rc = hm_errmsg_set(em, HM_EIO, "cannot write '%s': %s", tmp, strerror(errno));
            goto out;
        }
        pos = t->offset + t->n_bytes;
        hm_free(buf);
        buf = NULL;
        done += t->n_bytes;
        if (progress)
            progress(progress_ctx, done, total);
    }
    rc = fclose(f) == 0 ? HM_OK : HM_EIO;
    f = NULL;
    if (rc < 0) {
        rc = hm_errmsg_set(em, HM_EIO, "cannot write '%s': %s", tmp, strerror(errno));
        goto out;
    }
    if (rename(tmp, path) < 0) {
        rc = hm_errmsg_set(em, HM_EIO, "cannot rename '%s' to '%s': %s", tmp, path,
                           strerror(errno));
        goto out;
    }
    rc = HM_OK;
out:
    if (f)
        fclose(f);
    if (rc < 0 && tmp)
        unlink(tmp);
    hm_free(buf);
    hm_free(tmp);
    return rc;
}
