/* Streamed request bodies and hooks that wait, on real sockets: a reader paused when the
 * server shuts down, a hook that waits when it does, trailers and pipelining behind a
 * streamed body, a reader paused while the whole body and a pipelined request arrive, a
 * half-close mid-body. Run under ASan (th_server_stop checks leaks there). */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <squall.h>

#include "support/harness.h"

static atomic_int pieces, ends, end_status, started, next_rc, send_rc;
static atomic_int pause_mode; /* 0: read on; 1: pause at the first piece for ever; 2: pause
                                 at the first piece and resume 300 ms later */

static void reset(void)
{
    atomic_store(&pieces, 0);
    atomic_store(&ends, 0);
    atomic_store(&end_status, 1);
    atomic_store(&started, 0);
    atomic_store(&next_rc, 1);
    atomic_store(&send_rc, 1);
    atomic_store(&pause_mode, 0);
}

static uv_timer_t *resume_timer; /* on the loop thread only */

static void resume_cb(uv_timer_t *t)
{
    resume_timer = NULL;
    sq_req_body_resume(t->data);
    uv_close((uv_handle_t *)t, (uv_close_cb)free);
}

static void on_piece(sq_req_t *req, int status, const char *data, size_t len, void *ud)
{
    if (status == 0) {
        if (atomic_fetch_add(&pieces, 1) == 0 && atomic_load(&pause_mode) != 0) {
            sq_req_body_pause(req);
            if (atomic_load(&pause_mode) == 2) {
                uv_timer_t *t = malloc(sizeof(*t));
                uv_timer_init(sq_req_loop(req), t);
                t->data = req;
                uv_timer_start(t, resume_cb, 300, 0);
                resume_timer = t;
            }
        }
        return;
    }
    if (resume_timer != NULL) { /* the request ends here: the resume must not come after */
        uv_close((uv_handle_t *)resume_timer, (uv_close_cb)free);
        resume_timer = NULL;
    }
    atomic_store(&end_status, status);
    atomic_fetch_add(&ends, 1);
    atomic_store(&send_rc, sq_res_send(sq_req_data(req), status == UV_EOF ? 200 : 400, "text/plain",
                                       "done", 4));
}

static void up_post(sq_req_t *req, sq_res_t *res, void *data)
{
    atomic_fetch_add(&started, 1);
    sq_req_set_data(req, res);
    sq_req_body_read(req, on_piece, NULL);
}

static void plain_get(sq_req_t *req, sq_res_t *res, void *data)
{
    sq_res_send(res, 200, "text/plain", "ok", 2);
}

static const sq_handler_t up = {
    .post = up_post, .stream_body = SQ_STREAM(SQ_METHOD_POST), .stream_body_max = 1ull << 32};
static const sq_handler_t plain = {.get = plain_get};

/* A before hook on /wait: waits, and goes on 600 ms later from a timer. */
static void next_cb(uv_timer_t *t)
{
    atomic_store(&next_rc, sq_req_next(t->data));
    uv_close((uv_handle_t *)t, (uv_close_cb)free);
}

static int wait_hook(sq_req_t *req, sq_res_t *res, void *data)
{
    if (strncmp(sq_req_target(req), "/wait", 5) != 0)
        return SQ_NEXT;
    atomic_fetch_add(&started, 1);
    uv_timer_t *t = malloc(sizeof(*t));
    uv_timer_init(sq_req_loop(req), t);
    t->data = req;
    uv_timer_start(t, next_cb, 600, 0);
    return SQ_PAUSE;
}

static sq_app_t *app;

static th_server_t *start(void)
{
    reset();
    cr_assert_eq(sq_app_create(&app), 0);
    cr_assert_eq(sq_app_before(app, wait_hook, NULL), 0);
    cr_assert_eq(sq_app_route(app, "/up", &up, NULL), 0);
    cr_assert_eq(sq_app_route(app, "/wait", &up, NULL), 0);
    cr_assert_eq(sq_app_route(app, "/plain", &plain, NULL), 0);
    sq_server_opts_t o;
    sq_server_opts_init(&o);
    o.max_body_bytes = 1024;
    return th_server_start(app, &o);
}

static void stop(th_server_t *ts, uint64_t grace)
{
    th_server_stop(ts, grace);
    sq_app_destroy(app);
}

static char *filler(size_t n)
{
    char *b = malloc(n);
    memset(b, 'x', n);
    return b;
}

/* The reader paused for ever when the server shuts down: once the grace is over it is
 * told (UV_ECONNRESET), its answer is dropped, nothing leaks. */
Test(stream_held, a_reader_paused_for_ever_is_told_when_the_server_shuts_down, .timeout = 30)
{
    th_server_t *ts = start();
    atomic_store(&pause_mode, 1);
    th_conn_t c;
    cr_assert_eq(th_conn_open(&c, th_server_port(ts)), 0);
    th_conn_sends(&c, "POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000\r\n\r\n");
    char *b = filler(100000);
    th_conn_send(&c, b, 100000);
    cr_assert_geq(th_wait_atomic(&pieces, 1, 5000), 1);
    stop(ts, 300);
    th_conn_close(&c);
    free(b);
    cr_expect_eq(atomic_load(&ends), 1);
    cr_expect_eq(atomic_load(&end_status), UV_ECONNRESET);
}

/* A before hook waits (it goes on 600 ms later) when the server shuts down with a grace
 * of 200 ms: its sq_req_next then learns the client went, and nothing leaks. */
Test(stream_held, a_hook_that_waits_across_the_servers_shutdown, .timeout = 30)
{
    th_server_t *ts = start();
    th_conn_t c;
    cr_assert_eq(th_conn_open(&c, th_server_port(ts)), 0);
    th_conn_sends(&c, "POST /wait HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000\r\n\r\nabc");
    cr_assert_geq(th_wait_atomic(&started, 1, 5000), 1);
    stop(ts, 200);
    th_conn_close(&c);
    cr_expect_eq(atomic_load(&next_rc), UV_ECANCELED);
}

/* A chunked streamed body with trailer fields, and a request pipelined behind it. */
Test(stream_held, a_chunked_body_with_trailers_then_a_pipelined_request, .timeout = 30)
{
    th_server_t *ts = start();
    th_conn_t c;
    cr_assert_eq(th_conn_open(&c, th_server_port(ts)), 0);
    th_conn_sends(&c, "POST /up HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                      "5\r\nhello\r\n0\r\nX-Sum: 1\r\nX-More: 2\r\n\r\n"
                      "GET /plain HTTP/1.1\r\nHost: t\r\n\r\n");
    th_expect_res(&c, 200, "done");
    th_expect_res(&c, 200, "ok");
    th_conn_close(&c);
    stop(ts, 1000);
}

/* The reader is paused when the rest of the body and a pipelined request arrive; it
 * resumes 300 ms later: the body ends, then the pipelined request is answered. */
Test(stream_held, a_paused_reader_with_the_whole_body_and_a_pipelined_request_behind,
     .timeout = 30)
{
    th_server_t *ts = start();
    atomic_store(&pause_mode, 2);
    th_conn_t c;
    cr_assert_eq(th_conn_open(&c, th_server_port(ts)), 0);
    size_t n = 200000;
    char *b = filler(n);
    char head[128];
    snprintf(head, sizeof(head), "POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: %zu\r\n\r\n", n);
    th_conn_sends(&c, head);
    th_conn_send(&c, b, 1000);
    cr_assert_geq(th_wait_atomic(&pieces, 1, 5000), 1);
    th_conn_send(&c, b + 1000, n - 1000);
    th_conn_sends(&c, "GET /plain HTTP/1.1\r\nHost: t\r\n\r\n");
    th_expect_res(&c, 200, "done");
    th_expect_res(&c, 200, "ok");
    th_conn_close(&c);
    free(b);
    stop(ts, 1000);
}

/* The client half-closes (FIN) mid-body: the body can never end, the reader is told. */
Test(stream_held, a_half_close_mid_body_ends_the_reader, .timeout = 30)
{
    th_server_t *ts = start();
    th_conn_t c;
    cr_assert_eq(th_conn_open(&c, th_server_port(ts)), 0);
    th_conn_sends(&c, "POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000\r\n\r\nabcdef");
    cr_assert_geq(th_wait_atomic(&pieces, 1, 5000), 1);
    shutdown(c.fd, SHUT_WR);
    cr_assert_geq(th_wait_atomic(&ends, 1, 5000), 1);
    th_conn_close(&c);
    stop(ts, 1000);
    cr_expect_neq(atomic_load(&end_status), UV_EOF);
}

/* The same with the reader paused when the FIN comes. */
Test(stream_held, a_half_close_mid_body_while_paused_ends_the_reader, .timeout = 30)
{
    th_server_t *ts = start();
    atomic_store(&pause_mode, 2);
    th_conn_t c;
    cr_assert_eq(th_conn_open(&c, th_server_port(ts)), 0);
    th_conn_sends(&c, "POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000\r\n\r\nabcdef");
    cr_assert_geq(th_wait_atomic(&pieces, 1, 5000), 1);
    shutdown(c.fd, SHUT_WR);
    cr_assert_geq(th_wait_atomic(&ends, 1, 5000), 1);
    th_conn_close(&c);
    stop(ts, 1000);
    cr_expect_neq(atomic_load(&end_status), UV_EOF);
}

/* Expect: 100-continue on a streamed route whose reader reads: 100, then the answer. */
Test(stream_held, expect_100_on_a_streamed_route_then_the_body, .timeout = 30)
{
    th_server_t *ts = start();
    th_conn_t c;
    cr_assert_eq(th_conn_open(&c, th_server_port(ts)), 0);
    th_conn_sends(&c, "POST /up HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n"
                      "Content-Length: 5\r\n\r\n");
    th_expect_res(&c, 100, NULL);
    th_conn_sends(&c, "hello");
    th_expect_res(&c, 200, "done");
    th_conn_close(&c);
    stop(ts, 1000);
}
