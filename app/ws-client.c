/* ws-client — the lecture's aiohttp WebSocket client, in C with squall.
 *
 *   build/bin/ws-client [--count N] [URL]      (URL defaults to ws://127.0.0.1:8000/ws)
 *
 * Connects, sends "hi", then answers every text message with the message plus "/answer"
 * until the server sends "close cmd" or N messages have arrived, then closes cleanly.
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <squall.h>

typedef struct session {
    unsigned received;
    unsigned count;
    int exit_code;
} session_t;

static void on_open(sq_ws_t *ws, sq_req_t *req, void *data)
{
    printf("connected\n");
    sq_ws_send_text(ws, "hi", 2);
}

static void on_message(sq_ws_t *ws, int binary, const char *msg, size_t len, void *data)
{
    session_t *s = data;
    s->received++;
    if (binary) {
        printf("binary message of %zu bytes\n", len);
    } else {
        printf("%.*s\n", (int)len, msg);
    }
    if ((!binary && len == 9 && memcmp(msg, "close cmd", 9) == 0) || s->received >= s->count) {
        sq_ws_close(ws, SQ_WS_NORMAL, "bye");
        return;
    }
    if (!binary) {
        char *answer = malloc(len + 8);
        if (answer == NULL)
            return;
        memcpy(answer, msg, len);
        memcpy(answer + len, "/answer", 7);
        sq_ws_send_text(ws, answer, len + 7);
        free(answer);
    }
}

static void on_close(sq_ws_t *ws, int code, const char *reason, void *data)
{
    session_t *s = data;
    printf("closed: %d %s\n", code, reason ? reason : "");
    s->exit_code = code == SQ_WS_NORMAL ? 0 : 1;
}

static const sq_ws_handler_t client = {
    .open = on_open,
    .message = on_message,
    .close = on_close,
};

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN); /* a server that leaves mid-write must not kill us */
    session_t s = {.count = 10, .exit_code = 1};
    static const struct option longopts[] = {
        {"count", required_argument, NULL, 'c'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int ch;
    while ((ch = getopt_long(argc, argv, "c:h", longopts, NULL)) != -1) {
        if (ch == 'c') {
            s.count = (unsigned)strtoul(optarg, NULL, 10);
        } else {
            fprintf(stderr, "usage: ws-client [--count N] [ws://host:port/path]\n");
            return 2;
        }
    }
    const char *url = optind < argc ? argv[optind] : "ws://127.0.0.1:8000/ws";
    setvbuf(stdout, NULL, _IOLBF, 0);
    uv_loop_t loop;
    uv_loop_init(&loop);
    int rc = sq_ws_connect(&loop, url, &client, &s, NULL, NULL);
    if (rc != 0) {
        fprintf(stderr, "ws-client: %s: %s\n", url, sq_strerror(rc));
        return 2;
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    return s.exit_code;
}
