/* Hooks, streamed bodies, url_for, cookies, CORS and hello's /upload at their edges:
 * Expect: 100-continue with a refusing hook, after hooks on squall's own 408/400, a
 * stalled streamed body, mounts and their 404s, dot segments and long prefixes in
 * url_for, far Expires dates, a JSON preflight, a part name that is not UTF-8. Real
 * sockets where the wire matters, the test client otherwise. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <squall.h>
#include <squall/testing.h>

#include "support/harness.h"
#include "support/hello.h"

/* ---- shared bits ---- */

static atomic_int handler_runs, after_runs, after_status;
static char seen_target[256], seen_method[32]; /* recorded by after hooks, read after stop */
static atomic_int after_rc;

static void reset_counters(void)
{
    atomic_store(&handler_runs, 0);
    atomic_store(&after_runs, 0);
    atomic_store(&after_status, 0);
    atomic_store(&after_rc, 0);
    seen_target[0] = seen_method[0] = '\0';
}

static void ok_get(sq_req_t *req, sq_res_t *res, void *data)
{
    atomic_fetch_add(&handler_runs, 1);
    sq_res_send(res, 200, "text/plain", "ok", 2);
}

/* Refuses what carries no X-Token: yes, before any body is read. */
static int auth(sq_req_t *req, sq_res_t *res, void *data)
{
    const char *t = sq_req_header(req, "X-Token");
    if (t != NULL && strcmp(t, "yes") == 0)
        return SQ_NEXT;
    sq_res_send_error(res, 401, "Not authenticated");
    return SQ_PAUSE;
}

static void on_piece(sq_req_t *req, int status, const char *data, size_t len, void *ud)
{
    if (status == 0)
        return;
    sq_res_send(sq_req_data(req), status == UV_EOF ? 200 : 400, "text/plain", "done", 4);
}

static void stream_post(sq_req_t *req, sq_res_t *res, void *data)
{
    atomic_fetch_add(&handler_runs, 1);
    sq_req_set_data(req, res);
    sq_req_body_read(req, on_piece, NULL);
}

static void buffered_post(sq_req_t *req, sq_res_t *res, void *data)
{
    atomic_fetch_add(&handler_runs, 1);
    sq_res_send(res, 200, "text/plain", "done", 4);
}

static const sq_handler_t streamed = {
    .post = stream_post, .stream_body = SQ_STREAM(SQ_METHOD_POST), .stream_body_max = 1ull << 32};
static const sq_handler_t buffered = {.post = buffered_post};
static const sq_handler_t plain = {.get = ok_get};

/* ---- Expect: 100-continue and before hooks ----
 *
 * RFC 9110 §10.1.1: a server that will refuse the request (an auth hook's 401) should
 * answer with the final status instead of 100 Continue, so the client never sends the
 * body. Uvicorn sends 100 only when the app first reads the body. squall writes 100
 * Continue in on_headers_complete before the hooks have run. */

static th_server_t *start_expect(sq_app_t **out)
{
    sq_app_t *a;
    cr_assert_eq(sq_app_create(&a), 0);
    cr_assert_eq(sq_app_before(a, auth, NULL), 0);
    cr_assert_eq(sq_app_route(a, "/up", &streamed, NULL), 0);
    cr_assert_eq(sq_app_route(a, "/buf", &buffered, NULL), 0);
    reset_counters();
    *out = a;
    return th_server_start(a, NULL);
}

Test(stream_edge, expect_100_continue_is_not_sent_when_a_before_hook_refuses_a_streamed_upload,
     .timeout = 30)
{
    sq_app_t *a;
    th_server_t *ts = start_expect(&a);
    th_conn_t c;
    cr_assert_eq(th_conn_open(&c, th_server_port(ts)), 0);
    th_conn_sends(&c, "POST /up HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n"
                      "Content-Length: 1000000000\r\n\r\n");
    th_res_t r;
    cr_assert_eq(th_conn_read_res(&c, &r, 5000, false), 0);
    int first = r.status;
    th_res_free(&r);
    th_conn_close(&c);
    th_server_stop(ts, 1000);
    sq_app_destroy(a);
    cr_expect_eq(first, 401,
                 "the first answer was %d: the client was told to send 1 GB "
                 "that the auth hook refuses",
                 first);
}

/* A buffered body is read before the before hooks run (docs/hooks.md says so): 100
 * Continue goes at the head, then the hook's 401 once the body came. A route that must
 * refuse before the body declares it streamed (the test above). */
Test(stream_edge, expect_100_continue_on_a_buffered_body_comes_before_the_hooks_answer,
     .timeout = 30)
{
    sq_app_t *a;
    th_server_t *ts = start_expect(&a);
    th_conn_t c;
    cr_assert_eq(th_conn_open(&c, th_server_port(ts)), 0);
    th_conn_sends(&c, "POST /buf HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n"
                      "Content-Length: 5\r\n\r\n");
    th_res_t r;
    cr_assert_eq(th_conn_read_res(&c, &r, 5000, false), 0);
    cr_expect_eq(r.status, 100);
    th_res_free(&r);
    th_conn_sends(&c, "hello");
    cr_assert_eq(th_conn_read_res(&c, &r, 5000, false), 0);
    cr_expect_eq(r.status, 401);
    th_res_free(&r);
    th_conn_close(&c);
    th_server_stop(ts, 1000);
    sq_app_destroy(a);
    cr_expect_eq(atomic_load(&handler_runs), 0);
}

/* ---- after hooks on squall's own answers (408) ---- */

static void after_record(sq_req_t *req, sq_res_t *res, int status, void *data)
{
    const char *t = sq_req_target(req);
    snprintf(seen_target, sizeof(seen_target), "%.200s", t ? t : "(NULL)");
    const char *m = sq_req_method(req);
    snprintf(seen_method, sizeof(seen_method), "%s", m ? m : "(NULL)");
    atomic_store(&after_status, status);
    atomic_fetch_add(&after_runs, 1);
}

static th_server_t *start_408(sq_app_t **out)
{
    sq_app_t *a;
    cr_assert_eq(sq_app_create(&a), 0);
    cr_assert_eq(sq_app_after(a, after_record, NULL), 0);
    cr_assert_eq(sq_app_route(a, "/previous-long-target-abcdefghijklmnop", &plain, NULL), 0);
    reset_counters();
    sq_server_opts_t o;
    sq_server_opts_init(&o);
    o.header_timeout_ms = 300;
    *out = a;
    return th_server_start(a, &o);
}

/* A keep-alive connection's second request times out in its target: the after hook
 * (an access log) reads sq_req_target and gets the new bytes over the previous request's
 * target — the head buffer is reused and the partial target is not terminated. */
Test(hooks_edge, an_after_hook_on_a_408_reads_a_target_without_the_previous_requests_bytes,
     .timeout = 30)
{
    sq_app_t *a;
    th_server_t *ts = start_408(&a);
    th_conn_t c;
    cr_assert_eq(th_conn_open(&c, th_server_port(ts)), 0);
    th_conn_sends(&c, "GET /previous-long-target-abcdefghijklmnop HTTP/1.1\r\nHost: t\r\n\r\n");
    th_expect_res(&c, 200, "ok");
    th_conn_sends(&c, "GET /ab");
    th_res_t r;
    cr_assert_eq(th_conn_read_res(&c, &r, 5000, false), 0);
    cr_expect_eq(r.status, 408);
    th_res_free(&r);
    th_conn_close(&c);
    th_server_stop(ts, 1000);
    sq_app_destroy(a);
    cr_assert_eq(atomic_load(&after_status), 408);
    cr_expect(strstr(seen_target, "abcdefghijklmnop") == NULL,
              "the 408's target as an after hook reads it: \"%s\"", seen_target);
}

/* A request cut in its method ("GE"): llhttp's method 0 is DELETE, and the after hook
 * logs "DELETE" for a request that never named one. */
Test(hooks_edge, an_after_hook_on_a_408_cut_in_the_method_does_not_read_delete, .timeout = 30)
{
    sq_app_t *a;
    th_server_t *ts = start_408(&a);
    th_conn_t c;
    cr_assert_eq(th_conn_open(&c, th_server_port(ts)), 0);
    th_conn_sends(&c, "GE");
    th_res_t r;
    cr_assert_eq(th_conn_read_res(&c, &r, 5000, false), 0);
    cr_expect_eq(r.status, 408);
    th_res_free(&r);
    th_conn_close(&c);
    th_server_stop(ts, 1000);
    sq_app_destroy(a);
    cr_assert_eq(atomic_load(&after_status), 408);
    cr_expect_str_neq(seen_method, "DELETE", "the method of a request that named none");
}

/* ---- after hooks and a client that left ----
 *
 * The handler answers 200 ms after its client reset the connection: the answer is
 * dropped (UV_ECANCELED) and no after hook runs, so an access-log/timing hook never
 * sees the request at all (Starlette's middleware and aiohttp's on_response_prepare
 * still run for it). */

static void answer_later(uv_timer_t *t)
{
    sq_res_send(t->data, 200, "text/plain", "late", 4);
    uv_close((uv_handle_t *)t, (uv_close_cb)free);
}

static void slow_get(sq_req_t *req, sq_res_t *res, void *data)
{
    atomic_fetch_add(&handler_runs, 1);
    uv_timer_t *t = malloc(sizeof(*t));
    uv_timer_init(sq_req_loop(req), t);
    t->data = res;
    uv_timer_start(t, answer_later, 300, 0);
}

static const sq_handler_t slow = {.get = slow_get};

Test(hooks_edge, after_hooks_run_for_a_request_whose_client_left, .timeout = 30)
{
    sq_app_t *a;
    cr_assert_eq(sq_app_create(&a), 0);
    cr_assert_eq(sq_app_after(a, after_record, NULL), 0);
    cr_assert_eq(sq_app_route(a, "/slow", &slow, NULL), 0);
    reset_counters();
    th_server_t *ts = th_server_start(a, NULL);
    th_conn_t c;
    cr_assert_eq(th_conn_open(&c, th_server_port(ts)), 0);
    th_conn_sends(&c, "GET /slow HTTP/1.1\r\nHost: t\r\n\r\n");
    cr_assert_geq(th_wait_atomic(&handler_runs, 1, 5000), 1);
    th_conn_abort(&c);
    th_sleep_ms(700); /* the late answer's timer fires at 300 ms */
    th_server_stop(ts, 1000);
    sq_app_destroy(a);
    cr_expect_eq(atomic_load(&after_runs), 1,
                 "after hooks ran %d times for a request whose "
                 "client left",
                 atomic_load(&after_runs));
}

/* ---- router.h's own word on after hooks ---- */

static void after_try_finish(sq_req_t *req, sq_res_t *res, int status, void *data)
{
    atomic_store(&after_rc, sq_res_send(res, 500, "text/plain", "x", 1));
}

/* router.h: a finishing call in an after hook returns SQ_EALREADY_SENT. */
Test(hooks_edge, a_finishing_call_in_an_after_hook_returns_what_router_h_says)
{
    sq_app_t *a;
    sq_test_t *t;
    cr_assert_eq(sq_app_create(&a), 0);
    cr_assert_eq(sq_app_after(a, after_try_finish, NULL), 0);
    cr_assert_eq(sq_app_route(a, "/", &plain, NULL), 0);
    cr_assert_eq(sq_test_create(&t, a, NULL), 0);
    sq_test_res_t *r;
    cr_assert_eq(sq_test_request(t, "GET", "/", NULL, NULL, &r), 0);
    cr_expect_eq(r->status, 200);
    sq_test_res_free(r);
    cr_assert_eq(sq_test_destroy(t), 0);
    sq_app_destroy(a);
    cr_expect_eq(atomic_load(&after_rc), SQ_EALREADY_SENT, "got %d (%s)", atomic_load(&after_rc),
                 sq_strerror(atomic_load(&after_rc)));
}

/* ---- url_for ---- */

static sq_app_t *url_app(void)
{
    sq_app_t *a, *s1, *s2;
    cr_assert_eq(sq_app_create(&a), 0);
    cr_assert_eq(sq_app_create(&s1), 0);
    cr_assert_eq(sq_app_create(&s2), 0);
    cr_assert_eq(sq_app_route_named(s1, "x", "/x", &plain, NULL), 0);
    cr_assert_eq(sq_app_route_named(s2, "y", "/y", &plain, NULL), 0);
    cr_assert_eq(sq_app_route_named(a, "item", "/items/{id}", &plain, NULL), 0);
    cr_assert_eq(sq_app_mount(a, "/a-mount-prefix-of-more-than-sixteen-bytes", s1), 0);
    cr_assert_eq(sq_app_mount(a, "/b", s2), 0);
    return a;
}

/* A mount whose prefix does not fit the buffer ends the search with UV_ENOBUFS, though
 * the route asked for is in a later mount and fits (or is nowhere: UV_ENOENT). */
Test(router_edge, url_for_is_not_stopped_by_an_unrelated_mounts_long_prefix)
{
    sq_app_t *a = url_app();
    char buf[16];
    int rc = sq_app_url_for(a, "y", NULL, buf, sizeof(buf));
    int rc2 = sq_app_url_for(a, "no-such-route", NULL, buf, sizeof(buf));
    sq_app_destroy(a);
    cr_expect_eq(rc, 4, "url_for(\"y\") into 16 bytes: %d (%s)", rc, sq_strerror(rc));
    cr_expect_eq(rc2, UV_ENOENT, "url_for of an unknown name: %d (%s)", rc2, sq_strerror(rc2));
}

/* A segment parameter of "." or ".." is written as it is: "/items/.." is a dot-segment
 * that every client removes (RFC 3986 §5.2.4), so the redirect goes to "/". */
Test(router_edge, url_for_does_not_write_a_dot_segment_for_a_parameter)
{
    sq_app_t *a = url_app();
    char buf[64];
    const char *p[] = {"id", "..", NULL};
    int rc = sq_app_url_for(a, "item", p, buf, sizeof(buf));
    sq_app_destroy(a);
    cr_assert_gt(rc, 0);
    cr_expect_str_neq(buf, "/items/..", "a parameter became a dot-segment");
}

/* ---- cookies ---- */

static void far_cookie_get(sq_req_t *req, sq_res_t *res, void *data)
{
    sq_cookie_opts_t o;
    sq_cookie_opts_init(&o);
    o.expires = 253402300800LL; /* 10000-01-01: "never expires" */
    atomic_store(&after_rc, sq_res_set_cookie(res, "k", "v", &o));
    sq_res_send(res, 200, "text/plain", "ok", 2);
}

static const sq_handler_t far_cookie = {.get = far_cookie_get};

/* An Expires past year 9999 is written as 1970: the browser deletes the cookie at once,
 * the opposite of what the application asked for. */
Test(cookie_edge, an_expires_past_9999_does_not_become_1970)
{
    sq_app_t *a;
    sq_test_t *t;
    cr_assert_eq(sq_app_create(&a), 0);
    cr_assert_eq(sq_app_route(a, "/", &far_cookie, NULL), 0);
    cr_assert_eq(sq_test_create(&t, a, NULL), 0);
    sq_test_res_t *r;
    cr_assert_eq(sq_test_request(t, "GET", "/", NULL, NULL, &r), 0);
    const char *sc = sq_test_res_header(r, "Set-Cookie");
    char copy[256];
    snprintf(copy, sizeof(copy), "%s", sc ? sc : "(none)");
    sq_test_res_free(r);
    cr_assert_eq(sq_test_destroy(t), 0);
    sq_app_destroy(a);
    if (atomic_load(&after_rc) == 0)
        cr_expect(strstr(copy, "1970") == NULL, "Set-Cookie: %s", copy);
}

/* ---- CORS ---- */

/* fetch() with Content-Type: application/json preflights with
 * Access-Control-Request-Headers: content-type (the header is safelisted only for the
 * three form types, Fetch §2.2.2's CORS-safelisted request-header). squall takes it as
 * safelisted and answers 200 without Access-Control-Allow-Headers, so the browser's CORS
 * check fails (Fetch §4.8 step 7: a header not in the list). Starlette's
 * CORSMiddleware lists Accept, Accept-Language, Content-Language and Content-Type in
 * every preflight answer. */
Test(cors_edge, a_preflight_for_content_type_json_lists_content_type_as_allowed)
{
    sq_app_t *a;
    sq_test_t *t;
    cr_assert_eq(sq_app_create(&a), 0);
    static const char *const origins[] = {"https://a.example", NULL};
    static const char *const methods[] = {"GET", "POST", NULL};
    sq_cors_opts_t o;
    sq_cors_opts_init(&o);
    o.origins = origins;
    o.methods = methods;
    cr_assert_eq(sq_app_cors(a, &o), 0);
    cr_assert_eq(sq_app_route(a, "/", &plain, NULL), 0);
    cr_assert_eq(sq_test_create(&t, a, NULL), 0);
    static const char *const pre[] = {"Origin: https://a.example",
                                      "Access-Control-Request-Method: POST",
                                      "Access-Control-Request-Headers: content-type", NULL};
    sq_test_res_t *r;
    cr_assert_eq(sq_test_request(t, "OPTIONS", "/", pre, NULL, &r), 0);
    int status = r->status;
    const char *h = sq_test_res_header(r, "Access-Control-Allow-Headers");
    char allow[256];
    snprintf(allow, sizeof(allow), "%s", h ? h : "(none)");
    sq_test_res_free(r);
    cr_assert_eq(sq_test_destroy(t), 0);
    sq_app_destroy(a);
    cr_expect_eq(status, 200);
    cr_expect(strcasestr(allow, "content-type") != NULL,
              "Access-Control-Allow-Headers: %s — the browser refuses the POST", allow);
}

/* ---- hello's POST /upload ---- */

/* A file part whose name is not UTF-8 (a Latin-1 form, a hostile client) is received and
 * hashed, then left out of "files" without a word: json_pack fails on the name and
 * json_array_append_new(files, NULL) is ignored. The answer says 200 with no file. */
Test(hello_edge, upload_never_drops_a_file_part_from_its_answer, .timeout = 30)
{
    th_hello_t h = th_hello_start(NULL);
    static const char body[] = "--XyZ\r\nContent-Disposition: form-data; name=\"\xe9\"; "
                               "filename=\"a.txt\"\r\n\r\nabc\r\n--XyZ--\r\n";
    char req[512];
    snprintf(req, sizeof(req),
             "POST /upload HTTP/1.1\r\nHost: t\r\nContent-Type: multipart/form-data; "
             "boundary=XyZ\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n%s",
             sizeof(body) - 1, body);
    th_res_t r;
    int rc = th_request(h.port, req, &r);
    th_hello_stop(&h);
    cr_assert_eq(rc, 0);
    int status = r.status;
    json_t *j = json_loads(r.body, 0, NULL);
    size_t nfiles = json_array_size(json_object_get(j, "files"));
    char copy[256];
    snprintf(copy, sizeof(copy), "%s", r.body);
    json_decref(j);
    th_res_free(&r);
    cr_expect(status != 200 || nfiles == 1, "%d %s", status, copy);
}

/* ---- a 404 inside a mount ---- */

static void sub_404(sq_req_t *req, sq_res_t *res, int status, const json_t *detail, void *data)
{
    sq_res_send(res, 404, "text/plain", "sub", 3);
}

static atomic_int sub_hook_runs;

static int sub_before(sq_req_t *req, sq_res_t *res, void *data)
{
    atomic_fetch_add(&sub_hook_runs, 1);
    return SQ_NEXT;
}

/* router.h: "The nearest app on the way to the route that has one is used (a 404 outside
 * every mount: the served app's)". A 404 under /api/v1 is inside the mount, but the
 * served app's handler (here: the default) answers, and the sub-app's hooks (its CORS,
 * its auth) do not run. Starlette's Mount hands the whole prefix to the sub-app, whose
 * exception handlers and middleware answer its 404s. */
Test(router_edge, a_404_under_a_mounts_prefix_is_the_sub_apps)
{
    sq_app_t *a, *sub;
    sq_test_t *t;
    cr_assert_eq(sq_app_create(&a), 0);
    cr_assert_eq(sq_app_create(&sub), 0);
    cr_assert_eq(sq_app_route(sub, "/items", &plain, NULL), 0);
    cr_assert_eq(sq_app_on_error(sub, 404, sub_404, NULL), 0);
    cr_assert_eq(sq_app_before(sub, sub_before, NULL), 0);
    cr_assert_eq(sq_app_mount(a, "/api/v1", sub), 0);
    cr_assert_eq(sq_test_create(&t, a, NULL), 0);
    atomic_store(&sub_hook_runs, 0);
    sq_test_res_t *r;
    cr_assert_eq(sq_test_request(t, "GET", "/api/v1/nope", NULL, NULL, &r), 0);
    int status = r->status;
    char body[128];
    snprintf(body, sizeof(body), "%s", r->body);
    sq_test_res_free(r);
    cr_assert_eq(sq_test_destroy(t), 0);
    sq_app_destroy(a);
    cr_expect_eq(status, 404);
    cr_expect_str_eq(body, "sub", "the 404 under the mount's prefix was answered by: %s", body);
    cr_expect_eq(atomic_load(&sub_hook_runs), 1, "the sub-app's before hooks ran %d times",
                 atomic_load(&sub_hook_runs));
}

/* ---- a header cut by a 408, as an after hook reads it ---- */

static char seen_header[128];

static void after_header(sq_req_t *req, sq_res_t *res, int status, void *data)
{
    const char *v = sq_req_header(req, "X-Partial");
    snprintf(seen_header, sizeof(seen_header), "%s", v ? v : "(NULL)");
    atomic_store(&after_status, status);
}

/* The head stops after a field's name: the header index has the name and a value of
 * offset 0, so sq_req_header gives the request target as X-Partial's value. */
Test(hooks_edge, an_after_hook_on_a_408_does_not_read_the_target_as_a_cut_headers_value,
     .timeout = 30)
{
    sq_app_t *a;
    cr_assert_eq(sq_app_create(&a), 0);
    cr_assert_eq(sq_app_after(a, after_header, NULL), 0);
    reset_counters();
    sq_server_opts_t o;
    sq_server_opts_init(&o);
    o.header_timeout_ms = 300;
    th_server_t *ts = th_server_start(a, &o);
    th_conn_t c;
    cr_assert_eq(th_conn_open(&c, th_server_port(ts)), 0);
    th_conn_sends(&c, "GET /the-target HTTP/1.1\r\nHost: t\r\nX-Partial: ");
    th_res_t r;
    cr_assert_eq(th_conn_read_res(&c, &r, 5000, false), 0);
    cr_expect_eq(r.status, 408);
    th_res_free(&r);
    th_conn_close(&c);
    th_server_stop(ts, 1000);
    sq_app_destroy(a);
    cr_assert_eq(atomic_load(&after_status), 408);
    cr_expect_str_neq(seen_header, "/the-target", "X-Partial as the after hook reads it");
}

/* ---- the body timeout while a body streams ---- */

static atomic_int stream_end_status;

static void on_piece_record(sq_req_t *req, int status, const char *data, size_t len, void *ud)
{
    if (status == 0)
        return;
    atomic_store(&stream_end_status, status);
    sq_res_send_error(sq_req_data(req),
                      status == UV_EOF ? 200 : status == UV_ETIMEDOUT ? 408 : 400, "ended");
}

static void stream_post_record(sq_req_t *req, sq_res_t *res, void *data)
{
    sq_req_set_data(req, res);
    sq_req_body_read(req, on_piece_record, NULL);
}

static const sq_handler_t streamed_record = {.post = stream_post_record,
                                             .stream_body = SQ_STREAM(SQ_METHOD_POST),
                                             .stream_body_max = 1 << 20};

/* server.h: body_timeout_ms "-> 408"; req.h: while a body streams it is a silence
 * timeout. A client that stalls mid-body on a streamed route: its reader is told
 * UV_ETIMEDOUT and answers 408, which the client reads (not a dropped connection). */
Test(stream_edge, a_stalled_streamed_body_is_answered_408, .timeout = 30)
{
    sq_app_t *a;
    cr_assert_eq(sq_app_create(&a), 0);
    cr_assert_eq(sq_app_route(a, "/up", &streamed_record, NULL), 0);
    atomic_store(&stream_end_status, 1);
    sq_server_opts_t o;
    sq_server_opts_init(&o);
    o.body_timeout_ms = 300;
    th_server_t *ts = th_server_start(a, &o);
    th_conn_t c;
    cr_assert_eq(th_conn_open(&c, th_server_port(ts)), 0);
    th_conn_sends(&c, "POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n0123456789");
    th_res_t r;
    int rc = th_conn_read_res(&c, &r, 5000, false);
    int status = rc == 0 ? r.status : rc;
    if (rc == 0)
        th_res_free(&r);
    th_conn_close(&c);
    th_server_stop(ts, 1000);
    sq_app_destroy(a);
    cr_expect_eq(status, 408, "the stalled client got %d (%s); the reader was told %d", status,
                 status < 0 ? sq_strerror(status) : "a status", atomic_load(&stream_end_status));
}
