/* items.c: a route declared with its model, and its tests (squall's test client runs the
 * app on a private loop: no port, the same parser, router and validation). */
#include <criterion/criterion.h>
#include <jansson.h>
#include <squall.h>
#include <squall/testing.h>

typedef struct item {
    const char *name;
    double price;
} item_t;

typedef struct item_in { /* what the operation takes, bound by squall */
    int64_t item_id;
    item_t item;
} item_in_t;

static const sq_field_t item_fields[] = {
    {.name = "name", .type = SQ_T_STRING, .min_length = SQ_LEN(1),
     .bind = SQ_BIND(item_t, name)},
    {.name = "price", .type = SQ_T_NUMBER, .gt = SQ_LIMIT(0), .bind = SQ_BIND(item_t, price)},
    {0}};
static const sq_schema_t item_schema = {.title = "Item", .fields = item_fields};
static const sq_field_t item_path[] = {
    {.name = "item_id", .type = SQ_T_INTEGER, .bind = SQ_BIND(item_in_t, item_id)}, {0}};
static const sq_op_t update_item_op = {.summary = "Update Item", .path = item_path,
                                       .body = &item_schema, .input_size = sizeof(item_in_t),
                                       .body_bind = SQ_BIND(item_in_t, item)};

static void update_item(sq_req_t *req, sq_res_t *res, void *data)
{
    const item_in_t *in = sq_req_input(req); /* checked before this runs */
    sq_res_send_json_new(res, 200, json_pack("{s:s,s:I}", "item_name", in->item.name,
                                             "item_id", (json_int_t)in->item_id));
}
static const sq_handler_t items = {.put = update_item, .op.put = &update_item_op};

static sq_app_t *app;
static sq_test_t *client;

static void setup(void)
{
    cr_assert_eq(sq_app_create(&app), 0);
    cr_assert_eq(sq_app_route(app, "/items/{item_id}", &items, NULL), 0);
    cr_assert_eq(sq_test_create(&client, app, NULL), 0);
}

static void teardown(void)
{
    sq_test_destroy(client);
    sq_app_destroy(app);
}

TestSuite(items, .init = setup, .fini = teardown, .timeout = 10);

Test(items, a_valid_item_is_stored)
{
    const char *headers[] = {"Content-Type: application/json", NULL};
    sq_test_res_t *res;
    cr_assert_eq(sq_test_request(client, "PUT", "/items/5", headers,
                                 "{\"name\": \"Foo\", \"price\": 35.4}", &res), 0);
    cr_assert_eq(res->status, 200);
    cr_assert_str_eq(res->body, "{\"item_name\":\"Foo\",\"item_id\":5}");
    sq_test_res_free(res);
}

Test(items, every_problem_is_named_as_fastapi_names_it)
{
    sq_test_res_t *res;
    cr_assert_eq(sq_test_request(client, "PUT", "/items/x", NULL, "{\"price\": -1}", &res), 0);
    cr_assert_eq(res->status, 422);
    json_t *detail = json_object_get(sq_test_res_json(res), "detail");
    cr_assert_eq(json_array_size(detail), 3); /* path item_id, body name, body price */
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(detail, 2), "type")),
                     "greater_than");
    sq_test_res_free(res);
}
