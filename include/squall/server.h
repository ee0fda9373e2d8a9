/* squall — the HTTP/1.1 server, embedded in the caller's libuv loop.
 *
 *     sq_server_opts_t opts;
 *     sq_server_opts_init(&opts);
 *     sq_server_t *srv;
 *     sq_server_create(&srv, loop, app, &opts);
 *     sq_server_listen(srv, "127.0.0.1", 8000);
 *     uv_run(loop, UV_RUN_DEFAULT);
 *
 * The server has no thread and no global of its own: everything hangs off `loop`, so two
 * servers on two loops in two threads are independent. All functions are for the loop's
 * thread.
 *
 * A program that embeds the server must ignore SIGPIPE, as with any libuv server:
 * `signal(SIGPIPE, SIG_IGN);` in main, before the loop runs. libuv writes to sockets with
 * write(2), so a client that closes while its answer is being written would otherwise kill
 * the process. squall does not change the process's signal dispositions behind its back;
 * only sq_workers_run (workers.h) does it for you.
 */
#ifndef SQUALL_SERVER_H
#define SQUALL_SERVER_H

#include "common.h"
#include "router.h"
#include "tls.h"

typedef struct sq_server_s sq_server_t;
typedef struct sq_work_pool_s sq_work_pool_t;
typedef struct sq_watchdog_s sq_watchdog_t;

/* Options; fill with sq_server_opts_init() and change what you need. Past each limit the
 * client gets the status named and the server goes on serving everyone else. A timeout
 * of 0 disables it: the server then waits on that client for as long as it takes.
 * The struct grows by squall's rule (common.h, "Structs that grow"): `size` first, set
 * by sq_server_opts_init; fields missing from an older header take their defaults. */
typedef struct sq_server_opts {
    size_t size;                 /* sizeof the caller's struct: set by sq_server_opts_init */
    size_t max_header_bytes;     /* request line + headers; 16 KiB -> 431 (chunk
                                    extensions and trailers count too: 413 past it) */
    unsigned max_headers;        /* header fields; 100 -> 431 */
    size_t max_uri_bytes;        /* request target; 8 KiB -> 414 */
    size_t max_body_bytes;       /* request body; 1 MiB -> 413 */
    uint64_t header_timeout_ms;  /* first byte of a request to end of headers; 10 s -> 408 */
    uint64_t body_timeout_ms;    /* the whole body, from the end of the head; 30 s -> 408
                                    (a deadline, not a silence: a body that trickles in
                                    must still end in time; raise it with max_body_bytes) */
    uint64_t idle_timeout_ms;    /* keep-alive idle between requests; 5 s -> quiet close.
                                    An answer still being written keeps the connection
                                    as long as the client takes some of it within this */
    unsigned max_connections;    /* open connections; 16384; more are accepted and closed */
    size_t max_pipeline_bytes;   /* bytes buffered while a request is being answered; 64 KiB,
                                    then reading pauses (back-pressure) */
    int backlog;                 /* listen(2) backlog; 511 */
    int reuseport;               /* 1: listeners set SO_REUSEPORT (one per worker thread) */
    const char *server_name;     /* `Server` header value, "squall"; NULL: no header */
    uint64_t slow_callback_ms;   /* > 0: a watchdog logs every handler that holds the loop
                                    longer than this, by route (asyncio's debug mode),
                                    measuring from the first successful listen;
                                    0 (default): off */
    sq_work_pool_t *blocking_pool; /* where blocking handlers run (borrowed; must outlive
                                    the server); NULL: the server makes one when first
                                    needed, with blocking_max_in_flight */
    unsigned blocking_max_in_flight; /* blocking jobs on libuv's threads at once for that
                                    pool; 0: libuv's pool size - 1. libuv's pool is one per
                                    process: N servers (workers) should each get 1/N */
    unsigned reserved0;          /* 0. Fills what would be tail padding: a field added
                                    later must lie past this version's size, or `size`
                                    could not tell the two versions apart */
    /* Runs once, on the loop thread, from the loop soon after sq_server_destroy began
     * (never inside it): the server accepts nobody any more and idle connections are
     * closing, but requests in flight may still be answered within the grace period.
     * The place to end what would otherwise wait out the grace — held long polls, event
     * streams (sq_hub_detach does both), connections of your own — as aiohttp's
     * on_shutdown. The server closes only after it returned. NULL (default): none. */
    void (*on_shutdown)(sq_server_t *srv, void *data);
    void *on_shutdown_data;      /* given to on_shutdown (borrowed) */
    /* A header naming each request's sq_req_id in its response ("X-Request-Id"), squall's
     * own answers (400, 404, 408...) included; written with the head, so it costs no hook
     * and no check per request. A token of at most 48 bytes, copied. NULL (default):
     * none. */
    const char *request_id_header;
    /* TLS (tls.h): non-NULL, every listener serves HTTPS and WSS with this context; the
     * server takes a reference of its own (sq_tls_ctx_free yours when you like). NULL
     * (default): plaintext. */
    sq_tls_ctx_t *tls;
    /* SNI (RFC 6066 §3): called on the loop thread during a handshake whose client named
     * a host (`name`, borrowed for the call); returns the context to serve it with
     * (borrowed: it must outlive the server), or NULL to keep opts.tls. A context that
     * is not sq_tls_ctx_server's must set its own ALPN. NULL (default): opts.tls for all. */
    sq_tls_ctx_t *(*tls_sni)(sq_server_t *srv, const char *name, void *data);
    void *tls_sni_data;          /* given to tls_sni (borrowed) */
    uint64_t tls_handshake_timeout_ms; /* accept to the end of the TLS handshake; 10 s ->
                                    the connection is closed (stats.tls_timeouts); 0: no
                                    limit (not advised: a silent client holds its slot) */
} sq_server_opts_t;

/* What sq_server_opts_init calls: fills the `size` bytes of opts with the defaults (zeros
 * past the fields this library knows) and sets opts->size. Call sq_server_opts_init. */
SQ_EXTERN void sq_server_opts_init_sized(sq_server_opts_t *opts, size_t size);
/* Fills opts with the defaults above and sets opts->size. */
static inline void sq_server_opts_init(sq_server_opts_t *opts)
{
    sq_server_opts_init_sized(opts, sizeof(*opts));
}

/* Creates a server on `loop` serving `app` (borrowed: it must outlive the server).
 * `opts` is copied (server_name too); NULL means defaults. Returns
 *   0            *srv is the server;
 *   UV_EINVAL    srv, loop or app is NULL; opts->size is 0 (opts never initialised); or
 *                opts->server_name holds CR or LF or is longer than 85 bytes;
 *                opts->request_id_header is not a token of 1 to 48 bytes;
 *   UV_ENOTSUP   opts comes from a newer header and sets a field this library lacks;
 *   UV_ENOMEM.
 * With opts->tls, every listener speaks TLS (tls.h), TCP and Unix alike.
 * On an error nothing was made and *srv is unchanged. */
SQ_EXTERN int sq_server_create(sq_server_t **srv, uv_loop_t *loop, sq_app_t *app,
                               const sq_server_opts_t *opts);

/* Listens on TCP `host`:`port`. `host` is an IPv4 or IPv6 literal ("127.0.0.1", "::1",
 * "0.0.0.0", "::" — which takes IPv4 too, as the kernel allows), bound as written with no
 * lookup; or a host name ("localhost"), which is resolved with getaddrinfo(3)
 * (AI_PASSIVE, TCP) and BLOCKS the calling thread for the lookup: call it at start-up,
 * before the loop serves anyone, as servers do. Every address a name resolves to is bound
 * (localhost: 127.0.0.1, and ::1 where /etc/hosts names it), as Python's asyncio
 * create_server does: port 0 picks one free port, which every address gets; an IPv6
 * socket is then IPv6-only. An address the machine lacks (UV_EAFNOSUPPORT,
 * UV_EADDRNOTAVAIL: ::1 on a host without IPv6) is skipped if another binds. Port 0
 * picks a free port (see sq_server_port). May be called for several addresses.
 * Returns 0; UV_EINVAL for an empty or NULL host or a port outside 0..65535;
 * getaddrinfo's error as libuv names it (UV_EAI_NONAME for an unknown host, UV_EAI_AGAIN
 * when DNS does not answer, ...); SQ_ECLOSED once sq_server_destroy has been called;
 * UV_ENOMEM; or libuv's error from socket(2)/bind(2)/listen(2) (UV_EADDRINUSE, UV_EACCES,
 * UV_EADDRNOTAVAIL, ...) for the first address that failed. On failure the server has no
 * new listener (the addresses of a name bound before one failed are let go), and goes on
 * with the ones it had. The first successful listen (TCP or Unix) starts the server's
 * watchdog (opts.slow_callback_ms). */
SQ_EXTERN int sq_server_listen(sq_server_t *srv, const char *host, int port);
/* Listens on a Unix domain socket at `path` (an existing socket file is not removed).
 * Returns 0; SQ_ECLOSED once sq_server_destroy has been called; UV_ENOMEM; or libuv's
 * error from bind(2)/listen(2) (UV_EADDRINUSE when the file exists, UV_EACCES,
 * UV_ENOENT for a missing directory, ...); or UV_ENAMETOOLONG for a path that does not
 * fit in a socket address (107 bytes on Linux). On failure the server goes on with the
 * listeners it had. */
SQ_EXTERN int sq_server_listen_unix(sq_server_t *srv, const char *path);
/* The port of the most recent TCP listener, or UV_EINVAL before any TCP listen worked. */
SQ_EXTERN int sq_server_port(const sq_server_t *srv);

/* The server is closed: runs once, on the loop thread, from the loop's close phase —
 * never from inside sq_server_destroy. srv is freed when it returns. */
typedef void (*sq_server_close_cb)(sq_server_t *srv, void *data);

/* Graceful shutdown: stops accepting, closes idle connections, lets in-flight requests
 * finish for up to `grace_ms` (taken-over connections are told to go away), then aborts
 * the rest. When every handle is closed and every response released, `cb` runs (may be
 * NULL; `data` is borrowed) and the server is freed: do not touch srv after cb. Returns 0,
 * or SQ_ECLOSED when called twice. Idle connections close at once, so a callback that
 * reports the end of a write (sq_res_write_cb, sq_res_send_ref's free callback) may run
 * inside this call, with UV_ECANCELED; handlers are told (.aborted) later, from the
 * loop. */
SQ_EXTERN int sq_server_destroy(sq_server_t *srv, uint64_t grace_ms, sq_server_close_cb cb,
                                void *data);

/* Counters since creation. Bad input is counted by the status it got. The struct grows
 * by squall's rule (common.h): `size` first, set by sq_server_stats to the bytes filled. */
typedef struct sq_server_stats {
    size_t size;                   /* bytes filled: set by sq_server_stats */
    uint64_t connections_open;
    uint64_t connections_total;
    uint64_t connections_rejected; /* over max_connections, or no memory for them */
    uint64_t requests;
    uint64_t responses_4xx;
    uint64_t responses_5xx;
    uint64_t parse_errors;         /* malformed input answered with 400/501/505 */
    uint64_t limit_errors;         /* 413, 414, 431 */
    uint64_t timeouts;             /* header/body timeouts (408) */
    uint64_t aborted;              /* responses whose client left before they finished */
    uint64_t tls_handshakes;       /* TLS handshakes completed */
    uint64_t tls_errors;           /* TLS connections closed for a failed handshake (bad
                                      or plaintext input, no common cipher) or a broken
                                      record; the reason is logged at SQ_LOG_DEBUG */
    uint64_t tls_timeouts;         /* handshakes past opts.tls_handshake_timeout_ms */
    uint64_t bytes_read;           /* bytes read from clients (WebSockets' too) */
    uint64_t bytes_written;        /* bytes handed to the sockets for sending */
    uint64_t websockets_open;      /* connections taken over by WebSocket, open now */
} sq_server_stats_t;

/* What sq_server_stats calls: fills the `size` bytes of out. Call sq_server_stats. */
SQ_EXTERN void sq_server_stats_sized(const sq_server_t *srv, sq_server_stats_t *out,
                                     size_t size);
/* Copies the counters into *out (a snapshot; out->size is set). */
static inline void sq_server_stats(const sq_server_t *srv, sq_server_stats_t *out)
{
    sq_server_stats_sized(srv, out, sizeof(*out));
}
/* The server's watchdog (opts.slow_callback_ms > 0), for sq_watchdog_stats(); else NULL.
 * Owned by the server: valid until sq_server_destroy's callback. */
SQ_EXTERN sq_watchdog_t *sq_server_watchdog(const sq_server_t *srv);
SQ_EXTERN uv_loop_t *sq_server_loop(const sq_server_t *srv);

#endif
