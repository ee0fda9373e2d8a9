/* What a handler may not send: statuses that are not final answers (1xx, 101, out of
 * range), a NULL json, and the framing headers squall writes itself. Each is refused with
 * UV_EINVAL and leaves the response unfinished, so the handler can still answer properly
 * (res.h). Handlers record each return code; the codes are compared once the server has
 * stopped. */
#include <stdatomic.h>
#include <time.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>
#include <jansson.h>

#include "support/harness.h"

#define GET(path) "GET " path " HTTP/1.1\r\nHost: t\r\n\r\n"

enum { NRC = 16 };
static atomic_int rcs[NRC]; /* return codes, in the order each handler makes its calls */
static atomic_int n_rcs;
static atomic_int n_free;   /* sq_res_send_ref free callbacks */

static void record(int rc)
{
    int i = atomic_fetch_add(&n_rcs, 1);
    if (i < NRC)
        atomic_store(&rcs[i], rc);
}

static void reset(void)
{
    atomic_store(&n_rcs, 0);
    atomic_store(&n_free, 0);
    for (int i = 0; i < NRC; i++)
        atomic_store(&rcs[i], 1);
}

static void count_free(void *ptr, void *data)
{
    atomic_fetch_add(&n_free, 1);
}

static const int bad_statuses[] = {100, 101, 199, 0, -1, 1000};

/* GET /send: every finishing call with a bad status, then a real answer */
static void send_get(sq_req_t *req, sq_res_t *res, void *data)
{
    for (size_t i = 0; i < sizeof(bad_statuses) / sizeof(bad_statuses[0]); i++)
        record(sq_res_send(res, bad_statuses[i], "text/plain", "x", 1));
    record(sq_res_send_ref(res, 101, "text/plain", "x", 1, count_free, NULL));
    record(sq_res_send_error(res, 100, "interim"));
    json_t *j = json_pack("{s:i}", "a", 1);
    record(sq_res_send_json(res, 101, j));
    json_decref(j);
    record(sq_res_send_json(res, 200, NULL));
    record(sq_res_send(res, 200, "text/plain", "still mine", 10));
}
static const sq_handler_t sender = {.get = send_get};

/* GET /start: sq_res_start refuses a 1xx; sq_res_end then finds nothing to end */
static void start_get(sq_req_t *req, sq_res_t *res, void *data)
{
    record(sq_res_start(res, 101, "text/plain"));
    record(sq_res_start(res, 100, NULL));
    record(sq_res_end(res));
    record(sq_res_start(res, 200, "text/plain"));
    record(sq_res_write(res, "streamed", 8, NULL, NULL));
    record(sq_res_end(res));
}
static const sq_handler_t starter = {.get = start_get};

/* GET /framing: framing headers in any case are refused, look-alikes are not */
static void framing_get(sq_req_t *req, sq_res_t *res, void *data)
{
    record(sq_res_header(res, "Content-Length", "5"));
    record(sq_res_header(res, "content-length", "5"));
    record(sq_res_header(res, "Transfer-Encoding", "chunked"));
    record(sq_res_header(res, "TRANSFER-ENCODING", "identity"));
    record(sq_res_header(res, "Connection", "close"));
    record(sq_res_header(res, "connection", "keep-alive"));
    record(sq_res_header(res, "X-Content-Length", "5"));
    record(sq_res_send(res, 200, "text/plain", "body", 4));
}
static const sq_handler_t framing = {.get = framing_get};

/* GET /json-null: what `sq_res_send_json_new(res, 200, json_pack(...))` does when
 * json_pack fails */
static void json_null_get(sq_req_t *req, sq_res_t *res, void *data)
{
    record(sq_res_send_json_new(res, 200, NULL));
}
static const sq_handler_t null_json = {.get = json_null_get};

/* GET /blocking: the builder refuses the same things, on the pool thread */
static void blocking_get(const sq_breq_t *req, sq_bres_t *res, void *data)
{
    record(sq_bres_send(res, 101, "text/plain", "x", 1));
    record(sq_bres_header(res, "Content-Length", "1"));
    record(sq_bres_header(res, "transfer-encoding", "chunked"));
    record(sq_bres_send(res, 200, "text/plain", "from the pool", 13));
}
static const sq_handler_t blocking = {.blocking.get = blocking_get};

static sq_app_t *make_app(void)
{
    reset();
    sq_app_t *app;
    cr_assert_eq(sq_app_create(&app), 0);
    cr_assert_eq(sq_app_route(app, "/send", &sender, NULL), 0);
    cr_assert_eq(sq_app_route(app, "/start", &starter, NULL), 0);
    cr_assert_eq(sq_app_route(app, "/framing", &framing, NULL), 0);
    cr_assert_eq(sq_app_route(app, "/json-null", &null_json, NULL), 0);
    cr_assert_eq(sq_app_route(app, "/blocking", &blocking, NULL), 0);
    return app;
}

/* Sends `req` twice on one connection (the answer left it usable) and returns the
 * first response. */
static void ask_twice(int port, const char *req, th_res_t *r)
{
    th_conn_t c;
    cr_assert_eq(th_conn_open(&c, port), 0);
    cr_assert_eq(th_conn_sends(&c, req), 0);
    cr_assert_eq(th_conn_read_res(&c, r, 5000, false), 0);
    cr_assert_eq(th_conn_sends(&c, req), 0);
    th_res_t again;
    cr_assert_eq(th_conn_read_res(&c, &again, 5000, false), 0);
    cr_assert_eq(again.status, r->status);
    th_res_free(&again);
    th_conn_close(&c);
}

/* The first n recorded codes are want[]; `total` calls were recorded in all. */
static void expect_rcs(const int *want, int n, int total)
{
    cr_assert_eq(atomic_load(&n_rcs), total);
    for (int i = 0; i < n; i++)
        cr_assert_eq(atomic_load(&rcs[i]), want[i], "call %d: %s, want %s", i,
                     sq_err_name(atomic_load(&rcs[i])), sq_err_name(want[i]));
}

Test(responses, interim_or_out_of_range_status_is_refused_and_res_stays_owned, .timeout = 10)
{
    sq_app_t *app = make_app();
    th_server_t *ts = th_server_start(app, NULL);
    th_res_t r;
    ask_twice(th_server_port(ts), GET("/send"), &r);
    cr_assert_eq(r.status, 200, "%s", r.raw);
    cr_assert_str_eq(r.body, "still mine");
    th_res_free(&r);
    th_server_stop(ts, 1000);
    sq_app_destroy(app);
    /* per request: 6 x sq_res_send, send_ref, send_error, send_json x 2, the answer */
    int want[11] = {UV_EINVAL, UV_EINVAL, UV_EINVAL, UV_EINVAL, UV_EINVAL, UV_EINVAL,
                    UV_EINVAL, UV_EINVAL, UV_EINVAL, UV_EINVAL, 0};
    expect_rcs(want, 11, 22);
    cr_assert_eq(atomic_load(&n_free), 2, "the refused zero-copy body is released at once");
}

Test(responses, streaming_refuses_an_interim_status_and_can_start_again, .timeout = 10)
{
    sq_app_t *app = make_app();
    th_server_t *ts = th_server_start(app, NULL);
    th_res_t r;
    cr_assert_eq(th_request(th_server_port(ts), GET("/start"), &r), 0);
    cr_assert_eq(r.status, 200, "%s", r.raw);
    cr_assert(r.chunked);
    cr_assert_str_eq(r.body, "streamed");
    cr_assert_null(strstr(r.raw, " 101 "), "%s", r.raw);
    th_res_free(&r);
    th_server_stop(ts, 1000);
    sq_app_destroy(app);
    int want[] = {UV_EINVAL, UV_EINVAL, SQ_ENOTSTREAMING, 0, 0, 0};
    expect_rcs(want, 6, 6);
}

Test(responses, framing_headers_are_refused_in_any_case, .timeout = 10)
{
    sq_app_t *app = make_app();
    th_server_t *ts = th_server_start(app, NULL);
    th_res_t r;
    ask_twice(th_server_port(ts), GET("/framing"), &r);
    cr_assert_eq(r.status, 200);
    cr_assert_str_eq(r.body, "body");
    cr_assert_str_eq(th_res_header(&r, "Content-Length"), "4");
    cr_assert_str_eq(th_res_header(&r, "X-Content-Length"), "5");
    cr_assert_null(th_res_header(&r, "Transfer-Encoding"), "%s", r.head);
    cr_assert_null(th_res_header(&r, "Connection"), "%s", r.head);
    cr_assert_null(strstr(r.head, "\nContent-Length: 5"), "%s", r.head);
    th_res_free(&r);
    th_server_stop(ts, 1000);
    sq_app_destroy(app);
    int want[] = {UV_EINVAL, UV_EINVAL, UV_EINVAL, UV_EINVAL, UV_EINVAL, UV_EINVAL, 0, 0};
    expect_rcs(want, 8, 16);
}

Test(responses, send_json_new_of_null_answers_500, .timeout = 10)
{
    sq_app_t *app = make_app();
    th_server_t *ts = th_server_start(app, NULL);
    th_res_t r;
    cr_assert_eq(th_request(th_server_port(ts), GET("/json-null"), &r), 0);
    cr_assert_eq(r.status, 500);
    cr_assert_str_eq(r.body, "{\"detail\":\"Internal Server Error\"}");
    th_res_free(&r);
    th_server_stop(ts, 1000);
    sq_app_destroy(app);
    int want[] = {0};
    expect_rcs(want, 1, 1);
}

Test(responses, blocking_builder_refuses_interim_status_and_framing_headers, .timeout = 10)
{
    sq_app_t *app = make_app();
    th_server_t *ts = th_server_start(app, NULL);
    th_res_t r;
    cr_assert_eq(th_request(th_server_port(ts), GET("/blocking"), &r), 0);
    cr_assert_eq(r.status, 200, "%s", r.raw);
    cr_assert_str_eq(r.body, "from the pool");
    cr_assert_str_eq(th_res_header(&r, "Content-Length"), "13");
    th_res_free(&r);
    th_server_stop(ts, 1000);
    sq_app_destroy(app);
    int want[] = {UV_EINVAL, UV_EINVAL, UV_EINVAL, 0};
    expect_rcs(want, 4, 4);
}

/* GET /id: answers with the id the handler sees, for the header to be compared with */
static void id_get(sq_req_t *req, sq_res_t *res, void *data)
{
    char body[32];
    int n = snprintf(body, sizeof(body), "%llu", (unsigned long long)sq_req_id(req));
    sq_res_send(res, 200, "text/plain", body, (size_t)n);
}
static const sq_handler_t ider = {.get = id_get};

/* opts.request_id_header: every answer names its request, squall's own too (a 404, a 400
 * for a request that could not be parsed), with the id sq_req_id gives the handler. */
Test(responses, request_id_header_names_every_answer, .timeout = 10)
{
    reset();
    sq_app_t *app;
    cr_assert_eq(sq_app_create(&app), 0);
    cr_assert_eq(sq_app_route(app, "/id", &ider, NULL), 0);
    sq_server_opts_t o;
    sq_server_opts_init(&o);
    char name[] = "X-Request-Id";
    o.request_id_header = name;
    th_server_t *ts = th_server_start(app, &o);
    name[0] = 'Y'; /* copied when the server was made */
    int port = th_server_port(ts);
    th_conn_t c;
    cr_assert_eq(th_conn_open(&c, port), 0);
    unsigned long long prev = 0;
    for (int i = 0; i < 3; i++) {
        th_res_t r;
        cr_assert_eq(th_conn_sends(&c, i == 1 ? GET("/none") : GET("/id")), 0);
        cr_assert_eq(th_conn_read_res(&c, &r, 5000, false), 0);
        const char *id = th_res_header(&r, "X-Request-Id");
        cr_assert_not_null(id, "%s", r.head);
        unsigned long long v = strtoull(id, NULL, 10);
        cr_assert_gt(v, prev, "ids grow: %llu after %llu", v, prev);
        if (i != 1)
            cr_assert_str_eq(r.body, id, "the handler's sq_req_id is the header's");
        else
            cr_assert_eq(r.status, 404);
        prev = v;
        th_res_free(&r);
    }
    th_conn_close(&c);
    th_res_t bad;
    cr_assert_eq(th_request(port, "GET /id HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", &bad), 0);
    cr_assert_eq(bad.status, 400, "%s", bad.raw);
    cr_assert_not_null(th_res_header(&bad, "X-Request-Id"), "%s", bad.head);
    cr_assert_null(th_res_header(&bad, "Y-Request-Id"));
    th_res_free(&bad);
    th_server_stop(ts, 1000);
    sq_app_destroy(app);
}

Test(responses, request_id_header_must_be_a_short_token)
{
    uv_loop_t loop;
    cr_assert_eq(uv_loop_init(&loop), 0);
    sq_app_t *app;
    cr_assert_eq(sq_app_create(&app), 0);
    static const char *const bad[] = {"", "X Id", "X-Id:", "X-Id\r\nEvil: 1",
                                      "X-01234567890123456789012345678901234567890123456"};
    sq_server_opts_t o;
    sq_server_opts_init(&o);
    sq_server_t *srv;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        o.request_id_header = bad[i];
        cr_assert_eq(sq_server_create(&srv, &loop, app, &o), UV_EINVAL, "\"%s\"", bad[i]);
    }
    o.request_id_header = "X-0123456789012345678901234567890123456789012345"; /* 48 */
    cr_assert_eq(sq_server_create(&srv, &loop, app, &o), 0);
    cr_assert_eq(sq_server_destroy(srv, 0, NULL, NULL), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(uv_loop_close(&loop), 0);
    sq_app_destroy(app);
}

/* GET /len?n=N: a body of N bytes */
static void len_get(sq_req_t *req, sq_res_t *res, void *data)
{
    const char *n = sq_req_query(req, "n");
    size_t len = n ? strtoull(n, NULL, 10) : 0;
    char *body = malloc(len ? len : 1);
    memset(body, 'x', len);
    sq_res_send(res, 200, "text/plain", body, len);
    free(body);
}
static const sq_handler_t lener = {.get = len_get};

/* Content-Length in decimal at every number of digits and at each edge between two. */
Test(responses, content_length_is_written_right_at_every_digit_count, .timeout = 30)
{
    reset();
    sq_app_t *app;
    cr_assert_eq(sq_app_create(&app), 0);
    cr_assert_eq(sq_app_route(app, "/len", &lener, NULL), 0);
    sq_server_opts_t o;
    sq_server_opts_init(&o);
    th_server_t *ts = th_server_start(app, &o);
    th_conn_t c;
    cr_assert_eq(th_conn_open(&c, th_server_port(ts)), 0);
    static const size_t lens[] = {0,    1,    9,     10,     11,     99,     100,    101,
                                  999,  1000, 1001,  9999,   10000,  65535,  99999,  100000,
                                  123456, 999999, 1000000, 4194304, 9999999, 10000000};
    for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
        char req[64], want[24];
        snprintf(req, sizeof(req), "GET /len?n=%zu HTTP/1.1\r\nHost: t\r\n\r\n", lens[i]);
        snprintf(want, sizeof(want), "%zu", lens[i]);
        th_res_t r;
        cr_assert_eq(th_conn_sends(&c, req), 0);
        cr_assert_eq(th_conn_read_res(&c, &r, 10000, false), 0);
        cr_assert_str_eq(th_res_header(&r, "Content-Length"), want);
        cr_assert_eq(r.body_len, lens[i]);
        th_res_free(&r);
    }
    th_conn_close(&c);
    th_server_stop(ts, 1000);
    sq_app_destroy(app);
}

/* One request on c: its X-Request-Id, which must be what the handler's sq_req_id said. */
static unsigned long long ask_id(th_conn_t *c)
{
    th_res_t r;
    cr_assert_eq(th_conn_sends(c, GET("/id")), 0);
    cr_assert_eq(th_conn_read_res(c, &r, 5000, false), 0);
    const char *id = th_res_header(&r, "X-Request-Id");
    cr_assert_not_null(id, "%s", r.head);
    cr_assert_str_eq(r.body, id, "the handler's sq_req_id is the header's: %s, %s", r.body, id);
    unsigned long long v = strtoull(id, NULL, 10);
    char again[24];
    snprintf(again, sizeof(again), "%llu", v);
    cr_assert_str_eq(id, again, "plain decimal, no leading zero");
    th_res_free(&r);
    return v;
}

/* The id is written by counting up the text of the last one when it follows it: right
 * past 9, 99 and 999 (a carry through every digit, one digit more), and right again when
 * the ids a server sees jump (another server takes some: the text is made anew) and then
 * follow each other again. Each test runs in a process of its own, so the ids start at 1. */
Test(responses, request_id_header_is_right_past_every_digit_edge_and_after_a_jump,
     .timeout = 60)
{
    sq_app_t *app;
    cr_assert_eq(sq_app_create(&app), 0);
    cr_assert_eq(sq_app_route(app, "/id", &ider, NULL), 0);
    sq_server_opts_t o;
    sq_server_opts_init(&o);
    o.request_id_header = "X-Request-Id";
    th_server_t *a = th_server_start(app, &o);
    th_conn_t ca;
    cr_assert_eq(th_conn_open(&ca, th_server_port(a)), 0);
    unsigned long long prev = ask_id(&ca);
    cr_assert_lt(prev, 9ull, "the ids of this process start low: %llu", prev);
    while (prev < 1010) {
        unsigned long long v = ask_id(&ca);
        cr_assert_eq(v, prev + 1, "one server, one client: %llu after %llu", v, prev);
        prev = v;
    }
    /* a second server takes every other id: each sees its ids jump */
    th_server_t *b = th_server_start(app, &o);
    th_conn_t cb;
    cr_assert_eq(th_conn_open(&cb, th_server_port(b)), 0);
    for (int i = 0; i < 20; i++) {
        unsigned long long va = ask_id(&ca), vb = ask_id(&cb);
        cr_assert_gt(va, prev);
        cr_assert_eq(vb, va + 1, "%llu after %llu", vb, va);
        prev = vb;
    }
    th_conn_close(&cb);
    th_server_stop(b, 1000);
    for (int i = 0; i < 20; i++) { /* back to one: after a jump, then in sequence */
        unsigned long long v = ask_id(&ca);
        cr_assert_eq(v, prev + 1, "%llu after %llu", v, prev);
        prev = v;
    }
    th_conn_close(&ca);
    th_server_stop(a, 1000);
    sq_app_destroy(app);
}

/* Content types written one after another into the same buffer: each is checked as it is
 * at the call, so one that was fine before lets no CR, LF or other control through now. */
static char ctype_buf[64];
static const char *const ctypes[] = {
    "text/plain",                     /* fine */
    "text/plain\r\nX-Evil: 1",        /* the same buffer, now splitting the response */
    "text/plain",                     /* fine again */
    "text/plain; charset=utf-8",      /* longer than 8 and 16 bytes */
    "text/plain; charset=\nutf-8",    /* LF inside the third word */
    "text/plain;\tq=1",               /* HTAB is allowed */
    "text/pla\x7f",                   /* DEL, at a word's first byte */
    "text/plain; charset=utf-8\r",    /* CR in the tail */
    "01234567\r",                     /* CR just past a word */
    "",                               /* empty: a header with nothing after ": " */
};
static const bool ctype_ok[] = {true, false, true, true, false, true, false, false, false, true};

/* GET /ctype?i=I&m=send|ref|start: ctypes[I], copied into ctype_buf, as the content type;
 * a refused one gets a plain 200 "refused" with none */
static void ctype_get(sq_req_t *req, sq_res_t *res, void *data)
{
    const char *i = sq_req_query(req, "i"), *m = sq_req_query(req, "m");
    strcpy(ctype_buf, ctypes[atoi(i)]);
    int rc;
    if (strcmp(m, "send") == 0) {
        rc = sq_res_send(res, 200, ctype_buf, "body", 4);
    } else if (strcmp(m, "ref") == 0) {
        rc = sq_res_send_ref(res, 200, ctype_buf, "body", 4, count_free, NULL);
    } else {
        rc = sq_res_start(res, 200, ctype_buf);
        if (rc == 0) {
            sq_res_write(res, "body", 4, NULL, NULL);
            sq_res_end(res);
        }
    }
    record(rc);
    if (rc != 0)
        sq_res_send(res, 200, NULL, "refused", 7);
}
static const sq_handler_t ctyper = {.get = ctype_get};

Test(responses, content_type_in_a_reused_buffer_is_checked_each_time, .timeout = 20)
{
    sq_app_t *app;
    cr_assert_eq(sq_app_create(&app), 0);
    cr_assert_eq(sq_app_route(app, "/ctype", &ctyper, NULL), 0);
    static const char *const modes[] = {"send", "ref", "start"};
    for (size_t k = 0; k < 3; k++) {
        reset();
        th_server_t *ts = th_server_start(app, NULL);
        th_conn_t c;
        cr_assert_eq(th_conn_open(&c, th_server_port(ts)), 0);
        size_t n = sizeof(ctypes) / sizeof(ctypes[0]);
        for (size_t i = 0; i < n; i++) {
            char q[80];
            snprintf(q, sizeof(q), "GET /ctype?i=%zu&m=%s HTTP/1.1\r\nHost: t\r\n\r\n", i,
                     modes[k]);
            th_res_t r;
            cr_assert_eq(th_conn_sends(&c, q), 0);
            cr_assert_eq(th_conn_read_res(&c, &r, 5000, false), 0);
            cr_assert_eq(r.status, 200, "%s", r.raw);
            cr_assert_null(th_res_header(&r, "X-Evil"), "%s", r.head);
            const char *ct = th_res_header(&r, "Content-Type");
            if (ctype_ok[i]) {
                cr_assert_str_eq(r.body, "body", "%s %zu: %s", modes[k], i, r.raw);
                cr_assert_not_null(ct, "%s", r.head);
                cr_assert_str_eq(ct, ctypes[i]);
            } else {
                cr_assert_str_eq(r.body, "refused", "%s %zu: %s", modes[k], i, r.raw);
                cr_assert_null(ct, "%s", r.head);
            }
            th_res_free(&r);
        }
        th_conn_close(&c);
        th_server_stop(ts, 1000);
        for (size_t i = 0; i < n; i++)
            cr_assert_eq(atomic_load(&rcs[i]), ctype_ok[i] ? 0 : UV_EINVAL, "%s %zu", modes[k],
                         i);
    }
    sq_app_destroy(app);
}

/* GET /mix?k=plain|ref|stream: bytes only, a zero-copy body, or a streamed body whose
 * writes have completions */
static atomic_int n_write_cb;
static void count_write(sq_res_t *res, int status, void *data)
{
    if (status == 0)
        atomic_fetch_add(&n_write_cb, 1);
}
static void mix_get(sq_req_t *req, sq_res_t *res, void *data)
{
    static const char body[] = "zero-copy";
    const char *k = sq_req_query(req, "k");
    if (strcmp(k, "plain") == 0) {
        record(sq_res_send(res, 200, "text/plain", "plain", 5));
    } else if (strcmp(k, "ref") == 0) {
        record(sq_res_send_ref(res, 200, "text/plain", body, sizeof(body) - 1, count_free, NULL));
    } else {
        sq_res_start(res, 200, "text/plain");
        sq_res_write(res, "one,", 4, count_write, NULL);
        sq_res_write_ref(res, body, sizeof(body) - 1, count_free, NULL, count_write, NULL);
        sq_res_end(res);
    }
}
static const sq_handler_t mixer = {.get = mix_get};

/* A batch of bytes only completes without looking for callbacks; one with a free or a
 * write callback runs each once. Both kinds alternate on one connection, so each batch is
 * reused after the other kind. */
Test(responses, callbacks_run_once_when_answers_with_and_without_them_alternate, .timeout = 20)
{
    reset();
    atomic_store(&n_write_cb, 0);
    sq_app_t *app;
    cr_assert_eq(sq_app_create(&app), 0);
    cr_assert_eq(sq_app_route(app, "/mix", &mixer, NULL), 0);
    th_server_t *ts = th_server_start(app, NULL);
    th_conn_t c;
    cr_assert_eq(th_conn_open(&c, th_server_port(ts)), 0);
    static const char *const kinds[] = {"plain", "ref", "plain", "stream", "plain", "plain",
                                        "ref", "ref", "stream", "stream", "plain"};
    static const char *const want[] = {"plain", "zero-copy", "plain", "one,zero-copy",
                                       "plain", "plain", "zero-copy", "zero-copy",
                                       "one,zero-copy", "one,zero-copy", "plain"};
    int refs = 0, streams = 0;
    for (int round = 0; round < 5; round++) {
        for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
            char q[64];
            snprintf(q, sizeof(q), "GET /mix?k=%s HTTP/1.1\r\nHost: t\r\n\r\n", kinds[i]);
            th_res_t r;
            cr_assert_eq(th_conn_sends(&c, q), 0);
            cr_assert_eq(th_conn_read_res(&c, &r, 5000, false), 0);
            cr_assert_str_eq(r.body, want[i], "%s", r.raw);
            th_res_free(&r);
            refs += strcmp(kinds[i], "ref") == 0;
            streams += strcmp(kinds[i], "stream") == 0;
        }
    }
    th_conn_close(&c);
    th_server_stop(ts, 1000);
    sq_app_destroy(app);
    cr_assert_eq(atomic_load(&n_free), refs + streams, "each zero-copy body freed once");
    cr_assert_eq(atomic_load(&n_write_cb), 2 * streams, "each write's completion ran once");
}

/* The Date header (RFC 9110 §6.6.1) as a number of seconds. */
static long long date_secs(const char *date)
{
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    const char *end = strptime(date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    cr_assert(end != NULL && *end == '\0', "an IMF-fixdate: %s", date);
    return (long long)timegm(&tm);
}

static long long wall_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec;
}

/* The second of the wall clock 20 ms ago: the coarse clock the server reads lags by a
 * tick at most (4 ms at HZ=250). */
static long long wall_lately(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)((ts.tv_sec * 1000000000LL + ts.tv_nsec - 20000000) / 1000000000LL);
}

/* The Date is read from the clock once a second and reused on the loop's time until the
 * second ends: each answer still names the second it was made in (the coarse clock may
 * show the one before for a tick), across several seconds' turns, the first requests of
 * each 30 ms past its start. */
Test(responses, date_follows_the_clock_across_seconds, .timeout = 20)
{
    sq_app_t *app;
    cr_assert_eq(sq_app_create(&app), 0);
    cr_assert_eq(sq_app_route(app, "/id", &ider, NULL), 0);
    th_server_t *ts = th_server_start(app, NULL);
    th_conn_t c;
    cr_assert_eq(th_conn_open(&c, th_server_port(ts)), 0);
    for (int turn = 0; turn < 3; turn++) {
        for (int i = 0; i < 5; i++) {
            long long before = wall_lately();
            th_res_t r;
            cr_assert_eq(th_conn_sends(&c, GET("/id")), 0);
            cr_assert_eq(th_conn_read_res(&c, &r, 5000, false), 0);
            long long after = wall_now(), d = date_secs(th_res_header(&r, "Date"));
            cr_assert(d >= before && d <= after, "Date %lld made within [%lld, %lld]", d, before,
                      after);
            th_res_free(&r);
        }
        /* into the next second, a little past its start */
        long long s = wall_now();
        for (int waited = 0; wall_now() == s && waited < 2000; waited += 5)
            usleep(5000);
        usleep(30000);
    }
    th_conn_close(&c);
    th_server_stop(ts, 1000);
    sq_app_destroy(app);
}

/* GET /status?s=N: an answer with status N */
static void status_get(sq_req_t *req, sq_res_t *res, void *data)
{
    sq_res_send(res, atoi(sq_req_query(req, "s")), "text/plain", "s", 1);
}
static const sq_handler_t statuser = {.get = status_get};

/* The status line is kept from one answer to the next and made again for another status:
 * statuses that alternate on one connection each get their own reason phrase. */
Test(responses, status_lines_alternate_with_their_own_reasons, .timeout = 10)
{
    sq_app_t *app;
    cr_assert_eq(sq_app_create(&app), 0);
    cr_assert_eq(sq_app_route(app, "/status", &statuser, NULL), 0);
    th_server_t *ts = th_server_start(app, NULL);
    th_conn_t c;
    cr_assert_eq(th_conn_open(&c, th_server_port(ts)), 0);
    static const struct {
        int status;
        const char *line;
    } want[] = {{200, "HTTP/1.1 200 OK\r\n"},          {200, "HTTP/1.1 200 OK\r\n"},
                {404, "HTTP/1.1 404 Not Found\r\n"},   {201, "HTTP/1.1 201 Created\r\n"},
                {200, "HTTP/1.1 200 OK\r\n"},          {299, "HTTP/1.1 299 Unknown\r\n"},
                {418, "HTTP/1.1 418 Unknown\r\n"},     {431, "HTTP/1.1 431 Request Header Fields Too Large\r\n"},
                {999, "HTTP/1.1 999 Unknown\r\n"},     {200, "HTTP/1.1 200 OK\r\n"}};
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        char q[64];
        snprintf(q, sizeof(q), "GET /status?s=%d HTTP/1.1\r\nHost: t\r\n\r\n", want[i].status);
        th_res_t r;
        cr_assert_eq(th_conn_sends(&c, q), 0);
        cr_assert_eq(th_conn_read_res(&c, &r, 5000, false), 0);
        cr_assert_eq(strncmp(r.raw, want[i].line, strlen(want[i].line)), 0, "%s", r.raw);
        cr_assert_str_eq(r.body, "s");
        th_res_free(&r);
    }
    th_conn_close(&c);
    th_server_stop(ts, 1000);
    sq_app_destroy(app);
}

/* sq_res_send copies its body right behind the head: none for a HEAD request or a status
 * without a body (204, 304), and the next answer on the connection is framed right. */
Test(responses, no_body_bytes_follow_a_head_that_has_none, .timeout = 10)
{
    sq_app_t *app;
    cr_assert_eq(sq_app_create(&app), 0);
    cr_assert_eq(sq_app_route(app, "/status", &statuser, NULL), 0);
    th_server_t *ts = th_server_start(app, NULL);
    th_conn_t c;
    cr_assert_eq(th_conn_open(&c, th_server_port(ts)), 0);
    static const char *const asks[] = {"GET /status?s=204", "GET /status?s=304",
                                       "HEAD /status?s=200", "HEAD /status?s=404"};
    for (size_t i = 0; i < sizeof(asks) / sizeof(asks[0]); i++) {
        char q[80];
        snprintf(q, sizeof(q), "%s HTTP/1.1\r\nHost: t\r\n\r\n", asks[i]);
        bool head = asks[i][0] == 'H';
        th_res_t r;
        cr_assert_eq(th_conn_sends(&c, q), 0);
        cr_assert_eq(th_conn_read_res(&c, &r, 5000, head), 0);
        cr_assert_eq(r.body_len, 0, "%s: %s", asks[i], r.raw);
        if (head)
            cr_assert_str_eq(th_res_header(&r, "Content-Length"), "1", "%s", r.raw);
        th_res_free(&r);
        th_res_t next; /* a body out of place would be read as this answer's start */
        cr_assert_eq(th_conn_sends(&c, GET("/status?s=200")), 0);
        cr_assert_eq(th_conn_read_res(&c, &next, 5000, false), 0);
        cr_assert_eq(next.status, 200, "%s", next.raw);
        cr_assert_str_eq(next.body, "s");
        th_res_free(&next);
    }
    th_conn_close(&c);
    th_server_stop(ts, 1000);
    sq_app_destroy(app);
}

/* GET /q?...: the query's pairs, "k=v;" each, as the handler reads them */
static void query_get(sq_req_t *req, sq_res_t *res, void *data)
{
    char out[4096];
    size_t n = 0;
    char key[16];
    for (int i = 0; i < 64; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        const char *v = sq_req_query(req, key);
        if (v != NULL)
            n += (size_t)snprintf(out + n, sizeof(out) - n, "%s=%s;", key, v);
    }
    sq_res_send(res, 200, "text/plain", out, n);
}
static const sq_handler_t querier = {.get = query_get};

/* A request's arena starts again at its inline block for the next request on the
 * connection, whether the last one stayed in that block or needed more blocks (a long
 * query decoded into it): the small answers after big ones are whole, and so are big
 * ones after small ones. */
Test(responses, request_memory_is_reset_after_small_and_big_requests, .timeout = 10)
{
    sq_app_t *app;
    cr_assert_eq(sq_app_create(&app), 0);
    cr_assert_eq(sq_app_route(app, "/q", &querier, NULL), 0);
    th_server_t *ts = th_server_start(app, NULL);
    th_conn_t c;
    cr_assert_eq(th_conn_open(&c, th_server_port(ts)), 0);
    for (int round = 0; round < 6; round++) {
        bool big = round % 3 != 0; /* small, big, big, small, big, big */
        int pairs = big ? 64 : 2;
        char q[8192], want[4096];
        size_t qn = (size_t)snprintf(q, sizeof(q), "GET /q?"), wn = 0;
        for (int i = 0; i < pairs; i++) {
            char v[64];
            snprintf(v, sizeof(v), "%d-%0*d", round, big ? 40 : 1, i);
            qn += (size_t)snprintf(q + qn, sizeof(q) - qn, "%sk%d=%s", i ? "&" : "", i, v);
            wn += (size_t)snprintf(want + wn, sizeof(want) - wn, "k%d=%s;", i, v);
        }
        snprintf(q + qn, sizeof(q) - qn, " HTTP/1.1\r\nHost: t\r\n\r\n");
        th_res_t r;
        cr_assert_eq(th_conn_sends(&c, q), 0);
        cr_assert_eq(th_conn_read_res(&c, &r, 5000, false), 0);
        cr_assert_eq(r.status, 200, "%s", r.raw);
        cr_assert_str_eq(r.body, want, "round %d", round);
        th_res_free(&r);
    }
    th_conn_close(&c);
    th_server_stop(ts, 1000);
    sq_app_destroy(app);
}
