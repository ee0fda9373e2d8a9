/* The HTTP/1.1 client's private structures (include/squall/client.h is the contract).
 *
 * Lifetimes, in one place:
 * - A fetch is freed only after its callback ran, from the client's delivery timer: every
 *   end of a fetch (response, error, cancel, close) goes through sq__fetch_finish, which
 *   detaches it from its queue or connection and puts it on the client's `done` list.
 *   So a fetch pointer seen anywhere in a libuv callback stays valid until it returns.
 * - A connection is freed only when its handles are closed and its getaddrinfo request
 *   (if one was out) came back.
 * - The client is freed when it is closing, every fetch was delivered, every connection
 *   freed and its two timers closed.
 * - One timer per client holds every deadline (totals, connects, idle pooled
 *   connections): it is armed for the earliest, and scans everything when it fires.
 */
#ifndef SQUALL_CLIENT_INT_H
#define SQUALL_CLIENT_INT_H

#include "core/abi.h"
#include "internal.h"
#include "tls/tls_int.h"

typedef struct cl_pool cl_pool_t;
typedef struct cl_conn cl_conn_t;

/* Keep-alive connections and waiting requests for one host:port. */
struct cl_pool {
    sq__list_t link;  /* client->pools */
    char *key;        /* "host port", "https host port" */
    bool tls;         /* https:// */
    sq__list_t idle;  /* idle connections, the most recently used last */
    sq__list_t queue; /* fetches waiting for a connection, in order */
    unsigned nconns;  /* connections of this pool not closed (any state) */
};

enum { CL_RESOLVING, CL_CONNECTING, CL_BUSY, CL_IDLE, CL_CLOSED };

struct cl_conn {
    sq_client_t *client;
    cl_pool_t *pool;
    sq__list_t link; /* pool->idle while idle */
    sq__list_t all;  /* client->conns until freed */
    int state;
    sq_fetch_t *fetch; /* the request on it (RESOLVING, CONNECTING, BUSY) */
    uv_getaddrinfo_t gai;
    struct addrinfo *addrs, *next_addr;
    uv_connect_t connect;
    uv_tcp_t tcp;
    bool tcp_open;  /* tcp initialised and not closed */
    bool resolving; /* the getaddrinfo request is out */
    bool counted;   /* counted in pool->nconns and stats.open */
    unsigned handles;
    unsigned writes;   /* uv_write requests in flight */
    sq__tls_t *tls;    /* https://: the session, from the TCP connect on; else NULL */
    uint64_t deadline; /* connecting: the connect deadline; idle: when it closes; or 0 */
    /* the response being read */
    llhttp_t parser;
    bool reused;     /* the request went on a pooled connection */
    bool got_bytes;  /* a byte of the response came */
    bool msg_done;   /* the final response is whole */
    bool keep_alive; /* the server lets the connection be used again */
    bool head_done;  /* the final response's headers are whole */
    bool skip_body;  /* a redirect that will be followed: its body is dropped */
    int err;         /* why a parser callback stopped (UV_EMSGSIZE, UV_ECANCELED) */
    size_t head_bytes;
    sq__buf_t field, value;
};

struct sq_response_s {
    int status;
    int minor;
    size_t nheaders;
    sq_header_t *headers;
    sq__buf_t raw;  /* "name\0value\0" per header */
    sq__buf_t body; /* NUL-terminated past len */
    char *url;
};

enum { CL_F_QUEUED, CL_F_ACTIVE, CL_F_DONE };

struct sq_fetch_s {
    sq_client_t *client;
    sq__list_t link; /* its pool's queue, or client->done */
    sq__list_t all;  /* client->fetches until done */
    int state;
    cl_pool_t *pool;
    cl_conn_t *conn;
    /* the request: what the URL gives (host for DNS, port, Host header, target) */
    char *method;
    char *host, *hostport, *target;
    char port[8];
    char *extra; /* the caller's header lines and User-Agent, "Name: value\r\n"... */
    char *body;
    size_t body_len;
    uint64_t deadline; /* uv_now when the total timeout passes, or 0 */
    sq_fetch_cb cb;
    void *data;
    sq_fetch_body_cb on_body;
    unsigned redirects;
    bool retried; /* sent again once after a stale pooled connection */
    bool fresh;   /* must go on a new connection */
    int status;   /* how it ended */
    sq_response_t *res;
};

struct sq_client_s {
    uv_loop_t *loop;
    sq_client_opts_t opts;
    char *user_agent;
    sq__list_t pools;
    sq__list_t fetches; /* not done */
    sq__list_t conns;   /* not freed */
    sq__list_t done;    /* fetches whose callback is due */
    uv_timer_t timer;   /* deadlines */
    uv_timer_t defer;   /* delivers callbacks, from the loop */
    uint64_t armed;     /* when timer fires, or 0 */
    unsigned handles;
    bool closing;
    bool delivering;
    sq_client_close_cb close_cb;
    void *close_data;
    sq_client_stats_t stats;
    SSL_CTX *tls_ctx;   /* made by the first https:// connection (or sq_client_new for
                           opts.tls_ca_file), with tls_buf: the plaintext of one read */
    char *tls_buf;
    char *tls_ca_file;  /* opts.tls_ca_file's copy */
    char rbuf[64 * 1024];
};

#define CL_TLS_BUF (64 * 1024)

/* client.c */
SQ__HIDDEN cl_pool_t *sq__cl_pool_get(sq_client_t *c, const char *host, const char *port,
                                      bool tls);
/* The client's TLS context, made on first use; NULL and *err (SQ_ETLSCONF, UV_ENOMEM). */
SQ__HIDDEN SSL_CTX *sq__cl_tls_ctx(sq_client_t *c, int *err);
SQ__HIDDEN void sq__cl_dispatch(cl_pool_t *pool, sq_client_t *c);
SQ__HIDDEN void sq__cl_arm(sq_client_t *c, uint64_t deadline);
SQ__HIDDEN void sq__cl_maybe_free(sq_client_t *c);
SQ__HIDDEN void sq__cl_enqueue(sq_fetch_t *f, bool front);
SQ__HIDDEN void sq__cl_due(sq_client_t *c);

/* conn.c */
SQ__HIDDEN int sq__clconn_open(sq_client_t *c, cl_pool_t *pool, sq_fetch_t *f);
SQ__HIDDEN void sq__clconn_start(cl_conn_t *conn, sq_fetch_t *f); /* an idle one, reused */
SQ__HIDDEN void sq__clconn_close(cl_conn_t *conn);
SQ__HIDDEN void sq__clconn_expire(cl_conn_t *conn, uint64_t now);

/* fetch.c */
SQ__HIDDEN void sq__fetch_finish(sq_fetch_t *f, int status);
SQ__HIDDEN void sq__fetch_free(sq_fetch_t *f);
SQ__HIDDEN int sq__fetch_head(const sq_fetch_t *f, sq__buf_t *out);
SQ__HIDDEN void sq__fetch_response(sq_fetch_t *f, bool *redirected);
/* f's response (its head is whole) is a redirect that will be followed. */
SQ__HIDDEN bool sq__fetch_will_follow(const sq_fetch_t *f);
SQ__HIDDEN bool sq__fetch_idempotent(const sq_fetch_t *f);

/* response.c */
SQ__HIDDEN sq_response_t *sq__response_new(void);
SQ__HIDDEN int sq__response_add(sq_response_t *r, const char *name, size_t nlen, const char *value,
                                size_t vlen);
SQ__HIDDEN int sq__response_seal(sq_response_t *r);
SQ__HIDDEN void sq__response_reset(sq_response_t *r);

#endif
