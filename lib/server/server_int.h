/* squall — the server's private structures: server, listener, connection, exchange.
 * Shared by lib/server/ and lib/http/ (request accessors and the response serializer). */
#ifndef SQUALL_SERVER_INT_H
#define SQUALL_SERVER_INT_H

#include "internal.h"

/* Exchanges and write queues kept for reuse per server; with the buffer caps in
 * sq__exch_reset and wq_put, what a burst leaves behind stays under a few MiB. */
#define SQ__POOL_MAX 64

/* One write batch: bytes copied into `buf`, plus segments that point at borrowed memory. */
typedef struct sq__wseg {
    const char *base;   /* NULL: the bytes are buf[off, off+len) */
    size_t off;
    size_t len;
    sq_free_cb free_cb; /* zero-copy segments: release `base` */
    void *free_ud;
    sq__write_cb cb;    /* raw connection write completion, or NULL */
    void *cb_ud;
    sq_res_write_cb rcb;/* streaming response write completion, or NULL */
    struct sq_req_s *rx;/* ...its exchange, which the segment holds a reference to */
    void *rcb_ud;
} sq__wseg_t;

typedef struct sq__wbatch {
    sq__buf_t buf;
    sq__wseg_t *segs;
    unsigned nsegs, cap;
    size_t bytes;
} sq__wbatch_t;

/* Write state, lent to a connection from the server's pool while it has bytes to send. */
typedef struct sq__wq {
    uv_write_t req;
    sq__wbatch_t b[2];  /* b[fill] is being filled; the other is in flight */
    unsigned fill;
    bool inflight;
    uv_buf_t *iov;
    unsigned iov_cap;
    size_t mark;        /* write_queue_size when the idle timeout last looked (progress) */
    struct sq__wq *next_free;
} sq__wq_t;

typedef enum {
    SQ__ST_IDLE,    /* between requests (idle queue) */
    SQ__ST_HEAD,    /* reading a request's headers (header queue) */
    SQ__ST_BODY,    /* reading a request body (body queue) */
    SQ__ST_HANDLER, /* the request is complete; a handler owns the response */
    SQ__ST_PROTO,   /* taken over by another protocol (WebSocket) */
    SQ__ST_CLOSING, /* uv_close called or lingering before it */
} sq__conn_state_t;

enum {
    SQ__CF_PAUSED = 1 << 0,      /* parser paused while a response is outstanding */
    SQ__CF_READ_STOPPED = 1 << 1,/* reading paused: pipeline buffer full */
    SQ__CF_CLOSE_AFTER = 1 << 2, /* close once the queued bytes are written */
    SQ__CF_LINGER = 1 << 3,      /* on that close, shut down writes and drain reads first */
    SQ__CF_IN_READ = 1 << 4,     /* inside on_read: the flush happens at its end */
    SQ__CF_CLOSED = 1 << 5,      /* uv_close was called */
    SQ__CF_PIPE = 1 << 6,        /* a Unix domain socket */
    SQ__CF_TICK = 1 << 7,        /* queued for the next tick */
    SQ__CF_DRAIN = 1 << 8,       /* parser paused until queued answers drain (back-pressure) */
};

struct sq__conn {
    union {
        uv_handle_t handle;
        uv_stream_t stream;
        uv_tcp_t tcp;
        uv_pipe_t pipe;
    } h;
    sq_server_t *srv;
    sq__list_t node;      /* srv->conns */
    sq__list_t tnode;     /* a timeout queue */
    sq__list_t knode;     /* the tick queue */
    uint64_t deadline;    /* for the timeout queue it is in */
    struct sq_req_s *exch;/* the request being read or answered */
    sq__wq_t *wq;         /* lent while bytes are queued */
    sq__buf_t pending;    /* bytes read past a request whose answer is outstanding */
    const sq__proto_t *proto;
    void *proto_ud;
    uint16_t flags;
    uint8_t state;
    uint8_t tq;           /* which timeout queue tnode is in */
};

/* The response half of an exchange. */
struct sq_res_s {
    struct sq_req_s *req;
};

enum {
    SQ__XF_FINISHED = 1 << 0,   /* the handler finished the response */
    SQ__XF_HEADERS_SENT = 1 << 1,
    SQ__XF_CHUNKED = 1 << 2,    /* streaming with chunked framing */
    SQ__XF_STREAMING = 1 << 3,
    SQ__XF_HEAD = 1 << 4,       /* HEAD request: no body bytes */
    SQ__XF_KEEPALIVE = 1 << 5,
    SQ__XF_IN_HANDLER = 1 << 6, /* the handler is on the stack */
    SQ__XF_EXPECT = 1 << 7,     /* Expect: 100-continue */
    SQ__XF_HOLD_CONN = 1 << 8,  /* the connection holds a reference */
    SQ__XF_HOLD_HANDLER = 1 << 9,/* the handler holds one (until it finishes the response) */
    SQ__XF_QUERY_PARSED = 1 << 10,
    SQ__XF_TE = 1 << 11,        /* a Transfer-Encoding header was seen */
    SQ__XF_TE_BAD = 1 << 12,    /* ...with a coding other than a final, single chunked */
    SQ__XF_UPGRADE = 1 << 13,
    SQ__XF_ABORTED = 1 << 14,
    SQ__XF_TE_UNKNOWN = 1 << 15,/* a transfer coding squall does not implement (501) */
    SQ__XF_IN_FIELD = 1 << 16,  /* receiving a header name */
    SQ__XF_PATH_DECODED = 1 << 17,
    SQ__XF_GAP = 1 << 18,       /* checking the line endings between head spans (conn.c) */
    SQ__XF_TRAILERS = 1 << 19,  /* reading the trailer section of a chunked body */
    SQ__XF_TRAILER_PAUSE = 1 << 20,/* llhttp paused at the last chunk to find where it ends */
};

typedef struct sq__hdr {
    uint32_t name_off, name_len;
    uint32_t val_off, val_len;
} sq__hdr_t;

typedef struct sq__qparam {
    const char *name, *value;
} sq__qparam_t;

/* A request and its response: one allocation, pooled by the server. The parser lives here,
 * not in the connection: between requests a keep-alive connection holds no parser state. */
struct sq_req_s {
    llhttp_t parser;            /* data: the connection */
    sq__conn_t *conn;           /* NULL once the client has gone */
    sq_server_t *srv;
    uint32_t flags;
    uint32_t refs;              /* conn hold + handler hold + queued write callbacks */
    uint32_t wholds;            /* ...of which queued streaming write callbacks */
    int status;
    sq_method_t method;
    uint8_t llmethod;           /* llhttp's method number */
    uint8_t http_minor;
    uint8_t host_count;
    int err_status;             /* a limit or framing error found while parsing */
    sq__buf_t hb;               /* target\0name\0value\0... as received */
    sq__buf_t hidx;             /* sq__hdr_t[] */
    uint32_t target_len;
    uint32_t cur_off;           /* start of the field or value being received */
    uint8_t gap_n;              /* line-ending bytes in gap[] since the last span */
    char gap[4];
    const char *gap_from;       /* end of the last span in the bytes being parsed, or NULL */
    size_t header_bytes;
    sq__buf_t body;
    sq__buf_t rh;               /* response headers added by the handler */
    const char *path;           /* decoded, in arena */
    const char *query;          /* raw, in hb */
    sq__qparam_t *qparams;
    unsigned nqparams;
    sq__match_t verdict;
    sq__match_result_t match;
    void *user_data;
    sq_work_t *work;            /* a blocking handler's job in flight */
    struct sq_req_s *next_free;
    sq__arena_t arena;
    struct sq_res_s res;
    char arena_inline[512];
};


enum { SQ__TQ_NONE, SQ__TQ_HEAD, SQ__TQ_BODY, SQ__TQ_IDLE, SQ__TQ_LINGER, SQ__TQ_COUNT };

typedef struct sq__listener {
    sq__list_t node;
    sq_server_t *srv;
    union {
        uv_handle_t handle;
        uv_stream_t stream;
        uv_tcp_t tcp;
        uv_pipe_t pipe;
    } h;
    int port;
} sq__listener_t;

struct sq_server_s {
    uv_loop_t *loop;
    sq_app_t *app;
    sq_server_opts_t opts;
    sq__list_t listeners;
    sq__list_t conns;
    sq__list_t tq[SQ__TQ_COUNT]; /* timeout queues; each FIFO, so deadlines ascend */
    uint64_t tq_timeout[SQ__TQ_COUNT];
    sq__list_t ticks;           /* connections with work for the next tick */
    sq__buf_t scratch;          /* JSON serialization */
    uv_timer_t timer;
    uint64_t timer_due;         /* 0: not armed */
    uv_idle_t tick;
    sq__date_cache_t date;
    const char *rd_base;        /* the bytes llhttp is parsing now (conn_process) */
    const char *rd_end;
    char *rbuf;                 /* shared read buffer: used only inside one on_read */
    size_t rbuf_cap;
    struct sq_req_s *exch_free;
    unsigned exch_free_n;
    sq__wq_t *wq_free;
    unsigned wq_free_n;
    uint64_t live_exch;
    unsigned nconns;
    unsigned nlisteners_open;
    unsigned nhandles;          /* timer, tick: closed last */
    int port;
    bool closing;
    uint64_t grace_due;
    sq_server_close_cb close_cb;
    void *close_data;
    sq_watchdog_t *wd;          /* opts.slow_callback_ms > 0 */
    sq_work_pool_t *pool;       /* blocking handlers: opts.blocking_pool or own_pool */
    bool own_pool;
    char server_line[96];       /* "Server: squall\r\n" */
    size_t server_line_len;
    sq_server_stats_t stats;
};

/* lib/server/conn.c */
SQ__HIDDEN void sq__conn_want_flush(sq__conn_t *conn);
SQ__HIDDEN void sq__exch_release(struct sq_req_s *x, uint32_t which);
SQ__HIDDEN void sq__exch_finished(struct sq_req_s *x);
SQ__HIDDEN sq__wbatch_t *sq__conn_batch(sq__conn_t *conn);
SQ__HIDDEN int sq__batch_add_copy(sq__wbatch_t *b, const void *data, size_t len);
/* Makes the last `len` bytes already appended to b->buf a segment. */
SQ__HIDDEN int sq__batch_commit(sq__wbatch_t *b, size_t len);
SQ__HIDDEN int sq__batch_add_ref(sq__wbatch_t *b, const void *base, size_t len,
                                 sq_free_cb free_cb, void *free_ud);
SQ__HIDDEN sq__wseg_t *sq__batch_last(sq__wbatch_t *b);
SQ__HIDDEN void sq__conn_abort_exch(sq__conn_t *conn);
SQ__HIDDEN void sq__exch_hold(struct sq_req_s *x);
SQ__HIDDEN void sq__exch_unhold(struct sq_req_s *x);

SQ__HIDDEN void sq__conn_accept(sq_server_t *srv, uv_stream_t *listener, bool is_pipe);
SQ__HIDDEN void sq__conn_shutdown(sq__conn_t *conn);
/* Frees the exchanges and write queues pooled for reuse (the server is going). */
SQ__HIDDEN void sq__server_pools_free(sq_server_t *srv);
SQ__HIDDEN void sq__timer_arm(sq_server_t *srv, uint64_t due);
/* lib/server/server.c: the last connection, listener or exchange gone ends a closing server */
SQ__HIDDEN void sq__server_maybe_done(sq_server_t *srv);
/* Listens on every address of an addrinfo list (what sq_server_listen resolved). */
struct addrinfo;
SQ__HIDDEN int sq__server_listen_ai(sq_server_t *srv, const struct addrinfo *list, int port);

/* lib/server/blocking.c: runs the matched blocking callback on the work pool; finishes
 * the response (503 when the pool refuses) and releases the handler's hold when done. */
SQ__HIDDEN void sq__blocking_dispatch(struct sq_req_s *x);

/* lib/http/response.c */
SQ__HIDDEN const char *sq__status_reason(int status);

/* lib/http/request.c */
SQ__HIDDEN void sq__exch_reset(struct sq_req_s *x);

#endif
