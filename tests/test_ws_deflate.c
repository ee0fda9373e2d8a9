/* permessage-deflate (RFC 7692; lib/ws/deflate.c):
 *  - the negotiation, sans-I/O: a table of clients' offers and the server's answers, and
 *    a table of servers' answers the client takes or refuses;
 *  - frames by hand over a socket (tests/support/ws_raw.c): compressed messages both
 *    ways, the threshold, RSV1 where it must not be (1002), a broken stream (1007), a
 *    decompression bomb against max_message_bytes (1009, and the memory it took);
 *  - the zlib state a connection holds between messages, with and without context
 *    takeover;
 *  - real peers: Python's `websockets` and Node's `ws` clients against a squall route,
 *    squall's client against a Node `ws` server, with and without context takeover.
 */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include <squall.h>

#include "support/app.h"
#include "support/harness.h"
#include "support/ws_raw.h"
#include "ws/ws_int.h"

extern char **environ;

static void ignore_sigpipe(void)
{
    signal(SIGPIPE, SIG_IGN);
}

TestSuite(ws_deflate, .init = ignore_sigpipe, .timeout = 60);

/* ---- the negotiation (RFC 7692 §5, §7.1) ---- */

typedef struct offer_case {
    const char *offers; /* the request's Sec-WebSocket-Extensions, lines joined */
    const char *answer; /* the server's, or NULL: declined */
    int tx_bits, rx_bits, tx_no_ctx, rx_no_ctx;
} offer_case_t;

Test(ws_deflate, offers_are_accepted_or_declined_as_rfc_7692_says)
{
    static const offer_case_t cases[] = {
        {"permessage-deflate", "permessage-deflate", 12, 15, 0, 0},
        {"PerMessage-Deflate", "permessage-deflate", 12, 15, 0, 0},
        {"permessage-deflate; client_max_window_bits",
         "permessage-deflate; client_max_window_bits=12", 12, 12, 0, 0},
        {"permessage-deflate; client_max_window_bits=10",
         "permessage-deflate; client_max_window_bits=10", 12, 10, 0, 0},
        {"permessage-deflate; client_max_window_bits=15",
         "permessage-deflate; client_max_window_bits=12", 12, 12, 0, 0},
        {"permessage-deflate; client_max_window_bits=\"9\"",
         "permessage-deflate; client_max_window_bits=9", 12, 9, 0, 0},
        {"permessage-deflate; server_max_window_bits=10",
         "permessage-deflate; server_max_window_bits=10", 10, 15, 0, 0},
        {"permessage-deflate; server_max_window_bits=14",
         "permessage-deflate; server_max_window_bits=12", 12, 15, 0, 0},
        {"permessage-deflate; server_no_context_takeover; client_no_context_takeover",
         "permessage-deflate; server_no_context_takeover; client_no_context_takeover", 12,
         15, 1, 1},
        {"permessage-deflate ; server_no_context_takeover ;client_max_window_bits = 11",
         "permessage-deflate; server_no_context_takeover; client_max_window_bits=11", 12, 11,
         1, 0},
        /* several offers: the first one that can be honoured */
        {"permessage-deflate; server_max_window_bits=8, permessage-deflate",
         "permessage-deflate", 12, 15, 0, 0},
        {"permessage-deflate; x-unknown=1, permessage-deflate; client_max_window_bits",
         "permessage-deflate; client_max_window_bits=12", 12, 12, 0, 0},
        {"x-webkit-deflate-frame, permessage-deflate; server_no_context_takeover",
         "permessage-deflate; server_no_context_takeover", 12, 15, 1, 0},
        {", ,permessage-deflate,", "permessage-deflate", 12, 15, 0, 0},
        /* declined: unknown or repeated parameters, bad values */
        {"permessage-deflate; x-unknown", NULL, 0, 0, 0, 0},
        {"permessage-deflate; server_no_context_takeover; server_no_context_takeover", NULL,
         0, 0, 0, 0},
        {"permessage-deflate; client_max_window_bits=10; client_max_window_bits=11", NULL, 0,
         0, 0, 0},
        {"permessage-deflate; server_no_context_takeover=1", NULL, 0, 0, 0, 0},
        {"permessage-deflate; server_max_window_bits", NULL, 0, 0, 0, 0},
        {"permessage-deflate; server_max_window_bits=16", NULL, 0, 0, 0, 0},
        {"permessage-deflate; server_max_window_bits=7", NULL, 0, 0, 0, 0},
        {"permessage-deflate; server_max_window_bits=010", NULL, 0, 0, 0, 0},
        {"permessage-deflate; client_max_window_bits=abc", NULL, 0, 0, 0, 0},
        {"permessage-deflate; server_max_window_bits=8", NULL, 0, 0, 0, 0},
        {"permessage-deflate; client_max_window_bits=\"1 0\"", NULL, 0, 0, 0, 0},
        {"x-foo; bar", NULL, 0, 0, 0, 0},
        {"", NULL, 0, 0, 0, 0},
        /* malformed lists: nothing is agreed */
        {"permessage-deflate;", NULL, 0, 0, 0, 0},
        {"permessage-deflate; =1", NULL, 0, 0, 0, 0},
        {"permessage-deflate; client_max_window_bits=\"10", NULL, 0, 0, 0, 0},
        {"permessage-deflate x", NULL, 0, 0, 0, 0},
    };
    sq_ws_opts_t o;
    sq__ws_opts_defaults(&o);
    o.deflate = 1;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const offer_case_t *c = &cases[i];
        sq__ws_pmd_conf_t conf;
        char answer[SQ__WS_PMD_HDR];
        bool ok = sq__ws_pmd_server_answer(&o, c->offers, &conf, answer);
        cr_assert_eq(ok, c->answer != NULL, "'%s': %s", c->offers, ok ? answer : "declined");
        if (!ok)
            continue;
        cr_assert_str_eq(answer, c->answer, "'%s'", c->offers);
        cr_assert_eq(conf.tx_bits, c->tx_bits, "'%s': tx_bits %d", c->offers, conf.tx_bits);
        cr_assert_eq(conf.rx_bits, c->rx_bits, "'%s': rx_bits %d", c->offers, conf.rx_bits);
        cr_assert_eq(conf.tx_no_ctx, c->tx_no_ctx, "'%s'", c->offers);
        cr_assert_eq(conf.rx_no_ctx, c->rx_no_ctx, "'%s'", c->offers);
    }
}

Test(ws_deflate, the_route_options_ask_for_no_context_takeover_and_windows)
{
    sq_ws_opts_t o;
    sq__ws_opts_defaults(&o);
    o.deflate = 1;
    o.deflate_no_context_takeover = 1;
    o.deflate_peer_no_context_takeover = 1;
    o.deflate_window_bits = 15;
    o.deflate_peer_window_bits = 9;
    sq__ws_pmd_conf_t conf;
    char answer[SQ__WS_PMD_HDR];
    cr_assert(sq__ws_pmd_server_answer(&o, "permessage-deflate; client_max_window_bits", &conf,
                                       answer));
    cr_assert_str_eq(answer, "permessage-deflate; server_no_context_takeover; "
                             "client_no_context_takeover; client_max_window_bits=9");
    cr_assert_eq(conf.tx_bits, 15);
    cr_assert_eq(conf.rx_bits, 9);
    cr_assert(conf.tx_no_ctx && conf.rx_no_ctx);
    /* a client that cannot limit its window is not asked to */
    cr_assert(sq__ws_pmd_server_answer(&o, "permessage-deflate", &conf, answer));
    cr_assert_str_eq(answer,
                     "permessage-deflate; server_no_context_takeover; client_no_context_takeover");
    cr_assert_eq(conf.rx_bits, 15);
    /* the longest offer a client makes goes out whole */
    char offer[SQ__WS_PMD_HDR];
    o.deflate_window_bits = 10;
    o.deflate_peer_window_bits = 11;
    sq__ws_pmd_client_offer(&o, offer);
    cr_assert_str_eq(offer, "permessage-deflate; client_no_context_takeover; "
                            "server_no_context_takeover; server_max_window_bits=11; "
                            "client_max_window_bits=10");
    /* and the longest answer */
    cr_assert(sq__ws_pmd_server_answer(
        &o, "permessage-deflate; server_max_window_bits=10; client_max_window_bits=10", &conf,
        answer));
    cr_assert_str_eq(answer, "permessage-deflate; server_no_context_takeover; "
                             "client_no_context_takeover; server_max_window_bits=10; "
                             "client_max_window_bits=10");
}

typedef struct answer_case {
    const char *answer;
    bool ok;
    int tx_bits, rx_bits, tx_no_ctx, rx_no_ctx;
} answer_case_t;

Test(ws_deflate, the_client_takes_only_an_answer_to_its_offer)
{
    sq_ws_opts_t o;
    sq__ws_opts_defaults(&o);
    o.deflate = 1;
    char offer[SQ__WS_PMD_HDR];
    sq__ws_pmd_client_offer(&o, offer);
    cr_assert_str_eq(offer, "permessage-deflate; server_max_window_bits=12; "
                            "client_max_window_bits=12");
    static const answer_case_t cases[] = {
        {"permessage-deflate", true, 12, 15, 0, 0},
        {"permessage-deflate; server_max_window_bits=12", true, 12, 12, 0, 0},
        {"permessage-deflate; server_max_window_bits=9; client_max_window_bits=10", true, 10,
         9, 0, 0},
        {"permessage-deflate; server_no_context_takeover; client_no_context_takeover", true,
         12, 15, 1, 1},
        {"permessage-deflate; server_max_window_bits=13", false, 0, 0, 0, 0},  /* more than offered */
        {"permessage-deflate; client_max_window_bits", false, 0, 0, 0, 0},     /* a value is required */
        {"permessage-deflate; client_max_window_bits=8", false, 0, 0, 0, 0},   /* zlib cannot */
        {"permessage-deflate; x-unknown", false, 0, 0, 0, 0},
        {"permessage-deflate; server_no_context_takeover; server_no_context_takeover", false, 0, 0, 0, 0},
        {"permessage-deflate, permessage-deflate", false, 0, 0, 0, 0},
        {"x-webkit-deflate-frame", false, 0, 0, 0, 0},
        {"permessage-deflate;", false, 0, 0, 0, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const answer_case_t *c = &cases[i];
        sq__ws_pmd_conf_t conf;
        bool ok = sq__ws_pmd_client_check(&o, c->answer, &conf);
        cr_assert_eq(ok, c->ok, "'%s'", c->answer);
        if (!ok)
            continue;
        cr_assert_eq(conf.tx_bits, c->tx_bits, "'%s': tx_bits %d", c->answer, conf.tx_bits);
        cr_assert_eq(conf.rx_bits, c->rx_bits, "'%s': rx_bits %d", c->answer, conf.rx_bits);
        cr_assert_eq(conf.tx_no_ctx, c->tx_no_ctx, "'%s'", c->answer);
        cr_assert_eq(conf.rx_no_ctx, c->rx_no_ctx, "'%s'", c->answer);
    }
}

Test(ws_deflate, options_out_of_range_are_refused)
{
    sq_app_t *app;
    cr_assert_eq(sq_app_create(&app), 0);
    static const sq_ws_handler_t h = {0};
    sq_ws_opts_t o;
    sq_ws_opts_init(&o);
    cr_assert_eq(o.deflate, 0, "off by default");
    o.deflate = 1;
    o.deflate_window_bits = 8; /* zlib cannot compress with 256 bytes */
    cr_assert_eq(sq_app_websocket(app, "/a", &h, &o, NULL), UV_EINVAL);
    o.deflate_window_bits = 15;
    o.deflate_mem_level = 10;
    cr_assert_eq(sq_app_websocket(app, "/a", &h, &o, NULL), UV_EINVAL);
    o.deflate_mem_level = 9;
    o.deflate_peer_window_bits = 16;
    cr_assert_eq(sq_app_websocket(app, "/a", &h, &o, NULL), UV_EINVAL);
    o.deflate_peer_window_bits = 8;
    cr_assert_eq(sq_app_websocket(app, "/a", &h, &o, NULL), 0);
    sq_app_destroy(app);
}

/* ---- a server with deflate routes, and frames by hand ---- */

typedef struct dsrv {
    sq_app_t *app;
    th_server_t *ts;
    _Atomic(sq_ws_t *) last;  /* the last connection opened (used on the loop thread only) */
    atomic_int closes;
    atomic_int close_code;
    size_t held;              /* zlib bytes the connection held, read on the loop thread */
} dsrv_t;

static void d_open(sq_ws_t *ws, sq_req_t *req, void *data)
{
    dsrv_t *s = data;
    atomic_store(&s->last, ws);
}

static void d_echo(sq_ws_t *ws, int binary, const char *msg, size_t len, void *data)
{
    sq_ws_send(ws, binary, msg, len);
}

/* Echoes in three fragments (sq_ws_send_fragment). */
static void d_echo_frags(sq_ws_t *ws, int binary, const char *msg, size_t len, void *data)
{
    size_t a = len / 3, b = 2 * len / 3;
    sq_ws_send_fragment(ws, binary, msg, a, 0);
    sq_ws_send_fragment(ws, binary, msg + a, b - a, 0);
    sq_ws_send_fragment(ws, binary, msg + b, len - b, 1);
}

static void d_close(sq_ws_t *ws, int code, const char *reason, void *data)
{
    dsrv_t *s = data;
    atomic_store(&s->last, NULL);
    atomic_store(&s->close_code, code);
    atomic_fetch_add(&s->closes, 1);
}

static const sq_ws_handler_t echo_h = {.open = d_open, .message = d_echo, .close = d_close};
static const sq_ws_handler_t frags_h = {.open = d_open, .message = d_echo_frags,
                                        .close = d_close};

/* Routes: /echo (deflate, defaults), /plain (deflate off), /nocontext (no context
 * takeover asked both ways), /small (deflate, 1 MiB message limit), /frags. */
static void dsrv_start(dsrv_t *s)
{
    memset(s, 0, sizeof(*s));
    cr_assert_eq(sq_app_create(&s->app), 0);
    sq_ws_opts_t o;
    sq_ws_opts_init(&o);
    cr_assert_eq(sq_app_websocket(s->app, "/plain", &echo_h, &o, s), 0);
    o.deflate = 1;
    cr_assert_eq(sq_app_websocket(s->app, "/echo", &echo_h, &o, s), 0);
    cr_assert_eq(sq_app_websocket(s->app, "/frags", &frags_h, &o, s), 0);
    o.max_message_bytes = 1 << 20;
    cr_assert_eq(sq_app_websocket(s->app, "/small", &echo_h, &o, s), 0);
    o.max_message_bytes = 16 << 20;
    o.deflate_no_context_takeover = 1;
    o.deflate_peer_no_context_takeover = 1;
    cr_assert_eq(sq_app_websocket(s->app, "/nocontext", &echo_h, &o, s), 0);
    s->ts = th_server_start(s->app, NULL);
}

static void dsrv_stop(dsrv_t *s)
{
    th_server_stop(s->ts, 1000);
    sq_app_destroy(s->app);
}

/* Upgrades to `path` offering `ext` (NULL: no offer); returns the answer's
 * Sec-WebSocket-Extensions (malloc'd) or NULL. */
static char *upgrade(th_conn_t *c, int port, const char *path, const char *ext)
{
    char req[512];
    snprintf(req, sizeof(req),
             "GET %s HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             "Sec-WebSocket-Key: " WS_KEY "\r\nSec-WebSocket-Version: 13\r\n%s%s%s\r\n",
             path, ext ? "Sec-WebSocket-Extensions: " : "", ext ? ext : "", ext ? "\r\n" : "");
    cr_assert_eq(th_conn_open(c, port), 0);
    cr_assert_eq(th_conn_sends(c, req), 0);
    th_res_t r;
    cr_assert_eq(th_conn_read_res(c, &r, 5000, false), 0);
    cr_assert_eq(r.status, 101, "%s: status %d", path, r.status);
    const char *e = th_res_header(&r, "Sec-WebSocket-Extensions");
    char *out = e ? strdup(e) : NULL;
    th_res_free(&r);
    return out;
}

/* The peer's side of the compression, with zlib directly: one deflate and one inflate
 * stream, context taken over unless reset. */
typedef struct peer_z {
    z_stream d, i;
} peer_z_t;

static void pz_init(peer_z_t *z, int bits)
{
    memset(z, 0, sizeof(*z));
    cr_assert_eq(deflateInit2(&z->d, 6, Z_DEFLATED, -bits, 8, Z_DEFAULT_STRATEGY), Z_OK);
    cr_assert_eq(inflateInit2(&z->i, -15), Z_OK);
}

static void pz_free(peer_z_t *z)
{
    deflateEnd(&z->d);
    inflateEnd(&z->i);
}

/* Compresses a message (RFC 7692 §7.2.1: sync flush, the 4-byte tail removed), or a
 * piece of one (tail kept) when !fin. Returns a malloc'd buffer and its length. */
static uint8_t *pz_compress(peer_z_t *z, const void *msg, size_t len, bool fin, size_t *out_len)
{
    size_t cap = deflateBound(&z->d, len) + 64;
    uint8_t *out = malloc(cap);
    cr_assert_not_null(out);
    z->d.next_in = (Bytef *)msg;
    z->d.avail_in = (uInt)len;
    z->d.next_out = out;
    z->d.avail_out = (uInt)cap;
    int rc = deflate(&z->d, Z_SYNC_FLUSH);
    cr_assert(rc == Z_OK || rc == Z_BUF_ERROR);
    cr_assert_gt(z->d.avail_out, 0);
    size_t n = cap - z->d.avail_out;
    if (n == 0) { /* flushed already: an empty stored block (RFC 7692 §7.2.3.6) */
        memcpy(out, "\0\0\0\xff\xff", 5);
        n = 5;
    }
    cr_assert_eq(memcmp(out + n - 4, "\0\0\xff\xff", 4), 0);
    *out_len = fin ? n - 4 : n;
    return out;
}

/* Inflates a whole compressed message (the tail added back). Returns a malloc'd buffer. */
static char *pz_inflate(peer_z_t *z, const uint8_t *p, size_t len, size_t *out_len)
{
    uint8_t *in = malloc(len + 4);
    memcpy(in, p, len);
    memcpy(in + len, "\0\0\xff\xff", 4);
    size_t cap = 1 << 22;
    char *out = malloc(cap);
    z->i.next_in = in;
    z->i.avail_in = (uInt)(len + 4);
    z->i.next_out = (Bytef *)out;
    z->i.avail_out = (uInt)cap;
    int rc = inflate(&z->i, Z_SYNC_FLUSH);
    cr_assert(rc == Z_OK || rc == Z_BUF_ERROR, "inflate: %d", rc);
    cr_assert_eq(z->i.avail_in, 0);
    *out_len = cap - z->i.avail_out;
    free(in);
    return out;
}

/* A compressible message of n bytes. */
static char *text_of(size_t n, int seed)
{
    char *m = malloc(n + 1);
    for (size_t k = 0; k < n; k++)
        m[k] = k % 40 ? "squall "[k % 7] : (char)('a' + (k / 40 + (size_t)seed) % 26);
    m[n] = '\0';
    return m;
}

/* Reads one frame and returns it whole (decompressed when RSV1 is set). */
static char *read_message(th_conn_t *c, peer_z_t *z, int opcode, bool want_rsv1, size_t *len)
{
    rframe_t f;
    cr_assert_eq(frame_read(c, &f, 5000), 0);
    cr_assert_eq(f.opcode, opcode);
    cr_assert(f.fin);
    cr_assert_eq((f.b0 & RSV1) != 0, want_rsv1, "RSV1 %s", want_rsv1 ? "clear" : "set");
    char *m;
    if (want_rsv1) {
        m = pz_inflate(z, f.payload, f.len, len);
    } else {
        m = malloc(f.len + 1);
        memcpy(m, f.payload, f.len);
        *len = f.len;
    }
    frame_free(&f);
    return m;
}

Test(ws_deflate, off_by_default_and_agreed_on_a_route_that_takes_it)
{
    dsrv_t s;
    dsrv_start(&s);
    int port = th_server_port(s.ts);
    th_conn_t c;
    char *ext = upgrade(&c, port, "/plain", "permessage-deflate; client_max_window_bits");
    cr_assert_null(ext, "a route without deflate agrees to nothing: %s", ext);
    /* ...and RSV1 there is a protocol error, as before (RFC 6455 §5.2) */
    frame_send(&c, FIN | RSV1 | OP_TEXT, true, "\x4b\x04\x00", 3);
    expect_close(&c, 1002);
    th_conn_close(&c);

    ext = upgrade(&c, port, "/echo", "permessage-deflate; client_max_window_bits");
    cr_assert_not_null(ext);
    cr_assert_str_eq(ext, "permessage-deflate; client_max_window_bits=12");
    free(ext);
    th_conn_close(&c);
    ext = upgrade(&c, port, "/echo", NULL);
    cr_assert_null(ext, "no offer, no extension");
    th_conn_close(&c);
    dsrv_stop(&s);
}

Test(ws_deflate, compressed_messages_both_ways_with_the_threshold)
{
    dsrv_t s;
    dsrv_start(&s);
    th_conn_t c;
    char *ext = upgrade(&c, th_server_port(s.ts), "/echo", "permessage-deflate");
    cr_assert_not_null(ext);
    free(ext);
    peer_z_t z;
    pz_init(&z, 15);
    /* sizes around the threshold (128), and larger; each compressed by us, context taken
     * over from one message to the next, as the server's is */
    static const size_t sizes[] = {0, 5, 127, 128, 1000, 70000, 1 << 20};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        for (int binary = 0; binary < 2; binary++) {
            char *msg = text_of(sizes[i], (int)i);
            size_t cl;
            uint8_t *cm = pz_compress(&z, msg, sizes[i], true, &cl);
            frame_send(&c, FIN | RSV1 | (binary ? OP_BIN : OP_TEXT), true, cm, cl);
            size_t len;
            char *back = read_message(&c, &z, binary ? OP_BIN : OP_TEXT, sizes[i] >= 128, &len);
            cr_assert_eq(len, sizes[i], "%zu bytes: %zu back", sizes[i], len);
            cr_assert_eq(memcmp(back, msg, len), 0, "%zu bytes", sizes[i]);
            free(back);
            free(cm);
            /* the same sent uncompressed (RSV1 clear) is fine too (RFC 7692 §6) */
            frame_send(&c, FIN | (binary ? OP_BIN : OP_TEXT), true, msg, sizes[i]);
            back = read_message(&c, &z, binary ? OP_BIN : OP_TEXT, sizes[i] >= 128, &len);
            cr_assert_eq(len, sizes[i]);
            cr_assert_eq(memcmp(back, msg, len), 0);
            free(back);
            free(msg);
        }
    }
    /* control frames are never compressed: a ping's pong comes back as it is */
    frame_send(&c, FIN | OP_PING, true, "ping payload", 12);
    rframe_t f;
    cr_assert_eq(frame_read(&c, &f, 5000), 0);
    cr_assert_eq(f.opcode, OP_PONG);
    cr_assert_eq(f.b0 & (RSV1 | RSV2 | RSV3), 0);
    cr_assert_eq(f.len, 12);
    frame_free(&f);
    pz_free(&z);
    th_conn_close(&c);
    dsrv_stop(&s);
}

Test(ws_deflate, a_fragmented_compressed_message_is_reassembled_and_sent_with_rsv1_first_only)
{
    dsrv_t s;
    dsrv_start(&s);
    th_conn_t c;
    char *ext = upgrade(&c, th_server_port(s.ts), "/frags", "permessage-deflate");
    free(ext);
    peer_z_t z;
    pz_init(&z, 15);
    size_t n = 300000;
    char *msg = text_of(n, 3);
    /* three pieces compressed as one stream: RSV1 on the first frame only (§6.1) */
    size_t l1, l2, l3;
    uint8_t *p1 = pz_compress(&z, msg, 1000, false, &l1);
    uint8_t *p2 = pz_compress(&z, msg + 1000, 100000, false, &l2);
    uint8_t *p3 = pz_compress(&z, msg + 101000, n - 101000, true, &l3);
    frame_send(&c, RSV1 | OP_TEXT, true, p1, l1);
    frame_send(&c, OP_CONT, true, p2, l2);
    frame_send(&c, FIN | OP_CONT, true, p3, l3);
    free(p1);
    free(p2);
    free(p3);
    /* the echo comes in three fragments: RSV1 on the first alone, one deflate stream */
    sq__buf_t all = {0};
    for (int k = 0; k < 3; k++) {
        rframe_t f;
        cr_assert_eq(frame_read(&c, &f, 5000), 0);
        cr_assert_eq(f.opcode, k == 0 ? OP_TEXT : OP_CONT);
        cr_assert_eq(f.fin, k == 2);
        cr_assert_eq((f.b0 & RSV1) != 0, k == 0, "fragment %d: RSV1", k);
        cr_assert_eq(sq__buf_append(&all, f.payload, f.len), 0);
        frame_free(&f);
    }
    size_t len;
    char *back = pz_inflate(&z, (uint8_t *)all.base, all.len, &len);
    cr_assert_eq(len, n);
    cr_assert_eq(memcmp(back, msg, n), 0);
    free(back);
    sq__buf_free(&all);
    free(msg);
    pz_free(&z);
    th_conn_close(&c);
    dsrv_stop(&s);
}

Test(ws_deflate, rsv1_on_a_continuation_or_control_frame_is_a_protocol_error)
{
    dsrv_t s;
    dsrv_start(&s);
    int port = th_server_port(s.ts);
    th_conn_t c;
    free(upgrade(&c, port, "/echo", "permessage-deflate"));
    raw_case = "RSV1 on a continuation";
    frame_send(&c, RSV1 | OP_TEXT, true, "\x4a\x04\x00\x00\x00\xff\xff", 7);
    frame_send(&c, FIN | RSV1 | OP_CONT, true, "\x4b\x04\x00", 3);
    expect_close(&c, 1002);
    th_conn_close(&c);

    free(upgrade(&c, port, "/echo", "permessage-deflate"));
    raw_case = "RSV1 on a ping";
    frame_send(&c, FIN | RSV1 | OP_PING, true, "x", 1);
    expect_close(&c, 1002);
    th_conn_close(&c);

    free(upgrade(&c, port, "/echo", "permessage-deflate"));
    raw_case = "RSV2 with deflate agreed";
    frame_send(&c, FIN | RSV2 | OP_TEXT, true, "x", 1);
    expect_close(&c, 1002);
    th_conn_close(&c);
    dsrv_stop(&s);
}

Test(ws_deflate, a_broken_stream_or_bad_utf8_inside_is_1007)
{
    dsrv_t s;
    dsrv_start(&s);
    int port = th_server_port(s.ts);
    static const struct {
        const char *name;
        const char *bytes;
        size_t len;
    } cases[] = {
        {"a reserved block type", "\xff\xff\xff\xff", 4},
        {"a stored block whose lengths disagree", "\x00\x05\x00\x00\x00hello", 10},
        /* compressed against a dictionary the server does not have */
        {"a distance before the start", "\x42\x66\x43\x25\xc0\xaa\x00\x00", 8},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        th_conn_t c;
        free(upgrade(&c, port, "/echo", "permessage-deflate"));
        raw_case = cases[i].name;
        frame_send(&c, FIN | RSV1 | OP_BIN, true, cases[i].bytes, cases[i].len);
        expect_close(&c, 1007);
        th_conn_close(&c);
    }
    /* a text message whose inflated bytes are not UTF-8 */
    th_conn_t c;
    free(upgrade(&c, port, "/echo", "permessage-deflate"));
    peer_z_t z;
    pz_init(&z, 15);
    size_t cl;
    static const char bad[] = "ok \xff\xfe not utf-8";
    uint8_t *cm = pz_compress(&z, bad, sizeof(bad) - 1, true, &cl);
    raw_case = "invalid UTF-8 once inflated";
    frame_send(&c, FIN | RSV1 | OP_TEXT, true, cm, cl);
    expect_close(&c, 1007);
    free(cm);
    pz_free(&z);
    th_conn_close(&c);
    dsrv_stop(&s);
}

/* Resident and peak memory of this process, in KiB (the server runs in it). */
static long status_kib(const char *field)
{
    FILE *f = fopen("/proc/self/status", "r");
    cr_assert_not_null(f);
    char line[256];
    long v = -1;
    size_t fl = strlen(field);
    while (fgets(line, sizeof(line), f) != NULL)
        if (strncmp(line, field, fl) == 0 && line[fl] == ':')
            v = strtol(line + fl + 1, NULL, 10);
    fclose(f);
    return v;
}

Test(ws_deflate, a_bomb_is_stopped_at_the_message_limit, .timeout = 90)
{
    /* 1 GiB of zeros, compressed by zlib to about 1 MiB, against /small's 1 MiB limit */
    size_t cap = 2 << 20, clen;
    uint8_t *bomb = malloc(cap);
    cr_assert_not_null(bomb);
    z_stream d;
    memset(&d, 0, sizeof(d));
    cr_assert_eq(deflateInit2(&d, 9, Z_DEFLATED, -15, 9, Z_DEFAULT_STRATEGY), Z_OK);
    static uint8_t zeros[1 << 16];
    d.next_out = bomb;
    d.avail_out = (uInt)cap;
    for (size_t done = 0; done < (1u << 30); done += sizeof(zeros)) {
        d.next_in = zeros;
        d.avail_in = sizeof(zeros);
        cr_assert_eq(deflate(&d, Z_NO_FLUSH), Z_OK);
        cr_assert_eq(d.avail_in, 0);
    }
    cr_assert_eq(deflate(&d, Z_SYNC_FLUSH), Z_OK);
    clen = cap - d.avail_out - 4;
    deflateEnd(&d);
    cr_log_info("1 GiB of zeros compressed to %zu bytes", clen);
    cr_assert_lt(clen, 2 << 20);

    dsrv_t s;
    dsrv_start(&s);
    th_conn_t c;
    free(upgrade(&c, th_server_port(s.ts), "/small", "permessage-deflate"));
    uint8_t *frame = malloc(clen + 14);
    size_t fl = frame_build(frame, FIN | RSV1 | OP_BIN, true, bomb, clen);
    free(bomb);
    /* the peak from here on: the server's share of it is the inflated message */
    FILE *cr = fopen("/proc/self/clear_refs", "w");
    if (cr != NULL) {
        fputs("5", cr); /* resets VmHWM to the current RSS */
        fclose(cr);
    }
    long rss0 = status_kib("VmRSS");
    (void)th_conn_send(&c, frame, fl); /* the server may close before taking it all */
    free(frame);
    raw_case = "a bomb";
    expect_close(&c, 1009);
    th_conn_close(&c);
    cr_assert_eq(th_wait_atomic(&s.closes, 1, 5000), 1);
    long peak = status_kib("VmHWM");
    dsrv_stop(&s);
    cr_log_info("RSS %ld KiB before the bomb, peak %ld KiB", rss0, peak);
    cr_assert_eq(atomic_load(&s.close_code), 1009);
    /* the limit (1 MiB) and the buffer's doubling, not the 1 GiB it would inflate to */
    if (cr != NULL)
        cr_assert_lt(peak - rss0, 16 * 1024, "the peak grew by %ld KiB", peak - rss0);
}

Test(ws_deflate, hello_takes_ws_deflate_on_its_websocket_routes, .timeout = 30)
{
    th_app_t a = th_app_start("hello", "--ws-deflate", NULL);
    static const char *const paths[] = {"/ws", "/ws/echo"};
    for (int i = 0; i < 2; i++) {
        th_conn_t c;
        char *ext = upgrade(&c, a.port, paths[i], "permessage-deflate; client_max_window_bits");
        cr_assert(ext != NULL && strcmp(ext, "permessage-deflate; client_max_window_bits=12") == 0,
                  "%s: %s", paths[i], ext ? ext : "(none)");
        free(ext);
        th_conn_close(&c);
    }
    /* a compressed message to /ws/echo comes back compressed */
    th_conn_t c;
    free(upgrade(&c, a.port, "/ws/echo", "permessage-deflate"));
    peer_z_t z;
    pz_init(&z, 15);
    char *msg = text_of(4000, 2);
    size_t cl, len;
    uint8_t *cm = pz_compress(&z, msg, 4000, true, &cl);
    frame_send(&c, FIN | RSV1 | OP_TEXT, true, cm, cl);
    char *back = read_message(&c, &z, OP_TEXT, true, &len);
    cr_assert(len == 4000 && memcmp(back, msg, len) == 0);
    free(back);
    free(cm);
    free(msg);
    pz_free(&z);
    th_conn_close(&c);
    th_app_stop(&a);

    a = th_app_start("hello", NULL); /* off by default */
    char *ext = upgrade(&c, a.port, "/ws/echo", "permessage-deflate");
    cr_assert_null(ext, "without --ws-deflate: %s", ext);
    th_conn_close(&c);
    th_app_stop(&a);
}

/* ---- the zlib state a connection holds ---- */

static void read_held(sq_server_t *srv, void *data)
{
    dsrv_t *s = data;
    sq_ws_t *ws = atomic_load(&s->last);
    s->held = ws != NULL ? sq__ws_pmd_held(ws) : (size_t)-1;
}

static size_t held_after_echo(dsrv_t *s, const char *path)
{
    th_conn_t c;
    char *ext = upgrade(&c, th_server_port(s->ts), path, "permessage-deflate");
    cr_assert_not_null(ext);
    bool nocontext = strstr(ext, "server_no_context_takeover") != NULL;
    free(ext);
    peer_z_t z;
    pz_init(&z, 15);
    th_server_call(s->ts, read_held, s);
    cr_assert_eq(s->held, 0, "%s: zlib state before any message: %zu bytes", path, s->held);
    char *msg = text_of(20000, 1);
    for (int k = 0; k < 2; k++) {
        size_t cl, len;
        uint8_t *cm = pz_compress(&z, msg, 20000, true, &cl);
        if (nocontext)
            deflateReset(&z.d);
        frame_send(&c, FIN | RSV1 | OP_TEXT, true, cm, cl);
        free(cm);
        char *back = read_message(&c, &z, OP_TEXT, true, &len);
        if (nocontext)
            inflateReset(&z.i);
        cr_assert_eq(len, 20000);
        cr_assert_eq(memcmp(back, msg, len), 0);
        free(back);
    }
    free(msg);
    th_server_call(s->ts, read_held, s);
    size_t held = s->held;
    pz_free(&z);
    th_conn_close(&c);
    return held;
}

Test(ws_deflate, zlib_state_is_held_between_messages_only_with_context_takeover)
{
    dsrv_t s;
    dsrv_start(&s);
    size_t with = held_after_echo(&s, "/echo");
    size_t without = held_after_echo(&s, "/nocontext");
    cr_log_info("zlib state of an idle connection: %zu bytes with context takeover, %zu "
                "without", with, without);
    cr_assert_eq(without, 0);
    /* the defaults: a 12-bit window and memLevel 5 to compress, 15 bits to inflate (the
     * client did not offer client_max_window_bits): about 32 + 39 KiB */
    cr_assert_gt(with, 0);
    cr_assert_lt(with, 100 * 1024, "%zu bytes", with);
    dsrv_stop(&s);
}

/* ---- real peers ---- */

/* The repository's root: SQUALL_BIN is <root>/<build>/bin; else the current directory. */
static void peer_path(char *out, size_t cap, const char *script)
{
    const char *bin = getenv("SQUALL_BIN");
    int n = bin ? snprintf(out, cap, "%s/../../tests/peers/%s", bin, script)
                : snprintf(out, cap, "tests/peers/%s", script);
    cr_assert(n > 0 && (size_t)n < cap);
}

typedef struct child {
    pid_t pid;
    int fd;          /* its stdout and stderr */
    char buf[8192];
    size_t len;
} child_t;

static void child_start(child_t *ch, const char *const argv[])
{
    int p[2];
    cr_assert_eq(pipe(p), 0);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, p[1], 1);
    posix_spawn_file_actions_adddup2(&fa, p[1], 2);
    posix_spawn_file_actions_addclose(&fa, p[0]);
    int rc = posix_spawnp(&ch->pid, argv[0], &fa, NULL, (char *const *)argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(p[1]);
    cr_assert_eq(rc, 0, "spawn %s", argv[0]);
    ch->fd = p[0];
    ch->len = 0;
    ch->buf[0] = '\0';
}

/* Reads its output until `needle` appears (NULL: until EOF) or the deadline. */
static bool child_wait_for(child_t *ch, const char *needle, int timeout_ms)
{
    uint64_t end = th_now_ms() + (uint64_t)timeout_ms;
    while (needle == NULL || strstr(ch->buf, needle) == NULL) {
        uint64_t now = th_now_ms();
        if (now >= end)
            return false;
        struct pollfd pf = {.fd = ch->fd, .events = POLLIN};
        if (poll(&pf, 1, (int)(end - now)) <= 0)
            continue;
        if (ch->len + 1 >= sizeof(ch->buf))
            ch->len = 0; /* keep the tail */
        ssize_t n = read(ch->fd, ch->buf + ch->len, sizeof(ch->buf) - 1 - ch->len);
        if (n <= 0)
            return needle == NULL;
        ch->len += (size_t)n;
        ch->buf[ch->len] = '\0';
    }
    return true;
}

/* Waits for it to exit (killed at the deadline); returns its exit status or -1. */
static int child_end(child_t *ch, int timeout_ms)
{
    child_wait_for(ch, NULL, timeout_ms);
    close(ch->fd);
    uint64_t end = th_now_ms() + (uint64_t)timeout_ms;
    int st;
    while (waitpid(ch->pid, &st, WNOHANG) == 0) {
        if (th_now_ms() >= end) {
            kill(ch->pid, SIGKILL);
            waitpid(ch->pid, &st, 0);
            return -1;
        }
        th_sleep_ms(10);
    }
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void run_client_peer(const char *interp, const char *script, const char *path,
                            const char *takeover)
{
    dsrv_t s;
    dsrv_start(&s);
    char sp[PATH_MAX], port[16];
    peer_path(sp, sizeof(sp), script);
    snprintf(port, sizeof(port), "%d", th_server_port(s.ts));
    const char *argv[] = {interp, sp, port, path, takeover, NULL};
    child_t ch;
    child_start(&ch, argv);
    int code = child_end(&ch, 40000);
    cr_assert_eq(th_wait_atomic(&s.closes, 1, 5000), 1);
    dsrv_stop(&s);
    cr_assert(code == 0 && strstr(ch.buf, "ok") != NULL, "%s %s takeover %s: exit %d: %s",
              script, path, takeover, code, ch.buf);
    cr_assert_eq(atomic_load(&s.close_code), 1000);
}

Test(ws_deflate, python_websockets_with_context_takeover, .timeout = 60)
{
    run_client_peer("/usr/bin/python3", "ws_deflate_client.py", "/echo", "1");
}

Test(ws_deflate, python_websockets_without_context_takeover, .timeout = 60)
{
    run_client_peer("/usr/bin/python3", "ws_deflate_client.py", "/nocontext", "0");
}

Test(ws_deflate, python_websockets_gets_fragmented_compressed_echoes, .timeout = 60)
{
    run_client_peer("/usr/bin/python3", "ws_deflate_client.py", "/frags", "1");
}

Test(ws_deflate, node_ws_with_context_takeover, .timeout = 60)
{
    run_client_peer("node", "ws_deflate_client.js", "/echo", "1");
}

Test(ws_deflate, node_ws_without_context_takeover, .timeout = 60)
{
    run_client_peer("node", "ws_deflate_client.js", "/nocontext", "0");
}

Test(ws_deflate, node_ws_gets_fragmented_compressed_echoes, .timeout = 60)
{
    run_client_peer("node", "ws_deflate_client.js", "/frags", "0");
}

/* squall's client against a Node `ws` server with perMessageDeflate: echoes of text and
 * binary, small and 1 MiB, whole and fragmented. */
typedef struct cli {
    int step;
    int fails;
    int opens, closes, close_code;
    char why[160];
    char *msgs[8];
    size_t lens[8];
} cli_t;

#define NSTEPS 8

static void cli_send(sq_ws_t *ws, cli_t *c)
{
    int k = c->step;
    int binary = k & 1;
    if (k >= 6) { /* fragmented */
        size_t n = c->lens[k], a = n / 3;
        if (sq_ws_send_fragment(ws, binary, c->msgs[k], a, 0) != 0 ||
            sq_ws_send_fragment(ws, binary, c->msgs[k] + a, n - a, 1) != 0)
            c->fails++;
        return;
    }
    if (sq_ws_send(ws, binary, c->msgs[k], c->lens[k]) != 0)
        c->fails++;
}

static void cli_open(sq_ws_t *ws, sq_req_t *req, void *data)
{
    cli_t *c = data;
    c->opens++;
    cli_send(ws, c);
}

static void cli_message(sq_ws_t *ws, int binary, const char *msg, size_t len, void *data)
{
    cli_t *c = data;
    int k = c->step;
    if (binary != (k & 1) || len != c->lens[k] || memcmp(msg, c->msgs[k], len) != 0) {
        snprintf(c->why, sizeof(c->why), "step %d: %zu bytes back, %zu sent", k, len, c->lens[k]);
        c->fails++;
    }
    if (++c->step == NSTEPS)
        sq_ws_close(ws, 1000, "done");
    else
        cli_send(ws, c);
}

static void cli_close(sq_ws_t *ws, int code, const char *reason, void *data)
{
    cli_t *c = data;
    c->closes++;
    c->close_code = code;
    if (code != 1000)
        snprintf(c->why, sizeof(c->why), "closed %d %s", code, reason);
}

static const sq_ws_handler_t cli_h = {.open = cli_open, .message = cli_message,
                                      .close = cli_close};

static void squall_client_against_node(const char *takeover, int no_ctx)
{
    char sp[PATH_MAX];
    peer_path(sp, sizeof(sp), "ws_deflate_server.js");
    const char *argv[] = {"node", sp, takeover, NULL};
    child_t ch;
    child_start(&ch, argv);
    cr_assert(child_wait_for(&ch, "listening ", 10000), "node: %s", ch.buf);
    int port = atoi(strstr(ch.buf, "listening ") + 10);
    cli_t c;
    memset(&c, 0, sizeof(c));
    static const size_t sizes[NSTEPS] = {10, 10, 5000, 5000, 1 << 20, 1 << 20, 300000, 1 << 20};
    for (int k = 0; k < NSTEPS; k++) {
        c.lens[k] = sizes[k];
        c.msgs[k] = text_of(sizes[k], k);
    }
    uv_loop_t loop;
    uv_loop_init(&loop);
    sq_ws_opts_t o;
    sq_ws_opts_init(&o);
    o.deflate = 1;
    o.deflate_threshold = 0;
    o.deflate_no_context_takeover = no_ctx;
    o.deflate_peer_no_context_takeover = no_ctx;
    char url[64];
    snprintf(url, sizeof(url), "ws://127.0.0.1:%d/", port);
    cr_assert_eq(sq_ws_connect(&loop, url, &cli_h, &c, &o, NULL), 0);
    uint64_t end = th_now_ms() + 30000;
    while (c.closes == 0 && th_now_ms() < end)
        uv_run(&loop, UV_RUN_ONCE);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(uv_loop_close(&loop), 0);
    int code = child_end(&ch, 10000);
    for (int k = 0; k < NSTEPS; k++)
        free(c.msgs[k]);
    cr_assert_eq(c.opens, 1, "%s; node: %s", c.why, ch.buf);
    cr_assert_eq(c.fails, 0, "%s; node: %s", c.why, ch.buf);
    cr_assert_eq(c.close_code, 1000, "%s; node: %s", c.why, ch.buf);
    cr_assert_eq(code, 0, "node: %s", ch.buf);
    cr_assert(strstr(ch.buf, "ext permessage-deflate") != NULL, "node: %s", ch.buf);
    if (no_ctx)
        cr_assert(strstr(ch.buf, "server_no_context_takeover") != NULL, "node: %s", ch.buf);
    cr_assert(strstr(ch.buf, "closed 1000") != NULL, "node: %s", ch.buf);
}

Test(ws_deflate, squall_client_and_node_ws_server_with_context_takeover, .timeout = 60)
{
    squall_client_against_node("1", 0);
}

Test(ws_deflate, squall_client_and_node_ws_server_without_context_takeover, .timeout = 60)
{
    squall_client_against_node("0", 1);
}
