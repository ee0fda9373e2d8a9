/* The OpenAPI 3.1.0 document of an app's routes, written as FastAPI writes its own
 * (fastapi.openapi.utils.get_openapi), so that a client generator or a reader who knows
 * FastAPI's finds the same shapes. docs/openapi.md lists every choice made here. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/abi.h"
#include "openapi/openapi_int.h"

#define REF_PREFIX "#/components/schemas/"
#define MAX_DEPTH 32 /* nested schemas deeper than this are not expanded (a cycle) */

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

typedef struct doc {
    json_t *paths;
    json_t *defs;    /* components.schemas */
    json_t *op_ids;  /* operationIds given so far (a set) */
    json_t *shapes;  /* shape -> [key, name...] */
    bool validation; /* some operation answers 422 */
    bool oom;
} doc_t;

/* ---- small JSON helpers that remember a failure ---- */

static void put(doc_t *d, json_t *obj, const char *key, json_t *val)
{
    if (val == NULL || obj == NULL || json_object_set_new(obj, key, val) != 0)
        d->oom = true;
}

static void push(doc_t *d, json_t *arr, json_t *val)
{
    if (val == NULL || arr == NULL || json_array_append_new(arr, val) != 0)
        d->oom = true;
}

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
static void tmpl_unify(doc_t *d, tmpl_t *t)
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
    push(d, entry, json_string(t->key));
    for (unsigned i = 0; i < t->n; i++)
        push(d, entry, json_string(t->p[i].out));
    put(d, d->shapes, t->shape, entry);
}

/* ---- schemas ---- */

/* Whether the schemas reachable from a table refer back to one on the way (a tree's
 * node refers to itself) or nest deeper than MAX_DEPTH: lib/schema would recurse
 * without end writing them. Depth first, each table checked once (`ok` remembers those
 * found fine), so a table that refers to itself twice costs no more than once. */
typedef struct walk {
    const sq_schema_t *stack[MAX_DEPTH + 1];
    unsigned depth;
    const sq_schema_t *ok[1024];
    unsigned nok;
} walk_t;

static bool field_loops(walk_t *w, const sq_field_t *f);

static bool schema_loops(walk_t *w, const sq_schema_t *s)
{
    for (unsigned i = 0; i < w->depth; i++)
        if (w->stack[i] == s)
            return true;
    for (unsigned i = 0; i < w->nok; i++)
        if (w->ok[i] == s)
            return false;
    if (w->depth == MAX_DEPTH)
        return true;
    w->stack[w->depth++] = s;
    bool loops = false;
    for (const sq_field_t *f = s->fields; f != NULL && f->name != NULL && !loops; f++)
        loops = field_loops(w, f);
    w->depth--;
    if (!loops && w->nok < SQ__ARRAY_SIZE(w->ok))
        w->ok[w->nok++] = s;
    return loops;
}

static bool field_loops(walk_t *w, const sq_field_t *f)
{
    for (unsigned hops = 0; f != NULL; hops++, f = f->items) { /* arrays of arrays of ... */
        if (hops > MAX_DEPTH)
            return true;
        if (f->type == SQ_T_OBJECT)
            return f->object != NULL && schema_loops(w, f->object);
        if (f->type != SQ_T_ARRAY)
            return false;
    }
    return false;
}

static bool field_too_deep(const sq_field_t *f)
{
    walk_t *w = calloc(1, sizeof(*w));
    bool loops = w == NULL || field_loops(w, f);
    free(w);
    return loops;
}

static bool schema_too_deep(const sq_schema_t *s)
{
    walk_t *w = calloc(1, sizeof(*w));
    bool loops = w == NULL || schema_loops(w, s);
    free(w);
    return loops;
}

/* A components key: OpenAPI 3.1 §4.8.7 wants ^[a-zA-Z0-9.\-_]+$. */
static void component_name(char *out, size_t cap, const char *title)
{
    size_t o = 0;
    for (const char *s = title; *s != '\0' && o + 1 < cap; s++) {
        unsigned char ch = (unsigned char)*s;
        out[o++] =
            ch < 0x80 && (isalnum(ch) || ch == '.' || ch == '-' || ch == '_') ? (char)ch : '_';
    }
    if (o == 0 && cap > 1)
        out[o++] = '_';
    out[o] = '\0';
}

/* Rewrites every {"$ref": "#/components/schemas/<old>"} under j by `renames`
 * (old -> new). */
static void rewrite_refs(doc_t *d, json_t *j, const json_t *renames)
{
    if (json_is_array(j)) {
        size_t i;
        json_t *v;
        json_array_foreach(j, i, v) rewrite_refs(d, v, renames);
        return;
    }
    if (!json_is_object(j))
        return;
    const char *key;
    json_t *v;
    json_object_foreach(j, key, v)
    {
        const char *ref = json_string_value(v);
        if (strcmp(key, "$ref") != 0 || ref == NULL) {
            rewrite_refs(d, v, renames);
            continue;
        }
        if (strncmp(ref, REF_PREFIX, strlen(REF_PREFIX)) != 0)
            continue;
        const char *to = json_string_value(json_object_get(renames, ref + strlen(REF_PREFIX)));
        if (to == NULL)
            continue;
        json_t *now = json_sprintf(REF_PREFIX "%s", to);
        if (now == NULL || json_string_set(v, json_string_value(now)) != 0)
            d->oom = true;
        json_decref(now);
    }
}

/* Keys of an object, sorted (jansson keeps insertion order; FastAPI sorts the
 * components). A new array of strings. */
static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static const char **sorted_keys(const json_t *o, size_t *n)
{
    *n = json_object_size(o);
    const char **keys = malloc((*n + 1) * sizeof(*keys));
    if (keys == NULL)
        return NULL;
    size_t i = 0;
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)o, k, v) keys[i++] = k;
    qsort(keys, *n, sizeof(*keys), cmp_str);
    return keys;
}

/* Whether local[key] may take the components name `cand`: no other schema of local
 * has it, and the components lack it or hold the very same schema under it. */
static bool name_fits(doc_t *d, json_t *local, const json_t *renames, const char *key,
                      const char *cand)
{
    const char *o;
    json_t *v;
    json_object_foreach((json_t *)renames, o, v)
    {
        if (strcmp(o, key) != 0 && strcmp(json_string_value(v), cand) == 0)
            return false;
    }
    json_t *there = json_object_get(d->defs, cand);
    if (there == NULL)
        return true;
    json_t *mine = json_deep_copy(json_object_get(local, key));
    rewrite_refs(d, mine, renames);
    bool same = mine != NULL && json_equal(mine, there);
    json_decref(mine);
    return same;
}

/* Moves the schemas of `local` (made for one body, response or parameter) into the
 * document's components. A name is made a valid components key; one the components
 * already hold for a different schema (two tables of one title) is renamed Name_2,
 * Name_3, ... in the order the document meets them, and the references follow.
 * Returns the renames (old -> new), a new reference, or NULL out of memory. */
static json_t *merge_defs(doc_t *d, json_t *local)
{
    json_t *renames = json_object();
    size_t n;
    const char **keys = sorted_keys(local, &n);
    if (renames == NULL || keys == NULL) {
        d->oom = true;
        free(keys);
        json_decref(renames);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        char name[256];
        component_name(name, sizeof(name), keys[i]);
        put(d, renames, keys[i], json_string(name));
    }
    /* A schema's content depends on the names of the schemas it refers to: settle the
     * names in a few rounds (each only moves a name that no longer fits). */
    for (int round = 0; round < 8 && !d->oom; round++) {
        bool changed = false;
        for (size_t i = 0; i < n; i++) {
            const char *cur = json_string_value(json_object_get(renames, keys[i]));
            if (cur == NULL || name_fits(d, local, renames, keys[i], cur))
                continue;
            char base[256], cand[300];
            component_name(base, sizeof(base), keys[i]);
            snprintf(cand, sizeof(cand), "%s", base);
            for (unsigned k = 2; !name_fits(d, local, renames, keys[i], cand); k++)
                snprintf(cand, sizeof(cand), "%s_%u", base, k);
            put(d, renames, keys[i], json_string(cand));
            changed = true;
        }
        if (!changed)
            break;
    }
    for (size_t i = 0; i < n; i++) {
        const char *to = json_string_value(json_object_get(renames, keys[i]));
        json_t *s = json_object_get(local, keys[i]);
        if (to == NULL || s == NULL)
            continue;
        rewrite_refs(d, s, renames);
        if (json_object_get(d->defs, to) == NULL)
            put(d, d->defs, to, json_incref(s));
    }
    free(keys);
    return renames;
}

/* The schema of a field (a parameter), its nested objects into the components. */
static json_t *field_schema(doc_t *d, const sq_field_t *f)
{
    if (field_too_deep(f))
        return json_pack("{s:s}", "type", "object");
    json_t *local = json_object();
    json_t *s = local ? sq_field_to_json_schema(f, REF_PREFIX, local) : NULL;
    json_t *renames = s ? merge_defs(d, local) : NULL;
    if (renames != NULL)
        rewrite_refs(d, s, renames);
    json_decref(renames);
    json_decref(local);
    if (s == NULL)
        d->oom = true;
    return s;
}

/* A body's or a response's schema: a reference to it in the components (FastAPI's
 * models), or the schema inline when it has no title to be named by. */
static json_t *schema_ref(doc_t *d, const sq_schema_t *s)
{
    if (schema_too_deep(s))
        return s->title ? json_pack("{s:s,s:s}", "type", "object", "title", s->title)
                        : json_pack("{s:s}", "type", "object");
    json_t *local = json_object(), *out = NULL;
    if (local == NULL)
        goto fail;
    json_t *j = sq_schema_to_json_schema(s, REF_PREFIX, local);
    if (j == NULL)
        goto fail;
    if (s->title == NULL) {
        out = j;
    } else {
        /* A nested table of the same title (already in local) is another schema: the
         * body's own takes a fresh name. */
        char own[300];
        snprintf(own, sizeof(own), "%s", s->title);
        for (unsigned k = 2; json_object_get(local, own) != NULL; k++)
            snprintf(own, sizeof(own), "%.250s_%u", s->title, k);
        put(d, local, own, j);
        out = json_object();
        put(d, out, "$ref", json_sprintf(REF_PREFIX "%s", own));
    }
    json_t *renames = merge_defs(d, local);
    if (renames != NULL)
        rewrite_refs(d, out, renames);
    json_decref(renames);
    json_decref(local);
    return out;
fail:
    json_decref(local);
    d->oom = true;
    return NULL;
}

/* FastAPI's models.Schema drops every member whose value is None (the document is
 * dumped with exclude_none), so a `= None` default is not written: `"default": null`
 * is removed wherever it stands. */
static void drop_null_defaults(json_t *j)
{
    if (json_is_array(j)) {
        size_t i;
        json_t *v;
        json_array_foreach(j, i, v) drop_null_defaults(v);
        return;
    }
    if (!json_is_object(j))
        return;
    if (json_is_null(json_object_get(j, "default")))
        json_object_del(j, "default");
    const char *k;
    json_t *v;
    json_object_foreach(j, k, v) drop_null_defaults(v);
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
static json_t *operation_id(doc_t *d, const sq_op_t *op, const method_t *m, const tmpl_t *t)
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
    put(d, d->op_ids, id, json_true());
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
static json_t *parameters(doc_t *d, const sq_op_t *op, const tmpl_t *t)
{
    json_t *list = json_array();
    for (unsigned i = 0; i < t->n; i++) {
        const sq_field_t *f = op ? find_field(op->path, t->p[i].decl) : NULL;
        json_t *schema;
        if (f != NULL) {
            schema = field_schema(d, f);
        } else {
            sq_field_t synth = {.name = t->p[i].decl[0] == '*' ? t->p[i].out : t->p[i].decl,
                                .type = t->p[i].kind == P_INT ? SQ_T_INTEGER : SQ_T_STRING};
            schema = sq_field_to_json_schema(&synth, NULL, NULL);
        }
        json_t *p = json_object();
        put(d, p, "name", json_string(t->p[i].out));
        put(d, p, "in", json_string("path"));
        put(d, p, "required", json_true());
        put(d, p, "schema", schema);
        if (f != NULL && f->description != NULL)
            put(d, p, "description", json_string(f->description));
        push(d, list, p);
    }
    for (const sq_field_t *f = op ? op->query : NULL; f != NULL && f->name != NULL; f++) {
        if (find_field(op->query, f->name) != f)
            continue; /* a name twice: the first is the one validated */
        json_t *p = json_object();
        put(d, p, "name", json_string(f->name));
        put(d, p, "in", json_string("query"));
        put(d, p, "required", json_boolean(f->default_json == NULL));
        put(d, p, "schema", field_schema(d, f));
        if (f->description != NULL)
            put(d, p, "description", json_string(f->description));
        push(d, list, p);
    }
    return list;
}

/* FastAPI's is_body_allowed_for_status_code. */
static bool body_allowed(int status)
{
    return !(status < 200 || status == 204 || status == 205 || status == 304);
}

static json_t *operation(doc_t *d, const sq_op_t *op, const method_t *m, const tmpl_t *t)
{
    json_t *o = json_object();
    if (op != NULL && op->tags != NULL && op->tags[0] != NULL) {
        json_t *tags = json_array();
        for (const char *const *tag = op->tags; *tag != NULL; tag++)
            push(d, tags, json_string(*tag));
        put(d, o, "tags", tags);
    }
    if (op != NULL && op->summary != NULL) {
        put(d, o, "summary", json_string(op->summary));
    } else {
        char summary[1400];
        derive_summary(summary, sizeof(summary), m, t);
        put(d, o, "summary", json_string(summary));
    }
    if (op != NULL && op->description != NULL)
        put(d, o, "description", json_string(op->description));
    put(d, o, "operationId", operation_id(d, op, m, t));
    if (op != NULL && op->deprecated)
        put(d, o, "deprecated", json_true());

    json_t *params = parameters(d, op, t);
    bool inputs = json_array_size(params) > 0;
    if (inputs)
        put(d, o, "parameters", params);
    else
        json_decref(params);

    if (op != NULL && op->body != NULL) {
        inputs = true;
        json_t *rb = json_object(), *schema = schema_ref(d, op->body);
        if (op->body_optional) {
            /* FastAPI's `item: Item | None = None`: nullable, not required */
            schema = json_pack("{s:[o,{s:s}]}", "anyOf", schema, "type", "null");
            if (schema != NULL && op->body->title != NULL)
                put(d, schema, "title", json_string(op->body->title));
        } else {
            put(d, rb, "required", json_true());
        }
        put(d, rb, "content", json_pack("{s:{s:o}}", "application/json", "schema", schema));
        put(d, o, "requestBody", rb);
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
    put(d, ok, "description", json_string(desc));
    if (body_allowed(status)) {
        json_t *schema =
            op != NULL && op->response != NULL ? schema_ref(d, op->response) : json_object();
        put(d, ok, "content", json_pack("{s:{s:o}}", "application/json", "schema", schema));
    }
    put(d, responses, key, ok);
    if (inputs && strcmp(key, "422") != 0) {
        put(d, responses, "422",
            json_pack("{s:s,s:{s:{s:{s:s}}}}", "description", "Validation Error", "content",
                      "application/json", "schema", "$ref", REF_PREFIX "HTTPValidationError"));
        d->validation = true;
    }
    put(d, o, "responses", responses);
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
                     REF_PREFIX "ValidationError", "type", "array", "title", "Detail", "type",
                     "object", "title", "HTTPValidationError");
}

static void add_route(doc_t *d, const sq__route_t *r)
{
    if (sq__route_is_ws(r)) /* no HTTP operation: FastAPI leaves WebSocket routes out */
        return;
    const sq_handler_t *h = sq__route_handler(r);
    tmpl_t t;
    if (!tmpl_parse(sq__route_pattern(r), &t))
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
            put(d, d->paths, t.key, item);
            if (d->oom)
                return;
        }
        /* The same path and method twice: the first route serves it (the router tries
         * routes in order), so the first is the one described. */
        if (json_object_get(item, m->name) != NULL)
            continue;
        put(d, item, m->name, operation(d, op, m, &t));
    }
}

static json_t *sorted_object(doc_t *d, json_t *o)
{
    size_t n;
    const char **keys = sorted_keys(o, &n);
    json_t *out = json_object();
    if (keys == NULL || out == NULL) {
        d->oom = true;
        free(keys);
        return out;
    }
    for (size_t i = 0; i < n; i++)
        put(d, out, keys[i], json_incref(json_object_get(o, keys[i])));
    free(keys);
    return out;
}

json_t *sq__openapi_build(const sq_app_t *app, const sq_openapi_opts_t *opts)
{
    doc_t d = {.paths = json_object(),
               .defs = json_object(),
               .op_ids = json_object(),
               .shapes = json_object()};
    json_t *doc = json_object();
    if (doc == NULL || d.paths == NULL || d.defs == NULL || d.op_ids == NULL || d.shapes == NULL)
        d.oom = true;
    unsigned n = app != NULL ? sq__app_nroutes(app) : 0;
    for (unsigned i = 0; i < n && !d.oom; i++)
        add_route(&d, sq__app_route_at(app, i));
    if (d.validation) {
        put(&d, d.defs, "HTTPValidationError", http_validation_error_schema());
        put(&d, d.defs, "ValidationError", validation_error_schema());
    }
    json_t *info = json_object();
    put(&d, info, "title", json_string(opts->title ? opts->title : "squall"));
    if (opts->description != NULL)
        put(&d, info, "description", json_string(opts->description));
    put(&d, info, "version", json_string(opts->version ? opts->version : "0.1.0"));
    put(&d, doc, "openapi", json_string("3.1.0"));
    put(&d, doc, "info", info);
    put(&d, doc, "paths", json_incref(d.paths));
    if (json_object_size(d.defs) > 0)
        put(&d, doc, "components", json_pack("{s:o}", "schemas", sorted_object(&d, d.defs)));
    drop_null_defaults(json_object_get(doc, "paths"));
    drop_null_defaults(json_object_get(doc, "components"));
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
