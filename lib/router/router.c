/* Routes: path patterns bound to handler structs, matched segment by segment. */
#include <errno.h>
#include <stdlib.h>

#include "core/abi.h"
#include "internal.h"

typedef enum { SEG_LIT, SEG_STR, SEG_INT, SEG_PATH } seg_kind_t;

/* The methods an Allow header can name, in the order it names them. */
static const char *const allow_names[] = {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH",
                                          "OPTIONS"};
#define ALLOW_MAX 64 /* all of allow_names, comma-separated, fits */

typedef struct seg {
    seg_kind_t kind;
    const char *text; /* literal text, or the parameter's name (NULL for `*`) */
    size_t len;
} seg_t;

struct sq__route {
    char *pattern;          /* owned copy; seg texts point into it */
    char *name;             /* the pattern as given, for logs and the watchdog */
    seg_t *segs;
    unsigned nsegs;
    const sq_handler_t *handler; /* &table */
    sq_handler_t table;     /* a copy: the caller's may be of an older, smaller header */
    void *data;
    void (*free_data)(void *data); /* routes that own their data (WebSocket routes) */
    bool websocket;         /* an sq_app_websocket route */
    char *route_name;       /* sq_app_route_named's, or NULL */
    const sq_app_t *app;    /* the app it belongs to */
    sq_app_t *sub;          /* a mount (sq_app_mount): its sub-app; pattern is the prefix */
    size_t prefix_len;
    size_t literal_len;     /* a pattern of literal segments only: its length (it is `name`),
                               which a path without '%' must equal; else 0 */
    unsigned methods;       /* ALLOW_* bits of the methods the handler serves */
    char allow[ALLOW_MAX];  /* the Allow header for 405, from `methods` */
};

struct sq_app_s {
    sq__app_hooks_t hooks; /* first: read inline by sq__app_tree_hooks (internal.h) */
    sq__route_t **routes;
    unsigned nroutes;
    unsigned cap;
    sq__hook_t *before, *after;
    unsigned nbefore, nafter;
    sq__hook_t errors[4];   /* 404, 405, 422, 500 */
    sq_app_t *parent;       /* the app it is mounted in, or NULL */
    struct kept {
        void *p;
        void (*free_fn)(void *p);
    } *kept;                /* sq__app_keep */
    unsigned nkept;
};

int sq_app_create(sq_app_t **out)
{
    *out = calloc(1, sizeof(**out));
    return *out ? 0 : UV_ENOMEM;
}

void sq_app_destroy(sq_app_t *app)
{
    if (app == NULL)
        return;
    for (unsigned i = 0; i < app->nroutes; i++) {
        if (app->routes[i]->free_data != NULL)
            app->routes[i]->free_data(app->routes[i]->data);
        sq_app_destroy(app->routes[i]->sub);
        free(app->routes[i]->pattern);
        free(app->routes[i]->name);
        free(app->routes[i]->route_name);
        free(app->routes[i]->segs);
        free(app->routes[i]);
    }
    free(app->routes);
    free(app->before);
    free(app->after);
    for (unsigned i = 0; i < app->nkept; i++)
        app->kept[i].free_fn(app->kept[i].p);
    free(app->kept);
    free(app);
}

/* Writes the Allow header value for the methods in `mask` (bits of allow_names). */
static void format_allow(char *out, unsigned mask)
{
    size_t o = 0;
    out[0] = '\0';
    for (size_t i = 0; i < SQ__ARRAY_SIZE(allow_names); i++)
        if (mask & (1u << i))
            o += (size_t)snprintf(out + o, ALLOW_MAX - o, "%s%s", o ? ", " : "",
                                  allow_names[i]);
}

static void build_allow(sq__route_t *r)
{
    const sq_handler_t *h = r->handler;
    bool set[] = {h->get || h->blocking.get,
                  h->get || h->head || h->blocking.get,
                  h->post || h->blocking.post,
                  h->put || h->blocking.put,
                  h->del || h->blocking.del,
                  h->patch || h->blocking.patch,
                  h->options != NULL};
    _Static_assert(SQ__ARRAY_SIZE(set) == SQ__ARRAY_SIZE(allow_names), "one flag a name");
    r->methods = 0;
    for (size_t i = 0; i < SQ__ARRAY_SIZE(set); i++)
        r->methods |= set[i] ? 1u << i : 0;
    format_allow(r->allow, r->methods);
}

/* Splits the owned pattern copy in place into segments. */
static int parse_pattern(sq__route_t *r)
{
    char *p = r->pattern;
    if (*p != '/')
        return SQ_EPATTERN;
    unsigned n = 0;
    for (char *q = p; *q; q++)
        n += *q == '/';
    r->segs = calloc(n, sizeof(seg_t));
    if (r->segs == NULL)
        return UV_ENOMEM;
    p++;
    for (unsigned i = 0; i < n; i++) {
        char *end = strchr(p, '/');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        seg_t *s = &r->segs[i];
        if (len == 1 && p[0] == '*') {
            s->kind = SEG_PATH;
        } else if (len >= 3 && p[0] == '{' && p[len - 1] == '}') {
            p[len - 1] = '\0';
            char *colon = strchr(p + 1, ':');
            s->kind = SEG_STR;
            if (colon != NULL) {
                *colon = '\0';
                if (strcmp(colon + 1, "int") == 0)
                    s->kind = SEG_INT;
                else if (strcmp(colon + 1, "path") == 0)
                    s->kind = SEG_PATH;
                else if (strcmp(colon + 1, "str") != 0)
                    return SQ_EPATTERN;
            }
            s->text = p + 1;
            s->len = strlen(s->text);
            if (s->len == 0)
                return SQ_EPATTERN;
        } else {
            if (memchr(p, '{', len) || memchr(p, '}', len))
                return SQ_EPATTERN;
            s->kind = SEG_LIT;
            s->text = p;
            s->len = len;
        }
        if (s->kind == SEG_PATH && i + 1 != n)
            return SQ_EPATTERN;
        if (end == NULL)
            break;
        *end = '\0';
        p = end + 1;
    }
    r->nsegs = n;
    return 0;
}

int sq_app_route_sized(sq_app_t *app, const char *pattern, const sq_handler_t *handler,
                       size_t handler_size, void *data)
{
    if (handler == NULL)
        return UV_EINVAL;
    sq_handler_t h;
    memset(&h, 0, sizeof(h)); /* callbacks an older header lacks are unset */
    int rc = sq__abi_table_in(&h, sizeof(h), handler, handler_size);
    if (rc != 0)
        return rc;
    return sq__app_route_owned(app, pattern, &h, data, NULL);
}

static int grow(sq_app_t *app)
{
    if (app->nroutes < app->cap)
        return 0;
    unsigned cap = app->cap ? app->cap * 2 : 8;
    sq__route_t **routes = realloc(app->routes, cap * sizeof(*routes));
    if (routes == NULL)
        return UV_ENOMEM;
    app->routes = routes;
    app->cap = cap;
    return 0;
}

static int add_route(sq_app_t *app, const char *pattern, const sq_handler_t *handler,
                     void *data, void (*free_data)(void *data), bool websocket)
{
    int rc = UV_EINVAL;
    sq__route_t *r = NULL;
    if (app == NULL || pattern == NULL || handler == NULL)
        goto fail_route;
    rc = UV_ENOMEM;
    r = calloc(1, sizeof(*r));
    if (r == NULL)
        goto fail_route;
    r->pattern = strdup(pattern);
    r->name = strdup(pattern);
    if (r->pattern == NULL || r->name == NULL)
        goto fail_pattern;
    r->table = *handler;
    r->handler = &r->table;
    r->data = data;
    rc = parse_pattern(r);
    if (rc != 0)
        goto fail_pattern;
    unsigned nparams = 0;
    const char *names[SQ__MAX_PARAMS];
    for (unsigned i = 0; i < r->nsegs; i++)
        if (r->segs[i].kind != SEG_LIT) {
            if (nparams < SQ__MAX_PARAMS)
                names[nparams] = r->segs[i].text ? r->segs[i].text : "*";
            nparams++;
        }
    if (nparams == 0)
        r->literal_len = strlen(r->name);
    rc = SQ_EPATTERN;
    if (nparams > SQ__MAX_PARAMS)
        goto fail_pattern;
    static const sq_method_t declared[] = {SQ_METHOD_GET, SQ_METHOD_POST, SQ_METHOD_PUT,
                                           SQ_METHOD_DELETE, SQ_METHOD_PATCH};
    for (size_t i = 0; i < SQ__ARRAY_SIZE(declared); i++) {
        const sq_op_t *op = sq__handler_op(&r->table, declared[i]);
        rc = op == NULL ? 0
                        : sq__op_check(op, names, nparams,
                                       (r->table.stream_body & SQ_STREAM(declared[i])) != 0);
        if (rc != 0)
            goto fail_pattern;
    }
    build_allow(r);
    rc = UV_ENOMEM;
    if (grow(app) != 0)
        goto fail_pattern;
    r->free_data = free_data;
    r->websocket = websocket;
    r->app = app;
    app->routes[app->nroutes++] = r;
    return 0;

fail_pattern:
    free(r->segs);
    free(r->pattern);
    free(r->name);
fail_route:
    free(r);
    if (free_data != NULL)
        free_data(data);
    return rc;
}

int sq__app_route_owned(sq_app_t *app, const char *pattern, const sq_handler_t *handler,
                        void *data, void (*free_data)(void *data))
{
    return add_route(app, pattern, handler, data, free_data, false);
}

int sq__app_route_ws(sq_app_t *app, const char *pattern, const sq_handler_t *handler,
                     void *data, void (*free_data)(void *data))
{
    return add_route(app, pattern, handler, data, free_data, true);
}

unsigned sq__app_nroutes(const sq_app_t *app)
{
    return app->nroutes;
}

const sq__route_t *sq__app_route_at(const sq_app_t *app, unsigned i)
{
    return i < app->nroutes ? app->routes[i] : NULL;
}

const sq_handler_t *sq__route_handler(const sq__route_t *r)
{
    return r->handler;
}

bool sq__route_is_ws(const sq__route_t *r)
{
    return r->websocket;
}

const sq_op_t *sq__handler_op(const sq_handler_t *h, sq_method_t m)
{
    switch (m) {
    case SQ_METHOD_GET:
    case SQ_METHOD_HEAD:
        return h->op.get;
    case SQ_METHOD_POST:
        return h->op.post;
    case SQ_METHOD_PUT:
        return h->op.put;
    case SQ_METHOD_DELETE:
        return h->op.del;
    case SQ_METHOD_PATCH:
        return h->op.patch;
    default:
        return NULL;
    }
}

static sq_handler_cb handler_for(const sq_handler_t *h, sq_method_t m)
{
    switch (m) {
    case SQ_METHOD_GET:
        return h->get;
    case SQ_METHOD_HEAD:
        return h->head ? h->head : h->get;
    case SQ_METHOD_POST:
        return h->post;
    case SQ_METHOD_PUT:
        return h->put;
    case SQ_METHOD_DELETE:
        return h->del;
    case SQ_METHOD_PATCH:
        return h->patch;
    case SQ_METHOD_OPTIONS:
        return h->options;
    default:
        return NULL;
    }
}

static sq_blocking_cb blocking_for(const sq_handler_t *h, sq_method_t m)
{
    switch (m) {
    case SQ_METHOD_GET:
    case SQ_METHOD_HEAD:
        return h->blocking.get;
    case SQ_METHOD_POST:
        return h->blocking.post;
    case SQ_METHOD_PUT:
        return h->blocking.put;
    case SQ_METHOD_DELETE:
        return h->blocking.del;
    case SQ_METHOD_PATCH:
        return h->blocking.patch;
    default:
        return NULL;
    }
}

const char *sq__route_pattern(const sq__route_t *r)
{
    return r->name;
}

/* `{x:int}` takes -?[0-9]+ only: strtoll alone would also take leading blanks of any
 * kind (a decoded %09) and a '+' (test: routes/int_parameter_is_a_minus_and_digits_only). */
static bool parse_int64(const char *s, int64_t *out)
{
    const char *digits = s + (*s == '-');
    if (*digits < '0' || *digits > '9')
        return false;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || *end != '\0')
        return false;
    *out = v;
    return true;
}

/* Tries one route against the path. Returns SQ__MATCH_NONE, _OK or _BAD_PARAM. */
/* has_pct: the path holds a '%' somewhere (else no literal segment needs decoding). */
static sq__match_t try_route(const sq__route_t *r, const char *path, size_t len, bool has_pct,
                             sq__arena_t *arena, sq__match_result_t *out)
{
    const char *p = path + 1, *end = path + len;
    unsigned np = 0;
    sq__match_t verdict = SQ__MATCH_OK;
    if (len == 0 || path[0] != '/')
        return SQ__MATCH_NONE;
    if (r->literal_len != 0) {
        /* literal segments only: the path is the pattern itself, or, with an escape in
         * it, may decode to it segment by segment below */
        if (len == r->literal_len && memcmp(path, r->name, len) == 0) {
            out->nparams = 0;
            return SQ__MATCH_OK;
        }
        if (!has_pct)
            return SQ__MATCH_NONE;
    }
    for (unsigned i = 0; i < r->nsegs; i++) {
        const seg_t *s = &r->segs[i];
        if (p > end)
            return SQ__MATCH_NONE;
        const char *slash = s->kind == SEG_PATH ? NULL : memchr(p, '/', (size_t)(end - p));
        const char *send = slash ? slash : end;
        size_t slen = (size_t)(send - p);
        if (s->kind == SEG_LIT) {
            if (slen != s->len || memcmp(p, s->text, slen) != 0) {
                if (!has_pct || memchr(p, '%', slen) == NULL)
                    return SQ__MATCH_NONE;
                char tmp[256];
                if (slen >= sizeof(tmp) || sq__pct_decode(tmp, p, slen, 0) != (ssize_t)s->len ||
                    memcmp(tmp, s->text, s->len) != 0)
                    return SQ__MATCH_NONE;
            }
        } else {
            if (slen == 0 && s->kind != SEG_PATH)
                return SQ__MATCH_NONE;
            char *v = sq__arena_alloc(arena, slen + 1);
            if (v == NULL)
                return SQ__MATCH_NONE;
            if (sq__pct_decode(v, p, slen, 0) < 0)
                return SQ__MATCH_NONE;
            sq__param_t *pp = &out->params[np++];
            pp->name = s->text ? s->text : "*";
            pp->value = v;
            pp->is_int = false;
            if (s->kind == SEG_INT) {
                pp->is_int = true;
                if (!parse_int64(v, &pp->ival) && verdict == SQ__MATCH_OK) {
                    verdict = SQ__MATCH_BAD_PARAM;
                    out->bad_param = pp->name;
                    out->bad_value = v;
                }
            }
        }
        p = send + 1;
    }
    if (p <= end) /* path has more segments than the pattern */
        return SQ__MATCH_NONE;
    out->nparams = np;
    return verdict;
}

/* Matches in app and, through its mounts, in its sub-apps. *shape is the first route
 * whose shape fits but not the method, *allowed the methods of all such routes. */
static sq__match_t match(const sq_app_t *app, sq_method_t method, const char *path,
                         size_t path_len, bool has_pct, sq__arena_t *arena,
                         sq__match_result_t *out, const sq__route_t **shape, unsigned *allowed)
{
    for (unsigned i = 0; i < app->nroutes; i++) {
        const sq__route_t *r = app->routes[i];
        if (r->sub != NULL) {
            /* "/api" takes "/api" (as "/") and "/api/..." but not "/apix" */
            if (path_len < r->prefix_len || memcmp(path, r->pattern, r->prefix_len) != 0 ||
                (path_len > r->prefix_len && path[r->prefix_len] != '/'))
                continue;
            const char *rest = path_len > r->prefix_len ? path + r->prefix_len : "/";
            size_t rlen = path_len > r->prefix_len ? path_len - r->prefix_len : 1;
            /* a 404 under a prefix is its sub-app's: the first mount whose prefix the path
             * is under, and the first within it (out->app is reset for each request) */
            if (out->app == NULL || out->app == app)
                out->app = r->sub;
            sq__match_t m =
                match(r->sub, method, rest, rlen, has_pct, arena, out, shape, allowed);
            if (m != SQ__MATCH_NONE)
                return m;
            continue;
        }
        sq__match_t m = try_route(r, path, path_len, has_pct, arena, out);
        if (m == SQ__MATCH_NONE)
            continue;
        sq_handler_cb cb = handler_for(r->handler, method);
        sq_blocking_cb bcb = cb ? NULL : blocking_for(r->handler, method);
        if (cb == NULL && bcb == NULL) {
            if (*shape == NULL)
                *shape = r;
            *allowed |= r->methods;
            continue;
        }
        out->route = r;
        out->cb = cb;
        out->bcb = bcb;
        out->handler = r->handler;
        out->op = sq__handler_op(r->handler, method);
        out->data = r->data;
        return m;
    }
    return SQ__MATCH_NONE;
}

sq__match_t sq__app_match(const sq_app_t *app, sq_method_t method, const char *path,
                          size_t path_len, sq__arena_t *arena, sq__match_result_t *out)
{
    /* looked for once: most paths have no escape, and then no route needs to look */
    return sq__app_match_pct(app, method, path, path_len, memchr(path, '%', path_len) != NULL,
                             arena, out);
}

sq__match_t sq__app_match_pct(const sq_app_t *app, sq_method_t method, const char *path,
                              size_t path_len, bool has_pct, sq__arena_t *arena,
                              sq__match_result_t *out)
{
    const sq__route_t *shape = NULL;
    unsigned allowed = 0; /* the methods of every route of this shape, for 405's Allow */
    sq__match_t m = match(app, method, path, path_len, has_pct, arena, out, &shape, &allowed);
    if (m != SQ__MATCH_NONE)
        return m;
    if (shape != NULL) {
        out->route = shape;
        out->handler = shape->handler;
        out->allow = shape->allow;
        if (allowed != shape->methods) {
            char *allow = sq__arena_alloc(arena, ALLOW_MAX);
            if (allow != NULL) { /* out of memory: the first route's methods only */
                format_allow(allow, allowed);
                out->allow = allow;
            }
        }
        return SQ__MATCH_NO_METHOD;
    }
    return SQ__MATCH_NONE;
}

/* ---- hooks, mounts, error handlers, names ---- */

static int add_hook(sq__hook_t **list, unsigned *n, sq__hook_t h)
{
    sq__hook_t *l = realloc(*list, (*n + 1) * sizeof(*l));
    if (l == NULL)
        return UV_ENOMEM;
    l[(*n)++] = h;
    *list = l;
    return 0;
}

int sq_app_before(sq_app_t *app, sq_before_cb cb, void *data)
{
    if (app == NULL || cb == NULL)
        return UV_EINVAL;
    int rc = add_hook(&app->before, &app->nbefore, (sq__hook_t){.cb.before = cb, .data = data});
    for (sq_app_t *a = app; rc == 0 && a != NULL; a = a->parent)
        a->hooks.tree_before++;
    return rc;
}

int sq_app_after(sq_app_t *app, sq_after_cb cb, void *data)
{
    if (app == NULL || cb == NULL)
        return UV_EINVAL;
    int rc = add_hook(&app->after, &app->nafter, (sq__hook_t){.cb.after = cb, .data = data});
    for (sq_app_t *a = app; rc == 0 && a != NULL; a = a->parent)
        a->hooks.tree_after++;
    return rc;
}

static int error_slot(int status)
{
    switch (status) {
    case 404:
        return 0;
    case 405:
        return 1;
    case 422:
        return 2;
    case 500:
        return 3;
    default:
        return -1;
    }
}

int sq_app_on_error(sq_app_t *app, int status, sq_error_cb cb, void *data)
{
    int i = error_slot(status);
    if (app == NULL || i < 0)
        return UV_EINVAL;
    app->errors[i] = (sq__hook_t){.cb.error = cb, .data = data};
    return 0;
}

/* A mount prefix: "/seg/seg", literal segments only, no trailing '/'. */
static bool prefix_ok(const char *p)
{
    if (p[0] != '/' || p[1] == '\0')
        return false;
    for (const char *q = p; *q; q++)
        if (*q == '{' || *q == '}' || *q == '*' || *q == '?' || *q == '#' ||
            (*q == '/' && (q[1] == '/' || q[1] == '\0')) || (unsigned char)*q <= ' ')
            return false;
    return true;
}

/* How many apps deep sub's mounts go (sub alone: 1). */
static unsigned height(const sq_app_t *app)
{
    unsigned h = 0;
    for (unsigned i = 0; i < app->nroutes; i++)
        if (app->routes[i]->sub != NULL) {
            unsigned s = height(app->routes[i]->sub);
            h = s > h ? s : h;
        }
    return h + 1;
}

int sq_app_mount(sq_app_t *app, const char *prefix, sq_app_t *sub)
{
    if (app == NULL || sub == NULL || prefix == NULL || sub == app || sub->parent != NULL)
        return UV_EINVAL;
    for (const sq_app_t *a = app; a != NULL; a = a->parent)
        if (a == sub)
            return UV_EINVAL;
    if (!prefix_ok(prefix))
        return SQ_EPATTERN;
    unsigned depth = 1;
    for (const sq_app_t *a = app->parent; a != NULL; a = a->parent)
        depth++;
    if (depth + height(sub) > SQ__MAX_MOUNT_DEPTH)
        return UV_EINVAL; /* deeper than the hooks' walk goes */
    sq__route_t *r = calloc(1, sizeof(*r));
    if (r == NULL || (r->pattern = strdup(prefix)) == NULL || (r->name = strdup(prefix)) == NULL ||
        grow(app) != 0) {
        if (r != NULL) {
            free(r->pattern);
            free(r->name);
        }
        free(r);
        return UV_ENOMEM;
    }
    r->prefix_len = strlen(prefix);
    r->sub = sub;
    r->app = app;
    r->handler = &r->table; /* empty: a mount serves nothing itself */
    sub->parent = app;
    for (sq_app_t *a = app; a != NULL; a = a->parent) {
        a->hooks.tree_before += sub->hooks.tree_before;
        a->hooks.tree_after += sub->hooks.tree_after;
    }
    app->routes[app->nroutes++] = r;
    return 0;
}

int sq_app_route_named_sized(sq_app_t *app, const char *name, const char *pattern,
                             const sq_handler_t *handler, size_t handler_size, void *data)
{
    if (name == NULL || *name == '\0')
        return UV_EINVAL;
    char *copy = strdup(name);
    if (copy == NULL)
        return UV_ENOMEM;
    unsigned n = app != NULL ? app->nroutes : 0;
    int rc = sq_app_route_sized(app, pattern, handler, handler_size, data);
    if (rc != 0) {
        free(copy);
        return rc;
    }
    app->routes[n]->route_name = copy;
    return 0;
}

static const char *param_value(const char *const *params, const char *name, size_t len)
{
    for (size_t i = 0; params != NULL && params[i] != NULL && params[i + 1] != NULL; i += 2)
        if (strlen(params[i]) == len && memcmp(params[i], name, len) == 0)
            return params[i + 1];
    return NULL;
}

/* RFC 3986 §2.1/§3.3: what a path segment may hold as it is; the rest is %XX. */
static bool seg_char(unsigned char ch, bool keep_slash)
{
    return (ch >= '0' && ch <= '9') || ((ch | 0x20) >= 'a' && (ch | 0x20) <= 'z') ||
           (ch != 0 && strchr("-._~!$&'()*+,;=:@", ch) != NULL) || (keep_slash && ch == '/');
}

static int build_url(const sq__route_t *r, const char *const *params, char *buf, size_t len,
                     size_t o)
{
#define PUT_CH(c)                                                                          \
    do {                                                                                   \
        if (o + 1 >= len)                                                                  \
            return UV_ENOBUFS;                                                             \
        buf[o++] = (c);                                                                    \
    } while (0)
    for (unsigned i = 0; i < r->nsegs; i++) {
        const seg_t *s = &r->segs[i];
        PUT_CH('/');
        if (s->kind == SEG_LIT) {
            for (size_t k = 0; k < s->len; k++)
                PUT_CH(s->text[k]);
            continue;
        }
        const char *v = s->text ? param_value(params, s->text, s->len) : param_value(params, "*", 1);
        if (v == NULL || (*v == '\0' && s->kind != SEG_PATH))
            return UV_EINVAL;
        int64_t iv;
        if (s->kind == SEG_INT && !parse_int64(v, &iv))
            return UV_EINVAL;
        /* RFC 3986 §5.2.4: a "." or ".." segment would be removed by the client, sending
         * it elsewhere: in a segment it is written %2E; in a {x:path} value, refused */
        if (s->kind != SEG_PATH && (strcmp(v, ".") == 0 || strcmp(v, "..") == 0)) {
            for (const char *d = v; *d; d++) {
                PUT_CH('%');
                PUT_CH('2');
                PUT_CH('E');
            }
            continue;
        }
        if (s->kind == SEG_PATH) {
            for (const char *seg = v; *seg;) {
                size_t sl = strcspn(seg, "/");
                if ((sl == 1 && seg[0] == '.') || (sl == 2 && seg[0] == '.' && seg[1] == '.'))
                    return UV_EINVAL;
                seg += sl + (seg[sl] == '/');
            }
        }
        for (const unsigned char *p = (const unsigned char *)v; *p; p++) {
            if (seg_char(*p, s->kind == SEG_PATH)) {
                PUT_CH((char)*p);
            } else {
                static const char hex[] = "0123456789ABCDEF";
                PUT_CH('%');
                PUT_CH(hex[*p >> 4]);
                PUT_CH(hex[*p & 15]);
            }
        }
    }
    if (r->nsegs == 0)
        PUT_CH('/');
    buf[o] = '\0';
    return o > INT32_MAX ? UV_ENOBUFS : (int)o;
#undef PUT_CH
}

/* The route named `name` in app or, through its mounts, below it (its own routes first,
 * then each mount in order); prefixes[] gets the mounts' prefixes on the way. */
static const sq__route_t *find_named(const sq_app_t *app, const char *name,
                                     const char **prefixes, unsigned *n)
{
    for (unsigned i = 0; i < app->nroutes; i++) {
        const sq__route_t *r = app->routes[i];
        if (r->route_name != NULL && strcmp(r->route_name, name) == 0)
            return r;
    }
    for (unsigned i = 0; i < app->nroutes; i++) {
        const sq__route_t *r = app->routes[i];
        if (r->sub == NULL || *n == SQ__MAX_MOUNT_DEPTH)
            continue;
        prefixes[(*n)++] = r->pattern;
        const sq__route_t *found = find_named(r->sub, name, prefixes, n);
        if (found != NULL)
            return found;
        (*n)--;
    }
    return NULL;
}

int sq_app_url_for(const sq_app_t *app, const char *name, const char *const *params, char *buf,
                   size_t len)
{
    if (app == NULL || name == NULL || buf == NULL || len == 0)
        return UV_EINVAL;
    const char *prefixes[SQ__MAX_MOUNT_DEPTH];
    unsigned n = 0;
    const sq__route_t *r = find_named(app, name, prefixes, &n);
    if (r == NULL)
        return UV_ENOENT;
    size_t o = 0;
    for (unsigned i = 0; i < n; i++) {
        size_t pl = strlen(prefixes[i]);
        if (o + pl >= len)
            return UV_ENOBUFS;
        memcpy(buf + o, prefixes[i], pl);
        o += pl;
    }
    return build_url(r, params, buf, len, o);
}

const sq_app_t *sq__route_app(const sq__route_t *r)
{
    return r->app;
}

const sq_app_t *sq__app_parent(const sq_app_t *app)
{
    return app->parent;
}

const sq__hook_t *sq__app_befores(const sq_app_t *app, unsigned *n)
{
    *n = app->nbefore;
    return app->before;
}

const sq__hook_t *sq__app_afters(const sq_app_t *app, unsigned *n)
{
    *n = app->nafter;
    return app->after;
}

const sq__hook_t *sq__app_error(const sq_app_t *app, int status)
{
    int i = error_slot(status);
    return i >= 0 && app->errors[i].cb.error != NULL ? &app->errors[i] : NULL;
}

const sq_app_t *sq__route_sub(const sq__route_t *r, const char **prefix)
{
    *prefix = r->pattern;
    return r->sub;
}

int sq__app_keep(sq_app_t *app, void *p, void (*free_fn)(void *p))
{
    struct kept *k = realloc(app->kept, (app->nkept + 1) * sizeof(*k));
    if (k == NULL) {
        free_fn(p);
        return UV_ENOMEM;
    }
    k[app->nkept++] = (struct kept){p, free_fn};
    app->kept = k;
    return 0;
}
