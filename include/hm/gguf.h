/*
 * gguf.h - reading and writing GGUF files (v2 and v3).
 *
 * File layout (little-endian):
 *   u32 magic "GGUF" | u32 version | u64 n_tensors | u64 n_kv      (v2/v3; v1 is rejected)
 *   n_kv x { gguf_string key | u32 type | value }
 *       gguf_string = u64 len | len bytes (not NUL-terminated)
 *       value of type ARRAY = u32 elem_type | u64 n | n values (arrays may nest)
 *   n_tensors x { gguf_string name | u32 n_dims | n_dims x u64 ne | u32 ggml_type | u64 offset }
 *   padding to general.alignment (default 32) | tensor data; offsets are relative to its start
 *
 * The reader validates everything before trusting it (counts and lengths against the
 * bytes left, dimension products against overflow, offsets and sizes against the
 * file, alignment, duplicate keys/tensors, unknown types). Tensor data is mmap'd
 * read-only and shared between processes; views stay valid until hm_gguf_free().
 *
 *     struct hm_gguf *g;
 *     struct hm_errmsg em = {0};
 *     if (hm_gguf_open("m.gguf", &g, &em) < 0) { puts(em.text); ... }
 *     uint32_t d;
 *     rc = hm_gguf_get_u32(g, "hybridmoe.embedding_length", &d);   // HM_ENOENT if absent
 *     const struct hm_tensor *t = hm_gguf_find_tensor(g, "token_embd.weight");
 *     hm_gguf_free(g);
 */
#ifndef HM_GGUF_H
#define HM_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hm/err.h"

enum hm_gguf_type {
    HM_GGUF_UINT8 = 0,
    HM_GGUF_INT8 = 1,
    HM_GGUF_UINT16 = 2,
    HM_GGUF_INT16 = 3,
    HM_GGUF_UINT32 = 4,
    HM_GGUF_INT32 = 5,
    HM_GGUF_FLOAT32 = 6,
    HM_GGUF_BOOL = 7,
    HM_GGUF_STRING = 8,
    HM_GGUF_ARRAY = 9,
    HM_GGUF_UINT64 = 10,
    HM_GGUF_INT64 = 11,
    HM_GGUF_FLOAT64 = 12,
};

/* Tensor element types; values are ggml's. */
enum hm_dtype {
    HM_DTYPE_F32 = 0,
    HM_DTYPE_F16 = 1,
    HM_DTYPE_Q8_0 = 8, /* blocks of 32: f16 scale d, 32 x int8 q; value = d * q */
    HM_DTYPE_BF16 = 30,
};

#define HM_Q8_0_BLOCK 32
#define HM_GGUF_MAX_DIMS 4

/* A tensor as stored. ne[0] is the innermost (contiguous) dimension, so a matrix
 * with `rows` outputs of `cols` inputs has ne = {cols, rows}. */
struct hm_tensor {
    const char *name;        /* borrowed from the hm_gguf */
    enum hm_dtype type;
    uint32_t n_dims;
    uint64_t ne[HM_GGUF_MAX_DIMS]; /* unused dims are 1 */
    uint64_t n_elems;
    uint64_t n_bytes;
    uint64_t offset;         /* relative to the data section */
    const void *data;        /* into the mapping */
};

struct hm_gguf;

/* Opens and validates path. Returns owned; free with hm_gguf_free(). */
int hm_gguf_open(const char *path, struct hm_gguf **out, struct hm_errmsg *em);
/* The same over memory the caller keeps alive until hm_gguf_free() (tests, fuzzing).
 * name is used in messages. */
int hm_gguf_open_mem(const void *data, size_t size, const char *name, struct hm_gguf **out,
                     struct hm_errmsg *em);
void hm_gguf_free(struct hm_gguf *g);

const char *hm_gguf_path(const struct hm_gguf *g);
uint32_t hm_gguf_version(const struct hm_gguf *g);
uint32_t hm_gguf_alignment(const struct hm_gguf *g);

/* Metadata. Lookups return HM_ENOENT when the key is absent and HM_EFORMAT when it
 * has another type (integer getters accept any integer type whose value fits). */
size_t hm_gguf_n_kv(const struct hm_gguf *g);
const char *hm_gguf_key(const struct hm_gguf *g, size_t i);          /* borrowed */
enum hm_gguf_type hm_gguf_kv_type(const struct hm_gguf *g, size_t i);
long hm_gguf_find_key(const struct hm_gguf *g, const char *key);     /* index or -1 */
int hm_gguf_get_u32(const struct hm_gguf *g, const char *key, uint32_t *out);
int hm_gguf_get_u64(const struct hm_gguf *g, const char *key, uint64_t *out);
int hm_gguf_get_i64(const struct hm_gguf *g, const char *key, int64_t *out);
int hm_gguf_get_f32(const struct hm_gguf *g, const char *key, float *out); /* f32 or f64 */
int hm_gguf_get_bool(const struct hm_gguf *g, const char *key, bool *out);
/* String value: borrowed pointer (not NUL-terminated in the file; the reader keeps a
 * NUL-terminated copy) and its length. */
int hm_gguf_get_str(const struct hm_gguf *g, const char *key, const char **out, size_t *len);
/* Array of scalars: element type, count and a borrowed pointer to the packed
 * little-endian elements (may be unaligned: memcpy out). Not for arrays of strings
 * or arrays of arrays. */
int hm_gguf_get_arr(const struct hm_gguf *g, const char *key, enum hm_gguf_type *elem_type,
                    uint64_t *n, const void **data);
/* Array of strings: count, and element i as borrowed NUL-terminated copy + length. */
int hm_gguf_get_arr_n(const struct hm_gguf *g, const char *key, enum hm_gguf_type *elem_type,
                      uint64_t *n);
int hm_gguf_get_arr_str(const struct hm_gguf *g, const char *key, uint64_t i, const char **out,
                        size_t *len);
/* Formats the value of key i as text for `hybridmoe inspect` (arrays abbreviated
 * after max_elems elements) into buf; returns the length written. */
size_t hm_gguf_format_value(const struct hm_gguf *g, size_t i, size_t max_elems, char *buf,
                            size_t buflen);

/* Tensors. */
size_t hm_gguf_n_tensors(const struct hm_gguf *g);
const struct hm_tensor *hm_gguf_tensor(const struct hm_gguf *g, size_t i);
const struct hm_tensor *hm_gguf_find_tensor(const struct hm_gguf *g, const char *name);

/* Element types. */
const char *hm_dtype_name(enum hm_dtype t);          /* "f32", "f16", "q8_0", "bf16" */
int hm_dtype_from_name(const char *name, enum hm_dtype *out);
/* Bytes for n elements of type t (n must be a multiple of the block size); 0 if not. */
uint64_t hm_dtype_row_bytes(enum hm_dtype t, uint64_t n);
float hm_f16_to_f32(uint16_t h);
uint16_t hm_f32_to_f16(float f);                     /* round to nearest even */
float hm_bf16_to_f32(uint16_t h);
uint16_t hm_f32_to_bf16(float f);
/* Converts n elements of a row stored as type t into f32 (n a multiple of the block). */
void hm_dequantize_row(enum hm_dtype t, const void *src, float *dst, uint64_t n);
/* Quantizes n f32 values into type t (n a multiple of the block). */
void hm_quantize_row(enum hm_dtype t, const float *src, void *dst, uint64_t n);

/* ---- Writer ---------------------------------------------------------------------
 *
 *     struct hm_gguf_writer *w;
 *     hm_gguf_writer_new(&w);
 *     hm_gguf_writer_add_str(w, "general.architecture", "hybridmoe");
 *     hm_gguf_writer_add_tensor(w, "token_embd.weight", HM_DTYPE_F32, 2, ne, data);
 *     hm_gguf_writer_write(w, "out.gguf", NULL, NULL, &em);
 *     hm_gguf_writer_free(w);
 *
 * Keys and tensors are written in the order added; duplicates are rejected (HM_EINVAL).
 * Version 3, alignment general.alignment if added (u32, power of two) else 32.
 */
struct hm_gguf_writer;

/* Fills dst (n_bytes, already in the tensor's type) for the tensor; may be called from
 * the writer while it streams the file, so huge models need no whole copy in memory. */
typedef int (*hm_gguf_fill_cb)(void *ctx, const char *name, void *dst, uint64_t n_bytes);
typedef void (*hm_gguf_progress_cb)(void *ctx, uint64_t done_bytes, uint64_t total_bytes);

int hm_gguf_writer_new(struct hm_gguf_writer **out);
void hm_gguf_writer_free(struct hm_gguf_writer *w);
int hm_gguf_writer_add_u32(struct hm_gguf_writer *w, const char *key, uint32_t v);
int hm_gguf_writer_add_i32(struct hm_gguf_writer *w, const char *key, int32_t v);
int hm_gguf_writer_add_u64(struct hm_gguf_writer *w, const char *key, uint64_t v);
int hm_gguf_writer_add_f32(struct hm_gguf_writer *w, const char *key, float v);
int hm_gguf_writer_add_bool(struct hm_gguf_writer *w, const char *key, bool v);
int hm_gguf_writer_add_str(struct hm_gguf_writer *w, const char *key, const char *v);
/* Any scalar type as raw little-endian bytes (u8, i8, u16, ..., f64). */
int hm_gguf_writer_add_scalar(struct hm_gguf_writer *w, const char *key, enum hm_gguf_type t,
                              const void *v);
/* Array of n scalars of elem_type, packed (copied). */
int hm_gguf_writer_add_arr(struct hm_gguf_writer *w, const char *key,
                           enum hm_gguf_type elem_type, const void *data, uint64_t n);
/* Array of n strings (copied). */
int hm_gguf_writer_add_arr_str(struct hm_gguf_writer *w, const char *key,
                               const char *const *strs, uint64_t n);
/* Raw value bytes of any type, including nested arrays, as they appear in the file after
 * the type field (copied): for tests of exotic metadata. */
int hm_gguf_writer_add_raw(struct hm_gguf_writer *w, const char *key, enum hm_gguf_type t,
                           const void *bytes, size_t n);
/* Tensor with data borrowed until write (data may be NULL if fill is given at write). */
int hm_gguf_writer_add_tensor(struct hm_gguf_writer *w, const char *name, enum hm_dtype type,
                              uint32_t n_dims, const uint64_t *ne, const void *data);
/* Writes the file (to path.tmp, then renames). Tensors added with data == NULL are
 * produced by fill. progress may be NULL. */
int hm_gguf_writer_write(struct hm_gguf_writer *w, const char *path, hm_gguf_fill_cb fill,
                         void *fill_ctx, hm_gguf_progress_cb progress, void *progress_ctx,
                         struct hm_errmsg *em);

#endif
