/* The schemas of the document: bodies, responses and parameters written by lib/schema,
 * gathered into components.schemas under names that are valid and unique, with the
 * references following, as FastAPI's document has them (docs/openapi.md). */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>

#include "openapi/openapi_int.h"

/* Whether the schemas reachable from a table refer back to one on the way (a tree's
 * node refers to itself) or nest deeper than SQ__OPENAPI_MAX_DEPTH: lib/schema would recurse
 * without end writing them. Depth first, each table checked once (`ok` remembers those
 * found fine), so a table that refers to itself twice costs no more than once. */
typedef struct walk {
    const sq_schema_t *stack[SQ__OPENAPI_MAX_DEPTH + 1];
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
    if (w->depth == SQ__OPENAPI_MAX_DEPTH)
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
        if (hops > SQ__OPENAPI_MAX_DEPTH)
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
static void rewrite_refs(sq__openapi_doc_t *d, json_t *j, const json_t *renames)
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
        if (strncmp(ref, SQ__OPENAPI_REF, strlen(SQ__OPENAPI_REF)) != 0)
            continue;
        const char *to = json_string_value(json_object_get(renames, ref + strlen(SQ__OPENAPI_REF)));
        if (to == NULL)
            continue;
        json_t *now = json_sprintf(SQ__OPENAPI_REF "%s", to);
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
static bool name_fits(sq__openapi_doc_t *d, json_t *local, const json_t *renames, const char *key,
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
static json_t *merge_defs(sq__openapi_doc_t *d, json_t *local)
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
        sq__openapi_put(d, renames, keys[i], json_string(name));
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
            sq__openapi_put(d, renames, keys[i], json_string(cand));
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
            sq__openapi_put(d, d->defs, to, json_incref(s));
    }
    free(keys);
    return renames;
}

/* The schema of a field (a parameter), its nested objects into the components. */
json_t *sq__openapi_field_schema(sq__openapi_doc_t *d, const sq_field_t *f)
{
    if (field_too_deep(f))
        return json_pack("{s:s}", "type", "object");
    json_t *local = json_object();
    json_t *s = local ? sq_field_to_json_schema(f, SQ__OPENAPI_REF, local) : NULL;
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
json_t *sq__openapi_schema_ref(sq__openapi_doc_t *d, const sq_schema_t *s)
{
    if (schema_too_deep(s))
        return s->title ? json_pack("{s:s,s:s}", "type", "object", "title", s->title)
                        : json_pack("{s:s}", "type", "object");
    json_t *local = json_object(), *out = NULL;
    if (local == NULL)
        goto fail;
    json_t *j = sq_schema_to_json_schema(s, SQ__OPENAPI_REF, local);
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
        sq__openapi_put(d, local, own, j);
        out = json_object();
        sq__openapi_put(d, out, "$ref", json_sprintf(SQ__OPENAPI_REF "%s", own));
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
void sq__openapi_drop_null_defaults(json_t *j)
{
    if (json_is_array(j)) {
        size_t i;
        json_t *v;
        json_array_foreach(j, i, v) sq__openapi_drop_null_defaults(v);
        return;
    }
    if (!json_is_object(j))
        return;
    if (json_is_null(json_object_get(j, "default")))
        json_object_del(j, "default");
    const char *k;
    json_t *v;
    json_object_foreach(j, k, v) sq__openapi_drop_null_defaults(v);
}

json_t *sq__openapi_sorted(sq__openapi_doc_t *d, json_t *o)
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
        sq__openapi_put(d, out, keys[i], json_incref(json_object_get(o, keys[i])));
    free(keys);
    return out;
}
