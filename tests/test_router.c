/* The router: patterns and typed parameters, 404/405/422, HEAD falling back to GET,
 * percent-decoding of paths and queries, header look-up, JSON in and out. The requests go
 * through the test client (squall/testing.h: the server's parser, router and serializer
 * with no socket), raw where the exact bytes matter; pipelining over a real socket. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>
#include <jansson.h>

#include "squall/testing.h"
#include "support/harness.h"

/* ---- patterns ---- */

static const sq_handler_t nothing = {.get = NULL};

Test(router, malformed_patterns_are_refused, .timeout = 5)
{
    sq_app_t *app;
    cr_assert_eq(sq_app_create(&app), 0);
    static const char *bad[] = {
        "",           "items",     "/{}",          "/{x:float}", "/*/a",
        "/{p:path}/x", "/a{b}",    "/{x",          "/x}",        "/{:int}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        cr_assert_eq(sq_app_route(app, bad[i], &nothing, NULL), SQ_EPATTERN, "pattern '%s'",
                     bad[i]);
    char many[256] = "";
    for (int i = 0; i < 17; i++)
        snprintf(many + strlen(many), sizeof(many) - strlen(many), "/{p%d}", i);
    cr_assert_eq(sq_app_route(app, many, &nothing, NULL), SQ_EPATTERN, "17 parameters");
    cr_assert_eq(sq_app_route(app, "/{a}/{b:int}/{c:str}/{d:path}", &nothing, NULL), 0);
    cr_assert_eq(sq_app_route(app, "/s/*", &nothing, NULL), 0);
    cr_assert_eq(sq_app_route(NULL, "/", &nothing, NULL), UV_EINVAL);
    cr_assert_eq(sq_app_route(app, NULL, &nothing, NULL), UV_EINVAL);
    cr_assert_eq(sq_app_route(app, "/", NULL, NULL), UV_EINVAL);
    sq_app_destroy(app);
    sq_app_destroy(NULL);
}

/* ---- handlers that say what they saw, as JSON ---- */

static void reply(sq_res_t *res, json_t *j)
{
    sq_res_send_json_new(res, 200, j);
}

static void item_get(sq_req_t *req, sq_res_t *res, void *data)
{
    int64_t id = 0;
    int rc = sq_req_param_int(req, "item_id", &id);
    reply(res, json_pack("{s:I,s:s?,s:i}", "item_id", (json_int_t)id, "q",
                         sq_req_query(req, "q"), "rc", rc));
}
static const sq_handler_t items = {.get = item_get};

static void user_get(sq_req_t *req, sq_res_t *res, void *data)
{
    int64_t unused;
    reply(res, json_pack("{s:s?,s:s,s:s,s:b}", "name", sq_req_param(req, "name"), "path",
                         sq_req_path(req), "target", sq_req_target(req), "int",
                         sq_req_param_int(req, "name", &unused) == 0));
}
static const sq_handler_t users = {.get = user_get};

static void rest_get(sq_req_t *req, sq_res_t *res, void *data)
{
    reply(res, json_pack("{s:s?,s:s?}", "rest", sq_req_param(req, "rest"), "star",
                         sq_req_param(req, "*")));
}
static const sq_handler_t rest = {.get = rest_get};

static void query_get(sq_req_t *req, sq_res_t *res, void *data)
{
    static const char *names[] = {"q", "empty", "noval", "x", "bad", "missing", "rep", "k y"};
    json_t *o = json_object();
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        const char *v = sq_req_query(req, names[i]);
        json_object_set_new(o, names[i], v ? json_string(v) : json_null());
    }
    json_object_set_new(o, "raw", json_string(sq_req_query_string(req)));
    reply(res, o);
}
static const sq_handler_t query = {.get = query_get};

static void hdr_get(sq_req_t *req, sq_res_t *res, void *data)
{
    const char *name, *value;
    size_t n = sq_req_header_count(req);
    json_t *list = json_array();
    for (size_t i = 0; i < n; i++) {
        if (sq_req_header_at(req, i, &name, &value) != 0)
            name = value = "?";
        json_array_append_new(list, json_pack("[s,s]", name, value));
    }
    int out_of_range = sq_req_header_at(req, n, &name, &value);
    reply(res, json_pack("{s:s?,s:s?,s:s?,s:o,s:i,s:s,s:i}", "custom",
                         sq_req_header(req, "x-custom"), "CUSTOM", sq_req_header(req, "X-CUSTOM"),
                         "none", sq_req_header(req, "x-none"), "all", list, "oor", out_of_range,
                         "method", sq_req_method(req), "minor", sq_req_version_minor(req)));
}
static const sq_handler_t hdr = {.get = hdr_get, .del = hdr_get, .patch = hdr_get,
                                 .options = hdr_get};

static void json_post(sq_req_t *req, sq_res_t *res, void *data)
{
    json_error_t err;
    json_t *in = sq_req_json(req, &err);
    if (in == NULL) {
        sq_res_send_error(res, 400, "invalid JSON");
        return;
    }
    sq_res_send_json_new(res, 201, json_pack("{s:o}", "got", in));
}
static const sq_handler_t jsonh = {.post = json_post};

static int marker;
static void data_get(sq_req_t *req, sq_res_t *res, void *data)
{
    sq_res_send(res, 200, "text/plain", data == &marker ? "mine" : "wrong", 4);
}
static void multi_post(sq_req_t *req, sq_res_t *res, void *data)
{
    sq_res_send(res, 200, "text/plain", "post", 4);
}
static const sq_handler_t multi = {.get = data_get, .post = multi_post};

static char s_param[] = "param", s_literal[] = "literal", s_cafe[] = "cafe", s_root[] = "root";

static void first_get(sq_req_t *req, sq_res_t *res, void *data)
{
    sq_res_send(res, 200, "text/plain", data, strlen(data));
}
static const sq_handler_t first = {.get = first_get};
static const sq_handler_t put_only = {.put = multi_post};
static const sq_handler_t del_only = {.del = multi_post};

static sq_test_t *tc;
static sq_app_t *app;

static void router_setup(void)
{
    cr_assert_eq(sq_app_create(&app), 0);
    cr_assert_eq(sq_app_route(app, "/items/{item_id:int}", &items, NULL), 0);
    cr_assert_eq(sq_app_route(app, "/users/{name}", &users, NULL), 0);
    cr_assert_eq(sq_app_route(app, "/files/{rest:path}", &rest, NULL), 0);
    cr_assert_eq(sq_app_route(app, "/static/*", &rest, NULL), 0);
    cr_assert_eq(sq_app_route(app, "/query", &query, NULL), 0);
    cr_assert_eq(sq_app_route(app, "/hdr", &hdr, NULL), 0);
    cr_assert_eq(sq_app_route(app, "/json", &jsonh, NULL), 0);
    cr_assert_eq(sq_app_route(app, "/multi", &multi, &marker), 0);
    cr_assert_eq(sq_app_route(app, "/order/{x}", &first, s_param), 0);
    cr_assert_eq(sq_app_route(app, "/order/lit", &first, s_literal), 0);
    cr_assert_eq(sq_app_route(app, "/caf\xc3\xa9", &first, s_cafe), 0);
    cr_assert_eq(sq_app_route(app, "/", &first, s_root), 0);
    cr_assert_eq(sq_app_route(app, "/pets/{id:int}", &first, s_param), 0);
    cr_assert_eq(sq_app_route(app, "/pets/{name}", &put_only, NULL), 0);
    cr_assert_eq(sq_app_route(app, "/pets/{name}/{rest:path}", &del_only, NULL), 0);
    cr_assert_eq(sq_test_create(&tc, app, NULL), 0);
}

static void router_teardown(void)
{
    cr_assert_eq(sq_test_destroy(tc), 0);
    sq_app_destroy(app);
}

TestSuite(routes, .init = router_setup, .fini = router_teardown, .timeout = 10);

/* The response's status and body (body NULL: not checked); `what` names the request. */
static sq_test_res_t *expect(int rc, sq_test_res_t *r, const char *what, int status,
                             const char *body)
{
    cr_assert_eq(rc, 0, "%s: %s", what, sq_err_name(rc));
    cr_assert_eq(r->status, status, "want %d for %s, got:\n%s", status, what, r->raw);
    if (body != NULL)
        cr_assert_str_eq(r->body, body, "for %s", what);
    return r;
}

/* A request written exactly as given, on a fresh connection: the caller frees it. */
static sq_test_res_t *raw(const char *req, int status, const char *body)
{
    sq_test_res_t *r = NULL;
    int rc = sq_test_request_raw(tc, req, strlen(req), 0, &r);
    return expect(rc, r, req, status, body);
}

static void check(const char *req, int status, const char *body)
{
    sq_test_res_free(raw(req, status, body));
}

/* A request as the test client writes it (Host: testserver, Content-Length for a body),
 * on its keep-alive connection: the caller frees it. */
static sq_test_res_t *call(const char *method, const char *target, const char *body,
                           int status, const char *want)
{
    sq_test_res_t *r = NULL;
    int rc = sq_test_request(tc, method, target, NULL, body, &r);
    char what[256];
    snprintf(what, sizeof(what), "%s %s", method, target);
    return expect(rc, r, what, status, want);
}

static void check_get(const char *target, int status, const char *body)
{
    sq_test_res_free(call("GET", target, NULL, status, body));
}

#define GET(path) "GET " path " HTTP/1.1\r\nHost: t\r\n\r\n"

Test(routes, typed_int_parameter_and_query, .timeout = 10)
{
    check_get("/items/5?q=somequery", 200, "{\"item_id\":5,\"q\":\"somequery\",\"rc\":0}");
    check_get("/items/5", 200, "{\"item_id\":5,\"q\":null,\"rc\":0}");
    check_get("/items/-42", 200, "{\"item_id\":-42,\"q\":null,\"rc\":0}");
    check_get("/items/9223372036854775807", 200,
          "{\"item_id\":9223372036854775807,\"q\":null,\"rc\":0}");
    check_get("/items/%35", 200, "{\"item_id\":5,\"q\":null,\"rc\":0}");
}

Test(routes, non_integer_parameter_gets_422_with_fastapi_detail, .timeout = 10)
{
    sq_test_res_t *r = call("GET", "/items/foo", NULL, 422,
                     "{\"detail\":[{\"type\":\"int_parsing\",\"loc\":[\"path\",\"item_id\"],"
                     "\"msg\":\"Input should be a valid integer, unable to parse string as an "
                     "integer\",\"input\":\"foo\"}]}");
    cr_assert_str_eq(sq_test_res_header(r, "Content-Type"), "application/json");
    sq_test_res_free(r);
    static const char *bad[] = {"/items/5x", "/items/%205", "/items/1.5", "/items/0x10",
                                "/items/99999999999999999999", "/items/%22%5C"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        r = call("GET", bad[i], NULL, 422, NULL);
        json_t *j = sq_test_res_json(r);
        cr_assert_not_null(j, "422 body is not JSON: %s", r->body);
        json_t *d = json_array_get(json_object_get(j, "detail"), 0);
        cr_assert_str_eq(json_string_value(json_array_get(json_object_get(d, "loc"), 1)),
                         "item_id");
        cr_assert_not_null(json_string_value(json_object_get(d, "input")));
        sq_test_res_free(r);
    }
}

Test(routes, int_parameter_is_a_minus_and_digits_only, .timeout = 10)
{
    static const char *bad[] = {"/items/%095", "/items/%0A5", "/items/%0B5", "/items/%0C5",
                                "/items/%0D5", "/items/%2B5", "/items/+5", "/items/-",
                                "/items/--5", "/items/-%205", "/items/5%09"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        check_get(bad[i], 422, NULL);
    check_get("/items/-0", 200, "{\"item_id\":0,\"q\":null,\"rc\":0}");
    check_get("/items/007", 200, "{\"item_id\":7,\"q\":null,\"rc\":0}");
    check_get("/items/-9223372036854775808", 200,
          "{\"item_id\":-9223372036854775808,\"q\":null,\"rc\":0}");
}

Test(routes, unknown_path_gets_404, .timeout = 10)
{
    static const char *paths[] = {"/nope", "/items", "/items/", "/items/5/", "/items//5",
                                  "/users/", "/users/a/b", "/files", "/static",
                                  "/order", "/Query", "/QUERY"};
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        sq_test_res_t *r = call("GET", paths[i], NULL, 404, "{\"detail\":\"Not Found\"}");
        cr_assert_str_eq(sq_test_res_header(r, "Content-Type"), "application/json");
        sq_test_res_free(r);
    }
}

Test(routes, known_path_with_unset_method_gets_405_with_allow, .timeout = 10)
{
    sq_test_res_t *r = call("PUT", "/multi", "", 405, "{\"detail\":\"Method Not Allowed\"}");
    cr_assert_str_eq(sq_test_res_header(r, "Allow"), "GET, HEAD, POST");
    sq_test_res_free(r);
    r = call("GET", "/json", NULL, 405, NULL);
    cr_assert_str_eq(sq_test_res_header(r, "Allow"), "POST");
    sq_test_res_free(r);
    r = call("POST", "/hdr", "", 405, NULL);
    cr_assert_str_eq(sq_test_res_header(r, "Allow"), "GET, HEAD, DELETE, PATCH, OPTIONS");
    sq_test_res_free(r);
    /* a method squall has no slot for */
    r = call("PROPFIND", "/multi", NULL, 405, NULL);
    cr_assert_str_eq(sq_test_res_header(r, "Allow"), "GET, HEAD, POST");
    sq_test_res_free(r);
    sq_test_res_free(call("POST", "/multi", "", 200, "post"));
    check_get("/multi", 200, "mine"); /* the route's data pointer reaches the handler */
}

/* 405's Allow names the methods of every route the path fits, not only the first's */
Test(routes, allow_lists_the_methods_of_every_route_of_the_path, .timeout = 10)
{
    sq_test_res_t *r = call("PATCH", "/pets/5", "", 405, NULL);
    cr_assert_str_eq(sq_test_res_header(r, "Allow"), "GET, HEAD, PUT");
    sq_test_res_free(r);
    r = call("POST", "/pets/5/a/b", "", 405, NULL);
    cr_assert_str_eq(sq_test_res_header(r, "Allow"), "DELETE");
    sq_test_res_free(r);
    sq_test_res_free(call("PUT", "/pets/5", "", 200, "post"));
    check_get("/pets/5", 200, "param");
}

Test(routes, head_falls_back_to_get_without_body, .timeout = 10)
{
    sq_test_res_t *r = call("HEAD", "/items/7", NULL, 200, "");
    cr_assert_str_eq(sq_test_res_header(r, "Content-Length"), "29");
    sq_test_res_free(r);
    check_get("/items/8", 200, "{\"item_id\":8,\"q\":null,\"rc\":0}");
}

/* Pipelined behind a HEAD over a real socket: the body-less answer must not shift the
 * framing of the next one. */
Test(routes, head_then_get_pipelined_over_a_socket, .timeout = 10)
{
    th_server_t *ts = th_server_start(app, NULL);
    th_conn_t c;
    cr_assert_eq(th_conn_open(&c, th_server_port(ts)), 0);
    cr_assert_eq(th_conn_sends(&c, "HEAD /items/7 HTTP/1.1\r\nHost: t\r\n\r\n" GET("/items/8")), 0);
    th_res_t r;
    cr_assert_eq(th_conn_read_res(&c, &r, 5000, true), 0);
    cr_assert_eq(r.status, 200);
    cr_assert_str_eq(th_res_header(&r, "Content-Length"), "29");
    cr_assert_eq(r.body_len, 0);
    th_res_free(&r);
    cr_assert_eq(th_conn_read_res(&c, &r, 5000, false), 0);
    cr_assert_str_eq(r.body, "{\"item_id\":8,\"q\":null,\"rc\":0}");
    th_res_free(&r);
    th_conn_close(&c);
    th_server_stop(ts, 1000);
}

Test(routes, path_parameters_are_percent_decoded, .timeout = 10)
{
    check_get("/users/alice", 200,
          "{\"name\":\"alice\",\"path\":\"/users/alice\",\"target\":\"/users/alice\",\"int\":false}");
    check_get("/users/J%C3%BCrgen%20X", 200,
          "{\"name\":\"J\xc3\xbcrgen X\",\"path\":\"/users/J\xc3\xbcrgen X\","
          "\"target\":\"/users/J%C3%BCrgen%20X\",\"int\":false}");
    /* an encoded slash stays inside its segment; '+' is not a space in a path */
    check_get("/users/a%2Fb+c", 200,
          "{\"name\":\"a/b+c\",\"path\":\"/users/a/b+c\",\"target\":\"/users/a%2Fb+c\",\"int\":false}");
    /* a bad escape or an encoded NUL matches nothing */
    check_get("/users/%zz", 404, NULL);
    check_get("/users/a%00b", 404, NULL);
    check_get("/users/%4", 404, NULL);
    /* literal segments match their encoded form too */
    check_get("/caf%C3%A9", 200, "cafe");
    check_get("/%63af%c3%a9", 200, "cafe");
}

Test(routes, path_and_wildcard_parameters_take_the_rest, .timeout = 10)
{
    check_get("/files/a/b/c.txt", 200, "{\"rest\":\"a/b/c.txt\",\"star\":null}");
    check_get("/files/x%20y/z", 200, "{\"rest\":\"x y/z\",\"star\":null}");
    check_get("/static/css/site.css?v=1", 200, "{\"rest\":null,\"star\":\"css/site.css\"}");
    check_get("/static/", 200, "{\"rest\":null,\"star\":\"\"}");
}

Test(routes, first_registered_route_wins, .timeout = 10)
{
    check_get("/order/lit", 200, "param");
    check_get("/order/other", 200, "param");
    check_get("/", 200, "root");
}

Test(routes, query_string_is_form_decoded, .timeout = 10)
{
    check_get("/query?q=a+b%20c&empty=&noval&x=%41%e2%82%ac&bad=%zz&rep=1&rep=2&k+y=v%2Bw", 200,
          "{\"q\":\"a b c\",\"empty\":\"\",\"noval\":\"\",\"x\":\"A\xe2\x82\xac\",\"bad\":\"%zz\","
          "\"missing\":null,\"rep\":\"1\",\"k y\":\"v+w\","
          "\"raw\":\"q=a+b%20c&empty=&noval&x=%41%e2%82%ac&bad=%zz&rep=1&rep=2&k+y=v%2Bw\"}");
    check_get("/query", 200,
          "{\"q\":null,\"empty\":null,\"noval\":null,\"x\":null,\"bad\":null,\"missing\":null,"
          "\"rep\":null,\"k y\":null,\"raw\":\"\"}");
    check_get("/query?&&q=1&", 200,
          "{\"q\":\"1\",\"empty\":null,\"noval\":null,\"x\":null,\"bad\":null,\"missing\":null,"
          "\"rep\":null,\"k y\":null,\"raw\":\"&&q=1&\"}");
    /* a bad escape or an encoded NUL stays as sent (as Python's urllib.parse leaves it),
     * and the first pair of a name wins even then */
    check_get("/query?q=%00&bad=%4&bad=ok", 200,
          "{\"q\":\"%00\",\"empty\":null,\"noval\":null,\"x\":null,\"bad\":\"%4\","
          "\"missing\":null,\"rep\":null,\"k y\":null,\"raw\":\"q=%00&bad=%4&bad=ok\"}");
}

Test(routes, absolute_form_target_is_routed_by_its_path, .timeout = 10)
{
    check("GET http://example.com/items/3?q=z HTTP/1.1\r\nHost: example.com\r\n\r\n", 200,
          "{\"item_id\":3,\"q\":\"z\",\"rc\":0}");
    check("GET HTTP://example.com HTTP/1.1\r\nHost: example.com\r\n\r\n", 404, NULL);
}

Test(routes, header_lookup_is_case_insensitive_and_ordered, .timeout = 10)
{
    check("DELETE /hdr HTTP/1.1\r\nHost: t\r\nX-Custom: one  \r\nx-custom: two\r\n\r\n", 200,
          "{\"custom\":\"one\",\"CUSTOM\":\"one\",\"none\":null,"
          "\"all\":[[\"Host\",\"t\"],[\"X-Custom\",\"one\"],[\"x-custom\",\"two\"]],"
          "\"oor\":-22,\"method\":\"DELETE\",\"minor\":1}");
    check("OPTIONS /hdr HTTP/1.0\r\nX-CUSTOM:\t\tv\r\n\r\n", 200,
          "{\"custom\":\"v\",\"CUSTOM\":\"v\",\"none\":null,\"all\":[[\"X-CUSTOM\",\"v\"]],"
          "\"oor\":-22,\"method\":\"OPTIONS\",\"minor\":0}");
}

Test(routes, json_body_in_and_json_response_out, .timeout = 10)
{
    const char *h[] = {"Content-Type: application/json", NULL};
    sq_test_res_t *r = NULL;
    int rc = sq_test_request(tc, "POST", "/json", h, "{\"a\": [1, 2], \"b\": \"\xc3\xa9\"}", &r);
    expect(rc, r, "POST /json", 201, "{\"got\":{\"a\":[1,2],\"b\":\"\xc3\xa9\"}}");
    cr_assert_str_eq(sq_test_res_header(r, "Content-Type"), "application/json");
    cr_assert_eq(json_array_size(json_object_get(json_object_get(sq_test_res_json(r), "got"), "a")),
                 2);
    sq_test_res_free(r);
    sq_test_res_free(call("POST", "/json", "{nope", 400, "{\"detail\":\"invalid JSON\"}"));
    check("POST /json HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
          "3\r\n[1,\r\n2\r\n2]\r\n0\r\n\r\n",
          201, "{\"got\":[1,2]}");
}

/* A pattern of literal segments is compared with the path whole; with an escape in the
 * path, segment by segment once decoded. Either way only its own path matches: not a
 * prefix of it, nor it with a slash more, nor an encoded slash standing for one. */
Test(routes, literal_routes_match_their_own_path_only, .timeout = 10)
{
    check_get("/order/lit", 200, "param"); /* first registered, as before */
    check_get("/caf%C3%A9", 200, "cafe");
    check_get("/caf%c3%a9", 200, "cafe");
    static const char *const miss[] = {"/caf", "/caf%C3%A9/", "/caf%C3%A9x", "//caf%C3%A9",
                                       "/caf%C3", "/order%2Flit", "/hd", "/hdr/", "/hdrx",
                                       "//", "/multi/x", "/%2F"};
    for (size_t i = 0; i < sizeof(miss) / sizeof(miss[0]); i++)
        sq_test_res_free(call("GET", miss[i], NULL, 404, NULL));
}
