/*
 * bpe_train.c - learns byte-level BPE merges from text (hm_bpe_train, include/hm/tokenizer.h).
 *
 * DESIGN (incremental pair counting, as in Hugging Face tokenizers)
 * - The text is pre-split with the GPT-2 pattern (unicode.c); identical pre-tokens are
 *   counted once as a "word" with a count. Words are sequences of token ids, starting as
 *   their bytes (ids 0..255); pairs are only counted inside a word.
 * - pairs: a hash table (left id, right id) -> total count over all words and the list of
 *   words where the pair was seen (it may hold stale or repeated entries; each is checked).
 * - A max-heap orders candidate pairs by count, then by the smallest (left bytes, right
 *   bytes) in byte order. Counts of existing pairs only ever decrease (a merge creates
 *   pairs with the new token, which are pushed as new entries), so an entry whose stored
 *   count is stale is re-pushed with the current count when it surfaces.
 * - A merge rewrites only the words listed for its pair: their pairs are subtracted,
 *   the merge applied left to right (non-overlapping), and their pairs added back.
 * - A merge whose bytes equal an earlier token reuses that token's id.
 * Cost: about O(total symbols of affected words) per merge; 2000+ merges over 1 MB of
 * text take a fraction of a second.
 */
#include "hm/tokenizer.h"

#include "hm/alloc.h"
#include "hm/err.h"
#include "unicode.h"

#include <string.h>

#define MAX_TRAIN_MERGES (1u << 20)

struct word {
    uint32_t start; /* into syms */
    uint32_t len;   /* symbols (shrinks with merges) */
    uint64_t count;
};

struct pair {
    uint64_t key; /* (left << 32) | right */
    int64_t count;
    uint32_t *words; /* word indices (may repeat or be stale) */
    uint32_t n_words;
    size_t cap_words;
    uint32_t mark; /* 1 + the merge that last put it in touched */
};

struct hent {
    int64_t count;
    uint32_t pair; /* index into pairs */
};

struct tok {
    uint32_t off, len; /* into bytes */
};

struct trainer {
    /* words: distinct pre-tokens */
    struct word *words;
    uint32_t n_words;
    size_t cap_words;
    uint32_t *syms; /* all words' symbols */
    size_t n_syms, cap_syms;
    uint32_t *wmap; /* word hash: index + 1 */
    uint32_t wmask;
    const uint8_t *text; /* word bytes for hashing (original text) */
    uint32_t *wtext;     /* per word: offset of its bytes in text */
    size_t cap_wtext;
    /* pairs */
    struct pair *pairs;
    uint32_t n_pairs;
    size_t cap_pairs;
    uint32_t *pmap; /* pair hash: index + 1 */
    uint32_t pmask;
    /* heap */
    struct hent *heap;
    size_t n_heap, cap_heap;
    /* tokens */
    struct tok *toks;
    uint32_t n_toks;
    size_t cap_toks;
    uint8_t *bytes;
    size_t n_bytes, cap_bytes;
    uint32_t *tmap; /* token bytes hash: id + 1 */
    uint32_t tmask;
    /* pairs touched by the current merge that contain the new token */
    uint32_t *touched;
    uint32_t n_touched;
    size_t cap_touched;
    uint32_t merge_no; /* 1 + index of the current merge */
};

/* Returns array p (elements of sz bytes, capacity *cap) grown to hold need >= 1
 * elements, updating *cap; or NULL on failure, p being unchanged and still owned. */
static void *grow(void *p, size_t sz, size_t need, size_t *cap)
{
    size_t c = *cap ? *cap : 16;
    void *q;

    if (need <= *cap)
        return p;
    while (c < need)
        c *= 2;
    q = hm_realloc(p, c * sz);
    if (q)
        *cap = c;
    return q;
}

/* GROW(arr, need, cap): grows the array lvalue arr; evaluates to HM_OK or HM_ENOMEM. The
 * new pointer goes through a void * temporary, as an assignment (no type punning). */
#define GROW(arr, need, cap)                                                                       \
    ((grow_tmp = grow((arr), sizeof(*(arr)), (need), &(cap))) != NULL                              \
         ? ((arr) = grow_tmp, HM_OK)                                                               \
         : HM_ENOMEM)

/* ---- Tokens ------------------------------------------------------------------------- */

static int32_t tok_find(const struct trainer *tr, const uint8_t *s, size_t n)
{
    uint32_t i = (uint32_t)hm__hash_bytes(s, n) & tr->tmask, v;

    while ((v = tr->tmap[i]) != 0) {
        const struct tok *t = &tr->toks[v - 1];
        if (t->len == n && memcmp(tr->bytes + t->off, s, n) == 0)
            return (int32_t)(v - 1);
        i = (i + 1) & tr->tmask;
    }
    return -1;
}

/* Adds a token of bytes a then b (not yet present). The token hash table is sized for
 * all tokens up front, so it never needs to grow. */
static int tok_add(struct trainer *tr, const uint8_t *a, size_t na, const uint8_t *b, size_t nb,
                   uint32_t *id)
{
    void *grow_tmp;
    size_t off = tr->n_bytes;
    uint32_t i;
    int rc;

    if ((rc = GROW(tr->bytes, off + na + nb, tr->cap_bytes)) < 0 ||
        (rc = GROW(tr->toks, tr->n_toks + 1, tr->cap_toks)) < 0)
        return rc;
    /* a and b may point into bytes past n_bytes: the caller reserved room, so no realloc */
    memcpy(tr->bytes + off, a, na);
    if (nb > 0)
        memcpy(tr->bytes + off + na, b, nb);
    tr->n_bytes += na + nb;
    *id = tr->n_toks++;
    tr->toks[*id].off = (uint32_t)off;
    tr->toks[*id].len = (uint32_t)(na + nb);
    i = (uint32_t)hm__hash_bytes(tr->bytes + off, na + nb) & tr->tmask;
    while (tr->tmap[i] != 0)
        i = (i + 1) & tr->tmask;
    tr->tmap[i] = *id + 1;
    return HM_OK;
}

/* ---- Pairs and heap ----------------------------------------------------------------- */

static uint32_t pair_get(struct trainer *tr, uint32_t a, uint32_t b, bool create, int *rc)
{
    void *grow_tmp;
    uint64_t key = ((uint64_t)a << 32) | b;
    uint32_t i, v, j, *nm, nmask;

    *rc = HM_OK;
    i = (uint32_t)hm__hash_u64(key) & tr->pmask;
    while ((v = tr->pmap[i]) != 0) {
        if (tr->pairs[v - 1].key == key)
            return v - 1;
        i = (i + 1) & tr->pmask;
    }
    if (!create)
        return UINT32_MAX;
    if (2 * (tr->n_pairs + 1) > tr->pmask + 1) { /* rehash at half full */
        nmask = 2 * (tr->pmask + 1) - 1;
        nm = hm_calloc((size_t)nmask + 1, sizeof(uint32_t));
        if (!nm) {
            *rc = HM_ENOMEM;
            return UINT32_MAX;
        }
        for (j = 0; j < tr->n_pairs; j++) {
            i = (uint32_t)hm__hash_u64(tr->pairs[j].key) & nmask;
            while (nm[i] != 0)
                i = (i + 1) & nmask;
            nm[i] = j + 1;
        }
        hm_free(tr->pmap);
        tr->pmap = nm;
        tr->pmask = nmask;
        i = (uint32_t)hm__hash_u64(key) & nmask;
        while (tr->pmap[i] != 0)
            i = (i + 1) & nmask;
    }
    if ((*rc = GROW(tr->pairs, tr->n_pairs + 1, tr->cap_pairs)) < 0)
        return UINT32_MAX;
    v = tr->n_pairs++;
    memset(&tr->pairs[v], 0, sizeof(tr->pairs[v]));
    tr->pairs[v].key = key;
    tr->pmap[i] = v + 1;
    return v;
}

/* Byte order of two pairs by (left bytes, right bytes): < 0 if p sorts first. */
static int bytes_cmp(const struct trainer *tr, uint32_t x, uint32_t y)
{
    const struct tok *a = &tr->toks[x], *b = &tr->toks[y];
    size_t n = a->len < b->len ? a->len : b->len;
    int c = memcmp(tr->bytes + a->off, tr->bytes + b->off, n);

    if (c != 0)
        return c;
    return a->len < b->len ? -1 : a->len > b->len ? 1 : 0;
}

static bool hent_before(const struct trainer *tr, const struct hent *p, const struct hent *q)
{
    uint64_t kp, kq;
    int c;

    if (p->count != q->count)
        return p->count > q->count;
    kp = tr->pairs[p->pair].key;
    kq = tr->pairs[q->pair].key;
    c = bytes_cmp(tr, (uint32_t)(kp >> 32), (uint32_t)(kq >> 32));
    if (c == 0)
        c = bytes_cmp(tr, (uint32_t)kp, (uint32_t)kq);
    return c < 0;
}

static int heap_push(struct trainer *tr, uint32_t pair)
{
    void *grow_tmp;
    struct hent e = {tr->pairs[pair].count, pair};
    size_t i, p;
    int rc;

    if ((rc = GROW(tr->heap, tr->n_heap + 1, tr->cap_heap)) < 0)
        return rc;
    i = tr->n_heap++;
    while (i > 0) {
        p = (i - 1) / 2;
        if (!hent_before(tr, &e, &tr->heap[p]))
            break;
        tr->heap[i] = tr->heap[p];
        i = p;
    }
    tr->heap[i] = e;
    return HM_OK;
}

static struct hent heap_pop(struct trainer *tr)
{
    struct hent top = tr->heap[0], last = tr->heap[--tr->n_heap];
    size_t i = 0, c, n = tr->n_heap;

    while ((c = 2 * i + 1) < n) {
        if (c + 1 < n && hent_before(tr, &tr->heap[c + 1], &tr->heap[c]))
            c++;
        if (!hent_before(tr, &tr->heap[c], &last))
            break;
        tr->heap[i] = tr->heap[c];
        i = c;
    }
    if (n > 0)
        tr->heap[i] = last;
    return top;
}

/* Adds delta (count of the word, signed) to every pair of word w. With delta > 0 the word
 * is recorded in the pair's list when the pair contains token `fresh` (the new token),
 * and such pairs are remembered in touched (once) to be pushed on the heap. */
static int word_pairs(struct trainer *tr, uint32_t w, int64_t delta, uint32_t fresh)
{
    void *grow_tmp;
    const struct word *wd = &tr->words[w];
    const uint32_t *s = tr->syms + wd->start;
    uint32_t i, p;
    struct pair *pr;
    int rc;

    for (i = 0; i + 1 < wd->len; i++) {
        p = pair_get(tr, s[i], s[i + 1], delta > 0, &rc);
        if (rc < 0)
            return rc;
        if (p == UINT32_MAX)
            continue;
        pr = &tr->pairs[p];
        if (delta > 0 && (s[i] == fresh || s[i + 1] == fresh)) {
            if (pr->mark != tr->merge_no) {
                pr->mark = tr->merge_no;
                rc = GROW(tr->touched, tr->n_touched + 1, tr->cap_touched);
                if (rc < 0)
                    return rc;
                tr->touched[tr->n_touched++] = p;
            }
            if (pr->n_words == 0 || pr->words[pr->n_words - 1] != w) {
                rc = GROW(pr->words, pr->n_words + 1, pr->cap_words);
                if (rc < 0)
                    return rc;
                pr->words[pr->n_words++] = w;
            }
        }
        pr->count += delta;
    }
    return HM_OK;
}

/* ---- Setup -------------------------------------------------------------------------- */

/* Counts the pre-token s[0..n) (at offset off of the text). */
static int add_word(struct trainer *tr, size_t off, size_t n)
{
    void *grow_tmp;
    const uint8_t *s = tr->text + off;
    uint32_t i = (uint32_t)hm__hash_bytes(s, n) & tr->wmask, v, j, *nm, nmask;
    struct word *wd;
    int rc;

    while ((v = tr->wmap[i]) != 0) {
        wd = &tr->words[v - 1];
        if (wd->len == n && memcmp(tr->text + tr->wtext[v - 1], s, n) == 0) {
            wd->count++;
            return HM_OK;
        }
        i = (i + 1) & tr->wmask;
    }
    if ((rc = GROW(tr->words, tr->n_words + 1, tr->cap_words)) < 0)
        return rc;
    if (tr->n_words + 1 > tr->cap_wtext) { /* wtext grows alongside words */
        uint32_t *q = hm_realloc(tr->wtext, (size_t)tr->cap_words * sizeof(uint32_t));
        if (!q)
            return HM_ENOMEM;
        tr->wtext = q;
        tr->cap_wtext = tr->cap_words;
    }
    if ((rc = GROW(tr->syms, tr->n_syms + n, tr->cap_syms)) < 0)
        return rc;
    v = tr->n_words++;
    tr->words[v].start = (uint32_t)tr->n_syms;
    tr->words[v].len = (uint32_t)n;
    tr->words[v].count = 1;
    tr->wtext[v] = (uint32_t)off;
    for (j = 0; j < n; j++)
        tr->syms[tr->n_syms++] = s[j];
    tr->wmap[i] = v + 1;
    if (2 * tr->n_words > tr->wmask + 1) { /* rehash at half full */
        nmask = 2 * (tr->wmask + 1) - 1;
        nm = hm_calloc((size_t)nmask + 1, sizeof(uint32_t));
        if (!nm)
            return HM_ENOMEM;
        for (j = 0; j < tr->n_words; j++) {
            i = (uint32_t)hm__hash_bytes(tr->text + tr->wtext[j], tr->words[j].len) & nmask;
            while (nm[i] != 0)
                i = (i + 1) & nmask;
            nm[i] = j + 1;
        }
        hm_free(tr->wmap);
        tr->wmap = nm;
        tr->wmask = nmask;
    }
    return HM_OK;
}

static void trainer_release(struct trainer *tr)
{
    uint32_t i;

    for (i = 0; i < tr->n_pairs; i++)
        hm_free(tr->pairs[i].words);
    hm_free(tr->words);
    hm_free(tr->syms);
    hm_free(tr->wmap);
    hm_free(tr->wtext);
    hm_free(tr->pairs);
    hm_free(tr->pmap);
    hm_free(tr->heap);
    hm_free(tr->toks);
    hm_free(tr->bytes);
    hm_free(tr->tmap);
    hm_free(tr->touched);
}

/* Applies merge (a, b) -> id to word w, left to right. */
static void word_merge(struct trainer *tr, uint32_t w, uint32_t a, uint32_t b, uint32_t id)
{
    struct word *wd = &tr->words[w];
    uint32_t *s = tr->syms + wd->start, i, o = 0;

    for (i = 0; i < wd->len; i++) {
        if (i + 1 < wd->len && s[i] == a && s[i + 1] == b) {
            s[o++] = id;
            i++;
        } else {
            s[o++] = s[i];
        }
    }
    wd->len = o;
}

static bool word_has(const struct trainer *tr, uint32_t w, uint32_t a, uint32_t b)
{
    const struct word *wd = &tr->words[w];
    const uint32_t *s = tr->syms + wd->start;
    uint32_t i;

    for (i = 0; i + 1 < wd->len; i++)
        if (s[i] == a && s[i + 1] == b)
            return true;
    return false;
}

/* Writes token id's bytes as GPT-2 byte-to-unicode text into a new string. */
static char *tok_text(const struct trainer *tr, uint32_t id, const char *sep, uint32_t id2)
{
    const struct tok *t = &tr->toks[id], *t2 = sep ? &tr->toks[id2] : NULL;
    size_t n = 2 * t->len + (t2 ? 2 * t2->len + 1 : 0) + 1, o = 0, i;
    char *s = hm_malloc(n);

    if (!s)
        return NULL;
    for (i = 0; i < t->len; i++)
        o += hm__utf8_encode(hm__gpt2_byte_to_cp(tr->bytes[t->off + i]), (uint8_t *)s + o);
    if (t2) {
        s[o++] = *sep;
        for (i = 0; i < t2->len; i++)
            o += hm__utf8_encode(hm__gpt2_byte_to_cp(tr->bytes[t2->off + i]), (uint8_t *)s + o);
    }
    s[o] = '\0';
    return s;
}

int hm_bpe_train(const char *text, size_t len, uint32_t n_merges, struct hm_tokenizer_data **out,
                 struct hm_errmsg *em)
{
    void *grow_tmp;
    struct trainer tr = {0};
    struct hm_tokenizer_data *d = NULL;
    uint32_t *mpairs = NULL, n_done = 0, i, j, p, a, b, id, w, first_new;
    const uint8_t *s = (const uint8_t *)text;
    struct hent e;
    size_t off, k;
    char **tk;
    int32_t *ty;
    int32_t found;
    int rc = HM_ENOMEM;

    *out = NULL;
    if (n_merges > MAX_TRAIN_MERGES)
        return hm_errmsg_set(em, HM_ETOOBIG, "bpe training: %u merges requested (max %u)",
                             n_merges, MAX_TRAIN_MERGES);
    if (len > UINT32_MAX / 2)
        return hm_errmsg_set(em, HM_ETOOBIG, "bpe training: text of %zu bytes is too big", len);
    tr.text = s;
    tr.wmask = 1023;
    tr.pmask = 1023;
    for (tr.tmask = 1023; tr.tmask / 2 < 256 + n_merges; tr.tmask = 2 * tr.tmask + 1)
        ;
    tr.wmap = hm_calloc((size_t)tr.wmask + 1, sizeof(uint32_t));
    tr.pmap = hm_calloc((size_t)tr.pmask + 1, sizeof(uint32_t));
    tr.tmap = hm_calloc((size_t)tr.tmask + 1, sizeof(uint32_t));
    mpairs = hm_mallocarray((size_t)n_merges + 1, 2 * sizeof(uint32_t));
    if (!tr.wmap || !tr.pmap || !tr.tmap || !mpairs)
        goto out;
    for (i = 0; i < 256; i++) {
        uint8_t c = (uint8_t)i;
        if ((rc = tok_add(&tr, &c, 1, NULL, 0, &id)) < 0)
            goto out;
    }
    for (off = 0; off < len; off += k) {
        k = hm__gpt2_next_piece(s + off, len - off);
        if ((rc = add_word(&tr, off, k)) < 0)
            goto out;
    }
    for (w = 0; w < tr.n_words; w++)
        if ((rc = word_pairs(&tr, w, (int64_t)tr.words[w].count, UINT32_MAX)) < 0)
            goto out;
    /* every initial pair: record its words, then push */
    for (w = 0; w < tr.n_words; w++) {
        const uint32_t *sy = tr.syms + tr.words[w].start;
        for (j = 0; j + 1 < tr.words[w].len; j++) {
            struct pair *pr;
            p = pair_get(&tr, sy[j], sy[j + 1], false, &rc);
            pr = &tr.pairs[p];
            if (pr->n_words == 0 || pr->words[pr->n_words - 1] != w) {
                rc = GROW(pr->words, pr->n_words + 1, pr->cap_words);
                if (rc < 0)
                    goto out;
                pr->words[pr->n_words++] = w;
            }
        }
    }
    for (p = 0; p < tr.n_pairs; p++)
        if ((rc = heap_push(&tr, p)) < 0)
            goto out;
    while (n_done < n_merges && tr.n_heap > 0) {
        e = heap_pop(&tr);
        if (tr.pairs[e.pair].count <= 0)
            continue;
        if (e.count != tr.pairs[e.pair].count) { /* stale: counts only decrease */
            if ((rc = heap_push(&tr, e.pair)) < 0)
                goto out;
            continue;
        }
        a = (uint32_t)(tr.pairs[e.pair].key >> 32);
        b = (uint32_t)tr.pairs[e.pair].key;
        {
            const struct tok *ta = &tr.toks[a], *tb = &tr.toks[b];
            size_t na = ta->len, nb = tb->len;
            uint8_t *cat;
            if ((rc = GROW(tr.bytes, tr.n_bytes + 2 * (na + nb), tr.cap_bytes)) < 0)
                goto out;
            /* build the concatenation in scratch space past the used bytes */
            cat = tr.bytes + tr.n_bytes + na + nb;
            memcpy(cat, tr.bytes + tr.toks[a].off, na);
            memcpy(cat + na, tr.bytes + tr.toks[b].off, nb);
            found = tok_find(&tr, cat, na + nb);
            if (found >= 0) {
                id = (uint32_t)found;
            } else if ((rc = tok_add(&tr, cat, na + nb, NULL, 0, &id)) < 0) {
                goto out;
            }
        }
        mpairs[2 * n_done] = a;
        mpairs[2 * n_done + 1] = b;
        n_done++;
        tr.n_touched = 0;
        tr.merge_no = n_done;
        /* rewrite the words listed for the pair; word_pairs() may grow the pairs array
         * (so no pointer into it is kept) but never appends to this pair's list */
        {
            uint32_t nw = tr.pairs[e.pair].n_words;
            for (j = 0; j < nw; j++) {
                w = tr.pairs[e.pair].words[j];
                if (!word_has(&tr, w, a, b))
                    continue;
                if ((rc = word_pairs(&tr, w, -(int64_t)tr.words[w].count, id)) < 0)
                    goto out;
                word_merge(&tr, w, a, b, id);
                if ((rc = word_pairs(&tr, w, (int64_t)tr.words[w].count, id)) < 0)
                    goto out;
            }
            tr.pairs[e.pair].n_words = 0;
        }
        for (j = 0; j < tr.n_touched; j++)
            if (tr.pairs[tr.touched[j]].count > 0 && (rc = heap_push(&tr, tr.touched[j])) < 0)
                goto out;
    }

    /* the vocabulary: bytes, merged tokens in merge order, <|bos|>, <|eos|> */
    if ((rc = hm__tokenizer_data_bytes(&d)) < 0)
        goto out;
    rc = HM_ENOMEM;
    first_new = d->n_tokens;
    tk = hm_realloc(d->tokens, (size_t)(tr.n_toks) * sizeof(char *));
    if (!tk)
        goto out;
    d->tokens = tk;
    ty = hm_realloc(d->token_type, (size_t)(tr.n_toks) * sizeof(int32_t));
    if (!ty)
        goto out;
    d->token_type = ty;
    for (i = first_new; i < tr.n_toks; i++) {
        d->tokens[i] = tok_text(&tr, i, NULL, 0);
        if (!d->tokens[i])
            goto out;
        d->token_type[i] = HM_TOKEN_NORMAL;
        d->n_tokens = i + 1;
    }
    d->merges = hm_calloc(n_done ? n_done : 1, sizeof(char *));
    if (!d->merges)
        goto out;
    for (i = 0; i < n_done; i++) {
        d->merges[i] = tok_text(&tr, mpairs[2 * i], " ", mpairs[2 * i + 1]);
        if (!d->merges[i])
            goto out;
        d->n_merges = i + 1;
    }
    if ((rc = hm__tokenizer_data_add_specials(d)) < 0)
        goto out;
    *out = d;
    d = NULL;
    rc = HM_OK;
out:
    if (rc == HM_ENOMEM)
        hm_errmsg_set(em, rc, "bpe training: out of memory");
    hm_tokenizer_data_free(d);
    hm_free(mpairs);
    trainer_release(&tr);
    return rc;
}
