/* squall-bench (app/squall-bench.c), run as a user runs it, for about a second each,
 * against hello started by the test: HTTP, pipelined HTTP, two threads, WebSocket echo,
 * a fixed rate, --hold with --pid (HTTP and WebSocket), the --json object parsed with
 * jansson, and the failures: a bad flag (exit 2), a refused port (exit 1), more
 * connections than the descriptor limit (exit 1), each one line on stderr. Counts only:
 * no figure of speed is asserted. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <jansson.h>

#include "support/app.h"

#define RUN_MS 20000

static void url_of(char *buf, size_t len, const char *scheme, int port, const char *path)
{
    snprintf(buf, len, "%s://127.0.0.1:%d%s", scheme, port, path);
}

/* The run's stdout as one JSON object, after checking that it ran well: exit 0, nothing
 * on stderr, one line on stdout. The caller json_decref's it. */
static json_t *parsed(const th_app_run_t *r, const char *what)
{
    cr_assert(!r->timed_out, "%s: still running at the deadline", what);
    cr_assert_eq(r->code, 0, "%s: exit %d, stderr: %s", what, r->code, r->err);
    cr_assert_str_empty(r->err, "%s: stderr: %s", what, r->err);
    cr_assert_eq(th_count_lines(r->out), 1, "%s: stdout is not one line: %s", what, r->out);
    json_error_t jerr;
    json_t *o = json_loads(r->out, 0, &jerr);
    cr_assert_not_null(o, "%s: not JSON (%s): %s", what, jerr.text, r->out);
    cr_assert(json_is_object(o), "%s: not an object: %s", what, r->out);
    return o;
}

static json_int_t int_field(json_t *o, const char *name)
{
    json_t *v = json_object_get(o, name);
    cr_assert(json_is_integer(v), "no integer \"%s\"", name);
    return json_integer_value(v);
}

static double num_field(json_t *o, const char *name)
{
    json_t *v = json_object_get(o, name);
    cr_assert(json_is_number(v), "no number \"%s\"", name);
    return json_number_value(v);
}

/* Every field of a load run, requests > 0, latencies in order, no error of any kind. */
static void check_load(json_t *o, const char *mode, int conns, int pipeline)
{
    json_t *mode_v = json_object_get(o, "mode");
    cr_assert(json_is_string(mode_v));
    cr_assert_str_eq(json_string_value(mode_v), mode);
    cr_assert(json_is_string(json_object_get(o, "url")));
    cr_assert_eq(int_field(o, "connections"), conns);
    cr_assert_geq(int_field(o, "threads"), 1);
    cr_assert_eq(int_field(o, "pipeline"), pipeline);
    cr_assert_gt(num_field(o, "duration_s"), 0.5);
    cr_assert_gt(int_field(o, "requests"), 0);
    cr_assert_gt(num_field(o, "requests_per_s"), 0);
    cr_assert_gt(int_field(o, "bytes_read"), 0);
    json_t *lat = json_object_get(o, "latency_us");
    cr_assert(json_is_object(lat), "no latency_us");
    double p50 = num_field(lat, "p50"), p90 = num_field(lat, "p90"),
           p99 = num_field(lat, "p99"), p999 = num_field(lat, "p99_9"),
           max = num_field(lat, "max");
    num_field(lat, "mean");
    cr_assert(p50 > 0 && p50 <= p90 && p90 <= p99 && p99 <= p999 && p999 <= max,
              "percentiles out of order: %g %g %g %g %g", p50, p90, p99, p999, max);
    json_t *e = json_object_get(o, "errors");
    cr_assert(json_is_object(e), "no errors object");
    static const char *const kinds[] = {"connect", "read", "write", "status", "timeout",
                                        "closed"};
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
        cr_assert_eq(int_field(e, kinds[i]), 0, "errors of kind %s", kinds[i]);
}

Test(bench, http_json)
{
    th_app_t a = th_app_start("hello", NULL);
    char url[128];
    url_of(url, sizeof url, "http", a.port, "/plaintext");
    th_app_run_t r;
    th_app_run(&r, "squall-bench", RUN_MS, url, "-c", "8", "-d", "1s", "--json", NULL);
    th_app_stop(&a);
    json_t *o = parsed(&r, "http");
    check_load(o, "http", 8, 1);
    json_decref(o);
}

Test(bench, http_pipelined_json)
{
    th_app_t a = th_app_start("hello", NULL);
    char url[128];
    url_of(url, sizeof url, "http", a.port, "/plaintext");
    th_app_run_t r;
    th_app_run(&r, "squall-bench", RUN_MS, url, "-c", "4", "-d", "1s", "--pipeline", "16",
               "--json", NULL);
    th_app_stop(&a);
    json_t *o = parsed(&r, "pipelined");
    check_load(o, "http", 4, 16);
    json_decref(o);
}

/* The text report (stdout is not a terminal here: no progress line), two threads. */
Test(bench, http_text_two_threads)
{
    th_app_t a = th_app_start("hello", NULL);
    char url[128];
    url_of(url, sizeof url, "http", a.port, "/plaintext");
    th_app_run_t r;
    th_app_run(&r, "squall-bench", RUN_MS, url, "-c", "6", "-d", "1s", "--threads", "2",
               NULL);
    th_app_stop(&a);
    cr_assert_eq(r.code, 0, "exit %d, stderr: %s", r.code, r.err);
    cr_assert_str_empty(r.err);
    cr_assert_not_null(strstr(r.out, "6 connections, 2 threads"), "%s", r.out);
    cr_assert_not_null(strstr(r.out, "  requests  "), "%s", r.out);
    cr_assert_not_null(strstr(r.out, "p99.9 "), "%s", r.out);
    cr_assert_not_null(strstr(r.out, "connect 0  read 0  write 0  status 0  timeout 0  closed 0"),
                       "%s", r.out);
    cr_assert_null(strchr(r.out, '\r'), "a progress line on a pipe: %s", r.out);
}

Test(bench, websocket_echo_json)
{
    th_app_t a = th_app_start("hello", NULL);
    char url[128];
    url_of(url, sizeof url, "ws", a.port, "/ws/echo");
    th_app_run_t r;
    th_app_run(&r, "squall-bench", RUN_MS, url, "-c", "8", "-d", "1s", "--size", "32",
               "--json", NULL);
    json_t *o = parsed(&r, "ws 32");
    check_load(o, "ws", 8, 1);
    cr_assert_eq(int_field(o, "size"), 32);
    json_decref(o);
    /* A message in several frames' worth of bytes (16 KiB, 16-bit length), as text. */
    th_app_run(&r, "squall-bench", RUN_MS, url, "-c", "2", "-d", "1s", "--size", "16384",
               "--text", "--json", NULL);
    th_app_stop(&a);
    o = parsed(&r, "ws 16k");
    check_load(o, "ws", 2, 1);
    cr_assert_geq(int_field(o, "bytes_read"), 16384);
    json_decref(o);
}

/* --rate: a fixed schedule of 200 messages a second in all. */
Test(bench, websocket_rate_json)
{
    th_app_t a = th_app_start("hello", NULL);
    char url[128];
    url_of(url, sizeof url, "ws", a.port, "/ws/echo");
    th_app_run_t r;
    th_app_run(&r, "squall-bench", RUN_MS, url, "-c", "4", "-d", "1s", "--rate", "200",
               "--json", NULL);
    th_app_stop(&a);
    json_t *o = parsed(&r, "rate");
    check_load(o, "ws", 4, 1);
    cr_assert_eq(num_field(o, "rate"), 200);
    /* The schedule sends no more than the messages due by the end (a closed loop would
     * send thousands): 200 a second over the run, the first at time 0, and a few for the
     * time the loop takes to hear that the run is over. */
    double due = 200 * num_field(o, "duration_s") + 1;
    cr_assert_leq((double)int_field(o, "requests"), due + 20, "%s", r.out);
    json_decref(o);
}

static void check_hold(const char *scheme, const char *path)
{
    th_app_t a = th_app_start("hello", NULL);
    char url[128], pid[32];
    url_of(url, sizeof url, scheme, a.port, path);
    snprintf(pid, sizeof pid, "%d", (int)a.pid);
    th_app_run_t r;
    th_app_run(&r, "squall-bench", RUN_MS, url, "--hold", "200", "--pid", pid, "-d", "1s",
               "--json", NULL);
    th_app_stop(&a);
    json_t *o = parsed(&r, scheme);
    json_t *mode = json_object_get(o, "mode");
    cr_assert(json_is_string(mode));
    cr_assert_str_eq(json_string_value(mode), "hold");
    json_t *h = json_object_get(o, "hold");
    cr_assert(json_is_object(h), "no hold object: %s", r.out);
    cr_assert_eq(int_field(h, "wanted"), 200);
    cr_assert_eq(int_field(h, "opened"), 200);
    cr_assert_eq(int_field(h, "failed"), 0);
    cr_assert_gt(num_field(h, "open_s"), 0);
    cr_assert_gt(num_field(h, "held_s"), 0.5);
    cr_assert_eq(int_field(h, "pid"), a.pid);
    cr_assert_gt(int_field(h, "rss_before_kb"), 0);
    cr_assert_gt(int_field(h, "rss_after_kb"), 0);
    int_field(h, "bytes_per_conn");
    json_t *e = json_object_get(o, "errors");
    cr_assert(json_is_object(e));
    const char *k;
    json_t *v;
    json_object_foreach(e, k, v) cr_assert_eq(json_integer_value(v), 0, "errors of kind %s", k);
    json_decref(o);
}

Test(bench, hold_http_pid_json)
{
    check_hold("http", "/plaintext");
}

Test(bench, hold_websocket_pid_json)
{
    check_hold("ws", "/ws/echo");
}

static void expect_one_line_failure(const th_app_run_t *r, int code, const char *needle)
{
    cr_assert(!r->timed_out);
    cr_assert_eq(r->code, code, "exit %d, want %d; stderr: %s", r->code, code, r->err);
    cr_assert_eq(th_count_lines(r->err), 1, "stderr is not one line: %s", r->err);
    cr_assert_not_null(strstr(r->err, needle), "stderr: %s", r->err);
    cr_assert_str_empty(r->out, "stdout: %s", r->out);
}

Test(bench, bad_flags_exit_2)
{
    th_app_run_t r;
    th_app_run(&r, "squall-bench", 5000, "http://127.0.0.1:1/", "--bogus", NULL);
    expect_one_line_failure(&r, 2, "unknown option --bogus");
    cr_assert_not_null(strstr(r.err, "usage: squall-bench"));
    th_app_run(&r, "squall-bench", 5000, "http://127.0.0.1:1/", "-c", "zero", NULL);
    expect_one_line_failure(&r, 2, "-c wants");
    th_app_run(&r, "squall-bench", 5000, "http://127.0.0.1:1/", "-d", "10 parsecs", NULL);
    expect_one_line_failure(&r, 2, "-d wants");
    th_app_run(&r, "squall-bench", 5000, "https://127.0.0.1:1/", NULL);
    expect_one_line_failure(&r, 2, "http:// or ws://");
    th_app_run(&r, "squall-bench", 5000, "-c", "4", NULL);
    expect_one_line_failure(&r, 2, "no URL");
    th_app_run(&r, "squall-bench", 5000, "http://127.0.0.1:1/", "--pid", "1", NULL);
    expect_one_line_failure(&r, 2, "--pid goes with --hold");
    th_app_run(&r, "squall-bench", 5000, "--help", NULL);
    cr_assert_eq(r.code, 0);
    cr_assert_not_null(strstr(r.out, "usage: squall-bench"));
    cr_assert_not_null(strstr(r.out, "several squall-bench processes"));
}

Test(bench, refused_port_exit_1)
{
    /* A port that was free a moment ago: bound, not listening, closed. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert_geq(fd, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert_eq(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    socklen_t len = sizeof sa;
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    int port = ntohs(sa.sin_port);
    close(fd);
    char url[128];
    url_of(url, sizeof url, "http", port, "/plaintext");
    th_app_run_t r;
    th_app_run(&r, "squall-bench", 10000, url, "-c", "4", "-d", "1s", NULL);
    expect_one_line_failure(&r, 1, "connection refused");
    url_of(url, sizeof url, "ws", port, "/ws/echo");
    th_app_run(&r, "squall-bench", 10000, url, "--hold", "10", "-d", "1s", NULL);
    expect_one_line_failure(&r, 1, "connection refused");
}

/* More connections than the process may open files: one line, exit 1, before any. */
Test(bench, fd_limit_exit_1)
{
    struct rlimit rl = {.rlim_cur = 128, .rlim_max = 128};
    cr_assert_eq(setrlimit(RLIMIT_NOFILE, &rl), 0); /* this test's process only */
    th_app_t a = th_app_start("hello", NULL);
    char url[128];
    url_of(url, sizeof url, "http", a.port, "/plaintext");
    th_app_run_t r;
    th_app_run(&r, "squall-bench", 10000, url, "--hold", "500", "-d", "1s", NULL);
    th_app_stop(&a);
    expect_one_line_failure(&r, 1, "run several squall-bench processes");
}
