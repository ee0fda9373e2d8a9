/* The access log (include/squall/access_log.h, lib/http/access_log.c): a line per
 * response in each format, escaping, reopening after a rename (by call and by SIGHUP), a
 * writer that cannot keep up dropping and counting lines while the loop keeps answering,
 * and hello's --access-log driven by curl. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <regex.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <squall.h>

#include "support/harness.h"
#include "support/hello.h"

static void ok_get(sq_req_t *req, sq_res_t *res, void *data)
{
    sq_res_send(res, 200, "text/plain", "hello", 5);
}
static void stream_get(sq_req_t *req, sq_res_t *res, void *data)
{
    if (sq_res_start(res, 200, "text/plain") == 0)
        sq_res_write(res, "abc", 3, NULL, NULL);
    sq_res_end(res);
}
static const sq_handler_t ok_h = {.get = ok_get};
static const sq_handler_t stream_h = {.get = stream_get};

static sq_app_t *make_app(const sq_access_log_opts_t *o, sq_access_log_t **log)
{
    sq_app_t *app;
    cr_assert_eq(sq_app_create(&app), 0);
    sq_app_route(app, "/ok", &ok_h, NULL);
    sq_app_route(app, "/stream", &stream_h, NULL);
    cr_assert_eq(sq_app_access_log(app, o, log), 0);
    return app;
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return strdup("");
    char *s = NULL;
    size_t n = 0;
    FILE *m = open_memstream(&s, &n);
    char buf[4096];
    size_t r;
    while ((r = fread(buf, 1, sizeof(buf), f)) > 0)
        fwrite(buf, 1, r, m);
    fclose(f);
    fclose(m);
    return s;
}

/* Waits until `path` holds at least `want` lines; returns its text. */
static char *wait_lines(const char *path, int want, int timeout_ms)
{
    uint64_t end = th_now_ms() + (uint64_t)timeout_ms;
    for (;;) {
        char *s = slurp(path);
        if (th_count_lines(s) >= want || th_now_ms() > end)
            return s;
        free(s);
        th_sleep_ms(10);
    }
}

static void request(int port, const char *raw, int want_status)
{
    th_res_t r;
    cr_assert_eq(th_request(port, raw, &r), 0, "%s", raw);
    cr_expect_eq(r.status, want_status, "%s", raw);
    th_res_free(&r);
}

static void tmp_path(char *buf, size_t len, const char *what)
{
    snprintf(buf, len, "/tmp/sq-alog-%s-%d", what, (int)getpid());
    unlink(buf);
}

Test(access_log, combined_lines_for_every_response_with_quotes_escaped, .timeout = 30)
{
    char path[128];
    tmp_path(path, sizeof(path), "combined");
    sq_access_log_opts_t o;
    sq_access_log_opts_init(&o);
    o.path = path;
    o.flush_ms = 20;
    sq_access_log_t *log;
    sq_app_t *app = make_app(&o, &log);
    th_server_t *ts = th_server_start(app, NULL);
    int port = th_server_port(ts);
    request(port,
            "GET /ok?x=1 HTTP/1.1\r\nHost: t\r\nReferer: http://r.example/a\"b\r\n"
            "User-Agent: curl/8 \"quoted\" \\ a\tb \xe9\r\n\r\n",
            200);
    request(port, "HEAD /ok HTTP/1.1\r\nHost: t\r\n\r\n", 200);
    request(port, "GET /missing HTTP/1.0\r\n\r\n", 404);
    request(port, "GET /stream HTTP/1.1\r\nHost: t\r\n\r\n", 200);
    char *text = wait_lines(path, 4, 5000);
    th_server_stop(ts, 1000);
    sq_access_log_stats_t st;
    sq_access_log_stats(log, &st);
    cr_expect_eq(st.lines, 4);
    cr_expect_eq(st.dropped, 0);
    sq_app_destroy(app);

    regex_t re;
    cr_assert_eq(regcomp(&re,
                         "^127\\.0\\.0\\.1 - - \\[[0-9]{2}/[A-Z][a-z]{2}/[0-9]{4}:[0-9]{2}:[0-9]{2}:"
                         "[0-9]{2} \\+0000\\] \"([^\"\\\\]|\\\\.)*\" [0-9]{3} ([0-9]+|-) "
                         "\"([^\"\\\\]|\\\\.)*\" \"([^\"\\\\]|\\\\.)*\"$",
                         REG_EXTENDED | REG_NOSUB),
                 0);
    static const char *const want[] = {
        "\"GET /ok?x=1 HTTP/1.1\" 200 5 \"http://r.example/a\\\"b\" "
        "\"curl/8 \\\"quoted\\\" \\\\ a\\x09b \\xE9\"",
        "\"HEAD /ok HTTP/1.1\" 200 0 \"-\" \"-\"",
        "\"GET /missing HTTP/1.0\" 404 ",
        "\"GET /stream HTTP/1.1\" 200 - \"-\" \"-\"",
    };
    char *save, *line = strtok_r(text, "\n", &save);
    for (size_t i = 0; i < 4; i++, line = strtok_r(NULL, "\n", &save)) {
        cr_assert_not_null(line, "line %zu missing", i);
        cr_expect_eq(regexec(&re, line, 0, NULL, 0), 0, "not combined: %s", line);
        cr_expect_not_null(strstr(line, want[i]), "line %zu: %s\nwant: %s", i, line, want[i]);
    }
    regfree(&re);
    free(text);
    unlink(path);
}

Test(access_log, json_lines_carry_the_id_and_the_duration, .timeout = 30)
{
    char path[128];
    tmp_path(path, sizeof(path), "json");
    sq_access_log_opts_t o;
    sq_access_log_opts_init(&o);
    o.path = path;
    o.format = SQ_ACCESS_LOG_JSON;
    o.flush_ms = 20;
    sq_app_t *app = make_app(&o, NULL);
    th_server_t *ts = th_server_start(app, NULL);
    int port = th_server_port(ts);
    request(port, "GET /ok HTTP/1.1\r\nHost: t\r\nUser-Agent: caf\xc3\xa9 \xff\"\r\n\r\n", 200);
    request(port, "GET /nowhere HTTP/1.1\r\nHost: t\r\n\r\n", 404);
    char *text = wait_lines(path, 2, 5000);
    th_server_stop(ts, 1000);
    sq_app_destroy(app);
    char *save, *line = strtok_r(text, "\n", &save);
    uint64_t ids[2] = {0, 0};
    for (int i = 0; i < 2; i++, line = strtok_r(NULL, "\n", &save)) {
        cr_assert_not_null(line);
        json_error_t err;
        json_t *j = json_loads(line, 0, &err);
        cr_assert_not_null(j, "not JSON (%s): %s", err.text, line);
        cr_expect_str_eq(json_string_value(json_object_get(j, "method")), "GET");
        cr_expect_str_eq(json_string_value(json_object_get(j, "remote")), "127.0.0.1");
        cr_expect_str_eq(json_string_value(json_object_get(j, "proto")), "HTTP/1.1");
        cr_expect(json_is_real(json_object_get(j, "duration")));
        cr_expect_geq(json_real_value(json_object_get(j, "duration")), 0.0);
        ids[i] = (uint64_t)json_integer_value(json_object_get(j, "id"));
        const char *t = json_string_value(json_object_get(j, "time"));
        cr_expect(t != NULL && strlen(t) == 24 && t[10] == 'T' && t[23] == 'Z', "%s", t);
        if (i == 0) {
            cr_expect_eq(json_integer_value(json_object_get(j, "status")), 200);
            cr_expect_eq(json_integer_value(json_object_get(j, "bytes")), 5);
            /* valid UTF-8 kept, a stray byte as its code point, the quote escaped */
            cr_expect_str_eq(json_string_value(json_object_get(j, "user_agent")),
                             "caf\xc3\xa9 \xc3\xbf\"");
            cr_expect(json_is_null(json_object_get(j, "referer")));
        } else {
            cr_expect_eq(json_integer_value(json_object_get(j, "status")), 404);
            cr_expect_str_eq(json_string_value(json_object_get(j, "target")), "/nowhere");
        }
        json_decref(j);
    }
    cr_expect(ids[0] != 0 && ids[1] != 0 && ids[0] != ids[1]);
    free(text);
    unlink(path);
}

/* The host field over IPv6 and a Unix socket (the TCP peer is formatted by the log
 * itself: tests/test_access_log.c's 127.0.0.1 lines cover IPv4). */
Test(access_log, the_host_is_the_peers_address_over_ipv6_and_unix_for_a_unix_socket,
     .timeout = 30)
{
    char path[128], sock[128];
    tmp_path(path, sizeof(path), "peers");
    tmp_path(sock, sizeof(sock), "sock");
    sq_access_log_opts_t o;
    sq_access_log_opts_init(&o);
    o.path = path;
    o.flush_ms = 20;
    o.format = SQ_ACCESS_LOG_COMMON;
    sq_app_t *app = make_app(&o, NULL);
    th_server_cfg_t cfg = {.app = app, .host = "::1"};
    th_server_t *ts = th_server_start_cfg(&cfg);
    th_conn_t c;
    bool v6 = th_conn_open_host(&c, "::1", th_server_port(ts)) == 0;
    if (v6) {
        th_conn_sends(&c, "GET /ok?v6 HTTP/1.1\r\nHost: t\r\n\r\n");
        th_res_t r;
        cr_expect_eq(th_conn_read_res(&c, &r, 5000, false), 0);
        th_res_free(&r);
        th_conn_close(&c);
    }
    th_server_stop(ts, 1000);
    th_server_cfg_t ucfg = {.app = app, .unix_path = sock};
    ts = th_server_start_cfg(&ucfg);
    cr_assert_eq(th_conn_open_unix(&c, sock), 0);
    th_conn_sends(&c, "GET /ok?unix HTTP/1.1\r\nHost: t\r\n\r\n");
    th_res_t r;
    cr_expect_eq(th_conn_read_res(&c, &r, 5000, false), 0);
    th_res_free(&r);
    th_conn_close(&c);
    char *s = wait_lines(path, v6 ? 2 : 1, 5000);
    th_server_stop(ts, 1000);
    sq_app_destroy(app);
    unlink(sock);
    if (v6)
        cr_expect_not_null(strstr(s, "::1 - - ["), "%s", s);
    cr_expect_not_null(strstr(s, "unix - - ["), "%s", s);
    free(s);
    unlink(path);
}

static void wait_reopens(sq_access_log_t *log, uint64_t want)
{
    uint64_t end = th_now_ms() + 5000;
    sq_access_log_stats_t st;
    do {
        sq_access_log_stats(log, &st);
        if (st.reopens >= want)
            return;
        th_sleep_ms(5);
    } while (th_now_ms() < end);
    cr_assert_fail("reopens %llu, want %llu", (unsigned long long)st.reopens,
                   (unsigned long long)want);
}

Test(access_log, reopen_after_a_rename_by_call_and_by_sighup, .timeout = 30)
{
    char path[128], old1[160], old2[160];
    tmp_path(path, sizeof(path), "rot");
    snprintf(old1, sizeof(old1), "%s.1", path);
    snprintf(old2, sizeof(old2), "%s.2", path);
    sq_access_log_opts_t o;
    sq_access_log_opts_init(&o);
    o.path = path;
    o.flush_ms = 20;
    o.format = SQ_ACCESS_LOG_COMMON;
    o.reopen_on_sighup = 1;
    sq_access_log_t *log;
    sq_app_t *app = make_app(&o, &log);
    th_server_t *ts = th_server_start(app, NULL);
    int port = th_server_port(ts);

    request(port, "GET /ok?n=1 HTTP/1.1\r\nHost: t\r\n\r\n", 200);
    free(wait_lines(path, 1, 5000));
    cr_assert_eq(rename(path, old1), 0); /* what logrotate does, then it asks for a reopen */
    cr_assert_eq(sq_access_log_reopen(log), 0);
    wait_reopens(log, 1);
    request(port, "GET /ok?n=2 HTTP/1.1\r\nHost: t\r\n\r\n", 200);
    char *s = wait_lines(path, 1, 5000);
    cr_expect_not_null(strstr(s, "/ok?n=2"), "%s", s);
    free(s);

    cr_assert_eq(rename(path, old2), 0);
    cr_assert_eq(kill(getpid(), SIGHUP), 0);
    wait_reopens(log, 2);
    request(port, "GET /ok?n=3 HTTP/1.1\r\nHost: t\r\n\r\n", 200);
    s = wait_lines(path, 1, 5000);
    cr_expect_not_null(strstr(s, "/ok?n=3"), "%s", s);
    cr_expect_eq(th_count_lines(s), 1);
    free(s);
    th_server_stop(ts, 1000);
    sq_app_destroy(app);

    s = slurp(old1);
    cr_expect(th_count_lines(s) == 1 && strstr(s, "/ok?n=1") != NULL, "%s", s);
    /* common format: no referer, no user agent */
    cr_expect(strstr(s, "200 5\n") != NULL, "%s", s);
    free(s);
    s = slurp(old2);
    cr_expect(th_count_lines(s) == 1 && strstr(s, "/ok?n=2") != NULL, "%s", s);
    free(s);
    unlink(path);
    unlink(old1);
    unlink(old2);
}

/* ---- a writer that cannot keep up ---- */

typedef struct {
    int fd;
    size_t lines;
} drain_t;

static void *drain(void *arg)
{
    drain_t *d = arg;
    char buf[8192];
    ssize_t n;
    while ((n = read(d->fd, buf, sizeof(buf))) > 0)
        for (ssize_t i = 0; i < n; i++)
            d->lines += buf[i] == '\n';
    return NULL;
}

/* The log goes to a pipe nobody reads: the writer thread blocks in write(2), the buffer
 * fills, lines are dropped and counted, and every request is still answered. */
Test(access_log, a_writer_that_cannot_keep_up_drops_and_counts_lines_and_the_loop_goes_on,
     .timeout = 60)
{
    int p[2];
    cr_assert_eq(pipe(p), 0);
    char path[64];
    snprintf(path, sizeof(path), "/proc/self/fd/%d", p[1]);
    sq_access_log_opts_t o;
    sq_access_log_opts_init(&o);
    o.path = path;
    o.buffer_bytes = 4096;
    o.flush_ms = 10;
    sq_access_log_t *log;
    sq_app_t *app = make_app(&o, &log);
    close(p[1]); /* the log has its own descriptor for the pipe */
    th_server_t *ts = th_server_start(app, NULL);
    th_conn_t c;
    cr_assert_eq(th_conn_open(&c, th_server_port(ts)), 0);
    const int n = 3000; /* about 300 KB of lines: more than a pipe and the buffer hold */
    for (int i = 0; i < n; i++) {
        cr_assert_eq(th_conn_sends(&c, "GET /ok HTTP/1.1\r\nHost: t\r\n"
                                       "User-Agent: a-long-enough-user-agent-to-fill-things-up\r\n"
                                       "\r\n"),
                     0);
        th_res_t r;
        cr_assert_eq(th_conn_read_res(&c, &r, 5000, false), 0, "request %d unanswered", i);
        th_res_free(&r);
    }
    th_conn_close(&c);
    sq_access_log_stats_t st;
    sq_access_log_stats(log, &st);
    cr_expect_gt(st.dropped, 0);
    cr_expect_eq(st.lines + st.dropped, (uint64_t)n);
    drain_t d = {.fd = p[0]};
    pthread_t t;
    pthread_create(&t, NULL, drain, &d);
    th_server_stop(ts, 1000);
    sq_access_log_stats(log, &st);
    sq_app_destroy(app); /* writes out what is buffered, then closes its end */
    pthread_join(t, NULL);
    close(p[0]);
    cr_expect_eq(d.lines, st.lines, "read %zu lines, log took %llu", d.lines,
                 (unsigned long long)st.lines);
}

Test(access_log, options_are_checked)
{
    sq_app_t *app;
    cr_assert_eq(sq_app_create(&app), 0);
    sq_access_log_opts_t o;
    sq_access_log_opts_init(&o);
    cr_expect_eq(o.buffer_bytes, 1u << 20);
    cr_expect_eq(o.flush_ms, 200);
    cr_expect_eq(o.format, SQ_ACCESS_LOG_COMBINED);
    o.buffer_bytes = 100;
    cr_expect_eq(sq_app_access_log(app, &o, NULL), UV_EINVAL);
    o.buffer_bytes = 4096;
    o.flush_ms = 0;
    cr_expect_eq(sq_app_access_log(app, &o, NULL), UV_EINVAL);
    o.flush_ms = 10;
    o.format = (sq_access_log_format_t)7;
    cr_expect_eq(sq_app_access_log(app, &o, NULL), UV_EINVAL);
    o.format = SQ_ACCESS_LOG_JSON;
    o.path = "/nonexistent-dir/x/access.log";
    cr_expect_eq(sq_app_access_log(app, &o, NULL), UV_ENOENT);
    cr_expect_eq(sq_access_log_reopen(NULL), UV_EINVAL);
    sq_app_destroy(app);
}

/* ---- hello --access-log, driven by curl ---- */

Test(access_log, hello_writes_a_line_per_curl_request, .timeout = 30)
{
    if (access("/usr/bin/curl", X_OK) != 0)
        cr_skip_test("no /usr/bin/curl");
    char path[128], cmd[512];
    tmp_path(path, sizeof(path), "hello");
    th_hello_t h = th_hello_start("--access-log", path, NULL);
    snprintf(cmd, sizeof(cmd),
             "curl -s -o /dev/null -o /dev/null --http1.1 --max-time 5 -A 'curl-peer' "
             "http://127.0.0.1:%d/plaintext http://127.0.0.1:%d/items/7",
             h.port, h.port);
    cr_assert_eq(system(cmd), 0);
    char *s = wait_lines(path, 2, 5000);
    th_hello_stop(&h);
    cr_expect_not_null(strstr(s, "\"GET /plaintext HTTP/1.1\" 200 12 \"-\" \"curl-peer\""), "%s",
                       s);
    cr_expect_not_null(strstr(s, "\"GET /items/7 HTTP/1.1\" 200 "), "%s", s);
    free(s);
    unlink(path);
}

Test(access_log, hello_with_processes_reopens_on_sighup_to_its_supervisor, .timeout = 30)
{
    /* logrotate's postrotate signals the process it started, the supervisor: it passes
     * SIGHUP on to every copy, each of which reopens its log, and all go on serving */
    char path[128], old[160];
    tmp_path(path, sizeof(path), "procs");
    snprintf(old, sizeof(old), "%s.1", path);
    th_hello_t h = th_hello_start("--processes", "2", "--access-log", path, NULL);
    request(h.port, "GET /plaintext?n=1 HTTP/1.1\r\nHost: t\r\n\r\n", 200);
    free(wait_lines(path, 1, 5000));
    cr_assert_eq(rename(path, old), 0);
    cr_assert_eq(kill(h.pid, SIGHUP), 0);
    char *s = NULL;
    uint64_t end = th_now_ms() + 5000;
    do { /* each copy reopens on its own time: ask until a line lands in the new file */
        th_res_t r;
        if (th_request(h.port, "GET /plaintext?n=2 HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0)
            th_res_free(&r);
        free(s);
        th_sleep_ms(50);
        s = slurp(path);
    } while (th_count_lines(s) == 0 && th_now_ms() < end);
    cr_expect_not_null(strstr(s, "/plaintext?n=2"), "no line in the reopened log: '%s'", s);
    free(s);
    int st;
    cr_assert_eq(waitpid(h.pid, &st, WNOHANG), 0, "the supervisor is gone (status %d)", st);
    th_hello_stop(&h);
    unlink(path);
    unlink(old);
}
