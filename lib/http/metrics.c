/* Prometheus metrics (include/squall/metrics.h): series keyed by (route, status) in an
 * open-addressed table that loops on several threads share. A lookup reads atomics only;
 * a series is added under a mutex, once, and published with a release store, so the
 * per-response cost is a probe and a few relaxed additions. The text is made when
 * scraped. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "core/abi.h"
#include "http/h1_int.h"
#include "squall/metrics.h"
#include "squall/watchdog.h"
#include "squall/work.h"

typedef struct series {
    _Atomic(const void *) route; /* the route, or NULL: no route took the request */
    _Atomic int status;
    _Atomic bool ready;           /* route, status and label are set */
    char *label;                  /* the route's escaped label value */
    _Atomic uint64_t count;
    _Atomic uint64_t sum_ns;
    _Atomic uint64_t buckets[SQ_METRICS_MAX_BUCKETS]; /* per bucket, not cumulative */
} series_t;

typedef struct metrics {
    double bounds[SQ_METRICS_MAX_BUCKETS];
    uint64_t bounds_ns[SQ_METRICS_MAX_BUCKETS];
    char le[SQ_METRICS_MAX_BUCKETS][24];
    unsigned nb;
    unsigned max_series;
    bool process;
    uv_mutex_t mu;                /* adding a series */
    unsigned nseries;
    _Atomic uint64_t dropped;
    size_t mask;
    series_t *slots;
    time_t started;
} metrics_t;

static const double default_bounds[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                        0.01,   0.025,   0.05,   0.1,   0.25,   0.5,
                                        1,      2.5,     5,      10};

static const sq_metrics_opts_t metrics_defaults = {
    .size = sizeof(sq_metrics_opts_t), .max_series = 1024, .process = 1};

void sq_metrics_opts_init_sized(sq_metrics_opts_t *opts, size_t size)
{
    SQ__OPTS_INIT(opts, size, &metrics_defaults);
}

/* ---- the text format's escaping (exposition format 0.0.4) ---- */

/* A label value: backslash, double quote and line feed escaped. */
static void put_label(FILE *f, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\')
            fputs("\\\\", f);
        else if (*s == '"')
            fputs("\\\"", f);
        else if (*s == '\n')
            fputs("\\n", f);
        else
            fputc(*s, f);
    }
}

/* ---- series ---- */

/* The route's pattern behind the prefixes of the mounts on the way to it. */
static char *route_label(const sq__route_t *r)
{
    if (r == NULL)
        return strdup("");
    char *s = strdup(sq__route_pattern(r));
    for (const sq_app_t *a = sq__route_app(r), *p; s != NULL && (p = sq__app_parent(a)) != NULL;
         a = p) {
        const char *prefix = NULL;
        for (unsigned i = 0; i < sq__app_nroutes(p); i++) {
            const char *pre;
            if (sq__route_sub(sq__app_route_at(p, i), &pre) == a) {
                prefix = pre;
                break;
            }
        }
        if (prefix == NULL)
            break;
        char *joined;
        if (asprintf(&joined, "%s%s", prefix, s) < 0)
            joined = NULL;
        free(s);
        s = joined;
    }
    if (s == NULL)
        return NULL;
    char *esc = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&esc, &n);
    if (f != NULL) {
        put_label(f, s);
        fclose(f);
    }
    free(s);
    return esc;
}

static size_t slot_hash(const void *route, int status)
{
    uint64_t h = (uint64_t)(uintptr_t)route * 0x9E3779B97F4A7C15ull ^ (uint64_t)status;
    h ^= h >> 29;
    h *= 0xBF58476D1CE4E5B9ull;
    return (size_t)(h ^ (h >> 32));
}

/* The series of (route, status), added when new; NULL past max_series (counted). */
static series_t *series_get(metrics_t *m, const sq__route_t *route, int status)
{
    size_t i = slot_hash(route, status) & m->mask;
    for (size_t probes = 0; probes <= m->mask; probes++, i = (i + 1) & m->mask) {
        series_t *s = &m->slots[i];
        if (!atomic_load_explicit(&s->ready, memory_order_acquire))
            break; /* the end of the probe: add it (below) */
        if (atomic_load_explicit(&s->route, memory_order_relaxed) == route &&
            atomic_load_explicit(&s->status, memory_order_relaxed) == status)
            return s;
    }
    series_t *found = NULL;
    uv_mutex_lock(&m->mu);
    i = slot_hash(route, status) & m->mask;
    for (size_t probes = 0; probes <= m->mask; probes++, i = (i + 1) & m->mask) {
        series_t *s = &m->slots[i];
        if (atomic_load_explicit(&s->ready, memory_order_relaxed)) {
            if (atomic_load_explicit(&s->route, memory_order_relaxed) == route &&
                atomic_load_explicit(&s->status, memory_order_relaxed) == status) {
                found = s; /* another thread added it meanwhile */
                break;
            }
            continue;
        }
        if (m->nseries >= m->max_series || (s->label = route_label(route)) == NULL)
            break;
        atomic_store_explicit(&s->route, route, memory_order_relaxed);
        atomic_store_explicit(&s->status, status, memory_order_relaxed);
        atomic_store_explicit(&s->ready, true, memory_order_release);
        m->nseries++;
        found = s;
        break;
    }
    uv_mutex_unlock(&m->mu);
    if (found == NULL)
        atomic_fetch_add_explicit(&m->dropped, 1, memory_order_relaxed);
    return found;
}

static void metrics_after(sq_req_t *req, sq_res_t *res, int status, void *data)
{
    metrics_t *m = data;
    const sq__exch_t *x = req;
    series_t *s = series_get(m, x->match.route, status);
    if (s == NULL)
        return;
    uint64_t ns = uv_hrtime() - x->start_ns;
    unsigned b = 0;
    while (b < m->nb && ns > m->bounds_ns[b])
        b++;
    atomic_fetch_add_explicit(&s->count, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->sum_ns, ns, memory_order_relaxed);
    if (b < m->nb)
        atomic_fetch_add_explicit(&s->buckets[b], 1, memory_order_relaxed);
}

/* ---- the scrape ---- */

static void head(FILE *f, const char *name, const char *type, const char *help)
{
    fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void put_series(FILE *f, const metrics_t *m)
{
    head(f, "squall_http_requests_total", "counter", "Responses by route pattern and status.");
    for (size_t i = 0; i <= m->mask; i++) {
        const series_t *s = &m->slots[i];
        if (!atomic_load_explicit(&s->ready, memory_order_acquire))
            continue;
        fprintf(f, "squall_http_requests_total{route=\"%s\",status=\"%d\"} %llu\n", s->label,
                atomic_load_explicit(&s->status, memory_order_relaxed),
                (unsigned long long)atomic_load_explicit(&s->count, memory_order_relaxed));
    }
    head(f, "squall_http_request_duration_seconds", "histogram",
         "Time from a request's head to its response's head.");
    for (size_t i = 0; i <= m->mask; i++) {
        const series_t *s = &m->slots[i];
        if (!atomic_load_explicit(&s->ready, memory_order_acquire))
            continue;
        int st = atomic_load_explicit(&s->status, memory_order_relaxed);
        /* read the buckets first: a response counted meanwhile makes count and +Inf
         * larger, never smaller than the last bucket */
        uint64_t cum = 0;
        for (unsigned b = 0; b < m->nb; b++) {
            cum += atomic_load_explicit(&s->buckets[b], memory_order_relaxed);
            fprintf(f,
                    "squall_http_request_duration_seconds_bucket{route=\"%s\",status=\"%d\","
                    "le=\"%s\"} %llu\n",
                    s->label, st, m->le[b], (unsigned long long)cum);
        }
        uint64_t sum = atomic_load_explicit(&s->sum_ns, memory_order_relaxed);
        uint64_t count = atomic_load_explicit(&s->count, memory_order_relaxed);
        if (count < cum)
            count = cum;
        fprintf(f,
                "squall_http_request_duration_seconds_bucket{route=\"%s\",status=\"%d\","
                "le=\"+Inf\"} %llu\n",
                s->label, st, (unsigned long long)count);
        fprintf(f, "squall_http_request_duration_seconds_sum{route=\"%s\",status=\"%d\"} %.9f\n",
                s->label, st, (double)sum / 1e9);
        fprintf(f, "squall_http_request_duration_seconds_count{route=\"%s\",status=\"%d\"} %llu\n",
                s->label, st, (unsigned long long)count);
    }
    head(f, "squall_metrics_series_dropped_total", "counter",
         "Responses not counted: their (route, status) pair came past max_series.");
    fprintf(f, "squall_metrics_series_dropped_total %llu\n",
            (unsigned long long)atomic_load_explicit(&m->dropped, memory_order_relaxed));
}

static void put_gauge(FILE *f, const char *name, const char *type, const char *help,
                      unsigned long long v)
{
    head(f, name, type, help);
    fprintf(f, "%s %llu\n", name, v);
}

static void put_server(FILE *f, const sq_server_t *srv)
{
    sq_server_stats_t st;
    sq_server_stats(srv, &st);
    put_gauge(f, "squall_connections_open", "gauge", "Connections open now.",
              st.connections_open);
    put_gauge(f, "squall_websockets_open", "gauge", "WebSocket connections open now.",
              st.websockets_open);
    put_gauge(f, "squall_connections_total", "counter", "Connections accepted.",
              st.connections_total);
    put_gauge(f, "squall_received_bytes_total", "counter", "Bytes read from clients.",
              st.bytes_read);
    put_gauge(f, "squall_sent_bytes_total", "counter", "Bytes handed to sockets for sending.",
              st.bytes_written);
    sq_work_pool_stats_t ps = {0};
    if (sq__hs(srv)->pool != NULL)
        sq_work_pool_stats(sq__hs(srv)->pool, &ps);
    put_gauge(f, "squall_work_queued_jobs", "gauge",
              "Blocking jobs waiting for a thread of the pool.", ps.queued);
    put_gauge(f, "squall_work_running_jobs", "gauge", "Blocking jobs on the pool's threads.",
              ps.in_flight);
    sq_watchdog_t *wd = sq_server_watchdog(srv);
    if (wd != NULL) {
        sq_watchdog_stats_t ws;
        sq_watchdog_stats(wd, &ws);
        head(f, "squall_loop_lag_seconds", "gauge",
             "How late the loop's lag probe fired (the server's watchdog).");
        fprintf(f, "squall_loop_lag_seconds{stat=\"max\"} %.6f\n", (double)ws.lag_max_us / 1e6);
        fprintf(f, "squall_loop_lag_seconds{stat=\"mean\"} %.6f\n",
                (double)ws.lag_mean_us / 1e6);
        fprintf(f, "squall_loop_lag_seconds{stat=\"p99\"} %.6f\n", (double)ws.lag_p99_us / 1e6);
    }
}

static void put_process(FILE *f, const metrics_t *m)
{
    long pages = 0;
    FILE *sm = fopen("/proc/self/statm", "r");
    if (sm != NULL) {
        long size;
        if (fscanf(sm, "%ld %ld", &size, &pages) != 2)
            pages = 0;
        fclose(sm);
    }
    put_gauge(f, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.",
              (unsigned long long)pages * (unsigned long long)sysconf(_SC_PAGESIZE));
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_stime.tv_sec +
                 ((double)ru.ru_utime.tv_usec + (double)ru.ru_stime.tv_usec) / 1e6;
    head(f, "process_cpu_seconds_total", "counter", "User and system CPU time in seconds.");
    fprintf(f, "process_cpu_seconds_total %.6f\n", cpu);
    put_gauge(f, "process_start_time_seconds", "gauge",
              "Start time of the metrics, in seconds since the Unix epoch.",
              (unsigned long long)m->started);
}

static void free_text(void *p, void *data)
{
    free(p);
}

static void metrics_get(sq_req_t *req, sq_res_t *res, void *data)
{
    metrics_t *m = data;
    char *text = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&text, &n);
    if (f == NULL) {
        sq_res_send_error(res, 500, NULL);
        return;
    }
    put_series(f, m);
    put_server(f, req->srv);
    if (m->process)
        put_process(f, m);
    if (fclose(f) != 0 || text == NULL) {
        free(text);
        sq_res_send_error(res, 500, NULL);
        return;
    }
    sq_res_send_ref(res, 200, "text/plain; version=0.0.4; charset=utf-8", text, n, free_text,
                    NULL);
}

static const sq_handler_t metrics_handler = {.get = metrics_get};

/* ---- set-up ---- */

static void metrics_free(void *p)
{
    metrics_t *m = p;
    for (size_t i = 0; i <= m->mask; i++)
        free(m->slots[i].label);
    free(m->slots);
    uv_mutex_destroy(&m->mu);
    free(m);
}

int sq_app_metrics(sq_app_t *app, const char *path, const sq_metrics_opts_t *opts)
{
    sq_metrics_opts_t o = metrics_defaults;
    if (app == NULL || path == NULL)
        return UV_EINVAL;
    if (opts != NULL) {
        int rc = SQ__OPTS_IN(&o, opts);
        if (rc != 0)
            return rc;
    }
    const double *bounds = o.buckets ? o.buckets : default_bounds;
    unsigned nb = o.buckets ? o.nbuckets : SQ__ARRAY_SIZE(default_bounds);
    if (nb == 0 || nb > SQ_METRICS_MAX_BUCKETS || o.max_series == 0)
        return UV_EINVAL;
    for (unsigned i = 0; i < nb; i++)
        if (!(bounds[i] > 0) || (i > 0 && !(bounds[i] > bounds[i - 1])) || bounds[i] > 1e9)
            return UV_EINVAL;
    metrics_t *m = calloc(1, sizeof(*m));
    if (m == NULL)
        return UV_ENOMEM;
    m->nb = nb;
    for (unsigned i = 0; i < nb; i++) {
        m->bounds[i] = bounds[i];
        m->bounds_ns[i] = (uint64_t)(bounds[i] * 1e9 + 0.5);
        snprintf(m->le[i], sizeof(m->le[i]), "%.17g", bounds[i]);
        /* the shortest form that reads back as the same double: 0.1, not 0.10000000000000001;
         * at least the integer part's digits, so 10 is "10" and not "1e+01" (the form
         * Prometheus's clients write; test: metrics/bucket_bounds_are_written_as_plain_decimals) */
        int digits = 1;
        for (double v = bounds[i]; v >= 10 && digits < 17; v /= 10)
            digits++;
        for (int prec = digits; prec <= 17; prec++) {
            char t[24];
            snprintf(t, sizeof(t), "%.*g", prec, bounds[i]);
            if (strtod(t, NULL) == bounds[i]) {
                memcpy(m->le[i], t, sizeof(t));
                break;
            }
        }
    }
    m->max_series = o.max_series;
    m->process = o.process != 0;
    m->started = time(NULL);
    size_t cap = 16;
    while (cap < (size_t)o.max_series * 2)
        cap *= 2;
    m->mask = cap - 1;
    if ((m->slots = calloc(cap, sizeof(*m->slots))) == NULL) {
        free(m);
        return UV_ENOMEM;
    }
    if (uv_mutex_init(&m->mu) != 0) {
        free(m->slots);
        free(m);
        return UV_ENOMEM;
    }
    int rc = sq__app_keep(app, m, metrics_free);
    if (rc != 0)
        return rc; /* sq__app_keep freed it */
    rc = sq_app_route(app, path, &metrics_handler, m);
    if (rc != 0)
        return rc;
    return sq_app_after(app, metrics_after, m);
}
