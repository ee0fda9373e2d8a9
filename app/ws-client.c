/* ws-client — the aiohttp WebSocket client from the lecture on asynchronous Python
 * (asyncio, aiohttp, Tornado, FastAPI), written in C with squall. The lecture's code:
 *
 *     async with session.ws_connect('http://127.0.0.1:8080/ws') as ws:
 *         await ws.send_str('hi')
 *         async for msg in ws:
 *             if msg.type == aiohttp.WSMsgType.TEXT:
 *                 if msg.data == 'close cmd':
 *                     await ws.close()
 *                     break
 *                 else:
 *                     print(msg.data)
 *                     await ws.send_str(msg.data)
 *             elif msg.type == aiohttp.WSMsgType.ERROR:
 *                 break
 *
 *   build/bin/ws-client [--count N] [--timeout MS] [URL]
 *
 * --deflate offers permessage-deflate (RFC 7692, docs/deflate.md), as aiohttp's
 * compress=15 does.
 *
 * URL defaults to ws://127.0.0.1:8000/ws; an http:// URL is taken as ws://, as aiohttp's
 * ws_connect does. It sends "hi", then prints each text message on its own line (stdout:
 * the messages exactly, nothing added) and sends it back unchanged, until a message is
 * "close cmd" (not printed) or N text messages have come (default 10; 0: no limit). Then
 * it closes with 1000 and exits 0; what arrives after that is neither printed nor
 * answered. Binary messages are ignored, as in the Python code. The server closing with
 * 1000 (or with no code) also ends it with 0.
 *
 * Any failure prints one line on stderr and exits 1: a refused connection, DNS, a refused
 * or invalid handshake, no handshake within --timeout MS (default 10000), a protocol
 * error, a close with another code, or a connection lost without a close frame. Bad
 * arguments exit 2.
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <squall.h>

typedef struct session {
    const char *url;     /* as given, for messages */
    unsigned long count; /* text messages to take before closing; 0: no limit */
    unsigned long received;
    int opened;  /* .open ran */
    int closing; /* we decided to close: nothing more is printed or answered */
    int failed;  /* a failure was already reported */
    int exit_code;
} session_t;

/* Prints "ws-client: <url>: <what>" as one line: bytes a server chose (a close reason)
 * cannot break it. */
static void report(session_t *s, const char *what)
{
    char line[512];
    snprintf(line, sizeof(line), "%s", what);
    for (char *p = line; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = '?';
    fprintf(stderr, "ws-client: %s: %s\n", s->url, line);
    s->failed = 1;
    s->exit_code = 1;
}

/* Ends the session on our side: close 1000 (or `code` on a failure of ours). */
static void finish(sq_ws_t *ws, session_t *s, int code)
{
    s->closing = 1;
    sq_ws_close(ws, code, NULL);
}

static void send_or_fail(sq_ws_t *ws, session_t *s, const char *msg, size_t len)
{
    int rc = sq_ws_send_text(ws, msg, len);
    if (rc == 0 || rc == SQ_ECLOSED) /* SQ_ECLOSED: the server is closing; .close says how */
        return;
    char why[128];
    snprintf(why, sizeof(why), "send: %s", sq_strerror(rc));
    report(s, why);
    finish(ws, s, SQ_WS_INTERNAL);
}

static void on_open(sq_ws_t *ws, sq_req_t *req, void *data)
{
    session_t *s = data;
    s->opened = 1;
    send_or_fail(ws, s, "hi", 2);
}

static void on_message(sq_ws_t *ws, int binary, const char *msg, size_t len, void *data)
{
    session_t *s = data;
    if (s->closing || binary)
        return;
    if (len == 9 && memcmp(msg, "close cmd", 9) == 0) {
        finish(ws, s, SQ_WS_NORMAL);
        return;
    }
    fwrite(msg, 1, len, stdout);
    putchar('\n');
    s->received++;
    send_or_fail(ws, s, msg, len);
    if (!s->closing && s->count > 0 && s->received >= s->count)
        finish(ws, s, SQ_WS_NORMAL);
}

static const char *close_meaning(int code)
{
    switch (code) {
    case SQ_WS_GOING_AWAY:
        return "going away";
    case SQ_WS_PROTOCOL_ERROR:
        return "protocol error";
    case SQ_WS_UNSUPPORTED:
        return "unsupported data";
    case SQ_WS_ABNORMAL:
        return "connection lost without a close frame";
    case SQ_WS_INVALID_DATA:
        return "invalid data";
    case SQ_WS_POLICY:
        return "policy violation";
    case SQ_WS_TOO_BIG:
        return "message too big";
    case SQ_WS_INTERNAL:
        return "internal error";
    case SQ_WS_TRY_AGAIN:
        return "try again later";
    default:
        return NULL;
    }
}

static void on_close(sq_ws_t *ws, int code, const char *reason, void *data)
{
    session_t *s = data;
    char why[300];
    if (!s->opened) {
        /* connecting failed: the reason says where (connect, DNS, handshake...) */
        report(s, reason && *reason ? reason : sq_strerror(sq_ws_error(ws)));
        return;
    }
    if (s->failed)
        return;
    if (s->closing || code == SQ_WS_NORMAL || code == SQ_WS_NO_STATUS) {
        s->exit_code = 0; /* we closed, or the server did so normally */
        return;
    }
    const char *meaning = close_meaning(code);
    int n = snprintf(why, sizeof(why), "connection closed with %d", code);
    if (meaning != NULL)
        n += snprintf(why + n, sizeof(why) - (size_t)n, " (%s)", meaning);
    if (reason != NULL && *reason)
        snprintf(why + n, sizeof(why) - (size_t)n, ": %s", reason);
    report(s, why);
}

static const sq_ws_handler_t client = {
    .open = on_open,
    .message = on_message,
    .close = on_close,
};

static const char usage_text[] =
    "usage: ws-client [--count N] [--timeout MS] [ws://host:port/path]\n";

/* A one-line reason (when there is one), then the usage, on stderr; exit status 2. */
static int usage(const char *reason, const char *arg)
{
    if (reason != NULL)
        fprintf(stderr, "ws-client: %s%s%s%s\n", reason, arg ? " '" : "", arg ? arg : "",
                arg ? "'" : "");
    fputs(usage_text, stderr);
    return 2;
}

/* A whole decimal number in [min, max], or -1. */
static long long parse_number(const char *arg, long long min, long long max)
{
    char *end;
    if (arg[0] < '0' || arg[0] > '9')
        return -1;
    long long v = strtoll(arg, &end, 10);
    return *end == '\0' && v >= min && v <= max ? v : -1;
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN); /* a server that leaves mid-write must not kill us */
    session_t s = {.count = 10, .exit_code = 1};
    sq_ws_opts_t opts;
    sq_ws_opts_init(&opts);
    static const struct option longopts[] = {
        {"count", required_argument, NULL, 'c'},
        {"timeout", required_argument, NULL, 't'},
        {"help", no_argument, NULL, 'h'},
        {"deflate", no_argument, NULL, 'D'},
        {NULL, 0, NULL, 0},
    };
    int ch;
    long long v;
    opterr = 0; /* the reasons below are ours, one line each */
    while ((ch = getopt_long(argc, argv, ":c:t:h", longopts, NULL)) != -1) {
        if (ch == 'c') {
            if ((v = parse_number(optarg, 0, 1000000000)) < 0)
                return usage("--count must be a whole number 0..1000000000, not", optarg);
            s.count = (unsigned long)v;
        } else if (ch == 't') {
            if ((v = parse_number(optarg, 1, 3600000)) <= 0)
                return usage("--timeout must be 1..3600000 milliseconds, not", optarg);
            opts.handshake_timeout_ms = (uint64_t)v;
        } else if (ch == 'D') {
            opts.deflate = 1; /* offer permessage-deflate (docs/deflate.md) */
        } else if (ch == 'h') {
            fputs(usage_text, stdout);
            return 0;
        } else if (ch == ':') {
            return usage("a value is missing after", argv[optind - 1]);
        } else {
            return usage("unknown option", argv[optind - 1]);
        }
    }
    if (argc - optind > 1)
        return usage("unexpected argument", argv[optind + 1]);
    const char *arg = optind < argc ? argv[optind] : "ws://127.0.0.1:8000/ws";
    /* aiohttp's ws_connect takes http:// and https:// URLs */
    char *url = NULL;
    if (strncmp(arg, "http://", 7) == 0 || strncmp(arg, "https://", 8) == 0) {
        url = malloc(strlen(arg) + 1);
        if (url == NULL)
            return 1;
        sprintf(url, "ws%s", arg + 4);
    }
    s.url = arg;
    setvbuf(stdout, NULL, _IOLBF, 0);
    uv_loop_t loop;
    int rc = uv_loop_init(&loop);
    if (rc == 0) {
        rc = sq_ws_connect(&loop, url ? url : arg, &client, &s, &opts, NULL);
        if (rc != 0)
            uv_loop_close(&loop); /* nothing was started on it */
    }
    if (rc != 0) {
        if (rc == UV_EPROTONOSUPPORT)
            fprintf(stderr,
                    "ws-client: %s: wss:// needs TLS, which this build does not have "
                    "yet\n",
                    arg);
        else if (rc == UV_EINVAL)
            fprintf(stderr,
                    "ws-client: %s: not a ws:// URL this client can use "
                    "(ws://host[:port][/path][?query])\n",
                    arg);
        else
            fprintf(stderr, "ws-client: %s: %s\n", arg, sq_strerror(rc));
        free(url);
        return 2;
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "ws-client: writing to stdout failed\n");
        s.exit_code = 1;
    }
    free(url);
    return s.exit_code;
}
