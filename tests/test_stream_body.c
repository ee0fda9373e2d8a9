/* Request bodies read as a stream (sq_handler_t.stream_body, sq_req_body_read): bodies
 * far over max_body_bytes in pieces of at most 64 KiB, chunked and sized, the route's own
 * limit, back-pressure, an early answer, pipelining and keep-alive behind a streamed
 * body, a client that leaves mid-body, and the same reader on a buffered body. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <jansson.h>
#include <squall.h>

#include "support/harness.h"

typedef struct upload {
    uint64_t bytes;
    uint32_t sum; /* a rolling checksum of the bytes, in order */
    size_t max_piece;
    int pieces;
} upload_t;

static atomic_int started, ended, end_status, aborted_n, max_piece, bad;
static atomic_uint_fast64_t seen;
static atomic_int pause_now; /* the next upload pauses after its first piece */

static uint32_t roll(uint32_t sum, const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        sum = sum * 31 + (unsigned char)p[i];
    return sum;
}

static void resume_later(uv_timer_t *t)
{
    sq_req_t *req = t->data;
    sq_req_body_resume(req);
    uv_close((uv_handle_t *)t, (uv_close_cb)free);
}

static void on_piece(sq_req_t *req, int status, const char *data, size_t len, void *ud)
{
    upload_t *u = ud;
    if (status == 0) {
        u->bytes += len;
        u->sum = roll(u->sum, data, len);
        if (len > u->max_piece)
            u->max_piece = len;
        atomic_fetch_add(&seen, len);
        if (u->pieces++ == 0 && atomic_exchange(&pause_now, 0)) {
            sq_req_body_pause(req);
            uv_timer_t *t = malloc(sizeof(*t));
            uv_timer_init(sq_req_loop(req), t);
            t->data = req;
            uv_timer_start(t, resume_later, 1000, 0);
        }
        return;
    }
    atomic_store(&end_status, status);
    atomic_fetch_add(&ended, 1);
    if ((int)u->max_piece > atomic_load(&max_piece))
        atomic_store(&max_piece, (int)u->max_piece);
    sq_res_t *res = sq_req_data(req);
    if (status == UV_EOF)
        sq_res_send_json_new(res, 200, json_pack("{s:I,s:I}", "bytes", (json_int_t)u->bytes,
                                                 "sum", (json_int_t)u->sum));
    else if (status == UV_E2BIG)
        sq_res_send_error(res, 413, "Content Too Large");
    else if (sq_res_send_error(res, 500, "gone") != UV_ECANCELED) /* releases it */
        atomic_fetch_add(&bad, 1);
    free(u);
}

static void upload_post(sq_req_t *req, sq_res_t *res, void *data)
{
    atomic_fetch_add(&started, 1);
    upload_t *u = calloc(1, sizeof(*u));
    sq_req_set_data(req, res);
    if (sq_req_body_read(req, on_piece, u) != 0 ||
        sq_req_body_read(req, on_piece, u) != UV_EALREADY)
        atomic_fetch_add(&bad, 1);
}

static void upload_aborted(sq_req_t *req, sq_res_t *res, void *data)
{
    atomic_fetch_add(&aborted_n, 1);
}

/* Answers 401 at once, reading nothing. */
static void refuse_post(sq_req_t *req, sq_res_t *res, void *data)
{
    atomic_fetch_add(&started, 1);
    sq_res_send_error(res, 401, "Unauthorized");
}

static void plain_get(sq_req_t *req, sq_res_t *res, void *data)
{
    sq_res_send(res, 200, "text/plain", "ok", 2);
}

static const sq_handler_t uploads = {.post = upload_post,
                                     .put = upload_post,
                                     .aborted = upload_aborted,
                                     .stream_body = SQ_STREAM(SQ_METHOD_POST),
                                     .stream_body_max = 64 << 20};
static const sq_handler_t refuser = {.post = refuse_post,
                                     .stream_body = SQ_STREAM(SQ_METHOD_POST)};
static const sq_handler_t plain = {.get = plain_get};

static sq_app_t *app;

static th_server_t *start(void)
{
    sq_server_opts_t opts;
    sq_server_opts_init(&opts);
    opts.max_body_bytes = 1 << 20;
    cr_assert_eq(sq_app_create(&app), 0);
    cr_assert_eq(sq_app_route(app, "/upload", &uploads, NULL), 0);
    cr_assert_eq(sq_app_route(app, "/refuse", &refuser, NULL), 0);
    cr_assert_eq(sq_app_route(app, "/plain", &plain, NULL), 0);
    atomic_store(&started, 0);
    atomic_store(&ended, 0);
    atomic_store(&aborted_n, 0);
    atomic_store(&max_piece, 0);
    atomic_store(&seen, 0);
    atomic_store(&pause_now, 0);
    atomic_store(&bad, 0);
    return th_server_start(app, &opts);
}

static void stop(th_server_t *ts)
{
    th_server_stop(ts, 2000);
    sq_app_destroy(app);
    cr_expect_eq(atomic_load(&bad), 0, "a reader call went wrong on the server");
}

static char *pattern(size_t n)
{
    char *b = malloc(n);
    for (size_t i = 0; i < n; i++)
        b[i] = (char)(i * 7 + i / 251);
    return b;
}

typedef struct sender {
    th_conn_t *c;
    const char *data;
    size_t len;
    atomic_size_t sent;
    int rc;
} sender_t;

static void *send_thread(void *arg)
{
    sender_t *s = arg;
    for (size_t off = 0; off < s->len;) {
        size_t n = s->len - off < 65536 ? s->len - off : 65536;
        if ((s->rc = th_conn_send(s->c, s->data + off, n)) != 0)
            break;
        off += n;
        atomic_store(&s->sent, off);
    }
    return NULL;
}

static void expect_upload(th_conn_t *c, const char *body, size_t len)
{
    th_res_t r;
    cr_assert_eq(th_conn_read_res(c, &r, 20000, false), 0);
    cr_assert_eq(r.status, 200, "%d %s", r.status, r.body);
    char want[96];
    snprintf(want, sizeof(want), "{\"bytes\":%zu,\"sum\":%u}", len, roll(0, body, len));
    cr_assert_str_eq(r.body, want);
    th_res_free(&r);
}

Test(stream_body, a_body_eight_times_max_body_bytes_arrives_whole_in_pieces_of_64_kib)
{
    th_server_t *ts = start();
    size_t len = 8 << 20;
    char *body = pattern(len);
    th_conn_t c;
    cr_assert_eq(th_conn_open(&c, th_server_port(ts)), 0);
    char head[128];
    snprintf(head, sizeof(head), "POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: %zu\r\n\r\n",
             len);
    th_conn_sends(&c, head);
    sender_t s = {.c = &c, .data = body, .len = len};
    pthread_t th;
    pthread_create(&th, NULL, send_thread, &s);
    expect_upload(&c, body, len);
    pthread_join(th, NULL);
    /* keep-alive: a second streamed upload, then a plain request, on the same connection */
    th_conn_sends(&c, head);
    cr_assert_eq(th_conn_send(&c, body, len), 0);
    expect_upload(&c, body, len);
    th_conn_sends(&c, "GET /plain HTTP/1.1\r\nHost: t\r\n\r\n");
    th_expect_res(&c, 200, "ok");
    th_conn_close(&c);
    free(body);
    stop(ts);
    cr_assert_eq(atomic_load(&ended), 2);
    cr_assert_leq(atomic_load(&max_piece), 128 * 1024); /* 64 KiB staged + one read */
}

Test(stream_body, a_chunked_body_streams_and_a_pipelined_request_behind_it_is_answered_after)
{
    th_server_t *ts = start();
    size_t len = 3 << 20;
    char *body = pattern(len);
    th_conn_t c;
    cr_assert_eq(th_conn_open(&c, th_server_port(ts)), 0);
    th_conn_sends(&c, "POST /upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n");
    for (size_t off = 0; off < len;) {
        size_t n = len - off < 100000 ? len - off : 100000;
        char line[32];
        snprintf(line, sizeof(line), "%zx\r\n", n);
        th_conn_sends(&c, line);
        th_conn_send(&c, body + off, n);
        th_conn_sends(&c, "\r\n");
        off += n;
    }
    th_conn_sends(&c, "0\r\n\r\nGET /plain HTTP/1.1\r\nHost: t\r\n\r\n");
    expect_upload(&c, body, len);
    th_expect_res(&c, 200, "ok");
    th_conn_close(&c);
    free(body);
    stop(ts);
}

Test(stream_body, the_routes_own_limit_413_before_the_handler_or_e2big_for_a_chunked_body)
{
    th_server_t *ts = start();
    th_res_t r;
    cr_assert_eq(th_request(th_server_port(ts),
                            "POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 67108865\r\n\r\n",
                            &r),
                 0);
    cr_expect_eq(r.status, 413);
    th_res_free(&r);
    cr_expect_eq(atomic_load(&started), 0);
    /* chunked: the reader learns it past 64 MiB and answers 413; the connection closes */
    th_conn_t c;
    cr_assert_eq(th_conn_open(&c, th_server_port(ts)), 0);
    th_conn_sends(&c, "POST /upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n");
    size_t chunk = 1 << 20;
    char *body = pattern(chunk);
    for (int i = 0; i < 65; i++) {
        char line[32];
        snprintf(line, sizeof(line), "%zx\r\n", chunk);
        if (th_conn_sends(&c, line) != 0 || th_conn_send(&c, body, chunk) != 0 ||
            th_conn_sends(&c, "\r\n") != 0)
            break;
    }
    int rc = th_conn_read_res(&c, &r, 10000, false);
    cr_assert_eq(rc, 0, "rc %d: %s", rc, uv_strerror(rc));
    cr_expect_eq(r.status, 413);
    cr_expect_str_eq(th_res_header(&r, "Connection"), "close");
    th_res_free(&r);
    cr_expect_eq(th_conn_wait_closed(&c, 5000), 0);
    th_conn_close(&c);
    free(body);
    stop(ts);
    cr_expect_eq(atomic_load(&end_status), UV_E2BIG);
}

Test(stream_body, an_answer_before_the_body_closes_the_connection_after_it)
{
    th_server_t *ts = start();
    th_conn_t c;
    cr_assert_eq(th_conn_open(&c, th_server_port(ts)), 0);
    th_conn_sends(&c, "POST /refuse HTTP/1.1\r\nHost: t\r\nContent-Length: 5000000\r\n\r\nabc");
    th_res_t r;
    cr_assert_eq(th_conn_read_res(&c, &r, 5000, false), 0);
    cr_expect_eq(r.status, 401);
    cr_expect_str_eq(th_res_header(&r, "Connection"), "close");
    th_res_free(&r);
    cr_expect_eq(th_conn_wait_closed(&c, 5000), 0);
    th_conn_close(&c);
    th_expect_healthy(th_server_port(ts), "/plain", "ok");
    stop(ts);
}

/* The reader pauses after its first piece for a second: meanwhile the server stops reading
 * (the client's sends block once the socket buffers fill), and nothing more is delivered;
 * after the resume the body arrives whole. */
Test(stream_body, a_paused_reader_stops_the_socket_and_resumes_to_the_whole_body)
{
    th_server_t *ts = start();
    size_t len = 48 << 20;
    char *body = pattern(len);
    th_conn_t c;
    cr_assert_eq(th_conn_open(&c, th_server_port(ts)), 0);
    atomic_store(&pause_now, 1);
    char head[128];
    snprintf(head, sizeof(head), "POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: %zu\r\n\r\n",
             len);
    th_conn_sends(&c, head);
    sender_t s = {.c = &c, .data = body, .len = len};
    pthread_t th;
    pthread_create(&th, NULL, send_thread, &s);
    /* the first piece arrives, the reader pauses for a second: sample inside it */
    uint64_t t0 = th_now_ms();
    while (atomic_load(&seen) == 0 && th_now_ms() - t0 < 5000)
        th_sleep_ms(5);
    th_sleep_ms(100);
    uint64_t during = atomic_load(&seen);
    size_t sent = atomic_load(&s.sent);
    th_sleep_ms(200);
    cr_expect_eq(atomic_load(&seen), during, "pieces delivered while paused");
    cr_expect_lt(sent, len / 2, "the server kept reading while paused: %zu sent", sent);
    cr_expect_leq(during, 128 * 1024);
    expect_upload(&c, body, len);
    pthread_join(th, NULL);
    th_conn_close(&c);
    free(body);
    stop(ts);
}

Test(stream_body, a_client_that_leaves_mid_body_ends_the_stream_with_econnreset)
{
    th_server_t *ts = start();
    th_conn_t c;
    cr_assert_eq(th_conn_open(&c, th_server_port(ts)), 0);
    th_conn_sends(&c, "POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000\r\n\r\n");
    char *body = pattern(300000);
    th_conn_send(&c, body, 300000);
    cr_assert_geq(th_wait_atomic(&started, 1, 5000), 1);
    struct linger lg = {1, 0}; /* a reset, not a FIN */
    setsockopt(c.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    th_conn_close(&c);
    cr_assert_geq(th_wait_atomic(&ended, 1, 5000), 1);
    cr_expect_eq(atomic_load(&end_status), UV_ECONNRESET);
    free(body);
    stop(ts);
    /* the reader finished the response when told: .aborted has nothing more to say */
    cr_expect_eq(atomic_load(&aborted_n), 0);
}

/* PUT is not streamed on this route: the same reader gets the buffered body whole. */
Test(stream_body, a_buffered_body_is_given_to_the_reader_as_one_piece)
{
    th_server_t *ts = start();
    th_conn_t c;
    cr_assert_eq(th_conn_open(&c, th_server_port(ts)), 0);
    th_conn_sends(&c, "PUT /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello");
    expect_upload(&c, "hello", 5);
    th_conn_sends(&c, "PUT /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n");
    expect_upload(&c, "", 0);
    th_conn_close(&c);
    stop(ts);
}
