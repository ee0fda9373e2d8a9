/* sq_openapi_mount: the document and the Swagger UI page as routes of the app. What the
 * routes share is one refcounted state, owned by the routes (sq__app_route_owned): it
 * goes with the app. */
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/abi.h"
#include "openapi/openapi_int.h"

#ifndef SQ_SWAGGER_UI_DIR
#define SQ_SWAGGER_UI_DIR "web/node_modules/swagger-ui-dist"
#endif

#define MAX_ASSET_BYTES (64u << 20)
#define ASSET_CACHE "public, max-age=86400"

typedef struct asset {
    char *bytes;
    size_t len;
} asset_t;

typedef struct mount {
    unsigned refs; /* routes holding it, and the mount call while it runs */
    const sq_app_t *app;
    sq_openapi_opts_t opts; /* strings point into `strings` */
    char *strings[6];
    uv_mutex_t lock; /* guards doc: worker loops of one app ask at once */
    char *doc;       /* the document, made at the first request; then read-only */
    size_t doc_len;
    asset_t page, css, js;
} mount_t;

static void mount_unref(void *data)
{
    mount_t *m = data;
    if (--m->refs > 0)
        return;
    uv_mutex_destroy(&m->lock);
    free(m->doc);
    free(m->page.bytes);
    free(m->css.bytes);
    free(m->js.bytes);
    for (size_t i = 0; i < SQ__ARRAY_SIZE(m->strings); i++)
        free(m->strings[i]);
    free(m);
}

/* The routes' own operation: none of them is in the document. */
static const sq_op_t hidden_op = {.hidden = true};

static void openapi_get(sq_req_t *req, sq_res_t *res, void *data)
{
    mount_t *m = data;
    uv_mutex_lock(&m->lock);
    if (m->doc == NULL) {
        json_t *doc = sq__openapi_build(m->app, &m->opts);
        m->doc = doc ? json_dumps(doc, JSON_COMPACT) : NULL; /* as Starlette's JSONResponse */
        m->doc_len = m->doc ? strlen(m->doc) : 0;
        json_decref(doc);
    }
    const char *text = m->doc;
    size_t len = m->doc_len;
    uv_mutex_unlock(&m->lock);
    if (text == NULL) { /* out of memory: the next request tries again */
        sq_res_send_error(res, 500, NULL);
        return;
    }
    sq_res_send_ref(res, 200, "application/json", text, len, NULL, NULL);
}

static void send_asset(sq_res_t *res, const asset_t *a, const char *type, bool cache)
{
    if (cache)
        sq_res_header(res, "Cache-Control", ASSET_CACHE); /* out of memory: sent without */
    sq_res_send_ref(res, 200, type, a->bytes, a->len, NULL, NULL);
}

static void page_get(sq_req_t *req, sq_res_t *res, void *data)
{
    send_asset(res, &((mount_t *)data)->page, "text/html; charset=utf-8", false);
}

static void css_get(sq_req_t *req, sq_res_t *res, void *data)
{
    send_asset(res, &((mount_t *)data)->css, "text/css; charset=utf-8", true);
}

static void js_get(sq_req_t *req, sq_res_t *res, void *data)
{
    /* RFC 9239 §6: text/javascript */
    send_asset(res, &((mount_t *)data)->js, "text/javascript; charset=utf-8", true);
}

static const sq_handler_t openapi_route = {.get = openapi_get, .op.get = &hidden_op};
static const sq_handler_t page_route = {.get = page_get, .op.get = &hidden_op};
static const sq_handler_t css_route = {.get = css_get, .op.get = &hidden_op};
static const sq_handler_t js_route = {.get = js_get, .op.get = &hidden_op};

/* A URL the routes can take as a literal pattern: '/', then RFC 3986 path characters
 * without '%' (the router compares literals decoded), '?', '{', '}' or a `*` segment. */
static bool literal_path(const char *url)
{
    if (url == NULL || url[0] != '/' || strlen(url) > 1024)
        return false;
    for (const char *p = url; *p != '\0'; p++) {
        unsigned char ch = (unsigned char)*p;
        if (!sq__uri_path_char(ch) || ch == '?' || ch == '%' || ch == '{' || ch == '}')
            return false;
        if (ch == '*' && p[-1] == '/' && (p[1] == '/' || p[1] == '\0'))
            return false;
    }
    return true;
}

/* Reads dir/name whole into a (blocking: the mount runs at start-up). Returns 0 or a
 * negative errno code: UV_ENOENT when it is not there. */
static int read_asset(const char *dir, const char *name, asset_t *a)
{
    char path[4096];
    if (snprintf(path, sizeof(path), "%s/%s", dir, name) >= (int)sizeof(path))
        return UV_ENAMETOOLONG;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return uv_translate_sys_error(errno);
    int rc = 0;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        rc = uv_translate_sys_error(errno);
        goto out_fd;
    }
    rc = UV_EFBIG;
    if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size > MAX_ASSET_BYTES)
        goto out_fd;
    rc = UV_ENOMEM;
    a->bytes = malloc((size_t)st.st_size + 1);
    if (a->bytes == NULL)
        goto out_fd;
    a->len = 0;
    for (;;) { /* to the end, whatever the size said: the file may have changed */
        if (a->len == (size_t)st.st_size + 1) {
            rc = UV_EFBIG;
            goto out_bytes;
        }
        ssize_t n = read(fd, a->bytes + a->len, (size_t)st.st_size + 1 - a->len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = uv_translate_sys_error(errno);
            goto out_bytes;
        }
        if (n == 0)
            break;
        a->len += (size_t)n;
    }
    rc = 0;
    goto out_fd;
out_bytes:
    free(a->bytes);
    a->bytes = NULL;
out_fd:
    close(fd);
    return rc;
}

/* Appends s HTML-escaped (text and attribute values). */
static int append_html(sq__buf_t *b, const char *s)
{
    int rc = 0;
    for (; *s != '\0' && rc == 0; s++) {
        switch (*s) {
        case '&':
            rc = sq__buf_append(b, "&amp;", 5);
            break;
        case '<':
            rc = sq__buf_append(b, "&lt;", 4);
            break;
        case '>':
            rc = sq__buf_append(b, "&gt;", 4);
            break;
        case '"':
            rc = sq__buf_append(b, "&quot;", 6);
            break;
        default:
            rc = sq__buf_append(b, s, 1);
        }
    }
    return rc;
}

static int append_str(sq__buf_t *b, const char *s)
{
    return sq__buf_append(b, s, strlen(s));
}

/* The page: Swagger UI's bundle started on the document, as FastAPI's
 * get_swagger_ui_html does, with the assets from this server. `base` is docs_url
 * without its trailing '/'. */
static int make_page(mount_t *m, const char *base)
{
    sq__buf_t b = {0};
    json_t *url = json_string(m->opts.openapi_url);
    char *url_js = url ? json_dumps(url, JSON_ENCODE_ANY) : NULL; /* a JS string literal */
    json_decref(url);
    int rc = url_js ? 0 : UV_ENOMEM;
    rc = rc
             ?: append_str(&b, "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n"
                               "<meta charset=\"utf-8\">\n"
                               "<meta name=\"viewport\" content=\"width=device-width, "
                               "initial-scale=1\">\n<title>");
    rc = rc ?: append_html(&b, m->opts.title);
    rc = rc
             ?: append_str(&b, " - Swagger UI</title>\n<link rel=\"icon\" href=\"data:,\">\n"
                               "<link rel=\"stylesheet\" href=\"");
    rc = rc ?: append_html(&b, base);
    rc = rc
             ?: append_str(&b, "/swagger-ui.css\">\n</head>\n<body>\n"
                               "<div id=\"swagger-ui\"></div>\n<script src=\"");
    rc = rc ?: append_html(&b, base);
    rc = rc
             ?: append_str(&b, "/swagger-ui-bundle.js\"></script>\n<script>\n"
                               "window.ui = SwaggerUIBundle({\n  url: ");
    rc = rc ?: append_str(&b, url_js);
    rc = rc
             ?: append_str(&b, ",\n  dom_id: \"#swagger-ui\",\n  layout: \"BaseLayout\",\n"
                               "  deepLinking: true,\n  validatorUrl: null,\n  showExtensions: true,\n"
                               "  showCommonExtensions: true,\n"
                               "  presets: [SwaggerUIBundle.presets.apis, "
                               "SwaggerUIBundle.SwaggerUIStandalonePreset],\n});\n"
                               "</script>\n</body>\n</html>\n");
    free(url_js);
    if (rc != 0) {
        sq__buf_free(&b);
        return rc;
    }
    m->page.bytes = b.base;
    m->page.len = b.len;
    return 0;
}

static char *dup_opt(mount_t *m, size_t i, const char *s, bool *oom)
{
    if (s == NULL)
        return NULL;
    m->strings[i] = strdup(s);
    *oom |= m->strings[i] == NULL;
    return m->strings[i];
}

/* Adds one route holding a reference to m (dropped by the router on failure). */
static int add(sq_app_t *app, const char *url, const char *suffix, const sq_handler_t *h,
               mount_t *m)
{
    char pattern[1100];
    snprintf(pattern, sizeof(pattern), "%s%s", url, suffix);
    m->refs++;
    return sq__app_route_owned(app, pattern, h, m, mount_unref);
}

int sq_openapi_mount(sq_app_t *app, const sq_openapi_opts_t *opts)
{
    sq_openapi_opts_t o;
    sq__openapi_opts_defaults(&o);
    if (app == NULL)
        return UV_EINVAL;
    if (opts != NULL) {
        int rc = SQ__OPTS_IN(&o, opts);
        if (rc != 0)
            return rc;
    }
    if (!literal_path(o.openapi_url) ||
        (o.docs_url != NULL &&
         (!literal_path(o.docs_url) || strcmp(o.docs_url, o.openapi_url) == 0)))
        return UV_EINVAL;
    /* "/docs/" serves its assets at "/docs/swagger-ui.css", "/" at "/swagger-ui.css" */
    char base[1100] = "";
    if (o.docs_url != NULL) {
        snprintf(base, sizeof(base), "%s", o.docs_url);
        size_t n = strlen(base);
        if (n > 0 && base[n - 1] == '/')
            base[n - 1] = '\0';
        char css[1200], js[1200];
        snprintf(css, sizeof(css), "%s/swagger-ui.css", base);
        snprintf(js, sizeof(js), "%s/swagger-ui-bundle.js", base);
        if (strcmp(css, o.openapi_url) == 0 || strcmp(js, o.openapi_url) == 0)
            return UV_EINVAL;
    }

    mount_t *m = calloc(1, sizeof(*m));
    if (m == NULL)
        return UV_ENOMEM;
    if (uv_mutex_init(&m->lock) != 0) {
        free(m);
        return UV_ENOMEM;
    }
    m->refs = 1; /* this call's, dropped at the end */
    m->app = app;
    bool oom = false;
    m->opts = o;
    m->opts.title = dup_opt(m, 0, o.title ? o.title : "squall", &oom);
    m->opts.version = dup_opt(m, 1, o.version ? o.version : "0.1.0", &oom);
    m->opts.description = dup_opt(m, 2, o.description, &oom);
    m->opts.openapi_url = dup_opt(m, 3, o.openapi_url, &oom);
    m->opts.docs_url = dup_opt(m, 4, o.docs_url, &oom);
    m->opts.docs_assets = NULL; /* read here, not kept */
    int rc = oom ? UV_ENOMEM : 0;
    if (rc == 0 && o.docs_url != NULL) {
        const char *dir = o.docs_assets;
        const char *env = getenv("SQUALL_SWAGGER_UI");
        if (dir == NULL)
            dir = env != NULL && *env != '\0' ? env : SQ_SWAGGER_UI_DIR;
        rc = read_asset(dir, "swagger-ui.css", &m->css);
        rc = rc ?: read_asset(dir, "swagger-ui-bundle.js", &m->js);
        rc = rc ?: make_page(m, base);
    }
    /* Nothing can fail on the patterns now (checked above): only memory. */
    rc = rc ?: add(app, m->opts.openapi_url, "", &openapi_route, m);
    if (rc == 0 && o.docs_url != NULL) {
        rc = add(app, m->opts.docs_url, "", &page_route, m);
        rc = rc ?: add(app, base, "/swagger-ui.css", &css_route, m);
        rc = rc ?: add(app, base, "/swagger-ui-bundle.js", &js_route, m);
    }
    mount_unref(m);
    return rc;
}
