/* A before hook that decides in an I/O callback (a lookup in the pool, a Redis reply)
 * calls sq_req_next, and in the same turn of the loop the client's reset is read: the
 * route's .aborted is not told of a handler that never ran, and a route without .aborted
 * leaves no response owned by nobody (the server closes, nothing leaks). */
#include <criterion/criterion.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <squall.h>

#include "support/harness.h"

static atomic_int hook_waits, blocking, handler_runs, aborted_runs, aborted_before_handler, next_rc;
static sq_req_t *waiting; /* loop thread only */
static uv_async_t go;
static uv_timer_t blocker;

static void on_go(uv_async_t *a)
{
    if (waiting != NULL)
        atomic_store(&next_rc, sq_req_next(waiting));
    waiting = NULL;
    uv_close((uv_handle_t *)a, NULL);
}

/* Holds the loop for 400 ms so that the async send and the reset arrive in one poll. */
static void block_loop(uv_timer_t *t)
{
    atomic_store(&blocking, 1);
    th_sleep_ms(400);
    uv_close((uv_handle_t *)t, NULL);
}

static int wait_hook(sq_req_t *req, sq_res_t *res, void *data)
{
    waiting = req;
    uv_async_init(sq_req_loop(req), &go, on_go);
    uv_timer_init(sq_req_loop(req), &blocker);
    uv_timer_start(&blocker, block_loop, 50, 0);
    atomic_fetch_add(&hook_waits, 1);
    return SQ_PAUSE;
}

static void get_cb(sq_req_t *req, sq_res_t *res, void *data)
{
    atomic_fetch_add(&handler_runs, 1);
    sq_res_send(res, 200, "text/plain", "ok", 2);
}

static void aborted_cb(sq_req_t *req, sq_res_t *res, void *data)
{
    atomic_fetch_add(&aborted_runs, 1);
    if (atomic_load(&handler_runs) == 0)
        atomic_fetch_add(&aborted_before_handler, 1);
    sq_res_send(res, 500, NULL, NULL, 0); /* releases it */
}

static const sq_handler_t route = {.get = get_cb, .aborted = aborted_cb};

Test(hooks_race,
     sq_req_next_then_a_reset_in_the_same_turn_never_tells_aborted_of_a_handler_that_never_ran,
     .timeout = 30)
{
    sq_app_t *app;
    cr_assert_eq(sq_app_create(&app), 0);
    cr_assert_eq(sq_app_before(app, wait_hook, NULL), 0);
    cr_assert_eq(sq_app_route(app, "/", &route, NULL), 0);
    th_server_t *ts = th_server_start(app, NULL);
    th_conn_t c;
    cr_assert_eq(th_conn_open(&c, th_server_port(ts)), 0);
    th_conn_sends(&c, "GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    cr_assert_geq(th_wait_atomic(&blocking, 1, 5000), 1);
    uv_async_send(&go); /* first in the poll's ready list */
    th_sleep_ms(30);
    th_conn_abort(&c); /* then the reset */
    th_sleep_ms(800);
    th_server_stop(ts, 1000);
    sq_app_destroy(app);
    cr_assert_eq(atomic_load(&hook_waits), 1);
    cr_expect_eq(atomic_load(&aborted_before_handler), 0,
                 "the route's .aborted ran for a handler that never ran (sq_req_next gave %d)",
                 atomic_load(&next_rc));
}

/* The same on a route without .aborted: nobody is left to finish the response. */
static const sq_handler_t route_plain = {.get = get_cb};

Test(hooks_race,
     sq_req_next_then_a_reset_in_the_same_turn_on_a_route_without_aborted_shuts_down_clean,
     .timeout = 30)
{
    sq_app_t *app;
    atomic_store(&blocking, 0);
    cr_assert_eq(sq_app_create(&app), 0);
    cr_assert_eq(sq_app_before(app, wait_hook, NULL), 0);
    cr_assert_eq(sq_app_route(app, "/", &route_plain, NULL), 0);
    th_server_t *ts = th_server_start(app, NULL);
    th_conn_t c;
    cr_assert_eq(th_conn_open(&c, th_server_port(ts)), 0);
    th_conn_sends(&c, "GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    cr_assert_geq(th_wait_atomic(&blocking, 1, 5000), 1);
    uv_async_send(&go);
    th_sleep_ms(30);
    th_conn_abort(&c);
    th_sleep_ms(800);
    sq_server_stats_t st;
    uint64_t ms = th_server_stop_stats(ts, 1000, &st);
    sq_app_destroy(app);
    cr_expect_lt(ms, 900, "the shutdown waited %llu ms for a response nobody owns",
                 (unsigned long long)ms);
}
