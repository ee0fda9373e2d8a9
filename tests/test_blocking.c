/* Blocking handlers (`.blocking.get` ...) and the server's watchdog (opts.slow_callback_ms),
 * over real sockets: the pool keeps the loop free where sleeping on the loop does not, the
 * request view and the response builder, a client that leaves, a full pool, shutdown with a
 * job in flight, HEAD and 405. Against build/bin/hello where the contract is hello's (the
 * /sleep routes), in-process otherwise. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <jansson.h>

#include "support/harness.h"
#include "support/hello.h"

/* ---- small client helpers ---- */

static void get_ok(int port, const char *target, int status, const char *body)
{
    char raw[1024];
    snprintf(raw, sizeof(raw), "GET %s HTTP/1.1\r\nHost: t\r\n\r\n", target);
    th_res_t r;
    cr_assert_eq(th_request(port, raw, &r), 0, "GET %s", target);
    cr_assert_eq(r.status, status, "GET %s: %d\n%s", target, r.status, r.raw);
    if (body != NULL)
        cr_assert_str_eq(r.body, body, "GET %s", target);
    th_res_free(&r);
}

/* Opens n connections and sends `target` on each; returns when every request is sent. */
static void send_all(th_conn_t *c, int n, int port, const char *target)
{
    char raw[256];
    snprintf(raw, sizeof(raw), "GET %s HTTP/1.1\r\nHost: t\r\n\r\n", target);
    for (int i = 0; i < n; i++) {
        cr_assert_eq(th_conn_open(&c[i], port), 0);
        cr_assert_eq(th_conn_sends(&c[i], raw), 0);
    }
}

/* Sends GET /plaintext on a new connection; returns how long the answer took (ms), and
 * when it came (th_now_ms) in *answered_at when not NULL. */
static uint64_t plaintext_latency_at(int port, uint64_t *answered_at)
{
    th_conn_t c;
    cr_assert_eq(th_conn_open(&c, port), 0);
    uint64_t t0 = th_now_ms();
    cr_assert_eq(th_conn_sends(&c, "GET /plaintext HTTP/1.1\r\nHost: t\r\n\r\n"), 0);
    th_res_t r;
    cr_assert_eq(th_conn_read_res(&c, &r, 5000, false), 0);
    uint64_t now = th_now_ms();
    cr_assert_eq(r.status, 200);
    cr_assert_str_eq(r.body, "Hello, world");
    th_res_free(&r);
    th_conn_close(&c);
    if (answered_at != NULL)
        *answered_at = now;
    return now - t0;
}

static uint64_t plaintext_latency(int port)
{
    return plaintext_latency_at(port, NULL);
}

/* How long each sleep of these tests lasts. What they check is a contrast: an answer not
 * held behind a pool sleep comes long before SLEEP_MS / 2, even on a loaded machine; one
 * held behind a loop sleep comes no earlier than the sleep's end, and eight sleeps run
 * one after another would take 8 * SLEEP_MS. */
#define SLEEP_MS 600
#define SLEEP_MS_S "600"

/* ---- hello: /sleep on the pool, /sleep-blocking on the loop ---- */

Test(blocking, hello_sleep_runs_on_the_pool_and_plaintext_stays_prompt, .timeout = 30)
{
    /* 8 blocking jobs in flight at once */
    th_hello_t h = th_hello_start_logged("--threadpool", "9", NULL);
    th_conn_t c[8];
    uint64_t t0 = th_now_ms();
    send_all(c, 8, h.port, "/sleep?ms=" SLEEP_MS_S);
    /* a head start for the eight (hello shows no sign of a job starting): the checks below
     * hold whether or not they have all begun, they only test less if not */
    th_sleep_ms(100);
    uint64_t lat = plaintext_latency(h.port);
    cr_assert_lt(lat, SLEEP_MS / 2, "/plaintext took %llu ms behind 8 pool sleeps of %d ms",
                 (unsigned long long)lat, SLEEP_MS);
    for (int i = 0; i < 8; i++) {
        th_res_t r;
        cr_assert_eq(th_conn_read_res(&c[i], &r, 10000, false), 0);
        cr_assert_eq(r.status, 200);
        cr_assert_str_eq(r.body, "{\"slept_ms\":" SLEEP_MS_S "}");
        cr_assert_str_eq(th_res_header(&r, "Content-Type"), "application/json");
        th_res_free(&r);
        th_conn_close(&c[i]);
    }
    uint64_t total = th_now_ms() - t0;
    cr_assert_geq(total, SLEEP_MS - 10);
    cr_assert_lt(total, 5 * SLEEP_MS, "8 x /sleep?ms=%d took %llu ms (one after another: %d)",
                 SLEEP_MS, (unsigned long long)total, 8 * SLEEP_MS);
    /* the pool's route is never blamed ("/sleep-blocking" would read "/sleep-") */
    char *err = th_hello_stderr(&h);
    cr_assert_null(strstr(err, "slow callback /sleep "), "the pool's sleeps were blamed:\n%s", err);
    free(err);
    th_hello_stop(&h);
}

Test(blocking, hello_sleep_blocking_holds_the_loop_and_the_watchdog_names_it, .timeout = 30)
{
    th_hello_t h = th_hello_start_logged(NULL); /* --slow-callback-ms defaults to 100 */
    th_conn_t c;
    uint64_t t0 = th_now_ms();
    send_all(&c, 1, h.port, "/sleep-blocking?ms=" SLEEP_MS_S);
    /* a head start for hello to read the request and begin sleeping (it shows no sign of
     * it): /plaintext, asked after, must then wait for the sleep's end */
    th_sleep_ms(150);
    uint64_t answered;
    plaintext_latency_at(h.port, &answered);
    cr_assert_geq(answered - t0, SLEEP_MS - 10,
                  "/plaintext answered %llu ms after a loop sleep of %d ms began",
                  (unsigned long long)(answered - t0), SLEEP_MS);
    th_res_t r;
    cr_assert_eq(th_conn_read_res(&c, &r, 5000, false), 0);
    cr_assert_eq(r.status, 200);
    cr_assert_str_eq(r.body, "{\"slept_ms\":" SLEEP_MS_S "}");
    th_res_free(&r);
    th_conn_close(&c);
    char *err =
        th_hello_wait_stderr(&h, "slow callback /sleep-blocking blocked the loop for", 5000);
    cr_assert_not_null(strstr(err, "slow callback /sleep-blocking blocked the loop for"),
                       "hello's stderr:\n%s", err);
    free(err);
    th_hello_stop(&h);
}

Test(blocking, hello_sleep_validation_answers_422_with_fastapi_details, .timeout = 30)
{
    th_hello_t h = th_hello_start(NULL);
    static const struct {
        const char *target, *body;
    } cases[] = {
        {"/sleep", "{\"detail\":[{\"type\":\"missing\",\"loc\":[\"query\",\"ms\"],"
                   "\"msg\":\"Field required\",\"input\":null}]}"},
        {"/sleep?ms=abc",
         "{\"detail\":[{\"type\":\"int_parsing\",\"loc\":[\"query\",\"ms\"],"
         "\"msg\":\"Input should be a valid integer, unable to parse string as an integer\","
         "\"input\":\"abc\"}]}"},
        {"/sleep?ms=20000",
         "{\"detail\":[{\"type\":\"less_than_equal\",\"loc\":[\"query\",\"ms\"],"
         "\"msg\":\"Input should be less than or equal to 10000\",\"input\":\"20000\","
         "\"ctx\":{\"le\":10000}}]}"},
        {"/sleep?ms=",
         "{\"detail\":[{\"type\":\"int_parsing\",\"loc\":[\"query\",\"ms\"],"
         "\"msg\":\"Input should be a valid integer, unable to parse string as an integer\","
         "\"input\":\"\"}]}"},
        {"/sleep?ms=-1", "{\"detail\":[{\"type\":\"greater_than_equal\",\"loc\":[\"query\",\"ms\"],"
                         "\"msg\":\"Input should be greater than or equal to 0\",\"input\":\"-1\","
                         "\"ctx\":{\"ge\":0}}]}"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char raw[256];
        snprintf(raw, sizeof(raw), "GET %s HTTP/1.1\r\nHost: t\r\n\r\n", cases[i].target);
        th_res_t r;
        cr_assert_eq(th_request(h.port, raw, &r), 0);
        cr_assert_eq(r.status, 422, "%s: %d", cases[i].target, r.status);
        cr_assert_str_eq(th_res_header(&r, "Content-Type"), "application/json");
        cr_assert_str_eq(r.body, cases[i].body, "%s", cases[i].target);
        th_res_free(&r);
    }
    get_ok(h.port, "/sleep?ms=0", 200, "{\"slept_ms\":0}");
    get_ok(h.port, "/sleep-blocking?ms=abc", 422, NULL);
    th_hello_stop(&h);
}

/* ---- in-process: the same two kinds of sleep, and the watchdog's counters ---- */

static int64_t ms_of(const char *s)
{
    return s ? strtoll(s, NULL, 10) : 0;
}

static atomic_int pool_sleeping;          /* pool sleeps begun */
static _Atomic uint64_t loop_sleep_began; /* th_now_ms() when the loop sleep began */

static void pool_sleep(const sq_breq_t *req, sq_bres_t *res, void *data)
{
    int64_t ms = ms_of(sq_breq_query(req, "ms"));
    atomic_fetch_add(&pool_sleeping, 1);
    usleep((useconds_t)ms * 1000);
    sq_bres_send_json_new(res, 200, json_pack("{s:I}", "slept_ms", (json_int_t)ms));
}
static const sq_handler_t pool_sleeper = {.blocking.get = pool_sleep};

static void loop_sleep(sq_req_t *req, sq_res_t *res, void *data)
{
    int64_t ms = ms_of(sq_req_query(req, "ms"));
    atomic_store(&loop_sleep_began, th_now_ms());
    usleep((useconds_t)ms * 1000);
    sq_res_send_json_new(res, 200, json_pack("{s:I}", "slept_ms", (json_int_t)ms));
}
static const sq_handler_t loop_sleeper = {.get = loop_sleep};

static void plaintext_get(sq_req_t *req, sq_res_t *res, void *data)
{
    sq_res_send(res, 200, "text/plain", "Hello, world", 12);
}
static const sq_handler_t plaintext = {.get = plaintext_get};

/* The server's watchdog counters, copied on the loop thread (asserted on the test's). */
typedef struct wd_probe {
    bool found;
    sq_watchdog_stats_t st;
} wd_probe_t;

static void copy_wd_stats(sq_server_t *srv, void *data)
{
    wd_probe_t *p = data;
    sq_watchdog_t *wd = sq_server_watchdog(srv);
    p->found = wd != NULL;
    if (wd != NULL)
        sq_watchdog_stats(wd, &p->st);
}

static sq_watchdog_stats_t wd_stats(th_server_t *ts)
{
    wd_probe_t p = {0};
    th_server_call(ts, copy_wd_stats, &p);
    cr_assert(p.found, "the server has no watchdog");
    return p.st;
}

Test(blocking, pool_sleeps_run_in_parallel_and_only_a_loop_sleep_is_a_slow_span, .timeout = 30)
{
    cr_assert_eq(sq_work_threadpool_set_size(9), 0); /* this test's process only */
    sq_app_t *app;
    cr_assert_eq(sq_app_create(&app), 0);
    cr_assert_eq(sq_app_route(app, "/sleep", &pool_sleeper, NULL), 0);
    cr_assert_eq(sq_app_route(app, "/sleep-blocking", &loop_sleeper, NULL), 0);
    cr_assert_eq(sq_app_route(app, "/plaintext", &plaintext, NULL), 0);
    sq_server_opts_t o;
    sq_server_opts_init(&o);
    /* far below the loop sleep, far above what a loaded machine adds to a quick callback */
    o.slow_callback_ms = SLEEP_MS / 3;
    sq_log_set_level(SQ_LOG_OFF); /* the counters are checked, not the log */
    th_server_t *ts = th_server_start(app, &o);
    int port = th_server_port(ts);

    th_conn_t c[8];
    uint64_t t0 = th_now_ms();
    send_all(c, 8, port, "/sleep?ms=" SLEEP_MS_S);
    cr_assert_eq(th_wait_atomic(&pool_sleeping, 8, 5000), 8, "the eight pool sleeps began");
    uint64_t lat = plaintext_latency(port);
    cr_assert_lt(lat, SLEEP_MS / 2, "/plaintext took %llu ms behind 8 pool sleeps of %d ms",
                 (unsigned long long)lat, SLEEP_MS);
    for (int i = 0; i < 8; i++) {
        th_res_t r;
        cr_assert_eq(th_conn_read_res(&c[i], &r, 10000, false), 0);
        cr_assert_eq(r.status, 200);
        cr_assert_str_eq(r.body, "{\"slept_ms\":" SLEEP_MS_S "}");
        th_res_free(&r);
        th_conn_close(&c[i]);
    }
    uint64_t total = th_now_ms() - t0;
    cr_assert_lt(total, 5 * SLEEP_MS, "8 x /sleep?ms=%d took %llu ms (one after another: %d)",
                 SLEEP_MS, (unsigned long long)total, 8 * SLEEP_MS);
    sq_watchdog_stats_t st = wd_stats(ts);
    cr_assert_eq(st.slow_spans, 0, "a pool sleep was blamed on the loop (%s)",
                 st.slowest_span ? st.slowest_span : "?");

    send_all(c, 1, port, "/sleep-blocking?ms=" SLEEP_MS_S);
    uint64_t end = th_now_ms() + 5000;
    while (atomic_load(&loop_sleep_began) == 0 && th_now_ms() < end)
        th_sleep_ms(2);
    uint64_t began = atomic_load(&loop_sleep_began);
    cr_assert_neq(began, 0, "the loop sleep began");
    uint64_t answered;
    plaintext_latency_at(port, &answered);
    cr_assert_geq(answered - began, SLEEP_MS - 10,
                  "/plaintext answered %llu ms after a loop sleep of %d ms began",
                  (unsigned long long)(answered - began), SLEEP_MS);
    th_res_t r;
    cr_assert_eq(th_conn_read_res(&c[0], &r, 5000, false), 0);
    cr_assert_str_eq(r.body, "{\"slept_ms\":" SLEEP_MS_S "}");
    th_res_free(&r);
    th_conn_close(&c[0]);
    st = wd_stats(ts);
    cr_assert_eq(st.slow_spans, 1);
    cr_assert_not_null(st.slowest_span);
    cr_assert_str_eq(st.slowest_span, "/sleep-blocking");
    cr_assert_geq(st.span_max_us, (SLEEP_MS - 10) * 1000u);
    cr_assert_geq(st.lag_max_us, SLEEP_MS / 2 * 1000u, "the lag probe saw %llu us",
                  (unsigned long long)st.lag_max_us);
    th_server_stop(ts, 1000);
    sq_app_destroy(app);
}

static void get_wd(sq_server_t *srv, void *data)
{
    *(sq_watchdog_t **)data = sq_server_watchdog(srv);
}

Test(blocking, without_slow_callback_ms_there_is_no_watchdog, .timeout = 10)
{
    sq_app_t *app;
    cr_assert_eq(sq_app_create(&app), 0);
    cr_assert_eq(sq_app_route(app, "/sleep", &pool_sleeper, NULL), 0);
    th_server_t *ts = th_server_start(app, NULL);
    get_ok(th_server_port(ts), "/sleep?ms=10", 200, "{\"slept_ms\":10}");
    sq_watchdog_t *wd = (sq_watchdog_t *)&wd;
    th_server_call(ts, get_wd, &wd);
    cr_assert_null(wd);
    th_server_stop(ts, 1000);
    sq_app_destroy(app);
}

/* ---- the response builder ---- */

static atomic_int header_rc[8];

static void built(const sq_breq_t *req, sq_bres_t *res, void *data)
{
    atomic_store(&header_rc[0], sq_bres_header(res, "X-First", "1"));
    atomic_store(&header_rc[1], sq_bres_header(res, "X-Bad", "a\r\nInjected: yes"));
    atomic_store(&header_rc[2], sq_bres_header(res, "X-Lf", "a\nb"));
    atomic_store(&header_rc[3], sq_bres_header(res, "Bad\rName", "v"));
    atomic_store(&header_rc[4], sq_bres_header(res, "Bad Name", "v"));
    atomic_store(&header_rc[5], sq_bres_header(res, "", "v"));
    atomic_store(&header_rc[6], sq_bres_header(res, "X-Second", "2"));
    atomic_store(&header_rc[7], sq_bres_header(res, "X-First", "3"));
    sq_bres_send(res, 500, "text/plain", "replaced", 8); /* a later call wins */
    sq_bres_send(res, 201, "text/x-test; charset=utf-8", "bo\0dy", 5);
}
static const sq_handler_t builder = {.blocking.get = built};

static void built_error(const sq_breq_t *req, sq_bres_t *res, void *data)
{
    sq_bres_header(res, "Retry-After", "7");
    sq_bres_send_error(res, 418, "short and stout");
}
static const sq_handler_t builder_error = {.blocking.get = built_error};

static void built_nothing(const sq_breq_t *req, sq_bres_t *res, void *data)
{
    sq_bres_header(res, "X-Lost", "1"); /* headers alone are not an answer */
}
static const sq_handler_t builder_nothing = {.blocking.get = built_nothing};

static void built_no_body(const sq_breq_t *req, sq_bres_t *res, void *data)
{
    sq_bres_send(res, 204, NULL, NULL, 0);
}
static const sq_handler_t builder_no_body = {.blocking.get = built_no_body};

Test(blocking, builder_sends_status_type_headers_in_order_and_body, .timeout = 10)
{
    sq_app_t *app;
    cr_assert_eq(sq_app_create(&app), 0);
    cr_assert_eq(sq_app_route(app, "/built", &builder, NULL), 0);
    th_server_t *ts = th_server_start(app, NULL);
    th_res_t r;
    cr_assert_eq(th_request(th_server_port(ts), "GET /built HTTP/1.1\r\nHost: t\r\n\r\n", &r), 0);
    cr_assert_eq(r.status, 201);
    cr_assert_str_eq(th_res_header(&r, "Content-Type"), "text/x-test; charset=utf-8");
    cr_assert_str_eq(th_res_header(&r, "Content-Length"), "5");
    cr_assert_eq(r.body_len, 5);
    cr_assert_eq(memcmp(r.body, "bo\0dy", 5), 0);
    const char *a = strstr(r.head, "\r\nX-First: 1\r\n");
    const char *b = strstr(r.head, "\r\nX-Second: 2\r\n");
    const char *c = strstr(r.head, "\r\nX-First: 3\r\n");
    cr_assert(a && b && c && a < b && b < c, "headers out of order:\n%s", r.head);
    cr_assert_null(strstr(r.raw, "Injected"));
    cr_assert_null(strstr(r.head, "X-Lf"));
    cr_assert_null(strstr(r.head, "Name"));
    th_res_free(&r);
    th_server_stop(ts, 1000);
    static const int want[8] = {0, UV_EINVAL, UV_EINVAL, UV_EINVAL, UV_EINVAL, UV_EINVAL, 0, 0};
    for (int i = 0; i < 8; i++)
        cr_assert_eq(atomic_load(&header_rc[i]), want[i], "header %d: %d", i,
                     atomic_load(&header_rc[i]));
    sq_app_destroy(app);
}

Test(blocking, builder_error_helper_and_bodiless_status, .timeout = 10)
{
    sq_app_t *app;
    cr_assert_eq(sq_app_create(&app), 0);
    cr_assert_eq(sq_app_route(app, "/error", &builder_error, NULL), 0);
    cr_assert_eq(sq_app_route(app, "/empty", &builder_no_body, NULL), 0);
    th_server_t *ts = th_server_start(app, NULL);
    th_res_t r;
    cr_assert_eq(th_request(th_server_port(ts), "GET /error HTTP/1.1\r\nHost: t\r\n\r\n", &r), 0);
    cr_assert_eq(r.status, 418);
    cr_assert_str_eq(th_res_header(&r, "Retry-After"), "7");
    cr_assert_str_eq(th_res_header(&r, "Content-Type"), "application/json");
    cr_assert_str_eq(r.body, "{\"detail\":\"short and stout\"}");
    th_res_free(&r);
    cr_assert_eq(th_request(th_server_port(ts), "GET /empty HTTP/1.1\r\nHost: t\r\n\r\n", &r), 0);
    cr_assert_eq(r.status, 204);
    cr_assert_eq(r.body_len, 0);
    th_res_free(&r);
    th_server_stop(ts, 1000);
    sq_app_destroy(app);
}

Test(blocking, a_handler_that_sends_nothing_gets_500, .timeout = 10)
{
    sq_app_t *app;
    cr_assert_eq(sq_app_create(&app), 0);
    cr_assert_eq(sq_app_route(app, "/nothing", &builder_nothing, NULL), 0);
    th_server_t *ts = th_server_start(app, NULL);
    th_conn_t c;
    cr_assert_eq(th_conn_open(&c, th_server_port(ts)), 0);
    for (int i = 0; i < 2; i++) { /* the connection goes on after a 500 */
        cr_assert_eq(th_conn_sends(&c, "GET /nothing HTTP/1.1\r\nHost: t\r\n\r\n"), 0);
        th_res_t r;
        cr_assert_eq(th_conn_read_res(&c, &r, 2000, false), 0);
        cr_assert_eq(r.status, 500);
        cr_assert_str_eq(r.body, "{\"detail\":\"blocking handler sent no response\"}");
        cr_assert_null(th_res_header(&r, "X-Lost"));
        th_res_free(&r);
    }
    th_conn_close(&c);
    sq_server_stats_t st;
    th_server_stats(ts, &st);
    cr_assert_eq(st.responses_5xx, 2);
    th_server_stop(ts, 1000);
    sq_app_destroy(app);
}

/* ---- the request view, read on a pool thread ---- */

static uv_thread_t loop_thread;
static atomic_int on_loop_thread; /* 1 if a blocking callback ran on the loop's thread */
static atomic_int view_calls;

static void note_loop_thread(sq_server_t *srv, void *data)
{
    loop_thread = uv_thread_self();
}

static void view(const sq_breq_t *req, sq_bres_t *res, void *data)
{
    uv_thread_t self = uv_thread_self();
    if (uv_thread_equal(&self, &loop_thread))
        atomic_store(&on_loop_thread, 1);
    atomic_fetch_add(&view_calls, 1);
    int64_t id = -1, name_int = -1;
    int id_rc = sq_breq_param_int(req, "id", &id);
    int name_rc = sq_breq_param_int(req, "name", &name_int);
    size_t blen = 99;
    const char *body = sq_breq_body(req, &blen);
    json_error_t jerr;
    json_t *j = sq_breq_json(req, &jerr);
    json_t *out = json_pack(
        "{s:s,s:i,s:s,s:s,s:s?,s:s?,s:s?,s:s?,s:s?,s:I,s:i,s:i,s:s?,s:s?,s:s?,s:s%,s:I,s:o?,"
        "s:i,s:i}",
        "method", sq_breq_method(req), "method_id", (int)sq_breq_method_id(req), "path",
        sq_breq_path(req), "qs", sq_breq_query_string(req), "q", sq_breq_query(req, "q"), "plus",
        sq_breq_query(req, "plus"), "empty", sq_breq_query(req, "empty"), "absent",
        sq_breq_query(req, "absent"), "name", sq_breq_param(req, "name"), "id", (json_int_t)id,
        "id_rc", id_rc, "name_int_rc", name_rc, "token", sq_breq_header(req, "x-token"), "ctype",
        sq_breq_header(req, "Content-Type"), "missing", sq_breq_header(req, "X-None"), "body", body,
        blen, "body_len", (json_int_t)blen, "json", j, "json_line", j ? 0 : jerr.line, "cancelled",
        sq_breq_is_cancelled(req));
    sq_bres_send_json_new(res, 200, out);
}
static const sq_handler_t viewer = {.blocking.post = view, .blocking.get = view};

static json_t *ask_view(int port, const char *raw)
{
    th_res_t r;
    cr_assert_eq(th_request(port, raw, &r), 0);
    cr_assert_eq(r.status, 200, "%s", r.raw);
    json_error_t err;
    json_t *j = json_loads(r.body, 0, &err);
    cr_assert_not_null(j, "%s: %s", err.text, r.body);
    th_res_free(&r);
    return j;
}

static const char *jstr(json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

static json_int_t jint(json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    cr_assert(json_is_integer(v), "%s is not an integer", k);
    return json_integer_value(v);
}

Test(blocking, the_request_view_reads_everything_from_a_pool_thread, .timeout = 10)
{
    sq_app_t *app;
    cr_assert_eq(sq_app_create(&app), 0);
    cr_assert_eq(sq_app_route(app, "/v/{name}/{id:int}", &viewer, NULL), 0);
    th_server_t *ts = th_server_start(app, NULL);
    th_server_call(ts, note_loop_thread, NULL);
    int port = th_server_port(ts);

    json_t *j = ask_view(port, "POST /v/caf%C3%A9%20x/-42?q=a%20b&plus=1+2&empty= HTTP/1.1\r\n"
                               "Host: t\r\nX-Token: s3cret\r\nContent-Type: application/json\r\n"
                               "Content-Length: 15\r\n\r\n{\"k\": [1, 2.5]}");
    cr_assert_str_eq(jstr(j, "method"), "POST");
    cr_assert_eq(jint(j, "method_id"), SQ_METHOD_POST);
    cr_assert_str_eq(jstr(j, "path"), "/v/caf\xc3\xa9 x/-42");
    cr_assert_str_eq(jstr(j, "qs"), "q=a%20b&plus=1+2&empty=");
    cr_assert_str_eq(jstr(j, "q"), "a b");
    cr_assert_str_eq(jstr(j, "plus"), "1 2");
    cr_assert_str_eq(jstr(j, "empty"), "");
    cr_assert(json_is_null(json_object_get(j, "absent")));
    cr_assert_str_eq(jstr(j, "name"), "caf\xc3\xa9 x");
    cr_assert_eq(jint(j, "id"), -42);
    cr_assert_eq(jint(j, "id_rc"), 0);
    cr_assert_eq(jint(j, "name_int_rc"), UV_ENOENT);
    cr_assert_str_eq(jstr(j, "token"), "s3cret");
    cr_assert_str_eq(jstr(j, "ctype"), "application/json");
    cr_assert(json_is_null(json_object_get(j, "missing")));
    cr_assert_str_eq(jstr(j, "body"), "{\"k\": [1, 2.5]}");
    cr_assert_eq(jint(j, "body_len"), 15);
    json_t *want = json_pack("{s:[i,f]}", "k", 1, 2.5);
    cr_assert(json_equal(json_object_get(j, "json"), want));
    json_decref(want);
    cr_assert_eq(jint(j, "cancelled"), 0);
    json_decref(j);

    /* no body: "" and length 0; JSON of it: NULL with the error filled */
    j = ask_view(port, "GET /v/plain/7 HTTP/1.1\r\nHost: t\r\n\r\n");
    cr_assert_str_eq(jstr(j, "method"), "GET");
    cr_assert_eq(jint(j, "method_id"), SQ_METHOD_GET);
    cr_assert_str_eq(jstr(j, "qs"), "");
    cr_assert(json_is_null(json_object_get(j, "q")));
    cr_assert_str_eq(jstr(j, "body"), "");
    cr_assert_eq(jint(j, "body_len"), 0);
    cr_assert(json_is_null(json_object_get(j, "json")));
    cr_assert_eq(jint(j, "json_line"), 1);
    cr_assert(json_is_null(json_object_get(j, "token")));
    json_decref(j);

    /* a body that is not JSON */
    j = ask_view(port, "POST /v/x/1 HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nnope");
    cr_assert_str_eq(jstr(j, "body"), "nope");
    cr_assert(json_is_null(json_object_get(j, "json")));
    json_decref(j);

    th_server_stop(ts, 1000);
    cr_assert_eq(atomic_load(&view_calls), 3);
    cr_assert_eq(atomic_load(&on_loop_thread), 0, "a blocking callback ran on the loop");
    sq_app_destroy(app);
}

/* A non-integer {id:int} is refused before any job starts. */
Test(blocking, a_bad_int_param_gets_422_without_a_job, .timeout = 10)
{
    sq_app_t *app;
    cr_assert_eq(sq_app_create(&app), 0);
    cr_assert_eq(sq_app_route(app, "/v/{name}/{id:int}", &viewer, NULL), 0);
    th_server_t *ts = th_server_start(app, NULL);
    get_ok(th_server_port(ts), "/v/a/x1", 422, NULL);
    th_server_stop(ts, 1000);
    cr_assert_eq(atomic_load(&view_calls), 0);
    sq_app_destroy(app);
}

/* ---- a client that leaves while its job runs ---- */

static atomic_int job_started, job_saw_cancel, job_returned, release_jobs;
static atomic_int aborted_calls, aborted_saw_aborted, aborted_finish_rc;

/* Waits until cancelled (polling, as a long job should), then until released. */
static void waits_for_cancel(const sq_breq_t *req, sq_bres_t *res, void *data)
{
    atomic_fetch_add(&job_started, 1);
    uint64_t end = th_now_ms() + 5000;
    while (!sq_breq_is_cancelled(req) && th_now_ms() < end)
        th_sleep_ms(2);
    if (sq_breq_is_cancelled(req))
        atomic_fetch_add(&job_saw_cancel, 1);
    while (data != NULL && !atomic_load(&release_jobs) && th_now_ms() < end)
        th_sleep_ms(2);
    sq_bres_send(res, 200, "text/plain", "too late", 8);
    atomic_fetch_add(&job_returned, 1);
}

static void on_aborted(sq_req_t *req, sq_res_t *res, void *data)
{
    atomic_fetch_add(&aborted_calls, 1);
    if (sq_req_is_aborted(req))
        atomic_fetch_add(&aborted_saw_aborted, 1);
}
static const sq_handler_t cancellable = {.blocking.get = waits_for_cancel, .aborted = on_aborted};

/* What router.h asks of a non-blocking handler: finish res from .aborted. */
static void on_aborted_finish(sq_req_t *req, sq_res_t *res, void *data)
{
    atomic_fetch_add(&aborted_calls, 1);
    atomic_store(&aborted_finish_rc, sq_res_send_error(res, 500, "gone"));
}
static const sq_handler_t cancellable_finishing = {.blocking.get = waits_for_cancel,
                                                   .aborted = on_aborted_finish};

static atomic_int second_started;

static void second_job(const sq_breq_t *req, sq_bres_t *res, void *data)
{
    atomic_fetch_add(&second_started, 1);
    /* a window in which the first job's done callback runs while this job runs (it shows
     * no sign of running); should a loaded machine miss it, the test checks less, never
     * wrongly */
    th_sleep_ms(200);
    sq_bres_send(res, 200, "text/plain", "second", 6);
}
static const sq_handler_t second = {.blocking.get = second_job};

Test(blocking, a_client_that_leaves_cancels_the_job_and_aborted_runs_once, .timeout = 15)
{
    sq_app_t *app;
    cr_assert_eq(sq_app_create(&app), 0);
    cr_assert_eq(sq_app_route(app, "/cancel", &cancellable, NULL), 0);
    cr_assert_eq(sq_app_route(app, "/plaintext", &plaintext, NULL), 0);
    th_server_t *ts = th_server_start(app, NULL);
    int port = th_server_port(ts);
    th_conn_t c;
    send_all(&c, 1, port, "/cancel");
    cr_assert_eq(th_wait_atomic(&job_started, 1, 3000), 1);
    th_conn_abort(&c); /* gone: a FIN alone is a half-close, and the job would be answered */
    cr_assert_eq(th_wait_atomic(&job_returned, 1, 3000), 1, "the job never saw the cancel");
    cr_assert_eq(atomic_load(&job_saw_cancel), 1);
    cr_assert_lt(plaintext_latency(port), 1000); /* the server goes on */
    /* counted at the server's close, after the job's done callback has surely run: its
     * 503 for a client that left was a no-op, and reached nobody */
    sq_server_stats_t st;
    th_server_stop_stats(ts, 1000, &st);
    cr_assert_eq(st.aborted, 1);
    cr_assert_eq(st.responses_5xx, 0, "the cancelled job's 503 was counted as sent");
    cr_assert_eq(atomic_load(&aborted_calls), 1);
    cr_assert_eq(atomic_load(&aborted_saw_aborted), 1);
    cr_assert_eq(atomic_load(&job_started), 1);
    sq_app_destroy(app);
}

/* The job still runs after .aborted finished res: the exchange must stay the job's until
 * its done callback, not be handed to the next request (which would get the old job's
 * answer, or read freed memory). */
Test(blocking, aborted_that_finishes_res_does_not_free_the_exchange_under_the_job, .timeout = 15)
{
    sq_app_t *app;
    cr_assert_eq(sq_app_create(&app), 0);
    cr_assert_eq(sq_app_route(app, "/cancel", &cancellable_finishing, (void *)1), 0);
    cr_assert_eq(sq_app_route(app, "/second", &second, NULL), 0);
    th_server_t *ts = th_server_start(app, NULL);
    int port = th_server_port(ts);
    th_conn_t c1, c2;
    send_all(&c1, 1, port, "/cancel");
    cr_assert_eq(th_wait_atomic(&job_started, 1, 3000), 1);
    th_conn_abort(&c1); /* gone (a reset; a FIN alone is a half-close) */
    cr_assert_eq(th_wait_atomic(&job_saw_cancel, 1, 3000), 1);
    cr_assert_eq(th_wait_atomic(&aborted_calls, 1, 3000), 1); /* told on the next tick */
    cr_assert_eq(atomic_load(&aborted_finish_rc), UV_ECANCELED);
    send_all(&c2, 1, port, "/second");
    cr_assert_eq(th_wait_atomic(&second_started, 1, 3000), 1);
    atomic_store(&release_jobs, 1); /* the first job's done runs while the second's job runs */
    cr_assert_eq(th_wait_atomic(&job_returned, 1, 3000), 1);
    th_res_t r;
    cr_assert_eq(th_conn_read_res(&c2, &r, 3000, false), 0);
    cr_assert_eq(r.status, 200, "the second request got: %s", r.raw);
    cr_assert_str_eq(r.body, "second");
    th_res_free(&r);
    th_conn_close(&c2);
    th_server_stop(ts, 1000);
    cr_assert_eq(atomic_load(&aborted_calls), 1);
    sq_app_destroy(app);
}

/* ---- a server on a loop of the test's own, for what the harness cannot set up: a work
 * pool on the server's loop, and a non-blocking stop ---- */

typedef struct own {
    uv_loop_t loop;
    uv_thread_t thread;
    uv_async_t stop;
    sq_server_t *srv;
    sq_work_pool_t *pool;       /* opts.blocking_pool, or NULL */
    sq_work_pool_stats_t final; /* the pool's counters at the server's close */
    uint64_t grace_ms;
    int port;
    atomic_int server_closed, pool_closed;
    atomic_int destroying;      /* sq_server_destroy has been called (own_stop) */
    atomic_int destroy_rc;      /* ...and returned this */
    atomic_int pool_destroy_rc; /* sq_work_pool_destroy's, in the server's close callback */
    _Atomic uint64_t closed_at; /* th_now_ms() in the server's close callback */
    int loop_rc;
} own_t;

extern int __lsan_do_recoverable_leak_check(void) __attribute__((weak));

static void own_pool_closed(sq_work_pool_t *pool, void *data)
{
    own_t *o = data;
    atomic_fetch_add(&o->pool_closed, 1);
}

static void own_server_closed(sq_server_t *srv, void *data)
{
    own_t *o = data;
    atomic_store(&o->closed_at, th_now_ms());
    atomic_fetch_add(&o->server_closed, 1);
    if (o->pool != NULL) { /* it must outlive the server: destroyed after it */
        sq_work_pool_stats(o->pool, &o->final);
        atomic_store(&o->pool_destroy_rc, sq_work_pool_destroy(o->pool, own_pool_closed, o));
    }
}

/* On the loop thread: what goes wrong is recorded, and checked by own_join. */
static void own_on_stop(uv_async_t *a)
{
    own_t *o = a->data;
    atomic_store(&o->destroy_rc, sq_server_destroy(o->srv, o->grace_ms, own_server_closed, o));
    atomic_store(&o->destroying, 1);
    uv_close((uv_handle_t *)a, NULL);
}

static void own_main(void *arg)
{
    own_t *o = arg;
    uv_run(&o->loop, UV_RUN_DEFAULT);
    o->loop_rc = uv_loop_close(&o->loop);
    if (o->loop_rc != 0)
        uv_print_all_handles(&o->loop, stderr);
}

/* pool_opts NULL: the server makes its own pool. */
static own_t *own_start(sq_app_t *app, const sq_work_pool_opts_t *pool_opts)
{
    own_t *o = calloc(1, sizeof(*o));
    cr_assert_not_null(o);
    cr_assert_eq(uv_loop_init(&o->loop), 0);
    cr_assert_eq(uv_async_init(&o->loop, &o->stop, own_on_stop), 0);
    o->stop.data = o;
    sq_server_opts_t so;
    sq_server_opts_init(&so);
    if (pool_opts != NULL) {
        cr_assert_eq(sq_work_pool_create(&o->pool, &o->loop, pool_opts), 0);
        so.blocking_pool = o->pool;
    }
    cr_assert_eq(sq_server_create(&o->srv, &o->loop, app, &so), 0);
    cr_assert_eq(sq_server_listen(o->srv, "127.0.0.1", 0), 0);
    o->port = sq_server_port(o->srv);
    cr_assert_eq(uv_thread_create(&o->thread, own_main, o), 0);
    return o;
}

/* Asks the loop thread to destroy the server; returns at once. */
static void own_stop(own_t *o, uint64_t grace_ms)
{
    o->grace_ms = grace_ms;
    cr_assert_eq(uv_async_send(&o->stop), 0);
}

/* Joins the loop thread and checks the shutdown was clean; *final (may be NULL) gets the
 * pool's counters at the server's close. Frees o; returns when the close callback ran. */
static uint64_t own_join(own_t *o, sq_work_pool_stats_t *final)
{
    cr_assert_eq(th_wait_atomic(&o->destroying, 1, 5000), 1, "own_stop was not called");
    int rc = atomic_load(&o->destroy_rc);
    cr_assert_eq(rc, 0, "sq_server_destroy: %s", sq_strerror(rc));
    cr_assert_eq(th_wait_atomic(&o->server_closed, 1, (int)o->grace_ms + 5000), 1,
                 "the server did not close within grace + 5 s");
    uv_thread_join(&o->thread);
    rc = atomic_load(&o->pool_destroy_rc);
    cr_assert_eq(rc, 0, "sq_work_pool_destroy: %s", sq_strerror(rc));
    uint64_t closed_at = atomic_load(&o->closed_at);
    if (final != NULL)
        *final = o->final;
    cr_assert_eq(atomic_load(&o->server_closed), 1);
    cr_assert_eq(atomic_load(&o->pool_closed), o->pool != NULL ? 1 : 0);
    cr_assert_eq(o->loop_rc, 0, "uv_loop_close: %s", uv_err_name(o->loop_rc));
    free(o);
    if (__lsan_do_recoverable_leak_check != NULL)
        cr_assert_eq(__lsan_do_recoverable_leak_check(), 0, "leaks at server stop");
    return closed_at;
}

/* ---- a full pool ---- */

static atomic_int gate_started, gate_open;

static void gated(const sq_breq_t *req, sq_bres_t *res, void *data)
{
    atomic_fetch_add(&gate_started, 1);
    uint64_t end = th_now_ms() + 5000;
    while (!atomic_load(&gate_open) && th_now_ms() < end)
        th_sleep_ms(2);
    sq_bres_send(res, 200, "text/plain", "ok", 2);
}
static const sq_handler_t gate = {.blocking.get = gated};

/* GET /pool-stats, on the loop: the server's borrowed pool's counters. */
static void pool_stats_get(sq_req_t *req, sq_res_t *res, void *data)
{
    own_t *o = data;
    sq_work_pool_stats_t st;
    sq_work_pool_stats(o->pool, &st);
    sq_res_send_json_new(
        res, 200,
        json_pack("{s:i,s:I}", "in_flight", (int)st.in_flight, "queued", (json_int_t)st.queued));
}
static const sq_handler_t pool_stats = {.get = pool_stats_get};

Test(blocking, a_full_pool_answers_503_and_the_accepted_jobs_answer, .timeout = 15)
{
    sq_app_t *app;
    cr_assert_eq(sq_app_create(&app), 0);
    cr_assert_eq(sq_app_route(app, "/gate", &gate, NULL), 0);
    sq_work_pool_opts_t po;
    sq_work_pool_opts_init(&po);
    po.max_in_flight = 1;
    po.max_queued = 1;
    own_t *o = own_start(app, &po);
    cr_assert_eq(sq_app_route(app, "/pool-stats", &pool_stats, o), 0);

    th_conn_t c[3];
    send_all(&c[0], 1, o->port, "/gate");
    cr_assert_eq(th_wait_atomic(&gate_started, 1, 3000), 1);
    send_all(&c[1], 1, o->port, "/gate");
    uint64_t end = th_now_ms() + 3000;
    json_int_t queued = 0;
    while (queued != 1 && th_now_ms() < end) { /* the second waits in the pool's FIFO */
        th_res_t r;
        cr_assert_eq(th_request(o->port, "GET /pool-stats HTTP/1.1\r\nHost: t\r\n\r\n", &r), 0);
        json_t *j = json_loads(r.body, 0, NULL);
        queued = json_integer_value(json_object_get(j, "queued"));
        json_decref(j);
        th_res_free(&r);
    }
    cr_assert_eq(queued, 1);
    send_all(&c[2], 1, o->port, "/gate");
    th_res_t r;
    cr_assert_eq(th_conn_read_res(&c[2], &r, 1000, false), 0, "no prompt 503");
    cr_assert_eq(r.status, 503);
    cr_assert_str_eq(r.body, "{\"detail\":\"Service Unavailable: too many blocking jobs\"}");
    th_res_free(&r);
    th_conn_close(&c[2]);
    atomic_store(&gate_open, 1);
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(th_conn_read_res(&c[i], &r, 3000, false), 0);
        cr_assert_eq(r.status, 200);
        cr_assert_str_eq(r.body, "ok");
        th_res_free(&r);
        th_conn_close(&c[i]);
    }
    own_stop(o, 1000);
    sq_work_pool_stats_t st;
    own_join(o, &st);
    cr_assert_eq(atomic_load(&gate_started), 2);
    cr_assert_eq(st.submitted, 2);
    cr_assert_eq(st.completed, 2);
    cr_assert_eq(st.rejected, 1);
    cr_assert_eq(st.cancelled, 0);
    cr_assert_eq(st.peak_in_flight, 1);
    sq_app_destroy(app);
}

/* ---- shutdown with a job in flight ---- */

static atomic_int slow_started, slow_saw_cancel;
static _Atomic uint64_t slow_started_at, slow_returned_at;

/* Sleeps `data` ms in small steps, stopping early when cancelled. */
static void slow_polling(const sq_breq_t *req, sq_bres_t *res, void *data)
{
    atomic_store(&slow_started_at, th_now_ms());
    atomic_fetch_add(&slow_started, 1);
    uint64_t end = th_now_ms() + (uint64_t)(uintptr_t)data;
    while (!sq_breq_is_cancelled(req) && th_now_ms() < end)
        th_sleep_ms(2);
    atomic_store(&slow_saw_cancel, sq_breq_is_cancelled(req));
    sq_bres_send(res, 200, "text/plain", "finished", 8);
    atomic_store(&slow_returned_at, th_now_ms());
}
static const sq_handler_t slow_polling_h = {.blocking.get = slow_polling};

/* Sleeps `data` ms in one go: it cannot notice a cancel. */
static void slow_deaf(const sq_breq_t *req, sq_bres_t *res, void *data)
{
    atomic_fetch_add(&slow_started, 1);
    th_sleep_ms((unsigned)(uintptr_t)data);
    atomic_store(&slow_saw_cancel, sq_breq_is_cancelled(req));
    sq_bres_send(res, 200, "text/plain", "finished", 8);
    atomic_store(&slow_returned_at, th_now_ms());
}
static const sq_handler_t slow_deaf_h = {.blocking.get = slow_deaf};

Test(blocking, destroy_lets_a_job_finish_within_grace_and_sends_its_answer, .timeout = 15)
{
    sq_app_t *app;
    cr_assert_eq(sq_app_create(&app), 0);
    cr_assert_eq(sq_app_route(app, "/slow", &slow_polling_h, (void *)(uintptr_t)300), 0);
    own_t *o = own_start(app, NULL); /* the server's own pool, destroyed with it */
    th_conn_t c;
    send_all(&c, 1, o->port, "/slow");
    cr_assert_eq(th_wait_atomic(&slow_started, 1, 3000), 1);
    uint64_t t0 = th_now_ms();
    own_stop(o, 3000);
    th_res_t r;
    cr_assert_eq(th_conn_read_res(&c, &r, 3000, false), 0);
    uint64_t answered = th_now_ms();
    cr_assert_eq(r.status, 200);
    cr_assert_str_eq(r.body, "finished");
    cr_assert_str_eq(th_res_header(&r, "Connection"), "close");
    th_res_free(&r);
    cr_assert_eq(th_conn_wait_closed(&c, 3000), 0);
    th_conn_close(&c);
    uint64_t closed_at = 0;
    for (uint64_t end = th_now_ms() + 3000; th_now_ms() < end; th_sleep_ms(2))
        if ((closed_at = atomic_load(&o->closed_at)) != 0)
            break;
    cr_assert_neq(closed_at, 0, "the close callback did not run");
    /* The client's clock says when it woke up, not when the bytes left; the job's return
     * is what must come first. The answer arrived whole, so it was written before the
     * connection closed, and the server closes after its last connection. */
    cr_assert_leq(atomic_load(&slow_returned_at), closed_at);
    uint64_t started = atomic_load(&slow_started_at);
    cr_assert_geq(answered - started, 290, "answered %llu ms after the 300 ms job began",
                  (unsigned long long)(answered - started));
    cr_assert_lt(closed_at - t0, 2000, "shutdown waited for the whole grace period");
    own_join(o, NULL);
    cr_assert_eq(atomic_load(&slow_saw_cancel), 0);
    sq_app_destroy(app);
}

Test(blocking, destroy_past_grace_cancels_the_job_and_still_closes_cleanly, .timeout = 15)
{
    sq_app_t *app;
    cr_assert_eq(sq_app_create(&app), 0);
    cr_assert_eq(sq_app_route(app, "/slow", &slow_polling_h, (void *)(uintptr_t)5000), 0);
    own_t *o = own_start(app, NULL);
    th_conn_t c;
    send_all(&c, 1, o->port, "/slow");
    cr_assert_eq(th_wait_atomic(&slow_started, 1, 3000), 1);
    uint64_t t0 = th_now_ms();
    own_stop(o, 100);
    cr_assert_eq(th_conn_wait_closed(&c, 3000), 0, "bytes or no close: %.*s", (int)c.len,
                 c.buf ? c.buf : "");
    th_conn_close(&c);
    own_join(o, NULL);
    uint64_t took = th_now_ms() - t0;
    cr_assert_eq(atomic_load(&slow_saw_cancel), 1);
    cr_assert_lt(took, 2000, "shutdown took %llu ms", (unsigned long long)took);
    sq_app_destroy(app);
}

/* A request still being read when the destroy comes is answered: its job runs, even when
 * it is the server's first (the pool is made on first need). */
Test(blocking, a_request_completed_during_grace_still_runs_its_job, .timeout = 15)
{
    sq_app_t *app;
    cr_assert_eq(sq_app_create(&app), 0);
    cr_assert_eq(sq_app_route(app, "/slow", &slow_polling_h, (void *)(uintptr_t)50), 0);
    cr_assert_eq(sq_app_route(app, "/plaintext", &plaintext, NULL), 0);
    own_t *o = own_start(app, NULL);
    th_conn_t c;
    cr_assert_eq(th_conn_open(&c, o->port), 0);
    /* a request on the loop, and the head's first lines behind it in the same write: the
     * answer to the first says the server has read them too */
    cr_assert_eq(th_conn_sends(&c, "GET /plaintext HTTP/1.1\r\nHost: t\r\n\r\n"
                                   "GET /slow HTTP/1.1\r\nHost: t\r\n"),
                 0);
    th_res_t r;
    cr_assert_eq(th_conn_read_res(&c, &r, 3000, false), 0);
    cr_assert_str_eq(r.body, "Hello, world");
    th_res_free(&r);
    own_stop(o, 3000);
    cr_assert_eq(th_wait_atomic(&o->destroying, 1, 5000), 1, "the destroy began");
    cr_assert_eq(th_conn_sends(&c, "\r\n"), 0);
    cr_assert_eq(th_conn_read_res(&c, &r, 3000, false), 0);
    cr_assert_eq(r.status, 200, "%s", r.raw);
    cr_assert_str_eq(r.body, "finished");
    cr_assert_str_eq(th_res_header(&r, "Connection"), "close");
    th_res_free(&r);
    cr_assert_eq(th_conn_wait_closed(&c, 3000), 0);
    th_conn_close(&c);
    own_join(o, NULL);
    cr_assert_eq(atomic_load(&slow_started), 1);
    sq_app_destroy(app);
}

/* A job that cannot notice the cancel holds a pool thread until it returns: the server
 * waits for it (its done callback still touches the exchange) and then closes cleanly. */
Test(blocking, destroy_past_grace_waits_for_a_job_deaf_to_cancel, .timeout = 15)
{
    sq_app_t *app;
    cr_assert_eq(sq_app_create(&app), 0);
    cr_assert_eq(sq_app_route(app, "/deaf", &slow_deaf_h, (void *)(uintptr_t)600), 0);
    own_t *o = own_start(app, NULL);
    th_conn_t c;
    send_all(&c, 1, o->port, "/deaf");
    cr_assert_eq(th_wait_atomic(&slow_started, 1, 3000), 1);
    own_stop(o, 100);
    cr_assert_eq(th_conn_wait_closed(&c, 3000), 0);
    uint64_t eof_at = th_now_ms();
    th_conn_close(&c);
    uint64_t closed_at = own_join(o, NULL);
    uint64_t returned = atomic_load(&slow_returned_at);
    cr_assert_neq(returned, 0);
    cr_assert_lt(eof_at, returned, "the client waited for the job past grace");
    cr_assert_geq(closed_at, returned);
    cr_assert_eq(atomic_load(&slow_saw_cancel), 1);
    sq_app_destroy(app);
}

/* Also with a borrowed pool, destroyed by its owner after the server. */
Test(blocking, destroy_past_grace_with_a_borrowed_pool, .timeout = 15)
{
    sq_app_t *app;
    cr_assert_eq(sq_app_create(&app), 0);
    cr_assert_eq(sq_app_route(app, "/slow", &slow_polling_h, (void *)(uintptr_t)5000), 0);
    sq_work_pool_opts_t po;
    sq_work_pool_opts_init(&po);
    own_t *o = own_start(app, &po);
    th_conn_t c[2];
    send_all(c, 2, o->port, "/slow");
    cr_assert_eq(th_wait_atomic(&slow_started, 2, 3000), 2);
    own_stop(o, 50);
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(th_conn_wait_closed(&c[i], 3000), 0);
        th_conn_close(&c[i]);
    }
    sq_work_pool_stats_t st;
    own_join(o, &st);
    cr_assert_eq(st.cancelled, 2);
    cr_assert_eq(st.completed, 0);
    cr_assert_eq(st.in_flight, 0);
    sq_app_destroy(app);
}

/* ---- methods: HEAD, 405, both kinds set, pipelining ---- */

static void hello_text(const sq_breq_t *req, sq_bres_t *res, void *data)
{
    sq_bres_header(res, "X-Method", sq_breq_method(req));
    sq_bres_send(res, 200, "text/plain", "hello", 5);
}
static const sq_handler_t get_only = {.blocking.get = hello_text};
static const sq_handler_t post_only = {.blocking.post = hello_text};

Test(blocking, head_on_a_blocking_get_route_answers_without_a_body, .timeout = 10)
{
    sq_app_t *app;
    cr_assert_eq(sq_app_create(&app), 0);
    cr_assert_eq(sq_app_route(app, "/h", &get_only, NULL), 0);
    th_server_t *ts = th_server_start(app, NULL);
    th_conn_t c;
    cr_assert_eq(th_conn_open(&c, th_server_port(ts)), 0);
    cr_assert_eq(th_conn_sends(&c, "HEAD /h HTTP/1.1\r\nHost: t\r\n\r\n"), 0);
    th_res_t r;
    cr_assert_eq(th_conn_read_res(&c, &r, 2000, true), 0);
    cr_assert_eq(r.status, 200);
    cr_assert_str_eq(th_res_header(&r, "Content-Length"), "5");
    cr_assert_str_eq(th_res_header(&r, "X-Method"), "HEAD");
    cr_assert_eq(r.body_len, 0);
    th_res_free(&r);
    /* no stray body bytes: the next answer on the connection parses cleanly */
    cr_assert_eq(th_conn_sends(&c, "GET /h HTTP/1.1\r\nHost: t\r\n\r\n"), 0);
    cr_assert_eq(th_conn_read_res(&c, &r, 2000, false), 0);
    cr_assert_eq(r.status, 200);
    cr_assert_str_eq(r.body, "hello");
    cr_assert_str_eq(th_res_header(&r, "X-Method"), "GET");
    th_res_free(&r);
    th_conn_close(&c);
    th_server_stop(ts, 1000);
    sq_app_destroy(app);
}

Test(blocking, a_blocking_post_only_route_answers_get_with_405_allow_post, .timeout = 10)
{
    sq_app_t *app;
    cr_assert_eq(sq_app_create(&app), 0);
    cr_assert_eq(sq_app_route(app, "/p", &post_only, NULL), 0);
    th_server_t *ts = th_server_start(app, NULL);
    int port = th_server_port(ts);
    static const char *const refused[] = {
        "GET /p HTTP/1.1\r\nHost: t\r\n\r\n", "HEAD /p HTTP/1.1\r\nHost: t\r\n\r\n",
        "PUT /p HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n"};
    for (int i = 0; i < 3; i++) {
        th_conn_t c;
        cr_assert_eq(th_conn_open(&c, port), 0);
        cr_assert_eq(th_conn_sends(&c, refused[i]), 0);
        th_res_t r;
        cr_assert_eq(th_conn_read_res(&c, &r, 2000, i == 1), 0);
        cr_assert_eq(r.status, 405, "%s", refused[i]);
        cr_assert_str_eq(th_res_header(&r, "Allow"), "POST");
        th_res_free(&r);
        th_conn_close(&c);
    }
    th_res_t r;
    cr_assert_eq(th_request(port, "POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n", &r),
                 0);
    cr_assert_eq(r.status, 200);
    cr_assert_str_eq(r.body, "hello");
    th_res_free(&r);
    th_server_stop(ts, 1000);
    sq_app_destroy(app);
}

static void get_on_loop(sq_req_t *req, sq_res_t *res, void *data)
{
    sq_res_send(res, 200, "text/plain", "loop", 4);
}
static const sq_handler_t both_kinds = {
    .get = get_on_loop, .blocking.get = hello_text, .blocking.post = hello_text};

Test(blocking, a_method_with_both_kinds_set_uses_the_non_blocking_one, .timeout = 10)
{
    sq_app_t *app;
    cr_assert_eq(sq_app_create(&app), 0);
    cr_assert_eq(sq_app_route(app, "/both", &both_kinds, NULL), 0);
    th_server_t *ts = th_server_start(app, NULL);
    get_ok(th_server_port(ts), "/both", 200, "loop");
    th_res_t r;
    cr_assert_eq(th_request(th_server_port(ts),
                            "POST /both HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n", &r),
                 0);
    cr_assert_str_eq(r.body, "hello");
    th_res_free(&r);
    th_server_stop(ts, 1000);
    sq_app_destroy(app);
}

Test(blocking, pipelined_requests_behind_a_job_are_answered_in_order, .timeout = 10)
{
    sq_app_t *app;
    cr_assert_eq(sq_app_create(&app), 0);
    cr_assert_eq(sq_app_route(app, "/sleep", &pool_sleeper, NULL), 0);
    cr_assert_eq(sq_app_route(app, "/plaintext", &plaintext, NULL), 0);
    th_server_t *ts = th_server_start(app, NULL);
    th_conn_t c;
    cr_assert_eq(th_conn_open(&c, th_server_port(ts)), 0);
    cr_assert_eq(th_conn_sends(&c, "GET /sleep?ms=100 HTTP/1.1\r\nHost: t\r\n\r\n"
                                   "GET /plaintext HTTP/1.1\r\nHost: t\r\n\r\n"
                                   "GET /sleep?ms=20 HTTP/1.1\r\nHost: t\r\n\r\n"),
                 0);
    static const char *const want[] = {"{\"slept_ms\":100}", "Hello, world", "{\"slept_ms\":20}"};
    for (int i = 0; i < 3; i++) {
        th_res_t r;
        cr_assert_eq(th_conn_read_res(&c, &r, 3000, false), 0);
        cr_assert_eq(r.status, 200);
        cr_assert_str_eq(r.body, want[i]);
        th_res_free(&r);
    }
    th_conn_close(&c);
    th_server_stop(ts, 1000);
    sq_app_destroy(app);
}
