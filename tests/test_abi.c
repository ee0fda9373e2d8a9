/* Structs that grow (include/squall/common.h): a program built against an older header
 * hands squall smaller option structs, counters, spans and handler tables than squall
 * knows; one built against a newer header hands bigger ones. Each test builds the
 * caller's struct in a malloc block of exactly its size, so under AddressSanitizer
 * (`make asan`) a byte read or written past it fails the test; and checks that squall
 * took the caller's value for every field that fits and its default for every other.
 * Every "older header" here is a cut of today's struct at a field boundary, which is
 * what an older release's struct is (fields are only added at the end). Plus the version
 * functions against the version macros. */
#include <stddef.h>

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "async/async_int.h"
#include "http/h1_int.h"
#include "server/server_int.h"
#include "support/harness.h"
#include "ws/ws_int.h"

/* ---- fields, as tables ---- */

typedef struct field {
    const char *name;
    size_t off, len;
} field_t;

#define FIELD(type, f) {#f, offsetof(type, f), sizeof(((type *)0)->f)}

static bool fits(const field_t *f, size_t cut)
{
    return f->off + f->len <= cut;
}

/* Checks `kept` field by field: the bytes of `given` where the field fits in `cut`, those
 * of `defaults` elsewhere. `kept` of only `cut` bytes (the caller's own block): only the
 * fields that fit are read. */
static void check_fields(const char *what, const field_t *fl, size_t n, size_t cut,
                         const void *kept, bool kept_is_cut, const void *given,
                         const void *defaults)
{
    for (size_t i = 0; i < n; i++) {
        const field_t *f = &fl[i];
        if (kept_is_cut && !fits(f, cut))
            continue;
        const void *want = fits(f, cut) ? given : defaults;
        cr_assert(memcmp((const char *)kept + f->off, (const char *)want + f->off, f->len) == 0,
                  "%s from a %zu-byte struct: %s is not the %s", what, cut, f->name,
                  want == given ? "caller's value" : "default");
    }
}

/* The caller's struct of an older header: `cut` bytes, the end of a malloc block, filled
 * with a pattern squall must overwrite or ignore. */
static void *older(size_t cut)
{
    void *p = malloc(cut);
    cr_assert_not_null(p);
    memset(p, 0xA5, cut);
    return p;
}

/* Copies the fields of `from` that fit in `cut` into the caller's block. */
static void set_fitting(void *block, const field_t *fl, size_t n, size_t cut, const void *from)
{
    for (size_t i = 0; i < n; i++)
        if (fits(&fl[i], cut))
            memcpy((char *)block + fl[i].off, (const char *)from + fl[i].off, fl[i].len);
}

static bool all_zero(const void *p, size_t len)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < len; i++)
        if (b[i] != 0)
            return false;
    return true;
}

static void close_loop(uv_loop_t *loop)
{
    uv_run(loop, UV_RUN_DEFAULT);
    cr_assert_eq(uv_loop_close(loop), 0, "a handle or request was left on the loop");
}

/* ---- version ---- */

Test(abi, version_functions_match_the_header_macros)
{
    cr_assert_eq(sq_version(), (unsigned)SQ_VERSION_HEX);
    cr_assert_eq(SQ_VERSION_HEX,
                 SQ_VERSION_MAJOR << 16 | SQ_VERSION_MINOR << 8 | SQ_VERSION_PATCH);
    char want[32];
    snprintf(want, sizeof(want), "%d.%d.%d", SQ_VERSION_MAJOR, SQ_VERSION_MINOR,
             SQ_VERSION_PATCH);
    cr_assert_str_eq(SQ_VERSION_STRING, want);
    cr_assert_str_eq(sq_version_string(), want);
    cr_assert_gt(SQ_VERSION_ABI, 0);
}

/* ---- server options ---- */

static const field_t server_opts_fields[] = {
    FIELD(sq_server_opts_t, max_header_bytes),   FIELD(sq_server_opts_t, max_headers),
    FIELD(sq_server_opts_t, max_uri_bytes),      FIELD(sq_server_opts_t, max_body_bytes),
    FIELD(sq_server_opts_t, header_timeout_ms),  FIELD(sq_server_opts_t, body_timeout_ms),
    FIELD(sq_server_opts_t, idle_timeout_ms),    FIELD(sq_server_opts_t, max_connections),
    FIELD(sq_server_opts_t, max_pipeline_bytes), FIELD(sq_server_opts_t, backlog),
    FIELD(sq_server_opts_t, reuseport),          FIELD(sq_server_opts_t, server_name),
    FIELD(sq_server_opts_t, slow_callback_ms),   FIELD(sq_server_opts_t, blocking_pool),
    FIELD(sq_server_opts_t, blocking_max_in_flight), FIELD(sq_server_opts_t, on_shutdown),
    FIELD(sq_server_opts_t, on_shutdown_data), FIELD(sq_server_opts_t, request_id_header),
};
#define N_SERVER_OPTS SQ__ARRAY_SIZE(server_opts_fields)

/* (the test's cut between the two fields leaves data NULL: no release has that layout) */
static void abi_shutdown(sq_server_t *srv, void *data)
{
    if (data != NULL)
        (*(int *)data)++;
}
static int abi_shutdowns;

/* A value other than the default for every field, each one a server accepts. */
static sq_server_opts_t server_opts_alt(sq_work_pool_t *pool)
{
    sq_server_opts_t o;
    sq_server_opts_init(&o);
    o.max_header_bytes = 1000;
    o.max_headers = 9;
    o.max_uri_bytes = 900;
    o.max_body_bytes = 5000;
    o.header_timeout_ms = 1111;
    o.body_timeout_ms = 2222;
    o.idle_timeout_ms = 3333;
    o.max_connections = 44;
    o.max_pipeline_bytes = 5555;
    o.backlog = 16;
    o.reuseport = 1;
    o.server_name = "abi";
    o.slow_callback_ms = 250;
    o.blocking_pool = pool;
    o.blocking_max_in_flight = 2;
    o.on_shutdown = abi_shutdown;
    o.on_shutdown_data = &abi_shutdowns;
    o.request_id_header = "X-Abi-Id";
    return o;
}

Test(abi, server_opts_from_an_older_header_take_defaults_past_their_size, .timeout = 20)
{
    uv_loop_t loop;
    cr_assert_eq(uv_loop_init(&loop), 0);
    sq_app_t *app;
    cr_assert_eq(sq_app_create(&app), 0);
    sq_work_pool_t *pool;
    cr_assert_eq(sq_work_pool_create(&pool, &loop, NULL), 0);
    sq_server_opts_t defaults, alt = server_opts_alt(pool);
    sq_server_opts_init(&defaults);

    /* every older layout: cut before each field, and today's whole struct */
    for (size_t i = 0; i <= N_SERVER_OPTS; i++) {
        size_t cut = i < N_SERVER_OPTS ? server_opts_fields[i].off : sizeof(sq_server_opts_t);
        sq_server_opts_t *p = older(cut);
        sq_server_opts_init_sized(p, cut);
        cr_assert_eq(p->size, cut);
        check_fields("sq_server_opts_init", server_opts_fields, N_SERVER_OPTS, cut, p, true,
                     &defaults, &defaults);
        set_fitting(p, server_opts_fields, N_SERVER_OPTS, cut, &alt);

        sq_server_t *srv;
        cr_assert_eq(sq_server_create(&srv, &loop, app, p), 0, "%zu-byte options", cut);
        free(p); /* copied: the server keeps nothing of the caller's struct */
        /* the server keeps no name pointer (it writes the header line at once) */
        sq_server_opts_t kept = srv->opts;
        kept.server_name = fits(&server_opts_fields[11], cut) ? alt.server_name
                                                               : defaults.server_name;
        bool rid = fits(&server_opts_fields[17], cut);
        kept.request_id_header = rid ? alt.request_id_header : NULL; /* kept as its line */
        check_fields("sq_server_create", server_opts_fields, N_SERVER_OPTS, cut, &kept, false,
                     &alt, &defaults);
        const char *line = fits(&server_opts_fields[11], cut) ? "Server: abi\r\n"
                                                               : "Server: squall\r\n";
        cr_assert_eq(sq__hs(srv)->server_line_len, strlen(line));
        cr_assert(memcmp(sq__hs(srv)->server_line, line, strlen(line)) == 0);
        cr_assert_eq(sq_server_watchdog(srv) != NULL, fits(&server_opts_fields[12], cut));
        cr_assert_eq(sq__hs(srv)->rid_name_len, rid ? strlen("X-Abi-Id: ") : 0);
        cr_assert_eq(sq_server_destroy(srv, 0, NULL, NULL), 0);
        uv_run(&loop, UV_RUN_DEFAULT);
    }
    cr_assert_eq(sq_work_pool_destroy(pool, NULL, NULL), 0);
    close_loop(&loop);
    sq_app_destroy(app);
}

Test(abi, server_opts_never_initialised_are_refused)
{
    uv_loop_t loop;
    cr_assert_eq(uv_loop_init(&loop), 0);
    sq_app_t *app;
    cr_assert_eq(sq_app_create(&app), 0);
    sq_server_t *srv = (sq_server_t *)&loop; /* a sentinel: must stay as it is */
    sq_server_opts_t o;
    memset(&o, 0, sizeof(o));
    o.max_connections = 5; /* filled by hand, size forgotten */
    cr_assert_eq(sq_server_create(&srv, &loop, app, &o), UV_EINVAL);
    o.size = sizeof(size_t) - 1;
    cr_assert_eq(sq_server_create(&srv, &loop, app, &o), UV_EINVAL);
    cr_assert_eq(srv, (sq_server_t *)&loop);
    /* by hand with the size set: the fields left out are 0, and accepted as such */
    o.size = sizeof(o);
    cr_assert_eq(sq_server_create(&srv, &loop, app, &o), 0);
    cr_assert_eq(srv->opts.max_connections, 5);
    cr_assert_eq(srv->opts.max_headers, 0);
    cr_assert_eq(sq_server_destroy(srv, 0, NULL, NULL), 0);
    close_loop(&loop);
    sq_app_destroy(app);
}

Test(abi, server_opts_from_a_newer_header_refuse_fields_this_library_lacks)
{
    uv_loop_t loop;
    cr_assert_eq(uv_loop_init(&loop), 0);
    sq_app_t *app;
    cr_assert_eq(sq_app_create(&app), 0);
    size_t big = sizeof(sq_server_opts_t) + 24;
    sq_server_opts_t *p = older(big);
    sq_server_opts_t defaults;
    sq_server_opts_init(&defaults);
    sq_server_opts_init_sized(p, big);
    cr_assert_eq(p->size, big);
    cr_assert(all_zero((char *)p + sizeof(*p), 24), "init left the newer fields unset");
    check_fields("sq_server_opts_init", server_opts_fields, N_SERVER_OPTS, big, p, false,
                 &defaults, &defaults);
    p->max_headers = 7;
    sq_server_t *srv;
    cr_assert_eq(sq_server_create(&srv, &loop, app, p), 0, "zeros past what squall knows");
    cr_assert_eq(srv->opts.max_headers, 7);
    cr_assert_eq(sq_server_destroy(srv, 0, NULL, NULL), 0);
    uv_run(&loop, UV_RUN_DEFAULT);

    ((unsigned char *)p)[sizeof(*p) + 23] = 1; /* a newer field set */
    srv = (sq_server_t *)&loop;
    cr_assert_eq(sq_server_create(&srv, &loop, app, p), UV_ENOTSUP);
    cr_assert_eq(srv, (sq_server_t *)&loop);
    free(p);
    close_loop(&loop);
    sq_app_destroy(app);
}

/* ---- counters ---- */

static const field_t server_stats_fields[] = {
    FIELD(sq_server_stats_t, connections_open),     FIELD(sq_server_stats_t, connections_total),
    FIELD(sq_server_stats_t, connections_rejected), FIELD(sq_server_stats_t, requests),
    FIELD(sq_server_stats_t, responses_4xx),        FIELD(sq_server_stats_t, responses_5xx),
    FIELD(sq_server_stats_t, parse_errors),         FIELD(sq_server_stats_t, limit_errors),
    FIELD(sq_server_stats_t, timeouts),             FIELD(sq_server_stats_t, aborted),
    FIELD(sq_server_stats_t, bytes_read),           FIELD(sq_server_stats_t, bytes_written),
    FIELD(sq_server_stats_t, websockets_open),
};

static const field_t pool_stats_fields[] = {
    FIELD(sq_work_pool_stats_t, in_flight), FIELD(sq_work_pool_stats_t, peak_in_flight),
    FIELD(sq_work_pool_stats_t, queued),    FIELD(sq_work_pool_stats_t, submitted),
    FIELD(sq_work_pool_stats_t, completed), FIELD(sq_work_pool_stats_t, cancelled),
    FIELD(sq_work_pool_stats_t, rejected),
};

static const field_t wd_stats_fields[] = {
    FIELD(sq_watchdog_stats_t, samples),     FIELD(sq_watchdog_stats_t, lag_max_us),
    FIELD(sq_watchdog_stats_t, lag_mean_us), FIELD(sq_watchdog_stats_t, lag_p99_us),
    FIELD(sq_watchdog_stats_t, stalls),      FIELD(sq_watchdog_stats_t, spans),
    FIELD(sq_watchdog_stats_t, slow_spans),  FIELD(sq_watchdog_stats_t, span_max_us),
    FIELD(sq_watchdog_stats_t, span_p99_us), FIELD(sq_watchdog_stats_t, slowest_span),
};

/* Reads counters through `fill` (a *_stats_sized) into a struct of every older size, one
 * exactly as big as today's and one bigger: the fields that fit are today's values, size
 * says how much was filled, nothing past the block is touched, and a newer header's
 * fields are zeroed. */
typedef void (*fill_fn)(const void *obj, void *out, size_t size);

static void check_counters(const char *what, const void *obj, fill_fn fill, const field_t *fl,
                           size_t n, size_t known)
{
    void *full = older(known);
    fill(obj, full, known);
    cr_assert_eq(*(size_t *)full, known);
    for (size_t i = 0; i <= n; i++) {
        size_t cut = i < n ? fl[i].off : known;
        void *p = older(cut);
        fill(obj, p, cut);
        cr_assert_eq(*(size_t *)p, cut, "%s: size of a %zu-byte struct", what, cut);
        check_fields(what, fl, n, cut, p, true, full, full);
        free(p);
    }
    void *p = older(known + 16);
    fill(obj, p, known + 16);
    cr_assert_eq(*(size_t *)p, known, "%s: size says what was filled", what);
    check_fields(what, fl, n, known, p, false, full, full);
    cr_assert(all_zero((char *)p + known, 16), "%s: a newer header's counters not zeroed", what);
    free(p);
    free(full);
}

static void fill_server(const void *obj, void *out, size_t size)
{
    sq_server_stats_sized(obj, out, size);
}
static void fill_pool(const void *obj, void *out, size_t size)
{
    sq_work_pool_stats_sized(obj, out, size);
}
static void fill_wd(const void *obj, void *out, size_t size)
{
    sq_watchdog_stats_sized(obj, out, size);
}

Test(abi, counters_fill_only_what_the_callers_header_has)
{
    uv_loop_t loop;
    cr_assert_eq(uv_loop_init(&loop), 0);
    sq_app_t *app;
    cr_assert_eq(sq_app_create(&app), 0);
    sq_server_t *srv;
    cr_assert_eq(sq_server_create(&srv, &loop, app, NULL), 0);
    sq_work_pool_t *pool;
    cr_assert_eq(sq_work_pool_create(&pool, &loop, NULL), 0);
    sq_watchdog_t *wd;
    cr_assert_eq(sq_watchdog_create(&wd, &loop, NULL), 0);

    /* distinct values in every counter, so a shifted or missed field shows */
    sq_server_stats_t saved_srv = srv->stats;
    srv->stats = (sq_server_stats_t){.size = sizeof(sq_server_stats_t),
                                     .connections_open = 101,
                                     .connections_total = 102,
                                     .connections_rejected = 103,
                                     .requests = 104,
                                     .responses_4xx = 105,
                                     .responses_5xx = 106,
                                     .parse_errors = 107,
                                     .limit_errors = 108,
                                     .timeouts = 109,
                                     .aborted = 110,
                                     .bytes_read = 111,
                                     .bytes_written = 112,
                                     .websockets_open = 113};
    sq_work_pool_stats_t saved_pool = pool->stats;
    pool->stats.in_flight = 0; /* the pool's own bookkeeping: left sane */
    pool->stats.peak_in_flight = 3;
    pool->stats.queued = 0;
    pool->stats.submitted = 44;
    pool->stats.completed = 45;
    pool->stats.cancelled = 46;
    pool->stats.rejected = 47;
    sq_watchdog_span_t span;
    sq_watchdog_span_begin(wd, &span, "abi");
    sq_watchdog_span_end(wd, &span);

    check_counters("sq_server_stats", srv, fill_server, server_stats_fields,
                   SQ__ARRAY_SIZE(server_stats_fields), sizeof(sq_server_stats_t));
    check_counters("sq_work_pool_stats", pool, fill_pool, pool_stats_fields,
                   SQ__ARRAY_SIZE(pool_stats_fields), sizeof(sq_work_pool_stats_t));
    check_counters("sq_watchdog_stats", wd, fill_wd, wd_stats_fields,
                   SQ__ARRAY_SIZE(wd_stats_fields), sizeof(sq_watchdog_stats_t));
    sq_watchdog_stats_t st;
    sq_watchdog_stats(wd, &st);
    cr_assert_eq(st.spans, 1);
    cr_assert_str_eq(st.slowest_span, "abi");

    srv->stats = saved_srv;
    pool->stats = saved_pool;
    cr_assert_eq(sq_server_destroy(srv, 0, NULL, NULL), 0);
    cr_assert_eq(sq_work_pool_destroy(pool, NULL, NULL), 0);
    cr_assert_eq(sq_watchdog_destroy(wd, NULL, NULL), 0);
    close_loop(&loop);
    sq_app_destroy(app);
}

/* ---- work pool options ---- */

static const field_t pool_opts_fields[] = {
    FIELD(sq_work_pool_opts_t, max_in_flight),
    FIELD(sq_work_pool_opts_t, max_queued),
};

Test(abi, work_pool_opts_from_an_older_header_take_defaults_past_their_size)
{
    uv_loop_t loop;
    cr_assert_eq(uv_loop_init(&loop), 0);
    sq_work_pool_opts_t defaults, alt;
    sq_work_pool_opts_init(&defaults);
    sq_work_pool_opts_init(&alt);
    alt.max_in_flight = defaults.max_in_flight + 3;
    alt.max_queued = 17;
    size_t n = SQ__ARRAY_SIZE(pool_opts_fields);
    for (size_t i = 0; i <= n; i++) {
        size_t cut = i < n ? pool_opts_fields[i].off : sizeof(sq_work_pool_opts_t);
        sq_work_pool_opts_t *p = older(cut);
        sq_work_pool_opts_init_sized(p, cut);
        cr_assert_eq(p->size, cut);
        check_fields("sq_work_pool_opts_init", pool_opts_fields, n, cut, p, true, &defaults,
                     &defaults);
        set_fitting(p, pool_opts_fields, n, cut, &alt);
        sq_work_pool_t *pool;
        cr_assert_eq(sq_work_pool_create(&pool, &loop, p), 0, "%zu-byte options", cut);
        free(p);
        check_fields("sq_work_pool_create", pool_opts_fields, n, cut, &pool->opts, false, &alt,
                     &defaults);
        cr_assert_eq(sq_work_pool_destroy(pool, NULL, NULL), 0);
    }
    sq_work_pool_opts_t o;
    memset(&o, 0, sizeof(o));
    o.max_in_flight = 1;
    sq_work_pool_t *pool;
    cr_assert_eq(sq_work_pool_create(&pool, &loop, &o), UV_EINVAL, "size never set");
    close_loop(&loop);
}

/* ---- watchdog options and spans ---- */

typedef struct slow_seen {
    int calls;
    void *data;
} slow_seen_t;

static slow_seen_t slow_seen;

static void on_slow(sq_watchdog_t *wd, const char *name, const char *last, uint64_t us,
                    void *data)
{
    slow_seen.calls++;
    slow_seen.data = data;
}

/* A span that took `ns` (its start moved back; the clock only adds to it). */
static void span_of(sq_watchdog_t *wd, uint64_t ns)
{
    sq_watchdog_span_t span;
    sq_watchdog_span_begin(wd, &span, "abi");
    span.start_ns -= ns;
    sq_watchdog_span_end(wd, &span);
}

Test(abi, watchdog_opts_from_an_older_header_take_defaults_past_their_size)
{
    static const field_t fl[] = {
        FIELD(sq_watchdog_opts_t, slow_ms), FIELD(sq_watchdog_opts_t, probe_ms),
        FIELD(sq_watchdog_opts_t, log),     FIELD(sq_watchdog_opts_t, on_slow),
        FIELD(sq_watchdog_opts_t, data),
    };
    size_t n = SQ__ARRAY_SIZE(fl);
    uv_loop_t loop;
    cr_assert_eq(uv_loop_init(&loop), 0);
    sq_watchdog_opts_t defaults, alt;
    sq_watchdog_opts_init(&defaults);
    cr_assert_eq(defaults.slow_ms, 100); /* the spans below are measured against it */
    int marker;
    sq_watchdog_opts_init(&alt);
    alt.slow_ms = 3600 * 1000; /* an hour */
    alt.probe_ms = 7;
    alt.log = 0;
    alt.on_slow = on_slow;
    alt.data = &marker;
    sq_log_set_level(SQ_LOG_OFF); /* the default log = 1 would write the reports */
    for (size_t i = 0; i <= n; i++) {
        size_t cut = i < n ? fl[i].off : sizeof(sq_watchdog_opts_t);
        sq_watchdog_opts_t *p = older(cut);
        sq_watchdog_opts_init_sized(p, cut);
        cr_assert_eq(p->size, cut);
        check_fields("sq_watchdog_opts_init", fl, n, cut, p, true, &defaults, &defaults);
        set_fitting(p, fl, n, cut, &alt);
        sq_watchdog_t *wd;
        cr_assert_eq(sq_watchdog_create(&wd, &loop, p), 0, "%zu-byte options", cut);
        free(p);
        memset(&slow_seen, 0, sizeof(slow_seen));
        /* one second: slow against the default 100 ms, not against the caller's hour */
        span_of(wd, UINT64_C(1000000000));
        sq_watchdog_stats_t st;
        sq_watchdog_stats(wd, &st);
        cr_assert_eq(st.slow_spans, fits(&fl[0], cut) ? 0 : 1, "slow_ms, %zu bytes", cut);
        /* two hours: slow against both, so reported to on_slow if the caller set it */
        span_of(wd, UINT64_C(2) * 3600 * 1000000000);
        cr_assert_eq(slow_seen.calls, fits(&fl[3], cut) ? 1 : 0, "on_slow, %zu bytes", cut);
        if (slow_seen.calls)
            cr_assert_eq(slow_seen.data, fits(&fl[4], cut) ? (void *)&marker : NULL,
                         "data, %zu bytes", cut);
        cr_assert_eq(sq_watchdog_destroy(wd, NULL, NULL), 0);
    }
    close_loop(&loop);
}

Test(abi, watchdog_span_from_an_older_header_is_written_within_its_size)
{
    uv_loop_t loop;
    cr_assert_eq(uv_loop_init(&loop), 0);
    sq_watchdog_opts_t o;
    sq_watchdog_opts_init(&o);
    o.log = 0;
    sq_watchdog_t *wd;
    cr_assert_eq(sq_watchdog_create(&wd, &loop, &o), 0);
    /* a span that ends before `name` */
    size_t cut = offsetof(sq_watchdog_span_t, name);
    sq_watchdog_span_t *p = older(cut);
    sq_watchdog_span_begin_sized(wd, p, cut, "abi");
    cr_assert_eq(p->size, cut);
    cr_assert_neq(p->start_ns, UINT64_C(0xA5A5A5A5A5A5A5A5));
    sq_watchdog_span_end(wd, p);
    free(p);
    sq_watchdog_stats_t st;
    sq_watchdog_stats(wd, &st);
    cr_assert_eq(st.spans, 1);
    cr_assert_null(st.slowest_span, "a span with no room for a name has none");
    cr_assert_eq(sq_watchdog_destroy(wd, NULL, NULL), 0);
    close_loop(&loop);
}

/* ---- WebSocket options and handler tables ---- */

static const field_t ws_opts_fields[] = {
    FIELD(sq_ws_opts_t, max_message_bytes),    FIELD(sq_ws_opts_t, max_queued_bytes),
    FIELD(sq_ws_opts_t, overflow),             FIELD(sq_ws_opts_t, ping_interval_ms),
    FIELD(sq_ws_opts_t, pong_timeout_ms),      FIELD(sq_ws_opts_t, close_timeout_ms),
    FIELD(sq_ws_opts_t, handshake_timeout_ms), FIELD(sq_ws_opts_t, subprotocols),
    FIELD(sq_ws_opts_t, idle_timeout_ms),      FIELD(sq_ws_opts_t, message_timeout_ms),
    FIELD(sq_ws_opts_t, deflate),              FIELD(sq_ws_opts_t, deflate_no_context_takeover),
    FIELD(sq_ws_opts_t, deflate_peer_no_context_takeover),
    FIELD(sq_ws_opts_t, deflate_window_bits),  FIELD(sq_ws_opts_t, deflate_peer_window_bits),
    FIELD(sq_ws_opts_t, deflate_mem_level),    FIELD(sq_ws_opts_t, deflate_level),
    FIELD(sq_ws_opts_t, deflate_threshold),
};
#define N_WS_OPTS SQ__ARRAY_SIZE(ws_opts_fields)

static const field_t ws_handler_fields[] = {
    FIELD(sq_ws_handler_t, open), FIELD(sq_ws_handler_t, message), FIELD(sq_ws_handler_t, close),
    FIELD(sq_ws_handler_t, pong), FIELD(sq_ws_handler_t, drain),   FIELD(sq_ws_handler_t, accept),
};
#define N_WS_HANDLER SQ__ARRAY_SIZE(ws_handler_fields)

static void ws_open(sq_ws_t *ws, sq_req_t *req, void *data) {}
static void ws_message(sq_ws_t *ws, int binary, const char *msg, size_t len, void *data) {}
static void ws_close(sq_ws_t *ws, int code, const char *reason, void *data) {}
static void ws_pong(sq_ws_t *ws, const char *payload, size_t len, void *data) {}
static void ws_drain(sq_ws_t *ws, void *data) {}
static int ws_accept(sq_req_t *req, const char **subprotocol, void *data)
{
    return 0;
}

static const sq_ws_handler_t ws_full = {.open = ws_open, .message = ws_message,
                                        .close = ws_close, .pong = ws_pong,
                                        .drain = ws_drain, .accept = ws_accept};

static sq_ws_opts_t ws_opts_alt(void)
{
    static const char *const offers[] = {"abi", NULL};
    sq_ws_opts_t o;
    sq_ws_opts_init(&o);
    o.max_message_bytes = 1001;
    o.max_queued_bytes = 2002;
    o.overflow = SQ_WS_OVERFLOW_DROP;
    o.ping_interval_ms = 3003;
    o.pong_timeout_ms = 4004;
    o.close_timeout_ms = 5005;
    o.handshake_timeout_ms = 6006;
    o.subprotocols = offers;
    o.idle_timeout_ms = 7007;
    o.message_timeout_ms = 8008;
    o.deflate = 1;
    o.deflate_no_context_takeover = 1;
    o.deflate_peer_no_context_takeover = 1;
    o.deflate_window_bits = 10;
    o.deflate_peer_window_bits = 11;
    o.deflate_mem_level = 3;
    o.deflate_level = 2;
    o.deflate_threshold = 9009;
    return o;
}

/* The client keeps what it was given: the options and handler table from an older
 * header, with defaults (NULL callbacks) past their size. Each connection is cancelled
 * at once (nothing listens on the address anyway). */
Test(abi, ws_client_opts_and_handler_from_an_older_header_take_defaults, .timeout = 30)
{
    uv_loop_t loop;
    cr_assert_eq(uv_loop_init(&loop), 0);
    sq_ws_opts_t defaults, alt = ws_opts_alt();
    sq_ws_opts_init(&defaults);
    sq_ws_handler_t no_callbacks;
    memset(&no_callbacks, 0, sizeof(no_callbacks));
    for (size_t i = 0; i <= N_WS_OPTS; i++) {
        size_t cut = i < N_WS_OPTS ? ws_opts_fields[i].off : sizeof(sq_ws_opts_t);
        sq_ws_opts_t *p = older(cut);
        sq_ws_opts_init_sized(p, cut);
        cr_assert_eq(p->size, cut);
        check_fields("sq_ws_opts_init", ws_opts_fields, N_WS_OPTS, cut, p, true, &defaults,
                     &defaults);
        set_fitting(p, ws_opts_fields, N_WS_OPTS, cut, &alt);
        /* the handler table cut too, before each callback in turn */
        size_t hcut = i < N_WS_HANDLER ? ws_handler_fields[i].off : sizeof(sq_ws_handler_t);
        sq_ws_handler_t *h = older(hcut);
        set_fitting(h, ws_handler_fields, N_WS_HANDLER, hcut, &ws_full);

        sq_ws_t *ws = NULL;
        cr_assert_eq(sq_ws_connect_sized(&loop, "ws://127.0.0.1:9/abi", h, hcut, NULL, p, &ws),
                     0, "%zu-byte options, %zu-byte handler table", cut, hcut);
        free(p);
        free(h);
        sq_ws_opts_t kept = *ws->opts;
        /* the client keeps its own copy of the offers: compare what they say */
        cr_assert_eq(kept.subprotocols != NULL, fits(&ws_opts_fields[7], cut));
        if (kept.subprotocols != NULL) {
            cr_assert_str_eq(kept.subprotocols[0], "abi");
            cr_assert_null(kept.subprotocols[1]);
        }
        kept.subprotocols = fits(&ws_opts_fields[7], cut) ? alt.subprotocols : NULL;
        check_fields("sq_ws_connect", ws_opts_fields, N_WS_OPTS, cut, &kept, false, &alt,
                     &defaults);
        check_fields("sq_ws_connect's handler", ws_handler_fields, N_WS_HANDLER, hcut, ws->h,
                     false, &ws_full, &no_callbacks);
        cr_assert_eq(sq_ws_close(ws, SQ_WS_NORMAL, NULL), 0); /* cancels the connecting */
        uv_run(&loop, UV_RUN_DEFAULT);
    }
    close_loop(&loop);
}

Test(abi, ws_route_takes_older_structs_and_refuses_newer_fields)
{
    sq_app_t *app;
    cr_assert_eq(sq_app_create(&app), 0);
    for (size_t i = 0; i <= N_WS_OPTS; i++) {
        size_t cut = i < N_WS_OPTS ? ws_opts_fields[i].off : sizeof(sq_ws_opts_t);
        sq_ws_opts_t *p = older(cut);
        sq_ws_opts_init_sized(p, cut);
        size_t hcut = i < N_WS_HANDLER ? ws_handler_fields[i].off : sizeof(sq_ws_handler_t);
        sq_ws_handler_t *h = older(hcut);
        set_fitting(h, ws_handler_fields, N_WS_HANDLER, hcut, &ws_full);
        cr_assert_eq(sq_app_websocket_sized(app, "/ws/{n}", h, hcut, p, NULL), 0,
                     "%zu-byte options, %zu-byte handler table", cut, hcut);
        free(p);
        free(h);
    }
    /* newer: zeros past what squall knows are fine, anything else is refused */
    size_t big = sizeof(sq_ws_opts_t) + 8;
    sq_ws_opts_t *p = older(big);
    sq_ws_opts_init_sized(p, big);
    cr_assert_eq(p->size, big);
    cr_assert(all_zero((char *)p + sizeof(*p), 8));
    cr_assert_eq(sq_app_websocket(app, "/ws/new", &ws_full, p, NULL), 0);
    ((unsigned char *)p)[sizeof(*p)] = 1;
    cr_assert_eq(sq_app_websocket(app, "/ws/new2", &ws_full, p, NULL), UV_ENOTSUP);
    free(p);
    size_t hbig = sizeof(sq_ws_handler_t) + sizeof(void *);
    sq_ws_handler_t *h = older(hbig);
    memcpy(h, &ws_full, sizeof(ws_full));
    memset((char *)h + sizeof(ws_full), 0, sizeof(void *));
    cr_assert_eq(sq_app_websocket_sized(app, "/ws/new3", h, hbig, NULL, NULL), 0);
    ((unsigned char *)h)[sizeof(ws_full)] = 1; /* a callback this library lacks */
    cr_assert_eq(sq_app_websocket_sized(app, "/ws/new4", h, hbig, NULL, NULL), UV_ENOTSUP);
    free(h);
    sq_ws_opts_t zero;
    memset(&zero, 0, sizeof(zero));
    cr_assert_eq(sq_app_websocket(app, "/ws/zero", &ws_full, &zero, NULL), UV_EINVAL);
    sq_app_destroy(app);
}

/* ---- HTTP handler tables ---- */

static void ok_get(sq_req_t *req, sq_res_t *res, void *data)
{
    sq_res_send(res, 200, "text/plain", "ok", 2);
}
static void never(sq_req_t *req, sq_res_t *res, void *data)
{
    sq_res_send(res, 500, "text/plain", "read past the table", 19);
}

/* A table from a header that ended before .post: GET is served, POST gets the router's
 * 405 (no callback) — whatever lies past the table. */
Test(abi, handler_table_from_an_older_header_leaves_later_callbacks_unset, .timeout = 20)
{
    sq_app_t *app;
    cr_assert_eq(sq_app_create(&app), 0);
    size_t cut = offsetof(sq_handler_t, post);
    sq_handler_t *h = older(cut);
    memset(h, 0, cut);
    h->get = ok_get;
    cr_assert_eq(sq_app_route_sized(app, "/old", h, cut, NULL), 0);
    free(h); /* copied */

    /* newer: a zero past what squall knows is fine, a set callback is refused */
    size_t big = sizeof(sq_handler_t) + sizeof(void *);
    sq_handler_t *n = older(big);
    memset(n, 0, big);
    n->get = ok_get;
    cr_assert_eq(sq_app_route_sized(app, "/new", n, big, NULL), 0);
    sq_handler_cb later = never;
    memcpy((char *)n + sizeof(sq_handler_t), &later, sizeof(later));
    cr_assert_eq(sq_app_route_sized(app, "/newer", n, big, NULL), UV_ENOTSUP);
    free(n);

    th_server_t *ts = th_server_start(app, NULL);
    th_res_t r;
    cr_assert_eq(th_request(th_server_port(ts), "GET /old HTTP/1.1\r\nHost: t\r\n\r\n", &r), 0);
    cr_assert_eq(r.status, 200);
    th_res_free(&r);
    cr_assert_eq(th_request(th_server_port(ts),
                            "POST /old HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n", &r),
                 0);
    cr_assert_eq(r.status, 405);
    cr_assert_str_eq(th_res_header(&r, "Allow"), "GET, HEAD");
    th_res_free(&r);
    cr_assert_eq(th_request(th_server_port(ts), "GET /newer HTTP/1.1\r\nHost: t\r\n\r\n", &r),
                 0);
    cr_assert_eq(r.status, 404, "a refused route was not added");
    th_res_free(&r);
    th_server_stop(ts, 1000);
    sq_app_destroy(app);
}

/* The growth rule reads `size` to know which fields a caller has: a struct with tail
 * padding would let the next version's first field sit inside this version's size. So
 * every growable struct ends exactly after its last field. */
#define ENDS_AT_LAST_FIELD(T, last) (sizeof(T) == offsetof(T, last) + sizeof(((T *)0)->last))

Test(abi, growable_structs_have_no_tail_padding)
{
    cr_assert(ENDS_AT_LAST_FIELD(sq_server_opts_t, tls_handshake_timeout_ms));
    cr_assert(ENDS_AT_LAST_FIELD(sq_server_stats_t, websockets_open));
    cr_assert(ENDS_AT_LAST_FIELD(sq_gzip_opts_t, types));
    cr_assert(ENDS_AT_LAST_FIELD(sq_access_log_opts_t, flush_ms));
    cr_assert(ENDS_AT_LAST_FIELD(sq_access_log_stats_t, reopens));
    cr_assert(ENDS_AT_LAST_FIELD(sq_metrics_opts_t, reserved0));
    cr_assert(ENDS_AT_LAST_FIELD(sq_watchdog_opts_t, data));
    cr_assert(ENDS_AT_LAST_FIELD(sq_watchdog_span_t, name));
    cr_assert(ENDS_AT_LAST_FIELD(sq_watchdog_stats_t, slowest_span));
    cr_assert(ENDS_AT_LAST_FIELD(sq_work_pool_opts_t, max_queued));
    cr_assert(ENDS_AT_LAST_FIELD(sq_work_pool_stats_t, rejected));
    cr_assert(ENDS_AT_LAST_FIELD(sq_ws_opts_t, reserved0));
    cr_assert(ENDS_AT_LAST_FIELD(sq_client_opts_t, reserved0));
}
