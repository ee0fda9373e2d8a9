/* Regression tests for bugs reviewers found in lib/server/conn.c and lib/ws/ws.c, each
 * stated as the contract it broke. Every test here failed (or crashed) on the code before
 * its fix: commits b6d6663 (write callbacks that queue writes into the batch being
 * completed; WebSocket ping floods and tiny fragments; .drain that sends) and 4097853
 * (flush recursion and loop starvation, parsing after a 408, an ignored Upgrade,
 * exchanges held by write callbacks, the 422 body).
 *
 * The server runs on its own loop thread (tests/support/harness.h); the client is a
 * blocking socket, with WebSocket frames built and parsed by hand. Server-side counts are
 * atomics, compared exactly once th_server_stop has joined the loop thread (it also asserts
 * the close callback ran once, uv_loop_close() == 0 and, under ASan, no leak). */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <jansson.h>

#include "support/harness.h"

/* An embedding program ignores SIGPIPE (server.h); the tests' clients reset on purpose. */
static void ignore_sigpipe(void)
{
    signal(SIGPIPE, SIG_IGN);
}

TestSuite(regress, .init = ignore_sigpipe);

/* How much RSS may grow for a flood that squall keeps bounded. Under ASan every freed
 * block waits in the quarantine (256 MiB by default), so traffic alone shows as growth:
 * the ping flood's ~70,000 pongs, each allocated and freed by wslay, take ~32 MiB there.
 * Unbounded, the same flood grew by 280 MiB (470 MiB under ASan). */
#if defined(__SANITIZE_ADDRESS__)
#define FLOOD_RSS_SLACK (128u << 20)
#else
#define FLOOD_RSS_SLACK (32u << 20)
#endif

/* Resident set size of this process (the server thread and the client together), in
 * bytes, from /proc/self/status. */
static size_t rss_bytes(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    size_t kb = 0;
    if (f == NULL)
        return 0;
    while (fgets(line, sizeof(line), f) != NULL)
        if (sscanf(line, "VmRSS: %zu kB", &kb) == 1)
            break;
    fclose(f);
    return kb * 1024;
}

static void get_quick(sq_req_t *req, sq_res_t *res, void *data)
{
    sq_res_send(res, 200, "text/plain", "ok", 2);
}
static const sq_handler_t quick = {.get = get_quick};

/* ======================================================================================
 * 1. Streaming write callbacks that write more
 * ==================================================================================== */

static struct {
    char order[16];  /* the letters whose callbacks ran, in order (loop thread) */
    atomic_int ncb;  /* write callbacks */
    atomic_int nbad; /* ...with a status other than 0, or a write that failed */
    atomic_int end_rc;
} wm;

static char wm_letters[] = "ABCD"; /* each write's callback data: its letter */

static void wm_cb(sq_res_t *res, int status, void *data)
{
    const char *letter = data;
    int i = atomic_fetch_add(&wm.ncb, 1);
    if (i < (int)sizeof(wm.order) - 1)
        wm.order[i] = letter[0];
    if (status != 0)
        atomic_fetch_add(&wm.nbad, 1);
    if (letter[0] == 'A') {
        if (sq_res_write(res, "C", 1, wm_cb, &wm_letters[2]) != 0)
            atomic_fetch_add(&wm.nbad, 1);
        if (sq_res_write(res, "D", 1, wm_cb, &wm_letters[3]) != 0)
            atomic_fetch_add(&wm.nbad, 1);
    } else if (letter[0] == 'D') {
        atomic_store(&wm.end_rc, sq_res_end(res));
    }
}

static void wm_get(sq_req_t *req, sq_res_t *res, void *data)
{
    if (sq_res_start(res, 200, "text/plain") != 0 ||
        sq_res_write(res, "A", 1, wm_cb, &wm_letters[0]) != 0 ||
        sq_res_write(res, "B", 1, wm_cb, &wm_letters[1]) != 0)
        atomic_fetch_add(&wm.nbad, 1);
}
static const sq_handler_t wm_route = {.get = wm_get};

Test(regress, write_callbacks_that_write_more_each_run_once_in_order, .timeout = 20)
{
    memset(&wm, 0, sizeof(wm));
    atomic_store(&wm.end_rc, 1);
    sq_app_t *app;
    cr_assert_eq(sq_app_create(&app), 0);
    cr_assert_eq(sq_app_route(app, "/abcd", &wm_route, NULL), 0);
    th_server_t *ts = th_server_start(app, NULL);
    th_conn_t c;
    cr_assert_eq(th_conn_open(&c, th_server_port(ts)), 0);
    /* twice on one connection: the second runs on a recycled exchange and write queue */
    for (int round = 0; round < 2; round++) {
        cr_assert_eq(th_conn_sends(&c, "GET /abcd HTTP/1.1\r\nHost: t\r\n\r\n"), 0);
        th_res_t r;
        int rc = th_conn_read_res(&c, &r, 5000, false);
        cr_assert_eq(rc, 0, "round %d: %s", round, uv_err_name(rc));
        cr_assert_eq(r.status, 200);
        cr_assert(r.chunked);
        cr_assert_str_eq(r.body, "ABCD");
        const char *body = strstr(r.raw, "\r\n\r\n");
        cr_assert_not_null(body);
        cr_assert_str_eq(body + 4, "1\r\nA\r\n1\r\nB\r\n1\r\nC\r\n1\r\nD\r\n0\r\n\r\n");
        th_res_free(&r);
    }
    th_conn_close(&c);
    th_server_stop(ts, 1000);
    sq_app_destroy(app);
    cr_assert_eq(atomic_load(&wm.ncb), 8, "%d write callbacks for 8 writes", atomic_load(&wm.ncb));
    cr_assert_str_eq(wm.order, "ABCDABCD");
    cr_assert_eq(atomic_load(&wm.nbad), 0);
    cr_assert_eq(atomic_load(&wm.end_rc), 0);
}

/* ======================================================================================
 * 2. The back-pressure pattern at scale: the next chunk from each write callback
 * ==================================================================================== */

enum { FLOOD_CHUNKS = 300000, FLOOD_CHUNK = 16 };

static struct {
    atomic_int handlers;
    atomic_int written; /* write callbacks with status 0 */
    atomic_int failed;  /* write callbacks with an error, or writes refused */
    atomic_int end_rc;
} fl;

static void flood_chunk(int i, char out[FLOOD_CHUNK + 1])
{
    snprintf(out, FLOOD_CHUNK + 1, "%015d\n", i);
}

static void flood_cb(sq_res_t *res, int status, void *data)
{
    if (status != 0) {
        atomic_fetch_add(&fl.failed, 1);
        atomic_store(&fl.end_rc, sq_res_end(res));
        return;
    }
    int i = atomic_fetch_add(&fl.written, 1) + 1;
    if (i == FLOOD_CHUNKS) {
        atomic_store(&fl.end_rc, sq_res_end(res));
        return;
    }
    char chunk[FLOOD_CHUNK + 1];
    flood_chunk(i, chunk);
    if (sq_res_write(res, chunk, FLOOD_CHUNK, flood_cb, NULL) != 0) {
        atomic_fetch_add(&fl.failed, 1);
        atomic_store(&fl.end_rc, sq_res_end(res));
    }
}

static void flood_get(sq_req_t *req, sq_res_t *res, void *data)
{
    atomic_fetch_add(&fl.handlers, 1);
    char chunk[FLOOD_CHUNK + 1];
    flood_chunk(0, chunk);
    if (sq_res_start(res, 200, "text/plain") != 0 ||
        sq_res_write(res, chunk, FLOOD_CHUNK, flood_cb, NULL) != 0) {
        atomic_fetch_add(&fl.failed, 1);
        atomic_store(&fl.end_rc, sq_res_end(res));
    }
}
static const sq_handler_t flood_route = {.get = flood_get};

/* Reads the flood's response on its own thread, decoding the chunked framing as it
 * streams (the harness's reader keeps whole bodies) and checking every chunk. */
typedef struct flood_reader {
    int fd;
    int chunks;    /* chunks that checked out */
    bool ended;    /* the last chunk came */
    char err[160]; /* the first thing that went wrong */
} flood_reader_t;

static void *flood_read_main(void *arg)
{
    flood_reader_t *fr = arg;
    size_t cap = 256 * 1024, len = 0, pos = 0;
    char *buf = malloc(cap);
    bool in_head = true;
    uint64_t deadline = th_now_ms() + 100000;
    if (buf == NULL) {
        snprintf(fr->err, sizeof(fr->err), "out of memory");
        return NULL;
    }
    while (!fr->ended && fr->err[0] == '\0') {
        /* take what is whole */
        for (;;) {
            if (in_head) {
                char *e = memmem(buf + pos, len - pos, "\r\n\r\n", 4);
                if (e == NULL)
                    break;
                *e = '\0';
                if (strncmp(buf + pos, "HTTP/1.1 200 ", 13) != 0 ||
                    strcasestr(buf + pos, "\r\nTransfer-Encoding: chunked") == NULL) {
                    snprintf(fr->err, sizeof(fr->err), "unexpected head: %.100s", buf + pos);
                    break;
                }
                pos = (size_t)(e - buf) + 4;
                in_head = false;
                continue;
            }
            char *eol = memmem(buf + pos, len - pos, "\r\n", 2);
            if (eol == NULL)
                break;
            char *hexend;
            unsigned long n = strtoul(buf + pos, &hexend, 16);
            if (hexend != eol) {
                snprintf(fr->err, sizeof(fr->err), "bad chunk line after %d chunks", fr->chunks);
                break;
            }
            size_t body = (size_t)(eol - buf) + 2;
            if (n == 0) {
                if (len - body < 2)
                    break;
                if (memcmp(buf + body, "\r\n", 2) != 0)
                    snprintf(fr->err, sizeof(fr->err), "no blank line after the last chunk");
                fr->ended = true;
                break;
            }
            if (len - body < n + 2)
                break;
            char want[FLOOD_CHUNK + 1];
            flood_chunk(fr->chunks, want);
            if (n != FLOOD_CHUNK || memcmp(buf + body, want, FLOOD_CHUNK) != 0 ||
                memcmp(buf + body + n, "\r\n", 2) != 0) {
                snprintf(fr->err, sizeof(fr->err), "chunk %d: %lu bytes \"%.16s\"", fr->chunks, n,
                         buf + body);
                break;
            }
            fr->chunks++;
            pos = body + n + 2;
        }
        if (fr->ended || fr->err[0] != '\0')
            break;
        memmove(buf, buf + pos, len - pos);
        len -= pos;
        pos = 0;
        uint64_t now = th_now_ms();
        if (now >= deadline) {
            snprintf(fr->err, sizeof(fr->err), "timed out after %d chunks", fr->chunks);
            break;
        }
        struct pollfd pfd = {.fd = fr->fd, .events = POLLIN};
        if (poll(&pfd, 1, (int)(deadline - now)) <= 0)
            continue;
        ssize_t got = recv(fr->fd, buf + len, cap - len, 0);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0) {
            snprintf(fr->err, sizeof(fr->err), "closed after %d chunks", fr->chunks);
            break;
        }
        len += (size_t)got;
    }
    free(buf);
    return NULL;
}

Test(regress, next_chunk_from_each_write_callback_300000_times_neither_overflows_nor_starves,
     .timeout = 150)
{
    memset(&fl, 0, sizeof(fl));
    atomic_store(&fl.end_rc, 1);
    sq_app_t *app;
    cr_assert_eq(sq_app_create(&app), 0);
    cr_assert_eq(sq_app_route(app, "/flood", &flood_route, NULL), 0);
    cr_assert_eq(sq_app_route(app, "/quick", &quick, NULL), 0);
    th_server_t *ts = th_server_start(app, NULL);
    th_conn_t a;
    cr_assert_eq(th_conn_open(&a, th_server_port(ts)), 0);
    cr_assert_eq(th_conn_sends(&a, "GET /flood HTTP/1.1\r\nHost: t\r\n\r\n"), 0);
    flood_reader_t fr = {.fd = a.fd};
    pthread_t reader;
    cr_assert_eq(pthread_create(&reader, NULL, flood_read_main, &fr), 0);

    /* while the stream runs, another connection is served promptly */
    cr_assert_geq(th_wait_atomic(&fl.written, 1000, 20000), 1000, "the stream started");
    th_conn_t b;
    cr_assert_eq(th_conn_open(&b, th_server_port(ts)), 0);
    uint64_t t0 = th_now_ms();
    cr_assert_eq(th_conn_sends(&b, "GET /quick HTTP/1.1\r\nHost: t\r\n\r\n"), 0);
    th_res_t r;
    int rc = th_conn_read_res(&b, &r, 5000, false);
    uint64_t took = th_now_ms() - t0;
    int written_then = atomic_load(&fl.written);
    cr_assert_eq(rc, 0, "/quick during the stream: %s", uv_err_name(rc));
    cr_assert_eq(r.status, 200);
    cr_assert_str_eq(r.body, "ok");
    th_res_free(&r);
    th_conn_close(&b);
    cr_assert_lt(written_then, FLOOD_CHUNKS, "the stream was still running");
    cr_assert_lt(took, 1000, "/quick took %llu ms while the stream ran", (unsigned long long)took);

    pthread_join(reader, NULL);
    cr_assert_eq(fr.err[0], '\0', "%s", fr.err);
    cr_assert(fr.ended);
    cr_assert_eq(fr.chunks, FLOOD_CHUNKS, "%d chunks", fr.chunks);
    th_conn_close(&a);
    th_server_stop(ts, 1000);
    sq_app_destroy(app);
    cr_assert_eq(atomic_load(&fl.handlers), 1);
    cr_assert_eq(atomic_load(&fl.written), FLOOD_CHUNKS);
    cr_assert_eq(atomic_load(&fl.failed), 0);
    cr_assert_eq(atomic_load(&fl.end_rc), 0);
}

/* ======================================================================================
 * 3. A 408 while an earlier answer is still being written
 * ==================================================================================== */

enum { BIG_BYTES = 16 * 1024 * 1024 };

static atomic_int n_big, n_counted, n_big_nomem;

static void big_get(sq_req_t *req, sq_res_t *res, void *data)
{
    char *body = malloc(BIG_BYTES);
    if (body == NULL) { /* loop thread: counted, and asserted on by the test's */
        atomic_fetch_add(&n_big_nomem, 1);
        sq_res_send_error(res, 500, "out of memory");
        return;
    }
    for (size_t i = 0; i < BIG_BYTES; i++)
        body[i] = (char)('a' + i % 26);
    sq_res_send(res, 200, "text/plain", body, BIG_BYTES);
    free(body);
    atomic_fetch_add(&n_big, 1);
}
static const sq_handler_t big_route = {.get = big_get};

static void counted_get(sq_req_t *req, sq_res_t *res, void *data)
{
    atomic_fetch_add(&n_counted, 1);
    sq_res_send(res, 200, "text/plain", "counted", 7);
}
static const sq_handler_t counted_route = {.get = counted_get};

/* Polls the server's counters until `timeouts` reaches want or timeout_ms passes; returns
 * the last value seen. */
static uint64_t wait_timeouts(th_server_t *ts, uint64_t want, int timeout_ms)
{
    uint64_t end = th_now_ms() + (uint64_t)timeout_ms;
    sq_server_stats_t st;
    for (;;) {
        th_server_stats(ts, &st);
        if (st.timeouts >= want || th_now_ms() >= end)
            return st.timeouts;
        th_sleep_ms(5);
    }
}

Test(regress, head_completed_after_its_408_runs_no_handler_and_the_connection_closes, .timeout = 30)
{
    atomic_store(&n_big, 0);
    atomic_store(&n_counted, 0);
    sq_app_t *app;
    cr_assert_eq(sq_app_create(&app), 0);
    cr_assert_eq(sq_app_route(app, "/big", &big_route, NULL), 0);
    cr_assert_eq(sq_app_route(app, "/count", &counted_route, NULL), 0);
    sq_server_opts_t o;
    sq_server_opts_init(&o);
    o.header_timeout_ms = 200;
    o.max_pipeline_bytes = 64 * 1024 * 1024; /* the parser goes on behind the big answer */
    th_server_t *ts = th_server_start(app, &o);
    th_conn_t c;
    cr_assert_eq(th_conn_open(&c, th_server_port(ts)), 0);
    /* an answer larger than the socket buffers, that the client does not read yet */
    cr_assert_eq(th_conn_sends(&c, "GET /big HTTP/1.1\r\nHost: t\r\n\r\n"), 0);
    cr_assert_eq(th_wait_atomic(&n_big, 1, 10000), 1, "/big ran (%d out of memory)",
                 atomic_load(&n_big_nomem));
    cr_assert_eq(th_conn_sends(&c, "GET /count HTTP/1.1\r\nHost: t\r\n"), 0);
    /* past header_timeout_ms: the 408 is queued behind the big answer */
    cr_assert_eq(wait_timeouts(ts, 1, 5000), 1, "the partial head timed out");
    cr_assert_eq(th_conn_sends(&c, "X-Late: 1\r\n\r\n"), 0); /* the head completes */
    /* no handler may run for it: checked once the connection is over, and after stop */

    th_res_t r;
    int rc = th_conn_read_res(&c, &r, 20000, false);
    cr_assert_eq(rc, 0, "the big answer: %s", uv_err_name(rc));
    cr_assert_eq(r.status, 200);
    cr_assert_eq(r.body_len, BIG_BYTES);
    cr_assert_eq(r.body[BIG_BYTES - 1], (char)('a' + (BIG_BYTES - 1) % 26));
    th_res_free(&r);
    rc = th_conn_read_res(&c, &r, 5000, false);
    cr_assert_eq(rc, 0, "the 408: %s", uv_err_name(rc));
    cr_assert_eq(r.status, 408);
    th_res_free(&r);
    rc = th_conn_wait_closed(&c, 5000);
    cr_assert_eq(rc, 0, "the server closes after the 408: %s; then came \"%.60s\"", uv_err_name(rc),
                 c.len ? c.buf : "");
    cr_assert_eq(atomic_load(&n_counted), 0, "a handler ran for the head that got a 408");
    th_conn_close(&c);
    th_server_stop(ts, 1000);
    sq_app_destroy(app);
    cr_assert_eq(atomic_load(&n_big), 1);
    cr_assert_eq(atomic_load(&n_counted), 0);
}

/* A client that never reads, whose pipelined head then times out: the 408 waits behind the
 * big answer, and the stalled reader is still closed by the idle check (it used to be
 * dropped from every timeout queue and held its connection and answer forever). */
Test(regress, stalled_reader_that_gets_a_408_is_still_closed_by_the_idle_check, .timeout = 30)
{
    atomic_store(&n_big, 0);
    sq_app_t *app;
    cr_assert_eq(sq_app_create(&app), 0);
    cr_assert_eq(sq_app_route(app, "/big", &big_route, NULL), 0);
    sq_server_opts_t o;
    sq_server_opts_init(&o);
    o.header_timeout_ms = 200;
    o.idle_timeout_ms = 300;
    o.max_pipeline_bytes = 64 * 1024 * 1024;
    th_server_t *ts = th_server_start(app, &o);
    th_conn_t c;
    cr_assert_eq(th_conn_open(&c, th_server_port(ts)), 0);
    cr_assert_eq(th_conn_sends(&c, "GET /big HTTP/1.1\r\nHost: t\r\n\r\n"), 0);
    cr_assert_eq(th_wait_atomic(&n_big, 1, 10000), 1, "/big ran (%d out of memory)",
                 atomic_load(&n_big_nomem));
    cr_assert_eq(th_conn_sends(&c, "GET /big HTTP/1.1\r\nHost: t\r\n"), 0);
    cr_assert_eq(th_server_wait_open(ts, 0, 10000), 0, "the stalled reader is closed");
    sq_server_stats_t st;
    th_server_stats(ts, &st);
    cr_assert_eq(st.timeouts, 1, "the partial head timed out");
    th_conn_close(&c);
    th_server_stop(ts, 1000);
    sq_app_destroy(app);
}

/* ======================================================================================
 * 4. An ignored Upgrade keeps the connection (RFC 9110 §7.8)
 * ==================================================================================== */

static atomic_int n_named;

static void named_get(sq_req_t *req, sq_res_t *res, void *data)
{
    atomic_fetch_add(&n_named, 1);
    const char *name = sq_req_param(req, "name");
    sq_res_send(res, 200, "text/plain", name, strlen(name));
}
static const sq_handler_t named_route = {.get = named_get};

/* curl's h2c offer */
#define H2C_REQ(path)                                                                              \
    "GET " path " HTTP/1.1\r\nHost: t\r\nConnection: Upgrade, HTTP2-Settings\r\n"                  \
    "Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"
#define PLAIN_REQ(path) "GET " path " HTTP/1.1\r\nHost: t\r\n\r\n"

static void expect_named(th_conn_t *c, const char *name)
{
    th_res_t r;
    int rc = th_conn_read_res(c, &r, 5000, false);
    cr_assert_eq(rc, 0, "answer for %s: %s", name, uv_err_name(rc));
    cr_assert_eq(r.status, 200, "status %d for %s", r.status, name);
    cr_assert_str_eq(r.body, name);
    const char *conn = th_res_header(&r, "Connection");
    cr_assert(conn == NULL || strcasecmp(conn, "close") != 0, "%s: Connection: %s", name, conn);
    cr_assert_null(th_res_header(&r, "Upgrade"));
    th_res_free(&r);
}

Test(regress, ignored_h2c_upgrade_is_answered_and_the_connection_kept_alive, .timeout = 20)
{
    atomic_store(&n_named, 0);
    sq_app_t *app;
    cr_assert_eq(sq_app_create(&app), 0);
    cr_assert_eq(sq_app_route(app, "/p/{name}", &named_route, NULL), 0);
    th_server_t *ts = th_server_start(app, NULL);

    /* one request at a time */
    th_conn_t c;
    cr_assert_eq(th_conn_open(&c, th_server_port(ts)), 0);
    cr_assert_eq(th_conn_sends(&c, H2C_REQ("/p/one")), 0);
    expect_named(&c, "one");
    cr_assert_eq(th_conn_sends(&c, PLAIN_REQ("/p/two")), 0);
    expect_named(&c, "two");
    cr_assert_eq(th_conn_sends(&c, H2C_REQ("/p/three")), 0);
    expect_named(&c, "three");
    cr_assert_eq(th_conn_sends(&c, PLAIN_REQ("/p/four")), 0);
    expect_named(&c, "four");
    th_conn_close(&c);

    /* pipelined in one write */
    cr_assert_eq(th_conn_open(&c, th_server_port(ts)), 0);
    cr_assert_eq(th_conn_sends(&c, H2C_REQ("/p/a") PLAIN_REQ("/p/b") H2C_REQ("/p/c") H2C_REQ("/p/d")
                                       PLAIN_REQ("/p/e")),
                 0);
    expect_named(&c, "a");
    expect_named(&c, "b");
    expect_named(&c, "c");
    expect_named(&c, "d");
    expect_named(&c, "e");
    cr_assert_eq(th_conn_sends(&c, PLAIN_REQ("/p/f")), 0); /* still open */
    expect_named(&c, "f");
    th_conn_close(&c);

    th_server_stop(ts, 1000);
    sq_app_destroy(app);
    cr_assert_eq(atomic_load(&n_named), 10);
}

/* ======================================================================================
 * 5. A write callback that runs after sq_res_end gets its own, finished, res
 * ==================================================================================== */

static struct {
    atomic_int s1_cbs, s1_cb_status, s1_late_write, s1_late_end, s1_end;
    atomic_int s2_handlers, s2_start, s2_write, s2_end;
} wc;

static void s1_cb(sq_res_t *res, int status, void *data)
{
    atomic_fetch_add(&wc.s1_cbs, 1);
    atomic_store(&wc.s1_cb_status, status);
    /* the response this callback belongs to is finished: both must be refused, and must
     * not reach the request being served now */
    atomic_store(&wc.s1_late_write, sq_res_write(res, "EVIL", 4, NULL, NULL));
    atomic_store(&wc.s1_late_end, sq_res_end(res));
}

static void s1_get(sq_req_t *req, sq_res_t *res, void *data)
{
    int rc = sq_res_start(res, 200, "text/plain");
    if (rc == 0)
        rc = sq_res_write(res, "one", 3, s1_cb, NULL);
    atomic_store(&wc.s1_end, rc == 0 ? sq_res_end(res) : rc);
}
static const sq_handler_t s1_route = {.get = s1_get};

typedef struct s2_timer {
    uv_timer_t timer;
    sq_res_t *res;
} s2_timer_t;

static void s2_timer_free(uv_handle_t *h)
{
    free(h->data);
}

static void s2_fire(uv_timer_t *t)
{
    s2_timer_t *st = t->data;
    atomic_store(&wc.s2_write, sq_res_write(st->res, "two", 3, NULL, NULL));
    atomic_store(&wc.s2_end, sq_res_end(st->res));
    uv_close((uv_handle_t *)t, s2_timer_free);
}

/* streams its answer from a timer: it is being served while /s1's callback runs */
static void s2_get(sq_req_t *req, sq_res_t *res, void *data)
{
    atomic_fetch_add(&wc.s2_handlers, 1);
    s2_timer_t *st = calloc(1, sizeof(*st));
    if (st == NULL) { /* loop thread: recorded, and asserted on by the test's */
        atomic_store(&wc.s2_start, UV_ENOMEM);
        sq_res_send_error(res, 500, "out of memory");
        return;
    }
    st->res = res;
    atomic_store(&wc.s2_start, sq_res_start(res, 200, "text/plain"));
    uv_timer_init(sq_req_loop(req), &st->timer);
    st->timer.data = st;
    uv_timer_start(&st->timer, s2_fire, 50, 0);
}
static const sq_handler_t s2_route = {.get = s2_get};

Test(regress, write_callback_after_end_gets_its_own_finished_res_not_the_next_requests,
     .timeout = 20)
{
    memset(&wc, 0, sizeof(wc));
    atomic_store(&wc.s1_cb_status, 1);
    atomic_store(&wc.s1_late_write, 1);
    atomic_store(&wc.s1_late_end, 1);
    atomic_store(&wc.s1_end, 1);
    atomic_store(&wc.s2_start, 1);
    atomic_store(&wc.s2_write, 1);
    atomic_store(&wc.s2_end, 1);
    sq_app_t *app;
    cr_assert_eq(sq_app_create(&app), 0);
    cr_assert_eq(sq_app_route(app, "/s1", &s1_route, NULL), 0);
    cr_assert_eq(sq_app_route(app, "/s2", &s2_route, NULL), 0);
    cr_assert_eq(sq_app_route(app, "/quick", &quick, NULL), 0);
    th_server_t *ts = th_server_start(app, NULL);
    th_conn_t c;
    cr_assert_eq(th_conn_open(&c, th_server_port(ts)), 0);
    cr_assert_eq(th_conn_sends(&c, PLAIN_REQ("/s1") PLAIN_REQ("/s2") PLAIN_REQ("/quick")), 0);
    th_res_t r;
    cr_assert_eq(th_conn_read_res(&c, &r, 5000, false), 0);
    cr_assert_eq(r.status, 200);
    cr_assert_str_eq(r.body, "one");
    th_res_free(&r);
    cr_assert_eq(th_conn_read_res(&c, &r, 5000, false), 0);
    cr_assert_eq(r.status, 200);
    cr_assert(r.chunked);
    cr_assert_str_eq(r.body, "two", "the second answer: \"%s\"", r.body);
    const char *body = strstr(r.raw, "\r\n\r\n");
    cr_assert_not_null(body);
    cr_assert_str_eq(body + 4, "3\r\ntwo\r\n0\r\n\r\n");
    th_res_free(&r);
    cr_assert_eq(th_conn_read_res(&c, &r, 5000, false), 0);
    cr_assert_eq(r.status, 200);
    cr_assert_str_eq(r.body, "ok");
    th_res_free(&r);
    th_conn_close(&c);
    th_server_stop(ts, 1000);
    sq_app_destroy(app);
    cr_assert_eq(atomic_load(&wc.s1_end), 0);
    cr_assert_eq(atomic_load(&wc.s1_cbs), 1);
    cr_assert_eq(atomic_load(&wc.s1_cb_status), 0);
    int lw = atomic_load(&wc.s1_late_write);
    cr_assert(lw == SQ_ENOTSTREAMING || lw == SQ_EALREADY_SENT,
              "sq_res_write from a late callback returned %d (%s)", lw, sq_err_name(lw));
    cr_assert_eq(atomic_load(&wc.s1_late_end), SQ_EALREADY_SENT);
    cr_assert_eq(atomic_load(&wc.s2_handlers), 1);
    cr_assert_eq(atomic_load(&wc.s2_start), 0, "sq_res_start: %s",
                 sq_err_name(atomic_load(&wc.s2_start)));
    cr_assert_eq(atomic_load(&wc.s2_write), 0);
    cr_assert_eq(atomic_load(&wc.s2_end), 0);
}

/* ======================================================================================
 * 9. A path parameter that is not UTF-8 is reported as null in the 422
 * ==================================================================================== */

static atomic_int n_items;

static void item_get(sq_req_t *req, sq_res_t *res, void *data)
{
    atomic_fetch_add(&n_items, 1);
    sq_res_send(res, 200, "text/plain", "item", 4);
}
static const sq_handler_t item_route = {.get = item_get};

/* GETs `path` and checks the 422's FastAPI shape; returns detail[0].input (a new
 * reference) for the caller to look at. */
static json_t *expect_int_parsing_422(int port, const char *path)
{
    char req[2048];
    snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: t\r\n\r\n", path);
    th_res_t r;
    cr_assert_eq(th_request(port, req, &r), 0, "GET %.60s", path);
    cr_assert_eq(r.status, 422, "GET %.60s: %d", path, r.status);
    const char *ct = th_res_header(&r, "Content-Type");
    cr_assert(ct != NULL && strncmp(ct, "application/json", 16) == 0);
    json_error_t err;
    json_t *j = json_loadb(r.body, r.body_len, 0, &err);
    cr_assert_not_null(j, "GET %.60s: not JSON (%s): %s", path, err.text, r.body);
    json_t *d0 = json_array_get(json_object_get(j, "detail"), 0);
    cr_assert(json_is_object(d0));
    cr_assert_str_eq(json_string_value(json_object_get(d0, "type")), "int_parsing");
    json_t *loc = json_object_get(d0, "loc");
    cr_assert_eq(json_array_size(loc), 2);
    cr_assert_str_eq(json_string_value(json_array_get(loc, 0)), "path");
    cr_assert_str_eq(json_string_value(json_array_get(loc, 1)), "item_id");
    json_t *input = json_object_get(d0, "input");
    cr_assert_not_null(input, "GET %.60s: no \"input\"", path);
    json_incref(input);
    json_decref(j);
    th_res_free(&r);
    return input;
}

Test(regress, int_param_that_is_not_utf8_gets_422_with_input_null, .timeout = 10)
{
    atomic_store(&n_items, 0);
    sq_app_t *app;
    cr_assert_eq(sq_app_create(&app), 0);
    cr_assert_eq(sq_app_route(app, "/items/{item_id:int}", &item_route, NULL), 0);
    th_server_t *ts = th_server_start(app, NULL);
    int port = th_server_port(ts);

    json_t *in = expect_int_parsing_422(port, "/items/%ff");
    cr_assert(json_is_null(in), "input for %%ff is JSON null");
    json_decref(in);
    in = expect_int_parsing_422(port, "/items/12%fe%80");
    cr_assert(json_is_null(in));
    json_decref(in);
    /* UTF-8 input is reported as the string itself, however long */
    in = expect_int_parsing_422(port, "/items/%C3%A9");
    cr_assert_str_eq(json_string_value(in), "\xC3\xA9");
    json_decref(in);
    char path[1100] = "/items/";
    memset(path + 7, 'x', 1000);
    path[1007] = '\0';
    in = expect_int_parsing_422(port, path);
    cr_assert(json_is_string(in));
    cr_assert_eq(json_string_length(in), 1000);
    json_decref(in);

    th_res_t r;
    cr_assert_eq(th_request(port, "GET /items/42 HTTP/1.1\r\nHost: t\r\n\r\n", &r), 0);
    cr_assert_eq(r.status, 200);
    th_res_free(&r);
    th_server_stop(ts, 1000);
    sq_app_destroy(app);
    cr_assert_eq(atomic_load(&n_items), 1);
}

/* ======================================================================================
 * WebSocket: a raw client that builds and parses frames by hand
 * ==================================================================================== */

enum { OP_CONT = 0x0, OP_TEXT = 0x1, OP_BIN = 0x2, OP_CLOSE = 0x8, OP_PING = 0x9, OP_PONG = 0xA };
#define FIN 0x80

/* RFC 6455 §1.3's example key and its accept value. */
#define WS_KEY "dGhlIHNhbXBsZSBub25jZQ=="
#define WS_ACCEPT "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

/* Opens a connection to `path` and completes the handshake. Frames that came with the 101
 * stay in c->buf. */
static void ws_open(th_conn_t *c, int port, const char *path)
{
    char req[512];
    snprintf(req, sizeof(req),
             "GET %s HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             "Sec-WebSocket-Key: " WS_KEY "\r\nSec-WebSocket-Version: 13\r\n\r\n",
             path);
    cr_assert_eq(th_conn_open(c, port), 0);
    cr_assert_eq(th_conn_sends(c, req), 0);
    th_res_t r;
    cr_assert_eq(th_conn_read_res(c, &r, 5000, false), 0);
    cr_assert_eq(r.status, 101, "upgrade to %s: %d", path, r.status);
    const char *accept = th_res_header(&r, "Sec-WebSocket-Accept");
    cr_assert(accept != NULL && strcmp(accept, WS_ACCEPT) == 0);
    th_res_free(&r);
}

/* Builds one masked client frame (RFC 6455 §5.3) into out (room for len + 14 bytes). */
static size_t ws_frame(uint8_t *out, uint8_t b0, const void *payload, size_t len)
{
    static const uint8_t key[4] = {0x37, 0xFA, 0x21, 0x3D};
    const uint8_t *p = payload;
    size_t n = 0;
    out[n++] = b0;
    if (len < 126) {
        out[n++] = (uint8_t)(0x80 | len);
    } else if (len <= 0xFFFF) {
        out[n++] = 0x80 | 126;
        out[n++] = (uint8_t)(len >> 8);
        out[n++] = (uint8_t)len;
    } else {
        out[n++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--)
            out[n++] = (uint8_t)((uint64_t)len >> (8 * i));
    }
    memcpy(out + n, key, 4);
    n += 4;
    for (size_t i = 0; i < len; i++)
        out[n + i] = p[i] ^ key[i & 3];
    return n + len;
}

static void ws_send(th_conn_t *c, uint8_t b0, const void *payload, size_t len)
{
    uint8_t *f = malloc(len + 14);
    cr_assert_not_null(f);
    size_t n = ws_frame(f, b0, payload, len);
    cr_assert_eq(th_conn_send(c, f, n), 0);
    free(f);
}

/* One frame from the server, pointing into the connection's buffer: valid until the
 * buffer is read into or compacted. */
typedef struct wsf {
    int opcode;
    bool fin, masked;
    uint8_t rsv;
    const uint8_t *payload;
    size_t len;
} wsf_t;

/* Takes the whole frame at c->buf + *pos, if there is one, and moves *pos past it. */
static bool wsf_next(const th_conn_t *c, size_t *pos, wsf_t *f)
{
    size_t avail = c->len - *pos;
    const uint8_t *b = (const uint8_t *)c->buf + *pos;
    if (avail < 2)
        return false;
    uint64_t len = b[1] & 0x7F;
    size_t hl = len == 126 ? 4 : len == 127 ? 10 : 2;
    bool masked = (b[1] & 0x80) != 0;
    if (masked)
        hl += 4;
    if (avail < hl)
        return false;
    if (len == 126) {
        len = (uint64_t)b[2] << 8 | b[3];
    } else if (len == 127) {
        len = 0;
        for (int i = 0; i < 8; i++)
            len = len << 8 | b[2 + i];
    }
    if (avail - hl < len)
        return false;
    f->opcode = b[0] & 0x0F;
    f->fin = (b[0] & 0x80) != 0;
    f->rsv = b[0] & 0x70;
    f->masked = masked;
    f->payload = b + hl;
    f->len = (size_t)len;
    *pos += hl + (size_t)len;
    return true;
}

/* Drops the bytes before *pos. */
static void ws_compact(th_conn_t *c, size_t *pos)
{
    if (*pos == 0)
        return;
    memmove(c->buf, c->buf + *pos, c->len - *pos);
    c->len -= *pos;
    *pos = 0;
}

/* Reads the next frame, whole, into f (payload copied into *copy, to free). */
static int ws_read(th_conn_t *c, wsf_t *f, uint8_t **copy, int timeout_ms)
{
    uint64_t end = th_now_ms() + (uint64_t)timeout_ms;
    size_t pos = 0;
    while (!wsf_next(c, &pos, f)) {
        if (c->eof)
            return UV_EOF;
        uint64_t now = th_now_ms();
        if (now >= end)
            return UV_ETIMEDOUT;
        th_conn_read_some(c, (int)(end - now));
    }
    *copy = malloc(f->len + 1);
    cr_assert_not_null(*copy);
    memcpy(*copy, f->payload, f->len);
    (*copy)[f->len] = 0;
    f->payload = *copy;
    ws_compact(c, &pos);
    return 0;
}

/* Expects a close frame with `code`; answers it (RFC 6455 §5.5.1) and waits for the
 * server to close TCP. */
static void ws_expect_close(th_conn_t *c, int code)
{
    wsf_t f;
    uint8_t *p;
    int rc = ws_read(c, &f, &p, 5000);
    cr_assert_eq(rc, 0, "waiting for close %d: %s", code, uv_err_name(rc));
    cr_assert_eq(f.opcode, OP_CLOSE, "opcode %d, expected a close frame", f.opcode);
    cr_assert_geq(f.len, 2);
    int got = p[0] << 8 | p[1];
    cr_assert_eq(got, code, "close code %d, expected %d (\"%s\")", got, code, (char *)p + 2);
    free(p);
    uint8_t echo[2] = {(uint8_t)(code >> 8), (uint8_t)code};
    uint8_t fr[16];
    size_t n = ws_frame(fr, FIN | OP_CLOSE, echo, 2);
    th_conn_send(c, fr, n); /* the server may have closed already: not checked */
    cr_assert_eq(th_conn_wait_closed(c, 5000), 0, "the server closes TCP after close %d", code);
}

/* The client starts the close handshake with 1000 and sees it through. */
static void ws_close_normal(th_conn_t *c)
{
    uint8_t code[2] = {0x03, 0xE8};
    ws_send(c, FIN | OP_CLOSE, code, 2);
    wsf_t f;
    uint8_t *p;
    int rc = ws_read(c, &f, &p, 5000);
    cr_assert_eq(rc, 0, "waiting for the close echo: %s", uv_err_name(rc));
    cr_assert_eq(f.opcode, OP_CLOSE, "opcode %d, expected the close echo", f.opcode);
    cr_assert_geq(f.len, 2);
    cr_assert_eq(p[0] << 8 | p[1], 1000);
    free(p);
    cr_assert_eq(th_conn_wait_closed(c, 5000), 0);
}

/* What a server-side echo route saw. */
typedef struct ws_seen {
    atomic_int opens, messages, closes, close_code;
    atomic_int last_len, last_binary;
    atomic_int bad_echo; /* sq_ws_send returned an error */
    sq_ws_t *ws;         /* loop thread only */
} ws_seen_t;

static void seen_open(sq_ws_t *ws, sq_req_t *req, void *data)
{
    ws_seen_t *s = data;
    s->ws = ws;
    atomic_fetch_add(&s->opens, 1);
}

static void seen_message(sq_ws_t *ws, int binary, const char *msg, size_t len, void *data)
{
    ws_seen_t *s = data;
    atomic_store(&s->last_len, (int)len);
    atomic_store(&s->last_binary, binary);
    atomic_fetch_add(&s->messages, 1);
    if (sq_ws_send(ws, binary, msg, len) != 0)
        atomic_fetch_add(&s->bad_echo, 1);
}

static void seen_close(sq_ws_t *ws, int code, const char *reason, void *data)
{
    ws_seen_t *s = data;
    if (s->ws == ws)
        s->ws = NULL;
    atomic_store(&s->close_code, code);
    atomic_fetch_add(&s->closes, 1);
}

static const sq_ws_handler_t seen_echo = {
    .open = seen_open,
    .message = seen_message,
    .close = seen_close,
};

/* ======================================================================================
 * 6. A ping flood from a client that never reads
 * ==================================================================================== */

enum { FLOOD_MAX_QUEUED = 256 * 1024, PING_LEN = 125, PING_FRAME = 2 + 4 + PING_LEN };

typedef struct queued_probe {
    ws_seen_t *seen;
    size_t queued;
    bool open;
} queued_probe_t;

static void probe_queued(sq_server_t *srv, void *data)
{
    queued_probe_t *p = data;
    p->open = p->seen->ws != NULL;
    p->queued = p->open ? sq_ws_queued_bytes(p->seen->ws) : 0;
}

static void ping_payload(uint8_t *p)
{
    for (int i = 0; i < PING_LEN; i++)
        p[i] = (uint8_t)('A' + i % 26);
}

/* Counts pongs (checking each payload) until a text frame equal to `want` has come. */
typedef struct pong_count {
    size_t pongs;
    bool found;
    char err[128];
} pong_count_t;

static void pong_feed(th_conn_t *c, size_t *pos, const char *want, pong_count_t *pc)
{
    uint8_t expect[PING_LEN];
    ping_payload(expect);
    wsf_t f;
    while (!pc->found && pc->err[0] == '\0' && wsf_next(c, pos, &f)) {
        if (f.opcode == OP_PONG && f.len == PING_LEN && memcmp(f.payload, expect, PING_LEN) == 0)
            pc->pongs++;
        else if (f.opcode == OP_TEXT && f.len == strlen(want) &&
                 memcmp(f.payload, want, f.len) == 0)
            pc->found = true;
        else
            snprintf(pc->err, sizeof(pc->err), "after %zu pongs: opcode %d, %zu bytes", pc->pongs,
                     f.opcode, f.len);
    }
    ws_compact(c, pos);
}

Test(regress, ping_flood_from_a_client_that_never_reads_pauses_reading_and_stays_bounded,
     .timeout = 60)
{
    static ws_seen_t seen;
    memset(&seen, 0, sizeof(seen));
    sq_app_t *app;
    cr_assert_eq(sq_app_create(&app), 0);
    sq_ws_opts_t o;
    sq_ws_opts_init(&o);
    o.max_queued_bytes = FLOOD_MAX_QUEUED;
    cr_assert_eq(sq_app_websocket(app, "/ws", &seen_echo, &o, &seen), 0);
    th_server_t *ts = th_server_start(app, NULL);
    th_conn_t c;
    ws_open(&c, th_server_port(ts), "/ws");
    cr_assert_eq(th_wait_atomic(&seen.opens, 1, 5000), 1);

    /* many pings back to back, sent without blocking so the flood can go on while the
     * server stops reading */
    enum { PER_BUF = 500 };
    uint8_t payload[PING_LEN];
    ping_payload(payload);
    uint8_t *pings = malloc((size_t)PER_BUF * PING_FRAME);
    cr_assert_not_null(pings);
    for (int i = 0; i < PER_BUF; i++)
        cr_assert_eq(ws_frame(pings + (size_t)i * PING_FRAME, FIN | OP_PING, payload, PING_LEN),
                     PING_FRAME);
    const size_t buf_len = (size_t)PER_BUF * PING_FRAME;
    size_t rss0 = rss_bytes(), rss_max = rss0, queued_max = 0;
    unsigned long long sent = 0; /* bytes */
    uint64_t t0 = th_now_ms(), next_probe = t0;
    while (th_now_ms() - t0 < 2000) {
        size_t off = (size_t)(sent % buf_len);
        ssize_t n = send(c.fd, pings + off, buf_len - off, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n > 0) {
            sent += (unsigned long long)n;
        } else {
            cr_assert(n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR),
                      "the server dropped the connection during the flood: %s", strerror(errno));
            struct pollfd pfd = {.fd = c.fd, .events = POLLOUT};
            poll(&pfd, 1, 10);
        }
        if (th_now_ms() >= next_probe) {
            queued_probe_t p = {.seen = &seen};
            th_server_call(ts, probe_queued, &p);
            cr_assert(p.open, "the WebSocket closed during the flood");
            if (p.queued > queued_max)
                queued_max = p.queued;
            size_t rss = rss_bytes();
            if (rss > rss_max)
                rss_max = rss;
            next_probe = th_now_ms() + 20;
        }
    }
    size_t grew = rss_max - rss0;
    cr_assert_lt(grew, FLOOD_RSS_SLACK,
                 "RSS grew by %zu bytes during a flood of %llu bytes of pings", grew, sent);
    /* past the limit reading pauses: one read's worth of pongs (64 KiB of pings) may land
     * on top of it */
    cr_assert_leq(queued_max, 2 * FLOOD_MAX_QUEUED, "queued %zu bytes, limit %d", queued_max,
                  FLOOD_MAX_QUEUED);
    cr_assert_gt(queued_max, FLOOD_MAX_QUEUED / 2,
                 "the flood did fill the queue (%zu bytes): the bound was tested", queued_max);

    /* now read: the rest of a ping cut short, then a text message, go out as the pongs
     * come in; the echo comes after every pong */
    static const char hello[] = "still usable";
    size_t rest = (size_t)(sent % PING_FRAME);
    rest = rest ? PING_FRAME - rest : 0;
    size_t off = (size_t)(sent % buf_len);
    uint8_t tail[PING_FRAME + sizeof(hello) + 14];
    memcpy(tail, pings + off, rest);
    size_t tail_len = rest + ws_frame(tail + rest, FIN | OP_TEXT, hello, strlen(hello));
    size_t tail_off = 0;
    pong_count_t pc = {0};
    size_t pos = 0;
    uint64_t end = th_now_ms() + 30000;
    while (!pc.found && pc.err[0] == '\0' && !c.eof && th_now_ms() < end) {
        struct pollfd pfd = {.fd = c.fd, .events = POLLIN | (tail_off < tail_len ? POLLOUT : 0)};
        if (poll(&pfd, 1, 100) <= 0)
            continue;
        if ((pfd.revents & POLLOUT) && tail_off < tail_len) {
            ssize_t n =
                send(c.fd, tail + tail_off, tail_len - tail_off, MSG_DONTWAIT | MSG_NOSIGNAL);
            if (n > 0)
                tail_off += (size_t)n;
        }
        if (pfd.revents & (POLLIN | POLLHUP | POLLERR)) {
            th_conn_read_some(&c, 10);
            pong_feed(&c, &pos, hello, &pc);
        }
    }
    cr_assert_eq(pc.err[0], '\0', "%s", pc.err);
    cr_assert(pc.found, "the echo came after %zu pongs (eof %d)", pc.pongs, c.eof);
    /* squall writes the echo straight to the connection while wslay may still hold pongs
     * for pings read in the same batch: the rest come before our close is answered */
    uint8_t code[2] = {0x03, 0xE8};
    ws_send(&c, FIN | OP_CLOSE, code, 2);
    bool closed = false;
    while (!closed && pc.err[0] == '\0' && th_now_ms() < end) {
        wsf_t f;
        if (!wsf_next(&c, &pos, &f)) {
            cr_assert_not(c.eof, "closed before the close echo");
            th_conn_read_some(&c, 100);
            continue;
        }
        if (f.opcode == OP_PONG && f.len == PING_LEN && memcmp(f.payload, payload, PING_LEN) == 0)
            pc.pongs++;
        else if (f.opcode == OP_CLOSE && f.len >= 2 && (f.payload[0] << 8 | f.payload[1]) == 1000)
            closed = true;
        else
            snprintf(pc.err, sizeof(pc.err), "opcode %d, %zu bytes, before the close echo",
                     f.opcode, f.len);
    }
    ws_compact(&c, &pos);
    cr_assert_eq(pc.err[0], '\0', "%s", pc.err);
    cr_assert(closed, "the close was answered");
    cr_assert_eq(th_conn_wait_closed(&c, 5000), 0);
    unsigned long long pings_sent = (sent + rest) / PING_FRAME;
    cr_assert_geq(pc.pongs, 1);
    cr_assert_leq(pc.pongs, pings_sent, "%zu pongs for %llu pings", pc.pongs, pings_sent);
    th_conn_close(&c);
    free(pings);
    th_server_stop(ts, 1000);
    sq_app_destroy(app);
    cr_assert_eq(atomic_load(&seen.opens), 1);
    cr_assert_eq(atomic_load(&seen.messages), 1);
    cr_assert_eq(atomic_load(&seen.bad_echo), 0);
    cr_assert_eq(atomic_load(&seen.closes), 1);
    cr_assert_eq(atomic_load(&seen.close_code), 1000);
}

/* ======================================================================================
 * 7. One message in many one-byte fragments
 * ==================================================================================== */

enum { TINY_FRAGMENTS = 200000, TINY_FRAME = 2 + 4 + 1, SMALL_MAX = 1000 };

/* `n` one-byte fragments of one text message; the last has FIN when `fin`. */
static uint8_t *tiny_fragments(size_t n, bool fin)
{
    uint8_t *buf = malloc(n * TINY_FRAME);
    cr_assert_not_null(buf);
    for (size_t i = 0; i < n; i++) {
        uint8_t b0 = i == 0 ? OP_TEXT : OP_CONT;
        if (fin && i == n - 1)
            b0 |= FIN;
        uint8_t ch = (uint8_t)('a' + i % 26);
        cr_assert_eq(ws_frame(buf + i * TINY_FRAME, b0, &ch, 1), TINY_FRAME);
    }
    return buf;
}

Test(regress, message_of_200000_one_byte_fragments_is_delivered_once_in_bounded_memory,
     .timeout = 60)
{
    static ws_seen_t seen, small;
    memset(&seen, 0, sizeof(seen));
    memset(&small, 0, sizeof(small));
    sq_app_t *app;
    cr_assert_eq(sq_app_create(&app), 0);
    cr_assert_eq(sq_app_websocket(app, "/ws", &seen_echo, NULL, &seen), 0);
    sq_ws_opts_t o;
    sq_ws_opts_init(&o);
    o.max_message_bytes = SMALL_MAX;
    cr_assert_eq(sq_app_websocket(app, "/small", &seen_echo, &o, &small), 0);
    th_server_t *ts = th_server_start(app, NULL);
    int port = th_server_port(ts);

    uint8_t *frags = tiny_fragments(TINY_FRAGMENTS, true);
    th_conn_t c;
    ws_open(&c, port, "/ws");
    size_t rss0 = rss_bytes(), rss_max = rss0;
    /* all fragments but the last; then a ping (allowed between fragments, RFC 6455 §5.4):
     * its pong says the server has taken every fragment before it, and the message is as
     * big in memory as it gets */
    const size_t most = (size_t)(TINY_FRAGMENTS - 1) * TINY_FRAME;
    for (size_t off = 0; off < most; off += 64 * 1024) {
        size_t n = most - off < 64 * 1024 ? most - off : 64 * 1024;
        cr_assert_eq(th_conn_send(&c, frags + off, n), 0);
        size_t rss = rss_bytes();
        if (rss > rss_max)
            rss_max = rss;
    }
    ws_send(&c, FIN | OP_PING, "sync", 4);
    wsf_t f;
    uint8_t *p;
    int rc = ws_read(&c, &f, &p, 20000);
    cr_assert_eq(rc, 0, "the pong: %s", uv_err_name(rc));
    cr_assert_eq(f.opcode, OP_PONG);
    cr_assert(f.len == 4 && memcmp(p, "sync", 4) == 0);
    free(p);
    size_t rss = rss_bytes();
    if (rss > rss_max)
        rss_max = rss;
    cr_assert_eq(atomic_load(&seen.messages), 0, "no message before its last fragment");
    cr_assert_eq(th_conn_send(&c, frags + most, TINY_FRAME), 0);
    free(frags);
    rc = ws_read(&c, &f, &p, 20000);
    cr_assert_eq(rc, 0, "the echo: %s", uv_err_name(rc));
    rss = rss_bytes();
    if (rss > rss_max)
        rss_max = rss;
    cr_assert_eq(f.opcode, OP_TEXT);
    cr_assert(f.fin);
    cr_assert_eq(f.len, TINY_FRAGMENTS, "%zu bytes", f.len);
    for (size_t i = 0; i < f.len; i++)
        cr_assert_eq(p[i], (uint8_t)('a' + i % 26), "byte %zu", i);
    free(p);
    /* what a 200,000-byte message may cost, whatever its framing: with an allocation per
     * fragment (wslay's own reassembly) it took 18 MiB, 27 MiB under ASan */
    size_t grew = rss_max - rss0;
    cr_assert_lt(grew, 8u << 20, "RSS grew by %zu bytes for a %d-byte message", grew,
                 TINY_FRAGMENTS);
    ws_close_normal(&c);
    th_conn_close(&c);

    /* fragments that add up past max_message_bytes: 1009, no message */
    frags = tiny_fragments(SMALL_MAX + 1, false);
    ws_open(&c, port, "/small");
    cr_assert_eq(th_conn_send(&c, frags, (SMALL_MAX + 1) * TINY_FRAME), 0);
    free(frags);
    ws_expect_close(&c, 1009);
    th_conn_close(&c);

    th_server_stop(ts, 1000);
    sq_app_destroy(app);
    cr_assert_eq(atomic_load(&seen.opens), 1);
    cr_assert_eq(atomic_load(&seen.messages), 1, "%d messages", atomic_load(&seen.messages));
    cr_assert_eq(atomic_load(&seen.last_len), TINY_FRAGMENTS);
    cr_assert_eq(atomic_load(&seen.last_binary), 0);
    cr_assert_eq(atomic_load(&seen.bad_echo), 0);
    cr_assert_eq(atomic_load(&seen.closes), 1);
    cr_assert_eq(atomic_load(&small.opens), 1);
    cr_assert_eq(atomic_load(&small.messages), 0);
    cr_assert_eq(atomic_load(&small.closes), 1);
    cr_assert_eq(atomic_load(&small.close_code), 1009);
}

/* ======================================================================================
 * 8. A .drain callback that broadcasts while a slow reader resumes
 * ==================================================================================== */

enum {
    BC_CLIENTS = 4, /* client 0 is the slow reader */
    BC_MAX_QUEUED = 64 * 1024,
    BC_PUMP_MSG = 16 * 1024, /* what the slow reader is sent, 2 a millisecond */
    BC_MSG = 2000,           /* each broadcast */
    BC_PER_DRAIN = 3,
    BC_MAX_ROUNDS = 2000, /* drains that broadcast, at most */
};

static struct {
    sq_ws_t *ws[BC_CLIENTS]; /* loop thread only */
    int n;
    sq_ws_t *slow;
    uv_timer_t pump;
    bool pump_on, pump_closed;
    int bseq; /* the next broadcast's number */
    atomic_int opens, closes, close_code_bad;
    atomic_int drains, drain_rounds, drains_at_stop;
    atomic_int pump_sent, pump_stopped, pump_bad;
    atomic_int end_taken;
} bc;

static void bc_pump_payload(int seq, uint8_t *p)
{
    p[0] = (uint8_t)(seq >> 24);
    p[1] = (uint8_t)(seq >> 16);
    p[2] = (uint8_t)(seq >> 8);
    p[3] = (uint8_t)seq;
    for (int i = 4; i < BC_PUMP_MSG; i++)
        p[i] = (uint8_t)(seq * 31 + i);
}

static void bc_msg(int seq, char *out)
{
    int n = snprintf(out, BC_MSG + 1, "b %08d ", seq);
    for (int i = n; i < BC_MSG; i++)
        out[i] = (char)('a' + (seq + i) % 26);
}

static void bc_pump_closed(uv_handle_t *h)
{
    bc.pump_closed = true;
}

static void bc_pump_stop(void)
{
    if (!bc.pump_on)
        return;
    bc.pump_on = false;
    uv_close((uv_handle_t *)&bc.pump, bc_pump_closed);
}

static void bc_pump_tick(uv_timer_t *t)
{
    static uint8_t payload[BC_PUMP_MSG];
    for (int i = 0; i < 2 && bc.pump_on; i++) {
        int seq = atomic_load(&bc.pump_sent);
        bc_pump_payload(seq, payload);
        int rc = sq_ws_send_binary(bc.slow, payload, BC_PUMP_MSG);
        if (rc == 0) {
            atomic_fetch_add(&bc.pump_sent, 1);
            continue;
        }
        if (rc != UV_ENOBUFS)
            atomic_fetch_add(&bc.pump_bad, 1);
        /* the slow reader's queue is full: stop, and wait for .drain */
        atomic_store(&bc.drains_at_stop, atomic_load(&bc.drains));
        atomic_store(&bc.pump_stopped, 1);
        bc_pump_stop();
    }
}

static void bc_open(sq_ws_t *ws, sq_req_t *req, void *data)
{
    if (bc.n < BC_CLIENTS)
        bc.ws[bc.n++] = ws;
    atomic_fetch_add(&bc.opens, 1);
}

static void bc_message(sq_ws_t *ws, int binary, const char *msg, size_t len, void *data)
{
    if (len == 4 && memcmp(msg, "fill", 4) == 0 && !bc.pump_on && bc.slow == NULL) {
        bc.slow = ws;
        bc.pump_on = true;
        uv_timer_init(sq_ws_loop(ws), &bc.pump);
        uv_timer_start(&bc.pump, bc_pump_tick, 1, 1);
    } else if (len == 4 && memcmp(msg, "end?", 4) == 0) {
        atomic_store(&bc.end_taken, (int)sq_ws_broadcast(bc.ws, (size_t)bc.n, 0, "end", 3));
    }
}

/* Broadcasts to every connection, the slow reader included: its own segments go into the
 * very batch whose completion called this. */
static void bc_drain(sq_ws_t *ws, void *data)
{
    atomic_fetch_add(&bc.drains, 1);
    if (ws != bc.slow || atomic_load(&bc.drain_rounds) >= BC_MAX_ROUNDS)
        return;
    atomic_fetch_add(&bc.drain_rounds, 1);
    char msg[BC_MSG + 1];
    for (int k = 0; k < BC_PER_DRAIN; k++) {
        bc_msg(bc.bseq++, msg);
        sq_ws_broadcast(bc.ws, (size_t)bc.n, 0, msg, BC_MSG);
    }
}

static void bc_close(sq_ws_t *ws, int code, const char *reason, void *data)
{
    for (int i = 0; i < bc.n; i++) {
        if (bc.ws[i] == ws) {
            bc.ws[i] = bc.ws[--bc.n];
            break;
        }
    }
    if (ws == bc.slow) {
        bc_pump_stop();
        bc.slow = NULL;
    }
    if (code != 1000)
        atomic_fetch_add(&bc.close_code_bad, 1);
    atomic_fetch_add(&bc.closes, 1);
}

static const sq_ws_handler_t bc_handler = {
    .open = bc_open,
    .message = bc_message,
    .close = bc_close,
    .drain = bc_drain,
};

/* One client of the broadcast test and what it has checked so far. */
typedef struct bc_client {
    th_conn_t c;
    size_t pos;
    int pumped;     /* binary messages, in sequence */
    int broadcasts; /* broadcast messages, numbers increasing */
    int last_b;
    bool got_end;
    char err[160];
} bc_client_t;

static void bc_check(bc_client_t *k, int idx)
{
    wsf_t f;
    static uint8_t want[BC_PUMP_MSG];
    char msg[BC_MSG + 1];
    while (k->err[0] == '\0' && wsf_next(&k->c, &k->pos, &f)) {
        if (f.masked || f.rsv || !f.fin) {
            snprintf(k->err, sizeof(k->err), "client %d: frame header %d/%d/%d", idx, f.masked,
                     f.rsv, f.fin);
        } else if (f.opcode == OP_BIN) {
            bc_pump_payload(k->pumped, want);
            if (idx != 0 || f.len != BC_PUMP_MSG || memcmp(f.payload, want, BC_PUMP_MSG) != 0)
                snprintf(k->err, sizeof(k->err), "client %d: pumped message %d is not intact", idx,
                         k->pumped);
            k->pumped++;
        } else if (f.opcode == OP_TEXT && f.len == 3 && memcmp(f.payload, "end", 3) == 0) {
            k->got_end = true;
        } else if (f.opcode == OP_TEXT && f.len == BC_MSG) {
            int seq = atoi((const char *)f.payload + 2);
            bc_msg(seq, msg);
            if (seq <= k->last_b || memcmp(f.payload, msg, BC_MSG) != 0)
                snprintf(k->err, sizeof(k->err), "client %d: broadcast %d (after %d) not intact",
                         idx, seq, k->last_b);
            k->last_b = seq;
            k->broadcasts++;
        } else {
            snprintf(k->err, sizeof(k->err), "client %d: unexpected opcode %d, %zu bytes", idx,
                     f.opcode, f.len);
        }
    }
    ws_compact(&k->c, &k->pos);
}

/* Reads and checks whatever arrives for the clients in `mask`, for up to ms. */
static void bc_read(bc_client_t *k, unsigned mask, int ms)
{
    uint64_t end = th_now_ms() + (uint64_t)ms;
    do {
        struct pollfd pfd[BC_CLIENTS];
        int idx[BC_CLIENTS], n = 0;
        for (int i = 0; i < BC_CLIENTS; i++) {
            if (!(mask & (1u << i)) || k[i].c.eof)
                continue;
            pfd[n] = (struct pollfd){.fd = k[i].c.fd, .events = POLLIN};
            idx[n++] = i;
        }
        if (n == 0 || poll(pfd, (nfds_t)n, 5) <= 0)
            continue;
        for (int j = 0; j < n; j++) {
            if (pfd[j].revents == 0)
                continue;
            th_conn_read_some(&k[idx[j]].c, 1);
            bc_check(&k[idx[j]], idx[j]);
        }
    } while (th_now_ms() < end);
}

Test(regress, drain_callback_that_broadcasts_while_a_slow_reader_resumes_keeps_frames_intact,
     .timeout = 60)
{
    memset(&bc, 0, sizeof(bc));
    sq_app_t *app;
    cr_assert_eq(sq_app_create(&app), 0);
    sq_ws_opts_t o;
    sq_ws_opts_init(&o);
    o.max_queued_bytes = BC_MAX_QUEUED;
    o.overflow = SQ_WS_OVERFLOW_DROP; /* the slow reader keeps its connection */
    cr_assert_eq(sq_app_websocket(app, "/bc", &bc_handler, &o, NULL), 0);
    th_server_t *ts = th_server_start(app, NULL);
    int port = th_server_port(ts);
    bc_client_t k[BC_CLIENTS];
    memset(k, 0, sizeof(k));
    for (int i = 0; i < BC_CLIENTS; i++) {
        ws_open(&k[i].c, port, "/bc");
        k[i].last_b = -1;
        cr_assert_eq(th_wait_atomic(&bc.opens, i + 1, 5000), i + 1);
    }
    const unsigned all = (1u << BC_CLIENTS) - 1, fast = all & ~1u;

    /* the slow reader asks to be sent more than it reads; the others keep reading */
    ws_send(&k[0].c, FIN | OP_TEXT, "fill", 4);
    uint64_t end = th_now_ms() + 30000;
    while (!atomic_load(&bc.pump_stopped) && th_now_ms() < end)
        bc_read(k, fast, 20);
    cr_assert_eq(atomic_load(&bc.pump_stopped), 1, "the slow reader's queue filled");
    bc_read(k, fast, 300);

    /* it resumes: everything pumped arrives, and its drains broadcast to everyone */
    int pumped = atomic_load(&bc.pump_sent);
    end = th_now_ms() + 30000;
    while (k[0].pumped < pumped && k[0].err[0] == '\0' && !k[0].c.eof && th_now_ms() < end)
        bc_read(k, all, 20);
    cr_assert_eq(k[0].err[0], '\0', "%s", k[0].err);
    cr_assert_eq(k[0].pumped, pumped, "%d of %d pumped messages", k[0].pumped, pumped);
    bc_read(k, all, 200);
    ws_send(&k[0].c, FIN | OP_TEXT, "end?", 4);
    end = th_now_ms() + 20000;
    for (;;) {
        bool done = true;
        for (int i = 0; i < BC_CLIENTS; i++)
            done = done && (k[i].got_end || k[i].err[0] != '\0' || k[i].c.eof);
        if (done || th_now_ms() >= end)
            break;
        bc_read(k, all, 20);
    }
    for (int i = 0; i < BC_CLIENTS; i++) {
        cr_assert_eq(k[i].err[0], '\0', "%s", k[i].err);
        cr_assert(k[i].got_end, "client %d got the end (eof %d)", i, k[i].c.eof);
        cr_assert_geq(k[i].broadcasts, 1, "client %d got broadcasts", i);
    }
    cr_assert_eq(k[0].pumped, pumped);
    for (int i = 0; i < BC_CLIENTS; i++) {
        ws_close_normal(&k[i].c);
        th_conn_close(&k[i].c);
    }
    cr_assert_eq(th_wait_atomic(&bc.closes, BC_CLIENTS, 5000), BC_CLIENTS);
    th_server_stop(ts, 1000);
    sq_app_destroy(app);
    cr_assert_eq(atomic_load(&bc.opens), BC_CLIENTS);
    cr_assert_eq(atomic_load(&bc.closes), BC_CLIENTS);
    cr_assert_eq(atomic_load(&bc.close_code_bad), 0);
    cr_assert_eq(atomic_load(&bc.pump_bad), 0);
    cr_assert(bc.pump_closed);
    cr_assert_gt(atomic_load(&bc.drains), atomic_load(&bc.drains_at_stop),
                 "a drain came as the slow reader resumed");
    cr_assert_geq(atomic_load(&bc.drain_rounds), 1);
    cr_assert_eq(atomic_load(&bc.end_taken), BC_CLIENTS);
}
