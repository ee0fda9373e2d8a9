/* squall — HTML form bodies: application/x-www-form-urlencoded and multipart/form-data
 * (RFC 7578), parsed as they arrive, in chunks of any size (docs/forms.md).
 *
 * This layer knows bytes and nothing of HTTP or sockets: a caller feeds it the body as it
 * comes (a whole buffer, or the chunks of a streamed request body) and is called back
 * with what it finds. Both parsers are push parsers in the way of llhttp: their callbacks
 * run inside sq_urlenc_feed/_finish and sq_multipart_feed/_finish, on the caller's thread.
 * A parser is used by one thread at a time; distinct parsers share nothing.
 *
 * Callbacks that receive something return:
 *   0               go on;
 *   SQ_FORM_PAUSE   stop here: feed returns how many bytes it consumed (the event
 *                   that paused counts as consumed); feed the rest, from that offset,
 *                   when ready (back-pressure) — the next feed resumes;
 *   a negative code abort: the parser fails with that code (feed returns it).
 * A callback must not destroy its parser; destroy it after feed or finish returns.
 *
 * Errors (negative, libuv's codes; sq_strerror() names them, and each parser keeps a
 * one-line reason, sq_urlenc_error() / sq_multipart_error()):
 *   UV_E2BIG    a limit of the options was passed (the reason names it)
 *   UV_EINVAL   a malformed urlencoded escape (strict mode only), a missing or malformed
 *               boundary, a bad argument
 *   UV_EFTYPE   sq_form_boundary: the Content-Type is not multipart/form-data
 *   UV_EPROTO   malformed multipart framing: a part header line that is not
 *               `name: value` CRLF (no name, no colon, a control character, a bare CR),
 *               a delimiter not followed by CRLF, a repeated Content-Disposition
 *   UV_ENOENT   a part without `Content-Disposition: form-data` and a `name` parameter
 *               (RFC 7578 §4.2)
 *   UV_EOF      finish: the body ended before the close delimiter `--boundary--`
 *   UV_ENOMEM   out of memory
 * Once a parser failed, every later feed and finish returns the same code.
 */
#ifndef SQUALL_FORM_H
#define SQUALL_FORM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <jansson.h>

#include "common.h"

/* What a callback returns to pause its parser (see above). */
#define SQ_FORM_PAUSE 1

/* ==== application/x-www-form-urlencoded (WHATWG URL, §5.1 "urlencoded parsing") ====
 *
 * The body is split on '&'; an empty piece ("a&&b", a trailing '&') is skipped; a piece
 * is split at its first '=' into name and value (no '=': the value is empty); in both,
 * '+' is a space and %XX a byte. A malformed escape ("%zz", "%4", a '%' at the end) is
 * left as written, as WHATWG and Python's urllib.parse do — or, with `strict`, fails
 * with UV_EINVAL. %00 is a NUL byte like any other: names and values are delivered with
 * their length. Bytes are not checked as UTF-8 (sq_urlenc_parse_json does). */

typedef struct sq_urlenc sq_urlenc_t;

/* Limits of a urlencoded parser; fill with sq_urlenc_opts_init() and change what you
 * need. Grows by squall's rule (common.h): `size` first. */
typedef struct sq_urlenc_opts {
    size_t size;              /* sizeof the caller's struct: set by sq_urlenc_opts_init */
    size_t max_fields;        /* fields (non-empty pieces); 1000 */
    size_t max_name_bytes;    /* a name, decoded; 4096 */
    size_t max_value_bytes;   /* a value, decoded; 1 MiB */
    uint64_t max_total_bytes; /* the body as fed; 2 MiB */
    bool strict;              /* a malformed escape fails (UV_EINVAL); false */
} sq_urlenc_opts_t;

/* What sq_urlenc_opts_init calls. Call sq_urlenc_opts_init. */
SQ_EXTERN void sq_urlenc_opts_init_sized(sq_urlenc_opts_t *opts, size_t size);
/* Fills opts with the defaults above and sets opts->size. */
static inline void sq_urlenc_opts_init(sq_urlenc_opts_t *opts)
{
    sq_urlenc_opts_init_sized(opts, sizeof(*opts));
}

/* A field, decoded; called from inside sq_urlenc_feed and sq_urlenc_finish. name and
 * value are NUL-terminated (a %00 inside ends the C string early: use the lengths) and
 * borrowed until the callback returns. Returns 0, SQ_FORM_PAUSE or a negative code (see
 * the top of this header). */
typedef int (*sq_urlenc_field_cb)(sq_urlenc_t *p, const char *name, size_t name_len,
                                  const char *value, size_t value_len, void *data);

/* Creates a parser calling cb (not NULL) for each field, with `data`. opts is copied;
 * NULL means the defaults. Returns 0, UV_EINVAL (cb NULL, opts->size 0), UV_ENOTSUP
 * (opts from a newer header setting a field this library lacks) or UV_ENOMEM. */
SQ_EXTERN int sq_urlenc_create(sq_urlenc_t **out, const sq_urlenc_opts_t *opts,
                               sq_urlenc_field_cb cb, void *data);
/* Feeds the next len bytes of the body (a field may be split anywhere, inside an escape
 * too). Returns the bytes consumed — len, or fewer when a callback paused — or a
 * negative code. */
SQ_EXTERN ssize_t sq_urlenc_feed(sq_urlenc_t *p, const char *buf, size_t len);
/* The body is complete: delivers the last field. Returns 0 or a negative code. */
SQ_EXTERN int sq_urlenc_finish(sq_urlenc_t *p);
/* The reason of the parser's error, one line ("" while there is none). Static storage. */
SQ_EXTERN const char *sq_urlenc_error(const sq_urlenc_t *p);
/* Frees the parser. NULL is ignored. */
SQ_EXTERN void sq_urlenc_destroy(sq_urlenc_t *p);

/* Parses a whole body into a new JSON object of strings, *out (the caller owns the
 * reference). A repeated name: the last value wins, as FastAPI's Form does for a scalar
 * (to see every value, use the parser). Bytes that are not UTF-8 become U+FFFD, as WHATWG's
 * "UTF-8 decode without BOM" does. opts as for sq_urlenc_create. Returns 0 or a negative
 * code as sq_urlenc_feed; on an error *out is NULL. */
SQ_EXTERN int sq_urlenc_parse_json(const char *buf, size_t len, const sq_urlenc_opts_t *opts,
                                   json_t **out);

/* ==== multipart/form-data (RFC 7578; framing of RFC 2046 §5.1) ==== */

/* The longest boundary (RFC 2046 §5.1.1). */
#define SQ_FORM_BOUNDARY_MAX 70

/* Reads the boundary parameter of a Content-Type header value ("multipart/form-data;
 * boundary=xyz", the value quoted or not, RFC 9110 §5.6.6; parameter names and the media
 * type in any case) into buf (NUL-terminated; SQ_FORM_BOUNDARY_MAX + 1 bytes is always
 * enough). The boundary must be 1-70 characters of RFC 2046 §5.1.1's bchars, not ending
 * in a space. Returns its length; UV_EFTYPE (not multipart/form-data), UV_EINVAL (no
 * boundary, a repeated one, a malformed one or a malformed header) or UV_ENOBUFS (buf too
 * small). */
SQ_EXTERN ssize_t sq_form_boundary(const char *content_type, char *buf, size_t size);

typedef struct sq_multipart sq_multipart_t;

/* Limits of a multipart parser; fill with sq_multipart_opts_init(). Grows by squall's
 * rule (common.h): `size` first. */
typedef struct sq_multipart_opts {
    size_t size;              /* sizeof the caller's struct: set by sq_multipart_opts_init */
    size_t max_parts;         /* parts in the body; 1000 */
    size_t max_header_bytes;  /* a part's header block, its CRLFs included; 8 KiB */
    size_t max_headers;       /* header lines of a part; 16 */
    size_t max_field_bytes;   /* data of a part without filename (a field, which a caller
                                 would hold in memory); 1 MiB. Parts with a filename are
                                 bounded only by max_total_bytes */
    uint64_t max_total_bytes; /* the body as fed, preamble and epilogue included; 1 GiB.
                                 UINT64_MAX: none */
} sq_multipart_opts_t;

/* What sq_multipart_opts_init calls. Call sq_multipart_opts_init. */
SQ_EXTERN void sq_multipart_opts_init_sized(sq_multipart_opts_t *opts, size_t size);
/* Fills opts with the defaults above and sets opts->size. */
static inline void sq_multipart_opts_init(sq_multipart_opts_t *opts)
{
    sq_multipart_opts_init_sized(opts, sizeof(*opts));
}

/* A header line of a part: name as sent, value without surrounding whitespace (a folded
 * line is joined with spaces). NUL-terminated. */
typedef struct sq_form_header {
    const char *name;
    const char *value;
} sq_form_header_t;

/* A part as its headers describe it. Every pointer is NUL-terminated and borrowed from
 * the parser until the part's .part_end returns (or the parser fails). */
typedef struct sq_form_part {
    size_t index;     /* 0 for the first part */
    const char *name; /* Content-Disposition's name, unquoted */
    size_t name_len;
    const char *filename; /* its filename, unquoted; NULL when absent (a field). As
                             sent: the caller must not use it as a path */
    size_t filename_len;
    const char *content_type;        /* the part's Content-Type value; NULL when absent (then
                                        text/plain, RFC 7578 §4.4) */
    const sq_form_header_t *headers; /* every header line, in order */
    size_t nheaders;
} sq_form_part_t;

/* What a multipart parser calls, every member optional, from inside sq_multipart_feed and
 * sq_multipart_finish (a parser's callbacks are the exception to common.h's "later, from
 * the loop"). A const table (wslay's and llhttp's way); the parser copies it. */
typedef struct sq_multipart_cbs {
    /* A part begins: its headers are read. Returns 0, SQ_FORM_PAUSE or a negative code. */
    int (*part_begin)(sq_multipart_t *mp, const sq_form_part_t *part, void *data);
    /* The next bytes of the current part's content, in order, never empty. at points
     * into the buffer given to sq_multipart_feed where it can (zero-copy), else into the
     * parser (the first bytes of a delimiter that turned out to be data); borrowed until
     * the callback returns. A part's data comes in as many calls as it takes: the parser
     * never holds a part. Returns 0, SQ_FORM_PAUSE or a negative code. */
    int (*part_data)(sq_multipart_t *mp, const char *at, size_t len, void *data);
    /* The current part is complete (its delimiter was read). Returns 0, SQ_FORM_PAUSE or a
     * negative code. */
    int (*part_end)(sq_multipart_t *mp, void *data);
    /* The parser failed: once, with the code feed or finish is about to return and its
     * one-line reason (static storage), also when a callback's negative code aborted it.
     * A part that began and did not end ends here: no .part_end follows. */
    void (*error)(sq_multipart_t *mp, int status, const char *reason, void *data);
} sq_multipart_cbs_t;

/* What sq_multipart_create calls. Call sq_multipart_create. */
SQ_EXTERN int sq_multipart_create_sized(sq_multipart_t **out, const char *boundary,
                                        const sq_multipart_opts_t *opts,
                                        const sq_multipart_cbs_t *cbs, size_t cbs_size, void *data);
/* Creates a parser of a body whose parts are delimited by `boundary` (as
 * sq_form_boundary gives it; copied), calling cbs (copied; NULL: none) with `data`. opts
 * is copied; NULL means the defaults. Returns 0, UV_EINVAL (a boundary that is not 1-70
 * bchars, opts->size 0), UV_ENOTSUP (a table or opts from a newer header setting
 * something this library lacks) or UV_ENOMEM. */
static inline int sq_multipart_create(sq_multipart_t **out, const char *boundary,
                                      const sq_multipart_opts_t *opts,
                                      const sq_multipart_cbs_t *cbs, void *data)
{
    return sq_multipart_create_sized(out, boundary, opts, cbs, cbs ? sizeof(*cbs) : 0, data);
}

/* Feeds the next len bytes of the body: a delimiter may be split across feeds at any
 * byte. The preamble (before the first delimiter) and the epilogue (after the close
 * delimiter) are read and ignored; so is transport padding (spaces and tabs after a
 * boundary). Returns the bytes consumed — len, or fewer when a callback paused, in which
 * case feed buf + consumed next — or a negative code (the error callback has run). */
SQ_EXTERN ssize_t sq_multipart_feed(sq_multipart_t *mp, const char *buf, size_t len);
/* The body is complete. Returns 0 when the close delimiter was read; UV_EOF when it was
 * not (the error callback runs); the parser's error if it failed before. */
SQ_EXTERN int sq_multipart_finish(sq_multipart_t *mp);
/* 1 when a callback paused the parser and no feed has resumed it yet, else 0. */
SQ_EXTERN int sq_multipart_is_paused(const sq_multipart_t *mp);
/* The reason of the parser's error, one line ("" while there is none). Static storage. */
SQ_EXTERN const char *sq_multipart_error(const sq_multipart_t *mp);
/* Frees the parser. NULL is ignored. Not from one of its callbacks. */
SQ_EXTERN void sq_multipart_destroy(sq_multipart_t *mp);

#endif
