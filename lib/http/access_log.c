/* The access log (include/squall/access_log.h): lines made by an after hook on the loops
 * that answered, appended to one bounded buffer under a mutex, and written by a thread
 * running a small libuv loop of its own (a wake-up, a flush timer, SIGHUP), so that a
 * slow disk or a full pipe on standard output holds only that thread. The buffer is
 * double: the writer swaps it for its empty twin and writes outside the lock. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "core/abi.h"
#include "http/h1_int.h"
#include "squall/access_log.h"
#include "squall/log.h"

#define LINE_MAX_BYTES 8192 /* one line at most; longer fields are cut */

struct sq_access_log_s {
    char *path;                 /* NULL: standard output */
    int fd;                     /* the writer's; -1 while no file could be opened */
    int format;
    size_t cap;
    uint64_t flush_ms;
    bool on_sighup;
    uv_mutex_t mu;              /* guards cur, cur_len, lines, dropped */
    char *cur;                  /* lines appended by the loops */
    size_t cur_len;
    char *spare;                /* the writer's twin of cur */
    uint64_t lines, dropped;
    _Atomic bool have_file;
    _Atomic bool woken;         /* a wake-up is on its way */
    _Atomic bool want_reopen;
    _Atomic bool stop;
    _Atomic uint64_t written, errors, reopens;
    bool reopen_logged;
    bool closing;               /* the writer's handles are closing */
    /* the writer thread and its loop */
    uv_thread_t thread;
    uv_sem_t ready;
    int start_rc;
    uv_loop_t loop;
    uv_async_t wake;
    uv_timer_t timer;
    uv_signal_t hup;
};

static const sq_access_log_opts_t log_defaults = {.size = sizeof(sq_access_log_opts_t),
                                                  .format = SQ_ACCESS_LOG_COMBINED,
                                                  .buffer_bytes = 1 << 20,
                                                  .flush_ms = 200};

void sq_access_log_opts_init_sized(sq_access_log_opts_t *opts, size_t size)
{
    SQ__OPTS_INIT(opts, size, &log_defaults);
}

/* ---- the writer thread ---- */

static int open_path(const char *path)
{
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    return fd < 0 ? -errno : fd;
}

/* Writes all of buf, waiting while a non-blocking descriptor (a pipe libuv made
 * non-blocking) is full: this thread may wait, no loop does. */
static void write_all(sq_access_log_t *log, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t w = write(log->fd, buf, len);
        if (w > 0) {
            buf += w;
            len -= (size_t)w;
            atomic_fetch_add_explicit(&log->written, (uint64_t)w, memory_order_relaxed);
        } else if (w < 0 && errno == EINTR) {
            continue;
        } else if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            struct pollfd p = {.fd = log->fd, .events = POLLOUT};
            poll(&p, 1, 1000);
        } else {
            atomic_fetch_add_explicit(&log->errors, 1, memory_order_relaxed);
            return;
        }
    }
}

static void flush_now(sq_access_log_t *log)
{
    uv_mutex_lock(&log->mu);
    char *b = log->cur;
    size_t n = log->cur_len;
    log->cur = log->spare;
    log->cur_len = 0;
    log->spare = b;
    atomic_store(&log->woken, false);
    uv_mutex_unlock(&log->mu);
    if (n > 0 && log->fd >= 0)
        write_all(log, b, n);
}

static void reopen_now(sq_access_log_t *log)
{
    if (log->path == NULL)
        return;
    int fd = open_path(log->path);
    if (fd < 0) {
        if (!log->reopen_logged)
            sq_log(SQ_LOG_ERROR, "access log: reopen %s: %s", log->path, sq_strerror(fd));
        log->reopen_logged = true;
        if (log->fd >= 0)
            return; /* keep writing to the old file rather than nowhere */
        atomic_store(&log->have_file, false);
        return;
    }
    if (log->fd >= 0)
        close(log->fd);
    log->fd = fd;
    log->reopen_logged = false;
    atomic_store(&log->have_file, true);
    atomic_fetch_add_explicit(&log->reopens, 1, memory_order_relaxed);
}

static void on_handle_closed(uv_handle_t *h)
{
}

static void service(sq_access_log_t *log)
{
    flush_now(log);
    if (atomic_exchange(&log->want_reopen, false))
        reopen_now(log);
    if (atomic_load(&log->stop) && !log->closing) {
        log->closing = true;
        flush_now(log); /* lines appended while the last batch was written */
        uv_close((uv_handle_t *)&log->wake, on_handle_closed);
        uv_close((uv_handle_t *)&log->timer, on_handle_closed);
        if (log->on_sighup)
            uv_close((uv_handle_t *)&log->hup, on_handle_closed);
    }
}

static void on_wake(uv_async_t *a)
{
    service(a->data);
}

static void on_timer(uv_timer_t *t)
{
    service(t->data);
}

static void on_hup(uv_signal_t *s, int signum)
{
    sq_access_log_t *log = s->data;
    atomic_store(&log->want_reopen, true);
    service(log);
}

static void writer_main(void *arg)
{
    sq_access_log_t *log = arg;
    int rc = uv_loop_init(&log->loop);
    if (rc != 0) {
        log->start_rc = rc;
        uv_sem_post(&log->ready);
        return;
    }
    uv_async_init(&log->loop, &log->wake, on_wake);
    log->wake.data = log;
    uv_timer_init(&log->loop, &log->timer);
    log->timer.data = log;
    uv_timer_start(&log->timer, on_timer, log->flush_ms, log->flush_ms);
    if (log->on_sighup) {
        uv_signal_init(&log->loop, &log->hup);
        log->hup.data = log;
        rc = uv_signal_start(&log->hup, on_hup, SIGHUP);
    }
    log->start_rc = rc;
    uv_sem_post(&log->ready); /* from here the loops may wake us */
    if (rc != 0) {
        atomic_store(&log->stop, true);
        service(log);
    }
    uv_run(&log->loop, UV_RUN_DEFAULT);
    uv_loop_close(&log->loop);
}

/* ---- making a line (on the loop that answered) ---- */

typedef struct lb {
    char *p, *end;
} lb_t;

static void put_mem(lb_t *b, const char *s, size_t n)
{
    if (n > (size_t)(b->end - b->p))
        n = (size_t)(b->end - b->p);
    memcpy(b->p, s, n);
    b->p += n;
}

static void put_str(lb_t *b, const char *s)
{
    put_mem(b, s, strlen(s));
}

static void put_u64(lb_t *b, uint64_t v)
{
    char t[24];
    int i = sizeof(t);
    do {
        t[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    put_mem(b, t + i, sizeof(t) - (size_t)i);
}

/* A quoted field's text as Apache and nginx escape it: '"' and '\' with a backslash,
 * control and non-ASCII bytes as \xHH, so no value can end the field or the line. */
static void put_clf(lb_t *b, const char *s, size_t max)
{
    static const char hex[] = "0123456789ABCDEF";
    char *stop = b->end - b->p > (ptrdiff_t)max ? b->p + max : b->end;
    for (; *s && b->p < stop; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            if (stop - b->p < 2)
                break;
            *b->p++ = '\\';
            *b->p++ = (char)c;
        } else if (c < 0x20 || c >= 0x7f) {
            if (stop - b->p < 4)
                break;
            *b->p++ = '\\';
            *b->p++ = 'x';
            *b->p++ = hex[c >> 4];
            *b->p++ = hex[c & 15];
        } else {
            *b->p++ = (char)c;
        }
    }
}

/* A JSON string (RFC 8259 §7), quotes included; a byte that is not part of well-formed
 * UTF-8 is written as the code point of the same number (\u00HH), so the line is always
 * valid JSON. NULL: null. */
static void put_json(lb_t *b, const char *s, size_t max)
{
    static const char hex[] = "0123456789abcdef";
    if (s == NULL) {
        put_str(b, "null");
        return;
    }
    if (b->end - b->p < 2)
        return;
    char *stop = (b->end - b->p > (ptrdiff_t)max ? b->p + max : b->end) - 1;
    *b->p++ = '"';
    while (*s && b->p < stop) {
        unsigned char c = (unsigned char)*s;
        size_t seq = c >= 0x80 ? sq__utf8_seq((const unsigned char *)s) : 1;
        if (c >= 0x80 && seq > 0) {
            if (stop - b->p < (ptrdiff_t)seq)
                break;
            memcpy(b->p, s, seq);
            b->p += seq;
            s += seq;
            continue;
        }
        if (c == '"' || c == '\\') {
            if (stop - b->p < 2)
                break;
            *b->p++ = '\\';
            *b->p++ = (char)c;
        } else if (c < 0x20 || c >= 0x7f) {
            if (stop - b->p < 6)
                break;
            memcpy(b->p, "\\u00", 4);
            b->p[4] = hex[c >> 4];
            b->p[5] = hex[c & 15];
            b->p += 6;
        } else {
            *b->p++ = (char)c;
        }
        s++;
    }
    *b->p++ = '"';
}

/* The time of this second, formatted once per second per thread. */
static const char *clf_time(time_t sec)
{
    static _Thread_local time_t at = -1;
    static _Thread_local char text[40];
    if (sec != at) {
        struct tm tm;
        gmtime_r(&sec, &tm);
        strftime(text, sizeof(text), "%d/%b/%Y:%H:%M:%S +0000", &tm);
        at = sec;
    }
    return text;
}

static const char *iso_time(time_t sec)
{
    static _Thread_local time_t at = -1;
    static _Thread_local char text[40];
    if (sec != at) {
        struct tm tm;
        gmtime_r(&sec, &tm);
        strftime(text, sizeof(text), "%Y-%m-%dT%H:%M:%S", &tm);
        at = sec;
    }
    return text;
}

static char *put_octet(char *p, unsigned v)
{
    if (v >= 100)
        *p++ = (char)('0' + v / 100);
    if (v >= 10)
        *p++ = (char)('0' + v / 10 % 10);
    *p++ = (char)('0' + v % 10);
    return p;
}

/* The peer's address without its port. A TCP peer is asked for here and written without
 * printf: sq_req_peer's text (libuv's inet_ntop, then the port) cost more than the rest
 * of the line (a profile of hello's plaintext route under the access log). */
static void peer_host(const sq__exch_t *x, char *buf, size_t len)
{
    const sq__conn_t *c = x->conn;
    if (c != NULL && c->h.handle.type == UV_TCP && len >= INET6_ADDRSTRLEN) {
        struct sockaddr_storage ss;
        int n = sizeof(ss);
        if (uv_tcp_getpeername(&c->h.tcp, (struct sockaddr *)&ss, &n) == 0) {
            if (ss.ss_family == AF_INET) {
                const unsigned char *a =
                    (const unsigned char *)&((struct sockaddr_in *)&ss)->sin_addr;
                char *p = buf;
                for (int i = 0; i < 4; i++) {
                    p = put_octet(p, a[i]);
                    *p++ = i < 3 ? '.' : '\0';
                }
                return;
            }
            if (ss.ss_family == AF_INET6 &&
                inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, buf,
                          (socklen_t)len) != NULL)
                return;
        }
    }
    if (sq_req_peer(x, buf, len) != 0) {
        snprintf(buf, len, "-");
        return;
    }
    char *colon = strrchr(buf, ':');
    if (buf[0] == '[') { /* "[::1]:4000" */
        char *close = strchr(buf, ']');
        if (close != NULL) {
            *close = '\0';
            memmove(buf, buf + 1, (size_t)(close - buf));
        }
    } else if (colon != NULL) {
        *colon = '\0';
    }
}

static void append_line(sq_access_log_t *log, const char *line, size_t n)
{
    bool kick = false;
    uv_mutex_lock(&log->mu);
    if (!atomic_load_explicit(&log->have_file, memory_order_relaxed) ||
        log->cur_len + n > log->cap) {
        log->dropped++;
    } else {
        memcpy(log->cur + log->cur_len, line, n);
        log->cur_len += n;
        log->lines++;
        kick = log->cur_len >= log->cap / 2;
    }
    uv_mutex_unlock(&log->mu);
    if (kick && !atomic_exchange(&log->woken, true))
        uv_async_send(&log->wake);
}

static void access_after(sq_req_t *req, sq_res_t *res, int status, void *data)
{
    sq_access_log_t *log = data;
    sq__exch_t *x = req;
    char line[LINE_MAX_BYTES];
    lb_t b = {line, line + sizeof(line) - 1}; /* room for the newline */
    char host[72];
    peer_host(x, host, sizeof(host));
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    const char *method = sq_req_method(x);
    const char *target = sq_req_target(x) ? sq_req_target(x) : "";
    bool open = x->ops->open(x);
    bool no_body = !open || (x->flags & SQ__XF_HEAD) || status < 200 || status == 204 ||
                   status == 304;
    int64_t bytes = no_body ? 0 : x->res_len; /* -1: streamed */
    const char *proto = x->http_minor == 0 ? "HTTP/1.0" : "HTTP/1.1";

    if (log->format == SQ_ACCESS_LOG_JSON) {
        char t[64];
        snprintf(t, sizeof(t), "%s.%03dZ", iso_time(now.tv_sec), (int)(now.tv_nsec / 1000000));
        put_str(&b, "{\"time\":\"");
        put_str(&b, t);
        put_str(&b, "\",\"remote\":");
        put_json(&b, host, 80);
        put_str(&b, ",\"method\":");
        put_json(&b, method, 64);
        put_str(&b, ",\"target\":");
        put_json(&b, target, 4096);
        put_str(&b, ",\"proto\":\"");
        put_str(&b, proto);
        put_str(&b, "\",\"status\":");
        put_u64(&b, (uint64_t)status);
        put_str(&b, ",\"bytes\":");
        if (bytes < 0)
            put_str(&b, "null");
        else
            put_u64(&b, (uint64_t)bytes);
        char d[32];
        snprintf(d, sizeof(d), ",\"duration\":%.6f",
                 (double)(uv_hrtime() - x->start_ns) / 1e9);
        put_str(&b, d);
        put_str(&b, ",\"id\":");
        put_u64(&b, x->id);
        put_str(&b, ",\"referer\":");
        put_json(&b, sq_req_header(x, "Referer"), 1024);
        put_str(&b, ",\"user_agent\":");
        put_json(&b, sq_req_header(x, "User-Agent"), 1024);
        put_str(&b, "}");
    } else {
        put_clf(&b, host, 80);
        put_str(&b, " - - [");
        put_str(&b, clf_time(now.tv_sec));
        put_str(&b, "] \"");
        if (method[0] == '\0') {
            put_str(&b, "-");
        } else {
            put_clf(&b, method, 64);
            put_str(&b, " ");
            put_clf(&b, target, 4096);
            put_str(&b, " ");
            put_str(&b, proto);
        }
        put_str(&b, "\" ");
        put_u64(&b, (uint64_t)status);
        put_str(&b, " ");
        if (bytes < 0)
            put_str(&b, "-");
        else
            put_u64(&b, (uint64_t)bytes);
        if (log->format == SQ_ACCESS_LOG_COMBINED) {
            const char *ref = sq_req_header(x, "Referer");
            const char *ua = sq_req_header(x, "User-Agent");
            put_str(&b, " \"");
            put_clf(&b, ref ? ref : "-", 1024);
            put_str(&b, "\" \"");
            put_clf(&b, ua ? ua : "-", 1024);
            put_str(&b, "\"");
        }
    }
    *b.p++ = '\n';
    append_line(log, line, (size_t)(b.p - line));
}

/* ---- the log's life ---- */

static void log_free(void *p)
{
    sq_access_log_t *log = p;
    atomic_store(&log->stop, true);
    uv_async_send(&log->wake);
    uv_thread_join(&log->thread);
    if (log->fd >= 0 && log->path != NULL)
        close(log->fd);
    uv_sem_destroy(&log->ready);
    uv_mutex_destroy(&log->mu);
    free(log->cur);
    free(log->spare);
    free(log->path);
    free(log);
}

int sq_app_access_log(sq_app_t *app, const sq_access_log_opts_t *opts, sq_access_log_t **out)
{
    sq_access_log_opts_t o = log_defaults;
    if (app == NULL)
        return UV_EINVAL;
    if (opts != NULL) {
        int rc = SQ__OPTS_IN(&o, opts);
        if (rc != 0)
            return rc;
    }
    if ((unsigned)o.format > SQ_ACCESS_LOG_JSON || o.buffer_bytes < 4096 || o.flush_ms == 0)
        return UV_EINVAL;
    int rc = UV_ENOMEM;
    sq_access_log_t *log = calloc(1, sizeof(*log));
    if (log == NULL)
        return UV_ENOMEM;
    log->format = o.format;
    log->cap = o.buffer_bytes;
    log->flush_ms = o.flush_ms;
    log->on_sighup = o.reopen_on_sighup != 0;
    log->fd = STDOUT_FILENO;
    if (o.path != NULL && strcmp(o.path, "-") != 0) {
        if ((log->path = strdup(o.path)) == NULL)
            goto fail_log;
        if ((log->fd = open_path(o.path)) < 0) {
            rc = log->fd;
            goto fail_log;
        }
    }
    atomic_store(&log->have_file, true);
    if ((log->cur = malloc(log->cap)) == NULL || (log->spare = malloc(log->cap)) == NULL)
        goto fail_fd;
    if ((rc = uv_mutex_init(&log->mu)) != 0)
        goto fail_fd;
    if ((rc = uv_sem_init(&log->ready, 0)) != 0)
        goto fail_mutex;
    if ((rc = uv_thread_create(&log->thread, writer_main, log)) != 0)
        goto fail_sem;
    uv_sem_wait(&log->ready);
    if ((rc = log->start_rc) != 0) {
        uv_thread_join(&log->thread);
        goto fail_sem;
    }
    rc = sq__app_keep(app, log, log_free);
    if (rc != 0)
        return rc; /* sq__app_keep freed it */
    rc = sq_app_after(app, access_after, log);
    if (rc != 0)
        return rc; /* the app keeps the log until it is destroyed */
    if (out != NULL)
        *out = log;
    return 0;

fail_sem:
    uv_sem_destroy(&log->ready);
fail_mutex:
    uv_mutex_destroy(&log->mu);
fail_fd:
    if (log->path != NULL && log->fd >= 0)
        close(log->fd);
fail_log:
    free(log->cur);
    free(log->spare);
    free(log->path);
    free(log);
    return rc;
}

int sq_access_log_reopen(sq_access_log_t *log)
{
    if (log == NULL)
        return UV_EINVAL;
    atomic_store(&log->want_reopen, true);
    atomic_store(&log->woken, true);
    uv_async_send(&log->wake);
    return 0;
}

void sq_access_log_stats_sized(sq_access_log_t *log, sq_access_log_stats_t *out, size_t size)
{
    sq_access_log_stats_t st = {.size = sizeof(st)};
    uv_mutex_lock(&log->mu);
    st.lines = log->lines;
    st.dropped = log->dropped;
    uv_mutex_unlock(&log->mu);
    st.written_bytes = atomic_load(&log->written);
    st.write_errors = atomic_load(&log->errors);
    st.reopens = atomic_load(&log->reopens);
    SQ__STATS_OUT(out, size, &st);
}
