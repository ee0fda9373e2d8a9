/* The test harness: a squall server on its own loop thread, a blocking-socket client with a
 * small HTTP/1.1 response reader of its own (so the tests do not trust squall's parser to
 * check squall's output). See harness.h for the contract of each call. */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdatomic.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "support/harness.h"

/* ---- the server thread ---- */

struct th_server {
    uv_loop_t loop;
    sq_server_t *srv;
    uv_thread_t thread;
    uv_async_t wake;         /* calls and the stop request reach the loop through it */
    uv_mutex_t mu;
    uv_cond_t cv;
    void (*call_fn)(sq_server_t *, void *);
    void *call_data;
    bool call_done;
    bool stop;
    bool finished;           /* the thread left uv_run and closed the loop */
    uint64_t grace_ms;
    int closed_cbs;          /* sq_server_destroy's callback: must be exactly 1 */
    sq_server_stats_t final; /* the counters when that callback ran */
    int loop_close_rc;
    int port;
};

uint64_t th_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

void th_sleep_ms(unsigned ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

int th_wait_atomic(const atomic_int *flag, int want, int timeout_ms)
{
    uint64_t end = th_now_ms() + (uint64_t)timeout_ms;
    int v;
    while ((v = atomic_load(flag)) < want && th_now_ms() < end)
        th_sleep_ms(2);
    return v;
}

static void on_server_closed(sq_server_t *srv, void *data)
{
    th_server_t *ts = data;
    ts->closed_cbs++;
    sq_server_stats(srv, &ts->final); /* every connection, response and job is over */
}

static void on_wake(uv_async_t *a)
{
    th_server_t *ts = a->data;
    uv_mutex_lock(&ts->mu);
    if (ts->call_fn != NULL) {
        ts->call_fn(ts->srv, ts->call_data);
        ts->call_fn = NULL;
        ts->call_done = true;
        uv_cond_broadcast(&ts->cv);
    }
    bool stop = ts->stop;
    uv_mutex_unlock(&ts->mu);
    if (stop && !uv_is_closing((uv_handle_t *)a)) {
        int rc = sq_server_destroy(ts->srv, ts->grace_ms, on_server_closed, ts);
        if (rc != 0)
            fprintf(stderr, "harness: sq_server_destroy: %s\n", sq_strerror(rc));
        uv_close((uv_handle_t *)a, NULL);
    }
}

static void server_main(void *arg)
{
    th_server_t *ts = arg;
    uv_run(&ts->loop, UV_RUN_DEFAULT);
    int rc = uv_loop_close(&ts->loop);
    if (rc != 0) {
        fprintf(stderr, "harness: uv_loop_close: %s; handles left:\n", uv_err_name(rc));
        uv_print_all_handles(&ts->loop, stderr);
    }
    uv_mutex_lock(&ts->mu);
    ts->loop_close_rc = rc;
    ts->finished = true;
    uv_cond_broadcast(&ts->cv);
    uv_mutex_unlock(&ts->mu);
}

th_server_t *th_server_start_cfg(const th_server_cfg_t *cfg)
{
    /* as every program that embeds a server must (server.h): a write to a client that
     * has gone must not kill the process */
    signal(SIGPIPE, SIG_IGN);
    th_server_t *ts = calloc(1, sizeof(*ts));
    cr_assert_not_null(ts);
    cr_assert_eq(uv_loop_init(&ts->loop), 0);
    cr_assert_eq(uv_mutex_init(&ts->mu), 0);
    cr_assert_eq(uv_cond_init(&ts->cv), 0);
    cr_assert_eq(uv_async_init(&ts->loop, &ts->wake, on_wake), 0);
    ts->wake.data = ts;
    int rc = sq_server_create(&ts->srv, &ts->loop, cfg->app, cfg->opts);
    cr_assert_eq(rc, 0, "sq_server_create: %s", sq_strerror(rc));
    /* The loop does not run yet, so this thread may still use the server. */
    if (cfg->unix_path != NULL) {
        unlink(cfg->unix_path);
        rc = sq_server_listen_unix(ts->srv, cfg->unix_path);
        cr_assert_eq(rc, 0, "listen %s: %s", cfg->unix_path, sq_strerror(rc));
        ts->port = -1;
    } else {
        const char *host = cfg->host ? cfg->host : "127.0.0.1";
        rc = sq_server_listen(ts->srv, host, 0);
        cr_assert_eq(rc, 0, "listen %s: %s", host, sq_strerror(rc));
        ts->port = sq_server_port(ts->srv);
        cr_assert_gt(ts->port, 0);
    }
    cr_assert_eq(uv_thread_create(&ts->thread, server_main, ts), 0);
    return ts;
}

th_server_t *th_server_start(sq_app_t *app, const sq_server_opts_t *opts)
{
    th_server_cfg_t cfg = {.app = app, .opts = opts};
    return th_server_start_cfg(&cfg);
}

int th_server_port(const th_server_t *ts)
{
    return ts->port;
}

uv_loop_t *th_server_loop(const th_server_t *ts)
{
    return (uv_loop_t *)&ts->loop;
}

/* Waits on ts->cv until *flag, for at most timeout_ms. Called with ts->mu held. */
static bool wait_flag(th_server_t *ts, const bool *flag, uint64_t timeout_ms)
{
    uint64_t end = th_now_ms() + timeout_ms;
    while (!*flag) {
        uint64_t now = th_now_ms();
        if (now >= end)
            return false;
        uv_cond_timedwait(&ts->cv, &ts->mu, (end - now) * 1000000);
    }
    return true;
}

void th_server_call(th_server_t *ts, void (*fn)(sq_server_t *, void *), void *data)
{
    uv_mutex_lock(&ts->mu);
    cr_assert_null(ts->call_fn, "th_server_call is not re-entrant");
    ts->call_fn = fn;
    ts->call_data = data;
    ts->call_done = false;
    uv_async_send(&ts->wake);
    bool done = wait_flag(ts, &ts->call_done, 10000);
    uv_mutex_unlock(&ts->mu);
    cr_assert(done, "the loop thread did not run th_server_call's function within 10 s");
}

static void copy_stats(sq_server_t *srv, void *data)
{
    sq_server_stats(srv, data);
}

void th_server_stats(th_server_t *ts, sq_server_stats_t *out)
{
    th_server_call(ts, copy_stats, out);
}

uint64_t th_server_wait_open(th_server_t *ts, uint64_t want, int timeout_ms)
{
    uint64_t end = th_now_ms() + (uint64_t)timeout_ms;
    sq_server_stats_t st;
    for (;;) {
        th_server_stats(ts, &st);
        if (st.connections_open <= want || th_now_ms() >= end)
            return st.connections_open;
        th_sleep_ms(2);
    }
}

uint64_t th_server_wait_opened(th_server_t *ts, uint64_t want, int timeout_ms)
{
    uint64_t end = th_now_ms() + (uint64_t)timeout_ms;
    sq_server_stats_t st;
    for (;;) {
        th_server_stats(ts, &st);
        if (st.connections_open >= want || th_now_ms() >= end)
            return st.connections_open;
        th_sleep_ms(2);
    }
}

/* In a sanitizer build, LeakSanitizer's check on demand; NULL otherwise. A leak found at a
 * test's exit would only be printed (Criterion does not look at the exit status), so the
 * harness checks at each server stop, where everything of the server must be freed. */
extern int __lsan_do_recoverable_leak_check(void) __attribute__((weak));

uint64_t th_server_stop(th_server_t *ts, uint64_t grace_ms)
{
    return th_server_stop_stats(ts, grace_ms, NULL);
}

uint64_t th_server_stop_stats(th_server_t *ts, uint64_t grace_ms, sq_server_stats_t *final)
{
    uint64_t t0 = th_now_ms();
    uv_mutex_lock(&ts->mu);
    ts->grace_ms = grace_ms;
    ts->stop = true;
    uv_async_send(&ts->wake);
    bool done = wait_flag(ts, &ts->finished, grace_ms + 5000);
    uv_mutex_unlock(&ts->mu);
    cr_assert(done, "the server did not shut down within grace + 5 s");
    uv_thread_join(&ts->thread);
    uint64_t took = th_now_ms() - t0;
    cr_assert_eq(ts->closed_cbs, 1, "close callback ran %d times", ts->closed_cbs);
    cr_assert_eq(ts->loop_close_rc, 0, "uv_loop_close: %s", uv_err_name(ts->loop_close_rc));
    if (final != NULL)
        *final = ts->final;
    uv_cond_destroy(&ts->cv);
    uv_mutex_destroy(&ts->mu);
    free(ts);
    if (__lsan_do_recoverable_leak_check != NULL)
        cr_assert_eq(__lsan_do_recoverable_leak_check(), 0, "leaks at server stop (see above)");
    return took;
}

/* ---- the client ---- */

static int conn_init(th_conn_t *c, int fd)
{
    memset(c, 0, sizeof(*c));
    c->fd = fd;
    return 0;
}

int th_conn_open_host(th_conn_t *c, const char *host, int port)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    memset(&ss, 0, sizeof(ss));
    if (uv_ip4_addr(host, port, (struct sockaddr_in *)&ss) == 0) {
        sl = sizeof(struct sockaddr_in);
    } else if (uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss) == 0) {
        sl = sizeof(struct sockaddr_in6);
    } else {
        return UV_EINVAL;
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return uv_translate_sys_error(errno);
    if (connect(fd, (struct sockaddr *)&ss, sl) != 0) {
        int rc = uv_translate_sys_error(errno);
        close(fd);
        return rc;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return conn_init(c, fd);
}

int th_conn_open(th_conn_t *c, int port)
{
    return th_conn_open_host(c, "127.0.0.1", port);
}

int th_conn_open_unix(th_conn_t *c, const char *path)
{
    struct sockaddr_un sun;
    memset(&sun, 0, sizeof(sun));
    sun.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof(sun.sun_path))
        return UV_ENAMETOOLONG;
    strcpy(sun.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return uv_translate_sys_error(errno);
    if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) != 0) {
        int rc = uv_translate_sys_error(errno);
        close(fd);
        return rc;
    }
    return conn_init(c, fd);
}

int th_conn_send(th_conn_t *c, const void *data, size_t len)
{
    const char *p = data;
    while (len > 0) {
        ssize_t n = send(c->fd, p, len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return uv_translate_sys_error(errno);
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int th_conn_sends(th_conn_t *c, const char *s)
{
    return th_conn_send(c, s, strlen(s));
}

int th_conn_send_split(th_conn_t *c, const void *data, size_t len, size_t step, unsigned pause_us)
{
    const char *p = data;
    for (size_t off = 0; off < len; off += step) {
        size_t n = len - off < step ? len - off : step;
        int rc = th_conn_send(c, p + off, n);
        if (rc != 0)
            return rc;
        if (pause_us != 0 && off + n < len)
            usleep(pause_us);
    }
    return 0;
}

/* One recv, waiting until `deadline`. Returns bytes added, 0 at EOF (or reset), or
 * UV_ETIMEDOUT. */
static ssize_t fill(th_conn_t *c, uint64_t deadline)
{
    if (c->eof)
        return 0;
    for (;;) {
        uint64_t now = th_now_ms();
        if (now >= deadline)
            return UV_ETIMEDOUT;
        struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
        int pr = poll(&pfd, 1, (int)(deadline - now));
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr <= 0)
            return UV_ETIMEDOUT;
        if (c->cap - c->len < 4096) {
            size_t cap = c->cap ? c->cap * 2 : 16384;
            char *b = realloc(c->buf, cap + 1);
            cr_assert_not_null(b);
            c->buf = b;
            c->cap = cap;
        }
        ssize_t n = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            c->eof = true; /* EOF, or ECONNRESET: either way the peer is gone */
            return 0;
        }
        c->len += (size_t)n;
        c->buf[c->len] = '\0';
        c->nreads++;
        return n;
    }
}

ssize_t th_conn_read_some(th_conn_t *c, int timeout_ms)
{
    ssize_t n = fill(c, th_now_ms() + (uint64_t)timeout_ms);
    return n < 0 ? 0 : n;
}

int th_conn_wait_closed(th_conn_t *c, int timeout_ms)
{
    if (c->len > 0)
        return UV_EPROTO;
    ssize_t n = fill(c, th_now_ms() + (uint64_t)timeout_ms);
    if (n == 0)
        return 0;
    return n > 0 ? UV_EPROTO : UV_ETIMEDOUT;
}

void th_conn_close(th_conn_t *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    free(c->buf);
    c->buf = NULL;
    c->len = c->cap = 0;
}

void th_conn_abort(th_conn_t *c)
{
    struct linger l = {.l_onoff = 1, .l_linger = 0};
    if (c->fd >= 0)
        setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
    th_conn_close(c);
}

/* ---- the response reader ---- */

static const char *find_crlf(const char *p, const char *end)
{
    for (; p + 1 < end; p++)
        if (p[0] == '\r' && p[1] == '\n')
            return p;
    return NULL;
}

/* Looks `name` up in the header block head[0, len) (after the status line). */
static bool head_header(const char *head, const char *name, char *out, size_t outcap)
{
    size_t nl = strlen(name);
    const char *p = strstr(head, "\r\n");
    while (p != NULL) {
        p += 2;
        const char *eol = strstr(p, "\r\n");
        if (eol == NULL)
            eol = p + strlen(p);
        if ((size_t)(eol - p) > nl && p[nl] == ':' && strncasecmp(p, name, nl) == 0) {
            const char *v = p + nl + 1;
            while (v < eol && (*v == ' ' || *v == '\t'))
                v++;
            size_t vl = (size_t)(eol - v);
            if (vl >= outcap)
                vl = outcap - 1;
            memcpy(out, v, vl);
            out[vl] = '\0';
            return true;
        }
        p = *eol ? eol : NULL;
    }
    return false;
}

const char *th_res_header(const th_res_t *r, const char *name)
{
    static _Thread_local char value[4096];
    return r->head && head_header(r->head, name, value, sizeof(value)) ? value : NULL;
}

void th_res_free(th_res_t *r)
{
    free(r->head);
    free(r->body);
    free(r->raw);
    memset(r, 0, sizeof(*r));
}

static void body_append(th_res_t *r, const char *p, size_t n)
{
    char *b = realloc(r->body, r->body_len + n + 1);
    cr_assert_not_null(b);
    memcpy(b + r->body_len, p, n);
    r->body = b;
    r->body_len += n;
    r->body[r->body_len] = '\0';
}

/* Parses the chunked body starting at c->buf + off. Returns the offset past it, 0 when more
 * bytes are needed, or -1 when malformed. */
static ssize_t parse_chunked(th_conn_t *c, size_t off, th_res_t *r)
{
    const char *end = c->buf + c->len;
    r->body_len = 0;
    for (;;) {
        const char *line = c->buf + off;
        const char *eol = find_crlf(line, end);
        if (eol == NULL)
            return 0;
        char *hexend;
        unsigned long long n = strtoull(line, &hexend, 16);
        if (hexend == line || (hexend != eol && *hexend != ';'))
            return -1;
        off = (size_t)(eol + 2 - c->buf);
        if (n == 0) {
            /* trailers, then the blank line */
            for (;;) {
                const char *t = find_crlf(c->buf + off, end);
                if (t == NULL)
                    return 0;
                bool blank = t == c->buf + off;
                off = (size_t)(t + 2 - c->buf);
                if (blank)
                    return (ssize_t)off;
            }
        }
        if (c->len - off < n + 2)
            return 0;
        if (c->buf[off + n] != '\r' || c->buf[off + n + 1] != '\n')
            return -1;
        body_append(r, c->buf + off, (size_t)n);
        off += (size_t)n + 2;
    }
}

int th_conn_read_res(th_conn_t *c, th_res_t *r, int timeout_ms, bool head_req)
{
    uint64_t deadline = th_now_ms() + (uint64_t)timeout_ms;
    memset(r, 0, sizeof(*r));
    /* the head */
    const char *hend;
    while ((hend = memmem(c->buf ? c->buf : "", c->len, "\r\n\r\n", 4)) == NULL) {
        ssize_t n = fill(c, deadline);
        if (n == 0)
            return UV_EOF;
        if (n < 0)
            return (int)n;
    }
    size_t hlen = (size_t)(hend - c->buf) + 2; /* keep the last header's CRLF */
    int status, minor;
    if (sscanf(c->buf, "HTTP/1.%d %3d ", &minor, &status) != 2)
        return UV_EPROTO;
    r->status = status;
    r->minor = minor;
    r->head = strndup(c->buf, hlen);
    size_t off = hlen + 2;
    char v[64];
    bool no_body = head_req || status < 200 || status == 204 || status == 304;
    if (!no_body && head_header(r->head, "Transfer-Encoding", v, sizeof(v))) {
        if (strcasecmp(v, "chunked") != 0)
            return UV_EPROTO;
        r->chunked = true;
        ssize_t end;
        while ((end = parse_chunked(c, off, r)) == 0) {
            ssize_t n = fill(c, deadline);
            if (n == 0)
                return UV_EOF;
            if (n < 0)
                return (int)n;
        }
        if (end < 0)
            return UV_EPROTO;
        off = (size_t)end;
    } else if (!no_body && head_header(r->head, "Content-Length", v, sizeof(v))) {
        size_t n = strtoull(v, NULL, 10);
        while (c->len - off < n) {
            ssize_t got = fill(c, deadline);
            if (got == 0)
                return UV_EOF;
            if (got < 0)
                return (int)got;
        }
        body_append(r, c->buf + off, n);
        off += n;
    } else if (!no_body) {
        r->close_delimited = true;
        for (;;) {
            ssize_t got = fill(c, deadline);
            if (got == 0)
                break;
            if (got < 0)
                return (int)got;
        }
        body_append(r, c->buf + off, c->len - off);
        off = c->len;
    }
    if (r->body == NULL)
        body_append(r, "", 0);
    r->raw = malloc(off + 1);
    cr_assert_not_null(r->raw);
    memcpy(r->raw, c->buf, off);
    r->raw[off] = '\0';
    r->raw_len = off;
    memmove(c->buf, c->buf + off, c->len - off);
    c->len -= off;
    c->buf[c->len] = '\0';
    return 0;
}

int th_request(int port, const char *raw, th_res_t *r)
{
    th_conn_t c;
    int rc = th_conn_open(&c, port);
    if (rc != 0)
        return rc;
    rc = th_conn_sends(&c, raw);
    if (rc == 0)
        rc = th_conn_read_res(&c, r, 5000, strncmp(raw, "HEAD ", 5) == 0);
    th_conn_close(&c);
    return rc;
}

int th_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert_geq(fd, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    socklen_t sl = sizeof(a);
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&a, &sl), 0);
    close(fd);
    return ntohs(a.sin_port);
}

/* ---- sanitizers ---- */

/* Criterion 2.4.1's runner process (not a test's process) leaks a small record when tests
 * with different .timeout values run in parallel (--jobs 2) and the one due first ends
 * first; LeakSanitizer then fails `make asan` for a leak that is not squall's. Test
 * processes carry BXFI_MAP in their environment and keep full leak checking. */
__attribute__((visibility("default"))) const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void)
{
    return getenv("BXFI_MAP") == NULL ? "leak:libcriterion.so\n" : "";
}

#if defined(__SANITIZE_ADDRESS__)
/* Out of memory is reported, not aborted on (tests feed lengths no allocator can give:
 * regress_http/aborted_never_runs_inside_a_finishing_call): let malloc say NULL under
 * ASan too, as it does without it. */
__attribute__((visibility("default"))) const char *__asan_default_options(void);
__attribute__((visibility("default"))) const char *__asan_default_options(void)
{
    return "allocator_may_return_null=1";
}
#endif

void th_expect_res(th_conn_t *c, int status, const char *body)
{
    th_res_t r;
    int rc = th_conn_read_res(c, &r, 5000, false);
    cr_assert_eq(rc, 0, "reading a response: %s", uv_err_name(rc));
    cr_assert_eq(r.status, status, "want %d, got:\n%s", status, r.raw);
    if (body != NULL)
        cr_assert_str_eq(r.body, body);
    th_res_free(&r);
}

void th_expect_healthy(int port, const char *path, const char *body)
{
    th_conn_t c;
    char req[256];
    snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: t\r\n\r\n", path);
    cr_assert_eq(th_conn_open(&c, port), 0);
    cr_assert_eq(th_conn_sends(&c, req), 0);
    th_expect_res(&c, 200, body);
    th_conn_close(&c);
}
