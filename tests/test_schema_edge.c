/* The schema layer alone at its edges: out of memory at every allocation, deep and wide
 * inputs, a pattern string rewritten in place. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include <squall.h>

static const sq_field_t tag_fields[] = {{.name = "label", .type = SQ_T_STRING}, {0}};
static const sq_schema_t tag_schema = {.title = "Tag", .fields = tag_fields};
static const sq_field_t tag_item = {.type = SQ_T_OBJECT, .object = &tag_schema};
static const sq_field_t int_item = {.type = SQ_T_INTEGER};
static const sq_field_t order_fields[] = {
    {.name = "name", .type = SQ_T_STRING},
    {.name = "tags", .type = SQ_T_ARRAY, .items = &tag_item},
    {.name = "ns", .type = SQ_T_ARRAY, .items = &int_item},
    {0}};
static const sq_schema_t order_schema = {.title = "Order", .fields = order_fields};

static long budget;
static void *failing_malloc(size_t n)
{
    return budget-- > 0 ? malloc(n) : NULL;
}

/* Out of memory, validation must not pass with a value that lacks a required field, nor
 * fail with no error (the HTTP layer takes an empty error list as success: the handler
 * then runs with sq_req_input_json(req, "body") NULL and the bound struct zeroed). Each
 * budget must give: 0 with every field, UV_EINVAL with at least one error, or
 * UV_ENOMEM. */
Test(schema_edge, out_of_memory_never_passes_an_incomplete_value, .timeout = 60)
{
    json_t *in = json_loads("{\"name\":\"x\",\"tags\":[{\"label\":\"ab\"}],\"ns\":[1,2,3]}", 0,
                            NULL);
    cr_assert_not_null(in);
    for (long n = 0; n < 400; n++) {
        json_t *value = NULL, *errors = NULL;
        budget = n;
        json_set_alloc_funcs(failing_malloc, free);
        int rc = sq_schema_validate(&order_schema, in, "body", &value, &errors, NULL);
        json_set_alloc_funcs(malloc, free);
        if (rc == 0) {
            char shown[256] = "(null)";
            if (value != NULL)
                shown[json_dumpb(value, shown, sizeof(shown) - 1, JSON_COMPACT)] = '\0';
            cr_expect(json_object_get(value, "name") && json_object_get(value, "tags") &&
                          json_object_get(value, "ns"),
                      "budget %ld: success without every required field: %s", n, shown);
            if (json_object_size(value) == 3 &&
                json_array_size(json_object_get(value, "ns")) == 3 &&
                json_array_size(json_object_get(value, "tags")) == 1) {
                json_decref(value);
                break; /* enough memory: done */
            }
        } else if (rc == UV_EINVAL) {
            cr_expect_gt(json_array_size(errors), 0, "budget %ld: UV_EINVAL with no error", n);
        } else {
            cr_expect_eq(rc, UV_ENOMEM, "budget %ld: %d", n, rc);
        }
        json_decref(value);
        json_decref(errors);
    }
    json_decref(in);
}

/* A self-referring schema (a tree) and an input nested as deep as jansson parses (2048):
 * no stack overflow, an answer. */
typedef struct node node_t;
static const sq_schema_t node_schema;
static const sq_field_t node_fields[] = {
    {.name = "child", .type = SQ_T_OBJECT, .object = &node_schema, .nullable = true,
     .default_json = "null"},
    {0}};
static const sq_schema_t node_schema = {.title = "Node", .fields = node_fields};

Test(schema_edge, a_deep_tree_is_validated, .timeout = 60)
{
    size_t depth = 2000;
    char *text = malloc(depth * 12 + 16), *p = text;
    for (size_t i = 0; i < depth; i++)
        p += sprintf(p, "{\"child\":");
    p += sprintf(p, "null");
    for (size_t i = 0; i < depth; i++)
        *p++ = '}';
    *p = '\0';
    json_t *value = NULL, *errors = NULL;
    int rc = sq_schema_validate_text(&node_schema, text, strlen(text), "body", &value, &errors,
                                     NULL);
    cr_expect_eq(rc, 0);
    json_decref(value);
    json_decref(errors);
    free(text);
}

/* 100k wrong items: one error each (as pydantic), answered. */
Test(schema_edge, a_wide_array_of_wrong_items_is_answered, .timeout = 60)
{
    json_t *ns = json_array();
    for (int i = 0; i < 100000; i++)
        json_array_append_new(ns, json_string("x"));
    json_t *in = json_pack("{s:s,s:[],s:o}", "name", "x", "tags", "ns", ns);
    json_t *errors = NULL;
    cr_expect_eq(sq_schema_validate(&order_schema, in, "body", NULL, &errors, NULL), UV_EINVAL);
    cr_expect_eq(json_array_size(errors), 100000);
    json_decref(errors);
    json_decref(in);
}

/* The pattern and default caches are keyed by the string's address alone: a table built
 * at run time (a schema loaded from a file, a plugin unloaded and another loaded) whose
 * pattern string is freed and whose memory holds another pattern later is checked
 * against the old one. The same string buffer, rewritten, is the plainest case. */
Test(schema_edge, a_pattern_rewritten_in_place_is_not_the_cached_one, .timeout = 10)
{
    char *pattern = strdup("^a+$"), *def = strdup("1");
    sq_field_t fields[] = {{.name = "s", .type = SQ_T_STRING, .pattern = pattern},
                           {.name = "n", .type = SQ_T_INTEGER, .default_json = def},
                           {0}};
    sq_schema_t schema = {.title = "S", .fields = fields};
    json_t *in = json_pack("{s:s}", "s", "aaa"), *value = NULL;
    cr_assert_eq(sq_schema_validate(&schema, in, "body", &value, NULL, NULL), 0);
    json_decref(value);
    json_decref(in);
    strcpy(pattern, "^b+$"); /* a new table's pattern, at the old one's address */
    strcpy(def, "2");
    in = json_pack("{s:s}", "s", "bbb");
    int rc = sq_schema_validate(&schema, in, "body", &value, NULL, NULL);
    cr_expect_eq(rc, 0, "\"bbb\" refused by the pattern ^b+$ (checked against ^a+$)");
    if (rc == 0)
        cr_expect_eq(json_integer_value(json_object_get(value, "n")), 2,
                     "the default \"2\" taken as the cached \"1\"");
    json_decref(value);
    json_decref(in);
    free(pattern);
    free(def);
}
