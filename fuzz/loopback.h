/* A scripted server on 127.0.0.1 for the client harnesses: it listens once (the port is
 * kept across inputs), reads a request head, then writes what the harness gives it in
 * pieces, one piece per turn of the loop — on loopback a write is in the client's socket
 * before the next poll, so the client reads each piece apart — then ends the connection
 * (FIN, or a close that may reset). The client runs on the same private loop, so one
 * input is one thread's work from start to end. Static inline functions only: each client
 * harness includes it. */
#ifndef FUZZ_LOOPBACK_H
#define FUZZ_LOOPBACK_H

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

typedef struct peer {
    uv_loop_t loop;
    uv_tcp_t listener;
    int port;
    /* the connection of the current input */
    uv_tcp_t conn;
    uv_shutdown_t shut;
    bool open;     /* conn initialised and not closed */
    bool shutting; /* FIN sent (or being sent) */
    char head[16384];
    size_t head_len;
    bool head_done;  /* the request's head is in */
    size_t received; /* bytes the client sent after the head */
    /* what to write */
    uint8_t *out;
    size_t out_len, out_off, step;
    bool reset;     /* end with uv_close at once rather than a FIN */
    unsigned conns; /* connections accepted for this input */
} peer_t;

static inline void peer_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    static char rbuf[65536];
    buf->base = rbuf;
    buf->len = sizeof(rbuf);
}

static inline void peer_closed(uv_handle_t *h)
{
    peer_t *p = h->data;
    p->open = false;
}

static inline void peer_close(peer_t *p)
{
    if (p->open && !uv_is_closing((uv_handle_t *)&p->conn))
        uv_close((uv_handle_t *)&p->conn, peer_closed);
}

static inline void peer_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    peer_t *p = s->data;
    if (n < 0) {
        peer_close(p);
        return;
    }
    size_t i = 0;
    while (!p->head_done && i < (size_t)n) {
        if (p->head_len + 1 >= sizeof(p->head)) {
            peer_close(p);
            return;
        }
        p->head[p->head_len++] = buf->base[i++];
        p->head[p->head_len] = '\0';
        if (p->head_len >= 4 && memcmp(p->head + p->head_len - 4, "\r\n\r\n", 4) == 0)
            p->head_done = true;
    }
    p->received += (size_t)n - i;
}

static inline void peer_shut(uv_shutdown_t *req, int status) {}

static inline void peer_extra_closed(uv_handle_t *h)
{
    free(h);
}

static inline void peer_connection(uv_stream_t *l, int status)
{
    peer_t *p = l->data;
    if (status < 0)
        return;
    if (p->conns++ > 0 || p->out == NULL) {
        /* a second connection (a retry, a redirect): taken and closed at once */
        uv_tcp_t *extra = malloc(sizeof(*extra));
        if (extra == NULL)
            abort();
        uv_tcp_init(&p->loop, extra);
        if (uv_accept(l, (uv_stream_t *)extra) != 0)
            abort();
        uv_close((uv_handle_t *)extra, peer_extra_closed);
        return;
    }
    uv_tcp_init(&p->loop, &p->conn);
    p->conn.data = p;
    if (uv_accept(l, (uv_stream_t *)&p->conn) != 0)
        abort();
    p->open = true;
    uv_tcp_nodelay(&p->conn, 1);
    uv_read_start((uv_stream_t *)&p->conn, peer_alloc, peer_read);
}

/* Listens on 127.0.0.1, a port the kernel picks. The listener does not keep the loop
 * running (uv_run returns once the client and the connection are done). */
static inline void peer_init(peer_t *p)
{
    memset(p, 0, sizeof(*p));
    if (uv_loop_init(&p->loop) != 0 || uv_tcp_init(&p->loop, &p->listener) != 0)
        abort();
    p->listener.data = p;
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", 0, &a);
    if (uv_tcp_bind(&p->listener, (const struct sockaddr *)&a, 0) != 0 ||
        uv_listen((uv_stream_t *)&p->listener, 64, peer_connection) != 0)
        abort();
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    uv_tcp_getsockname(&p->listener, (struct sockaddr *)&ss, &len);
    p->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    uv_unref((uv_handle_t *)&p->listener);
}

/* The next input: `out` (copied) is what goes to the client once its head is in. */
static inline void peer_start(peer_t *p, const uint8_t *out, size_t len, size_t step, bool reset)
{
    p->out = malloc(len + 1);
    if (p->out == NULL)
        abort();
    if (len > 0)
        memcpy(p->out, out, len);
    p->out_len = len;
    p->out_off = 0;
    p->step = step > 0 ? step : 1;
    p->reset = reset;
    p->head_len = 0;
    p->head[0] = '\0';
    p->head_done = false;
    p->received = 0;
    p->shutting = false;
    p->conns = 0;
}

/* Puts bytes before what is to be written (before the writing began). */
static inline void peer_prepend(peer_t *p, const void *data, size_t len)
{
    uint8_t *o = realloc(p->out, p->out_len + len + 1);
    if (o == NULL)
        abort();
    memmove(o + len, o, p->out_len);
    memcpy(o, data, len);
    p->out = o;
    p->out_len += len;
}

/* One step of the script: the next piece, or the end once all is written. Returns true
 * while it has more to do (the caller then turns the loop without blocking). */
static inline bool peer_pump(peer_t *p)
{
    if (!p->open || !p->head_done || p->shutting)
        return false;
    if (p->out_off < p->out_len) {
        size_t n = p->out_len - p->out_off < p->step ? p->out_len - p->out_off : p->step;
        uv_buf_t b = uv_buf_init((char *)p->out + p->out_off, (unsigned)n);
        int w = uv_try_write((uv_stream_t *)&p->conn, &b, 1);
        if (w > 0)
            p->out_off += (size_t)w;
        else if (w != UV_EAGAIN)
            peer_close(p); /* the client has gone */
        return true;
    }
    p->shutting = true;
    if (p->reset)
        peer_close(p);
    else if (uv_shutdown(&p->shut, (uv_stream_t *)&p->conn, peer_shut) != 0)
        peer_close(p);
    return false;
}

/* After the input: the connection closed, the loop empty but for the listener. */
static inline void peer_finish(peer_t *p)
{
    peer_close(p);
    for (int i = 0; i < 1000 && p->open; i++)
        uv_run(&p->loop, UV_RUN_NOWAIT);
    free(p->out);
    p->out = NULL;
}

#endif
