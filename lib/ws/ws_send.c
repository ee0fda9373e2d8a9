/* The sending side of a WebSocket (RFC 6455 §5): the queue limit and its policies, frames
 * written straight into the transport's queue (masked on the client side), fragments,
 * pings, the close frame, and frames shared by a broadcast. Receiving, the deadlines and
 * the lifetime are ws.c's. */
#include <openssl/rand.h>
#include <stdlib.h>

#include "ws/ws_int.h"

/* ---- sending ---- */

/* Applies the queue limit before `len` more bytes go out. 0: go ahead. */
static int ws_admit(sq_ws_t *ws, size_t len, bool *notify)
{
    /* RFC 6455 §5.5.1: no data frame after our close frame, even one still queued */
    if (ws->flags & (SQ__WS_DEAD | SQ__WS_CLOSING | SQ__WS_FAILED | SQ__WS_CLOSE_QUEUED) ||
        wslay_event_get_close_sent(ws->ctx) || wslay_event_get_close_received(ws->ctx))
        return SQ_ECLOSED;
    if (!(ws->flags & SQ__WS_OPEN))
        return UV_ENOTCONN; /* a client still connecting */
    size_t q = ws->io->queued(ws);
    size_t max = ws->opts.max_queued_bytes;
    /* a message larger than the limit still goes out when nothing is queued before it:
     * the limit bounds a backlog, not the size of one message */
    if (max > 0 && q > 0 && q + len > max) {
        if (ws->opts.overflow != SQ_WS_OVERFLOW_DROP) {
            int code = ws->opts.overflow == SQ_WS_OVERFLOW_TRY_AGAIN ? SQ_WS_TRY_AGAIN
                                                                     : SQ_WS_POLICY;
            if (sq_ws_close(ws, code, "slow consumer") == 0) {
                ws->close_code = code; /* .close says why if the peer never answers */
                ws->why = "slow consumer";
            }
        }
        return UV_ENOBUFS;
    }
    *notify = max > 0 && q + len > max / 2;
    if (*notify)
        ws->flags |= SQ__WS_DRAIN;
    return 0;
}

/* Frames one message (FIN set) straight into the transport's queue: header and payload
 * as they are on the server side; masked into scratch on the client side. */
int sq__ws_write_frame(sq_ws_t *ws, int opcode, const void *msg, size_t len, bool notify)
{
    uint8_t hdr[14];
    if (!(ws->flags & SQ__WS_CLIENT)) {
        size_t hl = sq__ws_frame_header(hdr, opcode, len, NULL);
        uv_buf_t b[2] = {uv_buf_init((char *)hdr, (unsigned)hl),
                         uv_buf_init((char *)msg, (unsigned)len)};
        return sq__ws_io_write(ws, b, len ? 2 : 1, notify);
    }
    /* RFC 6455 §5.3: a client masks every frame with a fresh key */
    uint8_t mask[4];
    if (RAND_bytes(mask, 4) != 1)
        return UV_EIO;
    size_t hl = sq__ws_frame_header(hdr, opcode, len, mask);
    ws->scratch.len = 0;
    if (sq__buf_reserve(&ws->scratch, hl + len) != 0)
        return UV_ENOMEM;
    sq__buf_append_unsafe(&ws->scratch, hdr, hl);
    uint8_t *dst = (uint8_t *)ws->scratch.base + hl;
    const uint8_t *src = msg;
    for (size_t i = 0; i < len; i++)
        dst[i] = src[i] ^ mask[i & 3];
    uv_buf_t b = uv_buf_init(ws->scratch.base, (unsigned)(hl + len));
    return sq__ws_io_write(ws, &b, 1, notify);
}

/* Callers have refused len > SQ_WS_MAX_SEND_BYTES (UV_EMSGSIZE) before looking at the
 * bytes: libuv's buffers count 32 bits (uv_buf_init), header included. */
static int ws_send_frame(sq_ws_t *ws, int opcode, const void *msg, size_t len)
{
    bool notify = false;
    int rc = ws_admit(ws, len + 14, &notify);
    if (rc != 0)
        return rc;
    return sq__ws_write_frame(ws, opcode, msg, len, notify);
}

int sq_ws_send(sq_ws_t *ws, int binary, const void *msg, size_t len)
{
    if (len > SQ_WS_MAX_SEND_BYTES)
        return UV_EMSGSIZE; /* send it in fragments */
    if (ws->flags & SQ__WS_SENDING_FRAGS)
        return SQ_EBUSY; /* RFC 6455 §5.4: data frames of two messages never interleave */
    if (!binary) {
        sq__utf8_t u;
        sq__utf8_init(&u);
        if (!sq__utf8_feed(&u, msg, len) || !sq__utf8_complete(&u))
            return UV_EINVAL; /* RFC 6455 §5.6: text is UTF-8 */
    }
    return ws_send_frame(ws, binary ? WSLAY_BINARY_FRAME : WSLAY_TEXT_FRAME, msg, len);
}

int sq_ws_send_fragment(sq_ws_t *ws, int binary, const void *data, size_t len, int fin)
{
    if (len > SQ_WS_MAX_SEND_BYTES)
        return UV_EMSGSIZE;
    bool first = !(ws->flags & SQ__WS_SENDING_FRAGS);
    if (!first && !!binary != !!(ws->flags & SQ__WS_SEND_BINARY))
        return UV_EINVAL;
    sq__utf8_t u = ws->send_utf8;
    if (first)
        sq__utf8_init(&u);
    /* RFC 6455 §5.6: the text of the whole message is UTF-8; a character may span
     * fragments, but the last one must end on a boundary */
    if (!binary && (!sq__utf8_feed(&u, data, len) || (fin && !sq__utf8_complete(&u))))
        return UV_EINVAL;
    int opcode = !first ? WSLAY_CONTINUATION_FRAME
                        : binary ? WSLAY_BINARY_FRAME : WSLAY_TEXT_FRAME;
    int rc = ws_send_frame(ws, fin ? opcode : opcode | SQ__WS_NOFIN, data, len);
    if (rc != 0)
        return rc; /* nothing was sent: the message stays where it was */
    ws->send_utf8 = u;
    if (fin)
        ws->flags &= ~(SQ__WS_SENDING_FRAGS | SQ__WS_SEND_BINARY);
    else
        ws->flags |= SQ__WS_SENDING_FRAGS | (binary ? SQ__WS_SEND_BINARY : 0);
    return 0;
}

int sq_ws_send_text(sq_ws_t *ws, const char *msg, size_t len)
{
    return sq_ws_send(ws, 0, msg, len);
}

int sq_ws_send_binary(sq_ws_t *ws, const void *msg, size_t len)
{
    return sq_ws_send(ws, 1, msg, len);
}

int sq_ws_ping(sq_ws_t *ws, const void *payload, size_t len)
{
    if (len > 125)
        return UV_EINVAL;
    if (ws->flags & (SQ__WS_DEAD | SQ__WS_CLOSING | SQ__WS_CLOSE_QUEUED) ||
        wslay_event_get_close_sent(ws->ctx))
        return SQ_ECLOSED;
    if (!(ws->flags & SQ__WS_OPEN))
        return UV_ENOTCONN; /* queued now, wslay's writer would fail and stop for good */
    struct wslay_event_msg m = {.opcode = WSLAY_PING, .msg = payload, .msg_length = len};
    if (wslay_event_queue_msg(ws->ctx, &m) != 0)
        return SQ_ECLOSED;
    sq__ws_after(ws);
    return 0;
}

/* RFC 6455 §7.4.1-2: the codes an endpoint may put in a close frame. */
static bool close_code_sendable(int code)
{
    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
           (code >= 3000 && code <= 4999);
}

int sq_ws_close(sq_ws_t *ws, int code, const char *reason)
{
    if (!close_code_sendable(code))
        return UV_EINVAL;
    if (ws->flags & (SQ__WS_DEAD | SQ__WS_CLOSING | SQ__WS_CLOSE_QUEUED) ||
        wslay_event_get_close_sent(ws->ctx))
        return SQ_ECLOSED;
    if (!(ws->flags & SQ__WS_OPEN)) {
        /* a client still connecting: cancel; .close reports "cancelled" before this returns
         * (test: ws/client_closed_before_open_is_cancelled_with_one_close) */
        ws->io->close(ws, true);
        return 0;
    }
    size_t rl = reason ? strlen(reason) : 0;
    if (rl > 123)
        rl = 123;
    if (wslay_event_queue_close(ws->ctx, (uint16_t)code, (const uint8_t *)reason, rl) != 0)
        return SQ_ECLOSED;
    ws->flags |= SQ__WS_CLOSE_QUEUED;
    sq__ws_after(ws);
    return 0;
}

size_t sq_ws_queued_bytes(const sq_ws_t *ws)
{
    return ws->flags & SQ__WS_DEAD ? 0 : ws->io->queued(ws);
}

const char *sq_ws_subprotocol(const sq_ws_t *ws)
{
    return ws->subprotocol;
}

void sq_ws_set_data(sq_ws_t *ws, void *data)
{
    ws->user = data;
}

void *sq_ws_data(const sq_ws_t *ws)
{
    return ws->user;
}

uv_loop_t *sq_ws_loop(const sq_ws_t *ws)
{
    return ws->loop;
}

int sq_ws_error(const sq_ws_t *ws)
{
    return ws->error;
}

int sq_ws_is_client(const sq_ws_t *ws)
{
    return (ws->flags & SQ__WS_CLIENT) != 0;
}

/* ---- broadcast frames ---- */

struct sq_ws_frame_s {
    unsigned refs;
    int opcode;
    size_t len;      /* the whole frame */
    size_t hlen;     /* its header */
    uint8_t bytes[];
};

int sq_ws_frame_create(sq_ws_frame_t **out, int binary, const void *msg, size_t len)
{
    *out = NULL;
    if (len > SQ_WS_MAX_SEND_BYTES)
        return UV_EMSGSIZE; /* before a byte is copied or checked */
    if (!binary) {
        sq__utf8_t u;
        sq__utf8_init(&u);
        if (!sq__utf8_feed(&u, msg, len) || !sq__utf8_complete(&u))
            return UV_EINVAL; /* RFC 6455 §8.1: text is UTF-8 */
    }
    sq_ws_frame_t *f = malloc(sizeof(*f) + 10 + len);
    if (f == NULL)
        return UV_ENOMEM;
    f->refs = 1;
    f->opcode = binary ? WSLAY_BINARY_FRAME : WSLAY_TEXT_FRAME;
    f->hlen = sq__ws_frame_header(f->bytes, f->opcode, len, NULL);
    memcpy(f->bytes + f->hlen, msg, len);
    f->len = f->hlen + len;
    *out = f;
    return 0;
}

void sq_ws_frame_release(sq_ws_frame_t *f)
{
    if (f != NULL && --f->refs == 0)
        free(f);
}

static void frame_unref(void *ptr, void *data)
{
    sq_ws_frame_release(data);
}

int sq_ws_send_frame(sq_ws_t *ws, sq_ws_frame_t *f)
{
    if (ws->flags & SQ__WS_SENDING_FRAGS)
        return SQ_EBUSY;
    if (ws->flags & SQ__WS_CLIENT)
        return ws_send_frame(ws, f->opcode, f->bytes + f->hlen, f->len - f->hlen);
    bool notify = false;
    int rc = ws_admit(ws, f->len, &notify);
    if (rc != 0)
        return rc;
    f->refs++;
    return sq__ws_io_write_ref(ws, f->bytes, f->len, frame_unref, f, notify);
}

size_t sq_ws_broadcast(sq_ws_t *const *list, size_t n, int binary, const void *msg, size_t len)
{
    sq_ws_frame_t *f;
    if (sq_ws_frame_create(&f, binary, msg, len) != 0)
        return 0;
    size_t ok = 0;
    for (size_t i = 0; i < n; i++)
        ok += sq_ws_send_frame(list[i], f) == 0;
    sq_ws_frame_release(f);
    return ok;
}
