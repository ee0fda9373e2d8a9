/* How a connection's bytes move. The transport (conn.c, writeq.c) calls these and nothing
 * of libuv's stream API itself, so a connection may be a libuv stream (TCP, a Unix socket)
 * or memory: a sink with no socket, which tests use to run the whole HTTP/1 path in
 * process, and which a TLS layer or an in-process test client can stand in for later. */
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/uio.h>
#include <unistd.h>

#include "server/server_int.h"

/* ---- a libuv stream ---- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    sq__conn_t *c = (sq__conn_t *)h; /* the handle starts it */
    /* One buffer per server: every byte read is parsed (or copied) before on_read returns,
     * so an idle connection holds no read memory at all. */
    buf->base = sq__conn_srv(c)->rbuf;
    buf->len = sq__conn_srv(c)->rbuf_cap;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    sq__conn_on_read((sq__conn_t *)s, buf->base, nread);
}

static int stream_read_start(sq__conn_t *c)
{
    return uv_read_start(&c->h.stream, on_alloc, on_read);
}

static void stream_read_stop(sq__conn_t *c)
{
    uv_read_stop(&c->h.stream);
}

/* libuv lays uv_buf_t out as struct iovec on Unix, and hands it to writev as one. */
_Static_assert(sizeof(uv_buf_t) == sizeof(struct iovec) &&
                   offsetof(uv_buf_t, base) == offsetof(struct iovec, iov_base) &&
                   offsetof(uv_buf_t, len) == offsetof(struct iovec, iov_len),
               "uv_buf_t is a struct iovec");

/* What uv_try_write does for a stream with nothing queued (the caller checked: writeq.c
 * tries only then), minus its layers, on every response: one write or writev on the
 * socket. Bytes taken, UV_EAGAIN when none (EAGAIN, ENOBUFS as libuv counts it), or the
 * error. A stream libuv no longer writes to (shut down for a lingering close: libuv
 * answers UV_EPIPE) or without a descriptor goes through uv_try_write itself. */
static int stream_try_write(sq__conn_t *c, const uv_buf_t *bufs, unsigned n)
{
    uv_os_fd_t fd = c->h.stream.io_watcher.fd; /* the stream's descriptor (uv_fileno) */
    if (c->state != SQ__CS_OPEN || fd < 0)
        return uv_try_write(&c->h.stream, bufs, n);
    if (n > IOV_MAX)
        n = IOV_MAX; /* the rest is taken later, as after any short write */
    ssize_t w;
    do
        w = n == 1 ? write(fd, bufs[0].base, bufs[0].len)
                   : writev(fd, (const struct iovec *)bufs, (int)n);
    while (w < 0 && errno == EINTR);
    if (w >= 0)
        return (int)w; /* at most 0x7ffff000 on Linux: one write never takes more */
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS)
        return UV_EAGAIN;
    return -errno;
}

static int stream_write(sq__conn_t *c, uv_write_t *req, const uv_buf_t *bufs, unsigned n,
                        uv_write_cb cb)
{
    return uv_write(req, &c->h.stream, bufs, n, cb);
}

static size_t stream_queued(const sq__conn_t *c)
{
    return c->h.stream.write_queue_size;
}

static int stream_shutdown(sq__conn_t *c, uv_shutdown_t *req, uv_shutdown_cb cb)
{
    return uv_shutdown(req, &c->h.stream, cb);
}

static int stream_peer(const sq__conn_t *c, char *buf, size_t len)
{
    if (c->flags & SQ__CF_PIPE) {
        snprintf(buf, len, "unix");
        return 0;
    }
    struct sockaddr_storage ss;
    int sl = sizeof(ss);
    int rc = uv_tcp_getpeername(&c->h.tcp, (struct sockaddr *)&ss, &sl);
    if (rc != 0)
        return rc;
    char ip[64];
    if (ss.ss_family == AF_INET6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        uv_ip6_name(a, ip, sizeof(ip));
        snprintf(buf, len, "[%s]:%d", ip, ntohs(a->sin6_port));
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        uv_ip4_name(a, ip, sizeof(ip));
        snprintf(buf, len, "%s:%d", ip, ntohs(a->sin_port));
    }
    return 0;
}

const sq__io_t sq__io_stream = {
    .read_start = stream_read_start,
    .read_stop = stream_read_stop,
    .try_write = stream_try_write,
    .write = stream_write,
    .queued = stream_queued,
    .shutdown = stream_shutdown,
    .peer = stream_peer,
};

/* ---- memory ---- */

static int mem_read_start(sq__conn_t *c)
{
    return 0; /* reads come from sq__mem_feed; READ_STOPPED says whether they are wanted */
}

static void mem_read_stop(sq__conn_t *c)
{
}

/* Everything is taken at once: the sink grows. */
static int mem_try_write(sq__conn_t *c, const uv_buf_t *bufs, unsigned n)
{
    sq__memsink_t *sink = c->h.mem.sink;
    size_t total = 0;
    for (unsigned i = 0; i < n; i++) {
        if (sq__buf_append(&sink->out, bufs[i].base, bufs[i].len) != 0)
            return UV_ENOMEM;
        total += bufs[i].len;
    }
    return total > INT32_MAX ? UV_E2BIG : (int)total;
}

static int mem_write(sq__conn_t *c, uv_write_t *req, const uv_buf_t *bufs, unsigned n,
                     uv_write_cb cb)
{
    return UV_ENOTSUP; /* never reached: mem_try_write takes everything */
}

static size_t mem_queued(const sq__conn_t *c)
{
    return 0;
}

/* The shutdown completes on the next turn of the loop, as a socket's would. */
typedef struct mem_shut {
    uv_idle_t idle;
    uv_shutdown_t *req;
    uv_shutdown_cb cb;
    sq__memsink_t *sink;
} mem_shut_t;

static void mem_shut_closed(uv_handle_t *h)
{
    free(h->data);
}

static void mem_shut_run(uv_idle_t *idle)
{
    mem_shut_t *s = idle->data;
    sq__memsink_t *sink = s->sink;
    sink->shut = NULL;
    uv_idle_stop(idle);
    s->cb(s->req, 0);
    uv_close((uv_handle_t *)idle, mem_shut_closed);
}

static int mem_shutdown(sq__conn_t *c, uv_shutdown_t *req, uv_shutdown_cb cb)
{
    sq__memsink_t *sink = c->h.mem.sink;
    mem_shut_t *s = malloc(sizeof(*s));
    if (s == NULL)
        return UV_ENOMEM;
    sink->write_shut = true;
    req->handle = &c->h.stream; /* what a shutdown callback reads to find the connection */
    s->req = req;
    s->cb = cb;
    s->sink = sink;
    sink->shut = s;
    uv_idle_init(sq__conn_srv(c)->loop, &s->idle);
    s->idle.data = s;
    uv_idle_start(&s->idle, mem_shut_run);
    return 0;
}

static int mem_peer(const sq__conn_t *c, char *buf, size_t len)
{
    snprintf(buf, len, "memory");
    return 0;
}

static void mem_freed(sq__conn_t *c)
{
    sq__memsink_t *sink = c->h.mem.sink;
    mem_shut_t *s = sink->shut;
    if (s != NULL) {
        /* as uv_close does for a stream's pending shutdown: cancelled, while the
         * connection its callback reads is still there */
        sink->shut = NULL;
        uv_idle_stop(&s->idle);
        s->cb(s->req, UV_ECANCELED);
        uv_close((uv_handle_t *)&s->idle, mem_shut_closed);
    }
    sink->conn = NULL;
    sink->closed = true;
}

const sq__io_t sq__io_mem = {
    .read_start = mem_read_start,
    .read_stop = mem_read_stop,
    .try_write = mem_try_write,
    .write = mem_write,
    .queued = mem_queued,
    .shutdown = mem_shutdown,
    .peer = mem_peer,
    .freed = mem_freed,
};

int sq__mem_accept(sq_server_t *srv, sq__memsink_t *sink)
{
    memset(sink, 0, sizeof(*sink));
    sq__conn_t *c = sq__conn_alloc(srv);
    if (c == NULL)
        return UV_ENOMEM;
    uv_idle_init(srv->loop, &c->h.idle);
    c->h.mem.sink = sink;
    c->flags |= SQ__CF_MEM;
    sink->conn = c;
    return sq__conn_start(srv, c);
}

void sq__mem_feed(sq__memsink_t *sink, const void *data, size_t len)
{
    sq__conn_t *c = sink->conn;
    if (c == NULL || (c->flags & SQ__CF_CLOSED))
        return;
    if (len == 0) {
        sq__conn_on_read(c, NULL, UV_EOF);
        return;
    }
    /* the server's read buffer, as a socket's read would use */
    while (len > 0 && sink->conn != NULL && !(c->flags & SQ__CF_CLOSED)) {
        size_t n = len < sq__conn_srv(c)->rbuf_cap ? len : sq__conn_srv(c)->rbuf_cap;
        memcpy(sq__conn_srv(c)->rbuf, data, n);
        sq__conn_on_read(c, sq__conn_srv(c)->rbuf, (ssize_t)n);
        data = (const char *)data + n;
        len -= n;
    }
}
