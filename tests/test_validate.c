/* Declared operations (schema.h, sq_op_t) through the test client (testing.h: the same
 * parser, router and dispatch as a socket, on a private loop): path, query and body
 * checked before the handler runs, every problem in one 422 in FastAPI's shape (the
 * expected bodies are what FastAPI answers for the same app, written here literally),
 * the handler reading bound values, 413 before validation, Content-Type handling, and
 * blocking handlers. The lecture's app in build/bin/hello is checked at the end. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <squall.h>
#include <squall/testing.h>

#include "support/app.h"
#include "support/harness.h"

/* ---- the lecture's app, as FastAPI declares it ----
 * class Item(BaseModel):
 *     name: str
 *     price: float
 *     is_offer: bool = None
 * @app.get("/items/{item_id}")
 * async def read_item(item_id: int, q: str = None): ...
 * @app.put("/items/{item_id}")
 * async def update_item(item_id: int, item: Item): ... */
typedef struct item {
    const char *name;
    double price;
    bool is_offer;
} item_t;

typedef struct item_in {
    int64_t item_id;
    const char *q;
    item_t item;
} item_in_t;

static const sq_field_t item_fields[] = {
    {.name = "name", .type = SQ_T_STRING, .bind = SQ_BIND(item_t, name)},
    {.name = "price", .type = SQ_T_NUMBER, .bind = SQ_BIND(item_t, price)},
    {.name = "is_offer", .type = SQ_T_BOOLEAN, .default_json = "null",
     .bind = SQ_BIND(item_t, is_offer)},
    {0}};
static const sq_schema_t item_schema = {.title = "Item", .fields = item_fields};

static const sq_field_t item_path[] = {
    {.name = "item_id", .type = SQ_T_INTEGER, .bind = SQ_BIND(item_in_t, item_id)}, {0}};
static const sq_field_t item_query[] = {
    {.name = "q", .type = SQ_T_STRING, .default_json = "null", .bind = SQ_BIND(item_in_t, q)},
    {0}};

static const sq_op_t read_op = {
    .path = item_path, .query = item_query, .input_size = sizeof(item_in_t)};
static const sq_op_t update_op = {.path = item_path,
                                  .body = &item_schema,
                                  .input_size = sizeof(item_in_t),
                                  .body_bind = SQ_BIND(item_in_t, item)};

static atomic_int handled;

static void read_item(sq_req_t *req, sq_res_t *res, void *data)
{
    const item_in_t *in = sq_req_input(req);
    atomic_fetch_add(&handled, 1);
    sq_res_send_json_new(res, 200,
                         json_pack("{s:I,s:s?}", "item_id", (json_int_t)in->item_id, "q", in->q));
}

/* Answers with the bound struct and the checked JSON, so the test sees both. */
static void update_item(sq_req_t *req, sq_res_t *res, void *data)
{
    const item_in_t *in = sq_req_input(req);
    atomic_fetch_add(&handled, 1);
    sq_res_send_json_new(res, 200,
                         json_pack("{s:s,s:I,s:f,s:b,s:O,s:O}", "item_name", in->item.name,
                                   "item_id", (json_int_t)in->item_id, "price", in->item.price,
                                   "is_offer", in->item.is_offer, "body",
                                   sq_req_input_json(req, "body"), "path",
                                   sq_req_input_json(req, "path")));
}

static const sq_handler_t items = {
    .get = read_item, .put = update_item, .op.get = &read_op, .op.put = &update_op};

/* ---- a nested model with a list (as test_schema.c's Order) ----
 * class Tag(BaseModel):
 *     label: str = Field(min_length=2, max_length=5)
 * class Order(BaseModel):
 *     id: int = Field(gt=0)
 *     tags: list[Tag]
 *     kind: Literal["a", "b"] = "a"
 * @app.post("/orders")
 * async def create(order: Order, dry: bool = False): ... */
static const sq_field_t tag_fields[] = {
    {.name = "label", .type = SQ_T_STRING, .min_length = SQ_LEN(2), .max_length = SQ_LEN(5)},
    {0}};
static const sq_schema_t tag_schema = {.title = "Tag", .fields = tag_fields};
static const sq_field_t tag_item = {.type = SQ_T_OBJECT, .object = &tag_schema};
static const char *const kinds[] = {"a", "b", NULL};
static const sq_field_t order_fields[] = {
    {.name = "id", .type = SQ_T_INTEGER, .gt = SQ_LIMIT(0)},
    {.name = "tags", .type = SQ_T_ARRAY, .items = &tag_item},
    {.name = "kind", .type = SQ_T_ENUM, .enum_values = kinds, .default_json = "\"a\""},
    {0}};
static const sq_schema_t order_schema = {.title = "Order", .fields = order_fields};
static const sq_field_t order_query[] = {
    {.name = "dry", .type = SQ_T_BOOLEAN, .default_json = "false"}, {0}};
static const sq_op_t order_op = {.query = order_query, .body = &order_schema};

static void create_order(sq_req_t *req, sq_res_t *res, void *data)
{
    atomic_fetch_add(&handled, 1);
    sq_res_send_json_new(res, 201,
                         json_pack("{s:O,s:O}", "order", sq_req_input_json(req, "body"), "query",
                                   sq_req_input_json(req, "query")));
}
static const sq_handler_t orders = {.post = create_order, .op.post = &order_op};

/* An optional body (`note: Note | None = None`) and a blocking handler reading its input. */
typedef struct note {
    const char *text;
} note_t;
static const sq_field_t note_fields[] = {
    {.name = "text", .type = SQ_T_STRING, .bind = SQ_BIND(note_t, text)}, {0}};
static const sq_schema_t note_schema = {.title = "Note", .fields = note_fields};
static const sq_op_t note_op = {.body = &note_schema,
                                .body_optional = true,
                                .input_size = sizeof(note_t),
                                .body_bind = {true, 0}};

static void note_post(const sq_breq_t *req, sq_bres_t *res, void *data)
{
    const note_t *n = sq_breq_input(req);
    const json_t *body = sq_breq_input_json(req, "body");
    atomic_fetch_add(&handled, 1);
    sq_bres_send_json_new(res, 200,
                          json_pack("{s:s?,s:b}", "text", n ? n->text : NULL, "null",
                                    json_is_null(body)));
}
static const sq_handler_t notes = {.blocking.post = note_post, .op.post = &note_op};

/* `{n:int}` in the pattern and an operation that does not declare n: the router's
 * conversion error comes first, then the operation's. */
static const sq_field_t limit_query[] = {
    {.name = "limit", .type = SQ_T_INTEGER, .le = SQ_LIMIT(100)}, {0}};
static const sq_op_t page_op = {.query = limit_query};
static void page_get(sq_req_t *req, sq_res_t *res, void *data)
{
    int64_t n = 0;
    sq_req_param_int(req, "n", &n);
    atomic_fetch_add(&handled, 1);
    sq_res_send_json_new(res, 200, json_pack("{s:I,s:O}", "n", (json_int_t)n, "query",
                                             sq_req_input_json(req, "query")));
}
static const sq_handler_t pages = {.get = page_get, .op.get = &page_op};

static sq_app_t *app;

static sq_test_t *start(const sq_server_opts_t *opts)
{
    cr_assert_eq(sq_app_create(&app), 0);
    cr_assert_eq(sq_app_route(app, "/items/{item_id}", &items, NULL), 0);
    cr_assert_eq(sq_app_route(app, "/orders", &orders, NULL), 0);
    cr_assert_eq(sq_app_route(app, "/notes", &notes, NULL), 0);
    cr_assert_eq(sq_app_route(app, "/pages/{n:int}", &pages, NULL), 0);
    atomic_store(&handled, 0);
    sq_test_t *t;
    cr_assert_eq(sq_test_create(&t, app, opts), 0);
    return t;
}

static void stop(sq_test_t *ts)
{
    cr_assert_eq(sq_test_destroy(ts), 0);
    sq_app_destroy(app);
}

/* Sends one request and checks the status and that the body is the JSON `want`. */
static void expect(sq_test_t *ts, const char *raw, int status, const char *want)
{
    sq_test_res_t *r;
    cr_assert_eq(sq_test_request_raw(ts, raw, strlen(raw), 5000, &r), 0, "no answer to %s", raw);
    cr_expect_eq(r->status, status, "%s -> %d %s", raw, r->status, r->body);
    json_error_t e;
    json_t *got = json_loadb(r->body, r->body_len, 0, &e);
    json_t *exp = json_loads(want, 0, &e);
    cr_assert_not_null(exp, "bad expectation: %s", e.text);
    cr_expect(got != NULL && json_equal(got, exp), "%s\n got: %s\nwant: %s", raw, r->body, want);
    if (status == 422)
        cr_expect_str_eq(sq_test_res_header(r, "Content-Type"), "application/json");
    json_decref(got);
    json_decref(exp);
    sq_test_res_free(r);
}

static char *put_json(const char *path, const char *body)
{
    char *out;
    cr_assert(asprintf(&out,
                       "PUT %s HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                       "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
                       path, strlen(body), body) > 0);
    return out;
}

#define PUT(path, body) put_json(path, body)

static void expect_free(sq_test_t *ts, char *raw, int status, const char *want)
{
    expect(ts, raw, status, want);
    free(raw);
}

Test(validate, the_lecture_put_binds_the_path_and_the_body_for_the_handler)
{
    sq_test_t *ts = start(NULL);
    expect_free(ts, PUT("/items/5", "{\"name\":\"Foo\",\"price\":35.4,\"is_offer\":true,\"x\":1}"),
                200,
                "{\"item_name\":\"Foo\",\"item_id\":5,\"price\":35.4,\"is_offer\":true,"
                "\"body\":{\"name\":\"Foo\",\"price\":35.4,\"is_offer\":true},"
                "\"path\":{\"item_id\":5}}");
    /* is_offer absent: its default, null, in the value; the bound bool reads false */
    expect_free(ts, PUT("/items/-7", "{\"name\":\"Foo\",\"price\":3}"), 200,
                "{\"item_name\":\"Foo\",\"item_id\":-7,\"price\":3.0,\"is_offer\":false,"
                "\"body\":{\"name\":\"Foo\",\"price\":3.0,\"is_offer\":null},"
                "\"path\":{\"item_id\":-7}}");
    stop(ts);
    cr_assert_eq(atomic_load(&handled), 2);
}

Test(validate, every_problem_of_path_and_body_in_one_422_as_fastapi_answers)
{
    sq_test_t *ts = start(NULL);
    /* FastAPI: PUT /items/abc {"price": "z", "is_offer": null} */
    expect_free(ts, PUT("/items/abc", "{\"price\":\"z\",\"is_offer\":null}"), 422,
                "{\"detail\":["
                "{\"type\":\"int_parsing\",\"loc\":[\"path\",\"item_id\"],\"msg\":\"Input should "
                "be a valid integer, unable to parse string as an integer\",\"input\":\"abc\"},"
                "{\"type\":\"missing\",\"loc\":[\"body\",\"name\"],\"msg\":\"Field required\","
                "\"input\":{\"price\":\"z\",\"is_offer\":null}},"
                "{\"type\":\"float_parsing\",\"loc\":[\"body\",\"price\"],\"msg\":\"Input should "
                "be a valid number, unable to parse string as a number\",\"input\":\"z\"},"
                "{\"type\":\"bool_type\",\"loc\":[\"body\",\"is_offer\"],\"msg\":\"Input should "
                "be a valid boolean\",\"input\":null}]}");
    /* a body that is not an object */
    expect_free(ts, PUT("/items/1", "[1,2]"), 422,
                "{\"detail\":[{\"type\":\"model_attributes_type\",\"loc\":[\"body\"],\"msg\":"
                "\"Input should be a valid dictionary or object to extract fields from\","
                "\"input\":[1,2]}]}");
    stop(ts);
    cr_assert_eq(atomic_load(&handled), 0, "a handler ran for a request that failed");
}

Test(validate, an_empty_body_is_missing_and_malformed_json_is_json_invalid_at_its_position)
{
    sq_test_t *ts = start(NULL);
    expect(ts,
           "PUT /items/1 HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
           "Content-Length: 0\r\nConnection: close\r\n\r\n",
           422,
           "{\"detail\":[{\"type\":\"missing\",\"loc\":[\"body\"],\"msg\":\"Field required\","
           "\"input\":null}]}");
    /* json.loads('{"name":"x",') fails at character 12: "Expecting property name" */
    expect_free(ts, PUT("/items/1", "{\"name\":\"x\","), 422,
                "{\"detail\":[{\"type\":\"json_invalid\",\"loc\":[\"body\",12],\"msg\":\"JSON "
                "decode error\",\"input\":{},\"ctx\":{\"error\":\"string or '}' expected near "
                "end of file\"}}]}");
    stop(ts);
}

/* FastAPI parses the body as JSON without a Content-Type or with a JSON one
 * (application/json, application/<x>+json, any parameters); any other type hands pydantic
 * the raw text, which is not an object. */
Test(validate, the_content_type_decides_whether_the_body_is_parsed_as_json)
{
    sq_test_t *ts = start(NULL);
    static const char body[] = "{\"name\":\"a\",\"price\":1}";
    static const char *const types[] = {NULL, "application/json; charset=utf-8",
                                        "Application/JSON", "application/vnd.api+json",
                                        "application/merge-patch+json ; q=1"};
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        char raw[512];
        snprintf(raw, sizeof(raw),
                 "PUT /items/2 HTTP/1.1\r\nHost: t\r\n%s%s%sContent-Length: %zu\r\n"
                 "Connection: close\r\n\r\n%s",
                 types[i] ? "Content-Type: " : "", types[i] ? types[i] : "",
                 types[i] ? "\r\n" : "", strlen(body), body);
        sq_test_res_t *r;
        cr_assert_eq(sq_test_request_raw(ts, raw, strlen(raw), 5000, &r), 0);
        cr_expect_eq(r->status, 200, "%s -> %d %s", types[i] ? types[i] : "(none)", r->status,
                     r->body);
        sq_test_res_free(r);
    }
    static const char *const others[] = {"text/plain", "application/x-www-form-urlencoded",
                                         "application/jsonx", "application/json-seq",
                                         "multipart/form-data; boundary=x"};
    for (size_t i = 0; i < sizeof(others) / sizeof(others[0]); i++) {
        char raw[512];
        snprintf(raw, sizeof(raw),
                 "PUT /items/2 HTTP/1.1\r\nHost: t\r\nContent-Type: %s\r\n"
                 "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
                 others[i], strlen(body), body);
        expect(ts, raw, 422,
               "{\"detail\":[{\"type\":\"model_attributes_type\",\"loc\":[\"body\"],\"msg\":"
               "\"Input should be a valid dictionary or object to extract fields from\","
               "\"input\":\"{\\\"name\\\":\\\"a\\\",\\\"price\\\":1}\"}]}");
    }
    /* text that is not UTF-8 is given as null */
    expect(ts,
           "PUT /items/2 HTTP/1.1\r\nHost: t\r\nContent-Type: text/plain\r\n"
           "Content-Length: 2\r\nConnection: close\r\n\r\n\xff\xfe",
           422,
           "{\"detail\":[{\"type\":\"model_attributes_type\",\"loc\":[\"body\"],\"msg\":"
           "\"Input should be a valid dictionary or object to extract fields from\","
           "\"input\":null}]}");
    stop(ts);
    cr_assert_eq(atomic_load(&handled), 5);
}

Test(validate, a_body_over_max_body_bytes_is_413_before_anything_is_validated)
{
    sq_server_opts_t opts;
    sq_server_opts_init(&opts);
    opts.max_body_bytes = 64;
    sq_test_t *ts = start(&opts);
    char body[200];
    memset(body, ' ', sizeof(body) - 1);
    body[sizeof(body) - 1] = '\0';
    body[0] = '{';
    body[sizeof(body) - 2] = '}';
    char *raw;
    cr_assert(asprintf(&raw,
                       "PUT /items/abc HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                       "Content-Length: %zu\r\n\r\n%s",
                       strlen(body), body) > 0);
    sq_test_res_t *r;
    cr_assert_eq(sq_test_request_raw(ts, raw, strlen(raw), 5000, &r), 0);
    cr_expect_eq(r->status, 413, "got %d %s", r->status, r->body);
    sq_test_res_free(r);
    free(raw);
    stop(ts);
    cr_assert_eq(atomic_load(&handled), 0);
}

Test(validate, query_parameters_are_converted_and_checked_with_their_defaults)
{
    sq_test_t *ts = start(NULL);
    expect(ts, "GET /items/5?q=somequery HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", 200,
           "{\"item_id\":5,\"q\":\"somequery\"}");
    expect(ts, "GET /items/5 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", 200,
           "{\"item_id\":5,\"q\":null}");
    /* decoded bytes that are not UTF-8 become U+FFFD, as Python's unquote makes them */
    expect(ts, "GET /items/5?q=%E2%82%AC%FF HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
           200, "{\"item_id\":5,\"q\":\"\xe2\x82\xac\xef\xbf\xbd\"}");
    expect(ts, "GET /items/5.5 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", 422,
           "{\"detail\":[{\"type\":\"int_parsing\",\"loc\":[\"path\",\"item_id\"],\"msg\":"
           "\"Input should be a valid integer, unable to parse string as an integer\","
           "\"input\":\"5.5\"}]}");
    /* the router's {n:int} error first, then the operation's own */
    expect(ts, "GET /pages/x?limit=101 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", 422,
           "{\"detail\":[{\"type\":\"int_parsing\",\"loc\":[\"path\",\"n\"],\"msg\":\"Input "
           "should be a valid integer, unable to parse string as an integer\",\"input\":\"x\"},"
           "{\"type\":\"less_than_equal\",\"loc\":[\"query\",\"limit\"],\"msg\":\"Input should "
           "be less than or equal to 100\",\"input\":\"101\",\"ctx\":{\"le\":100}}]}");
    expect(ts, "GET /pages/3 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", 422,
           "{\"detail\":[{\"type\":\"missing\",\"loc\":[\"query\",\"limit\"],\"msg\":\"Field "
           "required\",\"input\":null}]}");
    expect(ts, "GET /pages/3?limit=+7 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", 200,
           "{\"n\":3,\"query\":{\"limit\":7}}");
    stop(ts);
}

Test(validate, head_on_a_declared_get_is_validated_and_has_no_body)
{
    sq_test_t *ts = start(NULL);
    sq_test_res_t *r;
    cr_assert_eq(sq_test_request(ts, "HEAD", "/items/x", NULL, NULL, &r), 0);
    cr_expect_eq(r->status, 422);
    cr_expect_eq(r->body_len, 0);
    sq_test_res_free(r);
    cr_assert_eq(sq_test_request(ts, "HEAD", "/items/3", NULL, NULL, &r), 0);
    cr_expect_eq(r->status, 200);
    sq_test_res_free(r);
    stop(ts);
}

/* FastAPI for the Order app: a nested model in a list, a literal, a bound and a query
 * boolean, every error at once. */
Test(validate, a_nested_model_in_a_list_reports_each_item_as_fastapi_does)
{
    sq_test_t *ts = start(NULL);
    static const char bad[] = "{\"id\":0,\"tags\":[{\"label\":\"ok\"},{\"label\":\"x\"},"
                              "{\"name\":1},5],\"kind\":\"c\"}";
    char *raw;
    cr_assert(asprintf(&raw,
                       "POST /orders?dry=maybe HTTP/1.1\r\nHost: t\r\nContent-Type: "
                       "application/json\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n%s",
                       strlen(bad), bad) > 0);
    expect_free(
        ts, raw, 422,
        "{\"detail\":["
        "{\"type\":\"bool_parsing\",\"loc\":[\"query\",\"dry\"],\"msg\":\"Input should be a "
        "valid boolean, unable to interpret input\",\"input\":\"maybe\"},"
        "{\"type\":\"greater_than\",\"loc\":[\"body\",\"id\"],\"msg\":\"Input should be greater "
        "than 0\",\"input\":0,\"ctx\":{\"gt\":0}},"
        "{\"type\":\"string_too_short\",\"loc\":[\"body\",\"tags\",1,\"label\"],\"msg\":"
        "\"String should have at least 2 characters\",\"input\":\"x\",\"ctx\":{\"min_length\":2}},"
        "{\"type\":\"missing\",\"loc\":[\"body\",\"tags\",2,\"label\"],\"msg\":\"Field "
        "required\",\"input\":{\"name\":1}},"
        "{\"type\":\"model_attributes_type\",\"loc\":[\"body\",\"tags\",3],\"msg\":\"Input "
        "should be a valid dictionary or object to extract fields from\",\"input\":5},"
        "{\"type\":\"literal_error\",\"loc\":[\"body\",\"kind\"],\"msg\":\"Input should be 'a' "
        "or 'b'\",\"input\":\"c\",\"ctx\":{\"expected\":\"'a' or 'b'\"}}]}");
    static const char good[] = "{\"id\":9,\"tags\":[{\"label\":\"ok\",\"x\":[]}]}";
    cr_assert(asprintf(&raw,
                       "POST /orders?dry=Yes HTTP/1.1\r\nHost: t\r\nContent-Length: %zu\r\n"
                       "Connection: close\r\n\r\n%s",
                       strlen(good), good) > 0);
    expect_free(ts, raw, 201,
                "{\"order\":{\"id\":9,\"tags\":[{\"label\":\"ok\"}],\"kind\":\"a\"},"
                "\"query\":{\"dry\":true}}");
    stop(ts);
}

Test(validate, an_optional_body_may_be_empty_and_a_blocking_handler_reads_its_input)
{
    sq_test_t *ts = start(NULL);
    expect(ts, "POST /notes HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
           200, "{\"text\":null,\"null\":true}");
    expect(ts,
           "POST /notes HTTP/1.1\r\nHost: t\r\nContent-Length: 12\r\nConnection: close\r\n\r\n"
           "{\"text\":\"h\"}",
           200, "{\"text\":\"h\",\"null\":false}");
    expect(ts,
           "POST /notes HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\nConnection: close\r\n\r\n"
           "{\"text\":1}",
           422,
           "{\"detail\":[{\"type\":\"string_type\",\"loc\":[\"body\",\"text\"],\"msg\":\"Input "
           "should be a valid string\",\"input\":1}]}");
    stop(ts);
    cr_assert_eq(atomic_load(&handled), 2);
}

/* Many requests on one keep-alive connection: the checked values of one request never
 * leak into the next (each exchange is reset), valid and invalid alternating. */
Test(validate, keep_alive_requests_alternate_valid_and_invalid_without_leaking_values)
{
    sq_test_t *ts = start(NULL);
    for (int i = 0; i < 200; i++) {
        char target[64];
        if (i % 2)
            snprintf(target, sizeof(target), "/items/%d?q=v%d", i, i);
        else
            snprintf(target, sizeof(target), "/items/n%d", i);
        sq_test_res_t *r;
        cr_assert_eq(sq_test_request(ts, "GET", target, NULL, NULL, &r), 0);
        cr_assert_eq(r->status, i % 2 ? 200 : 422);
        if (i % 2) {
            char want[64];
            snprintf(want, sizeof(want), "{\"item_id\":%d,\"q\":\"v%d\"}", i, i);
            cr_assert_str_eq(r->body, want);
        }
        sq_test_res_free(r);
    }
    sq_server_stats_t st;
    sq_server_stats(sq_test_server(ts), &st);
    cr_expect_eq(st.connections_total, 1, "one keep-alive connection");
    stop(ts);
}

/* ---- the lecture's app in build/bin/hello ---- */

Test(validate, hello_serves_the_lecture_items_routes_with_fastapis_answers)
{
    th_app_t a = th_app_start("hello", NULL);
    th_res_t r;
    cr_assert_eq(th_request(a.port, "GET /items/5?q=somequery HTTP/1.1\r\nHost: t\r\n\r\n", &r), 0);
    cr_expect_eq(r.status, 200);
    cr_expect_str_eq(r.body, "{\"item_id\":5,\"q\":\"somequery\"}");
    th_res_free(&r);
    static const char put[] = "PUT /items/5 HTTP/1.1\r\nHost: t\r\nContent-Type: "
                              "application/json\r\nContent-Length: 40\r\n\r\n"
                              "{\"name\":\"Foo\",\"price\":35.4,\"is_offer\":1}";
    cr_assert_eq(th_request(a.port, put, &r), 0);
    cr_expect_eq(r.status, 200, "%d %s", r.status, r.body);
    cr_expect_str_eq(r.body, "{\"item_name\":\"Foo\",\"item_id\":5}");
    th_res_free(&r);
    static const char bad[] = "PUT /items/foo HTTP/1.1\r\nHost: t\r\nContent-Type: "
                              "application/json\r\nContent-Length: 2\r\n\r\n{}";
    cr_assert_eq(th_request(a.port, bad, &r), 0);
    cr_expect_eq(r.status, 422);
    cr_expect_str_eq(
        r.body, "{\"detail\":[{\"type\":\"int_parsing\",\"loc\":[\"path\",\"item_id\"],\"msg\":"
                "\"Input should be a valid integer, unable to parse string as an integer\","
                "\"input\":\"foo\"},{\"type\":\"missing\",\"loc\":[\"body\",\"name\"],\"msg\":"
                "\"Field required\",\"input\":{}},{\"type\":\"missing\",\"loc\":[\"body\","
                "\"price\"],\"msg\":\"Field required\",\"input\":{}}]}");
    th_res_free(&r);
    th_app_stop(&a);
}
