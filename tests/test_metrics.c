/* Prometheus metrics (include/squall/metrics.h, lib/http/metrics.c): scraped with curl and
 * read by a strict parser of the text exposition format 0.0.4 written here — HELP and
 * TYPE before their samples, label values escaped, histograms cumulative with +Inf equal
 * to _count, no series twice — then checked for what was served: requests by route
 * pattern (mount prefixes included, 404 as route=""), open WebSockets, the blocking
 * pool's queue, the series bound, and hello's --metrics. */
#include <criterion/criterion.h>
#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <squall.h>

#include "support/harness.h"
#include "support/hello.h"
#include "support/ws_raw.h"

/* ---- a strict reader of the exposition format ---- */

#define MAX_SAMPLES 4096

typedef struct sample {
    char name[128];
    char labels[512]; /* canonical: name="unescaped value" pairs joined by ',' as read */
    char le[32];      /* a histogram bucket's bound, else "" */
    double value;
} sample_t;

typedef struct scrape {
    sample_t s[MAX_SAMPLES];
    size_t n;
    char families[256][128]; /* names with a TYPE, in order */
    char types[256][16];
    size_t nfam;
} scrape_t;

static bool name_ok(const char *s, size_t n)
{
    if (n == 0 || !(isalpha((unsigned char)s[0]) || s[0] == '_' || s[0] == ':'))
        return false;
    for (size_t i = 1; i < n; i++)
        if (!(isalnum((unsigned char)s[i]) || s[i] == '_' || s[i] == ':'))
            return false;
    return true;
}

/* The family a sample's name belongs to: a histogram's _bucket, _sum, _count go to it. */
static const char *family_of(const scrape_t *sc, const char *name)
{
    for (size_t i = 0; i < sc->nfam; i++) {
        size_t fl = strlen(sc->families[i]);
        if (strcmp(name, sc->families[i]) == 0)
            return sc->types[i];
        if (strcmp(sc->types[i], "histogram") == 0 && strncmp(name, sc->families[i], fl) == 0 &&
            (strcmp(name + fl, "_bucket") == 0 || strcmp(name + fl, "_sum") == 0 ||
             strcmp(name + fl, "_count") == 0))
            return sc->types[i];
    }
    return NULL;
}

static char s_err[4096]; /* why parse refused the text */
#define CHECK(cond, ...)                                                                  \
    do {                                                                                  \
        if (!(cond)) {                                                                    \
            snprintf(s_err, sizeof(s_err), __VA_ARGS__);                                  \
            return false;                                                                 \
        }                                                                                 \
    } while (0)

/* Parses text into sc: false, with s_err saying why, on the first line that breaks the
 * format. */
static bool parse(const char *text, scrape_t *sc)
{
    memset(sc, 0, sizeof(*sc));
    CHECK(strlen(text) > 0 && text[strlen(text) - 1] == '\n', "must end with a newline");
    const char *p = text;
    int lineno = 0;
    while (*p) {
        lineno++;
        const char *eol = strchr(p, '\n');
        CHECK((eol) != NULL, "(eol) != NULL");
        size_t len = (size_t)(eol - p);
        char line[2048];
        CHECK((len) < (sizeof(line)), "(len) < (sizeof(line))");
        memcpy(line, p, len);
        line[len] = '\0';
        p = eol + 1;
        CHECK(len > 0, "line %d: empty", lineno);
        if (line[0] == '#') {
            char kw[8], name[128];
            int off = 0;
            CHECK((sscanf(line, "# %7s %127s %n", kw, name, &off)) == (2), "line %d: %s", lineno, line);
            CHECK(name_ok(name, strlen(name)), "line %d: bad name %s", lineno, name);
            if (strcmp(kw, "TYPE") == 0) {
                const char *t = line + off;
                CHECK(strcmp(t, "counter") == 0 || strcmp(t, "gauge") == 0 ||
                              strcmp(t, "histogram") == 0 || strcmp(t, "summary") == 0 ||
                              strcmp(t, "untyped") == 0, "line %d: type %s", lineno, t);
                for (size_t i = 0; i < sc->nfam; i++)
                    CHECK(strcmp(sc->families[i], name) != 0, "line %d: TYPE twice", lineno);
                for (size_t i = 0; i < sc->n; i++)
                    CHECK(strncmp(sc->s[i].name, name, strlen(name)) != 0, "line %d: TYPE after its samples", lineno);
                snprintf(sc->families[sc->nfam], 128, "%s", name);
                snprintf(sc->types[sc->nfam++], 16, "%s", t);
            } else {
                CHECK(strcmp(kw, "HELP") == 0, "line %d", lineno);
                /* HELP text: only \\ and \n escapes */
                for (const char *h = line + off; *h; h++)
                    if (*h == '\\') {
                        CHECK(h[1] == '\\' || h[1] == 'n', "line %d: bad escape", lineno);
                        h++;
                    }
            }
            continue;
        }
        CHECK((sc->n) < (MAX_SAMPLES), "(sc->n) < (MAX_SAMPLES)");
        sample_t *s = &sc->s[sc->n++];
        const char *q = line;
        size_t nl = strcspn(q, "{ ");
        CHECK(name_ok(q, nl) && nl < sizeof(s->name), "line %d: bad name: %s", lineno, line);
        memcpy(s->name, q, nl);
        q += nl;
        CHECK((family_of(sc, s->name)) != NULL, "line %d: %s has no TYPE before it", lineno, s->name);
        char *lp = s->labels;
        if (*q == '{') {
            q++;
            while (*q != '}') {
                size_t ln = strcspn(q, "=");
                CHECK(name_ok(q, ln), "line %d: bad label name", lineno);
                char lname[64];
                snprintf(lname, sizeof(lname), "%.*s", (int)ln, q);
                q += ln;
                CHECK(q[0] == '=' && q[1] == '"', "line %d: label value unquoted", lineno);
                q += 2;
                char val[256];
                size_t vn = 0;
                while (*q != '"') {
                    CHECK(*q != '\0', "line %d: unterminated label value", lineno);
                    char c = *q++;
                    if (c == '\\') {
                        CHECK(*q == '\\' || *q == '"' || *q == 'n', "line %d: bad escape \\%c",
                                  lineno, *q);
                        c = *q == 'n' ? '\n' : *q;
                        q++;
                    }
                    CHECK(vn < sizeof(val) - 1, "line %d: label value too long", lineno);
                    val[vn++] = c;
                }
                val[vn] = '\0';
                q++;
                if (strcmp(lname, "le") == 0)
                    snprintf(s->le, sizeof(s->le), "%.31s", val);
                else
                    lp += snprintf(lp, sizeof(s->labels) - (size_t)(lp - s->labels), "%s%s=\"%s\"", lp == s->labels ? "" : ",", lname, val);
                CHECK(*q == ',' || *q == '}', "line %d: after a label: %s", lineno, q);
                if (*q == ',')
                    q++;
            }
            q++;
        }
        CHECK((*q) == (' '), "line %d: no blank before the value", lineno);
        q++;
        char *end;
        s->value = strtod(q, &end);
        CHECK(end != q && (*end == '\0' || *end == ' '), "line %d: bad value '%s'", lineno, q);
        if (*end == ' ') { /* a timestamp: an integer */
            for (const char *t = end + 1; *t; t++)
                CHECK(isdigit((unsigned char)*t) || (*t == '-' && t == end + 1), "line %d", lineno);
        }
        /* no series twice */
        for (size_t i = 0; i + 1 < sc->n; i++)
            CHECK(!(strcmp(sc->s[i].name, s->name) == 0 &&
                        strcmp(sc->s[i].labels, s->labels) == 0 &&
                        strcmp(sc->s[i].le, s->le) == 0), "line %d: series twice: %s", lineno, line);
    }
    /* histograms: cumulative, +Inf last and equal to _count */
    for (size_t i = 0; i < sc->n; i++) {
        const sample_t *s = &sc->s[i];
        size_t nl = strlen(s->name);
        if (nl < 6 || strcmp(s->name + nl - 6, "_count") != 0 ||
            strcmp(family_of(sc, s->name), "histogram") != 0)
            continue;
        char bucket[140];
        snprintf(bucket, sizeof(bucket), "%.*s_bucket", (int)(nl - 6), s->name);
        double last = -1, inf = -1, last_le = -INFINITY;
        for (size_t j = 0; j < sc->n; j++) {
            const sample_t *b = &sc->s[j];
            if (strcmp(b->name, bucket) != 0 || strcmp(b->labels, s->labels) != 0)
                continue;
            CHECK(b->le[0] != '\0', "bucket without le");
            double le = strcmp(b->le, "+Inf") == 0 ? INFINITY : strtod(b->le, NULL);
            CHECK((le) > (last_le), "le not increasing: %s", b->le);
            CHECK((b->value) >= (last), "buckets not cumulative at le=%s", b->le);
            last = b->value;
            last_le = le;
            if (isinf(le))
                inf = b->value;
        }
        CHECK((inf) == (s->value), "+Inf (%g) != _count (%g) for %s", inf, s->value, s->labels);
    }
    return true;
}

/* The value of the sample `name` whose labels are exactly `labels`; NAN when absent. */
static double value(const scrape_t *sc, const char *name, const char *labels)
{
    for (size_t i = 0; i < sc->n; i++)
        if (strcmp(sc->s[i].name, name) == 0 && strcmp(sc->s[i].labels, labels) == 0 &&
            sc->s[i].le[0] == '\0')
            return sc->s[i].value;
    return NAN;
}

/* ---- the app ---- */

static void item_get(sq_req_t *req, sq_res_t *res, void *data)
{
    sq_res_send(res, 200, "text/plain", "item", 4);
}
static const sq_handler_t item_h = {.get = item_get};

static atomic_int s_release; /* the blocking jobs wait for it */
static atomic_int s_running;
static void slow_blocking(const sq_breq_t *req, sq_bres_t *res, void *data)
{
    atomic_fetch_add(&s_running, 1);
    while (!atomic_load(&s_release))
        usleep(1000);
    sq_bres_send(res, 200, "text/plain", "done", 4);
}
static const sq_handler_t slow_h = {.blocking.get = slow_blocking};

static void ws_msg(sq_ws_t *ws, int opcode, const char *data, size_t len, void *ud)
{
}
static const sq_ws_handler_t ws_h = {.message = ws_msg};

/* Runs a command; returns its standard output (malloc'd). */
static char *run(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *run(const char *fmt, ...)
{
    char cmd[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    FILE *f = popen(cmd, "r");
    cr_assert_not_null(f);
    char *out = NULL;
    size_t n = 0;
    FILE *m = open_memstream(&out, &n);
    char buf[4096];
    size_t r;
    while ((r = fread(buf, 1, sizeof(buf), f)) > 0)
        fwrite(buf, 1, r, m);
    fclose(m);
    int st = pclose(f);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "`%s` failed", cmd);
    return out;
}

static void scrape_curl(int port, scrape_t *sc, char **text)
{
    if (access("/usr/bin/curl", X_OK) != 0)
        cr_skip_test("no /usr/bin/curl");
    char *t = run("curl -s --http1.1 --max-time 5 -D /tmp/sq-metrics-h.%d "
                  "http://127.0.0.1:%d/metrics",
                  port, port);
    char *h = run("cat /tmp/sq-metrics-h.%d; rm -f /tmp/sq-metrics-h.%d", port, port);
    cr_assert_not_null(strstr(h, "Content-Type: text/plain; version=0.0.4; charset=utf-8"), "%s",
                       h);
    free(h);
    cr_assert(parse(t, sc), "%s\n%s", s_err, t);
    if (text != NULL)
        *text = t;
    else
        free(t);
}

static void get(int port, const char *path, int status)
{
    char raw[256];
    snprintf(raw, sizeof(raw), "GET %s HTTP/1.1\r\nHost: t\r\n\r\n", path);
    th_res_t r;
    cr_assert_eq(th_request(port, raw, &r), 0);
    cr_expect_eq(r.status, status, "%s", path);
    th_res_free(&r);
}

static scrape_t s_sc; /* large: not on the stack */

Test(metrics, requests_are_counted_by_route_pattern_and_status, .timeout = 30)
{
    sq_app_t *app, *api;
    cr_assert_eq(sq_app_create(&app), 0);
    cr_assert_eq(sq_app_create(&api), 0);
    sq_app_route(app, "/items/{id:int}", &item_h, NULL);
    sq_app_route(api, "/things/{name}", &item_h, NULL);
    cr_assert_eq(sq_app_mount(app, "/api/v1", api), 0);
    int qrc = sq_app_route(app, "/odd\"\\name", &item_h, NULL);
    cr_assert_eq(sq_app_metrics(app, "/metrics", NULL), 0);
    th_server_t *ts = th_server_start(app, NULL);
    int port = th_server_port(ts);
    get(port, "/items/1", 200);
    get(port, "/items/2", 200);
    get(port, "/items/x", 422);
    get(port, "/nowhere", 404);
    get(port, "/api/v1/things/a", 200);
    get(port, "/api/v1/things/b", 200);
    if (qrc == 0)
        get(port, "/odd%22%5Cname", 200);
    char *text;
    scrape_curl(port, &s_sc, &text);
    const char *rt = "squall_http_requests_total";
    cr_expect_eq(value(&s_sc, rt, "route=\"/items/{id:int}\",status=\"200\""), 2, "%s", text);
    cr_expect_eq(value(&s_sc, rt, "route=\"/items/{id:int}\",status=\"422\""), 1);
    cr_expect_eq(value(&s_sc, rt, "route=\"\",status=\"404\""), 1);
    cr_expect_eq(value(&s_sc, rt, "route=\"/api/v1/things/{name}\",status=\"200\""), 2);
    if (qrc == 0)
        cr_expect_eq(value(&s_sc, rt, "route=\"/odd\"\\name\",status=\"200\""), 1, "%s", text);
    cr_expect_eq(value(&s_sc, "squall_http_request_duration_seconds_count",
                       "route=\"/items/{id:int}\",status=\"200\""),
                 2);
    cr_expect_geq(value(&s_sc, "squall_connections_open", ""), 1);
    cr_expect_geq(value(&s_sc, "squall_connections_total", ""), 7);
    cr_expect_gt(value(&s_sc, "squall_received_bytes_total", ""), 100);
    cr_expect_gt(value(&s_sc, "squall_sent_bytes_total", ""), 100);
    cr_expect_gt(value(&s_sc, "process_resident_memory_bytes", ""), 1e6);
    cr_expect(!isnan(value(&s_sc, "process_cpu_seconds_total", "")));
    cr_expect_eq(value(&s_sc, "squall_metrics_series_dropped_total", ""), 0);
    /* no loop lag without a watchdog */
    cr_expect(isnan(value(&s_sc, "squall_loop_lag_seconds", "stat=\"max\"")));
    free(text);
    /* the scrape itself is counted, and counts go up */
    scrape_curl(port, &s_sc, NULL);
    cr_expect_eq(value(&s_sc, rt, "route=\"/metrics\",status=\"200\""), 1);
    th_server_stop(ts, 1000);
    sq_app_destroy(app);
}

Test(metrics, websockets_and_the_blocking_pools_queue_are_gauges, .timeout = 30)
{
    sq_app_t *app;
    cr_assert_eq(sq_app_create(&app), 0);
    sq_app_websocket(app, "/echo", &ws_h, NULL, NULL);
    sq_app_route(app, "/slow", &slow_h, NULL);
    cr_assert_eq(sq_app_metrics(app, "/metrics", NULL), 0);
    sq_server_opts_t o;
    sq_server_opts_init(&o);
    o.blocking_max_in_flight = 1;
    o.slow_callback_ms = 1000; /* a watchdog: the loop's lag is reported */
    atomic_store(&s_release, 0);
    atomic_store(&s_running, 0);
    th_server_t *ts = th_server_start(app, &o);
    int port = th_server_port(ts);
    th_conn_t ws1, ws2;
    raw_upgrade(&ws1, port);
    raw_upgrade(&ws2, port);
    th_conn_t slow[3];
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(th_conn_open(&slow[i], port), 0);
        th_conn_sends(&slow[i], "GET /slow HTTP/1.1\r\nHost: t\r\n\r\n");
    }
    cr_assert_eq(th_wait_atomic(&s_running, 1, 5000), 1);
    /* the two others wait in the pool's FIFO: wait until the server took both */
    uint64_t end = th_now_ms() + 5000;
    do {
        scrape_curl(port, &s_sc, NULL);
    } while (value(&s_sc, "squall_work_queued_jobs", "") < 2 && th_now_ms() < end);
    cr_expect_eq(value(&s_sc, "squall_work_queued_jobs", ""), 2);
    cr_expect_eq(value(&s_sc, "squall_work_running_jobs", ""), 1);
    cr_expect_eq(value(&s_sc, "squall_websockets_open", ""), 2);
    cr_expect(!isnan(value(&s_sc, "squall_loop_lag_seconds", "stat=\"p99\"")));
    cr_expect_eq(value(&s_sc, "squall_http_requests_total", "route=\"/echo\",status=\"101\""), 2);
    atomic_store(&s_release, 1);
    for (int i = 0; i < 3; i++) {
        th_expect_res(&slow[i], 200, "done");
        th_conn_close(&slow[i]);
    }
    th_conn_close(&ws1);
    end = th_now_ms() + 5000;
    do {
        scrape_curl(port, &s_sc, NULL);
    } while (value(&s_sc, "squall_websockets_open", "") != 1 && th_now_ms() < end);
    cr_expect_eq(value(&s_sc, "squall_websockets_open", ""), 1);
    cr_expect_eq(value(&s_sc, "squall_work_queued_jobs", ""), 0);
    th_conn_close(&ws2);
    th_server_stop(ts, 1000);
    sq_app_destroy(app);
}

Test(metrics, series_past_the_bound_are_dropped_and_counted, .timeout = 30)
{
    sq_app_t *app;
    cr_assert_eq(sq_app_create(&app), 0);
    sq_app_route(app, "/items/{id:int}", &item_h, NULL);
    sq_metrics_opts_t o;
    sq_metrics_opts_init(&o);
    o.max_series = 2;
    static const double b[] = {0.5, 1};
    o.buckets = b;
    o.nbuckets = 2;
    cr_assert_eq(sq_app_metrics(app, "/metrics", &o), 0);
    th_server_t *ts = th_server_start(app, NULL);
    int port = th_server_port(ts);
    get(port, "/items/1", 200);
    get(port, "/nowhere", 404);
    get(port, "/items/x", 422); /* a third pair */
    char *text;
    scrape_curl(port, &s_sc, &text); /* a fourth, (/metrics, 200), counted once sent */
    cr_expect_eq(value(&s_sc, "squall_metrics_series_dropped_total", ""), 1, "%s", text);
    cr_expect(isnan(value(&s_sc, "squall_http_requests_total",
                          "route=\"/items/{id:int}\",status=\"422\"")));
    cr_expect(strstr(text, "le=\"0.5\"") != NULL && strstr(text, "le=\"1\"") != NULL, "%s", text);
    free(text);
    scrape_curl(port, &s_sc, NULL);
    cr_expect_eq(value(&s_sc, "squall_metrics_series_dropped_total", ""), 2);
    th_server_stop(ts, 1000);
    sq_app_destroy(app);
}

Test(metrics, options_are_checked)
{
    sq_app_t *app;
    cr_assert_eq(sq_app_create(&app), 0);
    sq_metrics_opts_t o;
    sq_metrics_opts_init(&o);
    cr_expect_eq(o.max_series, 1024);
    cr_expect_eq(o.process, 1);
    static const double down[] = {1, 0.5};
    o.buckets = down;
    o.nbuckets = 2;
    cr_expect_eq(sq_app_metrics(app, "/m", &o), UV_EINVAL);
    static const double neg[] = {-1};
    o.buckets = neg;
    o.nbuckets = 1;
    cr_expect_eq(sq_app_metrics(app, "/m", &o), UV_EINVAL);
    o.nbuckets = 0;
    cr_expect_eq(sq_app_metrics(app, "/m", &o), UV_EINVAL);
    sq_metrics_opts_init(&o);
    o.max_series = 0;
    cr_expect_eq(sq_app_metrics(app, "/m", &o), UV_EINVAL);
    cr_expect_eq(sq_app_metrics(app, NULL, NULL), UV_EINVAL);
    cr_expect_eq(sq_app_metrics(NULL, "/m", NULL), UV_EINVAL);
    cr_expect_eq(sq_app_metrics(app, "/m", NULL), 0);
    sq_app_destroy(app);
}

/* ---- the parser refuses what a scraper would ---- */

Test(metrics, the_test_parser_is_strict)
{
    static const char *const bad[] = {
        "x_total 1\n",                                     /* no TYPE before it */
        "# TYPE x counter\nx 1",                          /* no final newline */
        "# TYPE x counter\nx{a=\"b} 1\n",                  /* unterminated value */
        "# TYPE x counter\nx{a=\"\\q\"} 1\n",              /* bad escape */
        "# TYPE x counter\nx{a=b} 1\n",                    /* unquoted */
        "# TYPE x counter\nx one\n",                       /* not a number */
        "# TYPE x counter\nx 1\nx 2\n",                    /* a series twice */
        "# TYPE x counter\n# TYPE x gauge\nx 1\n",          /* TYPE twice */
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_count 1\n",
        "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_count 3\n",
        "# TYPE x counter\n\nx 1\n",                        /* an empty line */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        cr_expect(!parse(bad[i], &s_sc), "accepted: %s", bad[i]);
    cr_expect(parse("# HELP x a \\\\ b\\n\n# TYPE x counter\nx{a=\"q\\\"\\\\\\n\"} 1.5e3 1700000000\n"
                    "# TYPE h histogram\nh_bucket{le=\"0.5\"} 1\nh_bucket{le=\"+Inf\"} 2\n"
                    "h_sum 0.7\nh_count 2\n",
                    &s_sc),
              "%s", s_err);
    cr_expect_eq(value(&s_sc, "x", "a=\"q\"\\\n\""), 1500);
}

Test(metrics, hello_serves_metrics_with_loop_lag_and_process_figures, .timeout = 30)
{
    th_hello_t h = th_hello_start("--metrics", NULL);
    get(h.port, "/plaintext", 200);
    get(h.port, "/items/5", 200);
    scrape_curl(h.port, &s_sc, NULL);
    th_hello_stop(&h);
    cr_expect_eq(value(&s_sc, "squall_http_requests_total",
                       "route=\"/items/{item_id}\",status=\"200\""),
                 1);
    cr_expect_eq(value(&s_sc, "squall_http_requests_total", "route=\"/plaintext\",status=\"200\""),
                 1);
    cr_expect(!isnan(value(&s_sc, "squall_loop_lag_seconds", "stat=\"max\"")));
    cr_expect_gt(value(&s_sc, "process_resident_memory_bytes", ""), 0);
}

Test(metrics, bucket_bounds_are_written_as_plain_decimals, .timeout = 30)
{
    /* le="10", as Prometheus's own clients write it: "1e+01" names another series to a
     * query that sums by le across programs */
    sq_app_t *app;
    cr_assert_eq(sq_app_create(&app), 0);
    sq_app_route(app, "/items/{id:int}", &item_h, NULL);
    sq_metrics_opts_t o;
    sq_metrics_opts_init(&o);
    static const double b[] = {0.0001, 2.5, 10, 250, 60000};
    o.buckets = b;
    o.nbuckets = 5;
    cr_assert_eq(sq_app_metrics(app, "/metrics", &o), 0);
    th_server_t *ts = th_server_start(app, NULL);
    int port = th_server_port(ts);
    get(port, "/items/1", 200);
    char *text;
    scrape_curl(port, &s_sc, &text);
    static const char *const want[] = {"le=\"0.0001\"", "le=\"2.5\"", "le=\"10\"", "le=\"250\"",
                                       "le=\"60000\""};
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
        cr_expect(strstr(text, want[i]) != NULL, "no %s in:\n%s", want[i], text);
    cr_expect(strstr(text, "e+") == NULL, "%s", text);
    free(text);
    th_server_stop(ts, 1000);
    sq_app_destroy(app);
}
