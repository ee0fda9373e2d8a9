/* squall — the request a handler receives.
 *
 * Every pointer returned here is borrowed: it stays valid until the response is finished.
 * Strings are NUL-terminated. Functions are for the loop thread only.
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

/* "GET", "POST", ... as received. */
SQ_EXTERN const char *sq_req_method(const sq_req_t *req);
SQ_EXTERN sq_method_t sq_req_method_id(const sq_req_t *req);
/* The request target as received ("/items/5?q=x"). */
SQ_EXTERN const char *sq_req_target(const sq_req_t *req);
/* The path, percent-decoded, without the query ("/items/5"). */
SQ_EXTERN const char *sq_req_path(sq_req_t *req);
/* The raw query string after '?', or "" when there is none. */
SQ_EXTERN const char *sq_req_query_string(const sq_req_t *req);
/* 0 for HTTP/1.0, 1 for HTTP/1.1. */
SQ_EXTERN int sq_req_version_minor(const sq_req_t *req);

/* The first header named `name` (case-insensitive), or NULL. */
SQ_EXTERN const char *sq_req_header(const sq_req_t *req, const char *name);
SQ_EXTERN size_t sq_req_header_count(const sq_req_t *req);
/* The i-th header in arrival order; returns UV_EINVAL when i is out of range. */
SQ_EXTERN int sq_req_header_at(const sq_req_t *req, size_t i, const char **name,
                               const char **value);

/* The first query parameter `name`, percent- and '+'-decoded, or NULL when absent
 * ("" when present without a value). A malformed escape, or %00, stays as sent: `q=%zz`
 * gives "%zz" (as Python's urllib.parse does). */
SQ_EXTERN const char *sq_req_query(sq_req_t *req, const char *name);

/* A path parameter captured by the route pattern, percent-decoded, or NULL. */
SQ_EXTERN const char *sq_req_param(const sq_req_t *req, const char *name);
/* An {x:int} parameter's value. Returns 0, or UV_ENOENT when there is no such parameter. */
SQ_EXTERN int sq_req_param_int(const sq_req_t *req, const char *name, int64_t *out);

/* The request body (de-chunked), and its length. Never NULL; "" when empty. */
SQ_EXTERN const char *sq_req_body(const sq_req_t *req, size_t *len);
/* The body parsed as JSON: a new reference the caller must json_decref, or NULL with
 * `error` (may be NULL) filled in. */
SQ_EXTERN json_t *sq_req_json(const sq_req_t *req, void *json_error /* json_error_t* */);

/* The peer's address, written to `buf` as text ("127.0.0.1:53211", "[::1]:4000", "unix").
 * Returns 0, or a negative code when the client has gone. */
SQ_EXTERN int sq_req_peer(const sq_req_t *req, char *buf, size_t len);

/* 1 once the client has gone; the response can no longer reach it. */
SQ_EXTERN int sq_req_is_aborted(const sq_req_t *req);

/* One pointer of the handler's own, e.g. its context for a later answer or .aborted. */
SQ_EXTERN void sq_req_set_data(sq_req_t *req, void *data);
SQ_EXTERN void *sq_req_data(const sq_req_t *req);

/* The loop this request is served on. */
SQ_EXTERN uv_loop_t *sq_req_loop(const sq_req_t *req);

#endif
