/* The HTTP client's response reader (lib/client/conn.c, response.c: llhttp in response
 * mode under sq_fetch): the input is what a server answers.
 *
 * How: sq_fetch to a scripted server on 127.0.0.1 (loopback.h), a new client per input,
 * both on one private loop. The reader has no entry point that skips the socket (it is
 * fed from the connection's uv_tcp_t), so a real connection is the one way to reach it;
 * it costs a connect per input and keeps the harness on public calls. The server reads
 * the request head, writes the input in pieces (one per turn of the loop, so the client
 * reads them apart), then ends the connection with a FIN or a close. A second
 * connection (a redirect followed, a retry) is accepted and closed at once.
 *
 * Input: byte 0 —
 *   bit 0     HEAD instead of GET
 *   bit 1     the body streamed to on_body (which stops the fetch at a chunk that starts
 *             with '!'), else buffered
 *   bit 2     end with a close instead of a FIN
 *   bit 3     small limits: max_header_bytes 512, max_headers 8, max_body_bytes 1 KiB
 *   bit 4     redirects followed (max_redirects 2)
 * byte 1 — the piece size (1..256, larger for a long input: at most 512 pieces).
 *
 * Checks: the callback runs exactly once; never with UV_ETIMEDOUT (the server always
 * ends the connection, so waiting for a deadline is a hang); a response has a status of
 * 200-999 (interim ones are skipped, 101 refused), no more headers than max_headers, and
 * a body — buffered or streamed — no longer than the bytes the server sent, within
 * max_body_bytes, empty for HEAD, 204 and 304, and, when the head had one plain
 * Content-Length and no Transfer-Encoding, exactly that long. */
#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <squall.h>

#include "loopback.h"

#define MAX_PIECES 512

static peer_t peer;
static char url[64];

typedef struct run {
    bool head, stream, small;
    unsigned calls;
    int status;
    size_t streamed; /* bytes given to on_body */
    size_t sent;     /* bytes the server sends */
    bool stopped;    /* on_body asked to stop */
    bool closed;     /* sq_client_close's callback ran */
} run_t;

static run_t run;

static int on_body(sq_fetch_t *f, const char *chunk, size_t len, void *data)
{
    if (run.calls > 0 || sq_fetch_head(f) == NULL || len == 0)
        abort();
    run.streamed += len;
    if (chunk[0] == '!') {
        run.stopped = true;
        return 1;
    }
    return 0;
}

/* The one Content-Length of the head, when it is plain digits and there is no
 * Transfer-Encoding; else -1. */
static long long plain_length(const sq_response_t *res)
{
    long long cl = -1;
    size_t n = sq_response_header_count(res);
    for (size_t i = 0; i < n; i++) {
        sq_header_t h;
        if (sq_response_header_at(res, i, &h) != 0)
            abort();
        if (strcasecmp(h.name, "Transfer-Encoding") == 0)
            return -1;
        if (strcasecmp(h.name, "Content-Length") == 0) {
            if (cl >= 0 || h.value[0] == '\0' || strlen(h.value) > 15)
                return -1;
            for (const char *p = h.value; *p; p++)
                if (!isdigit((unsigned char)*p))
                    return -1;
            cl = atoll(h.value);
        }
    }
    return cl;
}

static void on_done(sq_fetch_t *f, int status, const sq_response_t *res, void *data)
{
    if (run.calls++ > 0)
        abort();
    run.status = status;
    if (status == UV_ETIMEDOUT)
        abort(); /* a hang: the server had ended the connection */
    if (status < 0) {
        if (res != NULL)
            abort();
        return;
    }
    if (res == NULL || run.stopped)
        abort();
    int code = sq_response_status(res);
    if (code < 200 || code > 999)
        abort();
    size_t nh = sq_response_header_count(res);
    if (run.small && nh > 8)
        abort();
    for (size_t i = 0; i < nh; i++) {
        sq_header_t h;
        if (sq_response_header_at(res, i, &h) != 0 || h.name == NULL || h.value == NULL)
            abort();
    }
    size_t len;
    const char *body = sq_response_body(res, &len);
    if (body == NULL || body[len] != '\0')
        abort();
    size_t total = len + run.streamed;
    if (total > run.sent || (run.stream && len != 0))
        abort(); /* a body longer than what was sent */
    if (!run.stream && run.small && len > 1024)
        abort();
    if ((run.head || code == 204 || code == 304) && total != 0)
        abort();
    long long cl = plain_length(res);
    if (cl >= 0 && !run.head && code != 204 && code != 304 && (size_t)cl != total)
        abort(); /* a Content-Length body of another length */
}

static void on_client_closed(sq_client_t *c, void *data)
{
    run.closed = true;
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    sq_log_set_level(SQ_LOG_OFF);
    peer_init(&peer);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/r?x=1", peer.port);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2 || size > 65536)
        return 0;
    memset(&run, 0, sizeof(run));
    run.head = data[0] & 1;
    run.stream = data[0] & 2;
    bool reset = data[0] & 4;
    run.small = data[0] & 8;
    bool redirects = data[0] & 16;
    size_t step = (size_t)data[1] + 1;
    data += 2;
    size -= 2;
    if (step < size / MAX_PIECES)
        step = size / MAX_PIECES;
    run.sent = size;

    sq_client_opts_t o;
    sq_client_opts_init(&o);
    o.timeout_ms = 5000;
    o.connect_timeout_ms = 5000;
    if (run.small) {
        o.max_header_bytes = 512;
        o.max_headers = 8;
        o.max_body_bytes = 1024;
    }
    if (redirects)
        o.max_redirects = 2;
    sq_client_t *client;
    if (sq_client_new(&client, &peer.loop, &o) != 0)
        abort();
    sq_fetch_req_t req;
    sq_fetch_req_init(&req);
    req.url = url;
    req.method = run.head ? "HEAD" : "GET";
    if (run.stream)
        req.on_body = on_body;
    peer_start(&peer, data, size, step, reset);
    if (sq_fetch(client, &req, on_done, NULL, NULL) != 0)
        abort();
    while (run.calls == 0) {
        bool more = peer_pump(&peer);
        uv_run(&peer.loop, more ? UV_RUN_NOWAIT : UV_RUN_ONCE);
    }
    sq_client_close(client, on_client_closed, NULL);
    peer_finish(&peer);
    uv_run(&peer.loop, UV_RUN_DEFAULT);
    if (!run.closed || run.calls != 1)
        abort();
    return 0;
}
