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
    if (ws->flags & (SQ__WS_DEAD | SQ__WS_CLOSING | SQ__WS_FAILED | SQ__WS_CLOSE_QUEUED |
                     SQ__WS_CLOSE_SENT | SQ__WS_CLOSE_RCVD))
        return SQ_ECLOSED;
    if (!(ws->flags & SQ__WS_OPEN))
        return UV_ENOTCONN; /* a client still connecting */
    size_t q = ws->io->queued(ws);
    size_t max = ws->opts->max_queued_bytes;
    /* a message larger than the limit still goes out when nothing is queued before it:
     * the limit bounds a backlog, not the size of one message */
    if (max > 0 && q > 0 && q + len > max) {
        if (ws->opts->overflow != SQ_WS_OVERFLOW_DROP) {
            int code = ws->opts->overflow == SQ_WS_OVERFLOW_TRY_AGAIN ? SQ_WS_TRY_AGAIN
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
 * as they are on the server side; masked into a buffer of its own on the client side
 * (the transport copies it before the write returns). */
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
    uint8_t small[256];
    size_t hl = sq__ws_frame_header(hdr, opcode, len, mask);
    uint8_t *f = hl + len <= sizeof(small) ? small : malloc(hl + len);
    if (f == NULL)
        return UV_ENOMEM;
    memcpy(f, hdr, hl);
    if (len > 0)
        memcpy(f + hl, msg, len);
    sq__ws_mask(f + hl, len, mask, 0);
    uv_buf_t b = uv_buf_init((char *)f, (unsigned)(hl + len));
    int rc = sq__ws_io_write(ws, &b, 1, notify);
    if (f != small)
        free(f);
    return rc;
}

int sq__ws_send_close(sq_ws_t *ws, int code, const void *reason, size_t len)
{
    if (ws->flags & SQ__WS_CLOSE_SENT)
        return SQ_ECLOSED;
    uint8_t p[SQ__WS_CONTROL_MAX];
    size_t n = 0;
    if (code != 0) {
        /* §5.5.1: the code, big-endian, then the reason; 125 bytes in all */
        if (len > sizeof(p) - 2)
            len = sizeof(p) - 2;
        p[0] = (uint8_t)(code >> 8);
        p[1] = (uint8_t)code;
        if (len > 0)
            memcpy(p + 2, reason, len);
        n = 2 + len;
    }
    ws->flags |= SQ__WS_CLOSE_SENT | SQ__WS_CLOSE_QUEUED;
    if (!(ws->flags & SQ__WS_CLOSING)) {
        ws->flags |= SQ__WS_CLOSING; /* the close timeout runs from here */
        ws->close_since = uv_now(ws->loop);
    }
    return sq__ws_write_frame(ws, SQ__WS_OP_CLOSE, p, n, false);
}

/* Callers have refused len > SQ_WS_MAX_SEND_BYTES (UV_EMSGSIZE) before looking at the
 * bytes: libuv's buffers count 32 bits (uv_buf_init), header included. Inline: it is the
 * path of every message sent. */
static inline int ws_send_frame(sq_ws_t *ws, int opcode, const void *msg, size_t len)
{
    bool notify = false;
    int rc = ws_admit(ws, len + 14, &notify);
    if (rc != 0)
        return rc;
    if (SQ__UNLIKELY(ws->pmd != NULL))
        return sq__ws_pmd_send(ws, opcode, msg, len, notify); /* RFC 7692 */
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
    return ws_send_frame(ws, binary ? SQ__WS_OP_BINARY : SQ__WS_OP_TEXT, msg, len);
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
    int opcode = !first ? SQ__WS_OP_CONT
                        : binary ? SQ__WS_OP_BINARY : SQ__WS_OP_TEXT;
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
    if (len > SQ__WS_CONTROL_MAX)
        return UV_EINVAL;
    if (ws->flags & (SQ__WS_DEAD | SQ__WS_CLOSING | SQ__WS_CLOSE_QUEUED | SQ__WS_CLOSE_SENT))
        return SQ_ECLOSED;
    if (!(ws->flags & SQ__WS_OPEN))
        return UV_ENOTCONN; /* a client still connecting */
    int rc = sq__ws_write_frame(ws, SQ__WS_OP_PING, payload, len, false);
    if (rc != 0)
        return rc == UV_ENOMEM ? rc : SQ_ECLOSED;
    sq__ws_after(ws);
    return 0;
}

int sq_ws_close(sq_ws_t *ws, int code, const char *reason)
{
    if (!sq__ws_close_code_valid(code))
        return UV_EINVAL;
    if (ws->flags & (SQ__WS_DEAD | SQ__WS_CLOSING | SQ__WS_CLOSE_QUEUED | SQ__WS_CLOSE_SENT))
        return SQ_ECLOSED;
    if (!(ws->flags & SQ__WS_OPEN)) {
        /* a client still connecting: cancel; .close reports "cancelled" before this returns
         * (test: ws/client_closed_before_open_is_cancelled_with_one_close) */
        ws->io->close(ws, true);
        return 0;
    }
    size_t rl = reason ? strlen(reason) : 0;
    /* sent, or the transport is going: either way the close handshake has begun */
    sq__ws_send_close(ws, code, reason, rl > 123 ? 123 : rl);
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
    f->opcode = binary ? SQ__WS_OP_BINARY : SQ__WS_OP_TEXT;
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
