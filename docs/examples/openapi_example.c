/* The lecture's FastAPI app in squall, with its OpenAPI document and /docs page:
 *
 *     cc -o openapi_example docs/examples/openapi_example.c -Iinclude build/lib/libsquall.a \
 *         $(pkg-config --libs libuv jansson libcrypto hiredis) -lpthread -lm
 *     ./openapi_example        # then open http://127.0.0.1:8000/docs
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

#include <squall.h>
#include <squall/openapi.h>

/* class Item(BaseModel): name: str; price: float; is_offer: Union[bool, None] = None */
static const sq_field_t item_fields[] = {
    {.name = "name", .type = SQ_T_STRING},
    {.name = "price", .type = SQ_T_NUMBER},
    {.name = "is_offer", .type = SQ_T_BOOLEAN, .nullable = true, .default_json = "null"},
    {0},
};
static const sq_schema_t item_schema = {.title = "Item", .fields = item_fields};

static const sq_field_t item_path[] = {{.name = "item_id", .type = SQ_T_INTEGER}, {0}};
static const sq_field_t item_query[] = {
    {.name = "q", .type = SQ_T_STRING, .nullable = true, .default_json = "null"},
    {0},
};

/* @app.get("/") def read_root(): return {"Hello": "World"} */
static void read_root(sq_req_t *req, sq_res_t *res, void *data)
{
    sq_res_send_json_new(res, 200, json_pack("{s:s}", "Hello", "World"));
}

/* @app.get("/items/{item_id}") def read_item(item_id: int, q: Union[str, None] = None)
 * Runs only once item_id and q were checked against the operation below. */
static void read_item(sq_req_t *req, sq_res_t *res, void *data)
{
    const json_t *path = sq_req_input_json(req, "path"), *query = sq_req_input_json(req, "query");
    sq_res_send_json_new(res, 200,
                         json_pack("{s:O,s:O}", "item_id", json_object_get(path, "item_id"), "q",
                                   json_object_get(query, "q")));
}

/* @app.put("/items/{item_id}") def update_item(item_id: int, item: Item) */
static void update_item(sq_req_t *req, sq_res_t *res, void *data)
{
    const json_t *path = sq_req_input_json(req, "path"), *item = sq_req_input_json(req, "body");
    sq_res_send_json_new(res, 200,
                         json_pack("{s:O,s:O}", "item_name", json_object_get(item, "name"),
                                   "item_id", json_object_get(path, "item_id")));
}

static const sq_op_t read_root_op = {.summary = "Read Root"};
static const sq_op_t read_item_op = {
    .summary = "Read Item", .path = item_path, .query = item_query};
static const sq_op_t update_item_op = {
    .summary = "Update Item", .path = item_path, .body = &item_schema};

static const sq_handler_t root = {.get = read_root, .op.get = &read_root_op};
static const sq_handler_t items = {
    .get = read_item, .op.get = &read_item_op, .put = update_item, .op.put = &update_item_op};

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    sq_app_t *app;
    if (sq_app_create(&app) != 0 || sq_app_route(app, "/", &root, NULL) != 0 ||
        sq_app_route(app, "/items/{item_id}", &items, NULL) != 0) {
        fprintf(stderr, "openapi_example: cannot set up the routes\n");
        return 1;
    }

    sq_openapi_opts_t oa;
    sq_openapi_opts_init(&oa);
    oa.title = "Items";
    int rc = sq_openapi_mount(app, &oa); /* reads swagger-ui-dist: before the loop runs */
    if (rc == UV_ENOENT) {
        fprintf(stderr, "openapi_example: no Swagger UI assets (set SQUALL_SWAGGER_UI): "
                        "serving /openapi.json without /docs\n");
        oa.docs_url = NULL;
        rc = sq_openapi_mount(app, &oa);
    }
    if (rc != 0) {
        fprintf(stderr, "openapi_example: mount: %s\n", sq_strerror(rc));
        return 1;
    }

    uv_loop_t *loop = uv_default_loop();
    sq_server_t *srv;
    if ((rc = sq_server_create(&srv, loop, app, NULL)) != 0 ||
        (rc = sq_server_listen(srv, "127.0.0.1", 8000)) != 0) {
        fprintf(stderr, "openapi_example: 127.0.0.1:8000: %s\n", sq_strerror(rc));
        return 1;
    }
    printf("http://127.0.0.1:8000/docs\n");
    fflush(stdout);
    return uv_run(loop, UV_RUN_DEFAULT);
}
