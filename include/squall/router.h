/* squall — the application: routes bound to Tornado-like handler structs.
 *
 *     static void item_get(sq_req_t *req, sq_res_t *res, void *data) { ... }
 *     static const sq_handler_t items = { .get = item_get };
 *     sq_app_route(app, "/items/{item_id:int}", &items, NULL);
 *
 * Patterns are matched segment by segment, in registration order (the first route whose
 * shape matches wins, as in Starlette). A segment is a literal, `{name}` (any non-empty
 * segment, percent-decoded), `{name:int}` (a signed 64-bit integer written as an
 * optional '-' and decimal digits, nothing else; a segment that is not one gives 422 with
 * FastAPI's detail shape), `{name:path}` (the rest of the path, slashes included; last
 * segment only) or `*` (the same, unnamed).
 * A route whose handler has no callback for the method is passed over, and the next
 * route of a matching shape is tried. An unknown path gets 404; a known path that no
 * route serves for the method gets 405, with an `Allow` header naming the methods of
 * every route the path fits. HEAD falls back to .get with the body left out.
 */
#ifndef SQUALL_ROUTER_H
#define SQUALL_ROUTER_H

#include "common.h"

typedef struct sq_app_s sq_app_t;
typedef struct sq_req_s sq_req_t;
typedef struct sq_res_s sq_res_t;

/* A request handler. Runs on the loop thread of the server that read the request, from
 * the loop (when the request has been read, or, for a pipelined one, once the response
 * before it was finished), never from inside a squall call. The handler owns res until it
 * finishes it (sq_res_send*, sq_res_end, or a take-over): it may do so before returning
 * or later, from any callback on the same loop. req and res, and every pointer they give
 * (req.h), are borrowed until then, even if the client has gone. `data` is the pointer
 * given to sq_app_route (borrowed: squall never frees it). */
typedef void (*sq_handler_cb)(sq_req_t *req, sq_res_t *res, void *data);

/* Tells a handler that still owns res that the client has gone — reset the connection,
 * or a write to it failed (a FIN alone is a half-close: the client still reads, and gets
 * its answer) — or that the server is being destroyed past its grace period. Runs on the
 * loop thread, on a later turn of the loop, never from inside a squall call, and not at
 * all if the handler finished res first. The handler must still finish res — the
 * finishing call returns UV_ECANCELED and frees it — so every owner releases exactly
 * once. For a blocking callback squall finishes res itself when the job ends (the job is
 * cancelled at once): .aborted, if set, is only told. */
typedef void (*sq_aborted_cb)(sq_req_t *req, sq_res_t *res, void *data);

/* A blocking handler (FastAPI's plain `def` endpoint): it runs on a thread of libuv's
 * thread pool (through the server's work pool, see server.h), never on the loop thread,
 * with a read-only view of the request and a response builder — types that cannot reach
 * the loop — both borrowed until it returns; its response is sent from the loop thread
 * when it returns. It may run at the same time as other handlers of the same server (on
 * the loop and on other pool threads), so what it shares with them needs its own
 * locking. See blocking.h. */
typedef struct sq_breq_s sq_breq_t;
typedef struct sq_bres_s sq_bres_t;

/* A declared operation (schema.h): the path, query and body a method of a route takes,
 * checked before its handler runs, and what the OpenAPI document says of it. */
typedef struct sq_op sq_op_t;
typedef void (*sq_blocking_cb)(const sq_breq_t *req, sq_bres_t *res, void *data);

/* A handler table, usually a `static const` one. It grows by squall's rule (common.h,
 * "Structs that grow"): sq_app_route passes its size and squall copies it, so a table
 * from an older header leaves the callbacks it lacks unset. */
typedef struct sq_handler {
    sq_handler_cb get;
    sq_handler_cb head; /* unset: .get runs and the body is left out */
    sq_handler_cb post;
    sq_handler_cb put;
    sq_handler_cb del; /* DELETE */
    sq_handler_cb patch;
    sq_handler_cb options;
    sq_aborted_cb aborted;
    /* Blocking callbacks, run on the thread pool: `{ .blocking.get = sleep_get }`. A
     * method with both kinds set uses the non-blocking one. A client that leaves cancels
     * the job (sq_breq_is_cancelled tells the callback). */
    struct {
        sq_blocking_cb get; /* also serves HEAD */
        sq_blocking_cb post;
        sq_blocking_cb put;
        sq_blocking_cb del;
        sq_blocking_cb patch;
    } blocking;
    /* Declared operations (schema.h), per method, borrowed (a `static const` sq_op_t;
     * it must outlive the app): `{ .put = item_put, .op.put = &item_put_op }`. A method
     * with an operation has its path and query parameters and its JSON body validated
     * before the handler (blocking or not) runs; a request that fails gets 422 and never
     * reaches it. HEAD uses .get's. Unset: nothing is checked. */
    struct {
        const sq_op_t *get;
        const sq_op_t *post;
        const sq_op_t *put;
        const sq_op_t *del;
        const sq_op_t *patch;
    } op;
    /* Methods whose request body the handler reads as a stream (sq_req_body_read, req.h)
     * instead of buffered: a mask of SQ_STREAM(SQ_METHOD_POST), SQ_STREAM(SQ_METHOD_PUT),
     * ... (non-blocking callbacks only). Such a request's handler runs as soon as its
     * head is read; its body is never held whole, so max_body_bytes does not bound it —
     * stream_body_max does. 0 (default): every body is buffered. */
    unsigned stream_body;
    /* The most bytes a streamed body may have: a larger Content-Length is answered 413
     * before the handler runs, and a chunked body that grows past it ends the stream
     * with UV_E2BIG. 0 (unset): SQ_STREAM_BODY_MAX (1 GiB); UINT64_MAX: no limit. */
    uint64_t stream_body_max;
} sq_handler_t;

/* The default of sq_handler_t.stream_body_max. */
#define SQ_STREAM_BODY_MAX (1ull << 30)

/* The bit of method m in sq_handler_t.stream_body. */
#define SQ_STREAM(m) (1u << (m))

/* ---- hooks: what runs around every handler (middleware) ----
 *
 * A before hook runs before the request reaches its handler, in the order hooks were
 * added: first the hooks of the app the server serves (for every request, a 404 or 405
 * too), then those of each mounted sub-app on the way to the route (for its routes only),
 * then the handler. It returns SQ_NEXT (0) to let the request go on at once; or
 * SQ_PAUSE after it answered (finished res: a 401, a redirect) or to decide later — it
 * then calls sq_req_next(req) (req.h) from a later callback on the same loop to go on,
 * or finishes res. A negative return is a failure: squall logs it and answers 500 (if
 * res is not finished). Hooks run on the loop thread, from the loop, with the same
 * lifetime rules as handlers: res is theirs until the next hook takes it.
 *
 * An after hook runs when the response's head is about to be written — whoever finishes
 * it (handler, hook, squall's own 404/405/422/408) — with its status, in the order
 * added (the app's first, then each sub-app's on the way to the route): it may add
 * headers (sq_res_header), and nothing else (a finishing call returns SQ_EALREADY_SENT
 * there). They run also for a response whose client has gone (nothing is sent): an
 * access log sees every request. */
typedef int (*sq_before_cb)(sq_req_t *req, sq_res_t *res, void *data);
enum { SQ_NEXT = 0, SQ_PAUSE = 1 };
typedef void (*sq_after_cb)(sq_req_t *req, sq_res_t *res, int status, void *data);

/* Adds a hook. `data` is borrowed. Returns 0, UV_EINVAL or UV_ENOMEM. An app must not be
 * changed while a server serves it. */
SQ_EXTERN int sq_app_before(sq_app_t *app, sq_before_cb cb, void *data);
SQ_EXTERN int sq_app_after(sq_app_t *app, sq_after_cb cb, void *data);

/* Mounts `sub` under `prefix` ("/api/v1": a literal path of segments, no trailing '/'):
 * a request for /api/v1/items is matched against sub's routes as /items, in the place of
 * the mount among app's routes (registration order, as routes), and sub's hooks and
 * error handlers apply to sub's routes only. `app` owns sub from then on: sub is
 * destroyed with it (sq_app_destroy(app)). Returns 0; UV_EINVAL (NULL, sub == app, sub
 * already mounted, mounted above app, or apps nested more than 8 deep); SQ_EPATTERN for
 * a bad prefix; UV_ENOMEM. */
SQ_EXTERN int sq_app_mount(sq_app_t *app, const char *prefix, sq_app_t *sub);

/* ---- error handlers: the body of squall's own answers (FastAPI's exception_handler) ----
 *
 * squall answers 404 (no route), 405 (no method: the Allow header is set already), 422
 * (a path parameter or a declared operation's input did not validate) and 500 (a hook
 * that failed, out of memory) with FastAPI's {"detail": ...}. An error handler replaces
 * that body for one status: it gets the detail (a string, or the 422 list; borrowed) and
 * owns res as a handler does. The nearest app on the way to the route that has one is
 * used: for a 404, the sub-app under whose prefix the path is (the first such mount),
 * else the served app — whose hooks run for it the same way. */
typedef struct json_t json_t;
typedef void (*sq_error_cb)(sq_req_t *req, sq_res_t *res, int status, const json_t *detail,
                            void *data);
/* Returns 0; UV_EINVAL for a status other than 404, 405, 422 and 500; UV_ENOMEM. A later
 * call for the same status replaces the handler; cb NULL removes it. */
SQ_EXTERN int sq_app_on_error(sq_app_t *app, int status, sq_error_cb cb, void *data);

/* ---- route names and URL building (url_for) ---- */

/* As sq_app_route, naming the route (copied) for sq_app_url_for. */
SQ_EXTERN int sq_app_route_named_sized(sq_app_t *app, const char *name, const char *pattern,
                                       const sq_handler_t *handler, size_t handler_size,
                                       void *data);
static inline int sq_app_route_named(sq_app_t *app, const char *name, const char *pattern,
                                     const sq_handler_t *handler, void *data)
{
    return sq_app_route_named_sized(app, name, pattern, handler, sizeof(*handler), data);
}
/* Writes the path of the route named `name` (searched in app, then its mounted sub-apps,
 * with their prefixes) into buf, NUL-terminated, each parameter taken from `params`
 * ({"item_id", "5", NULL}: name, value pairs, NULL-terminated) and percent-encoded
 * (RFC 3986 §2.1; a {x:path} value keeps its slashes). Returns the length; UV_ENOENT (no
 * such route), UV_EINVAL (a parameter missing, or not an integer for {x:int}), or
 * UV_ENOBUFS (buf too small). */
SQ_EXTERN int sq_app_url_for(const sq_app_t *app, const char *name, const char *const *params,
                             char *buf, size_t len);

/* Creates an empty application. Returns 0 or UV_ENOMEM. */
SQ_EXTERN int sq_app_create(sq_app_t **app);
/* Frees the app and its routes. No server may still use it. */
SQ_EXTERN void sq_app_destroy(sq_app_t *app);

/* What sq_app_route calls, with sizeof the caller's table. Call sq_app_route. */
SQ_EXTERN int sq_app_route_sized(sq_app_t *app, const char *pattern,
                                 const sq_handler_t *handler, size_t handler_size,
                                 void *data);
/* Binds a handler table to a path pattern. `handler` and `pattern` are copied; `data` is
 * borrowed (squall never frees it) and handed to every callback of the route.
 * Returns 0; UV_EINVAL when app, pattern or handler is NULL; SQ_EPATTERN for a malformed
 * pattern (or one with more than 16 path parameters); UV_ENOTSUP for a table
 * from a newer header that sets a callback this library lacks; or UV_ENOMEM. On an error
 * the app is as it was. */
static inline int sq_app_route(sq_app_t *app, const char *pattern, const sq_handler_t *handler,
                               void *data)
{
    return sq_app_route_sized(app, pattern, handler, sizeof(*handler), data);
}

/* ---- CORS (the Fetch standard's CORS protocol; Starlette's CORSMiddleware) ---- */

/* Fill with sq_cors_opts_init (squall's rule, common.h). Lists are NULL-terminated and
 * copied. */
typedef struct sq_cors_opts {
    size_t size;
    const char *const *origins;   /* allowed origins ("https://a.example"), or {"*"};
                                     NULL (default): none */
    const char *const *methods;   /* allowed methods; NULL (default): GET; {"*"}: any */
    const char *const *headers;   /* allowed request headers besides the CORS-safelisted
                                     ones; NULL (default): none; {"*"}: any */
    const char *const *expose;    /* response headers a page may read; NULL: none */
    int credentials;              /* Access-Control-Allow-Credentials: true (the origin is
                                     then echoed, never "*") */
    int max_age;                  /* preflight cache, seconds; 600 (default) */
} sq_cors_opts_t;
SQ_EXTERN void sq_cors_opts_init_sized(sq_cors_opts_t *opts, size_t size);
static inline void sq_cors_opts_init(sq_cors_opts_t *opts)
{
    sq_cors_opts_init_sized(opts, sizeof(*opts));
}
/* Adds CORS to app as a before hook (for every request, as hooks are): a preflight
 * (OPTIONS with Origin and Access-Control-Request-Method) is answered here without
 * reaching a handler — 200 with the Access-Control-Allow-* headers when the origin,
 * method and headers are allowed, 400 otherwise; any other request with an allowed
 * Origin gets Access-Control-Allow-Origin (and -Credentials, -Expose-Headers) on its
 * response; responses that depend on the origin say `Vary: Origin`. A request without
 * Origin is left alone. Returns 0, UV_EINVAL, UV_ENOTSUP or UV_ENOMEM. */
SQ_EXTERN int sq_app_cors(sq_app_t *app, const sq_cors_opts_t *opts);

#endif
