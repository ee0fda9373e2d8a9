/* bench-floor (bench/floor.c), the floor scripts/bench-peers.sh measures squall against:
 * it must do the work it claims, or its figures mean nothing. HTTP: every request head
 * answered, pipelined (300 in one write) or cut anywhere; WebSocket: the handshake (with a
 * frame in the same write, a header name in lower case; none without a key), every length
 * form echoed byte for byte, 200 frames in one write, a frame sent a byte at a time, a
 * ping answered by a pong, a close by a close, a client gone mid-frame; squall-bench runs
 * clean against both; at its descriptor limit it stops accepting, idle, until a connection
 * closes; and its start-up failures (a taken port, bad arguments) are one line on stderr
 * and a non-zero exit. Then the verdicts bench-peers-report.py gives its targets, on
 * made-up runs (tests/peers/bench_report_check.py). */
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "support/app.h"
#include "support/harness.h"
#include "support/ws_raw.h"

/* squall-bench, as bench-peers runs it, for a second: no error of any kind. */
static void bench_runs_clean(const char *scheme, int port, const char *path, const char *flag,
                             const char *value)
{
    char url[96];
    snprintf(url, sizeof(url), "%s://127.0.0.1:%d%s", scheme, port, path);
    th_app_run_t r;
    th_app_run(&r, "squall-bench", 20000, url, "-c", "8", "-d", "1s", flag, value, NULL);
    cr_assert_eq(r.code, 0, "%s: exit %d: %s", url, r.code, r.err);
    cr_assert_not_null(strstr(r.out, "connect 0  read 0  write 0  status 0  timeout 0  closed 0"),
                       "%s: %s", url, r.out);
}

Test(floor, http_answers_every_head_pipelined_or_cut)
{
    th_app_t a = th_app_start("bench-floor", "http", NULL);
    cr_assert_not_null(strstr(a.line, "(http)"), "%s", a.line);
    th_conn_t c;
    cr_assert_eq(th_conn_open(&c, a.port), 0);
    static const char reqs[] = "GET /a HTTP/1.1\r\nHost: t\r\n\r\n"
                               "GET /b HTTP/1.1\r\nHost: t\r\n\r\n"
                               "GET /c HTTP/1.1\r\nHost: t\r\n\r\n";
    /* One byte a write: every place "\r\n\r\n" can be cut. */
    cr_assert_eq(th_conn_send_split(&c, reqs, sizeof(reqs) - 1, 1, 0), 0);
    for (int i = 0; i < 3; i++) {
        th_res_t r;
        cr_assert_eq(th_conn_read_res(&c, &r, 5000, false), 0, "answer %d", i);
        cr_assert_eq(r.status, 200);
        cr_assert_str_eq(r.body, "Hello, world");
        cr_assert_not_null(th_res_header(&r, "Date"), "RFC 9110 §6.6.1");
        th_res_free(&r);
    }
    /* "\r\r\n\r\n" ends a head too: a mismatch on '\r' restarts the match there. */
    cr_assert_eq(th_conn_sends(&c, "GET /d HTTP/1.1\r\nHost: t\r\r\n\r\n"), 0);
    th_expect_res(&c, 200, "Hello, world");
    /* 300 heads in one write: more than one sendmsg's worth of answers (128). */
    static const char one[] = "GET /p HTTP/1.1\r\nHost: t\r\n\r\n";
    char *many = malloc(300 * (sizeof(one) - 1));
    cr_assert_not_null(many);
    for (int i = 0; i < 300; i++)
        memcpy(many + i * (sizeof(one) - 1), one, sizeof(one) - 1);
    cr_assert_eq(th_conn_send(&c, many, 300 * (sizeof(one) - 1)), 0);
    free(many);
    for (int i = 0; i < 300; i++)
        th_expect_res(&c, 200, "Hello, world");
    th_conn_close(&c);

    bench_runs_clean("http", a.port, "/plaintext", "--pipeline", "16");
    th_app_stop(&a);
}

static void echo(th_conn_t *c, int opcode, size_t len)
{
    unsigned char *p = malloc(len + 1);
    cr_assert_not_null(p);
    for (size_t i = 0; i < len; i++)
        p[i] = (unsigned char)(i * 131 + len);
    frame_send(c, FIN | (uint8_t)opcode, true, p, len);
    expect_frame(c, opcode, p, len);
    free(p);
}

Test(floor, ws_echoes_every_length_form_and_answers_control_frames)
{
    th_app_t a = th_app_start("bench-floor", "ws", NULL);
    /* The handshake and a first frame in one write. */
    uint8_t first[64];
    size_t n = frame_build(first, FIN | OP_TEXT, true, "first", 5);
    th_conn_t c;
    raw_case = "floor";
    raw_upgrade_with(&c, a.port, first, n);
    expect_frame(&c, OP_TEXT, "first", 5);
    static const size_t lens[] = { 0, 1, 125, 126, 127, 65535, 65536, 300000 };
    for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++)
        echo(&c, i % 2 ? OP_BIN : OP_TEXT, lens[i]);
    /* 200 frames in one write: more than one sendmsg's worth of echoes (64). */
    uint8_t *burst = malloc(200 * 16);
    cr_assert_not_null(burst);
    size_t bl = 0;
    for (int i = 0; i < 200; i++) {
        char msg[16];
        snprintf(msg, sizeof(msg), "m%03d", i);
        bl += frame_build(burst + bl, FIN | OP_TEXT, true, msg, 4);
    }
    cr_assert_eq(th_conn_send(&c, burst, bl), 0);
    free(burst);
    for (int i = 0; i < 200; i++) {
        char msg[16];
        snprintf(msg, sizeof(msg), "m%03d", i);
        expect_frame(&c, OP_TEXT, msg, 4);
    }
    /* A frame a byte at a time: kept by the connection until it is whole. */
    uint8_t slow[64];
    size_t sl = frame_build(slow, FIN | OP_BIN, true, "one byte at a time", 18);
    cr_assert_eq(th_conn_send_split(&c, slow, sl, 1, 2000), 0);
    expect_frame(&c, OP_BIN, "one byte at a time", 18);
    frame_send(&c, FIN | OP_PING, true, "hb", 2);
    expect_frame(&c, OP_PONG, "hb", 2);
    uint8_t cp[32];
    size_t cl = close_payload(cp, 1000, "bye");
    frame_send(&c, FIN | OP_CLOSE, true, cp, cl);
    expect_close(&c, 1000);
    th_conn_close(&c);

    bench_runs_clean("ws", a.port, "/ws/echo", "--size", "16384");
    th_app_stop(&a);
}

/* The handshake: a header name in any case (RFC 9110 §5.1); no key, no WebSocket; a client
 * gone in the middle of a frame takes nothing with it; an unmasked frame ends the
 * connection after the echoes of the frames before it. */
Test(floor, ws_handshake_and_a_client_gone_mid_frame)
{
    th_app_t a = th_app_start("bench-floor", "ws", NULL);
    cr_assert_not_null(strstr(a.line, "serving on ws://"), "%s", a.line);
    th_conn_t c;
    raw_case = "lower-case key";
    raw_upgrade_req(&c, a.port,
                    "GET /ws/echo HTTP/1.1\r\nhost: t\r\nupgrade: websocket\r\n"
                    "connection: Upgrade\r\nsec-websocket-key: " WS_KEY "\r\n"
                    "sec-websocket-version: 13\r\n\r\n",
                    NULL, 0);
    echo(&c, OP_TEXT, 10);
    /* Half a 16 KiB frame, then gone. */
    uint8_t *big = malloc(16384 + 16);
    unsigned char *payload = calloc(1, 16384);
    cr_assert(big != NULL && payload != NULL);
    size_t bl = frame_build(big, FIN | OP_BIN, true, payload, 16384);
    cr_assert_eq(th_conn_send(&c, big, bl / 2), 0);
    free(big);
    free(payload);
    th_conn_close(&c);

    cr_assert_eq(th_conn_open(&c, a.port), 0);
    cr_assert_eq(th_conn_sends(&c, "GET /ws/echo HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\n"
                                   "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n"),
                 0);
    cr_assert_eq(th_conn_wait_closed(&c, 5000), 0, "no key: closed");
    cr_assert_eq(c.len, 0, "no key: no answer, got %.*s", (int)c.len, c.buf);
    th_conn_close(&c);

    /* Three frames, then an unmasked one (RFC 6455 §5.1) in the same write: the three
     * are echoed, then the connection is closed. */
    raw_case = "unmasked";
    raw_upgrade(&c, a.port);
    uint8_t four[64];
    size_t fl = 0;
    for (int i = 0; i < 3; i++)
        fl += frame_build(four + fl, FIN | OP_TEXT, true, "ok", 2);
    fl += frame_build(four + fl, FIN | OP_TEXT, false, "no", 2);
    cr_assert_eq(th_conn_send(&c, four, fl), 0);
    for (int i = 0; i < 3; i++)
        expect_frame(&c, OP_TEXT, "ok", 2);
    cr_assert_eq(th_conn_wait_closed(&c, 5000), 0, "closed after the unmasked frame");
    th_conn_close(&c);

    raw_case = "after all that";
    raw_upgrade(&c, a.port);
    echo(&c, OP_BIN, 70000);
    th_conn_close(&c);
    th_app_stop(&a);
}

Test(floor, start_up_failures_are_one_line_and_non_zero)
{
    th_app_t a = th_app_start("bench-floor", "http", NULL);
    char port[16];
    snprintf(port, sizeof(port), "%d", a.port);
    th_app_run_t r;
    th_app_run(&r, "bench-floor", 5000, "--port", port, "http", NULL);
    cr_assert_eq(r.code, 1, "a taken port: exit %d", r.code);
    cr_assert_not_null(strstr(r.err, "bind: Address already in use"), "%s", r.err);
    cr_assert_eq(th_count_lines(r.err), 1, "%s", r.err);
    th_app_stop(&a);

    th_app_run(&r, "bench-floor", 5000, "--port", port, "gopher", NULL);
    cr_assert_eq(r.code, 2, "an unknown mode: exit %d", r.code);
    cr_assert_not_null(strstr(r.err, "usage: bench-floor"), "%s", r.err);
    th_app_run(&r, "bench-floor", 5000, "--port", "0x50", "ws", NULL);
    cr_assert_eq(r.code, 2, "a port that is not a number: exit %d", r.code);
    cr_assert_not_null(strstr(r.err, "--port 0x50: not a port"), "%s", r.err);
    cr_assert_eq(th_count_lines(r.err), 1, "%s", r.err);
}

/* A user types "localhost": it is 127.0.0.1. */
Test(floor, localhost_is_127_0_0_1)
{
    th_app_t a = th_app_start("bench-floor", "--host", "localhost", "http", NULL);
    cr_assert_not_null(strstr(a.line, "http://localhost:"), "%s", a.line);
    th_conn_t c;
    cr_assert_eq(th_conn_open(&c, a.port), 0);
    cr_assert_eq(th_conn_sends(&c, "GET / HTTP/1.1\r\nHost: t\r\n\r\n"), 0);
    th_expect_res(&c, 200, "Hello, world");
    th_conn_close(&c);
    th_app_stop(&a);
}

/* CPU ticks (user + system) the process has used so far. */
static long cpu_ticks(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f);
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')');
    cr_assert_not_null(p);
    long utime = 0, stime = 0;
    cr_assert_eq(sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %ld %ld", &utime,
                        &stime),
                 2);
    return utime + stime;
}

/* At the descriptor limit (40 here) it answers what it holds, stops accepting without
 * spinning, and takes the waiting clients once some close. */
Test(floor, accepts_again_after_the_descriptor_limit, .timeout = 60)
{
    struct rlimit old, low;
    cr_assert_eq(getrlimit(RLIMIT_NOFILE, &old), 0);
    low = old;
    low.rlim_cur = 40;
    cr_assert_eq(setrlimit(RLIMIT_NOFILE, &low), 0);
    th_app_t a = th_app_start_logged("bench-floor", "http", NULL);
    cr_assert_eq(setrlimit(RLIMIT_NOFILE, &old), 0);

    enum { N = 50 };
    static th_conn_t c[N];
    int got = 0;
    for (int i = 0; i < N; i++) {
        cr_assert_eq(th_conn_open(&c[i], a.port), 0, "connect %d", i);
        cr_assert_eq(th_conn_sends(&c[i], "GET / HTTP/1.1\r\nHost: t\r\n\r\n"), 0);
    }
    /* Accepted in order: once one waits, the rest wait too (c[got..N) wait). */
    for (int i = 0; i < N; i++) {
        th_res_t r;
        if (th_conn_read_res(&c[i], &r, got == i ? 5000 : 100, false) == 0) {
            cr_assert_eq(r.status, 200);
            th_res_free(&r);
            got++;
        }
    }
    cr_assert(got >= 20 && got < N, "%d of %d answered under a limit of 40", got, N);
    char *err = th_app_wait_stderr(&a, "not accepting until one closes", 5000);
    cr_assert_not_null(strstr(err, "Too many open files"), "%s", err);
    free(err);
    long t0 = cpu_ticks(a.pid);
    usleep(1000 * 1000);
    long spent = cpu_ticks(a.pid) - t0;
    cr_assert_leq(spent, 20, "%ld ticks in 1 s while full: it spins", spent);

    for (int i = 0; i < 10; i++)
        th_conn_close(&c[i]);
    int later = 0;
    for (int i = got; i < N && later < 10; i++) {
        th_res_t r;
        if (th_conn_read_res(&c[i], &r, 5000, false) == 0) {
            cr_assert_eq(r.status, 200);
            th_res_free(&r);
            later++;
        }
    }
    cr_assert_eq(later, 10, "after 10 closed: %d more answered", later);
    for (int i = 10; i < N; i++)
        th_conn_close(&c[i]);
    th_app_stop(&a);
}

Test(floor, bench_report_verdicts, .timeout = 60)
{
    if (access("/usr/bin/python3", X_OK) != 0)
        cr_skip_test("no /usr/bin/python3");
    char bin[4096], cmd[8192 + 128];
    snprintf(bin, sizeof(bin), "%s", th_app_path("bench-floor"));
    const char *dir = dirname(bin);
    snprintf(cmd, sizeof(cmd),
             "/usr/bin/python3 %s/../../tests/peers/bench_report_check.py "
             "%s/../../scripts/bench-peers-report.py 2>&1",
             dir, dir);
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p);
    char out[4096];
    size_t n = fread(out, 1, sizeof(out) - 1, p);
    out[n] = '\0';
    int status = pclose(p);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "%s", out);
    cr_assert_not_null(strstr(out, "ok 11 cases"), "%s", out);
}
