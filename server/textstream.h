/*
 * textstream.h - stop sequences over streamed text and SSE frame building.
 *
 * The stop matcher sees generated text piece by piece (complete UTF-8 characters, as
 * hm_utf8_stream emits them) and releases only text that can no longer be the start
 * of a stop sequence; a stop sequence that spans several tokens is found whole and
 * never shown to the client.
 *
 *     struct hm_stopper st;
 *     hm_stopper_init(&st, stops, n_stop);       // stops borrowed; must outlive st
 *     bool hit;
 *     hm_stopper_push(&st, "Hel", 3, &out, &hit); // appends releasable text to out
 *     hm_stopper_finish(&st, &out);               // end of generation: release the rest
 *     hm_stopper_release(&st);
 *
 * Any thread (one owner at a time).
 */
#ifndef HM_SERVER_TEXTSTREAM_H
#define HM_SERVER_TEXTSTREAM_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "hm/buf.h"

struct hm_stopper {
    char *const *stops;   /* borrowed, n_stop NUL-terminated non-empty strings */
    size_t n_stop;
    struct hm_buf held;   /* text that may still be the start of a stop sequence */
};

void hm_stopper_init(struct hm_stopper *st, char *const *stops, size_t n_stop);
void hm_stopper_release(struct hm_stopper *st);
/* Appends len bytes of text; appends to out the text now known not to be part of a
 * stop sequence. On a match sets *stopped, appends the text before the match and drops
 * the rest (the caller ends the sequence). HM_ENOMEM / HM_ETOOBIG from out. */
int hm_stopper_push(struct hm_stopper *st, const char *text, size_t len, struct hm_buf *out,
                    bool *stopped);
/* Releases the held-back text (generation ended for another reason). */
int hm_stopper_finish(struct hm_stopper *st, struct hm_buf *out);

/* SSE: appends "data: <compact json>\n\n" to out. */
int hm_sse_append_json(struct hm_buf *out, const json_t *j);
/* SSE: appends "data: [DONE]\n\n". */
int hm_sse_append_done(struct hm_buf *out);
/* SSE: appends a comment line ": <text>\n\n" (keep-alive). */
int hm_sse_append_comment(struct hm_buf *out, const char *text);

/* Appends bytes to out replacing invalid UTF-8 by U+FFFD (for token strings in
 * logprobs, which may be parts of characters). */
int hm_utf8_append_lossy(struct hm_buf *out, const unsigned char *bytes, size_t len);

#endif
