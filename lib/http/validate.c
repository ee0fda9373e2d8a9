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

/* The length of the well-formed UTF-8 sequence at p (RFC 3629 §4: no overlong forms, no
 * surrogates, nothing past U+10FFFF), or 0. */
static size_t utf8_seq(const unsigned char *p)
{
    size_t n = *p < 0x80 ? 1 : (*p & 0xe0) == 0xc0 ? 2 : (*p & 0xf0) == 0xe0 ? 3
             : (*p & 0xf8) == 0xf0 ? 4 : 0;
    uint32_t cp = n == 1 ? *p : n == 2 ? *p & 0x1fu : n == 3 ? *p & 0x0fu : *p & 0x07u;
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (p[i] & 0x3fu);
    }
    if (n == 0 || (n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) ||
        (n == 4 && cp < 0x10000) || (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
        return 0;
    return n;
}

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
        bad += (n = utf8_seq(p)) == 0;
    if (bad == 0)
        return s;
    char *out = sq__arena_alloc(&x->arena, strlen(s) + 2 * bad + 1), *o = out;
    if (out == NULL)
        return NULL;
    for (p = (const unsigned char *)s; *p != '\0'; p += n ? n : 1) {
        n = utf8_seq(p);
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

static const char *query_get(void *ctx, const char *name)
{
    return utf8_lossy(ctx, sq_req_query(ctx, name));
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
        all, json_pack("{s:s,s:[s,s],s:s,s:o}", "type", "int_parsing", "loc", "path",
                       x->match.bad_param, "msg",
                       "Input should be a valid integer, unable to parse string as an integer",
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
    if (len == 0 && op->body_optional) {
        x->in_body = json_null();
        return 0;
    }
    if (len == 0 || is_json_type(sq_req_header(x, "Content-Type"))) {
        rc = sq_schema_validate_text(op->body, body, len, "body", &x->in_body, &errors, bind);
    } else {
        json_t *text = json_stringn(body, len);
        rc = sq_schema_validate(op->body, text ? text : json_null(), "body", &x->in_body,
                                &errors, bind);
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
