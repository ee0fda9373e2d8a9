/* squall — the OpenAPI 3.1 document of an app's routes, and the /docs page (FastAPI's).
 *
 *     sq_openapi_opts_t o;
 *     sq_openapi_opts_init(&o);
 *     o.title = "Items";
 *     sq_openapi_mount(app, &o);          // GET /openapi.json and GET /docs
 *
 * The document lists every route of the app in registration order, with what the
 * declared operations (sq_op_t, schema.h) say of each method: see docs/openapi.md for
 * how each part is written and where it differs from FastAPI's.
 */
#ifndef SQUALL_OPENAPI_H
#define SQUALL_OPENAPI_H

#include <jansson.h>

#include "common.h"
#include "router.h"

/* Options; fill with sq_openapi_opts_init() and change what you need. The struct grows
 * by squall's rule (common.h, "Structs that grow"). Strings are copied by
 * sq_openapi_mount. */
typedef struct sq_openapi_opts {
    size_t size;             /* sizeof the caller's struct: set by sq_openapi_opts_init */
    const char *title;       /* info.title; "squall" (NULL: "squall") */
    const char *version;     /* info.version, the app's own; "0.1.0" (NULL: "0.1.0") */
    const char *description; /* info.description (CommonMark); NULL (default): none */
    const char *openapi_url; /* where the document is served; "/openapi.json" */
    const char *docs_url;    /* where the Swagger UI page is served; "/docs"; NULL: no
                                page (the document alone) */
    const char *docs_assets; /* the folder holding swagger-ui.css and
                                swagger-ui-bundle.js (npm's swagger-ui-dist); NULL
                                (default): $SQUALL_SWAGGER_UI, else the folder compiled
                                in (SQ_SWAGGER_UI_DIR: web/node_modules/swagger-ui-dist
                                of the source tree squall was built in) */
} sq_openapi_opts_t;

/* What sq_openapi_opts_init calls. Call sq_openapi_opts_init. */
SQ_EXTERN void sq_openapi_opts_init_sized(sq_openapi_opts_t *opts, size_t size);
/* Fills opts with the defaults above and sets opts->size. */
static inline void sq_openapi_opts_init(sq_openapi_opts_t *opts)
{
    sq_openapi_opts_init_sized(opts, sizeof(*opts));
}

/* The OpenAPI 3.1.0 document of the app's routes as they are now, a new reference (the
 * caller owns it), or NULL when opts is refused (size 0: never initialised; a newer
 * header's field set) or memory ran out. `opts` is read (NULL: defaults); only title,
 * version and description are used. Reads the app's routes: call it where nothing adds
 * routes at the same time (any thread). Never fails on the routes' content: what cannot
 * be written validly is left out or renamed as docs/openapi.md says. */
SQ_EXTERN json_t *sq_openapi_document(const sq_app_t *app, const sq_openapi_opts_t *opts);

/* Adds to the app, FastAPI's way:
 *   GET <openapi_url>  the document, application/json, made at the first request (so
 *                      routes added after this call are in it, as long as they are added
 *                      before the first request) and kept: every later request, on any
 *                      server or worker thread sharing the app, gets the same bytes;
 *   GET <docs_url>     squall's Swagger UI page (text/html), which loads the two
 *                      assets below and shows the document;
 *   GET <docs_url>/swagger-ui.css, GET <docs_url>/swagger-ui-bundle.js
 *                      the assets, from memory, with Cache-Control: public,
 *                      max-age=86400 — read from the docs_assets folder here, by a
 *                      blocking read (call it at start-up, before the loop serves).
 * The page works offline: nothing is fetched from anywhere but this server. None of
 * these routes is in the document (FastAPI's include_in_schema=False). Routes match in
 * registration order: mount before a catch-all route (`/{x:path}`, a `*` segment) that would
 * shadow these paths. What the mount keeps is freed with the app (sq_app_destroy).
 * The URLs must be literal paths: a '/' then RFC 3986 path characters (no '%', '?',
 * '{', '}' or a `*` segment), and differ.
 * Returns
 *   0            mounted;
 *   UV_EINVAL    app is NULL; opts->size is 0; openapi_url is NULL; a URL is not a
 *                literal path, or two are the same;
 *   UV_ENOTSUP   opts comes from a newer header and sets a field this library lacks;
 *   UV_ENOENT    (docs_url set) swagger-ui.css or swagger-ui-bundle.js is not in the
 *                assets folder; another errno code of open(2)/read(2) (UV_EACCES, ...)
 *                when one cannot be read; UV_EFBIG for an asset over 64 MiB. Mount again
 *                with docs_url NULL to serve the document alone;
 *   UV_ENOMEM.
 * On every error but UV_ENOMEM nothing was added to the app. Out of memory while adding
 * the routes, the routes added before it stay and work. */
SQ_EXTERN int sq_openapi_mount(sq_app_t *app, const sq_openapi_opts_t *opts);

#endif
