/* The WebSocket frame reader (RFC 6455 §5): an incremental parser over the bytes the
 * transport read, with a few dozen bytes of state per connection (sq__ws_rx_t), whatever
 * the size of the frame being read.
 *
 * The bytes are the transport's read buffer (the server's shared one, or the client's),
 * which nothing reads again once sq__ws_feed returns: payloads are unmasked there, in
 * place, 32 bytes a turn, and a data message whose single frame lies whole in one
 * read is handed to .message straight from it — one pass over the payload to unmask, one
 * more for the UTF-8 of text, no copy. Only a message split between frames (§5.4) or
 * between reads is reassembled, into ws->msg. A control frame split between reads is
 * collected in 125 bytes lent while it comes in.
 *
 * Every check happens as soon as the bytes it needs are here: the header's first two
 * bytes (reserved bits, opcode, mask, control frames), then its length (shortest form,
 * max_message_bytes, before a payload byte is stored), then each payload byte of text
 * (UTF-8). A violation fails the connection (ws.c, sq__ws_fail) and nothing more is
 * read. */
#include <stdlib.h>

#include "ws/ws_int.h"

unsigned sq__ws_mask(uint8_t *p, size_t n, const uint8_t mask[4], unsigned phase)
{
    /* the key turned to `phase`, twice: byte i of the payload takes m8[i % 8] */
    uint8_t m8[8];
    for (unsigned i = 0; i < 4; i++)
        m8[i] = m8[i + 4] = mask[(phase + i) & 3];
    uint64_t m;
    memcpy(&m, m8, 8);
    size_t i = 0;
#if defined(__GNUC__)
    /* 32 bytes a turn in two 16-byte vectors (SSE2 on x86-64, NEON on arm64; plain
     * words where there are none) */
    typedef uint64_t u64x2 __attribute__((vector_size(16)));
    u64x2 mv = {m, m};
    for (; i + 32 <= n; i += 32) {
        u64x2 a, b;
        memcpy(&a, p + i, 16);
        memcpy(&b, p + i + 16, 16);
        a ^= mv;
        b ^= mv;
        memcpy(p + i, &a, 16);
        memcpy(p + i + 16, &b, 16);
    }
#endif
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        w ^= m;
        memcpy(p + i, &w, 8);
    }
    for (; i < n; i++)
        p[i] ^= m8[i & 7];
    return (unsigned)((phase + n) & 3);
}

bool sq__ws_close_code_valid(int code)
{
    /* §7.4.1: 1000-1003 and 1007-1014 are defined for endpoints (1004 is reserved, 1005
     * and 1006 are never sent, 1015 is TLS's); §7.4.2: 3000-4999 are for libraries and
     * applications; anything else is refused with 1002 */
    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
           (code >= 3000 && code <= 4999);
}

/* A violation of the framing (§5.2-5.5, §7.4): failed with 1002 and no reason, which
 * goes to the debug log only. */
static void fail_protocol(sq_ws_t *ws, const char *why)
{
    sq_log(SQ_LOG_DEBUG, "websocket: protocol error: %s", why);
    sq__ws_fail(ws, SQ_WS_PROTOCOL_ERROR, NULL);
}

/* The header's length from its second byte: 2, 2 more for a 16-bit length, 8 for a
 * 64-bit one, 4 for the masking key (§5.2). */
static size_t header_len(uint8_t b1)
{
    size_t n = 2;
    if ((b1 & 0x7F) == 126)
        n += 2;
    else if ((b1 & 0x7F) == 127)
        n += 8;
    return b1 & 0x80 ? n + 4 : n;
}

/* Checks the first two bytes of a header; returns SQ_WS_PROTOCOL_ERROR (and why), or 0. */
static int header_check(const sq_ws_t *ws, uint8_t b0, uint8_t b1, const char **why)
{
    unsigned op = b0 & 0x0F;
    bool fin = b0 & 0x80, masked = b1 & 0x80;
    unsigned len7 = b1 & 0x7F;
    if (b0 & 0x70) {
        /* §5.2: only an extension agreed on sets them; permessage-deflate's RSV1 goes on
         * the first frame of a data message alone (RFC 7692 §6, §6.1) */
        if ((b0 & 0x70) != 0x40 || ws->pmd == NULL)
            *why = "reserved bits set";
        else if (op == SQ__WS_OP_CONT)
            *why = "RSV1 on a continuation frame";
        else if (op & 0x8)
            *why = "RSV1 on a control frame";
        if (*why != NULL)
            return SQ_WS_PROTOCOL_ERROR;
    }
    if (masked != !(ws->flags & SQ__WS_CLIENT)) {
        /* §5.1: a client masks every frame, a server none */
        *why = masked ? "masked frame from the server" : "unmasked frame from the client";
        return SQ_WS_PROTOCOL_ERROR;
    }
    switch (op) {
    case SQ__WS_OP_CLOSE:
    case SQ__WS_OP_PING:
    case SQ__WS_OP_PONG:
        if (!fin) {
            *why = "fragmented control frame"; /* §5.5 */
            return SQ_WS_PROTOCOL_ERROR;
        }
        if (len7 > SQ__WS_CONTROL_MAX) {
            *why = "control frame over 125 bytes"; /* §5.5 */
            return SQ_WS_PROTOCOL_ERROR;
        }
        if (op == SQ__WS_OP_CLOSE && len7 == 1) {
            *why = "close frame body of one byte"; /* §5.5.1: a code is two */
            return SQ_WS_PROTOCOL_ERROR;
        }
        return 0;
    case SQ__WS_OP_CONT:
        if (!(ws->flags & SQ__WS_RX_FRAG)) {
            *why = "continuation without a message"; /* §5.4 */
            return SQ_WS_PROTOCOL_ERROR;
        }
        return 0;
    case SQ__WS_OP_TEXT:
    case SQ__WS_OP_BINARY:
        if (ws->flags & SQ__WS_RX_FRAG) {
            /* §5.4: fragments of one message are not interleaved with another's */
            *why = "new message inside a fragmented one";
            return SQ_WS_PROTOCOL_ERROR;
        }
        return 0;
    default:
        *why = "reserved opcode"; /* §5.2 */
        return SQ_WS_PROTOCOL_ERROR;
    }
}

/* ---- data frames ---- */

/* A data frame's header is read: the message deadline, its kind, and its size against
 * max_message_bytes (§10.4: the whole message, refused before a byte of it is stored).
 * False when the connection failed. */
static bool data_begin(sq_ws_t *ws, uint64_t len)
{
    sq__ws_rx_t *rx = &ws->rx;
    if (!(ws->flags & SQ__WS_IN_MSG)) {
        /* the message-assembly deadline runs from its first frame's header to its end */
        ws->flags |= SQ__WS_IN_MSG;
        ws->msg_since = uv_now(ws->loop);
    }
    if (rx->op != SQ__WS_OP_CONT) {
        ws->msg.len = 0;
        /* RSV1 (deflate agreed: header_check) marks the message compressed */
        ws->flags = (ws->flags & ~(uint32_t)SQ__WS_RX_DEFLATE) |
                    (rx->rsv1 ? (uint32_t)SQ__WS_RX_DEFLATE : 0);
        if (rx->op == SQ__WS_OP_TEXT) {
            ws->flags |= SQ__WS_IN_TEXT;
            sq__utf8_init(&ws->utf8);
        } else {
            ws->flags &= ~SQ__WS_IN_TEXT;
        }
    }
    if (rx->fin)
        ws->flags &= ~SQ__WS_RX_FRAG;
    else
        ws->flags |= SQ__WS_RX_FRAG;
    if (sq__ws_dropping_data(ws)) {
        if (ws->msg.cap > 0)
            sq__ws_drop_partial(ws);
        ws->flags |= SQ__WS_IN_MSG; /* ...until its last frame, but nothing is kept */
        return true;
    }
    size_t max = ws->opts->max_message_bytes;
    /* a compressed message is measured as it inflates (deflate.c) */
    if (max > 0 && len > max - ws->msg.len && !(ws->flags & SQ__WS_RX_DEFLATE)) {
        sq__ws_fail(ws, SQ_WS_TOO_BIG, "message too big");
        return false;
    }
    return true;
}

/* Hands a whole message to .message. */
static void deliver(sq_ws_t *ws, const char *msg, size_t len)
{
    if (ws->h->message != NULL)
        SQ__WS_TIMED(ws, ws->h->message(ws, !(ws->flags & SQ__WS_IN_TEXT), msg, len, ws->data));
}

/* Payload bytes of a data frame, unmasked, that do not end a message lying in one read. */
static void data_chunk(sq_ws_t *ws, const uint8_t *p, size_t n)
{
    ws->last_rx = uv_now(ws->loop); /* data moving: not idle (the message deadline bounds it) */
    if (sq__ws_dropping_data(ws))
        return;
    if (ws->flags & SQ__WS_RX_DEFLATE) {
        sq__ws_pmd_inflate(ws, p, n, false); /* checks the UTF-8 of what comes out */
        return;
    }
    /* §8.1: invalid UTF-8 fails the connection as soon as the byte arrives */
    if ((ws->flags & SQ__WS_IN_TEXT) && !sq__utf8_feed(&ws->utf8, p, n)) {
        sq__ws_fail(ws, SQ_WS_INVALID_DATA, "invalid UTF-8 in a text message");
        return;
    }
    /* one buffer per connection, whatever the number of fragments: a peer sending many
     * one-byte fragments holds at most max_message_bytes */
    if (sq__buf_append(&ws->msg, p, n) != 0)
        sq__ws_fail(ws, SQ_WS_INTERNAL, "out of memory");
}

/* A data frame's last byte arrived (or it had none). */
static void data_end(sq_ws_t *ws)
{
    /* a frame received whole: the idle clock starts again */
    ws->last_rx = uv_now(ws->loop);
    if (!ws->rx.fin)
        return;
    ws->flags &= ~SQ__WS_IN_MSG;
    bool deflated = ws->flags & SQ__WS_RX_DEFLATE;
    if (sq__ws_dropping_data(ws)) {
        if (ws->msg.cap > 0)
            sq__ws_drop_partial(ws);
        return;
    }
    /* RFC 7692 §7.2.2: the tail goes back on, and what it flushes comes out */
    if (deflated && !sq__ws_pmd_inflate(ws, NULL, 0, true))
        return;
    if ((ws->flags & SQ__WS_IN_TEXT) && !sq__utf8_complete(&ws->utf8)) {
        sq__ws_fail(ws, SQ_WS_INVALID_DATA, "truncated UTF-8 in a text message");
        return;
    }
    deliver(ws, ws->msg.len ? ws->msg.base : "", ws->msg.len);
    /* the buffer is lent for one message: an idle connection holds none */
    sq__buf_free(&ws->msg);
    if (deflated && ws->pmd != NULL)
        sq__ws_pmd_rx_done(ws);
}

/* A message of one frame whose payload lies whole in this read: unmasked in place and
 * delivered from there, never copied. */
static void data_whole(sq_ws_t *ws, uint8_t *p, size_t len)
{
    sq__ws_rx_t *rx = &ws->rx;
    ws->last_rx = uv_now(ws->loop);
    ws->flags &= ~SQ__WS_IN_MSG;
    if (rx->masked)
        sq__ws_mask(p, len, rx->mask, 0);
    if (ws->flags & SQ__WS_IN_TEXT) {
        if (!sq__utf8_feed(&ws->utf8, p, len)) {
            sq__ws_fail(ws, SQ_WS_INVALID_DATA, "invalid UTF-8 in a text message");
            return;
        }
        if (!sq__utf8_complete(&ws->utf8)) {
            sq__ws_fail(ws, SQ_WS_INVALID_DATA, "truncated UTF-8 in a text message");
            return;
        }
    }
    deliver(ws, len ? (const char *)p : "", len);
}

/* ---- control frames (§5.5) ---- */

/* The peer's close frame (§5.5.1): no body, or a valid code then a UTF-8 reason. It is
 * answered with a close frame echoing the code, unless ours went already; nothing more
 * is read, and TCP closes once the answer is written (§7.1.1: the server first). */
static void control_close(sq_ws_t *ws, const uint8_t *p, size_t len)
{
    int code = len >= 2 ? p[0] << 8 | p[1] : 0;
    if (len >= 2 && !sq__ws_close_code_valid(code)) {
        fail_protocol(ws, "invalid close code"); /* §7.4 */
        return;
    }
    if (len > 2) {
        sq__utf8_t u;
        sq__utf8_init(&u);
        if (!sq__utf8_feed(&u, p + 2, len - 2) || !sq__utf8_complete(&u)) {
            sq__ws_fail(ws, SQ_WS_INVALID_DATA, "invalid UTF-8 in the close reason");
            return;
        }
        ws->peer_reason = malloc(len - 2 + 1); /* none without memory: .close gets "" */
        if (ws->peer_reason != NULL) {
            memcpy(ws->peer_reason, p + 2, len - 2);
            ws->peer_reason[len - 2] = '\0';
        }
    }
    ws->flags |= SQ__WS_CLOSE_RCVD | SQ__WS_RX_OFF;
    ws->rx_code = (uint16_t)code;
    if (!(ws->flags & SQ__WS_CLOSE_SENT))
        sq__ws_send_close(ws, code, p + 2, len > 2 ? len - 2 : 0);
}

/* A whole control frame, unmasked. */
static void control(sq_ws_t *ws, unsigned op, const uint8_t *p, size_t len)
{
    /* a frame received whole, control or data: the idle clock starts again (a control
     * frame trickled in byte by byte does not hold it off) */
    ws->last_rx = uv_now(ws->loop);
    switch (op) {
    case SQ__WS_OP_PING:
        /* §5.5.2-3: answered with a pong carrying the same payload; none once our close
         * frame went (§5.5.1: nothing follows it) */
        if (!(ws->flags & (SQ__WS_CLOSE_QUEUED | SQ__WS_DEAD)) &&
            sq__ws_write_frame(ws, SQ__WS_OP_PONG, p, len, false) == UV_ENOMEM)
            sq__ws_fail(ws, SQ_WS_INTERNAL, "out of memory");
        break;
    case SQ__WS_OP_PONG:
        ws->flags &= ~SQ__WS_AWAIT_PONG;
        if (ws->h->pong != NULL && !(ws->flags & SQ__WS_FAILED))
            SQ__WS_TIMED(ws, ws->h->pong(ws, len ? (const char *)p : "", len, ws->data));
        break;
    default:
        control_close(ws, p, len);
        break;
    }
}

/* ---- the reader ---- */

/* A whole header at h: checks its length, then starts the frame. Returns where the
 * bytes after the frame's payload start (p, when its payload comes later). */
static uint8_t *frame_begin(sq_ws_t *ws, const uint8_t *h, uint8_t *p, uint8_t *end)
{
    sq__ws_rx_t *rx = &ws->rx;
    const char *why = NULL;
    int code = header_check(ws, h[0], h[1], &why);
    uint64_t len = h[1] & 0x7F;
    size_t off = 2;
    if (code == 0 && len == 126) {
        len = (uint64_t)h[2] << 8 | h[3];
        off = 4;
        if (len < 126) {
            why = "frame length not in its shortest form"; /* §5.2 */
            code = SQ_WS_PROTOCOL_ERROR;
        }
    } else if (code == 0 && len == 127) {
        len = 0;
        for (int i = 0; i < 8; i++)
            len = len << 8 | h[2 + i];
        off = 10;
        if (len >> 63) {
            why = "frame length with its top bit set"; /* §5.2 */
            code = SQ_WS_PROTOCOL_ERROR;
        } else if (len <= 0xFFFF) {
            why = "frame length not in its shortest form";
            code = SQ_WS_PROTOCOL_ERROR;
        }
    }
    if (code != 0) {
        fail_protocol(ws, why);
        return end;
    }
    rx->op = h[0] & 0x0F;
    rx->fin = h[0] & 0x80;
    rx->masked = h[1] & 0x80;
    rx->rsv1 = h[0] & 0x40; /* header_check let it through: deflate was agreed */
    if (rx->masked)
        memcpy(rx->mask, h + off, 4);
    rx->phase = 0;
    rx->left = len;
    size_t avail = (size_t)(end - p);
    if (rx->op & 0x8) {
        if (len <= avail) {
            /* whole in this read: handled where it lies */
            if (rx->masked)
                sq__ws_mask(p, (size_t)len, rx->mask, 0);
            control(ws, rx->op, p, (size_t)len);
            return p + len;
        }
        rx->ctl = malloc(SQ__WS_CONTROL_MAX);
        if (rx->ctl == NULL) {
            sq__ws_fail(ws, SQ_WS_INTERNAL, "out of memory");
            return end;
        }
        rx->ctl_len = 0;
        rx->payload = true;
        return p;
    }
    if (!data_begin(ws, len))
        return end;
    /* a compressed message is inflated on the way (data_chunk) */
    if (len <= avail && rx->op != SQ__WS_OP_CONT && rx->fin && !rx->rsv1) {
        if (!sq__ws_dropping_data(ws))
            data_whole(ws, p, (size_t)len);
        else
            data_end(ws);
        return p + len;
    }
    if (len == 0) {
        data_end(ws);
        return p;
    }
    rx->payload = true;
    return p;
}

/* Header bytes; returns where the bytes after what was used start. */
static uint8_t *read_header(sq_ws_t *ws, uint8_t *p, uint8_t *end)
{
    sq__ws_rx_t *rx = &ws->rx;
    size_t avail = (size_t)(end - p);
    if (rx->hlen == 0 && avail >= 2) {
        size_t hl = header_len(p[1]);
        if (hl <= avail) /* the usual case: the header lies whole in the read */
            return frame_begin(ws, p, p + hl, end);
    }
    /* collected in rx->hdr, and checked as soon as its first two bytes are here: a peer
     * does not get to hold a bad header open */
    size_t need = rx->hlen < 2 ? 2 : header_len(rx->hdr[1]);
    while (rx->hlen < need && p < end) {
        rx->hdr[rx->hlen++] = *p++;
        if (rx->hlen == 2) {
            const char *why = NULL;
            int code = header_check(ws, rx->hdr[0], rx->hdr[1], &why);
            if (code != 0) {
                fail_protocol(ws, why);
                return end;
            }
            need = header_len(rx->hdr[1]);
        }
    }
    if (rx->hlen < need)
        return p;
    rx->hlen = 0;
    return frame_begin(ws, rx->hdr, p, end);
}

/* Payload bytes of the frame being read. */
static uint8_t *read_payload(sq_ws_t *ws, uint8_t *p, uint8_t *end)
{
    sq__ws_rx_t *rx = &ws->rx;
    size_t n = (size_t)(end - p);
    if (n > rx->left)
        n = (size_t)rx->left;
    bool control_frame = rx->op & 0x8;
    if (rx->masked && (control_frame || !sq__ws_dropping_data(ws)))
        rx->phase = (uint8_t)sq__ws_mask(p, n, rx->mask, rx->phase);
    rx->left -= n;
    if (control_frame) {
        memcpy(rx->ctl + rx->ctl_len, p, n);
        rx->ctl_len = (uint8_t)(rx->ctl_len + n);
    } else {
        data_chunk(ws, p, n);
    }
    if (rx->left > 0)
        return p + n;
    rx->payload = false;
    if (control_frame) {
        uint8_t *ctl = rx->ctl;
        rx->ctl = NULL;
        control(ws, rx->op, ctl, rx->ctl_len);
        free(ctl);
    } else if (!(ws->flags & SQ__WS_RX_OFF)) {
        data_end(ws);
    }
    return p + n;
}

void sq__ws_feed(sq_ws_t *ws, char *data, ssize_t n)
{
    if (ws->flags & SQ__WS_DEAD)
        return;
    if (n < 0) {
        ws->io->close(ws, true);
        return;
    }
    uint8_t *p = (uint8_t *)data, *end = p + n;
    ws->depth++;
    /* a failure, the peer's close frame or the transport's end stops the reading: what
     * follows in the read is dropped */
    while (p < end && !(ws->flags & (SQ__WS_RX_OFF | SQ__WS_DEAD)))
        p = ws->rx.payload ? read_payload(ws, p, end) : read_header(ws, p, end);
    ws->depth--;
    sq__ws_after(ws);
}
