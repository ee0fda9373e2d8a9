/* The watchdog's spans read the clock uv_hrtime reads: HTTP/1 starts a handler's span at
 * the request's stamp, taken with uv_hrtime, and sq_watchdog_span_end measures to its own
 * read of the clock. */
#include <criterion/criterion.h>
#include <uv.h>

#include "squall/watchdog.h"

static void closed_cb(sq_watchdog_t *wd, void *data)
{
    (*(int *)data)++;
}

Test(watchdog_clock, a_span_started_with_uv_hrtime_is_measured_on_the_same_clock, .timeout = 10)
{
    uv_loop_t loop;
    cr_assert_eq(uv_loop_init(&loop), 0);
    sq_watchdog_opts_t o;
    sq_watchdog_opts_init(&o);
    o.log = 0;
    o.slow_ms = 1000000; /* nothing here is slow */
    sq_watchdog_t *wd;
    cr_assert_eq(sq_watchdog_create(&wd, &loop, &o), 0);
    /* begun 50 ms ago by uv_hrtime's clock: at least that long, and not ages (another
     * clock would be off by years, or below zero) */
    sq_watchdog_span_t span;
    sq_watchdog_span_begin(wd, &span, "stamped");
    uint64_t before = uv_hrtime();
    span.start_ns = before - 50000000u;
    uint64_t us = sq_watchdog_span_end(wd, &span);
    uint64_t took_us = (uv_hrtime() - before) / 1000u;
    cr_assert_geq(us, 50000u, "%llu us", (unsigned long long)us);
    cr_assert_leq(us, 50000u + took_us + 1, "%llu us", (unsigned long long)us);
    /* begun by sq_watchdog_span_begin, ended by uv_hrtime's clock: within its bounds */
    uint64_t t0 = uv_hrtime();
    sq_watchdog_span_begin(wd, &span, "plain");
    uint64_t t1 = uv_hrtime();
    cr_assert(span.start_ns >= t0 && span.start_ns <= t1, "begin reads uv_hrtime's clock");
    us = sq_watchdog_span_end(wd, &span);
    cr_assert_leq(us, (uv_hrtime() - t0) / 1000u + 1);
    int closed = 0;
    cr_assert_eq(sq_watchdog_destroy(wd, closed_cb, &closed), 0);
    cr_assert_eq(uv_run(&loop, UV_RUN_DEFAULT), 0);
    cr_assert_eq(closed, 1);
    cr_assert_eq(uv_loop_close(&loop), 0);
}
