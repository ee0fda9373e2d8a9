/* The timeout queues (lib/server/timeouts.c): one FIFO per kind, each kept in deadline
 * order, so the timer looks at the heads only. A connection answered again goes to the
 * tail of the idle queue (or, when it is the tail already, keeps its place with a fresh
 * deadline): one that keeps talking never holds back the close of one that went quiet. */
#include <criterion/criterion.h>

#include "support/harness.h"

#define GET(path) "GET " path " HTTP/1.1\r\nHost: t\r\n\r\n"

static void hello_get(sq_req_t *req, sq_res_t *res, void *data)
{
    sq_res_send(res, 200, "text/plain", "hello", 5);
}
static const sq_handler_t hello = {.get = hello_get};

Test(timeout_queue, a_quiet_connection_closes_on_time_while_others_keep_talking, .timeout = 20)
{
    sq_app_t *app;
    cr_assert_eq(sq_app_create(&app), 0);
    cr_assert_eq(sq_app_route(app, "/", &hello, NULL), 0);
    sq_server_opts_t o;
    sq_server_opts_init(&o);
    o.idle_timeout_ms = 300;
    th_server_t *ts = th_server_start(app, &o);
    int port = th_server_port(ts);
    /* b and c are in the idle queue before a, then talk every 50 ms (each answer takes
     * them from the head to the tail, or keeps the tail in place); a goes quiet after its
     * one answer and must close about 300 ms later all the same */
    th_conn_t a, b, c;
    cr_assert_eq(th_conn_open(&b, port), 0);
    cr_assert_eq(th_conn_open(&c, port), 0);
    cr_assert_eq(th_conn_sends(&b, GET("/")), 0);
    th_expect_res(&b, 200, "hello");
    cr_assert_eq(th_conn_open(&a, port), 0);
    cr_assert_eq(th_conn_sends(&a, GET("/")), 0);
    th_expect_res(&a, 200, "hello");
    uint64_t t0 = th_now_ms();
    bool a_closed = false;
    for (int i = 0; i < 30 && !a_closed; i++) { /* 1.5 s at most, five idle timeouts */
        th_sleep_ms(50);
        for (int k = 0; k < 3; k++) { /* b more often than c: their order changes */
            th_conn_t *x = k == 1 ? &c : &b;
            cr_assert_eq(th_conn_sends(x, GET("/")), 0);
            th_expect_res(x, 200, "hello");
        }
        a_closed = th_conn_wait_closed(&a, 1) == 0;
    }
    uint64_t took = th_now_ms() - t0;
    cr_assert(a_closed, "a quiet connection is closed while others talk (%llu ms)",
              (unsigned long long)took);
    cr_assert_geq(took, 250, "not before its idle timeout: %llu ms", (unsigned long long)took);
    /* the talkers were never idle long: both are still open and answer */
    cr_assert_eq(th_conn_sends(&b, GET("/")), 0);
    th_expect_res(&b, 200, "hello");
    cr_assert_eq(th_conn_sends(&c, GET("/")), 0);
    th_expect_res(&c, 200, "hello");
    th_conn_close(&a);
    th_conn_close(&b);
    th_conn_close(&c);
    th_server_stop(ts, 1000);
    sq_app_destroy(app);
}
