/* The WebSocket core: wslay parses incoming frames, answers pings and runs the close
 * handshake; squall frames outgoing data itself, straight into the transport's write
 * queue (one copy, or none for a shared broadcast frame), and enforces the limits.
 *
 * Lifetime: ws lives until its transport closes. .close runs exactly once, then ws is
 * freed — deferred while our own frames (wslay's recv loop, a user callback) are on the
 * stack, so nothing is freed under a caller. */
#include <openssl/rand.h>
#include <stdlib.h>

#include "core/abi.h"
#include "ws/ws_int.h"

void sq__ws_opts_defaults(sq_ws_opts_t *o)
{
    memset(o, 0, sizeof(*o));
    o->size = sizeof(*o);
    o->max_message_bytes = 16u * 1024 * 1024;
    o->max_queued_bytes = 4u * 1024 * 1024;
    o->overflow = SQ_WS_OVERFLOW_CLOSE;
    /* Keepalive is on: with an idle timeout, a peer that only listens would otherwise be
     * closed; its pongs keep it (docs/websocket.md, "Deadlines") */
    o->ping_interval_ms = 20000;
    o->pong_timeout_ms = 20000;
    o->close_timeout_ms = 5000;
    o->handshake_timeout_ms = 10000;
    o->idle_timeout_ms = 60000;
    o->message_timeout_ms = 60000;
}

void sq_ws_opts_init_sized(sq_ws_opts_t *opts, size_t size)
{
    sq_ws_opts_t d;
    sq__ws_opts_defaults(&d);
    SQ__OPTS_INIT(opts, size, &d);
}

int sq__ws_opts_in(sq_ws_opts_t *o, const sq_ws_opts_t *opts)
{
    sq__ws_opts_defaults(o);
    return opts != NULL ? SQ__OPTS_IN(o, opts) : 0;
}

int sq__ws_handler_in(sq_ws_handler_t *h, const sq_ws_handler_t *handler, size_t size)
{
    memset(h, 0, sizeof(*h)); /* callbacks an older header lacks are unset */
    return sq__abi_table_in(h, sizeof(*h), handler, size);
}

/* Runs a user callback under the server's watchdog, named by the route (asyncio's debug
 * mode names the slow callback; a NULL watchdog measures nothing). */
#define WS_TIMED(ws, call)                                                                 \
    do {                                                                                   \
        sq_watchdog_span_t span_;                                                          \
        sq_watchdog_span_begin((ws)->wd, &span_, (ws)->name);                              \
        call;                                                                              \
        sq_watchdog_span_end((ws)->wd, &span_);                                            \
    } while (0)

static void ws_destroy(sq_ws_t *ws);
static void ws_check_backlog(sq_ws_t *ws);
static void ws_arm(sq_ws_t *ws, uint64_t deadline);

/* ---- writing to the transport ---- */

/* Starts watching the outgoing queue for a stall (idle_timeout_ms), unless it is already
 * watched: bytes are about to be queued. */
static void ws_watch_queue(sq_ws_t *ws)
{
    if (ws->opts.idle_timeout_ms == 0 || ws->stall_since != 0 || (ws->flags & SQ__WS_DEAD))
        return;
    uint64_t now = uv_now(ws->loop);
    ws->stall_since = now ? now : 1;
    ws->stall_out = ws->added - ws->io->queued(ws);
    ws_arm(ws, now + ws->opts.idle_timeout_ms);
}

/* Every byte squall queues goes through these two: they count what went in, so the
 * stall check can tell bytes that left (added - queued grew) from bytes that sit. */
int sq__ws_io_write(sq_ws_t *ws, const uv_buf_t *bufs, unsigned n, bool notify)
{
    size_t len = 0;
    for (unsigned i = 0; i < n; i++)
        len += bufs[i].len;
    ws_watch_queue(ws);
    int rc = ws->io->write(ws, bufs, n, notify);
    if (rc == 0)
        ws->added += len;
    return rc;
}

int sq__ws_io_write_ref(sq_ws_t *ws, const void *base, size_t len, sq_free_cb free_cb,
                        void *free_ud, bool notify)
{
    ws_watch_queue(ws);
    int rc = ws->io->write_ref(ws, base, len, free_cb, free_ud, notify);
    if (rc == 0)
        ws->added += len;
    return rc;
}

/* ---- wslay callbacks ---- */

static ssize_t recv_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags,
                       void *ud)
{
    sq_ws_t *ws = ud;
    if (ws->rlen == 0) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    size_t n = len < ws->rlen ? len : ws->rlen;
    memcpy(buf, ws->rptr, n);
    ws->rptr += n;
    ws->rlen -= n;
    return (ssize_t)n;
}

/* wslay's own frames: pongs and close frames. */
static ssize_t send_cb(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags,
                       void *ud)
{
    sq_ws_t *ws = ud;
    uv_buf_t b = uv_buf_init((char *)data, (unsigned)len); /* at most 125 + 4 bytes */
    if (ws->flags & SQ__WS_DEAD || sq__ws_io_write(ws, &b, 1, false) != 0) {
        wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
        return -1;
    }
    return (ssize_t)len;
}

static int genmask_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, void *ud)
{
    /* RFC 6455 §5.3: masks must be unpredictable */
    return RAND_bytes(buf, (int)len) == 1 ? 0 : -1;
}

/* Fails the connection (RFC 6455 §7.1.7): close frame with `code`, no more reading. The
 * code is what .close reports unless the peer's close frame had already arrived. */
static void ws_fail(sq_ws_t *ws, int code, const char *why)
{
    if (ws->flags & SQ__WS_FAILED)
        return;
    ws->flags |= SQ__WS_FAILED | SQ__WS_CLOSE_QUEUED;
    ws->close_code = code;
    ws->why = why;
    sq_log(SQ_LOG_DEBUG, "websocket: failing with %d: %s", code, why);
    wslay_event_queue_close(ws->ctx, (uint16_t)code, (const uint8_t *)why, strlen(why));
    wslay_event_shutdown_read(ws->ctx);
}


/* wslay answers an error its frame layer finds (a control frame over 125 bytes or
 * fragmented, a length not in its shortest form) with a close frame that has no status
 * code, queued before squall hears of the error; RFC 6455 §7.4.1 asks for 1002. So wslay
 * stops writing (its frame is dropped, with any pong queued in the same read) and squall
 * writes the close frame itself (test: ws/control_frame_of_126_bytes_gets_1002). */
static void ws_fail_unframed(sq_ws_t *ws, int code, const char *why)
{
    bool sent = wslay_event_get_close_sent(ws->ctx);
    wslay_event_shutdown_read(ws->ctx);
    wslay_event_shutdown_write(ws->ctx);
    if (!(ws->flags & SQ__WS_FAILED)) {
        ws->close_code = code;
        ws->why = why;
    }
    ws->flags |= SQ__WS_FAILED | SQ__WS_CLOSE_QUEUED;
    sq_log(SQ_LOG_DEBUG, "websocket: failing with %d: %s", code, why);
    if (sent)
        return; /* one close frame per connection */
    uint8_t p[2 + 123];
    size_t wl = strlen(why) < 123 ? strlen(why) : 123;
    p[0] = (uint8_t)(code >> 8);
    p[1] = (uint8_t)code;
    memcpy(p + 2, why, wl);
    sq__ws_write_frame(ws, WSLAY_CONNECTION_CLOSE, p, 2 + wl, false);
}

/* The data message being reassembled is given up (a deadline, a close): its memory goes
 * now, not when the connection does. Never called while .message holds ws->msg. */
static void ws_drop_partial(sq_ws_t *ws)
{
    ws->flags &= ~SQ__WS_IN_MSG;
    sq__buf_free(&ws->msg);
}

/* RFC 6455 §7.1.4: once our close frame is queued (the application's sq_ws_close, or a
 * failure), data frames that still arrive are read, to reach the peer's close frame,
 * but dropped, as browsers do in the CLOSING state: no .message after a close (test:
 * ws/data_after_the_applications_close_is_not_delivered). */
static bool ws_dropping_data(const sq_ws_t *ws)
{
    return (ws->flags & (SQ__WS_CLOSE_QUEUED | SQ__WS_FAILED | SQ__WS_DEAD)) != 0;
}

static void frame_start_cb(wslay_event_context_ptr ctx,
                           const struct wslay_event_on_frame_recv_start_arg *arg, void *ud)
{
    sq_ws_t *ws = ud;
    if (arg->opcode >= 0x8) {
        ws->flags |= SQ__WS_IN_CONTROL;
        /* RFC 6455 §5.5.1: a close body, if there is one, starts with a two-byte code;
         * wslay takes a single byte for "no code" */
        if (arg->opcode == WSLAY_CONNECTION_CLOSE && arg->payload_length == 1)
            ws_fail(ws, SQ_WS_PROTOCOL_ERROR, "close frame body of one byte");
        return;
    }
    ws->flags &= ~(SQ__WS_IN_CONTROL | SQ__WS_FRAME_FIN);
    if (arg->fin)
        ws->flags |= SQ__WS_FRAME_FIN;
    if (!(ws->flags & SQ__WS_IN_MSG)) {
        /* the message-assembly deadline runs from its first frame's header to its end */
        ws->flags |= SQ__WS_IN_MSG;
        ws->msg_since = uv_now(ws->loop);
    }
    if (ws_dropping_data(ws)) {
        if (ws->msg.cap > 0)
            ws_drop_partial(ws);
        ws->flags |= SQ__WS_IN_MSG; /* ...until its last frame, but nothing is kept */
        return;
    }
    if (arg->opcode == WSLAY_TEXT_FRAME) {
        ws->flags |= SQ__WS_IN_TEXT;
        sq__utf8_init(&ws->utf8);
    } else if (arg->opcode == WSLAY_BINARY_FRAME) {
        ws->flags &= ~SQ__WS_IN_TEXT;
    }
    if (arg->opcode != WSLAY_CONTINUATION_FRAME) {
        ws->msg_opcode = arg->opcode;
        ws->msg.len = 0;
    }
    /* RFC 6455 §10.4: the whole message is limited, not only each frame; refused before a
     * byte of it is stored */
    if (ws->opts.max_message_bytes > 0 &&
        arg->payload_length > ws->opts.max_message_bytes - ws->msg.len)
        ws_fail(ws, SQ_WS_TOO_BIG, "message too big");
}

static void frame_chunk_cb(wslay_event_context_ptr ctx,
                           const struct wslay_event_on_frame_recv_chunk_arg *arg, void *ud)
{
    sq_ws_t *ws = ud;
    if (ws->flags & SQ__WS_IN_CONTROL)
        return; /* control frames are buffered by wslay (at most 125 bytes) */
    ws->last_rx = uv_now(ws->loop); /* data moving: not idle (the message deadline bounds it) */
    if (ws_dropping_data(ws))
        return;
    if ((ws->flags & SQ__WS_IN_TEXT) && !sq__utf8_feed(&ws->utf8, arg->data, arg->data_length)) {
        ws_fail(ws, SQ_WS_INVALID_DATA, "invalid UTF-8 in a text message");
        return;
    }
    /* squall reassembles messages itself, into one buffer per connection: wslay's own
     * buffering keeps an allocation per fragment, which a peer sending many one-byte
     * fragments would turn into far more memory than max_message_bytes */
    if (sq__buf_append(&ws->msg, arg->data, arg->data_length) != 0)
        ws_fail(ws, SQ_WS_INTERNAL, "out of memory");
}

static void frame_end_cb(wslay_event_context_ptr ctx, void *ud)
{
    sq_ws_t *ws = ud;
    /* a frame received whole, control or data: the idle clock starts again (a control
     * frame trickled in byte by byte does not hold it off) */
    ws->last_rx = uv_now(ws->loop);
    if (ws->flags & SQ__WS_IN_CONTROL || !(ws->flags & SQ__WS_FRAME_FIN))
        return;
    ws->flags &= ~SQ__WS_IN_MSG;
    if (ws_dropping_data(ws)) {
        if (ws->msg.cap > 0)
            ws_drop_partial(ws);
        return;
    }
    bool binary = ws->msg_opcode == WSLAY_BINARY_FRAME;
    if (!binary && !sq__utf8_complete(&ws->utf8)) {
        ws_fail(ws, SQ_WS_INVALID_DATA, "truncated UTF-8 in a text message");
        return;
    }
    if (ws->h->message != NULL)
        WS_TIMED(ws, ws->h->message(ws, binary, ws->msg.len ? ws->msg.base : "", ws->msg.len,
                                    ws->data));
    ws->msg.len = 0;
    /* a big message does not keep its memory, nor does one that closed the connection */
    if (ws->msg.cap > 256 * 1024 || ws_dropping_data(ws))
        sq__buf_free(&ws->msg);
}

static void msg_cb(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg,
                   void *ud)
{
    sq_ws_t *ws = ud;
    if (ws->flags & (SQ__WS_FAILED | SQ__WS_DEAD))
        return;
    switch (arg->opcode) {
    case WSLAY_PONG:
        ws->flags &= ~SQ__WS_AWAIT_PONG;
        if (ws->h->pong != NULL)
            WS_TIMED(ws, ws->h->pong(ws, (const char *)arg->msg, arg->msg_length, ws->data));
        break;
    case WSLAY_CONNECTION_CLOSE: {
        /* RFC 6455 §5.5.1: a close reason is UTF-8 */
        sq__utf8_t u;
        sq__utf8_init(&u);
        if (arg->msg_length > 2 &&
            (!sq__utf8_feed(&u, arg->msg + 2, arg->msg_length - 2) || !sq__utf8_complete(&u)))
            ws_fail(ws, SQ_WS_INVALID_DATA, "invalid UTF-8 in the close reason");
        size_t rl = arg->msg_length > 2 ? arg->msg_length - 2 : 0;
        if (rl >= sizeof(ws->close_reason))
            rl = sizeof(ws->close_reason) - 1;
        if (rl > 0) /* a close frame without a body comes with msg NULL */
            memcpy(ws->close_reason, arg->msg + 2, rl);
        ws->close_reason[rl] = '\0';
        break;
    }
    default:
        break;
    }
}

static const struct wslay_event_callbacks wslay_cbs = {
    .recv_callback = recv_cb,
    .send_callback = send_cb,
    .genmask_callback = genmask_cb,
    .on_frame_recv_start_callback = frame_start_cb,
    .on_frame_recv_chunk_callback = frame_chunk_cb,
    .on_frame_recv_end_callback = frame_end_cb,
    .on_msg_recv_callback = msg_cb, /* control frames only: data is reassembled above */
};

/* ---- lifetime ---- */

int sq__ws_create(sq_ws_t **out, uv_loop_t *loop, bool client, const sq_ws_handler_t *h,
                  void *data, const sq_ws_opts_t *opts, const sq__ws_io_t *io, void *transport)
{
    sq_ws_t *ws = calloc(1, sizeof(*ws));
    if (ws == NULL)
        return UV_ENOMEM;
    int rc = client ? wslay_event_context_client_init(&ws->ctx, &wslay_cbs, ws)
                    : wslay_event_context_server_init(&ws->ctx, &wslay_cbs, ws);
    if (rc != 0) {
        free(ws);
        return UV_ENOMEM;
    }
    ws->loop = loop;
    ws->h = h;
    ws->data = data;
    ws->opts = *opts;
    ws->io = io;
    ws->transport = transport;
    ws->close_code = SQ_WS_ABNORMAL;
    if (client)
        ws->flags |= SQ__WS_CLIENT;
    wslay_event_config_set_no_buffering(ws->ctx, 1);
    /* 0 is no limit to squall, but a limit of zero bytes to wslay */
    wslay_event_config_set_max_recv_msg_length(
        ws->ctx, ws->opts.max_message_bytes ? (uint64_t)ws->opts.max_message_bytes : UINT64_MAX);
    uv_timer_init(loop, &ws->timer);
    ws->timer.data = ws;
    *out = ws;
    return 0;
}

static void on_timer_closed(uv_handle_t *h)
{
    sq_ws_t *ws = h->data;
    wslay_event_context_free(ws->ctx);
    sq__buf_free(&ws->scratch);
    sq__buf_free(&ws->msg);
    free(ws);
}

static void ws_destroy(sq_ws_t *ws)
{
    uv_close((uv_handle_t *)&ws->timer, on_timer_closed);
}

/* ---- deadlines: one timer per connection, armed for the earliest ----
 *
 * A connection taken over from HTTP leaves the server's timeout lists (their timeouts
 * are the server's, not the route's), so each WebSocket keeps its own deadlines: idle
 * (nothing received), stall (queued bytes not moving), message assembly, keepalive ping
 * and pong, and the close handshake. Events only move a deadline later (a frame
 * arrives), which costs nothing: the timer fires at the old one, finds it moved, and is
 * armed again. Only an earlier deadline restarts it (ws_arm). */

static void on_timer(uv_timer_t *t);

static void ws_arm(sq_ws_t *ws, uint64_t deadline)
{
    if ((ws->flags & SQ__WS_DEAD) || (ws->due != 0 && ws->due <= deadline))
        return;
    uint64_t now = uv_now(ws->loop);
    ws->due = deadline;
    uv_timer_start(&ws->timer, on_timer, deadline > now ? deadline - now : 0, 0);
}

static uint64_t earliest(uint64_t a, uint64_t b)
{
    return a < b ? a : b;
}

/* The earliest deadline in force, or UINT64_MAX. */
static uint64_t ws_next_deadline(const sq_ws_t *ws)
{
    const sq_ws_opts_t *o = &ws->opts;
    uint64_t d = UINT64_MAX;
    if (ws->flags & SQ__WS_CLOSING) {
        if (o->close_timeout_ms > 0)
            d = ws->close_since + o->close_timeout_ms;
        else if (o->idle_timeout_ms > 0)
            d = (ws->last_rx > ws->close_since ? ws->last_rx : ws->close_since) +
                o->idle_timeout_ms;
        return d;
    }
    if (!(ws->flags & SQ__WS_OPEN))
        return d; /* a client still connecting: its handshake deadline is the client's */
    if (o->idle_timeout_ms > 0) {
        if (ws->stall_since != 0)
            d = earliest(d, ws->stall_since + o->idle_timeout_ms);
        if (!(ws->flags & (SQ__WS_READ_PAUSED | SQ__WS_CLOSE_QUEUED)))
            d = earliest(d, ws->last_rx + o->idle_timeout_ms);
    }
    if (o->message_timeout_ms > 0 && (ws->flags & SQ__WS_IN_MSG) && !ws_dropping_data(ws))
        d = earliest(d, ws->msg_since + o->message_timeout_ms);
    if (o->ping_interval_ms > 0 && !(ws->flags & SQ__WS_CLOSE_QUEUED)) {
        if (!(ws->flags & SQ__WS_AWAIT_PONG))
            d = earliest(d, ws->ping_sent_at + o->ping_interval_ms);
        else if (!(ws->flags & SQ__WS_READ_PAUSED)) /* unread, a pong cannot arrive */
            d = earliest(d, ws->ping_sent_at + o->pong_timeout_ms);
    }
    return d;
}

static void ws_rearm(sq_ws_t *ws)
{
    uint64_t d = ws_next_deadline(ws);
    if (d != UINT64_MAX)
        ws_arm(ws, d);
}

/* Drops TCP without a close handshake: the peer cannot take a close frame (it reads
 * nothing) or did not answer a ping. .close gets 1006 and `why`. */
static void ws_drop(sq_ws_t *ws, const char *why)
{
    sq_log(SQ_LOG_DEBUG, "websocket: dropping the connection: %s", why);
    if (!(ws->flags & SQ__WS_FAILED))
        ws->why = why;
    ws->io->close(ws, true);
}

/* Acts on every deadline that has passed; at most one ends the connection. */
static void ws_check_deadlines(sq_ws_t *ws, uint64_t now)
{
    const sq_ws_opts_t *o = &ws->opts;
    if (ws->flags & SQ__WS_CLOSING) {
        /* the peer never answered our close frame (RFC 6455 §7.1.1) */
        if (ws_next_deadline(ws) <= now)
            ws->io->close(ws, true);
        return;
    }
    if (!(ws->flags & SQ__WS_OPEN))
        return;
    if (o->idle_timeout_ms > 0) {
        /* the send side: bytes queued that have not moved for the idle timeout (a peer
         * that reads nothing, be it flooding pings or talking); a close frame would sit
         * behind them, so TCP goes now (test: ws_timeouts/a_talking_peer_whose_...) */
        size_t q = ws->io->queued(ws);
        uint64_t out = ws->added - q;
        if (q == 0) {
            ws->stall_since = 0;
        } else if (ws->stall_since == 0 || out != ws->stall_out) {
            ws->stall_since = now ? now : 1;
            ws->stall_out = out;
        } else if (now - ws->stall_since >= o->idle_timeout_ms) {
            ws_drop(ws, "send stalled");
            return;
        }
    }
    if (o->message_timeout_ms > 0 && (ws->flags & SQ__WS_IN_MSG) && !ws_dropping_data(ws) &&
        now - ws->msg_since >= o->message_timeout_ms) {
        /* RFC 6455 §7.4.1: 1008, a policy violation (1009 is for size, not time) */
        ws_fail(ws, SQ_WS_POLICY, "message not received in time");
        ws_drop_partial(ws);
        return;
    }
    if (o->idle_timeout_ms > 0 && !(ws->flags & (SQ__WS_READ_PAUSED | SQ__WS_CLOSE_QUEUED)) &&
        now - ws->last_rx >= o->idle_timeout_ms) {
        /* RFC 6455 §7.4.1: 1001, the endpoint is going away; 1008 is for a message that
         * violates a policy, and no message came. The close handshake runs as usual: a
         * live peer answers, a gone one is dropped at the close timeout. */
        ws_drop_partial(ws);
        if (sq_ws_close(ws, SQ_WS_GOING_AWAY, "idle timeout") != 0) {
            ws_drop(ws, "idle timeout"); /* no close frame can go: do not wait for one */
            return;
        }
        ws->close_code = SQ_WS_GOING_AWAY;
        ws->why = "idle timeout";
        return;
    }
    if (o->ping_interval_ms == 0 || (ws->flags & SQ__WS_CLOSE_QUEUED))
        return;
    if (ws->flags & SQ__WS_AWAIT_PONG) {
        if (!(ws->flags & SQ__WS_READ_PAUSED) && now - ws->ping_sent_at >= o->pong_timeout_ms) {
            sq_log(SQ_LOG_DEBUG, "websocket: no pong in %llu ms",
                   (unsigned long long)o->pong_timeout_ms);
            ws_drop(ws, "pong timeout");
        }
        return;
    }
    /* pings go out at ping_interval_ms, whatever the pong timeout (test:
     * ws/keepalive_pings_at_the_ping_interval_when_the_pong_timeout_is_shorter) */
    if (now - ws->ping_sent_at < o->ping_interval_ms)
        return;
    ws->ping_sent_at = now;
    if (o->pong_timeout_ms > 0)
        ws->flags |= SQ__WS_AWAIT_PONG;
    uint8_t payload[8];
    for (int i = 0; i < 8; i++)
        payload[i] = (uint8_t)(now >> (56 - 8 * i));
    sq_ws_ping(ws, payload, sizeof(payload));
}

static void on_timer(uv_timer_t *t)
{
    sq_ws_t *ws = t->data;
    ws->due = 0;
    if (ws->flags & SQ__WS_DEAD)
        return;
    ws->depth++;
    ws_check_deadlines(ws, uv_now(ws->loop));
    ws->depth--;
    sq__ws_after(ws); /* sends what was queued, arms the next deadline, or frees */
}

void sq__ws_open(sq_ws_t *ws, sq_req_t *req)
{
    ws->flags |= SQ__WS_OPEN;
    uint64_t now = uv_now(ws->loop);
    ws->last_rx = now;
    ws->ping_sent_at = now; /* the first ping goes one interval after the open */
    ws->depth++;
    if (ws->h->open != NULL)
        WS_TIMED(ws, ws->h->open(ws, req, ws->data));
    ws->depth--;
    sq__ws_after(ws);
}

void sq__ws_transport_closed(sq_ws_t *ws)
{
    if (ws->flags & SQ__WS_DEAD)
        return;
    ws->flags |= SQ__WS_DEAD;
    uv_timer_stop(&ws->timer);
    ws->due = 0;
    /* The peer's code when its close frame came; when squall failed the connection or
     * closed a slow consumer and no answer came, the code squall sent says why */
    if (!(ws->flags & SQ__WS_FAILED) && wslay_event_get_close_received(ws->ctx)) {
        uint16_t code = wslay_event_get_status_code_received(ws->ctx);
        ws->close_code = code ? code : SQ_WS_NO_STATUS;
    } else {
        if ((ws->flags & SQ__WS_FAILED) && ws->close_code == SQ_WS_ABNORMAL &&
            wslay_event_get_close_sent(ws->ctx))
            ws->close_code = wslay_event_get_status_code_sent(ws->ctx); /* wslay failed it */
        if (ws->why != NULL) /* and the reason is squall's own */
            snprintf(ws->close_reason, sizeof(ws->close_reason), "%s", ws->why);
    }
    if (!(ws->flags & SQ__WS_CLOSED_CB) && (ws->flags & SQ__WS_OPEN) && ws->h->close != NULL) {
        ws->flags |= SQ__WS_CLOSED_CB;
        ws->depth++;
        WS_TIMED(ws, ws->h->close(ws, ws->close_code, ws->close_reason, ws->data));
        ws->depth--;
    }
    ws->flags |= SQ__WS_CLOSED_CB;
    if (ws->depth == 0)
        ws_destroy(ws);
}

void sq__ws_fail_before_open(sq_ws_t *ws, const char *reason)
{
    ws->flags |= SQ__WS_OPEN; /* so that .close reports it */
    snprintf(ws->close_reason, sizeof(ws->close_reason), "%s", reason);
    ws->close_code = SQ_WS_ABNORMAL;
    sq__ws_transport_closed(ws);
}

/* After each batch of work: send what wslay queued, close once both sides said goodbye,
 * free if the transport went while we were busy. */
void sq__ws_after(sq_ws_t *ws)
{
    if (ws->depth > 0)
        return;
    if (ws->flags & SQ__WS_DEAD) {
        ws_destroy(ws);
        return;
    }
    ws->depth++;
    wslay_event_send(ws->ctx);
    ws->depth--;
    if (ws->flags & SQ__WS_DEAD) {
        ws_destroy(ws);
        return;
    }
    ws_check_backlog(ws);
    if (wslay_event_get_close_sent(ws->ctx) && !(ws->flags & SQ__WS_CLOSING)) {
        ws->flags |= SQ__WS_CLOSING; /* the close timeout runs from here */
        ws->close_since = uv_now(ws->loop);
    }
    ws_rearm(ws);
    if (!wslay_event_want_read(ws->ctx) && !wslay_event_want_write(ws->ctx))
        ws->io->close(ws, false); /* RFC 6455 §7.1.1: the server closes TCP first */
}

void sq__ws_feed(sq_ws_t *ws, const char *data, ssize_t n)
{
    if (ws->flags & SQ__WS_DEAD)
        return;
    if (n < 0) {
        ws->io->close(ws, true);
        return;
    }
    ws->rptr = (const uint8_t *)data;
    ws->rlen = (size_t)n;
    ws->depth++;
    int rc = wslay_event_recv(ws->ctx);
    ws->depth--;
    ws->rlen = 0;
    if (rc == 0 && !(ws->flags & (SQ__WS_DEAD | SQ__WS_FAILED)) &&
        !wslay_event_get_read_enabled(ws->ctx) && !wslay_event_get_close_received(ws->ctx)) {
        /* wslay failed the connection itself (1002, 1007, 1009): its close frame is queued */
        ws->flags |= SQ__WS_FAILED | SQ__WS_CLOSE_QUEUED;
    }
    if (rc != 0 && !(ws->flags & SQ__WS_DEAD)) {
        /* our recv callback never fails: the frame layer found an error, or memory ran out */
        ws->depth++;
        if (rc == WSLAY_ERR_NOMEM)
            ws_fail_unframed(ws, SQ_WS_INTERNAL, "out of memory");
        else
            ws_fail_unframed(ws, SQ_WS_PROTOCOL_ERROR, "protocol error");
        ws->depth--;
    }
    sq__ws_after(ws);
}

/* A peer that sends pings (or anything wslay answers) and never reads would grow our
 * queue without bound, since wslay's answers do not pass the send limit: past
 * max_queued_bytes, stop reading until the queue is back under half (sq__ws_written). */
static void ws_check_backlog(sq_ws_t *ws)
{
    size_t max = ws->opts.max_queued_bytes;
    if (max == 0 || (ws->flags & (SQ__WS_READ_PAUSED | SQ__WS_DEAD)) ||
        ws->io->queued(ws) <= max)
        return;
    ws->flags |= SQ__WS_READ_PAUSED;
    ws->io->read(ws, false);
    sq__ws_io_write(ws, NULL, 0, true); /* tells sq__ws_written when what is queued is out */
}

void sq__ws_written(sq_ws_t *ws, int status)
{
    if (ws->flags & SQ__WS_DEAD)
        return;
    if (ws->flags & SQ__WS_READ_PAUSED) {
        if (ws->io->queued(ws) <= ws->opts.max_queued_bytes / 2) {
            ws->flags &= ~SQ__WS_READ_PAUSED;
            /* the idle clock and the pong wait stood while we did not read */
            ws->last_rx = uv_now(ws->loop);
            if (ws->flags & SQ__WS_AWAIT_PONG)
                ws->ping_sent_at = ws->last_rx;
            ws->io->read(ws, true);
            ws_rearm(ws);
        } else {
            sq__ws_io_write(ws, NULL, 0, true);
        }
    }
    if (!(ws->flags & SQ__WS_DRAIN))
        return;
    if (ws->io->queued(ws) > ws->opts.max_queued_bytes / 2)
        return;
    ws->flags &= ~SQ__WS_DRAIN;
    if (ws->h->drain != NULL) {
        ws->depth++;
        WS_TIMED(ws, ws->h->drain(ws, ws->data));
        ws->depth--;
        sq__ws_after(ws);
    }
}

