/* squall — WebSocket internals shared by the core (ws.c), the server glue (ws_server.c)
 * and the client (ws_client.c). */
#ifndef SQUALL_WS_INT_H
#define SQUALL_WS_INT_H

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

/* ---- frames (RFC 6455 §5.2) ---- */

/* Opcodes (§5.2, §11.8). */
enum {
    SQ__WS_OP_CONT = 0x0,
    SQ__WS_OP_TEXT = 0x1,
    SQ__WS_OP_BINARY = 0x2,
    SQ__WS_OP_CLOSE = 0x8, /* control frames have the high bit of the opcode set (§5.5) */
    SQ__WS_OP_PING = 0x9,
    SQ__WS_OP_PONG = 0xA,
};

/* The largest control frame payload (§5.5). */
#define SQ__WS_CONTROL_MAX 125

/* Or'ed into an opcode: the frame is not the last of its message (FIN clear). */
#define SQ__WS_NOFIN 0x100

/* Writes a frame header for `opcode` (FIN set unless SQ__WS_NOFIN is or'ed in) and `len`
 * payload bytes, masked with `mask` when not NULL. Returns its length (2 to 14 bytes). */
SQ__HIDDEN size_t sq__ws_frame_header(uint8_t *h, int opcode, uint64_t len, const uint8_t *mask);
/* XORs `n` bytes in place with the 4-byte `mask`, starting at byte `phase` (0-3) of it
 * (§5.3), eight bytes at a time. Returns the phase for the byte after the last. */
SQ__HIDDEN unsigned sq__ws_mask(uint8_t *p, size_t n, const uint8_t mask[4], unsigned phase);
/* RFC 6455 §7.4.1-2: the codes a close frame may carry (sent or received). */
SQ__HIDDEN bool sq__ws_close_code_valid(int code);

/* The incoming frame being read (frame.c): a few dozen bytes, whatever the frame's size. */
typedef struct sq__ws_rx {
    uint64_t left;     /* payload bytes of the frame still to come */
    uint8_t *ctl;      /* a control frame's payload split between reads: 125 bytes lent
                          while it comes in, NULL otherwise */
    uint8_t hdr[14];   /* the header, when it comes in pieces */
    uint8_t hlen;      /* header bytes collected (0: none) */
    uint8_t op;        /* the frame's opcode */
    uint8_t mask[4];   /* its masking key (§5.3) */
    uint8_t phase;     /* the mask byte of the next payload byte */
    uint8_t ctl_len;   /* bytes in ctl */
    bool fin;          /* the frame ends its message */
    bool payload;      /* the header is read: payload bytes come next */
    bool masked;
    bool rsv1;         /* RSV1: the message this frame begins is compressed (RFC 7692 §6) */
} sq__ws_rx_t;

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
    SQ__WS_RX_FRAG = 1 << 4,    /* a fragmented message is open: the next data frame must
                                   be its continuation (RFC 6455 §5.4) */
    SQ__WS_DRAIN = 1 << 5,      /* .drain is owed once the queue falls below half */
    SQ__WS_AWAIT_PONG = 1 << 6,
    SQ__WS_CLIENT = 1 << 7,
    SQ__WS_CLOSING = 1 << 8,    /* we sent a close frame; the close timer runs */
    SQ__WS_FAILED = 1 << 9,     /* we failed the connection (1002/1007/1009) */
    SQ__WS_CLOSE_QUEUED = 1 << 10, /* our close frame is sent (or failing): no more sends */
    SQ__WS_READ_PAUSED = 1 << 11, /* reading stopped: our answers (pongs) are not taken */
    SQ__WS_CLOSE_RCVD = 1 << 12,  /* the peer's close frame arrived (rx_code holds its code) */
    SQ__WS_SENDING_FRAGS = 1 << 13, /* a fragmented message is being sent */
    SQ__WS_SEND_BINARY = 1 << 14,   /* ...and it is binary */
    SQ__WS_IN_MSG = 1 << 15,        /* a data message is being received (msg_since) */
    SQ__WS_CLOSE_SENT = 1 << 16,    /* our close frame went to the transport */
    SQ__WS_RX_OFF = 1 << 17,        /* nothing more is read: the peer's close frame came,
                                       or we failed the connection */
    SQ__WS_RX_DEFLATE = 1 << 18,    /* the data message being received is compressed */
    SQ__WS_SEND_DEFLATE = 1 << 19,  /* the fragmented message being sent is compressed */
};

typedef struct sq__ws_clock sq__ws_clock_t; /* clock.c */
typedef struct sq__ws_pmd sq__ws_pmd_t;     /* deflate.c */

struct sq_ws_s {
    uv_loop_t *loop;
    const sq_ws_handler_t *h;
    void *data;            /* the route's (or connect's) data */
    void *user;            /* sq_ws_set_data */
    const sq_ws_opts_t *opts; /* the route's (or the client's) copy: lives longer than ws */
    const sq__ws_io_t *io;
    void *transport;       /* sq__conn_t (server) or the client's socket */
    sq__ws_rx_t rx;        /* the frame being read */
    sq__utf8_t utf8;       /* the text message being received */
    sq__utf8_t send_utf8;  /* the fragmented text message being sent */
    uint16_t rx_code;      /* the code of the peer's close frame (0: it had none) */
    uint32_t flags;
    unsigned depth;        /* nesting of our calls into the reader and the user */
    int close_code;        /* what .close reports when no close frame counts: 1006, or the
                              code squall itself closed with (see sq__ws_transport_closed) */
    int error;             /* client: why connecting failed (sq_ws_error), or 0 */
    uint32_t slot;         /* in the clock's heap; UINT32_MAX: not in it */
    sq__ws_clock_t *clock; /* the loop's: every deadline below; fires at `due` */
    uint64_t due;          /* loop time the clock is armed for; 0: not armed */
    uint64_t last_rx;      /* a frame (or data of one) last arrived: the idle clock */
    uint64_t msg_since;    /* the data message being received began (SQ__WS_IN_MSG) */
    uint64_t close_since;  /* our close frame went out (SQ__WS_CLOSING) */
    uint64_t ping_sent_at; /* the last keepalive ping (0: none yet) */
    uint64_t added;        /* bytes handed to the transport, ever */
    uint64_t stall_since;  /* queued bytes last moved (or began to wait); 0: none queued */
    uint64_t stall_out;    /* ...and how many had gone out then (added - queued) */
    const char *why;       /* the reason squall closed with itself, for .close */
    char *peer_reason;     /* the reason in the peer's close frame (malloc'd), or NULL */
    const char *subprotocol;
    sq__buf_t msg;         /* a data message split between frames or reads, reassembled
                              (max_message_bytes); freed after each */
    sq_watchdog_t *wd;     /* the server's: times the handler's callbacks; or NULL */
    const char *name;      /* the route pattern, for the watchdog */
    sq__ws_pmd_t *pmd;     /* permessage-deflate, when agreed (deflate.c); else NULL */
};

/* ---- clock.c: one timer per loop for the deadlines of its WebSockets ---- */

/* Joins ws to its loop's clock (made on first use). 0 or UV_ENOMEM. */
SQ__HIDDEN int sq__ws_clock_get(sq_ws_t *ws, uv_loop_t *loop);
/* Leaves it (disarmed); the last WebSocket of a loop closes the clock's timer. */
SQ__HIDDEN void sq__ws_clock_release(sq_ws_t *ws);
/* sq__ws_on_deadline(ws) runs at loop time `due` (a time passed: at the next turn of the
 * loop). Replaces an earlier arming. */
SQ__HIDDEN void sq__ws_clock_arm(sq_ws_t *ws, uint64_t due);
SQ__HIDDEN void sq__ws_clock_disarm(sq_ws_t *ws);
/* ws.c: the time ws was armed for came (ws->due is 0 again). */
SQ__HIDDEN void sq__ws_on_deadline(sq_ws_t *ws);

/* Options and handler tables from the caller, whose header decided their size
 * (common.h, "Structs that grow"): each fills the library's full struct, defaults for
 * what the caller's lacks. opts may be NULL (defaults). Return 0, UV_EINVAL (opts->size
 * is 0) or UV_ENOTSUP (a newer header's field is set). */
SQ__HIDDEN void sq__ws_opts_defaults(sq_ws_opts_t *o);
SQ__HIDDEN int sq__ws_opts_in(sq_ws_opts_t *o, const sq_ws_opts_t *opts);
SQ__HIDDEN int sq__ws_handler_in(sq_ws_handler_t *h, const sq_ws_handler_t *handler,
                                 size_t size);
/* `h` and `opts` (full, see above) are borrowed until ws is freed (after .close). */
SQ__HIDDEN int sq__ws_create(sq_ws_t **out, uv_loop_t *loop, bool client,
                             const sq_ws_handler_t *h, void *data, const sq_ws_opts_t *opts,
                             const sq__ws_io_t *io, void *transport);
/* The handshake is done: .open runs (req may be NULL), keepalive starts. */
SQ__HIDDEN void sq__ws_open(sq_ws_t *ws, sq_req_t *req);
/* Bytes from the peer (n > 0) or the end of the stream (n < 0). The bytes are the
 * transport's read buffer, which nothing reads again once this returns: they are unmasked
 * in place, and a message that lies whole in them is handed to .message from there. */
SQ__HIDDEN void sq__ws_feed(sq_ws_t *ws, char *data, ssize_t n);
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
/* ws_send.c: our close frame (code 0: no body; the reason is cut at 123 bytes); the close
 * handshake's deadline starts. One per connection: later calls send nothing. */
SQ__HIDDEN int sq__ws_send_close(sq_ws_t *ws, int code, const void *reason, size_t len);
/* ws.c: fails the connection (RFC 6455 §7.1.7): a close frame with `code` and `why` as
 * its reason (unless ours went already), nothing more read, TCP closed once it is
 * written; .close reports the code and `why` (a string that lives as long as the
 * program). A protocol error (1002) has why NULL: the code says it all, and .close gets
 * "" (test: ws_peers/ws_client_app_failures_are_one_line_on_stderr_and_exit_1). */
SQ__HIDDEN void sq__ws_fail(sq_ws_t *ws, int code, const char *why);
/* ws.c: the data message being reassembled is given up; its memory goes now. */
SQ__HIDDEN void sq__ws_drop_partial(sq_ws_t *ws);

/* ---- deflate.c: permessage-deflate (RFC 7692) ---- */

/* Or'ed into an opcode for sq__ws_frame_header: RSV1 set (a compressed message's first
 * frame, RFC 7692 §6). */
#define SQ__WS_RSV1 0x200

/* Room for an offer or an answer: the longest, every parameter with a two-digit value,
 * is 127 bytes with its NUL. */
#define SQ__WS_PMD_HDR 160

/* What the handshake agreed: each side's window and whether it resets after each
 * message. "tx" is what this side sends (compresses), "rx" what it receives. */
typedef struct sq__ws_pmd_conf {
    uint8_t tx_bits, rx_bits;
    bool tx_no_ctx, rx_no_ctx;
} sq__ws_pmd_conf_t;

/* Server: reads the client's offers (every Sec-WebSocket-Extensions line of the request,
 * joined with commas in `offers`), and picks the first permessage-deflate offer it can
 * honour (RFC 7692 §5, §7.1): an offer with an unknown or repeated parameter, or a value
 * out of range, is declined, as is one asking for a window of 8 bits for our side.
 * Returns true and fills `conf` and `answer` (the Sec-WebSocket-Extensions value, NUL-
 * terminated, at most SQ__WS_PMD_HDR bytes with its NUL) when one is accepted; false otherwise (the
 * connection goes on without compression). */
SQ__HIDDEN bool sq__ws_pmd_server_answer(const sq_ws_opts_t *o, const char *offers,
                                         sq__ws_pmd_conf_t *conf, char answer[SQ__WS_PMD_HDR]);
/* Client: the offer (the Sec-WebSocket-Extensions value) for these options, in `offer`
 * (SQ__WS_PMD_HDR bytes with its NUL). */
SQ__HIDDEN void sq__ws_pmd_client_offer(const sq_ws_opts_t *o, char offer[SQ__WS_PMD_HDR]);
/* Client: checks the server's answer (every Sec-WebSocket-Extensions line joined with
 * commas) against the offer made with `o` (RFC 7692 §7.1): one permessage-deflate
 * element, known parameters once each, values in range. Returns true and fills conf, or
 * false (the client fails the connection). */
SQ__HIDDEN bool sq__ws_pmd_client_check(const sq_ws_opts_t *o, const char *answer,
                                        sq__ws_pmd_conf_t *conf);
/* Starts compression on ws as agreed (no zlib state yet: it comes with the first
 * compressed message). 0 or UV_ENOMEM. */
SQ__HIDDEN int sq__ws_pmd_start(sq_ws_t *ws, const sq__ws_pmd_conf_t *conf);
/* Frees ws->pmd and its zlib state. */
SQ__HIDDEN void sq__ws_pmd_free(sq_ws_t *ws);
/* Sends one data frame (a whole message, or a fragment: SQ__WS_NOFIN, SQ__WS_OP_CONT),
 * compressed when the message is (RFC 7692 §7.2.1); otherwise as sq__ws_write_frame.
 * Returns as sq__ws_write_frame, or UV_ENOMEM. */
SQ__HIDDEN int sq__ws_pmd_send(sq_ws_t *ws, int opcode, const void *msg, size_t len,
                               bool notify);
/* Inflates n bytes of a compressed message being received into ws->msg (RFC 7692
 * §7.2.2); `last`: they end the message, the 0x00 0x00 0xff 0xff tail is added. Text is
 * checked as it comes out. Stops as soon as the output passes max_message_bytes (1009);
 * a broken stream is 1007. Returns true, or false once it failed the connection. */
SQ__HIDDEN bool sq__ws_pmd_inflate(sq_ws_t *ws, const uint8_t *p, size_t n, bool last);
/* Bytes of zlib state ws holds now (0 without deflate, or between messages without
 * context takeover): for tests and measurements. */
SQ__HIDDEN size_t sq__ws_pmd_held(const sq_ws_t *ws);
/* The compressed message being received is over (delivered or given up): the inflater
 * is freed when the peer resets it after each message. */
SQ__HIDDEN void sq__ws_pmd_rx_done(sq_ws_t *ws);

/* RFC 6455 §7.1.4: once our close frame is sent (the application's sq_ws_close, or a
 * failure), data frames that still arrive are read, to reach the peer's close frame,
 * but dropped, as browsers do in the CLOSING state: no .message after a close (test:
 * ws/data_after_the_applications_close_is_not_delivered). */
static inline bool sq__ws_dropping_data(const sq_ws_t *ws)
{
    return (ws->flags & (SQ__WS_CLOSE_QUEUED | SQ__WS_FAILED | SQ__WS_DEAD)) != 0;
}

/* Runs a user callback under the server's watchdog, named by the route (asyncio's debug
 * mode names the slow callback; a NULL watchdog measures nothing). */
#define SQ__WS_TIMED(ws, call)                                                             \
    do {                                                                                   \
        sq_watchdog_span_t span_;                                                          \
        sq_watchdog_span_begin((ws)->wd, &span_, (ws)->name);                              \
        call;                                                                              \
        sq_watchdog_span_end((ws)->wd, &span_);                                            \
    } while (0)

#endif
