/* permessage-deflate (RFC 7692) in the server role. A connection of the memory transport
 * (the real connection, WebSocket and deflate code, no socket) is upgraded with an offer
 * of permessage-deflate, then fed frames in pieces whose size the input chooses. The
 * route echoes every message (some in fragments).
 *
 * Input: byte 0 picks the route's options (bits 0-1) and the mode (bit 2); byte 1 the
 * piece size (1..256, larger for a long input). The rest is, in raw mode, what the client
 * sends after the handshake (compressed frames whose payload is whatever the input says:
 * broken streams, bombs, RSV1 where it must not be); in built mode, messages the harness
 * compresses itself with zlib, as a client would, then frames and masks:
 *   [flags][len][len bytes] ...   flags: bit 0 binary, bit 1 sent uncompressed, bits 2-3
 *   fragments - 1, bit 4 flip a byte of the compressed payload (at len % size), bit 5 a
 *   reset of the client's context (allowed: it only costs ratio).
 *
 * After each input, besides what the sanitizers catch (and the leak check at exit):
 * - every frame the server wrote is well formed: no mask, RSV2/RSV3 clear, RSV1 only on
 *   the first frame of a data message, control frames whole and at most 125 bytes;
 * - every compressed message the server wrote inflates (with context takeover as agreed)
 *   to at most max_message_bytes... of what it echoes; in built mode with nothing
 *   corrupted and no close, the echoes are exactly the messages sent. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include <squall.h>

#include "server/server_int.h"

#define NVARIANTS 4
#define MAX_MSG 4096
#define MAX_PIECES 512

static uv_loop_t loop;
static sq_server_t *srv[NVARIANTS];

static void ws_message(sq_ws_t *ws, int binary, const char *msg, size_t len, void *data)
{
    if (len > 0 && msg[0] == 'F') { /* the echo in three fragments */
        size_t a = len / 3, b = 2 * len / 3;
        sq_ws_send_fragment(ws, binary, msg, a, 0);
        sq_ws_send_fragment(ws, binary, msg + a, b - a, 0);
        sq_ws_send_fragment(ws, binary, msg + b, len - b, 1);
        return;
    }
    sq_ws_send(ws, binary, msg, len);
}

static const sq_ws_handler_t echo = {.message = ws_message};

/* variant 0: defaults; 1: no context takeover both ways; 2: threshold 0, windows of 9
 * bits, memLevel 1; 3: threshold 0, level 0 (stored blocks) */
static bool no_ctx(int v)
{
    return v == 1;
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    sq_log_set_level(SQ_LOG_OFF);
    uv_loop_init(&loop);
    for (int v = 0; v < NVARIANTS; v++) {
        sq_app_t *app;
        sq_app_create(&app);
        sq_ws_opts_t o;
        sq_ws_opts_init(&o);
        o.max_message_bytes = MAX_MSG;
        o.deflate = 1;
        o.deflate_no_context_takeover = no_ctx(v);
        o.deflate_peer_no_context_takeover = no_ctx(v);
        if (v >= 2)
            o.deflate_threshold = 0;
        if (v == 2) {
            o.deflate_window_bits = 9;
            o.deflate_peer_window_bits = 9;
            o.deflate_mem_level = 1;
        }
        if (v == 3)
            o.deflate_level = 0;
        sq_app_websocket(app, "/ws", &echo, &o, NULL);
        sq_server_opts_t so;
        sq_server_opts_init(&so);
        sq_server_create(&srv[v], &loop, app, &so);
    }
    return 0;
}

/* ---- the server's frames ---- */

typedef struct echoes {
    z_stream z;        /* inflates the server's compressed messages */
    uint8_t *msg;      /* the message being reassembled */
    size_t len, cap;
    bool deflated, in_msg, close;
    size_t count;      /* whole data messages */
    uint8_t *all;      /* every echoed message's bytes, one after another */
    size_t all_len, all_cap;
} echoes_t;

static void grow(uint8_t **p, size_t *cap, size_t need)
{
    if (need <= *cap)
        return;
    size_t c = *cap ? *cap : 256;
    while (c < need)
        c *= 2;
    *p = realloc(*p, c);
    if (*p == NULL)
        abort();
    *cap = c;
}

static void echo_done(echoes_t *e)
{
    uint8_t *m = e->msg;
    size_t n = e->len;
    uint8_t *out = NULL;
    size_t out_len = 0;
    if (e->deflated) {
        grow(&e->msg, &e->cap, e->len + 4);
        memcpy(e->msg + e->len, "\0\0\xff\xff", 4);
        size_t cap = MAX_MSG + 1;
        out = malloc(cap);
        e->z.next_in = e->msg;
        e->z.avail_in = (uInt)(e->len + 4);
        e->z.next_out = out;
        e->z.avail_out = (uInt)cap;
        int rc = inflate(&e->z, Z_SYNC_FLUSH);
        if ((rc != Z_OK && rc != Z_BUF_ERROR) || e->z.avail_in != 0 || e->z.avail_out == 0)
            abort(); /* the server's compressed message does not inflate, or is too big */
        out_len = cap - e->z.avail_out;
        m = out;
        n = out_len;
    }
    grow(&e->all, &e->all_cap, e->all_len + n + 1);
    if (n > 0)
        memcpy(e->all + e->all_len, m, n);
    e->all_len += n;
    e->count++;
    free(out);
    e->len = 0;
}

/* Reads the server's frames after its 101: aborts on a malformed one. */
static void server_frames(const sq__buf_t *out, echoes_t *e, bool nocontext)
{
    const char *end = out->len >= 4 ? memmem(out->base, out->len, "\r\n\r\n", 4) : NULL;
    if (end == NULL)
        abort();
    const uint8_t *p = (const uint8_t *)end + 4, *stop = (const uint8_t *)out->base + out->len;
    while (stop - p >= 2 && !e->close) {
        uint8_t b0 = p[0], b1 = p[1];
        size_t h = 2;
        uint64_t len = b1 & 0x7F;
        if (b1 & 0x80)
            abort(); /* a server never masks (RFC 6455 §5.1) */
        if (len == 126) {
            if (stop - p < 4)
                break;
            len = (uint64_t)p[2] << 8 | p[3];
            h = 4;
        } else if (len == 127) {
            if (stop - p < 10)
                break;
            len = 0;
            for (int i = 0; i < 8; i++)
                len = len << 8 | p[2 + i];
            h = 10;
        }
        if ((uint64_t)(stop - p) < h + len)
            break; /* the rest was not written yet (the connection closed) */
        int op = b0 & 0x0F;
        bool fin = b0 & 0x80, rsv1 = b0 & 0x40;
        if (b0 & 0x30)
            abort(); /* RSV2, RSV3: nothing agreed sets them */
        const uint8_t *pl = p + h;
        if (op & 0x8) {
            if (!fin || rsv1 || len > 125)
                abort(); /* RFC 6455 §5.5, RFC 7692 §6.1 */
            if (op == 0x8)
                e->close = true;
        } else {
            if (op == 0 ? !e->in_msg || rsv1 : e->in_msg)
                abort(); /* §5.4; RSV1 on the first frame alone (RFC 7692 §6.1) */
            if (op != 0) {
                e->in_msg = true;
                e->deflated = rsv1;
            }
            grow(&e->msg, &e->cap, e->len + len + 4);
            memcpy(e->msg + e->len, pl, len);
            e->len += len;
            if (fin) {
                e->in_msg = false;
                echo_done(e);
                if (nocontext && e->deflated)
                    inflateReset(&e->z);
            }
        }
        p += h + len;
    }
}

/* ---- the client's side, built mode ---- */

typedef struct sent {
    uint8_t *bytes; /* every message sent, one after another */
    size_t len, cap;
    size_t count;
    bool corrupted;
} sent_t;

static void put_frame(sq__buf_t *b, uint8_t b0, const uint8_t *p, size_t len)
{
    static const uint8_t key[4] = {0x1F, 0x2E, 0x3D, 0x4C};
    uint8_t h[14];
    size_t n = 0;
    h[n++] = b0;
    if (len < 126) {
        h[n++] = (uint8_t)(0x80 | len);
    } else {
        h[n++] = 0x80 | 126;
        h[n++] = (uint8_t)(len >> 8);
        h[n++] = (uint8_t)len;
    }
    memcpy(h + n, key, 4);
    n += 4;
    if (sq__buf_append(b, h, n) != 0 || sq__buf_reserve(b, len) != 0)
        abort();
    for (size_t i = 0; i < len; i++)
        b->base[b->len + i] = (char)(p[i] ^ key[i & 3]);
    b->len += len;
}

/* Turns the input's messages into masked frames, compressed by `z` (as a client). */
static void build(const uint8_t *in, size_t size, z_stream *z, sent_t *s, sq__buf_t *wire)
{
    size_t off = 0;
    while (size - off >= 2) {
        uint8_t flags = in[off], len = in[off + 1];
        off += 2;
        if (len > size - off)
            len = (uint8_t)(size - off);
        const uint8_t *msg = in + off;
        off += len;
        bool binary = flags & 1, plain = flags & 2;
        int frags = 1 + ((flags >> 2) & 3);
        uint8_t payload[600];
        size_t pl = len;
        if (flags & 0x20)
            deflateReset(z);
        if (plain) {
            memcpy(payload, msg, len);
        } else {
            z->next_in = (Bytef *)msg;
            z->avail_in = len;
            z->next_out = payload;
            z->avail_out = sizeof(payload);
            deflate(z, Z_SYNC_FLUSH);
            pl = sizeof(payload) - z->avail_out;
            if (pl >= 4)
                pl -= 4; /* RFC 7692 §7.2.1 */
            else
                payload[0] = 0, pl = 1; /* nothing to flush: an empty stored block */
            if ((flags & 0x10) && pl > 0) {
                payload[len % pl] ^= 0x55;
                s->corrupted = true;
            }
        }
        for (size_t i = 0; i < len && !binary; i++)
            if (msg[i] >= 0x80) /* text that may not be UTF-8: the server may close (1007) */
                s->corrupted = true;
        size_t step = pl / (size_t)frags + 1;
        for (size_t at = 0, k = 0; at < pl || k == 0; at += step, k++) {
            size_t n = pl - at < step ? pl - at : step;
            bool fin = at + n >= pl;
            uint8_t b0 = (uint8_t)((fin ? 0x80 : 0) |
                                   (k == 0 ? ((binary ? 2 : 1) | (plain ? 0 : 0x40)) : 0));
            put_frame(wire, b0, payload + at, n);
            if (fin)
                break;
        }
        grow(&s->bytes, &s->cap, s->len + len + 1);
        memcpy(s->bytes + s->len, msg, len);
        s->len += len;
        s->count++;
    }
}

static void run(int turns)
{
    for (int i = 0; i < turns; i++)
        uv_run(&loop, UV_RUN_NOWAIT);
}

static const char handshake[] = "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                                "Connection: Upgrade\r\n"
                                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                                "Sec-WebSocket-Extensions: permessage-deflate; "
                                "client_max_window_bits\r\n"
                                "Sec-WebSocket-Version: 13\r\n\r\n";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    int variant = data[0] % NVARIANTS;
    bool built = data[0] & 4;
    size_t step = (size_t)data[1] + 1;
    data += 2;
    size -= 2;

    sent_t sent;
    memset(&sent, 0, sizeof(sent));
    sq__buf_t wire = {0};
    const uint8_t *in = data;
    size_t in_len = size;
    if (built) {
        z_stream z;
        memset(&z, 0, sizeof(z));
        if (deflateInit2(&z, 6, Z_DEFLATED, -9, 8, Z_DEFAULT_STRATEGY) != Z_OK)
            abort();
        build(data, size, &z, &sent, &wire);
        deflateEnd(&z);
        in = (const uint8_t *)wire.base;
        in_len = wire.len;
    }
    if (step < in_len / MAX_PIECES)
        step = in_len / MAX_PIECES;

    sq__memsink_t sink;
    memset(&sink, 0, sizeof(sink));
    if (sq__mem_accept(srv[variant], &sink) != 0)
        return 0;
    sq__mem_feed(&sink, handshake, sizeof(handshake) - 1);
    run(4);
    if (sink.closed || sink.out.len < 12 || memcmp(sink.out.base, "HTTP/1.1 101", 12) != 0 ||
        memmem(sink.out.base, sink.out.len, "permessage-deflate", 18) == NULL)
        abort(); /* the offer must be accepted */
    for (size_t off = 0; off < in_len && !sink.closed; off += step) {
        size_t n = in_len - off < step ? in_len - off : step;
        sq__mem_feed(&sink, in + off, n);
        uv_run(&loop, UV_RUN_NOWAIT);
    }
    run(8);

    echoes_t e;
    memset(&e, 0, sizeof(e));
    if (inflateInit2(&e.z, -15) != Z_OK)
        abort();
    server_frames(&sink.out, &e, no_ctx(variant));
    if (built && !sent.corrupted && !e.close && !sink.closed) {
        /* every message came back, the same (the server's limit is never reached: the
         * messages are at most 255 bytes) */
        if (e.count != sent.count || e.all_len != sent.len ||
            (sent.len > 0 && memcmp(e.all, sent.bytes, sent.len) != 0))
            abort();
    }
    inflateEnd(&e.z);
    free(e.msg);
    free(e.all);
    free(sent.bytes);
    sq__buf_free(&wire);

    if (!sink.closed)
        sq__mem_feed(&sink, NULL, 0);
    run(64);
    if (!sink.closed && sink.conn != NULL)
        sq__conn_on_read(sink.conn, NULL, UV_ECONNRESET);
    for (int i = 0; i < 64 && !sink.closed; i++)
        uv_run(&loop, UV_RUN_NOWAIT);
    if (!sink.closed)
        abort();
    sq__buf_free(&sink.out);
    return 0;
}
