/* A folder served under a prefix (include/squall/static.h): the answers (types,
 * validators, 304/412, ranges, HEAD, 405, folders), every way out of the root refused,
 * big and sparse files past 4 GiB, a reader that stops, a file cut short while it is
 * sent; through raw sockets, curl, Python's http.client, the in-memory test client (the
 * read path) and hello --static. Each test makes its own tree under /tmp:
 *
 *     DIR/secret.txt            outside the root: never served
 *     DIR/outside/secret2.txt
 *     DIR/www/a.txt             "hello\n"
 *     DIR/www/sub/index.html
 *     DIR/www/noindex/x.txt
 *     DIR/www/.env, DIR/www/.git/config
 *     DIR/www/out -> ../secret.txt, DIR/www/outdir -> ../outside (links out)
 *     DIR/www/in -> a.txt, DIR/www/absin -> DIR/www/a.txt (links inside: followed)
 *     DIR/www/loop -> loop, DIR/www/fifo (a FIFO)
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <squall/testing.h>

#include "support/app.h"
#include "support/harness.h"

static char dir[64];
static char www[96];
static sq_app_t *app;
static th_server_t *ts;

static void put_file(const char *rel, const void *data, size_t len)
{
    char p[256];
    snprintf(p, sizeof(p), "%s/%s", dir, rel);
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    cr_assert_geq(fd, 0, "%s: %s", p, strerror(errno));
    cr_assert_eq(write(fd, data, len), (ssize_t)len);
    close(fd);
}

static void put_str(const char *rel, const char *s)
{
    put_file(rel, s, strlen(s));
}

static void sub_dir(const char *rel)
{
    char p[256];
    snprintf(p, sizeof(p), "%s/%s", dir, rel);
    cr_assert_eq(mkdir(p, 0755), 0, "%s", p);
}

static void link_to(const char *target, const char *rel)
{
    char p[256];
    snprintf(p, sizeof(p), "%s/%s", dir, rel);
    cr_assert_eq(symlink(target, p), 0, "%s", p);
}

static void make_tree(void)
{
    snprintf(dir, sizeof(dir), "/tmp/squall-static-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    snprintf(www, sizeof(www), "%s/www", dir);
    put_str("secret.txt", "SECRET outside the root\n");
    sub_dir("outside");
    put_str("outside/secret2.txt", "SECRET two\n");
    sub_dir("www");
    put_str("www/a.txt", "hello\n");
    sub_dir("www/sub");
    put_str("www/sub/index.html", "<h1>index</h1>\n");
    sub_dir("www/noindex");
    put_str("www/noindex/x.txt", "x\n");
    put_str("www/.env", "SECRET dotfile\n");
    sub_dir("www/.git");
    put_str("www/.git/config", "SECRET git\n");
    put_str("www/style.CSS", "b{}\n");
    put_str("www/data.unknownext", "?\n");
    link_to("../secret.txt", "www/out");
    link_to("../outside", "www/outdir");
    link_to("a.txt", "www/in.txt");
    char abs[160];
    snprintf(abs, sizeof(abs), "%s/a.txt", www);
    link_to(abs, "www/absin.txt");
    char absout[160];
    snprintf(absout, sizeof(absout), "%s/secret.txt", dir);
    link_to(absout, "www/absout.txt");
    link_to("loop", "www/loop");
    char fifo[160];
    snprintf(fifo, sizeof(fifo), "%s/fifo", www);
    cr_assert_eq(mkfifo(fifo, 0644), 0);
}

static void remove_tree(void)
{
    if (dir[0] != '\0') {
        char cmd[128];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", dir);
    }
}

static void setup(void)
{
    signal(SIGPIPE, SIG_IGN);
    make_tree();
}

static void teardown(void)
{
    if (ts != NULL)
        th_server_stop(ts, 1000);
    ts = NULL;
    if (app != NULL)
        sq_app_destroy(app);
    app = NULL;
    remove_tree();
}

TestSuite(static, .init = setup, .fini = teardown, .timeout = 60);

/* A server on a thread serving www under /static, with opts (NULL: defaults). */
static int serve(const sq_static_opts_t *o)
{
    cr_assert_eq(sq_app_create(&app), 0);
    cr_assert_eq(sq_static_route(app, "/static", www, o), 0);
    ts = th_server_start(app, NULL);
    return th_server_port(ts);
}

/* GET (or `method`) of a raw target, with extra header lines ("Range: bytes=0-1\r\n"). */
static void ask(int port, const char *method, const char *target, const char *extra,
                th_res_t *r)
{
    char req[1024];
    snprintf(req, sizeof(req), "%s %s HTTP/1.1\r\nHost: t\r\n%s\r\n", method, target,
             extra ? extra : "");
    th_conn_t c;
    cr_assert_eq(th_conn_open(&c, port), 0);
    cr_assert_eq(th_conn_sends(&c, req), 0);
    cr_assert_eq(th_conn_read_res(&c, r, 5000, strcmp(method, "HEAD") == 0), 0, "%s %s",
                 method, target);
    th_conn_close(&c);
}

static void expect(int port, const char *target, const char *extra, int status,
                   const char *body)
{
    th_res_t r;
    ask(port, "GET", target, extra, &r);
    cr_assert_eq(r.status, status, "%s: %d\n%s", target, r.status, r.head);
    if (body != NULL)
        cr_assert_str_eq(r.body, body, "%s", target);
    th_res_free(&r);
}

/* ---- answers ---- */

Test(static, a_file_comes_with_its_type_length_and_validators)
{
    int port = serve(NULL);
    th_res_t r;
    ask(port, "GET", "/static/a.txt", NULL, &r);
    cr_assert_eq(r.status, 200);
    cr_assert_str_eq(r.body, "hello\n");
    cr_assert_str_eq(th_res_header(&r, "Content-Type"), "text/plain; charset=utf-8");
    cr_assert_str_eq(th_res_header(&r, "Content-Length"), "6");
    cr_assert_str_eq(th_res_header(&r, "Accept-Ranges"), "bytes");
    cr_assert_not(r.chunked);
    const char *etag = th_res_header(&r, "ETag");
    cr_assert(etag != NULL && etag[0] == '"' && etag[strlen(etag) - 1] == '"', "%s", etag);
    struct stat sb;
    char p[160];
    snprintf(p, sizeof(p), "%s/a.txt", www);
    cr_assert_eq(stat(p, &sb), 0);
    char want[64];
    strftime(want, sizeof(want), "%a, %d %b %Y %H:%M:%S GMT", gmtime(&sb.st_mtime));
    cr_assert_str_eq(th_res_header(&r, "Last-Modified"), want);
    th_res_free(&r);
}

Test(static, types_by_extension_and_the_callers_table)
{
    cr_assert_str_eq(sq_static_type("a.html"), "text/html; charset=utf-8");
    cr_assert_str_eq(sq_static_type("x/y/app.JS"), "text/javascript; charset=utf-8");
    cr_assert_str_eq(sq_static_type("p.png"), "image/png");
    cr_assert_str_eq(sq_static_type("d.json"), "application/json");
    cr_assert_str_eq(sq_static_type("f.woff2"), "font/woff2");
    cr_assert_str_eq(sq_static_type("noext"), "application/octet-stream");
    cr_assert_str_eq(sq_static_type(".profile"), "application/octet-stream");
    cr_assert_str_eq(sq_static_type("dir.d/noext"), "application/octet-stream");
    cr_assert_str_eq(sq_static_type("x.weird"), "application/octet-stream");
    static const char *const types[] = {"unknownext", "text/x-mine", "txt",
                                        "text/plain; charset=latin1", NULL};
    sq_static_opts_t o;
    sq_static_opts_init(&o);
    o.types = types;
    int port = serve(&o);
    th_res_t r;
    ask(port, "GET", "/static/data.unknownext", NULL, &r);
    cr_assert_str_eq(th_res_header(&r, "Content-Type"), "text/x-mine");
    th_res_free(&r);
    ask(port, "GET", "/static/a.txt", NULL, &r);
    cr_assert_str_eq(th_res_header(&r, "Content-Type"), "text/plain; charset=latin1");
    th_res_free(&r);
    ask(port, "GET", "/static/style.CSS", NULL, &r);
    cr_assert_str_eq(th_res_header(&r, "Content-Type"), "text/css; charset=utf-8");
    th_res_free(&r);
}

Test(static, head_gives_the_headers_and_no_body)
{
    int port = serve(NULL);
    th_res_t r;
    ask(port, "HEAD", "/static/a.txt", "Range: bytes=0-1\r\n", &r);
    cr_assert_eq(r.status, 200); /* RFC 9110 §14.2: Range is for GET */
    cr_assert_str_eq(th_res_header(&r, "Content-Length"), "6");
    cr_assert_not_null(th_res_header(&r, "ETag"));
    cr_assert_eq(r.body_len, 0);
    th_res_free(&r);
}

Test(static, other_methods_are_405_with_allow)
{
    int port = serve(NULL);
    static const char *const methods[] = {"POST", "PUT", "DELETE", "PATCH"};
    for (size_t i = 0; i < 4; i++) {
        th_res_t r;
        ask(port, methods[i], "/static/a.txt", "Content-Length: 0\r\n", &r);
        cr_assert_eq(r.status, 405, "%s", methods[i]);
        cr_assert_str_eq(th_res_header(&r, "Allow"), "GET, HEAD");
        th_res_free(&r);
    }
}

Test(static, a_folder_without_its_slash_is_redirected)
{
    int port = serve(NULL);
    th_res_t r;
    ask(port, "GET", "/static/sub?x=1", NULL, &r);
    cr_assert_eq(r.status, 301);
    cr_assert_str_eq(th_res_header(&r, "Location"), "/static/sub/?x=1");
    th_res_free(&r);
    ask(port, "GET", "/static", NULL, &r);
    cr_assert_eq(r.status, 301);
    cr_assert_str_eq(th_res_header(&r, "Location"), "/static/");
    th_res_free(&r);
}

Test(static, a_folder_serves_its_index_or_404)
{
    int port = serve(NULL);
    th_res_t r;
    ask(port, "GET", "/static/sub/", NULL, &r);
    cr_assert_eq(r.status, 200);
    cr_assert_str_eq(r.body, "<h1>index</h1>\n");
    cr_assert_str_eq(th_res_header(&r, "Content-Type"), "text/html; charset=utf-8");
    th_res_free(&r);
    expect(port, "/static/noindex/", NULL, 404, NULL);
    expect(port, "/static/", NULL, 404, NULL); /* the root has no index.html */
    expect(port, "/static/a.txt/", NULL, 404, NULL);
    expect(port, "/static/nope.txt", NULL, 404, NULL);
}

Test(static, no_index_option_makes_every_folder_404)
{
    sq_static_opts_t o;
    sq_static_opts_init(&o);
    o.index = NULL;
    int port = serve(&o);
    expect(port, "/static/sub/", NULL, 404, NULL);
    expect(port, "/static/sub/index.html", NULL, 200, "<h1>index</h1>\n");
}

Test(static, listing_option_lists_a_folder_without_index)
{
    sub_dir("www/list");
    put_str("www/list/b.txt", "b");
    put_str("www/list/a<&>\".txt", "a");
    put_str("www/list/c:d", "c");
    put_str("www/list/.hidden", "h");
    sub_dir("www/list/z");
    link_to("z", "www/list/y");
    sq_static_opts_t o;
    sq_static_opts_init(&o);
    o.listing = 100;
    int port = serve(&o);
    th_res_t r;
    ask(port, "GET", "/static/list/", NULL, &r);
    cr_assert_eq(r.status, 200);
    cr_assert_str_eq(th_res_header(&r, "Content-Type"), "text/html; charset=utf-8");
    cr_assert_str_eq(r.body,
                     "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Index of "
                     "/static/list/</title></head>\n<body><h1>Index of /static/list/</h1>\n"
                     "<ul>\n"
                     "<li><a href=\"a%3C%26%3E%22.txt\">a&lt;&amp;&gt;&quot;.txt</a></li>\n"
                     "<li><a href=\"b.txt\">b.txt</a></li>\n"
                     "<li><a href=\"c%3Ad\">c:d</a></li>\n"
                     "<li><a href=\"y/\">y/</a></li>\n"
                     "<li><a href=\"z/\">z/</a></li>\n"
                     "</ul></body></html>\n");
    th_res_free(&r);
    expect(port, "/static/sub/", NULL, 200, "<h1>index</h1>\n"); /* an index wins */
    expect(port, "/static/list/z/", NULL, 200, NULL);              /* empty, listed */
    expect(port, "/static/list/a%3C%26%3E%22.txt", NULL, 200, "a"); /* the links work */
    expect(port, "/static/list/c%3Ad", NULL, 200, "c");
    expect(port, "/static/list", NULL, 301, NULL);
    expect(port, "/static/out/", NULL, 404, NULL); /* a link out of the root: not listed */
}

Test(static, listing_shows_at_most_its_limit)
{
    sub_dir("www/list");
    put_str("www/list/a", "a");
    put_str("www/list/b", "b");
    put_str("www/list/c", "c");
    sq_static_opts_t o;
    sq_static_opts_init(&o);
    o.listing = 2;
    int port = serve(&o);
    th_res_t r;
    ask(port, "GET", "/static/list/", NULL, &r);
    cr_assert_eq(r.status, 200);
    size_t items = 0;
    for (const char *p = r.body; (p = strstr(p, "<li>")) != NULL; p++)
        items++;
    cr_assert_eq(items, 2);
    th_res_free(&r);
}

Test(static, cache_control_option_is_sent)
{
    sq_static_opts_t o;
    sq_static_opts_init(&o);
    o.cache_control = "public, max-age=60";
    int port = serve(&o);
    th_res_t r;
    ask(port, "GET", "/static/a.txt", NULL, &r);
    cr_assert_str_eq(th_res_header(&r, "Cache-Control"), "public, max-age=60");
    th_res_free(&r);
}

Test(static, answers_on_one_connection_keep_their_order)
{
    int port = serve(NULL);
    th_conn_t c;
    cr_assert_eq(th_conn_open(&c, port), 0);
    cr_assert_eq(th_conn_sends(&c, "GET /static/a.txt HTTP/1.1\r\nHost: t\r\n\r\n"
                                   "GET /static/sub/ HTTP/1.1\r\nHost: t\r\n\r\n"
                                   "GET /static/nope HTTP/1.1\r\nHost: t\r\n\r\n"
                                   "GET /static/a.txt HTTP/1.0\r\n\r\n"),
                 0);
    th_expect_res(&c, 200, "hello\n");
    th_expect_res(&c, 200, "<h1>index</h1>\n");
    th_expect_res(&c, 404, NULL);
    th_expect_res(&c, 200, "hello\n");
    cr_assert_eq(th_conn_wait_closed(&c, 2000), 0); /* HTTP/1.0 without keep-alive */
    th_conn_close(&c);
}

/* ---- no way out of the root: each attempt 404 (or 400), never the file ---- */

static void refused(const char *target)
{
    int port = serve(NULL);
    th_res_t r;
    ask(port, "GET", target, NULL, &r);
    cr_assert(r.status == 404 || r.status == 400, "%s: %d", target, r.status);
    cr_assert_null(strstr(r.raw, "SECRET"), "%s leaked:\n%s", target, r.raw);
    th_res_free(&r);
    th_expect_healthy(port, "/static/a.txt", "hello\n");
}

Test(static, dotdot_segment_is_refused)
{
    refused("/static/../secret.txt");
}
Test(static, dotdot_deeper_is_refused)
{
    refused("/static/sub/../../secret.txt");
}
Test(static, encoded_dotdot_is_refused)
{
    refused("/static/%2e%2e/secret.txt");
}
Test(static, half_encoded_dotdot_is_refused)
{
    refused("/static/.%2E/secret.txt");
}
Test(static, dot_segment_is_refused)
{
    refused("/static/./a.txt");
}
Test(static, encoded_slash_is_refused)
{
    refused("/static/..%2fsecret.txt");
}
Test(static, encoded_slash_inside_the_root_is_refused)
{
    refused("/static/sub%2Findex.html");
}
Test(static, encoded_backslash_is_refused)
{
    refused("/static/..%5csecret.txt");
}
Test(static, backslash_is_refused)
{
    refused("/static/..\\secret.txt");
}
Test(static, encoded_nul_is_refused)
{
    refused("/static/a.txt%00.png");
}
Test(static, absolute_path_is_refused)
{
    char t[200];
    snprintf(t, sizeof(t), "/static/%s/secret.txt", dir); /* "/static//tmp/..." */
    refused(t);
}
Test(static, encoded_absolute_path_is_refused)
{
    refused("/static/%2ftmp/secret.txt");
}
Test(static, symlink_out_of_the_root_is_refused)
{
    refused("/static/out");
}
Test(static, absolute_symlink_out_of_the_root_is_refused)
{
    refused("/static/absout.txt");
}
Test(static, folder_symlink_out_of_the_root_is_refused)
{
    refused("/static/outdir/secret2.txt");
}
Test(static, symlink_loop_is_404)
{
    refused("/static/loop");
}
Test(static, fifo_is_not_served)
{
    refused("/static/fifo"); /* and the open does not wait for a writer */
}
Test(static, dotfile_is_hidden)
{
    refused("/static/.env");
}
Test(static, dot_folder_is_hidden)
{
    refused("/static/.git/config");
}

Test(static, symlinks_inside_the_root_are_followed)
{
    int port = serve(NULL);
    expect(port, "/static/in.txt", NULL, 200, "hello\n");
    expect(port, "/static/absin.txt", NULL, 200, "hello\n"); /* absolute, into the root */
}

Test(static, dotfiles_option_serves_them_but_never_dot_segments)
{
    sq_static_opts_t o;
    sq_static_opts_init(&o);
    o.dotfiles = 1;
    int port = serve(&o);
    expect(port, "/static/.env", NULL, 200, "SECRET dotfile\n");
    expect(port, "/static/.git/config", NULL, 200, "SECRET git\n");
    th_res_t r;
    ask(port, "GET", "/static/../secret.txt", NULL, &r);
    cr_assert_eq(r.status, 404);
    cr_assert_null(strstr(r.raw, "SECRET outside"));
    th_res_free(&r);
}

Test(static, route_arguments_are_checked)
{
    cr_assert_eq(sq_app_create(&app), 0);
    cr_assert_eq(sq_static_route(app, "/s", "/nonexistent/squall", NULL), UV_ENOENT);
    char p[160];
    snprintf(p, sizeof(p), "%s/a.txt", www);
    cr_assert_eq(sq_static_route(app, "/s", p, NULL), UV_ENOTDIR);
    cr_assert_eq(sq_static_route(app, "/s/", www, NULL), UV_EINVAL);
    cr_assert_eq(sq_static_route(app, "s", www, NULL), UV_EINVAL);
    cr_assert_eq(sq_static_route(app, "/{x}", www, NULL), UV_EINVAL);
    cr_assert_eq(sq_static_route(NULL, "/s", www, NULL), UV_EINVAL);
    sq_static_opts_t o;
    sq_static_opts_init(&o);
    o.chunk_bytes = 10;
    cr_assert_eq(sq_static_route(app, "/s", www, &o), UV_EINVAL);
    sq_static_opts_init(&o);
    o.index = "../x";
    cr_assert_eq(sq_static_route(app, "/s", www, &o), UV_EINVAL);
    static const char *const odd[] = {"txt", NULL};
    sq_static_opts_init(&o);
    o.types = odd;
    cr_assert_eq(sq_static_route(app, "/s", www, &o), UV_EINVAL);
    static const char *const split[] = {"txt", "text/plain\r\nX: y", NULL};
    o.types = split;
    cr_assert_eq(sq_static_route(app, "/s", www, &o), UV_EINVAL);
    o.size = 0;
    cr_assert_eq(sq_static_route(app, "/s", www, &o), UV_EINVAL);
    cr_assert_eq(sq_static_route(app, "", www, NULL), 0); /* at the top */
}

/* ---- conditional requests (RFC 9110 §13) ---- */

static void validators(int port, char *etag, size_t elen, char *lm, size_t llen)
{
    th_res_t r;
    ask(port, "GET", "/static/a.txt", NULL, &r);
    snprintf(etag, elen, "%s", th_res_header(&r, "ETag"));
    snprintf(lm, llen, "%s", th_res_header(&r, "Last-Modified"));
    th_res_free(&r);
}

Test(static, if_none_match_gives_304_with_the_validators)
{
    int port = serve(NULL);
    char etag[64], lm[64], h[256];
    validators(port, etag, sizeof(etag), lm, sizeof(lm));
    th_res_t r;
    snprintf(h, sizeof(h), "If-None-Match: %s\r\n", etag);
    ask(port, "GET", "/static/a.txt", h, &r);
    cr_assert_eq(r.status, 304);
    cr_assert_eq(r.body_len, 0);
    cr_assert_null(th_res_header(&r, "Content-Length"));
    cr_assert_str_eq(th_res_header(&r, "ETag"), etag);
    cr_assert_str_eq(th_res_header(&r, "Last-Modified"), lm);
    th_res_free(&r);
    /* a weak comparison (§8.8.3.2): W/ and lists match too; "*" matches any file */
    snprintf(h, sizeof(h), "If-None-Match: \"x\", W/%s\r\n", etag);
    expect(port, "/static/a.txt", h, 304, NULL);
    expect(port, "/static/a.txt", "If-None-Match: *\r\n", 304, NULL);
    expect(port, "/static/a.txt", "If-None-Match: \"other\"\r\n", 200, "hello\n");
}

Test(static, if_modified_since_gives_304_unless_modified)
{
    int port = serve(NULL);
    char etag[64], lm[64], h[256];
    validators(port, etag, sizeof(etag), lm, sizeof(lm));
    snprintf(h, sizeof(h), "If-Modified-Since: %s\r\n", lm);
    expect(port, "/static/a.txt", h, 304, NULL);
    expect(port, "/static/a.txt", "If-Modified-Since: Sat, 01 Jan 2000 00:00:00 GMT\r\n", 200,
           "hello\n");
    /* the two obsolete forms of §5.6.7 are read too */
    expect(port, "/static/a.txt", "If-Modified-Since: Fri, 01 Jan 2100 00:00:00 GMT\r\n", 304,
           NULL);
    expect(port, "/static/a.txt", "If-Modified-Since: Sun Jan  1 00:00:00 2090\r\n", 304, NULL);
    expect(port, "/static/a.txt", "If-Modified-Since: Saturday, 01-Jan-00 00:00:00 GMT\r\n",
           200, "hello\n");
    /* §13.1.3: an invalid date is ignored */
    expect(port, "/static/a.txt", "If-Modified-Since: yesterday\r\n", 200, "hello\n");
}

Test(static, if_none_match_takes_precedence_over_if_modified_since)
{
    int port = serve(NULL);
    char etag[64], lm[64], h[256];
    validators(port, etag, sizeof(etag), lm, sizeof(lm));
    /* §13.2.2 step 3: If-None-Match decides; the later date is not looked at */
    snprintf(h, sizeof(h), "If-None-Match: \"other\"\r\nIf-Modified-Since: %s\r\n", lm);
    expect(port, "/static/a.txt", h, 200, "hello\n");
}

Test(static, if_match_and_if_unmodified_since_give_412)
{
    int port = serve(NULL);
    char etag[64], lm[64], h[256];
    validators(port, etag, sizeof(etag), lm, sizeof(lm));
    expect(port, "/static/a.txt", "If-Match: \"other\"\r\n", 412, NULL);
    snprintf(h, sizeof(h), "If-Match: W/%s\r\n", etag); /* strong comparison */
    expect(port, "/static/a.txt", h, 412, NULL);
    snprintf(h, sizeof(h), "If-Match: %s\r\n", etag);
    expect(port, "/static/a.txt", h, 200, "hello\n");
    expect(port, "/static/a.txt", "If-Unmodified-Since: Sat, 01 Jan 2000 00:00:00 GMT\r\n",
           412, NULL);
    snprintf(h, sizeof(h), "If-Unmodified-Since: %s\r\n", lm);
    expect(port, "/static/a.txt", h, 200, "hello\n");
}

/* ---- ranges (RFC 9110 §14) ---- */

static void expect_range(int port, const char *range, int status, const char *content_range,
                         const char *body)
{
    char h[256];
    snprintf(h, sizeof(h), "Range: %s\r\n", range);
    th_res_t r;
    ask(port, "GET", "/static/digits.txt", h, &r);
    cr_assert_eq(r.status, status, "%s: %d", range, r.status);
    const char *cr = th_res_header(&r, "Content-Range");
    if (content_range == NULL)
        cr_assert_null(cr, "%s: %s", range, cr);
    else
        cr_assert_str_eq(cr, content_range, "%s", range);
    if (body != NULL)
        cr_assert_str_eq(r.body, body, "%s", range);
    th_res_free(&r);
}

Test(static, ranges)
{
    put_str("www/digits.txt", "0123456789");
    int port = serve(NULL);
    expect_range(port, "bytes=2-4", 206, "bytes 2-4/10", "234");
    expect_range(port, "bytes=7-", 206, "bytes 7-9/10", "789");
    expect_range(port, "bytes=-3", 206, "bytes 7-9/10", "789");
    expect_range(port, "bytes=-30", 206, "bytes 0-9/10", "0123456789");
    expect_range(port, "bytes=8-100", 206, "bytes 8-9/10", "89");
    expect_range(port, "bytes=10-", 416, "bytes */10", NULL);
    expect_range(port, "bytes=-0", 416, "bytes */10", NULL);
    expect_range(port, "bytes=20-30", 416, "bytes */10", NULL);
    /* several ranges: the whole file (docs/static.md) */
    expect_range(port, "bytes=0-1,5-6", 200, NULL, "0123456789");
    /* not understood: ignored */
    expect_range(port, "bytes=5-2", 200, NULL, "0123456789");
    expect_range(port, "bytes=x", 200, NULL, "0123456789");
    expect_range(port, "items=0-1", 200, NULL, "0123456789");
}

Test(static, if_range_matches_or_gives_the_whole_file)
{
    put_str("www/digits.txt", "0123456789");
    int port = serve(NULL);
    th_res_t r;
    ask(port, "GET", "/static/digits.txt", NULL, &r);
    char etag[64], lm[64], h[256];
    snprintf(etag, sizeof(etag), "%s", th_res_header(&r, "ETag"));
    snprintf(lm, sizeof(lm), "%s", th_res_header(&r, "Last-Modified"));
    th_res_free(&r);
    snprintf(h, sizeof(h), "bytes=0-1\r\nIf-Range: %s", etag);
    expect_range(port, h, 206, "bytes 0-1/10", "01");
    snprintf(h, sizeof(h), "bytes=0-1\r\nIf-Range: %s", lm);
    expect_range(port, h, 206, "bytes 0-1/10", "01");
    expect_range(port, "bytes=0-1\r\nIf-Range: \"stale\"", 200, NULL, "0123456789");
    snprintf(h, sizeof(h), "bytes=0-1\r\nIf-Range: W/%s", etag);
    expect_range(port, h, 200, NULL, "0123456789");
    expect_range(port, "bytes=0-1\r\nIf-Range: Sat, 01 Jan 2000 00:00:00 GMT", 200, NULL,
                 "0123456789");
}

/* ---- the read path: the in-memory test client (no socket) and no_sendfile ---- */

Test(static, a_memory_connection_is_served_by_reads)
{
    size_t n = 3 * 1024 * 1024 + 17;
    unsigned char *data = malloc(n);
    for (size_t i = 0; i < n; i++)
        data[i] = (unsigned char)(i * 7 + i / 4096);
    put_file("www/big.bin", data, n);
    cr_assert_eq(sq_app_create(&app), 0);
    sq_static_opts_t o;
    sq_static_opts_init(&o);
    o.chunk_bytes = 4096; /* many pieces */
    cr_assert_eq(sq_static_route(app, "/static", www, &o), 0);
    sq_test_t *t;
    cr_assert_eq(sq_test_create(&t, app, NULL), 0);
    sq_test_res_t *res;
    cr_assert_eq(sq_test_request(t, "GET", "/static/big.bin", NULL, NULL, &res), 0);
    cr_assert_eq(res->status, 200);
    cr_assert_eq(res->body_len, n);
    cr_assert(memcmp(res->body, data, n) == 0);
    cr_assert_eq(res->chunked, 0);
    sq_test_res_free(res);
    cr_assert_eq(sq_test_request(t, "GET", "/static/big.bin",
                                 (const char *[]){"Range: bytes=1000000-1000009", NULL}, NULL,
                                 &res),
                 0);
    cr_assert_eq(res->status, 206);
    cr_assert_eq(res->body_len, 10);
    cr_assert(memcmp(res->body, data + 1000000, 10) == 0);
    sq_test_res_free(res);
    cr_assert_eq(sq_test_request(t, "GET", "/static/sub", NULL, NULL, &res), 0);
    cr_assert_eq(res->status, 301);
    sq_test_res_free(res);
    cr_assert_eq(sq_test_request(t, "GET", "/static/out", NULL, NULL, &res), 0);
    cr_assert_eq(res->status, 404);
    sq_test_res_free(res);
    cr_assert_eq(sq_test_destroy(t), 0);
    free(data);
}

/* ---- real peers ---- */

/* Runs a shell command; returns its stdout (malloc'd) and asserts exit 0. */
static char *run(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *run(const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    FILE *f = popen(cmd, "r");
    cr_assert_not_null(f, "%s", cmd);
    size_t cap = 4096, len = 0, r;
    char *out = malloc(cap);
    while ((r = fread(out + len, 1, cap - len - 1, f)) > 0) {
        len += r;
        if (cap - len < 1024)
            out = realloc(out, cap *= 2);
    }
    out[len] = '\0';
    int st = pclose(f);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "`%s` failed (%d): %s", cmd, st, out);
    return out;
}

#define CURL "curl -s --http1.1 --max-time 30 "

static void need(const char *path)
{
    if (access(path, X_OK) != 0)
        cr_skip_test("no %s", path);
}

static void make_random(const char *rel, size_t mib)
{
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "head -c %zuM /dev/urandom > '%s/%s'", mib, dir, rel);
    cr_assert_eq(system(cmd), 0);
}

static void big_file_through_curl(int no_sendfile)
{
    need("/usr/bin/curl");
    make_random("www/big.bin", 48);
    sq_static_opts_t o;
    sq_static_opts_init(&o);
    o.no_sendfile = no_sendfile;
    int port = serve(&o);
    char *want = run("sha256sum < '%s/big.bin' | cut -c1-64", www);
    char *got = run(CURL "http://127.0.0.1:%d/static/big.bin | sha256sum | cut -c1-64", port);
    cr_assert_str_eq(got, want);
    free(got);
    /* a range from the middle, compared with the same bytes of the file */
    char *part = run(CURL "-r 1000000-2999999 http://127.0.0.1:%d/static/big.bin | sha256sum",
                     port);
    char *wpart = run("tail -c +1000001 '%s/big.bin' | head -c 2000000 | sha256sum", www);
    cr_assert_str_eq(part, wpart);
    free(part);
    free(wpart);
    free(want);
}

Test(static, a_big_file_through_curl_by_sendfile)
{
    big_file_through_curl(0);
}

Test(static, a_big_file_through_curl_by_reads)
{
    big_file_through_curl(1);
}

Test(static, curl_gets_304_and_ranges)
{
    need("/usr/bin/curl");
    put_str("www/digits.txt", "0123456789");
    int port = serve(NULL);
    char *out = run(CURL "-r 3-5 -w ' %%{http_code}' http://127.0.0.1:%d/static/digits.txt",
                    port);
    cr_assert_str_eq(out, "345 206");
    free(out);
    /* -z: If-Modified-Since from the file's own time */
    out = run(CURL "-z '%s/digits.txt' -w '%%{http_code}' http://127.0.0.1:%d/static/digits.txt",
              www, port);
    cr_assert_str_eq(out, "304");
    free(out);
    out = run(CURL "-I -w '%%{http_code}' -o /dev/null http://127.0.0.1:%d/static/digits.txt",
              port);
    cr_assert_str_eq(out, "200");
    free(out);
    out = run(CURL "-L -w ' %%{http_code} %%{num_redirects}' http://127.0.0.1:%d/static/sub",
              port);
    cr_assert_str_eq(out, "<h1>index</h1>\n 200 1");
    free(out);
    out = run(CURL "--path-as-is -w ' %%{http_code}' -o /dev/null "
                   "http://127.0.0.1:%d/static/../secret.txt",
              port);
    cr_assert_str_eq(out, " 404");
    free(out);
}

static const char py_script[] =
    "import http.client, json, sys\n"
    "c = http.client.HTTPConnection('127.0.0.1', int(sys.argv[1]), timeout=10)\n"
    "out = []\n"
    "def ask(method, url, headers={}):\n"
    "    c.request(method, url, headers=headers)\n"
    "    r = c.getresponse()\n"
    "    body = r.read()\n"
    "    out.append([method, url, r.status, r.getheader('Content-Type'),\n"
    "                r.getheader('Content-Range'), body.decode()])\n"
    "    return r\n"
    "r = ask('GET', '/static/digits.txt')\n"
    "etag, lm = r.getheader('ETag'), r.getheader('Last-Modified')\n"
    "ask('GET', '/static/digits.txt', {'If-None-Match': etag})\n"
    "ask('GET', '/static/digits.txt', {'If-Modified-Since': lm})\n"
    "ask('GET', '/static/digits.txt', {'Range': 'bytes=-4'})\n"
    "ask('GET', '/static/digits.txt', {'Range': 'bytes=99-'})\n"
    "ask('HEAD', '/static/digits.txt')\n"
    "ask('GET', '/static/%2e%2e/secret.txt')\n"
    "print(json.dumps(out))\n";

Test(static, python_http_client_on_one_connection)
{
    need("/usr/bin/python3");
    put_str("www/digits.txt", "0123456789");
    int port = serve(NULL);
    char script[160];
    snprintf(script, sizeof(script), "%s/t.py", dir);
    put_str("t.py", py_script);
    char *out = run("/usr/bin/python3 %s %d", script, port);
    cr_assert_str_eq(
        out, "[[\"GET\", \"/static/digits.txt\", 200, \"text/plain; charset=utf-8\", null, "
             "\"0123456789\"], "
             "[\"GET\", \"/static/digits.txt\", 304, null, null, \"\"], "
             "[\"GET\", \"/static/digits.txt\", 304, null, null, \"\"], "
             "[\"GET\", \"/static/digits.txt\", 206, \"text/plain; charset=utf-8\", "
             "\"bytes 6-9/10\", \"6789\"], "
             "[\"GET\", \"/static/digits.txt\", 416, \"application/json\", \"bytes */10\", "
             "\"{\\\"detail\\\":\\\"Range Not Satisfiable\\\"}\"], "
             "[\"HEAD\", \"/static/digits.txt\", 200, \"text/plain; charset=utf-8\", null, \"\"], "
             "[\"GET\", \"/static/%2e%2e/secret.txt\", 404, \"application/json\", null, "
             "\"{\\\"detail\\\":\\\"Not Found\\\"}\"]]\n");
    free(out);
}

/* ---- past 4 GiB: 64-bit offsets (a sparse file) ---- */

static void sparse_past_4gib(void)
{
    char p[160];
    snprintf(p, sizeof(p), "%s/huge.bin", www);
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    cr_assert_geq(fd, 0);
    cr_assert_eq(ftruncate(fd, (5ll << 30) + 5), 0);
    cr_assert_eq(pwrite(fd, "MARK4G", 6, (4ll << 30) - 3), 6); /* across the 4 GiB line */
    cr_assert_eq(pwrite(fd, "END", 3, (5ll << 30) + 2), 3);
    close(fd);
}

Test(static, a_sparse_file_past_4_gib_whole_and_in_ranges, .timeout = 120)
{
    need("/usr/bin/curl");
    sparse_past_4gib();
    int port = serve(NULL);
    char *out = run(CURL "-r 4294967293-4294967298 http://127.0.0.1:%d/static/huge.bin", port);
    cr_assert_str_eq(out, "MARK4G");
    free(out);
    out = run(CURL "-r -3 -w ' %%{http_code}' http://127.0.0.1:%d/static/huge.bin", port);
    cr_assert_str_eq(out, "END 206");
    free(out);
    /* the whole 5 GiB by sendfile, its last bytes checked */
    out = run(CURL "--max-time 100 http://127.0.0.1:%d/static/huge.bin | tail -c 3", port);
    cr_assert_str_eq(out, "END");
    free(out);
}

Test(static, offsets_past_4_gib_by_reads)
{
    sparse_past_4gib();
    cr_assert_eq(sq_app_create(&app), 0);
    cr_assert_eq(sq_static_route(app, "/static", www, NULL), 0);
    sq_test_t *t;
    cr_assert_eq(sq_test_create(&t, app, NULL), 0);
    sq_test_res_t *res;
    cr_assert_eq(sq_test_request(t, "GET", "/static/huge.bin",
                                 (const char *[]){"Range: bytes=4294967293-4294967298", NULL},
                                 NULL, &res),
                 0);
    cr_assert_eq(res->status, 206);
    cr_assert_str_eq(sq_test_res_header(res, "Content-Range"),
                     "bytes 4294967293-4294967298/5368709125");
    cr_assert_eq(res->body_len, 6);
    cr_assert(memcmp(res->body, "MARK4G", 6) == 0);
    sq_test_res_free(res);
    cr_assert_eq(sq_test_destroy(t), 0);
}

/* ---- a reader that stops; a file cut short ---- */

static long rss_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = -1;
    while (f != NULL && fgets(line, sizeof(line), f) != NULL)
        if (sscanf(line, "VmRSS: %ld kB", &v) == 1)
            break;
    if (f != NULL)
        fclose(f);
    return v;
}

/* Reads what arrives on fd until it closes or timeout_ms of silence; returns the bytes
 * read (heads included), with no buffer kept. */
static uint64_t drain(int fd, int timeout_ms, bool *closed)
{
    char buf[65536];
    uint64_t total = 0;
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    *closed = false;
    for (;;) {
        ssize_t n = recv(fd, buf, sizeof(buf), 0);
        if (n > 0) {
            total += (uint64_t)n;
            continue;
        }
        *closed = n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK);
        return total;
    }
}

static void reader_that_stops(int no_sendfile)
{
    char p[160];
    snprintf(p, sizeof(p), "%s/stall.bin", www);
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    cr_assert_geq(fd, 0);
    uint64_t size = 512ull << 20;
    cr_assert_eq(ftruncate(fd, (off_t)size), 0);
    close(fd);
    sq_static_opts_t o;
    sq_static_opts_init(&o);
    o.no_sendfile = no_sendfile;
    int port = serve(&o);
    th_expect_healthy(port, "/static/a.txt", "hello\n"); /* warm: threads, pools */
    long before = rss_kib();
    th_conn_t c;
    cr_assert_eq(th_conn_open(&c, port), 0);
    cr_assert_eq(th_conn_sends(&c, "GET /static/stall.bin HTTP/1.1\r\nHost: t\r\n\r\n"), 0);
    cr_assert_gt(th_conn_read_some(&c, 2000), 0); /* accepted, and the answer begun */
    /* then the client reads nothing: the server stops when the socket's buffers are full */
    th_sleep_ms(500);
    long during = rss_kib();
    /* others are served meanwhile */
    for (int i = 0; i < 5; i++)
        th_expect_healthy(port, "/static/a.txt", "hello\n");
    cr_assert_lt(during - before, 48 * 1024, "the server buffered %ld KiB for a stalled reader",
                 during - before);
    /* it reads again: the whole file arrives */
    bool closed;
    uint64_t got = c.len + drain(c.fd, 3000, &closed); /* c.len: read before the stall */
    cr_assert_gt(got, size, "%llu", (unsigned long long)got);
    cr_assert_lt(got, size + 1024);
    cr_assert_not(closed);
    th_conn_close(&c);
}

Test(static, a_reader_that_stops_costs_bounded_memory_by_sendfile)
{
    reader_that_stops(0);
}

Test(static, a_reader_that_stops_costs_bounded_memory_by_reads)
{
    reader_that_stops(1);
}

static void reader_that_never_reads(int no_sendfile)
{
    char p[160];
    snprintf(p, sizeof(p), "%s/stall.bin", www);
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    uint64_t size = 256ull << 20;
    cr_assert_eq(ftruncate(fd, (off_t)size), 0);
    close(fd);
    sq_static_opts_t o;
    sq_static_opts_init(&o);
    o.no_sendfile = no_sendfile;
    o.send_timeout_ms = 300;
    int port = serve(&o);
    th_conn_t c;
    cr_assert_eq(th_conn_open(&c, port), 0);
    cr_assert_eq(th_conn_sends(&c, "GET /static/stall.bin HTTP/1.1\r\nHost: t\r\n\r\n"), 0);
    cr_assert_gt(th_conn_read_some(&c, 2000), 0); /* accepted, and the answer begun */
    /* then nothing is read: the socket fills, a piece waits 300 ms, and the server lets
     * the connection go */
    cr_assert_eq(th_server_wait_open(ts, 0, 10000), 0);
    bool closed;
    uint64_t got = drain(c.fd, 2000, &closed);
    cr_assert_lt(got, size);
    cr_assert(closed);
    th_conn_close(&c);
    th_expect_healthy(port, "/static/a.txt", "hello\n");
}

Test(static, a_reader_that_never_reads_is_closed_after_send_timeout_by_sendfile)
{
    reader_that_never_reads(0);
}

Test(static, a_reader_that_never_reads_is_closed_after_send_timeout_by_reads)
{
    reader_that_never_reads(1);
}

Test(static, a_slow_reader_that_keeps_reading_is_not_cut)
{
    need("/usr/bin/curl");
    make_random("www/slow.bin", 3);
    sq_static_opts_t o;
    sq_static_opts_init(&o);
    o.send_timeout_ms = 1000;
    int port = serve(&o);
    char *want = run("sha256sum < '%s/slow.bin' | cut -c1-64", www);
    char *got = run(CURL "--limit-rate 1M http://127.0.0.1:%d/static/slow.bin | sha256sum | "
                         "cut -c1-64",
                    port);
    cr_assert_str_eq(got, want);
    free(got);
    free(want);
}

Test(static, a_reader_that_leaves_mid_file_is_let_go)
{
    char p[160];
    snprintf(p, sizeof(p), "%s/stall.bin", www);
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    cr_assert_eq(ftruncate(fd, 256 << 20), 0);
    close(fd);
    int port = serve(NULL);
    for (int i = 0; i < 4; i++) {
        th_conn_t c;
        cr_assert_eq(th_conn_open(&c, port), 0);
        cr_assert_eq(th_conn_sends(&c, "GET /static/stall.bin HTTP/1.1\r\nHost: t\r\n\r\n"), 0);
        th_conn_read_some(&c, 200);
        if (i % 2)
            th_conn_abort(&c); /* a reset */
        else
            th_conn_close(&c);
    }
    cr_assert_eq(th_server_wait_open(ts, 0, 5000), 0);
    th_expect_healthy(port, "/static/a.txt", "hello\n");
}

static void cut_short(int no_sendfile, bool remove)
{
    uint64_t size = 64ull << 20;
    char p[160];
    snprintf(p, sizeof(p), "%s/cut.bin", www);
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    cr_assert_eq(ftruncate(fd, (off_t)size), 0);
    close(fd);
    sq_static_opts_t o;
    sq_static_opts_init(&o);
    o.no_sendfile = no_sendfile;
    int port = serve(&o);
    th_conn_t c;
    cr_assert_eq(th_conn_open(&c, port), 0);
    int rcv = 64 * 1024;
    setsockopt(c.fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof(rcv));
    cr_assert_eq(th_conn_sends(&c, "GET /static/cut.bin HTTP/1.1\r\nHost: t\r\n\r\n"), 0);
    th_sleep_ms(300); /* the socket fills and the server waits */
    if (remove)
        cr_assert_eq(unlink(p), 0);
    else
        cr_assert_eq(truncate(p, 1 << 20), 0);
    bool closed;
    uint64_t got = drain(c.fd, 2000, &closed); /* under the idle timeout (5 s) */
    if (remove) {
        /* the open file lives on: it is sent whole */
        cr_assert_gt(got, size);
        cr_assert_not(closed);
    } else {
        /* the body is cut short and the connection closes: the client knows */
        cr_assert_lt(got, size, "%llu", (unsigned long long)got);
        cr_assert(closed);
    }
    th_conn_close(&c);
    th_expect_healthy(port, "/static/a.txt", "hello\n");
}

Test(static, a_file_truncated_while_sent_closes_the_connection_by_sendfile)
{
    cut_short(0, false);
}

Test(static, a_file_truncated_while_sent_closes_the_connection_by_reads)
{
    cut_short(1, false);
}

Test(static, a_file_removed_while_sent_is_sent_whole)
{
    cut_short(0, true);
}

/* ---- hello --static ---- */

Test(static, hello_serves_a_folder_under_static)
{
    need("/usr/bin/curl");
    th_app_t a = th_app_start("hello", "--static", www, NULL);
    char *out = run(CURL "-w ' %%{http_code}' http://127.0.0.1:%d/static/a.txt", a.port);
    cr_assert_str_eq(out, "hello\n 200");
    free(out);
    out = run(CURL "-w '%%{http_code} %%{redirect_url}' http://127.0.0.1:%d/static", a.port);
    char want[128];
    snprintf(want, sizeof(want), "301 http://127.0.0.1:%d/static/", a.port);
    cr_assert_str_eq(out, want);
    free(out);
    th_app_stop(&a);
}

Test(static, hello_refuses_a_static_folder_that_is_not_there)
{
    th_app_run_t r;
    th_app_run(&r, "hello", 5000, "--port", "0", "--static", "/nonexistent/squall", NULL);
    cr_assert_eq(r.code, 1, "%d: %s", r.code, r.err);
    cr_assert_not_null(strstr(r.err, "hello: --static /nonexistent/squall: "), "%s", r.err);
}
