/* squall — WebSocket (RFC 6455), server and client, framed by squall over libuv streams.
 *
 *     static void on_msg(sq_ws_t *ws, int binary, const char *msg, size_t len, void *data)
 *     {
 *         sq_ws_send(ws, binary, msg, len);   // echo
 *     }
 *     static const sq_ws_handler_t echo = {.message = on_msg};
 *     sq_app_websocket(app, "/ws/echo", &echo, NULL, NULL);
 *
 * A WebSocket is valid from .open until .close returns; squall frees it then. All calls are
 * for the loop thread (the thread running the loop of the server, or of sq_ws_connect,
 * the WebSocket belongs to), and every callback of sq_ws_handler_t runs there, from the
 * loop — never from inside the squall call that caused it, with the one exception said
 * at sq_ws_close (a client cancelled while connecting). Outgoing bytes are copied before
 * a send returns (except with sq_ws_send_frame, which shares one prepared frame among
 * many connections of one loop).
 *
 * Pointers handed to a callback (`msg`, `payload`, `reason`, the upgrade request) are
 * borrowed: valid until the callback returns; copy what you keep.
 */
#ifndef SQUALL_WS_H
#define SQUALL_WS_H

#include "common.h"
#include "req.h"
#include "router.h"

typedef struct sq_ws_s sq_ws_t;

/* RFC 6455 §7.4.1 close codes squall uses. */
enum {
    SQ_WS_NORMAL = 1000,
    SQ_WS_GOING_AWAY = 1001,
    SQ_WS_PROTOCOL_ERROR = 1002,
    SQ_WS_UNSUPPORTED = 1003,
    SQ_WS_NO_STATUS = 1005,   /* reported only: the close frame had no code */
    SQ_WS_ABNORMAL = 1006,    /* reported only: the connection dropped without a close frame */
    SQ_WS_INVALID_DATA = 1007,/* e.g. invalid UTF-8 in a text message */
    SQ_WS_POLICY = 1008,
    SQ_WS_TOO_BIG = 1009,
    SQ_WS_INTERNAL = 1011,
    SQ_WS_SERVICE_RESTART = 1012,
    SQ_WS_TRY_AGAIN = 1013,
};

/* What happens when a send would take a connection's queued bytes past max_queued_bytes
 * (a slow consumer). */
typedef enum {
    SQ_WS_OVERFLOW_CLOSE = 0,   /* close with 1008 (policy violation); the send fails */
    SQ_WS_OVERFLOW_TRY_AGAIN,   /* close with 1013 (try again later); the send fails */
    SQ_WS_OVERFLOW_DROP,        /* drop this message (UV_ENOBUFS); the connection stays */
} sq_ws_overflow_t;

/* Options of a route (sq_app_websocket) or a client (sq_ws_connect), filled with the
 * defaults by sq_ws_opts_init. For every size and every time, 0 means no limit: the check
 * is off. A connection taken over from HTTP leaves the server's own timeouts (header,
 * body, idle), so these deadlines are the only ones a WebSocket has. */
typedef struct sq_ws_opts {
    size_t size; /* sizeof the caller's struct: set by sq_ws_opts_init (common.h, "Structs
                    that grow": fields missing from an older header take their defaults) */
    /* A received message (all its fragments) past this closes with 1009 (RFC 6455 §10.4).
     * 16 MiB; 0: no limit. */
    size_t max_message_bytes;
    /* Outgoing bytes not yet taken by the kernel; a send past it applies `overflow`, and
     * past it squall stops reading a peer whose answers (pongs) pile up. 4 MiB; 0: no
     * limit. */
    size_t max_queued_bytes;
    /* What a send past max_queued_bytes does. SQ_WS_OVERFLOW_CLOSE (which is 0). */
    sq_ws_overflow_t overflow;
    /* Send a ping this often (RFC 6455 §5.5.2); the peer's pongs keep it from being idle.
     * 20 s; 0: no pings. */
    uint64_t ping_interval_ms;
    /* After a keepalive ping, drop the connection (.close gets 1006, "pong timeout") if no
     * pong comes back within this. 20 s; 0: pings are sent without waiting for pongs. */
    uint64_t pong_timeout_ms;
    /* After our close frame went out, wait this long for the peer's (RFC 6455 §7.1.1),
     * then drop TCP. 5 s; 0: no limit of its own (idle_timeout_ms, restarted when the
     * close frame went, still ends a peer that sends nothing). */
    uint64_t close_timeout_ms;
    /* Client: DNS + connect + handshake. 10 s; 0: no limit. */
    uint64_t handshake_timeout_ms;
    const char *const *subprotocols; /* NULL-terminated, in preference order; NULL: none */
    /* No frame received for this long: close with 1001 (going away, RFC 6455 §7.4.1),
     * reason "idle timeout". Also: outgoing bytes that have not moved for this long (a
     * peer that does not read) drop the connection (.close gets 1006, "send stalled");
     * both are checked at this pace, so the stall may take up to twice as long. While
     * squall has stopped reading a peer whose answers pile up, only the stall counts
     * (the idle clock and the pong wait stand). 60 s; 0: off. */
    uint64_t idle_timeout_ms;
    /* A data message must be received whole — from its first frame's header to its last
     * byte, across fragments — within this, else close with 1008 (policy violation: a
     * message trickled in holds up to max_message_bytes of memory). 60 s; 0: off. */
    uint64_t message_timeout_ms;
    /* permessage-deflate (RFC 7692; docs/deflate.md). Off by default. A route with
     * `deflate` set accepts the first offer of a client it can honour (and answers it in
     * Sec-WebSocket-Extensions); a client with it set offers the extension. When it is
     * agreed, data messages of `deflate_threshold` bytes or more are sent compressed
     * (RSV1 set on their first frame), smaller ones and every control frame as they are;
     * either kind is received. A compressed message is inflated in bounded steps and
     * closed with 1009 as soon as its inflated size passes max_message_bytes; a broken
     * stream closes with 1007. 0: off. */
    int deflate;
    /* 1: this side compresses each message on its own (RFC 7692 §7.1.1): its compressor
     * exists only while a message is compressed. Server: also what a client's
     * server_no_context_takeover gets; client: offered as client_no_context_takeover.
     * 0 (default): the window carries from message to message (better ratio, and the
     * compressor's memory stays while the connection lives). */
    int deflate_no_context_takeover;
    /* 1: ask the peer to compress each message on its own, so that this side's inflater
     * exists only while a message is received. Server: answered as
     * client_no_context_takeover (a client must accept it); client: offered as
     * server_no_context_takeover (a server may decline it). 0 (default). */
    int deflate_peer_no_context_takeover;
    /* log2 of this side's LZ77 window, 9-15 (a peer's smaller *_max_window_bits lowers
     * it; one asking for 8 is declined, zlib cannot compress with 256 bytes). The
     * compressor's memory is about 2^(bits+2) + 2^(mem_level+9) bytes: 32 KiB with the
     * defaults, 256 KiB with 15 and 8 (zlib's own defaults). 12. */
    int deflate_window_bits;
    /* log2 of the window asked of the peer, 8-15 (server: client_max_window_bits, when
     * the client offered it; client: server_max_window_bits): this side's inflater holds
     * 2^bits bytes (and about 7 KiB of zlib's state). 12. */
    int deflate_peer_window_bits;
    /* zlib's memLevel for this side's compressor, 1-9 (less memory, less speed). 5. */
    int deflate_mem_level;
    /* zlib's compression level, 0-9, or -1 for zlib's default (6). -1. */
    int deflate_level;
    /* Messages shorter than this go uncompressed. A fragmented message
     * (sq_ws_send_fragment) is compressed unless its first fragment ends it and is
     * shorter. A broadcast frame (sq_ws_frame_create) is never compressed. 128. */
    size_t deflate_threshold;
    /* Client, wss://: a PEM file of CA certificates trusted besides the system's store (a
     * private CA, tests); NULL (default): the system's store only. A route ignores it. */
    const char *tls_ca_file;
    /* Client, wss://: 1 connects WITHOUT checking the server's certificate or host name
     * (anyone on the path can read and change the traffic; tests only). 0 (default):
     * checked, against the host of the URL (RFC 6125). A route ignores it. */
    int tls_insecure;
    unsigned reserved0; /* 0. Fills what would be tail padding (see sq_server_opts_t) */
} sq_ws_opts_t;

/* The largest message one send takes: libuv's buffers count 32 bits, and a frame header
 * adds up to 14 bytes. Larger messages go in fragments (sq_ws_send_fragment). */
#define SQ_WS_MAX_SEND_BYTES ((size_t)UINT32_MAX - 14)

/* What sq_ws_opts_init calls: fills the `size` bytes of opts with the defaults and sets
 * opts->size. Call sq_ws_opts_init. */
SQ_EXTERN void sq_ws_opts_init_sized(sq_ws_opts_t *opts, size_t size);
/* Fills opts with the defaults above and sets opts->size. */
static inline void sq_ws_opts_init(sq_ws_opts_t *opts)
{
    sq_ws_opts_init_sized(opts, sizeof(*opts));
}

/* Handshake decision for a server route, called before the upgrade with the request (its
 * Origin, path params, query...; borrowed, valid during the call). Return 0 to accept, or
 * an HTTP status 400-599 (e.g. 403) to refuse (any other value refuses with 403).
 * `*subprotocol` holds squall's choice (the first of opts.subprotocols the client
 * offered, or NULL); the hook may change it to one of the client's offers (a string that
 * lives as long as the route). Runs on the server's loop thread, while the upgrade
 * request is dispatched, as a handler does. */
typedef int (*sq_ws_accept_cb)(sq_req_t *req, const char **subprotocol, void *data);

/* A WebSocket handler table, usually a `static const` one. It grows by squall's rule
 * (common.h, "Structs that grow"): sq_app_websocket and sq_ws_connect pass its size and
 * squall copies it, so a table from an older header leaves the callbacks it lacks unset.
 * Every callback runs on the WebSocket's loop thread, from the loop (see the top of this
 * header), and gets the `data` given to sq_app_websocket or sq_ws_connect. */
typedef struct sq_ws_handler {
    /* The connection is open. Server side: `req` is the upgrade request, valid only during
     * this call (path params, query, headers). Client side: req is NULL. Runs when the
     * handshake completes: server side while the upgrade request is dispatched; client
     * side when the server's answer has been read. */
    void (*open)(sq_ws_t *ws, sq_req_t *req, void *data);
    /* A whole message (fragments reassembled; text checked to be UTF-8). `msg` is valid
     * during the call only. Never called once this side's close frame is queued (after
     * sq_ws_close, or a failure): data still arriving is read and dropped, RFC 6455
     * §7.1.4's CLOSING state. */
    void (*message)(sq_ws_t *ws, int binary, const char *msg, size_t len, void *data);
    /* The connection is closed. `code` is the peer's close code (SQ_WS_NO_STATUS when its
     * close frame had none); or the code squall closed with when it failed the connection
     * (1002, 1007, 1009), a message missed message_timeout_ms (1008), the peer was idle
     * (1001) or a slow consumer (1008, 1013) and the peer never answered; or
     * SQ_WS_ABNORMAL when it dropped without a close frame (and when squall dropped it:
     * "pong timeout", "send stalled"), and on the client side when connecting failed
     * (then `reason` says why and .open was never called). `reason` is the peer's, or,
     * when the code is squall's own, why squall closed ("idle timeout", "message too
     * big", ...; "" for a protocol error, 1002); valid during the call. ws is freed after this returns. Runs once for
     * every WebSocket, from the loop, except for a client still connecting that
     * sq_ws_close cancels: then it runs inside that call. */
    void (*close)(sq_ws_t *ws, int code, const char *reason, void *data);
    /* A pong arrived (optional). `payload` is valid during the call. */
    void (*pong)(sq_ws_t *ws, const char *payload, size_t len, void *data);
    /* Queued outgoing bytes fell back below half of max_queued_bytes after having been
     * above it (optional): a producer that paused may go on. Runs when a write completes,
     * from the loop, never inside a send. */
    void (*drain)(sq_ws_t *ws, void *data);
    /* Server: accept or refuse the handshake (optional; default accepts). */
    sq_ws_accept_cb accept;
} sq_ws_handler_t;

/* What sq_app_websocket calls, with sizeof the caller's handler table. Call
 * sq_app_websocket. */
SQ_EXTERN int sq_app_websocket_sized(sq_app_t *app, const char *pattern,
                                     const sq_ws_handler_t *handler, size_t handler_size,
                                     const sq_ws_opts_t *opts, void *data);
/* Binds a WebSocket handler to a path pattern (same patterns as sq_app_route): a GET with
 * a valid RFC 6455 §4.2.1 handshake is upgraded; a GET without one gets 426 (no upgrade
 * tokens, or a missing or wrong Sec-WebSocket-Version; the response names version 13) or
 * 400 (bad or repeated key, HTTP/1.0). Connection, Upgrade and Sec-WebSocket-Protocol
 * may be split over several header lines (RFC 9110 §5.3). Only a GET is upgraded (RFC
 * 6455 §4.1): a HEAD with the upgrade headers gets 400, other methods the router's 405.
 * `handler` and `opts` are copied (opts NULL: defaults), but not opts->subprotocols: the
 * array and its strings are borrowed and must live as long as the app; `data` is borrowed
 * and handed to every callback of the route's connections.
 * Returns 0; UV_EINVAL when app, pattern or handler is NULL or opts->size is 0 (opts
 * never initialised); SQ_EPATTERN for a malformed pattern (as sq_app_route); UV_ENOTSUP
 * for a handler table or options from a newer header that set something this library
 * lacks; or UV_ENOMEM. On an error the app is as it was. */
static inline int sq_app_websocket(sq_app_t *app, const char *pattern,
                                   const sq_ws_handler_t *handler, const sq_ws_opts_t *opts,
                                   void *data)
{
    return sq_app_websocket_sized(app, pattern, handler, sizeof(*handler), opts, data);
}

/* Sends a text (binary = 0) or binary message; copied. Returns
 *   0              queued;
 *   UV_EMSGSIZE    more than SQ_WS_MAX_SEND_BYTES (4 GiB - 15) in one frame, refused
 *                  before a byte of `msg` is read (send it in fragments);
 *   SQ_EBUSY       a fragmented message is being sent (sq_ws_send_fragment);
 *   UV_EINVAL      text that is not UTF-8;
 *   SQ_ECLOSED     a close was queued, sent or received, or the connection is gone;
 *   UV_ENOTCONN    a client connection not open yet;
 *   UV_ENOBUFS     max_queued_bytes would be passed: the overflow policy applied (the
 *                  message is dropped, and with the close policies the connection is
 *                  closing);
 *   UV_ECANCELED   the connection is closing underneath (the peer or the server went);
 *   UV_ENOMEM;
 *   client side only: UV_EIO (no random bytes for the mask), or libuv's error from
 *                  writing to the socket (UV_EPIPE, UV_ECONNRESET, ...).
 * On an error nothing of the message is queued, except that a server connection out of
 * memory may have queued part of it (its connection is then failing). */
SQ_EXTERN int sq_ws_send(sq_ws_t *ws, int binary, const void *msg, size_t len);
SQ_EXTERN int sq_ws_send_text(sq_ws_t *ws, const char *msg, size_t len);
SQ_EXTERN int sq_ws_send_binary(sq_ws_t *ws, const void *msg, size_t len);
/* Sends one fragment of a message (RFC 6455 §5.4); copied. The first fragment's `binary`
 * sets the message's type (later fragments must repeat it); `fin` = 1 ends the message.
 * Text may split a UTF-8 character across fragments, but must end on a boundary. Until the
 * last fragment, sq_ws_send and sq_ws_send_frame return SQ_EBUSY (pings and close may go
 * between fragments). Returns as sq_ws_send but never SQ_EBUSY, and UV_EINVAL also for a
 * later fragment whose `binary` differs from the first's; on an error nothing was sent
 * and the message stays open (a fragment refused with UV_ENOBUFS may be sent again after
 * .drain). */
SQ_EXTERN int sq_ws_send_fragment(sq_ws_t *ws, int binary, const void *data, size_t len,
                                  int fin);
/* Sends a ping with up to 125 bytes of payload (copied). Returns 0, UV_EINVAL past 125
 * bytes, SQ_ECLOSED once a close was queued or sent, or UV_ENOTCONN before a client
 * connection is open. */
SQ_EXTERN int sq_ws_ping(sq_ws_t *ws, const void *payload, size_t len);
/* Starts the close handshake (RFC 6455 §7.1.2). `code` must be one a peer may receive
 * (1000-1003, 1007-1014, 3000-4999; RFC 6455 §7.4). `reason` (may be NULL) is copied, cut
 * to 123 bytes. .close runs once the peer answers, or after close_timeout_ms, from the
 * loop; meanwhile data messages from the peer are dropped (no more .message). On a
 * client still connecting it cancels, and — the one callback squall runs inside the call
 * that caused it — .close runs with 1006 "cancelled" before this returns; ws is freed
 * after it. Returns 0, UV_EINVAL for a code that must not be sent, or SQ_ECLOSED when a
 * close was already queued or sent, or the connection is gone. */
SQ_EXTERN int sq_ws_close(sq_ws_t *ws, int code, const char *reason);

/* Outgoing bytes queued on this connection and not yet taken by the kernel. */
SQ_EXTERN size_t sq_ws_queued_bytes(const sq_ws_t *ws);
/* The subprotocol agreed in the handshake, or NULL: one of the strings of
 * opts.subprotocols (or the accept hook's), borrowed from the caller. */
SQ_EXTERN const char *sq_ws_subprotocol(const sq_ws_t *ws);
SQ_EXTERN void sq_ws_set_data(sq_ws_t *ws, void *data);
SQ_EXTERN void *sq_ws_data(const sq_ws_t *ws);
SQ_EXTERN uv_loop_t *sq_ws_loop(const sq_ws_t *ws);
/* Client: why connecting failed, for a program to act on (in .close, when .open never
 * ran): libuv's code (UV_ECONNREFUSED, UV_EAI_NONAME, UV_ETIMEDOUT for the handshake
 * deadline, UV_ECANCELED when cancelled, ...) or UV_EPROTO for an upgrade refused or
 * answered wrongly; 0 otherwise. */
SQ_EXTERN int sq_ws_error(const sq_ws_t *ws);
/* 1 for a client-side connection. */
SQ_EXTERN int sq_ws_is_client(const sq_ws_t *ws);

/* Broadcast: a message framed once and shared by every server-side connection it is sent
 * to (reference-counted, zero-copy).
 *
 * A frame belongs to one loop. Its reference count is not atomic: once created, it is
 * sent to connections of one loop only and released on that loop's thread (each send
 * holds a reference until its write completes, on that loop). To broadcast to
 * connections of several loops (sq_workers_run), make one frame per loop, on its thread.
 */
typedef struct sq_ws_frame_s sq_ws_frame_t;

/* Frames `msg` (copied) as one text (binary = 0) or binary message. Returns
 *   0            *frame is the frame, and the caller holds its one reference
 *                (sq_ws_frame_release drops it);
 *   UV_EMSGSIZE  more than SQ_WS_MAX_SEND_BYTES, refused before a byte is read;
 *   UV_EINVAL    text that is not UTF-8;
 *   UV_ENOMEM.
 * On an error *frame is NULL. Any thread; the frame then belongs to the loop it is first
 * sent on. */
SQ_EXTERN int sq_ws_frame_create(sq_ws_frame_t **frame, int binary, const void *msg, size_t len);
/* Drops the caller's reference (NULL: nothing); the frame is freed once no send still
 * holds one. On the frame's loop thread. */
SQ_EXTERN void sq_ws_frame_release(sq_ws_frame_t *frame);
/* Sends a prepared frame, on the frame's loop: a server connection takes a reference of
 * its own until the write completes (the caller keeps its reference); a client
 * connection (which must mask) copies the bytes instead. The message is never checked
 * again (sq_ws_frame_create did). Returns
 *   0              queued;
 *   SQ_EBUSY       a fragmented message is being sent (sq_ws_send_fragment);
 *   SQ_ECLOSED     a close was queued, sent or received, or the connection is gone;
 *   UV_ENOTCONN    a client connection not open yet;
 *   UV_ENOBUFS     max_queued_bytes would be passed: the overflow policy applied, as
 *                  for sq_ws_send;
 *   UV_ECANCELED   the connection is closing underneath;
 *   UV_ENOMEM;
 *   client side only: UV_EIO, or libuv's error from writing, as for sq_ws_send.
 * On an error the connection holds no reference to the frame. */
SQ_EXTERN int sq_ws_send_frame(sq_ws_t *ws, sq_ws_frame_t *frame);
/* Frames `msg` once and sends it to each of `n` connections (all of one loop, on its
 * thread). Returns how many took it (sq_ws_send_frame returned 0): 0 when it cannot be
 * framed (as sq_ws_frame_create refuses it) or n is 0. */
SQ_EXTERN size_t sq_ws_broadcast(sq_ws_t *const *ws, size_t n, int binary, const void *msg,
                                 size_t len);

/* What sq_ws_connect calls, with sizeof the caller's handler table. Call sq_ws_connect. */
SQ_EXTERN int sq_ws_connect_sized(uv_loop_t *loop, const char *url,
                                  const sq_ws_handler_t *handler, size_t handler_size,
                                  void *data, const sq_ws_opts_t *opts, sq_ws_t **out);
/* Client: connects to a ws:// or wss:// URL ("ws://host:port/path?query"): DNS, TCP,
 * for wss:// TLS (OpenSSL: the server's certificate checked against the system's CA store
 * and opts->tls_ca_file, and its host name, unless opts->tls_insecure; SNI sent for a
 * host name), the client handshake with a random key (the server's Accept is checked),
 * then frames are masked. A TLS failure is .close with SQ_WS_ABNORMAL, and sq_ws_error()
 * says which: SQ_ECERT (an untrusted chain: unknown CA, expired, ...), SQ_ECERTNAME (the
 * certificate names another host), SQ_ETLS (any other handshake or record failure).
 * `handler` and `data` as for the server; `opts` copied (NULL: defaults), and with it the
 * array of opts->subprotocols, whose strings are borrowed: they must live until .close
 * returns (sq_ws_subprotocol returns one of them). Every outcome is reported to the
 * handler: .open on success, else .close with SQ_WS_ABNORMAL and a reason (DNS failure,
 * refused, timeout, upgrade refused with status N, invalid handshake response). If `out`
 * is not NULL it receives the WebSocket at once (valid until .close returns), so the
 * caller may sq_ws_close it before it opens (cancel).
 *
 * Everything that goes into the request is checked first, so nothing a caller passes can
 * end a header line: the host is an IPv6 literal in brackets or RFC 3986 reg-name
 * characters (no user info), the port 1-65535 in digits, the path and query RFC 3986
 * characters with well-formed %HH escapes (no space, control, non-ASCII byte or
 * fragment); each offered subprotocol a non-empty token (RFC 9110 §5.6.2), none twice
 * (RFC 6455 §4.1). The request is built whole whatever its length.
 *
 * The server's answer is checked whatever the order of its headers (RFC 6455 §4.1):
 * status 101, Upgrade: websocket, Connection: Upgrade (each may be split over several
 * lines), exactly one right Sec-WebSocket-Accept, at most one Sec-WebSocket-Protocol
 * naming one of the offers, and no Sec-WebSocket-Extensions unless opts->deflate offered
 * permessage-deflate: then exactly an answer to that offer (RFC 7692 §7.1; anything else
 * is an invalid handshake response). A header name or value over 8 KiB is refused.
 *
 * `url` is copied. .open, and every other callback, runs later, on `loop`'s thread, from
 * the loop — even when the name does not resolve — except .close for a connection that
 * sq_ws_close cancels while connecting (see there).
 *
 * Returns 0; UV_EINVAL for a NULL loop, url or handler, opts->size 0 (opts never
 * initialised), a bad URL or a bad offer; SQ_ETLSCONF for a wss:// URL whose
 * opts->tls_ca_file cannot be loaded; UV_ENOTSUP for a handler table or options from a newer
 * header that set something this library lacks; or UV_ENOMEM. On an error no callback
 * runs and *out is not set. */
static inline int sq_ws_connect(uv_loop_t *loop, const char *url,
                                const sq_ws_handler_t *handler, void *data,
                                const sq_ws_opts_t *opts, sq_ws_t **out)
{
    return sq_ws_connect_sized(loop, url, handler, sizeof(*handler), data, opts, out);
}

#endif
