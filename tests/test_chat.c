/* build/bin/chat through real sockets, as its clients meet it: POST, poll and long poll
 * (HTTP/1.1 by hand, tests/support/harness.h), Server-Sent Events (a chunked stream read
 * and parsed here), WebSocket (frames built by hand, tests/support/ws_raw.h). Each test
 * starts its own chat on a free port (tests/support/app.h) and stops it with SIGTERM,
 * which must end it with status 0. The surface is /work's hub contract, written down in
 * docs/chat.md.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <jansson.h>

#include "support/app.h"
#include "support/harness.h"
#include "support/redis_server.h"
#include "support/ws_raw.h"

/* ---- chat ---- */

static th_app_t chat_start(const char *arg, ...)
{
    const char *args[32];
    int n = 0;
    va_list ap;
    va_start(ap, arg);
    for (const char *a = arg; a != NULL; a = va_arg(ap, const char *)) {
        cr_assert_lt(n, 31);
        args[n++] = a;
    }
    va_end(ap);
    args[n] = NULL;
    th_app_t a = th_app_startv("chat", false, args);
    cr_assert_not_null(strstr(a.line, "chat: serving on http://127.0.0.1:"), "%s", a.line);
    return a;
}

/* ---- HTTP ---- */

/* One request on a connection of its own; the response in *r (th_res_free). `headers`
 * are whole lines ("Name: value\r\n"), may be NULL; a body gets its Content-Length. */
static void http(int port, const char *method, const char *target, const char *headers,
                 const void *body, size_t len, th_res_t *r)
{
    char head[4096];
    int hl = snprintf(head, sizeof(head), "%s %s HTTP/1.1\r\nHost: t\r\n%s", method, target,
                      headers ? headers : "");
    if (body != NULL)
        hl += snprintf(head + hl, sizeof(head) - (size_t)hl, "Content-Length: %zu\r\n", len);
    hl += snprintf(head + hl, sizeof(head) - (size_t)hl, "\r\n");
    cr_assert_lt((size_t)hl, sizeof(head));
    th_conn_t c;
    cr_assert_eq(th_conn_open(&c, port), 0);
    cr_assert_eq(th_conn_send(&c, head, (size_t)hl), 0);
    if (body != NULL && len > 0)
        cr_assert_eq(th_conn_send(&c, body, len), 0);
    int rc = th_conn_read_res(&c, r, 10000, strcmp(method, "HEAD") == 0);
    cr_assert_eq(rc, 0, "%s %s: %s", method, target, uv_err_name(rc));
    th_conn_close(&c);
}

/* `text` (len bytes) as the body {"text": ...}, malloc'd. */
static char *text_body(const char *text, size_t len)
{
    json_t *j = json_pack("{s:s%}", "text", text, len);
    cr_assert_not_null(j, "not UTF-8?");
    char *s = json_dumps(j, JSON_COMPACT);
    cr_assert_not_null(s);
    json_decref(j);
    return s;
}

/* POSTs text to room; asserts 201 {"id": N} as application/json; returns N. */
static uint64_t post_text(int port, const char *room, const char *text, size_t len)
{
    char target[512];
    snprintf(target, sizeof(target), "/rooms/%s/messages", room);
    char *body = text_body(text, len);
    th_res_t r;
    http(port, "POST", target, "Content-Type: application/json\r\n", body, strlen(body), &r);
    free(body);
    cr_assert_eq(r.status, 201, "POST %s: %d %s", target, r.status, r.body);
    const char *ct = th_res_header(&r, "Content-Type");
    cr_assert(ct != NULL && strncmp(ct, "application/json", 16) == 0, "Content-Type: %s", ct);
    json_error_t e;
    json_t *j = json_loadb(r.body, r.body_len, 0, &e);
    cr_assert_not_null(j, "201 body: %s", r.body);
    cr_assert_eq(json_object_size(j), 1, "%s", r.body);
    json_t *id = json_object_get(j, "id");
    cr_assert(json_is_integer(id) && json_integer_value(id) > 0, "%s", r.body);
    uint64_t n = (uint64_t)json_integer_value(id);
    json_decref(j);
    th_res_free(&r);
    return n;
}

static uint64_t post(int port, const char *room, const char *text)
{
    return post_text(port, room, text, strlen(text));
}

/* ---- messages as a subscriber collects them ---- */

typedef struct msg {
    uint64_t id;
    char *text;
    size_t len;
} msg_t;

typedef struct msgs {
    msg_t *m;
    size_t n, cap;
} msgs_t;

/* Checks that `j` is a message object of `room` ({"id":N,"room":R,"text":T}, nothing
 * else) and appends it. Steals j. */
static void msgs_add_json(msgs_t *ms, json_t *j, const char *room, const char *who)
{
    cr_assert(json_is_object(j), "%s: not an object", who);
    json_t *id = json_object_get(j, "id"), *rm = json_object_get(j, "room"),
           *text = json_object_get(j, "text");
    cr_assert(json_is_integer(id) && json_integer_value(id) > 0, "%s: id", who);
    cr_assert(json_is_string(rm) && strcmp(json_string_value(rm), room) == 0, "%s: room", who);
    cr_assert(json_is_string(text), "%s: text", who);
    cr_assert_eq(json_object_size(j), 3, "%s: more than id, room and text", who);
    if (ms->n == ms->cap) {
        ms->cap = ms->cap ? ms->cap * 2 : 16;
        ms->m = realloc(ms->m, ms->cap * sizeof(*ms->m));
        cr_assert_not_null(ms->m);
    }
    msg_t *m = &ms->m[ms->n++];
    m->id = (uint64_t)json_integer_value(id);
    m->len = json_string_length(text);
    m->text = malloc(m->len + 1);
    cr_assert_not_null(m->text);
    memcpy(m->text, json_string_value(text), m->len + 1);
    json_decref(j);
}

static void msgs_free(msgs_t *ms)
{
    for (size_t i = 0; i < ms->n; i++)
        free(ms->m[i].text);
    free(ms->m);
    memset(ms, 0, sizeof(*ms));
}

static uint64_t msgs_last(const msgs_t *ms)
{
    return ms->n ? ms->m[ms->n - 1].id : 0;
}

/* The published messages, as the test knows them. */
typedef struct sent {
    uint64_t id;
    const char *text;
    size_t len;
} sent_t;

/* `got` is exactly `want` (n messages): each once, in id order, texts byte for byte. */
static void expect_msgs(const msgs_t *got, const sent_t *want, size_t n, const char *who)
{
    for (size_t i = 0; i < got->n && i < n; i++) {
        cr_assert_eq(got->m[i].id, want[i].id, "%s: message %zu has id %llu, expected %llu", who, i,
                     (unsigned long long)got->m[i].id, (unsigned long long)want[i].id);
        cr_assert_eq(got->m[i].len, want[i].len, "%s: id %llu: %zu bytes, expected %zu", who,
                     (unsigned long long)want[i].id, got->m[i].len, want[i].len);
        cr_assert(memcmp(got->m[i].text, want[i].text, want[i].len) == 0,
                  "%s: id %llu: the text differs", who, (unsigned long long)want[i].id);
    }
    cr_assert_eq(got->n, n, "%s: %zu messages, expected %zu", who, got->n, n);
}

/* ---- polling ---- */

/* GET /rooms/ROOM/messages?QUERY; asserts 200 application/json and appends the array's
 * messages to ms (may be NULL: only checked). r (may be NULL) keeps the response. */
static void poll_room(int port, const char *room, const char *query, msgs_t *ms, th_res_t *keep)
{
    char target[512];
    snprintf(target, sizeof(target), "/rooms/%s/messages?%s", room, query);
    th_res_t r;
    http(port, "GET", target, NULL, NULL, 0, &r);
    cr_assert_eq(r.status, 200, "GET %s: %d %s", target, r.status, r.body);
    const char *ct = th_res_header(&r, "Content-Type");
    cr_assert(ct != NULL && strncmp(ct, "application/json", 16) == 0, "Content-Type: %s", ct);
    json_error_t e;
    json_t *arr = json_loadb(r.body, r.body_len, JSON_ALLOW_NUL, &e);
    cr_assert(json_is_array(arr), "GET %s: not an array: %s", target, r.body);
    msgs_t scratch = {0};
    for (size_t i = 0; i < json_array_size(arr); i++)
        msgs_add_json(ms ? ms : &scratch, json_incref(json_array_get(arr, i)), room, "poll");
    json_decref(arr);
    msgs_free(&scratch);
    if (keep != NULL)
        *keep = r;
    else
        th_res_free(&r);
}

/* A poller: polls since its last id until it has `n` messages or the deadline passes. */
static void poll_until(int port, const char *room, msgs_t *ms, size_t n, int timeout_ms)
{
    uint64_t end = th_now_ms() + (uint64_t)timeout_ms;
    while (ms->n < n && th_now_ms() < end) {
        char q[64];
        snprintf(q, sizeof(q), "since=%llu", (unsigned long long)msgs_last(ms));
        size_t before = ms->n;
        poll_room(port, room, q, ms, NULL);
        if (ms->n == before)
            th_sleep_ms(20);
    }
}

/* A long poll sent on its own connection, read later (lp_read). */
static void lp_send(th_conn_t *c, int port, const char *room, uint64_t since, const char *wait)
{
    cr_assert_eq(th_conn_open(c, port), 0);
    char req[512];
    snprintf(req, sizeof(req),
             "GET /rooms/%s/messages?since=%llu&wait=%s HTTP/1.1\r\nHost: t\r\n\r\n", room,
             (unsigned long long)since, wait);
    cr_assert_eq(th_conn_sends(c, req), 0);
}

/* Reads the long poll's answer: 200 and a JSON array, appended to ms. Returns how long it
 * took from the call. */
static uint64_t lp_read(th_conn_t *c, const char *room, msgs_t *ms, int timeout_ms)
{
    uint64_t t0 = th_now_ms();
    th_res_t r;
    int rc = th_conn_read_res(c, &r, timeout_ms, false);
    cr_assert_eq(rc, 0, "long poll: %s", uv_err_name(rc));
    cr_assert_eq(r.status, 200, "long poll: %d %s", r.status, r.body);
    json_error_t e;
    json_t *arr = json_loadb(r.body, r.body_len, JSON_ALLOW_NUL, &e);
    cr_assert(json_is_array(arr), "long poll: %s", r.body);
    for (size_t i = 0; i < json_array_size(arr); i++)
        msgs_add_json(ms, json_incref(json_array_get(arr, i)), room, "long poll");
    json_decref(arr);
    th_res_free(&r);
    return th_now_ms() - t0;
}

/* A long poller: long polls (wait=5) since its last id until it has n messages. */
static void long_poll_until(int port, const char *room, msgs_t *ms, size_t n, int timeout_ms)
{
    uint64_t end = th_now_ms() + (uint64_t)timeout_ms;
    while (ms->n < n && th_now_ms() < end) {
        th_conn_t c;
        lp_send(&c, port, room, msgs_last(ms), "5");
        lp_read(&c, room, ms, 10000);
        th_conn_close(&c);
    }
}

/* ---- Server-Sent Events ---- */

typedef struct sse {
    th_conn_t c;
    bool chunked;
    bool ended;           /* the last chunk, or EOF */
    char *body;           /* the stream's bytes, de-chunked */
    size_t len, cap, off; /* off: what sse_next has consumed */
    unsigned comments;    /* comment lines (heartbeats) seen */
} sse_t;

static void sse_append(sse_t *s, const char *p, size_t n)
{
    if (s->len + n + 1 > s->cap) {
        s->cap = (s->len + n + 1) * 2;
        s->body = realloc(s->body, s->cap);
        cr_assert_not_null(s->body);
    }
    memcpy(s->body + s->len, p, n);
    s->len += n;
    s->body[s->len] = '\0';
}

/* Moves what has arrived from the socket's buffer to the de-chunked body. */
static void sse_dechunk(sse_t *s)
{
    th_conn_t *c = &s->c;
    if (!s->chunked) {
        sse_append(s, c->buf, c->len);
        c->len = 0;
        return;
    }
    while (!s->ended) {
        char *crlf = c->len ? memmem(c->buf, c->len, "\r\n", 2) : NULL;
        if (crlf == NULL)
            return;
        char *end;
        unsigned long size = strtoul(c->buf, &end, 16);
        cr_assert(end != c->buf && (end == crlf || *end == ';'), "bad chunk size line");
        size_t need = (size_t)(crlf - c->buf) + 2 + size + 2;
        if (c->len < need)
            return;
        if (size == 0)
            s->ended = true;
        sse_append(s, crlf + 2, size);
        cr_assert(memcmp(crlf + 2 + size, "\r\n", 2) == 0, "chunk not followed by CRLF");
        memmove(c->buf, c->buf + need, c->len - need);
        c->len -= need;
    }
}

/* Opens /rooms/ROOM/events?QUERY with the extra header lines (may be NULL); asserts the
 * 200 text/event-stream head. `rcvbuf` > 0 sets SO_RCVBUF before connecting (a reader
 * that lets things pile up). */
static void sse_open_with(sse_t *s, int port, const char *room, const char *query,
                          const char *headers, int rcvbuf)
{
    memset(s, 0, sizeof(*s));
    if (rcvbuf > 0) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        cr_assert_geq(fd, 0);
        cr_assert_eq(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf)), 0);
        struct sockaddr_in a = {.sin_family = AF_INET,
                                .sin_port = htons((uint16_t)port),
                                .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        cr_assert_eq(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0, "%s", strerror(errno));
        s->c.fd = fd;
    } else {
        cr_assert_eq(th_conn_open(&s->c, port), 0);
    }
    char req[1024];
    snprintf(req, sizeof(req),
             "GET /rooms/%s/events%s%s HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n%s\r\n",
             room, query ? "?" : "", query ? query : "", headers ? headers : "");
    cr_assert_eq(th_conn_sends(&s->c, req), 0);
    uint64_t end = th_now_ms() + 5000;
    char *blank;
    while ((blank = s->c.len ? memmem(s->c.buf, s->c.len, "\r\n\r\n", 4) : NULL) == NULL) {
        cr_assert_lt(th_now_ms(), end, "no event-stream head within 5 s");
        cr_assert_not(s->c.eof, "closed before the head: %.*s", (int)s->c.len,
                      s->c.buf ? s->c.buf : "");
        th_conn_read_some(&s->c, 200);
    }
    size_t hl = (size_t)(blank - s->c.buf) + 4;
    char *head = strndup(s->c.buf, hl);
    cr_assert_eq(strncmp(head, "HTTP/1.1 200 ", 13), 0, "events: %s", head);
    cr_assert_not_null(strcasestr(head, "\r\nContent-Type: text/event-stream"), "%s", head);
    s->chunked = strcasestr(head, "\r\nTransfer-Encoding: chunked") != NULL;
    free(head);
    memmove(s->c.buf, s->c.buf + hl, s->c.len - hl);
    s->c.len -= hl;
    sse_dechunk(s);
}

static void sse_open(sse_t *s, int port, const char *room, const char *query)
{
    sse_open_with(s, port, room, query, NULL, 0);
}

/* The next event with data, parsed: returns 0 and *j (the data as JSON) and *id (its id:
 * field, 0 without), UV_ETIMEDOUT, or UV_EOF when the stream ended. */
static int sse_next(sse_t *s, json_t **j, uint64_t *id, int timeout_ms)
{
    uint64_t end = th_now_ms() + (uint64_t)timeout_ms;
    for (;;) {
        char *ev = s->len > s->off ? memmem(s->body + s->off, s->len - s->off, "\n\n", 2) : NULL;
        if (ev != NULL) {
            char *p = s->body + s->off, *stop = ev + 1;
            s->off = (size_t)(ev + 2 - s->body);
            char *data = NULL;
            *id = 0;
            while (p < stop) {
                char *nl = memchr(p, '\n', (size_t)(stop - p));
                *nl = '\0';
                if (p[0] == ':')
                    s->comments++;
                else if (strncmp(p, "id: ", 4) == 0)
                    *id = strtoull(p + 4, NULL, 10);
                else if (strncmp(p, "data: ", 6) == 0) {
                    cr_assert_null(data, "a message is one data line");
                    data = p + 6;
                }
                p = nl + 1;
            }
            if (data == NULL)
                continue; /* a heartbeat */
            json_error_t e;
            *j = json_loads(data, JSON_ALLOW_NUL, &e);
            cr_assert_not_null(*j, "event data is not JSON: %s", data);
            return 0;
        }
        if (s->ended || s->c.eof)
            return UV_EOF;
        uint64_t now = th_now_ms();
        if (now >= end)
            return UV_ETIMEDOUT;
        th_conn_read_some(&s->c, (int)(end - now));
        sse_dechunk(s);
    }
}

/* Reads events until ms has n messages; asserts each event's id: matches its data. */
static void sse_until(sse_t *s, const char *room, msgs_t *ms, size_t n, int timeout_ms)
{
    uint64_t end = th_now_ms() + (uint64_t)timeout_ms;
    while (ms->n < n) {
        uint64_t now = th_now_ms();
        cr_assert_lt(now, end, "SSE: %zu of %zu messages after %d ms", ms->n, n, timeout_ms);
        json_t *j;
        uint64_t id;
        int rc = sse_next(s, &j, &id, (int)(end - now));
        if (rc == UV_ETIMEDOUT)
            continue;
        cr_assert_eq(rc, 0, "SSE: the stream ended after %zu of %zu messages", ms->n, n);
        msgs_add_json(ms, j, room, "SSE");
        cr_assert_eq(ms->m[ms->n - 1].id, id, "SSE: id: field %llu, data's id %llu",
                     (unsigned long long)id, (unsigned long long)ms->m[ms->n - 1].id);
    }
}

static void sse_close(sse_t *s)
{
    th_conn_close(&s->c);
    free(s->body);
}

/* ---- WebSocket ---- */

/* Opens /ws?QUERY and checks the 101. */
static void ws_open(th_conn_t *c, int port, const char *query)
{
    char req[1024];
    snprintf(req, sizeof(req),
             "GET /ws?%s HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             "Sec-WebSocket-Key: " WS_KEY "\r\nSec-WebSocket-Version: 13\r\n\r\n",
             query);
    raw_case = query;
    raw_upgrade_req(c, port, req, NULL, 0);
}

/* Reads text frames until ms has n messages (pings are skipped). */
static void ws_until(th_conn_t *c, const char *room, msgs_t *ms, size_t n, int timeout_ms)
{
    uint64_t end = th_now_ms() + (uint64_t)timeout_ms;
    while (ms->n < n) {
        uint64_t now = th_now_ms();
        cr_assert_lt(now, end, "WS: %zu of %zu messages after %d ms", ms->n, n, timeout_ms);
        rframe_t f;
        int rc = frame_read(c, &f, (int)(end - now));
        if (rc == UV_ETIMEDOUT)
            continue;
        cr_assert_eq(rc, 0, "WS: closed after %zu of %zu messages", ms->n, n);
        if (f.opcode == OP_PING || f.opcode == OP_PONG) {
            frame_free(&f);
            continue;
        }
        cr_assert_eq(f.opcode, OP_TEXT, "WS: opcode %d (%s)", f.opcode,
                     f.opcode == OP_CLOSE && f.len >= 2 ? (char *)f.payload + 2 : "");
        cr_assert(f.fin);
        json_error_t e;
        json_t *j = json_loadb((char *)f.payload, f.len, JSON_ALLOW_NUL, &e);
        cr_assert_not_null(j, "WS frame is not JSON: %s", f.payload);
        frame_free(&f);
        msgs_add_json(ms, j, room, "WS");
    }
}

/* The server closes with `code`: its close frame, our answer, then the TCP close. */
static void ws_expect_close(th_conn_t *c, int code)
{
    rframe_t f;
    do {
        cr_assert_eq(frame_read(c, &f, 5000), 0, "no close frame");
        if (f.opcode != OP_CLOSE)
            frame_free(&f);
    } while (f.opcode != OP_CLOSE);
    int got = f.len >= 2 ? f.payload[0] << 8 | f.payload[1] : -1;
    frame_free(&f);
    cr_assert_eq(got, code, "close code %d, expected %d", got, code);
    uint8_t cp[8];
    frame_send(c, FIN | OP_CLOSE, true, cp, close_payload(cp, code, NULL));
    cr_assert_eq(th_conn_wait_closed(c, 5000), 0, "TCP stays open after the close handshake");
}

static void ws_send_text(th_conn_t *c, const char *text, size_t len)
{
    frame_send(c, FIN | OP_TEXT, true, text, len);
}

/* ---- the page ---- */

Test(chat, the_page_is_served_from_memory_with_the_element_contract, .timeout = 30)
{
    th_app_t a = chat_start(NULL);
    th_res_t r;
    http(a.port, "GET", "/", NULL, NULL, 0, &r);
    cr_assert_eq(r.status, 200);
    cr_assert_str_eq(th_res_header(&r, "Content-Type"), "text/html; charset=utf-8");
    static const char *const needles[] = {
        "<!doctype html>",
        "id=\"room\"",
        "id=\"transport\"",
        "<option value=\"ws\"",
        "<option value=\"sse\"",
        "<option value=\"longpoll\"",
        "<option value=\"poll\"",
        "id=\"text\"",
        "id=\"send\"",
        "id=\"messages\"",
        "id=\"status\"",
        "textContent",
        "EventSource",
        "wait=25",
        "since=",
    };
    for (size_t i = 0; i < sizeof(needles) / sizeof(needles[0]); i++)
        cr_assert_not_null(strstr(r.body, needles[i]), "the page lacks %s", needles[i]);
    /* nothing from elsewhere: no script or style by URL, no CDN */
    cr_assert_null(strstr(r.body, "src="), "the page loads something by URL");
    cr_assert_null(strstr(r.body, "http://"));
    cr_assert_null(strstr(r.body, "https://"));
    cr_assert_null(strstr(r.body, "innerHTML"), "text goes in as textContent only");
    cr_assert_null(strstr(r.body, "@import"));
    cr_assert(r.body_len > 2000 && strstr(r.body, "</html>") != NULL, "the page is whole");
    th_res_free(&r);
    th_app_stop(&a);
}

/* ---- each transport alone ---- */

Test(chat, post_then_poll_gives_the_messages_above_since, .timeout = 30)
{
    th_app_t a = chat_start(NULL);
    msgs_t ms = {0};
    poll_room(a.port, "lobby", "since=0", &ms, NULL);
    cr_assert_eq(ms.n, 0, "a new room is empty");
    sent_t want[3] = {{0, "one", 3}, {0, "two", 3}, {0, "three", 5}};
    for (int i = 0; i < 3; i++) {
        want[i].id = post(a.port, "lobby", want[i].text);
        cr_assert_eq(want[i].id, (uint64_t)i + 1, "ids are 1, 2, 3 in a new room");
    }
    poll_room(a.port, "lobby", "since=0", &ms, NULL);
    expect_msgs(&ms, want, 3, "poll since=0");
    msgs_free(&ms);
    poll_room(a.port, "lobby", "", &ms, NULL); /* no since: the whole history */
    expect_msgs(&ms, want, 3, "poll");
    msgs_free(&ms);
    poll_room(a.port, "lobby", "since=1", &ms, NULL);
    expect_msgs(&ms, want + 1, 2, "poll since=1");
    msgs_free(&ms);
    poll_room(a.port, "lobby", "since=3", &ms, NULL);
    cr_assert_eq(ms.n, 0);
    /* rooms are apart: ids count per room */
    poll_room(a.port, "other", "since=0", &ms, NULL);
    cr_assert_eq(ms.n, 0);
    cr_assert_eq(post(a.port, "other", "x"), 1);
    th_app_stop(&a);
}

Test(chat, a_long_poll_is_answered_soon_after_a_publish, .timeout = 30)
{
    th_app_t a = chat_start(NULL);
    th_conn_t c;
    msgs_t ms = {0};
    lp_send(&c, a.port, "lobby", 0, "20");
    /* held: nothing within 300 ms */
    cr_assert_eq(th_conn_read_some(&c, 300), 0, "answered before any message: %s", c.buf);
    uint64_t t0 = th_now_ms();
    sent_t want = {post(a.port, "lobby", "wake up"), "wake up", 7};
    lp_read(&c, "lobby", &ms, 10000);
    uint64_t took = th_now_ms() - t0;
    cr_assert_lt(took, 5000, "answered %llu ms after the publish", (unsigned long long)took);
    expect_msgs(&ms, &want, 1, "long poll");
    th_conn_close(&c);
    msgs_free(&ms);
    th_app_stop(&a);
}

Test(chat, a_long_poll_with_something_newer_is_answered_at_once, .timeout = 30)
{
    th_app_t a = chat_start(NULL);
    sent_t want[2] = {{post(a.port, "lobby", "a"), "a", 1}, {post(a.port, "lobby", "b"), "b", 1}};
    th_conn_t c;
    msgs_t ms = {0};
    lp_send(&c, a.port, "lobby", 1, "20");
    uint64_t took = lp_read(&c, "lobby", &ms, 10000);
    cr_assert_lt(took, 5000, "held %llu ms with a message to give", (unsigned long long)took);
    expect_msgs(&ms, want + 1, 1, "long poll since=1");
    th_conn_close(&c);
    msgs_free(&ms);
    th_app_stop(&a);
}

Test(chat, a_long_poll_times_out_with_an_empty_array, .timeout = 30)
{
    th_app_t a = chat_start(NULL);
    th_conn_t c;
    msgs_t ms = {0};
    lp_send(&c, a.port, "lobby", 0, "1");
    uint64_t took = lp_read(&c, "lobby", &ms, 10000);
    cr_assert_eq(ms.n, 0);
    cr_assert_geq(took, 700, "wait=1 answered after %llu ms", (unsigned long long)took);
    cr_assert_lt(took, 6000, "wait=1 answered after %llu ms", (unsigned long long)took);
    th_conn_close(&c);
    /* a fraction of a second too */
    lp_send(&c, a.port, "lobby", 0, "0.3");
    took = lp_read(&c, "lobby", &ms, 10000);
    cr_assert_eq(ms.n, 0);
    cr_assert_geq(took, 150, "wait=0.3 answered after %llu ms", (unsigned long long)took);
    cr_assert_lt(took, 5000, "wait=0.3 answered after %llu ms", (unsigned long long)took);
    th_conn_close(&c);
    th_app_stop(&a);
}

Test(chat, clients_leaving_held_long_polls_are_forgotten, .timeout = 40)
{
    th_app_t a = chat_start(NULL);
    enum { N = 20 };
    th_conn_t c[N];
    for (int i = 0; i < N; i++)
        lp_send(&c[i], a.port, "lobby", 0, "30");
    th_sleep_ms(200); /* all held */
    for (int i = 0; i < N; i++)
        if (i % 2)
            th_conn_abort(&c[i]); /* a reset: the client is gone */
        else
            th_conn_close(&c[i]); /* a FIN, then gone when the answer finds the socket closed */
    th_sleep_ms(200);
    /* the publish that would have answered them finds them gone; the server goes on */
    sent_t want = {post(a.port, "lobby", "after"), "after", 5};
    msgs_t ms = {0};
    th_conn_t k;
    lp_send(&k, a.port, "lobby", 0, "20");
    lp_read(&k, "lobby", &ms, 5000);
    expect_msgs(&ms, &want, 1, "a later long poll");
    th_conn_close(&k);
    msgs_free(&ms);
    /* and a long poll held then, woken by a publish, is answered: the room's holds are sound */
    lp_send(&k, a.port, "lobby", 1, "20");
    th_sleep_ms(100);
    sent_t want2 = {post(a.port, "lobby", "again"), "again", 5};
    lp_read(&k, "lobby", &ms, 5000);
    expect_msgs(&ms, &want2, 1, "a held long poll after the others left");
    th_conn_close(&k);
    msgs_free(&ms);
    th_app_stop(&a);
}

Test(chat, sse_streams_the_history_then_live_messages, .timeout = 30)
{
    th_app_t a = chat_start(NULL);
    sent_t want[4] = {{0, "h1", 2}, {0, "h2", 2}, {0, "live 1", 6}, {0, "live 2", 6}};
    want[0].id = post(a.port, "lobby", want[0].text);
    want[1].id = post(a.port, "lobby", want[1].text);
    sse_t s;
    sse_open(&s, a.port, "lobby", NULL);
    msgs_t ms = {0};
    sse_until(&s, "lobby", &ms, 2, 5000);
    want[2].id = post(a.port, "lobby", want[2].text);
    want[3].id = post(a.port, "lobby", want[3].text);
    sse_until(&s, "lobby", &ms, 4, 5000);
    expect_msgs(&ms, want, 4, "SSE");
    sse_close(&s);
    msgs_free(&ms);
    th_app_stop(&a);
}

Test(chat, websocket_streams_the_history_then_live_and_publishes_its_text_frames, .timeout = 30)
{
    th_app_t a = chat_start(NULL);
    sent_t want[4] = {{0, "h1", 2}, {0, "by POST", 7}, {3, "by WS", 5}, {4, "by WS too", 9}};
    want[0].id = post(a.port, "lobby", want[0].text);
    th_conn_t w;
    ws_open(&w, a.port, "room=lobby");
    msgs_t ms = {0};
    ws_until(&w, "lobby", &ms, 1, 5000);
    want[1].id = post(a.port, "lobby", want[1].text);
    ws_until(&w, "lobby", &ms, 2, 5000);
    ws_send_text(&w, want[2].text, want[2].len);
    ws_until(&w, "lobby", &ms, 3, 5000); /* the sender gets its own message */
    ws_send_text(&w, want[3].text, want[3].len);
    ws_until(&w, "lobby", &ms, 4, 5000);
    expect_msgs(&ms, want, 4, "WS");
    msgs_t polled = {0};
    poll_room(a.port, "lobby", "since=0", &polled, NULL);
    expect_msgs(&polled, want, 4, "poll after WS publishes");
    /* a clean close, answered */
    uint8_t cp[8];
    frame_send(&w, FIN | OP_CLOSE, true, cp, close_payload(cp, 1000, NULL));
    rframe_t f;
    do {
        cr_assert_eq(frame_read(&w, &f, 5000), 0);
        frame_free(&f);
    } while (f.opcode != OP_CLOSE);
    cr_assert_eq(th_conn_wait_closed(&w, 5000), 0);
    th_conn_close(&w);
    msgs_free(&ms);
    msgs_free(&polled);
    th_app_stop(&a);
}

Test(chat, a_binary_websocket_frame_closes_with_1003_and_publishes_nothing, .timeout = 30)
{
    th_app_t a = chat_start(NULL);
    th_conn_t w;
    ws_open(&w, a.port, "room=lobby");
    frame_send(&w, FIN | OP_BIN, true, "bin", 3);
    ws_expect_close(&w, 1003);
    th_conn_close(&w);
    msgs_t ms = {0};
    poll_room(a.port, "lobby", "since=0", &ms, NULL);
    cr_assert_eq(ms.n, 0, "a binary frame was published");
    th_app_stop(&a);
}

/* ---- all at once ---- */

/* A poller, a long poller, an SSE stream and a WebSocket in one room; messages published
 * by POST on fresh connections, by POST on a kept-alive one, and by the WebSocket: each
 * subscriber gets every message once, in id order. */
Test(chat, all_four_transports_in_one_room_get_every_message_once_in_order, .timeout = 60)
{
    th_app_t a = chat_start(NULL);
    enum { N = 30 };
    sse_t s;
    sse_open(&s, a.port, "mix", "since=0");
    th_conn_t w;
    ws_open(&w, a.port, "room=mix&since=0");
    th_conn_t keep; /* POSTs on one kept-alive connection */
    cr_assert_eq(th_conn_open(&keep, a.port), 0);
    sent_t want[N];
    char texts[N][48];
    msgs_t ws_got = {0}, sse_got = {0};
    for (int i = 0; i < N; i++) {
        snprintf(texts[i], sizeof(texts[i]), "message %d via %s", i,
                 i % 3 == 0   ? "post"
                 : i % 3 == 1 ? "keep-alive"
                              : "ws");
        want[i] = (sent_t){(uint64_t)i + 1, texts[i], strlen(texts[i])};
        if (i % 3 == 0) {
            cr_assert_eq(post(a.port, "mix", texts[i]), want[i].id);
        } else if (i % 3 == 1) {
            char *body = text_body(texts[i], want[i].len);
            char req[512];
            snprintf(req, sizeof(req),
                     "POST /rooms/mix/messages HTTP/1.1\r\nHost: t\r\n"
                     "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
                     strlen(body), body);
            free(body);
            cr_assert_eq(th_conn_sends(&keep, req), 0);
            char idbody[32];
            snprintf(idbody, sizeof(idbody), "{\"id\":%d}", i + 1);
            th_expect_res(&keep, 201, idbody);
        } else {
            ws_send_text(&w, texts[i], want[i].len);
        }
        /* the WebSocket sees each before the next is sent, so ids follow i */
        ws_until(&w, "mix", &ws_got, (size_t)i + 1, 5000);
    }
    sse_until(&s, "mix", &sse_got, N, 10000);
    msgs_t polled = {0}, long_polled = {0};
    poll_until(a.port, "mix", &polled, N, 10000);
    long_poll_until(a.port, "mix", &long_polled, N, 10000);
    expect_msgs(&ws_got, want, N, "WS");
    expect_msgs(&sse_got, want, N, "SSE");
    expect_msgs(&polled, want, N, "poll");
    expect_msgs(&long_polled, want, N, "long poll");
    /* and nothing more came */
    json_t *j;
    uint64_t id;
    cr_assert_eq(sse_next(&s, &j, &id, 300), UV_ETIMEDOUT, "SSE: a message twice");
    rframe_t f;
    cr_assert_eq(frame_read(&w, &f, 300), UV_ETIMEDOUT, "WS: a message twice");
    sse_close(&s);
    th_conn_close(&w);
    th_conn_close(&keep);
    msgs_free(&ws_got);
    msgs_free(&sse_got);
    msgs_free(&polled);
    msgs_free(&long_polled);
    th_app_stop(&a);
}

/* ---- resuming ---- */

Test(chat, subscribers_resume_after_since_or_last_event_id, .timeout = 30)
{
    th_app_t a = chat_start(NULL);
    sent_t want[6];
    static const char *const texts[6] = {"m1", "m2", "m3", "m4", "m5", "m6"};
    for (int i = 0; i < 6; i++)
        want[i] = (sent_t){post(a.port, "lobby", texts[i]), texts[i], 2};
    msgs_t ms = {0};
    /* SSE: Last-Event-ID (what EventSource sends when it reconnects) */
    sse_t s;
    sse_open_with(&s, a.port, "lobby", NULL, "Last-Event-ID: 4\r\n", 0);
    sse_until(&s, "lobby", &ms, 2, 5000);
    expect_msgs(&ms, want + 4, 2, "SSE Last-Event-ID: 4");
    sse_close(&s);
    msgs_free(&ms);
    /* SSE: ?since= */
    sse_open(&s, a.port, "lobby", "since=3");
    sse_until(&s, "lobby", &ms, 3, 5000);
    expect_msgs(&ms, want + 3, 3, "SSE since=3");
    sse_close(&s);
    msgs_free(&ms);
    /* SSE: Last-Event-ID wins over ?since= (a reconnect of a stream opened with since) */
    sse_open_with(&s, a.port, "lobby", "since=1", "Last-Event-ID: 5\r\n", 0);
    sse_until(&s, "lobby", &ms, 1, 5000);
    expect_msgs(&ms, want + 5, 1, "SSE since=1, Last-Event-ID: 5");
    sse_close(&s);
    msgs_free(&ms);
    /* WebSocket: ?since= */
    th_conn_t w;
    ws_open(&w, a.port, "room=lobby&since=2");
    ws_until(&w, "lobby", &ms, 4, 5000);
    expect_msgs(&ms, want + 2, 4, "WS since=2");
    th_conn_close(&w);
    msgs_free(&ms);
    /* poll and long poll: since= */
    poll_room(a.port, "lobby", "since=5", &ms, NULL);
    expect_msgs(&ms, want + 5, 1, "poll since=5");
    msgs_free(&ms);
    /* and a live message reaches a stream resumed at the end */
    sse_open_with(&s, a.port, "lobby", NULL, "Last-Event-ID: 6\r\n", 0);
    sent_t more = {post(a.port, "lobby", "m7"), "m7", 2};
    sse_until(&s, "lobby", &ms, 1, 5000);
    expect_msgs(&ms, &more, 1, "SSE resumed at the end");
    sse_close(&s);
    msgs_free(&ms);
    th_app_stop(&a);
}

Test(chat, history_is_bounded_and_a_poller_behind_is_told_what_it_missed, .timeout = 30)
{
    th_app_t a = chat_start("--history", "5", NULL);
    sent_t want[12];
    char texts[12][16];
    for (int i = 0; i < 12; i++) {
        snprintf(texts[i], sizeof(texts[i]), "n%d", i + 1);
        want[i] = (sent_t){post(a.port, "lobby", texts[i]), texts[i], strlen(texts[i])};
    }
    msgs_t ms = {0};
    th_res_t r;
    poll_room(a.port, "lobby", "since=2", &ms, &r); /* 3..7 are gone */
    expect_msgs(&ms, want + 7, 5, "poll since=2 with --history 5");
    const char *missed = th_res_header(&r, "X-Hub-Missed");
    cr_assert(missed != NULL && strcmp(missed, "5") == 0, "X-Hub-Missed: %s",
              missed ? missed : "(none)");
    th_res_free(&r);
    msgs_free(&ms);
    /* a poller that kept up is told nothing */
    poll_room(a.port, "lobby", "since=9", &ms, &r);
    expect_msgs(&ms, want + 9, 3, "poll since=9");
    cr_assert_null(th_res_header(&r, "X-Hub-Missed"));
    th_res_free(&r);
    msgs_free(&ms);
    /* the streams get what is kept */
    sse_t s;
    sse_open(&s, a.port, "lobby", "since=0");
    sse_until(&s, "lobby", &ms, 5, 5000);
    expect_msgs(&ms, want + 7, 5, "SSE since=0 with --history 5");
    sse_close(&s);
    msgs_free(&ms);
    th_app_stop(&a);
}

Test(chat, a_since_above_the_rooms_last_id_is_answered_as_a_reset, .timeout = 30)
{
    th_app_t a = chat_start(NULL);
    sent_t want = {post(a.port, "lobby", "only"), "only", 4};
    msgs_t ms = {0};
    th_res_t r;
    poll_room(a.port, "lobby", "since=40", &ms, &r); /* the server started again, say */
    expect_msgs(&ms, &want, 1, "poll since=40");
    const char *reset = th_res_header(&r, "X-Hub-Reset");
    cr_assert(reset != NULL && strcmp(reset, "1") == 0, "X-Hub-Reset: %s", reset ? reset : "-");
    th_res_free(&r);
    msgs_free(&ms);
    th_app_stop(&a);
}

/* ---- slow readers and workers ---- */

/* An event stream whose reader never reads while a flood goes by is cut off (its bytes
 * would otherwise pile up without bound); a reading stream and a WebSocket in the same
 * room get every message all the same. */
Test(chat, an_sse_reader_that_stops_reading_is_cut_off_while_others_get_everything, .timeout = 120)
{
    th_app_t a = chat_start(NULL);
    enum { N = 400, TEXT = 32 * 1024 };
    sse_t slow, good;
    sse_open_with(&slow, a.port, "flood", "since=0", NULL, 4096);
    sse_open(&good, a.port, "flood", "since=0");
    th_conn_t w;
    ws_open(&w, a.port, "room=flood&since=0");
    char *text = malloc(TEXT);
    cr_assert_not_null(text);
    msgs_t sse_got = {0}, ws_got = {0};
    for (int i = 0; i < N; i++) {
        memset(text, 'a' + i % 26, TEXT);
        snprintf(text, 16, "%06d", i);
        text[6] = ' ';
        cr_assert_eq(post_text(a.port, "flood", text, TEXT), (uint64_t)i + 1);
        sse_until(&good, "flood", &sse_got, (size_t)i + 1, 10000);
        ws_until(&w, "flood", &ws_got, (size_t)i + 1, 10000);
        cr_assert_eq(sse_got.m[i].len, (size_t)TEXT);
        cr_assert_eq(ws_got.m[i].len, (size_t)TEXT);
        cr_assert(memcmp(sse_got.m[i].text, text, TEXT) == 0);
        cr_assert(memcmp(ws_got.m[i].text, text, TEXT) == 0);
        free(sse_got.m[i].text); /* keep the ids only */
        sse_got.m[i].text = NULL;
        free(ws_got.m[i].text);
        ws_got.m[i].text = NULL;
        if (i > 0) {
            cr_assert_eq(sse_got.m[i].id, sse_got.m[i - 1].id + 1);
            cr_assert_eq(ws_got.m[i].id, ws_got.m[i - 1].id + 1);
        }
    }
    /* now read the slow one: what was queued for it, then the end, well before N */
    size_t events = 0;
    uint64_t last = 0, end = th_now_ms() + 60000;
    int rc;
    for (;;) {
        json_t *j;
        uint64_t id;
        rc = sse_next(&slow, &j, &id, 1000);
        if (rc == 0) {
            events++;
            cr_assert_eq(id, last + 1, "the slow stream skipped from %llu to %llu",
                         (unsigned long long)last, (unsigned long long)id);
            last = id;
            json_decref(j);
            continue;
        }
        if (rc == UV_EOF || th_now_ms() >= end)
            break;
    }
    cr_assert_eq(rc, UV_EOF, "the slow stream did not end within 60 s (%zu events)", events);
    cr_assert_lt(events, (size_t)N, "the slow reader got all %d messages: never cut off", N);
    /* the server goes on */
    msgs_t ms = {0};
    poll_room(a.port, "flood", "since=399", &ms, NULL);
    cr_assert_eq(ms.n, 1);
    msgs_free(&ms);
    free(text);
    sse_close(&slow);
    sse_close(&good);
    th_conn_close(&w);
    msgs_free(&sse_got);
    msgs_free(&ws_got);
    th_app_stop(&a);
}

/* With two workers, connections land on either (SO_REUSEPORT spreads them by address):
 * messages posted on many connections reach subscribers on many, each message once and
 * in id order. */
/* Every SSE and WebSocket subscriber of room "shared" got the n messages of want, once
 * each, in order; then they are closed. */
static void expect_everyone_got(sse_t *s, int nsse, th_conn_t *w, int nws, const sent_t *want,
                                size_t n)
{
    for (int i = 0; i < nsse; i++) {
        msgs_t ms = {0};
        sse_until(&s[i], "shared", &ms, n, 10000);
        expect_msgs(&ms, want, n, "SSE subscriber");
        msgs_free(&ms);
        sse_close(&s[i]);
    }
    for (int i = 0; i < nws; i++) {
        msgs_t ms = {0};
        ws_until(&w[i], "shared", &ms, n, 10000);
        expect_msgs(&ms, want, n, "WS subscriber");
        msgs_free(&ms);
        th_conn_close(&w[i]);
    }
}

Test(chat, two_workers_share_the_rooms, .timeout = 60)
{
    th_app_t a = chat_start("--workers", "2", NULL);
    cr_assert_not_null(strstr(a.line, "with 2 workers"), "%s", a.line);
    enum { SUBS = 6, WSS = 4, N = 40 };
    sse_t s[SUBS];
    th_conn_t w[WSS];
    for (int i = 0; i < SUBS; i++)
        sse_open(&s[i], a.port, "shared", "since=0");
    for (int i = 0; i < WSS; i++)
        ws_open(&w[i], a.port, "room=shared&since=0");
    sent_t want[N];
    char texts[N][16];
    for (int i = 0; i < N; i++) {
        snprintf(texts[i], sizeof(texts[i]), "w%d", i);
        want[i] = (sent_t){0, texts[i], strlen(texts[i])};
        if (i % 4 == 3) { /* published by a WebSocket, which may be on either worker */
            ws_send_text(&w[i % WSS], texts[i], want[i].len);
            msgs_t one = {0};
            poll_until(a.port, "shared", &one, (size_t)i + 1, 5000); /* numbered before the next */
            cr_assert_eq(one.n, (size_t)i + 1);
            want[i].id = one.m[i].id;
            msgs_free(&one);
        } else {
            want[i].id = post(a.port, "shared", texts[i]); /* a new connection each */
        }
        cr_assert_eq(want[i].id, (uint64_t)i + 1, "ids count up across workers");
    }
    expect_everyone_got(s, SUBS, w, WSS, want, N);
    th_app_stop(&a);
}

/* Copies of chat in several processes on one port (--processes), their rooms shared
 * through Redis: every subscriber, on whichever copy, gets every message once, in order. */
Test(chat, processes_share_the_rooms_through_redis, .timeout = 60)
{
    tr_redis_t *r = tr_redis_start();
    th_app_t a = chat_start("--processes", "3", "--redis", tr_redis_url(r), NULL);
    cr_assert_not_null(strstr(a.line, "in each of 3 processes"), "%s", a.line);
    /* Each copy connects to Redis on its own after it listens (a copy not yet connected
     * answers 503): 30 posts in a row on new connections, which the kernel spreads over
     * the copies, say that all three are. */
    int ok = 0;
    for (int tries = 0; ok < 30 && tries < 400; tries++) {
        th_res_t res;
        static const char body[] = "{\"text\":\"ready?\"}";
        http(a.port, "POST", "/rooms/warmup/messages", "Content-Type: application/json\r\n",
             body, sizeof(body) - 1, &res);
        ok = res.status == 201 ? ok + 1 : 0;
        if (res.status != 201)
            usleep(50 * 1000);
        th_res_free(&res);
    }
    cr_assert_eq(ok, 30, "the copies did not all reach Redis");
    enum { SUBS = 6, WSS = 6, N = 30 };
    sse_t s[SUBS];
    th_conn_t w[WSS];
    for (int i = 0; i < SUBS; i++)
        sse_open(&s[i], a.port, "shared", "since=0");
    for (int i = 0; i < WSS; i++)
        ws_open(&w[i], a.port, "room=shared&since=0");
    sent_t want[N];
    char texts[N][16];
    for (int i = 0; i < N; i++) {
        snprintf(texts[i], sizeof(texts[i]), "p%d", i);
        want[i] = (sent_t){0, texts[i], strlen(texts[i])};
        want[i].id = post(a.port, "shared", texts[i]); /* a new connection each: any copy */
        cr_assert_eq(want[i].id, (uint64_t)i + 1, "ids count up across processes");
    }
    expect_everyone_got(s, SUBS, w, WSS, want, N);
    th_app_stop(&a); /* SIGTERM to the supervisor stops every copy: exit 0 */
    tr_redis_stop(r);
}

Test(chat, processes_need_redis, .timeout = 30)
{
    th_app_run_t r;
    th_app_run(&r, "chat", 5000, "--port", "0", "--processes", "2", NULL);
    cr_assert_eq(r.code, 2, "stderr: %s", r.err);
    th_app_run(&r, "chat", 5000, "--processes", "2", NULL);
    cr_assert_eq(r.code, 2, "stderr: %s", r.err);
    cr_assert_not_null(strstr(r.err, "--processes needs --redis"), "%s", r.err);
}

/* ---- what is refused ---- */

/* Each bad body gets 422 in FastAPI's shape, naming where it is wrong, and publishes
 * nothing. */
Test(chat, each_bad_post_body_gets_422_and_publishes_nothing, .timeout = 60)
{
    th_app_t a = chat_start("--max-text", "100", NULL);
    static const struct {
        const char *name, *ctype, *body;
        const char *type, *loc; /* loc as JSON */
    } cases[] = {
        {"not JSON", "application/json", "{\"text\": ", "json_invalid", NULL},
        {"not JSON either", "application/json", "nope", "json_invalid", NULL},
        {"a trailing comma", "application/json", "{\"text\":\"a\",}", "json_invalid", NULL},
        {"two values", "application/json", "{} {}", "json_invalid", NULL},
        {"not UTF-8", "application/json", "{\"text\":\"\xff\"}", "json_invalid", NULL},
        {"a lone surrogate", "application/json", "{\"text\":\"\\ud800\"}", "json_invalid", NULL},
        {"an array", "application/json", "[{\"text\":\"a\"}]", "model_attributes_type",
         "[\"body\"]"},
        {"a number", "application/json", "5", "model_attributes_type", "[\"body\"]"},
        {"a string", "application/json", "\"text\"", "model_attributes_type", "[\"body\"]"},
        {"null", "application/json", "null", "model_attributes_type", "[\"body\"]"},
        {"an empty body", "application/json", "", "missing", "[\"body\"]"},
        {"no text", "application/json", "{}", "missing", "[\"body\",\"text\"]"},
        {"Text", "application/json", "{\"Text\":\"a\"}", "missing", "[\"body\",\"text\"]"},
        {"text 5", "application/json", "{\"text\":5}", "string_type", "[\"body\",\"text\"]"},
        {"text null", "application/json", "{\"text\":null}", "string_type", "[\"body\",\"text\"]"},
        {"text object", "application/json", "{\"text\":{\"a\":1}}", "string_type",
         "[\"body\",\"text\"]"},
        {"text array", "application/json", "{\"text\":[\"a\"]}", "string_type",
         "[\"body\",\"text\"]"},
        {"text true", "application/json", "{\"text\":true}", "string_type", "[\"body\",\"text\"]"},
        {"text past --max-text", "application/json",
         "{\"text\":\"0123456789012345678901234567890123456789012345678901234567890123456789"
         "0123456789012345678901234567890\"}",
         "string_too_long", "[\"body\",\"text\"]"},
        {"text/plain", "text/plain", "{\"text\":\"a\"}", "model_attributes_type", "[\"body\"]"},
        {"a form", "application/x-www-form-urlencoded", "text=a", "model_attributes_type",
         "[\"body\"]"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char headers[128];
        snprintf(headers, sizeof(headers), "Content-Type: %s\r\n", cases[i].ctype);
        th_res_t r;
        http(a.port, "POST", "/rooms/lobby/messages", headers, cases[i].body, strlen(cases[i].body),
             &r);
        json_error_t e;
        json_t *j = NULL, *loc = NULL, *want_loc = NULL;
        const char *ct = th_res_header(&r, "Content-Type");
        TH_ROW_CHECK(cases[i].name, r.status == 422, "status %d: %s", r.status, r.body);
        TH_ROW_CHECK(cases[i].name, ct && strncmp(ct, "application/json", 16) == 0,
                     "Content-Type: %s", ct ? ct : "-");
        j = json_loadb(r.body, r.body_len, 0, &e);
        json_t *d = json_array_get(json_object_get(j, "detail"), 0);
        TH_ROW_CHECK(cases[i].name, json_array_size(json_object_get(j, "detail")) == 1,
                     "detail: %s", r.body);
        TH_ROW_CHECK(cases[i].name, json_object_get(d, "input") != NULL, "no input: %s", r.body);
        TH_ROW_CHECK(cases[i].name, json_is_string(json_object_get(d, "msg")), "no msg: %s",
                     r.body);
        TH_ROW_CHECK(cases[i].name,
                     strcmp(json_string_value(json_object_get(d, "type")) ?: "", cases[i].type) ==
                         0,
                     "type: %s", r.body);
        loc = json_object_get(d, "loc");
        TH_ROW_CHECK(cases[i].name,
                     json_is_array(loc) &&
                         strcmp(json_string_value(json_array_get(loc, 0)) ?: "", "body") == 0,
                     "loc: %s", r.body);
        if (strcmp(cases[i].type, "json_invalid") == 0) /* where the parser stopped */
            TH_ROW_CHECK(cases[i].name,
                         json_array_size(loc) == 2 && json_is_integer(json_array_get(loc, 1)) &&
                             json_integer_value(json_array_get(loc, 1)) >= 0 &&
                             json_integer_value(json_array_get(loc, 1)) <=
                                 (json_int_t)strlen(cases[i].body),
                         "loc: %s", r.body);
        if (cases[i].loc != NULL) {
            want_loc = json_loads(cases[i].loc, 0, &e);
            TH_ROW_CHECK(cases[i].name, json_equal(loc, want_loc), "loc: %s, expected %s", r.body,
                         cases[i].loc);
        }
    out:
        json_decref(j);
        json_decref(want_loc);
        th_res_free(&r);
    }
    /* not one was published; a good one still is, as id 1 */
    msgs_t ms = {0};
    poll_room(a.port, "lobby", "since=0", &ms, NULL);
    cr_assert_eq(ms.n, 0, "a refused body was published");
    cr_assert_eq(post(a.port, "lobby", "fine"), 1);
    /* exactly --max-text bytes is fine; JSON escapes count as the bytes they stand for */
    char hundred[101];
    memset(hundred, 'x', 100);
    hundred[100] = '\0';
    cr_assert_eq(post(a.port, "lobby", hundred), 2);
    th_app_stop(&a);
}

Test(chat, bad_rooms_and_bad_queries_get_422, .timeout = 30)
{
    th_app_t a = chat_start(NULL);
    char long_room[200], target[512];
    memset(long_room, 'r', 129);
    long_room[129] = '\0';
    static const struct {
        const char *method, *target, *loc; /* target NULL: the room is too long */
        const char *suffix;
    } cases[] = {
        {"POST", NULL, "[\"path\",\"room\"]", "messages"},
        {"GET", NULL, "[\"path\",\"room\"]", "messages"},
        {"GET", NULL, "[\"path\",\"room\"]", "events"},
        {"GET", "/rooms/%ff/messages", "[\"path\",\"room\"]", NULL},
        {"GET", "/rooms/lobby/messages?since=abc", "[\"query\",\"since\"]", NULL},
        {"GET", "/rooms/lobby/messages?since=-1", "[\"query\",\"since\"]", NULL},
        {"GET", "/rooms/lobby/messages?since=99999999999999999999999", "[\"query\",\"since\"]",
         NULL},
        {"GET", "/rooms/lobby/messages?since=1&wait=x", "[\"query\",\"wait\"]", NULL},
        {"GET", "/rooms/lobby/messages?since=1&wait=-1", "[\"query\",\"wait\"]", NULL},
        {"GET", "/rooms/lobby/messages?since=1&wait=1.", "[\"query\",\"wait\"]", NULL},
        {"GET", "/rooms/lobby/events?since=x", "[\"query\",\"since\"]", NULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        if (cases[i].target != NULL)
            snprintf(target, sizeof(target), "%s", cases[i].target);
        else
            snprintf(target, sizeof(target), "/rooms/%s/%s", long_room, cases[i].suffix);
        bool post_it = strcmp(cases[i].method, "POST") == 0;
        th_res_t r;
        http(a.port, cases[i].method, target, post_it ? "Content-Type: application/json\r\n" : NULL,
             post_it ? "{\"text\":\"a\"}" : NULL, post_it ? 12 : 0, &r);
        json_error_t e;
        json_t *j = json_loadb(r.body, r.body_len, 0, &e), *want = json_loads(cases[i].loc, 0, &e);
        json_t *loc = json_object_get(json_array_get(json_object_get(j, "detail"), 0), "loc");
        TH_ROW_CHECK(target, r.status == 422, "status %d: %s", r.status, r.body);
        TH_ROW_CHECK(target, json_equal(loc, want), "loc: %s, expected %s", r.body, cases[i].loc);
    out:
        json_decref(j);
        json_decref(want);
        th_res_free(&r);
    }
    th_res_t r;
    http(a.port, "GET", "/rooms/lobby/events", "Last-Event-ID: x\r\n", NULL, 0, &r);
    cr_assert_eq(r.status, 422, "Last-Event-ID: x gets %d", r.status);
    th_res_free(&r);
    /* 128 bytes is a room */
    long_room[128] = '\0';
    cr_assert_eq(post(a.port, long_room, "edge"), 1);
    /* the WebSocket's handshake is refused for a missing, empty or too long room, or a
     * since that is not a number */
    char too_long[160] = "room=";
    memset(too_long + 5, 'r', 129); /* one byte too many */
    const char *const ws_queries[] = {"",         "since=0", "room=", "room=lobby&since=x",
                                      "room=%ff", too_long};
    for (size_t i = 0; i < sizeof(ws_queries) / sizeof(ws_queries[0]); i++) {
        const char *q = ws_queries[i];
        char req[1024];
        snprintf(req, sizeof(req),
                 "GET /ws?%s HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 "Sec-WebSocket-Key: " WS_KEY "\r\nSec-WebSocket-Version: 13\r\n\r\n",
                 q);
        th_res_t wr;
        cr_assert_eq(th_request(a.port, req, &wr), 0);
        cr_assert_eq(wr.status, 422, "/ws?%s: %d", q, wr.status);
        th_res_free(&wr);
    }
    msgs_t ms = {0};
    poll_room(a.port, "lobby", "since=0", &ms, NULL);
    cr_assert_eq(ms.n, 0);
    th_app_stop(&a);
}

/* ---- texts that are hard to carry ---- */

Test(chat, hard_texts_round_trip_through_post_poll_sse_and_websocket, .timeout = 60)
{
    th_app_t a = chat_start(NULL);
    enum { LONG = 5000 };
    static char controls[33], longtext[LONG + 1];
    for (int i = 0; i < 32; i++)
        controls[i] = (char)(i + 1 == 32 ? 0x7f : i + 1);
    for (int i = 0; i < LONG; i++)
        longtext[i] = "abc\"\\\n\x01\xc3\xa9"[i % 9]; /* é split nowhere: 9 bytes a round */
    longtext[LONG - LONG % 9] = '\0';
    const struct {
        const char *text;
        size_t len;
    } texts[] = {
#define T(lit) {lit, sizeof(lit) - 1}
        T(""),
        T("a\0b"),
        T("\0"),
        T("\"quoted\" and \\backslashed\\"),
        T("line 1\nline 2\r\nline 3\r"),
        {controls, 32},
        T("\xf0\x9f\x98\x80 astral \xf0\x9d\x84\x9e"),
        T("\xe2\x80\xa8\xe2\x80\xa9 (U+2028, U+2029)"),
        T("</script><script>alert(1)</script><b>&amp;</b>"),
        T("data: injected\n\nid: 999\n\nevent: x"),
        T("{\"id\":1,\"room\":\"x\",\"text\":\"y\"}"),
#undef T
        {longtext, strlen(longtext)},
    };
    enum { N = sizeof(texts) / sizeof(texts[0]) };
    sse_t s;
    sse_open(&s, a.port, "hard", "since=0");
    th_conn_t w;
    ws_open(&w, a.port, "room=hard&since=0");
    sent_t want[2 * N];
    msgs_t ws_got = {0};
    for (int i = 0; i < N; i++) {
        want[i] = (sent_t){post_text(a.port, "hard", texts[i].text, texts[i].len), texts[i].text,
                           texts[i].len};
        ws_until(&w, "hard", &ws_got, (size_t)i + 1, 5000);
    }
    /* the same texts sent as WebSocket text frames */
    for (int i = 0; i < N; i++) {
        ws_send_text(&w, texts[i].text, texts[i].len);
        ws_until(&w, "hard", &ws_got, (size_t)N + i + 1, 5000);
        want[N + i] = (sent_t){(uint64_t)(N + i + 1), texts[i].text, texts[i].len};
    }
    expect_msgs(&ws_got, want, 2 * N, "WS");
    msgs_t sse_got = {0}, polled = {0}, long_polled = {0};
    sse_until(&s, "hard", &sse_got, 2 * N, 5000);
    expect_msgs(&sse_got, want, 2 * N, "SSE");
    poll_until(a.port, "hard", &polled, 2 * N, 5000);
    expect_msgs(&polled, want, 2 * N, "poll");
    long_poll_until(a.port, "hard", &long_polled, 2 * N, 5000);
    expect_msgs(&long_polled, want, 2 * N, "long poll");
    sse_close(&s);
    th_conn_close(&w);
    msgs_free(&ws_got);
    msgs_free(&sse_got);
    msgs_free(&polled);
    msgs_free(&long_polled);
    th_app_stop(&a);
}

/* ---- shutting down with subscribers of every kind ---- */

/* SIGTERM ends every subscriber at once, each in its own way — a held long poll is
 * answered [], an event stream ends, a WebSocket is told 1001 — rather than holding the
 * graceful shutdown for its whole grace period (5 s); then chat exits 0. */
Test(chat, sigterm_ends_subscribers_of_every_kind_at_once_then_exits_0, .timeout = 30)
{
    th_app_t a = chat_start(NULL);
    post(a.port, "lobby", "x");
    sse_t s;
    sse_open(&s, a.port, "lobby", "since=1");
    th_conn_t w, lp;
    ws_open(&w, a.port, "room=lobby&since=1");
    lp_send(&lp, a.port, "lobby", 1, "30");
    th_sleep_ms(200); /* all three held */
    cr_assert_eq(kill(a.pid, SIGTERM), 0);
    msgs_t ms = {0};
    uint64_t took = lp_read(&lp, "lobby", &ms, 3000);
    cr_assert_eq(ms.n, 0, "the held long poll is answered []");
    cr_assert_lt(took, 3000);
    json_t *j;
    uint64_t id;
    cr_assert_eq(sse_next(&s, &j, &id, 3000), UV_EOF, "the event stream ends");
    cr_assert(s.ended || s.c.eof);
    rframe_t f;
    cr_assert_eq(frame_read(&w, &f, 3000), 0, "the WebSocket is closed");
    cr_assert_eq(f.opcode, OP_CLOSE);
    cr_assert(f.len >= 2 && (f.payload[0] << 8 | f.payload[1]) == SQ_WS_GOING_AWAY, "close code %d",
              f.len >= 2 ? f.payload[0] << 8 | f.payload[1] : -1);
    frame_free(&f);
    uint8_t cp[8];
    frame_send(&w, FIN | OP_CLOSE, true, cp, close_payload(cp, 1001, NULL));
    int st = th_app_wait(a.pid, 8000);
    cr_assert_neq(st, -1, "chat did not exit within 8 s of SIGTERM");
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "status %d", st);
    sse_close(&s);
    th_conn_close(&w);
    th_conn_close(&lp);
}

/* ---- start-up, through the binary ---- */

static void expect_failed_start(const th_app_run_t *r, const char *what, const char *reason)
{
    cr_assert_not(r->timed_out, "%s: still running after %llu ms; stderr: %s", what,
                  (unsigned long long)r->ms, r->err);
    cr_assert_eq(r->signal, 0, "%s: died of signal %d; stderr: %s", what, r->signal, r->err);
    cr_assert_eq(r->code, 1, "%s: exit status %d; stderr: %s", what, r->code, r->err);
    cr_assert_eq(th_count_lines(r->err), 1, "%s: stderr is not one line: %s", what, r->err);
    cr_assert_not_null(strstr(r->err, reason), "%s: stderr: %s", what, r->err);
    cr_assert_str_eq(r->out, "", "%s: stdout: %s", what, r->out);
}

Test(chat, a_busy_port_or_an_unknown_host_fails_at_once_with_a_one_line_reason, .timeout = 60)
{
    /* a port another process holds */
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    cr_assert_eq(listen(fd, 1), 0);
    socklen_t sl = sizeof(sa);
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
    char p[16], want[64];
    snprintf(p, sizeof(p), "%d", ntohs(sa.sin_port));
    snprintf(want, sizeof(want), "chat: listen 127.0.0.1:%s: address already in use", p);
    th_app_run_t r;
    th_app_run(&r, "chat", 5000, "--port", p, NULL);
    expect_failed_start(&r, "busy port", want);
    th_app_run(&r, "chat", 5000, "--port", p, "--workers", "2", NULL);
    expect_failed_start(&r, "busy port, 2 workers", want);
    close(fd);
    th_app_run(&r, "chat", 20000, "--host", "no-such-host.invalid", "--port", "0", NULL);
    expect_failed_start(&r, "unknown host", "chat: listen no-such-host.invalid:0: ");
}

Test(chat, help_prints_the_usage_on_stdout_and_exits_0, .timeout = 10)
{
    th_app_run_t r;
    th_app_run(&r, "chat", 5000, "--help", NULL);
    cr_assert_eq(r.code, 0, "status %d; stderr: %s", r.code, r.err);
    cr_assert_not_null(strstr(r.out, "usage: chat"), "stdout: %s", r.out);
    cr_assert_not_null(strstr(r.out, "--history"), "stdout: %s", r.out);
    cr_assert_not_null(strstr(r.out, "--redis"), "stdout: %s", r.out);
    cr_assert_str_eq(r.err, "");
}

Test(chat, a_bad_flag_or_argument_says_what_is_wrong_then_the_usage, .timeout = 60)
{
    static const struct {
        const char *args[6];
        const char *reason;
    } cases[] = {
        {{"--workers", "0"}, "chat: --workers must be 1..64"},
        {{"--workers=65"}, "chat: --workers must be 1..64"},
        {{"--history", "x"}, "chat: --history must be 0..1000000"},
        {{"--history", "1000001"}, "chat: --history must be 0..1000000"},
        {{"--history=-1"}, "chat: --history must be 0..1000000"},
        {{"--redis", "localhost:6379"}, "chat: --redis: not a redis://HOST[:PORT] URL"},
        {{"--redis"}, "chat: --redis needs a value"},
        {{"--max-text", "1k"}, "chat: --max-text: not a valid number: '1k'"},
        {{"--threadpool=0"}, "chat: --threadpool must be 1..1024"},
        {{"stray"}, "chat: unexpected argument 'stray'"},
        {{"--port=abc"}, "chat: --port: not a valid number: 'abc'"},
        {{"--nope"}, "chat: unknown option '--nope'"},
        {{"--port"}, "chat: --port needs a value"},
        {{"--workers", "2"}, "chat: --port 0 needs --workers 1"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *args[8] = {"--port", "0"};
        int n = 2;
        for (int j = 0; cases[i].args[j] != NULL; j++)
            args[n++] = cases[i].args[j];
        args[n] = NULL;
        th_app_run_t r;
        th_app_runv(&r, "chat", 5000, args);
        cr_assert_eq(r.code, 2, "%s: status %d (signal %d)", cases[i].reason, r.code, r.signal);
        cr_assert_eq(strncmp(r.err, cases[i].reason, strlen(cases[i].reason)), 0,
                     "want '%s' first, got: %s", cases[i].reason, r.err);
        const char *nl = strchr(r.err, '\n');
        cr_assert_not_null(nl);
        cr_assert_eq(strncmp(nl + 1, "usage: chat", 11), 0, "then the usage: %s", r.err);
        cr_assert_str_eq(r.out, "", "%s: stdout: %s", cases[i].reason, r.out);
    }
}
