/* Validation of a body (JSON text) against a nested schema with every type and
 * constraint, and of query strings against parameters. */
#include <stdint.h>
#include <string.h>

#include <jansson.h>
#include <squall.h>

static const sq_field_t tag_fields[] = {
    {.name = "label", .type = SQ_T_STRING, .min_length = SQ_LEN(2), .max_length = SQ_LEN(5),
     .pattern = "^[a-z]+\\d*$"},
    {.name = "weight", .type = SQ_T_INTEGER, .default_json = "1", .ge = SQ_LIMIT(0),
     .lt = SQ_LIMIT(10)},
    {0}};
static const sq_schema_t tag_schema = {.title = "Tag", .fields = tag_fields};
static const sq_field_t tag_item = {.type = SQ_T_OBJECT, .object = &tag_schema};
static const char *const kinds[] = {"a", "b", NULL};
static const sq_field_t order_fields[] = {
    {.name = "id", .type = SQ_T_INTEGER, .gt = SQ_LIMIT(0)},
    {.name = "price", .type = SQ_T_NUMBER, .nullable = true, .default_json = "null"},
    {.name = "ok", .type = SQ_T_BOOLEAN, .default_json = "false"},
    {.name = "uuid", .type = SQ_T_STRING, .format = SQ_FMT_UUID, .default_json = "null",
     .nullable = true},
    {.name = "day", .type = SQ_T_STRING, .format = SQ_FMT_DATE, .default_json = "null",
     .nullable = true},
    {.name = "tags", .type = SQ_T_ARRAY, .items = &tag_item, .max_length = SQ_LEN(8)},
    {.name = "kind", .type = SQ_T_ENUM, .enum_values = kinds, .default_json = "\"a\""},
    {0}};
static const sq_schema_t order_schema = {.title = "Order", .fields = order_fields};
static const sq_field_t params[] = {
    {.name = "n", .type = SQ_T_INTEGER, .default_json = "0", .le = SQ_LIMIT(100)},
    {.name = "f", .type = SQ_T_BOOLEAN, .default_json = "false"},
    {.name = "x", .type = SQ_T_NUMBER, .default_json = "0"},
    {0}};

static const char *get(void *ctx, const char *name)
{
    const char *const *v = ctx;
    return strcmp(name, "n") == 0 ? v[0] : strcmp(name, "f") == 0 ? v[1] : v[2];
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *value = NULL, *errors = NULL;
    sq_schema_validate_text(&order_schema, (const char *)data, size, "body", &value, &errors,
                            NULL);
    json_decref(value);
    json_decref(errors);
    /* the same bytes as three query values, cut at the first two NULs */
    char buf[256];
    size_t n = size < sizeof(buf) - 3 ? size : sizeof(buf) - 3;
    memcpy(buf, data, n);
    buf[n] = buf[n + 1] = buf[n + 2] = '\0';
    const char *v[3] = {buf, buf + strlen(buf) + 1, NULL};
    v[2] = v[1] + strlen(v[1]) + 1;
    value = errors = NULL;
    sq_params_validate(params, "query", get, (void *)v, &value, &errors, NULL);
    json_decref(value);
    json_decref(errors);
    return 0;
}
