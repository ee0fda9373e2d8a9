/* squall — the request a handler receives.
 *
 * The request belongs to squall. A handler borrows it, with its response, from the call
 * of the handler until the handler finishes the response (res.h: the finishing call, or
 * a take-over) — even if the client has gone meanwhile. Every pointer returned here is
 * borrowed from the request the same way: it stays valid until the response is finished,
 * then the request's memory is reused for the next request; copy what you keep longer.
 * The caller never frees one. Exceptions are named: sq_req_json's new reference, the
 * caller's own buffer of sq_req_peer, the pointer of sq_req_set_data (the caller's), and
 * sq_req_loop's loop. A WebSocket upgrade request lends itself for the .accept and .open
 * calls only (ws.h). Strings are NUL-terminated. Functions are for the loop thread only.
 */
#ifndef SQUALL_REQ_H
#define SQUALL_REQ_H

#include "common.h"
#include "router.h"

typedef struct json_t json_t;

typedef enum {
    SQ_METHOD_OTHER = 0,
    SQ_METHOD_GET,
    SQ_METHOD_HEAD,
    SQ_METHOD_POST,
    SQ_METHOD_PUT,
    SQ_METHOD_DELETE,
    SQ_METHOD_PATCH,
    SQ_METHOD_OPTIONS,
} sq_method_t;

/* "GET", "POST", ... as received. Static storage: valid for as long as the program runs. */
SQ_EXTERN const char *sq_req_method(const sq_req_t *req);
SQ_EXTERN sq_method_t sq_req_method_id(const sq_req_t *req);
/* The request target as received ("/items/5?q=x"). Borrowed (see the top). */
SQ_EXTERN const char *sq_req_target(const sq_req_t *req);
/* The path, percent-decoded, without the query ("/items/5"). Borrowed (see the top). The
 * first call decodes it into the request's memory (a malformed escape stays as sent; out
 * of memory, the path is given undecoded); later calls return the same pointer. */
SQ_EXTERN const char *sq_req_path(sq_req_t *req);
/* The raw query string after '?', or "" when there is none. Borrowed (see the top). */
SQ_EXTERN const char *sq_req_query_string(const sq_req_t *req);
/* 0 for HTTP/1.0, 1 for HTTP/1.1. */
SQ_EXTERN int sq_req_version_minor(const sq_req_t *req);

/* The value of the first header named `name` (case-insensitive; `name` is only read), or
 * NULL. Borrowed (see the top): the value's bytes as received, without the blanks around
 * them. */
SQ_EXTERN const char *sq_req_header(const sq_req_t *req, const char *name);
SQ_EXTERN size_t sq_req_header_count(const sq_req_t *req);
/* The i-th header in arrival order: *name and *value are borrowed (see the top). Returns
 * 0, or UV_EINVAL when i is out of range (nothing is set). */
SQ_EXTERN int sq_req_header_at(const sq_req_t *req, size_t i, const char **name,
                               const char **value);

/* The first query parameter `name`, percent- and '+'-decoded, or NULL when absent
 * ("" when present without a value). A malformed escape, or %00, stays as sent: `q=%zz`
 * gives "%zz" (as Python's urllib.parse does). Borrowed (see the top): the first call
 * decodes every parameter into the request's memory (out of memory: NULL, as if
 * absent). */
SQ_EXTERN const char *sq_req_query(sq_req_t *req, const char *name);

/* A path parameter captured by the route pattern, percent-decoded, or NULL. Borrowed (see
 * the top). */
SQ_EXTERN const char *sq_req_param(const sq_req_t *req, const char *name);
/* An {x:int} parameter's value into *out. Returns 0, or UV_ENOENT when there is no such
 * parameter or it is not an {x:int} one (*out is not set). */
SQ_EXTERN int sq_req_param_int(const sq_req_t *req, const char *name, int64_t *out);

/* The request body (de-chunked), and its length in *len (len may be NULL). Never NULL; ""
 * when empty. Borrowed (see the top). The body may hold NUL bytes: *len counts it. */
SQ_EXTERN const char *sq_req_body(const sq_req_t *req, size_t *len);
/* The body parsed as JSON: a new reference, the caller's, which it must json_decref (it
 * outlives the request), or NULL with `error` (may be NULL) filled in. */
SQ_EXTERN json_t *sq_req_json(const sq_req_t *req, void *json_error /* json_error_t* */);

/* The checked inputs of a route's declared operation (schema.h, sq_op_t): the struct of
 * op->input_size bytes the declared path, query and body fields were bound into (zeroed
 * first, so an absent optional field without a default reads as 0/NULL), or NULL when
 * the operation binds nothing or the route declares no operation. Borrowed (see the
 * top); its strings and arrays are borrowed from the values sq_req_input_json gives. */
SQ_EXTERN const void *sq_req_input(const sq_req_t *req);
/* The checked values of one part of the operation's inputs as a JSON object: "path",
 * "query" (the declared parameters, converted: {"item_id": 5}) or "body" (the validated
 * body: known members only, defaults filled in; JSON null for an absent optional body).
 * Borrowed (see the top; json_incref to keep it longer). NULL when the operation does
 * not declare that part, or the route declares no operation. */
SQ_EXTERN const json_t *sq_req_input_json(const sq_req_t *req, const char *part);

/* The value of the request's cookie `name` (RFC 6265 §5.4: the Cookie header(s) as
 * browsers send them, "a=1; b=2"), without the double quotes around it if it has them,
 * or NULL. With two of one name the first is given (browsers put the most specific
 * first). Pairs without '=' are skipped. Borrowed (see the top). */
SQ_EXTERN const char *sq_req_cookie(sq_req_t *req, const char *name);

/* A before hook that returned SQ_PAUSE lets the request go on: the next hook, then the
 * handler, run from the loop (on its next turn, not inside this call). Returns 0;
 * UV_EINVAL when no hook is waiting; SQ_EALREADY_SENT once res is finished; UV_ECANCELED
 * when the client has gone — squall then finishes res itself (nothing is sent) and the
 * handler never runs. */
SQ_EXTERN int sq_req_next(sq_req_t *req);

/* When the request's first byte was read: uv_hrtime() (nanoseconds, monotonic), for
 * timing. */
SQ_EXTERN uint64_t sq_req_start_ns(const sq_req_t *req);

/* The request's id: a number unique within the process (one counter for every server),
 * given when its first byte was read; for logs and an X-Request-Id header. */
SQ_EXTERN uint64_t sq_req_id(const sq_req_t *req);

/* ---- a body read as a stream (sq_handler_t.stream_body) ----
 *
 * The callback gets the body piece by piece: status 0 with `len` bytes (borrowed for the
 * call only; a piece is what arrived since the last one, up to about 128 KiB), then once UV_EOF (data NULL) at its end; or, instead of UV_EOF, an error
 * that ends it: UV_E2BIG (past the route's stream_body_max: answer 413), UV_ETIMEDOUT
 * (the client sent nothing for body_timeout_ms: answer 408), UV_ECONNRESET
 * (the client went: finish the response, which returns UV_ECANCELED; the route's
 * .aborted runs after it only if the response is still not finished). It runs on the loop, from the loop, never inside a
 * squall call (not inside sq_req_body_read or sq_req_body_resume), and not again once the
 * response is finished: a handler may answer before the whole body came (a refused
 * upload); the connection then closes after the answer, as the rest of the body is not
 * read. Back-pressure: sq_req_body_pause stops the pieces (squall then buffers at most
 * 64 KiB plus max_pipeline_bytes and stops reading the socket) until
 * sq_req_body_resume; while paused, body_timeout_ms does not run. While reading, it is a
 * silence timeout: each piece gives the client body_timeout_ms more.
 * On a request whose body was buffered (any other route or method) the callback gets the
 * whole body as one piece, then UV_EOF. */
typedef void (*sq_body_cb)(sq_req_t *req, int status, const char *data, size_t len, void *ud);
/* Starts reading the body into cb (ud is borrowed). Returns 0; UV_EALREADY when a reader
 * is set already; SQ_EALREADY_SENT once the response is finished; UV_ECANCELED when the
 * client has gone. */
SQ_EXTERN int sq_req_body_read(sq_req_t *req, sq_body_cb cb, void *ud);
SQ_EXTERN void sq_req_body_pause(sq_req_t *req);
SQ_EXTERN void sq_req_body_resume(sq_req_t *req);

/* The peer's address, written to the caller's `buf` as text, NUL-terminated and cut to
 * `len` bytes ("127.0.0.1:53211", "[::1]:4000", "unix"; 64 bytes always suffice).
 * Returns 0; UV_ECANCELED when the client has gone (the connection was let go); or
 * libuv's error from getpeername(2) (UV_ENOTCONN, ...). On an error buf is not written. */
SQ_EXTERN int sq_req_peer(const sq_req_t *req, char *buf, size_t len);

/* 1 once the client has gone; the response can no longer reach it. */
SQ_EXTERN int sq_req_is_aborted(const sq_req_t *req);

/* One pointer of the handler's own, e.g. its context for a later answer or .aborted;
 * squall only keeps it (never frees it). Cleared for every new request. */
SQ_EXTERN void sq_req_set_data(sq_req_t *req, void *data);
SQ_EXTERN void *sq_req_data(const sq_req_t *req);

/* The loop this request is served on (the server's). */
SQ_EXTERN uv_loop_t *sq_req_loop(const sq_req_t *req);

#endif
