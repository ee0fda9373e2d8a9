/* HTTP/1 requests of the common shape, read without llhttp.
 *
 * Most requests are a method, an origin-form target, "HTTP/1.1" (or "HTTP/1.0") and a
 * few plain header lines, perhaps "Connection: keep-alive" or "close", with no body or
 * one of a Content-Length, all in one read. For those, llhttp's state machine and its
 * dozen callbacks per request cost more than the rest of the request
 * (docs/performance.md). This reader takes only a strict subset of what llhttp in strict
 * mode accepts — one space between the parts, CRLF line endings, header names of tchar,
 * values of visible characters and spaces, one Connection of a single close or keep-alive
 * token, one plain Content-Length, no Transfer-Encoding, Upgrade, Proxy-Connection or
 * Expect — and leaves everything else, untouched, to llhttp: a request outside the
 * subset, a head or body not wholly in the bytes at hand, a head over a limit, a body for
 * a route that reads it as a stream. A request it takes fills the exchange exactly as
 * h1_parse.c's callbacks would, and goes the same way from there (sq__h1_route,
 * sq__h1_complete). tests/test_h1_fast.c holds the two readers to the same answers. */
#include "http/h1_int.h"
#include "server/server_int.h"

/* The subset's byte classes: a target's (RFC 3986 §3.3-3.4 pchar and "/"; its "?" and
 * "%" are looked at apart), a field name's (RFC 9110 §5.6.2 tchar), a field value's (§5.5
 * visible characters and SP; HTAB and obs-text, which llhttp takes too, are left to it). */
enum { T = 1, N = 2, V = 4, TV = T | V, NV = N | V, A = T | N | V };

static const uint8_t fast_class[256] = {
    /* 0x00-0x1f: controls (HTAB included) */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    /* SP ! " # $ % & ' ( ) * + , - . / */
    V, A, V, NV, A, NV, A, A, TV, TV, A, A, TV, A, A, TV,
    /* 0-9 : ; < = > ? */
    A, A, A, A, A, A, A, A, A, A, TV, TV, V, TV, V, V,
    /* @ A-O */
    TV, A, A, A, A, A, A, A, A, A, A, A, A, A, A, A,
    /* P-Z [ \ ] ^ _ */
    A, A, A, A, A, A, A, A, A, A, A, V, V, V, NV, A,
    /* ` a-o */
    NV, A, A, A, A, A, A, A, A, A, A, A, A, A, A, A,
    /* p-z { | } ~ DEL */
    A, A, A, A, A, A, A, A, A, A, A, V, NV, V, A, 0,
    /* 0x80-0xff: left to llhttp */
};

/* The most header lines the subset takes (more go through llhttp). */
#define FAST_FIELDS 32

/* What a field name means to the subset: 1, a field that makes the request llhttp's
 * (Transfer-Encoding, Upgrade, Proxy-Connection, Expect); 2, Host; 3, Connection; 4,
 * Content-Length; 0, any other. */
static int field_kind(const char *n, size_t len)
{
    switch (len) {
    case 4:
        return sq__h1_name_is(n, 4, "host", 4) ? 2 : 0;
    case 6:
        return sq__h1_name_is(n, 6, "expect", 6);
    case 7:
        return sq__h1_name_is(n, 7, "upgrade", 7);
    case 10:
        return sq__h1_name_is(n, 10, "connection", 10) ? 3 : 0;
    case 14:
        return sq__h1_name_is(n, 14, "content-length", 14) ? 4 : 0;
    case 16:
        return sq__h1_name_is(n, 16, "proxy-connection", 16);
    case 17:
        return sq__h1_name_is(n, 17, "transfer-encoding", 17);
    default:
        return 0;
    }
}

/* The first byte at or after p that is not a visible character or SP (a value's class
 * V), looked for eight bytes at a time while eight are at hand: a byte outside
 * 0x20-0x7e is one under 0x20 (its subtraction borrows), 0x7f (zero after the xor) or one
 * with its high bit set. Borrows only ever mark bytes after the first such byte, and
 * the lowest mark is the first (little-endian). The LF before end stops the last step. */
static const char *value_end(const char *p, const char *end)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
    while (end - p >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        uint64_t del = w ^ (ones * 0x7f);
        uint64_t bad = (w | ((w - ones * 0x20) & ~w) | ((del - ones) & ~del)) & highs;
        if (bad != 0)
            return p + (__builtin_ctzll(bad) >> 3);
        p += 8;
    }
#endif
    while (fast_class[(uint8_t)*p] & V)
        p++;
    return p;
}

int sq__h1_fast(sq__conn_t *c, sq__exch_t *x, const char **pos, const char *end,
                const char *data_end)
{
    const char *p = *pos;
    uint8_t llmethod;
    sq_method_t method;
    /* A whole head ends with LF: `end` is just past the last LF at hand (the caller looks
     * for it once for all the requests of a read), and every loop below stops at an LF
     * (no class holds it), so none needs a bound of its own. */
    if (end - p < 18) /* "GET / HTTP/1.1\r\n\r\n" and a Host line at least */
        return -1;
    /* RFC 9112 §3: method SP request-target SP HTTP-version CRLF */
    switch (p[0]) {
    case 'G':
        if (memcmp(p, "GET ", 4) != 0)
            return -1;
        llmethod = HTTP_GET, method = SQ_METHOD_GET, p += 4;
        break;
    case 'H':
        if (memcmp(p, "HEAD ", 5) != 0)
            return -1;
        llmethod = HTTP_HEAD, method = SQ_METHOD_HEAD, p += 5;
        break;
    case 'P':
        if (memcmp(p, "POST ", 5) == 0)
            llmethod = HTTP_POST, method = SQ_METHOD_POST, p += 5;
        else if (memcmp(p, "PUT ", 4) == 0)
            llmethod = HTTP_PUT, method = SQ_METHOD_PUT, p += 4;
        else if (memcmp(p, "PATCH ", 6) == 0)
            llmethod = HTTP_PATCH, method = SQ_METHOD_PATCH, p += 6;
        else
            return -1;
        break;
    case 'D':
        if (memcmp(p, "DELETE ", 7) != 0)
            return -1;
        llmethod = HTTP_DELETE, method = SQ_METHOD_DELETE, p += 7;
        break;
    case 'O':
        if (memcmp(p, "OPTIONS ", 8) != 0)
            return -1;
        llmethod = HTTP_OPTIONS, method = SQ_METHOD_OPTIONS, p += 8;
        break;
    default:
        return -1;
    }
    const char *target = p;
    if (*p != '/')
        return -1; /* origin-form only (§3.2.1) */
    /* where its query starts and whether its path has escapes, seen on the way */
    const char *query = NULL;
    bool pct = false;
    for (;;) {
        while (fast_class[(uint8_t)*p] & T)
            p++;
        if (*p == '?' && query == NULL)
            query = p;
        else if (*p == '%')
            pct |= query == NULL;
        else if (*p != '?')
            break;
        p++;
    }
    size_t target_len = (size_t)(p - target);
    if (end - p < 11 || memcmp(p, " HTTP/1.", 8) != 0 || (p[8] != '1' && p[8] != '0') ||
        p[9] != '\r' || p[10] != '\n')
        return -1;
    uint8_t minor = (uint8_t)(p[8] - '0');
    p += 11;

    /* RFC 9112 §5: field-name ":" OWS field-value OWS CRLF, then CRLF */
    /* the index is written as the lines are read, its offsets from the target's start:
     * the head is then copied whole, and NULs put where each part ends */
    if (x->hb.len != 0 || x->hidx.len != 0 ||
        sq__buf_reserve(&x->hidx, FAST_FIELDS * sizeof(sq__hdr_t)) != 0)
        return -1;
    sq__hdr_t *h = (sq__hdr_t *)x->hidx.base;
    unsigned nf = 0, hosts = 0, conns = 0, lengths = 0;
    bool close = false, keep_alive = false;
    uint64_t body_len = 0;
    size_t header_bytes = target_len;
    for (;;) {
        if (p == end)
            return -1;      /* the head goes on past the bytes at hand */
        if (p[0] == '\r') { /* not the last LF: p[1] is there */
            if (p[1] != '\n')
                return -1;
            p += 2;
            break;
        }
        const char *name = p;
        while (fast_class[(uint8_t)*p] & N)
            p++;
        if (*p != ':' || p == name || nf == FAST_FIELDS)
            return -1;
        size_t name_len = (size_t)(p - name);
        p++;
        while (*p == ' ')
            p++;
        const char *val = p;
        p = value_end(p, end);
        if (p[0] != '\r' || p[1] != '\n')
            return -1;
        size_t val_len = (size_t)(p - val);
        p += 2;
        int kind = field_kind(name, name_len);
        if (kind == 1)
            return -1;
        hosts += kind == 2;
        if (kind == 3) {
            /* RFC 9112 §9.3: one "close" or "keep-alive" token, as the whole value (a
             * list, "upgrade", another Connection line: llhttp's) */
            if (conns++ != 0)
                return -1;
            if (sq__h1_name_is(val, val_len, "close", 5))
                close = true;
            else if (sq__h1_name_is(val, val_len, "keep-alive", 10))
                keep_alive = true;
            else
                return -1;
        }
        /* counted as h1_parse.c counts: the name, ": " and CRLF, the value as llhttp
         * reports it (trailing spaces in) */
        header_bytes += name_len + 4 + val_len;
        size_t raw_len = val_len;
        while (val_len > 0 && val[val_len - 1] == ' ')
            val_len--; /* RFC 9110 §5.5: trailing whitespace is not part of the value */
        if (kind == 4) {
            /* RFC 9112 §6.2: 1*DIGIT; here at most 15 of them, nothing after, once */
            if (lengths++ != 0 || val_len == 0 || val_len > 15 || raw_len != val_len)
                return -1;
            for (size_t i = 0; i < val_len; i++) {
                if (val[i] < '0' || val[i] > '9')
                    return -1;
                body_len = body_len * 10 + (uint64_t)(val[i] - '0');
            }
        }
        h[nf++] = (sq__hdr_t){.name_off = (uint32_t)(name - target),
                              .name_len = (uint32_t)name_len,
                              .val_off = (uint32_t)(val - target),
                              .val_len = (uint32_t)val_len};
    }
    /* RFC 9112 §3.2: exactly one Host in HTTP/1.1, at most one in 1.0. Limits, a missing
     * or second Host: llhttp's path answers them (414, 431, 400). */
    const sq_server_opts_t *o = &x->srv->opts;
    if (hosts > 1 || hosts < minor || body_len > o->max_body_bytes ||
        body_len > (uint64_t)(data_end - p) || target_len > o->max_uri_bytes ||
        header_bytes > o->max_header_bytes || nf > o->max_headers)
        return -1;
    size_t head_len = (size_t)(p - target); /* the target to the blank line's end */
    if (head_len > UINT32_MAX)
        return -1; /* the index's offsets are 32-bit */
    if (sq__buf_reserve(&x->hb, head_len) != 0)
        return -1; /* llhttp's path answers 500 */

    /* target\0 ... name\0 ... value\0 ...: what the index points at reads as h1_parse.c
     * lays it out (the bytes between, " HTTP/1.1\r\n", ": ", CRLF, are never read) */
    char *hb = x->hb.base;
    memcpy(hb, target, head_len);
    hb[target_len] = '\0';
    for (unsigned i = 0; i < nf; i++) {
        hb[h[i].name_off + h[i].name_len] = '\0'; /* the colon */
        hb[h[i].val_off + h[i].val_len] = '\0';   /* the first trailing SP, or the CR */
    }
    x->hb.len = head_len;
    x->hidx.len = nf * sizeof(sq__hdr_t);
    x->target_len = (uint32_t)target_len;
    x->header_bytes = header_bytes;
    x->host_count = (uint8_t)hosts;
    x->llmethod = llmethod;
    x->method = method;
    x->http_minor = minor;
    x->flags |= SQ__XF_HEAD_DONE;
    if (sq__h1_route(x, query ? hb + (query - target) : NULL, pct) != 0) {
        sq__h1_stamp(x);
        x->err_status = 500;
        return -2;
    }
    const sq_handler_t *route = x->match.handler;
    if (body_len > 0 && x->verdict == SQ__MATCH_OK && x->match.cb != NULL && route != NULL &&
        (route->stream_body & SQ_STREAM(x->method))) {
        sq__exch_reset(x); /* a body read as a stream: its handler runs at the head */
        return -1;
    }
    sq__hs(x->srv)->fast_n++;
    sq__h1_stamp(x);
    /* RFC 9112 §6.3: the body is Content-Length bytes, or none without one (no
     * Transfer-Encoding here). */
    if (body_len > 0 && sq__buf_append(&x->body, p, (size_t)body_len) != 0) {
        x->err_status = 500;
        return -2;
    }
    *pos = p + body_len;
    /* §9.3: an HTTP/1.1 connection persists unless "close"; 1.0's only with "keep-alive"
     * (as llhttp_should_keep_alive decides). */
    return sq__h1_complete(c, x, minor == 1 ? !close : keep_alive, false);
}
