/* Declared operations at their edges: requests where pydantic v2's lax mode (FastAPI)
 * has a rule of its own — big integers, exponents, repeated query parameters, floats for
 * booleans, Python's pattern classes, escaped NULs, a null body — every way of carrying
 * a body, and declarations no request could satisfy, refused when the route is added.
 * Each test states FastAPI's answer. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdatomic.h>
#include <string.h>

#include <squall.h>
#include <squall/testing.h>

static atomic_int handled;

/* class M(BaseModel):
 *     price: float
 *     n: int = 0
 *     flag: bool = False
 *     code: str = Field("0", pattern=r"^\d+$")
 * @app.post("/m")
 * def m(m: M, i: int = 0, q: str = ""): return {"m": m, "i": i, "q": q} */
static const sq_field_t m_fields[] = {
    {.name = "price", .type = SQ_T_NUMBER},
    {.name = "n", .type = SQ_T_INTEGER, .default_json = "0"},
    {.name = "flag", .type = SQ_T_BOOLEAN, .default_json = "false"},
    {.name = "code", .type = SQ_T_STRING, .default_json = "\"0\"", .pattern = "^\\d+$"},
    {0}};
static const sq_schema_t m_schema = {.title = "M", .fields = m_fields};
static const sq_field_t m_query[] = {
    {.name = "i", .type = SQ_T_INTEGER, .default_json = "0"},
    {.name = "q", .type = SQ_T_STRING, .default_json = "\"\""},
    {0}};
static const sq_op_t m_op = {.query = m_query, .body = &m_schema};

static void m_post(sq_req_t *req, sq_res_t *res, void *data)
{
    atomic_fetch_add(&handled, 1);
    sq_res_send_json_new(res, 200, json_pack("{s:O,s:O}", "m", sq_req_input_json(req, "body"),
                                             "query", sq_req_input_json(req, "query")));
}
static const sq_handler_t m_handler = {.post = m_post, .op.post = &m_op};

/* The same operation on a route whose POST body is read as a stream. */
static void s_post(sq_req_t *req, sq_res_t *res, void *data)
{
    atomic_fetch_add(&handled, 1);
    sq_res_send_json_new(res, 200, json_pack("{s:s}", "handler", "ran"));
}
static const sq_handler_t s_handler = {
    .post = s_post, .op.post = &m_op, .stream_body = SQ_STREAM(SQ_METHOD_POST)};

static sq_app_t *app;

static sq_test_t *start(void)
{
    cr_assert_eq(sq_app_create(&app), 0);
    cr_assert_eq(sq_app_route(app, "/m", &m_handler, NULL), 0);
    atomic_store(&handled, 0);
    sq_test_t *t;
    cr_assert_eq(sq_test_create(&t, app, NULL), 0);
    return t;
}

static void stop(sq_test_t *t)
{
    cr_assert_eq(sq_test_destroy(t), 0);
    sq_app_destroy(app);
}

static sq_test_res_t *post(sq_test_t *t, const char *target, const char *body)
{
    sq_test_res_t *r;
    cr_assert_eq(sq_test_request(t, "POST", target,
                                 (const char *[]){"Content-Type: application/json", NULL}, body,
                                 &r),
                 0);
    return r;
}

/* json.loads gives a Python int of any size; a float field takes it (1e20). jansson
 * refuses the literal ("too big integer"), so squall answers json_invalid. */
Test(validate_edge, a_big_integer_literal_is_a_number, .timeout = 10)
{
    sq_test_t *t = start();
    sq_test_res_t *r = post(t, "/m", "{\"price\": 100000000000000000000}");
    cr_expect_eq(r->status, 200, "FastAPI: 200; squall: %d %s", r->status, r->body);
    sq_test_res_free(r);
    stop(t);
}

/* pydantic's str -> int: an integer, or one with ".0..." after it; "1e3" is int_parsing. */
Test(validate_edge, an_exponent_string_is_not_an_integer, .timeout = 10)
{
    sq_test_t *t = start();
    sq_test_res_t *r = post(t, "/m?i=1e3", "{\"price\": 1}");
    cr_expect_eq(r->status, 422, "FastAPI: 422 int_parsing; squall: %d %s", r->status, r->body);
    sq_test_res_free(r);
    r = post(t, "/m", "{\"price\": 1, \"n\": \"2e2\"}");
    cr_expect_eq(r->status, 422, "FastAPI: 422 int_parsing; squall: %d %s", r->status, r->body);
    sq_test_res_free(r);
    stop(t);
}

/* Starlette's QueryParams is a multidict whose get() gives the LAST value. */
Test(validate_edge, a_repeated_query_parameter_takes_the_last_value, .timeout = 10)
{
    sq_test_t *t = start();
    sq_test_res_t *r = post(t, "/m?q=a&q=b", "{\"price\": 1}");
    cr_assert_eq(r->status, 200);
    const json_t *q = json_object_get(json_object_get(sq_test_res_json(r), "query"), "q");
    cr_expect_str_eq(json_string_value(q), "b", "FastAPI: \"b\"; squall: %s", r->body);
    sq_test_res_free(r);
    stop(t);
}

/* pydantic's bool in lax mode takes the floats 0.0 and 1.0. */
Test(validate_edge, the_float_one_is_a_boolean, .timeout = 10)
{
    sq_test_t *t = start();
    sq_test_res_t *r = post(t, "/m", "{\"price\": 1, \"flag\": 1.0}");
    cr_expect_eq(r->status, 200, "FastAPI: 200; squall: %d %s", r->status, r->body);
    sq_test_res_free(r);
    stop(t);
}

/* pattern=r"^\d+$" takes "123" in pydantic and is published as such in the OpenAPI
 * document (where clients read it as ECMA-262); POSIX ERE reads \d as "d". */
Test(validate_edge, a_pattern_is_checked_as_the_document_publishes_it, .timeout = 10)
{
    sq_test_t *t = start();
    sq_test_res_t *r = post(t, "/m", "{\"price\": 1, \"code\": \"123\"}");
    cr_expect_eq(r->status, 200, "FastAPI: 200; squall: %d %s", r->status, r->body);
    sq_test_res_free(r);
    r = post(t, "/m", "{\"price\": 1, \"code\": \"ddd\"}");
    cr_expect_eq(r->status, 422, "FastAPI: 422; squall: %d %s", r->status, r->body);
    sq_test_res_free(r);
    stop(t);
}

/* A declared body on a streamed method could never be checked (the body is its reader's,
 * piece by piece): the route is refused, so no handler runs with an unchecked body. */
Test(validate_edge, a_streamed_route_with_a_declared_body_does_not_bypass_it, .timeout = 10)
{
    sq_test_t *t = start();
    cr_assert_eq(sq_app_route(app, "/s", &s_handler, NULL), UV_EINVAL);
    sq_test_res_t *r = post(t, "/s", "{\"price\": \"not a number\"}");
    cr_expect_eq(r->status, 404, "squall: %d %s", r->status, r->body);
    cr_expect_eq(atomic_load(&handled), 0, "the handler ran with an invalid body");
    sq_test_res_free(r);
    stop(t);
}

/* json.loads takes "\u0000" in a string; pydantic's str takes it. jansson refuses it
 * without JSON_ALLOW_NUL, so squall answers json_invalid. */
Test(validate_edge, an_escaped_nul_in_a_string_is_taken, .timeout = 10)
{
    sq_test_t *t = start();
    sq_test_res_t *r = post(t, "/m", "{\"price\": 1, \"q\": \"a\\u0000b\"}");
    cr_expect_eq(r->status, 200, "FastAPI: 200; squall: %d %s", r->status, r->body);
    sq_test_res_free(r);
    stop(t);
}

/* ---- the transport's ways of carrying a body: each must be validated alike ---- */

static sq_test_t *start_limited(size_t max_body)
{
    cr_assert_eq(sq_app_create(&app), 0);
    cr_assert_eq(sq_app_route(app, "/m", &m_handler, NULL), 0);
    atomic_store(&handled, 0);
    sq_server_opts_t o;
    sq_server_opts_init(&o);
    o.max_body_bytes = max_body;
    sq_test_t *t;
    cr_assert_eq(sq_test_create(&t, app, &o), 0);
    return t;
}

static int raw_status(sq_test_t *t, const char *raw, char *body, size_t cap)
{
    sq_test_res_t *r;
    int rc = sq_test_request_raw(t, raw, strlen(raw), 5000, &r);
    cr_assert_eq(rc, 0, "no answer (%s) to %s", sq_strerror(rc), raw);
    int st = r->status;
    snprintf(body, cap, "%s", r->body);
    sq_test_res_free(r);
    return st;
}

/* Chunked, Expect: 100-continue, a body exactly at max_body_bytes, NUL bytes, a bad body
 * pipelined before a good one: the same answers as a plain body. Records what it saw;
 * a failure names the case. */
Test(validate_edge, every_way_of_sending_a_body_is_validated_alike, .timeout = 20)
{
    static const char good[] = "{\"price\": 1.5}";
    char body[4096];
    sq_test_t *t = start_limited(sizeof(good) - 1); /* exactly the good body */
    struct {
        const char *name, *raw;
        int want;
    } cases[] = {
        {"plain good",
         "POST /m HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 14"
         "\r\n\r\n{\"price\": 1.5}",
         200},
        {"chunked good",
         "POST /m HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: "
         "chunked\r\n\r\n7\r\n{\"price\r\n7\r\n\": 1.5}\r\n0\r\n\r\n",
         200},
        {"chunked bad",
         "POST /m HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: "
         "chunked\r\n\r\n7\r\n{\"price\r\n7\r\n\": \"x\"}\r\n0\r\n\r\n",
         422},
        {"expect good",
         "POST /m HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nExpect: "
         "100-continue\r\nContent-Length: 14\r\n\r\n{\"price\": 1.5}",
         200},
        {"one byte over",
         "POST /m HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 15"
         "\r\n\r\n{\"price\": 1.5} ",
         413},
        {"head with a bad query",
         "HEAD /m?i=x HTTP/1.1\r\nHost: x\r\n\r\n", 405},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int st = raw_status(t, cases[i].raw, body, sizeof(body));
        cr_expect_eq(st, cases[i].want, "%s: %d %s", cases[i].name, st, body);
    }
    stop(t);
}

/* FastAPI (fastapi/dependencies/utils.py, _validate_value_with_model_field): a body that
 * is JSON null is None, so it is `missing` at ["body"] (input null) for a required body,
 * and the default (None) for `Item | None = None`. */
static const sq_op_t m_optional_op = {.query = m_query, .body = &m_schema, .body_optional = true};
static const sq_handler_t m_optional = {.post = m_post, .op.post = &m_optional_op};

Test(validate_edge, a_null_body_is_missing_or_the_default, .timeout = 10)
{
    sq_test_t *t = start();
    cr_assert_eq(sq_app_route(app, "/opt", &m_optional, NULL), 0);
    sq_test_res_t *r = post(t, "/m", "null");
    cr_expect_eq(r->status, 422);
    const json_t *e = json_array_get(json_object_get(sq_test_res_json(r), "detail"), 0);
    cr_expect_str_eq(json_string_value(json_object_get(e, "type")), "missing",
                     "FastAPI: missing; squall: %s", r->body);
    sq_test_res_free(r);
    r = post(t, "/opt", "null");
    cr_expect_eq(r->status, 200, "FastAPI: 200 (None); squall: %d %s", r->status, r->body);
    sq_test_res_free(r);
    stop(t);
}

/* Declarations no request can satisfy are accepted by sq_app_route and fail at run time:
 * a path field the pattern does not have (every request: 422 missing ["path","ghost"]),
 * a query field of a type a query string cannot carry (every value: list_type), a
 * declared body on a streamed method (never checked). Programmer misuse is refused at
 * registration (house style: UV_EINVAL or an assert), not found by users' clients. */
static const sq_field_t ghost_path[] = {{.name = "ghost", .type = SQ_T_INTEGER}, {0}};
static const sq_op_t ghost_op = {.path = ghost_path};
static const sq_handler_t ghost_h = {.get = s_post, .op.get = &ghost_op};
static const sq_field_t str_item = {.type = SQ_T_STRING};
static const sq_field_t list_query[] = {{.name = "tag", .type = SQ_T_ARRAY, .items = &str_item},
                                        {0}};
static const sq_op_t list_op = {.query = list_query};
static const sq_handler_t list_h = {.get = s_post, .op.get = &list_op};

Test(validate_edge, declarations_no_request_can_satisfy_are_refused_at_registration,
     .timeout = 10)
{
    sq_app_t *a;
    cr_assert_eq(sq_app_create(&a), 0);
    cr_expect_eq(sq_app_route(a, "/ghost", &ghost_h, NULL), UV_EINVAL,
                 "a path field not in the pattern");
    cr_expect_eq(sq_app_route(a, "/list", &list_h, NULL), UV_EINVAL,
                 "an array query field (FastAPI: ?tag=a&tag=b is [\"a\",\"b\"])");
    cr_expect_eq(sq_app_route(a, "/s", &s_handler, NULL), UV_EINVAL,
                 "a declared body on a streamed method");
    sq_app_destroy(a);
}
