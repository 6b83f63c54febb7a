/*
 * internal.h - interfaces between the engine's own files (not for server/ or tools/).
 *
 * Owners: matmul/kernels/pool/attention/MoE/forward (engine/matmul.c, kernels.c, attn.c,
 * moe.c, forward.c, session.c) and complexity/multiscale/window (engine/complexity.c,
 * engine/multiscale.c). Both sides code against this file.
 */
#ifndef HM_ENGINE_INTERNAL_H
#define HM_ENGINE_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hm/engine.h"
#include "hm/model.h"
#include "hm/pool.h"

/* ---- Deterministic matrix multiply (engine/matmul.c) -----------------------------
 * y[i][o] = sum_k W_e[o][k] * x[i][k] for i < n, o < W->rows, where W_e is matrix
 * `e` of W (0 unless W is a stacked expert tensor). x rows have stride ldx floats,
 * y rows stride ldy floats. The reduction order of every output element is fixed
 * (independent of n, of which rows are computed together and of the thread count),
 * so the result for a row of x is bit-identical however the batch is composed.
 * pool may be NULL (single-threaded). */
void hm__matmul(const struct hm_mat *W, uint32_t e, const float *x, size_t n, size_t ldx,
                float *y, size_t ldy, struct hm_pool *pool);
/* Row r of matrix e of W as f32 (dequantized) into dst (W->cols floats). */
void hm__mat_row(const struct hm_mat *W, uint32_t e, uint32_t r, float *dst);

/* ---- Complexity estimator (engine/complexity.c, spec 7 and 12.4) ---------------
 * Features for position t of tokens[0..t]: out[0] = e (token entropy), out[1] = s
 * (semantic density), out[2] = y (syntactic depth), out[3] = l (context feature), each
 * computed in float64 and rounded to float32. Token bytes come from m->tok
 * (m->tok == NULL: no token has bytes). Embedding rows from m->tok_embd (dequantized). */
void hm__complexity_features(const struct hm_model *m, const int32_t *tokens, uint32_t t,
                             float out[4]);
/* c_t in [0,1] (float32): the controller if present, else the weighted fallback. */
float hm__complexity_from_features(const struct hm_model *m, const float f[4]);
/* Convenience: features + combination for position t. */
float hm__complexity_at(const struct hm_model *m, const int32_t *tokens, uint32_t t);
/* Columns [k0, k0 + n) of row r of W as f32 (n <= 32, k0 a multiple of 32, the q8_0
 * block): a pointer into W for f32, else dst (n floats) filled. A row outside W (an
 * invalid token id) or a W without data reads as zeros. Shared with multiscale.c. */
const float *hm__mat_row_chunk(const struct hm_mat *W, int64_t r, uint32_t k0, uint32_t n,
                               float *dst);

/* ---- Cross-scale state (engine/multiscale.c, spec 6, 12.2, 12.10, 12.12) ----------
 * Per session. Tracks the current phrase and sentence (running sums of raw embedding
 * rows), and keeps the k/v rows of the most recent max_phrases closed phrases and
 * max_sentences closed sentences in rings. Element counts match 12.10 exactly:
 * (min(max_phrases, floor(N/P)) + min(max_sentences, N)) * 2 * d_x + 2 * d floats. */
struct hm__xs_state;
/* Allocates for a sequence of at most n_planned tokens. Returns owned. */
int hm__xs_new(const struct hm_model *m, uint32_t n_planned, struct hm__xs_state **out);
void hm__xs_free(struct hm__xs_state *xs);
/* Floats the state holds (the 12.10 count). */
uint64_t hm__xs_elems(const struct hm_model *m, uint32_t n_planned);
/* Feeds token at position pos (positions must come in order 0,1,2,...): adds its raw
 * embedding to the running phrase/sentence, and closes the phrase/sentence if this
 * token ends it (computing k = W_xk r + scale_embd[sigma], v = W_xv r). */
void hm__xs_push(struct hm__xs_state *xs, const struct hm_model *m, int32_t token, uint32_t pos);
/* CrossScale(t) for the most recently pushed token (whose raw embedding is e, d floats):
 * writes d floats to out (exactly 0 when nothing is visible). scratch: at least
 * hm__xs_scratch_floats(m) floats. */
void hm__xs_attend(const struct hm__xs_state *xs, const struct hm_model *m, const float *e,
                   float *out, float *scratch);
size_t hm__xs_scratch_floats(const struct hm_model *m);
/* For tests: number of visible phrases/sentences after the last push, and their
 * representations' indices (phrase j, sentence k) oldest first. */
void hm__xs_visible(const struct hm__xs_state *xs, uint32_t *n_phrases, uint32_t *n_sentences,
                    uint32_t *first_phrase, uint32_t *first_sentence);

#endif
