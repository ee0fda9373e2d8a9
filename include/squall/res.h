/* squall — the response a handler finishes.
 *
 * A response is finished exactly once: by one of the sq_res_send* calls, by sq_res_end
 * after sq_res_start, or by a take-over (WebSocket upgrade). Every finishing call returns
 *   0                 the bytes were queued; the response is released;
 *   UV_ECANCELED      the client had gone; the response is released all the same (the
 *                     call is a harmless no-op);
 *   UV_ENOMEM         the bytes could not be queued; the connection is closed and the
 *                     response released;
 *   UV_EINVAL         a status outside 200-999 (1xx are interim answers, 101 belongs to the
 *                     WebSocket take-over), a content type with CR, LF or another control
 *                     character, or a NULL json: nothing was sent and the response is NOT
 *                     finished: the handler still owns it and must finish it;
 *   UV_EMSGSIZE       (sq_res_send, sq_res_send_ref) a length over INT64_MAX: not finished;
 *   SQ_EALREADY_SENT  it was already finished (or, for sq_res_send*, its head was sent by
 *                     sq_res_start).
 * After a call that released the response neither req nor res may be touched.
 * The response belongs to squall and is lent to the handler with its request (req.h)
 * until a finishing call releases it. Everything a call here is given — bodies, header
 * names and values, content types, a borrowed json — is copied or encoded before the call
 * returns, except the body of sq_res_send_ref.
 * `Date`, `Server`, `Content-Length` (or chunked framing) and `Connection` are written by
 * squall. Functions are for the loop thread only.
 */
#ifndef SQUALL_RES_H
#define SQUALL_RES_H

#include "common.h"
#include "router.h"

typedef struct json_t json_t;

/* Adds a response header; name and value are copied. Returns 0; SQ_EALREADY_SENT after
 * the head went out (sq_res_start) or the response was finished; UV_EINVAL for an empty
 * name, a name or value containing CR or LF (response splitting) or another control
 * character but tab, a name with ':' or blanks, or a framing header squall writes itself
 * — Content-Length, Transfer-Encoding or Connection, in any case (`Connection: upgrade`
 * is let through: RFC 9110 §7.8 pairs it with an `Upgrade` header); or UV_ENOMEM. No
 * failure finishes the response. */
SQ_EXTERN int sq_res_header(sq_res_t *res, const char *name, const char *value);

/* Sends a whole response; `body` (len bytes, may be NULL when len is 0) is copied.
 * `content_type` may be NULL (no Content-Type header); one with CR or LF would split the
 * response (RFC 9110 §5.5) and is refused with UV_EINVAL. Bodies of 4 GiB and more are
 * sent whole. Returns as above. */
SQ_EXTERN int sq_res_send(sq_res_t *res, int status, const char *content_type, const void *body,
                          size_t len);
/* As sq_res_send, but the body is not copied: it is borrowed until free_cb(body,
 * free_data) (may be NULL) runs, exactly once, on the loop thread: after the write
 * completed, or when the connection closed first — from the loop, or inside the squall
 * call that closed it (sq_server_destroy, or a later call on the connection that failed
 * for want of memory); or before this call returns when nothing of the body is sent:
 * any error (UV_EINVAL and SQ_EALREADY_SENT included), a HEAD request, a 204 or 304
 * status, or len 0. */
SQ_EXTERN int sq_res_send_ref(sq_res_t *res, int status, const char *content_type,
                              const void *body, size_t len, sq_free_cb free_cb, void *free_data);
/* Sends `json` as application/json. _new steals the reference (even on failure), the
 * plain call borrows it. sq_res_send_json(res, status, NULL) returns UV_EINVAL and does
 * not finish res; sq_res_send_json_new(res, status, NULL), what a failed json_pack()
 * gives, answers 500 instead, so `sq_res_send_json_new(res, 200, json_pack(...))` always
 * finishes res. A value that cannot be encoded is answered 500. */
SQ_EXTERN int sq_res_send_json_new(sq_res_t *res, int status, json_t *json);
SQ_EXTERN int sq_res_send_json(sq_res_t *res, int status, const json_t *json);
/* Sends {"detail": detail} as JSON (FastAPI's error shape); detail is copied, NULL gives
 * the status's reason phrase. Out of memory, sends a 500 with detail "Internal Server
 * Error" instead. Returns as above (UV_EINVAL for a status outside 200-999). */
SQ_EXTERN int sq_res_send_error(sq_res_t *res, int status, const char *detail);

/* Streaming: sends the status line and headers now; the body follows with sq_res_write
 * (chunked for HTTP/1.1, close-delimited for HTTP/1.0) and ends with sq_res_end.
 * sq_res_start does not finish res. Returns
 *   0                 the head is queued: write the body, then sq_res_end;
 *   UV_EINVAL         a status outside 200-999, or a content type with a CR, LF or other
 *                     control character: nothing was sent; res is as before (call
 *                     sq_res_start again, or finish it with sq_res_send*);
 *   UV_ECANCELED      the client has gone: nothing was sent, sq_res_write returns
 *                     SQ_ENOTSTREAMING, and the handler must still call sq_res_end, which
 *                     returns UV_ECANCELED and releases the response;
 *   UV_ENOMEM         the head could not be queued: the connection is closed; the handler
 *                     must still call sq_res_end (UV_ECANCELED, releases the response);
 *   SQ_EALREADY_SENT  sq_res_start already succeeded (res is unchanged). */
SQ_EXTERN int sq_res_start(sq_res_t *res, int status, const char *content_type);

/* Called once the bytes of one sq_res_write have left squall for the kernel (status 0), or
 * could not (negative status: UV_ECANCELED when the connection closed first, or libuv's
 * write error). Runs once, on the loop thread, after sq_res_write returned: from the
 * loop, or — with UV_ECANCELED — inside a later squall call that closed the connection
 * (sq_server_destroy, or a later sq_res_write or sq_res_end on the same response that
 * failed for want of memory). `res` is still valid during the call even if the response
 * was finished meanwhile (the write holds it); do not finish it from here unless the
 * handler still owns it. */
typedef void (*sq_res_write_cb)(sq_res_t *res, int status, void *data);

/* Queues `len` bytes (copied) of a streaming body. `cb` (may be NULL) gets `cb_data`
 * (borrowed, never freed). A handler that does
 * not want to buffer without bound waits for cb, or checks sq_res_queued_bytes, before
 * writing more. Never finishes res. Returns
 *   0                 queued; cb runs once, later;
 *   UV_ECANCELED      the client has gone: cb is not called; end with sq_res_end (which
 *                     returns UV_ECANCELED and releases the response);
 *   UV_ENOMEM         the bytes could not be queued: the connection is closed and cb is
 *                     not called; end with sq_res_end (UV_ECANCELED);
 *   SQ_ENOTSTREAMING  sq_res_start has not succeeded on res. */
SQ_EXTERN int sq_res_write(sq_res_t *res, const void *data, size_t len, sq_res_write_cb cb,
                           void *cb_data);
/* As sq_res_write, but `data` is not copied: it is borrowed until free_cb(data,
 * free_data) (may be NULL: static bytes) runs, exactly once, on the loop thread — after
 * the bytes were written, or when the connection closed first (from the loop, or inside
 * the squall call that closed it), or before this call returns when nothing of it is
 * queued: any error, len 0, or a HEAD request. Many responses may share one buffer (an
 * event sent to every subscriber of a stream). Returns as sq_res_write. */
SQ_EXTERN int sq_res_write_ref(sq_res_t *res, const void *data, size_t len, sq_free_cb free_cb,
                               void *free_data, sq_res_write_cb cb, void *cb_data);
/* Bytes queued by this connection and not yet handed to the kernel; 0 once the client
 * has gone. */
SQ_EXTERN size_t sq_res_queued_bytes(const sq_res_t *res);
/* Ends a streaming response (the last chunk). Returns
 *   0                 the end is queued; res is released;
 *   UV_ECANCELED      the client has gone (also when sq_res_start or sq_res_write said so);
 *                     res is released all the same;
 *   UV_ENOMEM         the end could not be queued: the connection is closed, res released;
 *   SQ_ENOTSTREAMING  sq_res_start has not succeeded and the client is still there: res
 *                     is NOT finished (finish it with sq_res_send*);
 *   SQ_EALREADY_SENT  res was already finished. */
SQ_EXTERN int sq_res_end(sq_res_t *res);

/* The request this response answers, borrowed as the response is (req.h). */
SQ_EXTERN sq_req_t *sq_res_req(sq_res_t *res);

/* ---- cookies (RFC 6265) and redirects ---- */

typedef enum sq_samesite {
    SQ_SAMESITE_UNSET = 0, /* no SameSite attribute (browsers then take Lax) */
    SQ_SAMESITE_LAX,
    SQ_SAMESITE_STRICT,
    SQ_SAMESITE_NONE,      /* refused without .secure, as browsers refuse it */
} sq_samesite_t;

/* A cookie's attributes; fill with sq_cookie_opts_init (squall's rule, common.h). */
typedef struct sq_cookie_opts {
    size_t size;
    int64_t max_age;     /* Max-Age in seconds; -1 (default): none (a session cookie);
                            0 deletes the cookie */
    int64_t expires;     /* Expires, Unix time in seconds; 0 (default): none; past year
                            9999: the end of 9999; negative: refused */
    const char *path;    /* Path; NULL (default): none */
    const char *domain;  /* Domain; NULL (default): none (this host only) */
    int secure;          /* Secure */
    int http_only;       /* HttpOnly */
    sq_samesite_t same_site;
    int reserved0;
} sq_cookie_opts_t;
SQ_EXTERN void sq_cookie_opts_init_sized(sq_cookie_opts_t *opts, size_t size);
static inline void sq_cookie_opts_init(sq_cookie_opts_t *opts)
{
    sq_cookie_opts_init_sized(opts, sizeof(*opts));
}

/* Adds a Set-Cookie header (RFC 6265 §4.1). The name must be a token (RFC 9110 §5.6.2),
 * the value cookie-octets (no blank, '"', ',', ';', '\\' or control; an empty value is
 * fine), Path any visible characters but ';', Domain letters, digits, '-' and '.': each
 * is checked, so nothing can split the header. opts NULL: defaults. Returns 0, UV_EINVAL
 * (a name, value, path or domain refused; SameSite=None without Secure), or as
 * sq_res_header. */
SQ_EXTERN int sq_res_set_cookie(sq_res_t *res, const char *name, const char *value,
                                const sq_cookie_opts_t *opts);

/* Finishes the response as a redirect: `status` 301, 302, 303, 307 or 308 with
 * Location `location` (a URI reference, RFC 9110 §10.2.2: visible US-ASCII only —
 * percent-encode the rest; checked) and an empty body. Returns as sq_res_send, or
 * UV_EINVAL for another status or a location refused (the response stays open). */
SQ_EXTERN int sq_res_redirect(sq_res_t *res, int status, const char *location);

#endif
