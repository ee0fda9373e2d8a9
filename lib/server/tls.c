/* TLS on a server's connections: the third way a connection's bytes move (sq__io_t),
 * over the same libuv stream as plaintext. Ciphertext read from the socket goes into
 * OpenSSL through a memory BIO (lib/tls/tls.c); the plaintext comes out in the server's
 * TLS buffer and goes to sq__conn_on_read, so HTTP/1, WebSocket and everything above
 * them are the same as in plaintext. What the protocol writes is encrypted into the
 * connection's ciphertext buffer and handed to the socket: at once when it takes it
 * (uv_try_write), else by one uv_write at a time.
 *
 * The state is sq__tlsconn_t, the last sq__tlsconn_size bytes of a connection of a TLS
 * server (srv->conn_size grows by them only there: a plaintext server's connections
 * keep their size). A connection is in the SQ__TQ_TLS timeout list from its accept to
 * the end of its handshake; then it is the protocol's, in SQ__TQ_IDLE as any new one.
 * A failed handshake or a broken record closes the connection, is counted
 * (stats.tls_errors) and logged at SQ_LOG_DEBUG: never more than that one connection.
 */
#include <openssl/err.h>
#include <stdlib.h>

#include "server/server_int.h"
#include "tls/tls_int.h"

typedef struct sq__tlsconn {
    sq__tls_t s;
    sq__buf_t out;        /* ciphertext not yet handed to libuv */
    sq__buf_t flight;     /* ciphertext of the uv_write in flight */
    uv_write_t wreq;
    uv_write_t *ureq;     /* the transport's write (io.write): done once its bytes left */
    uv_write_cb ucb;
    uv_shutdown_t *sreq;  /* the transport's shutdown: started once everything left */
    uv_shutdown_cb scb;
    bool writing;         /* wreq is in flight */
    bool got;             /* a byte came */
} sq__tlsconn_t;

const size_t sq__tlsconn_size = (sizeof(sq__tlsconn_t) + 7) & ~(size_t)7;

#define SQ__TLS_BUF (64 * 1024)
#define SQ__TLS_CHUNK (16 * 1024) /* one record's plaintext (RFC 8446 §5.1) */

static sq__tlsconn_t *tc(const sq__conn_t *c)
{
    return (sq__tlsconn_t *)((char *)c + sq__conn_srv(c)->conn_size - sq__tlsconn_size);
}

/* ---- SNI (RFC 6066 §3) ---- */

static int on_servername(SSL *ssl, int *alert, void *arg)
{
    sq__conn_t *c = SSL_get_app_data(ssl);
    if (c == NULL)
        return SSL_TLSEXT_ERR_OK;
    sq_server_t *srv = sq__conn_srv(c);
    const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    if (srv->opts.tls_sni == NULL || name == NULL)
        return SSL_TLSEXT_ERR_OK;
    sq_tls_ctx_t *ctx = srv->opts.tls_sni(srv, name, srv->opts.tls_sni_data);
    if (ctx != NULL && sq__tls_ctx(ctx) != SSL_get_SSL_CTX(ssl))
        SSL_set_SSL_CTX(ssl, sq__tls_ctx(ctx));
    return SSL_TLSEXT_ERR_OK;
}

int sq__server_tls_init(sq_server_t *srv)
{
    srv->tq_timeout[SQ__TQ_TLS] = srv->opts.tls_handshake_timeout_ms;
    if (srv->opts.tls == NULL)
        return 0;
    srv->tls_buf = malloc(SQ__TLS_BUF);
    if (srv->tls_buf == NULL)
        return UV_ENOMEM;
    SSL_CTX *ctx = sq__tls_ctx(srv->opts.tls);
    SSL_CTX_up_ref(ctx);
    srv->tls_ctx = ctx;
    if (srv->opts.tls_sni != NULL) /* the callback finds its server from the connection */
        SSL_CTX_set_tlsext_servername_callback(ctx, on_servername);
    return 0;
}

void sq__server_tls_free(sq_server_t *srv)
{
    SSL_CTX_free(srv->tls_ctx);
    srv->tls_ctx = NULL;
    free(srv->tls_buf);
    srv->tls_buf = NULL;
}

int sq__conn_tls_start(sq_server_t *srv, sq__conn_t *c)
{
    sq__tlsconn_t *t = (sq__tlsconn_t *)((char *)c + srv->conn_size - sq__tlsconn_size);
    memset(t, 0, sizeof(*t));
    int rc = sq__tls_server(&t->s, srv->tls_ctx, c);
    if (rc != 0)
        return rc;
    c->flags |= SQ__CF_TLS;
    return 0;
}

/* ---- writing ciphertext ---- */

static void on_flight(uv_write_t *req, int status);

/* An emptied ciphertext buffer bigger than a read's worth goes: a body written whole
 * (tls_write) grows it to the body's size, and a keep-alive connection would hold that
 * while idle (test: tls/an_idle_connection_keeps_no_buffer_of_its_last_big_response). */
static void trim(sq__buf_t *b)
{
    if (b->len == 0 && b->cap > SQ__TLS_BUF)
        sq__buf_free(b);
}

/* Takes what OpenSSL wrote and hands it to the socket: what the socket takes at once
 * (`try`), the rest with one uv_write unless one is in flight already (it goes after).
 * 0 or a negative error (the connection is to close). */
static int pump(sq__conn_t *c, bool try)
{
    sq__tlsconn_t *t = tc(c);
    if (sq__tls_take_out(&t->s, &t->out) != 0)
        return UV_ENOMEM;
    if (t->writing || t->out.len == 0)
        return 0;
    size_t n = 0;
    if (try) {
        uv_buf_t b = {.base = t->out.base, .len = t->out.len};
        int w = uv_try_write(&c->h.stream, &b, 1);
        if (w < 0 && w != UV_EAGAIN)
            return w;
        n = w > 0 ? (size_t)w : 0;
        if (n == t->out.len) {
            t->out.len = 0;
            trim(&t->out);
            return 0;
        }
    }
    sq__buf_t tmp = t->flight; /* empty: nothing is in flight */
    t->flight = t->out;
    t->out = tmp;
    t->out.len = 0;
    uv_buf_t b = {.base = t->flight.base + n, .len = t->flight.len - n};
    int rc = uv_write(&t->wreq, &c->h.stream, &b, 1, on_flight);
    if (rc != 0)
        return rc;
    t->writing = true;
    return 0;
}

/* Everything written so far has left: the transport's write completes, and a shutdown
 * waiting for it begins. Runs from the loop (a write's callback). */
static void drained(sq__conn_t *c)
{
    sq__tlsconn_t *t = tc(c);
    if (t->writing || t->out.len != 0)
        return;
    if (t->ureq != NULL) {
        uv_write_t *req = t->ureq;
        t->ureq = NULL;
        req->handle = &c->h.stream; /* what the write queue reads to find its connection */
        t->ucb(req, 0);
        if ((c->flags & SQ__CF_CLOSED) || t->writing || t->out.len != 0)
            return;
    }
    if (t->sreq != NULL) {
        uv_shutdown_t *req = t->sreq;
        t->sreq = NULL;
        int rc = uv_shutdown(req, &c->h.stream, t->scb);
        if (rc != 0)
            t->scb(req, rc);
        return;
    }
    /* a close that waited for the ciphertext of the last write (tls_try_write counts a
     * record the socket took in part as taken: the write queue saw it done) */
    if ((c->flags & (SQ__CF_CLOSE_AFTER | SQ__CF_CLOSED)) == SQ__CF_CLOSE_AFTER &&
        c->state != SQ__CS_CLOSING && (c->wq == NULL || !c->wq->inflight))
        sq__conn_close(c, false);
}

/* A write failed (or was cancelled by the close): whoever waits is told. */
static void write_failed(sq__conn_t *c, int status)
{
    sq__tlsconn_t *t = tc(c);
    bool told = false;
    if (t->ureq != NULL) {
        uv_write_t *req = t->ureq;
        t->ureq = NULL;
        req->handle = &c->h.stream;
        t->ucb(req, status);
        told = true;
    }
    if (t->sreq != NULL) {
        uv_shutdown_t *req = t->sreq;
        t->sreq = NULL;
        req->handle = &c->h.stream;
        t->scb(req, status);
        told = true;
    }
    if (!told)
        sq__conn_teardown(c); /* a no-op once closed */
}

static void on_flight(uv_write_t *req, int status)
{
    sq__conn_t *c = (sq__conn_t *)req->handle;
    sq__tlsconn_t *t = tc(c);
    t->writing = false;
    t->flight.len = 0;
    trim(&t->flight);
    if (status == 0 && !(c->flags & SQ__CF_CLOSED))
        status = pump(c, false); /* what was encrypted meanwhile */
    if (status < 0) {
        write_failed(c, status);
        return;
    }
    drained(c);
}

/* ---- failing ---- */

/* The handshake failed or a record is broken: counted, logged with OpenSSL's reason,
 * the alert OpenSSL wrote sent if the socket takes it now, and the connection closed. */
static void tls_fail(sq__conn_t *c, const char *what)
{
    sq_server_t *srv = sq__conn_srv(c);
    sq__tlsconn_t *t = tc(c);
    srv->stats.tls_errors++;
    char reason[200], peer[64] = "?";
    sq__tls_reason(&t->s, reason, sizeof(reason));
    sq__io_stream.peer(c, peer, sizeof(peer));
    sq_log(SQ_LOG_DEBUG, "tls: %s from %s: %s", what, peer, reason);
    if (!t->writing && sq__tls_take_out(&t->s, &t->out) == 0 && t->out.len > 0) {
        uv_buf_t b = {.base = t->out.base, .len = t->out.len};
        uv_try_write(&c->h.stream, &b, 1);
        t->out.len = 0;
    }
    sq__conn_teardown(c);
}

/* ---- reading ---- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    sq__conn_t *c = (sq__conn_t *)h;
    buf->base = sq__conn_srv(c)->rbuf;
    buf->len = sq__conn_srv(c)->rbuf_cap;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    sq__conn_t *c = (sq__conn_t *)s;
    sq_server_t *srv = sq__conn_srv(c);
    sq__tlsconn_t *t = tc(c);
    if (nread == 0)
        return;
    if (c->state == SQ__CS_CLOSING) { /* lingering: dropped unread, as in plaintext */
        sq__conn_on_read(c, buf->base, nread);
        return;
    }
    if (nread < 0) {
        if (t->s.done) {
            sq__conn_on_read(c, NULL, nread);
        } else {
            if (t->got) /* a handshake cut short; a connection that said nothing is not */
                tls_fail(c, "handshake cut short");
            else
                sq__conn_teardown(c);
        }
        return;
    }
    t->got = true;
    if (sq__tls_feed(&t->s, buf->base, (size_t)nread) != 0) {
        sq__conn_teardown(c);
        return;
    }
    if (!t->s.done) {
        int r = sq__tls_handshake(&t->s);
        if (r < 0) {
            tls_fail(c, "handshake failed");
            return;
        }
        if (pump(c, true) != 0) {
            sq__conn_teardown(c);
            return;
        }
        if (r == 0)
            return;
        srv->stats.tls_handshakes++;
        sq__tq_put(c, SQ__TQ_IDLE); /* the protocol's clock starts now */
    }
    /* Everything this read decrypts goes to the protocol, even past a pause it asks for
     * meanwhile (as the memory transport delivers): at most one read's worth. */
    for (;;) {
        size_t len = 0;
        ssize_t r;
        do {
            r = sq__tls_read(&t->s, srv->tls_buf + len, SQ__TLS_BUF - len);
            if (r > 0)
                len += (size_t)r;
        } while (r > 0 && len < SQ__TLS_BUF);
        if (len > 0) {
            sq__conn_on_read(c, srv->tls_buf, (ssize_t)len);
            if (c->flags & SQ__CF_CLOSED)
                return;
        }
        if (r > 0)
            continue; /* the buffer was full */
        if (r == 0)
            break;
        if (r == UV_EOF) { /* close_notify: the end of the peer's data */
            ERR_clear_error();
            uv_read_stop(&c->h.stream);
            sq__conn_on_read(c, NULL, UV_EOF);
            return;
        }
        tls_fail(c, "bad record");
        return;
    }
    if (pump(c, true) != 0) /* a key update's answer, a session ticket */
        sq__conn_teardown(c);
}

/* ---- the io table ---- */

static int tls_read_start(sq__conn_t *c)
{
    return uv_read_start(&c->h.stream, on_alloc, on_read);
}

static void tls_read_stop(sq__conn_t *c)
{
    uv_read_stop(&c->h.stream);
}

/* Encrypts record by record while the socket takes each at once; the record it does not
 * take whole is sent by a uv_write (and counted as taken: it is encrypted). */
static int tls_try_write(sq__conn_t *c, const uv_buf_t *bufs, unsigned n)
{
    sq__tlsconn_t *t = tc(c);
    if (!t->s.done)
        return UV_EAGAIN;
    size_t taken = 0;
    for (unsigned i = 0; i < n; i++) {
        size_t off = 0;
        while (off < bufs[i].len) {
            if (t->writing || taken >= INT32_MAX / 2)
                return taken > 0 ? (int)taken : UV_EAGAIN;
            size_t k = bufs[i].len - off < SQ__TLS_CHUNK ? bufs[i].len - off : SQ__TLS_CHUNK;
            int rc = sq__tls_write(&t->s, bufs[i].base + off, k);
            if (rc == 0)
                rc = pump(c, true);
            if (rc != 0)
                return rc;
            off += k;
            taken += k;
        }
    }
    return (int)taken;
}

/* Takes everything; cb runs once it has all left, from the loop. */
static int tls_write(sq__conn_t *c, uv_write_t *req, const uv_buf_t *bufs, unsigned n,
                     uv_write_cb cb)
{
    sq__tlsconn_t *t = tc(c);
    if (!t->s.done || t->ureq != NULL)
        return UV_ENOTCONN;
    /* a record at a time, moved out of OpenSSL's memory BIO as it is made: the BIO
     * keeps the size it grew to for the connection's life */
    for (unsigned i = 0; i < n; i++) {
        for (size_t off = 0; off < bufs[i].len; off += SQ__TLS_CHUNK) {
            size_t k = bufs[i].len - off < SQ__TLS_CHUNK ? bufs[i].len - off : SQ__TLS_CHUNK;
            int rc = sq__tls_write(&t->s, bufs[i].base + off, k);
            if (rc == 0 && sq__tls_take_out(&t->s, &t->out) != 0)
                rc = UV_ENOMEM;
            if (rc != 0)
                return rc;
        }
    }
    int rc = pump(c, false); /* never done here: cb must not run inside this call */
    if (rc != 0)
        return rc;
    t->ureq = req;
    t->ucb = cb;
    return 0;
}

static size_t tls_queued(const sq__conn_t *c)
{
    return c->h.stream.write_queue_size + tc(c)->out.len;
}

/* close_notify (RFC 8446 §6.1), then the socket's shutdown once everything has left. */
static int tls_shutdown(sq__conn_t *c, uv_shutdown_t *req, uv_shutdown_cb cb)
{
    sq__tlsconn_t *t = tc(c);
    if (t->sreq != NULL)
        return UV_EALREADY;
    sq__tls_close_notify(&t->s);
    int rc = pump(c, true);
    if (rc != 0)
        return rc;
    if (!t->writing && t->out.len == 0)
        return uv_shutdown(req, &c->h.stream, cb);
    t->sreq = req;
    t->scb = cb;
    return 0;
}

static int tls_peer(const sq__conn_t *c, char *buf, size_t len)
{
    return sq__io_stream.peer(c, buf, len);
}

static void tls_freed(sq__conn_t *c)
{
    sq__tlsconn_t *t = tc(c);
    if (t->sreq != NULL) { /* cancelled, as uv_close does for a stream's shutdown */
        uv_shutdown_t *req = t->sreq;
        t->sreq = NULL;
        req->handle = &c->h.stream;
        t->scb(req, UV_ECANCELED);
    }
    t->ureq = NULL; /* its write was cancelled (on_flight) before the close callback */
    sq__tls_free(&t->s);
    sq__buf_free(&t->out);
    sq__buf_free(&t->flight);
}

const sq__io_t sq__io_tls = {
    .read_start = tls_read_start,
    .read_stop = tls_read_stop,
    .try_write = tls_try_write,
    .write = tls_write,
    .queued = tls_queued,
    .shutdown = tls_shutdown,
    .peer = tls_peer,
    .freed = tls_freed,
};
