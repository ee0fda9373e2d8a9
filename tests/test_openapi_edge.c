/* Odd declarations and the OpenAPI document: each is either refused when its route is
 * added, or written so that the external checker (tests/peers/openapi_check.mjs)
 * accepts the document. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <squall.h>
#include <squall/openapi.h>

static void any_get(sq_req_t *req, sq_res_t *res, void *data)
{
    sq_res_send_json_new(res, 200, json_object());
}

/* Runs the checker on the app's document; returns its exit status, its output in log. */
static int check_app(const sq_app_t *app, char *log, size_t cap)
{
    sq_openapi_opts_t o;
    sq_openapi_opts_init(&o);
    json_t *doc = sq_openapi_document(app, &o);
    cr_assert_not_null(doc);
    char path[] = "/tmp/squall-openapi-edge-XXXXXX.json";
    int fd = mkstemps(path, 5);
    cr_assert_geq(fd, 0);
    close(fd);
    cr_assert_eq(json_dump_file(doc, path, JSON_INDENT(1)), 0);
    json_decref(doc);
    char exe[PATH_MAX], cmd[3 * PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    cr_assert_gt(n, 0);
    exe[n] = '\0';
    *strrchr(exe, '/') = '\0';
    snprintf(cmd, sizeof(cmd), "timeout 30 node %s/../../tests/peers/openapi_check.mjs %s 2>&1",
             exe, path);
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p);
    size_t got = fread(log, 1, cap - 1, p);
    log[got] = '\0';
    int st = pclose(p);
    unlink(path);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void expect_valid(const sq_app_t *app)
{
    static char log[16384];
    int rc = check_app(app, log, sizeof(log));
    cr_expect_eq(rc, 0, "the document is refused:\n%s", log);
}

/* A schema titled as a Python class could not be ("Order line") is a components key
 * that OpenAPI 3.1 §4.8.7 refuses (^[a-zA-Z0-9.\-_]+$). */
static const sq_field_t line_fields[] = {{.name = "n", .type = SQ_T_INTEGER}, {0}};
static const sq_schema_t line_schema = {.title = "Order line", .fields = line_fields};
static const sq_op_t line_op = {.body = &line_schema};
static const sq_handler_t line_h = {.post = any_get, .op.post = &line_op};

Test(openapi_edge, a_title_with_a_space_makes_a_valid_components_key, .timeout = 60)
{
    sq_app_t *app;
    cr_assert_eq(sq_app_create(&app), 0);
    cr_assert_eq(sq_app_route(app, "/lines", &line_h, NULL), 0);
    expect_valid(app);
    sq_app_destroy(app);
}

/* Two operations with the same operation_id (FastAPI warns "Duplicate Operation ID"). */
static const sq_op_t dup_a = {.operation_id = "same"};
static const sq_op_t dup_b = {.operation_id = "same"};
static const sq_handler_t dup_ha = {.get = any_get, .op.get = &dup_a};
static const sq_handler_t dup_hb = {.get = any_get, .op.get = &dup_b};

Test(openapi_edge, two_routes_of_one_operation_id_stay_valid, .timeout = 60)
{
    sq_app_t *app;
    cr_assert_eq(sq_app_create(&app), 0);
    cr_assert_eq(sq_app_route(app, "/a", &dup_ha, NULL), 0);
    cr_assert_eq(sq_app_route(app, "/b", &dup_hb, NULL), 0);
    expect_valid(app);
    sq_app_destroy(app);
}

/* A path field the pattern does not have; and a query field named twice. */
static const sq_field_t ghost_path[] = {{.name = "ghost", .type = SQ_T_INTEGER}, {0}};
static const sq_field_t twice_query[] = {{.name = "q", .type = SQ_T_STRING},
                                         {.name = "q", .type = SQ_T_INTEGER},
                                         {0}};
static const sq_op_t ghost_op = {.path = ghost_path};
static const sq_op_t twice_op = {.query = twice_query};
static const sq_handler_t ghost_h = {.get = any_get, .op.get = &ghost_op};
static const sq_handler_t twice_h = {.get = any_get, .op.get = &twice_op};

/* No request could bring it: the route is refused, the document stays as it was. */
Test(openapi_edge, a_path_field_not_in_the_pattern_is_refused, .timeout = 60)
{
    sq_app_t *app;
    cr_assert_eq(sq_app_create(&app), 0);
    cr_assert_eq(sq_app_route(app, "/ghost", &ghost_h, NULL), UV_EINVAL);
    cr_assert_eq(sq_app_route(app, "/ghost/{ghost}", &ghost_h, NULL), 0);
    expect_valid(app);
    sq_app_destroy(app);
}

Test(openapi_edge, a_query_field_named_twice_stays_valid, .timeout = 60)
{
    sq_app_t *app;
    cr_assert_eq(sq_app_create(&app), 0);
    cr_assert_eq(sq_app_route(app, "/twice", &twice_h, NULL), 0);
    expect_valid(app);
    sq_app_destroy(app);
}

/* A summary that is not UTF-8 (a Latin-1 source file): refused when the route is added,
 * so the document of the other routes is whole. */
static const sq_op_t latin_op = {.summary = "caf\xe9", .tags = (const char *const[]){"\xff", NULL}};
static const sq_handler_t latin_h = {.get = any_get, .op.get = &latin_op};

Test(openapi_edge, a_summary_that_is_not_utf8_does_not_empty_the_document, .timeout = 60)
{
    sq_app_t *app;
    cr_assert_eq(sq_app_create(&app), 0);
    cr_assert_eq(sq_app_route(app, "/latin", &latin_h, NULL), UV_EINVAL);
    cr_assert_eq(sq_app_route(app, "/ok", &(const sq_handler_t){.get = any_get}, NULL), 0);
    sq_openapi_opts_t o;
    sq_openapi_opts_init(&o);
    json_t *doc = sq_openapi_document(app, &o);
    cr_assert_not_null(doc);
    cr_expect_not_null(json_object_get(json_object_get(doc, "paths"), "/ok"));
    json_decref(doc);
    expect_valid(app);
    sq_app_destroy(app);
}
