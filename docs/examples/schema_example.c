/* The lecture's FastAPI app with its model, declared once and checked before the
 * handlers run. Serves on 127.0.0.1:8000:
 *   curl -X PUT localhost:8000/items/5 -H 'Content-Type: application/json' \
 *        -d '{"name": "Foo", "price": 35.4}'           {"item_name":"Foo","item_id":5}
 *   curl localhost:8000/items/x                         422 {"detail":[{"type":"int_parsing",...}]}
 */
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <squall.h>

typedef struct item {
    const char *name;
    double price;
    bool is_offer;
} item_t;

typedef struct item_in { /* everything an operation takes, bound into one struct */
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

static const sq_op_t read_item_op = {
    .summary = "Read Item", .path = item_path, .query = item_query,
    .input_size = sizeof(item_in_t)};
static const sq_op_t update_item_op = {
    .summary = "Update Item", .path = item_path, .body = &item_schema,
    .input_size = sizeof(item_in_t), .body_bind = SQ_BIND(item_in_t, item)};

static void read_item(sq_req_t *req, sq_res_t *res, void *data)
{
    const item_in_t *in = sq_req_input(req); /* checked: item_id is an integer */
    sq_res_send_json_new(res, 200, json_pack("{s:I,s:s?}", "item_id", (json_int_t)in->item_id,
                                             "q", in->q));
}

static void update_item(sq_req_t *req, sq_res_t *res, void *data)
{
    const item_in_t *in = sq_req_input(req);
    sq_res_send_json_new(res, 200, json_pack("{s:s,s:I}", "item_name", in->item.name,
                                             "item_id", (json_int_t)in->item_id));
}

static const sq_handler_t items = {.get = read_item, .put = update_item,
                                   .op.get = &read_item_op, .op.put = &update_item_op};

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    sq_app_t *app;
    sq_server_t *srv;
    if (sq_app_create(&app) != 0 || sq_app_route(app, "/items/{item_id}", &items, NULL) != 0 ||
        sq_server_create(&srv, uv_default_loop(), app, NULL) != 0)
        return 1;
    int rc = sq_server_listen(srv, "127.0.0.1", 8000);
    if (rc != 0) {
        fprintf(stderr, "listen: %s\n", uv_strerror(rc));
        return 1;
    }
    return uv_run(uv_default_loop(), UV_RUN_DEFAULT);
}
