/* clang-format off */
/* squall — declared schemas and their validation, pydantic v2's way (docs/schema.md).
 *
 * A schema is a static const table: an object with fields, each with a type, whether it
 * is required or its default, and its constraints.
 *
 *     typedef struct item {
 *         const char *name;
 *         double price;
 *         bool is_offer, is_offer_null;
 *     } item_t;
 *     static const sq_field_t item_fields[] = {
 *         {.name = "name", .type = SQ_T_STRING, .bind = SQ_BIND(item_t, name)},
 *         {.name = "price", .type = SQ_T_NUMBER, .bind = SQ_BIND(item_t, price)},
 *         {.name = "is_offer", .type = SQ_T_BOOLEAN, .nullable = true, .default_json = "null",
 *          .bind = SQ_BIND(item_t, is_offer), .bind_null = SQ_BIND(item_t, is_offer_null)},
 *         {0}};
 *     static const sq_schema_t item_schema = {.title = "Item", .fields = item_fields};
 *
 * Validation reports every problem, each in FastAPI's 422 shape
 * {"type","loc","msg","input"[,"ctx"]}, with `loc` starting with the prefix given
 * ("body", "query", "path") and walking into nested objects and array indexes.
 *
 * This layer knows JSON (jansson) and nothing of HTTP: the HTTP layer calls it before a
 * handler runs. Everything here is reentrant; the compiled patterns and parsed defaults
 * are cached process-wide, under a lock, keyed by the address and the text of their
 * string.
 */
/* clang-format on */
#ifndef SQUALL_SCHEMA_H
#define SQUALL_SCHEMA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "common.h"

typedef enum sq_type {
    SQ_T_STRING = 1, /* JSON string; binds `const char *` (borrowed from the value) */
    SQ_T_INTEGER,    /* int64; binds int64_t. 3.0 is taken as 3, 3.5 is refused */
    SQ_T_NUMBER,     /* double; binds double. An integer is taken */
    SQ_T_BOOLEAN,    /* binds bool */
    SQ_T_ARRAY,      /* of .items; binds `const json_t *` (borrowed from the value) */
    SQ_T_OBJECT,     /* a nested .object; binds that schema's struct, inline, at the offset */
    SQ_T_ENUM,       /* one of .enum_values (strings), as a Literal; binds int, the index */
} sq_type_t;

/* A bound on a number: set or not. Write SQ_LIMIT(x). */
typedef struct sq_limit {
    bool set;
    double v;
} sq_limit_t;
#define SQ_LIMIT(x)                                                                                \
    {                                                                                              \
        true, (double)(x)                                                                          \
    }

/* A bound on a length (characters of a string, items of an array). Write SQ_LEN(n). */
typedef struct sq_len {
    bool set;
    size_t n;
} sq_len_t;
#define SQ_LEN(n)                                                                                  \
    {                                                                                              \
        true, (size_t)(n)                                                                          \
    }

/* Where a field's checked value is stored in the caller's struct. Write
 * SQ_BIND(struct type, member). Unset: the field is only in the JSON value. */
typedef struct sq_bind {
    bool set;
    size_t offset;
} sq_bind_t;
#define SQ_BIND(type, member)                                                                      \
    {                                                                                              \
        true, offsetof(type, member)                                                               \
    }

typedef struct sq_schema sq_schema_t;

typedef enum sq_format {
    SQ_FMT_NONE = 0,
    SQ_FMT_UUID, /* 8-4-4-4-12 hexadecimal digits (RFC 9562 §4), either case */
    SQ_FMT_DATE, /* YYYY-MM-DD, a real calendar date (RFC 3339 §5.6 full-date) */
} sq_format_t;

typedef struct sq_field {
    const char *name; /* NULL ends a field table */
    sq_type_t type;
    /* Optional: when absent the field takes default_json, a JSON literal ("null", "3",
     * "\"x\"", "[]"), parsed once; NULL means required. A default is not validated. */
    const char *default_json;
    bool nullable;     /* JSON null is accepted (binds bind_null = true) */
    const char *title; /* JSON Schema's title; NULL: from the name, as pydantic does */
    const char *description;

    /* SQ_T_INTEGER, SQ_T_NUMBER: pydantic's ge, gt, le, lt */
    sq_limit_t ge, gt, le, lt;
    /* SQ_T_STRING (code points, as Python counts), SQ_T_ARRAY (items) */
    sq_len_t min_length, max_length;
    /* SQ_T_STRING: a POSIX extended regular expression, searched for anywhere in the
     * string (as pydantic does; anchor it with ^...$), compiled once. A pattern that does
     * not compile makes every value fail with type "pattern_invalid". */
    const char *pattern;
    sq_format_t format;

    const char *const *enum_values; /* SQ_T_ENUM: NULL-terminated */
    const struct sq_field *items;   /* SQ_T_ARRAY: the items (a field without name) */
    const sq_schema_t *object;      /* SQ_T_OBJECT */

    sq_bind_t bind;      /* the value (see sq_type_t for the C type) */
    sq_bind_t bind_null; /* bool: true when the value is null */

    /* Fields are laid out in arrays, so their size cannot grow as "Structs that grow"
     * (common.h) allows: later members take the place of these, which tables written
     * with designated initializers leave at zero, meaning "not used". */
    const void *reserved[4];
} sq_field_t;

struct sq_schema {
    const char *title; /* JSON Schema's title (pydantic: the class name) */
    const char *description;
    const sq_field_t *fields; /* ended by a field whose name is NULL */
    const void *reserved[2];  /* as in sq_field_t: zero */
};

/* ---- Operations: what a route's method takes, declared once ----
 *
 *     typedef struct { int64_t item_id; const char *q; item_t body; } item_put_in_t;
 *     static const sq_field_t item_path[] = {
 *         {.name = "item_id", .type = SQ_T_INTEGER, .bind = SQ_BIND(item_put_in_t, item_id)},
 *         {0}};
 *     static const sq_op_t item_put_op = {
 *         .summary = "Update an item", .tags = (const char *const[]){"items", NULL},
 *         .path = item_path, .body = &item_schema,
 *         .input_size = sizeof(item_put_in_t), .body_bind = SQ_BIND(item_put_in_t, body)};
 *     static const sq_handler_t items = {.put = item_put, .op.put = &item_put_op};
 *
 * Before the handler runs, the HTTP layer validates the path parameters, the query
 * parameters and the body (in that order, every problem reported at once, as FastAPI
 * does) and answers 422 {"detail": [...]} when any fails; the handler then reads the
 * checked values with sq_req_input (the struct, input_size bytes, zeroed then bound) or
 * sq_req_input_json (req.h; blocking handlers: sq_breq_input*). Size limits come first:
 * a body over max_body_bytes is 413 before anything is validated.
 *
 * The body is JSON. As FastAPI: a request without Content-Type is parsed as JSON; with
 * application/json or any application/<x>+json it is parsed (malformed: json_invalid at
 * ["body", <position>]); with any other Content-Type the body is not parsed and is
 * answered 422 model_attributes_type at ["body"], its input the body as text (FastAPI
 * hands the raw bytes to pydantic, which refuses them as an object). An empty body is
 * `missing` at ["body"] unless body_optional.
 *
 * Every pointer is borrowed: the tables must outlive the app (static const). */
struct sq_op {
    const char *summary;         /* OpenAPI's summary (FastAPI: from the function name) */
    const char *description;     /* OpenAPI's description (FastAPI: the docstring) */
    const char *const *tags;     /* NULL-terminated; NULL: none */
    const char *operation_id;    /* NULL: FastAPI's default, from the method and the path */
    const sq_field_t *path;      /* path parameters: scalar fields named as in the pattern */
    const sq_field_t *query;     /* query parameters: scalar fields */
    const sq_schema_t *body;     /* the JSON body (application/json); NULL: none taken */
    bool body_optional;          /* an empty body is accepted (as `Item | None = None`):
                                    sq_req_input_json(req, "body") is then JSON null */
    bool deprecated;             /* marked deprecated in the document */
    bool hidden;                 /* left out of the document (include_in_schema=False) */
    size_t input_size;           /* the struct the fields' SQ_BIND offsets point into;
                                    0: nothing is bound */
    sq_bind_t body_bind;         /* where the body's struct lies in it (its fields' binds
                                    are relative to that); unset: the body's fields bind
                                    straight into the input struct */
    int status;                  /* the success status documented; 0: 200 */
    const sq_schema_t *response; /* the success body documented (not checked); NULL: any */
    const char *response_description; /* NULL: "Successful Response" */
    const void *reserved[4];     /* zero: later members take their place */
};

/* Validates `input` (borrowed; NULL means no body at all) against `schema`.
 * `loc` is the location prefix, "body" for a request body (NULL: none).
 * On success returns 0 and, if value_out, sets *value_out to a new object holding the
 * known fields with the defaults filled in (unknown fields are left out, as pydantic
 * ignores them); if `bind` is not NULL, the bound fields are stored into it (strings
 * and arrays borrowed from *value_out, so value_out is then required).
 * On failure returns UV_EINVAL and, if errors_out, sets *errors_out to a new array of
 * every problem; *value_out is NULL and `bind` may be partly written. */
SQ_EXTERN int sq_schema_validate(const sq_schema_t *schema, const json_t *input, const char *loc,
                                 json_t **value_out, json_t **errors_out, void *bind);

/* As sq_schema_validate for a body of `len` bytes that is still text: a body that is not
 * JSON gives FastAPI's json_invalid error, loc ["body", <character position>], ctx
 * {"error": <the parser's reason>}. `loc` is used as for sq_schema_validate. */
SQ_EXTERN int sq_schema_validate_text(const sq_schema_t *schema, const char *text, size_t len,
                                      const char *loc, json_t **value_out, json_t **errors_out,
                                      void *bind);

/* Parameters (path, query): a NULL-name-terminated table of scalar fields (string,
 * integer, number, boolean, enum), validated from strings as FastAPI coerces them:
 * "5" is the integer 5, "abc" is int_parsing; a boolean is one of true/false, 1/0,
 * yes/no, on/off, t/f, y/n in any case. `get` returns a parameter's raw value, or NULL
 * when absent (a missing required parameter has input null). `loc` is "query" or "path".
 * Results as for sq_schema_validate (*value_out is an object of the parameters; a
 * string binds a pointer into it). */
typedef const char *(*sq_param_get_cb)(void *ctx, const char *name);
SQ_EXTERN int sq_params_validate(const sq_field_t *params, const char *loc, sq_param_get_cb get,
                                 void *ctx, json_t **value_out, json_t **errors_out, void *bind);

/* Wraps errors (an array, stolen) into FastAPI's 422 body {"detail": errors}. */
SQ_EXTERN json_t *sq_schema_detail(json_t *errors);

/* The JSON Schema (2020-12, as OpenAPI 3.1 uses it) of `schema`, a new reference, as
 * pydantic v2 writes it: type, title, properties, required, default, minimum/maximum,
 * exclusiveMinimum/exclusiveMaximum, minLength/maxLength, minItems/maxItems, enum,
 * pattern, format; a nullable field is {"anyOf": [T, {"type": "null"}]}.
 * When `defs` is not NULL, each nested object schema is put into defs under its title
 * and referenced as {"$ref": ref_prefix + title} ("#/components/schemas/" for OpenAPI,
 * "#/$defs/" for a standalone document); otherwise nested schemas are written inline. */
SQ_EXTERN json_t *sq_schema_to_json_schema(const sq_schema_t *schema, const char *ref_prefix,
                                           json_t *defs);

/* The JSON Schema of one field (a parameter, or an array's items), as above. */
SQ_EXTERN json_t *sq_field_to_json_schema(const sq_field_t *field, const char *ref_prefix,
                                          json_t *defs);

#endif
