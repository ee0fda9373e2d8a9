/* HTTP/1.1 server over real sockets: framing, keep-alive, pipelining, limits, smuggling
 * shapes, timeouts, asynchronous and streaming handlers, clients that leave, shutdown.
 *
 * Each test runs a server on its own loop thread (tests/support/harness.h) and talks to it
 * with a blocking socket. Handlers count what happens to them in atomics; the counts are
 * compared exactly once the server has stopped. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <jansson.h>

#include "support/harness.h"

/* ---- what the handlers saw (the server thread writes, the test reads) ---- */

static atomic_int n_handler;   /* handler entries */
static atomic_int n_aborted;   /* .aborted calls */
static atomic_int n_late_done; /* async answers attempted */
static atomic_int late_rc;     /* ...the last one's return code */
static atomic_int n_wcb;       /* streaming write callbacks */
static atomic_int n_wcb_ok;    /* ...with status 0 */
static atomic_int n_wcb_err;   /* ...with a negative status */
static atomic_int n_free;      /* sq_res_send_ref free callbacks */
static atomic_int end_rc;      /* sq_res_end's result in timer streams */
static atomic_int n_stream_done;
static atomic_int inject_rc[4];
static atomic_int lstream_rc[3]; /* sq_res_start, _write, _end from a timer */
static atomic_int max_queued_kb; /* most response bytes queued when a handler ran */
static _Atomic uint64_t late_started_at; /* th_now_ms() when /late last began */

static void reset_counts(void)
{
    atomic_store(&n_handler, 0);
    atomic_store(&n_aborted, 0);
    atomic_store(&n_late_done, 0);
    atomic_store(&late_rc, 1);
    atomic_store(&n_wcb, 0);
    atomic_store(&n_wcb_ok, 0);
    atomic_store(&n_wcb_err, 0);
    atomic_store(&n_free, 0);
    atomic_store(&end_rc, 1);
    atomic_store(&n_stream_done, 0);
    for (int i = 0; i < 4; i++)
        atomic_store(&inject_rc[i], 1);
    for (int i = 0; i < 3; i++)
        atomic_store(&lstream_rc[i], 1);
    atomic_store(&max_queued_kb, 0);
    atomic_store(&late_started_at, 0);
}

static int query_int(sq_req_t *req, const char *name, int def)
{
    const char *v = sq_req_query(req, name);
    return v ? atoi(v) : def;
}

/* GET / */
static void root_get(sq_req_t *req, sq_res_t *res, void *data)
{
    atomic_fetch_add(&n_handler, 1);
    sq_res_send(res, 200, "text/plain", "hello", 5);
}
static const sq_handler_t root = {.get = root_get};

/* GET /n/{i:int}: the number back, to tell pipelined answers apart */
static void num_get(sq_req_t *req, sq_res_t *res, void *data)
{
    atomic_fetch_add(&n_handler, 1);
    int64_t i = -1;
    sq_req_param_int(req, "i", &i);
    char body[32];
    int n = snprintf(body, sizeof(body), "%lld", (long long)i);
    sq_res_send(res, 200, "text/plain", body, (size_t)n);
}
static const sq_handler_t num = {.get = num_get};

/* POST|PUT /echo: the body back, with its length and the request's Content-Type */
static void echo_post(sq_req_t *req, sq_res_t *res, void *data)
{
    atomic_fetch_add(&n_handler, 1);
    size_t len;
    const char *body = sq_req_body(req, &len);
    char n[32];
    snprintf(n, sizeof(n), "%zu", len);
    sq_res_header(res, "X-Len", n);
    const char *ct = sq_req_header(req, "content-type");
    sq_res_send(res, 200, ct ? ct : "application/octet-stream", body, len);
}
static const sq_handler_t echo = {.post = echo_post, .put = echo_post};

/* GET /late?ms=N[&fin=1]: answers from a uv_timer N ms later. With fin=1, .aborted finishes
 * the response itself (what a handler does when it cannot stop its work); otherwise the
 * timer finishes it and records what sq_res_send returned. */
typedef struct late {
    uv_timer_t timer;
    sq_res_t *res;
    bool finish_on_abort;
    bool done;
} late_t;

static void late_free(uv_handle_t *h)
{
    free(h->data);
}

static void late_fire(uv_timer_t *t)
{
    late_t *l = t->data;
    int rc = sq_res_send(l->res, 200, "text/plain", "late", 4);
    atomic_store(&late_rc, rc);
    atomic_fetch_add(&n_late_done, 1);
    l->done = true;
    uv_close((uv_handle_t *)t, late_free);
}

static void late_get(sq_req_t *req, sq_res_t *res, void *data)
{
    atomic_store(&late_started_at, th_now_ms());
    atomic_fetch_add(&n_handler, 1);
    late_t *l = calloc(1, sizeof(*l));
    uv_timer_init(sq_req_loop(req), &l->timer);
    l->timer.data = l;
    l->res = res;
    l->finish_on_abort = query_int(req, "fin", 0) != 0;
    sq_req_set_data(req, l);
    uv_timer_start(&l->timer, late_fire, (uint64_t)query_int(req, "ms", 50), 0);
}

static void late_aborted(sq_req_t *req, sq_res_t *res, void *data)
{
    atomic_fetch_add(&n_aborted, 1);
    late_t *l = sq_req_data(req);
    if (l != NULL && l->finish_on_abort && !l->done) {
        l->done = true;
        int rc = sq_res_send(res, 200, "text/plain", "late", 4);
        atomic_store(&late_rc, rc);
        atomic_fetch_add(&n_late_done, 1);
        uv_close((uv_handle_t *)&l->timer, late_free);
    }
}
static const sq_handler_t late = {.get = late_get, .aborted = late_aborted};

/* GET /stream: a streaming answer written at once, in three pieces */
static void on_wcb(sq_res_t *res, int status, void *data)
{
    atomic_fetch_add(&n_wcb, 1);
    atomic_fetch_add(status == 0 ? &n_wcb_ok : &n_wcb_err, 1);
}

static void stream_get(sq_req_t *req, sq_res_t *res, void *data)
{
    atomic_fetch_add(&n_handler, 1);
    static const char *parts[] = {"first,", "second,", "third"};
    if (sq_res_start(res, 200, "text/plain") != 0)
        atomic_fetch_add(&n_wcb_err, 100); /* shows up as a count mismatch */
    for (int i = 0; i < 3; i++)
        sq_res_write(res, parts[i], strlen(parts[i]), on_wcb, NULL);
    sq_res_end(res);
}
static const sq_handler_t stream = {.get = stream_get};

/* GET /tstream?ms=M&n=N: N pieces, one every M ms, from a timer. When the client goes, the
 * next write returns UV_ECANCELED and the handler ends the response (UV_ECANCELED too). */
typedef struct tstream {
    uv_timer_t timer;
    sq_res_t *res;
    int left;
    int k;
} tstream_t;

static void tstream_tick(uv_timer_t *t)
{
    tstream_t *s = t->data;
    char piece[32];
    int n = snprintf(piece, sizeof(piece), "piece-%d\n", s->k++);
    int rc = sq_res_write(s->res, piece, (size_t)n, on_wcb, NULL);
    if (rc != 0 || --s->left == 0) {
        atomic_store(&end_rc, sq_res_end(s->res));
        atomic_fetch_add(&n_stream_done, 1);
        uv_close((uv_handle_t *)t, late_free);
    }
}

static void tstream_get(sq_req_t *req, sq_res_t *res, void *data)
{
    atomic_fetch_add(&n_handler, 1);
    tstream_t *s = calloc(1, sizeof(*s));
    s->res = res;
    s->left = query_int(req, "n", 5);
    uv_timer_init(sq_req_loop(req), &s->timer);
    s->timer.data = s;
    uint64_t ms = (uint64_t)query_int(req, "ms", 20);
    uv_timer_start(&s->timer, tstream_tick, ms, ms);
    sq_res_start(res, 200, "text/plain");
}

static void tstream_aborted(sq_req_t *req, sq_res_t *res, void *data)
{
    atomic_fetch_add(&n_aborted, 1);
}
static const sq_handler_t tstream = {.get = tstream_get, .aborted = tstream_aborted};

/* GET /ref: a zero-copy body */
static const char ref_body[] = "zero-copy body";

static void on_ref_free(void *ptr, void *data)
{
    atomic_fetch_add(&n_free, ptr == ref_body ? 1 : 100);
}

static void ref_get(sq_req_t *req, sq_res_t *res, void *data)
{
    atomic_fetch_add(&n_handler, 1);
    sq_res_send_ref(res, 200, "text/plain", ref_body, sizeof(ref_body) - 1, on_ref_free, NULL);
}
static const sq_handler_t ref = {.get = ref_get};

/* GET /inject: header values and names that would split the response */
static void inject_get(sq_req_t *req, sq_res_t *res, void *data)
{
    atomic_fetch_add(&n_handler, 1);
    atomic_store(&inject_rc[0], sq_res_header(res, "X-A", "a\r\nSet-Cookie: evil=1"));
    atomic_store(&inject_rc[1], sq_res_header(res, "X-B\r\nSet-Cookie", "evil=1"));
    atomic_store(&inject_rc[2], sq_res_header(res, "X-C", "c\nSet-Cookie: evil=1"));
    atomic_store(&inject_rc[3], sq_res_header(res, "X-Fine", "fine"));
    sq_res_send(res, 200, "text/plain", "ok", 2);
}
static const sq_handler_t inject = {.get = inject_get};

/* GET /big: a 4 MiB body, more than the socket buffers hold */
#define BIG_LEN (4u << 20)
static void big_get(sq_req_t *req, sq_res_t *res, void *data)
{
    atomic_fetch_add(&n_handler, 1);
    char *b = malloc(BIG_LEN);
    memset(b, 'x', BIG_LEN);
    sq_res_send(res, 200, "application/octet-stream", b, BIG_LEN);
    free(b);
}
static const sq_handler_t big = {.get = big_get};

/* GET /lstream?ms=N[&status=S]: starts streaming only from a timer, N ms later, then writes
 * and ends; records what each call returned (the client may have left by then). */

typedef struct lstream {
    uv_timer_t timer;
    sq_res_t *res;
    int status;
} lstream_t;

static void lstream_fire(uv_timer_t *t)
{
    lstream_t *l = t->data;
    atomic_store(&lstream_rc[0], sq_res_start(l->res, l->status, "text/plain"));
    atomic_store(&lstream_rc[1], sq_res_write(l->res, "body", 4, on_wcb, NULL));
    atomic_store(&lstream_rc[2], sq_res_end(l->res));
    atomic_fetch_add(&n_stream_done, 1);
    uv_close((uv_handle_t *)t, late_free);
}

static void lstream_get(sq_req_t *req, sq_res_t *res, void *data)
{
    atomic_fetch_add(&n_handler, 1);
    lstream_t *l = calloc(1, sizeof(*l));
    l->res = res;
    l->status = query_int(req, "status", 200);
    uv_timer_init(sq_req_loop(req), &l->timer);
    l->timer.data = l;
    uv_timer_start(&l->timer, lstream_fire, (uint64_t)query_int(req, "ms", 10), 0);
}
static const sq_handler_t lstream = {.get = lstream_get, .aborted = tstream_aborted};

/* GET /qbig?kb=N: an N KiB body; records the most response bytes found queued on the
 * connection when a request reached its handler (back-pressure) */

static void qbig_get(sq_req_t *req, sq_res_t *res, void *data)
{
    atomic_fetch_add(&n_handler, 1);
    int q = (int)(sq_res_queued_bytes(res) / 1024);
    if (q > atomic_load(&max_queued_kb))
        atomic_store(&max_queued_kb, q);
    size_t n = (size_t)query_int(req, "kb", 1024) * 1024;
    char *b = malloc(n);
    memset(b, 'q', n);
    sq_res_send(res, 200, "application/octet-stream", b, n);
    free(b);
}
static const sq_handler_t qbig = {.get = qbig_get};

/* GET /lref?ms=N: a zero-copy answer from a timer, N ms later */
typedef struct lref {
    uv_timer_t timer;
    sq_res_t *res;
} lref_t;

static void lref_fire(uv_timer_t *t)
{
    lref_t *l = t->data;
    atomic_store(&late_rc, sq_res_send_ref(l->res, 200, "text/plain", ref_body,
                                           sizeof(ref_body) - 1, on_ref_free, NULL));
    atomic_fetch_add(&n_late_done, 1);
    uv_close((uv_handle_t *)t, late_free);
}

static void lref_get(sq_req_t *req, sq_res_t *res, void *data)
{
    atomic_fetch_add(&n_handler, 1);
    lref_t *l = calloc(1, sizeof(*l));
    l->res = res;
    uv_timer_init(sq_req_loop(req), &l->timer);
    l->timer.data = l;
    uv_timer_start(&l->timer, lref_fire, (uint64_t)query_int(req, "ms", 10), 0);
}
static const sq_handler_t lref = {.get = lref_get, .aborted = tstream_aborted};

static sq_app_t *make_app(void)
{
    reset_counts();
    sq_app_t *app;
    cr_assert_eq(sq_app_create(&app), 0);
    cr_assert_eq(sq_app_route(app, "/", &root, NULL), 0);
    cr_assert_eq(sq_app_route(app, "/n/{i:int}", &num, NULL), 0);
    cr_assert_eq(sq_app_route(app, "/echo", &echo, NULL), 0);
    cr_assert_eq(sq_app_route(app, "/late", &late, NULL), 0);
    cr_assert_eq(sq_app_route(app, "/stream", &stream, NULL), 0);
    cr_assert_eq(sq_app_route(app, "/tstream", &tstream, NULL), 0);
    cr_assert_eq(sq_app_route(app, "/ref", &ref, NULL), 0);
    cr_assert_eq(sq_app_route(app, "/inject", &inject, NULL), 0);
    cr_assert_eq(sq_app_route(app, "/big", &big, NULL), 0);
    cr_assert_eq(sq_app_route(app, "/lstream", &lstream, NULL), 0);
    cr_assert_eq(sq_app_route(app, "/qbig", &qbig, NULL), 0);
    cr_assert_eq(sq_app_route(app, "/lref", &lref, NULL), 0);
    return app;
}

/* ---- helpers ---- */

#define GET(path) "GET " path " HTTP/1.1\r\nHost: t\r\n\r\n"

static void assert_header(const th_res_t *r, const char *name, const char *want)
{
    const char *v = th_res_header(r, name);
    cr_assert_not_null(v, "no %s header in:\n%s", name, r->head);
    cr_assert_str_eq(v, want, "%s: %s", name, v);
}

static void assert_no_header(const th_res_t *r, const char *name)
{
    cr_assert_null(th_res_header(r, name), "unexpected %s header in:\n%s", name, r->head);
}

/* A healthy request on a new connection: the server goes on serving others. */
static void expect_healthy(int port)
{
    th_expect_healthy(port, "/", "hello");
}

static th_server_t *start(sq_app_t *app, const sq_server_opts_t *opts)
{
    return th_server_start(app, opts);
}

static void stop(th_server_t *ts, sq_app_t *app)
{
    th_server_stop(ts, 1000);
    sq_app_destroy(app);
}

/* ---- keep-alive, pipelining, versions ---- */

Test(http1, keepalive_serves_several_requests_on_one_connection, .timeout = 10)
{
    sq_app_t *app = make_app();
    th_server_t *ts = start(app, NULL);
    th_conn_t c;
    cr_assert_eq(th_conn_open(&c, th_server_port(ts)), 0);
    for (int i = 0; i < 5; i++) {
        char req[64];
        snprintf(req, sizeof(req), "GET /n/%d HTTP/1.1\r\nHost: t\r\n\r\n", i);
        cr_assert_eq(th_conn_sends(&c, req), 0);
        th_res_t r;
        cr_assert_eq(th_conn_read_res(&c, &r, 5000, false), 0);
        cr_assert_eq(r.status, 200);
        char want[16];
        snprintf(want, sizeof(want), "%d", i);
        cr_assert_str_eq(r.body, want);
        assert_no_header(&r, "Connection"); /* HTTP/1.1 keeps alive by default */
        assert_header(&r, "Content-Length", "1");
        assert_header(&r, "Server", "squall");
        cr_assert_not_null(th_res_header(&r, "Date"));
        th_res_free(&r);
    }
    sq_server_stats_t st;
    th_server_stats(ts, &st);
    cr_assert_eq(st.connections_total, 1);
    cr_assert_eq(st.requests, 5);
    th_conn_close(&c);
    stop(ts, app);
    cr_assert_eq(atomic_load(&n_handler), 5);
}

Test(http1, pipelined_16_requests_in_one_write_answered_in_order, .timeout = 10)
{
    sq_app_t *app = make_app();
    th_server_t *ts = start(app, NULL);
    char batch[16 * 64];
    size_t len = 0;
    for (int i = 0; i < 16; i++)
        len += (size_t)snprintf(batch + len, sizeof(batch) - len,
                                "GET /n/%d HTTP/1.1\r\nHost: t\r\n\r\n", i);
    th_conn_t c;
    cr_assert_eq(th_conn_open(&c, th_server_port(ts)), 0);
    cr_assert_eq(th_conn_send(&c, batch, len), 0);
    /* one read loop: responses are taken from whatever the reads brought */
    for (int i = 0; i < 16; i++) {
        th_res_t r;
        cr_assert_eq(th_conn_read_res(&c, &r, 5000, false), 0);
        cr_assert_eq(r.status, 200);
        char want[16];
        snprintf(want, sizeof(want), "%d", i);
        cr_assert_str_eq(r.body, want, "response %d out of order: %s", i, r.body);
        th_res_free(&r);
    }
    /* The 16 answers to one read leave in one write; on loopback they arrive together. */
    cr_expect_leq(c.nreads, 2, "16 pipelined responses took %u reads", c.nreads);
    cr_assert_eq(c.len, 0);
    th_conn_close(&c);
    stop(ts, app);
    cr_assert_eq(atomic_load(&n_handler), 16);
}

Test(http1, pipelined_requests_wait_for_an_async_answer_in_order, .timeout = 10)
{
    sq_app_t *app = make_app();
    th_server_t *ts = start(app, NULL);
    static const char batch[] = GET("/n/1") GET("/late?ms=100") GET("/n/3")
        "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nbody" GET("/n/5");
    th_conn_t c;
    cr_assert_eq(th_conn_open(&c, th_server_port(ts)), 0);
    cr_assert_eq(th_conn_send(&c, batch, sizeof(batch) - 1), 0);
    th_expect_res(&c, 200, "1");
    th_expect_res(&c, 200, "late");
    th_expect_res(&c, 200, "3");
    th_expect_res(&c, 200, "body");
    th_expect_res(&c, 200, "5");
    th_conn_close(&c);
    stop(ts, app);
    cr_assert_eq(atomic_load(&n_handler), 5);
    cr_assert_eq(atomic_load(&late_rc), 0);
}

Test(http1, http10_closes_after_the_response_by_default, .timeout = 10)
{
    sq_app_t *app = make_app();
    th_server_t *ts = start(app, NULL);
    th_conn_t c;
    cr_assert_eq(th_conn_open(&c, th_server_port(ts)), 0);
    cr_assert_eq(th_conn_sends(&c, "GET / HTTP/1.0\r\n\r\n"), 0);
    th_res_t r;
    cr_assert_eq(th_conn_read_res(&c, &r, 5000, false), 0);
    cr_assert_eq(r.status, 200);
    cr_assert_str_eq(r.body, "hello");
    assert_header(&r, "Connection", "close");
    th_res_free(&r);
    cr_assert_eq(th_conn_wait_closed(&c, 5000), 0);
    th_conn_close(&c);
    stop(ts, app);
}

Test(http1, http10_keeps_alive_with_connection_keep_alive, .timeout = 10)
{
    sq_app_t *app = make_app();
    th_server_t *ts = start(app, NULL);
    th_conn_t c;
    cr_assert_eq(th_conn_open(&c, th_server_port(ts)), 0);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(th_conn_sends(&c, "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"), 0);
        th_res_t r;
        cr_assert_eq(th_conn_read_res(&c, &r, 5000, false), 0);
        cr_assert_eq(r.status, 200);
        assert_header(&r, "Connection", "keep-alive");
        assert_header(&r, "Content-Length", "5");
        th_res_free(&r);
    }
    /* the last one without the header: answered, then closed */
    cr_assert_eq(th_conn_sends(&c, "GET / HTTP/1.0\r\n\r\n"), 0);
    th_expect_res(&c, 200, "hello");
    cr_assert_eq(th_conn_wait_closed(&c, 5000), 0);
    th_conn_close(&c);
    stop(ts, app);
}

Test(http1, connection_close_is_answered_then_closed, .timeout = 10)
{
    sq_app_t *app = make_app();
    th_server_t *ts = start(app, NULL);
    th_conn_t c;
    cr_assert_eq(th_conn_open(&c, th_server_port(ts)), 0);
    /* a request pipelined behind the close must not be answered */
    cr_assert_eq(th_conn_sends(&c, "GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
                                   GET("/n/2")),
                 0);
    th_res_t r;
    cr_assert_eq(th_conn_read_res(&c, &r, 5000, false), 0);
    cr_assert_eq(r.status, 200);
    assert_header(&r, "Connection", "close");
    th_res_free(&r);
    cr_assert_eq(th_conn_wait_closed(&c, 5000), 0);
    th_conn_close(&c);
    stop(ts, app);
    cr_assert_eq(atomic_load(&n_handler), 1);
}

Test(http1, head_sends_headers_with_content_length_and_no_body, .timeout = 10)
{
    sq_app_t *app = make_app();
    th_server_t *ts = start(app, NULL);
    th_conn_t c;
    cr_assert_eq(th_conn_open(&c, th_server_port(ts)), 0);
    cr_assert_eq(th_conn_sends(&c, "HEAD / HTTP/1.1\r\nHost: t\r\n\r\n"), 0);
    th_res_t r;
    cr_assert_eq(th_conn_read_res(&c, &r, 5000, true), 0);
    cr_assert_eq(r.status, 200);
    assert_header(&r, "Content-Length", "5");
    assert_header(&r, "Content-Type", "text/plain");
    cr_assert_eq(r.body_len, 0);
    th_res_free(&r);
    /* no stray body bytes: the next answer on the connection parses cleanly */
    cr_assert_eq(th_conn_sends(&c, "HEAD /stream HTTP/1.1\r\nHost: t\r\n\r\n" GET("/n/7")), 0);
    cr_assert_eq(th_conn_read_res(&c, &r, 5000, true), 0);
    cr_assert_eq(r.status, 200);
    th_res_free(&r);
    th_expect_res(&c, 200, "7");
    cr_assert_eq(c.len, 0);
    th_conn_close(&c);
    stop(ts, app);
}

/* ---- request bodies ---- */

static const char chunked_req[] = "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Type: text/x-t\r\n"
                                  "Transfer-Encoding: chunked\r\n\r\n"
                                  "5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n";
static const char cl_req[] = "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Type: text/x-t\r\n"
                             "Content-Length: 11\r\n\r\nhello world";

static void expect_echo(th_conn_t *c)
{
    th_res_t r;
    cr_assert_eq(th_conn_read_res(c, &r, 5000, false), 0);
    cr_assert_eq(r.status, 200, "%s", r.raw);
    cr_assert_str_eq(r.body, "hello world");
    assert_header(&r, "X-Len", "11");
    assert_header(&r, "Content-Type", "text/x-t");
    th_res_free(&r);
}

Test(http1, chunked_request_body_is_decoded, .timeout = 10)
{
    sq_app_t *app = make_app();
    th_server_t *ts = start(app, NULL);
    th_conn_t c;
    cr_assert_eq(th_conn_open(&c, th_server_port(ts)), 0);
    cr_assert_eq(th_conn_send(&c, chunked_req, sizeof(chunked_req) - 1), 0);
    expect_echo(&c);
    /* with a trailer field, which is read and dropped */
    cr_assert_eq(th_conn_sends(&c, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Type: text/x-t\r\n"
                                   "Transfer-Encoding: chunked\r\n\r\n"
                                   "b\r\nhello world\r\n0\r\nX-Trailer: 1\r\n\r\n"),
                 0);
    expect_echo(&c);
    th_conn_close(&c);
    stop(ts, app);
}

Test(http1, chunked_request_body_split_byte_by_byte, .timeout = 20)
{
    sq_app_t *app = make_app();
    th_server_t *ts = start(app, NULL);
    th_conn_t c;
    cr_assert_eq(th_conn_open(&c, th_server_port(ts)), 0);
    cr_assert_eq(th_conn_send_split(&c, chunked_req, sizeof(chunked_req) - 1, 1, 300), 0);
    expect_echo(&c);
    th_conn_close(&c);
    stop(ts, app);
}

/* Every split point, both halves on one connection each (picohttpparser's test idea). */
static void every_split_point(const char *req, size_t len)
{
    sq_app_t *app = make_app();
    th_server_t *ts = start(app, NULL);
    th_conn_t c;
    cr_assert_eq(th_conn_open(&c, th_server_port(ts)), 0);
    for (size_t k = 1; k < len; k++) {
        cr_assert_eq(th_conn_send(&c, req, k), 0);
        /* a moment for the first part to be read on its own: the server shows no sign of
         * it, and nothing here depends on it (two parts read at once are fine too) */
        th_sleep_ms(1);
        cr_assert_eq(th_conn_send(&c, req + k, len - k), 0);
        expect_echo(&c);
    }
    th_conn_close(&c);
    stop(ts, app);
    cr_assert_eq(atomic_load(&n_handler), (int)len - 1);
}

Test(http1, chunked_request_body_split_at_every_point, .timeout = 30)
{
    every_split_point(chunked_req, sizeof(chunked_req) - 1);
}

Test(http1, content_length_body_is_read_whole_and_split, .timeout = 30)
{
    sq_app_t *app = make_app();
    th_server_t *ts = start(app, NULL);
    th_conn_t c;
    cr_assert_eq(th_conn_open(&c, th_server_port(ts)), 0);
    cr_assert_eq(th_conn_send(&c, cl_req, sizeof(cl_req) - 1), 0);
    expect_echo(&c);
    cr_assert_eq(th_conn_send_split(&c, cl_req, sizeof(cl_req) - 1, 1, 300), 0);
    expect_echo(&c);
    th_conn_close(&c);
    stop(ts, app);
    every_split_point(cl_req, sizeof(cl_req) - 1);
}

Test(http1, large_body_and_large_response_cross_many_reads_and_writes, .timeout = 20)
{
    sq_app_t *app = make_app();
    sq_server_opts_t o;
    sq_server_opts_init(&o);
    o.max_body_bytes = 8u << 20;
    th_server_t *ts = start(app, &o);
    size_t n = 3u << 20;
    char *req = malloc(n + 128);
    int h = snprintf(req, 128, "PUT /echo HTTP/1.1\r\nHost: t\r\nContent-Length: %zu\r\n\r\n", n);
    for (size_t i = 0; i < n; i++)
        req[h + i] = (char)('a' + i % 26);
    th_conn_t c;
    cr_assert_eq(th_conn_open(&c, th_server_port(ts)), 0);
    cr_assert_eq(th_conn_send(&c, req, (size_t)h + n), 0);
    th_res_t r;
    cr_assert_eq(th_conn_read_res(&c, &r, 10000, false), 0);
    cr_assert_eq(r.status, 200);
    cr_assert_eq(r.body_len, n);
    cr_assert_eq(memcmp(r.body, req + h, n), 0);
    th_res_free(&r);
    cr_assert_eq(th_conn_sends(&c, GET("/big")), 0);
    cr_assert_eq(th_conn_read_res(&c, &r, 10000, false), 0);
    cr_assert_eq(r.body_len, BIG_LEN);
    th_res_free(&r);
    free(req);
    th_conn_close(&c);
    stop(ts, app);
}

Test(http1, expect_100_continue_is_answered_before_the_body, .timeout = 10)
{
    sq_app_t *app = make_app();
    th_server_t *ts = start(app, NULL);
    th_conn_t c;
    cr_assert_eq(th_conn_open(&c, th_server_port(ts)), 0);
    cr_assert_eq(th_conn_sends(&c, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Type: text/x-t\r\n"
                                   "Expect: 100-continue\r\nContent-Length: 11\r\n\r\n"),
                 0);
    th_res_t r;
    cr_assert_eq(th_conn_read_res(&c, &r, 5000, false), 0);
    cr_assert_eq(r.status, 100, "%s", r.raw);
    cr_assert_str_eq(r.raw, "HTTP/1.1 100 Continue\r\n\r\n");
    th_res_free(&r);
    cr_assert_eq(th_conn_sends(&c, "hello world"), 0);
    expect_echo(&c);
    /* a body the server will refuse gets the refusal, not 100 */
    cr_assert_eq(th_conn_sends(&c, "POST /echo HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n"
                                   "Content-Length: 99999999\r\n\r\n"),
                 0);
    cr_assert_eq(th_conn_read_res(&c, &r, 5000, false), 0);
    cr_assert_eq(r.status, 413, "%s", r.raw);
    th_res_free(&r);
    cr_assert_eq(th_conn_wait_closed(&c, 5000), 0);
    th_conn_close(&c);
    stop(ts, app);
}

/* ---- the bad-request table: malformed input, request-smuggling shapes, limits and
 * deadlines ----
 *
 * One row per input, in the style of picohttpparser's and llhttp's tables: the bytes a
 * client sends on a fresh connection, the status they must get and what must happen
 * after. A refused request (`CLOSED`) gets its status with `Connection: close` and a JSON
 * `detail`, the connection closed with nothing more on it, no handler run for it, one
 * more in the counter its status belongs to (parse_errors for 400/501/505, limit_errors
 * for 413/414/431, timeouts for 408), and the server goes on serving a new connection.
 * An accepted one (`KEPT`) gets its answer, and the connection serves the next request.
 * Every row runs even when one before it failed; each failure names its row. */

typedef enum {
    PROFILE_DEFAULT,        /* sq_server_opts_init's */
    PROFILE_LIMITS,         /* max_body_bytes 1024, max_uri_bytes 256, max_headers 10,
                               max_header_bytes 2048 */
    PROFILE_TRAILER_LIMIT,  /* max_header_bytes 1024 */
    PROFILE_HEADER_TIMEOUT, /* header_timeout_ms 300; the body and idle ones 30 s */
    PROFILE_BODY_TIMEOUT,   /* body_timeout_ms 300; the header and idle ones 30 s */
} profile_t;

typedef enum {
    CLOSED, /* refused: answered with Connection: close, then closed */
    KEPT,   /* accepted: answered, and the connection goes on */
} after_t;

typedef enum {
    SEND_WHOLE,        /* one write */
    SEND_BYTE_BY_BYTE, /* one byte per write, 300 us apart: the server sees many reads */
} send_t;

/* Bytes to send, appended to a growing buffer (for the rows too long to write out). */
typedef struct sbuf {
    char *p;
    size_t len, cap;
} sbuf_t;

typedef struct bad_request {
    const char *name;
    profile_t profile;
    const char *in; /* the bytes (may hold NULs: len counts them) ... */
    size_t len;
    void (*build)(sbuf_t *b); /* ... or these */
    send_t send;
    const char *first; /* a good request sent in front: its answer's body comes first */
    int status;
    after_t after;
    /* KEPT rows: the answer's body (or its length when body is NULL), and a header */
    const char *body;
    size_t body_len;
    const char *header, *value;
    /* deadline rows: the answer comes no earlier than this (and within DEADLINE_MAX_MS) */
    uint64_t min_ms;
} bad_request_t;

/* A deadline of 300 ms must have fired within this, loaded machine or not. */
#define DEADLINE_MAX_MS 2000

/* .in and .len of a string literal (NULs inside included) */
#define IN(lit) .in = (lit), .len = sizeof(lit) - 1

static void sb_put_n(sbuf_t *b, const char *s, size_t n)
{
    if (b->cap - b->len < n + 1) {
        size_t cap = (b->len + n + 1) * 2;
        char *p = realloc(b->p, cap);
        cr_assert_not_null(p);
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_put(sbuf_t *b, const char *s)
{
    sb_put_n(b, s, strlen(s));
}

static void sb_repeat(sbuf_t *b, char ch, size_t n)
{
    for (size_t i = 0; i < n; i++)
        sb_put_n(b, &ch, 1);
}

/* "X-H0: 0\r\n" ... for i in [0, n) */
static void sb_numbered_headers(sbuf_t *b, int n)
{
    for (int i = 0; i < n; i++) {
        char line[32];
        snprintf(line, sizeof(line), "X-H%d: %d\r\n", i, i);
        sb_put(b, line);
    }
}

static void body_of(sbuf_t *b, size_t n)
{
    char head[128];
    snprintf(head, sizeof(head), "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: %zu\r\n\r\n",
             n);
    sb_put(b, head);
    sb_repeat(b, 'b', n);
}

static void body_1025(sbuf_t *b)
{
    body_of(b, 1025);
}

static void body_1024(sbuf_t *b)
{
    body_of(b, 1024);
}

static void chunks_of_600_twice(sbuf_t *b)
{
    sb_put(b, "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n258\r\n");
    sb_repeat(b, 'b', 600);
    sb_put(b, "\r\n258\r\n");
    sb_repeat(b, 'b', 600);
    sb_put(b, "\r\n0\r\n\r\n");
}

static void uri_of_300(sbuf_t *b)
{
    sb_put(b, "GET /");
    sb_repeat(b, 'p', 300);
    sb_put(b, " HTTP/1.1\r\nHost: t\r\n\r\n");
}

static void headers_11(sbuf_t *b)
{
    sb_put(b, "GET / HTTP/1.1\r\nHost: t\r\n");
    sb_numbered_headers(b, 10);
    sb_put(b, "\r\n");
}

static void headers_10(sbuf_t *b)
{
    sb_put(b, "GET / HTTP/1.1\r\nHost: t\r\n");
    sb_numbered_headers(b, 9);
    sb_put(b, "\r\n");
}

static void header_value_of_2100(sbuf_t *b)
{
    sb_put(b, "GET / HTTP/1.1\r\nHost: t\r\nX-Big: ");
    sb_repeat(b, 'v', 2100);
    sb_put(b, "\r\n\r\n");
}

static void header_name_of_2102(sbuf_t *b)
{
    sb_put(b, "GET / HTTP/1.1\r\nHost: t\r\nX-");
    sb_repeat(b, 'v', 2100);
    sb_put(b, ": 1\r\n\r\n");
}

static void header_lines_of_250_times_8(sbuf_t *b)
{
    sb_put(b, "GET / HTTP/1.1\r\nHost: t\r\n");
    for (int i = 0; i < 8; i++) {
        char name[16];
        snprintf(name, sizeof(name), "X-%d: ", i);
        sb_put(b, name);
        sb_repeat(b, 'v', 250);
        sb_put(b, "\r\n");
    }
    sb_put(b, "\r\n");
}

static void trailer_of_2047(sbuf_t *b)
{
    sb_put(b, "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
              "3\r\nabc\r\n0\r\nX-Trailer: ");
    sb_repeat(b, 't', 2047);
    sb_put(b, "\r\n\r\n");
}

#define CHUNKED_POST "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"

static const bad_request_t bad_requests[] = {
    /* RFC 9112 §6.3: Content-Length with Transfer-Encoding is how requests are smuggled */
    {"CL+TE: a request smuggled behind",
     IN("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
        "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        "GET /n/1 HTTP/1.1\r\n\r\n"),
     .status = 400},
    {"TE+CL",
     IN("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
        "Content-Length: 5\r\n\r\n0\r\n\r\n"),
     .status = 400},
    /* duplicate or invalid Content-Length */
    {"duplicate CL: 3 and 8",
     IN("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n"
        "Content-Length: 8\r\n\r\nabcdefgh"),
     .status = 400},
    {"duplicate CL: 3 and 3",
     IN("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n"
        "Content-Length: 3\r\n\r\nabc"),
     .status = 400},
    {"duplicate CL: a list",
     IN("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3, 3\r\n\r\nabc"), .status = 400},
    {"invalid CL: 3x", IN("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3x\r\n\r\nabc"),
     .status = 400},
    {"invalid CL: -1", IN("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\nabc"),
     .status = 400},
    {"invalid CL: +3", IN("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: +3\r\n\r\nabc"),
     .status = 400},
    {"invalid CL: 0x3", IN("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 0x3\r\n\r\nabc"),
     .status = 400},
    {"invalid CL: empty", IN("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: \r\n\r\nabc"),
     .status = 400},
    {"invalid CL: 23 digits",
     IN("POST /echo HTTP/1.1\r\nHost: t\r\n"
        "Content-Length: 99999999999999999999999\r\n\r\nabc"),
     .status = 400},
    /* chunk sizes */
    {"chunk size: zz", IN(CHUNKED_POST "zz\r\nabc\r\n0\r\n\r\n"), .status = 400},
    {"chunk size: -3", IN(CHUNKED_POST "-3\r\nabc\r\n0\r\n\r\n"), .status = 400},
    {"chunk size: 2^64", IN(CHUNKED_POST "10000000000000000\r\nabc\r\n0\r\n\r\n"), .status = 400},
    {"chunk size: a space after", IN(CHUNKED_POST "3 \r\nabc\r\n0\r\n\r\n"), .status = 400},
    {"chunk data longer than its size", IN(CHUNKED_POST "3\r\nabcdef\r\n0\r\n\r\n"), .status = 400},
    /* a size line or chunk ended by CR and something other than LF (llhttp's strict mode) */
    {"chunk size line ended by CR X", IN(CHUNKED_POST "3\rXabc\r\n0\r\n\r\n"), .status = 400},
    {"chunk data ended by CR X", IN(CHUNKED_POST "3\r\nabc\rX0\r\n\r\n"), .status = 400},
    /* RFC 9112 §5.2: a server MUST reject obs-fold (or replace it); squall rejects */
    {"obs-fold: SP", IN("GET / HTTP/1.1\r\nHost: t\r\nX-A: a\r\n b\r\n\r\n"), .status = 400},
    {"obs-fold: HTAB", IN("GET / HTTP/1.1\r\nHost: t\r\nX-A: a\r\n\tb\r\n\r\n"), .status = 400},
    {"obs-fold: after an empty value", IN("GET / HTTP/1.1\r\nHost: t\r\nX-A:\r\n b\r\n\r\n"),
     .status = 400},
    {"obs-fold: blanks only", IN("GET / HTTP/1.1\r\nHost: t\r\nX-A: a\r\n   \r\n\r\n"),
     .status = 400},
    /* the classic: hide a Transfer-Encoding from a folding front end */
    {"obs-fold: hiding Transfer-Encoding",
     IN("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
        "X: y\r\n Transfer-Encoding: chunked\r\n\r\nabcde"),
     .status = 400},
    /* llhttp 8.1 accepts a bare LF after the request line, as the blank line ending the
     * head and after the last chunk; squall does not (RFC 9112 §2.2 allows it, but a front
     * end that disagrees would split the stream differently) */
    {"bare LF: after the request line", IN("GET / HTTP/1.1\nHost: t\r\n\r\n"), .status = 400},
    {"bare LF: as the blank line", IN("GET / HTTP/1.1\r\nHost: t\r\n\n"), .status = 400},
    {"bare LF: as the blank line, a request behind",
     IN("GET / HTTP/1.1\r\nHost: t\r\n\nGET /n/1 HTTP/1.1\r\nHost: t\r\n\r\n"), .status = 400},
    {"bare LF: HTTP/1.0, everywhere", IN("GET / HTTP/1.0\n\n"), .status = 400},
    {"bare LF: every line", IN("GET / HTTP/1.1\nHost: t\nX: y\n\n"), .status = 400},
    {"bare LF: after a header", IN("GET / HTTP/1.1\r\nHost: t\nX: y\r\n\r\n"), .status = 400},
    {"bare LF: after the last chunk, a request behind",
     IN(CHUNKED_POST "3\r\nabc\r\n0\r\n\nGET /n/1 HTTP/1.1\r\nHost: t\r\n\r\n"), .status = 400},
    {"bare LF: after a chunk size", IN(CHUNKED_POST "3\nabc\r\n0\r\n\r\n"), .status = 400},
    {"bare LF: after a trailer", IN(CHUNKED_POST "3\r\nabc\r\n0\r\nX-T: 1\n\r\n"), .status = 400},
    /* a CR that is not followed by LF */
    {"bare CR: as the blank line", IN("GET / HTTP/1.1\r\nHost: t\r\n\rX"), .status = 400},
    {"bare CR: after the request line", IN("GET / HTTP/1.1\rHost: t\r\n\r\n"), .status = 400},
    {"bare CR: after a header", IN("GET / HTTP/1.1\r\nHost: t\rX: y\r\n\r\n"), .status = 400},
    /* the same, one byte per read: the checks keep their state across reads */
    {"bare LF split: as the blank line, a request behind",
     IN("GET / HTTP/1.1\r\nHost: t\r\n\nGET /n/1 HTTP/1.1\r\nHost: t\r\n\r\n"),
     .send = SEND_BYTE_BY_BYTE, .status = 400},
    {"bare LF split: after the request line", IN("GET / HTTP/1.1\nHost: t\r\n\r\n"),
     .send = SEND_BYTE_BY_BYTE, .status = 400},
    {"obs-fold split", IN("GET / HTTP/1.1\r\nHost: t\r\nX: a\r\n b\r\n\r\n"),
     .send = SEND_BYTE_BY_BYTE, .status = 400},
    {"bare LF split: after the last chunk, a request behind",
     IN(CHUNKED_POST "3\r\nabc\r\n0\r\n\nGET /n/1 HTTP/1.1\r\nHost: t\r\n\r\n"),
     .send = SEND_BYTE_BY_BYTE, .status = 400},
    /* NUL bytes in the head */
    {"NUL: in a value", IN("GET / HTTP/1.1\r\nHost: t\r\nX-A: a\0b\r\n\r\n"), .status = 400},
    {"NUL: in a name", IN("GET / HTTP/1.1\r\nHost: t\r\nX\0A: ab\r\n\r\n"), .status = 400},
    {"NUL: in the target", IN("GET /a\0b HTTP/1.1\r\nHost: t\r\n\r\n"), .status = 400},
    {"NUL: in Host", IN("GET / HTTP/1.1\r\nHost: t\0evil\r\n\r\n"), .status = 400},
    /* Host: one, and only one, in HTTP/1.1 (RFC 9112 §3.2) */
    {"Host: none", IN("GET / HTTP/1.1\r\n\r\n"), .status = 400},
    {"Host: only X-Host", IN("GET / HTTP/1.1\r\nX-Host: t\r\n\r\n"), .status = 400},
    {"Host: two", IN("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"), .status = 400},
    {"Host: two equal, HTTP/1.0", IN("GET / HTTP/1.0\r\nHost: a\r\nhost: a\r\n\r\n"),
     .status = 400},
    /* transfer codings squall does not decode: 501; chunked not last or twice: 400 */
    {"TE: gzip", IN("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\nabc"),
     .status = 501},
    {"TE: foo", IN("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: foo\r\n\r\n"),
     .status = 501},
    {"TE: identity", IN("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: identity\r\n\r\n"),
     .status = 501},
    {"TE: gzip, chunked",
     IN("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked"
        "\r\n\r\n3\r\nabc\r\n0\r\n\r\n"),
     .status = 501},
    {"TE: gzip then chunked on two lines",
     IN("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n"
        "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"),
     .status = 501},
    {"TE: chunked, gzip (RFC 9112 §6.3: chunked not last)",
     IN("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, gzip"
        "\r\n\r\n3\r\nabc\r\n0\r\n\r\n"),
     .status = 400},
    {"TE: chunked, chunked",
     IN("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, chunked"
        "\r\n\r\n3\r\nabc\r\n0\r\n\r\n"),
     .status = 400},
    {"TE: chunked on two lines",
     IN("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
        "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"),
     .status = 400},
    /* RFC 9112 §6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing */
    {"TE in HTTP/1.0",
     IN("POST /echo HTTP/1.0\r\nTransfer-Encoding: chunked\r\n"
        "\r\n3\r\nabc\r\n0\r\n\r\n"),
     .status = 400},
    /* versions */
    {"version HTTP/2.0", IN("GET / HTTP/2.0\r\nHost: t\r\n\r\n"), .status = 505},
    {"version HTTP/1.2", IN("GET / HTTP/1.2\r\nHost: t\r\n\r\n"), .status = 505},
    {"version HTTP/0.9", IN("GET / HTTP/0.9\r\nHost: t\r\n\r\n"), .status = 505},
    {"version HTTP/3.0", IN("GET / HTTP/3.0\r\nHost: t\r\n\r\n"), .status = 505},
    /* a version that is not digits is malformed (400), after another request too */
    {"version HTTP/st", IN("GET / HTTP/st\r\nHost: t\r\n\r\n"), .status = 400},
    {"version HTTP/1.x", IN("GET / HTTP/1.x\r\nHost: t\r\n\r\n"), .status = 400},
    /* garbage and bad tokens */
    {"garbage: HELLO", IN("HELLO\r\n\r\n"), .status = 400},
    {"garbage: lower-case method", IN("get / HTTP/1.1\r\nHost: t\r\n\r\n"), .status = 400},
    {"garbage: space before the colon", IN("GET / HTTP/1.1\r\nHost : t\r\n\r\n"), .status = 400},
    {"garbage: space in a name", IN("GET / HTTP/1.1\r\nHo st: t\r\n\r\n"), .status = 400},
    {"garbage: space before the first header", IN("GET / HTTP/1.1\r\n Host: t\r\n\r\n"),
     .status = 400},
    {"garbage: HTAB in the target", IN("GET /a\tb HTTP/1.1\r\nHost: t\r\n\r\n"), .status = 400},
    {"garbage: a control byte in a value",
     IN("GET / HTTP/1.1\r\nHost: t\r\nX: a\x01"
        "b\r\n\r\n"),
     .status = 400},
    /* a bad request pipelined behind a good one: the good one is answered first */
    {"garbage: behind a good request", IN(GET("/n/1") "BAD\r\n\r\n"), .first = "1", .status = 400},
    /* a trailer does not reach the handler as a header (RFC 9110 §6.5.1) */
    {"trailer: not a header", IN(CHUNKED_POST "3\r\nabc\r\n0\r\nContent-Type: evil/x\r\n\r\n"),
     .status = 200, .after = KEPT, .body = "abc", .header = "Content-Type",
     .value = "application/octet-stream"},

    /* limits: 413, 414, 431; exactly at a limit is fine */
    {"limit: body by Content-Length, 1 byte over", PROFILE_LIMITS, .build = body_1025,
     .status = 413},
    {"limit: body by Content-Length, at the limit", PROFILE_LIMITS, .build = body_1024,
     .status = 200, .after = KEPT, .body_len = 1024},
    {"limit: body by chunks that each fit", PROFILE_LIMITS, .build = chunks_of_600_twice,
     .status = 413},
    {"limit: target of 300 bytes", PROFILE_LIMITS, .build = uri_of_300, .status = 414},
    {"limit: 11 header lines", PROFILE_LIMITS, .build = headers_11, .status = 431},
    {"limit: 10 header lines", PROFILE_LIMITS, .build = headers_10, .status = 200, .after = KEPT,
     .body = "hello"},
    {"limit: a header value of 2100 bytes", PROFILE_LIMITS, .build = header_value_of_2100,
     .status = 431},
    {"limit: a header name of 2102 bytes", PROFILE_LIMITS, .build = header_name_of_2102,
     .status = 431},
    {"limit: header lines that add up", PROFILE_LIMITS, .build = header_lines_of_250_times_8,
     .status = 431},
    /* trailers count against the header limit */
    {"limit: a trailer of 2058 bytes", PROFILE_TRAILER_LIMIT, .build = trailer_of_2047,
     .status = 431},

    /* deadlines: a head or a body that stops coming gets 408 at its deadline */
    {"deadline: a partial head (slowloris)", PROFILE_HEADER_TIMEOUT,
     IN("GET / HTTP/1.1\r\nHost: t\r\nX-Slow: "), .status = 408, .min_ms = 250},
    {"deadline: a stalled body", PROFILE_BODY_TIMEOUT,
     IN("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc"), .status = 408,
     .min_ms = 250},
};

static void profile_opts(profile_t p, sq_server_opts_t *o)
{
    sq_server_opts_init(o);
    switch (p) {
    case PROFILE_DEFAULT:
        break;
    case PROFILE_LIMITS:
        o->max_body_bytes = 1024;
        o->max_uri_bytes = 256;
        o->max_headers = 10;
        o->max_header_bytes = 2048;
        break;
    case PROFILE_TRAILER_LIMIT:
        o->max_header_bytes = 1024;
        break;
    case PROFILE_HEADER_TIMEOUT:
        o->header_timeout_ms = 300;
        o->body_timeout_ms = 30000;
        o->idle_timeout_ms = 30000;
        break;
    case PROFILE_BODY_TIMEOUT:
        o->header_timeout_ms = 30000;
        o->body_timeout_ms = 300;
        o->idle_timeout_ms = 30000;
        break;
    }
}

/* The counter a refusal with `status` belongs to (server.h). */
static uint64_t refusal_count(const sq_server_stats_t *st, int status)
{
    switch (status) {
    case 408:
        return st->timeouts;
    case 413:
    case 414:
    case 431:
        return st->limit_errors;
    default:
        return st->parse_errors;
    }
}

/* TH_ROW_CHECK for the row at hand */
#define ROW_CHECK(cond, fmt, ...) TH_ROW_CHECK(row->name, cond, fmt, ##__VA_ARGS__)

/* Reads one answer on c and checks its status and body; on failure marks the test failed,
 * naming the row and `what`, and returns false. */
static bool row_expect_res(const bad_request_t *row, th_conn_t *c, int status, const char *body,
                           const char *what)
{
    th_res_t r;
    int rc = th_conn_read_res(c, &r, 5000, false);
    bool ok = rc == 0 && r.status == status && strcmp(r.body, body) == 0;
    if (!ok)
        cr_expect_fail("[%s] %s: want %d \"%s\", got %s:\n%s", row->name, what, status, body,
                       uv_err_name(rc), rc == 0 ? r.raw : "");
    th_res_free(&r);
    return ok;
}

static void run_bad_request(th_server_t *ts, const bad_request_t *row)
{
    int port = th_server_port(ts);
    sbuf_t built = {0};
    const char *in = row->in;
    size_t len = row->len;
    if (row->build != NULL) {
        row->build(&built);
        in = built.p;
        len = built.len;
    }
    sq_server_stats_t st0, st1;
    th_server_stats(ts, &st0);
    int handlers0 = atomic_load(&n_handler);
    th_conn_t c = {.fd = -1}, h = {.fd = -1};
    th_res_t r = {0};

    ROW_CHECK(th_conn_open(&c, port) == 0, "connect");
    uint64_t t0 = th_now_ms();
    int rc = row->send == SEND_BYTE_BY_BYTE ? th_conn_send_split(&c, in, len, 1, 300)
                                            : th_conn_send(&c, in, len);
    ROW_CHECK(rc == 0, "send: %s", uv_err_name(rc));
    if (row->first != NULL &&
        !row_expect_res(row, &c, 200, row->first, "the good request in front"))
        goto out;
    rc = th_conn_read_res(&c, &r, 5000, false);
    uint64_t took = th_now_ms() - t0;
    ROW_CHECK(rc == 0, "reading the answer: %s", uv_err_name(rc));
    ROW_CHECK(r.status == row->status, "want %d, got:\n%s", row->status, r.raw);
    if (row->min_ms > 0) {
        ROW_CHECK(took >= row->min_ms, "answered after %llu ms, before its deadline",
                  (unsigned long long)took);
        ROW_CHECK(took < DEADLINE_MAX_MS, "answered after %llu ms", (unsigned long long)took);
    }
    const char *v;
    if (row->after == CLOSED) {
        v = th_res_header(&r, "Connection");
        ROW_CHECK(v != NULL && strcmp(v, "close") == 0, "Connection: %s", v ? v : "(none)");
        v = th_res_header(&r, "Content-Type");
        ROW_CHECK(v != NULL && strcmp(v, "application/json") == 0, "Content-Type: %s",
                  v ? v : "(none)");
        json_t *j = json_loads(r.body, 0, NULL);
        bool detail = json_is_string(json_object_get(j, "detail"));
        json_decref(j);
        ROW_CHECK(detail, "not a JSON detail: %s", r.body);
        rc = th_conn_wait_closed(&c, 5000);
        ROW_CHECK(rc == 0, "connection not closed after %d (%s): left %.*s", row->status,
                  uv_err_name(rc), (int)c.len, c.buf ? c.buf : "");
        /* the server goes on: a healthy request on a new connection */
        ROW_CHECK(th_conn_open(&h, port) == 0, "connect after");
        ROW_CHECK(th_conn_sends(&h, GET("/")) == 0, "send after");
        if (!row_expect_res(row, &h, 200, "hello", "a new connection after"))
            goto out;
    } else {
        if (row->body != NULL)
            ROW_CHECK(r.body_len == strlen(row->body) && strcmp(r.body, row->body) == 0,
                      "body \"%s\", want \"%s\"", r.body, row->body);
        else
            ROW_CHECK(r.body_len == row->body_len, "body of %zu bytes, want %zu", r.body_len,
                      row->body_len);
        if (row->header != NULL) {
            v = th_res_header(&r, row->header);
            ROW_CHECK(v != NULL && strcmp(v, row->value) == 0, "%s: %s, want %s", row->header,
                      v ? v : "(none)", row->value);
        }
        /* the connection goes on */
        ROW_CHECK(th_conn_sends(&c, GET("/n/7")) == 0, "send after");
        if (!row_expect_res(row, &c, 200, "7", "the next request on the connection"))
            goto out;
    }
    /* handlers: the good request in front, the row's own (none when refused), the one after */
    int handlers = (row->first != NULL) + (row->after == KEPT) + 1;
    th_server_stats(ts, &st1);
    int ran = atomic_load(&n_handler) - handlers0;
    ROW_CHECK(ran == handlers, "%d handlers ran, want %d", ran, handlers);
    uint64_t refusals = refusal_count(&st1, row->status) - refusal_count(&st0, row->status);
    uint64_t r4 = st1.responses_4xx - st0.responses_4xx;
    uint64_t r5 = st1.responses_5xx - st0.responses_5xx;
    if (row->after == CLOSED) {
        ROW_CHECK(refusals == 1, "the refusal counted %llu times", (unsigned long long)refusals);
        ROW_CHECK(r4 == (row->status < 500) && r5 == (row->status >= 500),
                  "responses_4xx +%llu, responses_5xx +%llu", (unsigned long long)r4,
                  (unsigned long long)r5);
    } else {
        ROW_CHECK(st1.parse_errors == st0.parse_errors && st1.limit_errors == st0.limit_errors &&
                      st1.timeouts == st0.timeouts && r4 == 0 && r5 == 0,
                  "an accepted request was counted as refused");
    }
out:
    th_res_free(&r);
    th_conn_close(&c);
    th_conn_close(&h);
    free(built.p);
}

Test(smuggling, every_row_of_the_bad_request_table, .timeout = 120)
{
    sq_app_t *app = make_app();
    th_server_t *ts = NULL;
    profile_t profile = PROFILE_DEFAULT;
    size_t n = sizeof(bad_requests) / sizeof(bad_requests[0]);
    for (size_t i = 0; i < n; i++) {
        const bad_request_t *row = &bad_requests[i];
        if (ts == NULL || row->profile != profile) {
            if (ts != NULL)
                th_server_stop(ts, 1000);
            sq_server_opts_t o;
            profile_opts(row->profile, &o);
            ts = start(app, &o);
            profile = row->profile;
        }
        run_bad_request(ts, row);
    }
    th_server_stop(ts, 1000);
    sq_app_destroy(app);
}

/* ---- timeouts ---- */

static th_server_t *start_timeouts(sq_app_t *app, uint64_t header_ms, uint64_t body_ms,
                                   uint64_t idle_ms)
{
    sq_server_opts_t o;
    sq_server_opts_init(&o);
    o.header_timeout_ms = header_ms;
    o.body_timeout_ms = body_ms;
    o.idle_timeout_ms = idle_ms;
    return start(app, &o);
}

/* Reads the 408 and the close; returns the milliseconds since t0. */
static uint64_t expect_408_and_close(th_conn_t *c, uint64_t t0)
{
    th_res_t r;
    int rc = th_conn_read_res(c, &r, 5000, false);
    cr_assert_eq(rc, 0, "%s", uv_err_name(rc));
    uint64_t took = th_now_ms() - t0;
    cr_assert_eq(r.status, 408, "%s", r.raw);
    assert_header(&r, "Connection", "close");
    th_res_free(&r);
    cr_assert_eq(th_conn_wait_closed(c, 5000), 0);
    return took;
}

Test(timeouts, slowloris_trickle_does_not_extend_the_header_deadline, .timeout = 30)
{
    sq_app_t *app = make_app();
    th_server_t *ts = start_timeouts(app, 400, 30000, 30000);
    th_conn_t c;
    cr_assert_eq(th_conn_open(&c, th_server_port(ts)), 0);
    uint64_t t0 = th_now_ms();
    char head[200];
    int hl = snprintf(head, sizeof(head), "GET / HTTP/1.1\r\nHost: t\r\nX-Slow: ");
    memset(head + hl, 'a', sizeof(head) - (size_t)hl);
    /* one byte every 50 ms: 10 s for the whole head, far past the 400 ms deadline and the
     * 2 s (5x) allowed for it on a loaded machine */
    size_t i = 0;
    while (i < sizeof(head) && th_conn_send(&c, head + i, 1) == 0) {
        i++;
        if (th_conn_read_some(&c, 50) > 0 || c.eof)
            break;
    }
    uint64_t took = expect_408_and_close(&c, t0);
    cr_assert_lt(took, 2000, "408 after %llu ms", (unsigned long long)took);
    cr_assert_lt(i, sizeof(head), "the whole head went out: the deadline never came");
    th_conn_close(&c);
    stop(ts, app);
}

Test(timeouts, idle_keepalive_connection_is_closed_quietly, .timeout = 10)
{
    sq_app_t *app = make_app();
    th_server_t *ts = start_timeouts(app, 30000, 30000, 300);
    th_conn_t c;
    cr_assert_eq(th_conn_open(&c, th_server_port(ts)), 0);
    uint64_t t0 = th_now_ms(); /* the idle clock starts later, when the answer is queued */
    cr_assert_eq(th_conn_sends(&c, GET("/")), 0);
    th_expect_res(&c, 200, "hello");
    cr_assert_eq(th_conn_wait_closed(&c, 5000), 0); /* no 408: nothing was asked */
    uint64_t took = th_now_ms() - t0;
    cr_assert_geq(took, 250, "closed after %llu ms", (unsigned long long)took);
    cr_assert_lt(took, 2000, "closed after %llu ms", (unsigned long long)took);
    th_conn_close(&c);
    /* a connection that never sends anything is idle too */
    t0 = th_now_ms(); /* before the connect: the idle clock starts at the accept */
    cr_assert_eq(th_conn_open(&c, th_server_port(ts)), 0);
    cr_assert_eq(th_conn_wait_closed(&c, 5000), 0);
    cr_assert_geq(th_now_ms() - t0, 250);
    th_conn_close(&c);
    /* activity restarts the idle clock */
    cr_assert_eq(th_conn_open(&c, th_server_port(ts)), 0);
    /* quiet for 60 ms at a time (a fifth of the timeout), eight times: 480 ms in all */
    for (int i = 0; i < 8; i++) {
        th_sleep_ms(60);
        cr_assert_eq(th_conn_sends(&c, GET("/")), 0);
        th_expect_res(&c, 200, "hello");
    }
    th_conn_close(&c);
    sq_server_stats_t st;
    th_server_stats(ts, &st);
    cr_assert_eq(st.timeouts, 0);
    stop(ts, app);
}

/* ---- asynchronous handlers and clients that leave ---- */

Test(async, handler_answers_later_from_a_timer, .timeout = 10)
{
    sq_app_t *app = make_app();
    th_server_t *ts = start(app, NULL);
    th_conn_t c;
    cr_assert_eq(th_conn_open(&c, th_server_port(ts)), 0);
    uint64_t t0 = th_now_ms();
    cr_assert_eq(th_conn_sends(&c, GET("/late?ms=150")), 0);
    th_expect_res(&c, 200, "late");
    cr_assert_geq(th_now_ms() - t0, 140);
    /* the connection is reusable afterwards */
    cr_assert_eq(th_conn_sends(&c, GET("/n/9")), 0);
    th_expect_res(&c, 200, "9");
    th_conn_close(&c);
    stop(ts, app);
    cr_assert_eq(atomic_load(&late_rc), 0);
    cr_assert_eq(atomic_load(&n_aborted), 0);
}

Test(async, answer_after_client_left_is_canceled_and_aborted_runs_once, .timeout = 10)
{
    sq_app_t *app = make_app();
    th_server_t *ts = start(app, NULL);
    th_conn_t c;
    cr_assert_eq(th_conn_open(&c, th_server_port(ts)), 0);
    cr_assert_eq(th_conn_sends(&c, GET("/late?ms=300")), 0);
    cr_assert_eq(th_wait_atomic(&n_handler, 1, 5000), 1);
    th_conn_abort(&c); /* a reset while the handler works (a FIN alone is a half-close,
                          which is answered: regress_http/half_close_*) */
    cr_assert_eq(th_wait_atomic(&n_aborted, 1, 5000), 1, ".aborted not called");
    cr_assert_eq(th_wait_atomic(&n_late_done, 1, 5000), 1);
    cr_assert_eq(atomic_load(&late_rc), UV_ECANCELED, "sq_res_send returned %s",
                 sq_err_name(atomic_load(&late_rc)));
    sq_server_stats_t st;
    th_server_stats(ts, &st);
    cr_assert_eq(st.aborted, 1);
    cr_assert_eq(st.connections_open, 0);
    expect_healthy(th_server_port(ts));
    stop(ts, app);
    cr_assert_eq(atomic_load(&n_aborted), 1);
    cr_assert_eq(atomic_load(&n_late_done), 1);
}

Test(async, client_reset_before_the_answer_aborts_once, .timeout = 10)
{
    sq_app_t *app = make_app();
    th_server_t *ts = start(app, NULL);
    /* several at once, with a reset instead of a FIN, and one pipelined request waiting
     * behind the async one */
    th_conn_t c[4];
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(th_conn_open(&c[i], th_server_port(ts)), 0);
        cr_assert_eq(th_conn_sends(&c[i], GET("/late?ms=200") GET("/n/1")), 0);
    }
    cr_assert_eq(th_wait_atomic(&n_handler, 4, 5000), 4);
    for (int i = 0; i < 4; i++)
        th_conn_abort(&c[i]);
    cr_assert_eq(th_wait_atomic(&n_late_done, 4, 5000), 4);
    stop(ts, app);
    cr_assert_eq(atomic_load(&n_aborted), 4);
    cr_assert_eq(atomic_load(&late_rc), UV_ECANCELED);
    cr_assert_eq(atomic_load(&n_handler), 4); /* the pipelined ones never ran */
}

Test(async, client_closing_before_the_request_is_complete_runs_no_handler, .timeout = 10)
{
    sq_app_t *app = make_app();
    th_server_t *ts = start(app, NULL);
    static const char *partial[] = {"GET / HT", "GET / HTTP/1.1\r\nHost: t\r\n",
                                    "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 9\r\n\r\nab"};
    /* Each partial request on a fresh connection (the server may see it and the close in
     * one read or two), and behind a whole request in the same write (its answer says the
     * server has read the partial one too); the client leaves with a FIN or a reset. */
    for (int i = 0; i < 3; i++) {
        for (int behind = 0; behind < 2; behind++) {
            for (int rst = 0; rst < 2; rst++) {
                char buf[256];
                snprintf(buf, sizeof(buf), "%s%s", behind ? GET("/n/1") : "", partial[i]);
                th_conn_t c;
                cr_assert_eq(th_conn_open(&c, th_server_port(ts)), 0);
                cr_assert_eq(th_conn_sends(&c, buf), 0);
                if (behind)
                    th_expect_res(&c, 200, "1");
                if (rst)
                    th_conn_abort(&c);
                else
                    th_conn_close(&c);
            }
        }
    }
    expect_healthy(th_server_port(ts));
    cr_assert_eq(th_server_wait_open(ts, 0, 5000), 0, "a connection the client left is still open");
    stop(ts, app);
    cr_assert_eq(atomic_load(&n_handler), 6 + 1, "a handler ran for a partial request");
    cr_assert_eq(atomic_load(&n_aborted), 0);
}

Test(async, client_closing_during_a_streamed_response_aborts_the_handler, .timeout = 10)
{
    sq_app_t *app = make_app();
    th_server_t *ts = start(app, NULL);
    th_conn_t c;
    cr_assert_eq(th_conn_open(&c, th_server_port(ts)), 0);
    cr_assert_eq(th_conn_sends(&c, GET("/tstream?ms=30&n=1000")), 0);
    /* wait for the head and a piece or two, then leave */
    while (memmem(c.buf ? c.buf : "", c.len, "piece-1", 7) == NULL && !c.eof)
        cr_assert_gt(th_conn_read_some(&c, 5000), 0);
    th_conn_close(&c);
    cr_assert_eq(th_wait_atomic(&n_stream_done, 1, 5000), 1);
    stop(ts, app);
    cr_assert_eq(atomic_load(&n_aborted), 1);
    cr_assert_eq(atomic_load(&end_rc), UV_ECANCELED, "sq_res_end: %s",
                 sq_err_name(atomic_load(&end_rc)));
    /* every write callback ran once: those sent with 0, the rest with an error */
    int wcb = atomic_load(&n_wcb);
    cr_assert_geq(wcb, 2);
    cr_assert_eq(atomic_load(&n_wcb_ok) + atomic_load(&n_wcb_err), wcb);
}

Test(async, client_closing_during_a_large_response_is_harmless, .timeout = 10)
{
    sq_app_t *app = make_app();
    th_server_t *ts = start(app, NULL);
    for (int rst = 0; rst < 2; rst++) {
        th_conn_t c;
        cr_assert_eq(th_conn_open(&c, th_server_port(ts)), 0);
        cr_assert_eq(th_conn_sends(&c, GET("/big") GET("/big")), 0);
        cr_assert_gt(th_conn_read_some(&c, 5000), 0);
        if (rst)
            th_conn_abort(&c);
        else
            th_conn_close(&c);
    }
    expect_healthy(th_server_port(ts));
    stop(ts, app);
    cr_assert_eq(atomic_load(&n_aborted), 0);
}

Test(async, client_closing_after_the_response_is_harmless, .timeout = 10)
{
    sq_app_t *app = make_app();
    th_server_t *ts = start(app, NULL);
    for (int rst = 0; rst < 2; rst++) {
        th_conn_t c;
        cr_assert_eq(th_conn_open(&c, th_server_port(ts)), 0);
        cr_assert_eq(th_conn_sends(&c, GET("/late?ms=10")), 0);
        th_expect_res(&c, 200, "late");
        if (rst)
            th_conn_abort(&c);
        else
            th_conn_close(&c);
    }
    expect_healthy(th_server_port(ts));
    stop(ts, app);
    cr_assert_eq(atomic_load(&n_aborted), 0);
    cr_assert_eq(atomic_load(&late_rc), 0);
}

/* ---- responses ---- */

Test(responses, streaming_uses_chunked_framing_and_calls_each_write_callback_once,
     .timeout = 10)
{
    sq_app_t *app = make_app();
    th_server_t *ts = start(app, NULL);
    th_conn_t c;
    cr_assert_eq(th_conn_open(&c, th_server_port(ts)), 0);
    cr_assert_eq(th_conn_sends(&c, GET("/stream")), 0);
    th_res_t r;
    cr_assert_eq(th_conn_read_res(&c, &r, 5000, false), 0);
    cr_assert_eq(r.status, 200);
    cr_assert(r.chunked);
    assert_no_header(&r, "Content-Length");
    cr_assert_str_eq(r.body, "first,second,third");
    const char *body = strstr(r.raw, "\r\n\r\n") + 4;
    cr_assert_str_eq(body, "6\r\nfirst,\r\n7\r\nsecond,\r\n5\r\nthird\r\n0\r\n\r\n");
    th_res_free(&r);
    /* a streamed answer from a timer, then the connection goes on */
    cr_assert_eq(th_conn_sends(&c, GET("/tstream?ms=10&n=3") GET("/n/4")), 0);
    cr_assert_eq(th_conn_read_res(&c, &r, 5000, false), 0);
    cr_assert(r.chunked);
    cr_assert_str_eq(r.body, "piece-0\npiece-1\npiece-2\n");
    th_res_free(&r);
    th_expect_res(&c, 200, "4");
    th_conn_close(&c);
    stop(ts, app);
    cr_assert_eq(atomic_load(&n_wcb), 6);
    cr_assert_eq(atomic_load(&n_wcb_ok), 6);
    cr_assert_eq(atomic_load(&end_rc), 0);
}

Test(responses, streaming_to_http10_is_close_delimited, .timeout = 10)
{
    sq_app_t *app = make_app();
    th_server_t *ts = start(app, NULL);
    th_conn_t c;
    cr_assert_eq(th_conn_open(&c, th_server_port(ts)), 0);
    cr_assert_eq(th_conn_sends(&c, "GET /stream HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"), 0);
    th_res_t r;
    cr_assert_eq(th_conn_read_res(&c, &r, 5000, false), 0);
    cr_assert_eq(r.status, 200);
    cr_assert(r.close_delimited);
    cr_assert_not(r.chunked);
    assert_no_header(&r, "Transfer-Encoding");
    assert_no_header(&r, "Content-Length");
    assert_header(&r, "Connection", "close");
    cr_assert_str_eq(r.body, "first,second,third");
    th_res_free(&r);
    th_conn_close(&c);
    stop(ts, app);
    cr_assert_eq(atomic_load(&n_wcb), 3);
    cr_assert_eq(atomic_load(&n_wcb_ok), 3);
}

Test(responses, send_ref_calls_the_free_callback_exactly_once, .timeout = 10)
{
    sq_app_t *app = make_app();
    th_server_t *ts = start(app, NULL);
    th_conn_t c;
    cr_assert_eq(th_conn_open(&c, th_server_port(ts)), 0);
    cr_assert_eq(th_conn_sends(&c, GET("/ref") GET("/ref")), 0);
    th_expect_res(&c, 200, ref_body);
    th_expect_res(&c, 200, ref_body);
    /* HEAD: the body is not sent, and still released once */
    cr_assert_eq(th_conn_sends(&c, "HEAD /ref HTTP/1.1\r\nHost: t\r\n\r\n"), 0);
    th_res_t r;
    cr_assert_eq(th_conn_read_res(&c, &r, 5000, true), 0);
    assert_header(&r, "Content-Length", "14");
    th_res_free(&r);
    th_conn_close(&c);
    stop(ts, app);
    cr_assert_eq(atomic_load(&n_free), 3);
}

Test(responses, header_injection_is_rejected_with_einval, .timeout = 10)
{
    sq_app_t *app = make_app();
    th_server_t *ts = start(app, NULL);
    th_res_t r;
    cr_assert_eq(th_request(th_server_port(ts), GET("/inject"), &r), 0);
    cr_assert_eq(r.status, 200);
    cr_assert_null(strstr(r.raw, "evil"), "%s", r.raw);
    assert_header(&r, "X-Fine", "fine");
    assert_no_header(&r, "X-A");
    th_res_free(&r);
    stop(ts, app);
    cr_assert_eq(atomic_load(&inject_rc[0]), UV_EINVAL);
    cr_assert_eq(atomic_load(&inject_rc[1]), UV_EINVAL);
    cr_assert_eq(atomic_load(&inject_rc[2]), UV_EINVAL);
    cr_assert_eq(atomic_load(&inject_rc[3]), 0);
}

/* ---- listeners, connection limit, several servers ---- */

Test(server, two_servers_on_two_loops_in_two_threads, .timeout = 10)
{
    sq_app_t *app = make_app();
    th_server_t *a = start(app, NULL);
    th_server_t *b = start(app, NULL);
    cr_assert_neq(th_server_port(a), th_server_port(b));
    th_conn_t ca, cb;
    cr_assert_eq(th_conn_open(&ca, th_server_port(a)), 0);
    cr_assert_eq(th_conn_open(&cb, th_server_port(b)), 0);
    /* interleaved, with an async answer on each loop at the same time */
    cr_assert_eq(th_conn_sends(&ca, GET("/late?ms=100")), 0);
    cr_assert_eq(th_conn_sends(&cb, GET("/late?ms=100")), 0);
    th_expect_res(&ca, 200, "late");
    th_expect_res(&cb, 200, "late");
    for (int i = 0; i < 10; i++) {
        cr_assert_eq(th_conn_sends(&ca, GET("/n/1")), 0);
        cr_assert_eq(th_conn_sends(&cb, GET("/n/2")), 0);
        th_expect_res(&cb, 200, "2");
        th_expect_res(&ca, 200, "1");
    }
    sq_server_stats_t sa, sb;
    th_server_stats(a, &sa);
    th_server_stats(b, &sb);
    cr_assert_eq(sa.requests, 11);
    cr_assert_eq(sb.requests, 11);
    th_conn_close(&ca);
    th_server_stop(a, 1000);
    /* b is unaffected by a's shutdown */
    cr_assert_eq(th_conn_sends(&cb, GET("/n/3")), 0);
    th_expect_res(&cb, 200, "3");
    th_conn_close(&cb);
    th_server_stop(b, 1000);
    sq_app_destroy(app);
}

Test(server, ipv6_loopback_listener_serves, .timeout = 10)
{
    th_conn_t probe;
    int rc = th_conn_open_host(&probe, "::1", 9); /* is ::1 there at all? */
    if (rc == 0)
        th_conn_close(&probe);
    else if (rc == UV_EADDRNOTAVAIL || rc == UV_EAFNOSUPPORT || rc == UV_ENETUNREACH)
        cr_skip_test("no IPv6 loopback here (%s)", uv_err_name(rc));
    sq_app_t *app = make_app();
    th_server_cfg_t cfg = {.app = app, .host = "::1"};
    th_server_t *ts = th_server_start_cfg(&cfg);
    th_conn_t c;
    cr_assert_eq(th_conn_open_host(&c, "::1", th_server_port(ts)), 0);
    cr_assert_eq(th_conn_sends(&c, GET("/") GET("/n/6")), 0);
    th_expect_res(&c, 200, "hello");
    th_expect_res(&c, 200, "6");
    th_conn_close(&c);
    stop(ts, app);
}

Test(server, unix_domain_socket_listener_serves, .timeout = 10)
{
    char path[64];
    snprintf(path, sizeof(path), "/tmp/squall-test-%d.sock", (int)getpid());
    sq_app_t *app = make_app();
    th_server_cfg_t cfg = {.app = app, .unix_path = path};
    th_server_t *ts = th_server_start_cfg(&cfg);
    th_conn_t c;
    cr_assert_eq(th_conn_open_unix(&c, path), 0);
    cr_assert_eq(th_conn_sends(&c, GET("/") GET("/late?ms=20")), 0);
    th_expect_res(&c, 200, "hello");
    th_expect_res(&c, 200, "late");
    cr_assert_eq(th_conn_sends(&c, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc"),
                 0);
    th_expect_res(&c, 200, "abc");
    th_conn_close(&c);
    stop(ts, app);
    unlink(path);
}

Test(server, connections_over_max_are_closed_and_counted, .timeout = 10)
{
    sq_app_t *app = make_app();
    sq_server_opts_t o;
    sq_server_opts_init(&o);
    o.max_connections = 2;
    th_server_t *ts = start(app, &o);
    int port = th_server_port(ts);
    th_conn_t c[2], extra;
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(th_conn_open(&c[i], port), 0);
        cr_assert_eq(th_conn_sends(&c[i], GET("/")), 0);
        th_expect_res(&c[i], 200, "hello");
    }
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(th_conn_open(&extra, port), 0);
        th_conn_sends(&extra, GET("/")); /* may fail: the server may have closed already */
        cr_assert_eq(th_conn_wait_closed(&extra, 5000), 0, "the extra connection was served");
        th_conn_close(&extra);
    }
    sq_server_stats_t st;
    th_server_stats(ts, &st);
    cr_assert_eq(st.connections_rejected, 3);
    /* the ones within the limit still work */
    cr_assert_eq(th_conn_sends(&c[1], GET("/n/1")), 0);
    th_expect_res(&c[1], 200, "1");
    /* once one leaves, a new one is served */
    th_conn_close(&c[0]);
    cr_assert_eq(th_server_wait_open(ts, 1, 5000), 1, "the server let the closed one go");
    th_conn_t n;
    cr_assert_eq(th_conn_open(&n, port), 0);
    cr_assert_eq(th_conn_sends(&n, GET("/")), 0);
    th_expect_res(&n, 200, "hello");
    th_conn_close(&n);
    th_server_stats(ts, &st);
    cr_assert_eq(st.connections_rejected, 3, "the new one was rejected");
    th_conn_close(&c[1]);
    stop(ts, app);
}

/* ---- shutdown ---- */

Test(server, destroy_lets_an_in_flight_request_finish_within_grace, .timeout = 10)
{
    sq_app_t *app = make_app();
    th_server_t *ts = start(app, NULL);
    th_conn_t c, idle;
    cr_assert_eq(th_conn_open(&c, th_server_port(ts)), 0);
    cr_assert_eq(th_conn_open(&idle, th_server_port(ts)), 0);
    cr_assert_eq(th_conn_sends(&idle, GET("/")), 0);
    th_expect_res(&idle, 200, "hello");
    cr_assert_eq(th_conn_sends(&c, GET("/late?ms=300")), 0);
    cr_assert_eq(th_wait_atomic(&n_handler, 2, 5000), 2);
    uint64_t took = th_server_stop(ts, 3000);
    /* the stop waited for the answer, due 300 ms after /late began, not for all the grace */
    uint64_t began = atomic_load(&late_started_at);
    cr_assert_geq(th_now_ms() - began, 290, "stopped %llu ms after /late?ms=300 began",
                  (unsigned long long)(th_now_ms() - began));
    cr_assert_lt(took, 2500, "stopped after %llu ms", (unsigned long long)took);
    /* the answer was written before the close, and says so */
    th_res_t r;
    cr_assert_eq(th_conn_read_res(&c, &r, 5000, false), 0);
    cr_assert_eq(r.status, 200);
    cr_assert_str_eq(r.body, "late");
    assert_header(&r, "Connection", "close");
    th_res_free(&r);
    cr_assert_eq(th_conn_wait_closed(&c, 5000), 0);
    cr_assert_eq(th_conn_wait_closed(&idle, 5000), 0);
    th_conn_close(&c);
    th_conn_close(&idle);
    sq_app_destroy(app);
    cr_assert_eq(atomic_load(&late_rc), 0);
    cr_assert_eq(atomic_load(&n_aborted), 0);
}

Test(server, destroy_past_grace_aborts_the_handler, .timeout = 10)
{
    sq_app_t *app = make_app();
    th_server_t *ts = start(app, NULL);
    th_conn_t c;
    cr_assert_eq(th_conn_open(&c, th_server_port(ts)), 0);
    cr_assert_eq(th_conn_sends(&c, GET("/late?ms=8000&fin=1")), 0);
    cr_assert_eq(th_wait_atomic(&n_handler, 1, 5000), 1);
    uint64_t took = th_server_stop(ts, 200);
    cr_assert_lt(took, 3000, "stopped after %llu ms", (unsigned long long)took);
    cr_assert_eq(th_conn_wait_closed(&c, 5000), 0);
    th_conn_close(&c);
    sq_app_destroy(app);
    cr_assert_eq(atomic_load(&n_aborted), 1);
    cr_assert_eq(atomic_load(&n_late_done), 1);
    cr_assert_eq(atomic_load(&late_rc), UV_ECANCELED);
}

Test(server, destroy_with_a_streaming_response_past_grace_aborts_it, .timeout = 10)
{
    sq_app_t *app = make_app();
    th_server_t *ts = start(app, NULL);
    th_conn_t c;
    cr_assert_eq(th_conn_open(&c, th_server_port(ts)), 0);
    cr_assert_eq(th_conn_sends(&c, GET("/tstream?ms=20&n=100000")), 0);
    /* at least two pieces out (a third may follow while this thread waits its turn) */
    cr_assert_geq(th_wait_atomic(&n_wcb, 2, 5000), 2);
    /* the timer's next write sees the abort and ends the response, so the loop empties */
    th_server_stop(ts, 100);
    th_conn_close(&c);
    sq_app_destroy(app);
    /* .aborted comes on the loop's next turn, unless the handler finished first: its
     * timer may fire in the same turn as the grace deadline, see the write refused and
     * end the response before the notice */
    cr_assert_leq(atomic_load(&n_aborted), 1);
    cr_assert_eq(atomic_load(&n_stream_done), 1);
    cr_assert_eq(atomic_load(&end_rc), UV_ECANCELED);
}

Test(server, destroy_with_idle_and_half_read_connections_is_prompt, .timeout = 10)
{
    sq_app_t *app = make_app();
    th_server_t *ts = start(app, NULL);
    th_conn_t c[3];
    for (int i = 0; i < 3; i++)
        cr_assert_eq(th_conn_open(&c[i], th_server_port(ts)), 0);
    cr_assert_eq(th_conn_sends(&c[1], GET("/")), 0);
    th_expect_res(&c[1], 200, "hello");
    /* half a head behind a whole request in the same write: its answer says the server has
     * read the half too */
    cr_assert_eq(th_conn_sends(&c[2], GET("/n/2") "GET / HTTP/1.1\r\nHo"), 0);
    th_expect_res(&c[2], 200, "2");
    uint64_t took = th_server_stop(ts, 2000);
    cr_assert_lt(took, 2500);
    for (int i = 0; i < 3; i++) {
        th_conn_read_some(&c[i], 2000); /* c[2] may get an answer; any is fine */
        th_conn_close(&c[i]);
    }
    sq_app_destroy(app);
}

/* ---- more on clients that leave, slow readers and back-pressure ---- */

Test(async, streaming_started_after_the_client_left_ends_with_ecanceled, .timeout = 10)
{
    sq_app_t *app = make_app();
    th_server_t *ts = start(app, NULL);
    th_conn_t c;
    cr_assert_eq(th_conn_open(&c, th_server_port(ts)), 0);
    cr_assert_eq(th_conn_sends(&c, GET("/lstream?ms=200")), 0);
    cr_assert_eq(th_wait_atomic(&n_handler, 1, 5000), 1);
    th_conn_abort(&c); /* gone: a FIN alone would be a half-close, still answered */
    cr_assert_eq(th_wait_atomic(&n_stream_done, 1, 5000), 1);
    stop(ts, app); /* fails if the response was never released */
    cr_assert_eq(atomic_load(&n_aborted), 1);
    cr_assert_eq(atomic_load(&lstream_rc[0]), UV_ECANCELED);
    cr_assert_eq(atomic_load(&lstream_rc[1]), SQ_ENOTSTREAMING);
    cr_assert_eq(atomic_load(&lstream_rc[2]), UV_ECANCELED, "sq_res_end: %s",
                 sq_err_name(atomic_load(&lstream_rc[2])));
    cr_assert_eq(atomic_load(&n_wcb), 0);
}

Test(responses, streaming_a_status_without_body_sends_no_body_bytes, .timeout = 10)
{
    sq_app_t *app = make_app();
    th_server_t *ts = start(app, NULL);
    th_conn_t c;
    cr_assert_eq(th_conn_open(&c, th_server_port(ts)), 0);
    cr_assert_eq(th_conn_sends(&c, GET("/lstream?status=204") GET("/n/2")), 0);
    th_res_t r;
    cr_assert_eq(th_conn_read_res(&c, &r, 5000, false), 0);
    cr_assert_eq(r.status, 204);
    assert_no_header(&r, "Transfer-Encoding");
    assert_no_header(&r, "Content-Length");
    th_res_free(&r);
    th_expect_res(&c, 200, "2"); /* no stray "body" bytes in between */
    th_conn_close(&c);
    stop(ts, app);
    cr_assert_eq(atomic_load(&lstream_rc[1]), 0);
    cr_assert_eq(atomic_load(&lstream_rc[2]), 0);
    cr_assert_eq(atomic_load(&n_wcb), 1);
}

Test(backpressure, pipelined_answers_wait_for_a_client_that_does_not_read, .timeout = 20)
{
    sq_app_t *app = make_app();
    th_server_t *ts = start(app, NULL);
    th_conn_t c;
    cr_assert_eq(th_conn_open(&c, th_server_port(ts)), 0);
    /* 48 answers of 1 MiB asked for at once; the client reads nothing for a while */
    char batch[48 * 64];
    size_t len = 0;
    for (int i = 0; i < 48; i++)
        len += (size_t)snprintf(batch + len, sizeof(batch) - len, GET("/qbig?kb=1024"));
    cr_assert_eq(th_conn_send(&c, batch, len), 0);
    cr_assert_geq(th_wait_atomic(&n_handler, 1, 5000), 1, "the server began answering");
    /* time passes with nothing read (a loaded machine only makes fewer answers in it) */
    th_sleep_ms(500);
    int handled = atomic_load(&n_handler);
    cr_assert_lt(handled, 48, "all %d answers were made without the client reading", handled);
    for (int i = 0; i < 48; i++) {
        th_res_t r;
        cr_assert_eq(th_conn_read_res(&c, &r, 10000, false), 0);
        cr_assert_eq(r.status, 200);
        cr_assert_eq(r.body_len, 1u << 20);
        th_res_free(&r);
    }
    th_conn_close(&c);
    stop(ts, app);
    cr_assert_eq(atomic_load(&n_handler), 48);
    cr_assert_leq(atomic_load(&max_queued_kb), 2048, "%d KiB queued",
                  atomic_load(&max_queued_kb));
}

Test(backpressure, slow_reader_gets_a_download_longer_than_the_idle_timeout, .timeout = 20)
{
    sq_app_t *app = make_app();
    th_server_t *ts = start_timeouts(app, 30000, 30000, 1000);
    th_conn_t c;
    cr_assert_eq(th_conn_open(&c, th_server_port(ts)), 0);
    cr_assert_eq(th_conn_sends(&c, GET("/qbig?kb=32768")), 0);
    /* 1 MiB, then a 100 ms pause, and so on: 32 MiB take over 3 s, past the 1 s idle
     * timeout, and the socket buffers cannot hold the answer meanwhile. (The server sees
     * progress only when the kernel wants more, every couple of MiB.) */
    size_t got = 0, want = (32u << 20) + 100;
    uint64_t t0 = th_now_ms();
    while (!c.eof && got < want && th_now_ms() - t0 < 15000) {
        size_t burst = 0;
        while (!c.eof && burst < (1u << 20)) {
            th_conn_read_some(&c, 1000);
            burst += c.len;
            c.len = 0;
        }
        got += burst;
        th_sleep_ms(100);
    }
    cr_assert_geq(got, 32u << 20, "got %zu bytes in %llu ms", got,
                  (unsigned long long)(th_now_ms() - t0));
    th_conn_close(&c);
    stop(ts, app);
}

Test(backpressure, reader_that_stalls_is_closed_after_the_idle_timeout, .timeout = 20)
{
    sq_app_t *app = make_app();
    th_server_t *ts = start_timeouts(app, 30000, 30000, 300);
    th_conn_t c;
    cr_assert_eq(th_conn_open(&c, th_server_port(ts)), 0);
    cr_assert_eq(th_conn_sends(&c, GET("/qbig?kb=65536")), 0);
    cr_assert_eq(th_server_wait_open(ts, 0, 10000), 0,
                 "a client that reads nothing holds its connection");
    th_conn_close(&c);
    stop(ts, app);
}

Test(async, zero_copy_answer_after_the_client_left_frees_its_body_once, .timeout = 10)
{
    sq_app_t *app = make_app();
    th_server_t *ts = start(app, NULL);
    th_conn_t c;
    cr_assert_eq(th_conn_open(&c, th_server_port(ts)), 0);
    cr_assert_eq(th_conn_sends(&c, GET("/lref?ms=200")), 0);
    cr_assert_eq(th_wait_atomic(&n_handler, 1, 5000), 1);
    th_conn_abort(&c);
    cr_assert_eq(th_wait_atomic(&n_late_done, 1, 5000), 1);
    stop(ts, app);
    cr_assert_eq(atomic_load(&late_rc), UV_ECANCELED);
    cr_assert_eq(atomic_load(&n_free), 1);
    cr_assert_eq(atomic_load(&n_aborted), 1);
}

Test(backpressure, large_body_pipelined_behind_an_async_answer_waits_and_is_read, .timeout = 20)
{
    sq_app_t *app = make_app();
    th_server_t *ts = start(app, NULL);
    size_t n = 300 * 1024; /* well past max_pipeline_bytes (64 KiB): reading pauses */
    char *req = malloc(n + 256);
    int h = snprintf(req, 256, GET("/late?ms=200") "PUT /echo HTTP/1.1\r\nHost: t\r\n"
                                                   "Content-Length: %zu\r\n\r\n", n);
    memset(req + h, 'p', n);
    th_conn_t c;
    cr_assert_eq(th_conn_open(&c, th_server_port(ts)), 0);
    cr_assert_eq(th_conn_send(&c, req, (size_t)h + n), 0);
    th_expect_res(&c, 200, "late");
    th_res_t r;
    cr_assert_eq(th_conn_read_res(&c, &r, 5000, false), 0);
    cr_assert_eq(r.status, 200);
    cr_assert_eq(r.body_len, n);
    cr_assert_eq(memcmp(r.body, req + h, n), 0);
    th_res_free(&r);
    cr_assert_eq(th_conn_sends(&c, GET("/n/3")), 0);
    th_expect_res(&c, 200, "3");
    free(req);
    th_conn_close(&c);
    stop(ts, app);
}

Test(backpressure, big_answers_behind_an_async_one_wait_for_the_reader, .timeout = 20)
{
    sq_app_t *app = make_app();
    th_server_t *ts = start(app, NULL);
    th_conn_t c;
    cr_assert_eq(th_conn_open(&c, th_server_port(ts)), 0);
    cr_assert_eq(th_conn_sends(&c, GET("/late?ms=50") GET("/qbig?kb=4096") GET("/qbig?kb=4096")
                                       GET("/qbig?kb=4096") GET("/qbig?kb=4096") GET("/n/5")),
                 0);
    /* time passes with nothing read (a loaded machine only makes fewer answers in it) */
    th_sleep_ms(400);
    cr_assert_lt(atomic_load(&n_handler), 6);
    th_expect_res(&c, 200, "late");
    for (int i = 0; i < 4; i++) {
        th_res_t r;
        cr_assert_eq(th_conn_read_res(&c, &r, 10000, false), 0);
        cr_assert_eq(r.body_len, 4u << 20);
        th_res_free(&r);
    }
    th_expect_res(&c, 200, "5");
    th_conn_close(&c);
    stop(ts, app);
    cr_assert_leq(atomic_load(&max_queued_kb), 8192);
}
