/* An app and its tests with squall's test client (docs/testing.md).
 *
 *   cc -std=c11 -D_GNU_SOURCE -Iinclude docs/examples/testing_example.c build/lib/libsquall.a \
 *      $(pkg-config --cflags --libs libuv jansson libcrypto hiredis) -lpthread -lm \
 *      -lcriterion -o testing_example && ./testing_example
 */
#include <string.h>

#include <criterion/criterion.h>
#include <jansson.h>
#include <squall.h>
#include <squall/testing.h>

/* ---- the app ---- */

/* PUT /items/{item_id}: a declared operation (docs/schema.md), checked before the handler
 * runs; the handler answers what it was given */
typedef struct item_in {
    int64_t item_id;
    const char *name;
} item_in_t;
static const sq_field_t item_path[] = {
    {.name = "item_id", .type = SQ_T_INTEGER, .bind = SQ_BIND(item_in_t, item_id)}, {0}};
static const sq_field_t item_fields[] = {
    {.name = "name", .type = SQ_T_STRING, .bind = SQ_BIND(item_in_t, name)}, {0}};
static const sq_schema_t item_schema = {.title = "Item", .fields = item_fields};
static const sq_op_t item_put_op = {.path = item_path, .body = &item_schema,
                                    .input_size = sizeof(item_in_t)};
static const sq_op_t item_get_op = {.path = item_path}; /* item_id must be an integer */

static void item_put(sq_req_t *req, sq_res_t *res, void *data)
{
    const item_in_t *in = sq_req_input(req);
    sq_res_send_json_new(res, 200, json_pack("{s:s,s:I}", "name", in->name, "item_id",
                                             (json_int_t)in->item_id));
}

/* GET /items/{item_id}: needs a token */
static void item_get(sq_req_t *req, sq_res_t *res, void *data)
{
    const char *token = sq_req_header(req, "x-token");
    if (token == NULL || strcmp(token, "secret") != 0) {
        sq_res_send_error(res, 401, "bad token");
        return;
    }
    sq_res_send_json_new(res, 200, json_pack("{s:s}", "name", "widget"));
}

static const sq_handler_t items = {
    .get = item_get, .put = item_put, .op.get = &item_get_op, .op.put = &item_put_op};

/* /ws/echo: sends every message back */
static void echo_message(sq_ws_t *ws, int binary, const char *msg, size_t len, void *data)
{
    sq_ws_send(ws, binary, msg, len);
}

static const sq_ws_handler_t echo = {.message = echo_message};

static sq_app_t *make_app(void)
{
    sq_app_t *app;
    if (sq_app_create(&app) != 0)
        return NULL;
    sq_app_route(app, "/items/{item_id}", &items, NULL);
    sq_app_websocket(app, "/ws/echo", &echo, NULL, NULL);
    return app;
}

/* ---- its tests ---- */

static sq_app_t *app;
static sq_test_t *client;

static void setup(void)
{
    app = make_app();
    cr_assert_not_null(app);
    cr_assert_eq(sq_test_create(&client, app, NULL), 0);
}

static void teardown(void)
{
    cr_assert_eq(sq_test_destroy(client), 0);
    sq_app_destroy(app);
}

TestSuite(items, .init = setup, .fini = teardown, .timeout = 10);

Test(items, put_answers_the_item_with_its_id)
{
    sq_test_res_t *res;
    cr_assert_eq(sq_test_request(client, "PUT", "/items/5", NULL, "{\"name\":\"widget\"}", &res),
                 0);
    cr_assert_eq(res->status, 200);
    cr_assert_str_eq(sq_test_res_header(res, "content-type"), "application/json");
    json_t *body = sq_test_res_json(res);
    cr_assert_eq(json_integer_value(json_object_get(body, "item_id")), 5);
    cr_assert_str_eq(json_string_value(json_object_get(body, "name")), "widget");
    sq_test_res_free(res);
}

Test(items, get_needs_the_token)
{
    sq_test_res_t *res;
    cr_assert_eq(sq_test_request(client, "GET", "/items/5", NULL, NULL, &res), 0);
    cr_assert_eq(res->status, 401);
    sq_test_res_free(res);

    const char *headers[] = {"X-Token: secret", NULL};
    cr_assert_eq(sq_test_request(client, "GET", "/items/5", headers, NULL, &res), 0);
    cr_assert_eq(res->status, 200);
    cr_assert_str_eq(res->body, "{\"name\":\"widget\"}");
    sq_test_res_free(res);
}

Test(items, a_path_that_is_not_an_int_gets_422)
{
    sq_test_res_t *res;
    cr_assert_eq(sq_test_request(client, "GET", "/items/five", NULL, NULL, &res), 0);
    cr_assert_eq(res->status, 422);
    json_t *detail = json_array_get(json_object_get(sq_test_res_json(res), "detail"), 0);
    cr_assert_str_eq(json_string_value(json_object_get(detail, "type")), "int_parsing");
    sq_test_res_free(res);
}

Test(items, websocket_echo)
{
    sq_test_ws_t *ws;
    cr_assert_eq(sq_test_ws_connect(client, "/ws/echo", NULL, &ws, NULL), 0);
    cr_assert_eq(sq_test_ws_send_text(ws, "hello", 5), 0);
    const sq_test_ws_msg_t *msg;
    cr_assert_eq(sq_test_ws_recv(ws, 1000, &msg), 0);
    cr_assert_eq(msg->opcode, SQ_TEST_WS_TEXT);
    cr_assert_str_eq(msg->data, "hello");
    int code;
    cr_assert_eq(sq_test_ws_close(ws, SQ_WS_NORMAL, "bye", &code), 0);
    cr_assert_eq(code, SQ_WS_NORMAL);
}
