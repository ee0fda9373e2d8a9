/* Validation against a declared schema, reporting every problem as pydantic v2 does
 * (the `type`, `msg` and `ctx` of its errors, as FastAPI's 422 shows them). */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>

#include "schema/schema_int.h"

typedef struct vctx {
    json_t *errors;
    json_t *loc;
    bool oom; /* an allocation failed: the result is neither a value nor the errors */
} vctx_t;

/* Adds one error at the current location; input and ctx are stolen (ctx may be NULL). */
static void err_add(vctx_t *c, const char *type, const char *msg, json_t *input, json_t *ctx)
{
    json_t *e = json_object();
    if (e == NULL || json_object_set_new(e, "type", json_string(type)) != 0 ||
        json_object_set_new(e, "loc", json_copy(c->loc)) != 0 ||
        json_object_set_new(e, "msg", json_string(msg)) != 0 ||
        json_object_set(e, "input", input != NULL ? input : json_null()) != 0 ||
        (ctx != NULL && json_object_set(e, "ctx", ctx) != 0)) {
        json_decref(e);
        c->oom = true;
    } else if (json_array_append_new(c->errors, e) != 0) { /* e is freed by it */
        c->oom = true;
    }
    json_decref(input);
    json_decref(ctx);
}

static json_t *in_ref(const json_t *in)
{
    return in != NULL ? json_incref((json_t *)in) : json_null();
}

/* A bound as Python's repr would write it, and as a JSON value for ctx. */
static bool is_integral(double v)
{
    return v == floor(v) && fabs(v) < 1e15;
}

static void num_fmt(char *buf, size_t n, double v)
{
    if (is_integral(v)) {
        snprintf(buf, n, "%lld", (long long)v);
        return;
    }
    snprintf(buf, n, "%.15g", v);
    if (strtod(buf, NULL) != v)
        snprintf(buf, n, "%.17g", v);
    if (strpbrk(buf, ".en") == NULL) /* 1e+20 stays; a bare mantissa gets ".0" */
        strncat(buf, ".0", n - strlen(buf) - 1);
}

static json_t *num_json(double v)
{
    return is_integral(v) ? json_integer((json_int_t)v) : json_real(v);
}

/* Code points of a UTF-8 string (jansson has checked it), as Python's len counts. */
static size_t utf8_len(const char *s, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        k += ((unsigned char)s[i] & 0xC0) != 0x80;
    return k;
}

/* ---- numbers: pydantic's ge, gt, le, lt ---- */

static bool check_bounds(vctx_t *c, const sq_field_t *f, double v, const json_t *in)
{
    struct {
        const sq_limit_t *lim;
        bool ok;
        const char *type, *words, *key;
    } b[] = {
        {&f->gt, v > f->gt.v, "greater_than", "greater than", "gt"},
        {&f->ge, v >= f->ge.v, "greater_than_equal", "greater than or equal to", "ge"},
        {&f->lt, v < f->lt.v, "less_than", "less than", "lt"},
        {&f->le, v <= f->le.v, "less_than_equal", "less than or equal to", "le"},
    };
    bool ok = true;
    for (size_t i = 0; i < SQ__ARRAY_SIZE(b); i++) {
        if (!b[i].lim->set || b[i].ok)
            continue;
        char num[40], msg[96];
        num_fmt(num, sizeof(num), b[i].lim->v);
        snprintf(msg, sizeof(msg), "Input should be %s %s", b[i].words, num);
        err_add(c, b[i].type, msg, in_ref(in), json_pack("{s:o}", b[i].key, num_json(b[i].lim->v)));
        ok = false;
        i |= 1; /* gt and ge, or lt and le: one error per side */
    }
    return ok;
}

/* ---- lengths ---- */

static bool check_len(vctx_t *c, const sq_field_t *f, size_t len, const json_t *in, bool list)
{
    char msg[128];
    if (f->min_length.set && len < f->min_length.n) {
        size_t n = f->min_length.n;
        if (list) {
            snprintf(msg, sizeof(msg),
                     "List should have at least %zu item%s after validation, not %zu", n,
                     n == 1 ? "" : "s", len);
            err_add(c, "too_short", msg, in_ref(in),
                    json_pack("{s:s,s:I,s:I}", "field_type", "List", "min_length", (json_int_t)n,
                              "actual_length", (json_int_t)len));
        } else {
            snprintf(msg, sizeof(msg), "String should have at least %zu character%s", n,
                     n == 1 ? "" : "s");
            err_add(c, "string_too_short", msg, in_ref(in),
                    json_pack("{s:I}", "min_length", (json_int_t)n));
        }
        return false;
    }
    if (f->max_length.set && len > f->max_length.n) {
        size_t n = f->max_length.n;
        if (list) {
            snprintf(msg, sizeof(msg),
                     "List should have at most %zu item%s after validation, not %zu", n,
                     n == 1 ? "" : "s", len);
            err_add(c, "too_long", msg, in_ref(in),
                    json_pack("{s:s,s:I,s:I}", "field_type", "List", "max_length", (json_int_t)n,
                              "actual_length", (json_int_t)len));
        } else {
            snprintf(msg, sizeof(msg), "String should have at most %zu character%s", n,
                     n == 1 ? "" : "s");
            err_add(c, "string_too_long", msg, in_ref(in),
                    json_pack("{s:I}", "max_length", (json_int_t)n));
        }
        return false;
    }
    return true;
}

/* ---- formats ---- */

static bool is_uuid(const char *s, size_t n)
{
    if (n != 36)
        return false;
    for (size_t i = 0; i < n; i++) {
        bool dash = i == 8 || i == 13 || i == 18 || i == 23;
        if (dash ? s[i] != '-' : !isxdigit((unsigned char)s[i]))
            return false;
    }
    return true;
}

static bool is_date(const char *s, size_t n)
{
    static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (n != 10 || s[4] != '-' || s[7] != '-')
        return false;
    for (size_t i = 0; i < n; i++)
        if (i != 4 && i != 7 && !isdigit((unsigned char)s[i]))
            return false;
    int y = atoi(s), m = (s[5] - '0') * 10 + (s[6] - '0'), d = (s[8] - '0') * 10 + (s[9] - '0');
    if (m < 1 || m > 12 || d < 1 || d > mdays[m - 1])
        return false;
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return !(m == 2 && d == 29 && !leap);
}

static bool check_string(vctx_t *c, const sq_field_t *f, const json_t *in)
{
    const char *s = json_string_value(in);
    size_t n = json_string_length(in);
    if (!check_len(c, f, utf8_len(s, n), in, false))
        return false;
    if (f->pattern != NULL) {
        const regex_t *re = sq__schema_regex(f->pattern);
        char msg[256];
        if (re == NULL) {
            snprintf(msg, sizeof(msg), "Pattern '%s' does not compile", f->pattern);
            err_add(c, "pattern_invalid", msg, in_ref(in),
                    json_pack("{s:s}", "pattern", f->pattern));
            return false;
        }
        if (strlen(s) != n || regexec(re, s, 0, NULL, 0) != 0) {
            snprintf(msg, sizeof(msg), "String should match pattern '%s'", f->pattern);
            err_add(c, "string_pattern_mismatch", msg, in_ref(in),
                    json_pack("{s:s}", "pattern", f->pattern));
            return false;
        }
    }
    if (f->format == SQ_FMT_UUID && !is_uuid(s, n)) {
        err_add(c, "uuid_parsing", "Input should be a valid UUID", in_ref(in), NULL);
        return false;
    }
    if (f->format == SQ_FMT_DATE && !is_date(s, n)) {
        err_add(c, "date_parsing", "Input should be a valid date in the format YYYY-MM-DD",
                in_ref(in), NULL);
        return false;
    }
    return true;
}

/* ---- scalars from strings (a query or path parameter, or a string in a body, as
 * pydantic's lax mode takes it) ---- */

static bool trim(const char *s, const char **b, const char **e)
{
    *b = s;
    *e = s + strlen(s);
    while (*b < *e && isspace((unsigned char)**b))
        (*b)++;
    while (*e > *b && isspace((unsigned char)(*e)[-1]))
        (*e)--;
    return *b < *e;
}

static bool parse_int(const char *s, int64_t *out)
{
    const char *b, *e;
    if (!trim(s, &b, &e))
        return false;
    const char *p = b;
    if (*p == '+' || *p == '-')
        p++;
    if (p == e)
        return false;
    for (const char *q = p; q < e; q++)
        if (!isdigit((unsigned char)*q))
            return false;
    char buf[32];
    if ((size_t)(e - b) >= sizeof(buf))
        return false;
    memcpy(buf, b, (size_t)(e - b));
    buf[e - b] = '\0';
    errno = 0;
    long long v = strtoll(buf, NULL, 10);
    if (errno != 0)
        return false;
    *out = v;
    return true;
}

/* A string as pydantic takes it for an int: an integer, or one followed by '.' and zeros
 * ("5.0"); not "1e3", not "5.5". */
static bool parse_int_str(const char *s, int64_t *out)
{
    const char *dot = strchr(s, '.');
    if (dot == NULL)
        return parse_int(s, out);
    const char *p = dot + 1;
    while (*p == '0')
        p++;
    while (isspace((unsigned char)*p))
        p++;
    if (*p != '\0' || dot == s || !isdigit((unsigned char)dot[-1]))
        return false;
    char buf[32];
    if ((size_t)(dot - s) >= sizeof(buf))
        return false;
    memcpy(buf, s, (size_t)(dot - s));
    buf[dot - s] = '\0';
    return parse_int(buf, out);
}

static bool parse_num(const char *s, double *out)
{
    const char *b, *e;
    if (!trim(s, &b, &e))
        return false;
    for (const char *q = b; q < e; q++)
        if (!isdigit((unsigned char)*q) && strchr("+-.eE", *q) == NULL)
            return false;
    char buf[64];
    if ((size_t)(e - b) >= sizeof(buf))
        return false;
    memcpy(buf, b, (size_t)(e - b));
    buf[e - b] = '\0';
    char *end;
    double v = strtod(buf, &end);
    if (*end != '\0' || !isfinite(v))
        return false;
    *out = v;
    return true;
}

static int parse_bool(const char *s)
{
    static const char *const t[] = {"true", "1", "yes", "on", "t", "y"};
    static const char *const f[] = {"false", "0", "no", "off", "f", "n"};
    const char *b, *e;
    if (!trim(s, &b, &e))
        return -1;
    size_t n = (size_t)(e - b);
    for (size_t i = 0; i < SQ__ARRAY_SIZE(t); i++) {
        if (strlen(t[i]) == n && strncasecmp(b, t[i], n) == 0)
            return 1;
        if (strlen(f[i]) == n && strncasecmp(b, f[i], n) == 0)
            return 0;
    }
    return -1;
}

/* ---- one value ---- */

static json_t *check_value(vctx_t *c, const sq_field_t *f, const json_t *in);
static json_t *check_object(vctx_t *c, const sq_schema_t *s, const json_t *in);

static json_t *check_enum(vctx_t *c, const sq_field_t *f, const json_t *in)
{
    const char *s = json_string_value(in);
    size_t n = 0;
    for (const char *const *v = f->enum_values; v != NULL && *v != NULL; v++, n++)
        if (s != NULL && strcmp(s, *v) == 0)
            return json_string(s);
    /* 'a', 'b' or 'c' */
    char expected[512] = "";
    size_t k = 0;
    for (const char *const *v = f->enum_values; v != NULL && *v != NULL; v++, k++) {
        size_t used = strlen(expected);
        snprintf(expected + used, sizeof(expected) - used, "%s'%s'",
                 k == 0       ? ""
                 : k + 1 == n ? " or "
                              : ", ",
                 *v);
    }
    char msg[600];
    snprintf(msg, sizeof(msg), "Input should be %s", expected);
    err_add(c, "literal_error", msg, in_ref(in), json_pack("{s:s}", "expected", expected));
    return NULL;
}

static json_t *check_array(vctx_t *c, const sq_field_t *f, const json_t *in)
{
    if (!json_is_array(in)) {
        err_add(c, "list_type", "Input should be a valid list", in_ref(in), NULL);
        return NULL;
    }
    /* As pydantic: too many items stops there; too few is judged after the items. */
    if (f->max_length.set && json_array_size(in) > f->max_length.n) {
        check_len(c, f, json_array_size(in), in, true);
        return NULL;
    }
    json_t *out = json_array();
    size_t nerr = json_array_size(c->errors), i;
    json_t *item;
    if (out == NULL)
        c->oom = true;
    json_array_foreach(in, i, item)
    {
        if (c->oom || json_array_append_new(c->loc, json_integer((json_int_t)i)) != 0) {
            c->oom = true;
            break;
        }
        size_t before = json_array_size(c->errors);
        json_t *v = f->items != NULL ? check_value(c, f->items, item) : json_incref(item);
        json_array_remove(c->loc, json_array_size(c->loc) - 1);
        if (v != NULL ? json_array_append_new(out, v) != 0
                      : json_array_size(c->errors) == before)
            c->oom = true;
    }
    bool ok = !c->oom && json_array_size(c->errors) == nerr &&
              check_len(c, f, json_array_size(in), in, true);
    if (!ok) {
        json_decref(out);
        return NULL;
    }
    return out;
}

static json_t *check_value(vctx_t *c, const sq_field_t *f, const json_t *in)
{
    if (json_is_null(in) && f->nullable)
        return json_null();
    const char *s = json_string_value(in);
    switch (f->type) {
    case SQ_T_STRING:
        if (!json_is_string(in)) {
            err_add(c, "string_type", "Input should be a valid string", in_ref(in), NULL);
            return NULL;
        }
        return check_string(c, f, in) ? json_incref((json_t *)in) : NULL;
    case SQ_T_INTEGER: {
        int64_t v;
        if (json_is_integer(in)) {
            v = json_integer_value(in);
        } else if (json_is_boolean(in)) { /* as pydantic's lax mode: true is 1 */
            v = json_is_true(in);
        } else if (json_is_real(in)) {
            double d = json_real_value(in);
            if (d != floor(d)) {
                err_add(c, "int_from_float",
                        "Input should be a valid integer, got a number with a fractional part",
                        in_ref(in), NULL);
                return NULL;
            }
            if (!(d >= -9223372036854775808.0 && d < 9223372036854775808.0)) {
                err_add(c, "int_parsing_size",
                        "Unable to parse input string as an integer, exceeded maximum size",
                        in_ref(in), NULL);
                return NULL;
            }
            v = (int64_t)d;
        } else if (s != NULL) {
            if (!parse_int_str(s, &v)) {
                err_add(c, "int_parsing",
                        "Input should be a valid integer, unable to parse string as an integer",
                        in_ref(in), NULL);
                return NULL;
            }
        } else {
            err_add(c, "int_type", "Input should be a valid integer", in_ref(in), NULL);
            return NULL;
        }
        if (!check_bounds(c, f, (double)v, in))
            return NULL;
        return json_integer((json_int_t)v);
    }
    case SQ_T_NUMBER: {
        double d;
        if (json_is_number(in)) {
            d = json_number_value(in);
        } else if (json_is_boolean(in)) {
            d = json_is_true(in);
        } else if (s != NULL) {
            if (!parse_num(s, &d)) {
                err_add(c, "float_parsing",
                        "Input should be a valid number, unable to parse string as a number",
                        in_ref(in), NULL);
                return NULL;
            }
        } else {
            err_add(c, "float_type", "Input should be a valid number", in_ref(in), NULL);
            return NULL;
        }
        if (!check_bounds(c, f, d, in))
            return NULL;
        return json_real(d);
    }
    case SQ_T_BOOLEAN: {
        int b = -1;
        if (json_is_boolean(in))
            return json_incref((json_t *)in);
        if (json_is_integer(in) && (json_integer_value(in) == 0 || json_integer_value(in) == 1))
            b = (int)json_integer_value(in);
        else if (json_is_real(in) && (json_real_value(in) == 0.0 || json_real_value(in) == 1.0))
            b = json_real_value(in) == 1.0; /* pydantic's lax mode: 0.0 and 1.0 too */
        else if (s != NULL)
            b = parse_bool(s);
        else if (!json_is_number(in)) {
            err_add(c, "bool_type", "Input should be a valid boolean", in_ref(in), NULL);
            return NULL;
        }
        if (b < 0) {
            err_add(c, "bool_parsing", "Input should be a valid boolean, unable to interpret input",
                    in_ref(in), NULL);
            return NULL;
        }
        return json_boolean(b);
    }
    case SQ_T_ENUM:
        return check_enum(c, f, in);
    case SQ_T_ARRAY:
        return check_array(c, f, in);
    case SQ_T_OBJECT:
        return check_object(c, f->object, in);
    }
    err_add(c, "schema_invalid", "The field's type is not known", in_ref(in), NULL);
    return NULL;
}

/* Validates the fields of `s` found in `in`; NULL on any error below. */
static json_t *check_fields(vctx_t *c, const sq_field_t *fields, const json_t *in, bool params,
                            const json_t *skip)
{
    json_t *out = json_object();
    size_t nerr = json_array_size(c->errors);
    if (out == NULL)
        c->oom = true;
    for (const sq_field_t *f = fields; f != NULL && f->name != NULL && !c->oom; f++) {
        const json_t *v = json_object_get(in, f->name);
        if (v == NULL && json_object_get(skip, f->name) != NULL)
            continue; /* already reported */
        if (json_array_append_new(c->loc, json_string(f->name)) != 0) {
            c->oom = true;
            break;
        }
        if (v == NULL) {
            const json_t *d = sq__schema_default(f);
            if (d != NULL) {
                if (json_object_set_new(out, f->name, json_deep_copy(d)) != 0)
                    c->oom = true;
            } else {
                err_add(c, "missing", "Field required", params ? json_null() : in_ref(in), NULL);
            }
        } else {
            size_t before = json_array_size(c->errors);
            json_t *r = check_value(c, f, v);
            if (r != NULL) {
                if (json_object_set_new(out, f->name, r) != 0)
                    c->oom = true;
            } else if (json_array_size(c->errors) == before) {
                c->oom = true; /* no value and no error: an allocation failed below */
            }
        }
        json_array_remove(c->loc, json_array_size(c->loc) - 1);
    }
    if (c->oom || json_array_size(c->errors) != nerr) {
        json_decref(out);
        return NULL;
    }
    return out;
}

static json_t *check_object(vctx_t *c, const sq_schema_t *s, const json_t *in)
{
    if (in == NULL) {
        err_add(c, "missing", "Field required", json_null(), NULL);
        return NULL;
    }
    if (!json_is_object(in)) {
        err_add(c, "model_attributes_type",
                "Input should be a valid dictionary or object to extract fields from", in_ref(in),
                NULL);
        return NULL;
    }
    if (s == NULL) /* an object of any shape */
        return json_deep_copy(in);
    return check_fields(c, s->fields, in, false, NULL);
}

/* ---- binding ---- */

static void bind_fields(const sq_field_t *fields, const json_t *value, char *base);

static void bind_value(const sq_field_t *f, const json_t *v, char *base)
{
    if (f->bind_null.set)
        *(bool *)(base + f->bind_null.offset) = json_is_null(v);
    if (!f->bind.set || v == NULL)
        return;
    char *p = base + f->bind.offset;
    if (json_is_null(v)) { /* a pointer is NULL; other types keep what they held */
        if (f->type == SQ_T_STRING)
            *(const char **)p = NULL;
        else if (f->type == SQ_T_ARRAY)
            *(const json_t **)p = NULL;
        return;
    }
    switch (f->type) {
    case SQ_T_STRING:
        *(const char **)p = json_string_value(v);
        break;
    case SQ_T_INTEGER:
        *(int64_t *)p = json_is_integer(v) ? json_integer_value(v) : (int64_t)json_number_value(v);
        break;
    case SQ_T_NUMBER:
        *(double *)p = json_number_value(v);
        break;
    case SQ_T_BOOLEAN:
        *(bool *)p = json_is_true(v);
        break;
    case SQ_T_ENUM: {
        int k = 0, idx = -1;
        for (const char *const *e = f->enum_values; e != NULL && *e != NULL; e++, k++)
            if (json_string_value(v) != NULL && strcmp(*e, json_string_value(v)) == 0)
                idx = k;
        *(int *)p = idx;
        break;
    }
    case SQ_T_ARRAY:
        *(const json_t **)p = v;
        break;
    case SQ_T_OBJECT:
        if (f->object != NULL)
            bind_fields(f->object->fields, v, p);
        break;
    }
}

static void bind_fields(const sq_field_t *fields, const json_t *value, char *base)
{
    for (const sq_field_t *f = fields; f != NULL && f->name != NULL; f++)
        bind_value(f, json_object_get(value, f->name), base);
}

/* ---- the public calls ---- */

static int finish(vctx_t *c, json_t *value, const sq_field_t *fields, json_t **value_out,
                  json_t **errors_out, void *bind)
{
    json_decref(c->loc);
    if (c->oom) { /* neither a value nor every error: say so, never half of either */
        json_decref(value);
        json_decref(c->errors);
        if (value_out != NULL)
            *value_out = NULL;
        if (errors_out != NULL)
            *errors_out = NULL;
        return UV_ENOMEM;
    }
    if (value == NULL) {
        if (errors_out != NULL)
            *errors_out = c->errors;
        else
            json_decref(c->errors);
        if (value_out != NULL)
            *value_out = NULL;
        return UV_EINVAL;
    }
    json_decref(c->errors);
    if (errors_out != NULL)
        *errors_out = NULL;
    if (bind != NULL)
        bind_fields(fields, value, bind);
    if (value_out != NULL)
        *value_out = value;
    else
        json_decref(value);
    return 0;
}

static int ctx_init(vctx_t *c, const char *loc)
{
    c->oom = false;
    c->errors = json_array();
    c->loc = json_array();
    if (c->errors == NULL || c->loc == NULL)
        goto fail;
    if (loc != NULL && json_array_append_new(c->loc, json_string(loc)) != 0)
        goto fail;
    return 0;
fail:
    json_decref(c->errors);
    json_decref(c->loc);
    return UV_ENOMEM;
}

int sq_schema_validate(const sq_schema_t *schema, const json_t *input, const char *loc,
                       json_t **value_out, json_t **errors_out, void *bind)
{
    vctx_t c;
    if (schema == NULL || (bind != NULL && value_out == NULL))
        return UV_EINVAL;
    int rc = ctx_init(&c, loc);
    if (rc != 0)
        return rc;
    /* FastAPI takes a body that is JSON null for no body at all */
    json_t *value = check_object(&c, schema, json_is_null(input) ? NULL : input);
    return finish(&c, value, schema->fields, value_out, errors_out, bind);
}

int sq_schema_validate_text(const sq_schema_t *schema, const char *text, size_t len,
                            const char *loc, json_t **value_out, json_t **errors_out, void *bind)
{
    if (schema == NULL || (bind != NULL && value_out == NULL))
        return UV_EINVAL;
    if (len == 0)
        return sq_schema_validate(schema, NULL, loc, value_out, errors_out, bind);
    json_error_t jerr;
    json_t *in = json_loadb(text, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
    if (in == NULL && strstr(jerr.text, "too big integer") != NULL)
        /* Python's json takes an integer of any size: so does a number field here (an
         * integer field then says int_parsing_size) */
        in = json_loadb(text, len, JSON_DECODE_ANY | JSON_ALLOW_NUL | JSON_DECODE_INT_AS_REAL,
                        &jerr);
    if (in != NULL) {
        int rc = sq_schema_validate(schema, in, loc, value_out, errors_out, bind);
        json_decref(in);
        return rc;
    }
    /* Python's json gives where the bad token starts, in characters; jansson gives the
     * byte after it and names it ("... near 'x'"; "near end of file" at the end). */
    size_t pos = jerr.position > 0 ? (size_t)jerr.position : 0, tok = 0;
    const char *near = strstr(jerr.text, "near '");
    if (near != NULL) {
        const char *b = near + 6, *e = strrchr(b, '\'');
        tok = e != NULL ? (size_t)(e - b) : 0;
    }
    pos = tok < pos ? pos - tok : 0;
    if (pos > len)
        pos = len;
    vctx_t c;
    int rc = ctx_init(&c, loc);
    if (rc != 0)
        return rc;
    json_array_append_new(c.loc, json_integer((json_int_t)utf8_len(text, pos)));
    err_add(&c, "json_invalid", "JSON decode error", json_object(),
            json_pack("{s:s}", "error", jerr.text));
    return finish(&c, NULL, NULL, value_out, errors_out, NULL);
}

int sq_params_validate(const sq_field_t *params, const char *loc, sq_param_get_cb get, void *ctx,
                       json_t **value_out, json_t **errors_out, void *bind)
{
    vctx_t c;
    if (get == NULL || (bind != NULL && value_out == NULL))
        return UV_EINVAL;
    int rc = ctx_init(&c, loc);
    if (rc != 0)
        return rc;
    /* The raw strings, as an object, go through the same checks (strings are coerced). */
    json_t *in = json_object(), *skip = json_object();
    if (in == NULL || skip == NULL)
        c.oom = true;
    for (const sq_field_t *f = params; !c.oom && f != NULL && f->name != NULL; f++) {
        const char *raw = get(ctx, f->name);
        if (raw == NULL)
            continue;
        json_t *s = json_string(raw);
        if (s == NULL) { /* not UTF-8 */
            json_array_append_new(c.loc, json_string(f->name));
            err_add(&c, "string_unicode",
                    "Input should be a valid string, unable to parse raw data as a unicode string",
                    json_null(), NULL);
            json_array_remove(c.loc, json_array_size(c.loc) - 1);
            json_object_set_new(skip, f->name, json_true());
            continue;
        }
        json_object_set_new(in, f->name, s);
    }
    size_t nerr = json_array_size(c.errors);
    json_t *value = check_fields(&c, params, in, true, skip);
    json_decref(in);
    json_decref(skip);
    if (value != NULL && nerr != 0) {
        json_decref(value);
        value = NULL;
    }
    return finish(&c, value, params, value_out, errors_out, bind);
}

json_t *sq_schema_detail(json_t *errors)
{
    return json_pack("{s:o}", "detail", errors != NULL ? errors : json_array());
}
