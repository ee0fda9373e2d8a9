/* build/bin/fetch, the lecture's "load one page n times" demo, as a user runs it: against
 * build/bin/hello started by the test, in every style; bad command lines; a URL nobody
 * answers. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "support/app.h"

static const char *const styles[] = {"callbacks", "hell",      "promises", "fsm",
                                     "threads",   "processes", "queue"};
#define NSTYLES (sizeof(styles) / sizeof(styles[0]))

/* The value of `key=` in fetch's summary line (the line starting "fetch: style="), or -1. */
static long summary_field(const char *out, const char *key)
{
    const char *line = strstr(out, "fetch: style=");
    if (line == NULL)
        return -1;
    char pat[32];
    snprintf(pat, sizeof(pat), " %s=", key);
    const char *eol = strchr(line, '\n');
    const char *at = strstr(line, pat);
    if (at == NULL || (eol != NULL && at > eol))
        return -1;
    return strtol(at + strlen(pat), NULL, 10);
}

/* The jobs of each style: one request, or three (A, B from A, C from B). */
static long requests_per_job(const char *style)
{
    return strcmp(style, "hell") == 0 || strcmp(style, "promises") == 0 || strcmp(style, "fsm") == 0
               ? 3
               : 1;
}

Test(fetch, every_style_fetches_hello_50_times_10_at_a_time, .timeout = 120)
{
    th_app_t hello = th_app_start("hello", "--slow-callback-ms", "0", NULL);
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/", hello.port);
    for (size_t i = 0; i < NSTYLES; i++) {
        th_app_run_t r;
        th_app_run(&r, "fetch", 30000, "--style", styles[i], "-n", "50", "-c", "10", url, NULL);
        cr_assert_eq(r.code, 0, "%s: status %d (signal %d): %s", styles[i], r.code, r.signal,
                     r.err);
        cr_assert_eq(summary_field(r.out, "ok"), 50, "%s: %s", styles[i], r.out);
        cr_assert_eq(summary_field(r.out, "errors"), 0, "%s: %s", styles[i], r.out);
        cr_assert_eq(summary_field(r.out, "requests"), 50 * requests_per_job(styles[i]), "%s: %s",
                     styles[i], r.out);
        cr_assert_eq(th_count_lines(r.out), 1, "%s: one line: %s", styles[i], r.out);
        cr_assert_str_eq(r.err, "", "%s: stderr: %s", styles[i], r.err);
    }
    th_app_stop(&hello);
}

Test(fetch, verbose_prints_each_status_then_the_summary, .timeout = 60)
{
    th_app_t hello = th_app_start("hello", "--slow-callback-ms", "0", NULL);
    char url[80];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/items/5?q=x", hello.port);
    th_app_run_t r;
    th_app_run(&r, "fetch", 30000, "--style", "fsm", "-n", "7", "-c", "3", "-v", url, NULL);
    cr_assert_eq(r.code, 0, "status %d: %s", r.code, r.err);
    cr_assert_eq(th_count_lines(r.out), 8, "7 statuses and the summary: %s", r.out);
    cr_assert_eq(summary_field(r.out, "ok"), 7, "%s", r.out);
    th_app_stop(&hello);
}

Test(fetch, an_error_status_fails_the_job_with_exit_1, .timeout = 60)
{
    th_app_t hello = th_app_start("hello", "--slow-callback-ms", "0", NULL);
    char url[80];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/no-such-page", hello.port);
    for (size_t i = 0; i < NSTYLES; i++) {
        th_app_run_t r;
        th_app_run(&r, "fetch", 30000, "--style", styles[i], "-n", "4", "-c", "2", url, NULL);
        cr_assert_eq(r.code, 1, "%s: status %d: %s", styles[i], r.code, r.out);
        cr_assert_eq(summary_field(r.out, "errors"), 4, "%s: %s", styles[i], r.out);
        cr_assert_eq(summary_field(r.out, "ok"), 0, "%s: %s", styles[i], r.out);
        /* a job stops at its first error: A only */
        cr_assert_eq(summary_field(r.out, "requests"), 4, "%s: %s", styles[i], r.out);
        cr_assert_not_null(strstr(r.err, "HTTP 404"), "%s: %s", styles[i], r.err);
        cr_assert_eq(th_count_lines(r.err), 1, "%s: one line: %s", styles[i], r.err);
    }
    th_app_stop(&hello);
}

/* A loopback port nobody listens on: bound, then closed (the next bind of port 0 would
 * not hand it out again at once). */
static int dead_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert_geq(fd, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    socklen_t len = sizeof(sa);
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    close(fd);
    return ntohs(sa.sin_port);
}

Test(fetch, an_unreachable_url_counts_every_request_as_an_error_and_exits_1, .timeout = 120)
{
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/", dead_port());
    for (size_t i = 0; i < NSTYLES; i++) {
        th_app_run_t r;
        th_app_run(&r, "fetch", 30000, "--style", styles[i], "-n", "5", "-c", "2", "--timeout",
                   "5000", url, NULL);
        cr_assert_eq(r.code, 1, "%s: status %d (signal %d): %s", styles[i], r.code, r.signal,
                     r.err);
        cr_assert_eq(summary_field(r.out, "errors"), 5, "%s: %s", styles[i], r.out);
        cr_assert_eq(summary_field(r.out, "ok"), 0, "%s: %s", styles[i], r.out);
        cr_assert_eq(strncmp(r.err, "fetch: 5 of 5 ", 14), 0, "%s: %s", styles[i], r.err);
        cr_assert_not_null(strstr(r.err, "refused"), "%s: %s", styles[i], r.err);
        cr_assert_eq(th_count_lines(r.err), 1, "%s: one line: %s", styles[i], r.err);
    }
}

Test(fetch, a_bad_command_line_says_what_is_wrong_and_exits_2, .timeout = 60)
{
    static const struct {
        const char *args[8];
        const char *reason;
    } cases[] = {
        {{"http://127.0.0.1:1/"}, "fetch: --style is required"},
        {{"--style", "goto", "http://127.0.0.1:1/"}, "fetch: unknown style 'goto'"},
        {{"--style", "fsm"}, "fetch: a URL is required"},
        {{"--style", "fsm", "-n", "0", "http://127.0.0.1:1/"}, "fetch: -n must be 1.."},
        {{"--style", "fsm", "-c", "x", "http://127.0.0.1:1/"}, "fetch: -c must be 1.."},
        {{"--style", "fsm", "-c"}, "fetch: -c needs a value"},
        {{"--style", "fsm", "--timeout", "-1", "http://127.0.0.1:1/"}, "fetch: --timeout must"},
        {{"--style", "fsm", "--nope", "http://127.0.0.1:1/"}, "fetch: unknown option '--nope'"},
        {{"--style", "fsm", "https://127.0.0.1:1/"}, "fetch: not an http://"},
        {{"--style", "fsm", "http://127.0.0.1:1/", "extra"}, "fetch: unexpected argument 'extra'"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        th_app_run_t r;
        th_app_runv(&r, "fetch", 5000, cases[i].args);
        cr_assert_eq(r.code, 2, "%s: status %d (signal %d)", cases[i].reason, r.code, r.signal);
        cr_assert_eq(strncmp(r.err, cases[i].reason, strlen(cases[i].reason)), 0,
                     "want '%s' first, got: %s", cases[i].reason, r.err);
        const char *nl = strchr(r.err, '\n');
        cr_assert_not_null(nl);
        cr_assert_eq(strncmp(nl + 1, "usage: fetch", 12), 0, "then the usage: %s", r.err);
        cr_assert_str_eq(r.out, "", "%s: stdout: %s", cases[i].reason, r.out);
    }
}
