/* The OpenAPI 3.1.0 document of an app's routes, written as FastAPI writes its own
 * (fastapi.openapi.utils.get_openapi), so that a client generator or a reader who knows
 * FastAPI's finds the same shapes. docs/openapi.md lists every choice made here. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/abi.h"
#include "openapi/openapi_int.h"

typedef enum { P_STR, P_INT, P_PATH } pkind_t;

/* One route's pattern, split: the path key of the document and its parameters. */
typedef struct tmpl {
    char key[1024];   /* "/items/{item_id}" */
    char shape[1024]; /* "/items/{}": paths that differ only by names are one path */
    unsigned n;
    struct {
        char decl[128]; /* the pattern's name (what op->path fields are matched by) */
        char out[128];  /* the name written (the key's, which may be another route's) */
        pkind_t kind;
    } p[SQ__MAX_PARAMS];
} tmpl_t;

static bool is_word(unsigned char ch)
{
    return ch < 0x80 && (isalnum(ch) || ch == '_');
}

/* Python's re.sub(r"\W", "_", s) for ASCII (a non-ASCII byte is one '_' each), appended
 * to out (cap bytes, NUL-terminated, cut when full); lowercased when `lower`. */
static void append_word(char *out, size_t cap, const char *s, bool lower)
{
    size_t o = strlen(out);
    for (; *s != '\0' && o + 1 < cap; s++) {
        unsigned char ch = (unsigned char)*s;
        out[o++] = is_word(ch) ? (char)(lower ? tolower(ch) : ch) : '_';
    }
    out[o] = '\0';
}

/* ---- the pattern ---- */

static bool name_used(const tmpl_t *t, unsigned upto, const char *name)
{
    for (unsigned i = 0; i < upto; i++)
        if (strcmp(t->p[i].out, name) == 0)
            return true;
    return false;
}

/* Splits a pattern the router accepted. `*` becomes a parameter named "path" ("path_",
 * ... if taken); a name used twice gets "_2", "_3", ... in the key (OpenAPI wants each
 * once). Returns false for a pattern too long to write (left out of the document). */
static bool tmpl_parse(const char *pattern, tmpl_t *t)
{
    memset(t, 0, sizeof(*t));
    size_t k = 0, s = 0;
    const char *p = pattern;
    while (*p == '/') {
        p++;
        const char *end = strchr(p, '/');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        char seg[1024];
        if (len + 3 >= sizeof(seg))
            return false;
        bool param = (len == 1 && p[0] == '*') || (len >= 3 && p[0] == '{' && p[len - 1] == '}');
        if (param) {
            if (t->n == SQ__MAX_PARAMS)
                return false;
            unsigned i = t->n++;
            pkind_t kind = P_STR;
            char name[128] = "path";
            if (p[0] == '{') {
                size_t nlen = len - 2;
                const char *colon = memchr(p + 1, ':', nlen);
                if (colon != NULL) {
                    kind = strncmp(colon + 1, "int}", 4) == 0    ? P_INT
                           : strncmp(colon + 1, "path}", 5) == 0 ? P_PATH
                                                                 : P_STR;
                    nlen = (size_t)(colon - (p + 1));
                }
                if (nlen >= sizeof(name))
                    return false;
                memcpy(name, p + 1, nlen);
                name[nlen] = '\0';
                snprintf(t->p[i].decl, sizeof(t->p[i].decl), "%s", name);
            } else {
                kind = P_PATH;
                snprintf(t->p[i].decl, sizeof(t->p[i].decl), "*");
                while (name_used(t, i, name) && strlen(name) + 1 < sizeof(name))
                    strcat(name, "_");
            }
            t->p[i].kind = kind;
            snprintf(t->p[i].out, sizeof(t->p[i].out), "%s", name);
            for (unsigned n = 2; name_used(t, i, t->p[i].out); n++)
                snprintf(t->p[i].out, sizeof(t->p[i].out), "%.100s_%u", name, n);
            snprintf(seg, sizeof(seg), "{%s}", t->p[i].out);
        } else {
            memcpy(seg, p, len);
            seg[len] = '\0';
        }
        size_t sl = strlen(seg);
        if (k + sl + 2 >= sizeof(t->key) || s + len + 4 >= sizeof(t->shape))
            return false;
        t->key[k++] = '/';
        memcpy(t->key + k, seg, sl + 1);
        k += sl;
        t->shape[s++] = '/';
        if (param) {
            memcpy(t->shape + s, "{}", 3);
            s += 2;
        } else {
            memcpy(t->shape + s, p, len);
            s += len;
            t->shape[s] = '\0';
        }
        if (end == NULL)
            break;
        p = end;
    }
    if (k == 0) /* "/" alone */
        snprintf(t->key, sizeof(t->key), "/");
    if (s == 0)
        snprintf(t->shape, sizeof(t->shape), "/");
    return true;
}

/* A route whose path differs from an earlier one's only by its parameters' names is
 * written under the earlier key, its parameters renamed by position: OpenAPI 3.1 §4.8.8
 * ("templated paths with the same hierarchy but different templated names MUST NOT
 * exist"). */
static void tmpl_unify(sq__openapi_doc_t *d, tmpl_t *t)
{
    json_t *known = json_object_get(d->shapes, t->shape);
    if (known != NULL) {
        snprintf(t->key, sizeof(t->key), "%s", json_string_value(json_array_get(known, 0)));
        for (unsigned i = 0; i < t->n; i++)
            snprintf(t->p[i].out, sizeof(t->p[i].out), "%s",
                     json_string_value(json_array_get(known, i + 1)));
        return;
    }
    json_t *entry = json_array();
    sq__openapi_push(d, entry, json_string(t->key));
    for (unsigned i = 0; i < t->n; i++)
        sq__openapi_push(d, entry, json_string(t->p[i].out));
    sq__openapi_put(d, d->shapes, t->shape, entry);
}

/* ---- operations ---- */

typedef struct method {
    const char *name; /* OpenAPI's, lowercase */
    sq_method_t m;
} method_t;

/* The methods a path item lists, in OpenAPI's order; FastAPI lists no HEAD or OPTIONS. */
static const method_t methods[] = {{"get", SQ_METHOD_GET},
                                   {"put", SQ_METHOD_PUT},
                                   {"post", SQ_METHOD_POST},
                                   {"delete", SQ_METHOD_DELETE},
                                   {"patch", SQ_METHOD_PATCH}};

static bool serves(const sq_handler_t *h, sq_method_t m)
{
    switch (m) {
    case SQ_METHOD_GET:
        return h->get || h->blocking.get;
    case SQ_METHOD_PUT:
        return h->put || h->blocking.put;
    case SQ_METHOD_POST:
        return h->post || h->blocking.post;
    case SQ_METHOD_DELETE:
        return h->del || h->blocking.del;
    case SQ_METHOD_PATCH:
        return h->patch || h->blocking.patch;
    default:
        return false;
    }
}

/* pydantic's title of a name ("get items item_id" -> "Get Items Item Id"): words of
 * letters and digits, each capitalised, joined by one space. */
static void title_words(char *out, size_t cap, const char *s)
{
    size_t o = strlen(out);
    bool in_word = false;
    for (; *s != '\0' && o + 2 < cap; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch >= 0x80 || isalnum(ch)) {
            if (!in_word && o > 0 && out[o - 1] != ' ')
                out[o++] = ' ';
            out[o++] = ch < 0x80 ? (char)(in_word ? tolower(ch) : toupper(ch)) : (char)ch;
            in_word = ch < 0x80 && isalpha(ch);
            if (ch < 0x80 && isdigit(ch))
                in_word = true;
        } else {
            in_word = false;
        }
    }
    out[o] = '\0';
}

/* FastAPI's summary is the endpoint's name, title-cased ("read_item" -> "Read Item");
 * without a name: the method and the path's words ("Get Items Item Id"; "/" is
 * "Get Root"). */
static void derive_summary(char *out, size_t cap, const method_t *m, const tmpl_t *t)
{
    out[0] = '\0';
    title_words(out, cap, m->name);
    size_t before = strlen(out);
    title_words(out, cap, t->key);
    if (strlen(out) == before)
        title_words(out, cap, "root");
}

/* FastAPI's generate_unique_id: re.sub(r"\W", "_", name + path) + "_" + method. The
 * name is the op's summary, lowercased ("Read Item" -> read_item_items__item_id__get);
 * without a summary, the path alone without its leading '_' (items__item_id__get;
 * "/" is root_get). Made unique with _2, _3, ... */
static json_t *operation_id(sq__openapi_doc_t *d, const sq_op_t *op, const method_t *m,
                            const tmpl_t *t)
{
    char base[1400] = "";
    if (op != NULL && op->operation_id != NULL) {
        snprintf(base, sizeof(base), "%s", op->operation_id);
    } else {
        if (op != NULL && op->summary != NULL)
            append_word(base, 256, op->summary, true);
        append_word(base, sizeof(base) - 16, t->key, false);
        if (op == NULL || op->summary == NULL) {
            size_t skip = strspn(base, "_");
            memmove(base, base + skip, strlen(base + skip) + 1);
            if (base[0] == '\0')
                snprintf(base, sizeof(base), "root");
        }
        size_t n = strlen(base);
        snprintf(base + n, sizeof(base) - n, "_%s", m->name);
    }
    char id[1500];
    snprintf(id, sizeof(id), "%s", base);
    for (unsigned k = 2; json_object_get(d->op_ids, id) != NULL; k++)
        snprintf(id, sizeof(id), "%s_%u", base, k);
    sq__openapi_put(d, d->op_ids, id, json_true());
    return json_string(id);
}

static const sq_field_t *find_field(const sq_field_t *table, const char *name)
{
    for (const sq_field_t *f = table; f != NULL && f->name != NULL; f++)
        if (strcmp(f->name, name) == 0)
            return f;
    return NULL;
}

/* Path parameters in the pattern's order (the op's field where one is declared; else
 * integer for {x:int}, string otherwise), then the op's query parameters in its order.
 * A path field the pattern lacks is left out: no request can give it. */
static json_t *parameters(sq__openapi_doc_t *d, const sq_op_t *op, const tmpl_t *t)
{
    json_t *list = json_array();
    for (unsigned i = 0; i < t->n; i++) {
        const sq_field_t *f = op ? find_field(op->path, t->p[i].decl) : NULL;
        json_t *schema;
        if (f != NULL) {
            schema = sq__openapi_field_schema(d, f);
        } else {
            sq_field_t synth = {.name = t->p[i].decl[0] == '*' ? t->p[i].out : t->p[i].decl,
                                .type = t->p[i].kind == P_INT ? SQ_T_INTEGER : SQ_T_STRING};
            schema = sq_field_to_json_schema(&synth, NULL, NULL);
        }
        json_t *p = json_object();
        sq__openapi_put(d, p, "name", json_string(t->p[i].out));
        sq__openapi_put(d, p, "in", json_string("path"));
        sq__openapi_put(d, p, "required", json_true());
        sq__openapi_put(d, p, "schema", schema);
        if (f != NULL && f->description != NULL)
            sq__openapi_put(d, p, "description", json_string(f->description));
        sq__openapi_push(d, list, p);
    }
    for (const sq_field_t *f = op ? op->query : NULL; f != NULL && f->name != NULL; f++) {
        if (find_field(op->query, f->name) != f)
            continue; /* a name twice: the first is the one validated */
        json_t *p = json_object();
        sq__openapi_put(d, p, "name", json_string(f->name));
        sq__openapi_put(d, p, "in", json_string("query"));
        sq__openapi_put(d, p, "required", json_boolean(f->default_json == NULL));
        sq__openapi_put(d, p, "schema", sq__openapi_field_schema(d, f));
        if (f->description != NULL)
            sq__openapi_put(d, p, "description", json_string(f->description));
        sq__openapi_push(d, list, p);
    }
    return list;
}

/* FastAPI's is_body_allowed_for_status_code. */
static bool body_allowed(int status)
{
    return !(status < 200 || status == 204 || status == 205 || status == 304);
}

static json_t *operation(sq__openapi_doc_t *d, const sq_op_t *op, const method_t *m,
                         const tmpl_t *t)
{
    json_t *o = json_object();
    if (op != NULL && op->tags != NULL && op->tags[0] != NULL) {
        json_t *tags = json_array();
        for (const char *const *tag = op->tags; *tag != NULL; tag++)
            sq__openapi_push(d, tags, json_string(*tag));
        sq__openapi_put(d, o, "tags", tags);
    }
    if (op != NULL && op->summary != NULL) {
        sq__openapi_put(d, o, "summary", json_string(op->summary));
    } else {
        char summary[1400];
        derive_summary(summary, sizeof(summary), m, t);
        sq__openapi_put(d, o, "summary", json_string(summary));
    }
    if (op != NULL && op->description != NULL)
        sq__openapi_put(d, o, "description", json_string(op->description));
    sq__openapi_put(d, o, "operationId", operation_id(d, op, m, t));
    if (op != NULL && op->deprecated)
        sq__openapi_put(d, o, "deprecated", json_true());

    json_t *params = parameters(d, op, t);
    bool inputs = json_array_size(params) > 0;
    if (inputs)
        sq__openapi_put(d, o, "parameters", params);
    else
        json_decref(params);

    if (op != NULL && op->body != NULL) {
        inputs = true;
        json_t *rb = json_object(), *schema = sq__openapi_schema_ref(d, op->body);
        if (op->body_optional) {
            /* FastAPI's `item: Item | None = None`: nullable, not required */
            schema = json_pack("{s:[o,{s:s}]}", "anyOf", schema, "type", "null");
            if (schema != NULL && op->body->title != NULL)
                sq__openapi_put(d, schema, "title", json_string(op->body->title));
        } else {
            sq__openapi_put(d, rb, "required", json_true());
        }
        sq__openapi_put(d, rb, "content",
                        json_pack("{s:{s:o}}", "application/json", "schema", schema));
        sq__openapi_put(d, o, "requestBody", rb);
    }

    int status = op != NULL && op->status != 0 ? op->status : 200;
    char key[16];
    if (status >= 100 && status <= 599)
        snprintf(key, sizeof(key), "%d", status);
    else
        snprintf(key, sizeof(key), "default");
    json_t *responses = json_object(), *ok = json_object();
    const char *desc = op != NULL && op->response_description != NULL ? op->response_description
                                                                      : "Successful Response";
    sq__openapi_put(d, ok, "description", json_string(desc));
    if (body_allowed(status)) {
        json_t *schema = op != NULL && op->response != NULL
                             ? sq__openapi_schema_ref(d, op->response)
                             : json_object();
        sq__openapi_put(d, ok, "content",
                        json_pack("{s:{s:o}}", "application/json", "schema", schema));
    }
    sq__openapi_put(d, responses, key, ok);
    if (inputs && strcmp(key, "422") != 0) {
        sq__openapi_put(d, responses, "422",
                        json_pack("{s:s,s:{s:{s:{s:s}}}}", "description", "Validation Error",
                                  "content", "application/json", "schema", "$ref",
                                  SQ__OPENAPI_REF "HTTPValidationError"));
        d->validation = true;
    }
    sq__openapi_put(d, o, "responses", responses);
    return o;
}

/* FastAPI's HTTPValidationError and ValidationError (fastapi/openapi/utils.py), key for
 * key as FastAPI 0.110-0.115 writes them. */
static json_t *validation_error_schema(void)
{
    return json_pack("{s:{s:{s:{s:[{s:s},{s:s}]},s:s,s:s},s:{s:s,s:s},s:{s:s,s:s}},"
                     "s:s,s:[s,s,s],s:s}",
                     "properties", "loc", "items", "anyOf", "type", "string", "type", "integer",
                     "type", "array", "title", "Location", "msg", "type", "string", "title",
                     "Message", "type", "type", "string", "title", "Error Type", "type", "object",
                     "required", "loc", "msg", "type", "title", "ValidationError");
}

static json_t *http_validation_error_schema(void)
{
    return json_pack("{s:{s:{s:{s:s},s:s,s:s}},s:s,s:s}", "properties", "detail", "items", "$ref",
                     SQ__OPENAPI_REF "ValidationError", "type", "array", "title", "Detail", "type",
                     "object", "title", "HTTPValidationError");
}

static void add_route(sq__openapi_doc_t *d, const sq__route_t *r, const char *prefix)
{
    if (sq__route_is_ws(r)) /* no HTTP operation: FastAPI leaves WebSocket routes out */
        return;
    const sq_handler_t *h = sq__route_handler(r);
    tmpl_t t;
    /* a sub-app's route under its mount's prefix: its "/" is the prefix itself */
    const char *pattern = sq__route_pattern(r);
    char full[2048];
    if (snprintf(full, sizeof(full), "%s%s", prefix,
                 *prefix != '\0' && strcmp(pattern, "/") == 0 ? "" : pattern) >=
        (int)sizeof(full))
        return;
    if (!tmpl_parse(full, &t))
        return;
    bool unified = false;
    for (size_t i = 0; i < SQ__ARRAY_SIZE(methods); i++) {
        const method_t *m = &methods[i];
        const sq_op_t *op = sq__handler_op(h, m->m);
        if (!serves(h, m->m) || (op != NULL && op->hidden))
            continue;
        if (!unified) {
            tmpl_unify(d, &t);
            unified = true;
        }
        json_t *item = json_object_get(d->paths, t.key);
        if (item == NULL) {
            item = json_object();
            sq__openapi_put(d, d->paths, t.key, item);
            if (d->oom)
                return;
        }
        /* The same path and method twice: the first route serves it (the router tries
         * routes in order), so the first is the one described. */
        if (json_object_get(item, m->name) != NULL)
            continue;
        sq__openapi_put(d, item, m->name, operation(d, op, m, &t));
    }
}

/* The routes of app and, through its mounts, of its sub-apps, in the router's order. */
static void add_routes(sq__openapi_doc_t *d, const sq_app_t *app, const char *prefix)
{
    unsigned n = sq__app_nroutes(app);
    for (unsigned i = 0; i < n && !d->oom; i++) {
        const sq__route_t *r = sq__app_route_at(app, i);
        const char *mprefix;
        const sq_app_t *sub = sq__route_sub(r, &mprefix);
        if (sub == NULL) {
            add_route(d, r, prefix);
            continue;
        }
        char p[2048];
        if (snprintf(p, sizeof(p), "%s%s", prefix, mprefix) < (int)sizeof(p))
            add_routes(d, sub, p);
    }
}

json_t *sq__openapi_build(const sq_app_t *app, const sq_openapi_opts_t *opts)
{
    sq__openapi_doc_t d = {.paths = json_object(),
                           .defs = json_object(),
                           .op_ids = json_object(),
                           .shapes = json_object()};
    json_t *doc = json_object();
    if (doc == NULL || d.paths == NULL || d.defs == NULL || d.op_ids == NULL || d.shapes == NULL)
        d.oom = true;
    if (app != NULL)
        add_routes(&d, app, "");
    if (d.validation) {
        sq__openapi_put(&d, d.defs, "HTTPValidationError", http_validation_error_schema());
        sq__openapi_put(&d, d.defs, "ValidationError", validation_error_schema());
    }
    json_t *info = json_object();
    sq__openapi_put(&d, info, "title", json_string(opts->title ? opts->title : "squall"));
    if (opts->description != NULL)
        sq__openapi_put(&d, info, "description", json_string(opts->description));
    sq__openapi_put(&d, info, "version", json_string(opts->version ? opts->version : "0.1.0"));
    sq__openapi_put(&d, doc, "openapi", json_string("3.1.0"));
    sq__openapi_put(&d, doc, "info", info);
    sq__openapi_put(&d, doc, "paths", json_incref(d.paths));
    if (json_object_size(d.defs) > 0)
        sq__openapi_put(&d, doc, "components",
                        json_pack("{s:o}", "schemas", sq__openapi_sorted(&d, d.defs)));
    sq__openapi_drop_null_defaults(json_object_get(doc, "paths"));
    sq__openapi_drop_null_defaults(json_object_get(doc, "components"));
    json_decref(d.paths);
    json_decref(d.defs);
    json_decref(d.op_ids);
    json_decref(d.shapes);
    if (d.oom) {
        json_decref(doc);
        return NULL;
    }
    return doc;
}

void sq__openapi_opts_defaults(sq_openapi_opts_t *o)
{
    memset(o, 0, sizeof(*o));
    o->size = sizeof(*o);
    o->title = "squall";
    o->version = "0.1.0";
    o->openapi_url = "/openapi.json";
    o->docs_url = "/docs";
}

void sq_openapi_opts_init_sized(sq_openapi_opts_t *opts, size_t size)
{
    sq_openapi_opts_t d;
    sq__openapi_opts_defaults(&d);
    SQ__OPTS_INIT(opts, size, &d);
}

json_t *sq_openapi_document(const sq_app_t *app, const sq_openapi_opts_t *opts)
{
    sq_openapi_opts_t o;
    sq__openapi_opts_defaults(&o);
    if (opts != NULL && SQ__OPTS_IN(&o, opts) != 0)
        return NULL;
    return sq__openapi_build(app, &o);
}
