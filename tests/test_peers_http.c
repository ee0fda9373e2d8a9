/* Real clients against the hello app: curl and Debian's Python http.client, as a new user
 * would run them. build/bin/hello is started on a free port (SQUALL_BIN points at build/bin
 * under `make test`), and stopped with SIGTERM, which must end it with status 0
 * (tests/support/hello.h). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "support/harness.h"
#include "support/hello.h"

/* Runs a shell command and returns its standard output (malloc'd). */
static char *run(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *run(const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    FILE *f = popen(cmd, "r");
    cr_assert_not_null(f, "%s", cmd);
    size_t cap = 4096, len = 0;
    char *out = malloc(cap);
    size_t r;
    while ((r = fread(out + len, 1, cap - len - 1, f)) > 0) {
        len += r;
        if (cap - len < 1024)
            out = realloc(out, cap *= 2);
    }
    out[len] = '\0';
    int st = pclose(f);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "`%s` failed (%d): %s", cmd, st, out);
    return out;
}

static void expect_output(const char *want, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void expect_output(const char *want, const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    char *out = run("%s", cmd);
    cr_assert_str_eq(out, want, "`%s`", cmd);
    free(out);
}

/* ---- curl ---- */

#define CURL "curl -s --http1.1 --max-time 5 "

Test(peers, curl_gets_json_items_and_echo, .timeout = 30)
{
    if (access("/usr/bin/curl", X_OK) != 0)
        cr_skip_test("no /usr/bin/curl");
    th_hello_t h = th_hello_start(NULL);
    expect_output("{\"Hello\":\"World\"}", CURL "http://127.0.0.1:%d/", h.port);
    expect_output("Hello, world", CURL "http://127.0.0.1:%d/plaintext", h.port);
    expect_output("{\"item_id\":5,\"q\":\"somequery\"}", CURL "'http://127.0.0.1:%d/items/5?q=somequery'",
                  h.port);
    expect_output("{\"item_id\":5,\"q\":\"a b\"}", CURL "'http://127.0.0.1:%d/items/5?q=a+b'",
                  h.port);
    expect_output("{\"item_id\":-3,\"q\":null}", CURL "http://127.0.0.1:%d/items/-3", h.port);
    /* -d posts application/x-www-form-urlencoded; echo answers with the same type */
    expect_output("a=1&b=2 application/x-www-form-urlencoded 200",
                  CURL "-d 'a=1&b=2' -w ' %%{content_type} %%{http_code}' "
                       "http://127.0.0.1:%d/echo",
                  h.port);
    expect_output("{\"x\":[1,2]} application/json",
                  CURL "-H 'Content-Type: application/json' --data-binary '{\"x\":[1,2]}' "
                       "-w ' %%{content_type}' http://127.0.0.1:%d/echo",
                  h.port);
    /* a byte echo: no Content-Type in, application/octet-stream out; JSON is not checked */
    expect_output("not json application/octet-stream",
                  CURL "-H 'Content-Type:' --data-binary 'not json' "
                       "-w ' %%{content_type}' http://127.0.0.1:%d/echo",
                  h.port);
    expect_output("{oops application/json 200",
                  CURL "-H 'Content-Type: application/json' --data-binary '{oops' "
                       "-w ' %%{content_type} %%{http_code}' http://127.0.0.1:%d/echo",
                  h.port);
    /* 100-continue, as curl does for large bodies */
    expect_output("waited 200",
                  "head -c 70000 /dev/zero | tr '\\0' w | " CURL
                  "-H 'Expect: 100-continue' --data-binary @- -o /dev/null "
                  "-w 'waited %%{http_code}' http://127.0.0.1:%d/echo",
                  h.port);
    /* chunked upload */
    expect_output("chunked-body",
                  "printf chunked-body | " CURL "-H 'Transfer-Encoding: chunked' "
                  "--data-binary @- http://127.0.0.1:%d/echo",
                  h.port);
    th_hello_stop(&h);
}

Test(peers, curl_head_and_error_statuses, .timeout = 30)
{
    if (access("/usr/bin/curl", X_OK) != 0)
        cr_skip_test("no /usr/bin/curl");
    th_hello_t h = th_hello_start(NULL);
    char *head = run(CURL "-I http://127.0.0.1:%d/", h.port);
    cr_assert(strncmp(head, "HTTP/1.1 200 OK\r\n", 17) == 0, "%s", head);
    cr_assert_not_null(strstr(head, "\r\nContent-Length: 17\r\n"), "%s", head);
    cr_assert_not_null(strstr(head, "\r\nContent-Type: application/json\r\n"), "%s", head);
    cr_assert_not_null(strstr(head, "\r\nServer: squall\r\n"), "%s", head);
    cr_assert_not_null(strstr(head, "\r\nDate: "), "%s", head);
    free(head);
    expect_output("{\"detail\":\"Not Found\"} 404",
                  CURL "-w ' %%{http_code}' http://127.0.0.1:%d/nope", h.port);
    expect_output("405 GET, HEAD, PUT\n",
                  CURL "-X DELETE -D - -o /dev/null http://127.0.0.1:%d/items/1 "
                       "| tr -d '\\r' | sed -n 's/^HTTP\\/1.1 \\([0-9]*\\).*/\\1/p; "
                       "s/^Allow: //p' | paste -sd' '",
                  h.port);
    char *detail = run(CURL "http://127.0.0.1:%d/items/foo", h.port);
    cr_assert_not_null(strstr(detail, "\"loc\":[\"path\",\"item_id\"]"), "%s", detail);
    free(detail);
    expect_output("422", CURL "-o /dev/null -w '%%{http_code}' http://127.0.0.1:%d/items/foo",
                  h.port);
    /* two URLs in one curl run share the connection */
    expect_output("1 0 ", CURL "-o /dev/null -o /dev/null -w '%%{num_connects} ' "
                               "http://127.0.0.1:%d/ http://127.0.0.1:%d/plaintext",
                  h.port, h.port);
    th_hello_stop(&h);
}

Test(peers, curl_over_limits_gets_413_and_431, .timeout = 30)
{
    if (access("/usr/bin/curl", X_OK) != 0)
        cr_skip_test("no /usr/bin/curl");
    th_hello_t h = th_hello_start("--max-body=1000", NULL);
    expect_output("413", "head -c 2000 /dev/zero | " CURL "--data-binary @- -o /dev/null "
                         "-w '%%{http_code}' http://127.0.0.1:%d/echo",
                  h.port);
    expect_output("431", CURL "-H \"X-Big: $(head -c 20000 /dev/zero | tr '\\0' b)\" "
                              "-o /dev/null -w '%%{http_code}' http://127.0.0.1:%d/",
                  h.port);
    expect_output("200", CURL "-o /dev/null -w '%%{http_code}' http://127.0.0.1:%d/", h.port);
    th_hello_stop(&h);
}

/* ---- Python's http.client (Debian's /usr/bin/python3) ---- */

static const char py_script[] =
    "import http.client, json, sys\n"
    "port = int(sys.argv[1])\n"
    "c = http.client.HTTPConnection('127.0.0.1', port, timeout=5)\n"
    "out = []\n"
    "def ask(method, url, body=None, headers={}, **kw):\n"
    "    c.request(method, url, body=body, headers=headers, **kw)\n"
    "    r = c.getresponse()\n"
    "    out.append([method, url, r.status, r.getheader('Content-Type'), r.read().decode()])\n"
    "ask('GET', '/')\n"
    "sock = c.sock\n"
    "ask('GET', '/items/5?q=x')\n"
    "ask('GET', '/items/abc')\n"
    "ask('POST', '/echo', b'hello \\x00 bytes', {'Content-Type': 'application/x-test'})\n"
    "ask('POST', '/echo', iter([b'ab', b'cd']), {'Content-Type': 'text/plain'},"
    " encode_chunked=True)\n"
    "ask('HEAD', '/plaintext')\n"
    "ask('GET', '/nope')\n"
    "out.append(['same connection', c.sock is sock])\n"
    "print(json.dumps(out))\n";

Test(peers, python_http_client_reuses_one_connection, .timeout = 30)
{
    if (access("/usr/bin/python3", X_OK) != 0)
        cr_skip_test("no /usr/bin/python3");
    th_hello_t h = th_hello_start(NULL);
    char script[] = "/tmp/squall-peers-XXXXXX";
    int fd = mkstemp(script);
    cr_assert_geq(fd, 0);
    cr_assert_eq(write(fd, py_script, sizeof(py_script) - 1), (ssize_t)sizeof(py_script) - 1);
    close(fd);
    char *out = run("/usr/bin/python3 %s %d", script, h.port);
    unlink(script);
    cr_assert_str_eq(
        out,
        "[[\"GET\", \"/\", 200, \"application/json\", \"{\\\"Hello\\\":\\\"World\\\"}\"], "
        "[\"GET\", \"/items/5?q=x\", 200, \"application/json\", "
        "\"{\\\"item_id\\\":5,\\\"q\\\":\\\"x\\\"}\"], "
        "[\"GET\", \"/items/abc\", 422, \"application/json\", "
        "\"{\\\"detail\\\":[{\\\"type\\\":\\\"int_parsing\\\",\\\"loc\\\":[\\\"path\\\",\\\"item_id\\\"],"
        "\\\"msg\\\":\\\"Input should be a valid integer, unable to parse string as an integer\\\","
        "\\\"input\\\":\\\"abc\\\"}]}\"], "
        "[\"POST\", \"/echo\", 200, \"application/x-test\", \"hello \\u0000 bytes\"], "
        "[\"POST\", \"/echo\", 200, \"text/plain\", \"abcd\"], "
        "[\"HEAD\", \"/plaintext\", 200, \"text/plain\", \"\"], "
        "[\"GET\", \"/nope\", 404, \"application/json\", \"{\\\"detail\\\":\\\"Not Found\\\"}\"], "
        "[\"same connection\", true]]\n");
    free(out);
    th_hello_stop(&h);
}

Test(peers, hello_exits_0_on_sigterm_with_a_request_in_flight, .timeout = 30)
{
    th_hello_t h = th_hello_start(NULL);
    th_conn_t c, idle;
    cr_assert_eq(th_conn_open(&c, h.port), 0);
    cr_assert_eq(th_conn_open(&idle, h.port), 0);
    /* a request whose body is still coming when SIGTERM arrives, behind a whole one in
     * the same write: that one's answer says hello has read the start of the body too */
    cr_assert_eq(th_conn_sends(&c, "GET /plaintext HTTP/1.1\r\nHost: t\r\n\r\n"
                                   "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 6\r\n\r\nab"),
                 0);
    th_res_t r;
    cr_assert_eq(th_conn_read_res(&c, &r, 5000, false), 0);
    cr_assert_str_eq(r.body, "Hello, world");
    th_res_free(&r);
    cr_assert_eq(kill(h.pid, SIGTERM), 0);
    /* the shutdown has begun once the idle connection is closed */
    cr_assert_eq(th_conn_wait_closed(&idle, 5000), 0, "the idle connection was not closed");
    cr_assert_eq(th_conn_sends(&c, "cdef"), 0);
    cr_assert_eq(th_conn_read_res(&c, &r, 5000, false), 0);
    cr_assert_eq(r.status, 200);
    cr_assert_str_eq(r.body, "abcdef");
    cr_assert_str_eq(th_res_header(&r, "Connection"), "close");
    th_res_free(&r);
    cr_assert_eq(th_conn_wait_closed(&c, 5000), 0);
    th_conn_close(&c);
    th_conn_close(&idle);
    int status = th_hello_wait(h.pid, 8000);
    cr_assert_neq(status, -1, "hello did not exit within 8 s of SIGTERM");
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "status %d", status);
}

/* The number of file descriptors process `pid` has open (/proc/PID/fd), or -1. */
static int open_fds(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
    DIR *d = opendir(path);
    if (d == NULL)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

/* Waits until process `pid` has at most `want` descriptors open; returns the last count. */
static int wait_fds(pid_t pid, int want, int timeout_ms)
{
    uint64_t end = th_now_ms() + (uint64_t)timeout_ms;
    int n;
    while ((n = open_fds(pid)) > want && th_now_ms() < end)
        th_sleep_ms(2);
    return n;
}

/* libuv writes with write(2), not send(MSG_NOSIGNAL): a client that closes while its
 * answer is being written raises SIGPIPE, which must not kill the server. */
Test(peers, hello_survives_clients_that_close_during_a_big_answer, .timeout = 30)
{
    th_hello_t h = th_hello_start(NULL);
    int fds0 = open_fds(h.pid); /* listener, loop and the like: no connection */
    cr_assert_gt(fds0, 0, "/proc/%d/fd", (int)h.pid);
    size_t len = 900 * 1024;
    char head[128];
    int hl = snprintf(head, sizeof(head),
                      "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: %zu\r\n\r\n", len);
    char *body = malloc(len);
    cr_assert_not_null(body);
    memset(body, 'x', len);
    for (int i = 0; i < 5; i++) {
        th_conn_t c;
        cr_assert_eq(th_conn_open(&c, h.port), 0, "connection %d: is hello dead?", i);
        cr_assert_eq(th_conn_send(&c, head, (size_t)hl), 0);
        cr_assert_eq(th_conn_send(&c, body, len), 0);
        /* the answer has begun; the client leaves with most of it unread (a reset) */
        cr_assert_gt(th_conn_read_some(&c, 5000), 0, "connection %d: no answer", i);
        th_conn_close(&c);
        /* hello has let the connection go: whatever it wrote to it has been written */
        cr_assert_leq(wait_fds(h.pid, fds0, 5000), fds0, "connection %d: hello holds it", i);
    }
    free(body);
    int status = 0;
    cr_assert_eq(waitpid(h.pid, &status, WNOHANG), 0, "hello died of signal %d",
                 WIFSIGNALED(status) ? WTERMSIG(status) : 0);
    th_res_t r;
    cr_assert_eq(th_request(h.port, "GET /plaintext HTTP/1.1\r\nHost: t\r\n\r\n", &r), 0);
    cr_assert_eq(r.status, 200);
    cr_assert_str_eq(r.body, "Hello, world");
    th_res_free(&r);
    th_hello_stop(&h);
}

/* A numeric flag that is not a whole decimal number in range prints the usage and exits
 * 2, before listening (`timeout` turns a server that started anyway into 124). */
Test(peers, hello_refuses_bad_numeric_flags_with_status_2, .timeout = 60)
{
    static const char *bad[] = {
        "--port=80x",          "--port=-1",          "--port=65536",
        "--port=",             "--workers=abc",      "--workers=0",
        "--workers=-1",        "--max-body=1k",      "--max-body=-5",
        "--max-header=",       "--header-timeout= 5", "--idle-timeout=+5",
        "--slow-callback-ms=99999999999999999999999", "--threadpool=x",
        "--threadpool=0x10",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char cmd[512];
        snprintf(cmd, sizeof(cmd), "timeout 5 %s --port=0 '%s' 2>&1 >/dev/null", th_hello_path(),
                 bad[i]);
        FILE *f = popen(cmd, "r");
        cr_assert_not_null(f);
        char err[512] = "";
        size_t n = fread(err, 1, sizeof(err) - 1, f);
        err[n] = '\0';
        int st = pclose(f);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 2, "%s: status %d", bad[i], st);
        cr_assert_not_null(strstr(err, "usage: hello"), "%s: %s", bad[i], err);
    }
}

/* --workers N: N loops in N threads, each with its own SO_REUSEPORT listener; every
 * connection is answered and SIGTERM still ends the process with 0. */
Test(peers, hello_with_two_workers_answers_every_connection, .timeout = 30)
{
    th_hello_t h = th_hello_start("--workers=2", NULL);
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)h.pid);
    int threads = 0;
    /* worker 0 prints the URL; worker 1 may still be starting */
    for (uint64_t end = th_now_ms() + 5000; threads < 3 && th_now_ms() < end;) {
        FILE *f = fopen(path, "r");
        cr_assert_not_null(f);
        char line[256];
        while (fgets(line, sizeof(line), f) != NULL)
            if (sscanf(line, "Threads: %d", &threads) == 1)
                break;
        fclose(f);
        if (threads < 3)
            th_sleep_ms(20);
    }
    cr_assert_geq(threads, 3, "the watching thread and two workers, got %d", threads);
    for (int i = 0; i < 200; i++) {
        th_res_t r;
        cr_assert_eq(th_request(h.port, "GET /plaintext HTTP/1.1\r\nHost: t\r\n\r\n", &r), 0);
        cr_assert_eq(r.status, 200);
        cr_assert_eq(r.body_len, 12);
        th_res_free(&r);
    }
    th_hello_stop(&h);
}

/* RFC 9110 §6.6.1: every response has a Date in IMF-fixdate, of the current second (it is
 * formatted at most once a second and reused). */
Test(peers, date_header_is_imf_fixdate_of_the_current_second, .timeout = 20)
{
    th_hello_t h = th_hello_start(NULL);
    th_res_t r;
    cr_assert_eq(th_request(h.port, "GET /plaintext HTTP/1.1\r\nHost: t\r\n\r\n", &r), 0);
    const char *date = th_res_header(&r, "Date");
    cr_assert_not_null(date);
    cr_assert_eq(strlen(date), 29, "IMF-fixdate is 29 characters: \"%s\"", date);
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    const char *end = strptime(date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    cr_assert(end != NULL && *end == '\0', "not IMF-fixdate: \"%s\"", date);
    time_t t = timegm(&tm), now = time(NULL);
    cr_assert(t <= now && now - t <= 2, "Date %s is %ld s off", date, (long)(now - t));
    th_res_free(&r);
    th_hello_stop(&h);
}

/* RFC 9110 §9.3.7: OPTIONS * asks about the server as a whole; "*" is for OPTIONS only. */
Test(peers, options_asterisk_lists_the_methods_and_other_methods_get_400, .timeout = 20)
{
    th_hello_t h = th_hello_start(NULL);
    th_res_t r;
    cr_assert_eq(th_request(h.port, "OPTIONS * HTTP/1.1\r\nHost: t\r\n\r\n", &r), 0);
    cr_assert_eq(r.status, 204);
    const char *allow = th_res_header(&r, "Allow");
    cr_assert(allow != NULL && strstr(allow, "OPTIONS") != NULL);
    th_res_free(&r);
    cr_assert_eq(th_request(h.port, "GET * HTTP/1.1\r\nHost: t\r\n\r\n", &r), 0);
    cr_assert_eq(r.status, 400);
    th_res_free(&r);
    th_hello_stop(&h);
}

/* /items' q is JSON: decoded query bytes that are not UTF-8 become U+FFFD, as FastAPI's
 * (Python's unquote) do, instead of a 500 from the JSON encoder. */
Test(peers, items_query_that_is_not_utf8_gets_replacement_characters, .timeout = 30)
{
    th_hello_t h = th_hello_start(NULL);
    static const char *cases[][2] = {
        {"/items/1?q=%C3%28", "{\"item_id\":1,\"q\":\"\xef\xbf\xbd(\"}"},
        {"/items/2?q=%E2%82%AC%FF", "{\"item_id\":2,\"q\":\"\xe2\x82\xac\xef\xbf\xbd\"}"},
        {"/items/3?q=%ED%A0%80", /* a surrogate, and its two continuation bytes */
         "{\"item_id\":3,\"q\":\"\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\"}"},
        {"/items/4?q=ok", "{\"item_id\":4,\"q\":\"ok\"}"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char req[128];
        snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: t\r\n\r\n", cases[i][0]);
        th_res_t r;
        cr_assert_eq(th_request(h.port, req, &r), 0);
        cr_assert_eq(r.status, 200, "%s: %d %s", cases[i][0], r.status, r.body);
        cr_assert_str_eq(r.body, cases[i][1], "%s", cases[i][0]);
        th_res_free(&r);
    }
    th_hello_stop(&h);
}
