/* squall — the HTTP/1.1 client: fetch URLs on a libuv loop, with callbacks or promises.
 *
 *     static void done(sq_fetch_t *f, int status, const sq_response_t *res, void *data)
 *     {
 *         if (status < 0) {                      // DNS, connect, timeout, cancel, ...
 *             fprintf(stderr, "fetch: %s\n", sq_strerror(status));
 *             return;
 *         }
 *         size_t len;
 *         const char *body = sq_response_body(res, &len);
 *         printf("%d %.*s\n", sq_response_status(res), (int)len, body);
 *     }
 *
 *     sq_client_t *client;
 *     sq_client_new(&client, loop, NULL);
 *     sq_fetch_req_t req;
 *     sq_fetch_req_init(&req);
 *     req.url = "http://127.0.0.1:8000/items/5?q=x";
 *     sq_fetch(client, &req, done, NULL, NULL);
 *     ...
 *     sq_client_close(client, NULL, NULL);   // pending fetches end with UV_ECANCELED
 *
 * HTTP/1.1 (RFC 9112) over llhttp in response mode: keep-alive connections pooled per
 * host and port (opts.max_conns_per_host at once, further requests wait in a queue),
 * Content-Length, chunked and close-delimited bodies, HEAD, redirects when asked for
 * (bounded), DNS with uv_getaddrinfo (IPv4 and IPv6), http:// and https:// (TLS 1.2+
 * with OpenSSL: the server's certificate is checked against the system's CA store and
 * must name the host — RFC 6125 — unless opts.tls_insecure; SNI is sent for a host
 * name; ALPN http/1.1). A request reused on a pooled connection that
 * the server had closed meanwhile is sent again once on a new connection, when its method
 * is idempotent (RFC 9110 §9.2.2) and nothing of the response had come.
 *
 * The client belongs to the thread running its loop: every call is for that thread, and
 * every callback runs there, from the loop — never inside the call that caused it.
 */
#ifndef SQUALL_CLIENT_H
#define SQUALL_CLIENT_H

#include "common.h"
#include "promise.h"

typedef struct sq_client_s sq_client_t;
typedef struct sq_fetch_s sq_fetch_t;
typedef struct sq_response_s sq_response_t;

/* A header line, as given (requests) or as received (responses). */
typedef struct sq_header {
    const char *name;
    const char *value;
} sq_header_t;

/* Options of a client, filled with the defaults by sq_client_opts_init (common.h,
 * "Structs that grow"). A size, count or time of 0 means no limit unless said otherwise. */
typedef struct sq_client_opts {
    size_t size;                 /* sizeof the caller's struct: set by sq_client_opts_init */
    unsigned max_conns_per_host; /* connections open at once to one host:port; 6 (as
                                    browsers). 0: no limit */
    unsigned max_queued;         /* requests waiting for a connection, in all; 10,000 ->
                                    UV_ENOBUFS from sq_fetch */
    uint64_t connect_timeout_ms; /* DNS and TCP connect; 10 s -> UV_ETIMEDOUT */
    uint64_t timeout_ms;         /* a whole request, from sq_fetch to the last byte of the
                                    response, waiting in the queue and redirects included
                                    (aiohttp's ClientTimeout(total=)); 5 min ->
                                    UV_ETIMEDOUT */
    uint64_t idle_timeout_ms;    /* a pooled keep-alive connection unused this long is
                                    closed; 30 s */
    size_t max_header_bytes;     /* status line and headers of a response; 64 KiB ->
                                    UV_EMSGSIZE */
    unsigned max_headers;        /* header lines of a response; 200 -> UV_EMSGSIZE */
    size_t max_body_bytes;       /* a buffered response body; 64 MiB -> UV_EMSGSIZE (a
                                    streamed body, sq_fetch_req_t.on_body, has no limit) */
    unsigned max_redirects;      /* 3xx with Location followed, at most this many (past
                                    them the last 3xx is the response); 0 (default): not
                                    followed, the 3xx is the response */
    const char *user_agent;      /* `User-Agent` sent unless the request has one;
                                    "squall/<version>"; NULL: none. Copied; CR or LF in
                                    it: UV_EINVAL from sq_client_new */
    const char *tls_ca_file;     /* https://: a PEM file of CA certificates trusted besides
                                    the system's store (a private CA, tests); loaded by
                                    sq_client_new (SQ_ETLSCONF when it cannot be). NULL
                                    (default): the system's store only */
    int tls_insecure;            /* 1: https:// WITHOUT checking the server's certificate
                                    or its host name — anyone on the path can read and
                                    change the traffic; for tests only. 0 (default):
                                    checked */
    unsigned reserved0;          /* 0. Fills what would be tail padding (see
                                    sq_server_opts_t.reserved0) */
} sq_client_opts_t;

SQ_EXTERN void sq_client_opts_init_sized(sq_client_opts_t *opts, size_t size);
static inline void sq_client_opts_init(sq_client_opts_t *opts)
{
    sq_client_opts_init_sized(opts, sizeof(*opts));
}

/* Makes a client on `loop`; `opts` copied (NULL: defaults). Returns 0; UV_EINVAL (NULL
 * out or loop, opts->size 0, a user_agent with CR or LF); UV_ENOTSUP (options from a
 * newer header); SQ_ETLSCONF (opts->tls_ca_file cannot be loaded); UV_ENOMEM. Idle pooled connections do not keep the loop running (they
 * are unref'd): uv_run returns once no fetch is pending; sq_client_close frees them. */
SQ_EXTERN int sq_client_new(sq_client_t **out, uv_loop_t *loop, const sq_client_opts_t *opts);

/* The client is closed: every fetch has been told and every handle closed. */
typedef void (*sq_client_close_cb)(sq_client_t *client, void *data);
/* Closes the client (aiohttp's session.close()): every fetch still pending — queued,
 * connecting, sending or receiving — ends with UV_ECANCELED, each told exactly once,
 * later, from the loop; pooled connections close. `cb` (may be NULL) runs when all is
 * done, then the client is freed. A later sq_fetch on it fails at once with SQ_ECLOSED.
 * Returns 0, or SQ_ECLOSED when called twice. */
SQ_EXTERN int sq_client_close(sq_client_t *client, sq_client_close_cb cb, void *data);

/* Counters since sq_client_new (a snapshot). Grows by squall's rule. */
typedef struct sq_client_stats {
    size_t size;               /* bytes filled: set by sq_client_stats */
    uint64_t requests;         /* fetches started */
    uint64_t responses;        /* fetches ended with a response (any status) */
    uint64_t errors;           /* fetches ended with an error (cancel included) */
    uint64_t connections;      /* TCP connections made */
    uint64_t reused;           /* requests sent on a pooled connection */
    uint64_t retried;          /* requests sent again after a stale pooled connection */
    uint64_t open;             /* connections open now */
    uint64_t queued;           /* requests waiting for a connection now */
} sq_client_stats_t;
SQ_EXTERN void sq_client_stats_sized(const sq_client_t *client, sq_client_stats_t *out,
                                     size_t size);
static inline void sq_client_stats(const sq_client_t *client, sq_client_stats_t *out)
{
    sq_client_stats_sized(client, out, sizeof(*out));
}

/* ---- a response ---- */

/* Valid during the callback that hands it out (sq_fetch_cb), or until sq_response_free
 * for one a promise resolved with. */
SQ_EXTERN int sq_response_status(const sq_response_t *res);
/* 0 for HTTP/1.0, 1 for HTTP/1.1. */
SQ_EXTERN int sq_response_version_minor(const sq_response_t *res);
/* The first header `name` (case-insensitive), or NULL. */
SQ_EXTERN const char *sq_response_header(const sq_response_t *res, const char *name);
SQ_EXTERN size_t sq_response_header_count(const sq_response_t *res);
/* The i-th header as received; 0, or UV_EINVAL when i is out of range. */
SQ_EXTERN int sq_response_header_at(const sq_response_t *res, size_t i, sq_header_t *out);
/* The body (de-chunked; "" and 0 when there is none, or when it was streamed to on_body).
 * NUL-terminated after its `len` bytes; may hold NULs. */
SQ_EXTERN const char *sq_response_body(const sq_response_t *res, size_t *len);
/* The URL that answered (after redirects). */
SQ_EXTERN const char *sq_response_url(const sq_response_t *res);
/* Frees a response a promise resolved with (sq_fetch_promise). NULL: nothing. */
SQ_EXTERN void sq_response_free(sq_response_t *res);

/* ---- fetching ---- */

/* A chunk of a streamed body (sq_fetch_req_t.on_body), borrowed during the call, in
 * order, after the head arrived (sq_fetch_head(f) gives it) and before the fetch's
 * callback, which then has no body. Return 0 to go on, non-zero to stop: the fetch ends
 * with UV_ECANCELED. On the loop's thread. */
typedef int (*sq_fetch_body_cb)(sq_fetch_t *f, const char *chunk, size_t len, void *data);

/* A request, filled with the defaults by sq_fetch_req_init. Everything is copied by
 * sq_fetch. */
typedef struct sq_fetch_req {
    size_t size;                /* set by sq_fetch_req_init */
    const char *method;         /* "GET" (default), "POST", "HEAD", any RFC 9110 token */
    const char *url;            /* "http[s]://host[:port]/path?query" (required) */
    const sq_header_t *headers; /* nheaders lines (names and values checked: no CR, LF,
                                   NUL; `Host`, `Content-Length`, `Transfer-Encoding` and
                                   `Connection` are squall's and refused) */
    size_t nheaders;
    const void *body;           /* body_len bytes sent with Content-Length */
    size_t body_len;
    uint64_t timeout_ms;        /* this request's total timeout; 0: the client's */
    sq_fetch_body_cb on_body;   /* NULL: the body is buffered (max_body_bytes) */
} sq_fetch_req_t;

SQ_EXTERN void sq_fetch_req_init_sized(sq_fetch_req_t *req, size_t size);
static inline void sq_fetch_req_init(sq_fetch_req_t *req)
{
    sq_fetch_req_init_sized(req, sizeof(*req));
}

/* How a fetch ended, once, on the loop's thread, from the loop: status 0 and the
 * response (any HTTP status: a 404 is a response), or a negative status and res NULL:
 *   UV_EAI_*          the name did not resolve (libuv's getaddrinfo errors);
 *   UV_ECONNREFUSED, UV_ENETUNREACH, ...   the connect failed;
 *   UV_ETIMEDOUT      connect_timeout_ms or the total timeout passed;
 *   UV_ECONNRESET     the server closed or reset before the response was whole (a
 *                     body cut short by the close of a Content-Length or chunked body);
 *   UV_EPROTO         the response is not HTTP/1.x as RFC 9112 has it (llhttp refused
 *                     it), or a redirect's Location cannot be followed;
 *   UV_EMSGSIZE       past max_header_bytes, max_headers or max_body_bytes (a
 *                     Content-Length past max_body_bytes fails when the head comes);
 *   UV_ECANCELED      sq_fetch_cancel, sq_client_close, or on_body asked to stop;
 *   SQ_ECERT          https://: the server's certificate chain is not trusted (an
 *                     unknown CA, self-signed, expired, not yet valid, ...; the reason
 *                     is logged at SQ_LOG_DEBUG);
 *   SQ_ECERTNAME      https://: the certificate is valid but names another host;
 *   SQ_ETLS           https://: the TLS handshake failed otherwise (no common protocol
 *                     or cipher, the server does not speak TLS) or a record was broken.
 * connect_timeout_ms covers the TLS handshake too.
 * `f` is valid during the call only. */
typedef void (*sq_fetch_cb)(sq_fetch_t *f, int status, const sq_response_t *res, void *data);

/* Starts a request. `cb` (required) is told how it ended, exactly once. `out` (may be
 * NULL) receives the fetch, valid until cb returns, for sq_fetch_cancel. Returns 0 (cb
 * will run); UV_EINVAL for a NULL client, req, url or cb, req->size 0, a URL that is not
 * http[s]://host[:port][/path][?query] (RFC 3986 characters only), a bad method or header;
 * SQ_ECLOSED once sq_client_close was called;
 * UV_ENOBUFS past max_queued; UV_ENOTSUP (a request struct from a newer header);
 * UV_ENOMEM. On an error cb does not run. */
SQ_EXTERN int sq_fetch(sq_client_t *client, const sq_fetch_req_t *req, sq_fetch_cb cb,
                       void *data, sq_fetch_t **out);
/* Cancels a pending fetch: its callback runs later with UV_ECANCELED (unless it already
 * ran: then f is no longer valid and must not be passed). Its connection is closed if
 * the request was on the wire. */
SQ_EXTERN void sq_fetch_cancel(sq_fetch_t *f);
/* The response head of a fetch whose body is being streamed (in on_body), else NULL. */
SQ_EXTERN const sq_response_t *sq_fetch_head(const sq_fetch_t *f);

/* The same request as a promise (promise.h): resolved with an sq_response_t * that the
 * promise owns (its value destructor is sq_response_free: take it with
 * sq_promise_result), or rejected with the error sq_fetch_cb would get. Cancelling the
 * promise cancels the fetch. on_body is not allowed here (UV_EINVAL). Returns as sq_fetch;
 * *out holds the caller's reference. */
SQ_EXTERN int sq_fetch_promise(sq_client_t *client, const sq_fetch_req_t *req,
                               sq_promise_t **out);

#endif
