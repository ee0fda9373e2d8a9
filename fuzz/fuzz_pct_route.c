/* Percent-decoding (lib/core/pct.c), query parsing, route matching (lib/router/router.c)
 * and the clients' URL splitting (lib/core/uri.c), alone: no connection, so many times
 * faster than the request harness reaches them.
 *
 * Input: byte 0 picks the method (GET, POST, PUT, DELETE, HEAD) and which checks run;
 * the rest, up to its first NUL, is a request target "path?query".
 *
 * The app has a route of every kind — literals, {x}, {x:int}, {x:path}, `*`, a root
 * route — two apps mounted, one inside the other, and routes whose shapes overlap (an
 * int before a plain parameter, a literal before a parameter), each named.
 *
 * Checks:
 * - sq__pct_decode, strict and lenient, with and without '+' as a space, agrees byte for
 *   byte with a decoder written here from RFC 3986 §2.1 and the function's contract: never
 *   longer than its input, NUL-terminated, -1 only when strict;
 * - the query's pairs decode (as sq_req_query does: lenient, '+' a space) to no more
 *   bytes than they had;
 * - a matched route's parameters are no longer than the path, an int parameter's value is
 *   what its text says; sq_app_url_for with those parameters (where it is defined: it
 *   refuses a {x:path} value with a "." or ".." segment) builds a path that matches
 *   again — the same route with the same values, unless a {x:path} value's decoded
 *   slashes now split segments that an earlier route takes;
 * - sq__url_parse of "http://" + the input (and of the input itself) gives, when it
 *   accepts, a non-empty host, a port of 1-65535 and a target of RFC 3986 characters
 *   that starts with '/', so nothing in them can end a request line.
 *
 * What follows the target's NUL, when there is one, is for the static files' conditional
 * and range headers (lib/static/cond.c) and Accept-Encoding (lib/http/gzip.c): its first
 * byte picks the file's size, its second the file's mtime, then '\n'-separated lines,
 * each a header whose name the line's first byte picks (Range, If-Range, If-None-Match,
 * If-Modified-Since, If-Match, If-Unmodified-Since, Accept-Encoding) and whose value is
 * the rest, put in a request of their own. Checks:
 * - sq__static_range answers 0, 416 or 206, and a 206's range is non-empty and lies in
 *   the file (first <= last < size);
 * - sq__static_preconditions answers 0, 304 (GET or HEAD only) or 412;
 * - an HTTP-date that parses (each value is also tried as one) formats back
 *   (sq__date_format, Last-Modified's formatter) to a date that parses to the same time,
 *   and every time of years 0-9999 the formatter writes parses back to itself;
 * - Accept-Encoding's every q= weight reads as -1 (refused) or 0..1000 (0 to 1 in
 *   thousandths) and agrees with a reader written here from RFC 9110 §12.4.2; what the
 *   list says of gzip is one of the three answers. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <squall.h>

#include "internal.h"
#include "static/static_int.h"
/* Accept-Encoding's reader and its weights' are static in gzip.c: the harness compiles
 * that file in its place (every symbol of it defined here, the library's copy is not
 * linked), to call them alone */
#include "http/gzip.c"

static sq_app_t *app;

/* ---- the app ---- */

static void any(sq_req_t *req, sq_res_t *res, void *data) {}

static const sq_handler_t get_only = {.get = any};
static const sq_handler_t post_only = {.post = any};
static const sq_handler_t all = {.get = any, .post = any, .put = any, .del = any};

typedef struct route {
    const char *name, *pattern;
    sq_app_t **in; /* the app it goes into */
    const sq_handler_t *h;
} route_t;

static sq_app_t *api, *v2;

static const route_t routes[] = {
    {"root", "/", &app, &all},
    {"about", "/about", &app, &get_only},
    {"item_int", "/items/{id:int}", &app, &all},
    {"item_any", "/items/{name}/detail", &app, &get_only},
    {"item_new", "/items/new/{kind}", &app, &post_only},
    {"pair", "/p/{a}/{b:int}/{c}", &app, &all},
    {"files", "/files/{rest:path}", &app, &get_only},
    {"static_x", "/static/x/y", &app, &get_only},
    {"static", "/static/*", &app, &get_only},
    {"u_lit", "/u/me", &app, &get_only},
    {"u", "/u/{user}", &app, &all},
    {"deep", "/a/{b}/c/{d}/e/{f:path}", &app, &get_only},
    {"api_users", "/users/{uid:int}", &api, &all},
    {"api_user_files", "/users/{uid:int}/files/{p:path}", &api, &get_only},
    {"api_root", "/", &api, &get_only},
    {"v2_thing", "/things/{t}", &v2, &all},
    {"v2_all", "/{any:path}", &v2, &get_only},
};
#define NROUTES (sizeof(routes) / sizeof(routes[0]))
static const sq__route_t *route_ptr[NROUTES]; /* what the router made of each */

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    sq_log_set_level(SQ_LOG_OFF);
    if (sq_app_create(&app) || sq_app_create(&api) || sq_app_create(&v2))
        abort();
    for (size_t i = 0; i < NROUTES; i++) {
        sq_app_t *in = *routes[i].in;
        unsigned at = sq__app_nroutes(in);
        if (sq_app_route_named(in, routes[i].name, routes[i].pattern, routes[i].h, NULL) != 0)
            abort();
        route_ptr[i] = sq__app_route_at(in, at);
    }
    /* "/api/v1" holds api; api holds "/v2" (so "/api/v1/v2/..." reaches v2) */
    if (sq_app_mount(api, "/v2", v2) || sq_app_mount(app, "/api/v1", api))
        abort();
    return 0;
}

/* ---- percent-decoding ---- */

static int hexv(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* RFC 3986 §2.1: "%" HEXDIG HEXDIG is the octet; "%00" and any other "%" are errors
 * (strict) or kept as they are (lenient). */
static ssize_t ref_decode(char *dst, const char *src, size_t n, bool plus, bool lenient)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)src[i];
        if (c == '%') {
            int hi = i + 2 < n ? hexv((unsigned char)src[i + 1]) : -1;
            int lo = i + 2 < n ? hexv((unsigned char)src[i + 2]) : -1;
            if (hi >= 0 && lo >= 0 && (hi || lo)) {
                c = (unsigned char)(hi * 16 + lo);
                i += 2;
            } else if (!lenient) {
                return -1;
            }
        } else if (plus && c == '+') {
            c = ' ';
        }
        dst[o++] = (char)c;
    }
    dst[o] = '\0';
    return (ssize_t)o;
}

static void check_decode(const char *src, size_t n)
{
    char *a = malloc(n + 1), *b = malloc(n + 1);
    if (a == NULL || b == NULL)
        abort();
    for (unsigned flags = 0; flags < 4; flags++) {
        bool plus = flags & SQ__PCT_PLUS, lenient = flags & SQ__PCT_LENIENT;
        ssize_t got = sq__pct_decode(a, src, n, flags);
        ssize_t want = ref_decode(b, src, n, plus, lenient);
        if (got != want || (lenient && got < 0) || got > (ssize_t)n)
            abort();
        if (got >= 0 && (a[got] != '\0' || memcmp(a, b, (size_t)got) != 0))
            abort();
    }
    free(a);
    free(b);
}

/* The query's pairs, as sq_req_query takes them (lib/http/request.c). */
static void check_query(const char *q)
{
    const char *p = q;
    while (*p) {
        const char *amp = strchr(p, '&');
        size_t len = amp ? (size_t)(amp - p) : strlen(p);
        const char *eq = memchr(p, '=', len);
        size_t klen = eq ? (size_t)(eq - p) : len;
        size_t vlen = eq ? len - klen - 1 : 0;
        char *k = malloc(klen + 1), *v = malloc(vlen + 1);
        if (k == NULL || v == NULL)
            abort();
        ssize_t kn = sq__pct_decode(k, p, klen, SQ__PCT_PLUS | SQ__PCT_LENIENT);
        ssize_t vn = sq__pct_decode(v, eq ? eq + 1 : "", vlen, SQ__PCT_PLUS | SQ__PCT_LENIENT);
        if (kn < 0 || vn < 0 || (size_t)kn > klen || (size_t)vn > vlen || strlen(k) > klen)
            abort();
        free(k);
        free(v);
        if (amp == NULL)
            break;
        p = amp + 1;
    }
}

/* ---- routes ---- */

static const route_t *route_of(const sq__match_result_t *m)
{
    for (size_t i = 0; i < NROUTES; i++)
        if (route_ptr[i] == m->route)
            return &routes[i];
    abort(); /* a route the app does not have */
}

static bool has_path_param(const route_t *r)
{
    return strstr(r->pattern, ":path}") != NULL || strchr(r->pattern, '*') != NULL;
}

/* The parameter `name` of r takes the rest of the path ({name:path} or `*`). */
static bool is_path_param(const route_t *r, const char *name)
{
    char spec[64];
    snprintf(spec, sizeof(spec), "{%s:path}", name);
    return strcmp(name, "*") == 0 || strstr(r->pattern, spec) != NULL;
}

/* A {x:path} value's segments include "." or "..": sq_app_url_for refuses it. */
static bool dot_segment(const char *v)
{
    for (const char *s = v; *s;) {
        size_t l = strcspn(s, "/");
        if ((l == 1 && s[0] == '.') || (l == 2 && s[0] == '.' && s[1] == '.'))
            return true;
        s += l + (s[l] == '/');
    }
    return false;
}

static void check_match(sq_method_t method, const char *path, size_t plen)
{
    char inline_buf[512];
    sq__arena_t arena;
    sq__arena_init(&arena, inline_buf, sizeof(inline_buf));
    sq__match_result_t m;
    memset(&m, 0, sizeof(m));
    sq__match_t v = sq__app_match(app, method, path, plen, &arena, &m);
    if (v == SQ__MATCH_NO_METHOD && (m.allow == NULL || m.route == NULL))
        abort();
    if (v == SQ__MATCH_BAD_PARAM && (m.bad_param == NULL || m.bad_value == NULL))
        abort();
    if (v != SQ__MATCH_OK) {
        sq__arena_reset(&arena);
        return;
    }
    const route_t *r = route_of(&m);
    if (m.nparams > SQ__MAX_PARAMS)
        abort();
    const char *params[2 * SQ__MAX_PARAMS + 1];
    bool buildable = true;
    for (unsigned i = 0; i < m.nparams; i++) {
        const sq__param_t *pp = &m.params[i];
        if (strlen(pp->value) > plen)
            abort(); /* a decoded value longer than the path it came from */
        if (pp->is_int && strtoll(pp->value, NULL, 10) != pp->ival)
            abort();
        if (is_path_param(r, pp->name) && dot_segment(pp->value))
            buildable = false;
        params[2 * i] = pp->name;
        params[2 * i + 1] = pp->value;
    }
    params[2 * m.nparams] = NULL;
    /* the values are copied before the arena is reused by the second match */
    char saved[SQ__MAX_PARAMS][256];
    bool fits = true;
    for (unsigned i = 0; i < m.nparams; i++) {
        if (strlen(m.params[i].value) >= sizeof(saved[i]))
            fits = false;
        else
            strcpy(saved[i], m.params[i].value);
    }
    if (buildable && fits) {
        char url[4096];
        int n = sq_app_url_for(app, r->name, params, url, sizeof(url));
        if (n == UV_ENOBUFS) {
            /* a path whose every byte is escaped: more than the buffer */
        } else if (n < 0 || (size_t)n != strlen(url) || url[0] != '/') {
            abort();
        } else {
            sq__match_result_t again;
            memset(&again, 0, sizeof(again));
            sq__match_t v2m = sq__app_match(app, method, url, (size_t)n, &arena, &again);
            if (v2m != SQ__MATCH_OK && v2m != SQ__MATCH_BAD_PARAM)
                abort(); /* a built URL that no route takes */
            if (v2m == SQ__MATCH_OK && again.route == m.route) {
                if (again.nparams != m.nparams)
                    abort();
                for (unsigned i = 0; i < m.nparams; i++)
                    if (strcmp(again.params[i].value, saved[i]) != 0)
                        abort(); /* the value did not survive the round trip */
            } else if (!has_path_param(r)) {
                abort(); /* built for one route, taken by another */
            }
        }
    }
    sq__arena_reset(&arena);
}

/* ---- URLs a client connects to ---- */

static void check_url(const char *url)
{
    sq__url_t u;
    int rc = sq__url_parse(url, "http://", "https://", &u);
    if (rc != 0) {
        if (u.host != NULL || u.target != NULL || u.hostport != NULL)
            abort(); /* on an error u holds nothing */
        return;
    }
    long port = strtol(u.port, NULL, 10);
    if (u.host == NULL || u.hostport == NULL || u.target == NULL || u.host[0] == '\0' || port < 1 ||
        port > 65535 || u.target[0] != '/' ||
        !sq__uri_span_ok(u.target, strlen(u.target), sq__uri_path_char))
        abort();
    for (const char *p = u.hostport; *p; p++)
        if ((unsigned char)*p <= ' ' || *p == 0x7f || *p == '/' || *p == '?' || *p == '#' ||
            *p == '@')
            abort();
    sq__url_free(&u);
}

/* ---- conditional requests, ranges, HTTP-dates, Accept-Encoding ---- */

static const char *const cond_names[] = {"Range",    "If-Range",
                                         "If-None-Match", "If-Modified-Since",
                                         "If-Match", "If-Unmodified-Since",
                                         "Accept-Encoding"};

/* RFC 9110 §12.4.2: qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] ), in
 * thousandths; -1 for anything else. */
static int ref_q(const char *s, size_t n)
{
    if (n == 0 || (s[0] != '0' && s[0] != '1'))
        return -1;
    if (n == 1)
        return (s[0] - '0') * 1000;
    if (s[1] != '.' || n > 5)
        return -1;
    int q = 0, scale = 100;
    for (size_t i = 2; i < n; i++, scale /= 10) {
        if (s[i] < '0' || s[i] > '9' || (s[0] == '1' && s[i] != '0'))
            return -1;
        q += (s[i] - '0') * scale;
    }
    return (s[0] - '0') * 1000 + q;
}

static void check_date(const char *s)
{
    int64_t t, t2;
    if (!sq__http_date_parse(s, &t))
        return;
    char again[30];
    sq__date_format(t, again);
    /* the formatter writes 1970's first second for a time past year 9999 (or before 0) */
    if (t != 0 && strcmp(again, "Thu, 01 Jan 1970 00:00:00 GMT") == 0)
        return;
    if (!sq__http_date_parse(again, &t2) || t2 != t) {
        fprintf(stderr, "date %s -> %lld -> %s -> %lld\n", s, (long long)t, again,
                (long long)t2);
        abort();
    }
}

static void check_cond(sq_method_t method, const uint8_t *data, size_t size)
{
    static const uint64_t sizes[6] = {0, 1, 2, 1000, UINT64_MAX, (uint64_t)1 << 40};
    /* 1994-11-06 08:49:37 (the RFC's example), 0, 2023-11-14, 9999-12-31 23:59:59 */
    static const int64_t mtimes[] = {784111777, 0, 1700000000, 253402300799};
    if (size < 2)
        return;
    uint64_t fsize = data[0] < 250 ? data[0] : sizes[data[0] - 250];
    int64_t mtime = mtimes[data[1] % 4] + data[1] / 4 % 2;
    sq__validators_t v;
    sq__static_validators(&v, fsize, mtime, data[1] / 8 % 2 ? 123456789 : 0);
    check_date(v.last_modified);
    /* the formatter's every year parses back: a time from the input, years 0-9999 */
    if (size >= 10) {
        int64_t t;
        memcpy(&t, data + 2, 8);
        t %= (int64_t)253402300800; /* 10000 years, both ways */
        if (t < -62167219200)       /* before year 0 */
            t = -t;
        char text[30];
        sq__date_format(t, text);
        check_date(text);
    }
    data += 2;
    size -= 2;
    struct sq_req_s x;
    memset(&x, 0, sizeof(x));
    if (sq__buf_append(&x.hb, "/\0", 2) != 0)
        abort();
    const char *p = (const char *)data, *end = p + size;
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        const char *line_end = eol ? eol : end;
        if (line_end > p) {
            const char *name = cond_names[(unsigned char)*p % SQ__ARRAY_SIZE(cond_names)];
            sq__hdr_t h = {.name_off = (uint32_t)x.hb.len, .name_len = (uint32_t)strlen(name)};
            if (sq__buf_append(&x.hb, name, h.name_len + 1) != 0)
                abort();
            h.val_off = (uint32_t)x.hb.len;
            h.val_len = (uint32_t)(line_end - p - 1);
            if (sq__buf_append(&x.hb, p + 1, h.val_len) != 0 ||
                sq__buf_append(&x.hb, "", 1) != 0 || sq__buf_append(&x.hidx, &h, sizeof(h)) != 0)
                abort();
        }
        p = eol ? eol + 1 : end;
    }
    /* the values as dates, and every q= weight of an Accept-Encoding value (cut at NULs
     * as the request's strings are) */
    size_t nh = sq_req_header_count(&x);
    for (size_t i = 0; i < nh; i++) {
        const char *name, *val;
        sq_req_header_at(&x, i, &name, &val);
        check_date(val);
        if (strcmp(name, "Accept-Encoding") != 0)
            continue;
        for (const char *w = val; (w = strchr(w, '=')) != NULL; w++) {
            if (w == val || (w[-1] | 0x20) != 'q')
                continue;
            size_t n = strcspn(w + 1, ";, \t");
            int q = parse_q(w + 1, n), r = ref_q(w + 1, n);
            if (q < -1 || q > 1000 || q != r) {
                fprintf(stderr, "q=%.*s read as %d, the reference %d\n", (int)n, w + 1, q, r);
                abort();
            }
        }
    }
    int acc = accepts_gzip(&x);
    if (acc != ACC_NO && acc != ACC_YES && acc != ACC_FORCE)
        abort();
    bool get = method == SQ_METHOD_GET || method == SQ_METHOD_HEAD;
    int pre = sq__static_preconditions(&x, &v, get);
    if (pre != 0 && pre != 412 && !(pre == 304 && get))
        abort();
    uint64_t first = UINT64_MAX, len = UINT64_MAX;
    int r = sq__static_range(&x, &v, &first, &len);
    if (r != 0 && r != 416 && r != 206)
        abort();
    if (r == 206 && (len == 0 || first >= fsize || len > fsize - first)) {
        fprintf(stderr, "range [%llu, +%llu) of a file of %llu bytes\n",
                (unsigned long long)first, (unsigned long long)len, (unsigned long long)fsize);
        abort();
    }
    sq__buf_free(&x.hb);
    sq__buf_free(&x.hidx);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 8192)
        return 0;
    static const sq_method_t methods[] = {SQ_METHOD_GET, SQ_METHOD_POST, SQ_METHOD_PUT,
                                          SQ_METHOD_DELETE, SQ_METHOD_HEAD};
    sq_method_t method = methods[(data[0] & 0x0F) % 5];
    bool urls = data[0] & 0x10;
    data++;
    size--;
    char *t = strndup((const char *)data, size); /* up to the first NUL, as a request line */
    if (t == NULL)
        return 0;
    size_t tlen = strlen(t);
    char *q = strchr(t, '?');
    size_t plen = q ? (size_t)(q - t) : tlen;
    check_decode(t, tlen);
    if (q != NULL)
        check_query(q + 1);
    if (plen > 0 && t[0] == '/')
        check_match(method, t, plen);
    if (urls) {
        char *url = malloc(tlen + 8);
        if (url == NULL)
            abort();
        memcpy(url, "http://", 7);
        memcpy(url + 7, t, tlen + 1);
        check_url(url);
        check_url(t);
        free(url);
    }
    if (tlen < size)
        check_cond(method, data + tlen + 1, size - tlen - 1);
    free(t);
    return 0;
}
