/* chat — chat rooms served by squall's hub to every kind of client at once: WebSocket,
 * Server-Sent Events, long polling and polling, with a page that speaks all four.
 *
 *   build/bin/chat                        (or `make run`), then open http://127.0.0.1:8000/
 *   curl -H 'Content-Type: application/json' -d '{"text":"hi"}' \
 *        http://127.0.0.1:8000/rooms/lobby/messages                 {"id":1}
 *   curl 'http://127.0.0.1:8000/rooms/lobby/messages?since=0'       [{"id":1,...}]
 *   curl 'http://127.0.0.1:8000/rooms/lobby/messages?since=1&wait=25'   (long poll)
 *   curl -N http://127.0.0.1:8000/rooms/lobby/events                (SSE)
 *   WS ws://127.0.0.1:8000/ws?room=lobby&since=0
 *
 * docs/chat.md has the whole surface.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>
#include <squall.h>
#include <squall/hub.h>

/* The chat page (app/chat/page.html), built into the binary: the Makefile makes chat.o
 * depend on the page, so editing it rebuilds chat. */
__asm__(".pushsection .rodata\n"
        ".balign 16\n"
        ".globl chat_page\n"
        ".hidden chat_page\n"
        ".type chat_page, @object\n"
        "chat_page:\n"
        ".incbin \"app/chat/page.html\"\n"
        ".globl chat_page_end\n"
        ".hidden chat_page_end\n"
        "chat_page_end:\n"
        ".byte 0\n"
        ".popsection\n");
extern const char chat_page[] __attribute__((visibility("hidden")));
extern const char chat_page_end[] __attribute__((visibility("hidden")));

typedef struct chat {
    sq_hub_t *hub;
    size_t max_text; /* the hub's max_text_bytes (0: no limit) */
    size_t max_room; /* the hub's max_room_bytes */
} chat_t;

/* ---- answers ---- */

/* One of FastAPI's 422 details, {"detail":[{type, loc, msg, input[, ctx]}]}: `loc` and
 * `input` are stolen (input NULL: JSON null), ctx (may be NULL) too. */
static int send_invalid(sq_res_t *res, const char *type, json_t *loc, const char *msg,
                        json_t *input, json_t *ctx)
{
    json_t *item = json_pack("{s:s,s:o,s:s,s:o}", "type", type, "loc", loc, "msg", msg, "input",
                             input ? input : json_null());
    if (item != NULL && ctx != NULL)
        json_object_set_new(item, "ctx", ctx);
    else
        json_decref(ctx);
    return sq_res_send_json_new(res, 422, json_pack("{s:[o]}", "detail", item));
}

/* `s` as a JSON string, or null when it is not UTF-8 (a new reference). */
static json_t *string_or_null(const char *s, size_t len)
{
    json_t *j = json_stringn(s, len);
    return j ? j : json_null();
}

/* A room is 1 to max_room bytes of UTF-8 (what the hub takes). Returns 0 when `room` is
 * one, else answers 422 with `loc` (stolen either way) and returns -1. */
static int check_room(const chat_t *chat, sq_res_t *res, const char *room, json_t *loc)
{
    size_t len = room ? strlen(room) : 0;
    json_t *s = room ? json_stringn(room, len) : NULL;
    if (room == NULL) {
        send_invalid(res, "missing", loc, "Field required", NULL, NULL);
    } else if (s == NULL) {
        send_invalid(res, "string_unicode", loc,
                     "Input should be a valid string, unable to parse raw data as a unicode "
                     "string",
                     NULL, NULL);
    } else if (len == 0) {
        send_invalid(res, "string_too_short", loc, "String should have at least 1 character", s,
                     json_pack("{s:i}", "min_length", 1));
    } else if (len > chat->max_room) {
        char msg[96];
        snprintf(msg, sizeof(msg), "String should have at most %zu bytes", chat->max_room);
        send_invalid(res, "string_too_long", loc, msg, s,
                     json_pack("{s:I}", "max_length", (json_int_t)chat->max_room));
    } else {
        json_decref(s);
        json_decref(loc);
        return 0;
    }
    return -1;
}

/* The same check, as a yes or no (the WebSocket's accept hook has no response to fill). */
static bool room_ok(const chat_t *chat, const char *room)
{
    if (room == NULL || room[0] == '\0' || strlen(room) > chat->max_room)
        return false;
    json_t *s = json_string(room); /* NULL for what is not UTF-8 */
    json_decref(s);
    return s != NULL;
}

/* ?since=N (sq_hub_since). Returns 0 and *since, or answers 422 and returns -1. */
static int query_since(sq_req_t *req, sq_res_t *res, uint64_t *since)
{
    const char *s = sq_req_query(req, "since");
    if (sq_hub_since(s, since) == 0)
        return 0;
    send_invalid(res, "int_parsing", json_pack("[s,s]", "query", "since"),
                 "Input should be a valid integer, unable to parse string as an integer",
                 string_or_null(s, strlen(s)), NULL);
    return -1;
}

/* ?wait=S: seconds, digits with up to three decimals ("25", "0.5"). Absent: 0 (poll).
 * The hub cuts it to its max_wait_ms. Returns 0 and *ms, or answers 422 and returns -1. */
static int query_wait(sq_req_t *req, sq_res_t *res, uint64_t *ms)
{
    const char *s = sq_req_query(req, "wait");
    *ms = 0;
    if (s == NULL)
        return 0;
    const char *p = s;
    uint64_t whole = 0, frac = 0;
    int ndigits = 0, nfrac = 0;
    for (; *p >= '0' && *p <= '9' && ndigits < 9; p++, ndigits++)
        whole = whole * 10 + (uint64_t)(*p - '0');
    if (*p == '.' && ndigits > 0)
        for (p++; *p >= '0' && *p <= '9' && nfrac < 3; p++, nfrac++)
            frac = frac * 10 + (uint64_t)(*p - '0');
    if (ndigits == 0 || *p != '\0' || (nfrac == 0 && p[-1] == '.')) {
        send_invalid(res, "float_parsing", json_pack("[s,s]", "query", "wait"),
                     "Input should be a valid number of seconds (at most 3 decimals)",
                     string_or_null(s, strlen(s)), NULL);
        return -1;
    }
    for (; nfrac < 3; nfrac++)
        frac *= 10;
    *ms = whole * 1000 + frac;
    return 0;
}

/* An error of a hub call that did not answer itself (sq_hub_publish and its callback). */
static void send_hub_error(sq_res_t *res, int err)
{
    switch (err) {
    case UV_ENOSPC:
        sq_res_send_error(res, 503, "too many rooms");
        break;
    case SQ_ECLOSED:
        sq_res_send_error(res, 503, "shutting down");
        break;
    case UV_ENOMEM:
        sq_res_send_error(res, 500, "out of memory");
        break;
    case UV_EINVAL: /* the room and the text were checked: not expected */
        sq_res_send_error(res, 422, "invalid room or text");
        break;
    default: { /* Redis away: UV_ECONNREFUSED, UV_ECONNRESET, UV_ETIMEDOUT */
        char detail[128];
        snprintf(detail, sizeof(detail), "message store unavailable: %s", sq_strerror(err));
        sq_res_send_error(res, 503, detail);
        break;
    }
    }
}

/* ---- GET / : the page ---- */

static void page_get(sq_req_t *req, sq_res_t *res, void *data)
{
    sq_res_send_ref(res, 200, "text/html; charset=utf-8", chat_page,
                    (size_t)(chat_page_end - chat_page), NULL, NULL);
}
static const sq_handler_t page = {.get = page_get};

/* ---- /rooms/{room}/messages ---- */

static void published(sq_hub_t *hub, int status, uint64_t id, void *data)
{
    sq_res_t *res = data;
    if (status < 0) {
        send_hub_error(res, status);
        return;
    }
    sq_res_send_json_new(res, 201, json_pack("{s:I}", "id", (json_int_t)id));
}

/* An application/json media type, or one of its +json kin, parameters aside (FastAPI
 * parses those bodies as JSON, and takes any other as raw bytes). */
static bool is_json_type(const char *ctype)
{
    size_t n = strcspn(ctype, ";");
    while (n > 0 && (ctype[n - 1] == ' ' || ctype[n - 1] == '\t'))
        n--;
    if (n == 16 && strncasecmp(ctype, "application/json", 16) == 0)
        return true;
    return n > 17 && strncasecmp(ctype, "application/", 12) == 0 &&
           memchr(ctype, '/', n) == ctype + 11 && strncasecmp(ctype + n - 5, "+json", 5) == 0;
}

/* POST {"text": "..."}: checked as FastAPI checks a body `class Message(BaseModel):
 * text: str` (a 422 names what is wrong and where), then published; 201 {"id": N} once
 * the hub has numbered it. Nothing is published for a body that is refused. */
static void messages_post(sq_req_t *req, sq_res_t *res, void *data)
{
    chat_t *chat = data;
    const char *room = sq_req_param(req, "room");
    if (check_room(chat, res, room, json_pack("[s,s]", "path", "room")) != 0)
        return;
    size_t len;
    const char *body = sq_req_body(req, &len);
    const char *ctype = sq_req_header(req, "Content-Type");
    static const char not_object[] =
        "Input should be a valid dictionary or object to extract fields from";
    if (ctype != NULL && !is_json_type(ctype)) {
        send_invalid(res, "model_attributes_type", json_pack("[s]", "body"), not_object,
                     string_or_null(body, len), NULL);
        return;
    }
    if (len == 0) {
        send_invalid(res, "missing", json_pack("[s]", "body"), "Field required", NULL, NULL);
        return;
    }
    json_error_t jerr;
    json_t *doc = json_loadb(body, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
    if (doc == NULL) {
        send_invalid(res, "json_invalid", json_pack("[s,I]", "body", (json_int_t)jerr.position),
                     "JSON decode error", json_object(), json_pack("{s:s}", "error", jerr.text));
        return;
    }
    json_t *text = json_object_get(doc, "text"); /* NULL for what is not an object */
    if (!json_is_object(doc)) {
        send_invalid(res, "model_attributes_type", json_pack("[s]", "body"), not_object, doc, NULL);
        return;
    }
    if (text == NULL) {
        send_invalid(res, "missing", json_pack("[s,s]", "body", "text"), "Field required", doc,
                     NULL);
        return;
    }
    if (!json_is_string(text)) {
        send_invalid(res, "string_type", json_pack("[s,s]", "body", "text"),
                     "Input should be a valid string", json_incref(text), NULL);
        json_decref(doc);
        return;
    }
    size_t tlen = json_string_length(text);
    if (chat->max_text != 0 && tlen > chat->max_text) {
        char msg[96];
        snprintf(msg, sizeof(msg), "String should have at most %zu bytes", chat->max_text);
        send_invalid(res, "string_too_long", json_pack("[s,s]", "body", "text"), msg,
                     json_incref(text),
                     json_pack("{s:I}", "max_length", (json_int_t)chat->max_text));
        json_decref(doc);
        return;
    }
    int rc = sq_hub_publish(chat->hub, sq_req_loop(req), room, json_string_value(text), tlen,
                            published, res);
    json_decref(doc);
    if (rc != 0)
        send_hub_error(res, rc);
}

/* GET ?since=N[&wait=S]: a poll, or with wait a long poll, which the hub answers. */
static void messages_get(sq_req_t *req, sq_res_t *res, void *data)
{
    chat_t *chat = data;
    const char *room = sq_req_param(req, "room");
    uint64_t since, wait_ms;
    if (check_room(chat, res, room, json_pack("[s,s]", "path", "room")) != 0 ||
        query_since(req, res, &since) != 0 || query_wait(req, res, &wait_ms) != 0)
        return;
    sq_hub_serve_poll(chat->hub, req, res, room, since, wait_ms); /* answers errors too */
}
static const sq_handler_t messages = {
    .get = messages_get, .post = messages_post, .aborted = sq_hub_aborted};

/* ---- /rooms/{room}/events: Server-Sent Events ---- */

/* From Last-Event-ID (what a browser's EventSource sends when it reconnects), else from
 * ?since=N; neither: the whole history. */
static void events_get(sq_req_t *req, sq_res_t *res, void *data)
{
    chat_t *chat = data;
    const char *room = sq_req_param(req, "room");
    if (check_room(chat, res, room, json_pack("[s,s]", "path", "room")) != 0)
        return;
    uint64_t since;
    const char *last = sq_req_header(req, "Last-Event-ID");
    if (last != NULL && last[0] != '\0') {
        if (sq_hub_since(last, &since) != 0) {
            send_invalid(res, "int_parsing", json_pack("[s,s]", "header", "last-event-id"),
                         "Input should be a valid integer, unable to parse string as an integer",
                         string_or_null(last, strlen(last)), NULL);
            return;
        }
    } else if (query_since(req, res, &since) != 0) {
        return;
    }
    sq_hub_serve_events(chat->hub, req, res, room, since);
}
static const sq_handler_t events = {.get = events_get, .aborted = sq_hub_aborted};

/* ---- WS /ws?room=R[&since=N] ---- */

/* One WebSocket's state: freed when the WebSocket has closed and no publish it made is
 * still waiting for the hub's answer. */
typedef struct chat_ws {
    chat_t *chat;
    sq_ws_t *ws; /* NULL once closed */
    sq_hub_sub_t *sub;
    unsigned refs; /* the WebSocket's, and one per publish in flight */
    char room[];
} chat_ws_t;

static void chat_ws_unref(chat_ws_t *st)
{
    if (--st->refs == 0)
        free(st);
}

/* The handshake: a room that is not 1..max_room bytes of UTF-8, or a since that is not a
 * number, refuses it with 422 (nothing is upgraded). */
static int ws_accept(sq_req_t *req, const char **subprotocol, void *data)
{
    chat_t *chat = data;
    uint64_t since;
    if (!room_ok(chat, sq_req_query(req, "room")) ||
        sq_hub_since(sq_req_query(req, "since"), &since) != 0)
        return 422;
    return 0;
}

static void ws_open(sq_ws_t *ws, sq_req_t *req, void *data)
{
    chat_t *chat = data;
    const char *room = sq_req_query(req, "room"); /* checked by ws_accept */
    uint64_t since = 0;
    sq_hub_since(sq_req_query(req, "since"), &since);
    size_t rl = strlen(room);
    chat_ws_t *st = malloc(sizeof(*st) + rl + 1);
    if (st == NULL) {
        sq_ws_close(ws, SQ_WS_INTERNAL, "out of memory");
        return;
    }
    *st = (chat_ws_t){.chat = chat, .ws = ws, .refs = 1};
    memcpy(st->room, room, rl + 1);
    sq_ws_set_data(ws, st);
    int rc = sq_hub_subscribe_ws(chat->hub, ws, room, since, &st->sub);
    if (rc != 0) {
        st->sub = NULL;
        sq_ws_close(ws, rc == UV_ENOMEM ? SQ_WS_INTERNAL : SQ_WS_TRY_AGAIN, sq_strerror(rc));
    }
}

static void ws_published(sq_hub_t *hub, int status, uint64_t id, void *data)
{
    chat_ws_t *st = data;
    if (status < 0 && st->ws != NULL) /* Redis away: the client may try again later */
        sq_ws_close(st->ws, SQ_WS_TRY_AGAIN, "message store unavailable");
    chat_ws_unref(st);
}

/* A text frame is published as a message's text (the sender gets it too, as every
 * subscriber of the room does); a binary frame closes with 1003. */
static void ws_message(sq_ws_t *ws, int binary, const char *msg, size_t len, void *data)
{
    chat_ws_t *st = sq_ws_data(ws);
    if (st == NULL)
        return;
    if (binary) {
        sq_ws_close(ws, SQ_WS_UNSUPPORTED, "text messages only");
        return;
    }
    st->refs++;
    int rc = sq_hub_publish(st->chat->hub, sq_ws_loop(ws), st->room, msg, len, ws_published, st);
    if (rc == 0)
        return;
    st->refs--;
    int code = rc == UV_EMSGSIZE ? SQ_WS_TOO_BIG
               : rc == UV_EINVAL ? SQ_WS_INVALID_DATA
               : rc == UV_ENOMEM ? SQ_WS_INTERNAL
                                 : SQ_WS_TRY_AGAIN;
    sq_ws_close(ws, code, sq_strerror(rc));
}

static void ws_close(sq_ws_t *ws, int code, const char *reason, void *data)
{
    chat_ws_t *st = sq_ws_data(ws);
    if (st == NULL)
        return;
    sq_hub_unsubscribe(st->sub);
    st->sub = NULL;
    st->ws = NULL;
    chat_ws_unref(st);
}

static const sq_ws_handler_t ws_handler = {
    .open = ws_open, .message = ws_message, .close = ws_close, .accept = ws_accept};

/* ---- the program ---- */

#define MAX_WORKERS 64      /* threads, each with its own loop and listener */
#define MAX_PROCESSES 64    /* processes, each with its workers (rooms shared by Redis) */
#define MAX_THREADPOOL 1024 /* libuv's limit for UV_THREADPOOL_SIZE */
#define MAX_HISTORY 1000000 /* --history: messages kept per room */

/* A worker's own state: written on its thread only (main reads attach_err after
 * sq_workers_run has joined the threads). */
typedef struct worker_state {
    struct config *cfg;
    bool attached;
    int attach_err;
} worker_state_t;

typedef struct config {
    const char *host;
    int port;
    unsigned workers;
    unsigned processes;          /* --processes: copies of the whole server, one port */
    unsigned process;            /* which one this is */
    unsigned threadpool;
    sq_server_opts_t opts;
    sq_app_t *app;
    chat_t chat;
    worker_state_t w[MAX_WORKERS];
} config_t;

/* The hub lets go of a worker's loop (on its thread). */
static void worker_detach(worker_state_t *ws, uv_loop_t *loop)
{
    if (ws->attached) {
        ws->attached = false;
        sq_hub_detach(ws->cfg->chat.hub, loop);
    }
}

/* The server's shutdown began (SIGINT, SIGTERM): the hub lets go of this loop now, so held
 * long polls are answered [], event streams end and WebSockets are told 1001 at once,
 * rather than holding the shutdown for its whole grace period as responses in flight. */
static void on_shutdown(sq_server_t *srv, void *data)
{
    worker_detach(data, sq_server_loop(srv));
}

/* Each worker's server, with the hub attached to its loop before the loop serves. A
 * failure is reported once, by main, from sq_workers_run's result; the worker's loop
 * finishes closing the server, and teardown detaches the hub. */
static int setup(uv_loop_t *loop, unsigned index, void *data, sq_server_t **out)
{
    config_t *cfg = data;
    worker_state_t *ws = &cfg->w[index];
    ws->cfg = cfg;
    int rc = sq_hub_attach(cfg->chat.hub, loop);
    if (rc != 0) {
        ws->attach_err = rc;
        return rc;
    }
    ws->attached = true;
    sq_server_opts_t opts = cfg->opts; /* copied by sq_server_create */
    opts.on_shutdown = on_shutdown;
    opts.on_shutdown_data = ws;
    sq_server_t *srv;
    rc = sq_server_create(&srv, loop, cfg->app, &opts);
    if (rc != 0)
        return rc;
    rc = sq_server_listen(srv, cfg->host, cfg->port); /* a host name is resolved here */
    if (rc != 0) {
        sq_server_destroy(srv, 0, NULL, NULL);
        return rc;
    }
    if (index == 0 && cfg->process == 0) {
        printf("chat: serving on http://%s%s%s:%d/ with %u worker%s", strchr(cfg->host, ':') ? "[" : "",
               cfg->host, strchr(cfg->host, ':') ? "]" : "", sq_server_port(srv), cfg->workers,
               cfg->workers == 1 ? "" : "s");
        if (cfg->processes > 1)
            printf(" in each of %u processes", cfg->processes);
        printf("\n");
        fflush(stdout);
    }
    *out = srv;
    return 0;
}

/* After the worker's server closed (or its setup failed): the hub lets go of the loop if
 * the shutdown has not made it do so already (sq_workers_run runs the loop once more to
 * finish closing the hub's handle). */
static void teardown(uv_loop_t *loop, unsigned index, void *data)
{
    config_t *cfg = data;
    worker_detach(&cfg->w[index], loop);
}

/* Listens on the configured address once (with an app of no routes) and closes again: 0,
 * or why it cannot. */
static int try_listen(config_t *cfg)
{
    uv_loop_t loop;
    int rc = uv_loop_init(&loop);
    if (rc != 0)
        return rc;
    sq_app_t *app = NULL;
    sq_server_t *srv;
    rc = sq_app_create(&app);
    if (rc == 0)
        rc = sq_server_create(&srv, &loop, app, &cfg->opts);
    if (rc == 0) {
        rc = sq_server_listen(srv, cfg->host, cfg->port);
        sq_server_destroy(srv, 0, NULL, NULL);
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    if (app != NULL)
        sq_app_destroy(app);
    return rc;
}

/* A flag's number: decimal digits only (no sign, no blanks, nothing after), at most max.
 * Returns 0, or -1 for anything else. */
static int parse_flag(const char *s, unsigned long long max, unsigned long long *out)
{
    if (*s < '0' || *s > '9') /* strtoull would take blanks, '+' and a wrapping '-' */
        return -1;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0' || v > max)
        return -1;
    *out = v;
    return 0;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: chat [--host ADDR|NAME] [--port N] [--workers N] [--history N (1000)]\n"
               "            [--processes N (needs --redis)]\n"
               "            [--redis redis://HOST:PORT] [--max-text BYTES (65536)]\n"
               "            [--max-body BYTES] [--max-header BYTES] [--header-timeout MS]\n"
               "            [--idle-timeout MS] [--slow-callback-ms MS (100; 0 off)]\n"
               "            [--threadpool N] [--help]\n");
}

/* What is wrong, on one line, then the usage; status 2. */
static int bad_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int bad_usage(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("chat: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    usage(stderr);
    return 2;
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN); /* a client that leaves mid-write must not kill us */
    static config_t cfg = {.host = "127.0.0.1", .port = 8000, .workers = 1, .processes = 1};
    sq_server_opts_init(&cfg.opts);
    cfg.opts.slow_callback_ms = 100;
    sq_hub_opts_t hopts;
    sq_hub_opts_init(&hopts);
    static const struct option longopts[] = {
        {"host", required_argument, NULL, 'h'},
        {"port", required_argument, NULL, 'p'},
        {"workers", required_argument, NULL, 'w'},
        {"processes", required_argument, NULL, 'P'},
        {"history", required_argument, NULL, 'n'},
        {"redis", required_argument, NULL, 'r'},
        {"max-text", required_argument, NULL, 'x'},
        {"max-body", required_argument, NULL, 'b'},
        {"max-header", required_argument, NULL, 'H'},
        {"header-timeout", required_argument, NULL, 't'},
        {"idle-timeout", required_argument, NULL, 'i'},
        {"slow-callback-ms", required_argument, NULL, 's'},
        {"threadpool", required_argument, NULL, 'T'},
        {"help", no_argument, NULL, 'u'},
        {NULL, 0, NULL, 0},
    };
    int ch, li = 0;
    unsigned long long v = 0;
    opterr = 0; /* getopt's own messages would name argv[0]: chat words its own */
    while ((ch = getopt_long(argc, argv, ":", longopts, &li)) != -1) {
        int bad = 0;
        /* clang-format off */
        switch (ch) {
        case 'h': cfg.host = optarg; break;
        case 'p': bad = parse_flag(optarg, 65535, &v); cfg.port = (int)v; break;
        case 'w': bad = parse_flag(optarg, UINT_MAX, &v); cfg.workers = (unsigned)v; break;
        case 'P': bad = parse_flag(optarg, UINT_MAX, &v); cfg.processes = (unsigned)v; break;
        case 'n': bad = parse_flag(optarg, MAX_HISTORY, &v); hopts.history_count = v; break;
        case 'r': hopts.redis_url = optarg; break;
        case 'x': bad = parse_flag(optarg, SIZE_MAX, &v); hopts.max_text_bytes = v; break;
        case 'b': bad = parse_flag(optarg, SIZE_MAX, &v); cfg.opts.max_body_bytes = v; break;
        case 'H': bad = parse_flag(optarg, SIZE_MAX, &v); cfg.opts.max_header_bytes = v; break;
        case 't': bad = parse_flag(optarg, UINT64_MAX, &v); cfg.opts.header_timeout_ms = v; break;
        case 'i': bad = parse_flag(optarg, UINT64_MAX, &v); cfg.opts.idle_timeout_ms = v; break;
        case 's': bad = parse_flag(optarg, UINT64_MAX, &v); cfg.opts.slow_callback_ms = v; break;
        case 'T': bad = parse_flag(optarg, UINT_MAX, &v); cfg.threadpool = (unsigned)v; break;
        /* clang-format on */
        case 'u':
            usage(stdout);
            return 0;
        case ':':
            return bad_usage("%s needs a value", argv[optind - 1]);
        default:
            if (optopt != 0)
                return bad_usage("unknown option '-%c'", optopt);
            return bad_usage("unknown option '%s'", argv[optind - 1]);
        }
        if (bad != 0 && ch == 'n')
            return bad_usage("--history must be 0..%d", MAX_HISTORY);
        if (bad != 0)
            return bad_usage("--%s: not a valid number: '%s'", longopts[li].name, optarg);
        if (ch == 'w' && (cfg.workers == 0 || cfg.workers > MAX_WORKERS))
            return bad_usage("--workers must be 1..%d", MAX_WORKERS);
        if (ch == 'P' && (cfg.processes == 0 || cfg.processes > MAX_PROCESSES))
            return bad_usage("--processes must be 1..%d", MAX_PROCESSES);
        if (ch == 'T' && (cfg.threadpool == 0 || cfg.threadpool > MAX_THREADPOOL))
            return bad_usage("--threadpool must be 1..%d", MAX_THREADPOOL);
    }
    if (optind < argc)
        return bad_usage("unexpected argument '%s'", argv[optind]);
    /* each worker listens on its own socket (SO_REUSEPORT): with port 0 each would get a
     * port of its own, and all but one would be unreachable */
    if (cfg.port == 0 && (cfg.workers > 1 || cfg.processes > 1))
        return bad_usage("--port 0 needs --workers 1 and --processes 1 (each would get its "
                         "own port)");
    /* threads share one hub in memory; processes can share rooms only through Redis */
    if (cfg.processes > 1 && hopts.redis_url == NULL)
        return bad_usage("--processes needs --redis (rooms are shared between processes "
                         "through Redis)");
    if (hopts.redis_url != NULL && strncasecmp(hopts.redis_url, "redis://", 8) != 0)
        return bad_usage("--redis: not a redis://HOST[:PORT] URL: '%s'", hopts.redis_url);
    cfg.opts.reuseport = cfg.workers > 1 || cfg.processes > 1;
    if (cfg.threadpool > 0 && sq_work_threadpool_set_size(cfg.threadpool) != 0)
        return bad_usage("--threadpool must be 1..%d", MAX_THREADPOOL);
    unsigned threads = sq_work_threadpool_size();
    cfg.opts.blocking_max_in_flight = threads > cfg.workers ? (threads - 1) / cfg.workers : 1;
    if (cfg.opts.blocking_max_in_flight == 0)
        cfg.opts.blocking_max_in_flight = 1;

    if (cfg.processes > 1) {
        /* copies of this process on one port, each with its own descriptor limit and its
         * own hub on the same Redis; the address is tried once first, so that a busy port
         * is one line, not one per copy */
        int prc = try_listen(&cfg);
        if (prc != 0) {
            bool v6 = strchr(cfg.host, ':') != NULL;
            fprintf(stderr, "chat: listen %s%s%s:%d: %s\n", v6 ? "[" : "", cfg.host,
                    v6 ? "]" : "", cfg.port, sq_strerror(prc));
            return 1;
        }
        int code = 0;
        prc = sq_processes_run(cfg.processes, &cfg.process, &code);
        if (prc < 0) {
            fprintf(stderr, "chat: --processes: %s\n", sq_strerror(prc));
            return 1;
        }
        if (prc == 1)
            return code; /* the supervisor: every copy has exited (each said why it failed) */
    }
    int rc = sq_hub_create(&cfg.chat.hub, &hopts);
    if (rc == UV_EINVAL && hopts.redis_url != NULL)
        return bad_usage("--redis: not a redis://HOST[:PORT] URL: '%s'", hopts.redis_url);
    if (rc != 0) {
        if (hopts.redis_url != NULL)
            fprintf(stderr, "chat: hub on %s: %s\n", hopts.redis_url, sq_strerror(rc));
        else
            fprintf(stderr, "chat: hub: %s\n", sq_strerror(rc));
        return 1;
    }
    cfg.chat.max_text = hopts.max_text_bytes;
    cfg.chat.max_room = hopts.max_room_bytes;

    /* a WebSocket message is a message's text: the same limit, answered with 1009 */
    sq_ws_opts_t wopts;
    sq_ws_opts_init(&wopts);
    if (hopts.max_text_bytes != 0)
        wopts.max_message_bytes = hopts.max_text_bytes;
    if (sq_app_create(&cfg.app) != 0 || sq_app_route(cfg.app, "/", &page, &cfg.chat) != 0 ||
        sq_app_route(cfg.app, "/rooms/{room}/messages", &messages, &cfg.chat) != 0 ||
        sq_app_route(cfg.app, "/rooms/{room}/events", &events, &cfg.chat) != 0 ||
        sq_app_websocket(cfg.app, "/ws", &ws_handler, &wopts, &cfg.chat) != 0) {
        fprintf(stderr, "chat: %s\n", sq_strerror(UV_ENOMEM));
        if (cfg.app != NULL)
            sq_app_destroy(cfg.app);
        sq_hub_destroy(cfg.chat.hub);
        return 1;
    }

    rc = sq_workers_run(cfg.workers, setup, teardown, &cfg, 5000);
    sq_app_destroy(cfg.app);
    sq_hub_destroy(cfg.chat.hub);
    if (rc != 0) {
        for (unsigned i = 0; i < cfg.workers; i++)
            if (cfg.w[i].attach_err != 0) {
                fprintf(stderr, "chat: hub: %s\n", sq_strerror(cfg.w[i].attach_err));
                return 1;
            }
        bool v6 = strchr(cfg.host, ':') != NULL;
        fprintf(stderr, "chat: listen %s%s%s:%d: %s\n", v6 ? "[" : "", cfg.host, v6 ? "]" : "",
                cfg.port, sq_strerror(rc));
        return 1;
    }
    return 0;
}
