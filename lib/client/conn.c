/* A connection of the HTTP client: DNS (uv_getaddrinfo), TCP connect (each address in
 * turn), for https:// the TLS handshake (lib/tls: memory BIOs over the TCP stream),
 * writing a request, reading its response with llhttp (HTTP_RESPONSE mode, RFC 9112),
 * and keep-alive: back to its pool when the server allows it. */
#include <errno.h>
#include <stdlib.h>
#include <strings.h>
#include <sys/socket.h>

#include "client/client_int.h"

typedef struct cl_write {
    uv_write_t req;
    cl_conn_t *conn;
    char data[];
} cl_write_t;

static void conn_maybe_free(cl_conn_t *conn)
{
    if (conn->state != CL_CLOSED || conn->handles > 0 || conn->resolving)
        return;
    sq_client_t *c = conn->client;
    sq__list_remove(&conn->all);
    if (conn->addrs != NULL)
        uv_freeaddrinfo(conn->addrs);
    if (conn->tls != NULL) {
        sq__tls_free(conn->tls);
        free(conn->tls);
    }
    sq__buf_free(&conn->field);
    sq__buf_free(&conn->value);
    free(conn);
    sq__cl_maybe_free(c);
}

static void on_conn_handle_closed(uv_handle_t *h)
{
    cl_conn_t *conn = h->data;
    conn->handles--;
    conn_maybe_free(conn);
}

/* Closes the connection once; a fetch still on it ends with UV_ECONNRESET. The pool
 * then has room for one more. */
void sq__clconn_close(cl_conn_t *conn)
{
    if (conn->state == CL_CLOSED)
        return;
    sq_client_t *c = conn->client;
    cl_pool_t *pool = conn->pool;
    bool was_resolving = conn->state == CL_RESOLVING;
    conn->state = CL_CLOSED;
    sq__list_remove(&conn->link);
    if (conn->fetch != NULL) {
        sq_fetch_t *f = conn->fetch;
        conn->fetch = NULL;
        f->conn = NULL;
        sq__fetch_finish(f, UV_ECONNRESET);
    }
    if (was_resolving && conn->resolving)
        uv_cancel((uv_req_t *)&conn->gai); /* its callback comes and frees conn */
    if (conn->tcp_open) {
        conn->tcp_open = false;
        uv_close((uv_handle_t *)&conn->tcp, on_conn_handle_closed);
    }
    if (conn->counted) {
        conn->counted = false;
        conn->pool->nconns--;
        c->stats.open--;
    }
    conn_maybe_free(conn); /* conn may be gone from here */
    sq__cl_dispatch(pool, c);
}

/* Ends the fetch on the connection with `err` (which closes the connection). */
static void conn_fail(cl_conn_t *conn, int err)
{
    sq_fetch_t *f = conn->fetch;
    if (f != NULL)
        sq__fetch_finish(f, err);
    else
        sq__clconn_close(conn);
}

void sq__clconn_expire(cl_conn_t *conn, uint64_t now)
{
    if (conn->state == CL_CLOSED || conn->deadline == 0 || conn->deadline > now)
        return;
    if (conn->state == CL_RESOLVING || conn->state == CL_CONNECTING)
        conn_fail(conn, UV_ETIMEDOUT); /* connect_timeout_ms */
    else if (conn->state == CL_IDLE)
        sq__clconn_close(conn); /* idle_timeout_ms */
}

/* ---- the response (llhttp callbacks) ---- */

static int stop(cl_conn_t *conn, int err)
{
    conn->err = err;
    return -1;
}

static int count_head(cl_conn_t *conn, size_t len)
{
    size_t max = conn->client->opts.max_header_bytes;
    conn->head_bytes += len;
    return max != 0 && conn->head_bytes > max ? stop(conn, UV_EMSGSIZE) : 0;
}

static int on_status(llhttp_t *p, const char *at, size_t len)
{
    return count_head(p->data, len);
}

static int on_field(llhttp_t *p, const char *at, size_t len)
{
    cl_conn_t *conn = p->data;
    if (count_head(conn, len) != 0)
        return -1;
    return sq__buf_append(&conn->field, at, len) ? stop(conn, UV_ENOMEM) : 0;
}

static int on_value(llhttp_t *p, const char *at, size_t len)
{
    cl_conn_t *conn = p->data;
    if (count_head(conn, len) != 0)
        return -1;
    return sq__buf_append(&conn->value, at, len) ? stop(conn, UV_ENOMEM) : 0;
}

static int on_value_complete(llhttp_t *p)
{
    cl_conn_t *conn = p->data;
    sq_response_t *r = conn->fetch->res;
    unsigned max = conn->client->opts.max_headers;
    if (conn->head_done) { /* a trailer (RFC 9112 §7.1.2): read, not kept */
        conn->field.len = conn->value.len = 0;
        return 0;
    }
    if ((max != 0 && r->nheaders >= max) || count_head(conn, 4) != 0)
        return stop(conn, UV_EMSGSIZE);
    /* RFC 9110 §5.5: no trailing whitespace in a value (llhttp drops the leading) */
    while (conn->value.len > 0 && (conn->value.base[conn->value.len - 1] == ' ' ||
                                   conn->value.base[conn->value.len - 1] == '\t'))
        conn->value.len--;
    int rc =
        sq__response_add(r, conn->field.base, conn->field.len, conn->value.base, conn->value.len);
    conn->field.len = conn->value.len = 0;
    return rc != 0 ? stop(conn, rc) : 0;
}

static int on_headers_complete(llhttp_t *p)
{
    cl_conn_t *conn = p->data;
    sq_fetch_t *f = conn->fetch;
    sq_response_t *r = f->res;
    r->status = p->status_code;
    r->minor = p->http_minor;
    if (p->http_major != 1 || r->status == 101 || r->status < 100)
        return stop(conn, UV_EPROTO); /* no upgrade was asked for */
    if (r->status < 200)
        return 1; /* an interim response has no body (RFC 9112 §6.3, rule 1): whatever
                     its headers say, the next bytes are the next response */
    int rc = sq__response_seal(r);
    if (rc != 0)
        return stop(conn, rc);
    conn->head_done = true;
    conn->skip_body = sq__fetch_will_follow(f);
    size_t max = conn->client->opts.max_body_bytes;
    if (f->on_body == NULL && !conn->skip_body && max != 0 && (p->flags & F_CONTENT_LENGTH) &&
        p->content_length > max)
        return stop(conn, UV_EMSGSIZE); /* known too big before it comes */
    /* RFC 9112 §6.3: no body after HEAD, 204 or 304, whatever the headers say */
    if (strcmp(f->method, "HEAD") == 0 || r->status == 204 || r->status == 304)
        return 1;
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    cl_conn_t *conn = p->data;
    sq_fetch_t *f = conn->fetch;
    if (conn->skip_body)
        return 0; /* a redirect that will be followed: its body is nobody's */
    if (f->on_body != NULL) {
        int r = f->on_body(f, at, len, f->data);
        if (conn->fetch != f || r != 0)
            return stop(conn, UV_ECANCELED); /* cancelled inside, or asked to stop */
        return 0;
    }
    sq__buf_t *b = &f->res->body;
    size_t max = conn->client->opts.max_body_bytes;
    if (max != 0 && b->len + len > max)
        return stop(conn, UV_EMSGSIZE);
    if (sq__buf_reserve(b, len + 1) != 0)
        return stop(conn, UV_ENOMEM);
    sq__buf_append_unsafe(b, at, len);
    b->base[b->len] = '\0';
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    cl_conn_t *conn = p->data;
    if (p->status_code < 200) { /* 100 Continue and the like: the final one follows */
        sq__response_reset(conn->fetch->res);
        conn->head_bytes = 0;
        return 0;
    }
    conn->keep_alive = llhttp_should_keep_alive(p);
    conn->msg_done = true;
    return HPE_PAUSED; /* anything after it is not ours */
}

static const llhttp_settings_t response_settings = {
    .on_status = on_status,
    .on_header_field = on_field,
    .on_header_value = on_value,
    .on_header_value_complete = on_value_complete,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* Bytes (or the end) the server sent after its response, already in the kernel: a
 * response nobody asked for, which the next request on this connection would take for
 * its own. Such a connection is not reused. */
static bool has_unasked_bytes(cl_conn_t *conn)
{
    uv_os_fd_t fd;
    char b;
    if (conn->tls != NULL) /* ciphertext there may be a session ticket, no response: a
                              byte of plaintext that came is seen by on_plain */
        return false;
    if (uv_fileno((uv_handle_t *)&conn->tcp, &fd) != 0)
        return true;
    ssize_t n = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    return n >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK);
}

/* Back to the pool when the server keeps the connection and nothing is left to write;
 * closed otherwise. */
static void conn_release(cl_conn_t *conn)
{
    sq_client_t *c = conn->client;
    if (!conn->keep_alive || conn->writes > 0 || c->closing || conn->state != CL_BUSY ||
        has_unasked_bytes(conn)) {
        sq__clconn_close(conn);
        return;
    }
    conn->state = CL_IDLE;
    conn->deadline = 0;
    if (c->opts.idle_timeout_ms > 0) {
        conn->deadline = uv_now(c->loop) + c->opts.idle_timeout_ms;
        sq__cl_arm(c, conn->deadline);
    }
    sq__list_insert_tail(&conn->pool->idle, &conn->link);
    uv_unref((uv_handle_t *)&conn->tcp); /* an idle connection keeps no loop running */
    sq__cl_dispatch(conn->pool, c);
}

/* The final response is whole. */
static void conn_complete(cl_conn_t *conn)
{
    sq_fetch_t *f = conn->fetch;
    conn->fetch = NULL;
    f->conn = NULL;
    conn_release(conn);
    bool redirected;
    sq__fetch_response(f, &redirected);
}

/* The connection ended (EOF, a read or write error) while a request was on it. */
static void conn_lost(cl_conn_t *conn, int err)
{
    sq_fetch_t *f = conn->fetch;
    if (!conn->got_bytes && conn->reused && !f->retried && sq__fetch_idempotent(f) &&
        (err == UV_EOF || err == UV_ECONNRESET || err == UV_EPIPE)) {
        /* a pooled connection the server had closed meanwhile: once more, on a new one */
        conn->fetch = NULL;
        f->conn = NULL;
        f->retried = f->fresh = true;
        conn->client->stats.retried++;
        sq__cl_enqueue(f, true);
        sq__clconn_close(conn); /* which dispatches the pool */
        return;
    }
    if (err == UV_EOF && conn->got_bytes) {
        llhttp_finish(&conn->parser); /* a close-delimited body ends here */
        if (conn->msg_done) {
            conn->keep_alive = false;
            conn_complete(conn);
            return;
        }
    }
    conn_fail(conn, err == UV_EOF || err == UV_EPIPE ? UV_ECONNRESET : err);
}

static void feed(cl_conn_t *conn, const char *data, size_t n)
{
    llhttp_errno_t err = llhttp_execute(&conn->parser, data, n);
    if (conn->fetch == NULL)
        return; /* ended inside a callback (on_body cancelled it, or the client closed) */
    if (conn->msg_done) {
        const char *pos = llhttp_get_error_pos(&conn->parser);
        if (err != HPE_PAUSED || (pos != NULL && pos < data + n))
            conn->keep_alive = false; /* bytes past the response: not to be trusted */
        conn_complete(conn);
        return;
    }
    if (err == HPE_OK)
        return;
    /* a callback's own reason (UV_EMSGSIZE, ...), or llhttp refused the bytes */
    conn_fail(conn, conn->err != 0 ? conn->err : UV_EPROTO);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    cl_conn_t *conn = h->data;
    buf->base = conn->client->rbuf;
    buf->len = sizeof(conn->client->rbuf);
}

/* What the server sent (plaintext), or the end of it. */
static void on_plain(cl_conn_t *conn, const char *data, ssize_t nread)
{
    if (conn->state != CL_BUSY || conn->fetch == NULL) {
        sq__clconn_close(conn); /* an idle connection closed by the server, or sent to */
        return;
    }
    if (nread < 0) {
        conn_lost(conn, (int)nread);
        return;
    }
    conn->got_bytes = true;
    feed(conn, data, (size_t)nread);
}

static void conn_send(cl_conn_t *conn);

static void on_written(uv_write_t *req, int status);

/* Sends the ciphertext OpenSSL wrote (a handshake message, an encrypted request). */
static int tls_flush(cl_conn_t *conn)
{
    size_t n = sq__tls_out_len(conn->tls);
    if (n == 0)
        return 0;
    cl_write_t *w = malloc(sizeof(*w) + n);
    if (w == NULL)
        return UV_ENOMEM;
    n = sq__tls_out_read(conn->tls, w->data, n);
    uv_buf_t b = {.base = w->data, .len = n};
    w->conn = conn;
    int rc = uv_write(&w->req, (uv_stream_t *)&conn->tcp, &b, 1, on_written);
    if (rc != 0) {
        free(w);
        return rc;
    }
    conn->writes++;
    return 0;
}

/* Ciphertext came: the handshake goes on (and the request leaves once it is done), or
 * the plaintext it holds goes to on_plain. A failed handshake ends the fetch with the
 * reason (SQ_ECERT, SQ_ECERTNAME, SQ_ETLS); a broken record with SQ_ETLS. */
static void tls_read(cl_conn_t *conn, const char *data, size_t n)
{
    sq__tls_t *t = conn->tls;
    if (sq__tls_feed(t, data, n) != 0) {
        conn_fail(conn, UV_ENOMEM);
        return;
    }
    if (!t->done) {
        int r = sq__tls_handshake(t);
        int rc = tls_flush(conn); /* the next flight, or the alert that ends it */
        if (r < 0) {
            char why[200];
            sq_log(SQ_LOG_DEBUG, "client: tls handshake with %s: %s: %s",
                   conn->fetch != NULL ? conn->fetch->hostport : "?", sq_strerror(r),
                   sq__tls_reason(t, why, sizeof(why)));
            conn_fail(conn, r);
            return;
        }
        if (rc != 0) {
            conn_fail(conn, rc);
            return;
        }
        if (r == 0)
            return;
        conn->state = CL_BUSY;
        conn->deadline = 0;
        conn_send(conn);
        if (conn->state == CL_CLOSED)
            return;
    }
    char *buf = conn->client->tls_buf;
    for (;;) {
        ssize_t r = sq__tls_read(t, buf, CL_TLS_BUF);
        if (r == 0)
            break;
        if (r < 0 && r != UV_EOF) {
            char why[200];
            sq_log(SQ_LOG_DEBUG, "client: tls: %s", sq__tls_reason(t, why, sizeof(why)));
        }
        on_plain(conn, buf, r < 0 && r != UV_EOF ? SQ_ETLS : r);
        if (r < 0 || conn->state == CL_CLOSED || conn->tls == NULL)
            return;
    }
    if (tls_flush(conn) != 0) /* a key update's answer */
        sq__clconn_close(conn);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    cl_conn_t *conn = s->data;
    if (nread == 0 || conn->state == CL_CLOSED)
        return;
    if (conn->tls != NULL && nread > 0) {
        tls_read(conn, buf->base, (size_t)nread);
        return;
    }
    if (conn->state == CL_CONNECTING) { /* the TLS handshake, cut short */
        conn_fail(conn, nread == UV_EOF ? SQ_ETLS : (int)nread);
        return;
    }
    on_plain(conn, buf->base, nread);
}

/* ---- writing a request ---- */

static void on_written(uv_write_t *req, int status)
{
    cl_write_t *w = sq__container_of(req, cl_write_t, req);
    cl_conn_t *conn = w->conn;
    free(w);
    conn->writes--;
    if (status < 0 && conn->state == CL_BUSY && conn->fetch != NULL && !conn->got_bytes)
        conn_lost(conn, status);
    else if (status < 0 && conn->state == CL_IDLE)
        sq__clconn_close(conn);
}

static void conn_send(cl_conn_t *conn)
{
    sq_fetch_t *f = conn->fetch;
    llhttp_init(&conn->parser, HTTP_RESPONSE, &response_settings);
    conn->parser.data = conn;
    conn->got_bytes = conn->msg_done = conn->head_done = conn->skip_body = false;
    conn->keep_alive = false;
    conn->err = 0;
    conn->head_bytes = 0;
    conn->field.len = conn->value.len = 0;
    sq_response_free(f->res);
    f->res = sq__response_new();
    sq__buf_t head = {0};
    int rc = f->res == NULL ? UV_ENOMEM : sq__fetch_head(f, &head);
    if (rc == 0 && conn->tls != NULL) {
        rc = sq__tls_write(conn->tls, head.base, head.len);
        sq__buf_free(&head);
        if (rc == 0)
            rc = tls_flush(conn);
        if (rc != 0)
            conn_lost(conn, rc);
        return;
    }
    cl_write_t *w = rc == 0 ? malloc(sizeof(*w) + head.len) : NULL;
    if (w == NULL) {
        sq__buf_free(&head);
        conn_fail(conn, UV_ENOMEM);
        return;
    }
    memcpy(w->data, head.base, head.len);
    uv_buf_t b = {.base = w->data, .len = head.len}; /* size_t: a body past 4 GiB whole */
    sq__buf_free(&head);
    w->conn = conn;
    rc = uv_write(&w->req, (uv_stream_t *)&conn->tcp, &b, 1, on_written);
    if (rc != 0) {
        free(w);
        conn_lost(conn, rc);
        return;
    }
    conn->writes++;
}

/* A pooled connection takes a request. */
void sq__clconn_start(cl_conn_t *conn, sq_fetch_t *f)
{
    sq__list_remove(&conn->link);
    uv_ref((uv_handle_t *)&conn->tcp);
    conn->state = CL_BUSY;
    conn->deadline = 0;
    conn->fetch = f;
    conn->reused = true;
    f->conn = conn;
    f->state = CL_F_ACTIVE;
    conn->client->stats.reused++;
    conn_send(conn);
}

/* ---- connecting ---- */

static void connect_next(cl_conn_t *conn);

static void on_retry_closed(uv_handle_t *h)
{
    cl_conn_t *conn = h->data;
    conn->handles--;
    if (conn->state == CL_CLOSED)
        conn_maybe_free(conn);
    else
        connect_next(conn);
}

static void on_connect(uv_connect_t *req, int status)
{
    cl_conn_t *conn = req->data;
    if (conn->state == CL_CLOSED)
        return;
    if (status < 0) {
        if (conn->next_addr != NULL) { /* the next address, once this socket is closed */
            conn->tcp_open = false;
            uv_close((uv_handle_t *)&conn->tcp, on_retry_closed);
            return;
        }
        conn_fail(conn, status);
        return;
    }
    conn->client->stats.connections++;
    if (conn->pool->tls) { /* the handshake first, within connect_timeout_ms */
        int rc = UV_ENOMEM;
        SSL_CTX *ctx = sq__cl_tls_ctx(conn->client, &rc);
        conn->tls = ctx != NULL ? calloc(1, sizeof(*conn->tls)) : NULL;
        if (conn->tls != NULL) {
            rc = sq__tls_client(conn->tls, ctx, conn->fetch->host,
                                !conn->client->opts.tls_insecure);
            if (rc != 0) {
                free(conn->tls);
                conn->tls = NULL;
            }
        }
        if (rc == 0)
            rc = uv_read_start((uv_stream_t *)&conn->tcp, on_alloc, on_read);
        if (rc == 0) {
            sq__tls_handshake(conn->tls); /* the ClientHello */
            rc = tls_flush(conn);
        }
        if (rc != 0)
            conn_fail(conn, rc);
        return;
    }
    conn->state = CL_BUSY;
    conn->deadline = 0;
    int rc = uv_read_start((uv_stream_t *)&conn->tcp, on_alloc, on_read);
    if (rc != 0) {
        conn_fail(conn, rc);
        return;
    }
    conn_send(conn);
}

static void connect_next(cl_conn_t *conn)
{
    struct addrinfo *ai = conn->next_addr;
    conn->next_addr = ai->ai_next;
    int rc = uv_tcp_init(conn->client->loop, &conn->tcp);
    if (rc != 0) {
        conn_fail(conn, rc);
        return;
    }
    conn->handles++;
    conn->tcp.data = conn;
    conn->tcp_open = true;
    uv_tcp_nodelay(&conn->tcp, 1);
    conn->connect.data = conn;
    rc = uv_tcp_connect(&conn->connect, &conn->tcp, ai->ai_addr, on_connect);
    if (rc != 0)
        on_connect(&conn->connect, rc);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    cl_conn_t *conn = req->data;
    conn->resolving = false;
    conn->addrs = res;
    if (conn->state == CL_CLOSED) { /* cancelled or timed out while resolving */
        conn_maybe_free(conn);
        return;
    }
    if (status < 0 || res == NULL) {
        conn_fail(conn, status < 0 ? status : UV_EAI_NONAME);
        return;
    }
    conn->state = CL_CONNECTING;
    conn->next_addr = res;
    connect_next(conn);
}

/* A new connection for `f`: resolving, then connecting, then f's request is written. */
int sq__clconn_open(sq_client_t *c, cl_pool_t *pool, sq_fetch_t *f)
{
    cl_conn_t *conn = calloc(1, sizeof(*conn));
    if (conn == NULL)
        return UV_ENOMEM;
    conn->client = c;
    conn->pool = pool;
    conn->state = CL_RESOLVING;
    conn->counted = true;
    pool->nconns++;
    c->stats.open++;
    sq__list_insert_tail(&c->conns, &conn->all);
    conn->fetch = f;
    f->conn = conn;
    f->state = CL_F_ACTIVE;
    if (c->opts.connect_timeout_ms > 0) {
        conn->deadline = uv_now(c->loop) + c->opts.connect_timeout_ms;
        sq__cl_arm(c, conn->deadline);
    }
    struct addrinfo hints;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    conn->gai.data = conn;
    conn->resolving = true;
    int rc = uv_getaddrinfo(c->loop, &conn->gai, on_resolved, f->host, f->port, &hints);
    if (rc != 0) {
        conn->resolving = false;
        conn_fail(conn, rc); /* told from the loop, as every end */
    }
    return 0;
}
