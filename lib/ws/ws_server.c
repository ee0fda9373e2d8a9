/* WebSocket routes: the server side of the opening handshake (RFC 6455 §4.2) and the glue
 * that hands an HTTP connection over to the WebSocket core. */
#include <stdlib.h>
#include <strings.h>

#include "http/h1_int.h"
#include "server/server_int.h"
#include "ws/ws_int.h"

typedef struct ws_route {
    sq_ws_handler_t h;   /* a copy: the caller's may be of an older, smaller header */
    sq_ws_opts_t opts;
    void *data;
} ws_route_t;

/* ---- the transport: a taken-over server connection ---- */

static void conn_written(sq__conn_t *c, int status, void *ud)
{
    if (!(c->flags & SQ__CF_CLOSED)) /* after a close, ws may be gone */
        sq__ws_written(ud, status);
}

static int io_write(sq_ws_t *ws, const uv_buf_t *bufs, unsigned n, bool notify)
{
    return sq__conn_write(ws->transport, bufs, n, notify ? conn_written : NULL, ws);
}

static int io_write_ref(sq_ws_t *ws, const void *base, size_t len, sq_free_cb free_cb,
                        void *free_ud, bool notify)
{
    return sq__conn_write_ref(ws->transport, base, len, free_cb, free_ud,
                              notify ? conn_written : NULL, ws);
}

static size_t io_queued(const sq_ws_t *ws)
{
    return sq__conn_queued_bytes(ws->transport);
}

static void io_close(sq_ws_t *ws, bool force)
{
    sq__conn_close(ws->transport, force);
}

static void io_read(sq_ws_t *ws, bool on)
{
    sq__conn_read(ws->transport, on);
}

static const sq__ws_io_t server_io = {
    .write = io_write,
    .write_ref = io_write_ref,
    .queued = io_queued,
    .close = io_close,
    .read = io_read,
};

static void proto_read(sq__conn_t *c, void *ud, const char *data, ssize_t n)
{
    /* The bytes are the transport's: its read buffer (the server's, shared by its
     * connections: lib/server/io.c) or, for bytes read past the upgrade request, the
     * connection's pending buffer. Both are squall's own writable memory, handed over for
     * this call only and never read again after it, so the reader unmasks them in place
     * (see sq__proto_t.on_read). */
    sq__ws_feed(ud, (char *)data, n);
}

static void proto_shutdown(sq__conn_t *c, void *ud)
{
    sq_ws_close(ud, SQ_WS_GOING_AWAY, "server shutting down");
}

static void proto_close(sq__conn_t *c, void *ud)
{
    sq__conn_srv(c)->stats.websockets_open--;
    sq__ws_transport_closed(ud);
}

static const sq__proto_t ws_proto = {
    .on_read = proto_read,
    .on_shutdown = proto_shutdown,
    .on_close = proto_close,
};

/* ---- the handshake ---- */

static int refuse(sq_res_t *res, int status, const char *detail)
{
    if (status == 426) {
        /* RFC 6455 §4.4: name the versions we speak; RFC 9110 §15.5.22: and the upgrade */
        sq_res_header(res, "Upgrade", "websocket");
        sq_res_header(res, "Connection", "Upgrade");
        sq_res_header(res, "Sec-WebSocket-Version", "13");
    }
    return sq_res_send_error(res, status, detail);
}

/* True when any `name` header line of the request holds `token`. RFC 9110 §5.3: a list
 * header sent as several lines means their values joined by commas, so "Connection:
 * keep-alive" then "Connection: Upgrade" asks for the upgrade (test:
 * ws/list_headers_split_over_several_lines_are_combined). */
static bool req_has_token(const sq_req_t *req, const char *name, const char *token)
{
    size_t n = sq_req_header_count(req);
    for (size_t i = 0; i < n; i++) {
        const char *hn, *hv;
        if (sq_req_header_at(req, i, &hn, &hv) == 0 && strcasecmp(hn, name) == 0 &&
            sq__header_has_token(hv, token))
            return true;
    }
    return false;
}

static size_t req_header_lines(const sq_req_t *req, const char *name)
{
    size_t n = sq_req_header_count(req), lines = 0;
    for (size_t i = 0; i < n; i++) {
        const char *hn, *hv;
        if (sq_req_header_at(req, i, &hn, &hv) == 0 && strcasecmp(hn, name) == 0)
            lines++;
    }
    return lines;
}

/* The first of the route's subprotocols that the client offered (server's preference),
 * in any of its Sec-WebSocket-Protocol lines (a list, RFC 6455 §11.3.4). Extensions are
 * a list too: pick_deflate below. */
static const char *pick_subprotocol(const ws_route_t *r, const sq_req_t *req)
{
    if (r->opts.subprotocols == NULL)
        return NULL;
    for (const char *const *p = r->opts.subprotocols; *p != NULL; p++)
        if (req_has_token(req, "Sec-WebSocket-Protocol", *p))
            return *p;
    return NULL;
}

/* permessage-deflate (RFC 7692), on a route that takes it: every Sec-WebSocket-Extensions
 * line of the request (a list, RFC 9110 §5.3) read as one. True and `answer` filled when
 * an offer is accepted. */
static bool pick_deflate(const ws_route_t *r, const sq_req_t *req, sq__ws_pmd_conf_t *conf,
                         char answer[SQ__WS_PMD_HDR])
{
    if (!r->opts.deflate)
        return false;
    sq__buf_t all = {0};
    size_t n = sq_req_header_count(req);
    bool ok = true;
    for (size_t i = 0; i < n && ok; i++) {
        const char *hn, *hv;
        if (sq_req_header_at(req, i, &hn, &hv) == 0 &&
            strcasecmp(hn, "Sec-WebSocket-Extensions") == 0)
            ok = sq__buf_append(&all, hv, strlen(hv)) == 0 && sq__buf_append(&all, ",", 1) == 0;
    }
    ok = ok && all.len > 0 && sq__buf_append(&all, "", 1) == 0 &&
         sq__ws_pmd_server_answer(&r->opts, all.base, conf, answer);
    sq__buf_free(&all);
    return ok; /* out of memory: no compression, the connection goes on */
}

static void ws_get(sq_req_t *req, sq_res_t *res, void *data)
{
    ws_route_t *r = data;
    const char *version = sq_req_header(req, "Sec-WebSocket-Version");
    const char *key = sq_req_header(req, "Sec-WebSocket-Key");
    if (!req_has_token(req, "Upgrade", "websocket") ||
        !req_has_token(req, "Connection", "upgrade")) {
        refuse(res, 426, "WebSocket upgrade required"); /* a HEAD too, as its GET would */
        return;
    }
    if (sq_req_method_id(req) != SQ_METHOD_GET) {
        /* RFC 6455 §4.1: the handshake is a GET; the router hands HEAD to .get (RFC 9110
         * §9.3.2), and a HEAD must never switch protocols. §4.2.1: a request that is not
         * a valid handshake gets 400 (test: ws/head_or_post_with_a_valid_handshake_...) */
        refuse(res, 400, "WebSocket handshake must be a GET");
        return;
    }
    /* RFC 6455 §11.3.5: the request carries the header once; a second line (even "13"
     * again) is a version squall cannot be sure of (test: fuzz_found/repeated_...) */
    if (version == NULL || strcmp(version, "13") != 0 ||
        req_header_lines(req, "Sec-WebSocket-Version") > 1) {
        refuse(res, 426, "unsupported Sec-WebSocket-Version");
        return;
    }
    if (req->srv->closing) {
        /* the server is shutting down: a new WebSocket would only be told to go away */
        refuse(res, 503, "server shutting down");
        return;
    }
    if (sq_req_version_minor(req) < 1) {
        refuse(res, 400, "WebSocket needs HTTP/1.1");
        return;
    }
    /* RFC 6455 §11.3.1: one Sec-WebSocket-Key only */
    if (key == NULL || !sq__ws_key_valid(key) || req_header_lines(req, "Sec-WebSocket-Key") > 1) {
        refuse(res, 400, "missing or invalid Sec-WebSocket-Key");
        return;
    }
    const char *sub = pick_subprotocol(r, req);
    if (r->h.accept != NULL) {
        int status = r->h.accept(req, &sub, r->data);
        if (status != 0) {
            refuse(res, status >= 400 && status <= 599 ? status : 403, "WebSocket refused");
            return;
        }
    }
    char accept[29];
    sq__conn_t *c = req->conn;
    sq_ws_t *ws;
    if (sq__ws_accept_key(key, strlen(key), accept) != 0 || c == NULL ||
        sq__ws_create(&ws, sq_req_loop(req), false, &r->h, r->data, &r->opts, &server_io, c)) {
        refuse(res, 500, "Internal Server Error");
        return;
    }
    ws->subprotocol = sub;
    sq__ws_pmd_conf_t pmd;
    char pmd_answer[SQ__WS_PMD_HDR];
    bool deflate = pick_deflate(r, req, &pmd, pmd_answer);
    ws->wd = sq__hs(req->srv)->wd;
    ws->name = sq__route_pattern(req->match.route);
    /* a 101 without its Accept would be a handshake the client must fail: out of memory
     * here is a 500 instead */
    if (sq_res_header(res, "Upgrade", "websocket") != 0 ||
        sq_res_header(res, "Connection", "Upgrade") != 0 ||
        sq_res_header(res, "Sec-WebSocket-Accept", accept) != 0 ||
        (sub != NULL && sq_res_header(res, "Sec-WebSocket-Protocol", sub) != 0) ||
        (deflate && (sq__ws_pmd_start(ws, &pmd) != 0 ||
                     sq_res_header(res, "Sec-WebSocket-Extensions", pmd_answer) != 0))) {
        sq__ws_transport_closed(ws); /* never opened: no callbacks, just freed */
        refuse(res, 500, "Internal Server Error");
        return;
    }
    sq__exch_hold(req); /* keep req readable for .open after the take-over releases it */
    if (sq__res_switch(res, &ws_proto, ws) != 0) {
        sq__exch_unhold(req);
        sq__ws_transport_closed(ws); /* never opened: no callbacks, just freed */
        return;
    }
    sq__conn_srv(c)->stats.websockets_open++; /* proto_close takes it back */
    req->conn = c; /* readable in .open (sq_req_peer), though the connection is taken */
    sq__ws_open(ws, req);
    req->conn = NULL;
    sq__exch_unhold(req);
}

static const sq_handler_t ws_route_handler = {.get = ws_get};

int sq_app_websocket_sized(sq_app_t *app, const char *pattern, const sq_ws_handler_t *handler,
                           size_t handler_size, const sq_ws_opts_t *opts, void *data)
{
    if (app == NULL || handler == NULL)
        return UV_EINVAL;
    if (sq__ws_crypto_init() != 0)
        return UV_ENOMEM;
    ws_route_t *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return UV_ENOMEM;
    int rc = sq__ws_handler_in(&r->h, handler, handler_size);
    if (rc == 0)
        rc = sq__ws_opts_in(&r->opts, opts);
    if (rc != 0) {
        free(r);
        return rc;
    }
    r->data = data;
    return sq__app_route_ws(app, pattern, &ws_route_handler, r, free);
}
