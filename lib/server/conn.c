/* The transport: a connection is a stream with a write queue (writeq.c), timeout lists
 * and a tick (timeouts.c), read pause, close and lingering close, and a protocol that
 * reads from it — HTTP/1 (lib/http/h1_conn.c) until a take-over hands it to another.
 *
 * A connection is freed only from its libuv close callback, which never runs inside
 * another callback's frame, so a connection pointer stays valid for the rest of any
 * callback that saw it; code re-checks SQ__CF_CLOSED after calling out.
 */
#include <stdlib.h>

#include "server/server_int.h"

void sq__conn_read(sq__conn_t *c, bool on)
{
    if (c->flags & (SQ__CF_CLOSED | SQ__CF_EOF))
        return;
    if (on && (c->flags & SQ__CF_READ_STOPPED)) {
        c->flags &= ~SQ__CF_READ_STOPPED;
        sq__conn_read_start(c);
    } else if (!on && !(c->flags & SQ__CF_READ_STOPPED)) {
        c->flags |= SQ__CF_READ_STOPPED;
        sq__conn_io(c)->read_stop(c);
    }
}

uv_loop_t *sq__conn_loop(const sq__conn_t *c)
{
    return sq__conn_srv(c)->loop;
}

static void on_conn_close(uv_handle_t *h)
{
    sq__conn_t *c = (sq__conn_t *)h; /* the handle starts it */
    sq_server_t *srv = sq__conn_srv(c);
    if (c->wq != NULL) {
        sq__batch_complete(c, &c->wq->b[0], UV_ECANCELED);
        sq__batch_complete(c, &c->wq->b[1], UV_ECANCELED);
        sq__wq_put(srv, c->wq);
    }
    sq__pend_free(c);
    sq__tick_forget(c);
    srv->nconns--;
    srv->stats.connections_open--;
    if (sq__conn_io(c)->freed != NULL)
        sq__conn_io(c)->freed(c);
    sq__conn_dealloc(srv, c);
    sq__server_maybe_done(srv);
}

int sq__pend_append(sq__conn_t *c, const char *p, size_t n)
{
    sq__pend_t *b = c->pending;
    size_t len = b != NULL ? b->len : 0;
    if (n > SIZE_MAX - sizeof(*b) - len)
        return UV_ENOMEM;
    if (b == NULL || b->cap - len < n) {
        size_t cap = b != NULL ? b->cap : 0;
        cap = cap > len + n ? cap : len + n;
        if (cap < SIZE_MAX / 4)
            cap += cap / 2 + 256; /* room for what follows, as a buffer grows */
        b = realloc(b, sizeof(*b) + cap);
        if (b == NULL)
            return UV_ENOMEM;
        b->len = len;
        b->cap = cap;
        c->pending = b;
    }
    memcpy(b->base + len, p, n);
    b->len = len + n;
    return 0;
}

void sq__pend_free(sq__conn_t *c)
{
    free(c->pending);
    c->pending = NULL;
}

/* The protocol lets go of the connection, once. */
static void proto_close(sq__conn_t *c)
{
    if (c->proto != NULL) {
        const sq__proto_t *p = c->proto;
        c->proto = NULL;
        p->on_close(c, c->proto_ud);
    }
}

/* Closes now: queued bytes are dropped, the protocol is told (and, through it, a handler
 * still answering: .aborted). */
void sq__conn_teardown(sq__conn_t *c)
{
    if (c->flags & SQ__CF_CLOSED)
        return;
    c->flags |= SQ__CF_CLOSED;
    c->state = SQ__CS_CLOSING;
    sq__tq_drop(c);
    if (c->wq != NULL && c->wq->b[c->wq->fill].nsegs)
        sq__batch_complete(c, &c->wq->b[c->wq->fill], UV_ECANCELED);
    proto_close(c);
    if (c->pending != NULL)
        c->pending->len = 0; /* freed in on_conn_close: it may be the buffer being parsed */
    uv_close(&c->h.handle, on_conn_close);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    sq__conn_t *c = (sq__conn_t *)req->handle;
    free(req);
    if (status < 0)
        sq__conn_teardown(c);
}

void sq__conn_close(sq__conn_t *c, bool force)
{
    if (c->flags & SQ__CF_CLOSED)
        return;
    if (!force) {
        c->flags |= SQ__CF_CLOSE_AFTER;
        if (c->wq != NULL && (c->wq->inflight || c->wq->b[c->wq->fill].nsegs)) {
            sq__conn_want_flush(c);
            return; /* sq__conn_flush comes back here once everything is written */
        }
        if ((c->flags & SQ__CF_TLS) && sq__conn_io(c)->queued(c) > 0)
            return; /* the last record is still on its way: lib/server/tls.c comes back
                       here once it has left (drained) */
        if ((c->flags & (SQ__CF_LINGER | SQ__CF_EOF)) == SQ__CF_LINGER &&
            c->state != SQ__CS_CLOSING) {
            /* After an error response the client may still be sending: closing now could
             * reset the connection and destroy the response in flight. Shut down our side
             * and drain reads for a while (lingering close). */
            uv_shutdown_t *req = malloc(sizeof(*req));
            if (req != NULL && sq__conn_io(c)->shutdown(c, req, on_shutdown) == 0) {
                c->state = SQ__CS_CLOSING;
                proto_close(c);
                if (c->flags & SQ__CF_READ_STOPPED) {
                    c->flags &= ~SQ__CF_READ_STOPPED;
                    sq__conn_read_start(c); /* to drain */
                }
                sq__tq_put(c, SQ__TQ_LINGER);
                return;
            }
            free(req);
        }
    }
    sq__conn_teardown(c);
}

void sq__conn_on_read(sq__conn_t *c, const char *data, ssize_t nread)
{
    if (nread == 0)
        return;
    if (nread > 0)
        sq__conn_srv(c)->stats.bytes_read += (uint64_t)nread;
    if (nread == UV_EOF) /* libuv has stopped reading */
        c->flags |= SQ__CF_EOF | SQ__CF_READ_STOPPED;
    if (c->state == SQ__CS_CLOSING) {
        /* lingering: reads are drained and dropped; the end of them ends the wait */
        if (nread < 0)
            sq__conn_teardown(c);
        return;
    }
    c->flags |= SQ__CF_IN_READ;
    c->proto->on_read(c, c->proto_ud, data, nread);
    c->flags &= ~SQ__CF_IN_READ;
    sq__conn_flush(c);
}

int sq__conn_read_start(sq__conn_t *c)
{
    return sq__conn_io(c)->read_start(c);
}

/* Into the server's registry and counters, with the server's first protocol. */
static void conn_register(sq_server_t *srv, sq__conn_t *c)
{
    c->h.handle.data = srv; /* sq__conn_srv: a connection is found from its handle by
                               position (it starts with it), so data holds the server */
    c->proto = srv->proto0;
    srv->nconns++;
    srv->stats.connections_open++;
    srv->stats.connections_total++;
}

typedef union drop_handle {
    uv_handle_t handle;
    uv_stream_t stream;
    uv_tcp_t tcp;
    uv_pipe_t pipe;
} drop_handle_t;

static void on_drop_closed(uv_handle_t *h)
{
    sq_server_t *srv = h->data;
    free(h);
    srv->holds--;
    sq__server_maybe_done(srv);
}

/* No memory for the connection: it is accepted and closed at once, since libuv accepts
 * nothing more on a listener until its pending connection is taken (test:
 * conn_edge/a_connection_refused_for_want_of_memory_does_not_stop_the_listener). The
 * handle is a malloc of its own: a slab's mmap can fail where malloc does not. */
static void accept_drop(sq_server_t *srv, uv_stream_t *listener, bool is_pipe)
{
    srv->stats.connections_rejected++;
    drop_handle_t *d = malloc(sizeof(*d));
    if (d == NULL) {
        sq_log(SQ_LOG_WARN, "server: out of memory: no connection is accepted until one is");
        return;
    }
    int rc = is_pipe ? uv_pipe_init(srv->loop, &d->pipe, 0) : uv_tcp_init(srv->loop, &d->tcp);
    if (rc != 0) {
        free(d);
        return;
    }
    d->handle.data = srv;
    srv->holds++; /* a closing server waits for its close */
    uv_accept(listener, &d->stream);
    uv_close(&d->handle, on_drop_closed);
}

void sq__conn_accept(sq_server_t *srv, uv_stream_t *listener, bool is_pipe)
{
    sq__conn_t *c = sq__conn_alloc(srv);
    if (c == NULL) {
        accept_drop(srv, listener, is_pipe);
        return;
    }
    int rc = is_pipe ? uv_pipe_init(srv->loop, &c->h.pipe, 0) : uv_tcp_init(srv->loop, &c->h.tcp);
    if (rc != 0) {
        sq__conn_dealloc(srv, c);
        accept_drop(srv, listener, is_pipe);
        return;
    }
    if (is_pipe)
        c->flags |= SQ__CF_PIPE;
    rc = uv_accept(listener, &c->h.stream);
    if (rc != 0) {
        conn_register(srv, c); /* counted, then closed through the one close path */
        sq__conn_teardown(c);
        return;
    }
    if (!is_pipe)
        uv_tcp_nodelay(&c->h.tcp, 1);
    if (srv->tls_ctx != NULL && sq__conn_tls_start(srv, c) != 0) {
        conn_register(srv, c);
        srv->stats.connections_rejected++; /* no memory for its TLS session */
        sq__conn_teardown(c);
        return;
    }
    sq__conn_start(srv, c);
}

/* Registers a new connection (its handle and io set) and starts reading for the server's
 * first protocol. Returns 0, or an error once the connection is closing. */
int sq__conn_start(sq_server_t *srv, sq__conn_t *c)
{
    conn_register(srv, c);
    if (srv->closing || srv->nconns > srv->opts.max_connections) {
        srv->stats.connections_rejected++;
        sq__conn_teardown(c);
        return SQ_ECLOSED;
    }
    /* a client that says nothing is closed in time; over TLS, one that does not end its
     * handshake in time (the protocol's clock starts after it: lib/server/tls.c) */
    sq__tq_put(c, (c->flags & SQ__CF_TLS) ? SQ__TQ_TLS : SQ__TQ_IDLE);
    int rc = sq__conn_read_start(c);
    if (rc != 0)
        sq__conn_teardown(c);
    return rc;
}

/* Server shutdown: the protocol decides (HTTP/1 closes idle connections now and busy
 * ones after their answer; WebSocket says goodbye). */
void sq__conn_shutdown(sq__conn_t *c)
{
    if (c->proto != NULL)
        c->proto->on_shutdown(c, c->proto_ud);
}
