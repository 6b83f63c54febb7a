/*
 * blas.c - the only user of cblas.h: OpenBLAS sgemm for HM_MATMUL_BLAS mode.
 *
 * OpenBLAS runs single-threaded here; the engine's own pool splits the output rows
 * (oversubscribing 2 cores with OpenBLAS threads x pool threads costs more than it
 * gains). sgemm's blocking depends on n, so this path is not batch invariant.
 */
#include <cblas.h>

#include "kernels.h"

void hm__blas_sgemm_rows(const float *W, size_t cols, size_t r0, size_t r1, const float *x,
                         size_t n, size_t ldx, float *y, size_t ldy)
{
    /* y[:, r0:r1] (n x (r1-r0)) = x (n x cols) * W[r0:r1]^T */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, (int)(r1 - r0), (int)cols, 1.0f, x,
                (int)ldx, W + r0 * cols, (int)cols, 0.0f, y + r0, (int)ldy);
}

void hm__blas_single_thread(void)
{
    openblas_set_num_threads(1);
}
