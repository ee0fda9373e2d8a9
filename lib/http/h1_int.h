/* squall — HTTP/1 on a connection, and the exchange: private prototypes shared by
 * lib/http/ (h1_conn.c, h1_parse.c, exchange.c) and the transport that feeds them. */
#ifndef SQUALL_H1_INT_H
#define SQUALL_H1_INT_H

#include "server/server_int.h"

/* ---- the HTTP server: the transport's server object first, then HTTP's own ---- */

typedef struct sq__httpsrv {
    sq_server_t base;           /* the transport's part (lib/server/server_int.h) */
    sq_app_t *app;
    sq__list_t aborts;          /* exchanges whose handler is to be told .aborted */
    sq__buf_t scratch;          /* JSON serialization */
    sq__date_cache_t date;
    const char *rd_base;        /* the bytes llhttp is parsing now (sq__h1_process) */
    const char *rd_end;
    struct sq_req_s *exch_free; /* exchanges pooled for reuse */
    unsigned exch_free_n;
    sq_watchdog_t *wd;          /* opts.slow_callback_ms > 0 */
    sq_work_pool_t *pool;       /* blocking handlers: opts.blocking_pool or own_pool */
    bool own_pool;
    char server_line[96];       /* "Server: squall\r\n" */
    size_t server_line_len;
    /* sq__h1_process calls that have ended: a request stamped and dispatched within one
     * call (no return to the loop between) lets the watchdog's span start at its stamp */
    uint32_t parse_pass;
    /* Requests h1_fast.c read; fast_off leaves every request to llhttp (tests hold the
     * two readers to the same answers with it). */
    uint64_t fast_n;
    bool fast_off;
    char rid_name[52];          /* opts.request_id_header ": ", or empty */
    size_t rid_name_len;
    /* The start of the last head written — status line, Server, Date — kept while the
     * status and the second stay the same: one copy per response instead of six. */
    char head[16 + 64 + 96 + 40];
    size_t head_len;
    int head_status;
    uint64_t head_sec;
} sq__httpsrv_t;

/* Every sq_server_t is made by sq_server_create (lib/http/server.c), as an sq__httpsrv_t. */
static inline sq__httpsrv_t *sq__hs(const sq_server_t *srv)
{
    return (sq__httpsrv_t *)srv;
}

/* ---- the exchange: a request and its response, one allocation ---- */

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
    SQ__XF_STREAM = 1 << 21,     /* the body is read as a stream (dispatched at the head) */
    SQ__XF_BODY_PAUSED = 1 << 22,/* the reader asked for a pause */
    SQ__XF_BODY_DONE = 1 << 23,  /* the whole body has been parsed */
    SQ__XF_BODY_END = 1 << 24,   /* the reader was told the end (UV_EOF or an error) */
    SQ__XF_BODY_SENT = 1 << 25,  /* a buffered body was given to the reader */
    SQ__XF_HOOK_WAIT = 1 << 26,  /* a before hook returned SQ_PAUSE */
    SQ__XF_HOOK_NEXT = 1 << 27,  /* ...and called sq_req_next: the tick goes on */
    SQ__XF_AFTER_RAN = 1 << 28,  /* the after hooks ran (once per response) */
    SQ__XF_IN_AFTER = 1 << 29,   /* an after hook is on the stack: no finishing call */
    SQ__XF_HEAD_DONE = 1u << 30, /* the request's head was read whole (method, target...) */
    SQ__XF_CONTINUE_OWED = 1u << 31, /* a streamed body's 100 Continue, sent when it is read */
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
    const struct sq__exch_ops *ops; /* the protocol that owns it: its output stream */
    sq__conn_t *conn;           /* the owner's connection; NULL once the client has gone */
    sq_server_t *srv;
    uint32_t flags;
    uint32_t refs;              /* conn hold + handler hold + queued write callbacks */
    uint32_t wholds;            /* ...of which queued streaming write callbacks */
    int status;
    sq_method_t method;
    uint8_t llmethod;           /* llhttp's method number */
    uint8_t http_minor;
    uint8_t host_count;
    uint8_t reset_done;         /* reset and untouched since: put back without another */
    uint8_t ll_live;            /* `parser` was initialised for this exchange (h1_conn.c) */
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
    void *input;                /* a declared operation's bound struct (in arena) */
    uint64_t id;                /* sq_req_id */
    uint64_t start_ns;          /* sq_req_start_ns */
    uint32_t stamp_pass;        /* the server's parse_pass at the stamp */
    unsigned hook_i;            /* the next before hook to run (hooks.c) */
    sq_body_cb body_cb;         /* the body's reader (sq_req_body_read), or NULL */
    void *body_ud;
    uint64_t body_seen;         /* bytes of a streamed body parsed so far */
    int body_err;               /* how a streamed body ended early (UV_E2BIG), or 0 */
    json_t *in_path, *in_query, *in_body; /* ...and its checked values (validate.c) */
    sq_work_t *work;            /* a blocking handler's job in flight */
    sq__list_t anode;           /* srv->aborts: .aborted to deliver on the next tick */
    struct sq_req_s *next_free;
    sq__arena_t arena;
    struct sq_res_s res;
    /* Observability (gzip.c, access_log.c): NULL/unused unless an app turned them on. */
    struct sq__gz *gz;          /* the nearest app's gzip settings, or a streamed body's
                                   deflate state; NULL: the plain path */
    int64_t res_len;            /* the body's length as the head is written; -1: streamed */
    char arena_inline[512];
};



/* What an exchange needs of the protocol that owns it: where the serializer
 * (response.c) writes, and whom exchange.c tells when the response is finished. The
 * serializer and the exchange call nothing else of the connection. */
typedef struct sq__exch_ops {
    /* The batch to append the response's bytes to; NULL when out of memory. */
    sq__wbatch_t *(*batch)(sq__exch_t *x);
    /* Appended bytes should leave (at the end of the read, or on the tick). */
    void (*flush)(sq__exch_t *x);
    /* true while the client can still be answered. */
    bool (*open)(const sq__exch_t *x);
    /* true when the connection ends after this response (Connection: close). */
    bool (*last)(const sq__exch_t *x);
    /* The response goes out whole, then the connection closes. */
    void (*close_after)(sq__exch_t *x);
    /* The bytes could not be queued: the connection closes now. */
    void (*fail)(sq__exch_t *x);
    /* Bytes queued and not yet handed to the kernel. */
    size_t (*queued)(const sq__exch_t *x);
    /* The handler finished the response (called once, by sq__exch_finished). */
    void (*finished)(sq__exch_t *x);
} sq__exch_ops_t;

/* HTTP/1's state of a connection (the transport keeps its own). */
enum {
    SQ__H1_IDLE,    /* between requests (idle queue) */
    SQ__H1_HEAD,    /* reading a request's headers (header queue) */
    SQ__H1_BODY,    /* reading a request body (body queue) */
    SQ__H1_HANDLER, /* the request is complete; a handler owns the response */
    SQ__H1_TAKEN,   /* taken over by another protocol (WebSocket) */
};

enum {
    SQ__HF_PAUSED = 1 << 0, /* parser paused while a response is outstanding */
    SQ__HF_DRAIN = 1 << 1,  /* parser paused until queued answers drain (back-pressure) */
};

/* A connection while it speaks HTTP/1 keeps its state in the transport's struct: the
 * request being read or answered in c->exch (the protocol's pointer), SQ__H1_* in
 * c->pstate and SQ__HF_* in c->pflags. Nothing more per connection. */

/* The connection's exchange, or NULL once it was taken over (c->exch is then the new
 * protocol's pointer). Every read of it in HTTP/1 goes through here. */
static inline sq__exch_t *sq__h1_x(const sq__conn_t *c)
{
    return c->pstate == SQ__H1_TAKEN ? NULL : c->exch;
}

/* HTTP/1 as a connection's protocol (h1_conn.c). */
SQ__HIDDEN extern const sq__proto_t sq__h1_proto;

/* lib/http/h1_parse.c: llhttp's callbacks for requests. A request's http_major and
 * http_minor hold SQ__H1_NO_VERSION until llhttp reads its version's digits. */
#define SQ__H1_NO_VERSION 0xff
SQ__HIDDEN extern const llhttp_settings_t sq__h1_settings;
/* A field name (any case) is `lower`: lower-case letters, digits and '-'. */
static inline bool sq__h1_name_is(const char *name, size_t len, const char *lower, size_t llen)
{
    if (len != llen)
        return false;
    for (size_t i = 0; i < len; i++)
        if ((name[i] | 0x20) != lower[i])
            return false;
    return true;
}
/* The target split into path and query, and matched: 0, or -1 out of memory. A reader
 * that scanned the target passes where its '?' is (NULL: none) and whether its path holds
 * a '%' (has_pct 0 or 1); -1: not known, looked for. */
SQ__HIDDEN int sq__h1_route(struct sq_req_s *x, const char *query, int has_pct);
/* The request was read whole: dispatch it; 0 when parsing goes on, else HPE_PAUSED. */
SQ__HIDDEN int sq__h1_complete(sq__conn_t *c, struct sq_req_s *x, bool keep_alive,
                               bool upgrade);
/* lib/http/h1_fast.c: a whole, plain request at *pos (HTTP/1.x, no framing but a
 * Content-Length whose body is at hand, nothing llhttp would treat apart) read without
 * llhttp and dispatched. end: just past the last LF before data_end, the end of the bytes.
 * -1: not such a request, nothing done (llhttp parses it); -2: it could not be taken
 * (x->err_status: out of memory); otherwise sq__h1_complete's answer, with *pos past the
 * request. */
SQ__HIDDEN int sq__h1_fast(sq__conn_t *c, struct sq_req_s *x, const char **pos,
                           const char *end, const char *data_end);
/* Adds the line endings of p..end to x->gap (the strict line-ending checks). */
SQ__HIDDEN void sq__h1_gap_scan(sq__exch_t *x, const char *p, const char *end,
                                bool to_blank_line);

/* lib/http/h1_conn.c */
/* Parses `len` bytes through the connection's current exchange. */
SQ__HIDDEN void sq__h1_process(sq__conn_t *c, const char *data, size_t len);
/* The current response is finished and queued: true when parsing goes on. */
SQ__HIDDEN bool sq__h1_response_done(sq__conn_t *c);
/* Pauses parsing while queued answers exceed max_pipeline_bytes; true when it paused. */
SQ__HIDDEN bool sq__h1_drain_pause(sq__conn_t *c);
/* Runs the matched handler (or answers 404/405/422/OPTIONS *). */
SQ__HIDDEN void sq__h1_dispatch(sq__conn_t *c, sq__exch_t *x);

/* lib/http/exchange.c */
/* A fresh exchange owned through `ops` by connection c, from the pool or new; NULL when
 * out of memory. The connection holds the first reference (SQ__XF_HOLD_CONN). */
SQ__HIDDEN sq__exch_t *sq__exch_get(sq_server_t *srv, const sq__exch_ops_t *ops,
                                    sq__conn_t *c);
/* The owner lets go: a handler still owning the response is told .aborted on the next
 * tick, and a blocking job is cancelled. */
SQ__HIDDEN void sq__exch_abort(sq__exch_t *x);
/* Tells each handler whose client went since the last tick, unless it finished first. */
SQ__HIDDEN bool sq__exch_deliver_aborts(sq_server_t *srv);
/* lib/http/h1_conn.c: a fresh exchange for the connection's next request. */
SQ__HIDDEN sq__exch_t *sq__h1_new_exch(sq__conn_t *c);
/* Frees the exchanges pooled for reuse (the server is going). */
SQ__HIDDEN void sq__exch_pool_free(sq_server_t *srv);

/* lib/http/exchange.c */
SQ__HIDDEN void sq__exch_release(struct sq_req_s *x, uint32_t which);
SQ__HIDDEN void sq__exch_finished(struct sq_req_s *x);
SQ__HIDDEN void sq__exch_hold(struct sq_req_s *x);
SQ__HIDDEN void sq__exch_unhold(struct sq_req_s *x);
/* lib/http/blocking.c: runs the matched blocking callback on the work pool; finishes
 * the response (503 when the pool refuses) and releases the handler's hold when done. */
SQ__HIDDEN void sq__blocking_dispatch(struct sq_req_s *x);

/* lib/http/response.c */
SQ__HIDDEN const char *sq__status_reason(int status);
/* A streamed body of a known length, and its end when it cannot be completed (the
 * connection closes): what lib/static sends files with. */
SQ__HIDDEN int sq__res_start_length(struct sq_res_s *res, int status, const char *ctype,
                                    uint64_t len);
SQ__HIDDEN int sq__res_abort(struct sq_res_s *res);

/* lib/http/request.c */
SQ__HIDDEN void sq__exch_reset(struct sq_req_s *x);

/* sq_res_write's free_cb for bytes to copy (response.c). */
#define SQ__WRITE_COPY ((sq_free_cb)1)

/* gzip (gzip.c) as the serializer sees it: what x->gz points to starts with its table,
 * which response.c calls only when x->gz is set — so a program that never turns gzip on
 * links neither gzip.c nor zlib. Each entry returns 1 when the response takes the plain
 * path, else what the public call returns (the response went compressed). */
typedef struct sq__gz_ops {
    int (*send)(struct sq_req_s *x, int status, const char *ctype, const void *body,
                size_t len, sq_free_cb free_cb, void *free_data);
    int (*start)(struct sq_req_s *x, int status, const char *ctype);
    int (*write)(struct sq_req_s *x, const void *data, size_t len, sq_free_cb free_cb,
                 void *free_data, sq_res_write_cb cb, void *cb_data);
    void (*end)(struct sq_req_s *x);  /* the trailer; x->gz is NULL after it */
    void (*drop)(struct sq_req_s *x); /* the exchange is reset: frees what is left */
} sq__gz_ops_t;
struct sq__gz {
    const sq__gz_ops_t *ops;
};

/* Checks the request against the route's declared operation (x->match.op, set) before
 * its handler runs: true when it may run; false when the request was answered (422, or
 * 500 out of memory). Also takes an {x:int} the router could not convert
 * (SQ__MATCH_BAD_PARAM), reporting it with the rest (validate.c). */
SQ__HIDDEN bool sq__h1_validate(struct sq_req_s *x);
/* The last query parameter `name`, as Starlette's QueryParams.get gives it (request.c). */
SQ__HIDDEN const char *sq__req_query_last(struct sq_req_s *x, const char *name);

/* Hooks (hooks.c): runs the before hooks from x->hook_i on; true when the request goes
 * on to its handler, false when a hook answered, failed (500) or waits (HOOK_WAIT). */
SQ__HIDDEN bool sq__h1_hooks_before(struct sq_req_s *x);
static inline bool sq__h1_run_before(struct sq_req_s *x)
{
    return !sq__app_tree_hooks(sq__hs(x->srv)->app, false) || sq__h1_hooks_before(x);
}
/* A new request begins: its id and start time (sq_req_id, sq_req_start_ns). */
SQ__HIDDEN void sq__h1_stamp(struct sq_req_s *x);
/* The after hooks, once per response, as its head is written. */
SQ__HIDDEN void sq__h1_hooks_after(struct sq_req_s *x, int status);
static inline void sq__h1_run_after(struct sq_req_s *x, int status)
{
    if (x->flags & SQ__XF_AFTER_RAN)
        return;
    x->flags |= SQ__XF_AFTER_RAN;
    if (sq__app_tree_hooks(sq__hs(x->srv)->app, true))
        sq__h1_hooks_after(x, status);
}
/* Answers status with {"detail": detail} (stolen; NULL: the reason phrase), or through
 * the nearest app's error handler for it. */
SQ__HIDDEN void sq__h1_error(struct sq_req_s *x, int status, json_t *detail);

/* Streamed bodies (h1_body.c): what a streamed body holds staged for its reader before
 * the parser pauses; the tick's part (delivers staged pieces and the end, resumes the
 * parser, closes once the handler answered early); and the reader told the client went. */
#define SQ__STREAM_STAGE (64 * 1024)
SQ__HIDDEN void sq__h1_resume(sq__conn_t *c); /* parse what waits, read again (h1_conn.c) */
SQ__HIDDEN void sq__h1_body_tick(sq__conn_t *c, struct sq_req_s *x);
SQ__HIDDEN void sq__h1_body_aborted(struct sq_req_s *x);

#endif
