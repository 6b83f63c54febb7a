/*
 * kvcache.c - sizing and allocating a session's KV cache (spec section 8 and 12.10).
 *
 * Everything is float32 and allocated once at admission: G layers N rows, L layers a
 * ring of min(w, N) rows, M layers N rows of the latent (r) and rope key (d_r).
 */
#include <string.h>

#include "forward.h"
#include "hm/alloc.h"

static uint64_t layer_rows(const struct hm_model *m, char type, uint32_t n_planned, int64_t window)
{
    if (type == 'L' && window < (int64_t)n_planned)
        return window < 1 ? 1 : (uint64_t)window;
    return n_planned;
}

static uint64_t layer_row_elems(const struct hm_model *m, char type)
{
    const struct hm_hparams *hp = &m->hp;
    if (type == 'M')
        return (uint64_t)hp->kv_lora_rank + hp->qk_rope;
    return 2ull * hp->n_head_kv * hp->head_dim;
}

uint64_t hm__kv_elems(const struct hm_model *m, uint32_t n_planned, int64_t window, bool xs)
{
    uint64_t n = 0;
    uint32_t l;
    for (l = 0; l < m->hp.n_layer; l++) {
        char t = m->hp.pattern[l];
        n += layer_rows(m, t, n_planned, window) * layer_row_elems(m, t);
    }
    if (xs)
        n += hm__xs_elems(m, n_planned);
    return n;
}

uint64_t hm__kv_elems_baseline(const struct hm_model *m, uint32_t n_planned)
{
    return (uint64_t)m->hp.n_layer * n_planned * 2ull * m->hp.n_head_kv * m->hp.head_dim;
}

int hm__kv_alloc(const struct hm_model *m, uint32_t n_planned, int64_t window,
                 struct hm__kv_layer *layers, float **mem)
{
    const struct hm_hparams *hp = &m->hp;
    uint64_t total = hm__kv_elems(m, n_planned, window, false);
    float *p;
    uint32_t l;

    *mem = NULL;
    if (total > SIZE_MAX / sizeof(float))
        return HM_ENOMEM;
    p = hm_malloc_aligned((size_t)total * sizeof(float));
    if (!p)
        return HM_ENOMEM;
    *mem = p;
    for (l = 0; l < hp->n_layer; l++) {
        struct hm__kv_layer *kl = &layers[l];
        uint64_t rows = layer_rows(m, hp->pattern[l], n_planned, window);
        memset(kl, 0, sizeof(*kl));
        kl->type = hp->pattern[l];
        kl->cap = (uint32_t)rows;
        if (kl->type == 'M') {
            kl->ckv = p;
            p += rows * hp->kv_lora_rank;
            kl->kr = p;
            p += rows * hp->qk_rope;
        } else {
            size_t kvd = (size_t)hp->n_head_kv * hp->head_dim;
            kl->k = p;
            p += rows * kvd;
            kl->v = p;
            p += rows * kvd;
        }
    }
    return HM_OK;
}
