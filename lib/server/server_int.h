/* squall — the transport's private structures: server, listener, connection, write queue,
 * and the functions lib/server offers the layers above (lib/http, lib/ws). */
#ifndef SQUALL_SERVER_INT_H
#define SQUALL_SERVER_INT_H

#include "internal.h"

/* Exchanges and write queues kept for reuse per server; with the buffer caps in
 * sq__exch_reset and wq_put, what a burst leaves behind stays under a few MiB. The server
 * object here is the transport's; HTTP's server (lib/http/h1_int.h) starts with it. */
#define SQ__POOL_MAX 64
#define SQ__WQ_WINDOW_MS 10000

/* A segment's completion, run once with the write's status (0, or negative when the bytes
 * were not sent). `fn` is the writer's own callback, passed through untyped and cast back
 * by `done`, which knows its type: the write queue knows nothing of what it carries. */
typedef void (*sq__wdone_cb)(sq__conn_t *conn, int status, void (*fn)(void), void *ud,
                             void *ud2);

/* One write batch: bytes copied into `buf`, plus segments that point at borrowed memory. */
typedef struct sq__wseg {
    const char *base;   /* NULL: the bytes are buf[off, off+len) */
    size_t off;
    size_t len;
    sq_free_cb free_cb; /* zero-copy segments: release `base` */
    void *free_ud;
    sq__wdone_cb done;  /* completion, or NULL */
    void (*fn)(void);
    void *ud;
    void *ud2;
} sq__wseg_t;

typedef struct sq__wbatch {
    sq__buf_t buf;
    sq__wseg_t *segs;
    unsigned nsegs, cap;
    unsigned ncb;       /* segments with a completion or a free callback */
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

/* How a connection's bytes move: a libuv stream (TCP, a Unix socket), memory (a test
 * sink: sq__mem_*), or TLS over a libuv stream (lib/server/tls.c). */
typedef struct sq__io {
    int (*read_start)(sq__conn_t *c);
    void (*read_stop)(sq__conn_t *c);
    /* Bytes taken at once (0 or more), or a negative libuv code (UV_EAGAIN: none). */
    int (*try_write)(sq__conn_t *c, const uv_buf_t *bufs, unsigned n);
    /* The rest, taken whole; cb(req, status) runs later on the loop. */
    int (*write)(sq__conn_t *c, uv_write_t *req, const uv_buf_t *bufs, unsigned n,
                 uv_write_cb cb);
    /* Bytes taken by write() and not yet handed to the kernel. */
    size_t (*queued)(const sq__conn_t *c);
    /* Shuts our side down once the queued bytes are out (a lingering close). */
    int (*shutdown)(sq__conn_t *c, uv_shutdown_t *req, uv_shutdown_cb cb);
    /* The peer's address as text ("127.0.0.1:5000", "[::1]:5000", "unix", "memory"):
     * 0, or libuv's error. */
    int (*peer)(const sq__conn_t *c, char *buf, size_t len);
    /* The connection is freed (after its handle's close callback). */
    void (*freed)(sq__conn_t *c);
} sq__io_t;

SQ__HIDDEN extern const sq__io_t sq__io_stream;
SQ__HIDDEN extern const sq__io_t sq__io_mem;
SQ__HIDDEN extern const sq__io_t sq__io_tls;

/* The transport's state of a connection; the protocol keeps its own. */
enum {
    SQ__CS_OPEN,    /* reading and writing for its protocol */
    SQ__CS_CLOSING, /* lingering before the close (reads drained), or uv_close called */
};

enum {
    SQ__CF_READ_STOPPED = 1 << 1,/* reading paused (back-pressure, or after EOF) */
    SQ__CF_CLOSE_AFTER = 1 << 2, /* close once the queued bytes are written */
    SQ__CF_LINGER = 1 << 3,      /* on that close, shut down writes and drain reads first */
    SQ__CF_IN_READ = 1 << 4,     /* inside a read callback: the flush happens at its end */
    SQ__CF_CLOSED = 1 << 5,      /* uv_close was called */
    SQ__CF_PIPE = 1 << 6,        /* a Unix domain socket */
    SQ__CF_EOF = 1 << 9,         /* the peer half-closed: nothing more will be read */
    SQ__CF_REDELIVER = 1 << 10,  /* the tick hands `pending` to the protocol's on_read */
    SQ__CF_MEM = 1 << 11,        /* bytes move through memory (sq__mem_*): no socket */
    SQ__CF_TICK = 1 << 12,       /* in the tick queue or the round being run (knext) */
    SQ__CF_TLS = 1 << 13,        /* TLS over the stream (lib/server/tls.c): its state
                                    ends the connection's srv->conn_size bytes */
};

/* A connection: a stream, its write queue and timeouts, and the protocol reading it, with
 * room for the protocol's own pointer and two bytes (HTTP/1 needs no more); a protocol
 * needing more would make srv->conn_size larger and follow this struct. */
struct sq__conn {
    union {
        uv_handle_t handle;
        uv_stream_t stream;
        uv_tcp_t tcp;
        uv_pipe_t pipe;
        uv_idle_t idle;   /* a memory connection's handle: only closed */
        struct {
            uv_idle_t handle;
            struct sq__memsink *sink; /* ...and its sink, in room a socket would take */
        } mem;
    } h;
    sq__list_t tnode;     /* a timeout queue */
    struct sq__conn *knext; /* the tick queue (SQ__CF_TICK) */
    uint64_t deadline;    /* for the timeout queue it is in */
    sq__wq_t *wq;         /* lent while bytes are queued */
    struct sq__pend *pending; /* bytes read that the protocol has not consumed yet */
    const sq__proto_t *proto;
    union {                /* the protocol's pointer: */
        void *proto_ud;    /* what a take-over gave (passed to its callbacks) */
        sq__exch_t *exch;  /* HTTP/1's (its callbacks ignore ud): the request being read
                              or answered */
    };
    uint16_t flags;       /* SQ__CF_* */
    uint8_t state;        /* SQ__CS_* */
    uint8_t tq;           /* which timeout queue tnode is in */
    uint8_t pstate;       /* two bytes of the protocol's own (HTTP/1: its state and */
    uint8_t pflags;       /* flags), where its struct would pad them to eight */
};

static inline sq_server_t *sq__conn_srv(const sq__conn_t *c)
{
    return (sq_server_t *)c->h.handle.data;
}

/* uv_now(loop) without the call into libuv, which returns this field (the loop's time in
 * ms, cached when the iteration began): read on every request by the timeout queues. */
static inline uint64_t sq__loop_now(const uv_loop_t *loop)
{
    return loop->time;
}

/* Bytes read and kept for later (pipelined behind a paused request, read before a
 * take-over): lent while there are some, a pointer per connection otherwise. */
typedef struct sq__pend {
    size_t len, cap;
    char base[];
} sq__pend_t;

static inline size_t sq__pend_len(const sq__conn_t *c)
{
    return c->pending != NULL ? c->pending->len : 0;
}
/* Appends n bytes (the buffer may move). 0 or UV_ENOMEM. */
SQ__HIDDEN int sq__pend_append(sq__conn_t *c, const char *p, size_t n);
SQ__HIDDEN void sq__pend_free(sq__conn_t *c);

/* How c's bytes move: a stream, memory or TLS (a flag, not a pointer per connection). */
static inline const sq__io_t *sq__conn_io(const sq__conn_t *c)
{
    if (SQ__LIKELY(!(c->flags & (SQ__CF_MEM | SQ__CF_TLS))))
        return &sq__io_stream;
    return c->flags & SQ__CF_MEM ? &sq__io_mem : &sq__io_tls;
}

/* SQ__TQ_TLS: accepted, the TLS handshake not done (opts.tls_handshake_timeout_ms). */
enum {
    SQ__TQ_NONE,
    SQ__TQ_HEAD,
    SQ__TQ_BODY,
    SQ__TQ_IDLE,
    SQ__TQ_LINGER,
    SQ__TQ_TLS,
    SQ__TQ_COUNT
};

typedef struct sq__slab_blk sq__slab_blk_t;

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
    sq_server_opts_t opts;
    sq__list_t listeners;
    /* The connections' blocks (slab.c): what they are allocated from is also how they
     * are found (sq__conns_each). A connection's server is its h.handle.data. */
    sq__slab_blk_t *slab, *slab_tail;
    sq__slab_blk_t *slab_spare; /* one empty block kept aside (not walked), or NULL */
    sq__list_t tq[SQ__TQ_COUNT]; /* timeout queues; each FIFO, so deadlines ascend */
    uint64_t tq_timeout[SQ__TQ_COUNT];
    /* Connections with work for the next tick, singly linked through knext (a pointer
     * per connection, not two), and the rest of the round being run. */
    sq__conn_t *ticks, **ticks_tail, *tick_round;
    size_t conn_size;           /* bytes of a connection with its first protocol's state */
    bool (*on_tick)(sq_server_t *srv); /* the server's own tick work (.aborted notices);
                                    true: more is queued */
    void (*on_free)(sq_server_t *srv); /* frees what the protocols keep per server */
    void (*on_listen)(sq_server_t *srv); /* the first listener is up */
    /* The server is closing: closes what the protocols keep; returns how many of those
     * close later, each calling sq__server_part_closed(srv) once when it has. */
    unsigned (*on_closing)(sq_server_t *srv);
    const sq__proto_t *proto0;  /* every connection's first protocol (HTTP/1) */
    uv_timer_t timer;
    uint64_t timer_due;         /* 0: not armed */
    /* The tick: runs before the loop polls (prepare) and after it (check); the idle handle
     * is started only while work is left that the poll must not wait on. */
    uv_prepare_t tick_prepare;
    uv_check_t tick_check;
    uv_idle_t tick_idle;
    char *rbuf;                 /* shared read buffer: used only inside one on_read */
    size_t rbuf_cap;
    sq__wq_t *wq_free;
    unsigned wq_free_n;
    /* How many the pool keeps: the most lent at once within the last two windows of
     * SQ__WQ_WINDOW_MS (at least SQ__POOL_MAX), so a broadcast to N connections reuses N
     * write states instead of allocating and freeing them on every message. */
    unsigned wq_lent, wq_peak, wq_peak_prev;
    uint64_t wq_window_at;
    /* The decimal text of the last request id a response head named (response.c): when
     * the next is that id + 1, as it is while one server takes the requests, the text is
     * counted up in place rather than made again digit by digit. rid_len 0: none yet. */
    uint64_t rid_last;
    char rid_text[20];          /* the most digits of a uint64_t; not NUL-terminated */
    uint8_t rid_len;
    uint64_t holds;             /* what else a closing server waits for (HTTP: exchanges) */
    unsigned nconns;
    unsigned nlisteners_open;
    unsigned nhandles;          /* timer, the tick's three: closed last */
    int port;
    bool closing;
    bool shutdown_due;          /* opts.on_shutdown is to run on the next tick */
    uint64_t grace_due;
    sq_server_close_cb close_cb;
    void *close_data;
    sq_server_stats_t stats;
    struct ssl_ctx_st *tls_ctx; /* opts.tls, a reference of the server's; NULL: plaintext */
    char *tls_buf;              /* plaintext decrypted in one read (TLS servers only) */
};

/* lib/server/conn.c: the transport */
SQ__HIDDEN void sq__conn_accept(sq_server_t *srv, uv_stream_t *listener, bool is_pipe);
SQ__HIDDEN int sq__conn_start(sq_server_t *srv, sq__conn_t *c);
SQ__HIDDEN void sq__conn_shutdown(sq__conn_t *conn);
/* slab.c: a zeroed connection of srv->conn_size bytes (NULL: out of memory); giving one
 * back; every connection allocated and not given back, to fn (which may close them); and
 * the blocks, once the last connection is gone. */
SQ__HIDDEN sq__conn_t *sq__conn_alloc(sq_server_t *srv);
SQ__HIDDEN void sq__conn_dealloc(sq_server_t *srv, sq__conn_t *c);
SQ__HIDDEN void sq__conns_each(sq_server_t *srv, void (*fn)(sq__conn_t *c));
SQ__HIDDEN void sq__slab_free(sq_server_t *srv);
/* Closes now: queued bytes are dropped, the protocol and a handler still answering are
 * told. */
SQ__HIDDEN void sq__conn_teardown(sq__conn_t *conn);
/* uv_read_start with the transport's callbacks. */
SQ__HIDDEN int sq__conn_read_start(sq__conn_t *conn);

/* Reads what arrived (nread > 0), or the end (nread < 0): the transport's read path,
 * for a transport that is not a libuv stream. */
SQ__HIDDEN void sq__conn_on_read(sq__conn_t *c, const char *data, ssize_t nread);

/* lib/server/io.c: a connection with no socket. What the server writes is appended to
 * sink->out; what sq__mem_feed gives is read. The sink is the caller's and must outlive
 * the connection: sink->conn is NULL and sink->closed true once it is freed. */
typedef struct sq__memsink {
    sq__buf_t out;       /* what the server wrote */
    sq__conn_t *conn;
    bool closed;         /* the connection was freed */
    bool write_shut;     /* the server shut its side down (lingering close) */
    void *shut;          /* that shutdown, while it has not completed */
} sq__memsink_t;
SQ__HIDDEN int sq__mem_accept(sq_server_t *srv, sq__memsink_t *sink);
/* Delivers bytes (len > 0) or the client's half-close (len == 0) to the connection. */
SQ__HIDDEN void sq__mem_feed(sq__memsink_t *sink, const void *data, size_t len);

/* lib/server/writeq.c */
SQ__HIDDEN sq__wbatch_t *sq__conn_batch(sq__conn_t *conn);
SQ__HIDDEN int sq__batch_add_copy(sq__wbatch_t *b, const void *data, size_t len);
/* Makes the last `len` bytes already appended to b->buf a segment. */
SQ__HIDDEN int sq__batch_commit(sq__wbatch_t *b, size_t len);
SQ__HIDDEN int sq__batch_add_ref(sq__wbatch_t *b, const void *base, size_t len,
                                 sq_free_cb free_cb, void *free_ud);
/* Gives the bytes queued so far in b a completion: done(conn, status, fn, ud, ud2) runs
 * once they have left (or failed). Returns 0 or UV_ENOMEM. */
SQ__HIDDEN int sq__batch_on_done(sq__wbatch_t *b, sq__wdone_cb done, void (*fn)(void),
                                 void *ud, void *ud2);
/* Runs the completion and free callbacks of a written (or failed) batch and empties it. */
SQ__HIDDEN void sq__batch_complete(sq__conn_t *conn, sq__wbatch_t *b, int status);
/* Sends the filling batch (one writev when the socket takes it all). */
SQ__HIDDEN void sq__conn_flush(sq__conn_t *conn);
SQ__HIDDEN void sq__wq_put(sq_server_t *srv, sq__wq_t *q);
/* The socket c's bytes go to, for a write that bypasses the queue (sendfile): 0 with
 * *fd set; UV_ENOTSUP when the bytes do not go to a socket unchanged (memory, TLS);
 * UV_EBUSY while bytes are queued or in flight; UV_ECANCELED once closing. */
SQ__HIDDEN int sq__conn_direct_fd(const sq__conn_t *c, uv_os_fd_t *fd);
/* Frees the write queues pooled for reuse (the server is going). */
SQ__HIDDEN void sq__wq_pool_free(sq_server_t *srv);

/* lib/server/timeouts.c */
SQ__HIDDEN void sq__timer_arm(sq_server_t *srv, uint64_t due);
/* Puts the connection at the tail of timeout list `which` (SQ__TQ_*), or takes it out. */
SQ__HIDDEN void sq__tq_put(sq__conn_t *conn, int which);
SQ__HIDDEN void sq__tq_drop(sq__conn_t *conn);
/* Queues the connection for the next tick; sq__tick_wake starts the tick. */
SQ__HIDDEN void sq__tick_add(sq__conn_t *conn);
SQ__HIDDEN void sq__tick_forget(sq__conn_t *conn);
SQ__HIDDEN void sq__tick_wake(sq_server_t *srv);
/* The tick's handles: init with the server, closed with it (close_cb once per handle). */
SQ__HIDDEN void sq__tick_init(sq_server_t *srv);
SQ__HIDDEN void sq__tick_close(sq_server_t *srv, uv_close_cb close_cb);
SQ__HIDDEN void sq__conn_want_flush(sq__conn_t *conn);

/* lib/server/tls.c: the bytes a TLS server adds to each connection (srv->conn_size
 * grows by them only when srv->tls_ctx is set), the server's TLS set-up from its options
 * (0, or UV_ENOMEM: nothing to undo then) and its end, and a TLS session for an accepted
 * connection (0, or UV_ENOMEM: the connection is plaintext yet and only to be closed). */
SQ__HIDDEN extern const size_t sq__tlsconn_size;
SQ__HIDDEN int sq__server_tls_init(sq_server_t *srv);
SQ__HIDDEN void sq__server_tls_free(sq_server_t *srv);
SQ__HIDDEN int sq__conn_tls_start(sq_server_t *srv, sq__conn_t *c);

/* lib/server/server.c: the transport's part of sq_server_create */
SQ__HIDDEN int sq__server_init(sq_server_t *srv);
/* One part of a closing server is gone: the last one calls the close callback and frees. */
SQ__HIDDEN void sq__server_part_closed(sq_server_t *srv);
/* lib/server/server.c: the last connection, listener or hold gone ends a closing server */
SQ__HIDDEN void sq__server_maybe_done(sq_server_t *srv);
/* Listens on every address of an addrinfo list (what sq_server_listen resolved). */
struct addrinfo;
SQ__HIDDEN int sq__server_listen_ai(sq_server_t *srv, const struct addrinfo *list, int port);

#endif
