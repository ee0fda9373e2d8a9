/* squall test harness — a server on its own loop in a thread, and a blocking-socket client.
 *
 *     sq_app_t *app = ...;                       routes set up by the test
 *     th_server_t *ts = th_server_start(app, NULL);
 *     th_conn_t c;
 *     th_conn_open(&c, th_server_port(ts));
 *     th_conn_sends(&c, "GET / HTTP/1.1\r\nHost: t\r\n\r\n");
 *     th_res_t r;
 *     cr_assert_eq(th_conn_read_res(&c, &r, 2000, false), 0);
 *     cr_assert_eq(r.status, 200);
 *     th_res_free(&r);
 *     th_conn_close(&c);
 *     th_server_stop(ts, 1000);                  asserts a clean shutdown
 *
 * The server side runs handlers on its own thread: state a handler shares with the test
 * is read after th_server_stop (which joins the thread), through th_server_call, or with
 * C11 atomics. Never cr_assert there (nor in th_server_call's function, a blocking
 * handler or any thread of the test's own): Criterion ends a test by a longjmp on the
 * test's thread only. Record what went wrong and assert on the test's thread. Every call
 * that waits takes a timeout, so a test can never hang; wait for an event or a counter
 * (th_wait_atomic, th_server_wait_open, th_conn_wait_closed) rather than sleeping.
 * Functions that return int return 0 or a negative libuv code (UV_ETIMEDOUT, UV_EOF, ...).
 */
#ifndef SQUALL_TESTS_HARNESS_H
#define SQUALL_TESTS_HARNESS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <squall.h>

/* ---- the server on its own loop and thread ---- */

typedef struct th_server th_server_t;

typedef struct th_server_cfg {
    sq_app_t *app;               /* borrowed; must outlive th_server_stop */
    const sq_server_opts_t *opts;/* copied; NULL: defaults */
    const char *host;            /* TCP listener address, "127.0.0.1" when NULL */
    const char *unix_path;       /* a Unix domain socket listener instead, when set */
} th_server_cfg_t;

/* Creates the loop and server, listens on 127.0.0.1 port 0 and starts the loop thread.
 * Fails the test (cr_assert) on any error. */
th_server_t *th_server_start(sq_app_t *app, const sq_server_opts_t *opts);
th_server_t *th_server_start_cfg(const th_server_cfg_t *cfg);

/* The port chosen by the kernel (TCP listeners only). */
int th_server_port(const th_server_t *ts);
/* The server's loop; only touch it on the loop thread (handlers, th_server_call). */
uv_loop_t *th_server_loop(const th_server_t *ts);

/* Runs fn(srv, data) on the loop thread and waits for it to return. */
void th_server_call(th_server_t *ts, void (*fn)(sq_server_t *srv, void *data), void *data);
/* A copy of the server's counters, taken on the loop thread. */
void th_server_stats(th_server_t *ts, sq_server_stats_t *out);
/* Polls the counters until connections_open <= want or timeout_ms passes. Returns the
 * last connections_open seen. */
uint64_t th_server_wait_open(th_server_t *ts, uint64_t want, int timeout_ms);
/* ...until connections_open >= want (the server has accepted them): the same return. */
uint64_t th_server_wait_opened(th_server_t *ts, uint64_t want, int timeout_ms);

/* sq_server_destroy(grace_ms) on the loop thread, joins the thread, and asserts that the
 * close callback ran exactly once, that uv_loop_close() returned 0 and, in an ASan build,
 * that LeakSanitizer finds no unreachable block at that point (the test's own included).
 * Frees ts. Returns the milliseconds the shutdown took. */
uint64_t th_server_stop(th_server_t *ts, uint64_t grace_ms);
/* th_server_stop, and *final gets the counters as they were in the close callback: after
 * every connection, response and blocking job (so every done callback) is over. */
uint64_t th_server_stop_stats(th_server_t *ts, uint64_t grace_ms, sq_server_stats_t *final);

/* Milliseconds on a monotonic clock. */
uint64_t th_now_ms(void);
/* Sleeps ms milliseconds. */
void th_sleep_ms(unsigned ms);
/* Polls *flag until it is >= want or timeout_ms passes. Returns the last
 * value seen. */
int th_wait_atomic(const atomic_int *flag, int want, int timeout_ms);

/* ---- the client: a blocking socket with a receive buffer ---- */

typedef struct th_conn {
    int fd;
    char *buf;         /* received bytes not consumed yet */
    size_t len, cap;
    bool eof;          /* the peer closed (EOF or reset) */
    unsigned nreads;   /* recv calls that returned bytes */
} th_conn_t;

/* Connects to 127.0.0.1:port (th_conn_open), host:port (an IPv4/IPv6 literal) or a Unix
 * domain socket. TCP_NODELAY is set, so every send leaves as its own segment. */
int th_conn_open(th_conn_t *c, int port);
int th_conn_open_host(th_conn_t *c, const char *host, int port);
int th_conn_open_unix(th_conn_t *c, const char *path);

/* Sends all bytes. Returns 0, or a negative code when the peer has gone. */
int th_conn_send(th_conn_t *c, const void *data, size_t len);
int th_conn_sends(th_conn_t *c, const char *s);
/* Sends `len` bytes in pieces of `step` bytes, pausing `pause_us` between pieces, so the
 * server sees them in separate reads. */
int th_conn_send_split(th_conn_t *c, const void *data, size_t len, size_t step,
                       unsigned pause_us);

/* One parsed response. Strings are NUL-terminated and owned (th_res_free). */
typedef struct th_res {
    int status;
    int minor;           /* HTTP/1.<minor> */
    char *head;          /* status line and header lines, up to the blank line */
    char *body;          /* de-chunked body (may contain NULs) */
    size_t body_len;
    bool chunked;        /* Transfer-Encoding: chunked framing was used */
    bool close_delimited;/* no length: the body ended with the connection */
    char *raw;           /* the exact bytes of the response on the wire */
    size_t raw_len;
} th_res_t;

/* Reads one whole response (head, and body framed by Content-Length, chunked or close)
 * within timeout_ms. `head_req`: the request was HEAD, so there is no body. A 1xx
 * response is returned on its own (read again for the final one).
 * Returns 0, UV_ETIMEDOUT, UV_EOF (closed before the response was complete) or
 * UV_EPROTO (malformed). */
int th_conn_read_res(th_conn_t *c, th_res_t *r, int timeout_ms, bool head_req);
/* The first header `name` (case-insensitive) of r, copied to a static buffer, or NULL. */
const char *th_res_header(const th_res_t *r, const char *name);
void th_res_free(th_res_t *r);

/* Reads one response on c within 5 s and asserts its status and body (body NULL: not
 * checked). */
void th_expect_res(th_conn_t *c, int status, const char *body);
/* A request for `path` on a new connection gets 200 and `body`: the server goes on. */
void th_expect_healthy(int port, const char *path, const char *body);

/* Waits until the peer closes. Returns 0 when it closed without sending anything more,
 * UV_ETIMEDOUT, or UV_EPROTO when bytes arrived instead (they stay in c->buf). */
int th_conn_wait_closed(th_conn_t *c, int timeout_ms);
/* Reads whatever arrives within timeout_ms into c->buf. Returns bytes added (0 on
 * timeout or EOF: see c->eof). */
ssize_t th_conn_read_some(th_conn_t *c, int timeout_ms);

void th_conn_close(th_conn_t *c);
/* Closes with a reset (SO_LINGER 0) instead of a FIN. */
void th_conn_abort(th_conn_t *c);

/* ---- table tests ---- */

/* Checks one fact about a row of a table test (`name` names the row): on failure marks the
 * test failed with the row's name and message and jumps to the label `out`, the row's
 * clean-up, so that the next row still runs. On the test's thread only. */
#define TH_ROW_CHECK(name, cond, fmt, ...)                                                         \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            cr_expect_fail("[%s] " fmt, (name), ##__VA_ARGS__);                                    \
            goto out;                                                                              \
        }                                                                                          \
    } while (0)

/* ---- one-shot helpers ---- */

/* Opens a connection, sends `raw`, reads one response into r and closes. Returns as
 * th_conn_read_res, or a connect error. */
int th_request(int port, const char *raw, th_res_t *r);

/* A free TCP port on 127.0.0.1 (bound and released; for child processes). */
int th_free_port(void);

#endif
