/* Regression tests for the HTTP core, each stated as the contract an outside review found
 * broken: response splitting through a content type, bodies of 4 GiB and more cut to 32
 * bits, `.aborted` run inside the handler's own finishing call, a Host count that wrapped,
 * a query pair with a bad escape that hid behind a later one, `100 Continue` sent before a
 * 404, unbounded chunk extensions, a body that trickled in forever, and half-closed
 * clients that lost their answers. Each failed on the code before its fix.
 *
 * The server runs on its own loop thread (tests/support/harness.h); what handlers see is
 * recorded in atomics and compared on the test's thread. */
#include <poll.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <jansson.h>

#include "support/harness.h"

#define GET(path) "GET " path " HTTP/1.1\r\nHost: t\r\n\r\n"

static atomic_int n_handler, n_aborted, n_aborted_inside, n_done;
static atomic_int rc_a, rc_b, rc_c, rc_d;

static void reset_counts(void)
{
    atomic_store(&n_handler, 0);
    atomic_store(&n_aborted, 0);
    atomic_store(&n_aborted_inside, 0);
    atomic_store(&n_done, 0);
    atomic_store(&rc_a, 1);
    atomic_store(&rc_b, 1);
    atomic_store(&rc_c, 1);
    atomic_store(&rc_d, 1);
}

TestSuite(regress_http, .init = reset_counts, .timeout = 30);

static void ok_get(sq_req_t *req, sq_res_t *res, void *data)
{
    atomic_fetch_add(&n_handler, 1);
    sq_res_send(res, 200, "text/plain", "ok", 2);
}
static const sq_handler_t ok = {.get = ok_get, .post = ok_get};

/* GET /late?ms=N: answers "late" from a timer N ms later. */
typedef struct late {
    uv_timer_t timer;
    sq_res_t *res;
} late_t;

static void late_free(uv_handle_t *h)
{
    free(h->data);
}

static void late_fire(uv_timer_t *t)
{
    late_t *l = t->data;
    atomic_store(&rc_a, sq_res_send(l->res, 200, "text/plain", "late", 4));
    atomic_fetch_add(&n_done, 1);
    uv_close((uv_handle_t *)t, late_free);
}

static void late_get(sq_req_t *req, sq_res_t *res, void *data)
{
    atomic_fetch_add(&n_handler, 1);
    late_t *l = calloc(1, sizeof(*l));
    l->res = res;
    uv_timer_init(sq_req_loop(req), &l->timer);
    l->timer.data = l;
    const char *ms = sq_req_query(req, "ms");
    uv_timer_start(&l->timer, late_fire, ms ? (uint64_t)atoi(ms) : 100, 0);
}

static void any_aborted(sq_req_t *req, sq_res_t *res, void *data)
{
    atomic_fetch_add(&n_aborted, 1);
}
static const sq_handler_t late = {.get = late_get, .aborted = any_aborted};

static sq_app_t *make_app(void)
{
    sq_app_t *app;
    cr_assert_eq(sq_app_create(&app), 0);
    cr_assert_eq(sq_app_route(app, "/", &ok, NULL), 0);
    cr_assert_eq(sq_app_route(app, "/late", &late, NULL), 0);
    return app;
}

/* A healthy request on a new connection: the server goes on serving others. */
static void expect_healthy(int port)
{
    th_expect_healthy(port, "/", "ok");
}

/* ======================================================================================
 * Content types are field values: CR or LF would split the response (RFC 9110 §5.5)
 * ==================================================================================== */

static atomic_int n_freed;

static void count_free(void *p, void *data)
{
    atomic_fetch_add(&n_freed, 1);
}

static void split_get(sq_req_t *req, sq_res_t *res, void *data)
{
    static const char evil[] = "text/plain\r\nX-Injected: 1";
    atomic_store(&rc_a, sq_res_send(res, 200, evil, "a", 1));
    atomic_store(&rc_b, sq_res_send_ref(res, 200, "text/html\nSet-Cookie: x=1", "b", 1,
                                        count_free, NULL));
    atomic_store(&rc_c, sq_res_start(res, 200, "text/plain\x01"));
    /* none of them finished res: it is still the handler's to answer */
    atomic_store(&rc_d, sq_res_send(res, 200, "text/plain; charset=utf-8", "fine", 4));
}
static const sq_handler_t split = {.get = split_get};

static void split_blocking(const sq_breq_t *req, sq_bres_t *res, void *data)
{
    atomic_store(&rc_a, sq_bres_send(res, 200, "text/plain\r\nX-Injected: 1", "a", 1));
    sq_bres_send(res, 200, "text/plain", "fine", 4);
}
static const sq_handler_t split_b = {.blocking.get = split_blocking};

Test(regress_http, content_type_with_crlf_is_refused_and_the_response_stays_open)
{
    sq_app_t *app = make_app();
    cr_assert_eq(sq_app_route(app, "/split", &split, NULL), 0);
    cr_assert_eq(sq_app_route(app, "/split-b", &split_b, NULL), 0);
    atomic_store(&n_freed, 0);
    th_server_t *ts = th_server_start(app, NULL);
    th_conn_t c;
    cr_assert_eq(th_conn_open(&c, th_server_port(ts)), 0);
    cr_assert_eq(th_conn_sends(&c, GET("/split") GET("/split-b") GET("/")), 0);
    th_res_t r;
    cr_assert_eq(th_conn_read_res(&c, &r, 5000, false), 0);
    cr_assert_eq(r.status, 200);
    cr_assert_str_eq(r.body, "fine");
    cr_assert_null(strstr(r.raw, "X-Injected"), "split:\n%s", r.raw);
    cr_assert_null(strstr(r.raw, "Set-Cookie"), "split:\n%s", r.raw);
    cr_assert_str_eq(th_res_header(&r, "Content-Type"), "text/plain; charset=utf-8");
    th_res_free(&r);
    cr_assert_eq(th_conn_read_res(&c, &r, 5000, false), 0);
    cr_assert_eq(r.status, 200);
    cr_assert_str_eq(r.body, "fine");
    cr_assert_null(strstr(r.raw, "X-Injected"), "split:\n%s", r.raw);
    th_res_free(&r);
    th_expect_res(&c, 200, "ok");
    th_conn_close(&c);
    th_server_stop(ts, 1000);
    sq_app_destroy(app);
    cr_assert_eq(atomic_load(&rc_a), UV_EINVAL);
    cr_assert_eq(atomic_load(&rc_b), UV_EINVAL);
    cr_assert_eq(atomic_load(&rc_c), UV_EINVAL);
    cr_assert_eq(atomic_load(&rc_d), 0);
    cr_assert_eq(atomic_load(&n_freed), 1, "sq_res_send_ref gives the body back on UV_EINVAL");
}

/* ======================================================================================
 * Bodies of 4 GiB and more: the Content-Length and the bytes sent agree
 * ==================================================================================== */

#define HUGE_LEN ((size_t)4 << 30 | 3) /* 4 GiB + 3: its low 32 bits say 3 */

static void *huge_map(void)
{
    /* zero pages, never written: the kernel sends them without the memory existing */
    void *p = mmap(NULL, HUGE_LEN, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

static void huge_unmap(void *p, void *data)
{
    munmap(p, HUGE_LEN);
    atomic_fetch_add(&n_freed, 1);
}

static void huge_get(sq_req_t *req, sq_res_t *res, void *data)
{
    void *p = huge_map();
    if (p == NULL) {
        sq_res_send_error(res, 500, "mmap");
        return;
    }
    /* a length past INT64_MAX cannot be a Content-Length: refused, res still open */
    atomic_store(&rc_b, sq_res_send(res, 200, NULL, p, (size_t)INT64_MAX + 1));
    atomic_store(&rc_a, sq_res_send_ref(res, 200, "application/octet-stream", p, HUGE_LEN,
                                        huge_unmap, NULL));
}
static const sq_handler_t huge = {.get = huge_get};

Test(regress_http, a_body_of_4_gib_and_more_is_sent_whole, .timeout = 120)
{
    sq_app_t *app = make_app();
    cr_assert_eq(sq_app_route(app, "/huge", &huge, NULL), 0);
    atomic_store(&n_freed, 0);
    th_server_t *ts = th_server_start(app, NULL);
    th_conn_t c;
    cr_assert_eq(th_conn_open(&c, th_server_port(ts)), 0);
    /* HEAD first: the head alone, with the whole length */
    cr_assert_eq(th_conn_sends(&c, "HEAD /huge HTTP/1.1\r\nHost: t\r\n\r\n"), 0);
    th_res_t r;
    cr_assert_eq(th_conn_read_res(&c, &r, 5000, true), 0);
    cr_assert_eq(r.status, 200, "%s", r.raw);
    cr_assert_str_eq(th_res_header(&r, "Content-Length"), "4294967299");
    th_res_free(&r);
    /* then the body, with a pipelined request behind it that must come after it whole */
    cr_assert_eq(th_conn_sends(&c, GET("/huge") GET("/")), 0);
    char *end;
    while ((end = memmem(c.buf ? c.buf : "", c.len, "\r\n\r\n", 4)) == NULL)
        cr_assert_gt(th_conn_read_some(&c, 5000), 0, "no head");
    size_t head = (size_t)(end + 4 - c.buf);
    cr_assert_not_null(memmem(c.buf, head, "Content-Length: 4294967299\r\n", 28));
    size_t got = c.len - head;
    c.len = 0;
    static char sink[1 << 20];
    while (got < HUGE_LEN) {
        size_t want = HUGE_LEN - got < sizeof(sink) ? HUGE_LEN - got : sizeof(sink);
        ssize_t n = recv(c.fd, sink, want, 0);
        cr_assert_gt(n, 0, "the body ended after %zu of %zu bytes", got, HUGE_LEN);
        for (ssize_t i = 0; i < n; i += 4096)
            cr_assert_eq(sink[i], 0, "a byte of the next response inside the body");
        got += (size_t)n;
    }
    th_expect_res(&c, 200, "ok");
    th_conn_close(&c);
    th_server_stop(ts, 1000);
    sq_app_destroy(app);
    cr_assert_eq(atomic_load(&rc_a), 0);
    cr_assert_eq(atomic_load(&rc_b), UV_EMSGSIZE);
    cr_assert_eq(atomic_load(&n_freed), 2);
}

/* ======================================================================================
 * .aborted is never run inside a squall call
 * ==================================================================================== */

static atomic_int in_send;

static void oom_aborted(sq_req_t *req, sq_res_t *res, void *data)
{
    atomic_fetch_add(&n_aborted, 1);
    if (atomic_load(&in_send)) {
        atomic_fetch_add(&n_aborted_inside, 1);
        /* what a handler does when told: finish res. Inside the failing call, that freed
         * the exchange the call was still using. */
        sq_res_send(res, 200, "text/plain", "x", 1);
    }
}

static void oom_get(sq_req_t *req, sq_res_t *res, void *data)
{
    static const char byte = 'x';
    atomic_fetch_add(&n_handler, 1);
    atomic_store(&in_send, 1);
    /* a body too large to copy: the write queue cannot grow, the connection is closed */
    atomic_store(&rc_a, sq_res_send(res, 200, "text/plain", &byte, (size_t)1 << 60));
    atomic_store(&in_send, 0);
}
static const sq_handler_t oom = {.get = oom_get, .aborted = oom_aborted};

Test(regress_http, aborted_never_runs_inside_a_finishing_call)
{
    sq_app_t *app = make_app();
    cr_assert_eq(sq_app_route(app, "/oom", &oom, NULL), 0);
    th_server_t *ts = th_server_start(app, NULL);
    th_conn_t c;
    cr_assert_eq(th_conn_open(&c, th_server_port(ts)), 0);
    cr_assert_eq(th_conn_sends(&c, GET("/oom")), 0);
    cr_assert_eq(th_conn_wait_closed(&c, 5000), 0);
    th_conn_close(&c);
    expect_healthy(th_server_port(ts));
    th_server_stop(ts, 1000);
    sq_app_destroy(app);
    cr_assert_eq(atomic_load(&rc_a), UV_ENOMEM);
    cr_assert_eq(atomic_load(&n_aborted_inside), 0, ".aborted ran inside sq_res_send");
    cr_assert_eq(atomic_load(&n_aborted), 0, "res was finished (UV_ENOMEM): nothing to tell");
}

/* ======================================================================================
 * Request heads
 * ==================================================================================== */

/* RFC 9112 §3.2: one Host. 257 of them once wrapped an 8-bit count back to one. */
Test(regress_http, two_hundred_fifty_seven_host_headers_are_not_one)
{
    sq_app_t *app = make_app();
    sq_server_opts_t o;
    sq_server_opts_init(&o);
    o.max_headers = 1000;
    th_server_t *ts = th_server_start(app, &o);
    static const int counts[] = {2, 256, 257, 258, 513};
    for (size_t k = 0; k < sizeof(counts) / sizeof(counts[0]); k++) {
        char *req = malloc(64 + (size_t)counts[k] * 9);
        size_t n = (size_t)sprintf(req, "GET / HTTP/1.1\r\n");
        for (int i = 0; i < counts[k]; i++)
            n += (size_t)sprintf(req + n, "Host: t\r\n");
        sprintf(req + n, "\r\n");
        th_res_t r;
        cr_assert_eq(th_request(th_server_port(ts), req, &r), 0);
        cr_assert_eq(r.status, 400, "%d Host headers: %d", counts[k], r.status);
        th_res_free(&r);
        free(req);
    }
    expect_healthy(th_server_port(ts));
    th_server_stop(ts, 1000);
    sq_app_destroy(app);
    cr_assert_eq(atomic_load(&n_handler), 1);
}

static void q_get(sq_req_t *req, sq_res_t *res, void *data)
{
    const char *q = sq_req_query(req, "q");
    sq_res_send(res, 200, "text/plain", q ? q : "(null)", q ? strlen(q) : 6);
}
static const sq_handler_t qh = {.get = q_get};

/* The first pair of a name is the answer, even when its escape is malformed. */
Test(regress_http, query_bad_escape_still_names_the_first_value)
{
    sq_app_t *app = make_app();
    cr_assert_eq(sq_app_route(app, "/q", &qh, NULL), 0);
    th_server_t *ts = th_server_start(app, NULL);
    static const char *cases[][2] = {
        {GET("/q?q=%zz&q=ok"), "%zz"},  {GET("/q?q=%4&q=ok"), "%4"},
        {GET("/q?q=%00&q=ok"), "%00"},  {GET("/q?q=a%2&q=ok"), "a%2"},
        {GET("/q?q=%41%zz%42"), "A%zzB"}, {GET("/q?x=1&q=%e2%82%ac"), "\xe2\x82\xac"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        th_res_t r;
        cr_assert_eq(th_request(th_server_port(ts), cases[i][0], &r), 0);
        cr_assert_eq(r.status, 200);
        cr_assert_str_eq(r.body, cases[i][1], "for %s", cases[i][0]);
        th_res_free(&r);
    }
    th_server_stop(ts, 1000);
    sq_app_destroy(app);
}

/* RFC 9110 §10.1.1: 100 Continue tells the client its body is wanted. For a request whose
 * answer is already known to be final (no such route, no such method), the final answer
 * goes instead, and the connection closes since its body was never read. */
Test(regress_http, expect_100_continue_is_not_sent_before_a_404_or_405)
{
    sq_app_t *app = make_app();
    static const sq_handler_t get_only = {.get = ok_get};
    cr_assert_eq(sq_app_route(app, "/get-only", &get_only, NULL), 0);
    th_server_t *ts = th_server_start(app, NULL);
    static const struct {
        const char *path;
        int status;
    } cases[] = {{"/nope", 404}, {"/get-only", 405}};
    for (size_t i = 0; i < 2; i++) {
        th_conn_t c;
        char req[256];
        snprintf(req, sizeof(req),
                 "POST %s HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n"
                 "Content-Length: 10\r\n\r\n",
                 cases[i].path);
        cr_assert_eq(th_conn_open(&c, th_server_port(ts)), 0);
        cr_assert_eq(th_conn_sends(&c, req), 0);
        th_res_t r;
        cr_assert_eq(th_conn_read_res(&c, &r, 5000, false), 0);
        cr_assert_eq(r.status, cases[i].status, "%s:\n%s", cases[i].path, r.raw);
        cr_assert_str_eq(th_res_header(&r, "Connection"), "close");
        if (cases[i].status == 405)
            cr_assert_not_null(th_res_header(&r, "Allow"));
        th_res_free(&r);
        /* a client that sends its body anyway is not taken for a second request */
        th_conn_sends(&c, "0123456789");
        cr_assert_eq(th_conn_wait_closed(&c, 5000), 0);
        th_conn_close(&c);
    }
    /* a route that takes the body still gets 100, then its answer */
    th_conn_t c;
    cr_assert_eq(th_conn_open(&c, th_server_port(ts)), 0);
    cr_assert_eq(th_conn_sends(&c, "POST / HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n"
                                   "Content-Length: 2\r\n\r\n"),
                 0);
    th_expect_res(&c, 100, NULL);
    cr_assert_eq(th_conn_sends(&c, "hi"), 0);
    th_expect_res(&c, 200, "ok");
    th_conn_close(&c);
    th_server_stop(ts, 1000);
    sq_app_destroy(app);
    cr_assert_eq(atomic_load(&n_handler), 1);
}

/* RFC 9112 §7.1.1: chunk extensions are skipped, within max_header_bytes. */
Test(regress_http, chunk_extensions_are_bounded)
{
    sq_app_t *app = make_app();
    sq_server_opts_t o;
    sq_server_opts_init(&o);
    o.max_header_bytes = 4096;
    th_server_t *ts = th_server_start(app, &o);
    static const char head[] = "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n";
    /* a short extension is fine */
    th_res_t r;
    cr_assert_eq(th_request(th_server_port(ts),
                            "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                            "2;name=value\r\nhi\r\n0\r\n\r\n",
                            &r),
                 0);
    cr_assert_eq(r.status, 200);
    th_res_free(&r);
    /* one long extension, and many short ones across chunks, both past the limit */
    for (int shape = 0; shape < 2; shape++) {
        size_t cap = 64 * 1024;
        char *req = malloc(cap);
        size_t n = (size_t)sprintf(req, "%s", head);
        if (shape == 0) {
            n += (size_t)sprintf(req + n, "1;e=");
            memset(req + n, 'a', 8000);
            n += 8000;
            n += (size_t)sprintf(req + n, "\r\nx\r\n0\r\n\r\n");
        } else {
            for (int i = 0; i < 800; i++)
                n += (size_t)sprintf(req + n, "1;ext%03d=v\r\nx\r\n", i % 1000);
            n += (size_t)sprintf(req + n, "0\r\n\r\n");
        }
        req[n] = '\0';
        cr_assert_eq(th_request(th_server_port(ts), req, &r), 0);
        cr_assert_eq(r.status, 413, "shape %d: %d", shape, r.status);
        th_res_free(&r);
        free(req);
    }
    expect_healthy(th_server_port(ts));
    sq_server_stats_t st;
    th_server_stats(ts, &st);
    cr_assert_eq(st.limit_errors, 2);
    th_server_stop(ts, 1000);
    sq_app_destroy(app);
}

/* body_timeout_ms bounds the whole body: a byte every third of it no longer holds the
 * connection (and its buffer) forever. */
Test(regress_http, body_trickle_gets_408_at_the_deadline)
{
    sq_app_t *app = make_app();
    sq_server_opts_t o;
    sq_server_opts_init(&o);
    o.body_timeout_ms = 400;
    th_server_t *ts = th_server_start(app, &o);
    th_conn_t c;
    cr_assert_eq(th_conn_open(&c, th_server_port(ts)), 0);
    cr_assert_eq(th_conn_sends(&c, "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n"),
                 0);
    uint64_t t0 = th_now_ms();
    int sent = 0;
    while (th_now_ms() - t0 < 3000 && !c.eof && c.len == 0) {
        th_conn_send(&c, "x", 1); /* may fail once the server has closed */
        sent++;
        th_conn_read_some(&c, 130);
    }
    uint64_t took = th_now_ms() - t0;
    cr_assert_neq(c.len, 0, "no answer after %d bytes in %llu ms", sent,
                  (unsigned long long)took);
    th_res_t r;
    cr_assert_eq(th_conn_read_res(&c, &r, 2000, false), 0);
    cr_assert_eq(r.status, 408);
    th_res_free(&r);
    cr_assert_lt(took, 1500, "408 after %llu ms", (unsigned long long)took);
    th_conn_close(&c);
    th_server_stop(ts, 1000);
    sq_app_destroy(app);
    cr_assert_eq(atomic_load(&n_handler), 0);
}

/* ======================================================================================
 * A FIN is a half-close: what was sent is answered, then the connection closes
 * ==================================================================================== */

static void half_close(th_conn_t *c)
{
    cr_assert_eq(shutdown(c->fd, SHUT_WR), 0);
}

Test(regress_http, half_close_after_an_async_request_gets_the_answer)
{
    sq_app_t *app = make_app();
    th_server_t *ts = th_server_start(app, NULL);
    th_conn_t c;
    cr_assert_eq(th_conn_open(&c, th_server_port(ts)), 0);
    cr_assert_eq(th_conn_sends(&c, GET("/late?ms=150")), 0);
    half_close(&c);
    th_expect_res(&c, 200, "late");
    cr_assert_eq(th_conn_wait_closed(&c, 5000), 0);
    th_conn_close(&c);
    th_server_stop(ts, 1000);
    sq_app_destroy(app);
    cr_assert_eq(atomic_load(&rc_a), 0);
    cr_assert_eq(atomic_load(&n_aborted), 0);
}

Test(regress_http, half_close_after_pipelined_requests_answers_every_one)
{
    sq_app_t *app = make_app();
    th_server_t *ts = th_server_start(app, NULL);
    /* an async one first, so the rest wait in the pipeline when the FIN comes; then sync
     * ones only; then async ones in a row */
    static const char *batches[] = {
        GET("/late?ms=100") GET("/") GET("/"),
        GET("/") GET("/") GET("/"),
        GET("/late?ms=50") GET("/late?ms=50") GET("/"),
    };
    static const char *bodies[][3] = {
        {"late", "ok", "ok"}, {"ok", "ok", "ok"}, {"late", "late", "ok"}};
    for (int b = 0; b < 3; b++) {
        th_conn_t c;
        cr_assert_eq(th_conn_open(&c, th_server_port(ts)), 0);
        cr_assert_eq(th_conn_sends(&c, batches[b]), 0);
        half_close(&c);
        for (int i = 0; i < 3; i++)
            th_expect_res(&c, 200, bodies[b][i]);
        cr_assert_eq(th_conn_wait_closed(&c, 5000), 0);
        th_conn_close(&c);
    }
    th_server_stop(ts, 1000);
    sq_app_destroy(app);
    cr_assert_eq(atomic_load(&n_aborted), 0);
}

Test(regress_http, half_close_inside_a_request_closes_without_a_handler)
{
    sq_app_t *app = make_app();
    th_server_t *ts = th_server_start(app, NULL);
    static const char *partial[] = {
        "GET / HT", "GET / HTTP/1.1\r\nHost: t\r\n",
        "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 9\r\n\r\nab",
        GET("/") "GET / HTTP/1.1\r\n", /* one whole request, then a cut one */
    };
    for (size_t i = 0; i < sizeof(partial) / sizeof(partial[0]); i++) {
        th_conn_t c;
        cr_assert_eq(th_conn_open(&c, th_server_port(ts)), 0);
        cr_assert_eq(th_conn_sends(&c, partial[i]), 0);
        half_close(&c);
        if (i == 3)
            th_expect_res(&c, 200, "ok");
        cr_assert_eq(th_conn_wait_closed(&c, 5000), 0, "case %zu", i);
        th_conn_close(&c);
    }
    sq_server_stats_t st;
    for (int i = 0; i < 200; i++) {
        th_server_stats(ts, &st);
        if (st.connections_open == 0)
            break;
        th_sleep_ms(10);
    }
    cr_assert_eq(st.connections_open, 0);
    th_server_stop(ts, 1000);
    sq_app_destroy(app);
    cr_assert_eq(atomic_load(&n_handler), 1);
}

/* A blocking handler's job is not cancelled by a half-close: its answer arrives. */
static void slow_job(const sq_breq_t *req, sq_bres_t *res, void *data)
{
    th_sleep_ms(100);
    atomic_store(&rc_b, sq_breq_is_cancelled(req));
    sq_bres_send(res, 200, "text/plain", "job", 3);
}
static const sq_handler_t slow = {.blocking.get = slow_job, .aborted = any_aborted};

Test(regress_http, half_close_after_a_blocking_request_gets_the_answer)
{
    sq_app_t *app = make_app();
    cr_assert_eq(sq_app_route(app, "/job", &slow, NULL), 0);
    th_server_t *ts = th_server_start(app, NULL);
    th_conn_t c;
    cr_assert_eq(th_conn_open(&c, th_server_port(ts)), 0);
    cr_assert_eq(th_conn_sends(&c, GET("/job") GET("/")), 0);
    half_close(&c);
    th_expect_res(&c, 200, "job");
    th_expect_res(&c, 200, "ok");
    cr_assert_eq(th_conn_wait_closed(&c, 5000), 0);
    th_conn_close(&c);
    th_server_stop(ts, 1000);
    sq_app_destroy(app);
    cr_assert_eq(atomic_load(&rc_b), 0);
    cr_assert_eq(atomic_load(&n_aborted), 0);
}

/* RFC 9110 §5.5: a field value may be empty; an obs-fold after one is still refused. */
static void hdr_get(sq_req_t *req, sq_res_t *res, void *data)
{
    const char *a = sq_req_header(req, "X-A"), *b = sq_req_header(req, "X-B");
    char out[64];
    int n = snprintf(out, sizeof(out), "[%s][%s]", a ? a : "null", b ? b : "null");
    sq_res_send(res, 200, "text/plain", out, (size_t)n);
}
static const sq_handler_t hdr = {.get = hdr_get};

Test(regress_http, empty_header_values_are_accepted)
{
    sq_app_t *app = make_app();
    cr_assert_eq(sq_app_route(app, "/hdr", &hdr, NULL), 0);
    th_server_t *ts = th_server_start(app, NULL);
    static const char *cases[][2] = {
        {"GET /hdr HTTP/1.1\r\nHost: t\r\nX-A:\r\n\r\n", "[][null]"},
        {"GET /hdr HTTP/1.1\r\nX-A: \r\nHost: t\r\nX-B:\t\r\n\r\n", "[][]"},
        {"GET /hdr HTTP/1.1\r\nHost: t\r\nX-A:\r\nX-B: b\r\n\r\n", "[][b]"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        th_res_t r;
        cr_assert_eq(th_request(th_server_port(ts), cases[i][0], &r), 0);
        cr_assert_eq(r.status, 200, "case %zu:\n%s", i, r.raw);
        cr_assert_str_eq(r.body, cases[i][1]);
        th_res_free(&r);
    }
    static const char *folds[] = {
        "GET /hdr HTTP/1.1\r\nHost: t\r\nX-A:\r\n folded\r\n\r\n",
        "GET /hdr HTTP/1.1\r\nHost: t\r\nX-A:\r\n\tfolded\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof(folds) / sizeof(folds[0]); i++) {
        th_res_t r;
        cr_assert_eq(th_request(th_server_port(ts), folds[i], &r), 0);
        cr_assert_eq(r.status, 400, "fold %zu:\n%s", i, r.raw);
        th_res_free(&r);
    }
    th_server_stop(ts, 1000);
    sq_app_destroy(app);
}

/* A client that pipelines one more request behind a large answer and reads nothing is a
 * slow reader like any other: closed once it takes nothing for an idle period (it was
 * kept forever while a request waited behind the answer). */
static void big_get(sq_req_t *req, sq_res_t *res, void *data)
{
    static char big[8 << 20];
    sq_res_send(res, 200, "application/octet-stream", big, sizeof(big));
}
static const sq_handler_t big = {.get = big_get};

Test(regress_http, a_reader_that_stalls_with_requests_pipelined_is_closed)
{
    sq_app_t *app = make_app();
    cr_assert_eq(sq_app_route(app, "/big", &big, NULL), 0);
    sq_server_opts_t o;
    sq_server_opts_init(&o);
    o.idle_timeout_ms = 300;
    th_server_t *ts = th_server_start(app, &o);
    for (int behind = 0; behind < 2; behind++) {
        th_conn_t c;
        cr_assert_eq(th_conn_open(&c, th_server_port(ts)), 0);
        int rcvbuf = 4096;
        setsockopt(c.fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
        cr_assert_eq(th_conn_sends(&c, behind ? GET("/big") GET("/") : GET("/big")), 0);
        uint64_t t0 = th_now_ms();
        /* read nothing, and watch the server's side: its connection must go */
        bool closed = false;
        while (!closed && th_now_ms() - t0 < 10000) {
            sq_server_stats_t st;
            th_server_stats(ts, &st);
            closed = st.connections_open == 0;
            if (!closed)
                th_sleep_ms(20);
        }
        uint64_t took = th_now_ms() - t0;
        th_conn_abort(&c);
        cr_assert(closed, "%s: still open after %llu ms (idle timeout 300 ms)",
                  behind ? "a request pipelined behind" : "nothing behind",
                  (unsigned long long)took);
    }
    th_server_stop(ts, 1000);
    sq_app_destroy(app);
}

/* Out of memory while answering JSON: a 500 with fixed bytes, never an encoder that calls
 * back into the one that failed (the two recursed until the stack ran out). jansson's
 * allocator fails one call in `every`, from the handler on. */
static atomic_int oom_every, oom_calls;

static void *oom_malloc(size_t n)
{
    int every = atomic_load(&oom_every);
    if (every > 0 && atomic_fetch_add(&oom_calls, 1) % every == every - 1)
        return NULL;
    return malloc(n);
}

/* GET /json/{every}/{offset}: JSON while one allocation in `every` fails */
static void json_get(sq_req_t *req, sq_res_t *res, void *data)
{
    int64_t every = 0, offset = 0;
    sq_req_param_int(req, "every", &every);
    sq_req_param_int(req, "offset", &offset);
    atomic_store(&oom_calls, (int)offset);
    atomic_store(&oom_every, (int)every);
    int rc = sq_res_send_json_new(res, 200, json_pack("{s:s,s:[i,i,i],s:{s:b}}", "a", "b",
                                                      "list", 1, 2, 3, "o", "t", 1));
    atomic_store(&oom_every, 0);
    atomic_store(&rc_a, rc);
}
static const sq_handler_t json_h = {.get = json_get};

Test(regress_http, json_answers_under_failing_allocations_end_in_a_500_not_a_crash)
{
    json_set_alloc_funcs(oom_malloc, free);
    sq_app_t *app = make_app();
    char path[32];
    cr_assert_eq(sq_app_route(app, "/json/{every:int}/{offset:int}", &json_h, NULL), 0);
    th_server_t *ts = th_server_start(app, NULL);
    th_conn_t c;
    cr_assert_eq(th_conn_open(&c, th_server_port(ts)), 0);
    /* every pattern of one failure in N allocations, N up to 16, at every phase */
    for (int every = 1; every <= 16; every++) {
        for (int offset = 0; offset < every; offset++) {
            char req[96];
            snprintf(req, sizeof(req), "GET /json/%d/%d HTTP/1.1\r\nHost: t\r\n\r\n", every,
                     offset);
            (void)path;
            if (c.fd < 0 || c.eof) {
                th_conn_close(&c);
                cr_assert_eq(th_conn_open(&c, th_server_port(ts)), 0);
            }
            cr_assert_eq(th_conn_sends(&c, req), 0);
            th_res_t r;
            cr_assert_eq(th_conn_read_res(&c, &r, 5000, false), 0, "every %d at %d", every,
                         offset);
            cr_assert(r.status == 200 || r.status == 500, "every %d at %d: %d", every, offset,
                      r.status);
            if (r.status == 500)
                cr_assert_str_eq(r.body, "{\"detail\":\"Internal Server Error\"}");
            th_res_free(&r);
        }
    }
    th_conn_close(&c);
    expect_healthy(th_server_port(ts));
    th_server_stop(ts, 1000);
    sq_app_destroy(app);
}

/* RFC 9110 §5.1: a header name is a token; separators and bytes past ASCII are refused. */
static void names_get(sq_req_t *req, sq_res_t *res, void *data)
{
    static const char *bad[] = {"X(a)", "X\"a", "X/a", "X@a", "X a", "X:a", "X\xc3\xa9", "",
                                "X{a}", "X,a", "X;a", "X=a", "X?a", "X[a]", "X\\a"};
    int refused = 0;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        refused += sq_res_header(res, bad[i], "v") == UV_EINVAL;
    atomic_store(&rc_a, refused);
    atomic_store(&rc_b, sq_res_header(res, "X-Ok_!#$%&'*+.^`|~1", "v"));
    sq_res_send(res, 200, "text/plain", "ok", 2);
}
static const sq_handler_t names = {.get = names_get};

Test(regress_http, header_names_must_be_tokens)
{
    sq_app_t *app = make_app();
    cr_assert_eq(sq_app_route(app, "/names", &names, NULL), 0);
    th_server_t *ts = th_server_start(app, NULL);
    th_res_t r;
    cr_assert_eq(th_request(th_server_port(ts), GET("/names"), &r), 0);
    cr_assert_eq(r.status, 200);
    cr_assert_str_eq(th_res_header(&r, "X-Ok_!#$%&'*+.^`|~1"), "v");
    th_res_free(&r);
    th_server_stop(ts, 1000);
    sq_app_destroy(app);
    cr_assert_eq(atomic_load(&rc_a), 15);
    cr_assert_eq(atomic_load(&rc_b), 0);
}

/* sq_req_peer names the client: its address over TCP (the transport's io says it). */
static void peer_get(sq_req_t *req, sq_res_t *res, void *data)
{
    char peer[64];
    int rc = sq_req_peer(req, peer, sizeof(peer));
    if (rc != 0)
        snprintf(peer, sizeof(peer), "error %d", rc);
    sq_res_send(res, 200, "text/plain", peer, strlen(peer));
}
static const sq_handler_t peer_h = {.get = peer_get};

Test(regress_http, the_peer_is_the_clients_address)
{
    sq_app_t *app = make_app();
    cr_assert_eq(sq_app_route(app, "/peer", &peer_h, NULL), 0);
    th_server_t *ts = th_server_start(app, NULL);
    th_res_t r;
    cr_assert_eq(th_request(th_server_port(ts), GET("/peer"), &r), 0);
    cr_assert_eq(strncmp(r.body, "127.0.0.1:", 10), 0, "peer: %s", r.body);
    cr_assert_gt(atoi(r.body + 10), 0);
    th_res_free(&r);
    th_server_stop(ts, 1000);
    sq_app_destroy(app);
}
