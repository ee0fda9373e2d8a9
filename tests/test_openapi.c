/* The OpenAPI document and the /docs page (include/squall/openapi.h, lib/openapi/).
 *
 * The lecture's app is compared with what FastAPI writes for the same Python app, key for
 * key; every document made here is also validated by third-party validators, through
 * `node tests/peers/openapi_check.mjs FILE` (@apidevtools/swagger-parser: the OpenAPI 3.1
 * schema and the $refs; ajv: every schema against JSON Schema 2020-12; and what the OAS
 * schema cannot say: unique operationIds, path templates and their parameters). Mounted,
 * the document, the page and the assets are fetched from a real server on 127.0.0.1.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <squall/openapi.h>

#include "internal.h"
#include "support/app.h"
#include "support/harness.h"

TestSuite(openapi, .timeout = 60);

/* ---- the lecture's app ----
 *
 *     class Item(BaseModel):
 *         name: str
 *         price: float
 *         is_offer: Union[bool, None] = None
 *
 *     @app.get("/")
 *     def read_root(): ...
 *     @app.get("/items/{item_id}")
 *     def read_item(item_id: int, q: Union[str, None] = None): ...
 *     @app.put("/items/{item_id}")
 *     def update_item(item_id: int, item: Item): ...
 */

static void any_get(sq_req_t *req, sq_res_t *res, void *data)
{
    sq_res_send_json_new(res, 200, json_pack("{s:s}", "Hello", "World"));
}

static void blocking_any(const sq_breq_t *req, sq_bres_t *res, void *data) {}

static const sq_field_t item_fields[] = {
    {.name = "name", .type = SQ_T_STRING},
    {.name = "price", .type = SQ_T_NUMBER},
    {.name = "is_offer", .type = SQ_T_BOOLEAN, .nullable = true, .default_json = "null"},
    {0},
};
static const sq_schema_t item_schema = {.title = "Item", .fields = item_fields};
static const sq_field_t item_id_path[] = {{.name = "item_id", .type = SQ_T_INTEGER}, {0}};
static const sq_field_t q_query[] = {
    {.name = "q", .type = SQ_T_STRING, .nullable = true, .default_json = "null"}, {0}};

static const sq_op_t read_root_op = {.summary = "Read Root"};
static const sq_op_t read_item_op = {
    .summary = "Read Item", .path = item_id_path, .query = q_query};
static const sq_op_t update_item_op = {
    .summary = "Update Item", .path = item_id_path, .body = &item_schema};
static const sq_handler_t root_h = {.get = any_get, .op.get = &read_root_op};
static const sq_handler_t items_h = {
    .get = any_get, .put = any_get, .op.get = &read_item_op, .op.put = &update_item_op};

static sq_app_t *lecture_app(void)
{
    sq_app_t *app;
    cr_assert_eq(sq_app_create(&app), 0);
    cr_assert_eq(sq_app_route(app, "/", &root_h, NULL), 0);
    cr_assert_eq(sq_app_route(app, "/items/{item_id:int}", &items_h, NULL), 0);
    return app;
}

/* What FastAPI (0.110 to 0.115, pydantic 2) serves at /openapi.json for the app above. */
static const char fastapi_lecture[] =
    "{\"openapi\":\"3.1.0\",\"info\":{\"title\":\"FastAPI\",\"version\":\"0.1.0\"},"
    "\"paths\":{"
    "\"/\":{\"get\":{\"summary\":\"Read Root\",\"operationId\":\"read_root__get\","
    "\"responses\":{\"200\":{\"description\":\"Successful Response\","
    "\"content\":{\"application/json\":{\"schema\":{}}}}}}},"
    "\"/items/{item_id}\":{"
    "\"get\":{\"summary\":\"Read Item\",\"operationId\":\"read_item_items__item_id__get\","
    "\"parameters\":["
    "{\"name\":\"item_id\",\"in\":\"path\",\"required\":true,"
    "\"schema\":{\"type\":\"integer\",\"title\":\"Item Id\"}},"
    "{\"name\":\"q\",\"in\":\"query\",\"required\":false,"
    "\"schema\":{\"anyOf\":[{\"type\":\"string\"},{\"type\":\"null\"}],\"title\":\"Q\"}}],"
    "\"responses\":{\"200\":{\"description\":\"Successful Response\","
    "\"content\":{\"application/json\":{\"schema\":{}}}},"
    "\"422\":{\"description\":\"Validation Error\",\"content\":{\"application/json\":"
    "{\"schema\":{\"$ref\":\"#/components/schemas/HTTPValidationError\"}}}}}},"
    "\"put\":{\"summary\":\"Update Item\",\"operationId\":\"update_item_items__item_id__put\","
    "\"parameters\":[{\"name\":\"item_id\",\"in\":\"path\",\"required\":true,"
    "\"schema\":{\"type\":\"integer\",\"title\":\"Item Id\"}}],"
    "\"requestBody\":{\"content\":{\"application/json\":"
    "{\"schema\":{\"$ref\":\"#/components/schemas/Item\"}}},\"required\":true},"
    "\"responses\":{\"200\":{\"description\":\"Successful Response\","
    "\"content\":{\"application/json\":{\"schema\":{}}}},"
    "\"422\":{\"description\":\"Validation Error\",\"content\":{\"application/json\":"
    "{\"schema\":{\"$ref\":\"#/components/schemas/HTTPValidationError\"}}}}}}}},"
    "\"components\":{\"schemas\":{"
    "\"HTTPValidationError\":{\"properties\":{\"detail\":{\"items\":"
    "{\"$ref\":\"#/components/schemas/ValidationError\"},\"type\":\"array\","
    "\"title\":\"Detail\"}},\"type\":\"object\",\"title\":\"HTTPValidationError\"},"
    "\"Item\":{\"properties\":{\"name\":{\"type\":\"string\",\"title\":\"Name\"},"
    "\"price\":{\"type\":\"number\",\"title\":\"Price\"},"
    "\"is_offer\":{\"anyOf\":[{\"type\":\"boolean\"},{\"type\":\"null\"}],"
    "\"title\":\"Is Offer\"}},\"type\":\"object\",\"required\":[\"name\",\"price\"],"
    "\"title\":\"Item\"},"
    "\"ValidationError\":{\"properties\":{\"loc\":{\"items\":{\"anyOf\":"
    "[{\"type\":\"string\"},{\"type\":\"integer\"}]},\"type\":\"array\","
    "\"title\":\"Location\"},\"msg\":{\"type\":\"string\",\"title\":\"Message\"},"
    "\"type\":{\"type\":\"string\",\"title\":\"Error Type\"}},\"type\":\"object\","
    "\"required\":[\"loc\",\"msg\",\"type\"],\"title\":\"ValidationError\"}}}}";

/* ---- helpers ---- */

static const char *bin_dir(void)
{
    const char *bin = getenv("SQUALL_BIN");
    return bin != NULL && *bin != '\0' ? bin : "build/bin";
}

static char *dump(const json_t *j)
{
    char *s = json_dumps(j, JSON_INDENT(1) | JSON_SORT_KEYS);
    cr_assert_not_null(s);
    return s;
}

static json_t *document(const sq_app_t *app, const char *title)
{
    sq_openapi_opts_t o;
    sq_openapi_opts_init(&o);
    o.title = title;
    json_t *doc = sq_openapi_document(app, &o);
    cr_assert_not_null(doc);
    return doc;
}

static void expect_json(const json_t *got, const char *want_text)
{
    json_error_t err;
    json_t *want = json_loads(want_text, 0, &err);
    cr_assert_not_null(want, "expected JSON does not parse: %s at %d", err.text, err.position);
    if (!json_equal(got, want)) {
        char *g = dump(got), *w = dump(want);
        cr_assert_fail("document differs from FastAPI's:\n--- got\n%s\n--- want\n%s", g, w);
    }
    json_decref(want);
}

/* Forks argv (found in PATH) in a process group of its own, stdout and stderr on out_fd;
 * it dies with the test process. */
static pid_t spawn_group(const char *const *argv, int out_fd)
{
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        setpgid(0, 0);
        dup2(out_fd, STDOUT_FILENO);
        dup2(out_fd, STDERR_FILENO);
        int null = open("/dev/null", O_RDONLY);
        if (null >= 0)
            dup2(null, STDIN_FILENO);
        execvp(argv[0], (char *const *)argv);
        _exit(127);
    }
    return pid;
}

/* Runs argv, reading its output into log until it exits or timeout_ms passes (then its
 * process group is killed). Returns its wait status, or -1 when killed. */
static int run_logged(const char *const *argv, char *log, size_t cap, int timeout_ms)
{
    int out[2];
    cr_assert_eq(pipe2(out, O_CLOEXEC), 0);
    pid_t pid = spawn_group(argv, out[1]);
    close(out[1]);
    size_t n = 0;
    log[0] = '\0';
    uint64_t end = th_now_ms() + (uint64_t)timeout_ms;
    for (;;) {
        uint64_t now = th_now_ms();
        struct pollfd p = {.fd = out[0], .events = POLLIN};
        if (now >= end || poll(&p, 1, (int)(end - now)) <= 0)
            break;
        char scratch[512];
        bool room = n < cap - 1;
        ssize_t r = read(out[0], room ? log + n : scratch, room ? cap - 1 - n : sizeof(scratch));
        if (r <= 0)
            break;
        if (room) {
            n += (size_t)r;
            log[n] = '\0';
        }
    }
    close(out[0]);
    int status = 0;
    pid_t w;
    while ((w = waitpid(pid, &status, WNOHANG)) == 0 && th_now_ms() < end)
        th_sleep_ms(10);
    if (w == pid)
        return status;
    kill(-pid, SIGKILL);
    waitpid(pid, &status, 0);
    return -1;
}

/* Runs tests/peers/openapi_check.mjs on doc; returns its exit code, its output in log. */
static int check_doc(const json_t *doc, char *log, size_t cap)
{
    char path[] = "/tmp/squall-openapi-XXXXXX.json";
    int fd = mkstemps(path, 5);
    cr_assert_geq(fd, 0);
    char *text = json_dumps(doc, JSON_COMPACT);
    cr_assert_not_null(text);
    size_t len = strlen(text);
    cr_assert_eq(write(fd, text, len), (ssize_t)len);
    close(fd);
    free(text);
    char script[PATH_MAX];
    snprintf(script, sizeof(script), "%s/../../tests/peers/openapi_check.mjs", bin_dir());
    const char *argv[] = {"node", script, path, NULL};
    int status = run_logged(argv, log, cap, 30000);
    unlink(path);
    cr_assert_neq(status, -1, "openapi_check.mjs still ran after 30 s: %s", log);
    cr_assert(WIFEXITED(status), "openapi_check.mjs died: %s", log);
    cr_assert_neq(WEXITSTATUS(status), 127, "node could not be run (scripts/deps.sh)");
    return WEXITSTATUS(status);
}

/* Validates doc with tests/peers/openapi_check.mjs; fails the test with its reason. */
static void expect_valid(const json_t *doc)
{
    static char log[8192];
    cr_assert_eq(check_doc(doc, log, sizeof(log)), 0, "the document is not valid: %s", log);
    cr_assert(strstr(log, "openapi_check: ok") != NULL, "%s", log);
}

static const json_t *at(const json_t *doc, const char *path, const char *method)
{
    const json_t *op =
        json_object_get(json_object_get(json_object_get(doc, "paths"), path), method);
    if (op == NULL) {
        char *d = dump(doc);
        cr_assert_fail("no %s %s in the document:\n%s", method, path, d);
    }
    return op;
}

static const char *str_at(const json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

/* ---- the document ---- */

Test(openapi, lecture_example_is_fastapis_document)
{
    sq_app_t *app = lecture_app();
    json_t *doc = document(app, "FastAPI");
    expect_json(doc, fastapi_lecture);
    expect_valid(doc);
    json_decref(doc);
    sq_app_destroy(app);
}

/* The checker is no rubber stamp: the lecture's document, broken one way at a time, is
 * refused each time, for the reason named. */
Test(openapi, checker_refuses_broken_documents)
{
    static const struct {
        const char *name, *edit, *reason;
    } cases[] = {
        {"no response description", "/paths/~1/get/responses/200/description", "swagger-parser"},
        {"dangling $ref", "/components/schemas/Item", "swagger-parser"},
        {"path parameter not declared", "/paths/~1items~1{item_id}/put/parameters", "not declared"},
        {"not a JSON Schema", "/components/schemas/Item/properties/name/type", "2020-12"},
        {"operationId twice", "/paths/~1/get/operationId", "twice"},
    };
    sq_app_t *app = lecture_app();
    for (size_t i = 0; i < SQ__ARRAY_SIZE(cases); i++) {
        json_t *doc = document(app, "FastAPI");
        json_t *paths = json_object_get(doc, "paths");
        json_t *root_get = json_object_get(json_object_get(paths, "/"), "get");
        json_t *put = json_object_get(json_object_get(paths, "/items/{item_id}"), "put");
        json_t *item =
            json_object_get(json_object_get(json_object_get(doc, "components"), "schemas"), "Item");
        switch (i) {
        case 0:
            json_object_del(json_object_get(json_object_get(root_get, "responses"), "200"),
                            "description");
            break;
        case 1:
            json_object_del(json_object_get(json_object_get(doc, "components"), "schemas"), "Item");
            break;
        case 2:
            json_object_del(put, "parameters");
            break;
        case 3:
            json_object_set_new(json_object_get(json_object_get(item, "properties"), "name"),
                                "type", json_string("strin"));
            break;
        case 4:
            json_object_set_new(root_get, "operationId",
                                json_string("read_item_items__item_id__get"));
            break;
        }
        static char log[8192];
        int rc = check_doc(doc, log, sizeof(log));
        cr_expect_eq(rc, 1, "[%s] (%s) accepted: %s", cases[i].name, cases[i].edit, log);
        cr_expect(strstr(log, cases[i].reason) != NULL, "[%s] refused for another reason: %s",
                  cases[i].name, log);
        json_decref(doc);
    }
    sq_app_destroy(app);
}

Test(openapi, empty_app_has_empty_paths_and_no_components)
{
    sq_app_t *app;
    cr_assert_eq(sq_app_create(&app), 0);
    json_t *doc = sq_openapi_document(app, NULL);
    expect_json(doc, "{\"openapi\":\"3.1.0\",\"info\":{\"title\":\"squall\","
                     "\"version\":\"0.1.0\"},\"paths\":{}}");
    expect_valid(doc);
    json_decref(doc);
    sq_app_destroy(app);
}

Test(openapi, opts_refused_and_info_written)
{
    sq_app_t *app;
    cr_assert_eq(sq_app_create(&app), 0);
    sq_openapi_opts_t o = {0}; /* size 0: never initialised */
    cr_assert_null(sq_openapi_document(app, &o));
    cr_assert_eq(sq_openapi_mount(app, &o), UV_EINVAL);
    sq_openapi_opts_init(&o);
    o.title = "Shop";
    o.version = "2.1";
    o.description = "Items & <orders>";
    json_t *doc = sq_openapi_document(app, &o);
    expect_json(json_object_get(doc, "info"),
                "{\"title\":\"Shop\",\"version\":\"2.1\",\"description\":\"Items & <orders>\"}");
    json_decref(doc);
    /* filled by hand: NULL title and version take the defaults (both are required) */
    sq_openapi_opts_t hand = {.size = sizeof(hand)};
    doc = sq_openapi_document(app, &hand);
    expect_json(json_object_get(doc, "info"), "{\"title\":\"squall\",\"version\":\"0.1.0\"}");
    json_decref(doc);
    sq_app_destroy(app);
}

/* Everything an operation can declare, and routes of every kind. */
typedef enum { SIZE_S, SIZE_M, SIZE_L } size_e;
static const char *const sizes[] = {"S", "M", "L", NULL};
static const sq_field_t tag_fields[] = {
    {.name = "label", .type = SQ_T_STRING, .min_length = SQ_LEN(1), .max_length = SQ_LEN(20)}, {0}};
static const sq_schema_t tag_schema = {.title = "Tag", .fields = tag_fields};
static const sq_field_t tag_item = {.type = SQ_T_OBJECT, .object = &tag_schema};
static const sq_field_t string_item = {.type = SQ_T_STRING};
static const sq_field_t dim_fields[] = {{.name = "w", .type = SQ_T_NUMBER, .gt = SQ_LIMIT(0)},
                                        {.name = "h", .type = SQ_T_NUMBER, .gt = SQ_LIMIT(0)},
                                        {0}};
static const sq_schema_t dim_schema = {.title = "Dimensions", .fields = dim_fields};
static const sq_field_t product_fields[] = {
    {.name = "name", .type = SQ_T_STRING, .description = "What it is called"},
    {.name = "price", .type = SQ_T_NUMBER, .ge = SQ_LIMIT(0), .lt = SQ_LIMIT(1e6)},
    {.name = "size", .type = SQ_T_ENUM, .enum_values = sizes, .default_json = "\"M\""},
    {.name = "tags",
     .type = SQ_T_ARRAY,
     .items = &tag_item,
     .max_length = SQ_LEN(10),
     .default_json = "[]"},
    {.name = "aliases", .type = SQ_T_ARRAY, .items = &string_item, .default_json = "[]"},
    {.name = "dims",
     .type = SQ_T_OBJECT,
     .object = &dim_schema,
     .nullable = true,
     .default_json = "null"},
    {.name = "sku", .type = SQ_T_STRING, .pattern = "^[A-Z]{3}-[0-9]+$"},
    {0}};
static const sq_schema_t product_schema = {
    .title = "Product", .description = "A thing sold", .fields = product_fields};
static const sq_field_t created_fields[] = {{.name = "id", .type = SQ_T_INTEGER}, {0}};
static const sq_schema_t created_schema = {.title = "Created", .fields = created_fields};
static const sq_field_t list_query[] = {
    {.name = "skip", .type = SQ_T_INTEGER, .default_json = "0", .ge = SQ_LIMIT(0)},
    {.name = "limit", .type = SQ_T_INTEGER, .default_json = "10", .le = SQ_LIMIT(100)},
    {.name = "size",
     .type = SQ_T_ENUM,
     .enum_values = sizes,
     .nullable = true,
     .default_json = "null"},
    {.name = "needy", .type = SQ_T_STRING, .description = "Must be given"},
    {.name = "skip", .type = SQ_T_STRING}, /* twice: the first is written */
    {0}};
static const char *const shop_tags[] = {"products", "shop", NULL};
static const sq_op_t list_op = {.summary = "List Products",
                                .tags = shop_tags,
                                .description = "All of them, a page at a time.",
                                .query = list_query};
static const sq_op_t create_op = {.tags = shop_tags,
                                  .body = &product_schema,
                                  .status = 201,
                                  .response = &created_schema,
                                  .response_description = "Created"};
static const sq_field_t pid_path[] = {
    {.name = "pid", .type = SQ_T_STRING, .format = SQ_FMT_UUID, .description = "The id"},
    {0}};
static const sq_op_t delete_op = {.summary = "Remove",
                                  .path = pid_path,
                                  .deprecated = true,
                                  .status = 204,
                                  .operation_id = "remove_product"};
static const sq_op_t patch_op = {.summary = "Patch",
                                 .body = &product_schema,
                                 .body_optional = true,
                                 .operation_id = "remove_product"};
static const sq_op_t secret_op = {.summary = "Secret", .hidden = true};
static const sq_handler_t products_h = {
    .get = any_get, .post = any_get, .op.get = &list_op, .op.post = &create_op};
static const sq_handler_t product_h = {.del = any_get,
                                       .patch = any_get,
                                       .get = any_get,
                                       .op.del = &delete_op,
                                       .op.patch = &patch_op,
                                       .op.get = &secret_op};
static const sq_handler_t plain_h = {.get = any_get, .head = any_get, .options = any_get};
static const sq_handler_t blocking_h = {.blocking.get = blocking_any, .blocking.put = blocking_any};
static const sq_handler_t head_only_h = {.head = any_get, .options = any_get};
static const sq_ws_handler_t ws_h = {0};

static sq_app_t *shop_app(void)
{
    sq_app_t *app;
    cr_assert_eq(sq_app_create(&app), 0);
    cr_assert_eq(sq_app_route(app, "/products", &products_h, NULL), 0);
    cr_assert_eq(sq_app_route(app, "/products/{pid}", &product_h, NULL), 0);
    cr_assert_eq(sq_app_websocket(app, "/ws/{room}", &ws_h, NULL, NULL), 0);
    cr_assert_eq(sq_app_route(app, "/files/{file_path:path}", &plain_h, NULL), 0);
    cr_assert_eq(sq_app_route(app, "/static/*", &plain_h, NULL), 0);
    cr_assert_eq(sq_app_route(app, "/users/{uid:int}/books/{bid}", &blocking_h, NULL), 0);
    cr_assert_eq(sq_app_route(app, "/users/{id}/books/{book}", &plain_h, NULL), 0);
    cr_assert_eq(sq_app_route(app, "/only-head", &head_only_h, NULL), 0);
    cr_assert_eq(sq_app_route(app, "/a/{x}/{x}", &plain_h, NULL), 0);
    cr_assert_eq(sq_app_route(app, "/{path}/*", &plain_h, NULL), 0);
    return app;
}

Test(openapi, every_declaration_and_every_kind_of_route)
{
    sq_app_t *app = shop_app();
    json_t *doc = document(app, "Shop");
    expect_valid(doc);
    const json_t *paths = json_object_get(doc, "paths");

    /* query parameters: required unless defaulted, constraints, enum, duplicates */
    const json_t *list = at(doc, "/products", "get");
    expect_json(list,
                "{\"tags\":[\"products\",\"shop\"],\"summary\":\"List Products\","
                "\"description\":\"All of them, a page at a time.\","
                "\"operationId\":\"list_products_products_get\",\"parameters\":["
                "{\"name\":\"skip\",\"in\":\"query\",\"required\":false,\"schema\":"
                "{\"type\":\"integer\",\"minimum\":0,\"title\":\"Skip\",\"default\":0}},"
                "{\"name\":\"limit\",\"in\":\"query\",\"required\":false,\"schema\":"
                "{\"type\":\"integer\",\"maximum\":100,\"title\":\"Limit\",\"default\":10}},"
                "{\"name\":\"size\",\"in\":\"query\",\"required\":false,\"schema\":{\"anyOf\":"
                "[{\"enum\":[\"S\",\"M\",\"L\"],\"type\":\"string\"},{\"type\":\"null\"}],"
                "\"title\":\"Size\"}},"
                "{\"name\":\"needy\",\"in\":\"query\",\"required\":true,\"schema\":"
                "{\"type\":\"string\",\"title\":\"Needy\",\"description\":\"Must be given\"},"
                "\"description\":\"Must be given\"}],"
                "\"responses\":{\"200\":{\"description\":\"Successful Response\","
                "\"content\":{\"application/json\":{\"schema\":{}}}},"
                "\"422\":{\"description\":\"Validation Error\",\"content\":{\"application/json\":"
                "{\"schema\":{\"$ref\":\"#/components/schemas/HTTPValidationError\"}}}}}}");

    /* body, nested models, a list of models, status 201 with a response model;
     * no summary: derived from the method and the path, the operationId from the path */
    const json_t *create = at(doc, "/products", "post");
    cr_assert_str_eq(str_at(create, "summary"), "Post Products");
    cr_assert_str_eq(str_at(create, "operationId"), "products_post");
    expect_json(json_object_get(create, "requestBody"),
                "{\"required\":true,\"content\":{\"application/json\":{\"schema\":"
                "{\"$ref\":\"#/components/schemas/Product\"}}}}");
    expect_json(json_object_get(create, "responses"),
                "{\"201\":{\"description\":\"Created\",\"content\":{\"application/json\":"
                "{\"schema\":{\"$ref\":\"#/components/schemas/Created\"}}}},"
                "\"422\":{\"description\":\"Validation Error\",\"content\":{\"application/json\":"
                "{\"schema\":{\"$ref\":\"#/components/schemas/HTTPValidationError\"}}}}}");
    const json_t *schemas = json_object_get(json_object_get(doc, "components"), "schemas");
    expect_json(json_object_get(schemas, "Product"),
                "{\"type\":\"object\",\"title\":\"Product\",\"description\":\"A thing sold\","
                "\"properties\":{"
                "\"name\":{\"type\":\"string\",\"title\":\"Name\","
                "\"description\":\"What it is called\"},"
                "\"price\":{\"type\":\"number\",\"minimum\":0,\"exclusiveMaximum\":1000000,"
                "\"title\":\"Price\"},"
                "\"size\":{\"enum\":[\"S\",\"M\",\"L\"],\"type\":\"string\",\"title\":\"Size\","
                "\"default\":\"M\"},"
                "\"tags\":{\"type\":\"array\",\"items\":{\"$ref\":\"#/components/schemas/Tag\"},"
                "\"maxItems\":10,\"title\":\"Tags\",\"default\":[]},"
                "\"aliases\":{\"type\":\"array\",\"items\":{\"type\":\"string\"},"
                "\"title\":\"Aliases\",\"default\":[]},"
                "\"dims\":{\"anyOf\":[{\"$ref\":\"#/components/schemas/Dimensions\"},"
                "{\"type\":\"null\"}],\"title\":\"Dims\"},"
                "\"sku\":{\"type\":\"string\",\"pattern\":\"^[A-Z]{3}-[0-9]+$\","
                "\"title\":\"Sku\"}},"
                "\"required\":[\"name\",\"price\",\"sku\"]}");
    cr_assert_not_null(json_object_get(schemas, "Tag"));
    cr_assert_not_null(json_object_get(schemas, "Dimensions"));
    cr_assert_not_null(json_object_get(schemas, "Created"));

    /* deprecated, 204 without content, a declared operationId, a path field the pattern
     * lacks left out; the hidden GET is not there */
    const json_t *del = at(doc, "/products/{pid}", "delete");
    cr_assert_str_eq(str_at(del, "operationId"), "remove_product");
    cr_assert(json_is_true(json_object_get(del, "deprecated")));
    expect_json(json_object_get(del, "parameters"),
                "[{\"name\":\"pid\",\"in\":\"path\",\"required\":true,\"schema\":"
                "{\"type\":\"string\",\"format\":\"uuid\",\"title\":\"Pid\","
                "\"description\":\"The id\"},\"description\":\"The id\"}]");
    expect_json(json_object_get(json_object_get(del, "responses"), "204"),
                "{\"description\":\"Successful Response\"}");
    cr_assert_null(json_object_get(json_object_get(paths, "/products/{pid}"), "get"));
    /* the same declared operationId twice: the second is made unique; optional body */
    const json_t *patch = at(doc, "/products/{pid}", "patch");
    cr_assert_str_eq(str_at(patch, "operationId"), "remove_product_2");
    expect_json(json_object_get(patch, "requestBody"),
                "{\"content\":{\"application/json\":{\"schema\":{\"anyOf\":"
                "[{\"$ref\":\"#/components/schemas/Product\"},{\"type\":\"null\"}],"
                "\"title\":\"Product\"}}}}");

    /* the WebSocket route is left out */
    cr_assert_null(json_object_get(paths, "/ws/{room}"));
    /* {x:path} and `*`: named parameters, strings; no op: a 200 and a 422 */
    const json_t *files = at(doc, "/files/{file_path}", "get");
    cr_assert_str_eq(str_at(files, "summary"), "Get Files File Path");
    cr_assert_str_eq(str_at(files, "operationId"), "files__file_path__get");
    expect_json(json_object_get(files, "parameters"),
                "[{\"name\":\"file_path\",\"in\":\"path\",\"required\":true,\"schema\":"
                "{\"type\":\"string\",\"title\":\"File Path\"}}]");
    cr_assert_not_null(json_object_get(json_object_get(files, "responses"), "422"));
    at(doc, "/static/{path}", "get");
    /* HEAD and OPTIONS are not listed */
    cr_assert_null(json_object_get(json_object_get(paths, "/files/{file_path}"), "head"));
    cr_assert_null(json_object_get(json_object_get(paths, "/files/{file_path}"), "options"));
    cr_assert_null(json_object_get(paths, "/only-head"));
    /* blocking callbacks are listed; {x:int} without op is an integer */
    const json_t *books = at(doc, "/users/{uid}/books/{bid}", "put");
    expect_json(json_object_get(books, "parameters"),
                "[{\"name\":\"uid\",\"in\":\"path\",\"required\":true,\"schema\":"
                "{\"type\":\"integer\",\"title\":\"Uid\"}},"
                "{\"name\":\"bid\",\"in\":\"path\",\"required\":true,\"schema\":"
                "{\"type\":\"string\",\"title\":\"Bid\"}}]");
    /* the same path under other names: one path, the earlier names; GET is the first
     * route's */
    cr_assert_null(json_object_get(paths, "/users/{id}/books/{book}"));
    cr_assert_str_eq(str_at(at(doc, "/users/{uid}/books/{bid}", "get"), "operationId"),
                     "users__uid__books__bid__get");
    /* a name twice in a pattern; `*` after a parameter named path */
    at(doc, "/a/{x}/{x_2}", "get");
    at(doc, "/{path}/{path_}", "get");
    json_decref(doc);
    sq_app_destroy(app);
}

/* Two tables titled "Item" that differ: the second is Item_2, and the references
 * follow; the same table met twice is one component. */
static const sq_field_t other_item_fields[] = {{.name = "sku", .type = SQ_T_STRING}, {0}};
static const sq_schema_t other_item_schema = {.title = "Item", .fields = other_item_fields};
static const sq_field_t order_fields[] = {
    {.name = "item", .type = SQ_T_OBJECT, .object = &other_item_schema}, {0}};
static const sq_schema_t order_schema = {.title = "Order Form!", .fields = order_fields};
static const sq_op_t put_item_op = {.body = &item_schema};
static const sq_op_t put_order_op = {.body = &order_schema, .response = &item_schema};
static const sq_handler_t put_item_h = {.put = any_get, .op.put = &put_item_op};
static const sq_handler_t put_order_h = {.put = any_get, .op.put = &put_order_op};

Test(openapi, same_title_different_tables_are_told_apart)
{
    sq_app_t *app;
    cr_assert_eq(sq_app_create(&app), 0);
    cr_assert_eq(sq_app_route(app, "/item", &put_item_h, NULL), 0);
    cr_assert_eq(sq_app_route(app, "/order", &put_order_h, NULL), 0);
    json_t *doc = document(app, "t");
    expect_valid(doc);
    const json_t *schemas = json_object_get(json_object_get(doc, "components"), "schemas");
    cr_assert_str_eq(str_at(json_object_get(schemas, "Item"), "title"), "Item");
    cr_assert_not_null(
        json_object_get(json_object_get(json_object_get(schemas, "Item"), "properties"), "price"));
    /* a title that is no components key is made one */
    const json_t *order = json_object_get(schemas, "Order_Form_");
    cr_assert_not_null(order);
    expect_json(json_object_get(json_object_get(order, "properties"), "item"),
                "{\"$ref\":\"#/components/schemas/Item_2\"}");
    cr_assert_not_null(
        json_object_get(json_object_get(json_object_get(schemas, "Item_2"), "properties"), "sku"));
    /* the response is the first Item again */
    const json_t *put = at(doc, "/order", "put");
    expect_json(
        json_object_get(json_object_get(json_object_get(put, "responses"), "200"), "content"),
        "{\"application/json\":{\"schema\":{\"$ref\":\"#/components/schemas/Item\"}}}");
    cr_assert_eq(json_object_size(schemas), 5); /* Item, Item_2, Order_Form_, 2 errors */
    json_decref(doc);
    sq_app_destroy(app);
}

/* A table that refers to itself (a tree): not expanded past it, and nothing recurses
 * without end. */
static const sq_schema_t node_schema;
static const sq_field_t node_child = {.type = SQ_T_OBJECT, .object = &node_schema};
static const sq_field_t node_fields[] = {
    {.name = "name", .type = SQ_T_STRING},
    {.name = "children", .type = SQ_T_ARRAY, .items = &node_child, .default_json = "[]"},
    {0}};
static const sq_schema_t node_schema = {.title = "Node", .fields = node_fields};
/* a binary tree: two references to itself per level (walked once, not 2^depth times),
 * and a list that holds itself */
static const sq_schema_t pair_schema;
static const sq_field_t self_list = {.name = "l", .type = SQ_T_ARRAY, .items = &self_list};
static const sq_field_t pair_fields[] = {
    {.name = "left", .type = SQ_T_OBJECT, .object = &pair_schema, .nullable = true},
    {.name = "right", .type = SQ_T_OBJECT, .object = &pair_schema, .nullable = true},
    {.name = "l", .type = SQ_T_ARRAY, .items = &self_list, .default_json = "[]"},
    {0}};
static const sq_schema_t pair_schema = {.title = "Pair", .fields = pair_fields};
static const sq_op_t pair_op = {.body = &pair_schema, .response = &pair_schema};
static const sq_handler_t pair_h = {.put = any_get, .op.put = &pair_op};
static const sq_op_t node_op = {.body = &node_schema};
static const sq_handler_t node_h = {.post = any_get, .op.post = &node_op};

Test(openapi, self_referring_table_does_not_recurse)
{
    sq_app_t *app;
    cr_assert_eq(sq_app_create(&app), 0);
    cr_assert_eq(sq_app_route(app, "/tree", &node_h, NULL), 0);
    cr_assert_eq(sq_app_route(app, "/pair", &pair_h, NULL), 0);
    json_t *doc = document(app, "t");
    expect_valid(doc);
    /* written as an object of that title, its members not described */
    expect_json(json_object_get(at(doc, "/pair", "put"), "requestBody"),
                "{\"required\":true,\"content\":{\"application/json\":{\"schema\":"
                "{\"type\":\"object\",\"title\":\"Pair\"}}}}");
    json_decref(doc);
    sq_app_destroy(app);
}

/* Thirty tables, each with two members of the one below: 2^30 paths from the top, 31
 * tables. Each is walked and written once (walking every path would not end in time). */
#define LEVEL(k, below)                                                                            \
    static const sq_field_t l##k##_fields[] = {                                                    \
        {.name = "a", .type = SQ_T_OBJECT, .object = &l##below},                                   \
        {.name = "b", .type = SQ_T_OBJECT, .object = &l##below},                                   \
        {0}};                                                                                      \
    static const sq_schema_t l##k = {.title = "L" #k, .fields = l##k##_fields};
static const sq_field_t l0_fields[] = {{.name = "x", .type = SQ_T_INTEGER}, {0}};
static const sq_schema_t l0 = {.title = "L0", .fields = l0_fields};
LEVEL(1, 0)
LEVEL(2, 1)
LEVEL(3, 2)
LEVEL(4, 3)
LEVEL(5, 4)
LEVEL(6, 5)
LEVEL(7, 6)
LEVEL(8, 7)
LEVEL(9, 8)
LEVEL(10, 9)
LEVEL(11, 10)
LEVEL(12, 11)
LEVEL(13, 12)
LEVEL(14, 13)
LEVEL(15, 14)
LEVEL(16, 15)
LEVEL(17, 16)
LEVEL(18, 17)
LEVEL(19, 18)
LEVEL(20, 19)
LEVEL(21, 20)
LEVEL(22, 21)
LEVEL(23, 22)
LEVEL(24, 23)
LEVEL(25, 24)
LEVEL(26, 25)
LEVEL(27, 26)
LEVEL(28, 27)
LEVEL(29, 28)
LEVEL(30, 29)
static const sq_op_t wide_op = {.body = &l30};
static const sq_handler_t wide_h = {.post = any_get, .op.post = &wide_op};
static const sq_op_t narrow_op = {.body = &l10};
static const sq_handler_t narrow_h = {.post = any_get, .op.post = &narrow_op};

Test(openapi, wide_and_deep_tables_are_walked_once, .timeout = 20)
{
    sq_app_t *app;
    cr_assert_eq(sq_app_create(&app), 0);
    cr_assert_eq(sq_app_route(app, "/wide", &wide_h, NULL), 0);
    json_t *doc = document(app, "t");
    const json_t *schemas = json_object_get(json_object_get(doc, "components"), "schemas");
    cr_assert_eq(json_object_size(schemas), 31 + 2);
    expect_json(
        json_object_get(json_object_get(json_object_get(schemas, "L30"), "properties"), "b"),
        "{\"$ref\":\"#/components/schemas/L29\"}");
    json_decref(doc);
    sq_app_destroy(app);
    /* swagger-parser walks every path through the references (2^30 here): the same
     * shape, ten deep, goes to the checker */
    cr_assert_eq(sq_app_create(&app), 0);
    cr_assert_eq(sq_app_route(app, "/narrow", &narrow_h, NULL), 0);
    doc = document(app, "t");
    expect_valid(doc);
    json_decref(doc);
    sq_app_destroy(app);
}

/* Odd declarations: each is written validly, or left out. */
static const char *const no_tags[] = {NULL};
static const sq_op_t odd_status_op = {
    .summary = "Caf\xc3\xa9 \xe2\x98\x95", .status = 999, .tags = no_tags};
static const sq_op_t status_422_op = {.status = 422, .query = q_query};
static const sq_op_t status_101_op = {.status = 101, .response = &item_schema};
static const sq_op_t id_clash_op = {.operation_id = "items__item_id__get"};
static const sq_handler_t odd_status_h = {.get = any_get, .op.get = &odd_status_op};
static const sq_handler_t status_422_h = {.get = any_get, .op.get = &status_422_op};
static const sq_handler_t status_101_h = {.get = any_get, .op.get = &status_101_op};
static const sq_handler_t id_clash_h = {.get = any_get, .op.get = &id_clash_op};
static const sq_handler_t get_only_h = {.get = any_get};

Test(openapi, odd_routes_are_written_validly_or_left_out)
{
    sq_app_t *app;
    cr_assert_eq(sq_app_create(&app), 0);
    cr_assert_eq(sq_app_route(app, "/coffee", &odd_status_h, NULL), 0);
    cr_assert_eq(sq_app_route(app, "/strict", &status_422_h, NULL), 0);
    cr_assert_eq(sq_app_route(app, "/switch", &status_101_h, NULL), 0);
    cr_assert_eq(sq_app_route(app, "/clash", &id_clash_h, NULL), 0);
    cr_assert_eq(sq_app_route(app, "/items/{item_id}", &get_only_h, NULL), 0);
    /* a pattern longer than the document's limit: left out */
    static char longp[3000];
    memset(longp, 'a', sizeof(longp) - 1);
    longp[0] = '/';
    cr_assert_eq(sq_app_route(app, longp, &get_only_h, NULL), 0);
    /* sixteen parameters, the router's most */
    char many[512] = "";
    for (int i = 0; i < 16; i++)
        snprintf(many + strlen(many), sizeof(many) - strlen(many), "/{p%d:int}", i);
    cr_assert_eq(sq_app_route(app, many, &get_only_h, NULL), 0);
    cr_assert_eq(sq_app_route(app, "/", &get_only_h, NULL), 0);
    cr_assert_eq(sq_app_route(app, "/trailing/", &get_only_h, NULL), 0);

    json_t *doc = document(app, "t");
    expect_valid(doc);
    const json_t *coffee = at(doc, "/coffee", "get");
    cr_assert_null(json_object_get(coffee, "tags"));
    cr_assert_str_eq(str_at(coffee, "operationId"), "caf_______coffee_get");
    expect_json(json_object_get(coffee, "responses"),
                "{\"default\":{\"description\":\"Successful Response\",\"content\":"
                "{\"application/json\":{\"schema\":{}}}}}");
    /* a declared 422 is the success: no validation answer is added over it */
    const json_t *strict = at(doc, "/strict", "get");
    cr_assert_eq(json_object_size(json_object_get(strict, "responses")), 1);
    /* 1xx: no content (FastAPI's is_body_allowed_for_status_code) */
    expect_json(json_object_get(at(doc, "/switch", "get"), "responses"),
                "{\"101\":{\"description\":\"Successful Response\"}}");
    /* an operationId that another would derive: the later one is made unique */
    cr_assert_str_eq(str_at(at(doc, "/items/{item_id}", "get"), "operationId"),
                     "items__item_id__get_2");
    cr_assert_eq(json_object_size(json_object_get(doc, "paths")), 8);
    cr_assert_str_eq(str_at(at(doc, "/", "get"), "operationId"), "root_get");
    cr_assert_str_eq(str_at(at(doc, "/", "get"), "summary"), "Get Root");
    at(doc, "/trailing/", "get");
    json_decref(doc);
    sq_app_destroy(app);
}

static const sq_handler_t thousand_h = {.get = any_get, .op.get = &read_item_op};

Test(openapi, thousand_routes)
{
    sq_app_t *app;
    cr_assert_eq(sq_app_create(&app), 0);
    for (int i = 0; i < 1000; i++) {
        char pattern[64];
        snprintf(pattern, sizeof(pattern), "/r%d/{item_id:int}", i);
        cr_assert_eq(sq_app_route(app, pattern, &thousand_h, NULL), 0);
    }
    json_t *doc = document(app, "t");
    cr_assert_eq(json_object_size(json_object_get(doc, "paths")), 1000);
    /* one summary for all: operationIds still unique, by their paths */
    cr_assert_str_eq(str_at(at(doc, "/r999/{item_id}", "get"), "operationId"),
                     "read_item_r999__item_id__get");
    expect_valid(doc);
    json_decref(doc);
    sq_app_destroy(app);
}

/* ---- mounted, served ---- */

static const char *assets_dir(void)
{
    static char dir[PATH_MAX];
    snprintf(dir, sizeof(dir), "%s/../../web/node_modules/swagger-ui-dist", bin_dir());
    return dir;
}

static off_t file_size(const char *dir, const char *name)
{
    char path[PATH_MAX + 64];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    struct stat st;
    cr_assert_eq(stat(path, &st), 0, "%s: %s (scripts/deps.sh installs web/)", path,
                 strerror(errno));
    return st.st_size;
}

static void get(int port, const char *target, th_res_t *r)
{
    char req[512];
    snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: t\r\n\r\n", target);
    cr_assert_eq(th_request(port, req, r), 0, "GET %s", target);
}

static const sq_handler_t late_h = {.get = any_get};

Test(openapi, mounted_document_page_and_assets_are_served)
{
    sq_app_t *app = lecture_app();
    sq_openapi_opts_t o;
    sq_openapi_opts_init(&o);
    o.title = "FastAPI";
    o.docs_assets = assets_dir();
    unsigned before = sq__app_nroutes(app);
    cr_assert_eq(sq_openapi_mount(app, &o), 0);
    cr_assert_eq(sq__app_nroutes(app), before + 4);
    /* added after the mount, before the first request: in the document */
    cr_assert_eq(sq_app_route(app, "/late", &late_h, NULL), 0);
    json_t *want = sq_openapi_document(app, &o);
    cr_assert_not_null(json_object_get(json_object_get(want, "paths"), "/late"));
    /* the mount's own routes are not */
    cr_assert_null(json_object_get(json_object_get(want, "paths"), "/openapi.json"));
    cr_assert_null(json_object_get(json_object_get(want, "paths"), "/docs"));

    th_server_t *ts = th_server_start(app, NULL);
    int port = th_server_port(ts);
    th_res_t r;
    get(port, "/openapi.json", &r);
    cr_assert_eq(r.status, 200);
    cr_assert_str_eq(th_res_header(&r, "Content-Type"), "application/json");
    json_error_t err;
    json_t *got = json_loadb(r.body, r.body_len, 0, &err);
    cr_assert_not_null(got, "%s", err.text);
    cr_assert(json_equal(got, want));
    expect_valid(got);
    json_decref(got);
    /* the same bytes the second time */
    th_res_t r2;
    get(port, "/openapi.json", &r2);
    cr_assert_eq(r2.body_len, r.body_len);
    cr_assert_eq(memcmp(r2.body, r.body, r.body_len), 0);
    th_res_free(&r2);
    th_res_free(&r);

    get(port, "/docs", &r);
    cr_assert_eq(r.status, 200);
    cr_assert_str_eq(th_res_header(&r, "Content-Type"), "text/html; charset=utf-8");
    cr_assert_not_null(strstr(r.body, "href=\"/docs/swagger-ui.css\""), "%s", r.body);
    cr_assert_not_null(strstr(r.body, "src=\"/docs/swagger-ui-bundle.js\""), "%s", r.body);
    cr_assert_not_null(strstr(r.body, "url: \"/openapi.json\""), "%s", r.body);
    cr_assert_not_null(strstr(r.body, "<title>FastAPI - Swagger UI</title>"), "%s", r.body);
    cr_assert_null(strstr(r.body, "http"), "the page loads nothing from elsewhere: %s", r.body);
    th_res_free(&r);

    static const struct {
        const char *target, *file, *type;
    } assets[] = {
        {"/docs/swagger-ui.css", "swagger-ui.css", "text/css; charset=utf-8"},
        {"/docs/swagger-ui-bundle.js", "swagger-ui-bundle.js", "text/javascript; charset=utf-8"},
    };
    for (size_t i = 0; i < 2; i++) {
        get(port, assets[i].target, &r);
        cr_assert_eq(r.status, 200, "%s", assets[i].target);
        cr_assert_str_eq(th_res_header(&r, "Content-Type"), assets[i].type);
        cr_assert_str_eq(th_res_header(&r, "Cache-Control"), "public, max-age=86400");
        cr_assert_eq((off_t)r.body_len, file_size(o.docs_assets, assets[i].file));
        th_res_free(&r);
    }
    /* HEAD: the head alone */
    th_conn_t c;
    cr_assert_eq(th_conn_open(&c, port), 0);
    th_conn_sends(&c, "HEAD /openapi.json HTTP/1.1\r\nHost: t\r\n\r\n");
    cr_assert_eq(th_conn_read_res(&c, &r, 5000, true), 0);
    cr_assert_eq(r.status, 200);
    cr_assert_eq(r.body_len, 0);
    th_res_free(&r);
    th_conn_close(&c);
    th_server_stop(ts, 1000);
    json_decref(want);
    sq_app_destroy(app);
}

Test(openapi, missing_assets_mount_nothing_then_the_document_alone)
{
    sq_app_t *app = lecture_app();
    sq_openapi_opts_t o;
    sq_openapi_opts_init(&o);
    o.docs_assets = "/nonexistent/swagger-ui-dist";
    unsigned before = sq__app_nroutes(app);
    cr_assert_eq(sq_openapi_mount(app, &o), UV_ENOENT);
    cr_assert_eq(sq__app_nroutes(app), before);
    /* the environment names the folder when opts does not */
    o.docs_assets = NULL;
    cr_assert_eq(setenv("SQUALL_SWAGGER_UI", "/nonexistent", 1), 0);
    cr_assert_eq(sq_openapi_mount(app, &o), UV_ENOENT);
    cr_assert_eq(sq__app_nroutes(app), before);
    cr_assert_eq(setenv("SQUALL_SWAGGER_UI", assets_dir(), 1), 0);
    o.docs_url = "/api/docs/";
    o.openapi_url = "/api/openapi.json";
    cr_assert_eq(sq_openapi_mount(app, &o), 0);
    cr_assert_eq(sq__app_nroutes(app), before + 4);
    cr_assert_str_eq(sq__route_pattern(sq__app_route_at(app, before + 2)),
                     "/api/docs/swagger-ui.css");
    unsetenv("SQUALL_SWAGGER_UI");

    sq_app_t *app2 = lecture_app();
    o.docs_url = NULL;
    o.docs_assets = "/nonexistent";
    cr_assert_eq(sq_openapi_mount(app2, &o), 0);
    cr_assert_eq(sq__app_nroutes(app2), before + 1);
    th_server_t *ts = th_server_start(app2, NULL);
    th_res_t r;
    get(th_server_port(ts), "/api/openapi.json", &r);
    cr_assert_eq(r.status, 200);
    th_res_free(&r);
    get(th_server_port(ts), "/docs", &r);
    cr_assert_eq(r.status, 404);
    th_res_free(&r);
    th_server_stop(ts, 1000);
    sq_app_destroy(app2);
    sq_app_destroy(app);
}

Test(openapi, urls_that_are_not_literal_paths_are_refused)
{
    sq_app_t *app = lecture_app();
    unsigned before = sq__app_nroutes(app);
    static const struct {
        const char *openapi, *docs;
    } bad[] = {
        {NULL, "/docs"},
        {"openapi.json", "/docs"},
        {"/{x}", "/docs"},
        {"/a%20b", "/docs"},
        {"/a?b", "/docs"},
        {"/*", "/docs"},
        {"/o", "/d/*"},
        {"/same", "/same"},
        {"/d/swagger-ui.css", "/d"},
        {"/a b", "/docs"},
        {"/o", "docs"},
    };
    sq_openapi_opts_t o;
    for (size_t i = 0; i < SQ__ARRAY_SIZE(bad); i++) {
        sq_openapi_opts_init(&o);
        o.openapi_url = bad[i].openapi;
        o.docs_url = bad[i].docs;
        cr_expect_eq(sq_openapi_mount(app, &o), UV_EINVAL, "%s %s", bad[i].openapi, bad[i].docs);
    }
    cr_assert_eq(sq__app_nroutes(app), before);
    cr_assert_eq(sq_openapi_mount(NULL, NULL), UV_EINVAL);
    sq_app_destroy(app);
}

/* Two servers, each on its own loop thread, share the app and ask for the document at
 * once: it is made once and both get the same bytes. */
typedef struct fetcher {
    int port;
    char *body;
    size_t len;
    int status;
} fetcher_t;

static void *fetch_thread(void *arg)
{
    fetcher_t *f = arg;
    th_res_t r;
    if (th_request(f->port, "GET /openapi.json HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0) {
        f->status = r.status;
        f->body = malloc(r.body_len + 1);
        if (f->body != NULL)
            memcpy(f->body, r.body, r.body_len);
        f->len = r.body_len;
        th_res_free(&r);
    }
    return NULL;
}

Test(openapi, first_requests_on_two_loops_at_once_get_one_document)
{
    sq_app_t *app = shop_app();
    sq_openapi_opts_t o;
    sq_openapi_opts_init(&o);
    o.docs_url = NULL;
    cr_assert_eq(sq_openapi_mount(app, &o), 0);
    th_server_t *a = th_server_start(app, NULL), *b = th_server_start(app, NULL);
    fetcher_t f[8] = {{0}};
    pthread_t t[8];
    for (int i = 0; i < 8; i++) {
        f[i].port = th_server_port(i % 2 ? a : b);
        cr_assert_eq(pthread_create(&t[i], NULL, fetch_thread, &f[i]), 0);
    }
    for (int i = 0; i < 8; i++)
        pthread_join(t[i], NULL);
    th_server_stop(a, 1000);
    th_server_stop(b, 1000);
    for (int i = 0; i < 8; i++) {
        cr_assert_eq(f[i].status, 200);
        cr_assert_eq(f[i].len, f[0].len);
        cr_assert_eq(memcmp(f[i].body, f[0].body, f[0].len), 0);
    }
    for (int i = 0; i < 8; i++)
        free(f[i].body);
    sq_app_destroy(app);
}

/* ---- the page in a browser ---- */

static void read_item_echo(sq_req_t *req, sq_res_t *res, void *data)
{
    int64_t id = 0;
    sq_req_param_int(req, "item_id", &id);
    sq_res_send_json_new(
        res, 200, json_pack("{s:I,s:s?}", "item_id", (json_int_t)id, "q", sq_req_query(req, "q")));
}

static const sq_handler_t items_echo_h = {
    .get = read_item_echo, .put = any_get, .op.get = &read_item_op, .op.put = &update_item_op};

/* tests/browser/docs.mjs: chromium (headless, playwright-core) opens /docs with every
 * other origin refused, sees the three operations rendered, and runs GET
 * /items/{item_id} through "Try it out" and "Execute": a 200 with the echoed values. */
Test(openapi, docs_page_in_chromium_executes_a_get, .timeout = 90)
{
    signal(SIGPIPE, SIG_IGN);
    sq_app_t *app;
    cr_assert_eq(sq_app_create(&app), 0);
    cr_assert_eq(sq_app_route(app, "/", &root_h, NULL), 0);
    cr_assert_eq(sq_app_route(app, "/items/{item_id:int}", &items_echo_h, NULL), 0);
    sq_openapi_opts_t o;
    sq_openapi_opts_init(&o);
    o.title = "Items";
    o.docs_assets = assets_dir();
    cr_assert_eq(sq_openapi_mount(app, &o), 0);
    th_server_t *ts = th_server_start(app, NULL);

    char url[64], script[PATH_MAX];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/", th_server_port(ts));
    snprintf(script, sizeof(script), "%s/../../tests/browser/docs.mjs", bin_dir());
    cr_assert_eq(setenv("DOCS_DEADLINE_MS", "60000", 1), 0);
    if (getenv("SQUALL_ARTIFACTS") == NULL) {
        char dir[PATH_MAX];
        snprintf(dir, sizeof(dir), "%s/../artifacts", bin_dir());
        cr_assert_eq(setenv("SQUALL_ARTIFACTS", dir, 1), 0);
    }
    const char *argv[] = {"node", script, url, NULL};
    static char log[16384];
    int status = run_logged(argv, log, sizeof(log), 70000);
    th_server_stop(ts, 1000);
    sq_app_destroy(app);
    cr_assert_neq(status, -1, "docs.mjs still ran after 70 s: killed; it said: %s", log);
    cr_assert(WIFEXITED(status), "docs.mjs died of signal %d: %s", WTERMSIG(status), log);
    cr_assert_neq(WEXITSTATUS(status), 127, "node could not be run (scripts/deps.sh installs it)");
    cr_assert_eq(WEXITSTATUS(status), 0, "docs.mjs exited %d: %s", WEXITSTATUS(status), log);
    cr_assert(strstr(log, "docs.mjs: ok") != NULL, "%s", log);
}

/* ---- structs that grow (common.h) ---- */

/* An older header's options: a struct cut before docs_assets (in a malloc block of
 * exactly that size, so ASan sees a read past it) takes the default folder; a newer
 * header's, bigger, is taken when its unknown bytes are zero and refused with UV_ENOTSUP
 * otherwise; sq_openapi_opts_init zeroes what it does not know. */
/* The options as an older header declared them (before docs_assets), and as a newer one
 * might (a field more). */
typedef struct opts_older {
    size_t size;
    const char *title, *version, *description, *openapi_url, *docs_url;
} opts_older_t;
typedef struct opts_newer {
    sq_openapi_opts_t o;
    uint64_t more[2];
} opts_newer_t;

Test(openapi, options_from_older_and_newer_headers)
{
    _Static_assert(sizeof(opts_older_t) == offsetof(sq_openapi_opts_t, docs_assets),
                   "an older header is a prefix");
    opts_older_t *old = malloc(sizeof(*old));
    cr_assert_not_null(old);
    sq_openapi_opts_init_sized((sq_openapi_opts_t *)old, sizeof(*old));
    cr_assert_eq(old->size, sizeof(*old));
    cr_assert_str_eq(old->openapi_url, "/openapi.json");
    old->docs_url = NULL; /* the default folder may not exist where this runs */
    sq_app_t *app = lecture_app();
    cr_assert_eq(sq_openapi_mount(app, (sq_openapi_opts_t *)old), 0);
    old->openapi_url = "/v1/openapi.json";
    old->docs_url = "/v1/docs";
    cr_assert_eq(setenv("SQUALL_SWAGGER_UI", assets_dir(), 1), 0);
    /* docs_assets is not in it: the environment's folder */
    cr_assert_eq(sq_openapi_mount(app, (sq_openapi_opts_t *)old), 0);
    unsetenv("SQUALL_SWAGGER_UI");
    free(old);

    opts_newer_t *newer = malloc(sizeof(*newer));
    cr_assert_not_null(newer);
    memset(newer, 0xa5, sizeof(*newer));
    sq_openapi_opts_init_sized(&newer->o, sizeof(*newer));
    cr_assert_eq(newer->o.size, sizeof(*newer));
    cr_assert(newer->more[0] == 0 && newer->more[1] == 0, "the unknown tail is not zeroed");
    newer->o.openapi_url = "/v2/openapi.json";
    newer->o.docs_url = NULL;
    cr_assert_eq(sq_openapi_mount(app, &newer->o), 0);
    json_t *doc = sq_openapi_document(app, &newer->o);
    cr_assert_not_null(doc);
    json_decref(doc);
    newer->more[1] = 1; /* asks for something this library does not know */
    unsigned before = sq__app_nroutes(app);
    newer->o.openapi_url = "/v3/openapi.json";
    cr_assert_eq(sq_openapi_mount(app, &newer->o), UV_ENOTSUP);
    cr_assert_null(sq_openapi_document(app, &newer->o));
    cr_assert_eq(sq__app_nroutes(app), before);
    free(newer);
    sq_app_destroy(app);
}

/* ---- the documentation ---- */

static char *slurp(const char *rel)
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/../../%s", bin_dir(), rel);
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "%s: %s", path, strerror(errno));
    static char *buf;
    buf = malloc(1 << 20);
    cr_assert_not_null(buf);
    size_t n = fread(buf, 1, (1 << 20) - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

/* docs/openapi.md shows docs/examples/openapi_example.c as it is. */
Test(openapi, docs_page_holds_the_example_verbatim)
{
    char *md = slurp("docs/openapi.md"), *src = slurp("docs/examples/openapi_example.c");
    const char *open = "<!-- example: docs/examples/openapi_example.c -->\n```c\n";
    char *start = strstr(md, open), *end = start ? strstr(start, "```\n<!-- /example -->") : NULL;
    cr_assert(start != NULL && end != NULL, "docs/openapi.md: no example markers");
    start += strlen(open);
    cr_assert_eq((size_t)(end - start), strlen(src), "the example in docs/openapi.md differs");
    cr_assert_eq(memcmp(start, src, strlen(src)), 0, "the example in docs/openapi.md differs");
    free(md);
    free(src);
}

/* ---- out of memory ---- */

/* In a sanitizer build, LeakSanitizer's check on demand (as the harness's
 * th_server_stop uses it); NULL otherwise. */
extern int __lsan_do_recoverable_leak_check(void) __attribute__((weak));

/* jansson's allocations fail after `budget` more (json_set_alloc_funcs: jansson's own
 * test_chaos idea). */
static long budget;
static void *failing_malloc(size_t n)
{
    return budget-- > 0 ? malloc(n) : NULL;
}

/* Every allocation of jansson that the document makes fails in turn: each time the call
 * returns NULL, frees what it made (LeakSanitizer in the ASan build) and never crashes;
 * with enough memory it returns the whole document. */
Test(openapi, out_of_memory_at_every_step_returns_null_and_leaks_nothing)
{
    sq_app_t *app = shop_app();
    json_t *want = document(app, "t"); /* also parses and caches the defaults first */
    long n;
    json_t *doc = NULL;
    for (n = 0; n < 200000 && doc == NULL; n++) {
        budget = n;
        json_set_alloc_funcs(failing_malloc, free);
        doc = sq_openapi_document(app, NULL);
        json_set_alloc_funcs(malloc, free);
    }
    cr_assert_not_null(doc, "no document after %ld allocations", n);
    cr_assert_gt(n, 50, "the sweep did not reach the document's allocations");
    json_object_set_new(doc, "info", json_incref(json_object_get(want, "info")));
    cr_assert(json_equal(doc, want), "the document made at the edge of memory differs");
    json_decref(doc);
    json_decref(want);
    sq_app_destroy(app);
    if (__lsan_do_recoverable_leak_check != NULL)
        cr_assert_eq(__lsan_do_recoverable_leak_check(), 0, "leaks (see above)");
}

/* A sub-app mounted under a prefix: its routes are in the document under the prefix (its
 * "/" as the prefix itself), their operations as declared, and the document validates. */
Test(openapi, mounted_sub_apps_are_written_under_their_prefix)
{
    sq_app_t *app, *api, *v2;
    cr_assert_eq(sq_app_create(&app), 0);
    cr_assert_eq(sq_app_create(&api), 0);
    cr_assert_eq(sq_app_create(&v2), 0);
    cr_assert_eq(sq_app_route(app, "/", &root_h, NULL), 0);
    cr_assert_eq(sq_app_route(api, "/", &root_h, NULL), 0);
    cr_assert_eq(sq_app_route(api, "/items/{item_id}", &items_h, NULL), 0);
    cr_assert_eq(sq_app_route(v2, "/items/{item_id}", &items_h, NULL), 0);
    cr_assert_eq(sq_app_mount(api, "/v2", v2), 0);
    cr_assert_eq(sq_app_mount(app, "/api", api), 0);
    json_t *doc = document(app, "mounted");
    cr_assert_not_null(at(doc, "/", "get"));
    cr_assert_not_null(at(doc, "/api", "get"));
    cr_assert_not_null(at(doc, "/api/items/{item_id}", "put"));
    cr_assert_not_null(at(doc, "/api/v2/items/{item_id}", "get"));
    cr_assert_null(json_object_get(json_object_get(doc, "paths"), "/api/"));
    /* operation ids stay unique across the copies of one table */
    cr_assert_str_neq(str_at(at(doc, "/api/items/{item_id}", "put"), "operationId"),
                      str_at(at(doc, "/api/v2/items/{item_id}", "put"), "operationId"));
    expect_valid(doc);
    json_decref(doc);
    sq_app_destroy(app);
}

/* The lecture's app as build/bin/hello serves it: its document validates, names the
 * declared operations, and /docs is served. */
Test(openapi, hellos_document_validates_and_its_docs_page_is_served)
{
    th_app_t a = th_app_start("hello", NULL);
    th_res_t r;
    cr_assert_eq(th_request(a.port, "GET /openapi.json HTTP/1.1\r\nHost: t\r\n\r\n", &r), 0);
    cr_assert_eq(r.status, 200);
    json_error_t e;
    json_t *doc = json_loadb(r.body, r.body_len, 0, &e);
    th_res_free(&r);
    cr_assert_not_null(doc, "%s", e.text);
    cr_assert_str_eq(str_at(at(doc, "/items/{item_id}", "put"), "operationId"),
                     "update_item_items__item_id__put");
    cr_assert_not_null(at(doc, "/sleep", "get"));
    cr_assert_null(json_object_get(json_object_get(doc, "paths"), "/ws"));
    cr_assert_not_null(json_object_get(json_object_get(json_object_get(doc, "components"),
                                                       "schemas"),
                                       "Item"));
    expect_valid(doc);
    json_decref(doc);
    cr_assert_eq(th_request(a.port, "GET /docs HTTP/1.1\r\nHost: t\r\n\r\n", &r), 0);
    cr_assert_eq(r.status, 200);
    cr_assert_not_null(strstr(r.body, "swagger-ui-bundle.js"));
    th_res_free(&r);
    th_app_stop(&a);
}
