/* The loop-lag watchdog: a callback that blocks the loop is named and timed, a stall with
 * no span is still seen, a quiet loop reports nothing, and watching never keeps the loop
 * alive. Plus the histogram behind p99. */
#include <criterion/criterion.h>
#include <string.h>
#include <unistd.h>

#include "async/async_int.h"

static void close_loop(uv_loop_t *loop)
{
    uv_run(loop, UV_RUN_DEFAULT);
    cr_assert_eq(uv_loop_close(loop), 0, "a handle or request was left on the loop");
}

typedef struct slow_log {
    int calls;
    const char *name;
    const char *last;
    uint64_t us;
} slow_log_t;

static void on_slow(sq_watchdog_t *wd, const char *name, const char *last, uint64_t us,
                    void *data)
{
    slow_log_t *l = data;
    l->calls++;
    l->name = name;
    l->last = last;
    l->us = us;
}

static sq_watchdog_t *make_wd(uv_loop_t *loop, slow_log_t *log)
{
    sq_watchdog_opts_t o;
    sq_watchdog_opts_init(&o);
    o.slow_ms = 50;
    o.probe_ms = 10;
    o.log = 0;
    o.on_slow = on_slow;
    o.data = log;
    sq_watchdog_t *wd;
    cr_assert_eq(sq_watchdog_create(&wd, loop, &o), 0);
    return wd;
}

typedef struct blocker {
    sq_watchdog_t *wd;
    int ms;
    const char *name; /* NULL: block outside any span */
} blocker_t;

static void quick_cb(sq_sleep_t *s, int status, void *data)
{
    blocker_t *b = data;
    sq_watchdog_span_t span;
    sq_watchdog_span_begin(b->wd, &span, "quick");
    sq_watchdog_span_end(b->wd, &span);
}

static void blocking_cb(sq_sleep_t *s, int status, void *data)
{
    blocker_t *b = data;
    sq_watchdog_span_t span;
    if (b->name)
        sq_watchdog_span_begin(b->wd, &span, b->name);
    usleep((useconds_t)b->ms * 1000); /* the lecture's mistake: sleeping on the loop */
    if (b->name)
        sq_watchdog_span_end(b->wd, &span);
}

static void destroy_cb(sq_sleep_t *s, int status, void *data)
{
    sq_watchdog_destroy(data, NULL, NULL);
}

Test(watchdog, a_blocking_callback_is_named_timed_and_reported_once, .timeout = 10)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    slow_log_t log = {0};
    sq_watchdog_t *wd = make_wd(&loop, &log);
    blocker_t b = {.wd = wd, .ms = 150, .name = "GET /sleep-blocking"};
    sq_sleep(NULL, &loop, 30, blocking_cb, &b);
    sq_sleep(NULL, &loop, 300, destroy_cb, wd); /* lets the probe tick after the block */
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(log.calls, 1, "the span is reported; the stall it caused is not again");
    cr_assert_str_eq(log.name, "GET /sleep-blocking");
    cr_assert_geq(log.us, 140000);
    close_loop(&loop);
}

typedef struct stats_probe {
    sq_watchdog_t *wd;
    sq_watchdog_stats_t st;
} stats_probe_t;

static void take_stats(sq_sleep_t *s, int status, void *data)
{
    stats_probe_t *p = data;
    sq_watchdog_stats(p->wd, &p->st);
    sq_watchdog_destroy(p->wd, NULL, NULL);
}

/* Takes the stats once the probe has sampled `want` times since the loop began (the
 * block included), or at a deadline: on a loaded machine the probe's ticks come late, and
 * fewer of them fit in a fixed window. */
typedef struct samples_wait {
    stats_probe_t *p;
    uint64_t want;
    uint64_t deadline; /* uv_now */
    uv_timer_t timer;
} samples_wait_t;

static void check_samples(uv_timer_t *t)
{
    samples_wait_t *w = t->data;
    sq_watchdog_stats(w->p->wd, &w->p->st);
    if (w->p->st.samples < w->want && uv_now(t->loop) < w->deadline)
        return;
    sq_watchdog_destroy(w->p->wd, NULL, NULL);
    uv_close((uv_handle_t *)t, NULL);
}

Test(watchdog, lag_counters_see_the_block, .timeout = 10)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    slow_log_t log = {0};
    sq_watchdog_t *wd = make_wd(&loop, &log);
    blocker_t b = {.wd = wd, .ms = 120, .name = "blocker"};
    stats_probe_t p = {.wd = wd};
    sq_sleep(NULL, &loop, 30, blocking_cb, &b);
    /* from 300 ms on (after the block), until 5 samples, for up to 5 s */
    samples_wait_t w = {.p = &p, .want = 5, .deadline = uv_now(&loop) + 5000};
    uv_timer_init(&loop, &w.timer);
    w.timer.data = &w;
    uv_timer_start(&w.timer, check_samples, 300, 10);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_geq(p.st.samples, 5);
    cr_assert_geq(p.st.lag_max_us, 90000, "lag max %llu us",
                  (unsigned long long)p.st.lag_max_us);
    cr_assert_leq(p.st.lag_p99_us, p.st.lag_max_us);
    cr_assert_geq(p.st.stalls, 1);
    cr_assert_eq(p.st.spans, 1);
    cr_assert_eq(p.st.slow_spans, 1);
    cr_assert_geq(p.st.span_max_us, 110000);
    cr_assert_str_eq(p.st.slowest_span, "blocker");
    close_loop(&loop);
}

Test(watchdog, a_stall_outside_any_span_names_the_last_span, .timeout = 10)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    slow_log_t log = {0};
    sq_watchdog_t *wd = make_wd(&loop, &log);
    blocker_t q = {.wd = wd}, b = {.wd = wd, .ms = 150, .name = NULL};
    sq_sleep(NULL, &loop, 10, quick_cb, &q);
    sq_sleep(NULL, &loop, 30, blocking_cb, &b);
    sq_sleep(NULL, &loop, 300, destroy_cb, wd);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(log.calls, 1);
    cr_assert_null(log.name);
    cr_assert_str_eq(log.last, "quick");
    cr_assert_geq(log.us, 90000);
    close_loop(&loop);
}

static void end_quiet(sq_sleep_t *s, int status, void *data)
{
    take_stats(s, status, data);
}

static void light_work(uv_timer_t *t)
{
    if (uv_is_active((uv_handle_t *)t) && uv_now(t->loop) >= *(uint64_t *)t->data)
        uv_close((uv_handle_t *)t, NULL);
}

/* A loop doing little but never blocking (a 5 ms timer, so the probe keeps running: an
 * idle loop parks it, see an_idle_loop_is_not_woken_by_the_probe) reports no stall. */
Test(watchdog, a_quiet_loop_reports_nothing, .timeout = 10)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    slow_log_t log = {0};
    sq_watchdog_t *wd = make_wd(&loop, &log);
    stats_probe_t p = {.wd = wd};
    uv_timer_t light;
    uint64_t until = uv_now(&loop) + 200;
    uv_timer_init(&loop, &light);
    light.data = &until;
    uv_timer_start(&light, light_work, 5, 5);
    sq_sleep(NULL, &loop, 200, end_quiet, &p);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(log.calls, 0);
    cr_assert_eq(p.st.stalls, 0);
    cr_assert_geq(p.st.samples, 10);
    cr_assert_lt(p.st.lag_p99_us, 30000, "p99 lag %llu us on an idle loop",
                 (unsigned long long)p.st.lag_p99_us);
    close_loop(&loop);
}

static void closed_cb(sq_watchdog_t *wd, void *data)
{
    (*(int *)data)++;
}

Test(watchdog, watching_never_keeps_the_loop_alive, .timeout = 10)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    sq_watchdog_t *wd;
    cr_assert_eq(sq_watchdog_create(&wd, &loop, NULL), 0);
    uint64_t start = uv_hrtime();
    cr_assert_eq(uv_run(&loop, UV_RUN_DEFAULT), 0, "returns at once: nothing else to do");
    cr_assert_lt(uv_hrtime() - start, 50000000u);
    sq_watchdog_span_t span;
    sq_watchdog_span_begin(NULL, &span, "x");
    cr_assert_eq(sq_watchdog_span_end(NULL, &span), 0, "a NULL watchdog measures nothing");
    int closed = 0;
    cr_assert_eq(sq_watchdog_destroy(wd, closed_cb, &closed), 0);
    cr_assert_eq(sq_watchdog_destroy(wd, closed_cb, &closed), SQ_ECLOSED);
    close_loop(&loop);
    cr_assert_eq(closed, 1);
    sq_watchdog_opts_t o;
    sq_watchdog_opts_init(&o);
    o.probe_ms = 0;
    cr_assert_eq(sq_watchdog_create(&wd, &loop, &o), UV_EINVAL);
}

Test(watchdog, histogram_quantiles_are_within_an_eighth, .timeout = 10)
{
    sq__hist_t h;
    memset(&h, 0, sizeof(h));
    cr_assert_eq(sq__hist_quantile(&h, 0.99), 0);
    for (uint64_t v = 1; v <= 1000; v++)
        sq__hist_add(&h, v * 100);
    uint64_t p50 = sq__hist_quantile(&h, 0.5);
    uint64_t p99 = sq__hist_quantile(&h, 0.99);
    cr_assert_geq(p50, 50000);
    cr_assert_leq(p50, 50000 + 50000 / 8);
    cr_assert_geq(p99, 99000);
    cr_assert_leq(p99, 100000, "never above the largest value seen");
    cr_assert_eq(h.max, 100000);
    cr_assert_eq(sq__hist_quantile(&h, 1.0), 100000);
    /* Exact for small values, and huge values do not overflow the buckets. */
    memset(&h, 0, sizeof(h));
    for (uint64_t v = 0; v < 16; v++)
        sq__hist_add(&h, v);
    cr_assert_eq(sq__hist_quantile(&h, 0.5), 7);
    sq__hist_add(&h, UINT64_MAX);
    cr_assert_eq(sq__hist_quantile(&h, 1.0), UINT64_MAX);
}

/* An embedded loop with nothing to do is not woken by the watchdog: the probe parks once
 * it finds the loop idle, and starts again when anything wakes the loop. Counted by the
 * test's own unreferenced check handle (one run per poll that returned). */
typedef struct wake_count {
    uv_check_t check;
    unsigned wakes;
} wake_count_t;

static void count_wake(uv_check_t *h)
{
    ((wake_count_t *)h->data)->wakes++;
}

static void stop_probe_test(sq_sleep_t *s, int status, void *data)
{
    take_stats(s, status, data);
}

Test(watchdog, an_idle_loop_is_not_woken_by_the_probe, .timeout = 10)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    slow_log_t log = {0};
    sq_watchdog_t *wd = make_wd(&loop, &log); /* probe every 10 ms */
    wake_count_t wc = {.wakes = 0};
    uv_check_init(&loop, &wc.check);
    wc.check.data = &wc;
    uv_check_start(&wc.check, count_wake);
    uv_unref((uv_handle_t *)&wc.check);
    stats_probe_t p = {.wd = wd};
    sq_sleep(NULL, &loop, 500, stop_probe_test, &p); /* the loop's only work */
    uv_run(&loop, UV_RUN_DEFAULT);
    /* a probe that kept running would have woken the loop ~50 times in 500 ms */
    cr_assert_leq(wc.wakes, 6, "the loop woke %u times in 500 ms of nothing", wc.wakes);
    cr_assert_leq(p.st.samples, 4);
    uv_close((uv_handle_t *)&wc.check, NULL);
    close_loop(&loop);
}

/* ...and a loop that is busy is probed all along. */
typedef struct busy {
    uv_timer_t timer;
    stats_probe_t *p;
    unsigned ticks;
} busy_t;

static void busy_tick(uv_timer_t *t)
{
    busy_t *b = t->data;
    if (++b->ticks < 60)
        return;
    sq_watchdog_stats(b->p->wd, &b->p->st);
    sq_watchdog_destroy(b->p->wd, NULL, NULL);
    uv_close((uv_handle_t *)t, NULL);
}

Test(watchdog, a_busy_loop_is_probed_all_along, .timeout = 10)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    slow_log_t log = {0};
    sq_watchdog_t *wd = make_wd(&loop, &log);
    stats_probe_t p = {.wd = wd};
    busy_t b = {.p = &p};
    uv_timer_init(&loop, &b.timer);
    b.timer.data = &b;
    uv_timer_start(&b.timer, busy_tick, 5, 5); /* 60 ticks: 300 ms of wake-ups */
    uv_run(&loop, UV_RUN_DEFAULT);
    /* 300 ms at a 10 ms probe: ~30 samples; a loaded machine gives fewer, not 4 */
    cr_assert_geq(p.st.samples, 10, "%llu samples", (unsigned long long)p.st.samples);
    close_loop(&loop);
}
