/* The WebSocket opening handshake (RFC 6455 §4.2.1) through the request path: a
 * connection of the memory transport (as the request harness) gets a request line the
 * input's first byte picks, the input's header lines, and the end of the head. Routes:
 * /ws (no subprotocols) and /chat/{room} (subprotocols "chat" and "superchat"), and two
 * with permessage-deflate (RFC 7692): /z with the default settings and /zz with every
 * setting away from its default (no context takeover either way, windows of 9 and 10
 * bits), each with an accept hook that records the request it saw and refuses with 403
 * when asked to (an `X-Refuse` header). Bit 0x10 of the first byte moves the request
 * line to the deflate routes.
 *
 * Checks, for the first final response on the connection:
 * - a 101 comes only for a GET over HTTP/1.1 whose request, as the hook saw it, has
 *   Upgrade naming websocket and Connection naming upgrade (comma lists, over any number
 *   of lines, RFC 9110 §5.3), one Sec-WebSocket-Version line, 13, and exactly one
 *   Sec-WebSocket-Key that is base64 of 16 bytes; the 101 carries exactly one
 *   Sec-WebSocket-Accept, equal to base64(SHA-1(key + GUID)) computed here with OpenSSL;
 *   a Sec-WebSocket-Protocol in it is one the route has and the client offered;
 * - a 101 carries no Sec-WebSocket-Extensions unless the route has deflate and the client
 *   offered permessage-deflate, then at most one line: a single permessage-deflate
 *   element whose parameters are known, each once, windows of 8-15 bits in decimal, and
 *   fit one of the client's offers (RFC 7692 §7.1: client_max_window_bits only when that
 *   offer has it, and no more than its value; server_max_window_bits no more than the
 *   offer's); an offer that is just "permessage-deflate" is accepted;
 * - anything else is a 4xx, or 501 for a Transfer-Encoding other than chunked (RFC 9112
 *   §6.1), (or no answer at all when the connection ends first: a head
 *   that never ends, a body that never comes).
 * After a 101, a masked close frame must end the connection. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>
#include <squall.h>

#include "server/server_int.h"

#include "pmd.h"

static uv_loop_t loop;
static sq_server_t *srv;
static bool verbose; /* FUZZ_VERBOSE set: each response's head to stderr */

/* ---- what the accept hook saw ---- */

typedef struct seen {
    bool hooked;
    bool get, http11;
    char key[128];
    size_t key_lines, version_lines;
    bool upgrade, connection, version13;
    char offers[1024]; /* the client's Sec-WebSocket-Protocol lines, joined by commas */
    char ext[20000];   /* its Sec-WebSocket-Extensions lines, joined by commas */
    bool ext_cut;      /* ...did not fit */
} seen_t;

static seen_t seen;

/* True when the comma-separated `value` holds `token` (case-insensitive), the list
 * rule of RFC 9110 §5.6.1: elements separated by commas and optional whitespace. */
static bool list_has(const char *value, const char *token)
{
    size_t tl = strlen(token);
    const char *p = value;
    for (;;) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        if (*p == '\0')
            return false;
        const char *e = p;
        while (*e != '\0' && *e != ',')
            e++;
        const char *t = e;
        while (t > p && (t[-1] == ' ' || t[-1] == '\t'))
            t--;
        if ((size_t)(t - p) == tl && strncasecmp(p, token, tl) == 0)
            return true;
        p = e;
    }
}

static int ws_accept(sq_req_t *req, const char **subprotocol, void *data)
{
    memset(&seen, 0, sizeof(seen));
    seen.hooked = true;
    seen.get = strcmp(sq_req_method(req), "GET") == 0;
    seen.http11 = sq_req_version_minor(req) == 1;
    size_t n = sq_req_header_count(req);
    for (size_t i = 0; i < n; i++) {
        const char *name, *value;
        if (sq_req_header_at(req, i, &name, &value) != 0)
            abort();
        if (strcasecmp(name, "Sec-WebSocket-Key") == 0) {
            seen.key_lines++;
            snprintf(seen.key, sizeof(seen.key), "%s", value);
        } else if (strcasecmp(name, "Upgrade") == 0) {
            seen.upgrade |= list_has(value, "websocket");
        } else if (strcasecmp(name, "Connection") == 0) {
            seen.connection |= list_has(value, "upgrade");
        } else if (strcasecmp(name, "Sec-WebSocket-Version") == 0) {
            /* RFC 6455 §11.3.5: once in a request */
            seen.version13 = seen.version_lines++ == 0 && strcmp(value, "13") == 0;
        } else if (strcasecmp(name, "Sec-WebSocket-Protocol") == 0) {
            size_t l = strlen(seen.offers);
            snprintf(seen.offers + l, sizeof(seen.offers) - l, ",%s", value);
        } else if (strcasecmp(name, "Sec-WebSocket-Extensions") == 0) {
            size_t l = strlen(seen.ext);
            int w = snprintf(seen.ext + l, sizeof(seen.ext) - l, "%s%s", l ? "," : "", value);
            seen.ext_cut |= w < 0 || (size_t)w >= sizeof(seen.ext) - l;
        }
    }
    if (sq_req_header(req, "X-Refuse") != NULL)
        return 403;
    return 0;
}

static void ws_message(sq_ws_t *ws, int binary, const char *msg, size_t len, void *data)
{
    sq_ws_send(ws, binary, msg, len);
}

static const sq_ws_handler_t echo = {.message = ws_message, .accept = ws_accept};
static const char *const protos[] = {"chat", "superchat", NULL};

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    sq_log_set_level(SQ_LOG_OFF);
    verbose = getenv("FUZZ_VERBOSE") != NULL;
    uv_loop_init(&loop);
    sq_app_t *app;
    sq_app_create(&app);
    sq_app_websocket(app, "/ws", &echo, NULL, NULL);
    sq_ws_opts_t o;
    sq_ws_opts_init(&o);
    o.subprotocols = protos;
    sq_app_websocket(app, "/chat/{room}", &echo, &o, NULL);
    sq_ws_opts_init(&o);
    o.deflate = 1;
    sq_app_websocket(app, "/z", &echo, &o, NULL);
    o.deflate_no_context_takeover = 1;
    o.deflate_peer_no_context_takeover = 1;
    o.deflate_window_bits = 9;
    o.deflate_peer_window_bits = 10;
    sq_app_websocket(app, "/zz", &echo, &o, NULL);
    sq_server_opts_t so;
    sq_server_opts_init(&so);
    sq_server_create(&srv, &loop, app, &so);
    return 0;
}

/* ---- checks ---- */

/* RFC 6455 §4.1: base64 of 16 bytes is 22 characters of the alphabet and "==". */
static bool key_is_16_bytes(const char *k)
{
    if (strlen(k) != 24 || strcmp(k + 22, "==") != 0)
        return false;
    for (int i = 0; i < 22; i++) {
        char c = k[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '+' || c == '/'))
            return false;
    }
    return true;
}

/* RFC 6455 §4.2.2: base64(SHA-1(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11")). */
static void expected_accept(const char *key, char out[29])
{
    char in[128 + 36];
    int n = snprintf(in, sizeof(in), "%s258EAFA5-E914-47DA-95CA-C5AB0DC85B11", key);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (EVP_Digest(in, (size_t)n, md, &mdlen, EVP_sha1(), NULL) != 1 || mdlen != 20)
        abort();
    EVP_EncodeBlock((unsigned char *)out, md, 20);
}

/* The value of header `name` in a response head ("HTTP/1.1 ...\r\n...\r\n\r\n"), copied
 * to out; returns how many lines have that name. */
static int response_header(const char *head, size_t len, const char *name, char *out, size_t outsz)
{
    int lines = 0;
    size_t nl = strlen(name);
    const char *p = memchr(head, '\n', len), *end = head + len;
    while (p != NULL && p + 1 < end) {
        const char *line = p + 1;
        const char *eol = memchr(line, '\n', (size_t)(end - line));
        if (eol == NULL)
            break;
        if ((size_t)(eol - line) > nl && strncasecmp(line, name, nl) == 0 && line[nl] == ':') {
            const char *v = line + nl + 1;
            while (v < eol && *v == ' ')
                v++;
            size_t vl = (size_t)(eol - v);
            if (vl > 0 && v[vl - 1] == '\r')
                vl--;
            if (vl >= outsz)
                vl = outsz - 1;
            memcpy(out, v, vl);
            out[vl] = '\0';
            lines++;
        }
        p = eol;
    }
    return lines;
}

/* What the server wrote past its interim responses (100 Continue): the final response,
 * if one came; *len 0 if none. */
static const char *final_response(const sq__buf_t *out, size_t *len)
{
    const char *b = out->base;
    *len = out->len;
    while (*len >= 12 && memcmp(b, "HTTP/1.1 1", 10) == 0 && memcmp(b, "HTTP/1.1 101", 12) != 0) {
        const char *e = memmem(b, *len, "\r\n\r\n", 4);
        if (e == NULL)
            abort(); /* an interim response written in part */
        *len -= (size_t)(e + 4 - b);
        b = e + 4;
    }
    return b;
}

/* ---- permessage-deflate (RFC 7692 §7.1) ---- */

/* The next element of an extension list (RFC 6455 §9.1) at *p, commas outside quotes
 * ending it: [*b, *e), trimmed; false at the end. */
static bool next_element(const char **p, const char **b, const char **e)
{
    const char *s = *p;
    while (*s == ' ' || *s == '\t' || *s == ',')
        s++;
    if (*s == '\0')
        return false;
    const char *t = s;
    bool q = false;
    for (; *t != '\0' && (q || *t != ','); t++) {
        if (*t == '"')
            q = !q;
        else if (q && *t == '\\' && t[1] != '\0')
            t++;
    }
    *b = s;
    *e = t;
    while (*e > *b && ((*e)[-1] == ' ' || (*e)[-1] == '\t'))
        (*e)--;
    *p = t;
    return true;
}

/* RFC 7692 §7.1: the 101's extension lines for a route with (or without) deflate. */
static void check_extensions(const char *head, size_t hl, bool deflate_route)
{
    char ans[512];
    int n = response_header(head, hl, "Sec-WebSocket-Extensions", ans, sizeof(ans));
    if (seen.ext_cut)
        return;
    /* what the client offered: any permessage-deflate */
    bool offered = false;
    const char *p = seen.ext, *b, *e;
    pmd_t o;
    while (next_element(&p, &b, &e))
        offered |= pmd_read(b, e, &o);
    if (n == 0) {
        /* "permessage-deflate" alone, the only element, must be accepted */
        p = seen.ext;
        if (deflate_route && next_element(&p, &b, &e) && e - b == 18 && *e == '\0' &&
            strncasecmp(b, "permessage-deflate", 18) == 0)
            abort();
        return;
    }
    if (n > 1 || !deflate_route || !offered)
        abort(); /* two answers, or an extension nobody offered */
    pmd_t a;
    p = ans;
    if (!next_element(&p, &b, &e) || !pmd_read(b, e, &a) || !a.ok || a.smwb < 0 ||
        a.cmwb < 0 || next_element(&p, &b, &e))
        abort(); /* not one well-formed permessage-deflate answer */
    p = seen.ext;
    while (next_element(&p, &b, &e)) {
        if (!pmd_read(b, e, &o) || !o.ok || o.smwb < -1 || o.cmwb < -1)
            continue;
        if (a.cmwb > 0 && (o.cmwb == 0 || (o.cmwb > 0 && a.cmwb > o.cmwb)))
            continue; /* §7.1.2.2 */
        if (a.smwb > 0 && o.smwb > 0 && a.smwb > o.smwb)
            continue; /* §7.1.2.1 */
        if (o.smwb > 0 && a.smwb <= 0)
            continue; /* §7.1.2.1: an offer with server_max_window_bits is accepted with it */
        if (o.sntc && !a.sntc)
            continue; /* §7.1.1.1: and one with server_no_context_takeover, with that */
        return; /* an offer this answers */
    }
    fprintf(stderr, "answer \"%s\" fits no offer of \"%s\"\n", ans, seen.ext);
    abort();
}

static void check_response(const sq__buf_t *out, bool closed, bool deflate_route)
{
    size_t len;
    const char *b = final_response(out, &len);
    if (verbose)
        fprintf(stderr, "%.*s\n--\n", (int)(out->len < 400 ? out->len : 400),
                out->base ? out->base : "");
    if (len == 0) {
        if (!closed)
            abort(); /* no answer to a whole request on an open connection */
        return;
    }
    if (len < 12 || memcmp(b, "HTTP/1.", 7) != 0)
        abort();
    const char *e = memmem(b, len, "\r\n\r\n", 4);
    if (e == NULL)
        abort(); /* a response head written in part */
    size_t hl = (size_t)(e + 4 - b);
    int status = atoi(b + 9);
    if (status != 101) {
        /* a failed handshake is the client's error; 501: a Transfer-Encoding squall does
         * not implement (RFC 9112 §6.1) */
        if ((status < 400 || status > 499) && status != 501)
            abort();
        return;
    }
    /* a 101: only for a valid handshake, with the right Accept */
    if (!seen.hooked || !seen.get || !seen.http11 || !seen.upgrade || !seen.connection ||
        !seen.version13 || seen.key_lines != 1 || !key_is_16_bytes(seen.key))
        abort();
    char want[29], got[64];
    expected_accept(seen.key, want);
    if (response_header(b, hl, "Sec-WebSocket-Accept", got, sizeof(got)) != 1 ||
        strcmp(got, want) != 0)
        abort();
    check_extensions(b, hl, deflate_route);
    int np = response_header(b, hl, "Sec-WebSocket-Protocol", got, sizeof(got));
    if (np > 1 || (np == 1 && ((strcmp(got, "chat") != 0 && strcmp(got, "superchat") != 0) ||
                               !list_has(seen.offers, got))))
        abort();
}

static void run(int turns)
{
    for (int i = 0; i < turns; i++)
        uv_run(&loop, UV_RUN_NOWAIT);
}

static const char *const request_lines[8] = {
    "GET /ws HTTP/1.1\r\n",  "GET /chat/a?x=1 HTTP/1.1\r\n",
    "GET /ws HTTP/1.0\r\n",  "HEAD /ws HTTP/1.1\r\n",
    "POST /ws HTTP/1.1\r\n", "GET /chat/%20 HTTP/1.1\r\n",
    "GET /ws/ HTTP/1.1\r\n", "", /* the input writes its own request line */
};
/* the same with bit 0x10: the deflate routes */
static const char *const request_lines_z[8] = {
    "GET /z HTTP/1.1\r\n",  "GET /zz?x=1 HTTP/1.1\r\n",
    "GET /z HTTP/1.0\r\n",  "HEAD /zz HTTP/1.1\r\n",
    "POST /z HTTP/1.1\r\n", "GET /zz HTTP/1.1\r\n",
    "GET /z/ HTTP/1.1\r\n", "",
};

/* True when the input holds bytes after the first blank line (the end of the head). */
static bool bytes_behind_head(const uint8_t *data, size_t size)
{
    for (size_t i = 0; i + 1 < size; i++) {
        if (data[i] != '\n')
            continue;
        size_t j = i + 1;
        if (data[j] == '\r')
            j++;
        if (j < size && data[j] == '\n')
            return j + 1 < size;
    }
    return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 16384)
        return 0;
    const char *rl = (data[0] & 0x10 ? request_lines_z : request_lines)[data[0] & 7];
    bool split = data[0] & 8; /* fed one line at a time, else whole */
    data++;
    size--;
    memset(&seen, 0, sizeof(seen));
    sq__memsink_t sink;
    memset(&sink, 0, sizeof(sink));
    if (sq__mem_accept(srv, &sink) != 0)
        return 0;
    sq__mem_feed(&sink, rl, strlen(rl));
    if (split) {
        size_t off = 0;
        while (off < size && !sink.closed) {
            const uint8_t *nl = memchr(data + off, '\n', size - off);
            size_t n = nl != NULL ? (size_t)(nl - (data + off)) + 1 : size - off;
            sq__mem_feed(&sink, data + off, n);
            uv_run(&loop, UV_RUN_NOWAIT);
            off += n;
        }
    } else if (size > 0) {
        sq__mem_feed(&sink, data, size);
    }
    if (!sink.closed)
        sq__mem_feed(&sink, "\r\n\r\n", 4);
    run(8);
    bool upgraded = sink.out.len >= 12 && memcmp(sink.out.base, "HTTP/1.1 101", 12) == 0;
    size_t final_len;
    final_response(&sink.out, &final_len);
    if (!sink.closed && final_len == 0) {
        /* no answer yet: a body announced and never sent; the client's half-close ends it */
        sq__mem_feed(&sink, NULL, 0);
        run(16);
    }
    /* the input's own line may name a deflate route too */
    bool deflate_route = rl[0] != '\0' ? data[-1] & 0x10
                                        : size >= 6 && (memcmp(data, "GET /z", 6) == 0);
    check_response(&sink.out, sink.closed, deflate_route);
    if (upgraded && !sink.closed) {
        static const uint8_t close_frame[] = {0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe8};
        sq__mem_feed(&sink, close_frame, sizeof(close_frame));
        run(16);
        /* the close handshake ends the connection, unless bytes the input put behind the
         * head began a frame that our close frame only continues (the reader then waits
         * for the rest of it, rightly; the half-close below ends it) */
        if (!sink.closed && !bytes_behind_head(data, size))
            abort();
    }
    if (!sink.closed)
        sq__mem_feed(&sink, NULL, 0);
    run(32);
    if (!sink.closed && sink.conn != NULL)
        sq__conn_on_read(sink.conn, NULL, UV_ECONNRESET);
    for (int i = 0; i < 64 && !sink.closed; i++)
        uv_run(&loop, UV_RUN_NOWAIT);
    if (!sink.closed)
        abort();
    sq__buf_free(&sink.out);
    return 0;
}
