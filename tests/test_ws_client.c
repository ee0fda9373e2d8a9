/* The WebSocket client (lib/ws/ws_client.c): what it puts in its handshake request and
 * what it accepts in the server's answer (RFC 6455 §4.1).
 *
 * The server here is a raw TCP socket on its own thread: it records the request the
 * client sent, byte for byte, and answers with a hand-written handshake (its "%s" is
 * replaced by the right Sec-WebSocket-Accept, computed with OpenSSL, not with squall's
 * code). The client runs on a loop in the test's thread; everything is asserted there,
 * after the server thread has been joined.
 */
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <squall.h>

#include "support/harness.h"

static void ignore_sigpipe(void)
{
    signal(SIGPIPE, SIG_IGN);
}

TestSuite(ws_client, .init = ignore_sigpipe, .timeout = 20);

/* ---- a raw server: one connection, one scripted answer ---- */

typedef struct raw_srv {
    int lfd, port;
    uv_thread_t thread;
    const char *response; /* its "%s" is replaced by the right Sec-WebSocket-Accept */
    char *req;            /* the client's request head, NUL-terminated (malloc'd) */
    size_t req_len;
    bool accepted; /* a client connected */
} raw_srv_t;

static void raw_main(void *arg)
{
    raw_srv_t *s = arg;
    struct pollfd pfd = {.fd = s->lfd, .events = POLLIN};
    if (poll(&pfd, 1, 5000) != 1)
        return; /* nobody came: the test says whether someone should have */
    int fd = accept(s->lfd, NULL, NULL);
    if (fd < 0)
        return;
    s->accepted = true;
    struct timeval tv = {.tv_sec = 5};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    size_t cap = 1 << 20;
    s->req = malloc(cap + 1);
    if (s->req == NULL)
        goto out;
    while (s->req_len < cap && memmem(s->req, s->req_len, "\r\n\r\n", 4) == NULL) {
        ssize_t n = recv(fd, s->req + s->req_len, cap - s->req_len, 0);
        if (n <= 0)
            break;
        s->req_len += (size_t)n;
    }
    s->req[s->req_len] = '\0';
    char key[64] = "", accept_value[64] = "";
    const char *k = strcasestr(s->req, "\r\nSec-WebSocket-Key: ");
    if (k != NULL)
        sscanf(k + 21, "%60[^\r]", key);
    char cat[128];
    int cl = snprintf(cat, sizeof(cat), "%s258EAFA5-E914-47DA-95CA-C5AB0DC85B11", key);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    EVP_Digest(cat, (size_t)cl, md, &mdlen, EVP_sha1(), NULL);
    EVP_EncodeBlock((unsigned char *)accept_value, md, (int)mdlen);
    size_t rcap = strlen(s->response) + 2 * sizeof(accept_value);
    char *res = malloc(rcap);
    if (res == NULL)
        goto out;
    /* every "%s" gets the accept value (a case may repeat the header) */
    size_t rl = 0;
    for (const char *p = s->response; *p;) {
        if (p[0] == '%' && p[1] == 's') {
            rl += (size_t)snprintf(res + rl, rcap - rl, "%s", accept_value);
            p += 2;
        } else {
            res[rl++] = *p++;
        }
    }
    send(fd, res, rl, MSG_NOSIGNAL);
    free(res);
    /* an opened client closes at once: wait for its close frame (or its EOF), then go */
    char sink[512];
    (void)!recv(fd, sink, sizeof(sink), 0);
out:
    close(fd);
}

static void raw_start(raw_srv_t *s, const char *response)
{
    memset(s, 0, sizeof(*s));
    s->response = response;
    s->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert_geq(s->lfd, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert_eq(bind(s->lfd, (struct sockaddr *)&a, sizeof(a)), 0);
    cr_assert_eq(listen(s->lfd, 8), 0);
    socklen_t sl = sizeof(a);
    cr_assert_eq(getsockname(s->lfd, (struct sockaddr *)&a, &sl), 0);
    s->port = ntohs(a.sin_port);
    cr_assert_eq(uv_thread_create(&s->thread, raw_main, s), 0);
}

static void raw_join(raw_srv_t *s)
{
    uv_thread_join(&s->thread);
    close(s->lfd);
}

static void raw_free(raw_srv_t *s)
{
    free(s->req);
    s->req = NULL;
}

/* ---- the client: opens, then closes at once ---- */

typedef struct cli {
    uv_loop_t loop;
    int opens, closes, close_code, error;
    char close_reason[128];
    char subprotocol[256];
} cli_t;

static void cli_open(sq_ws_t *ws, sq_req_t *req, void *data)
{
    cli_t *c = data;
    c->opens++;
    const char *p = sq_ws_subprotocol(ws);
    snprintf(c->subprotocol, sizeof(c->subprotocol), "%s", p ? p : "");
    sq_ws_close(ws, SQ_WS_NORMAL, NULL);
}

static void cli_close(sq_ws_t *ws, int code, const char *reason, void *data)
{
    cli_t *c = data;
    c->closes++;
    c->close_code = code;
    c->error = sq_ws_error(ws);
    snprintf(c->close_reason, sizeof(c->close_reason), "%s", reason ? reason : "");
}

static const sq_ws_handler_t cli_handler = {.open = cli_open, .close = cli_close};

/* Connects to the raw server with `offer`, runs the loop dry, joins the server. */
static void cli_run(cli_t *c, raw_srv_t *s, const char *path, const char *const *offer)
{
    memset(c, 0, sizeof(*c));
    cr_assert_eq(uv_loop_init(&c->loop), 0);
    char url[256];
    snprintf(url, sizeof(url), "ws://127.0.0.1:%d%s", s->port, path);
    /* the offers' array is the caller's only during sq_ws_connect (the strings are
     * borrowed until .close): hand it a copy that is gone when the request is built */
    const char **copy = NULL;
    if (offer != NULL) {
        size_t n = 0;
        while (offer[n] != NULL)
            n++;
        copy = calloc(n + 1, sizeof(*copy));
        cr_assert_not_null(copy);
        memcpy(copy, offer, n * sizeof(*copy));
    }
    sq_ws_opts_t o;
    sq_ws_opts_init(&o);
    o.subprotocols = copy;
    o.handshake_timeout_ms = 5000;
    o.close_timeout_ms = 2000;
    int rc = sq_ws_connect(&c->loop, url, &cli_handler, c, &o, NULL);
    free(copy);
    cr_assert_eq(rc, 0, "%s: %s", url, sq_err_name(rc));
    uv_run(&c->loop, UV_RUN_DEFAULT);
    cr_assert_eq(uv_loop_close(&c->loop), 0);
    raw_join(s);
    cr_assert_eq(c->closes, 1);
}

#define GOOD_101                                                                                   \
    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"            \
    "Sec-WebSocket-Accept: %s\r\n"

/* ======================================================================================
 * The request: built whole whatever its length, from checked strings only
 * ==================================================================================== */

/* A list of offers far longer than any fixed buffer: 400 tokens of 24 characters. The
 * request carries them all, in order, in one header; the server picks the last. */
Test(ws_client, subprotocol_offer_of_any_length_is_sent_whole)
{
    enum { N = 400 };
    static char names[N][32];
    static const char *offer[N + 1];
    size_t total = 0;
    for (int i = 0; i < N; i++) {
        snprintf(names[i], sizeof(names[i]), "v%03d.chat.example-token", i);
        offer[i] = names[i];
        total += strlen(names[i]) + 2;
    }
    offer[N] = NULL;
    char *expect = malloc(total + 64);
    cr_assert_not_null(expect);
    size_t el = (size_t)sprintf(expect, "\r\nSec-WebSocket-Protocol: ");
    for (int i = 0; i < N; i++)
        el += (size_t)sprintf(expect + el, "%s%s", i ? ", " : "", names[i]);
    strcpy(expect + el, "\r\n");
    static char response[256];
    snprintf(response, sizeof(response), "%sSec-WebSocket-Protocol: %s\r\n\r\n", GOOD_101,
             names[N - 1]);

    raw_srv_t s;
    raw_start(&s, response);
    cli_t c;
    cli_run(&c, &s, "/long", offer);
    cr_assert_eq(c.opens, 1, "closed: %d %s", c.close_code, c.close_reason);
    cr_assert_str_eq(c.subprotocol, names[N - 1]);
    cr_assert(strstr(s.req, expect) != NULL, "the request was %zu bytes:\n%.400s...", s.req_len,
              s.req);
    cr_assert(strncmp(s.req, "GET /long HTTP/1.1\r\n", 20) == 0, "%.80s", s.req);
    free(expect);
    raw_free(&s);
}

/* RFC 6455 §4.1: each offer is a token (RFC 9110 §5.6.2), and no two are the same.
 * Refused before anything starts: no callback, no handle, `out` untouched. */
Test(ws_client, offered_subprotocols_that_are_not_tokens_are_refused_with_einval)
{
    static const char *const bad[][3] = {
        {"", NULL},
        {"chat", "", NULL},
        {"two words", NULL},
        {"a,b", NULL},
        {"chat\r\nX-Injected: 1", NULL},
        {"chat\n", NULL},
        {"tab\there", NULL},
        {"semi;colon", NULL},
        {"sl/ash", NULL},
        {"q\"uote", NULL},
        {"(paren)", NULL},
        {"at@sign", NULL},
        {"equals=", NULL},
        {"brace{", NULL},
        {"colon:", NULL},
        {"caf\xc3\xa9", NULL},
        {"del\x7f", NULL},
        {"chat", "chat", NULL}, /* §4.1: unique */
    };
    uv_loop_t loop;
    cr_assert_eq(uv_loop_init(&loop), 0);
    cli_t c;
    memset(&c, 0, sizeof(c));
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        sq_ws_opts_t o;
        sq_ws_opts_init(&o);
        o.subprotocols = bad[i];
        sq_ws_t *ws = (sq_ws_t *)&c;
        int rc = sq_ws_connect(&loop, "ws://127.0.0.1:9/x", &cli_handler, &c, &o, &ws);
        cr_assert_eq(rc, UV_EINVAL, "case %zu (\"%s\"): %s", i, bad[i][0], sq_err_name(rc));
        cr_assert_eq(ws, (sq_ws_t *)&c, "case %zu: out untouched", i);
    }
    /* every token character is allowed */
    static const char *const good[] = {"!#$%&'*+-.^_`|~09AZaz", "chat", "CHAT", NULL};
    sq_ws_opts_t o;
    sq_ws_opts_init(&o);
    o.subprotocols = good;
    sq_ws_t *ws = NULL;
    cr_assert_eq(sq_ws_connect(&loop, "ws://127.0.0.1:9/x", &cli_handler, &c, &o, &ws), 0);
    cr_assert_eq(sq_ws_close(ws, SQ_WS_NORMAL, NULL), 0); /* cancels */
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(c.opens, 0);
    cr_assert_eq(c.closes, 1, "only the good offer got as far as a callback");
    cr_assert_eq(c.error, UV_ECANCELED);
    cr_assert_eq(uv_loop_close(&loop), 0);
}

/* The URL's host and path go into the request line and the Host header: only what RFC
 * 3986 allows there (no control, space, non-ASCII byte, "<>\"{}|\\^`", broken
 * percent-encoding, user info) gets that far. */
Test(ws_client, url_bytes_that_cannot_go_in_the_request_are_refused_with_einval)
{
    static const char *const bad[] = {
        "ws://127.0.0.1/a b",
        "ws://127.0.0.1/a\r\nX-Injected: 1",
        "ws://127.0.0.1/\x01",
        "ws://127.0.0.1/caf\xc3\xa9",
        "ws://127.0.0.1/<script>",
        "ws://127.0.0.1/a\"b",
        "ws://127.0.0.1/a{b}",
        "ws://127.0.0.1/a|b",
        "ws://127.0.0.1/a\\b",
        "ws://127.0.0.1/a^b",
        "ws://127.0.0.1/a`b",
        "ws://127.0.0.1/%zz",
        "ws://127.0.0.1/%4",
        "ws://127.0.0.1/?q=%",
        "ws://user@127.0.0.1/",
        "ws://user:pw@127.0.0.1/",
        "ws://exa mple.com/",
        "ws://ex\xc3\xa4mple.com/",
        "ws://host\r\nX: y/",
        "ws://127.0.0.1:+80/",
        "ws://127.0.0.1:-1/",
        "ws://127.0.0.1: 80/",
        "ws://[::1]x/",
        "ws://[zz::1]/",
        "ws://[]/",
        "ws://[::1%0d%0aX]/",
    };
    uv_loop_t loop;
    cr_assert_eq(uv_loop_init(&loop), 0);
    cli_t c;
    memset(&c, 0, sizeof(c));
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        sq_ws_t *ws = (sq_ws_t *)&c;
        int rc = sq_ws_connect(&loop, bad[i], &cli_handler, &c, NULL, &ws);
        cr_assert_eq(rc, UV_EINVAL, "\"%s\": %s", bad[i], sq_err_name(rc));
        cr_assert_eq(ws, (sq_ws_t *)&c, "\"%s\": out untouched", bad[i]);
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(c.opens + c.closes, 0);
    cr_assert_eq(uv_loop_close(&loop), 0);
}

/* What RFC 3986 allows in a path and query goes out exactly as given. */
Test(ws_client, path_and_query_are_sent_verbatim_in_the_request_line)
{
    static const struct {
        const char *path, *line;
    } cases[] = {
        {"/a%20b/~u;p=1,2:@!$&'()*+=-._", "GET /a%20b/~u;p=1,2:@!$&'()*+=-._ HTTP/1.1\r\n"},
        {"/x?q=a/b?c&d=%C3%A9", "GET /x?q=a/b?c&d=%C3%A9 HTTP/1.1\r\n"},
        {"?only=query", "GET /?only=query HTTP/1.1\r\n"},
        {"", "GET / HTTP/1.1\r\n"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        raw_srv_t s;
        raw_start(&s, GOOD_101 "\r\n");
        cli_t c;
        cli_run(&c, &s, cases[i].path, NULL);
        cr_assert_eq(c.opens, 1, "case %zu: %s", i, c.close_reason);
        cr_assert(strncmp(s.req, cases[i].line, strlen(cases[i].line)) == 0,
                  "case %zu: the request began\n%.120s", i, s.req);
        char host[64];
        snprintf(host, sizeof(host), "\r\nHost: 127.0.0.1:%d\r\n", s.port);
        cr_assert(strstr(s.req, host) != NULL, "case %zu:\n%s", i, s.req);
        raw_free(&s);
    }
}

/* A malformed wss:// URL is UV_EINVAL, as a ws:// one (wss:// itself: tests/test_tls.c). */
Test(ws_client, malformed_wss_url_is_einval)
{
    uv_loop_t loop;
    cr_assert_eq(uv_loop_init(&loop), 0);
    cli_t c;
    memset(&c, 0, sizeof(c));
    static const char *const bad[] = {"wss:/x", "wss://", "wss://host/a b"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int rc = sq_ws_connect(&loop, bad[i], &cli_handler, &c, NULL, NULL);
        cr_assert_eq(rc, UV_EINVAL, "\"%s\": %s", bad[i], sq_err_name(rc));
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(c.opens + c.closes, 0);
    cr_assert_eq(uv_loop_close(&loop), 0);
}

/* ======================================================================================
 * The answer (RFC 6455 §4.1): every check holds whatever the order of the headers
 * ==================================================================================== */

static const char *const offer_chat[] = {"chat", "superchat", NULL};

typedef struct answer_case {
    const char *what;
    const char *const *offer;
    const char *response;
    const char *subprotocol; /* the one agreed when it opens; NULL: it must not open */
} answer_case_t;

static void run_answer_cases(const answer_case_t *cases, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        raw_srv_t s;
        raw_start(&s, cases[i].response);
        cli_t c;
        cli_run(&c, &s, "/x", cases[i].offer);
        raw_free(&s);
        if (cases[i].subprotocol != NULL) {
            cr_assert_eq(c.opens, 1, "%s: refused: %s", cases[i].what, c.close_reason);
            cr_assert_str_eq(c.subprotocol, cases[i].subprotocol, "%s", cases[i].what);
            continue;
        }
        cr_assert_eq(c.opens, 0, "%s: it opened", cases[i].what);
        cr_assert_eq(c.close_code, SQ_WS_ABNORMAL, "%s", cases[i].what);
        cr_assert_str_eq(c.close_reason, "invalid handshake response", "%s", cases[i].what);
        cr_assert_eq(c.error, UV_EPROTO, "%s: %s", cases[i].what, sq_err_name(c.error));
    }
}

Test(ws_client, handshake_answer_checks_do_not_depend_on_header_order)
{
    static const answer_case_t cases[] = {
        {"extension, then an offered subprotocol", offer_chat,
         GOOD_101 "Sec-WebSocket-Extensions: permessage-deflate\r\n"
                  "Sec-WebSocket-Protocol: chat\r\n\r\n",
         NULL},
        {"offered subprotocol, then an extension", offer_chat,
         GOOD_101 "Sec-WebSocket-Protocol: chat\r\n"
                  "Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n",
         NULL},
        {"extension between the other headers", offer_chat,
         "HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Extensions: x-unknown\r\n"
         "Sec-WebSocket-Protocol: superchat\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
         "Sec-WebSocket-Accept: %s\r\n\r\n",
         NULL},
        {"subprotocol never offered, before the accept", offer_chat,
         "HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Protocol: other\r\n"
         "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
         NULL},
        {"subprotocol when none was offered", NULL, GOOD_101 "Sec-WebSocket-Protocol: chat\r\n\r\n",
         NULL},
        {"subprotocol first, then the rest", offer_chat,
         "HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Protocol: superchat\r\n"
         "Sec-WebSocket-Accept: %s\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
         "superchat"},
        {"subprotocol last", offer_chat, GOOD_101 "Sec-WebSocket-Protocol: chat\r\n\r\n", "chat"},
        {"no subprotocol chosen", offer_chat, GOOD_101 "\r\n", ""},
    };
    run_answer_cases(cases, sizeof(cases) / sizeof(cases[0]));
}

/* A header the answer may carry once (RFC 6455 §11.3.3-4) is refused when repeated,
 * even with the same value; the list headers (Connection, Upgrade) may be split over
 * several lines (RFC 9110 §5.3). */
Test(ws_client, repeated_headers_in_the_handshake_answer_are_handled)
{
    static const answer_case_t cases[] = {
        {"subprotocol twice, same value", offer_chat,
         GOOD_101 "Sec-WebSocket-Protocol: chat\r\nSec-WebSocket-Protocol: chat\r\n\r\n", NULL},
        {"subprotocol twice, an offered one last", offer_chat,
         GOOD_101 "Sec-WebSocket-Protocol: other\r\nSec-WebSocket-Protocol: chat\r\n\r\n", NULL},
        {"two subprotocols in one header", offer_chat,
         GOOD_101 "Sec-WebSocket-Protocol: chat, superchat\r\n\r\n", NULL},
        {"an empty subprotocol", offer_chat, GOOD_101 "Sec-WebSocket-Protocol: \r\n\r\n", NULL},
        {"a wrong accept, then the right one", offer_chat,
         "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
         "Sec-WebSocket-Accept: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Accept: %s\r\n\r\n",
         NULL},
        {"the right accept twice", offer_chat, GOOD_101 "Sec-WebSocket-Accept: %s\r\n\r\n", NULL},
        {"an extension header twice", offer_chat,
         GOOD_101 "Sec-WebSocket-Extensions: a\r\nSec-WebSocket-Extensions: b\r\n\r\n", NULL},
        {"Connection split over two lines", offer_chat,
         "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: keep-alive\r\n"
         "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
         ""},
        {"Connection: Upgrade, then another token", offer_chat,
         "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
         "Connection: keep-alive\r\nSec-WebSocket-Accept: %s\r\n\r\n",
         ""},
        {"Upgrade twice", offer_chat,
         GOOD_101 "Upgrade: websocket\r\nSec-WebSocket-Protocol: chat\r\n\r\n", "chat"},
        {"subprotocol with trailing blanks", offer_chat,
         GOOD_101 "Sec-WebSocket-Protocol: chat \t\r\n\r\n", "chat"},
    };
    run_answer_cases(cases, sizeof(cases) / sizeof(cases[0]));
}
