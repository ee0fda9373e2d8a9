/* WebSocket frames in the server role (RFC 6455 §5). A connection of the memory transport
 * (the real connection and WebSocket code, no socket) is upgraded with a fixed handshake,
 * then the input's frames are fed in pieces whose size the input chooses. The route
 * echoes text and binary messages, and some messages make it close, ping, or answer in
 * fragments instead.
 *
 * Input: byte 0 picks the route's options (below), byte 1 (and, in list mode, those after
 * it) where the input is cut (cuts.h; pieces larger for a long input: at most 512); the
 * rest is what the client sends after the handshake.
 *
 * After each input, besides what the sanitizers catch (and the leak check at exit):
 * - every frame the server wrote is well formed: FIN on control frames, no RSV bits, no
 *   mask, a known opcode, a control payload of at most 125 bytes, a length in its
 *   shortest form (RFC 6455 §5.2, §5.5);
 * - a client frame that breaks RFC 6455 §5 (checked by the harnesses' own reader,
 *   ws_frames.h: an impossible length once its header is in, any other fault once the
 *   frame is whole), a message past max_message_bytes, or a client close frame, is
 *   answered with a close frame or the end of the connection;
 * - otherwise, when the input ended on a frame boundary and nobody closed, the
 *   connection still works: a ping sent after the input comes back as a pong. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <squall.h>

#include "cuts.h"
#include "server/server_int.h"
#include "ws_frames.h"

#define NVARIANTS 4
/* max_message_bytes: 64 KiB for variant 0, 1 KiB for the others (1009 within reach) */
#define MAX_MSG(v) ((v) == 0 ? 64 * 1024 : 1024)
/* an input is fed in at most this many pieces, however small the step (speed) */
#define MAX_PIECES 512

static uv_loop_t loop;
static sq_server_t *srv[NVARIANTS];

/* ---- the route ---- */

static void ws_message(sq_ws_t *ws, int binary, const char *msg, size_t len, void *data)
{
    unsigned char k = len > 0 ? (unsigned char)msg[0] : 0;
    switch (k) {
    case 'C': { /* close, code and reason from the message (a string: msg has no NUL) */
        char reason[200];
        size_t rl = len > 2 ? len - 2 : 0;
        if (rl >= sizeof(reason))
            rl = sizeof(reason) - 1;
        memcpy(reason, msg + (len > 2 ? 2 : 0), rl);
        reason[rl] = '\0';
        sq_ws_close(ws, len > 1 ? 1000 + (unsigned char)msg[1] % 15 : 1000,
                    len > 2 ? reason : NULL);
        break;
    }
    case 'P': /* ping back with (up to 125 bytes of) the message */
        sq_ws_ping(ws, msg, len > 125 ? 125 : len);
        break;
    case 'F': { /* the echo in fragments of 3 bytes */
        size_t off = 0;
        do {
            size_t n = len - off < 3 ? len - off : 3;
            if (sq_ws_send_fragment(ws, binary, msg + off, n, off + n == len) != 0)
                break;
            off += n;
        } while (off < len);
        break;
    }
    default:
        sq_ws_send(ws, binary, msg, len);
    }
}

static void ws_open(sq_ws_t *ws, sq_req_t *req, void *data)
{
    if (data != NULL) /* variant 3 greets */
        sq_ws_send_text(ws, "hi", 2);
}

static const sq_ws_handler_t echo = {.open = ws_open, .message = ws_message};

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    sq_log_set_level(SQ_LOG_OFF);
    uv_loop_init(&loop);
    static const char *const protos[] = {"chat", "v2", NULL};
    for (int v = 0; v < NVARIANTS; v++) {
        sq_app_t *app;
        sq_app_create(&app);
        sq_ws_opts_t o;
        sq_ws_opts_init(&o);
        o.max_message_bytes = MAX_MSG(v);
        /* 1: a tiny send queue that closes on overflow; 2: drops; 3: 1013, and a
         * subprotocol */
        if (v > 0)
            o.max_queued_bytes = 512;
        o.overflow = v == 2   ? SQ_WS_OVERFLOW_DROP
                     : v == 3 ? SQ_WS_OVERFLOW_TRY_AGAIN
                              : SQ_WS_OVERFLOW_CLOSE;
        if (v == 3)
            o.subprotocols = protos;
        sq_app_websocket(app, "/ws", &echo, &o, v == 3 ? (void *)&loop : NULL);
        sq_server_opts_t so;
        sq_server_opts_init(&so);
        sq_server_create(&srv[v], &loop, app, &so);
    }
    return 0;
}

/* ---- checks ---- */

/* The server's frames after its 101 answer: well formed, and what they say. */
static void server_frames(const sq__buf_t *out, frames_t *f)
{
    memset(f, 0, sizeof(*f));
    const char *end = out->len >= 4 ? memmem(out->base, out->len, "\r\n\r\n", 4) : NULL;
    if (end == NULL)
        abort(); /* the handshake was answered whole before any frame */
    size_t start = (size_t)(end + 4 - out->base);
    frames_read(f, (const uint8_t *)out->base + start, out->len - start);
    if (f->violation || f->nonminimal)
        abort(); /* a malformed frame from the server */
}

static void run(int turns)
{
    for (int i = 0; i < turns; i++)
        uv_run(&loop, UV_RUN_NOWAIT);
}

static const char handshake[] = "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                                "Connection: Upgrade\r\n"
                                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                                "Sec-WebSocket-Protocol: v2\r\n"
                                "Sec-WebSocket-Version: 13\r\n\r\n";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    int variant = data[0] % NVARIANTS;
    cuts_t cuts;
    size_t skip = cuts_init(&cuts, data + 1, size - 1);
    if (skip == 0)
        return 0;
    data += 1 + skip;
    size -= 1 + skip;
    cuts.floor = size / MAX_PIECES;
    sq__memsink_t sink;
    memset(&sink, 0, sizeof(sink));
    if (sq__mem_accept(srv[variant], &sink) != 0)
        return 0;
    sq__mem_feed(&sink, handshake, sizeof(handshake) - 1);
    run(4);
    if (sink.closed || sink.out.len < 12 || memcmp(sink.out.base, "HTTP/1.1 101", 12) != 0)
        abort(); /* the fixed handshake must be accepted */
    for (size_t off = 0, n; off < size && !sink.closed; off += n) {
        n = cuts_next(&cuts, size - off);
        sq__mem_feed(&sink, data + off, n);
        uv_run(&loop, UV_RUN_NOWAIT);
    }
    run(8);

    frames_t in = {.masked_ok = true, .max_msg = MAX_MSG(variant)};
    frames_read(&in, data, size);
    frames_t out;
    server_frames(&sink.out, &out);
    if (!sink.closed) {
        if ((in.violation || in.too_big || in.close) && !out.close)
            abort(); /* a broken frame or a close went unanswered */
        if (!out.close && in.boundary == size) {
            /* nobody closed: the connection still answers a ping */
            static const uint8_t ping[] = {0x89, 0x85, 0, 0, 0, 0, 'a', 'l', 'i', 'v', 'e'};
            size_t before = out.pongs_alive;
            sq__mem_feed(&sink, ping, sizeof(ping));
            run(8);
            server_frames(&sink.out, &out);
            if (!sink.closed && out.pongs_alive == before && !out.close)
                abort(); /* a connection that no longer answers */
        }
    }

    if (!sink.closed)
        sq__mem_feed(&sink, NULL, 0); /* the client's half-close */
    run(64);
    if (!sink.closed && sink.conn != NULL)
        sq__conn_on_read(sink.conn, NULL, UV_ECONNRESET);
    for (int i = 0; i < 64 && !sink.closed; i++)
        uv_run(&loop, UV_RUN_NOWAIT);
    if (!sink.closed)
        abort(); /* a connection that outlives a reset */
    sq__buf_free(&sink.out);
    return 0;
}
