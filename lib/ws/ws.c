/* The WebSocket core: the deadlines, the lifetime and the close state. Frames are read
 * by frame.c and written by ws_send.c, straight into the transport's write queue (one
 * copy, or none for a shared broadcast frame).
 *
 * Lifetime: ws lives until its transport closes. .close runs exactly once, then ws is
 * freed — deferred while our own frames (the reader, a user callback) are on the stack,
 * so nothing is freed under a caller. */
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
    /* permessage-deflate, off; when on, a compressor of about 38 KiB and an inflater of
     * about 11 KiB, held between messages only with context takeover (docs/deflate.md) */
    o->deflate_window_bits = 12;
    o->deflate_peer_window_bits = 12;
    o->deflate_mem_level = 5;
    o->deflate_level = -1;
    o->deflate_threshold = 128;
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
    int rc = opts != NULL ? SQ__OPTS_IN(o, opts) : 0;
    if (rc == 0 && o->deflate &&
        (o->deflate_window_bits < 9 || o->deflate_window_bits > 15 ||
         o->deflate_peer_window_bits < 8 || o->deflate_peer_window_bits > 15 ||
         o->deflate_mem_level < 1 || o->deflate_mem_level > 9 || o->deflate_level < -1 ||
         o->deflate_level > 9))
        rc = UV_EINVAL; /* what zlib and RFC 7692 §7.1.2 allow */
    return rc;
}

int sq__ws_handler_in(sq_ws_handler_t *h, const sq_ws_handler_t *handler, size_t size)
{
    memset(h, 0, sizeof(*h)); /* callbacks an older header lacks are unset */
    return sq__abi_table_in(h, sizeof(*h), handler, size);
}

static void ws_destroy(sq_ws_t *ws);
static void ws_check_backlog(sq_ws_t *ws);
static void ws_arm(sq_ws_t *ws, uint64_t deadline);

/* ---- writing to the transport ---- */

/* Starts watching the outgoing queue for a stall (idle_timeout_ms), unless it is already
 * watched: bytes are about to be queued. */
static void ws_watch_queue(sq_ws_t *ws)
{
    if (ws->opts->idle_timeout_ms == 0 || ws->stall_since != 0 || (ws->flags & SQ__WS_DEAD))
        return;
    uint64_t now = uv_now(ws->loop);
    ws->stall_since = now ? now : 1;
    ws->stall_out = ws->added - ws->io->queued(ws);
    ws_arm(ws, now + ws->opts->idle_timeout_ms);
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

/* ---- failing ---- */

void sq__ws_fail(sq_ws_t *ws, int code, const char *why)
{
    if (ws->flags & SQ__WS_FAILED)
        return;
    ws->flags |= SQ__WS_FAILED | SQ__WS_CLOSE_QUEUED | SQ__WS_RX_OFF;
    ws->close_code = code;
    ws->why = why;
    sq_log(SQ_LOG_DEBUG, "websocket: failing with %d: %s", code, why ? why : "(no reason)");
    /* one close frame per connection: after the application's, only reading stops */
    if (!(ws->flags & (SQ__WS_CLOSE_SENT | SQ__WS_DEAD)))
        sq__ws_send_close(ws, code, why, why ? strlen(why) : 0);
}

/* The data message being reassembled is given up (a deadline, a close): its memory goes
 * now, not when the connection does. Never called while .message holds ws->msg. */
void sq__ws_drop_partial(sq_ws_t *ws)
{
    ws->flags &= ~SQ__WS_IN_MSG;
    sq__buf_free(&ws->msg);
}

/* ---- lifetime ---- */

int sq__ws_create(sq_ws_t **out, uv_loop_t *loop, bool client, const sq_ws_handler_t *h,
                  void *data, const sq_ws_opts_t *opts, const sq__ws_io_t *io, void *transport)
{
    sq_ws_t *ws = calloc(1, sizeof(*ws));
    if (ws == NULL)
        return UV_ENOMEM;
    ws->loop = loop;
    ws->h = h;
    ws->data = data;
    ws->opts = opts;
    ws->io = io;
    ws->transport = transport;
    ws->close_code = SQ_WS_ABNORMAL;
    if (client)
        ws->flags |= SQ__WS_CLIENT;
    if (sq__ws_clock_get(ws, loop) != 0) {
        free(ws);
        return UV_ENOMEM;
    }
    *out = ws;
    return 0;
}

/* Frees ws now: called when the transport is gone and none of our frames holds ws. */
static void ws_destroy(sq_ws_t *ws)
{
    sq__ws_clock_release(ws);
    sq__buf_free(&ws->msg);
    free(ws->rx.ctl);
    free(ws->peer_reason);
    sq__ws_pmd_free(ws);
    free(ws);
}

/* ---- deadlines: one per connection in the loop's clock (clock.c), the earliest ----
 *
 * A connection taken over from HTTP leaves the server's timeout lists (their timeouts
 * are the server's, not the route's), so each WebSocket keeps its own deadlines: idle
 * (nothing received), stall (queued bytes not moving), message assembly, keepalive ping
 * and pong, and the close handshake. Events only move a deadline later (a frame
 * arrives), which costs nothing: the timer fires at the old one, finds it moved, and is
 * armed again. Only an earlier deadline restarts it (ws_arm). */

static void ws_arm(sq_ws_t *ws, uint64_t deadline)
{
    if ((ws->flags & SQ__WS_DEAD) || (ws->due != 0 && ws->due <= deadline))
        return;
    sq__ws_clock_arm(ws, deadline);
}

static uint64_t earliest(uint64_t a, uint64_t b)
{
    return a < b ? a : b;
}

/* The earliest deadline in force, or UINT64_MAX. */
static uint64_t ws_next_deadline(const sq_ws_t *ws)
{
    const sq_ws_opts_t *o = ws->opts;
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
    if (o->message_timeout_ms > 0 && (ws->flags & SQ__WS_IN_MSG) && !sq__ws_dropping_data(ws))
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
    const sq_ws_opts_t *o = ws->opts;
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
    if (o->message_timeout_ms > 0 && (ws->flags & SQ__WS_IN_MSG) && !sq__ws_dropping_data(ws) &&
        now - ws->msg_since >= o->message_timeout_ms) {
        /* RFC 6455 §7.4.1: 1008, a policy violation (1009 is for size, not time) */
        sq__ws_fail(ws, SQ_WS_POLICY, "message not received in time");
        sq__ws_drop_partial(ws);
        return;
    }
    if (o->idle_timeout_ms > 0 && !(ws->flags & (SQ__WS_READ_PAUSED | SQ__WS_CLOSE_QUEUED)) &&
        now - ws->last_rx >= o->idle_timeout_ms) {
        /* RFC 6455 §7.4.1: 1001, the endpoint is going away; 1008 is for a message that
         * violates a policy, and no message came. The close handshake runs as usual: a
         * live peer answers, a gone one is dropped at the close timeout. */
        sq__ws_drop_partial(ws);
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

void sq__ws_on_deadline(sq_ws_t *ws)
{
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
        SQ__WS_TIMED(ws, ws->h->open(ws, req, ws->data));
    ws->depth--;
    sq__ws_after(ws);
}

void sq__ws_transport_closed(sq_ws_t *ws)
{
    if (ws->flags & SQ__WS_DEAD)
        return;
    ws->flags |= SQ__WS_DEAD;
    sq__ws_clock_disarm(ws);
    /* The peer's code when its close frame came; when squall failed the connection or
     * closed a slow consumer and no answer came, the code squall sent says why */
    const char *reason = ws->why != NULL ? ws->why : ""; /* and the reason is squall's own */
    if (!(ws->flags & SQ__WS_FAILED) && (ws->flags & SQ__WS_CLOSE_RCVD)) {
        ws->close_code = ws->rx_code ? ws->rx_code : SQ_WS_NO_STATUS;
        reason = ws->peer_reason != NULL ? ws->peer_reason : "";
    }
    if (!(ws->flags & SQ__WS_CLOSED_CB) && (ws->flags & SQ__WS_OPEN) && ws->h->close != NULL) {
        ws->flags |= SQ__WS_CLOSED_CB;
        ws->depth++;
        SQ__WS_TIMED(ws, ws->h->close(ws, ws->close_code, reason, ws->data));
        ws->depth--;
    }
    ws->flags |= SQ__WS_CLOSED_CB;
    if (ws->depth == 0)
        ws_destroy(ws);
}

void sq__ws_fail_before_open(sq_ws_t *ws, const char *reason)
{
    ws->flags |= SQ__WS_OPEN; /* so that .close reports it */
    ws->why = reason;        /* the caller's: lives until this returns, as .close runs */
    ws->close_code = SQ_WS_ABNORMAL;
    sq__ws_transport_closed(ws);
}

/* After each batch of work: the backlog check, the next deadline; TCP closes once nothing
 * more is read (both close frames went, or squall failed the connection); frees if the
 * transport went while we were busy. */
void sq__ws_after(sq_ws_t *ws)
{
    if (ws->depth > 0)
        return;
    if (ws->flags & SQ__WS_DEAD) {
        ws_destroy(ws);
        return;
    }
    ws_check_backlog(ws);
    ws_rearm(ws);
    if (ws->flags & SQ__WS_RX_OFF)
        ws->io->close(ws, false); /* RFC 6455 §7.1.1: the server closes TCP first */
}

/* A peer that sends pings and never reads would grow our queue without bound, since our
 * answers (pongs) do not pass the send limit: past
 * max_queued_bytes, stop reading until the queue is back under half (sq__ws_written). */
static void ws_check_backlog(sq_ws_t *ws)
{
    size_t max = ws->opts->max_queued_bytes;
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
        if (ws->io->queued(ws) <= ws->opts->max_queued_bytes / 2) {
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
    if (ws->io->queued(ws) > ws->opts->max_queued_bytes / 2)
        return;
    ws->flags &= ~SQ__WS_DRAIN;
    if (ws->h->drain != NULL) {
        ws->depth++;
        SQ__WS_TIMED(ws, ws->h->drain(ws, ws->data));
        ws->depth--;
        sq__ws_after(ws);
    }
}

