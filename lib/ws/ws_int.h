/* squall — WebSocket internals shared by the core (ws.c), the server glue (ws_server.c)
 * and the client (ws_client.c). */
#ifndef SQUALL_WS_INT_H
#define SQUALL_WS_INT_H

#include <wslay/wslay.h>

#include "internal.h"
#include "squall/ws.h"

/* ---- UTF-8, checked incrementally across chunks and fragments (RFC 6455 §8.1) ---- */

typedef struct sq__utf8 {
    uint8_t need;   /* continuation bytes still expected */
    uint8_t lo, hi; /* the range allowed for the next continuation byte */
} sq__utf8_t;

static inline void sq__utf8_init(sq__utf8_t *u)
{
    u->need = 0;
    u->lo = 0x80;
    u->hi = 0xBF;
}
/* Feeds bytes; returns false at the first byte that cannot be part of valid UTF-8. */
SQ__HIDDEN bool sq__utf8_feed(sq__utf8_t *u, const uint8_t *p, size_t n);
/* True when the input so far ends on a character boundary. */
static inline bool sq__utf8_complete(const sq__utf8_t *u)
{
    return u->need == 0;
}

/* ---- the handshake (RFC 6455 §4) ---- */

/* Sec-WebSocket-Accept for a key: base64(SHA-1(key + GUID)); out holds 29 bytes. */
/* Sec-WebSocket-Accept for `key` (RFC 6455 §4.2.2): 28 characters and a NUL in out.
 * Returns 0, or UV_ENOMEM when OpenSSL cannot allocate. */
SQ__HIDDEN int sq__ws_accept_key(const char *key, size_t key_len, char out[29]);
/* Sets OpenSSL's SHA-1 up once, before any handshake needs it. 0 or UV_ENOMEM. */
SQ__HIDDEN int sq__ws_crypto_init(void);
/* True when `key` is base64 of 16 bytes (RFC 6455 §4.1). */
SQ__HIDDEN bool sq__ws_key_valid(const char *key);
/* True when the comma-separated header value contains `token` (case-insensitive). */
SQ__HIDDEN bool sq__header_has_token(const char *value, const char *token);

/* ---- frames ---- */

/* Or'ed into an opcode: the frame is not the last of its message (FIN clear). */
#define SQ__WS_NOFIN 0x100

/* Writes a frame header for `opcode` (FIN set unless SQ__WS_NOFIN is or'ed in) and `len`
 * payload bytes, masked with `mask` when not NULL. Returns its length (2 to 14 bytes). */
SQ__HIDDEN size_t sq__ws_frame_header(uint8_t *h, int opcode, uint64_t len, const uint8_t *mask);

/* ---- a WebSocket over a transport (server connection or client socket) ---- */

typedef struct sq__ws_io {
    /* Copies the bytes out; with notify, sq__ws_written runs once they left squall. */
    int (*write)(sq_ws_t *ws, const uv_buf_t *bufs, unsigned n, bool notify);
    /* Zero-copy: free_cb(base, free_ud) runs once squall is done with the bytes. */
    int (*write_ref)(sq_ws_t *ws, const void *base, size_t len, sq_free_cb free_cb,
                     void *free_ud, bool notify);
    size_t (*queued)(const sq_ws_t *ws);
    /* Closes the transport: after its queued bytes (graceful) or now (force). */
    void (*close)(sq_ws_t *ws, bool force);
    /* Stops (on = false) or restarts reading from the peer. */
    void (*read)(sq_ws_t *ws, bool on);
} sq__ws_io_t;

enum {
    SQ__WS_OPEN = 1 << 0,       /* .open ran */
    SQ__WS_CLOSED_CB = 1 << 1,  /* .close ran */
    SQ__WS_DEAD = 1 << 2,       /* transport closed: free when the stack unwinds */
    SQ__WS_IN_TEXT = 1 << 3,    /* the data message being received is text */
    SQ__WS_IN_CONTROL = 1 << 4, /* the frame being received is a control frame */
    SQ__WS_DRAIN = 1 << 5,      /* .drain is owed once the queue falls below half */
    SQ__WS_AWAIT_PONG = 1 << 6,
    SQ__WS_CLIENT = 1 << 7,
    SQ__WS_CLOSING = 1 << 8,    /* we sent a close frame; the close timer runs */
    SQ__WS_FAILED = 1 << 9,     /* we failed the connection (1002/1007/1009) */
    SQ__WS_CLOSE_QUEUED = 1 << 10, /* our close frame is queued or sent: no more sends */
    SQ__WS_READ_PAUSED = 1 << 11, /* reading stopped: our answers (pongs) are not taken */
    SQ__WS_FRAME_FIN = 1 << 12,   /* the data frame being received ends its message */
    SQ__WS_SENDING_FRAGS = 1 << 13, /* a fragmented message is being sent */
    SQ__WS_SEND_BINARY = 1 << 14,   /* ...and it is binary */
    SQ__WS_IN_MSG = 1 << 15,        /* a data message is being received (msg_since) */
};

struct sq_ws_s {
    uv_loop_t *loop;
    const sq_ws_handler_t *h;
    void *data;            /* the route's (or connect's) data */
    void *user;            /* sq_ws_set_data */
    sq_ws_opts_t opts;
    const sq__ws_io_t *io;
    void *transport;       /* sq__conn_t (server) or the client's socket */
    wslay_event_context_ptr ctx;
    const uint8_t *rptr;   /* bytes being fed to wslay */
    size_t rlen;
    sq__utf8_t utf8;
    sq__utf8_t send_utf8;  /* the fragmented text message being sent */
    uint32_t flags;
    unsigned depth;        /* nesting of our calls into wslay and the user */
    uv_timer_t timer;      /* every deadline below; fires at `due` */
    uint64_t due;          /* loop time the timer is armed for; 0: not armed */
    uint64_t last_rx;      /* a frame (or data of one) last arrived: the idle clock */
    uint64_t msg_since;    /* the data message being received began (SQ__WS_IN_MSG) */
    uint64_t close_since;  /* our close frame went out (SQ__WS_CLOSING) */
    uint64_t ping_sent_at; /* the last keepalive ping (0: none yet) */
    uint64_t added;        /* bytes handed to the transport, ever */
    uint64_t stall_since;  /* queued bytes last moved (or began to wait); 0: none queued */
    uint64_t stall_out;    /* ...and how many had gone out then (added - queued) */
    const char *why;       /* the reason squall closed with itself, for .close */
    const char *subprotocol;
    sq__buf_t scratch;     /* client: masked frames are built here */
    sq__buf_t msg;         /* the data message being reassembled (max_message_bytes) */
    uint8_t msg_opcode;    /* its opcode: text or binary */
    char close_reason[124];
    int close_code;        /* what .close reports when no close frame counts: 1006, or the
                              code squall itself closed with (see sq__ws_transport_closed) */
    int error;             /* client: why connecting failed (sq_ws_error), or 0 */
    sq_watchdog_t *wd;     /* the server's: times the handler's callbacks; or NULL */
    const char *name;      /* the route pattern, for the watchdog */
};

/* Options and handler tables from the caller, whose header decided their size
 * (common.h, "Structs that grow"): each fills the library's full struct, defaults for
 * what the caller's lacks. opts may be NULL (defaults). Return 0, UV_EINVAL (opts->size
 * is 0) or UV_ENOTSUP (a newer header's field is set). */
SQ__HIDDEN void sq__ws_opts_defaults(sq_ws_opts_t *o);
SQ__HIDDEN int sq__ws_opts_in(sq_ws_opts_t *o, const sq_ws_opts_t *opts);
SQ__HIDDEN int sq__ws_handler_in(sq_ws_handler_t *h, const sq_ws_handler_t *handler,
                                 size_t size);
/* `h` is borrowed until .close returns; `opts` (full, see above) is copied. */
SQ__HIDDEN int sq__ws_create(sq_ws_t **out, uv_loop_t *loop, bool client,
                             const sq_ws_handler_t *h, void *data, const sq_ws_opts_t *opts,
                             const sq__ws_io_t *io, void *transport);
/* The handshake is done: .open runs (req may be NULL), keepalive starts. */
SQ__HIDDEN void sq__ws_open(sq_ws_t *ws, sq_req_t *req);
/* Bytes from the peer (n > 0) or the end of the stream (n < 0). */
SQ__HIDDEN void sq__ws_feed(sq_ws_t *ws, const char *data, ssize_t n);
/* The transport is closing: .close runs (once), then ws is freed. */
SQ__HIDDEN void sq__ws_transport_closed(sq_ws_t *ws);
/* Bytes written with notify left squall. */
SQ__HIDDEN void sq__ws_written(sq_ws_t *ws, int status);
/* Reports a failure before open (client) and frees ws. */
SQ__HIDDEN void sq__ws_fail_before_open(sq_ws_t *ws, const char *reason);

/* ws.c: every byte squall queues goes through these two (they count it for the stall
 * check); and what runs after each callback into the user: flush, deadlines, or free. */
SQ__HIDDEN int sq__ws_io_write(sq_ws_t *ws, const uv_buf_t *bufs, unsigned n, bool notify);
SQ__HIDDEN int sq__ws_io_write_ref(sq_ws_t *ws, const void *base, size_t len,
                                   sq_free_cb free_cb, void *free_ud, bool notify);
SQ__HIDDEN void sq__ws_after(sq_ws_t *ws);
/* ws_send.c: one whole message (FIN set) framed straight into the transport's queue. */
SQ__HIDDEN int sq__ws_write_frame(sq_ws_t *ws, int opcode, const void *msg, size_t len,
                                  bool notify);

#endif
