/* HTTP/1 parsing: llhttp's callbacks, and the checks squall adds to llhttp's strict mode
 * (line endings between spans, one Host, known transfer codings, limits on the target,
 * the head, the body and chunk extensions). They fill the exchange; h1_conn.c drives
 * llhttp and acts on what they decide. */
#include <strings.h>

#include "http/h1_int.h"
#include "server/server_int.h"

#define CONN(p) ((sq__conn_t *)(p)->data)

static int fail(sq__exch_t *x, int status)
{
    x->err_status = status;
    return -1;
}

/* ---- line endings between the spans llhttp reports ----
 *
 * RFC 9112 §2.2 ends every line of a head with CRLF and only allows a recipient to take a
 * bare LF; §5.2 lets it take obs-fold continuation lines only to reject or unfold them.
 * llhttp 8.1, even in strict mode, takes a bare LF after the request line and as the blank
 * line that ends the head or the trailer section, and hands obs-fold on as more of the
 * value. A front end that reads those bytes differently splits the stream into different
 * requests (smuggling), so squall answers 400 instead: from the version on, it keeps the
 * line-ending bytes llhttp skips between the spans it reports, and checks them where a
 * field name or value starts and where the head or trailers end. Costs a few compares per
 * field; the state lives in the exchange across reads (tests: smuggling/bare_lf_*,
 * smuggling/obs_fold_*). */

#define GAP_BAD 0xff

/* Adds the line endings of p..end to x->gap; text after a line ending (a continuation
 * line) or more than 4 of them makes it bad. With to_blank_line, stops at 4. */
void sq__h1_gap_scan(sq__exch_t *x, const char *p, const char *end, bool to_blank_line)
{
    for (; p < end; p++) {
        if (x->gap_n == GAP_BAD || (to_blank_line && x->gap_n == 4))
            return;
        if (*p == '\r' || *p == '\n') {
            if (x->gap_n < sizeof(x->gap))
                x->gap[x->gap_n++] = *p;
            else
                x->gap_n = GAP_BAD;
        } else if (x->gap_n != 0) {
            x->gap_n = GAP_BAD;
        }
    }
}

/* A span starts at `at`: true when the line endings since the previous one are exactly
 * want[0, wlen) ("" within a line, CRLF before a field name). Starts the next gap after
 * the span. The slow path, for gaps that cross reads. */
static bool gap_check_slow(sq__exch_t *x, const char *at, size_t len, const char *want,
                           size_t wlen)
{
    if (!(x->flags & SQ__XF_GAP))
        return true;
    sq__h1_gap_scan(x, x->gap_from ? x->gap_from : sq__hs(x->srv)->rd_base, at, false);
    bool ok = x->gap_n == wlen && memcmp(x->gap, want, wlen) == 0;
    x->gap_from = at + len;
    x->gap_n = 0;
    return ok;
}

/* Before a field name: exactly CRLF since the previous span. The usual case, a gap wholly
 * in this read, costs a few compares. */
static inline bool gap_crlf(sq__exch_t *x, const char *at, size_t len)
{
    const char *g = x->gap_from;
    if (SQ__LIKELY(g != NULL && x->gap_n == 0 && at - g == 2 && g[0] == '\r' && g[1] == '\n')) {
        x->gap_from = at + len;
        return true;
    }
    return gap_check_slow(x, at, len, "\r\n", 2);
}

/* Before a value, or more of a name or value: no line ending since the previous span
 * (a line ending there is obs-fold). */
static inline bool gap_inline(sq__exch_t *x, const char *at, size_t len)
{
    const char *g = x->gap_from;
    if (SQ__LIKELY(g != NULL && x->gap_n == 0)) {
        for (; g < at; g++)
            if (*g == '\r' || *g == '\n')
                return gap_check_slow(x, at, len, "", 0);
        x->gap_from = at + len;
        return true;
    }
    return gap_check_slow(x, at, len, "", 0);
}

/* The head or the trailer section has ended: true when it ended with CRLF CRLF. llhttp
 * has consumed those bytes, so they are all in the read at hand or in x->gap. */
static bool gap_end(sq__exch_t *x)
{
    if (!(x->flags & SQ__XF_GAP))
        return true;
    x->flags &= ~SQ__XF_GAP;
    const char *g = x->gap_from;
    x->gap_from = NULL;
    if (SQ__LIKELY(g != NULL && x->gap_n == 0 && sq__hs(x->srv)->rd_end - g >= 4 &&
                   memcmp(g, "\r\n\r\n", 4) == 0))
        return true;
    sq__h1_gap_scan(x, g ? g : sq__hs(x->srv)->rd_base, sq__hs(x->srv)->rd_end, true);
    return x->gap_n == 4 && memcmp(x->gap, "\r\n\r\n", 4) == 0;
}

static int on_version(llhttp_t *p, const char *at, size_t len)
{
    sq__exch_t *x = sq__h1_x(CONN(p));
    x->flags |= SQ__XF_GAP;
    x->gap_from = at + len;
    x->gap_n = 0;
    return 0;
}

static int on_message_begin(llhttp_t *p)
{
    sq__conn_t *c = CONN(p);
    /* "no version read yet": llhttp sets them as it reads the digits, and keeps the last
     * request's otherwise, which status_for_error (h1_conn.c) must not take for this one */
    p->http_major = p->http_minor = SQ__H1_NO_VERSION;
    if (sq__h1_x(c) == NULL && (c->exch = sq__h1_new_exch(c)) == NULL)
        return -1;
    c->pstate = SQ__H1_HEAD;
    sq__tq_put(c, SQ__TQ_HEAD);
    sq__h1_stamp(sq__h1_x(c));
    return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t len)
{
    sq__exch_t *x = sq__h1_x(CONN(p));
    sq_server_t *srv = x->srv;
    x->target_len += (uint32_t)len;
    if (x->target_len > srv->opts.max_uri_bytes)
        return fail(x, 414);
    x->header_bytes += len;
    if (x->header_bytes > srv->opts.max_header_bytes)
        return fail(x, 431);
    return sq__buf_append(&x->hb, at, len) ? fail(x, 500) : 0;
}

static int on_url_complete(llhttp_t *p)
{
    sq__exch_t *x = sq__h1_x(CONN(p));
    return sq__buf_append(&x->hb, "", 1) ? fail(x, 500) : 0;
}

/* Header fields, and trailer fields after a chunked body. Trailers are checked and
 * counted against max_header_bytes, then dropped: RFC 9110 §6.5.1 forbids merging them
 * into the header section the handler reads, and squall has no use for them. */
static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
    sq__exch_t *x = sq__h1_x(CONN(p));
    sq_server_t *srv = x->srv;
    if (!(x->flags & SQ__XF_IN_FIELD)) {
        if (!gap_crlf(x, at, len))
            return fail(x, 400); /* a bare LF before the field */
        x->flags |= SQ__XF_IN_FIELD;
        if (!(x->flags & SQ__XF_TRAILERS) &&
            x->hidx.len / sizeof(sq__hdr_t) >= srv->opts.max_headers)
            return fail(x, 431);
        x->cur_off = (uint32_t)x->hb.len;
        x->header_bytes += 4; /* ": " and CRLF */
    } else if (!gap_inline(x, at, len)) {
        return fail(x, 400);
    }
    x->header_bytes += len;
    if (x->header_bytes > srv->opts.max_header_bytes)
        return fail(x, 431);
    if (x->flags & SQ__XF_TRAILERS)
        return 0;
    return sq__buf_append(&x->hb, at, len) ? fail(x, 500) : 0;
}

static int on_header_field_complete(llhttp_t *p)
{
    sq__exch_t *x = sq__h1_x(CONN(p));
    sq__hdr_t h = {.name_off = x->cur_off, .name_len = (uint32_t)x->hb.len - x->cur_off};
    x->flags &= ~SQ__XF_IN_FIELD;
    if (x->flags & SQ__XF_TRAILERS)
        return 0;
    if (sq__buf_append(&x->hb, "", 1) || sq__buf_append(&x->hidx, &h, sizeof(h)))
        return fail(x, 500);
    x->cur_off = (uint32_t)x->hb.len;
    return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len)
{
    sq__exch_t *x = sq__h1_x(CONN(p));
    /* An empty value (RFC 9110 §5.5 allows it) comes as an empty span placed after its
     * line's CRLF: no bytes to check, and that CRLF is checked before the next field or
     * at the end of the head (test: regress_http/empty_header_values_are_accepted). */
    if (len == 0)
        return 0;
    if (!gap_inline(x, at, len))
        return fail(x, 400); /* RFC 9112 §5.2: obs-fold, rejected */
    x->header_bytes += len;
    if (x->header_bytes > x->srv->opts.max_header_bytes)
        return fail(x, 431);
    if (x->flags & SQ__XF_TRAILERS)
        return 0;
    return sq__buf_append(&x->hb, at, len) ? fail(x, 500) : 0;
}

/* Transfer-Encoding (RFC 9112 §6.1): squall implements chunked only, as the final and only
 * coding; anything else it cannot decode (501). */
static void check_transfer_encoding(sq__exch_t *x, const char *v, size_t n)
{
    x->flags |= SQ__XF_TE;
    const char *p = v, *end = v + n;
    while (p < end) {
        while (p < end && (*p == ' ' || *p == '\t' || *p == ','))
            p++;
        const char *tok = p;
        while (p < end && *p != ',' && *p != ' ' && *p != '\t' && *p != ';')
            p++;
        if (p > tok && !sq__h1_name_is(tok, (size_t)(p - tok), "chunked", 7))
            x->flags |= SQ__XF_TE_UNKNOWN;
        while (p < end && *p != ',')
            p++;
    }
}

static int on_header_value_complete(llhttp_t *p)
{
    sq__exch_t *x = sq__h1_x(CONN(p));
    if (x->flags & SQ__XF_TRAILERS)
        return 0;
    sq__hdr_t *h = (sq__hdr_t *)(x->hidx.base + x->hidx.len) - 1;
    uint32_t vlen = (uint32_t)x->hb.len - x->cur_off;
    while (vlen > 0 && (x->hb.base[x->cur_off + vlen - 1] == ' ' ||
                        x->hb.base[x->cur_off + vlen - 1] == '\t'))
        vlen--; /* RFC 9110 §5.5: trailing whitespace is not part of the value */
    x->hb.len = x->cur_off + vlen;
    h->val_off = x->cur_off;
    h->val_len = vlen;
    if (sq__buf_append(&x->hb, "", 1))
        return fail(x, 500);
    const char *name = x->hb.base + h->name_off, *val = x->hb.base + h->val_off;
    if (memchr(val, '\0', vlen) != NULL)
        return fail(x, 400); /* RFC 9110 §5.5: NUL in a field value */
    switch (h->name_len) {
    case 4:
        if (sq__h1_name_is(name, 4, "host", 4) && x->host_count < 2)
            x->host_count++; /* saturates: 257 Host lines must not wrap to one */
        break;
    case 6:
        if (sq__h1_name_is(name, 6, "expect", 6)) {
            if (vlen == 12 && sq__h1_name_is(val, 12, "100-continue", 12))
                x->flags |= SQ__XF_EXPECT;
        }
        break;
    case 17:
        if (sq__h1_name_is(name, 17, "transfer-encoding", 17))
            check_transfer_encoding(x, val, vlen);
        break;
    }
    return 0;
}

static sq_method_t method_id(uint8_t m)
{
    switch (m) {
    case HTTP_GET:
        return SQ_METHOD_GET;
    case HTTP_HEAD:
        return SQ_METHOD_HEAD;
    case HTTP_POST:
        return SQ_METHOD_POST;
    case HTTP_PUT:
        return SQ_METHOD_PUT;
    case HTTP_DELETE:
        return SQ_METHOD_DELETE;
    case HTTP_PATCH:
        return SQ_METHOD_PATCH;
    case HTTP_OPTIONS:
        return SQ_METHOD_OPTIONS;
    default:
        return SQ_METHOD_OTHER;
    }
}

/* The target: origin-form "/path?query", absolute-form "http://host/path" (RFC 9112
 * §3.2.2) or asterisk-form "*", split into path and query and matched against the app's
 * routes. Returns 0, or -1 out of memory. */
int sq__h1_route(sq__exch_t *x, const char *query, int has_pct)
{
    const char *t = x->hb.base;
    size_t tlen = x->target_len;
    if (t[0] != '/' && tlen >= 7 &&
        (strncasecmp(t, "http://", 7) == 0 || strncasecmp(t, "https://", 8) == 0)) {
        const char *slash = memchr(t + 8, '/', tlen - 8 > tlen ? 0 : tlen - 8);
        size_t skip = slash ? (size_t)(slash - t) : tlen;
        t += skip;
        tlen -= skip;
    }
    const char *q = has_pct >= 0 ? query : memchr(t, '?', tlen);
    size_t plen = q ? (size_t)(q - t) : tlen;
    x->query = q ? q + 1 : "";
    const char *path = t; /* without a query, the target's own bytes (NUL-ended in hb) */
    if (q != NULL) {
        char *copy = sq__arena_alloc(&x->arena, plen + 1);
        if (copy == NULL)
            return -1;
        memcpy(copy, t, plen);
        copy[plen] = '\0';
        path = copy;
    }
    x->path = path; /* raw: sq_req_path decodes a copy of it */
    if (plen == 0 || path[0] != '/')
        x->verdict = (plen == 1 && path[0] == '*') ? SQ__MATCH_ASTERISK : SQ__MATCH_NONE;
    else
        x->verdict = sq__app_match_pct(sq__hs(x->srv)->app, x->method, path, plen,
                                       has_pct >= 0 ? has_pct != 0
                                                    : memchr(path, '%', plen) != NULL,
                                       &x->arena, &x->match);
    return 0;
}

static int on_headers_complete(llhttp_t *p)
{
    sq__conn_t *c = CONN(p);
    sq__exch_t *x = sq__h1_x(c);
    sq_server_t *srv = sq__conn_srv(c);
    x->llmethod = p->method;
    x->method = method_id(p->method);
    x->http_minor = p->http_minor;
    x->flags |= SQ__XF_HEAD_DONE;
    if (!gap_end(x))
        return fail(x, 400); /* a bare LF ends the request line or the head */
    if (p->http_major != 1 || p->http_minor > 1)
        return fail(x, 505);
    /* RFC 9112 §3.2: exactly one Host in HTTP/1.1; never more than one. */
    if ((p->http_minor == 1 && x->host_count != 1) || x->host_count > 1)
        return fail(x, 400);
    /* RFC 9112 §6.1: Transfer-Encoding in HTTP/1.0 means the framing is faulty. */
    if ((x->flags & SQ__XF_TE) && p->http_minor == 0)
        return fail(x, 400);
    if (x->flags & SQ__XF_TE_UNKNOWN)
        return fail(x, 501);

    if (sq__h1_route(x, NULL, -1) != 0)
        return fail(x, 500);

    /* A route that reads this method's body as a stream (h1_body.c) is bounded by its own
     * limit, and its handler runs now, before the body. */
    const sq_handler_t *h = x->match.handler;
    bool stream = x->verdict == SQ__MATCH_OK && x->match.cb != NULL && h != NULL &&
                  (h->stream_body & SQ_STREAM(x->method)) &&
                  ((p->flags & F_CHUNKED) || ((p->flags & F_CONTENT_LENGTH) && p->content_length));
    uint64_t max_body = !stream                     ? srv->opts.max_body_bytes
                        : h->stream_body_max != 0 ? h->stream_body_max
                                                  : SQ_STREAM_BODY_MAX;
    if ((p->flags & F_CONTENT_LENGTH) && p->content_length > max_body)
        return fail(x, 413);

    /* RFC 9110 §10.1.1: tell a client that waits for it to send the body — unless the
     * answer is already known to be final (404, 405, 422, a bad `*`): then that answer
     * goes now instead, and the connection closes, since the body was never read (test:
     * regress_http/expect_100_*). */
    if ((x->flags & SQ__XF_EXPECT) && p->http_minor == 1 &&
        ((p->flags & F_CONTENT_LENGTH && p->content_length > 0) || (p->flags & F_CHUNKED))) {
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        if (x->verdict != SQ__MATCH_OK) {
            sq__tq_drop(c);
            c->pstate = SQ__H1_HANDLER;
            c->flags |= SQ__CF_CLOSE_AFTER | SQ__CF_LINGER;
            srv->stats.requests++;
            if (x->method == SQ_METHOD_HEAD)
                x->flags |= SQ__XF_HEAD;
            sq__h1_dispatch(c, x);
            return HPE_PAUSED;
        }
        if (stream) {
            /* its hooks and handler decide first: 100 goes when the body is read
             * (sq_req_body_read), so a refused upload is never sent (RFC 9110 §10.1.1) */
            x->flags |= SQ__XF_CONTINUE_OWED;
        } else {
            uv_buf_t b = uv_buf_init((char *)cont, sizeof(cont) - 1);
            if (sq__conn_write(c, &b, 1, NULL, NULL) != 0)
                return fail(x, 500);
        }
    }
    c->pstate = SQ__H1_BODY;
    /* the body's timeout, for a body; without one (most requests) llhttp ends the message
     * before it returns, and it stays in the head's queue until then */
    if (stream || (p->flags & F_CHUNKED) || ((p->flags & F_CONTENT_LENGTH) && p->content_length > 0))
        sq__tq_put(c, SQ__TQ_BODY);
    if (stream) {
        x->flags |= SQ__XF_STREAM;
        srv->stats.requests++;
        sq__h1_dispatch(c, x);
        if (c->flags & SQ__CF_CLOSED)
            return HPE_PAUSED;
        if (x->flags & SQ__XF_FINISHED) { /* answered at once: the tick closes */
            c->pflags |= SQ__HF_PAUSED;
            sq__tick_add(c);
            return HPE_PAUSED;
        }
    }
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    sq__conn_t *c = CONN(p);
    sq__exch_t *x = sq__h1_x(c);
    if (x->flags & SQ__XF_STREAM) {
        /* staged for the reader; the tick hands it over (h1_body.c) */
        uint64_t max = x->match.handler->stream_body_max;
        x->body_seen += len;
        sq__tick_add(c);
        if (x->body_seen > (max != 0 ? max : SQ_STREAM_BODY_MAX)) {
            /* the reader is told; its handler answers (413) and the connection closes
             * after it (h1_body.c). Until then nothing more is parsed or read. */
            x->body_err = UV_E2BIG;
            sq__tq_drop(c);
            c->pflags |= SQ__HF_PAUSED;
            return HPE_PAUSED;
        }
        if (sq__buf_append(&x->body, at, len) != 0)
            return fail(x, 500);
        if (!(x->flags & SQ__XF_BODY_PAUSED))
            sq__tq_put(c, SQ__TQ_BODY); /* while streaming, a silence timeout */
        if (x->body.len < SQ__STREAM_STAGE)
            return 0;
        c->pflags |= SQ__HF_PAUSED;
        return HPE_PAUSED;
    }
    if (x->body.len + len > sq__conn_srv(c)->opts.max_body_bytes)
        return fail(x, 413);
    if (sq__buf_append(&x->body, at, len) != 0)
        return fail(x, 500);
    /* No fresh deadline per piece: body_timeout_ms bounds the whole body, so a client
     * that trickles a byte just inside it cannot hold the buffer forever (test:
     * regress_http/body_trickle_*). */
    return 0;
}

/* Chunk extensions (RFC 9112 §7.1.1): squall knows none, so they are skipped, but not
 * without bound: their bytes count against max_header_bytes with the head and the
 * trailers, past which the request is answered 413 (test: regress_http/chunk_ext_*). */
static int on_chunk_extension(llhttp_t *p, const char *at, size_t len)
{
    sq__exch_t *x = sq__h1_x(CONN(p));
    x->header_bytes += len;
    return x->header_bytes > x->srv->opts.max_header_bytes ? fail(x, 413) : 0;
}

/* The last chunk's line is read: pause, so sq__h1_process learns where the trailer section
 * starts and can check how it ends (see gap_check). Chunked requests only. */
static int on_chunk_header(llhttp_t *p)
{
    sq__exch_t *x = sq__h1_x(CONN(p));
    if (p->content_length != 0 || (x->flags & SQ__XF_TRAILERS))
        return 0;
    x->flags |= SQ__XF_TRAILERS | SQ__XF_TRAILER_PAUSE;
    return HPE_PAUSED;
}

/* The request was read whole: count it, dispatch it (a streamed body's handler runs
 * already) and decide whether parsing goes on (0) or waits (HPE_PAUSED): for an answer
 * still to come, a connection closed, closing or taken over, or queued answers to drain. */
int sq__h1_complete(sq__conn_t *c, sq__exch_t *x, bool keep_alive, bool upgrade)
{
    sq__tq_drop(c);
    c->pstate = SQ__H1_HANDLER;
    if (!(x->flags & SQ__XF_STREAM))
        sq__conn_srv(c)->stats.requests++;
    if (keep_alive && !sq__conn_srv(c)->closing)
        x->flags |= SQ__XF_KEEPALIVE;
    if (upgrade)
        x->flags |= SQ__XF_UPGRADE;
    if (x->method == SQ_METHOD_HEAD)
        x->flags |= SQ__XF_HEAD;
    if (x->flags & SQ__XF_STREAM) {
        x->flags |= SQ__XF_BODY_DONE; /* its handler runs already: the tick tells the end */
        sq__tick_add(c);
    } else {
        if (sq__buf_reserve(&x->body, 1) == 0)
            x->body.base[x->body.len] = '\0';
        sq__h1_dispatch(c, x);
    }
    if (c->flags & SQ__CF_CLOSED || c->pstate == SQ__H1_TAKEN)
        return HPE_PAUSED;
    if (!(x->flags & SQ__XF_FINISHED)) {
        c->pflags |= SQ__HF_PAUSED; /* answered later; pipelined bytes wait in order */
        return HPE_PAUSED;
    }
    if (!sq__h1_response_done(c))
        return HPE_PAUSED;
    return sq__h1_drain_pause(c) ? HPE_PAUSED : 0;
}

static int on_message_complete(llhttp_t *p)
{
    sq__conn_t *c = CONN(p);
    sq__exch_t *x = sq__h1_x(c);
    if (!gap_end(x))
        return fail(x, 400); /* a bare LF ends the trailer section */
    return sq__h1_complete(c, x, llhttp_should_keep_alive(p), p->upgrade);
}

const llhttp_settings_t sq__h1_settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_url_complete = on_url_complete,
    .on_version = on_version,
    .on_header_field = on_header_field,
    .on_header_field_complete = on_header_field_complete,
    .on_header_value = on_header_value,
    .on_header_value_complete = on_header_value_complete,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_chunk_header = on_chunk_header,
    .on_chunk_extension_name = on_chunk_extension,
    .on_chunk_extension_value = on_chunk_extension,
    .on_message_complete = on_message_complete,
};
