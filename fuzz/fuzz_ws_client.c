/* WebSocket frames in the client role (lib/ws/ws_client.c and the core under it): the
 * server's unmasked frames, and its handshake answer.
 *
 * How: sq_ws_connect to a scripted server on 127.0.0.1 (loopback.h), one connection per
 * input, client and server on one private loop. The client has no internal entry point
 * that skips the socket (its reader is fed from its uv_tcp_t), so a real connection is
 * the one way to reach it; loopback costs a connect and a handshake per input, a few
 * hundred microseconds, and keeps the harness on public calls. The server reads the
 * request head, takes its Sec-WebSocket-Key, and answers; then writes the input in
 * pieces (one per turn of the loop, so the client reads them apart) and ends with a FIN
 * or a close (a reset when the client's bytes are unread).
 *
 * Input: byte 0 —
 *   bits 0-1  the answer: 0, 1: a valid 101 written here, then the input as frames;
 *             2: the 101's status line, Upgrade, Connection and the right Accept written
 *             here, then the input (more header lines, the blank line, frames);
 *             3: the input is the whole answer (it cannot know the key: refusals)
 *   bit 2     end with a close instead of a FIN
 *   bit 3     the client offers subprotocols "chat" and "v2" (mode 0 answers "chat")
 *   bit 4     max_message_bytes 1 KiB, else 64 KiB
 *   bit 5     the client sends a text when it opens
 *   bit 6     the client offers permessage-deflate (RFC 7692): with bit 7 clear as
 *             "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12"
 *             (the defaults), with bit 7 set as "permessage-deflate;
 *             client_no_context_takeover; server_no_context_takeover;
 *             client_max_window_bits" (windows of 15, no context takeover)
 * byte 1 — the piece size (1..256, larger for a long input: at most 512 pieces).
 *
 * Checks: .close runs once, after .open if .open ran, and nothing runs after it;
 * .message only between them, never past max_message_bytes, text always UTF-8; in modes
 * 0 and 1 the messages are, in order, those the harnesses' own reader (ws_frames.h)
 * finds in the input — no message it does not see, none different — and when the input
 * is valid throughout and ends with a FIN, all of them (up to a text that is not UTF-8,
 * which fails the connection); a broken frame is never followed by a message; in mode
 * 2, when the header lines of the input are plain ("Name: value", CRLF, printable) and
 * hold Sec-WebSocket-Extensions, the client opens only if it offered permessage-deflate
 * and they are one answer to its offer (RFC 7692 §7.1: a single permessage-deflate
 * element, known parameters once each, windows of 8-15 bits with a value,
 * server_max_window_bits no more than the offer's; client_max_window_bits of 8 is
 * refused too: zlib cannot keep to 256 bytes), and when such a valid answer is all the
 * input adds to the head and the server ends with a FIN, it opens; the
 * client never waits for a deadline (its handshake and total timeouts are set to 5 s,
 * and hitting one is a failure: the server always ends the connection). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <squall.h>

#include "loopback.h"
#include "pmd.h"
#include "ws_frames.h"

#define MAX_PIECES 512

static peer_t peer;
static char url[64];
static bool verbose; /* FUZZ_VERBOSE set: how each connection ended, to stderr */

/* ---- UTF-8 (RFC 3629 §4) ---- */

static bool utf8_ok(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        size_t need;
        uint8_t lo = 0x80, hi = 0xBF;
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xC2 && c <= 0xDF) {
            need = 1;
        } else if (c >= 0xE0 && c <= 0xEF) {
            need = 2;
            if (c == 0xE0)
                lo = 0xA0;
            if (c == 0xED)
                hi = 0x9F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            need = 3;
            if (c == 0xF0)
                lo = 0x90;
            if (c == 0xF4)
                hi = 0x8F;
        } else {
            return false;
        }
        if (i + need >= n)
            return false;
        if (s[i + 1] < lo || s[i + 1] > hi)
            return false;
        for (size_t k = 2; k <= need; k++)
            if (s[i + k] < 0x80 || s[i + k] > 0xBF)
                return false;
        i += need + 1;
    }
    return true;
}

/* ---- the messages the input holds, by our reader ---- */

typedef struct msg {
    int opcode;
    uint8_t *data;
    size_t len;
} msg_t;

static msg_t *want;
static size_t nwant;
static size_t nwant_ok; /* the first nwant_ok: before any text that is not UTF-8 */
static bool want_bad_text;

static void on_ref_message(frames_t *f, int opcode, const uint8_t *m, size_t len)
{
    msg_t *w = realloc(want, (nwant + 1) * sizeof(*want));
    if (w == NULL)
        abort();
    want = w;
    want[nwant].opcode = opcode;
    want[nwant].len = len;
    want[nwant].data = malloc(len + 1);
    if (want[nwant].data == NULL)
        abort();
    if (len > 0)
        memcpy(want[nwant].data, m, len);
    nwant++;
    if (!want_bad_text) {
        if (opcode == 1 && !utf8_ok(m, len))
            want_bad_text = true;
        else
            nwant_ok = nwant;
    }
}

static void want_free(void)
{
    for (size_t i = 0; i < nwant; i++)
        free(want[i].data);
    free(want);
    want = NULL;
    nwant = nwant_ok = 0;
    want_bad_text = false;
}

/* ---- the client ---- */

typedef struct run {
    bool check_frames; /* modes 0, 1 */
    bool greet;
    size_t max_msg;
    bool opened;
    unsigned closes;
    int code;
    int error;
    size_t got;     /* messages delivered */
    bool we_closed; /* a message asked the client to close */
} run_t;

static run_t run;

static void on_open(sq_ws_t *ws, sq_req_t *req, void *data)
{
    if (run.opened || run.closes > 0 || req != NULL)
        abort();
    run.opened = true;
    if (run.greet)
        sq_ws_send_text(ws, "hello", 5);
}

static void on_message(sq_ws_t *ws, int binary, const char *m, size_t len, void *data)
{
    if (!run.opened || run.closes > 0 || len > run.max_msg)
        abort();
    if (!binary && !utf8_ok((const uint8_t *)m, len))
        abort(); /* text that is not UTF-8 handed to the application */
    if (run.check_frames) {
        if (run.got >= nwant)
            abort(); /* a message our reader does not see */
        const msg_t *w = &want[run.got];
        if (w->opcode != (binary ? 2 : 1) || w->len != len ||
            (len > 0 && memcmp(w->data, m, len) != 0))
            abort(); /* a message other than the one sent */
    }
    run.got++;
    if (len > 0 && m[0] == 'C') {
        run.we_closed = true;
        sq_ws_close(ws, 1000, "bye");
    } else {
        sq_ws_send(ws, binary, m, len);
    }
}

static void on_close(sq_ws_t *ws, int code, const char *reason, void *data)
{
    if (run.closes++ > 0 || reason == NULL)
        abort();
    run.code = code;
    run.error = sq_ws_error(ws);
    if (verbose)
        fprintf(stderr, "close %d %s (error %d, %zu messages)\n", code, reason, run.error, run.got);
}

static const sq_ws_handler_t handler = {.open = on_open, .message = on_message, .close = on_close};

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    sq_log_set_level(SQ_LOG_OFF);
    verbose = getenv("FUZZ_VERBOSE") != NULL;
    peer_init(&peer);
    snprintf(url, sizeof(url), "ws://127.0.0.1:%d/chat?x=1", peer.port);
    return 0;
}

/* ---- permessage-deflate's answer (RFC 7692 §7.1) ---- */

/* What mode 2's head says of extensions. */
enum { EXT_NONE, EXT_VALID, EXT_INVALID, EXT_UNKNOWN };

/* True when [b, e) (an element, no commas outside quotes) is one permessage-deflate
 * answer to the offer: max_server_bits is the offer's server_max_window_bits (15: none
 * offered). A window parameter needs a value; client_max_window_bits=8 is one zlib
 * cannot use. */
static bool pmd_answer_ok(const char *b, const char *e, int max_server_bits)
{
    pmd_t a;
    return pmd_read(b, e, &a) && a.ok && a.smwb >= 0 && a.cmwb >= 0 && a.smwb <= max_server_bits &&
           a.cmwb != 8;
}

/* Mode 2: the header lines the input adds to the 101 (up to its blank line), read
 * plainly; EXT_UNKNOWN when they are not plain (bare CR or LF, folding, controls, a
 * backslash, a name with spaces) or no blank line ends them. *only: nothing but
 * Sec-WebSocket-Extensions lines. */
static int ext_answer(const uint8_t *data, size_t size, bool deflate, int max_server_bits,
                      bool *only)
{
    char joined[2048];
    size_t jl = 0;
    bool any = false, nonempty = false;
    *only = true;
    size_t i = 0;
    for (;;) {
        const uint8_t *eol = i < size ? memmem(data + i, size - i, "\r\n", 2) : NULL;
        if (eol == NULL)
            return EXT_UNKNOWN;
        size_t ll = (size_t)(eol - (data + i));
        if (ll == 0)
            break; /* the blank line */
        const char *line = (const char *)data + i;
        for (size_t k = 0; k < ll; k++)
            if ((line[k] < 0x20 && line[k] != '\t') || line[k] == 0x7f || line[k] == '\\' ||
                (line[k] & 0x80))
                return EXT_UNKNOWN;
        const char *colon = memchr(line, ':', ll);
        if (line[0] == ' ' || line[0] == '\t' || colon == NULL || colon == line)
            return EXT_UNKNOWN;
        for (const char *c = line; c < colon; c++)
            if (*c == ' ' || *c == '\t')
                return EXT_UNKNOWN;
        if (colon - line == 24 && strncasecmp(line, "Sec-WebSocket-Extensions", 24) == 0) {
            const char *v = colon + 1, *ve = line + ll;
            while (v < ve && (*v == ' ' || *v == '\t'))
                v++;
            while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
                ve--;
            if (jl + (size_t)(ve - v) + 2 > sizeof(joined))
                return EXT_UNKNOWN;
            if (any)
                joined[jl++] = ',';
            memcpy(joined + jl, v, (size_t)(ve - v));
            jl += (size_t)(ve - v);
            any = true;
            nonempty |= ve > v;
        } else {
            *only = false;
        }
        i += ll + 2;
    }
    if (!any)
        return EXT_NONE;
    if (!deflate)
        return nonempty ? EXT_INVALID : EXT_UNKNOWN;
    joined[jl] = '\0';
    /* the elements: commas outside quotes end them, empty ones are nothing */
    int n = 0;
    bool ok = true;
    const char *p = joined;
    for (;;) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        if (*p == '\0')
            break;
        const char *b = p;
        bool q = false;
        for (; *p != '\0' && (q || *p != ','); p++)
            if (*p == '"')
                q = !q;
        const char *e = p;
        while (e > b && (e[-1] == ' ' || e[-1] == '\t'))
            e--;
        n++;
        ok &= pmd_answer_ok(b, e, max_server_bits);
    }
    return n == 1 && ok ? EXT_VALID : EXT_INVALID;
}

/* RFC 6455 §4.2.2: the Accept for the key in the request head the peer read. */
static void accept_for(const char *head, char out[29])
{
    const char *k = strstr(head, "\r\nSec-WebSocket-Key: ");
    if (k == NULL)
        abort(); /* squall's request always has one */
    k += 21;
    const char *e = strstr(k, "\r\n");
    if (e == NULL || e - k != 24)
        abort();
    char in[24 + 36];
    memcpy(in, k, 24);
    memcpy(in + 24, "258EAFA5-E914-47DA-95CA-C5AB0DC85B11", 36);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (EVP_Digest(in, sizeof(in), md, &mdlen, EVP_sha1(), NULL) != 1 || mdlen != 20)
        abort();
    EVP_EncodeBlock((unsigned char *)out, md, 20);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2 || size > 65536)
        return 0;
    unsigned mode = data[0] & 3;
    bool reset = data[0] & 4, offer = data[0] & 8;
    bool deflate = data[0] & 64, deflate_b = data[0] & 128;
    memset(&run, 0, sizeof(run));
    run.max_msg = (data[0] & 16) ? 1024 : 64 * 1024;
    run.greet = data[0] & 32;
    run.check_frames = mode <= 1;
    size_t step = (size_t)data[1] + 1;
    data += 2;
    size -= 2;
    if (step < size / MAX_PIECES)
        step = size / MAX_PIECES;

    frames_t ref = {.masked_ok = false, .max_msg = run.max_msg, .message = on_ref_message};
    if (run.check_frames)
        frames_read(&ref, data, size);

    sq_ws_opts_t o;
    sq_ws_opts_init(&o);
    o.max_message_bytes = run.max_msg;
    o.handshake_timeout_ms = 5000;
    o.close_timeout_ms = 5000;
    static const char *const protos[] = {"chat", "v2", NULL};
    if (offer)
        o.subprotocols = protos;
    int max_server_bits = 15;
    if (deflate) {
        o.deflate = 1;
        if (deflate_b) {
            o.deflate_no_context_takeover = 1;
            o.deflate_peer_no_context_takeover = 1;
            o.deflate_window_bits = 15;
            o.deflate_peer_window_bits = 15;
        } else {
            max_server_bits = o.deflate_peer_window_bits;
        }
    }
    bool ext_only = false;
    int ext = mode == 2 ? ext_answer(data, size, deflate, max_server_bits, &ext_only) : EXT_NONE;
    peer_start(&peer, data, size, step, reset);
    sq_ws_t *ws = NULL;
    if (sq_ws_connect(&peer.loop, url, &handler, NULL, &o, &ws) != 0)
        abort();
    bool answered = false;
    while (run.closes == 0) {
        if (!answered && peer.head_done) {
            answered = true;
            if (mode <= 2) {
                char accept[29], head[256];
                accept_for(peer.head, accept);
                int n =
                    snprintf(head, sizeof(head),
                             "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                             "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n%s%s",
                             accept, mode <= 1 && offer ? "Sec-WebSocket-Protocol: chat\r\n" : "",
                             mode <= 1 ? "\r\n" : "");
                peer_prepend(&peer, head, (size_t)n);
                /* the answer's head goes in one write, the input in pieces */
                uv_buf_t b = uv_buf_init(head, (unsigned)n);
                int w = peer.open ? uv_try_write((uv_stream_t *)&peer.conn, &b, 1) : 0;
                peer.out_off = w > 0 ? (size_t)w : 0;
            }
        }
        bool more = peer_pump(&peer);
        uv_run(&peer.loop, more ? UV_RUN_NOWAIT : UV_RUN_ONCE);
    }
    peer_finish(&peer);
    uv_run(&peer.loop, UV_RUN_DEFAULT); /* the client's handles close */

    if (run.error == UV_ETIMEDOUT || (run.code == SQ_WS_ABNORMAL && run.error == 0 && !run.opened))
        abort(); /* waited for a deadline, though the server always ends the connection */
    if (run.check_frames) {
        if (run.got > ref.messages)
            abort();
        bool clean = !ref.violation && !ref.too_big && !ref.nonminimal && !reset && !run.we_closed;
        if (clean && run.opened && run.got < nwant_ok)
            abort(); /* messages of a valid stream lost */
    }
    if (ext == EXT_INVALID && run.opened) {
        fprintf(stderr, "the client took a wrong extension answer\n");
        abort();
    }
    if (ext == EXT_VALID && ext_only && !reset && !run.opened) {
        fprintf(stderr, "the client refused a valid extension answer\n");
        abort();
    }
    frames_free(&ref);
    want_free();
    return 0;
}
