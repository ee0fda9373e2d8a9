/* A small reader of RFC 6455 §5 frames, written for the WebSocket harnesses to hold
 * squall's reader to: what a stream of frames amounts to (where it stops being valid, the
 * messages it carries, whether it closes). It is static inline functions only: each harness
 * includes it. */
#ifndef FUZZ_WS_FRAMES_H
#define FUZZ_WS_FRAMES_H

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct frames {
    /* set by the caller */
    bool masked_ok; /* frames from a client must be masked; from a server, must not */
    size_t max_msg; /* max_message_bytes of the reading side; 0: no limit */
    /* each whole data message (reassembled, unmasked), in order; NULL: not wanted */
    void (*message)(struct frames *f, int opcode, const uint8_t *msg, size_t len);
    void *data;
    /* what the stream amounts to */
    size_t boundary; /* bytes up to the end of the last whole frame read */
    bool violation;  /* a frame that breaks §5 (see frames_read) */
    bool nonminimal; /* a length not in its shortest form (§5.2 says a sender MUST use
                        it, but not what a reader does: squall's refuses it); the
                        reader stops there, and neither outcome is held against it */
    bool too_big;    /* more than max_msg bytes of one message */
    bool close;      /* a whole close frame was read */
    bool in_msg;     /* a fragmented message is open */
    int msg_opcode;
    size_t msg_len;
    size_t pongs_alive; /* pongs whose payload is "alive" */
    size_t messages;    /* whole data messages */
    uint8_t *buf;       /* the message being reassembled (when `message` is set) */
    size_t cap;
} frames_t;

static inline void frames_free(frames_t *f)
{
    free(f->buf);
    f->buf = NULL;
    f->cap = 0;
}

static inline void frames_append(frames_t *f, const uint8_t *p, size_t n, const uint8_t *mask,
                                 size_t at)
{
    if (f->message == NULL || n == 0)
        return;
    if (f->msg_len + n > f->cap) {
        size_t cap = (f->msg_len + n) * 2;
        uint8_t *b = realloc(f->buf, cap);
        if (b == NULL)
            abort();
        f->buf = b;
        f->cap = cap;
    }
    for (size_t i = 0; i < n; i++)
        f->buf[at + i] = (uint8_t)(p[i] ^ (mask ? mask[i & 3] : 0));
}

/* Reads n bytes of frames from the start of a stream (call it once, on the whole
 * stream); stops at the first violation, at a length not in its shortest form, at a
 * close frame, or where the bytes end. A
 * length no frame may have (a 64-bit length with its top bit set, a control frame over
 * 125 bytes) is a violation as soon as its header is in; any other fault (RSV bits, an
 * unknown opcode, the wrong mask bit, a fragmented control frame, a continuation with no
 * message open, a new message inside one) once the frame is whole, since a reader may
 * take a frame's payload before it judges it. */
static inline void frames_read(frames_t *f, const uint8_t *p, size_t n)
{
    size_t off = 0;
    while (off + 2 <= n) {
        uint8_t b0 = p[off], b1 = p[off + 1];
        int op = b0 & 0x0F;
        bool fin = b0 & 0x80, mask = b1 & 0x80, control = op & 0x08;
        uint64_t len = b1 & 0x7F;
        size_t h = 2;
        if (len == 126)
            h += 2;
        else if (len == 127)
            h += 8;
        if (mask)
            h += 4;
        if (off + h > n)
            return;
        if (len == 126)
            len = (uint64_t)p[off + 2] << 8 | p[off + 3];
        else if (len == 127)
            for (int i = 0; i < 8; i++)
                len = (i == 0 ? 0 : len << 8) | p[off + 2 + i];
        uint64_t have = n - off - h;
        if (((b1 & 0x7F) == 126 && len < 126) ||
            ((b1 & 0x7F) == 127 && len <= 0xFFFF && !(len >> 63))) {
            f->nonminimal = true;
            return;
        }
        bool known = op <= 2 || (op >= 8 && op <= 10);
        if ((len >> 63) || (control && len > 125)) {
            f->violation = true;
            return;
        }
        if ((b0 & 0x70) || !known || mask != f->masked_ok || (control && !fin) ||
            (op == 0 && !f->in_msg) || ((op == 1 || op == 2) && f->in_msg)) {
            f->violation = have >= len;
            return;
        }
        const uint8_t *key = mask ? p + off + h - 4 : NULL;
        if (!control) {
            uint64_t got = have < len ? have : len;
            if (f->max_msg != 0 && f->msg_len + got > f->max_msg) {
                f->too_big = true;
                return;
            }
        }
        if (have < len)
            return;
        const uint8_t *pl = p + off + h;
        if (op == 8) {
            f->close = true;
            f->boundary = off + h + (size_t)len;
            return;
        }
        if (op == 10 && len == 5) {
            char m[5];
            for (int i = 0; i < 5; i++)
                m[i] = (char)(pl[i] ^ (key ? key[i & 3] : 0));
            if (memcmp(m, "alive", 5) == 0)
                f->pongs_alive++;
        }
        if (!control) {
            if (op != 0) {
                f->msg_opcode = op;
                f->msg_len = 0;
            }
            frames_append(f, pl, (size_t)len, key, f->msg_len);
            f->msg_len += (size_t)len;
            f->in_msg = !fin;
            if (fin) {
                f->messages++;
                if (f->message != NULL)
                    f->message(f, f->msg_opcode, f->buf, f->msg_len);
                f->msg_len = 0;
            }
        }
        off += h + (size_t)len;
        f->boundary = off;
    }
}

#endif
