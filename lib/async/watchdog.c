/* The loop-lag watchdog: a late-timer probe and caller-measured spans, with log-linear
 * histograms for their quantiles (tests/test_watchdog.c).
 *
 * The probe runs only while the loop is busy. A probe tick that finds the loop woke for
 * nothing but the probe itself since the last tick parks the probe; the next time the
 * loop wakes for anything, an unreferenced check handle (run after every poll) starts it
 * again. So an idle loop embedded in a program is not woken fifty times a second
 * (test: watchdog/an_idle_loop_is_not_woken_by_the_probe). While the probe is parked, an
 * unreferenced prepare handle (run before every poll) measures the time since the last
 * poll returned: the callbacks of the timer phase that ends a quiet period (a loaded
 * machine can run the probe's parking tick and a blocking timer in one phase). A stall in
 * the I/O callbacks that end a quiet period is seen by spans only. */
#include <stdlib.h>
#include <time.h>

#include "async/async_int.h"
#include "core/abi.h"

/* ---- histogram: exact below 16, then 8 sub-buckets per power of two (12.5%) ---- */

static unsigned hist_index(uint64_t v)
{
    if (v < 16)
        return (unsigned)v;
    unsigned msb = 63u - (unsigned)__builtin_clzll(v);
    unsigned sub = (unsigned)(v >> (msb - 3)) & 7u;
    return 16u + (msb - 4u) * SQ__HIST_SUB + sub;
}

static uint64_t hist_upper(unsigned idx)
{
    if (idx < 16)
        return idx;
    unsigned msb = (idx - 16u) / SQ__HIST_SUB + 4u;
    uint64_t sub = (idx - 16u) % SQ__HIST_SUB;
    uint64_t lower = (8u + sub) << (msb - 3u);
    return lower + ((uint64_t)1 << (msb - 3u)) - 1u;
}

void sq__hist_add(sq__hist_t *h, uint64_t v)
{
    h->buckets[hist_index(v)]++;
    h->count++;
    h->sum += v;
    if (v > h->max)
        h->max = v;
}

uint64_t sq__hist_quantile(const sq__hist_t *h, double q)
{
    if (h->count == 0)
        return 0;
    uint64_t want = (uint64_t)(q * (double)h->count);
    if ((double)want < q * (double)h->count)
        want++;
    if (want == 0)
        want = 1;
    uint64_t seen = 0;
    for (unsigned i = 0; i < SQ__HIST_BUCKETS; i++) {
        seen += h->buckets[i];
        if (seen >= want) {
            uint64_t up = hist_upper(i);
            return up < h->max ? up : h->max;
        }
    }
    return h->max;
}

/* ---- the watchdog ---- */

struct sq_watchdog_s {
    uv_loop_t *loop;
    sq_watchdog_opts_t opts;
    uv_timer_t probe;
    uv_check_t wake;      /* after every poll: counts the loop's wake-ups, restarts a parked probe */
    uv_prepare_t gap;     /* before every poll: while parked, how long since the last one */
    uint64_t last_check_ns; /* the last poll's return, or the last probe tick if later */
    uint64_t wakes;       /* polls returned since the watchdog started */
    uint64_t wakes_at_tick;
    bool parked;          /* the probe is stopped until the loop wakes for something */
    unsigned open_handles;/* probe and wake: freed when both are closed */
    uint64_t last_tick_ns;
    uint64_t last_slow_report_ns; /* a stall already blamed on a span is not logged again */
    sq__hist_t lag;
    sq__hist_t span;
    uint64_t stalls;
    uint64_t slow_spans;
    const char *slowest;
    const char *last_span;
    bool destroying;
    sq_watchdog_close_cb close_cb;
    void *close_data;
};

static void watchdog_opts_defaults(sq_watchdog_opts_t *o)
{
    memset(o, 0, sizeof(*o));
    o->size = sizeof(*o);
    o->slow_ms = 100;
    o->probe_ms = 20;
    o->log = 1;
    o->on_slow = NULL;
    o->data = NULL;
}

void sq_watchdog_opts_init_sized(sq_watchdog_opts_t *opts, size_t size)
{
    sq_watchdog_opts_t d;
    watchdog_opts_defaults(&d);
    SQ__OPTS_INIT(opts, size, &d);
}

static void report(sq_watchdog_t *wd, const char *name, const char *last, uint64_t us)
{
    if (wd->opts.log) {
        if (name)
            sq_log(SQ_LOG_WARN, "slow callback %s blocked the loop for %.1f ms", name,
                   (double)us / 1000.0);
        else
            sq_log(SQ_LOG_WARN, "loop stalled for %.1f ms (last named callback: %s)",
                   (double)us / 1000.0, last ? last : "none");
    }
    if (wd->opts.on_slow)
        wd->opts.on_slow(wd, name, last, us, wd->opts.data);
}

static void probe_cb(uv_timer_t *t)
{
    sq_watchdog_t *wd = sq__container_of(t, sq_watchdog_t, probe);
    uint64_t now = uv_hrtime();
    uint64_t expected = wd->last_tick_ns + wd->opts.probe_ms * 1000000u;
    uint64_t lag_us = now > expected ? (now - expected) / 1000u : 0;
    sq__hist_add(&wd->lag, lag_us);
    if (lag_us > wd->opts.slow_ms * 1000u) {
        wd->stalls++;
        if (wd->last_slow_report_ns < wd->last_tick_ns)
            report(wd, NULL, wd->last_span, lag_us);
    }
    wd->last_tick_ns = now;
    wd->last_check_ns = now; /* measured up to here: gap_cb must not count it again */
    /* one wake-up since the last tick is the probe's own: the loop is otherwise idle */
    if (wd->wakes - wd->wakes_at_tick <= 1) {
        uv_timer_stop(&wd->probe);
        wd->parked = true;
    }
    wd->wakes_at_tick = wd->wakes;
}

static void first_tick_cb(uv_timer_t *t);

/* Before the poll: with the probe parked, the callbacks run since the last poll returned
 * were not probed; a stall among them is still one. */
static void gap_cb(uv_prepare_t *h)
{
    sq_watchdog_t *wd = sq__container_of(h, sq_watchdog_t, gap);
    if (!wd->parked || wd->last_check_ns == 0)
        return;
    uint64_t now = uv_hrtime();
    uint64_t us = (now - wd->last_check_ns) / 1000u;
    if (us > wd->opts.slow_ms * 1000u) {
        sq__hist_add(&wd->lag, us);
        wd->stalls++;
        if (wd->last_slow_report_ns < wd->last_check_ns)
            report(wd, NULL, wd->last_span, us);
    }
    wd->last_check_ns = now; /* measured once */
}

static void wake_cb(uv_check_t *h)
{
    sq_watchdog_t *wd = sq__container_of(h, sq_watchdog_t, wake);
    wd->wakes++;
    wd->last_check_ns = uv_hrtime();
    if (wd->parked) {
        /* the period starts now, as after a start: the quiet time was not lag */
        wd->parked = false;
        wd->last_tick_ns = uv_hrtime();
        wd->wakes_at_tick = wd->wakes;
        uv_timer_start(&wd->probe, probe_cb, wd->opts.probe_ms, wd->opts.probe_ms);
    }
}

int sq_watchdog_create(sq_watchdog_t **out, uv_loop_t *loop, const sq_watchdog_opts_t *opts)
{
    sq_watchdog_opts_t o;
    watchdog_opts_defaults(&o);
    if (opts != NULL) {
        int rc = SQ__OPTS_IN(&o, opts); /* only what the caller's header has */
        if (rc != 0)
            return rc;
    }
    if (o.probe_ms == 0)
        return UV_EINVAL;
    sq_watchdog_t *wd = calloc(1, sizeof(*wd));
    if (wd == NULL)
        return UV_ENOMEM;
    wd->opts = o;
    wd->loop = loop;
    uv_timer_init(loop, &wd->probe);
    uv_unref((uv_handle_t *)&wd->probe); /* watching never keeps the loop alive */
    uv_check_init(loop, &wd->wake);
    uv_unref((uv_handle_t *)&wd->wake);
    uv_prepare_init(loop, &wd->gap);
    uv_unref((uv_handle_t *)&wd->gap);
    wd->probe.data = wd->wake.data = wd->gap.data = wd;
    wd->open_handles = 3;
    sq_watchdog_start(wd);
    *out = wd;
    return 0;
}

/* The first tick after a start only notes the time: the probe's period begins when the
 * loop next turns, so what held the thread before (a set-up before uv_run, a host name
 * lookup) is not lag. uv_timer_start measures from the loop's cached time, which before
 * uv_run can be far in the past. */
static void first_tick_cb(uv_timer_t *t)
{
    sq_watchdog_t *wd = sq__container_of(t, sq_watchdog_t, probe);
    wd->last_tick_ns = uv_hrtime();
    wd->wakes_at_tick = wd->wakes;
    uv_timer_start(&wd->probe, probe_cb, wd->opts.probe_ms, wd->opts.probe_ms);
}

int sq_watchdog_start(sq_watchdog_t *wd)
{
    if (wd->destroying)
        return SQ_ECLOSED;
    wd->parked = false;
    wd->last_check_ns = 0;
    uv_check_start(&wd->wake, wake_cb);
    uv_prepare_start(&wd->gap, gap_cb);
    uv_timer_start(&wd->probe, first_tick_cb, 0, 0);
    return 0;
}

int sq_watchdog_stop(sq_watchdog_t *wd)
{
    if (wd->destroying)
        return SQ_ECLOSED;
    wd->parked = false;
    uv_check_stop(&wd->wake);
    uv_prepare_stop(&wd->gap);
    uv_timer_stop(&wd->probe);
    return 0;
}

static void watchdog_closed_cb(uv_handle_t *h)
{
    sq_watchdog_t *wd = h->data;
    if (--wd->open_handles > 0)
        return;
    if (wd->close_cb)
        wd->close_cb(wd, wd->close_data);
    free(wd);
}

int sq_watchdog_destroy(sq_watchdog_t *wd, sq_watchdog_close_cb cb, void *data)
{
    if (wd->destroying)
        return SQ_ECLOSED;
    wd->destroying = true;
    wd->close_cb = cb;
    wd->close_data = data;
    uv_timer_stop(&wd->probe);
    uv_close((uv_handle_t *)&wd->probe, watchdog_closed_cb);
    uv_close((uv_handle_t *)&wd->wake, watchdog_closed_cb);
    uv_close((uv_handle_t *)&wd->gap, watchdog_closed_cb);
    return 0;
}

/* Spans are on the hot path (every handler call under a server's watchdog): a span of
 * this library's size is written and read in place; only one from another header goes
 * through the copies of the growth rule. */
void sq_watchdog_span_begin_sized(sq_watchdog_t *wd, sq_watchdog_span_t *span, size_t size,
                                  const char *name)
{
    sq_watchdog_span_t s = {.size = sizeof(s), .start_ns = wd ? sq__now_ns() : 0, .name = name};
    if (SQ__LIKELY(size == sizeof(s)))
        *span = s;
    else
        sq__abi_out(span, size, &s, sizeof(s));
}

uint64_t sq_watchdog_span_end(sq_watchdog_t *wd, sq_watchdog_span_t *span)
{
    if (wd == NULL)
        return 0;
    sq_watchdog_span_t s = {.size = sizeof(s), .start_ns = 0, .name = NULL};
    if (SQ__LIKELY(span->size == sizeof(s))) {
        s.start_ns = span->start_ns;
        s.name = span->name;
    } else if (span->size >= sizeof(size_t)) { /* set by begin: a size this library wrote */
        memcpy(&s, span, span->size < sizeof(s) ? span->size : sizeof(s));
    }
    uint64_t now = sq__now_ns();
    uint64_t us = (now - s.start_ns) / 1000u;
    if (us >= wd->span.max || wd->slowest == NULL)
        wd->slowest = s.name;
    sq__hist_add(&wd->span, us);
    wd->last_span = s.name;
    if (us > wd->opts.slow_ms * 1000u) {
        wd->slow_spans++;
        wd->last_slow_report_ns = now;
        report(wd, s.name, NULL, us);
    }
    return us;
}

void sq_watchdog_stats_sized(const sq_watchdog_t *wd, sq_watchdog_stats_t *out, size_t size)
{
    sq_watchdog_stats_t st;
    memset(&st, 0, sizeof(st));
    st.size = sizeof(st);
    st.samples = wd->lag.count;
    st.lag_max_us = wd->lag.max;
    st.lag_mean_us = wd->lag.count ? wd->lag.sum / wd->lag.count : 0;
    st.lag_p99_us = sq__hist_quantile(&wd->lag, 0.99);
    st.stalls = wd->stalls;
    st.spans = wd->span.count;
    st.slow_spans = wd->slow_spans;
    st.span_max_us = wd->span.max;
    st.span_p99_us = sq__hist_quantile(&wd->span, 0.99);
    st.slowest_span = wd->slowest;
    SQ__STATS_OUT(out, size, &st); /* only what the caller's header has room for */
}
