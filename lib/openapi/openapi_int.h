/* lib/openapi: the document (document.c), its schemas (components.c) and its routes
 * (mount.c). */
#ifndef SQUALL_OPENAPI_INT_H
#define SQUALL_OPENAPI_INT_H

#include "internal.h"
#include "squall/openapi.h"

#define SQ__OPENAPI_REF "#/components/schemas/"
#define SQ__OPENAPI_MAX_DEPTH 32 /* tables nested deeper are not expanded (docs/openapi.md) */

/* The document being written. */
typedef struct sq__openapi_doc {
    json_t *paths;
    json_t *defs;    /* components.schemas */
    json_t *op_ids;  /* operationIds given so far (a set) */
    json_t *shapes;  /* shape -> [key, name...] */
    bool validation; /* some operation answers 422 */
    bool oom;
} sq__openapi_doc_t;

/* Small JSON helpers that remember a failure. `val` is stolen, even on failure and when
 * `obj` is NULL (an allocation that failed before), as jansson's *_new calls do. */
static inline void sq__openapi_put(sq__openapi_doc_t *d, json_t *obj, const char *key, json_t *val)
{
    if (obj == NULL) {
        json_decref(val);
        d->oom = true;
    } else if (val == NULL || json_object_set_new(obj, key, val) != 0) {
        d->oom = true;
    }
}

static inline void sq__openapi_push(sq__openapi_doc_t *d, json_t *arr, json_t *val)
{
    if (arr == NULL) {
        json_decref(val);
        d->oom = true;
    } else if (val == NULL || json_array_append_new(arr, val) != 0) {
        d->oom = true;
    }
}

/* components.c. The schema of a parameter's field; a body's or a response's schema (a
 * reference to it in the components, or inline when it has no title). New references,
 * NULL out of memory (d->oom set). Nested schemas go to d->defs. */
SQ__HIDDEN json_t *sq__openapi_field_schema(sq__openapi_doc_t *d, const sq_field_t *f);
SQ__HIDDEN json_t *sq__openapi_schema_ref(sq__openapi_doc_t *d, const sq_schema_t *s);
/* Removes every `"default": null` under j (FastAPI's exclude_none). */
SQ__HIDDEN void sq__openapi_drop_null_defaults(json_t *j);
/* A copy of object o with its keys sorted (a new reference). */
SQ__HIDDEN json_t *sq__openapi_sorted(sq__openapi_doc_t *d, json_t *o);

/* The defaults of sq_openapi_opts_t. */
SQ__HIDDEN void sq__openapi_opts_defaults(sq_openapi_opts_t *o);

/* The document, for opts already checked (not NULL). NULL when memory ran out. */
SQ__HIDDEN json_t *sq__openapi_build(const sq_app_t *app, const sq_openapi_opts_t *opts);

#endif
