/* HTTP/1 over a connection with no socket: the transport's memory io (lib/server/io.c).
 * The same requests as tests/test_http1.c's pipelining and half-close tests, and the
 * same answers, but the bytes go in with sq__mem_feed and come out of the sink: the
 * HTTP/1 code cannot tell, which is what lets a TLS layer or an in-process test client
 * sit under it. The loop runs on the test's own thread. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "server/server_int.h"

#define GET(path) "GET " path " HTTP/1.1\r\nHost: t\r\n\r\n"

typedef struct mem_server {
    uv_loop_t loop;
    sq_app_t *app;
    sq_server_t *srv;
    int closed;
} mem_server_t;

static void n_get(sq_req_t *req, sq_res_t *res, void *data)
{
    char peer[16];
    if (sq_req_peer(req, peer, sizeof(peer)) != 0 || strcmp(peer, "memory") != 0) {
        sq_res_send(res, 500, "text/plain", "peer", 4); /* the io names a memory peer */
        return;
    }
    const char *n = sq_req_param(req, "i");
    sq_res_send(res, 200, "text/plain", n, strlen(n));
}
static const sq_handler_t n_route = {.get = n_get};

static void echo_post(sq_req_t *req, sq_res_t *res, void *data)
{
    size_t len;
    const char *body = sq_req_body(req, &len);
    sq_res_send(res, 200, "application/octet-stream", body, len);
}
static const sq_handler_t echo = {.post = echo_post};

/* GET /late: answers "late" from a timer 20 ms later */
typedef struct late {
    uv_timer_t timer;
    sq_res_t *res;
} late_t;

static void late_closed(uv_handle_t *h)
{
    free(h->data);
}

static void late_fire(uv_timer_t *t)
{
    late_t *l = t->data;
    sq_res_send(l->res, 200, "text/plain", "late", 4);
    uv_close((uv_handle_t *)t, late_closed);
}

static void late_get(sq_req_t *req, sq_res_t *res, void *data)
{
    late_t *l = calloc(1, sizeof(*l));
    l->res = res;
    uv_timer_init(sq_req_loop(req), &l->timer);
    l->timer.data = l;
    uv_timer_start(&l->timer, late_fire, 20, 0);
}
static const sq_handler_t late = {.get = late_get};

static void start(mem_server_t *ms)
{
    memset(ms, 0, sizeof(*ms));
    cr_assert_eq(uv_loop_init(&ms->loop), 0);
    cr_assert_eq(sq_app_create(&ms->app), 0);
    cr_assert_eq(sq_app_route(ms->app, "/n/{i:int}", &n_route, NULL), 0);
    cr_assert_eq(sq_app_route(ms->app, "/echo", &echo, NULL), 0);
    cr_assert_eq(sq_app_route(ms->app, "/late", &late, NULL), 0);
    cr_assert_eq(sq_server_create(&ms->srv, &ms->loop, ms->app, NULL), 0);
}

static void on_closed(sq_server_t *srv, void *data)
{
    ((mem_server_t *)data)->closed++;
}

static void stop(mem_server_t *ms)
{
    cr_assert_eq(sq_server_destroy(ms->srv, 1000, on_closed, ms), 0);
    cr_assert_eq(uv_run(&ms->loop, UV_RUN_DEFAULT), 0);
    cr_assert_eq(ms->closed, 1);
    cr_assert_eq(uv_loop_close(&ms->loop), 0);
    sq_app_destroy(ms->app);
}

/* Runs the loop until `done` holds or 5 s pass. */
static bool run_until(mem_server_t *ms, bool (*done)(void *), void *arg)
{
    uint64_t t0 = uv_hrtime();
    while (!done(arg)) {
        if (uv_hrtime() - t0 > 5000000000ull)
            return false;
        uv_run(&ms->loop, UV_RUN_ONCE);
    }
    return true;
}

/* The answers in the sink, in order: status and body of each (Content-Length framed). */
typedef struct answers {
    int status[64];
    char body[64][64];
    int n;
    bool bad;
} answers_t;

static void parse(const sq__memsink_t *sink, answers_t *a)
{
    memset(a, 0, sizeof(*a));
    const char *p = sink->out.base, *end = p + sink->out.len;
    while (p != NULL && p < end && a->n < 64) {
        const char *hend = memmem(p, (size_t)(end - p), "\r\n\r\n", 4);
        if (hend == NULL)
            return;
        int status = 0;
        char line[32]; /* the sink is not NUL-terminated: scan a copy of the status line */
        size_t ll = (size_t)(hend - p) < sizeof(line) - 1 ? (size_t)(hend - p) : sizeof(line) - 1;
        memcpy(line, p, ll);
        line[ll] = '\0';
        if (sscanf(line, "HTTP/1.1 %d", &status) != 1) {
            a->bad = true;
            return;
        }
        const char *cl = memmem(p, (size_t)(hend - p), "Content-Length: ", 16);
        size_t len = cl ? strtoul(cl + 16, NULL, 10) : 0;
        const char *body = hend + 4;
        if ((size_t)(end - body) < len)
            return;
        a->status[a->n] = status;
        snprintf(a->body[a->n], sizeof(a->body[0]), "%.*s", (int)len, body);
        a->n++;
        p = body + len;
    }
}

typedef struct want {
    sq__memsink_t *sink;
    int n;
} want_t;

static bool has_answers(void *arg)
{
    want_t *w = arg;
    answers_t a;
    parse(w->sink, &a);
    return a.n >= w->n || a.bad;
}

static bool is_closed(void *arg)
{
    return ((sq__memsink_t *)arg)->closed;
}

Test(memconn, pipelined_16_requests_in_one_feed_answered_in_order)
{
    mem_server_t ms;
    start(&ms);
    sq__memsink_t sink;
    cr_assert_eq(sq__mem_accept(ms.srv, &sink), 0);
    char batch[16 * 64];
    size_t len = 0;
    for (int i = 0; i < 16; i++)
        len += (size_t)snprintf(batch + len, sizeof(batch) - len,
                                "GET /n/%d HTTP/1.1\r\nHost: t\r\n\r\n", i);
    sq__mem_feed(&sink, batch, len);
    want_t w = {&sink, 16};
    cr_assert(run_until(&ms, has_answers, &w));
    answers_t a;
    parse(&sink, &a);
    cr_assert_eq(a.n, 16);
    for (int i = 0; i < 16; i++) {
        char want[16];
        snprintf(want, sizeof(want), "%d", i);
        cr_assert_eq(a.status[i], 200);
        cr_assert_str_eq(a.body[i], want, "answer %d out of order", i);
    }
    cr_assert_eq(sink.closed, false);
    stop(&ms);
    cr_assert(sink.closed);
    sq__buf_free(&sink.out);
}

Test(memconn, requests_fed_byte_by_byte_and_a_pipelined_async_answer_keep_order)
{
    mem_server_t ms;
    start(&ms);
    sq__memsink_t sink;
    cr_assert_eq(sq__mem_accept(ms.srv, &sink), 0);
    static const char batch[] = GET("/n/1") GET("/late") GET("/n/3")
        "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        "4\r\nbody\r\n0\r\n\r\n" GET("/n/5");
    for (size_t i = 0; i < sizeof(batch) - 1; i++)
        sq__mem_feed(&sink, batch + i, 1);
    want_t w = {&sink, 5};
    cr_assert(run_until(&ms, has_answers, &w));
    answers_t a;
    parse(&sink, &a);
    static const char *bodies[] = {"1", "late", "3", "body", "5"};
    cr_assert_eq(a.n, 5);
    for (int i = 0; i < 5; i++)
        cr_assert_str_eq(a.body[i], bodies[i], "answer %d", i);
    stop(&ms);
    sq__buf_free(&sink.out);
}

/* A half-close (the feed's end) after an async request: the answer, then the close. */
Test(memconn, half_close_gets_the_answers_then_closes)
{
    mem_server_t ms;
    start(&ms);
    sq__memsink_t sink;
    cr_assert_eq(sq__mem_accept(ms.srv, &sink), 0);
    static const char batch[] = GET("/late") GET("/n/2");
    sq__mem_feed(&sink, batch, sizeof(batch) - 1);
    sq__mem_feed(&sink, NULL, 0);
    cr_assert(run_until(&ms, is_closed, &sink));
    answers_t a;
    parse(&sink, &a);
    cr_assert_eq(a.n, 2);
    cr_assert_str_eq(a.body[0], "late");
    cr_assert_str_eq(a.body[1], "2");
    stop(&ms);
    sq__buf_free(&sink.out);
}

/* A smuggling shape (RFC 9112 §6.1: Content-Length with Transfer-Encoding) is answered
 * 400 and closed after a lingering close, as over a socket. */
Test(memconn, a_bad_request_is_answered_400_then_lingers_and_closes)
{
    mem_server_t ms;
    start(&ms);
    sq__memsink_t sink;
    cr_assert_eq(sq__mem_accept(ms.srv, &sink), 0);
    static const char bad[] = "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n"
                              "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" GET("/n/9");
    sq__mem_feed(&sink, bad, sizeof(bad) - 1);
    want_t w = {&sink, 1};
    cr_assert(run_until(&ms, has_answers, &w));
    answers_t a;
    parse(&sink, &a);
    cr_assert_eq(a.n, 1, "the request behind the bad one must not be answered");
    cr_assert_eq(a.status[0], 400);
    cr_assert_not_null(memmem(sink.out.base, sink.out.len, "Connection: close", 17));
    cr_assert(run_until(&ms, is_closed, &sink) || sink.write_shut);
    cr_assert(sink.write_shut, "an error answer is followed by a lingering close");
    sq__mem_feed(&sink, NULL, 0); /* the client's end ends the linger */
    cr_assert(run_until(&ms, is_closed, &sink));
    sq_server_stats_t st;
    sq_server_stats(ms.srv, &st);
    cr_assert_eq(st.parse_errors, 1);
    stop(&ms);
    sq__buf_free(&sink.out);
}

/* Memory connections count as connections: the server's shutdown closes them. */
Test(memconn, destroying_the_server_closes_memory_connections)
{
    mem_server_t ms;
    start(&ms);
    sq__memsink_t sinks[3];
    for (int i = 0; i < 3; i++)
        cr_assert_eq(sq__mem_accept(ms.srv, &sinks[i]), 0);
    sq__mem_feed(&sinks[0], "GET /n/1 HTTP/1.1\r\nHo", 21); /* half a request */
    sq_server_stats_t st;
    sq_server_stats(ms.srv, &st);
    cr_assert_eq(st.connections_open, 3);
    stop(&ms);
    for (int i = 0; i < 3; i++) {
        cr_assert(sinks[i].closed, "connection %d", i);
        sq__buf_free(&sinks[i].out);
    }
}

/* A response finished from the user's own uv_prepare callback: the server's tick must
 * not wait for an unrelated event to wake the poll (it waited for the 5 s idle timer). */
typedef struct prep {
    uv_prepare_t prepare;
    sq_res_t *res;
} prep_t;

static prep_t the_prep;

/* Stops, not closes: a handle closing would itself make the next poll return at once. */
static void prep_answer(uv_prepare_t *p)
{
    prep_t *pr = p->data;
    uv_prepare_stop(p);
    sq_res_send(pr->res, 200, "text/plain", "prepared", 8);
}

static void prep_get(sq_req_t *req, sq_res_t *res, void *data)
{
    the_prep.res = res;
    uv_prepare_init(sq_req_loop(req), &the_prep.prepare);
    the_prep.prepare.data = &the_prep;
    uv_prepare_start(&the_prep.prepare, prep_answer);
}
static const sq_handler_t prep = {.get = prep_get};

Test(memconn, an_answer_from_a_prepare_callback_is_sent_at_once)
{
    mem_server_t ms;
    start(&ms);
    cr_assert_eq(sq_app_route(ms.app, "/prep", &prep, NULL), 0);
    sq__memsink_t sink;
    cr_assert_eq(sq__mem_accept(ms.srv, &sink), 0);
    static const char req[] = GET("/prep");
    sq__mem_feed(&sink, req, sizeof(req) - 1);
    uint64_t t0 = uv_hrtime();
    want_t w = {&sink, 1};
    cr_assert(run_until(&ms, has_answers, &w));
    uint64_t ms_taken = (uv_hrtime() - t0) / 1000000u;
    answers_t a;
    parse(&sink, &a);
    cr_assert_str_eq(a.body[0], "prepared");
    cr_assert_lt(ms_taken, 1000, "the answer waited %llu ms for the poll",
                 (unsigned long long)ms_taken);
    uv_close((uv_handle_t *)&the_prep.prepare, NULL);
    stop(&ms);
    sq__buf_free(&sink.out);
}
