/* wsecho — WebSocket echo load: N connections each keep DEPTH messages of SIZE bytes in
 * flight against an echo endpoint for SECONDS, and the echoed messages are counted.
 *
 *   build/bin/bench-wsecho [-c 50] [-s 32] [-d 1] [-t 10] ws://127.0.0.1:8000/ws/echo
 *
 * Prints one line: "messages=N seconds=S rate=R/s". A benchmark tool, not a test.
 */
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <squall.h>

typedef struct bench {
    uv_loop_t *loop;
    unsigned conns, depth, open, closed;
    size_t size;
    char *payload;
    uint64_t messages; /* after the warm-up */
    uint64_t total;    /* including it */
    uint64_t start_ms, warm_ms, duration_ms;
    bool stopping;
    uv_timer_t timer;
    sq_ws_t **ws;
    unsigned nws;
} bench_t;

static void on_open(sq_ws_t *ws, sq_req_t *req, void *data)
{
    bench_t *b = data;
    b->ws[b->nws++] = ws;
    b->open++;
    for (unsigned i = 0; i < b->depth; i++)
        sq_ws_send_binary(ws, b->payload, b->size);
}

static void on_message(sq_ws_t *ws, int binary, const char *msg, size_t len, void *data)
{
    bench_t *b = data;
    if (b->stopping)
        return;
    b->total++;
    if (uv_now(b->loop) >= b->warm_ms)
        b->messages++;
    sq_ws_send_binary(ws, b->payload, b->size);
}

static void on_close(sq_ws_t *ws, int code, const char *reason, void *data)
{
    bench_t *b = data;
    b->closed++;
    if (!b->stopping)
        fprintf(stderr, "wsecho: connection closed early: %d %s\n", code, reason);
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
    double secs = (double)(uv_now(b->loop) - b->warm_ms) / 1000.0;
    printf("messages=%llu total=%llu seconds=%.2f rate=%.0f conns=%u open=%u size=%zu "
           "depth=%u\n",
           (unsigned long long)b->messages, (unsigned long long)b->total, secs,
           (double)b->messages / secs, b->conns, b->open, b->size, b->depth);
    fflush(stdout);
    for (unsigned i = 0; i < b->nws; i++)
        if (b->ws[i] != NULL)
            sq_ws_close(b->ws[i], SQ_WS_NORMAL, "done");
}

int main(int argc, char **argv)
{
    bench_t b = {.conns = 50, .depth = 1, .size = 32, .duration_ms = 10000};
    int ch;
    while ((ch = getopt(argc, argv, "c:s:d:t:")) != -1) {
        switch (ch) {
        case 'c': b.conns = (unsigned)atoi(optarg); break;
        case 's': b.size = (size_t)atol(optarg); break;
        case 'd': b.depth = (unsigned)atoi(optarg); break;
        case 't': b.duration_ms = (uint64_t)(atof(optarg) * 1000); break;
        default:
            fprintf(stderr, "usage: bench-wsecho [-c conns] [-s size] [-d depth] [-t secs] URL\n");
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
    memset(b.payload, 'x', b.size);
    sq_ws_opts_t opts;
    sq_ws_opts_init(&opts);
    for (unsigned i = 0; i < b.conns; i++)
        if (sq_ws_connect(&loop, url, &handler, &b, &opts, NULL) != 0)
            return 2;
    uv_timer_init(&loop, &b.timer);
    b.timer.data = &b;
    /* one second of warm-up is not counted */
    b.warm_ms = uv_now(&loop) + 1000;
    uv_timer_start(&b.timer, on_done, 1000 + b.duration_ms, 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    free(b.payload);
    free(b.ws);
    return b.open == b.conns ? 0 : 1;
}
