/* The test client (include/squall/testing.h): requests and WebSockets through a server's
 * memory connections, on a loop the client runs itself. Every case here would pass over
 * a socket too; the last group checks that the bytes are the same as over TCP. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>
#include <jansson.h>

#include "squall/testing.h"
#include "support/harness.h"

/* ---- the app ---- */

static void hello_get(sq_req_t *req, sq_res_t *res, void *data)
{
    sq_res_send(res, 200, "text/plain", "hello", 5);
}
static const sq_handler_t hello = {.get = hello_get};

static void echo_post(sq_req_t *req, sq_res_t *res, void *data)
{
    size_t len;
    const char *body = sq_req_body(req, &len);
    const char *type = sq_req_header(req, "content-type");
    sq_res_send(res, 200, type ? type : "application/octet-stream", body, len);
}
static const sq_handler_t echo = {.post = echo_post, .put = echo_post};

/* PUT /items/{id}: the JSON body with the id added */
static void item_put(sq_req_t *req, sq_res_t *res, void *data)
{
    int64_t id;
    json_error_t err;
    json_t *in = sq_req_json(req, &err);
    if (in == NULL || sq_req_param_int(req, "id", &id) != 0) {
        json_decref(in);
        sq_res_send_error(res, 400, "invalid JSON");
        return;
    }
    json_object_set_new(in, "id", json_integer(id));
    sq_res_send_json_new(res, 200, in);
}
static const sq_handler_t items = {.put = item_put, .post = item_put};

/* GET /headers: X-Token back as X-Echo, and the Host it saw */
static void headers_get(sq_req_t *req, sq_res_t *res, void *data)
{
    const char *tok = sq_req_header(req, "x-token");
    sq_res_header(res, "X-Echo", tok ? tok : "none");
    sq_res_header(res, "X-Host", sq_req_header(req, "host"));
    sq_res_send(res, 204, NULL, NULL, 0);
}
static const sq_handler_t headers = {.get = headers_get};

/* GET /late: answers from a timer on the server's loop */
typedef struct late {
    uv_timer_t timer;
    sq_res_t *res;
    int step;
} late_t;

static void late_closed(uv_handle_t *h)
{
    free(h->data);
}

static void late_fire(uv_timer_t *timer)
{
    late_t *l = timer->data;
    sq_res_send(l->res, 200, "text/plain", "late", 4);
    uv_close((uv_handle_t *)timer, late_closed);
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

/* GET /stream: a chunked body written from a timer, three pieces */
static void stream_fire(uv_timer_t *timer)
{
    late_t *l = timer->data;
    static const char *parts[] = {"one,", "two,", "three"};
    sq_res_write(l->res, parts[l->step], strlen(parts[l->step]), NULL, NULL);
    if (++l->step == 3) {
        sq_res_end(l->res);
        uv_close((uv_handle_t *)timer, late_closed);
    }
}

static void stream_get(sq_req_t *req, sq_res_t *res, void *data)
{
    late_t *l = calloc(1, sizeof(*l));
    l->res = res;
    sq_res_start(res, 200, "text/plain");
    uv_timer_init(sq_req_loop(req), &l->timer);
    l->timer.data = l;
    uv_timer_start(&l->timer, stream_fire, 5, 5);
}
static const sq_handler_t stream = {.get = stream_get};

/* GET /block: runs on the thread pool */
static void block_get(const sq_breq_t *req, sq_bres_t *res, void *data)
{
    uv_sleep(10);
    const char *q = sq_breq_query(req, "q");
    sq_bres_send(res, 200, "text/plain", q ? q : "none", q ? strlen(q) : 4);
}
static const sq_handler_t block = {.blocking.get = block_get};

/* GET /never: holds the response until the client goes */
static atomic_int never_aborted;
static void never_get(sq_req_t *req, sq_res_t *res, void *data) {}
static void never_aborted_cb(sq_req_t *req, sq_res_t *res, void *data)
{
    atomic_fetch_add(&never_aborted, 1);
    sq_res_send(res, 500, "text/plain", "gone", 4); /* UV_ECANCELED: releases res */
}
static const sq_handler_t never = {.get = never_get, .aborted = never_aborted_cb};

/* ---- WebSocket routes ---- */

typedef struct ws_log {
    atomic_int opened, closed, pongs, last_code;
    char last_reason[64];
} ws_log_t;
static ws_log_t wlog;

static void ws_open(sq_ws_t *ws, sq_req_t *req, void *data)
{
    atomic_fetch_add(&wlog.opened, 1);
}

static void ws_echo_msg(sq_ws_t *ws, int binary, const char *msg, size_t len, void *data)
{
    if (len == 3 && memcmp(msg, "bye", 3) == 0) {
        sq_ws_close(ws, 4001, "bye now");
        return;
    }
    if (len == 4 && memcmp(msg, "frag", 4) == 0) { /* RFC 6455 §5.4: three fragments */
        sq_ws_send_fragment(ws, 0, "ab", 2, 0);
        sq_ws_send_fragment(ws, 0, "cd", 2, 0);
        sq_ws_send_fragment(ws, 0, "ef", 2, 1);
        return;
    }
    sq_ws_send(ws, binary, msg, len);
}

static void ws_closed(sq_ws_t *ws, int code, const char *reason, void *data)
{
    snprintf(wlog.last_reason, sizeof(wlog.last_reason), "%s", reason ? reason : "");
    atomic_store(&wlog.last_code, code);
    atomic_fetch_add(&wlog.closed, 1);
}

static void ws_pong(sq_ws_t *ws, const char *payload, size_t len, void *data)
{
    atomic_fetch_add(&wlog.pongs, 1);
}

static const sq_ws_handler_t ws_echo = {
    .open = ws_open, .message = ws_echo_msg, .close = ws_closed, .pong = ws_pong};

static int refuse(sq_req_t *req, const char **subprotocol, void *data)
{
    return 403;
}
static const sq_ws_handler_t ws_refused = {.message = ws_echo_msg, .accept = refuse};

static sq_app_t *app;
static sq_test_t *t;

static void make_app(void)
{
    memset(&wlog, 0, sizeof(wlog));
    atomic_store(&never_aborted, 0);
    cr_assert_eq(sq_app_create(&app), 0);
    cr_assert_eq(sq_app_route(app, "/hello", &hello, NULL), 0);
    cr_assert_eq(sq_app_route(app, "/echo", &echo, NULL), 0);
    cr_assert_eq(sq_app_route(app, "/items/{id:int}", &items, NULL), 0);
    cr_assert_eq(sq_app_route(app, "/headers", &headers, NULL), 0);
    cr_assert_eq(sq_app_route(app, "/late", &late, NULL), 0);
    cr_assert_eq(sq_app_route(app, "/stream", &stream, NULL), 0);
    cr_assert_eq(sq_app_route(app, "/block", &block, NULL), 0);
    cr_assert_eq(sq_app_route(app, "/never", &never, NULL), 0);
    sq_ws_opts_t wo;
    sq_ws_opts_init(&wo);
    wo.ping_interval_ms = 30; /* the client must answer pings as a browser does */
    wo.pong_timeout_ms = 2000;
    cr_assert_eq(sq_app_websocket(app, "/ws/echo", &ws_echo, &wo, NULL), 0);
    cr_assert_eq(sq_app_websocket(app, "/ws/refused", &ws_refused, NULL, NULL), 0);
}

static void setup(void)
{
    make_app();
    cr_assert_eq(sq_test_create(&t, app, NULL), 0);
}

static void teardown(void)
{
    if (t != NULL)
        cr_assert_eq(sq_test_destroy(t), 0);
    t = NULL;
    sq_app_destroy(app);
}

TestSuite(testing, .init = setup, .fini = teardown, .timeout = 20);

/* ---- HTTP ---- */

Test(testing, plain_route)
{
    sq_test_res_t *res;
    cr_assert_eq(sq_test_request(t, "GET", "/hello", NULL, NULL, &res), 0);
    cr_assert_eq(res->status, 200);
    cr_assert_str_eq(res->reason, "OK");
    cr_assert_eq(res->http_minor, 1);
    cr_assert_str_eq(res->body, "hello");
    cr_assert_eq(res->body_len, 5);
    cr_assert_str_eq(sq_test_res_header(res, "content-type"), "text/plain");
    cr_assert_str_eq(sq_test_res_header(res, "CONTENT-LENGTH"), "5");
    cr_assert_null(sq_test_res_header(res, "x-none"));
    cr_assert_null(sq_test_res_json(res), "not JSON");
    cr_assert_eq(res->keep_alive, 1);
    cr_assert_eq(res->chunked, 0);
    cr_assert(strncmp(res->raw, "HTTP/1.1 200 OK\r\n", 17) == 0);
    sq_test_res_free(res);
    sq_test_res_free(NULL);

    /* HEAD falls back to GET: the length, no body */
    cr_assert_eq(sq_test_request(t, "HEAD", "/hello", NULL, NULL, &res), 0);
    cr_assert_eq(res->status, 200);
    cr_assert_str_eq(sq_test_res_header(res, "content-length"), "5");
    cr_assert_eq(res->body_len, 0);
    cr_assert_str_eq(res->body, "");
    sq_test_res_free(res);
}

Test(testing, json_body_in_and_out)
{
    json_t *in = json_pack("{s:s,s:f}", "name", "widget", "price", 2.5);
    sq_test_res_t *res;
    cr_assert_eq(sq_test_request_json(t, "PUT", "/items/5", NULL, in, &res), 0);
    json_decref(in);
    cr_assert_eq(res->status, 200, "%s", res->raw);
    json_t *j = sq_test_res_json(res);
    cr_assert_not_null(j);
    cr_assert_eq(sq_test_res_json(res), j, "parsed once");
    cr_assert_eq(json_integer_value(json_object_get(j, "id")), 5);
    cr_assert_str_eq(json_string_value(json_object_get(j, "name")), "widget");
    cr_assert_str_eq(sq_test_res_header(res, "content-type"), "application/json");
    sq_test_res_free(res);

    /* a string body with its own Content-Type, and one that is not JSON */
    const char *h[] = {"Content-Type: application/json", NULL};
    cr_assert_eq(sq_test_request(t, "POST", "/items/7", h, "{\"a\":[1,2]}", &res), 0);
    cr_assert_str_eq(res->body, "{\"a\":[1,2],\"id\":7}");
    sq_test_res_free(res);
    cr_assert_eq(sq_test_request(t, "POST", "/items/7", NULL, "{nope", &res), 0);
    cr_assert_eq(res->status, 400);
    cr_assert_str_eq(json_string_value(json_object_get(sq_test_res_json(res), "detail")),
                     "invalid JSON");
    sq_test_res_free(res);
    /* a path parameter that is not an int: the router's 422 */
    json_t *empty = json_object();
    cr_assert_eq(sq_test_request_json(t, "PUT", "/items/x", NULL, empty, &res), 0);
    json_decref(empty);
    cr_assert_eq(res->status, 422);
    sq_test_res_free(res);
}

Test(testing, headers_in_and_out)
{
    const char *h[] = {"X-Token: secret", NULL};
    sq_test_res_t *res;
    cr_assert_eq(sq_test_request(t, "GET", "/headers", h, NULL, &res), 0);
    cr_assert_eq(res->status, 204);
    cr_assert_str_eq(sq_test_res_header(res, "x-echo"), "secret");
    cr_assert_str_eq(sq_test_res_header(res, "X-HOST"), "testserver");
    cr_assert_not_null(sq_test_res_header(res, "date"));
    bool found = false;
    for (size_t i = 0; i < res->nheaders; i++)
        found |= strcmp(res->headers[i].name, "X-Echo") == 0 &&
                 strcmp(res->headers[i].value, "secret") == 0;
    cr_assert(found, "headers keep their names as sent");
    sq_test_res_free(res);

    /* the caller's Host wins; bad header lines are refused before anything is sent */
    const char *h2[] = {"host: example.com", NULL};
    cr_assert_eq(sq_test_request(t, "GET", "/headers", h2, NULL, &res), 0);
    cr_assert_str_eq(sq_test_res_header(res, "x-host"), "example.com");
    sq_test_res_free(res);
    const char *bad1[] = {"NoColon", NULL};
    const char *bad2[] = {"X-A: b\r\nX-Smuggled: c", NULL};
    cr_assert_eq(sq_test_request(t, "GET", "/headers", bad1, NULL, &res), UV_EINVAL);
    cr_assert_null(res);
    cr_assert_eq(sq_test_request(t, "GET", "/headers", bad2, NULL, &res), UV_EINVAL);
    cr_assert_eq(sq_test_request(t, "GET", "/a b", NULL, NULL, &res), UV_EINVAL);
    cr_assert_eq(sq_test_request(t, "GET", NULL, NULL, NULL, &res), UV_EINVAL);
}

Test(testing, not_found_and_method_not_allowed)
{
    sq_test_res_t *res;
    cr_assert_eq(sq_test_request(t, "GET", "/nope", NULL, NULL, &res), 0);
    cr_assert_eq(res->status, 404);
    cr_assert_str_eq(res->body, "{\"detail\":\"Not Found\"}");
    sq_test_res_free(res);
    cr_assert_eq(sq_test_request(t, "DELETE", "/hello", NULL, NULL, &res), 0);
    cr_assert_eq(res->status, 405);
    cr_assert_str_eq(sq_test_res_header(res, "allow"), "GET, HEAD");
    cr_assert_str_eq(json_string_value(json_object_get(sq_test_res_json(res), "detail")),
                     "Method Not Allowed");
    sq_test_res_free(res);
}

Test(testing, async_handler_answers_from_a_timer)
{
    sq_test_res_t *res;
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(sq_test_request(t, "GET", "/late", NULL, NULL, &res), 0);
        cr_assert_eq(res->status, 200);
        cr_assert_str_eq(res->body, "late");
        sq_test_res_free(res);
    }
}

Test(testing, blocking_handler_on_the_thread_pool)
{
    sq_test_res_t *res;
    cr_assert_eq(sq_test_request(t, "GET", "/block?q=pool", NULL, NULL, &res), 0);
    cr_assert_eq(res->status, 200);
    cr_assert_str_eq(res->body, "pool");
    sq_test_res_free(res);
    cr_assert_eq(sq_test_request(t, "HEAD", "/block", NULL, NULL, &res), 0);
    cr_assert_eq(res->status, 200);
    cr_assert_eq(res->body_len, 0);
    sq_test_res_free(res);
}

Test(testing, streaming_response_is_read_chunked)
{
    sq_test_res_t *res;
    cr_assert_eq(sq_test_request(t, "GET", "/stream", NULL, NULL, &res), 0);
    cr_assert_eq(res->status, 200);
    cr_assert_eq(res->chunked, 1);
    cr_assert_str_eq(sq_test_res_header(res, "transfer-encoding"), "chunked");
    cr_assert_str_eq(res->body, "one,two,three");
    sq_test_res_free(res);
    /* HTTP/1.0 has no chunks: the body ends with the connection */
    sq_test_req_opts_t o;
    sq_test_req_opts_init(&o);
    o.http_minor = 0;
    cr_assert_eq(sq_test_request_ex(t, "GET", "/stream", NULL, NULL, 0, &o, &res), 0);
    cr_assert_eq(res->status, 200);
    cr_assert_eq(res->http_minor, 1); /* the server speaks its own version */
    cr_assert_eq(res->chunked, 0);
    cr_assert_eq(res->keep_alive, 0);
    cr_assert_null(sq_test_res_header(res, "content-length"));
    cr_assert_str_eq(res->body, "one,two,three");
    sq_test_res_free(res);
    /* and the next request goes on a new connection */
    cr_assert_eq(sq_test_request(t, "GET", "/hello", NULL, NULL, &res), 0);
    cr_assert_str_eq(res->body, "hello");
    sq_test_res_free(res);
}

Test(testing, keep_alive_connection_is_reused_across_requests)
{
    sq_test_res_t *res;
    for (int i = 0; i < 200; i++) {
        const char *path = i % 3 == 0 ? "/late" : i % 3 == 1 ? "/hello" : "/block?q=x";
        cr_assert_eq(sq_test_request(t, "GET", path, NULL, NULL, &res), 0, "request %d", i);
        cr_assert_eq(res->status, 200);
        sq_test_res_free(res);
    }
    sq_server_stats_t st;
    sq_server_stats(sq_test_server(t), &st);
    cr_assert_eq(st.connections_total, 1, "one keep-alive connection for all");
    cr_assert_eq(st.requests, 200);

    /* Connection: close ends it; the next request opens another */
    sq_test_req_opts_t o;
    sq_test_req_opts_init(&o);
    o.close = 1;
    cr_assert_eq(sq_test_request_ex(t, "GET", "/hello", NULL, NULL, 0, &o, &res), 0);
    cr_assert_eq(res->keep_alive, 0);
    cr_assert_str_eq(sq_test_res_header(res, "connection"), "close");
    sq_test_res_free(res);
    cr_assert_eq(sq_test_request(t, "GET", "/hello", NULL, NULL, &res), 0);
    sq_test_res_free(res);
    sq_server_stats(sq_test_server(t), &st);
    cr_assert_eq(st.connections_total, 2);
}

Test(testing, large_body_both_ways)
{
    size_t n = 300 * 1024 + 7;
    char *big = malloc(n);
    for (size_t i = 0; i < n; i++)
        big[i] = (char)(i * 7 + (i >> 10)); /* NULs included */
    sq_test_res_t *res;
    cr_assert_eq(sq_test_request_ex(t, "POST", "/echo", NULL, big, n, NULL, &res), 0);
    cr_assert_eq(res->status, 200);
    cr_assert_eq(res->body_len, n);
    cr_assert(memcmp(res->body, big, n) == 0);
    cr_assert_eq(res->body[n], '\0');
    sq_test_res_free(res);
    /* chunked framing given by the caller is sent as given */
    const char *h[] = {"Transfer-Encoding: chunked", NULL};
    cr_assert_eq(sq_test_request(t, "PUT", "/echo", h, "3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n", &res),
                 0);
    cr_assert_str_eq(res->body, "abcde");
    sq_test_res_free(res);
    free(big);
}

Test(testing, body_over_max_body_bytes_gets_413)
{
    cr_assert_eq(sq_test_destroy(t), 0);
    sq_server_opts_t o;
    sq_server_opts_init(&o);
    o.max_body_bytes = 1000;
    cr_assert_eq(sq_test_create(&t, app, &o), 0);
    char body[2001];
    memset(body, 'x', 2000);
    body[2000] = '\0';
    sq_test_res_t *res;
    cr_assert_eq(sq_test_request(t, "POST", "/echo", NULL, body, &res), 0);
    cr_assert_eq(res->status, 413);
    cr_assert_eq(res->keep_alive, 0);
    sq_test_res_free(res);
    body[1000] = '\0';
    cr_assert_eq(sq_test_request(t, "POST", "/echo", NULL, body, &res), 0);
    cr_assert_eq(res->status, 200, "the limit itself is allowed");
    cr_assert_eq(res->body_len, 1000);
    sq_test_res_free(res);
    sq_server_stats_t st;
    sq_server_stats(sq_test_server(t), &st);
    cr_assert_eq(st.limit_errors, 1);
}

Test(testing, handler_that_never_answers_times_out_then_destroy_is_clean)
{
    sq_test_req_opts_t o;
    sq_test_req_opts_init(&o);
    o.timeout_ms = 100;
    sq_test_res_t *res = (sq_test_res_t *)&o; /* set to NULL on error */
    cr_assert_eq(sq_test_request_ex(t, "GET", "/never", NULL, NULL, 0, &o, &res), UV_ETIMEDOUT);
    cr_assert_null(res);
    /* the client went as one that gives up does: the handler is told */
    cr_assert_eq(sq_test_run(t, 20), 0);
    cr_assert_eq(atomic_load(&never_aborted), 1);
    /* the client goes on, on a new connection */
    cr_assert_eq(sq_test_request(t, "GET", "/hello", NULL, NULL, &res), 0);
    cr_assert_eq(res->status, 200);
    sq_test_res_free(res);
    sq_server_stats_t st;
    sq_server_stats(sq_test_server(t), &st);
    cr_assert_eq(st.aborted, 1);
    cr_assert_eq(st.connections_total, 2);
}

Test(testing, destroy_with_a_response_still_owed_tells_the_handler)
{
    sq_test_req_opts_t o;
    sq_test_req_opts_init(&o);
    o.timeout_ms = 50;
    sq_test_res_t *res;
    /* the third request on one connection never gets its answer: destroy aborts it */
    cr_assert_eq(sq_test_request(t, "GET", "/hello", NULL, NULL, &res), 0);
    sq_test_res_free(res);
    cr_assert_eq(sq_test_request_ex(t, "GET", "/never", NULL, NULL, 0, &o, &res), UV_ETIMEDOUT);
    cr_assert_eq(sq_test_destroy(t), 0);
    t = NULL;
    cr_assert_eq(atomic_load(&never_aborted), 1);
}

Test(testing, raw_request_for_malformed_input)
{
    static const char bad[] = "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n"
                              "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    sq_test_res_t *res;
    cr_assert_eq(sq_test_request_raw(t, bad, sizeof(bad) - 1, 0, &res), 0);
    cr_assert_eq(res->status, 400);
    cr_assert_str_eq(sq_test_res_header(res, "connection"), "close");
    sq_test_res_free(res);
    static const char head[] = "HEAD /hello HTTP/1.1\r\nHost: t\r\n\r\n";
    cr_assert_eq(sq_test_request_raw(t, head, sizeof(head) - 1, 0, &res), 0);
    cr_assert_eq(res->status, 200);
    cr_assert_eq(res->body_len, 0);
    sq_test_res_free(res);
    /* half a request: no answer in time */
    cr_assert_eq(sq_test_request_raw(t, "GET /hel", 8, 50, &res), UV_ETIMEDOUT);
}

/* The loop the handlers run on is the client's: a handle of the test's own on it runs
 * between requests (sq_test_run), and one left open is reported by destroy. */
static void count_tick(uv_timer_t *timer)
{
    (*(int *)timer->data)++;
}

Test(testing, the_private_loop_is_the_servers)
{
    uv_timer_t *tm = malloc(sizeof(*tm));
    int ticks = 0;
    cr_assert_eq(uv_timer_init(sq_test_loop(t), tm), 0);
    tm->data = &ticks;
    uv_timer_start(tm, count_tick, 1, 1);
    uint64_t t0 = th_now_ms();
    while (ticks < 3 && th_now_ms() - t0 < 5000)
        sq_test_run(t, 5);
    cr_assert_geq(ticks, 3);
    cr_assert_eq(sq_test_destroy(t), UV_EBUSY, "the timer was left open");
    t = NULL;
    free(tm);
}

/* ---- WebSocket ---- */

Test(testing, ws_echo_text_and_binary)
{
    sq_test_ws_t *ws;
    cr_assert_eq(sq_test_ws_connect(t, "/ws/echo", NULL, &ws, NULL), 0);
    cr_assert_eq(atomic_load(&wlog.opened), 1);
    const sq_test_ws_msg_t *m;
    cr_assert_eq(sq_test_ws_send_text(ws, "hi there", 8), 0);
    cr_assert_eq(sq_test_ws_recv(ws, 0, &m), 0);
    cr_assert_eq(m->opcode, SQ_TEST_WS_TEXT);
    cr_assert_str_eq(m->data, "hi there");
    cr_assert_eq(m->frames, 1);
    static const unsigned char bin[] = {0, 1, 2, 0xff, 0};
    cr_assert_eq(sq_test_ws_send_binary(ws, bin, sizeof(bin)), 0);
    cr_assert_eq(sq_test_ws_recv(ws, 0, &m), 0);
    cr_assert_eq(m->opcode, SQ_TEST_WS_BINARY);
    cr_assert_eq(m->len, sizeof(bin));
    cr_assert(memcmp(m->data, bin, sizeof(bin)) == 0);
    /* 100 KiB: a 64-bit length both ways (RFC 6455 §5.2) */
    size_t n = 100 * 1024;
    char *big = malloc(n);
    for (size_t i = 0; i < n; i++)
        big[i] = (char)('a' + i % 26);
    cr_assert_eq(sq_test_ws_send_text(ws, big, n), 0);
    cr_assert_eq(sq_test_ws_recv(ws, 0, &m), 0);
    cr_assert_eq(m->len, n);
    cr_assert(memcmp(m->data, big, n) == 0);
    free(big);
    /* a message the client sends in fragments, with a ping between them (§5.4, §5.5) */
    cr_assert_eq(sq_test_ws_send_frame(ws, SQ_TEST_WS_TEXT, 0, "pie", 3), 0);
    cr_assert_eq(sq_test_ws_send_frame(ws, SQ_TEST_WS_PING, 1, "p", 1), 0);
    cr_assert_eq(sq_test_ws_send_frame(ws, SQ_TEST_WS_CONT, 1, "ces", 3), 0);
    cr_assert_eq(sq_test_ws_recv(ws, 0, &m), 0, "the server's pong is not a message");
    cr_assert_str_eq(m->data, "pieces");
    int code = 0;
    cr_assert_eq(sq_test_ws_close(ws, 1000, "done", &code), 0);
    cr_assert_eq(code, 1000);
}

Test(testing, ws_fragmented_server_message_is_reassembled)
{
    sq_test_ws_t *ws;
    cr_assert_eq(sq_test_ws_connect(t, "/ws/echo", NULL, &ws, NULL), 0);
    const sq_test_ws_msg_t *m;
    cr_assert_eq(sq_test_ws_send_text(ws, "frag", 4), 0);
    cr_assert_eq(sq_test_ws_recv(ws, 0, &m), 0);
    cr_assert_eq(m->opcode, SQ_TEST_WS_TEXT);
    cr_assert_str_eq(m->data, "abcdef");
    cr_assert_eq(m->frames, 3);
    cr_assert_eq(sq_test_ws_close(ws, 1000, NULL, NULL), 0);
}

Test(testing, ws_server_pings_are_answered)
{
    sq_test_ws_t *ws;
    cr_assert_eq(sq_test_ws_connect(t, "/ws/echo", NULL, &ws, NULL), 0);
    const sq_test_ws_msg_t *m;
    /* the route pings every 30 ms and drops a peer that does not answer in 2 s */
    uint64_t t0 = th_now_ms();
    while (atomic_load(&wlog.pongs) < 3 && th_now_ms() - t0 < 5000)
        cr_assert_eq(sq_test_ws_recv(ws, 50, &m), UV_ETIMEDOUT);
    cr_assert_geq(atomic_load(&wlog.pongs), 3);
    cr_assert_eq(sq_test_ws_send_text(ws, "still here", 10), 0);
    cr_assert_eq(sq_test_ws_recv(ws, 0, &m), 0);
    cr_assert_str_eq(m->data, "still here");
    cr_assert_eq(sq_test_ws_close(ws, 1000, NULL, NULL), 0);
}

Test(testing, ws_server_initiated_close_code_is_seen)
{
    sq_test_ws_t *ws;
    cr_assert_eq(sq_test_ws_connect(t, "/ws/echo", NULL, &ws, NULL), 0);
    const sq_test_ws_msg_t *m;
    cr_assert_eq(sq_test_ws_send_text(ws, "bye", 3), 0);
    cr_assert_eq(sq_test_ws_recv(ws, 0, &m), 0);
    cr_assert_eq(m->opcode, SQ_TEST_WS_CLOSE);
    cr_assert_eq(m->close_code, 4001);
    cr_assert_str_eq(m->data, "bye now");
    cr_assert_eq(sq_test_ws_recv(ws, 0, &m), SQ_ECLOSED);
    cr_assert_eq(sq_test_ws_send_text(ws, "x", 1), SQ_ECLOSED);
    int code = 0;
    cr_assert_eq(sq_test_ws_close(ws, 1000, NULL, &code), 0);
    cr_assert_eq(code, 4001);
    /* the client answered the close: the server saw its own code come back */
    sq_test_run(t, 0);
    cr_assert_eq(atomic_load(&wlog.closed), 1);
    cr_assert_eq(atomic_load(&wlog.last_code), 4001);
}

Test(testing, ws_client_close_handshake)
{
    sq_test_ws_t *ws;
    cr_assert_eq(sq_test_ws_connect(t, "/ws/echo", NULL, &ws, NULL), 0);
    int code = 0;
    cr_assert_eq(sq_test_ws_close(ws, 4100, "leaving", &code), 0);
    cr_assert_eq(code, 4100, "the server echoes the client's code (RFC 6455 §5.5.1)");
    cr_assert_eq(atomic_load(&wlog.closed), 1);
    cr_assert_eq(atomic_load(&wlog.last_code), 4100);
    cr_assert_str_eq(wlog.last_reason, "leaving");
    sq_server_stats_t st;
    sq_server_stats(sq_test_server(t), &st);
    cr_assert_eq(st.connections_open, 0, "the server closed the connection");
}

Test(testing, ws_refused_upgrade_shows_the_status)
{
    sq_test_ws_t *ws = (sq_test_ws_t *)&ws;
    sq_test_res_t *res;
    cr_assert_eq(sq_test_ws_connect(t, "/ws/refused", NULL, &ws, &res), 403);
    cr_assert_null(ws);
    cr_assert_not_null(res);
    cr_assert_eq(res->status, 403);
    sq_test_res_free(res);
    cr_assert_eq(sq_test_ws_connect(t, "/ws/nope", NULL, &ws, NULL), 404);
    /* a plain route answers the upgrade request as a GET */
    cr_assert_eq(sq_test_ws_connect(t, "/hello", NULL, &ws, &res), 200);
    cr_assert_str_eq(res->body, "hello");
    sq_test_res_free(res);
    /* a version the server does not speak (the caller's replaces 13): 426 naming 13 */
    const char *h[] = {"Sec-WebSocket-Version: 8", NULL};
    cr_assert_eq(sq_test_ws_connect(t, "/ws/echo", h, &ws, &res), 426);
    cr_assert_str_eq(sq_test_res_header(res, "sec-websocket-version"), "13");
    sq_test_res_free(res);
    cr_assert_eq(atomic_load(&wlog.opened), 0);
}

Test(testing, ws_left_open_is_closed_by_destroy)
{
    sq_test_ws_t *ws;
    cr_assert_eq(sq_test_ws_connect(t, "/ws/echo", NULL, &ws, NULL), 0);
    cr_assert_eq(sq_test_ws_send_text(ws, "x", 1), 0);
    cr_assert_eq(sq_test_destroy(t), 0);
    t = NULL;
    cr_assert_eq(atomic_load(&wlog.closed), 1);
}

/* ---- the same bytes as over a socket ---- */

/* A response's bytes without its Date line, which changes with the second. */
static char *without_date(const char *raw, size_t len)
{
    char *out = malloc(len + 1);
    size_t o = 0;
    const char *p = raw, *end = raw + len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t l = nl ? (size_t)(nl - p) + 1 : (size_t)(end - p);
        if (!(l >= 6 && strncasecmp(p, "Date: ", 6) == 0)) {
            memcpy(out + o, p, l);
            o += l;
        }
        p += l;
    }
    out[o] = '\0';
    return out;
}

Test(testing, responses_are_the_same_bytes_as_over_tcp)
{
    th_server_t *ts = th_server_start(app, NULL);
    static const struct {
        const char *method, *target, *body;
        const char *wire; /* what the test client writes for it */
    } cases[] = {
        {"GET", "/hello", NULL, "GET /hello HTTP/1.1\r\nHost: testserver\r\n\r\n"},
        {"POST", "/echo", "abc",
         "POST /echo HTTP/1.1\r\nHost: testserver\r\nContent-Length: 3\r\n\r\nabc"},
        {"PUT", "/items/3", "{\"x\":1}",
         "PUT /items/3 HTTP/1.1\r\nHost: testserver\r\nContent-Length: 7\r\n\r\n{\"x\":1}"},
        {"GET", "/nope", NULL, "GET /nope HTTP/1.1\r\nHost: testserver\r\n\r\n"},
        {"DELETE", "/hello", NULL, "DELETE /hello HTTP/1.1\r\nHost: testserver\r\n\r\n"},
        {"GET", "/late", NULL, "GET /late HTTP/1.1\r\nHost: testserver\r\n\r\n"},
        {"GET", "/stream", NULL, "GET /stream HTTP/1.1\r\nHost: testserver\r\n\r\n"},
        {"GET", "/block?q=b", NULL, "GET /block?q=b HTTP/1.1\r\nHost: testserver\r\n\r\n"},
        {"HEAD", "/hello", NULL, "HEAD /hello HTTP/1.1\r\nHost: testserver\r\n\r\n"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        sq_test_res_t *res;
        cr_assert_eq(
            sq_test_request(t, cases[i].method, cases[i].target, NULL, cases[i].body, &res), 0);
        th_conn_t c;
        cr_assert_eq(th_conn_open(&c, th_server_port(ts)), 0);
        cr_assert_eq(th_conn_sends(&c, cases[i].wire), 0);
        th_res_t r;
        cr_assert_eq(th_conn_read_res(&c, &r, 5000, strcmp(cases[i].method, "HEAD") == 0), 0);
        char *a = without_date(res->raw, res->raw_len);
        char *b = without_date(r.raw, r.raw_len);
        cr_assert_str_eq(a, b, "%s %s", cases[i].method, cases[i].target);
        cr_assert_eq(res->status, r.status);
        cr_assert_eq(res->body_len, r.body_len);
        free(a);
        free(b);
        th_res_free(&r);
        th_conn_close(&c);
        sq_test_res_free(res);
    }
    th_server_stop(ts, 1000);
}

/* ---- an app that needs the server's loop: a hub attached to the client's ---- */

static sq_hub_t *the_hub;

static void room_get(sq_req_t *req, sq_res_t *res, void *data)
{
    uint64_t since = 0, wait = 0;
    sq_hub_since(sq_req_query(req, "since"), &since);
    sq_hub_since(sq_req_query(req, "wait"), &wait);
    sq_hub_serve_poll(the_hub, req, res, sq_req_param(req, "room"), since, wait);
}

static void room_published(sq_hub_t *h, int status, uint64_t id, void *data)
{
    char body[32];
    int n = snprintf(body, sizeof(body), "%llu", (unsigned long long)id);
    if (status == 0)
        sq_res_send(data, 201, "text/plain", body, (size_t)n);
    else
        sq_res_send_error(data, 503, sq_strerror(status));
}

static void room_post(sq_req_t *req, sq_res_t *res, void *data)
{
    size_t len;
    const char *text = sq_req_body(req, &len);
    if (sq_hub_publish(the_hub, sq_req_loop(req), sq_req_param(req, "room"), text, len,
                       room_published, res) != 0)
        sq_res_send_error(res, 422, "not published");
}
static const sq_handler_t rooms = {.get = room_get, .post = room_post, .aborted = sq_hub_aborted};

static void hub_detach(sq_server_t *srv, void *hub)
{
    sq_hub_detach(hub, sq_server_loop(srv));
}

/* the test publishes on the loop itself, 20 ms into a held poll */
static void publish_later(uv_timer_t *timer)
{
    sq_hub_publish(the_hub, timer->loop, "a", "from the test", 13, NULL, NULL);
    uv_close((uv_handle_t *)timer, NULL);
}

Test(testing, a_hub_on_the_clients_loop)
{
    cr_assert_eq(sq_test_destroy(t), 0);
    cr_assert_eq(sq_hub_create(&the_hub, NULL), 0);
    cr_assert_eq(sq_app_route(app, "/rooms/{room}", &rooms, NULL), 0);
    sq_server_opts_t o;
    sq_server_opts_init(&o);
    o.on_shutdown = hub_detach;
    o.on_shutdown_data = the_hub;
    cr_assert_eq(sq_test_create(&t, app, &o), 0);
    cr_assert_eq(sq_hub_attach(the_hub, sq_test_loop(t)), 0);

    sq_test_res_t *res;
    cr_assert_eq(sq_test_request(t, "POST", "/rooms/a", NULL, "hello", &res), 0);
    cr_assert_eq(res->status, 201);
    cr_assert_str_eq(res->body, "1");
    sq_test_res_free(res);
    cr_assert_eq(sq_test_request(t, "GET", "/rooms/a?since=0", NULL, NULL, &res), 0);
    cr_assert_eq(res->status, 200);
    json_t *m = json_array_get(sq_test_res_json(res), 0);
    cr_assert_str_eq(json_string_value(json_object_get(m, "text")), "hello");
    sq_test_res_free(res);

    /* a long poll held until the test's own publish */
    uv_timer_t later;
    uv_timer_init(sq_test_loop(t), &later);
    uv_timer_start(&later, publish_later, 20, 0);
    cr_assert_eq(sq_test_request(t, "GET", "/rooms/a?since=1&wait=5000", NULL, NULL, &res), 0);
    cr_assert_eq(res->status, 200);
    m = json_array_get(sq_test_res_json(res), 0);
    cr_assert_str_eq(json_string_value(json_object_get(m, "text")), "from the test");
    cr_assert_eq(json_integer_value(json_object_get(m, "id")), 2);
    sq_test_res_free(res);

    /* a poll left held: destroy's on_shutdown detaches the hub, which answers it */
    sq_test_req_opts_t ro;
    sq_test_req_opts_init(&ro);
    ro.timeout_ms = 30;
    cr_assert_eq(
        sq_test_request_ex(t, "GET", "/rooms/a?since=2&wait=60000", NULL, NULL, 0, &ro, &res),
        UV_ETIMEDOUT);
    cr_assert_eq(sq_test_destroy(t), 0);
    t = NULL;
    sq_hub_destroy(the_hub);
}
