/* The test client (include/squall/testing.h): a private loop, a server on it with no
 * listener, and requests written into its memory connections (lib/server/io.c). The
 * response is read back from the bytes the server wrote with llhttp in response mode,
 * as the HTTP client does (lib/client/conn.c), so the client sees exactly the bytes a
 * socket would have carried. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "testing/testing_int.h"

/* How long sq_test_destroy waits for the server to close. */
#define DESTROY_WAIT_MS 10000

/* ---- the client ---- */

static void on_deadline(uv_timer_t *timer)
{
    sq_test_t *t = timer->data;
    t->timed_out = true;
}

void sq__test_deadline(sq_test_t *t, uint64_t ms)
{
    t->timed_out = false;
    if (ms > 0)
        uv_timer_start(&t->timer, on_deadline, ms, 0);
    else
        uv_timer_stop(&t->timer);
}

bool sq__test_turn(sq_test_t *t)
{
    /* UV_RUN_ONCE blocks in the poll until something happens: an answer from a timer or
     * the thread pool, or the deadline's own timer. With no deadline and nothing
     * referenced left on the loop, nothing can ever happen. */
    return uv_run(&t->loop, UV_RUN_ONCE) != 0 || uv_loop_alive(&t->loop);
}

int sq_test_create(sq_test_t **tp, sq_app_t *app, const sq_server_opts_t *opts)
{
    if (tp == NULL || app == NULL)
        return UV_EINVAL;
    sq_test_t *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return UV_ENOMEM;
    int rc = uv_loop_init(&t->loop);
    if (rc != 0)
        goto free_t;
    uv_timer_init(&t->loop, &t->timer);
    t->timer.data = t;
    rc = sq_server_create(&t->srv, &t->loop, app, opts);
    if (rc != 0)
        goto close_loop;
    *tp = t;
    return 0;

close_loop:
    uv_close((uv_handle_t *)&t->timer, NULL);
    uv_run(&t->loop, UV_RUN_DEFAULT);
    uv_loop_close(&t->loop);
free_t:
    free(t);
    return rc;
}

uv_loop_t *sq_test_loop(const sq_test_t *t)
{
    return (uv_loop_t *)&t->loop;
}

sq_server_t *sq_test_server(const sq_test_t *t)
{
    return t->srv;
}

int sq_test_run(sq_test_t *t, uint64_t ms)
{
    if (t == NULL)
        return UV_EINVAL;
    if (t->waiting || t->destroying)
        return SQ_EBUSY;
    if (ms == 0) {
        uv_run(&t->loop, UV_RUN_NOWAIT);
        return 0;
    }
    t->waiting = true;
    sq__test_deadline(t, ms);
    while (!t->timed_out)
        uv_run(&t->loop, UV_RUN_ONCE);
    t->waiting = false;
    return 0;
}

static void free_conns(sq_test_t *t, bool all)
{
    sq__tconn_t **pp = &t->conns;
    while (*pp != NULL) {
        sq__tconn_t *c = *pp;
        if (all || (c->sink.closed && !c->in_use)) {
            *pp = c->next;
            sq__buf_free(&c->sink.out);
            free(c);
        } else {
            pp = &c->next;
        }
    }
}

sq__tconn_t *sq__test_conn_open(sq_test_t *t)
{
    free_conns(t, false); /* those the server has closed since */
    sq__tconn_t *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    if (sq__mem_accept(t->srv, &c->sink) != 0) {
        /* the server may have freed it already (over max_connections: closed) */
        if (!c->sink.closed) {
            c->in_use = false;
            c->next = t->conns; /* freed once the server let it go */
            t->conns = c;
        } else {
            free(c);
        }
        return NULL;
    }
    c->in_use = true;
    c->next = t->conns;
    t->conns = c;
    return c;
}

void sq__test_feed(sq_test_t *t, sq__tconn_t *c, const void *data, size_t len)
{
    uv_update_time(&t->loop);
    sq__mem_feed(&c->sink, data, len);
}

void sq__test_conn_release(sq_test_t *t, sq__tconn_t *c, bool half_close)
{
    if (t->cur == c)
        t->cur = NULL;
    c->in_use = false;
    if (half_close && !c->sink.closed)
        sq__test_feed(t, c, NULL, 0);
}

/* Drops a connection as a client that gives up does: a reset, which tells a handler
 * still answering (.aborted). */
void sq__test_conn_reset(sq_test_t *t, sq__tconn_t *c)
{
    if (t->cur == c)
        t->cur = NULL;
    c->in_use = false;
    if (c->sink.conn != NULL && !(c->sink.conn->flags & SQ__CF_CLOSED))
        sq__conn_on_read(c->sink.conn, NULL, UV_ECONNRESET);
}

static void on_server_closed(sq_server_t *srv, void *data)
{
    ((sq_test_t *)data)->srv_closed = true;
}

static void close_leftover(uv_handle_t *h, void *arg)
{
    if (!uv_is_closing(h)) {
        uv_close(h, NULL);
        (*(unsigned *)arg)++;
    }
}

int sq_test_destroy(sq_test_t *t)
{
    if (t == NULL)
        return 0;
    t->destroying = true;
    sq__test_ws_free_all(t);
    sq__test_streams_free_all(t);
    t->cur = NULL;
    sq_server_destroy(t->srv, 0, on_server_closed, t);
    sq__test_deadline(t, DESTROY_WAIT_MS);
    while (!t->srv_closed && !t->timed_out)
        uv_run(&t->loop, UV_RUN_ONCE);
    if (!t->srv_closed)
        return UV_ETIMEDOUT; /* a handler holds its response: nothing can be freed */
    uv_timer_stop(&t->timer);
    uv_close((uv_handle_t *)&t->timer, NULL);
    uv_run(&t->loop, UV_RUN_NOWAIT); /* close callbacks */
    int rc = 0;
    if (uv_loop_close(&t->loop) == UV_EBUSY) {
        unsigned n = 0;
        uv_walk(&t->loop, close_leftover, &n);
        uv_run(&t->loop, UV_RUN_DEFAULT); /* every handle is closing: this ends */
        rc = n > 0 ? UV_EBUSY : 0;
        if (uv_loop_close(&t->loop) != 0)
            rc = UV_EBUSY;
    }
    free_conns(t, true);
    free(t);
    return rc;
}

/* ---- writing a request ---- */

void sq_test_req_opts_init_sized(sq_test_req_opts_t *opts, size_t size)
{
    sq_test_req_opts_t d = {
        .size = size,
        .timeout_ms = SQ_TEST_DEFAULT_TIMEOUT_MS,
        .http_minor = 1,
        .close = 0,
    };
    memset(opts, 0, size);
    memcpy(opts, &d, size < sizeof(d) ? size : sizeof(d));
    opts->size = size;
}

static bool has_crlf(const char *s)
{
    return strpbrk(s, "\r\n") != NULL;
}

/* Whether header line `h` is named `name` (case-insensitive, RFC 9110 §5.1). */
static bool header_is(const char *h, const char *name)
{
    size_t n = strlen(name);
    return strncasecmp(h, name, n) == 0 && (h[n] == ':' || h[n] == ' ' || h[n] == '\t');
}

int sq__test_add_headers(sq__buf_t *b, const char *const *headers, unsigned *seen)
{
    *seen = 0;
    for (size_t i = 0; headers != NULL && headers[i] != NULL; i++) {
        const char *h = headers[i];
        if (strchr(h, ':') == NULL || has_crlf(h))
            return UV_EINVAL;
        if (header_is(h, "host"))
            *seen |= SQ__TH_HOST;
        else if (header_is(h, "content-length"))
            *seen |= SQ__TH_LENGTH;
        else if (header_is(h, "transfer-encoding"))
            *seen |= SQ__TH_TE;
        else if (header_is(h, "content-type"))
            *seen |= SQ__TH_TYPE;
        else if (header_is(h, "sec-websocket-version"))
            *seen |= SQ__TH_WSVER;
        if (sq__buf_append(b, h, strlen(h)) != 0 || sq__buf_append(b, "\r\n", 2) != 0)
            return UV_ENOMEM;
    }
    return 0;
}

/* The request's bytes: the request line, Host unless given, the caller's headers,
 * Content-Length for a body unless its framing was given (RFC 9112 §6.2), the body. */
static int build_request(sq__buf_t *b, const char *method, const char *target,
                         const char *const *headers, const char *extra, const void *body,
                         size_t body_len, const sq_test_req_opts_t *o)
{
    if (*method == '\0' || *target == '\0' || has_crlf(method) || has_crlf(target) ||
        strchr(method, ' ') != NULL || strchr(target, ' ') != NULL)
        return UV_EINVAL;
    char line[64];
    unsigned seen;
    int rc = 0;
    sq__buf_t hb = {0};
    rc = sq__test_add_headers(&hb, headers, &seen);
    if (rc != 0)
        goto out;
    snprintf(line, sizeof(line), " HTTP/1.%d\r\n", o->http_minor == 0 ? 0 : 1);
    if (sq__buf_append(b, method, strlen(method)) != 0 || sq__buf_append(b, " ", 1) != 0 ||
        sq__buf_append(b, target, strlen(target)) != 0 ||
        sq__buf_append(b, line, strlen(line)) != 0)
        goto nomem;
    if (!(seen & SQ__TH_HOST) && sq__buf_append(b, "Host: testserver\r\n", 18) != 0)
        goto nomem;
    if (o->close && sq__buf_append(b, "Connection: close\r\n", 19) != 0)
        goto nomem;
    if (extra != NULL && !(seen & SQ__TH_TYPE) && sq__buf_append(b, extra, strlen(extra)) != 0)
        goto nomem;
    if (hb.len > 0 && sq__buf_append(b, hb.base, hb.len) != 0)
        goto nomem;
    if (body != NULL && !(seen & (SQ__TH_LENGTH | SQ__TH_TE))) {
        snprintf(line, sizeof(line), "Content-Length: %zu\r\n", body_len);
        if (sq__buf_append(b, line, strlen(line)) != 0)
            goto nomem;
    }
    if (sq__buf_append(b, "\r\n", 2) != 0 ||
        (body != NULL && sq__buf_append(b, body, body_len) != 0))
        goto nomem;
    goto out;
nomem:
    rc = UV_ENOMEM;
out:
    sq__buf_free(&hb);
    return rc;
}

/* ---- reading a response (llhttp, response mode) ---- */

static int stop(sq__tparse_t *rp, int err)
{
    rp->err = err;
    return -1;
}

static int on_status(llhttp_t *p, const char *at, size_t len)
{
    sq__tparse_t *rp = p->data;
    return sq__buf_append(&rp->value, at, len) != 0 ? stop(rp, UV_ENOMEM) : 0;
}

static int on_status_complete(llhttp_t *p)
{
    sq__tparse_t *rp = p->data;
    free(rp->res->reason);
    rp->res->reason = strndup(rp->value.base != NULL ? rp->value.base : "", rp->value.len);
    rp->value.len = 0;
    return rp->res->reason == NULL ? stop(rp, UV_ENOMEM) : 0;
}

static int on_field(llhttp_t *p, const char *at, size_t len)
{
    sq__tparse_t *rp = p->data;
    return sq__buf_append(&rp->field, at, len) != 0 ? stop(rp, UV_ENOMEM) : 0;
}

static int on_value(llhttp_t *p, const char *at, size_t len)
{
    sq__tparse_t *rp = p->data;
    return sq__buf_append(&rp->value, at, len) != 0 ? stop(rp, UV_ENOMEM) : 0;
}

static int on_value_complete(llhttp_t *p)
{
    sq__tparse_t *rp = p->data;
    sq__tres_t *r = rp->res;
    /* RFC 9110 §5.5: a value has no surrounding whitespace (llhttp drops the leading) */
    while (rp->value.len > 0 &&
           (rp->value.base[rp->value.len - 1] == ' ' || rp->value.base[rp->value.len - 1] == '\t'))
        rp->value.len--;
    if (r->pub.nheaders == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 16;
        sq_test_header_t *h = realloc(r->hdrs, cap * sizeof(*h));
        if (h == NULL)
            return stop(rp, UV_ENOMEM);
        r->hdrs = h;
        r->cap = cap;
    }
    char *name = strndup(rp->field.base != NULL ? rp->field.base : "", rp->field.len);
    char *value = strndup(rp->value.base != NULL ? rp->value.base : "", rp->value.len);
    rp->field.len = rp->value.len = 0;
    if (name == NULL || value == NULL) {
        free(name);
        free(value);
        return stop(rp, UV_ENOMEM);
    }
    r->hdrs[r->pub.nheaders].name = name;
    r->hdrs[r->pub.nheaders].value = value;
    r->pub.nheaders++;
    r->pub.headers = r->hdrs;
    return 0;
}

static int on_headers_complete(llhttp_t *p)
{
    sq__tparse_t *rp = p->data;
    if (p->http_major != 1)
        return stop(rp, UV_EPROTO);
    rp->res->pub.status = p->status_code;
    rp->res->pub.http_minor = p->http_minor;
    rp->headers_done = p->status_code >= 200 || p->status_code == 101;
    /* RFC 9112 §6.3: no body after HEAD, a 1xx, 204 or 304, whatever the headers say */
    if (rp->head || p->status_code < 200 || p->status_code == 204 || p->status_code == 304)
        return 1;
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    sq__tparse_t *rp = p->data;
    return sq__buf_append(&rp->res->body, at, len) != 0 ? stop(rp, UV_ENOMEM) : 0;
}

static void res_clear(sq__tres_t *r)
{
    for (size_t i = 0; i < r->pub.nheaders; i++) {
        free((char *)r->hdrs[i].name);
        free((char *)r->hdrs[i].value);
    }
    r->pub.nheaders = 0;
    r->body.len = 0;
}

static int on_message_complete(llhttp_t *p)
{
    sq__tparse_t *rp = p->data;
    if (p->status_code < 200 && p->status_code != 101) {
        res_clear(rp->res); /* 100 Continue and the like: the final one follows */
        return 0;
    }
    rp->res->pub.chunked = (p->flags & F_CHUNKED) != 0;
    rp->res->pub.keep_alive = llhttp_should_keep_alive(p) && p->status_code != 101;
    rp->done = true;
    return HPE_PAUSED; /* what follows is not this response's */
}

static const llhttp_settings_t settings = {
    .on_status = on_status,
    .on_status_complete = on_status_complete,
    .on_header_field = on_field,
    .on_header_value = on_value,
    .on_header_value_complete = on_value_complete,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

int sq__test_parse_init(sq__tparse_t *rp, bool head)
{
    memset(rp, 0, sizeof(*rp));
    rp->res = calloc(1, sizeof(*rp->res));
    if (rp->res == NULL)
        return UV_ENOMEM;
    rp->head = head;
    llhttp_init(&rp->p, HTTP_RESPONSE, &settings);
    rp->p.data = rp;
    return 0;
}

void sq__test_parse_free(sq__tparse_t *rp)
{
    sq_test_res_free(&rp->res->pub);
    rp->res = NULL;
    sq__buf_free(&rp->field);
    sq__buf_free(&rp->value);
}

int sq__test_parse_pump(sq__tparse_t *rp, sq__tconn_t *c, bool eof)
{
    sq__buf_t *out = &c->sink.out;
    if (!rp->done && c->rd < out->len) {
        const char *at = out->base + c->rd;
        size_t n = out->len - c->rd;
        llhttp_errno_t err = llhttp_execute(&rp->p, at, n);
        size_t used = n;
        if (err == HPE_PAUSED || err == HPE_PAUSED_UPGRADE)
            used = (size_t)(llhttp_get_error_pos(&rp->p) - at);
        else if (err != HPE_OK)
            return rp->err != 0 ? rp->err : UV_EPROTO;
        if (sq__buf_append(&rp->res->raw, at, used) != 0)
            return UV_ENOMEM;
        c->rd += used;
    }
    if (!rp->done && eof && c->rd == out->len) {
        llhttp_errno_t err = llhttp_finish(&rp->p); /* a close-delimited body ends here */
        if (!rp->done)
            return err == HPE_OK || err == HPE_PAUSED ? UV_EOF : UV_EPROTO;
    }
    /* what was read is dropped from the sink, which the server only appends to */
    if (c->rd == out->len) {
        out->len = 0;
        c->rd = 0;
    }
    return rp->done ? 1 : 0;
}

void sq__test_res_seal(sq__tres_t *r)
{
    /* body and raw end in a NUL not counted in their lengths */
    if (sq__buf_reserve(&r->body, 1) == 0)
        r->body.base[r->body.len] = '\0';
    if (sq__buf_reserve(&r->raw, 1) == 0)
        r->raw.base[r->raw.len] = '\0';
    r->pub.body = r->body.base != NULL ? r->body.base : "";
    r->pub.body_len = r->body.len;
    r->pub.raw = r->raw.base != NULL ? r->raw.base : "";
    r->pub.raw_len = r->raw.len;
    r->pub.reason = r->reason != NULL ? r->reason : "";
    r->pub.headers = r->hdrs;
}

int sq__test_read_response(sq_test_t *t, sq__tconn_t *c, bool head, uint64_t timeout_ms,
                           sq__tres_t **res)
{
    sq__tparse_t rp;
    int rc = sq__test_parse_init(&rp, head);
    if (rc != 0)
        return rc;
    t->waiting = true;
    sq__test_deadline(t, timeout_ms);
    for (;;) {
        bool eof = c->sink.closed || c->sink.write_shut;
        rc = sq__test_parse_pump(&rp, c, eof);
        if (rc != 0)
            break;
        if (t->timed_out) {
            rc = UV_ETIMEDOUT;
            break;
        }
        if (!sq__test_turn(t)) {
            rc = UV_ETIMEDOUT; /* nothing left on the loop could answer */
            break;
        }
    }
    sq__test_deadline(t, 0);
    t->waiting = false;
    if (rc == 1) {
        sq__test_res_seal(rp.res);
        *res = rp.res;
        rp.res = NULL;
        rc = 0;
    }
    if (rp.res != NULL)
        sq__test_parse_free(&rp);
    else {
        sq__buf_free(&rp.field);
        sq__buf_free(&rp.value);
    }
    return rc;
}

/* ---- requests ---- */

static int send_and_read(sq_test_t *t, sq__tconn_t *c, const sq__buf_t *req, bool head,
                         uint64_t timeout_ms, sq_test_res_t **res)
{
    sq__test_feed(t, c, req->base, req->len);
    sq__tres_t *r = NULL;
    int rc = sq__test_read_response(t, c, head, timeout_ms, &r);
    if (rc == UV_ETIMEDOUT) {
        sq__test_conn_reset(t, c);
        return rc;
    }
    if (rc != 0) {
        sq__test_conn_release(t, c, true);
        return rc;
    }
    *res = &r->pub;
    return 0;
}

static int request(sq_test_t *t, const char *method, const char *target, const char *const *headers,
                   const char *extra, const void *body, size_t body_len,
                   const sq_test_req_opts_t *opts, sq_test_res_t **res)
{
    if (res != NULL)
        *res = NULL;
    if (t == NULL || method == NULL || target == NULL || res == NULL ||
        (opts != NULL && opts->size == 0))
        return UV_EINVAL;
    if (t->destroying)
        return SQ_ECLOSED;
    if (t->waiting)
        return SQ_EBUSY;
    sq_test_req_opts_t o;
    sq_test_req_opts_init(&o);
    if (opts != NULL)
        memcpy(&o, opts, opts->size < sizeof(o) ? opts->size : sizeof(o));
    sq__buf_t req = {0};
    int rc = build_request(&req, method, target, headers, extra, body, body_len, &o);
    if (rc != 0)
        goto out;
    sq__tconn_t *c = t->cur;
    if (c == NULL || c->sink.closed || c->sink.write_shut) {
        if (c != NULL)
            sq__test_conn_release(t, c, true);
        c = t->cur = sq__test_conn_open(t);
        if (c == NULL) {
            rc = UV_ENOMEM;
            goto out;
        }
    }
    rc = send_and_read(t, c, &req, strcmp(method, "HEAD") == 0, o.timeout_ms, res);
    if (rc == 0 && (!(*res)->keep_alive || c->sink.closed || c->sink.write_shut))
        sq__test_conn_release(t, c, true); /* the next request opens another */
out:
    sq__buf_free(&req);
    return rc;
}

int sq_test_request_ex(sq_test_t *t, const char *method, const char *target,
                       const char *const *headers, const void *body, size_t body_len,
                       const sq_test_req_opts_t *opts, sq_test_res_t **res)
{
    return request(t, method, target, headers, NULL, body, body_len, opts, res);
}

int sq_test_request(sq_test_t *t, const char *method, const char *target,
                    const char *const *headers, const char *body, sq_test_res_t **res)
{
    return request(t, method, target, headers, NULL, body, body ? strlen(body) : 0, NULL, res);
}

int sq_test_request_json(sq_test_t *t, const char *method, const char *target,
                         const char *const *headers, const json_t *json, sq_test_res_t **res)
{
    if (res != NULL)
        *res = NULL;
    if (json == NULL)
        return UV_EINVAL;
    char *body = json_dumps(json, JSON_COMPACT | JSON_ENCODE_ANY);
    if (body == NULL)
        return UV_ENOMEM;
    int rc = request(t, method, target, headers, "Content-Type: application/json\r\n", body,
                     strlen(body), NULL, res);
    free(body);
    return rc;
}

int sq_test_request_raw(sq_test_t *t, const void *raw, size_t len, uint64_t timeout_ms,
                        sq_test_res_t **res)
{
    if (res != NULL)
        *res = NULL;
    if (t == NULL || raw == NULL || len == 0 || res == NULL)
        return UV_EINVAL;
    if (t->destroying)
        return SQ_ECLOSED;
    if (t->waiting)
        return SQ_EBUSY;
    sq__tconn_t *c = sq__test_conn_open(t);
    if (c == NULL)
        return UV_ENOMEM;
    sq__buf_t req = {(char *)raw, len, len};
    bool head = len >= 5 && memcmp(raw, "HEAD ", 5) == 0;
    int rc =
        send_and_read(t, c, &req, head, timeout_ms ? timeout_ms : SQ_TEST_DEFAULT_TIMEOUT_MS, res);
    if (rc == 0)
        sq__test_conn_release(t, c, true);
    return rc;
}

/* ---- the response ---- */

const char *sq_test_res_header(const sq_test_res_t *res, const char *name)
{
    if (res == NULL || name == NULL)
        return NULL;
    for (size_t i = 0; i < res->nheaders; i++)
        if (strcasecmp(res->headers[i].name, name) == 0)
            return res->headers[i].value;
    return NULL;
}

json_t *sq_test_res_json(sq_test_res_t *res)
{
    if (res == NULL)
        return NULL;
    sq__tres_t *r = (sq__tres_t *)res;
    if (!r->json_tried) {
        r->json_tried = true;
        json_error_t err;
        r->json = json_loadb(res->body, res->body_len, JSON_DECODE_ANY, &err);
    }
    return r->json;
}

void sq_test_res_free(sq_test_res_t *res)
{
    if (res == NULL)
        return;
    sq__tres_t *r = (sq__tres_t *)res;
    res_clear(r);
    free(r->hdrs);
    free(r->reason);
    sq__buf_free(&r->body);
    sq__buf_free(&r->raw);
    json_decref(r->json);
    free(r);
}

int sq__test_build_request(sq__buf_t *b, const char *method, const char *target,
                           const char *const *headers, const void *body, size_t body_len)
{
    sq_test_req_opts_t o;
    sq_test_req_opts_init(&o);
    return build_request(b, method, target, headers, NULL, body, body_len, &o);
}
