/* ws-deflate — WebSocket echo load with permessage-deflate (RFC 7692; docs/deflate.md):
 * N connections each keep one message of SIZE bytes in flight against an echo endpoint
 * (hello --ws-deflate's /ws/echo) for SECONDS; or, with -H, N connections that each echo
 * one message and then stay idle, to measure what the server holds per idle WebSocket.
 *
 *   build/bin/bench-ws-deflate [-c 50] [-s 32] [-t 10] [-n] [-z] [-p] URL
 *   build/bin/bench-ws-deflate -H 1000 [-n] [-t 300] URL
 *
 *   -n  ask for no context takeover both ways (the server's zlib state goes after each
 *       message)
 *   -z  do not offer the extension (the uncompressed path, for comparison)
 *   -p  threshold 0: this side compresses every message (else messages under 128 bytes go
 *       uncompressed, as the server's do)
 *
 * The message is compressible text (a phrase repeated with a counter). Prints one line,
 * "messages=N seconds=S rate=R/s ...", or with -H "ready N" once all are idle, then holds
 * them for SECONDS. A benchmark tool, not a test.
 */
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <squall.h>

typedef struct bench {
    uv_loop_t *loop;
    unsigned conns, open, closed, idle;
    size_t size;
    char *payload;
    bool hold, stopping;
    uint64_t messages, total, warm_ms;
    uv_timer_t timer;
    sq_ws_t **ws;
    unsigned nws;
} bench_t;

static void on_open(sq_ws_t *ws, sq_req_t *req, void *data)
{
    bench_t *b = data;
    b->ws[b->nws++] = ws;
    b->open++;
    sq_ws_send_text(ws, b->payload, b->size);
}

static void on_message(sq_ws_t *ws, int binary, const char *msg, size_t len, void *data)
{
    bench_t *b = data;
    if (b->stopping)
        return;
    if (len != b->size) {
        fprintf(stderr, "ws-deflate: %zu bytes back, %zu sent\n", len, b->size);
        exit(1);
    }
    if (b->hold) {
        if (++b->idle == b->conns) {
            printf("ready %u\n", b->idle);
            fflush(stdout);
        }
        return;
    }
    b->total++;
    if (uv_now(b->loop) >= b->warm_ms)
        b->messages++;
    sq_ws_send_text(ws, b->payload, b->size);
}

static void on_close(sq_ws_t *ws, int code, const char *reason, void *data)
{
    bench_t *b = data;
    b->closed++;
    if (!b->stopping)
        fprintf(stderr, "ws-deflate: connection closed early: %d %s\n", code, reason);
    for (unsigned i = 0; i < b->nws; i++)
        if (b->ws[i] == ws)
            b->ws[i] = NULL;
    if (b->closed == b->conns)
        uv_close((uv_handle_t *)&b->timer, NULL);
}

static const sq_ws_handler_t handler = {.open = on_open, .message = on_message, .close = on_close};

static void on_done(uv_timer_t *t)
{
    bench_t *b = t->data;
    b->stopping = true;
    if (!b->hold) {
        double secs = (double)(uv_now(b->loop) - b->warm_ms) / 1000.0;
        printf("messages=%llu total=%llu seconds=%.2f rate=%.0f conns=%u open=%u size=%zu\n",
               (unsigned long long)b->messages, (unsigned long long)b->total, secs,
               (double)b->messages / secs, b->conns, b->open, b->size);
        fflush(stdout);
    }
    for (unsigned i = 0; i < b->nws; i++)
        if (b->ws[i] != NULL)
            sq_ws_close(b->ws[i], SQ_WS_NORMAL, "done");
}

int main(int argc, char **argv)
{
    bench_t b = {.conns = 50, .size = 32};
    uint64_t duration_ms = 10000;
    sq_ws_opts_t opts;
    sq_ws_opts_init(&opts);
    opts.deflate = 1;
    opts.ping_interval_ms = 0;
    opts.idle_timeout_ms = 0;
    int ch;
    while ((ch = getopt(argc, argv, "c:s:t:H:nzp")) != -1) {
        switch (ch) {
        case 'c': b.conns = (unsigned)atoi(optarg); break;
        case 's': b.size = (size_t)atol(optarg); break;
        case 't': duration_ms = (uint64_t)(atof(optarg) * 1000); break;
        case 'H':
            b.hold = true;
            b.conns = (unsigned)atoi(optarg);
            break;
        case 'n':
            opts.deflate_no_context_takeover = 1;
            opts.deflate_peer_no_context_takeover = 1;
            break;
        case 'z': opts.deflate = 0; break;
        case 'p': opts.deflate_threshold = 0; break;
        default:
            fprintf(stderr, "usage: bench-ws-deflate [-c conns] [-s size] [-t secs] [-H idle] "
                            "[-n] [-z] [-p] URL\n");
            return 2;
        }
    }
    const char *url = optind < argc ? argv[optind] : "ws://127.0.0.1:8000/ws/echo";
    uv_loop_t loop;
    uv_loop_init(&loop);
    b.loop = &loop;
    b.payload = malloc(b.size + 1);
    b.ws = calloc(b.conns, sizeof(*b.ws));
    if (b.payload == NULL || b.ws == NULL)
        return 1;
    static const char phrase[] = "{\"user\":\"squall\",\"room\":\"lobby\",\"text\":\"hello\"} ";
    for (size_t i = 0; i < b.size; i++)
        b.payload[i] = i % 97 == 96 ? (char)('a' + (i / 97) % 26) : phrase[i % (sizeof(phrase) - 1)];
    /* connections opened a batch at a time: the server's backlog stays small */
    for (unsigned i = 0; i < b.conns; i++) {
        if (sq_ws_connect(&loop, url, &handler, &b, &opts, NULL) != 0)
            return 2;
        if (i % 100 == 99)
            while (b.open + b.closed < i + 1 && uv_run(&loop, UV_RUN_ONCE))
                ;
    }
    uv_timer_init(&loop, &b.timer);
    b.timer.data = &b;
    b.warm_ms = uv_now(&loop) + 1000; /* one second of warm-up is not counted */
    uv_timer_start(&b.timer, on_done, (b.hold ? 0 : 1000) + duration_ms, 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    free(b.payload);
    free(b.ws);
    return b.open == b.conns ? 0 : 1;
}
