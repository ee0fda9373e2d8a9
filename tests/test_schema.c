/* Declared schemas (lib/schema): every type and constraint, and each error compared with
 * what pydantic v2 (as FastAPI runs it: validate_python with from_attributes=True)
 * answers for the same model, written here literally. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include <squall.h>

/* ---- the lecture's model ----
 * class Item(BaseModel):
 *     name: str
 *     price: float
 *     is_offer: Union[bool, None] = None */
typedef struct item {
    const char *name;
    double price;
    bool is_offer;
    bool is_offer_null;
} item_t;

static const sq_field_t item_fields[] = {
    {.name = "name", .type = SQ_T_STRING, .bind = SQ_BIND(item_t, name)},
    {.name = "price", .type = SQ_T_NUMBER, .bind = SQ_BIND(item_t, price)},
    {.name = "is_offer",
     .type = SQ_T_BOOLEAN,
     .nullable = true,
     .default_json = "null",
     .bind = SQ_BIND(item_t, is_offer),
     .bind_null = SQ_BIND(item_t, is_offer_null)},
    {0},
};
static const sq_schema_t item_schema = {.title = "Item", .fields = item_fields};

/* ---- a nested model with a list ----
 * class Tag(BaseModel):
 *     label: str = Field(min_length=2, max_length=5)
 *     weight: int = Field(default=1, ge=0, lt=10)
 * class Order(BaseModel):
 *     id: int = Field(gt=0)
 *     tags: List[Tag] = Field(min_length=1, max_length=2)
 *     codes: List[int] = []
 *     main: Tag
 *     kind: Literal['a', 'b', 'c'] = 'a'
 *     ref: str = Field(default="x", pattern='^[a-z]+$') */
typedef struct tag {
    const char *label;
    int64_t weight;
} tag_t;
typedef struct order {
    int64_t id;
    const json_t *tags;
    const json_t *codes;
    tag_t main;
    int kind;
    const char *ref;
} order_t;

static const sq_field_t tag_fields[] = {
    {.name = "label",
     .type = SQ_T_STRING,
     .min_length = SQ_LEN(2),
     .max_length = SQ_LEN(5),
     .bind = SQ_BIND(tag_t, label)},
    {.name = "weight",
     .type = SQ_T_INTEGER,
     .default_json = "1",
     .ge = SQ_LIMIT(0),
     .lt = SQ_LIMIT(10),
     .bind = SQ_BIND(tag_t, weight)},
    {0},
};
static const sq_schema_t tag_schema = {.title = "Tag", .fields = tag_fields};
static const sq_field_t tag_item = {.type = SQ_T_OBJECT, .object = &tag_schema};
static const sq_field_t int_item = {.type = SQ_T_INTEGER};
static const char *const kinds[] = {"a", "b", "c", NULL};
static const sq_field_t order_fields[] = {
    {.name = "id", .type = SQ_T_INTEGER, .gt = SQ_LIMIT(0), .bind = SQ_BIND(order_t, id)},
    {.name = "tags",
     .type = SQ_T_ARRAY,
     .items = &tag_item,
     .min_length = SQ_LEN(1),
     .max_length = SQ_LEN(2),
     .bind = SQ_BIND(order_t, tags)},
    {.name = "codes",
     .type = SQ_T_ARRAY,
     .items = &int_item,
     .default_json = "[]",
     .bind = SQ_BIND(order_t, codes)},
    {.name = "main", .type = SQ_T_OBJECT, .object = &tag_schema, .bind = SQ_BIND(order_t, main)},
    {.name = "kind",
     .type = SQ_T_ENUM,
     .enum_values = kinds,
     .default_json = "\"a\"",
     .bind = SQ_BIND(order_t, kind)},
    {.name = "ref",
     .type = SQ_T_STRING,
     .default_json = "\"x\"",
     .pattern = "^[a-z]+$",
     .bind = SQ_BIND(order_t, ref)},
    {0},
};
static const sq_schema_t order_schema = {.title = "Order", .fields = order_fields};

/* Asserts that json text `want` equals `got` (stolen), printing both when not. */
static void expect_json(json_t *got, const char *want)
{
    json_error_t err;
    json_t *w = json_loads(want, 0, &err);
    cr_assert_not_null(w, "bad expected JSON: %s", err.text);
    char *g = json_dumps(got, JSON_SORT_KEYS | JSON_COMPACT);
    char *ws = json_dumps(w, JSON_SORT_KEYS | JSON_COMPACT);
    cr_expect(json_equal(got, w), "got  %s\nwant %s", g, ws);
    free(g);
    free(ws);
    json_decref(w);
    json_decref(got);
}

/* Validates `body` (text) against schema under "body"; expects failure with `errors`. */
static void expect_errors(const sq_schema_t *s, const char *body, const char *errors)
{
    json_t *value = (json_t *)1, *errs = NULL;
    int rc = sq_schema_validate_text(s, body, strlen(body), "body", &value, &errs, NULL);
    cr_assert_eq(rc, UV_EINVAL, "%s: rc %d", body, rc);
    cr_expect_null(value);
    cr_assert_not_null(errs);
    expect_json(errs, errors);
}

Test(schema, item_valid_binds_struct_and_fills_default)
{
    const char *body = "{\"name\": \"Foo\", \"price\": 3, \"extra\": 1}";
    item_t it = {.is_offer = true};
    json_t *value = NULL, *errs = (json_t *)1;
    int rc = sq_schema_validate_text(&item_schema, body, strlen(body), "body", &value, &errs, &it);
    cr_assert_eq(rc, 0);
    cr_expect_null(errs);
    cr_expect_str_eq(it.name, "Foo");
    cr_expect_eq(it.price, 3.0);
    cr_expect(it.is_offer_null);
    /* An integer is taken for a number, unknown fields are left out, the default filled. */
    expect_json(value, "{\"name\": \"Foo\", \"price\": 3.0, \"is_offer\": null}");

    body = "{\"name\": \"Bar\", \"price\": 2.5, \"is_offer\": false}";
    rc = sq_schema_validate_text(&item_schema, body, strlen(body), "body", &value, &errs, &it);
    cr_assert_eq(rc, 0);
    cr_expect_str_eq(it.name, "Bar");
    cr_expect_eq(it.price, 2.5);
    cr_expect(!it.is_offer_null);
    cr_expect(!it.is_offer);
    json_decref(value);
}

Test(schema, item_missing_fields)
{
    expect_errors(&item_schema, "{}",
                  "[{\"type\": \"missing\", \"loc\": [\"body\", \"name\"], \"msg\": \"Field "
                  "required\", \"input\": {}}, {\"type\": \"missing\", \"loc\": [\"body\", "
                  "\"price\"], \"msg\": \"Field required\", \"input\": {}}]");
}

Test(schema, item_wrong_types_all_reported)
{
    expect_errors(
        &item_schema, "{\"name\": 1, \"price\": \"abc\", \"is_offer\": \"maybe\"}",
        "[{\"type\": \"string_type\", \"loc\": [\"body\", \"name\"], \"msg\": \"Input should be a "
        "valid string\", \"input\": 1}, {\"type\": \"float_parsing\", \"loc\": [\"body\", "
        "\"price\"], \"msg\": \"Input should be a valid number, unable to parse string as a "
        "number\", \"input\": \"abc\"}, {\"type\": \"bool_parsing\", \"loc\": [\"body\", "
        "\"is_offer\"], \"msg\": \"Input should be a valid boolean, unable to interpret input\", "
        "\"input\": \"maybe\"}]");
    expect_errors(&item_schema, "{\"name\": \"x\", \"price\": 1, \"is_offer\": 2}",
                  "[{\"type\": \"bool_parsing\", \"loc\": [\"body\", \"is_offer\"], \"msg\": "
                  "\"Input should be a valid boolean, unable to interpret input\", \"input\": 2}]");
    expect_errors(&item_schema, "{\"name\": null, \"price\": [], \"is_offer\": {}}",
                  "[{\"type\": \"string_type\", \"loc\": [\"body\", \"name\"], \"msg\": \"Input "
                  "should be a valid string\", \"input\": null}, {\"type\": \"float_type\", "
                  "\"loc\": [\"body\", \"price\"], \"msg\": \"Input should be a valid number\", "
                  "\"input\": []}, {\"type\": \"bool_type\", \"loc\": [\"body\", \"is_offer\"], "
                  "\"msg\": \"Input should be a valid boolean\", \"input\": {}}]");
}

Test(schema, body_not_an_object_or_absent)
{
    expect_errors(&item_schema, "[1]",
                  "[{\"type\": \"model_attributes_type\", \"loc\": [\"body\"], \"msg\": \"Input "
                  "should be a valid dictionary or object to extract fields from\", \"input\": "
                  "[1]}]");
    expect_errors(&item_schema, "",
                  "[{\"type\": \"missing\", \"loc\": [\"body\"], \"msg\": \"Field required\", "
                  "\"input\": null}]");
}

Test(schema, malformed_json)
{
    /* json.loads('{"name": }') fails at character 9; jansson's reason is its own. */
    json_t *errs = NULL;
    const char *body = "{\"name\": }";
    cr_assert_eq(
        sq_schema_validate_text(&item_schema, body, strlen(body), "body", NULL, &errs, NULL),
        UV_EINVAL);
    json_t *e = json_array_get(errs, 0);
    cr_assert_eq(json_array_size(errs), 1);
    cr_expect_str_eq(json_string_value(json_object_get(e, "type")), "json_invalid");
    cr_expect_str_eq(json_string_value(json_object_get(e, "msg")), "JSON decode error");
    json_t *loc = json_object_get(e, "loc");
    cr_expect_str_eq(json_string_value(json_array_get(loc, 0)), "body");
    cr_expect_eq(json_integer_value(json_array_get(loc, 1)), 9);
    cr_expect(json_is_object(json_object_get(e, "input")) &&
              json_object_size(json_object_get(e, "input")) == 0);
    cr_expect_not_null(json_string_value(json_object_get(json_object_get(e, "ctx"), "error")));

    /* Positions count characters: 'é' is one. json.loads gives 14 here. */
    json_decref(errs);
    body = "{\"name\": \"\xC3\xA9\", ";
    cr_assert_eq(
        sq_schema_validate_text(&item_schema, body, strlen(body), "body", NULL, &errs, NULL),
        UV_EINVAL);
    e = json_array_get(errs, 0);
    cr_expect_eq(json_integer_value(json_array_get(json_object_get(e, "loc"), 1)), 14);
    json_decref(errs);
}

Test(schema, detail_wraps_errors)
{
    json_t *errs = NULL;
    cr_assert_eq(sq_schema_validate(&item_schema, NULL, "body", NULL, &errs, NULL), UV_EINVAL);
    expect_json(sq_schema_detail(errs), "{\"detail\": [{\"type\": \"missing\", \"loc\": "
                                        "[\"body\"], \"msg\": \"Field required\", \"input\": "
                                        "null}]}");
}

Test(schema, nested_list_constraints)
{
    expect_errors(
        &order_schema,
        "{\"id\": 0, \"tags\": [], \"main\": {\"label\": \"\xC3\xA9\", \"weight\": 10}, "
        "\"kind\": \"z\", \"ref\": \"AB\", \"codes\": [1, 2.5, \"x\", 3.0]}",
        "[{\"type\": \"greater_than\", \"loc\": [\"body\", \"id\"], \"msg\": \"Input should be "
        "greater than 0\", \"input\": 0, \"ctx\": {\"gt\": 0}}, {\"type\": \"too_short\", \"loc\": "
        "[\"body\", \"tags\"], \"msg\": \"List should have at least 1 item after validation, not "
        "0\", \"input\": [], \"ctx\": {\"field_type\": \"List\", \"min_length\": 1, "
        "\"actual_length\": 0}}, {\"type\": \"int_from_float\", \"loc\": [\"body\", \"codes\", "
        "1], \"msg\": \"Input should be a valid integer, got a number with a fractional part\", "
        "\"input\": 2.5}, {\"type\": \"int_parsing\", \"loc\": [\"body\", \"codes\", 2], \"msg\": "
        "\"Input should be a valid integer, unable to parse string as an integer\", \"input\": "
        "\"x\"}, {\"type\": \"string_too_short\", \"loc\": [\"body\", \"main\", \"label\"], "
        "\"msg\": \"String should have at least 2 characters\", \"input\": \"\\u00e9\", \"ctx\": "
        "{\"min_length\": 2}}, {\"type\": \"less_than\", \"loc\": [\"body\", \"main\", "
        "\"weight\"], \"msg\": \"Input should be less than 10\", \"input\": 10, \"ctx\": {\"lt\": "
        "10}}, {\"type\": \"literal_error\", \"loc\": [\"body\", \"kind\"], \"msg\": \"Input "
        "should be 'a', 'b' or 'c'\", \"input\": \"z\", \"ctx\": {\"expected\": \"'a', 'b' or "
        "'c'\"}}, {\"type\": \"string_pattern_mismatch\", \"loc\": [\"body\", \"ref\"], \"msg\": "
        "\"String should match pattern '^[a-z]+$'\", \"input\": \"AB\", \"ctx\": {\"pattern\": "
        "\"^[a-z]+$\"}}]");
    expect_errors(
        &order_schema,
        "{\"id\": 3.5, \"tags\": [{\"label\": \"abcdef\"}, {\"label\": \"ab\"}, {\"label\": "
        "\"ab\"}], \"main\": 5}",
        "[{\"type\": \"int_from_float\", \"loc\": [\"body\", \"id\"], \"msg\": \"Input should be a "
        "valid integer, got a number with a fractional part\", \"input\": 3.5}, {\"type\": "
        "\"too_long\", \"loc\": [\"body\", \"tags\"], \"msg\": \"List should have at most 2 items "
        "after validation, not 3\", \"input\": [{\"label\": \"abcdef\"}, {\"label\": \"ab\"}, "
        "{\"label\": \"ab\"}], \"ctx\": {\"field_type\": \"List\", \"max_length\": 2, "
        "\"actual_length\": 3}}, {\"type\": \"model_attributes_type\", \"loc\": [\"body\", "
        "\"main\"], \"msg\": \"Input should be a valid dictionary or object to extract fields "
        "from\", \"input\": 5}]");
    expect_errors(&order_schema, "{\"id\": \"7\", \"tags\": \"no\", \"main\": {}}",
                  "[{\"type\": \"list_type\", \"loc\": [\"body\", \"tags\"], \"msg\": \"Input "
                  "should be a valid list\", \"input\": \"no\"}, {\"type\": \"missing\", \"loc\": "
                  "[\"body\", \"main\", \"label\"], \"msg\": \"Field required\", \"input\": {}}]");
    expect_errors(
        &order_schema,
        "{\"id\": 1, \"tags\": [{\"label\": \"abcdef\"}, 3], \"main\": {\"label\": \"ab\"}}",
        "[{\"type\": \"string_too_long\", \"loc\": [\"body\", \"tags\", 0, \"label\"], \"msg\": "
        "\"String should have at most 5 characters\", \"input\": \"abcdef\", \"ctx\": "
        "{\"max_length\": 5}}, {\"type\": \"model_attributes_type\", \"loc\": [\"body\", \"tags\", "
        "1], \"msg\": \"Input should be a valid dictionary or object to extract fields from\", "
        "\"input\": 3}]");
}

Test(schema, nested_valid_binds_inline_struct)
{
    const char *body = "{\"id\": \"7\", \"tags\": [{\"label\": \"ab\", \"weight\": 9.0}], "
                       "\"main\": {\"label\": \"xyz\"}, \"kind\": \"c\", \"codes\": [4, 5.0]}";
    order_t o;
    memset(&o, 0, sizeof(o));
    json_t *value = NULL;
    cr_assert_eq(
        sq_schema_validate_text(&order_schema, body, strlen(body), "body", &value, NULL, &o), 0);
    cr_expect_eq(o.id, 7);
    cr_expect_str_eq(o.main.label, "xyz");
    cr_expect_eq(o.main.weight, 1);
    cr_expect_eq(o.kind, 2);
    cr_expect_str_eq(o.ref, "x");
    cr_expect_eq(json_array_size(o.tags), 1);
    cr_expect_eq(json_integer_value(json_array_get(o.codes, 1)), 5);
    expect_json(value, "{\"id\": 7, \"tags\": [{\"label\": \"ab\", \"weight\": 9}], \"codes\": "
                       "[4, 5], \"main\": {\"label\": \"xyz\", \"weight\": 1}, \"kind\": \"c\", "
                       "\"ref\": \"x\"}");
}

/* ---- every bound, on both sides, and formats ---- */

static const sq_field_t bounds_fields[] = {
    {.name = "ge", .type = SQ_T_NUMBER, .default_json = "0.5", .ge = SQ_LIMIT(0.5)},
    {.name = "le", .type = SQ_T_INTEGER, .default_json = "0", .le = SQ_LIMIT(10000)},
    {.name = "long", .type = SQ_T_STRING, .default_json = "\"\"", .max_length = SQ_LEN(1)},
    {.name = "one", .type = SQ_T_STRING, .default_json = "\"a\"", .min_length = SQ_LEN(1)},
    {.name = "many", .type = SQ_T_ARRAY, .default_json = "[0]", .min_length = SQ_LEN(2)},
    {.name = "id",
     .type = SQ_T_STRING,
     .default_json = "null",
     .nullable = true,
     .format = SQ_FMT_UUID},
    {.name = "day", .type = SQ_T_STRING, .default_json = "\"2024-02-29\"", .format = SQ_FMT_DATE},
    {0},
};
static const sq_schema_t bounds_schema = {.title = "Bounds", .fields = bounds_fields};

Test(schema, bounds_lengths_formats)
{
    expect_errors(
        &bounds_schema,
        "{\"ge\": 0.25, \"le\": 20000, \"long\": \"\xE2\x82\xAC\xE2\x82\xAC\", \"one\": \"\", "
        "\"many\": [1], \"id\": \"not-a-uuid\", \"day\": \"2023-02-29\"}",
        "[{\"type\": \"greater_than_equal\", \"loc\": [\"body\", \"ge\"], \"msg\": \"Input should "
        "be greater than or equal to 0.5\", \"input\": 0.25, \"ctx\": {\"ge\": 0.5}}, {\"type\": "
        "\"less_than_equal\", \"loc\": [\"body\", \"le\"], \"msg\": \"Input should be less than "
        "or equal to 10000\", \"input\": 20000, \"ctx\": {\"le\": 10000}}, {\"type\": "
        "\"string_too_long\", \"loc\": [\"body\", \"long\"], \"msg\": \"String should have at "
        "most 1 character\", \"input\": \"\\u20ac\\u20ac\", \"ctx\": {\"max_length\": 1}}, "
        "{\"type\": \"string_too_short\", \"loc\": [\"body\", \"one\"], \"msg\": \"String should "
        "have at least 1 character\", \"input\": \"\", \"ctx\": {\"min_length\": 1}}, {\"type\": "
        "\"too_short\", \"loc\": [\"body\", \"many\"], \"msg\": \"List should have at least 2 "
        "items after validation, not 1\", \"input\": [1], \"ctx\": {\"field_type\": \"List\", "
        "\"min_length\": 2, \"actual_length\": 1}}, {\"type\": \"uuid_parsing\", \"loc\": "
        "[\"body\", \"id\"], \"msg\": \"Input should be a valid UUID\", \"input\": "
        "\"not-a-uuid\"}, {\"type\": \"date_parsing\", \"loc\": [\"body\", \"day\"], \"msg\": "
        "\"Input should be a valid date in the format YYYY-MM-DD\", \"input\": \"2023-02-29\"}]");

    /* The edges themselves pass; a one-character euro sign is one character. */
    const char *ok = "{\"ge\": 0.5, \"le\": 10000, \"long\": \"\xE2\x82\xAC\", \"many\": [1, 2], "
                     "\"id\": \"123e4567-E89B-12d3-a456-426614174000\"}";
    json_t *value = NULL;
    cr_assert_eq(
        sq_schema_validate_text(&bounds_schema, ok, strlen(ok), "body", &value, NULL, NULL), 0);
    json_decref(value);
}

/* ---- query and path parameters, from strings ---- */

typedef struct qp {
    int64_t ms;
    const char *q;
    bool flag;
    double ratio;
} qp_t;

static const sq_field_t query_params[] = {
    {.name = "ms",
     .type = SQ_T_INTEGER,
     .ge = SQ_LIMIT(0),
     .le = SQ_LIMIT(10000),
     .bind = SQ_BIND(qp_t, ms)},
    {.name = "q",
     .type = SQ_T_STRING,
     .nullable = true,
     .default_json = "null",
     .bind = SQ_BIND(qp_t, q)},
    {.name = "flag", .type = SQ_T_BOOLEAN, .default_json = "false", .bind = SQ_BIND(qp_t, flag)},
    {.name = "ratio", .type = SQ_T_NUMBER, .default_json = "1", .bind = SQ_BIND(qp_t, ratio)},
    {0},
};

typedef struct kv {
    const char *k[4], *v[4];
} kv_t;

static const char *kv_get(void *ctx, const char *name)
{
    kv_t *kv = ctx;
    for (int i = 0; i < 4 && kv->k[i] != NULL; i++)
        if (strcmp(kv->k[i], name) == 0)
            return kv->v[i];
    return NULL;
}

static void expect_query_errors(kv_t *kv, const char *errors)
{
    json_t *errs = NULL, *value = NULL;
    cr_assert_eq(sq_params_validate(query_params, "query", kv_get, kv, &value, &errs, NULL),
                 UV_EINVAL);
    cr_expect_null(value);
    expect_json(errs, errors);
}

Test(schema, query_coercion)
{
    kv_t kv = {{"ms", "flag", "ratio"}, {" 5 ", "Off", "1e3"}};
    qp_t qp = {.q = "unset", .flag = true};
    json_t *value = NULL;
    cr_assert_eq(sq_params_validate(query_params, "query", kv_get, &kv, &value, NULL, &qp), 0);
    cr_expect_eq(qp.ms, 5);
    cr_expect_null(qp.q);
    cr_expect(!qp.flag);
    cr_expect_eq(qp.ratio, 1000.0);
    expect_json(value, "{\"ms\": 5, \"q\": null, \"flag\": false, \"ratio\": 1000.0}");

    const char *truths[] = {"true", "1", "yes", "on", "TRUE", "t", "Y"};
    for (size_t i = 0; i < sizeof(truths) / sizeof(truths[0]); i++) {
        kv_t t = {{"ms", "flag", "q"}, {"5.0", truths[i], "hi"}};
        cr_assert_eq(sq_params_validate(query_params, "query", kv_get, &t, &value, NULL, &qp), 0,
                     "%s", truths[i]);
        cr_expect(qp.flag, "%s", truths[i]);
        cr_expect_eq(qp.ms, 5);
        cr_expect_str_eq(qp.q, "hi");
        json_decref(value);
    }
}

Test(schema, query_errors_as_fastapi)
{
    /* hello's check_ms, as FastAPI answers `ms: int = Query(ge=0, le=10000)`. */
    kv_t none = {{NULL}, {NULL}};
    expect_query_errors(&none, "[{\"type\": \"missing\", \"loc\": [\"query\", \"ms\"], \"msg\": "
                               "\"Field required\", \"input\": null}]");
    kv_t abc = {{"ms", "flag", "ratio"}, {"abc", "maybe", "x1"}};
    expect_query_errors(
        &abc, "[{\"type\": \"int_parsing\", \"loc\": [\"query\", \"ms\"], \"msg\": \"Input should "
              "be a valid integer, unable to parse string as an integer\", \"input\": \"abc\"}, "
              "{\"type\": \"bool_parsing\", \"loc\": [\"query\", \"flag\"], \"msg\": \"Input "
              "should be a valid boolean, unable to interpret input\", \"input\": \"maybe\"}, "
              "{\"type\": \"float_parsing\", \"loc\": [\"query\", \"ratio\"], \"msg\": \"Input "
              "should be a valid number, unable to parse string as a number\", \"input\": "
              "\"x1\"}]");
    kv_t big = {{"ms"}, {"20000"}};
    expect_query_errors(&big, "[{\"type\": \"less_than_equal\", \"loc\": [\"query\", \"ms\"], "
                              "\"msg\": \"Input should be less than or equal to 10000\", "
                              "\"input\": \"20000\", \"ctx\": {\"le\": 10000}}]");
    kv_t neg = {{"ms"}, {"-1"}};
    expect_query_errors(&neg, "[{\"type\": \"greater_than_equal\", \"loc\": [\"query\", \"ms\"], "
                              "\"msg\": \"Input should be greater than or equal to 0\", "
                              "\"input\": \"-1\", \"ctx\": {\"ge\": 0}}]");
    kv_t half = {{"ms"}, {"5.5"}};
    expect_query_errors(&half, "[{\"type\": \"int_parsing\", \"loc\": [\"query\", \"ms\"], "
                               "\"msg\": \"Input should be a valid integer, unable to parse "
                               "string as an integer\", \"input\": \"5.5\"}]");
    kv_t bad = {{"ms", "q"}, {"1", "\xff"}};
    expect_query_errors(&bad, "[{\"type\": \"string_unicode\", \"loc\": [\"query\", \"q\"], "
                              "\"msg\": \"Input should be a valid string, unable to parse raw "
                              "data as a unicode string\", \"input\": null}]");
}

/* ---- JSON Schema, as pydantic v2 writes it (Item.model_json_schema()) ---- */

Test(schema, json_schema_item)
{
    expect_json(sq_schema_to_json_schema(&item_schema, NULL, NULL),
                "{\"properties\": {\"name\": {\"title\": \"Name\", \"type\": \"string\"}, "
                "\"price\": {\"title\": \"Price\", \"type\": \"number\"}, \"is_offer\": "
                "{\"anyOf\": [{\"type\": \"boolean\"}, {\"type\": \"null\"}], \"default\": null, "
                "\"title\": \"Is Offer\"}}, \"required\": [\"name\", \"price\"], \"title\": "
                "\"Item\", \"type\": \"object\"}");
}

Test(schema, json_schema_nested_with_defs)
{
    json_t *defs = json_object();
    json_t *s = sq_schema_to_json_schema(&order_schema, "#/$defs/", defs);
    json_object_set_new(s, "$defs", defs);
    expect_json(
        s,
        "{\"$defs\": {\"Tag\": {\"properties\": {\"label\": {\"maxLength\": 5, \"minLength\": 2, "
        "\"title\": \"Label\", \"type\": \"string\"}, \"weight\": {\"default\": 1, "
        "\"exclusiveMaximum\": 10, \"minimum\": 0, \"title\": \"Weight\", \"type\": "
        "\"integer\"}}, \"required\": [\"label\"], \"title\": \"Tag\", \"type\": \"object\"}}, "
        "\"properties\": {\"id\": {\"exclusiveMinimum\": 0, \"title\": \"Id\", \"type\": "
        "\"integer\"}, \"tags\": {\"items\": {\"$ref\": \"#/$defs/Tag\"}, \"maxItems\": 2, "
        "\"minItems\": 1, \"title\": \"Tags\", \"type\": \"array\"}, \"codes\": {\"default\": [], "
        "\"items\": {\"type\": \"integer\"}, \"title\": \"Codes\", \"type\": \"array\"}, "
        "\"main\": {\"$ref\": \"#/$defs/Tag\"}, \"kind\": {\"default\": \"a\", \"enum\": [\"a\", "
        "\"b\", \"c\"], \"title\": \"Kind\", \"type\": \"string\"}, \"ref\": {\"default\": \"x\", "
        "\"pattern\": \"^[a-z]+$\", \"title\": \"Ref\", \"type\": \"string\"}}, \"required\": "
        "[\"id\", \"tags\", \"main\"], \"title\": \"Order\", \"type\": \"object\"}");

    /* Without defs the nested model is written inline. */
    json_t *inl = sq_schema_to_json_schema(&order_schema, NULL, NULL);
    json_t *main_s = json_object_get(json_object_get(inl, "properties"), "main");
    cr_expect_str_eq(json_string_value(json_object_get(main_s, "title")), "Tag");
    cr_expect_str_eq(json_string_value(json_object_get(main_s, "type")), "object");
    json_decref(inl);
}

Test(schema, field_json_schema_formats)
{
    expect_json(sq_field_to_json_schema(&bounds_fields[5], NULL, NULL),
                "{\"anyOf\": [{\"type\": \"string\", \"format\": \"uuid\"}, {\"type\": "
                "\"null\"}], \"default\": null, \"title\": \"Id\"}");
    expect_json(sq_field_to_json_schema(&query_params[0], NULL, NULL),
                "{\"type\": \"integer\", \"minimum\": 0, \"maximum\": 10000, \"title\": \"Ms\"}");
}

static const sq_field_t bad_pattern_fields[] = {
    {.name = "s", .type = SQ_T_STRING, .pattern = "(unclosed"},
    {0},
};
static const sq_schema_t bad_pattern = {.title = "P", .fields = bad_pattern_fields};

Test(schema, pattern_that_does_not_compile_refuses)
{
    expect_errors(&bad_pattern, "{\"s\": \"x\"}",
                  "[{\"type\": \"pattern_invalid\", \"loc\": [\"body\", \"s\"], \"msg\": "
                  "\"Pattern '(unclosed' does not compile\", \"input\": \"x\", \"ctx\": "
                  "{\"pattern\": \"(unclosed\"}}]");
}

Test(schema, malformed_json_positions)
{
    /* json.loads's JSONDecodeError.pos for each. */
    static const struct {
        const char *body;
        int pos;
    } cases[] = {{"[1,2", 4}, {"nope", 0}, {"{\"a\":1}x", 7}, {"[1,,2]", 3}, {"{\"a\" 1}", 5}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *errs = NULL;
        cr_assert_eq(sq_schema_validate_text(&item_schema, cases[i].body, strlen(cases[i].body),
                                             "body", NULL, &errs, NULL),
                     UV_EINVAL);
        json_t *loc = json_object_get(json_array_get(errs, 0), "loc");
        cr_expect_eq(json_integer_value(json_array_get(loc, 1)), cases[i].pos, "%s", cases[i].body);
        json_decref(errs);
    }
}

/* The pattern and default cache is shared: validations on several threads at once, the
 * first of them compiling, all agree. */
typedef struct race {
    int ok, bad;
} race_t;

static void race_run(void *arg)
{
    race_t *r = arg;
    const char *good = "{\"id\": 1, \"tags\": [{\"label\": \"ab\"}], \"main\": {\"label\": "
                       "\"ab\"}, \"ref\": \"abc\"}";
    const char *wrong = "{\"id\": 1, \"tags\": [{\"label\": \"ab\"}], \"main\": {\"label\": "
                        "\"ab\"}, \"ref\": \"ABC\"}";
    for (int i = 0; i < 200; i++) {
        const char *b = i % 2 ? wrong : good;
        json_t *value = NULL, *errs = NULL;
        int rc = sq_schema_validate_text(&order_schema, b, strlen(b), "body", &value, &errs, NULL);
        if ((rc == 0) == (b == good))
            r->ok++;
        else
            r->bad++;
        json_decref(value);
        json_decref(errs);
    }
}

Test(schema, validation_on_several_threads)
{
    uv_thread_t th[4];
    race_t r[4];
    memset(r, 0, sizeof(r));
    for (int i = 0; i < 4; i++)
        cr_assert_eq(uv_thread_create(&th[i], race_run, &r[i]), 0);
    for (int i = 0; i < 4; i++)
        uv_thread_join(&th[i]);
    for (int i = 0; i < 4; i++) {
        cr_expect_eq(r[i].ok, 200);
        cr_expect_eq(r[i].bad, 0);
    }
}

/* pydantic's lax mode (FastAPI's) takes true/false for a number or an integer. */
Test(schema, booleans_taken_as_numbers)
{
    const char *body = "{\"name\": \"x\", \"price\": true}";
    json_t *value = NULL;
    cr_assert_eq(
        sq_schema_validate_text(&item_schema, body, strlen(body), "body", &value, NULL, NULL), 0);
    expect_json(value, "{\"name\": \"x\", \"price\": 1.0, \"is_offer\": null}");
    body = "{\"id\": true, \"tags\": [{\"label\": \"ab\", \"weight\": false}], \"main\": "
           "{\"label\": \"ab\"}}";
    cr_assert_eq(
        sq_schema_validate_text(&order_schema, body, strlen(body), "body", &value, NULL, NULL), 0);
    cr_expect_eq(json_integer_value(json_object_get(value, "id")), 1);
    json_decref(value);
}

/* A table that refers to itself (a tree), two tables of one title that differ, and a title
 * that is not a URI fragment: the JSON Schema stays finite, tells them apart and encodes
 * the reference. */
typedef struct node {
    const char *label;
} node_t;
static const sq_schema_t node_schema;
static const sq_field_t node_child = {.type = SQ_T_OBJECT, .object = &node_schema};
static const sq_field_t node_fields[] = {
    {.name = "label", .type = SQ_T_STRING},
    {.name = "children", .type = SQ_T_ARRAY, .items = &node_child, .default_json = "[]"},
    {0}};
static const sq_schema_t node_schema = {.title = "Node", .fields = node_fields};
static const sq_field_t a_fields[] = {{.name = "x", .type = SQ_T_INTEGER}, {0}};
static const sq_field_t b_fields[] = {{.name = "y", .type = SQ_T_STRING}, {0}};
static const sq_schema_t thing_a = {.title = "Thing", .fields = a_fields};
static const sq_schema_t thing_b = {.title = "Thing", .fields = b_fields};
static const sq_schema_t odd_title = {.title = "Order Form!", .fields = a_fields};
static const sq_field_t holder_fields[] = {
    {.name = "tree", .type = SQ_T_OBJECT, .object = &node_schema},
    {.name = "a", .type = SQ_T_OBJECT, .object = &thing_a},
    {.name = "b", .type = SQ_T_OBJECT, .object = &thing_b},
    {.name = "a2", .type = SQ_T_OBJECT, .object = &thing_a},
    {.name = "odd", .type = SQ_T_OBJECT, .object = &odd_title},
    {0}};
static const sq_schema_t holder = {.title = "Holder", .fields = holder_fields};

Test(schema, json_schema_of_self_referring_and_same_titled_tables)
{
    json_t *defs = json_object();
    json_t *js = sq_schema_to_json_schema(&holder, "#/$defs/", defs);
    cr_assert_not_null(js);
    json_t *props = json_object_get(js, "properties");
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(props, "tree"), "$ref")),
                     "#/$defs/Node");
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(props, "a"), "$ref")),
                     "#/$defs/Thing");
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(props, "b"), "$ref")),
                     "#/$defs/Thing_2");
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(props, "a2"), "$ref")),
                     "#/$defs/Thing");
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(props, "odd"), "$ref")),
                     "#/$defs/Order%20Form%21");
    json_t *node = json_object_get(defs, "Node");
    json_t *items = json_object_get(
        json_object_get(json_object_get(node, "properties"), "children"), "items");
    cr_assert_str_eq(json_string_value(json_object_get(items, "$ref")), "#/$defs/Node");
    cr_assert_not_null(json_object_get(defs, "Order Form!"));
    json_decref(js);
    json_decref(defs);
    /* inline (no defs): the self-reference stops at the table being written */
    js = sq_schema_to_json_schema(&node_schema, NULL, NULL);
    cr_assert_not_null(js);
    items = json_object_get(
        json_object_get(json_object_get(js, "properties"), "children"), "items");
    cr_assert_str_eq(json_string_value(json_object_get(items, "type")), "object");
    cr_assert_null(json_object_get(items, "properties"));
    json_decref(js);
}
