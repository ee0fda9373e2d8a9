/* lib/openapi: the document (document.c) and its routes (mount.c). */
#ifndef SQUALL_OPENAPI_INT_H
#define SQUALL_OPENAPI_INT_H

#include "internal.h"
#include "squall/openapi.h"

/* The defaults of sq_openapi_opts_t. */
SQ__HIDDEN void sq__openapi_opts_defaults(sq_openapi_opts_t *o);

/* The document, for opts already checked (not NULL). NULL when memory ran out. */
SQ__HIDDEN json_t *sq__openapi_build(const sq_app_t *app, const sq_openapi_opts_t *opts);

#endif
