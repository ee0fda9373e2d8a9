/* TLS (include/squall/tls.h; lib/tls, lib/server/tls.c, the clients' https:// and
 * wss://): squall's server against real peers — curl, Python's ssl (http.client and
 * websockets), Node's https and ws — and against squall's own clients; certificate and
 * host name checks; broken, truncated and plaintext input on the TLS port; SNI; and
 * hello's --tls-cert/--tls-key. The certificates are made for each test with the openssl
 * command in a temporary folder: a CA, a server certificate for localhost and 127.0.0.1
 * signed by it, one for other.test, a self-signed one and an expired one. */
#include <criterion/criterion.h>
#include <limits.h>
#include <malloc.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <squall.h>

#include "support/harness.h"
#include "support/hello.h"

static char dir[64];

static const char mkcerts[] =
    "set -e\n"
    "k() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out \"$1\"; }\n"
    "k ca.key\n"
    "openssl req -x509 -new -key ca.key -days 30 -subj '/CN=squall test CA' "
    "-addext 'basicConstraints=critical,CA:TRUE' "
    "-addext 'keyUsage=critical,keyCertSign,cRLSign' -out ca.pem\n"
    "leaf() {\n"
    "  k $1.key\n"
    "  openssl req -new -key $1.key -subj \"/CN=$2\" -out $1.csr\n"
    "  printf 'subjectAltName=%s\\nbasicConstraints=CA:FALSE\\nextendedKeyUsage=serverAuth\\n'"
    " \"$3\" > $1.ext\n"
    "}\n"
    "sign() { openssl x509 -req -in $1.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 30 "
    "-extfile $1.ext -out $1.pem; }\n"
    "leaf srv localhost DNS:localhost,IP:127.0.0.1; sign srv\n"
    "leaf other other.test DNS:other.test; sign other\n"
    "k self.key\n"
    "openssl req -x509 -new -key self.key -days 30 -subj /CN=localhost "
    "-addext subjectAltName=DNS:localhost,IP:127.0.0.1 -out self.pem\n"
    "leaf old localhost DNS:localhost,IP:127.0.0.1\n"
    "mkdir -p db; : > db/index.txt; echo 01 > db/serial\n"
    "printf '[ca]\\ndefault_ca=c\\n[c]\\ndatabase=db/index.txt\\nserial=db/serial\\n"
    "new_certs_dir=db\\ndefault_md=sha256\\npolicy=p\\n[p]\\ncommonName=supplied\\n' > ca.cnf\n"
    "openssl ca -batch -config ca.cnf -cert ca.pem -keyfile ca.key -in old.csr "
    "-startdate 20200101000000Z -enddate 20200201000000Z -extfile old.ext -out old.pem\n";

/* The path of a file of the test's folder (one of four rotating buffers). */
static const char *P(const char *name)
{
    static char bufs[4][128];
    static int i;
    char *b = bufs[i++ % 4];
    snprintf(b, 128, "%s/%s", dir, name);
    return b;
}

static void setup(void)
{
    signal(SIGPIPE, SIG_IGN);
    snprintf(dir, sizeof(dir), "/tmp/squall-tls-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    FILE *f = fopen(P("mk.sh"), "w");
    cr_assert_not_null(f);
    fputs(mkcerts, f);
    fclose(f);
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "cd %s && sh mk.sh >mk.log 2>&1", dir);
    cr_assert_eq(system(cmd), 0, "openssl could not make the test certificates (%s/mk.log)",
                 dir);
}

static void teardown(void)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    if (dir[0] != '\0' && system(cmd) != 0)
        fprintf(stderr, "test_tls: could not remove %s\n", dir);
}

TestSuite(tls, .init = setup, .fini = teardown, .timeout = 90);

/* Runs a shell command (bounded by timeout(1)); its stdout (and stderr) in out. Returns
 * its exit status. */
static int run(char *out, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int run(char *out, size_t cap, const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    int n = snprintf(cmd, sizeof(cmd), "timeout 30 ");
    vsnprintf(cmd + n, sizeof(cmd) - (size_t)n, fmt, ap);
    va_end(ap);
    strncat(cmd, " 2>&1", sizeof(cmd) - strlen(cmd) - 1);
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p);
    size_t len = 0;
    if (out != NULL && cap > 0) {
        size_t r;
        while (len + 1 < cap && (r = fread(out + len, 1, cap - 1 - len, p)) > 0)
            len += r;
        out[len] = '\0';
    }
    char sink[512];
    while (fread(sink, 1, sizeof(sink), p) > 0) {
    }
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);
}

/* ---- the server's app ---- */

#define BIG (5u * 1024 * 1024)
#define STREAM_CHUNK (64 * 1024)
#define STREAM_CHUNKS 100

static char pattern_at(size_t i)
{
    return (char)('a' + (i % 26));
}

static void root_get(sq_req_t *req, sq_res_t *res, void *data)
{
    sq_res_send(res, 200, "text/plain", "hello tls", 9);
}

static void echo_post(sq_req_t *req, sq_res_t *res, void *data)
{
    size_t len;
    const char *b = sq_req_body(req, &len);
    sq_res_send(res, 200, "application/octet-stream", b, len);
}

static char *big_body; /* BIG bytes of the pattern, made once per test process */

static void big_get(sq_req_t *req, sq_res_t *res, void *data)
{
    if (big_body == NULL) {
        big_body = malloc(BIG);
        for (size_t i = 0; big_body != NULL && i < BIG; i++)
            big_body[i] = pattern_at(i);
    }
    sq_res_send_ref(res, 200, "text/plain", big_body, BIG, NULL, NULL);
}

typedef struct streamer {
    int sent;
    char chunk[STREAM_CHUNK];
} streamer_t;

static void stream_next(sq_res_t *res, int status, void *data)
{
    streamer_t *s = data;
    if (status < 0 || s->sent == STREAM_CHUNKS) {
        sq_res_end(res);
        free(s);
        return;
    }
    for (size_t i = 0; i < STREAM_CHUNK; i++)
        s->chunk[i] = pattern_at((size_t)s->sent * STREAM_CHUNK + i);
    s->sent++;
    if (sq_res_write(res, s->chunk, STREAM_CHUNK, stream_next, s) != 0) {
        sq_res_end(res);
        free(s);
    }
}

/* STREAM_CHUNKS chunks of the pattern, each written when the last has left. */
static void stream_get(sq_req_t *req, sq_res_t *res, void *data)
{
    streamer_t *s = calloc(1, sizeof(*s));
    if (s == NULL || sq_res_start(res, 200, "text/plain") != 0) {
        free(s);
        sq_res_end(res);
        return;
    }
    stream_next(res, 0, s);
}

static void ws_echo(sq_ws_t *ws, int binary, const char *msg, size_t len, void *data)
{
    sq_ws_send(ws, binary, msg, len);
}

static const sq_handler_t root = {.get = root_get};
static const sq_handler_t echo = {.post = echo_post};
static const sq_handler_t streamed = {.get = stream_get};
static const sq_handler_t big_h = {.get = big_get};
static const sq_ws_handler_t ws_echo_handler = {.message = ws_echo};

static sq_app_t *make_app(void)
{
    sq_app_t *app;
    cr_assert_eq(sq_app_create(&app), 0);
    sq_app_route(app, "/", &root, NULL);
    sq_app_route(app, "/echo", &echo, NULL);
    sq_app_route(app, "/stream", &streamed, NULL);
    sq_app_route(app, "/big", &big_h, NULL);
    sq_ws_opts_t wo;
    sq_ws_opts_init(&wo);
    wo.max_message_bytes = 8u << 20;
    sq_app_websocket(app, "/ws", &ws_echo_handler, &wo, NULL);
    return app;
}

typedef struct tls_server {
    sq_app_t *app;
    sq_tls_ctx_t *ctx;
    th_server_t *ts;
    int port;
} tls_server_t;

/* A TLS server on 127.0.0.1 with the certificate `name`.pem and its key. */
static tls_server_t tls_start(const char *name, sq_server_opts_t *opts)
{
    tls_server_t s = {.app = make_app()};
    char cert[96], key[96];
    snprintf(cert, sizeof(cert), "%s/%s.pem", dir, name);
    snprintf(key, sizeof(key), "%s/%s.key", dir, name);
    int rc = sq_tls_ctx_server(&s.ctx, cert, key);
    cr_assert_eq(rc, 0, "sq_tls_ctx_server: %s", sq_strerror(rc));
    sq_server_opts_t o;
    if (opts == NULL) {
        sq_server_opts_init(&o);
        opts = &o;
    }
    opts->tls = s.ctx;
    opts->max_body_bytes = 8u << 20;
    s.ts = th_server_start(s.app, opts);
    s.port = th_server_port(s.ts);
    return s;
}

static void tls_stop(tls_server_t *s, sq_server_stats_t *st)
{
    sq_server_stats_t tmp;
    th_server_stop_stats(s->ts, 2000, st != NULL ? st : &tmp);
    sq_tls_ctx_free(s->ctx);
    sq_app_destroy(s->app);
}

/* A file of n bytes of the pattern. */
static void pattern_file(const char *path, size_t n)
{
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    for (size_t i = 0; i < n; i++)
        fputc(pattern_at(i), f);
    fclose(f);
}

static bool file_is_pattern(const char *path, size_t n)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return false;
    size_t i = 0;
    int ch;
    while ((ch = fgetc(f)) != EOF) {
        if (i >= n || ch != (unsigned char)pattern_at(i)) {
            fclose(f);
            return false;
        }
        i++;
    }
    fclose(f);
    return i == n;
}

/* ---- real peers ---- */

/* The last response of a connection (Connection: close) is written whole before the
 * close, though its ciphertext is still on its way when the response is done: a slow
 * reader gets all of it. */
Test(tls, a_closing_response_is_sent_whole_to_a_slow_reader)
{
    tls_server_t s = tls_start("srv", NULL);
    char out[4096];
    int rc = run(out, sizeof(out),
                 "curl -sS --cacert %s -H 'Connection: close' --limit-rate 8M "
                 "https://localhost:%d/big -o %s",
                 P("ca.pem"), s.port, P("big.out"));
    cr_assert_eq(rc, 0, "%s", out);
    cr_assert(file_is_pattern(P("big.out"), BIG), "the body is whole");
    tls_stop(&s, NULL);
    free(big_body);
    big_body = NULL;
}

Test(tls, curl_gets_posts_a_big_body_and_reads_a_stream)
{
    tls_server_t s = tls_start("srv", NULL);
    char out[4096];
    int rc = run(out, sizeof(out), "curl -sS --cacert %s https://localhost:%d/", P("ca.pem"),
                 s.port);
    cr_assert_eq(rc, 0, "%s", out);
    cr_assert_str_eq(out, "hello tls");
    /* by address: the certificate names 127.0.0.1 too; and ALPN picked http/1.1 */
    rc = run(out, sizeof(out), "curl -sS -v --cacert %s https://127.0.0.1:%d/ -o /dev/null",
             P("ca.pem"), s.port);
    cr_assert_eq(rc, 0, "%s", out);
    cr_assert(strstr(out, "ALPN: server accepted http/1.1") != NULL ||
                  strstr(out, "ALPN, server accepted to use http/1.1") != NULL,
              "%s", out);
    pattern_file(P("big"), BIG);
    rc = run(out, sizeof(out),
             "curl -sS --cacert %s --data-binary @%s -H 'Content-Type: application/x' "
             "https://localhost:%d/echo -o %s",
             P("ca.pem"), P("big"), s.port, P("big.out"));
    cr_assert_eq(rc, 0, "%s", out);
    cr_assert(file_is_pattern(P("big.out"), BIG), "the echoed body differs");
    rc = run(out, sizeof(out), "curl -sS --cacert %s https://localhost:%d/stream -o %s",
             P("ca.pem"), s.port, P("stream.out"));
    cr_assert_eq(rc, 0, "%s", out);
    cr_assert(file_is_pattern(P("stream.out"), (size_t)STREAM_CHUNKS * STREAM_CHUNK));
    sq_server_stats_t st;
    tls_stop(&s, &st);
    cr_assert_geq(st.tls_handshakes, 4);
    cr_assert_eq(st.tls_errors, 0);
}

static const char py_http[] =
    "import http.client, ssl, socket, sys, os\n"
    "ca, port, big = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])\n"
    "ctx = ssl.create_default_context(cafile=ca)\n"
    "c = http.client.HTTPSConnection('localhost', port, context=ctx, timeout=10)\n"
    "c.request('GET', '/')\n"
    "r = c.getresponse(); print(r.status, r.read().decode())\n"
    "body = bytes((97 + i % 26) for i in range(big))\n"
    "c.request('POST', '/echo', body=body)\n"
    "r = c.getresponse(); got = r.read(); print('echo', r.status, got == body)\n"
    "c.close()\n"
    /* a broken record after the handshake: raw bytes on the TCP socket under TLS */
    "s = ctx.wrap_socket(socket.create_connection(('127.0.0.1', port)), "
    "server_hostname='localhost')\n"
    "os.write(s.fileno(), b'\\x17\\x03\\x03\\x00\\x20' + b'\\x00' * 32)\n"
    "s.settimeout(10)\n"
    "try:\n"
    "    d = s.recv(100)\n"
    "    print('closed' if d == b'' else 'data')\n"
    "except (ssl.SSLError, ConnectionError, OSError):\n"
    "    print('closed')\n";

Test(tls, python_http_client_over_ssl)
{
    tls_server_t s = tls_start("srv", NULL);
    write_file(P("peer_http.py"), py_http);
    char out[4096];
    int rc = run(out, sizeof(out), "/usr/bin/python3 %s %s %d %u", P("peer_http.py"), P("ca.pem"),
                 s.port, 3u << 20);
    cr_assert_eq(rc, 0, "%s", out);
    cr_assert_str_eq(out, "200 hello tls\necho 200 True\nclosed\n");
    sq_server_stats_t st;
    tls_stop(&s, &st);
    cr_assert_eq(st.tls_errors, 1, "the broken record is counted");
}

static const char py_ws[] =
    "import asyncio, ssl, sys, websockets\n"
    "async def main():\n"
    "    ctx = ssl.create_default_context(cafile=sys.argv[1])\n"
    "    async with websockets.connect('wss://localhost:%s/ws' % sys.argv[2], ssl=ctx,\n"
    "                                  max_size=None) as ws:\n"
    "        await ws.send('hello wss')\n"
    "        print(await ws.recv())\n"
    "        big = bytes(range(256)) * 8192\n"
    "        await ws.send(big)\n"
    "        print((await ws.recv()) == big)\n"
    "asyncio.run(asyncio.wait_for(main(), 20))\n";

Test(tls, python_websockets_over_wss)
{
    tls_server_t s = tls_start("srv", NULL);
    write_file(P("ws.py"), py_ws);
    char out[4096];
    int rc = run(out, sizeof(out), "/usr/bin/python3 %s %s %d", P("ws.py"), P("ca.pem"),
                 s.port);
    cr_assert_eq(rc, 0, "%s", out);
    cr_assert_str_eq(out, "hello wss\nTrue\n");
    tls_stop(&s, NULL);
}

static const char node_script[] =
    "const https = require('https'), fs = require('fs'), WebSocket = require('ws');\n"
    "const [ca, port] = [fs.readFileSync(process.argv[2]), process.argv[3]];\n"
    "setTimeout(() => { console.log('timeout'); process.exit(1); }, 20000);\n"
    "https.get({host: 'localhost', port, path: '/', ca}, (res) => {\n"
    "  let b = ''; res.on('data', (d) => b += d);\n"
    "  res.on('end', () => {\n"
    "    console.log(res.statusCode, b);\n"
    "    const ws = new WebSocket('wss://localhost:' + port + '/ws', {ca});\n"
    "    ws.on('open', () => ws.send('hello node'));\n"
    "    ws.on('message', (m) => { console.log(String(m)); ws.close(1000); });\n"
    "    ws.on('close', (code) => { console.log('closed', code); process.exit(0); });\n"
    "    ws.on('error', (e) => { console.log('error', e.message); process.exit(1); });\n"
    "  });\n"
    "}).on('error', (e) => { console.log('error', e.message); process.exit(1); });\n";

Test(tls, node_https_and_ws_over_wss)
{
    tls_server_t s = tls_start("srv", NULL);
    write_file(P("peer.js"), node_script);
    char out[4096], peers[512];
    cr_assert_not_null(realpath("tests/peers/node_modules", peers),
                       "run from the repository: tests/peers/node_modules (npm ws)");
    int rc = run(out, sizeof(out), "env NODE_PATH=%s node %s %s %d", peers, P("peer.js"),
                 P("ca.pem"), s.port);
    cr_assert_eq(rc, 0, "%s", out);
    cr_assert_str_eq(out, "200 hello tls\nhello node\nclosed 1000\n");
    tls_stop(&s, NULL);
}

/* ---- squall's own clients ---- */

static uv_loop_t loop;

typedef struct got {
    int calls;
    int status;
    int http;
    size_t len;
    bool pattern;  /* the body is the pattern */
    char body[64];
    size_t streamed;
} got_t;

static void on_fetched(sq_fetch_t *f, int status, const sq_response_t *res, void *data)
{
    got_t *g = data;
    g->calls++;
    g->status = status;
    if (res == NULL)
        return;
    g->http = sq_response_status(res);
    const char *b = sq_response_body(res, &g->len);
    snprintf(g->body, sizeof(g->body), "%.*s", (int)(g->len < 63 ? g->len : 63), b);
    g->pattern = true;
    for (size_t i = 0; i < g->len && g->pattern; i++)
        g->pattern = b[i] == pattern_at(i);
}

static int on_chunk(sq_fetch_t *f, const char *chunk, size_t len, void *data)
{
    got_t *g = data;
    for (size_t i = 0; i < len; i++)
        if (chunk[i] != pattern_at(g->streamed + i))
            return 1;
    g->streamed += len;
    return 0;
}

static void on_stop(uv_timer_t *t)
{
    uv_stop(t->loop);
}

static void run_until(const int *count, int want, int ms)
{
    uint64_t end = th_now_ms() + (uint64_t)ms;
    uv_timer_t t;
    uv_timer_init(&loop, &t);
    uv_unref((uv_handle_t *)&t);
    while (*count < want && th_now_ms() < end) {
        uv_timer_start(&t, on_stop, 20, 0);
        uv_run(&loop, UV_RUN_DEFAULT);
    }
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(&loop, UV_RUN_NOWAIT);
}

static sq_client_t *client_new(const char *ca, int insecure)
{
    sq_client_opts_t o;
    sq_client_opts_init(&o);
    o.tls_ca_file = ca;
    o.tls_insecure = insecure;
    o.connect_timeout_ms = 5000;
    sq_client_t *cl;
    int rc = sq_client_new(&cl, &loop, &o);
    cr_assert_eq(rc, 0, "%s", sq_strerror(rc));
    return cl;
}

static void on_client_closed(sq_client_t *cl, void *data)
{
    (*(int *)data)++;
}

static void client_close(sq_client_t *cl)
{
    int closed = 0;
    cr_assert_eq(sq_client_close(cl, on_client_closed, &closed), 0);
    run_until(&closed, 1, 5000);
    cr_assert_eq(closed, 1);
}

static got_t get(sq_client_t *cl, const char *method, const char *url, const void *body,
                 size_t len, bool stream)
{
    got_t g = {0};
    sq_fetch_req_t req;
    sq_fetch_req_init(&req);
    req.method = method;
    req.url = url;
    req.body = body;
    req.body_len = len;
    if (stream)
        req.on_body = on_chunk;
    cr_assert_eq(sq_fetch(cl, &req, on_fetched, &g, NULL), 0);
    run_until(&g.calls, 1, 20000);
    cr_assert_eq(g.calls, 1);
    return g;
}

typedef struct wsrec {
    int opened, messages, closed;
    int code, error;
    bool big_ok;
    char text[64];
    char reason[128];
} wsrec_t;

#define WS_BIG (2u << 20)

static void wsc_open(sq_ws_t *ws, sq_req_t *req, void *data)
{
    wsrec_t *r = data;
    r->opened++;
    sq_ws_send_text(ws, "hello from squall", 17);
    char *big = malloc(WS_BIG);
    for (size_t i = 0; i < WS_BIG; i++)
        big[i] = pattern_at(i);
    sq_ws_send_binary(ws, big, WS_BIG);
    free(big);
}

static void wsc_message(sq_ws_t *ws, int binary, const char *msg, size_t len, void *data)
{
    wsrec_t *r = data;
    r->messages++;
    if (!binary) {
        snprintf(r->text, sizeof(r->text), "%.*s", (int)len, msg);
        return;
    }
    r->big_ok = len == WS_BIG;
    for (size_t i = 0; i < len && r->big_ok; i++)
        r->big_ok = msg[i] == pattern_at(i);
    sq_ws_close(ws, 1000, "done");
}

static void wsc_close(sq_ws_t *ws, int code, const char *reason, void *data)
{
    wsrec_t *r = data;
    r->closed++;
    r->code = code;
    r->error = sq_ws_error(ws);
    snprintf(r->reason, sizeof(r->reason), "%s", reason);
}

static const sq_ws_handler_t wsc_handler = {
    .open = wsc_open, .message = wsc_message, .close = wsc_close};

static wsrec_t wss(const char *url, const char *ca, int insecure)
{
    wsrec_t r = {0};
    sq_ws_opts_t o;
    sq_ws_opts_init(&o);
    o.tls_ca_file = ca;
    o.tls_insecure = insecure;
    o.max_message_bytes = 8u << 20;
    int rc = sq_ws_connect(&loop, url, &wsc_handler, &r, &o, NULL);
    cr_assert_eq(rc, 0, "%s", sq_strerror(rc));
    run_until(&r.closed, 1, 20000);
    cr_assert_eq(r.closed, 1);
    return r;
}

Test(tls, squall_client_and_ws_client_against_squall_server)
{
    tls_server_t s = tls_start("srv", NULL);
    cr_assert_eq(uv_loop_init(&loop), 0);
    sq_client_t *cl = client_new(P("ca.pem"), 0);
    char url[128];
    snprintf(url, sizeof(url), "https://localhost:%d/", s.port);
    got_t g = get(cl, "GET", url, NULL, 0, false);
    cr_assert_eq(g.status, 0, "%s", sq_strerror(g.status));
    cr_assert_eq(g.http, 200);
    cr_assert_str_eq(g.body, "hello tls");
    /* a big body both ways, on the pooled connection */
    char *big = malloc(BIG);
    for (size_t i = 0; i < BIG; i++)
        big[i] = pattern_at(i);
    snprintf(url, sizeof(url), "https://localhost:%d/echo", s.port);
    g = get(cl, "POST", url, big, BIG, false);
    free(big);
    cr_assert_eq(g.status, 0, "%s", sq_strerror(g.status));
    cr_assert_eq(g.len, BIG);
    cr_assert(g.pattern);
    /* a streamed response, streamed to the caller */
    snprintf(url, sizeof(url), "https://127.0.0.1:%d/stream", s.port);
    g = get(cl, "GET", url, NULL, 0, true);
    cr_assert_eq(g.status, 0, "%s", sq_strerror(g.status));
    cr_assert_eq(g.streamed, (size_t)STREAM_CHUNKS * STREAM_CHUNK);
    sq_client_stats_t cs;
    sq_client_stats(cl, &cs);
    cr_assert_eq(cs.connections, 2, "localhost's two requests share one connection");
    client_close(cl);

    snprintf(url, sizeof(url), "wss://localhost:%d/ws", s.port);
    wsrec_t r = wss(url, P("ca.pem"), 0);
    cr_assert_eq(r.opened, 1, "%s", r.reason);
    cr_assert_str_eq(r.text, "hello from squall");
    cr_assert(r.big_ok);
    cr_assert_eq(r.code, 1000);
    run_until(&r.opened, 100, 100); /* the rest of the closes */
    cr_assert_eq(uv_loop_close(&loop), 0);
    sq_server_stats_t st;
    tls_stop(&s, &st);
    cr_assert_eq(st.tls_errors, 0);
    cr_assert_eq(st.tls_handshakes, 3);
}

/* Verification is on by default: an unknown CA, a certificate for another name and an
 * expired one each fail with their own code, the same for fetch and for wss://; the
 * system store alone does not trust the test CA; tls_insecure turns it off. */
/* static: what one server's stop checks for leaks must see the others' as reachable */
static tls_server_t self, other, old, good;

Test(tls, verification_failures_are_clear_errors)
{
    self = tls_start("self", NULL);
    other = tls_start("other", NULL);
    old = tls_start("old", NULL);
    good = tls_start("srv", NULL);
    cr_assert_eq(uv_loop_init(&loop), 0);
    sq_client_t *cl = client_new(P("ca.pem"), 0);
    struct {
        int port;
        const char *host;
        int want;
    } rows[] = {
        {self.port, "localhost", SQ_ECERT},      /* self-signed: an unknown issuer */
        {other.port, "localhost", SQ_ECERTNAME}, /* names other.test */
        {other.port, "127.0.0.1", SQ_ECERTNAME}, /* ... and no address */
        {old.port, "localhost", SQ_ECERT},       /* expired in 2020 */
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        char url[128];
        snprintf(url, sizeof(url), "https://%s:%d/", rows[i].host, rows[i].port);
        got_t g = get(cl, "GET", url, NULL, 0, false);
        cr_expect_eq(g.status, rows[i].want, "%s: %s, not %s", url, sq_err_name(g.status),
                     sq_err_name(rows[i].want));
        snprintf(url, sizeof(url), "wss://%s:%d/ws", rows[i].host, rows[i].port);
        wsrec_t r = wss(url, P("ca.pem"), 0);
        cr_expect_eq(r.opened, 0);
        cr_expect_eq(r.code, SQ_WS_ABNORMAL);
        cr_expect_eq(r.error, rows[i].want, "%s: %s (%s)", url, sq_err_name(r.error), r.reason);
    }
    client_close(cl);
    /* the system's store only: the test CA is nobody's */
    cl = client_new(NULL, 0);
    char url[128];
    snprintf(url, sizeof(url), "https://localhost:%d/", good.port);
    got_t g = get(cl, "GET", url, NULL, 0, false);
    cr_assert_eq(g.status, SQ_ECERT, "%s", sq_err_name(g.status));
    client_close(cl);
    /* switched off, explicitly */
    cl = client_new(NULL, 1);
    snprintf(url, sizeof(url), "https://localhost:%d/", self.port);
    g = get(cl, "GET", url, NULL, 0, false);
    cr_assert_eq(g.status, 0, "%s", sq_err_name(g.status));
    cr_assert_str_eq(g.body, "hello tls");
    client_close(cl);
    snprintf(url, sizeof(url), "wss://localhost:%d/ws", self.port);
    wsrec_t r = wss(url, NULL, 1);
    cr_assert_eq(r.opened, 1, "%s", r.reason);
    cr_assert(r.big_ok);
    /* a CA file that is not there is the constructor's error */
    sq_client_opts_t o;
    sq_client_opts_init(&o);
    o.tls_ca_file = P("nope.pem");
    sq_client_t *none = NULL;
    cr_assert_eq(sq_client_new(&none, &loop, &o), SQ_ETLSCONF);
    sq_ws_opts_t wo;
    sq_ws_opts_init(&wo);
    wo.tls_ca_file = P("nope.pem");
    cr_assert_eq(sq_ws_connect(&loop, url, &wsc_handler, &r, &wo, NULL), SQ_ETLSCONF);
    run_until(&r.opened, 100, 100);
    cr_assert_eq(uv_loop_close(&loop), 0);
    tls_stop(&self, NULL);
    tls_stop(&other, NULL);
    tls_stop(&old, NULL);
    tls_stop(&good, NULL);
}

/* ---- bad input on the TLS port ---- */

/* Waits until the server closes c; what it sends first (an alert) is kept in c->buf. */
static void wait_closed(th_conn_t *c)
{
    uint64_t end = th_now_ms() + 5000;
    while (!c->eof && th_now_ms() < end)
        th_conn_read_some(c, 100);
}

Test(tls, plaintext_http_on_the_tls_port_is_closed)
{
    tls_server_t s = tls_start("srv", NULL);
    th_conn_t c;
    cr_assert_eq(th_conn_open(&c, s.port), 0);
    th_conn_sends(&c, "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    wait_closed(&c);
    cr_assert(c.eof, "the connection is closed");
    cr_assert(c.len == 0 || (unsigned char)c.buf[0] == 0x15, "nothing but an alert");
    th_conn_close(&c);
    char out[512];
    cr_assert_eq(run(out, sizeof(out), "curl -sS --cacert %s https://localhost:%d/",
                     P("ca.pem"), s.port),
                 0, "%s", out);
    cr_assert_str_eq(out, "hello tls");
    sq_server_stats_t st;
    tls_stop(&s, &st);
    cr_assert_eq(st.tls_errors, 1);
    cr_assert_eq(st.tls_handshakes, 1);
}

/* A ClientHello cut short and a client that says nothing wait out the handshake
 * timeout; garbage and an oversized record fail at once. The server goes on. */
Test(tls, truncated_and_garbage_handshakes_close_cleanly)
{
    sq_server_opts_t o;
    sq_server_opts_init(&o);
    o.tls_handshake_timeout_ms = 300;
    tls_server_t s = tls_start("srv", &o);
    /* a record announcing 512 bytes of a ClientHello, and 9 of them */
    static const unsigned char cut[] = {0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00,
                                        0x01, 0xfc, 0x03, 0x03, 0x11, 0x22, 0x33};
    static const unsigned char junk[] = {0x16, 0x03, 0x03, 0x00, 0x08, 0xde, 0xad,
                                         0xbe, 0xef, 0xde, 0xad, 0xbe, 0xef};
    static const unsigned char huge[] = {0x16, 0x03, 0x01, 0xff, 0xff, 0x01};
    static const unsigned char noise[] = "\x80\x01\x02\x03 not TLS at all \r\n\r\n";
    struct {
        const char *name;
        const void *data;
        size_t len;
    } rows[] = {
        {"silent", NULL, 0},
        {"cut", cut, sizeof(cut)},
        {"junk", junk, sizeof(junk)},
        {"huge", huge, sizeof(huge)},
        {"noise", noise, sizeof(noise) - 1},
    };
    th_conn_t c[5];
    for (size_t i = 0; i < 5; i++) {
        cr_assert_eq(th_conn_open(&c[i], s.port), 0);
        if (rows[i].len > 0)
            cr_assert_eq(th_conn_send(&c[i], rows[i].data, rows[i].len), 0);
    }
    for (size_t i = 0; i < 5; i++) {
        wait_closed(&c[i]);
        cr_expect(c[i].eof, "%s: closed", rows[i].name);
        cr_expect(c[i].len == 0 || (unsigned char)c[i].buf[0] == 0x15, "%s: an alert or nothing",
                  rows[i].name);
        th_conn_close(&c[i]);
    }
    char out[512];
    cr_assert_eq(run(out, sizeof(out), "curl -sS --cacert %s https://localhost:%d/",
                     P("ca.pem"), s.port),
                 0, "%s", out);
    cr_assert_str_eq(out, "hello tls");
    sq_server_stats_t st;
    tls_stop(&s, &st);
    cr_assert_eq(st.tls_timeouts, 2, "silent and cut");
    cr_assert_eq(st.tls_errors, 3, "junk, huge, noise");
    cr_assert_eq(st.tls_handshakes, 1);
}

/* ---- SNI ---- */

static sq_tls_ctx_t *other_ctx;
static atomic_int sni_calls, sni_other;

static sq_tls_ctx_t *pick(sq_server_t *srv, const char *name, void *data)
{
    atomic_fetch_add(&sni_calls, 1);
    if (strcmp(name, "other.test") != 0)
        return NULL;
    atomic_fetch_add(&sni_other, 1);
    return other_ctx;
}

Test(tls, sni_callback_chooses_the_context)
{
    cr_assert_eq(sq_tls_ctx_server(&other_ctx, P("other.pem"), P("other.key")), 0);
    sq_server_opts_t o;
    sq_server_opts_init(&o);
    o.tls_sni = pick;
    tls_server_t s = tls_start("srv", &o);
    char out[2048];
    int rc = run(out, sizeof(out),
                 "curl -sS --cacert %s --resolve other.test:%d:127.0.0.1 https://other.test:%d/",
                 P("ca.pem"), s.port, s.port);
    cr_assert_eq(rc, 0, "%s", out);
    cr_assert_str_eq(out, "hello tls");
    rc = run(out, sizeof(out), "curl -sS --cacert %s https://localhost:%d/", P("ca.pem"),
             s.port);
    cr_assert_eq(rc, 0, "%s", out);
    cr_assert_str_eq(out, "hello tls");
    tls_stop(&s, NULL);
    sq_tls_ctx_free(other_ctx);
    cr_assert_eq(atomic_load(&sni_calls), 2);
    cr_assert_eq(atomic_load(&sni_other), 1);
}

/* ---- contexts ---- */

Test(tls, context_errors_name_the_problem)
{
    sq_tls_ctx_t *ctx = NULL;
    cr_assert_eq(sq_tls_ctx_server(&ctx, P("nope.pem"), P("srv.key")), UV_ENOENT);
    cr_assert_eq(sq_tls_ctx_server(&ctx, P("srv.pem"), P("nope.key")), UV_ENOENT);
    cr_assert_eq(sq_tls_ctx_server(&ctx, P("srv.key"), P("srv.key")), SQ_ETLSCONF);
    cr_assert_eq(sq_tls_ctx_server(&ctx, P("srv.pem"), P("other.key")), SQ_ETLSCONF);
    cr_assert_eq(sq_tls_ctx_server(&ctx, P("srv.pem"), P("srv.csr")), SQ_ETLSCONF);
    cr_assert_null(ctx);
    cr_assert_eq(sq_tls_ctx_server(&ctx, P("srv.pem"), P("srv.key")), 0);
    cr_assert_not_null(sq_tls_ctx_ssl_ctx(ctx));
    sq_tls_ctx_free(ctx);
}

/* ---- hello ---- */

Test(tls, hello_serves_https_and_wss_with_tls_flags)
{
    th_hello_run_t r;
    th_hello_run(&r, 5000, "--port", "0", "--tls-cert", P("nope.pem"), "--tls-key",
                 P("srv.key"), NULL);
    cr_assert_eq(r.code, 1, "%s", r.err);
    cr_assert_eq(th_count_lines(r.err), 1, "%s", r.err);
    cr_assert(strstr(r.err, "no such file") != NULL, "%s", r.err);
    th_hello_run(&r, 5000, "--port", "0", "--tls-cert", P("srv.pem"), "--tls-key",
                 P("other.key"), NULL);
    cr_assert_eq(r.code, 1, "%s", r.err);
    cr_assert_eq(th_count_lines(r.err), 1, "%s", r.err);
    cr_assert(strstr(r.err, "TLS certificate or key unusable") != NULL, "%s", r.err);
    th_hello_run(&r, 5000, "--port", "0", "--tls-cert", P("srv.pem"), NULL);
    cr_assert_eq(r.code, 2, "%s", r.err);

    th_hello_t h = th_hello_start("--tls-cert", P("srv.pem"), "--tls-key", P("srv.key"), NULL);
    cr_assert(strstr(h.line, "https://") != NULL, "%s", h.line);
    char out[2048];
    int rc = run(out, sizeof(out), "curl -sS --cacert %s https://localhost:%d/", P("ca.pem"),
                 h.port);
    cr_assert_eq(rc, 0, "%s", out);
    cr_assert_str_eq(out, "{\"Hello\":\"World\"}");
    write_file(P("hws.py"),
               "import asyncio, ssl, sys, websockets\n"
               "async def main():\n"
               "    ctx = ssl.create_default_context(cafile=sys.argv[1])\n"
               "    async with websockets.connect('wss://localhost:%s/ws/echo' % sys.argv[2],\n"
               "                                  ssl=ctx) as ws:\n"
               "        await ws.send('hi hello')\n"
               "        print(await ws.recv())\n"
               "asyncio.run(asyncio.wait_for(main(), 20))\n");
    rc = run(out, sizeof(out), "/usr/bin/python3 %s %s %d", P("hws.py"), P("ca.pem"), h.port);
    cr_assert_eq(rc, 0, "%s", out);
    cr_assert_str_eq(out, "hi hello\n");
    th_hello_stop(&h);
}

/* ---- memory held by idle connections ---- */

static const char py_idle[] =
    "import os, socket, ssl, sys, time\n"
    "ctx = ssl.create_default_context(cafile=sys.argv[1])\n"
    "ss = []\n"
    "for i in range(8):\n"
    "    s = ctx.wrap_socket(socket.create_connection(('127.0.0.1', int(sys.argv[2]))),\n"
    "                        server_hostname='localhost')\n"
    "    s.settimeout(20)\n"
    "    s.sendall(b'GET /big HTTP/1.1\\r\\nHost: t\\r\\n\\r\\n')\n"
    "    time.sleep(0.2)  # the socket fills: the rest of the body is encrypted at once\n"
    "    buf, want = b'', None\n"
    "    while want is None or len(buf) < want:\n"
    "        d = s.recv(1 << 20)\n"
    "        if not d:\n"
    "            sys.exit(1)\n"
    "        buf += d\n"
    "        if want is None and b'\\r\\n\\r\\n' in buf:\n"
    "            want = buf.index(b'\\r\\n\\r\\n') + 4 + int(sys.argv[4])\n"
    "    ss.append(s)\n"
    "print('idle', flush=True)\n"
    "end = time.time() + 20\n"
    "while not os.path.exists(sys.argv[3]) and time.time() < end:\n"
    "    time.sleep(0.02)\n";

static size_t heap_in_use(void)
{
    struct mallinfo2 mi = mallinfo2();
    return mi.uordblks + mi.hblkhd;
}

/* A keep-alive connection that was sent a big body keeps no buffer of its size once the
 * body has left: eight idle connections hold what eight idle connections hold. */
Test(tls, an_idle_connection_keeps_no_buffer_of_its_last_big_response)
{
    tls_server_t s = tls_start("srv", NULL);
    write_file(P("idle.py"), py_idle);
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "timeout 30 /usr/bin/python3 %s %s %d %s %u", P("idle.py"),
             P("ca.pem"), s.port, P("idle.go"), BIG);
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p);
    char line[64] = "";
    cr_assert_not_null(fgets(line, sizeof(line), p));
    cr_assert_str_eq(line, "idle\n");
    size_t held = heap_in_use();
    write_file(P("idle.go"), "");
    cr_assert_eq(pclose(p), 0);
    tls_stop(&s, NULL);
    size_t after = heap_in_use();
    free(big_body);
    big_body = NULL;
    if (held == 0)
        cr_skip_test("mallinfo2 counts nothing here (a sanitizer's allocator)");
    cr_log_info("eight idle TLS connections held %zu KiB", (held - after) / 1024);
    cr_expect_lt(held - after, (size_t)4 << 20, "eight idle connections held %zu KiB",
                 (held - after) / 1024);
}

/* Where the features meet: hello with TLS, --static, --gzip and --ws-deflate at once. A
 * file under /static/ goes through the read path (never sendfile on a TLS socket, which
 * would send it unencrypted) and arrives whole; a .html asked for with gzip comes as the
 * file, with its own length; Python's websockets over wss agrees on permessage-deflate
 * and echoes a big compressible message. */
Test(tls, hello_serves_static_files_and_compressed_wss_over_tls, .timeout = 90)
{
    char www[PATH_MAX], out[4096];
    snprintf(www, sizeof(www), "%s", P("www"));
    cr_assert_eq(mkdir(www, 0755), 0);
    int rc = run(out, sizeof(out), "head -c 3000000 /dev/urandom > %s/big.bin && "
                 "printf '<html>%%02000d</html>' 0 > %s/page.html", www, www);
    cr_assert_eq(rc, 0, "%s", out);
    th_hello_t h = th_hello_start("--tls-cert", P("srv.pem"), "--tls-key", P("srv.key"),
                                  "--static", www, "--gzip", "--ws-deflate", NULL);
    rc = run(out, sizeof(out),
             "curl -sS --cacert %s -o %s https://localhost:%d/static/big.bin && "
             "cmp %s %s/big.bin && echo same",
             P("ca.pem"), P("got.bin"), h.port, P("got.bin"), www);
    cr_assert_eq(rc, 0, "%s", out);
    cr_assert_str_eq(out, "same\n");
    rc = run(out, sizeof(out),
             "curl -sS -D - -o /dev/null -H 'Accept-Encoding: gzip' --cacert %s "
             "https://localhost:%d/static/page.html | tr -d '\\r' | "
             "grep -i -E '^(content-length|content-encoding):' | sort",
             P("ca.pem"), h.port);
    cr_assert_eq(rc, 0, "%s", out);
    cr_assert_str_eq(out, "Content-Length: 2013\n", "%s", out);
    write_file(P("zws.py"),
               "import asyncio, ssl, sys, websockets\n"
               "async def main():\n"
               "    ctx = ssl.create_default_context(cafile=sys.argv[1])\n"
               "    async with websockets.connect('wss://localhost:%s/ws/echo' % sys.argv[2],\n"
               "                                  ssl=ctx, max_size=None) as ws:\n"
               "        ext = ws.response_headers.get('Sec-WebSocket-Extensions', '')\n"
               "        msg = 'squall ' * 150000\n"
               "        await ws.send(msg)\n"
               "        back = await ws.recv()\n"
               "        print(ext.split(';')[0], back == msg)\n"
               "asyncio.run(asyncio.wait_for(main(), 30))\n");
    rc = run(out, sizeof(out), "/usr/bin/python3 %s %s %d", P("zws.py"), P("ca.pem"), h.port);
    cr_assert_eq(rc, 0, "%s", out);
    cr_assert_str_eq(out, "permessage-deflate True\n");
    th_hello_stop(&h);
}
