/* The WebSocket client: ws:// or wss:// URL, DNS (uv_getaddrinfo), TCP connect (each
 * resolved address in turn), for wss:// the TLS handshake (lib/tls: memory BIOs over the
 * TCP stream, the plaintext read into tls_buf), the client handshake (RFC 6455 §4.1)
 * checked with llhttp, then the shared WebSocket core with masked frames. About 780
 * lines, kept whole: every stage reads and writes the one connection state (wsc_t) and
 * its failure path; the HTTP client will take the URL, DNS and connect stages into a
 * layer of their own. */
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>

#include "tls/tls_int.h"
#include "ws/ws_int.h"

enum { WSC_RESOLVING, WSC_CONNECTING, WSC_HANDSHAKE, WSC_OPEN, WSC_CLOSED };

typedef struct wsc {
    uv_loop_t *loop;
    sq_ws_t *ws;
    sq_ws_handler_t h;       /* a copy: the caller's may be of an older, smaller header */
    sq_ws_opts_t opts;       /* the caller's, filled to full size; ws points here */
    uv_getaddrinfo_t gai;
    struct addrinfo *addrs, *next_addr;
    uv_connect_t connect;
    uv_tcp_t tcp;
    uv_timer_t timer;        /* the handshake deadline */
    bool tcp_open;           /* tcp initialised and not closed */
    bool resolving;          /* the getaddrinfo request is outstanding */
    bool hs_done;            /* the handshake response's headers are complete */
    int deferred_err;        /* reported from the timer, never inside sq_ws_connect */
    bool close_after;        /* close once the queued writes are done */
    int state;
    unsigned handles;        /* initialised handles whose close callback has not run */
    size_t queued;           /* bytes handed to uv_write and not yet written */
    unsigned writes;         /* uv_write requests in flight */
    llhttp_t parser;
    sq__buf_t field;         /* the handshake response's header being read */
    sq__buf_t value;
    sq__buf_t ext;           /* the answer's Sec-WebSocket-Extensions lines, joined */
    bool upgrade_ok, connection_ok, accept_ok;
    bool seen_accept, seen_proto; /* headers the answer may carry once (RFC 6455 §11.3) */
    const char *hs_bad;           /* why the answer is refused, whatever comes after */
    const char *proto;            /* the offer the answer named, set at open */
    char accept[29];
    char *host, *hostport, *path;
    const char **offers;          /* opts.subprotocols' array copied (NULL-terminated), its
                                     strings borrowed; or NULL */
    char port[8];
    sq__tls_t *tls;               /* wss://: the session, from the TCP connect on */
    SSL_CTX *tls_ctx;             /* wss://: this connection's context; else NULL */
    char *tls_buf;                /* wss://: the plaintext of one read */
    char rbuf[64 * 1024];
} wsc_t;

#define WSC_TLS_BUF (64 * 1024)

typedef struct wsc_write {
    uv_write_t req;
    wsc_t *c;
    size_t len;
    bool notify;
    sq_free_cb free_cb;
    void *free_base, *free_ud;
    char *ct;                /* wss://: the ciphertext written (data is not) */
    char data[];
} wsc_write_t;

static void wsc_teardown(wsc_t *c, const char *reason);

/* ---- the transport ---- */

static void on_written(uv_write_t *req, int status)
{
    wsc_write_t *w = sq__container_of(req, wsc_write_t, req);
    wsc_t *c = w->c;
    c->queued -= w->len;
    c->writes--;
    if (w->free_cb != NULL)
        w->free_cb(w->free_base, w->free_ud);
    bool notify = w->notify;
    free(w->ct);
    free(w);
    if (status < 0 && c->state != WSC_CLOSED) {
        wsc_teardown(c, NULL);
        return;
    }
    if (notify && c->ws != NULL)
        sq__ws_written(c->ws, status);
    if (c->close_after && c->writes == 0 && c->state != WSC_CLOSED)
        wsc_teardown(c, NULL);
}

/* Over TLS: b's bytes encrypted, with what OpenSSL had to send before them, into w->ct. */
static int tls_seal(wsc_t *c, wsc_write_t *w, uv_buf_t *b)
{
    int rc = b->len > 0 ? sq__tls_write(c->tls, b->base, b->len) : 0;
    if (rc != 0)
        return rc;
    size_t n = sq__tls_out_len(c->tls);
    w->ct = malloc(n > 0 ? n : 1);
    if (w->ct == NULL)
        return UV_ENOMEM;
    *b = uv_buf_init(w->ct, (unsigned)sq__tls_out_read(c->tls, w->ct, n));
    return 0;
}

static int wsc_send(wsc_t *c, wsc_write_t *w, uv_buf_t b)
{
    w->c = c;
    int rc = c->state == WSC_CLOSED || !c->tcp_open ? UV_ECANCELED : 0;
    if (rc == 0 && c->tls != NULL)
        rc = tls_seal(c, w, &b);
    if (rc == 0)
        rc = uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_written);
    if (rc != 0) {
        free(w->ct);
        if (w->free_cb != NULL)
            w->free_cb(w->free_base, w->free_ud);
        free(w);
        return rc;
    }
    c->queued += w->len;
    c->writes++;
    return 0;
}

static int io_write(sq_ws_t *ws, const uv_buf_t *bufs, unsigned n, bool notify)
{
    wsc_t *c = ws->transport;
    if (c->state != WSC_OPEN)
        return UV_ECANCELED;
    size_t len = 0;
    for (unsigned i = 0; i < n; i++)
        len += bufs[i].len;
    size_t skip = 0;
    if (c->writes == 0 && !notify && c->tcp_open && c->tls == NULL) {
        /* nothing queued: the socket usually takes it all, with no copy */
        int w = uv_try_write((uv_stream_t *)&c->tcp, bufs, n);
        if (w < 0 && w != UV_EAGAIN)
            return w;
        skip = w > 0 ? (size_t)w : 0;
        if (skip == len)
            return 0;
    }
    len -= skip;
    wsc_write_t *w = calloc(1, sizeof(*w) + len);
    if (w == NULL)
        return UV_ENOMEM;
    for (unsigned i = 0, off = 0; i < n; i++) {
        size_t bl = bufs[i].len, from = 0;
        if (skip >= bl) {
            skip -= bl;
            continue;
        }
        from = skip;
        skip = 0;
        memcpy(w->data + off, bufs[i].base + from, bl - from);
        off += (unsigned)(bl - from);
    }
    w->len = len;
    w->notify = notify;
    return wsc_send(c, w, uv_buf_init(w->data, (unsigned)len));
}

static int io_write_ref(sq_ws_t *ws, const void *base, size_t len, sq_free_cb free_cb,
                        void *free_ud, bool notify)
{
    /* The core never shares frames with a client (they must be masked); copy. */
    uv_buf_t b = uv_buf_init((char *)base, (unsigned)len);
    int rc = io_write(ws, &b, 1, notify);
    if (free_cb != NULL)
        free_cb((void *)base, free_ud);
    return rc;
}

static size_t io_queued(const sq_ws_t *ws)
{
    const wsc_t *c = ws->transport;
    return c->queued;
}

static void io_close(sq_ws_t *ws, bool force)
{
    wsc_t *c = ws->transport;
    if (c->state != WSC_OPEN) {
        if (c->ws != NULL)
            c->ws->error = UV_ECANCELED;
        wsc_teardown(c, "cancelled");
        return;
    }
    if (!force && c->writes > 0) {
        c->close_after = true;
        return;
    }
    wsc_teardown(c, NULL);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void io_read(sq_ws_t *ws, bool on)
{
    wsc_t *c = ws->transport;
    if (!c->tcp_open || c->state != WSC_OPEN)
        return;
    if (on)
        uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    else
        uv_read_stop((uv_stream_t *)&c->tcp);
}

static const sq__ws_io_t client_io = {
    .read = io_read,
    .write = io_write,
    .write_ref = io_write_ref,
    .queued = io_queued,
    .close = io_close,
};

/* ---- teardown ---- */

static void wsc_free_strings(wsc_t *c)
{
    free(c->host);
    free(c->hostport);
    free(c->path);
    free(c->offers);
}

static void wsc_free(wsc_t *c)
{
    if (c->addrs != NULL)
        uv_freeaddrinfo(c->addrs);
    sq__buf_free(&c->field);
    sq__buf_free(&c->value);
    sq__buf_free(&c->ext);
    wsc_free_strings(c);
    if (c->tls != NULL) {
        sq__tls_free(c->tls);
        free(c->tls);
    }
    SSL_CTX_free(c->tls_ctx);
    free(c->tls_buf);
    free(c);
}

static void maybe_free(wsc_t *c)
{
    if (c->handles == 0 && c->state == WSC_CLOSED && !c->resolving)
        wsc_free(c);
}

static void on_handle_closed(uv_handle_t *h)
{
    wsc_t *c = h->data;
    c->handles--;
    maybe_free(c);
}

/* Closes everything once. `reason` set: the connection never opened (reported to
 * .close as SQ_WS_ABNORMAL with that reason). */
static void wsc_teardown(wsc_t *c, const char *reason)
{
    if (c->state == WSC_CLOSED)
        return;
    bool opened = c->state == WSC_OPEN;
    int was = c->state;
    c->state = WSC_CLOSED;
    sq_ws_t *ws = c->ws;
    c->ws = NULL;
    if (ws != NULL) {
        if (opened)
            sq__ws_transport_closed(ws);
        else
            sq__ws_fail_before_open(ws, reason ? reason : "connection closed");
    }
    if (was == WSC_RESOLVING && c->resolving)
        uv_cancel((uv_req_t *)&c->gai); /* its callback comes soon and frees c */
    uv_close((uv_handle_t *)&c->timer, on_handle_closed);
    if (c->tcp_open) {
        c->tcp_open = false;
        uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
    }
}

/* Ends a connection that never opened: "what" alone, or "what: <error text>". */
/* Ends a connection that never opened: "what" alone, or "what: <error text>" for a
 * libuv error; sq_ws_error() tells the program which (UV_EPROTO for a refused or bad
 * handshake, UV_ETIMEDOUT for the handshake deadline). */
static void fail_code(wsc_t *c, const char *what, int err, int code)
{
    char reason[120];
    if (err < 0)
        snprintf(reason, sizeof(reason), "%s: %s", what, sq_strerror(err));
    else
        snprintf(reason, sizeof(reason), "%s", what);
    if (c->ws != NULL)
        c->ws->error = err < 0 ? err : code;
    wsc_teardown(c, reason);
}

static void fail(wsc_t *c, const char *what, int err)
{
    fail_code(c, what, err, UV_EPROTO);
}

/* ---- the handshake response (RFC 6455 §4.1, the client's checks) ---- */

static int hs_field(llhttp_t *p, const char *at, size_t len)
{
    wsc_t *c = p->data;
    if (c->field.len + len > 8192)
        return -1;
    return sq__buf_append(&c->field, at, len) ? -1 : 0;
}

static int hs_value(llhttp_t *p, const char *at, size_t len)
{
    wsc_t *c = p->data;
    if (c->value.len + len > 8192)
        return -1;
    return sq__buf_append(&c->value, at, len) ? -1 : 0;
}

/* One header of the answer. Each check is sticky (hs_bad is never cleared, the tokens
 * of a list header are or'ed), so the verdict does not depend on the order of the
 * headers (test: ws_client/handshake_answer_checks_do_not_depend_on_header_order). */
static int hs_value_complete(llhttp_t *p)
{
    wsc_t *c = p->data;
    /* RFC 9110 §5.5: the value has no trailing whitespace (llhttp drops the leading) */
    while (c->value.len > 0 &&
           (c->value.base[c->value.len - 1] == ' ' || c->value.base[c->value.len - 1] == '\t'))
        c->value.len--;
    if (sq__buf_append(&c->field, "", 1) || sq__buf_append(&c->value, "", 1))
        return -1;
    const char *f = c->field.base, *v = c->value.base;
    if (strcasecmp(f, "upgrade") == 0) {
        c->upgrade_ok |= sq__header_has_token(v, "websocket"); /* RFC 9110 §5.3: a list */
    } else if (strcasecmp(f, "connection") == 0) {
        c->connection_ok |= sq__header_has_token(v, "upgrade");
    } else if (strcasecmp(f, "sec-websocket-accept") == 0) {
        if (c->seen_accept)
            c->hs_bad = "Sec-WebSocket-Accept repeated"; /* RFC 6455 §11.3.3 */
        c->seen_accept = true;
        c->accept_ok = strcmp(v, c->accept) == 0;
    } else if (strcasecmp(f, "sec-websocket-extensions") == 0) {
        /* RFC 6455 §4.1: only what was offered (permessage-deflate, when opts.deflate);
         * the lines are a list, read as one when the headers are complete */
        if (!c->opts.deflate)
            c->hs_bad = "an extension that was never offered";
        else if (sq__buf_append(&c->ext, v, strlen(v)) || sq__buf_append(&c->ext, ",", 1))
            return -1;
    } else if (strcasecmp(f, "sec-websocket-protocol") == 0) {
        if (c->seen_proto)
            c->hs_bad = "Sec-WebSocket-Protocol repeated"; /* RFC 6455 §11.3.4 */
        c->seen_proto = true;
        c->proto = NULL;
        for (const char **o = c->offers; o != NULL && *o != NULL; o++)
            if (strcmp(*o, v) == 0)
                c->proto = *o;
        if (c->proto == NULL)
            c->hs_bad = "a subprotocol that was never offered"; /* RFC 6455 §4.1 */
    }
    c->field.len = c->value.len = 0;
    return 0;
}

static int hs_headers_complete(llhttp_t *p)
{
    wsc_t *c = p->data;
    c->hs_done = true;
    return 1; /* no body: a 101 has none, and a refusal's body is not needed */
}

static const llhttp_settings_t hs_settings = {
    .on_header_field = hs_field,
    .on_header_value = hs_value,
    .on_header_value_complete = hs_value_complete,
    .on_headers_complete = hs_headers_complete,
};

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void hs_read(wsc_t *c, char *data, size_t n)
{
    llhttp_errno_t err = llhttp_execute(&c->parser, data, n);
    if (!c->hs_done) {
        if (err != HPE_OK)
            fail(c, "bad handshake response", 0);
        return; /* the headers are not all here yet */
    }
    if (c->parser.status_code != 101) {
        char why[64];
        snprintf(why, sizeof(why), "upgrade refused with status %d", c->parser.status_code);
        fail(c, why, 0);
        return;
    }
    if (c->hs_bad == NULL && (err != HPE_OK && err != HPE_PAUSED_UPGRADE))
        c->hs_bad = "malformed";
    if (c->hs_bad == NULL && (!c->upgrade_ok || !c->connection_ok))
        c->hs_bad = "no Upgrade: websocket and Connection: Upgrade";
    if (c->hs_bad == NULL && !c->accept_ok)
        c->hs_bad = "a wrong or missing Sec-WebSocket-Accept";
    sq__ws_pmd_conf_t pmd;
    bool deflate = c->ext.len > 0;
    if (c->hs_bad == NULL && deflate &&
        (sq__buf_append(&c->ext, "", 1) || !sq__ws_pmd_client_check(&c->opts, c->ext.base, &pmd)))
        c->hs_bad = "an extension answer that does not match the offer"; /* RFC 7692 §7.1 */
    if (c->hs_bad == NULL && deflate && sq__ws_pmd_start(c->ws, &pmd) != 0)
        c->hs_bad = "out of memory";
    if (c->hs_bad != NULL) {
        sq_log(SQ_LOG_DEBUG, "websocket client: handshake answer refused: %s", c->hs_bad);
        fail(c, "invalid handshake response", 0);
        return;
    }
    /* the rest of the read is frames, in c->rbuf: writable, as the reader wants */
    char *pos = err == HPE_PAUSED_UPGRADE ? data + (llhttp_get_error_pos(&c->parser) - data)
                                          : NULL;
    size_t rest = pos ? (size_t)(data + n - pos) : 0;
    uv_timer_stop(&c->timer);
    c->state = WSC_OPEN;
    sq_ws_t *ws = c->ws;
    ws->subprotocol = c->proto; /* the caller's string (borrowed, see sq_ws_connect) */
    sq__ws_open(ws, NULL);
    if (rest > 0 && c->ws == ws && c->state == WSC_OPEN)
        sq__ws_feed(ws, pos, (ssize_t)rest);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    wsc_t *c = h->data;
    buf->base = c->rbuf;
    buf->len = sizeof(c->rbuf);
}

/* What the server sent (plaintext, in writable memory), or the end of it. */
static void on_plain(wsc_t *c, char *data, ssize_t nread)
{
    if (c->state == WSC_OPEN) {
        sq__ws_feed(c->ws, data, nread);
        return;
    }
    if (nread < 0) {
        fail(c, "connection closed during the handshake", (int)nread);
        return;
    }
    hs_read(c, data, (size_t)nread);
}

static void send_upgrade(wsc_t *c);

/* Sends what OpenSSL wrote on its own (handshake messages, alerts). */
static int tls_flush(wsc_t *c)
{
    if (sq__tls_out_len(c->tls) == 0)
        return 0;
    wsc_write_t *w = calloc(1, sizeof(*w));
    return w == NULL ? UV_ENOMEM : wsc_send(c, w, uv_buf_init(NULL, 0));
}

/* Ciphertext came: the TLS handshake goes on (the upgrade request leaves when it is
 * done), or its plaintext goes to on_plain, record by record. */
static void tls_read(wsc_t *c, const char *data, size_t n)
{
    sq__tls_t *t = c->tls;
    if (sq__tls_feed(t, data, n) != 0) {
        fail(c, "TLS", UV_ENOMEM);
        return;
    }
    if (!t->done) {
        int r = sq__tls_handshake(t);
        int rc = tls_flush(c);
        if (r < 0) {
            char why[200];
            sq_log(SQ_LOG_DEBUG, "websocket client: tls handshake with %s: %s", c->hostport,
                   sq__tls_reason(t, why, sizeof(why)));
            fail_code(c, "TLS handshake", r, r);
            return;
        }
        if (rc != 0) {
            fail(c, "TLS handshake", rc);
            return;
        }
        if (r == 0)
            return;
        send_upgrade(c);
    }
    while (c->state != WSC_CLOSED) {
        ssize_t r = sq__tls_read(t, c->tls_buf, WSC_TLS_BUF);
        if (r == 0)
            break;
        if (r < 0 && r != UV_EOF) {
            char why[200];
            sq_log(SQ_LOG_DEBUG, "websocket client: tls: %s", sq__tls_reason(t, why, sizeof(why)));
            if (c->ws != NULL)
                c->ws->error = SQ_ETLS;
        }
        on_plain(c, c->tls_buf, r < 0 && r != UV_EOF ? SQ_ETLS : r);
        if (r < 0)
            return;
    }
    if (c->state != WSC_CLOSED && tls_flush(c) != 0)
        wsc_teardown(c, NULL);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    wsc_t *c = s->data;
    if (nread == 0 || c->state == WSC_CLOSED)
        return;
    if (c->tls != NULL && nread > 0) {
        tls_read(c, buf->base, (size_t)nread);
        return;
    }
    if (c->tls != NULL && !c->tls->done) {
        fail_code(c, "TLS handshake: connection closed", (int)nread,
                  nread == UV_EOF ? SQ_ETLS : (int)nread);
        return;
    }
    on_plain(c, buf->base, nread);
}

/* ---- connecting ---- */

static int buf_puts(sq__buf_t *b, const char *s)
{
    return sq__buf_append(b, s, strlen(s));
}

/* The opening handshake (RFC 6455 §4.1), whatever its length: every string in it was
 * checked by sq_ws_connect (parse_url, copy_offers), so none can end a line. */
static int build_request(const wsc_t *c, const char *key, sq__buf_t *b)
{
    if (buf_puts(b, "GET ") || buf_puts(b, c->path) || buf_puts(b, " HTTP/1.1\r\nHost: ") ||
        buf_puts(b, c->hostport) ||
        buf_puts(b, "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ") ||
        buf_puts(b, key) || buf_puts(b, "\r\nSec-WebSocket-Version: 13\r\n"))
        return UV_ENOMEM;
    for (const char **o = c->offers; o != NULL && *o != NULL; o++)
        if (buf_puts(b, o == c->offers ? "Sec-WebSocket-Protocol: " : ", ") || buf_puts(b, *o))
            return UV_ENOMEM;
    if (c->offers != NULL && c->offers[0] != NULL && buf_puts(b, "\r\n"))
        return UV_ENOMEM;
    if (c->opts.deflate) { /* RFC 7692 §5 */
        char offer[SQ__WS_PMD_HDR];
        sq__ws_pmd_client_offer(&c->opts, offer);
        if (buf_puts(b, "Sec-WebSocket-Extensions: ") || buf_puts(b, offer) ||
            buf_puts(b, "\r\n"))
            return UV_ENOMEM;
    }
    return buf_puts(b, "\r\n");
}

static void connect_next(wsc_t *c);

static void on_retry_closed(uv_handle_t *h)
{
    wsc_t *c = h->data;
    c->handles--;
    if (c->state == WSC_CLOSED)
        maybe_free(c);
    else
        connect_next(c);
}

static void on_connect(uv_connect_t *req, int status)
{
    wsc_t *c = req->data;
    if (c->state == WSC_CLOSED)
        return;
    if (status < 0) {
        if (c->next_addr != NULL) { /* try the next address once this socket is closed */
            c->tcp_open = false;
            uv_close((uv_handle_t *)&c->tcp, on_retry_closed);
            return;
        }
        fail(c, "connect", status);
        return;
    }
    c->state = WSC_HANDSHAKE;
    if (c->tls_ctx != NULL) { /* TLS first; the upgrade request once it is done */
        int rc = UV_ENOMEM;
        c->tls = calloc(1, sizeof(*c->tls));
        if (c->tls != NULL) {
            rc = sq__tls_client(c->tls, c->tls_ctx, c->host, !c->opts.tls_insecure);
            if (rc != 0) {
                free(c->tls);
                c->tls = NULL;
            }
        }
        if (rc == 0)
            rc = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
        if (rc == 0) {
            sq__tls_handshake(c->tls); /* the ClientHello */
            rc = tls_flush(c);
        }
        if (rc != 0)
            fail(c, "TLS", rc);
        return;
    }
    send_upgrade(c);
}

/* The opening handshake's request, and reading its answer. */
static void send_upgrade(wsc_t *c)
{
    uint8_t raw[16];
    char key[25];
    if (RAND_bytes(raw, sizeof(raw)) != 1) { /* RFC 6455 §4.1: a random nonce, or nothing */
        fail(c, "no random bytes for the key", UV_ENOMEM);
        return;
    }
    EVP_EncodeBlock((unsigned char *)key, raw, sizeof(raw));
    sq__buf_t head = {0};
    int rc = sq__ws_accept_key(key, 24, c->accept);
    if (rc == 0)
        rc = build_request(c, key, &head);
    wsc_write_t *w = rc == 0 ? calloc(1, sizeof(*w) + head.len) : NULL;
    if (w == NULL) {
        sq__buf_free(&head);
        fail(c, "out of memory", 0);
        return;
    }
    memcpy(w->data, head.base, head.len);
    w->len = head.len;
    sq__buf_free(&head);
    llhttp_init(&c->parser, HTTP_RESPONSE, &hs_settings);
    c->parser.data = c;
    rc = wsc_send(c, w, uv_buf_init(w->data, (unsigned)w->len));
    if (rc == 0 && c->tls == NULL)
        rc = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    if (rc != 0)
        fail(c, "handshake", rc);
}

static void connect_next(wsc_t *c)
{
    struct addrinfo *ai = c->next_addr;
    c->next_addr = ai->ai_next;
    int rc = uv_tcp_init(c->loop, &c->tcp);
    if (rc != 0) {
        fail(c, "socket", rc);
        return;
    }
    c->handles++;
    c->tcp.data = c;
    c->tcp_open = true;
    uv_tcp_nodelay(&c->tcp, 1);
    c->connect.data = c;
    rc = uv_tcp_connect(&c->connect, &c->tcp, ai->ai_addr, on_connect);
    if (rc != 0)
        on_connect(&c->connect, rc);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    wsc_t *c = req->data;
    c->resolving = false;
    c->addrs = res;
    if (c->state == WSC_CLOSED) { /* cancelled while resolving */
        maybe_free(c);
        return;
    }
    if (status < 0 || res == NULL) {
        fail(c, "DNS", status < 0 ? status : UV_EAI_NONAME);
        return;
    }
    c->state = WSC_CONNECTING;
    c->next_addr = res;
    connect_next(c);
}

static void on_dns_failed(uv_timer_t *t)
{
    wsc_t *c = t->data;
    fail(c, "DNS", c->deferred_err);
}

static void on_hs_timeout(uv_timer_t *t)
{
    fail_code(t->data, "handshake timed out", 0, UV_ETIMEDOUT);
}

/* ---- what may go into the request (RFC 3986 §2-3, RFC 9110 §5.6.2: lib/core/uri.c) ---- */

/* RFC 6455 §4.1: each offered subprotocol is a non-empty token, and all are different;
 * anything else could end the header line or be misread by the server. The array is
 * copied into c (the caller's may go once sq_ws_connect returns); the strings are
 * borrowed, so that sq_ws_subprotocol gives back the caller's own pointer. */
static int copy_offers(wsc_t *c, const char *const *offers)
{
    if (offers == NULL)
        return 0;
    size_t n = 0;
    for (; offers[n] != NULL; n++) {
        const char *o = offers[n];
        if (*o == '\0')
            return UV_EINVAL;
        for (const char *q = o; *q; q++)
            if (!sq__is_tchar((unsigned char)*q))
                return UV_EINVAL;
        for (size_t k = 0; k < n; k++)
            if (strcmp(offers[k], o) == 0)
                return UV_EINVAL;
    }
    c->offers = calloc(n + 1, sizeof(*c->offers));
    if (c->offers == NULL)
        return UV_ENOMEM;
    memcpy(c->offers, offers, n * sizeof(*c->offers));
    return 0;
}

/* Splits "ws[s]://host[:port][/path][?query]" (RFC 6455 §3; lib/core/uri.c checks every
 * byte that goes into the request line and the Host header); wss:// gets its TLS context
 * (the CA file is read here). Returns 0, UV_EINVAL, SQ_ETLSCONF or UV_ENOMEM. */
static int parse_url(wsc_t *c, const char *url)
{
    sq__url_t u;
    int rc = sq__url_parse(url, "ws://", "wss://", &u);
    if (rc != 0)
        return rc;
    if (u.tls) {
        c->tls_buf = malloc(WSC_TLS_BUF);
        c->tls_ctx = c->tls_buf != NULL ? sq__tls_client_ctx(c->opts.tls_ca_file,
                                                              !c->opts.tls_insecure, &rc)
                                        : NULL;
        if (c->tls_ctx == NULL) {
            free(c->tls_buf);
            c->tls_buf = NULL;
            sq__url_free(&u);
            return c->tls_buf == NULL && rc == 0 ? UV_ENOMEM : rc;
        }
    }
    c->host = u.host;
    c->hostport = u.hostport;
    c->path = u.target;
    memcpy(c->port, u.port, sizeof(c->port));
    return 0;
}

int sq_ws_connect_sized(uv_loop_t *loop, const char *url, const sq_ws_handler_t *handler,
                        size_t handler_size, void *data, const sq_ws_opts_t *opts,
                        sq_ws_t **out)
{
    if (loop == NULL || url == NULL || handler == NULL)
        return UV_EINVAL;
    if (sq__ws_crypto_init() != 0)
        return UV_ENOMEM;
    wsc_t *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return UV_ENOMEM;
    c->loop = loop;
    /* only what the caller's header has; defaults for the rest */
    int rc = sq__ws_opts_in(&c->opts, opts);
    if (rc == 0)
        rc = sq__ws_handler_in(&c->h, handler, handler_size);
    if (rc == 0)
        rc = parse_url(c, url);
    if (rc == 0)
        rc = copy_offers(c, c->opts.subprotocols);
    if (rc != 0)
        goto fail_args;
    /* the copy is what counts: the caller's array may go once this returns */
    c->opts.subprotocols = c->offers;
    rc = sq__ws_create(&c->ws, loop, true, &c->h, data, &c->opts, &client_io, c);
    if (rc != 0)
        goto fail_args;
    uv_timer_init(loop, &c->timer);
    c->timer.data = c;
    c->handles = 1;
    struct addrinfo hints;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    c->gai.data = c;
    c->state = WSC_RESOLVING;
    c->resolving = true;
    rc = uv_getaddrinfo(loop, &c->gai, on_resolved, c->host, c->port, &hints);
    if (rc != 0) {
        c->resolving = false;
        c->deferred_err = rc;
        uv_timer_start(&c->timer, on_dns_failed, 0, 0);
        if (out != NULL)
            *out = c->ws;
        return 0;
    }
    if (c->opts.handshake_timeout_ms > 0)
        uv_timer_start(&c->timer, on_hs_timeout, c->opts.handshake_timeout_ms, 0);
    if (out != NULL)
        *out = c->ws;
    return 0;

fail_args:
    wsc_free_strings(c);
    SSL_CTX_free(c->tls_ctx);
    free(c->tls_buf);
    free(c);
    return rc;
}
