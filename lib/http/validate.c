/* Declared operations (schema.h, sq_op_t): a request's path parameters, query parameters
 * and JSON body checked before its handler runs, in that order and all at once, as
 * FastAPI does; a request that fails any is answered 422 {"detail": [...]} and never
 * reaches the handler. The checked values stay with the exchange until it is reused. */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "http/h1_int.h"
#include "squall/log.h"
#include "squall/schema.h"

/* A parameter's decoded bytes as the string FastAPI sees: Python decodes percent-escapes
 * with errors="replace", so each byte that is not part of a well-formed sequence becomes
 * U+FFFD. Returns s itself when it is well-formed, else a copy in the request's memory
 * (NULL, as if absent, when out of it). */
static const char *utf8_lossy(sq__exch_t *x, const char *s)
{
    if (s == NULL)
        return NULL;
    const unsigned char *p = (const unsigned char *)s;
    size_t n, bad = 0;
    for (; *p != '\0'; p += n ? n : 1)
        bad += (n = sq__utf8_seq(p)) == 0;
    if (bad == 0)
        return s;
    char *out = sq__arena_alloc(&x->arena, strlen(s) + 2 * bad + 1), *o = out;
    if (out == NULL)
        return NULL;
    for (p = (const unsigned char *)s; *p != '\0'; p += n ? n : 1) {
        n = sq__utf8_seq(p);
        memcpy(o, n ? (const char *)p : "\xef\xbf\xbd", n ? n : 3);
        o += n ? n : 3;
    }
    *o = '\0';
    return out;
}

static const char *path_get(void *ctx, const char *name)
{
    return utf8_lossy(ctx, sq_req_param(ctx, name));
}

/* With ?q=a&q=b, FastAPI's scalar q is "b": Starlette's QueryParams.get takes the last. */
static const char *query_get(void *ctx, const char *name)
{
    return utf8_lossy(ctx, sq__req_query_last(ctx, name));
}

/* FastAPI parses a body as JSON when the request has no Content-Type, or an
 * application/json or application/<anything>+json one (RFC 6839 §3.1 names the +json
 * suffix); parameters after ';' do not matter, nor does case (RFC 9110 §8.3.1). */
static bool is_json_type(const char *ct)
{
    if (ct == NULL)
        return true;
    size_t n = strcspn(ct, ";");
    while (n > 0 && (ct[n - 1] == ' ' || ct[n - 1] == '\t'))
        n--;
    static const char app[] = "application/";
    if (n < sizeof(app) - 1 || strncasecmp(ct, app, sizeof(app) - 1) != 0)
        return false;
    const char *sub = ct + sizeof(app) - 1;
    size_t sn = n - (sizeof(app) - 1);
    if (sn == 4 && strncasecmp(sub, "json", 4) == 0)
        return true;
    return sn > 5 && strncasecmp(sub + sn - 5, "+json", 5) == 0;
}

/* Appends the errors of one part (stolen) to `all`. */
static void add_errors(json_t *all, json_t *errors)
{
    if (errors != NULL)
        json_array_extend(all, errors);
    json_decref(errors);
}

/* The {x:int} segment the router could not convert, unless the operation declares the
 * parameter itself (then its own check reports it, once). */
static void add_bad_param(const sq__exch_t *x, const sq_op_t *op, json_t *all)
{
    for (const sq_field_t *f = op->path; f != NULL && f->name != NULL; f++)
        if (strcmp(f->name, x->match.bad_param) == 0)
            return;
    json_t *in = json_string(x->match.bad_value);
    json_array_append_new(
        all,
        json_pack("{s:s,s:[s,s],s:s,s:o}", "type", "int_parsing", "loc", "path", x->match.bad_param,
                  "msg", "Input should be a valid integer, unable to parse string as an integer",
                  "input", in ? in : json_null()));
}

/* The body's part. A body that is not JSON by its Content-Type is handed over as text, as
 * FastAPI hands pydantic the raw bytes, which refuses them as an object
 * (model_attributes_type); text that is not UTF-8 is given as null. */
static int check_body(sq__exch_t *x, const sq_op_t *op, char *input, json_t *all)
{
    const char *body = x->body.len ? x->body.base : "";
    size_t len = x->body.len;
    void *bind = input == NULL ? NULL : op->body_bind.set ? input + op->body_bind.offset : input;
    json_t *errors = NULL;
    int rc;
    if (op->body_optional) { /* no body, or JSON null: the default, None */
        size_t b = 0, e = len;
        while (b < e && (body[b] == ' ' || body[b] == '\t' || body[b] == '\r' || body[b] == '\n'))
            b++;
        while (e > b && (body[e - 1] == ' ' || body[e - 1] == '\t' || body[e - 1] == '\r' ||
                         body[e - 1] == '\n'))
            e--;
        if (e == b || (e - b == 4 && memcmp(body + b, "null", 4) == 0 &&
                       is_json_type(sq_req_header(x, "Content-Type")))) {
            x->in_body = json_null();
            return 0;
        }
    }
    if (len == 0 || is_json_type(sq_req_header(x, "Content-Type"))) {
        rc = sq_schema_validate_text(op->body, body, len, "body", &x->in_body, &errors, bind);
    } else {
        json_t *text = json_stringn(body, len);
        if (text == NULL) /* not UTF-8: the same error, its input null */
            errors = json_pack("[{s:s,s:[s],s:s,s:n}]", "type", "model_attributes_type", "loc",
                               "body", "msg",
                               "Input should be a valid dictionary or object to extract fields "
                               "from",
                               "input");
        rc = text == NULL ? (errors ? UV_EINVAL : UV_ENOMEM)
                          : sq_schema_validate(op->body, text, "body", &x->in_body, &errors, bind);
        json_decref(text);
    }
    add_errors(all, errors);
    return rc == UV_EINVAL ? 0 : rc;
}

bool sq__h1_validate(sq__exch_t *x)
{
    const sq_op_t *op = x->match.op;
    json_t *all = json_array(), *errors = NULL;
    char *input = NULL;
    int rc = UV_ENOMEM;
    if (all == NULL)
        goto fail;
    if (op->input_size > 0) {
        input = sq__arena_alloc(&x->arena, op->input_size);
        if (input == NULL)
            goto fail;
        memset(input, 0, op->input_size);
    }
    if (x->verdict == SQ__MATCH_BAD_PARAM)
        add_bad_param(x, op, all);
    if (op->path != NULL) {
        rc = sq_params_validate(op->path, "path", path_get, x, &x->in_path, &errors, input);
        add_errors(all, errors);
        if (rc != 0 && rc != UV_EINVAL)
            goto fail;
    }
    if (op->query != NULL) {
        rc = sq_params_validate(op->query, "query", query_get, x, &x->in_query, &errors, input);
        add_errors(all, errors);
        if (rc != 0 && rc != UV_EINVAL)
            goto fail;
    }
    if (op->body != NULL && !(x->flags & SQ__XF_STREAM)) { /* a stream is its reader's */
        rc = check_body(x, op, input, all);
        if (rc != 0)
            goto fail;
    }
    if (json_array_size(all) == 0) {
        json_decref(all);
        x->input = input;
        return true;
    }
    sq__h1_error(x, 422, all);
    return false;

fail:
    json_decref(all);
    sq_log(SQ_LOG_ERROR, "%s %s: out of memory validating the request", sq_req_method(x),
           sq__route_pattern(x->match.route));
    sq__h1_error(x, 500, json_string("Internal Server Error"));
    return false;
}

const void *sq_req_input(const sq_req_t *req)
{
    return req->input;
}

const json_t *sq_req_input_json(const sq_req_t *req, const char *part)
{
    if (part == NULL || req->match.op == NULL)
        return NULL;
    if (strcmp(part, "path") == 0)
        return req->in_path;
    if (strcmp(part, "query") == 0)
        return req->in_query;
    if (strcmp(part, "body") == 0)
        return req->in_body;
    return NULL;
}
