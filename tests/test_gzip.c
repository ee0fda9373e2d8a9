/* gzip responses (include/squall/gzip.h, lib/http/gzip.c): what is compressed and what
 * is not, Accept-Encoding as RFC 9110 §12.5.3 reads it, HEAD, streamed bodies flushed per
 * write, and real peers (curl --compressed, Python's gzip) decoding large bodies. */
#include <criterion/criterion.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <squall.h>
#include <zlib.h>

#include "support/harness.h"

/* ---- the app ---- */

#define BIG_LINES 200000 /* about 7 MB of text */

/* Line i of the big body; Python's peer script makes the same. */
static size_t big_line(char *buf, size_t i)
{
    return (size_t)sprintf(buf, "line %zu: the quick brown fox jumps over the lazy dog\n", i);
}

static char *make_big(size_t lines, size_t *len)
{
    size_t cap = lines * 64 + 1, n = 0;
    char *b = malloc(cap);
    for (size_t i = 0; i < lines; i++)
        n += big_line(b + n, i);
    *len = n;
    return b;
}

static char *s_big;
static size_t s_big_len;
static char s_text[4096]; /* 4 KiB of compressible text */

static void text_get(sq_req_t *req, sq_res_t *res, void *data)
{
    sq_res_send(res, 200, (const char *)data, s_text, sizeof(s_text));
}
static void small_get(sq_req_t *req, sq_res_t *res, void *data)
{
    sq_res_send(res, 200, "text/plain", "short", 5);
}
static void big_get(sq_req_t *req, sq_res_t *res, void *data)
{
    sq_res_send_ref(res, 200, "text/plain; charset=utf-8", s_big, s_big_len, NULL, NULL);
}
static void json_get(sq_req_t *req, sq_res_t *res, void *data)
{
    json_t *a = json_array();
    for (int i = 0; i < 200; i++)
        json_array_append_new(a, json_pack("{s:i,s:s}", "id", i, "name", "an item"));
    sq_res_send_json_new(res, 200, a);
}
static void encoded_get(sq_req_t *req, sq_res_t *res, void *data)
{
    sq_res_header(res, "Content-Encoding", "br");
    sq_res_send(res, 200, "text/plain", s_text, sizeof(s_text));
}
static void range_get(sq_req_t *req, sq_res_t *res, void *data)
{
    sq_res_header(res, "Content-Range", "bytes 0-4095/10000");
    sq_res_send(res, 206, "text/plain", s_text, sizeof(s_text));
}
static void status_get(sq_req_t *req, sq_res_t *res, void *data)
{
    sq_res_send(res, (int)(intptr_t)data, "text/plain", s_text, sizeof(s_text));
}

/* A stream: "part one" at once, "part two" 300 ms later, then the end. */
typedef struct {
    uv_timer_t t;
    sq_res_t *res;
} later_t;
static void later_close(uv_handle_t *h)
{
    free(h);
}
static void later_fire(uv_timer_t *t)
{
    later_t *l = (later_t *)t;
    sq_res_write(l->res, "part two\n", 9, NULL, NULL);
    sq_res_end(l->res);
    uv_close((uv_handle_t *)t, later_close);
}
static void stream_get(sq_req_t *req, sq_res_t *res, void *data)
{
    if (sq_res_start(res, 200, "text/event-stream") != 0) {
        sq_res_end(res);
        return;
    }
    sq_res_write(res, "part one\n", 9, NULL, NULL);
    later_t *l = malloc(sizeof(*l));
    l->res = res;
    uv_timer_init(sq_req_loop(req), &l->t);
    uv_timer_start(&l->t, later_fire, 300, 0);
}
/* A large stream: the big body in 64 KiB writes. */
static void bigstream_get(sq_req_t *req, sq_res_t *res, void *data)
{
    if (sq_res_start(res, 200, "text/plain") != 0) {
        sq_res_end(res);
        return;
    }
    for (size_t off = 0; off < s_big_len; off += 65536) {
        size_t n = s_big_len - off < 65536 ? s_big_len - off : 65536;
        sq_res_write_ref(res, s_big + off, n, NULL, NULL, NULL, NULL);
    }
    sq_res_end(res);
}

static const sq_handler_t text_h = {.get = text_get};
static const sq_handler_t small_h = {.get = small_get};
static const sq_handler_t big_h = {.get = big_get};
static const sq_handler_t json_h = {.get = json_get};
static const sq_handler_t encoded_h = {.get = encoded_get};
static const sq_handler_t range_h = {.get = range_get};
static const sq_handler_t status_h = {.get = status_get};
static const sq_handler_t stream_h = {.get = stream_get};
static const sq_handler_t bigstream_h = {.get = bigstream_get};

static sq_app_t *make_app(bool gzip)
{
    for (size_t i = 0; i < sizeof(s_text); i++)
        s_text[i] = "abcdefgh ij\n"[i % 12];
    if (s_big == NULL)
        s_big = make_big(BIG_LINES, &s_big_len);
    sq_app_t *app;
    cr_assert_eq(sq_app_create(&app), 0);
    sq_app_route(app, "/text", &text_h, (void *)"text/plain");
    sq_app_route(app, "/html", &text_h, (void *)"text/html; charset=utf-8");
    sq_app_route(app, "/svg", &text_h, (void *)"image/svg+xml");
    sq_app_route(app, "/ld", &text_h, (void *)"application/ld+json");
    sq_app_route(app, "/png", &text_h, (void *)"image/png");
    sq_app_route(app, "/octet", &text_h, (void *)"application/octet-stream");
    sq_app_route(app, "/small", &small_h, NULL);
    sq_app_route(app, "/big", &big_h, NULL);
    sq_app_route(app, "/json", &json_h, NULL);
    sq_app_route(app, "/encoded", &encoded_h, NULL);
    sq_app_route(app, "/range", &range_h, NULL);
    sq_app_route(app, "/204", &status_h, (void *)204);
    sq_app_route(app, "/304", &status_h, (void *)304);
    sq_app_route(app, "/stream", &stream_h, NULL);
    sq_app_route(app, "/bigstream", &bigstream_h, NULL);
    if (gzip) {
        sq_gzip_opts_t o;
        sq_gzip_opts_init(&o);
        cr_assert_eq(sq_app_gzip(app, &o), 0);
    }
    return app;
}

/* ---- helpers ---- */

/* GET (or HEAD) `path` with extra header lines `hdrs` ("" or "Name: v\r\n..."). */
static void get(int port, const char *method, const char *path, const char *hdrs, th_res_t *r)
{
    char req[1024];
    snprintf(req, sizeof(req), "%s %s HTTP/1.1\r\nHost: t\r\n%s\r\n", method, path, hdrs);
    th_conn_t c;
    cr_assert_eq(th_conn_open(&c, port), 0);
    cr_assert_eq(th_conn_sends(&c, req), 0);
    cr_assert_eq(th_conn_read_res(&c, r, 10000, method[0] == 'H'), 0, "%s %s", method, path);
    th_conn_close(&c);
}

/* gunzips in into a malloc'd buffer; returns its length, or -1 for a bad stream. */
static ssize_t gunzip(const void *in, size_t len, char **out)
{
    z_stream z = {0};
    cr_assert_eq(inflateInit2(&z, 15 + 16), Z_OK);
    size_t cap = len * 4 + 1024, n = 0;
    *out = malloc(cap);
    z.next_in = (Bytef *)in;
    z.avail_in = (uInt)len;
    int rc;
    do {
        if (n == cap)
            *out = realloc(*out, cap *= 2);
        z.next_out = (Bytef *)*out + n;
        z.avail_out = (uInt)(cap - n);
        rc = inflate(&z, Z_NO_FLUSH);
        n = cap - z.avail_out;
    } while (rc == Z_OK);
    inflateEnd(&z);
    return rc == Z_STREAM_END ? (ssize_t)n : -1;
}

static bool is_gzip(const th_res_t *r)
{
    const char *ce = th_res_header(r, "Content-Encoding");
    return ce != NULL && strcmp(ce, "gzip") == 0;
}

/* ---- tests ---- */

Test(gzip, a_compressible_body_is_gzipped_with_the_right_length_and_vary, .timeout = 30)
{
    sq_app_t *app = make_app(true);
    th_server_t *ts = th_server_start(app, NULL);
    int port = th_server_port(ts);
    static const char *const paths[] = {"/text", "/html", "/svg", "/ld", "/json", NULL};
    for (size_t i = 0; paths[i] != NULL; i++) {
        th_res_t r;
        get(port, "GET", paths[i], "Accept-Encoding: gzip, deflate, br\r\n", &r);
        cr_expect_eq(r.status, 200);
        cr_expect(is_gzip(&r), "%s: %s", paths[i], r.head);
        const char *vary = th_res_header(&r, "Vary");
        cr_expect(vary != NULL && strcmp(vary, "Accept-Encoding") == 0, "%s", paths[i]);
        const char *cl = th_res_header(&r, "Content-Length");
        cr_expect(cl != NULL && (size_t)atol(cl) == r.body_len, "%s", paths[i]);
        char *plain;
        ssize_t n = gunzip(r.body, r.body_len, &plain);
        cr_expect(n > 0, "%s", paths[i]);
        if (strcmp(paths[i], "/json") != 0) {
            cr_expect_eq((size_t)n, sizeof(s_text), "%s", paths[i]);
            cr_expect(n == sizeof(s_text) && memcmp(plain, s_text, (size_t)n) == 0);
            cr_expect_lt(r.body_len, sizeof(s_text) / 4);
        } else {
            cr_expect(n > 2 && plain[0] == '[', "json");
        }
        free(plain);
        th_res_free(&r);
    }
    th_server_stop(ts, 1000);
    sq_app_destroy(app);
}

Test(gzip, what_is_not_compressed_keeps_its_body, .timeout = 30)
{
    sq_app_t *app = make_app(true);
    th_server_t *ts = th_server_start(app, NULL);
    int port = th_server_port(ts);
    static const struct {
        const char *path;
        int status;
        bool vary;
    } rows[] = {
        {"/small", 200, true},  /* under min_bytes: varies all the same */
        {"/png", 200, false},   /* not a compressible type */
        {"/octet", 200, false},
        {"/encoded", 200, false}, /* the handler encoded it */
        {"/range", 206, false},   /* a Range answer */
        {"/204", 204, false},
        {"/304", 304, false},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        th_res_t r;
        get(port, "GET", rows[i].path, "Accept-Encoding: gzip\r\n", &r);
        TH_ROW_CHECK(rows[i].path, r.status == rows[i].status, "status %d", r.status);
        const char *ce = th_res_header(&r, "Content-Encoding");
        TH_ROW_CHECK(rows[i].path, ce == NULL || strcmp(ce, "br") == 0, "encoded: %s", ce);
        TH_ROW_CHECK(rows[i].path, (th_res_header(&r, "Vary") != NULL) == rows[i].vary,
                     "vary: %s", r.head);
        if (rows[i].status == 200 && strcmp(rows[i].path, "/small") != 0)
            TH_ROW_CHECK(rows[i].path,
                         r.body_len == sizeof(s_text) && memcmp(r.body, s_text, r.body_len) == 0,
                         "body changed (%zu bytes)", r.body_len);
    out:
        th_res_free(&r);
    }
    th_server_stop(ts, 1000);
    sq_app_destroy(app);
}

/* RFC 9110 §12.5.3: codings with weights; q=0 refuses; `*` stands for codings not named;
 * identity is acceptable unless refused; no header (or an empty one): identity. */
Test(gzip, accept_encoding_is_read_with_q_values, .timeout = 30)
{
    sq_app_t *app = make_app(true);
    th_server_t *ts = th_server_start(app, NULL);
    int port = th_server_port(ts);
    static const struct {
        const char *hdrs;
        bool gz;
    } rows[] = {
        {"", false},
        {"Accept-Encoding: \r\n", false},
        {"Accept-Encoding: gzip\r\n", true},
        {"Accept-Encoding: GZIP\r\n", true},
        {"Accept-Encoding: x-gzip\r\n", true},
        {"Accept-Encoding: identity\r\n", false},
        {"Accept-Encoding: br, deflate\r\n", false},
        {"Accept-Encoding: gzip;q=0\r\n", false},
        {"Accept-Encoding: gzip; q=0.000\r\n", false},
        {"Accept-Encoding: gzip;q=0.5\r\n", true},
        {"Accept-Encoding: gzip;Q=1.0\r\n", true},
        {"Accept-Encoding: gzip;q=0.5, identity;q=0.9\r\n", false}, /* prefers identity */
        {"Accept-Encoding: identity;q=0.1, gzip;q=0.9\r\n", true},
        {"Accept-Encoding: *\r\n", true},
        {"Accept-Encoding: *;q=0\r\n", false},
        {"Accept-Encoding: *, gzip;q=0\r\n", false},
        {"Accept-Encoding: gzip;q=2\r\n", false}, /* not a qvalue: refused */
        {"Accept-Encoding: gzip;q=abc\r\n", false},
        {"Accept-Encoding: br\r\nAccept-Encoding: gzip\r\n", true}, /* one list */
        {"Accept-Encoding: ,, gzip ,\r\n", true},
        {"Accept-Encoding: gzipx\r\n", false},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        th_res_t r;
        get(port, "GET", "/text", rows[i].hdrs, &r);
        TH_ROW_CHECK(rows[i].hdrs, r.status == 200, "status %d", r.status);
        TH_ROW_CHECK(rows[i].hdrs, is_gzip(&r) == rows[i].gz, "gzip %d: %s", is_gzip(&r),
                     r.head);
        TH_ROW_CHECK(rows[i].hdrs, th_res_header(&r, "Vary") != NULL, "no Vary");
    out:
        th_res_free(&r);
    }
    /* identity refused: compressed below min_bytes too */
    th_res_t r;
    get(port, "GET", "/small", "Accept-Encoding: gzip, identity;q=0\r\n", &r);
    cr_expect(is_gzip(&r), "%s", r.head);
    char *plain;
    cr_expect_eq(gunzip(r.body, r.body_len, &plain), 5);
    free(plain);
    th_res_free(&r);
    th_server_stop(ts, 1000);
    sq_app_destroy(app);
}

Test(gzip, head_gets_the_headers_get_would, .timeout = 30)
{
    sq_app_t *app = make_app(true);
    th_server_t *ts = th_server_start(app, NULL);
    int port = th_server_port(ts);
    th_res_t g, h;
    get(port, "GET", "/text", "Accept-Encoding: gzip\r\n", &g);
    get(port, "HEAD", "/text", "Accept-Encoding: gzip\r\n", &h);
    cr_assert(is_gzip(&g) && is_gzip(&h), "%s", h.head);
    char gl[32];
    snprintf(gl, sizeof(gl), "%s", th_res_header(&g, "Content-Length"));
    cr_expect_str_eq(th_res_header(&h, "Content-Length"), gl);
    cr_expect_eq(h.body_len, 0);
    th_res_free(&g);
    th_res_free(&h);
    /* a streamed HEAD: the encoding named, no body */
    get(port, "HEAD", "/stream", "Accept-Encoding: gzip\r\n", &h);
    cr_expect(is_gzip(&h), "%s", h.head);
    cr_expect_eq(h.body_len, 0);
    th_res_free(&h);
    th_server_stop(ts, 1000);
    sq_app_destroy(app);
}

Test(gzip, an_app_without_gzip_sends_bodies_as_they_are, .timeout = 30)
{
    sq_app_t *app = make_app(false);
    th_server_t *ts = th_server_start(app, NULL);
    th_res_t r;
    get(th_server_port(ts), "GET", "/text", "Accept-Encoding: gzip\r\n", &r);
    cr_expect_null(th_res_header(&r, "Content-Encoding"));
    cr_expect_null(th_res_header(&r, "Vary"));
    cr_expect_eq(r.body_len, sizeof(s_text));
    th_res_free(&r);
    th_server_stop(ts, 1000);
    sq_app_destroy(app);
}

Test(gzip, options_are_checked)
{
    sq_app_t *app;
    cr_assert_eq(sq_app_create(&app), 0);
    sq_gzip_opts_t o;
    sq_gzip_opts_init(&o);
    cr_expect_eq(o.min_bytes, 1024);
    cr_expect_eq(o.level, 6);
    o.level = 10;
    cr_expect_eq(sq_app_gzip(app, &o), UV_EINVAL);
    o.level = 1;
    static const char *const bad[] = {"text", NULL};
    o.types = bad;
    cr_expect_eq(sq_app_gzip(app, &o), UV_EINVAL);
    static const char *const bad2[] = {"text/pl ain", NULL};
    o.types = bad2;
    cr_expect_eq(sq_app_gzip(app, &o), UV_EINVAL);
    cr_expect_eq(sq_app_gzip(NULL, NULL), UV_EINVAL);
    static const char *const good[] = {"Application/Octet-Stream", NULL};
    o.types = good;
    cr_expect_eq(sq_app_gzip(app, &o), 0);
    sq_app_destroy(app);
}

/* Each write is flushed: the first part can be decoded before the stream ends. */
Test(gzip, a_stream_is_flushed_at_each_write_and_ends_with_the_trailer, .timeout = 30)
{
    sq_app_t *app = make_app(true);
    th_server_t *ts = th_server_start(app, NULL);
    th_conn_t c;
    cr_assert_eq(th_conn_open(&c, th_server_port(ts)), 0);
    th_conn_sends(&c, "GET /stream HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip\r\n\r\n");
    /* the head and the first chunk, well before the second part's 300 ms */
    uint64_t deadline = th_now_ms() + 5000;
    char *body = NULL;
    while (th_now_ms() < deadline) {
        th_conn_read_some(&c, 100);
        char *end = c.buf ? memmem(c.buf, c.len, "\r\n\r\n", 4) : NULL;
        if (end != NULL && (size_t)(end + 4 - c.buf) < c.len) {
            body = end + 4;
            char *eol = memmem(body, c.len - (size_t)(body - c.buf), "\r\n", 2);
            if (eol != NULL) {
                size_t n = strtoul(body, NULL, 16);
                if ((size_t)(eol + 2 - c.buf) + n + 2 <= c.len) {
                    body = eol + 2;
                    /* inflate the first chunk alone */
                    z_stream z = {0};
                    inflateInit2(&z, 15 + 16);
                    char out[64] = {0};
                    z.next_in = (Bytef *)body;
                    z.avail_in = (uInt)n;
                    z.next_out = (Bytef *)out;
                    z.avail_out = sizeof(out) - 1;
                    int rc = inflate(&z, Z_SYNC_FLUSH);
                    inflateEnd(&z);
                    cr_expect(rc == Z_OK, "inflate %d", rc);
                    cr_expect_str_eq(out, "part one\n");
                    break;
                }
            }
        }
    }
    cr_assert_not_null(body, "no first chunk: %.*s", (int)c.len, c.buf);
    cr_assert(memmem(c.buf, c.len, "Content-Encoding: gzip\r\n", 24) != NULL);
    th_conn_close(&c);
    /* the whole stream decodes to both parts */
    th_res_t r;
    get(th_server_port(ts), "GET", "/stream", "Accept-Encoding: gzip\r\n", &r);
    cr_expect(r.chunked && is_gzip(&r));
    char *plain;
    ssize_t n = gunzip(r.body, r.body_len, &plain);
    cr_expect_eq(n, 18);
    cr_expect(n == 18 && memcmp(plain, "part one\npart two\n", 18) == 0);
    free(plain);
    th_res_free(&r);
    /* without Accept-Encoding: plain chunks */
    get(th_server_port(ts), "GET", "/stream", "", &r);
    cr_expect(!is_gzip(&r));
    cr_expect(r.body_len == 18 && memcmp(r.body, "part one\npart two\n", 18) == 0);
    th_res_free(&r);
    th_server_stop(ts, 1000);
    sq_app_destroy(app);
}

/* ---- real peers ---- */

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

Test(gzip, curl_compressed_decodes_large_and_streamed_bodies, .timeout = 60)
{
    if (access("/usr/bin/curl", X_OK) != 0)
        cr_skip_test("no /usr/bin/curl");
    sq_app_t *app = make_app(true);
    th_server_t *ts = th_server_start(app, NULL);
    int port = th_server_port(ts);
    char want[] = "/tmp/sq-gzip-want-XXXXXX";
    int fd = mkstemp(want);
    cr_assert_geq(fd, 0);
    cr_assert_eq(write(fd, s_big, s_big_len), (ssize_t)s_big_len);
    close(fd);
    static const char *const paths[] = {"/big", "/bigstream"};
    for (size_t i = 0; i < 2; i++) {
        /* the bytes on the wire are gzip, smaller, and decode to the body */
        cr_expect_eq(sh("curl -s --http1.1 --max-time 20 --compressed -D /tmp/sq-gzip-h.%d "
                        "http://127.0.0.1:%d%s | cmp -s - %s",
                        port, port, paths[i], want),
                     0, "%s", paths[i]);
        cr_expect_eq(sh("grep -qi '^content-encoding: gzip' /tmp/sq-gzip-h.%d", port), 0, "%s",
                     paths[i]);
        cr_expect_eq(sh("test $(curl -s --http1.1 --max-time 20 -H 'Accept-Encoding: gzip' "
                        "http://127.0.0.1:%d%s | wc -c) -lt %zu",
                        port, paths[i], s_big_len / 5),
                     0, "%s", paths[i]);
    }
    sh("rm -f /tmp/sq-gzip-h.%d", port);
    unlink(want);
    th_server_stop(ts, 1000);
    sq_app_destroy(app);
}

static const char py_peer[] =
    "import gzip, http.client, sys\n"
    "port = int(sys.argv[1])\n"
    "want = b''.join(b'line %d: the quick brown fox jumps over the lazy dog\\n' % i\n"
    "                for i in range(int(sys.argv[2])))\n"
    "for path in ('/big', '/bigstream'):\n"
    "    c = http.client.HTTPConnection('127.0.0.1', port, timeout=20)\n"
    "    c.request('GET', path, headers={'Accept-Encoding': 'gzip'})\n"
    "    r = c.getresponse()\n"
    "    body = r.read()\n"
    "    assert r.status == 200, r.status\n"
    "    assert r.getheader('Content-Encoding') == 'gzip', path\n"
    "    assert r.getheader('Vary') == 'Accept-Encoding', path\n"
    "    if path == '/big':\n"
    "        assert int(r.getheader('Content-Length')) == len(body)\n"
    "    assert gzip.decompress(body) == want, path\n"
    "    assert len(body) < len(want) // 5\n"
    "    c.close()\n"
    "print('ok')\n";

Test(gzip, python_gzip_decompresses_large_bodies, .timeout = 60)
{
    if (access("/usr/bin/python3", X_OK) != 0)
        cr_skip_test("no /usr/bin/python3");
    sq_app_t *app = make_app(true);
    th_server_t *ts = th_server_start(app, NULL);
    char script[] = "/tmp/sq-gzip-py-XXXXXX";
    int fd = mkstemp(script);
    cr_assert_geq(fd, 0);
    cr_assert_eq(write(fd, py_peer, sizeof(py_peer) - 1), (ssize_t)sizeof(py_peer) - 1);
    close(fd);
    cr_expect_eq(sh("/usr/bin/python3 %s %d %d > /dev/null", script, th_server_port(ts),
                    BIG_LINES),
                 0);
    unlink(script);
    th_server_stop(ts, 1000);
    sq_app_destroy(app);
}
