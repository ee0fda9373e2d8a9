/* CORS (the Fetch standard's CORS protocol, https://fetch.spec.whatwg.org/#http-cors-protocol)
 * as a before hook on the app: preflights answered here, allowed origins told on every
 * other response. The configuration is copied and kept with the app (sq__app_keep). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/abi.h"
#include "http/h1_int.h"

typedef struct cors {
    char **origins; /* NULL-terminated copies */
    bool any_origin, any_method, any_header, credentials;
    char *methods; /* "GET, POST": the Allow-Methods value */
    char **method_list;
    char **header_list; /* lower-case */
    char *headers;      /* the Allow-Headers value when not any */
    char *expose;       /* the Expose-Headers value, or NULL */
    char max_age[24];
} cors_t;

static const sq_cors_opts_t cors_defaults = {.size = sizeof(sq_cors_opts_t), .max_age = 600};

void sq_cors_opts_init_sized(sq_cors_opts_t *opts, size_t size)
{
    SQ__OPTS_INIT(opts, size, &cors_defaults);
}

static void free_list(char **l)
{
    for (size_t i = 0; l != NULL && l[i] != NULL; i++)
        free(l[i]);
    free(l);
}

static void cors_free(void *p)
{
    cors_t *c = p;
    free_list(c->origins);
    free_list(c->method_list);
    free_list(c->header_list);
    free(c->methods);
    free(c->headers);
    free(c->expose);
    free(c);
}

static bool is_star(const char *const *l)
{
    for (size_t i = 0; l != NULL && l[i] != NULL; i++)
        if (strcmp(l[i], "*") == 0)
            return true;
    return false;
}

/* Copies a list (lower-cased when `lower`); NULL on ENOMEM or a value that could split a
 * header (a control character or a comma in an item). */
static char **copy_list(const char *const *l, bool lower, bool *bad)
{
    size_t n = 0;
    while (l != NULL && l[n] != NULL)
        n++;
    char **out = calloc(n + 1, sizeof(*out));
    if (out == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        if (!sq__field_ok(l[i], false) || strchr(l[i], ',') != NULL || *l[i] == '\0')
            *bad = true;
        if ((out[i] = strdup(l[i])) == NULL) {
            free_list(out);
            return NULL;
        }
        for (char *p = out[i]; lower && *p; p++)
            if (*p >= 'A' && *p <= 'Z')
                *p = (char)(*p + 32);
    }
    return out;
}

static char *join(char *const *l, const char *const *extra)
{
    size_t len = 1;
    for (size_t i = 0; extra != NULL && extra[i] != NULL; i++)
        len += strlen(extra[i]) + 2;
    for (size_t i = 0; l[i] != NULL; i++)
        len += strlen(l[i]) + 2;
    char *out = malloc(len), *p = out;
    if (out == NULL)
        return NULL;
    *p = '\0';
    for (size_t i = 0; extra != NULL && extra[i] != NULL; i++)
        p += sprintf(p, "%s%s", p == out ? "" : ", ", extra[i]);
    for (size_t i = 0; l[i] != NULL; i++)
        p += sprintf(p, "%s%s", p == out ? "" : ", ", l[i]);
    return out;
}

static bool in_list(char *const *l, const char *s, size_t n, bool nocase)
{
    for (size_t i = 0; l[i] != NULL; i++)
        if (strlen(l[i]) == n && (nocase ? strncasecmp(l[i], s, n) : strncmp(l[i], s, n)) == 0)
            return true;
    return false;
}

/* Fetch §2.2.2: the request headers a page may send without asking — Content-Type only
 * for the three form types, so a fetch() with application/json asks for it: every
 * preflight answer names them all, as Starlette's does. */
static const char *const safelisted[] = {"accept", "accept-language", "content-language",
                                         "content-type", NULL};
static const char *const safelisted_names[] = {"Accept", "Accept-Language", "Content-Language",
                                               "Content-Type", NULL};

/* Every header named in a preflight's Access-Control-Request-Headers is allowed. */
static bool headers_allowed(const cors_t *c, const char *req)
{
    if (c->any_header || req == NULL)
        return true;
    const char *p = req;
    while (*p) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        size_t n = strcspn(p, ", \t");
        if (n > 0 && !in_list(c->header_list, p, n, true) &&
            !in_list((char *const *)safelisted, p, n, true))
            return false;
        p += n;
    }
    return true;
}

static int cors_before(sq_req_t *req, sq_res_t *res, void *data)
{
    const cors_t *c = data;
    const char *origin = sq_req_header(req, "Origin");
    if (origin == NULL)
        return SQ_NEXT;
    bool allowed = c->any_origin || in_list(c->origins, origin, strlen(origin), false);
    bool star = c->any_origin && !c->credentials;
    if (!star)
        sq_res_header(res, "Vary", "Origin"); /* the answer depends on the Origin */
    const char *want = sq_req_header(req, "Access-Control-Request-Method");
    if (sq_req_method_id(req) == SQ_METHOD_OPTIONS && want != NULL) {
        /* a preflight: answered here, whatever route the path names */
        bool method_ok = c->any_method || in_list(c->method_list, want, strlen(want), false);
        const char *req_headers = sq_req_header(req, "Access-Control-Request-Headers");
        bool hdrs_ok = headers_allowed(c, req_headers);
        if (!allowed || !method_ok || !hdrs_ok) {
            char msg[96];
            snprintf(msg, sizeof(msg), "Disallowed CORS%s%s%s", allowed ? "" : " origin",
                     method_ok ? "" : " method", hdrs_ok ? "" : " headers");
            sq_res_send(res, 400, "text/plain; charset=utf-8", msg, strlen(msg));
            return SQ_PAUSE;
        }
        sq_res_header(res, "Access-Control-Allow-Origin", star ? "*" : origin);
        sq_res_header(res, "Access-Control-Allow-Methods", c->any_method ? want : c->methods);
        if (!c->any_header || req_headers != NULL)
            sq_res_header(res, "Access-Control-Allow-Headers",
                          c->any_header ? req_headers : c->headers);
        sq_res_header(res, "Access-Control-Max-Age", c->max_age);
        if (c->credentials)
            sq_res_header(res, "Access-Control-Allow-Credentials", "true");
        sq_res_send(res, 200, "text/plain; charset=utf-8", "OK", 2);
        return SQ_PAUSE;
    }
    if (allowed) {
        sq_res_header(res, "Access-Control-Allow-Origin", star ? "*" : origin);
        if (c->credentials)
            sq_res_header(res, "Access-Control-Allow-Credentials", "true");
        if (c->expose != NULL)
            sq_res_header(res, "Access-Control-Expose-Headers", c->expose);
    }
    return SQ_NEXT;
}

int sq_app_cors(sq_app_t *app, const sq_cors_opts_t *opts)
{
    sq_cors_opts_t o = cors_defaults;
    if (app == NULL)
        return UV_EINVAL;
    if (opts != NULL) {
        int rc = SQ__OPTS_IN(&o, opts);
        if (rc != 0)
            return rc;
    }
    if (o.max_age < 0)
        return UV_EINVAL;
    static const char *const get_only[] = {"GET", NULL};
    cors_t *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return UV_ENOMEM;
    bool bad = false;
    c->any_origin = is_star(o.origins);
    c->any_method = is_star(o.methods);
    c->any_header = is_star(o.headers);
    c->credentials = o.credentials != 0;
    snprintf(c->max_age, sizeof(c->max_age), "%d", o.max_age);
    static const char *const none[] = {NULL};
    c->origins = copy_list(o.origins ? o.origins : none, false, &bad);
    c->method_list = copy_list(o.methods ? o.methods : get_only, false, &bad);
    c->header_list = copy_list(o.headers ? o.headers : none, true, &bad);
    if (c->origins == NULL || c->method_list == NULL || c->header_list == NULL ||
        (c->methods = join(c->method_list, NULL)) == NULL ||
        (c->headers = join(c->header_list, safelisted_names)) == NULL) {
        cors_free(c);
        return UV_ENOMEM;
    }
    if (o.expose != NULL) {
        char **ex = copy_list(o.expose, false, &bad);
        c->expose = ex ? join(ex, NULL) : NULL;
        free_list(ex);
        if (c->expose == NULL) {
            cors_free(c);
            return UV_ENOMEM;
        }
    }
    if (bad) {
        cors_free(c);
        return UV_EINVAL;
    }
    int rc = sq__app_keep(app, c, cors_free);
    if (rc != 0)
        return rc;
    return sq_app_before(app, cors_before, c);
}
