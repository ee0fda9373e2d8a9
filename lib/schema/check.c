/* Declarations checked when a route is added (sq_app_route): what no request could
 * satisfy, or what would be published other than it is checked, is refused there
 * (UV_EINVAL), not found later by a client's 422 or a broken OpenAPI document. */
#include "schema/schema_int.h"

static bool text_ok(const char *s)
{
    return s == NULL || sq__utf8_valid(s);
}

static bool field_ok(const sq_field_t *f, unsigned depth);

static bool schema_ok(const sq_schema_t *s, unsigned depth)
{
    if (depth > 32) /* deeper is a table that refers to itself: checked once is enough */
        return true;
    if (!text_ok(s->title) || !text_ok(s->description))
        return false;
    for (const sq_field_t *f = s->fields; f != NULL && f->name != NULL; f++)
        if (!field_ok(f, depth + 1))
            return false;
    return true;
}

static bool field_ok(const sq_field_t *f, unsigned depth)
{
    if (depth > 32) /* a list that holds itself: checked once is enough */
        return true;
    if (!text_ok(f->name) || !text_ok(f->title) || !text_ok(f->description) ||
        !text_ok(f->default_json) || !text_ok(f->pattern))
        return false;
    if (f->type < SQ_T_STRING || f->type > SQ_T_ENUM)
        return false;
    if (f->pattern != NULL && sq__schema_regex(f->pattern) == NULL)
        return false; /* not one pydantic and an OpenAPI reader would read alike */
    if (f->default_json != NULL && json_is_null(sq__schema_default(f)) &&
        strcmp(f->default_json, "null") != 0)
        return false; /* a default that is not JSON */
    if (f->type == SQ_T_ENUM) {
        if (f->enum_values == NULL || f->enum_values[0] == NULL)
            return false;
        for (const char *const *v = f->enum_values; *v != NULL; v++)
            if (!text_ok(*v))
                return false;
    }
    if (f->type == SQ_T_ARRAY && f->items != NULL && !field_ok(f->items, depth + 1))
        return false;
    if (f->type == SQ_T_OBJECT && f->object != NULL && !schema_ok(f->object, depth + 1))
        return false;
    return true;
}

/* Parameters are strings in a URL: scalars only (FastAPI's list query parameters are not
 * taken: refused rather than failing every request). */
static bool params_ok(const sq_field_t *params)
{
    for (const sq_field_t *f = params; f != NULL && f->name != NULL; f++)
        if (f->type == SQ_T_ARRAY || f->type == SQ_T_OBJECT || !field_ok(f, 0))
            return false;
    return true;
}

int sq__op_check(const sq_op_t *op, const char *const *path_names, unsigned nnames, bool streamed)
{
    if (!text_ok(op->summary) || !text_ok(op->description) || !text_ok(op->operation_id) ||
        !text_ok(op->response_description))
        return UV_EINVAL;
    for (const char *const *t = op->tags; t != NULL && *t != NULL; t++)
        if (!text_ok(*t))
            return UV_EINVAL;
    if (!params_ok(op->path) || !params_ok(op->query))
        return UV_EINVAL;
    for (const sq_field_t *f = op->path; f != NULL && f->name != NULL; f++) {
        unsigned i = 0;
        while (i < nnames && strcmp(path_names[i], f->name) != 0)
            i++;
        if (i == nnames)
            return UV_EINVAL; /* a path parameter the pattern does not have */
    }
    if (op->body != NULL && (streamed || !schema_ok(op->body, 0)))
        return UV_EINVAL; /* a streamed body is its reader's: it cannot be checked whole */
    if (op->response != NULL && !schema_ok(op->response, 0))
        return UV_EINVAL;
    if (op->body_bind.set && op->body_bind.offset >= op->input_size)
        return UV_EINVAL;
    return 0;
}
