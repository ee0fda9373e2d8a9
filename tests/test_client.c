/* The HTTP client (lib/client, include/squall/client.h), against squall's own server
 * (tests/support/harness.h) and against a scripted raw server that misbehaves
 * (tests/support/raw_http.h). The client runs on a loop of the test's thread; scripts
 * record on their threads and the test asserts after the fact. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <squall.h>

#include "support/harness.h"
#include "support/raw_http.h"

static void ignore_sigpipe(void)
{
    signal(SIGPIPE, SIG_IGN);
}

TestSuite(client, .init = ignore_sigpipe, .timeout = 30);

/* ---- the client's side ---- */

typedef struct rec {
    int calls;
    int status;
    int http;
    int minor;
    char body[512];
    size_t len;
    char url[256];
    char hdr[128]; /* the X-Got header, or the Content-Type */
    int order;
    bool *inside; /* set while the call that started or cancelled it runs */
} rec_t;

static uv_loop_t loop;
static sq_client_t *cl;
static int order_seq;
static bool in_call;

static void on_done(sq_fetch_t *f, int status, const sq_response_t *res, void *data)
{
    rec_t *r = data;
    r->calls++;
    r->status = status;
    r->order = order_seq++;
    if (in_call)
        r->status = 12345; /* told inside a call: never */
    if (res != NULL) {
        r->http = sq_response_status(res);
        r->minor = sq_response_version_minor(res);
        size_t len;
        const char *b = sq_response_body(res, &len);
        r->len = len;
        memcpy(r->body, b, len < sizeof(r->body) - 1 ? len : sizeof(r->body) - 1);
        snprintf(r->url, sizeof(r->url), "%s", sq_response_url(res));
        const char *h = sq_response_header(res, "x-got");
        snprintf(r->hdr, sizeof(r->hdr), "%s", h ? h : "");
    }
}

static void on_stop(uv_timer_t *t)
{
    uv_stop(t->loop);
}

/* Runs the loop until nothing holds it, or ms passes. */
static void run_for(int ms)
{
    uv_timer_t t;
    uv_timer_init(&loop, &t);
    uv_timer_start(&t, on_stop, (uint64_t)ms, 0);
    uv_unref((uv_handle_t *)&t);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(&loop, UV_RUN_NOWAIT);
}

/* Runs the loop until *count reaches want (or ms passes). */
static void run_until(const int *count, int want, int ms)
{
    uint64_t end = th_now_ms() + (uint64_t)ms;
    while (*count < want && th_now_ms() < end)
        run_for(20);
}

static void start_opts(const sq_client_opts_t *o)
{
    order_seq = 0;
    cr_assert_eq(uv_loop_init(&loop), 0);
    cr_assert_eq(sq_client_new(&cl, &loop, o), 0);
}

static void start(void)
{
    start_opts(NULL);
}

static void on_closed(sq_client_t *c, void *data)
{
    (*(int *)data)++;
}

static void finish(void)
{
    int closed = 0;
    cr_assert_eq(sq_client_close(cl, on_closed, &closed), 0);
    cr_assert_eq(closed, 0, "the close callback runs from the loop");
    run_until(&closed, 1, 5000);
    cr_assert_eq(closed, 1);
    run_for(10);
    cr_assert_eq(uv_loop_close(&loop), 0, "every handle closed");
}

static int fetch_m(const char *method, const char *url, const char *body, rec_t *r,
                   sq_fetch_t **out)
{
    sq_fetch_req_t req;
    sq_fetch_req_init(&req);
    req.method = method;
    req.url = url;
    req.body = body;
    req.body_len = body ? strlen(body) : 0;
    in_call = true;
    int rc = sq_fetch(cl, &req, on_done, r, out);
    in_call = false;
    return rc;
}

static int fetch(const char *url, rec_t *r)
{
    return fetch_m("GET", url, NULL, r, NULL);
}

static char *url_of(char *buf, int port, const char *path)
{
    sprintf(buf, "http://127.0.0.1:%d%s", port, path);
    return buf;
}

static sq_client_stats_t stats(void)
{
    sq_client_stats_t s;
    sq_client_stats(cl, &s);
    return s;
}

/* ---- squall's own server ---- */

static void h_hello(sq_req_t *req, sq_res_t *res, void *data)
{
    const char *x = sq_req_header(req, "x-echo");
    if (x != NULL)
        sq_res_header(res, "X-Got", x);
    sq_res_send(res, 200, "text/plain", "hello", 5);
}

static void h_echo(sq_req_t *req, sq_res_t *res, void *data)
{
    size_t len;
    const char *b = sq_req_body(req, &len);
    sq_res_header(res, "X-Got", sq_req_method(req));
    sq_res_send(res, 200, "text/plain", b, len);
}

static void h_redirect(sq_req_t *req, sq_res_t *res, void *data)
{
    const char *to = data;
    int status = atoi(to);
    sq_res_header(res, "Location", to + 4);
    sq_res_send(res, status, "text/plain", "moved", 5);
}

static const sq_handler_t hello_h = {.get = h_hello};
static const sq_handler_t echo_h = {.get = h_echo, .post = h_echo, .put = h_echo};
static const sq_handler_t redir_h = {.get = h_redirect, .post = h_redirect};

static sq_app_t *app;

static th_server_t *server(void)
{
    cr_assert_eq(sq_app_create(&app), 0);
    sq_app_route(app, "/hello", &hello_h, NULL);
    sq_app_route(app, "/dir/hello", &hello_h, NULL);
    sq_app_route(app, "/echo", &echo_h, NULL);
    sq_app_route(app, "/r302", &redir_h, (void *)"302 /hello");
    sq_app_route(app, "/r303", &redir_h, (void *)"303 /echo");
    sq_app_route(app, "/r307", &redir_h, (void *)"307 /echo");
    sq_app_route(app, "/dir/rel", &redir_h, (void *)"301 hello?x=1#frag");
    sq_app_route(app, "/loop", &redir_h, (void *)"302 /loop");
    sq_app_route(app, "/https", &redir_h, (void *)"302 https://127.0.0.1:1/");
    return th_server_start(app, NULL);
}

static void server_stop(th_server_t *ts)
{
    th_server_stop(ts, 1000);
    sq_app_destroy(app);
}

Test(client, get_a_response_from_squall)
{
    th_server_t *ts = server();
    start();
    char u[128];
    rec_t r = {0};
    sq_fetch_req_t req;
    sq_fetch_req_init(&req);
    req.url = url_of(u, th_server_port(ts), "/hello?a=b");
    sq_header_t hs[] = {{"X-Echo", "yes"}};
    req.headers = hs;
    req.nheaders = 1;
    cr_assert_eq(sq_fetch(cl, &req, on_done, &r, NULL), 0);
    run_until(&r.calls, 1, 5000);
    cr_assert_eq(r.calls, 1);
    cr_assert_eq(r.status, 0, "%s", sq_strerror(r.status));
    cr_assert_eq(r.http, 200);
    cr_assert_eq(r.minor, 1);
    cr_assert_str_eq(r.body, "hello");
    cr_assert_str_eq(r.hdr, "yes");
    cr_assert_str_eq(r.url, u);
    sq_client_stats_t s = stats();
    cr_assert_eq(s.requests, 1);
    cr_assert_eq(s.responses, 1);
    cr_assert_eq(s.errors, 0);
    cr_assert_eq(s.connections, 1);
    cr_assert_eq(s.open, 1, "kept for the next request");
    finish();
    server_stop(ts);
}

Test(client, post_body_and_head)
{
    th_server_t *ts = server();
    start();
    char u[128];
    int port = th_server_port(ts);
    rec_t p = {0}, h = {0};
    cr_assert_eq(fetch_m("POST", url_of(u, port, "/echo"), "a body", &p, NULL), 0);
    cr_assert_eq(fetch_m("HEAD", url_of(u, port, "/hello"), NULL, &h, NULL), 0);
    run_until(&h.calls, 1, 5000);
    run_until(&p.calls, 1, 5000);
    cr_assert_eq(p.status, 0);
    cr_assert_str_eq(p.body, "a body");
    cr_assert_str_eq(p.hdr, "POST");
    cr_assert_eq(h.status, 0);
    cr_assert_eq(h.http, 200);
    cr_assert_eq(h.len, 0, "HEAD: no body whatever Content-Length says");
    finish();
    server_stop(ts);
}

static rec_t chain[5];
static char chain_url[128];
static int chain_n;

static void on_chain(sq_fetch_t *f, int status, const sq_response_t *res, void *data)
{
    on_done(f, status, res, data);
    if (++chain_n < 5) {
        sq_fetch_req_t req;
        sq_fetch_req_init(&req);
        req.url = chain_url;
        sq_fetch(cl, &req, on_chain, &chain[chain_n], NULL);
    }
}

Test(client, keep_alive_reuses_one_connection)
{
    th_server_t *ts = server();
    start();
    url_of(chain_url, th_server_port(ts), "/hello");
    sq_fetch_req_t req;
    sq_fetch_req_init(&req);
    req.url = chain_url;
    chain_n = 0;
    memset(chain, 0, sizeof(chain));
    cr_assert_eq(sq_fetch(cl, &req, on_chain, &chain[0], NULL), 0);
    run_until(&chain[4].calls, 1, 5000);
    for (int i = 0; i < 5; i++)
        cr_assert_eq(chain[i].http, 200, "fetch %d: %d %s", i, chain[i].calls,
                     sq_strerror(chain[i].status));
    sq_client_stats_t s = stats();
    cr_assert_eq(s.connections, 1);
    cr_assert_eq(s.reused, 4);
    cr_assert_eq(s.responses, 5);
    finish();
    server_stop(ts);
}

static void on_all(sq_promise_t *p, int status, void *value, sq_promise_t *next, void *data)
{
    int *out = data;
    if (status != 0) {
        out[0] = status;
        out[1] = 1;
        return;
    }
    void **vals = value;
    int ok = 0;
    for (int i = 0; i < 100; i++)
        ok += sq_response_status(vals[i]) == 200 &&
              strcmp(sq_response_body(vals[i], NULL), "hello") == 0;
    out[0] = ok;
    out[1] = 1;
}

Test(client, promise_all_of_100_fetches)
{
    th_server_t *ts = server();
    start();
    char u[128];
    url_of(u, th_server_port(ts), "/hello");
    sq_promise_t *ps[100], *all;
    sq_fetch_req_t req;
    sq_fetch_req_init(&req);
    req.url = u;
    for (int i = 0; i < 100; i++)
        cr_assert_eq(sq_fetch_promise(cl, &req, &ps[i]), 0);
    cr_assert_eq(sq_promise_all(&all, ps, 100), 0);
    int out[2] = {0, 0};
    cr_assert_eq(sq_promise_await(all, on_all, out), 0);
    run_until(&out[1], 1, 10000);
    cr_assert_eq(out[0], 100);
    sq_client_stats_t s = stats();
    cr_assert_eq(s.responses, 100);
    cr_assert_leq(s.connections, 6, "max_conns_per_host");
    cr_assert_eq(s.reused, 100 - s.connections);
    for (int i = 0; i < 100; i++)
        sq_promise_release(ps[i]);
    sq_promise_release(all);
    /* a promise cancelled: the fetch ends with UV_ECANCELED */
    sq_promise_t *p;
    cr_assert_eq(sq_fetch_promise(cl, &req, &p), 0);
    cr_assert_eq(sq_promise_cancel(p), 0);
    run_for(50);
    cr_assert_eq(sq_promise_result(p, NULL), UV_ECANCELED);
    sq_promise_release(p);
    run_for(50);
    cr_assert_eq(stats().errors, 1);
    finish();
    server_stop(ts);
}

Test(client, redirects)
{
    th_server_t *ts = server();
    sq_client_opts_t o;
    sq_client_opts_init(&o);
    o.max_redirects = 3;
    start_opts(&o);
    int port = th_server_port(ts);
    char u[128], want[128];
    rec_t a = {0}, b = {0}, c = {0}, d = {0}, e = {0}, g = {0};
    fetch(url_of(u, port, "/r302"), &a);
    fetch_m("POST", url_of(u, port, "/r307"), "kept", &b, NULL);
    fetch_m("POST", url_of(u, port, "/r303"), "dropped", &c, NULL);
    fetch(url_of(u, port, "/dir/rel"), &d);
    fetch(url_of(u, port, "/loop"), &e);
    fetch(url_of(u, port, "/https"), &g);
    run_until(&a.calls, 1, 5000);
    run_until(&b.calls, 1, 5000);
    run_until(&c.calls, 1, 5000);
    run_until(&d.calls, 1, 5000);
    run_until(&e.calls, 1, 5000);
    run_until(&g.calls, 1, 5000);
    cr_assert_eq(a.http, 200);
    cr_assert_str_eq(a.url, url_of(want, port, "/hello"));
    cr_assert_eq(b.http, 200);
    cr_assert_str_eq(b.hdr, "POST", "307 keeps the method");
    cr_assert_str_eq(b.body, "kept", "and the body");
    cr_assert_eq(c.http, 200);
    cr_assert_str_eq(c.hdr, "GET", "303 goes on with GET");
    cr_assert_eq(c.len, 0);
    cr_assert_eq(d.http, 200, "relative Location resolved against the URL");
    cr_assert_str_eq(d.url, url_of(want, port, "/dir/hello?x=1"));
    cr_assert_eq(e.http, 302, "past max_redirects the 3xx is the response");
    cr_assert_eq(g.status, UV_ECONNREFUSED, "https:// is followed (to a closed port)");
    finish();
    /* max_redirects 0 (the default): the 3xx is the response */
    start();
    rec_t z = {0};
    fetch(url_of(u, port, "/r302"), &z);
    run_until(&z.calls, 1, 5000);
    cr_assert_eq(z.http, 302);
    cr_assert_str_eq(z.body, "moved");
    finish();
    server_stop(ts);
}

Test(client, bad_requests_are_refused_at_once)
{
    start();
    rec_t r = {0};
    cr_assert_eq(fetch("ftp://x/", &r), UV_EINVAL);
    cr_assert_eq(fetch("http://", &r), UV_EINVAL);
    cr_assert_eq(fetch("http://a b/", &r), UV_EINVAL);
    cr_assert_eq(fetch("http://h/a b", &r), UV_EINVAL);
    cr_assert_eq(fetch("http://h/a\r\nX: y", &r), UV_EINVAL);
    cr_assert_eq(fetch("http://u@h/", &r), UV_EINVAL);
    cr_assert_eq(fetch("http://h:99999/", &r), UV_EINVAL);
    cr_assert_eq(fetch("http://[::1/", &r), UV_EINVAL);
    cr_assert_eq(fetch("http://h/%zz", &r), UV_EINVAL);
    cr_assert_eq(fetch("https://", &r), UV_EINVAL); /* https:// itself: tests/test_tls.c */
    cr_assert_eq(fetch_m("GE T", "http://h/", NULL, &r, NULL), UV_EINVAL);
    const sq_header_t bad[][1] = {{{"X-A", "a\r\nb"}},
                                  {{"X-A", "a\vb"}}, /* RFC 9110 §5.5: no control */
                                  {{"X-A", "a\x7f"}},
                                  {{"X A", "a"}},
                                  {{"", "a"}},
                                  {{"Host", "h"}},
                                  {{"content-length", "1"}},
                                  {{"Transfer-Encoding", "chunked"}},
                                  {{"Connection", "x"}}};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        sq_fetch_req_t req;
        sq_fetch_req_init(&req);
        req.url = "http://127.0.0.1:1/";
        req.headers = bad[i];
        req.nheaders = 1;
        cr_assert_eq(sq_fetch(cl, &req, on_done, &r, NULL), UV_EINVAL, "header %zu", i);
    }
    sq_fetch_req_t req;
    sq_fetch_req_init(&req);
    req.url = "http://127.0.0.1:1/";
    cr_assert_eq(sq_fetch(cl, &req, NULL, NULL, NULL), UV_EINVAL);
    req.size = 0;
    cr_assert_eq(sq_fetch(cl, &req, on_done, &r, NULL), UV_EINVAL, "never initialised");
    sq_fetch_req_init(&req);
    req.url = "http://127.0.0.1:1/";
    sq_client_opts_t o;
    sq_client_opts_init(&o);
    o.user_agent = "x\r\nEvil: 1";
    sq_client_t *other;
    cr_assert_eq(sq_client_new(&other, &loop, &o), UV_EINVAL);
    run_for(20);
    cr_assert_eq(r.calls, 0, "no callback for a refused fetch");
    cr_assert_eq(stats().requests, 0);
    int closed = 0;
    cr_assert_eq(sq_client_close(cl, on_closed, &closed), 0);
    cr_assert_eq(sq_fetch(cl, &req, on_done, &r, NULL), SQ_ECLOSED);
    cr_assert_eq(sq_client_close(cl, on_closed, &closed), SQ_ECLOSED);
    run_until(&closed, 1, 2000);
    cr_assert_eq(closed, 1);
    cr_assert_eq(uv_loop_close(&loop), 0);
}

Test(client, dns_failure_and_refused_connect)
{
    start();
    rec_t d = {0}, c = {0};
    char u[128];
    uint64_t t0 = th_now_ms();
    /* a label of 64 characters (RFC 1035 §2.3.4 allows 63): the resolver refuses the
     * name without asking a server, so the test stays on this machine */
    static char bad[128];
    snprintf(bad, sizeof(bad), "http://%.64s.invalid/",
             "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
    cr_assert_eq(fetch(bad, &d), 0);
    cr_assert_eq(fetch(url_of(u, th_free_port(), "/"), &c), 0);
    run_until(&d.calls, 1, 10000);
    run_until(&c.calls, 1, 5000);
    cr_assert_eq(d.calls, 1);
    cr_assert(d.status == UV_EAI_NONAME || d.status == UV_EAI_AGAIN || d.status == UV_EAI_FAIL ||
                  d.status == UV_EAI_NODATA,
              "%s", sq_strerror(d.status));
    cr_assert_lt(th_now_ms() - t0, 10000);
    cr_assert_eq(c.status, UV_ECONNREFUSED, "%s", sq_strerror(c.status));
    cr_assert_eq(stats().errors, 2);
    cr_assert_eq(stats().open, 0);
    finish();
}

/* ---- the raw server ---- */

static void s_ok(rh_conn_t *c, void *data)
{
    char head[1024];
    while (rh_read_head(c, 3000, head, sizeof(head)) > 0) {
        /* the body: the path, so that the order shows */
        char path[64] = "";
        sscanf(head, "%*s %63s", path);
        char res[256];
        int delay = data ? *(int *)data : 0;
        if (delay)
            rh_sleep(c, delay);
        snprintf(res, sizeof(res), "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n%s", strlen(path),
                 path);
        if (rh_send(c, res) != 0)
            return;
    }
}

Test(client, ipv6_literal)
{
    rh_server_t *s = rh_start("::1", s_ok, NULL);
    if (s == NULL)
        cr_skip_test("no IPv6 loopback");
    start();
    char u[128];
    sprintf(u, "http://[::1]:%d/six", rh_port(s));
    rec_t r = {0};
    cr_assert_eq(fetch(u, &r), 0);
    run_until(&r.calls, 1, 5000);
    cr_assert_eq(r.status, 0, "%s", sq_strerror(r.status));
    cr_assert_str_eq(r.body, "/six");
    finish();
    rh_stop(s);
}

Test(client, pool_limit_and_queue_order)
{
    int delay = 30;
    rh_server_t *s = rh_start("127.0.0.1", s_ok, &delay);
    sq_client_opts_t o;
    sq_client_opts_init(&o);
    o.max_conns_per_host = 2;
    start_opts(&o);
    rec_t r[10] = {{0}};
    char u[128], path[16];
    for (int i = 0; i < 10; i++) {
        sprintf(path, "/%d", i);
        cr_assert_eq(fetch(url_of(u, rh_port(s), path), &r[i]), 0);
    }
    cr_assert_eq(stats().queued, 8);
    for (int i = 0; i < 10; i++) /* two connections: the last two may end in either order */
        run_until(&r[i].calls, 1, 10000);
    for (int i = 0; i < 10; i++) {
        sprintf(path, "/%d", i);
        cr_assert_eq(r[i].status, 0);
        cr_assert_str_eq(r[i].body, path);
    }
    cr_assert_eq(stats().connections, 2);
    cr_assert_eq(stats().reused, 8);
    cr_assert_eq(stats().queued, 0);
    finish();
    cr_assert_eq(rh_max_open(s), 2, "max_conns_per_host");
    rh_stop(s);
    /* one connection: the queue is served in order */
    s = rh_start("127.0.0.1", s_ok, NULL);
    o.max_conns_per_host = 1;
    start_opts(&o);
    for (int i = 0; i < 10; i++) {
        memset(&r[i], 0, sizeof(r[i]));
        sprintf(path, "/%d", i);
        fetch(url_of(u, rh_port(s), path), &r[i]);
    }
    run_until(&r[9].calls, 1, 10000);
    for (int i = 0; i < 10; i++)
        cr_assert_eq(r[i].order, i, "fetch %d", i);
    finish();
    rh_stop(s);
    /* past max_queued: UV_ENOBUFS at once */
    s = rh_start("127.0.0.1", s_ok, NULL);
    o.max_queued = 2;
    start_opts(&o);
    rec_t q[4] = {{0}};
    cr_assert_eq(fetch(url_of(u, rh_port(s), "/a"), &q[0]), 0);
    cr_assert_eq(fetch(url_of(u, rh_port(s), "/b"), &q[1]), 0);
    cr_assert_eq(fetch(url_of(u, rh_port(s), "/c"), &q[2]), 0);
    cr_assert_eq(fetch(url_of(u, rh_port(s), "/d"), &q[3]), UV_ENOBUFS);
    run_until(&q[2].calls, 1, 5000);
    cr_assert_eq(q[2].status, 0);
    finish();
    rh_stop(s);
}

/* One scripted answer per connection: data is the response, sent after the head. */
static void s_answer(rh_conn_t *c, void *data)
{
    if (rh_read_head(c, 3000, NULL, 0) < 0)
        return;
    rh_send(c, data);
    rh_wait_close(c, 3000);
}

static void s_answer_close(rh_conn_t *c, void *data)
{
    if (rh_read_head(c, 3000, NULL, 0) < 0)
        return;
    rh_send(c, data); /* then the connection closes */
}

/* The answer one byte at a time: every parser state is left and entered across reads. */
static void s_trickle(rh_conn_t *c, void *data)
{
    if (rh_read_head(c, 3000, NULL, 0) < 0)
        return;
    for (const char *p = data; *p; p++) {
        if (rh_send_bytes(c, p, 1) != 0)
            return;
        rh_sleep(c, 1);
    }
    rh_wait_close(c, 3000);
}

typedef struct bad_case {
    const char *name;
    rh_script_fn fn;
    const char *response;
    int want; /* status */
    int http; /* or the response's status */
    const char *body;
    int kept; /* the connection stays in the pool */
} bad_case_t;

Test(client, misbehaving_servers)
{
    static char huge[8192];
    strcpy(huge, "HTTP/1.1 200 OK\r\nX-Big: ");
    memset(huge + strlen(huge), 'a', 4000);
    strcat(huge, "\r\nContent-Length: 0\r\n\r\n");
    static char many[8192];
    strcpy(many, "HTTP/1.1 200 OK\r\n");
    for (int i = 0; i < 40; i++)
        strcat(many, "X-H: 1\r\n");
    strcat(many, "Content-Length: 0\r\n\r\n");
    const bad_case_t cases[] = {
        {"close mid-body", s_answer_close, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
         UV_ECONNRESET, 0, NULL, 0},
        {"close mid-chunk", s_answer_close,
         "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab", UV_ECONNRESET, 0, NULL, 0},
        {"close before any byte", s_answer_close, "", UV_ECONNRESET, 0, NULL, 0},
        {"garbage", s_answer, "SSH-2.0-OpenSSH\r\n\r\n", UV_EPROTO, 0, NULL, 0},
        {"bad chunk size", s_answer,
         "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n", UV_EPROTO, 0,
         NULL, 0},
        {"huge chunk size", s_answer,
         "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\nab", UV_EPROTO,
         0, NULL, 0},
        {"huge headers", s_answer, huge, UV_EMSGSIZE, 0, NULL, 0},
        {"many headers", s_answer, many, UV_EMSGSIZE, 0, NULL, 0},
        {"body too big", s_answer, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789",
         UV_EMSGSIZE, 0, NULL, 0},
        {"chunked body too big", s_answer,
         "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
         "28\r\n0123456789012345678901234567890123456789\r\n"
         "28\r\n0123456789012345678901234567890123456789\r\n0\r\n\r\n",
         UV_EMSGSIZE, 0, NULL, 0},
        {"101 not asked for", s_answer,
         "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n", UV_EPROTO,
         0, NULL, 0},
        {"HTTP/1.0 close-delimited", s_answer_close, "HTTP/1.0 200 OK\r\n\r\nuntil the end", 0, 200,
         "until the end", 0},
        {"close-delimited 1.1", s_answer_close, "HTTP/1.1 200 OK\r\n\r\nrest", 0, 200, "rest", 0},
        {"100-continue then 200", s_answer,
         "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\nX-A: b\r\n\r\n"
         "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
         0, 200, "ok", 1},
        {"chunked", s_answer,
         "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n"
         "0\r\nT: v\r\n\r\n",
         0, 200, "abcde", 1},
        {"byte by byte", s_trickle,
         "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nX-Long-Name: a value here\r\n"
         "Transfer-Encoding: chunked\r\n\r\na\r\n0123456789\r\n0\r\n\r\n",
         0, 200, "0123456789", 1},
        {"204 with a length", s_answer, "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n", 0,
         204, "", 1},
        /* an interim response has no body, whatever its headers say (RFC 9112 §6.3) */
        {"103 with a length", s_answer,
         "HTTP/1.1 103 Early Hints\r\nContent-Length: 5\r\n\r\n"
         "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
         0, 200, "ok", 1},
        {"an empty header value", s_answer,
         "HTTP/1.1 200 OK\r\nX-Empty:\r\nContent-Length: 2\r\n\r\nok", 0, 200, "ok", 1},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const bad_case_t *k = &cases[i];
        rh_server_t *s = rh_start("127.0.0.1", k->fn, (void *)k->response);
        sq_client_opts_t o;
        sq_client_opts_init(&o);
        o.max_header_bytes = 2048;
        o.max_headers = 30;
        o.max_body_bytes = 50;
        start_opts(&o);
        char u[128];
        rec_t r = {0};
        fetch(url_of(u, rh_port(s), "/"), &r);
        run_until(&r.calls, 1, 5000);
        run_for(20);
        TH_ROW_CHECK(k->name, r.calls == 1, "calls %d", r.calls);
        TH_ROW_CHECK(k->name, r.status == k->want, "status %s", sq_strerror(r.status));
        TH_ROW_CHECK(k->name, r.http == k->http, "http %d", r.http);
        if (k->body != NULL)
            TH_ROW_CHECK(k->name, strcmp(r.body, k->body) == 0, "body %s", r.body);
        TH_ROW_CHECK(k->name, stats().open == (uint64_t)k->kept, "open %d", (int)stats().open);
    out:
        finish();
        rh_stop(s);
    }
}

/* Keep-alive, then the pooled connection is closed by the server when the next request
 * comes (the race a pool cannot see): the request is sent again on a new connection. */
static void s_stale(rh_conn_t *c, void *data)
{
    if (c->index == 0) {
        if (rh_read_head(c, 3000, NULL, 0) < 0)
            return;
        rh_send(c, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst");
        rh_read_head(c, 3000, NULL, 0); /* then closed without an answer */
        return;
    }
    s_ok(c, NULL);
}

Test(client, stale_pooled_connection_is_retried_once_when_idempotent)
{
    rh_server_t *s = rh_start("127.0.0.1", s_stale, NULL);
    start();
    char u[128];
    rec_t a = {0}, b = {0};
    fetch(url_of(u, rh_port(s), "/a"), &a);
    run_until(&a.calls, 1, 5000);
    cr_assert_str_eq(a.body, "first");
    fetch(url_of(u, rh_port(s), "/b"), &b);
    run_until(&b.calls, 1, 5000);
    cr_assert_eq(b.status, 0, "%s", sq_strerror(b.status));
    cr_assert_str_eq(b.body, "/b");
    sq_client_stats_t st = stats();
    cr_assert_eq(st.retried, 1);
    cr_assert_eq(st.reused, 1);
    cr_assert_eq(st.connections, 2);
    finish();
    rh_stop(s);
    /* a POST is not sent twice */
    s = rh_start("127.0.0.1", s_stale, NULL);
    start();
    rec_t c = {0}, d = {0};
    fetch(url_of(u, rh_port(s), "/a"), &c);
    run_until(&c.calls, 1, 5000);
    fetch_m("POST", url_of(u, rh_port(s), "/b"), "x", &d, NULL);
    run_until(&d.calls, 1, 5000);
    cr_assert_eq(d.status, UV_ECONNRESET, "%s", sq_strerror(d.status));
    cr_assert_eq(stats().retried, 0);
    finish();
    rh_stop(s);
}

Test(client, connection_close_and_http10_are_not_reused)
{
    rh_server_t *s =
        rh_start("127.0.0.1", s_answer,
                 (void *)"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx");
    start();
    char u[128];
    rec_t a = {0}, b = {0};
    fetch(url_of(u, rh_port(s), "/"), &a);
    run_until(&a.calls, 1, 5000);
    fetch(url_of(u, rh_port(s), "/"), &b);
    run_until(&b.calls, 1, 5000);
    cr_assert_eq(a.http, 200);
    cr_assert_eq(b.http, 200);
    cr_assert_eq(stats().connections, 2);
    cr_assert_eq(stats().reused, 0);
    finish();
    rh_stop(s);
    s = rh_start("127.0.0.1", s_answer, (void *)"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx");
    start();
    memset(&a, 0, sizeof(a));
    memset(&b, 0, sizeof(b));
    fetch(url_of(u, rh_port(s), "/"), &a);
    run_until(&a.calls, 1, 5000);
    fetch(url_of(u, rh_port(s), "/"), &b);
    run_until(&b.calls, 1, 5000);
    cr_assert_eq(a.minor, 0);
    cr_assert_eq(b.http, 200);
    cr_assert_eq(stats().connections, 2);
    finish();
    rh_stop(s);
}

static void s_early(rh_conn_t *c, void *data)
{
    char head[1024];
    if (rh_read_head(c, 3000, head, sizeof(head)) < 0)
        return;
    rh_send(c, "HTTP/1.1 413 Content Too Large\r\nContent-Length: 3\r\n\r\nbig");
    size_t n = 0;
    const char *len = strcasestr(head, "content-length:");
    if (len != NULL)
        n = strtoul(len + 15, NULL, 10);
    rh_read_body(c, n, 5000); /* read at last, so no reset loses the answer */
}

Test(client, response_before_the_body_is_written)
{
    rh_server_t *s = rh_start("127.0.0.1", s_early, NULL);
    start();
    size_t len = 8 << 20;
    char *big = malloc(len + 1);
    memset(big, 'b', len);
    big[len] = '\0';
    char u[128];
    rec_t r = {0};
    fetch_m("PUT", url_of(u, rh_port(s), "/"), big, &r, NULL);
    free(big);
    run_until(&r.calls, 1, 10000);
    cr_assert_eq(r.status, 0, "%s", sq_strerror(r.status));
    cr_assert_eq(r.http, 413);
    cr_assert_str_eq(r.body, "big");
    finish();
    rh_stop(s);
}

static void s_silent(rh_conn_t *c, void *data)
{
    rh_read_head(c, 3000, NULL, 0);
    rh_wait_close(c, 5000);
}

Test(client, timeouts)
{
    rh_server_t *s = rh_start("127.0.0.1", s_silent, NULL);
    sq_client_opts_t o;
    sq_client_opts_init(&o);
    o.timeout_ms = 200;
    start_opts(&o);
    char u[128];
    rec_t a = {0}, b = {0};
    uint64_t t0 = th_now_ms();
    fetch(url_of(u, rh_port(s), "/"), &a);
    sq_fetch_req_t req;
    sq_fetch_req_init(&req);
    req.url = u;
    req.timeout_ms = 50; /* its own */
    sq_fetch(cl, &req, on_done, &b, NULL);
    run_until(&a.calls, 1, 5000);
    cr_assert_eq(a.status, UV_ETIMEDOUT);
    cr_assert_eq(b.status, UV_ETIMEDOUT);
    cr_assert_lt(b.order, a.order);
    cr_assert_lt(th_now_ms() - t0, 3000);
    cr_assert_eq(stats().open, 0);
    finish();
    rh_stop(s);
    /* a slow answer within the timeout */
    int delay = 150;
    s = rh_start("127.0.0.1", s_ok, &delay);
    o.timeout_ms = 3000;
    start_opts(&o);
    memset(&a, 0, sizeof(a));
    fetch(url_of(u, rh_port(s), "/slow"), &a);
    run_until(&a.calls, 1, 5000);
    cr_assert_eq(a.status, 0);
    cr_assert_str_eq(a.body, "/slow");
    finish();
    rh_stop(s);
}

static void s_count_close(rh_conn_t *c, void *data)
{
    s_ok(c, NULL);
    atomic_fetch_add((atomic_int *)data, 1);
}

Test(client, idle_pooled_connections_close)
{
    atomic_int closed = 0;
    rh_server_t *s = rh_start("127.0.0.1", s_count_close, &closed);
    sq_client_opts_t o;
    sq_client_opts_init(&o);
    o.idle_timeout_ms = 100;
    start_opts(&o);
    char u[128];
    rec_t a = {0}, b = {0};
    fetch(url_of(u, rh_port(s), "/"), &a);
    run_until(&a.calls, 1, 5000);
    cr_assert_eq(stats().open, 1);
    uint64_t t0 = th_now_ms();
    while (stats().open > 0 && th_now_ms() - t0 < 3000)
        run_for(20);
    cr_assert_eq(stats().open, 0, "closed after idle_timeout_ms");
    cr_assert_eq(th_wait_atomic(&closed, 1, 3000), 1, "the server saw it close");
    fetch(url_of(u, rh_port(s), "/"), &b);
    run_until(&b.calls, 1, 5000);
    cr_assert_eq(b.status, 0);
    cr_assert_eq(stats().connections, 2);
    finish();
    rh_stop(s);
}

Test(client, cancel_queued_connecting_receiving)
{
    rh_server_t *s = rh_start("127.0.0.1", s_silent, NULL);
    sq_client_opts_t o;
    sq_client_opts_init(&o);
    o.max_conns_per_host = 1;
    start_opts(&o);
    char u[128];
    rec_t a = {0}, b = {0}, c = {0};
    sq_fetch_t *fa, *fb, *fc;
    fetch_m("GET", url_of(u, rh_port(s), "/"), NULL, &a, &fa);
    fetch_m("GET", u, NULL, &b, &fb);
    cr_assert_eq(stats().queued, 1);
    in_call = true;
    sq_fetch_cancel(fb); /* queued */
    in_call = false;
    cr_assert_eq(b.calls, 0, "never inside the call");
    run_until(&b.calls, 1, 2000);
    cr_assert_eq(b.status, UV_ECANCELED);
    cr_assert_eq(stats().queued, 0);
    /* receiving: the request is on the wire */
    uint64_t t0 = th_now_ms();
    while (rh_requests(s) < 1 && th_now_ms() - t0 < 3000)
        run_for(10);
    in_call = true;
    sq_fetch_cancel(fa);
    sq_fetch_cancel(fa); /* twice: once told */
    in_call = false;
    run_until(&a.calls, 1, 2000);
    cr_assert_eq(a.status, UV_ECANCELED);
    /* connecting (resolving, in fact) */
    fetch_m("GET", u, NULL, &c, &fc);
    in_call = true;
    sq_fetch_cancel(fc);
    in_call = false;
    run_until(&c.calls, 1, 2000);
    run_for(20);
    cr_assert_eq(c.status, UV_ECANCELED);
    cr_assert_eq(a.calls + b.calls + c.calls, 3);
    cr_assert_eq(stats().errors, 3);
    cr_assert_eq(stats().open, 0);
    finish();
    rh_stop(s);
}

Test(client, close_with_many_in_flight)
{
    rh_server_t *s = rh_start("127.0.0.1", s_silent, NULL);
    start();
    char u[128];
    static rec_t r[50];
    memset(r, 0, sizeof(r));
    url_of(u, rh_port(s), "/");
    for (int i = 0; i < 50; i++)
        cr_assert_eq(fetch(u, &r[i]), 0);
    uint64_t t0 = th_now_ms();
    while (rh_requests(s) < 6 && th_now_ms() - t0 < 3000)
        run_for(10);
    cr_assert_eq(rh_requests(s), 6);
    int closed = 0;
    in_call = true;
    cr_assert_eq(sq_client_close(cl, on_closed, &closed), 0);
    in_call = false;
    run_until(&closed, 1, 5000);
    cr_assert_eq(closed, 1);
    for (int i = 0; i < 50; i++) {
        cr_assert_eq(r[i].calls, 1);
        cr_assert_eq(r[i].status, UV_ECANCELED);
    }
    run_for(10);
    cr_assert_eq(uv_loop_close(&loop), 0);
    rh_stop(s);
}

/* ---- a streamed body ---- */

typedef struct stream_st {
    size_t got;
    int chunks;
    bool head_seen;
    size_t stop_after;
} stream_st_t;

static stream_st_t stream;

static int on_chunk(sq_fetch_t *f, const char *chunk, size_t len, void *data)
{
    stream.chunks++;
    stream.got += len;
    stream.head_seen |= sq_fetch_head(f) != NULL && sq_response_status(sq_fetch_head(f)) == 200;
    return stream.stop_after != 0 && stream.got >= stream.stop_after;
}

static void s_big(rh_conn_t *c, void *data)
{
    if (rh_read_head(c, 3000, NULL, 0) < 0)
        return;
    rh_send(c, "HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n");
    static char block[10000];
    memset(block, 'z', sizeof(block));
    for (int i = 0; i < 100; i++)
        if (rh_send_bytes(c, block, sizeof(block)) != 0)
            return;
    rh_wait_close(c, 3000);
}

Test(client, streamed_body)
{
    rh_server_t *s = rh_start("127.0.0.1", s_big, NULL);
    sq_client_opts_t o;
    sq_client_opts_init(&o);
    o.max_body_bytes = 1000; /* streamed bodies have no limit */
    start_opts(&o);
    char u[128];
    rec_t a = {0}, b = {0};
    memset(&stream, 0, sizeof(stream));
    sq_fetch_req_t req;
    sq_fetch_req_init(&req);
    req.url = url_of(u, rh_port(s), "/");
    req.on_body = on_chunk;
    cr_assert_eq(sq_fetch(cl, &req, on_done, &a, NULL), 0);
    run_until(&a.calls, 1, 5000);
    cr_assert_eq(a.status, 0, "%s", sq_strerror(a.status));
    cr_assert_eq(a.len, 0);
    cr_assert_eq(stream.got, 1000000);
    cr_assert(stream.head_seen);
    memset(&stream, 0, sizeof(stream));
    stream.stop_after = 1;
    cr_assert_eq(sq_fetch(cl, &req, on_done, &b, NULL), 0);
    run_until(&b.calls, 1, 5000);
    cr_assert_eq(b.status, UV_ECANCELED);
    cr_assert_eq(stream.chunks, 1);
    sq_promise_t *p;
    cr_assert_eq(sq_fetch_promise(cl, &req, &p), UV_EINVAL, "no on_body in a promise");
    finish();
    rh_stop(s);
}

/* ---- what goes on the wire ---- */

static char wire[4096];

static void s_record(rh_conn_t *c, void *data)
{
    if (rh_read_head(c, 3000, wire, sizeof(wire)) < 0)
        return;
    const char *len = strcasestr(wire, "content-length:");
    size_t n = len ? strtoul(len + 15, NULL, 10) : 0;
    if (n > 0)
        rh_read_body(c, n, 3000);
    rh_send(c, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    rh_wait_close(c, 3000);
}

Test(client, request_head_on_the_wire)
{
    rh_server_t *s = rh_start("127.0.0.1", s_record, NULL);
    start();
    char u[128], want[256];
    sprintf(u, "http://127.0.0.1:%d/p/a%%20b?q=1&r=%%2F", rh_port(s));
    rec_t r = {0};
    sq_fetch_req_t req;
    sq_fetch_req_init(&req);
    req.method = "POST";
    req.url = u;
    req.body = "12345";
    req.body_len = 5;
    sq_header_t hs[] = {{"X-Trace", "t 1"}};
    req.headers = hs;
    req.nheaders = 1;
    cr_assert_eq(sq_fetch(cl, &req, on_done, &r, NULL), 0);
    run_until(&r.calls, 1, 5000);
    finish();
    sprintf(want, "POST /p/a%%20b?q=1&r=%%2F HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n", rh_port(s));
    rh_stop(s);
    cr_assert_eq(r.status, 0);
    cr_assert(strncmp(wire, want, strlen(want)) == 0, "%s", wire);
    cr_assert_not_null(strstr(wire, "\r\nX-Trace: t 1\r\n"));
    cr_assert_not_null(strstr(wire, "\r\nUser-Agent: squall/"));
    cr_assert_not_null(strstr(wire, "\r\nContent-Length: 5\r\n"));
    /* a query alone gets the path "/"; a User-Agent of the request replaces the client's */
    s = rh_start("127.0.0.1", s_record, NULL);
    sq_client_opts_t o;
    sq_client_opts_init(&o);
    o.user_agent = NULL;
    start_opts(&o);
    memset(&r, 0, sizeof(r));
    sprintf(u, "http://127.0.0.1:%d?x", rh_port(s));
    cr_assert_eq(fetch(u, &r), 0);
    run_until(&r.calls, 1, 5000);
    finish();
    rh_stop(s);
    cr_assert(strncmp(wire, "GET /?x HTTP/1.1\r\n", 18) == 0, "%s", wire);
    cr_assert_null(strcasestr(wire, "user-agent"));
    cr_assert_null(strcasestr(wire, "content-length"));
}

/* A listener whose accept queue is full: the kernel drops the SYN, the connect hangs. */
Test(client, connect_timeout)
{
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof(a);
    cr_assert_eq(bind(lfd, (struct sockaddr *)&a, sl), 0);
    cr_assert_eq(listen(lfd, 0), 0);
    getsockname(lfd, (struct sockaddr *)&a, &sl);
    int fill[4];
    for (int i = 0; i < 4; i++) {
        fill[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        connect(fill[i], (struct sockaddr *)&a, sl);
    }
    th_sleep_ms(50);
    sq_client_opts_t o;
    sq_client_opts_init(&o);
    o.connect_timeout_ms = 200;
    start_opts(&o);
    char u[128];
    rec_t r = {0};
    uint64_t t0 = th_now_ms();
    fetch(url_of(u, ntohs(a.sin_port), "/"), &r);
    run_until(&r.calls, 1, 5000);
    uint64_t took = th_now_ms() - t0;
    finish();
    for (int i = 0; i < 4; i++)
        close(fill[i]);
    close(lfd);
    cr_assert_eq(r.status, UV_ETIMEDOUT, "%s", sq_strerror(r.status));
    cr_assert_lt(took, 2000);
}

/* ---- calls made from inside the client's own callbacks ---- */

static rec_t inner[10];
static int inner_closed;

static void close_in_cb(sq_fetch_t *f, int status, const sq_response_t *res, void *data)
{
    on_done(f, status, res, data);
    cr_assert_eq(sq_client_close(cl, on_closed, &inner_closed), 0);
    rec_t late = {0};
    cr_assert_eq(fetch("http://127.0.0.1:1/", &late), SQ_ECLOSED);
}

static int cancel_in_body(sq_fetch_t *f, const char *chunk, size_t len, void *data)
{
    sq_fetch_cancel(f);
    return 0;
}

static int close_in_body(sq_fetch_t *f, const char *chunk, size_t len, void *data)
{
    sq_client_close(cl, on_closed, &inner_closed);
    return 0;
}

Test(client, close_and_cancel_inside_callbacks)
{
    int delay = 0;
    rh_server_t *s = rh_start("127.0.0.1", s_ok, &delay);
    rh_server_t *silent = rh_start("127.0.0.1", s_silent, NULL);
    start();
    char u[128], v[128];
    url_of(u, rh_port(s), "/quick");
    url_of(v, rh_port(silent), "/never");
    memset(inner, 0, sizeof(inner));
    inner_closed = 0;
    sq_fetch_req_t req;
    sq_fetch_req_init(&req);
    req.url = u;
    cr_assert_eq(sq_fetch(cl, &req, close_in_cb, &inner[0], NULL), 0);
    for (int i = 1; i < 10; i++)
        cr_assert_eq(fetch(v, &inner[i]), 0);
    run_until(&inner_closed, 1, 5000);
    cr_assert_eq(inner_closed, 1);
    cr_assert_eq(inner[0].status, 0);
    for (int i = 1; i < 10; i++) {
        cr_assert_eq(inner[i].calls, 1);
        cr_assert_eq(inner[i].status, UV_ECANCELED);
    }
    run_for(10);
    cr_assert_eq(uv_loop_close(&loop), 0);
    rh_stop(silent);
    /* a streamed body: the fetch cancelled, then the client closed, from on_body */
    rh_server_t *big = rh_start("127.0.0.1", s_big, NULL);
    start();
    url_of(u, rh_port(big), "/");
    rec_t a = {0}, b = {0};
    req.url = u;
    req.on_body = cancel_in_body;
    cr_assert_eq(sq_fetch(cl, &req, on_done, &a, NULL), 0);
    run_until(&a.calls, 1, 5000);
    cr_assert_eq(a.calls, 1);
    cr_assert_eq(a.status, UV_ECANCELED);
    req.on_body = close_in_body;
    inner_closed = 0;
    cr_assert_eq(sq_fetch(cl, &req, on_done, &b, NULL), 0);
    run_until(&inner_closed, 1, 5000);
    cr_assert_eq(b.calls, 1);
    cr_assert_eq(b.status, UV_ECANCELED);
    cr_assert_eq(inner_closed, 1);
    run_for(10);
    cr_assert_eq(uv_loop_close(&loop), 0);
    rh_stop(big);
    rh_stop(s);
}

/* Keep-alive, then the server closes the idle connection: the client sees it go and the
 * next request takes a new connection (no retry needed). */
static void s_close_idle(rh_conn_t *c, void *data)
{
    if (rh_read_head(c, 3000, NULL, 0) < 0)
        return;
    rh_send(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    rh_sleep(c, 50);
}

Test(client, idle_connection_closed_by_the_server)
{
    rh_server_t *s = rh_start("127.0.0.1", s_close_idle, NULL);
    start();
    char u[128];
    rec_t a = {0}, b = {0};
    fetch(url_of(u, rh_port(s), "/"), &a);
    run_until(&a.calls, 1, 5000);
    cr_assert_eq(a.status, 0);
    uint64_t t0 = th_now_ms();
    while (stats().open > 0 && th_now_ms() - t0 < 3000)
        run_for(20);
    cr_assert_eq(stats().open, 0, "the server's close was seen");
    fetch(u, &b);
    run_until(&b.calls, 1, 5000);
    cr_assert_eq(b.status, 0);
    cr_assert_str_eq(b.body, "ok");
    cr_assert_eq(stats().connections, 2);
    cr_assert_eq(stats().retried, 0);
    finish();
    rh_stop(s);
}

/* A redirect to another host:port goes to that pool. */
Test(client, redirect_to_another_server)
{
    rh_server_t *s = rh_start("127.0.0.1", s_ok, NULL);
    static char loc[128];
    sprintf(loc, "302 http://127.0.0.1:%d/there", rh_port(s));
    cr_assert_eq(sq_app_create(&app), 0);
    sq_app_route(app, "/away", &redir_h, loc);
    th_server_t *ts = th_server_start(app, NULL);
    sq_client_opts_t o;
    sq_client_opts_init(&o);
    o.max_redirects = 1;
    start_opts(&o);
    char u[128], want[128];
    rec_t r = {0};
    fetch(url_of(u, th_server_port(ts), "/away"), &r);
    run_until(&r.calls, 1, 5000);
    cr_assert_eq(r.status, 0, "%s", sq_strerror(r.status));
    cr_assert_str_eq(r.body, "/there");
    cr_assert_str_eq(r.url, url_of(want, rh_port(s), "/there"));
    cr_assert_eq(stats().connections, 2);
    finish();
    server_stop(ts);
    rh_stop(s);
}

/* The other origin's script: answers 200 with the request head it got as the body. */
static void s_echo_head(rh_conn_t *c, void *data)
{
    char head[1024];
    if (rh_read_head(c, 3000, head, sizeof(head)) < 0)
        return;
    char out[1400];
    snprintf(out, sizeof(out), "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n%s", strlen(head),
             head);
    rh_send(c, out);
    rh_wait_close(c, 3000);
}

/* This origin: a redirect to `data` (a URL) whose body must not reach on_body. */
static void s_redirect_with_body(rh_conn_t *c, void *data)
{
    if (rh_read_head(c, 3000, NULL, 0) < 0)
        return;
    char out[512];
    snprintf(out, sizeof(out),
             "HTTP/1.1 302 Found\r\nLocation: %s\r\nContent-Length: 13\r\n\r\nREDIRECT-BODY",
             (const char *)data);
    rh_send(c, out);
    rh_wait_close(c, 3000);
}

static char streamed[2048];
static size_t nstreamed;

static int keep_chunk(sq_fetch_t *f, const char *chunk, size_t len, void *data)
{
    if (nstreamed + len < sizeof(streamed)) {
        memcpy(streamed + nstreamed, chunk, len);
        nstreamed += len;
    }
    return 0;
}

Test(client, a_redirect_to_another_origin_drops_credentials_and_its_body)
{
    rh_server_t *other = rh_start("127.0.0.1", s_echo_head, NULL);
    static char there[128];
    snprintf(there, sizeof(there), "http://127.0.0.1:%d/there", rh_port(other));
    rh_server_t *s = rh_start("127.0.0.1", s_redirect_with_body, there);
    sq_client_opts_t o;
    sq_client_opts_init(&o);
    o.max_redirects = 2;
    start_opts(&o);
    char u[128];
    static const sq_header_t hs[] = {{"Authorization", "Bearer secret"},
                                     {"Cookie", "id=1"},
                                     {"Proxy-Authorization", "Basic x"},
                                     {"X-Keep", "kept"}};
    sq_fetch_req_t req;
    sq_fetch_req_init(&req);
    req.url = url_of(u, rh_port(s), "/here");
    req.headers = hs;
    req.nheaders = 4;
    req.on_body = keep_chunk;
    nstreamed = 0;
    rec_t r = {0};
    cr_assert_eq(sq_fetch(cl, &req, on_done, &r, NULL), 0);
    run_until(&r.calls, 1, 5000);
    cr_assert_eq(r.status, 0, "%s", sq_strerror(r.status));
    streamed[nstreamed] = '\0';
    cr_assert_null(strstr(streamed, "REDIRECT-BODY"), "the 302's body was streamed: %s",
                   streamed);
    cr_assert_not_null(strstr(streamed, "GET /there HTTP/1.1"), "%s", streamed);
    cr_assert_not_null(strstr(streamed, "X-Keep: kept"), "%s", streamed);
    cr_assert_null(strcasestr(streamed, "authorization"), "credentials went to another "
                                                          "origin: %s", streamed);
    cr_assert_null(strcasestr(streamed, "cookie"), "%s", streamed);
    finish();
    rh_stop(s);
    rh_stop(other);
}

/* Answers the first request with its response and, in the same write, a second one
 * nobody asked for; later connections get a plain answer. */
static void s_unasked(rh_conn_t *c, void *data)
{
    if (rh_read_head(c, 3000, NULL, 0) < 0)
        return;
    if (c->index == 0) {
        /* the first response fills the client's 64 KiB read exactly: the forged one
         * is left in the kernel when the connection goes back to the pool */
        static char out[65536 + 64];
        const char *forged = "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nFORGED";
        int h = snprintf(out, sizeof(out), "HTTP/1.1 200 OK\r\nContent-Length: %5d\r\n\r\n",
                         0);
        size_t body = 65536 - (size_t)h;
        snprintf(out, sizeof(out), "HTTP/1.1 200 OK\r\nContent-Length: %5zu\r\n\r\n", body);
        memset(out + h, 'a', body);
        memcpy(out + 65536, forged, strlen(forged));
        rh_send_bytes(c, out, 65536 + strlen(forged));
        rh_sleep(c, 500);
        if (rh_read_head(c, 1000, NULL, 0) >= 0)
            rh_send(c, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nlate");
    } else {
        rh_send(c, "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecond");
    }
    rh_wait_close(c, 3000);
}

Test(client, a_response_nobody_asked_for_is_not_given_to_the_next_request)
{
    rh_server_t *s = rh_start("127.0.0.1", s_unasked, NULL);
    sq_client_opts_t o;
    sq_client_opts_init(&o);
    o.max_conns_per_host = 1;
    o.max_body_bytes = 1 << 20;
    start_opts(&o);
    char u[128];
    rec_t a = {0}, b = {0};
    fetch(url_of(u, rh_port(s), "/a"), &a);
    fetch(url_of(u, rh_port(s), "/b"), &b); /* queued behind a on the one connection */
    run_until(&b.calls, 1, 5000);
    cr_assert_eq(a.status, 0, "%s", sq_strerror(a.status));
    cr_assert_eq(a.len, 65536 - 42);
    cr_assert_eq(b.status, 0, "%s", sq_strerror(b.status));
    cr_assert_str_eq(b.body, "second", "the next request took the forged answer");
    finish();
    rh_stop(s);
}
