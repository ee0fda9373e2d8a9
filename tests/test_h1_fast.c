/* The two request readers give the same answers: lib/http/h1_fast.c (the common shape,
 * read without llhttp) and llhttp with h1_parse.c's callbacks. Each request below goes to
 * two servers over the memory transport — one with the fast reader, one with it off —
 * whole, split at every byte, and pipelined behind a plain request; what comes back must
 * be the same bytes (but for the Date line). The handler writes back everything a handler
 * can read of a request. The cases are the subset's edges: what it takes, and everything
 * just outside it, which llhttp must get. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "http/h1_int.h"

typedef struct twin {
    uv_loop_t loop;
    sq_app_t *app;
    sq_server_t *srv[2]; /* [0] fast reader on, [1] off */
    int closed;
} twin_t;

static void show(sq_req_t *req, sq_res_t *res, void *data)
{
    char out[4096];
    size_t n = 0, len;
    const char *body = sq_req_body(req, &len);
    n += (size_t)snprintf(
        out + n, sizeof(out) - n, "%s|%s|%s|%s|1.%d|%d|%zu|%s|%s\n", sq_req_method(req),
        sq_req_target(req), sq_req_path(req), sq_req_query_string(req), sq_req_version_minor(req),
        (int)sq_req_method_id(req), len, sq_req_param(req, "id") ? sq_req_param(req, "id") : "-",
        sq_req_query(req, "q") ? sq_req_query(req, "q") : "-");
    size_t hc = sq_req_header_count(req);
    for (size_t i = 0; i < hc && n < sizeof(out) - 200; i++) {
        const char *name, *value;
        sq_req_header_at(req, i, &name, &value);
        n += (size_t)snprintf(out + n, sizeof(out) - n, "[%s]=[%s]\n", name, value);
    }
    const char *host = sq_req_header(req, "host");
    n += (size_t)snprintf(out + n, sizeof(out) - n, "host=%s body=%.*s\n", host ? host : "-",
                          (int)(len < 64 ? len : 64), body);
    sq_res_send(res, 200, "text/plain", out, n);
}

static const sq_handler_t all = {.get = show,
                                 .head = show,
                                 .post = show,
                                 .put = show,
                                 .del = show,
                                 .patch = show,
                                 .options = show};
static const sq_handler_t get_only = {.get = show};

/* /up reads POST bodies as a stream: its handler runs at the head */
typedef struct up {
    sq_res_t *res;
    size_t got;
} up_t;

static void up_piece(sq_req_t *req, int status, const char *data, size_t len, void *ud)
{
    up_t *u = ud;
    u->got += len;
    if (status != 0) {
        char out[64];
        int n = snprintf(out, sizeof(out), "streamed %zu, %s", u->got,
                         status == UV_EOF ? "whole" : "cut");
        sq_res_send(u->res, status == UV_EOF ? 200 : 400, "text/plain", out, (size_t)n);
        free(u);
    }
}

static void up_post(sq_req_t *req, sq_res_t *res, void *data)
{
    up_t *u = calloc(1, sizeof(*u));
    u->res = res;
    sq_req_body_read(req, up_piece, u);
}

static const sq_handler_t up = {.get = show,
                                .post = up_post,
                                .stream_body = SQ_STREAM(SQ_METHOD_POST),
                                .stream_body_max = 1 << 20};

/* /later answers from a timer: the connection pauses, and what was read behind the
 * request waits (pending) until the answer is out */
typedef struct later {
    uv_timer_t timer;
    sq_req_t *req;
    sq_res_t *res;
} later_t;

static void later_closed(uv_handle_t *h)
{
    free(h->data);
}

static void later_fire(uv_timer_t *timer)
{
    later_t *l = timer->data;
    show(l->req, l->res, NULL);
    uv_close((uv_handle_t *)&l->timer, later_closed);
}

static void later_get(sq_req_t *req, sq_res_t *res, void *data)
{
    later_t *l = calloc(1, sizeof(*l));
    l->req = req;
    l->res = res;
    uv_timer_init(data, &l->timer);
    l->timer.data = l;
    uv_timer_start(&l->timer, later_fire, 0, 0);
}

static const sq_handler_t later = {.get = later_get, .post = later_get};

static void on_closed(sq_server_t *srv, void *data)
{
    ((twin_t *)data)->closed++;
}

static void twin_start(twin_t *t)
{
    memset(t, 0, sizeof(*t));
    cr_assert_eq(uv_loop_init(&t->loop), 0);
    cr_assert_eq(sq_app_create(&t->app), 0);
    cr_assert_eq(sq_app_route(t->app, "/", &all, NULL), 0);
    cr_assert_eq(sq_app_route(t->app, "/items/{id:int}", &all, NULL), 0);
    cr_assert_eq(sq_app_route(t->app, "/get", &get_only, NULL), 0);
    cr_assert_eq(sq_app_route(t->app, "/up", &up, NULL), 0);
    cr_assert_eq(sq_app_route(t->app, "/later", &later, &t->loop), 0);
    sq_server_opts_t o;
    sq_server_opts_init(&o);
    o.max_uri_bytes = 64; /* small limits, so that the cases reach them */
    o.max_headers = 8;
    o.max_header_bytes = 320;
    o.max_body_bytes = 64;
    o.request_id_header = NULL;
    for (int i = 0; i < 2; i++)
        cr_assert_eq(sq_server_create(&t->srv[i], &t->loop, t->app, &o), 0);
    sq__hs(t->srv[1])->fast_off = true;
}

static void twin_stop(twin_t *t)
{
    for (int i = 0; i < 2; i++)
        cr_assert_eq(sq_server_destroy(t->srv[i], 1000, on_closed, t), 0);
    cr_assert_eq(uv_run(&t->loop, UV_RUN_DEFAULT), 0);
    cr_assert_eq(t->closed, 2);
    cr_assert_eq(uv_loop_close(&t->loop), 0);
    sq_app_destroy(t->app);
}

/* The bytes sent back, without the Date line, NUL-terminated (malloc'd). The input goes
 * in pieces of `step` bytes (0: whole), then the client's half-close. */
static char *exchange(twin_t *t, int which, const char *in, size_t len, size_t step)
{
    sq__memsink_t sink;
    memset(&sink, 0, sizeof(sink));
    cr_assert_eq(sq__mem_accept(t->srv[which], &sink), 0);
    if (step == 0)
        step = len;
    for (size_t off = 0; off < len && !sink.closed; off += step) {
        size_t n = len - off < step ? len - off : step;
        sq__mem_feed(&sink, in + off, n);
        uv_run(&t->loop, UV_RUN_NOWAIT);
    }
    if (!sink.closed)
        sq__mem_feed(&sink, NULL, 0);
    uint64_t t0 = uv_hrtime();
    while (!sink.closed && uv_hrtime() - t0 < 5000000000ull)
        uv_run(&t->loop, UV_RUN_NOWAIT);
    cr_assert(sink.closed, "the connection closes after the client's half-close");
    char *out = malloc(sink.out.len + 1);
    size_t o = 0;
    const char *p = sink.out.base, *end = p + sink.out.len;
    while (p < end) {
        const char *eol = memmem(p, (size_t)(end - p), "\r\n", 2);
        const char *next = eol ? eol + 2 : end;
        if (!((size_t)(end - p) >= 6 && memcmp(p, "Date: ", 6) == 0)) {
            memcpy(out + o, p, (size_t)(next - p));
            o += (size_t)(next - p);
        }
        p = next;
    }
    out[o] = '\0';
    sq__buf_free(&sink.out);
    return out;
}

static void same(twin_t *t, const char *in, size_t len, size_t step, const char *what)
{
    char *a = exchange(t, 0, in, len, step), *b = exchange(t, 1, in, len, step);
    cr_assert_str_eq(a, b, "%s (pieces of %zu): the fast reader answered\n%s\nllhttp\n%s", what,
                     step, a, b);
    free(a);
    free(b);
}

#define PLAIN "GET /?q=1 HTTP/1.1\r\nHost: p\r\n\r\n"
#define CHUNKED "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n"

static const char *const cases[] = {
    /* the subset */
    "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    "GET /items/42?q=x%20y&r=1 HTTP/1.1\r\nHost: a:8000\r\nAccept: */*\r\n\r\n",
    "HEAD / HTTP/1.1\r\nHost: a\r\n\r\n",
    "POST / HTTP/1.1\r\nHost: a\r\n\r\n",
    "PUT /items/7 HTTP/1.1\r\nhost: a\r\n\r\n",
    "DELETE /items/7 HTTP/1.1\r\nHOST: a\r\n\r\n",
    "PATCH /items/7 HTTP/1.1\r\nHoSt: a\r\n\r\n",
    "OPTIONS / HTTP/1.1\r\nHost: a\r\n\r\n",
    "GET /get HTTP/1.1\r\nHost: a\r\nX-A: 1  \r\nX-B:2\r\nX-C:    \r\nX-D:\r\n\r\n",
    "GET /nowhere HTTP/1.1\r\nHost: a\r\n\r\n",
    "GET /items/4%32 HTTP/1.1\r\nHost: a\r\n\r\n",
    "GET /items/4%32?q=%20&q=2 HTTP/1.1\r\nHost: a\r\n\r\n",
    "GET /items/42?q=%zz HTTP/1.1\r\nHost: a\r\n\r\n",
    "GET /items/%zz HTTP/1.1\r\nHost: a\r\n\r\n",
    "GET /get%3Fx?y HTTP/1.1\r\nHost: a\r\n\r\n",
    "GET /?a?b??c HTTP/1.1\r\nHost: a\r\n\r\n",
    "GET /? HTTP/1.1\r\nHost: a\r\n\r\n",
    "GET /% HTTP/1.1\r\nHost: a\r\n\r\n",
    "GET /g%65t HTTP/1.1\r\nHost: a\r\n\r\n",
    "POST /get HTTP/1.1\r\nHost: a\r\n\r\n",
    "GET /items/x HTTP/1.1\r\nHost: a\r\n\r\n",
    "GET /a/../b/./c;p=1@x:y!$&'()*+,=~_- HTTP/1.1\r\nHost: a\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: a\r\nX-Q: \"quoted\" <tag> {x} [y] \\ ^ ` | #\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: a\r\n!#$%&'*+-.^_`|~09AZaz: token\r\n\r\n",
    /* the limits: 8 header lines, 64 bytes of target, 320 of head */
    "GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: 5\r\nF: 6\r\nG: 7\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: 5\r\nF: 6\r\nG: 7\r\nH: "
    "8\r\n\r\n",
    "GET /0123456789012345678901234567890123456789012345678901234567890 HTTP/1.1\r\nHost: "
    "a\r\n\r\n",
    "GET /01234567890123456789012345678901234567890123456789012345678901 HTTP/1.1\r\nHost: "
    "a\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: a\r\nX: "
    "01234567890123456789012345678901234567890123456789012345678901234567890123456789"
    "01234567890123456789012345678901234567890123456789012345678901234567890123456789"
    "0123456789012345678901234567890123456789012345678901234567890123456789012345\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: a\r\nX: "
    "01234567890123456789012345678901234567890123456789012345678901234567890123456789"
    "01234567890123456789012345678901234567890123456789012345678901234567890123456789"
    "01234567890123456789012345678901234567890123456789012345678901234567890123456789012\r\n\r\n",
    /* just outside it: llhttp's */
    "GET / HTTP/1.1\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    "GET / HTTP/1.0\r\n\r\n",
    "GET / HTTP/1.0\r\nHost: a\r\n\r\n",
    "GET / HTTP/1.2\r\nHost: a\r\n\r\n",
    "GET / HTTP/2.0\r\nHost: a\r\n\r\n",
    "GET / http/1.1\r\nHost: a\r\n\r\n",
    "GET / HTTP/st\r\nHost: a\r\n\r\n",
    "GET / HTTP/1.x\r\nHost: a\r\n\r\n",
    "GET / HTTP/2.x\r\nHost: a\r\n\r\n",
    "get / HTTP/1.1\r\nHost: a\r\n\r\n",
    "GETX / HTTP/1.1\r\nHost: a\r\n\r\n",
    "PROPFIND / HTTP/1.1\r\nHost: a\r\n\r\n",
    "GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
    "GET /  HTTP/1.1\r\nHost: a\r\n\r\n",
    "GET / HTTP/1.1 \r\nHost: a\r\n\r\n",
    "GET http://a/x?q=1 HTTP/1.1\r\nHost: a\r\n\r\n",
    "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
    "GET /#frag HTTP/1.1\r\nHost: a\r\n\r\n",
    "GET /\"x\" HTTP/1.1\r\nHost: a\r\n\r\n",
    "GET /\x80 HTTP/1.1\r\nHost: a\r\n\r\n",
    "GET / HTTP/1.1\nHost: a\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: a\n\r\n",
    "GET / HTTP/1.1\r\nHost: a\r\n\n",
    "GET / HTTP/1.1\r\nHost: a\r\rX: 1\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n 2\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n\t2\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: a\r\nX:\t1\t\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: a\r\nX: caf\xc3\xa9\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: a\r\nX: a\x01b\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: a\r\nX: a\x7f\r\n\r\n",
    "GET / HTTP/1.1\r\nHost : a\r\n\r\n",
    "GET / HTTP/1.1\r\n Host: a\r\n\r\n",
    "GET / HTTP/1.1\r\nHo(st: a\r\n\r\n",
    "GET / HTTP/1.1\r\n: a\r\nHost: a\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
    "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
    "POST / HTTP/1.1\r\nHost: a\r\ncontent-length: 3\r\n\r\nabc",
    "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 003\r\n\r\nabc",
    "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3 \r\n\r\nabc",
    "POST / HTTP/1.1\r\nHost: a\r\nContent-Length:3\r\n\r\nabc",
    "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\nabc",
    "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3x\r\n\r\nabc",
    "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3 3\r\n\r\nabc",
    "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\nabc",
    "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \r\n\r\nabc",
    "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
    "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: "
    "chunked\r\n\r\n0\r\n\r\n",
    "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc",
    "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\nabc",
    "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 999999999999999\r\n\r\nabc",
    "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 65\r\n\r\n"
    "01234567890123456789012345678901234567890123456789012345678901234",
    "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 64\r\n\r\n"
    "0123456789012345678901234567890123456789012345678901234567890123",
    "POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
    "POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
    "GET /up HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
    "PUT /items/1 HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: "
    "2\r\n\r\n{}",
    "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nGET / HTTP/1.1\r\n\r\n",
    "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: a\r\nProxy-Connection: close\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: a\r\nConnection: Close\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: a\r\nConnection: KEEP-ALIVE\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: a\r\nConnection: close  \r\n\r\n",
    "GET / HTTP/1.1\r\nHost: a\r\nConnection:close\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: a\r\nConnection: closed\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: a\r\nConnection: clos\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: a\r\nConnection: \r\n\r\n",
    "GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, close\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: a\r\nConnection: close, keep-alive\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: a\r\nConnection: x-foo\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\nConnection: keep-alive\r\n\r\n",
    "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    "GET / HTTP/1.0\r\nHost: a\r\nConnection: Keep-Alive\r\nUser-Agent: ApacheBench/2.3\r\nAccept: "
    "*/*\r\n\r\n",
    "GET / HTTP/1.0\r\nHost: a\r\nConnection: close\r\n\r\n",
    "GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n",
    "HEAD / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n",
    "POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi",
    "GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n",
    /* names one byte off the special ones are plain fields to both readers */
    "GET / HTTP/1.1\r\nHost: a\r\nContent-Lengthx: 5\r\n\r\nhello",
    "GET / HTTP/1.1\r\nHost: a\r\nContent-Lengt: 5\r\n\r\n",
    "GET / HTTP/1.1\r\nHostx: a\r\n\r\n",
    "GET / HTTP/1.1\r\nXHost: a\r\nHost: b\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: a\r\nConnectionx: close\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encodingx: chunked\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: a\r\nUpgradex: h2c\r\nExpectx: 100-continue\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: a\r\nProxy-Connectionx: close\r\n\r\n",
    "GET / HTTP/1.1\r\nHost:\r\n\r\n",
    "GET / HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nhi",
    /* 15 digits of Content-Length with leading zeros (the subset's), and 16 (llhttp's) */
    "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 000000000000003\r\n\r\nabc",
    "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0000000000000003\r\n\r\nabc",
    "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\na\nPOST / HTTP/1.1\r\n",
    /* at max_header_bytes (320) and one over, with leading and trailing spaces in a value */
    "GET / HTTP/1.1\r\nHost: a\r\nX:   "
    "01234567890123456789012345678901234567890123456789012345678901234567890123456789"
    "01234567890123456789012345678901234567890123456789012345678901234567890123456789"
    "01234567890123456789012345678901234567890123456789012345678901234567890123456789"
    "01234567890123456789012345678901234567890123456789012345678901   \r\n\r\n",
    "GET / HTTP/1.1\r\nHost: a\r\nX:   "
    "01234567890123456789012345678901234567890123456789012345678901234567890123456789"
    "01234567890123456789012345678901234567890123456789012345678901234567890123456789"
    "01234567890123456789012345678901234567890123456789012345678901234567890123456789"
    "012345678901234567890123456789012345678901234567890123456789012   \r\n\r\n",
    "\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
    "\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: a\r\n",
    "GET / HTTP/1.1\r\nHo",
    "G",
    "",
    "\x16\x03\x01\x00\x05hello",
};

Test(h1_fast, both_readers_answer_every_case_alike_whole_and_split)
{
    twin_t t;
    twin_start(&t);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *c = cases[i];
        size_t len = strlen(c);
        char what[64];
        snprintf(what, sizeof(what), "case %zu", i);
        same(&t, c, len, 0, what);
        for (size_t step = 1; step < len && step < 64; step += step < 8 ? 1 : 7)
            same(&t, c, len, step, what);
        /* pipelined behind a plain request, and in front of one */
        char two[1024];
        int n = snprintf(two, sizeof(two), PLAIN "%s", c);
        same(&t, two, (size_t)n, 0, what);
        n = snprintf(two, sizeof(two), "%s" PLAIN, c);
        same(&t, two, (size_t)n, 0, what);
        n = snprintf(two, sizeof(two), PLAIN "%s" PLAIN, c);
        same(&t, two, (size_t)n, 17, what);
    }
    cr_assert_gt(sq__hs(t.srv[0])->fast_n, 100, "the fast reader took the plain requests");
    cr_assert_eq(sq__hs(t.srv[1])->fast_n, 0);
    twin_stop(&t);
}

/* A value is checked eight bytes at a time: a byte that is not a visible character or SP
 * at every place of a long value, and the bytes around the edges of that range. */
Test(h1_fast, a_bad_byte_anywhere_in_a_long_value_is_found)
{
    twin_t t;
    twin_start(&t);
    static const unsigned char bad[] = {'\t', 0x00, 0x01, 0x1f, 0x7f, 0x80,
                                        0xa0, 0xff, ' ',  '!',  '~'};
    for (size_t b = 0; b < sizeof(bad); b++) {
        for (size_t at = 0; at < 24; at++) {
            static const char head[] = "GET / HTTP/1.1\r\nHost: a\r\nX: w";
            char in[128];
            size_t n = sizeof(head) - 1;
            memcpy(in, head, n);
            memset(in + n, 'v', 24);
            in[n + at] = (char)bad[b];
            n += 24;
            memcpy(in + n, "w\r\n\r\n", 5);
            n += 5;
            char what[64];
            snprintf(what, sizeof(what), "byte 0x%02x at %zu", bad[b], at);
            same(&t, in, n, 0, what);
        }
    }
    twin_stop(&t);
}

/* What the fast reader takes, and what it must leave to llhttp. */
Test(h1_fast, takes_the_plain_shape_and_leaves_the_rest)
{
    twin_t t;
    twin_start(&t);
    static const struct {
        const char *in;
        unsigned taken;
        size_t step;
    } want[] = {
        {"GET / HTTP/1.1\r\nHost: a\r\n\r\n", 1, 0},
        {"GET /get HTTP/1.1\r\nHost: a\r\nX-A: 1  \r\n\r\n", 1, 0},
        {PLAIN PLAIN PLAIN, 3, 0},
        {"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", 1, 0},
        {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi" PLAIN, 2, 0},
        /* a body still to come, one over max_body_bytes, a streamed one: llhttp's */
        {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nhi", 0, 0},
        {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 65\r\n\r\n", 0, 0},
        {"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi", 0, 0},
        {"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", 1, 0},
        {"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\n\r\n" PLAIN, 2, 0},
        {"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, x\r\n\r\n", 0, 0},
        {"GET / HTTP/1.0\r\nHost: a\r\n\r\n", 1, 0},
        {"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n" PLAIN, 2, 0},
        {"GET / HTTP/1.1\r\nHost: a\r\nX: caf\xc3\xa9\r\n\r\n", 0, 0},
        /* llhttp reads on to the end of the read it started; in the next read, a plain
         * request is the fast reader's again */
        {CHUNKED PLAIN, 0, 0},
        {CHUNKED PLAIN, 1, 68},
        /* a head cut by the read is llhttp's, whole */
        {"GET / HTTP/1.1\r\nHost: a\r\n", 0, 0},
    };
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        uint64_t before = sq__hs(t.srv[0])->fast_n;
        free(exchange(&t, 0, want[i].in, strlen(want[i].in), want[i].step));
        cr_assert_eq(sq__hs(t.srv[0])->fast_n - before, want[i].taken, "case %zu", i);
    }
    twin_stop(&t);
}

/* Requests behind one answered later: llhttp paused (or not yet set up) while the fast
 * reader takes what waits, then llhttp again — after an ignored h2c Upgrade too, whose
 * pause llhttp still holds when it next runs. */
Test(h1_fast, requests_behind_an_answer_given_later_are_read_alike)
{
    twin_t t;
    twin_start(&t);
#define LATER "GET /later HTTP/1.1\r\nHost: a\r\n\r\n"
#define H2C                                                                                    \
    "GET /later HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\nConnection: Upgrade, "                \
    "HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"
#define ODD "GET /odd HTTP/1.1\r\nHost: a\r\nX:\tb\r\n\r\n"
    static const char *const seqs[] = {
        LATER PLAIN PLAIN,
        LATER LATER PLAIN,
        PLAIN LATER PLAIN ODD PLAIN,
        H2C PLAIN ODD PLAIN,
        H2C PLAIN PLAIN,
        PLAIN H2C ODD,
        "POST /later HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi" PLAIN CHUNKED PLAIN,
        LATER "\r\n" PLAIN,
        LATER "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n" PLAIN,
    };
    for (size_t i = 0; i < sizeof(seqs) / sizeof(seqs[0]); i++) {
        char what[64];
        snprintf(what, sizeof(what), "sequence %zu", i);
        size_t len = strlen(seqs[i]);
        same(&t, seqs[i], len, 0, what);
        for (size_t step = 1; step < len; step += step < 8 ? 1 : 13)
            same(&t, seqs[i], len, step, what);
    }
    twin_stop(&t);
}
