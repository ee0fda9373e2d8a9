/* Responses: the status line and headers written straight into the connection's write
 * batch, bodies copied or referenced, streaming with chunked framing (RFC 9112 §7.1). */
#include <assert.h>
#include <stdlib.h>
#include <strings.h>

#include <jansson.h>

#include "http/h1_int.h"
#include "server/server_int.h"

const char *sq__status_reason(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 406: return "Not Acceptable";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 411: return "Length Required";
    case 412: return "Precondition Failed";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 416: return "Range Not Satisfiable";
    case 417: return "Expectation Failed";
    case 422: return "Unprocessable Content";
    case 426: return "Upgrade Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
    }
}

static char *put(char *p, const char *s, size_t n)
{
    memcpy(p, s, n);
    return p + n;
}
#define PUTS(p, lit) put((p), (lit), sizeof(lit) - 1)

/* v in decimal: its digits counted first, then written from the last, two a step (a
 * Content-Length and a request id on every response). */
static char *put_u64(char *p, uint64_t v)
{
    static const char pairs[] = "00010203040506070809101112131415161718192021222324252627282930"
                                "31323334353637383940414243444546474849505152535455565758596061"
                                "62636465666768697071727374757677787980818283848586878889909192"
                                "93949596979899";
    if (v < 100) { /* most bodies' lengths, cheaper than counting */
        if (v < 10) {
            *p = (char)('0' + v);
            return p + 1;
        }
        p[0] = pairs[v * 2];
        p[1] = pairs[v * 2 + 1];
        return p + 2;
    }
    unsigned n = 1;
    for (uint64_t t = v; t >= 10; t /= 10)
        n++;
    char *q = p + n;
    while (v >= 100) {
        unsigned d = (unsigned)(v % 100) * 2;
        v /= 100;
        *--q = pairs[d + 1];
        *--q = pairs[d];
    }
    if (v >= 10) {
        *--q = pairs[v * 2 + 1];
        *--q = pairs[v * 2];
    } else {
        *--q = (char)('0' + v);
    }
    return p + n;
}

/* The request id x->id in decimal, as put_u64 writes it: counted up in the server's copy
 * of the last one written when it follows that one (the usual case), else written anew.
 * Writes 20 bytes, of which the id is the first ones: the head's room has 20 for it. */
static char *put_request_id(char *p, sq_server_t *srv, uint64_t id)
{
    char *t = srv->rid_text;
    if (id != 0 && id - 1 == srv->rid_last && srv->rid_len != 0) {
        int i = srv->rid_len - 1;
        while (i >= 0 && t[i] == '9')
            t[i--] = '0';
        if (i >= 0) {
            t[i]++;
        } else { /* 9...9 + 1: one digit more (never past 20: UINT64_MAX has 20) */
            memmove(t + 1, t, srv->rid_len);
            t[0] = '1';
            srv->rid_len++;
        }
    } else {
        srv->rid_len = (uint8_t)(put_u64(t, id) - t);
    }
    srv->rid_last = id;
    memcpy(p, t, sizeof(srv->rid_text));
    return p + srv->rid_len;
}

bool sq__status_is_final(int status)
{
    return status >= 200 && status <= 999;
}

/* Connection: upgrade is let through: RFC 9110 §7.8 wants it next to an Upgrade header,
 * on a 101 (the WebSocket handshake) and on a 426; squall's own Connection line is a
 * separate field line of the same list. */
bool sq__header_is_framing(const char *name, const char *value)
{
    switch (name[0] | 0x20) { /* most names are none of the three: one comparison */
    case 'c':
        if (strcasecmp(name, "Content-Length") == 0)
            return true;
        return strcasecmp(name, "Connection") == 0 && strcasecmp(value, "upgrade") != 0;
    case 't':
        return strcasecmp(name, "Transfer-Encoding") == 0;
    default:
        return false;
    }
}

static bool status_has_body(int status)
{
    return !(status < 200 || status == 204 || status == 304);
}

/* The most bytes write_head writes besides the Server line, the Content-Type value and
 * the handler's headers: each literal below, a reason phrase of at most 64 bytes, and 20
 * digits of a Content-Length. */
#define HEAD_FIXED                                                                         \
    (sizeof("HTTP/1.1 999 \r\n") - 1 + 64 + sizeof("Date: \r\n") - 1 + 29 +                  \
     sizeof("Content-Type: \r\n") - 1 + sizeof("Content-Length: \r\n") - 1 + 20 +            \
     sizeof("Transfer-Encoding: chunked\r\n") - 1 + sizeof("Connection: keep-alive\r\n") - 1 + \
     2)

/* The length of a content type, 0 for none (NULL), SIZE_MAX for one a field value cannot
 * be (RFC 9110 §5.5: CR or LF would split the response). Checked on every call: a caller
 * may write new bytes into the same buffer. */
static size_t ctype_len(const char *ctype)
{
    return ctype != NULL ? sq__field_len(ctype, SQ__CH_VALUE) : 0;
}

/* Writes the status line and headers; ctlen is ctype_len(ctype), already checked. clen
 * >= 0 is a Content-Length; -1 is a streaming body (chunked for HTTP/1.1, close-delimited
 * for HTTP/1.0). A body to copy (sq_res_send's, clen bytes) goes right after the head, in
 * the same room and segment, unless the response has none (HEAD, 1xx, 204, 304). *bp is
 * the batch written to, for a body that follows. */
static int write_head(sq__exch_t *x, int status, const char *ctype, size_t ctlen, int64_t clen,
                      const void *body, sq__wbatch_t **bp)
{
    sq_server_t *srv = x->srv;
    x->res_len = clen; /* for an access log's after hook */
    sq__h1_run_after(x, status); /* they may add headers: before the sizes are taken */
    sq__wbatch_t *b = x->ops->batch(x);
    if (status < 100 || status > 999)
        status = 500;
    size_t need = HEAD_FIXED + sq__hs(srv)->server_line_len + ctlen + x->rh.len +
                  sq__hs(srv)->rid_name_len + 20 + 2 + (body != NULL ? (size_t)clen : 0);
    if (b == NULL || sq__buf_reserve(&b->buf, need) != 0)
        return UV_ENOMEM;
    *bp = b;
    x->status = status;
    if (status >= 500)
        srv->stats.responses_5xx++;
    else if (status >= 400)
        srv->stats.responses_4xx++;
    if (clen < 0 && status_has_body(status)) {
        if (x->http_minor >= 1)
            x->flags |= SQ__XF_CHUNKED;
        else
            x->flags &= ~SQ__XF_KEEPALIVE; /* the end of the body is the end of the stream */
    } else if (!status_has_body(status)) {
        x->flags |= SQ__XF_HEAD; /* RFC 9112 §6.3: 1xx, 204, 304 end at the head; writes
                                    of a streamed body are dropped like HEAD's */
    }
    if (x->ops->last(x) || srv->closing)
        x->flags &= ~SQ__XF_KEEPALIVE;

    char *start = b->buf.base + b->buf.len, *p = start;
    sq__httpsrv_t *hs = sq__hs(srv);
    const char *date = sq__date_get(&hs->date, sq__loop_now(srv->loop));
    if (hs->head_status != status || hs->head_sec != hs->date.sec) {
        /* the status line, Server and Date, made again for another status or second */
        const char *reason = sq__status_reason(status);
        size_t rlen = strlen(reason);
        if (rlen > 64)
            rlen = 64; /* never: squall's reason phrases are short */
        char *h = hs->head;
        h = PUTS(h, "HTTP/1.1 ");
        *h++ = (char)('0' + status / 100);
        *h++ = (char)('0' + status / 10 % 10);
        *h++ = (char)('0' + status % 10);
        *h++ = ' ';
        h = put(h, reason, rlen);
        h = PUTS(h, "\r\n");
        h = put(h, hs->server_line, hs->server_line_len);
        h = PUTS(h, "Date: ");
        h = put(h, date, 29);
        h = PUTS(h, "\r\n");
        hs->head_len = (size_t)(h - hs->head);
        hs->head_status = status;
        hs->head_sec = hs->date.sec;
    }
    p = put(p, hs->head, hs->head_len);
    if (ctype != NULL) {
        p = PUTS(p, "Content-Type: ");
        p = put(p, ctype, ctlen);
        p = PUTS(p, "\r\n");
    }
    if (status_has_body(status)) {
        if (clen >= 0) {
            p = PUTS(p, "Content-Length: ");
            p = put_u64(p, (uint64_t)clen);
            p = PUTS(p, "\r\n");
        } else if (x->flags & SQ__XF_CHUNKED) {
            p = PUTS(p, "Transfer-Encoding: chunked\r\n");
        }
    }
    if (status != 101) {
        if (!(x->flags & SQ__XF_KEEPALIVE))
            p = PUTS(p, "Connection: close\r\n");
        else if (x->http_minor == 0)
            p = PUTS(p, "Connection: keep-alive\r\n");
    }
    if (hs->rid_name_len != 0) {
        p = put(p, hs->rid_name, hs->rid_name_len);
        p = put_request_id(p, srv, x->id);
        p = PUTS(p, "\r\n");
    }
    if (x->rh.len)
        p = put(p, x->rh.base, x->rh.len);
    p = PUTS(p, "\r\n");
    if (body != NULL && clen > 0 && !(x->flags & SQ__XF_HEAD))
        p = put(p, body, (size_t)clen);
    size_t n = (size_t)(p - start);
    assert(n <= need);
    b->buf.len += n;
    int rc = sq__batch_commit(b, n);
    x->flags |= SQ__XF_HEADERS_SENT;
    return rc;
}

/* Common entry of every finishing call. Returns 1 to go on, or the call's result. */
static int begin_finish(sq__exch_t *x, int status)
{
    if (x->flags & (SQ__XF_FINISHED | SQ__XF_HEADERS_SENT | SQ__XF_IN_AFTER))
        return SQ_EALREADY_SENT;
    if (!x->ops->open(x)) {
        sq__h1_run_after(x, status); /* an access log sees it too, though nothing is sent */
        sq__exch_finished(x);
        return UV_ECANCELED;
    }
    return 1;
}

/* The exchange is held across the end of the call: closing the connection on a failed
 * write lets go of the connection's reference before the handler's is dropped. */
static int end_finish(sq__exch_t *x, int rc)
{
    sq__exch_hold(x);
    if (rc != 0) {
        x->ops->fail(x);
    } else {
        if (!(x->flags & SQ__XF_KEEPALIVE))
            x->ops->close_after(x);
        x->ops->flush(x);
    }
    sq__exch_finished(x);
    sq__exch_unhold(x);
    return rc;
}

int sq_res_send(sq_res_t *res, int status, const char *content_type, const void *body,
                size_t len)
{
    sq__exch_t *x = res->req;
    sq__wbatch_t *b;
    int rc;
    if (x->gz != NULL &&
        (rc = x->gz->ops->send(x, status, content_type, body, len, NULL, NULL)) != 1)
        return rc; /* compressed (gzip.c) */
    size_t ctlen = ctype_len(content_type);
    if (!sq__status_is_final(status) || ctlen == SIZE_MAX)
        return UV_EINVAL;
    if (len > (size_t)INT64_MAX)
        return UV_EMSGSIZE;
    rc = begin_finish(x, status);
    if (rc != 1)
        return rc;
    if (!status_has_body(status))
        len = 0;
    rc = write_head(x, status, content_type, ctlen, (int64_t)len, body, &b);
    return end_finish(x, rc);
}

int sq_res_send_ref(sq_res_t *res, int status, const char *content_type, const void *body,
                    size_t len, sq_free_cb free_cb, void *free_data)
{
    sq__exch_t *x = res->req;
    sq__wbatch_t *b;
    int rc;
    if (x->gz != NULL &&
        (rc = x->gz->ops->send(x, status, content_type, body, len, free_cb, free_data)) != 1)
        return rc; /* compressed (gzip.c) */
    size_t ctlen = ctype_len(content_type);
    rc = !sq__status_is_final(status) || ctlen == SIZE_MAX ? UV_EINVAL
             : len > (size_t)INT64_MAX                                         ? UV_EMSGSIZE
                                                                              : begin_finish(x, status);
    if (rc != 1) {
        if (free_cb != NULL)
            free_cb((void *)body, free_data);
        return rc;
    }
    if (!status_has_body(status))
        len = 0;
    rc = write_head(x, status, content_type, ctlen, (int64_t)len, NULL, &b);
    if (rc == 0 && len > 0 && !(x->flags & SQ__XF_HEAD)) {
        rc = sq__batch_add_ref(b, body, len, free_cb, free_data);
        free_cb = NULL; /* the batch owns it now, or freed it on failure below */
    }
    if (free_cb != NULL)
        free_cb((void *)body, free_data);
    return end_finish(x, rc);
}

/* The answer when JSON cannot be made (out of memory): bytes that need no encoder. Never
 * through sq_res_send_error, which encodes again: under memory pressure the two would
 * call each other until the stack ran out (a review found it with a failing malloc). */
static int send_500(sq_res_t *res)
{
    static const char oom[] = "{\"detail\":\"Internal Server Error\"}";
    return sq_res_send(res, 500, "application/json", oom, sizeof(oom) - 1);
}

int sq_res_send_json(sq_res_t *res, int status, const json_t *json)
{
    sq__exch_t *x = res->req;
    if (json == NULL || !sq__status_is_final(status))
        return UV_EINVAL;
    sq__buf_t *s = &sq__hs(x->srv)->scratch;
    size_t n = json_dumpb(json, s->base, s->cap, JSON_COMPACT | JSON_ENCODE_ANY);
    if (n > s->cap) {
        s->len = 0;
        if (sq__buf_reserve(s, n) != 0)
            return send_500(res);
        n = json_dumpb(json, s->base, s->cap, JSON_COMPACT | JSON_ENCODE_ANY);
    }
    if (n == 0)
        return send_500(res);
    return sq_res_send(res, status, "application/json", s->base, n);
}

/* NULL is what a failed json_pack() gives `sq_res_send_json_new(res, 200, json_pack(...))`:
 * it is answered with a 500, so that idiom never leaves the client waiting. */
int sq_res_send_json_new(sq_res_t *res, int status, json_t *json)
{
    if (json == NULL && sq__status_is_final(status))
        return send_500(res);
    int rc = sq_res_send_json(res, status, json);
    json_decref(json);
    return rc;
}

int sq_res_send_error(sq_res_t *res, int status, const char *detail)
{
    if (!sq__status_is_final(status))
        return UV_EINVAL;
    json_t *j = json_pack("{s:s}", "detail", detail ? detail : sq__status_reason(status));
    if (j == NULL)
        return send_500(res);
    return sq_res_send_json_new(res, status, j);
}

/* RFC 9110 §5.5: a field value is visible characters, spaces and tabs (obs-text too);
 * CR and LF would end the field and start another (response splitting), and the other
 * controls are invalid. A name is a token (§5.1): tchars only. */
bool sq__field_ok(const char *s, bool is_name)
{
    if (is_name)
        return *s != '\0' && sq__field_len(s, SQ__CH_TCHAR) != SIZE_MAX;
    return sq__field_len(s, SQ__CH_VALUE) != SIZE_MAX;
}

bool sq__field_value_ok(const char *value)
{
    return value == NULL || sq__field_ok(value, false);
}

int sq_res_header(sq_res_t *res, const char *name, const char *value)
{
    sq__exch_t *x = res->req;
    if (x->flags & (SQ__XF_FINISHED | SQ__XF_HEADERS_SENT))
        return SQ_EALREADY_SENT;
    size_t nl = sq__field_len(name, SQ__CH_TCHAR), vl = sq__field_len(value, SQ__CH_VALUE);
    if (nl == 0 || nl == SIZE_MAX || vl == SIZE_MAX || sq__header_is_framing(name, value))
        return UV_EINVAL;
    if (sq__buf_reserve(&x->rh, nl + vl + 4) != 0)
        return UV_ENOMEM;
    sq__buf_append_unsafe(&x->rh, name, nl);
    sq__buf_append_unsafe(&x->rh, ": ", 2);
    sq__buf_append_unsafe(&x->rh, value, vl);
    sq__buf_append_unsafe(&x->rh, "\r\n", 2);
    return 0;
}

int sq_res_start(sq_res_t *res, int status, const char *content_type)
{
    sq__exch_t *x = res->req;
    int zrc;
    if (x->gz != NULL && (zrc = x->gz->ops->start(x, status, content_type)) != 1)
        return zrc; /* compressed (gzip.c) */
    size_t ctlen = ctype_len(content_type);
    if (!sq__status_is_final(status) || ctlen == SIZE_MAX)
        return UV_EINVAL;
    if (x->flags & (SQ__XF_FINISHED | SQ__XF_HEADERS_SENT | SQ__XF_IN_AFTER))
        return SQ_EALREADY_SENT;
    if (!x->ops->open(x)) {
        sq__h1_run_after(x, status);
        return UV_ECANCELED; /* sq_res_end releases res (res.h) */
    }
    sq__wbatch_t *b;
    int rc = write_head(x, status, content_type, ctlen, -1, NULL, &b);
    if (rc != 0) {
        x->ops->fail(x);
        return rc;
    }
    x->flags |= SQ__XF_STREAMING;
    x->ops->flush(x);
    return 0;
}

/* A streamed body of a known length (lib/static): the head with Content-Length `len`,
 * then the body through sq_res_write* with no chunk framing, then sq_res_end. Returns as
 * sq_res_start. Writing more or fewer than `len` bytes breaks the framing: a body that
 * cannot be completed ends with sq__res_abort. */
int sq__res_start_length(sq_res_t *res, int status, const char *content_type, uint64_t len)
{
    sq__exch_t *x = res->req;
    size_t ctlen = ctype_len(content_type);
    if (!sq__status_is_final(status) || ctlen == SIZE_MAX || len > (uint64_t)INT64_MAX)
        return UV_EINVAL;
    if (x->flags & (SQ__XF_FINISHED | SQ__XF_HEADERS_SENT | SQ__XF_IN_AFTER))
        return SQ_EALREADY_SENT;
    if (!x->ops->open(x)) {
        sq__h1_run_after(x, status);
        return UV_ECANCELED;
    }
    sq__wbatch_t *b;
    int rc = write_head(x, status, content_type, ctlen, (int64_t)len, NULL, &b);
    if (rc != 0) {
        x->ops->fail(x);
        return rc;
    }
    x->flags |= SQ__XF_STREAMING;
    x->ops->flush(x);
    return 0;
}

/* Finishes a response whose body cannot be completed (a file that shrank while it was
 * sent): the connection closes now, so the client sees a body cut short rather than one
 * framed wrong. Returns UV_ECANCELED when the client had gone, else UV_EIO. */
int sq__res_abort(sq_res_t *res)
{
    sq__exch_t *x = res->req;
    if (x->flags & SQ__XF_FINISHED)
        return SQ_EALREADY_SENT;
    if (!x->ops->open(x)) {
        sq__exch_finished(x);
        return UV_ECANCELED;
    }
    return end_finish(x, UV_EIO);
}

/* A streaming write's completion (the write queue's): the handler's callback, then the
 * exchange's hold is dropped. */
static void write_done(sq__conn_t *c, int status, void (*fn)(void), void *ud, void *ud2)
{
    sq__exch_t *x = ud;
    ((sq_res_write_cb)fn)(&x->res, status, ud2);
    x->wholds--;
    sq__exch_unhold(x);
}

/* The body of sq_res_write and sq_res_write_ref: `data` is copied when free_cb is
 * SQ__WRITE_COPY, else borrowed until free_cb runs (always exactly once). */
static int res_write(sq_res_t *res, const void *data, size_t len, sq_free_cb free_cb,
                     void *free_data, sq_res_write_cb cb, void *cb_data)
{
    sq__exch_t *x = res->req;
    int zrc;
    if (x->gz != NULL &&
        (zrc = x->gz->ops->write(x, data, len, free_cb, free_data, cb, cb_data)) != 1)
        return zrc; /* compressed (gzip.c) */
    bool copy = free_cb == SQ__WRITE_COPY;
    int rc = !(x->flags & SQ__XF_STREAMING) || (x->flags & SQ__XF_FINISHED) ? SQ_ENOTSTREAMING
             : !x->ops->open(x)                                           ? UV_ECANCELED
                                                                          : 0;
    sq__wbatch_t *b = rc == 0 ? x->ops->batch(x) : NULL;
    if (rc == 0 && b == NULL)
        rc = UV_ENOMEM;
    bool body = rc == 0 && len > 0 && !(x->flags & SQ__XF_HEAD);
    if (body && (x->flags & SQ__XF_CHUNKED)) {
        char hdr[24];
        int n = snprintf(hdr, sizeof(hdr), "%zx\r\n", len);
        rc = sq__batch_add_copy(b, hdr, (size_t)n);
    }
    if (body && rc == 0) {
        if (copy) {
            rc = sq__batch_add_copy(b, data, len);
        } else {
            rc = sq__batch_add_ref(b, data, len, free_cb, free_data);
            free_cb = NULL; /* the batch owns it now, or freed it on failure */
        }
    }
    if (body && rc == 0 && (x->flags & SQ__XF_CHUNKED))
        rc = sq__batch_add_copy(b, "\r\n", 2);
    if (!copy && free_cb != NULL)
        free_cb((void *)data, free_data);
    if (rc == 0 && cb != NULL) {
        rc = sq__batch_on_done(b, write_done, (void (*)(void))cb, x, cb_data);
        if (rc == 0) {
            x->wholds++; /* the completion holds the exchange: it gets this res */
            sq__exch_hold(x);
        }
    }
    if (rc == UV_ENOMEM) {
        x->ops->fail(x);
        return rc;
    }
    if (rc != 0)
        return rc;
    x->ops->flush(x);
    return 0;
}

int sq_res_write(sq_res_t *res, const void *data, size_t len, sq_res_write_cb cb, void *cb_data)
{
    return res_write(res, data, len, SQ__WRITE_COPY, NULL, cb, cb_data);
}

int sq_res_write_ref(sq_res_t *res, const void *data, size_t len, sq_free_cb free_cb,
                     void *free_data, sq_res_write_cb cb, void *cb_data)
{
    return res_write(res, data, len, free_cb, free_data, cb, cb_data);
}

size_t sq_res_queued_bytes(const sq_res_t *res)
{
    const sq__exch_t *x = res->req;
    return x->ops->open(x) ? x->ops->queued(x) : 0;
}

int sq_res_end(sq_res_t *res)
{
    sq__exch_t *x = res->req;
    if (x->gz != NULL)
        x->gz->ops->end(x); /* the gzip trailer (gzip.c) */
    if (x->flags & SQ__XF_FINISHED)
        return SQ_EALREADY_SENT;
    if (!x->ops->open(x)) {
        /* also when sq_res_start itself found the client gone: the handler's sq_res_end
         * must still release the response (test: async/streaming_started_after_*) */
        sq__exch_finished(x);
        return UV_ECANCELED;
    }
    if (!(x->flags & SQ__XF_STREAMING))
        return SQ_ENOTSTREAMING;
    int rc = 0;
    if ((x->flags & SQ__XF_CHUNKED) && !(x->flags & SQ__XF_HEAD))
        rc = sq__batch_add_copy(x->ops->batch(x), "0\r\n\r\n", 5);
    return end_finish(x, rc);
}

sq_req_t *sq_res_req(sq_res_t *res)
{
    return res->req;
}

int sq__res_switch(sq_res_t *res, const sq__proto_t *proto, void *ud)
{
    sq__exch_t *x = res->req;
    if (x->flags & (SQ__XF_FINISHED | SQ__XF_HEADERS_SENT | SQ__XF_IN_AFTER))
        return SQ_EALREADY_SENT;
    if (!x->ops->open(x))
        return sq__res_takeover(res, proto, ud); /* releases res, UV_ECANCELED */
    sq__wbatch_t *b;
    int rc = write_head(x, 101, NULL, 0, 0, NULL, &b);
    if (rc != 0) {
        x->ops->fail(x);
        sq__exch_finished(x);
        return rc;
    }
    return sq__res_takeover(res, proto, ud);
}
