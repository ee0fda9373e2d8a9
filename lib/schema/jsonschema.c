/* A declared schema as JSON Schema 2020-12 (the dialect of OpenAPI 3.1), written the way
 * pydantic v2 writes a model's, so that a document generated from it reads as FastAPI's. */
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "schema/schema_int.h"

/* pydantic's title for a field: name.title().replace('_', ' ') — "is_offer" is
 * "Is Offer". Non-ASCII bytes are copied and end a word. */
static json_t *title_from_name(const char *name)
{
    size_t n = strlen(name);
    char *t = malloc(n + 1);
    if (t == NULL)
        return NULL;
    bool in_word = false;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)name[i];
        if (ch < 0x80 && isalpha(ch)) {
            t[i] = (char)(in_word ? tolower(ch) : toupper(ch));
            in_word = true;
        } else {
            t[i] = ch == '_' ? ' ' : (char)ch;
            in_word = false;
        }
    }
    t[n] = '\0';
    json_t *j = json_string(t);
    free(t);
    return j;
}

static json_t *num_json(double v)
{
    return v == floor(v) && fabs(v) < 1e15 ? json_integer((json_int_t)v) : json_real(v);
}

static void put_limit(json_t *o, const char *key, const sq_limit_t *l)
{
    if (l->set)
        json_object_set_new(o, key, num_json(l->v));
}

static void put_len(json_t *o, const char *key, const sq_len_t *l)
{
    if (l->set)
        json_object_set_new(o, key, json_integer((json_int_t)l->n));
}

/* A walk through nested schemas: where references point, the $defs being filled, and the
 * schemas being written (a table may refer to itself, directly or not). */
#define MAX_DEPTH 32
typedef struct walk {
    const char *ref_prefix;
    json_t *defs;
    const sq_schema_t *stack[MAX_DEPTH];
    unsigned depth;
    unsigned arrays; /* lists within lists being written */
    json_t *seen;    /* "%p" of a table -> the name it got in defs: each is written once */
} walk_t;

static json_t *schema_js(walk_t *w, const sq_schema_t *s);
static json_t *field_js(walk_t *w, const sq_field_t *f);

static bool on_stack(const walk_t *w, const sq_schema_t *s)
{
    for (unsigned i = 0; i < w->depth; i++)
        if (w->stack[i] == s)
            return true;
    return false;
}

/* "#/components/schemas/" + the name, percent-encoded past RFC 3986's unreserved
 * characters (a fragment holding a JSON pointer: RFC 6901 §6). */
static json_t *ref_to(const walk_t *w, const char *name)
{
    const char *pre = w->ref_prefix != NULL ? w->ref_prefix : "";
    size_t n = strlen(pre), len = strlen(name);
    char *r = malloc(n + 3 * len + 1), *p = r;
    if (r == NULL)
        return NULL;
    memcpy(p, pre, n);
    p += n;
    for (const unsigned char *c = (const unsigned char *)name; *c; c++) {
        if (isalnum(*c) || *c == '-' || *c == '.' || *c == '_') {
            *p++ = (char)*c;
        } else {
            static const char hex[] = "0123456789ABCDEF";
            *p++ = '%';
            *p++ = hex[*c >> 4];
            *p++ = hex[*c & 15];
        }
    }
    *p = '\0';
    json_t *j = json_pack("{s:s}", "$ref", r);
    free(r);
    return j;
}

/* A nested schema in $defs: under its title, or Title_2, Title_3, ... when another table
 * of the same title wrote a different schema there. A table being written (a reference
 * to itself) finds its placeholder and points at it. */
static json_t *def_ref(walk_t *w, const sq_schema_t *s)
{
    char key[32];
    snprintf(key, sizeof(key), "%p", (const void *)s);
    const char *known = json_string_value(json_object_get(w->seen, key));
    if (known != NULL)
        return ref_to(w, known);
    json_t *ref = NULL, *mine = NULL;
    char name[256];
    for (unsigned k = 1; k < 1000; k++) {
        snprintf(name, sizeof(name), k == 1 ? "%s" : "%s_%u", s->title, k);
        json_t *have = json_object_get(w->defs, name);
        if (have == NULL) {
            if (mine == NULL) {
                json_object_set_new(w->defs, name, json_object()); /* the placeholder */
                mine = schema_js(w, s);
            }
            json_object_set_new(w->defs, name, mine ? mine : json_object());
            ref = ref_to(w, name);
            break;
        }
        if (json_object_size(have) == 0 && on_stack(w, s))
            return ref_to(w, name); /* itself, being written */
        if (mine == NULL && (mine = schema_js(w, s)) == NULL)
            return NULL;
        if (json_equal(have, mine)) {
            json_decref(mine);
            ref = ref_to(w, name);
            break;
        }
    }
    if (ref == NULL)
        return json_pack("{s:s}", "type", "object");
    json_object_set_new(w->seen, key, json_string(name));
    return ref;
}

/* The field's type with its constraints, before nullable, title and default. */
static json_t *type_schema(walk_t *w, const sq_field_t *f)
{
    json_t *o = json_object();
    if (o == NULL)
        return NULL;
    switch (f->type) {
    case SQ_T_STRING:
        json_object_set_new(o, "type", json_string("string"));
        put_len(o, "minLength", &f->min_length);
        put_len(o, "maxLength", &f->max_length);
        if (f->pattern != NULL)
            json_object_set_new(o, "pattern", json_string(f->pattern));
        if (f->format == SQ_FMT_UUID)
            json_object_set_new(o, "format", json_string("uuid"));
        else if (f->format == SQ_FMT_DATE)
            json_object_set_new(o, "format", json_string("date"));
        break;
    case SQ_T_INTEGER:
    case SQ_T_NUMBER:
        json_object_set_new(o, "type", json_string(f->type == SQ_T_INTEGER ? "integer" : "number"));
        put_limit(o, "minimum", &f->ge);
        put_limit(o, "exclusiveMinimum", &f->gt);
        put_limit(o, "maximum", &f->le);
        put_limit(o, "exclusiveMaximum", &f->lt);
        break;
    case SQ_T_BOOLEAN:
        json_object_set_new(o, "type", json_string("boolean"));
        break;
    case SQ_T_ENUM: {
        json_t *e = json_array();
        for (const char *const *v = f->enum_values; v != NULL && *v != NULL; v++)
            json_array_append_new(e, json_string(*v));
        json_object_set_new(o, "enum", e);
        json_object_set_new(o, "type", json_string("string"));
        break;
    }
    case SQ_T_ARRAY:
        json_object_set_new(o, "type", json_string("array"));
        if (f->items == NULL || w->arrays == MAX_DEPTH) { /* a list that holds itself */
            json_object_set_new(o, "items", json_object());
        } else {
            w->arrays++;
            json_object_set_new(o, "items", type_schema(w, f->items));
            w->arrays--;
        }
        put_len(o, "minItems", &f->min_length);
        put_len(o, "maxItems", &f->max_length);
        break;
    case SQ_T_OBJECT:
        json_decref(o);
        if (f->object == NULL)
            return json_pack("{s:s}", "type", "object");
        if (w->defs != NULL && f->object->title != NULL)
            return def_ref(w, f->object);
        if (on_stack(w, f->object) || w->depth == MAX_DEPTH) /* inline: no way to refer */
            return f->object->title
                       ? json_pack("{s:s,s:s}", "type", "object", "title", f->object->title)
                       : json_pack("{s:s}", "type", "object");
        return schema_js(w, f->object);
    }
    return o;
}

static json_t *field_js(walk_t *w, const sq_field_t *f)
{
    json_t *t = type_schema(w, f);
    if (t == NULL)
        return NULL;
    json_t *o = t;
    if (f->nullable) {
        o = json_pack("{s:[o,{s:s}]}", "anyOf", t, "type", "null");
        if (o == NULL)
            return NULL;
    }
    /* A reference carries its own title (the model's), as in pydantic. */
    bool is_ref = json_object_get(t, "$ref") != NULL || f->type == SQ_T_OBJECT;
    if (f->title != NULL)
        json_object_set_new(o, "title", json_string(f->title));
    else if (f->name != NULL && (!is_ref || f->nullable))
        json_object_set_new(o, "title", title_from_name(f->name));
    if (f->description != NULL)
        json_object_set_new(o, "description", json_string(f->description));
    const json_t *d = sq__schema_default(f);
    if (d != NULL)
        json_object_set_new(o, "default", json_deep_copy(d));
    return o;
}

static json_t *schema_js(walk_t *w, const sq_schema_t *s)
{
    if (w->depth == MAX_DEPTH)
        return json_pack("{s:s}", "type", "object");
    json_t *o = json_object(), *props = json_object(), *req = json_array();
    if (o == NULL || props == NULL || req == NULL)
        goto fail;
    w->stack[w->depth++] = s;
    for (const sq_field_t *f = s->fields; f != NULL && f->name != NULL; f++) {
        json_object_set_new(props, f->name, field_js(w, f));
        if (f->default_json == NULL)
            json_array_append_new(req, json_string(f->name));
    }
    w->depth--;
    json_object_set_new(o, "type", json_string("object"));
    if (s->title != NULL)
        json_object_set_new(o, "title", json_string(s->title));
    if (s->description != NULL)
        json_object_set_new(o, "description", json_string(s->description));
    json_object_set_new(o, "properties", props);
    if (json_array_size(req) > 0)
        json_object_set_new(o, "required", req);
    else
        json_decref(req);
    return o;
fail:
    json_decref(o);
    json_decref(props);
    json_decref(req);
    return NULL;
}

json_t *sq_field_to_json_schema(const sq_field_t *f, const char *ref_prefix, json_t *defs)
{
    walk_t w = {.ref_prefix = ref_prefix, .defs = defs, .seen = json_object()};
    json_t *j = w.seen ? field_js(&w, f) : NULL;
    json_decref(w.seen);
    return j;
}

json_t *sq_schema_to_json_schema(const sq_schema_t *s, const char *ref_prefix, json_t *defs)
{
    walk_t w = {.ref_prefix = ref_prefix, .defs = defs, .seen = json_object()};
    json_t *j = w.seen ? schema_js(&w, s) : NULL;
    json_decref(w.seen);
    return j;
}
